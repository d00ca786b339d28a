"""The authorization interface of kube-apiserver (k8s.io/apiserver/pkg/authorization).

What this module guarantees
- `Attributes` are what an authorizer sees of a request: the user, the verb, and either
  the resource coordinates (API group, resource, subresource, namespace, name) or, for a
  non-resource request, the path.
- An authorizer answers `(Decision, reason)`: ALLOW, DENY or NO_OPINION. `Union` asks its
  members in order and stops at the first ALLOW or DENY; if none decides, the answer is
  NO_OPINION with the members' reasons, one a line (as k8s.io/apiserver's union joins them),
  which the request path turns into a 403.
- `PrivilegedGroups` allows everything to members of the named groups: kube-apiserver puts
  one for `system:masters` in front of every other authorizer, so that group never
  depends on RBAC objects (which it could otherwise delete out from under itself).
- `forbidden(attrs, reason)` is the 403 Status of a refused request with Kubernetes'
  exact wording (k8s.io/apiserver's responsewriters.Forbidden and apierrors.NewForbidden).

Pure code: no I/O, no locks; everything runs on the server's one event loop.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from machinery import errors

# The names Kubernetes gives its special users and groups (k8s.io/apiserver/pkg/authentication/user).
SYSTEM_PRIVILEGED_GROUP = "system:masters"
ALL_AUTHENTICATED = "system:authenticated"
ALL_UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
NODES_GROUP = "system:nodes"
MONITORING_GROUP = "system:monitoring"
KUBE_SCHEDULER = "system:kube-scheduler"
KUBE_CONTROLLER_MANAGER = "system:kube-controller-manager"
KUBE_PROXY = "system:kube-proxy"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_user(namespace: str, name: str, *, uid: str = "") -> UserInfo:
    """The user a ServiceAccount's token authenticates as: `system:serviceaccount:<ns>:<name>`
    in `system:serviceaccounts`, `system:serviceaccounts:<ns>` and `system:authenticated`."""
    return UserInfo(service_account_username(namespace, name),
                    (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{namespace}",
                     ALL_AUTHENTICATED), uid)


@dataclass(frozen=True, slots=True)
class Attributes:
    """One request as authorizers see it (authorizer.AttributesRecord)."""
    user: UserInfo
    verb: str
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    resource_request: bool = True
    path: str = ""


class Decision(enum.Enum):
    DENY = 0
    ALLOW = 1
    NO_OPINION = 2


class Authorizer(Protocol):
    def authorize(self, attrs: Attributes) -> tuple[Decision, str]: ...


class PrivilegedGroups:
    """Allows every request of a member of one of `groups` (authorizerfactory.NewPrivilegedGroups)."""

    def __init__(self, *groups: str):
        self.groups = frozenset(groups)

    def authorize(self, attrs: Attributes) -> tuple[Decision, str]:
        if not self.groups.isdisjoint(attrs.user.groups):
            return Decision.ALLOW, ""
        return Decision.NO_OPINION, ""


class Union:
    """The first member's ALLOW or DENY; NO_OPINION, with every reason given, otherwise."""

    def __init__(self, members: Sequence[Authorizer]):
        self.members = tuple(members)

    def authorize(self, attrs: Attributes) -> tuple[Decision, str]:
        reasons = []
        for m in self.members:
            decision, reason = m.authorize(attrs)
            if decision is not Decision.NO_OPINION:
                return decision, reason
            if reason:
                reasons.append(reason)
        return Decision.NO_OPINION, "\n".join(reasons)


def forbidden_message(attrs: Attributes) -> str:
    """`User "jane" cannot create resource "pods" in API group "" in the namespace "default"`."""
    user = attrs.user.name
    if not attrs.resource_request:
        return f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    where = (f'in the namespace "{attrs.namespace}"' if attrs.namespace
             else "at the cluster scope")
    return (f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group '
            f'"{attrs.api_group}" {where}')


def forbidden(attrs: Attributes, reason: str = "") -> errors.Forbidden:
    """The 403 of a refused request: `pods "x" is forbidden: User "jane" cannot get ...`,
    the authorizer's reason appended after a colon when it gave one."""
    msg = forbidden_message(attrs)
    if reason:
        msg = f"{msg}: {reason}"
    resource = attrs.resource if attrs.resource_request else ""
    return forbidden_error(resource, attrs.api_group if resource else "", attrs.name, msg)


def forbidden_error(resource: str, group: str, name: str, why: str) -> errors.Forbidden:
    """apierrors.NewForbidden: the qualified resource, the name when there is one, the why."""
    qualified = f"{resource}.{group}" if resource and group else resource
    if not qualified:
        message = f"forbidden: {why}"
    elif name:
        message = f'{qualified} "{name}" is forbidden: {why}'
    else:
        message = f"{qualified} is forbidden: {why}"
    return errors.Forbidden(message, kind=resource, name=name, group=group)
