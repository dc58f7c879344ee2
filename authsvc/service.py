"""TokenService: authenticate -> decide -> mint -> audit. No Flask here.

The web layer turns an HTTP request into a ``TokenRequest``; ``issue`` answers it
with a ``TokenGrant`` or raises an ``AuthsvcError``. Every outcome, refusals included,
is recorded as exactly one audit event before the answer leaves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from authsvc.anomaly.backoff import COUNTED_REASONS, Backoff
from authsvc.anomaly.risk import OpenAlerts
from authsvc.audit import AuditLog, new_event_id
from authsvc.audit.schema import SCHEMA, PlainEvent, PlainValue
from authsvc.config import Settings
from authsvc.errors import (
    AuthsvcError,
    BadRequest,
    Forbidden,
    InvalidCredentials,
    ServiceUnavailable,
    UnknownService,
)
from authsvc.identity import (
    ANONYMOUS,
    Anonymous,
    Credential,
    Identity,
    Password,
    RefreshToken,
    SubjectToken,
)
from authsvc.identity.aws.authenticator import AwsAuthenticator
from authsvc.identity.aws.proof import SUBJECT_TOKEN_TYPE as AWS_TOKEN_TYPE
from authsvc.identity.aws.settings import PROVIDER as AWS_PROVIDER
from authsvc.identity.oidc.authenticator import OidcAuthenticator
from authsvc.identity.sessions import Sessions
from authsvc.identity.static import StaticUsers
from authsvc.policy import Decision, Policy
from authsvc.scopes import Scope, format_scope, parse_scopes
from authsvc.tokens import MintedToken, TokenMinter

__all__ = ["TokenGrant", "TokenRequest", "TokenService"]

#: Docker clients treat a shorter ``expires_in`` as 60 s anyway.
MIN_EXPIRES_IN = 60

_CREDENTIAL_KINDS: dict[type, str] = {
    Anonymous: "none",
    Password: "password",
    RefreshToken: "refresh_token",
    SubjectToken: "subject_token",
}
#: The claims that say which CI job, repository or workload acted (for the audit trail).
_AUDITED_CLAIMS = (
    "iss", "sub", "jti", "repository", "repository_id", "repository_owner_id", "ref",
    "ref_type", "workflow", "job_workflow_ref", "event_name", "run_id", "project_path",
    "project_id", "namespace_id", "pipeline_id", "job_id", "email", "tid", "oid",
    # AWS: which role session (which job) acted, and the principal's unique id
    "arn", "role", "user", "session_name", "user_id", "sts_arn",
)


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
class Authenticated:
    """Who is asking, and what their credential says about the token and session."""

    identity: Identity
    #: A one-time proof accepted again (the same OIDC token re-sent as a password).
    reuse: bool = False
    #: Lifetime of minted tokens and of a new session credential, when not the defaults.
    token_ttl: int | None = None
    session_ttl: int | None = None
    #: Always return a session credential (a token exchange), not only when offline.
    session: bool = False


@dataclass(frozen=True)
class TokenGrant:
    token: str
    expires_in: int
    issued_at: str
    granted: list[Scope]
    identity: Identity
    decision: Decision
    refresh_token: str | None = field(default=None, repr=False)
    #: Seconds the session credential stays valid (when one was issued just now).
    refresh_expires_in: int | None = None

    @property
    def scope(self) -> str:
        return " ".join(format_scope(s) for s in self.granted)


def _secret_of(credential: Credential) -> str | None:
    if isinstance(credential, Password):
        return credential.password
    if isinstance(credential, RefreshToken | SubjectToken):
        return credential.token
    return None


def _plain_claim(value: object) -> PlainValue:
    """A claim as the audit trail holds it: its JSON value, but a number with a fraction
    or an exponent (a float, which the trail has no canonical form for) as its JSON
    text. Claims come from JSON (``loads_strict``: no NaN or Infinity)."""
    if value is None or isinstance(value, str | int):  # (bool is an int)
        return value
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, list):
        return [_plain_claim(member) for member in value]
    if isinstance(value, dict):
        return {str(key): _plain_claim(member) for key, member in value.items()}
    return str(value)  # (JSON has no other kind of value)


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
        oidc: OidcAuthenticator | None = None,
        aws: AwsAuthenticator | None = None,
        fingerprint: Callable[[str, str], str] | None = None,
        backoff: Backoff | None = None,
        open_alerts: OpenAlerts | None = None,
    ) -> None:
        self._fingerprint = fingerprint
        #: Why the last decision could not be recorded (cleared by the next that is).
        self.audit_failing: str | None = None
        self.settings = settings
        self.policy = Policy(settings.rules)
        self._oidc = oidc
        self._aws = aws
        self._users = users
        self._sessions = sessions
        self._minter = minter
        self._audit = audit
        self._clock = clock
        self._backoff = backoff
        self._open_alerts = open_alerts

    def issue(self, request: TokenRequest) -> TokenGrant:
        now = int(self._clock())
        auth: Authenticated | None = None
        scopes: list[Scope] = []
        try:
            service = self._check_service(request.service)
            scopes = parse_scopes(request.scopes)
            auth = self._authenticate(request, now)
            identity = auth.identity
            decision = self.policy.decide(identity, scopes)
            granted = decision.granted
            ttl = min(
                auth.token_ttl or self.settings.token_ttl,
                decision.token_ttl or self.settings.token_ttl,
            )
            open_alert = None
            if decision.open_alert_token_ttl is not None and self._open_alerts is not None:
                open_alert = self._open_alerts.detector(identity, now)
                if open_alert is not None:
                    ttl = min(ttl, decision.open_alert_token_ttl)
            minted = self._minter.mint(
                subject=identity.subject,
                audience=service,
                access=[s.to_access() for s in granted],
                ttl=ttl,
                now=now,
            )
            refresh = self._refresh_token(request, auth, now)
        except AuthsvcError as exc:
            self._record_failure(request, auth, scopes, exc, now)
            raise
        try:
            self._record_grant(request, auth, decision, minted, now, open_alert)
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
            refresh_expires_in=(
                auth.session_ttl or self.settings.refresh_tokens.ttl
                if refresh is not None and not isinstance(request.credential, RefreshToken)
                else None
            ),
        )

    def authenticate_admin(self, credential: Credential, *, client_ip: str = "") -> Identity:
        """An admin endpoint's caller: a static user listed in ``admin.accounts``, behind
        the same backoff as the token endpoint (else it would be a side door for guessing)."""
        if not isinstance(credential, Password):
            raise InvalidCredentials("this endpoint needs an admin's user name and password")
        identity = self._password_login(credential, client_ip, int(self._clock()))
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

    def _authenticate(self, request: TokenRequest, now: int) -> Authenticated:
        credential = request.credential
        if isinstance(credential, Anonymous):
            return Authenticated(ANONYMOUS)
        if isinstance(credential, RefreshToken):
            identity = self._sessions.authenticate(credential.token, now=now)
            return Authenticated(identity, token_ttl=self._lifetimes(identity.provider)[0])
        if isinstance(credential, SubjectToken):
            return self._exchange(credential, now)
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
        if self._aws is not None and self._aws.handles(credential.username, credential.password):
            aws = self._aws.authenticate_password(credential.password, now=now)
            return self._proof_login(aws.identity, aws.reuse, session=False)
        if self._oidc is not None and self._oidc.handles(credential.password):
            login = self._oidc.authenticate_password(credential.password, now=now)
            return self._proof_login(login.identity, login.reuse, session=False)
        return Authenticated(self._password_login(credential, request.client_ip, now))

    def _password_login(self, credential: Password, client_ip: str, now: int) -> Identity:
        """A static user's password, behind the brute-force backoff (one store read)."""
        if self._backoff is None:
            return self._users.authenticate(credential.username, credential.password)
        failures = self._backoff.check(credential.username, client_ip, now)
        try:
            identity = self._users.authenticate(credential.username, credential.password)
        except InvalidCredentials as exc:
            if exc.reason in COUNTED_REASONS:
                self._backoff.failed(credential.username, client_ip, now)
            raise
        if failures:
            self._backoff.clear(credential.username, client_ip, now)
        return identity

    def _exchange(self, credential: SubjectToken, now: int) -> Authenticated:
        """RFC 8693: a one-time proof for a session credential."""
        if credential.token_type == AWS_TOKEN_TYPE:
            if self._aws is None:
                raise InvalidCredentials(
                    "AWS identities are not configured (identities.aws)", reason="UNKNOWN_ISSUER"
                )
            aws = self._aws.exchange(credential.token, now=now)
            return self._proof_login(aws.identity, aws.reuse, session=True)
        if self._oidc is None:
            raise InvalidCredentials(
                "no OIDC issuer is configured to exchange tokens from", reason="UNKNOWN_ISSUER"
            )
        login = self._oidc.exchange(credential.token, now=now)
        return self._proof_login(login.identity, login.reuse, session=True)

    def _proof_login(self, identity: Identity, reuse: bool, *, session: bool) -> Authenticated:
        token_ttl, session_ttl = self._lifetimes(identity.provider)
        return Authenticated(
            identity, reuse=reuse, token_ttl=token_ttl, session_ttl=session_ttl, session=session
        )

    def _lifetimes(self, provider: str) -> tuple[int | None, int | None]:
        """(registry-token, session) lifetimes for an identity source (None: the default)."""
        source = (
            self.settings.identities.aws
            if provider == AWS_PROVIDER
            else self.settings.identities.oidc.get(provider)
        )
        return (None, None) if source is None else (source.token_ttl, source.session_ttl)

    def _refresh_token(self, request: TokenRequest, auth: Authenticated, now: int) -> str | None:
        if not (request.offline or auth.session) or auth.identity.anonymous:
            return None
        if isinstance(request.credential, RefreshToken):
            return request.credential.token  # Docker never rotates: hand back the same one
        return self._sessions.issue(
            auth.identity,
            client_id=request.client_id or "",
            ttl=auth.session_ttl or self.settings.refresh_tokens.ttl,
            now=now,
        )

    # -- audit -------------------------------------------------------------------------

    def _base_event(
        self, request: TokenRequest, auth: Authenticated | None, now: int
    ) -> PlainEvent:
        """The members every token event has. Built of typed values only (a
        ``PlainEvent``: the chain encodes it without walking it); the claims, which the
        issuer chose, pass through ``_plain_claim``."""
        credential = request.credential
        kind = _CREDENTIAL_KINDS[type(credential)]
        actor: dict[str, PlainValue] = {"credential": kind}
        if isinstance(credential, Password):
            actor["username"] = credential.username
        secret = _secret_of(credential)
        if secret is not None and self._fingerprint is not None:
            actor["fingerprint"] = self._fingerprint(kind, secret)
        if auth is not None:
            identity = auth.identity
            actor.update(
                kind=identity.kind,
                provider=identity.provider,
                subject=identity.subject,
                account=identity.account,
            )
            if identity.groups:
                groups: list[PlainValue] = [*sorted(identity.groups)]
                actor["groups"] = groups
            if identity.claims:
                actor["claims"] = {
                    name: _plain_claim(identity.claims[name]) for name in _AUDITED_CLAIMS
                    if name in identity.claims
                }
            if auth.reuse:
                actor["reuse"] = True
        scopes: list[PlainValue] = [*request.scopes]
        return PlainEvent(
            schema=SCHEMA,
            event_id=new_event_id(),
            time=int(self._clock() * 1000),
            type="token.issue",
            actor=actor,
            client={
                "ip": request.client_ip,
                "user_agent": request.user_agent,
                "client_id": request.client_id,
            },
            request={
                "service": request.service,
                "scopes": scopes,
                "grant_type": request.grant_type,
                "offline": request.offline,
            },
        )

    def _record_grant(
        self,
        request: TokenRequest,
        auth: Authenticated,
        decision: Decision,
        minted: MintedToken,
        now: int,
        open_alert: str | None = None,
    ) -> None:
        event = self._base_event(request, auth, now)
        event.update(
            outcome=decision.outcome,
            reason="GRANTED" if decision.outcome == "success" else "SCOPE_DENIED",
            decision={
                "granted": [format_scope(s) for s in decision.granted],
                "denied": [format_scope(s) for s in decision.denied],
                "rules": list(decision.matched_rules),
                "policy": self.policy.digest,
            },
        )
        token: dict[str, PlainValue] = {
            "jti": minted.jti, "exp": minted.expires_at, "kid": minted.kid
        }
        if open_alert is not None:  # the lifetime was cut short by the risk response
            token["open_alert"] = open_alert
        event["token"] = token
        self._record(event)

    def _record(self, event: PlainEvent) -> None:
        try:
            self._audit.record(event)
        except Exception as exc:
            self.audit_failing = f"{type(exc).__name__}: {exc}"[:300]
            raise ServiceUnavailable(
                "the audit log did not accept the decision, so no token is issued",
                reason="AUDIT_UNAVAILABLE",
            ) from exc
        self.audit_failing = None

    def _record_failure(
        self,
        request: TokenRequest,
        auth: Authenticated | None,
        scopes: list[Scope],
        error: AuthsvcError,
        now: int,
    ) -> None:
        event = self._base_event(request, auth, now)
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
