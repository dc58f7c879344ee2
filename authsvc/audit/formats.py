"""Audit exports: ``authsvc.audit/1`` events as JSON Lines, CSV, OCSF 1.8.0 and ECS.

Each encoder takes an iterable of events and yields text, one chunk per output line
(the CSV header row first). It holds only the event at hand, so an export of
millions of events runs in constant memory and at the pace of its source. Write the
chunks to a stream opened with ``encoding="utf-8", newline=""`` (CSV lines end in
CRLF, as RFC 4180 has them)::

    with open(path, "w", encoding="utf-8", newline="") as out:
        out.writelines(FORMATS["ocsf"](events))

``jsonl``
    Each event as it is, one compact JSON object per line. The output is ASCII, the
    same JSON that the stream sink writes after its prefix. Nothing is lost, so this
    is the export to verify the hash chain on.
``csv``
    A header row, then one row per event, with the columns of ``CSV_COLUMNS``.
    ``time`` is ISO 8601 in UTC with milliseconds (``2026-11-28T04:35:12.123Z``).
    ``requested``, ``granted``, ``denied`` and ``rules`` are lists joined by single
    spaces. A request parameter that held several space-separated scopes shows up as
    its parts. ``credential_id`` and ``key_id`` (the last columns) name what a
    ``credential.*`` or ``key.*`` event is about. An absent or null member is an empty
    cell. A cell that would start with ``= + - @``, a tab or a carriage return gets a
    leading ``'``, so that a spreadsheet shows it as text instead of running it as a
    formula (user agents and user names come from the client). A cell that starts with
    ``'`` gets one more, so ``from_csv_row`` can undo this exactly.
``ocsf``
    OCSF 1.8.0 events, one per line; a decision can give several:

    - ``token.issue``: an Authentication event (3002, Logon). Its status is Success
      when the event names an identity (``actor.kind``), otherwise Failure, with
      the reason in ``status_code`` and ``status_detail``. Scopes that were granted
      add an Authorize Session event (3003, Assign Privileges) with
      ``privileges`` = the granted scopes. An identity whose request was not fully
      granted adds an API Activity event (6003, Failure). It lists the denied scopes
      as ``resources`` and carries the reason.
    - ``credential.create``, ``credential.revoke``, ``key.generate``, ``key.rotate``,
      ``key.retire``: one API Activity event (6003) whose activity is the one operation
      on one resource that each of them is (Create, Delete, Create, Update, Update). The
      session credential or signing key is in ``resources`` (a rotation lists the key
      that stopped signing too), the user or operator who acted in ``actor.user``.
      (OCSF's Account Change, 3001, is about accounts, not about credentials an account
      holds, and is not among the classes the export is checked against.)
    - Any other type (``config.load``, ``config.reload``, ``audit.checkpoint`` and
      types added later): one API Activity event (6003) about authsvc itself.

    Otherwise the 6003 activity is 99 Other, with the authsvc type as
    ``activity_name``: its other values (Create, Read, Update, Delete) name one
    operation on one resource. A token request names several scopes, each with several
    actions (pull reads, push creates or updates, delete deletes), and loading a
    configuration is none of them.
    All events from one audit event share ``metadata.correlation_uid`` and
    ``metadata.original_event_uid`` (the ``event_id``). ``metadata.uid`` is
    ``<event_id>:<class_uid>``. Severity is Informational for what succeeded, Low for
    a policy denial and Medium for a failed authentication (or a failed system event).
    Members that have no OCSF attribute go in ``unmapped``.
``ecs``
    Elastic Common Schema documents, one per line: ``@timestamp``, ``ecs.version``,
    ``event.*`` (kind, category, type, action, outcome, reason, id, dataset, sequence;
    ``iam`` for credentials, ``configuration`` for keys and configurations),
    ``user.name``/``user.id``, ``source.address``/``source.ip``,
    ``user_agent.original``, ``service.name`` = ``authsvc`` (ECS: the service the data
    comes from) and ``service.target.name`` = the registry's ``service``. The whole
    audit event is under ``authsvc``, so the chain hash can be checked there too.
"""

from __future__ import annotations

import csv
import functools
import io
import ipaddress
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeGuard

from authsvc.errors import InvalidScope
from authsvc.scopes import parse_scope

__all__ = [
    "CSV_COLUMNS",
    "ECS_VERSION",
    "FORMATS",
    "OCSF_VERSION",
    "Encoder",
    "from_csv_row",
    "to_csv",
    "to_ecs",
    "to_jsonl",
    "to_ocsf",
]

Event = Mapping[str, Any]
Encoder = Callable[[Iterable[Event]], Iterator[str]]

_JSON = json.JSONEncoder(separators=(",", ":"))
_PRODUCT = "authsvc"


def to_jsonl(events: Iterable[Event]) -> Iterator[str]:
    """Each event verbatim, one JSON object per line."""
    for event in events:
        yield _JSON.encode(event) + "\n"


# -- CSV ------------------------------------------------------------------------------

CSV_COLUMNS: Final = (
    "event_id", "time", "type", "outcome", "reason",
    "actor_kind", "actor_provider", "actor_subject", "actor_account",
    "credential", "fingerprint", "client_ip", "user_agent", "client_id",
    "service", "requested", "granted", "denied", "rules", "policy",
    "jti", "writer", "seq", "hash", "credential_id", "key_id",
)

#: What a spreadsheet would take as the start of a formula (OWASP "CSV injection"),
#: plus the quote that marks a guarded cell, so the guard can be undone exactly.
_FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r", "'")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def to_csv(events: Iterable[Event]) -> Iterator[str]:
    """A header row (``CSV_COLUMNS``), then one row per event."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in itertools.chain([CSV_COLUMNS], map(_csv_row, events)):
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def from_csv_row(row: Mapping[str, str | None] | Sequence[str]) -> dict[str, Any]:
    """A CSV row back in the event's shape. ``row`` is a ``csv.DictReader`` row or a
    ``csv.reader`` row in ``CSV_COLUMNS`` order. Every member that the CSV carries is
    there: an empty cell reads as None, an empty list cell as ``[]``."""
    if isinstance(row, Mapping):
        missing = [column for column in CSV_COLUMNS if column not in row]
        if missing:
            raise ValueError(f"the CSV row has no column {', '.join(missing)}")
        cells = [row[column] or "" for column in CSV_COLUMNS]
    else:
        cells = list(row)
    if len(cells) != len(CSV_COLUMNS):
        raise ValueError(f"a CSV row has {len(CSV_COLUMNS)} cells, not {len(cells)}")
    value = {
        column: cell[1:] if cell.startswith("'") else cell
        for column, cell in zip(CSV_COLUMNS, cells, strict=True)
    }

    def text(column: str) -> str | None:
        return value[column] or None

    def words(column: str) -> list[str]:
        return value[column].split(" ") if value[column] else []

    when, seq = value["time"], value["seq"]
    return {
        "event_id": text("event_id"),
        "time": (datetime.fromisoformat(when) - _EPOCH) // _MILLISECOND if when else None,
        "type": text("type"),
        "outcome": text("outcome"),
        "reason": text("reason"),
        "actor": {
            "kind": text("actor_kind"),
            "provider": text("actor_provider"),
            "subject": text("actor_subject"),
            "account": text("actor_account"),
            "credential": text("credential"),
            "fingerprint": text("fingerprint"),
        },
        "client": {
            "ip": text("client_ip"),
            "user_agent": text("user_agent"),
            "client_id": text("client_id"),
        },
        "request": {"service": text("service"), "scopes": words("requested")},
        "decision": {
            "granted": words("granted"),
            "denied": words("denied"),
            "rules": words("rules"),
            "policy": text("policy"),
        },
        "token": {"jti": text("jti")},
        "writer": text("writer"),
        "seq": int(seq) if seq else None,
        "chain": {"hash": text("hash")},
        "credential": {"id": text("credential_id")},
        "key": {"id": text("key_id")},
    }


def _csv_row(event: Event) -> list[str]:
    actor, client, request, decision = (
        _member(event, name) for name in ("actor", "client", "request", "decision")
    )
    when = event.get("time")
    return [
        _cell(value)
        for value in (
            event.get("event_id"),
            _iso(when) if _is_int(when) else when,
            event.get("type"),
            event.get("outcome"),
            event.get("reason"),
            actor.get("kind"),
            actor.get("provider"),
            actor.get("subject"),
            actor.get("account"),
            actor.get("credential"),
            actor.get("fingerprint"),
            client.get("ip"),
            client.get("user_agent"),
            client.get("client_id"),
            request.get("service"),
            " ".join(_words(request.get("scopes"))),
            " ".join(_words(decision.get("granted"))),
            " ".join(_words(decision.get("denied"))),
            " ".join(_words(decision.get("rules"))),
            decision.get("policy"),
            _member(event, "token").get("jti"),
            event.get("writer"),
            event.get("seq"),
            _member(event, "chain").get("hash"),
            _member(event, "credential").get("id"),
            _member(event, "key").get("id"),
        )
    ]


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_LEAD) else text


# -- OCSF 1.8.0 -----------------------------------------------------------------------

OCSF_VERSION: Final = "1.8.0"


@dataclass(frozen=True)
class _OcsfClass:
    uid: int
    name: str
    category_uid: int
    category_name: str


_AUTHENTICATION = _OcsfClass(3002, "Authentication", 3, "Identity & Access Management")
_AUTHORIZE_SESSION = _OcsfClass(3003, "Authorize Session", 3, "Identity & Access Management")
_API_ACTIVITY = _OcsfClass(6003, "API Activity", 6, "Application Activity")

# Enum values and their captions, from the OCSF 1.8.0 dictionary.
_LOGON = (1, "Logon")  # authentication.activity_id
_ASSIGN_PRIVILEGES = (1, "Assign Privileges")  # authorize_session.activity_id
_OTHER = 99  # base_event.activity_id; activity_name then names the source's activity
_UNKNOWN, _SUCCESS, _FAILURE = 0, 1, 2
_STATUS = {_UNKNOWN: "Unknown", _SUCCESS: "Success", _FAILURE: "Failure"}
_INFORMATIONAL, _LOW, _MEDIUM = 1, 2, 3
_SEVERITY = {_INFORMATIONAL: "Informational", _LOW: "Low", _MEDIUM: "Medium"}
_NETWORK_LOGON = (3, "Network")  # logon_type_id
_OAUTH2, _BASIC = (6, "OAUTH 2.0"), (11, "Basic Authentication")  # auth_protocol_id
#: actor.kind -> user.type_id (1 User, 4 Service, 99 Other) and its caption.
_USER_TYPES = {
    "human": (1, "User"),
    "robot": (4, "Service"),
    "ci": (4, "Service"),
    "anonymous": (99, "Anonymous"),
    "operator": (2, "Admin"),
}
#: What each credential or key event did to its resource (API Activity's activity_id).
_CHANGES = {
    "credential.create": (1, "Create"),
    "credential.revoke": (4, "Delete"),
    "key.generate": (1, "Create"),
    "key.rotate": (3, "Update"),
    "key.retire": (3, "Update"),
}
#: The members that every OCSF event of an audit event already carries elsewhere.
_OCSF_COMMON = frozenset(
    {"schema", "event_id", "time", "type", "outcome", "reason", "message", "seq"}
)


def to_ocsf(events: Iterable[Event]) -> Iterator[str]:
    """OCSF 1.8.0 events, one JSON object per line; see the module's docstring."""
    for event in events:
        for record in _ocsf_records(event):
            yield _JSON.encode(record) + "\n"


def _ocsf_records(event: Event) -> list[dict[str, Any]]:
    change = _CHANGES.get(str(event.get("type")))
    if change is not None:
        return [_ocsf_change(event, change)]
    if event.get("type") != "token.issue":
        return [_ocsf_system(event)]
    actor, client, request, decision, token = (
        _member(event, name) for name in ("actor", "client", "request", "decision", "token")
    )
    authenticated = actor.get("kind") is not None
    reason = event.get("reason")
    user = _ocsf_user(actor)
    app = _obj(app_name=client.get("client_id"))
    common: dict[str, Any] = {
        "src_endpoint": _client_endpoint(client.get("ip")),
        "dst_endpoint": _authsvc_endpoint(event),
        "http_request": _obj(user_agent=client.get("user_agent")),
        "message": event.get("message"),
    }
    session = _obj(uid=token.get("jti"), expiration_time=_ms(token.get("exp")))
    protocol_id, protocol = _auth_protocol(actor.get("credential"), request.get("grant_type"))
    records = [
        _ocsf_record(
            event, _AUTHENTICATION, _LOGON,
            _SUCCESS if authenticated else _FAILURE,
            _INFORMATIONAL if authenticated else _MEDIUM,
            **common,
            user=user,
            actor=app,
            service=_obj(name=request.get("service")),
            session=session,
            auth_protocol_id=protocol_id,
            auth_protocol=protocol,
            logon_type_id=_NETWORK_LOGON[0],
            logon_type=_NETWORK_LOGON[1],
            is_remote=True,
            status_code=None if authenticated else reason,
            status_detail=None if authenticated else reason,
            unmapped=_obj(
                kind=actor.get("kind"),
                provider=actor.get("provider"),
                credential=actor.get("credential"),
                reuse=actor.get("reuse"),
                claims=actor.get("claims"),
                grant_type=request.get("grant_type"),
                offline=request.get("offline"),
                requested=_words(request.get("scopes")) or None,
                writer=event.get("writer"),
            ),
        )
    ]
    decided = {
        "service": request.get("service"),
        "rules": decision.get("rules") or None,
        "policy": decision.get("policy"),
        "writer": event.get("writer"),
    }
    granted = _words(decision.get("granted"))
    if granted:
        records.append(_ocsf_record(
            event, _AUTHORIZE_SESSION, _ASSIGN_PRIVILEGES, _SUCCESS, _INFORMATIONAL,
            **common,
            user=user,
            actor=app,
            privileges=granted,
            session=session,
            unmapped=_obj(**decided, kid=token.get("kid")),
        ))
    if authenticated and event.get("outcome") != "success":
        operation = str(event.get("type"))
        records.append(_ocsf_record(
            event, _API_ACTIVITY, (_OTHER, operation), _FAILURE, _LOW,
            **common,
            actor={**(app or {}), "user": user},
            api=_obj(operation=operation, service=_obj(name=request.get("service"))),
            resources=[_ocsf_resource(s) for s in _words(decision.get("denied"))] or None,
            status_code=reason,
            status_detail=reason,
            unmapped=_obj(**decided),
        ))
    return records


def _ocsf_system(event: Event) -> dict[str, Any]:
    """An event about authsvc itself (configuration, audit checkpoints, ...)."""
    operation = str(event.get("type") or "unknown")
    status = _status(event)
    return _ocsf_record(
        event, _API_ACTIVITY, (_OTHER, operation), status,
        _MEDIUM if status == _FAILURE else _INFORMATIONAL,
        actor={"app_name": _PRODUCT},
        api={"operation": operation, "service": {"name": _PRODUCT}},
        src_endpoint=_authsvc_endpoint(event),
        status_code=event.get("reason"),
        message=event.get("message"),
        unmapped={k: v for k, v in event.items() if k not in _OCSF_COMMON} or None,
    )


def _ocsf_change(event: Event, activity: tuple[int, str]) -> dict[str, Any]:
    """A session credential or signing key created, revoked or changed: by a user, by an
    operator, or by authsvc itself when the event names no actor."""
    actor, client, credential = (_member(event, n) for n in ("actor", "client", "credential"))
    resources = [
        _changed(f"{credential.get('type')} credential", credential),
        _changed("signing key", _member(event, "key")),
        _changed("signing key", _member(event, "previous")),
    ]
    status = _status(event)
    address = client.get("ip")
    return _ocsf_record(
        event, _API_ACTIVITY, activity, status,
        _MEDIUM if status == _FAILURE else _INFORMATIONAL,
        actor=_obj(user=_ocsf_user(actor) if actor else None,
                   app_name=client.get("client_id") or (None if actor else _PRODUCT)),
        api={"operation": str(event.get("type")), "service": {"name": _PRODUCT}},
        src_endpoint=_client_endpoint(address) if address else _authsvc_endpoint(event),
        resources=[r for r in resources if r is not None] or None,
        status_code=event.get("reason"),
        status_detail=event.get("reason") if status == _FAILURE else None,
        message=event.get("message"),
        unmapped={k: v for k, v in event.items()
                  if k not in _OCSF_COMMON and k not in ("credential", "key", "previous")}
        or None,
    )


def _changed(kind: str, member: Mapping[str, Any]) -> dict[str, Any] | None:
    """The resource a credential or key event is about: its id, the rest as data."""
    if not member:
        return None
    rest = {k: v for k, v in member.items() if k not in ("id", "type")}
    return _obj(type=kind, uid=member.get("id"), data=_obj(**rest))


def _status(event: Event) -> int:
    outcome = event.get("outcome")
    return _SUCCESS if outcome == "success" else _FAILURE if outcome == "failure" else _UNKNOWN


def _ocsf_record(
    event: Event,
    cls: _OcsfClass,
    activity: tuple[int, str],
    status_id: int,
    severity_id: int,
    **members: Any,
) -> dict[str, Any]:
    """The base event's attributes, then the class's (those that are not None)."""
    activity_id, activity_name = activity
    event_id = event.get("event_id")
    record: dict[str, Any] = {
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": cls.category_uid,
        "category_name": cls.category_name,
        "class_uid": cls.uid,
        "class_name": cls.name,
        "type_uid": cls.uid * 100 + activity_id,
        "type_name": f"{cls.name}: {activity_name}",
        "severity_id": severity_id,
        "severity": _SEVERITY[severity_id],
        "status_id": status_id,
        "status": _STATUS[status_id],
        "time": _time(event),
        "timezone_offset": 0,
        "metadata": _obj(
            version=OCSF_VERSION,
            product={"name": _PRODUCT, "vendor_name": _PRODUCT},
            uid=f"{event_id}:{cls.uid}" if event_id else None,
            correlation_uid=event_id,
            original_event_uid=event_id,
            event_code=event.get("type"),
            sequence=event.get("seq"),
        ),
    }
    record.update((name, value) for name, value in members.items() if value is not None)
    return record


def _ocsf_user(actor: Mapping[str, Any]) -> dict[str, Any]:
    """The user object; OCSF requires one of account, name and uid, so a caller whose
    credential named nobody is ``anonymous`` (no credential) or ``unknown``."""
    kind = actor.get("kind") or ("anonymous" if actor.get("credential") == "none" else None)
    type_id, type_name = _USER_TYPES.get(kind, (99, kind)) if kind else (None, None)
    name, uid = _user_name_and_id(actor)
    if not name and not uid:
        name = "anonymous" if kind == "anonymous" else "unknown"
    user = {"name": name, "uid": uid, "type_id": type_id, "type": type_name,
            "credential_uid": actor.get("fingerprint")}
    return {member: value for member, value in user.items() if value}


def _user_name_and_id(actor: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The user's name and id: an operator's login name and numeric uid, else the
    account (or the user name given) and the subject."""
    if actor.get("kind") == "operator":
        uid = actor.get("uid")
        return actor.get("subject") or None, None if uid is None else str(uid)
    return actor.get("account") or actor.get("username"), actor.get("subject") or None


def _auth_protocol(credential: object, grant_type: object) -> tuple[int | None, str | None]:
    """OAuth 2.0 for a POST with a grant type; Basic for a GET with Basic credentials."""
    if grant_type:
        return _OAUTH2
    if credential in ("password", "refresh_token"):
        return _BASIC
    return None, None


def _ocsf_resource(scope: str) -> dict[str, Any]:
    try:
        parsed = parse_scope(scope)
    except InvalidScope:
        return {"name": scope}
    kind = scope.partition(":")[0]  # the type, with its (class) if any
    return {"type": kind, "name": parsed.name, "data": {"actions": list(parsed.actions)}}


def _client_endpoint(address: object) -> dict[str, Any]:
    """Where the request came from. An address that is not an IP (a proxy may forward
    anything) goes in ``name``, since ``ip`` must hold an IP address."""
    if not isinstance(address, str) or not address:
        return {"name": "unknown"}
    return {"ip": address} if _is_ip(address) else {"name": address}


def _authsvc_endpoint(event: Event) -> dict[str, Any]:
    """authsvc itself: the host of the process that wrote the event (``host:pid:nonce``)."""
    host = str(event.get("writer") or "").partition(":")[0]
    return {"name": _PRODUCT, "hostname": host} if host else {"name": _PRODUCT}


# -- ECS ------------------------------------------------------------------------------

ECS_VERSION: Final = "8.17.0"
#: event.category and event.type by audit event type (others: type info, no category).
_ECS_CATEGORIES = {
    "token.issue": (["authentication"], ["start"]),
    "config.load": (["configuration"], ["info"]),
    "config.reload": (["configuration"], ["change"]),
    "credential.create": (["iam"], ["creation"]),
    "credential.revoke": (["iam"], ["deletion"]),
    "key.generate": (["configuration"], ["creation"]),
    "key.rotate": (["configuration"], ["change"]),
    "key.retire": (["configuration"], ["change"]),
}
_ECS_OUTCOMES = {"success": "success", "partial": "success", "failure": "failure"}


def to_ecs(events: Iterable[Event]) -> Iterator[str]:
    """Elastic Common Schema documents, one JSON object per line."""
    for event in events:
        yield _JSON.encode(_ecs_document(event)) + "\n"


def _ecs_document(event: Event) -> dict[str, Any]:
    actor, client, request = (_member(event, name) for name in ("actor", "client", "request"))
    kind = event.get("type")
    category, types = _ECS_CATEGORIES.get(str(kind), (None, ["info"]))
    user_name, user_id = _user_name_and_id(actor)
    address = client.get("ip")
    document = {
        "@timestamp": _iso(_time(event)),
        "ecs": {"version": ECS_VERSION},
        "message": event.get("message"),
        "event": _obj(
            kind="event",
            category=category,
            type=types,
            action=kind,
            outcome=_ECS_OUTCOMES.get(str(event.get("outcome")), "unknown"),
            reason=event.get("reason"),
            id=event.get("event_id"),
            dataset="authsvc.audit",
            sequence=event.get("seq"),
        ),
        "user": _obj(name=user_name, id=user_id),
        "source": _obj(
            address=address, ip=address if isinstance(address, str) and _is_ip(address) else None
        ),
        "user_agent": _obj(original=client.get("user_agent")),
        "service": _obj(name=_PRODUCT, target=_obj(name=request.get("service"))),
        "authsvc": event,
    }
    return {name: value for name, value in document.items() if value is not None}


# -- shared ---------------------------------------------------------------------------

FORMATS: Final[Mapping[str, Encoder]] = {
    "jsonl": to_jsonl,
    "csv": to_csv,
    "ocsf": to_ocsf,
    "ecs": to_ecs,
}


def _member(event: Event, name: str) -> Mapping[str, Any]:
    """A member object of the event; {} when it is absent or null."""
    value = event.get(name)
    return value if isinstance(value, Mapping) else {}


def _words(values: object) -> list[str]:
    """The words of a list of scopes or rule ids (a scope parameter may hold several)."""
    if not isinstance(values, list | tuple):
        return []
    return [word for value in values for word in str(value).split(" ") if word]


def _obj(**members: Any) -> dict[str, Any] | None:
    """An object of the members that hold a value; None when none does."""
    kept = {name: value for name, value in members.items() if value is not None and value != ""}
    return kept or None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _time(event: Event) -> int:
    when = event.get("time")
    if not _is_int(when):
        raise ValueError(f"audit event {event.get('event_id')!r} has no integer 'time' (ms)")
    return when


def _ms(seconds: object) -> int | None:
    return seconds * 1000 if _is_int(seconds) else None


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
