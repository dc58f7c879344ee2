"""``POST /policy/explain`` and ``authsvc policy explain``.

What the explanation says for rules that allow, deny and do not match; every refusal
of the endpoint and of the command with its status and reason; and the property the
feature stands on: explain and the token endpoint never disagree about what a token
for an identity carries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from authsvc.cli import main
from authsvc.config import Settings
from authsvc.scopes import parse_scope
from tests.conftest import (
    PASSWORDS,
    SERVICE,
    Harness,
    MakeHarness,
    MakeSettings,
    base_config,
    basic,
)

ADMIN = basic("admin", PASSWORDS["admin"])
URL = "/policy/explain"
JSON = "application/json"

#: (type, class, name, action): one granted action, whichever way it was learned.
Access = set[tuple[str, str | None, str, str]]


@pytest.fixture
def admin_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(admin={"accounts": ["admin"]})


@pytest.fixture
def h(make_harness: MakeHarness, admin_settings: Settings) -> Harness:
    return make_harness(admin_settings)


def post(
    h: Harness,
    body: object,
    *,
    headers: dict[str, str] | None = None,
    content_type: str = JSON,
) -> TestResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return h.client.post(
        URL, data=raw, content_type=content_type, headers=ADMIN if headers is None else headers
    )


def explained(h: Harness, body: dict[str, Any]) -> dict[str, Any]:
    r = post(h, body)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Cache-Control"] == "no-store"
    answer: dict[str, Any] = r.get_json()
    return answer


def actions_of(answer: dict[str, Any], scope: str) -> dict[str, dict[str, Any]]:
    """The per-action verdicts of one scope of the answer, by action."""
    [entry] = [s for s in answer["scopes"] if s["scope"] == scope]
    return {a["action"]: a for a in entry["actions"]}


def verdict(
    decision: str, allowed_by: list[str], denied_by: list[str], explanation: str
) -> dict[str, Any]:
    return {
        "decision": decision,
        "allowed_by": allowed_by,
        "denied_by": denied_by,
        "explanation": explanation,
    }


def without_action(action: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in action.items() if k != "action"}


def identity_body(user: str | None, config: Settings) -> dict[str, Any]:
    """The body fields naming ``user`` as the token endpoint would know it (None: anonymous)."""
    if user is None:
        return {"anonymous": True}
    configured = config.identities.static.users[user]
    return {"account": user, "groups": list(configured.groups), "kind": configured.kind}


# -- what the explanation says ------------------------------------------------------------


def test_a_rule_that_allows(h: Harness) -> None:
    answer = explained(
        h, {"account": "alice", "groups": ["dev"], "scopes": ["repository:team/app:push,pull"]}
    )
    assert answer["identity"] == {
        "account": "alice",
        "kind": "human",
        "provider": "static",
        "groups": ["dev"],
        "claims": {},
    }
    assert answer["matched_rules"] == ["dev-team"]
    assert answer["policy"] == h.app.extensions["authsvc"].service.policy.digest
    actions = actions_of(answer, "repository:team/app:pull,push")
    assert list(actions) == ["pull", "push"]  # in canonical order
    for action in ("pull", "push"):
        assert without_action(actions[action]) == verdict(
            "granted", ["dev-team"], [], "granted by dev-team"
        )
    assert answer["granted"] == ["repository:team/app:pull,push"]


def test_a_rule_that_denies(h: Harness) -> None:
    answer = explained(
        h,
        {"account": "alice", "groups": ["dev"], "scopes": ["repository:team/prod/app:pull,delete"]},
    )
    actions = actions_of(answer, "repository:team/prod/app:pull,delete")
    assert without_action(actions["delete"]) == verdict(
        "denied", ["dev-team"], ["dev-team"], "denied by dev-team (allowed by dev-team)"
    )
    assert without_action(actions["pull"]) == verdict(
        "granted", ["dev-team"], [], "granted by dev-team"
    )
    assert answer["granted"] == ["repository:team/prod/app:pull"]


def test_nothing_matched(h: Harness) -> None:
    answer = explained(
        h,
        {
            "account": "bob",
            "groups": ["readers"],
            "scopes": ["repository:other/x:pull", "repository:team/app:push"],
        },
    )
    assert answer["matched_rules"] == ["readers"]
    nothing = verdict("denied", [], [], "no rule matched")
    assert without_action(actions_of(answer, "repository:other/x:pull")["pull"]) == nothing
    assert without_action(actions_of(answer, "repository:team/app:push")["push"]) == verdict(
        "denied", [], [], "not granted: readers cover this resource but do not allow 'push'"
    )
    assert answer["granted"] == []
    # an identity no rule matches at all
    answer = explained(h, {"account": "carol", "scopes": ["repository:team/app:pull"]})
    assert answer["matched_rules"] == []
    assert without_action(actions_of(answer, "repository:team/app:pull")["pull"]) == nothing


def test_every_action_partially_allowed(h: Harness) -> None:
    answer = explained(
        h, {"account": "bob", "groups": ["readers"], "scopes": ["repository:team/app:*"]}
    )
    assert without_action(actions_of(answer, "repository:team/app:*")["*"]) == verdict(
        "denied", ["readers"], [], "not granted: '*' needs every action allowed, and not all are"
    )
    assert answer["granted"] == []


def test_every_action_allowed_or_spoiled_by_a_deny(h: Harness) -> None:
    answer = explained(
        h,
        {
            "account": "alice",
            "groups": ["dev"],
            "scopes": ["repository:team/app:*", "repository:team/prod/app:*"],
        },
    )
    assert without_action(actions_of(answer, "repository:team/app:*")["*"]) == verdict(
        "granted", ["dev-team"], [], "granted by dev-team"
    )
    # delete is denied on team/prod/*, so "every action" is too
    assert without_action(actions_of(answer, "repository:team/prod/app:*")["*"]) == verdict(
        "denied", ["dev-team"], ["dev-team"], "denied by dev-team (allowed by dev-team)"
    )
    assert answer["granted"] == ["repository:team/app:*"]


def test_an_unknown_action(h: Harness) -> None:
    answer = explained(
        h,
        {"account": "alice", "groups": ["dev"], "scopes": ["repository:team/app:pull,frobnicate"]},
    )
    actions = actions_of(answer, "repository:team/app:pull,frobnicate")
    assert without_action(actions["frobnicate"]) == verdict(
        "denied", [], [], "not granted: 'frobnicate' is not an action any rule can grant"
    )
    assert actions["pull"]["decision"] == "granted"
    assert answer["granted"] == ["repository:team/app:pull"]


def test_the_catalog_and_a_robot(h: Harness) -> None:
    answer = explained(
        h,
        {
            "account": "admin",
            "kind": "robot",
            "scopes": ["registry:catalog:*", "repository:x/y:delete"],
        },
    )
    assert answer["identity"]["kind"] == "robot"
    assert answer["matched_rules"] == ["admin"]
    assert actions_of(answer, "registry:catalog:*")["*"]["explanation"] == "granted by admin"
    assert answer["granted"] == ["registry:catalog:*", "repository:x/y:delete"]


def test_anonymous(h: Harness) -> None:
    answer = explained(h, {"anonymous": True, "scopes": ["repository:public/base:pull,push"]})
    assert answer["identity"] == {
        "account": None,
        "kind": "anonymous",
        "provider": "anonymous",
        "groups": [],
        "claims": {},
    }
    assert answer["matched_rules"] == ["public"]
    actions = actions_of(answer, "repository:public/base:pull,push")
    assert actions["pull"]["explanation"] == "granted by public"
    assert actions["push"]["explanation"] == (
        "not granted: public cover this resource but do not allow 'push'"
    )
    assert answer["granted"] == ["repository:public/base:pull"]


def test_scopes_are_merged_as_on_the_token_endpoint(h: Harness) -> None:
    answer = explained(
        h,
        {
            "account": "alice",
            "groups": ["dev"],
            "scopes": [
                "repository:team/app:push repository:other/x:pull",
                "repository:team/app:pull",
            ],
        },
    )
    assert [s["scope"] for s in answer["scopes"]] == [
        "repository:team/app:pull,push",
        "repository:other/x:pull",
    ]


# -- refusals of the endpoint ---------------------------------------------------------------


SCOPES = ["repository:team/app:pull"]
OK_BODY = {"account": "alice", "scopes": SCOPES}


@pytest.mark.parametrize(
    ("headers", "status", "code", "message"),
    [
        pytest.param(
            {},
            401,
            "UNAUTHORIZED",
            "this endpoint needs an admin's user name and password",
            id="no-credential",
        ),
        pytest.param(
            basic("admin", "wrong"),
            401,
            "UNAUTHORIZED",
            "invalid username or password",
            id="wrong-password",
        ),
        pytest.param(
            basic("mallory", "pw"),
            401,
            "UNAUTHORIZED",
            "invalid username or password",
            id="unknown-user",
        ),
        pytest.param(
            basic("<token>", "asr_" + "A" * 43),
            401,
            "UNAUTHORIZED",
            "this endpoint needs an admin's user name and password",
            id="refresh-token-not-a-password",
        ),
        pytest.param(
            basic("alice", PASSWORDS["alice"]),
            403,
            "DENIED",
            "'alice' is not listed in admin.accounts",
            id="not-an-admin",
        ),
        pytest.param(
            {"Authorization": "Bearer abc"},
            400,
            "BAD_REQUEST",
            "unsupported Authorization scheme 'Bearer': use Basic",
            id="not-basic",
        ),
    ],
)
def test_refused_callers(
    h: Harness, headers: dict[str, str], status: int, code: str, message: str
) -> None:
    r = post(h, OK_BODY, headers=headers)
    assert r.status_code == status
    assert r.get_json() == {"errors": [{"code": code, "message": message}]}  # Docker shape
    assert r.headers["Cache-Control"] == "no-store"
    if status == 401:
        assert r.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    else:
        assert "WWW-Authenticate" not in r.headers


def test_the_caller_is_checked_before_the_body(h: Harness) -> None:
    assert post(h, b"not json", headers={}).status_code == 401
    assert post(h, b"not json", headers=basic("alice", PASSWORDS["alice"])).status_code == 403


def test_no_admin_configured_means_nobody_is_one(make_harness: MakeHarness) -> None:
    r = post(make_harness(), OK_BODY)
    assert r.status_code == 403
    assert r.get_json()["errors"][0]["message"] == "'admin' is not listed in admin.accounts"


@pytest.mark.parametrize(
    ("body", "content_type", "code", "message"),
    [
        pytest.param(
            OK_BODY,
            "text/plain",
            "BAD_REQUEST",
            "POST /policy/explain takes a JSON body (application/json)",
            id="not-json",
        ),
        pytest.param(
            b"account=alice&scopes=repository:a:pull",
            "application/x-www-form-urlencoded",
            "BAD_REQUEST",
            "POST /policy/explain takes a JSON body (application/json)",
            id="a-form",
        ),
        pytest.param(
            b'{"account": "alice",',
            JSON,
            "BAD_REQUEST",
            "the body is not valid JSON: ",
            id="invalid-json",
        ),
        pytest.param(b"", JSON, "BAD_REQUEST", "the body is not valid JSON: ", id="empty-body"),
        pytest.param(b'"\xff"', JSON, "BAD_REQUEST", "the body is not valid JSON: ", id="not-utf8"),
        pytest.param(
            ["repository:a:pull"],
            JSON,
            "BAD_REQUEST",
            "the body must be a JSON object",
            id="a-list",
        ),
        pytest.param(
            {**OK_BODY, "scope": "x", "service": "y"},
            JSON,
            "BAD_REQUEST",
            "unknown fields scope, service (use account, anonymous, claims, groups, "
            "kind, provider, scopes)",
            id="unknown-fields",
        ),
        pytest.param(
            {"account": "alice"},
            JSON,
            "BAD_REQUEST",
            "'scopes' must be a non-empty list of non-empty scope strings",
            id="no-scopes",
        ),
        pytest.param(
            {**OK_BODY, "scopes": []},
            JSON,
            "BAD_REQUEST",
            "'scopes' must be a non-empty list of non-empty scope strings",
            id="empty-scopes",
        ),
        pytest.param(
            {**OK_BODY, "scopes": "repository:a:pull"},
            JSON,
            "BAD_REQUEST",
            "'scopes' must be a JSON array",
            id="scopes-a-string",
        ),
        pytest.param(
            {**OK_BODY, "scopes": [1]},
            JSON,
            "BAD_REQUEST",
            "'scopes' must be a non-empty list of non-empty scope strings",
            id="scope-a-number",
        ),
        pytest.param(
            {**OK_BODY, "account": 1},
            JSON,
            "BAD_REQUEST",
            "'account' must be a JSON string",
            id="account-a-number",
        ),
        pytest.param(
            {**OK_BODY, "groups": "dev"},
            JSON,
            "BAD_REQUEST",
            "'groups' must be a JSON array",
            id="groups-a-string",
        ),
        pytest.param(
            {**OK_BODY, "groups": ["dev", 2]},
            JSON,
            "BAD_REQUEST",
            "'groups' must be a list of strings",
            id="group-a-number",
        ),
        pytest.param(
            {**OK_BODY, "claims": ["a"]},
            JSON,
            "BAD_REQUEST",
            "'claims' must be a JSON object",
            id="claims-a-list",
        ),
        pytest.param(
            {**OK_BODY, "anonymous": 1},
            JSON,
            "BAD_REQUEST",
            "'anonymous' must be a JSON boolean",
            id="anonymous-a-number",
        ),
        pytest.param(
            {**OK_BODY, "kind": "martian"},
            JSON,
            "BAD_REQUEST",
            "kind must be one of human, robot, ci, not 'martian'",
            id="unknown-kind",
        ),
        pytest.param(
            {"scopes": SCOPES},
            JSON,
            "BAD_REQUEST",
            "give an account (or ask for the anonymous identity)",
            id="no-account",
        ),
        pytest.param(
            {**OK_BODY, "anonymous": True},
            JSON,
            "BAD_REQUEST",
            "an anonymous identity has no account, groups, claims, kind or provider",
            id="anonymous-with-account",
        ),
        pytest.param(
            {**OK_BODY, "scopes": ["nonsense"]},
            JSON,
            "INVALID_SCOPE",
            "scope 'nonsense' is not of the form type:name:actions",
            id="malformed-scope",
        ),
        pytest.param(
            {**OK_BODY, "scopes": ["repository:Team/App:pull"]},
            JSON,
            "INVALID_SCOPE",
            "scope 'repository:Team/App:pull': 'Team/App' is not a valid repository name",
            id="uppercase-repository",
        ),
    ],
)
def test_malformed_bodies(
    h: Harness, body: object, content_type: str, code: str, message: str
) -> None:
    r = post(h, body, content_type=content_type)
    assert r.status_code == 400
    [error] = r.get_json()["errors"]
    assert error["code"] == code
    assert error["message"].startswith(message)
    assert r.headers["Cache-Control"] == "no-store"


def test_a_charset_parameter_is_accepted(h: Harness) -> None:
    r = post(h, OK_BODY, content_type=JSON + "; charset=utf-8")
    assert r.status_code == 200


def test_a_body_over_64_kib(h: Harness) -> None:
    body = json.dumps(OK_BODY).encode()
    assert post(h, body + b" " * (64 * 1024 - len(body))).status_code == 200  # at the cap
    r = post(h, body + b" " * (64 * 1024 - len(body) + 1))
    assert r.status_code == 413
    assert r.get_json() == {
        "errors": [{"code": "TOO_LARGE", "message": "the request body is larger than 65536 bytes"}]
    }


def test_other_methods_are_refused(h: Harness) -> None:
    for method in ("GET", "PUT", "DELETE"):
        r = h.client.open(URL, method=method, headers=ADMIN)
        assert r.status_code == 405, method
        assert set(r.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
        assert r.get_json()["errors"][0]["code"] == "METHOD_NOT_ALLOWED"


def test_explaining_issues_nothing_and_audits_nothing(h: Harness) -> None:
    before = list(h.audit.events)  # the configuration applied at start
    explained(h, {"account": "alice", "groups": ["dev"], "scopes": SCOPES})
    assert h.audit.events == before


# -- the token endpoint and explain never disagree --------------------------------------------


RESOURCES = (
    "repository:team/app",
    "repository:team/prod/app",
    "repository:team/prod/app/sub",
    "repository:public/base",
    "repository:other/x",
    "registry:catalog",
)
ACTIONS = ("pull", "push", "delete", "*", "frobnicate")
USERS = ("alice", "bob", "admin", None)

scope_strings = st.builds(
    lambda resource, actions: f"{resource}:{','.join(actions)}",
    st.sampled_from(RESOURCES),
    st.lists(st.sampled_from(ACTIONS), unique=True, max_size=len(ACTIONS)),
)


def token_access(h: Harness, user: str | None, scopes: list[str]) -> Access:
    """What a real token for ``user`` carries (its ``access`` claim, signature unchecked)."""
    headers = {} if user is None else basic(user, PASSWORDS[user])
    r = h.client.get(
        "/token",
        headers=headers,
        query_string=[("service", SERVICE)] + [("scope", s) for s in scopes],
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    claims = jwt.decode(r.get_json()["token"], options={"verify_signature": False})
    return {
        (entry["type"], entry.get("class"), entry["name"], action)
        for entry in claims["access"]
        for action in entry["actions"]
    }


def explained_access(answer: dict[str, Any]) -> Access:
    """What explain says a token carries, checked against its own per-action verdicts."""
    granted: Access = set()
    for text in answer["granted"]:
        scope = parse_scope(text)
        granted |= {(scope.type, scope.resource_class, scope.name, a) for a in scope.actions}
    verdicts: Access = set()
    for entry in answer["scopes"]:
        scope = parse_scope(entry["scope"])
        verdicts |= {
            (scope.type, scope.resource_class, scope.name, a["action"])
            for a in entry["actions"]
            if a["decision"] == "granted"
        }
    assert granted == verdicts
    return granted


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    user=st.sampled_from(USERS),
    scopes=st.lists(scope_strings, min_size=1, max_size=3),
)
def test_token_and_explain_agree(
    h: Harness, admin_settings: Settings, user: str | None, scopes: list[str]
) -> None:
    answer = explained(h, {**identity_body(user, admin_settings), "scopes": scopes})
    assert explained_access(answer) == token_access(h, user, scopes)


@pytest.fixture
def config_file(tmp_path: Path, keys_dir: Path) -> Path:
    path = tmp_path / "authsvc.yaml"
    path.write_text(yaml.safe_dump(base_config(keys_dir)), encoding="utf-8")
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


CLI_CASES = [
    ("alice", ["repository:team/prod/app:pull,delete,*", "repository:other/x:pull"]),
    ("bob", ["repository:team/app:*,pull", "registry:catalog:*"]),
    ("admin", ["registry:catalog:*", "repository:x/y:push,frobnicate"]),
    (None, ["repository:public/base:pull,push", "repository:team/app:pull"]),
]


@pytest.mark.parametrize(("user", "scopes"), CLI_CASES, ids=["alice", "bob", "admin", "anonymous"])
def test_cli_agrees_with_the_token_and_the_endpoint(
    h: Harness,
    admin_settings: Settings,
    config_file: Path,
    user: str | None,
    scopes: list[str],
) -> None:
    who = ["--anonymous"] if user is None else ["--account", user]  # groups, kind as configured
    code, out, err = run("policy", "explain", "--config", str(config_file), *who, "--json", *scopes)
    assert code == 0, err
    from_cli = json.loads(out)
    assert explained_access(from_cli) == token_access(h, user, scopes)
    assert from_cli == explained(h, {**identity_body(user, admin_settings), "scopes": scopes})


def test_cli_text_output(config_file: Path) -> None:
    code, out, _ = run(
        "policy",
        "explain",
        "--config",
        str(config_file),
        "--account",
        "alice",
        "repository:team/prod/app:pull,delete",
    )
    assert code == 0
    assert out.splitlines() == [
        "identity: alice (kind human, provider static, groups dev)",
        "rules matching the identity: dev-team",
        "GRANTED repository:team/prod/app pull: granted by dev-team",
        "DENIED  repository:team/prod/app delete: denied by dev-team (allowed by dev-team)",
        "token access: repository:team/prod/app:pull",
    ]


# -- refusals of the command ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--account", "alice", "--claims", "{not json"],
            "authsvc: --claims is not valid JSON: ",
            id="claims-not-json",
        ),
        pytest.param(
            ["--account", "alice", "--claims", "[1, 2]"],
            "authsvc: --claims must be a JSON object",
            id="claims-not-an-object",
        ),
        pytest.param(
            ["--anonymous", "--account", "alice"],
            "authsvc: an anonymous identity has no account, groups, claims, kind or provider",
            id="anonymous-with-account",
        ),
        pytest.param(
            ["--anonymous", "--claims", '{"a": 1}'],
            "authsvc: an anonymous identity has no account, groups, claims, kind or provider",
            id="anonymous-with-claims",
        ),
        pytest.param(
            [], "authsvc: give an account (or ask for the anonymous identity)", id="no-account"
        ),
    ],
)
def test_cli_refusals(config_file: Path, args: list[str], message: str) -> None:
    code, out, err = run(
        "policy", "explain", "--config", str(config_file), *args, "repository:team/app:pull"
    )
    assert code == 2
    assert out == ""
    assert err.startswith(message)
    assert "Traceback" not in err


def test_cli_refuses_a_malformed_scope(config_file: Path) -> None:
    code, _, err = run(
        "policy", "explain", "--config", str(config_file), "--account", "alice", "nonsense"
    )
    assert code == 2
    assert err == "authsvc: scope 'nonsense' is not of the form type:name:actions\n"


def test_cli_needs_a_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTHSVC_CONFIG", raising=False)
    code, _, err = run("policy", "explain", "--account", "alice", "repository:team/app:pull")
    assert code == 2
    assert "no configuration: give --config FILE or set AUTHSVC_CONFIG" in err


# -- known bugs (strict: a fix makes these fail until the marker is removed) ---------------


def test_an_account_cannot_be_of_kind_anonymous(h: Harness) -> None:
    r = post(
        h, {"account": "mallory", "kind": "anonymous", "scopes": ["repository:public/base:pull"]}
    )
    assert r.status_code == 400


def test_cli_keeps_a_static_users_kind_when_groups_are_given(config_file: Path) -> None:
    code, out, _ = run(
        "policy",
        "explain",
        "--config",
        str(config_file),
        "--account",
        "admin",
        "--group",
        "ops",
        "--json",
        "registry:catalog:*",
    )
    assert code == 0
    assert json.loads(out)["identity"]["kind"] == "robot"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"account": "alice", "scopes": [""]}, "non-empty scope strings"),
        (
            {"anonymous": True, "kind": "ci", "scopes": ["repository:a:pull"]},
            "an anonymous identity has no account, groups, claims, kind or provider",
        ),
        ({"account": None, "scopes": ["repository:a:pull"]}, "'account' must be a JSON string"),
    ],
)
def test_more_malformed_bodies(h: Harness, body: dict[str, Any], message: str) -> None:
    r = post(h, body)
    assert r.status_code == 400
    assert message in r.get_json()["errors"][0]["message"]


def test_a_near_miss_names_the_rules_that_cover_the_resource(h: Harness) -> None:
    r = post(h, {"account": "admin", "kind": "robot", "scopes": ["registry:catalog:pull"]})
    action = r.get_json()["scopes"][0]["actions"][0]
    assert action["decision"] == "denied"
    assert action["explanation"] == (
        "not granted: admin cover this resource but do not allow 'pull'"
    )
