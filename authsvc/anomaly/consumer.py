"""``authsvc detect run``: the detectors over the live audit stream, as a consumer group.

Each consumer reads batches of new entries (XREADGROUP), runs every event through the
engine (detector state in Redis, shared by the group), records the alerts through the
audit pipeline (so they are chained and checkpointed like every other event, as a
writer of their own), queues them for the webhook, and only then acknowledges the
batch (XACK): a consumer that dies leaves its unacknowledged entries pending, and they
are processed again, at least once. Every ``claim_every`` seconds a consumer takes over
(XAUTOCLAIM) the entries another consumer has left pending for ``min_idle`` seconds;
under a name of its own (``--consumer``) a restarted consumer first reads what it left.

An event processed twice finds the same alert again (alert ids are derived from what
triggered them) or none (the engine's claim already holds the first): each alert is
recorded once (``GroupStream.begin_record``) and queued for the webhook once
(``Outbox.enqueue``). Detector counters are not idempotent, so an event counted twice
can move a threshold: at least once is the promise, not exactly once.

That is ``anomaly.consumer_state: redis``. With ``memory`` (the default) the consumer is
a ``HoldingConsumer``: one consumer of the group at a time holds the state in its
memory (see ``authsvc.anomaly.held_state``), the others wait to take over, and each
event moves the state exactly once.

The consumer reads only ``token.issue`` events; its own alerts and checkpoints come back
through the stream and are acknowledged like the rest. An event a detector fails on is
logged, counted and acknowledged (it would fail again); a Redis failure stops the
consumer (StoreUnavailable), leaving its batch pending for the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from authsvc.anomaly.engine import Engine
from authsvc.anomaly.held_state import HeldState, Lease, LeaseLost
from authsvc.anomaly.metrics import Metrics
from authsvc.anomaly.stream import Entry, GroupStream, RecordState
from authsvc.audit import AuditLog
from authsvc.errors import StoreUnavailable

__all__ = ["Consumer", "HoldingConsumer"]

log = logging.getLogger(__name__)

#: How long a consumer may hold an alert's recording lock (one audit append, a
#: checkpoint, each under the store's 2 s socket timeout, with room to spare).
RECORD_LOCK_MS = 10_000
#: How often a consumer looks again while another one records an alert.
_RECORD_POLL = 0.05
#: Consumers with nothing pending, idle this long, are removed from the group.
FORGET_IDLE_MS = 3600_000


class Consumer:
    def __init__(
        self,
        stream: GroupStream,
        engine: Engine,
        audit: AuditLog,
        *,
        metrics: Metrics | None = None,
        queue: Callable[[Mapping[str, Any]], object] | None = None,
        batch: int = 100,
        block_ms: int = 1000,
        min_idle: float = 30.0,
        claim_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``queue`` takes each recorded alert for the webhook (``Webhook.queue``)."""
        if batch < 1 or block_ms < 1 or min_idle <= 0:
            raise ValueError("batch, block_ms and min_idle must be positive")
        self.stream = stream
        self.engine = engine
        self.metrics = metrics or Metrics()
        self._audit = audit
        self._queue = queue
        self._batch = batch
        self._block_ms = block_ms
        self._min_idle_ms = int(min_idle * 1000)
        self._claim_every = min_idle / 2 if claim_every is None else claim_every
        self._clock = clock

    def run(self, stop: threading.Event) -> None:
        """Process entries until ``stop`` is set (between two events: the rest of a
        batch stays pending). Raises StoreUnavailable when Redis fails."""
        while not stop.is_set() and self._handle(self.stream.read(self._batch, own=True), stop):
            pass
        next_claim = self._clock()
        while not stop.is_set():
            if self._clock() >= next_claim:
                self.claim(stop)
                next_claim = self._clock() + self._claim_every
            self._handle(self.stream.read(self._batch, self._block_ms), stop)

    def claim(self, stop: threading.Event | None = None) -> int:
        """Take over and process the entries idle past ``min_idle``; how many."""
        taken = self._claim(self._min_idle_ms, stop)
        self._forget(max(FORGET_IDLE_MS, 10 * self._min_idle_ms))
        return taken

    def drain(self) -> int:
        """Process entries until none is new (tests, benchmarks); how many."""
        done = 0
        while entries := self.stream.read(self._batch, 1):
            self._handle(entries, None)
            done += len(entries)
        return done

    def _claim(self, min_idle_ms: int, stop: threading.Event | None) -> int:
        cursor, taken = "0-0", 0
        while stop is None or not stop.is_set():
            cursor, entries = self.stream.claim(min_idle_ms, self._batch, cursor)
            if entries:
                log.info("claimed %d entries idle for %d ms or more", len(entries), min_idle_ms)
                self.metrics.add("claimed", len(entries))
                taken += len(entries)
                self._handle(entries, stop)
            if cursor == "0-0":
                break
        return taken

    def _forget(self, idle_ms: int) -> None:
        """Remove from the group the consumers with nothing pending, idle ``idle_ms``."""
        for name in self.stream.forget_consumers(idle_ms):
            log.info("removed consumer %s from the group (nothing pending, idle)", name)

    def _handle(self, entries: Sequence[Entry], stop: threading.Event | None) -> bool:
        """Process entries in order, then acknowledge those processed; False if none."""
        processed: list[str] = []
        for entry in entries:
            if stop is not None and stop.is_set():
                break
            if entry.event is not None and self._new(entry):
                self._process(entry)
            processed.append(entry.id)
        self._keep(processed)
        self.stream.ack(processed)
        self.metrics.add("events", len(processed))
        return bool(entries)

    def _new(self, entry: Entry) -> bool:
        """False for an entry the state holds already (it is only acknowledged)."""
        return True

    def _keep(self, processed: list[str]) -> None:
        """Make the state hold the processed entries, before they are acknowledged."""
        self.engine.flush()

    def _process(self, entry: Entry) -> None:
        assert entry.event is not None
        try:
            alerts = self.engine.process(entry.event)
        except StoreUnavailable:
            raise
        except Exception:
            self.metrics.add("event_errors")
            log.exception(
                "entry %s (event %s): a detector failed; skipped",
                entry.id,
                entry.event.get("event_id"),
            )
            return
        for alert in alerts:
            self.record(alert)

    def record(self, alert: Mapping[str, Any]) -> bool:
        """Record the alert unless it is in the stream already, and queue it for the
        webhook either way (queued once); True if this call recorded it."""
        event_id = str(alert["event_id"])
        while True:
            state = self.stream.begin_record(event_id, RECORD_LOCK_MS)
            if state is RecordState.SEEN:
                self.metrics.add("alerts_duplicate")
                recorded = False
                break
            if state is RecordState.OURS:
                try:
                    self._audit.record(alert)
                except (ValueError, TypeError):  # refused as it is: it would be again
                    self.metrics.add("event_errors")
                    log.exception("alert %s refused by the audit log; dropped", event_id)
                    return False
                finally:
                    self.stream.end_record(event_id)
                info = alert["alert"]
                self.metrics.alert(str(info["detector"]), str(info["severity"]))
                recorded = True
                break
            time.sleep(_RECORD_POLL)  # another consumer is recording it
        if self._queue is not None:
            self._queue(alert)
        return recorded


class HoldingConsumer(Consumer):
    """The consumer that holds the group's detector state while it holds the lease.

    The engine runs on ``state`` (a ``HeldState``). ``run`` waits for the lease (looking
    every ``poll`` seconds), takes over (the last checkpoint, then every entry pending
    in the group, in order), and then reads new entries; every batch ends with a
    checkpoint, which also renews the lease, and then the acknowledgement. When the
    lease is lost (this process paused past it, another consumer took over) it lets the
    state go and waits again; when stopped, it releases the lease at once.
    """

    def __init__(
        self,
        stream: GroupStream,
        engine: Engine,
        state: HeldState,
        lease: Lease,
        audit: AuditLog,
        *,
        metrics: Metrics | None = None,
        queue: Callable[[Mapping[str, Any]], object] | None = None,
        batch: int = 100,
        block_ms: int = 1000,
        poll: float = 1.0,
    ) -> None:
        super().__init__(
            stream, engine, audit, metrics=metrics, queue=queue, batch=batch, block_ms=block_ms
        )
        if block_ms >= lease.ms:
            raise ValueError("block_ms must be shorter than the lease, which each read renews")
        self.state = state
        self.lease = lease
        self._poll = poll

    def run(self, stop: threading.Event) -> None:
        """Hold the state whenever the lease can be had, until ``stop`` is set. Raises
        StoreUnavailable when Redis fails (the lease then runs out by itself)."""
        standing_by = False
        while not stop.is_set():
            if not self.lease.acquire():
                if not standing_by:
                    log.info("standing by: %s holds the detector state", self.lease.current())
                    standing_by = True
                stop.wait(self._poll)
                continue
            standing_by = False
            try:
                self.take_over(stop)
                while not stop.is_set():
                    self._handle(self.stream.read(self._batch, self._block_ms), stop)
                self.lease.release()
            except LeaseLost as exc:
                self.metrics.add("state_lost")
                log.warning("this consumer no longer holds the detector state: %s", exc)
            finally:
                self.state.clear()

    def take_over(self, stop: threading.Event | None = None) -> int:
        """Load the last checkpoint and process what the group left pending; how many
        entries were pending."""
        keys = self.state.load()
        self.metrics.add("state_takeovers")
        log.info(
            "holding the detector state of group %s: %d keys, up to entry %s",
            self.stream.group,
            keys,
            self.state.at or "none",
        )
        taken = self._claim(0, stop)
        # Only the holder reads: a consumer with nothing pending, idle for a lease, is a
        # holder that is gone (names are host:pid: every restart adds one).
        self._forget(self.lease.ms)
        return taken

    def drain(self) -> int:
        """Take over, then process entries until none is new (tests, benchmarks)."""
        if not self.lease.acquire():
            raise self.lease.lost()
        return self.take_over() + super().drain()

    def _new(self, entry: Entry) -> bool:
        return not self.state.holds(entry.id)

    def _keep(self, processed: list[str]) -> None:
        if processed:
            self.state.checkpoint(self.lease, processed[-1])  # also renews the lease
        else:
            self.lease.renew()
