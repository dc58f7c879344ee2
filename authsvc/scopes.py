"""Parse and format registry scopes: ``type[(class)]:name:action[,action...]``.

The grammar is the distribution token spec's (docs/content/spec/auth/scope.md). The
name may hold one ``:`` (``localhost:5000/app``), so the type is split off from the left
and the actions from the right. Unknown types and actions parse (they are simply never
granted); a string that does not fit the grammar raises ``InvalidScope``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from authsvc.errors import InvalidScope

__all__ = [
    "ACTIONS",
    "ALL",
    "Scope",
    "format_scope",
    "merge_scopes",
    "parse_scope",
    "parse_scopes",
]

#: The actions a rule can grant. ``*`` means every one of them.
ACTIONS = ("pull", "push", "delete")
ALL = "*"
_ACTION_ORDER = {name: i for i, name in enumerate((*ACTIONS, ALL))}

MAX_SCOPE_LENGTH = 512

_TYPE = re.compile(r"[a-z0-9]+(?:\([a-z0-9]+\))?")
_ACTION = re.compile(r"[a-z]*|\*")
# A repository path component and an optional registry host[:port] prefix.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?/)"
_REPOSITORY_NAME = re.compile(rf"{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*")
_OTHER_NAME = re.compile(r"[A-Za-z0-9._/*:-]+")


@dataclass(frozen=True, order=True)
class Scope:
    """One resource and the actions asked for (or granted) on it."""

    type: str
    name: str
    actions: tuple[str, ...]
    resource_class: str | None = None

    @property
    def resource(self) -> tuple[str, str | None, str]:
        return (self.type, self.resource_class, self.name)

    def with_actions(self, actions: Iterable[str]) -> Scope:
        return Scope(self.type, self.name, _ordered(actions), self.resource_class)

    def to_access(self) -> dict[str, object]:
        """The JWT ``access`` entry; the class goes in its own field, never in ``type``."""
        entry: dict[str, object] = {"type": self.type, "name": self.name}
        if self.resource_class is not None:
            entry["class"] = self.resource_class
        entry["actions"] = list(self.actions)
        return entry


def _ordered(actions: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(actions), key=lambda a: (_ACTION_ORDER.get(a, 99), a)))


def parse_scope(text: str) -> Scope:
    """Parse one scope; raise ``InvalidScope`` naming what is wrong."""
    if len(text) > MAX_SCOPE_LENGTH:
        raise InvalidScope(f"scope is longer than {MAX_SCOPE_LENGTH} characters")
    type_part, sep, rest = text.partition(":")
    name, sep2, actions_part = rest.rpartition(":")
    if not sep or not sep2:
        raise InvalidScope(f"scope {text!r} is not of the form type:name:actions")
    if not _TYPE.fullmatch(type_part):
        raise InvalidScope(f"scope {text!r}: resource type {type_part!r} is malformed")
    resource_type, _, klass = type_part.partition("(")
    resource_class = klass[:-1] if klass else None
    if resource_type == "repository":
        if not _REPOSITORY_NAME.fullmatch(name):
            raise InvalidScope(f"scope {text!r}: {name!r} is not a valid repository name")
    elif not _OTHER_NAME.fullmatch(name):
        raise InvalidScope(f"scope {text!r}: resource name {name!r} is malformed")
    actions = actions_part.split(",")
    for action in actions:
        if not _ACTION.fullmatch(action):
            raise InvalidScope(f"scope {text!r}: action {action!r} is malformed")
    return Scope(resource_type, name, _ordered(a for a in actions if a), resource_class)


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Parse scope parameters; each value may hold several space-separated scopes."""
    return merge_scopes(parse_scope(item) for value in values for item in value.split(" ") if item)


def merge_scopes(scopes: Iterable[Scope]) -> list[Scope]:
    """Merge scopes on the same resource into one, keeping first-seen order."""
    merged: dict[tuple[str, str | None, str], set[str]] = {}
    for scope in scopes:
        merged.setdefault(scope.resource, set()).update(scope.actions)
    return [
        Scope(rtype, name, _ordered(actions), rclass)
        for (rtype, rclass, name), actions in merged.items()
    ]


def format_scope(scope: Scope) -> str:
    type_part = (
        scope.type if scope.resource_class is None else f"{scope.type}({scope.resource_class})"
    )
    return f"{type_part}:{scope.name}:{','.join(scope.actions)}"
