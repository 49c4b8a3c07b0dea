"""`run --detach`, `reply` and `playbooks worker` on the filesystem store, with real
processes: a detached run is run by a worker to the exact end; a reply written
from another directory wakes a waiting execution; replies come from the durable
inbox in order and are never taken twice after a SIGKILL; SIGTERM drains.

The helpers here (a worker process whose JSON events are collected as they
come, the one-call CLI runner) are shared with tests/test_worker_takeover.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from killing import ROOT, child_env

from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider

EXAMPLES = ROOT / "examples"
HELLO = EXAMPLES / "hello.pb"
HELLO_REPLAY = EXAMPLES / "hello.replay.jsonl"

CLERK = """# Clerk
Asks two questions.

## Main
### Triggers
- At the beginning

### Steps
- Ask the user for their name and wait for it
- Ask the user for their city and wait for it
- Say goodbye with both
- Return the name
"""
CLERK_CALLS = [
    'await Step("Main:01")\nawait Say("user", "Your name?")\n$name = await Yld("user")\n'
    'await Step("Main:02")\nawait Say("user", "Your city?")\n$city = await Yld("user")\n',
    'await Step("Main:03")\nawait Say("user", f"Goodbye {$name} from {$city}!")\n'
    "await Return($name)\n",
]


def write_replay(path: Path, calls: list[str], playbook: str = "Main") -> Path:
    lines = [
        json.dumps({"call": n, "playbook": playbook, "response": f"```python\n{code}```"})
        for n, code in enumerate(calls)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def store_config(workdir: Path, store: str, extra: str = "", dsn: str | None = None) -> Path:
    """A playbooks.toml in ``workdir`` for the store under test."""
    workdir.mkdir(parents=True, exist_ok=True)
    if store == "postgres":
        durability = (
            f'[durability]\nenabled = true\nprovider = "postgres"\ndsn = {json.dumps(dsn)}\n'
        )
    else:
        durability = f'[durability]\nenabled = true\npath = "{workdir / "ckpt"}"\n'
    path = workdir / "playbooks.toml"
    path.write_text(extra + durability)
    return path


def cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "playbooks.cli", *args],
        cwd=cwd,
        env=child_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def detach(program: Path, cwd: Path, *flags: str) -> str:
    done = cli(["run", str(program), "--detach", *flags], cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def shown(cwd: Path, execution_id: str) -> dict:
    done = cli(["executions", "show", execution_id, "--json"], cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def transcript(info: dict) -> list[tuple[str, str, str]]:
    return [(m["id"], m["agent"], m["text"]) for m in info["transcript"]]


class WorkerProcess:
    """`playbooks worker --json` as a real process; its events are collected
    (with the time each arrived) by a thread as they are printed."""

    def __init__(self, cwd: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.events: list[tuple[float, dict]] = []
        self.changed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "playbooks.cli", "worker", "--json", *flags],
            cwd=cwd,
            env=child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ended_at: float | None = None
        self._err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(
            target=lambda: self._err.append(self.proc.stderr.read()), daemon=True
        ).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            with self.changed:
                self.events.append((time.monotonic(), event))
                self.changed.notify_all()
        self.proc.wait()
        with self.changed:
            self.ended_at = time.monotonic()
            self.changed.notify_all()

    def wait_for(self, test: Callable[[dict], bool], timeout: float = 120) -> tuple[float, dict]:
        """The first event that passes ``test`` (waiting for it if need be)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, event in self.events:
                    if test(event):
                        return at, event
                left = deadline - time.monotonic()
                if self.ended_at is not None or left <= 0:
                    raise AssertionError(
                        f"no such event; worker exit {self.proc.poll()}; events "
                        f"{[e for _, e in self.events][-8:]}; stderr {''.join(self._err)[-800:]}"
                    )
                self.changed.wait(left)

    def status(
        self, what: str, execution_id: str, nth: int = 1, timeout: float = 120
    ) -> tuple[float, dict]:
        """The ``nth`` worker line ``what`` (started, finished, waiting...) for the execution."""
        seen: list[dict] = []

        def test(e: dict) -> bool:
            if e.get("event") == "worker" and e.get("status") == what:
                if e.get("execution_id") == execution_id and not any(x is e for x in seen):
                    seen.append(e)
            return len(seen) >= nth and e is seen[nth - 1]

        return self.wait_for(test, timeout)

    def ready(self) -> None:
        self.wait_for(lambda e: e.get("status") == "note" and "ready" in e.get("message", ""))

    def count(self, what: str, execution_id: str) -> int:
        with self.changed:
            return sum(
                1
                for _, e in self.events
                if e.get("event") == "worker"
                and e.get("status") == what
                and e.get("execution_id") == execution_id
            )

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    store_config(tmp_path, "filesystem")
    return tmp_path


@pytest.fixture(scope="module")
def hello_transcript(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, str]]:
    """The transcript of hello.pb run the ordinary way (no worker)."""
    cwd = tmp_path_factory.mktemp("plain")
    store_config(cwd, "filesystem")
    done = cli(["run", str(HELLO), "--model", f"replay:{HELLO_REPLAY}", "--json"], cwd)
    assert done.returncode == 0, done.stderr
    execution_id = json.loads(done.stdout.splitlines()[0])["execution_id"]
    return transcript(shown(cwd, execution_id))


def test_detach_queues_and_a_worker_runs_it_to_the_exact_end(
    home: Path, hello_transcript: list
) -> None:
    execution_id = detach(HELLO, home, "--model", f"replay:{HELLO_REPLAY}")
    listed = json.loads(cli(["executions", "list", "--json"], home).stdout)
    assert [(r["execution_id"], r["status"]) for r in listed] == [(execution_id, "queued")]
    assert shown(home, execution_id)["transcript"] == []  # nothing ran

    # the worker runs it from another directory: the program and settings travel with it
    elsewhere = home / "elsewhere"
    store_config(elsewhere, "filesystem").write_text(
        f'[durability]\nenabled = true\npath = "{home / "ckpt"}"\n'
    )
    worker = WorkerProcess(elsewhere, "--until-idle", "--poll", "0.2")
    assert worker.proc.wait(120) == 0
    worker.status("finished", execution_id)
    assert worker.count("started", execution_id) == 1
    said = [(e["id"], e["text"]) for _, e in worker.events if e.get("event") == "say"]
    assert said == [(i, text) for i, _, text in hello_transcript]
    info = shown(home, execution_id)
    assert info["status"] == "finished" and info["result"] == "done"
    assert transcript(info) == hello_transcript


@pytest.mark.parametrize("store", ["filesystem", "postgres"])
def test_reply_from_another_directory_wakes_a_waiting_execution(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    dsn = request.getfixturevalue("postgres_dsn") if store == "postgres" else None
    home = tmp_path / "home"
    store_config(home, store, dsn=dsn)
    replay = write_replay(tmp_path / "clerk.replay.jsonl", CLERK_CALLS)
    program = tmp_path / "clerk.pb"
    program.write_text(CLERK)
    worker = WorkerProcess(home, "--poll", "0.2")
    try:
        worker.ready()
        execution_id = detach(program, home, "--model", f"replay:{replay}")
        worker.status("waiting", execution_id)
        assert shown(home, execution_id)["status"] == "waiting"

        other = tmp_path / "other"  # only the same store in common
        other.mkdir()
        env: dict[str, str] | None = None
        if dsn is None:
            (other / "playbooks.toml").write_text(
                f'[durability]\nenabled = true\npath = "{home / "ckpt"}"\n'
            )
        else:  # the dsn alone, from the environment
            (other / "playbooks.toml").write_text(
                '[durability]\nenabled = true\nprovider = "postgres"\n'
            )
            env = {"PLAYBOOKS_DURABILITY__DSN": dsn}
        answer = cli(["reply", execution_id, "Ada"], other, env)
        assert answer.returncode == 0, answer.stderr
        worker.status("waiting", execution_id, nth=2)  # it took Ada, asks the city
        assert cli(["reply", execution_id, "Paris", "--to", "Clerk"], other, env).returncode == 0
        worker.status("finished", execution_id)
        assert worker.count("started", execution_id) == 3  # queued, then after each reply
    finally:
        assert worker.stop() == 0  # SIGTERM with nothing running: a clean exit
    info = shown(home, execution_id)
    assert info["status"] == "finished" and info["result"] == "Ada"
    assert [text for _, _, text in transcript(info)] == [
        "Your name?",
        "Ada",
        "Your city?",
        "Paris",
        "Goodbye Ada from Paris!",
    ]
    assert info["inbox"] == {"messages": 2, "unread": 0}


def test_reply_and_detach_refuse_bad_input(home: Path, tmp_path: Path) -> None:
    unknown = cli(["reply", "no-such-execution", "hi"], home)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        f"error: no execution no-such-execution under {home / 'ckpt'}"
    ]
    assert cli(["reply", "../etc", "hi"], home).returncode == 2

    off = tmp_path / "off"
    off.mkdir()
    refused = cli(["run", str(HELLO), "--detach", "--model", f"replay:{HELLO_REPLAY}"], off)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "error: --detach needs durability: set [durability] enabled = true"
    ]

    execution_id = detach(HELLO, home, "--model", f"replay:{HELLO_REPLAY}")
    wrong = cli(["reply", execution_id, "hi", "--to", "Nobody"], home)
    assert wrong.returncode == 2 and "has no agent 'Nobody'" in wrong.stderr
    assert cli(["worker", "--until-idle"], home).returncode == 0
    ended = cli(["reply", execution_id, "hi"], home)
    assert ended.returncode == 2 and "has already finished" in ended.stderr


def test_a_local_run_takes_replies_from_the_inbox_in_order(home: Path, tmp_path: Path) -> None:
    """--message values go into the inbox too, so `reply` adds the next reply,
    and `resume` (no worker) takes it from there."""
    replay = write_replay(tmp_path / "clerk.replay.jsonl", CLERK_CALLS)
    program = tmp_path / "clerk.pb"
    program.write_text(CLERK)
    first = cli(["run", str(program), "--model", f"replay:{replay}", "--message", "Ada"], home)
    assert first.returncode == 1, first.stderr  # waiting for the city
    execution_id = json.loads(cli(["executions", "list", "--json"], home).stdout)[0]["execution_id"]
    assert shown(home, execution_id)["inbox"] == {"messages": 1, "unread": 0}
    assert cli(["reply", execution_id, "Paris"], home).returncode == 0
    resumed = cli(["resume", execution_id], home)
    assert resumed.returncode == 0, resumed.stderr
    info = shown(home, execution_id)
    assert [text for _, _, text in transcript(info)][-2:] == ["Paris", "Goodbye Ada from Paris!"]


@pytest.mark.parametrize("point", ["await:3:before", "await:6:before", "effect:3"])
def test_an_inbox_reply_is_never_taken_twice_after_a_kill(
    home: Path, tmp_path: Path, point: str
) -> None:
    """Killed after a reply was taken from the inbox but before it was recorded
    (await:3:before, await:6:before), or just before the wait: the next worker
    takes the same reply again for the same question, never for the next one."""
    replay = write_replay(tmp_path / "clerk.replay.jsonl", CLERK_CALLS)
    program = tmp_path / "clerk.pb"
    program.write_text(CLERK)
    execution_id = detach(program, home, "--model", f"replay:{replay}")
    for text in ("Ada", "Paris"):
        assert cli(["reply", execution_id, text], home).returncode == 0
    doomed = WorkerProcess(home, "--once", env={"PLAYBOOKS_CRASH_AT": point})
    assert doomed.proc.wait(120) == -signal.SIGKILL
    assert cli(["worker", "--until-idle", "--poll", "0.2"], home).returncode == 0
    info = shown(home, execution_id)
    assert info["status"] == "finished"
    assert [text for _, _, text in transcript(info)] == [
        "Your name?",
        "Ada",
        "Your city?",
        "Paris",
        "Goodbye Ada from Paris!",
    ]


def test_sigterm_drains_then_leaves_the_rest_resumable(home: Path, hello_transcript: list) -> None:
    paced = f"replay+paced:{HELLO_REPLAY}"  # about two seconds of streaming
    execution_id = detach(HELLO, home, "--model", paced)
    patient = WorkerProcess(home, "--poll", "0.2")
    patient.status("started", execution_id)
    patient.proc.send_signal(signal.SIGTERM)  # drains: the run goes on to its end
    assert patient.proc.wait(120) == 0
    patient.status("finished", execution_id)

    execution_id = detach(HELLO, home, "--model", paced)
    hasty = WorkerProcess(home, "--poll", "0.2", "--drain", "0")
    hasty.status("started", execution_id)
    hasty.proc.send_signal(signal.SIGTERM)  # no time to drain: left resumable
    assert hasty.proc.wait(120) == 0
    hasty.status("interrupted", execution_id)
    assert shown(home, execution_id)["status"] == "interrupted"
    assert cli(["worker", "--until-idle", "--poll", "0.2"], home).returncode == 0
    info = shown(home, execution_id)
    assert info["status"] == "finished"
    assert [(a, t) for _, a, t in transcript(info)] == [(a, t) for _, a, t in hello_transcript]


def test_executions_verbs_go_through_the_provider(home: Path) -> None:
    """list/show/rm use the provider's answers, never its folder: a provider
    kept somewhere else entirely is listed and removed the same way."""
    from playbooks import executions

    execution_id = detach(HELLO, home, "--model", f"replay:{HELLO_REPLAY}")
    provider = FilesystemCheckpointProvider(home / "ckpt")
    summary = executions.summarize(provider, execution_id)
    assert summary.status == "queued" and summary.owner is None

    class Elsewhere:  # no base_path, no lock file: only the provider's methods
        def __init__(self, inner: FilesystemCheckpointProvider) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> object:
            if name == "base_path":
                raise AttributeError(name)
            return getattr(self.inner, name)

    remote = Elsewhere(provider)
    assert executions.summarize(remote, execution_id).status == "queued"
    manager = CheckpointManager(execution_id, provider)
    manager.open()  # a live owner (this process): running, whatever the meta says
    try:
        assert executions.summarize(remote, execution_id).status == "running"
        assert provider.runnable(10) == []
    finally:
        manager.close()
    assert provider.runnable(10) == [execution_id]
    assert os.path.isdir(home / "ckpt" / execution_id)
    assert cli(["executions", "rm", execution_id], home).returncode == 0
    assert provider.list_executions() == []


def test_an_ended_execution_whose_meta_went_stale_is_mended_not_rerun(home: Path) -> None:
    """Killed between recording the end and rewriting the meta: the meta still
    says "running". A worker does not run it again; it mends the meta."""
    done = cli(["run", str(HELLO), "--model", f"replay:{HELLO_REPLAY}", "--json"], home)
    assert done.returncode == 0, done.stderr
    execution_id = json.loads(done.stdout.splitlines()[0])["execution_id"]
    provider = FilesystemCheckpointProvider(home / "ckpt")
    log = provider.open_log(execution_id, create=False)
    log.write_meta(provider.read_meta(execution_id) | {"status": "running"})
    log.close()
    assert provider.runnable(10) == [execution_id]
    worker = WorkerProcess(home, "--until-idle", "--poll", "0.2")
    assert worker.proc.wait(120) == 0
    assert worker.count("started", execution_id) == 0
    assert provider.read_meta(execution_id)["status"] == "finished"
    assert provider.runnable(10) == []


def test_inbox_is_checksummed_a_torn_tail_is_ignored_and_cut_before_the_next_append(
    tmp_path: Path,
) -> None:
    from playbooks.durability.log import StorageError

    provider = FilesystemCheckpointProvider(tmp_path / "ckpt")
    provider.open_log("ex-1").close()  # the execution's folder
    provider.append_inbox("ex-1", {"text": "Ada"})
    provider.append_inbox("ex-1", {"text": "Paris"})
    path = tmp_path / "ckpt" / "ex-1" / "inbox"
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])  # a writer killed in the middle of its record
    assert provider.read_inbox("ex-1") == [{"text": "Ada"}]
    provider.append_inbox("ex-1", {"text": "Rome"})
    assert provider.read_inbox("ex-1") == [{"text": "Ada"}, {"text": "Rome"}]
    damaged = bytearray(path.read_bytes())
    damaged[14] ^= 0xFF  # a flipped byte inside the first record
    path.write_bytes(bytes(damaged))
    with pytest.raises(StorageError, match="offset 0"):
        provider.read_inbox("ex-1")
    with pytest.raises(StorageError, match="no execution ex-2"):
        provider.append_inbox("ex-2", {"text": "lost"})


def test_a_run_killed_before_its_meta_was_written_does_not_break_the_next_run(home: Path) -> None:
    """Killed between its first record and its meta: the folder has a log and no
    meta.json. Looking for an unfinished execution must pass it by quietly."""
    done = cli(["run", str(HELLO), "--model", f"replay:{HELLO_REPLAY}", "--json"], home)
    assert done.returncode == 0, done.stderr
    execution_id = json.loads(done.stdout.splitlines()[0])["execution_id"]
    (home / "ckpt" / execution_id / "meta.json").unlink()
    again = cli(["run", str(HELLO), "--model", f"replay:{HELLO_REPLAY}"], home)
    assert again.returncode == 0, again.stderr
