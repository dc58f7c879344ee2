from __future__ import annotations

import pytest

from authsvc.web.client import client_ip

PROXIES = ("10.0.0.0/8", "fd00::/8")


@pytest.mark.parametrize(
    ("remote", "xff", "trusted", "expected"),
    [
        ("203.0.113.9", ["198.51.100.1"], (), "203.0.113.9"),           # no proxies trusted
        ("203.0.113.9", ["198.51.100.1"], PROXIES, "203.0.113.9"),      # peer is not a proxy
        ("10.0.0.2", ["198.51.100.1"], PROXIES, "198.51.100.1"),
        ("10.0.0.2", ["1.1.1.1, 198.51.100.1, 10.0.0.3"], PROXIES, "198.51.100.1"),  # forged left
        ("10.0.0.2", ["1.1.1.1", "198.51.100.1"], PROXIES, "198.51.100.1"),  # several headers
        ("10.0.0.2", [], PROXIES, "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.4, 10.0.0.3"], PROXIES, "10.0.0.4"),
        ("10.0.0.2", ["junk, 10.0.0.3"], PROXIES, "junk"),
        ("fd00::1", ["2001:db8::7"], PROXIES, "2001:db8::7"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    remote: str, xff: list[str], trusted: tuple[str, ...], expected: str
) -> None:
    assert client_ip(remote, xff, trusted) == expected
