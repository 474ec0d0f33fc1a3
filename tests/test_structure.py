"""The size limits the code is kept to (a newcomer reads any function on one screen): no function over
60 lines and no class over 400 in ``surge/`` outside the simulator, and the Bot under 350 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import surge

PACKAGE = Path(surge.__file__).parent


def _defs() -> list[tuple[str, str, int, int]]:
    """(file, name, lines, limit) of every function and class outside ``surge/sim``."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "sim" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                assert node.end_lineno is not None
                limit = 400 if isinstance(node, ast.ClassDef) else 60
                lines = node.end_lineno - node.lineno + 1
                out.append((str(path.relative_to(PACKAGE)), node.name, lines, limit))
    return out


def test_no_function_over_60_lines_and_no_class_over_400() -> None:
    assert [d for d in _defs() if d[2] > d[3]] == []


def test_the_bot_stays_under_350_lines() -> None:
    (bot,) = [n for path, name, n, _ in _defs() if path == "app.py" and name == "Bot"]
    assert bot < 350
