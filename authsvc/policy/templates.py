"""Repository patterns with placeholders, and their expansion for one identity.

A pattern is literal text with two wildcards — ``*`` (within one path segment) and
``**`` (across segments) — and placeholders: ``${account}``, ``${group}`` (once per
group of the caller) and ``${claims.NAME}``, each optionally ``|lower``. Placeholder
values are inserted as *literal text* (escaped), never as pattern syntax, so a value
such as ``*``, ``**`` or ``..`` can only ever match itself. An empty or missing value
makes an allow entry grant nothing; in a deny entry it matches anything, so a deny
errs toward denying.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Placeholder",
    "Template",
    "compile_pattern",
    "expand",
    "parse_template",
    "pattern_regex",
    "placeholder_value",
]

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_CLAIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
_WILDCARDS = re.compile(r"(\*\*|\*)")


@dataclass(frozen=True)
class Placeholder:
    source: Literal["account", "group", "claims"]
    claim: str | None = None
    lower: bool = False

    def __str__(self) -> str:
        name = f"claims.{self.claim}" if self.source == "claims" else self.source
        return "${" + name + ("|lower" if self.lower else "") + "}"


Part = str | Placeholder


@dataclass(frozen=True)
class Template:
    """A parsed pattern: literal runs (wildcards included) and placeholders."""

    parts: tuple[Part, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(p for p in self.parts if isinstance(p, Placeholder))

    def skeleton(self, stand_in: str = "x") -> str:
        """The pattern with each placeholder replaced by a literal stand-in."""
        return "".join(stand_in if isinstance(p, Placeholder) else p for p in self.parts)


def _placeholder(text: str) -> Placeholder:
    name, bar, modifier = text.partition("|")
    if bar and modifier != "lower":
        raise ValueError(f"unknown placeholder modifier {modifier!r} in ${{{text}}} (use |lower)")
    lower = bool(bar)
    if name in ("account", "group"):
        return Placeholder(name, None, lower)  # type: ignore[arg-type]
    if name.startswith("claims.") and _CLAIM_NAME.fullmatch(name[len("claims.") :]):
        return Placeholder("claims", name[len("claims.") :], lower)
    raise ValueError(
        f"unknown placeholder ${{{text}}} (use ${{account}}, ${{group}} or ${{claims.NAME}})"
    )


def parse_template(pattern: str) -> Template:
    parts: list[Part] = []
    position = 0
    for match in _PLACEHOLDER.finditer(pattern):
        literal = pattern[position : match.start()]
        if "$" in literal:
            raise ValueError(f"'$' outside a ${{...}} placeholder in {pattern!r}")
        if literal:
            parts.append(literal)
        parts.append(_placeholder(match.group(1)))
        position = match.end()
    rest = pattern[position:]
    if "$" in rest:
        raise ValueError(f"'$' outside a ${{...}} placeholder in {pattern!r}")
    if rest:
        parts.append(rest)
    return Template(tuple(parts))


def pattern_regex(text: str) -> str:
    return "".join(
        ".*" if piece == "**" else "[^/]*" if piece == "*" else re.escape(piece)
        for piece in _WILDCARDS.split(text)
    )


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a pattern without placeholders; always anchored (``fullmatch``)."""
    return re.compile(rf"\A{pattern_regex(pattern)}\Z")


def placeholder_value(
    placeholder: Placeholder, *, account: str | None, group: str | None,
    claims: Mapping[str, object]
) -> str | None:
    """The text a placeholder stands for, or None when it has no usable value.

    Only strings and integers (not booleans) are usable claim values; an empty string
    counts as missing.
    """
    value: object
    if placeholder.source == "account":
        value = account
    elif placeholder.source == "group":
        value = group
    else:
        value = claims.get(placeholder.claim or "")
    if type(value) is int:
        value = str(value)
    if not isinstance(value, str) or not value:
        return None
    return value.lower() if placeholder.lower else value


def expand(
    template: Template,
    *,
    account: str | None,
    groups: frozenset[str],
    claims: Mapping[str, object],
    missing_matches_anything: bool,
) -> Iterator[re.Pattern[str]]:
    """The anchored regular expressions a template stands for, for one identity.

    ``${group}`` yields one expansion per group (the same group throughout one
    expansion). An allow entry (``missing_matches_anything=False``) with a missing value
    yields nothing; a deny entry matches anything in that place instead.
    """
    needs_group = any(p.source == "group" for p in template.placeholders)
    group_choices: list[str | None] = [*sorted(groups)] if needs_group and groups else [None]
    seen: set[str] = set()
    for group in group_choices:
        regex = []
        for part in template.parts:
            if isinstance(part, str):
                regex.append(pattern_regex(part))
                continue
            value = placeholder_value(part, account=account, group=group, claims=claims)
            if value is not None:
                regex.append(re.escape(value))
            elif missing_matches_anything:
                regex.append(".*")
            else:
                break
        else:
            text = rf"\A{''.join(regex)}\Z"
            if text not in seen:
                seen.add(text)
                yield _compiled(text)


_CACHE: dict[str, re.Pattern[str]] = {}
_CACHE_LIMIT = 4096


def _compiled(text: str) -> re.Pattern[str]:
    pattern = _CACHE.get(text)
    if pattern is None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        pattern = _CACHE[text] = re.compile(text)
    return pattern

