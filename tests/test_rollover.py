"""The process's rollover thread: one for every log, finished at exit, not inherited by a fork."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before importing playbooks

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from playbooks.durability import rollover
from playbooks.durability.log import ExecutionLog, StorageError

ROOT = Path(__file__).resolve().parent.parent

#: The snapshot's sync waits for a gate that only the last atexit handler opens:
#: without the drain at exit, the daemon thread dies before the rename.
EXITS_MID_ROLLOVER = """
import atexit, os, sys, threading
from playbooks.durability import rollover
from playbooks.durability.log import ExecutionLog
gate = threading.Event()
fsync = os.fsync
def gated(fd):
    if threading.current_thread().name == "playbooks-rollover":
        gate.wait()
    fsync(fd)
os.fsync = gated
atexit.register(gate.set)  # runs before the rollover module's drain (last in, first out)
log = ExecutionLog(sys.argv[1], "exiting")
for i in range(10):
    log.append({"k": "ckpt", "n": i})
log.write_snapshot({"n": 9})
print("pending" if not log._rollover.ended else "ended", flush=True)
"""


def test_a_process_that_ends_normally_finishes_its_snapshot_first(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXITS_MID_ROLLOVER, str(tmp_path)],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"pending\n"  # the exit came while the syncs waited
    folder = tmp_path / "exiting"
    assert (folder / "snap-000001").exists() and not list(folder.glob("*.tmp"))
    loaded = ExecutionLog(tmp_path, "exiting").load()
    assert loaded.snapshot == {"n": 9} and not loaded.rebuilt


def test_the_logs_of_one_process_share_the_thread_and_each_settles(tmp_path: Path) -> None:
    logs = [ExecutionLog(tmp_path, f"log{i}", fsync=False) for i in range(3)]
    for round_ in range(4):
        for i, log in enumerate(logs):
            log.append({"k": "ckpt", "n": round_, "who": i})
            log.write_snapshot({"n": round_, "who": i})
    for log in logs:
        log.close()
    threads = [t for t in threading.enumerate() if t.name == "playbooks-rollover"]
    assert len(threads) == 1
    for i in range(3):
        loaded = ExecutionLog(tmp_path, f"log{i}").load()
        assert loaded.snapshot == {"n": 3, "who": i} and loaded.generation == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_is_told_its_parents_rollover_failed_instead_of_waiting(
    tmp_path: Path, monkeypatch
) -> None:
    gate = threading.Event()
    real_run = rollover.Rollover.run

    def held(self: rollover.Rollover) -> None:
        gate.wait()
        real_run(self)

    monkeypatch.setattr(rollover.Rollover, "run", held)
    log = ExecutionLog(tmp_path, "forked", fsync=False)
    log.append({"k": "ckpt", "n": 0})
    log.write_snapshot({"n": 0})
    pid = os.fork()
    if pid == 0:  # the child: closing must not wait for a thread it does not have
        signal.alarm(30)  # a hang ends the child with SIGALRM, which the parent sees
        code = 1
        try:
            log.close()
        except StorageError as exc:
            code = 0 if "fork" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    gate.set()
    log.close()  # the parent's own rollover went on
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert ExecutionLog(tmp_path, "forked").load().snapshot == {"n": 0}
