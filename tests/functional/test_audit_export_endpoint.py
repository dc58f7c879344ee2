"""``GET /audit/export`` through the real app and the real audit pipeline: the file sink
(``audit: {}``) and the store's stream (``audit.sink: redis`` on the memory store)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authsvc.app import Dependencies, create_app
from authsvc.audit.formats import FORMATS
from authsvc.audit.verify import public_keys, read_jsonl, verify_events
from authsvc.config import Settings, parse_settings
from authsvc.store.memory import MemoryStore
from authsvc.store.redis import RedisStore
from authsvc.tokens import KeyRing
from tests.conftest import PASSWORDS, SERVICE, Clock, base_config, basic

ADMIN = basic("admin", PASSWORDS["admin"])
ALICE = basic("alice", PASSWORDS["alice"])
START = 1_800_000_000  # the Clock's first second


def settings_for(tmp_path: Path, keys_dir: Path, audit: dict[str, Any]) -> Settings:
    data = {**base_config(keys_dir), "admin": {"accounts": ["admin"]}, "audit": audit}
    return parse_settings(data, base_dir=tmp_path, environ={})


def drive(client: FlaskClient, clock: Clock) -> None:
    """Four decisions, a minute apart: success, partial, and two failures."""
    client.get(f"/token?service={SERVICE}&scope=repository:team/app:pull", headers=ALICE)
    clock.advance(60)
    client.get(f"/token?service={SERVICE}&scope=repository:team/prod/x:pull,delete", headers=ALICE)
    clock.advance(60)
    client.get(f"/token?service={SERVICE}", headers=basic("alice", "wrong"))
    clock.advance(60)
    client.get("/token?service=nope")


@pytest.fixture(params=["file", "redis"])
def sink(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(tmp_path: Path, keys_dir: Path, sink: str) -> FlaskClient:
    """An app with the given audit sink over a memory store, four decisions recorded."""
    audit = {} if sink == "file" else {"sink": "redis"}
    clock = Clock(float(START))
    app = create_app(
        settings_for(tmp_path, keys_dir, audit),
        deps=Dependencies(store=MemoryStore(), clock=clock, cache_clock=clock),
    )
    app.testing = True
    c = app.test_client()
    drive(c, clock)
    return c


def export(client: FlaskClient, auth: dict[str, str] | None = ADMIN, **query: str) -> TestResponse:
    return client.get("/audit/export", query_string=query, headers=auth or {})


def jsonl(response: TestResponse) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def decisions(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["outcome"], e["reason"]) for e in events if e["type"] == "token.issue"]


def test_jsonl_is_the_whole_trail_and_verifies(
    client: FlaskClient, sink: str, tmp_path: Path, keys_dir: Path
) -> None:
    response = export(client)
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.is_streamed and "Content-Length" not in response.headers
    events = jsonl(response)
    assert decisions(events) == [
        ("success", "GRANTED"),
        ("partial", "SCOPE_DENIED"),
        ("failure", "INVALID_CREDENTIALS"),
        ("failure", "UNKNOWN_SERVICE"),
    ]
    assert events[0]["type"] == "config.load"
    report = verify_events(events, keys=public_keys(KeyRing.load(keys_dir)))
    assert report.ok, report.first_problem
    if sink == "file":  # verbatim: the very events the sink wrote
        assert events == list(read_jsonl(tmp_path / "audit" / "audit.jsonl"))
    assert export(client, format="jsonl").get_data() == response.get_data()


def test_streams_one_chunk_per_line(client: FlaskClient) -> None:
    response = export(client, format="csv")
    chunks = list(response.iter_encoded())
    assert len(chunks) > 5
    assert all(chunk.endswith(b"\r\n") for chunk in chunks)


def test_csv_with_filters(client: FlaskClient) -> None:
    response = export(client, format="csv", outcome="failure")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["reason"] for r in rows] == ["INVALID_CREDENTIALS", "UNKNOWN_SERVICE"]

    rows = list(csv.DictReader(io.StringIO(
        export(client, format="csv", actor="alice", repository="team/prod/x").get_data(
            as_text=True
        )
    )))
    assert [(r["outcome"], r["reason"], r["actor_account"]) for r in rows] == [
        ("partial", "SCOPE_DENIED", "alice")
    ]


def test_ocsf_and_ecs(client: FlaskClient) -> None:
    ocsf = jsonl(export(client, format="ocsf", repository="team/app"))
    assert {e["class_uid"] for e in ocsf} == {3002, 3003}
    assert all(e["metadata"]["version"] == "1.8.0" for e in ocsf)
    everything = jsonl(export(client, format="ocsf"))
    assert {e["class_uid"] for e in everything} >= {3002, 3003, 6003}
    ecs = export(client, format="ecs", outcome="success", actor="alice")
    assert ecs.mimetype == "application/x-ndjson"
    documents = jsonl(ecs)
    assert [d["event"]["reason"] for d in documents] == ["GRANTED"]


def test_the_same_bytes_as_the_encoders(client: FlaskClient) -> None:
    events = jsonl(export(client))
    for fmt, encode in FORMATS.items():
        assert export(client, format=fmt).get_data(as_text=True) == "".join(encode(events)), fmt


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"since": str(START + 60)}, [("partial", "SCOPE_DENIED"),
                                      ("failure", "INVALID_CREDENTIALS"),
                                      ("failure", "UNKNOWN_SERVICE")]),
        ({"until": str(START + 60)}, [("success", "GRANTED")]),
        ({"since": "2027-01-15T08:01:00Z", "until": "2027-01-15T08:03:00"},
         [("partial", "SCOPE_DENIED"), ("failure", "INVALID_CREDENTIALS")]),
        ({"since": "2027-01-15T09:01:00+01:00", "until": str(START + 120)},
         [("partial", "SCOPE_DENIED")]),
        ({"until": "1"}, []),
    ],
    ids=["since-epoch", "until-epoch", "iso-utc", "iso-zone", "nothing"],
)
def test_time_filters(
    client: FlaskClient, query: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    response = client.get("/audit/export", query_string=query, headers=ADMIN)
    assert response.status_code == 200
    assert decisions(jsonl(response)) == expected


def test_events_recorded_after_an_export_are_in_the_next(client: FlaskClient) -> None:
    before = len(jsonl(export(client, outcome="success")))
    client.get(f"/token?service={SERVICE}&scope=repository:team/app:pull", headers=ALICE)
    assert len(jsonl(export(client, outcome="success"))) == before + 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"format": "xml"}, "'format' must be one of jsonl, csv, ocsf, ecs, not 'xml'"),
        ({"outcome": "maybe"}, "'outcome' must be one of success, partial, failure, not 'maybe'"),
        ({"since": "yesterday"}, "'since': 'yesterday' is neither ISO 8601 nor seconds"),
        ({"until": "2027-13-01"}, "'until': '2027-13-01' is neither ISO 8601"),
        ({"limit": "10", "page": "2"}, "unknown parameters limit, page (use format, since"),
        ({"actor": ""}, "'actor' must not be empty"),
    ],
    ids=["format", "outcome", "since", "until", "unknown", "empty"],
)
def test_bad_request(client: FlaskClient, query: dict[str, str], message: str) -> None:
    response = client.get("/audit/export", query_string=query, headers=ADMIN)
    assert response.status_code == 400
    assert response.headers["Cache-Control"] == "no-store"
    error = response.get_json()["errors"][0]
    assert error["code"] == "BAD_REQUEST"
    assert message in error["message"]


def test_a_parameter_twice(client: FlaskClient) -> None:
    response = client.get(
        "/audit/export?outcome=success&outcome=failure", headers=ADMIN
    )
    assert response.status_code == 400
    assert "'outcome' is given more than once" in response.get_json()["errors"][0]["message"]
    same = client.get("/audit/export?outcome=failure&outcome=failure", headers=ADMIN)
    assert same.status_code == 200


@pytest.mark.parametrize(
    "auth",
    [None, basic("admin", "wrong"), basic("nobody", "pw"), basic("<token>", "asr_" + "A" * 43)],
    ids=["no-credential", "wrong-password", "unknown-user", "refresh-token"],
)
def test_unauthorized(client: FlaskClient, auth: dict[str, str] | None) -> None:
    response = export(client, auth=auth, format="xml")  # the caller is checked first
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    assert response.get_json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_forbidden_to_a_user_not_listed_as_admin(client: FlaskClient) -> None:
    response = export(client, auth=ALICE)
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert response.get_json()["errors"][0] == {
        "code": "DENIED",
        "message": "'alice' is not listed in admin.accounts",
    }


def test_malformed_authorization(client: FlaskClient) -> None:
    response = export(client, auth={"Authorization": "Bearer abc"})
    assert response.status_code == 400
    assert "unsupported Authorization scheme" in response.get_json()["errors"][0]["message"]


def test_a_store_that_does_not_answer_is_a_503(tmp_path: Path, keys_dir: Path) -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="authsvc-test:")
    app = create_app(
        settings_for(tmp_path, keys_dir, {"sink": "redis"}), deps=Dependencies(store=store)
    )
    response = export(app.test_client())
    assert response.status_code == 503
    assert response.get_json()["errors"][0]["code"] == "UNAVAILABLE"


def test_an_empty_file_trail(tmp_path: Path, keys_dir: Path) -> None:
    from authsvc.audit import MemoryAuditLog

    app = create_app(
        settings_for(tmp_path, keys_dir, {}),
        deps=Dependencies(store=MemoryStore(), audit=MemoryAuditLog()),
    )
    for fmt in ("jsonl", "ocsf", "ecs"):
        response = export(app.test_client(), format=fmt)
        assert (response.status_code, response.get_data()) == (200, b"")
    header = export(app.test_client(), format="csv").get_data(as_text=True)
    assert header.startswith("event_id,time,") and header.count("\r\n") == 1
