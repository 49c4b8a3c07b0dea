"""Executor level: a generated response run through the public executor API in
real child processes, forked from this warm process, killed with SIGKILL just
before an effect, and resumed by a fresh child until it finishes.

One life (in the child): open ``CheckpointManager(id, FilesystemCheckpointProvider(dir))``;
with no checkpoint yet, feed the response to a new ``StreamingPythonExecutor``
in random chunks and ``finalize``; otherwise ``resume_from_checkpoint`` and feed
the text not yet received (DESIGN §4 "Executor API"). The child writes what it
ended with (error, variables) to a JSON file; the effects are in the trace.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import random
import re
import traceback
from pathlib import Path
from typing import Any

from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor

from .canon import Run
from .world import Effects, LenientWorld, encode

EXECUTION = "fuzz"
MAX_LIVES = 5
#: fsync every trace line (``--fsync``); a SIGKILL loses nothing written without it.
FSYNC = os.environ.get("FUZZ_FSYNC") == "1"


def pieces(text: str, rng: random.Random) -> list[str]:
    """``text`` cut into random chunks, as a stream delivers it."""
    out, i = [], 0
    while i < len(text):
        n = rng.choice([1, 2, 3, 5, 8, 13, 40, 200])
        out.append(text[i : i + n])
        i += n
    return out


def describe(error: BaseException) -> str:
    message = error.msg if isinstance(error, SyntaxError) else str(error)
    return f"{type(error).__name__}: {message}"


def plain_python(text: str) -> str:
    """The response as ordinary Python: no fence, ``$name`` -> ``name``."""
    code = re.sub(r"^\s*```\w*\s*$", "", text, flags=re.M)
    return re.sub(r"\$(?=[A-Za-z_])", "", code)


async def _life(job: dict[str, Any]) -> dict[str, Any]:
    mode = Path(job["mode"]) if job.get("mode") else None
    effects = Effects(Path(job["trace"]), mode, job.get("kill"), fsync=job.get("fsync", False))
    ns: dict[str, Any] = LenientWorld(effects) if job.get("lenient") else effects.namespace()
    provided = {k: id(v) for k, v in ns.items()}
    text: str = job["text"]
    rng = random.Random(job["chunks"])
    notes: list[str] = []
    outcome = "finished"
    try:
        if job.get("plain"):
            code = compile(
                plain_python(text), "<plain>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            result = eval(code, ns)  # noqa: S307 - the reference semantics
            if asyncio.iscoroutine(result):
                await result
        else:
            provider = FilesystemCheckpointProvider(job["store"], fsync=False)
            manager = CheckpointManager(EXECUTION, provider)
            data = await manager.get_latest_checkpoint()
            if data is None:
                ex = StreamingPythonExecutor(None, namespace=ns, checkpoint_manager=manager)
                rest = text
            else:
                received = data["metadata"].get("llm_response") or ""
                notes.append(f"resumed at statement {data['metadata']['cursor']['statement']}")
                if not text.startswith(received):
                    notes.append("stored response is not a prefix of the response")
                ex = await StreamingPythonExecutor.resume_from_checkpoint(
                    None, data, namespace=ns, checkpoint_manager=manager
                )
                rest = (
                    "" if data["metadata"].get("llm_response_complete") else text[len(received) :]
                )
            try:
                if not ex.finalized:
                    for part in pieces(rest, rng):
                        await ex.add_chunk(part)
                    await ex.finalize()
            finally:
                manager.close()
    except Exception as error:
        outcome = describe(error)
    variables = {
        k: encode(v)
        for k, v in dict(ns).items()
        if not k.startswith("__") and provided.get(k) != id(v)
    }
    return {"outcome": outcome, "variables": variables, "notes": notes}


def child(job: dict[str, Any]) -> None:
    """The body of one forked child: run a life, write its result."""
    logging.getLogger("playbooks").setLevel(logging.ERROR)  # warnings are in the result
    try:
        result = asyncio.run(_life(job))
    except BaseException:  # noqa: BLE001 - report, never hang the parent
        result = {"outcome": "child failed: " + traceback.format_exc()[-600:], "variables": {}}
    Path(job["result"]).write_text(json.dumps(result, sort_keys=True))


_warm = False


def warm_up() -> None:
    """Run a tiny program here once, so the modules the runtime imports lazily
    are loaded before the first fork: each child then starts in milliseconds."""
    global _warm
    if _warm:
        return
    _warm = True
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        text = "```python\n$x = [1,\n 2]\nawait Emit('x', $x)\n```\n"
        job = {"text": text, "store": f"{tmp}/s", "trace": f"{tmp}/t", "chunks": "w"}
        asyncio.run(_life(job))
        job["plain"] = True
        asyncio.run(_life(job))
        asyncio.run(_life({**job, "plain": False}))  # a resume


def fork(job: dict[str, Any]) -> int:
    """Run ``child(job)`` in a forked process; its exit code (-9 when SIGKILLed)."""
    warm_up()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            child(job)
        except BaseException:  # noqa: BLE001
            code = 70
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run(
    text: str,
    workdir: Path,
    *,
    kill: int | list[int] | None = None,
    plain: bool = False,
    divergent: bool = False,
    lenient: bool = False,
    seed: int = 0,
) -> Run:
    """One run of ``text``: a life killed before its ``kill``-th effect, then
    fresh lives until one ends; returns the effects of all lives joined.
    ``kill`` as a list kills life i before its ``kill[i]``-th effect."""
    plan = kill if isinstance(kill, list) else [kill]
    workdir.mkdir(parents=True, exist_ok=True)
    trace = workdir / "trace.jsonl"
    mode = workdir / "mode"
    mode.write_text("a")
    run = Run()
    bounds = []
    for life in range(MAX_LIVES):
        if divergent and life == 1:
            mode.write_text("b")
        job = {
            "text": text,
            "store": str(workdir / "store"),
            "trace": str(trace),
            "mode": str(mode),
            "kill": plan[life] if life < len(plan) else None,
            "chunks": f"{seed}:{kill}:{life}",
            "result": str(workdir / f"result-{life}.json"),
            "lenient": lenient,
            "plain": plain,
            "fsync": FSYNC,
        }
        code = fork(job)
        bounds.append(len(_read_trace(trace)))
        if code == -9:
            run.notes.append(f"life {life + 1}: killed after {bounds[-1]} effects")
            continue
        result = json.loads(Path(job["result"]).read_text()) if code == 0 else {}
        run.outcome = result.get("outcome", f"child exited {code}")
        run.variables = result.get("variables", {})
        run.notes += [f"life {life + 1}: {n}" for n in result.get("notes", [])]
        break
    else:
        run.outcome = "never finished"
    run.trace = _read_trace(trace)
    run.notes.append(f"lives end at effects {bounds}")
    run.bounds = bounds
    return run


def _read_trace(path: Path) -> list[Any]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []
