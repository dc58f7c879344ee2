"""Who is asking: one Identity type, one module per kind of credential.

``Credential`` is what the web layer parsed from a request; an authenticator turns a
proof into an ``Identity`` or raises ``InvalidCredentials`` with a stable reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ANONYMOUS",
    "Anonymous",
    "Credential",
    "Identity",
    "Kind",
    "Password",
    "RefreshToken",
    "SubjectToken",
]

Kind = Literal["human", "robot", "ci", "anonymous"]


@dataclass(frozen=True)
class Identity:
    """An authenticated caller, as the policy sees it."""

    subject: str
    kind: Kind
    provider: str
    account: str | None
    groups: frozenset[str] = frozenset()
    claims: Mapping[str, object] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Identity(subject="", kind="anonymous", provider="anonymous", account=None)


@dataclass(frozen=True)
class Anonymous:
    """No credential was presented."""


@dataclass(frozen=True)
class Password:
    """A username and password (Basic auth or ``grant_type=password``)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RefreshToken:
    """One of our own session credentials (``grant_type=refresh_token`` or ``<token>``)."""

    token: str = field(repr=False)


@dataclass(frozen=True)
class SubjectToken:
    """An RFC 8693 token exchange: a one-time proof (an OIDC ID token) to exchange."""

    token: str = field(repr=False)
    token_type: str = "urn:ietf:params:oauth:token-type:id_token"


Credential = Anonymous | Password | RefreshToken | SubjectToken
