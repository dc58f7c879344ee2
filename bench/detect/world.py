"""The simulated company: teams, repositories, people, CI identities and robots.

Everything here is drawn once per seed from its own random stream, before any traffic:

* teams (a group ``team-NAME`` each) owning 25-45 repositories, plus the shared
  namespaces ``base/``, ``tools/`` and ``public/``; within a namespace popularity is
  Zipf-like (the first repository is pulled most);
* people in teams, each with a region (a fixed UTC offset: no daylight saving), working
  hours, a home /24 at a residential ISP of their region, perhaps an office they go to
  on some weekdays (the office is one NAT address shared by everyone there), one or two
  registry clients and a password of their own; a few share one weak password (the
  ones a spray can find);
* dormant accounts: people who left about four months before the window;
* CI identities (GitHub and GitLab OIDC, kind ci; AWS roles, kind robot) on the runner
  networks, and two static deploy robots in the clusters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from bench.detect.clients import Client, pick_client
from bench.detect.network import Allocator, Network, Subnet, network, networks_of
from bench.detect.policy import Principal

__all__ = [
    "FIRST_NAMES", "LAST_NAMES", "REGIONS", "WEAK_PASSWORD", "Human", "Namespace", "Workload",
    "World", "build_world",
]

#: region -> UTC offset in minutes (fixed: the simulation has no daylight saving).
REGIONS: dict[str, int] = {
    "us-west": -480, "us-east": -300, "br": -180, "uk": 0, "eu": 60, "in": 330, "jp": 540,
}
_OFFICES = {"us-west": "office-hq", "us-east": "office-east", "uk": "office-eu",
            "eu": "office-eu", "in": "office-in"}
_TEAMS = ("payments", "checkout", "search", "identity", "data", "ml", "mobile", "web",
          "infra", "platform")
_COMPONENTS = (
    "api", "worker", "web", "gateway", "scheduler", "indexer", "ingest", "exporter",
    "migrations", "frontend", "backend", "cron", "proxy", "cache", "auth", "billing",
    "notifier", "reports", "etl", "trainer", "serving", "feature-store", "sdk", "cli",
    "docs", "e2e-tests", "loadgen", "admin", "sync", "ui", "ledger", "router", "queue",
    "webhooks", "search-api", "analytics", "mailer", "uploader", "thumbnails", "audit",
    "fraud", "pricing", "catalog", "inventory", "sessions", "graphql", "grpc-gateway",
    "jobs", "backfill", "importer", "rules", "alerts", "metrics-agent", "sidecar",
)
_SHARED = {
    "base": ("python", "node", "golang", "alpine", "debian", "java", "nginx", "ubuntu",
             "postgres", "redis", "rust", "distroless", "dotnet", "ruby", "php"),
    "tools": ("kubectl", "helm", "terraform", "awscli", "trivy", "jq", "psql", "cosign",
              "syft", "buildkit"),
    "public": ("sdk", "cli", "agent", "examples", "docs"),
}
FIRST_NAMES = (
    "james", "mary", "wei", "priya", "carlos", "anna", "olu", "yuki", "lena", "omar",
    "sofia", "raj", "emma", "lucas", "fatima", "noah", "chloe", "ivan", "mei", "ana",
    "david", "sara", "ahmed", "julia", "kenji", "laura", "diego", "nina", "tom", "aisha",
    "paul", "ines", "arjun", "hana", "marco", "elena", "sam", "zoe", "felix", "maya",
    "leo", "rosa", "ben", "ida", "hugo", "vera", "max", "lily", "jon", "eva",
)
LAST_NAMES = (
    "smith", "garcia", "chen", "patel", "silva", "mueller", "okafor", "tanaka", "rossi",
    "nguyen", "kim", "kowalski", "johnson", "fernandez", "ivanova", "haddad", "sato",
    "dubois", "novak", "lopez", "brown", "wang", "singh", "costa", "schmidt", "adeyemi",
    "suzuki", "bianchi", "tran", "park", "nowak", "miller", "martinez", "li", "sharma",
    "santos", "weber", "eze", "ito", "romano", "pham", "lee", "walker", "ruiz", "zhang",
    "gupta", "alves", "fischer", "obi", "kato",
)
WEAK_PASSWORD = "Winter2024!"


@dataclass(frozen=True)
class Namespace:
    """The repositories of one namespace, most popular first, with Zipf weights."""

    name: str
    repos: tuple[str, ...]
    cum_weights: tuple[float, ...]

    def pick(self, rng: random.Random) -> str:
        return rng.choices(self.repos, cum_weights=self.cum_weights)[0]


def _namespace(name: str, components: list[str] | tuple[str, ...]) -> Namespace:
    repos = tuple(f"{name}/{c}" for c in components)
    total, cum = 0.0, []
    for rank in range(1, len(repos) + 1):
        total += 1.0 / rank**1.1
        cum.append(total)
    return Namespace(name, repos, tuple(cum))


@dataclass(frozen=True)
class Human:
    username: str
    principal: Principal
    team: str
    region: str
    tz_minutes: int
    start_minute: int  # local time work starts, minutes after midnight
    length_minutes: int
    home: Subnet
    home_ip: str
    office_ip: str | None
    office_days: frozenset[int]  # weekdays (0 = Monday) spent at the office
    clients: tuple[Client, ...]
    daily_ops: float
    push_share: float
    password: str
    neighbours: tuple[str, ...]  # other teams' namespaces this person pulls from


@dataclass(frozen=True)
class Workload:
    """A CI identity or robot: who it is, where it runs and what it builds."""

    name: str
    principal: Principal
    team: str
    claims: dict[str, str]
    network: Network
    family: str  # client family
    repos: tuple[str, ...]  # what it pushes (CI) or pulls most (deploy robots)
    jobs_per_day: int
    release_weekday: int
    password: str  # deploy robots only: their static password

    def network_address(self, rng: random.Random) -> str:
        """Some address of its network (a runner, a cluster's NAT)."""
        block = self.network.block
        return str(block.network_address + rng.randrange(2, block.num_addresses - 1))


@dataclass(frozen=True)
class World:
    teams: tuple[str, ...]
    namespaces: dict[str, Namespace]
    humans: tuple[Human, ...]
    dormant: tuple[Human, ...]
    weak: tuple[str, ...]  # usernames whose password is WEAK_PASSWORD
    ci: tuple[Workload, ...]
    robots: tuple[Workload, ...]
    public_consumers: tuple[str, ...]  # addresses that pull public/ anonymously
    offices: dict[str, str]  # office network name -> its NAT address
    policy_digest: str

    def human(self, username: str) -> Human:
        for person in (*self.humans, *self.dormant):
            if person.username == username:
                return person
        raise KeyError(username)


def _usernames(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    taken: set[str] = set()
    while len(names) < count:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        name = f"{first[0]}{last}"
        suffix = 2
        while name in taken:
            name, suffix = f"{first[0]}{last}{suffix}", suffix + 1
        taken.add(name)
        names.append(name)
    return names


def _human(
    rng: random.Random, alloc: Allocator, offices: dict[str, str], username: str,
    team: str, team_region: str, teams: tuple[str, ...], admin: bool,
) -> Human:
    region = team_region if rng.random() < 0.75 else rng.choice(sorted(REGIONS))
    home = alloc.subnet(rng.choice(networks_of("residential", region)))
    office = _OFFICES.get(region)
    hybrid = office is not None and rng.random() < 0.45
    others = [t for t in teams if t != team]
    neighbours = tuple(rng.sample(others, min(2, len(others))))
    clients = [pick_client(rng)]
    if rng.random() < 0.3:
        clients.append(pick_client(rng))
    if team == "platform":
        read = frozenset({"*"})
        write = frozenset({team, "base", "tools"})
    else:
        read = frozenset({"base", "tools", "public", *neighbours})
        write = frozenset({team})
    principal = Principal(
        kind="human", provider="static", subject=username, account=username,
        groups=(f"team-{team}",) + (("admins",) if admin else ()),
        write=write, read=read, admin=admin,
    )
    return Human(
        username=username, principal=principal, team=team, region=region,
        tz_minutes=REGIONS[region],
        start_minute=rng.randrange(7 * 60, 10 * 60 + 30, 5),
        length_minutes=rng.randrange(7 * 60 + 30, 10 * 60, 5),
        home=home, home_ip=home.address(rng),
        office_ip=offices[office] if hybrid and office else None,
        office_days=frozenset(rng.sample(range(5), rng.choice((2, 3, 4)))) if hybrid
        else frozenset(),
        clients=tuple(clients),
        daily_ops=rng.lognormvariate(3.75, 0.5),
        push_share=rng.uniform(0.05, 0.2),
        password=f"pw:{username}:{rng.getrandbits(64):016x}",
        neighbours=neighbours,
    )


def _workload(
    rng: random.Random, index: int, team: str, ns: Namespace
) -> Workload:
    provider = ("github", "gitlab", "github", "aws", "gitlab")[index % 5]
    built = tuple(rng.sample(ns.repos, min(len(ns.repos), rng.randint(12, 40))))
    component = built[0].split("/", 1)[1]
    claims: dict[str, str]
    if provider == "github":
        slug = f"acme/{team}-{component}"
        subject, kind, net = f"repo:{slug}:ref:refs/heads/main", "ci", "runners-a"
        claims = {"repository": slug, "ref": "refs/heads/main", "workflow": "build"}
    elif provider == "gitlab":
        path = f"acme/{team}/{component}"
        subject, kind, net = f"project_path:{path}:ref_type:branch:ref:main", "ci", "runners-b"
        claims = {"project_path": path, "ref": "main", "ref_type": "branch"}
    else:
        role = f"build-{team}-{index}"
        subject, kind, net = f"arn:aws:iam::210987654321:role/{role}", "robot", "runners-b"
        claims = {"role": role, "user_id": f"AROA{rng.getrandbits(64):016X}"}
    principal = Principal(
        kind=kind, provider=provider, subject=subject, account=subject,
        write=frozenset({team}), read=frozenset({"base", "tools", "public"}),
    )
    return Workload(
        name=f"{provider}:{team}:{component}", principal=principal, team=team,
        claims=claims, network=network(net), family="docker-runner", repos=built,
        jobs_per_day=rng.randint(10, 40), release_weekday=rng.randrange(5), password="",
    )


def _robot(rng: random.Random, name: str, cluster: str) -> Workload:
    principal = Principal(
        kind="robot", provider="static", subject=name, account=name, groups=("robots",),
        read=frozenset({"*"}),
    )
    return Workload(
        name=name, principal=principal, team="platform", claims={}, network=network(cluster),
        family="containerd", repos=(), jobs_per_day=0, release_weekday=0,
        password=f"robot:{name}:{rng.getrandbits(64):016x}",
    )


def build_world(
    seed: int, *, humans: int = 200, teams: int = 10, ci: int = 30, dormant: int = 8,
    weak: int = 4,
) -> tuple[World, Allocator]:
    """The company of this seed, and the address allocator (for the attackers' /24s)."""
    rng = random.Random(f"{seed}:world")
    alloc = Allocator(rng)
    names = (*_TEAMS[: teams - 1], "platform")
    namespaces = {
        team: _namespace(team, rng.sample(_COMPONENTS, rng.randint(25, 45))) for team in names
    }
    namespaces.update({ns: _namespace(ns, repos) for ns, repos in _SHARED.items()})
    offices = {
        net.name: alloc.subnet(net).host(10) for net in networks_of("office")
    }
    team_region = {
        team: rng.choices(sorted(REGIONS), weights=[3 if r.startswith("us") or r == "eu" else 1
                                                    for r in sorted(REGIONS)])[0]
        for team in names
    }
    usernames = _usernames(rng, humans + dormant)
    people: list[Human] = []
    for i, username in enumerate(usernames):
        team = names[i % len(names)] if i < len(names) else rng.choice(names)
        admin = team == "platform" and sum(p.principal.admin for p in people) < 2
        people.append(_human(rng, alloc, offices, username, team, team_region[team],
                             names, admin))
    staff, gone = people[:humans], people[humans:]
    candidates = [p.username for p in staff if not p.principal.admin]
    weak_names = tuple(rng.sample(candidates, min(weak, len(candidates))))
    staff = [replace(p, password=WEAK_PASSWORD) if p.username in weak_names else p
             for p in staff]
    workloads = tuple(
        _workload(rng, i, names[i % len(names)], namespaces[names[i % len(names)]])
        for i in range(ci)
    )
    robots = (_robot(rng, "deploy-prod", "k8s-prod"), _robot(rng, "deploy-staging",
                                                              "k8s-staging"))
    consumers = tuple(
        alloc.address(rng.choice(networks_of("cloud") + networks_of("residential")))
        for _ in range(300)
    )
    return World(
        teams=names, namespaces=namespaces, humans=tuple(staff), dormant=tuple(gone),
        weak=weak_names, ci=workloads, robots=robots, public_consumers=consumers,
        offices=offices, policy_digest=f"{rng.getrandbits(64):016x}",
    ), alloc

