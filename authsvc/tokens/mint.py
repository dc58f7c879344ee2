"""Minting registry tokens: JWTs exactly as distribution 2.8 (and 3.x) verifies them.

Header: ``alg``, ``typ: JWT``, ``kid`` = libtrust key ID, ``x5c`` = [certificate].
Claims: ``iss``, ``sub``, ``aud`` (ONE string; the registry rejects a list), integer
``iat``/``nbf``/``exp`` (it rejects floats), a random ``jti`` and ``access``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from authsvc.tokens.keyring import KeyRing, SigningKey

__all__ = ["MintedToken", "TokenMinter"]

#: Bytes of randomness in ``jti`` (144 bits; 24 base64url characters).
JTI_BYTES = 18


@dataclass(frozen=True)
class MintedToken:
    token: str
    jti: str
    issued_at: int
    expires_at: int
    kid: str  # libtrust key ID in the header
    key_id: str  # key ring id of the signing key


class TokenMinter:
    """Signs tokens with the active key of whatever ring ``keyring()`` returns now.

    ``keyring`` is called on every mint, so a reload (SIGHUP) that swaps the snapshot
    takes effect on the next token. The JOSE header of a key is built once.
    """

    def __init__(self, keyring: Callable[[], KeyRing], issuer: str) -> None:
        if not issuer:
            raise ValueError("issuer must be a non-empty string")
        self._keyring = keyring
        self._issuer = issuer
        self._header: tuple[SigningKey, dict[str, Any]] | None = None

    def mint(
        self,
        *,
        subject: str,
        audience: str,
        access: Sequence[Mapping[str, object]],
        ttl: int,
        now: int,
    ) -> MintedToken:
        if not isinstance(audience, str) or not audience:
            raise TypeError("audience must be one non-empty string (the registry service)")
        if not isinstance(subject, str):
            raise TypeError("subject must be a string ('' for anonymous)")
        if not _is_int(now) or not _is_int(ttl) or ttl <= 0:
            raise ValueError("now and ttl must be integers, ttl positive")
        key = self._keyring().signing_key
        jti = secrets.token_urlsafe(JTI_BYTES)
        expires_at = now + ttl
        claims = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience,
            "exp": expires_at,
            "nbf": now,
            "iat": now,
            "jti": jti,
            "access": [dict(entry) for entry in access],
        }
        token = jwt.encode(
            claims, key.private_key, algorithm=key.algorithm, headers=self._headers(key)
        )
        return MintedToken(
            token=token,
            jti=jti,
            issued_at=now,
            expires_at=expires_at,
            kid=key.libtrust_kid,
            key_id=key.id,
        )

    def _headers(self, key: SigningKey) -> dict[str, Any]:
        cached = self._header
        if cached is not None and cached[0] is key:
            return cached[1]
        # pyjwt adds "alg" and "typ": "JWT" itself.
        headers: dict[str, Any] = {"kid": key.libtrust_kid, "x5c": list(key.x5c)}
        self._header = (key, headers)  # one atomic store: safe across threads
        return headers


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
