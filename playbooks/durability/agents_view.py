"""The agents of an execution as its durable state tells them: frames, inbox, status.

Used by ``get_latest_checkpoint()`` (``execution_state.agents``) and by
``playbooks executions show``; it reads only records, never a live process.
"""

from __future__ import annotations

from typing import Any

from .state import ExecutionState, FrameState, agent_of

ENDED = ("finished", "failed")


def _status(state: ExecutionState, frames: list[FrameState]) -> str:
    if state.status in ENDED:
        return "done"
    running = [f for f in frames if f.result is None]
    if not running:
        return "idle" if frames else "starting"
    top = max(running, key=lambda f: f.id.count("/"))
    return "waiting for messages" if top.playbook == "ServeMessages" else "running"


def agents_view(state: ExecutionState) -> dict[str, Any]:
    """``{"user": {...}, NAME: {"id", "kind", "status", "frames", "inbox", "variables"}}``."""
    out: dict[str, Any] = {"user": {"replies_consumed": state.consumed}}
    roster = list(state.program.get("agents") or [])
    for made in state.created:
        roster.append(
            {
                "id": made["id"],
                "name": f"{made['type']} {made['id']}",
                "kind": "ai",
                "root": f"agent{made['id']}",
            }
        )
    for agent in roster:
        root = agent.get("root", "main")
        frames = [f for f in state.frames.values() if agent_of(f.id) == agent_of(root)]
        entry: dict[str, Any] = {"id": agent["id"], "kind": agent.get("kind", "ai")}
        if entry["kind"] != "human":
            shared = state.agent_vars if root == "main" else state.other_vars.get(root, {})
            entry |= {
                "status": _status(state, frames),
                "frames": [
                    {"frame": f.id, "playbook": f.playbook, "step": f.step, "turn": f.turn}
                    for f in frames
                    if f.result is None
                ],
                "inbox": [
                    {"id": m["id"], "from": m["from"], "text": m["text"]}
                    for m in state.mail.values()
                    if m["to"] == agent["id"]
                ],
                "variables": {f"${k}": v for k, v in shared.items()},
            }
        out[agent["name"]] = entry
    return out


def meetings_view(state: ExecutionState) -> dict[str, Any]:
    """``{"meeting 100": {"open", "host_frame", "playbook", "topic", "shared"}}``."""
    out: dict[str, Any] = {}
    for frame in state.frames.values():
        address = frame.args.get("meeting_id")
        if isinstance(address, str) and "attendees" in frame.args and frame.result is None:
            out[address] = {
                "open": True,
                "host_frame": frame.id,
                "playbook": frame.playbook,
                "topic": frame.args.get("meeting_topic", ""),
                "attendees": frame.args.get("attendees", []),
            }
    for number in state.closed:
        out[f"meeting {number}"] = {"open": False}
    for number, shared in state.shared.items():
        out.setdefault(f"meeting {number}", {"open": False})["shared"] = dict(shared)
    return out
