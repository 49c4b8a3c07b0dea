"""SIGKILL a real writer at random points: recovery is always an exact, durable prefix."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before importing playbooks

import importlib.util
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playbooks.durability.log import ExecutionLog

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).with_name("writer_child.py")
_spec = importlib.util.spec_from_file_location("writer_child", CHILD)
writer_child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer_child)

TRIALS = 200
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def run_life(directory: Path, seed: int, rng: random.Random) -> tuple[int, str]:
    """Start the writer, kill it at a random point; returns (last durable n, mode)."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=ENV,
    )
    mode = rng.choice(["start", "ready", "lines", "lines", "lines", "snapshot"])
    target = rng.randint(0, 60) if mode == "lines" else rng.randint(1, 2)
    durable = -1
    seen = snapshots = 0
    if mode != "start":
        for raw in proc.stdout:
            word, _, n = raw.decode().partition(" ")
            seen += 1
            if word == "durable":
                durable = int(n)
            snapshots += word == "snapshot"
            if (
                (mode == "ready" and word == "ready")
                or (mode == "lines" and seen > target)
                or (mode == "snapshot" and snapshots >= target)
                or seen > 400
            ):
                break
    if mode == "snapshot":
        # not for correctness (any kill point must pass): a short random pause
        # moves the kill into the snapshot's write/fsync/rename window
        time.sleep(rng.uniform(0, 0.02))
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate()
    for raw in rest.decode().splitlines():  # printed before it died: durable too
        word, _, n = raw.partition(" ")
        if word == "durable":
            durable = int(n)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    return durable, mode


def chop_tail(directory: Path, rng: random.Random) -> bool:
    """Simulate a torn write: cut a few bytes off the newest segment."""
    folder = directory / writer_child.EXECUTION
    gens = [int(p.name[-6:]) for p in folder.glob("*-[0-9][0-9][0-9][0-9][0-9][0-9]")]
    if not gens:
        return False
    newest = max(gens)
    seg = folder / f"log-{newest:06d}"
    if not seg.exists() or seg.stat().st_size == 0:
        return False
    os.truncate(seg, max(0, seg.stat().st_size - rng.randint(1, 300)))
    return True


def trial(base: Path, seed: int) -> tuple[int, str]:
    rng = random.Random(seed)
    directory = base / f"t{seed}"
    lives = 2 if seed % 4 == 0 else 1
    required = -1
    modes = []
    for life in range(lives):
        durable, mode = run_life(directory, seed, rng)
        folder = directory / writer_child.EXECUTION
        if folder.exists() and any(folder.rglob("*.tmp")):
            mode += "(mid-write)"  # killed inside an atomic replace
        modes.append(mode)
        required = max(required, durable)
        if life < lives - 1 and seed % 8 == 0 and chop_tail(directory, rng):
            required = -1  # we destroyed the end of the first life on purpose
            modes.append("torn")
    log = ExecutionLog(directory, writer_child.EXECUTION)
    loaded = log.load()
    assert not loaded.warnings and loaded.damage is None, (seed, loaded.warnings)
    if loaded.rebuilt:  # killed while a new generation's syncs ran: never a lost snapshot
        newest = max(log._scan()[1])
        assert not (directory / writer_child.EXECUTION / f"snap-{newest:06d}").exists(), seed
        modes.append("mid-rollover")
    else:
        assert not loaded.needs_snapshot, seed
    state = writer_child.recover(loaded)  # checks the records follow the snapshot
    assert state["n"] >= required, f"seed {seed}: lost durable checkpoint {required}"
    assert state == writer_child.expected(seed, state["n"]), f"seed {seed}: wrong state"
    return state["n"], "+".join(modes)


def test_sigkill_at_random_points_recovers_an_exact_durable_prefix(tmp_path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda s: trial(tmp_path, s), range(TRIALS)))
    assert len(results) == TRIALS
    reached = [n for n, _ in results]
    modes = " ".join(m for _, m in results)
    print(
        f"\n{TRIALS} trials: max checkpoint {max(reached)}, {sum(n >= 0 for n in reached)} with "
        f"data, {modes.count('(mid-write)')} killed mid-replace, {modes.count('torn')} torn tails, "
        f"{modes.count('mid-rollover')} mid-rollover"
    )
    assert sum(n > 20 for n in reached) > TRIALS // 4  # kills did land mid-history
