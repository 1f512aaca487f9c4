"""Fault points: named places where a test has a process killed, to prove that what
was committed before the kill is finished by recovery and nothing is done twice."""

from __future__ import annotations

import os
import signal

from ordermesh_platform.logs import get_logger

log = get_logger(__name__)


def kill_at(configured: str, name: str) -> None:
    """SIGKILL this process here when ``configured`` (ORDERMESH_FAULT_POINT) names this point."""
    if configured and configured == name:
        log.warning("fault point reached: killing this process", fault_point=name)
        os.kill(os.getpid(), signal.SIGKILL)
