"""Detector state: a few counting primitives, queued per event and run as one batch.

Detectors queue operations on an ``Ops`` (one per event, carrying the event's time as
``now``) and read the ``Handle`` values once the engine has executed the batch: in
Redis that is one script call, one round trip, whatever the number of detectors; in
memory (``memory://`` and ``authsvc detect replay``) the same operations with the same
semantics, on event time.

Windows slide in ``BUCKETS`` buckets of ``window / BUCKETS`` seconds: a windowed value
covers the current bucket and the ``BUCKETS - 1`` before it, i.e. between the last
``window - window/BUCKETS`` and the last ``window`` seconds. Distinct counts are exact in
memory and HyperLogLog estimates in Redis (exact in practice below a few hundred
members, within about 1% above).

Lifetimes (``ttl``) are seconds after the event; memory expires entries by event time,
Redis by its own clock (the two agree for a live stream, whose event time is now).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["BUCKETS", "Handle", "MemoryState", "Ops", "State", "bucket_keys"]

T = TypeVar("T")

BUCKETS = 6
_UNSET: Any = object()


class Handle(Generic[T]):
    """The answer of one queued operation, readable once the batch has run."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: Any = _UNSET

    @property
    def value(self) -> T:
        if self._value is _UNSET:
            raise RuntimeError("the batch holding this operation has not run yet")
        return self._value  # type: ignore[no-any-return]

    def set(self, value: T) -> None:
        self._value = value


def bucket_keys(key: str, now: int, window: int) -> tuple[list[str], int]:
    """The bucket keys a window covers (newest first) and each bucket's length."""
    length = max(1, -(-window // BUCKETS))
    current = now // length
    return [f"{key}:{current - i}" for i in range(BUCKETS)], length


class Ops(Protocol):
    """The operations of one event's batch; values are read after ``execute``."""

    now: int

    def distinct(self, key: str, members: Sequence[str], window: int) -> Handle[int]:
        """Add members; the number of distinct members within the window, after."""

    def distinct_count(self, key: str, window: int) -> Handle[int]:
        """The number of distinct members within the window (reads only)."""

    def incr(self, key: str, amount: int, ttl: int) -> Handle[int]:
        """Add ``amount`` to a counter kept ``ttl`` more seconds; its value, after."""

    def remember(self, key: str, member: str, ttl: int) -> Handle[bool]:
        """Add to a set kept ``ttl`` more seconds; True when the member is new."""

    def first(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        """Set ``key`` unless it is set: None when this call set it, else its value."""

    def claim(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        """Like ``first``, but the claim ends ``ttl`` seconds after ``now`` in event time
        (also in Redis), so that replaying old events claims as the live run did."""

    def swap(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        """Set ``key``; its previous value (None if it had none)."""

    def get(self, key: str) -> Handle[str | None]:
        """The value of ``key``."""

    def hgetall(self, key: str) -> Handle[dict[str, str]]:
        """The fields of a hash ({} if missing)."""

    def hset(self, key: str, fields: Mapping[str, str], ttl: int, *, prompt: bool = False) -> None:
        """Set fields of a hash kept ``ttl`` more seconds. A write no answer waits for
        may be held back until the next batch (Redis); ``prompt`` sends it with this
        one, for state other consumers must see at once (a flag another detector reads)."""

    def execute(self) -> None:
        """Run the queued operations, in order, as one batch."""


class State(Protocol):
    def begin(self, now: int) -> Ops:
        """A batch for an event at ``now`` (seconds)."""

    def flush(self) -> None:
        """Make every write so far durable in the state (before acknowledging events)."""


class MemoryState:
    """Detector state in this process, expired by event time (for replay and memory://)."""

    SWEEP_EVERY = 20_000

    def __init__(self) -> None:
        #: key -> (expires_at, value): a set, an int, a str or a dict. Written only
        #: through ``put`` and ``drop`` (a subclass keeps track of what changed).
        self.data: dict[str, tuple[int, Any]] = {}
        #: The time of the event being processed.
        self.now = 0
        self._batches = 0

    def flush(self) -> None:
        return None  # every operation has run already

    def begin(self, now: int) -> Ops:
        self._batches += 1
        self.now = now
        if self._batches % self.SWEEP_EVERY == 0:
            for key in [k for k, (expires_at, _) in self.data.items() if expires_at <= now]:
                self.drop(key)
        return _MemoryOps(self, now)

    def put(self, key: str, expires_at: int, value: Any) -> None:
        self.data[key] = (expires_at, value)

    def drop(self, key: str) -> None:
        del self.data[key]

    def live(self, key: str, now: int) -> Any:
        entry = self.data.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            self.drop(key)
            return None
        return entry[1]


class _MemoryOps:
    def __init__(self, state: MemoryState, now: int) -> None:
        self.now = now
        self._state = state

    def _run(self, handle: Handle[T], run: Callable[[], T]) -> Handle[T]:
        # In memory an operation runs at once: the order, and so every answer, is the
        # batch's. (Tests run every detector on both states, so a detector that reads an
        # answer before its batch ran still fails, on Redis.)
        handle.set(run())
        return handle

    def _buckets(self, key: str, window: int) -> tuple[list[str], int, int]:
        keys, length = bucket_keys(key, self.now, window)
        expires_at = (self.now // length + BUCKETS) * length
        return keys, length, expires_at

    def distinct(self, key: str, members: Sequence[str], window: int) -> Handle[int]:
        def run() -> int:
            keys, _, expires_at = self._buckets(key, window)
            current = self._state.live(keys[0], self.now)
            if current is None:
                current = set()
            current.update(members)
            self._state.put(keys[0], expires_at, current)
            return self._union(keys)

        return self._run(Handle(), run)

    def distinct_count(self, key: str, window: int) -> Handle[int]:
        return self._run(Handle(), lambda: self._union(self._buckets(key, window)[0]))

    def _union(self, keys: list[str]) -> int:
        seen: set[str] = set()
        for k in keys:
            members = self._state.live(k, self.now)
            if members:
                seen |= members
        return len(seen)

    def incr(self, key: str, amount: int, ttl: int) -> Handle[int]:
        def run() -> int:
            value = int(self._state.live(key, self.now) or 0) + amount
            self._state.put(key, self.now + ttl, value)
            return value

        return self._run(Handle(), run)

    def remember(self, key: str, member: str, ttl: int) -> Handle[bool]:
        def run() -> bool:
            members = self._state.live(key, self.now)
            if members is None:
                members = set()
            new = member not in members
            members.add(member)
            self._state.put(key, self.now + ttl, members)
            return new

        return self._run(Handle(), run)

    def first(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        def run() -> str | None:
            current = self._state.live(key, self.now)
            if current is None:
                self._state.put(key, self.now + ttl, value)
            return current  # type: ignore[no-any-return]

        return self._run(Handle(), run)

    def claim(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        return self.first(key, value, ttl)  # memory expires by event time anyway

    def swap(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        def run() -> str | None:
            current = self._state.live(key, self.now)
            self._state.put(key, self.now + ttl, value)
            return current  # type: ignore[no-any-return]

        return self._run(Handle(), run)

    def get(self, key: str) -> Handle[str | None]:
        return self._run(Handle(), lambda: self._state.live(key, self.now))

    def hgetall(self, key: str) -> Handle[dict[str, str]]:
        return self._run(Handle(), lambda: dict(self._state.live(key, self.now) or {}))

    def hset(self, key: str, fields: Mapping[str, str], ttl: int, *, prompt: bool = False) -> None:
        def run() -> None:
            current = self._state.live(key, self.now)
            if current is None:
                current = {}
            current.update(fields)  # in place: a source's successes may be many
            self._state.put(key, self.now + ttl, current)

        run()

    def execute(self) -> None:
        return None  # every operation ran when it was queued
