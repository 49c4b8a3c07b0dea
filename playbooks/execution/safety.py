"""Static safety of LLM-generated code.

Each top-level statement the model writes is (1) checked before it runs
(`check_statement`: no unlisted imports, no dunder or frame introspection, no
`eval`/`exec`/`open`/...), (2) instrumented (`instrument`) so that every loop
iteration ticks a `Budget` and every `*`, `**`, `<<`, `range()`, `pow()`,
`bytes()`/`bytearray()` asks the budget first, and (3) run with
`safe_builtins(...)` whose `__import__` only hands out allowed modules, as
copies without private attributes or disallowed submodules (so `uuid.os` and
`random._os` do not exist, and assigning to them leaves the real module alone).

This stops the mistakes and the obvious hostility of generated code: an
`import os`, a `while True:`, `'a' * 10**10`. It is not a sandbox against a
determined attacker: memory can still be exhausted by routes the budget does
not see (`'x'.ljust(10**10)`, `f"{x:>10000000000}"`, `list(itertools.repeat(0,
10**10))`), and a call of a shadowed name is not guarded.

Comprehensions: each `for` clause gets `not __pb_budget__.tick()` as its
first `if`. `tick()` returns None, so the condition is always true and the
results are unchanged, while every item drawn from every clause costs a tick.
Once the budget is exceeded every later tick raises again, so a loop cannot
swallow the error with `except Exception` and go on: the tick at the top of
its body is outside the body's own `try`.
"""

from __future__ import annotations

import ast
import builtins
import collections
import copy
import fractions
import math
import re
import sys
import types
from collections.abc import Callable, Collection
from typing import Any

from .nondeterminism import journal_module

__all__ = ["BUDGET_NAME", "Budget", "SafetyError", "check_statement", "instrument"]
__all__ += ["safe_builtins"]

BUDGET_NAME = "__pb_budget__"
RESERVED_PREFIX = "__pb"  # names the runtime adds to generated code

# Names generated code may not use at all (loading them is refused).
FORBIDDEN_NAMES = frozenset(
    "eval exec compile open globals locals vars breakpoint input exit quit help memoryview".split()
)
# Allowed only as a direct call with a constant, harmless attribute name.
ATTR_FUNCTIONS = frozenset({"getattr", "setattr", "delattr"})
# Dunder attributes that reach nothing dangerous and that ordinary class code uses.
SAFE_DUNDERS = frozenset({"__init__", "__name__", "__doc__"})
# Frame and code objects lead to other frames' globals, hence to everything.
FRAME_ATTRS = frozenset(
    "gi_frame gi_code cr_frame cr_code ag_frame ag_code f_back f_globals f_locals f_builtins"
    " f_code tb_frame tb_next".split()
)
# Public attributes of allowed modules that still reach arbitrary attributes.
_HIDDEN_MODULE_ATTRS = {"string": frozenset({"Formatter"})}
_KEPT_DUNDER_BUILTINS = frozenset({"__build_class__", "__name__", "__debug__"})
_REMOVED_BUILTINS = FORBIDDEN_NAMES | {"copyright", "credits", "license"}
_REAL_IMPORT = builtins.__import__
_FORMAT_FIELD_PRIVATE = re.compile(r"\{[^{}]*[.\[]\s*_")
_THIS_FILE = __file__
_SEQUENCES = (str, bytes, bytearray, list, tuple, collections.deque)


class SafetyError(Exception):
    """Generated code was refused; the message is one line starting with `line N: `."""


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _forbidden_attr(name: str) -> bool:
    return (_is_dunder(name) and name not in SAFE_DUNDERS) or name in FRAME_ATTRS


# ---------------------------------------------------------------- the check


def check_statement(node: ast.stmt, *, allowed_imports: Collection[str]) -> None:
    """Raise SafetyError for the first refused construct in `node` (in source order).

    Runs on the model's code before the runtime's own rewrites, so any
    `__pb...` name found here was written by the model and is refused.
    """
    _Checker(frozenset(allowed_imports), getattr(node, "lineno", 0)).visit(node)


class _Checker(ast.NodeVisitor):
    def __init__(self, allowed: frozenset[str], line: int) -> None:
        self.allowed = allowed
        self.line = line

    def fail(self, node: ast.AST, text: str) -> None:
        raise SafetyError(f"line {getattr(node, 'lineno', None) or self.line}: {text}")

    def ident(self, name: str | None, node: ast.AST) -> None:
        if name is None:
            return
        if name.startswith(RESERVED_PREFIX):
            self.fail(node, f"the name '{name}' is reserved for the runtime")
        if _is_dunder(name):
            self.fail(node, f"use of '{name}' is not allowed")

    def attr(self, name: str, node: ast.AST) -> None:
        if _forbidden_attr(name):
            self.fail(node, f"access to attribute '{name}' is not allowed")

    def module(self, name: str, node: ast.AST) -> None:
        if name.partition(".")[0] not in self.allowed:
            allowed = ", ".join(sorted(self.allowed)) or "none"
            self.fail(node, f"import of '{name}' is not allowed (allowed: {allowed})")

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self.fail(
            node,
            "'async for' cannot be replayed after a crash and is not allowed; "
            "await a call that returns a list and loop over it with 'for'",
        )

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self.fail(
            node,
            "'async with' cannot be replayed after a crash and is not allowed; "
            "await the calls you need one by one",
        )

    def visit_comprehension(self, node: ast.comprehension) -> None:
        if node.is_async:
            self.fail(
                node.iter,
                "'async for' in a comprehension cannot be replayed and is not allowed; "
                "use 'for x in await F()' or '[await F(x) for x in xs]'",
            )
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.module(alias.name, node)
            self.ident(alias.asname, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.fail(node, "relative imports are not allowed")
        self.module(node.module or "", node)
        for alias in node.names:
            if alias.name.startswith("_"):
                self.fail(node, f"import of the private name '{alias.name}' is not allowed")
            self.ident(alias.asname, node)

    def visit_Name(self, node: ast.Name) -> None:
        self.ident(node.id, node)
        if isinstance(node.ctx, ast.Load):
            if node.id in FORBIDDEN_NAMES:
                self.fail(node, f"use of '{node.id}' is not allowed")
            if node.id in ATTR_FUNCTIONS:
                self.fail(node, f"'{node.id}' may only be called with a constant attribute name")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.generic_visit(node)  # inner first: `().__class__.__bases__` names `__class__`
        self.attr(node.attr, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ATTR_FUNCTIONS:
            name = node.args[1] if len(node.args) >= 2 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                self.fail(node, f"{func.id}() with a non-constant attribute name is not allowed")
            assert isinstance(name, ast.Constant)
            if _forbidden_attr(name.value) or name.value.startswith(RESERVED_PREFIX):
                self.fail(node, f"{func.id}() of '{name.value}' is not allowed")
            for child in [*node.args, *node.keywords]:
                self.visit(child)
            return
        if (
            isinstance(func, ast.Attribute)
            and func.attr in ("format", "format_map")
            and isinstance(func.value, ast.Constant)
            and isinstance(func.value.value, str)
            and _FORMAT_FIELD_PRIVATE.search(func.value.value)
        ):
            self.fail(node, "a format string may not reach private or dunder attributes")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # Defining `__init__`, `__str__`, ... is ordinary class code.
        if node.name.startswith(RESERVED_PREFIX):
            self.fail(node, f"the name '{node.name}' is reserved for the runtime")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.ident(node.name, node)
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self.ident(node.arg, node)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        for name in node.names:
            self.ident(name, node)

    visit_Nonlocal = visit_Global

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self.ident(node.name, node)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        self.ident(node.name, node)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        self.ident(node.name, node)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.ident(node.rest, node)
        self.generic_visit(node)

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        for name in node.kwd_attrs:  # `case C(x=...)` reads attribute x
            self.attr(name, node)
        self.generic_visit(node)


# ---------------------------------------------------------- instrumentation

_BINOPS: dict[type[ast.operator], str] = {ast.Mult: "mul", ast.Pow: "pow", ast.LShift: "lshift"}
_GUARDED_CALLS = frozenset({"range", "pow", "bytes", "bytearray"})


def instrument(node: ast.stmt, *, budget_name: str = BUDGET_NAME) -> ast.stmt:
    """A copy of `node` whose loops tick and whose large allocations are vetted by the budget.

    Line numbers are kept: every new node takes the location of the node it
    replaces or guards, so errors still point at the model's own lines.
    """
    new = _Instrumenter(budget_name).visit(copy.deepcopy(node))
    return ast.fix_missing_locations(new)


class _Instrumenter(ast.NodeTransformer):
    def __init__(self, budget_name: str) -> None:
        self.budget_name = budget_name

    def budget_call(
        self,
        method: str,
        args: list[ast.expr],
        like: ast.AST,
        keywords: list[ast.keyword] | tuple[()] = (),
    ) -> ast.Call:
        func = ast.Attribute(ast.Name(self.budget_name, ast.Load()), method, ast.Load())
        call = ast.Call(func=func, args=args, keywords=list(keywords))
        return ast.fix_missing_locations(_first_line(call, like))

    def tick(self, like: ast.AST) -> ast.Expr:
        return _first_line(ast.Expr(self.budget_call("tick", [], like)), like)

    def visit_loop(self, node: ast.For | ast.AsyncFor | ast.While) -> ast.AST:
        self.generic_visit(node)
        node.body.insert(0, self.tick(node))
        return node

    visit_For = visit_AsyncFor = visit_While = visit_loop

    def visit_comprehension_owner(self, node: ast.AST) -> ast.AST:
        self.generic_visit(node)
        for clause in node.generators:  # type: ignore[attr-defined]
            always = ast.UnaryOp(ast.Not(), self.budget_call("tick", [], node))
            clause.ifs.insert(0, _first_line(always, node))
        return node

    visit_ListComp = visit_SetComp = visit_DictComp = visit_comprehension_owner
    visit_GeneratorExp = visit_comprehension_owner

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        method = _BINOPS.get(type(node.op))
        if method is None:
            return node
        return self.budget_call(method, [node.left, node.right], node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        method = _BINOPS.get(type(node.op))
        # `t op= v` becomes `t = budget.iop(t, v)`; only when reading t twice
        # has no side effects, otherwise the statement is left as written.
        if method is None or not _pure(node.target):
            return node
        current = copy.deepcopy(node.target)
        current.ctx = ast.Load()
        value = self.budget_call("i" + method, [current, node.value], node)
        return _first_line(ast.Assign(targets=[node.target], value=value), node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in _GUARDED_CALLS:
            # budget.call(range, ...) still calls whatever `range` names here.
            return self.budget_call("call", [node.func, *node.args], node, node.keywords)
        return node


def _first_line(new: ast.AST, like: ast.AST) -> ast.AST:
    """Give `new` the first line of `like`: 3.11 reports a multi-line method call at its last line."""
    line, col = like.lineno, like.col_offset  # type: ignore[attr-defined]
    end_col = like.end_col_offset if like.end_lineno == line else col  # type: ignore[attr-defined]
    new.lineno, new.end_lineno = line, line  # type: ignore[attr-defined]
    new.col_offset, new.end_col_offset = col, end_col  # type: ignore[attr-defined]
    return new


def _pure(node: ast.AST | None) -> bool:
    if node is None or isinstance(node, (ast.Name, ast.Constant)):
        return True
    if isinstance(node, ast.Attribute):
        return _pure(node.value)
    if isinstance(node, ast.Subscript):
        return _pure(node.value) and _pure(node.slice)
    if isinstance(node, ast.Slice):
        return _pure(node.lower) and _pure(node.upper) and _pure(node.step)
    if isinstance(node, ast.Tuple):
        return all(_pure(elt) for elt in node.elts)
    return False


# ------------------------------------------------------------------ budget


def _where() -> str:
    """`line N` of the generated code that called into this module."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == _THIS_FILE:
        frame = frame.f_back
    return f"line {frame.f_lineno}" if frame is not None else "line ?"


class Budget:
    """Per-statement limits, reached by instrumented code as `namespace[BUDGET_NAME]`.

    The executor calls `reset()` before each top-level statement.
    """

    def __init__(self, loop_budget: int = 10_000_000, max_alloc: int = 100_000_000) -> None:
        self.loop_budget = loop_budget
        self.max_alloc = max_alloc
        self.ticks = 0

    def reset(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks > self.loop_budget:
            raise SafetyError(
                f"{_where()}: loop budget of {self.loop_budget} iterations exceeded"
                " (an endless loop?)"
            )

    def mul(self, a: Any, b: Any) -> Any:
        self._check_mul(a, b)
        return a * b

    def imul(self, a: Any, b: Any) -> Any:
        self._check_mul(a, b)
        a *= b
        return a

    def pow(self, a: Any, b: Any) -> Any:
        self._check_pow(a, b)
        return a**b

    def ipow(self, a: Any, b: Any) -> Any:
        self._check_pow(a, b)
        a **= b
        return a

    def lshift(self, a: Any, b: Any) -> Any:
        self._check_lshift(a, b)
        return a << b

    def ilshift(self, a: Any, b: Any) -> Any:
        self._check_lshift(a, b)
        a <<= b
        return a

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call `func`, first vetting the sizes when it is range, pow, bytes or bytearray."""
        if func is builtins.range:
            made = range(*args, **kwargs)
            self._check_size(_range_len(made), "items")
            return made
        if func is builtins.pow:
            params = dict(zip(("base", "exp", "mod"), args, strict=False), **kwargs)
            if params.get("mod") is None:
                self._check_pow(params.get("base"), params.get("exp"))
        elif func in (bytes, bytearray) and args and _is_int(args[0]):
            self._check_size(args[0], "bytes")
        return func(*args, **kwargs)

    def _check_size(self, size: int, unit: str) -> None:
        if size > self.max_alloc:
            raise SafetyError(
                f"{_where()}: allocation of ~{size} {unit} exceeds the limit of {self.max_alloc}"
            )

    def _check_mul(self, a: Any, b: Any) -> None:
        if isinstance(a, _SEQUENCES) and _is_int(b):
            self._check_size(len(a) * b, "items")
        elif isinstance(b, _SEQUENCES) and _is_int(a):
            self._check_size(len(b) * a, "items")
        elif _is_int(a) and _is_int(b):
            self._check_size((a.bit_length() + b.bit_length()) // 8, "bytes")

    def _check_pow(self, a: Any, b: Any) -> None:
        if not _is_int(b):
            return
        if _is_int(a) and b > 0 and abs(a) > 1:
            bits = b * math.log2(abs(a))
        elif isinstance(a, fractions.Fraction) and b != 0:
            bits = abs(b) * math.log2(max(abs(a.numerator), a.denominator, 2))
        else:
            return
        self._check_size(int(bits // 8), "bytes")

    def _check_lshift(self, a: Any, b: Any) -> None:
        if _is_int(a) and _is_int(b) and a and b > 0:
            self._check_size((a.bit_length() + b) // 8, "bytes")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range_len(made: range) -> int:
    try:
        return len(made)
    except OverflowError:  # longer than sys.maxsize
        return abs((made.stop - made.start) // made.step)


# ---------------------------------------------------------------- builtins


def safe_builtins(allowed_imports: Collection[str]) -> dict[str, Any]:
    """The builtins for generated code's `namespace["__builtins__"]`."""
    allowed = frozenset(allowed_imports)
    table = {
        name: value
        for name, value in vars(builtins).items()
        if name not in _REMOVED_BUILTINS
        and (not name.startswith("__") or name in _KEPT_DUNDER_BUILTINS)
    }
    table["__import__"] = _importer(allowed)
    table["getattr"] = _safe_getattr
    table["setattr"] = _safe_setattr
    table["delattr"] = _safe_delattr
    return table


def _check_attr_name(name: Any) -> None:
    if isinstance(name, str) and (_forbidden_attr(name) or name.startswith(RESERVED_PREFIX)):
        raise SafetyError(f"{_where()}: access to attribute '{name}' is not allowed")


def _safe_getattr(obj: Any, name: str, *default: Any) -> Any:
    _check_attr_name(name)
    return getattr(obj, name, *default)


def _safe_setattr(obj: Any, name: str, value: Any) -> None:
    _check_attr_name(name)
    setattr(obj, name, value)


def _safe_delattr(obj: Any, name: str) -> None:
    _check_attr_name(name)
    delattr(obj, name)


def _importer(allowed: frozenset[str]) -> Callable[..., types.ModuleType]:
    def guarded_import(
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> types.ModuleType:
        if level:
            raise SafetyError(f"{_where()}: relative imports are not allowed")
        if name.partition(".")[0] not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise SafetyError(f"{_where()}: import of '{name}' is not allowed (allowed: {names})")
        return _public_copy(_REAL_IMPORT(name, None, None, fromlist or (), 0), allowed, {})

    return guarded_import


def _public_copy(
    module: types.ModuleType, allowed: frozenset[str], memo: dict[int, types.ModuleType]
) -> types.ModuleType:
    """A new module holding only `module`'s public attributes and allowed submodules."""
    if id(module) in memo:
        return memo[id(module)]
    public = types.ModuleType(module.__name__, module.__doc__)
    memo[id(module)] = public
    hidden = _HIDDEN_MODULE_ATTRS.get(module.__name__, frozenset())
    for key, value in list(vars(module).items()):
        if key.startswith("_") or key in hidden:
            continue
        if isinstance(value, types.ModuleType):
            if value.__name__.partition(".")[0] not in allowed:
                continue
            value = _public_copy(value, allowed, memo)
        setattr(public, key, value)
    exported = getattr(module, "__all__", None)
    if exported is not None:
        public.__all__ = [name for name in exported if hasattr(public, name)]
    return journal_module(public)  # clocks, chance and uuids replay their first values
