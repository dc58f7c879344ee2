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
from typing import Any

import pytest
import redis

from authsvc.errors import StoreUnavailable
from authsvc.store import BackoffState, Store, open_store
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
def redis_client(redis_server_url: str) -> Iterator[redis.Redis]:
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
    redis_server_url: str, redis_client: redis.Redis, now: int
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


def _expiretime(client: redis.Redis, key: str) -> int:
    return int(client.expiretime(key))


@pytest.mark.redis
def test_redis_errors_become_store_unavailable(
    redis_server_url: str, redis_client: redis.Redis, now: int
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


#: Backoff limits for the contract: a 60 s window, waits of 2, 4, 8 s from the 3rd failure.
_LIMITS = {"window": 60, "threshold": 3, "base_delay": 2, "max_delay": 10}


_CALLS: dict[str, Callable[[Store], object]] = {
    "ping": lambda s: s.ping(),
    "claim_once": lambda s: s.claim_once("k", int(time.time()) + HOUR),
    "put_session": lambda s: s.put_session(
        "s1", {"a": "1"}, index="i", expires_at=int(time.time()) + HOUR
    ),
    "use_session": lambda s: s.use_session("s1", int(time.time())),
    "delete_session": lambda s: s.delete_session("s1"),
    "list_sessions": lambda s: s.list_sessions("i", int(time.time())),
    "append_audit": lambda s: s.append_audit(
        [{"event_id": "e1"}], max_len=10, min_time_ms=None
    ),
    "read_audit": lambda s: s.read_audit(),
    "audit_length": lambda s: s.audit_length(),
    "note_failure": lambda s: s.note_failure("k", int(time.time()), **_LIMITS),
    "backoff_state": lambda s: s.backoff_state("k", int(time.time())),
    "clear_failures": lambda s: s.clear_failures("k"),
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


# -- the audit stream -----------------------------------------------------------------
#
# Trimming: the memory store trims exactly; Redis trims approximately (MAXLEN ~ / MINID
# ~ drop whole stream nodes only), so it keeps at least what was asked and at most one
# node (stream-node-max-entries, 100 by default) more.

_NODE = 100


def _events(n: int, tag: str = "e") -> list[dict[str, object]]:
    return [{"event_id": f"{tag}{i}", "seq": i, "writer": "w"} for i in range(n)]


def _read_all(store: Store, page: int = 1000) -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    after = "0"
    while batch := store.read_audit(after, page):
        out.extend(batch)
        after = batch[-1][0]
    return out


def _key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


def test_append_audit_is_idempotent_by_event_id(store: Store) -> None:
    e = _events(5)
    assert store.append_audit(e[:3], max_len=1000, min_time_ms=None) == 3
    assert store.append_audit(e[1:4], max_len=1000, min_time_ms=None) == 1
    assert store.append_audit([e[4], e[4], e[0]], max_len=1000, min_time_ms=None) == 1
    assert store.append_audit([], max_len=1000, min_time_ms=None) == 0

    assert store.audit_length() == 5
    assert [event for _, event in _read_all(store)] == e


def test_a_replayed_event_is_not_appended_even_with_other_fields(store: Store) -> None:
    assert store.append_audit([{"event_id": "x", "n": 1}], max_len=10, min_time_ms=None) == 1
    assert store.append_audit([{"event_id": "x", "n": 2}], max_len=10, min_time_ms=None) == 0
    assert [event for _, event in store.read_audit()] == [{"event_id": "x", "n": 1}]


def test_read_audit_is_in_order_and_pages_by_the_last_id(store: Store) -> None:
    sent = _events(25)
    for i in range(0, 25, 4):  # several batches, so several milliseconds may be involved
        store.append_audit(sent[i : i + 4], max_len=1000, min_time_ms=None)

    pages = []
    after = "0"
    while page := store.read_audit(after, 10):
        pages.append(page)
        after = page[-1][0]
    assert [len(p) for p in pages] == [10, 10, 5]
    entries = [entry for p in pages for entry in p]
    assert [event for _, event in entries] == sent
    keys = [_key(stream_id) for stream_id, _ in entries]
    assert keys == sorted(keys) and len(set(keys)) == 25
    assert store.read_audit(entries[-1][0]) == []
    assert store.read_audit(entries[11][0], 2) == entries[12:14]
    assert store.read_audit(str(_key(entries[0][0])[0] - 1)) == entries[:25]


def test_an_empty_audit_stream(store: Store) -> None:
    assert store.audit_length() == 0
    assert store.read_audit() == []


def test_append_audit_trims_to_about_max_len_keeping_the_newest(store: Store) -> None:
    sent = _events(250)
    for i in range(0, 250, 10):
        store.append_audit(sent[i : i + 10], max_len=20, min_time_ms=None)

    length = store.audit_length()
    assert 20 <= length <= 20 + _NODE
    if isinstance(store, MemoryStore):
        assert length == 20  # exact
    assert [event for _, event in _read_all(store)] == sent[-length:]


def test_append_audit_drops_whole_nodes_older_than_min_time(store: Store) -> None:
    old = _events(150, "old")
    store.append_audit(old, max_len=1000, min_time_ms=None)
    time.sleep(0.01)
    cutoff = int(time.time() * 1000)
    new = {"event_id": "new", "seq": 0, "writer": "w"}
    assert store.append_audit([new], max_len=1000, min_time_ms=cutoff) == 1

    events = [event for _, event in _read_all(store)]
    assert events[-1] == new
    assert 1 <= len(events) <= 1 + _NODE  # Redis drops the first full node at least
    assert events[:-1] == old[len(old) - len(events) + 1 :]
    if isinstance(store, MemoryStore):
        assert events == [new]  # exact


def test_event_ids_are_remembered_after_their_events_are_trimmed(store: Store) -> None:
    sent = _events(30)
    store.append_audit(sent, max_len=5, min_time_ms=None)
    assert store.append_audit(sent, max_len=5, min_time_ms=None) == 0
    assert 5 <= store.audit_length() <= 5 + _NODE


def test_event_ids_are_remembered_for_the_retention_window_only(store: Store) -> None:
    # A window of 0.2 s is remembered for one whole second (rounded up, never down).
    event = {"event_id": "short-lived"}
    window_start = int(time.time() * 1000) - 200
    assert store.append_audit([event], max_len=10, min_time_ms=window_start) == 1
    assert store.append_audit([event], max_len=10, min_time_ms=window_start) == 0
    time.sleep(1.1)
    assert store.append_audit([event], max_len=10, min_time_ms=None) == 1


def test_concurrent_appends_of_the_same_events_append_each_once(store: Store) -> None:
    sent = _events(50)

    def append(offset: int) -> int:
        rotated = sent[offset:] + sent[:offset]
        return sum(
            store.append_audit(rotated[i : i + 5], max_len=1000, min_time_ms=None)
            for i in range(0, 50, 5)
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        added = list(pool.map(append, range(0, 40, 5)))
    assert sum(added) == 50
    stored = [event["event_id"] for _, event in _read_all(store)]
    assert sorted(stored) == sorted(e["event_id"] for e in sent)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([{"event_id": "ok"}, {"seq": 1}], "audit event 1 has no string event_id"),
        ([{"event_id": 7}], "audit event 0 has no string event_id"),
        ([{"event_id": ""}], "audit event 0 has no string event_id"),
        ([{"event_id": "ok"}, {"event_id": "bad", "x": {1, 2}}], "audit event bad is not JSON"),
        ([{"event_id": "nan", "x": float("nan")}], "audit event nan is not JSON"),
    ],
)
def test_append_audit_refuses_bad_events_whole(
    store: Store, events: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        store.append_audit(events, max_len=10, min_time_ms=None)
    assert store.audit_length() == 0
    assert store.append_audit([{"event_id": "ok"}], max_len=10, min_time_ms=None) == 1


@pytest.mark.parametrize("after", ["", "abc", "1-2-3", "-1", "(5"])
def test_read_audit_refuses_a_bad_stream_id(store: Store, after: str) -> None:
    with pytest.raises(ValueError, match="not an audit stream id"):
        store.read_audit(after)


def test_audit_limits_are_checked(store: Store) -> None:
    with pytest.raises(ValueError, match="max_len"):
        store.append_audit([{"event_id": "a"}], max_len=0, min_time_ms=None)
    with pytest.raises(ValueError, match="min_time_ms"):
        store.append_audit([{"event_id": "a"}], max_len=1, min_time_ms=-1)
    with pytest.raises(ValueError, match="count"):
        store.read_audit("0", 0)


def test_audit_events_come_back_as_json_values(store: Store) -> None:
    event = {"event_id": "j", "tuple": (1, 2), "text": "é\u2028", "none": None, "ok": True}
    store.append_audit([event], max_len=10, min_time_ms=None)
    [(_, back)] = store.read_audit()
    assert back == {**event, "tuple": [1, 2]}


def test_stores_do_not_share_audit_streams(make_store: Callable[[], Store]) -> None:
    one, other = make_store(), make_store()
    one.append_audit(_events(3), max_len=10, min_time_ms=None)
    assert other.audit_length() == 0
    assert other.append_audit(_events(3), max_len=10, min_time_ms=None) == 3


@pytest.mark.redis
def test_redis_audit_key_layout(
    redis_server_url: str, redis_client: redis.Redis
) -> None:
    prefix = _prefix()
    store = RedisStore.from_url(redis_server_url, prefix=prefix)
    try:
        an_hour_ago = int(time.time() * 1000) - HOUR * 1000
        store.append_audit([{"event_id": "a"}], max_len=10, min_time_ms=an_hour_ago)
        store.append_audit([{"event_id": "b"}], max_len=10, min_time_ms=None)
    finally:
        store.close()

    assert sorted(redis_client.scan_iter(match=f"{prefix}*")) == [
        f"{prefix}audit",
        f"{prefix}audit-seen:a",
        f"{prefix}audit-seen:b",
    ]
    assert redis_client.type(f"{prefix}audit") == "stream"
    assert [fields for _, fields in redis_client.xrange(f"{prefix}audit") or []] == [
        {"event": '{"event_id":"a"}'},
        {"event": '{"event_id":"b"}'},
    ]
    assert HOUR - 2 <= redis_client.ttl(f"{prefix}audit-seen:a") <= HOUR + 1
    assert 7 * 86400 - 2 <= redis_client.ttl(f"{prefix}audit-seen:b") <= 7 * 86400


@pytest.mark.redis
def test_redis_append_audit_is_one_round_trip(
    redis_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore.from_url(redis_server_url, prefix=_prefix())
    store.append_audit(_events(1, "warm"), max_len=10, min_time_ms=None)  # loads the script
    sent: list[object] = []
    through_client: list[object] = []
    connection = store._audit_connection._current()  # the stream's own (audit_connection)
    send: Callable[..., Any] = connection.send_command
    execute: Callable[..., Any] = store._client.execute_command

    def counting(log: list[object], call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **options: Any) -> Any:
            log.append(args[0])
            return call(*args, **options)

        return counted

    monkeypatch.setattr(connection, "send_command", counting(sent, send))
    monkeypatch.setattr(store._client, "execute_command", counting(through_client, execute))
    try:
        assert store.append_audit(_events(20), max_len=10, min_time_ms=1) == 20
    finally:
        store.close()
    assert sent == ["EVALSHA"]
    assert through_client == []


# -- backoff counters ---------------------------------------------------------------


def _fail(store: Store, key: str, now: int, times: int = 1, **limits: int) -> list[int]:
    """``note_failure`` ``times`` times at ``now``; each answer (its wait_until)."""
    return [store.note_failure(key, now, **{**_LIMITS, **limits}) for _ in range(times)]


def test_an_unknown_counter_is_empty(store: Store, now: int) -> None:
    assert store.backoff_state("nobody", now) == BackoffState(0, 0)
    store.clear_failures("nobody")  # nothing to clear is fine


def test_failures_below_the_threshold_set_no_wait(store: Store, now: int) -> None:
    assert _fail(store, "k", now, 2) == [0, 0]
    assert store.backoff_state("k", now) == BackoffState(2, 0)
    assert store.backoff_state("k", now + 59) == BackoffState(2, 0)


def test_from_the_threshold_on_each_failure_doubles_the_wait_up_to_the_cap(
    store: Store, now: int
) -> None:
    assert _fail(store, "k", now, 2) == [0, 0]
    assert _fail(store, "k", now + 1, 1) == [now + 1 + 2]
    assert _fail(store, "k", now + 3, 1) == [now + 3 + 4]
    assert _fail(store, "k", now + 7, 1) == [now + 7 + 8]
    assert _fail(store, "k", now + 15, 2) == [now + 15 + 10] * 2  # capped at max_delay
    assert store.backoff_state("k", now + 15) == BackoffState(7, now + 25)
    assert store.backoff_state("k", now + 24) == BackoffState(7, now + 25)
    assert store.backoff_state("k", now + 25) == BackoffState(7, 0)


def test_a_wait_is_never_shortened(store: Store, now: int) -> None:
    _fail(store, "k", now, 4)  # the 4th failure: wait 4 s
    assert store.backoff_state("k", now).wait_until == now + 4
    # a failure that still got through (a race, an outage) counts and only lengthens it
    assert _fail(store, "k", now + 1, 1, max_delay=2, base_delay=1) == [now + 4]


def test_many_failures_wait_max_delay_without_overflow(store: Store, now: int) -> None:
    answers = _fail(store, "k", now, 80, threshold=1, base_delay=3, max_delay=900)
    assert answers[:4] == [now + 3, now + 6, now + 12, now + 24]
    assert set(answers[9:]) == {now + 900}
    assert store.backoff_state("k", now) == BackoffState(80, now + 900)


def test_the_window_opens_at_the_first_failure_and_then_starts_over(
    store: Store, now: int
) -> None:
    _fail(store, "k", now, 2)
    _fail(store, "k", now + 30, 0)
    assert store.backoff_state("k", now + 59) == BackoffState(2, 0)
    assert store.backoff_state("k", now + 60) == BackoffState(0, 0)
    # the window is fixed (from the first failure), not sliding: two more after it are
    # the first two of a new window, below the threshold again
    assert _fail(store, "k", now + 60, 2) == [0, 0]
    assert store.backoff_state("k", now + 60) == BackoffState(2, 0)


def test_a_wait_outlives_the_window_that_set_it(store: Store, now: int) -> None:
    _fail(store, "k", now, 8, window=5, max_delay=100)  # the 8th failure: wait 64 s
    assert store.backoff_state("k", now + 10) == BackoffState(0, now + 64)
    assert store.backoff_state("k", now + 64) == BackoffState(0, 0)


def test_clear_forgets_the_failures_and_the_wait(store: Store, now: int) -> None:
    _fail(store, "k", now, 3)
    _fail(store, "other", now, 3)
    store.clear_failures("k")
    assert store.backoff_state("k", now) == BackoffState(0, 0)
    assert _fail(store, "k", now, 1) == [0]
    assert store.backoff_state("other", now) == BackoffState(3, now + 2)


def test_counters_are_per_key_and_per_store(make_store: Callable[[], Store], now: int) -> None:
    one, other = make_store(), make_store()
    _fail(one, "k", now, 3)
    assert one.backoff_state("k2", now) == BackoffState(0, 0)
    assert other.backoff_state("k", now) == BackoffState(0, 0)


def test_concurrent_failures_are_each_counted(store: Store, now: int) -> None:
    threads = 20
    start = threading.Barrier(threads)

    def fail(_: int) -> int:
        start.wait(timeout=10)
        return store.note_failure("contended", now, **{**_LIMITS, "max_delay": 10_000})

    with ThreadPoolExecutor(max_workers=threads) as pool:
        answers = sorted(pool.map(fail, range(threads)))
    # every failure from the 3rd on saw its own count: waits 2, 4, ... 2**18 s
    assert answers == [0, 0] + [now + min(10_000, 2 << n) for n in range(threads - 2)]
    assert store.backoff_state("contended", now).failures == threads


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"window": 0}, "window must be at least 1, not 0"),
        ({"threshold": 0}, "threshold must be at least 1, not 0"),
        ({"base_delay": -1}, "base_delay must be at least 1, not -1"),
        ({"base_delay": 20}, r"max_delay \(10\) must not be shorter than base_delay"),
    ],
)
def test_backoff_limits_are_checked(
    store: Store, now: int, limits: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _fail(store, "k", now, 1, **limits)
    assert store.backoff_state("k", now) == BackoffState(0, 0)


def test_memory_store_sweeps_dead_counters(monkeypatch: pytest.MonkeyPatch, now: int) -> None:
    monkeypatch.setattr("authsvc.store.memory._SWEEP_EVERY", 5)
    store = MemoryStore()
    _fail(store, "short", now, 1, window=5)
    _fail(store, "waiting", now, 3, window=5)  # waits until now + 2
    assert sorted(store._counters) == ["short", "waiting"]
    # the 5th write, at a now past both the window and the wait: both are dead
    _fail(store, "fresh", now + 5, 1)
    assert sorted(store._counters) == ["fresh"]


@pytest.mark.redis
def test_redis_backoff_key_layout_and_expiry(
    redis_server_url: str, redis_client: redis.Redis, now: int
) -> None:
    prefix = _prefix()
    store = RedisStore.from_url(redis_server_url, prefix=prefix)
    try:
        _fail(store, "a1b2", now, 2)
        _fail(store, "waits", now, 8, max_delay=100)  # 64 s, past the 60 s window
    finally:
        store.close()

    assert sorted(redis_client.scan_iter(match=f"{prefix}*")) == [
        f"{prefix}backoff:a1b2",
        f"{prefix}backoff:waits",
    ]
    assert redis_client.hgetall(f"{prefix}backoff:a1b2") == {
        "failures": "2",
        "reset_at": str(now + 60),
        "wait_until": "0",
    }
    # a counter lives as long as its window or its wait, counted from the caller's now
    assert 58 <= redis_client.ttl(f"{prefix}backoff:a1b2") <= 60
    assert 62 <= redis_client.ttl(f"{prefix}backoff:waits") <= 64


@pytest.mark.redis
def test_redis_backoff_calls_are_one_round_trip_each(
    redis_server_url: str, monkeypatch: pytest.MonkeyPatch, now: int
) -> None:
    store = RedisStore.from_url(redis_server_url, prefix=_prefix())
    _fail(store, "warm", now, 1)  # loads the script
    sent: list[object] = []
    execute: Callable[..., Any] = store._client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        sent.append(args[0])
        return execute(*args, **options)

    monkeypatch.setattr(store._client, "execute_command", counting)
    try:
        _fail(store, "k", now, 1)
        store.backoff_state("k", now)
        store.clear_failures("k")
    finally:
        store.close()
    assert sent == ["EVALSHA", "HMGET", "DEL"]


# -- open anomaly alerts ------------------------------------------------------------


def test_an_open_alert_is_read_until_it_ends(store: Store, now: int) -> None:
    assert store.open_alert("static:alice", now) is None
    store.mark_open_alert("static:alice", "new_context", now + 600)
    assert store.open_alert("static:alice", now) == "new_context"
    assert store.open_alert("static:alice", now + 599) == "new_context"
    assert store.open_alert("static:alice", now + 600) is None
    assert store.open_alert("static:bob", now) is None
