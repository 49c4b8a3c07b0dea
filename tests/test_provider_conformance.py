"""One suite, every provider: the filesystem one and PostgreSQL (a real server).

Each test takes ``store``, which makes providers on one fresh store (a temp
dir, or a schema of its own), and runs unchanged against both.
"""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from playbooks.durability import (
    CheckpointManager,
    CheckpointProvider,
    ExecutionLog,
    FilesystemCheckpointProvider,
)
from playbooks.durability.log import DamagedLog, ExecutionLocked, StorageError
from playbooks.durability.records import HEADER_SIZE, read_records


@dataclass
class Store:
    kind: str
    make: Callable[..., Any]
    damage: Callable[[str, int], None]  # damage the record at this index
    made: list[Any] = field(default_factory=list)

    def provider(self, **options: Any) -> Any:
        provider = self.make(**options)
        self.made.append(provider)
        return provider


def _fs_damage(base: Path) -> Callable[[str, int], None]:
    def damage(execution_id: str, index: int) -> None:
        path = base / execution_id / "log-000000"
        data = bytearray(path.read_bytes())
        at = read_records(bytes(data)).offsets[index] + HEADER_SIZE + 2
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))

    return damage


def _pg_damage(dsn: str) -> Callable[[str, int], None]:
    def damage(execution_id: str, index: int) -> None:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE pb_records SET frame = set_byte(frame, %s, get_byte(frame, %s) # 255) "
                "WHERE execution_id = %s AND seq = (SELECT seq FROM pb_records "
                "WHERE execution_id = %s ORDER BY seq OFFSET %s LIMIT 1)",
                (HEADER_SIZE + 2, HEADER_SIZE + 2, execution_id, execution_id, index),
            )

    return damage


@pytest.fixture(params=["filesystem", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "filesystem":
        base = tmp_path / "ckpt"
        made = Store(
            "filesystem", lambda **kw: FilesystemCheckpointProvider(base, **kw), _fs_damage(base)
        )
    else:
        from playbooks.durability import PostgresCheckpointProvider

        dsn = request.getfixturevalue("postgres_dsn")
        made = Store(
            "postgres", lambda **kw: PostgresCheckpointProvider(dsn, **kw), _pg_damage(dsn)
        )
    yield made
    for provider in made.made:
        if hasattr(provider, "close"):
            provider.close()


def _run(manager: CheckpointManager, start: int, count: int, big: int = 0) -> None:
    """``count`` statements of a frame "main", each changing x (and a big string)."""
    state = manager.open()
    if "main" not in state.frames:
        manager.record_frame("main", parent=None, playbook="Main", kind="markdown", args={})
        manager.record_turn("main", 0, llm=True)
    for i in range(start, start + count):
        variables: dict[str, Any] = {"x": i, "items": list(range(i % 7))}
        if big:
            rng = random.Random(i)  # all new, and incompressible: a whole value per record
            variables["text"] = "".join(rng.choices(string.ascii_letters, k=big))
        manager.record_checkpoint(
            "main", turn=0, cursor=i, statement=f"x = {i}", variables=variables
        )
        manager.before_effect()


def test_a_provider_conforms_to_the_protocol(store: Store) -> None:
    provider = store.provider()
    assert isinstance(provider, CheckpointProvider)
    log = provider.open_log("conf")
    assert isinstance(log, ExecutionLog)
    log.close()


def test_appended_records_load_back_in_order(store: Store) -> None:
    provider = store.provider()
    manager = CheckpointManager("ex-1", provider)
    _run(manager, 0, 30)
    manager.close()
    again = CheckpointManager("ex-1", store.provider())
    state = again.open()
    assert state.counter == 30
    assert state.frames["main"].vars["x"] == 29
    assert asyncio.run(again.get_latest_checkpoint())["namespace"]["items"] == list(range(29 % 7))
    again.close()


def test_a_damaged_record_is_refused_naming_where_then_rolled_back_on_request(
    store: Store,
) -> None:
    provider = store.provider()
    manager = CheckpointManager("ex-d", provider)
    _run(manager, 0, 10)
    manager.close()
    store.damage("ex-d", 5)  # frame, turn, then checkpoints 1..: the 4th checkpoint
    with pytest.raises(DamagedLog) as refused:
        CheckpointManager("ex-d", store.provider()).open()
    assert "ex-d" in str(refused.value) and "--accept-rollback" in str(refused.value)
    assert refused.value.offset is not None
    rolled = CheckpointManager("ex-d", store.provider())
    state = rolled.open(accept_rollback=True)
    assert state.counter == 3  # the checkpoints before the damaged record
    _run(rolled, 3, 2)  # and it goes on from there
    rolled.close()
    assert CheckpointManager("ex-d", store.provider()).read_state().counter == 5


def test_snapshots_and_retention_keep_the_state_and_bound_the_history(store: Store) -> None:
    provider = store.provider(keep_last_n=3)
    manager = CheckpointManager("ex-s", provider)
    _run(manager, 0, 120, big=3000)  # ~3 KiB a statement: several snapshots
    manager.close()
    log = provider.open_log("ex-s", create=False)
    log.load()
    generations = sorted({gen for _, gen in log.checkpoints()})
    assert len(generations) >= 2
    retained = log.checkpoints()
    assert len(retained) < 120  # older generations went
    assert retained[-1][0] == 120
    log.close()
    state = CheckpointManager("ex-s", store.provider()).read_state()
    assert state.counter == 120 and state.frames["main"].vars["x"] == 119
    oldest = f"ex-s_ckpt_{retained[0][0]}"
    loaded = asyncio.run(provider.load_checkpoint(oldest))
    assert loaded["namespace"]["x"] == retained[0][0] - 1
    assert provider.open_log("ex-s", create=False).disk_usage() > 0


def test_meta_is_written_and_read_by_anyone(store: Store) -> None:
    provider = store.provider()
    manager = CheckpointManager("ex-m", provider)
    manager.open()
    assert provider.read_meta("ex-m") is None
    meta = {"execution_id": "ex-m", "status": "queued", "program": "/p/hello.pb", "hash": "h1"}
    manager.write_meta(meta)
    assert store.provider().read_meta("ex-m") == meta
    manager.close()
    assert provider.open_log("ex-m", create=False).read_meta() == meta


def test_executions_are_listed_and_deleted_but_not_while_owned(store: Store) -> None:
    provider = store.provider()
    for name in ("b-2", "a-1"):
        m = CheckpointManager(name, provider)
        _run(m, 0, 2)
        m.close()
    assert sorted(provider.list_executions()) == ["a-1", "b-2"]
    owner = CheckpointManager("a-1", provider)
    owner.open()
    with pytest.raises(ExecutionLocked):
        store.provider().delete_execution("a-1")
    owner.close()
    store.provider().delete_execution("a-1")
    assert provider.list_executions() == ["b-2"]
    with pytest.raises(StorageError):
        provider.open_log("a-1", create=False)


def test_a_claim_is_refused_while_another_owner_holds_it(store: Store) -> None:
    first = CheckpointManager("ex-c", store.provider())
    first.open()
    with pytest.raises(ExecutionLocked) as refused:
        CheckpointManager("ex-c", store.provider()).open()
    assert "in use" in str(refused.value)
    first.close()
    second = CheckpointManager("ex-c", store.provider())
    assert second.open().counter == 0  # free again once the owner let go
    second.close()


def test_the_saver_methods(store: Store) -> None:
    provider = store.provider()

    async def scenario() -> None:
        await provider.save_checkpoint(
            "sv_ckpt_1", {"variables": {"$a": 1}}, {"a": 1}, {"note": "first"}
        )
        await provider.save_checkpoint("sv_ckpt_2", {"variables": {}}, {"a": 2}, {})
        assert await provider.list_checkpoints("sv") == ["sv_ckpt_1", "sv_ckpt_2"]
        first = await provider.load_checkpoint("sv_ckpt_1")
        assert first["namespace"] == {"a": 1} and first["metadata"] == {"note": "first"}
        await provider.delete_checkpoint("sv_ckpt_1")
        assert await provider.list_checkpoints("sv") == ["sv_ckpt_2"]
        assert await provider.load_checkpoint("sv_ckpt_1") is None
        assert await provider.cleanup_old_checkpoints("sv", keep_last_n=1) == 0

    asyncio.run(scenario())


def test_the_inbox_keeps_messages_in_order(store: Store) -> None:
    provider = store.provider()
    if not hasattr(provider, "append_inbox"):
        pytest.skip(f"the {store.kind} provider has no inbox on this branch yet")
    CheckpointManager("ex-i", provider).open()
    provider.append_inbox("ex-i", {"from": "user", "text": "first"})
    store.provider().append_inbox("ex-i", {"from": "user", "text": "second ✓"})
    assert [m["text"] for m in store.provider().read_inbox("ex-i")] == ["first", "second ✓"]
    assert provider.read_inbox("ex-i")[0] == {"from": "user", "text": "first"}


def test_runnable_lists_what_a_worker_may_claim(store: Store) -> None:
    provider = store.provider()
    if not hasattr(provider, "runnable"):
        pytest.skip(f"the {store.kind} provider has no runnable() on this branch yet")
    states = {
        "queued-1": "queued",
        "waiting-1": "waiting",
        "waiting-2": "waiting",
        "done-1": "finished",
        "owned-1": "running",
    }
    owner = None
    for name, status in states.items():
        manager = CheckpointManager(name, provider)
        manager.open()
        # a worker runs only what carries its program (run and run --detach store it)
        source = {"entry": "p.pb", "files": {"p.pb": {"text": "# A\n"}}, "hash": "h"}
        meta = {"execution_id": name, "status": status, "inbox_read": 0, "source": source}
        manager.write_meta(meta)
        if name == "owned-1":
            owner = manager
        else:
            manager.close()
    provider.append_inbox("waiting-2", {"text": "a reply"})
    assert sorted(provider.runnable(10)) == ["queued-1", "waiting-2"]
    assert owner is not None
    owner.close()  # its owner is gone: a worker may take it over
    assert sorted(provider.runnable(10)) == ["owned-1", "queued-1", "waiting-2"]
    assert len(provider.runnable(1)) == 1
