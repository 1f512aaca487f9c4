"""Child processes of the local mesh: they die with their parent, and stop in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1

# Runs in the new child, then becomes the wanted program (exec keeps the setting): if
# `ordermesh up` is killed outright, the kernel stops its children too. A subprocess
# preexec_fn would do the same between fork and exec, but running Python there is
# unsafe while gRPC's threads run in the parent (the child can crash before exec).
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    f"    ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, signal.SIGTERM)\n"
    "    if os.getppid() != int(sys.argv[1]):\n"  # the parent died before the prctl
    "        sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def dies_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM when this process dies. ``argv[0]`` must be
    a path (no PATH lookup)."""
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM every process, wait up to ``timeout_s`` in all, then SIGKILL the rest."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
