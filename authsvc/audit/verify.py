"""Verifying an audit trail written by ``ChainedAuditLog``, in one streaming pass.

``verify_events`` keeps a few numbers and hashes per writer, never the events, so a
trail of any length verifies in bounded memory. For each writer's events, in order:

==================== =================================================================
code                 what it means
==================== =================================================================
MALFORMED            not an ``authsvc.audit/1`` event (or, from ``read_jsonl``, a line
                     that is not a JSON object); ``position`` is its line number
EDITED               ``chain.hash`` is not the hash of the event as it stands
SEQUENCE_GAP         ``seq`` jumps ahead (the message names expected and got): events
                     deleted, or a writer's first events missing
SEQUENCE_REORDERED   ``seq`` not above the writer's highest so far: events repeated or
                     out of order (a pair swapped is reported at the first of the two)
CHAIN_BROKEN         ``seq`` in order but ``chain.prev`` is not the previous event's
                     hash: an event deleted and the rest renumbered, or one inserted
BAD_CHECKPOINT       a checkpoint that does not cover exactly the events since the
                     previous one, or whose signature does not verify with the trusted
                     key its ``key_id`` names (or names no trusted key)
==================== =================================================================

Checks that follow from an earlier finding on the same event are skipped (an edited
event is not also checked for order), and every event moves the writer's state on to
itself, so one tampering is reported once, not at every later event. The report holds
the first problem in stream order; a jump in ``seq`` is held back until the writer's
missing events turn up later (then it is a reordering) or the stream ends (a gap).

Events after a writer's last checkpoint are ``uncovered``: a warning, not a failure.
Their chain holds together, but nothing signed vouches for them, so whoever can write
the log could have cut or rewritten them; a log cut right after a checkpoint cannot be
told from a complete one without an outside record of its last checkpoint.

``allow_partial=True`` is for exports filtered by time: each writer may start at any
``seq`` (its first event's ``chain.prev`` is then taken on trust) and its first
checkpoint may cover events from before the export; everything after is checked as
usual, so a gap *inside* the export is still a gap. ``keys=None`` checks everything
but the signatures, and the report says so (``signatures_checked``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from authsvc.audit.chain import _DIGESTS, CHECKPOINT_TYPE, checkpoint_payload
from authsvc.audit.schema import GENESIS, SCHEMA, event_hash
from authsvc.errors import KeyRingError
from authsvc.strictjson import b64url_decode, loads_strict
from authsvc.tokens.keyring import KeyRing
from authsvc.tokens.ring import RETIRED, list_keys

__all__ = [
    "MalformedLine",
    "Problem",
    "ProblemCode",
    "PublicKey",
    "VerifyReport",
    "public_keys",
    "read_jsonl",
    "verify_events",
]

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_HASH: Final = re.compile(r"[0-9a-f]{64}")
_CURVES: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class ProblemCode(StrEnum):
    MALFORMED = "MALFORMED"
    EDITED = "EDITED"
    SEQUENCE_GAP = "SEQUENCE_GAP"
    SEQUENCE_REORDERED = "SEQUENCE_REORDERED"
    CHAIN_BROKEN = "CHAIN_BROKEN"
    BAD_CHECKPOINT = "BAD_CHECKPOINT"


@dataclass(frozen=True)
class Problem:
    event_id: str | None
    writer: str | None
    seq: int | None
    code: ProblemCode
    message: str
    #: 1-based place in the stream: the line number for ``read_jsonl``.
    position: int


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    first_problem: Problem | None
    events: int
    writers: int
    checkpoints: int
    #: Events after their writer's last checkpoint: not vouched for by any signature.
    uncovered: int
    signatures_checked: bool


class MalformedLine(ValueError):
    """A line of a JSONL trail that is not one JSON object."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The events of a JSONL file, one JSON object a line; raises ``MalformedLine`` at
    the first line that is not one (a blank line, bad UTF-8, duplicate members too)."""
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, 1):
            try:
                value = loads_strict(raw)
            except ValueError as exc:
                raise MalformedLine(number, f"not JSON ({exc})") from exc
            if not isinstance(value, dict):
                raise MalformedLine(number, "not a JSON object")
            yield value


def public_keys(ring: KeyRing) -> dict[str, PublicKey]:
    """The trusted checkpoint keys of a ring, by key id, from their certificates: the
    published keys and the retired ones whose certificate is still in the directory (a
    rotation must not make older checkpoints unverifiable; delete a compromised key's
    certificate to stop trusting what it signed)."""
    keys: dict[str, PublicKey] = {}
    for key in ring.published:
        public = key.certificate.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            keys[key.id] = public
    try:
        retired = [info.id for info in list_keys(ring.directory) if info.state == RETIRED]
    except KeyRingError:
        retired = []
    for key_id in retired:
        try:
            pem = (ring.directory / f"{key_id}.crt.pem").read_bytes()
            public = x509.load_pem_x509_certificate(pem).public_key()
        except (OSError, ValueError):
            continue  # its certificate is gone: what it signed is no longer trusted
        if isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            keys.setdefault(key_id, public)
    return keys


def verify_events(
    events: Iterable[Mapping[str, Any]],
    *,
    keys: Mapping[str, PublicKey] | None,
    allow_partial: bool = False,
) -> VerifyReport:
    """Check a stream of events (see the module docstring); stops at a MalformedLine."""
    verifier = _Verifier(keys, allow_partial)
    iterator = iter(events)
    while True:
        try:
            event = next(iterator)
        except StopIteration:
            break
        except MalformedLine as exc:
            verifier.offer(Problem(None, None, None, ProblemCode.MALFORMED, str(exc), exc.line))
            break
        verifier.feed(event)
    return verifier.report()


@dataclass(frozen=True)
class _At:
    """Where an event is: what a problem with it names."""

    event_id: str | None
    writer: str
    seq: int
    position: int

    def problem(self, code: ProblemCode, message: str) -> Problem:
        return Problem(self.event_id, self.writer, self.seq, code, message, self.position)


@dataclass
class _Writer:
    high: int  # the highest seq seen
    prev: str | None  # chain.hash of the last event seen (None: unknown, partial export)
    start: int  # the first seq the next checkpoint must cover
    partial: bool  # no checkpoint seen yet in a partial export: ``start`` is a bound
    since: int = 0  # events since the last checkpoint
    gap: tuple[int, Problem] | None = None  # a held-back SEQUENCE_GAP, and its first missing seq


class _Verifier:
    def __init__(self, keys: Mapping[str, PublicKey] | None, allow_partial: bool) -> None:
        self.keys = keys
        self.allow_partial = allow_partial
        self.writers: dict[str, _Writer] = {}
        self.first: Problem | None = None
        self.events = 0
        self.checkpoints = 0

    def offer(self, problem: Problem) -> None:
        if self.first is None or problem.position < self.first.position:
            self.first = problem

    def report(self) -> VerifyReport:
        for state in self.writers.values():
            if state.gap is not None:
                self.offer(state.gap[1])
        return VerifyReport(
            ok=self.first is None,
            first_problem=self.first,
            events=self.events,
            writers=len(self.writers),
            checkpoints=self.checkpoints,
            uncovered=sum(state.since for state in self.writers.values()),
            signatures_checked=self.keys is not None,
        )

    def feed(self, event: Mapping[str, Any]) -> None:
        self.events += 1
        raw_id = event.get("event_id") if isinstance(event, Mapping) else None
        event_id = raw_id if isinstance(raw_id, str) else None
        try:
            writer, seq, prev, claimed = _fields(event)
            edited = event_hash(event) != claimed
        except (ValueError, TypeError) as exc:  # TypeError: a value JSON cannot hold
            self.offer(Problem(event_id, None, None, ProblemCode.MALFORMED, str(exc), self.events))
            return
        at = _At(event_id, writer, seq, self.events)
        state = self.writers.get(writer)
        if state is None:
            if self.allow_partial:
                state = _Writer(high=seq - 1, prev=None, start=seq, partial=True)
            else:
                state = _Writer(high=0, prev=GENESIS, start=1, partial=False)
            self.writers[writer] = state
        in_order = seq == state.high + 1
        if edited:
            self.offer(
                at.problem(
                    ProblemCode.EDITED,
                    "chain.hash is not the hash of the "
                    "event's content: it was changed after it was written",
                )
            )
        else:
            self._check_sequence(state, at, prev, claimed)
        if event.get("type") == CHECKPOINT_TYPE:
            self.checkpoints += 1
            if in_order and not edited:
                reason = self._checkpoint_problem(event, at, prev, state)
                if reason is not None:
                    self.offer(at.problem(ProblemCode.BAD_CHECKPOINT, reason))
            state.start, state.partial, state.since = seq + 1, False, 0
        else:
            state.since += 1
        state.high = max(state.high, seq)
        state.prev = claimed

    def _check_sequence(self, state: _Writer, at: _At, prev: str, claimed: str) -> None:
        expected = state.high + 1
        if at.seq > expected:
            gap = at.problem(
                ProblemCode.SEQUENCE_GAP,
                f"writer {at.writer}: expected seq "
                f"{expected}, got {at.seq} (seq {expected}..{at.seq - 1} missing)",
            )
            if state.gap is None:
                state.gap = (expected, gap)  # held back: the missing events may yet come
            else:
                self.offer(gap)
        elif at.seq < expected:
            self.offer(self._reordered(state, at, claimed))
        elif state.prev is not None and prev != state.prev:
            before = "GENESIS" if at.seq == 1 else f"the hash of seq {at.seq - 1}"
            self.offer(
                at.problem(
                    ProblemCode.CHAIN_BROKEN,
                    f"chain.prev is not {before} (the event before it): an event was "
                    "deleted or inserted here",
                )
            )

    @staticmethod
    def _reordered(state: _Writer, at: _At, claimed: str) -> Problem:
        if state.gap is not None and state.gap[0] <= at.seq < (state.gap[1].seq or 0):
            # A "missing" event came after all: the earlier jump was a reordering.
            gap = state.gap[1]
            state.gap = None
            return replace(
                gap,
                code=ProblemCode.SEQUENCE_REORDERED,
                message=f"seq {gap.seq} comes before seq {at.seq} (at position "
                f"{at.position}): events out of order",
            )
        if at.seq == state.high and claimed == state.prev:
            message = f"seq {at.seq} appears twice in a row: a repeated event"
        else:
            message = f"seq {at.seq} after seq {state.high}: events repeated or out of order"
        return at.problem(ProblemCode.SEQUENCE_REORDERED, message)

    def _checkpoint_problem(
        self, event: Mapping[str, Any], at: _At, prev: str, state: _Writer
    ) -> str | None:
        """Why the checkpoint at ``at`` is bad, or None."""
        seq = at.seq
        cp = event.get("checkpoint")
        if not isinstance(cp, Mapping):
            return "an audit.checkpoint event without a checkpoint member"
        for name in ("first_seq", "last_seq", "count"):
            if type(cp.get(name)) is not int:
                return f"checkpoint.{name} is missing or not an integer"
        for name in ("last_hash", "key_id", "kid", "algorithm", "signature"):
            if not isinstance(cp.get(name), str):
                return f"checkpoint.{name} is missing or not a string"
        first, last, count = cp["first_seq"], cp["last_seq"], cp["count"]
        if last != seq - 1 or cp["last_hash"] != prev:
            return (
                f"the checkpoint ends at seq {last}, not at the event before it "
                f"(seq {seq - 1}, chain.prev)"
            )
        if not (1 <= first <= state.start if state.partial else first == state.start):
            return (
                f"the checkpoint starts at seq {first}, but the events since the "
                f"previous checkpoint start at seq {state.start}"
            )
        if count != last - first + 1 or count < 1:
            return f"checkpoint.count is {count}, but seq {first}..{last} is {last - first + 1}"
        if not state.partial and state.since != count:
            return f"the checkpoint covers {count} events, but {state.since} are here"
        if self.keys is None:
            return None
        key_id, algorithm = cp["key_id"], cp["algorithm"]
        key = self.keys.get(key_id)
        if key is None:
            return f"signed by key {key_id!r}, which is not a trusted key"
        fits = "RS256" if isinstance(key, rsa.RSAPublicKey) else _CURVES.get(key.curve.name)
        if algorithm != fits:
            return f"checkpoint.algorithm {algorithm!r} does not fit key {key_id!r} ({fits})"
        try:
            signature = b64url_decode(cp["signature"])
            payload = checkpoint_payload(at.writer, first, last, cp["last_hash"])
            digest = _DIGESTS[algorithm]()
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, payload, padding.PKCS1v15(), digest)
            else:
                key.verify(signature, payload, ec.ECDSA(digest))
        except (InvalidSignature, ValueError):
            return f"the signature does not verify with key {key_id!r}"
        return None


def _fields(event: Mapping[str, Any]) -> tuple[str, int, str, str]:
    """writer, seq, chain.prev and chain.hash; ``ValueError`` naming what is wrong."""
    if not isinstance(event, Mapping):
        raise ValueError("not a JSON object")
    if event.get("schema") != SCHEMA:
        raise ValueError(f"schema is {event.get('schema')!r}, not {SCHEMA!r}")
    writer, seq, chain = event.get("writer"), event.get("seq"), event.get("chain")
    if not isinstance(writer, str) or not writer:
        raise ValueError("writer is missing or not a non-empty string")
    if type(seq) is not int or seq < 1:
        raise ValueError("seq is missing or not a positive integer")
    if not isinstance(chain, Mapping):
        raise ValueError("chain is missing or not an object")
    prev, claimed = chain.get("prev"), chain.get("hash")
    for name, value in (("prev", prev), ("hash", claimed)):
        if not isinstance(value, str) or not _HASH.fullmatch(value):
            raise ValueError(f"chain.{name} is missing or not 64 lowercase hex digits")
    assert isinstance(prev, str) and isinstance(claimed, str)
    return writer, seq, prev, claimed
