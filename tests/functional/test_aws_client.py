"""AWS IAM identities, client side: the signed proof, ``authsvc login aws`` and the
``docker-credential-authsvc`` helper, against a fake authsvc token endpoint on 127.0.0.1
(nothing here reaches AWS; STS itself is exercised end to end elsewhere)."""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from authsvc import awsclient, credential_helper
from authsvc.cli import main as cli_main
from authsvc.identity.aws.proof import SUBJECT_TOKEN_TYPE
from authsvc.identity.aws.settings import SERVER_ID_HEADER
from authsvc.login import LoginError

ACCESS_KEY = "AKIDAUTHSVCTEST0001"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYAUTHSVCTEST"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"
SERVER_ID = "registry-prod-01"
SERVICE = "registry.test"
REGISTRY = "registry.test"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


# -- helpers ----------------------------------------------------------------------------


def decode(proof: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(proof + "=" * (-len(proof) % 4))
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


def lower_headers(proof: dict[str, Any]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in proof["headers"].items()}


def verify_sigv4(proof: dict[str, Any], secret_key: str) -> dict[str, str]:
    """Recompute the SigV4 signature from the proof's method, URL, headers and body alone:
    the proof carries exactly what was signed. Returns the Authorization fields."""
    headers = lower_headers(proof)
    scheme, _, rest = headers["authorization"].partition(" ")
    assert scheme == "AWS4-HMAC-SHA256"
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    _, date, region, service, terminal = fields["Credential"].split("/")
    assert terminal == "aws4_request"
    signed = fields["SignedHeaders"].split(";")
    canonical_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed)
    path = urllib.parse.urlsplit(proof["url"]).path or "/"
    canonical = "\n".join([
        proof["method"], path, "", canonical_headers, fields["SignedHeaders"],
        hashlib.sha256(proof["body"].encode()).hexdigest(),
    ])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", headers["x-amz-date"], scope,
        hashlib.sha256(canonical.encode()).hexdigest(),
    ])
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["Signature"])
    return {"region": region, "service": service, "signed": fields["SignedHeaders"],
            "access_key": fields["Credential"].split("/")[0]}


def static_session(token: str | None = SESSION_TOKEN) -> Any:
    session = botocore.session.Session()
    session.set_credentials(ACCESS_KEY, SECRET_KEY, token)
    return session


NO_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
    "AWS_SECURITY_TOKEN": "", "AWS_PROFILE": None, "AWS_DEFAULT_PROFILE": None,
    "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_WEB_IDENTITY_TOKEN_FILE": None, "AWS_ROLE_ARN": None,
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None, "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None]) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static AWS credentials from the environment, and no other source."""
    set_env(monkeypatch, {**NO_AWS_ENV, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                          "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": None,
                          "AWS_SECURITY_TOKEN": None})


# -- a fake authsvc: a registry challenge and a token endpoint ---------------------------


@dataclass
class FakeAuthsvc:
    url: str = ""
    #: the token endpoint's forms, in order
    forms: list[dict[str, list[str]]] = field(default_factory=list)
    #: refresh_expires_in to answer with; None leaves it out
    lifetime: int | None = 900
    refuse: bool = False
    #: seconds each exchange takes
    delay: float = 0.0

    @property
    def realm(self) -> str:
        return f"{self.url}/token"


@pytest.fixture
def authsvc() -> Iterator[FakeAuthsvc]:
    fake = FakeAuthsvc()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, status: int, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path != "/v2/":
                return self.answer(404, {})
            challenge = f'Bearer realm="{fake.realm}",service="{SERVICE}"'
            self.answer(401, {"errors": []}, {"WWW-Authenticate": challenge})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            if self.path != "/token":
                return self.answer(404, {})
            fake.forms.append(form)
            time.sleep(fake.delay)
            if fake.refuse:
                return self.answer(401, {"error": "invalid_grant",
                                         "error_description": "the AWS account is not allowed"})
            if form.get("grant_type") != [EXCHANGE] or form.get("subject_token_type") != [
                SUBJECT_TOKEN_TYPE
            ]:
                return self.answer(400, {"error": "invalid_request"})
            body: dict[str, Any] = {"token": "access", "expires_in": 300,
                                    "refresh_token": f"session-{len(fake.forms)}"}
            if fake.lifetime is not None:
                body["refresh_expires_in"] = fake.lifetime
            self.answer(200, body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


# -- sign_proof -------------------------------------------------------------------------


def test_sign_proof_signs_the_server_id() -> None:
    proof = decode(awsclient.sign_proof(server_id=SERVER_ID, session=static_session()))
    assert proof["method"] == "POST"
    assert proof["url"] == "https://sts.amazonaws.com/"
    assert proof["body"] == "Action=GetCallerIdentity&Version=2011-06-15"
    headers = lower_headers(proof)
    assert headers[SERVER_ID_HEADER] == SERVER_ID
    assert headers["host"] == "sts.amazonaws.com"
    assert headers["content-type"] == "application/x-www-form-urlencoded; charset=utf-8"
    assert headers["x-amz-security-token"] == SESSION_TOKEN
    signed_at = calendar.timegm(time.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ"))
    assert abs(time.time() - signed_at) < 300
    auth = verify_sigv4(proof, SECRET_KEY)
    assert auth == {"region": "us-east-1", "service": "sts", "access_key": ACCESS_KEY,
                    "signed": "content-type;host;x-amz-date;x-amz-security-token;"
                              "x-authsvc-nonce;x-authsvc-server-id"}
    assert SECRET_KEY not in json.dumps(proof)


def test_sign_proof_regional_host_and_test_url() -> None:
    proof = decode(awsclient.sign_proof(
        server_id=SERVER_ID, sts_host="sts.eu-west-1.amazonaws.com", region="eu-west-1",
        session=static_session(token=None), url="http://127.0.0.1:5999/",
    ))
    assert proof["url"] == "http://127.0.0.1:5999/"
    headers = lower_headers(proof)
    assert headers["host"] == "sts.eu-west-1.amazonaws.com"  # signed for the real host
    assert "x-amz-security-token" not in headers
    auth = verify_sigv4(proof, SECRET_KEY)
    assert auth["region"] == "eu-west-1"
    assert SERVER_ID_HEADER in auth["signed"].split(";")


def test_each_proof_is_fresh() -> None:
    first = awsclient.sign_proof(server_id=SERVER_ID, session=static_session())
    time.sleep(1.1)
    assert awsclient.sign_proof(server_id=SERVER_ID, session=static_session()) != first


def test_sign_proof_uses_the_credential_chain(aws_env: None) -> None:
    proof = decode(awsclient.sign_proof(server_id=SERVER_ID))
    assert verify_sigv4(proof, SECRET_KEY)["access_key"] == ACCESS_KEY


def test_sign_proof_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, NO_AWS_ENV)
    with pytest.raises(awsclient.NoCredentials, match="no AWS credentials found"):
        awsclient.sign_proof(server_id=SERVER_ID)
    monkeypatch.setenv("AWS_PROFILE", "nosuchprofile")
    with pytest.raises(awsclient.NoCredentials, match="cannot load AWS credentials"):
        awsclient.sign_proof(server_id=SERVER_ID)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server_id": ""}, "server id"),
        ({"server_id": "two words"}, "server id"),
        ({"server_id": SERVER_ID, "sts_host": "https://sts.amazonaws.com"}, "host name"),
        ({"server_id": SERVER_ID, "sts_host": "sts.amazonaws.com/x"}, "host name"),
    ],
)
def test_sign_proof_refuses_bad_arguments(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(LoginError, match=message):
        awsclient.sign_proof(session=static_session(), **kwargs)


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("sts.amazonaws.com", "us-east-1"),
        ("sts.eu-west-1.amazonaws.com", "eu-west-1"),
        ("sts-fips.us-east-2.amazonaws.com", "us-east-2"),
        ("sts.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("sts.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("localhost:5000", "us-east-1"),
    ],
)
def test_region_for(host: str, region: str) -> None:
    assert awsclient.region_for(host) == region


# -- authsvc login aws ------------------------------------------------------------------


def login(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli_main, ["login", "aws", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_login_aws_discovers_and_prints_the_session_credential(
    aws_env: None, authsvc: FakeAuthsvc
) -> None:
    code, out, err = login("--registry", authsvc.url, "--server-id", SERVER_ID)
    assert (code, out, err) == (0, "session-1\n", "")
    [form] = authsvc.forms
    assert form["service"] == [SERVICE]
    assert form["subject_token_type"] == [SUBJECT_TOKEN_TYPE]
    proof = decode(form["subject_token"][0])
    assert lower_headers(proof)[SERVER_ID_HEADER] == SERVER_ID
    verify_sigv4(proof, SECRET_KEY)


def test_login_aws_with_realm_and_regional_sts(aws_env: None, authsvc: FakeAuthsvc) -> None:
    code, out, _ = login("--realm", authsvc.realm, "--service", SERVICE, "--server-id",
                         SERVER_ID, "--sts-host", "sts.ap-southeast-2.amazonaws.com")
    assert (code, out) == (0, "session-1\n")
    proof = decode(authsvc.forms[0]["subject_token"][0])
    assert lower_headers(proof)["host"] == "sts.ap-southeast-2.amazonaws.com"
    assert verify_sigv4(proof, SECRET_KEY)["region"] == "ap-southeast-2"


def test_login_aws_reports_a_refusal(aws_env: None, authsvc: FakeAuthsvc) -> None:
    authsvc.refuse = True
    code, out, err = login("--realm", authsvc.realm, "--service", SERVICE,
                           "--server-id", SERVER_ID)
    assert (code, out) == (1, "")
    assert "authsvc refused the token (401): the AWS account is not allowed" in err
    assert authsvc.forms[0]["subject_token"][0] not in err
    assert SECRET_KEY not in err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--realm", "https://r.example/token", "--service", "r", "--server-id", SERVER_ID],
         NO_AWS_ENV, "no AWS credentials found"),
        (["--realm", "https://r.example/token", "--service", "r", "--server-id", SERVER_ID],
         {**NO_AWS_ENV, "AWS_PROFILE": "nosuchprofile"}, "cannot load AWS credentials"),
        (["--realm", "ftp://r.example/token", "--service", "r", "--server-id", SERVER_ID],
         {}, "realm 'ftp://r.example/token' must be https://"),
        (["--realm", "http://r.example/token", "--service", "r", "--server-id", SERVER_ID],
         {}, "realm 'http://r.example/token' must be https://"),
        (["--realm", "https://r.example/token", "--server-id", SERVER_ID], {},
         "give --realm and --service together"),
        (["--server-id", SERVER_ID], {}, "give --registry, or --realm and --service"),
        (["--registry", "ftp://r.example", "--server-id", SERVER_ID], {},
         "registry 'ftp://r.example' must be https://"),
        (["--registry", "http://127.0.0.1:1", "--server-id", SERVER_ID], {},
         "http://127.0.0.1:1/v2/"),
        (["--realm", "https://r.example/token", "--service", "r", "--server-id", SERVER_ID,
          "--sts-host", "https://sts.amazonaws.com"], {}, "must be a host name"),
    ],
)
def test_login_aws_refusals(aws_env: None, args: list[str], env: dict[str, str | None],
                            message: str) -> None:
    code, out, err = login(*args, env=env)
    assert code == 1
    assert message in err
    assert out == ""
    assert SECRET_KEY not in err


def test_login_aws_needs_a_server_id() -> None:
    code, _, err = login("--registry", "registry.example")
    assert code == 2
    assert "--server-id" in err


# -- docker-credential-authsvc ----------------------------------------------------------


@dataclass
class Helper:
    config: Path
    cache: Path

    def configure(self, registries: dict[str, Any]) -> None:
        self.config.write_text(json.dumps({"registries": registries}))

    def run(self, action: str, stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = credential_helper.main([action], stdin=io.StringIO(stdin), stdout=out,
                                      stderr=err)
        return code, out.getvalue(), err.getvalue()

    def cached(self) -> dict[str, Any]:
        data = json.loads(self.cache.read_text())
        servers = data["servers"]
        assert isinstance(servers, dict)
        return servers


@pytest.fixture
def helper(aws_env: None, authsvc: FakeAuthsvc, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Helper:
    config = tmp_path / "config" / "credential-helper.json"
    config.parent.mkdir()
    monkeypatch.setenv(credential_helper.CONFIG_ENV, str(config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    h = Helper(config, tmp_path / "cache" / "authsvc" / "credentials.json")
    h.configure({REGISTRY: {"server_id": SERVER_ID, "sts_host": "sts.amazonaws.com",
                            "region": "us-east-1", "realm": authsvc.realm,
                            "service": SERVICE}})
    return h


def answer(secret: str, server: str = REGISTRY) -> str:
    return json.dumps({"ServerURL": server, "Username": "<token>", "Secret": secret}) + "\n"


def test_helper_get_exchanges_once_then_serves_the_cache(
    helper: Helper, authsvc: FakeAuthsvc
) -> None:
    assert helper.run("get", REGISTRY + "\n") == (0, answer("session-1"), "")
    [form] = authsvc.forms
    assert form["service"] == [SERVICE]
    assert form["subject_token_type"] == [SUBJECT_TOKEN_TYPE]
    proof = decode(form["subject_token"][0])
    assert lower_headers(proof)[SERVER_ID_HEADER] == SERVER_ID
    verify_sigv4(proof, SECRET_KEY)

    assert stat.S_IMODE(helper.cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(helper.cache.parent.stat().st_mode) == 0o700
    entry = helper.cached()[REGISTRY]
    assert entry["secret"] == "session-1"
    assert abs(entry["expires_at"] - (time.time() + 900)) < 5
    assert sorted(p.name for p in helper.cache.parent.iterdir()) == [
        "credentials.json", "credentials.lock"]
    assert stat.S_IMODE(helper.cache.with_suffix(".lock").stat().st_mode) == 0o600

    # served from the cache: no second exchange, whatever form the address takes
    assert helper.run("get", REGISTRY) == (0, answer("session-1"), "")
    assert helper.run("get", f"https://{REGISTRY}/v2/") == (
        0, answer("session-1", f"https://{REGISTRY}/v2/"), "")
    assert len(authsvc.forms) == 1


def test_helper_renews_a_minute_before_expiry(helper: Helper, authsvc: FakeAuthsvc) -> None:
    assert helper.run("get", REGISTRY)[1] == answer("session-1")
    data = json.loads(helper.cache.read_text())
    data["servers"][REGISTRY]["expires_at"] = int(time.time()) + 59
    helper.cache.write_text(json.dumps(data))
    assert helper.run("get", REGISTRY)[1] == answer("session-2")
    assert len(authsvc.forms) == 2
    assert helper.run("get", REGISTRY)[1] == answer("session-2")
    assert len(authsvc.forms) == 2


def test_helper_lifetimes(helper: Helper, authsvc: FakeAuthsvc) -> None:
    authsvc.lifetime = 60  # never fresh enough to cache
    assert helper.run("get", REGISTRY)[1] == answer("session-1")
    assert helper.run("get", REGISTRY)[1] == answer("session-2")
    assert REGISTRY not in helper.cached()
    # signed within a second of each other, the two proofs would be one (a replay)
    first, second = (form["subject_token"][0] for form in authsvc.forms)
    assert first != second
    authsvc.lifetime = None  # not said: 900 s
    assert helper.run("get", REGISTRY)[1] == answer("session-3")
    assert abs(helper.cached()[REGISTRY]["expires_at"] - (time.time() + 900)) < 5


def test_helper_config_change_or_profile_change_discards_the_cache(
    helper: Helper, authsvc: FakeAuthsvc, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert helper.run("get", REGISTRY)[1] == answer("session-1")
    helper.configure({REGISTRY: {"server_id": "registry-prod-02", "realm": authsvc.realm,
                                 "service": SERVICE}})
    assert helper.run("get", REGISTRY)[1] == answer("session-2")
    proof = decode(authsvc.forms[1]["subject_token"][0])
    assert lower_headers(proof)[SERVER_ID_HEADER] == "registry-prod-02"
    monkeypatch.setenv("AWS_PROFILE", "other")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(helper.config.parent / "aws-config"))
    (helper.config.parent / "aws-config").write_text(
        f"[profile other]\naws_access_key_id = {ACCESS_KEY}\n"
        f"aws_secret_access_key = {SECRET_KEY}\n"
    )
    assert helper.run("get", REGISTRY)[1] == answer("session-3")


def test_helper_erase_and_list(helper: Helper, authsvc: FakeAuthsvc) -> None:
    assert helper.run("list") == (0, "{}\n", "")
    helper.run("get", REGISTRY)
    assert helper.run("list") == (0, json.dumps({REGISTRY: "<token>"}) + "\n", "")
    assert helper.run("erase", "other.example") == (0, "", "")
    assert helper.run("erase", f"https://{REGISTRY}") == (0, "", "")
    assert helper.run("list") == (0, "{}\n", "")
    assert stat.S_IMODE(helper.cache.stat().st_mode) == 0o600
    assert helper.run("get", REGISTRY)[1] == answer("session-2")
    assert len(authsvc.forms) == 2


def test_helper_store_accepts_and_keeps_nothing(helper: Helper, authsvc: FakeAuthsvc) -> None:
    stored = json.dumps({"ServerURL": REGISTRY, "Username": "<token>", "Secret": "x"})
    assert helper.run("store", stored) == (0, "", "")
    assert not helper.cache.exists()
    assert authsvc.forms == []


def test_helper_unknown_server(helper: Helper, authsvc: FakeAuthsvc) -> None:
    code, out, err = helper.run("get", "docker.io")
    assert (code, out) == (1, credential_helper.NOT_FOUND + "\n")
    assert out.strip() == "credentials not found in native keychain"
    assert "credentials not found in native keychain" in err
    helper.config.unlink()  # no configuration at all: nothing is configured
    assert helper.run("get", REGISTRY)[:2] == (1, "credentials not found in native keychain\n")
    assert authsvc.forms == []


def test_helper_errors_name_the_problem_without_secrets(
    helper: Helper, authsvc: FakeAuthsvc, monkeypatch: pytest.MonkeyPatch
) -> None:
    authsvc.refuse = True
    code, out, err = helper.run("get", REGISTRY)
    assert code == 1
    assert out == "authsvc refused the token (401): the AWS account is not allowed\n"
    assert err == f"docker-credential-authsvc: {out}"
    assert authsvc.forms[0]["subject_token"][0] not in out + err
    assert REGISTRY not in helper.cached()

    set_env(monkeypatch, NO_AWS_ENV)
    code, out, _ = helper.run("get", REGISTRY)
    assert code == 1
    assert out.startswith("no AWS credentials found")

    assert helper.run("get", "  \n")[:2] == (1, "no credentials server URL\n")
    assert helper.run("frobnicate")[:2] == (1, "Unknown credential action `frobnicate`\n")
    helper.config.write_text('{"registries": {"r.example": {"realm": "https://x/token"}}}')
    code, out, _ = helper.run("get", "r.example")
    assert code == 1
    assert "server_id is required" in out
    helper.config.write_text("{")
    assert "is not JSON" in helper.run("get", "r.example")[1]
    code, out, _ = helper.run("version")
    assert code == 0
    assert out.startswith("docker-credential-authsvc (authsvc) ")


def test_helper_ignores_a_corrupt_cache(helper: Helper, authsvc: FakeAuthsvc) -> None:
    helper.cache.parent.mkdir(parents=True)
    helper.cache.write_text("not json")
    helper.cache.parent.chmod(0o755)
    assert helper.run("get", REGISTRY)[1] == answer("session-1")
    assert helper.cached()[REGISTRY]["secret"] == "session-1"
    assert stat.S_IMODE(helper.cache.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("registry.example.com", "registry.example.com"),
        ("Registry.Example.com:5000", "registry.example.com:5000"),
        ("https://registry.example.com/v2/", "registry.example.com"),
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("registry.example.com/some/repo", "registry.example.com"),
    ],
)
def test_server_key(url: str, key: str) -> None:
    assert credential_helper.server_key(url) == key


def test_helper_program(helper: Helper, authsvc: FakeAuthsvc) -> None:
    """The program as Docker runs it: action in argv, address on stdin, answer on stdout."""

    def run(action: str, stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "authsvc.credential_helper", action], input=stdin,
            capture_output=True, text=True, env=os.environ.copy(), timeout=60, check=False,
        )

    done = run("get", REGISTRY)
    assert (done.returncode, json.loads(done.stdout), done.stderr) == (
        0, {"ServerURL": REGISTRY, "Username": "<token>", "Secret": "session-1"}, "")
    done = run("get", "unknown.example")
    assert (done.returncode, done.stdout) == (1, "credentials not found in native keychain\n")
    done = run("list", "unused")
    assert json.loads(done.stdout) == {REGISTRY: "<token>"}


def test_authsvc_accepts_what_sign_proof_makes() -> None:
    """The client and the server's local checks agree (STS itself is not asked here)."""
    from authsvc.identity.aws.proof import parse_proof
    from authsvc.identity.aws.settings import AwsSettings

    settings = AwsSettings(sts_endpoints=("sts.amazonaws.com", "sts.eu-west-1.amazonaws.com"),
                           server_id=SERVER_ID, accounts=("123456789012",))
    for host in settings.sts_endpoints:
        text = awsclient.sign_proof(server_id=SERVER_ID, sts_host=host,
                                    region=awsclient.region_for(host), session=static_session())
        signed = parse_proof(text, settings, now=int(time.time()))
        assert signed.host == host
        assert SERVER_ID_HEADER in signed.signed_headers


def test_helpers_asking_at_once_exchange_once(helper: Helper, authsvc: FakeAuthsvc) -> None:
    """BuildKit and `compose pull` run the helper in parallel: one exchanges (a second
    proof signed within the same second would be identical, and refused as a replay)."""
    authsvc.delay = 1.0
    programs = [
        subprocess.Popen(
            [sys.executable, "-m", "authsvc.credential_helper", "get"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(4)
    ]
    for program in programs:  # all of them asking before any answers
        assert program.stdin is not None
        program.stdin.write(REGISTRY)
        program.stdin.close()
    outputs = []
    for program in programs:
        assert program.stdout is not None and program.stderr is not None
        outputs.append((program.stdout.read(), program.stderr.read()))
        program.wait(timeout=60)
        program.stdout.close()
        program.stderr.close()
    assert [program.returncode for program in programs] == [0] * 4
    assert set(outputs) == {(answer("session-1"), "")}
    assert len(authsvc.forms) == 1



def test_two_proofs_signed_in_one_second_differ() -> None:
    """X-Amz-Date has one-second resolution: a signed nonce keeps two logins apart."""
    first, second = (
        awsclient.sign_proof(server_id=SERVER_ID, session=static_session()) for _ in range(2)
    )
    a, b = lower_headers(decode(first)), lower_headers(decode(second))
    assert a["x-authsvc-nonce"] != b["x-authsvc-nonce"]
    assert "x-authsvc-nonce" in a["authorization"].split("SignedHeaders=")[1]
    assert first != second
