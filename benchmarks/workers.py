"""Benchmark 10: workers — takeover after SIGKILL, and throughput over 1, 2, 4 workers.

Takeover. Real ``playbooks worker --json`` processes share one store. The
owner claims a detached run of a program that pauses mid-run (a Python
playbook, ``Pause``, that waits for a file, after the first message). Then a
second worker starts; when it is ready, the owner is SIGKILLed and the file
appears. The time is counted from the SIGKILL to the second worker's
``started`` line (and its ``finished`` line). On PostgreSQL a killed owner's
sessions end, so the claim does not wait for the lease to run out; a stalled
owner (SIGSTOP: a hung machine, a partition) keeps them, so that is measured
too: there the bound is the lease plus one poll.

Throughput. N short detached runs of examples/hello.pb (from its replay file,
no LLM) are queued in a staging store while 1, 2 or 4 idle workers wait, then
moved into theirs at once (one transaction; folder renames) and the workers
woken: executions per second until the last ``finished`` line, so the
interpreters' start-up is left out. Each execution runs exactly once (checked).
The machine's cores bound what more workers can give.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .common import ROOT, Row, Sample, child_env, reps, temp_dir

HELLO = ROOT / "examples" / "hello.pb"
HELLO_REPLAY = ROOT / "examples" / "hello.replay.jsonl"
LEASE = 2.0  # seconds: short, so the stalled-owner trials stay short
POLL = 0.1  # seconds between a worker's looks at the store

PAUSER = """# Pauser
Says hello, pauses until told to go on, says goodbye.

```python
@playbook
def Pause() -> str:
    import time
    from pathlib import Path
    deadline = time.monotonic() + 120
    while not Path("go-on").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "rested"
```

## Main
### Triggers
- At the beginning

### Steps
- Say hello
- Pause
- Say goodbye and return
"""
PAUSER_CALLS = [
    'await Step("Main:01")\nawait Say("user", "Hello!")\nawait Step("Main:02")\n'
    '$rest = await Pause()\nawait Step("Main:03")\nawait Say("user", f"Goodbye, {$rest}.")\n'
    'await Return("done")\n'
]


class WorkerProcess:
    """``playbooks worker --json`` as a child process; a thread collects its events
    with the time each one arrived."""

    def __init__(self, home: Path, *flags: str) -> None:
        self.events: list[tuple[float, dict]] = []
        self.changed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "playbooks.cli", "worker", "--json", *flags],
            cwd=home,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err = ""
        self.ended = False
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self.changed:
                    self.events.append((time.monotonic(), json.loads(line)))
                    self.changed.notify_all()
        self.proc.wait()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()

    def wait_for(self, test: Callable[[dict], bool], timeout: float = 120) -> float:
        """The arrival time of the first event that passes ``test``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, event in self.events:
                    if test(event):
                        return at
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    tail = [e for _, e in self.events][-5:]
                    raise RuntimeError(f"worker: no such event; last {tail}; {self.err[-600:]}")
                self.changed.wait(left)

    def status(self, what: str, execution_id: str | None = None) -> float:
        def test(e: dict) -> bool:
            return (
                e.get("event") == "worker"
                and e.get("status") == what
                and execution_id in (None, e.get("execution_id"))
            )

        return self.wait_for(test)

    def times(self, what: str) -> list[float]:
        with self.changed:
            return [
                at
                for at, e in self.events
                if e.get("event") == "worker" and e.get("status") == what
            ]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _env() -> dict[str, str]:
    env = {k: v for k, v in child_env().items() if not k.startswith("PLAYBOOKS_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


def _home(root: Path, name: str, dsn: str | None) -> Path:
    """A working directory whose playbooks.toml points at the store under test."""
    home = root / name
    home.mkdir()
    if dsn:
        durability = (
            f'[durability]\nenabled = true\nprovider = "postgres"\ndsn = {json.dumps(dsn)}\n'
            f"lease_seconds = {LEASE}\n"
        )
    else:
        durability = f'[durability]\nenabled = true\npath = "{home / "ckpt"}"\n'
    (home / "playbooks.toml").write_text(durability)
    return home


def _detach(home: Path, program: Path, replay: Path, count: int) -> list[str]:
    """Queue ``count`` detached runs in one interpreter; their ids."""
    script = (
        "from playbooks.cli import main\n"
        f"for _ in range({count}):\n"
        f"    main(['run', {str(program)!r}, '--detach', '--model', {'replay:' + str(replay)!r}])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=home,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"run --detach failed: {done.stderr[-1000:]}")
    ids = done.stdout.split()
    if len(set(ids)) != count:
        raise RuntimeError(f"run --detach printed {ids!r}")
    return ids


def _pauser(home: Path) -> tuple[Path, Path]:
    program = home / "pauser.pb"
    program.write_text(PAUSER)
    replay = home / "pauser.replay.jsonl"
    lines = [
        json.dumps({"call": n, "playbook": "Main", "response": f"```python\n{code}```"})
        for n, code in enumerate(PAUSER_CALLS)
    ]
    replay.write_text("\n".join(lines) + "\n")
    return program, replay


def takeover(home: Path, trials: int, how: signal.Signals) -> list[tuple[float, float]]:
    """(seconds to the rescuer's ``started``, to its ``finished``) per trial.

    The owner runs alone until it is paused mid-run (``Pause`` waits for a file);
    then the rescuer starts and is ready; then the owner gets the signal, and the
    file appears, so the rescuer's run of ``Pause`` goes on at once."""
    program, replay = _pauser(home)
    marker = home / "go-on"
    out: list[tuple[float, float]] = []
    for _ in range(trials):
        marker.unlink(missing_ok=True)
        (execution_id,) = _detach(home, program, replay, 1)
        owner = WorkerProcess(home, "--once", "--poll", str(POLL))
        rescuer: WorkerProcess | None = None
        try:
            owner.status("started", execution_id)
            owner.wait_for(lambda e: e.get("event") == "say")  # then it waits in Pause
            rescuer = WorkerProcess(home, "--poll", str(POLL))
            rescuer.status("note")  # ready; the execution is not its to claim yet
            owner.proc.send_signal(how)
            hit = time.monotonic()
            marker.touch()
            started = rescuer.status("started", execution_id)
            finished = rescuer.status("finished", execution_id)
        finally:
            owner.kill()
            code = rescuer.stop() if rescuer is not None else 0
        if code != 0 or owner.times("finished"):
            raise RuntimeError(f"rescuer exit {code}, or the owner finished: no takeover")
        out.append((started - hit, finished - hit))
    return out


def throughput(home: Path, count: int, workers: int, rounds: int, dsn: str | None) -> list[float]:
    """Executions per second, per round: ``count`` runs are queued in a staging
    store while the idle workers wait, then moved into theirs at once (one
    transaction; or folder renames) and the workers woken; until the last
    ``finished``."""
    staging = _home(home, "staging", _staging_dsn(dsn))
    procs = [WorkerProcess(home, "--poll", str(POLL)) for _ in range(workers)]
    rates: list[float] = []
    queued: list[str] = []
    try:
        for p in procs:
            p.status("note")  # ready, and nothing to run yet
        for _ in range(rounds):
            ids = _detach(staging, HELLO, HELLO_REPLAY, count)
            began = time.monotonic()
            _move(staging, home, dsn, ids)
            last = max(_finished(procs, execution_id) for execution_id in ids)
            rates.append(count / (last - began))
            queued += ids
    finally:
        codes = [p.stop() for p in procs]
    if codes != [0] * workers:
        raise RuntimeError(f"worker exits {codes}: {procs[0].err[-600:]}")
    runs = [e["execution_id"] for p in procs for _, e in p.events if e.get("status") == "started"]
    if sorted(runs) != sorted(queued):
        raise RuntimeError(f"{len(runs)} started lines for {len(queued)} executions (each once)")
    return rates


def _staging_dsn(dsn: str | None) -> str | None:
    """A DSN like ``dsn`` whose tables live in a schema of their own (None: files)."""
    if not dsn:
        return None
    import psycopg

    schema, url = dsn.rsplit("%3D", 1)[1], dsn.split("?")[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}_staging")
    return f"{dsn}_staging"


def _move(staging: Path, home: Path, dsn: str | None, ids: list[str]) -> None:
    """Make the staged runs runnable in the workers' store, all at once, and wake them."""
    if not dsn:
        (home / "ckpt").mkdir(exist_ok=True)
        for execution_id in ids:
            os.rename(staging / "ckpt" / execution_id, home / "ckpt" / execution_id)
        with open(home / "ckpt" / ".wake", "ab") as wake:
            wake.write(b".")
        return
    import psycopg

    schema, url = dsn.rsplit("%3D", 1)[1], dsn.split("?")[0]
    tables = ("pb_executions", "pb_records", "pb_snapshots", "pb_blobs", "pb_inbox")
    with psycopg.connect(url) as conn:  # one transaction
        for table in tables:
            conn.execute(f"INSERT INTO {schema}.{table} SELECT * FROM {schema}_staging.{table}")
            conn.execute(f"DELETE FROM {schema}_staging.{table}")
        conn.execute("SELECT pg_notify('playbooks_work', '')")


def _finished(procs: list[WorkerProcess], execution_id: str, timeout: float = 300) -> float:
    """When one of the workers printed ``finished`` for the execution."""
    deadline = time.monotonic() + timeout
    first = procs[0]
    while True:
        for p in procs:
            with p.changed:
                for at, e in p.events:
                    if e.get("status") == "finished" and e.get("execution_id") == execution_id:
                        return at
        if time.monotonic() > deadline:
            raise RuntimeError(f"{execution_id} never finished")
        with first.changed:
            first.changed.wait(0.05)


def _takeover_rows(label: str, results: list[tuple[float, float]], bound: str) -> list[Row]:
    to_start = [s for s, _ in results]
    to_end = [f for _, f in results]
    return [
        Row(
            f"{label}: takeover, signal → other worker's `started`",
            statistics.median(to_start),
            "s",
            note=f"{len(results)} trials, max {max(to_start):.2f} s; {bound}",
            spread=(min(to_start), max(to_start)),
        ),
        Row(
            f"{label}: takeover, signal → other worker's `finished`",
            statistics.median(to_end),
            "s",
            note=f"max {max(to_end):.2f} s; includes the rest of the run (a 0.5 s pause)",
            spread=(min(to_end), max(to_end)),
        ),
    ]


def run(quick: bool) -> list[Row]:
    from .postgres import SKIP, _server_module

    trials = 3 if quick else 5
    count = 20 if quick else 40
    rounds = reps(quick, full=5, fast=3)
    counts = (1, 2, 4)
    server = None
    stores: list[tuple[str, str | None]] = [("files", None)]
    try:
        import psycopg  # noqa: F401

        module = _server_module()
        bindir = module.find_bindir()
        if bindir is not None:
            server = module.PgServer(bindir, fsync=True).start()
            stores.insert(0, ("PostgreSQL", ""))
    except ImportError:
        pass
    rows: list[Row] = []
    if server is None:
        rows.append(Row("PostgreSQL workers", None, "", note=SKIP.format(why="no server")))
    poll = f"poll {POLL:g} s"
    try:
        with temp_dir("pb-workers-") as root:
            for label, dsn in stores:
                dsn = server.dsn() if dsn == "" and server is not None else dsn
                tag = "pg" if dsn else "fs"
                killed = takeover(_home(root, f"{tag}-kill", dsn), trials, signal.SIGKILL)
                bound = f"lease {LEASE:g} s, {poll}" if dsn else f"no lease (flock), {poll}"
                rows += _takeover_rows(f"{label}, SIGKILL", killed, bound)
                if dsn:
                    stalled = takeover(_home(root, f"{tag}-stop", dsn), trials, signal.SIGSTOP)
                    bound = f"bound: lease {LEASE:g} s + one poll {POLL:g} s"
                    rows += _takeover_rows(f"{label}, SIGSTOP", stalled, bound)
                for n in counts:
                    place = _home(root, f"{tag}-tp{n}", dsn)
                    rates = Sample(throughput(place, count, n, rounds, dsn))
                    rows.append(
                        rates.row(
                            f"{label}: throughput, {count} hello.pb runs, {n} worker(s)",
                            "runs/s",
                            note=f"{rounds} rounds; queued at once for idle workers, until "
                            f"the last finishes; concurrency 1 each; {os.cpu_count()} cores",
                        )
                    )
    finally:
        if server is not None:
            server.stop()
    return rows


if __name__ == "__main__":
    from .run import plain

    print(plain([("workers", run("--quick" in sys.argv))]))
