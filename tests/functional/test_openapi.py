"""``openapi.yaml`` against the real app.

The description is first checked as an OpenAPI 3.1 document (and its examples against
its own schemas); then every route and every documented status is driven through
Flask's test client and each real request and response is validated against the
file with ``openapi_core``: status, documented headers and body. Answers that belong
to no operation (405) are checked against the spec's reusable response with its own
schema validator. Nothing here copies a schema out of the file by hand.

The OIDC answers (token exchange, an ID token as a Basic password, ``/readyz``'s
``oidc``) come from an app configured with ``identities.oidc`` for a real issuer on
127.0.0.1 (the ``issuer`` fixture of ``tests/oidc_issuer.py``).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIResponse
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.datastructures import Headers, ImmutableMultiDict
from werkzeug.test import TestResponse

from authsvc.app import Dependencies, create_app
from authsvc.audit import AuditLog, MemoryAuditLog
from authsvc.config import Settings, parse_settings
from authsvc.errors import KeyRingError
from authsvc.identity.static import hash_password
from authsvc.store import Store
from authsvc.store.memory import MemoryStore
from authsvc.store.redis import RedisStore
from authsvc.tokens import KeyRing, generate_key
from tests.oidc_issuer import AUDIENCE, JWKS, Fault, MakeIssuer, TestIssuer

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
SPEC_URI = "urn:authsvc:openapi"
SERVICE = "registry.test"
USER, PASSWORD = "alice", "pw"
#: The one account in ``admin.accounts`` (``POST /policy/explain``).
ADMIN, ADMIN_PASSWORD = "root", "root-pw"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: Methods Flask adds to every rule by itself; the spec documents them in prose.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
#: A well-formed refresh token that no store knows.
UNKNOWN_REFRESH_TOKEN = "asr_" + "A" * 43
#: RFC 8693 token exchange.
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: The OIDC issuer's name in ``identities.oidc`` (a GitHub Actions preset) and the
#: owner its rule pins.
OIDC_NAME = "gh"
OWNER_ID = "65"
CI_SCOPE = "repository:ci/acme/app:pull,push"

Query = list[tuple[str, str]]


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


USER_AUTH = basic(USER, PASSWORD)
ADMIN_AUTH = basic(ADMIN, ADMIN_PASSWORD)


# -- the spec ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_dict() -> dict[str, Any]:
    data = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def pem_loads(value: bytes) -> str:
    """``application/x-pem-file`` is text (ASCII); openapi_core would keep it as bytes."""
    return value.decode("ascii")


def text_loads(value: bytes) -> str:
    """The audit export (JSON Lines, CSV) is UTF-8 text, validated as a string."""
    return value.decode("utf-8")


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    config = Config(
        extra_media_type_deserializers={
            "application/x-pem-file": pem_loads,
            "application/x-ndjson": text_loads,
            "text/csv": text_loads,
        }
    )
    return OpenAPI.from_file_path(str(SPEC_PATH), config=config)


@pytest.fixture(scope="module")
def registry(spec_dict: dict[str, Any]) -> Registry[Any]:
    """The whole spec as one JSON Schema resource, so in-file ``$ref``s resolve."""
    resource: Resource[Any] = Resource.from_contents(spec_dict, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return registry


def pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(spec: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a non-schema ``$ref`` (parameter, response, header) inside the spec."""
    while "$ref" in node:
        ref = node["$ref"]
        assert isinstance(ref, str) and ref.startswith("#/"), ref
        target: Any = spec
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def schema_validator(registry: Registry[Any], json_pointer: str) -> OAS31Validator:
    """A validator for the schema at ``json_pointer`` in the spec file."""
    return OAS31Validator(
        {"$ref": f"{SPEC_URI}#{json_pointer}"},
        registry=registry,
        format_checker=OAS31Validator.FORMAT_CHECKER,
    )


def test_spec_is_a_valid_openapi_3_1_document(spec_dict: dict[str, Any]) -> None:
    validate_spec(spec_dict)
    assert spec_dict["openapi"] == "3.1.0"
    scheme = spec_dict["components"]["securitySchemes"]["basicAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
    token = spec_dict["paths"]["/token"]
    assert token["get"]["security"] == [{}, {"basicAuth": []}]  # optional Basic
    assert token["post"]["security"] == []  # credentials are in the form
    explain = spec_dict["paths"]["/policy/explain"]["post"]
    assert explain["security"] == [{"basicAuth": []}]  # required, no anonymous alternative
    assert explain["requestBody"]["required"] is True
    request_schema = spec_dict["components"]["schemas"]["ExplainRequest"]
    assert request_schema["additionalProperties"] is False
    export = spec_dict["paths"]["/audit/export"]["get"]
    assert export["security"] == [{"basicAuth": []}]
    assert set(export["responses"]["200"]["content"]) == {"application/x-ndjson", "text/csv"}


def _examples(node: Any, at: tuple[str, ...] = ()) -> Iterator[tuple[str, Any, str]]:
    """(where, value, pointer of its schema) for every example anywhere in the spec."""
    if isinstance(node, dict):
        if "schema" in node:  # a parameter, header or media type object
            schema_at = pointer(*at, "schema")
            if "example" in node:
                yield pointer(*at, "example"), node["example"], schema_at
            for name, example in node.get("examples", {}).items():
                yield pointer(*at, "examples", name), example["value"], schema_at
        elif isinstance(node.get("examples"), list):  # a schema object
            for index, example in enumerate(node["examples"]):
                yield pointer(*at, "examples", str(index)), example, pointer(*at)
        for key, value in node.items():
            yield from _examples(value, (*at, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _examples(value, (*at, str(index)))


def test_every_example_matches_its_schema(
    spec_dict: dict[str, Any], registry: Registry[Any]
) -> None:
    examples = list(_examples(spec_dict))
    assert len(examples) > 30
    for where, value, at in examples:
        errors = [e.message for e in schema_validator(registry, at).iter_errors(value)]
        assert not errors, f"{where}: {errors}"


def test_routes_and_spec_paths_are_the_same(spec_dict: dict[str, Any], app: Flask) -> None:
    routes: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        assert ":" not in path, f"converter in {rule.rule}: map it to a typed path parameter"
        routes |= {(path, method) for method in (rule.methods or set()) - IMPLICIT_METHODS}
    documented = {
        (path, method.upper())
        for path, item in spec_dict["paths"].items()
        for method in HTTP_METHODS
        if method in item
    }
    assert routes == documented


# -- the app ----------------------------------------------------------------------------


def down_store() -> RedisStore:
    """The real Redis store, pointed at a port nothing listens on."""
    return RedisStore.from_url("redis://127.0.0.1:1/0", prefix="authsvc-test:")


class BrokenAudit:
    """An audit sink failing with something unexpected (not an ``AuthsvcError``)."""

    def record(self, event: Mapping[str, Any]) -> None:
        raise RuntimeError("disk on fire")


def exploding_keys() -> KeyRing:
    raise RuntimeError("disk on fire")


def missing_keys() -> KeyRing:
    raise KeyRingError("/nonexistent/keys: key directory does not exist")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("openapi")
    generate_key(base / "keys")
    return base


def config_data(base: Path) -> dict[str, Any]:
    """The configuration every app here starts from (static users, no OIDC issuer)."""
    return {
        "services": [SERVICE],
        "keys": {"dir": str(base / "keys")},
        "identities": {
            "static": {
                "users": {
                    USER: {"password_hash": hash_password(PASSWORD, cost=4)},
                    ADMIN: {
                        "password_hash": hash_password(ADMIN_PASSWORD, cost=4),
                        "kind": "robot",
                    },
                }
            }
        },
        "admin": {"accounts": [ADMIN]},
        "rules": [
            {
                "id": "alice-team",
                "match": {"account": USER},
                "allow": [{"repository": "team/**", "actions": ["pull", "push"]}],
            },
            {
                "id": "anonymous-public",
                "match": {"anonymous": True},
                "allow": [{"repository": "public/**", "actions": ["pull"]}],
            },
        ],
    }


@pytest.fixture(scope="module")
def settings(base_dir: Path) -> Settings:
    return parse_settings(config_data(base_dir), base_dir=base_dir)


@pytest.fixture
def oidc_settings(base_dir: Path, issuer: TestIssuer) -> Settings:
    """``settings`` plus ``identities.oidc`` for ``issuer`` and a rule for its CI jobs."""
    data = config_data(base_dir)
    data["identities"]["oidc"] = {
        OIDC_NAME: {
            "preset": "github-actions",
            "issuer": issuer.url,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "ES256"],
        }
    }
    data["rules"].append(
        {
            "id": "ci-push",
            "match": {"provider": OIDC_NAME, "claims": {"repository_owner_id": OWNER_ID}},
            "allow": [{"repository": "ci/acme/**", "actions": ["pull", "push"]}],
        }
    )
    return parse_settings(data, base_dir=base_dir, environ={})


class MakeApp(Protocol):
    def __call__(
        self,
        store: Store | None = None,
        audit: AuditLog | None = None,
        keyring: Callable[[], KeyRing] | None = None,
        config: Settings | None = None,
    ) -> Flask: ...


@pytest.fixture
def make_app(settings: Settings) -> MakeApp:
    """Factory: the real app over ``settings`` (or ``config``), with collaborators
    swapped as asked."""

    def make(
        store: Store | None = None,
        audit: AuditLog | None = None,
        keyring: Callable[[], KeyRing] | None = None,
        config: Settings | None = None,
    ) -> Flask:
        deps = Dependencies(
            store=store or MemoryStore(),
            audit=audit or MemoryAuditLog(),
            keyring=keyring,
        )
        return create_app(config or settings, deps=deps)

    return make


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


# -- calling the app and validating what it answers ---------------------------------------


@dataclass
class SpecRequest:
    """The request as sent, for ``openapi_core`` (its ``Request`` protocol).

    Built from what the test sends rather than from the server-side request object,
    whose body stream the view has already consumed.
    """

    method: str
    path: str
    parameters: RequestParameters
    body: bytes | None
    content_type: str
    host_url: str = "http://localhost"


@dataclass
class Call:
    request: SpecRequest
    response: TestResponse
    spec_response: WerkzeugOpenAPIResponse = field(init=False)

    def __post_init__(self) -> None:
        self.spec_response = WerkzeugOpenAPIResponse(self.response)

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def json(self) -> Any:
        return self.response.get_json()


def call(
    client: FlaskClient,
    method: str,
    path: str,
    *,
    query: Query | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    content_type: str | None = None,
    chunked: bool = False,
) -> Call:
    """Send one request; ``chunked`` sends the body with no Content-Length, as gunicorn
    hands it over (``wsgi.input_terminated``)."""
    pairs = query or []
    sent = Headers(dict(headers or {}))
    if content_type is not None:
        sent["Content-Type"] = content_type
    kwargs: dict[str, Any] = {
        "method": method,
        "query_string": urlencode(pairs, quote_via=quote),
        "headers": sent,
    }
    if chunked:
        sent["Transfer-Encoding"] = "chunked"
        kwargs["input_stream"] = io.BytesIO(body or b"")
        kwargs["environ_overrides"] = {"wsgi.input_terminated": True}
    elif body is not None:
        kwargs["data"] = body
    response = client.open(path, **kwargs)
    request = SpecRequest(
        method=method.lower(),
        path=path,
        parameters=RequestParameters(query=ImmutableMultiDict(pairs), header=sent),
        body=body,
        content_type=content_type or "application/octet-stream",
    )
    return Call(request, response)


def form(**fields: str | list[str]) -> bytes:
    return urlencode(list(fields.items()), doseq=True).encode("utf-8")


def valid(openapi: OpenAPI, c: Call, *, request_too: bool = True) -> Call:
    """Assert the response (and, unless told otherwise, the request) conforms to the spec."""
    if request_too:
        openapi.validate_request(c.request)
    openapi.validate_response(c.request, c.spec_response)
    return c


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def oidc_client(make_app: MakeApp, oidc_settings: Settings) -> FlaskClient:
    """A client of the app that also trusts ``issuer`` (``identities.oidc``)."""
    return make_app(config=oidc_settings).test_client()


def ci_token(
    issuer: TestIssuer, *, iat: int | None = None, lifetime: int = 300, **claims: Any
) -> str:
    """A GitHub-Actions-shaped ID token from ``issuer`` that the ``ci-push`` rule matches."""
    github = {
        "sub": "repo:Acme/App:ref:refs/heads/main",
        "repository": "Acme/App",
        "repository_id": "74",
        "repository_owner": "Acme",
        "repository_owner_id": OWNER_ID,
        "ref": "refs/heads/main",
        "event_name": "push",
        "runner_environment": "github-hosted",
    }
    return issuer.mint({**github, **claims}, iat=iat, lifetime=lifetime)


def token_get(client: FlaskClient, query: Query, auth: str | None = None) -> Call:
    return call(
        client, "GET", "/token", query=query, headers={"Authorization": auth} if auth else None
    )


def token_post(
    client: FlaskClient, body: bytes, *, content_type: str = FORM, chunked: bool = False
) -> Call:
    return call(client, "POST", "/token", body=body, content_type=content_type, chunked=chunked)


def explain_post(
    client: FlaskClient,
    body: object,
    *,
    auth: str | None = ADMIN_AUTH,
    content_type: str = JSON,
) -> Call:
    """``POST /policy/explain``; ``body`` is sent as is if bytes, as JSON otherwise."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    return call(
        client,
        "POST",
        "/policy/explain",
        body=raw,
        content_type=content_type,
        headers={"Authorization": auth} if auth else None,
    )


def offline_login(openapi: OpenAPI, client: FlaskClient) -> str:
    c = valid(
        openapi,
        token_get(
            client,
            [
                ("service", SERVICE),
                ("account", USER),
                ("client_id", "docker"),
                ("offline_token", "true"),
            ],
            USER_AUTH,
        ),
    )
    assert c.status == 200
    refresh: str = c.json["refresh_token"]
    return refresh


# -- GET /token ---------------------------------------------------------------------------


def test_get_token_anonymous(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(
        openapi,
        token_get(
            client,
            [
                ("service", SERVICE),
                ("scope", "repository:public/app:pull"),
                ("offline_token", "true"),
            ],
        ),
    )
    assert c.status == 200
    body = c.json
    assert body["token"] == body["access_token"]
    assert "refresh_token" not in body  # anonymous callers never get one
    assert c.response.headers["Cache-Control"] == "no-store"


def test_get_token_with_a_user(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(
        openapi,
        token_get(
            client,
            [
                ("service", SERVICE),
                ("account", USER),
                ("scope", "repository:team/app:pull,push repository:team/lib:pull"),
                ("scope", "registry:catalog:*"),
            ],
            USER_AUTH,
        ),
    )
    assert c.status == 200
    assert "refresh_token" not in c.json


def test_get_token_offline_gives_a_refresh_token(openapi: OpenAPI, client: FlaskClient) -> None:
    refresh = offline_login(openapi, client)
    # The credential-helper convention: user name <token>, password = refresh token.
    c = valid(
        openapi,
        token_get(
            client,
            [
                ("service", SERVICE),
                ("scope", "repository:team/app:pull"),
                ("offline_token", "true"),
            ],
            basic("<token>", refresh),
        ),
    )
    assert c.status == 200
    assert c.json["refresh_token"] == refresh  # never rotated


@pytest.mark.parametrize(
    ("query", "auth", "code", "request_valid"),
    [
        pytest.param(
            [("service", "elsewhere.test")], None, "UNKNOWN_SERVICE", True, id="unknown-service"
        ),
        pytest.param(
            [("scope", "repository:x:pull")], None, "BAD_REQUEST", False, id="missing-service"
        ),
        pytest.param(
            [("service", SERVICE), ("scope", "repository")],
            None,
            "INVALID_SCOPE",
            False,
            id="malformed-scope",
        ),
        pytest.param(
            [("service", SERVICE), ("scope", "repository:Team/App:pull")],
            None,
            "INVALID_SCOPE",
            True,
            id="uppercase-repository",
        ),
        pytest.param(
            [("service", SERVICE)], "Basic !!not-base64!!", "BAD_REQUEST", True, id="bad-base64"
        ),
        # The anonymous alternative ({}) lets any Authorization header through the spec.
        pytest.param([("service", SERVICE)], "Bearer abc", "BAD_REQUEST", True, id="not-basic"),
        pytest.param(
            [("service", SERVICE), ("account", "bob")],
            USER_AUTH,
            "BAD_REQUEST",
            True,
            id="account-mismatch",
        ),
        pytest.param(
            [("service", SERVICE), ("offline_token", "maybe")],
            USER_AUTH,
            "BAD_REQUEST",
            False,
            id="bad-offline-token",
        ),
    ],
)
def test_get_token_bad_request(
    openapi: OpenAPI,
    client: FlaskClient,
    query: Query,
    auth: str | None,
    code: str,
    request_valid: bool,
) -> None:
    c = token_get(client, query, auth)
    valid(openapi, c, request_too=request_valid)
    if not request_valid:  # the spec already rules these requests out
        with pytest.raises(OpenAPIError):
            openapi.validate_request(c.request)
    assert c.status == 400
    assert c.json["errors"][0]["code"] == code


@pytest.mark.parametrize(
    "auth",
    [
        basic(USER, "wrong"),
        basic("<token>", "not-a-refresh-token"),
        basic("<token>", UNKNOWN_REFRESH_TOKEN),
    ],
    ids=["wrong-password", "malformed-refresh-token", "unknown-refresh-token"],
)
def test_get_token_unauthorized(openapi: OpenAPI, client: FlaskClient, auth: str) -> None:
    c = valid(openapi, token_get(client, [("service", SERVICE)], auth))
    assert c.status == 401
    assert c.response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    assert c.json["errors"][0]["code"] == "UNAUTHORIZED"


def test_get_token_store_down(openapi: OpenAPI, make_app: MakeApp) -> None:
    client = make_app(store=down_store()).test_client()
    c = valid(
        openapi,
        token_get(
            client,
            [
                ("service", SERVICE),
                ("offline_token", "true"),
                ("client_id", "docker"),
            ],
            USER_AUTH,
        ),
    )
    assert c.status == 503
    assert c.json["errors"][0]["code"] == "UNAVAILABLE"


def test_get_token_unexpected_failure(openapi: OpenAPI, make_app: MakeApp) -> None:
    client = make_app(keyring=exploding_keys).test_client()
    c = valid(openapi, token_get(client, [("service", SERVICE)]))
    assert c.status == 500
    assert "disk on fire" not in c.response.get_data(as_text=True)


def test_get_token_audit_failure_is_503(openapi: OpenAPI, make_app: MakeApp) -> None:
    client = make_app(audit=BrokenAudit()).test_client()
    c = valid(openapi, token_get(client, [("service", SERVICE)]))
    assert c.status == 503
    assert "audit log did not accept the decision" in c.response.get_data(as_text=True)


@pytest.fixture
def backoff_client(make_app: MakeApp, base_dir: Path) -> FlaskClient:
    """An app whose backoff makes a password wait a minute after two failures."""
    data = config_data(base_dir)
    data["anomaly"] = {"backoff": {"threshold": 2, "base_delay": 60}}
    return make_app(config=parse_settings(data, base_dir=base_dir, environ={})).test_client()


def test_get_token_too_many_attempts(openapi: OpenAPI, backoff_client: FlaskClient) -> None:
    for _ in range(2):
        c = valid(openapi, token_get(backoff_client, [("service", SERVICE)], basic(USER, "x")))
        assert c.status == 401
    c = valid(openapi, token_get(backoff_client, [("service", SERVICE)], USER_AUTH))
    assert c.status == 429
    assert c.json["errors"][0]["code"] == "TOOMANYREQUESTS"
    retry_after = c.json["errors"][0]["detail"]["retry_after"]
    assert 59 <= retry_after <= 60
    assert c.response.headers["Retry-After"] == str(retry_after)


# -- POST /token --------------------------------------------------------------------------


def test_post_password_grant(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(
        openapi,
        token_post(
            client,
            form(
                grant_type="password",
                client_id="containerd",
                username=USER,
                password=PASSWORD,
                service=SERVICE,
                scope=["repository:team/app:pull,push", "repository:other/x:pull"],
                access_type="offline",
            ),
            content_type=FORM + "; charset=utf-8",
        ),
    )
    assert c.status == 200
    assert c.json["scope"] == "repository:team/app:pull,push"  # only what was granted
    assert c.json["refresh_token"].startswith("asr_")
    assert c.response.headers["Pragma"] == "no-cache"


def test_post_refresh_token_grant(openapi: OpenAPI, client: FlaskClient) -> None:
    refresh = offline_login(openapi, client)
    c = valid(
        openapi,
        token_post(
            client,
            form(
                grant_type="refresh_token",
                client_id="docker",
                refresh_token=refresh,
                service=SERVICE,
                scope=["repository:team/a:pull repository:team/b:push"],
            ),
        ),
    )
    assert c.status == 200
    assert c.json["scope"] == "repository:team/a:pull repository:team/b:push"
    assert "refresh_token" not in c.json


def test_post_refresh_token_grant_chunked(openapi: OpenAPI, client: FlaskClient) -> None:
    refresh = offline_login(openapi, client)
    c = valid(
        openapi,
        token_post(
            client,
            form(
                grant_type="refresh_token",
                client_id="skopeo",
                refresh_token=refresh,
                service=SERVICE,
                access_type="offline",
            ),
            chunked=True,
        ),
    )
    assert c.status == 200
    assert c.json["scope"] == ""
    assert c.json["refresh_token"] == refresh


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        pytest.param(
            form(grant_type="client_credentials", client_id="x", service=SERVICE),
            FORM,
            "unsupported_grant_type",
            id="unsupported-grant-type",
        ),
        pytest.param(
            form(grant_type="password", username=USER, password=PASSWORD, service=SERVICE),
            FORM,
            "invalid_request",
            id="missing-client-id",
        ),
        pytest.param(
            form(grant_type="refresh_token", client_id="x", service=SERVICE),
            FORM,
            "invalid_request",
            id="missing-refresh-token",
        ),
        pytest.param(
            b'{"grant_type": "password"}', "application/json", "invalid_request", id="not-a-form"
        ),
        pytest.param(
            form(
                grant_type="password",
                client_id="x",
                username=USER,
                password=PASSWORD,
                service="elsewhere.test",
            ),
            FORM,
            "invalid_request",
            id="unknown-service",
        ),
        pytest.param(
            form(
                grant_type="password",
                client_id="x",
                username=USER,
                password=PASSWORD,
                service=SERVICE,
                scope="nonsense",
            ),
            FORM,
            "invalid_scope",
            id="malformed-scope",
        ),
    ],
)
def test_post_token_bad_request(
    openapi: OpenAPI, client: FlaskClient, body: bytes, content_type: str, error: str
) -> None:
    c = valid(openapi, token_post(client, body, content_type=content_type), request_too=False)
    assert c.status == 400
    assert c.json["error"] == error


@pytest.mark.parametrize(
    "fields",
    [
        {"grant_type": "password", "username": USER, "password": "wrong"},
        {"grant_type": "refresh_token", "refresh_token": UNKNOWN_REFRESH_TOKEN},
    ],
    ids=["wrong-password", "unknown-refresh-token"],
)
def test_post_token_unauthorized(
    openapi: OpenAPI, client: FlaskClient, fields: dict[str, str]
) -> None:
    c = valid(openapi, token_post(client, form(client_id="x", service=SERVICE, **fields)))
    assert c.status == 401  # never 403 on POST (containerd would give up)
    assert c.response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    assert c.json["error"] == "invalid_grant"


def test_post_token_too_many_attempts(openapi: OpenAPI, backoff_client: FlaskClient) -> None:
    def password(secret: str) -> Call:
        fields = form(
            grant_type="password", client_id="x", service=SERVICE, username=USER, password=secret
        )
        return valid(openapi, token_post(backoff_client, fields))

    assert [password("x").status for _ in range(2)] == [401, 401]
    c = password(PASSWORD)
    assert c.status == 429
    assert c.json["error"] == "slow_down"
    assert 59 <= c.json["retry_after"] <= 60
    assert c.response.headers["Retry-After"] == str(c.json["retry_after"])


def _too_large() -> bytes:
    return form(
        grant_type="password",
        client_id="x",
        username=USER,
        password=PASSWORD,
        service=SERVICE,
        padding="a" * (64 * 1024),
    )


def test_post_token_too_large(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(openapi, token_post(client, _too_large()))
    assert c.status == 413
    assert c.json["error"] == "invalid_request"


def test_post_token_too_large_chunked(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(openapi, token_post(client, _too_large(), chunked=True))
    assert c.status == 413
    assert c.json["error"] == "invalid_request"


def test_post_token_store_down(openapi: OpenAPI, make_app: MakeApp) -> None:
    client = make_app(store=down_store()).test_client()
    c = valid(
        openapi,
        token_post(
            client,
            form(
                grant_type="refresh_token",
                client_id="docker",
                refresh_token=UNKNOWN_REFRESH_TOKEN,
                service=SERVICE,
            ),
        ),
    )
    assert c.status == 503
    assert c.json["error"] == "temporarily_unavailable"


def test_post_token_unexpected_failure(openapi: OpenAPI, make_app: MakeApp) -> None:
    client = make_app(keyring=exploding_keys).test_client()
    c = valid(
        openapi,
        token_post(
            client,
            form(
                grant_type="password",
                client_id="x",
                username=USER,
                password=PASSWORD,
                service=SERVICE,
            ),
        ),
    )
    assert c.status == 500
    assert c.json == {"error": "server_error", "error_description": "internal error"}


# -- OIDC: the token exchange, ID tokens as passwords, /readyz --------------------------------


def exchange_form(token: str, **fields: str | list[str]) -> bytes:
    """An RFC 8693 exchange of ``token`` (no ``client_id``: optional for this grant)."""
    base: dict[str, str | list[str]] = {
        "grant_type": EXCHANGE,
        "subject_token": token,
        "subject_token_type": ID_TOKEN_TYPE,
        "service": SERVICE,
        "scope": CI_SCOPE,
    }
    return form(**{**base, **fields})


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"subject_token_type": JWT_TOKEN_TYPE, "requested_token_type": ACCESS_TOKEN_TYPE},
        {"client_id": "ci-helper"},
    ],
    ids=["id-token", "jwt-access-token", "with-client-id"],
)
def test_post_token_exchange(
    openapi: OpenAPI, oidc_client: FlaskClient, issuer: TestIssuer, extra: dict[str, str]
) -> None:
    c = valid(openapi, token_post(oidc_client, exchange_form(ci_token(issuer), **extra)))
    assert c.status == 200, c.json
    body = c.json
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["scope"] == CI_SCOPE
    assert body["token"] == body["access_token"]
    assert c.response.headers["Cache-Control"] == "no-store"
    # The session credential works as a refresh token, as the spec says.
    session = basic("<token>", body["refresh_token"])
    again = valid(
        openapi, token_get(oidc_client, [("service", SERVICE), ("scope", CI_SCOPE)], session)
    )
    assert again.status == 200
    assert "issued_token_type" not in again.json


def test_post_token_exchange_replayed(
    openapi: OpenAPI, oidc_client: FlaskClient, issuer: TestIssuer
) -> None:
    token = ci_token(issuer)
    assert valid(openapi, token_post(oidc_client, exchange_form(token))).status == 200
    c = valid(openapi, token_post(oidc_client, exchange_form(token)))
    assert c.status == 401
    assert c.response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    assert c.json["error"] == "invalid_grant"
    assert "already used" in c.json["error_description"]


@pytest.mark.parametrize(
    ("mint", "message"),
    [
        pytest.param(
            lambda i, stranger: ci_token(stranger), "is not configured", id="unknown-issuer"
        ),
        pytest.param(
            lambda i, stranger: ci_token(i, aud="https://elsewhere.test"),
            "wrong 'aud'",
            id="wrong-audience",
        ),
        pytest.param(
            lambda i, stranger: ci_token(i, iat=int(time.time()) - 1000),
            "the token expired",
            id="expired",
        ),
        pytest.param(
            lambda i, stranger: ci_token(i)[:-8] + "AAAAAAAA",
            "signature does not verify",
            id="bad-signature",
        ),
    ],
)
def test_post_token_exchange_refused(
    openapi: OpenAPI,
    oidc_client: FlaskClient,
    issuer: TestIssuer,
    make_issuer: MakeIssuer,
    mint: Callable[[TestIssuer, TestIssuer], str],
    message: str,
) -> None:
    c = valid(openapi, token_post(oidc_client, exchange_form(mint(issuer, make_issuer()))))
    assert c.status == 401
    assert c.json["error"] == "invalid_grant"
    assert message in c.json["error_description"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"subject_token": ""}, "a token exchange needs 'subject_token'", id="no-subject-token"
        ),
        pytest.param(
            {"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
            "subject_token_type must be one of",
            id="bad-subject-token-type",
        ),
        pytest.param(
            {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
            "requested_token_type must be",
            id="bad-requested-token-type",
        ),
    ],
)
def test_post_token_exchange_malformed(
    openapi: OpenAPI,
    oidc_client: FlaskClient,
    issuer: TestIssuer,
    fields: dict[str, str],
    message: str,
) -> None:
    c = valid(
        openapi,
        token_post(oidc_client, exchange_form(ci_token(issuer), **fields)),
        request_too=False,
    )
    with pytest.raises(OpenAPIError):  # the spec already rules these requests out
        openapi.validate_request(c.request)
    assert c.status == 400
    assert c.json["error"] == "invalid_request"
    assert message in c.json["error_description"]


def test_post_token_exchange_keys_unavailable(
    openapi: OpenAPI, oidc_client: FlaskClient, issuer: TestIssuer
) -> None:
    issuer.fault(JWKS, Fault(status=500))
    c = valid(openapi, token_post(oidc_client, exchange_form(ci_token(issuer))))
    assert c.status == 503
    assert c.json["error"] == "temporarily_unavailable"
    assert f"issuer {OIDC_NAME!r} has no keys yet" in c.json["error_description"]
    # GET /token with the ID token as a password: the same, in the registry shape.
    as_password = basic("ci", ci_token(issuer))
    c = valid(openapi, token_get(oidc_client, [("service", SERVICE)], as_password))
    assert c.status == 503
    assert c.json["errors"][0]["code"] == "UNAVAILABLE"


def test_get_token_with_an_id_token_as_password(
    openapi: OpenAPI, oidc_client: FlaskClient, issuer: TestIssuer
) -> None:
    token = ci_token(issuer)
    query = [("service", SERVICE), ("scope", CI_SCOPE), ("offline_token", "true")]
    for _ in range(2):  # reusable as a password (password_reuse defaults to true)
        c = valid(openapi, token_get(oidc_client, query, basic("ci", token)))
        assert c.status == 200, c.json
        assert c.json["refresh_token"].startswith("asr_")
        assert "issued_token_type" not in c.json
    header, payload, _ = token.split(".")
    forged = f"{header}.{payload}.{'A' * 342}"
    c = valid(openapi, token_get(oidc_client, [("service", SERVICE)], basic("ci", forged)))
    assert c.status == 401
    assert c.response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    assert "signature does not verify" in c.json["errors"][0]["message"]


def test_readyz_reports_oidc_keys(
    openapi: OpenAPI, oidc_client: FlaskClient, issuer: TestIssuer
) -> None:
    c = valid(openapi, call(oidc_client, "GET", "/readyz"))
    assert c.status == 200
    assert c.json["oidc"] == {
        OIDC_NAME: {"keys_fetched_at": None, "stale": False, "last_error": None}
    }
    issuer.fault(JWKS, Fault(status=500))
    token_post(oidc_client, exchange_form(ci_token(issuer)))
    c = valid(openapi, call(oidc_client, "GET", "/readyz"))
    assert c.status == 200  # keys that cannot be fetched do not make the service unready
    status = c.json["oidc"][OIDC_NAME]
    assert (status["keys_fetched_at"], status["stale"]) == (None, True)
    assert "HTTP 500" in status["last_error"]


def test_readyz_reports_fetched_oidc_keys(
    openapi: OpenAPI, oidc_client: FlaskClient, issuer: TestIssuer
) -> None:
    assert token_post(oidc_client, exchange_form(ci_token(issuer))).status == 200
    c = valid(openapi, call(oidc_client, "GET", "/readyz"))
    assert c.status == 200
    status = c.json["oidc"][OIDC_NAME]
    assert isinstance(status["keys_fetched_at"], int)
    assert (status["stale"], status["last_error"]) == (False, None)


# -- POST /policy/explain -------------------------------------------------------------------


def test_explain_for_a_user(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(
        openapi,
        explain_post(
            client,
            {
                "account": USER,
                "scopes": [
                    "repository:team/app:pull,push,delete,* repository:other/x:pull",
                    "registry:catalog:*",
                    "repository:team/app:frobnicate",
                ],
            },
        ),
    )
    assert c.status == 200
    assert c.response.headers["Cache-Control"] == "no-store"
    body = c.json
    assert body["identity"] == {
        "account": USER,
        "kind": "human",
        "provider": "static",
        "groups": [],
        "claims": {},
    }
    assert body["matched_rules"] == ["alice-team"]
    assert [s["scope"] for s in body["scopes"]] == [
        "repository:team/app:pull,push,delete,*,frobnicate",
        "repository:other/x:pull",
        "registry:catalog:*",
    ]
    assert body["granted"] == ["repository:team/app:pull,push"]


def test_explain_for_the_anonymous_identity(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(
        openapi,
        explain_post(
            client,
            {"anonymous": True, "scopes": ["repository:public/app:pull,push"]},
            content_type=JSON + "; charset=utf-8",
        ),
    )
    assert c.status == 200
    assert c.json["identity"]["account"] is None
    assert c.json["identity"]["kind"] == "anonymous"
    assert c.json["granted"] == ["repository:public/app:pull"]


def test_explain_for_a_ci_identity_with_claims(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(
        openapi,
        explain_post(
            client,
            {
                "account": "project_path:team/app",
                "groups": ["b", "a"],
                "kind": "ci",
                "provider": "gitlab",
                "claims": {"project_path": "team/app", "ref_protected": True},
                "scopes": ["repository:team/app:pull"],
            },
        ),
    )
    assert c.status == 200
    assert c.json["identity"]["groups"] == ["a", "b"]
    assert c.json["identity"]["claims"] == {"project_path": "team/app", "ref_protected": True}
    assert c.json["granted"] == []


@pytest.mark.parametrize(
    ("body", "content_type", "auth", "code", "message", "request_valid"),
    [
        pytest.param(
            {"account": USER, "scope": ["repository:a:pull"]},
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "unknown fields scope",
            False,
            id="unknown-field",
        ),
        pytest.param(
            {"account": USER, "scopes": "repository:a:pull"},
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "'scopes' must be",
            False,
            id="scopes-not-a-list",
        ),
        pytest.param(
            {"account": USER, "groups": "dev", "scopes": ["repository:a:pull"]},
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "'groups' must be",
            False,
            id="groups-not-a-list",
        ),
        pytest.param(
            {"account": USER, "anonymous": "yes", "scopes": ["repository:a:pull"]},
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "'anonymous' must be",
            False,
            id="anonymous-not-a-boolean",
        ),
        pytest.param(
            {"account": USER, "scopes": []},
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "'scopes' must be a non-empty list",
            False,
            id="empty-scopes",
        ),
        pytest.param(
            {"scopes": ["repository:a:pull"]},
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "give an account",
            False,
            id="no-account",
        ),
        pytest.param(
            {"anonymous": True, "account": USER, "scopes": ["repository:a:pull"]},
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "an anonymous identity has no account",
            False,
            id="anonymous-with-account",
        ),
        pytest.param(
            {"account": USER, "kind": "martian", "scopes": ["repository:a:pull"]},
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "kind must be one of",
            False,
            id="unknown-kind",
        ),
        pytest.param(
            b'{"account": "alice", "scopes": [',
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "the body is not valid JSON",
            False,
            id="invalid-json",
        ),
        pytest.param(
            b'["repository:a:pull"]',
            JSON,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "the body must be a JSON object",
            False,
            id="not-an-object",
        ),
        pytest.param(
            form(account=USER, scopes="repository:a:pull"),
            FORM,
            ADMIN_AUTH,
            "BAD_REQUEST",
            "takes a JSON body",
            False,
            id="not-json",
        ),
        pytest.param(
            {"account": USER, "scopes": ["repository:Team/App:pull"]},
            JSON,
            ADMIN_AUTH,
            "INVALID_SCOPE",
            "is not a valid repository name",
            True,
            id="malformed-scope",
        ),
        pytest.param(
            {"account": USER, "scopes": ["repository:a:pull"]},
            JSON,
            "Bearer abc",
            "BAD_REQUEST",
            "unsupported Authorization scheme",
            False,
            id="not-basic",
        ),
    ],
)
def test_explain_bad_request(
    openapi: OpenAPI,
    client: FlaskClient,
    body: object,
    content_type: str,
    auth: str,
    code: str,
    message: str,
    request_valid: bool,
) -> None:
    c = valid(
        openapi,
        explain_post(client, body, auth=auth, content_type=content_type),
        request_too=request_valid,
    )
    if not request_valid:  # the spec already rules these requests out
        with pytest.raises(OpenAPIError):
            openapi.validate_request(c.request)
    assert c.status == 400
    assert c.json["errors"][0]["code"] == code
    assert message in c.json["errors"][0]["message"]


@pytest.mark.parametrize(
    ("auth", "request_valid"),
    [
        (None, False),
        (basic(ADMIN, "wrong"), True),
        (basic("nobody", "pw"), True),
        (basic("<token>", UNKNOWN_REFRESH_TOKEN), True),
    ],
    ids=["no-credential", "wrong-password", "unknown-user", "refresh-token"],
)
def test_explain_unauthorized(
    openapi: OpenAPI, client: FlaskClient, auth: str | None, request_valid: bool
) -> None:
    c = valid(
        openapi,
        explain_post(client, {"account": USER, "scopes": ["repository:a:pull"]}, auth=auth),
        request_too=request_valid,
    )
    if not request_valid:  # the spec requires the Basic credential
        with pytest.raises(OpenAPIError):
            openapi.validate_request(c.request)
    assert c.status == 401
    assert c.response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    assert c.json["errors"][0]["code"] == "UNAUTHORIZED"


def test_explain_forbidden_to_a_user_not_listed_as_admin(
    openapi: OpenAPI, client: FlaskClient
) -> None:
    c = valid(
        openapi,
        explain_post(client, {"account": USER, "scopes": ["repository:a:pull"]}, auth=USER_AUTH),
    )
    assert c.status == 403
    assert "WWW-Authenticate" not in c.response.headers
    assert c.json["errors"][0] == {
        "code": "DENIED",
        "message": f"{USER!r} is not listed in admin.accounts",
    }


def test_explain_too_large(openapi: OpenAPI, client: FlaskClient) -> None:
    # Valid JSON (whitespace is allowed anywhere), and valid against the request schema.
    body = json.dumps({"account": USER, "scopes": ["repository:a:pull"]}).encode()
    c = valid(openapi, explain_post(client, body + b" " * (64 * 1024)))
    assert c.status == 413
    assert c.json["errors"][0]["code"] == "TOO_LARGE"


# -- health and keys ----------------------------------------------------------------------


def test_healthz(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(openapi, call(client, "GET", "/healthz"))
    assert c.status == 200


def test_readyz_ready(openapi: OpenAPI, client: FlaskClient) -> None:
    c = valid(openapi, call(client, "GET", "/readyz"))
    assert c.status == 200
    assert c.json["status"] == "ready"


@pytest.mark.parametrize(
    ("store_down", "keys_missing", "problems"),
    [(True, False, 1), (False, True, 1), (True, True, 2)],
    ids=["store", "keys", "both"],
)
def test_readyz_not_ready(
    openapi: OpenAPI, make_app: MakeApp, store_down: bool, keys_missing: bool, problems: int
) -> None:
    app = make_app(
        store=down_store() if store_down else None, keyring=missing_keys if keys_missing else None
    )
    c = valid(openapi, call(app.test_client(), "GET", "/readyz"))
    assert c.status == 503
    assert len(c.json["problems"]) == problems


def test_jwks(openapi: OpenAPI, client: FlaskClient, settings: Settings) -> None:
    c = valid(openapi, call(client, "GET", "/.well-known/jwks.json"))
    assert c.status == 200
    ring = KeyRing.load(settings.keys.dir)
    assert [key["kid"] for key in c.json["keys"]] == [k.thumbprint for k in ring.published]


# -- GET /audit/export ----------------------------------------------------------------------


def export_get(
    client: FlaskClient, query: Query | None = None, auth: str | None = ADMIN_AUTH
) -> Call:
    return call(
        client, "GET", "/audit/export", query=query,
        headers={"Authorization": auth} if auth else None,
    )


@pytest.fixture
def audited_client(base_dir: Path) -> FlaskClient:
    """An app whose audit sink is its (memory) store, with a few decisions recorded."""
    data = {**config_data(base_dir), "audit": {"sink": "redis"}}
    app = create_app(
        parse_settings(data, base_dir=base_dir), deps=Dependencies(store=MemoryStore())
    )
    client = app.test_client()
    token_get(client, [("service", SERVICE), ("scope", "repository:team/app:pull")], USER_AUTH)
    token_get(client, [("service", SERVICE)], basic(USER, "wrong"))
    return client


@pytest.mark.parametrize(
    ("query", "mimetype"),
    [
        ([], "application/x-ndjson"),
        ([("format", "ocsf"), ("outcome", "failure")], "application/x-ndjson"),
        ([("format", "ecs"), ("since", "2020-01-01T00:00:00Z")], "application/x-ndjson"),
        ([("format", "csv"), ("actor", USER), ("repository", "team/app")], "text/csv"),
        ([("format", "jsonl"), ("until", "1")], "application/x-ndjson"),
    ],
    ids=["jsonl", "ocsf-failures", "ecs-since", "csv-filtered", "empty"],
)
def test_export(
    openapi: OpenAPI, audited_client: FlaskClient, query: Query, mimetype: str
) -> None:
    c = export_get(audited_client, query)
    openapi.validate_request(c.request)
    assert c.status == 200
    assert c.response.mimetype == mimetype
    assert c.response.headers["Cache-Control"] == "no-store"
    assert c.response.is_streamed
    if ("until", "1") in query:  # nothing matches: openapi_core refuses an empty body
        assert c.response.get_data() == b""
    else:
        valid(openapi, c)
        assert c.response.get_data()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([("format", "xml")], "'format' must be one of"),
        ([("outcome", "maybe")], "'outcome' must be one of"),
        ([("since", "yesterday")], "is neither ISO 8601 nor seconds"),
        ([("limit", "10")], "unknown parameters limit"),
    ],
    ids=["format", "outcome", "since", "unknown"],
)
def test_export_bad_request(
    openapi: OpenAPI, client: FlaskClient, query: Query, message: str
) -> None:
    c = valid(openapi, export_get(client, query), request_too=False)
    assert c.status == 400
    assert c.json["errors"][0]["code"] == "BAD_REQUEST"
    assert message in c.json["errors"][0]["message"]


@pytest.mark.parametrize(
    ("auth", "status"),
    [(None, 401), (basic(ADMIN, "wrong"), 401), (USER_AUTH, 403)],
    ids=["no-credential", "wrong-password", "not-an-admin"],
)
def test_export_refused(
    openapi: OpenAPI, client: FlaskClient, auth: str | None, status: int
) -> None:
    c = valid(openapi, export_get(client, auth=auth), request_too=auth is not None)
    assert c.status == status


def test_export_store_down(openapi: OpenAPI, make_app: MakeApp, base_dir: Path) -> None:
    data = {**config_data(base_dir), "audit": {"sink": "redis"}}
    app = make_app(store=down_store(), config=parse_settings(data, base_dir=base_dir))
    c = valid(openapi, export_get(app.test_client()))
    assert c.status == 503
    assert c.json["errors"][0]["code"] == "UNAVAILABLE"


def test_certs_pem(openapi: OpenAPI, client: FlaskClient, settings: Settings) -> None:
    c = valid(openapi, call(client, "GET", "/certs.pem"))
    assert c.status == 200
    assert c.response.get_data(as_text=True) == KeyRing.load(settings.keys.dir).bundle_pem()


# -- answers outside any operation ----------------------------------------------------------


def test_head_and_options_answer_every_documented_path(
    spec_dict: dict[str, Any], client: FlaskClient
) -> None:
    """What the spec's description promises for the methods it does not list."""
    for path, item in spec_dict["paths"].items():
        query = [("service", SERVICE)] if path == "/token" else None
        documented = {m.upper() for m in HTTP_METHODS if m in item}
        options = call(client, "OPTIONS", path, query=query).response
        implicit = IMPLICIT_METHODS if "GET" in documented else IMPLICIT_METHODS - {"HEAD"}
        assert set(options.headers["Allow"].split(", ")) == documented | implicit, path
        if path == "/token":
            head = call(client, "HEAD", path, query=query).response
            assert head.status_code == 405
            assert set(head.headers["Allow"].split(", ")) == {"GET", "POST"}
        elif "get" in item:
            get = call(client, "GET", path, query=query).response
            head = call(client, "HEAD", path, query=query).response
            assert (head.status_code, head.get_data()) == (get.status_code, b""), path
            assert head.headers["Content-Type"] == get.headers["Content-Type"], path
        else:  # no GET, so no implicit HEAD either
            head = call(client, "HEAD", path, query=query).response
            assert head.status_code == 405, path
            assert set(head.headers["Allow"].split(", ")) == documented | implicit, path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/token"),
        ("DELETE", "/token"),
        ("POST", "/healthz"),
        ("POST", "/certs.pem"),
        ("GET", "/policy/explain"),
        ("PUT", "/policy/explain"),
        ("POST", "/audit/export"),
    ],
)
def test_wrong_method(
    spec_dict: dict[str, Any],
    registry: Registry[Any],
    client: FlaskClient,
    method: str,
    path: str,
) -> None:
    c = call(client, method, path)
    assert c.status == 405
    # No operation exists for these, so openapi_core has nothing to match: check the
    # spec's reusable response directly, with the same schema dialect.
    documented = spec_dict["components"]["responses"]["MethodNotAllowed"]
    mimetype = c.response.mimetype
    assert mimetype is not None and mimetype in documented["content"]
    at = ("components", "responses", "MethodNotAllowed")
    schema_validator(registry, pointer(*at, "content", mimetype, "schema")).validate(c.json)
    for name, ref in documented["headers"].items():
        header = resolve(spec_dict, ref)
        value = c.response.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{name} is documented as required"
            continue
        at_header = tuple(ref["$ref"][2:].split("/"))
        schema_validator(registry, pointer(*at_header, "schema")).validate(value)
    assert method not in c.response.headers["Allow"].split(", ")


def test_response_checks_are_not_vacuous(openapi: OpenAPI, client: FlaskClient) -> None:
    """openapi_core does refuse a response that strays from the spec."""
    c = token_get(client, [("service", SERVICE)], basic(USER, "wrong"))
    valid(openapi, c)
    del c.response.headers["WWW-Authenticate"]
    with pytest.raises(OpenAPIError):
        openapi.validate_response(c.request, c.spec_response)
    c = token_get(client, [("service", SERVICE)])
    c.response.set_data(c.response.get_data().replace(b'"token"', b'"tokens"', 1))
    with pytest.raises(OpenAPIError):
        openapi.validate_response(c.request, c.spec_response)
    c.response.status_code = 418
    with pytest.raises(OpenAPIError):
        openapi.validate_response(c.request, c.spec_response)
    c = explain_post(client, {"account": USER, "scopes": ["repository:team/app:pull"]})
    valid(openapi, c)
    c.response.set_data(c.response.get_data().replace(b'"granted"', b'"maybe"', 1))
    with pytest.raises(OpenAPIError):
        openapi.validate_response(c.request, c.spec_response)
    c = explain_post(client, {"account": USER, "scopes": ["repository:a:pull"]}, auth=USER_AUTH)
    valid(openapi, c)
    c.response.status_code = 401  # a 401 must carry the Basic challenge
    with pytest.raises(OpenAPIError):
        openapi.validate_response(c.request, c.spec_response)


def test_schema_checks_are_not_vacuous(registry: Registry[Any]) -> None:
    """The schemas used above do refuse what the app must never send."""
    token = schema_validator(registry, pointer("components", "schemas", "TokenResponse"))
    good = {
        "token": "a.b.c",
        "access_token": "a.b.c",
        "expires_in": 60,
        "issued_at": "2026-11-28T04:35:00Z",
    }
    assert token.is_valid(good)
    for bad in (
        {**good, "expires_in": 59},
        {**good, "issued_at": "2026-11-28 04:35:00"},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "token"},
        {**good, "refresh_token": "not-ours"},
    ):
        assert not token.is_valid(bad), bad
    oauth = schema_validator(registry, pointer("components", "schemas", "OAuthTokenResponse"))
    exchanged = {
        **good,
        "scope": "",
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "refresh_token": UNKNOWN_REFRESH_TOKEN,
    }
    assert oauth.is_valid(exchanged)
    assert oauth.is_valid({**good, "scope": ""})
    for bad_oauth in (
        {k: v for k, v in exchanged.items() if k != "refresh_token"},  # always a session
        {k: v for k, v in exchanged.items() if k != "token_type"},
        {k: v for k, v in exchanged.items() if k != "issued_token_type"},
        {**exchanged, "token_type": "bearer-ish"},
        {**exchanged, "issued_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
    ):
        assert not oauth.is_valid(bad_oauth), bad_oauth
    token_form = schema_validator(registry, pointer("components", "schemas", "TokenForm"))
    exchange = {
        "grant_type": EXCHANGE,
        "subject_token": "a.b.c",
        "subject_token_type": ID_TOKEN_TYPE,
    }
    assert token_form.is_valid(exchange)  # no client_id: optional for this grant only
    assert token_form.is_valid({**exchange, "requested_token_type": ACCESS_TOKEN_TYPE})
    assert token_form.is_valid({"grant_type": "password", "username": "u", "password": "p",
                                "client_id": "c"})
    for bad_form in (
        {"grant_type": "password", "username": "u", "password": "p"},
        {k: v for k, v in exchange.items() if k != "subject_token"},
        {k: v for k, v in exchange.items() if k != "subject_token_type"},
        {**exchange, "subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
        {**exchange, "requested_token_type": "urn:ietf:params:oauth:token-type:id_token"},
    ):
        assert not token_form.is_valid(bad_form), bad_form
    ready = schema_validator(registry, pointer("components", "schemas", "Ready"))
    keys = {"keys_fetched_at": 1, "stale": False, "last_error": None}
    assert ready.is_valid({"status": "ready", "policy": "0" * 64, "oidc": {"gh": keys}})
    for bad_keys in (
        {k: v for k, v in keys.items() if k != "stale"},
        {**keys, "keys_fetched_at": "now"},
        {**keys, "extra": 1},
    ):
        assert not ready.is_valid({"status": "ready", "policy": "0" * 64, "oidc": {"gh": bad_keys}})
    explain = schema_validator(registry, pointer("components", "schemas", "ExplainRequest"))
    scopes = ["repository:a:pull"]
    assert explain.is_valid({"account": "a", "scopes": scopes})
    assert explain.is_valid({"anonymous": True, "scopes": scopes})
    for bad_request in (
        {"scopes": scopes},
        {"account": "a", "scopes": []},
        {"account": "a", "scopes": scopes, "extra": 1},
        {"anonymous": True, "account": "a", "scopes": scopes},
        {"anonymous": True, "groups": [], "scopes": scopes},
        {"account": "a", "kind": "anonymous", "scopes": scopes},
    ):
        assert not explain.is_valid(bad_request), bad_request
    action = schema_validator(registry, pointer("components", "schemas", "ExplainedAction"))
    granted = {
        "action": "pull",
        "decision": "granted",
        "allowed_by": ["r"],
        "denied_by": [],
        "explanation": "granted by r",
    }
    assert action.is_valid(granted)
    for bad_action in (
        {**granted, "denied_by": ["r"]},
        {**granted, "allowed_by": []},
        {**granted, "decision": "denied"},
    ):
        assert not action.is_valid(bad_action), bad_action
