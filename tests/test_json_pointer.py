"""JSON Pointer (RFC 6901): escapes, arrays, the whole document, and what names nothing."""

from __future__ import annotations

import pytest

from drivers.jsonpointer import MISSING, Pointer, PointerSyntaxError

# the example document of RFC 6901 section 5
RFC = {"foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4, "i\\j": 5, 'k"l': 6, " ": 7, "m~n": 8}


@pytest.mark.parametrize("text, expected", [
    ("", RFC), ("/foo", ["bar", "baz"]), ("/foo/0", "bar"), ("/", 0), ("/a~1b", 1), ("/c%d", 2), ("/e^f", 3),
    ("/g|h", 4), ("/i\\j", 5), ('/k"l', 6), ("/ ", 7), ("/m~0n", 8),
])
def test_rfc_6901_examples(text, expected):
    assert Pointer.parse(text).resolve(RFC) == expected


def test_escapes_decode_tilde_one_before_tilde_zero():
    assert Pointer.parse("/~01").resolve({"~1": "right", "/": "wrong"}) == "right"
    assert Pointer.parse("/~10").resolve({"/0": "slash zero"}) == "slash zero"


@pytest.mark.parametrize("text", ["/foo/2", "/foo/-", "/foo/01", "/foo/-1", "/foo/x", "/missing", "/foo/0/deeper",
                                  "/a~1b/0", "/foo/ 1", "/foo/1e0"])
def test_what_names_nothing_is_missing(text):
    assert Pointer.parse(text).resolve(RFC) is MISSING


def test_null_is_a_value_not_missing():
    assert Pointer.parse("/v").resolve({"v": None}) is None
    assert Pointer.parse("/v/x").resolve({"v": None}) is MISSING


def test_an_object_key_that_looks_like_an_index_is_a_key():
    assert Pointer.parse("/01").resolve({"01": "key"}) == "key"
    assert Pointer.parse("/1/0").resolve([[9], [7]]) == 7


@pytest.mark.parametrize("text", ["foo", "foo/bar", "/a~2", "/a~", "/~x", 5, None])
def test_syntax_errors_say_what_is_valid(text):
    with pytest.raises(PointerSyntaxError):
        Pointer.parse(text)
