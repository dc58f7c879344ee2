"""Audit events as authsvc records them, drafted in any order and numbered at the end.

A draft is the event without its ``event_id``: the simulator writes people, machines
and attackers one after another, so events are sorted by time only once all are drafted
(:func:`Recorder.lines`), and then get UUIDv7 ids from the simulated time and the
seed's own random stream (the same seed gives the same ids).

Credential fingerprints are computed the way authsvc computes them (HMAC-SHA256 of
``kind NUL secret``, 32 hex digits) under a key derived from the seed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from bench.detect.policy import Principal, decide

__all__ = [
    "ANONYMOUS",
    "NO_CREDENTIAL",
    "SCHEMA",
    "SERVICE",
    "Credential",
    "Recorder",
    "Request",
    "password",
    "proof",
    "refresh",
    "uuid7",
]

SCHEMA = "authsvc.audit/1"
SERVICE = "registry.example.com"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
_ENCODER = json.JSONEncoder(separators=(",", ":"))
ANONYMOUS = Principal(kind="anonymous", provider="anonymous", subject="", account=None)


@dataclass(frozen=True)
class Credential:
    """What the client presented: ``kind`` is password, refresh_token, subject_token or
    none; ``secret`` only feeds the fingerprint and never appears in an event."""

    kind: str
    secret: str = ""
    username: str | None = None


NO_CREDENTIAL = Credential("none")


def password(username: str, secret: str) -> Credential:
    return Credential("password", secret, username)


def refresh(secret: str) -> Credential:
    return Credential("refresh_token", secret)


def proof(secret: str) -> Credential:
    return Credential("subject_token", secret)


@dataclass(frozen=True)
class Request:
    """Where a token request came from and what it asked for."""

    ip: str
    user_agent: str
    scopes: Sequence[str] = ()
    grant_type: str | None = None
    client_id: str | None = None
    offline: bool = False


def uuid7(ms: int, rng: random.Random) -> str:
    """A UUIDv7 (RFC 9562) from a given millisecond and a given random stream."""
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    value |= 0b10 << 62 | rng.getrandbits(62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(frozen=True)
class Draft:
    time: int
    seq: int
    body: str  # the event's JSON members after schema, event_id and time, without braces
    campaign: str | None
    pattern: str | None


class Recorder:
    """Collects drafts; ``campaign`` marks an attack's events, ``pattern`` a benign
    episode worth naming when it makes a false alert (a typo, a trip, ...)."""

    def __init__(self, seed: int, policy_digest: str) -> None:
        self._key = hashlib.sha256(f"{seed}:audit-key".encode()).digest()
        self._policy = policy_digest
        self._fingerprints: dict[tuple[str, str], str] = {}
        self.drafts: list[Draft] = []
        #: pattern id -> (pattern name, entity)
        self.patterns: dict[str, tuple[str, str]] = {}
        #: subject -> time of its first authenticated request
        self.first_seen: dict[str, int] = {}

    def fingerprint(self, kind: str, secret: str) -> str:
        key = (kind, secret)
        found = self._fingerprints.get(key)
        if found is None:
            message = f"{kind}\0{secret}".encode()
            found = hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]
            self._fingerprints[key] = found
        return found

    def pattern(self, name: str, entity: str) -> str:
        """A new benign episode's id."""
        pid = f"{name}-{len(self.patterns) + 1}"
        self.patterns[pid] = (name, entity)
        return pid

    def grant(
        self, time: int, principal: Principal, credential: Credential, request: Request, *,
        claims: Mapping[str, str] | None = None, reuse: bool = False,
        campaign: str | None = None, pattern: str | None = None,
    ) -> None:
        """An authenticated request: the policy decides what is granted."""
        granted, denied, rules = decide(principal, request.scopes)
        if principal.subject not in self.first_seen:
            self.first_seen[principal.subject] = time
        outcome = "success" if not denied else ("partial" if granted else "failure")
        actor = self._actor(credential)
        actor.update(kind=principal.kind, provider=principal.provider,
                     subject=principal.subject, account=principal.account)
        if principal.groups:
            actor["groups"] = list(principal.groups)
        if claims:
            actor["claims"] = dict(claims)
        if reuse:
            actor["reuse"] = True
        reason = "GRANTED" if outcome == "success" else "SCOPE_DENIED"
        self._draft(time, outcome, reason, actor, request, granted, denied, rules,
                    campaign, pattern)

    def refuse(
        self, time: int, credential: Credential, request: Request, reason: str, *,
        provider: str | None = None, claims: Mapping[str, str] | None = None,
        campaign: str | None = None, pattern: str | None = None,
    ) -> None:
        """A request whose credential was refused: nothing is granted."""
        actor = self._actor(credential)
        if provider is not None:
            actor["provider"] = provider
        if claims:
            actor["claims"] = dict(claims)
        self._draft(time, "failure", reason, actor, request, [], list(request.scopes), [],
                    campaign, pattern)

    def _actor(self, credential: Credential) -> dict[str, object]:
        actor: dict[str, object] = {"credential": credential.kind}
        if credential.username is not None:
            actor["username"] = credential.username
        if credential.kind != "none":
            actor["fingerprint"] = self.fingerprint(credential.kind, credential.secret)
        return actor

    def _draft(
        self, time: int, outcome: str, reason: str, actor: dict[str, object], request: Request,
        granted: list[str], denied: list[str], rules: list[str],
        campaign: str | None, pattern: str | None,
    ) -> None:
        event = {
            "type": "token.issue", "outcome": outcome, "reason": reason, "actor": actor,
            "client": {"ip": request.ip, "user_agent": request.user_agent,
                       "client_id": request.client_id},
            "request": {"service": SERVICE, "scopes": list(request.scopes),
                        "grant_type": request.grant_type, "offline": request.offline},
            "decision": {"granted": granted, "denied": denied, "rules": rules,
                         "policy": self._policy},
        }
        body = _ENCODER.encode(event)[1:-1]
        self.drafts.append(Draft(time, len(self.drafts), body, campaign, pattern))

    def lines(self, rng: random.Random) -> Iterator[tuple[str, str, Draft]]:
        """(event_id, JSON line, draft) in time order."""
        self.drafts.sort(key=lambda d: (d.time, d.seq))
        for draft in self.drafts:
            event_id = uuid7(draft.time, rng)
            line = (f'{{"schema":"{SCHEMA}","event_id":"{event_id}","time":{draft.time},'
                    f"{draft.body}}}\n")
            yield event_id, line, draft

