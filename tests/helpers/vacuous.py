"""Asserts that cannot fail: a constant, or a name or attribute that the test
did not compute (an import, a module-level name, an enum member), as the
whole test of an `assert`. Such an assert is true whatever the code under test
does (`assert OutputFormat.JSON` holds while the import works)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _module_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _bound_in(function: ast.AST) -> set[str]:
    """Names a function binds itself: parameters, assignments, loop and with
    targets; not its imports, which are as fixed as the module's."""
    bound: set[str] = set()
    if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        args = function.args
        bound |= {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
        bound |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return bound


def vacuous_asserts(path: Path) -> Iterator[tuple[int, str]]:
    """(line, source) of each assert in the file that cannot fail."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, str(path))
    fixed = _module_names(tree)
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        local = _bound_in(function)
        for node in ast.walk(function):
            if not isinstance(node, ast.Assert):
                continue
            test = node.test
            root = _root(test) if isinstance(test, ast.Name | ast.Attribute) else None
            fixed_here = root is not None and root not in local and (root in fixed or _imported_in(function, root))
            if isinstance(test, ast.Constant) or fixed_here:
                yield node.lineno, ast.get_source_segment(text, node) or ""


def _imported_in(function: ast.AST, name: str) -> bool:
    return any(
        (alias.asname or alias.name).split(".")[0] == name
        for node in ast.walk(function)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    )
