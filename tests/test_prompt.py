"""What one turn's request tells the model (DESIGN §10), seen on the wire:
the program runs for real and litellm sends each request over HTTP to the
scripted server, which keeps the messages of every request."""

from __future__ import annotations

import os

import pytest
from llm_server import ScriptedLLMServer, ScriptResponder

from playbooks.cli import main
from playbooks.llm.prompts import SYSTEM_PROMPT, TurnContext, build_messages

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

PROGRAM = """\
# Host
Listens to guests' stories.

## Main
### Triggers
- At the beginning

### Steps
- Ask the user for a story and wait for it
  - Thank them for it
- Summarize the story with Summarize
- Return the summary

## Summarize($text) -> str
Gives the first sentence of a text.

### Triggers
- When the user asks for a summary

### Steps
- Return the first sentence of $text
"""

STORY = ("Once upon a time a fox learned to read. " * 15)[:600]
SCRIPT = {
    "Main": [
        # The reply is awaited but not stored: only the prompt can carry it.
        '```python\nawait Step("Main:01")\nawait Say("user", "Tell me a story.")\n'
        'await Yld("user")\n```',
        '```python\nawait Step("Main:01.01")\n$secret = "zebra-4417"\n'
        'await Say("user", "Thank you!")\n```',
        '```python\nawait Step("Main:02")\n$s = await Summarize("Once upon a time. The end.")\n'
        "await Return($s)\n```",
    ],
    "Summarize": ['```python\nawait Step("Summarize:01")\nawait Return("Once upon a time.")\n```'],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """One real run of the program; every test reads the requests it made."""
    tmp_path = tmp_path_factory.mktemp("prompt")
    program = tmp_path / "story.pb"
    program.write_text(PROGRAM)
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        ScriptedLLMServer(ScriptResponder(SCRIPT)) as server,
    ):
        for key in list(os.environ):
            if key.startswith("PLAYBOOKS_"):
                monkeypatch.delenv(key)
        monkeypatch.chdir(tmp_path)
        config = tmp_path / "playbooks.toml"
        config.write_text(
            f'max_llm_calls = 10\n[model]\nname = "openai/test-model"\napi_base = "{server.url}"\n'
        )
        code = main(["run", str(program), "--config", str(config), "--json", "--message", STORY])
        assert code == 0
        yield [request["messages"] for request in server.requests]


def last_user(messages: list[dict]) -> str:
    return [m for m in messages if m["role"] == "user"][-1]["content"]


def test_the_request_shows_step_ids_callables_with_triggers_and_the_position(run) -> None:
    first = run[0]
    assert [m["role"] for m in first] == ["system", "user"]
    stable = first[1]["content"]
    for step in ("- Main:01 Ask the user", "  - Main:01.01 Thank them", "- Main:02 Summarize"):
        assert step in stable
    assert 'await Step("Main:01")' in stable  # the form the model must write
    assert "`Summarize($text) -> str`" in stable
    assert "Triggers: When the user asks for a summary" in stable
    assert "Gives the first sentence of a text." in stable
    assert "Position: starting Main at Main:01." in stable
    assert "Arguments" not in stable  # Main takes none: no "(none)" line either
    assert "Position: Main:01 was executed; continue from there." in last_user(run[1])
    assert "Position: Main:01.01 was executed; continue from there." in last_user(run[2])


def test_a_long_reply_not_stored_in_a_variable_reaches_the_next_turn_whole(run) -> None:
    assert len(STORY) == 600
    turn1 = last_user(run[1])
    assert f"- user replied: {STORY}\n" in turn1 + "\n"
    assert "- Host said to user: Tell me a story." in turn1
    assert STORY not in last_user(run[2])  # shown once: only since the model's last turn


def test_the_system_message_is_the_same_every_turn_and_holds_no_values(run) -> None:
    main_requests = run[:3]
    assert all(r[0] == {"role": "system", "content": SYSTEM_PROMPT} for r in run)
    for value in ("zebra-4417", STORY[:40], "Tell me a story"):
        assert value not in SYSTEM_PROMPT
    # Earlier turns are sent again byte for byte, so the whole prefix is cacheable.
    assert main_requests[1][:2] == main_requests[0][:2]
    assert main_requests[2][:4] == main_requests[1][:4]
    assert "$secret = 'zebra-4417'" in last_user(main_requests[2])


def test_a_callee_sees_its_arguments_and_the_recent_conversation(run) -> None:
    callee = run[3]
    text = callee[1]["content"]
    assert "Playbook being run: Summarize" in text
    assert "Arguments of this call:\n- $text = 'Once upon a time. The end.'" in text
    assert "Call stack: Main > Summarize" in text
    assert "Conversation so far:" in text and "- Host said to user: Thank you!" in text


def test_old_turns_are_compacted_within_the_budget_and_the_newest_kept_whole() -> None:
    history = [(f'await Step("Main:0{k}")\n' + "x = 1\n" * 400, f"outcome {k}") for k in range(6)]
    ctx = TurnContext("Host", "", "Main", "## Main", history=history, steps=[("Main:01", "a")])
    messages = build_messages(ctx, budget=6000)
    assistants = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len(assistants) == 6  # the turn count stays what it was
    assert assistants[-1] == history[-1][0]
    assert (
        assistants[0].startswith("# (code of an earlier turn, left out")
        and "Main:00" in assistants[0]
    )
    assert sum(len(m["content"]) for m in messages[2:]) < 6000 + 3000
