"""The on-disk key ring: signing keys, their certificates, and which key signs.

Layout of the key directory (also described in ``keys/README.md``)::

    ring.json               {"version": 1, "keys": [{"id", "algorithm", "state",
                                                     "created", "activated"}, ...]}
    <id>.key.pem            PKCS#8 private key, mode 0600
    <id>.crt.pem            self-signed X.509 certificate of that key

States: ``active`` (exactly one; signs), ``staged`` (published, not yet signing, so
registries can load its certificate first), ``previous`` (published, no longer signs),
``retired`` (not published; its files may be deleted). The functions that change the
ring (``generate_key``, ``rotate``, ``retire``) hold an exclusive lock on the directory
and replace ``ring.json`` atomically; a running service reads the ring with
``KeyRing.load`` into an immutable snapshot and swaps snapshots on reload.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from authsvc.errors import KeyRingError
from authsvc.tokens.libtrust import PublicKey, jwk_thumbprint, libtrust_kid, public_jwk

__all__ = [
    "ACTIVE",
    "PREVIOUS",
    "RETIRED",
    "STAGED",
    "SUPPORTED_ALGORITHMS",
    "KeyInfo",
    "KeyRing",
    "PrivateKey",
    "SigningKey",
    "generate_key",
    "list_keys",
    "retire",
    "rotate",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

ACTIVE: Final = "active"
STAGED: Final = "staged"
PREVIOUS: Final = "previous"
RETIRED: Final = "retired"
_STATES: Final = frozenset({ACTIVE, STAGED, PREVIOUS, RETIRED})

RING_FILE: Final = "ring.json"
_LOCK_FILE: Final = ".ring.lock"
_RING_VERSION: Final = 1
_ENTRY_FIELDS: Final = frozenset({"id", "algorithm", "state", "created", "activated"})
# Key ids name files: letters, digits, '.', '_', '-' only, never a path.
_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
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


@dataclass(frozen=True)
class KeyInfo:
    """One ``ring.json`` entry, for listing. ``libtrust_kid``/``thumbprint`` are None
    when the key's certificate is gone (normal for retired keys)."""

    id: str
    algorithm: str
    state: str
    created: datetime
    activated: datetime | None
    libtrust_kid: str | None
    thumbprint: str | None


@dataclass(frozen=True)
class SigningKey:
    """A published key, loaded and checked: private key, certificate and identifiers."""

    id: str
    algorithm: str
    state: str
    created: datetime
    private_key: PrivateKey
    certificate: x509.Certificate
    libtrust_kid: str
    thumbprint: str
    x5c: list[str]
    public_pem: str

    def jwk(self) -> dict[str, Any]:
        """The public JWK as published in the JWKS (``kid`` is the RFC 7638 thumbprint)."""
        jwk: dict[str, Any] = dict(public_jwk(self.private_key.public_key()))
        jwk.update(kid=self.thumbprint, use="sig", alg=self.algorithm, x5c=list(self.x5c))
        return jwk


@dataclass(frozen=True)
class KeyRing:
    """An immutable snapshot of the published keys; ``published[0]`` is the active one."""

    directory: Path
    published: tuple[SigningKey, ...]

    def __post_init__(self) -> None:
        active = [key for key in self.published if key.state == ACTIVE]
        if len(active) != 1 or self.published[0] is not active[0]:
            raise ValueError("a KeyRing needs exactly one active key, first in `published`")

    @classmethod
    def load(cls, directory: Path | str) -> KeyRing:
        """Read and check every published key. Raises KeyRingError naming the file."""
        directory = Path(directory)
        if not directory.is_dir():
            raise KeyRingError(
                f"{directory}: key directory does not exist "
                "(create a key with `authsvc keys generate`)"
            )
        entries = _read_ring(directory)
        if not any(entry.state == ACTIVE for entry in entries):
            raise KeyRingError(
                f"{directory / RING_FILE}: no active key (run `authsvc keys rotate`)"
            )
        order = {ACTIVE: 0, STAGED: 1, PREVIOUS: 2}
        published = sorted(
            (entry for entry in entries if entry.state != RETIRED),
            key=lambda entry: (order[entry.state], -entry.created.timestamp()),
        )
        return cls(directory, tuple(_load_key(directory, entry) for entry in published))

    @property
    def signing_key(self) -> SigningKey:
        return self.published[0]

    def find(self, key_id: str) -> SigningKey | None:
        return next((key for key in self.published if key.id == key_id), None)

    def bundle_pem(self) -> str:
        """The certificates of the published keys: a registry's ``rootcertbundle``."""
        return "".join(
            key.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
            for key in self.published
        )

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.published]}


def generate_key(
    directory: Path | str, algorithm: str = "ES256", *, now: datetime | None = None
) -> KeyInfo:
    """Create a key; it becomes active if the ring has no active key, else staged."""
    spec = _algorithm(algorithm)
    directory = _ensure_directory(Path(directory))
    when = _utc(now)
    with _locked(directory):
        entries = _read_ring(directory, missing_ok=True)
        has_active = any(entry.state == ACTIVE for entry in entries)
        entry, key = _create_key(directory, algorithm, spec, when, active=not has_active)
        _write_ring(directory, [*entries, entry])
    return _info(entry, key.public_key())


def rotate(
    directory: Path | str, *, algorithm: str | None = None, now: datetime | None = None
) -> KeyInfo:
    """Make the newest staged key (of ``algorithm``, if given) active; the active key
    becomes previous. With nothing staged, generate a key and activate it at once
    (registries must then reload the bundle before they accept its tokens)."""
    if algorithm is not None:
        _algorithm(algorithm)
    directory = _ensure_directory(Path(directory))
    when = _utc(now)
    with _locked(directory):
        entries = _read_ring(directory, missing_ok=True)
        staged = [
            entry
            for entry in entries
            if entry.state == STAGED and algorithm in (None, entry.algorithm)
        ]
        if staged:
            chosen = max(staged, key=lambda entry: (entry.created, entry.id))
            # Refuse to promote a key that would not load: the service would stop signing.
            key = _load_key(directory, chosen).private_key
            promoted = replace(chosen, state=ACTIVE, activated=when)
            entries = [promoted if entry is chosen else entry for entry in entries]
        else:
            active_alg = next((e.algorithm for e in entries if e.state == ACTIVE), "ES256")
            name = algorithm or active_alg
            promoted, key = _create_key(directory, name, _algorithm(name), when, active=True)
            entries = [*entries, promoted]
        entries = [
            replace(entry, state=PREVIOUS)
            if entry.state == ACTIVE and entry is not promoted
            else entry
            for entry in entries
        ]
        _write_ring(directory, entries)
    return _info(promoted, key.public_key())


def retire(directory: Path | str, key_id: str) -> None:
    """Stop publishing a staged or previous key. Retiring a retired key does nothing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise KeyRingError(f"{directory}: key directory does not exist")
    with _locked(directory):
        entries = _read_ring(directory)
        entry = next((entry for entry in entries if entry.id == key_id), None)
        if entry is None:
            raise KeyRingError(f"{directory / RING_FILE}: no key with id {key_id!r}")
        if entry.state == ACTIVE:
            raise KeyRingError(
                f"key {key_id} is the active signing key and cannot be retired; "
                "rotate first (`authsvc keys rotate`), then retire it"
            )
        if entry.state == RETIRED:
            return
        _write_ring(directory, [replace(e, state=RETIRED) if e is entry else e for e in entries])


def list_keys(directory: Path | str) -> list[KeyInfo]:
    """Every key in ``ring.json``, in creation order; works without the key files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise KeyRingError(f"{directory}: key directory does not exist")
    infos = []
    for entry in _read_ring(directory):
        public: PublicKey | None = None
        try:
            pem = (directory / f"{entry.id}.crt.pem").read_bytes()
            cert_key = x509.load_pem_x509_certificate(pem).public_key()
        except (OSError, ValueError):
            pass  # retired keys' files may be gone; list what ring.json knows
        else:
            if isinstance(cert_key, PublicKey):
                public = cert_key
        infos.append(_info(entry, public))
    return infos


# --- ring.json -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    id: str
    algorithm: str
    state: str
    created: datetime
    activated: datetime | None

    def to_json(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "algorithm": self.algorithm,
            "state": self.state,
            "created": _format_time(self.created),
            "activated": _format_time(self.activated) if self.activated else None,
        }


def _read_ring(directory: Path, *, missing_ok: bool = False) -> list[_Entry]:
    path = directory / RING_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise KeyRingError(f"{path}: missing (create a key with `authsvc keys generate`)") from None
    except OSError as exc:
        raise KeyRingError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        document = json.loads(text)
        entries = _parse_ring(document)
    except (ValueError, TypeError, KeyError) as exc:
        raise KeyRingError(f"{path}: corrupt ({exc})") from exc
    if sum(entry.state == ACTIVE for entry in entries) > 1:
        raise KeyRingError(f"{path}: corrupt (more than one active key)")
    return entries


def _parse_ring(document: object) -> list[_Entry]:
    if not isinstance(document, dict) or set(document) != {"version", "keys"}:
        raise ValueError('expected an object with exactly "version" and "keys"')
    if type(document["version"]) is not int or document["version"] != _RING_VERSION:
        raise ValueError(f"unsupported version {document['version']!r}")
    if not isinstance(document["keys"], list):
        raise ValueError('"keys" must be a list')
    entries: list[_Entry] = []
    for index, raw in enumerate(document["keys"]):
        where = f"keys[{index}]"
        if not isinstance(raw, dict) or set(raw) != _ENTRY_FIELDS:
            raise ValueError(f"{where} must have exactly the fields {sorted(_ENTRY_FIELDS)}")
        key_id, algorithm, state = raw["id"], raw["algorithm"], raw["state"]
        if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
            raise ValueError(f"{where}.id: invalid key id {key_id!r}")
        if any(entry.id == key_id for entry in entries):
            raise ValueError(f"{where}.id: duplicate key id {key_id!r}")
        if algorithm not in _ALGORITHMS:
            raise ValueError(f"{where}.algorithm: unsupported algorithm {algorithm!r}")
        if state not in _STATES:
            raise ValueError(f"{where}.state: unknown state {state!r}")
        activated = raw["activated"]
        entries.append(
            _Entry(
                id=key_id,
                algorithm=algorithm,
                state=state,
                created=_parse_time(raw["created"], f"{where}.created"),
                activated=None
                if activated is None
                else _parse_time(activated, f"{where}.activated"),
            )
        )
    return entries


def _write_ring(directory: Path, entries: Sequence[_Entry]) -> None:
    document = {"version": _RING_VERSION, "keys": [entry.to_json() for entry in entries]}
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ring.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / RING_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _parse_time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an RFC 3339 string, got {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{where}: timestamp {value!r} has no time zone")
    return parsed.astimezone(UTC)


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- key files -----------------------------------------------------------------------


def _create_key(
    directory: Path, algorithm: str, spec: _Algorithm, when: datetime, *, active: bool
) -> tuple[_Entry, PrivateKey]:
    key_id = f"{when.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
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
    entry = _Entry(key_id, algorithm, ACTIVE if active else STAGED, when, when if active else None)
    return entry, key


def _load_key(directory: Path, entry: _Entry) -> SigningKey:
    key_path = directory / f"{entry.id}.key.pem"
    cert_path = directory / f"{entry.id}.crt.pem"
    where = f"({entry.state} key {entry.id} in {RING_FILE})"
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
    if not isinstance(key, PrivateKey) or not _ALGORITHMS[entry.algorithm].fits(key):
        raise KeyRingError(
            f"{key_path}: holds {_describe(key)}, which does not match its algorithm "
            f"{entry.algorithm} {where}"
        )
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise KeyRingError(f"{cert_path}: not a PEM certificate: {exc}") from exc
    if _spki(certificate.public_key()) != _spki(key.public_key()):
        raise KeyRingError(f"{cert_path}: certificate is not for the key in {key_path.name}")
    return _signing_key(entry, key, certificate)


def _signing_key(entry: _Entry, key: PrivateKey, certificate: x509.Certificate) -> SigningKey:
    public = key.public_key()
    der = certificate.public_bytes(serialization.Encoding.DER)
    return SigningKey(
        id=entry.id,
        algorithm=entry.algorithm,
        state=entry.state,
        created=entry.created,
        private_key=key,
        certificate=certificate,
        libtrust_kid=libtrust_kid(public),
        thumbprint=jwk_thumbprint(public),
        x5c=[base64.b64encode(der).decode("ascii")],
        public_pem=public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii"),
    )


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- helpers -------------------------------------------------------------------------


def _algorithm(name: str) -> _Algorithm:
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unsupported algorithm {name!r}; supported: {', '.join(SUPPORTED_ALGORITHMS)}"
        ) from None


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC).replace(microsecond=0)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).replace(microsecond=0)


def _ensure_directory(directory: Path) -> Path:
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not directory.is_dir():
            raise KeyRingError(f"{directory}: exists and is not a directory") from None
    else:
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    return directory


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise changes to the ring (two `authsvc keys` commands at once)."""
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _info(entry: _Entry, public: PublicKey | None) -> KeyInfo:
    return KeyInfo(
        id=entry.id,
        algorithm=entry.algorithm,
        state=entry.state,
        created=entry.created,
        activated=entry.activated,
        libtrust_kid=libtrust_kid(public) if public is not None else None,
        thumbprint=jwk_thumbprint(public) if public is not None else None,
    )


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
