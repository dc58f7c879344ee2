from __future__ import annotations

import uuid

import pytest

from authsvc.audit.schema import GENESIS, canonical_json, event_hash, uuid7


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
