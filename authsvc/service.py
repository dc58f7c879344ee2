"""TokenService: authenticate -> decide -> mint -> audit. No Flask here.

The web layer turns an HTTP request into a ``TokenRequest``; ``issue`` answers it
with a ``TokenGrant`` or raises an ``AuthsvcError``. Every outcome, refusals included,
is recorded as exactly one audit event before the answer leaves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from authsvc.audit import AuditLog, new_event_id
from authsvc.config import Settings
from authsvc.errors import (
    AuthsvcError,
    BadRequest,
    Forbidden,
    InvalidCredentials,
    ServiceUnavailable,
    UnknownService,
)
from authsvc.identity import ANONYMOUS, Anonymous, Credential, Identity, Password, RefreshToken
from authsvc.identity.sessions import Sessions
from authsvc.identity.static import StaticUsers
from authsvc.policy import Decision, Policy
from authsvc.scopes import Scope, format_scope, parse_scopes
from authsvc.tokens import MintedToken, TokenMinter

__all__ = ["TokenGrant", "TokenRequest", "TokenService"]

#: Docker clients treat a shorter ``expires_in`` as 60 s anyway.
MIN_EXPIRES_IN = 60


@dataclass(frozen=True)
class TokenRequest:
    service: str | None
    scopes: Sequence[str]
    credential: Credential
    account: str | None = None
    client_id: str | None = None
    offline: bool = False
    grant_type: str | None = None
    client_ip: str = ""
    user_agent: str = ""


@dataclass(frozen=True)
class TokenGrant:
    token: str
    expires_in: int
    issued_at: str
    granted: list[Scope]
    identity: Identity
    decision: Decision
    refresh_token: str | None = field(default=None, repr=False)

    @property
    def scope(self) -> str:
        return " ".join(format_scope(s) for s in self.granted)


def _rfc3339(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


class TokenService:
    """Answers token requests under one configuration; a reload builds a new one."""

    def __init__(
        self,
        settings: Settings,
        *,
        users: StaticUsers,
        sessions: Sessions,
        minter: TokenMinter,
        audit: AuditLog,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.policy = Policy(settings.rules)
        self._users = users
        self._sessions = sessions
        self._minter = minter
        self._audit = audit
        self._clock = clock

    def issue(self, request: TokenRequest) -> TokenGrant:
        now = int(self._clock())
        identity: Identity | None = None
        scopes: list[Scope] = []
        try:
            service = self._check_service(request.service)
            scopes = parse_scopes(request.scopes)
            identity = self._authenticate(request, now)
            decision = self.policy.decide(identity, scopes)
            granted = decision.granted
            minted = self._minter.mint(
                subject=identity.subject,
                audience=service,
                access=[s.to_access() for s in granted],
                ttl=self.settings.token_ttl,
                now=now,
            )
            refresh = self._refresh_token(request, identity, now)
        except AuthsvcError as exc:
            self._record_failure(request, identity, scopes, exc, now)
            raise
        try:
            self._record_grant(request, identity, decision, minted, now)
        except ServiceUnavailable:
            # No token leaves unrecorded; nor does a session nobody was told about.
            if refresh is not None and not isinstance(request.credential, RefreshToken):
                self._sessions.revoke(refresh)
            raise
        return TokenGrant(
            token=minted.token,
            expires_in=max(MIN_EXPIRES_IN, minted.expires_at - minted.issued_at),
            issued_at=_rfc3339(minted.issued_at),
            granted=granted,
            identity=identity,
            decision=decision,
            refresh_token=refresh,
        )

    def authenticate_admin(self, credential: Credential) -> Identity:
        """An admin endpoint's caller: a static user listed in ``admin.accounts``."""
        if not isinstance(credential, Password):
            raise InvalidCredentials("this endpoint needs an admin's user name and password")
        identity = self._users.authenticate(credential.username, credential.password)
        if identity.account not in self.settings.admin.accounts:
            raise Forbidden(f"{identity.account!r} is not listed in admin.accounts")
        return identity

    def _check_service(self, service: str | None) -> str:
        if not service:
            raise BadRequest("the 'service' parameter is required", reason="MISSING_SERVICE")
        if service not in self.settings.services:
            raise UnknownService(
                f"unknown service {service!r}: this token service does not serve it"
            )
        return service

    def _authenticate(self, request: TokenRequest, now: int) -> Identity:
        credential = request.credential
        if isinstance(credential, Anonymous):
            return ANONYMOUS
        if isinstance(credential, RefreshToken):
            return self._sessions.authenticate(credential.token, now=now)
        if (
            request.account is not None
            and request.account != credential.username
            and request.grant_type is None
        ):
            raise BadRequest(
                f"account {request.account!r} does not match the user name given in the "
                "Authorization header",
                reason="ACCOUNT_MISMATCH",
            )
        return self._users.authenticate(credential.username, credential.password)

    def _refresh_token(self, request: TokenRequest, identity: Identity, now: int) -> str | None:
        if not request.offline or identity.anonymous:
            return None
        if isinstance(request.credential, RefreshToken):
            return request.credential.token  # Docker never rotates: hand back the same one
        return self._sessions.issue(
            identity,
            client_id=request.client_id or "",
            ttl=self.settings.refresh_tokens.ttl,
            now=now,
        )

    # -- audit -------------------------------------------------------------------------

    def _base_event(
        self, request: TokenRequest, identity: Identity | None, now: int
    ) -> dict[str, Any]:
        credential = request.credential
        credential_kind = (
            "none"
            if isinstance(credential, Anonymous)
            else "refresh_token"
            if isinstance(credential, RefreshToken)
            else "password"
        )
        actor: dict[str, Any] = {"credential": credential_kind}
        if isinstance(credential, Password):
            actor["username"] = credential.username
        if identity is not None:
            actor.update(
                kind=identity.kind,
                provider=identity.provider,
                subject=identity.subject,
                account=identity.account,
            )
        return {
            "event_id": new_event_id(),
            "time": now * 1000,
            "type": "token.issue",
            "actor": actor,
            "client": {
                "ip": request.client_ip,
                "user_agent": request.user_agent,
                "client_id": request.client_id,
            },
            "request": {
                "service": request.service,
                "scopes": list(request.scopes),
                "grant_type": request.grant_type,
                "offline": request.offline,
            },
        }

    def _record_grant(
        self,
        request: TokenRequest,
        identity: Identity,
        decision: Decision,
        minted: MintedToken,
        now: int,
    ) -> None:
        event = self._base_event(request, identity, now)
        event.update(
            outcome=decision.outcome,
            reason="GRANTED" if decision.outcome == "success" else "SCOPE_DENIED",
            decision={
                "granted": [format_scope(s) for s in decision.granted],
                "denied": [format_scope(s) for s in decision.denied],
                "rules": list(decision.matched_rules),
                "policy": self.policy.digest,
            },
            token={"jti": minted.jti, "exp": minted.expires_at, "kid": minted.kid},
        )
        self._record(event)

    def _record(self, event: dict[str, Any]) -> None:
        try:
            self._audit.record(event)
        except Exception as exc:
            raise ServiceUnavailable(
                "the audit log did not accept the decision, so no token is issued",
                reason="AUDIT_UNAVAILABLE",
            ) from exc

    def _record_failure(
        self,
        request: TokenRequest,
        identity: Identity | None,
        scopes: list[Scope],
        error: AuthsvcError,
        now: int,
    ) -> None:
        event = self._base_event(request, identity, now)
        event.update(
            outcome="failure",
            reason=error.reason,
            message=error.message,
            decision={
                "granted": [],
                "denied": [format_scope(s) for s in scopes],
                "rules": [],
                "policy": self.policy.digest,
            },
        )
        self._record(event)
