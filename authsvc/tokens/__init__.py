"""Signing keys and registry tokens: the key ring, key identifiers, JWT minting."""

from authsvc.tokens.keyring import (
    ACTIVE,
    PREVIOUS,
    RETIRED,
    STAGED,
    SUPPORTED_ALGORITHMS,
    KeyInfo,
    KeyRing,
    SigningKey,
    generate_key,
    list_keys,
    retire,
    rotate,
)
from authsvc.tokens.libtrust import jwk_thumbprint, libtrust_kid, public_jwk
from authsvc.tokens.mint import MintedToken, TokenMinter

__all__ = [
    "ACTIVE",
    "PREVIOUS",
    "RETIRED",
    "STAGED",
    "SUPPORTED_ALGORITHMS",
    "KeyInfo",
    "KeyRing",
    "MintedToken",
    "SigningKey",
    "TokenMinter",
    "generate_key",
    "jwk_thumbprint",
    "libtrust_kid",
    "list_keys",
    "public_jwk",
    "retire",
    "rotate",
]
