"""The loaded key ring: an immutable snapshot of the published signing keys.

``KeyRing.load`` reads the ring on disk (``authsvc.tokens.ring``, which also holds the
operations that change it) and checks every published key: ``active`` first, then
``staged``, then ``previous``; ``retired`` keys are left out. A ``SigningKey`` holds a
key with its certificate and identifiers; the snapshot gives the signing key, the
certificate bundle registries load and the JWKS. A running service swaps snapshots on
reload and never changes one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authsvc.errors import KeyRingError
from authsvc.tokens.keyfiles import PrivateKey
from authsvc.tokens.libtrust import jwk_thumbprint, libtrust_kid, public_jwk
from authsvc.tokens.ring import (
    ACTIVE,
    PREVIOUS,
    RETIRED,
    RING_FILE,
    STAGED,
    _Entry,
    _load_key_files,
    _read_ring,
)

__all__ = ["KeyRing", "SigningKey"]


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


def _load_key(directory: Path, entry: _Entry) -> SigningKey:
    key, certificate = _load_key_files(directory, entry)
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
