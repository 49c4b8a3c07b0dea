"""The command line's state and lifecycle: replies by count, resumes that
remember their settings, one status vocabulary, exit codes, cleanup, and the
program identity a resume checks (issue 9; issue 8 item 11)."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from killing import child_env
from llm_server import ScriptedLLMServer, ScriptResponder

from playbooks import program as program_module
from playbooks.cli import main
from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider
from playbooks.language import load_program

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ASK = EXAMPLES / "ask.pb"
ASK_REPLAY = f"replay:{EXAMPLES / 'ask'}.replay.jsonl"
HELLO = EXAMPLES / "hello.pb"
HELLO_REPLAY = f"replay:{EXAMPLES / 'hello'}.replay.jsonl"
UNREACHABLE = "http://127.0.0.1:9/v1"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("PLAYBOOKS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no person at a terminal
    return tmp_path


def write_config(path: Path, *, ckpt: Path | None = None, extra: str = "") -> Path:
    """Durable, with a model that cannot be reached: only a replay (or a recorded
    setting) can make a run that needs the model succeed."""
    path.write_text(
        f'{extra}[model]\nname = "openai/test-model"\napi_base = "{UNREACHABLE}"\n'
        f'[durability]\nenabled = true\npath = "{ckpt or path.parent / "ckpt"}"\nfsync = false\n'
    )
    return path


def events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def says(out: str) -> list[str]:
    return [e["text"] for e in events(out) if e["event"] == "say"]


class Cli:
    """`playbooks ...` in this process, with its output."""

    def __init__(self, capsys: pytest.CaptureFixture, config: Path) -> None:
        self.capsys, self.config = capsys, config
        self.out = self.err = ""

    def __call__(self, *argv: str, config: bool = True) -> int:
        args = list(argv)
        if config:
            at = 1 if args[0] == "executions" else len(args)
            args[at:at] = ["--config", str(self.config)]
        code = main(args)
        captured = self.capsys.readouterr()
        self.out, self.err = captured.out, captured.err
        return code

    def start_id(self) -> str:
        return next(e["execution_id"] for e in events(self.out) if e["event"] == "start")

    def rows(self) -> dict[str, dict]:
        assert self("executions", "list", "--json") == 0
        return {r["execution_id"]: r for r in json.loads(self.out)}

    def shown(self, execution_id: str) -> dict:
        assert self("executions", "show", execution_id, "--json") == 0, self.err
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, tmp_path: Path) -> Cli:
    return Cli(capsys, write_config(tmp_path / "playbooks.toml"))


def two_questions(tmp_path: Path) -> tuple[Path, str]:
    """A program that asks twice, with its recording."""
    program = tmp_path / "ask2.pb"
    program.write_text(ASK.read_text().replace("# Host", "# Asker"))
    turns = [
        'await Say("user", "First?")\n$a = await Yld("user")\n',
        'await Say("user", "Second?")\n$b = await Yld("user")\n',
        'await Say("user", f"{$a} and {$b}")\nawait Return($b)\n',
    ]
    replay = tmp_path / "ask2.replay.jsonl"
    replay.write_text(
        "".join(
            json.dumps({"call": n, "playbook": "Main", "response": f"```python\n{t}```"}) + "\n"
            for n, t in enumerate(turns)
        )
    )
    return program, f"replay:{replay}"


# -- 2. replies by count -------------------------------------------------------------
def test_after_a_stop_the_next_message_is_the_next_reply(cli: Cli, tmp_path: Path) -> None:
    program, replay = two_questions(tmp_path)
    run = ("run", str(program), "--json", "--model", replay)
    assert cli(*run, "--message", "Ada") == 1  # stops at the second question
    assert "no --message values are left" in cli.err
    assert cli(*run, "--message", "Paris") == 0, cli.err
    assert says(cli.out)[-1] == "Ada and Paris"
    assert "not used" not in cli.err


def test_messages_never_used_are_reported(cli: Cli, tmp_path: Path) -> None:
    program, replay = two_questions(tmp_path)
    assert cli("run", str(program), "--model", replay, *"--message a --message b".split()) == 0
    assert "not used" not in cli.err
    code = cli(
        "run", str(program), "--model", replay, *"--message a --message b --message c".split()
    )
    assert code == 0
    [line] = [line for line in cli.err.splitlines() if "not used" in line]
    assert "1 --message value(s) not used: 'c'" in line


# -- 4. a resume remembers its settings ------------------------------------------------
def test_resume_by_id_uses_the_model_the_execution_started_with(cli: Cli) -> None:
    assert cli("run", str(ASK), "--json", "--model", ASK_REPLAY) == 1  # waits for the name
    execution_id = cli.start_id()
    assert cli.rows()[execution_id]["status"] == "waiting"
    # no --model: the config's model is unreachable, the recorded replay is not
    assert cli("resume", execution_id, "--json", "--message", "Ada") == 0, cli.err
    assert says(cli.out) == ["Nice to meet you, Ada!"]
    assert f"resuming {execution_id} (waiting)" in cli.err and "overridden" not in cli.err
    settings = cli.shown(execution_id)["settings"]
    assert settings["model"] == ASK_REPLAY and settings["api_base"] == UNREACHABLE


def test_a_flag_overrides_the_recorded_model_and_the_banner_says_so(cli: Cli) -> None:
    assert cli("run", str(ASK), "--json", "--model", ASK_REPLAY) == 1
    execution_id = cli.start_id()
    code = cli("resume", execution_id, "--model", "openai/other", "--message", "Ada")
    assert code == 1  # the overriding model is unreachable
    [banner] = [line for line in cli.err.splitlines() if line.startswith("resuming")]
    assert f"overridden: model openai/other (started with {ASK_REPLAY})" in banner


def test_run_again_uses_the_config_file_the_execution_started_with(
    cli: Cli, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    first = write_config(tmp_path / "first.toml", ckpt=ckpt, extra="max_llm_calls = 5\n")
    write_config(tmp_path / "playbooks.toml", ckpt=ckpt, extra="max_llm_calls = 1\n")
    run = ("run", str(ASK), "--json", "--model", ASK_REPLAY)
    assert cli(*run, "--config", str(first), config=False) == 1  # one LLM call, then waits
    # ./playbooks.toml allows one LLM call only; the recorded first.toml allows five
    assert cli(*run, "--message", "Ada", config=False) == 0, cli.err
    assert says(cli.out) == ["Nice to meet you, Ada!"]


def test_resume_uses_the_recorded_api_base_and_another_config_overrides_it(
    cli: Cli, tmp_path: Path
) -> None:
    script = {
        "Main": [
            '```python\n$name = await Yld("user")\n```\n',
            '```python\nawait Say("user", f"Hello {$name}")\nawait Return($name)\n```\n',
        ]
    }
    with ScriptedLLMServer(ScriptResponder(script)) as server:
        config = tmp_path / "playbooks.toml"
        config.write_text(config.read_text().replace(UNREACHABLE, server.url))
        assert cli("run", str(ASK), "--json") == 1  # waits for the name
        execution_id = cli.start_id()
        config.write_text(config.read_text().replace(server.url, UNREACHABLE))
        other = write_config(tmp_path / "other.toml")  # unreachable too
        assert cli("resume", execution_id, "--config", str(other), config=False) == 1
        [banner] = [line for line in cli.err.splitlines() if line.startswith("resuming")]
        assert f"overridden: config {other} (started with {config})" in banner
        # the file now names an unreachable server; the execution recorded the live one
        assert cli("resume", execution_id, "--json", "--message", "Ada") == 0, cli.err
        assert says(cli.out) == ["Hello Ada"] and len(server.requests) == 2


# -- 5. show and list agree ---------------------------------------------------------
def test_a_missing_log_is_damaged_in_list_and_show_and_is_not_redone(
    cli: Cli, tmp_path: Path
) -> None:
    run = ("run", str(ASK), "--json", "--model", ASK_REPLAY)
    assert cli(*run) == 1
    execution_id = cli.start_id()
    for path in (tmp_path / "ckpt" / execution_id).iterdir():
        if path.name.startswith(("log-", "snap-")):
            path.unlink()
    row = cli.rows()[execution_id]
    info = cli.shown(execution_id)
    assert row["status"] == info["status"] == "damaged"
    assert row["program"] == info["program"] == str(ASK)
    assert cli(*run, "--message", "Ada") == 3  # never silently started over
    assert execution_id in cli.err and "Hi! What is your name?" not in says(cli.out)


# -- 6. another program's execution ---------------------------------------------------
def test_another_programs_execution_is_refused_even_with_force(cli: Cli) -> None:
    assert cli("run", str(ASK), "--json", "--model", ASK_REPLAY) == 1
    execution_id = cli.start_id()
    code = cli("run", str(HELLO), "--execution-id", execution_id, "--force", "--json")
    assert code == 2
    assert f"belongs to {ASK}" in cli.err and "changed" not in cli.err
    assert says(cli.out) == []


# -- 7. advice that can be followed -----------------------------------------------------
def advised_command(err: str) -> list[str]:
    """The `playbooks ...` command an error message advises, as argv."""
    commands = [part for part in err.split("`")[1::2] if part.startswith("playbooks ")]
    assert commands, err
    return shlex.split(commands[-1])[1:]


def test_advice_about_a_finished_execution_can_be_followed(cli: Cli) -> None:
    assert cli("run", str(HELLO), "--json", "--model", HELLO_REPLAY) == 0
    execution_id = cli.start_id()
    assert cli("resume", execution_id) == 2
    assert "has already finished" in cli.err and "use --fresh" not in cli.err
    advice = advised_command(cli.err)
    assert cli(*advice, "--json", "--model", HELLO_REPLAY) == 0, cli.err
    assert cli.start_id() != execution_id

    assert cli("run", str(HELLO), "--execution-id", execution_id, "--fresh") == 2
    assert "already exists" in cli.err
    assert cli(*advised_command(cli.err), "--json", "--model", HELLO_REPLAY) == 0, cli.err
    assert cli("run", str(HELLO), "--execution-id", "brand-new", "--fresh", "--json",
               "--model", HELLO_REPLAY) == 0  # fmt: skip
    assert cli.start_id() == "brand-new"


# -- 10. one status vocabulary ------------------------------------------------------------
def failing_program(tmp_path: Path) -> Path:
    program = tmp_path / "boom.pb"
    program.write_text(
        "# Boom\nRaises.\n\n## Python playbooks\n\n```python\n"
        '@playbook(triggers=["At the beginning"])\nasync def Main() -> int:\n'
        '    await Say("user", "about to fail")\n    raise ValueError("boom")\n```\n'
    )
    return program


def test_every_status_is_told_the_same_way_everywhere(cli: Cli, tmp_path: Path) -> None:
    ids: dict[str, str] = {}
    assert cli("run", str(HELLO), "--json", "--model", HELLO_REPLAY) == 0
    ids["finished"] = cli.start_id()
    assert cli("run", str(ASK), "--json", "--model", ASK_REPLAY) == 1
    ids["waiting"] = cli.start_id()
    assert cli("run", str(failing_program(tmp_path)), "--json") == 1
    ids["failed"] = cli.start_id()
    killed = subprocess.run(
        [sys.executable, "-m", "playbooks.cli", "run", str(EXAMPLES / "loop.pb"), "--json"]
        + ["--config", str(cli.config), "--model", f"replay:{EXAMPLES / 'loop'}.replay.jsonl"],
        env=child_env({"PLAYBOOKS_CRASH_AT": "await:3"}),
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9
    ids["interrupted"] = events(killed.stdout)[0]["execution_id"]
    # a live run: it waits for a reply on a pipe that is still open
    live = subprocess.Popen(
        [sys.executable, "-m", "playbooks.cli", "run", str(ASK), "--json", "--fresh"]
        + ["--config", str(cli.config), "--model", ASK_REPLAY],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None
        seen = []
        for line in live.stdout:
            seen.append(json.loads(line))
            if seen[-1]["event"] == "wait":
                break
        ids["running"] = seen[0]["execution_id"]
        rows = cli.rows()
        for status, execution_id in ids.items():
            assert rows[execution_id]["status"] == status, (status, rows[execution_id])
            assert cli.shown(execution_id)["status"] == status
        assert cli("executions", "list") == 0
        for status, execution_id in ids.items():
            line = next(line for line in cli.out.splitlines() if line.startswith(execution_id))
            assert line.split()[1] == status
        assert rows[ids["running"]]["owner_pid"] == live.pid
        assert "ValueError: boom" in rows[ids["failed"]]["message"]
    finally:
        live.stdin.close()  # type: ignore[union-attr]
        live.wait()
    assert cli.rows()[ids["running"]]["status"] == "waiting"  # stdin closed: it stopped
    assert cli("resume", ids["interrupted"], "--json") == 0, cli.err
    assert f"resuming {ids['interrupted']} (interrupted)" in cli.err
    assert events(cli.out)[0]["status"] == "interrupted"


def test_show_json_gives_the_whole_conversation_and_the_result(cli: Cli) -> None:
    assert cli("run", str(ASK), "--json", "--model", ASK_REPLAY, "--message", "Ada") == 0
    execution_id = cli.start_id()
    ids = {e["id"]: e for e in events(cli.out) if e["event"] in ("say", "reply")}
    info = cli.shown(execution_id)
    assert info["status"] == "finished" and info["result"] == "Ada"
    assert [(m["event"], m["text"]) for m in info["transcript"]] == [
        ("say", "Hi! What is your name?"),
        ("reply", "Ada"),
        ("say", "Nice to meet you, Ada!"),
    ]
    assert [m["id"] for m in info["transcript"]] == list(ids)
    assert cli("executions", "show", execution_id) == 0
    assert 'returned   "Ada"' in cli.out and "user -> Host: Ada" in cli.out


# -- 11. exit codes ----------------------------------------------------------------------
def test_exit_codes_follow_the_readme(cli: Cli, tmp_path: Path) -> None:
    assert cli("run", str(HELLO), "--execution-id", "../x") == 2
    assert "invalid execution id" in cli.err
    assert cli("resume", "../../etc") == 2
    assert cli("run", str(HELLO), "--model", f"replay:{tmp_path / 'missing.jsonl'}") == 2
    assert "missing.jsonl" in cli.err and "Traceback" not in cli.err
    assert not (tmp_path / "ckpt").exists()  # nothing was started
    assert cli("executions", "rm", "nope") == 2
    assert cli("run", str(HELLO), "--execution-id", "held", "--model", HELLO_REPLAY) == 0
    manager = CheckpointManager("held", FilesystemCheckpointProvider(tmp_path / "ckpt"))
    manager.open()
    try:
        assert cli("executions", "rm", "held") == 3
        assert "in use" in cli.err
    finally:
        manager.close()
    assert cli("executions", "rm", "held") == 0


@pytest.mark.parametrize(
    "verb",
    [
        ("run", str(HELLO), "--model", HELLO_REPLAY),
        ("resume", "abc"),
        ("executions", "list"),
        ("executions", "show", "abc"),
        ("executions", "rm", "abc"),
        ("executions", "gc", "--finished"),
    ],
)
def test_no_verb_prints_a_traceback_when_storage_cannot_be_used(
    cli: Cli, tmp_path: Path, verb: tuple[str, ...]
) -> None:
    (tmp_path / "ckpt").write_text("a file where the checkpoint folder should be")
    assert cli(*verb) == 3
    assert cli.err.startswith("error: cannot use ") and cli.err.count("\n") == 1
    assert "Traceback" not in cli.err


# -- 13. cleanup ---------------------------------------------------------------------------
def test_rm_takes_several_ids_and_gc_deletes_ended_and_old_executions(
    cli: Cli, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    finished = []
    for _ in range(4):
        assert cli("run", str(HELLO), "--json", "--model", HELLO_REPLAY) == 0
        finished.append(cli.start_id())
    assert cli("run", str(ASK), "--json", "--model", ASK_REPLAY) == 1
    waiting = cli.start_id()

    assert cli("executions", "rm", finished[0], finished[1]) == 0
    assert f"removed {finished[0]}" in cli.out and f"removed {finished[1]}" in cli.out
    assert not (ckpt / finished[0]).exists() and not (ckpt / finished[1]).exists()

    before = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    assert cli("executions", "gc", "--finished") == 0
    counts = dict(item.split("=") for item in cli.out.splitlines()[-1].split())
    assert counts["executions_removed"] == "2"
    after = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    assert int(counts["bytes_freed"]) == before - after > 0
    assert sorted(p.name for p in ckpt.iterdir()) == [waiting]

    assert cli("executions", "gc", "--older-than", "1d") == 0  # written just now: kept
    assert (ckpt / waiting).exists()
    old = time.time() - 2 * 86400
    for path in (ckpt / waiting).rglob("*"):
        os.utime(path, (old, old))
    assert cli("executions", "gc", "--older-than", "1d") == 0
    assert f"removed {waiting}  waiting" in cli.out and not (ckpt / waiting).exists()
    with pytest.raises(SystemExit) as bad:
        cli("executions", "gc", "--older-than", "soon")
    assert bad.value.code == 2


# -- program identity (issue 8, item 11) ---------------------------------------------------
def test_identity_covers_the_program_bytes_and_the_storage_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = tmp_path / "ask.pb"
    program.write_text(ASK.read_text())
    identity = program_module.program_identity(load_program(str(program)))
    assert identity == program_module.program_identity(load_program(str(program)))
    program.write_text(ASK.read_text() + "\n")
    assert program_module.program_identity(load_program(str(program))) != identity
    monkeypatch.setattr(program_module, "FORMAT_VERSION", program_module.FORMAT_VERSION + 1)
    assert program_module.program_identity(load_program(str(ASK))) != identity


def test_a_resume_under_another_storage_format_is_refused(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = ("run", str(ASK), "--json", "--model", ASK_REPLAY)
    assert cli(*run) == 1
    monkeypatch.setattr(program_module, "FORMAT_VERSION", program_module.FORMAT_VERSION + 1)
    assert cli(*run, "--message", "Ada") == 3
    assert "changed since execution" in cli.err and "--force" in cli.err
