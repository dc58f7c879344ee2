"""Session credentials and their audit events: one per creation and per revocation,
naming the session by its id, never by its token."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from authsvc.audit import MemoryAuditLog
from authsvc.audit.sinks import AuditUnavailable
from authsvc.identity import Identity
from authsvc.identity.sessions import Sessions, session_id
from authsvc.store.memory import MemoryStore

NOW = 1_800_000_000
TTL = 3600
ALICE = Identity(subject="alice", kind="human", provider="static", account="alice")
OPERATOR = {"kind": "operator", "subject": "ops", "uid": 1000}


class RefusingAuditLog:
    """A sink that is down: it refuses every event, naming why."""

    def record(self, event: Mapping[str, Any]) -> None:
        raise AuditUnavailable("audit/audit.jsonl: ENOSPC (no space left on device)")


def fingerprint(kind: str, secret: str) -> str:
    return f"fp({kind}:{secret[-6:]})"


def sessions(store: MemoryStore, audit: Any) -> Sessions:
    return Sessions(store, {}, audit=audit, fingerprint=fingerprint, clock=lambda: NOW + 0.25)


def test_issuing_a_session_records_one_credential_create() -> None:
    audit = MemoryAuditLog()
    token = sessions(MemoryStore(), audit).issue(ALICE, client_id="docker", ttl=TTL, now=NOW)
    (event,) = audit.events
    assert {k: v for k, v in event.items() if k != "event_id"} == {
        "schema": "authsvc.audit/1",
        "time": NOW * 1000 + 250,
        "type": "credential.create",
        "outcome": "success",
        "reason": "SESSION_ISSUED",
        "actor": {"kind": "human", "provider": "static", "subject": "alice", "account": "alice"},
        "client": {"client_id": "docker"},
        "credential": {
            "type": "session",
            "id": session_id(token),
            # what token.issue's actor.fingerprint holds when the token is presented
            "fingerprint": fingerprint("refresh_token", token),
            "expires_at": NOW + TTL,
        },
    }
    assert token not in repr(audit.events)


def test_a_session_whose_creation_is_refused_is_not_issued() -> None:
    store = MemoryStore()
    with pytest.raises(AuditUnavailable) as refused:
        sessions(store, RefusingAuditLog()).issue(ALICE, client_id="", ttl=TTL, now=NOW)
    assert refused.value.reason == "AUDIT_UNAVAILABLE"
    assert "none is issued" in refused.value.message
    assert Sessions(store, {}).list("static", "alice", now=NOW) == []


def test_without_an_audit_log_sessions_issue_and_revoke_as_before() -> None:
    store = MemoryStore()
    plain = Sessions(store, {})
    token = plain.issue(ALICE, client_id="", ttl=TTL, now=NOW)
    assert plain.revoke(token, by=OPERATOR)


def test_an_operator_revocation_is_recorded_after_the_deletion() -> None:
    store, audit = MemoryStore(), MemoryAuditLog()
    live = sessions(store, audit)
    token = live.issue(ALICE, client_id="docker", ttl=TTL, now=NOW)
    assert live.revoke(session_id(token), by=OPERATOR)
    revoked = audit.events[-1]
    assert (revoked["type"], revoked["outcome"], revoked["reason"]) == (
        "credential.revoke",
        "success",
        "SESSION_REVOKED",
    )
    assert revoked["actor"] == OPERATOR
    assert revoked["credential"] == {"type": "session", "id": session_id(token)}
    assert live.list("static", "alice", now=NOW) == []


def test_revoking_what_is_not_there_is_a_recorded_failure() -> None:
    audit = MemoryAuditLog()
    live = sessions(MemoryStore(), audit)
    assert not live.revoke("ab" * 32, by=OPERATOR)
    (missing,) = audit.events
    assert (missing["outcome"], missing["reason"]) == ("failure", "NOT_FOUND")
    assert missing["credential"] == {"type": "session", "id": "ab" * 32}


@pytest.mark.parametrize(
    "argument",
    ["asr_" + "x" * 43, "alice-secret", "AB" * 32],
    ids=["a token", "a password pasted by mistake", "not a session id"],
)
def test_what_is_not_a_session_id_stays_out_of_the_trail(argument: str) -> None:
    audit = MemoryAuditLog()
    assert not sessions(MemoryStore(), audit).revoke(argument, by=OPERATOR)
    (event,) = audit.events
    expected = session_id(argument) if argument.startswith("asr_") else None
    assert event["credential"]["id"] == expected
    assert argument not in repr(event)


def test_a_refused_revocation_says_it_happened_but_went_unrecorded() -> None:
    store = MemoryStore()
    token = Sessions(store, {}).issue(ALICE, client_id="", ttl=TTL, now=NOW)
    with pytest.raises(AuditUnavailable) as refused:
        sessions(store, RefusingAuditLog()).revoke(token, by=OPERATOR)
    assert refused.value.message == (
        f"session {session_id(token)} revoked, but the audit log did not record it: "
        "audit/audit.jsonl: ENOSPC (no space left on device)"
    )
    assert Sessions(store, {}).list("static", "alice", now=NOW) == []  # revoked all the same


def test_a_withdrawal_by_authsvc_has_no_actor_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, audit = MemoryStore(), MemoryAuditLog()
    token = sessions(store, audit).issue(ALICE, client_id="", ttl=TTL, now=NOW)
    assert sessions(store, audit).revoke(token)
    withdrawn = audit.events[-1]
    assert (withdrawn["type"], withdrawn["reason"]) == ("credential.revoke", "GRANT_NOT_RECORDED")
    assert "actor" not in withdrawn

    token = sessions(store, audit).issue(ALICE, client_id="", ttl=TTL, now=NOW)
    with caplog.at_level(logging.WARNING, logger="authsvc.identity.sessions"):
        assert sessions(store, RefusingAuditLog()).revoke(token)
    assert "did not accept the withdrawal of session" in caplog.text
    assert "ENOSPC" in caplog.text
