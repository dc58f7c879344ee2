"""End to end: CI identities. A real OIDC issuer on 127.0.0.1 -> `authsvc serve` -> the
real registry 2.8 and skopeo 1.9.3.

This module has its own stack (it overrides conftest's `stack` fixture, so failure
reports still carry both logs): two `TestIssuer`s started first, one standing in for
GitHub Actions (preset github-actions) and one for GitLab (preset gitlab), then the
configuration of conftest's `running_stack` (static users included) plus those issuers
and one rule each:

* `ci-push`: a GitHub job of owner id 65 on a GitHub-hosted runner may pull and push
  `ci/<repository, lower-cased>/**` (the preset refuses pull_request_target implicitly);
* `gitlab-push`: a GitLab job of namespace id 7 may pull and push
  `ci/<project_path, lower-cased>/**`.

The GitHub issuer has `leeway: 0`, registry tokens of `token_ttl: 120` s and sessions of
`session_ttl: 600` s, so that a token can expire within a few seconds of the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.oidc_issuer import TestIssuer

from .conftest import (
    SERVICE,
    Stack,
    authsvc_argv,
    basic_auth,
    jwt_claims,
    running_stack,
)
from .harness import (
    HttpResponse,
    OciImage,
    describe_oci_image,
    http_request,
    make_oci_image,
    require_e2e_binaries,
)

pytestmark = pytest.mark.e2e

DENIED = "denied: requested access to the resource is denied"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
#: The audience both issuers' tokens are for (what a job asks its platform for).
AUDIENCE = "https://registry.e2e"
OWNER_ID = "65"
NAMESPACE_ID = "7"
TOKEN_TTL = 120
SESSION_TTL = 600
#: `authsvc login oidc` is run with this interpreter, like every other authsvc command.
LOGIN_TIMEOUT = 30.0


# --------------------------------------------------------------------------- the stack


def github_claims(**extra: Any) -> dict[str, Any]:
    """What a GitHub Actions job's ID token says (a push to main of Acme/App)."""
    claims: dict[str, Any] = {
        "sub": "repo:Acme/App:ref:refs/heads/main",
        "repository": "Acme/App",
        "repository_id": "74",
        "repository_owner": "Acme",
        "repository_owner_id": OWNER_ID,
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "event_name": "push",
        "workflow": "release",
        "run_id": "1234",
        "runner_environment": "github-hosted",
    }
    claims.update(extra)
    return claims


def gitlab_claims(**extra: Any) -> dict[str, Any]:
    """What a GitLab CI job's `id_tokens` token says (a pipeline of acme/tools on main)."""
    claims: dict[str, Any] = {
        "sub": "project_path:acme/tools:ref_type:branch:ref:main",
        "namespace_id": NAMESPACE_ID,
        "namespace_path": "acme",
        "project_id": "42",
        "project_path": "acme/tools",
        "pipeline_id": "555",
        "pipeline_source": "push",
        "job_id": "9001",
        "ref": "main",
        "ref_type": "branch",
        "ref_protected": "true",
        "runner_environment": "gitlab-hosted",
    }
    claims.update(extra)
    return claims


def _add_issuers(config: dict[str, Any], github: TestIssuer, gitlab: TestIssuer) -> None:
    config["identities"]["oidc"] = {
        "gh": {
            "preset": "github-actions",
            "issuer": github.url,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "ES256"],
            "leeway": 0,
            "token_ttl": TOKEN_TTL,
            "session_ttl": SESSION_TTL,
        },
        "gl": {"preset": "gitlab", "issuer": gitlab.url, "audience": AUDIENCE},
    }
    config["rules"] += [
        {
            "id": "ci-push",
            "match": {
                "provider": "gh",
                "claims": {"repository_owner_id": OWNER_ID, "runner_environment": "github-hosted"},
            },
            "allow": [
                {"repository": "ci/${claims.repository|lower}/**", "actions": ["pull", "push"]}
            ],
        },
        {
            "id": "gitlab-push",
            "match": {"provider": "gl", "claims": {"namespace_id": NAMESPACE_ID}},
            "allow": [
                {"repository": "ci/${claims.project_path|lower}/**", "actions": ["pull", "push"]}
            ],
        },
    ]


@pytest.fixture(scope="module")
def github_issuer() -> Iterator[TestIssuer]:
    with TestIssuer(audience=AUDIENCE) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def gitlab_issuer() -> Iterator[TestIssuer]:
    with TestIssuer(audience=AUDIENCE) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, github_issuer: TestIssuer, gitlab_issuer: TestIssuer
) -> Iterator[Stack]:
    """This module's stack: conftest's, plus the two OIDC issuers and their rules."""
    require_e2e_binaries()
    with running_stack(
        tmp_path_factory.mktemp("oidc-flow"),
        lambda config: _add_issuers(config, github_issuer, gitlab_issuer),
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


def exchange(stack: Stack, token: str, scopes: tuple[str, ...] = ()) -> HttpResponse:
    """POST /token: the RFC 8693 token exchange of an ID token."""
    form = [
        ("grant_type", EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", ID_TOKEN),
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


def _events_for(stack: Stack, jti: str) -> list[dict[str, Any]]:
    """The audit events of every use of the ID token `jti` (not of its sessions)."""
    return [e for e in stack.audit_events() if e["actor"].get("claims", {}).get("jti") == jti]


def _events_since(stack: Stack, start: int) -> list[dict[str, Any]]:
    return stack.audit_events()[start:]


def _with_scope(events: list[dict[str, Any]], scope: str) -> list[dict[str, Any]]:
    return [e for e in events if e["request"]["scopes"] == [scope]]


def _login_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AUTHSVC_", "ACTIONS_ID_TOKEN_"))
    }
    env.update(extra)
    return env


def login_oidc(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`authsvc login oidc ARGS...` as a CI job runs it (never raises on a failure)."""
    return subprocess.run(
        authsvc_argv("login", "oidc", *args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_login_env(env),
        timeout=LOGIN_TIMEOUT,
        check=False,
    )


def _session_from(stack: Stack, proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, stack.explain(
        f"authsvc login oidc exited {proc.returncode}\n--- stderr:\n{proc.stderr}"
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("asr_"), proc.stdout
    return lines[0]


@dataclass
class FakeGitHubTokenEndpoint:
    """GitHub's ACTIONS_ID_TOKEN_REQUEST_URL: `GET URL&audience=AUD` with `Authorization:
    bearer ACTIONS_ID_TOKEN_REQUEST_TOKEN` -> `{"value": <an ID token for AUD>}`.

    Tokens are minted by `issuer` with the audience asked for (as GitHub does); a wrong
    bearer gets 401, a request without an audience 400. Every request is recorded.
    """

    issuer: TestIssuer
    claims: dict[str, Any] = field(default_factory=github_claims)
    request_token: str = "gh-runtime-request-token"
    requests: list[dict[str, Any]] = field(default_factory=list)
    minted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Like the real one: it already carries a query string."""
        return (
            f"http://127.0.0.1:{self._server.server_address[1]}/_apis/pipelines/idtoken"
            "?api-version=2.0"
        )

    def env(self) -> dict[str, str]:
        return {
            "ACTIONS_ID_TOKEN_REQUEST_URL": self.url,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.request_token,
        }

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        authorization = handler.headers.get("Authorization", "")
        self.requests.append({"path": parts.path, "query": query, "authorization": authorization})
        scheme, _, bearer = authorization.partition(" ")
        status: int
        body: dict[str, Any]
        if scheme.lower() != "bearer" or bearer != self.request_token:
            status, body = 401, {"message": "bad request token"}
        elif len(query.get("audience", [])) != 1:
            status, body = 400, {"message": "audience is required"}
        else:
            token = self.issuer.mint({**self.claims, "aud": query["audience"][0]})
            self.minted.append(token)
            status, body = 200, {"count": 1, "value": token}
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


@pytest.fixture
def github_token_endpoint(github_issuer: TestIssuer) -> Iterator[FakeGitHubTokenEndpoint]:
    endpoint = FakeGitHubTokenEndpoint(github_issuer)
    yield endpoint
    endpoint.close()


# --------------------------------------------------------------------------- 1


def test_ci_token_as_password_pushes_only_to_its_own_repositories(
    stack: Stack, github_issuer: TestIssuer
) -> None:
    token = github_issuer.mint(github_claims())
    jti = jwt_claims(token)["jti"]
    creds = f"ci:{token}"
    image = _image(stack, "ci-img")
    ref = stack.ref("ci/acme/app/img", "1")

    skopeo = stack.skopeo("ci-password")
    stack.ok(skopeo.copy(_oci(image), ref, creds=creds))
    inspected = stack.ok(skopeo.inspect(ref, creds)).json()
    assert inspected["Digest"] == image.manifest_digest
    assert inspected["Layers"] == list(image.layer_digests)
    assert len(inspected["Layers"]) == 2

    # the same token, elsewhere: authsvc grants nothing there (not even pull), so the
    # registry refuses skopeo's first request, the HEAD of a blob
    refused = stack.skopeo("ci-password-refused")
    for repository in ("team/app", "ci/other/x"):
        stack.refused(
            refused.copy(_oci(image), stack.ref(repository, "1"), creds=creds),
            f"exists in {stack.host}/{repository}: errors:",
            DENIED,
        )

    events = _events_for(stack, jti)
    # copy + inspect (twice: the tag list opens a second client) + two refused copies
    assert len(events) >= 5, stack.explain(f"audit events for the token: {events!r}")
    # one verification and claim, then the byte-identical password is accepted again
    reuses = [e["actor"].get("reuse") for e in events]
    assert sorted(reuses, key=bool) == [None] + [True] * (len(events) - 1), reuses
    for event in events:
        assert event["actor"]["credential"] == "password"
        assert event["actor"]["username"] == "ci"
        assert event["actor"]["provider"] == "gh"
        assert event["actor"]["kind"] == "ci"
        assert event["actor"]["subject"] == "repo:Acme/App:ref:refs/heads/main"
        assert event["actor"]["claims"]["repository"] == "Acme/App"
        assert event["client"]["user_agent"].startswith("skopeo/")

    (push,) = _with_scope(events, "repository:ci/acme/app/img:pull,push")
    assert push["outcome"] == "success"
    assert push["decision"]["granted"] == ["repository:ci/acme/app/img:pull,push"]
    assert push["decision"]["rules"] == ["ci-push"]
    assert push["token"]["exp"] - push["time"] // 1000 == TOKEN_TTL  # the issuer's token_ttl
    for repository in ("team/app", "ci/other/x"):
        # the rule matches the job, but its pattern covers only ci/acme/app/**
        (denied,) = _with_scope(events, f"repository:{repository}:pull,push")
        assert denied["outcome"] == "failure", denied
        assert denied["reason"] == "SCOPE_DENIED"
        assert denied["decision"]["granted"] == []
        assert denied["decision"]["rules"] == ["ci-push"]

    # the registry stored exactly the allowed tag; the token never reached the log
    registry_log = stack.registry.log_text()
    assert '"PUT /v2/ci/acme/app/img/manifests/1 HTTP/1.1" 201' in registry_log
    assert "PUT /v2/team/app/manifests/1" not in registry_log
    assert "PUT /v2/ci/other/x/manifests/1" not in registry_log
    assert token.split(".")[2] not in stack.authsvc.log_text()


# --------------------------------------------------------------------------- 2


def test_exchanged_session_outlives_the_id_token(stack: Stack, github_issuer: TestIssuer) -> None:
    # Minted 50 s ago for 57 s (an expiry 7 s from now, not a 40 s wait); leeway is 0.
    now = int(time.time())
    token = github_issuer.mint(github_claims(), iat=now - 50, lifetime=57)
    expires_at = int(jwt_claims(token)["exp"])

    answer = exchange(stack, token, ("repository:ci/acme/app/big:pull,push",))
    assert answer.status == 200, stack.explain(f"exchange: {answer.status} {answer.body!r}")
    body = answer.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "repository:ci/acme/app/big:pull,push"
    assert body["expires_in"] == TOKEN_TTL
    assert jwt_claims(body["token"])["access"] == [
        {"type": "repository", "name": "ci/acme/app/big", "actions": ["pull", "push"]}
    ]
    session: str = body["refresh_token"]
    assert session.startswith("asr_")
    assert answer.header("Cache-Control") == "no-store"

    # a sibling token, expiring at the same second, used as a password only: its second
    # use is answered from the verified-credential cache
    sibling = github_issuer.mint(github_claims(), iat=now - 50, lifetime=57)
    pull_url = f"{stack.authsvc.realm}?service={SERVICE}&scope=repository:ci/acme/app/big:pull"
    for _ in range(2):
        used = http_request("GET", pull_url, headers=basic_auth("ci", sibling))
        assert used.status == 200, stack.explain(f"{used.status} {used.body!r}")
    assert [e["actor"].get("reuse") for e in _events_for(stack, jwt_claims(sibling)["jti"])] == [
        None,
        True,
    ]

    image = _image(stack, "ci-big", layers=3)
    while time.time() < expires_at + 1:  # until the ID token has expired
        time.sleep(0.2)

    # the raw tokens are now refused: as passwords (the cache does not outlive exp) and
    # as a second exchange
    mark = len(stack.audit_events())
    for expired_token in (token, sibling):
        direct = http_request("GET", pull_url, headers=basic_auth("ci", expired_token))
        assert direct.status == 401, direct.body
        assert "the token expired" in direct.json()["errors"][0]["message"]
    again = exchange(stack, token)
    assert again.status == 401, again.body
    assert again.json()["error"] == "invalid_grant"
    assert "the token expired" in again.json()["error_description"]
    skopeo = stack.skopeo("ci-session")
    stack.refused(
        skopeo.inspect(stack.ref("ci/acme/app/big", "1"), f"ci:{token}"),
        "unable to retrieve auth token: invalid username/password: unauthorized: the token expired",
    )
    expired = _events_since(stack, mark)
    assert [e["reason"] for e in expired] == ["TOKEN_EXPIRED"] * len(expired), expired
    assert len(expired) >= 4

    # the session credential still works: a 3-layer push, then an inspect
    mark = len(stack.audit_events())
    ref = stack.ref("ci/acme/app/big", "1")
    stack.ok(skopeo.copy(_oci(image), ref, dest_creds=_session_creds(session)))
    inspected = stack.ok(skopeo.inspect(ref, _session_creds(session))).json()
    assert inspected["Digest"] == image.manifest_digest
    assert inspected["Layers"] == list(image.layer_digests)
    assert len(inspected["Layers"]) == 3

    events = _events_since(stack, mark)
    (push,) = _with_scope(events, "repository:ci/acme/app/big:pull,push")
    assert push["actor"]["credential"] == "refresh_token"
    assert push["actor"]["provider"] == "gh"
    assert push["actor"]["subject"] == "repo:Acme/App:ref:refs/heads/main"
    assert push["decision"]["granted"] == ["repository:ci/acme/app/big:pull,push"]
    assert push["decision"]["rules"] == ["ci-push"]
    assert push["token"]["exp"] - push["time"] // 1000 == TOKEN_TTL
    assert session not in stack.authsvc.log_text()


# --------------------------------------------------------------------------- 3


def test_login_oidc_from_a_github_job(
    stack: Stack, github_token_endpoint: FakeGitHubTokenEndpoint
) -> None:
    mark = len(stack.audit_events())
    proc = login_oidc(
        "--registry",
        stack.registry.url,
        "--source",
        "github",
        "--audience",
        AUDIENCE,
        env=github_token_endpoint.env(),
    )
    session = _session_from(stack, proc)

    # it asked GitHub once, with the job's request token, for our audience
    (asked,) = github_token_endpoint.requests
    assert asked["path"] == "/_apis/pipelines/idtoken"
    assert asked["query"] == {"api-version": ["2.0"], "audience": [AUDIENCE]}
    assert asked["authorization"] == f"bearer {github_token_endpoint.request_token}"
    (token,) = github_token_endpoint.minted
    assert token not in proc.stdout + proc.stderr

    # and exchanged that token at the realm named by the registry's challenge
    (event,) = _events_since(stack, mark)
    assert event["outcome"] == "success", event
    assert event["request"]["grant_type"] == EXCHANGE
    assert event["request"]["service"] == SERVICE
    assert event["client"]["client_id"] == "authsvc-login"
    assert event["actor"]["credential"] == "subject_token"
    assert event["actor"]["provider"] == "gh"
    assert event["actor"]["claims"]["jti"] == jwt_claims(token)["jti"]

    image = _image(stack, "ci-login")
    ref = stack.ref("ci/acme/app/login", "1")
    skopeo = stack.skopeo("ci-login")
    stack.ok(skopeo.copy(_oci(image), ref, dest_creds=_session_creds(session)))
    assert stack.ok(skopeo.inspect(ref, _session_creds(session))).json()["Digest"] == (
        image.manifest_digest
    )
    stack.refused(
        skopeo.copy(
            _oci(image), stack.ref("team/app", "login"), dest_creds=_session_creds(session)
        ),
        DENIED,
    )


def test_login_oidc_github_token_for_another_audience_is_refused(
    stack: Stack, github_token_endpoint: FakeGitHubTokenEndpoint
) -> None:
    mark = len(stack.audit_events())
    proc = login_oidc(
        "--registry",
        stack.registry.url,
        "--source",
        "github",
        "--audience",
        "https://other-registry.example",
        env=github_token_endpoint.env(),
    )
    assert proc.returncode == 1, proc
    assert proc.stdout == ""
    assert "authsvc: authsvc refused the token (401)" in proc.stderr, proc.stderr
    (asked,) = github_token_endpoint.requests
    assert asked["query"]["audience"] == ["https://other-registry.example"]
    (event,) = _events_since(stack, mark)
    assert event["reason"] == "WRONG_AUDIENCE", event


def test_login_oidc_from_a_gitlab_job(stack: Stack, gitlab_issuer: TestIssuer) -> None:
    """GitLab's `id_tokens:` put the token in a variable the job names: --source env:VAR
    (and the realm and service given directly instead of discovered)."""
    token = gitlab_issuer.mint(gitlab_claims())
    proc = login_oidc(
        "--realm",
        stack.authsvc.realm,
        "--service",
        SERVICE,
        "--source",
        "env:REGISTRY_ID_TOKEN",
        env={"REGISTRY_ID_TOKEN": token + "\n"},
    )
    session = _session_from(stack, proc)
    assert token not in proc.stdout + proc.stderr

    mark = len(stack.audit_events())
    image = _image(stack, "gl-tools")
    skopeo = stack.skopeo("gl-login")
    stack.ok(
        skopeo.copy(
            _oci(image), stack.ref("ci/acme/tools/img", "1"), dest_creds=_session_creds(session)
        )
    )
    # a GitLab project's session gets nothing under a GitHub repository's prefix
    stack.refused(
        skopeo.copy(
            _oci(image), stack.ref("ci/acme/app/gl", "1"), dest_creds=_session_creds(session)
        ),
        DENIED,
    )
    events = _events_since(stack, mark)
    (push,) = _with_scope(events, "repository:ci/acme/tools/img:pull,push")
    assert push["actor"]["provider"] == "gl"
    assert push["actor"]["subject"] == "project_path:acme/tools:ref_type:branch:ref:main"
    assert push["decision"]["rules"] == ["gitlab-push"]
    (denied,) = _with_scope(events, "repository:ci/acme/app/gl:pull,push")
    assert denied["decision"]["granted"] == []


# --------------------------------------------------------------------------- 4


def test_an_id_token_is_exchanged_once(stack: Stack, github_issuer: TestIssuer) -> None:
    token = github_issuer.mint(github_claims())
    first = exchange(stack, token)
    assert first.status == 200, stack.explain(f"exchange: {first.status} {first.body!r}")

    mark = len(stack.audit_events())
    replay = exchange(stack, token)
    assert replay.status == 401, replay.body
    assert replay.json()["error"] == "invalid_grant"
    assert "already used" in replay.json()["error_description"]
    assert "refresh_token" not in replay.json()
    # the CI login says so too
    proc = login_oidc(
        "--realm",
        stack.authsvc.realm,
        "--service",
        SERVICE,
        "--source",
        "env:ID_TOKEN",
        env={"ID_TOKEN": token},
    )
    assert proc.returncode == 1 and proc.stdout == "", proc
    assert "authsvc refused the token (401): this token was already used" in proc.stderr

    replays = _events_since(stack, mark)
    assert [e["reason"] for e in replays] == ["TOKEN_REPLAYED", "TOKEN_REPLAYED"], replays
    assert all(e["actor"]["credential"] == "subject_token" for e in replays)


def test_pull_request_target_token_cannot_push(stack: Stack, github_issuer: TestIssuer) -> None:
    """A fork's pull request runs the base repository's workflow under
    pull_request_target: its token carries the base repository's claims, and the preset
    adds `event_name not in [pull_request_target]` to every rule."""
    token = github_issuer.mint(github_claims(event_name="pull_request_target"))
    mark = len(stack.audit_events())
    image = _image(stack, "ci-prt", layers=1)
    skopeo = stack.skopeo("ci-prt")
    stack.refused(
        skopeo.copy(_oci(image), stack.ref("ci/acme/app/prt", "1"), creds=f"ci:{token}"),
        f"exists in {stack.host}/ci/acme/app/prt: errors:",
        DENIED,
    )
    (event,) = _with_scope(_events_since(stack, mark), "repository:ci/acme/app/prt:pull,push")
    assert event["actor"]["provider"] == "gh"  # authenticated: the token itself is valid
    assert event["actor"]["claims"]["event_name"] == "pull_request_target"
    assert event["outcome"] == "failure", event
    assert event["reason"] == "SCOPE_DENIED"
    assert event["decision"]["granted"] == []
    assert event["decision"]["rules"] == []
    assert "PUT /v2/ci/acme/app/prt/manifests/1" not in stack.registry.log_text()
