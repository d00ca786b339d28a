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
- `request_attributes(user, method, path, query)` reads a request as kube-apiserver's
  RequestInfoFactory does: `/api/v1/...` and `/apis/<group>/<version>/...` paths of
  at least a resource are resource requests (GET of a collection is list, or watch
  with `watch=true`, and names the object a `metadata.name=` field selector picks,
  keeping the parsed field selector of a list or watch;
  DELETE of a collection is deletecollection); everything else, discovery included, is
  a non-resource request whose verb is the lowercased method.
- `forbidden(attrs, reason)` is the 403 Status of a refused request with Kubernetes'
  exact wording (k8s.io/apiserver's responsewriters.Forbidden and apierrors.NewForbidden).

Pure code: no I/O, no locks; everything runs on the server's one event loop.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

from machinery import errors, fields

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
    # A list's or watch's fieldSelector (authorizer.Attributes.GetFieldSelector): the
    # Node authorizer lets a kubelet list only the pods with spec.nodeName=<its node>.
    field_selector: tuple[fields.FieldRequirement, ...] = ()


_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_TRUE = ("1", "t", "T", "true", "TRUE", "True")  # what Go's strconv.ParseBool reads as true


def request_attributes(user: UserInfo, method: str, path: str,
                       query: Mapping[str, str] | None = None) -> Attributes:
    """The attributes of a request (k8s.io/apiserver's RequestInfoFactory.NewRequestInfo)."""
    parts = [p for p in path.split("/") if p]
    non_resource = Attributes(user, method.lower(), resource_request=False, path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    group, rest = "", parts[1:]
    if parts[0] == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    verb = _VERBS.get(method.upper(), "")
    if rest[0] == "watch" and len(rest) > 1:  # the deprecated /watch/ prefix
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    query = query or {}
    if not name and verb == "get":
        verb = "watch" if query.get("watch") in _TRUE else "list"
        for term in (query.get("fieldSelector") or "").split(","):
            key, op, value = term.partition("==") if "==" in term else term.partition("=")
            if key.strip() == "metadata.name" and op and "!" not in key and value:
                name = value.strip()
    if not name and verb == "delete":
        verb = "deletecollection"
    selector: tuple[fields.FieldRequirement, ...] = ()
    if verb in ("list", "watch") and query.get("fieldSelector"):
        try:
            selector = fields.parse(query["fieldSelector"]).requirements
        except errors.BadRequest:
            pass  # as GetFieldSelector's error: authorizers see no selector; the list answers 400
    return Attributes(user, verb, namespace, group, version, resource, subresource, name,
                      field_selector=selector)


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
