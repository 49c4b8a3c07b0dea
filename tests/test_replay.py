"""Exact replay through the executor API: a statement re-entered after a stop
behaves as in the first life (values, exceptions, bindings, concurrency), and a
replay that reaches a different call is refused instead of fed the wrong record.

The "crash" here is a BaseException raised by a stub: nothing after it runs or
is written, as with a kill. Real kills are in test_kill.py and the fuzzer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor
from playbooks.execution.journal import ReplayDivergence
from playbooks.execution.safety import SafetyError, check_statement, safe_builtins


class Stop(BaseException):
    """Ends the code the way a kill would."""


class World:
    """Effects that remember every call; ``stop_at`` raises Stop before the n-th effect."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.stop_at = stop_at

    def _effect(self, *call: object) -> None:
        if self.stop_at is not None and len(self.calls) + 1 == self.stop_at:
            raise Stop()
        self.calls.append(call)

    def namespace(self, **extra: object) -> dict:
        async def Say(target, text):
            self._effect("Say", target, text)

        async def Double(x):
            for _ in range(3 - x if isinstance(x, int) and x < 3 else 0):
                await asyncio.sleep(0)  # later arguments finish first
            self._effect("Double", x)
            return 2 * x

        async def Items():
            self._effect("Items")
            return [1, 2, 3]

        async def Fail(kind):
            self._effect("Fail", kind)
            if kind == "key":
                raise KeyError("k")
            raise ValueError("bad", 7)

        async def Var(name, value):
            ns[str(name).lstrip("$")] = value
            return value

        ns: dict = {
            "Say": Say,
            "Double": Double,
            "Items": Items,
            "Fail": Fail,
            "Var": Var,
            "__builtins__": safe_builtins(
                ["uuid", "random", "time", "datetime", "asyncio", "json"]
            ),
        }
        ns.update(extra)
        return ns


def manager(path: Path) -> CheckpointManager:
    return CheckpointManager("replay", FilesystemCheckpointProvider(path))


RERUN = frozenset({"Var"})  # what the interpreter passes for its Var built-in


async def second_life(path: Path, world: World) -> StreamingPythonExecutor:
    m = manager(path)
    checkpoint = await m.get_latest_checkpoint()
    assert checkpoint is not None
    ex = await StreamingPythonExecutor.resume_from_checkpoint(
        None, checkpoint, namespace=world.namespace(), checkpoint_manager=m, rerun=RERUN
    )
    m.close()
    return ex


async def uninterrupted(path: Path, code: str, world: World) -> StreamingPythonExecutor:
    m = manager(path)
    ex = StreamingPythonExecutor(
        None, namespace=world.namespace(), checkpoint_manager=m, rerun=RERUN
    )
    ex.set_llm_response(code)
    await ex.add_chunk(code)
    await ex.finalize()
    m.close()
    return ex


async def crash_and_resume(tmp_path: Path, code: str, stop_at: int) -> tuple[list, dict, list]:
    """Effects of both lives joined, final variables, and the reference effects."""
    reference = World()
    ex = await uninterrupted(tmp_path / "ref", code, reference)
    first, second = World(stop_at=stop_at), World()
    m = manager(tmp_path / "crash")
    ex1 = StreamingPythonExecutor(
        None, namespace=first.namespace(), checkpoint_manager=m, rerun=RERUN
    )
    ex1.set_llm_response(code)
    with pytest.raises(Stop):
        await ex1.add_chunk(code)
        await ex1.finalize()
    m.close()
    ex2 = await second_life(tmp_path / "crash", second)
    return first.calls + second.calls, ex2.variables(), (reference.calls, ex.variables())


async def stop_then_resume(path: Path, code: str, stop_at: int, first: dict, second: dict) -> World:
    """Run ``code`` until Stop before effect ``stop_at`` with names ``first``, then
    resume it with names ``second`` (the stream is cut: what was received is all)."""
    m = manager(path)
    ex = StreamingPythonExecutor(
        None, namespace=World(stop_at=stop_at).namespace(**first), checkpoint_manager=m
    )
    with pytest.raises(Stop):
        await ex.add_chunk(code)
        await ex.finalize()
    m.close()
    world = World()
    m = manager(path)
    try:
        checkpoint = await m.get_latest_checkpoint()
        resumed = await StreamingPythonExecutor.resume_from_checkpoint(
            None, checkpoint, namespace=world.namespace(**second), checkpoint_manager=m
        )
        await resumed.finalize()
    finally:
        m.close()
    return world


def data(variables: dict) -> dict:
    return {k: v for k, v in variables.items() if not callable(v) and not hasattr(v, "__spec__")}


async def assert_exact(tmp_path: Path, code: str, *, deterministic: bool = True) -> list[list]:
    """Stop before every effect in turn; the joined effects and variables match the reference.

    With nondeterministic values two runs differ, so only the calls made are
    compared; the replayed calls' arguments are checked by the journal itself
    (a replay whose arguments differ from the record raises ReplayDivergence).
    Returns the joined effects of every trial."""
    reference = World()
    ex = await uninterrupted(tmp_path / "ref", code, reference)
    trials = []
    for k in range(1, len(reference.calls) + 1):
        calls, variables, _ = await crash_and_resume(tmp_path / f"k{k}", code, k)
        trials.append(calls)
        if deterministic:
            assert calls == reference.calls, f"stopped before effect {k}"
            assert data(variables) == data(ex.variables()), f"stopped before effect {k}"
        else:
            assert [c[0] for c in calls] == [c[0] for c in reference.calls]
            assert data(variables).keys() == data(ex.variables()).keys()
    assert trials, "the program made no effect"
    return trials


MULTILINE_SAY = '''await Say(
    "user",
    "Hello, this message is split over lines")
$x = {
    "a": 1,
    "b": [1,
          2],
}
await Say("user", f"""two
lines {$x['a']}""")
await Say("user", "third"); await Say("user", "fourth")
'''


async def test_statements_spanning_lines_resume_exactly(tmp_path: Path) -> None:
    assert len(await assert_exact(tmp_path, MULTILINE_SAY)) == 4


async def test_uuid_bound_at_top_level_and_in_a_loop_replays(tmp_path: Path) -> None:
    code = (
        "import uuid\n"
        "$order = str(uuid.uuid4())\n"
        "await Say('user', $order)\n"
        "for i in range(3):\n"
        "    $line = str(uuid.uuid4())\n"
        "    await Say('user', f'{i} {$line} {$order}')\n"
    )
    for calls in await assert_exact(tmp_path, code, deterministic=False):
        said = [c[2].split() for c in calls]
        order = said[0][0]
        assert [s[-1] for s in said[1:]] == [order] * 3  # one order id, before and after
        assert len({s[1] for s in said[1:]}) == 3  # a new line id per iteration


async def test_clock_and_chance_replay_inside_one_statement(tmp_path: Path) -> None:
    code = (
        "import time, random, datetime\n"
        "for i in range(3):\n"
        "    await Say('user', f'{time.time()} {random.random()} {random.choice([1, 2, 3])}'"
        " + str(datetime.datetime.now()))\n"
    )
    assert len(await assert_exact(tmp_path, code, deterministic=False)) == 3


async def test_exceptions_replay_with_their_type_and_args(tmp_path: Path) -> None:
    code = (
        "class Late(Exception):\n"
        "    pass\n"
        "$seen = []\n"
        "for kind in ['key', 'value', 'key']:\n"
        "    try:\n"
        "        await Fail(kind)\n"
        "    except KeyError as e:\n"
        "        $seen.append(('key', e.args[0]))\n"
        "    except ValueError as e:\n"
        "        $seen.append(('value', e.args))\n"
        "    finally:\n"
        "        await Say('user', str(len($seen)))\n"
        "try:\n"
        "    raise Late('x')\n"
        "except Late:\n"
        "    await Say('user', 'late')\n"
    )
    await assert_exact(tmp_path, code)
    ex = await uninterrupted(tmp_path / "plain", code, World())
    assert ex.namespace["seen"] == [("key", "k"), ("value", ("bad", 7)), ("key", "k")]


async def test_a_custom_exception_from_an_await_replays_as_its_class(tmp_path: Path) -> None:
    code = (
        "class Refused(Exception):\n"
        "    pass\n"
        "async def refuse(x):\n"
        "    raise Refused(x, 2)\n"
        "$caught = []\n"
        "for i in range(2):\n"
        "    try:\n"
        "        await refuse(i)\n"
        "    except Refused as e:\n"
        "        $caught.append(list(e.args))\n"
        "    await Say('user', str(i))\n"
    )
    calls, variables, (ref_calls, ref_vars) = await crash_and_resume(tmp_path, code, 2)
    assert calls == ref_calls
    assert variables["caught"] == ref_vars["caught"] == [[0, 2], [1, 2]]


async def test_argument_side_effects_happen_on_replay(tmp_path: Path) -> None:
    code = (
        "$queue = ['a', 'b', 'c']\nfor i in range(3):\n    await Say('user', f'{$queue.pop(0)}')\n"
    )
    assert len(await assert_exact(tmp_path, code)) == 3


async def test_awaits_in_comprehension_iterables_and_fstrings(tmp_path: Path) -> None:
    code = (
        "$xs = [x * 10 for x in await Items()]\n"
        "$ys = [await Double(x) for x in [1, 2]]\n"
        "await Say('user', f'{await Double(5)} {$xs} {$ys}')\n"
    )
    plain = StreamingPythonExecutor(None, namespace=World().namespace())
    await plain.add_chunk(code)
    await plain.finalize()
    assert plain.namespace["xs"] == [10, 20, 30]
    assert len(await assert_exact(tmp_path, code)) == 5


async def test_gather_keys_do_not_depend_on_completion_order(tmp_path: Path) -> None:
    code = (
        "import asyncio\n"
        "async def twice(i):\n"
        "    return await Double(i) + await Double(i + 10)\n"
        "$r = await asyncio.gather(twice(0), twice(1), twice(2))\n"
        "await Say('user', str($r))\n"
    )
    reference = World()
    await uninterrupted(tmp_path / "ref", code, reference)
    doubles = [c for c in reference.calls if c[0] == "Double"]
    assert doubles[0][1] == 2  # the last started finished first
    assert len(await assert_exact(tmp_path, code)) == 7


async def test_var_bindings_replay(tmp_path: Path) -> None:
    code = "if True:\n    await Var('name', 'Ada')\n    await Say('user', 'hi')\n    await Say('user', name)\n"
    assert len(await assert_exact(tmp_path, code)) == 2


async def test_imports_and_defs_are_recreated_on_resume(tmp_path: Path) -> None:
    code = (
        "import json\n"
        "def shout(x):\n"
        "    return x.upper() + '!'\n"
        "await Say('user', shout('one'))\n"
        "await Say('user', json.dumps([shout('two')]))\n"
    )
    assert len(await assert_exact(tmp_path, code)) == 2


async def test_a_divergent_replay_is_refused_not_fed_the_wrong_record(tmp_path: Path) -> None:
    code = (
        "for i in range(2):\n"
        "    if flag():\n"
        "        await Double(1)\n"
        "    else:\n"
        "        await Items()\n"
        "    await Say('user', str(i))\n"
    )
    seen: list = []

    def flag_then_log() -> bool:
        seen.append("checked")
        return False

    with pytest.raises(ReplayDivergence, match="first run called Double"):
        await stop_then_resume(tmp_path, code, 3, {"flag": lambda: True}, {"flag": flag_then_log})
    assert seen == ["checked"]  # stopped at the first divergent call: Items never ran


async def test_other_arguments_on_replay_are_a_divergence(tmp_path: Path) -> None:
    code = "if True:\n    await Double(value())\n    await Say('user', 'x')\n"
    with pytest.raises(ReplayDivergence, match="other arguments"):
        await stop_then_resume(tmp_path, code, 2, {"value": lambda: 1}, {"value": lambda: 2})


@pytest.mark.parametrize(
    "code",
    [
        "async for x in Items():\n    pass\n",
        "async with Lock():\n    pass\n",
        "$x = [y async for y in Items()]\n",
    ],
)
def test_async_for_and_with_are_refused_before_running(code: str) -> None:
    import ast

    node = ast.parse(code.replace("$", "")).body[0]
    with pytest.raises(SafetyError, match="cannot be replayed"):
        check_statement(node, allowed_imports=[])


def test_python_block_globals_get_journaled_clocks() -> None:
    import random
    import time
    import uuid
    from datetime import datetime

    namespace = {"time": time, "uuid4": uuid.uuid4, "random": random, "datetime": datetime}
    from playbooks.execution.nondeterminism import journal_globals

    journal_globals(namespace)
    assert namespace["time"] is not time and namespace["time"].time is not time.time
    assert namespace["uuid4"] is not uuid.uuid4
    assert isinstance(datetime.now(), namespace["datetime"])
    assert time.time is time.time  # the real modules are untouched


async def test_tasks_in_a_loop_keep_their_keys_when_earlier_gathers_replay(tmp_path: Path) -> None:
    """A replayed gather starts no tasks: the next iteration's tasks must still get
    the keys they had in the first life, or their finished awaits would run again."""
    code = (
        "import asyncio\n"
        "async def pair(i):\n"
        "    await Say('user', f'a{i}')\n"
        "    return await Double(i)\n"
        "for i in range(3):\n"
        "    $r = await asyncio.gather(pair(i), pair(i + 10))\n"
        "    await Say('user', str($r))\n"
    )
    assert len(await assert_exact(tmp_path, code)) == 15


async def test_a_plain_statement_is_not_computed_again_after_a_stop(tmp_path: Path) -> None:
    """`$n = next_id()` awaits nothing; it is checkpointed when it ends, so the
    resumed run uses the first life's value instead of drawing a new one."""
    counter = iter(range(100, 200))

    def next_id() -> int:
        return next(counter)

    code = "$n = next_id()\nawait Say('user', str($n))\n"
    names = {"next_id": next_id}
    second = await stop_then_resume(tmp_path, code, 1, names, names)
    assert second.calls == [("Say", "user", "100")]


async def test_awaits_inside_a_code_defined_function_are_keyed_under_its_call(
    tmp_path: Path,
) -> None:
    """When the call of `charge` replays, the awaits it made inside are skipped with
    it, and the next await of the statement still gets its own record."""
    code = (
        "async def charge(n):\n"
        "    return await Double(n)\n"
        "for n in range(3):\n"
        "    await charge(n)\n"
        "    await Say('user', str(n))\n"
    )
    assert len(await assert_exact(tmp_path, code)) == 6
