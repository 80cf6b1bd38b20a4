"""Inventories and count streams from other people are untrusted input (the hostile-inputs issue).

Five parts, each a seeded, bounded fuzz or a numbered probe:
1. hostile inventories: every field of `FIELDS` and the board name, plus whole-file damage, into
   `load_inventory`: it returns only genuinely valid values, else one GrasptpuError line naming
   the field; any other exception is a failure;
2. the one quoting rule (`shell`, `runner`): hostile words come back as exactly those words, from
   shlex and from a real shell;
3. probe "the inventory's python is pasted unquoted into remote commands";
4. probe "two deploys with --wait: the release id is minted before the lock";
5. hostile count streams into `device.decoder.Decoder` and `device.stream.RingBuffer`.
The bugs these found when written (deep nesting, unreadable files, C1 controls, Fabric shorthand, a
multi-line BoardError, ragged counts) are fixed; their tests now pass.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import tomllib
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime, time as dtime, timezone
from pathlib import Path

import numpy as np
import pytest

from device.contract import DeviceError, MAX_COUNT, load_manifest, quantise, verify
from device.decoder import Decoder
from device.stream import RingBuffer
from host.boards.inventory import FIELDS, Board, load_inventory
from host.boards.remote import BoardError, runner, shell
from host.errors import GrasptpuError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sim_board  # noqa: E402

needs_sshd = pytest.mark.skipif(not sim_board.SSHD.exists(), reason="openssh-server is not installed (make sshd)")


def one_line(message: str) -> bool:
    """A message a terminal and a log show as one line (str.splitlines knows every line break)."""
    return len(message.splitlines()) == 1


# --- 1. hostile inventories ---------------------------------------------------------------------

def toml_str(s: str) -> str:
    """A TOML basic string: JSON's escaping, plus DEL, which TOML (not JSON) wants escaped; raw
    non-ASCII so that characters outside the BMP are not written as surrogate pairs."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(v: object) -> str:
    """TOML text for one value of any type the fuzz uses (checked by a tomllib round trip)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, (datetime, date, dtime)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def same(a: object, b: object) -> bool:
    """Equality that counts NaN equal to NaN and keeps bool apart from int."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def board_toml(name: str, entry: dict) -> str:
    return f"[boards.{toml_str(name)}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in entry.items())


# What the inventory's fields mean, written from the docs (not from the validator): the fuzz
# fails when load_inventory accepts a value outside this. Refusing a value inside it is allowed
# (the validator may be stricter), except for the GOOD values below, which must be accepted.
def _control(s: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in s)


def _text(v: object, limit: int = 4096) -> bool:
    return isinstance(v, str) and 0 < len(v) <= limit and not _control(v)


def _shell_word(v: object) -> bool:
    """Needs no quoting in any shell and cannot be taken for an option."""
    return _text(v, 255) and shlex.quote(v) == v and not v.startswith("-")


MEANS: dict[str, Callable[[object], bool]] = {
    "host": _shell_word, "user": _shell_word,
    "port": lambda v: type(v) is int and 1 <= v <= 65535,
    "key_file": _text, "known_hosts": _text, "root": _text,
    # the first word of a command: never an option, but "A=b" there is an assignment
    "python": lambda v: _text(v, 255) and shlex.quote(v) == v and "=" not in v,
    "simulated": lambda v: type(v) is bool,
    "max_p99_ms": lambda v: type(v) in (int, float) and math.isfinite(v) and v > 0,
    "max_miss_rate": lambda v: type(v) in (int, float) and 0 <= v <= 1,
    "latency_note": _text, "python_version": _text, "numpy_version": _text, "runtime": _text,
}
# Values that must be accepted (the validator may not simply refuse everything).
GOOD: dict[str, list[object]] = {
    "host": ["coral-mini.local", "192.168.1.5", "::1", "fe80::1%eth0", "my_alias"],
    "user": ["mendel", "root", "first.last"],
    "port": [22, 1, 65535, 2222],
    "key_file": ["~/.ssh/id_ed25519", "/home/me/keys/coral key"],
    "known_hosts": ["~/.ssh/known_hosts", "/tmp/kh"],
    "python": ["python3", "/usr/bin/python3", "python3.7", "/opt/py+3/bin/python"],
    "root": ["/home/mendel/grasptpu", "grasptpu", "~/grasptpu", "/data/my releases"],
    "simulated": [True, False],
    "max_p99_ms": [2.0, 2, 0.5, 40],
    "max_miss_rate": [0.0001, 0, 0.001, 1],
    "latency_note": ["2 ms = 20x headroom in the 40 ms bin", "Edge TPU — réel"],
    "python_version": ["3.7.3"], "numpy_version": ["1.16.2"], "runtime": ["pycoral 2.0.0"],
}
BASE = {field: values[0] for field, values in GOOD.items()}
NAME_GOOD = ["b1", "coral-mini", "lab_2.board+1", "A"]

WRONG_TYPES: list[object] = [0, 1, -1, 22, 2**63 - 1, -(2**63), 2**70, 1.5, 0.0, -0.0, 22.0, math.nan, math.inf,
                             -math.inf, 1e308, 1e-300, True, False, [], ["python3"], [1, 2], {}, {"a": 1},
                             datetime(1979, 5, 27, 7, 32, tzinfo=timezone.utc), datetime(1979, 5, 27, 7, 32),
                             date(1979, 5, 27), dtime(7, 32)]
HOSTILE_STRINGS: list[str] = [
    "", " ", "x" * 100_000, "a" * 256, "a" * 4097, "python3; touch X", "$(touch X)", "`touch X`", "a | b",
    "a && b", "a\nb", "a\rb", "a\tb", "a\u007fb", "a\u0000b", "\u001b[2J", "-oProxyCommand=touch X", "-p", "--", "-",
    "-rf", "../../etc", "a/b", "..", ".", ".hidden", "é", "日本語", "😀", "a b", "a'b", 'a"b', "a\\b", "~", "*", "?",
    "[a]", "{a,b}", "!", "#", "a=b", "PATH=/tmp", "%", "@", ":", "\u00a0", "22", "2.0", "true", "user@host",
]
PORT_SPECIALS: list[object] = [0, -1, 65536, 70000, "22", 22.0, True]
P99_SPECIALS: list[object] = [0, -1, -0.0, 1e-9, 1e6, 5e5, "2"]
# The hostile alphabet of the seeded random strings (C1 controls and U+2028 have their own test too).
ALPHABET = list("aZ09_-./:@%+=,;|&$`'\"\\ \t\n()<>{}[]*?!#~^") + ["\x7f", "é", "日", "😀", "\u00a0", "\x00", "\x1b",
                                                                  "\x85", "\x9b", "\u2028"]


def random_strings(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        s = "".join(rng.choice(ALPHABET, size=int(rng.integers(1, 31))))
        out.append("-" + s if rng.random() < 0.15 else s)
    return out


@dataclasses.dataclass
class Variant:
    """One inventory file, what a correct loader does with it, and the word its refusal must name."""

    group: str
    label: str
    text: str | bytes
    valid: bool | None  # None: either outcome is correct
    names: str
    expect: tuple[str, str, object] | None = None  # (board, field, value) an accepted file must hold


def field_variants(rng: np.random.Generator) -> Iterator[Variant]:
    for field in FIELDS:
        values = WRONG_TYPES + HOSTILE_STRINGS + random_strings(rng, 25) + GOOD[field]
        values += PORT_SPECIALS if field == "port" else P99_SPECIALS if field == "max_p99_ms" else []
        for value in values:
            literal = toml_value(value)
            assert same(tomllib.loads(f"v = {literal}")["v"], value), f"the test's TOML writer: {value!r}"
            entry = {**BASE, field: value}
            valid = True if any(same(value, g) for g in GOOD[field]) else None if MEANS[field](value) else False
            yield Variant(field, repr(value)[:40], board_toml("b1", entry), valid, f": {field} = ", ("b1", field, value))


def name_ok(name: str) -> bool:
    """A board name names files under reports/: one plain path component, nothing a shell or a
    file system reads specially."""
    return _shell_word(name) and not name.startswith(".") and "/" not in name and name not in (".", "..")


def name_variants(rng: np.random.Generator) -> Iterator[Variant]:
    names = HOSTILE_STRINGS + random_strings(rng, 25) + NAME_GOOD
    names += ["a/b", "../x", "a..b", ".x", "-x", "+x", "_x", "x" * 64, "x" * 65, "ÿ"]
    for name in names:
        valid = True if name in NAME_GOOD else None if name_ok(name) else False
        yield Variant("board name", repr(name)[:40], board_toml(name, {"host": "h"}), valid, "board name",
                      (name, "host", "h"))


OK_TABLE = '[boards.b1]\nhost = "h"\n'


def file_variants() -> Iterator[Variant]:
    """Whole files: not TOML, `boards` of the wrong shape, missing or extra keys, bad bytes."""
    bad_toml = "not valid TOML"
    no_tables = "no [boards.NAME] tables"
    cases: list[tuple[str, str | bytes, bool | None, str]] = [
        ("not TOML", "this is not toml", False, bad_toml),
        ("unterminated table header", "[boards.b1\nhost = 'h'\n", False, bad_toml),
        ("unterminated string", '[boards.b1]\nhost = "h\n', False, bad_toml),
        ("duplicate key", OK_TABLE + 'host = "g"\n', False, bad_toml),
        ("duplicate table", OK_TABLE + OK_TABLE, False, bad_toml),
        ("bad escape", '[boards.b1]\nhost = "\\x41"\n', False, bad_toml),
        ("raw NUL", b'[boards.b1]\nhost = "h\x00"\n', False, bad_toml),
        ("raw DEL", '[boards.b1]\nhost = "h\x7f"\n', False, bad_toml),
        ("boards as a list", "boards = [1, 2]\n", False, no_tables),
        ("boards as a string", 'boards = "b1"\n', False, no_tables),
        ("boards as an int", "boards = 3\n", False, no_tables),
        ("boards as an array of tables", "[[boards]]\nhost = 'h'\n", False, no_tables),
        ("empty file", "", False, no_tables),
        ("comment only", "# nothing here\n\n", False, no_tables),
        ("empty [boards]", "[boards]\n", False, no_tables),
        ("other tables only", "[boardz.b1]\nhost = 'h'\n", False, no_tables),
        ("a table with no host", '[boards.b1]\nuser = "mendel"\n', False, "no host"),
        ("an empty board table", "[boards.b1]\n", False, "no host"),
        ("an unknown key", OK_TABLE + 'hots = "x"\n', False, "unknown keys ['hots']"),
        ("an unknown key with a newline", OK_TABLE + '"a\\nb" = 1\n', False, "unknown keys"),
        ("a password", OK_TABLE + 'password = "hunter2"\n', False, "password"),
        ("a password, no host", '[boards.b1]\npassword = "hunter2"\n', False, "password"),
        ("a board as a string", 'boards.b1 = "h"\n', False, "must be a table"),
        ("a board as a list", 'boards.b1 = ["h"]\n', False, "must be a table"),
        ("a sub-table", OK_TABLE + "[boards.b1.extra]\nx = 1\n", False, "unknown keys ['extra']"),
        ("a dotted board name", '[boards.a.b]\nhost = "h"\n', False, "unknown keys ['b']"),
        ("second board bad", OK_TABLE + '[boards.b2]\nhost = "h; x"\n', False, "'b2': host"),
        ("inline board table", 'boards = { b1 = { host = "h", port = 22 } }\n', True, ""),
        ("invalid UTF-8 in a value", b'[boards.b1]\nhost = "\xff\xfe"\n', False, bad_toml),
        ("invalid UTF-8 in a comment", b"# \xc3\x28\n" + OK_TABLE.encode(), False, bad_toml),
        ("UTF-16", OK_TABLE.encode("utf-16"), False, bad_toml),
        ("UTF-8 byte order mark", "\ufeff" + OK_TABLE, None, bad_toml),
        ("CRLF line ends", OK_TABLE.replace("\n", "\r\n"), True, ""),
        ("lone CR", OK_TABLE.replace("\n", "\r"), None, bad_toml),  # read_text's universal newlines
        ("escaped NUL in a value", '[boards.b1]\nhost = "h\\u0000"\n', False, ": host = "),
        ("100-deep arrays elsewhere", OK_TABLE + "[x]\ny = " + "[" * 100 + "]" * 100 + "\n", True, ""),
        ("many boards", "".join(f'[boards.b{i}]\nhost = "h{i}"\n' for i in range(500)), True, ""),
    ]
    for label, text, valid, names in cases:
        yield Variant("whole file", label, text, valid, names)


def run_variant(path: Path, v: Variant) -> tuple[str, str | None]:
    """('accepted' | 'refused', a failure or None) for one inventory file."""
    path.write_bytes(v.text if isinstance(v.text, bytes) else v.text.encode("utf-8"))
    try:
        boards = load_inventory(path)
    except GrasptpuError as exc:
        msg = str(exc)
        if v.valid:
            return "refused", f"{v.group} {v.label}: a valid inventory refused: {msg[:200]}"
        if not one_line(msg):
            return "refused", f"{v.group} {v.label}: message is not one line: {msg[:200]!r}"
        if v.names not in msg:
            return "refused", f"{v.group} {v.label}: message does not name {v.names!r}: {msg[:200]}"
        return "refused", None
    except BaseException as exc:  # noqa: BLE001 - anything but GrasptpuError is the failure under test
        return "crashed", f"{v.group} {v.label}: {type(exc).__name__}: {str(exc)[:200]}"
    if v.valid is False:
        return "accepted", f"{v.group} {v.label}: an invalid inventory accepted"
    if v.expect:
        name, field, value = v.expect
        if not same(getattr(boards[name], field), value):
            return "accepted", f"{v.group} {v.label}: accepted, but {field} reads {getattr(boards[name], field)!r}"
    return "accepted", None


def test_writer_round_trips_every_kind_of_value():
    """The fuzz's own TOML writer, checked against tomllib, so that a refusal is the loader's doing."""
    for value in WRONG_TYPES + HOSTILE_STRINGS + ["\x85", "\u2028", "😀"]:
        assert same(tomllib.loads(f"v = {toml_value(value)}")["v"], value), value


def test_every_field_has_a_meaning_and_good_values():
    """A field added to FIELDS must be added here too, or the fuzz would silently skip it."""
    assert set(MEANS) == set(FIELDS) == set(GOOD)
    assert all(MEANS[f](v) for f, values in GOOD.items() for v in values)


def test_hostile_inventories_are_refused_in_one_line(tmp_path, capsys):
    """Seeded fuzz: every field, the board name and whole-file damage (about 1,500 files)."""
    rng = np.random.default_rng(20240611)
    variants = [*field_variants(rng), *name_variants(rng), *file_variants()]
    path = tmp_path / "boards.toml"
    table: dict[str, Counter] = {}
    failures = []
    for v in variants:
        outcome, failure = run_variant(path, v)
        table.setdefault(v.group, Counter())[outcome] += 1
        if failure:
            failures.append(failure)
    for label, expected in ((tmp_path, "a directory"), (tmp_path / "missing.toml", "no such inventory file")):
        with pytest.raises(GrasptpuError, match=expected):
            load_inventory(label)
    with capsys.disabled():
        total = sum(table.values(), Counter())
        print(f"\nhostile inventories: {len(variants)} variants, {total['refused']} refused, "
              f"{total['accepted']} accepted, {total['crashed']} crashed")
        for group, counts in table.items():
            print(f"  {group:16} tried {sum(counts.values()):4}  refused {counts['refused']:4}  "
                  f"accepted {counts['accepted']:3}  crashed {counts['crashed']}")
    assert len(variants) >= 500
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("nested", ["x = " + "[" * 500 + "]" * 500, "x = " + "{a = " * 400 + "1" + "}" * 400])
def test_a_deeply_nested_inventory_is_one_line(tmp_path, nested):
    """Nesting is legal TOML anywhere in the file (even outside [boards]): a small hostile file must
    still be one line, not a traceback from the parser."""
    path = tmp_path / "boards.toml"
    path.write_text(OK_TABLE + "[other]\n" + nested + "\n")
    with pytest.raises(GrasptpuError, match="not valid TOML"):
        load_inventory(path)


def test_an_unreadable_inventory_is_one_line(tmp_path):
    """A real read error: /proc/self/mem fails with EIO when read from offset 0 (the suite runs as
    root, where chmod 000 still reads)."""
    path = tmp_path / "boards.toml"
    path.symlink_to("/proc/self/mem")
    with pytest.raises(GrasptpuError, match="boards.toml: cannot read the inventory"):
        load_inventory(path)


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\u2028", "\u2029"])
def test_c1_controls_and_line_separators_in_text_fields_are_refused(tmp_path, char):
    """The inventory promises text fields hold no control characters: notes are printed in reports
    and terminals, where U+009B is CSI and U+0085/U+2028 split a line."""
    path = tmp_path / "boards.toml"
    path.write_text(board_toml("b1", {"host": "h", "latency_note": f"fast{char}2J"}), encoding="utf-8")
    with pytest.raises(GrasptpuError, match="latency_note"):
        load_inventory(path)


@pytest.mark.parametrize("entry", [{"host": "pi@127.0.0.1", "user": "mendel"}, {"host": "127.0.0.1:2222", "port": 22}])
def test_a_host_with_user_or_port_shorthand_is_refused_or_one_line(tmp_path, entry):
    """Fabric reads 'user@host:port' out of the host string; the inventory has fields for both, so
    a host that also names them is either refused when loaded or a one-line BoardError."""
    from host.boards.remote import connect

    path = tmp_path / "boards.toml"
    path.write_text(board_toml("b1", {**entry, "port": entry.get("port", 1)}))
    with pytest.raises(GrasptpuError):  # at load time, or as a one-line BoardError from connect
        connect(load_inventory(path)["b1"], timeout=1.0)


# --- 2. the quoting rule --------------------------------------------------------------------------

WORD_ALPHABET = list("aZ09 \t\n'\"`$;|&<>(){}[]*?!#~\\=%@:,.-/^") + ["é", "日", "😀", "\x7f", "\u2028", "\x01"]


def random_words(rng: np.random.Generator) -> list[object]:
    words: list[object] = []
    for _ in range(int(rng.integers(1, 7))):
        kind = rng.random()
        if kind < 0.1:
            words.append(int(rng.integers(-1000, 1000)))
        elif kind < 0.15:
            words.append(float(rng.normal()))
        else:
            words.append("".join(rng.choice(WORD_ALPHABET, size=int(rng.integers(0, 21)))))
    return words


def test_shell_quotes_every_hostile_word_into_exactly_one_argument():
    """Property: shlex reads `shell(*words)` back as the words (600 seeded lists of hostile words)."""
    rng = np.random.default_rng(7)
    for _ in range(600):
        words = random_words(rng)
        assert shlex.split(shell(*words)) == [str(w) for w in words], words


def test_a_real_shell_reads_back_the_same_words():
    """shlex is a model of the shell; /bin/sh is the shell the board runs commands with."""
    rng = np.random.default_rng(8)
    for _ in range(60):
        words = random_words(rng)
        out = subprocess.run(["/bin/sh", "-c", "printf '%s\\0' " + shell(*words)], capture_output=True, check=True).stdout
        assert out.decode().split("\0")[:-1] == [str(w) for w in words], words


def parse_runner(cmd: str) -> list[str]:
    """The tokens of a `runner` command, operators included, as a POSIX shell splits them."""
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = []
    while (token := lexer.get_token()) is not None:
        tokens.append(token)
    return tokens


def test_runner_parses_into_cd_folder_and_one_python_command():
    board = Board(name="b1", host="h", python="python3")
    cmd = runner(board, "/root/x y", "device.bench", "models/a;b", "--json", "-")
    assert parse_runner(cmd) == ["cd", "/root/x y", "&&", "python3", "-m", "device.bench", "models/a;b", "--json", "-"]
    rng = np.random.default_rng(9)
    for _ in range(300):
        folder, *args = [str(w) or "x" for w in random_words(rng)]  # an empty word: '' in shlex's eyes too
        assert parse_runner(runner(board, folder, "device.stream", *args)) == \
            ["cd", folder, "&&", "python3", "-m", "device.stream", *args], (folder, args)


def test_runner_runs_in_a_hostile_folder_with_exactly_its_arguments(tmp_path):
    """End to end through /bin/sh: a folder and arguments full of shell syntax reach a stand-in
    interpreter as one cwd and exactly those arguments, and nothing else runs."""
    marker = tmp_path / "touched"
    folder = tmp_path / "x y;$(touch touched)`touch touched`'\"&&|"
    folder.mkdir()
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\npwd -P\nprintf '%s\\0' \"$@\"\n")
    fake.chmod(0o755)
    board = Board(name="b1", host="h", python=str(fake))
    args = ["models/a;b", "$(touch touched)", "`touch touched`", "a\nb", "", "--json", "-"]
    out = subprocess.run(["/bin/sh", "-c", runner(board, str(folder), "device.bench", *args)], capture_output=True,
                         cwd=tmp_path, check=True).stdout.decode()
    cwd, rest = out.split("\n", 1)
    assert cwd == str(folder.resolve()) and rest.split("\0")[:-1] == ["-m", "device.bench", *args]
    assert not marker.exists() and not (folder / "touched").exists()


def test_the_inventory_refuses_an_assignment_as_python():
    """`shell` leaves `A=b` unquoted (shlex.quote calls '=' safe); as the first word of a command
    that is an assignment, not a command: the inventory's python check is what rules it out."""
    assert shell("PATH=/tmp", "-c") == "PATH=/tmp -c"
    assert not FIELDS["python"][0]("PATH=/tmp")


# --- 3. probe: the inventory's python pasted unquoted into remote commands ---------------------------

def hostile_pythons(marker: Path) -> list[str]:
    """Pythons that run `touch` if pasted unquoted (the ones that do so at once come first: pasted
    unquoted, a bare `python3` would wait on stdin)."""
    m = shlex.quote(str(marker))
    return [f"$(touch {m})", f"`touch {m}`", f"sh -c 'touch {m}'", f"python3; touch {m}", f"python3 && touch {m}",
            f"python3 | touch {m}", f"python3 || touch {m}", f"python3 > {m}", f"python3\ntouch {m}"]


def test_probe3_the_inventory_refuses_a_python_with_shell_syntax(tmp_path):
    marker = Path(f"/tmp/grasptpu-probe3-{uuid.uuid4().hex}")
    path = tmp_path / "boards.toml"
    for python in hostile_pythons(marker):
        path.write_text(board_toml("b1", {"host": "h", "python": python}))
        with pytest.raises(GrasptpuError) as caught:
            load_inventory(path)
        assert one_line(str(caught.value)) and ": python = " in str(caught.value), str(caught.value)
    assert not marker.exists()


class _FakeResult:
    exited, stdout, stderr = 127, "", "bash: line 1: python3: command not found\n"


class _FakeConn:
    def run(self, cmd: str, **kwargs) -> _FakeResult:
        return _FakeResult()


def test_check_board_python_says_a_newline_python_in_one_line():
    from host.boards.deploy import check_board_python

    with pytest.raises(BoardError) as caught:
        check_board_python(_FakeConn(), Board(name="b1", host="h", python="python3\ntouch /tmp/x"))
    assert one_line(str(caught.value)), str(caught.value)


class Impatient:
    """A connection whose commands time out after 20 s: a hostile python that got pasted unquoted
    and left an interpreter waiting on stdin fails the probe in seconds, not at pytest's timeout."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def run(self, cmd: str, **kwargs):
        return self.conn.run(cmd, **{**kwargs, "timeout": min(kwargs.get("timeout") or 20.0, 20.0)})

    def close(self) -> None:
        self.conn.close()


@needs_sshd
@pytest.mark.slow
def test_probe3_a_direct_board_with_a_hostile_python_runs_no_shell(fleet):
    """Bypassing the inventory: check_board_python (and a runner command) over real SSH quote the
    python into one word, so `touch` never runs; the failure is a BoardError."""
    from host.boards.deploy import check_board_python
    from host.boards.remote import close, command, connect

    _, inventory = fleet
    good = load_inventory(inventory)["b1"]
    marker = Path(f"/tmp/grasptpu-probe3-{uuid.uuid4().hex}")
    conn = Impatient(connect(good))
    try:
        for python in hostile_pythons(marker):
            board = dataclasses.replace(good, python=python)
            with pytest.raises(BoardError) as caught:
                check_board_python(conn, board)
            assert "check the board's Python" in str(caught.value)
            if "\n" not in python:  # the newline case: test_check_board_python_says_a_newline_python_in_one_line
                assert one_line(str(caught.value)), str(caught.value)
            assert command(conn, board, "probe", runner(board, "/tmp", "device.runtime"), check=False).exited != 0
            assert not marker.exists(), f"{python!r} ran a shell command on the board"
    finally:
        close(conn)


# --- 4. probe: two deploys with --wait, and the release id minted before the lock ----------------

def board_status(inventory: Path) -> dict:
    """`device.release status` of b1, read from the simulated board's own disk."""
    root = Path(load_inventory(inventory)["b1"].root)
    link = root / "current"
    return {"current": os.path.basename(os.readlink(link)) if link.is_symlink() else None,
            "releases": sorted(p.name for p in (root / "releases").iterdir()
                               if p.is_dir() and not p.name.endswith(".partial") and not p.name.startswith("."))}


class SwitchWatcher:
    """The order in which `current` really switched, seen on the simulated board's disk."""

    def __init__(self, root: Path) -> None:
        self.link, self.seen, self._stop = root / "current", [], threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                target = os.path.basename(os.readlink(self.link))
            except OSError:
                target = None
            if target and (not self.seen or self.seen[-1] != target):
                self.seen.append(target)
            time.sleep(0.001)

    def __enter__(self) -> "SwitchWatcher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()


def hold_lock(root: Path) -> Path:
    """A lock another machine holds (never judged stale from here), so both deploys wait on it."""
    lock = root / ".deploy-lock"
    lock.mkdir(parents=True)
    (lock / "owner").write_text("host=elsewhere/0123456789abcdef pid=1 at=2026-01-01T00:00:00+00:00 id=probe4\n")
    return lock


def deploy_first(detector: Path, inventory: Path) -> str:
    from click.testing import CliRunner

    from host.cli import main

    result = CliRunner().invoke(main, ["deploy", str(detector), "--board", "b1", "--inventory", str(inventory)])
    assert result.exit_code == 0, result.output
    return board_status(inventory)["current"]


def check_switch_order(inventory: Path, ids: list[str], switched: list[str], older: str) -> None:
    """Ids sort in switch order; `current` is the newest; rollback returns to the other of the two."""
    from click.testing import CliRunner

    from host.cli import main

    state = board_status(inventory)
    assert switched[-2:] == sorted(ids), f"switch order {switched}, ids {sorted(ids)}"
    assert state["current"] == max(state["releases"]) == switched[-1]
    assert state["releases"] == sorted([older, *ids])
    result = CliRunner().invoke(main, ["rollback", "--board", "b1", "--inventory", str(inventory)])
    assert result.exit_code == 0, result.output
    assert board_status(inventory)["current"] == switched[-2] != older


def hand_lock_to(lock: Path, pid: int) -> None:
    """Rewrite the held lock's owner as a deploy of this machine with `pid`: to that process a lock
    it does not hold (stale: it takes the lock over), to any other one a running deploy (waited for).
    So the process started second gets the board first, whatever the timing."""
    from host.boards.lock import _process_space

    tmp = lock / "owner.new"
    tmp.write_text(f"host={_process_space()} pid={pid} at=2026-01-01T00:00:00+00:00 id=probe4hand\n")
    os.replace(tmp, lock / "owner")


@needs_sshd
@pytest.mark.slow
def test_probe4_two_cli_deploys_with_wait_switch_in_id_order(fleet, quantised):
    """Two `grasptpu deploy --wait 60` processes on one board. The one started first queues on a
    held lock (an id minted before the lock would be minted now); the lock is then handed to the
    one started second, which switches first. The first must still switch to the newest id, and
    rollback must return to the second's release, not the older one."""
    _, inventory = fleet
    _, detector, _, _ = quantised
    older = deploy_first(detector, inventory)
    root = Path(load_inventory(inventory)["b1"].root)
    lock = hold_lock(root)
    cmd = [sys.executable, "-m", "host.cli", "deploy", str(detector), "--board", "b1", "--inventory", str(inventory),
           "--wait", "60"]
    with SwitchWatcher(root) as watcher:
        first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4.0)  # connected, Python checked, queued on the lock
        second = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        hand_lock_to(lock, second.pid)
        outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert "removed the lock of a deploy that is no longer running" in outputs[1][1]  # the hand-over
    ids = [re.search(r"current = (\S+)", out).group(1) for out, _ in outputs]
    assert watcher.seen[-2:] == [ids[1], ids[0]], "the second-started deploy did not switch first"
    check_switch_order(inventory, ids, watcher.seen, older)
    assert not lock.exists()


@needs_sshd
@pytest.mark.slow
def test_probe4_the_deploy_that_takes_the_lock_last_mints_the_newest_id(fleet, quantised, monkeypatch):
    """Deterministic: the deploy started FIRST reaches the lock LAST. An id minted before the lock
    would then sort before the release that switched earlier; and each id is minted while its own
    deploy holds the board's lock (its token in the lock's owner file)."""
    from host.boards import deploy as deploy_mod, lock as lock_mod

    _, inventory = fleet
    _, detector, _, _ = quantised
    older = deploy_first(detector, inventory)
    board = load_inventory(inventory)["b1"]
    owner_file = Path(board.root) / ".deploy-lock" / "owner"
    tokens: dict[str, str] = {}
    minted_under: dict[str, bool] = {}
    real_take, real_id = lock_mod.take, deploy_mod.release_id

    def take(conn, b, wait_s, step="lock"):
        if threading.current_thread().name == "started-first":
            time.sleep(5.0)  # the second deploy takes the lock meanwhile
        token, note = real_take(conn, b, wait_s, step)
        tokens[threading.current_thread().name] = token
        return token, note

    def release_id(names: str) -> str:
        me = threading.current_thread().name
        minted_under[me] = owner_file.is_file() and owner_file.read_text().strip() == tokens.get(me)
        return real_id(names)

    monkeypatch.setattr(lock_mod, "take", take)
    monkeypatch.setattr(deploy_mod, "release_id", release_id)
    files = deploy_mod.payload([detector])
    record = deploy_mod.release_record(files, detector.name)
    results: dict[str, dict] = {}

    def run(name: str) -> None:
        results[name] = deploy_mod.deploy_board(board, files, record, wait_s=60)

    with SwitchWatcher(Path(board.root)) as watcher:
        threads = [threading.Thread(target=run, args=(n,), name=n) for n in ("started-first", "started-second")]
        for t in threads:
            t.start()
            time.sleep(0.5)
        for t in threads:
            t.join(timeout=300)
    assert set(results) == {"started-first", "started-second"}, "a deploy failed (see the thread's traceback)"
    assert minted_under == {"started-first": True, "started-second": True}
    assert results["started-second"]["current"] < results["started-first"]["current"]  # it switched first
    check_switch_order(inventory, [r["current"] for r in results.values()], watcher.seen, older)


# --- 5. hostile count streams into the decoders ---------------------------------------------------

class InterpreterSpy:
    """Stands in front of the interpreter: counts what reaches it, passes everything on."""

    def __init__(self, real) -> None:
        self.real, self.calls = real, 0

    def set_tensor(self, index, value) -> None:
        self.calls += 1
        self.real.set_tensor(index, value)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


@pytest.fixture(scope="module")
def decoder(quantised) -> Decoder:
    from device import runtime as rt

    _, detector, _, _ = quantised
    manifest = load_manifest(str(detector))
    verify(str(detector), manifest)
    d = Decoder(str(detector), manifest, rt.select(False))
    d.interpreter = InterpreterSpy(d.interpreter)
    return d


def reference_raw(d: Decoder, windows: np.ndarray) -> np.ndarray:
    """What the board computed before any of this: the contract's quantise, then the interpreter."""
    q = quantise(np.asarray(windows, np.float64).reshape((-1,) + d.window_shape), d.in_scale, d.in_zero)
    real = d.interpreter.real
    out = []
    for i in range(len(q)):
        real.set_tensor(d._in, q[i:i + 1])
        real.invoke()
        out.append(real.get_tensor(d._out)[0].copy())
    return np.array(out, np.int8)


BAD_VALUES: list[tuple[str, np.dtype, object]] = [
    ("-1", np.float64, -1), ("256", np.float64, 256), ("300", np.int64, 300), ("NaN", np.float64, np.nan),
    ("inf", np.float64, np.inf), ("-inf", np.float64, -np.inf), ("2.7", np.float64, 2.7), ("1e6", np.float64, 1e6),
    ("1e308", np.float64, 1e308), ("-0.5", np.float32, -0.5), ("255.5", np.float64, 255.5),
    ("1e-300", np.float64, 1e-300), ("int64 max", np.int64, np.iinfo(np.int64).max),
    ("int64 min", np.int64, np.iinfo(np.int64).min), ("uint64 max", np.uint64, np.iinfo(np.uint64).max),
    ("int8 -1", np.int8, -1), ("int16 256", np.int16, 256), ("float16 256", np.float16, 256),
    ("float16 NaN", np.float16, np.nan), ("float16 2.5", np.float16, 2.5), ("float16 65504", np.float16, 65504),
    ("float32 256", np.float32, 256),
]


def bad_windows(rng: np.random.Generator, shape: tuple[int, int]) -> Iterator[tuple[str, object]]:
    """(kind, window) pairs every decoder must refuse: a bad value at random places in a window of
    the right shape, a dtype that is not counts, or a wrong shape."""
    def counts() -> np.ndarray:
        return rng.integers(0, 12, shape)

    for _ in range(8):
        for kind, dtype, value in BAD_VALUES:
            w = counts().astype(dtype)
            k = int(rng.integers(1, 4))
            idx = tuple(rng.integers(0, n, k) for n in shape)
            w[idx] = value
            yield kind, w
        yield "list with -1", [[-1] + [0] * (shape[1] - 1)] + [[0] * shape[1]] * (shape[0] - 1)
        yield "list with 2**70", [[2**70] * shape[1]] * shape[0]
        yield "list with None", [[None] * shape[1]] * shape[0]
        yield "bool", counts() > 5
        yield "complex", counts().astype(np.complex128)
        yield "str", counts().astype(str)
        yield "object", counts().astype(object)
        yield "bytes", counts().astype("S3")
        yield "datetime64", counts().astype("datetime64[s]")
        yield "timedelta64", counts().astype("timedelta64[s]")
    bins, units = shape
    for wrong in [(bins, units + 1), (bins, units - 1), (bins - 1, units), (units, bins), (bins,), (1, bins, units, 1),
                  (2, 2, bins, units), (0,), (0, 0), (0, units), (bins, 0), ()]:
        yield f"shape {wrong}", np.zeros(wrong, np.uint8)
    yield "scalar", 5
    yield "string", "12 bins of counts"


def test_hostile_windows_are_refused_before_the_interpreter(decoder, capsys):
    """Seeded fuzz: every bad window is one DeviceError line, the interpreter untouched, and the
    clipped counters unchanged."""
    rng = np.random.default_rng(5)
    table, failures = Counter(), []
    for kind, window in bad_windows(rng, decoder.window_shape):
        before = (decoder.interpreter.calls, decoder.clipped_counts, decoder.clipped_windows)
        try:
            decoder.predict_raw(window)
            failures.append(f"{kind}: accepted")
        except DeviceError as exc:
            table[kind.split(" (")[0]] += 1
            if not one_line(str(exc)):
                failures.append(f"{kind}: not one line: {exc!r}")
        except Exception as exc:  # noqa: BLE001 - anything but DeviceError is the failure under test
            failures.append(f"{kind}: {type(exc).__name__}: {exc}")
        if (decoder.interpreter.calls, decoder.clipped_counts, decoder.clipped_windows) != before:
            failures.append(f"{kind}: reached the interpreter or the counters")
    with capsys.disabled():
        print(f"\nhostile windows: {sum(table.values())} refused with one DeviceError line, {len(failures)} failures")
    assert sum(table.values()) >= 200
    assert not failures, "\n".join(failures[:30])


def test_valid_windows_decode_as_before_and_saturation_is_counted_exactly(decoder, capsys):
    """Seeded fuzz over valid counts (0..255, as uint8, int, float and float16): the raw int8 output
    is the contract's quantise + interpreter, whatever the dtype; every count above the calibrated
    range is counted, in counts and in windows."""
    rng = np.random.default_rng(6)
    max_count = decoder.max_count
    assert 0 < max_count < MAX_COUNT  # the fuzz must reach both sides of it
    tried = clipped_seen = 0
    for _ in range(60):
        n = int(rng.integers(1, 5))
        windows = rng.integers(0, int(max_count) + 1, (n,) + decoder.window_shape)
        for i in np.flatnonzero(rng.random(n) < 0.5):  # some windows get counts in (max_count, 255]
            k = int(rng.integers(1, 6))
            windows[i][tuple(rng.integers(0, s, k) for s in decoder.window_shape)] = \
                rng.integers(int(np.floor(max_count)) + 1, MAX_COUNT + 1, k)
        expected = reference_raw(decoder, windows)
        for dtype in (np.uint8, np.int64, np.float32, np.float64, np.float16):
            before = (decoder.clipped_counts, decoder.clipped_windows)
            raw = decoder.predict_raw(windows.astype(dtype))
            assert raw.dtype == np.int8 and np.array_equal(raw, expected), dtype
            over = windows > max_count
            assert decoder.clipped_counts - before[0] == int(over.sum())
            assert decoder.clipped_windows - before[1] == int(over.any(axis=(1, 2)).sum())
            tried += n
            clipped_seen += int(over.sum())
    empty = decoder.predict_raw(np.zeros((0,) + decoder.window_shape, np.uint8))  # no windows, no output
    assert empty.shape == (0, decoder.n_classes)
    with capsys.disabled():
        print(f"\nvalid windows: {tried} decoded bit-exact to quantise + interpreter, {clipped_seen} counts "
              f"above max_count {max_count:.4f} counted")


def test_counted_as_clipped_exactly_when_the_int8_input_saturates(decoder):
    """`clipped_counts` promises the count the int8 input could not tell apart: check every count
    0..255 against the contract's rule before its clip."""
    counts = np.arange(MAX_COUNT + 1)
    unclipped = np.round(counts.astype(np.float32) / np.float32(decoder.in_scale)) + decoder.in_zero
    assert np.array_equal(counts > decoder.max_count, unclipped > 127)


@pytest.mark.parametrize("target", ["decoder", "ring"])
def test_a_ragged_window_is_a_device_error(decoder, target):
    """Counts from a controller may arrive as nested lists; a ragged one is bad input like any other."""
    bins, units = decoder.window_shape
    ragged = [[0] * units] * (bins - 1) + [[0] * (units - 1)]
    with pytest.raises(DeviceError):
        decoder.predict_raw(ragged) if target == "decoder" else RingBuffer(bins, units).push([[0] * units, [0]])


ROW_DTYPES = (np.uint8, np.int64, np.float64, np.float16)


def ring_state(ring: RingBuffer) -> tuple:
    return ring.buf.copy(), ring.pos, ring.filled


def test_hostile_bins_leave_the_ring_buffer_unchanged(decoder, capsys):
    """Seeded fuzz: a bad bin is one DeviceError line and the buffer is exactly as before (-1 never
    becomes 255); a valid bin, 255 included, is stored as is."""
    rng = np.random.default_rng(11)
    bins, units = decoder.window_shape
    ring = RingBuffer(bins, units)
    refused = stored = 0
    failures = []
    for kind, window in bad_windows(rng, (1, units)):
        whole = kind.startswith(("shape", "scalar", "string"))  # pushed as they are: none is one bin
        row = window if whole else window[0]
        for _ in range(int(rng.integers(0, 3))):
            good = rng.integers(0, MAX_COUNT + 1, units).astype(ROW_DTYPES[int(rng.integers(len(ROW_DTYPES)))])
            ring.push(good)
            assert np.array_equal(ring.window()[-1], good.astype(np.uint8)) and np.array_equal(ring.window()[-1], good)
            stored += 1
        before = ring_state(ring)
        try:
            ring.push(row)
            failures.append(f"{kind}: accepted")
        except DeviceError as exc:
            refused += 1
            if not one_line(str(exc)):
                failures.append(f"{kind}: not one line: {exc!r}")
        except Exception as exc:  # noqa: BLE001 - anything but DeviceError is the failure under test
            failures.append(f"{kind}: {type(exc).__name__}: {exc}")
        after = ring_state(ring)
        if not (np.array_equal(before[0], after[0]) and before[1:] == after[1:]):
            failures.append(f"{kind}: the buffer changed")
    for row in (np.full(units + 1, 1), np.full((1, units), 1), np.full((2, units), 1), np.array(3), np.array([])):
        before = ring_state(ring)
        with pytest.raises(DeviceError):
            ring.push(row)
        assert np.array_equal(before[0], ring.buf) and before[1:] == (ring.pos, ring.filled)
        refused += 1
    with capsys.disabled():
        print(f"\nring buffer: {refused} bad bins refused, buffer unchanged; {stored} valid bins stored exactly")
    assert refused >= 200
    assert not failures, "\n".join(failures[:30])
