"""The companion's shape, read from its source with ``ast``: no import cycles, no re-exports,
no private names taken across modules, no function-local imports inside the package, short
functions, and the public API at the top level."""

import ast
import inspect
from pathlib import Path

import pytest

import companion
from companion import train

PACKAGE = Path(companion.__file__).parent
MODULES = {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.glob("*.py"))}


def _internal_imports(tree: ast.Module):
    """``(node, module imported, names)`` for every ``from . import`` / ``from .x import``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:  # from . import a, b
                for alias in node.names:
                    yield node, alias.name, []
            else:
                yield node, node.module, [alias.name for alias in node.names]


def _graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    return {name: {target for _, target, _ in _internal_imports(tree)} for name, tree in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a path that returns to its start), or ``None``."""
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"data": {"loaders"}, "loaders": {"data"}}) == ["data", "loaders", "data"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    assert _cycle({k: v for k, v in _graph(MODULES).items() if k != "__init__"}) is None


def _function_local_imports(tree: ast.Module) -> list[int]:
    lines = []
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            lines += [n.lineno for n in ast.walk(func) if isinstance(n, ast.ImportFrom) and n.level == 1]
    return lines


def test_no_function_local_imports_inside_the_package():
    found = {name: lines for name, tree in MODULES.items() if (lines := _function_local_imports(tree))}
    assert found == {}


def _names_used(tree: ast.Module) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.value.id for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }


def test_no_reexports_between_modules():
    """A name imported from another companion module is used by the module that imports it
    (else it is only there to be found under a second name). ``__init__`` is the one exception."""
    unused = {}
    for name, tree in MODULES.items():
        if name == "__init__":
            continue
        used = _names_used(tree)
        for node, target, _names in _internal_imports(tree):
            imported = [a.asname or a.name for a in node.names]
            assert "*" not in imported, f"{name}: from .{target} import *"
            if missing := [n for n in imported if n not in used]:
                unused[name] = unused.get(name, []) + missing
    assert unused == {}


def test_no_private_names_across_modules():
    taken = []
    for name, tree in MODULES.items():
        modules_imported = {t for _, t, names in _internal_imports(tree) if not names}
        for _node, target, names in _internal_imports(tree):
            taken += [f"{name}: from .{target} import {n}" for n in names if n.startswith("_")]
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules_imported:
                if n.attr.startswith("_"):
                    taken.append(f"{name}: {n.value.id}.{n.attr}")
    assert taken == []


def test_no_function_is_over_60_lines():
    long = [
        f"{name}.{f.name} ({f.end_lineno - f.lineno + 1} lines)"
        for name, tree in MODULES.items()
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno + 1 > 60
    ]
    assert long == []


def test_fit_has_at_most_12_parameters():
    assert len(inspect.signature(train.fit).parameters) <= 12


@pytest.mark.parametrize(
    "name",
    ["create", "eval_transform", "extract_features", "evaluate", "save_checkpoint", "load_checkpoint", "load_run"],
)
def test_the_public_api_is_at_the_top_level(name):
    assert callable(getattr(companion, name))
    assert name in companion.__all__


def test_the_old_module_names_are_gone():
    assert not (PACKAGE / "device.py").exists()
    assert not (PACKAGE / "export.py").exists()
