"""Checkpoints encode only what a statement could have changed, and stay exact.

The property test runs generated sequences of statements full of aliasing
(two names for one list, a list inside another variable's container, bound
methods, code-defined functions and lambdas, ``Var`` by string, attribute and
subscript assignment) and checks, after every checkpoint, that the stored
variables equal a full re-encode of the namespace.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import json
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playbooks import CheckpointManager, FilesystemCheckpointProvider
from playbooks.durability import varcache
from playbooks.durability.serialization import encode_variables
from playbooks.execution.touched import merge_touched, touched_names


@dataclasses.dataclass
class Box:
    items: list = dataclasses.field(default_factory=list)
    label: str = ""


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


class Runner:
    """Runs statements the way the executor does and checkpoints after each one."""

    def __init__(self, path: str) -> None:
        self.manager = CheckpointManager("prop", FilesystemCheckpointProvider(path, fsync=False))
        self.ns: dict = {"__builtins__": builtins, "Box": Box}

        def Var(name: str, value: object) -> object:
            self.ns[str(name).lstrip("$")] = value
            return value

        self.ns["Var"] = Var
        self.provided = {k: id(v) for k, v in self.ns.items()}
        self.n = 0

    def variables(self) -> dict:
        return {
            k: v
            for k, v in self.ns.items()
            if not k.startswith("__") and self.provided.get(k) != id(v)
        }

    def run(self, source: str, touched: frozenset[str] | None = None) -> None:
        node = ast.parse(source).body[0]
        touched = merge_touched(touched, touched_names(node)) if touched else touched_names(node)
        try:
            exec(compile(source, "<stmt>", "exec"), self.ns)  # noqa: S102 - the test's own code
        except Exception:
            pass  # a failed statement may still have changed things on its way
        self.n += 1
        self.manager.record_checkpoint(
            "main",
            turn=0,
            cursor=self.n,
            statement=source,
            variables=self.variables(),
            touched=touched,
        )

    def check(self, after: str) -> None:
        stored = self.manager.state.frames["main"].vars
        expected, _ = encode_variables(self.variables())
        assert sorted(stored) == sorted(expected), after
        for name, value in expected.items():
            assert _canonical(stored[name]) == _canonical(value), f"${name} after {after!r}"


NAMES = "abcd"
name = st.sampled_from(NAMES)
small = st.sampled_from(["1", "'s'", "[]", "[1, 2]", "{'k': 1}", "Box()"])


@st.composite
def statement(draw) -> str:
    a, b = draw(name), draw(name)
    v = draw(small)
    shapes = [
        f"{a} = {v}",
        f"{a} = [1, [2]]",
        f"{a} = {b}",
        f"{a} = [{b}, 0]",
        f"{a} = {{'k': {b}}}",
        f"{a} = ({b}, 1)",
        f"{a} = Box([{b}])",
        f"{a}.append({v})",
        f"{a}.append({b})",
        f"{a}.pop(0)",
        f"{a} = {b}.pop(0)",
        f"{a}[0] = {v}",
        f"{a}[0].append({v})",
        f"{a}['k'] = {b}",
        f"{a}['k'].append(7)",
        f"{a}.items.append({v})",
        f"{a}.items = {b}",
        f"{a}.label += 'x'",
        f"{a} += [{v}]",
        f"{a}.extend({b})",
        f"{a}.clear()",
        f"del {a}",
        f"del {a}[0]",
        f"Var('{a}', {v})",
        f"Var('${a}', {b})",
        f"{a} = {b}.append",
        f"{a}({v})",
        f"def f():\n    {a}.append(9)\n    global {b}\n    {b} = 5",
        "f()",
        f"g = lambda: {a}.append(3)",
        "g()",
        f"{a} = [x for x in {b}]",
        f"[{a}.append(i) for i in range(2)]",
    ]
    return draw(st.sampled_from(shapes))


@settings(max_examples=150, deadline=None)
@given(st.lists(statement(), min_size=1, max_size=14))
def test_incremental_checkpoints_equal_a_full_encode(statements: list[str]) -> None:
    with tempfile.TemporaryDirectory() as path:
        runner = Runner(path)
        for source in ["a = []", "b = [0]", "c = {'k': [1]}", "d = Box()", *statements]:
            runner.run(source)
            runner.check(source)
        runner.manager.close()
        reread = CheckpointManager("prop", FilesystemCheckpointProvider(path)).read_state()
        expected, _ = encode_variables(runner.variables())
        assert _canonical(reread.frames["main"].vars) == _canonical(expected)


def test_aliasing_cases_by_name(tmp_path) -> None:
    """The aliasing shapes the issue names, each once, without hypothesis."""
    runner = Runner(str(tmp_path))
    for source in [
        "q = [1, 2, 3]",
        "alias = q",
        "holder = {'list': q, 'n': 0}",
        "q.pop(0)",  # changes alias and holder too
        "holder['list'].append(4)",  # changes q and alias
        "b = Box()",
        "b.items = q",
        "b.items.append(5)",
        "Var('late', q)",
        "late.append(6)",
        "def grow():\n    q.append(7)",
        "grow()",
    ]:
        runner.run(source)
        runner.check(source)
    assert runner.ns["holder"]["list"] == [2, 3, 4, 5, 6, 7]


def test_untouched_variables_are_not_encoded(tmp_path, monkeypatch) -> None:
    runner = Runner(str(tmp_path))
    runner.run("big = [str(i) * 10 for i in range(2000)]")
    runner.run("x = 0")
    encoded: list[str] = []
    real = varcache._encode_one

    def spy(name, value, codec):
        encoded.append(name)
        return real(name, value, codec)

    monkeypatch.setattr(varcache, "_encode_one", spy)
    for _ in range(5):
        runner.run("x = x + 1")
    assert encoded == ["x"] * 5
    runner.run("big.append('y')")
    assert encoded[-1] == "big" and "x" not in encoded[5:]
    runner.check("big.append")
    encoded.clear()
    runner.manager.record_checkpoint(  # no touched given: today's behaviour, everything
        "main", turn=0, cursor=99, statement="", variables=runner.variables()
    )
    assert sorted(encoded) == ["big", "x"]


def test_touched_names() -> None:
    def t(source: str):
        return touched_names(ast.parse(source).body[0])

    assert t("x = y + len(z)") == {"x", "y", "z", "len"}
    assert t("await Var('$name', 1)") == {"Var", "name"}
    assert t("await Var(key, 1)") is None  # bound by a name known only at run time
    assert t("globals()['a'] = 1") is None
    assert t("import json as j") == {"j"}
    assert t("try:\n    pass\nexcept E as err:\n    pass") == {"E", "err"}
    assert t("f = lambda: q.pop()") == {"f", "q"}
    assert t("def f():\n    global g\n    g = 1") == {"f", "g"}
    assert merge_touched(frozenset({"a"}), None) is None
    assert merge_touched(frozenset({"a"}), frozenset({"b"})) == {"a", "b"}


async def test_a_task_running_code_defined_code_forces_full_checkpoints(tmp_path) -> None:
    """A background task of generated code may change anything while later
    statements run: checkpoints stay complete until one after it has ended."""
    import asyncio

    runner = Runner(str(tmp_path))
    gate = asyncio.Event()
    runner.ns.update({"asyncio": asyncio, "gate": gate})
    runner.provided.update({"asyncio": id(asyncio), "gate": id(gate)})
    for source in [
        "items = []",
        "async def bg():\n    await gate.wait()\n    items.append(1)",
        "t = asyncio.ensure_future(bg())",
        "x = 1",
    ]:
        runner.run(source)
        runner.check(source)
    gate.set()
    task = runner.ns["t"]
    await task  # the task changes items between two statements
    runner.run("x = 2")
    runner.check("x = 2 after the task ended")
    assert runner.manager.state.frames["main"].vars["items"] == [1]


#: Code that changes ``$items`` (or ``$n``) without naming it: through a
#: function or class the code defined, which is not checkpointed itself.
THROUGH_DEFINITIONS = {
    "function": "def add():\n    items.append(1)\nadd()\nawait Noop()\nadd()\n",
    "async function": "async def add():\n    items.append(1)\nawait add()\nawait Noop()\nawait add()\n",
    "decorated": "def deco(f):\n    return f\n@deco\ndef add():\n    items.append(1)\nadd()\nadd()\n",
    "class": "class C:\n    def __init__(self):\n        items.append(1)\nC()\nawait Noop()\nC()\n",
    "method": "class C:\n    def add(self):\n        items.append(1)\nc = C()\nc.add()\nc.add()\n",
    "lambda": "add = lambda: items.append(1)\nadd()\nawait Noop()\nadd()\n",
    "global": "def bump():\n    global n\n    n = n + 1\nbump()\nawait Noop()\nbump()\n",
}


@pytest.mark.parametrize("shape", sorted(THROUGH_DEFINITIONS))
async def test_a_change_made_through_code_the_code_defined_is_checkpointed(tmp_path, shape) -> None:
    from playbooks import StreamingPythonExecutor

    async def Noop() -> None:
        return None

    manager = CheckpointManager("defs", FilesystemCheckpointProvider(tmp_path, fsync=False))
    ex = StreamingPythonExecutor(None, namespace={"Noop": Noop}, checkpoint_manager=manager)
    await ex.add_chunk("items = []\nn = 0\n" + THROUGH_DEFINITIONS[shape])
    await ex.finalize()
    manager.close()
    stored = CheckpointManager("defs", FilesystemCheckpointProvider(tmp_path)).read_state()
    assert stored.frames["main"].vars["items"] == ex.namespace["items"]
    assert stored.frames["main"].vars["n"] == ex.namespace["n"]
    assert ex.namespace["items"] == [1, 1] or ex.namespace["n"] == 2
