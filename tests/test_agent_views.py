"""What the durable state tells of the agents: `get_latest_checkpoint()` fills
`execution_state.agents` and `meetings`, `executions show` lists each agent
with its frames, inbox and status, from a real run killed mid-meeting."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from killing import ROOT, child_env

from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider

EXAMPLES = ROOT / "examples"


def run(workdir: Path, *args: str, crash_at: str = "") -> subprocess.CompletedProcess:
    env = child_env({"PLAYBOOKS_CRASH_AT": crash_at} if crash_at else None)
    return subprocess.run(
        [sys.executable, "-m", "playbooks.cli", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def test_agents_and_meetings_of_a_killed_run(tmp_path: Path) -> None:
    replay = EXAMPLES / "meeting.replay.jsonl"
    (tmp_path / "playbooks.toml").write_text(
        f'[model]\nname = "replay:{replay}"\n'
        '[durability]\nenabled = true\nfsync = false\npath = "ckpt"\n'
    )
    program = str(EXAMPLES / "meeting.pb")
    killed = run(tmp_path, "run", program, "--json", crash_at="effect:12")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    provider = FilesystemCheckpointProvider(tmp_path / "ckpt")
    (execution,) = provider.list_executions()
    view = asyncio.run(CheckpointManager(execution, provider).get_latest_checkpoint())
    agents = view["execution_state"]["agents"]
    assert set(agents) == {"user", "Host", "Participant", "Participant 1002"}
    assert agents["Host"]["id"] == 1000 and agents["Participant 1002"]["id"] == 1002
    assert [f["playbook"] for f in agents["Host"]["frames"]] == ["Main", "Meeting"]
    assert agents["Participant"]["status"] == "waiting for messages"
    assert agents["Host"]["variables"]["$meeting_id"] == "meeting 100"
    meeting = view["execution_state"]["meetings"]["meeting 100"]
    assert meeting["open"] and meeting["shared"] == {"food": "pizza"}
    assert meeting["attendees"] == ["agent 1002"]
    shown = json.loads(run(tmp_path, "executions", "show", "--json", execution).stdout)
    assert [f["frame"] for f in shown["agents"]["Participant 1002"]["frames"]] == [
        "agent1002",
        "agent1002/0.0.1",
    ]
    text = run(tmp_path, "executions", "show", execution).stdout
    assert "agents:" in text
    assert "Participant 1002 agent 1002 running" in " ".join(text.split())
    done = run(tmp_path, "run", program, "--json")
    assert done.returncode == 0, done.stderr
    view = asyncio.run(CheckpointManager(execution, provider).get_latest_checkpoint())
    assert view["execution_state"]["meetings"]["meeting 100"]["open"] is False
    assert all(
        a.get("status", "done") == "done" for a in view["execution_state"]["agents"].values()
    )
