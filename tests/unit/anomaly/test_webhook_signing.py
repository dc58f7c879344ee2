"""The webhook's signature and secret file, and the sender's answer handling."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from authsvc.anomaly.outbox import Delivery
from authsvc.anomaly.webhook import DeliveryFailed, Sender, Webhook, read_secret, sign


def test_the_signature_is_an_hmac_of_timestamp_dot_body() -> None:
    body = b'{"event_id":"x"}'
    expected = hmac.new(b"k", b"1800000000." + body, hashlib.sha256).hexdigest()
    assert sign(b"k", 1_800_000_000, body) == f"sha256={expected}"
    assert sign(b"k", 1_800_000_001, body) != sign(b"k", 1_800_000_000, body)
    assert sign(b"other", 1_800_000_000, body) != sign(b"k", 1_800_000_000, body)


def test_the_secret_file_loses_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"  s3cret\n")
    assert read_secret(path) == b"s3cret"


@pytest.mark.parametrize("content", [None, b"", b"\n \n"])
def test_a_missing_or_empty_secret_is_refused(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="webhook secret_file"):
        read_secret(path)


def test_the_sender_needs_an_http_url() -> None:
    with pytest.raises(ValueError, match="must be http:// or https://"):
        Sender("file:///etc/passwd", b"k", 1)


def test_a_refused_connection_is_a_failed_attempt(closed_port: int) -> None:
    send = Sender(f"http://127.0.0.1:{closed_port}/", b"k", 1)
    with pytest.raises(DeliveryFailed):
        send(Delivery("id", b"{}", 1))


def test_delays_double_up_to_the_cap() -> None:
    hook = Webhook(
        outbox=None,  # type: ignore[arg-type]  # delay() needs no outbox
        send=lambda d: None, max_attempts=20, base_delay=1.0, max_delay=60.0,
    )  # fmt: skip
    assert [hook.delay(n) for n in (1, 2, 3, 6, 7, 100)] == [1, 2, 4, 32, 60, 60]
