"""The public durability API: provider, manager and recovery coordinator."""

from __future__ import annotations

from pathlib import Path

import pytest

from playbooks import (
    CheckpointManager,
    FilesystemCheckpointProvider,
    RecoveryCoordinator,
    StreamingPythonExecutor,
)


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
        await manager.save_checkpoint(f"$v = {i}", {"v": i, "pad": "x" * 200 + str(i)})
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
