"""The hash chain: each writer's events linked by SHA-256, sealed by signed checkpoints.

``ChainedAuditLog`` wraps a sink (any ``AuditLog``). For every event it fills in
``schema`` (when absent), ``writer``, ``seq`` (1, 2, 3, ... for this writer) and
``chain`` (``prev``: the previous event's hash, ``GENESIS`` for the first; ``hash``: see
``authsvc.audit.schema.event_hash``), then hands the event to the sink, all under one
lock so that the order in the sink is the order of the chain. ``seq`` and ``prev``
advance only once the sink has accepted the event.

A sink that fails may still have taken the event: Redis can write it to its
append-only file and die before it answers. So a refused event is kept, and sent again
unchanged (same ``event_id``, ``seq`` and hash) before anything else; the store takes
it once by its ``event_id``, and a file sink cuts a failed write back off. Another
event in its place would fork the chain (two events with one ``seq``, which
``verify`` reports as a reordering). Until the sink takes it, every later event is
refused without being tried, so the trail may hold a decision whose answer was a 503,
never a token without its decision. An event the sink refuses as invalid
(``ValueError``, ``TypeError``) was not written, and is dropped.

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
from collections.abc import Callable, Mapping
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from authsvc.audit import AuditLog
from authsvc.audit.schema import (
    GENESIS,
    SCHEMA,
    Draft,
    canonical_json,
    seal,
    seal_draft,
    uuid7,
)
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
        self._writer = writer
        self._signer = signer
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0  # the last seq the sink accepted
        self._prev = GENESIS  # the hash of that event
        self._first_uncovered = 1  # the seq the next checkpoint starts at
        self._last_checkpoint = clock()
        self._closed = False
        #: A chained event the sink refused, but may have taken: sent again first.
        self._pending: dict[str, Any] | None = None

    @property
    def writer(self) -> str:
        return self._writer

    def record(self, event: Mapping[str, Any]) -> None:
        """Chain the event and hand it to the sink; raise if the sink refuses it."""
        if event.get("type") == CHECKPOINT_TYPE:
            raise ValueError(f"{CHECKPOINT_TYPE} events are written by the chain itself")
        # Encoded before the lock, but for seq and prev: under it, every other request
        # of this process waits (measured: 8 threads lost ~25% of their throughput when
        # the whole encoding was made under it).
        draft = Draft(self._prepared(event))
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit log is closed")
            self._send_pending()
            self._send(seal_draft(draft, self._seq + 1, self._prev))
            if self._checkpoint_due():
                try:
                    self._checkpoint()
                except Exception:
                    log.warning(
                        "audit checkpoint for %s not written; trying again with the next event",
                        self._writer,
                        exc_info=True,
                    )

    def close(self) -> None:
        """Write a last checkpoint if events are uncovered (raises if it cannot)."""
        with self._lock:
            if self._closed:
                return
            self._send_pending()
            if self._signer is not None and self._uncovered():
                self._checkpoint()
            self._closed = True

    # -- under the lock -----------------------------------------------------------------

    def _uncovered(self) -> int:
        return self._seq - self._first_uncovered + 1

    def _checkpoint_due(self) -> bool:
        if self._signer is None or not self._uncovered():
            return False
        return (
            self._uncovered() >= self._every
            or self._clock() - self._last_checkpoint >= self._seconds
        )

    def _prepared(self, event: Mapping[str, Any]) -> dict[str, Any]:
        chained: dict[str, Any] = dict(event)
        chained.setdefault("schema", SCHEMA)
        chained["writer"] = self._writer
        return chained

    def _append(self, event: Mapping[str, Any]) -> None:
        chained = self._prepared(event)
        chained["seq"] = self._seq + 1
        self._send(seal(chained, self._prev))

    def _send_pending(self) -> None:
        """Send the refused event again; raise (keeping it) if the sink still fails."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._send(pending)

    def _send(self, chained: dict[str, Any]) -> None:
        """Hand a chained event to the sink; once taken, the chain moves on to it."""
        try:
            self._sink.record(chained)
        except (ValueError, TypeError):
            raise  # refused for what it is, so not written: the next event takes its seq
        except BaseException:
            self._pending = chained  # perhaps written all the same: no other event in its place
            raise
        self._seq = chained["seq"]
        self._prev = chained["chain"]["hash"]
        if chained["type"] == CHECKPOINT_TYPE:
            self._first_uncovered = self._seq + 1
            self._last_checkpoint = chained["time"] / 1000

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
