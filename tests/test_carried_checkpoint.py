"""A statement that changed no variable has its checkpoint written inside the
frame's next await record, one record instead of two; a kill while it is kept
back resumes that statement, whose awaits replay, so the run stays exact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from killing import child_env

from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor
from playbooks.durability.blobs import loads
from playbooks.durability.records import read_records
from playbooks.execution.builtins import make_builtins
from playbooks.execution.interpreter import PURE

CODE = (
    "$n = 1\n"
    'await Say("user", "one")\n'
    'await Step("Main:02")\n'
    'await Say("user", f"two {$n}")\n'
    "$n += 1\n"
    'await Say("user", f"three {$n}")\n'
)
SAYS = ["one", "two 1", "three 2"]

CHILD = """
import asyncio, sys
from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor
from playbooks.execution.builtins import make_builtins
from playbooks.execution.interpreter import PURE

class Quiet:
    consumed = 0
    def step(self, **_): pass

async def main(directory, code):
    async def Say(target, text):
        print(text, flush=True)
    ns = {}
    ns.update(make_builtins(agent="a", frame_id="main", conversation=Quiet(), namespace=ns))
    ns["Say"] = Say
    manager = CheckpointManager("carry", FilesystemCheckpointProvider(directory, fsync=False))
    ex = StreamingPythonExecutor(None, namespace=ns, checkpoint_manager=manager, pure=PURE)
    for line in code.splitlines(keepends=True):
        await ex.add_chunk(line)
    await ex.finalize()
    manager.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def stored_records(folder: Path) -> list[dict]:
    data = b"".join(p.read_bytes() for p in sorted(folder.glob("log-*")))
    return [loads(p) for p in read_records(data).payloads]


class Quiet:
    consumed = 0

    def step(self, **_: object) -> None:
        pass


def namespace(said: list[str]) -> dict:
    async def Say(target: str, text: str) -> None:
        said.append(text)

    ns: dict = {}
    ns.update(make_builtins(agent="a", frame_id="main", conversation=Quiet(), namespace=ns))
    ns["Say"] = Say
    return ns


async def run(tmp_path: Path, code: str) -> tuple[CheckpointManager, list[str]]:
    said: list[str] = []
    manager = CheckpointManager("carry", FilesystemCheckpointProvider(tmp_path, fsync=False))
    ex = StreamingPythonExecutor(
        None, namespace=namespace(said), checkpoint_manager=manager, pure=PURE
    )
    ex.set_llm_response(code)
    await ex.add_chunk(code)
    await ex.finalize()
    return manager, said


async def test_a_checkpoint_that_changed_nothing_rides_on_the_next_await(tmp_path: Path) -> None:
    manager, said = await run(tmp_path, CODE)
    manager.close()
    assert said == SAYS
    records = stored_records(tmp_path / "carry")
    kinds = [r["k"] + ("+ck" if "ck" in r else "") for r in records]
    # $n = 1 changes a variable: its own record; each Say/Step after a statement
    # that changed nothing carries that statement's checkpoint
    assert kinds == [
        "text",
        "ckpt",
        "await",
        "await+ck",
        "await+ck",
        "ckpt",
        "ckpt",
        "await",
        "ckpt",
    ]
    carried = [r["ck"]["n"] for r in records if "ck" in r]
    assert carried == [2, 3]
    assert [r["n"] for r in records if r["k"] == "ckpt"] == [1, 4, 5, 6]

    reopened = CheckpointManager("carry", FilesystemCheckpointProvider(tmp_path))
    state = reopened.open()
    assert state.counter == 6 and state.frames["main"].cursor == 6
    ids = await reopened.list_checkpoints()
    assert ids == [f"carry_ckpt_{n}" for n in range(1, 7)]  # carried ones are listed
    third = await reopened.load_checkpoint("carry_ckpt_3")
    assert third["metadata"]["cursor"]["statement"] == 3
    reopened.close()


async def test_the_variable_cache_stays_valid_across_carried_checkpoints(tmp_path: Path) -> None:
    code = "$big = list(range(2000))\n" + 'await Step("Main:01")\n' * 20 + "$x = 1\n"
    manager, _ = await run(tmp_path, code)
    # only the first checkpoint encoded everything; none after it re-encoded $big
    assert manager._var_caches["main"].full_encodes == 1
    manager.close()


@pytest.mark.parametrize("n", [2, 3, 4, 6])
async def test_a_kill_while_a_checkpoint_is_kept_back_resumes_exactly(
    tmp_path: Path, n: int
) -> None:
    """Checkpoints 2, 3, 4 and 6 (the Says and the Step) change nothing: killed
    right after one is taken, before any record holds it, the resume replays
    that statement from the journal: no message twice, none lost."""
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), CODE],
        env=child_env({"PLAYBOOKS_CRASH_AT": f"ckpt:{n}:after"}),
        capture_output=True,
        text=True,
    )
    assert child.returncode == -9, child.stderr
    first = child.stdout.splitlines()
    manager = CheckpointManager("carry", FilesystemCheckpointProvider(tmp_path, fsync=False))
    checkpoint = await manager.get_latest_checkpoint()
    assert checkpoint["metadata"]["counter"] == n - 1  # the kept-back one never reached disk
    said: list[str] = []
    ex = await StreamingPythonExecutor.resume_from_checkpoint(
        None, checkpoint, namespace=namespace(said), checkpoint_manager=manager, pure=PURE
    )
    received = checkpoint["metadata"]["llm_response"]
    await ex.add_chunk(CODE[len(received) :])
    await ex.finalize()
    manager.close()
    assert first + said == SAYS
    assert ex.namespace["n"] == 2


async def test_a_user_function_await_costs_exactly_one_fsync_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One barrier before each call that may have effects, none after it: its
    record and the statement's checkpoint are made durable by the next one."""
    events: list[str] = []
    real = os.fdatasync

    def counted(fd: int) -> None:
        events.append("sync")
        real(fd)

    async def Noop() -> None:
        events.append("call")

    monkeypatch.setattr(os, "fdatasync", counted)
    monkeypatch.setattr(os, "fsync", counted)
    manager = CheckpointManager("one", FilesystemCheckpointProvider(tmp_path, fsync=True))
    manager.open()
    events.clear()  # opening creates files
    ns = {"Noop": Noop}
    ex = StreamingPythonExecutor(None, namespace=ns, checkpoint_manager=manager)
    code = "$x = 0\n" + "await Noop()\n" * 10
    ex.set_llm_response(code)
    await ex.add_chunk(code)
    calls = events.index("call")
    assert events[calls - 1 :] == ["sync", "call"] * 10  # the text and $x ride on the first
    await ex.finalize()
    manager.close()
