"""Signing keys and registry tokens: the key ring, key identifiers, JWT minting."""

from authsvc.tokens.keyfiles import SUPPORTED_ALGORITHMS
from authsvc.tokens.keyring import KeyRing, SigningKey
from authsvc.tokens.libtrust import jwk_thumbprint, libtrust_kid, public_jwk
from authsvc.tokens.mint import MintedToken, TokenMinter
from authsvc.tokens.ring import (
    ACTIVE,
    PREVIOUS,
    RETIRED,
    STAGED,
    KeyInfo,
    generate_key,
    list_keys,
    retire,
    rotate,
)

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
