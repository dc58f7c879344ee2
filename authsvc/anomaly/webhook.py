"""The alert webhook: each alert POSTed as JSON, signed, retried, then dead-lettered.

One request per alert and attempt::

    POST {anomaly.webhook.url}
    Content-Type: application/json
    X-Authsvc-Event-Id: {the alert's event_id}
    X-Authsvc-Timestamp: {seconds since the epoch when this attempt was sent}
    X-Authsvc-Signature: sha256={hex HMAC-SHA256(secret, timestamp + "." + body)}

    {the alert event, as ``authsvc detect replay`` writes it: sorted keys, compact}

The timestamp is part of the signed material, so a captured request cannot be passed
off as a new one: receivers check the signature, refuse timestamps more than a few
minutes away from their clock, and drop event ids they have seen (delivery is at least
once: a sender that dies after the receiver answered, before the outbox heard of it,
sends again). The secret is the content of ``secret_file`` with surrounding whitespace
(a trailing newline) removed.

A 2xx answer is a delivery. Anything else (another status, a redirect, which is never
followed, a timeout after ``timeout`` seconds, a refused connection) is a failed
attempt, tried again after ``base_delay * 2**(attempt - 1)`` seconds (at most
``max_delay``) until ``max_attempts`` attempts have failed; then the alert goes to the
dead-letter list (``authsvc.anomaly.outbox``).

Delivery runs on threads of its own in the consumer process, from the outbox in Redis:
detection only queues an alert (one script), so a slow or hanging receiver holds a
sender thread, never the consumer's loop, and the token service never sees a webhook.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from authsvc.anomaly.outbox import Delivery, Outbox
from authsvc.anomaly.replay import encode_alert
from authsvc.errors import StoreUnavailable

__all__ = [
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryFailed",
    "Sender",
    "Webhook",
    "read_secret",
    "sign",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Authsvc-Signature"
TIMESTAMP_HEADER: Final = "X-Authsvc-Timestamp"
EVENT_HEADER: Final = "X-Authsvc-Event-Id"

_SEVERITY_RANK: Final = {"signal": 0, "page": 1}
#: What a sender reads of an answer before dropping it.
_ANSWER_LIMIT = 64 * 1024


class DeliveryFailed(Exception):
    """One attempt failed (the message says how)."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Authsvc-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def read_secret(path: Path) -> bytes:
    """The webhook secret: the file's bytes without surrounding whitespace."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"webhook secret_file {path}: {exc.strerror or exc}") from exc
    if not secret:
        raise ValueError(f"webhook secret_file {path} is empty")
    return secret


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx surfaces as an HTTPError: a failed attempt


class Sender:
    """POSTs one delivery (``__call__``); raises DeliveryFailed unless answered 2xx."""

    def __init__(
        self, url: str, secret: bytes, timeout: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"webhook url {url!r} must be http:// or https://")
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __call__(self, delivery: Delivery) -> None:
        timestamp = int(self._clock())
        request = urllib.request.Request(  # noqa: S310 (the url is http(s), checked above)
            self._url,
            data=delivery.body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "authsvc-webhook",
                EVENT_HEADER: delivery.id,
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(self._secret, timestamp, delivery.body),
            },
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as answer:
                answer.read(_ANSWER_LIMIT)
                status = answer.status
        except urllib.error.HTTPError as exc:
            raise DeliveryFailed(f"HTTP {exc.code}") from exc
        except urllib.error.URLError as exc:
            raise DeliveryFailed(str(exc.reason)) from exc
        except TimeoutError as exc:
            raise DeliveryFailed(f"no answer within {self._timeout} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}")


class Webhook:
    """Queues alerts of ``min_severity`` or above, and delivers them on ``workers``
    threads (``start``/``stop``). ``on`` counts ``webhook_delivered``,
    ``webhook_failed`` and ``webhook_dead_lettered`` (``Metrics.add``)."""

    def __init__(
        self,
        outbox: Outbox,
        send: Callable[[Delivery], None],
        *,
        max_attempts: int,
        min_severity: str = "signal",
        timeout: float = 5,
        workers: int = 2,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        poll: float = 1.0,
        on: Callable[[str], None] = lambda name: None,
    ) -> None:
        if max_attempts < 1 or workers < 1:
            raise ValueError("max_attempts and workers must be at least 1")
        if min_severity not in _SEVERITY_RANK:
            raise ValueError(f"min_severity must be one of {sorted(_SEVERITY_RANK)}")
        self._outbox = outbox
        self._send = send
        self._max_attempts = max_attempts
        self._min_rank = _SEVERITY_RANK[min_severity]
        self._workers = workers
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._poll = poll
        #: Long enough for one attempt: the socket timeout applies per read.
        self._lease_ms = int((3 * timeout + 30) * 1000)
        self._on = on
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._threads: list[threading.Thread] = []

    def wanted(self, alert: Mapping[str, Any]) -> bool:
        severity = (alert.get("alert") or {}).get("severity")
        return _SEVERITY_RANK.get(str(severity), 0) >= self._min_rank

    def queue(self, alert: Mapping[str, Any]) -> bool:
        """Queue the alert for delivery (once, whoever calls); True if queued now."""
        if not self.wanted(alert):
            return False
        queued = self._outbox.enqueue(str(alert["event_id"]), encode_alert(alert).encode())
        if queued:
            self._wakeup.set()
        return queued

    def start(self) -> None:
        for number in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"webhook-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float) -> None:
        """Stop taking alerts; wait up to ``timeout`` for attempts in flight (one that is
        not over is taken again after its lease, and may be delivered twice)."""
        self._stopping.set()
        self._wakeup.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``."""
        return float(min(self._max_delay, self._base_delay * 2 ** min(attempt - 1, 60)))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                taken = self._outbox.take(self._lease_ms)
            except StoreUnavailable as exc:
                log.warning("webhook: %s; trying again", exc)
                self._pause(self._poll * 5)
                continue
            if isinstance(taken, Delivery):
                self._deliver(taken)
            else:
                self._pause(self._poll if taken is None else min(self._poll, taken / 1000))

    def _pause(self, seconds: float) -> None:
        if self._wakeup.wait(seconds):
            self._wakeup.clear()

    def _deliver(self, delivery: Delivery) -> None:
        try:
            self._send(delivery)
        except DeliveryFailed as exc:
            self._on("webhook_failed")
            self._failed(delivery, str(exc))
            return
        self._on("webhook_delivered")
        try:
            self._outbox.done(delivery)
        except StoreUnavailable as exc:  # taken again after the lease: sent twice
            log.warning("webhook: alert %s delivered, not marked so: %s", delivery.id, exc)

    def _failed(self, delivery: Delivery, error: str) -> None:
        try:
            if delivery.attempt >= self._max_attempts:
                if self._outbox.dead(delivery, error):
                    self._on("webhook_dead_lettered")
                    log.warning(
                        "webhook: alert %s dead-lettered after %d attempts: %s",
                        delivery.id, delivery.attempt, error,
                    )  # fmt: skip
            else:
                self._outbox.retry(delivery, int(self.delay(delivery.attempt) * 1000))
        except StoreUnavailable as exc:  # taken again after the lease
            log.warning(
                "webhook: alert %s: attempt failed (%s), not noted: %s", delivery.id, error, exc
            )
