"""The key ring on disk, and the operations that change it.

Layout of the key directory (also described in ``keys/README.md``)::

    ring.json               {"version": 1, "keys": [{"id", "algorithm", "state",
                                                     "created", "activated"}, ...]}
    <id>.key.pem            PKCS#8 private key, mode 0600
    <id>.crt.pem            self-signed X.509 certificate of that key

States: ``active`` (exactly one; signs), ``staged`` (published, not yet signing, so
registries can load its certificate first), ``previous`` (published, no longer signs),
``retired`` (not published; its files may be deleted). The functions that change the
ring (``generate_key``, ``rotate``, ``retire``) hold an exclusive lock on the directory
and replace ``ring.json`` atomically; ``list_keys`` only reads it. The key files are
written and checked by ``authsvc.tokens.keyfiles``. A running service reads the ring
with ``KeyRing.load`` (``authsvc.tokens.keyring``, which uses ``_read_ring``, ``_Entry``
and ``_load_key_files`` from here) into an immutable snapshot and swaps snapshots on reload.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509

from authsvc.errors import KeyRingError
from authsvc.tokens.keyfiles import (
    _ALGORITHMS,
    PrivateKey,
    _Algorithm,
    _algorithm,
    _read_key_files,
    _write_key_files,
)
from authsvc.tokens.libtrust import PublicKey, jwk_thumbprint, libtrust_kid

__all__ = [
    "ACTIVE",
    "PREVIOUS",
    "RETIRED",
    "RING_FILE",
    "STAGED",
    "KeyInfo",
    "generate_key",
    "list_keys",
    "retire",
    "rotate",
]

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
            key, _ = _load_key_files(directory, chosen)
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
    key = _write_key_files(directory, key_id, spec, when)
    entry = _Entry(key_id, algorithm, ACTIVE if active else STAGED, when, when if active else None)
    return entry, key


def _load_key_files(directory: Path, entry: _Entry) -> tuple[PrivateKey, x509.Certificate]:
    """The checked private key and certificate of ``entry``; KeyRingError if unusable."""
    where = f"({entry.state} key {entry.id} in {RING_FILE})"
    return _read_key_files(directory, entry.id, entry.algorithm, where)


# --- helpers -------------------------------------------------------------------------


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
