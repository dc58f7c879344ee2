"""StsClient against moto (real SigV4 checking) and against a fake STS that misbehaves.

moto answers for the IAM user and an assumed role, and refuses a wrong secret or an
unknown key as STS would. The fake covers what moto cannot produce: redirects, bodies
that are not one GetCallerIdentityResult, server errors, throttling, a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from botocore.credentials import Credentials  # type: ignore[import-untyped,unused-ignore]

from authsvc.errors import InvalidCredentials, ServiceUnavailable
from authsvc.identity.aws.proof import GET_CALLER_IDENTITY_BODY, SignedRequest, parse_proof
from authsvc.identity.aws.settings import AwsSettings
from authsvc.identity.aws.sts import STS_NAMESPACE, CallerIdentity, StsClient
from tests import aws_sts
from tests.aws_sts import ACCOUNT, SERVER_ID, Answer, FakeSts, MotoAws, sign_proof

# The fixtures, by assignment (an import would be "redefined" by each test's argument).
moto_aws = aws_sts.moto_aws
fake_sts = aws_sts.fake_sts

HOST = "sts.amazonaws.com"
KEY = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
USER_ARN = f"arn:aws:iam::{ACCOUNT}:user/ci/builder"


def settings_for(*hosts: str, url: str) -> AwsSettings:
    return AwsSettings(sts_endpoints=hosts, sts_url=url, server_id=SERVER_ID, accounts=(ACCOUNT,))


def request_for(proof: str, settings: AwsSettings) -> SignedRequest:
    return parse_proof(proof, settings, now=int(time.time()))


# -- moto ----------------------------------------------------------------------------


@pytest.fixture
def moto_request(moto_aws: MotoAws) -> Callable[..., SignedRequest]:
    settings = settings_for(moto_aws.host, url=moto_aws.endpoint_url + "/")

    def make(credentials: Credentials | None = None) -> SignedRequest:
        return request_for(moto_aws.sign(credentials), settings)

    return make


def test_iam_user(moto_aws: MotoAws, moto_request: Callable[..., SignedRequest]) -> None:
    caller = StsClient(moto_aws.endpoint_url + "/").get_caller_identity(moto_request())
    assert caller == CallerIdentity(moto_aws.user_arn, ACCOUNT, moto_aws.user_id)


def test_assumed_role(moto_aws: MotoAws, moto_request: Callable[..., SignedRequest]) -> None:
    temporary = moto_aws.assume_role("job-7")
    assert temporary.token
    caller = StsClient(moto_aws.endpoint_url + "/").get_caller_identity(moto_request(temporary))
    assert caller.arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/job-7"
    assert caller.account == ACCOUNT
    assert caller.user_id == f"{moto_aws.role_id()}:job-7"


@pytest.mark.parametrize(
    ("credentials", "code"),
    [
        (lambda m: Credentials(m.user.access_key, "not-the-secret"), "SignatureDoesNotMatch"),
        (lambda m: KEY, "InvalidClientTokenId"),
    ],
    ids=["wrong secret", "unknown key"],
)
def test_refused_by_sts(
    moto_aws: MotoAws,
    moto_request: Callable[..., SignedRequest],
    credentials: Callable[[MotoAws], Credentials],
    code: str,
) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        StsClient(moto_aws.endpoint_url + "/").get_caller_identity(
            moto_request(credentials(moto_aws))
        )
    assert caught.value.reason == "STS_REFUSED"
    assert f"({code})" in caught.value.message


# -- the fake STS ------------------------------------------------------------------


def result_xml(
    arn: str = USER_ARN,
    account: str = ACCOUNT,
    user_id: str = "AIDAEXAMPLE1234567890",
    *,
    results: int = 1,
    namespace: str = STS_NAMESPACE,
    extra: str = "",
) -> bytes:
    one = (
        f"<GetCallerIdentityResult><Arn>{arn}</Arn><UserId>{user_id}</UserId>"
        f"<Account>{account}</Account>{extra}</GetCallerIdentityResult>"
    )
    return (
        f'<GetCallerIdentityResponse xmlns="{namespace}">{one * results}'
        "<ResponseMetadata><RequestId>01234567-89ab</RequestId></ResponseMetadata>"
        "</GetCallerIdentityResponse>"
    ).encode()


def error_xml(code: str) -> bytes:
    return (
        f'<ErrorResponse xmlns="{STS_NAMESPACE}"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>secret-looking details</Message></Error>"
        "<RequestId>1</RequestId></ErrorResponse>"
    ).encode()


@pytest.fixture
def call_fake(fake_sts: FakeSts) -> Callable[..., CallerIdentity]:
    """Answer ``Answer(...)`` from the fake, and ask it for a proof signed for HOST."""

    def call(answer: Answer, *, timeout: float = 2.0, max_bytes: int = 64 * 1024) -> CallerIdentity:
        fake_sts.answer = answer
        request = request_for(sign_proof(KEY, HOST), settings_for(HOST, url=fake_sts.url))
        return StsClient(fake_sts.url, timeout=timeout, max_bytes=max_bytes).get_caller_identity(
            request
        )

    return call


def test_sends_the_signed_request_to_the_configured_url(fake_sts: FakeSts) -> None:
    fake_sts.answer = Answer(body=result_xml())
    proof = sign_proof(KEY, HOST)
    request = request_for(proof, settings_for(HOST, url=fake_sts.url))
    caller = StsClient(fake_sts.url).get_caller_identity(request)
    assert caller == CallerIdentity(USER_ARN, ACCOUNT, "AIDAEXAMPLE1234567890")
    [received] = fake_sts.received
    assert received.path == "/"
    assert received.body == GET_CALLER_IDENTITY_BODY.encode()
    sent = dict(received.headers)
    assert sent["Host"] == HOST  # the signed host, not the fake's address
    assert sent["Content-Length"] == str(len(GET_CALLER_IDENTITY_BODY))
    for name, value in request.headers:
        assert sent[name] == value
    assert set(sent) <= {name for name, _ in request.headers} | {"Host", "Content-Length"}


def test_json_answer(call_fake: Callable[..., CallerIdentity]) -> None:
    body = (
        b'{"GetCallerIdentityResponse": {"GetCallerIdentityResult": {"Arn": "'
        + USER_ARN.encode()
        + b'", "Account": "123456789012", "UserId": "AIDAEXAMPLE"}, "ResponseMetadata": {}}}'
    )
    caller = call_fake(Answer(body=body, content_type="application/json"))
    assert caller == CallerIdentity(USER_ARN, ACCOUNT, "AIDAEXAMPLE")


INVALID: list[tuple[str, bytes, str]] = [
    ("not XML", b"hello", "neither XML nor JSON"),
    ("HTML", b"<html><body>hi</body></html>", "root is not GetCallerIdentityResponse"),
    ("broken XML", b"<GetCallerIdentityResponse>", "not well-formed"),
    ("two results", result_xml(results=2), "2 GetCallerIdentityResult elements"),
    ("no result", result_xml(results=0), "0 GetCallerIdentityResult elements"),
    ("no namespace", result_xml(namespace=""), "namespace"),
    ("another namespace", result_xml(namespace="https://evil.example/"), "namespace"),
    ("two Arns", result_xml(extra=f"<Arn>{USER_ARN}</Arn>"), "2 Arn elements"),
    ("empty Arn", result_xml(arn=""), "Arn is not a non-empty string"),
    ("nested Arn", result_xml(arn="<x>a</x>"), "Arn is not a non-empty string"),
    ("bad Account", result_xml(account="12345"), "12-digit"),
    ("Arn of another account", result_xml(arn="arn:aws:iam::999999999999:user/x"), "Account"),
    ("not an ARN", result_xml(arn="builder"), "not an ARN"),
    (
        "DOCTYPE",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]>' + result_xml(arn="&a;"),
        "DOCTYPE or ENTITY",
    ),
    ("not UTF-8", b"<\xff>", "not UTF-8"),
    ("JSON without result", b'{"GetCallerIdentityResponse": {}}', "no GetCallerIdentityResponse"),
    (
        "JSON duplicate",
        b'{"GetCallerIdentityResponse": {}, "GetCallerIdentityResponse": {}}',
        "twice",
    ),
    (
        "JSON number",
        b'{"GetCallerIdentityResponse": {"GetCallerIdentityResult": '
        b'{"Arn": "x", "Account": 123456789012, "UserId": "u"}}}',
        "Account is not a non-empty string",
    ),
]


@pytest.mark.parametrize(
    ("body", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_answers(
    call_fake: Callable[..., CallerIdentity], body: bytes, fragment: str
) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        call_fake(Answer(body=body))
    assert caught.value.reason == "STS_ANSWER_INVALID"
    assert fragment in caught.value.message


def test_answer_over_the_cap(call_fake: Callable[..., CallerIdentity]) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        call_fake(Answer(body=result_xml(extra=" " * 2000)), max_bytes=1024)
    assert caught.value.reason == "STS_ANSWER_INVALID"
    assert "over 1024 bytes" in caught.value.message


@pytest.mark.parametrize(
    ("answer", "reason", "fragment"),
    [
        (Answer(status=302, location="http://127.0.0.1:1/"), "STS_REDIRECTED", "redirect (302)"),
        (Answer(status=307, location="/elsewhere"), "STS_REDIRECTED", "not followed"),
        (Answer(status=500, body=error_xml("InternalFailure")), "STS_UNAVAILABLE", "500"),
        (Answer(status=503), "STS_UNAVAILABLE", "503"),
        (Answer(status=429), "STS_UNAVAILABLE", "429"),
        (Answer(status=404, body=b"not here"), "STS_UNAVAILABLE", "404"),
        (Answer(status=400, body=error_xml("Throttling")), "STS_UNAVAILABLE", "(Throttling)"),
    ],
    ids=["302", "307", "500", "503", "429", "404", "throttled"],
)
def test_unavailable(
    call_fake: Callable[..., CallerIdentity],
    fake_sts: FakeSts,
    answer: Answer,
    reason: str,
    fragment: str,
) -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        call_fake(answer)
    assert caught.value.reason == reason
    assert caught.value.status == 503
    assert fragment in caught.value.message
    assert len(fake_sts.received) == 1  # a redirect is not followed


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (Answer(status=403, body=error_xml("ExpiredToken")), "(ExpiredToken)"),
        (Answer(status=400, body=error_xml("InvalidClientTokenId")), "(InvalidClientTokenId)"),
        (
            Answer(
                status=403,
                body=b'{"Error": {"Code": "SignatureDoesNotMatch"}}',
                content_type="application/json",
            ),
            "(SignatureDoesNotMatch)",
        ),
        (Answer(status=403, body=error_xml("<b>x</b>")), "refused the signed request:"),
        (Answer(status=403, body=b"denied"), "refused the signed request:"),
    ],
    ids=["expired token", "unknown key", "JSON error", "unreadable code", "no code"],
)
def test_refused(
    call_fake: Callable[..., CallerIdentity], answer: Answer, fragment: str
) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        call_fake(answer)
    assert caught.value.reason == "STS_REFUSED"
    assert fragment in caught.value.message
    assert "secret-looking" not in caught.value.message


def test_hang_is_a_timeout(call_fake: Callable[..., CallerIdentity]) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        call_fake(Answer(body=result_xml(), delay=30), timeout=0.3)
    assert caught.value.reason == "STS_UNAVAILABLE"
    assert "did not answer within 0.3 s" in caught.value.message
    assert time.monotonic() - started < 3


def test_unreachable(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/"
    request = request_for(sign_proof(KEY, HOST), settings_for(HOST, url=url))
    with pytest.raises(ServiceUnavailable) as caught:
        StsClient(url, timeout=1).get_caller_identity(request)
    assert caught.value.reason == "STS_UNAVAILABLE"
    assert "could not be reached" in caught.value.message


@pytest.mark.parametrize(
    "url",
    [
        "http://sts.amazonaws.com/",
        "ftp://127.0.0.1/",
        "https://sts.amazonaws.com/?Action=AssumeRole",
        "https://sts.amazonaws.com/#x",
        "https://user@sts.amazonaws.com/",
        "https:///",
    ],
)
def test_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="STS url"):
        StsClient(url)


def test_accepts_https_and_loopback_http() -> None:
    assert StsClient("https://sts.eu-west-1.amazonaws.com/").url.startswith("https://")
    assert StsClient("http://localhost:4566/").url == "http://localhost:4566/"
