"""``authsvc detect run`` as a real process: killed mid-stream and taken over, stopped by
SIGTERM, scraped, and out of the token path's way with a webhook that never answers."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from authsvc.app import create_app
from authsvc.audit.verify import public_keys, verify_events
from authsvc.cli import main
from authsvc.config import load_settings
from authsvc.store.redis import RedisStore
from authsvc.tokens import KeyRing
from tests.conftest import SERVICE
from tests.functional.anomaly.conftest import MakeReceiver
from tests.functional.anomaly.support import (
    PrivateRedis,
    alert_keys,
    alerts_of,
    append,
    attack_mix,
    chained,
    replayed,
    stream_events,
    wait_for,
    write_config,
)
from tests.redis_server import _free_port

pytestmark = pytest.mark.redis

GROUP = "authsvc-detect"


def start(config: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "authsvc", "detect", "run", "--config", str(config),
             "--block-ms", "100", *args],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def group_info(server: PrivateRedis) -> dict[str, Any]:
    client = server.client()
    try:
        for info in client.xinfo_groups("authsvc:audit"):
            if info["name"] == GROUP:
                return dict(info)
        return {}
    finally:
        client.close()


def caught_up(server: PrivateRedis) -> bool:
    info = group_info(server)
    return bool(info) and info["pending"] == 0 and info["lag"] == 0


def pairs(alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((a["alert"]["detector"], a["alert"]["entity"]) for a in alerts)


@pytest.mark.parametrize("state", ["memory", "redis"])
def test_a_killed_consumer_s_events_are_taken_over_and_each_alert_written_once(
    private_redis: PrivateRedis, keys_dir: Path, tmp_path: Path, state: str
) -> None:
    config = write_config(tmp_path / "authsvc.yaml", keys_dir, storage=private_redis.url,
                          anomaly={"consumer_state": state, "consumer_lease": 2})  # fmt: skip
    store = RedisStore.from_url(private_redis.url, prefix="authsvc:")
    events = chained(attack_mix(int(time.time()) - 1800, benign=2500), "registry-svc:1")
    append(store, events)
    expected, _ = replayed(events)
    log = tmp_path / "detect.log"

    first = start(config, log, "--consumer", "c1", "--from-start", "--batch", "20")

    def stopped_inside_a_batch() -> bool:
        """Past a third of the stream, frozen (SIGSTOP) with a batch unacknowledged."""
        info = group_info(private_redis)
        read = info.get("entries-read") or 0  # nil until Redis knows it
        if first.poll() is not None or read < len(events) // 3:
            return first.poll() is not None
        first.send_signal(signal.SIGSTOP)
        if group_info(private_redis)["pending"]:
            return True
        first.send_signal(signal.SIGCONT)  # between two batches: a moment later
        return False

    try:
        wait_for(stopped_inside_a_batch, 60, "the first consumer to get a third of the way")
    finally:
        first.kill()  # SIGKILL: no checkpoint, its batch left pending
        first.wait(10)
    assert first.returncode == -signal.SIGKILL, log.read_text()
    left = group_info(private_redis)
    assert left["lag"] > 0 and left["pending"] > 0

    port = _free_port()
    second = start(config, log, "--consumer", "c2", "--min-idle", "0.5",
                   "--metrics-bind", f"127.0.0.1:{port}")  # fmt: skip
    try:
        wait_for(lambda: second.poll() is not None or caught_up(private_redis), 120,
                 "the second consumer to process everything")  # fmt: skip
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            metrics = answer.read().decode()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    output = log.read_text()
    assert second.returncode == 0, output
    assert "authsvc: stopped:" in output

    assert caught_up(private_redis) or group_info(private_redis)["pending"] == 0
    recorded = alerts_of(stream_events(store))
    # Events processed again may cross a threshold at another event (another alert id),
    # but each (detector, entity) is alerted as often as in order: never twice.
    assert pairs(recorded) == pairs(expected)
    if state == "memory":  # each event moved the held state once: replay's very alerts
        assert alert_keys(recorded) == alert_keys(expected)
        assert "holding the detector state of group authsvc-detect" in output
        assert "authsvc_anomaly_state_takeovers_total 1" in metrics
    assert len({a["event_id"] for a in recorded}) == len(recorded)
    trail = stream_events(store)
    report = verify_events(trail, keys=public_keys(KeyRing.load(keys_dir)))
    assert report.first_problem is None, report.first_problem
    c2 = [e for e in trail if f":{second.pid}:" in e.get("writer", "") + ":"]
    assert c2 and c2[-1]["type"] == "audit.checkpoint"  # sealed on SIGTERM
    assert f"claimed {left['pending']} entries" in output
    assert "authsvc_anomaly_events_total " in metrics
    assert "# TYPE authsvc_anomaly_alerts_total counter" in metrics
    assert "authsvc_anomaly_pending 0" in metrics and "authsvc_anomaly_lag " in metrics

    listed = CliRunner().invoke(main, ["detect", "alerts", "--config", str(config),
                                       "--format", "jsonl"])  # fmt: skip
    assert listed.exit_code == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == len(recorded)
    store.close()


def test_a_webhook_that_never_answers_leaves_token_latency_alone(
    private_redis: PrivateRedis, keys_dir: Path, tmp_path: Path, make_receiver: MakeReceiver
) -> None:
    receiver = make_receiver(b"s3cret", hang=True)
    secret = tmp_path / "webhook.secret"
    secret.write_text("s3cret\n")
    config = write_config(
        tmp_path / "authsvc.yaml", keys_dir, storage=private_redis.url,
        anomaly={"webhook": {"url": receiver.url, "secret_file": str(secret), "timeout": 5}},
    )  # fmt: skip
    settings = load_settings(config)
    store = RedisStore.from_url(private_redis.url, prefix="authsvc:")
    client = create_app(settings).test_client()
    url = f"/token?service={SERVICE}&scope=repository:public/app:pull"

    def latencies(count: int) -> list[float]:
        times = []
        for _ in range(count):
            began = time.perf_counter()
            assert client.get(url).status_code == 200
            times.append(time.perf_counter() - began)
        return times

    latencies(20)  # warm
    before = statistics.median(latencies(150))
    consumer = start(config, tmp_path / "detect.log", "--from-start")
    try:
        append(store, chained(attack_mix(int(time.time()) - 900, benign=50), "svc:2"))
        wait_for(lambda: receiver.attempts >= 2 or consumer.poll() is not None, 30,
                 "both webhook senders to hang")  # fmt: skip
        during = statistics.median(latencies(150))
        assert consumer.poll() is None
        wait_for(lambda: caught_up(private_redis), 30, "the consumer to keep up meanwhile")
    finally:
        receiver.release.set()
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
    store.close()
    assert consumer.returncode == 0, (tmp_path / "detect.log").read_text()
    assert during < 3 * before + 0.005, (during, before)
