"""An alert the detectors raise in Redis is the open alert the token service reads."""

from __future__ import annotations

import secrets

import redis

from authsvc.anomaly.redis_state import RedisState
from authsvc.anomaly.replay import build_engine
from authsvc.anomaly.settings import AnomalySettings
from authsvc.store.redis import RedisStore
from tests.unit.anomaly.events import T0, success


def test_the_engines_alert_opens_one_for_the_store(redis_server_url: str) -> None:
    prefix = f"t{secrets.token_hex(6)}:"
    client = redis.Redis.from_url(redis_server_url)
    store = RedisStore.from_url(redis_server_url, prefix=prefix)
    try:
        engine = build_engine(AnomalySettings(), RedisState(client, prefix=prefix))
        day = 86400
        for event in (
            success("carol", "203.0.113.9", T0),
            success("carol", "203.0.113.9", T0 + 100 * day),  # dormant for 100 days
        ):
            alerts = engine.process(event)
        assert [a["alert"]["detector"] for a in alerts] == ["dormant_credential"]
        assert alerts[0]["alert"]["principal"] == "static:carol"
        now = T0 + 100 * day
        assert store.open_alert("static:carol", now) == "dormant_credential"
        assert store.open_alert("static:carol", now + 90 * day) is None
    finally:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
        store.close()
