"""End to end: skopeo -> registry 2.8 -> authsvc, with real binaries on 127.0.0.1.

Every test runs against the module-scoped `stack` (see conftest.py): one `authsvc serve`
with users alice (dev: pull+push on team/**), reader (pull on team/**), admin (everything
plus the catalog) and anonymous pulls of public/**, and one registry trusting its bundle.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import ISSUER, SERVICE, Stack, jwt_claims, jwt_header, run_authsvc
from .harness import (
    SKOPEO_TIMEOUT,
    OciImage,
    SkopeoTimeoutError,
    describe_oci_image,
    http_request,
    make_oci_image,
)

pytestmark = pytest.mark.e2e

DENIED = "denied: requested access to the resource is denied"


@dataclass(frozen=True)
class Pushed:
    image: OciImage
    repository: str
    tag: str


def _image(stack: Stack, name: str, *, layers: int = 2) -> OciImage:
    return describe_oci_image(
        make_oci_image(stack.workdir / "images" / name, layers=layers, seed=name)
    )


def _oci(image: OciImage) -> str:
    return f"oci:{image.directory}:latest"


def _pull_dir(stack: Stack, name: str) -> Path:
    """A not-yet-existing OCI layout directory (its parent exists, as skopeo needs)."""
    parent = stack.workdir / "pulled"
    parent.mkdir(exist_ok=True)
    return parent / name


def _events_since(stack: Stack, start: int) -> list[dict[str, Any]]:
    return stack.audit_events()[start:]


@pytest.fixture(scope="module")
def team_app(stack: Stack) -> Pushed:
    """team/app:1, a 2-layer image pushed by alice."""
    image = _image(stack, "team-app")
    skopeo = stack.skopeo("alice-push")
    stack.ok(skopeo.copy(_oci(image), stack.ref("team/app", "1"), creds=stack.creds("alice")))
    return Pushed(image, "team/app", "1")


# --------------------------------------------------------------------------- 1


def test_alice_pushes_then_inspects_lists_and_pulls(stack: Stack, team_app: Pushed) -> None:
    image = team_app.image
    ref = stack.ref("team/app", "1")
    skopeo = stack.skopeo("alice")
    alice = stack.creds("alice")

    inspected = stack.ok(skopeo.inspect(ref, alice)).json()
    assert inspected["Digest"] == image.manifest_digest
    assert inspected["Layers"] == list(image.layer_digests)
    assert len(inspected["Layers"]) == 2

    tags = stack.ok(skopeo.list_tags(f"docker://{stack.host}/team/app", alice)).json()
    assert tags["Tags"] == ["1"]

    back_dir = _pull_dir(stack, "alice-app")
    stack.ok(skopeo.copy(ref, f"oci:{back_dir}:latest", creds=alice))
    back = describe_oci_image(back_dir)
    assert back.manifest_digest == image.manifest_digest
    assert back.layer_digests == image.layer_digests
    assert back.config_digest == image.config_digest

    # authsvc granted the push exactly as asked (and decided with the `dev` rule)
    pushes = [
        e
        for e in stack.audit_events()
        if e["actor"].get("username") == "alice"
        and e["request"]["scopes"] == ["repository:team/app:pull,push"]
    ]
    assert pushes, stack.explain("no audit event for alice's push of team/app")
    assert pushes[0]["outcome"] == "success"
    assert pushes[0]["decision"]["granted"] == ["repository:team/app:pull,push"]
    assert pushes[0]["decision"]["rules"] == ["dev"]
    assert pushes[0]["client"]["user_agent"].startswith("skopeo/")
    # and the registry really served the token-protected requests
    log = stack.registry.log_text()
    assert '"PUT /v2/team/app/manifests/1 HTTP/1.1" 201' in log


# --------------------------------------------------------------------------- 2


def test_reader_pulls_but_cannot_push(stack: Stack, team_app: Pushed) -> None:
    skopeo = stack.skopeo("reader")
    reader = stack.creds("reader")
    ref = stack.ref("team/app", "1")

    inspected = stack.ok(skopeo.inspect(ref, reader)).json()
    assert inspected["Digest"] == team_app.image.manifest_digest
    back_dir = _pull_dir(stack, "reader-app")
    stack.ok(skopeo.copy(ref, f"oci:{back_dir}:latest", creds=reader))
    assert describe_oci_image(back_dir).manifest_digest == team_app.image.manifest_digest

    mark = len(stack.audit_events())
    other = _image(stack, "reader-push", layers=1)
    pushed = skopeo.copy(_oci(other), stack.ref("team/app", "reader"), creds=reader)
    stack.refused(
        pushed, "writing blob: initiating layer upload to /v2/team/app/blobs/uploads/", DENIED
    )

    # authsvc granted only pull; the registry refused the upload with that token
    events = [
        e
        for e in _events_since(stack, mark)
        if e["request"]["scopes"] == ["repository:team/app:pull,push"]
    ]
    assert events, stack.explain("no audit event for reader's push attempt")
    assert events[0]["outcome"] == "partial"
    assert events[0]["decision"]["granted"] == ["repository:team/app:pull"]
    assert events[0]["decision"]["denied"] == ["repository:team/app:push"]
    # and the tag never appeared
    tags = stack.ok(skopeo.list_tags(f"docker://{stack.host}/team/app", reader)).json()
    assert "reader" not in tags["Tags"]


# --------------------------------------------------------------------------- 3


def test_delete_needs_star_alice_refused_admin_allowed(stack: Stack) -> None:
    image = _image(stack, "team-del", layers=1)
    ref = stack.ref("team/del", "1")
    alice = stack.skopeo("alice-del")
    stack.ok(alice.copy(_oci(image), ref, creds=stack.creds("alice")))

    mark = len(stack.audit_events())
    # skopeo asks for `*`, gets a token without it, retries with the scope of the
    # registry's insufficient_scope challenge (pull, then delete) and gives up on the 401
    stack.refused(
        alice.delete(ref, stack.creds("alice")),
        f"Failed to delete /v2/team/del/manifests/{image.manifest_digest}",
        '\\"Action\\":\\"delete\\"',
        "(401 Unauthorized)",
    )
    events = _events_since(stack, mark)
    (asked,) = [e for e in events if e["request"]["scopes"] == ["repository:team/del:*"]]
    assert asked["outcome"] == "failure", asked  # `*` needs pull, push AND delete
    assert asked["decision"]["granted"] == []
    assert asked["decision"]["denied"] == ["repository:team/del:*"]
    granted = {s for e in events for s in e["decision"]["granted"]}
    assert not {s for s in granted if "delete" in s or s.endswith("*")}, granted
    assert stack.ok(alice.inspect(ref, stack.creds("alice"))).json()["Digest"] == (
        image.manifest_digest
    )

    admin = stack.skopeo("admin-del")
    stack.ok(admin.delete(ref, stack.creds("admin")))
    assert f"DELETE /v2/team/del/manifests/{image.manifest_digest}" in stack.registry.log_text()
    stack.refused(admin.inspect(ref, stack.creds("admin")), "manifest unknown")


# --------------------------------------------------------------------------- 4


def test_wrong_password_is_refused(stack: Stack) -> None:
    skopeo = stack.skopeo("wrong-password")
    mark = len(stack.audit_events())
    stack.refused(
        skopeo.inspect(stack.ref("team/app", "1"), "alice:not-her-password"),
        "unable to retrieve auth token: invalid username/password: unauthorized: "
        "invalid username or password",
    )
    direct = stack.token_response(["repository:team/app:pull"], user="alice", password="nope")
    assert direct.status == 401
    assert direct.json() == {
        "errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]
    }
    assert (direct.header("WWW-Authenticate") or "").startswith("Basic realm=")

    failures = [e for e in _events_since(stack, mark) if e["outcome"] == "failure"]
    assert len(failures) >= 2, stack.explain("failed logins were not audited")
    assert {e["reason"] for e in failures} == {"INVALID_CREDENTIALS"}
    log = stack.authsvc.log_text()
    assert "not-her-password" not in log  # never a password in the audit trail


# --------------------------------------------------------------------------- 5


def test_anonymous_pulls_public_but_not_team(stack: Stack, team_app: Pushed) -> None:
    image = _image(stack, "public-base", layers=1)
    public_ref = stack.ref("public/base", "1")
    stack.ok(stack.skopeo("admin-public").copy(_oci(image), public_ref, creds=stack.creds("admin")))

    anonymous = stack.skopeo("anonymous")
    assert anonymous.read_authfile() == {}
    inspected = stack.ok(anonymous.inspect(public_ref)).json()
    assert inspected["Digest"] == image.manifest_digest
    back_dir = _pull_dir(stack, "anon-public")
    stack.ok(anonymous.copy(public_ref, f"oci:{back_dir}:latest"))
    assert describe_oci_image(back_dir).layer_digests == image.layer_digests

    mark = len(stack.audit_events())
    stack.refused(anonymous.inspect(stack.ref("team/app", "1")), "reading manifest 1 in", DENIED)
    refused = [
        e
        for e in _events_since(stack, mark)
        if e["request"]["scopes"] == ["repository:team/app:pull"]
    ]
    assert refused, stack.explain("no audit event for the anonymous team/app pull")
    assert refused[0]["actor"]["credential"] == "none"
    assert refused[0]["decision"]["granted"] == []


# --------------------------------------------------------------------------- 6


def test_catalog_needs_the_catalog_scope(stack: Stack, team_app: Pushed) -> None:
    admin_token = stack.token(["registry:catalog:*"], user="admin")
    assert jwt_claims(admin_token)["access"] == [
        {"type": "registry", "name": "catalog", "actions": ["*"]}
    ]
    catalog = stack.registry.get("/v2/_catalog", headers={"Authorization": f"Bearer {admin_token}"})
    assert catalog.status == 200, stack.explain(f"catalog: {catalog.status} {catalog.body!r}")
    assert team_app.repository in catalog.json()["repositories"]

    mark = len(stack.audit_events())
    alice_token = stack.token(["registry:catalog:*"], user="alice")
    assert jwt_claims(alice_token)["access"] == []  # a token, but without the catalog
    (asked,) = _events_since(stack, mark)
    assert (asked["outcome"], asked["reason"]) == ("failure", "SCOPE_DENIED")
    assert asked["decision"]["denied"] == ["registry:catalog:*"]
    refused = stack.registry.get("/v2/_catalog", headers={"Authorization": f"Bearer {alice_token}"})
    assert refused.status == 401
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    challenge = refused.header("WWW-Authenticate") or ""
    assert 'scope="registry:catalog:*"' in challenge
    assert 'error="insufficient_scope"' in challenge


# --------------------------------------------------------------------------- 7


def test_cross_repository_blob_mount(stack: Stack) -> None:
    image = _image(stack, "team-mount")
    skopeo = stack.skopeo("alice-mount")  # one blob-info cache for both pushes
    alice = stack.creds("alice")
    mark = len(stack.audit_events())
    stack.ok(skopeo.copy(_oci(image), stack.ref("team/a", "1"), creds=alice))
    stack.ok(skopeo.copy(_oci(image), stack.ref("team/b", "1"), creds=alice))

    two_scopes = ["repository:team/b:pull,push", "repository:team/a:pull"]
    mounts = [
        e
        for e in _events_since(stack, mark)
        if sorted(e["request"]["scopes"]) == sorted(two_scopes)
    ]
    assert mounts, stack.explain("skopeo never asked for a token for a cross-repository mount")
    assert sorted(mounts[0]["decision"]["granted"]) == sorted(two_scopes)
    assert mounts[0]["outcome"] == "success"

    log = stack.registry.log_text()
    mounted = [
        line
        for line in log.splitlines()
        if "POST /v2/team/b/blobs/uploads/?" in line
        and "mount=" in line
        and "from=team%2Fa" in line
    ]
    assert mounted, stack.explain("the registry log shows no mount POST into team/b")
    assert any('" 201 ' in line for line in mounted), mounted

    # by hand, with a token for both repositories: 201 Created, no upload needed
    digest = image.layer_digests[0]
    target = f"/v2/team/c/blobs/uploads/?mount={digest}&from=team/a"
    both = stack.token(["repository:team/c:pull,push", "repository:team/a:pull"], user="alice")
    created = http_request(
        "POST", stack.registry.url + target, headers={"Authorization": f"Bearer {both}"}
    )
    assert created.status == 201, stack.explain(f"mount: {created.status} {created.body!r}")
    assert created.header("Docker-Content-Digest") == digest
    assert (created.header("Location") or "").endswith(f"/v2/team/c/blobs/{digest}")
    head = http_request(
        "HEAD",
        stack.registry.url + f"/v2/team/c/blobs/{digest}",
        headers={"Authorization": f"Bearer {both}"},
    )
    assert head.status == 200

    # without pull on the source repository the registry refuses the mount
    only_dest = stack.token(["repository:team/d:pull,push"], user="alice")
    refused = http_request(
        "POST",
        stack.registry.url + f"/v2/team/d/blobs/uploads/?mount={digest}&from=team/a",
        headers={"Authorization": f"Bearer {only_dest}"},
    )
    assert refused.status == 401
    challenge = refused.header("WWW-Authenticate") or ""
    # the registry names what it missed: pull on the source (action order varies)
    asked_for = challenge.partition('scope="')[2].partition('"')[0].split()
    assert "repository:team/a:pull" in asked_for, challenge
    assert 'error="insufficient_scope"' in challenge


# --------------------------------------------------------------------------- 8


def test_skopeo_login_then_inspect_uses_stored_credentials(stack: Stack, team_app: Pushed) -> None:
    skopeo = stack.skopeo("login")
    mark = len(stack.audit_events())
    login = stack.ok(skopeo.login(stack.host, "alice", stack.passwords["alice"]))
    assert "Login Succeeded" in login.stdout
    stored = base64.b64encode(f"alice:{stack.passwords['alice']}".encode()).decode()
    assert skopeo.read_authfile() == {"auths": {stack.host: {"auth": stored}}}

    inspected = stack.ok(skopeo.inspect(stack.ref("team/app", "1"))).json()
    assert inspected["Digest"] == team_app.image.manifest_digest

    events = _events_since(stack, mark)
    login_events = [e for e in events if e["request"]["scopes"] == []]
    assert login_events and login_events[0]["outcome"] == "success"
    pulls = [e for e in events if e["request"]["scopes"] == ["repository:team/app:pull"]]
    assert pulls, stack.explain("inspect after login asked no token")
    assert {e["actor"]["credential"] for e in pulls} == {"password"}
    assert {e["actor"]["subject"] for e in pulls} == {"alice"}

    # logged out: anonymous again, and anonymous may not read team/**
    stack.ok(skopeo.logout(stack.host))
    stack.refused(skopeo.inspect(stack.ref("team/app", "1")), "reading manifest 1 in", DENIED)


# --------------------------------------------------------------------------- 9


def test_refresh_token_flow(stack: Stack, team_app: Pushed) -> None:
    # what dockerd's login does
    login = stack.token_response(
        user="alice", extra={"offline_token": "true", "client_id": "docker"}
    )
    assert login.status == 200, stack.explain(f"offline login: {login.status} {login.body!r}")
    refresh = login.json()["refresh_token"]
    assert isinstance(refresh, str) and refresh.startswith("asr_")
    assert refresh not in stack.authsvc.log_text()  # only fingerprints are logged
    offline = stack.audit_events()[-1]
    assert offline["request"]["offline"] is True
    assert offline["client"]["client_id"] == "docker"
    assert (offline["actor"]["credential"], offline["outcome"]) == ("password", "success")

    # as docker login writes it: the identity token plus base64("alice:")
    skopeo = stack.skopeo("refresh")
    skopeo.write_authfile(
        {
            "auths": {
                stack.host: {"auth": base64.b64encode(b"alice:").decode(), "identitytoken": refresh}
            }
        }
    )
    mark = len(stack.audit_events())
    ref = stack.ref("team/app", "1")
    assert stack.ok(skopeo.inspect(ref)).json()["Digest"] == team_app.image.manifest_digest
    back_dir = _pull_dir(stack, "refresh-app")
    stack.ok(skopeo.copy(ref, f"oci:{back_dir}:latest"))
    assert describe_oci_image(back_dir).layer_digests == team_app.image.layer_digests
    pushed = _image(stack, "refresh-push", layers=1)
    stack.ok(skopeo.copy(_oci(pushed), stack.ref("team/refresh", "1")))

    posts = [e for e in _events_since(stack, mark) if e["request"]["grant_type"]]
    assert posts, stack.explain("skopeo did not POST grant_type=refresh_token")
    assert {e["request"]["grant_type"] for e in posts} == {"refresh_token"}
    assert {e["client"]["client_id"] for e in posts} == {"containers/image"}
    assert {e["actor"]["credential"] for e in posts} == {"refresh_token"}
    assert {e["actor"]["subject"] for e in posts} == {"alice"}
    assert {e["outcome"] for e in posts} == {"success"}
    assert ["repository:team/refresh:pull,push"] in [e["request"]["scopes"] for e in posts]

    # the Docker credential-helper convention: user name `<token>`, password = refresh token
    plain = stack.skopeo("refresh-creds")
    inspected = stack.ok(plain.inspect(ref, f"<token>:{refresh}")).json()
    assert inspected["Digest"] == team_app.image.manifest_digest

    # a made-up refresh token (well-formed, never issued) is refused either way
    forged = "asr_" + "A" * 43
    stack.refused(
        plain.inspect(ref, f"<token>:{forged}"),
        "invalid username/password: unauthorized: refresh token is unknown, expired or revoked",
    )
    bogus = stack.skopeo("refresh-forged")
    bogus.write_authfile(
        {
            "auths": {
                stack.host: {"auth": base64.b64encode(b"alice:").decode(), "identitytoken": forged}
            }
        }
    )
    mark = len(stack.audit_events())
    # a 401 on the POST is fatal; its OAuth2 body has no Docker `errors`, hence the text
    stack.refused(
        bogus.inspect(ref),
        "unable to retrieve auth token: invalid username/"
        "password: unauthorized: authentication required",
    )
    (forged_post,) = _events_since(stack, mark)
    assert forged_post["request"]["grant_type"] == "refresh_token"
    assert (forged_post["outcome"], forged_post["reason"]) == ("failure", "TOKEN_EXPIRED")
    direct = http_request(
        "POST",
        stack.authsvc.realm,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=(
            f"client_id=e2e&grant_type=refresh_token&refresh_token={forged}"
            f"&service={SERVICE}&scope=repository%3Ateam%2Fapp%3Apull"
        ).encode(),
    )
    assert direct.status == 401
    assert direct.json() == {
        "error": "invalid_grant",
        "error_description": "refresh token is unknown, expired or revoked",
    }


# --------------------------------------------------------------------------- 10


@dataclass
class _Pull:
    started: float  # time.monotonic()
    ok: bool
    stderr: str


class _PullLoop:
    """reader's `skopeo inspect --raw` in a loop on a thread: one new token per pull."""

    def __init__(self, stack: Stack, ref: str, digest: str) -> None:
        self.stack = stack
        self.ref = ref
        self.digest = digest
        self.pulls: list[_Pull] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pull-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> list[_Pull]:
        """Stop after the pull in flight and return every pull."""
        self._stop.set()
        if self._thread.ident is None:  # never started
            return []
        self._thread.join(timeout=SKOPEO_TIMEOUT + 5)
        assert not self._thread.is_alive(), "the pull loop did not stop"
        return list(self.pulls)

    def wait_for(self, condition: Callable[[list[_Pull]], bool], timeout: float = 30.0) -> None:
        """Block until `condition(pulls so far)` holds (pulls are slow on a busy machine)."""
        deadline = time.monotonic() + timeout
        while not condition(list(self.pulls)):
            assert time.monotonic() < deadline, f"pull loop: condition not met: {self.pulls}"
            assert self._thread.is_alive(), "the pull loop died"
            time.sleep(0.05)

    def _run(self) -> None:
        skopeo = self.stack.skopeo("rotation-loop")
        creds = self.stack.creds("reader")
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                result = skopeo.inspect(self.ref, creds, raw=True)
            except SkopeoTimeoutError as exc:  # a hang is a failed pull too
                self.pulls.append(_Pull(started, False, str(exc)))
                continue
            digest = "sha256:" + hashlib.sha256(result.stdout.encode()).hexdigest()
            self.pulls.append(_Pull(started, result.ok and digest == self.digest, result.stderr))


@pytest.fixture
def pull_loop(stack: Stack, team_app: Pushed) -> Iterator[_PullLoop]:
    loop = _PullLoop(stack, stack.ref("team/app", "1"), team_app.image.manifest_digest)
    try:
        yield loop
    finally:
        loop.finish()


def test_key_rotation_mid_run_without_a_failed_pull(stack: Stack, pull_loop: _PullLoop) -> None:
    old, staged = stack.initial_keys
    assert jwt_header(stack.token(["repository:team/app:pull"], user="reader"))["kid"] == old.kid
    mark = len(stack.audit_events())

    pull_loop.start()
    time.sleep(2.0)  # pulls with tokens signed by the old key
    pull_loop.wait_for(lambda pulls: len(pulls) >= 2)
    rotating = time.monotonic()
    out = run_authsvc("keys", "rotate", "--dir", str(stack.keys_dir))
    rotated_at = time.monotonic()  # ring.json has been replaced
    assert out.split()[0] == staged.id, out
    assert {k.id: k.state for k in stack.key_ring()} == {old.id: "previous", staged.id: "active"}

    time.sleep(max(0.0, rotated_at + 1.5 - time.monotonic()))  # ring.json: stat'ed once a second
    token = stack.token(["repository:team/app:pull"], user="reader")
    header = jwt_header(token)
    assert header["kid"] == staged.kid, stack.explain(f"1.5 s after the rotation: {header}")
    # the x5c certificate is the promoted key's, and its key verifies the signature
    cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    own = x509.load_pem_x509_certificate((stack.keys_dir / f"{staged.id}.crt.pem").read_bytes())
    assert cert == own
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    claims = jwt.decode(
        token, public_key, algorithms=[header["alg"]], audience=SERVICE, issuer=ISSUER
    )
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]

    time.sleep(max(0.0, rotated_at + 3.5 - time.monotonic()))  # pulls with the new key
    pull_loop.wait_for(lambda pulls: sum(p.started > rotated_at + 1.5 for p in pulls) >= 2)
    pulls = pull_loop.finish()
    failed = [(round(p.started - rotating, 2), p.stderr) for p in pulls if not p.ok]
    assert not failed, stack.explain(f"pulls failed (seconds after the rotation, stderr): {failed}")
    assert sum(p.started < rotating for p in pulls) >= 2, pulls
    assert sum(p.started > rotated_at + 1.5 for p in pulls) >= 2, pulls

    # the loop's tokens were signed by both keys, and the registry (never restarted:
    # the staged key was in its bundle from the start) accepted all of them
    loop_kids = [
        e["token"]["kid"]
        for e in _events_since(stack, mark)
        if e["actor"].get("username") == "reader"
        and e["client"]["user_agent"].startswith("skopeo/")
    ]
    assert len(loop_kids) == len(pulls)
    assert loop_kids.count(old.kid) >= 2 and loop_kids.count(staged.kid) >= 2, loop_kids
    assert loop_kids == sorted(loop_kids, key=lambda kid: kid == staged.kid), loop_kids
    assert stack.registry.log_text().count("--- harness: starting registry") == 1
