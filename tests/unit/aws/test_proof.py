"""parse_proof: the refusal table, then what an accepted proof holds.

Proofs are signed by botocore with made-up credentials (nothing here reaches STS).
Every refusal asserts its reason code and a fragment of its message, and that the
message repeats neither the signature, the secret key nor the session token.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.credentials import Credentials  # type: ignore[import-untyped,unused-ignore]

from authsvc.errors import InvalidCredentials
from authsvc.identity.aws.proof import (
    ALLOWED_HEADERS,
    CLOCK_SKEW,
    GET_CALLER_IDENTITY_BODY,
    MAX_PROOF_CHARS,
    SUBJECT_TOKEN_TYPE,
    SignedRequest,
    encode_proof,
    parse_proof,
)
from authsvc.identity.aws.settings import AwsSettings
from tests.aws_sts import ACCOUNT, SERVER_ID, decode_proof, sign_proof

HOST = "sts.amazonaws.com"
REGIONAL = "sts.eu-west-1.amazonaws.com"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token-0123456789"
KEY = Credentials("AKIAIOSFODNN7EXAMPLE", SECRET)
TEMPORARY = Credentials("ASIAIOSFODNN7EXAMPLE", SECRET, SESSION_TOKEN)
MAX_AGE = 300

Document = dict[str, Any]


@pytest.fixture
def settings() -> AwsSettings:
    return AwsSettings(
        sts_endpoints=(HOST, REGIONAL),
        server_id=SERVER_ID,
        accounts=(ACCOUNT,),
        max_request_age=MAX_AGE,
    )


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed_at(proof: str) -> int:
    headers = {name.lower(): value for name, value in decode_proof(proof)["headers"].items()}
    stamp = headers["x-amz-date"]
    return int(datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp())


def refused(proof: str, settings: AwsSettings, *, now: int | None = None) -> InvalidCredentials:
    with pytest.raises(InvalidCredentials) as caught:
        parse_proof(proof, settings, now=signed_at_or_now(proof) if now is None else now)
    message = caught.value.message
    for secret in (SECRET, SESSION_TOKEN):
        assert secret not in message
    try:
        authorization = decode_proof(proof)["headers"].get("Authorization", "")
    except (ValueError, TypeError, AttributeError, KeyError):
        authorization = ""
    if isinstance(authorization, str) and "Signature=" in authorization:
        assert authorization.rsplit("Signature=", 1)[1][:16] not in message
    return caught.value


def signed_at_or_now(proof: str) -> int:
    try:
        return signed_at(proof)
    except (ValueError, TypeError, KeyError, AttributeError):
        return int(time.time())


def edited(edit: Callable[[Document], None], proof: str | None = None) -> str:
    """A signed proof, decoded, changed by ``edit`` and encoded again."""
    document = decode_proof(proof or sign_proof(KEY, HOST))
    edit(document)
    return b64(json.dumps(document).encode())


def with_headers(**changes: str | None) -> Callable[[Document], None]:
    """An edit setting (or, with None, removing) headers; ``_`` in names becomes ``-``."""

    def edit(document: Document) -> None:
        headers: dict[str, str] = document["headers"]
        for name, value in changes.items():
            name = name.replace("_", "-")
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value

    return edit


def with_authorization(old: str, new: str) -> Callable[[Document], None]:
    def edit(document: Document) -> None:
        headers = document["headers"]
        assert old in headers["Authorization"]
        headers["Authorization"] = headers["Authorization"].replace(old, new)

    return edit


def setting(name: str, value: Any) -> Callable[[Document], None]:
    def edit(document: Document) -> None:
        document[name] = value

    return edit


def raw_json(text: str) -> str:
    return b64(text.encode())


def _duplicate_in_headers() -> str:
    document = decode_proof(sign_proof(KEY, HOST))
    headers = json.dumps(document["headers"])[1:-1]
    text = (
        f'{{"method":"POST","url":"https://{HOST}/","headers":{{{headers},'
        f'"X-Amz-Date":"20260101T000000Z"}},"body":"{GET_CALLER_IDENTITY_BODY}"}}'
    )
    return raw_json(text)


def _lowercase_duplicate() -> str:
    document = decode_proof(sign_proof(KEY, HOST))
    document["headers"]["authorization"] = document["headers"]["Authorization"]
    return b64(json.dumps(document).encode())


def _non_canonical() -> str:
    text = json.dumps(decode_proof(sign_proof(KEY, HOST)))
    text += " " * ((1 - len(text)) % 3)  # a length of 3n+1 bytes leaves 4 unused bits
    proof = b64(text.encode())
    # The last character carries those unused low bits: flipping one decodes the same.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return proof[:-1] + alphabet[alphabet.index(proof[-1]) ^ 1]


# (id, proof factory, reason, message fragment)
CASES: list[tuple[str, Callable[[], str], str, str]] = [
    # -- the envelope
    ("too long", lambda: "A" * (MAX_PROOF_CHARS + 1), "MALFORMED_PROOF", "over 8192"),
    ("empty", lambda: "", "MALFORMED_PROOF", "base64url"),
    ("not base64url", lambda: "eyJ$", "MALFORMED_PROOF", "base64url"),
    ("padded", lambda: sign_proof(KEY, HOST) + "==", "MALFORMED_PROOF", "base64url"),
    ("standard base64", lambda: "ab+/", "MALFORMED_PROOF", "base64url"),
    ("impossible length", lambda: "abcde", "MALFORMED_PROOF", "base64url"),
    ("non-canonical", _non_canonical, "MALFORMED_PROOF", "canonical"),
    ("not utf-8", lambda: b64(b'{"method":"\xff"}'), "MALFORMED_PROOF", "UTF-8"),
    ("not json", lambda: raw_json("method=POST"), "MALFORMED_PROOF", "not JSON"),
    ("NaN", lambda: raw_json('{"method":NaN}'), "MALFORMED_PROOF", "not JSON"),
    ("an array", lambda: raw_json("[]"), "MALFORMED_PROOF", "not a JSON object"),
    (
        "duplicate member",
        lambda: raw_json('{"method":"POST","method":"GET","url":"","headers":{},"body":""}'),
        "MALFORMED_PROOF",
        "names 'method' twice",
    ),
    ("duplicate header", _duplicate_in_headers, "MALFORMED_PROOF", "'X-Amz-Date' twice"),
    ("header twice in two cases", _lowercase_duplicate, "MALFORMED_PROOF", "appears twice"),
    (
        "missing member",
        lambda: edited(lambda d: d.pop("body")),
        "MALFORMED_PROOF",
        "missing body",
    ),
    (
        "extra member",
        lambda: edited(setting("region", "us-east-1")),
        "MALFORMED_PROOF",
        "unexpected region",
    ),
    ("method not a string", lambda: edited(setting("method", 1)), "MALFORMED_PROOF", "method"),
    (
        "headers not an object",
        lambda: edited(setting("headers", [["Host", HOST]])),
        "MALFORMED_PROOF",
        "headers are not a JSON object",
    ),
    (
        "header value a list",
        lambda: edited(lambda d: d["headers"].update({"X-Amz-Date": ["20260101T000000Z"]})),
        "MALFORMED_PROOF",
        "'X-Amz-Date' is not a string",
    ),
    (
        "header name with a space",
        lambda: edited(with_headers(**{"X Amz Date": "1"})),
        "MALFORMED_PROOF",
        "header name",
    ),
    (
        "header value with CRLF",
        lambda: edited(with_headers(User_Agent="x\r\nX-Amz-Target: AssumeRole")),
        "MALFORMED_PROOF",
        "characters HTTP forbids",
    ),
    (
        "wrong Content-Length",
        lambda: edited(with_headers(Content_Length="44")),
        "MALFORMED_PROOF",
        "Content-Length",
    ),
    # -- the URL
    ("http", lambda: edited(setting("url", f"http://{HOST}/")), "MALFORMED_PROOF", "https"),
    (
        "fragment",
        lambda: edited(setting("url", f"https://{HOST}/#x")),
        "MALFORMED_PROOF",
        "fragment",
    ),
    (
        "newline in the url",
        lambda: edited(setting("url", "https://sts.amazon\naws.com/")),
        "MALFORMED_PROOF",
        "characters",
    ),
    (
        "user info",
        lambda: edited(setting("url", f"https://user@{HOST}/")),
        "FOREIGN_HOST",
        "user info",
    ),
    (
        "user info hiding the host",
        lambda: edited(setting("url", f"https://{HOST}@evil.example/")),
        "FOREIGN_HOST",
        "user info",
    ),
    (
        "suffix host",
        lambda: sign_proof(KEY, f"{HOST}.evil.example"),
        "FOREIGN_HOST",
        "'sts.amazonaws.com.evil.example', which is not one of",
    ),
    (
        "unlisted region",
        lambda: sign_proof(KEY, "sts.us-west-2.amazonaws.com"),
        "FOREIGN_HOST",
        "not one of",
    ),
    ("upper case host", lambda: sign_proof(KEY, "STS.amazonaws.com"), "FOREIGN_HOST", "not one of"),
    ("explicit port", lambda: sign_proof(KEY, f"{HOST}:443"), "FOREIGN_HOST", "not one of"),
    ("trailing dot", lambda: sign_proof(KEY, f"{HOST}."), "FOREIGN_HOST", "not one of"),
    (
        "Host header elsewhere",
        lambda: edited(with_headers(Host="evil.example")),
        "FOREIGN_HOST",
        "Host header",
    ),
    (
        "Host header of another listed endpoint",
        lambda: edited(with_headers(Host=REGIONAL)),
        "FOREIGN_HOST",
        "Host header",
    ),
    # -- the action
    ("GET", lambda: edited(setting("method", "GET")), "WRONG_ACTION", "POST"),
    ("lower-case post", lambda: edited(setting("method", "post")), "WRONG_ACTION", "POST"),
    (
        "a path",
        lambda: edited(setting("url", f"https://{HOST}/foo")),
        "WRONG_ACTION",
        "path",
    ),
    ("no path", lambda: edited(setting("url", f"https://{HOST}")), "WRONG_ACTION", "path"),
    (
        "query",
        lambda: edited(setting("url", f"https://{HOST}/?Action=AssumeRole")),
        "WRONG_ACTION",
        "query",
    ),
    ("empty query", lambda: edited(setting("url", f"https://{HOST}/?")), "WRONG_ACTION", "query"),
    (
        "another action",
        lambda: sign_proof(KEY, HOST, body="Action=AssumeRole&Version=2011-06-15"),
        "WRONG_ACTION",
        "body must be exactly",
    ),
    (
        "a second Action",
        lambda: sign_proof(
            KEY, HOST, body=GET_CALLER_IDENTITY_BODY + "&Action=AssumeRole"
        ),
        "WRONG_ACTION",
        "body must be exactly",
    ),
    (
        "other order",
        lambda: sign_proof(KEY, HOST, body="Version=2011-06-15&Action=GetCallerIdentity"),
        "WRONG_ACTION",
        "body must be exactly",
    ),
    (
        "JSON protocol",
        lambda: sign_proof(KEY, HOST, extra_headers={"Content-Type": "application/x-amz-json-1.1"}),
        "WRONG_ACTION",
        "Content-Type",
    ),
    # -- headers outside the allowlist
    (
        "X-Amz-Target",
        lambda: sign_proof(
            KEY, HOST, extra_headers={"X-Amz-Target": "AWSSecurityTokenServiceV20110615.AssumeRole"}
        ),
        "FORBIDDEN_HEADER",
        "'X-Amz-Target' is not allowed",
    ),
    (
        "Cookie",
        lambda: edited(with_headers(Cookie="a=b")),
        "FORBIDDEN_HEADER",
        "'Cookie' is not allowed",
    ),
    # -- SigV4
    (
        "no Authorization",
        lambda: edited(with_headers(Authorization=None)),
        "NOT_SIGV4",
        "no Authorization",
    ),
    (
        "Basic auth",
        lambda: edited(with_headers(Authorization="Basic YWxhZGRpbjpvcGVuc2VzYW1l")),
        "NOT_SIGV4",
        "AWS4-HMAC-SHA256",
    ),
    (
        "SigV2-style",
        lambda: edited(with_authorization("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1")),
        "NOT_SIGV4",
        "AWS4-HMAC-SHA256",
    ),
    (
        "short signature",
        lambda: edited(lambda d: d["headers"].update(
            Authorization=d["headers"]["Authorization"][:-1]
        )),
        "NOT_SIGV4",
        "64 hex digits",
    ),
    (
        "signed for another service",
        lambda: edited(with_authorization("/sts/", "/iam/")),
        "NOT_SIGV4",
        "service 'iam', not 'sts'",
    ),
    (
        "x-amz-date unsigned",
        lambda: edited(with_authorization("host;x-amz-date;", "host;")),
        "NOT_SIGV4",
        "must include 'x-amz-date'",
    ),
    (
        "host unsigned",
        lambda: edited(with_authorization("content-type;host;", "content-type;")),
        "NOT_SIGV4",
        "must include 'host'",
    ),
    (
        "a signed header listed twice",
        lambda: edited(with_authorization("host;", "host;host;")),
        "NOT_SIGV4",
        "twice",
    ),
    (
        "a signed header that is absent",
        lambda: edited(with_authorization("host;", "host;x-amz-security-token;")),
        "NOT_SIGV4",
        "'x-amz-security-token', which the request does not carry",
    ),
    (
        "no X-Amz-Date",
        lambda: edited(with_headers(X_Amz_Date=None)),
        "NOT_SIGV4",
        "no X-Amz-Date",
    ),
    (
        "X-Amz-Date as an HTTP date",
        lambda: edited(with_headers(X_Amz_Date="Tue, 01 Dec 2026 00:00:00 GMT")),
        "NOT_SIGV4",
        "YYYYMMDDTHHMMSSZ",
    ),
    (
        "X-Amz-Date impossible",
        lambda: edited(with_headers(X_Amz_Date="20261399T000000Z")),
        "NOT_SIGV4",
        "not a valid date",
    ),
    (
        "scope of another day",
        lambda: edited(lambda d: d["headers"].update(
            Authorization=d["headers"]["Authorization"].replace(
                "/" + d["headers"]["X-Amz-Date"][:8] + "/", "/19990101/"
            )
        )),
        "NOT_SIGV4",
        "day",
    ),
    # -- the server id
    (
        "server id missing",
        lambda: sign_proof(KEY, HOST, server_id=None),
        "SERVER_ID_MISSING",
        "x-authsvc-server-id",
    ),
    (
        "server id of another server",
        lambda: sign_proof(KEY, HOST, server_id="other.test/authsvc"),
        "SERVER_ID_MISMATCH",
        "signed for another server",
    ),
    (
        "server id differing in case",
        lambda: sign_proof(KEY, HOST, server_id=SERVER_ID.upper()),
        "SERVER_ID_MISMATCH",
        "signed for another server",
    ),
    (
        "server id unsigned",
        lambda: sign_proof(KEY, HOST, sign_server_id=False),
        "SERVER_ID_UNSIGNED",
        "SignedHeaders",
    ),
]


@pytest.mark.parametrize(
    ("make", "reason", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refusals(
    make: Callable[[], str], reason: str, fragment: str, settings: AwsSettings
) -> None:
    error = refused(make(), settings)
    assert error.reason == reason, error.message
    assert fragment in error.message
    assert error.status == 401


def test_refusals_never_echo_the_session_token(settings: AwsSettings) -> None:
    proof = sign_proof(TEMPORARY, HOST, server_id="other.test/authsvc")
    error = refused(proof, settings)
    assert error.reason == "SERVER_ID_MISMATCH"
    assert SESSION_TOKEN not in error.message


def test_stale_request_refused(settings: AwsSettings) -> None:
    proof = sign_proof(KEY, HOST)
    limit = signed_at(proof) + MAX_AGE + CLOCK_SKEW
    assert parse_proof(proof, settings, now=limit).expires_at == limit
    error = refused(proof, settings, now=limit + 1)
    assert error.reason == "REQUEST_STALE"
    assert f"signed {MAX_AGE + CLOCK_SKEW + 1} s ago" in error.message


def test_request_from_the_future_refused(settings: AwsSettings) -> None:
    proof = sign_proof(KEY, HOST)
    parse_proof(proof, settings, now=signed_at(proof) - CLOCK_SKEW)
    error = refused(proof, settings, now=signed_at(proof) - CLOCK_SKEW - 1)
    assert error.reason == "REQUEST_STALE"
    assert "in the future" in error.message


def test_accepted_proof(settings: AwsSettings) -> None:
    proof = sign_proof(TEMPORARY, REGIONAL, region="eu-west-1")
    request = parse_proof(proof, settings, now=signed_at(proof))
    assert isinstance(request, SignedRequest)
    document = decode_proof(proof)
    assert request.url == f"https://{REGIONAL}/"
    assert request.host == REGIONAL
    assert request.body == GET_CALLER_IDENTITY_BODY
    assert request.headers == tuple(document["headers"].items())
    assert request.header("x-amz-security-token") == SESSION_TOKEN
    assert request.amz_date == document["headers"]["X-Amz-Date"]
    assert request.signature == document["headers"]["Authorization"].rsplit("=", 1)[1]
    assert request.signed_headers == (
        "content-type", "host", "x-amz-date", "x-amz-security-token", "x-authsvc-server-id"
    )
    assert request.expires_at == signed_at(proof) + MAX_AGE + CLOCK_SKEW
    assert request.signature not in repr(request)
    assert SESSION_TOKEN not in repr(request)


def test_accepted_with_matching_host_and_allowed_headers(settings: AwsSettings) -> None:
    proof = sign_proof(
        KEY,
        HOST,
        extra_headers={
            "Host": HOST,
            "User-Agent": "aws-cli/2",
            "Content-Length": str(len(GET_CALLER_IDENTITY_BODY)),
        },
    )
    request = parse_proof(proof, settings, now=signed_at(proof))
    assert request.header("host") == HOST
    assert {name.lower() for name, _ in request.headers} <= ALLOWED_HEADERS


def test_header_names_in_any_case(settings: AwsSettings) -> None:
    document = decode_proof(sign_proof(KEY, HOST))
    document["headers"] = {k.lower(): v for k, v in document["headers"].items()}
    proof = encode_proof("POST", f"https://{HOST}/", document["headers"], document["body"])
    assert parse_proof(proof, settings, now=signed_at(proof)).header("X-Amz-Date")


def test_encode_proof_is_compact_unpadded_base64url() -> None:
    proof = encode_proof("POST", f"https://{HOST}/", [("X-Amz-Date", "x")], "b")
    assert "=" not in proof
    assert base64.urlsafe_b64decode(proof + "=" * (-len(proof) % 4)) == (
        b'{"method":"POST","url":"https://sts.amazonaws.com/",'
        b'"headers":{"X-Amz-Date":"x"},"body":"b"}'
    )


def test_subject_token_type() -> None:
    assert SUBJECT_TOKEN_TYPE == "urn:authsvc:params:aws:signed-get-caller-identity"
