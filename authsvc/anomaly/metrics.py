"""The consumer's counters, in the Prometheus text exposition format (version 0.0.4).

Counters are this process's own since it started (Prometheus sums the consumers of a
group and handles restarts); gauges are read from Redis when scraped (one XINFO GROUPS,
one ZCARD and one LLEN), so every consumer reports the whole group's backlog::

    authsvc_anomaly_events_total                      audit events processed and acknowledged
    authsvc_anomaly_event_errors_total                events a detector failed on (logged)
    authsvc_anomaly_claimed_total                     entries taken over from idle consumers
    authsvc_anomaly_state_takeovers_total             times it took the held state over
    authsvc_anomaly_state_lost_total                  times it lost the held state's lease
    authsvc_anomaly_alerts_total{detector,severity}   alerts this consumer recorded
    authsvc_anomaly_alerts_duplicate_total            alerts found already recorded
    authsvc_anomaly_webhook_delivered_total           POSTs answered 2xx
    authsvc_anomaly_webhook_failed_total              attempts that failed (each retry counts)
    authsvc_anomaly_webhook_dead_lettered_total       alerts moved to the dead-letter list
    authsvc_anomaly_pending                           (gauge) delivered, not acknowledged
    authsvc_anomaly_lag                               (gauge) not yet delivered to the group
    authsvc_anomaly_webhook_outbox                    (gauge) alerts waiting for delivery
    authsvc_anomaly_webhook_dead                      (gauge) alerts in the dead-letter list

The endpoint (``serve_metrics``) is a small HTTP server on a daemon thread: ``GET
/metrics`` (or ``/``) and nothing else.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["CONTENT_TYPE", "Metrics", "parse_bind", "serve_metrics"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: name -> help, for the plain counters.
_COUNTERS: dict[str, str] = {
    "events": "Audit events this consumer processed and acknowledged.",
    "event_errors": "Events a detector failed on (logged, then acknowledged).",
    "claimed": "Stream entries taken over from consumers idle past the claim time.",
    "state_takeovers": "Times this consumer took the held detector state over (memory).",
    "state_lost": "Times this consumer lost the held detector state's lease (memory).",
    "alerts_duplicate": "Alerts found already recorded (an event processed twice).",
    "webhook_delivered": "Webhook POSTs answered with a 2xx status.",
    "webhook_failed": "Webhook attempts that failed (every retry counts).",
    "webhook_dead_lettered": "Alerts moved to the webhook dead-letter list.",
}
_GAUGES: dict[str, str] = {
    "pending": "Entries delivered to the group's consumers and not acknowledged.",
    "lag": "Entries of the audit stream not yet delivered to the group.",
    "webhook_outbox": "Alerts waiting in the webhook outbox.",
    "webhook_dead": "Alerts in the webhook dead-letter list.",
}

Gauges = Callable[[], Mapping[str, int | None]]


class Metrics:
    """Thread-safe counters; ``render`` gives the exposition text."""

    def __init__(
        self, detectors: Iterable[tuple[str, str]] = (), gauges: Gauges | None = None
    ) -> None:
        """``detectors``: the (detector, severity) pairs to report from the start, at 0."""
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._alerts: dict[tuple[str, str], int] = dict.fromkeys(detectors, 0)
        self._gauges = gauges

    def add(self, name: str, amount: int = 1) -> None:
        if name not in self._counts:
            raise KeyError(f"no counter {name!r}")
        with self._lock:
            self._counts[name] += amount

    def alert(self, detector: str, severity: str) -> None:
        with self._lock:
            key = (detector, severity)
            self._alerts[key] = self._alerts.get(key, 0) + 1

    def count(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def alerts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._alerts)

    def render(self) -> str:
        with self._lock:
            counts, alerts = dict(self._counts), dict(self._alerts)
        lines: list[str] = []
        for name, text in _COUNTERS.items():
            if name == "alerts_duplicate":
                _family(lines, "alerts_total", "Alerts this consumer recorded.", "counter")
                for (detector, severity), value in sorted(alerts.items()):
                    labels = f'detector="{_escape(detector)}",severity="{_escape(severity)}"'
                    lines.append(f"authsvc_anomaly_alerts_total{{{labels}}} {value}")
            _family(lines, f"{name}_total", text, "counter")
            lines.append(f"authsvc_anomaly_{name}_total {counts[name]}")
        if self._gauges is not None:
            try:
                values = self._gauges()
            except Exception as exc:  # a scrape still gets the counters
                log.warning("anomaly metrics: gauges not read: %s", exc)
                values = {}
            for name, text in _GAUGES.items():
                gauge = values.get(name)
                if gauge is not None:
                    _family(lines, name, text, "gauge")
                    lines.append(f"authsvc_anomaly_{name} {gauge}")
        return "\n".join(lines) + "\n"


def _family(lines: list[str], name: str, text: str, kind: str) -> None:
    lines.append(f"# HELP authsvc_anomaly_{name} {text}")
    lines.append(f"# TYPE authsvc_anomaly_{name} {kind}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (a port from 1 to 65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve_metrics(metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``metrics`` on (host, port) from a daemon thread; ``shutdown()`` stops it.
    Raises OSError when the address cannot be bound."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None  # scrapes are not worth a log line each

    server = (_Server6 if ":" in host else _Server)((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="anomaly-metrics", daemon=True).start()
    return server
