"""A checkpoint keeps exactly the journal entries of the statements it has not
passed, whether it reads the keys or trusts the bound the frame keeps on them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from playbooks.durability.state import ExecutionState

turn = st.integers(0, 2)
index = st.integers(0, 4)
record = st.one_of(
    st.builds(
        lambda t, i, q: {"k": "await", "f": "main", "t": t, "i": i, "q": q, "ok": 1},
        turn,
        index,
        st.integers(0, 2),
    ),
    st.builds(lambda t, i: {"k": "ckpt", "f": "main", "t": t, "i": i, "n": 1}, turn, index),
    st.builds(lambda t: {"k": "turn", "f": "main", "t": t, "llm": False}, turn),
)


def expected_after(journal: dict, t: int, i: int) -> dict:
    """The rule, read from the keys: this turn's entries of statements at or after i stay."""
    return {k: v for k, v in journal.items() if k.startswith(f"{t}.") and int(k.split(".")[1]) >= i}


@settings(max_examples=300, deadline=None)
@given(st.lists(record, max_size=30), st.booleans())
def test_the_journal_after_each_checkpoint_is_what_its_keys_say(records, from_snapshot) -> None:
    state = ExecutionState()
    state.apply({"k": "frame", "f": "main", "parent": None, "playbook": "P", "kind": "code"})
    for r in records:
        if from_snapshot:  # a frame rebuilt from a snapshot knows no bound
            state = ExecutionState.from_snapshot(state.to_snapshot())
        before = dict(state.frames["main"].journal)
        state.apply(dict(r))
        after = state.frames["main"].journal
        if r["k"] == "ckpt":
            assert after == expected_after(before, r["t"], r["i"]), (before, r)
        elif r["k"] == "await":
            assert f"{r['t']}.{r['i']}.{r['q']}" in after
