"""The webhook against a real Redis outbox and a local receiver: signed, retried with
backoff, dead-lettered, filtered by severity, queued once, kept across a restart, and
never in detection's way."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from authsvc.anomaly.metrics import Metrics
from authsvc.anomaly.outbox import Delivery, Outbox
from authsvc.anomaly.replay import encode_alert
from authsvc.anomaly.webhook import Sender, Webhook, sign
from tests.functional.anomaly.conftest import MakeReceiver
from tests.functional.anomaly.support import (
    Place,
    Receiver,
    append,
    body_of,
    chained,
    wait_for,
)
from tests.unit.anomaly.events import failure

pytestmark = pytest.mark.redis

SECRET = b"a webhook secret of the tests"


def alert(n: int, severity: str = "signal") -> dict[str, Any]:
    return {
        "schema": "authsvc.audit/1",
        "event_id": f"01900000-0000-7000-8000-{n:012d}",
        "time": 1_800_000_000_000 + n,
        "type": "anomaly.alert",
        "outcome": "success",
        "reason": "PASSWORD_SPRAY",
        "alert": {"detector": "password_spray", "severity": severity,
                  "entity": f"ip:203.0.113.{n}", "evidence": {"accounts": 12},
                  "window": {"start": 0, "end": 1}, "event_ids": ["x"]},
    }  # fmt: skip


@contextmanager
def webhook(
    place: Place, receiver: Receiver, *, start: bool = True, **options: Any
) -> Iterator[tuple[Webhook, Metrics, Outbox]]:
    outbox = Outbox(place.client, prefix=place.prefix)
    metrics = Metrics()
    timeout = options.pop("timeout", 2.0)
    hook = Webhook(
        outbox,
        Sender(receiver.url, SECRET, timeout),
        timeout=timeout,
        max_attempts=options.pop("max_attempts", 5),
        base_delay=options.pop("base_delay", 0.05),
        poll=0.05,
        on=metrics.add,
        **options,
    )
    if start:
        hook.start()
    try:
        yield hook, metrics, outbox
    finally:
        hook.stop(5)


def test_alerts_are_posted_signed_over_timestamp_and_body(
    place: Place, make_receiver: MakeReceiver
) -> None:
    receiver = make_receiver(SECRET)
    with webhook(place, receiver) as (hook, metrics, outbox):
        sent = [alert(1), alert(2, "page")]
        for item in sent:
            assert hook.queue(item)
        wait_for(lambda: len(receiver.received) == 2, 10, "two deliveries")
        wait_for(lambda: outbox.sizes() == (0, 0), 5, "an empty outbox")

    assert all(r.signature_ok for r in receiver.received)
    by_id = {r.event_id: r for r in receiver.received}
    for item in sent:
        got = by_id[item["event_id"]]
        assert got.body == encode_alert(item).encode()
        assert abs(int(got.timestamp) - time.time()) < 60
    assert metrics.count("webhook_delivered") == 2
    # The signature covers the timestamp: the same body at another time is another MAC.
    assert sign(SECRET, 1, b"{}") != sign(SECRET, 2, b"{}")


def test_failed_attempts_are_retried_with_growing_delays_then_delivered(
    place: Place, make_receiver: MakeReceiver
) -> None:
    receiver = make_receiver(SECRET, statuses=[500, 502, 503])
    with webhook(place, receiver, base_delay=0.2) as (hook, metrics, _):
        started = time.monotonic()
        hook.queue(alert(1))
        wait_for(lambda: receiver.delivered(), 15, "a delivery")
        elapsed = time.monotonic() - started

    assert receiver.attempts == 4
    assert elapsed >= 0.2 + 0.4 + 0.8 - 0.05  # 0.2 s doubled after each failure
    assert metrics.count("webhook_failed") == 3
    assert metrics.count("webhook_delivered") == 1


def test_an_alert_is_dead_lettered_after_max_attempts(
    place: Place, make_receiver: MakeReceiver
) -> None:
    receiver = make_receiver(SECRET, statuses=[500] * 10)
    with webhook(place, receiver, max_attempts=3) as (hook, metrics, outbox):
        hook.queue(alert(1))
        wait_for(lambda: outbox.sizes() == (0, 1), 10, "a dead letter")

    assert receiver.attempts == 3 and not receiver.delivered()
    [dead] = outbox.dead_letters()
    assert dead["alert"] == alert(1)
    assert dead["attempts"] == 3 and dead["error"] == "HTTP 500"
    assert place.client.lrange(f"{place.prefix}anomaly:webhook:dead", 0, -1) == [
        json.dumps(dead, sort_keys=True, separators=(",", ":"))
    ]
    assert metrics.count("webhook_failed") == 3
    assert metrics.count("webhook_dead_lettered") == 1


def test_min_severity_page_sends_pages_only(place: Place, make_receiver: MakeReceiver) -> None:
    receiver = make_receiver(SECRET)
    with webhook(place, receiver, min_severity="page") as (hook, _, outbox):
        assert not hook.queue(alert(1, "signal"))
        assert hook.queue(alert(2, "page"))
        wait_for(lambda: receiver.delivered(), 10, "a delivery")
        time.sleep(0.2)

    assert [r.event_id for r in receiver.received] == [alert(2)["event_id"]]
    assert body_of(receiver.received[0])["alert"]["severity"] == "page"
    assert outbox.sizes() == (0, 0)


def test_an_alert_is_queued_and_delivered_once(place: Place, make_receiver: MakeReceiver) -> None:
    receiver = make_receiver(SECRET)
    with webhook(place, receiver) as (hook, _, _):
        assert hook.queue(alert(1))
        assert not hook.queue(alert(1))  # processed again: already queued
        wait_for(lambda: receiver.delivered(), 10, "a delivery")
        time.sleep(0.3)
        assert not hook.queue(alert(1))  # and after delivery too

    assert len(receiver.received) == 1


def test_the_outbox_outlives_the_process_and_a_dead_sender(
    place: Place, make_receiver: MakeReceiver
) -> None:
    receiver = make_receiver(SECRET)
    with webhook(place, receiver, start=False) as (hook, _, outbox):
        hook.queue(alert(1))
        hook.queue(alert(2))
        taken = outbox.take(lease_ms=300)  # a sender that dies mid-POST
        assert isinstance(taken, Delivery) and taken.attempt == 1
    # "restarted": a new process's webhook delivers both, the abandoned one after its lease
    with webhook(place, receiver) as (_, metrics, outbox):
        wait_for(lambda: len(receiver.received) == 2, 10, "two deliveries")
        wait_for(lambda: outbox.sizes() == (0, 0), 5, "an empty outbox")

    assert {r.event_id for r in receiver.received} == {alert(1)["event_id"], alert(2)["event_id"]}
    assert metrics.count("webhook_delivered") == 2


def test_a_hanging_receiver_does_not_slow_detection(
    place: Place, make_receiver: MakeReceiver
) -> None:
    """Detection with a receiver that never answers (every alert holds a sender for the
    whole timeout) takes about as long as with no webhook at all."""
    start = int(time.time()) - 900
    sprays = [  # 60 addresses in 60 networks, each spraying 12 accounts: 60 alerts
        failure(f"victim{v}-{ip}", f"198.{ip}.113.9", start + ip)
        for ip in range(60)
        for v in range(12)
    ]
    receiver = make_receiver(SECRET, hang=True)

    def detect(place: Place, queue: Any) -> float:
        append(place.store, chained(sprays, "registry-svc:1"))
        consumer = place.consumer("c1", queue=queue, batch=100)
        started = time.monotonic()
        consumer.drain()
        return time.monotonic() - started

    without = detect(place, None)
    other = Place(place.client, place.prefix + "hanging:", place.store, place.keyring)
    other.store = type(place.store)(place.client, prefix=other.prefix, address="test")
    with webhook(other, receiver, timeout=5.0) as (hook, _, outbox):
        with_hook = detect(other, hook.queue)
        waiting, _ = outbox.sizes()
        assert receiver.attempts >= 1  # the senders are stuck in a POST
        receiver.release.set()

    assert waiting >= 50
    assert with_hook < 2 * without + 1.0, (with_hook, without)
