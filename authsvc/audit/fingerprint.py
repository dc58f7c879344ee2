"""Keyed fingerprints of credentials: HMAC-SHA256 under the audit key, never the secret.

The same credential gives the same fingerprint in every worker and on every host that
shares the key file, so an investigation can follow one stolen password or token
across events without the audit trail holding anything that would let it be used.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

__all__ = ["Fingerprinter", "load_or_create_key"]

KEY_BYTES = 32


class AuditKeyError(Exception):
    """The audit key file is unreadable, malformed, or readable by others."""


def load_or_create_key(path: Path) -> bytes:
    """The audit key at ``path``, created (mode 0600) when it does not exist yet."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        # Written whole under a temporary name, then linked into place: a process that
        # starts at the same moment sees no key or the whole key, never an empty file.
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(KEY_BYTES).hex().encode("ascii") + b"\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(temporary, path)
        except OSError as exc:
            raise AuditKeyError(f"{path}: cannot create the audit key: {exc.strerror}") from exc
        finally:
            temporary.unlink(missing_ok=True)
    try:
        mode = path.stat().st_mode
        text = path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"{path}: cannot read the audit key: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditKeyError(f"{path}: the audit key is readable by others; chmod 600 it")
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise AuditKeyError(f"{path}: not a hex-encoded key") from exc
    if len(key) < KEY_BYTES:
        raise AuditKeyError(f"{path}: the audit key must be at least {KEY_BYTES} bytes")
    return key


class Fingerprinter:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, kind: str, secret: str) -> str:
        message = f"{kind}\0{secret}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]
