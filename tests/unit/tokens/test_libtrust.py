from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm

from authsvc.tokens import jwk_thumbprint, libtrust_kid, public_jwk
from authsvc.tokens.libtrust import PublicKey


def _b64url_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


# The ES256 key of the worked example in distribution's docs/content/spec/auth/jwt.md:
# its header carries "kid": "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6".
SPEC_KID = "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6"
SPEC_JWK = {
    "d": "R7OnbfMaD5J2jl7GeE8ESo7CnHSBm_1N2k9IXYFrKJA",
    "x": "m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q",
    "y": "dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc",
}

# RFC 7638 section 3.1.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
    "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
    "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def _rfc7638_key() -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(_b64url_int("AQAB"), _b64url_int(RFC7638_N)).public_key()


def _independent_kid(public_key: PublicKey) -> str:
    """libtrust's algorithm, written out again without the code under test."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    assert "=" not in b32
    return ":".join(re.findall("....", b32))


def test_libtrust_kid_matches_the_distribution_spec_example() -> None:
    public = ec.EllipticCurvePublicNumbers(
        _b64url_int(SPEC_JWK["x"]), _b64url_int(SPEC_JWK["y"]), ec.SECP256R1()
    ).public_key()
    assert libtrust_kid(public) == SPEC_KID
    # The example's private key is the one behind that public key.
    private = ec.derive_private_key(_b64url_int(SPEC_JWK["d"]), ec.SECP256R1())
    assert libtrust_kid(private.public_key()) == SPEC_KID


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()).public_key(),
        lambda: ec.generate_private_key(ec.SECP384R1()).public_key(),
        lambda: ec.generate_private_key(ec.SECP521R1()).public_key(),
        lambda: rsa.generate_private_key(65537, 2048).public_key(),
    ],
    ids=["P-256", "P-384", "P-521", "RSA"],
)
def test_libtrust_kid_agrees_with_an_independent_implementation(
    make_key: Callable[[], PublicKey],
) -> None:
    public = make_key()
    kid = libtrust_kid(public)
    assert kid == _independent_kid(public)
    assert re.fullmatch(r"(?:[A-Z2-7]{4}:){11}[A-Z2-7]{4}", kid)


def test_thumbprint_matches_rfc7638_example() -> None:
    assert jwk_thumbprint(_rfc7638_key()) == RFC7638_THUMBPRINT


def test_rsa_jwk_uses_minimal_big_endian_members() -> None:
    assert public_jwk(_rfc7638_key()) == {"kty": "RSA", "n": RFC7638_N, "e": "AQAB"}


@pytest.mark.parametrize(
    ("curve", "crv"),
    [(ec.SECP256R1(), "P-256"), (ec.SECP384R1(), "P-384"), (ec.SECP521R1(), "P-521")],
)
def test_ec_thumbprint_agrees_with_pyjwt_jwk(curve: ec.EllipticCurve, crv: str) -> None:
    public = ec.generate_private_key(curve).public_key()
    reference = ECAlgorithm.to_jwk(public, as_dict=True)
    assert reference["crv"] == crv
    members = {name: reference[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=")
    assert jwk_thumbprint(public) == expected.decode()
    assert public_jwk(public) == members


def test_p521_coordinates_keep_their_leading_zero_octets() -> None:
    # RFC 7518 6.2.1.2: coordinates are the full field size (66 octets for P-521) even
    # when the integer is shorter. About half of all P-521 x values are.
    for _ in range(100):
        public = ec.generate_private_key(ec.SECP521R1()).public_key()
        if public.public_numbers().x.bit_length() <= 520:
            break
    else:
        pytest.fail("no short P-521 coordinate in 100 keys")
    x = public_jwk(public)["x"]
    assert len(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))) == 66


def test_thumbprint_refuses_keys_jose_cannot_describe_here() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ValueError, match="unsupported key type Ed25519PublicKey"):
        jwk_thumbprint(key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported EC curve 'secp256k1'"):
        jwk_thumbprint(ec.generate_private_key(ec.SECP256K1()).public_key())
