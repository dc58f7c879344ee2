"""What the consumer tests share: audit events with attacks in them, a private Redis, a
configuration file, a webhook receiver, and the audit stream read back."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from authsvc.anomaly.consumer import Consumer, HoldingConsumer
from authsvc.anomaly.engine import ALERT_TYPE, Engine
from authsvc.anomaly.held_state import HeldState, Lease
from authsvc.anomaly.redis_state import RedisState
from authsvc.anomaly.replay import build_engine
from authsvc.anomaly.settings import AnomalySettings
from authsvc.anomaly.state import MemoryState
from authsvc.anomaly.stream import GroupStream
from authsvc.audit import MemoryAuditLog
from authsvc.audit.chain import ChainedAuditLog
from authsvc.audit.sinks import StoreAuditLog
from authsvc.audit.verify import public_keys, verify_events
from authsvc.store import Store
from authsvc.store.redis import RedisStore
from authsvc.tokens import KeyRing
from tests.conftest import base_config
from tests.unit.anomaly.events import failure, success

#: Events appended to the stream at a time.
_APPEND_BATCH = 500


def attack_mix(start: int, *, benign: int = 400, seed: int = 7) -> list[dict[str, Any]]:
    """Benign successes of 40 people with a few typos, then (interleaved) a password
    spray from one address followed by a success from it, and a brute force on one
    account: alerts from password_spray, success_after_spray and brute_force. Event
    times (seconds) start at ``start``, a few per second."""
    rng = random.Random(seed)
    people = [f"dev{n:02d}" for n in range(40)]
    home = {p: f"198.{n + 18}.100.{n + 10}" for n, p in enumerate(people)}  # own networks
    events: list[dict[str, Any]] = []
    at = start
    for n in range(benign):
        person = rng.choice(people)
        at += rng.choice((0, 0, 1))
        if rng.random() < 0.03:
            events.append(failure(person, home[person], at))
        else:
            repo = f"repository:team/app{rng.randrange(12)}:pull"
            events.append(success(person, home[person], at, granted=[repo], groups=["dev"]))
        if n == benign // 4:  # a spray: 14 accounts from one address, then a success
            for victim in range(14):
                events.append(failure(f"victim{victim}", "203.0.113.66", at))
            events.append(success("victim3", "203.0.113.66", at + 1))
        if n == benign * 3 // 4:  # a brute force on one account from one address
            for _ in range(24):
                events.append(failure("dev07", "192.0.2.200", at))
    return events


def replayed(events: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], MemoryState]:
    """What ``authsvc detect replay`` finds in the events, and the state it ends with."""
    state = MemoryState()
    engine = build_engine(AnomalySettings(), state)
    return [alert for event in events for alert in engine.process(event)], state


def feed(place: Place, start: int | None = None, seed: int = 7) -> list[dict[str, Any]]:
    """``attack_mix`` from ``start`` (default: 15 minutes ago), chained and appended to
    the place's audit stream."""
    at = int(time.time()) - 900 if start is None else start
    events = chained(attack_mix(at, seed=seed), f"registry-svc:{seed}")
    append(place.store, events)
    return events


def chained(events: Sequence[dict[str, Any]], writer: str) -> list[dict[str, Any]]:
    """The events as one service writer would have recorded them (seq, chain)."""
    sink = MemoryAuditLog()
    chain = ChainedAuditLog(sink, writer=writer, signer=None)
    for event in events:
        chain.record(event)
    return list(sink.events)


def append(store: Store, events: Sequence[dict[str, Any]]) -> None:
    for at in range(0, len(events), _APPEND_BATCH):
        store.append_audit(events[at : at + _APPEND_BATCH], max_len=10_000_000, min_time_ms=None)


def stream_events(store: Store) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = "0"
    while page := store.read_audit(after, 1000):
        out += [event for _, event in page]
        after = page[-1][0]
    return out


def alerts_of(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event.get("type") == ALERT_TYPE]


def alert_keys(alerts: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(event_id, detector, entity), sorted."""
    return sorted(
        (a["event_id"], a["alert"]["detector"], a["alert"]["entity"]) for a in alerts
    )


@dataclass
class PrivateRedis:
    """A redis-server of one test's own (no persistence): the CLI's key prefix is fixed,
    so a consumer started as a command needs a server nothing else writes to."""

    url: str
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)


def write_config(
    path: Path, keys_dir: Path, *, storage: str, sink: str = "redis", **extra: Any
) -> Path:
    config = base_config(keys_dir)
    config["storage"] = storage
    config["audit"] = {
        "sink": sink,
        "file": {"path": str(path.parent / "audit" / "audit.jsonl")},
        "key_file": str(path.parent / "audit" / "fingerprint.key"),
        "spool": str(path.parent / "audit" / "spool.jsonl"),
    }
    config.update(extra)
    path.write_text(yaml.safe_dump(config))
    return path


# -- a webhook receiver -----------------------------------------------------------------


@dataclass
class Received:
    event_id: str
    body: bytes
    timestamp: str
    signature_ok: bool
    at: float


@dataclass
class Receiver:
    """Answers with ``statuses`` in turn (then 200), or never (``hang``)."""

    secret: bytes
    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def delivered(self) -> list[Received]:
        return [r for r in self.received if r.signature_ok]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def body_of(received: Received) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(received.body)
    return parsed


@dataclass
class Place:
    """A key prefix of this test's own on the shared test Redis."""

    client: redis.Redis
    prefix: str
    store: RedisStore
    keyring: KeyRing

    def consumer(
        self,
        name: str,
        *,
        engine: Engine | None = None,
        queue: Callable[[Mapping[str, Any]], object] | None = None,
        batch: int = 25,
        min_idle: float = 30.0,
    ) -> Consumer:
        stream, audit = self._parts(name)
        state = RedisState(self.client, prefix=self.prefix)
        engine = engine or build_engine(AnomalySettings(), state)
        return Consumer(
            stream, engine, audit, queue=queue, batch=batch, block_ms=50, min_idle=min_idle
        )

    def holder(
        self,
        name: str,
        *,
        batch: int = 25,
        lease: float = 10.0,
        queue: Callable[[Mapping[str, Any]], object] | None = None,
    ) -> HoldingConsumer:
        """A consumer of ``anomaly.consumer_state: memory`` (it has not taken over yet)."""
        stream, audit = self._parts(name)
        state = HeldState(self.client, prefix=self.prefix, group="detect")
        held = Lease(self.client, prefix=self.prefix, group="detect", consumer=name, seconds=lease)
        engine = build_engine(AnomalySettings(), state)
        return HoldingConsumer(
            stream, engine, state, held, audit, queue=queue, batch=batch,
            block_ms=min(50, held.ms // 3), poll=min(0.05, lease / 4),
        )  # fmt: skip

    def _parts(self, name: str) -> tuple[GroupStream, ChainedAuditLog]:
        """The consumer's view of the group (created from the start) and its audit log."""
        stream = GroupStream(self.client, prefix=self.prefix, group="detect", consumer=name)
        stream.create_group(from_start=True)
        audit = ChainedAuditLog(
            StoreAuditLog(self.store, retention_seconds=None),
            writer=f"detect:{name}",
            signer=lambda: self.keyring.signing_key,
            checkpoint_every=5,
        )
        return stream, audit

    def stream(self, name: str = "probe") -> GroupStream:
        return GroupStream(self.client, prefix=self.prefix, group="detect", consumer=name)

    def verify(self) -> None:
        report = verify_events(stream_events(self.store), keys=public_keys(self.keyring))
        assert report.first_problem is None, report.first_problem
