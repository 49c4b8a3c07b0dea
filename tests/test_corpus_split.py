"""Real LLM responses: any chunking gives the statements of a whole-text parse."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import pytest

from playbooks.execution.dollar import rewrite_dollars
from playbooks.execution.splitter import Statement, StatementSplitter

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "llm-responses.sample.json"


def load() -> list[str]:
    if not CORPUS.is_file():
        pytest.skip(f"corpus not present: {CORPUS}")
    data = json.loads(CORPUS.read_text(encoding="utf-8"))
    assert isinstance(data, list) and all(isinstance(r, str) for r in data)
    return data


def fenced_code(text: str) -> str:
    """The code inside the ```python fence, other lines blanked so numbering holds."""
    out, inside = [], False
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            inside = not inside
            out.append("")
        else:
            out.append(line if inside else "")
    return "\n".join(out)


def split(chunks: list[str]) -> list[Statement]:
    sp = StatementSplitter()
    out: list[Statement] = []
    for chunk in chunks:
        out += sp.feed(chunk)
    while got := sp.finish():
        out += got
    return out


def test_corpus_has_25_responses() -> None:
    assert len(load()) == 25


@pytest.mark.parametrize("number", range(25))
def test_random_chunkings_match_whole_parse(number: int) -> None:
    responses = load()
    text = responses[number]
    expected = [
        ast.dump(n, include_attributes=True)
        for n in ast.parse(rewrite_dollars(fenced_code(text))).body
    ]
    assert expected, "every sample response has code"
    rng = random.Random(number)
    for _ in range(30):
        top = rng.choice([1, 3, 10, 40, 300])
        chunks, i = [], 0
        while i < len(text):
            n = rng.randint(1, top)
            chunks.append(text[i : i + n])
            i += n
        got = split(chunks)
        assert [ast.dump(s.node, include_attributes=True) for s in got] == expected
        assert [s.index for s in got] == list(range(len(expected)))
        for s in got:
            assert rewrite_dollars(s.source) == ast.get_source_segment(
                rewrite_dollars(fenced_code(text)), s.node
            )
