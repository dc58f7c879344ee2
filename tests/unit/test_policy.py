from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from authsvc.config import Rule
from authsvc.identity import ANONYMOUS, Identity
from authsvc.policy import Policy
from authsvc.policy.templates import compile_pattern
from authsvc.scopes import Scope, parse_scope


def rule(rule_id: str, match: dict[str, Any], allow: list[Any] = (), deny: list[Any] = ()) -> Rule:  # type: ignore[assignment]
    return Rule.model_validate({"id": rule_id, "match": match, "allow": allow, "deny": deny})


def user(name: str, *groups: str) -> Identity:
    return Identity(
        subject=name, kind="human", provider="static", account=name, groups=frozenset(groups)
    )


def granted(policy: Policy, identity: Identity, *scopes: str) -> list[str]:
    decision = policy.decide(identity, [parse_scope(s) for s in scopes])
    return [f"{s.name}:{','.join(s.actions)}" for s in decision.granted]


def test_patterns_are_anchored() -> None:
    pattern = compile_pattern("admin")
    assert pattern.fullmatch("admin")
    assert not pattern.fullmatch("notadmin")
    assert not pattern.fullmatch("admin2")
    assert not pattern.fullmatch("admin/x")


def test_single_star_stays_in_one_segment_and_double_star_crosses() -> None:
    assert compile_pattern("team/*").fullmatch("team/app")
    assert not compile_pattern("team/*").fullmatch("team/a/b")
    assert compile_pattern("team/**").fullmatch("team/a/b")
    assert not compile_pattern("team/**").fullmatch("teams/a")


def test_dot_in_a_pattern_is_literal() -> None:
    assert not compile_pattern("a.b").fullmatch("axb")


def test_nothing_is_allowed_by_default() -> None:
    policy = Policy([])
    assert granted(policy, user("alice"), "repository:team/app:pull") == []
    decision = policy.decide(user("alice"), [parse_scope("repository:team/app:pull")])
    assert decision.outcome == "failure"
    assert decision.denied == [Scope("repository", "team/app", ("pull",))]


def test_grant_is_intersection_of_requested_and_allowed() -> None:
    policy = Policy(
        [
            rule(
                "dev",
                {"groups": ["dev"]},
                allow=[{"repository": "team/**", "actions": ["pull", "push"]}],
            )
        ]
    )
    assert granted(policy, user("a", "dev"), "repository:team/app:pull,push,delete") == [
        "team/app:pull,push"
    ]
    assert granted(policy, user("a", "ops"), "repository:team/app:pull") == []


def test_deny_wins_over_allow_from_any_rule() -> None:
    policy = Policy(
        [
            rule(
                "dev",
                {"groups": ["dev"]},
                allow=[{"repository": "team/**", "actions": ["*"]}],
                deny=[{"repository": "team/prod/*", "actions": ["delete"]}],
            ),
            rule(
                "alice",
                {"account": "alice"},
                allow=[{"repository": "team/prod/app", "actions": ["delete"]}],
            ),
        ]
    )
    decision = policy.decide(
        user("alice", "dev"), [parse_scope("repository:team/prod/app:pull,delete")]
    )
    assert [s.actions for s in decision.granted] == [("pull",)]
    assert decision.scopes[0].actions[1].denied_by == ("dev",)
    assert decision.outcome == "partial"


def test_star_is_granted_only_when_every_action_is() -> None:
    full = Policy([rule("r", {"account": "a"}, allow=[{"repository": "x", "actions": ["*"]}])])
    assert granted(full, user("a"), "repository:x:*") == ["x:*"]
    spelled = Policy(
        [
            rule(
                "r",
                {"account": "a"},
                allow=[{"repository": "x", "actions": ["pull", "push", "delete"]}],
            )
        ]
    )
    assert granted(spelled, user("a"), "repository:x:*") == ["x:*"]
    partial = Policy(
        [rule("r", {"account": "a"}, allow=[{"repository": "x", "actions": ["pull", "push"]}])]
    )
    assert granted(partial, user("a"), "repository:x:*") == []
    denied = Policy(
        [
            rule(
                "r",
                {"account": "a"},
                allow=[{"repository": "x", "actions": ["*"]}],
                deny=[{"repository": "x", "actions": ["delete"]}],
            )
        ]
    )
    assert granted(denied, user("a"), "repository:x:*") == []
    assert granted(denied, user("a"), "repository:x:pull,push") == ["x:pull,push"]


def test_catalog_needs_its_own_entry() -> None:
    policy = Policy(
        [
            rule(
                "admin",
                {"account": "root"},
                allow=[
                    {"repository": "**", "actions": ["*"]},
                    {"registry": "catalog", "actions": ["*"]},
                ],
            ),
            rule("dev", {"account": "dev"}, allow=[{"repository": "**", "actions": ["*"]}]),
        ]
    )
    assert granted(policy, user("root"), "registry:catalog:*") == ["catalog:*"]
    assert granted(policy, user("dev"), "registry:catalog:*") == []


def test_unknown_actions_and_types_are_never_granted() -> None:
    policy = Policy([rule("all", {"account": "a"}, allow=[{"repository": "**", "actions": ["*"]}])])
    assert granted(policy, user("a"), "repository:x:pull,frob") == ["x:pull"]
    assert granted(policy, user("a"), "widget:x:pull") == []


def test_anonymous_match() -> None:
    policy = Policy(
        [
            rule(
                "pub", {"anonymous": True}, allow=[{"repository": "public/**", "actions": ["pull"]}]
            ),
            rule(
                "users",
                {"anonymous": False},
                allow=[{"repository": "shared/*", "actions": ["pull"]}],
            ),
        ]
    )
    assert granted(policy, ANONYMOUS, "repository:public/a:pull") == ["public/a:pull"]
    assert granted(policy, ANONYMOUS, "repository:shared/a:pull") == []
    assert granted(policy, user("bob"), "repository:public/a:pull") == []
    assert granted(policy, user("bob"), "repository:shared/a:pull") == ["shared/a:pull"]


def test_class_restricted_entry() -> None:
    policy = Policy(
        [
            rule(
                "plugins",
                {"account": "a"},
                allow=[{"repository": "vendor/*", "class": "plugin", "actions": ["pull"]}],
            )
        ]
    )
    assert granted(policy, user("a"), "repository(plugin):vendor/x:pull") == ["vendor/x:pull"]
    assert granted(policy, user("a"), "repository:vendor/x:pull") == []


def test_matched_rules_are_reported() -> None:
    policy = Policy(
        [
            rule("one", {"groups": ["g"]}, allow=[{"repository": "a", "actions": ["pull"]}]),
            rule("two", {"account": "zed"}, allow=[{"repository": "a", "actions": ["push"]}]),
        ]
    )
    decision = policy.decide(user("u", "g"), [parse_scope("repository:a:pull")])
    assert decision.matched_rules == ("one",)
    assert decision.scopes[0].actions[0].allowed_by == ("one",)


def test_policy_digest_changes_with_rules() -> None:
    a = Policy([rule("one", {"groups": ["g"]}, allow=[{"repository": "a", "actions": ["pull"]}])])
    b = Policy([rule("one", {"groups": ["g"]}, allow=[{"repository": "a", "actions": ["push"]}])])
    assert a.digest != b.digest
    assert len(a.digest) == 64


# -- properties -------------------------------------------------------------------------

segments = st.sampled_from(
    [
        "team",
        "app",
        "prod",
        "x",
        "*",
        "**",
        "${group}",
        "${account}",
        "${claims.team}",
        "${claims.missing}",
    ]
)
patterns = st.lists(segments, min_size=1, max_size=3).map("/".join).filter(lambda p: "***" not in p)
names = st.lists(
    st.sampled_from(["team", "app", "prod", "x", "y", "u"]), min_size=1, max_size=4
).map("/".join)
action_lists = st.lists(st.sampled_from(["pull", "push", "delete", "*"]), min_size=1, unique=True)
entries = st.builds(lambda p, a: {"repository": p, "actions": a}, patterns, action_lists)
requests = st.lists(
    st.builds(lambda n, a: Scope("repository", n, tuple(a)), names, action_lists), max_size=4
)


def _grants(allow: list[Any], deny: list[Any], scopes: list[Scope]) -> dict[str, set[str]]:
    rules = [rule("r", {"account": "u"}, allow=allow, deny=deny)] if allow or deny else []
    caller = Identity(
        subject="u",
        kind="ci",
        provider="static",
        account="u",
        groups=frozenset({"team", "x"}),
        claims={"team": "prod"},
    )
    decision = Policy(rules).decide(caller, scopes)
    out: dict[str, set[str]] = {}
    for s in decision.granted:
        out.setdefault(s.name, set()).update(s.actions)
    return out


@given(st.lists(entries, max_size=3), st.lists(entries, max_size=3), requests)
def test_grant_is_always_a_subset_of_the_request(
    allow: list[Any], deny: list[Any], scopes: list[Scope]
) -> None:
    asked: dict[str, set[str]] = {}
    for s in scopes:
        asked.setdefault(s.name, set()).update(s.actions)
    for name, actions in _grants(allow, deny, scopes).items():
        assert actions <= asked[name]


@given(st.lists(entries, max_size=3), st.lists(entries, max_size=2), entries, requests)
def test_adding_a_deny_never_widens_a_grant(
    allow: list[Any], deny: list[Any], extra: Any, scopes: list[Scope]
) -> None:
    before = _grants(allow, deny, scopes)
    after = _grants(allow, [*deny, extra], scopes)
    for name, actions in after.items():
        assert actions <= before.get(name, set())


@given(st.lists(entries, max_size=3), st.lists(entries, max_size=2), entries, requests)
def test_adding_an_allow_never_narrows_a_grant(
    allow: list[Any], deny: list[Any], extra: Any, scopes: list[Scope]
) -> None:
    before = _grants(allow, deny, scopes)
    after = _grants([*allow, extra], deny, scopes)
    for name, actions in before.items():
        assert actions <= after.get(name, set())
