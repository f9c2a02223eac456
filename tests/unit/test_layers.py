"""The package's structure holds: no import circle between modules, no private name
imported from another module, no reaching into another object's private attributes.
(The layers themselves are import-linter's contract in pyproject.toml.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vault"


def _sources() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        found.append((str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text())))
    return found


def test_no_module_imports_itself_round_a_circle() -> None:
    """Following imports (TYPE_CHECKING ones too) from any module never leads back to it."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("vault", exclude_type_checking_imports=False)
    circles = sorted(m for m in graph.modules
                     if any(m == d or m in graph.find_upstream_modules(d)
                            for d in graph.find_modules_directly_imported_by(m)))
    assert circles == []


def test_no_private_name_is_imported_from_another_module() -> None:
    """``from x import _name`` is refused: a private name is its module's own."""
    crossing = [
        f"{where}:{node.lineno} {node.module}.{alias.name}"
        for where, tree in _sources()
        for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"
    ]
    assert crossing == []


def test_nothing_reaches_into_a_held_objects_privates() -> None:
    """``self._held._private`` is refused: an object's private attributes are its own."""
    reaching = [
        f"{where}:{node.lineno} self.{node.value.attr}.{node.attr}"
        for where, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and isinstance(node.value, ast.Attribute) and node.value.attr.startswith("_")
        and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"
    ]
    assert reaching == []


def test_no_late_import_dodges_a_circle() -> None:
    """No function imports from ``vault.cli`` (the helpers are in ``vault.cli._common``),
    and nothing in the package imports the facade or the CLI inside a function."""
    late = [
        f"{where}:{node.lineno} {node.module}"
        for where, tree in _sources()
        for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn) if isinstance(node, ast.ImportFrom)
        and node.module in ("vault.cli", "vault.facade", "vault")
    ]
    assert late == []
