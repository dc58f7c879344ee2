"""CI identities end to end through the app: a real OIDC issuer on 127.0.0.1 mints
GitHub-Actions-shaped tokens; authsvc exchanges them once, accepts the same string
again as a password, refuses replays, and maps claims through the rules."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest

from authsvc.app import create_app
from authsvc.audit.verify import public_keys, read_jsonl, verify_events
from authsvc.config import parse_settings
from authsvc.store import Store
from authsvc.store.redis import RedisStore
from authsvc.tokens import KeyRing
from tests.conftest import SERVICE, Harness, MakeHarness, base_config, basic
from tests.oidc_issuer import AUDIENCE, TestIssuer

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
OWNER_ID = "65"
REPO_ID = "74"


def github_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "repo:Acme/App:ref:refs/heads/main",
        "repository": "Acme/App",
        "repository_id": REPO_ID,
        "repository_owner": "Acme",
        "repository_owner_id": OWNER_ID,
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "event_name": "push",
        "workflow": "release",
        "runner_environment": "github-hosted",
    }
    claims.update(extra)
    return claims


def config(keys_dir: Path, issuer: TestIssuer, **issuer_extra: Any) -> dict[str, Any]:
    data = base_config(keys_dir)
    data["identities"]["oidc"] = {
        "gh": {
            "preset": "github-actions",
            "issuer": issuer.url,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "ES256"],
            **issuer_extra,
        },
    }
    data["rules"].append(
        {
            "id": "ci-push",
            "match": {
                "provider": "gh",
                "claims": {"repository_owner_id": OWNER_ID, "runner_environment": "github-hosted"},
            },
            "allow": [
                {"repository": "ci/${claims.repository|lower}/**", "actions": ["pull", "push"]}
            ],
        }
    )
    return data


MakeOidc = Callable[..., Harness]


@pytest.fixture
def make_oidc(
    make_harness: MakeHarness, keys_dir: Path, tmp_path: Path, issuer: TestIssuer
) -> MakeOidc:
    def make(*, store: Store | None = None, **issuer_extra: Any) -> Harness:
        settings = parse_settings(
            config(keys_dir, issuer, **issuer_extra), base_dir=tmp_path, environ={}
        )
        return make_harness(settings, store=store)

    return make


@pytest.fixture
def h(make_oidc: MakeOidc) -> Harness:
    return make_oidc()


def mint(h: Harness, issuer: TestIssuer, **claims: Any) -> str:
    return issuer.mint(github_claims(**claims), iat=int(h.clock()))


def exchange(h: Harness, token: str, scope: str = "repository:ci/acme/app/cache:pull,push") -> Any:
    return h.client.post(
        "/token",
        data={
            "grant_type": EXCHANGE,
            "subject_token": token,
            "subject_token_type": ID_TOKEN,
            "service": SERVICE,
            "scope": scope,
        },
    )


def access(token: str) -> list[dict[str, Any]]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    result: list[dict[str, Any]] = claims["access"]
    return result


def last_event(h: Harness) -> dict[str, Any]:
    return h.audit.events[-1]


# -- the exchange -----------------------------------------------------------------------


def test_exchange_returns_a_scoped_token_and_a_session_credential(
    h: Harness, issuer: TestIssuer
) -> None:
    r = exchange(
        h, mint(h, issuer), "repository:ci/acme/app/cache:pull,push repository:ci/other/x:push"
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "repository:ci/acme/app/cache:pull,push"
    assert access(body["token"]) == [
        {"type": "repository", "name": "ci/acme/app/cache", "actions": ["pull", "push"]}
    ]
    assert body["refresh_token"].startswith("asr_")
    minted = jwt.decode(body["token"], options={"verify_signature": False})
    assert minted["exp"] - minted["iat"] == 300
    assert minted["sub"] == "repo:Acme/App:ref:refs/heads/main"
    event = last_event(h)
    assert event["actor"]["provider"] == "gh"
    assert event["actor"]["kind"] == "ci"
    assert event["actor"]["credential"] == "subject_token"
    assert event["actor"]["claims"]["repository"] == "Acme/App"
    assert event["actor"]["claims"]["workflow"] == "release"


def test_a_token_is_exchanged_once(h: Harness, issuer: TestIssuer) -> None:
    token = mint(h, issuer)
    assert exchange(h, token).status_code == 200
    r = exchange(h, token)
    assert r.status_code == 401
    assert r.get_json()["error"] == "invalid_grant"
    assert "already used" in r.get_json()["error_description"]
    assert last_event(h)["reason"] == "TOKEN_REPLAYED"


def test_twenty_concurrent_exchanges_of_one_token_one_succeeds(
    make_oidc: MakeOidc, issuer: TestIssuer, redis_server_url: str
) -> None:
    store = RedisStore.from_url(redis_server_url, prefix=f"test-{secrets.token_hex(6)}:")
    h = make_oidc(store=store)
    token = mint(h, issuer)

    def attempt(_: int) -> int:
        return int(
            h.app.test_client()
            .post(
                "/token",
                data={
                    "grant_type": EXCHANGE,
                    "subject_token": token,
                    "subject_token_type": ID_TOKEN,
                    "service": SERVICE,
                },
            )
            .status_code
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(attempt, range(20)))
    assert statuses == [200] + [401] * 19
    store.close()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"subject_token_type": ID_TOKEN}, "a token exchange needs 'subject_token'"),
        ({"subject_token": "x", "subject_token_type": "urn:x"}, "subject_token_type must be"),
        (
            {
                "subject_token": "x",
                "subject_token_type": ID_TOKEN,
                "requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token",
            },
            "requested_token_type must be",
        ),
    ],
)
def test_malformed_exchanges_are_refused(h: Harness, form: dict[str, str], message: str) -> None:
    r = h.client.post("/token", data={"grant_type": EXCHANGE, "service": SERVICE, **form})
    assert r.status_code == 400
    assert message in r.get_json()["error_description"]


# -- the session credential ---------------------------------------------------------------


def test_session_credential_outlives_the_oidc_token(h: Harness, issuer: TestIssuer) -> None:
    session = exchange(h, mint(h, issuer)).get_json()["refresh_token"]
    h.clock.advance(600)  # the OIDC token (5 minutes) has expired
    r = h.client.get(
        f"/token?service={SERVICE}&scope=repository:ci/acme/app/img:push",
        headers=basic("<token>", session),
    )
    assert r.status_code == 200, r.get_json()
    assert access(r.get_json()["token"]) == [
        {"type": "repository", "name": "ci/acme/app/img", "actions": ["push"]}
    ]
    h.clock.advance(900)  # past the session's 15 minutes
    r = h.client.get(f"/token?service={SERVICE}", headers=basic("<token>", session))
    assert r.status_code == 401
    assert "expired or revoked" in r.get_json()["errors"][0]["message"]


def test_session_is_decided_against_current_rules(
    h: Harness, issuer: TestIssuer, keys_dir: Path, tmp_path: Path
) -> None:
    session = exchange(h, mint(h, issuer)).get_json()["refresh_token"]
    data = config(keys_dir, issuer)
    data["rules"] = [r for r in data["rules"] if r["id"] != "ci-push"]
    h.app.extensions["authsvc"].reload(parse_settings(data, base_dir=tmp_path, environ={}))
    r = h.client.get(
        f"/token?service={SERVICE}&scope=repository:ci/acme/app/img:push",
        headers=basic("<token>", session),
    )
    assert r.status_code == 200
    assert access(r.get_json()["token"]) == []


def test_session_stops_when_its_issuer_is_removed(
    h: Harness, issuer: TestIssuer, keys_dir: Path, tmp_path: Path
) -> None:
    session = exchange(h, mint(h, issuer)).get_json()["refresh_token"]
    h.app.extensions["authsvc"].reload(
        parse_settings(base_config(keys_dir), base_dir=tmp_path, environ={})
    )
    r = h.client.get(f"/token?service={SERVICE}", headers=basic("<token>", session))
    assert r.status_code == 401
    assert "no longer exists" in r.get_json()["errors"][0]["message"]


# -- the token as a password ----------------------------------------------------------


def test_token_as_password_is_reusable_byte_for_byte(h: Harness, issuer: TestIssuer) -> None:
    token = mint(h, issuer)
    for reuse in (False, True, True):
        r = h.client.get(
            f"/token?service={SERVICE}&scope=repository:ci/acme/app/img:pull",
            headers=basic("ci", token),
        )
        assert r.status_code == 200, r.get_json()
        assert access(r.get_json()["token"])[0]["actions"] == ["pull"]
        assert last_event(h)["actor"].get("reuse", False) is reuse
    assert token not in repr(h.audit.events)


def test_another_token_with_a_claimed_jti_is_refused(h: Harness, issuer: TestIssuer) -> None:
    jti = secrets.token_hex(8)
    first = issuer.mint(github_claims(jti=jti), iat=int(h.clock()))
    second = issuer.mint(github_claims(jti=jti, workflow="other"), iat=int(h.clock()))
    assert h.client.get(f"/token?service={SERVICE}", headers=basic("ci", first)).status_code == 200
    r = h.client.get(f"/token?service={SERVICE}", headers=basic("ci", second))
    assert r.status_code == 401
    assert "jti was already used by another token" in r.get_json()["errors"][0]["message"]


def test_password_reuse_false_makes_a_token_single_use(
    make_oidc: MakeOidc, issuer: TestIssuer
) -> None:
    h = make_oidc(password_reuse=False)
    token = mint(h, issuer)
    assert h.client.get(f"/token?service={SERVICE}", headers=basic("ci", token)).status_code == 200
    r = h.client.get(f"/token?service={SERVICE}", headers=basic("ci", token))
    assert r.status_code == 401
    assert "password_reuse: false" in r.get_json()["errors"][0]["message"]


def test_reuse_works_across_workers_through_the_store(
    make_oidc: MakeOidc, issuer: TestIssuer, redis_server_url: str
) -> None:
    prefix = f"test-{secrets.token_hex(6)}:"
    worker_a = make_oidc(store=RedisStore.from_url(redis_server_url, prefix=prefix))
    worker_b = make_oidc(store=RedisStore.from_url(redis_server_url, prefix=prefix))
    token = mint(worker_a, issuer)
    assert (
        worker_a.client.get(f"/token?service={SERVICE}", headers=basic("ci", token)).status_code
        == 200
    )
    r = worker_b.client.get(f"/token?service={SERVICE}", headers=basic("ci", token))
    assert r.status_code == 200
    assert last_event(worker_b)["actor"]["reuse"] is True
    assert exchange(worker_b, token).status_code == 401  # an exchange is once, ever


def test_offline_login_with_a_token_returns_a_session(h: Harness, issuer: TestIssuer) -> None:
    r = h.client.get(
        f"/token?service={SERVICE}&offline_token=true&client_id=docker",
        headers=basic("ci", mint(h, issuer)),
    )
    assert r.status_code == 200
    session = r.get_json()["refresh_token"]
    listed = h.app.extensions["authsvc"].service._sessions.list(
        "gh", "repo:Acme/App:ref:refs/heads/main", now=int(h.clock())
    )
    assert [s.expires_at - s.created for s in listed] == [900]
    assert session.startswith("asr_")


# -- claims and rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "granted"),
    [
        ({}, True),
        ({"event_name": "pull_request_target"}, False),  # implicit condition
        ({"repository_owner_id": "66"}, False),  # another owner, same names
        ({"runner_environment": "self-hosted"}, False),  # rule requires GitHub-hosted
        ({"repository_owner_id": 65}, False),  # a number is not a string
        ({"repository_owner_id": ["65"]}, False),  # nor a list
        ({"repository": "Acme/App/../Admin"}, False),  # escaped, never a pattern
        ({"repository": "*"}, False),
    ],
)
def test_claims_decide(
    h: Harness, issuer: TestIssuer, claims: dict[str, Any], granted: bool
) -> None:
    token = issuer.mint(github_claims(**claims), iat=int(h.clock()))
    r = h.client.get(
        f"/token?service={SERVICE}&scope=repository:ci/acme/app/img:push",
        headers=basic("ci", token),
    )
    assert r.status_code == 200, r.get_json()
    assert bool(access(r.get_json()["token"])) is granted


def test_a_renamed_repository_keeps_its_id_rule(
    make_harness: MakeHarness, keys_dir: Path, tmp_path: Path, issuer: TestIssuer
) -> None:
    data = config(keys_dir, issuer)
    data["rules"][-1]["match"]["claims"] = {"repository_id": REPO_ID}
    data["rules"][-1]["allow"] = [{"repository": "ci/app/**", "actions": ["push"]}]
    h = make_harness(parse_settings(data, base_dir=tmp_path, environ={}))
    same_name_other_id = issuer.mint(github_claims(repository_id="999"), iat=int(h.clock()))
    r = h.client.get(
        f"/token?service={SERVICE}&scope=repository:ci/app/x:push",
        headers=basic("ci", same_name_other_id),
    )
    assert access(r.get_json()["token"]) == []


# -- refusals ------------------------------------------------------------------------------


def test_unknown_issuer_is_named(h: Harness, make_issuer: Callable[..., TestIssuer]) -> None:
    stranger = make_issuer()
    token = stranger.mint(github_claims(), iat=int(h.clock()))
    r = h.client.get(f"/token?service={SERVICE}", headers=basic("ci", token))
    assert r.status_code == 401
    assert f"issuer '{stranger.url}' is not configured" in r.get_json()["errors"][0]["message"]
    assert last_event(h)["reason"] == "UNKNOWN_ISSUER"


def test_missing_jti_is_refused_where_the_preset_requires_it(
    h: Harness, issuer: TestIssuer
) -> None:
    token = issuer.mint(github_claims(), iat=int(h.clock()), omit=["jti"])
    r = exchange(h, token)
    assert r.status_code == 401
    assert "must carry a jti" in r.get_json()["error_description"]


def test_wrong_audience_is_refused(h: Harness, issuer: TestIssuer) -> None:
    token = issuer.mint(github_claims(aud="https://github.com/Acme"), iat=int(h.clock()))
    r = exchange(h, token)
    assert r.status_code == 401
    assert h.audit.events[-1]["reason"] == "WRONG_AUDIENCE"


def test_readyz_reports_each_issuers_keys(h: Harness, issuer: TestIssuer) -> None:
    exchange(h, mint(h, issuer))
    body = h.client.get("/readyz").get_json()
    assert body["oidc"]["gh"]["stale"] is False
    assert body["oidc"]["gh"]["keys_fetched_at"] is not None


def test_basic_auth_with_a_jwt_password_never_reaches_bcrypt(
    h: Harness, issuer: TestIssuer
) -> None:
    """A JWT-shaped password is a token: a bad one is refused as a token, by reason."""
    token = mint(h, issuer)
    header, payload, _ = token.split(".")
    forged = f"{header}.{payload}.{base64.urlsafe_b64encode(b'x' * 256).decode().rstrip('=')}"
    r = h.client.get(f"/token?service={SERVICE}", headers=basic("alice", forged))
    assert r.status_code == 401
    assert h.audit.events[-1]["reason"] == "INVALID_SIGNATURE"


def test_a_rule_can_shorten_the_tokens_it_grants(
    make_harness: MakeHarness, keys_dir: Path, tmp_path: Path, issuer: TestIssuer
) -> None:
    data = config(keys_dir, issuer)
    data["rules"][-1]["token_ttl"] = 90
    h = make_harness(parse_settings(data, base_dir=tmp_path, environ={}))
    token = issuer.mint(github_claims(), iat=int(h.clock()))
    r = h.client.get(
        f"/token?service={SERVICE}&scope=repository:ci/acme/app/img:pull",
        headers=basic("ci", token),
    )
    minted = jwt.decode(r.get_json()["token"], options={"verify_signature": False})
    assert minted["exp"] - minted["iat"] == 90
    assert r.get_json()["expires_in"] == 90


def test_a_claim_with_a_fraction_is_recorded_as_its_text_through_the_real_trail(
    keys_dir: Path, tmp_path: Path, issuer: TestIssuer
) -> None:
    """The trail has no floats: a number claim with a fraction or an exponent is kept as
    its JSON text, so the decision is recorded (it was a 503: the chain refused the
    event), and the trail still verifies."""
    settings = parse_settings(config(keys_dir, issuer), base_dir=tmp_path, environ={})
    client = create_app(settings).test_client()
    token = issuer.mint(github_claims(
        run_id=1234.5, run_attempt=1, job_workflow_ref=None,
        project_path={"group": [2.5e-300, True, 7]}, pipeline_id=2**70,
    ))
    r = client.get(
        f"/token?service={SERVICE}&scope=repository:ci/acme/app/img:push",
        headers=basic("ci", token),
    )
    assert r.status_code == 200, r.get_json()
    assert access(r.get_json()["token"])  # granted: the rule matched as before
    path = tmp_path / "audit" / "audit.jsonl"
    (event,) = [e for e in read_jsonl(path) if e["type"] == "token.issue"]
    claims = event["actor"]["claims"]
    assert claims["run_id"] == "1234.5"
    assert claims["project_path"] == {"group": ["2.5e-300", True, 7]}
    assert claims["pipeline_id"] == 2**70
    assert claims["job_workflow_ref"] is None
    assert claims["repository"] == "Acme/App"
    report = verify_events(list(read_jsonl(path)), keys=public_keys(KeyRing.load(keys_dir)))
    assert report.ok, report.first_problem
