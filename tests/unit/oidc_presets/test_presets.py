"""The preset tables, issuer resolution, rule lint and implicit conditions."""

from __future__ import annotations

import re
from typing import Any

import pytest

from authsvc.identity import Identity
from authsvc.identity.oidc.presets import (
    PRESETS,
    Preset,
    flatten_claims,
    resolve_issuer,
    schema_for,
)
from authsvc.identity.oidc.rules import rule_errors, scope_errors, with_implicit_conditions
from authsvc.identity.oidc.settings import PRESET_NAMES, OidcIssuerSettings
from authsvc.identity.providers import STATIC_SCHEMA, ProviderSchema
from authsvc.policy import Policy
from authsvc.policy.lint import lint_rules
from authsvc.policy.schema import ClaimTest, Rule
from authsvc.scopes import parse_scope

ORG = "8f4cb5c2-6a0b-4d7e-9d8e-1f2a3b4c5d6e"
PROJECT = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
GITHUB = PRESETS["github-actions"]
PUSH: dict[str, Any] = {"allow": [{"repository": "team/**", "actions": ["pull", "push"]}]}


def issuer(preset: str, url: str | None = None, **extra: Any) -> OidcIssuerSettings:
    return OidcIssuerSettings.model_validate(
        {"preset": preset, "issuer": url, "audience": "registry.example.com", **extra})


DENY_PROD: dict[str, Any] = {"deny": [{"repository": "team/prod/**", "actions": ["push"]}]}


def rule(match: dict[str, Any], **entries: Any) -> Rule:
    return Rule.model_validate({"id": "r", "match": match, **(entries or PUSH)})


def gh_rule(claims: dict[str, Any]) -> Rule:
    return rule({"provider": "gh", "claims": claims})


def granted(policy: Policy, identity: Identity) -> list[str]:
    decision = policy.decide(identity, [parse_scope("repository:team/app:pull,push")])
    return [f"{s.name}:{','.join(s.actions)}" for s in decision.granted]


# --- the tables ---------------------------------------------------------------------

def test_there_is_one_preset_per_configurable_name() -> None:
    assert set(PRESETS) == set(PRESET_NAMES)
    assert all(name == preset.name for name, preset in PRESETS.items())


@pytest.mark.parametrize("name", [n for n in PRESET_NAMES if n != "generic"])
def test_every_shared_issuer_requires_pins(name: str) -> None:
    preset = PRESETS[name]
    assert preset.required_pins, "an issuer with no required claims is an error"
    for pin in preset.required_pins:
        assert pin and pin <= preset.claims
    assert preset.exact_claims <= preset.claims
    assert set(preset.implicit_conditions) <= preset.claims


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_table_names_platform_claims_beyond_the_registered_ones(name: str) -> None:
    registered = {"iss", "sub", "aud", "jti", "exp", "iat", "nbf"}
    assert PRESETS[name].claims >= registered
    if name != "circleci":  # its own claims are named oidc.circleci.com/...
        assert PRESETS[name].claims - registered


def test_a_preset_without_pins_is_refused_unless_it_is_for_humans() -> None:
    with pytest.raises(ValueError, match="needs required pins"):
        Preset(name="x", kind="ci", default_issuer=None, issuer_ok=bool, issuer_forms="",
               claim_types={"sub": "string"}, exact_claims=frozenset(), required_pins=(),
               require_jti_default=True)


def test_a_preset_naming_a_claim_it_does_not_issue_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\['owner_id'\] are not issued"):
        Preset(name="x", kind="ci", default_issuer=None, issuer_ok=bool, issuer_forms="",
               claim_types={"sub": "string"}, exact_claims=frozenset({"owner_id"}),
               required_pins=(frozenset({"sub"}),), require_jti_default=True)


def test_jti_defaults() -> None:
    defaults = {name: p.require_jti_default for name, p in PRESETS.items()}
    assert defaults == {
        "github-actions": True, "gitlab": True, "kubernetes": False, "google": False,
        "azure": False, "circleci": False, "buildkite": True, "generic": False,
    }


def test_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        GITHUB.implicit_conditions["x"] = ClaimTest(present=True)  # type: ignore[index]
    with pytest.raises(TypeError):
        PRESETS["mine"] = GITHUB  # type: ignore[index]


# --- issuers ------------------------------------------------------------------------

@pytest.mark.parametrize(("preset", "url"), [
    ("github-actions", "https://token.actions.githubusercontent.com"),
    ("gitlab", "https://gitlab.com"),
    ("google", "https://accounts.google.com"),
    ("buildkite", "https://agent.buildkite.com"),
])
def test_platform_issuers_default(preset: str, url: str) -> None:
    assert resolve_issuer(issuer(preset)) == url


@pytest.mark.parametrize("preset", ["kubernetes", "azure", "circleci", "generic"])
def test_issuer_is_required_where_the_platform_has_none(preset: str) -> None:
    with pytest.raises(ValueError, match=f"^required for preset {preset} "):
        resolve_issuer(issuer(preset))


@pytest.mark.parametrize(("preset", "url"), [
    ("github-actions", "https://token.actions.githubusercontent.com/octocat-inc"),
    ("github-actions", "https://github.example.com/_services/token"),
    ("github-actions", "https://github.example.com:8443/_services/token"),
    ("gitlab", "https://gitlab.example.com"),
    ("gitlab", "https://example.com/gitlab"),
    ("kubernetes", "https://oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF"),
    ("azure", f"https://login.microsoftonline.com/{ORG}/v2.0"),
    ("azure", f"https://sts.windows.net/{ORG}/"),
    ("circleci", f"https://oidc.circleci.com/org/{ORG}"),
    ("generic", "https://sso.example.com/realms/main"),
    ("generic", "http://127.0.0.1:5556/dex"),
    # a local stand-in for any platform, on loopback only
    ("github-actions", "http://127.0.0.1:5556"),
    ("gitlab", "http://localhost:8080/gitlab"),
])
def test_accepted_issuer_forms(preset: str, url: str) -> None:
    assert resolve_issuer(issuer(preset, url)) == url


@pytest.mark.parametrize(("preset", "url", "reason"), [
    ("github-actions", "https://evil.example.com", "expected https://token.actions"),
    ("github-actions", "https://token.actions.githubusercontent.com/", "expected"),
    ("github-actions", "https://token.actions.githubusercontent.com/Octo_Inc", "expected"),
    ("github-actions", "https://token.actions.githubusercontent.com/a/b", "expected"),
    ("gitlab", "https://gitlab.example.com/", "without a trailing slash"),
    ("google", "https://accounts.google.com/", "expected https://accounts.google.com"),
    ("azure", "https://login.microsoftonline.com/common/v2.0", "never common"),
    ("azure", f"https://login.example.com/{ORG}/v2.0", "tenant's GUID"),
    ("circleci", "https://oidc.circleci.com/org/my-org", "<organization-id>"),
    ("buildkite", "https://buildkite.example.com", "https://agent.buildkite.com"),
])
def test_refused_issuers_say_why(preset: str, url: str, reason: str) -> None:
    expected = rf"^{re.escape(repr(url))} is not a {preset} issuer:"
    with pytest.raises(ValueError, match=expected) as exc:
        resolve_issuer(issuer(preset, url))
    assert reason in str(exc.value)


# --- schemas ------------------------------------------------------------------------

def test_schema_takes_the_preset_claims_and_the_configured_ones() -> None:
    schema = schema_for("gh", issuer("github-actions", subject_claim="job_workflow_ref"))
    assert schema.name == "gh"
    assert schema.kinds == {"ci"}
    assert schema.claims == GITHUB.claims
    assert {"repository_id", "repository_owner_id"} <= schema.exact_claims
    assert schema.issues("event_name") and not schema.issues("repo_property_team")


def test_schema_adds_mapped_claims_and_a_configured_kind() -> None:
    schema = schema_for("sso", issuer("generic", "https://sso.example.com", kind="robot",
                                      groups_claim="roles", username_claim="upn"))
    assert schema.kinds == {"robot"}
    assert schema.claims is not None
    assert {"roles", "upn", "preferred_username", "groups"} <= schema.claims


# --- rule lint ----------------------------------------------------------------------

def test_github_rule_pinning_only_the_repository_name_is_refused() -> None:
    errors = rule_errors(gh_rule({"repository": "acme/app"}), 3, "gh", GITHUB)
    assert errors == [
        "rules[3] (id 'r').match.claims: rules on github-actions (provider 'gh') must pin "
        "repository_id or repository_owner_id with equals or any"
    ]


def test_github_rule_globbing_an_id_is_refused_twice() -> None:
    bad = gh_rule({"repository_owner_id": {"glob": "12*"}})
    assert len(rule_errors(bad, 0, "gh", GITHUB)) == 1  # a glob is no pin
    report = lint_rules([bad], {"gh": schema_for("gh", issuer("github-actions"))})
    assert report.errors == [
        "rules[0] (id 'r').match.claims.repository_owner_id: 'repository_owner_id' must be "
        "matched exactly for gh (use equals or any, never glob)"
    ]


@pytest.mark.parametrize("pin", [
    {"repository_owner_id": "65"},
    {"repository_id": {"any": ["74", "75"]}},
    {"repository_owner_id": "65", "ref": "refs/heads/main", "event_name": "push"},
])
def test_github_rule_pinning_an_id_is_accepted(pin: dict[str, Any]) -> None:
    assert rule_errors(gh_rule(pin), 0, "gh", GITHUB) == []


def test_an_unquoted_id_is_refused_because_it_would_never_match() -> None:
    errors = rule_errors(gh_rule({"repository_owner_id": 65}), 0, "gh", GITHUB)
    assert errors == [
        "rules[0] (id 'r').match.claims.repository_owner_id: 'repository_owner_id' is a "
        "string in github-actions tokens, so a test with an integer value never holds "
        "(quote the value)"
    ]


def test_gitlab_ref_without_ref_type_is_refused() -> None:
    gitlab = PRESETS["gitlab"]
    loose = rule({"provider": "gl", "claims": {"project_id": "20", "ref": "main"}})
    errors = rule_errors(loose, 1, "gl", gitlab)
    assert len(errors) == 1
    assert errors[0].startswith(
        "rules[1] (id 'r').match.claims.ref: rules on gitlab (provider 'gl') that test 'ref' "
        "must also test ref_path or ref_type with equals or any")
    assert "tag named like a protected branch" in errors[0]
    for partner in ({"ref_type": "branch"}, {"ref_path": "refs/heads/main"}):
        tight = rule({"provider": "gl",
                      "claims": {"project_id": "20", "ref": "main", **partner}})
        assert rule_errors(tight, 1, "gl", gitlab) == []


def test_gitlab_rule_must_pin_project_or_namespace_not_the_running_project() -> None:
    gitlab = PRESETS["gitlab"]
    fork_safe = rule({"provider": "gl", "claims": {"namespace_id": "72"}})
    assert rule_errors(fork_safe, 0, "gl", gitlab) == []
    by_job = rule({"provider": "gl", "claims": {"job_project_id": "20"}})
    assert "must pin namespace_id or project_id" in rule_errors(by_job, 0, "gl", gitlab)[0]


def test_azure_needs_the_tenant_and_the_principal() -> None:
    azure = PRESETS["azure"]
    tenant_only = rule({"provider": "az", "claims": {"tid": ORG}})
    assert rule_errors(tenant_only, 0, "az", azure) == [
        "rules[0] (id 'r').match.claims: rules on azure (provider 'az') must pin oid or sub "
        "with equals or any"
    ]
    both = rule({"provider": "az", "claims": {"tid": ORG, "oid": PROJECT}})
    assert rule_errors(both, 0, "az", azure) == []


def test_circleci_project_is_pinned_by_a_glob_naming_org_and_project() -> None:
    circleci = PRESETS["circleci"]
    project = rule({"provider": "cc",
                    "claims": {"sub": {"glob": f"org/{ORG}/project/{PROJECT}/user/*"}}})
    assert rule_errors(project, 0, "cc", circleci) == []
    anything = rule({"provider": "cc", "claims": {"sub": {"glob": "org/*/project/*/user/*"}}})
    [error] = rule_errors(anything, 0, "cc", circleci)
    assert "must pin sub with equals or any (or sub with a glob of the form" in error


def test_a_deny_only_rule_needs_no_pins_and_keeps_its_breadth() -> None:
    deny_all = rule({"provider": "gh"}, **DENY_PROD)
    assert rule_errors(deny_all, 0, "gh", GITHUB) == []
    assert with_implicit_conditions(deny_all, {"gh": GITHUB}) is deny_all


def test_a_rule_that_allows_and_denies_cannot_rely_on_the_implicit_condition() -> None:
    both = rule({"provider": "gh", "claims": {"repository_owner_id": "65"}}, **PUSH, **DENY_PROD)
    assert rule_errors(both, 0, "gh", GITHUB) == [
        "rules[0] (id 'r').match.claims.event_name: rules on github-actions (provider 'gh') "
        "that deny must be split from their allow entries (or test 'event_name' themselves): "
        "the implicit condition would narrow the deny"
    ]
    explicit = rule({"provider": "gh", "claims": {
        "repository_owner_id": "65", "event_name": {"not_in": ["pull_request_target"]}}},
        **PUSH, **DENY_PROD)
    assert rule_errors(explicit, 0, "gh", GITHUB) == []


@pytest.mark.parametrize(("event_name", "refused"), [
    ({"not_in": ["pull_request"]}, True),
    ({"glob": "pull_request*"}, True),
    ({"present": True}, True),
    ({"not_in": ["pull_request", "pull_request_target"]}, False),
    ({"any": ["push", "pull_request_target"]}, False),
    ("push", False),
])
def test_a_rule_testing_event_name_admits_pull_request_target_only_by_name(
    event_name: Any, refused: bool
) -> None:
    errors = rule_errors(gh_rule({"repository_owner_id": "65", "event_name": event_name}),
                         0, "gh", GITHUB)
    assert bool(errors) == refused
    if refused:
        assert errors[0].startswith("rules[0] (id 'r').match.claims.event_name: this test "
                                    "lets 'pull_request_target' through")


# --- scope --------------------------------------------------------------------------

def _scope_fixture() -> tuple[dict[str, ProviderSchema], dict[str, Preset]]:
    settings = {"gh": issuer("github-actions"), "gh2": issuer("github-actions"),
                "gl": issuer("gitlab"), "sso": issuer("generic", "https://sso.example.com")}
    schemas = {name: schema_for(name, s) for name, s in settings.items()}
    schemas["static"] = STATIC_SCHEMA
    return schemas, {name: PRESETS[s.preset] for name, s in settings.items()}


@pytest.mark.parametrize(("match", "refused"), [
    ({"kind": ["ci"]}, True),
    ({"claims": {"repository_owner_id": "65"}}, True),
    ({"anonymous": False}, True),
    ({"kind": ["human"]}, False),
    ({"groups": ["dev"]}, False),
    ({"provider": ["gh", "gh2"], "claims": {"repository_owner_id": "65"}}, False),
    ({"provider": ["gh", "static"], "claims": {"repository_owner_id": "65"}}, True),
    ({"provider": ["gh", "gl"], "claims": {"repository_owner_id": "65"}}, True),
    ({"provider": ["gl", "sso"]}, False),
    ({"provider": ["gh", "static"], "deny": True}, False),
    ({"kind": ["ci"], "deny": True}, False),
])
def test_rules_that_would_escape_pins_or_implicit_conditions(
    match: dict[str, Any], refused: bool
) -> None:
    schemas, presets = _scope_fixture()
    entries = DENY_PROD if match.pop("deny", False) else PUSH
    assert bool(scope_errors(rule(match, **entries), 0, schemas, presets)) == refused


def test_an_unscoped_rule_names_the_providers_it_exposes() -> None:
    schemas, presets = _scope_fixture()
    assert scope_errors(rule({"kind": "ci"}), 2, schemas, presets) == [
        "rules[2] (id 'r').match: names no provider, so it matches tokens from "
        "'gh' (github-actions), 'gh2' (github-actions), 'gl' (gitlab) without the pins "
        "their presets require; name the providers in match.provider"
    ]


# --- implicit conditions ------------------------------------------------------------

def test_github_rules_gain_the_pull_request_target_exclusion() -> None:
    original = gh_rule({"repository_owner_id": "65"})
    augmented = with_implicit_conditions(original, {"gh": GITHUB})
    assert augmented.match.claims == {
        "repository_owner_id": ClaimTest(equals="65"),
        "event_name": ClaimTest(not_in=("pull_request_target",)),
    }
    assert original.match.claims == {"repository_owner_id": ClaimTest(equals="65")}
    # Still a valid rule, and one that survives a round trip through the schema.
    assert Rule.model_validate(augmented.model_dump(by_alias=True)) == augmented


def test_a_rule_that_tests_the_claim_itself_decides() -> None:
    own = gh_rule({"repository_owner_id": "65", "event_name": {"any": ["pull_request_target"]}})
    assert with_implicit_conditions(own, {"gh": GITHUB}) is own


@pytest.mark.parametrize("match", [
    {"provider": ["gh", "static"], "claims": {"repository_owner_id": "65"}},
    {"provider": ["gl"], "claims": {"project_id": "20"}},
    {"kind": ["ci"]},
])
def test_other_rules_are_left_alone(match: dict[str, Any]) -> None:
    presets = {"gh": GITHUB, "gl": PRESETS["gitlab"]}
    original = rule(match)
    assert with_implicit_conditions(original, presets) is original


def test_engine_refuses_pull_request_target_on_an_augmented_rule() -> None:
    policy = Policy([with_implicit_conditions(gh_rule({"repository_owner_id": "65"}),
                                              {"gh": GITHUB})])

    def job(event: str) -> Identity:
        return Identity("repo:acme/app:ref:refs/heads/main", kind="ci", provider="gh",
                        account=None, claims={"repository_owner_id": "65", "event_name": event})

    assert granted(policy, job("push")) == ["team/app:pull,push"]
    assert granted(policy, job("pull_request_target")) == []
    assert granted(policy, Identity("x", kind="ci", provider="gh", account=None,
                                    claims={"repository_owner_id": "65"})) == []


# --- nested claims ------------------------------------------------------------------

def test_kubernetes_claims_are_reached_by_dotted_path() -> None:
    subject = "system:serviceaccount:ci:builder"
    token: dict[str, object] = {
        "sub": subject,
        "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "builder", "uid": "u1"},
                          "pod": {"name": "p", "uid": "u2"}, "warnafter": 1700000000},
    }
    flat = flatten_claims(token, PRESETS["kubernetes"])
    assert flat["kubernetes.io.namespace"] == "ci"
    assert flat["kubernetes.io.serviceaccount.uid"] == "u1"
    assert flat["kubernetes.io.warnafter"] == 1700000000
    assert flat["kubernetes.io"] == token["kubernetes.io"]  # kept, but no rule can test it
    assert flatten_claims(token, GITHUB) == token  # only a preset's own nested objects
    assert set(flat) - {"kubernetes.io"} <= PRESETS["kubernetes"].claims

    k8s = rule({"provider": "k8s", "claims": {"kubernetes.io.namespace": "ci"}})
    assert rule_errors(k8s, 0, "k8s", PRESETS["kubernetes"]) == []
    identity = Identity(subject, kind="ci", provider="k8s", account=None, claims=flat)
    assert granted(Policy([k8s]), identity) == ["team/app:pull,push"]
