"""Parsing a JWKS into public keys, and choosing the key for a token's kid and alg.

A JWKS entry is kept only if it is a public signing key this service can verify with:

- no private or symmetric material (``d``, ``p``, ``q``, ``dp``, ``dq``, ``qi``,
  ``oth``, ``k``): such an entry is ignored, never used;
- ``use`` absent or ``sig``; ``key_ops`` absent or a list holding ``verify``;
- ``alg`` absent or one of ``SUPPORTED_ALGORITHMS`` (asymmetric only);
- ``kty`` RSA (at least 2048 bits), EC on P-256/P-384/P-521 (coordinates of the
  curve's size, the point on the curve), or OKP on Ed25519/Ed448.

A key fits a token's ``alg`` when its own ``alg`` (if any) is the same and its type
(and curve) can sign with it. ``KeySet.select`` answers the one key fitting the kid
and alg, None for none, and ``AmbiguousKey`` when several fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from authsvc.identity.oidc.fetch import FetchError, KeysError, b64url_decode, loads_strict

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "AmbiguousKey",
    "Jwk",
    "KeySet",
    "PublicKey",
    "UnknownKey",
    "parse_jwks",
]

log = logging.getLogger(__name__)

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

_EC_CURVES: Final[dict[str, tuple[str, ec.EllipticCurve, int]]] = {
    # crv -> (alg, curve, coordinate bytes)
    "P-256": ("ES256", ec.SECP256R1(), 32),
    "P-384": ("ES384", ec.SECP384R1(), 48),
    "P-521": ("ES512", ec.SECP521R1(), 66),
}
_RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
#: Asymmetric algorithms only: never ``none``, never HMAC (a public key is not a secret).
SUPPORTED_ALGORITHMS: Final = frozenset((*_RSA_ALGORITHMS, "ES256", "ES384", "ES512", "EdDSA"))
_MIN_RSA_BITS: Final = 2048
#: JWK members that carry private or symmetric key material: such a key is ignored.
_SECRET_MEMBERS: Final = frozenset(("d", "p", "q", "dp", "dq", "qi", "oth", "k"))


class UnknownKey(KeysError):
    """No published key fits the token's kid and algorithm."""


class AmbiguousKey(UnknownKey):
    """Several keys fit and the token names no kid (or a kid published twice)."""


@dataclass(frozen=True, slots=True)
class Jwk:
    """One usable public signing key of a JWKS, with what it may verify."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: PublicKey

    def fits(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        if self.kty == "RSA":
            return alg in _RSA_ALGORITHMS
        if self.kty == "EC":
            return self.crv is not None and _EC_CURVES[self.crv][0] == alg
        return self.kty == "OKP" and alg == "EdDSA"


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one fetched JWKS, and when it was fetched (Unix seconds)."""

    keys: tuple[Jwk, ...]
    fetched_at: int

    def select(self, kid: str | None, alg: str) -> PublicKey | None:
        fitting = [k for k in self.keys if k.fits(alg) and (kid is None or k.kid == kid)]
        if len(fitting) > 1:
            named = f"kid {kid!r}" if kid is not None else "no kid"
            raise AmbiguousKey(f"the token names {named} and {len(fitting)} {alg} keys fit")
        return fitting[0].key if fitting else None


def _parse_jwk(entry: object) -> Jwk | None:
    """One JWKS entry, or None when it is malformed or not a public signing key."""
    if not isinstance(entry, dict) or _SECRET_MEMBERS & entry.keys():
        return None
    kty, kid, alg, use = (entry.get(n) for n in ("kty", "kid", "alg", "use"))
    ops, crv = entry.get("key_ops"), entry.get("crv")
    if not (kid is None or isinstance(kid, str)) or not (alg is None or isinstance(alg, str)):
        return None
    if use is not None and use != "sig":
        return None
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    if alg is not None and alg not in SUPPORTED_ALGORITHMS:
        return None
    try:
        key = _public_key(entry, kty, crv)
    except (ValueError, TypeError):
        return None
    if key is None:
        return None
    return Jwk(kid, str(kty), crv if isinstance(crv, str) else None, alg, key)


def _member(entry: dict[str, object], name: str) -> bytes:
    value = entry.get(name)
    if not isinstance(value, str):
        raise ValueError(f"member {name!r} is missing")
    return b64url_decode(value)


def _public_key(entry: dict[str, object], kty: object, crv: object) -> PublicKey | None:
    if kty == "RSA":
        n = int.from_bytes(_member(entry, "n"), "big")
        e = int.from_bytes(_member(entry, "e"), "big")
        if n.bit_length() < _MIN_RSA_BITS:
            return None
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "EC" and isinstance(crv, str) and crv in _EC_CURVES:
        _, curve, size = _EC_CURVES[crv]
        x, y = _member(entry, "x"), _member(entry, "y")
        if len(x) != size or len(y) != size:
            return None
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        )
        return numbers.public_key()  # raises ValueError for a point off the curve
    if kty == "OKP" and crv == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(_member(entry, "x"))
    if kty == "OKP" and crv == "Ed448":
        return ed448.Ed448PublicKey.from_public_bytes(_member(entry, "x"))
    return None


def parse_jwks(body: bytes, url: str, now: int) -> KeySet:
    """The usable keys of the JWKS ``body`` fetched from ``url``; ``FetchError`` if none."""
    try:
        document = loads_strict(body)
    except ValueError as exc:
        raise FetchError(f"{url}: not a JSON document ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchError(f"{url}: not a JWKS (a JSON object with a 'keys' list)")
    entries: list[object] = document["keys"]
    keys = tuple(k for k in map(_parse_jwk, entries) if k is not None)
    if not keys:
        raise FetchError(f"{url}: none of its {len(entries)} keys is a usable public key")
    if len(keys) < len(entries):
        log.info("%s: ignored %d unusable keys", url, len(entries) - len(keys))
    return KeySet(keys, now)
