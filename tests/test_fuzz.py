"""The crash-consistency fuzzer, a fixed-seed sample (issue 8, "The proof").

Every test id names one code shape. For each generated program: one
uninterrupted run is the reference (at the executor level it must also equal
the same code run as plain Python); then, for every effect k, a real child
process is SIGKILLed just before effect k and fresh processes resume it until
it ends; the joined effects, the outcome and the final variables must equal
the reference. A failure prints the program, the kill point and what differed.

``python -m tests.fuzz --many`` runs thousands of programs the same way.

On main at 2b45422 (before the fixes of issue 8) these fail, by design: each is
the acceptance test of an item of the issue (see ``SHAPE_COVERS``).
"""

from __future__ import annotations

import ast
import random

import pytest
from fuzz.canon import Run, difference
from fuzz.corpus import reformat, responses
from fuzz.differential import ProgramResult, check_divergent
from fuzz.executor_level import plain_python
from fuzz.many import run_all
from fuzz.shapes import SHAPES, generate

pytestmark = pytest.mark.slow

#: The issue-8 item each shape is the proof of, and how it fared on main at
#: 2b45422 (E: executor level, C: CLI level; "ok" passed, else the first cause).
SHAPE_COVERS = {
    "multiline_say": "1 structural resume | E ok | C SyntaxError on resume",
    "literals": "1 structural resume | E ok | C SyntaxError on resume",
    "decorators": "9 defs recreated on resume | E,C def lost after resume",
    "semicolons": "1 several statements a line | E ok | C ok",
    "branches": "1/2 if/elif/else | E ok | C SyntaxError on resume",
    "loops": "2 loop state | E ok | C SyntaxError on resume",
    "exceptions_loop": "5 exception type/args, 3 replay identity | E,C fail",
    "comprehension_await": "7 awaits in comprehensions | E,C SyntaxError without a kill",
    "queue_pop_argument": "6 arguments of a replayed await evaluated | E,C fail",
    "uuid_top_level": "4 nondeterminism, 9 imports recreated | E,C module lost",
    "uuid_in_loop": "4 nondeterminism journaled in loops | E,C fail",
    "divergent_branch": "3 replay-divergence error | E,C wrong record handed on",
    "gather_code_defined": "8 gather keys | E,C wrong record handed on; def/module lost",
    "code_changes_a_variable": "12 a change made through a code-defined function or class "
    "is checkpointed | E at f9efbdf: the change lost at a kill",
    "var_binding": "6 Var bindings replay | E fail | C Var never binds, even without a kill",
    "ask_reply": "a received reply is never asked again | E ok | C SyntaxError on resume",
    "nested_calls": "resume at every depth | C SyntaxError on resume",
}
EXECUTOR_SHAPES = [name for name in SHAPES if name != "nested_calls"]
EXECUTOR_SEEDS = (1, 2)
CLI_SHAPES = [
    "multiline_say",
    "exceptions_loop",
    "comprehension_await",
    "queue_pop_argument",
    "uuid_in_loop",
    "divergent_branch",
    "gather_code_defined",
    "var_binding",
    "ask_reply",
    "nested_calls",
]


def assert_exact(results: list[ProgramResult]) -> None:
    """Every program ran its kill points and every one resumed exactly."""
    assert results, "no program ran"
    for r in results:
        if r.baseline is None:
            assert r.effects > 0 and r.trials, f"{r.shape} seed {r.seed}: no kill point ran"
    bad = [r for r in results if not r.exact]
    message = "\n\n".join(f"{r.report(4)}\n--- program ---\n{r.program}" for r in bad)
    assert not bad, f"{len(bad)} of {len(results)} programs did not resume exactly:\n{message}"


@pytest.mark.parametrize("shape", EXECUTOR_SHAPES)
def test_executor_level(shape: str) -> None:
    """StreamingPythonExecutor + CheckpointManager in forked children, killed before every effect."""
    assert_exact(run_all([("executor", shape, seed) for seed in EXECUTOR_SEEDS]))


@pytest.mark.parametrize("seed", range(3))
def test_executor_level_mixed(seed: int) -> None:
    """Random programs mixing every shape."""
    assert_exact(run_all([("executor", "mixed", 100 + 2 * seed + i) for i in range(2)]))


def test_executor_level_corpus_multiline() -> None:
    """The 25 real responses in multi-line layouts, killed before every effect."""
    if not responses():
        pytest.skip("../shared/corpus is absent")
    assert_exact(run_all([("executor", "corpus_multiline", n) for n in range(len(responses()))]))


@pytest.mark.parametrize("shape", CLI_SHAPES)
def test_cli_level(shape: str) -> None:
    """`playbooks run --json` with durability on, PLAYBOOKS_CRASH_AT=effect:k for every k."""
    assert_exact(run_all([("cli", shape, 1)], workers=1))


def test_cli_level_mixed() -> None:
    assert_exact(run_all([("cli", "mixed", 7)], workers=1))


# -- the fuzzer itself -------------------------------------------------------------
def test_reformatted_corpus_means_the_same() -> None:
    """A new layout changes lines, never meaning: the same AST as the original."""
    texts = responses()
    if not texts:
        pytest.skip("../shared/corpus is absent")
    changed = 0
    for number, text in enumerate(texts):
        new = reformat(text, random.Random(number))
        changed += new.count("\n") > text.count("\n")
        assert ast.dump(ast.parse(plain_python(new))) == ast.dump(ast.parse(plain_python(text)))
    assert changed >= 20


def test_generated_programs_are_deterministic_and_valid_python() -> None:
    for name in [*SHAPES, "mixed"]:
        for seed in range(5):
            shape = generate(name, seed)
            assert shape.body == generate(name, seed).body
            ast.parse(plain_python(shape.response()))


def test_comparison_tells_one_id_shown_twice_from_two_ids() -> None:
    a, b = "0b9f0c47-8a7e-4f5e-9a55-2d3f1c1e4b6a", "5c3b0d2e-1f4a-4b7c-8d9e-0a1b2c3d4e5f"
    c = "7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9"
    reference = Run(trace=[["Emit", ["x", a]], ["Emit", ["y", a]]], variables={"id": a})
    same = Run(trace=[["Emit", ["x", b]], ["Emit", ["y", b]]], variables={"id": b})
    recomputed = Run(trace=[["Emit", ["x", b]], ["Emit", ["y", c]]], variables={"id": c})
    assert difference(reference, same) is None
    assert "effect 2" in (difference(reference, recomputed) or "")
    floats = Run(trace=[["Emit", [1795900000.123456, 0.8141592653589]]])
    assert difference(floats, Run(trace=[["Emit", [1795900001.5, 0.1234567891234]]])) is None


def test_divergence_rule_wants_an_error_never_the_recorded_value() -> None:
    fetched = ["Fetch", ["left", 0]]
    handed = Run(trace=[fetched, ["Emit", ["v", 0, "fetched:left:0"]]], bounds=[1, 2])
    assert "handed to another call" in (check_divergent(handed) or "")
    silent = Run(trace=[fetched, ["Store", ["right", 0]]], bounds=[1, 2])
    assert "replay-divergence" in (check_divergent(silent) or "")
    stopped = Run(
        trace=[fetched], outcome="ReplayDivergenceError: Store is not Fetch", bounds=[1, 1]
    )
    assert check_divergent(stopped) is None
    fresh = Run(trace=[["Store", ["right", 0]]], bounds=[0, 1])
    assert check_divergent(fresh) is None
