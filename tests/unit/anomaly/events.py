"""Crafted audit events for the detector tests (the fields authsvc writes)."""

from __future__ import annotations

import itertools
from typing import Any

T0 = 1_789_948_800  # midnight UTC (seconds); tests add offsets
_ids = itertools.count(1)


def event_id() -> str:
    return f"00000000-0000-7000-8000-{next(_ids):012d}"


def failure(
    user: str,
    ip: str,
    at: int,
    *,
    reason: str = "INVALID_CREDENTIALS",
    ua: str = "docker/24.0.7 go/go1.20 os/linux arch/amd64",
    password: str | None = None,
) -> dict[str, Any]:
    """A failed password login; each with another password unless ``password`` is given."""
    eid = event_id()
    return {
        "schema": "authsvc.audit/1",
        "event_id": eid,
        "time": at * 1000,
        "type": "token.issue",
        "outcome": "failure",
        "reason": reason,
        "actor": {
            "credential": "password",
            "username": user,
            "fingerprint": f"fp-{password or eid}",
        },
        "client": {"ip": ip, "user_agent": ua, "client_id": None},
        "request": {"service": "registry", "scopes": ["repository:a/b:pull"]},
        "decision": {"granted": [], "denied": ["repository:a/b:pull"], "rules": []},
    }


def success(
    account: str,
    ip: str,
    at: int,
    *,
    granted: list[str] | None = None,
    denied: list[str] | None = None,
    kind: str = "human",
    provider: str = "static",
    groups: list[str] | None = None,
    credential: str = "password",
    ua: str = "docker/24.0.7 go/go1.20 os/linux arch/amd64",
    claims: dict[str, Any] | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    granted = ["repository:team/app:pull"] if granted is None else granted
    denied = denied or []
    actor: dict[str, Any] = {
        "credential": credential,
        "kind": kind,
        "provider": provider,
        "subject": account,
        "account": account,
        "fingerprint": fingerprint or f"fp-{account}",
    }
    if credential == "password":
        actor["username"] = account
    if groups:
        actor["groups"] = groups
    if claims:
        actor["claims"] = claims
    return {
        "schema": "authsvc.audit/1",
        "event_id": event_id(),
        "time": at * 1000,
        "type": "token.issue",
        "outcome": "partial" if denied else "success",
        "reason": "SCOPE_DENIED" if denied else "GRANTED",
        "actor": actor,
        "client": {"ip": ip, "user_agent": ua, "client_id": None},
        "request": {"service": "registry", "scopes": granted + denied},
        "decision": {"granted": granted, "denied": denied, "rules": ["r"]},
    }
