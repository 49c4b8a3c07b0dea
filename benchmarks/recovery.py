"""Benchmark 4: recovery time must not grow with the length of the history.

One execution is built per size and kind, killed by
``PLAYBOOKS_CRASH_AT=ckpt:N`` right after its N-th checkpoint:

- ``llm``: a Markdown playbook whose single LLM response is N
  ``await Step(...)`` statements followed by ``await Say("user", "resumed")``.
  That response is live state (it must be kept to resume), so it grows with N;
- ``python``: a Python playbook whose body is the same N statements. The body
  is part of the program, not of the state, so only the history grows.

We then time (a) a fresh ``playbooks run`` process from its start to the
``say`` line of the resumed statement, and (b) in-process, the part that reads
the checkpoints: ``CheckpointManager.open()`` and ``get_latest_checkpoint()``.
A resume continues the execution it finds, so every repetition runs on a
fresh copy of the interrupted one.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

from playbooks.durability.manager import CheckpointManager
from playbooks.durability.provider import FilesystemCheckpointProvider

from .common import PLAYBOOKS_BIN, Row, Sample, child_env, dir_size, reps, temp_dir

SIZES = (100, 1_000, 10_000)
KINDS = ("llm", "python")

PROGRAM = """# Stepper
Walks through many steps, then tells the user it resumed.

## Main
### Triggers
- At the beginning

### Steps
- Walk through the steps
- Tell the user "resumed"
- Return "done"
"""

CONFIG = """max_llm_calls = 5

[model]
name = "replay:{replay}"

[durability]
enabled = true
path = ".checkpoints"
keep_last_n = 10
fsync = true
"""


PYTHON_PROGRAM = """# Stepper
Walks through many steps in Python, then tells the user it resumed.

## Python playbooks

```python
@playbook(triggers=["At the beginning"])
async def Main():
{body}    await Say("user", "resumed")
    return "done"
```
"""


def write_program(folder: Path, n: int, kind: str = "llm") -> tuple[Path, Path]:
    """The program and its one recorded response; returns (program, replay file)."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "stepper.pb"
    if kind == "python":
        program.write_text(PYTHON_PROGRAM.format(body='    await Step("Main:01")\n' * n))
    else:
        program.write_text(PROGRAM)
    code = 'await Step("Main:01")\n' * n + 'await Say("user", "resumed")\nawait Return("done")\n'
    replay = folder / "stepper.replay.jsonl"
    entry = {"call": 0, "playbook": "Main", "response": f"```python\n{code}```"}
    replay.write_text(json.dumps(entry) + "\n")
    (folder / "playbooks.toml").write_text(CONFIG.format(replay=replay))
    return program, replay


def build(folder: Path, n: int, kind: str = "llm") -> tuple[Path, str]:
    """An execution interrupted right after checkpoint ``n``: (program, execution id)."""
    program, _ = write_program(folder, n, kind)
    done = subprocess.run(
        [str(PLAYBOOKS_BIN), "run", str(program), "--json"],
        cwd=folder,
        # fsync off only to build quickly: what recovery reads is the same
        env=child_env(PLAYBOOKS_CRASH_AT=f"ckpt:{n}", PLAYBOOKS_DURABILITY__FSYNC="false"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != -9:
        raise RuntimeError(f"building {n} checkpoints: exit {done.returncode}\n{done.stderr}")
    start = json.loads(done.stdout.splitlines()[0])
    return program, start["execution_id"]


def fresh_copy(folder: Path, rep: str) -> Path:
    """A copy of the interrupted execution, with the program's config beside it."""
    target = folder / f"rep-{rep}"
    shutil.copytree(folder / ".checkpoints", target / ".checkpoints")
    shutil.copy(folder / "playbooks.toml", target / "playbooks.toml")
    return target


def first_resumed_say(cwd: Path, program: Path) -> tuple[float, dict, dict]:
    """Run ``playbooks run PROGRAM --json`` in ``cwd``: (seconds from process start to
    the first ``say`` line after the ``resume`` line, the resume event, that say event)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(PLAYBOOKS_BIN), "run", str(program), "--json"],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )
    elapsed, resume, say = None, None, None
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "resume":
            resume = event
        elif event["event"] == "say" and resume is not None and say is None:
            elapsed, say = time.perf_counter() - start, event
    if proc.wait(timeout=120) != 0 or elapsed is None:
        raise RuntimeError(f"the resumed run failed (exit {proc.returncode}) or never resumed")
    assert resume is not None and say is not None
    return elapsed, resume, say


def _last(n: int) -> tuple[int, int]:
    """The checkpoints a kill right after checkpoint ``n`` leaves as the latest: a
    statement that changed no variable has its checkpoint kept back to ride on the
    next await record, so the kill finds ``n - 1``, with statement ``n``'s await
    journaled (it replays; nothing runs twice)."""
    return (n - 1, n)


def time_to_resumed_output(cwd: Path, program: Path, n: int) -> float:
    elapsed, resume, say = first_resumed_say(cwd, program)
    if resume["checkpoint"] not in _last(n) or say["text"] != "resumed":
        raise AssertionError(f"resumed at {resume}, first output {say}")
    return elapsed


def time_in_process(folder: Path, execution_id: str, n: int) -> tuple[float, float]:
    """(open seconds, get_latest_checkpoint seconds) on a fresh copy."""
    provider = FilesystemCheckpointProvider(folder / ".checkpoints")
    manager = CheckpointManager(execution_id, provider)
    start = time.perf_counter()
    manager.open()
    opened = time.perf_counter()
    latest = asyncio.run(manager.get_latest_checkpoint())
    done = time.perf_counter()
    manager.close()
    if latest is None or latest["metadata"]["counter"] not in _last(n):
        raise AssertionError(f"latest checkpoint is not number {n} (or {n - 1})")
    return opened - start, done - opened


def run(quick: bool) -> list[Row]:
    count = reps(quick)
    rows: list[Row] = []
    with temp_dir() as tmp:
        for kind in KINDS:
            rows += _kind(tmp / kind, kind, count)
    return rows


def _kind(tmp: Path, kind: str, count: int) -> list[Row]:
    process: dict[int, Sample] = {}
    inproc: dict[int, Sample] = {}
    rows: list[Row] = []
    for n in SIZES:
        folder = tmp / f"n{n}"
        program, execution_id = build(folder, n, kind)
        size = dir_size(folder / ".checkpoints")
        wall, opens, latest = [], [], []
        time_to_resumed_output(fresh_copy(folder, "warmup"), program, n)
        for rep in range(count):
            wall.append(time_to_resumed_output(fresh_copy(folder, f"a{rep}"), program, n))
            o, g = time_in_process(fresh_copy(folder, f"b{rep}"), execution_id, n)
            opens.append(o)
            latest.append(g)
        process[n] = Sample(wall)
        inproc[n] = Sample([o + g for o, g in zip(opens, latest, strict=True)])
        rows.append(
            process[n]
            .scaled(1e3)
            .row(
                f"recovery ({kind}): {n:,} checkpoints, process start → resumed output",
                "ms",
                note=f"execution directory {size / 1024:.0f} KiB",
            )
        )
        rows.append(
            inproc[n]
            .scaled(1e3)
            .row(
                f"recovery ({kind}): {n:,} checkpoints, open() + get_latest_checkpoint()",
                "ms",
                note=f"open {Sample(opens).median * 1e3:.2f} ms, "
                f"get_latest_checkpoint {Sample(latest).median * 1e3:.2f} ms",
            )
        )
    small, large = SIZES[0], SIZES[-1]
    for label, data in (("process", process), ("in-process", inproc)):
        growth = data[large].median / data[small].median
        rows.append(
            Row(
                f"recovery ({kind}, {label}): time at {large:,} / time at {small:,}",
                growth,
                "×",
                target="≤ 1.5×",
                met=growth <= 1.5,
            )
        )
    return rows
