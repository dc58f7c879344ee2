"""Key material, shared by ``authsvc.tokens.ring`` and ``authsvc.tokens.keyring``.

The supported signing algorithms, and the pair of files that holds each key:
``<id>.key.pem`` (PKCS#8 private key, mode 0600) and ``<id>.crt.pem`` (self-signed
X.509 certificate of that key). Writing a new pair, and reading a pair back with every
check (the key is private to its owner, fits its algorithm, and the certificate is for
it). Knows nothing of ``ring.json``; its underscored names are for those two modules.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from authsvc.errors import KeyRingError

__all__ = ["SUPPORTED_ALGORITHMS", "PrivateKey"]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_CERT_LIFETIME: Final = timedelta(days=3652)  # 10 years
# Backdate notBefore: a registry whose clock runs behind ours must still accept the cert.
_CERT_BACKDATE: Final = timedelta(hours=1)
_MIN_RSA_BITS: Final = 2048


@dataclass(frozen=True)
class _Algorithm:
    curve: ec.EllipticCurve | None  # None: RSA
    digest: hashes.SHA256 | hashes.SHA384 | hashes.SHA512
    rsa_bits: int = 0

    def generate(self) -> PrivateKey:
        if self.curve is not None:
            return ec.generate_private_key(self.curve)
        return rsa.generate_private_key(public_exponent=65537, key_size=self.rsa_bits)

    def fits(self, key: PrivateKey) -> bool:
        if self.curve is not None:
            return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == self.curve.name
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size >= _MIN_RSA_BITS


# What distribution 2.8 verifies (the curve must match the ES algorithm).
_ALGORITHMS: Final[dict[str, _Algorithm]] = {
    "ES256": _Algorithm(ec.SECP256R1(), hashes.SHA256()),
    "ES384": _Algorithm(ec.SECP384R1(), hashes.SHA384()),
    "ES512": _Algorithm(ec.SECP521R1(), hashes.SHA512()),
    "RS256": _Algorithm(None, hashes.SHA256(), rsa_bits=3072),
}
SUPPORTED_ALGORITHMS: Final = tuple(_ALGORITHMS)


def _algorithm(name: str) -> _Algorithm:
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unsupported algorithm {name!r}; supported: {', '.join(SUPPORTED_ALGORITHMS)}"
        ) from None


def _write_key_files(directory: Path, key_id: str, spec: _Algorithm, when: datetime) -> PrivateKey:
    """Generate a key of ``spec`` and create its two files; neither may exist yet."""
    key = spec.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"authsvc token signer {key_id}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(159) | 1)  # positive, non-zero, at most 20 octets
        .not_valid_before(when - _CERT_BACKDATE)
        .not_valid_after(when + _CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, spec.digest)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new_file(directory / f"{key_id}.key.pem", key_pem, 0o600)
    _write_new_file(
        directory / f"{key_id}.crt.pem",
        certificate.public_bytes(serialization.Encoding.PEM),
        0o644,
    )
    return key


def _read_key_files(
    directory: Path, key_id: str, algorithm: str, where: str
) -> tuple[PrivateKey, x509.Certificate]:
    """Read and check the files of key ``key_id``; ``where`` ends the "missing" and
    algorithm mismatch messages, naming the key's place in the ring."""
    key_path = directory / f"{key_id}.key.pem"
    cert_path = directory / f"{key_id}.crt.pem"
    try:
        with open(key_path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode & 0o777
            if mode & 0o077:
                raise KeyRingError(
                    f"{key_path}: private key is accessible by group or others "
                    f"(mode {mode:04o}); run `chmod 600 {key_path}`"
                )
            key_pem = handle.read()
        cert_pem = cert_path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyRingError(f"{exc.filename}: missing {where}") from None
    except OSError as exc:
        raise KeyRingError(f"{exc.filename}: cannot be read: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyRingError(f"{key_path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, PrivateKey) or not _ALGORITHMS[algorithm].fits(key):
        raise KeyRingError(
            f"{key_path}: holds {_describe(key)}, which does not match its algorithm "
            f"{algorithm} {where}"
        )
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise KeyRingError(f"{cert_path}: not a PEM certificate: {exc}") from exc
    if _spki(certificate.public_key()) != _spki(key.public_key()):
        raise KeyRingError(f"{cert_path}: certificate is not for the key in {key_path.name}")
    return key, certificate


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _spki(public: CertificatePublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _describe(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC {key.curve.name} key"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"an RSA {key.key_size}-bit key"
    return f"a {type(key).__name__}"
