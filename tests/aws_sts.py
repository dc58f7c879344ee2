"""AWS STS for the tests: moto's server with signatures checked, and a misbehaving fake.

``MotoAws`` runs ``moto.server.ThreadedMotoServer`` on a free port of 127.0.0.1 (moto
keeps its accounts in this process), creates an IAM user with an access key and a
role the user may assume, then turns moto's SigV4 checking on (``POST
/moto-api/reset-auth``; moto 5 reads the body as a number: the count of requests it
lets through unchecked, here 0). From then on moto answers ``GetCallerIdentity`` only
for requests signed with a secret it knows, and ``SignatureDoesNotMatch`` otherwise.
Setup done later (deleting and re-creating the role) is signed by the user, who holds
an allow-all policy.

``sign_proof`` signs a GetCallerIdentity request with botocore's ``SigV4Auth`` (the
``X-Authsvc-Server-Id`` header added before signing, so it is covered) for any host,
and returns the proof text authsvc accepts.

``FakeSts`` answers what moto cannot: a redirect, a non-XML body, two results, a 500,
a hang. It records every request it receives.

Fixtures: ``moto_aws`` (one per test module) and ``fake_sts`` (one per test).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import boto3  # type: ignore[import-untyped,unused-ignore]
import pytest
import requests
from botocore.auth import SigV4Auth  # type: ignore[import-untyped,unused-ignore]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped,unused-ignore]
from botocore.credentials import Credentials  # type: ignore[import-untyped,unused-ignore]
from moto.server import ThreadedMotoServer

from authsvc.identity.aws.proof import GET_CALLER_IDENTITY_BODY, encode_proof

__all__ = [
    "ACCOUNT",
    "FORM_TYPE",
    "SERVER_ID",
    "Answer",
    "FakeSts",
    "MotoAws",
    "decode_proof",
    "fake_sts",
    "moto_aws",
    "sign_proof",
]

#: moto's default account: every principal it creates lives there.
ACCOUNT: Final = "123456789012"
SERVER_ID: Final = "registry.test/authsvc"
FORM_TYPE: Final = "application/x-www-form-urlencoded; charset=utf-8"
ROLE_NAME: Final = "ci-deployer"
USER_NAME: Final = "builder"
_ALLOW_ALL: Final = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


def sign_proof(
    credentials: Credentials,
    host: str,
    *,
    region: str = "us-east-1",
    server_id: str | None = SERVER_ID,
    sign_server_id: bool = True,
    body: str = GET_CALLER_IDENTITY_BODY,
    extra_headers: Mapping[str, str] | None = None,
) -> str:
    """A proof: a GetCallerIdentity request to ``https://<host>/`` signed with botocore.

    ``server_id=None`` leaves the header out; ``sign_server_id=False`` adds it after
    signing (so SignedHeaders does not cover it).
    """
    headers = {"Content-Type": FORM_TYPE, **(extra_headers or {})}
    if server_id is not None and sign_server_id:
        headers["X-Authsvc-Server-Id"] = server_id
    request = AWSRequest(method="POST", url=f"https://{host}/", data=body, headers=headers)
    SigV4Auth(credentials, "sts", region).add_auth(request)
    signed = dict(request.headers.items())
    if server_id is not None and not sign_server_id:
        signed["X-Authsvc-Server-Id"] = server_id
    return encode_proof("POST", f"https://{host}/", signed, body)


def decode_proof(proof: str) -> dict[str, Any]:
    """A proof's JSON document (no checks: tests decode proofs to change them)."""
    document: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(proof + "=" * (-len(proof) % 4))
    )
    return document


@dataclass
class MotoAws:
    """A started moto server holding one IAM user and one assumable role."""

    server: ThreadedMotoServer
    endpoint_url: str
    #: ``127.0.0.1:PORT``: the host a client signs for (add it to ``sts_endpoints``).
    host: str
    user: Credentials
    user_arn: str
    user_id: str
    role_arn: str

    def client(self, service: str, credentials: Credentials | None = None) -> Any:
        creds = credentials or self.user
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            aws_session_token=creds.token,
        )

    def assume_role(self, session_name: str = "job-1") -> Credentials:
        """Temporary credentials of the role (``ASIA...`` with a session token)."""
        answer = self.client("sts").assume_role(
            RoleArn=self.role_arn, RoleSessionName=session_name
        )
        c = answer["Credentials"]
        return Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])

    def role_id(self) -> str:
        role_id: str = self.client("iam").get_role(RoleName=ROLE_NAME)["Role"]["RoleId"]
        return role_id

    def recreate_role(self) -> str:
        """Delete the role and create one of the same name (a new unique id); its id."""
        iam = self.client("iam")
        iam.delete_role(RoleName=ROLE_NAME)
        _create_role(iam)
        return self.role_id()

    def sign(self, credentials: Credentials | None = None, **kwargs: Any) -> str:
        """``sign_proof`` for this server's host, by the user unless told otherwise."""
        return sign_proof(credentials or self.user, self.host, **kwargs)


def _create_role(iam: Any) -> None:
    # Any principal: moto compares the caller's ARN exactly, and spells a user's ARN
    # without its path, so the user's real ARN would not match.
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(
        RoleName=ROLE_NAME, Path="/deploy/", AssumeRolePolicyDocument=json.dumps(trust)
    )


def _set_auth(endpoint_url: str, unchecked_requests: str) -> str:
    """Set how many requests moto lets through unsigned; the previous count."""
    answer = requests.post(
        f"{endpoint_url}/moto-api/reset-auth", data=unchecked_requests.encode(), timeout=5
    )
    answer.raise_for_status()
    previous: str = answer.json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
    return previous


@pytest.fixture(scope="module")
def moto_aws() -> Iterator[MotoAws]:
    """A moto server for one test module, emptied and stopped after it.

    Module-scoped, not session-scoped: moto keeps its accounts in this process, shared
    by every server, and each test module that uses this fixture defines its own copy.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    ip, port = server.get_host_and_port()
    host = f"{ip}:{port}"
    endpoint_url = f"http://{host}"
    previous = "inf"
    try:
        anyone = Credentials("AKIAIOSFODNN7EXAMPLE", "not-checked-yet")
        iam = MotoAws(server, endpoint_url, host, anyone, "", "", "").client("iam")
        created = iam.create_user(UserName=USER_NAME, Path="/ci/")["User"]
        iam.put_user_policy(
            UserName=USER_NAME, PolicyName="all", PolicyDocument=json.dumps(_ALLOW_ALL)
        )
        key = iam.create_access_key(UserName=USER_NAME)["AccessKey"]
        _create_role(iam)
        role_arn = iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"]
        previous = _set_auth(endpoint_url, "0")
        yield MotoAws(
            server=server,
            endpoint_url=endpoint_url,
            host=host,
            user=Credentials(key["AccessKeyId"], key["SecretAccessKey"]),
            user_arn=created["Arn"],
            user_id=created["UserId"],
            role_arn=role_arn,
        )
    finally:
        try:
            _set_auth(endpoint_url, previous)
            requests.post(f"{endpoint_url}/moto-api/reset", timeout=5).raise_for_status()
        finally:
            server.stop()


# -- a fake STS ------------------------------------------------------------------------


@dataclass
class Answer:
    """What the fake STS answers to the next requests."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/xml"
    location: str | None = None
    delay: float = 0.0  # seconds before answering (a hang, if past the client's timeout)


@dataclass
class Received:
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class FakeSts:
    url: str
    answer: Answer = field(default_factory=Answer)
    received: list[Received] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)


def _handler(fake: FakeSts) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            fake.received.append(Received(self.path, list(self.headers.items()), body))
            answer = fake.answer
            if answer.delay and fake.stopping.wait(answer.delay):
                return
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            if answer.location is not None:
                self.send_header("Location", answer.location)
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@pytest.fixture
def fake_sts() -> Iterator[FakeSts]:
    fake = FakeSts(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
