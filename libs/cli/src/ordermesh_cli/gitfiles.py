"""Whether a file the CLI writes could end up in a commit."""

from __future__ import annotations

import subprocess
from pathlib import Path


def tracked_by_git(path: Path) -> bool:
    """True when ``path`` lies in a git working tree and no ignore rule covers it.
    Outside a working tree, or without git, nothing is at risk: False."""
    folder = path.resolve().parent
    while not folder.exists():
        folder = folder.parent
    try:
        found = subprocess.run(
            ["git", "check-ignore", "-q", str(path.resolve())],
            cwd=folder,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 1  # 0: ignored; 128: not a working tree
