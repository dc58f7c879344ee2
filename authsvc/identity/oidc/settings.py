"""``identities.oidc.NAME``: one trusted OIDC issuer, validated when the file is loaded."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

__all__ = ["PRESET_NAMES", "Algorithm", "OidcIssuerSettings", "is_loopback_url"]

Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]
PRESET_NAMES = (
    "github-actions",
    "gitlab",
    "kubernetes",
    "google",
    "azure",
    "circleci",
    "buildkite",
    "generic",
)
Preset = Literal[
    "github-actions", "gitlab", "kubernetes", "google", "azure", "circleci", "buildkite",
    "generic",
]

#: Audiences the platforms hand out by default: any job on the platform can get a token
#: for them, so a registry that accepted them would accept every tenant's jobs.
_SHARED_AUDIENCES = ("sts.amazonaws.com", "api://AzureADTokenExchange")
_SHARED_AUDIENCE_PREFIXES = (
    "https://github.com/",
    "https://kubernetes.default.svc",
    "https://gitlab.com",
)


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def _check_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_url(url)):
        if not parts.hostname:
            raise ValueError(f"{what} {url!r} has no host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"{what} {url!r} must not carry a query, fragment or user info")
        return url
    raise ValueError(f"{what} {url!r} must be https:// (http:// only on a loopback address)")


class OidcIssuerSettings(BaseModel):
    """One issuer. ``None`` fields take the preset's value (see ``presets.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Preset = "generic"
    issuer: StrictStr | None = None
    audience: StrictStr
    algorithms: Annotated[tuple[Algorithm, ...], Field(min_length=1)] = ("RS256",)
    jwks_uri: StrictStr | None = None
    leeway: Annotated[StrictInt, Field(ge=0, le=300)] = 30
    max_token_age: Annotated[StrictInt, Field(ge=30, le=7 * 86400)] = 3600
    max_lifetime: Annotated[StrictInt, Field(ge=30, le=7 * 86400)] = 86400
    require_jti: StrictBool | None = None
    allow_audience_list: StrictBool = False
    subject_claim: StrictStr | None = None
    username_claim: StrictStr | None = None
    groups_claim: StrictStr | None = None
    kind: Literal["human", "robot", "ci"] | None = None
    #: The byte-identical token may be presented again as a password until its exp.
    password_reuse: StrictBool = True
    #: Lifetime of the session credential a token is exchanged for (refresh token).
    session_ttl: Annotated[StrictInt, Field(ge=60, le=86400)] = 900
    #: Lifetime of the registry tokens minted for this issuer's identities.
    token_ttl: Annotated[StrictInt, Field(ge=60, le=3600)] = 300
    #: How long a fetched key set is used before it is fetched again.
    jwks_ttl: Annotated[StrictInt, Field(ge=60, le=86400)] = 900
    #: At most one refetch per window when a token names an unknown kid.
    jwks_refresh_cooldown: Annotated[StrictInt, Field(ge=1, le=3600)] = 60

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, "issuer")

    @field_validator("jwks_uri")
    @classmethod
    def _jwks_uri(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, "jwks_uri")

    @field_validator("audience")
    @classmethod
    def _audience(cls, value: str) -> str:
        if not value.strip() or value != value.strip():
            raise ValueError("audience is empty or has surrounding white space")
        if value in _SHARED_AUDIENCES or value.startswith(_SHARED_AUDIENCE_PREFIXES):
            raise ValueError(
                f"audience {value!r} is a platform's shared default: every tenant's jobs can "
                "get a token for it. Use an audience specific to this registry, such as its URL"
            )
        return value
