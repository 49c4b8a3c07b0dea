"""The 25 real LLM responses of the shared corpus, streamed in random chunks and
"killed" before every await they make, then resumed from the checkpoint: the
calls made across both lives are the calls of an uninterrupted run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from stubs import Stop, World

from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "llm-responses.sample.json"


def responses() -> list[str]:
    if not CORPUS.exists():
        pytest.skip("../shared/corpus is absent")
    return json.loads(CORPUS.read_text())


def pieces(text: str, rng: random.Random) -> list[str]:
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 30)
        out.append(text[i : i + n])
        i += n
    return out


async def feed(ex: StreamingPythonExecutor, parts: list[str]) -> str:
    try:
        for part in parts:
            await ex.add_chunk(part)
        await ex.finalize()
    except Exception as error:  # the same error must end both runs
        return f"{type(error).__name__}: {error}"
    return ""


async def test_corpus_resumes_exactly_after_a_kill_at_every_await(tmp_path: Path) -> None:
    rng = random.Random(2026)
    trials = 0
    for number, text in enumerate(responses()):
        log: list = []
        world = World(log, awaits_left=10**6)
        reference = StreamingPythonExecutor(None, namespace=world)
        outcome = await feed(reference, pieces(text, rng))
        awaits = 10**6 - world.budget[0]
        assert awaits > 0, number
        for k in range(awaits):
            provider = FilesystemCheckpointProvider(tmp_path / f"{number}-{k}", fsync=False)
            first_log: list = []
            ex = StreamingPythonExecutor(
                None,
                namespace=World(first_log, awaits_left=k),
                checkpoint_manager=CheckpointManager("run", provider),
            )
            parts = pieces(text, rng)
            with pytest.raises(Stop):
                for part in parts:
                    await ex.add_chunk(part)
                await ex.finalize()
            ex.checkpoint_manager.close()

            manager = CheckpointManager("run", provider)
            checkpoint = await manager.get_latest_checkpoint()
            received = checkpoint["metadata"]["llm_response"]
            assert text.startswith(received)
            second_log: list = []
            resumed = await StreamingPythonExecutor.resume_from_checkpoint(
                None, checkpoint, namespace=World(second_log), checkpoint_manager=manager
            )
            rest = await feed(resumed, pieces(text[len(received) :], rng))
            manager.close()
            assert rest == outcome, (number, k)
            # the call in flight at the kill may run again; nothing else does
            assert first_log + second_log == log or first_log[:-1] + second_log == log, (number, k)
            trials += 1
    print(f"\ncorpus: {len(responses())} responses, {trials} kills, all resumed exactly")
    assert trials >= 25
