"""AWS IAM identities end to end through the app, against moto's STS with signatures
checked: a signed GetCallerIdentity request is exchanged once for a session, accepted
again byte for byte as a password, and its principal mapped through the rules."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from authsvc.config import parse_settings
from authsvc.identity.aws.proof import SUBJECT_TOKEN_TYPE as AWS_TOKEN_TYPE
from tests.aws_sts import ACCOUNT, SERVER_ID, MotoAws
from tests.conftest import SERVICE, Harness, MakeHarness, base_config, basic

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def config(keys_dir: Path, moto: MotoAws, **aws: Any) -> dict[str, Any]:
    data = base_config(keys_dir)
    data["identities"]["aws"] = {
        "sts_endpoints": [moto.host],
        "sts_url": moto.endpoint_url + "/",
        "server_id": SERVER_ID,
        "accounts": [ACCOUNT],
        "kind": "ci",
        **aws,
    }
    data["rules"] += [
        {
            "id": "deployer",
            "match": {"provider": "aws", "claims": {"role": "ci-deployer"}},
            "allow": [{"repository": "aws/${claims.role}/**", "actions": ["pull", "push"]}],
        },
        {
            "id": "builder",
            "match": {"provider": "aws", "claims": {"user": "builder"}},
            "allow": [{"repository": "aws/builds/*", "actions": ["pull"]}],
        },
    ]
    return data


MakeAws = Callable[..., Harness]


@pytest.fixture
def make_aws(
    make_harness: MakeHarness, keys_dir: Path, tmp_path: Path, moto_aws: MotoAws
) -> MakeAws:
    def make(data: dict[str, Any] | None = None, **aws: Any) -> Harness:
        h = make_harness(
            parse_settings(data or config(keys_dir, moto_aws, **aws), base_dir=tmp_path, environ={})
        )
        h.clock.now = time.time()  # X-Amz-Date is checked against the service's clock
        return h

    return make


def exchange(h: Harness, proof: str, scope: str = "") -> Any:
    return h.client.post(
        "/token",
        data={
            "grant_type": EXCHANGE,
            "subject_token": proof,
            "subject_token_type": AWS_TOKEN_TYPE,
            "service": SERVICE,
            "scope": scope,
        },
    )


def access(token: str) -> list[dict[str, Any]]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    result: list[dict[str, Any]] = claims["access"]
    return result


def test_an_assumed_role_gets_exactly_what_its_rule_allows(
    make_aws: MakeAws, moto_aws: MotoAws
) -> None:
    h = make_aws()
    r = exchange(
        h,
        moto_aws.sign(moto_aws.assume_role("deploy-42")),
        "repository:aws/ci-deployer/app:push repository:aws/builds/x:pull",
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["scope"] == "repository:aws/ci-deployer/app:push"
    assert body["refresh_token"].startswith("asr_")
    assert body["refresh_expires_in"] == 900
    event = h.audit.events[-1]
    assert event["actor"]["provider"] == "aws"
    assert event["actor"]["kind"] == "ci"
    assert event["actor"]["subject"] == f"arn:aws:iam::{ACCOUNT}:role/ci-deployer"
    session = body["refresh_token"]
    r = h.client.get(
        f"/token?service={SERVICE}&scope=repository:aws/ci-deployer/app:pull",
        headers=basic("<token>", session),
    )
    assert access(r.get_json()["token"]) == [
        {"type": "repository", "name": "aws/ci-deployer/app", "actions": ["pull"]}
    ]


def test_an_iam_user_signs_as_a_password_and_may_resend_it(
    make_aws: MakeAws, moto_aws: MotoAws
) -> None:
    h = make_aws()
    proof = moto_aws.sign()
    for reuse in (False, True):
        r = h.client.get(
            f"/token?service={SERVICE}&scope=repository:aws/builds/x:pull,push",
            headers=basic("aws", proof),
        )
        assert r.status_code == 200, r.get_json()
        assert access(r.get_json()["token"]) == [
            {"type": "repository", "name": "aws/builds/x", "actions": ["pull"]}
        ]
        assert h.audit.events[-1]["actor"].get("reuse", False) is reuse
    assert exchange(h, proof).status_code == 401  # an exchange is once, ever


def test_a_second_exchange_is_refused(make_aws: MakeAws, moto_aws: MotoAws) -> None:
    h = make_aws()
    proof = moto_aws.sign()
    assert exchange(h, proof).status_code == 200
    r = exchange(h, proof)
    assert r.status_code == 401
    assert h.audit.events[-1]["reason"] == "TOKEN_REPLAYED"


def test_an_account_not_allowed_is_refused(make_aws: MakeAws, moto_aws: MotoAws) -> None:
    h = make_aws(accounts=["210987654321"])
    r = exchange(h, moto_aws.sign())
    assert r.status_code == 401
    assert h.audit.events[-1]["reason"] == "ACCOUNT_NOT_ALLOWED"


def test_sts_unreachable_is_a_503(make_aws: MakeAws, moto_aws: MotoAws) -> None:
    h = make_aws(sts_url="http://127.0.0.1:1/")
    r = exchange(h, moto_aws.sign())
    assert r.status_code == 503
    assert r.get_json()["error"] == "temporarily_unavailable"
    assert "STS" in r.get_json()["error_description"]
    assert h.audit.events[-1]["reason"] == "STS_UNAVAILABLE"


def test_a_rule_on_the_roles_unique_id_does_not_follow_a_recreated_role(
    make_aws: MakeAws, moto_aws: MotoAws, keys_dir: Path
) -> None:
    data = config(keys_dir, moto_aws)
    data["rules"][-2]["match"]["claims"] = {"user_id": moto_aws.role_id()}
    h = make_aws(data)
    scope = "repository:aws/ci-deployer/app:push"
    assert exchange(h, moto_aws.sign(moto_aws.assume_role()), scope).get_json()["scope"] == scope
    moto_aws.recreate_role()
    r = exchange(h, moto_aws.sign(moto_aws.assume_role()), scope)
    assert r.status_code == 200
    assert r.get_json()["scope"] == ""


def test_a_rule_on_aws_must_name_the_principal(
    keys_dir: Path, tmp_path: Path, moto_aws: MotoAws
) -> None:
    from authsvc.errors import ConfigError

    data = config(keys_dir, moto_aws)
    data["rules"][-1]["match"] = {"provider": "aws", "claims": {"account": ACCOUNT}}
    with pytest.raises(ConfigError) as info:
        parse_settings(data, base_dir=tmp_path, environ={})
    assert any(
        "rules on aws must pin arn or role or user or user_id" in p for p in info.value.problems
    )


def test_the_audit_names_the_role_session(make_aws: MakeAws, moto_aws: MotoAws) -> None:
    h = make_aws()
    exchange(h, moto_aws.sign(moto_aws.assume_role("deploy-77")))
    claims = h.audit.events[-1]["actor"]["claims"]
    assert claims["session_name"] == "deploy-77"
    assert claims["role"] == "ci-deployer"
    assert claims["user_id"] == moto_aws.role_id()
    assert claims["sts_arn"].endswith(":assumed-role/ci-deployer/deploy-77")
