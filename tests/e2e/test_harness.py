"""Tests proving the e2e harness drives the real registry and the real skopeo."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import harness
from .harness import (
    Registry,
    Result,
    Skopeo,
    describe_oci_image,
    free_port,
    make_oci_image,
    require_e2e_binaries,
)

REALM = "http://127.0.0.1:1/token"  # nothing listens on port 1: every token request fails
SERVICE = "registry.test"
ISSUER = "authsvc-test"


@pytest.fixture
def e2e_binaries() -> None:
    require_e2e_binaries()


def write_self_signed_bundle(path: Path, common_name: str = "authsvc-test") -> Path:
    """A throwaway ES256 key's self-signed certificate, PEM, as a registry rootcertbundle."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


# --------------------------------------------------------------------------- pure helpers


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    assert 1024 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_make_oci_image_layout(tmp_path: Path) -> None:
    directory = make_oci_image(tmp_path / "img", layers=3, seed="s1")
    assert directory == tmp_path / "img"
    assert json.loads((directory / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((directory / "index.json").read_text())
    assert index["schemaVersion"] == 2
    (entry,) = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "latest"}
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"

    image = describe_oci_image(directory)
    assert image.manifest_digest == entry["digest"]
    assert len(image.layer_digests) == len(set(image.layer_digests)) == 3
    assert len(image.diff_ids) == 3
    blobs = directory / "blobs" / "sha256"
    config = json.loads((blobs / image.config_digest.removeprefix("sha256:")).read_text())
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["rootfs"] == {"type": "layers", "diff_ids": list(image.diff_ids)}
    # every referenced blob exists and has the digest it is named by
    import hashlib

    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_make_oci_image_deterministic_and_seeded(tmp_path: Path) -> None:
    a1 = describe_oci_image(make_oci_image(tmp_path / "a1", layers=2, seed="a"))
    a2 = describe_oci_image(make_oci_image(tmp_path / "a2", layers=2, seed="a"))
    b = describe_oci_image(make_oci_image(tmp_path / "b", layers=2, seed="b"))
    assert a1.manifest_digest == a2.manifest_digest
    assert a1.layer_digests == a2.layer_digests
    assert a1.manifest_digest != b.manifest_digest
    assert not set(a1.layer_digests) & set(b.layer_digests)
    with pytest.raises(ValueError):
        make_oci_image(tmp_path / "none", layers=0)


def test_result_check() -> None:
    ok = Result(0, "out", "")
    assert ok.check() is ok
    assert ok.ok
    bad = Result(1, "", "level=fatal msg=boom", ("skopeo", "inspect"))
    with pytest.raises(AssertionError, match="boom"):
        bad.check()


def test_missing_binary_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(harness, "REGISTRY_BINARY", tmp_path / "no-such-registry")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-registry"):
        require_e2e_binaries()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-registry"):
        require_e2e_binaries()


def test_registry_requires_bundle_with_realm(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rootcertbundle"):
        Registry(tmp_path, realm=REALM, service=SERVICE, issuer=ISSUER, rootcertbundle=None)


# --------------------------------------------------------------------------- real registry


@pytest.mark.e2e
@pytest.mark.usefixtures("e2e_binaries")
def test_push_inspect_list_pull_delete_without_auth(tmp_path: Path) -> None:
    image_dir = make_oci_image(tmp_path / "img", layers=2, seed="harness")
    image = describe_oci_image(image_dir)
    skopeo = Skopeo(tmp_path / "skopeo")
    with Registry(
        tmp_path / "registry", realm=None, service=SERVICE, issuer=ISSUER, rootcertbundle=None
    ) as registry:
        assert registry.host == f"127.0.0.1:{registry.port}"
        assert registry.url == f"http://{registry.host}"
        assert registry.get("/v2/").status == 200
        ref = f"docker://{registry.host}/team/app:1"

        skopeo.copy(f"oci:{image_dir}:latest", ref).check()

        inspected = skopeo.inspect(ref).check().json()
        assert inspected["Digest"] == image.manifest_digest
        assert inspected["Layers"] == list(image.layer_digests)
        assert len(inspected["Layers"]) == 2
        assert (inspected["Architecture"], inspected["Os"]) == ("amd64", "linux")

        tags = skopeo.list_tags(f"docker://{registry.host}/team/app").check().json()
        assert tags["Tags"] == ["1"]

        back_dir = tmp_path / "back"
        skopeo.copy(ref, f"oci:{back_dir}:latest").check()
        back = describe_oci_image(back_dir)
        assert back.manifest_digest == image.manifest_digest
        assert back.layer_digests == image.layer_digests

        skopeo.delete(ref).check()
        gone = skopeo.inspect(ref)
        assert gone.returncode != 0
        assert "manifest unknown" in gone.stderr

        log = registry.log_text()
        assert "DELETE /v2/team/app/manifests/" + image.manifest_digest in log
        assert "skopeo/" in log
    assert not registry.running


@pytest.mark.e2e
@pytest.mark.usefixtures("e2e_binaries")
def test_login_logout_write_the_isolated_authfile(tmp_path: Path) -> None:
    skopeo = Skopeo(tmp_path / "skopeo")
    with Registry(tmp_path / "registry", realm=None) as registry:
        login = skopeo.login(registry.host, "alice", "s3cret").check()
        assert "s3cret" not in " ".join(login.argv)  # sent on stdin
        assert skopeo.authfile.is_relative_to(tmp_path)
        assert skopeo.read_authfile() == {
            "auths": {registry.host: {"auth": "YWxpY2U6czNjcmV0"}}  # base64("alice:s3cret")
        }
        skopeo.logout(registry.host).check()
        assert skopeo.read_authfile() == {"auths": {}}


@pytest.mark.e2e
@pytest.mark.usefixtures("e2e_binaries")
def test_token_auth_challenge_and_unreachable_realm(tmp_path: Path) -> None:
    bundle = write_self_signed_bundle(tmp_path / "bundle.pem")
    skopeo = Skopeo(tmp_path / "skopeo")
    with Registry(
        tmp_path / "registry",
        realm=REALM,
        service=SERVICE,
        issuer=ISSUER,
        rootcertbundle=bundle,
    ) as registry:
        base = registry.get("/v2/")
        assert base.status == 401
        assert base.header("WWW-Authenticate") == (f'Bearer realm="{REALM}",service="{SERVICE}"')
        manifest = registry.get("/v2/team/app/manifests/1")
        assert manifest.status == 401
        assert manifest.header("WWW-Authenticate") == (
            f'Bearer realm="{REALM}",service="{SERVICE}",scope="repository:team/app:pull"'
        )

        denied = skopeo.inspect(f"docker://{registry.host}/team/app:1", creds="alice:s3cret")
        assert denied.returncode != 0
        assert "127.0.0.1:1/token" in denied.stderr
        assert "connection refused" in denied.stderr

        # a new bundle needs a restart; the port (and so every ref) stays the same
        port = registry.port
        write_self_signed_bundle(bundle, common_name="rotated")
        registry.restart()
        assert registry.port == port
        assert registry.running
        assert registry.get("/v2/").status == 401
        assert registry.log_text().count("--- harness: starting registry") == 2
    assert not registry.running
