"""Damaged checkpoint storage never yields a wrong run.

A run of examples/calls.pb is killed mid-way (a real SIGKILL, twice, with a
compaction in between so that the newest generation has a snapshot and a
log). Then single bytes of the newest snapshot and log are flipped (or three
bytes cut out of a record inside them), one at a time, and the same command
is run again. It must either print exactly the
rest of the uninterrupted transcript (same ids) and exit 0, or exit 3 with a
message naming the damaged file and the offset. Set PLAYBOOKS_TEST_EVERY_BYTE=1
to flip every byte instead of a fixed sample.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from killing import child_env

from playbooks.cli import main
from playbooks.durability.log import ExecutionLog
from playbooks.durability.provider import replay_until
from playbooks.durability.records import read_records

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "examples" / "calls.pb"
REPLAY = ROOT / "examples" / "calls.replay.jsonl"
MASKS = (0x01, 0x80, 0xFF, 0x10, 0x42)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("PLAYBOOKS_") and key != "PLAYBOOKS_TEST_EVERY_BYTE":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


def setup(folder: Path) -> list[str]:
    folder.mkdir()
    (folder / "playbooks.toml").write_text(
        f'[durability]\nenabled = true\npath = "{folder / "ckpt"}"\nfsync = false\n'
    )
    return ["run", str(PROGRAM), "--model", f"replay:{REPLAY}", "--json"]


def says(out: str) -> list[tuple[str, str]]:
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [(e["id"], e["text"]) for e in events if e["event"] == "say"]


def killed_life(folder: Path, argv: list[str], crash_at: str) -> list[tuple[str, str]]:
    done = subprocess.run(
        [sys.executable, "-m", "playbooks.cli", *argv],
        cwd=folder,
        env=child_env({"PLAYBOOKS_CRASH_AT": crash_at}),
        capture_output=True,
        text=True,
    )
    assert done.returncode == -9, done.stderr
    return says(done.stdout)


def compact(base: Path) -> Path:
    """What the runtime does every 16 KiB of records, done now: a snapshot
    starts generation 1, so the newest generation has a snapshot and a log."""
    (execution_id,) = os.listdir(base)
    log = ExecutionLog(base, execution_id, fsync=False)
    log.lock()
    log.write_snapshot(replay_until(log.load(), None).to_snapshot())
    log.close()
    return base / execution_id


def offsets(size: int) -> list[int]:
    if os.environ.get("PLAYBOOKS_TEST_EVERY_BYTE"):
        return list(range(size))
    step = max(1, size // 45)
    return sorted({*range(0, size, step), *range(12), *range(size - 8, size)})


def test_flipped_bytes_give_the_exact_run_or_exit_3(tmp_path: Path, capsys) -> None:
    reference_dir = tmp_path / "reference"
    argv = setup(reference_dir)
    os.chdir(reference_dir)
    assert main(argv) == 0
    reference = says(capsys.readouterr().out)

    work = tmp_path / "work"
    argv = setup(work)
    shown = killed_life(work, argv, "effect:3")
    folder = compact(work / "ckpt")
    shown += killed_life(work, argv, "effect:6")
    assert 0 < len(shown) < len(reference)
    pristine = tmp_path / "pristine"
    shutil.copytree(folder, pristine)
    names = ["snap-000001", "log-000001"]
    assert sorted(p.name for p in folder.iterdir() if p.name[:4] in ("snap", "log-")) == [
        "log-000000",
        *reversed(names),
    ]

    os.chdir(work)
    outcomes = {"exact": 0, "refused": 0, "wrong": 0}
    wrong: list[str] = []
    cases = []
    for name in names:
        size = (pristine / name).stat().st_size
        cases += [(name, offset, "flip") for offset in offsets(size)]
        # a torn record inside the file: 3 bytes cut out, the end left intact
        cases += [(name, offset, "tear") for offset in range(0, size - 16, max(1, size // 12))]
    for name, offset, how in cases:
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder)
        data = bytearray((folder / name).read_bytes())
        if how == "flip":
            data[offset] ^= MASKS[offset % len(MASKS)]
        else:
            del data[offset : offset + 3]
        (folder / name).write_bytes(bytes(data))
        try:
            code = main(argv)
        except Exception as error:  # a traceback is a wrong outcome too
            code = f"raised {error!r}"
        out, err = capsys.readouterr()
        named = re.search(rf"{name}\b.*offset \d+", err) is not None
        if code == 0 and shown + says(out) == reference:
            outcomes["exact"] += 1
        elif code == 3 and named and "Traceback" not in err:
            outcomes["refused"] += 1
        else:
            outcomes["wrong"] += 1
            wrong.append(f"{how} {name}@{offset}: exit {code}: {err.strip()[-300:]}")
    print(f"\n{len(cases)} flipped bytes and torn records in {' and '.join(names)}: {outcomes}")
    assert outcomes["wrong"] == 0, wrong[:5]
    assert outcomes["exact"] > 0 and outcomes["refused"] > 0


# -- refusals and the flag, on one killed run -----------------------------------
@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """calls.pb killed just before its 4th effect: a pristine copy to damage."""
    work = tmp_path_factory.mktemp("killed") / "work"
    argv = setup(work)
    shown = killed_life(work, argv, "effect:4")
    return work, shown


def rerun(work: Path, argv: list[str]) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "playbooks.cli", *argv],
        cwd=work,
        env=child_env(),
        capture_output=True,
        text=True,
    )
    return done.returncode, done.stdout, done.stderr


def fresh_copy(killed: tuple[Path, list], tmp_path: Path) -> tuple[Path, list[str], Path]:
    work = tmp_path / "work"
    shutil.copytree(killed[0], work)
    (work / "playbooks.toml").write_text(
        f'[durability]\nenabled = true\npath = "{work / "ckpt"}"\nfsync = false\n'
    )
    os.chdir(work)
    (folder,) = (work / "ckpt").iterdir()
    return work, ["run", str(PROGRAM), "--model", f"replay:{REPLAY}", "--json"], folder


def test_rolling_back_past_effects_needs_the_flag(killed, tmp_path: Path, capsys) -> None:
    work, argv, folder = fresh_copy(killed, tmp_path)
    segment = folder / "log-000000"
    data = bytearray(segment.read_bytes())
    framed = read_records(bytes(data))
    first_say = next(i for i, p in enumerate(framed.payloads) if b'"say"' in p)
    offset = framed.offsets[first_say - 1]  # a record before the first message's
    data[offset + 14] ^= 0x20
    segment.write_bytes(bytes(data))

    assert main(argv) == 3
    out, err = capsys.readouterr()
    assert says(out) == []
    assert f"{segment} is damaged at offset {offset} (bad checksum)" in err
    assert "message main/0.1.0 'I will add 3, 4 and 5.'" in err and "--accept-rollback" in err
    assert segment.read_bytes() == bytes(data)

    code, out, err = rerun(work, [*argv, "--accept-rollback"])  # a real process: real stderr
    assert code == 0, err
    assert says(out)[0] == ("main/0.1.0", "I will add 3, 4 and 5.")  # it may repeat: it did
    assert err.count(f"log-000000: bad checksum at offset {offset}") == 1  # warned once


def test_a_damaged_snapshot_is_replaced_exactly_and_warned_about_once(
    killed, tmp_path: Path, capsys
) -> None:
    work, argv, folder = fresh_copy(killed, tmp_path)
    compact(work / "ckpt")
    snapshot = folder / "snap-000001"
    data = bytearray(snapshot.read_bytes())
    data[40] ^= 0x01
    snapshot.write_bytes(bytes(data))
    code, out, err = rerun(work, argv)
    assert code == 0, err
    reference_dir = tmp_path / "reference"
    reference_argv = setup(reference_dir)
    os.chdir(reference_dir)
    assert main(reference_argv) == 0
    assert killed[1] + says(out) == says(capsys.readouterr().out)
    assert err.count("snap-000001:") == 1, err  # one warning, however many readers
    assert "snap-000001: bad checksum at offset 0" in err


def test_a_missing_log_exits_3_naming_the_folder(killed, tmp_path: Path, capsys) -> None:
    work, argv, folder = fresh_copy(killed, tmp_path)
    for path in folder.glob("log-*"):
        path.unlink()
    assert main(argv) == 3
    out, err = capsys.readouterr()
    assert says(out) == [] and f"{folder}: no readable log" in err and "\n" not in err.strip()
    assert main(["resume", folder.name, "--model", f"replay:{REPLAY}"]) == 3
    assert f"{folder}: no readable log" in capsys.readouterr().err


def test_the_checkpoint_base_directory_is_private(tmp_path: Path, capsys) -> None:
    argv = setup(tmp_path / "w")
    os.chdir(tmp_path / "w")
    old = os.umask(0o022)
    try:
        assert main(argv) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "w" / "ckpt").stat().st_mode) == 0o700
