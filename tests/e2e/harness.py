"""End-to-end harness: the real distribution registry and the real skopeo client.

Helpers: `free_port`, `make_oci_image` / `describe_oci_image` (a tiny deterministic OCI
layout), `Registry` (docker-registry 2.8 as a subprocess, optional token auth),
`Skopeo` (the CLI in an isolated environment), `http_request`, and
`require_e2e_binaries` (skip locally, fail under CI, when a binary is missing).

What skopeo 1.9.3 (containers/image v5.22.1, containers/common v0.49.1) sends to the
token endpoint -- observed with a logging server on 127.0.0.1 behind a real
docker-registry 2.8.2, and checked against docker/docker_client.go and
pkg/docker/config/config.go at v5.22.1 (the token request code is unchanged on
containers/image main):

* The scope in the registry's challenge is ignored. skopeo builds scopes from the
  reference and the command: inspect / list-tags / pull copy `repository:NAME:pull`;
  push copy `repository:NAME:pull,push`; delete `repository:NAME:*` (literal `*`, then a
  GET of the manifest by tag and a DELETE by digest, both with that one token). On push,
  for each blob the blob-info cache knows in ANOTHER repository of the same registry it
  asks for a second token with two scopes, `repository:DEST:pull,push` and
  `repository:SRC:pull`, then HEADs the blob in SRC and mounts it
  (`POST ...?mount=&from=SRC`). Only `repository:` scopes are ever sent; never
  `registry:catalog:*`. (`Skopeo` keeps that cache per instance, so mounts happen only
  within one `Skopeo`'s history.)
* Without an identity token in the authfile it always uses GET
  `REALM?account=USER&scope=S1&scope=S2&service=SERVICE` (Go url.Values.Encode: keys
  sorted, `scope` repeated, never space-joined; realm query parameters are kept and
  merged). Headers: `Authorization: Basic base64(user:password)` (only when username AND
  password are non-empty), `User-Agent: skopeo/1.9.3`, `Accept-Encoding: gzip`,
  `Connection: close` (keep-alives disabled). `account` is present iff a username is
  known (from --creds or the authfile). Anonymous: no `account`, no `Authorization`.
  GET never carries `client_id`, `offline_token` or `grant_type`.
* `skopeo login HOST` sends GET `REALM?account=USER&service=SERVICE` (no scope) with Basic
  auth, and on 200 writes ONLY `{"auths": {"HOST": {"auth": base64("user:password")}}}`.
  A `refresh_token` in the token response is ignored (containers/common's Login calls
  docker.CheckAuth, which discards the token, then config.SetCredentials(user, pass);
  containers/image has no code path that writes `identitytoken`). So after
  `skopeo login`, EVERY later command re-sends the password proof via GET + Basic;
  skopeo never POSTs because of its own login.
* POST happens only when the credentials already hold an identity token: an authfile
  (or ~/.docker/config.json) entry with `identitytoken` AND an `auth` that decodes to
  `user:...` (what `docker login` writes: base64("user:") -- without a decodable
  `auth` the entry is ignored entirely), or a credential helper answering username
  `<token>`. Then: POST REALM (realm query kept in the URL), `Content-Type:
  application/x-www-form-urlencoded`, `Transfer-Encoding: chunked` (no Content-Length:
  the body is an io.NopCloser), body (sorted keys)
  `client_id=containers%2Fimage&grant_type=refresh_token&refresh_token=RT&scope=...&service=SERVICE`
  plus any realm query parameters duplicated into the body. No `account`, no
  `username`, no `Authorization` header. No GET fallback: a 401 on the POST is fatal.
  The `refresh_token` in a POST response is ignored (never rotated or stored).
  Explicit `--creds` beats the authfile (GET with Basic). `skopeo login` refuses to run
  while such an entry exists: "currently logged in, auth file contains an Identity token".
  `Skopeo.write_authfile` plants one for tests.
* Token response: `token`, else `access_token`; `expires_in` < 60 becomes 60;
  `issued_at` is parsed as RFC 3339 (a bad value fails the command); missing
  `issued_at` means now. Tokens are cached per process and scope set until expiry, so
  each skopeo command asks again; `inspect` without `--no-tags` asks twice (the tag list
  opens a second client).
* Client-visible errors (stderr, `level=fatal msg="..."`), useful for assertions:
  token endpoint 401 with `{"errors":[{"code":..., "message": M}]}` ->
  `unable to retrieve auth token: invalid username/password: unauthorized: M`;
  GET 403 -> `Requesting bearer token: invalid status code from registry 403 (Forbidden)`
  (POST failures are prefixed `Trying to obtain access token`); a token without the
  needed access -> registry 401 -> `denied: requested access to the resource is denied`;
  failed login -> `logging into "HOST": invalid username/password`; unreachable realm ->
  `Get "REALM?scope=...": dial tcp ...: connect: connection refused`.
* The registry's challenges (2.8.2): `/v2/` -> `Bearer realm="R",service="S"`; a
  repository URL adds `,scope="repository:team/app:pull"`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import yaml

__all__ = [
    "REGISTRY_BINARY",
    "SKOPEO_TIMEOUT",
    "HttpResponse",
    "OciImage",
    "Registry",
    "Result",
    "Skopeo",
    "SkopeoTimeoutError",
    "describe_oci_image",
    "free_port",
    "http_request",
    "in_ci",
    "make_oci_image",
    "registry_binary",
    "require_e2e_binaries",
    "skopeo_binary",
]

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
SKOPEO_TIMEOUT = 60.0

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


# --------------------------------------------------------------------------- binaries


def in_ci() -> bool:
    """True when the CI environment variable is set (anything but "", "0", "false", "no")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def registry_binary() -> Path | None:
    """The distribution registry binary, or None when it is not installed."""
    if REGISTRY_BINARY.is_file() and os.access(REGISTRY_BINARY, os.X_OK):
        return REGISTRY_BINARY
    return None


def skopeo_binary() -> str | None:
    """The skopeo binary found on PATH (or /usr/bin/skopeo), or None."""
    found = shutil.which("skopeo")
    if found is not None:
        return found
    fallback = Path("/usr/bin/skopeo")
    if fallback.is_file() and os.access(fallback, os.X_OK):
        return str(fallback)
    return None


def require_e2e_binaries(*, registry: bool = True, skopeo: bool = True) -> None:
    """Skip the calling test when a binary is missing; under CI fail it instead.

    CI is supposed to install both binaries, so a missing one there is a broken
    pipeline, not a reason to silently skip the end-to-end tests.
    """
    missing: list[str] = []
    if registry and registry_binary() is None:
        missing.append(f"{REGISTRY_BINARY} (Debian package docker-registry)")
    if skopeo and skopeo_binary() is None:
        missing.append("skopeo")
    if not missing:
        return
    reason = "e2e binaries missing: " + ", ".join(missing)
    if in_ci():
        pytest.fail(reason + " (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- network


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """One plain-HTTP request; never raises on an HTTP error status, never follows redirects."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"only http:// URLs are supported: {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return HttpResponse(status=resp.status, headers=tuple(resp.getheaders()), body=data)
    finally:
        conn.close()


# --------------------------------------------------------------------------- OCI images


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _write_blob(blobs: Path, data: bytes) -> str:
    digest = _sha256(data)
    (blobs / digest.removeprefix("sha256:")).write_bytes(data)
    return digest


def _layer_tar(seed: str, index: int) -> bytes:
    """A deterministic, uncompressed tar: one directory and one seed-dependent file."""
    content = f"seed={seed}\nlayer={index}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(f"layer{index}")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        directory.mtime = 0
        tar.addfile(directory)
        member = tarfile.TarInfo(f"layer{index}/content.txt")
        member.size = len(content)
        member.mode = 0o644
        member.mtime = 0
        tar.addfile(member, io.BytesIO(content))
    return buf.getvalue()


@dataclass(frozen=True)
class OciImage:
    """Digests of an image in an OCI layout written by `make_oci_image`."""

    directory: Path
    manifest_digest: str
    manifest_size: int
    config_digest: str
    layer_digests: tuple[str, ...]
    diff_ids: tuple[str, ...]


def make_oci_image(directory: Path, *, layers: int = 1, seed: str = "x") -> Path:
    """Write an OCI image layout of a tiny linux/amd64 image into `directory`.

    Each of the `layers` gzip'd tar layers holds `layerN/content.txt` whose content depends
    on `seed` and N, so different seeds / layers give different digests; the same seed gives
    byte-identical output. index.json names the manifest `latest`, so skopeo accepts
    `oci:DIRECTORY:latest`. Returns `directory`; see `describe_oci_image` for the digests.
    """
    if layers < 1:
        raise ValueError("an image needs at least one layer")
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    layer_descriptors: list[dict[str, Any]] = []
    diff_ids: list[str] = []
    history: list[dict[str, Any]] = []
    for index in range(layers):
        tar_bytes = _layer_tar(seed, index)
        diff_ids.append(_sha256(tar_bytes))
        compressed = gzip.compress(tar_bytes, compresslevel=9, mtime=0)
        layer_descriptors.append(
            {
                "mediaType": OCI_LAYER_GZIP,
                "digest": _write_blob(blobs, compressed),
                "size": len(compressed),
            }
        )
        history.append({"created": "2000-01-01T00:00:00Z", "created_by": f"layer {index}"})

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2000-01-01T00:00:00Z",
        "config": {"Env": [f"SEED={seed}"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_bytes = _canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": _write_blob(blobs, config_bytes),
            "size": len(config_bytes),
        },
        "layers": layer_descriptors,
    }
    manifest_bytes = _canonical_json(manifest)
    index_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": _write_blob(blobs, manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {REF_NAME_ANNOTATION: "latest"},
            }
        ],
    }
    (directory / "oci-layout").write_bytes(_canonical_json({"imageLayoutVersion": "1.0.0"}))
    (directory / "index.json").write_bytes(_canonical_json(index_doc))
    return directory


def describe_oci_image(directory: Path, ref_name: str = "latest") -> OciImage:
    """Read back the digests of the image named `ref_name` in an OCI layout."""
    index_doc = json.loads((directory / "index.json").read_bytes())
    for descriptor in index_doc.get("manifests", []):
        if descriptor.get("annotations", {}).get(REF_NAME_ANNOTATION) != ref_name:
            continue
        digest: str = descriptor["digest"]
        blobs = directory / "blobs" / "sha256"
        manifest = json.loads((blobs / digest.removeprefix("sha256:")).read_bytes())
        config = json.loads(
            (blobs / str(manifest["config"]["digest"]).removeprefix("sha256:")).read_bytes()
        )
        return OciImage(
            directory=directory,
            manifest_digest=digest,
            manifest_size=int(descriptor["size"]),
            config_digest=str(manifest["config"]["digest"]),
            layer_digests=tuple(str(layer["digest"]) for layer in manifest["layers"]),
            diff_ids=tuple(str(d) for d in config["rootfs"]["diff_ids"]),
        )
    raise LookupError(f"no manifest named {ref_name!r} in {directory}/index.json")


# --------------------------------------------------------------------------- registry


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            out[key] = _merge(current, value)
        else:
            out[key] = value
    return out


class Registry:
    """The real distribution registry (2.8) as a subprocess on 127.0.0.1.

    Without `realm` the registry has no auth. With it, `auth.token` is configured with
    realm/service/issuer/rootcertbundle and the registry verifies tokens offline against
    the bundle (a PEM file of certificates); change the bundle, then `restart()`.
    `extra_config` is merged recursively into the generated config (tests that need e.g.
    notifications). Use as a context manager; the port stays the same across restarts.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        realm: str | None = None,
        service: str = "registry.test",
        issuer: str = "authsvc",
        rootcertbundle: Path | None = None,
        extra_config: Mapping[str, Any] | None = None,
        binary: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        if realm is not None and rootcertbundle is None:
            raise ValueError("token auth (realm) needs a rootcertbundle")
        self.workdir = workdir
        self.realm = realm
        self.service = service
        self.issuer = issuer
        self.rootcertbundle = rootcertbundle
        self.extra_config: Mapping[str, Any] = extra_config or {}
        self.binary = binary or REGISTRY_BINARY
        self.start_timeout = start_timeout
        self.config_path = workdir / "config.yml"
        self.log_path = workdir / "registry.log"
        self.storage_dir = workdir / "storage"
        self.port = free_port()
        self._secret = secrets.token_hex(16)
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses
    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`: the registry part of a `docker://` reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, repository: str, tag: str = "latest") -> str:
        """`docker://127.0.0.1:PORT/<repository>:<tag>` (tag may also be `@sha256:…`)."""
        sep = "" if tag.startswith("@") else ":"
        return f"docker://{self.host}/{repository}{sep}{tag}"

    # -- config
    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                "secret": self._secret,
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.realm is not None:
            cfg["auth"] = {
                "token": {
                    "realm": self.realm,
                    "service": self.service,
                    "issuer": self.issuer,
                    "rootcertbundle": str(self.rootcertbundle),
                }
            }
        return _merge(cfg, self.extra_config)

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    # -- lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the registry on `self.port` and wait until GET /v2/ answers 200 or 401.

        On the very first start a lost race for the port (another process took it
        between `free_port()` and the registry's bind) is retried on a fresh port.
        """
        if self.running:
            raise RuntimeError("registry already running")
        first_start = not self.log_path.exists()
        for attempt in range(3):
            self.write_config()
            if self._spawn_and_wait():
                return
            log = self.log_text()
            if first_start and attempt < 2 and "address already in use" in log:
                self.port = free_port()
                continue
            raise RuntimeError(f"registry on {self.host} did not become ready; log:\n{log}")

    def _spawn_and_wait(self) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log_path.open("ab") as log:
            log.write(f"--- harness: starting registry on {self.host}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [str(self.binary), "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_request("GET", self.url + "/v2/", timeout=1.0).status in (200, 401):
                    return True
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        """Terminate (then kill, if needed) the registry; a no-op when it is not running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port (e.g. after the cert bundle changed)."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        """Everything the registry wrote (stdout and stderr, all starts) so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> HttpResponse:
        """GET `path` (e.g. "/v2/") on the registry."""
        return http_request("GET", self.url + path, headers=headers)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- skopeo


class SkopeoTimeoutError(AssertionError):
    """skopeo did not finish within the harness timeout."""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
    argv: tuple[str, ...] = field(default=(), compare=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> Self:
        """Return self when the command succeeded, else raise AssertionError with stderr."""
        if self.returncode != 0:
            raise AssertionError(
                f"command failed with exit code {self.returncode}: {' '.join(self.argv)}\n"
                f"--- stderr:\n{self.stderr}\n--- stdout:\n{self.stdout}"
            )
        return self

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)


INSECURE_POLICY: dict[str, Any] = {"default": [{"type": "insecureAcceptAnything"}]}


class Skopeo:
    """The skopeo CLI in an isolated environment.

    Everything lives under `workdir`: HOME, XDG_* dirs, the authfile (`--authfile`, also
    REGISTRY_AUTH_FILE), an accept-anything `--policy`, an empty `--registries-conf`, and the
    blob-info cache (so blob-mount attempts across repositories are reproducible within one
    Skopeo instance and never leak between tests). All registry access uses
    `--tls-verify=false` because the registry is plain HTTP on 127.0.0.1.
    Methods return a `Result` and never raise on a non-zero exit; a hang longer than
    `timeout` seconds raises `SkopeoTimeoutError`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        binary: str | None = None,
        debug: bool = False,
        timeout: float = SKOPEO_TIMEOUT,
    ) -> None:
        found = binary or skopeo_binary()
        if found is None:
            raise FileNotFoundError("skopeo is not installed")
        self.binary = found
        self.debug = debug
        self.timeout = timeout
        self.workdir = workdir
        self.home = workdir / "home"
        self.runtime_dir = workdir / "run"
        self.tmp_dir = workdir / "tmp"
        self.authfile = workdir / "auth.json"
        self.policy = workdir / "policy.json"
        self.registries_conf = workdir / "registries.conf"
        for directory in (self.home, self.runtime_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.chmod(0o700)
        self.policy.write_text(json.dumps(INSECURE_POLICY))
        self.registries_conf.write_text("unqualified-search-registries = []\n")

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF")
            and not key.startswith(("XDG_", "CONTAINERS_", "_CONTAINERS_"))
        }
        env.update(
            {
                "HOME": str(self.home),
                "XDG_RUNTIME_DIR": str(self.runtime_dir),
                "XDG_CONFIG_HOME": str(self.home / ".config"),
                "XDG_DATA_HOME": str(self.home / ".local" / "share"),
                "XDG_CACHE_HOME": str(self.home / ".cache"),
                "REGISTRY_AUTH_FILE": str(self.authfile),
                "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
                "TMPDIR": str(self.tmp_dir),
                # containers/image puts the blob-info cache in /var/lib/containers/cache
                # when euid == 0; this makes it use $XDG_DATA_HOME/containers/cache instead.
                "_CONTAINERS_ROOTLESS_UID": "1000",
            }
        )
        return env

    def run(self, *args: str, stdin: str | None = None) -> Result:
        """`skopeo --policy P --registries-conf R [--debug] ARGS...`."""
        argv = [
            self.binary,
            "--policy",
            str(self.policy),
            "--registries-conf",
            str(self.registries_conf),
            "--tmpdir",
            str(self.tmp_dir),
        ]
        if self.debug:
            argv.append("--debug")
        argv.extend(args)
        try:
            proc = subprocess.run(
                argv,
                input=stdin if stdin is not None else "",
                capture_output=True,
                text=True,
                env=self.env(),
                cwd=self.workdir,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SkopeoTimeoutError(
                f"skopeo timed out after {self.timeout} s: {' '.join(argv)}\n"
                f"--- stderr:\n{_text(exc.stderr)}"
            ) from exc
        return Result(proc.returncode, proc.stdout, proc.stderr, tuple(argv))

    # -- commands
    def copy(
        self,
        src: str,
        dst: str,
        *,
        creds: str | None = None,
        src_creds: str | None = None,
        dest_creds: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> Result:
        """`skopeo copy SRC DST`; `creds` applies to whichever side is `docker://`."""
        if src.startswith("docker://"):
            src_creds = src_creds if src_creds is not None else creds
        if dst.startswith("docker://"):
            dest_creds = dest_creds if dest_creds is not None else creds
        args = [
            "copy",
            "--authfile",
            str(self.authfile),
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ]
        if src_creds is not None:
            args += ["--src-creds", src_creds]
        if dest_creds is not None:
            args += ["--dest-creds", dest_creds]
        args += [*extra_args, src, dst]
        return self.run(*args)

    def _registry_command(
        self, command: str, ref: str, creds: str | None, extra_args: Sequence[str]
    ) -> Result:
        args = [command, "--authfile", str(self.authfile), "--tls-verify=false"]
        if creds is not None:
            args += ["--creds", creds]
        return self.run(*args, *extra_args, ref)

    def inspect(
        self, ref: str, creds: str | None = None, *, raw: bool = False, config: bool = False
    ) -> Result:
        """`skopeo inspect [--raw] [--config] REF` (JSON on stdout: use `.json()`)."""
        extra = (["--raw"] if raw else []) + (["--config"] if config else [])
        return self._registry_command("inspect", ref, creds, extra)

    def list_tags(self, ref: str, creds: str | None = None) -> Result:
        """`skopeo list-tags docker://HOST/REPO` → {"Repository": ..., "Tags": [...]}."""
        return self._registry_command("list-tags", ref, creds, ())

    def delete(self, ref: str, creds: str | None = None) -> Result:
        """`skopeo delete REF` (asks for scope `repository:NAME:*`)."""
        return self._registry_command("delete", ref, creds, ())

    def login(self, host: str, username: str, password: str) -> Result:
        """`skopeo login -u USER --password-stdin HOST` (the password never appears in argv)."""
        return self.run(
            "login",
            "--authfile",
            str(self.authfile),
            "--tls-verify=false",
            "--username",
            username,
            "--password-stdin",
            host,
            stdin=password + "\n",
        )

    def logout(self, host: str) -> Result:
        return self.run("logout", "--authfile", str(self.authfile), host)

    def read_authfile(self) -> dict[str, Any]:
        """The authfile's JSON ({} when skopeo has not written one)."""
        if not self.authfile.exists():
            return {}
        data: dict[str, Any] = json.loads(self.authfile.read_text())
        return data

    def write_authfile(self, data: Mapping[str, Any]) -> None:
        """Replace the authfile, e.g. to plant an `identitytoken` (refresh token)."""
        self.authfile.write_text(json.dumps(data))
        self.authfile.chmod(0o600)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value
