"""RBAC: the authorizer's decisions on tables of cases, its reasons and 403 wording, the
subject index, the escalation check; then the four kinds served and validated by a real
API server, the bootstrap policy it reconciles at start, and the authorizer fed by the
server's own watch cache."""
# ruff: noqa: E501  (the case tables read one case, and one message, a line)
from __future__ import annotations

import asyncio
import uuid

import pytest

from apiserver.auth.authorizer import (Attributes, Decision, PrivilegedGroups, Union, UserInfo,
                                       forbidden, request_attributes, service_account_user)
from apiserver.auth.bootstrappolicy import cluster_role_bindings, cluster_roles
from apiserver.auth.feed import CacheFeed
from apiserver.auth.rbac import KINDS, RBACAuthorizer, check_escalation, covers
from machinery import errors
from tests.procs import APIServer, Etcd

G = "rbac.authorization.k8s.io"
RBAC = f"/apis/{G}/v1"


# --- builders ---------------------------------------------------------------------------

def rule(verbs, groups=None, resources=None, names=None, urls=None) -> dict:
    out = {"verbs": list(verbs)}
    for key, v in (("apiGroups", groups), ("resources", resources), ("resourceNames", names),
                   ("nonResourceURLs", urls)):
        if v is not None:
            out[key] = list(v)
    return out


def role(name, *rules, namespace=None) -> dict:
    md = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": "Role" if namespace else "ClusterRole", "metadata": md, "rules": list(rules)}


def user(name):
    return {"kind": "User", "apiGroup": G, "name": name}


def group(name):
    return {"kind": "Group", "apiGroup": G, "name": name}


def sa(name, namespace=None):
    return {"kind": "ServiceAccount", "name": name, **({"namespace": namespace} if namespace else {})}


def binding(name, role_kind, role_name, *subjects, namespace=None) -> dict:
    md = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": "RoleBinding" if namespace else "ClusterRoleBinding", "metadata": md,
            "roleRef": {"apiGroup": G, "kind": role_kind, "name": role_name},
            "subjects": list(subjects)}


def authorizer(*objs) -> RBACAuthorizer:
    a = RBACAuthorizer()
    plural = {"Role": "roles", "ClusterRole": "clusterroles", "RoleBinding": "rolebindings",
              "ClusterRoleBinding": "clusterrolebindings"}
    for obj in objs:
        a.index.put(plural[obj["kind"]], obj)
    return a


def res(u, verb, resource, *, ns="", group="", sub="", name="", groups=()) -> Attributes:
    info = u if isinstance(u, UserInfo) else UserInfo(u, tuple(groups))
    return Attributes(info, verb, ns, group, "v1", resource, sub, name)


def url(u, verb, path, groups=()) -> Attributes:
    return Attributes(UserInfo(u, tuple(groups)), verb, resource_request=False, path=path)


# --- decisions --------------------------------------------------------------------------

POLICY = [
    role("pod-reader", rule(["get", "list", "watch"], [""], ["pods"]), namespace="dev"),
    role("logs", rule(["get"], [""], ["pods/log"]), namespace="dev"),
    role("one-cm", rule(["get", "update"], [""], ["configmaps"], names=["app-config"]), namespace="dev"),
    role("scaler", rule(["get", "update"], ["*"], ["*/scale"])),
    role("anything-apps", rule(["*"], ["apps"], ["*"])),
    role("health", rule(["get"], urls=["/healthz", "/logs/*"])),
    role("all-urls", rule(["get"], urls=["*"])),
    role("secret-reader", rule(["get", "list"], [""], ["secrets"])),
    binding("jane-reads-pods", "Role", "pod-reader", user("jane"), namespace="dev"),
    binding("jane-logs", "Role", "logs", user("jane"), namespace="dev"),
    binding("jane-one-cm", "Role", "one-cm", user("jane"), namespace="dev"),
    binding("ops-scale", "ClusterRole", "scaler", group("ops")),
    binding("ops-apps-in-prod", "ClusterRole", "anything-apps", group("ops"), namespace="prod"),
    binding("health-for-all", "ClusterRole", "health", group("system:authenticated")),
    binding("robot-urls", "ClusterRole", "all-urls", user("robot")),
    # A RoleBinding's ServiceAccount subject defaults to the binding's namespace.
    binding("builder-secrets", "ClusterRole", "secret-reader", sa("builder"), namespace="ci"),
    binding("deployer-secrets", "ClusterRole", "secret-reader", sa("deployer", "tools")),
    binding("all-ci-sas", "ClusterRole", "pod-reader-cluster", group("system:serviceaccounts:ci")),
    role("pod-reader-cluster", rule(["list"], [""], ["pods"])),
]

CASES = [
    # (why, attributes, allowed)
    ("a Role's verb in its namespace", res("jane", "get", "pods", ns="dev", name="p"), True),
    ("list has no name", res("jane", "list", "pods", ns="dev"), True),
    ("a verb the Role lacks", res("jane", "delete", "pods", ns="dev", name="p"), False),
    ("another namespace", res("jane", "get", "pods", ns="prod", name="p"), False),
    ("cluster scope: a RoleBinding grants nothing there", res("jane", "list", "pods"), False),
    ("another user", res("john", "get", "pods", ns="dev", name="p"), False),
    ("another API group", res("jane", "get", "pods", ns="dev", group="apps", name="p"), False),
    ("a subresource needs its own rule", res("jane", "get", "pods", ns="dev", sub="exec", name="p"), False),
    ("resource/subresource rule", res("jane", "get", "pods", ns="dev", sub="log", name="p"), True),
    ("resource/subresource does not grant the resource", res("jane", "get", "pods", ns="dev", group="", name="p", sub="status"), False),
    ("resourceNames: the named object", res("jane", "get", "configmaps", ns="dev", name="app-config"), True),
    ("resourceNames: another object", res("jane", "get", "configmaps", ns="dev", name="other"), False),
    ("resourceNames: never a list", res("jane", "list", "configmaps", ns="dev"), False),
    ("*/scale in any group", res("amy", "update", "deployments", ns="x", group="apps", sub="scale", name="d", groups=["ops"]), True),
    ("*/scale is not the resource", res("amy", "update", "deployments", ns="x", group="apps", name="d", groups=["ops"]), False),
    ("*/scale is not another subresource", res("amy", "update", "deployments", ns="x", group="apps", sub="status", name="d", groups=["ops"]), False),
    ("* verbs and resources, group-bound in one namespace", res("amy", "delete", "replicasets", ns="prod", group="apps", name="r", groups=["ops"]), True),
    ("... not in another namespace", res("amy", "delete", "replicasets", ns="dev", group="apps", name="r", groups=["ops"]), False),
    ("... not another group", res("amy", "delete", "pods", ns="prod", name="r", groups=["ops"]), False),
    ("non-resource URL, exact", url("jane", "get", "/healthz", ["system:authenticated"]), True),
    ("non-resource URL, exact is not a prefix", url("jane", "get", "/healthz/etcd", ["system:authenticated"]), False),
    ("non-resource URL, trailing *", url("jane", "get", "/logs/kube.log", ["system:authenticated"]), True),
    ("non-resource URL, the verb counts", url("jane", "post", "/healthz", ["system:authenticated"]), False),
    ("non-resource URL, no group", url("jane", "get", "/healthz"), False),
    ("non-resource URL, *", url("robot", "get", "/anything/at/all"), True),
    ("a URL rule grants no resource", res("robot", "get", "pods", ns="dev", name="p"), False),
    ("SA subject defaulted to the binding's namespace",
     res(service_account_user("ci", "builder"), "get", "secrets", ns="ci", name="s"), True),
    ("... the same name in another namespace is another user",
     res(service_account_user("dev", "builder"), "get", "secrets", ns="ci", name="s"), False),
    ("SA subject of a ClusterRoleBinding, anywhere",
     res(service_account_user("tools", "deployer"), "list", "secrets", ns="kube-system"), True),
    ("group system:serviceaccounts:<ns>",
     res(service_account_user("ci", "anyone"), "list", "pods"), True),
    ("... of another namespace", res(service_account_user("dev", "anyone"), "list", "pods"), False),
]


@pytest.mark.parametrize("why,attrs,allowed", CASES, ids=[c[0] for c in CASES])
def test_decisions(why, attrs, allowed):
    decision, _ = authorizer(*POLICY).authorize(attrs)
    assert decision is (Decision.ALLOW if allowed else Decision.NO_OPINION), why


def test_rbac_never_denies_and_system_masters_is_allowed_everything():
    a = authorizer(*POLICY)
    chain = Union([PrivilegedGroups("system:masters"), a])
    admin = res("root", "delete", "nodes", name="n1", groups=["system:masters"])
    assert a.authorize(admin) == (Decision.NO_OPINION, "")
    assert chain.authorize(admin) == (Decision.ALLOW, "")
    assert chain.authorize(url("root", "post", "/x", ["system:masters"]))[0] is Decision.ALLOW
    assert chain.authorize(res("jane", "get", "pods", ns="dev", name="p"))[0] is Decision.ALLOW
    assert chain.authorize(res("jane", "get", "pods", ns="xx"))[0] is Decision.NO_OPINION

    class Says:
        def __init__(self, decision, reason):
            self.answer = (decision, reason)

        def authorize(self, attrs):
            return self.answer
    get = res("jane", "get", "pods", ns="xx")
    assert Union([Says(Decision.NO_OPINION, "one"), Says(Decision.NO_OPINION, ""),
                  Says(Decision.NO_OPINION, "two")]).authorize(get) == (Decision.NO_OPINION, "one\ntwo")
    assert Union([Says(Decision.DENY, "no"), chain]).authorize(
        res("root", "get", "pods", groups=["system:masters"])) == (Decision.DENY, "no")


def test_reasons_name_the_binding_and_the_roles_not_found():
    a = authorizer(*POLICY,
                   binding("dangling", "Role", "gone", user("jane"), namespace="dev"),
                   binding("dangling-c", "ClusterRole", "gone-too", user("jane")))
    assert a.authorize(res("jane", "get", "pods", ns="dev", name="p")) == (
        Decision.ALLOW, 'RBAC: allowed by RoleBinding "jane-reads-pods/dev" of Role "pod-reader" to User "jane"')
    assert a.authorize(res(service_account_user("ci", "builder"), "get", "secrets", ns="ci")) == (
        Decision.ALLOW, 'RBAC: allowed by RoleBinding "builder-secrets/ci" of ClusterRole '
                        '"secret-reader" to ServiceAccount "builder/ci"')
    assert a.authorize(res("jane", "delete", "pods", ns="dev")) == (
        Decision.NO_OPINION, 'RBAC: [clusterrole.rbac.authorization.k8s.io "gone-too" not found, '
                             'role.rbac.authorization.k8s.io "gone" not found]')


def test_forbidden_is_worded_as_kubernetes_words_it():
    jane = UserInfo("jane")
    cases = [
        (res(jane, "create", "pods", ns="default"),
         'pods is forbidden: User "jane" cannot create resource "pods" in API group "" in the namespace "default"'),
        (res(jane, "get", "pods", ns="default", sub="log", name="web"),
         'pods "web" is forbidden: User "jane" cannot get resource "pods/log" in API group "" in the namespace "default"'),
        (res(jane, "list", "nodes"),
         'nodes is forbidden: User "jane" cannot list resource "nodes" in API group "" at the cluster scope'),
        (res(jane, "delete", "deployments", ns="prod", group="apps", name="web"),
         'deployments.apps "web" is forbidden: User "jane" cannot delete resource "deployments" in API group "apps" in the namespace "prod"'),
        (url("jane", "get", "/metrics"), 'forbidden: User "jane" cannot get path "/metrics"'),
    ]
    for attrs, message in cases:
        status = forbidden(attrs).to_status()
        assert status["message"] == message
        assert (status["code"], status["reason"]) == (403, "Forbidden")
    status = forbidden(res(jane, "delete", "deployments", ns="prod", group="apps", name="web")).to_status()
    assert status["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    assert forbidden(res(jane, "list", "nodes"), "RBAC: x not found").message.endswith(
        'at the cluster scope: RBAC: x not found')


REQUESTS = [
    # (method, path, query, want: verb, namespace, group, version, resource, subresource, name)
    ("GET", "/api/v1/namespaces/dev/pods", {}, ("list", "dev", "", "v1", "pods", "", "")),
    ("GET", "/api/v1/namespaces/dev/pods", {"watch": "true"}, ("watch", "dev", "", "v1", "pods", "", "")),
    ("GET", "/api/v1/pods", {"watch": "1", "fieldSelector": "metadata.name=web,spec.nodeName=n"},
     ("watch", "", "", "v1", "pods", "", "web")),
    ("GET", "/api/v1/namespaces/dev/pods", {"fieldSelector": "metadata.name!=web"}, ("list", "dev", "", "v1", "pods", "", "")),
    ("GET", "/api/v1/namespaces/dev/pods/web/log", {}, ("get", "dev", "", "v1", "pods", "log", "web")),
    ("POST", "/api/v1/namespaces/dev/pods/web/binding", {}, ("create", "dev", "", "v1", "pods", "binding", "web")),
    ("PUT", "/apis/apps/v1/namespaces/dev/deployments/web/scale", {}, ("update", "dev", "apps", "v1", "deployments", "scale", "web")),
    ("PATCH", "/apis/rbac.authorization.k8s.io/v1/clusterroles/view", {}, ("patch", "", G, "v1", "clusterroles", "", "view")),
    ("DELETE", "/api/v1/namespaces/dev/configmaps", {}, ("deletecollection", "dev", "", "v1", "configmaps", "", "")),
    ("DELETE", "/api/v1/namespaces/dev/configmaps/c", {}, ("delete", "dev", "", "v1", "configmaps", "", "c")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "", "v1", "namespaces", "", "")),
    ("GET", "/api/v1/namespaces/dev", {}, ("get", "dev", "", "v1", "namespaces", "", "dev")),
    ("PUT", "/api/v1/namespaces/dev/finalize", {}, ("update", "dev", "", "v1", "namespaces", "finalize", "dev")),
    ("GET", "/api/v1/watch/namespaces/dev/pods", {}, ("watch", "dev", "", "v1", "pods", "", "")),
]


@pytest.mark.parametrize("method,path,query,want", REQUESTS, ids=[f"{r[0]} {r[1]} {r[2]}" for r in REQUESTS])
def test_request_attributes_are_read_as_kube_apiserver_reads_them(method, path, query, want):
    a = request_attributes(UserInfo("jane"), method, path, query)
    assert a.resource_request
    assert (a.verb, a.namespace, a.api_group, a.api_version, a.resource, a.subresource, a.name) == want


@pytest.mark.parametrize("method,path", [("GET", "/version"), ("GET", "/api"), ("GET", "/api/v1"),
                                         ("GET", "/apis/apps"), ("GET", "/apis/apps/v1"),
                                         ("POST", "/healthz/etcd"), ("GET", "/openapi/v3/apis/apps/v1")])
def test_discovery_and_other_paths_are_non_resource_requests(method, path):
    a = request_attributes(UserInfo("jane"), method, path)
    assert (a.resource_request, a.verb, a.path) == (False, method.lower(), path)


# --- the subject index ----------------------------------------------------------------------

def test_a_decision_looks_only_at_bindings_of_its_user_and_groups():
    objs = [role("reader", rule(["get"], [""], ["pods"])), role("lister", rule(["list"], [""], ["pods"]))]
    for i in range(1000):
        objs.append(binding(f"rb-{i}", "ClusterRole", "reader", user(f"user-{i}"), namespace=f"ns-{i % 50}"))
    for i in range(100):
        objs.append(binding(f"crb-{i}", "ClusterRole", "lister", group(f"group-{i}")))
    a = authorizer(*objs)
    # user-7's one RoleBinding is in ns-7; group-3's ClusterRoleBinding applies everywhere.
    a.visited = 0
    assert a.authorize(res("user-7", "get", "pods", ns="ns-7", name="p", groups=["group-3"]))[0] is Decision.ALLOW
    assert a.visited <= 2  # group-3's binding (which does not grant get) and user-7's
    a.visited = 0
    assert a.authorize(res("user-7", "get", "pods", ns="ns-8", name="p"))[0] is Decision.NO_OPINION
    assert a.visited == 0
    a.visited = 0
    assert a.authorize(res("nobody", "list", "pods", ns="ns-1", groups=["group-99", "group-100"]))[0] is Decision.ALLOW
    assert a.visited == 1


def test_the_index_follows_changes_to_bindings_and_roles():
    a = authorizer(role("reader", rule(["get"], [""], ["pods"])),
                   binding("b", "ClusterRole", "reader", user("jane"), user("john")))
    get = res("jane", "get", "pods", ns="x", name="p")
    assert a.authorize(get)[0] is Decision.ALLOW
    a.index.put("clusterrolebindings", binding("b", "ClusterRole", "reader", user("john")))
    assert a.authorize(get)[0] is Decision.NO_OPINION  # jane was taken off the binding
    assert a.authorize(res("john", "get", "pods", ns="x"))[0] is Decision.ALLOW
    a.index.put("clusterroles", role("reader", rule(["list"], [""], ["pods"])))
    assert a.authorize(res("john", "get", "pods", ns="x"))[0] is Decision.NO_OPINION
    a.index.delete("clusterrolebindings", binding("b", "ClusterRole", "reader"))
    assert a.authorize(res("john", "list", "pods", ns="x"))[0] is Decision.NO_OPINION
    assert not a.index.users and not a.index.groups  # nothing left behind
    a.index.replace("clusterrolebindings", [binding("c", "ClusterRole", "reader", group("g"))])
    assert a.authorize(res("x", "list", "pods", groups=["g"]))[0] is Decision.ALLOW


# --- escalation -------------------------------------------------------------------------------

def test_covers_breaks_rules_down_and_reports_what_is_missing():
    owner = [rule(["get", "list"], [""], ["pods", "pods/log"]), rule(["get"], ["*"], ["*/scale"]),
             rule(["get"], urls=["/logs/*"])]
    assert covers(owner, [rule(["get"], [""], ["pods", "pods/log"])]) == (True, [])
    assert covers(owner, [rule(["get"], ["apps"], ["deployments/scale"])])[0]
    assert covers(owner, [rule(["get"], [""], ["pods"], names=["a"])])[0]
    assert covers(owner, [rule(["get"], urls=["/logs/x"])])[0]
    ok, missing = covers(owner, [rule(["get", "delete"], [""], ["pods"]), rule(["get"], urls=["/metrics"])])
    assert not ok
    assert missing == [rule(["delete"], [""], ["pods"]), rule(["get"], urls=["/metrics"])]
    # a rule limited to names does not cover the whole resource
    assert not covers([rule(["get"], [""], ["pods"], names=["a"])], [rule(["get"], [""], ["pods"])])[0]


def _escalation_policy():
    return authorizer(
        role("pod-admin", rule(["*"], [""], ["pods"])),
        role("rbac-writer", rule(["create", "update"], [G], ["roles", "rolebindings"])),
        role("binder", rule(["bind"], [G], ["clusterroles"], names=["secret-admin"])),
        role("escalator", rule(["escalate"], [G], ["roles"])),
        role("secret-admin", rule(["*"], [""], ["secrets"])),
        binding("jane-pods", "ClusterRole", "pod-admin", user("jane"), namespace="dev"),
        binding("jane-rbac", "ClusterRole", "rbac-writer", user("jane"), namespace="dev"),
        binding("bob-binds", "ClusterRole", "binder", user("bob"), namespace="dev"),
        binding("eve-escalates", "ClusterRole", "escalator", user("eve"), namespace="dev"),
    )


def test_a_role_granting_what_the_user_lacks_is_refused():
    a, jane = _escalation_policy(), UserInfo("jane", ("system:authenticated",))
    ok = role("pods", rule(["get", "delete"], [""], ["pods"]), namespace="dev")
    check_escalation(a, jane, resource="roles", namespace="dev", obj=ok)  # held: no error
    bad = role("more", rule(["get", "delete"], [""], ["pods", "secrets"]),
               rule(["create"], ["apps"], ["deployments"]), namespace="dev")
    with pytest.raises(errors.Forbidden) as e:
        check_escalation(a, jane, resource="roles", namespace="dev", obj=bad)
    assert e.value.message == (
        'roles.rbac.authorization.k8s.io "more" is forbidden: user "jane" (groups=["system:authenticated"]) '
        'is attempting to grant RBAC permissions not currently held:\n'
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete"]}\n'
        '{APIGroups:["apps"], Resources:["deployments"], Verbs:["create"]}')
    assert e.value.to_status()["details"] == {"name": "more", "group": G, "kind": "roles"}
    # the same role in a namespace where jane holds nothing
    with pytest.raises(errors.Forbidden):
        check_escalation(a, jane, resource="roles", namespace="prod", obj=ok)
    # escalate on roles lets eve write any role; system:masters need nothing
    check_escalation(a, UserInfo("eve"), resource="roles", namespace="dev", obj=bad)
    check_escalation(a, UserInfo("root", ("system:masters",)), resource="roles", namespace="dev", obj=bad)


def test_an_update_that_changes_only_gc_fields_is_not_an_escalation():
    a, jane = _escalation_policy(), UserInfo("jane")
    old = role("big", rule(["*"], ["*"], ["*"]), namespace="dev")
    new = {**old, "metadata": {**old["metadata"], "ownerReferences": [{"uid": "u"}], "finalizers": ["f"]}}
    check_escalation(a, jane, resource="roles", namespace="dev", obj=new, old=old)
    relabeled = {**old, "metadata": {**old["metadata"], "labels": {"a": "b"}}}
    with pytest.raises(errors.Forbidden):
        check_escalation(a, jane, resource="roles", namespace="dev", obj=relabeled, old=old)


def test_a_binding_to_a_role_the_user_does_not_hold_is_refused_unless_bind_is_granted():
    a, jane = _escalation_policy(), UserInfo("jane")
    to_pods = binding("b1", "ClusterRole", "pod-admin", user("x"), namespace="dev")
    check_escalation(a, jane, resource="rolebindings", namespace="dev", obj=to_pods)
    to_secrets = binding("b2", "ClusterRole", "secret-admin", user("x"), namespace="dev")
    with pytest.raises(errors.Forbidden) as e:
        check_escalation(a, jane, resource="rolebindings", namespace="dev", obj=to_secrets)
    assert e.value.message.startswith('rolebindings.rbac.authorization.k8s.io "b2" is forbidden: '
                                      'user "jane" (groups=[]) is attempting to grant RBAC permissions')
    # bob may bind secret-admin (bind, limited to that name) though he holds none of it ...
    check_escalation(a, UserInfo("bob"), resource="rolebindings", namespace="dev", obj=to_secrets)
    # ... but not pod-admin, and not outside dev
    with pytest.raises(errors.Forbidden):
        check_escalation(a, UserInfo("bob"), resource="rolebindings", namespace="dev", obj=to_pods)
    with pytest.raises(errors.Forbidden):
        check_escalation(a, UserInfo("bob"), resource="clusterrolebindings", namespace="",
                         obj=binding("c", "ClusterRole", "secret-admin", user("x")))
    missing = binding("b3", "Role", "nope", user("x"), namespace="dev")
    with pytest.raises(errors.Forbidden) as e:
        check_escalation(a, jane, resource="rolebindings", namespace="dev", obj=missing)
    assert e.value.message == ('rolebindings.rbac.authorization.k8s.io "b3" is forbidden: '
                               'role.rbac.authorization.k8s.io "nope" not found')
    check_escalation(a, UserInfo("root", ("system:masters",)), resource="rolebindings",
                     namespace="dev", obj=missing)


def test_an_aggregation_rule_takes_every_permission():
    a = authorizer(role("writer", rule(["*"], [G], ["clusterroles"])),
                   binding("w", "ClusterRole", "writer", user("jane")))
    agg = {"kind": "ClusterRole", "metadata": {"name": "agg"}, "rules": [],
           "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}}
    # jane may escalate clusterroles (her role has "*" verbs), so she may
    check_escalation(a, UserInfo("jane"), resource="clusterroles", namespace="", obj=agg)
    a = authorizer(role("writer", rule(["create"], [G], ["clusterroles"])),
                   binding("w", "ClusterRole", "writer", user("jane")))
    with pytest.raises(errors.Forbidden) as e:
        check_escalation(a, UserInfo("jane"), resource="clusterroles", namespace="", obj=agg)
    assert e.value.message == ('clusterroles.rbac.authorization.k8s.io "agg" is forbidden: '
                               'must have cluster-admin privileges to use the aggregationRule')


# --- bootstrap policy (data) ------------------------------------------------------------------

def test_bootstrap_policy_grants_components_what_they_need():
    a = authorizer(*cluster_roles(), *cluster_role_bindings())
    chain = Union([PrivilegedGroups("system:masters"), a])
    anon = ("system:unauthenticated",)
    assert a.authorize(url("system:anonymous", "get", "/version", anon))[0] is Decision.ALLOW
    assert a.authorize(url("system:anonymous", "get", "/readyz", anon))[0] is Decision.ALLOW
    assert a.authorize(url("system:anonymous", "get", "/apis", anon))[0] is Decision.NO_OPINION
    assert a.authorize(url("jane", "get", "/apis/apps", ["system:authenticated"]))[0] is Decision.ALLOW
    assert a.authorize(res("system:anonymous", "list", "pods", ns="default", groups=anon))[0] is Decision.NO_OPINION
    sched = "system:kube-scheduler"
    assert a.authorize(res(sched, "create", "pods", ns="x", sub="binding", name="p"))[0] is Decision.ALLOW
    assert a.authorize(res(sched, "update", "leases", ns="kube-system", group="coordination.k8s.io",
                           name="kube-scheduler"))[0] is Decision.ALLOW
    assert a.authorize(res(sched, "update", "leases", ns="kube-system", group="coordination.k8s.io",
                           name="kube-controller-manager"))[0] is Decision.NO_OPINION
    assert a.authorize(res(sched, "create", "pods", ns="x"))[0] is Decision.NO_OPINION
    kcm = "system:kube-controller-manager"
    for verb, resource, grp, sub in [("create", "pods", "", ""), ("update", "replicasets", "apps", "status"),
                                     ("update", "namespaces", "", "finalize"), ("create", "endpoints", "", ""),
                                     ("patch", "nodes", "", "status"), ("delete", "pods", "", ""),
                                     ("escalate", "clusterroles", G, "")]:
        assert a.authorize(res(kcm, verb, resource, ns="x", group=grp, sub=sub))[0] is Decision.ALLOW, (verb, resource)
    assert chain.authorize(res("root", "delete", "nodes", groups=["system:masters"]))[0] is Decision.ALLOW
    assert a.authorize(res("root", "delete", "nodes", groups=["system:masters"]))[0] is Decision.ALLOW  # cluster-admin
    proxy = "system:kube-proxy"
    assert a.authorize(res(proxy, "watch", "endpointslices", group="discovery.k8s.io"))[0] is Decision.ALLOW
    assert a.authorize(res(proxy, "get", "secrets", ns="x"))[0] is Decision.NO_OPINION
    names = {o["metadata"]["name"] for o in cluster_roles()}
    assert {"cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery",
            "system:public-info-viewer", "system:kube-scheduler", "system:kube-controller-manager",
            "system:node", "system:node-proxier"} <= names
    bindings = {b["metadata"]["name"]: b for b in cluster_role_bindings()}
    assert "subjects" not in bindings["system:node"]  # nodes get their rights from the Node authorizer


# --- through a real API server ----------------------------------------------------------------

def create(http, path, body, code=201):
    r = http.post(path, json={"apiVersion": f"{G}/v1", **body})
    assert r.status_code == code, r.text
    return r.json()


def test_rbac_objects_are_served_defaulted_and_validated(http, ns):
    create(http, f"{RBAC}/namespaces/{ns}/roles", role("reader", rule(["get"], [""], ["pods"]), namespace=ns))
    rb = create(http, f"{RBAC}/namespaces/{ns}/rolebindings", {
        "kind": "RoleBinding", "metadata": {"name": "system:jane"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},  # a RoleBinding may name a ClusterRole
        "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "b"}]})
    assert rb["roleRef"]["apiGroup"] == G
    assert rb["subjects"] == [{"kind": "User", "name": "jane", "apiGroup": G},
                              {"kind": "ServiceAccount", "name": "b"}]
    # roleRef is immutable; subjects are not
    rb["roleRef"]["name"] = "edit"
    r = http.put(f"{RBAC}/namespaces/{ns}/rolebindings/system:jane", json=rb)
    assert r.status_code == 422, r.text
    assert r.json()["details"]["causes"][0]["field"] == "roleRef"
    assert "cannot change roleRef" in r.json()["message"]
    rb["roleRef"]["name"] = "view"
    rb["subjects"] = rb["subjects"][:1]
    assert http.put(f"{RBAC}/namespaces/{ns}/rolebindings/system:jane", json=rb).status_code == 200

    bad = create(http, f"{RBAC}/clusterrolebindings", {
        "kind": "ClusterRoleBinding", "metadata": {"name": "bad-" + ns},
        "roleRef": {"kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "b"}, {"kind": "Robot", "name": "r"},
                     {"kind": "User", "name": "u", "apiGroup": "example.com"},
                     {"kind": "ServiceAccount", "name": "x", "namespace": "n", "apiGroup": G}]}, 422)
    fields = {c["field"]: c["message"] for c in bad["details"]["causes"]}
    assert fields == {
        "roleRef.kind": 'Unsupported value: "Role": supported values: "ClusterRole"',
        "subjects[0].namespace": "Required value",
        "subjects[1].kind": 'Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group"',
        "subjects[2].apiGroup": f'Unsupported value: "example.com": supported values: "{G}"',
        "subjects[3].apiGroup": 'Unsupported value: "rbac.authorization.k8s.io": supported values: ""'}
    assert bad["message"].startswith(f'ClusterRoleBinding.{G} "bad-{ns}" is invalid: ')

    bad = create(http, f"{RBAC}/namespaces/{ns}/roles", {
        "kind": "Role", "metadata": {"name": "r/x"},
        "rules": [{"verbs": [], "apiGroups": [""], "resources": ["pods"]},
                  {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
                  {"verbs": ["get"], "resources": ["pods"]}]}, 422)
    fields = {c["field"]: c["message"] for c in bad["details"]["causes"]}
    assert fields == {
        "metadata.name": "Invalid value: \"r/x\": may not contain '/'",
        "rules[0].verbs": "Required value: verbs must contain at least one value",
        "rules[1].nonResourceURLs": 'Invalid value: ["/healthz"]: namespaced rules cannot apply to non-resource URLs',
        "rules[2].apiGroups": "Required value: resource rules must supply at least one api group"}
    bad = create(http, f"{RBAC}/clusterroles", {
        "kind": "ClusterRole", "metadata": {"name": "agg-" + ns}, "aggregationRule": {}}, 422)
    assert bad["details"]["causes"][0]["field"] == "aggregationRule.clusterRoleSelectors"
    # nothing of the refused objects was stored
    assert http.get(f"{RBAC}/namespaces/{ns}/roles/r%2Fx").status_code == 404
    assert http.get(f"{RBAC}/clusterrolebindings/bad-{ns}").status_code == 404


def test_bootstrap_roles_are_present_after_start(http):
    for name in ("cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery",
                 "system:public-info-viewer", "system:kube-scheduler", "system:kube-controller-manager",
                 "system:node", "system:node-proxier", "system:controller:replicaset-controller"):
        r = http.get(f"{RBAC}/clusterroles/{name}")
        assert r.status_code == 200, name
        md = r.json()["metadata"]
        assert md["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
        assert md["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    crb = http.get(f"{RBAC}/clusterrolebindings/cluster-admin").json()
    assert crb["subjects"] == [{"kind": "Group", "apiGroup": G, "name": "system:masters"}]
    view = http.get(f"{RBAC}/clusterroles/view").json()
    assert view["aggregationRule"]["clusterRoleSelectors"] == [
        {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]


def versions(http) -> dict[str, str]:
    """Every ClusterRole's and ClusterRoleBinding's resourceVersion, by kind and name."""
    return {f"{kind}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for kind in ("clusterroles", "clusterrolebindings")
            for o in http.get(f"{RBAC}/{kind}").json()["items"]}


def test_a_restart_restores_the_defaults_without_taking_anything_away():
    e = Etcd().start()
    s = APIServer(e.url).start()
    try:
        with s.client() as http:
            assert http.delete(f"{RBAC}/clusterroles/system:basic-user").status_code == 200
            # narrowed, and given a rule of its own: autoupdate puts back what was taken
            narrowed = http.get(f"{RBAC}/clusterroles/system:discovery").json()
            narrowed["rules"] = [rule(["get"], urls=["/version", "/mine"])]
            assert http.put(f"{RBAC}/clusterroles/system:discovery", json=narrowed).status_code == 200
            # ... unless the role says autoupdate "false"
            kept = http.get(f"{RBAC}/clusterroles/system:monitoring").json()
            kept["rules"] = [rule(["get"], urls=["/metrics"])]
            kept["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = "false"
            assert http.put(f"{RBAC}/clusterroles/system:monitoring", json=kept).status_code == 200
            b = http.get(f"{RBAC}/clusterrolebindings/system:public-info-viewer").json()
            b["subjects"] = [group("system:unauthenticated"), user("jane")]
            assert http.put(f"{RBAC}/clusterrolebindings/system:public-info-viewer", json=b).status_code == 200
            # a default binding to another role is recreated with the default's role
            assert http.delete(f"{RBAC}/clusterrolebindings/system:monitoring").status_code == 200
            create(http, f"{RBAC}/clusterrolebindings", binding(
                "system:monitoring", "ClusterRole", "view", user("jane")))
        s.stop()
        s = APIServer(e.url).start()
        with s.client() as http:
            assert http.get(f"{RBAC}/clusterroles/system:basic-user").status_code == 200
            discovery = http.get(f"{RBAC}/clusterroles/system:discovery").json()
            urls = {u for r in discovery["rules"] for u in r["nonResourceURLs"]}
            assert {"/mine", "/version", "/api", "/apis/*", "/healthz", "/openapi/*"} <= urls
            assert discovery["rules"][0] == rule(["get"], urls=["/version", "/mine"])
            monitoring = http.get(f"{RBAC}/clusterroles/system:monitoring").json()
            assert monitoring["rules"] == [rule(["get"], urls=["/metrics"])]
            b = http.get(f"{RBAC}/clusterrolebindings/system:public-info-viewer").json()
            assert b["subjects"] == [group("system:unauthenticated"), user("jane"),
                                     group("system:authenticated")]
            b = http.get(f"{RBAC}/clusterrolebindings/system:monitoring").json()
            assert b["roleRef"]["name"] == "system:monitoring"
            assert b["subjects"] == [user("jane"), group("system:monitoring")]
            # nothing left to add: a third start writes no role or binding (the server's
            # own master lease is written at every start, so the store's revision moves)
            before = versions(http)
        s.stop()
        s = APIServer(e.url, port=s.port).start()
        with s.client() as http:
            assert versions(http) == before
    finally:
        s.stop()
        e.stop()


def test_reconciling_a_binding_with_another_role_recreates_it():
    from apiserver.auth.bootstrappolicy import reconciled
    expected = next(b for b in cluster_role_bindings() if b["metadata"]["name"] == "cluster-admin")
    existing = {**expected, "metadata": {"name": "cluster-admin", "uid": "u"},
                "roleRef": {"apiGroup": G, "kind": "ClusterRole", "name": "view"}, "subjects": []}
    out = reconciled(existing, expected)
    assert out["roleRef"]["name"] == "cluster-admin"
    assert out["subjects"] == [group("system:masters")]
    assert out["metadata"]["labels"] == {"kubernetes.io/bootstrapping": "rbac-defaults"}
    assert reconciled(expected, expected) is None


async def test_the_authorizer_follows_the_servers_watch_cache(etcd, apiserver, http, ns):
    """An authorizer fed by a watch cache over the same etcd the server writes to sees a
    binding as soon as the cache does, and its removal."""
    from apiserver.cache import WatchCache
    from apiserver.storage import EtcdStore
    store = EtcdStore([etcd.url])
    await store.open()
    cache = WatchCache(store)
    await cache.start()
    a = RBACAuthorizer()
    feed = CacheFeed(cache, a.index, KINDS, "rbac")
    try:
        await asyncio.wait_for(feed.start(), 10)
        who = "user-" + uuid.uuid4().hex[:6]
        get = res(who, "get", "configmaps", ns=ns, name="c")
        assert a.authorize(get)[0] is Decision.NO_OPINION
        await asyncio.to_thread(create, http, f"{RBAC}/namespaces/{ns}/roles",
                                role("cm", rule(["get"], [""], ["configmaps"]), namespace=ns))
        await asyncio.to_thread(create, http, f"{RBAC}/namespaces/{ns}/rolebindings",
                                binding("b", "Role", "cm", user(who), namespace=ns))

        async def until(want):
            for _ in range(500):
                if a.authorize(get)[0] is want:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"the authorizer never said {want}")
        await until(Decision.ALLOW)
        await asyncio.to_thread(http.delete, f"{RBAC}/namespaces/{ns}/rolebindings/b")
        await until(Decision.NO_OPINION)
    finally:
        await feed.stop()
        await cache.stop()
        await store.close()



# --- the real kubectl -------------------------------------------------------------------------

from tests.test_kubectl import cache_dir, kubectl, rows  # noqa: E402,F401  (fixtures)


@pytest.mark.kubectl
def test_kubectl_creates_and_lists_rbac_objects(kubectl, http, ns):
    r = kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods,pods/log",
                "--resource-name=web", "-v=8")
    assert "Content-Type: application/vnd.kubernetes.protobuf" in r.stderr
    got = http.get(f"{RBAC}/namespaces/{ns}/roles/pod-reader").json()
    assert got["rules"] == [{"verbs": ["get", "list"], "apiGroups": [""],
                             "resources": ["pods", "pods/log"], "resourceNames": ["web"]}]
    kubectl("create", "rolebinding", "read-pods", "--role=pod-reader", "--user=jane",
            f"--serviceaccount={ns}:builder", "--group=devs")
    rb = http.get(f"{RBAC}/namespaces/{ns}/rolebindings/read-pods").json()
    assert rb["roleRef"] == {"apiGroup": G, "kind": "Role", "name": "pod-reader"}
    assert sorted(s["kind"] for s in rb["subjects"]) == ["Group", "ServiceAccount", "User"]
    crb = f"viewers-{ns}"
    kubectl("create", "clusterrolebinding", crb, "--clusterrole=view", "--group=auditors")
    try:
        wide = rows(kubectl.out("get", "rolebindings", "-o", "wide"))
        assert wide == [{"NAME": "read-pods", "ROLE": "Role/pod-reader", "AGE": wide[0]["AGE"],
                         "USERS": "jane", "GROUPS": "devs", "SERVICEACCOUNTS": f"{ns}/builder"}]
        kubectl("create", "clusterrole", crb, "--verb=get", "--non-resource-url=/logs/*")
        kubectl("create", "clusterrole", crb + "-agg", f"--aggregation-rule=team={ns}")
        got = http.get(f"{RBAC}/clusterroles/{crb}").json()
        assert got["rules"] == [{"verbs": ["get"], "nonResourceURLs": ["/logs/*"]}]
        got = http.get(f"{RBAC}/clusterroles/{crb}-agg").json()
        assert got["aggregationRule"] == {"clusterRoleSelectors": [{"matchLabels": {"team": ns}}]}
        listed = {r["NAME"]: r for r in rows(kubectl.out("get", "clusterroles"))}
        assert {"cluster-admin", "admin", "edit", "view", "system:node"} <= set(listed)
        assert listed["cluster-admin"]["CREATED AT"].endswith("Z")
        assert rows(kubectl.out("get", "clusterrolebinding", crb))[0]["ROLE"] == "ClusterRole/view"
        # a bad object is refused with Kubernetes' message and stores nothing
        r = kubectl("create", "rolebinding", "bad", "--clusterrole=view",
                    f"--serviceaccount={ns}:Not_A_Name", ok=False)
        assert ('RoleBinding.rbac.authorization.k8s.io "bad" is invalid: subjects[0].name: '
                'Invalid value: "Not_A_Name"' in r.stderr)
        assert http.get(f"{RBAC}/namespaces/{ns}/rolebindings/bad").status_code == 404
        kubectl("patch", "rolebinding", "read-pods", "--type=merge",
                "-p", '{"roleRef":{"name":"other"}}', ok=False)
        assert http.get(f"{RBAC}/namespaces/{ns}/rolebindings/read-pods").json()["roleRef"]["name"] == "pod-reader"
    finally:
        http.delete(f"{RBAC}/clusterrolebindings/{crb}")
        http.delete(f"{RBAC}/clusterroles/{crb}")
        http.delete(f"{RBAC}/clusterroles/{crb}-agg")
