"""End to end: the brute-force backoff as skopeo meets it behind the real registry 2.8.

skopeo runs on this host, so every connection to authsvc comes from 127.0.0.1. To be
two different clients, skopeo talks to a second registry whose realm is a small
forwarding proxy in this process: it relays each token request to authsvc with
`X-Forwarded-For: <the address the test chose>`, and authsvc believes that header only
because the configuration lists the proxy (127.0.0.1/32) in `trusted_proxies` -- as it
would a load balancer in production. The proxy also records what authsvc answered, so
the test sees the 429 and its `Retry-After` that skopeo got.

What skopeo 1.9.3 makes of a 429 from the token endpoint: containers/image turns it into
`ErrTooManyRequests` without reading the body or retrying the token request, so
`skopeo login` fails with `authenticating creds for "HOST": too many requests to
registry` (a wrong password: `logging into "HOST": invalid username/password`).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import ISSUER, SERVICE, Stack, running_stack
from .harness import Registry, Skopeo, require_e2e_binaries

pytestmark = pytest.mark.e2e

ATTACKER = "203.0.113.5"
OWNER = "198.51.100.20"
#: From the 3rd failure: a 2 s wait, then 4 s (max_delay).
BACKOFF = {"threshold": 3, "window": 60, "base_delay": 2, "max_delay": 4}
#: Headers a proxy does not pass on (RFC 9110 7.6.1), plus the ones it sets itself.
_NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "host", "content-length", "x-forwarded-for"}
)
TOO_MANY = "too many requests to registry"
WRONG = "invalid username/password"


@dataclass(frozen=True)
class Relayed:
    """One answer the proxy relayed from authsvc."""

    client: str
    status: int
    retry_after: str | None
    at: float


class ForwardingProxy:
    """A reverse proxy on 127.0.0.1 in front of authsvc that says which client it serves.

    ``client`` is the address put in ``X-Forwarded-For`` (the test switches it);
    ``relayed`` lists every answer. Bodies are relayed with their length (skopeo's GET
    token requests have none).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.client = ATTACKER
        self.relayed: list[Relayed] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.forward(self)

            def do_POST(self) -> None:
                proxy.forward(self)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _NOT_FORWARDED}
        with self._lock:
            client = self.client
        headers["X-Forwarded-For"] = client
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        with self._lock:
            self.relayed.append(
                Relayed(client, answer.status, answer.getheader("Retry-After"), time.time())
            )
        handler.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in _NOT_FORWARDED:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(data)
        handler.close_connection = True

    def serve_as(self, client: str) -> int:
        """Serve the next requests as ``client``; how many answers were relayed so far."""
        with self._lock:
            self.client = client
            return len(self.relayed)

    def answers_since(self, mark: int) -> list[Relayed]:
        with self._lock:
            return self.relayed[mark:]

    def __enter__(self) -> ForwardingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@dataclass
class Proxied:
    """The stack, plus a registry whose realm is the proxy."""

    stack: Stack
    proxy: ForwardingProxy
    registry: Registry

    def login(self, client: str, user: str, password: str) -> tuple[str, list[Relayed]]:
        """`skopeo login` as ``client``: skopeo's stderr ("" on success) and what authsvc
        answered it."""
        mark = self.proxy.serve_as(client)
        result = Skopeo(self.stack.workdir / "skopeo" / f"{client}-{user}-{mark}").login(
            self.registry.host, user, password
        )
        stderr = "" if result.returncode == 0 else result.stderr
        return stderr, self.proxy.answers_since(mark)


def _configure(config: dict[str, Any]) -> None:
    config["trusted_proxies"] = ["127.0.0.1/32"]
    config["anomaly"] = {"backoff": BACKOFF}


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    require_e2e_binaries()
    workdir: Path = tmp_path_factory.mktemp("backoff-flow")
    with (
        running_stack(workdir, _configure) as stack,
        ForwardingProxy(stack.authsvc.port) as proxy,
        Registry(
            workdir / "registry-proxied",
            realm=proxy.realm,
            service=SERVICE,
            issuer=ISSUER,
            rootcertbundle=stack.bundle,
        ) as registry,
    ):
        yield Proxied(stack, proxy, registry)


def test_guessing_from_one_address_makes_only_that_address_wait(proxied: Proxied) -> None:
    stack, right = proxied.stack, proxied.stack.passwords["alice"]
    events_before = len(stack.audit_events())

    # three wrong passwords from the attacker's address: each a plain 401
    for n in range(3):
        stderr, answers = proxied.login(ATTACKER, "alice", f"guess-{n}")
        assert WRONG in stderr, stack.explain(stderr)
        assert [(a.status, a.retry_after) for a in answers] == [(401, None)]

    # now even the right password waits, from that address: authsvc answered 429
    stderr, answers = proxied.login(ATTACKER, "alice", right)
    assert TOO_MANY in stderr, stack.explain(stderr)
    (refused,) = answers
    assert refused.status == 429
    assert refused.retry_after in ("1", "2")

    # the owner, from another address, is not slowed; nor is another account
    for client, user in ((OWNER, "alice"), (ATTACKER, "reader")):
        stderr, answers = proxied.login(client, user, stack.passwords[user])
        assert stderr == "", stack.explain(stderr)
        assert [a.status for a in answers] == [200]

    # once the wait has passed, the right password works from the attacker's address too
    time.sleep(max(0.0, refused.at + int(refused.retry_after or 0) - time.time()) + 0.2)
    stderr, answers = proxied.login(ATTACKER, "alice", right)
    assert stderr == "", stack.explain(stderr)
    assert [a.status for a in answers] == [200]

    # authsvc saw the addresses the proxy named, and recorded the refusal once
    events = stack.audit_events()[events_before:]
    seen = [(e["client"]["ip"], e["actor"].get("username"), e["reason"]) for e in events]
    assert seen == [
        (ATTACKER, "alice", "INVALID_CREDENTIALS"),
        (ATTACKER, "alice", "INVALID_CREDENTIALS"),
        (ATTACKER, "alice", "INVALID_CREDENTIALS"),
        (ATTACKER, "alice", "TOO_MANY_ATTEMPTS"),
        (OWNER, "alice", "GRANTED"),
        (ATTACKER, "reader", "GRANTED"),
        (ATTACKER, "alice", "GRANTED"),
    ], stack.explain("unexpected audit events")
    assert right not in stack.authsvc.log_text()
