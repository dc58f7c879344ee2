from __future__ import annotations

import datetime
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authsvc.audit.schema import (
    GENESIS,
    PlainEvent,
    _exact_json,
    canonical_json,
    event_hash,
    uuid7,
)


def test_uuid7_is_version_7_and_time_ordered() -> None:
    first, second = uuid7(1_000), uuid7(2_000)
    assert uuid.UUID(first).version == 7
    assert first < second


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, None, "é"]}, '{"a":[true,null,"é"],"b":1}'),
        # RFC 8785 sorts by UTF-16 code units: U+10000 (D800 DC00) before U+FFFF
        ({"\uffff": 1, "\U00010000": 2}, '{"\U00010000":2,"\uffff":1}'),
        ({"k": [{"b": 1, "a": 2}]}, '{"k":[{"a":2,"b":1}]}'),
        ({"s": "\u2028\n\""}, '{"s":"\u2028\\n\\""}'),
    ],
)
def test_canonical_json(value: object, expected: str) -> None:
    assert canonical_json(value) == expected.encode("utf-8")


def test_floats_have_no_canonical_form_here() -> None:
    with pytest.raises(ValueError, match=r"\$\.a\[0\]: floats"):
        canonical_json({"a": [1.5]})


def test_event_hash_ignores_only_its_own_hash() -> None:
    event = {"seq": 1, "chain": {"prev": GENESIS, "hash": "whatever"}}
    assert event_hash(event) == event_hash({**event, "chain": {"prev": GENESIS}})
    assert event_hash(event) != event_hash({**event, "seq": 2})


# -- one canonical form, whichever encoder makes it -----------------------------------
# canonical_json hands plain values to orjson and everything else to the exact path
# (the standard library's encoder, or the UTF-16 sort); the two must agree byte for byte
# wherever both accept a value, and the exact path must decide everything else.

_keys = st.text(max_size=6)
_leaves = st.none() | st.booleans() | st.integers() | st.text()
_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(_keys, _values, max_size=6))
@settings(max_examples=200, deadline=None)
def test_the_fast_and_the_exact_encoder_agree(value: dict[str, object]) -> None:
    try:
        expected = _exact_json(value)
    except (ValueError, TypeError) as exc:  # lone surrogates: refused by both, alike
        for plain in (False, True):
            with pytest.raises(type(exc), match=re.escape(str(exc))):
                canonical_json(value, plain=plain)
        return
    assert canonical_json(value) == expected
    # A PlainEvent is not walked: the same bytes
    assert canonical_json(PlainEvent(value), plain=True) == expected  # type: ignore[arg-type]


def test_every_code_point_is_escaped_as_the_exact_encoder_escapes_it() -> None:
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(points), 4096):
        text = "".join(map(chr, points[start : start + 4096]))
        value = {"v": text, "k": [text[:64]], text[:8]: 1}
        assert canonical_json(value) == _exact_json(value)


@pytest.mark.parametrize(
    "value",
    [
        {"big": 2**64},  # beyond orjson's 64 bits
        {"neg": -(2**63) - 1},
        {"t": ("a", 1)},  # a tuple: an array
        {"m": {"\U00010000": 1, "\uffff": 2}},  # a key beyond the BMP, nested
        {"v": "\U0001f600", "w": ["\U0001f600"]},  # beyond the BMP in values only
    ],
)
def test_values_only_the_exact_path_encodes_come_out_the_same(value: object) -> None:
    assert canonical_json(value) == _exact_json(value)
    assert canonical_json(value, plain=True) == _exact_json(value)


class _Key(str):
    """A key that is a string, but not exactly ``str``."""


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({"a": {"b": float("nan")}}, ValueError, r"\$\.a\.b: floats"),
        ({"a": 1.0}, ValueError, r"\$\.a: floats"),
        ({"a": {1: "x"}}, ValueError, r"\$\.a: keys must be strings"),
        ({"a": {"b": {_Key("k"): 1}}}, ValueError, r"\$\.a\.b: keys must be strings"),
        # orjson would write these as strings; the standard library refuses them
        ({"when": datetime.datetime(2026, 1, 1)}, TypeError, "not JSON serializable"),
        ({"id": uuid.UUID(int=1)}, TypeError, "not JSON serializable"),
        ({"s": "\ud800"}, UnicodeEncodeError, "surrogates not allowed"),
    ],
)
def test_what_has_no_canonical_form_is_refused_by_name(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        canonical_json(value)
