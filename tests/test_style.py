"""Rules of the code base that a reader of the companion relies on."""

from __future__ import annotations

import ast
from pathlib import Path

import companion

PACKAGE = Path(companion.__file__).parent
LIMIT = 80  # lines, docstring and signature included


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_function_in_the_companion_is_longer_than_80_lines():
    too_long = [
        f"{path.name}:{name} ({lines} lines)"
        for path in sorted(PACKAGE.glob("*.py"))
        for name, lines in _functions(path)
        if lines > LIMIT
    ]
    assert too_long == [], f"split these into functions that read at once: {too_long}"


def test_the_length_check_sees_a_long_function(tmp_path: Path):
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * LIMIT)
    assert list(_functions(long)) == [("f", LIMIT + 1)]
