"""The public durability API: provider, manager and recovery coordinator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from playbooks import (
    CheckpointManager,
    FilesystemCheckpointProvider,
    RecoveryCoordinator,
    StreamingPythonExecutor,
)
from playbooks.durability.log import DamagedLog, ExecutionLocked
from playbooks.durability.records import read_records


async def test_manager_save_checkpoint_and_get_latest(tmp_path: Path) -> None:
    manager = CheckpointManager("api", FilesystemCheckpointProvider(tmp_path))
    response = '$x = 10\nawait Say("user", "hi")\n$y = $x * 2\n'
    first = await manager.save_checkpoint("$x = 10", {"x": 10}, llm_response=response)
    second = await manager.save_checkpoint('await Say("user", "hi")', {"x": 10, "s": {1, 2}})
    assert (first, second) == ("api_ckpt_1", "api_ckpt_2")
    manager.close()

    fresh = CheckpointManager("api", FilesystemCheckpointProvider(tmp_path))
    latest = await fresh.get_latest_checkpoint()
    assert latest["checkpoint_id"] == "api_ckpt_2"
    assert latest["namespace"] == {"x": 10, "s": {1, 2}}
    assert latest["execution_state"]["variables"] == {"$x": 10, "$s": {1, 2}}
    meta = latest["metadata"]
    assert meta["counter"] == 2 and meta["execution_id"] == "api"
    assert meta["statement"] == 'await Say("user", "hi")'
    assert meta["llm_response"] == response and meta["cursor"]["statement"] == 2
    assert meta["executed_code"].splitlines() == ["$x = 10", 'await Say("user", "hi")']
    assert await fresh.list_checkpoints() == ["api_ckpt_1", "api_ckpt_2"]
    older = await fresh.load_checkpoint("api_ckpt_1")
    assert older["namespace"] == {"x": 10}

    said = []

    async def Say(target, text):
        said.append(text)

    resumed = await StreamingPythonExecutor.resume_from_checkpoint(
        None, latest, namespace={"Say": Say}
    )
    await resumed.finalize()
    assert resumed.namespace["y"] == 20 and said == []


async def test_provider_saver_protocol(tmp_path: Path) -> None:
    provider = FilesystemCheckpointProvider(tmp_path)
    data = {
        "execution_state": {"variables": {"$a": 1}},
        "namespace": {"a": 1},
        "metadata": {"statement": "a = 1"},
    }
    await provider.save_checkpoint("ext_ckpt_1", **data)
    await provider.save_checkpoint("ext_ckpt_2", **data)
    assert await provider.list_checkpoints("ext") == ["ext_ckpt_1", "ext_ckpt_2"]
    loaded = await provider.load_checkpoint("ext_ckpt_2")
    assert loaded["namespace"] == {"a": 1} and loaded["checkpoint_id"] == "ext_ckpt_2"
    await provider.delete_checkpoint("ext_ckpt_1")
    assert await provider.list_checkpoints("ext") == ["ext_ckpt_2"]
    assert await provider.load_checkpoint("ext_ckpt_1") is None
    with pytest.raises(Exception, match="invalid execution id"):
        await provider.load_checkpoint("../etc_ckpt_1")


async def test_cleanup_keeps_the_last_n_checkpoints(tmp_path: Path) -> None:
    provider = FilesystemCheckpointProvider(tmp_path, keep_last_n=1000)
    manager = CheckpointManager("many", provider)
    for i in range(2000):
        await manager.save_checkpoint(f"$v = {i}", {"v": i, "pad": "x" * 600 + str(i)})
    manager.close()
    before = len(await provider.list_checkpoints("many"))
    removed = await provider.cleanup_old_checkpoints("many", keep_last_n=10)
    after = await provider.list_checkpoints("many")
    assert removed == before - len(after) > 0
    assert 10 <= len(after) < before and after[-1] == "many_ckpt_2000"
    latest = await CheckpointManager("many", provider).get_latest_checkpoint()
    assert latest["namespace"]["v"] == 1999


async def test_recovery_coordinator(tmp_path: Path) -> None:
    provider = FilesystemCheckpointProvider(tmp_path)
    manager = CheckpointManager("rec", provider)
    coordinator = RecoveryCoordinator(manager)
    assert not await coordinator.can_recover()
    assert await coordinator.get_recovery_info() is None
    await manager.save_checkpoint("$a = 1", {"a": 1}, llm_response="$a = 1\n$b = 2\n")
    assert await coordinator.can_recover()
    info = await coordinator.get_recovery_info()
    assert info["checkpoint_id"] == "rec_ckpt_1" and info["statement"] == "$a = 1"

    class Agent:
        restored = None

        def restore(self, checkpoint):
            self.restored = checkpoint

    agent = Agent()
    state = await coordinator.recover_execution_state(agent)
    assert agent.restored is state and state["namespace"] == {"a": 1}
    manager.record_status("finished")
    assert not await coordinator.can_recover()


def _fill(manager: CheckpointManager, start: int, stop: int):
    """Checkpoints big enough that compaction starts a new generation every ~90."""

    async def go() -> None:
        for i in range(start, stop):
            await manager.save_checkpoint(f"$v = {i}", {"v": i, "pad": "x" * 600 + str(i)})

    return go()


async def test_everything_listed_can_be_loaded(tmp_path: Path) -> None:
    provider = FilesystemCheckpointProvider(tmp_path, keep_last_n=1000)
    manager = CheckpointManager("gens", provider)
    await _fill(manager, 0, 300)
    assert len(list(tmp_path.joinpath("gens").glob("log-*"))) >= 3  # several generations
    listed = await manager.list_checkpoints()  # while open: the owner's own log
    assert listed == [f"gens_ckpt_{n}" for n in range(1, 301)]
    manager.close()
    for checkpoint_id in listed[::7] + listed[-3:]:
        loaded = await provider.load_checkpoint(checkpoint_id)
        assert loaded is not None, checkpoint_id
        assert loaded["checkpoint_id"] == checkpoint_id
        assert loaded["namespace"]["v"] == int(checkpoint_id.rsplit("_", 1)[1]) - 1


async def test_cleanup_works_while_the_execution_is_open(tmp_path: Path) -> None:
    provider = FilesystemCheckpointProvider(tmp_path, keep_last_n=1000)
    manager = CheckpointManager("open", provider)
    await _fill(manager, 0, 300)
    before = await manager.list_checkpoints()
    removed = await manager.cleanup_old_checkpoints(keep_last_n=10)
    after = await manager.list_checkpoints()
    assert removed == len(before) - len(after) > 0 and 10 <= len(after)
    await _fill(manager, 300, 310)  # the owner goes on writing after the clean-up
    manager.close()
    listed = await provider.list_checkpoints("open")
    assert listed[-1] == "open_ckpt_310"
    assert (await provider.load_checkpoint(listed[0]))["checkpoint_id"] == listed[0]
    latest = await CheckpointManager("open", provider).get_latest_checkpoint()
    assert latest["namespace"]["v"] == 309


async def test_a_saved_checkpoint_survives_compaction(tmp_path: Path) -> None:
    provider = FilesystemCheckpointProvider(tmp_path, keep_last_n=5)
    manager = CheckpointManager("kept", provider)
    await _fill(manager, 0, 5)
    data = {"execution_state": {"x": 1}, "namespace": {"a": [1, 2]}, "metadata": {"m": "yes"}}
    await provider.save_checkpoint("kept_ckpt_9000", **data)  # through the open owner
    await provider.save_checkpoint("kept_ckpt_9001", **data)
    await provider.delete_checkpoint("kept_ckpt_9001")
    await _fill(manager, 5, 400)  # many snapshots; retention drops the early generations
    manager.close()
    assert not (tmp_path / "kept" / "log-000000").exists()
    listed = await provider.list_checkpoints("kept")
    assert "kept_ckpt_9000" in listed and "kept_ckpt_9001" not in listed
    loaded = await provider.load_checkpoint("kept_ckpt_9000")
    assert loaded["namespace"] == {"a": [1, 2]} and loaded["metadata"] == {"m": "yes"}
    assert await provider.load_checkpoint("kept_ckpt_9001") is None
    latest = await CheckpointManager("kept", provider).get_latest_checkpoint()
    assert latest["namespace"]["v"] == 399  # the runtime's own state is untouched


HOLDER = """
import sys
from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider
manager = CheckpointManager("held", FilesystemCheckpointProvider(sys.argv[1]))
manager.open()
print("open", flush=True)
sys.stdin.read()
"""


async def test_saver_writes_go_through_the_owners_lock(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    provider = FilesystemCheckpointProvider(tmp_path)
    data = {"execution_state": {}, "namespace": {"a": 1}, "metadata": {}}
    try:
        assert child.stdout.readline() == b"open\n"
        with pytest.raises(ExecutionLocked, match=f"in use by process {child.pid}"):
            await provider.save_checkpoint("held_ckpt_1", **data)
        with pytest.raises(ExecutionLocked):
            await provider.cleanup_old_checkpoints("held", 1)
    finally:
        child.kill()
        child.wait()
    await provider.save_checkpoint("held_ckpt_1", **data)  # the owner is gone
    assert await provider.list_checkpoints("held") == ["held_ckpt_1"]


async def test_open_refuses_damage_unless_rollback_is_accepted(tmp_path: Path) -> None:
    provider = FilesystemCheckpointProvider(tmp_path)
    manager = CheckpointManager("dmg", provider)
    manager.record_frame("main", parent=None, playbook="Main", kind="markdown", args={})
    manager.record_turn("main", 0, llm=True)
    await manager.save_checkpoint("$a = 1", {"a": 1}, llm_response="$a = 1\n")
    say = {"id": "main/0.1.0", "agent": "A", "to": "user", "text": "hi there"}
    manager.record_await("main", (0, 1, 0), None, None, {"say": say})
    await manager.save_checkpoint('await Say("user", "hi there")', {"a": 1})
    manager.close()
    segment = tmp_path / "dmg" / "log-000000"
    data = bytearray(segment.read_bytes())
    framed = read_records(bytes(data))
    offset = next(
        o for o, p in zip(framed.offsets, framed.payloads, strict=True) if b'"k":"ckpt"' in p
    )
    data[offset + 20] ^= 0x08  # the first checkpoint: the message's record lies past it
    segment.write_bytes(bytes(data))

    with pytest.raises(DamagedLog) as refused:
        CheckpointManager("dmg", provider).open()
    error = refused.value
    assert (error.file, error.offset) == (segment, offset)
    message = str(error)
    assert f"{segment} is damaged at offset {offset}" in message
    assert "message main/0.1.0 'hi there'" in message and "--accept-rollback" in message
    assert segment.read_bytes() == bytes(data)  # a refusal changes nothing

    manager = CheckpointManager("dmg", provider)
    state = manager.open(accept_rollback=True)
    assert state.counter == 0 and state.transcript == []  # back at the last good record
    await manager.save_checkpoint("$b = 2", {"a": 1, "b": 2})
    manager.close()
    latest = await CheckpointManager("dmg", provider).get_latest_checkpoint()
    assert latest["namespace"] == {"a": 1, "b": 2}
