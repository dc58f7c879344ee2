"""Who may do what in the simulated registry, and the decision authsvc would record.

The rules are those of a typical company: people pull and push their own team's
repositories, pull the shared ``base/`` and ``tools/`` images and their neighbouring
teams' repositories; the platform team pulls everything and its two admins may do
anything (delete, ``*``, the catalog); CI identities push their team's repositories;
the deploy robots pull every team's; anybody pulls ``public/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CATALOG", "Principal", "decide", "namespace_of"]

CATALOG = "registry:catalog:*"
_ALL_ACTIONS = ("pull", "push", "delete", "*")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and what the rules give it.

    ``write``: namespaces it may pull from and push to; ``read``: namespaces it may pull
    from (``*``: every one); ``admin``: every action everywhere, and the catalog.
    """

    kind: str
    provider: str
    subject: str
    account: str | None
    groups: tuple[str, ...] = ()
    write: frozenset[str] = frozenset()
    read: frozenset[str] = frozenset()
    admin: bool = False

    def may_pull(self, repository: str) -> bool:
        ns = namespace_of(repository)
        return self.admin or ns in self.write or ns in self.read or "*" in self.read


def namespace_of(repository: str) -> str:
    return repository.split("/", 1)[0]


def _allowed(principal: Principal, repository: str) -> tuple[tuple[str, ...], str | None]:
    if principal.admin:
        return _ALL_ACTIONS, "platform-admin"
    ns = namespace_of(repository)
    if ns in principal.write:
        return ("pull", "push"), f"{principal.kind}-write"
    if ns == "public":
        return ("pull",), "public-read"
    if ns in principal.read or "*" in principal.read:
        return ("pull",), f"{principal.kind}-read"
    return (), None


def decide(
    principal: Principal, scopes: Sequence[str]
) -> tuple[list[str], list[str], list[str]]:
    """(granted, denied, rules) for the requested scopes, split by action as authsvc
    records them: ``repository:x:pull,push`` with push refused is granted
    ``repository:x:pull`` and denied ``repository:x:push``."""
    granted: list[str] = []
    denied: list[str] = []
    rules: list[str] = []
    for scope in scopes:
        if scope == CATALOG:
            if principal.admin:
                granted.append(scope)
                rules.append("platform-admin")
            else:
                denied.append(scope)
            continue
        kind, rest = scope.split(":", 1)
        repository, actions = rest.rsplit(":", 1)
        allowed, rule = _allowed(principal, repository)
        yes = [a for a in actions.split(",") if a in allowed]
        no = [a for a in actions.split(",") if a not in allowed]
        if yes:
            granted.append(f"{kind}:{repository}:{','.join(yes)}")
            if rule is not None and rule not in rules:
                rules.append(rule)
        if no:
            denied.append(f"{kind}:{repository}:{','.join(no)}")
    return granted, denied, rules
