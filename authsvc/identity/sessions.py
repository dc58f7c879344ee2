"""Session credentials: authsvc's own refresh tokens.

A proof (a password, later an OIDC token or a signed AWS request) is exchanged for a
random opaque token. Only its SHA-256 is stored, with the identity it was issued to
(kind, provider, subject, account, verified claims), the client id, creation time,
expiry and last use. It carries no permissions: every use is decided against the
current rules, and the identity is re-checked with its provider (a removed user's
sessions stop working at once). Docker never rotates a refresh token, so one stays
valid for repeated use until it expires or is revoked.

With an audit log, creating and revoking a session are decisions of their own and each
is one event (``credential.create``, ``credential.revoke``), recorded after the store
has changed (the change is the fact). The event names the session by its id (the hash),
never the token, plus, on creation, the token's keyed fingerprint: the one that the
``token.issue`` events of its later uses carry as ``actor.fingerprint``. A creation that
the audit log refuses is undone and raises ``AuditUnavailable``: no credential leaves
unrecorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

from authsvc.audit import AuditLog, new_event_id
from authsvc.audit.schema import SCHEMA
from authsvc.audit.sinks import AuditUnavailable
from authsvc.errors import InvalidCredentials, StoreUnavailable
from authsvc.identity import Identity, Kind
from authsvc.store import SessionRecord, Store

__all__ = ["CREATE", "REVOKE", "TOKEN_PREFIX", "SessionInfo", "Sessions", "session_id"]

log = logging.getLogger(__name__)

#: A recognisable prefix lets secret scanners find leaked tokens.
TOKEN_PREFIX = "asr_"
_TOKEN = re.compile(r"asr_[A-Za-z0-9_-]{43}")
_SESSION_ID = re.compile(r"[0-9a-f]{64}")

#: Audit event types.
CREATE: Final = "credential.create"
REVOKE: Final = "credential.revoke"
#: The credential kind a session token is fingerprinted under when it is presented
#: (``token.issue``'s ``actor.credential``), so that both fingerprints are the same.
_FINGERPRINT_KIND: Final = "refresh_token"


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
    """Session credentials in ``store``; ``audit`` (optional) records their creation and
    revocation, ``fingerprint`` (optional) the keyed fingerprint of a new token."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, IdentityLookup],
        *,
        audit: AuditLog | None = None,
        fingerprint: Callable[[str, str], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._providers = providers
        self._audit = audit
        self._fingerprint = fingerprint
        self._clock = clock

    def issue(self, identity: Identity, *, client_id: str, ttl: int, now: int) -> str:
        """A new session token; ``AuditUnavailable`` if its creation cannot be recorded."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        sid = session_id(token)
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
            sid,
            record,
            index=_index(identity.provider, identity.subject),
            expires_at=now + ttl,
        )
        if self._audit is None:
            return token
        credential: dict[str, Any] = {"type": "session", "id": sid, "expires_at": now + ttl}
        if self._fingerprint is not None:
            credential["fingerprint"] = self._fingerprint(_FINGERPRINT_KIND, token)
        event = self._event(CREATE, "success", "SESSION_ISSUED", credential)
        event["actor"] = {
            "kind": identity.kind,
            "provider": identity.provider,
            "subject": identity.subject,
            "account": identity.account,
        }
        event["client"] = {"client_id": client_id or None}
        try:
            self._audit.record(event)
        except Exception as exc:
            # The token never leaves, so a session left behind by a store that fails
            # too cannot be used; it expires.
            with contextlib.suppress(StoreUnavailable):
                self._store.delete_session(sid)
            raise AuditUnavailable(
                "the audit log did not accept the new session credential, so none is issued",
            ) from exc
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

    def revoke(self, session_or_token: str, *, by: Mapping[str, Any] | None = None) -> bool:
        """Delete a session (by id or token); False if there was none.

        ``by`` is the actor (an operator) who revoked it: the event is recorded after the
        deletion, and ``AuditUnavailable`` raised (the session is gone nonetheless) when
        the audit log refuses it. Without ``by`` the revocation is authsvc's own: the
        token service withdrawing a credential whose grant it could not record. Its
        event has no actor and is recorded if the audit log takes it, else logged; that
        caller is already failing for want of an audit write, with that reason.
        """
        key = session_or_token
        if key.startswith(TOKEN_PREFIX):
            key = session_id(key)
        deleted = self._store.delete_session(key)
        if self._audit is None:
            return deleted
        # An argument that is not a session id may be anything pasted by mistake: keep
        # it out of the trail.
        credential = {"type": "session", "id": key if _SESSION_ID.fullmatch(key) else None}
        if not deleted:
            event = self._event(REVOKE, "failure", "NOT_FOUND", credential)
        elif by is None:
            event = self._event(REVOKE, "success", "GRANT_NOT_RECORDED", credential)
        else:
            event = self._event(REVOKE, "success", "SESSION_REVOKED", credential)
        if by is not None:
            event["actor"] = dict(by)
        try:
            self._audit.record(event)
        except Exception as exc:
            if by is None:
                log.warning(
                    "the audit log did not accept the withdrawal of session %s: %s", key[:12], exc
                )
                return deleted
            what = "revoked" if deleted else "not found"
            raise AuditUnavailable(
                f"session {credential['id'] or '(not an id)'} {what}, but the audit log did not "
                f"record it: {exc}"
            ) from exc
        return deleted

    def _event(
        self, kind: str, outcome: str, reason: str, credential: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "event_id": new_event_id(),
            "time": int(self._clock() * 1000),
            "type": kind,
            "outcome": outcome,
            "reason": reason,
            "credential": dict(credential),
        }
