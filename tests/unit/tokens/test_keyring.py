from __future__ import annotations

import base64
import json
import re
import stat
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from authsvc.errors import KeyRingError
from authsvc.tokens import (
    KeyRing,
    generate_key,
    jwk_thumbprint,
    libtrust_kid,
    list_keys,
    retire,
    rotate,
)

from .conftest import NOW

LATER = NOW + timedelta(days=30)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ring_json(key_dir: Path) -> dict[str, object]:
    document = json.loads((key_dir / "ring.json").read_text())
    assert isinstance(document, dict)
    return document


def _states(key_dir: Path) -> dict[str, str]:
    return {info.id: info.state for info in list_keys(key_dir)}


def _ders(pem: str) -> set[bytes]:
    return {
        cert.public_bytes(serialization.Encoding.DER)
        for cert in x509.load_pem_x509_certificates(pem.encode())
    }


# --- generate ---------------------------------------------------------------------------


def test_first_key_is_active_and_written_as_documented(key_dir: Path) -> None:
    info = generate_key(key_dir, now=NOW)

    assert info.state == "active"
    assert info.algorithm == "ES256"
    assert info.created == NOW and info.activated == NOW
    assert re.fullmatch(r"20261128T043500Z-[0-9a-f]{6}", info.id)
    assert _mode(key_dir) == 0o700
    key_file = key_dir / f"{info.id}.key.pem"
    assert _mode(key_file) == 0o600
    assert key_file.read_text().startswith("-----BEGIN " + "PRIVATE KEY-----")  # PKCS#8
    assert _ring_json(key_dir) == {
        "version": 1,
        "keys": [
            {
                "id": info.id,
                "algorithm": "ES256",
                "state": "active",
                "created": "2026-11-28T04:35:00Z",
                "activated": "2026-11-28T04:35:00Z",
            }
        ],
    }
    assert not list(key_dir.glob(".ring.*.tmp"))  # the atomic write left no temp file


def test_certificate_is_self_signed_for_the_key_and_valid_ten_years(key_dir: Path) -> None:
    info = generate_key(key_dir, now=NOW)
    key = KeyRing.load(key_dir).signing_key
    cert = key.certificate

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        f"authsvc token signer {info.id}"
    )
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # raises if the self-signature is wrong
    assert cert.not_valid_before_utc <= NOW
    assert cert.not_valid_after_utc - NOW >= timedelta(days=3650)
    assert cert.not_valid_after_utc - NOW < timedelta(days=3660)
    assert 0 < cert.serial_number < 2**159
    assert cert.public_key() == key.private_key.public_key()
    assert info.libtrust_kid == key.libtrust_kid == libtrust_kid(cert.public_key())


@pytest.mark.parametrize(
    ("algorithm", "curve"), [("ES256", "secp256r1"), ("ES384", "secp384r1"), ("ES512", "secp521r1")]
)
def test_ec_algorithms_use_their_curve(key_dir: Path, algorithm: str, curve: str) -> None:
    generate_key(key_dir, algorithm, now=NOW)
    key = KeyRing.load(key_dir).signing_key.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == curve


def test_rs256_uses_rsa_3072(key_dir: Path) -> None:
    generate_key(key_dir, "RS256", now=NOW)
    key = KeyRing.load(key_dir).signing_key
    assert key.algorithm == "RS256"
    assert isinstance(key.private_key, rsa.RSAPrivateKey)
    assert key.private_key.key_size == 3072


@pytest.mark.parametrize("algorithm", ["PS256", "HS256", "EdDSA", "RS384", "es256"])
def test_unsupported_algorithm_is_refused_naming_the_supported_ones(
    key_dir: Path, algorithm: str
) -> None:
    with pytest.raises(ValueError, match=r"supported: ES256, ES384, ES512, RS256"):
        generate_key(key_dir, algorithm, now=NOW)
    assert not (key_dir / "ring.json").exists()


def test_now_must_be_timezone_aware(key_dir: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        generate_key(key_dir, now=datetime(2026, 1, 1))


# --- the state machine ------------------------------------------------------------------


def test_second_key_is_staged_published_but_not_signing(key_dir: Path) -> None:
    first = generate_key(key_dir, now=NOW)
    second = generate_key(key_dir, now=LATER)

    assert second.state == "staged" and second.activated is None
    ring = KeyRing.load(key_dir)
    assert ring.signing_key.id == first.id
    assert [key.id for key in ring.published] == [first.id, second.id]
    assert [key.state for key in ring.published] == ["active", "staged"]
    staged = ring.find(second.id)
    assert staged is not None and staged.state == "staged"
    assert ring.find("no-such-key") is None


def test_rotate_promotes_the_staged_key(key_dir: Path) -> None:
    first = generate_key(key_dir, now=NOW)
    second = generate_key(key_dir, now=NOW + timedelta(hours=1))

    promoted = rotate(key_dir, now=LATER)

    assert promoted.id == second.id
    assert promoted.state == "active" and promoted.activated == LATER
    assert _states(key_dir) == {first.id: "previous", second.id: "active"}
    ring = KeyRing.load(key_dir)
    assert ring.signing_key.id == second.id
    assert [key.id for key in ring.published] == [second.id, first.id]


def test_rotate_promotes_the_newest_staged_key(key_dir: Path) -> None:
    generate_key(key_dir, now=NOW)
    older = generate_key(key_dir, now=NOW + timedelta(hours=1))
    newer = generate_key(key_dir, now=NOW + timedelta(hours=2))

    assert rotate(key_dir, now=LATER).id == newer.id
    assert _states(key_dir)[older.id] == "staged"


def test_rotate_without_staged_key_generates_and_activates_with_the_same_algorithm(
    key_dir: Path,
) -> None:
    first = generate_key(key_dir, "ES384", now=NOW)

    new = rotate(key_dir, now=LATER)

    assert new.id != first.id
    assert new.state == "active" and new.algorithm == "ES384"
    assert new.created == LATER and new.activated == LATER
    assert _states(key_dir) == {first.id: "previous", new.id: "active"}


def test_rotate_with_algorithm_skips_staged_keys_of_another_algorithm(key_dir: Path) -> None:
    generate_key(key_dir, now=NOW)
    staged_es256 = generate_key(key_dir, "ES256", now=NOW + timedelta(hours=1))

    new = rotate(key_dir, algorithm="ES512", now=LATER)

    assert new.algorithm == "ES512" and new.id != staged_es256.id
    assert _states(key_dir)[staged_es256.id] == "staged"
    assert KeyRing.load(key_dir).signing_key.algorithm == "ES512"


def test_rotate_on_an_empty_directory_creates_the_first_active_key(key_dir: Path) -> None:
    new = rotate(key_dir, now=NOW)
    assert new.state == "active" and new.algorithm == "ES256"
    assert KeyRing.load(key_dir).signing_key.id == new.id


def test_rotate_refuses_to_promote_a_staged_key_that_does_not_load(key_dir: Path) -> None:
    first = generate_key(key_dir, now=NOW)
    staged = generate_key(key_dir, now=LATER)
    (key_dir / f"{staged.id}.crt.pem").unlink()

    with pytest.raises(KeyRingError, match="missing"):
        rotate(key_dir, now=LATER)
    assert _states(key_dir) == {first.id: "active", staged.id: "staged"}


def test_retire_previous_key_unpublishes_it(key_dir: Path) -> None:
    first = generate_key(key_dir, now=NOW)
    rotate(key_dir, now=LATER)

    retire(key_dir, first.id)

    assert _states(key_dir)[first.id] == "retired"
    ring = KeyRing.load(key_dir)
    assert first.id not in {key.id for key in ring.published}
    assert ring.find(first.id) is None


def test_retire_staged_key(key_dir: Path) -> None:
    generate_key(key_dir, now=NOW)
    staged = generate_key(key_dir, now=LATER)
    retire(key_dir, staged.id)
    assert _states(key_dir)[staged.id] == "retired"
    assert len(KeyRing.load(key_dir).published) == 1


def test_retire_active_key_is_refused(key_dir: Path) -> None:
    active = generate_key(key_dir, now=NOW)
    with pytest.raises(KeyRingError, match=r"active signing key .*rotate first"):
        retire(key_dir, active.id)
    assert _states(key_dir) == {active.id: "active"}


def test_retire_unknown_key_is_refused(key_dir: Path) -> None:
    generate_key(key_dir, now=NOW)
    with pytest.raises(KeyRingError, match="no key with id 'nope'"):
        retire(key_dir, "nope")


def test_retire_twice_is_harmless(key_dir: Path) -> None:
    first = generate_key(key_dir, now=NOW)
    rotate(key_dir, now=LATER)
    retire(key_dir, first.id)
    retire(key_dir, first.id)
    assert _states(key_dir)[first.id] == "retired"


def test_list_keys_survives_deleted_files_of_retired_keys(key_dir: Path) -> None:
    first = generate_key(key_dir, now=NOW)
    second = rotate(key_dir, now=LATER)
    retire(key_dir, first.id)
    (key_dir / f"{first.id}.key.pem").unlink()
    (key_dir / f"{first.id}.crt.pem").unlink()

    infos = list_keys(key_dir)

    assert [(i.id, i.state) for i in infos] == [(first.id, "retired"), (second.id, "active")]
    assert infos[0].libtrust_kid is None and infos[0].thumbprint is None
    assert infos[1].libtrust_kid == KeyRing.load(key_dir).signing_key.libtrust_kid
    assert infos[1].thumbprint == KeyRing.load(key_dir).signing_key.thumbprint


# --- what is published ------------------------------------------------------------------


def test_bundle_holds_exactly_the_published_certificates(key_dir: Path) -> None:
    retired = generate_key(key_dir, now=NOW)
    rotate(key_dir, now=NOW + timedelta(days=1))  # retired -> previous
    previous = rotate(key_dir, now=NOW + timedelta(days=2))  # -> previous; new active
    generate_key(key_dir, now=LATER)  # staged
    retire(key_dir, retired.id)

    ring = KeyRing.load(key_dir)

    assert previous.id in {key.id for key in ring.published}
    assert [key.state for key in ring.published] == ["active", "staged", "previous"]
    expected = {key.certificate.public_bytes(serialization.Encoding.DER) for key in ring.published}
    assert _ders(ring.bundle_pem()) == expected
    retired_pem = (key_dir / f"{retired.id}.crt.pem").read_text()
    assert _ders(retired_pem).isdisjoint(_ders(ring.bundle_pem()))


def test_jwks_kids_are_thumbprints_with_x5c(key_dir: Path) -> None:
    generate_key(key_dir, now=NOW)
    generate_key(key_dir, "ES384", now=LATER)
    ring = KeyRing.load(key_dir)

    jwks = ring.jwks()

    assert len(jwks["keys"]) == 2
    for jwk, key in zip(jwks["keys"], ring.published, strict=True):
        cert = key.certificate
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert jwk["kid"] == jwk_thumbprint(public) == key.thumbprint
        assert jwk["use"] == "sig" and jwk["alg"] == key.algorithm and jwk["kty"] == "EC"
        assert jwk["x5c"] == key.x5c
        assert base64.b64decode(jwk["x5c"][0]) == cert.public_bytes(serialization.Encoding.DER)
        assert "d" not in jwk  # nothing private
    json.dumps(jwks)  # serialisable as is


def test_signing_key_public_pem_is_the_certificates_key(
    make_ring: Callable[..., KeyRing],
) -> None:
    key = make_ring().signing_key
    loaded = serialization.load_pem_public_key(key.public_pem.encode())
    assert loaded == key.certificate.public_key()


def test_keyring_snapshot_needs_one_active_key_first(make_ring: Callable[..., KeyRing]) -> None:
    ring = make_ring()
    with pytest.raises(ValueError, match="exactly one active key"):
        KeyRing(ring.directory, ())
    assert KeyRing(ring.directory, ring.published).signing_key is ring.signing_key


def test_key_ids_carry_the_creation_time_in_utc(key_dir: Path) -> None:
    paris = timezone(timedelta(hours=1))
    info = generate_key(key_dir, now=datetime(2026, 11, 28, 5, 35, 0, 999, tzinfo=paris))
    assert info.id.startswith("20261128T043500Z-")
    assert info.created == NOW
