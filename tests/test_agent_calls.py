"""Cross-agent calls: `await WeatherExpert.Forecast(city)` runs the other agent's
public playbook there and returns its value; a non-public one is a clear error
for the model; the agent that serves the person keeps doing so beside other
agents; a recording names each line's agent, and it replays the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from killing import child_env

PROGRAM = """\
# Host
## Main
### Triggers
- When program begins
### Steps
- Welcome the user

## Weather($city)
### Triggers
- When the user asks about the weather
### Steps
- Ask the weather expert for the forecast of $city and tell the user

# Weather expert
## Forecast($city)
public: true
### Steps
- Return a forecast

## Secret
### Steps
- Never shared
"""
CALLS = [
    ("Host", 0, "Main", 'await Step("Main:01")\nawait Say("user", "Ask me about the weather.")'),
    ("Host", 1, "HandleMessage", '$r = await Weather("Paris")\nawait Return()'),
    (
        "Host",
        2,
        "Weather",
        '$f = await WeatherExpert.Forecast($city)\nawait Say("user", $f)\nawait Return($f)',
    ),
    ("WeatherExpert", 0, "Forecast", 'await Return(f"Sunny in {$city}")'),
    ("Host", 3, "HandleMessage", "$x = await WeatherExpert.Secret()"),
    ("Host", 4, "HandleMessage", 'await Say("user", "Only forecasts, sorry.")\nawait Return()'),
]


def run(tmp: Path, model: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(tmp / "w.pb"), "--json"]
    cmd += ["--model", model, "--message", "weather in Paris?", "--message", "secret?", *extra]
    return subprocess.run(
        cmd, cwd=tmp, env=child_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def test_public_playbook_of_another_agent(tmp_path: Path) -> None:
    (tmp_path / "w.pb").write_text(PROGRAM)
    script = tmp_path / "w.replay.jsonl"
    lines = []
    for agent, call, playbook, code in CALLS:
        response = (
            f"```python\n{code}\nawait Return()\n```" if call == 0 else f"```python\n{code}\n```"
        )
        if agent == "WeatherExpert":
            response = f"```python\n{code}\n```"
        lines.append(
            json.dumps({"agent": agent, "call": call, "playbook": playbook, "response": response})
        )
    script.write_text("\n".join(lines) + "\n")
    first = run(tmp_path, f"replay:{script}", "--record", str(tmp_path / "rec.jsonl"))
    assert first.returncode == 0, first.stderr
    seen = [json.loads(line) for line in first.stdout.splitlines()]
    said = [e["text"] for e in seen if e["event"] == "say"]
    assert said == ["Ask me about the weather.", "Sunny in Paris", "Only forecasts, sorry."]
    (error,) = [e["message"] for e in seen if e["event"] == "code_error"]
    assert "Secret of agent WeatherExpert is not public: other agents cannot call it" in error
    assert "its public playbooks: Forecast" in error
    recorded = [json.loads(line) for line in (tmp_path / "rec.jsonl").read_text().splitlines()]
    assert [(r["agent"], r["call"]) for r in recorded] == [(a, c) for a, c, _, _ in CALLS]
    again = run(tmp_path, f"replay:{tmp_path / 'rec.jsonl'}")
    assert again.returncode == 0, again.stderr
    assert [json.loads(x).get("text") for x in again.stdout.splitlines()] == [
        json.loads(x).get("text") for x in first.stdout.splitlines()
    ]
