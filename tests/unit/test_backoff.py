"""The backoff's key: which source a failure counts for, and how (account, source) is hashed."""

from __future__ import annotations

import re

import pytest

from authsvc.anomaly.backoff import Backoff, backoff_key, source_of
from authsvc.anomaly.settings import BackoffSettings
from authsvc.errors import TooManyAttempts
from authsvc.store.memory import MemoryStore


@pytest.mark.parametrize(
    ("ip", "source"),
    [
        ("192.0.2.10", "192.0.2.10"),
        ("2001:db8:1:2::99", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.10", "192.0.2.10"),
        ("", ""),
        ("not-an-address", "not-an-address"),
    ],
)
def test_source_of(ip: str, source: str) -> None:
    assert source_of(ip) == source


def test_the_key_is_a_hash_that_no_other_pair_shares() -> None:
    key = backoff_key("alice", "192.0.2.10")
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert backoff_key("alice", "192.0.2.10") == key
    assert len({
        key,
        backoff_key("alice", "192.0.2.1"),
        backoff_key("alice1", "92.0.2.10"),
        backoff_key("Alice", "192.0.2.10"),
        backoff_key("alice\x00", "192.0.2.10"),
    }) == 5
    assert backoff_key("alice", "2001:db8::1") == backoff_key("alice", "2001:db8::2")
    assert backoff_key("a:b\r\n*", "") != backoff_key("a:b\r\n", "*")


def test_check_failed_clear() -> None:
    backoff = Backoff(MemoryStore(), BackoffSettings(threshold=2, base_delay=5, max_delay=5))
    assert backoff.check("alice", "192.0.2.10", 100) == 0
    backoff.failed("alice", "192.0.2.10", 100)
    assert backoff.check("alice", "192.0.2.10", 100) == 1
    backoff.failed("alice", "192.0.2.10", 101)
    with pytest.raises(TooManyAttempts) as refused:
        backoff.check("alice", "192.0.2.10", 102)
    assert refused.value.retry_after == 4
    assert refused.value.headers == {"Retry-After": "4"}
    assert (refused.value.status, refused.value.reason) == (429, "TOO_MANY_ATTEMPTS")
    assert backoff.check("alice", "192.0.2.10", 106) == 2
    backoff.clear("alice", "192.0.2.10", 106)
    assert backoff.check("alice", "192.0.2.10", 106) == 0
