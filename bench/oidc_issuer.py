"""Two OIDC issuers on 127.0.0.1 for the token-as-password cases (e, f, g).

One loopback HTTP server (a daemon thread of the benchmark's own process, up for the
whole run) serves two issuers, each with one signing key:

* ``http://127.0.0.1:PORT/rs256``: an RSA-2048 key, RS256;
* ``http://127.0.0.1:PORT/es256``: an EC P-256 key, ES256;

each at ``<issuer>/.well-known/openid-configuration`` (discovery: ``issuer``,
``jwks_uri``) and ``<issuer>/jwks``. authsvc accepts http:// issuers on loopback only,
which is what this is. The tokens are shaped like GitHub Actions ID tokens (the
``github-actions`` preset), as in ``tests/functional/test_oidc_flow.py``; a token is
sent as the Basic-auth password (``ci:<JWT>``), as ``docker login`` / skopeo do.

``TokenPool`` writes files of freshly minted, never-used tokens (one ``Authorization``
header value a line) that ``bench/token.lua`` cycles through: every request a new
``jti``.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import get_default_algorithms

#: The audience every token carries and authsvc is configured with.
AUDIENCE: Final = "https://registry.bench"
OWNER_ID: Final = "65"
REPO_ID: Final = "74"
#: Basic-auth user name sent with a token (authsvc ignores it for a JWT password).
CI_USER: Final = "ci"
#: Identity-provider names in authsvc's configuration, per algorithm.
PROVIDERS: Final = {"RS256": "ci-rs256", "ES256": "ci-es256"}
#: Scope the ``bench-ci`` rule grants (``ci/${claims.repository|lower}/**``).
OIDC_SCOPE: Final = "repository:ci/acme/app/cache:pull,push"
#: A reused token lives this long (at least); authsvc accepts tokens up to this old.
MIN_REUSE_LIFETIME: Final = 3600
#: A pooled (single-use) token lives this long past the run it is minted for: its jti
#: claim in a shared Redis lapses soon after (exp + leeway).
FRESH_MARGIN: Final = 120


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def github_claims() -> dict[str, str]:
    """The custom claims of a GitHub Actions ID token (values are strings)."""
    return {
        "sub": "repo:Acme/App:ref:refs/heads/main",
        "repository": "Acme/App",
        "repository_id": REPO_ID,
        "repository_owner": "Acme",
        "repository_owner_id": OWNER_ID,
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "event_name": "push",
        "workflow": "release",
        "runner_environment": "github-hosted",
    }


@dataclass(frozen=True)
class _Key:
    alg: str
    kid: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    prepared: Any  # pyjwt's prepared signing key

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        data: dict[str, Any] = get_default_algorithms()[self.alg].to_jwk(public, as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}


def _new_key(alg: str) -> _Key:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"no {alg} issuer")
    algorithm = get_default_algorithms()[alg]
    return _Key(alg, f"{alg.lower()}-{secrets.token_hex(4)}", private,
                algorithm.prepare_key(private))


class BenchIssuers:
    """The RS256 and ES256 issuers (a context manager: the server runs inside it)."""

    def __init__(self) -> None:
        self.keys = {alg: _new_key(alg) for alg in PROVIDERS}
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, alg: str) -> str:
        return f"http://127.0.0.1:{self.port}/{alg.lower()}"

    def __enter__(self) -> BenchIssuers:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, daemon=True,
                                        name="bench-oidc-issuer")
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    # -- authsvc's configuration -------------------------------------------------------

    def identities(self, max_age: int) -> dict[str, Any]:
        """``identities.oidc``: one github-actions issuer per algorithm; tokens up to
        ``max_age`` seconds old and with a lifetime up to that are accepted."""
        return {
            PROVIDERS[alg]: {
                "preset": "github-actions",
                "issuer": self.url(alg),
                "audience": AUDIENCE,
                "algorithms": [alg],
                "max_token_age": max_age,
                "max_lifetime": max_age,
            }
            for alg in PROVIDERS
        }

    @staticmethod
    def rule() -> dict[str, Any]:
        """The rule the benchmark's CI identities match (pinned by owner id)."""
        return {
            "id": "bench-ci",
            "match": {"provider": list(PROVIDERS.values()),
                      "claims": {"repository_owner_id": OWNER_ID,
                                 "runner_environment": "github-hosted"}},
            "allow": [{"repository": "ci/${claims.repository|lower}/**",
                       "actions": ["pull", "push"]}],
        }

    # -- tokens ------------------------------------------------------------------------

    def mint(self, alg: str, *, lifetime: int, now: int | None = None) -> str:
        """A new token (its own jti) from the ``alg`` issuer, valid ``lifetime`` s."""
        key = self.keys[alg]
        issued = int(time.time()) if now is None else now
        header = {"alg": alg, "typ": "JWT", "kid": key.kid}
        payload = {
            "iss": self.url(alg), "aud": AUDIENCE, **github_claims(),
            "iat": issued, "nbf": issued, "exp": issued + lifetime,
            "jti": secrets.token_hex(16),
        }
        signing_input = f"{_b64url(_compact(header))}.{_b64url(_compact(payload))}".encode()
        signature = get_default_algorithms()[alg].sign(signing_input, key.prepared)
        return f"{signing_input.decode('ascii')}.{_b64url(signature)}"

    @staticmethod
    def basic(token: str) -> str:
        """The Authorization header that sends ``token`` as the password."""
        return "Basic " + base64.b64encode(f"{CI_USER}:{token}".encode()).decode("ascii")

    # -- serving -----------------------------------------------------------------------

    def _document(self, path: str) -> bytes | None:
        for alg, key in self.keys.items():
            base = f"/{alg.lower()}"
            if path == base + "/.well-known/openid-configuration":
                with self._lock:
                    self.discovery_fetches += 1
                return _compact({"issuer": self.url(alg), "jwks_uri": self.url(alg) + "/jwks",
                                 "id_token_signing_alg_values_supported": [alg]})
            if path == base + "/jwks":
                with self._lock:
                    self.jwks_fetches += 1
                return _compact({"keys": [key.jwk()]})
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = owner._document(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


class TokenPool:
    """Files of never-used tokens for case g, one per wrk run (warm-up and measured).

    A file holds ``expected_rate * seconds * SLACK + EXTRA`` tokens, where
    ``expected_rate`` is the highest rate seen so far for this store (the floor's, then
    the case's own); ``bench/token.lua`` counts the requests it had to send once the
    file ran out (re-sent tokens are reuses, not fresh ones): those are reported as
    errors, never silently measured.
    """

    SLACK: Final = 1.6
    EXTRA: Final = 500

    def __init__(self, issuers: BenchIssuers, alg: str, directory: Path) -> None:
        self.issuers = issuers
        self.alg = alg
        self.directory = directory
        self.expected_rate = 1000.0
        self.minted = 0
        self._files: Iterator[int] = iter(range(1, 1 << 30))

    def observe(self, rate: float) -> None:
        self.expected_rate = max(self.expected_rate, rate)

    def size_for(self, seconds: int) -> int:
        return math.ceil(self.expected_rate * seconds * self.SLACK) + self.EXTRA

    def write(self, seconds: int) -> tuple[Path, int]:
        """A new file of tokens for a run of ``seconds``: its path and token count."""
        count = self.size_for(seconds)
        now = int(time.time())
        lifetime = seconds + FRESH_MARGIN
        path = self.directory / f"pool-{self.alg.lower()}-{next(self._files)}.txt"
        with path.open("w", encoding="ascii") as out:
            for _ in range(count):
                out.write(self.issuers.basic(
                    self.issuers.mint(self.alg, lifetime=lifetime, now=now)) + "\n")
        self.minted += count
        return path, count
