"""Static users: bcrypt hashes from the configuration and from an htpasswd file."""

from __future__ import annotations

import functools
import hmac
from collections import Counter
from dataclasses import dataclass

import bcrypt

from authsvc.config import Settings
from authsvc.errors import InvalidCredentials
from authsvc.identity import Identity, Kind
from authsvc.identity.cache import VerifiedCache

__all__ = ["PROVIDER", "StaticUsers", "hash_password"]

PROVIDER = "static"
#: bcrypt ignores bytes past 72; longer passwords are refused rather than truncated.
MAX_PASSWORD_BYTES = 72
DEFAULT_COST = 12


@functools.cache
def _dummy_hash(cost: int) -> bytes:
    """Verified against when the user does not exist, at the cost most users have, so
    that an unknown name takes as long as a wrong password and reveals no accounts."""
    return bcrypt.hashpw(b"not a password", bcrypt.gensalt(cost))


def _cost(password_hash: str) -> int:
    return int(password_hash.split("$")[2])


def hash_password(password: str, *, cost: int = DEFAULT_COST) -> str:
    data = password.encode("utf-8")
    if len(data) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password is longer than {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)")
    return bcrypt.hashpw(data, bcrypt.gensalt(cost)).decode("ascii")


@dataclass(frozen=True)
class _User:
    name: str
    password_hash: str
    groups: frozenset[str]
    kind: Kind


class StaticUsers:
    """Authenticates users named in the configuration and the htpasswd file."""

    def __init__(self, settings: Settings, cache: VerifiedCache) -> None:
        self._cache = cache
        users = {
            name: _User(name, digest, frozenset(), "human")
            for name, digest in settings.htpasswd_users.items()
        }
        for name, user in settings.identities.static.users.items():
            users[name] = _User(name, user.password_hash, frozenset(user.groups), user.kind)
        self._users = users
        costs = Counter(_cost(u.password_hash) for u in users.values())
        # the most common cost; on a tie the higher one
        self._dummy_cost = max(costs, key=lambda c: (costs[c], c)) if costs else DEFAULT_COST
        _dummy_hash(self._dummy_cost)  # pay for it at load, not in a request

    def _identity(self, user: _User) -> Identity:
        return Identity(
            subject=user.name,
            kind=user.kind,
            provider=PROVIDER,
            account=user.name,
            groups=user.groups,
        )

    def authenticate(self, username: str, password: str) -> Identity:
        user = self._users.get(username)
        data = password.encode("utf-8", "surrogatepass")
        if user is None:
            bcrypt.checkpw(data[:MAX_PASSWORD_BYTES], _dummy_hash(self._dummy_cost))
            raise InvalidCredentials("invalid username or password", reason="UNKNOWN_USER")
        key = self._cache.key(PROVIDER, username, password)
        if self._cached(key, user):
            return self._identity(user)
        with self._cache.lock_for(key):
            if self._cached(key, user):  # verified by another request while we waited
                return self._identity(user)
            if len(data) > MAX_PASSWORD_BYTES or not bcrypt.checkpw(
                data, user.password_hash.encode("ascii")
            ):
                raise InvalidCredentials(
                    "invalid username or password", reason="INVALID_CREDENTIALS"
                )
            self._cache.put(key, user.password_hash)
        return self._identity(user)

    def _cached(self, key: bytes, user: _User) -> bool:
        binding = self._cache.get(key)
        return binding is not None and hmac.compare_digest(binding, user.password_hash)

    def lookup(self, identity: Identity) -> Identity | None:
        """The current identity of a user a session was issued to, or None if removed."""
        user = self._users.get(identity.subject)
        return None if user is None else self._identity(user)
