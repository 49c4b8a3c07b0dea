"""Code shapes a model writes, each a function of a seeded ``random.Random``.

A shape returns a :class:`Shape`: the Python a model would put in its
```` ```python ```` block, written in the dialect (``$name`` variables, top-level
``await``) and in the vocabulary every fuzz world provides:

- effects (each writes one line to the trace, durably): ``Say(to, text)``,
  ``Emit(tag, *values)``, ``F(x, mark="")`` (doubles an int; logged as ``mark + "F"``),
  ``Items()`` (``[1, 2, 3]``),
  ``Lookup(key)`` (``KeyError(key)`` when the key starts with ``missing``),
  ``Check(n)`` (``ValueError('bad', n)`` when ``n % 3 == 2``),
  ``Fetch(side, i)`` / ``Store(side, i)``;
- ``Yld("user")`` waits for the person's n-th reply, ``"reply n"``;
- ``Var(name, value)`` binds a variable; ``ReadMode()`` is a plain (not awaited,
  so never journaled) read of a file the runner may change between lives.

Tags starting with ``~`` are effects made concurrently (under ``gather``):
their relative order is free, so the comparison sorts each run of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .layout import awaited, call, value_dict, value_list


@dataclass
class Shape:
    """A generated response body (no fence) and what the runners must know of it."""

    name: str
    body: str
    divergent: bool = False  # the runner changes ReadMode() between lives
    cli_only: bool = False
    executor_only: bool = False
    inner: list[str] = field(default_factory=list)  # CLI: responses of Inner, in call order
    returns: list[str] = field(default_factory=list)  # CLI: variables Main returns
    fenced: bool = False  # the body is already a whole response (corpus)

    def response(self) -> str:
        if self.fenced:
            return self.body
        return f"```python\n{self.body.rstrip()}\n```\n"


NONDET = {
    "uuid": ("import uuid", "str(uuid.uuid4())"),
    "uuid_raw": ("import uuid", "uuid.uuid4().hex"),
    "time": ("import time", "time.time()"),
    "random": ("import random", "random.random()"),
    "datetime": ("import datetime", "datetime.datetime.now().isoformat()"),
}


def nondet(rng: random.Random) -> tuple[str, str]:
    return NONDET[rng.choice(sorted(NONDET))]


def _join(*lines: str) -> str:
    return "\n".join(lines) + "\n"


# -- the shapes ----------------------------------------------------------------
def multiline_say(rng: random.Random) -> Shape:
    n = rng.randint(1, 9)
    lines = [f"$who = {value_list(rng, [repr('ada'), repr('bob')])}[{n % 2}]"]
    for i in range(rng.randint(2, 4)):
        text = rng.choice([f'f"Hello {{$who}}, number {i}!"', f'"plain message {i}"'])
        lines.append(awaited(rng, "Say", ['"user"', text]))
        if rng.random() < 0.5:
            lines.append(awaited(rng, "F", [str(i + n)], target=f"$v{i}"))
            lines.append(awaited(rng, "Say", ['"user"', f'f"value {{$v{i}}}"']))
    return Shape("multiline_say", _join(*lines), returns=["who"])


def literals(rng: random.Random) -> Shape:
    items = value_list(rng, ['"a"', '"b"', str(rng.randint(1, 9))], "    ")
    order = value_dict(rng, [('"id"', str(rng.randint(1, 99))), ('"items"', items)])
    lines = [
        f"$order = {order}",
        '$note = """first line',
        f"second line {rng.randint(1, 9)}",
        '  indented line"""',
        awaited(rng, "Emit", ['"order"', "$order"]),
        'await Say("user", f"""Order {$order[\'id\']}:',
        '{$note}""")',
        f"$doubled = {value_list(rng, ['await F(1)', 'await F(2)'])}",
        awaited(rng, "Emit", ['"doubled"', "$doubled", "f'{len($note)} chars'"]),
    ]
    return Shape("literals", _join(*lines), returns=["order", "note", "doubled"])


def decorators(rng: random.Random) -> Shape:
    a = rng.randint(1, 5)
    body = _join(
        "def logged(fn):",
        "    async def wrapper(*args):",
        '        await Emit("call", fn.__name__, list(args))',
        "        return await fn(*args)",
        "    return wrapper",
        "",
        "@logged",
        "async def double(x):",
        "    return await F(x)",
        "",
        f"$a = await double({a})",
        awaited(rng, "double", ["$a"], target="$b"),
        awaited(rng, "Emit", ['"ab"', "$a", "$b"]),
    )
    return Shape("decorators", body, returns=["a", "b"])


def semicolons(rng: random.Random) -> Shape:
    a = rng.randint(1, 9)
    body = _join(
        f"$a = {a}; $b = await F($a); await Emit('ab', $a, $b)",
        'await Say("user", "one"); await Say("user", f"two {$b}")',
        "$c = $a + $b; await Emit('c', $c); $c += 1",
        awaited(rng, "Emit", ["'c+1'", "$c"]),
    )
    return Shape("semicolons", body, returns=["a", "b", "c"])


def branches(rng: random.Random) -> Shape:
    n = rng.randint(0, 6)
    body = _join(
        f"$n = await F({n})",
        "if $n > 8:",
        awaited(rng, "Emit", ['"big"', "$n"], "    "),
        "elif $n > 3:",
        awaited(rng, "Emit", ['"medium"', "$n"], "    "),
        awaited(rng, "F", ["$n"], "    ", target="$n"),
        "else:",
        awaited(rng, "Emit", ['"small"', "$n"], "    "),
        awaited(rng, "Emit", ['"n"', "$n"]),
    )
    return Shape("branches", body, returns=["n"])


def loops(rng: random.Random) -> Shape:
    stop = rng.randint(2, 6)
    body = _join(
        "$acc = []",
        f"for i in range({rng.randint(3, 5)}):",
        awaited(rng, "F", ["i"], "    ", target="$v"),
        f"    if $v > {stop}:",
        "        break",
        "    $acc.append($v)",
        awaited(rng, "Emit", ['"acc"', "i", "list($acc)"], "    "),
        "$count = 0",
        "while True:",
        "    $count += 1",
        awaited(rng, "Emit", ['"tick"', "$count"], "    "),
        f"    if $count >= {rng.randint(2, 3)}:",
        "        break",
        awaited(rng, "Emit", ['"done"', "$acc", "$count"]),
    )
    return Shape("loops", body, returns=["acc", "count"])


def exceptions_loop(rng: random.Random) -> Shape:
    rounds = rng.randint(3, 5)
    bad = rng.randint(0, rounds - 1)
    body = _join(
        "class QuotaError(Exception):",
        "    pass",
        "",
        "async def charge(n):",
        f"    if n == {bad}:",
        '        raise QuotaError("quota", n)',
        "    return await Check(n)",
        "",
        "$log = []",
        f"for n in range({rounds}):",
        "    try:",
        '        await Lookup("missing" if n % 2 else "k")',
        "        await charge(n)",
        "    except KeyError as e:",
        '        await Emit("key", type(e).__name__, e.args[0], str(e))',
        "    except QuotaError as e:",
        '        await Emit("quota", type(e).__name__, list(e.args))',
        "    except ValueError as e:",
        '        await Emit("value", type(e).__name__, list(e.args))',
        "    finally:",
        "        $log.append(n)",
        awaited(rng, "Emit", ['"finally"', "n"], "        "),
        awaited(rng, "Emit", ['"log"', "$log"]),
    )
    return Shape("exceptions_loop", body, returns=["log"])


def comprehension_await(rng: random.Random) -> Shape:
    body = _join(
        "$xs = [x for x in await Items()]",
        awaited(rng, "Emit", ['"xs"', "$xs"]),
        "$ys = [await F(x) for x in $xs]",
        "$d = {x: await F(x + 10) for x in $xs if x != 2}",
        awaited(rng, "Emit", ['"ys"', "$ys", "$d"]),
        f"$grid = [[await F(a * b) for a in range({rng.randint(1, 2)})] for b in range(2)]",
        awaited(rng, "Emit", ['"grid"', "$grid"]),
    )
    return Shape("comprehension_await", body, returns=["xs", "ys", "d", "grid"])


def queue_pop_argument(rng: random.Random) -> Shape:
    items = [repr(f"q{i}") for i in range(rng.randint(3, 5))]
    body = _join(
        f"$queue = {value_list(rng, items)}",
        "while $queue:",
        awaited(rng, "Say", ['"user"', 'f"{$queue.pop(0)}"'], "    "),
        "$more = ['m1', 'm2']",
        'await Say("user", f"next: {$more.pop(0)}")',
        awaited(rng, "Emit", ['"left"', "$queue", "$more.pop()"]),
        awaited(rng, "Emit", ['"empty"', "$more"]),
    )
    return Shape("queue_pop_argument", body, returns=["queue", "more"])


def uuid_top_level(rng: random.Random) -> Shape:
    imp, expr = nondet(rng)
    imp2, expr2 = nondet(rng)
    body = _join(
        imp,
        imp2,
        f"$order = {expr}",
        awaited(rng, "Emit", ['"created"', "$order"]),
        "if $order:",
        f"    $ticket = {expr2}",
        awaited(rng, "Emit", ['"ticket"', "$ticket"], "    "),
        awaited(rng, "Emit", ['"confirm"', "$order", "$ticket"], "    "),
        awaited(rng, "Say", ['"user"', 'f"order {$order} ticket {$ticket}"']),
    )
    return Shape("uuid_top_level", body, returns=["order", "ticket"])


def uuid_in_loop(rng: random.Random) -> Shape:
    imp, expr = nondet(rng)
    body = _join(
        imp,
        "$ids = []",
        f"for i in range({rng.randint(2, 4)}):",
        f"    $ids.append({expr})",
        awaited(rng, "Emit", ['"made"', "i", "$ids[-1]"], "    "),
        awaited(rng, "Emit", ['"all"', "$ids"]),
    )
    return Shape("uuid_in_loop", body, returns=["ids"])


def ask_reply(rng: random.Random) -> Shape:
    """Waiting for the person's reply (``Yld``): a reply received is never asked again."""
    body = _join(
        awaited(rng, "Say", ['"user"', '"What is your name?"']),
        '$name = await Yld("user")',
        awaited(rng, "Say", ['"user"', 'f"Hello {$name}! And your city?"']),
        awaited(rng, "Yld", ['"user"'], target="$city"),
        awaited(rng, "Emit", ['"answers"', "$name", "$city"]),
    )
    return Shape("ask_reply", body, returns=["name", "city"])


def divergent_branch(rng: random.Random) -> Shape:
    """Control flow that differs on replay: ReadMode() is 'a' in the first life and
    'b' after; a resumed run must stop with a replay-divergence error, never hand
    Fetch's recorded result to Store."""
    body = _join(
        f"for i in range({rng.randint(2, 3)}):",
        '    if ReadMode() == "a":',
        awaited(rng, "Fetch", ['"left"', "i"], "        ", target="$v"),
        "    else:",
        awaited(rng, "Store", ['"right"', "i"], "        ", target="$v"),
        awaited(rng, "Emit", ['"v"', "i", "$v"], "    "),
    )
    return Shape("divergent_branch", body, divergent=True, returns=["v"])


def gather_code_defined(rng: random.Random) -> Shape:
    names = ["x", "y", "z"][: rng.randint(2, 3)]
    calls = ", ".join(f'work("{n}", {i + 1})' for i, n in enumerate(names))
    body = _join(
        "import asyncio",
        "",
        "async def work(name, n):",
        '    a = await F(n, mark="~")',
        '    await Emit("~work", name, a)',
        "    return a",
        "",
        f"$results = await asyncio.gather({calls})",
        awaited(rng, "Emit", ['"results"', "$results"]),
        '$pair = await asyncio.gather(F(5, mark="~"), Emit("~plain", 6))',
        awaited(rng, "Emit", ['"pair"', "$pair"]),
    )
    return Shape("gather_code_defined", body, returns=["results", "pair"])


def code_changes_a_variable(rng: random.Random) -> Shape:
    """Variables changed through a function or class the code defined, never named
    by the statement that calls it (definitions are not checkpointed, rerun)."""
    a = rng.randint(1, 9)
    body = _join(
        "$seen = []",
        "def note(x):",
        "    $seen.append(x)",
        "class Counter:",
        "    def __init__(self):",
        "        $seen.append('made')",
        f"note({a})",
        awaited(rng, "Emit", ['"step"', "1"]),  # names no variable: nothing re-encoded
        "Counter()",
        awaited(rng, "Emit", ['"step"', "2"]),
        "note(await F(3))",
        awaited(rng, "Emit", ['"step"', "3"]),
        awaited(rng, "Emit", ['"seen"', "$seen"]),
    )
    return Shape("code_changes_a_variable", body, returns=["seen"])


def var_binding(rng: random.Random) -> Shape:
    body = _join(
        f'await Var("total", await F({rng.randint(1, 9)}))',
        awaited(rng, "Emit", ['"total"', "$total"]),
        "if $total:",
        '    await Var("bonus", await F(1))',
        awaited(rng, "Emit", ['"bonus"', "$bonus"], "    "),
        awaited(rng, "Emit", ['"sum"', "$total + $bonus"], "    "),
    )
    return Shape("var_binding", body, returns=["total", "bonus"])


def nested_calls(rng: random.Random) -> Shape:
    """Markdown Main -> Python Process -> Markdown Inner (CLI only)."""
    count = rng.randint(1, 2)
    body = _join(
        "$got = []",
        f"for i in range({count}):",
        awaited(rng, "Process", ["i"], "    ", target="$r"),
        "    $got.append($r)",
        awaited(rng, "Say", ['"user"', 'f"got {$got}"']),
    )
    inner = [
        _join(
            'await Step("Inner:01")',
            awaited(rng, "Say", ['"user"', 'f"inner working on {$n}"']),
            awaited(rng, "Emit", ['"inner"', "$n"]),
            '$answer = f"inner {$n}"',
            'await Step("Inner:02")',
            "await Return($answer)",
        )
        for _ in range(count)
    ]
    return Shape("nested_calls", body, cli_only=True, inner=inner, returns=["got"])


SHAPES: dict[str, Callable[[random.Random], Shape]] = {
    f.__name__: f
    for f in (
        multiline_say,
        literals,
        decorators,
        semicolons,
        branches,
        loops,
        exceptions_loop,
        comprehension_await,
        queue_pop_argument,
        uuid_top_level,
        uuid_in_loop,
        divergent_branch,
        gather_code_defined,
        code_changes_a_variable,
        var_binding,
        ask_reply,
        nested_calls,
    )
}
#: Shapes that may be mixed into one random program (independent of the runner).
MIXABLE = [n for n in SHAPES if n not in ("divergent_branch", "nested_calls")]


def mixed(rng: random.Random, parts: int | None = None) -> Shape:
    """A random program: several shapes one after the other."""
    chosen = [rng.choice(MIXABLE) for _ in range(parts or rng.randint(2, 4))]
    shapes = [SHAPES[name](rng) for name in chosen]
    body = "".join(s.body for s in shapes)
    returns = sorted({r for s in shapes for r in s.returns})
    return Shape("mixed", body, returns=returns)


def generate(name: str, seed: int) -> Shape:
    """The program of shape ``name`` for ``seed`` (``mixed`` for a random mix)."""
    rng = random.Random(f"{name}:{seed}")
    return mixed(rng) if name == "mixed" else SHAPES[name](rng)


__all__ = ["MIXABLE", "SHAPES", "Shape", "call", "generate", "mixed"]
