"""`[durability] provider = "postgres"`: the configuration, the factory, and the
command line working against a real server (run, resume refusal, executions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from playbooks.config import ConfigError, load_config
from playbooks.durability import FilesystemCheckpointProvider, open_provider

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello.pb"
HELLO_REPLAY = f"replay:{ROOT / 'examples' / 'hello'}.replay.jsonl"
ASK = ROOT / "examples" / "ask.pb"
ASK_REPLAY = f"replay:{ROOT / 'examples' / 'ask'}.replay.jsonl"


def test_the_dsn_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    from playbooks.durability import PostgresCheckpointProvider

    toml = tmp_path / "playbooks.toml"
    toml.write_text(
        '[durability]\nenabled = true\nprovider = "postgres"\ndsn = "postgresql://a/b"\n'
    )
    config = load_config(toml, env={})
    assert config.durability.dsn == "postgresql://a/b"
    env = {"PLAYBOOKS_DURABILITY__DSN": "postgresql://u:pw@h/db"}
    config = load_config(toml, env=env)
    provider = open_provider(config.durability)  # no connection is made yet
    assert isinstance(provider, PostgresCheckpointProvider)
    assert provider.dsn == "postgresql://u:pw@h/db" and "pw" not in repr(provider)
    assert "pw" not in repr(config.durability)
    assert isinstance(open_provider(load_config(env={}).durability), FilesystemCheckpointProvider)


def test_postgres_without_a_dsn_is_a_clear_error(tmp_path: Path) -> None:
    toml = tmp_path / "playbooks.toml"
    toml.write_text('[durability]\nenabled = true\nprovider = "postgres"\n')
    with pytest.raises(ConfigError) as error:
        open_provider(load_config(toml, env={}).durability)
    assert "PLAYBOOKS_DURABILITY__DSN" in str(error.value)


def _cli(workdir: Path, dsn: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYBOOKS_")}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONPATH=str(ROOT),
        PLAYBOOKS_DURABILITY__ENABLED="true",
        PLAYBOOKS_DURABILITY__PROVIDER="postgres",
        PLAYBOOKS_DURABILITY__DSN=dsn,
    )
    return subprocess.run(
        [sys.executable, "-m", "playbooks.cli", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_show_list_and_rm_against_postgres(tmp_path: Path, postgres_dsn: str) -> None:
    done = _cli(tmp_path, postgres_dsn, "run", str(HELLO), "--model", HELLO_REPLAY, "--json")
    assert done.returncode == 0, done.stderr
    execution_id = json.loads(done.stdout.splitlines()[0])["execution_id"]
    assert not (tmp_path / ".checkpoints").exists()
    listed = _cli(tmp_path, postgres_dsn, "executions", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["execution_id"], r["status"]) for r in rows] == [(execution_id, "finished")]
    shown = json.loads(
        _cli(tmp_path, postgres_dsn, "executions", "show", "--json", execution_id).stdout
    )
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert shown["status"] == "finished" and shown["disk_bytes"] > 0
    says = [e["text"] for e in events if e["event"] == "say"]
    assert says and [e["text"] for e in shown["transcript"]] == says
    again = _cli(tmp_path, postgres_dsn, "run", str(HELLO), "--model", HELLO_REPLAY)
    assert again.returncode == 0  # a finished execution is not resumed: a new one starts
    assert _cli(tmp_path, postgres_dsn, "executions", "gc").returncode == 0
    removed = _cli(tmp_path, postgres_dsn, "executions", "rm", execution_id)
    assert removed.returncode == 0, removed.stderr
    rows = json.loads(_cli(tmp_path, postgres_dsn, "executions", "list", "--json").stdout)
    assert execution_id not in [r["execution_id"] for r in rows] and len(rows) == 1


def test_a_waiting_run_resumes_with_the_next_message(tmp_path: Path, postgres_dsn: str) -> None:
    first = _cli(tmp_path, postgres_dsn, "run", str(ASK), "--model", ASK_REPLAY)
    assert first.returncode != 0 and "resume it with" in first.stderr
    rows = json.loads(_cli(tmp_path, postgres_dsn, "executions", "list", "--json").stdout)
    assert [r["status"] for r in rows] == ["waiting"]
    second = _cli(
        tmp_path, postgres_dsn, "run", str(ASK), "--model", ASK_REPLAY, "--message", "Ada"
    )
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr
