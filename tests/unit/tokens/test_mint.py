from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from authsvc.tokens import KeyRing, MintedToken, TokenMinter, libtrust_kid, rotate

from .conftest import NOW

ISSUER = "authsvc"
SERVICE = "registry.example.com"
T0 = 1_800_000_000
ACCESS: list[dict[str, object]] = [
    {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
    {"type": "registry", "name": "catalog", "actions": ["*"]},
]


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, claims, signature = token.split(".")
    return json.loads(_b64url(header)), json.loads(_b64url(claims)), _b64url(signature)


def _mint(minter: TokenMinter, *, now: int = T0, ttl: int = 300) -> MintedToken:
    return minter.mint(subject="alice", audience=SERVICE, access=ACCESS, ttl=ttl, now=now)


def _cert_of(token: str) -> x509.Certificate:
    header, _, _ = _parts(token)
    return x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))


@pytest.fixture
def ring(make_ring: Callable[..., KeyRing]) -> KeyRing:
    return make_ring("ES256")


@pytest.fixture
def minter(ring: KeyRing) -> TokenMinter:
    return TokenMinter(lambda: ring, ISSUER)


def test_token_verifies_with_the_certificates_key_as_the_registry_would(
    ring: KeyRing, minter: TokenMinter
) -> None:
    now = int(time.time())  # pyjwt checks exp/nbf/iat against the real clock
    minted = _mint(minter, now=now)

    cert = ring.signing_key.certificate
    claims = jwt.decode(
        minted.token,
        cert.public_key(),  # type: ignore[arg-type]
        algorithms=["ES256"],
        audience=SERVICE,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"], "strict_aud": True},
    )
    assert claims["sub"] == "alice"
    assert claims["access"] == ACCESS
    assert claims["jti"] == minted.jti


def test_header_carries_alg_typ_libtrust_kid_and_x5c_only(
    ring: KeyRing, minter: TokenMinter
) -> None:
    minted = _mint(minter)
    header, _, _ = _parts(minted.token)

    cert = ring.signing_key.certificate
    assert set(header) == {"alg", "typ", "kid", "x5c"}  # never jwk / jku / x5u
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    assert header["kid"] == libtrust_kid(cert.public_key()) == minted.kid
    assert header["x5c"] == [
        base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    ]
    assert minted.key_id == ring.signing_key.id


def test_x5c_certificate_is_in_the_published_bundle(ring: KeyRing, minter: TokenMinter) -> None:
    # distribution 2.8 accepts an x5c chain whose leaf is one of its bundle's roots.
    leaf = _cert_of(_mint(minter).token)
    bundle = x509.load_pem_x509_certificates(ring.bundle_pem().encode())
    assert leaf in bundle


def test_claims_have_the_types_the_registry_demands(minter: TokenMinter) -> None:
    minted = _mint(minter, now=T0, ttl=300)
    _, claims, _ = _parts(minted.token)

    assert set(claims) == {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"}
    assert claims["aud"] == SERVICE and isinstance(claims["aud"], str)
    for name in ("exp", "nbf", "iat"):
        assert type(claims[name]) is int, name
    assert claims["iat"] == claims["nbf"] == T0 == minted.issued_at
    assert claims["exp"] == T0 + 300 == minted.expires_at
    assert claims["iss"] == ISSUER
    assert claims["access"] == ACCESS


def test_anonymous_subject_is_an_empty_string(minter: TokenMinter) -> None:
    minted = minter.mint(subject="", audience=SERVICE, access=[], ttl=60, now=T0)
    _, claims, _ = _parts(minted.token)
    assert claims["sub"] == "" and claims["access"] == []


@pytest.mark.parametrize(("algorithm", "size"), [("ES256", 64), ("ES384", 96), ("ES512", 132)])
def test_ec_signatures_are_raw_r_s(
    make_ring: Callable[..., KeyRing], algorithm: str, size: int
) -> None:
    ring = make_ring(algorithm)
    token = _mint(TokenMinter(lambda: ring, ISSUER)).token
    header, _, signature = _parts(token)

    assert header["alg"] == algorithm
    assert len(signature) == size
    # Verify without pyjwt: r||s -> DER, then plain ECDSA over "header.claims".
    half = size // 2
    der = encode_dss_signature(
        int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
    )
    public = ring.signing_key.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    digest = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}
    signing_input = token.rsplit(".", 1)[0].encode()
    public.verify(der, signing_input, ec.ECDSA(digest[algorithm]))


def test_rs256_token_verifies(make_ring: Callable[..., KeyRing]) -> None:
    ring = make_ring("RS256")
    minted = _mint(TokenMinter(lambda: ring, ISSUER), now=int(time.time()))
    header, _, signature = _parts(minted.token)

    public = _cert_of(minted.token).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert header["alg"] == "RS256" and len(signature) == 384
    claims = jwt.decode(minted.token, public, algorithms=["RS256"], audience=SERVICE)
    assert claims["sub"] == "alice"


def test_jti_is_unique_across_1000_tokens(minter: TokenMinter) -> None:
    jtis = {_mint(minter).jti for _ in range(1000)}
    assert len(jtis) == 1000
    assert all(len(jti) >= 24 for jti in jtis)


def test_a_reloaded_ring_signs_the_next_token(key_dir: Path, ring: KeyRing) -> None:
    current = [ring]
    minter = TokenMinter(lambda: current[0], ISSUER)
    before = _mint(minter)

    rotate(key_dir, now=NOW)
    current[0] = KeyRing.load(key_dir)  # what a SIGHUP reload does
    after = _mint(minter)

    assert after.key_id != before.key_id
    assert after.kid == current[0].signing_key.libtrust_kid != before.kid
    header, _, _ = _parts(after.token)
    assert header["kid"] == after.kid
    assert _cert_of(after.token) == current[0].signing_key.certificate


def test_audience_must_be_one_string(minter: TokenMinter) -> None:
    with pytest.raises(TypeError, match="one non-empty string"):
        minter.mint(
            subject="alice",
            audience=[SERVICE],  # type: ignore[arg-type]
            access=ACCESS,
            ttl=300,
            now=T0,
        )


@pytest.mark.parametrize(("ttl", "now"), [(0, T0), (-5, T0), (300, float(T0)), (300, True)])
def test_times_must_be_integers_and_ttl_positive(minter: TokenMinter, ttl: int, now: int) -> None:
    with pytest.raises(ValueError, match="integers, ttl positive"):
        minter.mint(subject="alice", audience=SERVICE, access=ACCESS, ttl=ttl, now=now)


def test_issuer_is_required(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="issuer"):
        TokenMinter(lambda: ring, "")
