"""The comparison workloads: LangGraph with SqliteSaver, and DBOS on SQLite.

Run as ``python -m benchmarks.compare KIND ...`` with an interpreter that has
the libraries (``.venv-bench``); it prints one JSON object on its last line.
Doing every repetition inside one process keeps the libraries' import time
out of the figures, as it is for our side.

  langgraph-steps N REPS DIR    seconds for an N-step graph: no checkpointer, SqliteSaver,
                                SqliteSaver with PRAGMA synchronous=OFF
  langgraph-storage N SIZE REPS DIR  bytes of the SQLite files after N steps appending SIZE bytes
  dbos-steps N REPS DIR         seconds for a workflow of N steps
"""

from __future__ import annotations

import json
import operator
import os
import random
import sqlite3
import string
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

WARMUP = 50


def payload(index: int, size: int, seed: int = 11) -> str:
    """``size`` random lowercase letters, the same for a given (index, seed)."""
    rng = random.Random(seed * 1_000_003 + index)
    return "".join(rng.choices(string.ascii_lowercase, k=size))


class Counter(TypedDict):
    count: int


class Items(TypedDict):
    count: int
    items: Annotated[list[str], operator.add]


def _counter_graph(n: int, checkpointer: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    def step(state: Counter) -> dict:
        return {"count": state["count"] + 1}

    graph = StateGraph(Counter)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", lambda s: "step" if s["count"] < n else END)
    return graph.compile(checkpointer=checkpointer)


def _saver(path: Path, *, sync: bool = True) -> tuple[Any, sqlite3.Connection]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(path), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    if not sync:  # the CPU part alone, as our fsync=false
        conn.execute("PRAGMA synchronous=OFF")
    return saver, conn


def _config(n: int, thread: str) -> dict:
    return {"configurable": {"thread_id": thread}, "recursion_limit": n + 10}


def langgraph_steps(steps: int, reps: int, directory: Path) -> dict:
    """Each repetition: the graph without a checkpointer, then with SqliteSaver
    (durability "sync": a step's checkpoint is committed before the next step,
    the guarantee our journal gives)."""
    times: dict[str, list[float]] = {"none": [], "sqlite": [], "sqlite_nosync": []}
    for rep in range(reps + 1):
        n = steps if rep else min(steps, WARMUP)  # the first round warms up
        for mode in times:
            conn = None
            saver = None
            if mode != "none":
                path = directory / f"lg-{mode}-{rep}.sqlite"
                saver, conn = _saver(path, sync=mode == "sqlite")
            graph = _counter_graph(n, saver)
            options = {"durability": "sync"} if saver is not None else {}
            start = time.perf_counter()
            out = graph.invoke({"count": 0}, _config(n, f"t{rep}"), **options)
            elapsed = time.perf_counter() - start
            assert out["count"] == n, out
            if conn is not None:
                conn.close()
            if rep:
                times[mode].append(elapsed)
    return times


def langgraph_storage(n: int, size: int, reps: int, directory: Path) -> dict:
    """Bytes of the SQLite files (db, -wal, -shm) after each of ``reps`` fresh runs."""
    from langgraph.graph import END, START, StateGraph

    def step(state: Items) -> dict:
        return {"count": state["count"] + 1, "items": [payload(state["count"], size)]}

    graph = StateGraph(Items)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", lambda s: "step" if s["count"] < n else END)
    totals, files = [], {}
    for rep in range(reps):
        path = directory / f"lg-storage-{rep}.sqlite"
        saver, conn = _saver(path)
        app = graph.compile(checkpointer=saver)
        out = app.invoke({"count": 0, "items": []}, _config(n, "s"), durability="sync")
        assert len(out["items"]) == n and out["items"][0] == payload(0, size)
        files = {p.name: p.stat().st_size for p in directory.glob(path.name + "*")}
        totals.append(sum(files.values()))
        conn.close()  # measured before the close folds the WAL in
    return {"bytes": totals, "files": files}


def dbos_steps(steps: int, reps: int, directory: Path) -> dict:
    from dbos import DBOS, SetWorkflowID

    DBOS(
        config={
            "name": "pb-bench",
            "system_database_url": f"sqlite:///{directory / 'dbos.sqlite'}",
            "run_admin_server": False,
            "log_level": "WARNING",
        }
    )

    @DBOS.step()
    def noop(i: int) -> int:
        return i

    @DBOS.workflow()
    def workflow(count: int) -> int:
        total = 0
        for i in range(count):
            total += noop(i)
        return total

    DBOS.launch()
    times = []
    try:
        for rep in range(reps + 1):
            n = steps if rep else min(steps, WARMUP)  # the first round warms up
            with SetWorkflowID(f"bench-{rep}"):
                start = time.perf_counter()
                total = workflow(n)
                elapsed = time.perf_counter() - start
            assert total == n * (n - 1) // 2
            if rep:
                times.append(elapsed)
    finally:
        DBOS.destroy()
    return {"steps": times}


def main(argv: list[str]) -> int:
    kind, *args = argv
    directory = Path(args[-1])
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DBOS__DISABLE_TELEMETRY", "true")
    if kind == "langgraph-steps":
        result = langgraph_steps(int(args[0]), int(args[1]), directory)
    elif kind == "langgraph-storage":
        result = langgraph_storage(int(args[0]), int(args[1]), int(args[2]), directory)
    elif kind == "dbos-steps":
        result = dbos_steps(int(args[0]), int(args[1]), directory)
    else:
        print(f"unknown workload {kind!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
