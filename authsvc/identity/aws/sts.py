"""Sending a client's signed GetCallerIdentity request to STS, and reading the answer.

The request goes to the *configured* STS URL, never to one the client named, with the
client's headers as signed (its Host header is the signed host, one of
``sts_endpoints``) and its body. A redirect is not followed. What comes back decides:

=========================== ========================================================
200, one valid result       ``CallerIdentity(arn, account, user_id)``
200, anything else          ``InvalidCredentials`` STS_ANSWER_INVALID (what was wrong)
400 / 401 / 403             ``InvalidCredentials`` STS_REFUSED with STS's error Code
                            (SignatureDoesNotMatch, ExpiredToken, InvalidClientTokenId)
                            — except throttling codes, which are STS_UNAVAILABLE
3xx                         ``ServiceUnavailable`` STS_REDIRECTED (a misconfigured
                            ``sts_url``: nothing the client can fix)
5xx, 429, other statuses,   ``ServiceUnavailable`` STS_UNAVAILABLE
unreachable, timeout
over ``max_bytes``          ``InvalidCredentials`` STS_ANSWER_INVALID
=========================== ========================================================

XML answers are parsed with ``xml.etree`` only after a DOCTYPE or ENTITY declaration
has been refused (no entity can then be declared, and ElementTree never fetches
external ones); JSON answers (``Accept: application/json`` style) are read strictly
(``authsvc.strictjson``): duplicate member names and NaN/Infinity are refused.
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit
from xml.etree import ElementTree

from authsvc.errors import InvalidCredentials, ServiceUnavailable
from authsvc.identity.aws.proof import SignedRequest
from authsvc.strictjson import DuplicateMember, loads_strict

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_TIMEOUT", "STS_NAMESPACE", "CallerIdentity", "StsClient"]

#: Seconds for one call: per socket operation, and for the whole answer.
DEFAULT_TIMEOUT: Final = 5.0
#: Largest answer read (STS's is ~500 bytes).
DEFAULT_MAX_BYTES: Final = 64 * 1024
STS_NAMESPACE: Final = "https://sts.amazonaws.com/doc/2011-06-15/"

#: STS error codes that say "try again later", not "these credentials are bad".
_BUSY_CODES: Final = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable"}
)
_CODE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_LOOPBACK: Final = ("127.0.0.1", "localhost", "::1")
_FIELDS: Final = ("Arn", "Account", "UserId")


@dataclass(frozen=True)
class CallerIdentity:
    """Who signed the request, as STS says (``GetCallerIdentityResult``)."""

    arn: str
    account: str
    user_id: str


class StsClient:
    """Calls STS's GetCallerIdentity with a client's signed request."""

    def __init__(
        self, url: str, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        parts = urlsplit(url)
        loopback = (parts.hostname or "") in _LOOPBACK
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(f"STS url {url!r} must be https:// (http:// only on loopback)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"STS url {url!r} must not carry a query, fragment or user info")
        if parts.hostname is None:
            raise ValueError(f"STS url {url!r} has no host")
        if timeout <= 0 or max_bytes <= 0:
            raise ValueError("timeout and max_bytes must be positive")
        self.url = url
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path or "/"
        self._timeout = timeout
        self._max_bytes = max_bytes

    def get_caller_identity(self, request: SignedRequest) -> CallerIdentity:
        status, body = self._post(request)
        if status == 200:
            return _parse_result(body, self._max_bytes)
        if 300 <= status < 400:
            raise ServiceUnavailable(
                f"STS at {self.url} answered with a redirect ({status}), which is not "
                "followed: check sts_url",
                reason="STS_REDIRECTED",
            )
        code = _error_code(body) if len(body) <= self._max_bytes else None
        named = f" ({code})" if code is not None else ""
        if status in (400, 401, 403) and code not in _BUSY_CODES:
            raise InvalidCredentials(
                f"STS refused the signed request{named}: sign a new one with valid "
                "credentials",
                reason="STS_REFUSED",
            )
        raise ServiceUnavailable(
            f"STS answered {status}{named}; try again later", reason="STS_UNAVAILABLE"
        )

    # -------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._tls:
            return http.client.HTTPSConnection(
                self._host,
                self._port,
                timeout=self._timeout,
                context=ssl.create_default_context(),
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _post(self, request: SignedRequest) -> tuple[int, bytes]:
        """The status and (up to ``max_bytes`` + 1 bytes of) body of STS's answer."""
        body = request.body.encode()
        deadline = time.monotonic() + self._timeout
        connection = self._connection()
        try:
            connection.putrequest("POST", self._path, skip_host=True, skip_accept_encoding=True)
            # The signed host, not sts_url's: the signature covers it, and STS checks it.
            connection.putheader("Host", request.host)
            for name, value in request.headers:
                if name.lower() != "host":
                    connection.putheader(name, value)
            if request.header("content-length") is None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, self._read(connection, response, deadline)
        except TimeoutError as exc:
            raise ServiceUnavailable(
                f"STS at {self.url} did not answer within {self._timeout:g} s",
                reason="STS_UNAVAILABLE",
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceUnavailable(
                f"STS at {self.url} could not be reached ({type(exc).__name__})",
                reason="STS_UNAVAILABLE",
            ) from exc
        finally:
            connection.close()

    def _read(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        deadline: float,
    ) -> bytes:
        """Read at most ``max_bytes`` + 1 bytes, within the deadline for the whole call."""
        chunks: list[bytes] = []
        size = 0
        while size <= self._max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("STS answer too slow")
            if connection.sock is not None:
                connection.sock.settimeout(left)
            chunk = response.read1(self._max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)


# -- answers ---------------------------------------------------------------------------


def _invalid(problem: str) -> InvalidCredentials:
    return InvalidCredentials(
        f"STS's answer to GetCallerIdentity was not understood: {problem}",
        reason="STS_ANSWER_INVALID",
    )


def _parse_result(body: bytes, max_bytes: int) -> CallerIdentity:
    if len(body) > max_bytes:
        raise _invalid(f"it is over {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid("it is not UTF-8") from exc
    start = text.lstrip()[:1]
    if start == "<":
        fields = _xml_result(text)
    elif start == "{":
        fields = _json_result(text)
    else:
        raise _invalid("it is neither XML nor JSON")
    arn, account, user_id = (fields[name] for name in _FIELDS)
    if not re.fullmatch(r"[0-9]{12}", account):
        raise _invalid("Account is not a 12-digit account id")
    arn_parts = arn.split(":", 5)
    if len(arn_parts) != 6 or arn_parts[0] != "arn" or arn_parts[4] != account:
        raise _invalid("Arn is not an ARN in the answer's Account")
    return CallerIdentity(arn=arn, account=account, user_id=user_id)


def _xml_root(text: str) -> ElementTree.Element:
    lowered = text.lower()
    if "<!doctype" in lowered or "<!entity" in lowered:
        raise _invalid("it declares a DOCTYPE or ENTITY")
    try:
        # Safe as used: no DTD (refused above) means no entity, and ElementTree resolves
        # no external entities; the size is capped before this.
        return ElementTree.fromstring(text)  # noqa: S314
    except ElementTree.ParseError as exc:
        raise _invalid("it is not well-formed XML") from exc


def _xml_result(text: str) -> dict[str, str]:
    root = _xml_root(text)
    ns = "{" + STS_NAMESPACE + "}"
    if root.tag != ns + "GetCallerIdentityResponse":
        raise _invalid(f"its root is not GetCallerIdentityResponse in namespace {STS_NAMESPACE}")
    results = root.findall(ns + "GetCallerIdentityResult")
    if len(results) != 1:
        raise _invalid(f"it holds {len(results)} GetCallerIdentityResult elements, not 1")
    fields: dict[str, str] = {}
    for name in _FIELDS:
        found = results[0].findall(ns + name)
        if len(found) != 1:
            raise _invalid(f"its result holds {len(found)} {name} elements, not 1")
        element = found[0]
        value = (element.text or "").strip()
        if len(element) or not value:
            raise _invalid(f"its {name} is not a non-empty string")
        fields[name] = value
    return fields


def _json_document(text: str) -> object:
    try:
        return loads_strict(text)
    except DuplicateMember as exc:
        raise _invalid(f"it names {exc.name[:64]!r} twice") from exc
    except ValueError as exc:
        raise _invalid("it is not JSON") from exc


def _json_result(text: str) -> dict[str, str]:
    document = _json_document(text)
    response = document.get("GetCallerIdentityResponse") if isinstance(document, dict) else None
    result = response.get("GetCallerIdentityResult") if isinstance(response, dict) else None
    if not isinstance(result, dict):
        raise _invalid("it holds no GetCallerIdentityResponse.GetCallerIdentityResult object")
    fields: dict[str, str] = {}
    for name in _FIELDS:
        value = result.get(name)
        if not isinstance(value, str) or not value.strip():
            raise _invalid(f"its {name} is not a non-empty string")
        fields[name] = value.strip()
    return fields


def _error_code(body: bytes) -> str | None:
    """STS's error Code from an error answer (XML ``Error/Code`` or JSON), if readable."""
    try:
        text = body.decode("utf-8")
        start = text.lstrip()[:1]
        code: object = None
        if start == "<":
            root = _xml_root(text)
            for element in root.iter():
                if element.tag.rsplit("}", 1)[-1] == "Error":
                    code = next(
                        (c.text for c in element if c.tag.rsplit("}", 1)[-1] == "Code"), None
                    )
                    break
        elif start == "{":
            document = _json_document(text)
            if isinstance(document, dict):
                error = document.get("Error")
                code = error.get("Code") if isinstance(error, dict) else document.get("__type")
    except (UnicodeDecodeError, InvalidCredentials):
        return None
    if isinstance(code, str) and _CODE.fullmatch(code.strip()):
        return code.strip()
    return None
