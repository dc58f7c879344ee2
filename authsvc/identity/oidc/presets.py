"""What each platform's ID tokens carry, and what a rule on them must pin.

One declarative table per platform: the claims it issues (with their JSON types), the
claims that must never be globbed, the pins every rule must make, the conditions the
preset adds to every rule, and the issuer URLs it accepts. Sources are the platforms'
own claim references (GitHub "OpenID Connect reference", GitLab "ID token
authentication", Kubernetes bound service account tokens, Google ID tokens, Microsoft
Entra access token claims, CircleCI "Using OpenID Connect tokens in jobs", Buildkite
"buildkite-agent oidc").

Only ``generic`` (an organisation's own SSO) may have no required pins: on a shared
platform issuer, a rule that pins no tenant would let every tenant's jobs in.

Nested claims (``kubernetes.io``, ``google``) are addressed by their dotted path, e.g.
``kubernetes.io.serviceaccount.name``; ``flatten_claims`` produces those names from a
verified token. Claims outside a table (GitHub's ``repo_property_*``, CircleCI's
``oidc.circleci.com/...``, whose names the rule language cannot spell) stay in the
identity but no rule may test them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal
from urllib.parse import urlsplit

from authsvc.identity.oidc.settings import OidcIssuerSettings, is_loopback_url
from authsvc.identity.providers import ProviderSchema
from authsvc.policy.schema import ClaimTest

__all__ = [
    "PRESETS",
    "ClaimType",
    "Preset",
    "flatten_claims",
    "resolve_issuer",
    "schema_for",
]

#: The JSON type of a claim's value; "mixed" is not checked (``aud``: string or list).
ClaimType = Literal["string", "integer", "boolean", "list", "object", "mixed"]
_PINNING = ("equals", "any")
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass(frozen=True, eq=False)
class Preset:
    name: str
    kind: Literal["human", "robot", "ci"]
    default_issuer: str | None
    #: Whether a configured issuer URL is one this platform issues tokens under.
    issuer_ok: Callable[[str], bool]
    #: The accepted issuer forms, for error messages.
    issuer_forms: str
    claim_types: Mapping[str, ClaimType]
    #: Security-critical ids: matched with equals or any, never glob.
    exact_claims: frozenset[str]
    #: A rule on this preset tests (equals or any) at least one claim of each set.
    required_pins: tuple[frozenset[str], ...]
    require_jti_default: bool
    #: Claim -> (the form a glob on it must have to count as a pin, that form in words).
    glob_pins: Mapping[str, tuple[re.Pattern[str], str]] = field(default_factory=dict)
    #: Claim -> (claims one of which a rule testing it must also pin, why).
    companions: Mapping[str, tuple[frozenset[str], str]] = field(default_factory=dict)
    #: Added to every rule naming only this preset's providers, unless it tests the claim.
    implicit_conditions: Mapping[str, ClaimTest] = field(default_factory=dict)
    #: Top-level object claims whose members are reached by dotted path.
    nested_claims: frozenset[str] = frozenset()
    subject_claim_default: str = "sub"
    username_claim_default: str | None = None
    groups_claim_default: str | None = None

    def __post_init__(self) -> None:
        for attr in ("claim_types", "glob_pins", "companions", "implicit_conditions"):
            object.__setattr__(self, attr, MappingProxyType(dict(getattr(self, attr))))
        if self.kind != "human" and not self.required_pins:
            raise ValueError(f"preset {self.name}: a shared issuer needs required pins")
        named = (
            set(self.exact_claims).union(*self.required_pins, self.glob_pins,
                                         self.implicit_conditions, self.companions)
            | {c for partners, _ in self.companions.values() for c in partners}
        )
        if unknown := named - self.claims:
            raise ValueError(f"preset {self.name}: claims {sorted(unknown)} are not issued")

    @property
    def claims(self) -> frozenset[str]:
        return frozenset(self.claim_types)


def _table(*, ints: str = "", bools: str = "", lists: str = "", objects: str = "",
           strings: str = "") -> dict[str, ClaimType]:
    """Claim types: registered JWT claims plus the platform's, strings unless named."""
    table: dict[str, ClaimType] = {
        "iss": "string", "sub": "string", "aud": "mixed", "jti": "string",
        "exp": "integer", "iat": "integer", "nbf": "integer",
    }
    groups: tuple[tuple[ClaimType, str], ...] = (
        ("string", strings), ("integer", ints), ("boolean", bools), ("list", lists),
        ("object", objects),
    )
    for kind, names in groups:
        table.update(dict.fromkeys(names.split(), kind))
    return table


# --- issuer forms -------------------------------------------------------------------

_GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
_GHE_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?")
_AZURE_ISSUER = re.compile(
    rf"https://(?:login\.microsoftonline\.(?:com|us)|login\.chinacloudapi\.cn"
    rf"|login\.partner\.microsoftonline\.cn)/{_UUID}/v2\.0"
    rf"|https://sts\.(?:windows\.net|chinacloudapi\.cn)/{_UUID}/"
)
_CIRCLECI_ISSUER = re.compile(rf"https://oidc\.circleci\.com/org/{_UUID}")


def _plain_https(url: str) -> bool:
    parts = urlsplit(url)
    return (parts.scheme == "https" and bool(parts.hostname) and not parts.query
            and not parts.fragment and parts.username is None and parts.password is None)


def _github_issuer_ok(url: str) -> bool:
    if url == _GITHUB_ISSUER:
        return True
    if not _plain_https(url):
        return False
    parts = urlsplit(url)
    if parts.netloc == "token.actions.githubusercontent.com":  # GHE Cloud custom issuer
        return parts.path[:1] == "/" and _GHE_SLUG.fullmatch(parts.path[1:]) is not None
    return parts.path == "/_services/token"  # GitHub Enterprise Server


def _generic_issuer_ok(url: str) -> bool:
    return _plain_https(url) or (url.startswith("http://") and is_loopback_url(url))


# --- the tables -----------------------------------------------------------------------

_GITHUB = Preset(
    name="github-actions",
    kind="ci",
    default_issuer=_GITHUB_ISSUER,
    issuer_ok=_github_issuer_ok,
    issuer_forms=f"{_GITHUB_ISSUER}, {_GITHUB_ISSUER}/<enterprise-slug> or "
    "https://<ghes-host>/_services/token",
    # Every custom claim is a string, ids and run numbers included ("repository_id": "74").
    claim_types=_table(strings="""actor actor_id base_ref check_run_id enterprise
        enterprise_id environment environment_node_id event_name head_ref job_workflow_ref
        job_workflow_sha ref ref_protected ref_type repository repository_id repository_owner
        repository_owner_id repository_visibility run_attempt run_id run_number
        runner_environment sha workflow workflow_ref workflow_sha"""),
    # Names can be renamed and then re-registered by someone else; ids cannot.
    exact_claims=frozenset({"repository_id", "repository_owner_id", "actor_id",
                            "enterprise_id", "check_run_id"}),
    required_pins=(frozenset({"repository_owner_id", "repository_id"}),),
    require_jti_default=True,
    # pull_request_target runs the base repository's workflow, with its id-token
    # permission, on behalf of a fork's pull request.
    implicit_conditions={"event_name": ClaimTest(not_in=("pull_request_target",))},
)

_GITLAB = Preset(
    name="gitlab",
    kind="ci",
    default_issuer="https://gitlab.com",
    issuer_ok=lambda url: _plain_https(url) and not url.endswith("/"),
    issuer_forms="https://gitlab.com or a self-managed instance's https:// URL, "
    "without a trailing slash",
    claim_types=_table(
        strings="""namespace_id namespace_path project_id project_path job_project_id
            job_project_path job_namespace_id job_namespace_path user_id user_login
            user_email user_access_level pipeline_id pipeline_source job_id job_source ref
            ref_type ref_path ref_protected environment environment_protected
            deployment_tier environment_action runner_environment sha ci_config_ref_uri
            ci_config_sha project_visibility""",
        ints="runner_id", lists="groups_direct user_identities", objects="job_config",
    ),
    exact_claims=frozenset({"project_id", "namespace_id", "job_project_id",
                            "job_namespace_id", "user_id"}),
    # project_id/namespace_id name the *source* project of a fork's merge request
    # pipeline; job_project_id names the project it runs in, so it is no pin.
    required_pins=(frozenset({"project_id", "namespace_id"}),),
    require_jti_default=True,
    companions={"ref": (frozenset({"ref_type", "ref_path"}),
                        "'ref' is a bare name, and a tag named like a protected branch "
                        "would otherwise pass")},
)

_KUBERNETES = Preset(
    name="kubernetes",
    kind="ci",
    default_issuer=None,
    issuer_ok=_plain_https,
    issuer_forms="the cluster's --service-account-issuer, an https:// URL",
    claim_types=_table(
        strings="""kubernetes.io.namespace kubernetes.io.serviceaccount.name
            kubernetes.io.serviceaccount.uid kubernetes.io.pod.name kubernetes.io.pod.uid
            kubernetes.io.secret.name kubernetes.io.secret.uid kubernetes.io.node.name
            kubernetes.io.node.uid""",
        ints="kubernetes.io.warnafter",
    ),
    exact_claims=frozenset({"sub", "kubernetes.io.serviceaccount.uid",
                            "kubernetes.io.pod.uid", "kubernetes.io.secret.uid",
                            "kubernetes.io.node.uid"}),
    required_pins=(frozenset({"sub", "kubernetes.io.namespace",
                              "kubernetes.io.serviceaccount.uid"}),),
    # jti only since 1.29 (ServiceAccountTokenJTI), and the kubelet presents one
    # projected token many times until it rotates it.
    require_jti_default=False,
    nested_claims=frozenset({"kubernetes.io"}),
)

_GOOGLE = Preset(
    name="google",
    kind="robot",
    default_issuer="https://accounts.google.com",
    issuer_ok=lambda url: url == "https://accounts.google.com",
    issuer_forms="https://accounts.google.com",
    claim_types=_table(
        strings="""azp email hd google.compute_engine.project_id
            google.compute_engine.zone google.compute_engine.instance_id
            google.compute_engine.instance_name""",
        ints="""google.compute_engine.project_number
            google.compute_engine.instance_creation_timestamp""",
        bools="email_verified", lists="google.compute_engine.license_id",
    ),
    # sub is the account's unique id; a deleted service account's email can be reused.
    exact_claims=frozenset({"sub", "azp", "google.compute_engine.project_number",
                            "google.compute_engine.instance_id"}),
    required_pins=(frozenset({"sub", "email"}),),
    require_jti_default=False,  # Google ID tokens carry no jti
    nested_claims=frozenset({"google"}),
)

_AZURE = Preset(
    name="azure",
    kind="robot",
    default_issuer=None,
    issuer_ok=lambda url: _AZURE_ISSUER.fullmatch(url) is not None,
    issuer_forms="https://login.microsoftonline.com/<tenant-id>/v2.0 or "
    "https://sts.windows.net/<tenant-id>/ (or a national cloud's host), with the "
    "tenant's GUID: never common, organizations or consumers",
    claim_types=_table(
        strings="""tid oid appid azp appidacr azpacr idp idtyp aio rh uti ver
            xms_mirid""",
        lists="roles",
    ),
    exact_claims=frozenset({"tid", "oid", "sub", "appid", "azp"}),
    required_pins=(frozenset({"tid"}), frozenset({"oid", "sub"})),
    require_jti_default=False,  # Entra tokens carry uti, not jti
)

_CIRCLECI = Preset(
    name="circleci",
    kind="ci",
    default_issuer=None,
    issuer_ok=lambda url: _CIRCLECI_ISSUER.fullmatch(url) is not None,
    issuer_forms="https://oidc.circleci.com/org/<organization-id>",
    # The oidc.circleci.com/* claims (project-id, vcs-origin, vcs-ref, context-ids, ...)
    # contain '/', which claim names in rules cannot.
    claim_types=_table(),
    exact_claims=frozenset(),
    # sub is org/<org>/project/<project>/user/<user>[/vcs-origin/.../vcs-ref/...]; a
    # glob's '*' never crosses '/', so a glob naming org and project pins the project.
    required_pins=(frozenset({"sub"}),),
    glob_pins={"sub": (re.compile(rf"org/{_UUID}/project/{_UUID}/.+"),
                       "org/<org-id>/project/<project-id>/...")},
    require_jti_default=False,  # not documented as present
)

_BUILDKITE = Preset(
    name="buildkite",
    kind="ci",
    default_issuer="https://agent.buildkite.com",
    issuer_ok=lambda url: url == "https://agent.buildkite.com",
    issuer_forms="https://agent.buildkite.com",
    claim_types=_table(
        strings="""organization_slug pipeline_slug build_branch build_tag build_commit
            step_key job_id agent_id build_source runner_environment organization_id
            pipeline_id cluster_id cluster_name queue_id queue_key""",
        ints="build_number",
    ),
    exact_claims=frozenset({"organization_id", "pipeline_id", "job_id", "agent_id",
                            "cluster_id", "queue_id"}),
    # Slugs are renamable; the ids are optional claims the job requests with
    # `buildkite-agent oidc request-token --claim organization_id,pipeline_id`.
    required_pins=(frozenset({"organization_id", "pipeline_id"}),),
    require_jti_default=True,
)

_GENERIC = Preset(
    name="generic",
    kind="human",
    default_issuer=None,
    issuer_ok=_generic_issuer_ok,
    issuer_forms="an https:// URL (http:// only on a loopback address)",
    # OpenID Connect Core 1.0 sections 2 and 5.1, plus the common "groups".
    claim_types=_table(
        strings="""azp nonce acr sid name given_name family_name middle_name nickname
            preferred_username profile picture website email gender birthdate zoneinfo
            locale phone_number""",
        ints="auth_time updated_at", bools="email_verified phone_number_verified",
        lists="amr groups", objects="address",
    ),
    exact_claims=frozenset(),
    required_pins=(),
    require_jti_default=False,
    username_claim_default="preferred_username",
    groups_claim_default="groups",
)

PRESETS: Mapping[str, Preset] = MappingProxyType({
    p.name: p
    for p in (_GITHUB, _GITLAB, _KUBERNETES, _GOOGLE, _AZURE, _CIRCLECI, _BUILDKITE, _GENERIC)
})


# --- configuration ------------------------------------------------------------------

def resolve_issuer(settings: OidcIssuerSettings) -> str:
    """The issuer URL to verify tokens against; ``ValueError`` saying why if none."""
    preset = PRESETS[settings.preset]
    url = settings.issuer if settings.issuer is not None else preset.default_issuer
    if url is None:
        raise ValueError(f"required for preset {preset.name} ({preset.issuer_forms})")
    if url.startswith("http://") and is_loopback_url(url):
        # A local stand-in for the platform (tests, air-gapped rehearsals): reachable from
        # this host only, so it can vouch for no one else.
        return url
    if not preset.issuer_ok(url):
        why = "" if urlsplit(url).scheme == "https" or preset.name == "generic" else (
            "platform issuers are https:// only; ")
        raise ValueError(f"{url!r} is not a {preset.name} issuer: {why}expected "
                         f"{preset.issuer_forms}")
    return url


def schema_for(name: str, settings: OidcIssuerSettings) -> ProviderSchema:
    preset = PRESETS[settings.preset]
    mapped = (
        settings.subject_claim or preset.subject_claim_default,
        settings.username_claim or preset.username_claim_default,
        settings.groups_claim or preset.groups_claim_default,
    )
    return ProviderSchema(
        name=name,
        kinds=frozenset({settings.kind or preset.kind}),
        claims=preset.claims | {c for c in mapped if c},
        exact_claims=preset.exact_claims,
    )


def flatten_claims(claims: Mapping[str, object], preset: Preset) -> dict[str, object]:
    """The claims, plus each member of the preset's nested objects by dotted path."""
    flat = dict(claims)

    def walk(prefix: str, value: Mapping[object, object]) -> None:
        for key, member in value.items():
            if not isinstance(key, str):
                continue
            if isinstance(member, Mapping):
                walk(f"{prefix}.{key}", member)
            else:
                flat[f"{prefix}.{key}"] = member

    for name in sorted(preset.nested_claims):
        value = claims.get(name)
        if isinstance(value, Mapping):
            walk(name, value)
    return flat
