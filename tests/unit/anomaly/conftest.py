from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis

from authsvc.anomaly.redis_state import RedisState
from authsvc.anomaly.replay import build_engine
from authsvc.anomaly.settings import AnomalySettings
from authsvc.anomaly.state import MemoryState, State

Run = Callable[..., list[dict[str, Any]]]


@pytest.fixture(params=["memory", "redis"])
def make_state(request: pytest.FixtureRequest) -> Iterator[Callable[[], State]]:
    """Detector state of either kind; the Redis one under a random prefix of its own."""
    if request.param == "memory":
        yield MemoryState
        return
    url: str = request.getfixturevalue("redis_server_url")
    client = redis.Redis.from_url(url)
    prefixes: list[str] = []

    def make() -> State:
        prefix = f"t{secrets.token_hex(6)}:"
        prefixes.append(prefix)
        return RedisState(client, prefix=prefix)

    yield make
    for prefix in prefixes:
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture
def run(make_state: Callable[[], State]) -> Run:
    """Feed events to a fresh engine; the alerts, as (detector, entity, evidence) lists."""

    def go(
        events: Sequence[dict[str, Any]],
        detectors: dict[str, Any] | None = None,
        **anomaly: Any,
    ) -> list[dict[str, Any]]:
        settings = AnomalySettings.model_validate({"detectors": detectors or {}, **anomaly})
        engine = build_engine(settings, make_state())
        alerts: list[dict[str, Any]] = []
        for event in events:
            alerts += engine.process(event)
        return alerts

    return go
