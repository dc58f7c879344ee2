"""The only place that decodes an incoming JWT (an OIDC ID token from a CI runner).

Every check, in the order it runs; each refusal is ``InvalidCredentials`` with the
reason below and a message that never repeats the token:

 1. size: at most ``MAX_TOKEN_BYTES`` ............................... TOKEN_TOO_LARGE
 2. shape: compact JWS only, three base64url parts (canonical, no padding);
    JWS JSON serialization and JWE (five parts) are refused ........... MALFORMED_TOKEN
 3. header and payload: UTF-8 JSON objects, no duplicate member names at any
    depth, no NaN/Infinity ............................................ MALFORMED_TOKEN
 4. ``alg``: a string naming an asymmetric algorithm (never ``none``, never
    HS*) .............................................................. ALGORITHM_NOT_ALLOWED
 5. no key in or behind the header (``jwk``, ``jku``, ``x5u``, ``x5c``), no
    ``crit`` extension, no ``b64: false``; ``kid`` a short string ..... FORBIDDEN_HEADER
 6. the unverified ``iss`` picks a configured issuer, byte for byte (a trailing
    slash, other case or scheme, or a lookalike host is not configured) .. UNKNOWN_ISSUER
 7. ``alg`` in that issuer's list ................................... ALGORITHM_NOT_ALLOWED
 8. the key: that issuer's JWKS only, by ``kid`` (one refetch per cooldown) UNKNOWN_KEY
    (no key set at all, the issuer never answered: ``ServiceUnavailable``, 503)
 9. the signature ..................................................... INVALID_SIGNATURE
10. claims, checked here explicitly:
    - ``iss`` equals the issuer chosen in 6 .......................... UNKNOWN_ISSUER
    - ``aud``: present; one string equal to ours; a list only with
      ``allow_audience_list`` and containing ours ..................... WRONG_AUDIENCE
    - ``exp``, ``iat`` present, ``nbf`` if present: integers (not floats,
      strings or booleans); ``exp`` after ``iat``; ``jti``/``sub`` strings .. MALFORMED_TOKEN
    - ``now < exp + leeway`` ......................................... TOKEN_EXPIRED
    - ``iat <= now + leeway``, ``nbf <= now + leeway`` ................ TOKEN_NOT_YET_VALID
    - ``now - iat <= max_token_age`` ................................. TOKEN_TOO_OLD
    - ``exp - iat <= max_lifetime`` .................................. TOKEN_LIFETIME_TOO_LONG

Other claims are handed back in ``VerifiedToken.claims`` unjudged: the authenticator
and the policy decide what they mean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from jwt.algorithms import Algorithm, get_default_algorithms

from authsvc.errors import InvalidCredentials, ServiceUnavailable
from authsvc.identity.oidc.fetch import FetchError, b64url_decode, check_fetch_url, loads_strict
from authsvc.identity.oidc.jwk import SUPPORTED_ALGORITHMS, AmbiguousKey, PublicKey, UnknownKey
from authsvc.identity.oidc.keys import MAX_KID_LENGTH, IssuerKeys, KeysUnavailable
from authsvc.identity.oidc.settings import OidcIssuerSettings

__all__ = [
    "DEFAULT_LEEWAY",
    "MAX_LEEWAY",
    "MAX_TOKEN_BYTES",
    "IssuerConfig",
    "OidcVerifier",
    "VerifiedToken",
    "looks_like_jwt",
    "unverified_issuer",
]

#: Largest token accepted. CI ID tokens are 1-2 KiB (GitHub's ~1.2 KiB with its claims).
MAX_TOKEN_BYTES: Final = 8 * 1024

#: Clock skew allowed between the CI platform and us, in seconds, on ``exp``, ``nbf``
#: and ``iat`` only (never on ``max_token_age`` or ``max_lifetime``). Platforms mint a
#: token the moment a job asks and runners' clocks drift a little; 30 s covers hosts
#: kept by NTP without letting an expired token live much longer. The value used is
#: each issuer's ``leeway`` setting (this is its default); the jti claim outlives
#: ``exp`` by the same leeway, so a token cannot be replayed inside it.
DEFAULT_LEEWAY: Final = 30
#: The most skew any issuer may be configured with (settings enforce the same bound).
MAX_LEEWAY: Final = 300

#: Header members that carry a key or point at one: keys come from the issuer's
#: configured JWKS only, never from the token. (``x5t``, a thumbprint, only names a
#: key, as ``kid`` does, and Azure AD sends it: it is ignored, not refused.)
_KEY_HEADERS: Final = ("jwk", "jku", "x5u", "x5c")
_ALGORITHMS: Final[dict[str, Algorithm]] = {
    name: algorithm
    for name, algorithm in get_default_algorithms().items()
    if name in SUPPORTED_ALGORITHMS
}
_COMPACT: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _refuse(message: str, reason: str) -> InvalidCredentials:
    return InvalidCredentials(message, reason=reason)


def _shown(value: object, limit: int = 80) -> str:
    """A token-supplied value in a message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, kw_only=True)
class IssuerConfig:
    """What verification needs to know of one configured issuer; checked when built."""

    name: str
    issuer: str
    audience: str
    keys: IssuerKeys
    algorithms: tuple[str, ...] = ("RS256",)
    leeway: int = DEFAULT_LEEWAY
    max_token_age: int = 3600
    max_lifetime: int = 86400
    allow_audience_list: bool = False

    def __post_init__(self) -> None:
        where = f"oidc issuer {self.name!r}"
        if not self.name or not self.audience or self.audience != self.audience.strip():
            raise ValueError(f"{where}: name and audience must be non-empty")
        try:
            check_fetch_url(self.issuer)
        except FetchError as exc:
            raise ValueError(f"{where}: {exc}") from None
        wrong = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
        if not self.algorithms or wrong:
            raise ValueError(
                f"{where}: algorithms {wrong or '[]'} refused: choose from "
                f"{sorted(SUPPORTED_ALGORITHMS)} (never none or HMAC)"
            )
        if not 0 <= self.leeway <= MAX_LEEWAY:
            raise ValueError(f"{where}: leeway must be within 0..{MAX_LEEWAY} seconds")
        if self.max_token_age <= 0 or self.max_lifetime <= 0:
            raise ValueError(f"{where}: max_token_age and max_lifetime must be positive")
        if self.keys.issuer != self.issuer or self.keys.name != self.name:
            raise ValueError(f"{where}: its keys belong to {self.keys.name!r}")
        missing = set(self.algorithms) - self.keys.algorithms
        if missing:
            raise ValueError(f"{where}: its keys are not looked up for {sorted(missing)}")

    @classmethod
    def from_settings(
        cls, name: str, settings: OidcIssuerSettings, keys: IssuerKeys
    ) -> IssuerConfig:
        """From resolved settings (the preset has filled ``issuer`` in)."""
        if settings.issuer is None:
            raise ValueError(f"oidc issuer {name!r}: issuer is not resolved")
        return cls(
            name=name,
            issuer=settings.issuer,
            audience=settings.audience,
            keys=keys,
            algorithms=tuple(settings.algorithms),
            leeway=settings.leeway,
            max_token_age=settings.max_token_age,
            max_lifetime=settings.max_lifetime,
            allow_audience_list=settings.allow_audience_list,
        )


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature and claims passed every check above."""

    provider: str  # the configured issuer's name
    issuer: str
    claims: dict[str, object] = field(repr=False)
    jti: str | None
    issued_at: int
    expires_at: int
    header_alg: str


@dataclass(frozen=True)
class _Parsed:
    header: dict[str, object]
    payload: dict[str, object]
    signing_input: bytes
    signature: bytes


def looks_like_jwt(text: str) -> bool:
    """Cheap: three base64url parts whose header is a JSON object with ``alg``."""
    if text.count(".") != 2 or not _COMPACT.fullmatch(text):
        return False
    head = text.partition(".")[0]
    if len(head) > MAX_TOKEN_BYTES:
        return False
    try:
        header = loads_strict(b64url_decode(head))
    except ValueError:
        return False
    return isinstance(header, dict) and "alg" in header


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` a token claims, UNVERIFIED: for routing and audit only. Never raises."""
    try:
        iss = _parse(token).payload.get("iss")
    except InvalidCredentials:
        return None
    return iss if isinstance(iss, str) else None


def _parse(token: str) -> _Parsed:
    """Steps 1-3: size, shape, JSON."""
    # Characters never outnumber UTF-8 bytes: only a short string needs encoding.
    if len(token) > MAX_TOKEN_BYTES or len(token.encode("utf-8", "surrogatepass")) > (
        MAX_TOKEN_BYTES
    ):
        raise _refuse(
            f"the token is over {MAX_TOKEN_BYTES} bytes, the most accepted", "TOKEN_TOO_LARGE"
        )
    if token.lstrip().startswith("{"):
        raise _refuse(
            "JWS JSON serialization is not accepted: send the compact form "
            "(header.payload.signature)",
            "MALFORMED_TOKEN",
        )
    parts = token.split(".")
    if len(parts) == 5:
        raise _refuse("encrypted tokens (JWE) are not accepted", "MALFORMED_TOKEN")
    if len(parts) != 3:
        raise _refuse(
            f"not a JWT: expected 3 dot-separated parts, found {len(parts)}", "MALFORMED_TOKEN"
        )
    decoded: list[bytes] = []
    for what, part in zip(("header", "payload", "signature"), parts, strict=True):
        try:
            decoded.append(b64url_decode(part))
        except ValueError as exc:
            raise _refuse(
                f"not a JWT: the {what} is not base64url ({exc})", "MALFORMED_TOKEN"
            ) from None
    objects: list[dict[str, object]] = []
    for what, raw in zip(("header", "payload"), decoded, strict=False):
        try:
            value = loads_strict(raw)
        except ValueError as exc:
            reason = str(exc) if str(exc).startswith("duplicate member") else "not valid JSON"
            raise _refuse(f"the token's {what} is refused: {reason}", "MALFORMED_TOKEN") from None
        if not isinstance(value, dict):
            raise _refuse(f"the token's {what} is not a JSON object", "MALFORMED_TOKEN")
        objects.append(value)
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return _Parsed(objects[0], objects[1], signing_input, decoded[2])


def _check_header(header: Mapping[str, object]) -> tuple[str, str | None]:
    """Steps 4-5: the algorithm (asymmetric) and the kid; no key-bearing headers."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        raise _refuse(
            f"algorithm {_shown(alg)} is not accepted (only asymmetric signatures; "
            "never none or HMAC)",
            "ALGORITHM_NOT_ALLOWED",
        )
    for name in _KEY_HEADERS:
        if name in header:
            raise _refuse(
                f"header {name!r} is refused: keys come only from the issuer's own JWKS",
                "FORBIDDEN_HEADER",
            )
    crit = header.get("crit")
    if crit is not None and crit != []:
        raise _refuse(
            "header 'crit' names extensions this service does not implement",
            "FORBIDDEN_HEADER",
        )
    if header.get("b64", True) is not True:
        raise _refuse("header 'b64' (unencoded payload) is refused", "FORBIDDEN_HEADER")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
        raise _refuse(
            f"header 'kid' must be a string of at most {MAX_KID_LENGTH} characters",
            "FORBIDDEN_HEADER",
        )
    return alg, kid


def _numeric_date(payload: Mapping[str, object], name: str) -> int:
    value = payload.get(name)
    if value is None:
        raise _refuse(f"the token has no {name!r} claim", "MALFORMED_TOKEN")
    if type(value) is not int:  # bool is an int subclass; floats and strings are refused
        raise _refuse(
            f"claim {name!r} must be an integer number of seconds, not {type(value).__name__}",
            "MALFORMED_TOKEN",
        )
    return value


class OidcVerifier:
    """Verifies ID tokens from the configured issuers (thread-safe)."""

    def __init__(self, issuers: Mapping[str, IssuerConfig]) -> None:
        if not issuers:
            raise ValueError("no OIDC issuer is configured: there is nothing to verify against")
        by_url: dict[str, IssuerConfig] = {}
        for name, config in issuers.items():
            if name != config.name:
                raise ValueError(f"oidc issuer {name!r} is configured as {config.name!r}")
            if config.issuer in by_url:
                raise ValueError(
                    f"oidc issuers {by_url[config.issuer].name!r} and {name!r} share the "
                    f"issuer {config.issuer!r}"
                )
            by_url[config.issuer] = config
        self._by_url = by_url

    @property
    def issuers(self) -> Iterable[IssuerConfig]:
        return self._by_url.values()

    def handles(self, token: str) -> bool:
        """Whether a password looks like a JWT claiming one of our issuers (unverified).

        An oversized JWT is ours too, so that it is refused as TOKEN_TOO_LARGE.
        """
        if not looks_like_jwt(token):
            return False
        return len(token) > MAX_TOKEN_BYTES or unverified_issuer(token) in self._by_url

    def verify(self, token: str, *, now: int) -> VerifiedToken:
        parsed = _parse(token)
        alg, kid = _check_header(parsed.header)
        iss = parsed.payload.get("iss")
        if not isinstance(iss, str):
            raise _refuse("the token has no string 'iss' claim", "MALFORMED_TOKEN")
        config = self._by_url.get(iss)
        if config is None:
            raise _refuse(f"issuer {_shown(iss, 200)} is not configured", "UNKNOWN_ISSUER")
        if alg not in config.algorithms:
            raise _refuse(
                f"algorithm {alg!r} is not allowed for issuer {config.name!r} "
                f"(allowed: {', '.join(config.algorithms)})",
                "ALGORITHM_NOT_ALLOWED",
            )
        try:
            key = config.keys.key_for(kid, alg, now)
        except KeysUnavailable as exc:
            raise ServiceUnavailable(str(exc), reason="OIDC_KEYS_UNAVAILABLE") from exc
        except (AmbiguousKey, UnknownKey) as exc:
            raise _refuse(str(exc), "UNKNOWN_KEY") from exc
        if not _signature_verifies(alg, parsed, key):
            raise _refuse(
                f"the signature does not verify with issuer {config.name!r}'s "
                f"{'key ' + _shown(kid) if kid is not None else 'key'}",
                "INVALID_SIGNATURE",
            )
        return _check_claims(config, parsed.payload, alg, now)


def _signature_verifies(alg: str, parsed: _Parsed, key: PublicKey) -> bool:
    try:
        return _ALGORITHMS[alg].verify(parsed.signing_input, key, parsed.signature)
    except (ValueError, TypeError):  # a key that does not fit alg (jwk.py filters them)
        return False


def _check_claims(
    config: IssuerConfig, payload: dict[str, object], alg: str, now: int
) -> VerifiedToken:
    """Step 10, on a payload whose signature verified."""
    if payload.get("iss") != config.issuer:
        raise _refuse(f"'iss' is not {config.issuer!r}", "UNKNOWN_ISSUER")
    _check_audience(config, payload)
    exp = _numeric_date(payload, "exp")
    iat = _numeric_date(payload, "iat")
    nbf = _numeric_date(payload, "nbf") if "nbf" in payload else None
    for name in ("jti", "sub"):
        if name in payload and not isinstance(payload[name], str):
            raise _refuse(f"claim {name!r} must be a string", "MALFORMED_TOKEN")
    if exp <= iat:
        raise _refuse("'exp' is not after 'iat'", "MALFORMED_TOKEN")
    leeway = config.leeway
    if now >= exp + leeway:
        raise _refuse(
            f"the token expired {now - exp} s ago (leeway {leeway} s)", "TOKEN_EXPIRED"
        )
    if iat > now + leeway:
        raise _refuse(
            f"'iat' is {iat - now} s in the future (leeway {leeway} s)", "TOKEN_NOT_YET_VALID"
        )
    if nbf is not None and nbf > now + leeway:
        raise _refuse(
            f"'nbf' is {nbf - now} s in the future (leeway {leeway} s)", "TOKEN_NOT_YET_VALID"
        )
    if now - iat > config.max_token_age:
        raise _refuse(
            f"the token was issued {now - iat} s ago; issuer {config.name!r} accepts tokens "
            f"up to {config.max_token_age} s old",
            "TOKEN_TOO_OLD",
        )
    if exp - iat > config.max_lifetime:
        raise _refuse(
            f"the token lives {exp - iat} s; issuer {config.name!r} accepts at most "
            f"{config.max_lifetime} s",
            "TOKEN_LIFETIME_TOO_LONG",
        )
    jti = payload.get("jti")
    return VerifiedToken(
        provider=config.name,
        issuer=config.issuer,
        claims=payload,
        jti=jti if isinstance(jti, str) else None,
        issued_at=iat,
        expires_at=exp,
        header_alg=alg,
    )


def _check_audience(config: IssuerConfig, payload: Mapping[str, object]) -> None:
    expected = f"the audience must be {config.audience!r}"
    aud = payload.get("aud")
    if aud is None:
        raise _refuse(f"the token has no 'aud' claim; {expected}", "WRONG_AUDIENCE")
    if isinstance(aud, str):
        if aud != config.audience:
            raise _refuse(f"wrong 'aud': {expected}", "WRONG_AUDIENCE")
        return
    if not isinstance(aud, list):
        raise _refuse(f"'aud' is neither a string nor a list; {expected}", "WRONG_AUDIENCE")
    if not config.allow_audience_list:
        raise _refuse(
            f"'aud' is a list, and issuer {config.name!r} accepts only a single audience "
            f"(allow_audience_list is off); {expected}",
            "WRONG_AUDIENCE",
        )
    if not all(isinstance(a, str) for a in aud) or config.audience not in aud:
        raise _refuse(f"the 'aud' list does not contain {config.audience!r}", "WRONG_AUDIENCE")
