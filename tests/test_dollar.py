"""The `$name` rewrite: only code positions change, and lines never move."""

import ast
import sys
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playbooks.execution.dollar import DollarScanner, rewrite_dollars

CASES = [
    # plain code
    ("$x = 1", "x = 1"),
    ("a = $b + $c_1 * $_d", "a = b + c_1 * _d"),
    ("$x.attr[$i]($j)", "x.attr[i](j)"),
    ("$größe = 1", "größe = 1"),
    ("await Say('user', $msg)", "await Say('user', msg)"),
    # `$` not followed by an identifier is left alone
    ("$ x", "$ x"),
    ("$1 + $", "$1 + $"),
    # plain strings, any quotes and prefixes
    ('"$x" + $y', '"$x" + y'),
    ("'$x' + $y", "'$x' + y"),
    ('"""\n$x\n""" + $y', '"""\n$x\n""" + y'),
    ("'''$a\n$b''' + $c", "'''$a\n$b''' + c"),
    ('"a\\"$x" + $y', '"a\\"$x" + y'),
    ("u'$x' + U\"$x\" + $z", "u'$x' + U\"$x\" + z"),
    # raw and bytes
    ('r"\\$x" + $y', 'r"\\$x" + y'),
    ('r"a\\\\" + $y', 'r"a\\\\" + y'),
    ('r"\\"$x" + $y', 'r"\\"$x" + y'),
    ("b\"$x\" + B'$y' + Rb\"$z\" + bR'$w' + $v", "b\"$x\" + B'$y' + Rb\"$z\" + bR'$w' + v"),
    # f-strings: fields change, literal parts do not
    ('f"{$x}"', 'f"{x}"'),
    ('f"$x {$x}"', 'f"$x {x}"'),
    ('f"{{$x}} {$y}"', 'f"{{$x}} {y}"'),
    ('f"{{{$x}}}"', 'f"{{{x}}}"'),
    ('f"{$x:>{$w}.{$p}}"', 'f"{x:>{w}.{p}}"'),
    ('f"{$x:$>10}"', 'f"{x:$>10}"'),
    ('f"{$x!r:>10} $y"', 'f"{x!r:>10} $y"'),
    ('f"{$x=}"', 'f"{x=}"'),
    ("f\"{$d['$k']}\"", "f\"{d['$k']}\""),
    ('f"{$d["$k"]}"', 'f"{d["$k"]}"'),  # 3.12-style nested same quotes
    ("f\"{f'{$x} $y'}\"", "f\"{f'{x} $y'}\""),
    ('F"{$x}" + rf"{$y}\\d$" + Fr"{$z}" + fR"$w"', 'F"{x}" + rf"{y}\\d$" + Fr"{z}" + fR"$w"'),
    ('f"\\N{DOLLAR SIGN}{$x}"', 'f"\\N{DOLLAR SIGN}{x}"'),
    ('f"{ {$a: 1}[$a] }"', 'f"{ {a: 1}[a] }"'),
    ('f"""{$x}\n$y\n{\n$z\n}"""', 'f"""{x}\n$y\n{\nz\n}"""'),
    ('f"{$x}" f"$y" "{$z}"', 'f"{x}" f"$y" "{$z}"'),
    # comments
    ("$x = 1  # $y and '$z\n$w", "x = 1  # $y and '$z\nw"),
    ("# $only a comment", "# $only a comment"),
    # continuation lines
    ("$x = 1 + \\\n    $y", "x = 1 + \\\n    y"),
    ("s = 'a\\\n$b' + $c", "s = 'a\\\n$b' + c"),
    # names that look like string prefixes are names
    ("rb = $f; f = $rb; fr(x)", "rb = f; f = rb; fr(x)"),
    ("x = 1if $y else 2", "x = 1if y else 2"),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_rewrite_table(source: str, expected: str) -> None:
    assert rewrite_dollars(source) == expected


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_rewrite_line_by_line_matches_whole(source: str, expected: str) -> None:
    scanner = DollarScanner()
    pieces = [scanner.rewrite(line)[0] for line in source.splitlines(keepends=True)]
    assert "".join(pieces) == expected


def test_rewritten_code_compiles() -> None:
    for source, expected in CASES:
        if '"$k"' in source and sys.version_info < (3, 12):
            continue
        if source.startswith("$ x") or source.startswith("$1"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # `1if` is deliberate
            ast.parse(expected)  # every other table entry is valid Python after the rewrite


def test_removed_positions_point_at_names() -> None:
    text, removed = DollarScanner().rewrite('$a = f"{$bb}" + "$c" + $dd')
    assert text == 'a = f"{bb}" + "$c" + dd'
    assert [text[p : p + 2] for p in removed] == ["a ", "bb", "dd"]


def test_top_level_state() -> None:
    scanner = DollarScanner()
    states = []
    for line in [
        "x = foo(\n",
        '"$a",\n',
        ")\n",
        's = """\n',
        "x\n",
        '"""\n',
        "y = 1 + \\\n",
        "2\n",
    ]:
        scanner.rewrite(line)
        states.append(scanner.at_top_level)
    assert states == [False, False, True, False, False, True, False, True]


def test_linear_on_long_input() -> None:
    line = 'await Say("user", f"{$x} and $y {$z:>{$w}}")  # $c\n'
    text = line * 5000
    assert rewrite_dollars(text) == line.replace("{$", "{") * 5000


PIECES = [
    "$x",
    "$name_2",
    "y",
    " ",
    " + ",
    "(",
    ")",
    "[",
    "]",
    "\n",
    "'$a'",
    '"b$"',
    '"""\n$z\n"""',
    "'''$q\n'''",
    "f'{$x}'",
    "f'$lit {$v:>{$w}}'",
    'f"""{$x}\n$y\n"""',
    "f'{{$x}}'",
    "rb'$'",
    "r'\\''",
    "# $c\n",
    "\\\n",
    "$",
    "1",
    "\t",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_rewrite_keeps_lines(pieces: list[str]) -> None:
    source = "".join(pieces)
    out = rewrite_dollars(source)
    src_lines = source.split("\n")
    out_lines = out.split("\n")
    assert len(out_lines) == len(src_lines)
    for before, after in zip(src_lines, out_lines, strict=True):
        # Only `$` characters are ever removed, so each line shrinks by exactly those.
        assert before.replace("$", "") == after.replace("$", "")
        assert len(after) <= len(before)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_incremental_equals_whole(pieces: list[str]) -> None:
    source = "".join(pieces)
    scanner = DollarScanner()
    pieces_out = [scanner.rewrite(line)[0] for line in source.splitlines(keepends=True)]
    assert "".join(pieces_out) == rewrite_dollars(source)
