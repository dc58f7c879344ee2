"""The simulated internet: named networks, one autonomous system each, and addresses.

Every network is a CIDR block with a kind (what sort of place a request from it comes
from) and a private-use AS number standing in for its real one. The blocks are
arbitrary and carry no claim about who holds them in the real world; the three
documentation ranges (RFC 5737) are the offices.

Addresses are handed out by an :class:`Allocator` one /24 at a time, and no /24 is
ever handed out twice in one simulation: a home network, an office, a botnet node and
an attacker's server never share a /24 by accident, so a campaign's addresses name the
campaign alone.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

__all__ = [
    "NETWORKS", "RUNNER_NETWORKS", "Allocator", "Network", "Subnet", "network", "networks_of"
]


@dataclass(frozen=True)
class Network:
    """One block of address space: ``kind`` is residential, mobile, travel, office,
    runner, cluster, cloud or hosting; ``region`` names the time zone group its
    residential customers live in (empty for the others)."""

    name: str
    kind: str
    asn: int
    cidr: str
    region: str = ""

    @property
    def block(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)


@dataclass(frozen=True)
class Subnet:
    """A /24 (or smaller) handed out to one holder."""

    network: Network
    base: int  # the integer value of the first address
    size: int = 256

    def address(self, rng: random.Random) -> str:
        return str(ipaddress.IPv4Address(self.base + rng.randrange(2, self.size - 1)))

    def host(self, index: int) -> str:
        return str(ipaddress.IPv4Address(self.base + index))

    @property
    def cidr(self) -> str:
        prefix = 32 - (self.size.bit_length() - 1)
        return f"{ipaddress.IPv4Address(self.base)}/{prefix}"


#: (name, kind, CIDR, region); each gets the next private-use AS number from 64513.
_PLAN: tuple[tuple[str, str, str, str], ...] = (
    # residential broadband, by the region its customers live in
    ("cable-west", "residential", "24.0.0.0/12", "us-west"),
    ("fibre-west", "residential", "24.32.0.0/12", "us-west"),
    ("cable-east", "residential", "68.32.0.0/12", "us-east"),
    ("dsl-east", "residential", "71.224.0.0/12", "us-east"),
    ("broadband-uk", "residential", "81.96.0.0/12", "uk"),
    ("telekom-eu", "residential", "84.128.0.0/12", "eu"),
    ("fibre-eu", "residential", "91.32.0.0/12", "eu"),
    ("broadband-in", "residential", "49.200.0.0/13", "in"),
    ("cable-br", "residential", "177.32.0.0/12", "br"),
    ("fibre-jp", "residential", "126.0.0.0/12", "jp"),
    # phones and tethering (carrier-grade NAT: many customers per address)
    ("mobile-us", "mobile", "172.56.0.0/14", ""),
    ("mobile-eu", "mobile", "80.187.0.0/16", ""),
    # where travellers connect from
    ("hotel-wifi", "travel", "64.62.0.0/16", ""),
    ("airport-wifi", "travel", "12.130.0.0/16", ""),
    ("coworking", "travel", "104.28.0.0/16", ""),
    # the company's offices: one NAT address each, in the documentation ranges
    ("office-hq", "office", "198.51.100.0/24", ""),
    ("office-east", "office", "203.0.113.0/24", ""),
    ("office-eu", "office", "192.0.2.0/24", ""),
    ("office-in", "office", "198.18.4.0/24", ""),
    # CI runners (declared to the detectors as runner networks) and the clusters
    ("runners-a", "runner", "10.20.0.0/16", ""),
    ("runners-b", "runner", "10.21.0.0/16", ""),
    ("k8s-prod", "cluster", "10.40.0.0/16", ""),
    ("k8s-staging", "cluster", "10.41.0.0/16", ""),
    # public clouds (other companies' build systems pulling public images)
    ("cloud-a", "cloud", "35.184.0.0/13", ""),
    ("cloud-b", "cloud", "52.0.0.0/11", ""),
    # rented servers: where attackers work from
    ("vps-a", "hosting", "45.76.0.0/15", ""),
    ("vps-b", "hosting", "159.65.0.0/16", ""),
    ("vps-c", "hosting", "185.220.96.0/19", ""),
    ("bulletproof", "hosting", "193.233.0.0/16", ""),
)

NETWORKS: tuple[Network, ...] = tuple(
    Network(name, kind, 64_513 + i, cidr, region)
    for i, (name, kind, cidr, region) in enumerate(_PLAN)
)
RUNNER_NETWORKS: tuple[str, ...] = tuple(n.cidr for n in NETWORKS if n.kind == "runner")


def networks_of(kind: str, region: str | None = None) -> list[Network]:
    return [
        n for n in NETWORKS if n.kind == kind and (region is None or n.region == region)
    ]


def network(name: str) -> Network:
    for candidate in NETWORKS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


class Allocator:
    """Hands out /24s, each once, at random places in their network."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._taken: set[int] = set()

    def subnet(self, net: Network) -> Subnet:
        block = net.block
        if block.prefixlen >= 24:
            base = int(block.network_address)
            if base in self._taken:
                raise ValueError(f"{net.name} ({net.cidr}) is one /24 and already handed out")
            self._taken.add(base)
            return Subnet(net, base, block.num_addresses)
        count = block.num_addresses // 256
        for _ in range(1000):
            base = int(block.network_address) + 256 * self._rng.randrange(count)
            if base not in self._taken:
                self._taken.add(base)
                return Subnet(net, base)
        raise ValueError(f"{net.name} ({net.cidr}) has no free /24 left")

    def address(self, net: Network) -> str:
        """A single address in a /24 of its own."""
        return self.subnet(net).address(self._rng)
