"""Chat messages for one LLM turn of a Markdown playbook (DESIGN §10).

The output must be a pure function of the input: replay files and the test
server recognise a request by its messages, so no timestamps or random ids.

Stable parts come first so provider prompt caching works: a system message
that is the same for every call of every program, then the agent and its
playbooks, then the playbook being run with its step ids. What changes (where
execution stands, variables, what happened since the model's last turn) comes
after it, one user message per turn; earlier turns stay as they were sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PLAYBOOK_MARKER = "Playbook being run: "
CONTINUE_PROMPT = (
    "Your previous reply was cut off after the text above. "
    "Continue exactly where it stopped, without repeating anything."
)
_VALUE_LIMIT = 1000
#: Characters of earlier turns kept whole; older turns are compacted.
HISTORY_BUDGET = 40_000
_COMPACT_OUTCOME = 300

SYSTEM_PROMPT = """\
# How you work

You are the mind of an agent in the Playbooks runtime. A program is written in
Markdown: `# Name` is an agent, `## Name` a playbook (like a function), and its
`### Steps` are numbered instructions in plain language (`01`, `02`, nested
`02.01`). You carry out a playbook by writing Python code. The runtime runs
your code one top-level statement at a time while you are still writing it, so
write it in the order things must happen: a statement runs as soon as it is
complete, and what it did cannot be taken back.

Each turn you are shown the agent, the playbooks you can call, the playbook
being run with its step ids, where execution stands, the variables, and
everything that happened since your last turn (messages, the person's replies
in full, and whether your code ran to its end or failed).

## What to write

Reply with exactly one ```python block and nothing else. Comments are welcome
for your reasoning (`# recap: ...`, `# plan: ...`, `# think: ...`, and the
`# trig? ...` / `# yld? ...` checks are all fine); keep them short.

## Built-ins (always await them)

- `await Step("Main:02.01")` marks that you are doing step 02.01 of Main. Mark
  every step before its code, with the id exactly as listed. A step code after
  the id is accepted too: `await Step("Main:02.01:QUE")`.
- `await Say("user", text)` shows `text` to the person. Everything the person
  should read goes through Say; plain `print` is not shown.
- `$answer = await Yld("user")` waits for the person's reply and returns it as
  a string. `await WaitForMessage("user")` is the same. End your code after
  waiting unless the next steps need nothing but the reply: the next turn
  shows you the reply.
- `await Yld("call")` is accepted and returns at once: an awaited call has
  already finished and its result is in your variable.
  `await Yld("exit")` ends the whole program, like `await EndProgram()`.
- `await Return(value)` ends this playbook and gives `value` to its caller.
  Nothing after it runs. Return when the playbook's steps are done.
- `$x = await Var("x", value)` sets a variable by name;
  `await Artifact(name, summary, content)` keeps a long text (a report, a
  document) under a name, with a one-line summary.
- `await EndProgram()` ends the whole program.
- Call another playbook with `$result = await Name(arg1, key=value)` using its
  callable name exactly as listed; Markdown and Python playbooks are called the
  same way, always with await.

## Variables

`$name` is a variable of the agent's state: set it with `$name = value`, read
it anywhere, also inside f-strings: f"Hello {$name}". The arguments of the
playbook being run are variables too (`$order_id`). Names without `$` are plain
local Python names for the current code only. Values must be plain data
(strings, numbers, lists, dicts, booleans, None).

## Rules

1. Only call the built-ins above and the playbooks listed as callable. Do not
   make up playbooks; if none fits, do the step yourself in plain Python or say
   so to the person.
2. Plain Python is fine: if/elif/else, for and while loops, try/except,
   comprehensions, f-strings, arithmetic. `await` works inside comprehensions
   and f-strings.
3. Do not write `async for` or `async with`; they are refused before they run.
   Await each call instead, e.g. in a plain `for` loop.
4. Imports are limited to a few standard modules (math, json, re, datetime
   and the like); never touch files, the network or the environment.
5. Stop writing after `Yld(...)` or `Return(...)` unless the following code
   does not depend on what they bring.
6. If a step is conditional, test the condition in code or decide it from what
   you know; mark the step either way.
7. When a playbook's trigger matches what just happened (a trigger says
   "when the user asks about X", and they did), call that playbook.
8. If your code failed, you are told the line and the error and that nothing
   after it ran. Do not repeat what already ran (its messages were delivered);
   fix the cause and continue from the failed statement.
9. When told "Main:02 was executed; continue from there", finish anything left
   of that step, then go on with the step after it (e.g. Main:03, or the next
   nested step such as Main:02.02).

## Examples

Steps: 01 ask the person's name, 02 greet them by name, 03 return the name.

First turn:
```python
# plan: ask for the name and wait for it
await Step("Greet:01")
await Say("user", "Hello! What is your name?")
$name = await Yld("user")
```

Next turn (Position: Greet:01 was executed; the person replied "I'm Ada"):
```python
# recap: the person said their name is Ada
await Step("Greet:02")
$name = "Ada"
await Say("user", f"Nice to meet you, {$name}!")
await Step("Greet:03")
await Return($name)
```

A condition and a call. Steps: 01 get the order total with GetTotal($order),
02 if it is over 100, apply a discount with Discount($order), 03 tell the user
the total.
```python
await Step("Checkout:01")
$total = await GetTotal($order)
await Step("Checkout:02")
if $total > 100:
    $total = await Discount($order)
await Step("Checkout:03")
await Say("user", f"Your total is {$total:.2f}.")
await Return($total)
```

A loop that talks with the person. Steps: 01 while the person wants to go on,
01.01 ask for a number, 01.02 tell them its square; 02 say goodbye.
```python
await Step("Squares:01")
$going = True
while $going:
    await Step("Squares:01.01")
    await Say("user", "Give me a number, or say stop.")
    $reply = await Yld("user")
    if $reply.strip().lower() == "stop":
        $going = False
    else:
        await Step("Squares:01.02")
        $n = float($reply)
        await Say("user", f"{$n} squared is {$n * $n}.")
await Step("Squares:02")
await Say("user", "Goodbye!")
await Return()
```

A call for each item, with await inside a comprehension:
```python
await Step("Report:01")
$summaries = [await Summarize(doc) for doc in $documents]
```

Fixing an error. You were told: "Your code failed at line 4: ValueError:
could not convert string to float: 'ten'. Nothing after it ran."
```python
# think: the person wrote the number in words; ask again instead of guessing
await Step("Squares:01.01")
await Say("user", "Please write the number with digits, like 10.")
$reply = await Yld("user")
```

A trigger. The callable list shows `Refund($order)` with "Triggers: When the
user asks for a refund", and the person just wrote "I want my money back":
```python
# trig? yes: the person asks for a refund
$result = await Refund($order)
await Say("user", $result)
```

Ending the program when the person is done:
```python
await Step("Main:04")
await Say("user", "Thanks for stopping by. Bye!")
await EndProgram()
```
"""

__all__ = [
    "CONTINUE_PROMPT",
    "HISTORY_BUDGET",
    "PLAYBOOK_MARKER",
    "SYSTEM_PROMPT",
    "PlaybookInfo",
    "TurnContext",
    "build_messages",
    "continuation_messages",
    "parse_request",
    "render_state",
]


@dataclass
class PlaybookInfo:
    """A playbook as the model sees it in the list of those it may call."""

    name: str
    signature: str
    description: str = ""
    triggers: list[str] = field(default_factory=list)
    kind: str = "markdown"


@dataclass
class TurnContext:
    """Everything one turn of a playbook tells the model.

    ``steps`` are (full id, text) pairs such as ("Main:02.01", "Greet"),
    ``events`` what was said and replied since the model's last turn (dicts
    with ``kind`` "say" or "reply"), and ``earlier`` the state text each
    earlier turn was sent with, so those messages are rebuilt byte for byte.
    """

    agent_name: str
    agent_description: str
    playbook_name: str
    playbook_source: str
    playbooks: list[PlaybookInfo | str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    call_stack: list[str] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)
    observation: str = ""
    signature: str = ""
    description: str = ""
    triggers: list[str] = field(default_factory=list)
    notes: str = ""
    steps: list[tuple[str, str]] = field(default_factory=list)
    last_step: str = ""
    events: list[dict] = field(default_factory=list)
    earlier: list[str] = field(default_factory=list)
    #: The other agents of the program, one line each ("Accountant (agent 1001)"):
    #: empty when the agent is alone, and then the prompt says nothing of them.
    agents: list[str] = field(default_factory=list)


def _short(value: str) -> str:
    """Keep the prompt bounded however large a variable grows."""
    if len(value) <= _VALUE_LIMIT:
        return value
    return value[: _VALUE_LIMIT - 3] + "..."


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def _callable(item: PlaybookInfo | str) -> str:
    if isinstance(item, str):
        return f"- {item}"
    lines = [f"- `{item.signature}`" + (" (Python)" if item.kind == "python" else "")]
    description = item.description.strip()
    if description:
        lines.append(_indent(description, "    "))
    if item.triggers:
        lines.append("    Triggers: " + "; ".join(item.triggers))
    return "\n".join(lines)


def _stable(ctx: TurnContext) -> str:
    """The agent, its playbooks and the playbook being run: the same every turn."""
    description = ctx.agent_description.strip()
    parts = [f"Agent: {ctx.agent_name}" + (f"\n{description}" if description else "")]
    if ctx.agents:
        parts.append(
            'Other agents of this program (send with `await Say("agent 1001", text)`, '
            'wait for an answer with `$answer = await Yld("agent 1001")`; a name works '
            "too; call their public playbooks as `await Agent.Playbook(...)`; "
            '`$id = await CreateAgent("Type")` starts a new agent of a declared type):\n'
            + "\n".join(f"- {line}" for line in ctx.agents)
            + "\nMeetings: a playbook marked as a meeting is started by its host with "
            '`await Name(topic="...", attendees=["agent 1001"])` and runs with '
            '`$meeting_id` set ("meeting 100"); in it `await Say($meeting_id, text)` '
            "reaches every attendee, `$said = await Yld($meeting_id)` waits for the next "
            "meeting message, `await MeetingState($meeting_id, key=value)` writes and returns "
            "the meeting's shared state; the meeting ends when the host's playbook returns."
        )
    if ctx.playbooks:
        listing = "\n".join(_callable(item) for item in ctx.playbooks)
        parts.append(
            "Playbooks you can call (`await Name(...)`; a trigger says when to call one "
            f"without being told):\n{listing}"
        )
    run = [f"{PLAYBOOK_MARKER}{ctx.playbook_name}"]
    if ctx.signature:
        run.append(f"Signature: {ctx.signature}")
    if ctx.description.strip():
        run.append(f"Description:\n{ctx.description.strip()}")
    if ctx.triggers:
        run.append("Triggers:\n" + "\n".join(f"- {t}" for t in ctx.triggers))
    if ctx.steps:
        lines = []
        for step_id, text in ctx.steps:
            depth = step_id.rsplit(":", 1)[-1].count(".")
            lines.append(f"{'  ' * depth}- {step_id} {text}")
        run.append(
            'Steps (write each id exactly as shown: await Step("'
            + ctx.steps[0][0]
            + '")):\n'
            + "\n".join(lines)
        )
    else:
        run.append(
            "This playbook has no numbered steps: do what its description says.\n"
            f"Source:\n{ctx.playbook_source.strip()}"
        )
    if ctx.notes.strip():
        run.append(f"Notes:\n{ctx.notes.strip()}")
    parts.append("\n".join(run))
    return "\n\n".join(parts)


def _event(event: dict) -> str:
    text = str(event.get("text", ""))
    if event.get("kind") == "reply":
        return f"- {event.get('source') or 'user'} replied: {text}"
    if event.get("kind") == "message":
        return f"- {event.get('agent', '?')} sent you a message: {text}"
    return f"- {event.get('agent', '?')} said to {event.get('to', '?')}: {text}"


def render_state(ctx: TurnContext) -> str:
    """The part of a turn that changes: position, variables, stack, new events."""
    if ctx.last_step:
        position = f"Position: {ctx.last_step} was executed; continue from there."
    elif ctx.history:
        position = "Position: no step was marked yet; start with the first step."
    elif ctx.steps:
        position = f"Position: starting {ctx.playbook_name} at {ctx.steps[0][0]}."
    else:
        position = f"Position: starting {ctx.playbook_name}."
    parts = [position]
    if ctx.args:
        parts.append(
            "Arguments of this call:\n"
            + "\n".join(f"- {k} = {_short(v)}" for k, v in ctx.args.items())
        )
    # Sorted so that equal dicts built in a different order give equal prompts.
    shown = [f"- {k} = {_short(ctx.variables[k])}" for k in sorted(ctx.variables)]
    parts.append("Variables:\n" + ("\n".join(shown) if shown else "- none set yet"))
    if ctx.call_stack:
        parts.append("Call stack: " + " > ".join(ctx.call_stack))
    if ctx.events:
        heading = "Since your last turn:" if ctx.history else "Conversation so far:"
        parts.append(heading + "\n" + "\n".join(_event(e) for e in ctx.events))
    parts.append("Write the code for the next steps.")
    return "\n\n".join(parts)


def _compact_code(code: str) -> str:
    steps = []
    for line in code.splitlines():
        start = line.find('Step("')
        if start >= 0:
            end = line.find('"', start + 6)
            if end > 0:
                steps.append(line[start + 6 : end])
    marked = ", ".join(steps) if steps else "none"
    return f"# (code of an earlier turn, left out to save space; steps marked: {marked})"


def _compact_text(text: str) -> str:
    first = text.strip().split("\n", 1)[0]
    if len(first) > _COMPACT_OUTCOME:
        first = first[: _COMPACT_OUTCOME - 3] + "..."
    return f"{first}\n(details of this earlier turn left out to save space)"


def build_messages(ctx: TurnContext, *, budget: int = HISTORY_BUDGET) -> list[dict]:
    """The full conversation for the next turn: earlier turns as the assistant
    and user messages they were, compacted from the oldest when over budget."""
    turns = len(ctx.history)

    def state(k: int) -> str:
        if k == turns:
            return render_state(ctx)
        return ctx.earlier[k] if k < len(ctx.earlier) else ""

    def joined(*texts: str) -> str:
        return "\n\n".join(t.strip() for t in texts if t.strip())

    pairs: list[tuple[str, str]] = []
    for k, (response, after) in enumerate(ctx.history):
        observation = ctx.observation if k == turns - 1 else ""
        pairs.append((response, joined(after, observation, state(k + 1))))
    first_state = state(0)
    if not ctx.history and ctx.observation:
        first_state = joined(ctx.observation, first_state)
    # Keep the newest turns whole; the latest user message is never cut.
    used = len(first_state)
    keep = turns
    for k in range(turns - 1, -1, -1):
        used += len(pairs[k][0]) + len(pairs[k][1])
        if used > budget and k < turns - 1:
            break
        keep = k
    messages: list[dict] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": joined(
                _stable(ctx), first_state if keep == 0 else _compact_text(first_state)
            ),
        },
    ]
    for k, (response, user) in enumerate(pairs):
        if k < keep:
            response, user = _compact_code(response), _compact_text(user)
        messages.append({"role": "assistant", "content": response})
        messages.append({"role": "user", "content": user})
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
            for line in _text(message).split("\n"):
                if line.startswith(PLAYBOOK_MARKER):
                    playbook = line[len(PLAYBOOK_MARKER) :].strip()
                    break
            break
    if not playbook:
        raise ValueError(f"no line starting with {PLAYBOOK_MARKER!r} in the first user message")
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
