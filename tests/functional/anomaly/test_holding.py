"""``anomaly.consumer_state: memory`` against a real Redis: one consumer holds the state,
checkpoints it with every batch, and whoever takes over (a holder killed at any point of
a batch, a standby) moves the state exactly once per event, so the alerts are exactly
replay's, alert ids included."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from authsvc.anomaly.consumer import HoldingConsumer
from authsvc.anomaly.held_state import HeldState, LeaseLost
from authsvc.errors import StoreUnavailable
from tests.functional.anomaly.support import (
    Place,
    alert_keys,
    alerts_of,
    feed,
    replayed,
    stream_events,
    wait_for,
)

pytestmark = pytest.mark.redis


def checkpointed(place: Place) -> HeldState:
    state = HeldState(place.client, prefix=place.prefix, group="detect")
    state.load()
    return state


def close(*consumers: HoldingConsumer) -> None:
    for consumer in consumers:
        consumer._audit.close()  # type: ignore[attr-defined]


def test_the_holder_records_exactly_the_alerts_replay_writes(place: Place) -> None:
    events = feed(place)
    expected, replay_state = replayed(events)
    assert {a["alert"]["detector"] for a in expected} >= {
        "password_spray", "success_after_spray", "brute_force",
    }  # fmt: skip

    holder = place.holder("c1")
    holder.drain()
    assert place.stream().backlog() == (0, 0)
    close(holder)

    assert alert_keys(alerts_of(stream_events(place.store))) == alert_keys(expected)
    assert holder.state.data == replay_state.data  # exact counts, as replay's
    saved = checkpointed(place)
    assert saved.data == holder.state.data
    assert saved.at == holder.state.at is not None
    place.verify()


def test_an_open_alert_is_written_where_the_token_path_reads_it(place: Place) -> None:
    events = feed(place)
    holder = place.holder("c1")
    holder.drain()
    close(holder)

    principals = {
        a["alert"]["principal"]: a for a in alerts_of(stream_events(place.store))
        if "principal" in a["alert"]
    }  # fmt: skip
    assert principals, "the attack mix has an alert about a principal"
    now = max(e["time"] for e in events) // 1000
    for principal, alert in principals.items():
        assert place.store.open_alert(principal, now) == alert["alert"]["detector"]
        assert 0 < place.client.ttl(f"{place.prefix}anomaly:open:{principal}") <= 3600


@pytest.mark.parametrize("dies", ["before its checkpoint", "after its checkpoint, before the ack"])
def test_a_holder_killed_mid_batch_leaves_its_successor_the_state_exactly_once(
    place: Place, dies: str
) -> None:
    events = feed(place)
    expected, replay_state = replayed(events)
    first = place.holder("c1", lease=1.0)
    assert first.lease.acquire()
    first.take_over()
    for _ in range(8):  # eight batches: processed, checkpointed, acknowledged
        first._handle(first.stream.read(25, 1), None)
    batch = first.stream.read(25, 1)  # the batch it dies in
    for entry in batch:
        first._process(entry)
    if dies == "after its checkpoint, before the ack":
        first.state.checkpoint(first.lease, batch[-1].id)
    pending = place.stream().backlog().pending
    assert pending == len(batch)

    second = place.holder("c2", lease=1.0)
    assert not second.lease.acquire()  # the dead holder's lease runs on for a while
    wait_for(second.lease.acquire, 5, "the dead holder's lease to run out")
    second.drain()
    assert place.stream().backlog() == (0, 0)
    close(first, second)

    assert second.metrics.count("claimed") == pending
    # Each event moved the state once: the same counts, the same alerts, the same ids.
    assert second.state.data == replay_state.data
    recorded = alerts_of(stream_events(place.store))
    assert alert_keys(recorded) == alert_keys(expected)
    place.verify()


def test_a_holder_that_lost_its_lease_cannot_overwrite_its_successor(place: Place) -> None:
    feed(place)
    first = place.holder("c1", lease=0.3)
    assert first.lease.acquire()
    first.take_over()
    first._handle(first.stream.read(25, 1), None)
    at = checkpointed(place).at
    assert at is not None

    time.sleep(0.4)  # paused past its lease
    second = place.holder("c2")
    assert second.lease.acquire()
    with pytest.raises(LeaseLost, match=f"held by {second.lease.holder}"):
        first._handle(first.stream.read(25, 1), None)
    assert checkpointed(place).at == at  # nothing of the lost holder's was written
    assert place.stream().backlog().pending == 25  # and nothing acknowledged
    close(first, second)


def test_a_standby_takes_over_when_the_holder_stops(
    place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc.anomaly.consumer")
    events = feed(place)
    holder, standby = place.holder("c1"), place.holder("c2")
    stops = {holder: threading.Event(), standby: threading.Event()}
    errors: list[BaseException] = []

    def run(consumer: HoldingConsumer) -> None:
        try:
            consumer.run(stops[consumer])
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = {c: threading.Thread(target=run, args=(c,)) for c in (holder, standby)}
    threads[holder].start()
    wait_for(lambda: holder.metrics.count("state_takeovers") == 1, 10, "the first holder")
    threads[standby].start()
    probe = place.stream()
    try:
        standing_by = f"standing by: {holder.lease.holder} holds the detector state"
        wait_for(lambda: standing_by in caplog.text, 10, "the second consumer to stand by")
        wait_for(lambda: errors or probe.backlog() == (0, 0), 60, "the holder to catch up")
        assert standby.metrics.count("events") == 0  # it stood by

        stops[holder].set()  # a stopping holder lets go of its lease at once
        threads[holder].join(10)
        wait_for(lambda: standby.metrics.count("state_takeovers") == 1, 5, "the standby")
        later = feed(place, start=int(time.time()) - 300, seed=8)
        wait_for(lambda: errors or probe.backlog() == (0, 0), 60, "the standby to catch up")
    finally:
        for consumer, thread in threads.items():
            stops[consumer].set()
            thread.join(10)
    assert not errors
    close(holder, standby)

    assert standby.metrics.count("events") > 0
    expected, replay_state = replayed([*events, *later])
    assert alert_keys(alerts_of(stream_events(place.store))) == alert_keys(expected)
    assert checkpointed(place).data == replay_state.data
    assert place.client.exists(holder.lease.key) == 0  # the standby let go when stopped


def test_a_takeover_removes_gone_holders_from_the_group(place: Place) -> None:
    feed(place)
    gone = place.holder("gone")
    gone.drain()  # reads and acknowledges everything: nothing pending under its name
    gone.lease.release()
    names = [c["name"] for c in place.client.xinfo_consumers(place.stream().key, "detect")]
    assert names == ["gone"]
    time.sleep(0.35)
    holder = place.holder("now", lease=0.3)
    holder.drain()
    close(gone, holder)

    names = [c["name"] for c in place.client.xinfo_consumers(place.stream().key, "detect")]
    assert "gone" not in names and names in ([], ["now"])  # (whether a read of nothing
    # makes a consumer depends on the Redis version)


def test_an_unreadable_checkpoint_is_refused_with_the_key_it_names(place: Place) -> None:
    state = HeldState(place.client, prefix=place.prefix, group="detect")
    place.client.hset(state.key, "spray:addr:203.0.113.9:1", '[12, "set"')
    with pytest.raises(StoreUnavailable, match=re.escape("entry: 'spray:addr:203.0.113.9:1'")):
        state.load()
