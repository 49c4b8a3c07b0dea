"""playbooks.toml loading: defaults, file, environment, overrides and one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from playbooks.config import (
    Config,
    ConfigError,
    DurabilityConfig,
    ModelConfig,
    SafetyConfig,
    load_config,
)

FULL = """
max_llm_calls = 7

[model]
name = "replay:examples/hello.jsonl"
temperature = 0.0
api_base = "http://127.0.0.1:8000/v1"
api_key = "sk-local"
record = "out.jsonl"

[durability]
enabled = true
provider = "filesystem"
path = "/tmp/ckpt"
keep_last_n = 3
fsync = false
allow_pickle = true

[safety]
allowed_imports = ["math", "json"]
statement_timeout = 5.5
loop_budget = 1000
max_alloc = 4096
"""


def write(tmp_path: Path, text: str, name: str = "playbooks.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args, **kwargs) -> str:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as caught:
        load_config(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config == Config()
    assert config.model.name == "openai/gpt-4o-mini" and config.model.temperature == 0.2
    assert config.durability == DurabilityConfig(enabled=False, keep_last_n=10, fsync=True)
    assert config.durability.path == ".checkpoints" and not config.durability.allow_pickle
    assert "os" not in config.safety.allowed_imports and "math" in config.safety.allowed_imports
    assert config.safety.loop_budget == 10_000_000 and config.safety.statement_timeout == 300.0
    assert config.max_llm_calls == 50 and config.source is None


def test_reads_playbooks_toml_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[durability]\nenabled = true\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.durability.enabled is True
    assert config.source == str(tmp_path / "playbooks.toml")


def test_full_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL, "custom.toml"), env={})
    assert config.model == ModelConfig(
        name="replay:examples/hello.jsonl",
        temperature=0.0,
        api_base="http://127.0.0.1:8000/v1",
        api_key="sk-local",
        record="out.jsonl",
    )
    assert config.durability == DurabilityConfig(
        enabled=True, path="/tmp/ckpt", keep_last_n=3, fsync=False, allow_pickle=True
    )
    assert config.safety == SafetyConfig(
        allowed_imports=["math", "json"], statement_timeout=5.5, loop_budget=1000, max_alloc=4096
    )
    assert config.max_llm_calls == 7
    assert config.source == str(tmp_path / "custom.toml")
    assert "sk-local" not in repr(config)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    env = {
        "PLAYBOOKS_DURABILITY__ENABLED": "false",
        "PLAYBOOKS_DURABILITY__FSYNC": "yes",
        "PLAYBOOKS_DURABILITY__KEEP_LAST_N": "12",
        "PLAYBOOKS_MODEL__NAME": "replay:x.jsonl",
        "PLAYBOOKS_MODEL__TEMPERATURE": "0.7",
        "PLAYBOOKS_MODEL__API_BASE": "",
        "PLAYBOOKS_SAFETY__ALLOWED_IMPORTS": "math, re,json",
        "PLAYBOOKS_MAX_LLM_CALLS": "3",
        "PLAYBOOKS_PICKLE_KEY": "secret",
        "PLAYBOOKS_CRASH_AT": "5",
        "PLAYBOOKS_HOME": "/somewhere",
        "PATH": "/usr/bin",
    }
    config = load_config(path, env=env)
    assert config.durability.enabled is False and config.durability.fsync is True
    assert config.durability.keep_last_n == 12 and config.durability.path == "/tmp/ckpt"
    assert config.model.name == "replay:x.jsonl" and config.model.temperature == 0.7
    assert config.model.api_base is None and config.model.record == "out.jsonl"
    assert config.safety.allowed_imports == ["math", "re", "json"]
    assert config.max_llm_calls == 3
    json_list = load_config(path, env={"PLAYBOOKS_SAFETY__ALLOWED_IMPORTS": '["uuid"]'})
    assert json_list.safety.allowed_imports == ["uuid"]


@pytest.mark.parametrize(("text", "value"), [("1", True), ("TRUE", True), ("no", False)])
def test_boolean_words(text: str, value: bool) -> None:
    config = load_config(None, env={"PLAYBOOKS_DURABILITY__ENABLED": text})
    assert config.durability.enabled is value


def test_precedence_overrides_then_env_then_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    env = {"PLAYBOOKS_MODEL__NAME": "from-env", "PLAYBOOKS_DURABILITY__KEEP_LAST_N": "4"}
    overrides = {"model.name": "from-cli", "durability.enabled": False, "max_llm_calls": 9}
    config = load_config(path, env=env, overrides=overrides)
    assert config.model.name == "from-cli"  # override beats env
    assert config.durability.keep_last_n == 4  # env beats file
    assert config.durability.enabled is False and config.max_llm_calls == 9
    assert config.durability.path == "/tmp/ckpt"  # file beats defaults
    unset = load_config(path, env=env, overrides={"model.name": None})
    assert unset.model.name == "from-env"  # None means "flag not given"
    text = load_config(path, env={}, overrides={"safety.allowed_imports": "math,json"})
    assert text.safety.allowed_imports == ["math", "json"]


def test_os_environ_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(os.environ, "PLAYBOOKS_MODEL__NAME", "replay:env.jsonl")
    assert load_config(None).model.name == "replay:env.jsonl"


def test_unknown_key_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[durability]\nenable = true\n")
    message = error_of(path)
    assert message.startswith(f"{path}: unknown key 'durability.enable'")
    assert "did you mean 'enabled'?" in message
    assert (
        "expected one of: enabled, provider, path, dsn, lease_seconds, keep_last_n, fsync, allow_pickle"
        in message
    )


def test_unknown_section_and_top_level_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "[modle]\nname = 'x'\n"))
    assert "unknown key 'modle'" in message and "did you mean 'model'?" in message
    assert "source" not in message  # not a user key
    assert "unknown key 'source'" in error_of(write(tmp_path, "source = 'x'\n"))


def test_wrong_type_names_key_expected_and_given(tmp_path: Path) -> None:
    path = write(tmp_path, '[durability]\nkeep_last_n = "ten"\n')
    assert error_of(path) == f"{path}: durability.keep_last_n: expected an integer >= 1, got 'ten'"
    path = write(tmp_path, "[durability]\nkeep_last_n = 0\n")
    assert error_of(path).endswith("durability.keep_last_n: expected an integer >= 1, got 0")
    path = write(tmp_path, '[durability]\nprovider = "s3"\n')
    assert "durability.provider: expected one of: 'filesystem', 'postgres', got 's3'" in error_of(
        path
    )
    path = write(tmp_path, 'model = "gpt"\n')
    assert "model: expected a table, got 'gpt'" in error_of(path)
    path = write(tmp_path, "[safety]\nallowed_imports = 'math'\n")
    assert "safety.allowed_imports: expected a list of strings" in error_of(path)
    path = write(tmp_path, "[model]\napi_key = 12345\n")
    message = error_of(path)
    assert "model.api_key: expected a string, got <hidden>" in message
    assert "12345" not in message


def test_unknown_key_is_reported_before_other_errors(tmp_path: Path) -> None:
    path = write(tmp_path, '[durability]\nkeep_last_n = "ten"\nenable = true\n')
    message = error_of(path)
    assert "unknown key 'durability.enable'" in message and "(and 1 more problem(s))" in message


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[model]\nname = 'x'\ntemperature = \n")
    message = error_of(path)
    assert message.startswith(f"{path}: invalid TOML at line 3: ")
    assert "(at line" not in message


def test_missing_explicit_file() -> None:
    assert error_of("missing.toml") == "missing.toml: no such file"


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"{tmp_path}: is a directory, not a file"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(b"[model]\nname = 'caf\xe9'\n")
    assert error_of(path) == f"{path}: not valid UTF-8 text (bad byte at line 2)"


def test_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbfmax_llm_calls = 2\n")
    assert load_config(path, env={}).max_llm_calls == 2


def test_unknown_env_variable_is_named() -> None:
    message = error_of(env={"PLAYBOOKS_DURABILITY__ENABLE": "1"})
    assert message.startswith("PLAYBOOKS_DURABILITY__ENABLE: unknown key 'durability.enable'")
    message = error_of(env={"PLAYBOOKS_X__Y": "1"})
    assert message.startswith("PLAYBOOKS_X__Y: unknown section 'x' (expected one of: model,")


def test_bad_env_value_names_the_variable() -> None:
    message = error_of(env={"PLAYBOOKS_DURABILITY__KEEP_LAST_N": "ten"})
    assert message == (
        "PLAYBOOKS_DURABILITY__KEEP_LAST_N: durability.keep_last_n: "
        "expected an integer >= 1, got 'ten'"
    )
    message = error_of(env={"PLAYBOOKS_DURABILITY__ENABLED": "maybe"})
    assert "durability.enabled: expected true or false, got 'maybe'" in message
    message = error_of(env={"PLAYBOOKS_SAFETY__ALLOWED_IMPORTS": "[math"})
    assert message.startswith("PLAYBOOKS_SAFETY__ALLOWED_IMPORTS: invalid JSON list")


def test_bad_override_names_the_command_line() -> None:
    message = error_of(overrides={"durability.enable": True})
    assert message.startswith("command line: unknown key 'durability.enable'")
    message = error_of(overrides={"max_llm_calls": 0})
    assert message == "command line: max_llm_calls: expected an integer > 0, got 0"
