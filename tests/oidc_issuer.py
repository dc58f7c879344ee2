"""A real OIDC issuer on 127.0.0.1 for the tests (a helper module and pytest plugin).

``TestIssuer`` serves ``<path>/.well-known/openid-configuration`` and ``<path>/jwks``
over HTTP on a free loopback port (authsvc accepts http:// on loopback only), holds
real RSA-2048 and EC P-256 keys, mints tokens with pyjwt, counts fetches, and can be
told to misbehave per path (``Fault``: a status, a redirect, a delay, another body,
padding past a size cap).

Fixtures: ``issuer`` (one started issuer) and ``make_issuer(path="")`` (a factory);
both stop their servers at teardown.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import get_default_algorithms

__all__ = ["AUDIENCE", "Fault", "IssuerKey", "MakeIssuer", "TestIssuer", "issuer", "make_issuer"]

#: The audience tokens carry unless told otherwise.
AUDIENCE: Final = "https://registry.test"
DISCOVERY: Final = "/.well-known/openid-configuration"
JWKS: Final = "/jwks"
#: Claims ``mint`` fills in unless they are given, omitted or left out of ``include``.
DEFAULT_CLAIMS: Final = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti")
_DEFAULT: Final[Any] = object()


@dataclass
class Fault:
    """How one path misbehaves. The defaults answer normally."""

    status: int = 200
    location: str | None = None  # sent as Location (with a 3xx status)
    delay: float = 0.0  # seconds to wait before answering (a hang, if long)
    body: bytes | None = None  # replaces the document
    content_type: str = "application/json"
    pad_to: int = 0  # pad the document with trailing spaces to this many bytes
    send_length: bool = True  # False: no Content-Length, the body ends at close


@dataclass
class IssuerKey:
    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    published: bool = True

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        data: dict[str, Any] = get_default_algorithms()[self.alg].to_jwk(public, as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}


def _new_key(alg: str) -> IssuerKey:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"the test issuer has no {alg} keys")
    return IssuerKey(f"{alg.lower()}-{secrets.token_hex(4)}", alg, private)


def _compact_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class TestIssuer:
    """An OIDC issuer on ``http://127.0.0.1:PORT<path>`` (a context manager)."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, path: str = "", *, audience: str = AUDIENCE) -> None:
        self.path = path.rstrip("/")
        self.audience = audience
        self.keys: list[IssuerKey] = [_new_key("RS256"), _new_key("ES256")]
        self.faults: dict[str, Fault] = {}
        #: Replaces the discovery document's fields (e.g. another issuer or jwks_uri).
        self.discovery_overrides: dict[str, Any] = {}
        #: Raw entries appended to the JWKS (malformed keys, foreign keys...).
        self.extra_jwks: list[Any] = []
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The issuer identifier: ``http://127.0.0.1:PORT<path>``."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def jwks_uri(self) -> str:
        return self.url + JWKS

    def start(self) -> TestIssuer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # releases handlers that are "hanging"
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> TestIssuer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- keys and tokens -------------------------------------------------------------

    def key(self, alg: str = "RS256") -> IssuerKey:
        """The newest published key for ``alg`` (the one ``mint`` signs with)."""
        for key in reversed(self.keys):
            if key.alg == alg and key.published:
                return key
        raise LookupError(f"no published {alg} key")

    def key_by_kid(self, kid: str) -> IssuerKey:
        return next(k for k in self.keys if k.kid == kid)

    def rotate(self, alg: str = "RS256", *, drop_old: bool = False) -> IssuerKey:
        """Publish a new ``alg`` key (the new signing key); optionally unpublish the old."""
        new = _new_key(alg)
        with self._lock:
            if drop_old:
                for key in self.keys:
                    if key.alg == alg:
                        key.published = False
            self.keys.append(new)
        return new

    def claims(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        lifetime: int = 300,
        iat: int | None = None,
        include: Iterable[str] = DEFAULT_CLAIMS,
        omit: Iterable[str] = (),
    ) -> dict[str, Any]:
        """A payload: the defaults named in ``include``, then ``claims``, minus ``omit``."""
        issued = int(time.time()) if iat is None else iat
        defaults: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience,
            "sub": "repo:acme/app:ref:refs/heads/main",
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "jti": secrets.token_hex(16),
        }
        wanted = set(include)
        payload = {name: value for name, value in defaults.items() if name in wanted}
        payload.update(claims or {})
        for name in omit:
            payload.pop(name, None)
        return payload

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        alg: str = "RS256",
        kid: str | None = _DEFAULT,
        signer: IssuerKey | None = None,
        headers: Mapping[str, Any] | None = None,
        lifetime: int = 300,
        iat: int | None = None,
        include: Iterable[str] = DEFAULT_CLAIMS,
        omit: Iterable[str] = (),
    ) -> str:
        """A token signed with ``alg`` by ``signer`` (default ``key(alg)``).

        ``kid`` defaults to the signer's (``None`` leaves it out); ``headers`` add to, or
        override, the header (its ``alg`` too: the signature stays ``alg``'s). Claims
        are not validated: any JSON value may be minted.
        """
        key = signer or self.key(alg)
        header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        if kid is _DEFAULT:
            header["kid"] = key.kid
        elif kid is not None:
            header["kid"] = kid
        header.update(headers or {})
        payload = self.claims(claims, lifetime=lifetime, iat=iat, include=include, omit=omit)
        return self.mint_raw(_compact_json(header), _compact_json(payload), alg=alg, signer=key)

    def mint_raw(
        self, header: bytes, payload: bytes, *, alg: str = "RS256", signer: IssuerKey | None = None
    ) -> str:
        """Sign exactly these header and payload bytes (for hand-crafted JSON)."""
        key = signer or self.key(alg)
        signing_input = f"{b64url(header)}.{b64url(payload)}".encode("ascii")
        algorithm = get_default_algorithms()[alg]
        signature = algorithm.sign(signing_input, algorithm.prepare_key(key.private))
        return f"{signing_input.decode('ascii')}.{b64url(signature)}"

    # -- faults ----------------------------------------------------------------------

    def fault(self, path: str, fault: Fault | None) -> None:
        """Make ``path`` (``JWKS`` or ``DISCOVERY``) misbehave; ``None`` heals it."""
        with self._lock:
            if fault is None:
                self.faults.pop(path, None)
            else:
                self.faults[path] = fault

    # -- serving ---------------------------------------------------------------------

    def _document(self, route: str) -> bytes | None:
        if route == DISCOVERY:
            with self._lock:
                self.discovery_fetches += 1
                fields = {"issuer": self.url, "jwks_uri": self.jwks_uri,
                          "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                          **self.discovery_overrides}
            return json.dumps(fields).encode()
        if route == JWKS:
            with self._lock:
                self.jwks_fetches += 1
                keys = [k.jwk() for k in self.keys if k.published] + list(self.extra_jwks)
            return json.dumps({"keys": keys}).encode()
        return None

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        route = handler.path.removeprefix(self.path) if handler.path.startswith(
            self.path + "/") else ""
        document = self._document(route)
        if document is None:
            handler.send_error(404)
            return
        with self._lock:
            fault = self.faults.get(route, Fault())
        if fault.delay and self._closing.wait(fault.delay):
            return
        body = fault.body if fault.body is not None else document
        body += b" " * max(0, fault.pad_to - len(body))
        handler.send_response(fault.status)
        handler.send_header("Content-Type", fault.content_type)
        if fault.send_length:
            handler.send_header("Content-Length", str(len(body)))
        if fault.location is not None:
            handler.send_header("Location", fault.location)
        handler.end_headers()
        handler.wfile.write(body)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


MakeIssuer = Callable[..., TestIssuer]


@pytest.fixture
def make_issuer() -> Iterator[MakeIssuer]:
    """``make_issuer(path="", audience=AUDIENCE)`` -> a started TestIssuer."""
    started: list[TestIssuer] = []

    def make(path: str = "", *, audience: str = AUDIENCE) -> TestIssuer:
        test_issuer = TestIssuer(path, audience=audience).start()
        started.append(test_issuer)
        return test_issuer

    yield make
    for test_issuer in started:
        test_issuer.close()


@pytest.fixture
def issuer(make_issuer: MakeIssuer) -> TestIssuer:
    """One started TestIssuer at ``http://127.0.0.1:PORT``."""
    return make_issuer()
