"""`playbooks.toml` -> validated pydantic models.

Precedence, lowest first: built-in defaults, the file, `PLAYBOOKS_*`
environment variables, explicit overrides (CLI flags). Every problem becomes a
one-line `ConfigError` that names where the bad value came from (the file, the
variable or the command line), the dotted key, what was expected and what was
given, so that a user can fix it without reading a traceback.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "Config",
    "ConfigError",
    "DEFAULT_CONFIG_FILE",
    "DurabilityConfig",
    "ModelConfig",
    "SafetyConfig",
    "load_config",
]

DEFAULT_CONFIG_FILE = "playbooks.toml"
ENV_PREFIX = "PLAYBOOKS_"
# PLAYBOOKS_* variables that belong to other parts of the runtime, not to the
# configuration: they are never read as config keys (and never an error).
IGNORED_ENV = frozenset({"PLAYBOOKS_PICKLE_KEY", "PLAYBOOKS_CRASH_AT"})
_CLI = "command line"


class ConfigError(Exception):
    """A configuration problem, always one line, ready to show to the user."""


class _Strict(BaseModel):
    # A misspelt key silently falling back to a default is the worst failure
    # mode of a config file, so unknown keys are errors everywhere.
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    name: str = "openai/gpt-4o-mini"
    temperature: float = Field(0.2, ge=0)
    api_base: str | None = None
    api_key: str | None = Field(None, repr=False)
    record: str | None = None
    timeout: float = Field(120.0, gt=0)  # seconds per LLM request
    retries: int = Field(3, ge=0)  # on 429, 5xx, timeouts and dropped connections


class DurabilityConfig(_Strict):
    enabled: bool = False
    provider: Literal["filesystem", "postgres"] = "filesystem"
    path: str = ".checkpoints"  # filesystem
    dsn: str | None = Field(None, repr=False)  # postgres; may hold a password
    lease_seconds: float = Field(15.0, gt=0)  # postgres: an owner silent this long loses it
    keep_last_n: int = Field(10, ge=1)
    fsync: bool = True
    allow_pickle: bool = False


DEFAULT_ALLOWED_IMPORTS = (
    "math",
    "json",
    "re",
    "datetime",
    "random",
    "statistics",
    "itertools",
    "functools",
    "collections",
    "string",
    "textwrap",
    "decimal",
    "fractions",
    "uuid",
    "time",
)


class SafetyConfig(_Strict):
    allowed_imports: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_IMPORTS))
    statement_timeout: float = Field(300.0, gt=0)
    loop_budget: int = Field(10_000_000, gt=0)
    max_alloc: int = Field(100_000_000, gt=0)


class Config(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    durability: DurabilityConfig = Field(default_factory=DurabilityConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    max_llm_calls: int = Field(50, gt=0)
    # Absolute path of the file the values came from; set by load_config only.
    source: str | None = None


_SECTIONS: dict[str, type[BaseModel]] = {
    "model": ModelConfig,
    "durability": DurabilityConfig,
    "safety": SafetyConfig,
}
_TOP_SCALARS = ("max_llm_calls",)
_SECRET_KEYS = frozenset({"model.api_key", "durability.dsn"})


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the configuration: defaults < file < environment < overrides.

    `path=None` reads `./playbooks.toml` when it exists (defaults otherwise);
    an explicit path must exist. `env` defaults to `os.environ`. `overrides`
    maps dotted keys (`"model.name"`, `"max_llm_calls"`) to values; a `None`
    value means "flag not given" and is skipped.
    """
    file_path: Path | None
    if path is None:
        file_path = Path(DEFAULT_CONFIG_FILE) if Path(DEFAULT_CONFIG_FILE).is_file() else None
        label = DEFAULT_CONFIG_FILE
    else:
        file_path = Path(path)
        label = os.fspath(path)

    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if file_path is not None:
        data = _read_toml(file_path, label)
        for key, value in data.items():
            origins[key] = label
            if isinstance(value, dict):
                for sub in value:
                    origins[f"{key}.{sub}"] = label

    for var, key, value in _env_values(os.environ if env is None else env):
        _put(data, key, value)
        origins[key] = var
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, name = _split_key(key, _CLI)
        dotted = f"{section}.{name}" if section else name
        if isinstance(value, str):
            value = _coerce_text(value, _field(section, name), _CLI)
        _put(data, dotted, value)
        origins[dotted] = _CLI

    if "source" in data:  # not a user key: it is filled in below
        raise ConfigError(f"{origins['source']}: {_unknown('source', Config)}")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_error(exc, origins, label)) from None
    if file_path is not None:
        config.source = os.path.abspath(file_path)
    return config


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read the file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{label}: not valid UTF-8 text (bad byte at line {line})") from None
    text = text.removeprefix("\ufeff")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\s*\(at line (\d+), column \d+\)\s*$", message)
        if match is None:
            raise ConfigError(f"{label}: invalid TOML: {_one_line(message)}") from None
        reason = _one_line(message[: match.start()])
        raise ConfigError(f"{label}: invalid TOML at line {match.group(1)}: {reason}") from None


def _env_values(env: Mapping[str, str]) -> list[tuple[str, str, Any]]:
    """(variable, dotted key, parsed value) for every config variable in `env`."""
    found = []
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in IGNORED_ENV:
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        if "__" in rest:
            section, name = rest.split("__", 1)
            if section not in _SECTIONS:
                expected = ", ".join(_SECTIONS)
                raise ConfigError(
                    f"{var}: unknown section '{section}' (expected one of: {expected})"
                )
            if name not in _SECTIONS[section].model_fields:
                raise ConfigError(f"{var}: {_unknown(f'{section}.{name}', _SECTIONS[section])}")
        elif rest in _TOP_SCALARS:
            section, name = "", rest
        else:
            continue  # some other PLAYBOOKS_ setting, not ours
        dotted = f"{section}.{name}" if section else name
        found.append((var, dotted, _coerce_text(env[var], _field(section, name), var)))
    return found


def _split_key(key: str, where: str) -> tuple[str, str]:
    """Validate a dotted override key; returns (section, name), section '' for top level."""
    if key in _TOP_SCALARS:
        return "", key
    section, _, name = key.partition(".")
    if section not in _SECTIONS or name not in _SECTIONS[section].model_fields:
        model = _SECTIONS.get(section, Config)
        raise ConfigError(f"{where}: {_unknown(key, model)}")
    return section, name


def _field(section: str, name: str) -> FieldInfo:
    model = _SECTIONS[section] if section else Config
    return model.model_fields[name]


def _coerce_text(raw: str, field: FieldInfo, where: str) -> Any:
    """Turn text from a variable or a flag into the field's type where the text is unambiguous.

    What cannot be parsed is passed through unchanged, so that validation
    reports it with the expected type.
    """
    kind, optional = _base_type(field.annotation)
    text = raw.strip()
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        return raw
    if get_origin(kind) is list:
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: invalid JSON list: {exc.msg}") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    if optional and text == "":
        return None
    return raw if kind is str else text


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without `| None`, whether None was allowed)."""
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    section, _, name = dotted.partition(".")
    if not name:
        data[section] = value
        return
    if not isinstance(data.get(section), dict):
        data[section] = {}
    data[section] = {**copy.copy(data[section]), name: value}


def _unknown(dotted: str, model: type[BaseModel]) -> str:
    leaf = dotted.rsplit(".", 1)[-1]
    keys = [k for k in model.model_fields if k != "source"]
    hint = difflib.get_close_matches(leaf, keys, n=1)
    maybe = f"did you mean '{hint[0]}'? " if hint else ""
    return f"unknown key '{dotted}' ({maybe}expected one of: {', '.join(keys)})"


def _describe_error(exc: ValidationError, origins: Mapping[str, str], label: str) -> str:
    """Pydantic's first error as one line: `WHERE: KEY: expected X, got Y`."""
    errors = exc.errors(include_url=False)
    # A misspelt key usually explains the other errors too, so it goes first.
    errors.sort(key=lambda err: err["type"] != "extra_forbidden")
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    key_loc = loc[:2] if loc and loc[0] in _SECTIONS else loc[:1]
    dotted = ".".join(key_loc)
    where = origins.get(dotted) or origins.get(loc[0] if loc else "", label)
    if first["type"] == "extra_forbidden":
        parent = _SECTIONS.get(loc[0], Config) if len(loc) > 1 else Config
        return f"{where}: {_unknown('.'.join(loc), parent)}{more}"
    section, name = (key_loc[0], key_loc[1]) if len(key_loc) == 2 else ("", key_loc[0])
    try:
        expected = _expected(_field(section, name))
    except KeyError:  # pragma: no cover - every other error is about a known field
        expected = first["msg"]
    given = "<hidden>" if dotted in _SECRET_KEYS else _show(first.get("input"))
    return f"{where}: {dotted}: expected {expected}, got {given}{more}"


def _expected(field: FieldInfo) -> str:
    kind, _ = _base_type(field.annotation)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return "a table"
    if get_origin(kind) is Literal:
        return "one of: " + ", ".join(repr(v) for v in get_args(kind))
    if get_origin(kind) is list:
        return "a list of strings"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    text = words.get(kind, str(kind))
    for rule in field.metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(rule, annotated_types.BaseMetadata) and hasattr(rule, attr):
                text += f" {op} {getattr(rule, attr)}"
    return text


def _show(value: Any) -> str:
    text = repr(value)
    return _one_line(text if len(text) <= 60 else text[:57] + "...")


def _one_line(text: str) -> str:
    return " ".join(text.split())
