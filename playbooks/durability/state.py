"""The execution state as a pure function of the record stream.

Everything durable is a small JSON record appended to the execution's log;
:class:`ExecutionState` applies records in order. Recovery loads the newest
snapshot (``to_snapshot`` output) and applies the records after it, so the
state after a crash is exactly the state the records describe: nothing is
inferred from searching text.

Record kinds (``k``):
  exec   program identity           {"program", "hash", "created"}
  frame  a playbook call starts     {"f", "parent", "playbook", "kind", "args"}
  turn   an LLM turn (or code body) {"f", "t", "llm": bool}
  text   response text arrived      {"f", "t", "s", "done"?}
  await  an awaited call finished   {"f", "t", "i", "q", "ok"|"err", "ev"?}
  ckpt   a statement finished       {"f", "t", "i", "n", "stmt", "vars"?, "del"?, "ts", "pos"?}

An await record may carry ``ck``: the checkpoint of the frame's previous
statement, which changed no variable and was kept back to save a record. It
stands for that "ckpt" record followed by the await (see :func:`unfold`).
  obs    what a turn led to         {"f", "t", "s"}
  end    a playbook call returned   {"f", "ok"|"err"}
  status the execution ended        {"status", "message"}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from . import serialization

TRANSCRIPT_KEEP = 500
_NO_KEY = (-1, -1)  # below every (turn, statement) of a journal key


def unfold(record: dict) -> list[dict]:
    """The records one stored record stands for: an await carrying the checkpoint
    before it (``ck``) is that "ckpt" record, then the await without it."""
    carried = record.get("ck")
    if not isinstance(carried, dict):
        return [record]
    ckpt = {"k": "ckpt", "f": record.get("f"), "t": record.get("t"), **carried}
    return [ckpt, {k: v for k, v in record.items() if k != "ck"}]


def call_key(turn: int, statement: int, seq: int | str) -> str:
    return f"{turn}.{statement}.{seq}"


#: Frame ids of agents other than the first start with ``agent<ID>`` (then ``/``,
#: ``:`` or ``#``); every other frame belongs to the first agent, ``main``.
_OTHER_AGENT = re.compile(r"(agent\d+)(?:$|[/:#])")


def agent_of(frame_id: str) -> str:
    """The agent whose frame this is: ``main`` or ``agent1001`` (its frame-id prefix)."""
    found = _OTHER_AGENT.match(frame_id)
    return found.group(1) if found else "main"


@dataclass
class FrameState:
    id: str
    parent: str | None
    playbook: str
    kind: str
    args: dict[str, Any] = field(default_factory=dict)
    turn: int = 0
    texts: list[str] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)  # the execution-wide LLM call index of each turn
    cursor: int = 0
    pos: list[int] | None = None  # end line, end col, start line of the statement before the cursor
    defs: list[str] = field(default_factory=list)  # imports/defs/classes the code ran, in order
    journal: dict[str, dict] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    statement: str = ""
    step: str | None = None
    result: dict | None = None
    checkpoint: int = 0
    #: Not a field (not in snapshots): a bound on the (turn, statement) of every
    #: journal key, or None when unknown. It lets a checkpoint drop the journal
    #: without reading its keys, the usual case.
    jtop = None

    def text(self, turn: int) -> str:
        return self.texts[turn] if turn < len(self.texts) else ""

    def turn_done(self, turn: int) -> bool:
        return turn < len(self.done) and self.done[turn]

    def executed_code(self) -> str:
        """The code of this turn that has run: the response up to the cursor's line."""
        if self.pos is None:
            return "\n".join(self.executed)
        return "\n".join(self.text(self.turn).split("\n")[: self.pos[0]])


@dataclass
class ExecutionState:
    execution_id: str = ""
    program: dict[str, Any] = field(default_factory=dict)
    frames: dict[str, FrameState] = field(default_factory=dict)
    counter: int = 0
    llm_calls: int = 0
    consumed: int = 0
    status: str = "running"
    message: str = ""
    transcript: list[dict] = field(default_factory=list)
    #: The agent's variables, shared by its Markdown playbooks: kept apart from the
    #: frames so that a playbook that has returned leaves its changes behind.
    agent_vars: dict[str, Any] = field(default_factory=dict)
    last_frame: str | None = None
    timestamp: float = 0.0
    #: The state of the agents other than the first, by frame-id prefix (``agent1001``).
    other_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: LLM calls made by each agent other than the first (the first has the rest).
    agent_calls: dict[str, int] = field(default_factory=dict)
    #: Messages between agents sent and not yet consumed, by id, in sending order.
    mail: dict[str, dict] = field(default_factory=dict)
    #: Ids of the messages agents consumed (a resent one is recognised and dropped).
    received: list[str] = field(default_factory=list)
    #: Agents made by CreateAgent, in order: recreated on resume.
    created: list[dict] = field(default_factory=list)
    #: Meetings whose host's playbook returned (their number).
    closed: list[int] = field(default_factory=list)
    #: Each meeting's shared state (MeetingState), by meeting number.
    shared: dict[str, dict] = field(default_factory=dict)

    # -- applying records -------------------------------------------------
    def apply(self, r: dict) -> None:
        carried = r.get("ck")
        if isinstance(carried, dict):  # a checkpoint carried by an await record comes first
            if "vars" in carried or "del" in carried or "defs" in carried:
                self._on_ckpt({"f": r["f"], "t": r["t"], **carried})
                self._on_await(r)  # it reads only its own fields, not "ck"
            else:  # as written: it changed nothing, it only moves the frame on
                frame = self._frame(r)
                self._advance(frame, r["t"], carried)
                self._on_await(r, frame)
            return
        getattr(self, "_on_" + r["k"])(r)

    def _on_exec(self, r: dict) -> None:
        self.program = {k: v for k, v in r.items() if k != "k"}

    def _on_frame(self, r: dict) -> None:
        frame = self.frames[r["f"]] = FrameState(
            id=r["f"],
            parent=r.get("parent"),
            playbook=r.get("playbook", ""),
            kind=r.get("kind", "code"),
            args=r.get("args", {}),
        )
        frame.jtop = _NO_KEY

    def _frame(self, r: dict) -> FrameState:
        fid = r["f"]
        frame = self.frames.get(fid)
        if frame is None:  # the standalone executor writes no "frame" record
            frame = self.frames[fid] = FrameState(fid, None, "", "code")
            frame.jtop = _NO_KEY
        return frame

    def _on_turn(self, r: dict) -> None:
        frame = self._frame(r)
        t = r["t"]
        frame.turn = t
        frame.cursor = 0
        frame.pos = None
        frame.executed = []
        frame.journal, frame.jtop = {}, _NO_KEY
        while len(frame.texts) <= t:
            frame.texts.append("")
            frame.done.append(False)
        frame.texts[t] = ""
        frame.done[t] = False
        if r.get("llm"):
            while len(frame.calls) <= t:
                frame.calls.append(-1)
            owner = agent_of(frame.id)
            if owner == "main":
                frame.calls[t] = self.llm_calls - sum(self.agent_calls.values())
            else:
                frame.calls[t] = self.agent_calls.get(owner, 0)
                self.agent_calls[owner] = frame.calls[t] + 1
            self.llm_calls += 1

    def _on_text(self, r: dict) -> None:
        frame = self._frame(r)
        t = r["t"]
        while len(frame.texts) <= t:
            frame.texts.append("")
            frame.done.append(False)
        frame.texts[t] += r.get("s", "")
        if r.get("done"):
            frame.done[t] = True

    def _on_await(self, r: dict, frame: FrameState | None = None) -> None:
        if frame is None:
            frame = self._frame(r)
        t, i = r["t"], r["i"]
        key = f"{t}.{i}.{r['q']}"  # call_key, inlined: this runs for every await
        entry = {"ok": r["ok"]} if "ok" in r else {}
        if "err" in r:
            entry["err"] = r["err"]
        if "c" in r:
            entry["c"] = r["c"]
        if "d" in r:
            entry["d"] = r["d"]
        frame.journal[key] = entry
        top = frame.jtop
        if top is not None and (top[0] < t or (top[0] == t and top[1] < i)):
            frame.jtop = (t, i)
        if len(self.frames) > 1:  # the callee's result now lives here
            self.frames.pop(f"{frame.id}/{key}", None)
        ev = r.get("ev")
        if not ev:
            return
        if "step" in ev:
            frame.step = ev["step"]
            if len(ev) == 1:
                return
        if "say" in ev:
            self.transcript.append(ev["say"])
            del self.transcript[:-TRANSCRIPT_KEEP]
        if "consumed" in ev:
            self.consumed = max(self.consumed, ev["consumed"])
        if "mail" in ev:
            mails = ev["mail"]
            for mail in mails if isinstance(mails, list) else [mails]:
                if mail and mail["id"] not in self.received:
                    self.mail[mail["id"]] = mail
        if "closed" in ev:
            self.closed.append(ev["closed"])
        if "shared" in ev:
            number = str(ev["shared"]["meeting"])
            self.shared.setdefault(number, {}).update(ev["shared"]["set"])
        if "received" in ev:
            self.mail.pop(ev["received"], None)
            self.received.append(ev["received"])
        if "agent" in ev:
            self.created.append(ev["agent"])

    def _on_ckpt(self, r: dict) -> None:
        frame = self._frame(r)
        changed = r.get("vars")
        gone = r.get("del")
        if changed:
            values = frame.vars
            for name, delta in changed.items():
                values[name] = serialization.apply(values.get(name), delta)
        if gone:
            for name in gone:
                frame.vars.pop(name, None)
        if frame.kind == "markdown":
            owner = agent_of(frame.id)
            shared = self.agent_vars if owner == "main" else self.other_vars.setdefault(owner, {})
            for name in changed or ():
                shared[name] = frame.vars[name]
            for name in gone or ():
                shared.pop(name, None)
        defs = r.get("defs")
        if defs:
            frame.defs.extend(defs)
        self._advance(frame, r["t"], r)

    def _advance(self, frame: FrameState, t: int, r: dict) -> None:
        """A checkpoint's move of its frame: turn, cursor, position, journal, counter."""
        i = r["i"]
        frame.turn = t
        frame.cursor = i
        frame.pos = r.get("pos")
        journal = frame.journal
        if journal:  # only the awaits of this turn's statements not yet finished stay
            top = frame.jtop
            if top is not None and (top[0] < t or (top[0] == t and top[1] < i)):
                live = []  # the usual case, known without reading the keys
            else:
                prefix = f"{t}."
                live = [k for k in journal if k.startswith(prefix) and int(k.split(".")[1]) >= i]
            if not live:  # every entry is of a finished statement
                frame.journal, frame.jtop = {}, _NO_KEY
            elif len(live) != len(journal):
                frame.journal = {k: journal[k] for k in live}
        statement = r.get("stmt")
        if statement:  # the end-of-turn checkpoint has no statement
            frame.statement = statement
            if "pos" not in r:  # without a position the executed code must be kept
                frame.executed.append(statement)
        frame.checkpoint = r["n"]
        self.counter = r["n"]
        self.last_frame = frame.id
        self.timestamp = r.get("ts", self.timestamp)

    def _on_obs(self, r: dict) -> None:
        frame = self._frame(r)
        while len(frame.observations) <= r["t"]:
            frame.observations.append("")
        frame.observations[r["t"]] = r.get("s", "")

    def _on_end(self, r: dict) -> None:
        frame = self._frame(r)
        frame.result = {k: r[k] for k in ("ok", "err") if k in r}
        frame.journal, frame.jtop = {}, _NO_KEY
        frame.vars = {}
        frame.defs = []

    def _on_put(self, r: dict) -> None:
        """A whole checkpoint stored through the saver protocol: not runtime state."""

    _on_forget = _on_put

    def _on_status(self, r: dict) -> None:
        self.status = r["status"]
        self.message = r.get("message", "")

    # -- snapshots ---------------------------------------------------------
    def to_snapshot(self) -> dict:
        """The state as plain data for a snapshot writer.

        It shares its lists and dicts with this state, uncopied: the writers
        only read it (the blob store builds its own copy as it encodes), so a
        deep copy first only cost time."""
        data = {name: getattr(self, name) for name in _STATE_FIELDS}
        data["frames"] = {
            fid: {name: getattr(frame, name) for name in _FRAME_FIELDS}
            for fid, frame in self.frames.items()
        }
        return data

    @classmethod
    def from_snapshot(cls, data: dict) -> ExecutionState:
        data = dict(data)
        frames = {fid: FrameState(**f) for fid, f in data.pop("frames", {}).items()}
        state = cls(**data)
        state.frames = frames
        return state

    # -- views -----------------------------------------------------------
    def call_stack(self) -> list[FrameState]:
        """The chain of running frames, outermost first (the deepest branch)."""
        running = [f for f in self.frames.values() if f.result is None]
        if not running:
            return []
        deepest = max(running, key=lambda f: f.id.count("/"))
        chain = []
        frame: FrameState | None = deepest
        while frame is not None:
            chain.append(frame)
            frame = self.frames.get(frame.parent) if frame.parent else None
        return list(reversed(chain))


_STATE_FIELDS = tuple(f.name for f in fields(ExecutionState))
_FRAME_FIELDS = tuple(f.name for f in fields(FrameState))
