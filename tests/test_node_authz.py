"""The Node authorizer and NodeRestriction admission: the authorizer's decisions on tables
of cases over a graph of pods, the graph following pods (and PersistentVolumes), a count
showing a decision looks at a handful of index entries however many pods there are,
NodeRestriction's refusals with Kubernetes' wording, and the graph fed by a real API
server's watch cache."""
# ruff: noqa: E501  (the case tables read one case a line)
from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from apiserver.auth.authorizer import (Attributes, Decision, UserInfo, forbidden,
                                       request_attributes)
from apiserver.auth.feed import CacheFeed
from apiserver.auth.node import Graph, NodeAuthorizer, node_identity, pod_references
from apiserver.auth.noderestriction import NodeRestriction
from machinery import errors

NODES = "system:nodes"
ALLOW, NO = Decision.ALLOW, Decision.NO_OPINION


def node_user(name: str) -> UserInfo:
    return UserInfo(f"system:node:{name}", (NODES, "system:authenticated"))


A, B = node_user("a"), node_user("b")


# --- builders -----------------------------------------------------------------------------

def pod(name, node="", ns="ns", *, sa="", secrets=(), configmaps=(), pull=(), env_secret="",
        env_cm="", claims=(), projected_secret="", annotations=None, uid=None) -> dict:
    vols = [{"name": f"s{i}", "secret": {"secretName": s}} for i, s in enumerate(secrets)]
    vols += [{"name": f"c{i}", "configMap": {"name": c}} for i, c in enumerate(configmaps)]
    vols += [{"name": f"p{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)]
    if projected_secret:
        vols.append({"name": "proj", "projected": {"sources": [{"secret": {"name": projected_secret}}]}})
    env = []
    if env_secret:
        env.append({"name": "S", "valueFrom": {"secretKeyRef": {"name": env_secret, "key": "k"}}})
    c = {"name": "c", "image": "x", "env": env}
    if env_cm:
        c["envFrom"] = [{"configMapRef": {"name": env_cm}}]
    spec: dict = {"containers": [c], "volumes": vols,
                  "imagePullSecrets": [{"name": p} for p in pull]}
    if node:
        spec["nodeName"] = node
    if sa:
        spec["serviceAccountName"] = sa
    md = {"name": name, "namespace": ns, "uid": uid or f"uid-{name}"}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


def graph(*pods) -> Graph:
    g = Graph()
    for p in pods:
        g.put_pod(p)
    return g


def req(u, verb, resource, *, ns="", group="", sub="", name="", selector="") -> Attributes:
    """Attributes as the server reads them from a request (request_attributes), so the
    tables also check that path and query are read as the kubelet sends them."""
    method = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "update": "PUT",
              "patch": "PATCH", "delete": "DELETE", "deletecollection": "DELETE"}[verb]
    base = f"/apis/{group}/v1" if group else "/api/v1"
    path = base + (f"/namespaces/{ns}" if ns else "") + f"/{resource}"
    if name and verb != "create" or sub:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    query = {}
    if verb == "watch":
        query["watch"] = "true"
    if selector:
        query["fieldSelector"] = selector
    attrs = request_attributes(u, method, path, query)
    assert attrs.verb == verb, (verb, attrs)
    return attrs


WORLD = graph(
    pod("pa", "a", sa="sa-a", secrets=["vol-secret"], configmaps=["vol-cm"], pull=["pull"],
        env_secret="env-secret", env_cm="env-cm", claims=["claim-a"], projected_secret="proj"),
    pod("pb", "b", sa="sa-b", secrets=["b-secret"], configmaps=["b-cm"]),
    pod("pending", "", secrets=["pending-secret"]),
    pod("mirror", "a", secrets=["mirror-secret"],
        annotations={"kubernetes.io/config.mirror": "x"}),
)
WORLD.put_pv({"metadata": {"name": "pv-a"},
              "spec": {"claimRef": {"namespace": "ns", "name": "claim-a"},
                       "csi": {"driver": "d", "volumeHandle": "h",
                               "nodePublishSecretRef": {"name": "pv-secret", "namespace": "ns"}}}})

CASES = [
    # (why, attrs, want decision, want reason or None)
    ("secret in a volume of its pod", req(A, "get", "secrets", ns="ns", name="vol-secret"), ALLOW, ""),
    ("secret in env", req(A, "get", "secrets", ns="ns", name="env-secret"), ALLOW, ""),
    ("image pull secret", req(A, "get", "secrets", ns="ns", name="pull"), ALLOW, ""),
    ("projected secret", req(A, "get", "secrets", ns="ns", name="proj"), ALLOW, ""),
    ("the kubelet's reflector lists one secret by name", req(A, "list", "secrets", ns="ns", selector="metadata.name=vol-secret"), ALLOW, ""),
    ("and watches it", req(A, "watch", "secrets", ns="ns", selector="metadata.name=vol-secret"), ALLOW, ""),
    ("configmap volume", req(A, "get", "configmaps", ns="ns", name="vol-cm"), ALLOW, ""),
    ("configmap envFrom, watched", req(A, "watch", "configmaps", ns="ns", selector="metadata.name=env-cm"), ALLOW, ""),
    ("secret of a PV bound to its claim", req(A, "get", "secrets", ns="ns", name="pv-secret"), ALLOW, ""),
    ("another node's pod's secret", req(A, "get", "secrets", ns="ns", name="b-secret"), NO, "no relationship found between node 'a' and this object"),
    ("a secret no pod uses", req(A, "get", "secrets", ns="ns", name="nobody"), NO, "no relationship found between node 'a' and this object"),
    ("same name, other namespace", req(A, "get", "secrets", ns="other", name="vol-secret"), NO, "no relationship found between node 'a' and this object"),
    ("an unbound pod's secret", req(A, "get", "secrets", ns="ns", name="pending-secret"), NO, "no relationship found between node 'a' and this object"),
    ("a mirror pod grants nothing", req(A, "get", "secrets", ns="ns", name="mirror-secret"), NO, "no relationship found between node 'a' and this object"),
    ("list of all secrets", req(A, "list", "secrets", ns="ns"), NO, "No Object name found"),
    ("secret write", req(A, "update", "secrets", ns="ns", name="vol-secret"), NO, "can only read resources of this type"),
    ("secret create", req(A, "create", "secrets", ns="ns"), NO, "can only read resources of this type"),
    ("secrets across namespaces", req(A, "list", "secrets", selector="metadata.name=vol-secret"), NO, "can only read namespaced object of this type"),
    ("its claim", req(A, "get", "persistentvolumeclaims", ns="ns", name="claim-a"), ALLOW, ""),
    ("its claim's status", req(A, "patch", "persistentvolumeclaims", ns="ns", name="claim-a", sub="status"), ALLOW, ""),
    ("list claims", req(A, "list", "persistentvolumeclaims", ns="ns", selector="metadata.name=claim-a"), NO, "can only get individual resources of this type"),
    ("its PV", req(A, "get", "persistentvolumes", name="pv-a"), ALLOW, ""),
    ("b cannot reach a's PV", req(B, "get", "persistentvolumes", name="pv-a"), NO, "no relationship found between node 'b' and this object"),
    ("token for its pod's SA", req(A, "create", "serviceaccounts", ns="ns", name="sa-a", sub="token"), ALLOW, ""),
    ("its pod's SA", req(A, "get", "serviceaccounts", ns="ns", name="sa-a"), ALLOW, ""),
    ("token for another node's SA", req(A, "create", "serviceaccounts", ns="ns", name="sa-b", sub="token"), NO, "no relationship found between node 'a' and this object"),
    ("create an SA", req(A, "create", "serviceaccounts", ns="ns"), NO, "can only create tokens for individual service accounts"),
    ("its lease", req(A, "update", "leases", ns="kube-node-lease", group="coordination.k8s.io", name="a"), ALLOW, ""),
    ("its lease, got", req(A, "get", "leases", ns="kube-node-lease", group="coordination.k8s.io", name="a"), ALLOW, ""),
    ("a lease create (NodeRestriction checks the name)", req(A, "create", "leases", ns="kube-node-lease", group="coordination.k8s.io"), ALLOW, ""),
    ("another node's lease", req(A, "update", "leases", ns="kube-node-lease", group="coordination.k8s.io", name="b"), NO, "can only access node lease with the same name as the requesting node"),
    ("a lease elsewhere", req(A, "get", "leases", ns="kube-system", group="coordination.k8s.io", name="a"), NO, 'can only access leases in the "kube-node-lease" system namespace'),
    ("listing leases", req(A, "list", "leases", ns="kube-node-lease", group="coordination.k8s.io"), NO, "can only get, create, update, patch, or delete a node lease"),
    ("its node", req(A, "get", "nodes", name="a"), ALLOW, ""),
    ("its node, watched by name", req(A, "watch", "nodes", selector="metadata.name=a"), ALLOW, ""),
    ("another node", req(A, "get", "nodes", name="b"), NO, "node 'a' cannot read 'b', only its own Node object"),
    ("all nodes", req(A, "list", "nodes"), NO, "node 'a' cannot read all nodes, only its own Node object"),
    ("register (NodeRestriction checks the name)", req(A, "create", "nodes"), ALLOW, ""),
    ("node patch", req(A, "patch", "nodes", name="a"), ALLOW, ""),
    ("node status", req(A, "patch", "nodes", name="a", sub="status"), ALLOW, ""),
    ("node delete", req(A, "delete", "nodes", name="a"), NO, ""),
    ("its pod", req(A, "get", "pods", ns="ns", name="pa"), ALLOW, ""),
    ("another node's pod", req(A, "get", "pods", ns="ns", name="pb"), NO, "no relationship found between node 'a' and this object"),
    ("its pods, as the kubelet lists them", req(A, "list", "pods", selector="spec.nodeName=a"), ALLOW, ""),
    ("its pods, watched", req(A, "watch", "pods", selector="spec.nodeName==a"), ALLOW, ""),
    ("another node's pods", req(A, "list", "pods", selector="spec.nodeName=b"), NO, "can only list/watch pods with spec.nodeName field selector"),
    ("not-equal is no scope", req(A, "list", "pods", selector="spec.nodeName!=a"), NO, "can only list/watch pods with spec.nodeName field selector"),
    ("every pod", req(A, "list", "pods"), NO, "can only list/watch pods with spec.nodeName field selector"),
    ("pod status (NodeRestriction: its own)", req(A, "patch", "pods", ns="ns", name="pb", sub="status"), ALLOW, ""),
    ("pod create (NodeRestriction: mirror pods only)", req(A, "create", "pods", ns="ns"), ALLOW, ""),
    ("pod delete (NodeRestriction: its own)", req(A, "delete", "pods", ns="ns", name="pa"), ALLOW, ""),
    ("eviction (NodeRestriction: its own)", req(A, "create", "pods", ns="ns", name="pa", sub="eviction"), ALLOW, ""),
    ("pod update", req(A, "update", "pods", ns="ns", name="pa"), NO, ""),
    ("pod binding", req(A, "create", "pods", ns="ns", name="pa", sub="binding"), NO, ""),
    ("events: the system:node rules", req(A, "create", "events", ns="ns"), ALLOW, ""),
    ("event patch", req(A, "patch", "events", ns="ns", name="e"), ALLOW, ""),
    ("services, for env vars", req(A, "watch", "services"), ALLOW, ""),
    ("subjectaccessreviews, for the kubelet's webhook", req(A, "create", "subjectaccessreviews", group="authorization.k8s.io"), ALLOW, ""),
    ("deployments: nothing", req(A, "list", "deployments", ns="ns", group="apps"), NO, ""),
    ("namespaces: nothing", req(A, "get", "namespaces", name="ns"), NO, ""),
    ("rbac: nothing", req(A, "create", "clusterrolebindings", group="rbac.authorization.k8s.io"), NO, ""),
    ("not a node: RBAC decides", req(UserInfo("jane", ("system:authenticated",)), "get", "secrets", ns="ns", name="vol-secret"), NO, ""),
    ("a node name without the group is not a node", req(UserInfo("system:node:a", ("system:authenticated",)), "get", "secrets", ns="ns", name="vol-secret"), NO, ""),
    ("a node without a name", req(UserInfo("system:node:", (NODES,)), "get", "nodes", name="a"), NO, 'unknown node for user "system:node:"'),
]


@pytest.mark.parametrize("why,attrs,want,reason", CASES, ids=[c[0] for c in CASES])
def test_decisions(why, attrs, want, reason):
    decision, why_not = NodeAuthorizer(WORLD).authorize(attrs)
    assert decision is want
    if reason is not None:
        assert why_not == reason


def test_a_refusal_is_worded_as_kubernetes_words_it():
    attrs = req(A, "get", "secrets", ns="ns", name="b-secret")
    decision, reason = NodeAuthorizer(WORLD).authorize(attrs)
    assert decision is NO
    assert forbidden(attrs, reason).message == (
        'secrets "b-secret" is forbidden: User "system:node:a" cannot get resource "secrets" in API '
        "group \"\" in the namespace \"ns\": no relationship found between node 'a' and this object")


def test_node_identity_is_kubernetes_default_identifier():
    assert node_identity(A) == ("a", True)
    assert node_identity(UserInfo("system:node:a")) == ("", False)
    assert node_identity(UserInfo("a", (NODES,))) == ("", False)
    assert node_identity(UserInfo("system:node:", (NODES,))) == ("", True)


def test_pod_references_cover_every_place_a_pod_names_an_object():
    p = pod("p", "a", sa="sa", secrets=["s1"], configmaps=["c1"], pull=["ps"], env_secret="es",
            env_cm="ec", claims=["cl"], projected_secret="pj")
    p["spec"]["initContainers"] = [{"name": "i", "envFrom": [{"secretRef": {"name": "init-s"}}]}]
    p["spec"]["volumes"] += [{"name": "eph", "ephemeral": {"volumeClaimTemplate": {}}},
                             {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-s"}}},
                             {"name": "pc", "projected": {"sources": [{"configMap": {"name": "pcm"}},
                                                                       {"serviceAccountToken": {"path": "t"}}]}}]
    assert pod_references(p) == {
        ("serviceaccounts", "sa"), ("secrets", "s1"), ("secrets", "ps"), ("secrets", "es"), ("secrets", "pj"),
        ("secrets", "init-s"), ("secrets", "csi-s"), ("configmaps", "c1"), ("configmaps", "ec"),
        ("configmaps", "pcm"), ("persistentvolumeclaims", "cl"), ("persistentvolumeclaims", "p-eph")}


def test_the_graph_follows_pods_as_they_come_move_and_go():
    g = Graph()
    a = NodeAuthorizer(g)
    get = req(A, "get", "secrets", ns="ns", name="s")
    p1, p2 = pod("p1", "a", secrets=["s"]), pod("p2", "a", secrets=["s"])
    g.put_pod(pod("p1", "", secrets=["s"]))          # created, not yet scheduled
    assert a.authorize(get)[0] is NO
    g.put_pod(p1)                                    # bound to a
    g.put_pod(p2)
    assert a.authorize(get)[0] is ALLOW
    g.delete_pod(p1)                                 # one of two users left
    assert a.authorize(get)[0] is ALLOW
    g.put_pod(pod("p2", "a", secrets=["t"]))         # the same name, other references
    assert a.authorize(get)[0] is NO
    assert a.authorize(req(A, "get", "secrets", ns="ns", name="t"))[0] is ALLOW
    g.delete_pod(p2)
    assert a.authorize(req(A, "get", "secrets", ns="ns", name="t"))[0] is NO
    assert g.users == {} and g.pods == {}            # nothing leaks


def test_a_pv_reaches_a_node_through_its_claim_and_stops_when_unbound():
    g = graph(pod("p", "a", claims=["c"]))
    a = NodeAuthorizer(g)
    pv = {"metadata": {"name": "v"}, "spec": {"claimRef": {"namespace": "ns", "name": "c"},
                                               "rbd": {"secretRef": {"name": "ceph"}}}}
    g.put_pv(pv)
    assert a.authorize(req(A, "get", "persistentvolumes", name="v"))[0] is ALLOW
    assert a.authorize(req(A, "get", "secrets", ns="ns", name="ceph"))[0] is ALLOW
    g.put_pv({"metadata": {"name": "v"}, "spec": {}})
    assert a.authorize(req(A, "get", "persistentvolumes", name="v"))[0] is NO
    assert a.authorize(req(A, "get", "secrets", ns="ns", name="ceph"))[0] is NO
    assert g.secret_pvs == {}


def test_a_decision_does_not_scan_pods():
    """5,000 pods on 100 nodes, every pod with its own secret: a decision examines at most
    a few index entries, not the pods."""
    g = Graph()
    for i in range(5000):
        g.put_pod(pod(f"p{i}", f"n{i % 100}", secrets=[f"s{i}"], configmaps=["shared"]))
    a = NodeAuthorizer(g)
    cases = [(node_user("n7"), "s7", ALLOW), (node_user("n7"), "s8", NO),
             (node_user("n99"), "s4999", ALLOW), (node_user("n0"), "missing", NO)]
    for user, secret, want in cases:
        g.visited = 0
        assert a.authorize(req(user, "get", "secrets", ns="ns", name=secret))[0] is want
        assert g.visited <= 2, g.visited
    g.visited = 0
    assert a.authorize(req(node_user("n42"), "get", "configmaps", ns="ns", name="shared"))[0] is ALLOW
    assert a.authorize(req(node_user("n42"), "get", "pods", ns="ns", name="p42"))[0] is ALLOW
    assert g.visited == 2
    assert g.users[("configmaps", "ns", "shared")]["n42"] == 50  # refcounted, not listed


# --- NodeRestriction ------------------------------------------------------------------------

class Objects:
    """What NodeRestriction reads of the watch cache: `get(rt, key)`, over fixed objects."""

    def __init__(self, *objs):
        from apiserver.cache import Entry
        self.entries = {}
        for o in objs:
            md = o["metadata"]
            plural = {"Pod": "pods", "Node": "nodes"}[o["kind"]]
            key = f"/registry/{plural}/{md['namespace']}/{md['name']}" if md.get("namespace") else \
                f"/registry/{plural}/{md['name']}"
            self.entries[key] = Entry.of(key, o, 1)

    def get(self, rt, key):
        return self.entries.get(key)


NODE_A = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a", "uid": "node-a-uid",
                                                           "labels": {"kubernetes.io/hostname": "a"}},
          "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}
PLUGIN = NodeRestriction(Objects(NODE_A, pod("pa", "a", sa="sa-a"), pod("pb", "b", sa="sa-b")))


def mirror(node="a", **kw):
    p = pod("m", node, annotations={"kubernetes.io/config.mirror": "hash"}, **kw)
    p["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": "a",
                                         "uid": "node-a-uid", "controller": True}]
    return p


def node_obj(labels=None, taints=None, name="a"):
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels if labels is not None else {"kubernetes.io/hostname": "a"}},
            "spec": {"taints": taints if taints is not None else [{"key": "k", "effect": "NoSchedule"}]}}


def token_request(pod_name, uid):
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "spec": {"audiences": ["x"], "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": uid}}}


def lease(name):
    return {"kind": "Lease", "metadata": {"name": name, "namespace": "kube-node-lease"}}


ADMIT = [
    # (why, user, attrs, obj, old, None or (code, message))
    ("its own node is created", A, req(A, "create", "nodes"), node_obj(), None, None),
    ("another node is not", A, req(A, "create", "nodes"), node_obj(name="b"), None, (403, 'nodes "b" is forbidden: node "a" is not allowed to modify node "b"')),
    ("kubelet labels are fine", A, req(A, "create", "nodes"), node_obj({"kubernetes.io/os": "linux", "node.kubernetes.io/x": "1", "mine": "y"}), None, None),
    ("node-restriction labels are not", A, req(A, "create", "nodes"), node_obj({"node-restriction.kubernetes.io/trusted": "y"}), None, (403, 'nodes "a" is forbidden: node "a" is not allowed to set the following labels: node-restriction.kubernetes.io/trusted')),
    ("nor other kubernetes.io labels", A, req(A, "create", "nodes"), node_obj({"node-role.kubernetes.io/control-plane": ""}), None, (403, 'nodes "a" is forbidden: node "a" is not allowed to set the following labels: node-role.kubernetes.io/control-plane')),
    ("its status", A, req(A, "patch", "nodes", name="a", sub="status"), node_obj(), NODE_A, None),
    ("another node's status", A, req(A, "patch", "nodes", name="b", sub="status"), node_obj(name="b"), node_obj(name="b"), (403, 'nodes "b" is forbidden: node "a" is not allowed to modify node "b"')),
    ("its taints", A, req(A, "update", "nodes", name="a"), node_obj(taints=[]), NODE_A, (403, 'nodes "a" is forbidden: node "a" is not allowed to modify taints')),
    ("restricted labels on update", A, req(A, "patch", "nodes", name="a"), node_obj({"kubernetes.io/hostname": "a", "node-restriction.kubernetes.io/x": "1"}), NODE_A, (403, 'nodes "a" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/x')),
    ("deleting another node", A, req(A, "delete", "nodes", name="b"), None, node_obj(name="b"), (403, 'nodes "b" is forbidden: node "a" is not allowed to modify node "b"')),
    ("an ordinary pod", A, req(A, "create", "pods", ns="ns"), pod("x", "a"), None, (403, 'pods "x" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "a" can only create mirror pods')),
    ("its mirror pod", A, req(A, "create", "pods", ns="ns"), mirror(), None, None),
    ("a mirror pod for b", A, req(A, "create", "pods", ns="ns"), mirror("b"), None, (403, 'pods "m" is forbidden: node "a" can only create pods with spec.nodeName set to itself')),
    ("a mirror pod with a secret", A, req(A, "create", "pods", ns="ns"), mirror(secrets=["s"]), None, (403, 'pods "m" is forbidden: node "a" can not create pods that reference secrets')),
    ("a mirror pod with an SA", A, req(A, "create", "pods", ns="ns"), mirror(sa="default"), None, (403, 'pods "m" is forbidden: node "a" can not create pods that reference a service account')),
    ("delete its pod", A, req(A, "delete", "pods", ns="ns", name="pa"), None, None, None),
    ("delete b's pod", A, req(A, "delete", "pods", ns="ns", name="pb"), None, None, (403, 'pods "pb" is forbidden: node "a" can only delete pods with spec.nodeName set to itself')),
    ("delete a pod that is not there", A, req(A, "delete", "pods", ns="ns", name="gone"), None, None, (404, 'pods "gone" not found')),
    ("its pod's status", A, req(A, "patch", "pods", ns="ns", name="pa", sub="status"), pod("pa", "a"), pod("pa", "a"), None),
    ("b's pod's status", A, req(A, "patch", "pods", ns="ns", name="pb", sub="status"), pod("pb", "b"), pod("pb", "b"), (403, 'pods "pb" is forbidden: node "a" can only update pod status for pods with spec.nodeName set to itself')),
    ("labels through status", A, req(A, "update", "pods", ns="ns", name="pa", sub="status"), {**pod("pa", "a"), "metadata": {"name": "pa", "labels": {"x": "y"}}}, pod("pa", "a"), (403, 'pods "pa" is forbidden: node "a" cannot update labels through pod status')),
    ("evict its pod", A, req(A, "create", "pods", ns="ns", name="pa", sub="eviction"), {"kind": "Eviction", "metadata": {"name": "pa"}}, None, None),
    ("evict b's pod", A, req(A, "create", "pods", ns="ns", name="pb", sub="eviction"), {"kind": "Eviction", "metadata": {"name": "pb"}}, None, (403, 'pods "pb" is forbidden: node a can only evict pods with spec.nodeName set to itself')),
    ("a token for its pod", A, req(A, "create", "serviceaccounts", ns="ns", name="sa-a", sub="token"), token_request("pa", "uid-pa"), None, None),
    ("a token for b's pod", A, req(A, "create", "serviceaccounts", ns="ns", name="sa-b", sub="token"), token_request("pb", "uid-pb"), None, (403, 'serviceaccounts "sa-b" is forbidden: node requested token bound to a pod scheduled on a different node')),
    ("a token of an old pod", A, req(A, "create", "serviceaccounts", ns="ns", name="sa-a", sub="token"), token_request("pa", "old"), None, (403, 'serviceaccounts "sa-a" is forbidden: the UID in the bound object reference (old) does not match the UID in record. The object might have been deleted and then recreated')),
    ("an unbound token", A, req(A, "create", "serviceaccounts", ns="ns", name="sa-a", sub="token"), {"spec": {}}, None, (403, 'serviceaccounts "sa-a" is forbidden: node requested token not bound to a pod')),
    ("its lease", A, req(A, "create", "leases", ns="kube-node-lease", group="coordination.k8s.io"), lease("a"), None, None),
    ("its lease, renewed", A, req(A, "update", "leases", ns="kube-node-lease", group="coordination.k8s.io", name="a"), lease("a"), lease("a"), None),
    ("b's lease", A, req(A, "create", "leases", ns="kube-node-lease", group="coordination.k8s.io"), lease("b"), None, (403, 'leases.coordination.k8s.io "b" is forbidden: can only access node lease with the same name as the requesting node')),
    ("others pass", UserInfo("jane"), req(UserInfo("jane"), "create", "pods", ns="ns"), pod("x", "a"), None, None),
    ("configmaps are not its business", A, req(A, "create", "configmaps", ns="ns"), {"metadata": {"name": "c"}}, None, None),
]


@pytest.mark.parametrize("why,user,attrs,obj,old,want", ADMIT, ids=[c[0] for c in ADMIT])
async def test_node_restriction(why, user, attrs, obj, old, want):
    if want is None:
        await PLUGIN.admit(user, attrs, obj, old)
        return
    with pytest.raises(errors.APIError) as exc:
        await PLUGIN.admit(user, attrs, obj, old)
    assert (exc.value.code, exc.value.message) == want


# --- fed by a real API server's watch cache ---------------------------------------------------

def create(http, path, body):
    r = http.post(path, json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def test_the_graph_follows_the_servers_watch_cache(etcd, apiserver, http, ns):
    """A graph fed by a watch cache over the etcd the server writes to gives node a its
    pod's secret once the pod is bound, and takes it away when the pod is deleted."""
    from apiserver.cache import WatchCache
    from apiserver.storage import EtcdStore
    store = EtcdStore([etcd.url])
    await store.open()
    cache = WatchCache(store)
    await cache.start()
    g = Graph()
    feed = CacheFeed(cache, g, ("pods", "persistentvolumes"), "node authorizer")
    a = NodeAuthorizer(g)
    node = "n-" + uuid.uuid4().hex[:6]
    get = req(node_user(node), "get", "secrets", ns=ns, name="s")

    async def until(want):
        for _ in range(500):
            if a.authorize(get)[0] is want:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the authorizer never said {want}")
    try:
        await asyncio.wait_for(feed.start(), 10)
        assert a.authorize(get)[0] is NO
        body = pod("p", node, ns=ns, secrets=["s"])
        del body["metadata"]["uid"]
        await asyncio.to_thread(create, http, f"/api/v1/namespaces/{ns}/pods", body)
        await until(ALLOW)
        await asyncio.to_thread(http.delete, f"/api/v1/namespaces/{ns}/pods/p?gracePeriodSeconds=0")
        await until(NO)
    finally:
        await feed.stop()
        await cache.stop()
        await store.close()


# --- through a real API server over TLS, as kubelets with their client certificates ------------

@pytest.fixture(scope="module")
def secure(etcd, tmp_path_factory):
    """An API server serving HTTPS with --authorization-mode=Node,RBAC (and NodeRestriction),
    and clients holding the admin's and two kubelets' certificates made by cluster.pki."""
    import ssl

    import httpx

    from cluster import pki
    from tests.procs import Component, free_port, wait_for

    d = str(tmp_path_factory.mktemp("node-authz") / "pki")
    pki.ensure(d, pki.ClusterFacts(cluster_name="t", apiserver_ips=("127.0.0.1",),
                                   nodes=(pki.Node("node-a"), pki.Node("node-b"), pki.Node("node-k")),
                                   control_plane_name="cp"))
    port = free_port()
    f = lambda p: os.path.join(d, p)  # noqa: E731
    server = Component("apiserver", "--etcd-servers", etcd.url, "--bind-address", "127.0.0.1",
                       "--secure-port", str(port), "--tls-cert-file", f("apiserver.crt"),
                       "--tls-private-key-file", f("apiserver.key"), "--client-ca-file", f("ca.crt"),
                       "--authorization-mode", "Node,RBAC").start()

    def client(leaf):
        ctx = ssl.create_default_context(cafile=f("ca.crt"))
        ctx.load_cert_chain(f(leaf + ".crt"), f(leaf + ".key"))
        return httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=10)
    clients = {"admin": client("admin"), "a": client("kubelets/node-a/kubelet-client"),
               "b": client("kubelets/node-b/kubelet-client")}

    def ready():
        if not server.alive():
            raise RuntimeError(f"apiserver exited: {server.log()}")
        return clients["admin"].get("/readyz").status_code == 200
    try:
        wait_for(ready, what="the secure apiserver")
        yield {**clients, "url": f"https://127.0.0.1:{port}", "pki": d}
    finally:
        for c in clients.values():
            c.close()
        server.stop()


def _ok(r, code=200):
    assert r.status_code == code, r.text
    return r.json()


def _refused(r, message):
    assert r.status_code == 403, r.text
    assert r.json()["message"] == message
    return r


LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def test_a_kubelet_may_touch_only_its_own_node_pods_lease_and_what_its_pods_use(secure):
    from tests.procs import default_service_account, wait_for
    admin, a = secure["admin"], secure["a"]
    ns = "na-" + uuid.uuid4().hex[:6]
    _ok(admin.post("/api/v1/namespaces", json={"metadata": {"name": ns}}), 201)
    default_service_account(admin, ns)
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"}}}
    try:
        # Its Node: register, read, patch its status; not another's.
        _ok(a.post("/api/v1/nodes", json=node), 201)
        _refused(a.post("/api/v1/nodes", json={**node, "metadata": {"name": "node-b"}}),
                 'nodes "node-b" is forbidden: node "node-a" is not allowed to modify node "node-b"')
        _ok(admin.post("/api/v1/nodes", json={**node, "metadata": {"name": "node-b"}}), 201)
        _ok(a.get("/api/v1/nodes/node-a"))
        _refused(a.get("/api/v1/nodes/node-b"),
                 'nodes "node-b" is forbidden: User "system:node:node-a" cannot get resource "nodes" in API group "" at the cluster scope: '
                 "node 'node-a' cannot read 'node-b', only its own Node object")
        merge = {"content-type": "application/merge-patch+json"}
        _ok(a.patch("/api/v1/nodes/node-a/status", headers=merge, content=b'{"status":{"phase":"Running"}}'))
        _refused(a.patch("/api/v1/nodes/node-b/status", headers=merge, content=b'{"status":{"phase":"Running"}}'),
                 'nodes "node-b" is forbidden: node "node-a" is not allowed to modify node "node-b"')
        _refused(a.patch("/api/v1/nodes/node-b", headers=merge, content=b'{"metadata":{"labels":{"x":"y"}}}'),
                 'nodes "node-b" is forbidden: node "node-a" is not allowed to modify node "node-b"')
        _refused(a.patch("/api/v1/nodes/node-a", headers=merge,
                         content=b'{"metadata":{"labels":{"node-restriction.kubernetes.io/trusted":"yes"}}}'),
                 'nodes "node-a" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/trusted')
        _refused(a.get("/api/v1/nodes"), 'nodes is forbidden: User "system:node:node-a" cannot list resource "nodes" in API group "" '
                 "at the cluster scope: node 'node-a' cannot read all nodes, only its own Node object")

        # Its Lease, not another's.
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "node-a", "namespace": "kube-node-lease"}, "spec": {"holderIdentity": "node-a"}}
        got = _ok(a.post(LEASES, json=lease), 201)
        got["spec"]["leaseDurationSeconds"] = 40
        _ok(a.put(f"{LEASES}/node-a", json=got))
        _refused(a.post(LEASES, json={**lease, "metadata": {"name": "node-b", "namespace": "kube-node-lease"}}),
                 'leases.coordination.k8s.io "node-b" is forbidden: can only access node lease with the same name as the requesting node')

        # Pods: the Secrets they use, their status; nothing of node-b's.
        for name in ("used", "unused", "b-only"):
            _ok(admin.post(f"/api/v1/namespaces/{ns}/secrets", json={"metadata": {"name": name}, "stringData": {"k": "v"}}), 201)
        body = pod("pa", "node-a", ns=ns, secrets=["used"])
        del body["metadata"]["uid"]
        _ok(admin.post(f"/api/v1/namespaces/{ns}/pods", json=body), 201)
        body = pod("pb", "node-b", ns=ns, secrets=["b-only"])
        del body["metadata"]["uid"]
        _ok(admin.post(f"/api/v1/namespaces/{ns}/pods", json=body), 201)

        wait_for(lambda: a.get(f"/api/v1/namespaces/{ns}/secrets/used").status_code == 200,
                 what="node-a to be let read its pod's secret")
        # ... as the kubelet's reflector reads it: list and watch by name.
        listed = _ok(a.get(f"/api/v1/namespaces/{ns}/secrets", params={"fieldSelector": "metadata.name=used"}))
        assert [s["metadata"]["name"] for s in listed["items"]] == ["used"]
        _refused(a.get(f"/api/v1/namespaces/{ns}/secrets/unused"),
                 f'secrets "unused" is forbidden: User "system:node:node-a" cannot get resource "secrets" in API group "" '
                 f"in the namespace \"{ns}\": no relationship found between node 'node-a' and this object")
        assert a.get(f"/api/v1/namespaces/{ns}/secrets/b-only").status_code == 403
        assert a.get(f"/api/v1/namespaces/{ns}/secrets").status_code == 403
        assert secure["b"].get(f"/api/v1/namespaces/{ns}/secrets/b-only").status_code == 200

        mine = _ok(a.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName=node-a"}))
        assert [p["metadata"]["name"] for p in mine["items"]] == ["pa"]
        assert a.get("/api/v1/pods").status_code == 403
        _ok(a.get(f"/api/v1/namespaces/{ns}/pods/pa"))
        assert a.get(f"/api/v1/namespaces/{ns}/pods/pb").status_code == 403
        _refused(a.patch(f"/api/v1/namespaces/{ns}/pods/pb", headers=merge, content=b'{"metadata":{"labels":{"x":"y"}}}'),
                 f'pods "pb" is forbidden: User "system:node:node-a" cannot patch resource "pods" in API group "" in the namespace "{ns}"')
        status = b'{"status":{"phase":"Running"}}'
        assert _ok(a.patch(f"/api/v1/namespaces/{ns}/pods/pa/status", headers=merge, content=status))["status"]["phase"] == "Running"
        _refused(a.patch(f"/api/v1/namespaces/{ns}/pods/pb/status", headers=merge, content=status),
                 'pods "pb" is forbidden: node "node-a" can only update pod status for pods with spec.nodeName set to itself')
        assert admin.get(f"/api/v1/namespaces/{ns}/pods/pb").json()["status"].get("phase") != "Running"
        _refused(a.delete(f"/api/v1/namespaces/{ns}/pods/pb"),
                 'pods "pb" is forbidden: node "node-a" can only delete pods with spec.nodeName set to itself')

        # No pods of its own making.
        body = pod("made", "node-a", ns=ns)
        del body["metadata"]["uid"]
        _refused(a.post(f"/api/v1/namespaces/{ns}/pods", json=body),
                 'pods "made" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, '
                 'node "node-a" can only create mirror pods')
        assert admin.get(f"/api/v1/namespaces/{ns}/pods/made").status_code == 404

        # Events: any the kubelet records.
        _ok(a.post(f"/api/v1/namespaces/{ns}/events", json={
            "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "pa", "namespace": ns},
            "reason": "Started", "message": "m", "type": "Normal"}), 201)
        assert a.get(f"/api/v1/namespaces/{ns}/configmaps").status_code == 403
        assert a.get("/apis/apps/v1/deployments").status_code == 403

        # The pod goes: so does the access to its secret.
        _ok(admin.delete(f"/api/v1/namespaces/{ns}/pods/pa", params={"gracePeriodSeconds": "0"}))
        wait_for(lambda: a.get(f"/api/v1/namespaces/{ns}/secrets/used").status_code == 403,
                 what="node-a to lose its secret")
    finally:
        admin.delete(f"/api/v1/namespaces/{ns}")
        for n in ("node-a", "node-b"):
            admin.delete(f"/api/v1/nodes/{n}")
        admin.delete(f"{LEASES}/node-a")


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a real kubelet and pod: needs root")
def test_a_kubelet_with_its_node_certificate_runs_a_pod_that_uses_a_secret_and_a_configmap(secure, tmp_path):
    """A real kubelet whose kubeconfig holds system:node:node-k's certificate registers
    its Node, renews its Lease, reads the Secret, ConfigMap and pull secret of its pod,
    runs it, reports its status and events, and deletes it when it is deleted: every call
    it makes passes Node, RBAC and NodeRestriction, and none is refused."""
    from cluster import pki
    from kubelet.runtime.linux.cgroups import Cgroup
    from kubelet.runtime.linux.runtime import LinuxRuntime
    from tests.procs import Component, default_service_account, free_port, wait_for
    from tests.test_kubelet_runtime import free_cidr

    admin, name = secure["admin"], "node-k"
    kubeconfig, token = tmp_path / "kubeconfig", tmp_path / "token"
    pki.write_kubeconfig(str(kubeconfig), secure["pki"], f"kubelets/{name}/kubelet-client",
                         cluster_name="t", server=secure["url"])
    token.write_text("unused")
    tag = uuid.uuid4().hex[:8]
    cidr, root, bridge, cgroup_parent = free_cidr(), str(tmp_path / "root"), f"mk8sn{tag}", f"minik8s-test-{tag}"
    kubelet = Component("kubelet", "--kubeconfig", str(kubeconfig), "--node-name", name, "--pod-cidr", cidr,
                        "--root-dir", root, "--address", "127.0.0.1", "--port", str(free_port()),
                        "--token-file", str(token), "--bridge", bridge, "--cgroup-parent", cgroup_parent,
                        "--healthz-port", str(free_port()), "--host-root-images",
                        "--lease-renew-interval", "1", "--node-status-update-frequency", "1")
    ns = "nk-" + uuid.uuid4().hex[:6]
    _ok(admin.post("/api/v1/namespaces", json={"metadata": {"name": ns}}), 201)
    default_service_account(admin, ns)
    try:
        kubelet.start()

        def ready():
            if not kubelet.alive():
                raise RuntimeError(f"kubelet exited: {kubelet.log()}")
            node = admin.get(f"/api/v1/nodes/{name}").json()
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (node.get("status") or {}).get("conditions") or [])
        wait_for(ready, what="the kubelet's Node to be Ready")
        wait_for(lambda: admin.get(f"{LEASES}/{name}").status_code == 200, what="the kubelet's Lease")

        _ok(admin.post(f"/api/v1/namespaces/{ns}/secrets", json={"metadata": {"name": "s"}, "stringData": {"k": "v"}}), 201)
        _ok(admin.post(f"/api/v1/namespaces/{ns}/secrets", json={
            "metadata": {"name": "pull"}, "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": '{"auths":{}}'}}), 201)
        _ok(admin.post(f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": "cm"}, "data": {"CM": "x"}}), 201)
        _ok(admin.post(f"/api/v1/namespaces/{ns}/pods", json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            # no token volume: this server signs no tokens, and no controller publishes
            # kube-root-ca.crt (test_kubelet_security runs pods with theirs)
            "spec": {"nodeName": name, "terminationGracePeriodSeconds": 1,
                     "automountServiceAccountToken": False,
                     "imagePullSecrets": [{"name": "pull"}],
                     "volumes": [{"name": "s", "secret": {"secretName": "s"}}],
                     "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "infinity"],
                                     "envFrom": [{"configMapRef": {"name": "cm"}}],
                                     "volumeMounts": [{"name": "s", "mountPath": "/etc/s"}]}]}}), 201)

        def running():
            p = admin.get(f"/api/v1/namespaces/{ns}/pods/p").json()
            states = [c.get("state") or {} for c in (p.get("status") or {}).get("containerStatuses") or []]
            return p["status"].get("phase") == "Running" and states and "running" in states[0]
        wait_for(running, what="the pod to run")

        # Running with its secret volume and configMap env is the proof that the node could
        # read them. A FailedMount before that is allowed: the kubelet may see the pod before
        # the authorizer's graph does (both follow watches), and retries, as upstream's does.
        def reasons() -> set[str]:  # events are posted in the background: poll for them
            return {e["reason"] for e in admin.get(f"/api/v1/namespaces/{ns}/events").json()["items"]}
        wait_for(lambda: {"Created", "Started"} <= reasons(), what="the Created and Started events")

        assert admin.delete(f"/api/v1/namespaces/{ns}/pods/p").status_code == 200
        wait_for(lambda: admin.get(f"/api/v1/namespaces/{ns}/pods/p").status_code == 404,
                 what="the kubelet to confirm the deletion")
        assert kubelet.alive()
        with open(kubelet.logfile.name, errors="replace") as f:
            log = f.read()
        assert "forbidden" not in log.lower(), log[-3000:]
    finally:
        kubelet.stop()
        rt = LinuxRuntime(root, pod_cidr=cidr, bridge=bridge, cgroup_parent=cgroup_parent)
        if os.path.isdir(rt.pods_dir):
            for uid in os.listdir(rt.pods_dir):
                rt.remove_pod(uid)
        rt.cleanup_orphans(keep=[])
        rt.network.delete_bridge()
        Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
        admin.delete(f"/api/v1/namespaces/{ns}")
        admin.delete(f"{LEASES}/{name}")
        admin.delete(f"/api/v1/nodes/{name}")
