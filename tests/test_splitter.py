"""The streaming splitter: same statements as a whole parse, whatever the chunking,
each emitted exactly when it becomes provably complete."""

from __future__ import annotations

import ast
import bisect
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from playbooks.execution import splitter as splitter_module
from playbooks.execution.dollar import rewrite_dollars
from playbooks.execution.splitter import Statement, StatementSplitter

RESPONSES = Path(__file__).parent / "responses"
FIXTURES = sorted(p.name for p in RESPONSES.glob("*.txt"))
FINISH = -1  # "emitted by finish()"
COMPOUND = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.Try,
    ast.With,
    ast.AsyncWith,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Match,
)


# -- helpers -----------------------------------------------------------------


def read(name: str) -> str:
    return (RESPONSES / name).read_bytes().decode("utf-8")


def reference_code(text: str) -> str:
    """An independent, simple extraction: code lines stay in place, the rest is blank."""
    lines = text.replace("\r\n", "\n").split("\n")
    if not any(line.strip().startswith("```") for line in lines):
        return "\n".join(lines)
    out, inside, other = [], False, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            info = stripped[3:].strip().lower()
            if inside or other:
                inside = other = False
            elif info in ("", "python", "py"):
                inside = True
            else:
                other = True
            out.append("")
        else:
            out.append(line if inside else "")
    return "\n".join(out)


def reference(text: str) -> list[ast.stmt]:
    return ast.parse(rewrite_dollars(reference_code(text))).body


def dump(node: ast.AST) -> str:
    return ast.dump(node, include_attributes=True)


def random_chunks(text: str, rng: random.Random) -> list[str]:
    chunks, i = [], 0
    top = rng.choice([2, 6, 20, 80, 400])
    while i < len(text):
        n = rng.randint(1, top)
        chunks.append(text[i : i + n])
        i += n
    return chunks


def fixed_chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass
class Run:
    statements: list[Statement]
    emitted_at: list[int]  # per statement: characters fed when it came back, or FINISH
    boundaries: list[int]  # cumulative length after each feed
    splitter: StatementSplitter


def run(chunks: list[str]) -> Run:
    sp = StatementSplitter()
    out: list[Statement] = []
    at: list[int] = []
    bounds: list[int] = []
    fed = 0
    for chunk in chunks:
        fed += len(chunk)
        bounds.append(fed)
        got = sp.feed(chunk)
        out += got
        at += [fed] * len(got)
    while got := sp.finish():
        out += got
        at += [FINISH] * len(got)
    return Run(out, at, bounds, sp)


def completing_feed(text: str, boundaries: list[int], line: int) -> int:
    """The cumulative size of the feed that delivers the "\\n" ending response `line`."""
    pos = -1
    for _ in range(line):
        pos = text.find("\n", pos + 1)
        if pos < 0:
            return FINISH
    return boundaries[bisect.bisect_right(boundaries, pos)]


def required_line(stmts: list[Statement], i: int) -> int | None:
    """The line whose arrival makes statement i provably complete (None: only finish)."""
    s = stmts[i]
    if isinstance(s.node, COMPOUND):
        return stmts[i + 1].start_line if i + 1 < len(stmts) else None
    end = s.end_line  # a simple statement: the end of its logical line
    for t in stmts[i + 1 :]:
        if t.start_line > end:
            break
        end = max(end, t.end_line)
    return end


def check(text: str, chunks: list[str]) -> Run:
    assert "".join(chunks) == text
    r = run(chunks)
    ref = reference(text)
    assert [dump(s.node) for s in r.statements] == [dump(n) for n in ref]
    assert [s.index for s in r.statements] == list(range(len(ref)))
    assert r.splitter.count == len(ref)
    assert r.splitter.text == text
    norm_lines = text.replace("\r\n", "\n").split("\n")
    for i, s in enumerate(r.statements):
        decorators = getattr(s.node, "decorator_list", [])
        assert s.start_line == min([s.node.lineno] + [d.lineno for d in decorators])
        assert s.end_line == s.node.end_lineno
        assert s.source.count("\n") == s.end_line - s.start_line
        assert s.source.split("\n")[0] in norm_lines[s.start_line - 1]
        alone = ast.parse(rewrite_dollars(s.source)).body
        assert [ast.dump(n) for n in alone] == [ast.dump(s.node)]
        line = required_line(r.statements, i)
        want = FINISH if line is None else completing_feed(text, r.boundaries, line)
        assert r.emitted_at[i] == want, f"statement {i} ({s.source!r}) emitted too late/early"
    return r


# -- generated long response ---------------------------------------------------

BLOCKS = [
    lambda i: f"$v{i} = {i}\n",
    lambda i: f'await Step("Main:{i:02d}:EXE")\n',
    lambda i: f"$total = $total + $v{i} if $total else {i}\n",
    lambda i: (
        f"if $v{i} > 1:\n    a = 1\nelif $v{i} < 0:\n    a = 2\n"
        "# column-0 comment inside the if\nelse:\n    a = 3\n"
    ),
    lambda i: (
        "for i in range(3):\n    if i:\n"
        '        await Say("user", f"{i} {$name}")\n'
        "# column-0 comment inside the loop\n    x = i\n"
    ),
    lambda i: (
        "try:\n    $r = await Call()\nexcept ValueError as e:\n    $r = None\n"
        "finally:\n    done = True\n"
    ),
    lambda i: "async with lock:\n    pass\nwith open('f') as fh:\n    data = fh.read()\n",
    lambda i: "while $n > 0:\n    $n -= 1\nelse:\n    pass\n",
    lambda i: f"@playbook\nasync def helper{i}(a, b=2):\n    return a + b\n",
    lambda i: 'await Say(\n    "user",\n    f"Total: {$total:>10}",\n)\n',
    lambda i: 's = """\nline with $dollar\nx = not code\n"""\n',
    lambda i: 'msg = f"""Hello {$name}\n{$count!r} items\n"""\n',
    lambda i: "a = 1; b = 2\n",
    lambda i: "total = 1 + \\\n    2\n",
    lambda i: "\n# a comment\n",
    lambda i: "d = {\n'a': 1,\n'b': [\n1,\n2,\n],\n}\n",
    lambda i: "match $cmd:\n    case 'go':\n        pass\n    case _:\n        pass\n",
]


def generated(seed: int, min_lines: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    lines = i = 0
    while lines < min_lines:
        block = rng.choice(BLOCKS)(i)
        parts.append(block)
        lines += block.count("\n")
        i += 1
    return "".join(parts)


def test_generated_response_1_and_5_char_chunks() -> None:
    text = generated(7, 200)
    assert text.count("\n") >= 200
    expected = [dump(n) for n in ast.parse(rewrite_dollars(text)).body]
    for size in (5, 1):
        r = check(text, fixed_chunks(text, size))
        assert [dump(s.node) for s in r.statements] == expected


# -- fixtures ------------------------------------------------------------------


def test_enough_fixtures() -> None:
    assert len(FIXTURES) >= 15


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_random_chunkings(name: str) -> None:
    text = read(name)
    rng = random.Random(name)
    check(text, [text])
    for _ in range(30):
        check(text, random_chunks(text, rng))


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_variants(name: str) -> None:
    """The same response with CRLF line ends, and without its final newline."""
    text = read(name).replace("\r\n", "\n")
    rng = random.Random(name + "variants")
    for variant in (text.replace("\n", "\r\n"), text.rstrip("\n")):
        for _ in range(10):
            check(variant, random_chunks(variant, rng))


def test_crlf_fixture_really_has_crlf() -> None:
    assert "\r\n" in read("07_crlf.txt")


# -- emitted no later (and no earlier) than required ----------------------------


def test_simple_statement_emitted_by_the_feed_that_ends_its_line() -> None:
    sp = StatementSplitter()
    assert sp.feed("await Step('A')") == []
    got = sp.feed("\n")
    assert [s.source for s in got] == ["await Step('A')"]
    assert sp.feed("x = (1,\n") == []
    assert [s.source for s in sp.feed("2)\n")] == ["x = (1,\n2)"]
    assert sp.count == 2


def test_if_waits_for_a_column0_line_that_is_not_else() -> None:
    sp = StatementSplitter()
    assert sp.feed("if a:\n    b = 1\n") == []
    assert sp.feed("el") == []
    assert sp.feed("se:\n") == []  # else at a chunk boundary continues the if
    assert sp.feed("    c = 2\n") == []
    assert sp.feed("# column-0 comment\n\n") == []
    assert sp.feed("d") == []  # the next line is not complete yet
    got = sp.feed(" = 3\n")
    assert [type(s.node).__name__ for s in got] == ["If", "Assign"]
    assert got[0].source == "if a:\n    b = 1\nelse:\n    c = 2"
    assert (got[0].start_line, got[0].end_line, got[1].start_line) == (1, 4, 7)


def test_compound_at_end_is_emitted_by_finish() -> None:
    sp = StatementSplitter()
    assert sp.feed("for i in x:\n    pass\n") == []
    got = sp.finish()
    assert [type(s.node).__name__ for s in got] == ["For"]
    assert sp.finish() == []
    with pytest.raises(RuntimeError):
        sp.feed("x = 1\n")


def test_decorator_waits_for_its_definition() -> None:
    sp = StatementSplitter()
    assert sp.feed("@deco\n") == []
    assert sp.feed("@deco2(1)\n") == []
    assert sp.feed("async def f():\n    return 1\n") == []
    got = sp.feed("x = 1\n")
    assert [s.source for s in got] == ["@deco\n@deco2(1)\nasync def f():\n    return 1", "x = 1"]
    assert got[0].start_line == 1 and got[0].node.lineno == 3


def test_multiline_string_with_column0_content() -> None:
    sp = StatementSplitter()
    assert sp.feed('s = """\nx = 1\nif y:\n') == []
    got = sp.feed('"""\n')
    assert [s.source for s in got] == ['s = """\nx = 1\nif y:\n"""']


def test_crlf_split_inside_the_line_end() -> None:
    sp = StatementSplitter()
    assert sp.feed("$x = 1\r") == []
    got = sp.feed("\ny = 2\r\n")
    assert [s.source for s in got] == ["$x = 1", "y = 2"]
    assert sp.text == "$x = 1\r\ny = 2\r\n"
    assert sp.code == "$x = 1\ny = 2"


def test_missing_final_newline() -> None:
    sp = StatementSplitter()
    assert [s.source for s in sp.feed("x = 1\ny = 2")] == ["x = 1"]
    assert [s.source for s in sp.finish()] == ["y = 2"]


def test_semicolons_give_separate_statements_with_their_own_source() -> None:
    sp = StatementSplitter()
    got = sp.feed('$a = 1; $b = f"{$a}"; await Step("x")\n')
    assert [s.source for s in got] == ["$a = 1", '$b = f"{$a}"', 'await Step("x")']
    assert [s.index for s in got] == [0, 1, 2]


def test_fences_and_prose_are_not_code() -> None:
    text = (
        "Here's what I'll do:\n"
        "```json\n{}\n```\n"
        "```python\n$x = 1\n```\n"
        "Now the second part.\n"
        "```\nawait Return($x)\n```\n"
    )
    sp = StatementSplitter()
    got = sp.feed(text) + sp.finish()
    assert [(s.source, s.start_line) for s in got] == [("$x = 1", 6), ("await Return($x)", 10)]
    assert sp.code == "$x = 1\nawait Return($x)"


def test_first_line_with_dollars_is_code_not_prose() -> None:
    sp = StatementSplitter()
    got = sp.feed("$x = 1\n")
    assert [s.source for s in got] == ["$x = 1"]


def test_top_level_await_everywhere() -> None:
    sp = StatementSplitter()
    got = sp.feed("for m in await Get():\n    await Say(m)\nx = [await f() for f in g]\n")
    assert len(got) == 2


# -- syntax errors -------------------------------------------------------------

BAD_FENCED = "```python\na = 1\nb = 2\nc0 = 0\nc = = 3\nd = 4\n```\n"


def test_error_reports_response_line_and_stops() -> None:
    text = BAD_FENCED  # line 5 (counting the fence line) is invalid
    sp = StatementSplitter("turn-3")
    emitted: list[Statement] = []
    fed = 0
    with pytest.raises(SyntaxError) as info:
        for chunk in fixed_chunks(text, 1):
            emitted += sp.feed(chunk)
            fed += len(chunk)
    assert info.value.lineno == 5
    assert info.value.filename == "turn-3"
    assert fed == text.index("c = = 3\n") + len("c = = 3")  # raised by the feed ending line 5
    assert [s.source for s in emitted] == ["a = 1", "b = 2", "c0 = 0"]
    with pytest.raises(SyntaxError) as again:
        sp.feed("e = 5\n")
    assert again.value is info.value
    with pytest.raises(SyntaxError):
        sp.finish()


def test_error_after_statements_in_one_call_is_raised_by_the_next_call() -> None:
    sp = StatementSplitter()
    got = sp.feed(BAD_FENCED)
    assert [s.source for s in got] == ["a = 1", "b = 2", "c0 = 0"]
    with pytest.raises(SyntaxError) as info:
        sp.finish()
    assert info.value.lineno == 5


@pytest.mark.parametrize(
    ("text", "lineno", "kind"),
    [
        ("x = 1\n  y = 2\n", 2, IndentationError),
        ("if x:\n    y = = 1\nz = 2\n", 2, SyntaxError),
        ("if x:\ny = 1\n", 2, IndentationError),
        ("```python\nx = 1\n```\ntext\n```python\nfor x in y:\nz = 1\n```\n", 7, IndentationError),
        ("x = (1,\n", 1, SyntaxError),
        ('s = """abc\n', 1, SyntaxError),
        ("Sure.\n```python\n$x = = 1\n```\n", 3, SyntaxError),
    ],
)
def test_error_lines(text: str, lineno: int, kind: type) -> None:
    for chunks in ([text], fixed_chunks(text, 1)):
        sp = StatementSplitter()
        with pytest.raises(SyntaxError) as info:
            for chunk in chunks:
                sp.feed(chunk)
            while sp.finish():
                pass
        assert info.value.lineno == lineno
        assert type(info.value) is kind


def test_open_block_cut_off_is_reported_by_feed() -> None:
    sp = StatementSplitter()
    sp.feed("if x:\n")
    with pytest.raises(IndentationError):
        sp.feed("y = 1\n")


# -- linear work ---------------------------------------------------------------


def test_compile_work_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = [0]

    def counting_compile(source: str, *args: object, **kwargs: object) -> object:
        compiled[0] += len(source)
        return compile(source, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(splitter_module, "compile", counting_compile, raising=False)
    text = generated(11, 1000)
    assert text.count("\n") >= 1000
    r = run(fixed_chunks(text, 5))
    assert len(r.statements) == len(ast.parse(rewrite_dollars(text)).body)
    assert compiled[0] <= 2 * len(text)
