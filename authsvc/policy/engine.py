"""The decision engine. One code path serves the token endpoint and ``explain``."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from authsvc.config import AccessEntry, Rule
from authsvc.identity import Identity
from authsvc.policy.patterns import compile_pattern
from authsvc.scopes import ACTIONS, ALL, Scope

__all__ = ["Decision", "Policy", "ScopeDecision"]

_EVERY_ACTION = frozenset((*ACTIONS, ALL))


@dataclass(frozen=True)
class _Entry:
    rule_id: str
    resource_type: str
    resource_class: str | None
    name: re.Pattern[str]
    actions: frozenset[str]

    def covers(self, scope: Scope) -> bool:
        if scope.type != self.resource_type:
            return False
        if self.resource_class is not None and scope.resource_class != self.resource_class:
            return False
        return self.name.fullmatch(scope.name) is not None


def _entry(rule_id: str, entry: AccessEntry) -> _Entry:
    if entry.registry is not None:
        return _Entry(
            rule_id,
            "registry",
            None,
            re.compile(re.escape(entry.registry)),
            frozenset(entry.actions),
        )
    assert entry.repository is not None
    actions = _EVERY_ACTION if ALL in entry.actions else frozenset(entry.actions)
    return _Entry(
        rule_id, "repository", entry.resource_class, compile_pattern(entry.repository), actions
    )


@dataclass(frozen=True)
class _CompiledRule:
    rule: Rule
    allow: tuple[_Entry, ...]
    deny: tuple[_Entry, ...]

    def matches(self, identity: Identity) -> bool:
        match = self.rule.match
        if match.anonymous is not None and match.anonymous != identity.anonymous:
            return False
        if match.account is not None and match.account != identity.account:
            return False
        return match.groups is None or not identity.groups.isdisjoint(match.groups)


@dataclass(frozen=True)
class ScopeDecision:
    """The decision on one requested resource, with the rules behind it."""

    requested: Scope
    granted: tuple[str, ...]
    denied: tuple[str, ...]
    allowed_by: tuple[str, ...]
    denied_by: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    scopes: tuple[ScopeDecision, ...]
    matched_rules: tuple[str, ...]

    @property
    def granted(self) -> list[Scope]:
        return [s.requested.with_actions(s.granted) for s in self.scopes if s.granted]

    @property
    def denied(self) -> list[Scope]:
        return [s.requested.with_actions(s.denied) for s in self.scopes if s.denied]

    @property
    def outcome(self) -> str:
        if not self.denied:
            return "success"
        return "partial" if self.granted else "failure"


class Policy:
    """Compiled rules. Immutable; a reload builds a new one."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = tuple(
            _CompiledRule(
                rule,
                tuple(_entry(rule.id, e) for e in rule.allow),
                tuple(_entry(rule.id, e) for e in rule.deny),
            )
            for rule in rules
        )
        canonical = json.dumps(
            [r.model_dump(mode="json", by_alias=True) for r in rules], sort_keys=True
        )
        self.digest = hashlib.sha256(canonical.encode()).hexdigest()

    def decide(self, identity: Identity, scopes: Iterable[Scope]) -> Decision:
        rules = [r for r in self._rules if r.matches(identity)]
        return Decision(
            tuple(self._decide_one(rules, scope) for scope in scopes),
            tuple(r.rule.id for r in rules),
        )

    @staticmethod
    def _decide_one(rules: Sequence[_CompiledRule], scope: Scope) -> ScopeDecision:
        allowed: set[str] = set()
        denied: set[str] = set()
        allowed_by: list[str] = []
        denied_by: list[str] = []
        for rule in rules:
            for entry in rule.allow:
                if entry.covers(scope):
                    allowed |= entry.actions
                    allowed_by.append(entry.rule_id)
            for entry in rule.deny:
                if entry.covers(scope):
                    denied |= entry.actions
                    if ALL in scope.actions or entry.actions & set(scope.actions):
                        denied_by.append(entry.rule_id)
        if scope.type == "repository":
            if allowed >= set(ACTIONS):
                allowed.add(ALL)
            if denied:  # `*` means every action; any denied action withholds it
                denied.add(ALL)
        requested = scope.actions
        granted = tuple(a for a in requested if a in allowed and a not in denied)
        refused = tuple(a for a in requested if a not in granted)
        return ScopeDecision(
            scope,
            granted,
            refused,
            tuple(dict.fromkeys(allowed_by)),
            tuple(dict.fromkeys(denied_by)),
        )
