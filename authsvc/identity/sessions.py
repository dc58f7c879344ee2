"""Session credentials: authsvc's own refresh tokens.

A proof (a password, later an OIDC token or a signed AWS request) is exchanged for a
random opaque token. Only its SHA-256 is stored, with the identity it was issued to
(kind, provider, subject, account, verified claims), the client id, creation time,
expiry and last use. It carries no permissions: every use is decided against the
current rules, and the identity is re-checked with its provider (a removed user's
sessions stop working at once). Docker never rotates a refresh token, so one stays
valid for repeated use until it expires or is revoked.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from authsvc.errors import InvalidCredentials
from authsvc.identity import Identity, Kind
from authsvc.store import SessionRecord, Store

__all__ = ["TOKEN_PREFIX", "SessionInfo", "Sessions", "session_id"]

#: A recognisable prefix lets secret scanners find leaked tokens.
TOKEN_PREFIX = "asr_"
_TOKEN = re.compile(r"asr_[A-Za-z0-9_-]{43}")


class IdentityLookup(Protocol):
    def lookup(self, identity: Identity) -> Identity | None:
        """The identity as its provider sees it now, or None if it no longer exists."""


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _index(provider: str, subject: str) -> str:
    return f"{provider}:{subject}"


@dataclass(frozen=True)
class SessionInfo:
    id: str
    provider: str
    subject: str
    kind: str
    client_id: str
    created: int
    expires_at: int
    last_used: int | None


def _info(record: SessionRecord) -> SessionInfo:
    last = record.get("last_used")
    return SessionInfo(
        id=record["id"],
        provider=record["provider"],
        subject=record["subject"],
        kind=record["kind"],
        client_id=record.get("client_id", ""),
        created=int(record["created"]),
        expires_at=int(record["expires_at"]),
        last_used=int(last) if last else None,
    )


class Sessions:
    def __init__(self, store: Store, providers: Mapping[str, IdentityLookup]) -> None:
        self._store = store
        self._providers = providers

    def issue(self, identity: Identity, *, client_id: str, ttl: int, now: int) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = {
            "kind": identity.kind,
            "provider": identity.provider,
            "subject": identity.subject,
            "account": identity.account or "",
            "groups": json.dumps(sorted(identity.groups)),
            "claims": json.dumps(dict(identity.claims), sort_keys=True, separators=(",", ":")),
            "client_id": client_id,
            "created": str(now),
            "expires_at": str(now + ttl),
        }
        self._store.put_session(
            session_id(token),
            record,
            index=_index(identity.provider, identity.subject),
            expires_at=now + ttl,
        )
        return token

    def authenticate(self, token: str, *, now: int) -> Identity:
        if not _TOKEN.fullmatch(token):
            raise InvalidCredentials(
                "not a refresh token issued by this service", reason="MALFORMED_TOKEN"
            )
        record = self._store.use_session(session_id(token), now)
        if record is None:
            raise InvalidCredentials(
                "refresh token is unknown, expired or revoked", reason="TOKEN_EXPIRED"
            )
        stored = Identity(
            subject=record["subject"],
            kind=cast(Kind, record["kind"]),
            provider=record["provider"],
            account=record["account"] or None,
            groups=frozenset(json.loads(record.get("groups", "[]"))),
            claims=json.loads(record.get("claims", "{}")),
        )
        provider = self._providers.get(stored.provider)
        current = provider.lookup(stored) if provider is not None else None
        if current is None:
            raise InvalidCredentials(
                "the identity this refresh token was issued to no longer exists",
                reason="UNKNOWN_USER",
            )
        return current

    def list(self, provider: str, subject: str, *, now: int) -> list[SessionInfo]:
        return [_info(r) for r in self._store.list_sessions(_index(provider, subject), now)]

    def revoke(self, session_or_token: str) -> bool:
        key = session_or_token
        if key.startswith(TOKEN_PREFIX):
            key = session_id(key)
        return self._store.delete_session(key)
