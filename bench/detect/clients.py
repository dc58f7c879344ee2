"""Registry clients as the token endpoint sees them: a family and its User-Agent strings.

The strings are what these clients send (docker's is built by the daemon, which runs
in a Linux VM on Docker Desktop: ``os/linux`` with a ``linuxkit`` or ``WSL2`` kernel,
and the CLI's platform in ``UpstreamClient``). How a family asks for tokens follows
the protocol notes in DESIGN.md: dockerd logs in once (``offline_token=true``,
``client_id=docker``) and then uses its refresh token; containerd POSTs
``grant_type=password``; the others send Basic auth on every request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["FAMILIES", "HUMAN_FAMILIES", "Client", "docker_agent", "pick_client"]


def docker_agent(version: str, go: str, commit: str, kernel: str, arch: str, cli: str) -> str:
    return (
        f"docker/{version} go/{go} git-commit/{commit} kernel/{kernel} os/linux arch/{arch}"
        f" UpstreamClient(Docker-Client/{version} \\({cli}\\))"
    )


_DOCKER_BUILDS = (
    ("23.0.6", "go1.19.9", "9dbdbd4"),
    ("24.0.6", "go1.20.7", "1a79695"),
    ("24.0.7", "go1.20.10", "311b9ff"),
    ("25.0.3", "go1.21.6", "f417435"),
    ("26.1.4", "go1.21.11", "de5c9cf"),
)
_KERNELS = {
    "linux": (("6.5.0-14-generic", "amd64"), ("5.15.0-91-generic", "amd64"),
              ("6.8.0-35-generic", "amd64"), ("6.1.0-18-arm64", "arm64")),
    "darwin": (("6.4.16-linuxkit", "arm64"), ("6.6.12-linuxkit", "arm64"),
               ("6.6.22-linuxkit", "amd64")),
    "windows": (("5.15.133.1-microsoft-standard-WSL2", "amd64"),
                ("5.15.146.1-microsoft-standard-WSL2", "amd64")),
    "runner": (("6.2.0-1018-azure", "amd64"), ("6.5.0-1016-azure", "amd64"),
               ("6.1.0-17-cloud-amd64", "amd64")),
}


def _docker(platform: str, cli: str) -> tuple[str, ...]:
    return tuple(
        docker_agent(version, go, commit, kernel, arch, cli)
        for version, go, commit in _DOCKER_BUILDS
        for kernel, arch in _KERNELS[platform]
    )


#: family -> the User-Agent strings its members send.
FAMILIES: dict[str, tuple[str, ...]] = {
    "docker-linux": _docker("linux", "linux"),
    "docker-darwin": _docker("darwin", "darwin"),
    "docker-windows": _docker("windows", "windows"),
    "docker-runner": _docker("runner", "linux"),
    "buildkit": ("buildkit/v0.12.5", "buildkit/v0.13.2"),
    "podman": ("libpod/4.3.1", "libpod/4.9.3", "libpod/5.0.2"),
    "skopeo": ("skopeo/1.9.3", "skopeo/1.13.3", "skopeo/1.15.1"),
    "containerd": ("containerd/1.7.2", "containerd/1.6.24", "containerd/1.7.13"),
    "crane": ("go-containerregistry/v0.19.0", "go-containerregistry/v0.20.1"),
    "browser": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like"
        " Gecko) Chrome/121.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
        "Mozilla/5.0 (X11; Linux x86_64; rv:122.0) Gecko/20100101 Firefox/122.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like"
        " Gecko) Version/17.3 Safari/605.1.15",
    ),
    "curl": ("curl/8.1.2", "curl/7.88.1", "curl/8.5.0"),
    "python-requests": ("python-requests/2.31.0", "python-requests/2.28.1"),
    "go-http": ("Go-http-client/1.1", "Go-http-client/2.0"),
}

#: What people at the company use, with weights.
HUMAN_FAMILIES: tuple[tuple[str, int], ...] = (
    ("docker-darwin", 40), ("docker-linux", 28), ("docker-windows", 10), ("podman", 10),
    ("skopeo", 4), ("browser", 4), ("curl", 2), ("python-requests", 2),
)


@dataclass(frozen=True)
class Client:
    """One installed client: how it asks for tokens follows from its family."""

    family: str
    user_agent: str

    @property
    def uses_refresh_token(self) -> bool:
        return self.family.startswith("docker-")

    @property
    def grant_type(self) -> str | None:
        """The grant type of a request that carries the password."""
        return "password" if self.family == "containerd" else None


def pick_client(rng: random.Random, family: str | None = None) -> Client:
    if family is None:
        names = [name for name, _ in HUMAN_FAMILIES]
        family = rng.choices(names, weights=[w for _, w in HUMAN_FAMILIES])[0]
    return Client(family, rng.choice(FAMILIES[family]))
