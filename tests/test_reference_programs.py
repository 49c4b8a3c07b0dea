"""`check` over the reference project's 72 real programs (../shared/reference).

These are programs people wrote for the reference runtime: every one must be
read (one has a python block that is not Python and must get a clear
file:line error), and the only warnings allowed are for features this runtime
has not built yet or for keys nobody knows. Skipped when ../shared is absent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from playbooks.cli import main  # noqa: E402
from playbooks.language import Program, ProgramError, load_program  # noqa: E402

PROGRAMS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "programs"
NOT_PYTHON = "tests/data/07-execution-modes.pb"
#: Every begin-trigger spelling the 72 reference programs use (test_language checks each).
REFERENCE_BEGIN_SPELLINGS = (
    "At the beginning",
    "At the beginning of the program",
    "When program starts",
    "When the program starts",
    "When programs starts",
    "When program begins",
    "When system starts",
    "When agent starts",
    "When the agent starts",
    "When the agent starts running",
)

pytestmark = pytest.mark.skipif(
    not PROGRAMS.is_dir(), reason=f"reference programs not present: {PROGRAMS}"
)

# What a remaining warning may say: a feature not built yet, a key nobody
# knows, or a section heading written one level too high (variables.pb).
ALLOWED = [
    re.compile(p)
    for p in (
        r"^(meeting|required_attendees|model|startup_mode|remote|cli_entry): .* not built yet",
        r"^execution_mode: raw is not built yet",
        r"^application: .* is not used$",
        r"^multi-agent programs are not built yet: only agent '[^']+' runs, not ",
        r"^human agent '\w+': people other than the user are not built yet$",
        r"^placeholder \{.*\(.*\).*\} calls code, which is not built yet",
        r"^unknown metadata key '(framework|specialization|mcp)' \(kept, not used\)$",
        r"^'## (Triggers|Steps)' read as '### (Triggers|Steps)' of the playbook above",
    )
]


def programs() -> list[Path]:
    return sorted(PROGRAMS.rglob("*.pb"))


def load(relative: str) -> Program:
    return load_program(PROGRAMS / relative)


def test_every_reference_program_passes_check() -> None:
    files = programs()
    assert len(files) == 72
    refused: dict[str, str] = {}
    for path in files:
        try:
            program = load_program(path)
        except ProgramError as error:
            refused[path.relative_to(PROGRAMS).as_posix()] = str(error)
            continue
        assert program.agents, path
        for warning in program.warnings:
            assert warning.startswith(f"{path}:"), warning
            message = warning.split(": ", 1)[1]
            assert any(p.search(message) for p in ALLOWED), warning
    assert list(refused) == [NOT_PYTHON]
    assert refused[NOT_PYTHON] == (
        f"{PROGRAMS / NOT_PYTHON}:5: python block is not valid Python: invalid syntax "
        "in `import math`"
    )


def test_supported_constructs_give_no_warning() -> None:
    """Single-agent programs using only supported constructs are read silently."""
    silent = [
        "examples/hello-world/hello-world.pb",  # plain steps
        "examples/tutorials/04.03/order_assistant.pb",  # python, public, nesting
        "tests/data/order-status.pb",  # sync def, docstring trigger
        "tests/data/cli_test_python_args.pb",  # triggers="..."
        "tests/data/cli_test_startup_message.pb",  # 4-space nesting
        "tests/data/chat.pb",  # ### Trigger
        "tests/data/import_test/main.pb",  # !import
        "tests/data/deep-research-react.pb",
    ]
    for relative in silent:
        program = load(relative)
        if relative.endswith("04.03/order_assistant.pb"):
            assert all("date.today()" in w for w in program.warnings), program.warnings
        else:
            assert program.warnings == [], (relative, program.warnings)


def test_files_refused_before_now_read_as_written() -> None:
    # 4-space nesting
    startup = load("tests/data/cli_test_startup_message.pb").agents[0].playbook("Main")
    assert [s.id for s in startup.all_steps()] == ["01", "01.01", "02", "02.01", "03"]
    shared = load("tests/data/meeting-shared-state.pb")
    meeting_ids = [s.id for s in shared.agents[0].playbook("Meeting").all_steps()]
    assert meeting_ids[-4:] == ["05", "05.01", "06", "06.01"]
    simulator = load("examples/simulator-assistant-evaluator.pb")
    assert simulator.agents[1].playbooks[0].steps[0].children
    # plain `def` playbooks
    status = load("tests/data/order-status.pb").agents[0]
    assert status.playbook("Handoff").sync and status.playbook("Handoff").kind == "python"
    assert status.playbook("CustomerSupportKnowledgeLookup").triggers
    artifact = load("tests/data/08-artifact.pb").agents[0]
    assert artifact.playbook("GenerateRandomString").sync
    # shebang
    notes = load("examples/command-line-utilities/generate_release_notes.pb")
    assert notes.agents[0].name == "ReleaseNotesGenerator"
    assert [s.text for s in notes.agents[0].playbook("Main").steps][-1] == "End program"
    # HTML comment holding `#` lines
    humans = load("examples/hello_multi_human.pb")
    assert [(a.name, a.kind) for a in humans.agents] == [
        ("Alice", "human"),
        ("Bob", "human"),
        ("Greeter", "ai"),
    ]
    assert humans.agents[0].metadata["delivery_channel"] == "streaming"
    # triggers as a string
    args = load("tests/data/cli_test_python_args.pb").agents[0]
    assert args.entry is args.playbook("Main") and args.playbook("Main").begin


def test_begin_spellings_of_the_reference_are_recognised() -> None:
    begin: set[str] = set()
    other: set[str] = set()
    for path in programs():
        if path.relative_to(PROGRAMS).as_posix() == NOT_PYTHON:
            continue
        for agent in load_program(path).agents:
            for pb in agent.playbooks:
                (begin if pb.begin else other).update(pb.triggers)
    assert begin == set(REFERENCE_BEGIN_SPELLINGS)
    assert not any(re.search(r"\b(start|starts|begins|beginning)\b", t) for t in other), other


def test_metadata_import_and_names_of_the_reference() -> None:
    front = load("tests/data/playbooks-python-interop.pb")
    assert front.metadata["title"] == "Playbooks Python Interop"
    assert front.agents[0].metadata == {"startup_mode": "standby"}
    configs = load("tests/data/10-configs.pb")
    assert configs.agents[0].metadata["specialization"] == ["accounting", "tax"]
    assert configs.agents[1].metadata["mcp"] == {
        "url": "http://lawoffice.com/Paralegal",
        "timeout": 10,
    }
    meeting = load("tests/data/12-menu-design-meeting.pb").agents[0]
    redesign = meeting.playbook("RedesignMenu")
    assert redesign is not None and redesign.title == "Redesign Menu"
    menu = meeting.playbook("MenuRedesignMeeting")
    assert menu.metadata["meeting"] is True
    assert menu.metadata["required_attendees"] == ["HeadChef", "MarketingSpecialist"]
    imported = load("tests/data/import_test/main.pb")
    assert [Path(f).name for f in imported.files] == ["main.pb", "config.txt", "process_steps.md"]
    steps = imported.agents[0].playbook("MainWorkflow").all_steps()
    assert [s.id for s in steps][:5] == ["01", "02", "03", "03.01", "03.02"]


def test_check_json_over_a_reference_program(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json", str(PROGRAMS / "examples/nativity.pb")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in data["agents"]][:2] == ["Narrator", "Mary"]
    # meetings and every agent run now: nothing left to warn about in nativity.pb
    assert all(w.startswith(str(PROGRAMS)) for w in data["warnings"])
    playbook = data["agents"][0]["playbooks"][0]
    assert {"name", "kind", "triggers", "steps"} <= set(playbook)
