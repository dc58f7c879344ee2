from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from authsvc.audit import MemoryAuditLog
from authsvc.audit.chain import CHECKPOINT_TYPE, ChainedAuditLog, checkpoint_payload
from authsvc.audit.schema import GENESIS, SCHEMA, event_hash
from authsvc.audit.verify import public_keys, verify_events
from authsvc.tokens import KeyRing, generate_key

WRITER = "host-a:101"


class Clock:
    def __init__(self, now: float = 1_795_840_970.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FlakySink:
    """A sink that refuses (raising ``error``) while ``down`` or while ``refuse`` says
    so; ``tried`` lists the ids of the events it was offered."""

    def __init__(self, refuse: Callable[[Mapping[str, Any]], bool] = lambda e: False) -> None:
        self.events: list[dict[str, Any]] = []
        self.tried: list[str] = []
        self.down = False
        self.refuse = refuse
        self.error: Exception = OSError("disk full")

    def record(self, event: Mapping[str, Any]) -> None:
        self.tried.append(event["event_id"])
        if self.down or self.refuse(event):
            raise self.error
        self.events.append(dict(event))


class UnansweringSink:
    """Keeps each ``event_id`` once, as the store does; while ``lost`` is set it takes
    the event and then fails, as a Redis that dies between writing and answering."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lost = False

    def record(self, event: Mapping[str, Any]) -> None:
        if all(e["event_id"] != event["event_id"] for e in self.events):
            self.events.append(dict(event))
        if self.lost:
            raise ConnectionResetError("connection reset by peer")


def decision(n: int) -> dict[str, Any]:
    return {"event_id": f"ev-{n}", "time": 1000 + n, "type": "token.issue", "outcome": "success"}


@pytest.fixture
def make_ring(tmp_path: Path) -> Callable[[str], KeyRing]:
    def make(algorithm: str = "ES256") -> KeyRing:
        generate_key(tmp_path / "keys", algorithm)
        return KeyRing.load(tmp_path / "keys")

    return make


@pytest.fixture
def ring(make_ring: Callable[[str], KeyRing]) -> KeyRing:
    return make_ring("ES256")


def checkpoints(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == CHECKPOINT_TYPE]


def test_fills_schema_writer_seq_and_chain() -> None:
    sink = MemoryAuditLog()
    log = ChainedAuditLog(sink, writer=WRITER, signer=None)
    original = decision(1)
    for n in (1, 2, 3):
        log.record(decision(n) if n > 1 else original)

    assert "seq" not in original and "chain" not in original  # the caller's dict is untouched
    prev = GENESIS
    for seq, event in enumerate(sink.events, 1):
        assert event["schema"] == SCHEMA
        assert event["writer"] == WRITER
        assert event["seq"] == seq
        assert event["chain"]["prev"] == prev
        assert event["chain"]["hash"] == event_hash(event)
        prev = event["chain"]["hash"]
    assert checkpoints(sink.events) == []  # no signer: a bare chain


def test_a_given_schema_is_kept_and_a_foreign_writer_replaced() -> None:
    sink = MemoryAuditLog()
    log = ChainedAuditLog(sink, writer=WRITER, signer=None)
    log.record({**decision(1), "schema": "authsvc.audit/9", "writer": "someone-else:1"})
    assert sink.events[0]["schema"] == "authsvc.audit/9"
    assert sink.events[0]["writer"] == WRITER


def test_a_refused_event_goes_first_once_the_sink_is_back() -> None:
    sink = FlakySink()
    log = ChainedAuditLog(sink, writer=WRITER, signer=None)
    log.record(decision(1))
    sink.down = True
    with pytest.raises(OSError, match="disk full"):
        log.record(decision(2))
    with pytest.raises(OSError, match="disk full"):
        log.record(decision(3))  # refused without being tried: ev-2 must go first
    sink.down = False
    log.record(decision(4))

    assert sink.tried == ["ev-1", "ev-2", "ev-2", "ev-2", "ev-4"]
    assert [(e["event_id"], e["seq"]) for e in sink.events] == [
        ("ev-1", 1),
        ("ev-2", 2),
        ("ev-4", 3),
    ]
    assert verify_events(sink.events, keys=None).ok


def test_an_event_taken_but_not_answered_does_not_fork_the_chain(ring: KeyRing) -> None:
    sink = UnansweringSink()
    log = ChainedAuditLog(sink, writer=WRITER, signer=lambda: ring.signing_key, checkpoint_every=3)
    log.record(decision(1))
    sink.lost = True
    with pytest.raises(ConnectionResetError):
        log.record(decision(2))
    sink.lost = False
    for n in (3, 4, 5):
        log.record(decision(n))
    log.close()

    assert [e["seq"] for e in sink.events] == list(range(1, 8))
    assert [e["event_id"] for e in sink.events if e["type"] != CHECKPOINT_TYPE] == [
        "ev-1",
        "ev-2",
        "ev-3",
        "ev-4",
        "ev-5",
    ]
    report = verify_events(sink.events, keys=public_keys(ring))
    assert report.ok, report.first_problem
    assert (report.checkpoints, report.uncovered) == (2, 0)


def test_an_event_the_sink_finds_invalid_is_dropped() -> None:
    sink = FlakySink(refuse=lambda e: e["event_id"] == "ev-2")
    sink.error = ValueError("audit event is not JSON")
    log = ChainedAuditLog(sink, writer=WRITER, signer=None)
    log.record(decision(1))
    with pytest.raises(ValueError, match="not JSON"):
        log.record(decision(2))
    log.record(decision(3))

    assert [(e["event_id"], e["seq"]) for e in sink.events] == [("ev-1", 1), ("ev-3", 2)]
    assert sink.events[1]["chain"]["prev"] == sink.events[0]["chain"]["hash"]


def test_an_event_without_a_canonical_form_is_refused_before_the_sink() -> None:
    sink = MemoryAuditLog()
    log = ChainedAuditLog(sink, writer=WRITER, signer=None)
    with pytest.raises(ValueError, match="floats"):
        log.record({**decision(1), "time": 1.5})
    log.record(decision(2))
    assert [e["seq"] for e in sink.events] == [1]


def test_callers_cannot_write_checkpoints() -> None:
    log = ChainedAuditLog(MemoryAuditLog(), writer=WRITER, signer=None)
    with pytest.raises(ValueError, match="written by the chain"):
        log.record({**decision(1), "type": CHECKPOINT_TYPE})


@pytest.mark.parametrize(
    ("field", "value"),
    [("writer", ""), ("checkpoint_every", 0), ("checkpoint_seconds", 0)],
)
def test_settings_are_checked(field: str, value: Any) -> None:
    settings: dict[str, Any] = {"writer": WRITER, "signer": None, field: value}
    with pytest.raises(ValueError, match=f"^{field}:"):
        ChainedAuditLog(MemoryAuditLog(), **settings)


def test_checkpoint_every_n_events(ring: KeyRing) -> None:
    sink = MemoryAuditLog()
    log = ChainedAuditLog(
        sink, writer=WRITER, signer=lambda: ring.signing_key, checkpoint_every=3, clock=Clock()
    )
    for n in range(1, 8):
        log.record(decision(n))

    types = ["cp" if e["type"] == CHECKPOINT_TYPE else e["seq"] for e in sink.events]
    assert types == [1, 2, 3, "cp", 5, 6, 7, "cp", 9]
    first, second = checkpoints(sink.events)
    assert first["seq"] == 4 and second["seq"] == 8
    assert first["outcome"] == "success" and first["reason"] == "CHECKPOINT"
    assert first["chain"]["hash"] == event_hash(first)
    body = second["checkpoint"]
    assert (body["first_seq"], body["last_seq"], body["count"]) == (5, 7, 3)
    assert body["last_hash"] == sink.events[6]["chain"]["hash"] == second["chain"]["prev"]
    key = ring.signing_key
    assert (body["key_id"], body["kid"], body["algorithm"]) == (
        key.id,
        key.libtrust_kid,
        "ES256",
    )


def test_checkpoint_after_t_seconds(ring: KeyRing) -> None:
    clock = Clock()
    sink = MemoryAuditLog()
    log = ChainedAuditLog(
        sink, writer=WRITER, signer=lambda: ring.signing_key, checkpoint_seconds=60, clock=clock
    )
    log.record(decision(1))
    clock.now += 59
    log.record(decision(2))
    assert checkpoints(sink.events) == []
    clock.now += 1
    log.record(decision(3))
    (cp,) = checkpoints(sink.events)
    assert cp["seq"] == 4
    assert cp["time"] == int(clock.now * 1000)
    assert (cp["checkpoint"]["first_seq"], cp["checkpoint"]["last_seq"]) == (1, 3)
    clock.now += 30
    log.record(decision(4))  # 30 s since that checkpoint
    assert len(checkpoints(sink.events)) == 1
    clock.now += 30
    log.record(decision(5))
    assert [e["seq"] for e in checkpoints(sink.events)] == [4, 7]
    assert checkpoints(sink.events)[1]["checkpoint"]["first_seq"] == 5


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_signature_verifies_with_the_certificate(
    make_ring: Callable[[str], KeyRing], algorithm: str
) -> None:
    ring = make_ring(algorithm)
    sink = MemoryAuditLog()
    log = ChainedAuditLog(sink, writer=WRITER, signer=lambda: ring.signing_key, checkpoint_every=2)
    log.record(decision(1))
    log.record(decision(2))
    (cp,) = checkpoints(sink.events)
    body = cp["checkpoint"]
    assert body["algorithm"] == algorithm
    signature = base64.urlsafe_b64decode(body["signature"] + "=" * (-len(body["signature"]) % 4))
    payload = checkpoint_payload(WRITER, 1, 2, sink.events[1]["chain"]["hash"])
    assert payload == (
        b'{"first_seq":1,"last_hash":"'
        + sink.events[1]["chain"]["hash"].encode()
        + b'","last_seq":2,"writer":"host-a:101"}'
    )
    public = ring.signing_key.certificate.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))  # DER-encoded
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())


def test_a_failed_checkpoint_is_retried_first_with_the_next_event(ring: KeyRing) -> None:
    sink = FlakySink(refuse=lambda e: e["type"] == CHECKPOINT_TYPE)
    log = ChainedAuditLog(sink, writer=WRITER, signer=lambda: ring.signing_key, checkpoint_every=2)
    log.record(decision(1))
    log.record(decision(2))  # its checkpoint is refused; the event itself stands
    with pytest.raises(OSError):
        log.record(decision(3))  # the checkpoint may have been written: it goes first
    assert [e["seq"] for e in sink.events] == [1, 2]

    sink.refuse = lambda e: False
    log.record(decision(4))
    assert [e["seq"] for e in sink.events] == [1, 2, 3, 4]
    cp = sink.events[2]["checkpoint"]
    assert (cp["first_seq"], cp["last_seq"], cp["count"]) == (1, 2, 2)
    assert verify_events(sink.events, keys=public_keys(ring)).ok


def test_a_failing_signer_does_not_fail_the_event(ring: KeyRing) -> None:
    broken = True

    def signer() -> Any:
        if broken:
            raise RuntimeError("key ring unavailable")
        return ring.signing_key

    sink = MemoryAuditLog()
    log = ChainedAuditLog(sink, writer=WRITER, signer=signer, checkpoint_every=1)
    log.record(decision(1))
    broken = False
    log.record(decision(2))
    assert [e["type"] for e in sink.events] == ["token.issue", "token.issue", CHECKPOINT_TYPE]


def test_close_writes_a_final_checkpoint_only_if_needed(ring: KeyRing) -> None:
    sink = MemoryAuditLog()
    log = ChainedAuditLog(sink, writer=WRITER, signer=lambda: ring.signing_key, checkpoint_every=2)
    for n in (1, 2, 3):
        log.record(decision(n))
    log.close()
    assert [e["seq"] for e in checkpoints(sink.events)] == [3, 5]
    assert checkpoints(sink.events)[1]["checkpoint"]["first_seq"] == 4
    log.close()
    assert len(sink.events) == 5
    with pytest.raises(RuntimeError, match="closed"):
        log.record(decision(4))

    quiet = MemoryAuditLog()
    idle = ChainedAuditLog(quiet, writer=WRITER, signer=lambda: ring.signing_key)
    idle.close()
    assert quiet.events == []


def test_close_raises_when_the_final_checkpoint_cannot_be_written(ring: KeyRing) -> None:
    sink = FlakySink()
    log = ChainedAuditLog(sink, writer=WRITER, signer=lambda: ring.signing_key)
    log.record(decision(1))
    sink.down = True
    with pytest.raises(OSError):
        log.close()
    sink.down = False
    log.close()  # not closed yet: it tries again
    assert [e["type"] for e in sink.events] == ["token.issue", CHECKPOINT_TYPE]


def test_concurrent_records_make_one_contiguous_chain(ring: KeyRing) -> None:
    sink = MemoryAuditLog()
    log = ChainedAuditLog(sink, writer=WRITER, signer=lambda: ring.signing_key, checkpoint_every=50)
    start = threading.Barrier(8)

    def work(thread: int) -> None:
        start.wait()
        for n in range(100):
            log.record(decision(thread * 1000 + n))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    events = sink.events
    data = [e for e in events if e["type"] != CHECKPOINT_TYPE]
    assert len(data) == 800
    assert len({e["event_id"] for e in data}) == 800
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    prev = GENESIS
    for event in events:
        assert event["chain"]["prev"] == prev
        assert event["chain"]["hash"] == event_hash(event)
        prev = event["chain"]["hash"]
    assert len(checkpoints(events)) == 16


class GatedBatchSink:
    """A sink with ``record_many`` whose first call waits for ``gate``, so the events
    of other callers queue meanwhile; ``batches`` lists the event ids of each call."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.error: Exception | None = None  # raised for the calls from ``fail_from`` on
        self.fail_from = 0

    def record(self, event: Mapping[str, Any]) -> None:
        self.record_many([event])

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        ids = [e["event_id"] for e in events]
        first = not self.batches
        self.batches.append(ids)
        if first:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.error is not None and len(self.batches) > self.fail_from:
            raise self.error
        self.events.extend(dict(e) for e in events)


def _record_in_threads(log: ChainedAuditLog, numbers: range) -> dict[int, BaseException | None]:
    """Record decision(1) (blocked in the sink), then ``numbers`` from threads of their
    own while it is; open the gate once they all wait. Each caller's outcome."""
    sink = log._sink
    assert isinstance(sink, GatedBatchSink)
    outcomes: dict[int, BaseException | None] = {}

    def call(n: int) -> None:
        try:
            log.record(decision(n))
        except BaseException as exc:
            outcomes[n] = exc
        else:
            outcomes[n] = None

    first = threading.Thread(target=call, args=(1,))
    first.start()
    while not sink.batches:
        time.sleep(0.001)
    rest = [threading.Thread(target=call, args=(n,)) for n in numbers]
    for thread in rest:
        thread.start()
    deadline = time.monotonic() + 10
    while len(log._queue) < len(numbers):  # all queued behind the leader
        assert time.monotonic() < deadline, "the callers never queued"
        time.sleep(0.001)
    sink.gate.set()
    for thread in [first, *rest]:
        thread.join(10)
    return outcomes


def test_events_queued_while_the_sink_writes_go_to_it_as_one_batch(ring: KeyRing) -> None:
    sink = GatedBatchSink()
    log = ChainedAuditLog(sink, writer=WRITER, signer=lambda: ring.signing_key)
    outcomes = _record_in_threads(log, range(2, 7))
    log.close()

    assert outcomes == dict.fromkeys(range(1, 7))
    assert sink.batches[0] == ["ev-1"]
    assert sorted(sink.batches[1]) == [f"ev-{n}" for n in range(2, 7)]  # one write for five
    assert len(sink.batches) == 3  # and the last checkpoint
    report = verify_events(sink.events, keys=public_keys(ring))
    assert report.ok, report.first_problem
    assert [e["seq"] for e in sink.events] == list(range(1, 8))


def test_a_refused_batch_fails_each_of_its_callers_and_is_sent_again_first() -> None:
    sink = GatedBatchSink()
    log = ChainedAuditLog(sink, writer=WRITER, signer=None)
    sink.error, sink.fail_from = ConnectionResetError("connection reset by peer"), 1
    outcomes = _record_in_threads(log, range(2, 5))

    assert outcomes.pop(1) is None
    assert all(isinstance(error, ConnectionResetError) for error in outcomes.values()), outcomes
    refused = sink.batches[1]
    assert sorted(refused) == ["ev-2", "ev-3", "ev-4"]
    with pytest.raises(ConnectionResetError):
        log.record(decision(5))  # refused without being tried: the batch goes first
    assert sink.batches[2:] == [refused]
    sink.error = None
    log.record(decision(6))
    assert sink.batches[3:] == [refused, ["ev-6"]]  # unchanged, before the new one
    assert [e["event_id"] for e in sink.events] == ["ev-1", *refused, "ev-6"]
    assert [e["seq"] for e in sink.events] == [1, 2, 3, 4, 5]


def test_an_invalid_event_in_a_batch_fails_only_its_own_caller() -> None:
    class Refusing(GatedBatchSink):
        def record_many(self, events: Sequence[Mapping[str, Any]]) -> None:
            if any(e["event_id"] == "ev-3" for e in events):
                self.batches.append([e["event_id"] for e in events])
                raise ValueError("audit event is not JSON")
            super().record_many(events)

    sink = Refusing()
    log = ChainedAuditLog(sink, writer=WRITER, signer=None)
    outcomes = _record_in_threads(log, range(2, 5))

    assert isinstance(outcomes.pop(3), ValueError)
    assert outcomes == {1: None, 2: None, 4: None}
    assert sorted(e["event_id"] for e in sink.events) == ["ev-1", "ev-2", "ev-4"]
    assert [e["seq"] for e in sink.events] == [1, 2, 3]  # ev-3 took no seq
    prev = GENESIS
    for event in sink.events:
        assert event["chain"]["prev"] == prev
        prev = event["chain"]["hash"]


def test_the_line_a_sealed_event_carries_is_the_event_with_its_hash() -> None:
    import json as _json

    from authsvc.audit.schema import event_hash, seal

    event = {"event_id": "e", "time": 1, "type": "token.issue", "actor": {"name": "ä"}}
    sealed = seal(dict(event), "0" * 64)
    assert sealed.line is not None and sealed.line.endswith(b"\n")
    assert _json.loads(sealed.line) == dict(sealed)
    assert sealed["chain"]["hash"] == event_hash(sealed)
    # A nested look-alike of the chain member: the line is left to the sink.
    tricky = {**event, "actor": {"chain": {"prev": "0" * 64}}}
    assert seal(dict(tricky), "0" * 64).line is None


def test_a_draft_sealed_under_the_lock_is_what_sealing_the_event_makes() -> None:
    from authsvc.audit import schema

    event = {
        "event_id": "e",
        "time": 1,
        "type": "token.issue",
        "writer": "w",
        "actor": {"name": "ä", "claims": {"ref": "refs/heads/main"}},
    }
    drafted = schema.seal_draft(schema.Draft(dict(event)), 7, "a" * 64)
    direct = schema.seal({**event, "seq": 7}, "a" * 64)
    assert dict(drafted) == dict(direct)
    assert drafted.line == direct.line
    # An event that holds a placeholder's text is encoded the slow way, the same.
    tricky = {**event, "note": schema._SEQ_PLACEHOLDER}
    draft = schema.Draft(dict(tricky))
    assert draft.template is None
    assert dict(schema.seal_draft(draft, 7, "a" * 64)) == dict(
        schema.seal({**tricky, "seq": 7}, "a" * 64)
    )
    # A prev that is not a hex digest (never the chain's) is escaped, not spliced raw.
    odd = 'not "hex"'
    sealed = schema.seal_draft(schema.Draft(dict(event)), 7, odd)
    assert dict(sealed) == dict(schema.seal({**event, "seq": 7}, odd))
    assert sealed.line == schema.seal({**event, "seq": 7}, odd).line


def test_a_caller_that_finds_nobody_writing_seals_its_event_without_a_draft(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The common case costs one encoding: the draft is for callers that queue."""
    from authsvc.audit import chain

    def no_draft(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event was drafted with nobody writing")

    monkeypatch.setattr(chain, "Draft", no_draft)
    sink = MemoryAuditLog()
    log = ChainedAuditLog(sink, writer=WRITER, signer=None)
    for n in (1, 2, 3):
        log.record(decision(n))

    assert [e["seq"] for e in sink.events] == [1, 2, 3]
    assert verify_events(sink.events, keys={}).ok


def test_sealing_an_encoded_event_again_leaves_no_stale_line() -> None:
    from authsvc.audit.schema import EncodedEvent, seal

    event = EncodedEvent({"event_id": "e", "time": 1, "type": "token.issue"})
    assert seal(event, "0" * 64) is event and event.line is not None
    event["actor"] = {"chain": {"prev": "1" * 64}}  # a nested look-alike of the next one
    assert seal(event, "1" * 64).line is None  # left to the sink to encode
