"""The hash chain: each writer's events linked by SHA-256, sealed by signed checkpoints.

``ChainedAuditLog`` wraps a sink (any ``AuditLog``). For every event it fills in
``schema`` (when absent), ``writer``, ``seq`` (1, 2, 3, ... for this writer) and
``chain`` (``prev``: the previous event's hash, ``GENESIS`` for the first; ``hash``: see
``authsvc.audit.schema.event_hash``), then hands the event to the sink. ``seq`` and
``prev`` advance only once the sink has accepted the event.

Group commit: the events of concurrent requests go to the sink together. A ``record``
that finds nobody writing seals its event (seq and prev are known then) and writes it
at once. Otherwise it queues its event, encoded but for seq and prev (a ``Draft``), and
waits; one caller at a time is the leader, which takes every queued event, chains them
in queue order and hands them to the sink in one ``record_many`` (one Redis round
trip, one ``fdatasync``), so the order in the sink is the order of the chain. While it
writes, new events queue behind it, and the first of their callers leads the next
batch. Each caller returns once the sink has its event, or raises what the sink raised.
(One event at a time under a lock, the sink's round trip or fsync held every other
request of the process.) A sink without ``record_many`` gets the batch one event at a
time.

A sink that fails may still have taken the events: Redis can write them to its
append-only file and die before it answers. So a refused batch is kept, and sent again
unchanged (same ``event_id``, ``seq`` and hash) before anything else; the store takes
each event once by its ``event_id``, and a file sink cuts a failed write back off.
Other events in their place would fork the chain (two events with one ``seq``, which
``verify`` reports as a reordering). Until the sink takes them, every later event is
refused without being tried, so the trail may hold a decision whose answer was a 503,
never a token without its decision. Events the sink refuses as invalid (``ValueError``,
``TypeError``) were not written: the batch is then sent one event at a time, and only
the invalid event is dropped (its caller gets the error).

A hash chain alone shows edits, deletions and insertions only to someone who trusts
its end; anyone able to rewrite the log can rewrite the chain after the change. So
every ``checkpoint_every`` events, or once ``checkpoint_seconds`` have passed since
the last checkpoint (looked at on each ``record``), it appends an ``audit.checkpoint``
event, itself chained (its own ``seq``), whose ``checkpoint`` member is::

    {"first_seq", "last_seq", "last_hash", "count", "key_id", "kid", "algorithm",
     "signature"}

It covers the events after the previous checkpoint (``first_seq`` is the previous
checkpoint's ``seq`` + 1, or 1) up to the one just before it (``last_seq`` = its own
``seq`` - 1, ``last_hash`` = its own ``chain.prev``); the previous checkpoint event is
covered through the chain (``last_hash`` commits to every earlier event). The
signature, base64url without padding, is made with the token signing key over
``checkpoint_payload``: the canonical JSON of ``{writer, first_seq, last_seq,
last_hash}``. ES256/ES384/ES512 signatures are DER (X9.62 ``ECDSA-Sig-Value``, what
``cryptography`` and ``openssl dgst -verify`` produce and take), not JOSE's raw r||s;
RS256 is RSASSA-PKCS1-v1_5 with SHA-256.

A checkpoint is not part of any caller's decision: when it cannot be signed or written,
``record`` still returns (the caller's event was accepted), the failure is logged, and
the checkpoint is tried again with the next event (first of all, as any refused
event). ``close`` writes a last checkpoint when events are uncovered, and raises if it
cannot.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from authsvc.audit import AuditLog
from authsvc.audit.schema import (
    GENESIS,
    SCHEMA,
    Draft,
    EncodedEvent,
    PlainEvent,
    canonical_json,
    seal,
    seal_draft,
    uuid7,
)
from authsvc.audit.sinks import BatchAuditLog
from authsvc.tokens.keyring import SigningKey

__all__ = ["CHECKPOINT_REASON", "CHECKPOINT_TYPE", "ChainedAuditLog", "checkpoint_payload"]

log = logging.getLogger(__name__)

CHECKPOINT_TYPE: Final = "audit.checkpoint"
CHECKPOINT_REASON: Final = "CHECKPOINT"

# The digest of each signing algorithm (authsvc.tokens.SUPPORTED_ALGORITHMS); shared
# with authsvc.audit.verify.
_DIGESTS: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "ES256": hashes.SHA256,
    "ES384": hashes.SHA384,
    "ES512": hashes.SHA512,
    "RS256": hashes.SHA256,
}


def checkpoint_payload(writer: str, first_seq: int, last_seq: int, last_hash: str) -> bytes:
    """The bytes a checkpoint signature is made over."""
    return canonical_json(
        {"writer": writer, "first_seq": first_seq, "last_seq": last_seq, "last_hash": last_hash}
    )


def _sign(key: SigningKey, payload: bytes) -> bytes:
    digest = _DIGESTS.get(key.algorithm)
    if digest is None:
        raise ValueError(f"key {key.id}: cannot sign checkpoints with {key.algorithm}")
    private = key.private_key
    if isinstance(private, ec.EllipticCurvePrivateKey) and key.algorithm.startswith("ES"):
        return private.sign(payload, ec.ECDSA(digest()))
    if isinstance(private, rsa.RSAPrivateKey) and key.algorithm.startswith("RS"):
        return private.sign(payload, padding.PKCS1v15(), digest())
    raise ValueError(f"key {key.id}: the key does not fit {key.algorithm}")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class _Waiting:
    """A queued event and, once its batch is written, how it went.

    A caller that queues behind a leader sleeps on ``wake``, a lock taken for it and
    released by another thread: one wake-up per event, where a condition shared by all
    would wake every caller. A caller that leads at once needs none."""

    __slots__ = ("done", "draft", "error", "wake")

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
        self.done = False
        self.error: BaseException | None = None
        self.wake: threading.Lock | None = None


def _settle(batch: Sequence[_Waiting], error: BaseException | None) -> None:
    for waiting in batch:
        waiting.error = error
        waiting.done = True
        if waiting.wake is not None:
            waiting.wake.release()


class ChainedAuditLog:
    """An ``AuditLog`` that chains and checkpoints the events of one writer.

    ``signer`` returns the key to sign the next checkpoint with (called per checkpoint,
    so a key rotation takes effect); ``None`` writes no checkpoints (a bare chain).
    ``clock`` gives seconds since the epoch.
    """

    def __init__(
        self,
        sink: AuditLog,
        *,
        writer: str,
        signer: Callable[[], SigningKey] | None,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not writer:
            raise ValueError("writer: must not be empty")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every: must be at least 1, not {checkpoint_every}")
        if not checkpoint_seconds > 0:
            raise ValueError(f"checkpoint_seconds: must be positive, not {checkpoint_seconds}")
        self._sink = sink
        self._batch_sink: BatchAuditLog | None = sink if isinstance(sink, BatchAuditLog) else None
        self._writer = writer
        self._signer = signer
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._clock = clock
        # Guards the queue, the leader flag and closed; the chain's own state below is
        # touched only by the leader.
        self._mutex = threading.Lock()
        self._queue: list[_Waiting] = []
        self._leading = False
        self._closed = False
        self._seq = 0  # the last seq the sink accepted
        self._prev = GENESIS  # the hash of that event
        self._first_uncovered = 1  # the seq the next checkpoint starts at
        self._last_checkpoint = clock()
        #: Chained events the sink refused, but may have taken: sent again first.
        self._pending: list[dict[str, Any]] = []

    @property
    def writer(self) -> str:
        return self._writer

    def record(self, event: Mapping[str, Any]) -> None:
        """Chain the event and hand it to the sink; raise if the sink refuses it."""
        if event.get("type") == CHECKPOINT_TYPE:
            raise ValueError(f"{CHECKPOINT_TYPE} events are written by the chain itself")
        prepared = self._prepared(event)
        plain = type(event) is PlainEvent  # its copy stays plain: _prepared adds strings
        with self._mutex:
            if self._closed:
                raise RuntimeError("the audit log is closed")
            alone = not self._leading
            self._leading = True
        if alone:
            # Nobody writes, so nothing is queued: this caller knows seq and prev, and
            # seals and writes its event itself, encoding it once (the common case: in
            # a request, 18 us against 21 with a draft and a queue of one, file sink).
            try:
                self._commit_one(prepared, plain)
            finally:
                self._hand_over()
            return
        # Someone writes: encoded now but for seq and prev, which the leader splices in
        # (measured: 8 threads lost ~25% of their throughput when the whole encoding
        # was made by the one thread that writes).
        waiting = _Waiting(Draft(prepared, plain=plain))
        with self._mutex:
            if self._closed:
                raise RuntimeError("the audit log is closed")
            wake = None
            if self._leading:
                wake = waiting.wake = threading.Lock()
                wake.acquire()
                self._queue.append(waiting)
            else:  # the writer is done and nothing is queued: lead a batch of this one
                self._leading = True
        if wake is None:
            self._lead([waiting])
        else:
            wake.acquire()  # released once it is written, or to make us the leader
            if not waiting.done:
                self._lead(None)
        if waiting.error is not None:
            raise waiting.error

    def close(self) -> None:
        """Write a last checkpoint if events are uncovered (raises if it cannot)."""
        while True:  # wait for the batch being written (closing is rare: no queue for it)
            with self._mutex:
                if self._closed:
                    return
                if not self._leading:
                    self._closed = self._leading = True  # no event queues after this
                    break
            time.sleep(0.001)
        try:
            self._send_pending()
            if self._signer is not None and self._uncovered():
                self._checkpoint()
        except BaseException:
            with self._mutex:
                self._closed = False  # so close can be called again
            raise
        finally:
            with self._mutex:
                self._leading = False

    # -- the leader's ----------------------------------------------------------------

    def _lead(self, batch: list[_Waiting] | None) -> None:
        """Write ``batch``, or what is queued; then hand the lead to the first caller
        queued since."""
        if batch is None:
            with self._mutex:
                batch, self._queue = self._queue, []
        try:
            self._commit(batch)
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give up the lead: to the first caller queued, if any."""
        with self._mutex:
            successor = self._queue[0] if self._queue else None
            self._leading = successor is not None
        if successor is not None:
            assert successor.wake is not None  # (queued callers have one)
            successor.wake.release()

    def _commit_one(self, event: dict[str, Any], plain: bool) -> None:
        """Seal and write the leader's own event; raise what its caller is to get."""
        self._send_pending()
        event["seq"] = self._seq + 1
        self._send([seal(event, self._prev, plain=plain)])  # (an invalid one: ValueError)
        self._checkpoint_if_due()

    def _commit(self, batch: list[_Waiting]) -> None:
        """Write a batch of queued events and tell each caller how it went."""
        try:
            self._send_pending()
            if self._batch_sink is None or len(batch) == 1:
                self._one_by_one(batch)
            else:
                try:
                    self._send(self._sealed(batch))
                except (ValueError, TypeError):
                    self._one_by_one(batch)  # nothing was written: find the invalid one
                else:
                    _settle(batch, None)
        except BaseException as exc:
            _settle([waiting for waiting in batch if not waiting.done], exc)
            return
        self._checkpoint_if_due()

    def _checkpoint_if_due(self) -> None:
        """The checkpoint, when due: not part of any caller's decision, so a failure is
        logged (and it is tried again with the next event), not raised."""
        if self._checkpoint_due():
            try:
                self._checkpoint()
            except Exception:
                log.warning(
                    "audit checkpoint for %s not written; trying again with the next event",
                    self._writer,
                    exc_info=True,
                )

    def _one_by_one(self, batch: list[_Waiting]) -> None:
        for waiting in batch:
            error: BaseException | None = None
            try:
                self._send([seal_draft(waiting.draft, self._seq + 1, self._prev)])
            except (ValueError, TypeError) as exc:
                error = exc
            _settle((waiting,), error)

    def _sealed(self, batch: list[_Waiting]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        seq, prev = self._seq, self._prev
        for waiting in batch:
            seq += 1
            event = seal_draft(waiting.draft, seq, prev)
            prev = event["chain"]["hash"]
            events.append(event)
        return events

    def _uncovered(self) -> int:
        return self._seq - self._first_uncovered + 1

    def _checkpoint_due(self) -> bool:
        uncovered = self._uncovered()
        if self._signer is None or not uncovered:
            return False
        return uncovered >= self._every or self._clock() - self._last_checkpoint >= self._seconds

    def _prepared(self, event: Mapping[str, Any]) -> EncodedEvent:
        chained = EncodedEvent(event)
        chained.setdefault("schema", SCHEMA)
        chained["writer"] = self._writer
        return chained

    def _append(self, event: Mapping[str, Any]) -> None:
        chained = self._prepared(event)
        chained["seq"] = self._seq + 1
        self._send([seal(chained, self._prev)])

    def _send_pending(self) -> None:
        """Send the refused events again; raise (keeping them) if the sink still fails."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._send(pending)

    def _send(self, events: list[dict[str, Any]]) -> None:
        """Hand chained events to the sink; once taken, the chain moves on past them.

        A sink without ``record_many`` is only ever given one event at a time.
        """
        try:
            if self._batch_sink is not None:
                self._batch_sink.record_many(events)
            else:
                (event,) = events
                self._sink.record(event)
        except (ValueError, TypeError):
            raise  # refused for what they are, so not written: the next events take their seq
        except BaseException:
            self._pending = events  # perhaps written all the same: none other in their place
            raise
        self._accepted(events)

    def _accepted(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._seq = event["seq"]
            self._prev = event["chain"]["hash"]
            if event["type"] == CHECKPOINT_TYPE:
                self._first_uncovered = self._seq + 1
                self._last_checkpoint = event["time"] / 1000

    def _checkpoint(self) -> None:
        assert self._signer is not None
        key = self._signer()
        first, last, last_hash = self._first_uncovered, self._seq, self._prev
        signature = _sign(key, checkpoint_payload(self._writer, first, last, last_hash))
        now = self._clock()
        now_ms = int(now * 1000)
        self._append(
            {
                "schema": SCHEMA,
                "event_id": uuid7(now_ms),
                "time": now_ms,
                "type": CHECKPOINT_TYPE,
                "outcome": "success",
                "reason": CHECKPOINT_REASON,
                "checkpoint": {
                    "first_seq": first,
                    "last_seq": last,
                    "last_hash": last_hash,
                    "count": last - first + 1,
                    "key_id": key.id,
                    "kid": key.libtrust_kid,
                    "algorithm": key.algorithm,
                    "signature": _b64url(signature),
                },
            }
        )
