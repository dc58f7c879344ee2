"""End to end: AWS IAM identities. moto's STS on 127.0.0.1 (signatures checked) ->
`authsvc serve` -> the real registry 2.8 and skopeo 1.9.3.

This module has its own stack (it overrides conftest's `stack` fixture, so failure
reports still carry both logs): conftest's configuration (static users included) plus
`identities.aws` trusting moto's host for moto's account, and one rule:

* `aws-deployer`: any session of the role `ci-deployer` may pull and push
  `aws/ci-deployer/**` (`aws/${claims.role}/**`), nothing else.

The clients are the real ones, run as subprocesses with nothing but an assumed role's
temporary credentials in `AWS_*` (the shared config and credentials files point at
/nonexistent, the instance metadata service is off): `authsvc login aws` and the
`docker-credential-authsvc` helper, which skopeo itself runs (an authfile's
`credHelpers`). They sign for `https://127.0.0.1:PORT/` (`--sts-host` / `sts_host`);
authsvc sends the signed request to moto's plain-HTTP `sts_url` on the same host and
port, so moto checks the very signature the client made.

What skopeo 1.9.3 does with the helper (observed here): for a registry named in the
authfile's `credHelpers` it runs `docker-credential-<name> get` from PATH with the bare
`HOST:PORT` on stdin; an answer with Username `<token>` becomes an identity token, so
every token request is a POST `grant_type=refresh_token` with `client_id=containers/image`.
Because the helper is given a bare host, it cannot discover a plain-HTTP registry's
realm (it tries `https://HOST:PORT/v2/`): the helper configuration here names `realm`
and `service`.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sysconfig
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.aws_sts import ACCOUNT, SERVER_ID, MotoAws

from .conftest import SERVICE, Stack, authsvc_argv, basic_auth, running_stack
from .harness import (
    HttpResponse,
    OciImage,
    Skopeo,
    describe_oci_image,
    http_request,
    make_oci_image,
    require_e2e_binaries,
)

pytestmark = pytest.mark.e2e

DENIED = "denied: requested access to the resource is denied"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
#: The subject_token_type of a signed GetCallerIdentity proof.
AWS_TOKEN_TYPE = "urn:authsvc:params:aws:signed-get-caller-identity"
ROLE = "ci-deployer"
#: What authsvc makes of any session of the role (the assumed-role ARN, normalised).
ROLE_SUBJECT = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
OTHER_SERVER_ID = "registry.elsewhere/authsvc"
SERVER_ID_MISMATCH = (
    "AWS proof refused: the request was signed for another server: "
    f"x-authsvc-server-id must be {SERVER_ID!r}"
)
ALREADY_USED = "this signed request was already used: sign a new one for each exchange"
#: Where this interpreter's console scripts are (`docker-credential-authsvc` among them).
SCRIPTS = Path(sysconfig.get_path("scripts"))
HELPER = "docker-credential-authsvc"
CLIENT_TIMEOUT = 30.0


# --------------------------------------------------------------------------- the stack


def _add_aws(config: dict[str, Any], moto: MotoAws) -> None:
    config["identities"]["aws"] = {
        "sts_endpoints": [moto.host],
        "sts_url": moto.endpoint_url + "/",
        "server_id": SERVER_ID,
        "accounts": [ACCOUNT],
        "kind": "ci",
    }
    config["rules"].append(
        {
            "id": "aws-deployer",
            "match": {"provider": "aws", "claims": {"role": ROLE}},
            "allow": [{"repository": "aws/${claims.role}/**", "actions": ["pull", "push"]}],
        }
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, moto_aws: MotoAws) -> Iterator[Stack]:
    """This module's stack: conftest's, plus moto's STS and the role's rule."""
    require_e2e_binaries()
    with running_stack(
        tmp_path_factory.mktemp("aws-flow"), lambda config: _add_aws(config, moto_aws)
    ) as running:
        yield running


# --------------------------------------------------------------------------- helpers


def _image(stack: Stack, name: str, *, layers: int = 2) -> OciImage:
    return describe_oci_image(
        make_oci_image(stack.workdir / "images" / name, layers=layers, seed=name)
    )


def _oci(image: OciImage) -> str:
    return f"oci:{image.directory}:latest"


def _session_creds(session: str) -> str:
    """skopeo credentials for a session credential (the credential-helper convention)."""
    return f"<token>:{session}"


def _events_since(stack: Stack, start: int) -> list[dict[str, Any]]:
    return stack.audit_events()[start:]


def _with_scope(events: list[dict[str, Any]], scope: str) -> list[dict[str, Any]]:
    return [e for e in events if e["request"]["scopes"] == [scope]]


def aws_env(credentials: Any) -> dict[str, str]:
    """A botocore `Credentials`' keys in AWS_*, and nothing else botocore could find."""
    return {
        "AWS_ACCESS_KEY_ID": credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        "AWS_SESSION_TOKEN": credentials.token,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _client_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AUTHSVC_"))}
    env.update(extra)
    return env


def login_aws(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`authsvc login aws ARGS...` as a CI job runs it (never raises on a failure)."""
    return subprocess.run(
        authsvc_argv("login", "aws", *args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_client_env(env),
        timeout=CLIENT_TIMEOUT,
        check=False,
    )


def exchange(stack: Stack, proof: str, scopes: tuple[str, ...] = ()) -> HttpResponse:
    """POST /token: the RFC 8693 token exchange of a signed GetCallerIdentity proof."""
    form = [
        ("grant_type", EXCHANGE),
        ("subject_token", proof),
        ("subject_token_type", AWS_TOKEN_TYPE),
        ("service", SERVICE),
        *(("scope", scope) for scope in scopes),
    ]
    return http_request(
        "POST",
        stack.authsvc.realm,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "authsvc-e2e-tests",
        },
        body=urllib.parse.urlencode(form).encode(),
    )


class HelperSkopeo(Skopeo):
    """skopeo able to run `docker-credential-authsvc`: this interpreter's scripts first
    on PATH, plus `extra_env` (the helper's configuration, AWS credentials). The helper's
    cache is under this skopeo's own HOME (its XDG_CACHE_HOME)."""

    def __init__(self, workdir: Path, extra_env: Mapping[str, str]) -> None:
        super().__init__(workdir)
        self.extra_env = dict(extra_env)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if not k.startswith(("AWS_", "AUTHSVC_"))}
        env["PATH"] = f"{SCRIPTS}{os.pathsep}{env.get('PATH', '')}"
        env.update(self.extra_env)
        return env

    @property
    def helper_cache(self) -> Path:
        return self.home / ".cache" / "authsvc" / "credentials.json"

    def helper(self, action: str, stdin: str) -> subprocess.CompletedProcess[str]:
        """`docker-credential-authsvc ACTION` in this skopeo's environment, as skopeo runs it."""
        return subprocess.run(
            [HELPER, action],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.workdir,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )


# --------------------------------------------------------------------------- 1


def test_login_aws_session_pushes_only_to_the_roles_repositories(
    stack: Stack, moto_aws: MotoAws
) -> None:
    credentials = moto_aws.assume_role("e2e-login")
    mark = len(stack.audit_events())
    proc = login_aws(
        "--registry",
        stack.registry.url,
        "--server-id",
        SERVER_ID,
        "--sts-host",
        moto_aws.host,
        env=aws_env(credentials),
    )
    assert proc.returncode == 0, stack.explain(
        f"authsvc login aws exited {proc.returncode}\n--- stderr:\n{proc.stderr}"
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("asr_"), proc.stdout
    session = lines[0]
    for secret in (credentials.secret_key, credentials.token):
        assert secret not in proc.stdout + proc.stderr

    # one exchange, at the realm the registry's challenge named; moto accepted the
    # signature and named the role's session, which authsvc normalised to the role
    (event,) = _events_since(stack, mark)
    assert event["outcome"] == "success", event
    assert event["request"]["grant_type"] == EXCHANGE
    assert event["request"]["service"] == SERVICE
    assert event["client"]["client_id"] == "authsvc-login"
    assert event["actor"]["credential"] == "subject_token"
    assert event["actor"]["provider"] == "aws"
    assert event["actor"]["kind"] == "ci"
    assert event["actor"]["subject"] == ROLE_SUBJECT
    assert event["decision"]["rules"] == ["aws-deployer"]

    mark = len(stack.audit_events())
    image = _image(stack, "aws-login")
    ref = stack.ref(f"aws/{ROLE}/app", "1")
    skopeo = stack.skopeo("aws-login")
    stack.ok(skopeo.copy(_oci(image), ref, dest_creds=_session_creds(session)))
    inspected = stack.ok(skopeo.inspect(ref, _session_creds(session))).json()
    assert inspected["Digest"] == image.manifest_digest
    assert inspected["Layers"] == list(image.layer_digests)
    assert len(inspected["Layers"]) == 2

    # outside aws/ci-deployer/**, authsvc grants nothing (not even pull): the registry
    # refuses skopeo's first request, the HEAD of a blob
    stack.refused(
        skopeo.copy(_oci(image), stack.ref("team/app", "1"), dest_creds=_session_creds(session)),
        f"exists in {stack.host}/team/app: errors:",
        DENIED,
    )

    events = _events_since(stack, mark)
    # copy + inspect (twice: the tag list opens a second client) + the refused copy
    assert len(events) >= 4, stack.explain(f"audit events: {events!r}")
    for used in events:  # skopeo sent the session as a password (GET + Basic)
        assert used["actor"]["credential"] == "refresh_token"
        assert used["actor"]["provider"] == "aws"
        assert used["actor"]["subject"] == ROLE_SUBJECT
        assert used["client"]["user_agent"].startswith("skopeo/")
    (push,) = _with_scope(events, f"repository:aws/{ROLE}/app:pull,push")
    assert push["outcome"] == "success", push
    assert push["decision"]["granted"] == [f"repository:aws/{ROLE}/app:pull,push"]
    assert push["decision"]["rules"] == ["aws-deployer"]
    # the rule matches the role, but its pattern covers only aws/ci-deployer/**
    (denied,) = _with_scope(events, "repository:team/app:pull,push")
    assert denied["outcome"] == "failure", denied
    assert denied["reason"] == "SCOPE_DENIED"
    assert denied["decision"]["granted"] == []
    assert denied["decision"]["rules"] == ["aws-deployer"]

    registry_log = stack.registry.log_text()
    assert f'"PUT /v2/aws/{ROLE}/app/manifests/1 HTTP/1.1" 201' in registry_log
    assert "PUT /v2/team/app/manifests/1" not in registry_log
    assert session not in stack.authsvc.log_text()


# --------------------------------------------------------------------------- 2


def test_skopeo_runs_the_credential_helper(stack: Stack, moto_aws: MotoAws) -> None:
    """An authfile with only `credHelpers`: skopeo runs `docker-credential-authsvc get`,
    which signs, exchanges once and caches; every command after that reuses the cache."""
    if not (SCRIPTS / HELPER).is_file():
        pytest.fail(f"{SCRIPTS / HELPER} is missing: pip install -e '.[test]'", pytrace=False)
    credentials = moto_aws.assume_role("e2e-helper")
    directory = stack.skopeo("aws-helper").workdir
    helper_config = directory / "credential-helper.json"
    helper_config.write_text(
        json.dumps(
            {
                "registries": {
                    stack.host: {
                        "server_id": SERVER_ID,
                        "sts_host": moto_aws.host,
                        "region": "us-east-1",
                        # skopeo hands the helper a bare HOST:PORT, which it would
                        # discover over https://; this registry is plain HTTP
                        "realm": stack.authsvc.realm,
                        "service": SERVICE,
                    }
                }
            }
        )
    )
    skopeo = HelperSkopeo(
        directory,
        {**aws_env(credentials), "AUTHSVC_CREDENTIAL_HELPER_CONFIG": str(helper_config)},
    )
    skopeo.write_authfile({"credHelpers": {stack.host: "authsvc"}})
    assert not skopeo.helper_cache.exists()

    mark = len(stack.audit_events())
    image = _image(stack, "aws-helper")
    ref = stack.ref(f"aws/{ROLE}/helper", "1")
    stack.ok(skopeo.copy(_oci(image), ref))
    inspected = stack.ok(skopeo.inspect(ref)).json()
    assert inspected["Digest"] == image.manifest_digest
    assert inspected["Layers"] == list(image.layer_digests)
    stack.refused(
        skopeo.copy(_oci(image), stack.ref("team/app", "helper")),
        f"exists in {stack.host}/team/app: errors:",
        DENIED,
    )

    events = _events_since(stack, mark)
    # three skopeo processes, each running the helper: one exchange, then the cache
    (exchanged,) = [e for e in events if e["request"]["grant_type"] == EXCHANGE]
    assert exchanged["outcome"] == "success", exchanged
    assert exchanged["client"]["client_id"] == "authsvc-login"
    assert exchanged["actor"]["provider"] == "aws"
    assert exchanged["actor"]["subject"] == ROLE_SUBJECT
    assert events[0] is exchanged, events
    # and skopeo took the `<token>` answer for an identity token: POSTs, no Basic auth
    used = events[1:]
    assert len(used) >= 4, stack.explain(f"audit events: {events!r}")
    for event in used:
        assert event["request"]["grant_type"] == "refresh_token", event
        assert event["client"]["client_id"] == "containers/image"
        assert event["client"]["user_agent"].startswith("skopeo/")
        assert event["actor"]["credential"] == "refresh_token"
        assert event["actor"]["subject"] == ROLE_SUBJECT
    (push,) = _with_scope(used, f"repository:aws/{ROLE}/helper:pull,push")
    assert push["outcome"] == "success", push
    assert push["decision"]["rules"] == ["aws-deployer"]
    (denied,) = _with_scope(used, "repository:team/app:pull,push")
    assert denied["reason"] == "SCOPE_DENIED", denied
    registry_log = stack.registry.log_text()
    assert f'"PUT /v2/aws/{ROLE}/helper/manifests/1 HTTP/1.1" 201' in registry_log
    assert "PUT /v2/team/app/manifests/helper" not in registry_log

    # the cache, in skopeo's XDG_CACHE_HOME, 0600, keyed by what skopeo asked for
    assert stat.S_IMODE(skopeo.helper_cache.stat().st_mode) == 0o600
    cached = json.loads(skopeo.helper_cache.read_text())["servers"]
    assert list(cached) == [stack.host]
    assert cached[stack.host]["server_url"] == stack.host
    session: str = cached[stack.host]["secret"]
    assert session.startswith("asr_")
    assert session not in stack.authsvc.log_text()

    # the helper's own protocol, as skopeo saw it: the cached credential, no exchange
    mark = len(stack.audit_events())
    answered = skopeo.helper("get", stack.host + "\n")
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == {
        "ServerURL": stack.host,
        "Username": "<token>",
        "Secret": session,
    }
    unknown = skopeo.helper("get", "registry.elsewhere")
    assert unknown.returncode == 1
    assert unknown.stdout.strip() == "credentials not found in native keychain"
    assert _events_since(stack, mark) == []


# --------------------------------------------------------------------------- 3


def test_a_proof_signed_for_another_server_is_refused(stack: Stack, moto_aws: MotoAws) -> None:
    """Valid AWS credentials, a valid signature, but the signed X-Authsvc-Server-Id names
    another authsvc: refused before STS is asked, as a subject token and as a password."""
    proof = moto_aws.sign(moto_aws.assume_role("e2e-foreign"), server_id=OTHER_SERVER_ID)
    mark = len(stack.audit_events())

    answer = exchange(stack, proof, (f"repository:aws/{ROLE}/app:pull",))
    assert answer.status == 401, answer.body
    assert answer.json() == {"error": "invalid_grant", "error_description": SERVER_ID_MISMATCH}

    as_password = http_request(
        "GET",
        f"{stack.authsvc.realm}?service={SERVICE}&scope=repository:aws/{ROLE}/app:pull",
        headers=basic_auth("aws", proof),
    )
    assert as_password.status == 401, as_password.body
    (error,) = as_password.json()["errors"]
    assert error == {"code": "UNAUTHORIZED", "message": SERVER_ID_MISMATCH}

    refusals = _events_since(stack, mark)
    assert [e["reason"] for e in refusals] == ["SERVER_ID_MISMATCH"] * 2, refusals
    assert [e["actor"]["credential"] for e in refusals] == ["subject_token", "password"]
    for event in refusals:
        assert event["outcome"] == "failure"
        assert "provider" not in event["actor"]  # nobody was authenticated
        assert event["decision"]["granted"] == []


def test_a_proof_is_exchanged_once(stack: Stack, moto_aws: MotoAws) -> None:
    proof = moto_aws.sign(moto_aws.assume_role("e2e-replay"))
    scope = f"repository:aws/{ROLE}/app:pull"
    first = exchange(stack, proof, (scope,))
    assert first.status == 200, stack.explain(f"exchange: {first.status} {first.body!r}")
    body = first.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["scope"] == scope
    assert body["refresh_token"].startswith("asr_")

    mark = len(stack.audit_events())
    replay = exchange(stack, proof, (scope,))
    assert replay.status == 401, replay.body
    assert replay.json() == {"error": "invalid_grant", "error_description": ALREADY_USED}
    (event,) = _events_since(stack, mark)
    assert event["outcome"] == "failure", event
    assert event["reason"] == "TOKEN_REPLAYED"
    assert event["actor"]["credential"] == "subject_token"
    assert event["decision"]["granted"] == []
