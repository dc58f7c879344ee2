"""Per-issuer JWKS cache: discovery once, TTL refetch, a shared kid-miss cooldown.

Only URLs from the configuration (``issuer``, ``jwks_uri``) and from the issuer's own
discovery document are ever fetched; nothing in a token names a URL we fetch.

- Discovery: with no configured ``jwks_uri``, ``<issuer>/.well-known/openid-configuration``
  is fetched once; its ``issuer`` must equal ours byte for byte and its ``jwks_uri``
  must be https:// (http:// only on loopback). The ``jwks_uri`` is then remembered.
- TTL: a key set older than ``jwks_ttl`` is fetched again (one thread fetches; the
  others keep using the set they have).
- Unknown kid: at most one refetch per ``refresh_cooldown`` across every worker, via
  ``store.claim_once("oidc-jwks-refresh:NAME", now + cooldown)``; only the claimant
  fetches. A worker that lost the claim keeps its set until its own TTL or the next
  window, so a kid rotated in may take up to one cooldown to reach it. Misses are
  remembered in-process for the cooldown, so a flood of invented kids costs no work.
- Failure: the last good set keeps working; ``status()`` reports the error and whether
  the set in use is past its TTL (stale). After a failure nothing is fetched again for
  one cooldown, so a dead issuer costs one timeout per window, not one per request.

Errors::

    KeysError
    ├── FetchError       a fetch failed or a document was refused (kept in status())
    ├── KeysUnavailable  no key set at all: the issuer has never answered
    └── UnknownKey       no key fits the token's kid and alg, after the allowed refetch
        └── AmbiguousKey  several keys fit and the token names no kid to choose
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Final, NamedTuple, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from authsvc.identity.oidc.settings import OidcIssuerSettings, is_loopback_url

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_KID_LENGTH",
    "SUPPORTED_ALGORITHMS",
    "AmbiguousKey",
    "ClaimStore",
    "FetchError",
    "Fetcher",
    "IssuerKeys",
    "KeysError",
    "KeysStatus",
    "KeysUnavailable",
    "PublicKey",
    "UnknownKey",
    "UrllibFetcher",
    "b64url_decode",
    "check_fetch_url",
    "loads_strict",
]

log = logging.getLogger(__name__)

#: Largest discovery or JWKS document accepted (GitHub's JWKS is ~2 KiB).
DEFAULT_MAX_BYTES: Final = 64 * 1024
#: Seconds for one fetch: per socket operation, and for the whole body.
DEFAULT_TIMEOUT: Final = 5.0
#: Negative-cache entries kept per issuer (a flood beyond it evicts the oldest).
_MAX_MISSES: Final = 4096
#: A kid longer than this is never looked up (nor remembered).
MAX_KID_LENGTH: Final = 256

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

_EC_CURVES: Final[dict[str, tuple[str, ec.EllipticCurve, int]]] = {
    # crv -> (alg, curve, coordinate bytes)
    "P-256": ("ES256", ec.SECP256R1(), 32),
    "P-384": ("ES384", ec.SECP384R1(), 48),
    "P-521": ("ES512", ec.SECP521R1(), 66),
}
_RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
#: Asymmetric algorithms only: never ``none``, never HMAC (a public key is not a secret).
SUPPORTED_ALGORITHMS: Final = frozenset((*_RSA_ALGORITHMS, "ES256", "ES384", "ES512", "EdDSA"))
_MIN_RSA_BITS: Final = 2048
#: JWK members that carry private or symmetric key material: such a key is ignored.
_SECRET_MEMBERS: Final = frozenset(("d", "p", "q", "dp", "dq", "qi", "oth", "k"))
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


class KeysError(Exception):
    """Base of this module's errors."""


class FetchError(KeysError):
    """A fetch failed, or the document it returned was refused."""


class KeysUnavailable(KeysError):
    """No key set has ever been fetched for this issuer (the last error says why)."""


class UnknownKey(KeysError):
    """No published key fits the token's kid and algorithm."""


class AmbiguousKey(UnknownKey):
    """Several keys fit and the token names no kid (or a kid published twice)."""


class KeysStatus(NamedTuple):
    """For /readyz: when the set in use was fetched, the last error, and staleness."""

    fetched_at: int | None
    last_error: str | None
    #: The last fetch failed and the set in use (if any) is past its TTL.
    stale: bool


class Fetcher(Protocol):
    def get(self, url: str, *, timeout: float, max_bytes: int) -> bytes:
        """The body of a 200 answer to GET ``url``; ``FetchError`` otherwise."""


class ClaimStore(Protocol):
    """The one thing IssuerKeys needs of the shared store (``authsvc.store.Store``)."""

    def claim_once(self, key: str, expires_at: int) -> bool: ...


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); only the canonical spelling."""
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        raise ValueError("not base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url without padding") from exc
    # Refuse non-zero trailing bits: one token must have one spelling (caches hash it).
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise ValueError("not the canonical base64url spelling")
    return raw


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate member {name[:40]!r}")
        result[name] = value
    return result


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def loads_strict(raw: bytes) -> object:
    """UTF-8 JSON with no duplicate member names (at any depth) and no NaN/Infinity.

    Raises ``ValueError`` (``UnicodeDecodeError`` and ``JSONDecodeError`` are ones).
    """
    return json.loads(
        raw.decode("utf-8"),
        object_pairs_hook=_refuse_duplicates,
        parse_constant=_refuse_constant,
    )


def check_fetch_url(url: str) -> None:
    """Refuse (``FetchError``) anything but https://, or http:// on a loopback host."""
    parts = urlsplit(url)
    if not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback_url(url))):
        raise FetchError(f"refusing {url!r}: https:// is required (http:// only on loopback)")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise FetchError(f"refusing {url!r}: no host, or user info in the URL")


# -- fetching ----------------------------------------------------------------------


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is answered as an error (HTTPError) instead of being followed."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


class UrllibFetcher:
    """GET over https:// (http:// on loopback): no redirects, a timeout and a size cap."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        # Loopback never goes through a proxy from the environment.
        self._loopback = urllib.request.build_opener(
            _RefuseRedirects, urllib.request.ProxyHandler({})
        )

    def get(self, url: str, *, timeout: float, max_bytes: int) -> bytes:
        check_fetch_url(url)
        # The scheme was checked just above: https, or http on loopback.
        request = urllib.request.Request(  # noqa: S310
            url, headers={"Accept": "application/json", "User-Agent": "authsvc"}
        )
        opener = self._loopback if is_loopback_url(url) else self._opener
        deadline = time.monotonic() + timeout
        try:
            with opener.open(request, timeout=timeout) as response:
                return _read_body(response, url, deadline, max_bytes)
        except urllib.error.HTTPError as exc:
            exc.close()
            if 300 <= exc.code < 400:
                where = exc.headers.get("Location", "?") if exc.headers else "?"
                raise FetchError(
                    f"{url}: redirect (HTTP {exc.code} to {where!r}) refused"
                ) from exc
            raise FetchError(f"{url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise FetchError(f"{url}: {reason or type(exc).__name__}") from exc


def _read_body(
    response: http.client.HTTPResponse, url: str, deadline: float, max_bytes: int
) -> bytes:
    if response.status != 200:
        raise FetchError(f"{url}: HTTP {response.status} (only 200 is accepted)")
    content_type = response.headers.get("Content-Type")
    if content_type is not None:
        media = content_type.partition(";")[0].strip().lower()
        if not media.endswith("json"):
            raise FetchError(f"{url}: Content-Type {media!r} is not JSON")
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"{url}: {length} bytes is over the {max_bytes}-byte cap")
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise FetchError(f"{url}: the body took longer than the timeout")
        chunk = response.read1(max_bytes + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise FetchError(f"{url}: the body is over the {max_bytes}-byte cap")


# -- key sets ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Jwk:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: PublicKey

    def fits(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        if self.kty == "RSA":
            return alg in _RSA_ALGORITHMS
        if self.kty == "EC":
            return self.crv is not None and _EC_CURVES[self.crv][0] == alg
        return self.kty == "OKP" and alg == "EdDSA"


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: tuple[_Jwk, ...]
    fetched_at: int

    def select(self, kid: str | None, alg: str) -> PublicKey | None:
        fitting = [k for k in self.keys if k.fits(alg) and (kid is None or k.kid == kid)]
        if len(fitting) > 1:
            named = f"kid {kid!r}" if kid is not None else "no kid"
            raise AmbiguousKey(f"the token names {named} and {len(fitting)} {alg} keys fit")
        return fitting[0].key if fitting else None


def _parse_jwk(entry: object) -> _Jwk | None:
    """One JWKS entry, or None when it is malformed or not a public signing key."""
    if not isinstance(entry, dict) or _SECRET_MEMBERS & entry.keys():
        return None
    kty, kid, alg, use = (entry.get(n) for n in ("kty", "kid", "alg", "use"))
    ops, crv = entry.get("key_ops"), entry.get("crv")
    if not (kid is None or isinstance(kid, str)) or not (alg is None or isinstance(alg, str)):
        return None
    if use is not None and use != "sig":
        return None
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    if alg is not None and alg not in SUPPORTED_ALGORITHMS:
        return None
    try:
        key = _public_key(entry, kty, crv)
    except (ValueError, TypeError):
        return None
    if key is None:
        return None
    return _Jwk(kid, str(kty), crv if isinstance(crv, str) else None, alg, key)


def _member(entry: dict[str, object], name: str) -> bytes:
    value = entry.get(name)
    if not isinstance(value, str):
        raise ValueError(f"member {name!r} is missing")
    return b64url_decode(value)


def _public_key(entry: dict[str, object], kty: object, crv: object) -> PublicKey | None:
    if kty == "RSA":
        n = int.from_bytes(_member(entry, "n"), "big")
        e = int.from_bytes(_member(entry, "e"), "big")
        if n.bit_length() < _MIN_RSA_BITS:
            return None
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "EC" and isinstance(crv, str) and crv in _EC_CURVES:
        _, curve, size = _EC_CURVES[crv]
        x, y = _member(entry, "x"), _member(entry, "y")
        if len(x) != size or len(y) != size:
            return None
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        )
        return numbers.public_key()  # raises ValueError for a point off the curve
    if kty == "OKP" and crv == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(_member(entry, "x"))
    if kty == "OKP" and crv == "Ed448":
        return ed448.Ed448PublicKey.from_public_bytes(_member(entry, "x"))
    return None


def _parse_jwks(body: bytes, url: str, now: int) -> _KeySet:
    try:
        document = loads_strict(body)
    except ValueError as exc:
        raise FetchError(f"{url}: not a JSON document ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchError(f"{url}: not a JWKS (a JSON object with a 'keys' list)")
    entries: list[object] = document["keys"]
    keys = tuple(k for k in map(_parse_jwk, entries) if k is not None)
    if not keys:
        raise FetchError(f"{url}: none of its {len(entries)} keys is a usable public key")
    if len(keys) < len(entries):
        log.info("%s: ignored %d unusable keys", url, len(entries) - len(keys))
    return _KeySet(keys, now)


# -- the cache -----------------------------------------------------------------------


class IssuerKeys:
    """The verification keys of one configured issuer (thread-safe; one per process)."""

    def __init__(
        self,
        name: str,
        issuer: str,
        jwks_uri: str | None,
        algorithms: Iterable[str],
        jwks_ttl: int,
        refresh_cooldown: int,
        store: ClaimStore,
        fetcher: Fetcher,
        clock: Callable[[], float] = time.time,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        if not name:
            raise ValueError("name is empty")
        if not self.algorithms or not self.algorithms <= SUPPORTED_ALGORITHMS:
            raise ValueError(f"{name}: algorithms must be a non-empty subset of "
                             f"{sorted(SUPPORTED_ALGORITHMS)}")
        if jwks_ttl <= 0 or refresh_cooldown <= 0 or timeout <= 0 or max_bytes <= 0:
            raise ValueError(f"{name}: jwks_ttl, refresh_cooldown, timeout, max_bytes must be > 0")
        for url in (issuer, jwks_uri):
            if url is not None:
                try:
                    check_fetch_url(url)
                except FetchError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        self.name, self.issuer = name, issuer
        self._ttl, self._cooldown = jwks_ttl, refresh_cooldown
        self._store, self._fetcher, self._clock = store, fetcher, clock
        self._timeout, self._max_bytes = timeout, max_bytes
        self._jwks_uri = jwks_uri
        # Single flight: one thread fetches at a time. Readers never take it.
        self._fetch_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the fields below
        self._keys: _KeySet | None = None
        self._last_error: str | None = None
        self._retry_at = 0  # after a failure: no fetch before this
        self._refresh_gate = 0  # no kid-miss refetch before this
        self._misses: dict[tuple[str | None, str], int] = {}

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: OidcIssuerSettings,
        *,
        store: ClaimStore,
        fetcher: Fetcher,
        clock: Callable[[], float] = time.time,
    ) -> IssuerKeys:
        """From resolved settings (the preset has filled ``issuer`` in)."""
        if settings.issuer is None:
            raise ValueError(f"{name}: issuer is not resolved")
        return cls(
            name, settings.issuer, settings.jwks_uri, settings.algorithms, settings.jwks_ttl,
            settings.jwks_refresh_cooldown, store, fetcher, clock,
        )

    def key_for(self, kid: str | None, alg: str, now: int) -> PublicKey:
        """The published key for ``kid`` (or the only one fitting ``alg`` if kid is None)."""
        if alg not in self.algorithms:
            raise UnknownKey(f"issuer {self.name!r} does not sign with {alg}")
        if kid is not None and len(kid) > MAX_KID_LENGTH:
            raise UnknownKey(f"kid is longer than {MAX_KID_LENGTH} characters")
        keys, fetched = self._current(now)
        if keys is None:
            raise KeysUnavailable(
                f"issuer {self.name!r} has no keys yet: {self._last_error or 'not fetched'}"
            )
        if (key := keys.select(kid, alg)) is not None:
            return key
        with self._lock:
            missed_until = self._misses.get((kid, alg), 0)
        if not fetched and now >= missed_until:
            refreshed = self._refetch_for_miss(now, keys)
            if refreshed is not None and (key := refreshed.select(kid, alg)) is not None:
                return key
        self._remember_miss(kid, alg, now)
        named = f"kid {kid!r}" if kid is not None else "no kid"
        raise UnknownKey(f"issuer {self.name!r} publishes no {alg} key for {named}")

    def status(self, now: float | None = None) -> KeysStatus:
        when = self._clock() if now is None else now
        with self._lock:
            keys, error = self._keys, self._last_error
        fetched_at = keys.fetched_at if keys is not None else None
        past_ttl = fetched_at is None or when - fetched_at >= self._ttl
        return KeysStatus(fetched_at, error, error is not None and past_ttl)

    def refresh(self, now: int | None = None) -> None:
        """Fetch now (start-up warm-up, admin); raises ``FetchError`` if it failed."""
        when = int(self._clock()) if now is None else now
        with self._fetch_lock:
            if not self._fetch(when):
                raise FetchError(self._last_error or "fetch failed")

    # -- internals ---------------------------------------------------------------------

    def _remember_miss(self, kid: str | None, alg: str, now: int) -> None:
        with self._lock:
            if len(self._misses) >= _MAX_MISSES:
                self._misses = {m: t for m, t in self._misses.items() if t > now}
                while len(self._misses) >= _MAX_MISSES:
                    del self._misses[next(iter(self._misses))]
            self._misses.setdefault((kid, alg), now + self._cooldown)

    def _current(self, now: int) -> tuple[_KeySet | None, bool]:
        """The set to use, fetching it first if there is none or it is past its TTL.

        The flag says whether this call fetched (then a kid miss does not refetch).
        """
        with self._lock:
            keys, retry_at = self._keys, self._retry_at
        if keys is not None and now - keys.fetched_at < self._ttl:
            return keys, False
        if now < retry_at:
            return keys, False
        # With a set in hand, do not wait for another thread's fetch: use what we have.
        if not self._fetch_lock.acquire(blocking=keys is None):
            return keys, False
        try:
            with self._lock:
                current, retry_at = self._keys, self._retry_at
            if current is not keys or now < retry_at:
                return current, False  # another thread fetched (or failed) meanwhile
            return self._keys if self._fetch(now) else keys, True
        finally:
            self._fetch_lock.release()

    def _refetch_for_miss(self, now: int, seen: _KeySet) -> _KeySet | None:
        """The new set if this worker may refetch for an unknown kid now, else None."""
        with self._lock:
            if now < max(self._refresh_gate, self._retry_at):
                return None
        with self._fetch_lock:
            with self._lock:
                if self._keys is not seen:
                    return self._keys  # fetched while we waited: look again
                if now < max(self._refresh_gate, self._retry_at):
                    return None
            won = self._store.claim_once(f"oidc-jwks-refresh:{self.name}", now + self._cooldown)
            with self._lock:
                self._refresh_gate = now + self._cooldown
            if not won:
                return None  # another worker refetches in this window
            return self._keys if self._fetch(now) else None

    def _fetch(self, now: int) -> bool:
        """Fetch (discovering first if need be); called with the fetch lock held."""
        try:
            url = self._jwks_uri or self._discover()
            keys = _parse_jwks(
                self._fetcher.get(url, timeout=self._timeout, max_bytes=self._max_bytes),
                url,
                now,
            )
        except FetchError as exc:
            log.warning("oidc issuer %r: keys not fetched: %s", self.name, exc)
            with self._lock:
                self._last_error = str(exc)
                self._retry_at = now + self._cooldown
            return False
        with self._lock:
            self._keys = keys
            self._last_error = None
            self._retry_at = 0
            self._misses.clear()
        return True

    def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        body = self._fetcher.get(url, timeout=self._timeout, max_bytes=self._max_bytes)
        try:
            document = loads_strict(body)
        except ValueError as exc:
            raise FetchError(f"{url}: not a JSON document ({exc})") from exc
        if not isinstance(document, dict):
            raise FetchError(f"{url}: not a JSON object")
        named = document.get("issuer")
        if named != self.issuer:
            shown = named[:200] if isinstance(named, str) else named
            raise FetchError(
                f"{url}: the document names issuer {shown!r}, not the configured "
                f"{self.issuer!r} (they must be identical)"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError(f"{url}: no jwks_uri string")
        check_fetch_url(jwks_uri)
        self._jwks_uri = jwks_uri
        return jwks_uri
