"""The audit stream's own connection (``RedisStore.append_audit``) against a real
redis-server: what the pool did for the client's commands, it must do too."""

from __future__ import annotations

import os
import secrets

import pytest
import redis

from authsvc.audit.schema import uuid7
from authsvc.errors import StoreUnavailable
from authsvc.store.redis import RedisStore
from tests.redis_server import DurableRedis


def _event(n: int) -> dict[str, object]:
    return {"event_id": uuid7(), "type": "token.issue", "n": n}


def _append(store: RedisStore, *events: dict[str, object]) -> int:
    return store.append_audit(list(events), max_len=1000, min_time_ms=None)


def _admin(server: DurableRedis) -> redis.Redis:
    return redis.Redis(port=server.port, decode_responses=True, socket_timeout=5)


@pytest.fixture
def store(durable_redis: DurableRedis) -> RedisStore:
    """A store on the test's own redis-server, its first event appended (the script
    loaded, the stream's connection made)."""
    made = RedisStore.from_url(durable_redis.url, prefix=f"t{secrets.token_hex(4)}:")
    assert _append(made, _event(1)) == 1
    return made


def test_appends_share_one_connection_of_their_own(durable_redis: DurableRedis) -> None:
    store = RedisStore.from_url(durable_redis.url, prefix=f"t{secrets.token_hex(4)}:")
    admin = _admin(durable_redis)
    before = {c["id"] for c in admin.client_list()}
    assert [_append(store, _event(n)) for n in range(5)] == [1] * 5
    new = [c for c in admin.client_list() if c["id"] not in before]
    assert len(new) == 1 and new[0]["cmd"] in {"evalsha", "eval"}
    assert [e["n"] for _, e in store.read_audit()] == [0, 1, 2, 3, 4]
    store.close()
    assert not [c for c in admin.client_list() if c["id"] not in before]


def test_a_script_the_server_forgot_is_sent_whole(
    durable_redis: DurableRedis, store: RedisStore
) -> None:
    _admin(durable_redis).script_flush()  # this test's own server
    assert _append(store, _event(2)) == 1
    assert [e["n"] for _, e in store.read_audit()] == [1, 2]


def test_a_connection_the_server_closed_is_replaced_without_a_failure(
    durable_redis: DurableRedis, store: RedisStore
) -> None:
    admin = _admin(durable_redis)
    connection = store._audit_connection._connection
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1  # its idle timeout
    assert _append(store, _event(2)) == 1
    assert [e["n"] for _, e in store.read_audit()] == [1, 2]
    # The same connection, with a new socket: none taken from the pool's count again.
    assert store._audit_connection._connection is connection


def test_a_stopped_server_fails_the_append_by_name_and_a_restarted_one_takes_the_next(
    durable_redis: DurableRedis, store: RedisStore
) -> None:
    durable_redis.shutdown()
    with pytest.raises(StoreUnavailable, match=rf"redis at 127\.0\.0\.1:{durable_redis.port}"):
        _append(store, _event(2))
    durable_redis.start()
    event = _event(3)
    assert _append(store, event) == 1
    assert _append(store, event) == 0  # sent again: already there
    assert [e["n"] for _, e in store.read_audit()] == [1, 3]


def test_a_refused_script_leaves_the_connection_in_step(durable_redis: DurableRedis) -> None:
    store = RedisStore.from_url(durable_redis.url, prefix=f"t{secrets.token_hex(4)}:")
    admin = _admin(durable_redis)
    admin.set(store._audit, "not a stream")  # XADD now fails: WRONGTYPE
    with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
        _append(store, _event(1))
    admin.delete(store._audit)
    assert _append(store, _event(2)) == 1  # the same connection, its reply read whole
    assert [e["n"] for _, e in store.read_audit()] == [2]


def test_a_forked_child_appends_on_a_connection_of_its_own(store: RedisStore) -> None:
    pid = os.fork()
    if pid == 0:  # the child: append, and leave without cleaning up the parent's state
        try:
            code = 0 if _append(store, _event(2)) == 1 else 1
            if store._audit_connection._pid != os.getpid():
                code = 3  # it wrote on its parent's socket
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _append(store, _event(3)) == 1  # the parent's connection still works
    assert [e["n"] for _, e in store.read_audit()] == [1, 2, 3]
