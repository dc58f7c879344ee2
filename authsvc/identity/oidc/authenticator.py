"""A verified OIDC token becomes an Identity, once.

An OIDC token is a one-time proof. The first use claims its ``jti`` (or, for an issuer
that mints none and is allowed not to, the token's hash) in the store, atomically,
until the token's ``exp`` plus leeway, recording the SHA-256 of the token string:

* exchanged (RFC 8693 token exchange) — only the first exchange succeeds, even among
  concurrent ones: a second is TOKEN_REPLAYED, whatever the string;
* presented as a password (clients re-send their login password on every registry
  operation) — the byte-identical string that claimed the ``jti`` is accepted again
  until its own ``exp`` (``password_reuse``, per issuer; each use is audited as a
  reuse), first from this process's verified-credential cache, else from the claim's
  recorded hash; a different string carrying a claimed ``jti`` is always refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import cast

from authsvc.errors import InvalidCredentials
from authsvc.identity import Identity, Kind
from authsvc.identity.cache import VerifiedCache
from authsvc.identity.oidc.presets import PRESETS, flatten_claims
from authsvc.identity.oidc.verify import OidcVerifier, VerifiedToken, looks_like_jwt
from authsvc.store import Store

__all__ = ["IssuerPolicy", "OidcAuthenticator", "OidcLogin"]


@dataclass(frozen=True)
class IssuerPolicy:
    """What the authenticator needs to know of one configured issuer."""

    name: str
    preset: str
    kind: Kind
    subject_claim: str
    username_claim: str | None
    groups_claim: str | None
    require_jti: bool
    password_reuse: bool
    leeway: int
    max_token_age: int


@dataclass(frozen=True)
class OidcLogin:
    identity: Identity
    #: The token was accepted again (same string, same jti) rather than verified anew.
    reuse: bool
    jti: str | None
    expires_at: int
    issuer: IssuerPolicy


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class OidcAuthenticator:
    def __init__(
        self,
        verifier: OidcVerifier,
        issuers: Mapping[str, IssuerPolicy],
        *,
        store: Store,
        cache: VerifiedCache,
    ) -> None:
        self._verifier = verifier
        self._issuers = issuers
        self._store = store
        self._cache = cache

    @staticmethod
    def handles(password: str) -> bool:
        """Whether a password is a JWT: verified as a token then, never with bcrypt (a
        JWT from an issuer that is not configured is refused as such)."""
        return looks_like_jwt(password)

    def exchange(self, token: str, *, now: int) -> OidcLogin:
        """RFC 8693: the token's first and only exchange."""
        verified, issuer = self._verify(token, now)
        holder = self._claim(verified, issuer, token)
        if holder is not None:
            raise InvalidCredentials(
                "this token was already used (its jti is claimed): a token is exchanged once",
                reason="TOKEN_REPLAYED",
            )
        return self._login(verified, issuer, reuse=False)

    def authenticate_password(self, token: str, *, now: int) -> OidcLogin:
        """A token sent as a password: verified and claimed once, then reusable as is."""
        cache_key = self._cache.key("oidc", token)
        remembered = self._recall(cache_key)
        if remembered is not None:
            return self._login(remembered[0], remembered[1], reuse=True)
        verified, issuer = self._verify(token, now)
        holder = self._claim(verified, issuer, token)
        if holder is None:
            self._remember(cache_key, verified, now)
            return self._login(verified, issuer, reuse=False)
        if holder == _token_hash(token) and issuer.password_reuse:
            self._remember(cache_key, verified, now)
            return self._login(verified, issuer, reuse=True)
        raise InvalidCredentials(
            "this token's jti was already used by another token"
            if holder != _token_hash(token)
            else "this token was already used, and its issuer does not allow it as a "
            "password again (password_reuse: false)",
            reason="TOKEN_REPLAYED",
        )

    def lookup(self, identity: Identity) -> Identity | None:
        """A session's identity stays as verified while its issuer is still configured."""
        return identity if identity.provider in self._issuers else None

    # -------------------------------------------------------------------------------

    def _verify(self, token: str, now: int) -> tuple[VerifiedToken, IssuerPolicy]:
        verified = self._verifier.verify(token, now=now)
        issuer = self._issuers[verified.provider]
        if verified.jti is None and issuer.require_jti:
            raise InvalidCredentials(
                f"tokens from {issuer.name!r} must carry a jti (require_jti)",
                reason="MISSING_JTI",
            )
        return verified, issuer

    def _claim(self, verified: VerifiedToken, issuer: IssuerPolicy, token: str) -> str | None:
        once = verified.jti if verified.jti is not None else "sha256:" + _token_hash(token)
        return self._store.claim_value(
            f"oidc-jti:{verified.issuer}:{once}",
            _token_hash(token),
            verified.expires_at + issuer.leeway,
        )

    def _remember(self, cache_key: bytes, verified: VerifiedToken, now: int) -> None:
        """Keep this exact string's verified claims until it expires or grows too old,
        so a client re-sending it costs neither a signature check nor a store trip."""
        issuer = self._issuers[verified.provider]
        if not issuer.password_reuse:
            return
        valid_until = min(verified.expires_at, verified.issued_at + issuer.max_token_age)
        self._cache.put(cache_key, json.dumps(asdict(verified)), deadline_in=valid_until - now)

    def _recall(self, cache_key: bytes) -> tuple[VerifiedToken, IssuerPolicy] | None:
        binding = self._cache.get(cache_key)
        if binding is None:
            return None
        verified = VerifiedToken(**json.loads(binding))
        issuer = self._issuers.get(verified.provider)
        if issuer is None or not issuer.password_reuse:  # reconfigured since
            self._cache.discard(cache_key)
            return None
        return verified, issuer

    def _login(self, verified: VerifiedToken, issuer: IssuerPolicy, *, reuse: bool) -> OidcLogin:
        claims = flatten_claims(verified.claims, PRESETS[issuer.preset])
        subject = claims.get(issuer.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise InvalidCredentials(
                f"the token has no string {issuer.subject_claim!r} claim to name its subject",
                reason="MALFORMED_TOKEN",
            )
        account = subject
        if issuer.username_claim is not None:
            username = claims.get(issuer.username_claim)
            if not isinstance(username, str) or not username:
                raise InvalidCredentials(
                    f"the token has no string {issuer.username_claim!r} claim (username_claim)",
                    reason="MALFORMED_TOKEN",
                )
            account = username
        groups: frozenset[str] = frozenset()
        if issuer.groups_claim is not None:
            raw = claims.get(issuer.groups_claim, [])
            if isinstance(raw, list) and all(isinstance(g, str) for g in raw):
                groups = frozenset(cast(list[str], raw))
        identity = Identity(
            subject=subject,
            kind=issuer.kind,
            provider=issuer.name,
            account=account,
            groups=groups,
            claims=dict(claims),
        )
        return OidcLogin(identity, reuse, verified.jti, verified.expires_at, issuer)
