"""Tests for the `.pb` parser, against the fixtures in tests/data/."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_reference_programs import REFERENCE_BEGIN_SPELLINGS

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from playbooks.language import (  # noqa: E402
    AgentSpec,
    PlaybookSpec,
    Program,
    ProgramError,
    Step,
    format_structure,
    load_program,
    parse_text,
)

DATA = Path(__file__).parent / "data"


def load(name: str) -> Program:
    return load_program(DATA / name)


def line_of(name: str, needle: str) -> int:
    """1-based line of the first line of fixture `name` containing `needle`."""
    for number, text in enumerate((DATA / name).read_text().splitlines(), start=1):
        if needle in text:
            return number
    raise AssertionError(f"{needle!r} not in {name}")


def ids(steps: list[Step]) -> list[str]:
    out: list[str] = []
    for step in steps:
        out.append(step.id)
        out.extend(ids(step.children))
    return out


# ---------------------------------------------------------------- valid programs


def test_hello_world() -> None:
    program = load("hello.pb")
    raw = (DATA / "hello.pb").read_bytes()
    assert program.source_hash == hashlib.sha256(raw).hexdigest()
    assert program.path == str(DATA / "hello.pb")
    [agent] = program.agents
    assert isinstance(agent, AgentSpec)
    assert agent.name == "Greeter"
    assert agent.line == 1
    assert agent.description.startswith("A friendly agent")
    assert agent.python_blocks == []
    main = agent.playbook("Main")
    assert isinstance(main, PlaybookSpec)
    assert agent.entry is main
    assert main.kind == "markdown" and main.is_begin and not main.is_free_form
    assert main.triggers == ["At the beginning"]
    assert [s.id for s in main.steps] == ["01", "02", "03"]
    assert main.steps[0].text == "Say hello to the user and ask for their $name"
    assert main.steps[2].line == line_of("hello.pb", "- End program")
    assert main.line == line_of("hello.pb", "## Main")
    assert main.source.startswith("## Main\n### Triggers\n")
    assert main.source.rstrip().endswith("- End program")
    assert main.body_source == "" and main.body_line == 0
    assert agent.playbook("Missing") is None


def test_nested_steps_ids_lines_and_notes() -> None:
    main = load("nested-steps.pb").agents[0].playbooks[0]
    assert ids(main.steps) == [
        "01",
        "02",
        "02.01",
        "02.02",
        "02.02.01",
        "02.02.02",
        "02.03",
        "02.03.01",
        "03",
    ]
    loop = main.steps[1]
    assert loop.text == "While the user wants another recommendation"
    assert loop.children[1].children[0].text == "Tell the user the genres we carry"
    assert loop.children[1].children[0].line == line_of("nested-steps.pb", "genres we carry")
    assert main.step("02.03.01").text == "Recommend a book in $genre"
    assert main.step("09") is None
    assert main.triggers == ["When the program starts"] and main.is_begin
    assert "Never recommend more than three books" in main.notes
    assert "Keep answers short." in main.notes
    # notes are not steps
    assert all("three books" not in s.text for s in main.all_steps())


def test_triggers_markdown_and_python() -> None:
    agent = load("triggers.pb").agents[0]
    assert [pb.name for pb in agent.playbooks] == [
        "ValidatePin",
        "Main",
        "ValidateEmail",
        "BalanceTooLow",
    ]
    pin = agent.playbook("ValidatePin")
    assert pin.kind == "python"
    assert pin.triggers == ["When user provides a PIN"]
    assert pin.params == ["pin"] and pin.returns == "bool"
    assert pin.description == "Check the PIN has four digits."
    assert pin.line == line_of("triggers.pb", "async def ValidatePin")
    assert pin.source.startswith('@playbook(triggers=["When user provides a PIN"])\nasync def')
    assert pin.steps == [] and not pin.is_free_form
    assert agent.playbook("ValidateEmail").triggers == [
        "When user provides an email address",
        "When the email looks mistyped",
    ]
    assert agent.playbook("BalanceTooLow").triggers == ["When $balance < 100"]  # "### Trigger"
    assert [pb.name for pb in agent.playbooks if pb.is_begin] == ["Main"]
    assert agent.entry.name == "Main"
    assert len(agent.python_blocks) == 1
    assert agent.python_blocks[0].line == line_of("triggers.pb", "@playbook(triggers")


def test_python_body_source_is_dedented_and_mapped_to_file_lines() -> None:
    pin = load("triggers.pb").agents[0].playbook("ValidatePin")
    assert pin.body_source.startswith("while len(pin) != 4")
    assert '"""' not in pin.body_source  # docstring removed
    assert "\n    await Say(" in pin.body_source  # inner block keeps relative indent
    assert pin.body_source.endswith("return True\n")
    file_lines = (DATA / "triggers.pb").read_text().splitlines()
    for offset, text in enumerate(pin.body_source.splitlines()):
        assert file_lines[pin.body_line - 1 + offset].strip() == text.strip()
    ast.parse(pin.body_source)  # valid Python at column 0


def test_interop_markdown_and_python_call_each_other() -> None:
    agent = load("interop.pb").agents[0]
    assert [pb.name for pb in agent.playbooks] == ["BuildReport", "Summarize", "Main", "AddNumbers"]
    # "## Python playbooks" holds only a code block: a container, not a playbook
    assert agent.playbook("Python playbooks") is None
    assert [b.line for b in agent.python_blocks] == [
        line_of("interop.pb", "import json"),
        line_of("interop.pb", "@playbook(public=True)"),
    ]
    assert agent.python_blocks[0].source.startswith("import json\n\n@playbook\n")
    for block in agent.python_blocks:
        ast.parse(block.source)
    build = agent.playbook("BuildReport")
    assert "await Summarize(json.dumps(data))" in build.body_source
    # the f-string's second line is string content and stays at column 0
    assert 'f"""Report for {region}:\n{summary}"""' in build.body_source
    ast.parse(build.body_source)  # valid Python at column 0
    add = agent.playbook("AddNumbers")
    assert add.public and add.params == ["a", "b"] and add.returns == "int"
    assert add.body_source == "return a + b\n"
    assert add.body_line == line_of("interop.pb", "return a + b")
    summarize = agent.playbook("Summarize")
    assert summarize.params == ["data"] and summarize.returns == "str"
    assert [s.text for s in agent.playbook("Main").steps][0] == '$report = BuildReport("North")'
    # python code is not part of a markdown playbook's text
    assert "async def" not in agent.playbook("Main").source


def test_multiple_agents_front_matter_and_metadata() -> None:
    program = load("multi-agent.pb")
    assert [a.name for a in program.agents] == ["TravelDesk", "WeatherExpert"]
    assert [a.title for a in program.agents] == ["Travel desk", "Weather expert"]
    assert program.metadata == {"title": "Travel desk", "author": "tests"}
    desk, weather = program.agents
    assert desk.line == line_of("multi-agent.pb", "# Travel desk:AI")
    assert weather.line == line_of("multi-agent.pb", "# Weather expert")
    assert [pb.name for pb in desk.playbooks] == ["Main"]
    assert desk.entry.triggers == ["When program starts"] and desk.entry.is_begin
    assert [pb.name for pb in weather.playbooks] == ["Temperature", "Forecast", "Main"]
    forecast = weather.playbook("Forecast")
    assert forecast.public
    assert forecast.description == "Gives a short forecast for a city."
    assert "public: true" in forecast.source
    assert weather.playbook("Main").public is False
    temperature = weather.playbook("Temperature")
    assert temperature.public and temperature.triggers == ["When asked about temperature"]
    # no begin trigger: the first playbook is the entry
    assert weather.entry is temperature
    assert program.agent("Weather expert") is weather and program.agent("WeatherExpert") is weather
    assert program.agent("nobody") is None
    assert not any("multi-agent" in w for w in program.warnings)  # every agent runs


def test_free_form_playbooks() -> None:
    agent = load("free-form.pb").agents[0]
    solve = agent.playbook("Solve")
    assert solve.is_free_form and solve.steps == []
    assert solve.params == ["problem"] and solve.returns == "str"
    assert solve.description.startswith("You are a math solver.")
    assert solve.description.endswith("return the final answer at the end.")
    assert "execution_mode" not in solve.description
    reflect = agent.playbook("Reflect")
    assert reflect.is_free_form  # "### Steps" with no bullets
    assert reflect.notes == "Think quietly before answering."
    assert not agent.playbook("Main").is_free_form


def test_parameters_and_return_types() -> None:
    agent = load("params.pb").agents[0]
    assert agent.playbook("Main").params == [] and agent.playbook("Main").returns is None
    assert agent.playbook("Add").params == ["a", "b"]
    assert agent.playbook("Add").returns == "int"
    greet = agent.playbook("Greet")
    assert greet.params == ["name", "times", "punctuation"]
    assert greet.returns == "str"
    assert greet.description == "Builds a greeting."
    assert agent.playbook("Pair").params == ["left", "right"]
    scale = agent.playbook("Scale")
    assert scale.params == ["values", "factor", "clamp"] and scale.returns == "list"


def test_to_dict_is_json_and_matches_fixture() -> None:
    data = load("nested-steps.pb").to_dict()
    assert json.loads(json.dumps(data)) == data
    [agent] = data["agents"]
    assert set(agent) == {"name", "description", "playbooks"}
    assert data["warnings"] == []
    assert agent["name"] == "Librarian"
    [main] = agent["playbooks"]
    assert set(main) == {"name", "kind", "params", "triggers", "steps", "public", "begin"}
    assert main["kind"] == "markdown" and main["public"] is False
    assert [s["id"] for s in main["steps"]] == ["01", "02", "03"]
    second = main["steps"][1]
    assert set(second) == {"id", "text", "children"}
    assert [c["id"] for c in second["children"]] == ["02.01", "02.02", "02.03"]
    assert second["children"][1]["children"][1] == {
        "id": "02.02.02",
        "text": "Ask again",
        "children": [],
    }
    interop = load("interop.pb").to_dict()["agents"][0]["playbooks"]
    assert [(p["name"], p["kind"]) for p in interop] == [
        ("BuildReport", "python"),
        ("Summarize", "markdown"),
        ("Main", "markdown"),
        ("AddNumbers", "python"),
    ]
    assert interop[3]["steps"] == [] and interop[3]["public"] is True


def test_all_valid_fixtures_parse_deterministically() -> None:
    valid = sorted(p for p in DATA.glob("*.pb") if not p.name.startswith("invalid-"))
    assert len(valid) >= 7
    for path in valid:
        assert load_program(path) == load_program(path)
        assert load_program(path).agents


def test_format_structure_shows_tree() -> None:
    text = format_structure(load("nested-steps.pb"))
    assert "agent Librarian" in text
    assert "playbook Main() [markdown, begin, entry]" in text
    assert "trigger: When the program starts" in text
    lines = text.splitlines()
    top = next(x for x in lines if "01 Welcome the user" in x)
    deep = next(x for x in lines if "02.02.01 Tell the user" in x)
    assert len(deep) - len(deep.lstrip()) > len(top) - len(top.lstrip())
    python = format_structure(load("interop.pb"))
    assert "AddNumbers(a, b) -> int [python, public]" in python


# ---------------------------------------------------------------- malformed programs


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        ("invalid-no-agent.pb", 1, "no agent"),
        ("invalid-text-before-agent.pb", 2, "before the first"),
        ("invalid-unclosed-fence.pb", 8, "never closed"),
        ("invalid-python-syntax.pb", 9, "python block is not valid Python"),
        ("invalid-duplicate.pb", 14, "duplicate playbook name 'Greet'"),
    ],
)
def test_malformed_programs_point_at_the_line(name: str, line: int, message: str) -> None:
    path = str(DATA / name)
    with pytest.raises(ProgramError) as caught:
        load_program(path)
    error = caught.value
    assert (error.path, error.line) == (path, line)
    assert message in error.message
    assert str(error) == f"{path}:{line}: {error.message}"


def test_malformed_lines_match_fixture_text() -> None:
    """Guard the hard-coded line numbers above against fixture edits."""
    assert line_of("invalid-unclosed-fence.pb", "```python") == 8
    assert line_of("invalid-python-syntax.pb", "math.sqrt(x") == 9
    assert line_of("invalid-duplicate.pb", "## Greet($name)") == 14
    assert line_of("invalid-text-before-agent.pb", "## Orphan") == 2


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pb"
    with pytest.raises(ProgramError) as caught:
        load_program(missing)
    assert caught.value.line == 0 and caught.value.message == "no such file"
    assert str(caught.value) == f"{missing}:0: no such file"
    latin = tmp_path / "latin.pb"
    latin.write_bytes("# Caf\u00e9\n## Main\n- x\n".encode("latin-1"))
    with pytest.raises(ProgramError) as caught:
        load_program(latin)
    assert caught.value.line == 1 and caught.value.message.startswith("not UTF-8 text")


def test_program_error_pickles() -> None:
    error = ProgramError("a.pb", 3, "bad")
    again = pickle.loads(pickle.dumps(error))
    assert (again.path, again.line, again.message, str(again)) == ("a.pb", 3, "bad", "a.pb:3: bad")


def test_crlf_input_parses_like_lf(tmp_path: Path) -> None:
    lf = (DATA / "nested-steps.pb").read_text()
    crlf = tmp_path / "crlf.pb"
    crlf.write_bytes(lf.replace("\n", "\r\n").encode("utf-8"))
    a, b = load_program(DATA / "nested-steps.pb"), load_program(crlf)
    assert a.to_dict() == b.to_dict()
    assert ids(a.agents[0].playbooks[0].steps) == ids(b.agents[0].playbooks[0].steps)
    assert [s.line for s in a.agents[0].playbooks[0].all_steps()] == [
        s.line for s in b.agents[0].playbooks[0].all_steps()
    ]
    assert "\r" not in b.text and "\r" not in b.agents[0].playbooks[0].source
    assert a.source_hash != b.source_hash  # different bytes, different program


def test_headings_inside_fences_are_text() -> None:
    text = (
        "# Writer\n"
        "## Main\n"
        "### Steps\n"
        "- Show the template\n"
        "### Notes\n"
        "```markdown\n"
        "# Not an agent\n"
        "## Not a playbook\n"
        "```\n"
    )
    program = parse_text(text, "t.pb")
    assert [a.name for a in program.agents] == ["Writer"]
    [main] = program.agents[0].playbooks
    assert "# Not an agent" in main.notes and "## Not a playbook" in main.notes
    assert program.source_hash == hashlib.sha256(text.encode()).hexdigest()


def test_agent_level_python_and_one_liner_bodies() -> None:
    text = (
        "# Tools\n"
        "Helper functions.\n"
        "```python\n"
        "LIMIT = 3\n"
        "\n"
        "@playbook\n"
        "async def Quick(x): return x + LIMIT\n"
        "\n"
        "@playbook\n"
        "async def Documented() -> None:\n"
        '    """Only a docstring."""\n'
        "\n"
        "def helper():\n"
        "    return 1\n"
        "```\n"
    )
    agent = parse_text(text).agents[0]
    assert agent.description == "Helper functions."
    assert [pb.name for pb in agent.playbooks] == ["Quick", "Documented"]
    quick = agent.playbook("Quick")
    assert quick.body_source == "return x + LIMIT\n" and quick.body_line == 7
    documented = agent.playbook("Documented")
    assert documented.body_source == "" and documented.description == "Only a docstring."
    assert agent.python_blocks[0].line == 4


def test_bad_trigger_list_is_an_error() -> None:
    text = "# A\n```python\n@playbook(triggers=[1, 2])\nasync def F():\n    pass\n```\n"
    with pytest.raises(ProgramError) as caught:
        parse_text(text, "x.pb")
    assert caught.value.line == 3 and "list of strings" in caught.value.message
    text = "# A\n```python\n@playbook(triggers=TRIGGERS)\nasync def F():\n    pass\n```\n"
    with pytest.raises(ProgramError) as caught:
        parse_text(text, "x.pb")
    assert caught.value.line == 3 and "list of strings" in caught.value.message


def test_unclosed_front_matter_and_prose_before_agent() -> None:
    with pytest.raises(ProgramError) as caught:
        parse_text("---\ntitle: x\n# A\n## Main\n")
    assert caught.value.line == 1
    with pytest.raises(ProgramError) as caught:
        parse_text("<!-- a comment\nstill comment -->\n\nIntro prose\n# A\n")
    assert caught.value.line == 4
    assert [a.name for a in parse_text("<!-- fine -->\n\n# A\n## Main\n").agents] == ["A"]


@pytest.mark.parametrize(
    ("trigger", "begin"),
    [
        ("At the beginning", True),
        ("at the beginning of the conversation", True),
        ("When the program starts", True),
        ("At the start.", True),
        ("AT THE BEGINNING", True),
        ("When user says hello", False),
        ("After the beginning", False),
    ],
)
def test_is_begin(trigger: str, begin: bool) -> None:
    program = parse_text(f"# A\n## P\n### Triggers\n- {trigger}\n### Steps\n- x\n")
    assert program.agents[0].playbooks[0].is_begin is begin


def test_nesting_tolerates_tabs_and_numbered_lists_and_rejects_jumps() -> None:
    tabs = parse_text("# A\n## P\n### Steps\n- a\n\t- b\n\t\t- c\n- d\n")
    assert ids(tabs.agents[0].playbooks[0].steps) == ["01", "01.01", "01.01.01", "02"]
    numbered = parse_text("# A\n## P\n### Steps\n1. a\n   - b\n2. c\n")
    assert ids(numbered.agents[0].playbooks[0].steps) == ["01", "01.01", "02"]
    wrapped = parse_text("# A\n## P\n### Steps\n- a long\n  step text\n- b\n")
    assert [s.text for s in wrapped.agents[0].playbooks[0].steps] == ["a long step text", "b"]
    with pytest.raises(ProgramError) as caught:
        parse_text("# A\n## P\n### Steps\n- a\n  - b\n           - c\n", "n.pb")
    assert str(caught.value).startswith("n.pb:6: ")
    assert "more than one level" in caught.value.message


# ---------------------------------------------------------------- property test

_trees = st.recursive(
    st.just([]),
    lambda children: st.lists(children, min_size=1, max_size=3),
    max_leaves=12,
)


def _render(tree: list, depth: int, out: list[str]) -> None:
    for child in tree:
        out.append("  " * depth + f"- step {len(out)}")
        _render(child, depth + 1, out)


def _expected_ids(tree: list, prefix: str) -> list[str]:
    out: list[str] = []
    for index, child in enumerate(tree, start=1):
        out.append(f"{prefix}{index:02d}")
        out.extend(_expected_ids(child, f"{prefix}{index:02d}."))
    return out


@settings(max_examples=60, deadline=None)
@given(_trees)
def test_any_well_indented_tree_round_trips(tree: list) -> None:
    bullets: list[str] = []
    _render(tree, 0, bullets)
    header = ["# A", "## P", "### Steps"]
    program = parse_text("\n".join(header + bullets) + "\n")
    steps = program.agents[0].playbooks[0].all_steps()
    assert [s.id for s in steps] == _expected_ids(tree, "")
    assert [s.line for s in steps] == list(range(4, 4 + len(bullets)))
    assert [s.text for s in steps] == [b.strip()[2:] for b in bullets]


# ---------------------------------------------------------------- the language as people write it
# (issue 10, item 1: what the reference project's 72 programs use)


def steps_of(text: str) -> list[Step]:
    return parse_text(text).agents[0].playbooks[0].steps


@pytest.mark.parametrize("unit", ["  ", "    ", "\t"], ids=["2-spaces", "4-spaces", "tab"])
def test_nesting_by_two_spaces_four_spaces_or_tabs(unit: str) -> None:
    bullets = ["- a", f"{unit}- b", f"{unit * 2}- c", f"{unit}- d", "- e"]
    text = "# A\n## P\n### Steps\n" + "\n".join(bullets) + "\n"
    steps = steps_of(text)
    assert ids(steps) == ["01", "01.01", "01.01.01", "01.02", "02"]
    assert [s.text for s in parse_text(text).agents[0].playbooks[0].all_steps()] == list("abcde")


def test_shebang_and_front_matter() -> None:
    text = '#!/usr/bin/env pb\n---\ntitle: "Demo"\ntags: [a, b]\nversion: 2\n---\n# A\n## Main\n'
    program = parse_text(text, "demo.pb")
    [agent] = program.agents
    assert agent.name == "A" and agent.line == 7  # line numbers stay those of the file
    assert program.metadata == {"title": "Demo", "tags": ["a", "b"], "version": 2}
    assert program.warnings == []
    with pytest.raises(ProgramError) as caught:
        parse_text("#!/usr/bin/env pb\n---\ntitle: x\n# A\n", "demo.pb")
    assert (caught.value.line, "never closed") == (2, "never closed")


def test_html_comments_are_ignored_even_with_heading_lines() -> None:
    text = (
        "<!-- # Old title\n#\n# Not an agent -->\n"
        "# Greeter\nSays hi. <!-- inline note -->\n"
        "## Main\n### Steps\n- Say hi\n<!--\n- Not a step\n## Not a playbook\n-->\n- Bye\n"
        "```text\n<!-- kept: inside a fence -->\n```\n"
    )
    program = parse_text(text)
    [agent] = program.agents
    assert agent.name == "Greeter" and agent.description == "Says hi."
    main = agent.playbook("Main")
    assert [s.text for s in main.steps] == ["Say hi", "Bye"]
    assert [pb.name for pb in agent.playbooks] == ["Main"]
    assert "<!-- kept: inside a fence -->" in main.notes + main.source
    assert program.warnings == []


def test_sync_def_playbook_is_python_and_marked_sync() -> None:
    text = (
        "# A\n```python\n@playbook\ndef Handoff():\n    return 'ok'\n\n"
        "@playbook\nasync def Later(x):\n    return x\n```\n## Main\n### Steps\n- Call Handoff\n"
    )
    agent = parse_text(text).agents[0]
    handoff, later = agent.playbook("Handoff"), agent.playbook("Later")
    assert handoff.kind == "python" and handoff.sync is True
    assert handoff.body_source == "return 'ok'\n" and handoff.line == 4
    assert later.sync is False
    assert agent.to_dict()["playbooks"][0].get("sync") is True


@pytest.mark.parametrize(
    "argument",
    ['triggers="When program begins"', 'triggers=["When program begins"]'],
    ids=["string", "list"],
)
def test_python_triggers_as_string_or_list(argument: str) -> None:
    text = f"# A\n```python\n@playbook({argument}, public=True)\nasync def Main(a, b='x'):\n    pass\n```\n"
    agent = parse_text(text).agents[0]
    main = agent.playbook("Main")
    assert main.triggers == ["When program begins"] and main.begin and main.public
    assert agent.entry is main and agent.begin_playbooks == [main]


def test_python_docstring_trigger_section() -> None:
    text = (
        '# A\n```python\n@playbook\ndef Lookup(query):\n    """\n    Look things up.\n\n'
        '    ###Trigger\n    - When you need facts\n    """\n    return 1\n```\n'
    )
    lookup = parse_text(text).agents[0].playbook("Lookup")
    assert lookup.description == "Look things up."
    assert lookup.triggers == ["When you need facts"]


@pytest.mark.parametrize("heading", ["### Trigger", "### Triggers"])
def test_trigger_and_triggers_sections(heading: str) -> None:
    text = f"# A\n## P\n{heading}\n- When the user asks for help\n### Steps\n- Help\n"
    assert parse_text(text).agents[0].playbooks[0].triggers == ["When the user asks for help"]


def test_metadata_lines_and_block_are_kept_and_honoured() -> None:
    text = (
        "# Accountant\nframework: GAAP\nHelps with accounting.\nspecialization:\n  - tax\n"
        "metadata:\n  author: Ann\n  limits:\n    max: 3\n"
        "## Report($year)\npublic: true\nexecution_mode: react\n\nWrites a report.\n"
        "### Steps\n- Write it\n"
    )
    program = parse_text(text, "m.pb")
    agent = program.agents[0]
    assert agent.metadata == {
        "framework": "GAAP",
        "specialization": ["tax"],
        "author": "Ann",
        "limits": {"max": 3},
    }
    assert agent.description == "Helps with accounting."
    report = agent.playbook("Report")
    assert report.metadata == {"public": True, "execution_mode": "react"}
    assert report.public is True and report.description == "Writes a report."
    # unknown keys are kept and reported; supported ones (public, react, author) are not
    assert program.warnings == [
        "m.pb:2: unknown metadata key 'framework' (kept, not used)",
        "m.pb:4: unknown metadata key 'specialization' (kept, not used)",
        "m.pb:6: unknown metadata key 'limits' (kept, not used)",
    ]


def test_metadata_of_features_not_built_yet_is_reported() -> None:
    text = (
        "# Host\nmodel: gpt-x\n## Meet\nmeeting: true\nrequired_attendees: [Ann, Bob]\n"
        "execution_mode: raw\n### Steps\n- Talk\n"
        "# Ann:Human\n# Helper\nremote:\n  type: mcp\n  url: http://x\n"
    )
    program = parse_text(text, "n.pb")
    meet = program.agents[0].playbook("Meet")
    assert meet.metadata["meeting"] is True
    assert meet.metadata["required_attendees"] == ["Ann", "Bob"]
    assert program.agents[1].kind == "human" and program.agents[1].name == "Ann"
    assert program.agents[2].metadata["remote"] == {"type": "mcp", "url": "http://x"}
    found = {w.split(": ", 1)[0]: w.split(": ", 1)[1] for w in program.warnings}
    assert "n.pb:2" not in found  # model: is honoured
    assert "n.pb:4" not in found and "n.pb:5" not in found  # meetings are honoured
    assert found["n.pb:6"].startswith("execution_mode: raw is not built yet")
    assert found["n.pb:11"].startswith("remote: remote (MCP) agents")
    assert len(program.warnings) == 2  # human and further AI agents run: no warning


def test_prose_that_looks_like_a_key_stays_description() -> None:
    text = "# A\n## Classify($q)\nClassify a question.\n\nQuestion: {$q}\nnote: be brief\n"
    pb = parse_text(text).agents[0].playbook("Classify")
    assert pb.metadata == {}
    assert pb.description == "Classify a question.\n\nQuestion: {$q}\nnote: be brief"


def test_import_inlines_files_relative_to_the_importer(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "steps.md").write_text("- Check input\n  - Twice\n- Report\n")
    (tmp_path / "parts" / "notes.md").write_text("Be kind.\n!import steps_note.md\n")
    (tmp_path / "parts" / "steps_note.md").write_text("Be brief.\n")
    main = tmp_path / "main.pb"
    main.write_text(
        "# A\n!import parts/notes.md\n## Main\n### Steps\n- Start\n!import ./parts/steps.md\n- End\n"
    )
    program = load_program(main)
    agent = program.agents[0]
    assert agent.description == "Be kind.\nBe brief."
    pb = agent.playbook("Main")
    assert [s.text for s in pb.all_steps()] == ["Start", "Check input", "Twice", "Report", "End"]
    assert ids(pb.steps) == ["01", "02", "02.01", "03", "04"]
    assert [Path(f).resolve() for f in program.files] == [
        main.resolve(),
        (tmp_path / "parts" / "notes.md").resolve(),
        (tmp_path / "parts" / "steps_note.md").resolve(),
        (tmp_path / "parts" / "steps.md").resolve(),
    ]
    # the program's identity covers what it imports
    before = program.source_hash
    (tmp_path / "parts" / "steps.md").write_text("- Check input\n- Report\n")
    assert load_program(main).source_hash != before
    # a line of an imported file is reported in that file
    assert Path(program.where(pb.steps[1].line)[0]).name == "steps.md"
    assert program.where(pb.steps[1].line)[1] == 1


def test_import_errors_point_at_the_directive(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("- leak\n")
    folder = tmp_path / "prog"
    folder.mkdir()
    main = folder / "main.pb"
    for line, target, message in [
        ("!import ../secret.txt", "", "outside the program's folder"),
        ("!import missing.md", "", "no such file"),
        ("!import main.pb", "", "imports itself"),
    ]:
        main.write_text(f"# A\n## Main\n### Steps\n{line}\n")
        with pytest.raises(ProgramError) as caught:
            load_program(main)
        assert (caught.value.path, caught.value.line) == (str(main), 4), target
        assert message in caught.value.message
    (folder / "bad.md").write_text("ok\n## F($a $b)\n")
    main.write_text("# A\n!import bad.md\n")
    with pytest.raises(ProgramError) as caught:
        load_program(main)
    assert Path(caught.value.path).name == "bad.md" and caught.value.line == 2


def test_description_placeholders_are_kept_and_rendered_later() -> None:
    from playbooks.language import render_description

    text = "# A\nServes {$customer}.\n## Greet\nGreet {$name} from {city}; today {date.today()}.\n"
    program = parse_text(text, "p.pb")
    agent = program.agents[0]
    greet = agent.playbook("Greet")
    assert agent.description == "Serves {$customer}."
    assert greet.description == "Greet {$name} from {city}; today {date.today()}."
    state = {"name": "Ada", "city": "Paris", "user": {"id": 7}}
    assert render_description(greet.description, state) == (
        "Greet Ada from Paris; today {date.today()}."
    )
    assert render_description("{$user.id} {$missing} {{name}}", state) == "7 {$missing} {{name}}"
    assert program.warnings == [
        "p.pb:3: placeholder {date.today()} calls code, which is not built yet: "
        "the model sees it as written"
    ]


def test_callable_name_is_camel_case_and_title_is_kept() -> None:
    text = (
        "# Restaurant consultant\n## Redesign menu($dish)\n### Steps\n- Redesign $dish\n"
        "## extract_facts(text)\n### Steps\n- Extract\n"
    )
    agent = parse_text(text).agents[0]
    assert (agent.name, agent.title) == ("RestaurantConsultant", "Restaurant consultant")
    redesign = agent.playbooks[0]
    assert (redesign.name, redesign.title) == ("RedesignMenu", "Redesign menu")
    assert agent.playbook("RedesignMenu") is redesign
    assert agent.playbook("Redesign menu") is redesign
    assert agent.playbooks[1].name == "extract_facts"
    text = format_structure(parse_text("# A\n## Redesign menu\n### Steps\n- x\n"))
    assert 'playbook RedesignMenu() "Redesign menu"' in text


@pytest.mark.parametrize(
    ("heading", "message"),
    [
        ("## Main(", "'(' without a closing ')'"),
        ("## Main)", "')' without '('"),
        ("## F($a $b)", "parameter '$a $b' is not a name"),
        ("## F($a, $a)", "duplicate parameter $a"),
        ("## F($a, , $b)", "an empty parameter is not a name"),
        ("## F($a) extra", "unexpected 'extra' after the parameters"),
        ("## F($a) ->", "unexpected '->' after the parameters"),
        ("## 123", "does not give a name to call"),
    ],
)
def test_malformed_headings_are_errors_with_file_and_line(heading: str, message: str) -> None:
    with pytest.raises(ProgramError) as caught:
        parse_text(f"# A\nAn agent.\n\n{heading}\n### Steps\n- x\n", "h.pb")
    assert (caught.value.path, caught.value.line) == ("h.pb", 4)
    assert message in caught.value.message


def test_unknown_section_is_an_error() -> None:
    with pytest.raises(ProgramError) as caught:
        parse_text("# A\n## Main\n### Stepz\n- x\n", "s.pb")
    assert str(caught.value) == (
        "s.pb:3: unknown section '### Stepz' in playbook 'Main' "
        "(expected ### Triggers, ### Steps or ### Notes)"
    )


def test_good_headings_still_parse() -> None:
    text = "# A\n## F($a: int, $b='x, y', *$rest) -> list[int]\n### Steps\n- x\n## G()\n"
    f, g = parse_text(text).agents[0].playbooks
    assert (f.params, f.returns) == (["a", "b", "rest"], "list[int]")
    assert (g.name, g.params) == ("G", [])


def test_sections_written_with_two_hashes_are_read_with_a_warning() -> None:
    text = "# A\n## Main\n## Triggers\n- When program starts\n## Steps\n- Greet\n## Greet\n"
    program = parse_text(text, "v.pb")
    main = program.agents[0].playbook("Main")
    assert main.begin and [s.text for s in main.steps] == ["Greet"]
    assert [pb.name for pb in program.agents[0].playbooks] == ["Main", "Greet"]
    assert program.warnings[0].startswith("v.pb:3: '## Triggers' read as '### Triggers'")


# every begin spelling of the reference's 72 programs, and its compiled form
@pytest.mark.parametrize(
    "trigger",
    [*REFERENCE_BEGIN_SPELLINGS, "T1:BGN", "T1:BGN At the beginning"],
)
def test_begin_spellings(trigger: str) -> None:
    program = parse_text(f"# A\n## Later\n### Steps\n- x\n## P\n### Triggers\n- {trigger}\n")
    agent = program.agents[0]
    assert agent.playbook("P").begin and agent.entry is agent.playbook("P")


def test_all_begin_playbooks_and_entry() -> None:
    text = (
        "# A\n## Helper\n### Trigger\n- When the user asks for help\n"
        "## One\n### Triggers\n- At the beginning\n## Two\n### Triggers\n- When program begins\n"
    )
    agent = parse_text(text).agents[0]
    assert [pb.name for pb in agent.begin_playbooks] == ["One", "Two"]
    assert agent.entry.name == "One" and not agent.playbook("Helper").begin


NOT_BUILT_OPTIONAL = (
    "optional_attendees is not built yet: only the attendees the host names "
    "(or required_attendees) are invited"
)


def test_check_prints_warnings_on_stderr_and_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from playbooks.cli import main

    path = tmp_path / "w.pb"
    path.write_text("# A\n## Meet\noptional_attendees: [B]\n### Steps\n- Talk\n")
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "playbook Meet()" in out and "warning:" not in out
    assert err == f"warning: {path}:3: optional_attendees: {NOT_BUILT_OPTIONAL}\n"
    assert main(["check", "--json", str(path)]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert err == ""
    assert data["warnings"] == [f"{path}:3: optional_attendees: {NOT_BUILT_OPTIONAL}"]
    [agent] = data["agents"]
    [meet] = agent["playbooks"]
    assert {"name", "kind", "triggers", "steps"} <= set(meet)
    assert meet["metadata"] == {"optional_attendees": ["B"]}
    path.write_text("# A\n## Main(\n")
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}:2: ")


def test_thematic_breaks_separate_agents_and_duplicate_agents_are_errors() -> None:
    text = "# A\n## Main\n### Steps\n- Go\n\n---\n\n# B\nHelps.\n\n---\n"
    program = parse_text(text)
    assert [s.text for s in program.agents[0].playbooks[0].steps] == ["Go"]
    assert program.agents[1].description == "Helps."
    with pytest.raises(ProgramError) as caught:
        parse_text("# Host\n## Main\n# Host\n", "d.pb")
    assert str(caught.value) == "d.pb:3: duplicate agent name 'Host' (first defined at line 1)"


def test_unclosed_html_comment_is_an_error() -> None:
    with pytest.raises(ProgramError) as caught:
        parse_text("# A\n## Main\n### Steps\n- a\n<!-- hide\n- b\n", "c.pb")
    assert str(caught.value) == "c.pb:5: HTML comment '<!--' is never closed"
