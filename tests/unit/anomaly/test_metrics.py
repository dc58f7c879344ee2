"""The consumer's Prometheus exposition: counters, labelled alerts, gauges, the endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from authsvc.anomaly.metrics import CONTENT_TYPE, Metrics, parse_bind, serve_metrics


def test_counters_and_alerts_render_in_the_text_format() -> None:
    metrics = Metrics([("password_spray", "signal"), ("success_after_spray", "page")])
    metrics.add("events", 41)
    metrics.add("events")
    metrics.alert("password_spray", "signal")
    metrics.alert('we"ird\\', "page")

    lines = metrics.render().splitlines()

    assert "# TYPE authsvc_anomaly_events_total counter" in lines
    assert "authsvc_anomaly_events_total 42" in lines
    assert 'authsvc_anomaly_alerts_total{detector="password_spray",severity="signal"} 1' in lines
    assert 'authsvc_anomaly_alerts_total{detector="success_after_spray",severity="page"} 0' in lines
    assert 'authsvc_anomaly_alerts_total{detector="we\\"ird\\\\",severity="page"} 1' in lines
    assert "authsvc_anomaly_webhook_dead_lettered_total 0" in lines
    names = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(names) == len(set(names))  # one HELP/TYPE per family
    assert not any(line.startswith("authsvc_anomaly_lag") for line in lines)


def test_gauges_are_read_at_each_scrape_and_left_out_when_unknown() -> None:
    values = {"pending": 3, "lag": None, "webhook_outbox": 0, "webhook_dead": 2}
    text = Metrics(gauges=lambda: values).render()
    assert "# TYPE authsvc_anomaly_pending gauge\nauthsvc_anomaly_pending 3" in text
    assert "authsvc_anomaly_lag" not in text
    assert "authsvc_anomaly_webhook_dead 2" in text


def test_a_failing_gauge_read_still_gives_the_counters() -> None:
    def broken() -> dict[str, int | None]:
        raise RuntimeError("redis is down")

    text = Metrics(gauges=broken).render()
    assert "authsvc_anomaly_events_total 0" in text and "pending" not in text


def test_an_unknown_counter_is_an_error() -> None:
    with pytest.raises(KeyError):
        Metrics().add("event")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_bind(text: str, parsed: tuple[str, int]) -> None:
    assert parse_bind(text) == parsed


@pytest.mark.parametrize("text", ["9100", ":9100", "host:", "host:0", "host:65536", "h:x"])
def test_parse_bind_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        parse_bind(text)


def test_the_endpoint_serves_metrics_and_nothing_else() -> None:
    metrics = Metrics()
    metrics.add("claimed", 7)
    server = serve_metrics(metrics, "127.0.0.1", 0)
    port = server.server_address[1]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert answer.headers["Content-Type"] == CONTENT_TYPE
            assert "authsvc_anomaly_claimed_total 7" in answer.read().decode()
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert caught.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
