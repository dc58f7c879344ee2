"""The brute-force backoff: failed password logins per (account, source) make it wait.

Only a static user's password is guessable: OIDC tokens and signed AWS requests sent as
the password are single-use proofs checked by signature, so they never count or wait.
The token service asks, in this order:

1. ``check(username, ip, now)`` before the password is checked: raises
   ``TooManyAttempts`` (429, ``Retry-After``) while a wait is pending, without checking
   the password, and without counting the refused attempt. It returns the failures
   counted so far, so that a success knows whether there is anything to clear.
2. ``failed(username, ip, now)`` after a wrong password or an unknown user name
   (``COUNTED_REASONS``): an unknown name counts like a wrong password, or the answers
   would tell which accounts exist.
3. ``clear(username, ip)`` after a success that ``check`` saw failures before.

The counter belongs to one account from one source, never to the account alone, so an
attacker cannot lock its owner out: the owner from any other address is not slowed.
The source is the client's address, or its /64 for IPv6 (one host holds a whole /64).
The store key is a hash of both, so no user name reaches a Redis key.

If the store cannot be reached, the backoff fails open: the password is checked as if
no failure were counted, and a warning is logged (at most once a minute). Failing
closed would turn a store outage into a lockout of every password user, the very
thing the per-source design avoids; what an attacker gains meanwhile is bounded by
bcrypt's cost per guess, and the outage is visible in the log and in ``/readyz``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging

from authsvc.anomaly.settings import BackoffSettings
from authsvc.errors import StoreUnavailable, TooManyAttempts
from authsvc.store import Store

__all__ = ["COUNTED_REASONS", "Backoff", "backoff_key", "source_of"]

log = logging.getLogger(__name__)

#: Refusals that count as failures: a wrong password, and a user name that is unknown.
COUNTED_REASONS = frozenset({"INVALID_CREDENTIALS", "UNKNOWN_USER"})
#: Seconds between two warnings that the store is unreachable (one per outage minute).
WARN_EVERY = 60
#: The prefix an IPv6 source is counted under.
IPV6_SOURCE_PREFIX = 64


def source_of(ip: str) -> str:
    """The source a failure is counted for: the IPv4 address (an IPv4-mapped IPv6 one
    as IPv4), the /64 of an IPv6 address, or the text as given if it is no address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False))
    return str(address)


def backoff_key(username: str, ip: str) -> str:
    """The store key of (account, source): a SHA-256 over both, each length-prefixed so
    that no two pairs share an encoding."""
    digest = hashlib.sha256()
    for part in (username, source_of(ip)):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(4, "big") + data)
    return digest.hexdigest()


class Backoff:
    """Counts failed password logins in ``store`` under ``settings``."""

    #: Keys remembered as clean at most (the memory is dropped whole when full).
    CLEAN_ENTRIES = 10_000

    def __init__(self, store: Store, settings: BackoffSettings) -> None:
        self._store = store
        self.settings = settings
        self._warned_at: int | None = None
        #: key -> until when (``now`` seconds) it is known to have no failures: for
        #: ``settings.recheck`` seconds the store is not asked again (the success path
        #: of a busy client then costs no round trip). A failure seen here drops it.
        self._clean: dict[str, int] = {}

    def check(self, username: str, ip: str, now: int) -> int:
        """Raise ``TooManyAttempts`` while a wait is pending; else the failures counted
        (0 when disabled or when the store cannot be reached)."""
        if not self.settings.enabled:
            return 0
        key = backoff_key(username, ip)
        if self._clean.get(key, -1) > now:
            return 0
        try:
            state = self._store.backoff_state(key, now)
        except StoreUnavailable as exc:
            self._warn("checked", exc, now)
            return 0
        if state.wait_until > now:
            raise TooManyAttempts(state.wait_until - now)
        if state.failures == 0 and self.settings.recheck > 0:
            if len(self._clean) >= self.CLEAN_ENTRIES:
                self._clean = {}
            self._clean[key] = now + self.settings.recheck
        return state.failures

    def failed(self, username: str, ip: str, now: int) -> None:
        """Count one failed login of ``username`` from ``ip``."""
        if not self.settings.enabled:
            return
        s = self.settings
        key = backoff_key(username, ip)
        self._clean.pop(key, None)
        try:
            self._store.note_failure(
                key,
                now,
                window=s.window,
                threshold=s.threshold,
                base_delay=s.base_delay,
                max_delay=s.max_delay,
            )
        except StoreUnavailable as exc:
            self._warn("counted", exc, now)

    def clear(self, username: str, ip: str, now: int) -> None:
        """Forget the failures of ``username`` from ``ip`` (after a success)."""
        try:
            self._store.clear_failures(backoff_key(username, ip))
        except StoreUnavailable as exc:
            self._warn("cleared", exc, now)

    def _warn(self, what: str, exc: StoreUnavailable, now: int) -> None:
        if self._warned_at is not None and 0 <= now - self._warned_at < WARN_EVERY:
            return
        self._warned_at = now
        log.warning(
            "brute-force backoff not %s, failing open (passwords are checked without it): %s",
            what,
            exc.message,
        )
