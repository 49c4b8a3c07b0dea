"""Fast checks of the benchmark inputs and the report (``pytest benchmarks``).

The measurements themselves validate what they time (statement counts,
checkpoint numbers, the resumed output); these tests keep the inputs honest.
"""

from __future__ import annotations

import ast
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from benchmarks import checkpoint_cost, common, compare, run, split, storage  # noqa: E402


def test_response_has_exact_length_and_is_the_dialect() -> None:
    for lines in (200, 1000):
        text = split.response(lines)
        assert len(text.split("\n")) == lines
        assert text.startswith("```python\n") and text.endswith("\n```")
        assert "$total" in text and "await Step(" in text and "\nif " in text
        ast.parse(split.plain_python(text))


def test_response_is_deterministic() -> None:
    assert split.response(200) == split.response(200)
    assert split.response(200, seed=1) != split.response(200, seed=2)


def test_splitter_finds_every_statement_of_the_plain_parse() -> None:
    text = split.response(200)
    expected = len(ast.parse(split.plain_python(text)).body)
    assert split.split_all(split.chunks(text)) == expected
    assert split.split_all([text]) == expected


def test_payload_is_seeded_lowercase() -> None:
    a = compare.payload(3, 1024)
    assert a == compare.payload(3, 1024) and a != compare.payload(4, 1024)
    assert len(a) == 1024 and a.isalpha() and a.islower()


def test_storage_code_appends_once_per_step() -> None:
    code = storage.code(5)
    assert code.count("$items.append(await Make(") == 5


def test_sample_statistics() -> None:
    sample = common.Sample([3.0, 1.0, 2.0, 10.0, 4.0])
    assert (sample.median, sample.low, sample.high) == (3.0, 1.0, 10.0)
    row = sample.scaled(2).row("x", "ms")
    assert row.value == 6.0 and row.spread == (2.0, 20.0)


def test_report_marks_misses_and_formats_numbers(tmp_path) -> None:
    rows = [
        common.Row("fast", 1234.5, "µs", "≤ 10", False, "a|b", (1000.0, 2000.0)),
        common.Row("ok", 0.5, "×", "≤ 1", True),
    ]
    text = run.markdown([("Title", rows)])
    assert "| fast | 1,234 | 1,000–2,000 | µs | ≤ 10 | **NO** | a\\|b |" in text
    assert "| ok | 0.50 |  | × | ≤ 1 | yes |  |" in text
    out = tmp_path / "results.md"
    run.write_results([("Title", rows)], quick=True, elapsed=1.0, path=out)
    written = out.read_text()
    assert "- CPU:" in written and "- temp dir:" in written and "quick" in written


def test_checkpoint_cost_state_has_the_stated_size() -> None:
    import json

    for size in (10_000, 1_000_000):
        data = checkpoint_cost.records(size)
        assert 0.8 * size <= len(json.dumps(data)) <= 1.2 * size
        assert data == checkpoint_cost.records(size)
    assert "ckptcost" in run.MEASUREMENTS


def test_workers_pauser_replay_is_one_call_that_pauses(tmp_path) -> None:
    import json

    from benchmarks import workers

    program, replay = workers._pauser(tmp_path)
    lines = [json.loads(line) for line in replay.read_text().splitlines()]
    assert [line["call"] for line in lines] == [0] and "Pause" in program.read_text()
    code = lines[0]["response"].removeprefix("```python\n").removesuffix("```")
    assert "await Pause()" in code and code.count('await Say("user"') == 2
    ast.parse(code.replace("$", "_"))
    assert "workers" in run.MEASUREMENTS
