from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authsvc.tokens import KeyInfo, KeyRing, generate_key

#: A fixed clock for key creation: ids and certificate dates derive from it.
NOW = datetime(2026, 11, 28, 4, 35, 0, tzinfo=UTC)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A key directory that does not exist yet (generate_key creates it)."""
    return tmp_path / "keys"


@pytest.fixture
def make_ring(key_dir: Path) -> Callable[..., KeyRing]:
    """Factory: a loaded ring whose active key uses ``algorithm``."""

    def make(algorithm: str = "ES256") -> KeyRing:
        info: KeyInfo = generate_key(key_dir, algorithm, now=NOW)
        ring = KeyRing.load(key_dir)
        assert ring.signing_key.id == info.id
        return ring

    return make
