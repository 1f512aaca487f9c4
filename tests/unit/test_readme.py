"""What the README says of the local mesh matches the code (its programs run in
tests/e2e/test_readme.py)."""

from __future__ import annotations

import ast
import re

from ordermesh_cli.demo import DEMO_CATALOGUE, DEMO_CURRENCY
from tests.support.readme import README, code_blocks


def test_the_readme_lists_every_demo_sku_with_its_price_and_stock() -> None:
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(
            r"^\| `([A-Z-]+)` \| [^|]+ \| ([\d.]+) \| (\d+)", README.read_text(), re.MULTILINE
        )
    }
    assert DEMO_CURRENCY == "EUR"  # the table's prices are in EUR
    assert rows == {
        p.sku: (f"{p.unit_price_minor / 100:.2f}", str(p.stock)) for p in DEMO_CATALOGUE
    }


def test_the_readme_python_blocks_are_whole_programs() -> None:
    blocks = code_blocks("python")
    assert blocks
    for code in blocks:
        tree = ast.parse(code)  # a SyntaxError ('async with' outside a function) fails here
        calls = [n for n in tree.body if isinstance(n, ast.Expr)]
        assert calls, "a program that runs something when run as a file"
        assert "asyncio.run(main())" in ast.unparse(calls[-1])
