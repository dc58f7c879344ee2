"""The audit event, schema ``authsvc.audit/1``, and its canonical form.

Every decision is one JSON object::

    {
      "schema": "authsvc.audit/1",
      "event_id": "0193...-7...",            # UUIDv7: time-ordered, random tail
      "time": 1795840970123,                 # ms since the epoch, UTC
      "type": "token.issue",                 # also config.load, config.reload,
                                             #   credential.create, credential.revoke,
                                             #   key.generate, key.rotate, key.retire,
                                             #   audit.checkpoint
      "outcome": "success",                  # success | partial | failure
      "reason": "GRANTED",                   # a stable code: SCOPE_DENIED, INVALID_CREDENTIALS,
                                             #   UNKNOWN_USER, TOKEN_EXPIRED, TOKEN_REPLAYED,
                                             #   WRONG_AUDIENCE, UNKNOWN_ISSUER, ...
      "actor": {"kind", "provider", "subject", "account", "credential",
                "fingerprint",               # HMAC-SHA256(audit key, credential)[:32 hex]
                "username", "claims", "reuse"},
      "client": {"ip", "user_agent", "client_id"},
      "request": {"service", "scopes", "grant_type", "offline"},
      "decision": {"granted", "denied", "rules", "policy"},
      "token": {"jti", "exp", "kid"},
      "credential": {"type", "id", "fingerprint", "expires_at"},     # credential.*
      "key": {"id", "kid", "algorithm", "from_state", "to_state"},   # key.* (+ "previous")
      "writer": "host:pid:nonce",                # who wrote it; each writer has its own chain
      "seq": 17,                             # 1, 2, 3, ... per writer, no gaps
      "chain": {"prev": "<hex>", "hash": "<hex>"}
    }

``chain.hash`` is SHA-256 of the canonical JSON (RFC 8785) of the event with
``chain.hash`` left out and ``chain.prev`` in; ``prev`` is the previous event's hash of
the same writer (64 zeros for its first). Values are strings, integers, booleans, null,
lists and objects only: no floats, so RFC 8785's number rules reduce to integers.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "GENESIS",
    "SCHEMA",
    "PlainEvent",
    "PlainValue",
    "canonical_json",
    "event_hash",
    "uuid7",
    "writer_id",
]

SCHEMA = "authsvc.audit/1"
#: ``chain.prev`` of a writer's first event.
GENESIS = "0" * 64


def uuid7(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, version, 74 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= secrets.randbits(12) << 64
    value |= 0b10 << 62
    value |= secrets.randbits(62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_LEAVES = frozenset({str, int, bool, type(None)})

#: What an event is made of.
PlainValue = str | int | bool | None | list["PlainValue"] | dict[str, "PlainValue"]


class PlainEvent(dict[str, PlainValue]):
    """An event made only of dicts, lists, strings, ints, booleans and None by
    construction: its builder's types say so (``mypy --strict`` holds it to them), so
    encoding it skips the walk that proves it (``canonical_json(plain=True)``), about
    a sixth of what chaining an event and writing it to the file cost (callgrind).

    The token endpoint's events are built so (``TokenService._base_event``); every
    other event (configuration, credentials, keys, tools) is walked. A value of another
    type would be encoded by orjson without a word (a float as a number, a NaN as
    null) and ``audit verify`` would then refuse the event, so the tests that drive
    every decision path also walk each event they record."""

    __slots__ = ()


class _Doubt(Exception):
    """The quick walk met something only the exact walk can judge."""


def _plain(value: object) -> None:
    """Pass only values made of exactly dicts, lists, strings, ints, booleans and None
    (what events are made of); raise ``_Doubt`` for anything else.

    The token path's check: ``_check``'s walk without its paths, and without the key
    checks, which orjson makes itself (a key that is not a string fails the encoding,
    and the exact path then refuses it by name)."""
    if type(value) is dict:
        members: Any = value.values()
    elif type(value) is list:
        members = value
    else:
        raise _Doubt
    for member in members:
        if type(member) not in _LEAVES:
            _plain(member)


#: ``bytes.translate`` deletes these, leaving only the lead bytes of 4-byte UTF-8
#: sequences: the encoding of characters beyond the BMP.
_BELOW_F0 = bytes(range(0xF0))


def _check(value: object, path: str) -> bool:
    """Refuse what has no canonical form here; True if a key holds a character beyond
    the BMP (only then do UTF-16 order and code-point order differ).

    The exact walk, which names the path of what it refuses."""
    kind = type(value)
    if kind in _LEAVES:
        return False
    if kind is float or isinstance(value, float):
        raise ValueError(f"{path}: floats have no canonical form here")
    astral = False
    if kind is dict or isinstance(value, Mapping):
        for key, member in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise ValueError(f"{path}: keys must be strings")
            if not key.isascii() and any(ord(c) > 0xFFFF for c in key):
                astral = True
            if type(member) not in _LEAVES:
                astral = _check(member, f"{path}.{key}") or astral
    elif kind is list or kind is tuple or isinstance(value, list | tuple):
        for i, member in enumerate(value):  # type: ignore[arg-type]
            if type(member) not in _LEAVES:
                astral = _check(member, f"{path}[{i}]") or astral
    return astral


def canonical_json(value: Any, *, plain: bool = False) -> bytes:
    """RFC 8785 for the values events hold: members sorted by UTF-16 code units, no
    insignificant white space, strings as JSON escapes them minimally (UTF-8 out).

    Plain values (``_plain``) go to orjson, 7x faster than the standard library's
    encoder: it sorts keys by their UTF-8 bytes, which is code-point order, and that is
    UTF-16 order unless a key holds a character beyond the BMP. Whatever else (floats,
    other types, ints beyond 64 bits, lone surrogates, any character beyond the BMP)
    takes the exact path. ``tests/unit/audit/test_schema.py`` holds both to the same
    bytes. ``plain``: the caller vouches for what ``_plain`` checks (``PlainEvent``)."""
    try:
        if not plain:
            _plain(value)
        encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (_Doubt, TypeError):  # (orjson.JSONEncodeError is a TypeError)
        return _exact_json(value)
    if encoded.isascii() or not encoded.translate(None, _BELOW_F0):
        return encoded
    return _exact_json(value)


def _exact_json(value: Any) -> bytes:
    if not _check(value, "$"):
        # No key beyond the BMP: code-point order is UTF-16 order, and the C encoder's
        # sort is the canonical one.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(
            "utf-8"
        )
    return json.dumps(
        value,
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=False,
        default=None,
        cls=_SortedUtf16Encoder,
    ).encode("utf-8")


class _SortedUtf16Encoder(json.JSONEncoder):
    """Sorts object members by their UTF-16 code units, as RFC 8785 requires."""

    def iterencode(self, o: Any, _one_shot: bool = False) -> Any:
        return super().iterencode(_sorted(o), _one_shot)


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value, key=lambda k: k.encode("utf-16-be"))}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def event_hash(event: Mapping[str, Any]) -> str:
    """``chain.hash`` of an event: SHA-256 of its canonical JSON without that hash."""
    chain = dict(event.get("chain") or {})
    chain.pop("hash", None)
    body = {**event, "chain": chain}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def writer_id() -> str:
    """This process: ``host:pid:nonce``. The random nonce keeps a restarted container's
    processes, which get the same pids again, from continuing an old writer's chain."""
    global _writer
    pid = os.getpid()
    if _writer is None or _writer[0] != pid:  # the same all the life of this process
        _writer = (pid, f"{os.uname().nodename}:{pid}:{secrets.token_hex(3)}")
    return _writer[1]


_writer: tuple[int, str] | None = None


class EncodedEvent(dict[str, Any]):
    """A chained event with its JSON Lines encoding (``line``: canonical JSON and a
    newline), made while hashing it, so that a sink does not encode it again."""

    line: bytes | None = None


def seal(event: dict[str, Any], prev: str, *, plain: bool = False) -> EncodedEvent:
    """``event`` chained after ``prev``: ``chain`` = {prev, hash}, with its line (the
    event itself when it is an ``EncodedEvent``, else a copy). ``plain``: as for
    ``canonical_json``.

    The line is the canonical JSON hashed, with the hash spliced into its one top-level
    ``"chain":{"prev":…}`` member (sorted keys put ``hash`` first); when that member's
    text occurs more than once (a nested look-alike), the sink encodes the event."""
    event["chain"] = {"prev": prev}
    body = canonical_json(event, plain=plain)
    digest = hashlib.sha256(body).hexdigest()
    event["chain"] = {"prev": prev, "hash": digest}
    sealed = event if type(event) is EncodedEvent else EncodedEvent(event)
    prev_json = _json_string(prev)
    member = _CHAIN_OPEN + prev_json + b"}"
    sealed.line = None
    if body.count(member) == 1:
        sealed.line = body.replace(member, _hashed_chain(digest, prev_json)) + b"\n"
    return sealed


def _json_string(prev: str) -> bytes:
    """``prev`` as a JSON string (a hex digest has nothing to escape)."""
    if prev.isascii() and prev.isalnum():
        return b'"%s"' % prev.encode("ascii")
    return json.dumps(prev).encode("utf-8")


def _hashed_chain(digest: str, prev_json: bytes) -> bytes:
    """The sealed event's chain member (sorted keys put ``hash`` first)."""
    return b'"chain":{"hash":"' + digest.encode("ascii") + b'","prev":' + prev_json + b"}"


# Placeholders for what only the chain's lock decides (seq, chain.prev): an event is
# encoded before the lock with them, and they are filled in under it (a join and a
# SHA-256 instead of a whole encoding while every other request waits).
_TOKEN = secrets.token_hex(16)
_SEQ_PLACEHOLDER = f"\u0001seq-{_TOKEN}"
_PREV_PLACEHOLDER = f"\u0001prev-{_TOKEN}"


_SEQ_JSON = json.dumps(_SEQ_PLACEHOLDER).encode()
_PREV_JSON = json.dumps(_PREV_PLACEHOLDER).encode()
#: What precedes the prev placeholder in a draft's encoding: its top-level chain
#: member, which sealed is ``"chain":{"hash":…,"prev":…}`` (sorted keys: hash first).
_CHAIN_OPEN = b'"chain":{"prev":'
_HEX_DIGITS = "0123456789abcdef"


class Draft:
    """An event encoded but for its ``seq`` and ``chain.prev`` (see ``seal_draft``);
    ``event`` becomes the draft's (a copy made for it); ``plain``: a ``PlainEvent``'s
    copy (see ``canonical_json``).

    ``template`` is that encoding cut around the two: ``(before the chain member,
    between it and seq, after seq)``; None when the cut is not sure (the event holds a
    placeholder's text), and the event is then encoded whole under the lock."""

    __slots__ = ("event", "template")

    def __init__(self, event: dict[str, Any], *, plain: bool = False) -> None:
        # The event is the draft's own: it holds the placeholders until it is sealed
        # (seal_draft and seal set both members anew).
        self.event = event
        event["seq"] = _SEQ_PLACEHOLDER
        event["chain"] = {"prev": _PREV_PLACEHOLDER}
        encoded = canonical_json(event, plain=plain)  # refuses floats: before the lock
        self.template: tuple[bytes, bytes, bytes] | None = None
        around_prev = encoded.split(_PREV_JSON)
        if len(around_prev) == 2:
            head, rest = around_prev
            around_seq = rest.split(_SEQ_JSON)
            # "chain" sorts before "seq" among the top-level members
            if len(around_seq) == 2 and head.endswith(_CHAIN_OPEN) and rest.startswith(b"}"):
                middle, tail = around_seq
                self.template = (head[: -len(_CHAIN_OPEN)], middle[1:], tail)


def seal_draft(draft: Draft, seq: int, prev: str) -> EncodedEvent:
    """The draft's event as ``seal(event with seq, prev)`` would make it."""
    if draft.template is None or prev.strip(_HEX_DIGITS):  # (not a hex digest)
        return seal({**draft.event, "seq": seq}, prev)
    head, middle, tail = draft.template
    seq_json = b"%d" % seq
    prev_json = _json_string(prev)
    body = b"".join((head, _CHAIN_OPEN, prev_json, b"}", middle, seq_json, tail))
    digest = hashlib.sha256(body).hexdigest()
    sealed = EncodedEvent(draft.event)
    sealed["seq"] = seq
    sealed["chain"] = {"prev": prev, "hash": digest}
    sealed.line = b"".join(
        (head, _hashed_chain(digest, prev_json), middle, seq_json, tail, b"\n")
    )
    return sealed
