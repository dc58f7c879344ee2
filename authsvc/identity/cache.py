"""A short cache of verified proofs, keyed by a keyed hash of the credential.

bcrypt is slow by design and registry clients re-send the same login on nearly every
operation, so a successful check is remembered for ``ttl`` seconds. The key is
HMAC-SHA256 under a per-process random key, so neither the secret nor an offline-
guessable hash of it is ever held. The value is a *binding* the caller re-checks on
every hit (for a static user, the password hash it was verified against), so a changed
password or a removed user takes effect at once. Failures are never cached.

An entry in use is renewed (its ``ttl`` counts from its last use, once past half
of it), which is safe because every hit is re-checked against the binding; and
``lock_for`` lets the caller verify one credential once when many requests carry it
at the same moment, instead of every thread running bcrypt when an entry lapses.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from time import monotonic

__all__ = ["VerifiedCache"]

_STRIPES = 64


class VerifiedCache:
    def __init__(
        self, *, ttl: float, max_entries: int, clock: Callable[[], float] = monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        #: key -> (expires, binding, deadline): renewal never goes past the deadline.
        self._entries: OrderedDict[bytes, tuple[float, str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._verifying = tuple(threading.Lock() for _ in range(_STRIPES))

    def key(self, *parts: str) -> bytes:
        """The cache key for a credential: HMAC over its parts, NUL-separated."""
        message = "\0".join(parts).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def get(self, key: bytes) -> str | None:
        if self.ttl <= 0:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, binding, deadline = entry
            if expires <= now:
                del self._entries[key]
                return None
            if expires - now < self.ttl / 2:
                self._entries[key] = (min(now + self.ttl, deadline), binding, deadline)
            return binding

    def lock_for(self, key: bytes) -> threading.Lock:
        """A lock to hold while verifying ``key``'s credential (striped by key)."""
        return self._verifying[key[0] % _STRIPES]

    def put(self, key: bytes, binding: str, *, deadline_in: float | None = None) -> None:
        """Remember a verified credential; ``deadline_in`` caps its life (a token's exp)."""
        if self.ttl <= 0:
            return
        now = self._clock()
        deadline = now + deadline_in if deadline_in is not None else float("inf")
        with self._lock:
            self._entries[key] = (min(now + self.ttl, deadline), binding, deadline)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard(self, key: bytes) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def reconfigure(self, *, ttl: float, max_entries: int) -> None:
        with self._lock:
            self.ttl = ttl
            self.max_entries = max_entries
            if ttl <= 0:
                self._entries.clear()
            while len(self._entries) > max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
