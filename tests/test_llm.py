"""The LLM layer against a real local HTTP server and real files."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before anything imports litellm

import asyncio  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runs without `pip install -e .` too
    sys.path.insert(0, str(ROOT))

from llm_server import ScriptedLLMServer, ScriptResponder  # noqa: E402

from playbooks.llm import (  # noqa: E402
    CONTINUE_PROMPT,
    PLAYBOOK_MARKER,
    LiteLLMClient,
    LLMError,
    LLMRequest,
    RecordingClient,
    ReplayClient,
    TurnContext,
    build_messages,
    continuation_messages,
    make_client,
    parse_request,
)

MAIN_0 = (
    "```python\n"
    'await Step("Main:01")\n'
    'await Say("user", "Hello! What is your name?")\n'
    '$name = await Yld("user")\n'
    "```"
)
MAIN_1 = '```python\nawait Step("Main:02")\n$x = await Sub($name)\nawait Return($x)\n```'
SUB_0 = '```python\nawait Step("Sub:01")\nawait Return(f"hi {$name}")\n```'
SCRIPT = {"Main": [MAIN_0, MAIN_1], "Sub": [SUB_0]}


def ctx(playbook: str = "Main", history: list[tuple[str, str]] | None = None, **kw) -> TurnContext:
    fields = {
        "agent_name": "Host",
        "agent_description": "Greets people.",
        "playbook_name": playbook,
        "playbook_source": f"## {playbook}\n### Steps\n- Ask the name\n- Greet",
        "playbooks": ["Sub($name) -> str"],
        "args": {},
        "variables": {},
        "call_stack": [f"{playbook}:01"],
        "history": history or [],
        "observation": "",
    }
    fields.update(kw)
    return TurnContext(**fields)


async def collect(client, request: LLMRequest) -> list[str]:
    return [text async for text in client.stream(request)]


@pytest.fixture
def server():
    with ScriptedLLMServer(ScriptResponder(SCRIPT), chunk_size=8) as srv:
        yield srv


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- litellm over real HTTP -------------------------------------------------


async def test_litellm_streams_the_script_in_several_chunks(server):
    client = LiteLLMClient("openai/test-model", api_base=server.url)
    messages = build_messages(ctx())
    chunks = await collect(client, LLMRequest(messages, call_index=0, playbook="Main"))
    assert "".join(chunks) == MAIN_0
    assert len(chunks) > 1
    body = server.requests[-1]
    assert body["stream"] is True
    assert body["model"] == "test-model"
    assert body["messages"] == messages


async def test_second_turn_and_other_playbook_follow_the_script(server):
    client = LiteLLMClient("openai/test-model", api_base=server.url)
    turn1 = build_messages(ctx(history=[(MAIN_0, "The user said: Ada")]))
    assert "".join(await collect(client, LLMRequest(turn1, 1, "Main"))) == MAIN_1
    sub = build_messages(ctx("Sub", args={"$name": "'Ada'"}))
    assert "".join(await collect(client, LLMRequest(sub, 2, "Sub"))) == SUB_0


async def test_continuation_sends_partial_verbatim_and_yields_only_the_rest(server):
    client = LiteLLMClient("openai/test-model", api_base=server.url)
    messages = build_messages(ctx())
    partial = MAIN_0[:37]  # cuts a statement in half
    chunks = await collect(client, LLMRequest(messages, 0, "Main", partial=partial))
    assert "".join(chunks) == MAIN_0[37:]
    sent = server.requests[-1]["messages"]
    assert sent[:-2] == messages
    assert sent[-2] == {"role": "assistant", "content": partial}
    assert sent[-1] == {"role": "user", "content": CONTINUE_PROMPT}


async def test_stream_cut_by_the_server_is_an_error_not_a_short_reply():
    def cut(request_number: int, chunk_number: int) -> None:
        if chunk_number == 3:
            raise ConnectionAbortedError("cut")

    with ScriptedLLMServer(ScriptResponder(SCRIPT), on_chunk=cut) as srv:
        client = LiteLLMClient("openai/test-model", api_base=srv.url, retries=0)
        received: list[str] = []
        with pytest.raises(LLMError) as info:
            async for text in client.stream(LLMRequest(build_messages(ctx()), 0, "Main")):
                received.append(text)
    assert "".join(received) == MAIN_0[:24]
    assert "\n" not in str(info.value)
    assert "cut off" in str(info.value)


async def test_unreachable_api_base_gives_one_line_error():
    port = closed_port()
    client = LiteLLMClient("openai/test-model", api_base=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(LLMError) as info:
        await collect(client, LLMRequest(build_messages(ctx()), 4, "Main"))
    message = str(info.value)
    assert "\n" not in message
    assert "connection refused" in message
    assert "openai/test-model" in message and f":{port}" in message and "#4" in message
    assert "--model replay:FILE" in message  # the way to run without the service


async def test_server_error_gives_http_status_in_one_line():
    def broken(request: dict) -> str:
        raise RuntimeError("script exhausted")

    with ScriptedLLMServer(broken) as srv:
        client = LiteLLMClient("openai/test-model", api_base=srv.url, backoff=0.01)
        with pytest.raises(LLMError) as info:
            await collect(client, LLMRequest(build_messages(ctx()), 0, "Main"))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert "HTTP 500" in message and "script exhausted" in message


async def test_server_answers_non_streaming_requests(server):
    from playbooks.llm.client import _litellm

    response = await _litellm().acompletion(
        model="openai/test-model",
        messages=build_messages(ctx()),
        api_base=server.url,
        api_key="sk-local",
    )
    assert response.choices[0].message.content == MAIN_0


def test_script_responder_rejects_a_partial_that_is_not_a_prefix():
    responder = ScriptResponder(SCRIPT)
    messages = continuation_messages(build_messages(ctx()), "```python\nprint(")
    with pytest.raises(ValueError):
        responder({"messages": messages})
    good = continuation_messages(build_messages(ctx()), MAIN_0[:5])
    assert responder({"messages": good}) == MAIN_0[5:]


# --- replay and recording -----------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


async def test_replay_streams_by_call_index_in_small_chunks(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"call": 1, "playbook": "Sub", "response": SUB_0},
            {"call": 0, "playbook": "Main", "response": MAIN_0},
        ],
    )
    client = ReplayClient(path)
    chunks = await collect(client, LLMRequest([], 0, "Main"))
    assert "".join(chunks) == MAIN_0
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 12
    assert "".join(await collect(client, LLMRequest([], 1, "Sub"))) == SUB_0


async def test_replay_without_call_keys_uses_line_order(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [{"playbook": "Main", "response": "a"}, {"playbook": "Main", "response": "b"}],
    )
    client = ReplayClient(path)
    assert await collect(client, LLMRequest([], 1, "Main")) == ["b"]


async def test_replay_playbook_mismatch_and_missing_entry(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"call": 0, "playbook": "Main", "response": "x"}])
    client = ReplayClient(path)
    with pytest.raises(LLMError) as info:
        await collect(client, LLMRequest([], 0, "Sub"))
    assert str(info.value) == (
        f"replay {path}: call #0 was recorded for playbook Main, but Sub asked"
    )
    with pytest.raises(LLMError) as info:
        await collect(client, LLMRequest([], 7, "Sub"))
    assert str(info.value) == f"replay {path} has no response for LLM call #7 (playbook Sub)"


async def test_replay_with_partial_streams_only_the_rest(tmp_path):
    response = "```python\r\nawait Step('Main:01')\r\nawait Say('user', 'hi')\r\n```"
    path = write_jsonl(
        tmp_path / "r.jsonl", [{"call": 0, "playbook": "Main", "response": response}]
    )
    client = ReplayClient(path)
    partial = "```python\nawait Step('Main:01')\naw"
    rest = "".join(await collect(client, LLMRequest([], 0, "Main", partial=partial)))
    assert partial + rest == response.replace("\r\n", "\n")
    with pytest.raises(LLMError, match="not a prefix"):
        await collect(client, LLMRequest([], 0, "Main", partial="```python\nprint("))


async def test_replay_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"call": 0, "playbook": "Main", "response": "x"}\n\n{oops\n')
    with pytest.raises(LLMError) as info:
        await collect(ReplayClient(path), LLMRequest([], 0, "Main"))
    assert f"{path}:3" in str(info.value)
    path.write_text('{"call": 0, "playbook": "Main"}\n')
    with pytest.raises(LLMError, match=r"r\.jsonl:1"):
        await collect(ReplayClient(path), LLMRequest([], 0, "Main"))


async def test_replay_reads_the_file_once_and_lazily(tmp_path):
    path = tmp_path / "r.jsonl"
    client = ReplayClient(path)  # not there yet: no error until used
    write_jsonl(path, [{"call": 0, "playbook": "Main", "response": "first"}])
    assert await collect(client, LLMRequest([], 0, "Main")) == ["first"]
    write_jsonl(path, [{"call": 0, "playbook": "Main", "response": "changed"}])
    assert await collect(client, LLMRequest([], 0, "Main")) == ["first"]
    with pytest.raises(LLMError, match="cannot read"):
        await collect(ReplayClient(tmp_path / "missing.jsonl"), LLMRequest([], 0, "Main"))


async def test_recording_then_replay_gives_identical_text(server, tmp_path):
    record = tmp_path / "rec.jsonl"
    client = make_client("openai/test-model", api_base=server.url, record=str(record))
    assert isinstance(client, RecordingClient)
    first = build_messages(ctx())
    live = [
        "".join(await collect(client, LLMRequest(first, 0, "Main"))),
        "".join(await collect(client, LLMRequest(build_messages(ctx("Sub")), 1, "Sub"))),
    ]
    rest = "".join(await collect(client, LLMRequest(first, 2, "Main", partial=MAIN_0[:20])))
    assert rest == MAIN_0[20:]
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert rows == [
        {"call": 0, "playbook": "Main", "response": MAIN_0},
        {"call": 1, "playbook": "Sub", "response": SUB_0},
        {"call": 2, "playbook": "Main", "response": MAIN_0},
    ]
    replay = make_client(f"replay:{record}")
    assert isinstance(replay, ReplayClient)
    assert "".join(await collect(replay, LLMRequest([], 0, "Main"))) == live[0]
    assert "".join(await collect(replay, LLMRequest([], 1, "Sub"))) == live[1]
    resumed = await collect(replay, LLMRequest([], 2, "Main", partial=MAIN_0[:20]))
    assert "".join(resumed) == rest


async def test_a_stream_abandoned_midway_is_recorded_with_what_was_received(tmp_path):
    source = write_jsonl(
        tmp_path / "src.jsonl", [{"call": 0, "playbook": "Main", "response": MAIN_0}]
    )
    record = tmp_path / "rec.jsonl"
    client = RecordingClient(ReplayClient(source), record)
    stream = client.stream(LLMRequest([], 0, "Main"))
    assert await stream.__anext__() == MAIN_0[:12]
    assert await stream.__anext__() == MAIN_0[12:24]
    assert not record.exists()  # nothing is written while the call is going on
    await stream.aclose()  # the reader stops early, as a turn that reached Return does
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert rows == [{"call": 0, "playbook": "Main", "response": MAIN_0[:24], "complete": False}]


async def test_a_failed_call_is_not_recorded(tmp_path):
    record = tmp_path / "rec.jsonl"
    client = RecordingClient(ReplayClient(tmp_path / "missing.jsonl"), record)
    with pytest.raises(LLMError):
        await collect(client, LLMRequest([], 0, "Main"))
    assert not record.exists()


# A real model often writes on after the code: text the server holds back
# until the test ends, so the turn reaches Return and stops reading long before
# the stream would end (what made `--record` save nothing for hello.pb).
HELLO = json.loads((ROOT / "examples" / "hello.replay.jsonl").read_text())["response"]
TAIL = "\nThat is all: the program greeted the user and returned." * 5


def test_record_saves_the_call_a_return_abandons_and_replay_reproduces_the_run(tmp_path, capsys):
    """hello.pb against the server over real HTTP through litellm: the file is
    written, and replaying it gives the same transcript."""
    import threading

    from playbooks.cli import main

    release = threading.Event()
    size = 8
    held_from = (len(HELLO) + size) // size + 1  # chunks after the closing fence

    def hold(request_number: int, chunk_number: int) -> None:
        if chunk_number >= held_from:
            release.wait(10)  # the client has gone by then: the write fails
            raise ConnectionAbortedError("released")

    program = str(ROOT / "examples" / "hello.pb")
    record = tmp_path / "rec.jsonl"
    config = tmp_path / "playbooks.toml"
    script = ScriptResponder({"Main": [HELLO + TAIL]})
    try:
        with ScriptedLLMServer(script, chunk_size=size, on_chunk=hold) as srv:
            config.write_text(f'[model]\nname = "openai/test-model"\napi_base = "{srv.url}"\n')
            code = main(["run", program, "--config", str(config), "--record", str(record)])
            live = capsys.readouterr().out
            release.set()
    finally:
        release.set()
    assert code == 0, live
    assert live == (
        "Greeter: Hello! Welcome to Playbooks.\n"
        "Greeter: Fun fact: an octopus has three hearts and blue blood.\n"
    )
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["call"], r["playbook"]) for r in rows] == [(0, "Main")]
    response = rows[0]["response"]  # what arrived until Return stopped the reader
    assert 'await Return("done")' in response and (HELLO + TAIL).startswith(response)
    assert rows[0]["complete"] is False
    config.write_text("")
    assert main(["run", program, "--config", str(config), "--model", f"replay:{record}"]) == 0
    assert capsys.readouterr().out == live


def test_record_keeps_every_finished_call_when_the_process_is_killed(tmp_path):
    """A kill -9 loses only the call still streaming: Sub's call, abandoned at
    its Return, is on disk before Main goes on."""
    import signal
    import threading

    from killing import child_env

    main_code = (
        '```python\n$x = await Sub()\nawait Say("user", f"got {$x}")\n'
        '$y = await Yld("user")\nawait Return($y)\n```'
    )
    sub_code = '```python\nawait Return("s")\n```'
    script = {"Main": [main_code + TAIL], "Sub": [sub_code + TAIL]}
    size = 8
    release = threading.Event()
    held_from = {0: (len(main_code) + size) // size + 1, 1: (len(sub_code) + size) // size + 1}

    def hold(request_number: int, chunk_number: int) -> None:
        if chunk_number >= held_from[request_number]:
            release.wait(10)
            raise ConnectionAbortedError("released")

    program = tmp_path / "bot.pb"
    program.write_text(
        "# Bot\nA test bot.\n\n## Main\n### Triggers\n- At the beginning\n\n## Sub\n"
    )
    record = tmp_path / "rec.jsonl"
    try:
        with ScriptedLLMServer(ScriptResponder(script), chunk_size=size, on_chunk=hold) as srv:
            (tmp_path / "playbooks.toml").write_text(
                f'[model]\nname = "openai/test-model"\napi_base = "{srv.url}"\n'
            )
            child = subprocess.Popen(
                [sys.executable, "-m", "playbooks.cli", "run", str(program)]
                + ["--record", str(record)],
                stdin=subprocess.PIPE,  # open and silent: the reply is awaited
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
                env=child_env(),
            )
            assert child.stdout is not None
            line = child.stdout.readline()
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            release.set()
    finally:
        release.set()
    assert line == "Bot: got s\n"
    rows = [json.loads(text) for text in record.read_text().splitlines()]
    assert [(r["call"], r["playbook"]) for r in rows] == [(1, "Sub")]
    assert 'await Return("s")' in rows[0]["response"]


def test_missing_key_is_named_before_litellm_is_needed():
    from playbooks.llm.client import missing_key

    assert missing_key("openai/gpt-4o-mini", {}) == "OPENAI_API_KEY"
    assert missing_key("gpt-4o-mini", {}) == "OPENAI_API_KEY"
    assert missing_key("gemini/gemini-2.0-flash", {}) == "GEMINI_API_KEY or GOOGLE_API_KEY"
    assert missing_key("gemini/x", {"GOOGLE_API_KEY": "k"}) is None
    assert missing_key("anthropic/claude", {"ANTHROPIC_API_KEY": "k"}) is None
    assert missing_key("ollama/llama3", {}) is None  # unknown to us: litellm decides


async def test_a_missing_key_fails_at_once_with_the_offline_hint(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = LiteLLMClient("openai/gpt-4o-mini")
    with pytest.raises(LLMError) as info:
        await collect(client, LLMRequest([], 0, "Main"))
    message = str(info.value)
    assert "openai/gpt-4o-mini" in message and "set OPENAI_API_KEY" in message
    assert "--model replay:FILE" in message and "\n" not in message


# --- paced replay ----------------------------------------------------------------


async def test_paced_replay_waits_like_a_live_model(tmp_path):
    from playbooks.llm.replay import LIVE_PACE, Pace

    path = write_jsonl(tmp_path / "r.jsonl", [{"call": 0, "playbook": "Main", "response": MAIN_0}])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    pace = Pace(tokens_per_second=20, chars_per_token=4, first=0.5)
    chunks = await collect(ReplayClient(path, pace=pace, sleep=sleep), LLMRequest([], 0, "Main"))
    assert "".join(chunks) == MAIN_0 and max(len(c) for c in chunks) == 4
    assert len(waits) == len(chunks) and waits[0] == 0.5 and set(waits[1:]) == {0.05}
    paced = make_client(f"replay+paced:{path}")
    assert isinstance(paced, ReplayClient) and paced.pace == LIVE_PACE
    assert make_client(f"replay:{path}").pace is None


def test_the_story_example_takes_about_twenty_seconds_paced():
    """examples/story.pb is for stopping by hand: several messages over ~20 s."""
    from playbooks.llm.replay import LIVE_PACE, load_replay

    entries = load_replay(ROOT / "examples" / "story.replay.jsonl")
    total = sum(sum(LIVE_PACE.delays(e.response)) for e in entries.values())
    says = sum(e.response.count("await Say(") for e in entries.values())
    assert 15 <= total <= 30 and says >= 8


def test_make_client_picks_the_client():
    client = make_client("openai/test-model", api_base="http://127.0.0.1:1/v1")
    assert isinstance(client, LiteLLMClient)
    assert client.api_key  # a local server still gets a key so litellm does not complain
    assert make_client("openai/x", api_key="k").api_key == "k"


def test_importing_the_package_does_not_import_litellm():
    code = "import sys, playbooks.llm; sys.exit('litellm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr


# --- prompts ------------------------------------------------------------------


def test_build_messages_is_deterministic_and_structured():
    history = [(MAIN_0, "The user said: Ada")]
    a = build_messages(
        ctx(history=history, variables={"$a": "1", "$b": "2"}, observation="Sub returned 'hi'")
    )
    b = build_messages(
        ctx(
            history=list(history), variables={"$b": "2", "$a": "1"}, observation="Sub returned 'hi'"
        )
    )
    assert a == b
    assert [m["role"] for m in a] == ["system", "user", "assistant", "user"]
    assert "```python" in a[0]["content"] and "Yld" in a[0]["content"]
    assert a[1]["content"].startswith("Agent: Host\nGreets people.")
    assert f"\n{PLAYBOOK_MARKER}Main\n" in a[1]["content"]
    assert "Sub($name) -> str" in a[1]["content"] and "Write the code" in a[3]["content"]
    assert a[2]["content"] == MAIN_0
    assert "The user said: Ada" in a[3]["content"] and "Sub returned 'hi'" in a[3]["content"]
    assert a[3]["content"].endswith("Write the code for the next steps.")
    assert build_messages(ctx(observation="x")) != build_messages(ctx(observation="y"))


def test_build_messages_truncates_long_values():
    messages = build_messages(ctx(variables={"$big": "x" * 5000}))
    assert "x" * 1000 not in messages[1]["content"]
    assert "$big = " in messages[1]["content"]


@settings(deadline=None)
@given(
    playbook=st.from_regex(r"[A-Z][A-Za-z0-9_]{0,20}", fullmatch=True),
    history=st.lists(st.tuples(st.text(max_size=40), st.text(max_size=40)), max_size=4),
    partial=st.none() | st.text(min_size=1, max_size=60),
)
def test_parse_request_round_trips(playbook, history, partial):
    messages = build_messages(ctx(playbook, history=history, observation="obs"))
    if partial is not None:
        messages = continuation_messages(messages, partial)
    assert parse_request(messages) == (playbook, len(history), partial)


# --- retries, timeouts and token usage ------------------------------------------


class Flaky:
    """Fails the first `failures` requests with `status`, then follows the script."""

    def __init__(self, status: int, failures: int) -> None:
        self.status, self.failures, self.inner = status, failures, ScriptResponder(SCRIPT)

    def __call__(self, request: dict) -> str:
        from llm_server import HTTPStatus

        if self.failures:
            self.failures -= 1
            raise HTTPStatus(self.status, f"scripted {self.status}")
        return self.inner(request)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_rate_limit_or_server_error_is_retried_with_backoff(status):
    from playbooks.llm.client import set_call_listener

    seen: list[tuple[str, str, float]] = []
    set_call_listener(lambda event, r: seen.append((event, r.retry_reason, r.retry_delay)))
    try:
        with ScriptedLLMServer(Flaky(status, 2)) as srv:
            client = LiteLLMClient("openai/test-model", api_base=srv.url, backoff=0.01)
            request = LLMRequest(build_messages(ctx()), 0, "Main")
            assert "".join(await collect(client, request)) == MAIN_0
            assert len(srv.requests) == 3  # two failures, then the answer
    finally:
        set_call_listener(None)
    retries = [(reason, delay) for event, reason, delay in seen if event == "retry"]
    assert [delay for _, delay in retries] == [0.01, 0.02]  # exponential backoff
    assert all(f"HTTP {status}" in reason for reason, _ in retries)
    assert request.usage is not None and request.usage["completion_tokens"] == len(MAIN_0) // 4


async def test_a_server_that_always_fails_gives_up_after_the_retries():
    with ScriptedLLMServer(Flaky(500, 99)) as srv:
        client = LiteLLMClient("openai/test-model", api_base=srv.url, retries=2, backoff=0.01)
        with pytest.raises(LLMError) as info:
            await collect(client, LLMRequest(build_messages(ctx()), 0, "Main"))
        assert len(srv.requests) == 3
    message = str(info.value)
    assert "\n" not in message and "HTTP 500" in message and "after 3 attempts" in message


async def test_a_bad_request_is_not_retried():
    with ScriptedLLMServer(Flaky(400, 99)) as srv:
        client = LiteLLMClient("openai/test-model", api_base=srv.url, backoff=0.01)
        with pytest.raises(LLMError):
            await collect(client, LLMRequest(build_messages(ctx()), 0, "Main"))
        assert len(srv.requests) == 1


async def test_a_stream_cut_midway_is_continued_after_the_text_received():
    def cut(request_number: int, chunk_number: int) -> None:
        if request_number == 0 and chunk_number == 3:
            raise ConnectionAbortedError("cut")

    with ScriptedLLMServer(ScriptResponder(SCRIPT), on_chunk=cut) as srv:
        client = LiteLLMClient("openai/test-model", api_base=srv.url, backoff=0.01)
        chunks = await collect(client, LLMRequest(build_messages(ctx()), 0, "Main"))
        assert "".join(chunks) == MAIN_0  # nothing repeated, nothing lost
        assert srv.requests[1]["messages"][-2] == {"role": "assistant", "content": MAIN_0[:24]}


async def test_a_request_that_times_out_is_retried_then_reported():
    import threading

    release = threading.Event()

    def stall(request_number: int, chunk_number: int) -> None:
        if chunk_number == 0:
            release.wait(5)  # longer than the client's timeout

    with ScriptedLLMServer(ScriptResponder(SCRIPT), on_chunk=stall) as srv:
        client = LiteLLMClient(
            "openai/test-model", api_base=srv.url, timeout=0.3, retries=1, backoff=0.01
        )
        try:
            with pytest.raises(LLMError) as info:
                await collect(client, LLMRequest(build_messages(ctx()), 0, "Main"))
        finally:
            release.set()
        assert len(srv.requests) == 2
    assert "timed out" in str(info.value)


def test_a_call_that_keeps_failing_exits_1_in_one_line_and_resumes_later(
    tmp_path, monkeypatch, capsys
):
    from playbooks.cli import main

    for key in list(os.environ):
        if key.startswith("PLAYBOOKS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    program = tmp_path / "hello.pb"
    program.write_text("# Host\n\n## Main\n### Triggers\n- At the beginning\n### Steps\n- Greet\n")
    script = {"Main": ['```python\nawait Step("Main:01")\nawait Say("user", "Hi!")\n'
                       'await Return(1)\n```']}  # fmt: skip
    flaky = Flaky(503, 99)
    flaky.inner = ScriptResponder(script)
    with ScriptedLLMServer(flaky) as srv:
        (tmp_path / "playbooks.toml").write_text(
            f'[model]\nname = "openai/test-model"\napi_base = "{srv.url}"\nretries = 1\n'
            f'timeout = 30\n[durability]\nenabled = true\npath = "{tmp_path / "ckpt"}"\n'
            "fsync = false\n"
        )
        assert main(["run", str(program), "--json"]) == 1
        out, err = capsys.readouterr()
        assert len(srv.requests) == 2  # the first attempt and one retry
        retried = [json.loads(line) for line in out.splitlines() if '"llm_retry"' in line]
        assert len(retried) == 1 and "HTTP 503" in retried[0]["reason"]
        error = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and "HTTP 503" in error[0] and "after 2 attempts" in error[0]
        assert main(["executions", "list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [e["status"] for e in listed] == ["interrupted"]  # resumable, not failed
        flaky.failures = 0  # the service is back
        assert main(["run", str(program), "--json"]) == 0
        out, err = capsys.readouterr()
    assert "resuming" in err
    assert [json.loads(line)["text"] for line in out.splitlines() if '"say"' in line] == ["Hi!"]


async def test_each_run_in_one_process_hears_only_its_own_llm_calls():
    """A worker runs several executions in one process: the call listener one run
    installs must not receive (or be removed by) another run's calls."""
    from playbooks.llm.client import LLMRequest, notify, set_call_listener

    heard: dict[str, list[str]] = {"a": [], "b": []}
    both_listening = asyncio.Event()
    ready = 0

    async def run(name: str, playbook: str) -> None:
        nonlocal ready
        set_call_listener(lambda event, request: heard[name].append(request.playbook))
        ready += 1
        if ready == 2:
            both_listening.set()
        await both_listening.wait()
        notify("start", LLMRequest(messages=[], call_index=0, playbook=playbook))
        if name == "a":
            set_call_listener(None)  # run a ends first: b keeps its listener

        await asyncio.sleep(0)
        notify("end", LLMRequest(messages=[], call_index=0, playbook=playbook))

    await asyncio.gather(run("a", "PlaybookOfA"), run("b", "PlaybookOfB"))
    assert heard == {"a": ["PlaybookOfA"], "b": ["PlaybookOfB", "PlaybookOfB"]}
