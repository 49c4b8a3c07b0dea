"""The seed scenario through the executor API with a real kill: x = 10, Say,
SIGKILL, resume from get_latest_checkpoint(), then y == 20 and the first Say
is not delivered again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from killing import child_env
from seed_child import CODE

from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor


@pytest.mark.parametrize("crash_at", ["await:1:after", "ckpt:2:after", "text:3:after"])
async def test_seed_scenario_survives_a_kill(tmp_path: Path, crash_at: str) -> None:
    child = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("seed_child.py")), str(tmp_path)],
        env=child_env({"PLAYBOOKS_CRASH_AT": crash_at}),
        capture_output=True,
        text=True,
    )
    assert child.returncode == -9, child.stderr
    assert child.stdout.splitlines() == ["x is 10"]

    manager = CheckpointManager("seed", FilesystemCheckpointProvider(tmp_path))
    checkpoint = await manager.get_latest_checkpoint()
    received = checkpoint["metadata"]["llm_response"]
    assert CODE.startswith(received)
    said: list[str] = []

    async def Say(target: str, text: str) -> None:
        said.append(text)

    executor = await StreamingPythonExecutor.resume_from_checkpoint(
        None, checkpoint, namespace={"Say": Say}, checkpoint_manager=manager
    )
    await executor.add_chunk(CODE[len(received) :])  # the rest of the stream
    await executor.finalize()
    manager.close()
    assert executor.namespace["y"] == 20
    assert said == ["y is 20"]  # "x is 10" was delivered before the kill, not again
