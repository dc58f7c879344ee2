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

Fetching a document (URL checks, no redirects, size and time caps) is fetch.py's job;
parsing a JWKS and choosing the key for a kid and alg is jwk.py's. The names these two
define that callers of the cache use are importable from here as well.

Errors (where each is defined)::

    KeysError              fetch.py
    ├── FetchError         fetch.py  a fetch failed or a document was refused (in status())
    ├── KeysUnavailable    here      no key set at all: the issuer has never answered
    └── UnknownKey         jwk.py    no key fits the token's kid and alg, after the refetch
        └── AmbiguousKey   jwk.py    several keys fit and the token names no kid to choose
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

from authsvc.identity.oidc.fetch import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    Fetcher,
    FetchError,
    KeysError,
    UrllibFetcher,
    b64url_decode,
    check_fetch_url,
    loads_strict,
)
from authsvc.identity.oidc.jwk import (
    SUPPORTED_ALGORITHMS,
    AmbiguousKey,
    KeySet,
    PublicKey,
    UnknownKey,
    parse_jwks,
)
from authsvc.identity.oidc.settings import OidcIssuerSettings

# MAX_KID_LENGTH, ClaimStore, IssuerKeys, KeysStatus and KeysUnavailable are defined
# here; the others come from fetch.py and jwk.py and stay importable from here.
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

#: Negative-cache entries kept per issuer (a flood beyond it evicts the oldest).
_MAX_MISSES: Final = 4096
#: A kid longer than this is never looked up (nor remembered).
MAX_KID_LENGTH: Final = 256


class KeysUnavailable(KeysError):
    """No key set has ever been fetched for this issuer (the last error says why)."""


class KeysStatus(NamedTuple):
    """For /readyz: when the set in use was fetched, the last error, and staleness."""

    fetched_at: int | None
    last_error: str | None
    #: The last fetch failed and the set in use (if any) is past its TTL.
    stale: bool


class ClaimStore(Protocol):
    """The one thing IssuerKeys needs of the shared store (``authsvc.store.Store``)."""

    def claim_once(self, key: str, expires_at: int) -> bool: ...


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
        self._keys: KeySet | None = None
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

    def _current(self, now: int) -> tuple[KeySet | None, bool]:
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

    def _refetch_for_miss(self, now: int, seen: KeySet) -> KeySet | None:
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
            keys = parse_jwks(
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
