"""One contract for every store: the same tests run against memory:// and a real Redis.

Session times are real Unix seconds (``now`` from the clock) with expiries an hour
ahead, and expiry is driven by passing a later ``now``: Redis itself expires keys on
its own clock, so the contract only holds while ``now`` does not lag the real clock.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from authsvc.errors import StoreUnavailable
from authsvc.store import Store, open_store
from authsvc.store.memory import MemoryStore
from authsvc.store.redis import RedisStore

HOUR = 3600


def _prefix() -> str:
    return f"authsvc-test:{secrets.token_hex(8)}:"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], Store]]:
    """A factory of stores of one kind; each Redis one under its own random prefix."""
    opened: list[Store] = []

    def make() -> Store:
        if request.param == "memory":
            store: Store = MemoryStore()
        else:
            url: str = request.getfixturevalue("redis_server_url")
            store = RedisStore.from_url(url, prefix=_prefix())
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], Store]) -> Store:
    return make_store()


@pytest.fixture
def now() -> int:
    return int(time.time())


def _sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.time()) + 0.05)


# -- ping and claims ----------------------------------------------------------------


def test_ping_answers(store: Store) -> None:
    store.ping()


def test_claim_once_goes_to_the_first_claimant_only(store: Store, now: int) -> None:
    assert store.claim_once("issuer|jti-1", now + HOUR) is True
    assert store.claim_once("issuer|jti-1", now + HOUR) is False
    assert store.claim_once("issuer|jti-2", now + HOUR) is True


def test_claim_is_free_again_once_it_expires(store: Store) -> None:
    # Start early in a second, so the claim cannot lapse between the first two calls.
    if time.time() % 1 > 0.5:
        _sleep_until(float(int(time.time()) + 1))
    expires_at = int(time.time()) + 1
    assert store.claim_once("nonce", expires_at) is True
    assert store.claim_once("nonce", expires_at) is False
    _sleep_until(expires_at)
    assert store.claim_once("nonce", expires_at + HOUR) is True
    assert store.claim_once("nonce", expires_at + HOUR) is False


def test_claim_with_an_expiry_already_past_still_holds_briefly(store: Store, now: int) -> None:
    assert store.claim_once("late", now - 10) is True
    assert store.claim_once("late", now - 10) is False


def test_concurrent_claims_have_exactly_one_winner(store: Store, now: int) -> None:
    threads = 20
    start = threading.Barrier(threads)

    def claim(_: int) -> bool:
        start.wait(timeout=10)
        return store.claim_once("contended", now + HOUR)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(claim, range(threads)))
    assert results.count(True) == 1
    assert results.count(False) == threads - 1


# -- sessions -----------------------------------------------------------------------


def test_use_returns_the_record_with_its_id_and_stamps_last_used(store: Store, now: int) -> None:
    record = {"subject": "alice", "kind": "human"}
    store.put_session("s1", record, index="alice", expires_at=now + HOUR)

    assert store.use_session("s1", now) == {
        "id": "s1",
        "subject": "alice",
        "kind": "human",
        "last_used": str(now),
    }
    used_again = store.use_session("s1", now + 5)
    assert used_again is not None
    assert used_again["last_used"] == str(now + 5)
    assert [r["last_used"] for r in store.list_sessions("alice", now + 6)] == [str(now + 5)]


def test_use_of_an_unknown_session_is_none(store: Store, now: int) -> None:
    assert store.use_session("nobody", now) is None


def test_a_session_is_dead_from_its_expiry_on_and_stays_dead(store: Store, now: int) -> None:
    expires_at = now + HOUR
    store.put_session("s1", {"subject": "alice"}, index="alice", expires_at=expires_at)

    assert store.use_session("s1", expires_at - 1) is not None
    assert store.use_session("s1", expires_at) is None
    assert store.use_session("s1", now) is None  # an earlier `now` does not revive it
    assert store.delete_session("s1") is False


def test_put_replaces_the_whole_record(store: Store, now: int) -> None:
    store.put_session("s1", {"a": "1", "b": "2"}, index="i", expires_at=now + HOUR)
    store.put_session("s1", {"a": "3"}, index="i", expires_at=now + HOUR)

    assert store.use_session("s1", now) == {"id": "s1", "a": "3", "last_used": str(now)}


def test_put_can_extend_a_session(store: Store, now: int) -> None:
    store.put_session("s1", {"a": "1"}, index="i", expires_at=now + HOUR)
    store.put_session("s1", {"a": "1"}, index="i", expires_at=now + 2 * HOUR)

    assert store.use_session("s1", now + HOUR) is not None


def test_returned_records_are_copies(store: Store, now: int) -> None:
    store.put_session("s1", {"a": "1"}, index="i", expires_at=now + HOUR)
    first = store.use_session("s1", now)
    assert first is not None
    first["a"] = "changed"
    store.list_sessions("i", now)[0]["a"] = "changed"

    assert store.use_session("s1", now) == {"id": "s1", "a": "1", "last_used": str(now)}


@pytest.mark.parametrize("field", ["id", "_index", "_expires_at", "_anything"])
def test_reserved_field_names_are_refused(store: Store, now: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        store.put_session("s1", {field: "x"}, index="i", expires_at=now + HOUR)
    assert store.use_session("s1", now) is None


def test_delete_is_true_once_and_removes_the_session(store: Store, now: int) -> None:
    store.put_session("s1", {"a": "1"}, index="i", expires_at=now + HOUR)
    store.put_session("s2", {"a": "2"}, index="i", expires_at=now + HOUR)

    assert store.delete_session("s1") is True
    assert store.delete_session("s1") is False
    assert store.use_session("s1", now) is None
    assert [r["id"] for r in store.list_sessions("i", now)] == ["s2"]


def test_list_returns_the_live_sessions_of_that_index_by_expiry(store: Store, now: int) -> None:
    for n, hours in enumerate([5, 2, 1, 4, 3, 2]):
        store.put_session(f"a{n}", {"n": str(n)}, index="alice", expires_at=now + hours * HOUR)
    store.put_session("bob", {"n": "4"}, index="bob", expires_at=now + 2 * HOUR)

    # a2 is dead; the rest come by expiry, then by id (a1 and a5 expire together).
    assert store.list_sessions("alice", now + HOUR) == [
        {"id": "a1", "n": "1"},
        {"id": "a5", "n": "5"},
        {"id": "a4", "n": "4"},
        {"id": "a3", "n": "3"},
        {"id": "a0", "n": "0"},
    ]
    assert store.list_sessions("bob", now) == [{"id": "bob", "n": "4"}]
    assert store.list_sessions("carol", now) == []


def test_list_deletes_the_dead_sessions_it_finds(store: Store, now: int) -> None:
    store.put_session("s1", {"a": "1"}, index="i", expires_at=now + HOUR)

    assert store.list_sessions("i", now + HOUR) == []
    assert store.use_session("s1", now) is None
    assert store.list_sessions("i", now) == []


def test_a_session_put_under_another_index_moves_there(store: Store, now: int) -> None:
    store.put_session("s1", {"a": "1"}, index="old", expires_at=now + HOUR)
    store.put_session("s1", {"a": "2"}, index="new", expires_at=now + HOUR)

    assert store.list_sessions("old", now) == []
    assert store.list_sessions("new", now) == [{"id": "s1", "a": "2"}]
    assert store.delete_session("s1") is True
    assert store.list_sessions("new", now) == []


def test_stores_do_not_see_each_others_entries(make_store: Callable[[], Store], now: int) -> None:
    one, other = make_store(), make_store()
    one.put_session("s1", {"a": "1"}, index="i", expires_at=now + HOUR)
    assert one.claim_once("k", now + HOUR) is True

    assert other.use_session("s1", now) is None
    assert other.list_sessions("i", now) == []
    assert other.claim_once("k", now + HOUR) is True


# -- memory only: locked, bounded ----------------------------------------------------


class _SlowDict(dict[str, tuple[float, str]]):
    """A dict whose reads yield the GIL, to widen any check-then-set race."""

    def get(  # type: ignore[override]
        self, key: str, default: tuple[float, str] | None = None
    ) -> tuple[float, str] | None:
        value = super().get(key, default)
        time.sleep(0.001)
        return value


def test_memory_store_claims_under_its_lock(now: int) -> None:
    store = MemoryStore()
    store._claims = _SlowDict()
    threads = 20
    start = threading.Barrier(threads)

    def claim(_: int) -> bool:
        start.wait(timeout=10)
        return store.claim_once("contended", now + HOUR)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(claim, range(threads)))
    assert results.count(True) == 1


def test_memory_store_sweeps_dead_entries(monkeypatch: pytest.MonkeyPatch, now: int) -> None:
    monkeypatch.setattr("authsvc.store.memory._SWEEP_EVERY", 5)
    store = MemoryStore()
    store.claim_once("lapsed", now - 10)  # held for one second only
    for n in range(3):
        store.put_session(f"s{n}", {"a": "1"}, index=f"i{n}", expires_at=now + HOUR)
    store.use_session("s0", now + HOUR)  # a caller's clock is now past every session
    assert (len(store._claims), len(store._sessions)) == (1, 2)

    time.sleep(1.05)
    store.put_session("fresh", {"a": "1"}, index="i", expires_at=now + 2 * HOUR)  # 5th write

    assert (len(store._claims), len(store._sessions), len(store._indexes)) == (0, 1, 1)


# -- Redis only: sharing, key layout, failures ----------------------------------------


@pytest.fixture
def redis_client(redis_server_url: str) -> Iterator[redis.Redis[str]]:
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    yield client
    client.close()


@pytest.mark.redis
def test_redis_stores_with_one_prefix_share_state(redis_server_url: str, now: int) -> None:
    prefix = _prefix()
    worker_a = RedisStore.from_url(redis_server_url, prefix=prefix)
    worker_b = RedisStore.from_url(redis_server_url, prefix=prefix)
    try:
        worker_a.put_session("s1", {"a": "1"}, index="i", expires_at=now + HOUR)
        assert worker_a.claim_once("k", now + HOUR) is True

        assert worker_b.claim_once("k", now + HOUR) is False
        assert worker_b.use_session("s1", now) == {"id": "s1", "a": "1", "last_used": str(now)}
    finally:
        worker_a.close()
        worker_b.close()


@pytest.mark.redis
def test_redis_key_layout_and_expiries(
    redis_server_url: str, redis_client: redis.Redis[str], now: int
) -> None:
    prefix = _prefix()
    store = RedisStore.from_url(redis_server_url, prefix=prefix)
    try:
        store.claim_once("k", now + HOUR)
        store.put_session("short", {"a": "2"}, index="i", expires_at=now + HOUR)
        store.put_session("long", {"a": "1"}, index="i", expires_at=now + 3 * HOUR)
        store.put_session("mid", {"a": "3"}, index="i", expires_at=now + 2 * HOUR)
    finally:
        store.close()

    assert sorted(redis_client.scan_iter(match=f"{prefix}*")) == [
        f"{prefix}once:k",
        f"{prefix}session:long",
        f"{prefix}session:mid",
        f"{prefix}session:short",
        f"{prefix}sessions-index:i",
    ]
    assert redis_client.hgetall(f"{prefix}session:short") == {
        "a": "2",
        "_index": "i",
        "_expires_at": str(now + HOUR),
    }
    assert redis_client.zrange(f"{prefix}sessions-index:i", 0, -1, withscores=True) == [
        ("short", now + HOUR),
        ("mid", now + 2 * HOUR),
        ("long", now + 3 * HOUR),
    ]
    assert _expiretime(redis_client, f"{prefix}once:k") == now + HOUR
    assert _expiretime(redis_client, f"{prefix}session:short") == now + HOUR
    # The index outlives its longest-lived member, whatever order they were put in.
    assert _expiretime(redis_client, f"{prefix}sessions-index:i") == now + 3 * HOUR


def _expiretime(client: redis.Redis[str], key: str) -> int:
    # EXPIRETIME (Redis 7) is missing from the installed types-redis stubs.
    return int(client.execute_command("EXPIRETIME", key))


@pytest.mark.redis
def test_redis_errors_become_store_unavailable(
    redis_server_url: str, redis_client: redis.Redis[str], now: int
) -> None:
    prefix = _prefix()
    redis_client.set(f"{prefix}session:s1", "not a hash")
    store = RedisStore.from_url(redis_server_url, prefix=prefix)
    try:
        wrong_type = r"^redis at 127\.0\.0\.1:\d+ failed: .*WRONGTYPE"
        with pytest.raises(StoreUnavailable, match=wrong_type):
            store.use_session("s1", now)
    finally:
        store.close()


_CALLS: dict[str, Callable[[Store], object]] = {
    "ping": lambda s: s.ping(),
    "claim_once": lambda s: s.claim_once("k", int(time.time()) + HOUR),
    "put_session": lambda s: s.put_session(
        "s1", {"a": "1"}, index="i", expires_at=int(time.time()) + HOUR
    ),
    "use_session": lambda s: s.use_session("s1", int(time.time())),
    "delete_session": lambda s: s.delete_session("s1"),
    "list_sessions": lambda s: s.list_sessions("i", int(time.time())),
}


@pytest.mark.parametrize("method", sorted(_CALLS))
def test_every_method_raises_store_unavailable_when_redis_is_down(
    closed_port: int, method: str
) -> None:
    store = RedisStore.from_url(
        f"redis://authsvc:hunter2-secret@127.0.0.1:{closed_port}/0", prefix=_prefix()
    )
    try:
        with pytest.raises(StoreUnavailable) as caught:
            _CALLS[method](store)
    finally:
        store.close()

    assert caught.value.message.startswith(f"redis at 127.0.0.1:{closed_port} did not answer: ")
    assert "hunter2-secret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    assert caught.value.status == 503


# -- open_store ---------------------------------------------------------------------


def test_open_store_memory() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    store.close()


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380/1", "unix:///tmp/r.sock"]
)
def test_open_store_redis_connects_lazily(url: str) -> None:
    store = open_store(url, prefix=_prefix())
    assert isinstance(store, RedisStore)
    store.close()


def test_open_store_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match=r"unsupported storage URL scheme in 'ftp://x'"):
        open_store("ftp://x")


def test_configs_are_announced_per_writer(store: Store) -> None:
    assert store.configs() == {}
    store.announce_config("host-a:1", "abc", 100)
    store.announce_config("host-b:2", "def", 101)
    store.announce_config("host-a:1", "123", 102)
    assert store.configs() == {"host-a:1": "123@102", "host-b:2": "def@101"}


def test_claim_value_answers_the_holders_value(store: Store, now: int) -> None:
    key = f"jti-{secrets.token_hex(4)}"
    assert store.claim_value(key, "hash-a", now + 60) is None
    assert store.claim_value(key, "hash-b", now + 60) == "hash-a"
    assert store.claim_value(key, "hash-a", now + 60) == "hash-a"
    assert store.claim_once(key, now + 60) is False


def test_concurrent_claim_value_has_one_winner(store: Store, now: int) -> None:
    key = f"jti-{secrets.token_hex(4)}"
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda i: store.claim_value(key, f"v{i}", now + 60), range(20)))
    winners = [i for i, a in enumerate(answers) if a is None]
    assert len(winners) == 1
    assert set(answers) - {None} == {f"v{winners[0]}"}
