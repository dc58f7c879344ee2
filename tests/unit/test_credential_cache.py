from __future__ import annotations

import threading
from pathlib import Path

import bcrypt
import pytest

from authsvc.config import parse_settings
from authsvc.identity.cache import VerifiedCache
from authsvc.identity.static import StaticUsers, hash_password


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entry_in_use_is_renewed_and_idle_one_expires() -> None:
    clock = Clock()
    cache = VerifiedCache(ttl=60, max_entries=10, clock=clock)
    key = cache.key("static", "alice", "pw")
    cache.put(key, "h")
    clock.now += 40  # past half the ttl: a hit renews
    assert cache.get(key) == "h"
    clock.now += 50  # 90 s after put, 50 s after the last use
    assert cache.get(key) == "h"
    clock.now += 61
    assert cache.get(key) is None


def test_cache_is_bounded() -> None:
    cache = VerifiedCache(ttl=60, max_entries=2, clock=Clock())
    keys = [cache.key("static", "u", str(i)) for i in range(3)]
    for k in keys:
        cache.put(k, "h")
    assert len(cache) == 2
    assert cache.get(keys[0]) is None


def test_ttl_zero_disables_the_cache() -> None:
    cache = VerifiedCache(ttl=0, max_entries=2, clock=Clock())
    key = cache.key("static", "u", "p")
    cache.put(key, "h")
    assert cache.get(key) is None


def test_concurrent_logins_with_one_credential_run_bcrypt_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = hash_password("pw", cost=8)
    settings = parse_settings(
        {"services": ["r"], "identities": {"static": {"users": {"u": {"password_hash": digest}}}}},
        base_dir=tmp_path,
        environ={},
    )
    cache = VerifiedCache(ttl=60, max_entries=10)
    users = StaticUsers(settings, cache)
    calls = 0
    real = bcrypt.checkpw
    counted = threading.Lock()

    def counting(password: bytes, hashed: bytes) -> bool:
        nonlocal calls
        with counted:
            calls += 1
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    barrier = threading.Barrier(8)
    accounts: list[str | None] = []

    def login() -> None:
        barrier.wait()
        accounts.append(users.authenticate("u", "pw").account)

    threads = [threading.Thread(target=login) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert accounts == ["u"] * 8
    assert calls == 1


def test_renewal_never_passes_the_entry_deadline() -> None:
    clock = Clock()
    cache = VerifiedCache(ttl=60, max_entries=10, clock=clock)
    key = cache.key("oidc", "token")
    cache.put(key, "gh", deadline_in=45)
    clock.now += 40
    assert cache.get(key) == "gh"  # renewal would give +60; the deadline caps it at 45
    clock.now += 6
    assert cache.get(key) is None
