"""The library names no command-line flag (issue 22 item 5): an error whose cause is one of its
options carries it (``LogitsError.option``) and the CLI's error decorator writes the flag hint
(``cli/failures.py``). Docstrings and comments may cite flags; strings a user can be shown may
not."""

from __future__ import annotations

import ast
import re
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "logits_cli" / "api"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_no_string_of_the_library_names_a_flag() -> None:
    named = []
    for path in sorted(API.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and FLAG.search(node.value)
            ):
                named.append(f"{path.relative_to(API)}:{node.lineno}: {node.value[:60]!r}")
    assert named == [], (
        "api/ strings name CLI flags; give the error option=<library option> and write the "
        "flag hint in cli/failures.py (_FLAG_HINTS), or let the CLI word the text"
    )
