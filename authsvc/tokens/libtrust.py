"""Key identifiers the registry understands.

Two ways a registry finds the key that signed a token when it has no ``x5c`` chain:

* distribution 2.x compares the header ``kid`` with the *libtrust key ID* of each
  certificate in its bundle: SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits,
  base32 without padding, in 12 groups of 4 characters joined by ``:``.
* distribution 3.x looks keys up by their RFC 7638 JWK thumbprint.

Both are pure functions of the public key.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = ["PublicKey", "jwk_thumbprint", "libtrust_kid", "public_jwk"]

#: The public key types a JWK (and so a token signer) can have here.
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

# JWK "crv" names of the curves JOSE defines for ECDSA (RFC 7518 section 6.2.1.1).
_JWK_CURVES: dict[str, str] = {
    "secp256r1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}


def libtrust_kid(public_key: PublicKeyTypes) -> str:
    """The libtrust key ID of ``public_key``, e.g. ``PYYO:TEWU:…:Z7Q6`` (59 characters)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # 30 bytes = 240 bits = exactly 48 base32 characters, so there is never padding.
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The required public members of the key's JWK (RFC 7517/7518), nothing else."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve
        crv = _JWK_CURVES.get(curve.name)
        if crv is None:
            raise ValueError(f"unsupported EC curve {curve.name!r}; use P-256, P-384 or P-521")
        size = (curve.key_size + 7) // 8  # coordinates are fixed-length (RFC 7518 6.2.1.2)
        numbers = public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": crv,
            "x": _b64url(numbers.x.to_bytes(size, "big")),
            "y": _b64url(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(public_key, rsa.RSAPublicKey):
        rsa_numbers = public_key.public_numbers()
        return {
            "kty": "RSA",
            "n": _b64url(_uint(rsa_numbers.n)),
            "e": _b64url(_uint(rsa_numbers.e)),
        }
    raise ValueError(f"unsupported key type {type(public_key).__name__}; use EC or RSA")


def jwk_thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 SHA-256 thumbprint of the key's JWK, base64url without padding."""
    # The required members, in lexicographic order, with no whitespace (RFC 7638 3.2).
    canonical = json.dumps(public_jwk(public_key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _uint(value: int) -> bytes:
    """Minimal big-endian octets of a positive integer (RFC 7518 section 2, Base64urlUInt)."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
