"""The code blocks of the README (or of another page), as a reader would paste them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(language: str, page: Path = README) -> list[str]:
    return [
        code for lang, code in BLOCK.findall(page.read_text(encoding="utf-8")) if lang == language
    ]
