"""Leases with fencing on a real PostgreSQL: a process that lost its execution
writes nothing and causes no effect; a dead owner is taken over at once; the
lease survives a blocked main thread; the database may restart mid-run.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playbooks.durability import CheckpointManager
from playbooks.durability.log import ExecutionLocked, StorageError

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys
from playbooks.durability import CheckpointManager, LeaseLost, PostgresCheckpointProvider
dsn, lease = sys.argv[1], float(sys.argv[2])
m = CheckpointManager("ex-f", PostgresCheckpointProvider(dsn, lease=lease))
m.open()
m.record_frame("main", parent=None, playbook="Main", kind="markdown", args={})
m.record_checkpoint("main", turn=0, cursor=0, statement="x = 1", variables={"x": "child"})
m.before_effect()
print("ready", flush=True)
sys.stdin.readline()
try:
    m.record_checkpoint("main", turn=0, cursor=1, statement="x = 2", variables={"x": "stale"})
    m.before_effect()
    print("effect", flush=True)
except LeaseLost as error:
    print("lost", error, flush=True)
"""


def _provider(dsn: str, **options: object):  # noqa: ANN202 - the lazily imported class
    from playbooks.durability import PostgresCheckpointProvider

    return PostgresCheckpointProvider(dsn, **options)


def _sql(dsn: str, statement: str, *params: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _wait_for(predicate, what: str, timeout: float = 20.0) -> None:  # noqa: ANN001
    """Wait on a condition (polling the database), never on a fixed delay."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _claims(manager: CheckpointManager):  # noqa: ANN202 - a predicate for _wait_for
    """True once ``manager`` could claim its execution (no other owner holds it)."""

    def claimed() -> bool:
        try:
            manager.open()
        except ExecutionLocked:
            return False
        return True

    return claimed


def _start(manager: CheckpointManager) -> None:
    manager.open()
    manager.record_frame("main", parent=None, playbook="Main", kind="markdown", args={})


def _records(dsn: str, execution_id: str) -> int:
    return _sql(dsn, "SELECT count(*) FROM pb_records WHERE execution_id = %s", execution_id)[0][0]


def _child(dsn: str, lease: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, dsn, str(lease)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    return child


def test_an_owner_whose_lease_was_taken_writes_nothing_and_causes_no_effect(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    from playbooks.durability import LeaseLost

    first = CheckpointManager("ex-1", _provider(postgres_dsn, lease=60))
    _start(first)
    first.record_checkpoint("main", turn=0, cursor=0, statement="x = 1", variables={"x": 1})
    first.before_effect()
    first.record_await("main", (0, 0, 0), "sent", None, {}, callee="Noop")  # sent at once
    _wait_for(lambda: _records(postgres_dsn, "ex-1") == 3, "frame, checkpoint, await")
    # the owner stalls: its lease runs out (set in the past with the database clock)
    _sql(postgres_dsn, "UPDATE pb_executions SET lease_until = now() - interval '1 second'")
    second = CheckpointManager("ex-1", _provider(postgres_dsn, lease=60))
    assert second.open().counter == 1  # claimed: the token went up
    stored = _records(postgres_dsn, "ex-1")
    with caplog.at_level(logging.ERROR, logger="playbooks.durability"):
        # a statement's checkpoint waits for the next barrier, which refuses: no effect
        first.record_checkpoint("main", turn=0, cursor=1, statement="x = 2", variables={"x": 2})
        with pytest.raises(LeaseLost):
            first.before_effect()
        with pytest.raises(LeaseLost):
            first.record_await("main", (0, 1, 0), "result", None, {}, callee="Noop")
        with pytest.raises(LeaseLost):
            first.write_meta({"status": "finished"})
    assert issubclass(LeaseLost, StorageError)
    assert _records(postgres_dsn, "ex-1") == stored
    lines = [r for r in caplog.records if "lease lost" in r.getMessage()]
    assert len(lines) == 1 and "ex-1" in lines[0].getMessage()
    first.close()  # gives up quietly: the lease is not its own to release
    second.record_checkpoint("main", turn=0, cursor=1, statement="x = 3", variables={"x": 3})
    second.before_effect()
    second.close()
    state = CheckpointManager("ex-1", _provider(postgres_dsn)).read_state()
    assert state.counter == 2 and state.frames["main"].vars["x"] == 3
    assert "0.1.0" not in state.frames["main"].journal  # the stale await never landed


def test_the_barrier_after_an_early_flushed_result_still_checks_the_token(
    postgres_dsn: str,
) -> None:
    """An effect's result commits synchronously as soon as it is known, so the next
    barrier has nothing to flush; it must still refuse once the lease was taken."""
    from playbooks.durability import LeaseLost

    first = CheckpointManager("ex-e", _provider(postgres_dsn, lease=60))
    _start(first)
    for i in range(3):  # barrier, effect, its result: the pattern of every effect
        first.before_effect()
        first.record_await("main", (0, i, 0), f"result {i}", None, {}, callee="Noop")
    _wait_for(lambda: _records(postgres_dsn, "ex-e") == 4, "the frame and three results")
    _sql(postgres_dsn, "UPDATE pb_executions SET lease_until = now() - interval '1 second'")
    second = CheckpointManager("ex-e", _provider(postgres_dsn, lease=60))
    second.open()  # claimed: the token went up
    with pytest.raises(LeaseLost):
        first.before_effect()  # nothing left to flush: the fence alone refuses
    first.close()
    assert sorted(second.open().frames["main"].journal) == ["0.0.0", "0.1.0", "0.2.0"]
    second.close()


def test_a_finished_call_and_a_delivered_message_are_stored_before_the_code_goes_on(
    postgres_dsn: str,
) -> None:
    """Records go out unwaited, but one sent is not yet safe from our death: a server
    still answering earlier statements finds the client gone and skips the rest. So
    the end of an LLM call's text and the record of a Say wait for their answers."""
    owner = CheckpointManager("ex-s", _provider(postgres_dsn, lease=60))
    _start(owner)
    owner.before_effect()
    log = owner._log
    owner.record_text("main", 0, "the answer, ")  # on its way, unanswered
    assert log._pipe.busy
    owner.record_text("main", 0, "all of it", done=True)
    assert not log._pipe.busy  # every answer read: committed, before the code runs on
    assert _records(postgres_dsn, "ex-s") == 3  # seen from another session at once
    owner.record_await("main", (0, 0, 0), None, None, {"step": "Main:01"}, callee="Step")
    assert log._pipe.busy  # an await that delivered nothing is not waited for
    said = {"say": {"id": "main/0.1.0", "agent": "A", "to": "user", "text": "hi"}}
    owner.record_await("main", (0, 1, 0), None, None, said, callee="Say")
    assert not log._pipe.busy and _records(postgres_dsn, "ex-s") == 5
    owner.close()


def test_after_a_record_write_fails_nothing_sent_after_it_lands(postgres_dsn: str) -> None:
    """Records go out without waiting for their answers: when one fails on the server,
    the ones sent after it write nothing (no gap in the log), and the barrier refuses."""
    owner = CheckpointManager("ex-x", _provider(postgres_dsn, lease=60))
    _start(owner)
    owner.before_effect()
    query = "SELECT max(seq) + 1 FROM pb_records WHERE execution_id = %s"
    failing = _sql(postgres_dsn, query, "ex-x")[0][0]
    _sql(
        postgres_dsn,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.seq = {failing} THEN RAISE EXCEPTION 'refused here'; END IF; "
        "RETURN NEW; END $$",
    )
    _sql(
        postgres_dsn,
        "CREATE TRIGGER refuse BEFORE INSERT ON pb_records FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    owner.record_text("main", 0, "refused")  # fails on the server; the append does not wait
    owner.record_text("main", 0, "after it")  # its predecessor is missing: lands nothing
    with pytest.raises(StorageError, match="refused here"):
        owner.before_effect()
    after = _sql(postgres_dsn, "SELECT count(*) FROM pb_records WHERE seq >= %s", failing)
    assert after == [(0,)]
    owner.close()


WRITER = """
import sys
from playbooks.durability import CheckpointManager, PostgresCheckpointProvider
m = CheckpointManager("ex-w", PostgresCheckpointProvider(sys.argv[1], lease=60))
m.open()
m.record_frame("main", parent=None, playbook="Main", kind="markdown", args={})
m.before_effect()
print("ready", flush=True)
sys.stdin.readline()
m.record_text("main", 0, "the answer", done=True)  # a finished stream's text
print("sent", flush=True)
sys.stdin.readline()
"""


def test_a_claim_waits_for_the_records_a_killed_owner_left_in_flight(postgres_dsn: str) -> None:
    """The owner's session is its writer's: records it sent just before it was
    killed are run before anyone may claim, so the new owner has them."""
    import psycopg

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, postgres_dsn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    blocker = psycopg.connect(postgres_dsn)  # its insert waits behind this lock
    blocker.execute("LOCK TABLE pb_records IN SHARE MODE")
    child.stdin.write("go\n")
    child.stdin.flush()
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    _wait_for(lambda: _sql(postgres_dsn, waiting)[0][0] == 1, "the text record to be waiting")
    child.kill()
    child.wait()
    taker = CheckpointManager("ex-w", _provider(postgres_dsn, lease=60))
    with pytest.raises(ExecutionLocked):
        taker.open()  # the killed owner's record is still on its way
    blocker.commit()
    blocker.close()

    _wait_for(_claims(taker), "the killed owner's session to run its record and end")
    assert _records(postgres_dsn, "ex-w") == 2  # its frame and the text
    taker.close()


def test_the_lease_is_renewed_while_the_main_thread_is_blocked(postgres_dsn: str) -> None:
    owner = CheckpointManager("ex-r", _provider(postgres_dsn, lease=0.3))
    _start(owner)

    def expiry() -> float:
        query = "SELECT extract(epoch FROM lease_until)::float8 FROM pb_executions"
        return _sql(postgres_dsn, query)[0][0]

    first = expiry()
    _wait_for(lambda: expiry() > first + 0.5, "three renewals of a 0.3 s lease")
    with pytest.raises(ExecutionLocked):
        CheckpointManager("ex-r", _provider(postgres_dsn, lease=0.3)).open()
    owner.before_effect()  # still the owner
    owner.close()


def test_a_killed_owner_is_taken_over_without_waiting_for_its_lease(postgres_dsn: str) -> None:
    child = _child(postgres_dsn, lease=600)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    taker = CheckpointManager("ex-f", _provider(postgres_dsn, lease=60))

    _wait_for(_claims(taker), "the killed owner's session to end (its lease has 10 minutes left)")
    assert taker.open().counter == 1  # the dead owner's checkpoint is there
    taker.close()


def test_a_stopped_owner_resumed_after_a_takeover_writes_nothing(postgres_dsn: str) -> None:
    child = _child(postgres_dsn, lease=0.5)
    try:
        os.kill(child.pid, signal.SIGSTOP)
        _wait_for(
            lambda: _sql(postgres_dsn, "SELECT lease_until < now() FROM pb_executions")[0][0],
            "the stopped owner's lease to expire",
        )
        taker = CheckpointManager("ex-f", _provider(postgres_dsn, lease=60))
        assert taker.open().counter == 1
        stored = _records(postgres_dsn, "ex-f")
    finally:
        os.kill(child.pid, signal.SIGCONT)
    out, err = child.communicate("go\n", timeout=30)
    assert out.startswith("lost"), (out, err)
    assert "effect" not in out
    assert err.count("lease lost") == 1, err
    assert _records(postgres_dsn, "ex-f") == stored
    taker.record_checkpoint("main", turn=0, cursor=1, statement="x = 3", variables={"x": "new"})
    taker.close()
    state = CheckpointManager("ex-f", _provider(postgres_dsn)).read_state()
    assert state.counter == 2
    assert "stale" not in str(state.frames["main"].vars)


def test_the_owner_reconnects_after_a_database_restart(postgres_dsn: str, pg_server) -> None:  # noqa: ANN001
    provider = _provider(postgres_dsn, lease=60)
    owner = CheckpointManager("ex-db", provider)
    _start(owner)
    for i in range(5):
        owner.record_checkpoint("main", turn=0, cursor=i, statement="x", variables={"x": i})
    owner.before_effect()
    pg_server.restart()  # every session is cut
    for i in range(5, 10):
        owner.record_checkpoint("main", turn=0, cursor=i, statement="x", variables={"x": i})
    owner.before_effect()
    owner.close()
    assert provider.list_executions() == ["ex-db"]  # the shared connection came back too
    state = CheckpointManager("ex-db", _provider(postgres_dsn)).read_state()
    assert state.counter == 10 and state.frames["main"].vars["x"] == 9


def test_a_waiting_worker_wakes_when_a_reply_arrives(postgres_dsn: str) -> None:
    import threading

    worker = _provider(postgres_dsn)
    manager = CheckpointManager("ex-w", worker)
    manager.open()
    manager.write_meta({"execution_id": "ex-w", "status": "waiting", "inbox_read": 0})
    manager.close()
    assert worker.runnable(5) == []
    worker.wait_for_work(0.01)  # listening from now on
    woke = threading.Event()
    thread = threading.Thread(target=lambda: (worker.wait_for_work(120), woke.set()))
    thread.start()
    _provider(postgres_dsn).append_inbox("ex-w", {"text": "yes"})  # another process replies
    thread.join(60)  # far below the 120 s the worker would otherwise sleep
    assert woke.is_set()
    assert worker.runnable(5) == ["ex-w"]


def test_an_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    from pg_server import free_port

    from playbooks.durability import PostgresCheckpointProvider

    provider = PostgresCheckpointProvider(
        f"postgresql://nobody:secret@127.0.0.1:{free_port()}/x", reconnect_timeout=0
    )
    with pytest.raises(StorageError) as refused:
        provider.list_executions()
    assert "cannot reach PostgreSQL" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_a_default_run_never_imports_the_postgres_driver(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from playbooks.cli import main\n"
        f"code = main(['run', {str(ROOT / 'examples' / 'hello.pb')!r}, '--model', "
        f"{'replay:' + str(ROOT / 'examples' / 'hello.replay.jsonl')!r}])\n"
        "assert code == 0, code\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_binary'))\n"
        "assert not leaked, leaked\n"
        "assert 'playbooks.durability.postgres' not in sys.modules\n"
        "print('clean')\n"
    )
    (tmp_path / "playbooks.toml").write_text("[durability]\nenabled = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYBOOKS_")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("clean")
