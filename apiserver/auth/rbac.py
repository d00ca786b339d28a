"""The RBAC authorizer, with Kubernetes' semantics (plugin/pkg/auth/authorizer/rbac and
pkg/registry/rbac/validation), over an index of roles and bindings kept by subject.

What it guarantees
- A request is allowed when some rule of a role bound to its user, or to one of the
  user's groups, matches it: ClusterRoleBindings anywhere, RoleBindings in the request's
  namespace. A RoleBinding may name a ClusterRole, which then grants only in the binding's
  namespace. A rule matches as Kubernetes' RuleAllows: `*` for verbs, API groups and
  resources; `resource/subresource` and `*/subresource`; resourceNames, when given,
  limiting the rule to those names (so never matching a request without a name, such as
  list or create); nonResourceURLs exactly or as a prefix ending in `*`.
- A ServiceAccount subject is the user `system:serviceaccount:<ns>:<name>`; in a
  RoleBinding it defaults to the binding's namespace, in a ClusterRoleBinding it applies
  only with a namespace.
- RBAC never denies: it allows or has no opinion. Without an allow, the reason names the
  roles that could not be resolved (`RBAC: role.rbac.authorization.k8s.io "x" not found`),
  as Kubernetes' does; an allow's reason names the binding, role and subject.
- A decision costs a few dict lookups plus the rules of the bindings of this user and
  its groups (in this namespace): bindings are indexed by (namespace, user) and
  (namespace, group), so bindings of other subjects are never looked at. `visited`
  counts the bindings decisions have examined, which the tests use to show it.
- `CacheFeed` (feed.py) keeps an index current from the API server's own watch cache: it takes a
  snapshot and subscribes in one step of the event loop (no write falls in between),
  applies every change as the cache applies it, and starts over from a new snapshot if
  its subscription is closed (a relist, or a backlog).
- `check_escalation` is RBAC's escalation check for writes of roles and bindings (the
  policy-based storage of pkg/registry/rbac): members of `system:masters` may write
  anything; anyone else may write a role only with every permission it grants or with
  `escalate` on it, and a binding only with every permission of the role it names or
  with `bind` on that role. Refusals are 403 Statuses worded as Kubernetes words them.

Concurrency: the index is mutated only by its feed's task on the server's event loop and
read by decisions on the same loop, so a decision never sees a half-applied change.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from apiserver.auth.authorizer import (SYSTEM_PRIVILEGED_GROUP, Attributes, Authorizer, Decision,
                                       UserInfo, forbidden_error, service_account_username)

log = logging.getLogger("minik8s.apiserver.rbac")

GROUP = "rbac.authorization.k8s.io"
KINDS = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")


# --- rules ------------------------------------------------------------------------------

class Rule:
    """A PolicyRule compiled for matching: sets instead of lists, wildcards as flags."""

    __slots__ = ("raw", "verbs", "all_verbs", "groups", "all_groups", "resources",
                 "all_resources", "star_subresources", "names", "urls", "url_prefixes",
                 "all_urls")

    def __init__(self, raw: dict):
        self.raw = raw
        verbs = _strings(raw.get("verbs"))
        groups = _strings(raw.get("apiGroups"))
        resources = _strings(raw.get("resources"))
        urls = _strings(raw.get("nonResourceURLs"))
        self.verbs, self.all_verbs = frozenset(verbs), "*" in verbs
        self.groups, self.all_groups = frozenset(groups), "*" in groups
        self.resources, self.all_resources = frozenset(resources), "*" in resources
        # "*/scale" matches the scale subresource of every resource.
        self.star_subresources = frozenset(r[2:] for r in resources if r.startswith("*/"))
        names = _strings(raw.get("resourceNames"))
        self.names = frozenset(names) if names else None
        self.urls = frozenset(urls)
        self.all_urls = "*" in urls
        self.url_prefixes = tuple(u.rstrip("*") for u in urls if u.endswith("*"))

    def allows(self, a: Attributes) -> bool:
        """Kubernetes' RuleAllows."""
        if not (self.all_verbs or a.verb in self.verbs):
            return False
        if not a.resource_request:
            return self.all_urls or a.path in self.urls or any(
                a.path.startswith(p) for p in self.url_prefixes)
        if not (self.all_groups or a.api_group in self.groups):
            return False
        if a.subresource:
            if not (self.all_resources or f"{a.resource}/{a.subresource}" in self.resources
                    or a.subresource in self.star_subresources):
                return False
        elif not (self.all_resources or a.resource in self.resources):
            return False
        return self.names is None or a.name in self.names


def _strings(v: Any) -> list[str]:
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


def compile_rules(rules: Any) -> tuple[Rule, ...]:
    return tuple(Rule(r) for r in rules if isinstance(r, dict)) if isinstance(rules, list) else ()


def rules_allow(attrs: Attributes, rules: Iterable[Rule]) -> bool:
    return any(r.allows(attrs) for r in rules)


# --- the index --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Binding:
    """What a decision needs of a RoleBinding (namespace set) or ClusterRoleBinding."""
    name: str
    namespace: str
    role_kind: str
    role_name: str

    def describe(self, subject: dict) -> str:
        """The source named in an allow's reason (Kubernetes' binding describers)."""
        if self.namespace:
            what = f'RoleBinding "{self.name}/{self.namespace}"'
        else:
            what = f'ClusterRoleBinding "{self.name}"'
        return f'{what} of {self.role_kind} "{self.role_name}" to {_describe_subject(subject, self.namespace)}'


def _describe_subject(s: dict, namespace: str) -> str:
    kind, name = s.get("kind", ""), s.get("name", "")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{s.get("namespace") or namespace}"'
    return f'{kind} "{name}"'


def _not_found(kind: str, name: str) -> str:
    # The lister's NotFound, singular resource as listers name it.
    return f'{kind.lower()}.{GROUP} "{name}" not found'


class Index:
    """Roles by (namespace, name), ClusterRoles by name, and bindings by the subject they
    grant to: `users[(namespace, user)]` and `groups[(namespace, group)]` map a binding's
    key to the subject that applies (namespace "" for ClusterRoleBindings)."""

    def __init__(self) -> None:
        self.roles: dict[tuple[str, str], tuple[Rule, ...]] = {}
        self.cluster_roles: dict[tuple[str, str], tuple[Rule, ...]] = {}
        self.bindings: dict[tuple[str, str], Binding] = {}
        self.users: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self.groups: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        # binding key -> the (table, subject key) entries it made, for removing them
        self._subject_keys: dict[tuple[str, str], list[tuple[dict, tuple[str, str]]]] = {}

    # -- changes --------------------------------------------------------------------

    def put(self, kind: str, obj: dict) -> None:
        md = obj.get("metadata") or {}
        key = (md.get("namespace") or "", md.get("name") or "")
        if kind == "roles":
            self.roles[key] = compile_rules(obj.get("rules"))
        elif kind == "clusterroles":
            self.cluster_roles[("", key[1])] = compile_rules(obj.get("rules"))
        else:
            self._drop_binding(key)
            ref = obj.get("roleRef") or {}
            self.bindings[key] = Binding(key[1], key[0], ref.get("kind", ""), ref.get("name", ""))
            placed: list[tuple[dict, tuple[str, str]]] = []
            for s in obj.get("subjects") or []:
                if not isinstance(s, dict):
                    continue
                where = self._where(s, key[0])
                if where is not None and key not in where[0].get(where[1], {}):
                    where[0].setdefault(where[1], {})[key] = s
                    placed.append((where[0], where[1]))
            self._subject_keys[key] = placed

    def delete(self, kind: str, obj: dict) -> None:
        md = obj.get("metadata") or {}
        key = (md.get("namespace") or "", md.get("name") or "")
        if kind == "roles":
            self.roles.pop(key, None)
        elif kind == "clusterroles":
            self.cluster_roles.pop(("", key[1]), None)
        else:
            self._drop_binding(key)

    def replace(self, kind: str, objs: Iterable[dict]) -> None:
        """Make the index's `kind` exactly `objs` (a fresh snapshot)."""
        if kind == "roles":
            self.roles.clear()
        elif kind == "clusterroles":
            self.cluster_roles.clear()
        else:
            cluster = kind == "clusterrolebindings"
            for key in [k for k in self.bindings if (k[0] == "") == cluster]:
                self._drop_binding(key)
        for obj in objs:
            self.put(kind, obj)

    def _where(self, s: dict, namespace: str) -> tuple[dict, tuple[str, str]] | None:
        kind = s.get("kind")
        if kind == "User":
            return self.users, (namespace, s.get("name", ""))
        if kind == "Group":
            return self.groups, (namespace, s.get("name", ""))
        if kind == "ServiceAccount":
            sa_ns = s.get("namespace") or namespace
            if not sa_ns:
                return None
            return self.users, (namespace, service_account_username(sa_ns, s.get("name", "")))
        return None

    def _drop_binding(self, key: tuple[str, str]) -> None:
        self.bindings.pop(key, None)
        for table, where in self._subject_keys.pop(key, []):
            found = table.get(where)
            if found is not None:
                found.pop(key, None)
                if not found:
                    del table[where]

    # -- reading --------------------------------------------------------------------

    def role_rules(self, binding: Binding) -> tuple[Rule, ...] | str:
        """The rules of the role a binding names, or why they cannot be had."""
        if binding.role_kind == "Role":
            rules = self.roles.get((binding.namespace, binding.role_name))
        elif binding.role_kind == "ClusterRole":
            rules = self.cluster_roles.get(("", binding.role_name))
        else:
            return f'unsupported role reference kind: "{binding.role_kind}"'
        return _not_found(binding.role_kind, binding.role_name) if rules is None else rules


# --- the authorizer -----------------------------------------------------------------------

class RBACAuthorizer:
    def __init__(self, index: Index | None = None):
        self.index = index if index is not None else Index()
        self.visited = 0  # bindings examined by decisions: what the subject index saves

    def _candidates(self, user: UserInfo, namespace: str):
        """(binding key, subject) of every binding that applies to `user`: cluster-wide
        first, then in `namespace`, as Kubernetes' rule resolver visits them."""
        users, groups = self.index.users, self.index.groups
        scopes = ("", namespace) if namespace else ("",)
        for scope in scopes:
            found = users.get((scope, user.name))
            if found:
                yield from found.items()
            for g in user.groups:
                found = groups.get((scope, g))
                if found:
                    yield from found.items()

    def visit(self, user: UserInfo, namespace: str,
              visitor: Callable[[Binding | None, dict | None, Rule | None, str | None], bool]) -> None:
        """Kubernetes' VisitRulesFor: each rule that applies to `user` in `namespace`, and
        each error resolving a role; stops when `visitor` returns False."""
        index = self.index
        for key, subject in self._candidates(user, namespace):
            self.visited += 1
            binding = index.bindings[key]
            rules = index.role_rules(binding)
            if isinstance(rules, str):
                if not visitor(None, None, None, rules):
                    return
                continue
            for rule in rules:
                if not visitor(binding, subject, rule, None):
                    return

    def authorize(self, attrs: Attributes) -> tuple[Decision, str]:
        index = self.index
        errs: list[str] = []
        for key, subject in self._candidates(attrs.user, attrs.namespace):
            self.visited += 1
            binding = index.bindings[key]
            rules = index.role_rules(binding)
            if isinstance(rules, str):
                errs.append(rules)
                continue
            for rule in rules:
                if rule.allows(attrs):
                    return Decision.ALLOW, f"RBAC: allowed by {binding.describe(subject)}"
        return Decision.NO_OPINION, f"RBAC: {_aggregate(errs)}" if errs else ""

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        """Every rule that applies to `user` in `namespace`, and the resolution errors."""
        rules: list[dict] = []
        errs: list[str] = []

        def collect(_b: Any, _s: Any, rule: Rule | None, err: str | None) -> bool:
            if rule is not None:
                rules.append(rule.raw)
            if err:
                errs.append(err)
            return True
        self.visit(user, namespace, collect)
        return rules, errs


def _aggregate(errs: list[str]) -> str:
    """utilerrors.NewAggregate's wording: one message alone, else `[a, b]`, repeats dropped."""
    seen = list(dict.fromkeys(errs))
    return seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"


# --- covers: does one set of rules hold every permission of another ------------------------

def breakdown(rule: dict) -> list[dict]:
    """A rule as simple rules: one verb, one group, one resource (one name), or one verb
    and one URL (component-helpers' BreakdownRule)."""
    out = []
    verbs = _strings(rule.get("verbs"))
    names = _strings(rule.get("resourceNames"))
    for group in _strings(rule.get("apiGroups")):
        for resource in _strings(rule.get("resources")):
            for verb in verbs:
                if names:
                    out += [{"apiGroups": [group], "resources": [resource], "verbs": [verb],
                             "resourceNames": [n]} for n in names]
                else:
                    out.append({"apiGroups": [group], "resources": [resource], "verbs": [verb]})
    for url in _strings(rule.get("nonResourceURLs")):
        out += [{"nonResourceURLs": [url], "verbs": [verb]} for verb in verbs]
    return out


def _resources_cover(owner: list[str], wanted: list[str]) -> bool:
    if "*" in owner:
        return True
    for r in wanted:
        if r in owner:
            continue
        if "/" not in r or "*/" + r.split("/", 1)[1] not in owner:
            return False
    return True


def _url_covers(owner: str, url: str) -> bool:
    return owner == url or (owner.endswith("*") and url.startswith(owner.rstrip("*")))


def rule_covers(owner: dict, sub: dict) -> bool:
    """Whether `owner` grants everything the simple rule `sub` does (ruleCovers)."""
    ov, og = _strings(owner.get("verbs")), _strings(owner.get("apiGroups"))
    on = _strings(owner.get("resourceNames"))
    sn = _strings(sub.get("resourceNames"))
    return (("*" in ov or set(_strings(sub.get("verbs"))) <= set(ov))
            and ("*" in og or set(_strings(sub.get("apiGroups"))) <= set(og))
            and _resources_cover(_strings(owner.get("resources")), _strings(sub.get("resources")))
            and all(any(_url_covers(o, u) for o in _strings(owner.get("nonResourceURLs")))
                    for u in _strings(sub.get("nonResourceURLs")))
            and (not on if not sn else (not on or set(sn) <= set(on))))


def covers(owner: list[dict], wanted: list[dict]) -> tuple[bool, list[dict]]:
    """Whether `owner` holds every permission of `wanted`, and the simple rules it lacks."""
    missing = [sub for rule in wanted for sub in breakdown(rule)
               if not any(rule_covers(o, sub) for o in owner)]
    return not missing, missing


def compact(rules: list[dict]) -> list[dict]:
    """Simple rules that differ only in their verb, merged (CompactRules)."""
    out: list[dict] = []
    simple: dict[tuple, dict] = {}
    for r in rules:
        names = r.get("resourceNames") or []
        if (len(r.get("apiGroups") or []) == 1 and len(r.get("resources") or []) == 1
                and len(names) <= 1 and not r.get("nonResourceURLs")):
            key = (r["apiGroups"][0], r["resources"][0], tuple(names))
            if key in simple:
                simple[key]["verbs"] = simple[key]["verbs"] + list(r.get("verbs") or [])
            else:
                simple[key] = {**r, "verbs": list(r.get("verbs") or [])}
        else:
            out.append(r)
    return out + list(simple.values())


def _go_strings(values: list[str]) -> str:
    """Go's %q of a []string: `["a" "b"]`."""
    return "[" + " ".join(json.dumps(v) for v in values) + "]"


def compact_string(rule: dict) -> str:
    """`{APIGroups:["apps"], Resources:["deployments"], Verbs:["create"]}` (CompactString)."""
    parts = [f"{label}:{_go_strings(rule[key])}" for label, key in (
        ("APIGroups", "apiGroups"), ("Resources", "resources"),
        ("NonResourceURLs", "nonResourceURLs"), ("ResourceNames", "resourceNames"),
        ("Verbs", "verbs")) if rule.get(key)]
    return "{" + ", ".join(parts) + "}"


# --- the escalation check ----------------------------------------------------------------

FULL_AUTHORITY = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                  {"verbs": ["*"], "nonResourceURLs": ["*"]}]


class Escalation(Exception):
    pass


def confirm_no_escalation(resolver: RBACAuthorizer, user: UserInfo, namespace: str,
                          rules: list[dict]) -> None:
    """Raise Escalation, worded as Kubernetes', unless `user` holds every permission of
    `rules` in `namespace` (ConfirmNoEscalation)."""
    owned, errs = resolver.rules_for(user, namespace)
    ok, missing = covers(owned, rules)
    if ok:
        return
    lacking = "\n".join(sorted({compact_string(r) for r in compact(missing)}))
    msg = (f'user "{user.name}" (groups={_go_strings(list(user.groups))}) is attempting to '
           f"grant RBAC permissions not currently held:\n{lacking}")
    if errs:
        msg += f"; resolution errors: [{_aggregate(errs)}]"
    raise Escalation(msg)


def _without_gc_fields(obj: dict) -> dict:
    """The object as compared by IsOnlyMutatingGCFields: owner references and finalizers
    (and what the server sets on every write) left out."""
    md = {k: v for k, v in (obj.get("metadata") or {}).items()
          if k not in ("ownerReferences", "finalizers", "resourceVersion", "managedFields",
                       "generation")}
    return {**obj, "metadata": md}


def _allowed(authorizer: Authorizer, attrs: Attributes) -> bool:
    return authorizer.authorize(attrs)[0] is Decision.ALLOW


def check_escalation(resolver: RBACAuthorizer, user: UserInfo, *, resource: str,
                     namespace: str, obj: dict, old: dict | None = None,
                     authorizer: Authorizer | None = None) -> None:
    """RBAC's escalation check for a create (old None) or update of `obj`, a Role,
    ClusterRole, RoleBinding or ClusterRoleBinding (`resource` is its plural), by `user`.
    Raises machinery.errors.Forbidden when it is refused. `authorizer` decides the
    `escalate` and `bind` verbs (the server's whole chain; default `resolver`)."""
    if resource not in KINDS or SYSTEM_PRIVILEGED_GROUP in user.groups:
        return
    if old is not None and _without_gc_fields(old) == _without_gc_fields(obj):
        return  # only what the garbage collector changes: nothing is granted
    authorizer = authorizer or resolver
    name = (obj.get("metadata") or {}).get("name") or ""
    namespace = namespace if resource in ("roles", "rolebindings") else ""

    def refuse(why: str) -> Exception:
        return forbidden_error(resource, GROUP, name, why)

    if resource in ("roles", "clusterroles"):
        if _allowed(authorizer, Attributes(user, "escalate", namespace, GROUP, "*", resource,
                                           name=name)):
            return
        rules = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
        try:
            confirm_no_escalation(resolver, user, namespace, rules)
        except Escalation as exc:
            raise refuse(str(exc)) from None
        if resource == "clusterroles" and obj.get("aggregationRule") is not None:
            # An aggregation rule can gather any permission, so it takes every permission.
            try:
                confirm_no_escalation(resolver, user, "", FULL_AUTHORITY)
            except Escalation:
                raise refuse("must have cluster-admin privileges to use the aggregationRule") from None
        return
    ref = obj.get("roleRef") or {}
    kind, role = ref.get("kind", ""), ref.get("name", "")
    role_resource = {"Role": "roles", "ClusterRole": "clusterroles"}.get(kind, "")
    if role_resource and _allowed(authorizer, Attributes(
            user, "bind", namespace, ref.get("apiGroup", GROUP), "*", role_resource, name=role)):
        return
    rules_or_error = resolver.index.role_rules(Binding(name, namespace, kind, role))
    if isinstance(rules_or_error, str):
        raise refuse(rules_or_error)
    try:
        confirm_no_escalation(resolver, user, namespace, [r.raw for r in rules_or_error])
    except Escalation as exc:
        raise refuse(str(exc)) from None
