"""CLI level: a generated ``.pb`` program run by ``python -m playbooks.cli run
PROG --json`` with durability on, its model responses replayed from a file
(``--model replay:FILE``), killed with ``PLAYBOOKS_CRASH_AT=effect:N`` (the
runtime SIGKILLs itself just before its N-th effect) and run again until it ends.

What the world saw: the say events on stdout (a message re-shown with the same
id and text counts once), the lines the program's effect functions wrote to
the trace file, and the end event (status, and Main's result: its variables).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .canon import Run, difference
from .differential import ProgramResult, Trial, check_divergent
from .shapes import Shape

ROOT = Path(__file__).resolve().parents[2]
MAX_LIVES = 4
MAX_EFFECTS = 80
REPLIES = 12
WORKERS = 2  # kill points run two at a time (each a chain of processes)
IMPORTS = [
    "math", "json", "re", "datetime", "random", "statistics", "itertools", "functools",
    "collections", "string", "textwrap", "decimal", "fractions", "uuid", "time", "asyncio",
]  # fmt: skip

PYTHON_BLOCK = """\
import asyncio
import json
import os


def _trace(name, args):
    line = json.dumps([name, list(args)], sort_keys=True, default=str) + "\\n"
    fd = os.open(os.environ["FUZZ_TRACE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def _effect(name, args):
    for _ in range(sum(map(ord, name + json.dumps(list(args), default=str))) % 3):
        await asyncio.sleep(0)
    _trace(name, args)


async def Emit(tag, *values):
    await _effect("Emit", (tag, *values))
    return f"ok:{tag}"


async def F(x, mark=""):
    await _effect(mark + "F", (x,))
    return x * 2 if isinstance(x, int) else f"f({x})"


async def Items():
    await _effect("Items", ())
    return [1, 2, 3]


async def Lookup(key):
    await _effect("Lookup", (key,))
    if str(key).startswith("missing"):
        raise KeyError(key)
    return f"val:{key}"


async def Check(n):
    await _effect("Check", (n,))
    if isinstance(n, int) and n % 3 == 2:
        raise ValueError("bad", n)
    return n


async def Fetch(side, i):
    await _effect("Fetch", (side, i))
    return f"fetched:{side}:{i}"


async def Store(side, i):
    await _effect("Store", (side, i))
    return f"stored:{side}:{i}"


def ReadMode():
    with open(os.environ["FUZZ_MODE"]) as handle:
        return handle.read().strip()


@playbook
async def Process(n: int) -> str:
    await Emit("process", n)
    inner = await Inner(n)
    await Say("user", f"processed {n}: {inner}")
    return inner
"""


def program_text(shape: Shape) -> str:
    return (
        "# Fuzz\nA program made by the crash fuzzer.\n\n"
        "## Main\n### Triggers\n- At the beginning\n\n### Steps\n- Do the work\n"
        "- Return the variables\n\n"
        "## Inner($n) -> str\n### Steps\n- Work on $n\n- Return the answer\n\n"
        f"## Python playbooks\n\n```python\n{PYTHON_BLOCK}```\n"
    )


def main_response(shape: Shape) -> str:
    result = ", ".join(f'"{v}": ${v}' for v in shape.returns)
    return shape.response().replace("\n```\n", f"\nawait Return({{{result}}})\n```\n")


def replay_lines(shape: Shape) -> list[dict[str, Any]]:
    calls = [("Main", main_response(shape))] + [
        ("Inner", f"```python\n{r}```\n") for r in shape.inner
    ]
    return [{"call": i, "playbook": p, "response": r} for i, (p, r) in enumerate(calls)]


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYBOOKS_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def setup(shape: Shape, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    program = workdir / "fuzz.pb"
    program.write_text(program_text(shape))
    replay = workdir / "fuzz.replay.jsonl"
    replay.write_text("".join(json.dumps(line) + "\n" for line in replay_lines(shape)))
    (workdir / "playbooks.toml").write_text(
        "max_llm_calls = 8\n"
        f'[durability]\nenabled = true\npath = "{workdir / "ckpt"}"\nfsync = false\n'
        f"[safety]\nallowed_imports = {json.dumps(IMPORTS)}\n"
    )
    (workdir / "mode").write_text("a")
    return program


def run(shape: Shape, workdir: Path, *, kill: int | None = None) -> tuple[Run, bool]:
    """Lives of the program until one ends; (the joined run, was the first life killed)."""
    program = setup(shape, workdir)
    trace, mode = workdir / "trace.jsonl", workdir / "mode"
    says: list[list[str]] = []
    seen: set[tuple[str, str]] = set()
    out = Run()
    killed = False
    taken = 0  # replies received so far: the next --message is the next reply
    for life in range(MAX_LIVES):
        if shape.divergent and life == 1:
            mode.write_text("b")
        extra = {"FUZZ_TRACE": str(trace), "FUZZ_MODE": str(mode)}
        if life == 0 and kill is not None:
            extra["PLAYBOOKS_CRASH_AT"] = f"effect:{kill}"
        args = [sys.executable, "-m", "playbooks.cli", "run", str(program), "--json"]
        args += ["--model", f"replay:{workdir / 'fuzz.replay.jsonl'}"]
        for n in range(taken, REPLIES):  # Yld's n-th reply is "reply n", as at the executor level
            args += ["--message", f"reply {n}"]
        done = subprocess.run(
            args, cwd=workdir, env=_env(extra), capture_output=True, text=True, timeout=120
        )
        events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        taken += sum(1 for e in events if e["event"] == "reply")
        for e in events:
            if e["event"] == "say" and (e["id"], e["text"]) not in seen:
                seen.add((e["id"], e["text"]))
                says.append(["say", e["id"], e["text"]])
            elif e["event"] == "code_error":
                out.notes.append(f"life {life + 1}: code_error {e['message']}")
            elif e["event"] == "resume":
                out.notes.append(f"life {life + 1}: resumed at {e['at']}")
        out.bounds.append(len(_lines(trace)))  # file effects only
        if done.returncode == -9:
            killed = killed or life == 0
            continue
        end = next((e for e in reversed(events) if e["event"] == "end"), None)
        errors = [e["message"] for e in events if e["event"] == "code_error"]
        if end is None:
            out.outcome = f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
        elif end["status"] == "finished":
            out.outcome = (
                "finished" if not errors else "finished after code errors: " + "; ".join(errors)
            )
            out.variables = end.get("result") if isinstance(end.get("result"), dict) else {}
        else:
            out.outcome = f"{end['status']}: {end.get('message', '')}"
            if errors:
                out.outcome = "; ".join(errors) + " | " + out.outcome
        break
    else:
        out.outcome = "never finished"
    out.trace, out.shown = _lines(trace), says
    out.outcome = out.outcome.replace(str(workdir), "<workdir>")
    return out, killed


def _lines(path: Path) -> list[Any]:
    try:
        return [json.loads(x) for x in path.read_text().splitlines() if x]
    except FileNotFoundError:
        return []


def run_cli(shape: Shape, seed: int, *, kills: list[int] | None = None) -> ProgramResult:
    """Every kill point of one program at the CLI level (or the ``kills`` given)."""
    shown = program_text(shape) + "\n" + "".join(json.dumps(x) + "\n" for x in replay_lines(shape))
    result = ProgramResult("cli", shape.name, seed, shown)
    root = Path(tempfile.mkdtemp(prefix=f"fuzz-cli-{shape.name}-"))
    try:
        reference, _ = run(shape, root / "ref")
        result.effects = len(reference.trace) + len(reference.shown)
        if reference.outcome != "finished":
            result.baseline = f"the uninterrupted run ended with {reference.outcome!r}"
        points = [] if result.baseline else list(kills or range(1, MAX_EFFECTS))
        with ThreadPoolExecutor(WORKERS) as pool:
            for start in range(0, len(points), WORKERS):
                batch = points[start : start + WORKERS]
                lives = list(pool.map(lambda k: (k, *run(shape, root / f"k{k}", kill=k)), batch))
                for k, trial, killed in lives:
                    if not killed:
                        break  # the program has fewer than k effects
                    if shape.divergent:
                        problem = check_divergent(trial)
                    else:
                        problem = difference(reference, trial)
                    result.trials.append(Trial(k, problem, trial.notes))
                if not all(killed for _, _, killed in lives):
                    break
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result
