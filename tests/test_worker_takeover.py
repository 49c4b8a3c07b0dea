"""Two workers on one store: SIGKILL the owner of an execution, the other takes it
over and finishes it with the exact transcript and no completed LLM call sent
again. And a claim race: four workers, fifty executions, each runs exactly once.

Both run against every store: "filesystem", and "postgres" once the suite
provides a server (the ``postgres_dsn`` fixture); until then that case skips.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from killing import child_env
from llm_server import ScriptedLLMServer, ScriptResponder
from test_worker import (
    HELLO,
    HELLO_REPLAY,
    WorkerProcess,
    cli,
    detach,
    shown,
    store_config,
    transcript,
)

pytestmark = pytest.mark.slow
STORES = ["filesystem", "postgres"]

DESK = """# Desk
Greets the person, notes their name, thanks them.

## Main
### Triggers
- At the beginning

### Steps
- Greet the user and ask for their name
- Note the name with Jot
- Thank them
- Return the name

## Python playbooks

```python
@playbook
async def Jot(name: str) -> str:
    await Say("user", f"noted {name}")
    return name.upper()
```
"""
DESK_SCRIPT = {
    "Main": [
        '```python\nawait Step("Main:01")\nawait Say("user", "Hello! What is your name?")\n'
        '$name = await Yld("user")\n```\n',
        '```python\nawait Step("Main:02")\n$big = await Jot($name)\nawait Step("Main:03")\n'
        'await Say("user", f"Thanks, {$big}! Have a good day.")\nawait Return($name)\n```\n',
    ]
}
EXPECTED = [
    "Hello! What is your name?",
    "Ada",
    "noted Ada",
    "Thanks, ADA! Have a good day.",
]


def _store(request: pytest.FixtureRequest, store: str) -> str | None:
    if store != "postgres":
        return None
    try:
        return request.getfixturevalue("postgres_dsn")
    except pytest.FixtureLookupError:
        pytest.skip("no postgres_dsn fixture in this suite yet")


class Desk:
    """The scripted LLM server, the store's config and the long-lived worker B."""

    def __init__(self, home: Path, store: str, dsn: str | None) -> None:
        self.home = home
        self.victim: WorkerProcess | None = None
        self.kill_at: tuple[int, int] | None = None  # (request, chunk) of the server
        self.cuts = 0
        self.server = ScriptedLLMServer(
            ScriptResponder(DESK_SCRIPT), chunk_size=8, on_chunk=self._on_chunk
        ).start()
        model = f'[model]\nname = "openai/test-model"\napi_base = "{self.server.url}"\n'
        store_config(home, store, extra=model, dsn=dsn)
        self.program = home / "desk.pb"
        self.program.write_text(DESK)

    def _on_chunk(self, request: int, chunk: int) -> None:
        if self.kill_at == (request, chunk) and self.victim is not None:
            self.kill_at = None
            self.victim.proc.kill()
            self.cuts += 1
            raise ConnectionAbortedError("killed the owner mid-stream")

    def close(self) -> None:
        self.server.stop()


def _trial(desk: Desk, rescuer: WorkerProcess, crash: str | None, baseline: dict | None) -> dict:
    """Queue one execution; worker A claims it (B is stopped meanwhile, so A is
    the owner) and dies where told; B, polling, takes it over and finishes it."""
    requests_before = len(desk.server.requests)
    cuts_before = desk.cuts
    os.kill(rescuer.proc.pid, signal.SIGSTOP)
    try:
        execution_id = detach(desk.program, desk.home, "--message", "Ada")
        env = {"PLAYBOOKS_CRASH_AT": crash} if crash and ":" in crash else None
        owner = WorkerProcess(desk.home, "--once", env=env)
        desk.victim = owner
        owner.status("started", execution_id)
    finally:
        os.kill(rescuer.proc.pid, signal.SIGCONT)
    if crash == "event":  # a random moment: right after the n-th thing it printed
        n = random.Random(len(desk.server.requests)).randrange(3, 9)
        owner.wait_for(lambda e: len(owner.events) >= n)
        owner.proc.kill()
    code = owner.proc.wait(120)
    result: dict = {"crash": crash, "execution_id": execution_id, "owner_exit": code}
    if code == 0:  # the owner ran it to the end: nothing to take over
        result["taken_over"] = False
    else:
        assert code == -signal.SIGKILL, code
        died = owner.ended_at
        started, _ = rescuer.status("started", execution_id)
        rescuer.status("finished", execution_id)
        result.update(taken_over=True, takeover=started - (died or started))
    with owner.changed:  # all it printed has been read
        owner.changed.wait_for(lambda: owner.ended_at is not None, 60)
    info = shown(desk.home, execution_id)
    # the LLM calls each worker reported finished (the runtime reports a call once
    # its text is recorded, so a finished call must never be sent again)
    finished = [
        sum(
            1
            for _, e in w.events
            if e.get("event") == "llm" and e.get("execution_id") == execution_id
        )
        for w in (owner, rescuer)
    ]
    said = [
        (e["id"], e["text"])
        for w in (owner, rescuer)
        for _, e in w.events
        if e.get("event") == "say" and e.get("execution_id") == execution_id
    ]
    requests = desk.server.requests[requests_before:]
    cuts = desk.cuts - cuts_before
    result.update(
        status=info["status"],
        texts=[t for _, _, t in transcript(info)],
        ids=[i for i, _, _ in transcript(info)],
        requests=len(requests),
        finished=finished,
        cuts=cuts,
        duplicates=len(said) - len(set(said)),
    )
    if baseline is not None:
        result["exact"] = (
            result["status"] == "finished"
            and result["texts"] == baseline["texts"]
            and result["ids"] == baseline["ids"]
        )
        result["extra_requests"] = result["requests"] - baseline["requests"]
    return result


@pytest.mark.parametrize("store", STORES)
def test_takeover_after_the_owner_is_killed(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    dsn = _store(request, store)
    desk = Desk(tmp_path, store, dsn)
    rescuer = WorkerProcess(tmp_path, "--poll", "0.1")
    results: list[dict] = []
    try:
        rescuer.ready()
        baseline = _trial(desk, rescuer, None, None)
        assert baseline["status"] == "finished" and baseline["texts"] == EXPECTED
        assert baseline["requests"] == 2
        # before every effect, then right after every await record (pure awaits
        # too: Step, Return), each until the owner outlives them all
        for kind in ("effect", "await"):
            for k in range(1, 20):
                result = _trial(desk, rescuer, f"{kind}:{k}", baseline)
                if not result["taken_over"]:
                    break
                results.append(result)
        rng = random.Random(12)
        for _ in range(2):  # mid-stream, at a random chunk of a random request
            request_number = len(desk.server.requests) + rng.randrange(2)  # the server counts all
            desk.kill_at = (request_number, rng.randrange(1, 6))
            results.append(_trial(desk, rescuer, "stream", baseline))
            desk.kill_at = None
        results.append(_trial(desk, rescuer, "event", baseline))
    finally:
        code = rescuer.stop()
        desk.close()
    taken = [r for r in results if r["taken_over"]]
    times = [r["takeover"] for r in taken]
    print(
        f"\ntakeover ({store}): trials={len(results)} exact={sum(r['exact'] for r in results)} "
        f"duplicates={sum(r['duplicates'] for r in results)} "
        f"extra_requests={sum(r['extra_requests'] for r in results)} "
        f"stream_cuts={sum(r['cuts'] for r in results)} "
        f"median_takeover={statistics.median(times):.3f}s max={max(times):.3f}s"
    )
    assert code == 0
    kinds = [r["crash"].split(":")[0] for r in results]
    assert kinds.count("effect") >= 7 and kinds.count("await") >= 8  # every one of both
    print(
        f"kills before an effect: {kinds.count('effect')}, after an await record: "
        f"{kinds.count('await')}"
    )
    # the calls the owner finished and those the rescuer made add up to the run's
    # calls: no finished call was sent again. An extra request only continues the
    # one call the owner had not finished (a kill mid-stream, whether the server
    # or the owner's own crash point cut it, and the latter can land mid-stream too)
    calls = baseline["requests"]
    bad = [
        r
        for r in results
        if not r["exact"] or sum(r["finished"]) != calls or r["extra_requests"] > 1
    ]
    assert bad == [], [(r["crash"], r["finished"], r["requests"], r["exact"]) for r in bad]
    assert baseline["finished"] == [calls, 0]
    assert all(r["duplicates"] <= 1 for r in results)  # at most the one in flight, re-shown
    assert all(r["taken_over"] for r in results)
    # the bound is the lease plus one poll (0.1 s here; files have no lease):
    # a generous margin for a loaded machine, far below the 10 s a retry backoff takes
    assert statistics.median(times) < 5.0


@pytest.mark.parametrize("store", STORES)
def test_claim_race_each_execution_runs_exactly_once(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    dsn = _store(request, store)
    store_config(tmp_path, store, dsn=dsn)
    workers = [WorkerProcess(tmp_path, "--poll", "0.5", "--concurrency", "2") for _ in range(4)]
    count = 50
    try:
        for worker in workers:
            worker.ready()
        script = (
            "import sys\nfrom playbooks.cli import main\n"
            f"for _ in range({count}):\n"
            f"    main(['run', {str(HELLO)!r}, '--detach', '--model', {'replay:' + str(HELLO_REPLAY)!r}])\n"
        )
        queued = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert queued.returncode == 0, queued.stderr
        ids = queued.stdout.split()
        assert len(set(ids)) == count
        for execution_id in ids:
            _wait_finished(workers, execution_id)
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0, 0, 0]
    started = {i: sum(w.count("started", i) for w in workers) for i in ids}
    finished = {i: sum(w.count("finished", i) for w in workers) for i in ids}
    says = [
        (e["execution_id"], e["id"])
        for w in workers
        for _, e in w.events
        if e.get("event") == "say"
    ]
    per_worker = [sum(w.count("finished", i) for i in ids) for w in workers]
    listed = {r["execution_id"]: r["status"] for r in _list(tmp_path)}
    print(
        f"\nclaim race ({store}): executions={count} workers=4 "
        f"started_once={sum(n == 1 for n in started.values())} "
        f"finished_once={sum(n == 1 for n in finished.values())} "
        f"duplicate_messages={len(says) - len(set(says))} per_worker={per_worker}"
    )
    assert set(started.values()) == {1} and set(finished.values()) == {1}
    assert len(says) == len(set(says)) == 2 * count
    assert all(listed[i] == "finished" for i in ids)
    first = transcript(shown(tmp_path, ids[0]))
    assert [t for _, _, t in first] == [
        "Hello! Welcome to Playbooks.",
        "Fun fact: an octopus has three hearts and blue blood.",
    ]


def _finished_somewhere(workers: list[WorkerProcess], execution_id: str) -> bool:
    return any(w.count("finished", execution_id) for w in workers)


def _wait_finished(workers: list[WorkerProcess], execution_id: str, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not _finished_somewhere(workers, execution_id):
        if time.monotonic() > deadline:
            raise AssertionError(f"{execution_id} never finished: {_story(workers, execution_id)}")
        with workers[0].changed:
            workers[0].changed.wait(0.2)


def _story(workers: list[WorkerProcess], execution_id: str) -> str:
    """What each worker said of the execution, whether it still runs, and its
    newest events: enough to tell a lost claim from a stuck run or a dead worker."""
    told = []
    for number, worker in enumerate(workers):
        with worker.changed:
            mine = [e for _, e in worker.events if e.get("execution_id") == execution_id]
            last = [e for _, e in worker.events][-3:]
        told.append(
            f"worker {number} (pid {worker.proc.pid}, exit {worker.proc.poll()}): "
            f"{[(e.get('event'), e.get('status')) for e in mine]}; last {last}"
        )
    return " | ".join(told)


def _list(cwd: Path) -> list[dict]:
    done = cli(["executions", "list", "--json"], cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_worker_keeps_no_connection_per_execution_it_ran(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A long-lived worker runs execution after execution: the store each run opens
    must be closed with it, or every run leaves a database connection behind."""
    import psycopg

    dsn = _store(request, "postgres")
    assert dsn is not None
    # named, so that only this test's connections are counted (the server is shared)
    name = f"pb_keep_{os.getpid()}"
    store_config(tmp_path, "postgres", dsn=f"{dsn}&application_name={name}")
    worker = WorkerProcess(tmp_path, "--poll", "0.2")
    runs = 12
    try:
        worker.ready()
        ids = [detach(HELLO, tmp_path, "--model", f"replay:{HELLO_REPLAY}") for _ in range(runs)]
        for execution_id in ids:
            worker.status("finished", execution_id)
        with psycopg.connect(dsn, autocommit=True) as conn:
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()[0]
    finally:
        assert worker.stop() == 0
    # the worker's own store (one connection, one for LISTEN): not one per run
    print(f"\nconnections after {runs} executions: {others}")
    assert others <= 3, f"{others} connections left open after {runs} executions"
