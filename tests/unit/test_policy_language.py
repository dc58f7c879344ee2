"""The rule language: claim matchers, placeholders, the attack table, lint."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from authsvc.errors import InvalidScope
from authsvc.identity import ANONYMOUS, Identity
from authsvc.identity.providers import ProviderSchema, builtin_schemas
from authsvc.policy import Policy
from authsvc.policy.lint import lint_rules
from authsvc.policy.schema import Rule
from authsvc.scopes import parse_scope


def rule(match: dict[str, Any], allow: list[Any] | None = None,
         deny: list[Any] | None = None, rule_id: str = "r") -> Rule:
    return Rule.model_validate(
        {"id": rule_id, "match": match, "allow": allow or [], "deny": deny or []})


def ci(claims: dict[str, object], *, groups: tuple[str, ...] = (),
       account: str | None = "runner", provider: str = "github") -> Identity:
    return Identity(subject=account or "", kind="ci", provider=provider, account=account,
                    groups=frozenset(groups), claims=claims)


def grants(policy: Policy, identity: Identity, *scopes: str) -> set[tuple[str, str]]:
    decision = policy.decide(identity, [parse_scope(s) for s in scopes])
    return {(s.name, a) for s in decision.granted for a in s.actions}


PULL_ALL = [{"repository": "**", "actions": ["pull"]}]


def claim_policy(test: object) -> Policy:
    return Policy([rule({"claims": {"c": test}}, PULL_ALL)])


# -- claim matchers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "value", "holds"),
    [
        ("main", "main", True),
        ("main", "mainx", False),
        ({"equals": 42}, 42, True),
        ({"equals": 42}, "42", False),           # a string is not a number
        ({"equals": 1}, True, False),            # a bool is not a number
        ({"equals": True}, 1, False),            # nor a number a bool
        ("main", ["main"], False),               # a list where a string is expected
        ("42", 42, False),                       # a number where a string is expected
        ({"any": ["a", "b"]}, "b", True),
        ({"any": ["a", "b"]}, "c", False),
        ({"any": ["a", "b"]}, ["a"], False),
        ({"not_in": ["a", "b"]}, "c", True),
        ({"not_in": ["a", "b"]}, "a", False),
        ({"not_in": ["a", "b"]}, 3, False),      # wrong type never passes not_in
        ({"glob": "refs/heads/*"}, "refs/heads/main", True),
        ({"glob": "refs/heads/*"}, "refs/heads/a/b", False),  # * never crosses /
        ({"glob": "repo:org/*"}, "repo:org/x:ref", False),    # nor :
        ({"glob": "*.example.com"}, "a@b.example.com", False),  # nor @
        ({"glob": "v1.*"}, "v1x2", False),       # . is literal
        ({"glob": "main"}, "notmain", False),    # anchored
        ({"glob": "ma*"}, 5, False),
        ({"present": True}, "x", True),
        ({"present": True}, None, False),
        ({"present": False}, None, True),
    ],
)
def test_claim_tests_are_typed_and_anchored(test: object, value: object, holds: bool) -> None:
    claims = {} if value is None else {"c": value}
    assert bool(grants(claim_policy(test), ci(claims), "repository:a:pull")) is holds


@pytest.mark.parametrize("test", ["main", {"any": ["main"]}, {"glob": "*"}, {"not_in": ["x"]}])
def test_a_missing_claim_never_matches(test: object) -> None:
    assert grants(claim_policy(test), ci({}), "repository:a:pull") == set()


def test_all_conditions_of_a_match_must_hold() -> None:
    policy = Policy([rule({"kind": "ci", "provider": "github",
                           "claims": {"ref": "refs/heads/main", "repository_id": 7}}, PULL_ALL)])
    good = ci({"ref": "refs/heads/main", "repository_id": 7})
    assert grants(policy, good, "repository:a:pull")
    assert not grants(policy, ci({"ref": "refs/heads/dev", "repository_id": 7}),
                      "repository:a:pull")
    assert not grants(policy, ci({"ref": "refs/heads/main", "repository_id": 7},
                                 provider="gitlab"), "repository:a:pull")
    human = Identity("runner", "human", "github", "runner",
                     claims={"ref": "refs/heads/main", "repository_id": 7})
    assert not grants(policy, human, "repository:a:pull")


@pytest.mark.parametrize(
    ("test", "message"),
    [
        ({"equals": "a", "glob": "b"}, "give exactly one of"),
        ({}, "give exactly one of"),
        (["a", "b"], "a list is not a claim test"),
        ({"any": []}, "any: must not be empty"),
        ({"any": ["a", 1]}, "values must all be of one type"),
        ({"glob": ""}, "glob: must not be empty"),
        ({"equals": 1.5}, "equals"),
        ({"regex": ".*"}, "regex"),
    ],
)
def test_malformed_claim_tests_are_refused(test: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        rule({"claims": {"c": test}}, PULL_ALL)
    assert message in str(info.value)


# -- placeholders ------------------------------------------------------------------------------


def test_account_group_and_claim_placeholders() -> None:
    policy = Policy([
        rule({"kind": "ci"}, [{"repository": "ci/${claims.repository|lower}/**",
                               "actions": ["pull", "push"]},
                              {"repository": "users/${account}/*", "actions": ["pull"]},
                              {"repository": "teams/${group}/**", "actions": ["pull"]}]),
    ])
    who = ci({"repository": "Org/App"}, groups=("red", "blue"))
    assert grants(policy, who, "repository:ci/org/app/cache:push") == {
        ("ci/org/app/cache", "push")}
    assert grants(policy, who, "repository:ci/org/other:push") == set()
    assert grants(policy, who, "repository:users/runner/x:pull") == {("users/runner/x", "pull")}
    assert grants(policy, who, "repository:teams/red/a:pull", "repository:teams/blue/b:pull",
                  "repository:teams/green/c:pull") == {("teams/red/a", "pull"),
                                                       ("teams/blue/b", "pull")}


@pytest.mark.parametrize("group", ["*", "**", "../x", "", "a/*", ".*", "x|y", "(a)"])
def test_a_group_made_of_pattern_characters_never_widens_a_grant(group: str) -> None:
    policy = Policy([rule({"kind": "ci"}, [{"repository": "teams/${group}/**",
                                            "actions": ["pull"]}])])
    who = ci({}, groups=(group,))
    asked = ["repository:teams/a/x:pull", "repository:teams/b/c/d:pull",
             "repository:teams/x/y:pull"]
    assert grants(policy, who, *asked) == set()


@pytest.mark.parametrize("value", ["*", "**", "", "..", "a/**"])
def test_a_claim_made_of_pattern_characters_never_widens_a_grant(value: str) -> None:
    policy = Policy([rule({"kind": "ci"}, [{"repository": "ci/${claims.repository}",
                                            "actions": ["pull"]}])])
    assert grants(policy, ci({"repository": value}), "repository:ci/app:pull",
                  "repository:ci/a/b:pull") == set()


@pytest.mark.parametrize("claims", [{}, {"repository": ["a"]}, {"repository": True},
                                    {"repository": None}, {"repository": {"x": 1}}])
def test_a_missing_or_unusable_value_makes_an_allow_grant_nothing(
    claims: dict[str, object]
) -> None:
    policy = Policy([rule({"kind": "ci"}, [{"repository": "ci/${claims.repository}/**",
                                            "actions": ["pull"]}])])
    assert grants(policy, ci(claims), "repository:ci/x/y:pull") == set()


def test_a_missing_value_in_a_deny_denies_more_not_less() -> None:
    policy = Policy([rule({"kind": "ci"}, [{"repository": "**", "actions": ["pull"]}],
                          [{"repository": "prod/${claims.team}/**", "actions": ["pull"]}])])
    assert grants(policy, ci({"team": "a"}), "repository:prod/b/x:pull") == {("prod/b/x", "pull")}
    assert grants(policy, ci({"team": "a"}), "repository:prod/a/x:pull") == set()
    assert grants(policy, ci({}), "repository:prod/b/x:pull") == set()


def test_numeric_claims_fill_placeholders() -> None:
    policy = Policy([rule({"kind": "ci"}, [{"repository": "p/${claims.project_id}/*",
                                            "actions": ["pull"]}])])
    assert grants(policy, ci({"project_id": 42}), "repository:p/42/app:pull")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("ci/${claims}/x", "unknown placeholder ${claims}"),
        ("ci/${user}/x", "unknown placeholder ${user}"),
        ("ci/${account|upper}", "unknown placeholder modifier 'upper'"),
        ("ci/$account", "'$' outside a ${...} placeholder"),
        ("ci/${claims.a b}", "unknown placeholder"),
        ("CI/${account}", "repository names are lowercase"),
    ],
)
def test_bad_placeholders_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        rule({"kind": "ci"}, [{"repository": pattern, "actions": ["pull"]}])
    assert message in str(info.value)


values = st.text(alphabet="ab*/.-_x", max_size=6)
names = st.lists(st.sampled_from(["ab", "a", "x", "b-a", "a.b", "xx"]), min_size=1,
                 max_size=3).map("/".join)


@given(values, st.lists(names, min_size=1, max_size=4))
def test_placeholder_value_never_grants_more_than_the_same_value_spelled_literally(
    value: str, repositories: list[str]
) -> None:
    """``t/${group}/**`` with group V grants no more than ``t/V/**`` (V read as a pattern)."""
    scopes = [f"repository:t/{name}:pull" for name in repositories]
    by_placeholder = grants(
        Policy([rule({"kind": "ci"}, [{"repository": "t/${group}/**", "actions": ["pull"]}])]),
        ci({}, groups=(value,)), *scopes)
    try:
        literal_rule = rule({"kind": "ci"}, [{"repository": f"t/{value}/**",
                                              "actions": ["pull"]}])
    except ValidationError:
        # The literal spelling is not even a valid pattern: it would grant nothing at all.
        assert by_placeholder == set()
        return
    assert by_placeholder <= grants(Policy([literal_rule]), ci({}, groups=(value,)), *scopes)


# -- the attack table --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["team/../admin", "team//app", "Team/App", "team/app/",
                                  "/team/app", "team/./app", "team/app\n"])
def test_malformed_repository_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidScope) as info:
        parse_scope(f"repository:{name}:pull")
    assert "is not a valid repository name" in info.value.message


def test_unanchored_looking_patterns_are_anchored() -> None:
    policy = Policy([rule({"account": "a"}, [{"repository": "admin", "actions": ["pull"]}])])
    who = Identity("a", "human", "static", "a")
    assert grants(policy, who, "repository:admin:pull") == {("admin", "pull")}
    for other in ("notadmin", "admin2", "admin/x", "x/admin"):
        assert grants(policy, who, f"repository:{other}:pull") == set()


def test_present_false_applies_only_where_the_rest_of_the_match_holds() -> None:
    policy = Policy([rule({"claims": {"sub": {"present": False}}}, PULL_ALL)])
    # present: false holds for a missing claim; such a rule applies to anyone without it
    assert grants(policy, ANONYMOUS, "repository:a:pull") == {("a", "pull")}
    scoped = Policy([rule({"kind": "ci", "claims": {"sub": {"present": False}}}, PULL_ALL)])
    assert grants(scoped, ANONYMOUS, "repository:a:pull") == set()


# -- lint --------------------------------------------------------------------------------------

GITHUB = ProviderSchema("github", frozenset({"ci"}),
                        frozenset({"repository", "repository_owner_id", "ref"}),
                        exact_claims=frozenset({"repository_owner_id"}))


def schemas(*extra: ProviderSchema) -> dict[str, ProviderSchema]:
    out = builtin_schemas()
    out.update({s.name: s for s in extra})
    return out


@pytest.mark.parametrize(
    ("rule_data", "message"),
    [
        ({"match": {"provider": "gitlab"}}, "rules[0] (id 'r').match.provider: unknown "
                                            "provider 'gitlab'"),
        ({"match": {"provider": "static", "kind": "ci"}},
         "rules[0] (id 'r').match.kind: providers static never produce kind ci"),
        ({"match": {"provider": "static", "claims": {"ref": "main"}}},
         "rules[0] (id 'r').match.claims.ref: provider static does not issue claim 'ref'"),
        ({"match": {"provider": "github", "claims": {"workflow": "x"}}},
         "provider github does not issue claim 'workflow'"),
        ({"match": {"provider": "github"},
          "allow": [{"repository": "ci/${claims.job}/*", "actions": ["pull"]}]},
         "rules[0] (id 'r').allow[0].repository: provider github does not issue claim 'job'"),
        ({"match": {"provider": "github", "claims": {"repository_owner_id": {"glob": "1*"}}}},
         "'repository_owner_id' must be matched exactly for github"),
        ({"match": {"claims": {"repository_owner_id": {"glob": "1*"}}}},
         "'repository_owner_id' must be matched exactly for github"),
    ],
)
def test_lint_errors_name_the_rule_and_field(rule_data: dict[str, Any], message: str) -> None:
    data = {"id": "r", "allow": [{"repository": "a", "actions": ["pull"]}], **rule_data}
    report = lint_rules([Rule.model_validate(data)], schemas(GITHUB))
    assert any(message in e for e in report.errors), report.errors


def test_lint_accepts_a_well_formed_claims_rule() -> None:
    good = Rule.model_validate({
        "id": "ci", "match": {"provider": "github", "claims": {"repository_owner_id": "42",
                                                               "ref": {"glob": "refs/tags/*"}}},
        "allow": [{"repository": "ci/${claims.repository}/*", "actions": ["push"]}]})
    report = lint_rules([good], schemas(GITHUB))
    assert report.errors == []
    assert report.warnings == []


def test_lint_warns_on_everything_everywhere_and_on_shadowed_rules() -> None:
    rules = [
        Rule.model_validate({"id": "god", "match": {"account": "root"},
                             "allow": [{"repository": "**", "actions": ["*"]}]}),
        Rule.model_validate({"id": "dev", "match": {"groups": ["dev"]},
                             "allow": [{"repository": "team/*", "actions": ["pull"]}]}),
        Rule.model_validate({"id": "dev-deny", "match": {"groups": ["dev"]},
                             "deny": [{"repository": "team/**", "actions": ["pull", "push"]}]}),
        Rule.model_validate({"id": "ok", "match": {"groups": ["ops"]},
                             "allow": [{"repository": "ops/**", "actions": ["pull"]}],
                             "deny": [{"repository": "ops/*", "actions": ["pull"]}]}),
    ]
    warnings = lint_rules(rules, builtin_schemas()).warnings
    assert warnings == [
        "rules[0] (id 'god').allow[0]: grants every action on every repository",
        "rules[1] (id 'dev'): every allow entry is taken back by a deny under the same "
        "match; the rule grants nothing",
    ]
