"""The audit stream's own Redis connection, for the append on the token path.

Every token waits for its audit event's append (``RedisStore.append_audit``: one script
call per batch of events). Through the client, a command takes a connection from the
pool, polls it for unread data, checks the process id, goes through the retry and
observability layers and gives the connection back: ~45 us of Python per command,
measured here, against ~9 us for a connection's own send and read. The audit chain
appends one batch at a time per process, so one connection of the stream's own, under a
lock, serves it without the pool.

The connection is made from the client's pool (``make_connection``), so it has the same
address, credentials, database, TLS and timeouts. After a failed exchange its socket is
closed and the next command opens a new one; when the server had closed it, the append
is sent once more at once (appends are idempotent by ``event_id``). A forked child makes
a connection of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Protocol, cast

import redis
from redis.commands.core import Script
from redis.connection import ConnectionPool
from redis.exceptions import NoScriptError

__all__ = ["AuditConnection"]


class _Connection(Protocol):
    """What is used of ``redis.connection.Connection`` (untyped in redis-py)."""

    def send_command(self, *args: str | int | bytes | memoryview) -> None: ...

    def read_response(self) -> object: ...

    def disconnect(self) -> None: ...


class AuditConnection:
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._pid = -1

    def run(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> object:
        """``script`` on ``keys`` and ``args``: EVALSHA, or EVAL when the server does
        not have it cached yet. Raises what redis-py raises."""
        with self._lock:
            try:
                return self._run(script, keys, args)
            except redis.ConnectionError:
                # The pool would have found a connection the server closed (a restart,
                # its idle timeout) before using it; this one finds out by using it.
                # Once more on a new one: an append is idempotent (by event_id).
                return self._run(script, keys, args)

    def _run(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> object:
        connection = self._current()
        try:
            try:
                connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return connection.read_response()
            except NoScriptError:
                connection.send_command("EVAL", script.script, len(keys), *keys, *args)
                return connection.read_response()
        except redis.ResponseError:
            raise  # the server's answer, read whole: the connection is still in step
        except BaseException:
            # A reply may still be on its way: close the socket; the next command on
            # this connection opens a new one.
            connection.disconnect()
            raise

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.disconnect()
            self._connection = None

    def _current(self) -> _Connection:
        if self._connection is None or self._pid != os.getpid():
            # Made once per process (a forked child leaves its parent's alone: redis-py
            # shuts a connection down only in the process that made it). The pool counts
            # it as made, so it is never made again for a reconnection.
            self._connection = cast(_Connection, self._pool.make_connection())
            self._pid = os.getpid()
        return self._connection
