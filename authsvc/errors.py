"""One error tree for the whole service.

Every error a client can see carries its own HTTP status, a Docker-style ``code``
(used on GET, ``{"errors": [{"code", "message", "detail"}]}``), an OAuth2 ``error``
(used on POST, ``{"error", "error_description"}``) and any headers it needs. The web
layer renders them in one place (``authsvc.web.errors``); views never build error
bodies themselves.

    AuthsvcError
    ├── BadRequest                 400 malformed input (bad form, header, parameter)
    │   ├── InvalidScope           400 a scope that does not parse
    │   ├── UnknownService         400 a `service` not in the configuration
    │   ├── UnsupportedGrantType   400 a grant_type we do not implement
    │   └── PayloadTooLarge        413 a body or header over its cap
    ├── InvalidCredentials         401 wrong or unknown credentials (WWW-Authenticate)
    ├── Forbidden                  403 authenticated, but not allowed (admin endpoints only)
    ├── TooManyAttempts            429 failed logins of this account from this address:
    │                                  wait (Retry-After); POST: OAuth2 slow_down
    ├── ServiceUnavailable         503 a dependency (store, audit sink) is down
    │   └── StoreUnavailable       503 the store did not answer
    └── ConfigError                (not HTTP) configuration refused, with every problem
        KeyRingError               (not HTTP) key ring missing or unreadable
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

__all__ = [
    "AuthsvcError",
    "BadRequest",
    "ConfigError",
    "Forbidden",
    "InvalidCredentials",
    "InvalidScope",
    "KeyRingError",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "StoreUnavailable",
    "TooManyAttempts",
    "UnknownService",
    "UnsupportedGrantType",
]


class AuthsvcError(Exception):
    """Base of every error the service raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "UNKNOWN"
    oauth_error: ClassVar[str] = "server_error"
    #: A stable reason code for audit events (overridden per instance when useful).
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        detail: object = None,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers: dict[str, str] = dict(headers or {})
        if reason is not None:
            self.reason = reason

    @property
    def oauth_fields(self) -> dict[str, object]:
        """Members an OAuth2 error body (POST) carries besides ``error`` and
        ``error_description``."""
        return {}


class BadRequest(AuthsvcError):
    status = 400
    code = "BAD_REQUEST"
    oauth_error = "invalid_request"
    reason = "MALFORMED_REQUEST"


class InvalidScope(BadRequest):
    code = "INVALID_SCOPE"
    oauth_error = "invalid_scope"
    reason = "MALFORMED_SCOPE"


class UnknownService(BadRequest):
    code = "UNKNOWN_SERVICE"
    reason = "UNKNOWN_SERVICE"


class UnsupportedGrantType(BadRequest):
    code = "UNSUPPORTED"
    oauth_error = "unsupported_grant_type"
    reason = "UNSUPPORTED_GRANT_TYPE"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "TOO_LARGE"
    reason = "REQUEST_TOO_LARGE"


class InvalidCredentials(AuthsvcError):
    """Authentication failed. GET answers with a Basic challenge; POST with invalid_grant.

    POST never answers 403: containerd treats a 403 on POST as fatal instead of falling
    back to GET, so every refusal of credentials is a 401.
    """

    status = 401
    code = "UNAUTHORIZED"
    oauth_error = "invalid_grant"
    reason = "INVALID_CREDENTIALS"


class Forbidden(AuthsvcError):
    """Authenticated but not allowed. Never used by /token (see InvalidCredentials)."""

    status = 403
    code = "DENIED"
    oauth_error = "access_denied"
    reason = "FORBIDDEN"


class TooManyAttempts(AuthsvcError):
    """Too many failed password logins of one account from one address: retry later.

    Docker's registry errors name this ``TOOMANYREQUESTS`` (distribution's errcode).
    OAuth2 has no token-endpoint error for it; ``slow_down`` (RFC 8628 section 3.5,
    registered for token endpoint responses) is the one that tells a client to wait and
    try again. ``invalid_grant`` would claim the password is wrong, which it may not be.
    """

    status = 429
    code = "TOOMANYREQUESTS"
    oauth_error = "slow_down"
    reason = "TOO_MANY_ATTEMPTS"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(
            "too many failed logins for this account from this address: "
            f"retry in {self.retry_after} seconds",
            detail={"retry_after": self.retry_after},
            headers={"Retry-After": str(self.retry_after)},
        )

    @property
    def oauth_fields(self) -> dict[str, object]:
        return {"retry_after": self.retry_after}


class ServiceUnavailable(AuthsvcError):
    status = 503
    code = "UNAVAILABLE"
    oauth_error = "temporarily_unavailable"
    reason = "UNAVAILABLE"


class StoreUnavailable(ServiceUnavailable):
    reason = "STORE_UNAVAILABLE"


class ConfigError(Exception):
    """A configuration was refused. ``problems`` holds one ``path: reason`` line each."""

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "invalid configuration:\n  " + "\n  ".join(self.problems))


class KeyRingError(Exception):
    """The key directory is missing, empty, or holds a key that cannot be read."""
