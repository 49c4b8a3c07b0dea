"""Storage grows with what changed: 300 statements each append 1 KiB to a
list, through the executor and the checkpoint manager (journal, checkpoints,
snapshots, retention: everything the runtime really writes)."""

from __future__ import annotations

import random
import stat
import string
from pathlib import Path

from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor


def disk_bytes(path: Path) -> int:
    """Bytes of the regular files under `path`. The log's rollover thread may
    unlink an old generation while we walk; a file gone before its stat no
    longer takes space, so it counts as zero."""
    total = 0
    for f in path.rglob("*"):
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
    return total


async def test_300_appends_of_1_kib_take_at_most_twice_the_bytes_changed(tmp_path: Path) -> None:
    rng = random.Random(300)

    async def Make(i: int) -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(1024))

    provider = FilesystemCheckpointProvider(tmp_path, keep_last_n=10)
    manager = CheckpointManager("growth", provider)
    ex = StreamingPythonExecutor(None, namespace={"Make": Make}, checkpoint_manager=manager)
    code = "$items = []\n" + "".join(f"$items.append(await Make({i}))\n" for i in range(300))
    sizes = []
    for line in code.splitlines(keepends=True):
        await ex.add_chunk(line)
        sizes.append(disk_bytes(tmp_path))
    await ex.finalize()
    manager.close()
    changed = 300 * 1024
    total = disk_bytes(tmp_path)
    print(f"\nstorage: {total} bytes on disk for {changed} bytes changed ({total / changed:.2f}x)")
    assert total <= 2 * changed
    assert max(sizes) <= 2 * changed  # never above the bound on the way either
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert len(files) < 40  # retention keeps the directory bounded

    ckpt = await CheckpointManager("growth", provider).get_latest_checkpoint()
    assert ckpt["namespace"]["items"] == ex.namespace["items"]
    assert len(ckpt["namespace"]["items"]) == 300
