"""Chat messages for one LLM turn of a Markdown playbook.

The output must be a pure function of the input: replay files and the test
server recognise a request by its messages, so no timestamps or random ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PLAYBOOK_MARKER = "Playbook: "
CONTINUE_PROMPT = (
    "Your previous reply was cut off after the text above. "
    "Continue exactly where it stopped, without repeating anything."
)
_VALUE_LIMIT = 200

SYSTEM_PROMPT = """\
You are the mind of an agent in the Playbooks runtime. You carry out a playbook
(a list of natural-language steps) by writing Python code. The runtime executes
your code statement by statement while you stream it, so write it in order.

Reply with exactly one ```python block and nothing else. Inside it:
- Before each step, mark it: `await Step("Main:01")` (playbook name, step id).
- `await Say("user", text)` shows text to the person.
- `$x = await Yld("user")` waits for the person's reply and stores it in `$x`.
  Usually end the block after a Yld: your next turn shows the reply.
- `$name` is a playbook variable; assign with `$name = value` and read it
  anywhere, also inside f-strings: f"Hello {$name}". `await Var("name", value)`
  sets one explicitly.
- Call another playbook with `$result = await Name(arg1, arg2)`.
- `await Artifact(name, summary, content)` saves a longer piece of content.
- `await Return(value)` ends this playbook and hands `value` to its caller.
- `await EndProgram()` ends the whole program.
- Plain Python (if/for/while, f-strings, arithmetic) is fine. Use comments for
  your reasoning; do not import modules or touch files.
- Only call the playbooks listed as available and the functions above.

Example, for a playbook `Main` whose steps are: 01 ask the user's name,
02 greet them, 03 return the name:

```python
await Step("Main:01")
await Say("user", "Hi! What is your name?")
$name = await Yld("user")
```

and on the next turn, after the person answered:

```python
await Step("Main:02")
await Say("user", f"Nice to meet you, {$name}!")
await Step("Main:03")
await Return($name)
```
"""


@dataclass
class TurnContext:
    """Everything one turn of a playbook tells the model."""

    agent_name: str
    agent_description: str
    playbook_name: str
    playbook_source: str
    playbooks: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    call_stack: list[str] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)
    observation: str = ""


def _short(value: str) -> str:
    """Keep the prompt bounded however large a variable grows."""
    if len(value) <= _VALUE_LIMIT:
        return value
    return value[: _VALUE_LIMIT - 3] + "..."


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items) if items else "(none)"


def _first_message(ctx: TurnContext) -> str:
    description = ctx.agent_description.strip()
    agent = f"{ctx.agent_name}\n{description}" if description else ctx.agent_name
    args = [f"{name} = {_short(value)}" for name, value in ctx.args.items()]
    # Sorted so that equal dicts built in a different order give equal prompts.
    variables = [f"{name} = {_short(ctx.variables[name])}" for name in sorted(ctx.variables)]
    stack = " > ".join(ctx.call_stack) if ctx.call_stack else "(empty)"
    parts = [
        f"{PLAYBOOK_MARKER}{ctx.playbook_name}",
        f"Agent: {agent}",
        f"Playbook source:\n{ctx.playbook_source.strip()}",
        f"Available playbooks:\n{_bullets(list(ctx.playbooks))}",
        f"Arguments:\n{_bullets(args)}",
        f"Variables:\n{_bullets(variables)}",
        f"Call stack: {stack}",
    ]
    if ctx.observation and not ctx.history:
        parts.append(f"What happened so far:\n{ctx.observation}")
    parts.append("Write the code for the next steps.")
    return "\n\n".join(parts)


def _after_turn(after: str, observation: str) -> str:
    parts = [text for text in (after.strip(), observation.strip()) if text]
    parts.append("Continue.")
    return "\n\n".join(parts)


def build_messages(ctx: TurnContext) -> list[dict]:
    """The full conversation for the next turn, earlier turns included so the
    model sees the code it already wrote (DESIGN §7)."""
    messages: list[dict] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": _first_message(ctx)},
    ]
    last = len(ctx.history) - 1
    for index, (response, after) in enumerate(ctx.history):
        observation = ctx.observation if index == last else ""
        messages.append({"role": "assistant", "content": response})
        messages.append({"role": "user", "content": _after_turn(after, observation)})
    return messages


def continuation_messages(messages: list[dict], partial: str) -> list[dict]:
    """Ask for the rest of a reply that a crash cut off; the partial text is
    sent verbatim so the model continues after its last byte (DESIGN §5.4)."""
    return [
        *messages,
        {"role": "assistant", "content": partial},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def parse_request(messages: list[dict]) -> tuple[str, int, str | None]:
    """Recover (playbook, turn index, partial) from a request's messages, so a
    scripted server can answer without sharing state with the client."""
    playbook = ""
    for message in messages:
        if message.get("role") == "user":
            text = _text(message)
            if text.startswith(PLAYBOOK_MARKER):
                playbook = text[len(PLAYBOOK_MARKER) :].split("\n", 1)[0].strip()
            break
    if not playbook:
        raise ValueError(f"no user message starting with {PLAYBOOK_MARKER!r}")
    partial: str | None = None
    body = messages
    if (
        len(messages) >= 2
        and messages[-1].get("role") == "user"
        and _text(messages[-1]) == CONTINUE_PROMPT
        and messages[-2].get("role") == "assistant"
    ):
        partial = _text(messages[-2])
        body = messages[:-2]
    turn = sum(1 for message in body if message.get("role") == "assistant")
    return playbook, turn, partial
