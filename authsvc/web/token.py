"""``GET /token`` and ``POST /token``: HTTP in, ``TokenRequest`` out, and back.

Parsing is strict and by hand: query strings and form bodies are decoded as UTF-8
with errors refused (werkzeug would silently substitute), bodies are read up to a cap
whether or not they are chunked (skopeo sends refresh grants with no Content-Length),
and a Content-Type with parameters (containerd adds a charset) is accepted.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import MethodNotAllowed

from authsvc.errors import BadRequest, PayloadTooLarge, UnsupportedGrantType
from authsvc.identity import Anonymous, Credential, Password, RefreshToken, SubjectToken
from authsvc.identity.aws.proof import SUBJECT_TOKEN_TYPE as AWS_TOKEN_TYPE
from authsvc.service import TokenGrant, TokenRequest
from authsvc.web.client import request_client_ip

__all__ = ["MAX_BODY_BYTES", "bp", "parse_basic_auth", "read_body"]

bp = Blueprint("token", __name__)

MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 100
#: The Docker credential-helper convention: this user name means "the password is a
#: refresh token".
TOKEN_USERNAME = "<token>"
_FORM_TYPE = "application/x-www-form-urlencoded"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: Subject token types a token exchange accepts: an OIDC ID token (either name), or a
#: signed AWS sts:GetCallerIdentity request.
SUBJECT_TOKEN_TYPES = (
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:jwt",
    AWS_TOKEN_TYPE,
)


class _Params:
    """Decoded query or form fields, with strict single-value access."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get(self, name: str) -> str | None:
        values = self.all(name)
        if len(values) > 1 and len(set(values)) > 1:
            raise BadRequest(f"parameter {name!r} is given more than once with different values")
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]


def _decode_pairs(raw: bytes, where: str) -> _Params:
    try:
        decoded = parse_qsl(
            raw.decode("utf-8", "strict"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            encoding="utf-8",
            errors="strict",
            separator="&",
        )
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{where} is not valid UTF-8") from exc
    except ValueError as exc:
        raise BadRequest(f"{where} has more than {MAX_FIELDS} fields") from exc
    for key, value in decoded:
        if "\x00" in key or "\x00" in value:
            raise BadRequest(f"{where} contains a NUL character")
    return _Params(decoded)


def _query() -> _Params:
    # WSGI hands the query string over as latin-1; recover the raw bytes.
    raw = request.environ.get("QUERY_STRING", "").encode("latin-1")
    return _decode_pairs(raw, "the query string")


def read_body() -> bytes:
    """The request body, chunked or not, refused past ``MAX_BODY_BYTES``."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if chunked and not request.environ.get("wsgi.input_terminated"):
        raise BadRequest(
            "this server cannot read chunked request bodies; run authsvc under `authsvc serve`"
        )
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    return body


def _form() -> _Params:
    mimetype = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if mimetype != _FORM_TYPE:
        raise BadRequest(f"POST /token takes an {_FORM_TYPE} form, not {mimetype or 'nothing'!r}")
    return _decode_pairs(read_body(), "the form body")


def parse_basic_auth(header: str | None) -> Credential:
    """The credential in an Authorization header (none means anonymous)."""
    if header is None or not header.strip():
        return Anonymous()
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise BadRequest(f"unsupported Authorization scheme {scheme[:20]!r}: use Basic")
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("malformed Basic authorization: not base64") from exc
    try:
        text = decoded.decode("utf-8", "strict")
    except UnicodeDecodeError as exc:
        raise BadRequest("malformed Basic authorization: not UTF-8") from exc
    username, colon, password = text.partition(":")
    if not colon:
        raise BadRequest("malformed Basic authorization: no ':' between user name and password")
    if not username:
        raise BadRequest("malformed Basic authorization: empty user name")
    if username == TOKEN_USERNAME:
        return RefreshToken(password)
    return Password(username, password)


def _subject_token(form: _Params) -> SubjectToken:
    token = form.get("subject_token")
    if not token:
        raise BadRequest("a token exchange needs 'subject_token'")
    token_type = form.get("subject_token_type")
    if token_type not in SUBJECT_TOKEN_TYPES:
        raise BadRequest(
            f"subject_token_type must be one of {', '.join(SUBJECT_TOKEN_TYPES)}, "
            f"not {(token_type or '')[:80]!r}"
        )
    requested = form.get("requested_token_type")
    if requested not in (None, "", ACCESS_TOKEN_TYPE):
        raise BadRequest(f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
    return SubjectToken(token, token_type)


def _flag(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"parameter {name!r} must be true or false, not {value[:20]!r}")


def _client() -> tuple[str, str]:
    return request_client_ip(), request.headers.get("User-Agent", "")[:256]


def _issue(token_request: TokenRequest) -> TokenGrant:
    grant: TokenGrant = current_app.extensions["authsvc"].service.issue(token_request)
    return grant


def _response(grant: TokenGrant, *, oauth: bool, exchange: bool = False) -> Response:
    """The token answer; the OAuth2 form (POST) also names the granted scope, and a
    token exchange the RFC 8693 fields."""
    body: dict[str, object] = {
        "token": grant.token,
        "access_token": grant.token,
        "expires_in": grant.expires_in,
        "issued_at": grant.issued_at,
    }
    if oauth:
        body["scope"] = grant.scope
    if exchange:
        body["issued_token_type"] = ACCESS_TOKEN_TYPE
        body["token_type"] = "Bearer"
    if grant.refresh_token:
        body["refresh_token"] = grant.refresh_token
        if grant.refresh_expires_in is not None:
            body["refresh_expires_in"] = grant.refresh_expires_in
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.get("/token")
def get_token() -> Response:
    if request.method == "HEAD":  # Flask adds HEAD to GET routes; a token is never a side effect
        raise MethodNotAllowed(valid_methods=["GET", "POST"])
    params = _query()
    credential = parse_basic_auth(request.headers.get("Authorization"))
    ip, agent = _client()
    grant = _issue(
        TokenRequest(
            service=params.get("service"),
            scopes=params.all("scope"),
            credential=credential,
            account=params.get("account") or None,
            client_id=params.get("client_id"),
            offline=_flag(params.get("offline_token"), "offline_token"),
            client_ip=ip,
            user_agent=agent,
        )
    )
    return _response(grant, oauth=False)


@bp.post("/token")
def post_token() -> Response:
    form = _form()
    grant_type = form.get("grant_type")
    credential: Credential
    if grant_type == "password":
        username, password = form.get("username"), form.get("password")
        if not username or password is None:
            raise BadRequest("grant_type=password needs 'username' and 'password'")
        credential = (
            RefreshToken(password) if username == TOKEN_USERNAME else Password(username, password)
        )
    elif grant_type == "refresh_token":
        token = form.get("refresh_token")
        if not token:
            raise BadRequest("grant_type=refresh_token needs 'refresh_token'")
        credential = RefreshToken(token)
    elif grant_type == TOKEN_EXCHANGE:
        credential = _subject_token(form)
    elif grant_type is None or grant_type == "":
        raise BadRequest("'grant_type' is required (password or refresh_token)")
    else:
        raise UnsupportedGrantType(
            f"unsupported grant_type {grant_type[:60]!r} (use password, refresh_token or "
            f"{TOKEN_EXCHANGE})"
        )
    client_id = form.get("client_id")
    if not client_id and grant_type != TOKEN_EXCHANGE:
        raise BadRequest("'client_id' is required")
    access_type = form.get("access_type")
    if access_type not in (None, "", "offline", "online"):
        raise BadRequest(f"access_type must be offline or online, not {access_type[:20]!r}")
    ip, agent = _client()
    grant = _issue(
        TokenRequest(
            service=form.get("service"),
            scopes=form.all("scope"),
            credential=credential,
            client_id=client_id,
            offline=access_type == "offline",
            grant_type=grant_type,
            client_ip=ip,
            user_agent=agent,
        )
    )
    return _response(grant, oauth=True, exchange=grant_type == TOKEN_EXCHANGE)
