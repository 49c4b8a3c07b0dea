"""Which playbook variables a statement may touch, read from its AST alone.

A checkpoint re-encodes only the variables a statement could have changed, so
its cost follows the change and not the size of the state. This module gives
the static half of that answer: every name the statement mentions (loaded,
bound or deleted, at any depth, inside lambdas and comprehensions too), plus
the names bound by string through ``Var``/``Artifact``. The checkpoint manager
widens it at run time (aliases, rebinding, code-defined functions), so this
list only has to over-approximate the names a statement can reach directly.

``None`` means "could touch anything": the statement reaches the namespace
without naming what it touches (``globals()``, ``vars()``, ``exec``...).
"""

from __future__ import annotations

import ast

__all__ = ["merge_touched", "touched_names"]

#: Calls that reach the namespace itself, so any variable at all.
_ANYTHING = frozenset(
    {"globals", "locals", "vars", "exec", "eval", "compile", "__import__", "breakpoint"}
)
_NAMESPACE_ATTRS = frozenset({"globals", "locals", "vars", "__import__", "__dict__"})
#: Built-ins that bind a variable named by their first argument.
_BINDERS = frozenset({"Var", "Artifact"})


def touched_names(node: ast.AST) -> frozenset[str] | None:
    """The names ``node`` may read, bind, delete or change in place; None if unknowable."""
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
            if sub.id in _ANYTHING:
                return None
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
            if sub.func.id in _BINDERS:
                target = sub.args[0] if sub.args else None
                if not (isinstance(target, ast.Constant) and isinstance(target.value, str)):
                    return None  # a name computed at run time
                names.add(target.value.lstrip("$"))
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, (ast.Global, ast.Nonlocal)):
            names.update(sub.names)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            for alias in sub.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            names.add(sub.name)
        elif isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name:
            names.add(sub.name)
        elif isinstance(sub, ast.MatchMapping) and sub.rest:
            names.add(sub.rest)
        elif isinstance(sub, ast.Attribute) and sub.attr in _NAMESPACE_ATTRS:
            return None  # builtins.globals() and the like
    return frozenset(names)


def merge_touched(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """Union of two answers for statements run between the same two checkpoints."""
    if a is None or b is None:
        return None
    return a | b
