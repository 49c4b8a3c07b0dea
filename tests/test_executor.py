"""StreamingPythonExecutor through its public API, with stubs in the namespace."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from stubs import World

from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor
from playbooks.execution.dollar import rewrite_dollars

RESPONSES = Path(__file__).parent / "responses"


class Recorder:
    """Async stubs that remember every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def namespace(self) -> dict:
        async def Say(target, text):
            self.calls.append(("Say", target, text))

        async def Step(step):
            self.calls.append(("Step", step))

        async def Yld(target="user"):
            self.calls.append(("Yld", target))
            return f"reply{len(self.calls)}"

        async def Return(value=None):
            self.calls.append(("Return", value))

        async def Double(x):
            self.calls.append(("Double", x))
            return 2 * x

        return {
            "Say": Say,
            "Step": Step,
            "Yld": Yld,
            "WaitForMessage": Yld,
            "Return": Return,
            "Double": Double,
            "Trace": self.trace,
        }

    async def trace(self, *args):
        self.calls.append(("Trace", *args))
        return args[0] if args else None


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def random_chunks(text: str, rng: random.Random) -> list[str]:
    out, i = [], 0
    while i < len(text):
        n = rng.choice([1, 1, 2, 3, 5, 8, 13, 40])
        out.append(text[i : i + n])
        i += n
    return out


async def run(text: str, parts: list[str], rec: Recorder | None = None, **kw):
    rec = rec or Recorder()
    ex = StreamingPythonExecutor(None, namespace=rec.namespace(), **kw)
    for part in parts:
        await ex.add_chunk(part)
    await ex.finalize()
    return ex, rec


def long_response(lines: int = 200) -> str:
    body = []
    i = 0
    while len(body) < lines:
        body += [
            f"$v{i} = {i}",
            f'await Say("user", f"value {{$v{i}}}")',
            f"if $v{i} % 3 == 0:",
            f"    $w{i} = await Double($v{i})",
            "else:",
            f"    $w{i} = -{i}",
            f"for k in range({i % 4}):",
            "# a comment at column 0 inside the loop",
            "    await Trace(k)",
        ]
        i += 1
    return "\n".join(body[:lines]) + "\n"


@pytest.mark.parametrize("size", [1, 5])
async def test_200_lines_in_small_chunks_run_the_statements_of_a_whole_parse(size: int) -> None:
    text = long_response(200)
    expected = [ast.dump(n) for n in ast.parse(rewrite_dollars(text)).body]
    ex, rec = await run(text, chunks(text, size))
    assert len(ex.executed) == len(expected)
    ran = [ast.dump(ast.parse(rewrite_dollars(src)).body[0]) for src in ex.executed]
    assert ran == expected
    whole, whole_rec = await run(text, [text])
    assert rec.calls == whole_rec.calls
    assert ex.namespace["w3"] == 6 and ex.namespace["w4"] == -4


def tricky_responses() -> list[Path]:
    files = sorted(RESPONSES.glob("*")) if RESPONSES.exists() else []
    return [f for f in files if f.is_file()]


async def test_random_chunkings_of_tricky_responses_match_the_whole_parse() -> None:
    files = tricky_responses()
    if len(files) < 15:
        pytest.skip("tests/responses holds fewer than 15 responses")
    rng = random.Random(1234)

    async def run_in_world(parts: list[str]) -> tuple[list[str], list, str]:
        log: list = []
        ex = StreamingPythonExecutor(None, namespace=World(log))
        try:
            for part in parts:
                await ex.add_chunk(part)
            await ex.finalize()
        except Exception as error:  # the same error, after the same statements
            return ex.executed, log, f"{type(error).__name__}: {error}"
        return ex.executed, log, ""

    for path in files:
        text = path.read_bytes().decode()
        reference = await run_in_world([text])
        assert reference[0], path.name
        for _ in range(30):
            assert await run_in_world(random_chunks(text, rng)) == reference, path.name


async def test_statements_run_while_the_stream_is_still_open() -> None:
    rec = Recorder()
    ex = StreamingPythonExecutor(None, namespace=rec.namespace())
    await ex.add_chunk(
        '```python\nawait Say("user", "one")\nif True:\n    await Say("user", "two")\n'
    )
    assert rec.calls == [("Say", "user", "one")]  # the if may still get an else
    await ex.add_chunk("else:\n    pass\nawait Say")
    assert [c[2] for c in rec.calls] == ["one"]  # a line is judged once it is whole
    await ex.add_chunk('("user", "three")\n')
    assert [c[2] for c in rec.calls] == ["one", "two", "three"]
    await ex.add_chunk("```\n")
    assert [c[2] for c in rec.calls] == ["one", "two", "three"]
    await ex.finalize()
    assert len(ex.executed) == 3


async def test_dollar_variables_land_in_the_namespace() -> None:
    text = '$name = "Ada"\n$greeting = f"Hi {$name}, it costs $5"\n'
    ex, _ = await run(text, [text])
    assert ex.namespace["greeting"] == "Hi Ada, it costs $5"
    assert ex.variables() == {"name": "Ada", "greeting": "Hi Ada, it costs $5"}


async def test_a_runtime_error_stops_the_response_and_names_its_line() -> None:
    text = '```python\nawait Say("user", "a")\n$x = 1 / 0\nawait Say("user", "b")\n```\n'
    rec = Recorder()
    ex = StreamingPythonExecutor(None, namespace=rec.namespace())
    with pytest.raises(ZeroDivisionError) as info:
        for part in chunks(text, 7):
            await ex.add_chunk(part)
        await ex.finalize()
    assert info.value.response_line == 3
    assert rec.calls == [("Say", "user", "a")]


async def test_a_syntax_error_is_raised_with_the_response_line() -> None:
    text = 'await Say("user", "a")\nx = = 2\nawait Say("user", "b")\n'
    rec = Recorder()
    ex = StreamingPythonExecutor(None, namespace=rec.namespace())
    with pytest.raises(SyntaxError) as info:
        await ex.add_chunk(text)
        await ex.finalize()
    assert info.value.lineno == 2
    assert rec.calls == [("Say", "user", "a")]


def manager(tmp_path: Path, name: str = "exec1") -> CheckpointManager:
    return CheckpointManager(name, FilesystemCheckpointProvider(tmp_path / "ckpt"))


class Stop(BaseException):
    """Ends the code like a killed process would: nothing more is written."""


async def crash():
    raise Stop()


async def no_crash():
    return None


async def test_awaits_inside_compound_statements_are_journaled_and_replayed(tmp_path: Path) -> None:
    text = (
        "$total = 0\n"
        "for i in range(4):\n"
        "    if i % 2:\n"
        "        $total += await Double(i)\n"
        "    else:\n"
        "        try:\n"
        "            await Say('user', f'even {i}')\n"
        "        finally:\n"
        "            $total += [await Double(j) for j in range(2)][1]\n"
        "    if i == 3:\n"
        "        await Crash()\n"
    )
    first = Recorder()
    m1 = manager(tmp_path)
    ex = StreamingPythonExecutor(
        None, namespace=first.namespace() | {"Crash": crash}, checkpoint_manager=m1
    )
    ex.set_llm_response(text)
    with pytest.raises(Stop):
        await ex.add_chunk(text)
        await ex.finalize()
    assert len(first.calls) == 8
    m1.close()

    ckpt = await manager(tmp_path).get_latest_checkpoint()
    # every top-level statement is checkpointed, `$total = 0` included
    assert ckpt["metadata"]["cursor"]["statement"] == 1
    assert sorted(ckpt["metadata"]["cursor"]["awaits"]) == [f"0.1.{q}" for q in range(8)]
    again = Recorder()
    ex2 = await StreamingPythonExecutor.resume_from_checkpoint(
        None, ckpt, namespace=again.namespace() | {"Crash": no_crash}
    )
    assert again.calls == []  # every finished await came from the journal
    assert ex2.namespace["total"] == 12


async def test_seed_scenario_in_process(tmp_path: Path) -> None:
    """x = 10, Say, (the process stops), resume, then y == 20, Say not repeated."""
    code = '$x = 10\nawait Say("user", f"x is {$x}")\n$y = $x * 2\n'
    rec = Recorder()
    m1 = manager(tmp_path)
    ex = StreamingPythonExecutor(None, namespace=rec.namespace(), checkpoint_manager=m1)
    await ex.add_chunk(code[: code.index("$y")])  # the stream stops here
    m1.close()
    ckpt = await manager(tmp_path).get_latest_checkpoint()
    assert ckpt["namespace"] == {"x": 10}
    assert ckpt["metadata"]["llm_response"] == code[: code.index("$y")]
    rec2 = Recorder()
    ex2 = await StreamingPythonExecutor.resume_from_checkpoint(
        None, ckpt, namespace=rec2.namespace()
    )
    await ex2.add_chunk(code[code.index("$y") :])
    await ex2.finalize()
    assert ex2.namespace["y"] == 20
    assert rec2.calls == []  # the Say was delivered before and is not repeated


async def test_resume_replays_completed_awaits_of_the_unfinished_statement(tmp_path: Path) -> None:
    """A crash in the middle of a loop: done iterations are not re-run."""
    code = "for i in range(5):\n    await Say('user', f'n{i}')\n    if i == 2:\n        await Crash()\n$done = True\n"
    rec = Recorder()
    ns = rec.namespace() | {"Crash": crash}
    m1 = manager(tmp_path)
    ex = StreamingPythonExecutor(None, namespace=ns, checkpoint_manager=m1)
    ex.set_llm_response(code)
    with pytest.raises(Stop):
        await ex.add_chunk(code)
    m1.close()
    assert [c[2] for c in rec.calls if c[0] == "Say"] == ["n0", "n1", "n2"]

    ckpt = await manager(tmp_path).get_latest_checkpoint()
    assert ckpt["metadata"]["cursor"]["statement"] == 0
    assert len(ckpt["metadata"]["cursor"]["awaits"]) == 3
    rec2 = Recorder()
    ex2 = await StreamingPythonExecutor.resume_from_checkpoint(
        None, ckpt, namespace=rec2.namespace() | {"Crash": no_crash}
    )
    await ex2.finalize()
    assert [c[2] for c in rec2.calls if c[0] == "Say"] == ["n3", "n4"]
    assert ex2.namespace["done"] is True


async def test_a_value_that_cannot_be_checkpointed_is_named_and_fails_clearly_after_resume(
    tmp_path: Path,
) -> None:
    code = "$f = lambda x: x + 1\n$n = 1\nawait Say('user', 'hi')\n$y = $f(2)\n"
    rec = Recorder()
    m1 = manager(tmp_path)
    ex = StreamingPythonExecutor(None, namespace=rec.namespace(), checkpoint_manager=m1)
    await ex.add_chunk(code[: code.index("$y")])  # the run stops here
    assert any("$f" in w and "function" in w for w in m1.warnings), m1.warnings
    m1.close()
    ckpt = await manager(tmp_path).get_latest_checkpoint()
    assert ckpt["namespace"]["n"] == 1
    ex2 = await StreamingPythonExecutor.resume_from_checkpoint(
        None, ckpt, namespace=rec.namespace()
    )
    with pytest.raises(RuntimeError, match="could not be checkpointed"):
        await ex2.add_chunk(code[code.index("$y") :])


async def test_semicolon_statements_resume_at_the_right_one(tmp_path: Path) -> None:
    code = "await Say('user', 'a'); await Say('user', 'b'); await Crash(); await Say('user', 'c')\n"
    rec = Recorder()
    m1 = manager(tmp_path)
    ex = StreamingPythonExecutor(
        None, namespace=rec.namespace() | {"Crash": crash}, checkpoint_manager=m1
    )
    ex.set_llm_response(code)
    with pytest.raises(Stop):
        await ex.add_chunk(code)
    m1.close()
    ckpt = await manager(tmp_path).get_latest_checkpoint()
    assert ckpt["metadata"]["cursor"]["statement"] == 2
    rec2 = Recorder()
    await StreamingPythonExecutor.resume_from_checkpoint(
        None, ckpt, namespace=rec2.namespace() | {"Crash": no_crash}
    )
    assert [c[2] for c in rec2.calls] == ["c"]
