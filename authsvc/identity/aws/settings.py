"""``identities.aws``: which STS hosts, which accounts, and this server's id."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from authsvc.identity.providers import ProviderSchema
from authsvc.policy.schema import Rule

__all__ = ["PROVIDER", "SERVER_ID_HEADER", "AwsSettings", "aws_rule_errors", "aws_schema"]

#: The provider name rules use (``match: {provider: aws}``).
PROVIDER = "aws"
#: The header the client must sign, carrying ``server_id`` (lower-case, as SigV4 lists it).
SERVER_ID_HEADER = "x-authsvc-server-id"

_HOST = re.compile(
    r"[a-z0-9-]+(\.[a-z0-9-]+)+(:[0-9]{1,5})?|127\.0\.0\.1:[0-9]{1,5}|localhost:[0-9]{1,5}"
)
_ACCOUNT = re.compile(r"[0-9]{12}")


class AwsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Hosts a signed request may be addressed to, exactly (``sts.amazonaws.com``,
    #: ``sts.eu-west-1.amazonaws.com``); anything else is refused before any call.
    sts_endpoints: Annotated[tuple[StrictStr, ...], Field(min_length=1)]
    #: The URL authsvc itself sends the request to; never taken from the client.
    sts_url: StrictStr = "https://sts.amazonaws.com/"
    #: A value the client signs in the ``X-Authsvc-Server-Id`` header, so a request
    #: signed for another server cannot be replayed here.
    server_id: StrictStr
    max_request_age: Annotated[StrictInt, Field(ge=30, le=900)] = 300
    #: The AWS accounts whose principals may log in (12-digit ids).
    accounts: Annotated[tuple[StrictStr, ...], Field(min_length=1)]
    kind: Literal["ci", "robot"] = "robot"
    session_ttl: Annotated[StrictInt, Field(ge=60, le=43200)] = 900
    token_ttl: Annotated[StrictInt, Field(ge=60, le=3600)] = 300
    #: The byte-identical signed request may be sent again as a password while fresh.
    password_reuse: StrictBool = True

    @field_validator("sts_endpoints")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for host in value:
            if not _HOST.fullmatch(host):
                raise ValueError(f"{host!r} is not a host name (no scheme, path or user info)")
        return value

    @field_validator("sts_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        loopback = (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(f"sts_url {value!r} must be https:// (http:// only on loopback)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"sts_url {value!r} must not carry a query, fragment or user info")
        return value

    @field_validator("server_id")
    @classmethod
    def _server_id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._:/-]{8,128}", value):
            raise ValueError("server_id must be 8-128 characters of letters, digits and ._:/-")
        return value

    @field_validator("accounts")
    @classmethod
    def _accounts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for account in value:
            if not _ACCOUNT.fullmatch(account):
                raise ValueError(f"{account!r} is not a 12-digit AWS account id (quote it)")
        return value


#: The claims an AWS identity carries, for rules.
CLAIMS = frozenset({"account", "arn", "role", "user", "session_name", "user_id", "sts_arn"})
#: A rule on ``aws`` must name the principal (the account alone admits every role in it).
PINS = frozenset({"arn", "role", "user", "user_id"})


def aws_schema(settings: AwsSettings) -> ProviderSchema:
    return ProviderSchema(
        PROVIDER, frozenset({settings.kind}), CLAIMS, exact_claims=frozenset({"user_id", "account"})
    )


def aws_rule_errors(rule: Rule, index: int) -> list[str]:
    """An allowing rule on ``aws`` must pin the principal with equals or any."""
    if not rule.allow or PROVIDER not in (rule.match.provider or ()):
        return []
    claims = rule.match.claims or {}
    if any(claims[name].operator in ("equals", "any") for name in PINS if name in claims):
        return []
    return [
        f"rules[{index}] (id {rule.id!r}).match.claims: rules on aws must pin "
        f"{' or '.join(sorted(PINS))} with equals or any (the account alone admits every "
        "role and user in it)"
    ]
