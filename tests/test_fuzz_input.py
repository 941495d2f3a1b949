"""Hostile input never crashes a parser: broken configs and expressions are named errors, forged streams findings.

The config fuzzer mutates the shipped example line by line (the kind of damage an editor, a merge or a
careless integrator does) and throws random text at the loader; the expression fuzzer builds token
soup from the expression grammar's own pieces; the stream fuzzer interleaves damaged frames with a
good chain. Single-envelope fuzzing lives in tests/test_batch.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.config.load import parse_config
from core.schema import ConfigError
from gatewayd.platform.verify import ChainVerifier, Kind
from rules.expr import ExpressionError, parse_expression
from tests.test_verify import KEY, chain

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
LINES = EXAMPLE.splitlines()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.sampled_from(["", "~", "-1", "0", "1e309", "nan", ".inf", "true", "[]", "{}", "[1, 2", "'", '"',
                     "&a", "*a", "!!python/object:os.system", "1s", "-5m", "2 GiB", "0x10", "- x", ": :",
                     "\t", "{a: [", "%TAG", "? x", "<<: *a", "FIC-101.PV > 3", "`x", "PT101 ** 2"]),
    st.text(max_size=12),
    st.integers(-2**70, 2**70).map(str),
    st.floats(allow_nan=True).map(str),
)


def check_config(text: str) -> None:
    """The loader either returns a config or raises ConfigError whose every issue names a line."""
    path = Path("/etc/gatewayd/fuzz.yaml")
    try:
        parse_config(text, path)
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            message = str(issue)
            assert message.startswith(str(path)) and issue.message
            if not issue.message.startswith("the file is empty"):
                assert issue.line >= 1, f"no line named: {message}"
                assert message.startswith(f"{path}:{issue.line}: "), message


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(LINES) - 1), st.sampled_from(["value", "drop", "dup", "indent",
                                                                           "key", "junk"]), scalars),
                min_size=1, max_size=4))
def test_damaged_example_configs_are_named_errors(edits) -> None:
    lines = list(LINES)
    for index, action, scalar in edits:
        index %= len(lines)
        line = lines[index]
        if action == "value" and ":" in line:
            lines[index] = line.split(":", 1)[0] + ": " + scalar
        elif action == "drop":
            del lines[index]
        elif action == "dup":
            lines.insert(index, line)
        elif action == "indent":
            lines[index] = " " * (len(scalar) % 5) + line.lstrip()
        elif action == "key" and ":" in line:
            lines[index] = line.replace(line.strip().split(":", 1)[0], scalar.replace(":", "") or "x", 1)
        else:
            lines.insert(index, scalar)
        if not lines:
            lines = [""]
    check_config("\n".join(lines) + "\n")


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_random_text_is_a_named_error(text: str) -> None:
    check_config(text)


def test_the_example_itself_loads() -> None:
    check_config(EXAMPLE)


TOKENS = ["PT101", "TT102", "XV103", "`FIC-101.PV`", "`", "(", ")", "and", "or", "not", "+", "-", "*", "/",
          "**", "%", "<", "<=", ">", ">=", "==", "!=", "abs(", "min(", "max(", ",", "1", "1.5", "1e400", "true",
          "false", "x.y", "[0]", "lambda", "'s'", "if", "else", ":=", "\\", "\n", "#", ";", "@", "__import__("]
TAGS = {"PT101", "TT102", "XV103", "FIC-101.PV"}


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join) | st.text(max_size=60))
def test_expressions_compile_or_are_rejected_with_a_reason(source: str) -> None:
    try:
        expression = parse_expression(source, TAGS)
    except ExpressionError as exc:
        assert str(exc), "an error says what is wrong"
    else:
        assert set(expression.tags) <= TAGS


def test_deep_nesting_is_rejected_not_a_recursion_error() -> None:
    for source in ["(" * 150 + "1" + ")" * 150, "not " * 400 + "XV103", "-" * 1500 + "1", "1" + " + 1" * 450,
                   "(" * 500 + "1" + ")" * 500, "min(" * 300 + "1" + ", 2)" * 300]:
        try:
            parse_expression(source, TAGS)
        except ExpressionError as exc:
            assert any(word in str(exc) for word in ("at most", "nested", "deeply")), str(exc)


GOOD = chain(12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 11), st.sampled_from(["flip", "cut", "append", "random", "replay"]),
                          st.integers(0, 10_000), st.binary(min_size=1, max_size=40)), max_size=30),
       st.randoms(use_true_random=False))
def test_a_stream_with_forgeries_accepts_exactly_the_genuine_batches(damage, rnd) -> None:
    """Genuine frames in a shuffled order mixed with damaged copies: the verifier accepts each genuine
    batch once, no forged one, names every bad frame, and never raises."""
    stream = list(GOOD)
    for index, action, position, extra in damage:
        frame = bytearray(GOOD[index])
        if action == "flip":
            frame[position % len(frame)] ^= extra[0] | 1
        elif action == "cut":
            frame = frame[:position % len(frame)]
        elif action == "append":
            frame += extra
        elif action == "random":
            frame = bytearray(extra)
        stream.append(bytes(frame))
    rnd.shuffle(stream)
    verifier = ChainVerifier(KEY.public_key(), gateway_id="gw-1")
    for frame in stream:
        for finding in verifier.feed(frame):
            assert finding.detail
    report = verifier.report()
    accepted = {batch.seq: batch.digest for batch in report.batches}
    assert accepted == {seq: hashlib.sha256(frame).digest() for seq, frame in enumerate(GOOD, 1)}
    genuine = set(GOOD)
    forged = [frame for frame in stream if frame not in genuine]
    serious = [f for f in report.findings if f.kind not in (Kind.DUPLICATE, Kind.NEW_BOOT, Kind.LATE_ARRIVAL)]
    assert len(serious) == len(forged), "every damaged frame is named, nothing else is"
