from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authsvc.audit import MemoryAuditLog
from authsvc.audit.chain import CHECKPOINT_TYPE, ChainedAuditLog
from authsvc.audit.schema import event_hash
from authsvc.audit.verify import (
    MalformedLine,
    ProblemCode,
    VerifyReport,
    public_keys,
    read_jsonl,
    verify_events,
)
from authsvc.tokens import KeyRing, SigningKey, generate_key

A, B = "host-a:1", "host-b:2"
Event = dict[str, Any]


def make_chain(writer: str, key: SigningKey, data: int = 7) -> list[Event]:
    """``data`` decisions with a checkpoint after every 3 and one at close: for 7, seq
    1-3 data, 4 checkpoint, 5-7 data, 8 checkpoint, 9 data, 10 checkpoint."""
    sink = MemoryAuditLog()
    log = ChainedAuditLog(
        sink, writer=writer, signer=lambda: key, checkpoint_every=3, clock=lambda: 1.8e9
    )
    for n in range(1, data + 1):
        log.record({"event_id": f"{writer[5]}-{n}", "time": n, "type": "token.issue"})
    log.close()
    return sink.events


def interleave(*chains: list[Event]) -> list[Event]:
    return [event for events in zip(*chains, strict=True) for event in events]


def find(events: list[Event], writer: str, seq: int) -> int:
    return next(i for i, e in enumerate(events) if e["writer"] == writer and e["seq"] == seq)


def rewrite(events: list[Event], writer: str, start: int, *, shift: int, relink: bool) -> None:
    """What someone who can write the log does from index ``start`` on: renumber the
    writer's events by ``shift`` and recompute their hashes; with ``relink``, also point
    each ``chain.prev`` at the (new) hash before it."""
    prev = next(
        (e["chain"]["hash"] for e in reversed(events[:start]) if e["writer"] == writer), None
    )
    for event in events[start:]:
        if event["writer"] != writer:
            continue
        event["seq"] += shift
        if relink and prev is not None:
            event["chain"]["prev"] = prev
        event["chain"]["hash"] = event_hash(event)
        prev = event["chain"]["hash"]


def rehash(event: Event) -> None:
    event["chain"]["hash"] = event_hash(event)


def make_ring(directory: Path, algorithm: str = "ES256") -> KeyRing:
    generate_key(directory, algorithm)
    return KeyRing.load(directory)


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return make_ring(tmp_path / "keys")


@pytest.fixture
def other_ring(tmp_path: Path) -> KeyRing:
    return make_ring(tmp_path / "other-keys")


@pytest.fixture
def trail(ring: KeyRing) -> list[Event]:
    return interleave(make_chain(A, ring.signing_key), make_chain(B, ring.signing_key))


def verify(events: list[Event], ring: KeyRing, **options: Any) -> VerifyReport:
    return verify_events(iter(events), keys=public_keys(ring), **options)


def test_a_clean_trail_of_two_interleaved_writers_passes(trail: list[Event], ring: KeyRing) -> None:
    report = verify(trail, ring)
    assert report == VerifyReport(
        ok=True,
        first_problem=None,
        events=20,
        writers=2,
        checkpoints=6,
        uncovered=0,
        signatures_checked=True,
    )


def test_rs256_checkpoints_verify(tmp_path: Path) -> None:
    ring = make_ring(tmp_path / "rsa", "RS256")
    assert verify(make_chain(A, ring.signing_key, data=4), ring).ok


def test_without_keys_everything_but_the_signatures_is_checked(trail: list[Event]) -> None:
    report = verify_events(trail, keys=None)
    assert report.ok and report.checkpoints == 6
    assert not report.signatures_checked


# -- the tamper table: what someone who can write the log might do, and what is found ---


@dataclass(frozen=True)
class Found:
    code: ProblemCode
    event_id: str
    message: str  # a part of the message


Tamper = Callable[[list[Event], KeyRing], Found]


def edit_a_field(events: list[Event], ring: KeyRing) -> Found:
    events[find(events, A, 2)]["outcome"] = "failure"
    return Found(ProblemCode.EDITED, "a-2", "changed after it was written")


def delete_an_event(events: list[Event], ring: KeyRing) -> Found:
    del events[find(events, A, 6)]  # a-5
    return Found(ProblemCode.SEQUENCE_GAP, "a-6", f"writer {A}: expected seq 6, got 7")


def delete_and_renumber(events: list[Event], ring: KeyRing) -> Found:
    index = find(events, A, 6)
    del events[index]
    rewrite(events, A, index, shift=-1, relink=False)
    return Found(
        ProblemCode.CHAIN_BROKEN,
        "a-6",
        "chain.prev is not the hash of seq 5 (the event before it): "
        "an event was deleted or inserted here",
    )


def delete_and_rewrite_the_chain(events: list[Event], ring: KeyRing) -> Found:
    """A flawless chain after the deletion: only the next checkpoint's signature shows it."""
    index = find(events, A, 6)
    del events[index]
    rewrite(events, A, index, shift=-1, relink=True)
    checkpoint = events[find(events, A, 7)]
    body = checkpoint["checkpoint"]
    body.update(last_seq=6, count=2, last_hash=checkpoint["chain"]["prev"])
    rewrite(events, A, find(events, A, 7), shift=0, relink=True)
    return Found(
        ProblemCode.BAD_CHECKPOINT,
        checkpoint["event_id"],
        f"the signature does not verify with key {ring.signing_key.id!r}",
    )


def reorder_two_events(events: list[Event], ring: KeyRing) -> Found:
    i, j = find(events, A, 5), find(events, A, 6)
    events[i], events[j] = events[j], events[i]
    return Found(ProblemCode.SEQUENCE_REORDERED, "a-5", "seq 6 comes before seq 5")


def insert_a_forged_event(events: list[Event], ring: KeyRing) -> Found:
    index = find(events, A, 6)
    forged = {
        "schema": "authsvc.audit/1",
        "event_id": "forged",
        "time": 5,
        "type": "token.issue",
        "writer": A,
        "seq": 6,
        "chain": {"prev": events[find(events, A, 5)]["chain"]["hash"]},
    }
    rehash(forged)  # a valid hash, after a valid prev
    rewrite(events, A, index, shift=+1, relink=False)
    events.insert(index, forged)
    return Found(ProblemCode.CHAIN_BROKEN, "a-5", "chain.prev is not the hash of seq 6")


def alter_a_checkpoint_signature(events: list[Event], ring: KeyRing) -> Found:
    checkpoint = events[find(events, A, 8)]
    signature = checkpoint["checkpoint"]["signature"]
    checkpoint["checkpoint"]["signature"] = ("B" if signature[0] == "A" else "A") + signature[1:]
    rehash(checkpoint)
    return Found(
        ProblemCode.BAD_CHECKPOINT,
        checkpoint["event_id"],
        f"the signature does not verify with key {ring.signing_key.id!r}",
    )


def alter_a_signature_but_not_the_hash(events: list[Event], ring: KeyRing) -> Found:
    checkpoint = events[find(events, A, 8)]
    checkpoint["checkpoint"]["signature"] = "AAAA"
    return Found(ProblemCode.EDITED, checkpoint["event_id"], "changed after it was written")


def alter_a_checkpoint_count(events: list[Event], ring: KeyRing) -> Found:
    checkpoint = events[find(events, A, 8)]
    checkpoint["checkpoint"]["count"] = 2
    rehash(checkpoint)
    return Found(
        ProblemCode.BAD_CHECKPOINT, checkpoint["event_id"], "checkpoint.count is 2, but seq 5..7"
    )


def claim_another_algorithm(events: list[Event], ring: KeyRing) -> Found:
    checkpoint = events[find(events, A, 4)]
    checkpoint["checkpoint"]["algorithm"] = "RS256"
    rehash(checkpoint)
    return Found(ProblemCode.BAD_CHECKPOINT, checkpoint["event_id"], "'RS256' does not fit key")


def sign_with_an_unknown_key(events: list[Event], ring: KeyRing) -> Found:
    """Writer A's whole chain rewritten and signed with a key of the forger's own."""
    forger = make_ring(ring.directory.parent / "forger").signing_key
    forged = make_chain(A, forger)
    events[:] = interleave(forged, [e for e in events if e["writer"] == B])
    return Found(
        ProblemCode.BAD_CHECKPOINT,
        forged[3]["event_id"],
        f"signed by key {forger.id!r}, which is not a trusted key",
    )


@pytest.mark.parametrize(
    "tamper",
    [
        edit_a_field,
        delete_an_event,
        delete_and_renumber,
        delete_and_rewrite_the_chain,
        reorder_two_events,
        insert_a_forged_event,
        alter_a_checkpoint_signature,
        alter_a_signature_but_not_the_hash,
        alter_a_checkpoint_count,
        claim_another_algorithm,
        sign_with_an_unknown_key,
    ],
    ids=lambda tamper: tamper.__name__,
)
def test_tampering_is_found(trail: list[Event], ring: KeyRing, tamper: Tamper) -> None:
    expected = tamper(trail, ring)
    report = verify(trail, ring)
    problem = report.first_problem
    assert not report.ok and problem is not None
    assert (problem.code, problem.event_id) == (expected.code, expected.event_id)
    assert expected.message in problem.message
    assert problem.writer == A
    assert trail[problem.position - 1]["event_id"] == expected.event_id


def test_a_truncated_tail_is_uncovered_not_failed(trail: list[Event], ring: KeyRing) -> None:
    del trail[find(trail, A, 10) :]  # A loses its last checkpoint, B seq 10 too
    report = verify(trail, ring)
    assert report.ok and report.first_problem is None
    assert report.uncovered == 2  # A seq 9, B seq 9
    assert report.events == 18


def test_a_repeated_event(trail: list[Event], ring: KeyRing) -> None:
    index = find(trail, B, 2)
    trail.insert(index + 1, dict(trail[index]))
    problem = verify(trail, ring).first_problem
    assert problem is not None
    assert (problem.code, problem.event_id, problem.seq, problem.position) == (
        ProblemCode.SEQUENCE_REORDERED,
        "b-2",
        2,
        index + 2,
    )
    assert problem.message == "seq 2 appears twice in a row: a repeated event"


def test_the_first_problem_is_the_first_in_the_stream(trail: list[Event], ring: KeyRing) -> None:
    trail[find(trail, B, 9)]["outcome"] = "failure"  # later in the stream
    i, j = find(trail, A, 2), find(trail, A, 3)  # earlier, but known only at A seq 2
    trail[i], trail[j] = trail[j], trail[i]
    problem = verify(trail, ring).first_problem
    assert problem is not None
    assert (problem.code, problem.event_id) == (ProblemCode.SEQUENCE_REORDERED, "a-3")


def test_a_partial_export(trail: list[Event], ring: KeyRing) -> None:
    """An export filtered by time starts each writer mid-chain, mid-checkpoint."""
    export = trail[find(trail, A, 3) :]
    strict = verify(export, ring).first_problem
    assert strict is not None
    assert (strict.code, strict.event_id) == (ProblemCode.SEQUENCE_GAP, "a-3")
    assert strict.message == f"writer {A}: expected seq 1, got 3 (seq 1..2 missing)"

    report = verify(export, ring, allow_partial=True)
    assert report.ok and report.events == len(export) and report.uncovered == 0

    del export[find(export, B, 6)]  # a gap inside the export is still a gap
    problem = verify(export, ring, allow_partial=True).first_problem
    assert problem is not None and problem.code == ProblemCode.SEQUENCE_GAP


def test_a_malformed_event(trail: list[Event], ring: KeyRing) -> None:
    del trail[3]["seq"]
    problem = verify(trail, ring).first_problem
    assert problem is not None
    assert (problem.code, problem.event_id, problem.position) == (
        ProblemCode.MALFORMED,
        trail[3]["event_id"],
        4,
    )
    assert problem.message == "seq is missing or not a positive integer"


# -- JSONL files ----------------------------------------------------------------------


def write_jsonl(path: Path, events: list[Event]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


def test_a_jsonl_file_verifies(tmp_path: Path, trail: list[Event], ring: KeyRing) -> None:
    path = write_jsonl(tmp_path / "audit.jsonl", trail)
    assert verify_events(read_jsonl(path), keys=public_keys(ring)).ok


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"seq": 1', "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"seq": 1, "seq": 2}', "not JSON (duplicate member 'seq')"),
        ('{"time": NaN}', "not JSON (NaN is not JSON)"),
    ],
)
def test_a_malformed_line_is_found_at_its_line_number(
    tmp_path: Path, trail: list[Event], ring: KeyRing, line: str, reason: str
) -> None:
    path = write_jsonl(tmp_path / "audit.jsonl", trail)
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(5, line + "\n")
    path.write_text("".join(lines))

    with pytest.raises(MalformedLine, match="^" + re.escape(f"line 6: {reason}")):
        list(read_jsonl(path))
    report = verify_events(read_jsonl(path), keys=public_keys(ring))
    problem = report.first_problem
    assert problem is not None
    assert (problem.code, problem.position, problem.event_id) == (ProblemCode.MALFORMED, 6, None)
    assert problem.message.startswith(f"line 6: {reason}")
    assert report.events == 5


def test_bad_utf8_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(MalformedLine, match=r"^line 1: not JSON"):
        list(read_jsonl(path))


def test_checkpoint_type_constant_is_what_the_events_carry(trail: list[Event]) -> None:
    assert sum(e["type"] == CHECKPOINT_TYPE for e in trail) == 6


def test_checkpoints_of_a_retired_key_verify_while_its_certificate_is_kept(
    tmp_path: Path,
) -> None:
    from authsvc.tokens.ring import retire, rotate

    directory = tmp_path / "rotating"
    old = make_ring(directory)
    events = make_chain(A, old.signing_key, data=4)
    generate_key(directory)
    rotate(directory)
    retire(directory, old.signing_key.id)
    after = KeyRing.load(directory)
    assert old.signing_key.id not in {key.id for key in after.published}
    assert verify(events, after).ok
    # Deleting a (compromised) retired key's certificate withdraws the trust.
    (directory / f"{old.signing_key.id}.crt.pem").unlink()
    report = verify(events, after)
    assert not report.ok
    assert report.first_problem is not None
    assert report.first_problem.code == ProblemCode.BAD_CHECKPOINT
    assert old.signing_key.id in report.first_problem.message
