"""The token endpoint through Flask's test client: protocol shape and every refusal."""

from __future__ import annotations

import datetime as dt
import io
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsvc.tokens import KeyRing
from tests.conftest import PASSWORDS, SERVICE, Harness, MakeHarness, MakeSettings, basic

ALICE = basic("alice", PASSWORDS["alice"])


def claims(token: str, keyring: KeyRing) -> dict[str, Any]:
    key = keyring.signing_key
    public = key.certificate.public_key()
    assert isinstance(public, EllipticCurvePublicKey | RSAPublicKey)
    decoded: dict[str, Any] = jwt.decode(
        token,
        public,
        algorithms=[key.algorithm],
        audience=SERVICE,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    return decoded


def get(h: Harness, query: str, headers: dict[str, str] | None = None) -> Any:
    return h.client.get("/token?" + query, headers=headers or {})


def post(h: Harness, **form: str) -> Any:
    return h.client.post("/token", data=form)


# -- success shapes ---------------------------------------------------------------------


def test_user_gets_a_scoped_token(harness: Harness, keyring: KeyRing) -> None:
    r = get(harness, f"service={SERVICE}&scope=repository:team/app:pull,push&account=alice", ALICE)
    assert r.status_code == 200
    body = r.get_json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert dt.datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert "refresh_token" not in body
    assert r.headers["Cache-Control"] == "no-store"
    c = claims(body["token"], keyring)
    assert c["sub"] == "alice"
    assert c["aud"] == SERVICE
    assert c["iss"] == "authsvc-test"
    assert c["exp"] - c["iat"] == 300
    assert c["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]
    header = jwt.get_unverified_header(body["token"])
    assert header["kid"] == keyring.signing_key.libtrust_kid
    assert header["x5c"] == keyring.signing_key.x5c


def test_login_without_scope_gets_empty_access(harness: Harness, keyring: KeyRing) -> None:
    r = get(harness, f"service={SERVICE}&account=alice", ALICE)
    assert r.status_code == 200
    assert claims(r.get_json()["token"], keyring)["access"] == []


def test_partial_grant_is_not_an_error(harness: Harness, keyring: KeyRing) -> None:
    r = get(
        harness,
        f"service={SERVICE}&scope=repository:team/prod/app:pull,delete"
        "&scope=repository:elsewhere/x:pull",
        ALICE,
    )
    assert r.status_code == 200
    assert claims(r.get_json()["token"], keyring)["access"] == [
        {"type": "repository", "name": "team/prod/app", "actions": ["pull"]}
    ]
    event = harness.audit.events[-1]
    assert event["outcome"] == "partial"
    assert event["reason"] == "SCOPE_DENIED"
    assert event["decision"]["denied"] == [
        "repository:team/prod/app:delete",
        "repository:elsewhere/x:pull",
    ]


def test_anonymous_pull_only_where_a_rule_allows(harness: Harness, keyring: KeyRing) -> None:
    r = get(
        harness,
        f"service={SERVICE}&scope=repository:public/base:pull&scope=repository:team/app:pull",
    )
    assert r.status_code == 200
    c = claims(r.get_json()["token"], keyring)
    assert c["access"] == [{"type": "repository", "name": "public/base", "actions": ["pull"]}]
    assert c["sub"] == ""


def test_catalog_only_for_admin(harness: Harness, keyring: KeyRing) -> None:
    admin = basic("admin", PASSWORDS["admin"])
    r = get(harness, f"service={SERVICE}&scope=registry:catalog:*", admin)
    assert claims(r.get_json()["token"], keyring)["access"] == [
        {"type": "registry", "name": "catalog", "actions": ["*"]}
    ]
    r = get(harness, f"service={SERVICE}&scope=registry:catalog:*", ALICE)
    assert claims(r.get_json()["token"], keyring)["access"] == []


def test_plugin_class_goes_in_its_own_claim(harness: Harness, keyring: KeyRing) -> None:
    r = get(harness, f"service={SERVICE}&scope=repository(plugin):team/p:pull", ALICE)
    assert claims(r.get_json()["token"], keyring)["access"] == [
        {"type": "repository", "class": "plugin", "name": "team/p", "actions": ["pull"]}
    ]


def test_post_password_grant_with_charset_and_space_separated_scopes(
    harness: Harness, keyring: KeyRing
) -> None:
    r = harness.client.post(
        "/token",
        data=(
            "grant_type=password&username=alice&password=alice-secret&client_id=containerd"
            f"&service={SERVICE}&scope=repository%3Ateam%2Fa%3Apull+repository%3Ateam%2Fb%3Apush"
        ),
        content_type="application/x-www-form-urlencoded; charset=utf-8",
    )
    assert r.status_code == 200
    body = r.get_json()
    assert body["scope"] == "repository:team/a:pull repository:team/b:push"
    assert "refresh_token" not in body
    assert len(claims(body["token"], keyring)["access"]) == 2


def test_post_reads_a_body_without_content_length(harness: Harness) -> None:
    body = (
        f"grant_type=password&username=alice&password=alice-secret&client_id=x&service={SERVICE}"
    ).encode()
    r = harness.client.post(
        "/token",
        input_stream=io.BytesIO(body),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Transfer-Encoding": "chunked",
        },
        # what gunicorn sets once it has de-chunked the body (test_serve.py sends real chunks)
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert r.status_code == 200, r.get_json()


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "status", "code", "message"),
    [
        ("scope=repository:a:pull", {}, 400, "BAD_REQUEST", "'service' parameter is required"),
        ("service=evil.example", {}, 400, "UNKNOWN_SERVICE", "unknown service 'evil.example'"),
        (
            f"service={SERVICE}&scope=repository:A:pull",
            {},
            400,
            "INVALID_SCOPE",
            "'A' is not a valid repository name",
        ),
        (f"service={SERVICE}&scope=garbage", {}, 400, "INVALID_SCOPE", "not of the form"),
        (f"service={SERVICE}", {"Authorization": "Basic !!!"}, 400, "BAD_REQUEST", "not base64"),
        (
            f"service={SERVICE}",
            {"Authorization": "Basic YWxpY2U="},
            400,
            "BAD_REQUEST",
            "no ':' between user name and password",
        ),
        (f"service={SERVICE}", {"Authorization": "Basic /w=="}, 400, "BAD_REQUEST", "not UTF-8"),
        (
            f"service={SERVICE}",
            {"Authorization": "Basic OnB3"},
            400,
            "BAD_REQUEST",
            "empty user name",
        ),
        (
            f"service={SERVICE}",
            {"Authorization": "Bearer abc"},
            400,
            "BAD_REQUEST",
            "unsupported Authorization scheme 'Bearer'",
        ),
        (
            f"service={SERVICE}&service=other.test",
            {},
            400,
            "BAD_REQUEST",
            "'service' is given more than once",
        ),
        (
            f"service={SERVICE}&offline_token=maybe",
            {},
            400,
            "BAD_REQUEST",
            "'offline_token' must be true or false",
        ),
        (
            f"service={SERVICE}&scope=%ff",
            {},
            400,
            "BAD_REQUEST",
            "the query string is not valid UTF-8",
        ),
        (
            f"service={SERVICE}&account=bob",
            ALICE,
            400,
            "BAD_REQUEST",
            "account 'bob' does not match",
        ),
        (
            f"service={SERVICE}",
            basic("alice", "wrong"),
            401,
            "UNAUTHORIZED",
            "invalid username or password",
        ),
        (
            f"service={SERVICE}",
            basic("nobody", "x"),
            401,
            "UNAUTHORIZED",
            "invalid username or password",
        ),
        (
            f"service={SERVICE}",
            basic("<token>", "asr_bogus"),
            401,
            "UNAUTHORIZED",
            "not a refresh token issued by this service",
        ),
    ],
)
def test_get_refusals_name_the_problem(
    harness: Harness, query: str, headers: dict[str, str], status: int, code: str, message: str
) -> None:
    r = get(harness, query, headers)
    assert r.status_code == status
    error = r.get_json()["errors"][0]
    assert error["code"] == code
    assert message in error["message"]
    if status == 401:
        assert r.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    event = harness.audit.events[-1] if harness.audit.events else None
    if event is not None and status != 400:
        assert event["outcome"] == "failure"


@pytest.mark.parametrize(
    ("form", "status", "error", "message"),
    [
        (
            {
                "grant_type": "password",
                "username": "alice",
                "password": "nope",
                "client_id": "c",
                "service": SERVICE,
            },
            401,
            "invalid_grant",
            "invalid username or password",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "c", "service": SERVICE},
            400,
            "unsupported_grant_type",
            "unsupported grant_type 'client_credentials'",
        ),
        (
            {"client_id": "c", "service": SERVICE},
            400,
            "invalid_request",
            "'grant_type' is required",
        ),
        (
            {
                "grant_type": "password",
                "username": "alice",
                "password": "alice-secret",
                "service": SERVICE,
            },
            400,
            "invalid_request",
            "'client_id' is required",
        ),
        (
            {"grant_type": "password", "username": "alice", "client_id": "c", "service": SERVICE},
            400,
            "invalid_request",
            "needs 'username' and 'password'",
        ),
        (
            {"grant_type": "refresh_token", "client_id": "c", "service": SERVICE},
            400,
            "invalid_request",
            "needs 'refresh_token'",
        ),
        (
            {
                "grant_type": "refresh_token",
                "refresh_token": "asr_" + "A" * 43,
                "client_id": "c",
                "service": SERVICE,
            },
            401,
            "invalid_grant",
            "unknown, expired or revoked",
        ),
        (
            {
                "grant_type": "password",
                "username": "alice",
                "password": "alice-secret",
                "client_id": "c",
                "service": SERVICE,
                "access_type": "forever",
            },
            400,
            "invalid_request",
            "access_type must be offline or online",
        ),
        (
            {
                "grant_type": "password",
                "username": "alice",
                "password": "alice-secret",
                "client_id": "c",
                "service": "nope",
            },
            400,
            "invalid_request",
            "unknown service 'nope'",
        ),
    ],
)
def test_post_refusals_are_oauth_errors_and_never_403(
    harness: Harness, form: dict[str, str], status: int, error: str, message: str
) -> None:
    r = post(harness, **form)
    assert r.status_code == status
    body = r.get_json()
    assert body["error"] == error
    assert message in body["error_description"]


def test_post_with_wrong_content_type_is_refused(harness: Harness) -> None:
    r = harness.client.post(
        "/token", data='{"grant_type": "password"}', content_type="application/json"
    )
    assert r.status_code == 400
    assert (
        "application/x-www-form-urlencoded form, not 'application/json'"
        in (r.get_json()["error_description"])
    )


def test_post_body_over_the_cap_is_413(harness: Harness) -> None:
    r = harness.client.post(
        "/token", data="a=" + "x" * 70_000, content_type="application/x-www-form-urlencoded"
    )
    assert r.status_code == 413
    assert "larger than 65536 bytes" in r.get_json()["error_description"]


def test_chunked_body_over_the_cap_is_413(harness: Harness) -> None:
    r = harness.client.post(
        "/token",
        input_stream=io.BytesIO(b"a=" + b"x" * 70_000),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Transfer-Encoding": "chunked",
        },
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert r.status_code == 413


def test_wrong_method_is_405_not_500(harness: Harness) -> None:
    r = harness.client.put("/token")
    assert r.status_code == 405


@settings(
    max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(query=st.binary(max_size=120), auth=st.binary(max_size=60))
def test_garbage_never_causes_a_500(harness: Harness, query: bytes, auth: bytes) -> None:
    header = "Basic " + auth.decode("latin-1").replace("\n", "").replace("\r", "")
    r = harness.client.get(
        "/token",
        headers={"Authorization": header},
        environ_overrides={"QUERY_STRING": query.decode("latin-1")},
    )
    assert r.status_code < 500


# -- the verified-credential cache ---------------------------------------------------------


def test_successful_check_is_cached_and_failures_are_not(harness: Harness) -> None:
    cache = harness.app.extensions["authsvc"].cache
    assert get(harness, f"service={SERVICE}", basic("alice", "wrong")).status_code == 401
    assert len(cache) == 0
    assert get(harness, f"service={SERVICE}", ALICE).status_code == 200
    assert len(cache) == 1
    assert get(harness, f"service={SERVICE}", ALICE).status_code == 200
    assert len(cache) == 1


def test_changed_password_takes_effect_at_once(
    make_harness: MakeHarness, make_settings: MakeSettings
) -> None:
    from authsvc.identity.static import hash_password

    h = make_harness()
    assert get(h, f"service={SERVICE}", ALICE).status_code == 200  # now cached
    settings = make_settings()
    users = dict(settings.identities.static.users)
    users["alice"] = users["alice"].model_copy(
        update={"password_hash": hash_password("new-secret", cost=4)}
    )
    static = settings.identities.static.model_copy(update={"users": users})
    new = settings.model_copy(
        update={"identities": settings.identities.model_copy(update={"static": static})}
    )
    h.app.extensions["authsvc"].reload(new)
    r = get(h, f"service={SERVICE}", ALICE)
    assert r.status_code == 401
    assert get(h, f"service={SERVICE}", basic("alice", "new-secret")).status_code == 200


def test_cache_entry_expires(harness: Harness) -> None:
    cache = harness.app.extensions["authsvc"].cache
    assert get(harness, f"service={SERVICE}", ALICE).status_code == 200
    key = cache.key("static", "alice", PASSWORDS["alice"])
    assert cache.get(key) is not None
    harness.clock.advance(61)
    assert cache.get(key) is None


# -- refresh tokens (session credentials) ---------------------------------------------------


def login_offline(h: Harness) -> str:
    r = get(h, f"service={SERVICE}&offline_token=true&client_id=docker", ALICE)
    assert r.status_code == 200
    token: str = r.get_json()["refresh_token"]
    assert token.startswith("asr_")
    return token


def test_refresh_token_grant_works_repeatedly(harness: Harness, keyring: KeyRing) -> None:
    rt = login_offline(harness)
    for _ in range(3):
        r = post(
            harness,
            grant_type="refresh_token",
            refresh_token=rt,
            client_id="docker",
            service=SERVICE,
            scope="repository:team/app:pull,push",
        )
        assert r.status_code == 200
        body = r.get_json()
        assert body["scope"] == "repository:team/app:pull,push"
        assert claims(body["token"], keyring)["sub"] == "alice"
        assert "refresh_token" not in body


def test_refresh_token_as_basic_password(harness: Harness) -> None:
    rt = login_offline(harness)
    r = get(harness, f"service={SERVICE}&scope=repository:team/app:pull", basic("<token>", rt))
    assert r.status_code == 200
    r = get(harness, f"service={SERVICE}&offline_token=true", basic("<token>", rt))
    assert r.get_json()["refresh_token"] == rt  # never rotated


def test_anonymous_gets_no_refresh_token(harness: Harness) -> None:
    r = get(harness, f"service={SERVICE}&offline_token=true")
    assert r.status_code == 200
    assert "refresh_token" not in r.get_json()


def test_refresh_token_is_stored_hashed_with_the_identity(harness: Harness) -> None:
    rt = login_offline(harness)
    sessions = harness.app.extensions["authsvc"].service._sessions
    listed = sessions.list("static", "alice", now=int(harness.clock()))
    assert len(listed) == 1
    assert listed[0].client_id == "docker"
    assert rt not in listed[0].id
    assert listed[0].expires_at - listed[0].created == 30 * 86400


def test_refresh_token_expires(harness: Harness) -> None:
    rt = login_offline(harness)
    harness.clock.advance(30 * 86400 + 1)
    r = post(harness, grant_type="refresh_token", refresh_token=rt, client_id="d", service=SERVICE)
    assert r.status_code == 401
    assert "unknown, expired or revoked" in r.get_json()["error_description"]


def test_revoked_refresh_token_is_refused(harness: Harness) -> None:
    rt = login_offline(harness)
    assert harness.app.extensions["authsvc"].service._sessions.revoke(rt)
    r = post(harness, grant_type="refresh_token", refresh_token=rt, client_id="d", service=SERVICE)
    assert r.status_code == 401


def test_refresh_token_of_a_removed_user_is_refused(
    make_harness: MakeHarness, make_settings: MakeSettings
) -> None:
    h = make_harness()
    rt = login_offline(h)
    settings = make_settings()
    users = {k: v for k, v in settings.identities.static.users.items() if k != "alice"}
    static = settings.identities.static.model_copy(update={"users": users})
    h.app.extensions["authsvc"].reload(
        settings.model_copy(
            update={"identities": settings.identities.model_copy(update={"static": static})}
        )
    )
    r = post(h, grant_type="refresh_token", refresh_token=rt, client_id="d", service=SERVICE)
    assert r.status_code == 401
    assert "no longer exists" in r.get_json()["error_description"]
    assert h.audit.events[-1]["reason"] == "UNKNOWN_USER"


def test_refresh_token_carries_no_permissions(
    make_harness: MakeHarness, make_settings: MakeSettings, keyring: KeyRing
) -> None:
    h = make_harness()
    rt = login_offline(h)
    settings = make_settings()
    rules = tuple(r for r in settings.rules if r.id != "dev-team")
    h.app.extensions["authsvc"].reload(settings.model_copy(update={"rules": rules}))
    r = post(
        h,
        grant_type="refresh_token",
        refresh_token=rt,
        client_id="d",
        service=SERVICE,
        scope="repository:team/app:pull",
    )
    assert r.status_code == 200
    assert claims(r.get_json()["token"], keyring)["access"] == []


# -- audit ------------------------------------------------------------------------------


def test_one_audit_event_per_decision_and_no_secrets(harness: Harness) -> None:
    get(harness, f"service={SERVICE}&scope=repository:team/app:pull", ALICE)
    get(harness, f"service={SERVICE}", basic("alice", "wrong-password"))
    rt = login_offline(harness)
    config_load, *decisions = harness.audit.events
    assert config_load["type"] == "config.load"
    # The session credential an offline login creates is a decision of its own.
    assert [e["type"] for e in decisions] == [
        "token.issue", "token.issue", "credential.create", "token.issue"
    ]
    ok, bad, _, offline = decisions
    assert ok["outcome"] == "success"
    assert ok["decision"]["granted"] == ["repository:team/app:pull"]
    assert ok["decision"]["rules"] == ["dev-team"]
    assert ok["token"]["jti"]
    assert bad["outcome"] == "failure"
    assert bad["reason"] == "INVALID_CREDENTIALS"
    text = repr(harness.audit.events)
    assert "wrong-password" not in text
    assert PASSWORDS["alice"] not in text
    assert rt not in text
    assert offline["request"]["offline"] is True


class RefusingAudit:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def record(self, event: Any) -> None:
        self.seen.append(event["type"])
        raise OSError("disk full")


def test_no_token_and_no_session_without_an_audit_record(
    make_settings: MakeSettings,
) -> None:
    from authsvc.app import Dependencies, create_app
    from authsvc.store.memory import MemoryStore

    store = MemoryStore()
    audit = RefusingAudit()
    app = create_app(make_settings(), deps=Dependencies(store=store, audit=audit))
    r = app.test_client().get(f"/token?service={SERVICE}&offline_token=true", headers=ALICE)
    assert r.status_code == 503
    assert "audit log did not accept the decision" in r.get_json()["errors"][0]["message"]
    assert "token" not in r.get_json()
    assert audit.seen == ["config.load", "credential.create", "token.issue"]
    assert store.list_sessions("static:alice", now=int(time.time())) == []


def test_unknown_user_is_checked_at_the_users_bcrypt_cost(harness: Harness) -> None:
    """An unknown name must cost what a wrong password costs, or timing reveals accounts."""
    users = harness.app.extensions["authsvc"].service._users
    assert users._dummy_cost == 4  # every test user has cost 4


def test_reloads_are_audited_and_announced(
    make_harness: MakeHarness, make_settings: MakeSettings
) -> None:
    from authsvc.app import writer_id
    from authsvc.errors import ConfigError

    h = make_harness()
    runtime = h.app.extensions["authsvc"]
    first_policy = runtime.service.policy.digest
    assert h.store.configs() == {writer_id(): f"{first_policy}@{int(h.clock())}"}
    settings = make_settings()
    new = settings.model_copy(update={"rules": settings.rules[:1]})
    runtime.reload(new)
    loaded, reloaded = h.audit.events
    assert loaded["type"] == "config.load"
    assert reloaded["type"] == "config.reload"
    assert reloaded["config"]["policy"] == runtime.service.policy.digest != first_policy
    assert h.store.configs()[writer_id()].startswith(runtime.service.policy.digest)
    with pytest.raises(ConfigError):
        runtime.reload(new.model_copy(update={"storage": "redis://127.0.0.1:1/0"}))
    refused = h.audit.events[-1]
    assert (refused["type"], refused["outcome"]) == ("config.reload", "failure")
    assert refused["problems"] == ["storage: changing it needs a restart"]
    changed_audit = new.audit.model_copy(update={"on_failure": "spool"})
    with pytest.raises(ConfigError, match="audit: changing it needs a restart"):
        runtime.reload(new.model_copy(update={"audit": changed_audit}))
    get(h, f"service={SERVICE}&scope=repository:team/app:pull", ALICE)
    assert h.audit.events[-1]["decision"]["policy"] == runtime.service.policy.digest
