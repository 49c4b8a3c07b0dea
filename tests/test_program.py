"""`playbooks run` / `check` / `executions` end to end: offline examples, the
scripted LLM server over real HTTP, bad input, and refusals to resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from killing import KITCHEN, child_env
from llm_server import ScriptedLLMServer, ScriptResponder

from playbooks.cli import main
from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("PLAYBOOKS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(
    path: Path, *, api_base: str | None = None, durable: bool = True, max_llm_calls: int = 6
) -> Path:
    model = f'name = "openai/test-model"\napi_base = "{api_base}"\n' if api_base else ""
    path.write_text(
        f"max_llm_calls = {max_llm_calls}\n[model]\n{model}"
        f'[durability]\nenabled = {"true" if durable else "false"}\npath = "{path.parent / "ckpt"}"\n'
        "fsync = false\n"
    )
    return path


def events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def says(out: str) -> list[str]:
    return [e["text"] for e in events(out) if e["event"] == "say"]


# -- check -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["hello", "calls", "ask", "loop", "numbers_sum"])
def test_check_gives_the_structure_of_every_example(name: str, capsys) -> None:
    assert main(["check", str(EXAMPLES / f"{name}.pb"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    playbooks = {p["name"]: p for a in data["agents"] for p in a["playbooks"]}
    assert "Main" in playbooks
    assert main(["check", str(EXAMPLES / f"{name}.pb")]) == 0
    assert "Main" in capsys.readouterr().out


def test_check_reports_a_malformed_file_with_file_and_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pb"
    bad.write_text("# A\n\n## P\n\n```python\n@playbook\nasync def f(:\n    pass\n```\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}:7:") and "\n" not in err


# -- offline examples --------------------------------------------------------
EXPECTED = {
    "hello": [
        "Hello! Welcome to Playbooks.",
        "Fun fact: an octopus has three hearts and blue blood.",
    ],
    "loop": ["3...", "2...", "1...", "Liftoff!"],
    "ask": ["Hi! What is your name?", "Nice to meet you, Ada!"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_examples_run_offline_from_their_recordings(name: str, tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "playbooks.toml")
    code = main(
        [
            "run",
            str(EXAMPLES / f"{name}.pb"),
            "--config",
            str(config),
            "--json",
            "--model",
            f"replay:{EXAMPLES / name}.replay.jsonl",
            "--message",
            "Ada",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert says(out) == EXPECTED[name]
    assert events(out)[-1]["status"] == "finished"


def test_markdown_and_python_call_each_other(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "playbooks.toml")
    code = main(
        [
            "run",
            str(EXAMPLES / "calls.pb"),
            "--config",
            str(config),
            "--json",
            "--model",
            f"replay:{EXAMPLES / 'calls'}.replay.jsonl",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert says(out)[-1] == "The total is 12: 12 is an even number"
    assert events(out)[-1]["result"] == 12


def test_python_only_program_sums_a_generated_file(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "playbooks.toml")
    assert main(["run", str(EXAMPLES / "numbers_sum.pb"), "--config", str(config), "--json"]) == 0
    out = events(capsys.readouterr().out)
    import random

    rng = random.Random(7)
    assert out[-1]["result"] == sum(rng.randint(1, 1000) for _ in range(1000))


def test_durability_off_writes_no_files(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "playbooks.toml", durable=False)
    assert (
        main(
            [
                "run",
                str(EXAMPLES / "hello.pb"),
                "--config",
                str(config),
                "--model",
                f"replay:{EXAMPLES / 'hello'}.replay.jsonl",
            ]
        )
        == 0
    )
    assert "Greeter: Hello! Welcome to Playbooks." in capsys.readouterr().out
    assert not (tmp_path / "ckpt").exists()


# -- the scripted server, over real HTTP through litellm ----------------------
def run_bot(
    tmp_path: Path,
    script: dict,
    *extra: str,
    body: str = "",
    max_llm_calls: int = 6,
    chunk_size: int = 3,
    **safety: str,
):
    """Run a one-playbook program against the scripted server: (exit code, requests)."""
    with ScriptedLLMServer(ScriptResponder(script), chunk_size=chunk_size) as server:
        config = write_config(
            tmp_path / "playbooks.toml", api_base=server.url, max_llm_calls=max_llm_calls
        )
        if safety:
            config.write_text(
                config.read_text()
                + "[safety]\n"
                + "".join(f"{k} = {v}\n" for k, v in safety.items())
            )
        program = tmp_path / "bot.pb"
        program.write_text(
            "# Bot\nA test bot.\n\n## Main\n### Triggers\n- At the beginning\n"
            "### Steps\n- Work\n- Return\n" + body
        )
        code = main(["run", str(program), "--config", str(config), "--json", *extra])
        return code, len(server.requests)


def bad_then_fixed(bad: str, said: str) -> dict:
    """A script whose first turn is ``bad`` code and whose second says ``said`` and returns."""
    fixed = f'```python\nawait Say("user", "{said}")\nawait Return(1)\n```\n'
    return {"Main": [f"```python\n{bad}```\n", fixed]}


def test_every_say_is_shown_in_full(tmp_path: Path, capsys) -> None:
    long = "A long message, streamed three characters at a time: " + "lorem ipsum " * 40
    script = {
        "Main": [
            f'```python\nawait Say("user", "first")\nawait Say("user", {long!r})\n'
            "await Return(1)\n```\n"
        ]
    }
    code, requests = run_bot(tmp_path, script)
    assert code == 0 and requests == 1
    assert says(capsys.readouterr().out) == ["first", long]


@pytest.mark.parametrize(
    "broken, expected",
    [
        ('await Say("user", "a")\nx = = 1\n', "SyntaxError"),
        ('await Say("user", "a")\n$x = {}["missing"]\n', "KeyError"),
    ],
)
def test_a_broken_response_is_reported_and_the_model_tries_again(
    tmp_path: Path, capsys, broken, expected
) -> None:
    code, requests = run_bot(tmp_path, bad_then_fixed(broken, "fixed"))
    captured = capsys.readouterr()
    assert code == 0 and requests == 2
    errors = [e for e in events(captured.out) if e["event"] == "code_error"]
    assert (
        len(errors) == 1 and expected in errors[0]["message"] and "line 3" in errors[0]["message"]
    )  # the fence is line 1
    assert says(captured.out) == ["a", "fixed"]
    assert "Traceback" not in captured.err


def test_a_response_that_never_returns_ends_with_a_clear_message(tmp_path: Path, capsys) -> None:
    turn = '```python\nawait Say("user", "still thinking")\n```\n'
    code, requests = run_bot(tmp_path, {"Main": [turn] * 5}, max_llm_calls=3)
    captured = capsys.readouterr()
    assert code == 1 and requests == 3
    assert "did not finish within max_llm_calls = 3" in captured.err
    assert "Traceback" not in captured.err


def test_running_out_of_replies_ends_with_a_clear_message(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    turn = '```python\n$a = await Yld("user")\n$b = await Yld("user")\nawait Return($a + $b)\n```\n'
    code, _ = run_bot(tmp_path, {"Main": [turn]}, "--message", "only one")
    captured = capsys.readouterr()
    assert code == 1
    assert "no --message values are left and stdin is closed" in captured.err


def test_unreachable_model_fails_with_one_line(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "playbooks.toml", api_base="http://127.0.0.1:9/v1")
    code = main(["run", str(EXAMPLES / "hello.pb"), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "connection refused" in err.lower()


# -- bad input ---------------------------------------------------------------
def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, capsys) -> None:
    config = tmp_path / "playbooks.toml"
    config.write_text("[durability]\nenable = true\n")
    assert main(["run", str(EXAMPLES / "hello.pb"), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "playbooks.toml" in err and "durability.enable" in err and "\n" not in err


def test_missing_and_non_utf8_programs_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["run", str(tmp_path / "nope.pb")]) == 2
    assert "no such file" in capsys.readouterr().err
    binary = tmp_path / "bin.pb"
    binary.write_bytes(b"# A\xff\xfe\n")
    assert main(["run", str(binary)]) == 2
    assert "UTF-8" in capsys.readouterr().err


def test_invalid_execution_id_is_refused(tmp_path: Path, capsys) -> None:
    write_config(tmp_path / "playbooks.toml")
    assert main(["resume", "../../etc"]) == 2
    assert "invalid execution id" in capsys.readouterr().err


# -- refusals to resume --------------------------------------------------------
def test_second_process_on_the_same_execution_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path / "playbooks.toml")
    manager = CheckpointManager("held", FilesystemCheckpointProvider(tmp_path / "ckpt"))
    manager.open()  # this process owns it now
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "playbooks.cli",
                "run",
                str(EXAMPLES / "hello.pb"),
                "--config",
                str(config),
                "--execution-id",
                "held",
                "--model",
                f"replay:{EXAMPLES / 'hello'}.replay.jsonl",
            ],
            cwd=tmp_path,
            env=child_env(),
            capture_output=True,
            text=True,
        )
    finally:
        manager.close()
    assert done.returncode == 3
    assert "held" in done.stderr and "in use" in done.stderr


def test_an_edited_program_is_refused_unless_forced(tmp_path: Path) -> None:
    program = tmp_path / "kitchen.pb"
    shutil.copy(KITCHEN, program)
    config = write_config(tmp_path / "playbooks.toml", api_base="http://127.0.0.1:9/v1")
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(program), "--config", str(config)]
    env = child_env({"PLAYBOOKS_CRASH_AT": "turn:1:after"})
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == -9
    program.write_text(program.read_text() + "\n<!-- edited -->\n")
    second = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True)
    assert second.returncode == 3
    assert "changed since execution" in second.stderr and "--force" in second.stderr
    third = subprocess.run(
        cmd + ["--force"], cwd=tmp_path, env=child_env(), capture_output=True, text=True
    )
    assert third.returncode == 1 and "resuming" in third.stderr  # resumed; the model is unreachable


def test_executions_list_show_rm(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "playbooks.toml")
    main(
        [
            "run",
            str(EXAMPLES / "loop.pb"),
            "--config",
            str(config),
            "--json",
            "--model",
            f"replay:{EXAMPLES / 'loop'}.replay.jsonl",
        ]
    )
    execution_id = events(capsys.readouterr().out)[0]["execution_id"]
    assert main(["executions", "--config", str(config), "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["execution_id"] for r in rows] == [execution_id] and rows[0]["status"] == "finished"
    assert main(["executions", "--config", str(config), "show", execution_id, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [m["text"] for m in info["transcript"]] == EXPECTED["loop"]
    assert main(["executions", "--config", str(config), "rm", execution_id]) == 0
    capsys.readouterr()
    assert main(["executions", "--config", str(config), "show", execution_id]) == 2


# -- generated code that breaks the rules goes back to the model ----------------
@pytest.mark.parametrize(
    "bad, expected",
    [
        ("import os\n", "import of 'os' is not allowed"),
        ("$x = ().__class__.__bases__\n", "__class__"),
        ("$f = open('/etc/passwd')\n", "open"),
        ("while True:\n    pass\n", "loop budget"),
        ("$big = 'a' * 10**10\n", "allocation"),
    ],
)
def test_rule_breaking_code_is_reported_and_the_run_survives(
    tmp_path: Path, capsys, bad, expected
) -> None:
    code, requests = run_bot(tmp_path, bad_then_fixed(bad, "ok"), loop_budget="100000")
    out = capsys.readouterr().out
    assert code == 0 and requests == 2
    errors = [e["message"] for e in events(out) if e["event"] == "code_error"]
    assert len(errors) == 1 and expected in errors[0]
    assert says(out) == ["ok"]


def test_a_slow_await_times_out_and_the_model_is_told(tmp_path: Path, capsys) -> None:
    body = (
        "\n## Python helpers\n\n```python\nimport asyncio\n\n\nasync def slow():\n"
        "    await asyncio.sleep(30)\n```\n"
    )
    script = {"Main": ["```python\nawait slow()\n```\n", "```python\nawait Return(1)\n```\n"]}
    code, _ = run_bot(tmp_path, script, body=body, statement_timeout="0.2")
    errors = [e["message"] for e in events(capsys.readouterr().out) if e["event"] == "code_error"]
    assert code == 0 and len(errors) == 1 and "TimeoutError" in errors[0]


def test_invalid_toml_exits_2_with_the_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "playbooks.toml"
    config.write_text("[model]\nname = \n")
    assert main(["run", str(EXAMPLES / "hello.pb"), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "playbooks.toml" in err and "line 2" in err and "\n" not in err


def test_unreadable_checkpoints_exit_3(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "playbooks.toml")
    argv = [
        "run",
        str(EXAMPLES / "ask.pb"),
        "--config",
        str(config),
        "--model",
        f"replay:{EXAMPLES / 'ask'}.replay.jsonl",
    ]
    import io

    sys_stdin = sys.stdin
    sys.stdin = io.StringIO("")
    try:
        assert main(argv) == 1  # waits for a reply that never comes: stays resumable
    finally:
        sys.stdin = sys_stdin
    for path in (tmp_path / "ckpt").rglob("*"):
        if path.is_file() and path.name not in ("lock", "meta.json"):
            path.write_bytes(b"\x00garbage" * 10)
    capsys.readouterr()
    assert main(argv + ["--message", "Ada"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "readable" in err and "Traceback" not in err


def test_resume_by_id_and_fresh(tmp_path: Path) -> None:
    config = write_config(tmp_path / "playbooks.toml")
    base = [sys.executable, "-m", "playbooks.cli"]
    replay = ["--model", f"replay:{EXAMPLES / 'loop'}.replay.jsonl"]
    killed = subprocess.run(
        base + ["run", str(EXAMPLES / "loop.pb"), "--config", str(config), "--json", *replay],
        cwd=tmp_path,
        env=child_env({"PLAYBOOKS_CRASH_AT": "await:3"}),
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9
    execution_id = events(killed.stdout)[0]["execution_id"]
    resumed = subprocess.run(
        base + ["resume", execution_id, "--config", str(config), "--json", *replay],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {execution_id}" in resumed.stderr
    assert says(killed.stdout) + says(resumed.stdout) == EXPECTED["loop"]
    fresh = subprocess.run(
        base
        + ["run", str(EXAMPLES / "loop.pb"), "--config", str(config), "--json", "--fresh", *replay],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
    )
    assert says(fresh.stdout) == EXPECTED["loop"]
    assert events(fresh.stdout)[0]["execution_id"] != execution_id


def test_variables_set_after_the_last_await_of_a_turn_survive_a_kill(tmp_path: Path) -> None:
    script = {
        "Main": [
            '```python\nawait Step("Main:01")\n$x = 41\n$x += 1\n```\n',
            '```python\nawait Say("user", f"x is {$x}")\nawait Return($x)\n```\n',
        ]
    }
    program = tmp_path / "p.pb"
    program.write_text(
        "# Bot\nA test bot.\n\n## Main\n### Triggers\n- At the beginning\n"
        "### Steps\n- Work\n- Return\n"
    )
    with ScriptedLLMServer(ScriptResponder(script)) as server:
        config = write_config(tmp_path / "playbooks.toml", api_base=server.url)
        cmd = [
            sys.executable,
            "-m",
            "playbooks.cli",
            "run",
            str(program),
            "--config",
            str(config),
            "--json",
        ]
        killed = subprocess.run(
            cmd,
            cwd=tmp_path,
            env=child_env({"PLAYBOOKS_CRASH_AT": "turn:2:after"}),
            capture_output=True,
            text=True,
        )
        assert killed.returncode == -9
        done = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert says(done.stdout) == ["x is 42"]


def test_a_kill_after_the_end_is_recorded_does_not_block_the_next_run(tmp_path: Path) -> None:
    config = write_config(tmp_path / "playbooks.toml")
    cmd = [
        sys.executable,
        "-m",
        "playbooks.cli",
        "run",
        str(EXAMPLES / "hello.pb"),
        "--config",
        str(config),
        "--json",
        "--model",
        f"replay:{EXAMPLES / 'hello'}.replay.jsonl",
    ]
    killed = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=child_env({"PLAYBOOKS_CRASH_AT": "status:1:after"}),
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9
    assert events(killed.stdout)[-1]["status"] == "finished"  # the end was shown before the kill
    again = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert events(again.stdout)[0]["event"] == "start"  # a new execution, not a refusal
    assert events(again.stdout)[0]["execution_id"] != events(killed.stdout)[0]["execution_id"]


def test_executions_gc_reports_what_it_did(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "playbooks.toml")
    main(
        [
            "run",
            str(EXAMPLES / "hello.pb"),
            "--config",
            str(config),
            "--model",
            f"replay:{EXAMPLES / 'hello'}.replay.jsonl",
        ]
    )
    capsys.readouterr()
    assert main(["executions", "--config", str(config), "gc"]) == 0
    counts = dict(item.split("=") for item in capsys.readouterr().out.split())
    assert counts["executions"] == "1" and counts["skipped_damaged"] == "0"
