"""The signed-request proof: its wire format, and every check made before STS is asked.

A client proves an AWS identity the way Vault's and Teleport's ``iam`` methods do: it
signs an ``sts:GetCallerIdentity`` request with SigV4 and hands us the *signed request*
instead of sending it. authsvc sends it to STS itself (``sts.py``) and learns who
signed it. Whoever holds the proof can do the same until it goes stale, so it is a
one-time credential (``authenticator.py``), it names this server (the signed
``X-Authsvc-Server-Id`` header), and everything in it is checked here first.

Wire format (``SUBJECT_TOKEN_TYPE``): base64url without padding of compact JSON with
exactly these four members::

    {"method": "POST",
     "url": "https://sts.amazonaws.com/",
     "headers": {"Authorization": "AWS4-HMAC-SHA256 Credential=...", "X-Amz-Date": ...},
     "body": "Action=GetCallerIdentity&Version=2011-06-15"}

Checks, each with its reason code (every refusal is ``InvalidCredentials``, 401):

=================== =============================================================
MALFORMED_PROOF     over ``MAX_PROOF_CHARS``; not canonical unpadded base64url; not
                    UTF-8 JSON; duplicate member names anywhere (header names
                    compared case-insensitively); other members than the four;
                    values that are not strings; a non-https URL or one with a
                    fragment; a header name or value with characters HTTP forbids;
                    a Content-Length that is not the body's
WRONG_ACTION        a method other than POST; a path other than ``/``; any query;
                    a body other than exactly ``GET_CALLER_IDENTITY_BODY``; a
                    Content-Type other than form encoding
FOREIGN_HOST        user info in the URL; a host (``host[:port]``, compared exactly,
                    case included) not listed in ``sts_endpoints``; a Host header
                    that differs from the URL's host
FORBIDDEN_HEADER    a header outside ``ALLOWED_HEADERS`` (named in the message)
NOT_SIGV4           no Authorization, or not ``AWS4-HMAC-SHA256 Credential=AKID/DATE/
                    REGION/sts/aws4_request, SignedHeaders=..., Signature=<64 hex>``;
                    a service other than ``sts``; SignedHeaders without ``host`` or
                    ``x-amz-date``, or naming a header the request lacks; no
                    X-Amz-Date, one not ``YYYYMMDDTHHMMSSZ``, or a credential scope
                    of another day
SERVER_ID_MISSING   no ``X-Authsvc-Server-Id`` header
SERVER_ID_MISMATCH  the header is not exactly this server's ``server_id``
SERVER_ID_UNSIGNED  the header is there but not listed in SignedHeaders
REQUEST_STALE       X-Amz-Date older than ``max_request_age`` (+ ``CLOCK_SKEW``), or
                    more than ``CLOCK_SKEW`` ahead of our clock
=================== =============================================================

Messages name the header or member at fault, never a header's value (the
Authorization header, the session token and the signature are secrets).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from authsvc.errors import InvalidCredentials
from authsvc.identity.aws.settings import SERVER_ID_HEADER, AwsSettings
from authsvc.strictjson import DuplicateMember, NonCanonical, b64url_decode, loads_strict

__all__ = [
    "ALLOWED_HEADERS",
    "CLOCK_SKEW",
    "GET_CALLER_IDENTITY_BODY",
    "MAX_PROOF_CHARS",
    "NONCE_HEADER",
    "SUBJECT_TOKEN_TYPE",
    "SignedRequest",
    "encode_proof",
    "parse_proof",
]

#: RFC 8693 ``subject_token_type`` of a proof: base64url (no padding) of the compact JSON
#: ``{"method", "url", "headers", "body"}`` of a SigV4-signed ``sts:GetCallerIdentity``
#: request. Sent as ``subject_token`` to exchange it, or as the password of user ``aws``.
SUBJECT_TOKEN_TYPE: Final = "urn:authsvc:params:aws:signed-get-caller-identity"

#: Largest proof accepted, in characters of its base64url text. A botocore request with
#: an STS session token (the longest header, ~1-2 KiB) encodes to about 3 KiB.
MAX_PROOF_CHARS: Final = 8 * 1024

#: The one body accepted, byte for byte (what every SDK sends for this action).
GET_CALLER_IDENTITY_BODY: Final = "Action=GetCallerIdentity&Version=2011-06-15"

#: Header names a proof may carry (compared lower-cased); any other is refused, so the
#: request cannot switch STS to another protocol (``X-Amz-Target``), another action,
#: or smuggle anything through us. ``user-agent`` is allowed because SDKs set it (some
#: sign it) and it changes nothing STS does.
NONCE_HEADER: Final = "x-authsvc-nonce"
ALLOWED_HEADERS: Final = frozenset(
    {
        "authorization",
        "content-length",
        "content-type",
        "host",
        "user-agent",
        "x-amz-date",
        "x-amz-security-token",
        SERVER_ID_HEADER,
        # A random value the client may sign so that two requests signed in the same
        # second (X-Amz-Date has one-second resolution) are two proofs, not a replay.
        NONCE_HEADER,
    }
)

#: Clock difference tolerated between client and server, in seconds: a request may be
#: this much older than ``max_request_age``, or dated this much ahead of our clock. A
#: request dated further ahead is refused rather than trusted, as it would stay fresh
#: for longer than ``max_request_age``.
CLOCK_SKEW: Final = 30

#: Headers every signature must cover (the server id is checked on its own, with its
#: own reason, so that a client learns exactly what to fix).
_REQUIRED_SIGNED: Final = ("host", "x-amz-date")
_KEYS: Final = frozenset({"method", "url", "headers", "body"})
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_FIELD_VALUE: Final = re.compile(r"[\x20-\x7e\t]*")  # visible ASCII, space and tab
_AMZ_DATE: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_FORM_TYPES: Final = frozenset(
    {"application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8"}
)
_AUTHORIZATION: Final = re.compile(
    r"AWS4-HMAC-SHA256 "
    r"Credential=(?P<akid>[A-Za-z0-9]{16,128})/(?P<date>[0-9]{8})/(?P<region>[a-z0-9-]{1,32})"
    r"/(?P<service>[a-z0-9-]{1,32})/aws4_request, ?"
    r"SignedHeaders=(?P<signed>[a-z0-9-]+(?:;[a-z0-9-]+)*), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class SignedRequest:
    """A proof that passed every local check; what ``StsClient`` sends on."""

    #: Always ``https://<host>/`` with ``host`` one of ``sts_endpoints``.
    url: str
    #: The headers as the client gave them (names in its spelling), in its order.
    headers: tuple[tuple[str, str], ...]
    body: str
    #: The SigV4 signature (64 hex digits): the proof's one-time id. A secret.
    signature: str
    #: ``X-Amz-Date`` as signed (``YYYYMMDDTHHMMSSZ``).
    amz_date: str
    #: SignedHeaders, lower-case, in the signature's order.
    signed_headers: tuple[str, ...]
    #: The signed host (``host[:port]``), as listed in ``sts_endpoints``.
    host: str
    #: Unix time until which the proof is fresh: X-Amz-Date + max_request_age + skew.
    expires_at: int

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def __repr__(self) -> str:  # the headers hold the signature and session token
        return f"SignedRequest(host={self.host!r}, amz_date={self.amz_date!r})"


def encode_proof(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: str,
) -> str:
    """The proof text for a signed request (what a client sends; tests build them so)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    document = {"method": method, "url": url, "headers": dict(pairs), "body": body}
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def parse_proof(text: str, settings: AwsSettings, *, now: int) -> SignedRequest:
    """Decode ``text`` and run every check; ``InvalidCredentials`` names the first failure."""
    document = _decode(text)
    method, url, headers, body = _members(document)
    if method != "POST":
        raise _refuse("WRONG_ACTION", "the signed request must be a POST")
    host = _check_url(url, settings)
    _check_header_names(headers)
    _check_host_header(headers, host)
    _check_body(headers, body)
    scope = _authorization(headers)
    amz_date, when = _amz_date(headers, scope)
    _check_server_id(headers, scope.signed, settings.server_id)
    if now - when > settings.max_request_age + CLOCK_SKEW:
        raise _refuse(
            "REQUEST_STALE",
            f"the request was signed {now - when} s ago; sign a new one (at most "
            f"{settings.max_request_age} s old)",
        )
    if when - now > CLOCK_SKEW:
        raise _refuse(
            "REQUEST_STALE",
            f"the request is dated {when - now} s in the future: check the client's clock",
        )
    return SignedRequest(
        url=f"https://{host}/",
        headers=tuple(headers),
        body=body,
        signature=scope.signature,
        amz_date=amz_date,
        signed_headers=scope.signed,
        host=host,
        expires_at=when + settings.max_request_age + CLOCK_SKEW,
    )


# -- decoding ------------------------------------------------------------------------


def _refuse(reason: str, message: str) -> InvalidCredentials:
    return InvalidCredentials(f"AWS proof refused: {message}", reason=reason)


def _decode(text: str) -> object:
    if len(text) > MAX_PROOF_CHARS:
        raise _refuse("MALFORMED_PROOF", f"the proof is over {MAX_PROOF_CHARS} characters")
    if not text:
        raise _refuse("MALFORMED_PROOF", "the proof is not unpadded base64url")
    try:
        raw = b64url_decode(text)
    except NonCanonical as exc:
        raise _refuse("MALFORMED_PROOF", "the proof is not canonical base64url") from exc
    except ValueError as exc:
        raise _refuse("MALFORMED_PROOF", "the proof is not unpadded base64url") from exc
    try:
        return loads_strict(raw)
    except UnicodeDecodeError as exc:
        raise _refuse("MALFORMED_PROOF", "the proof is not UTF-8") from exc
    except DuplicateMember as exc:
        raise _refuse("MALFORMED_PROOF", f"the proof names {_shown(exc.name)!r} twice") from exc
    except ValueError as exc:
        raise _refuse("MALFORMED_PROOF", "the proof is not JSON") from exc


def _shown(name: str) -> str:
    """A client-chosen name, safe and short enough to repeat in a message."""
    return name if len(name) <= 64 and _TOKEN.fullmatch(name) else "<unprintable name>"


def _members(document: object) -> tuple[str, str, list[tuple[str, str]], str]:
    if not isinstance(document, dict):
        raise _refuse("MALFORMED_PROOF", "the proof is not a JSON object")
    if set(document) != _KEYS:
        missing = sorted(_KEYS - set(document))
        extra = sorted(_shown(k) for k in set(document) - _KEYS)
        raise _refuse(
            "MALFORMED_PROOF",
            "the proof must have exactly the members method, url, headers, body"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else ""),
        )
    method, url, body = (_string(document, k) for k in ("method", "url", "body"))
    headers = document["headers"]
    if not isinstance(headers, dict):
        raise _refuse("MALFORMED_PROOF", "the proof's headers are not a JSON object")
    pairs: list[tuple[str, str]] = []
    for name, value in headers.items():
        if not isinstance(value, str):
            raise _refuse(
                "MALFORMED_PROOF", f"the value of header {_shown(name)!r} is not a string"
            )
        pairs.append((name, value))
    return method, url, pairs, body


def _string(document: dict[str, object], name: str) -> str:
    value = document[name]
    if not isinstance(value, str):
        raise _refuse("MALFORMED_PROOF", f"the proof's {name} is not a string")
    return value


# -- the request's parts --------------------------------------------------------------


def _check_url(url: str, settings: AwsSettings) -> str:
    """The URL's ``host[:port]`` once it is exactly ``https://<listed host>/``."""
    if not _FIELD_VALUE.fullmatch(url) or " " in url or "\t" in url or "\\" in url:
        raise _refuse("MALFORMED_PROOF", "the url holds characters a URL cannot")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise _refuse("MALFORMED_PROOF", "the url must be https://")
    if "@" in parts.netloc:
        raise _refuse("FOREIGN_HOST", "the url carries user info (user@host)")
    if "#" in url:
        raise _refuse("MALFORMED_PROOF", "the url carries a fragment")
    if "?" in url:
        raise _refuse(
            "WRONG_ACTION", "the url carries a query: the action belongs in the body only"
        )
    if parts.path != "/":
        raise _refuse("WRONG_ACTION", "the url's path must be exactly /")
    host = parts.netloc
    if host not in settings.sts_endpoints:
        raise _refuse(
            "FOREIGN_HOST",
            f"the request is addressed to {_shown_host(host)!r}, which is not one of the "
            f"STS endpoints accepted here ({', '.join(settings.sts_endpoints)})",
        )
    return host


def _shown_host(host: str) -> str:
    return host if len(host) <= 255 and re.fullmatch(r"[A-Za-z0-9.:\[\]-]*", host) else "?"


def _check_header_names(headers: list[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for name, value in headers:
        lower = name.lower()
        if lower in seen:
            raise _refuse("MALFORMED_PROOF", f"the header {_shown(name)!r} appears twice")
        seen.add(lower)
        if not _TOKEN.fullmatch(name):
            raise _refuse("MALFORMED_PROOF", "a header name holds characters HTTP forbids")
        if lower not in ALLOWED_HEADERS:
            raise _refuse(
                "FORBIDDEN_HEADER",
                f"the header {_shown(name)!r} is not allowed in a signed GetCallerIdentity "
                f"request (allowed: {', '.join(sorted(ALLOWED_HEADERS))})",
            )
        if not _FIELD_VALUE.fullmatch(value):
            raise _refuse(
                "MALFORMED_PROOF", f"the value of header {name!r} holds characters HTTP forbids"
            )


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _check_host_header(headers: list[tuple[str, str]], host: str) -> None:
    given = _header(headers, "host")
    if given is not None and given != host:
        raise _refuse("FOREIGN_HOST", "the Host header names another host than the url")


def _check_body(headers: list[tuple[str, str]], body: str) -> None:
    if body != GET_CALLER_IDENTITY_BODY:
        raise _refuse(
            "WRONG_ACTION", f"the body must be exactly {GET_CALLER_IDENTITY_BODY!r}"
        )
    content_type = _header(headers, "content-type")
    if content_type is not None and content_type.lower() not in _FORM_TYPES:
        raise _refuse(
            "WRONG_ACTION", "the Content-Type must be application/x-www-form-urlencoded"
        )
    length = _header(headers, "content-length")
    if length is not None and length != str(len(body.encode())):
        raise _refuse("MALFORMED_PROOF", "the Content-Length is not the body's length")


@dataclass(frozen=True)
class _Scope:
    date: str
    signed: tuple[str, ...]
    signature: str


def _authorization(headers: list[tuple[str, str]]) -> _Scope:
    value = _header(headers, "authorization")
    if value is None:
        raise _refuse("NOT_SIGV4", "the request has no Authorization header")
    match = _AUTHORIZATION.fullmatch(value)
    if match is None:
        raise _refuse(
            "NOT_SIGV4",
            "the Authorization header is not 'AWS4-HMAC-SHA256 Credential=<key id>/<date>/"
            "<region>/sts/aws4_request, SignedHeaders=<names>, Signature=<64 hex digits>'",
        )
    if match["service"] != "sts":
        raise _refuse(
            "NOT_SIGV4", f"the request is signed for service {match['service']!r}, not 'sts'"
        )
    signed = tuple(match["signed"].split(";"))
    if len(set(signed)) != len(signed):
        raise _refuse("NOT_SIGV4", "SignedHeaders names a header twice")
    for required in _REQUIRED_SIGNED:
        if required not in signed:
            raise _refuse("NOT_SIGV4", f"SignedHeaders must include {required!r}")
    # host may come from the URL alone; x-amz-date and the server id are reported on
    # their own, below.
    present = {name.lower() for name, _ in headers} | {"host", "x-amz-date", SERVER_ID_HEADER}
    for name in signed:
        if name not in present:
            raise _refuse(
                "NOT_SIGV4", f"SignedHeaders names {name!r}, which the request does not carry"
            )
    return _Scope(match["date"], signed, match["signature"])


def _amz_date(headers: list[tuple[str, str]], scope: _Scope) -> tuple[str, int]:
    value = _header(headers, "x-amz-date")
    if value is None:
        raise _refuse("NOT_SIGV4", "the request has no X-Amz-Date header")
    if not _AMZ_DATE.fullmatch(value):
        raise _refuse("NOT_SIGV4", "X-Amz-Date is not YYYYMMDDTHHMMSSZ")
    try:
        when = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise _refuse("NOT_SIGV4", "X-Amz-Date is not a valid date") from exc
    if value[:8] != scope.date:
        raise _refuse("NOT_SIGV4", "the credential scope's date is not X-Amz-Date's day")
    return value, int(when.timestamp())


def _check_server_id(headers: list[tuple[str, str]], signed: tuple[str, ...], ours: str) -> None:
    value = _header(headers, SERVER_ID_HEADER)
    if value is None:
        raise _refuse(
            "SERVER_ID_MISSING",
            f"the request must carry and sign the {SERVER_ID_HEADER} header "
            f"(this server's id is {ours!r})",
        )
    if value != ours:
        raise _refuse(
            "SERVER_ID_MISMATCH",
            f"the request was signed for another server: {SERVER_ID_HEADER} must be {ours!r}",
        )
    if SERVER_ID_HEADER not in signed:
        raise _refuse(
            "SERVER_ID_UNSIGNED", f"the {SERVER_ID_HEADER} header must be listed in SignedHeaders"
        )
