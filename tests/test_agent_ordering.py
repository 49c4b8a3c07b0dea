"""Two agents started together: their journal keys do not depend on interleaving.

The same program runs twice in-process with the real runtime and a real
filesystem log; only the model (the LLM vendor, the one thing mocked) differs:
in one run Alpha's responses stream quickly and Beta's slowly, in the other
the opposite (more event-loop turns between chunks, no clock involved). The
records land in a different order, and the journal keys (frame, turn,
statement, sequence, callee) and message ids are the same.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

from playbooks.agents.agent import Agent
from playbooks.agents.human import Human
from playbooks.agents.runtime import AgentRuntime
from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider
from playbooks.language import load_program

PROGRAM = """\
# Alpha
## Main
### Triggers
- When program begins
### Steps
- Greet, tell Beta hello and wait for its answer

# Beta
## Main
### Triggers
- When program begins
### Steps
- Greet, wait for Alpha and answer it
"""
RESPONSES = {
    "Alpha": '```python\nawait Step("Main:01")\nawait Say("user", "alpha here")\n'
    'await Say("Beta", "hello Beta")\n$answer = await Yld("Beta")\n'
    'await Say("user", f"alpha got {$answer}")\nawait Return($answer)\n```\n',
    "Beta": '```python\nawait Step("Main:01")\nawait Say("user", "beta here")\n'
    '$m = await Yld("agent 1000")\nawait Say("agent 1000", f"hi Alpha ({$m})")\n'
    "await Return()\n```\n",
}


class Skewed:
    """Streams each agent's response with ``turns[agent]`` event-loop turns per chunk."""

    def __init__(self, turns: dict[str, int]) -> None:
        self.turns = turns

    async def stream(self, request) -> AsyncIterator[str]:  # noqa: ANN001
        text = RESPONSES[request.agent]
        for start in range(0, len(text), 6):
            for _ in range(self.turns[request.agent]):
                await asyncio.sleep(0)
            yield text[start : start + 6]


def run(tmp: Path, turns: dict[str, int]) -> tuple[list[tuple], list[str]]:
    tmp.mkdir()
    path = tmp / "pair.pb"
    path.write_text(PROGRAM)
    program = load_program(str(path))
    provider = FilesystemCheckpointProvider(tmp / "ckpt")
    manager = CheckpointManager("pair", provider)
    manager.open()
    out = io.StringIO()
    human = Human(json_mode=True, out=out)
    try:
        runtime = AgentRuntime(
            program,
            lambda spec: Agent.load(spec, str(path)).python_globals,
            llm=Skewed(turns),
            conversation=human,
            manager=manager,
        )
        asyncio.run(runtime.run())
    finally:
        human.detach()
        manager.close()
    log = provider.open_log("pair", create=False)
    records = [r for r in log.load().records if r["k"] == "await"]
    log.close()
    keys = [(r["f"], r["t"], r["i"], str(r["q"]), r.get("c")) for r in records]
    said = [line for line in out.getvalue().splitlines() if '"say"' in line]
    return keys, said


def test_journal_keys_do_not_depend_on_interleaving(tmp_path: Path) -> None:
    alpha_first, said_a = run(tmp_path / "a", {"Alpha": 0, "Beta": 5})
    beta_first, said_b = run(tmp_path / "b", {"Alpha": 5, "Beta": 0})
    assert alpha_first != beta_first  # the records really came in another order
    assert said_a != said_b
    assert sorted(alpha_first) == sorted(beta_first)
    frames = {k[0] for k in alpha_first}
    assert frames == {"main", "agent1001", "main#1", "agent1001#1"}  # then they serve
    assert ("main", 0, 2, "0", "Say") in alpha_first  # Alpha's message id: main/0.2.0
    assert ("agent1001", 0, 3, "0", "Say") in alpha_first


def test_a_resent_message_is_dropped_at_the_receiver(tmp_path: Path) -> None:
    """A message id is the sender's call id: the same id again (a sender resumed
    before its Say was recorded) is not queued twice, nor after it was consumed."""
    path = tmp_path / "pair.pb"
    path.write_text(PROGRAM)
    program = load_program(str(path))
    human = Human(json_mode=True, out=io.StringIO())
    try:
        runtime = AgentRuntime(
            program,
            lambda spec: Agent.load(spec, str(path)).python_globals,
            llm=Skewed({}),
            conversation=human,
        )
        beta = runtime.member(1001)
        runtime.send(id="main/0.2.0", sender=1000, to=1001, text="hello Beta")
        runtime.send(id="main/0.2.0", sender=1000, to=1001, text="hello Beta")
        assert [m["id"] for m in beta.inbox] == ["main/0.2.0"]
        got = asyncio.run(runtime.receive(receiver=1001, source=1000))
        assert got["text"] == "hello Beta" and got["sender"] == "agent 1000"
        runtime.send(id="main/0.2.0", sender=1000, to=1001, text="hello Beta")
        assert beta.inbox == []
        assert runtime.address("agent Beta") == ("agent", 1001, "Beta")
        assert runtime.address("1000") == ("agent", 1000, "Alpha")
        assert runtime.address("user")[0] == "person"
    finally:
        human.detach()


def test_two_agents_waiting_for_each_other_are_told_no_message_can_come(tmp_path: Path) -> None:
    """Each waits for the other and nothing is on its way: both waits end with an
    error the model is shown, instead of the program hanging."""
    from playbooks.agents.runtime import NoMessageCanCome

    path = tmp_path / "pair.pb"
    path.write_text(PROGRAM)
    human = Human(json_mode=True, out=io.StringIO())
    try:
        runtime = AgentRuntime(
            load_program(str(path)),
            lambda spec: Agent.load(spec, str(path)).python_globals,
            llm=Skewed({}),
            conversation=human,
        )

        async def both() -> list:
            return await asyncio.gather(
                runtime.receive(receiver=1000, source=1001),
                runtime.receive(receiver=1001, source=1000),
                return_exceptions=True,
            )

        first, second = asyncio.run(both())
        assert isinstance(first, NoMessageCanCome) and isinstance(second, NoMessageCanCome)
        assert "every agent is waiting" in str(first) and "Beta (agent 1001)" in str(first)
    finally:
        human.detach()
