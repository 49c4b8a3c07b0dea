"""The kill tests again, on responses a real model writes: statements spread
over lines (a Say whose arguments span lines, a dict literal, a triple-quoted
f-string), semicolons, and values that differ in every run (the clock in
generated code, uuids in a Python playbook). Killed at every effect, the joined
transcript must be the uninterrupted one, with each nondeterministic value the
same before and after the kill.
"""

from __future__ import annotations

import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from killing import ROOT, Trial, transcript_check

pytestmark = pytest.mark.slow
WORKERS = 3
PROGRAM = ROOT / "tests" / "programs" / "kitchen_multiline.pb"

SCRIPT = {
    "Main": [
        '```python\nawait Step("Main:01")\nimport datetime\n'
        "$stamp = datetime.datetime.now().isoformat()\n"
        "await Say(\n"
        '    "user",\n'
        '    "Hello! Which dish shall I cook today?")\n'
        '$dish = await Yld("user")\n```\n',
        '```python\nawait Step("Main:02")\n'
        "$result = await Cook(\n"
        "    $dish,\n"
        ")\n"
        'await Step("Main:03"); $summary = {\n'
        '    "dish": $dish,\n'
        '    "notes": $result,\n'
        "}\n"
        'await Say("user",\n'
        "          f\"Your {$summary['dish']} is ready. \"\n"
        "          f\"Notes: {$summary['notes']} (order {$stamp})\")\n"
        "for i in range(2):\n"
        "    $tick = datetime.datetime.now().isoformat()\n"
        '    await Say("user", f"""receipt {i}\n'
        'at {$tick} for order {$stamp}""")\n'
        'await Step("Main:04")\nawait Return($result)\n```\n',
    ],
    "Taste": [
        '```python\nawait Step("Taste:01")\n$verdict = f"{$dish} round {$round}: '
        "{['bland', 'better', 'delicious'][$round]}\"\n"
        "await Say(\n"
        '    "user",\n'
        '    f"tasting... {$verdict}",\n'
        ')\nawait Step("Taste:02")\n'
        "await Return($verdict)\n```\n",
    ],
}

STAMP = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+")
TICKET = re.compile(r"ticket ([0-9a-f]{8})|\(([0-9a-f]{8})\)")


def trial(workdir: Path) -> Trial:
    return Trial(workdir, program=PROGRAM, script=SCRIPT)


def normalized(shown: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(i, TICKET.sub("T", STAMP.sub("S", text))) for i, text in shown]


def consistent(shown: list[tuple[str, str]]) -> bool:
    """Every value made once is the same wherever it shows, across lives."""
    texts = [text for _, text in shown]
    orders = {m for t in texts for m in re.findall(r"order (\S+?)\)?$", t, re.M)}
    tickets_said = [m for t in texts for m in re.findall(r"ticket ([0-9a-f]{8})", t)]
    tickets_noted = [m for t in texts for m in re.findall(r"\(([0-9a-f]{8})\)", t)]
    return len(orders) == 1 and tickets_said == tickets_noted and len(set(tickets_said)) == 3


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    t = trial(tmp_path_factory.mktemp("baseline"))
    try:
        life = t.live()
        assert life.code == 0, life.stderr
        assert consistent(t.shown()), t.shown()
        return {"shown": normalized(t.shown()), "requests": t.requests()}
    finally:
        t.close()


def test_baseline_shows_multiline_messages_whole(baseline: dict) -> None:
    texts = [text for _, text in baseline["shown"]]
    assert texts[0] == "Hello! Which dish shall I cook today?"
    assert texts[-2].startswith("receipt 0\nat S for order S")
    assert "stirring tomato soup, round 1, T" in texts
    assert baseline["requests"] == 5


def _kill_before_effect(args: tuple[Path, int], baseline: dict) -> dict | None:
    workdir, k = args
    t = trial(workdir)
    try:
        first = t.live(crash_at=f"effect:{k}")
        if first.code == 0:
            return None  # fewer than k effects
        assert first.code == -signal.SIGKILL, first.stderr
        final = t.finish()
        ok, reshows = transcript_check(normalized(t.shown()), baseline["shown"])
        errors = [e for life in t.lives for e in life.events if e["event"] == "code_error"]
        return {
            "k": k,
            "exact": ok and final.code == 0 and consistent(t.shown()) and not errors,
            "extra_requests": t.requests() - baseline["requests"],
            "cuts": t.cuts,
            "reshows": reshows,
            "shown": t.shown(),
            "errors": errors,
        }
    finally:
        t.close()


def test_kill_before_every_effect(baseline: dict, tmp_path: Path) -> None:
    results: list[dict] = []
    k = 1
    with ThreadPoolExecutor(WORKERS) as pool:
        while True:
            batch = [(tmp_path / str(k + i), k + i) for i in range(WORKERS)]
            found = [r for r in pool.map(lambda a: _kill_before_effect(a, baseline), batch) if r]
            results += found
            if len(found) < len(batch):
                break
            k += WORKERS
    exact = sum(r["exact"] for r in results)
    print(f"\nmultiline kill before every effect: trials={len(results)} exact={exact}")
    assert len(results) >= 20
    bad = [r for r in results if not r["exact"] or r["extra_requests"] > r["cuts"]]
    assert bad == []
