"""The differential runner: a reference run, then a kill before every effect.

For each program: the plain-Python run (executor level) says what the code
means; one uninterrupted durable run gives the reference effect trace, outcome
and final variables; then for every effect k a first life is SIGKILLed just
before effect k and fresh lives resume it until it ends. The joined trace (all
lives, nothing dropped), the outcome and the final variables must equal the
reference, with nondeterministic values compared by identity (see ``canon``).

A divergent program (ReadMode() changes between lives) has no reference to
match after a resume: a life that replays a record of a different call must
stop with a replay-divergence error and never hand the record to the call.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import executor_level
from .canon import Run, difference
from .shapes import Shape


@dataclass
class Trial:
    kill: int | list[int]  # killed just before this effect (1-based) of the first life,
    # or, as a list, life i killed before its kill[i]-th effect
    problem: str | None  # None: exact
    notes: list[str] = field(default_factory=list)


@dataclass
class ProgramResult:
    level: str  # "executor" or "cli"
    shape: str
    seed: int
    program: str  # the response (and for the CLI, the replay script)
    effects: int = 0  # effects of the reference run
    baseline: str | None = None  # the uninterrupted run is already wrong
    trials: list[Trial] = field(default_factory=list)

    @property
    def divergent(self) -> list[Trial]:
        return [t for t in self.trials if t.problem]

    @property
    def exact(self) -> bool:
        return self.baseline is None and not self.divergent

    def report(self, limit: int = 3) -> str:
        lines = [f"[{self.level}] {self.shape} seed={self.seed}: {self.effects} effects"]
        if self.baseline:
            lines.append(f"  uninterrupted run: {self.baseline}")
        for t in self.divergent[:limit]:
            where = (
                f"effect {t.kill}" if isinstance(t.kill, int) else f"effects {t.kill} (per life)"
            )
            lines.append(f"  kill before {where}: {t.problem}")
            lines += [f"    ({n})" for n in t.notes[-3:]]
        if len(self.divergent) > limit:
            lines.append(f"  ... and {len(self.divergent) - limit} more kill points")
        return "\n".join(lines)


def divergence_error(outcome: str) -> bool:
    """An error whose class name has "Divergence", or whose message says "replay divergence"
    (at the CLI level it comes as a code error: ``line N: ReplayDivergence: ...``)."""
    return bool(re.search(r"\w*Divergence\w*:", outcome)) or "replay divergence" in outcome.lower()


def check_divergent(trial: Run) -> str | None:
    """The rule for a program whose control flow changes after the first life."""
    later = trial.trace[trial.bounds[0] :] if trial.bounds else trial.trace
    wrong = [e for e in later if "fetched:" in json.dumps(e)]
    if wrong:
        return f"a record of Fetch was handed to another call after the resume: {wrong[0]}"
    recorded = trial.bounds[0] if trial.bounds else 0
    if recorded == 0:
        if trial.outcome != "finished":
            return f"nothing was recorded, yet the resumed run ended with {trial.outcome!r}"
        return None
    if not divergence_error(trial.outcome):
        return f"expected a replay-divergence error, the resumed run ended with {trial.outcome!r}"
    return None


def run_executor(
    shape: Shape,
    seed: int,
    *,
    kills: list[int] | None = None,
    lenient: bool = False,
    repeated: int = 0,
) -> ProgramResult:
    """Every kill point of one program at the executor level, plus ``repeated``
    trials in which several lives in a row are killed at random effects."""
    text = shape.response()
    result = ProgramResult("executor", shape.name, seed, text)
    root = Path(tempfile.mkdtemp(prefix=f"fuzz-{shape.name}-"))
    try:
        reference = executor_level.run(text, root / "ref", seed=seed, lenient=lenient)
        result.effects = len(reference.trace)
        if not lenient:
            plain = executor_level.run(text, root / "plain", plain=True, seed=seed)
            problem = difference(plain, reference)
            if problem:
                result.baseline = f"differs from the same code run as plain Python: {problem}"
        rng = random.Random(f"repeated:{shape.name}:{seed}")
        plans: list[int | list[int]] = list(kills or range(1, result.effects + 1))
        if result.effects:
            plans += [
                [rng.randint(1, result.effects) for _ in range(rng.randint(2, 3))]
                for _ in range(repeated)
            ]
        for k in plans:
            trial = executor_level.run(
                text,
                root / f"k{k}".replace(" ", ""),
                kill=k,
                seed=seed,
                divergent=shape.divergent,
                lenient=lenient,
            )
            if shape.divergent:
                problem = check_divergent(trial)
            else:
                problem = difference(reference, trial)
            result.trials.append(Trial(k, problem, trial.notes))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result
