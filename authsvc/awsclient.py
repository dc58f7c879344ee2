"""The client side of AWS IAM identities: sign a proof, exchange it for a session credential.

A proof is an ``sts:GetCallerIdentity`` request signed with SigV4 by the caller's own AWS
credentials (botocore's usual chain: environment, shared files, SSO, container and
instance roles), with this authsvc's ``X-Authsvc-Server-Id`` among the signed headers so
that it is worthless to any other server. It is never sent to STS by the client: authsvc
sends it and learns who signed it. The proof is exchanged once (RFC 8693) for a session
credential, used as a password with the user name ``<token>``.

Used by ``authsvc login aws`` and by the ``docker-credential-authsvc`` helper. botocore
is imported only when a proof is signed, so the rest of authsvc does not need it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from authsvc.identity.aws.proof import GET_CALLER_IDENTITY_BODY, SUBJECT_TOKEN_TYPE, encode_proof
from authsvc.login import Challenge, LoginError, check_url, discover, exchange

if TYPE_CHECKING:
    import botocore.session  # type: ignore[import-untyped]

__all__ = [
    "DEFAULT_REGION",
    "DEFAULT_STS_HOST",
    "GET_CALLER_IDENTITY",
    "NoCredentials",
    "SessionCredential",
    "challenge_for",
    "login",
    "region_for",
    "sign_proof",
]

DEFAULT_STS_HOST = "sts.amazonaws.com"
DEFAULT_REGION = "us-east-1"
GET_CALLER_IDENTITY = GET_CALLER_IDENTITY_BODY
#: Used when authsvc's answer names no lifetime for the session credential.
DEFAULT_SESSION_SECONDS = 900

_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_REGIONAL = re.compile(r"sts(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-[0-9]+)\.amazonaws\.com(?:\.cn)?")
_SERVER_ID = re.compile(r"[\x21-\x7e]{1,256}")


class NoCredentials(LoginError):
    """botocore's credential chain found no AWS credentials (or could not load them)."""


@dataclass(frozen=True)
class SessionCredential:
    """authsvc's session credential (a refresh token) and how long it lives."""

    secret: str = field(repr=False)
    expires_in: int


def region_for(sts_host: str) -> str:
    """The signing region a regional STS host implies (``sts.eu-west-1.amazonaws.com``);
    ``us-east-1`` for the global endpoint and for hosts it cannot tell."""
    match = _REGIONAL.fullmatch(sts_host.lower())
    return match.group(1) if match else DEFAULT_REGION


def _credentials(session: Any) -> Any:
    """Frozen credentials from botocore's chain, or NoCredentials saying what to do."""
    import botocore.exceptions  # type: ignore[import-untyped]
    import botocore.session

    try:
        session = session if session is not None else botocore.session.get_session()
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except botocore.exceptions.BotoCoreError as exc:
        raise NoCredentials(f"cannot load AWS credentials: {exc}") from exc
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise NoCredentials(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or run with an instance, task or pod role"
        )
    return frozen


def sign_proof(
    *,
    server_id: str,
    sts_host: str = DEFAULT_STS_HOST,
    region: str = DEFAULT_REGION,
    session: botocore.session.Session | None = None,
    url: str | None = None,
) -> str:
    """A signed ``sts:GetCallerIdentity`` request for authsvc ``server_id``, encoded as a
    proof (the ``subject_token`` of a token exchange, or the password of user ``aws``).

    ``sts_host`` is the host the request is signed for (authsvc accepts only the hosts it
    is configured with); ``url`` overrides where it is addressed (a test STS). Raises
    NoCredentials when there are no AWS credentials, LoginError on bad arguments.
    """
    try:
        from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
        from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
    except ImportError as exc:
        raise LoginError("AWS identities need botocore: pip install 'authsvc[aws]'") from exc
    if not _SERVER_ID.fullmatch(server_id):
        raise LoginError("the server id must be 1-256 printable characters without spaces")
    if not _HOST.fullmatch(sts_host):
        raise LoginError(f"STS host {sts_host!r} must be a host name (no scheme or path)")
    credentials = _credentials(session)
    request = AWSRequest(
        method="POST",
        url=url or f"https://{sts_host}/",
        data=GET_CALLER_IDENTITY,
        headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "X-Authsvc-Server-Id": server_id,
            # two logins in one second must not sign the very same request
            "X-Authsvc-Nonce": secrets.token_hex(16),
            "Host": sts_host,
        },
    )
    SigV4Auth(credentials, "sts", region).add_auth(request)
    headers = {str(name): str(value) for name, value in request.headers.items()}
    return encode_proof(str(request.method), str(request.url), headers, GET_CALLER_IDENTITY)


def challenge_for(
    *, registry: str | None = None, realm: str | None = None, service: str | None = None
) -> Challenge:
    """authsvc's token URL and the registry's service name: given, or read from the
    registry's ``WWW-Authenticate`` challenge."""
    if realm is not None or service is not None:
        if realm is None or service is None:
            raise LoginError("give --realm and --service together")
        check_url(realm, "realm")
        return Challenge(realm, service)
    if registry is None:
        raise LoginError("give --registry, or --realm and --service")
    return discover(registry)


def login(
    challenge: Challenge,
    *,
    server_id: str,
    sts_host: str = DEFAULT_STS_HOST,
    region: str | None = None,
    session: botocore.session.Session | None = None,
) -> SessionCredential:
    """Sign a fresh proof and exchange it once for a session credential."""
    proof = sign_proof(
        server_id=server_id,
        sts_host=sts_host,
        region=region or region_for(sts_host),
        session=session,
    )
    answer = exchange(challenge, proof, scopes=[], subject_token_type=SUBJECT_TOKEN_TYPE)
    secret = answer["refresh_token"]
    assert isinstance(secret, str)  # exchange() checked it
    lifetime = answer.get("refresh_expires_in")
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = DEFAULT_SESSION_SECONDS
    return SessionCredential(secret, lifetime)
