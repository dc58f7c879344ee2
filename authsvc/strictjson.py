"""Strict decoding of base64url and JSON, shared by the OIDC and AWS identity code.

Why strict: a credential must have one spelling and one meaning.

- ``b64url_decode`` accepts only the canonical unpadded base64url spelling (RFC 7515
  §2): no padding, no other alphabet, no non-zero trailing bits. One token has one
  spelling, so what is hashed, cached or compared is the token itself.
- ``loads_strict`` refuses duplicate member names at any depth (``DuplicateMember``):
  JSON leaves their meaning open, and two parsers (ours and the signer's, or a proxy's)
  could read different values from the same text. It also refuses NaN and Infinity,
  which are not JSON.

Every refusal is a ``ValueError``; callers wrap it in their own error and message.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Final

__all__ = ["DuplicateMember", "NonCanonical", "b64url_decode", "loads_strict"]

_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


class NonCanonical(ValueError):
    """Valid base64url, but not the canonical spelling (non-zero trailing bits)."""


class DuplicateMember(ValueError):
    """A JSON object names a member twice; ``name`` is that member's name, as given."""

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate member {name[:40]!r}")
        self.name = name


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding; ``ValueError`` unless the canonical spelling."""
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        raise ValueError("not base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url without padding") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise NonCanonical("not the canonical base64url spelling")
    return raw


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for name, value in pairs:
        if name in result:
            raise DuplicateMember(name)
        result[name] = value
    return result


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def loads_strict(raw: bytes | str) -> object:
    """JSON (UTF-8, if bytes) with no duplicate member names and no NaN/Infinity.

    Raises ``ValueError``: ``DuplicateMember`` for a name given twice, at any depth;
    ``UnicodeDecodeError`` for bytes that are not UTF-8; ``JSONDecodeError`` or a plain
    ``ValueError`` for anything else.
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
