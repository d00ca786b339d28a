"""The Node authorizer (plugin/pkg/auth/authorizer/node): what a kubelet may read and write,
decided from a graph of the pods bound to each node and the objects they use.

What it guarantees
- It speaks only for nodes: a user named `system:node:<name>` in the group `system:nodes`
  (nodeidentifier's default). Anyone else gets NO_OPINION and an empty reason, so RBAC
  decides; a node user with an empty name gets NO_OPINION, "unknown node for user ...".
- Resources it subdivides, as Kubernetes 1.32 does (AuthorizeNodeWithSelectors on):
  - secrets and configmaps: get, list and watch of one named object (a list or watch
    names it with a `metadata.name` field selector, as the kubelet's reflectors do) that
    a pod bound to the node uses; a secret also when a PersistentVolume bound to a claim
    one of its pods uses names it;
  - persistentvolumeclaims: get of one its pods use, and update/patch of its status;
    persistentvolumes: get of one bound to such a claim;
  - serviceaccounts: `create` of the `token` subresource, and get, of one its pods run as
    (Kubernetes 1.32 grants only the token; newer releases also grant the get, behind a
    feature gate, to kubelets that read a pod's ServiceAccount for credential providers);
  - leases: get, create, update, patch, delete in `kube-node-lease`, of the lease named
    like the node (create by any name: NodeRestriction checks the name it carries);
  - nodes: get, list and watch of its own Node only; create, update and patch of any
    Node, and update/patch of `nodes/status` (NodeRestriction keeps it to its own);
  - pods: get of a pod bound to it, list and watch with `spec.nodeName=<node>` (or of
    one named pod bound to it); create and delete (NodeRestriction: only mirror pods of
    its own, and only its pods), `pods/status` update/patch and `pods/eviction` create
    (NodeRestriction: only of pods bound to it).
  Everything else is decided by the `system:node` role's rules of bootstrappolicy, which
  this authorizer holds (NewAuthorizer(graph, identifier, bootstrappolicy.NodeRules())):
  that ClusterRole is bound to nobody, so RBAC itself grants nodes nothing. A request no
  rule allows is NO_OPINION with Kubernetes' reason (`no relationship found between node
  'a' and this object`, `can only get individual resources of this type`, ...), never
  DENY, so a later authorizer may still allow it.
- `Graph` is the index behind a decision. Kubernetes keeps a graph (pod -> node, secret
  -> pod, ...) plus, per object, a count of the node-tagged edges that lead from it to
  each node (its destination edge index). Here only that index is kept, which is
  equivalent for every question asked: `(kind, namespace, name) -> {node: number of its
  pods that use it}`, pods by key, and PersistentVolumes by the claim they are bound to
  (plus the secrets they name). A decision is a few dict lookups, whatever the number of
  pods; `visited` counts the index entries decisions examined, which the tests use to show
  it. Mirror pods (annotation `kubernetes.io/config.mirror`) link only to their node:
  a node must not gain access to anything by creating a pod.
- `CacheFeed` (feed.py) keeps a graph current from the API server's watch cache (pods, and
  PersistentVolumes when the server serves them): a snapshot and a subscription taken in
  one step of the event loop, every change applied as the cache applies it, a new
  snapshot when a subscription is closed.

Concurrency: the graph is mutated only by its feed's tasks on the server's event loop and
read by decisions on the same loop, so a decision never sees a half-applied change.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator

from apiserver.auth.authorizer import NODES_GROUP, Attributes, Decision, UserInfo
from apiserver.auth.feed import CacheFeed
from apiserver.auth.rbac import compile_rules, rules_allow

log = logging.getLogger("minik8s.apiserver.node")

NODE_USER_PREFIX = "system:node:"
NODE_LEASE_NAMESPACE = "kube-node-lease"
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"

SECRETS, CONFIGMAPS, PVCS, PVS = "secrets", "configmaps", "persistentvolumeclaims", "persistentvolumes"
SERVICE_ACCOUNTS, RESOURCE_CLAIMS, PODS = "serviceaccounts", "resourceclaims", "pods"

Ref = tuple[str, str, str]  # (resource, namespace, name)


def node_identity(user: UserInfo) -> tuple[str, bool]:
    """(node name, is a node): nodeidentifier.NewDefaultNodeIdentifier's reading."""
    if not user.name.startswith(NODE_USER_PREFIX) or NODES_GROUP not in user.groups:
        return "", False
    return user.name[len(NODE_USER_PREFIX):], True


# --- what a pod uses (pkg/api/pod's VisitPodSecretNames and VisitPodConfigmapNames) --------

# Volume sources other than `secret` whose secret a kubelet reads (a `secretRef` beside
# the volume's own fields), and azureFile's `secretName`.
_SECRET_REF_VOLUMES = ("cephfs", "cinder", "flexVolume", "rbd", "scaleIO", "iscsi", "storageos")


def _containers(spec: dict) -> Iterator[dict]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                yield c


def _name(d: Any, key: str = "name") -> str:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, str) else ""


def pod_references(pod: dict) -> set[tuple[str, str]]:
    """(resource, name) of every object in the pod's namespace the pod uses: its
    ServiceAccount, the Secrets (image pull secrets, volumes, env), ConfigMaps, claims
    (persistentVolumeClaim and ephemeral volumes, whose claim is `<pod>-<volume>`) and
    resource claims. A mirror pod uses nothing (see the module docstring)."""
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if MIRROR_POD_ANNOTATION in (md.get("annotations") or {}):
        return set()
    out: set[tuple[str, str]] = set()
    add = out.add
    add((SERVICE_ACCOUNTS, _name(spec, "serviceAccountName")))
    for ref in spec.get("imagePullSecrets") or []:
        add((SECRETS, _name(ref)))
    for c in _containers(spec):
        for src in c.get("envFrom") or []:
            if isinstance(src, dict):
                add((SECRETS, _name(src.get("secretRef"))))
                add((CONFIGMAPS, _name(src.get("configMapRef"))))
        for env in c.get("env") or []:
            frm = env.get("valueFrom") if isinstance(env, dict) else None
            if isinstance(frm, dict):
                add((SECRETS, _name(frm.get("secretKeyRef"))))
                add((CONFIGMAPS, _name(frm.get("configMapKeyRef"))))
    for vol in spec.get("volumes") or []:
        if not isinstance(vol, dict):
            continue
        add((SECRETS, _name(vol.get("secret"), "secretName")))
        add((SECRETS, _name(vol.get("azureFile"), "secretName")))
        csi = vol.get("csi")
        if isinstance(csi, dict):
            add((SECRETS, _name(csi.get("nodePublishSecretRef"))))
        for kind in _SECRET_REF_VOLUMES:
            src = vol.get(kind)
            if isinstance(src, dict):
                add((SECRETS, _name(src.get("secretRef"))))
        add((CONFIGMAPS, _name(vol.get("configMap"))))
        projected = vol.get("projected")
        for src in (projected.get("sources") or []) if isinstance(projected, dict) else []:
            if isinstance(src, dict):
                add((SECRETS, _name(src.get("secret"))))
                add((CONFIGMAPS, _name(src.get("configMap"))))
        add((PVCS, _name(vol.get("persistentVolumeClaim"), "claimName")))
        if isinstance(vol.get("ephemeral"), dict) and _name(vol) and _name(md):
            add((PVCS, f"{md['name']}-{vol['name']}"))
    # A claim made from a template is named in the status (resourceclaim.Name).
    for claim in spec.get("resourceClaims") or []:
        add((RESOURCE_CLAIMS, _name(claim, "resourceClaimName")))
    for st in (pod.get("status") or {}).get("resourceClaimStatuses") or []:
        add((RESOURCE_CLAIMS, _name(st, "resourceClaimName")))
    return {r for r in out if r[1]}


def pv_secrets(pv: dict) -> set[tuple[str, str]]:
    """(namespace, name) of the Secrets a PersistentVolume names that kubelets read
    (pkg/api/v1/persistentvolume's VisitPVSecretNames, its kubelet-visible ones); a
    reference without a namespace is in the bound claim's namespace."""
    spec = pv.get("spec") or {}
    claim_ns = _name(spec.get("claimRef"), "namespace")
    out: set[tuple[str, str]] = set()
    refs: list[Any] = [(spec.get(k) or {}).get("secretRef") for k in _SECRET_REF_VOLUMES
                       if isinstance(spec.get(k), dict)]
    csi = spec.get("csi")
    if isinstance(csi, dict):
        refs += [csi.get(k) for k in ("nodePublishSecretRef", "nodeStageSecretRef",
                                      "nodeExpandSecretRef")]
    for ref in refs:
        if _name(ref):
            out.add((_name(ref, "namespace") or claim_ns, ref["name"]))
    azure = spec.get("azureFile")
    if isinstance(azure, dict) and _name(azure, "secretName"):
        out.add((_name(azure, "secretNamespace") or "default", azure["secretName"]))
    return {r for r in out if r[0]}


# --- the index ---------------------------------------------------------------------------

class Graph:
    """Which node may reach which object (see the module docstring)."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], tuple[str, frozenset[Ref]]] = {}
        # object -> {node: how many of that node's pods use it}
        self.users: dict[Ref, dict[str, int]] = {}
        self.pv_claims: dict[str, tuple[str, str]] = {}        # PV -> its bound claim
        self.pv_secrets: dict[str, frozenset[tuple[str, str]]] = {}
        self.secret_pvs: dict[tuple[str, str], set[str]] = {}  # secret -> PVs naming it
        self.visited = 0

    # -- changes --------------------------------------------------------------------

    def put_pod(self, pod: dict) -> None:
        md = pod.get("metadata") or {}
        key = (md.get("namespace") or "", md.get("name") or "")
        node = (pod.get("spec") or {}).get("nodeName") or ""
        if not node:  # not bound: it grants nothing (it may have been bound before)
            self.delete_pod(pod)
            return
        refs = frozenset((kind, key[0], name) for kind, name in pod_references(pod))
        if self.pods.get(key) == (node, refs):
            return  # a status write: nothing a decision reads changed
        self.delete_pod(pod)
        self.pods[key] = (node, refs)
        for ref in refs:
            counts = self.users.setdefault(ref, {})
            counts[node] = counts.get(node, 0) + 1

    def delete_pod(self, pod: dict) -> None:
        md = pod.get("metadata") or {}
        old = self.pods.pop((md.get("namespace") or "", md.get("name") or ""), None)
        if old is None:
            return
        node, refs = old
        for ref in refs:
            counts = self.users.get(ref)
            if counts is None:
                continue
            left = counts.get(node, 0) - 1
            if left > 0:
                counts[node] = left
            else:
                counts.pop(node, None)
                if not counts:
                    del self.users[ref]

    def put_pv(self, pv: dict) -> None:
        self.delete_pv(pv)
        name = (pv.get("metadata") or {}).get("name") or ""
        claim = (pv.get("spec") or {}).get("claimRef")
        if not name or not isinstance(claim, dict) or not _name(claim):
            return  # unbound: no node reaches it
        self.pv_claims[name] = (_name(claim, "namespace"), claim["name"])
        secrets = frozenset(pv_secrets(pv))
        self.pv_secrets[name] = secrets
        for s in secrets:
            self.secret_pvs.setdefault(s, set()).add(name)

    def delete_pv(self, pv: dict) -> None:
        name = (pv.get("metadata") or {}).get("name") or ""
        self.pv_claims.pop(name, None)
        for s in self.pv_secrets.pop(name, ()):
            found = self.secret_pvs.get(s)
            if found is not None:
                found.discard(name)
                if not found:
                    del self.secret_pvs[s]

    def replace(self, resource: str, objs: Iterable[dict]) -> None:
        """Make the graph's pods (or PVs) exactly `objs` (a fresh snapshot)."""
        if resource == PODS:
            self.pods.clear()
            self.users.clear()
            for obj in objs:
                self.put_pod(obj)
        else:
            self.pv_claims.clear()
            self.pv_secrets.clear()
            self.secret_pvs.clear()
            for obj in objs:
                self.put_pv(obj)

    def put(self, resource: str, obj: dict) -> None:
        (self.put_pod if resource == PODS else self.put_pv)(obj)

    def delete(self, resource: str, obj: dict) -> None:
        (self.delete_pod if resource == PODS else self.delete_pv)(obj)

    # -- reading --------------------------------------------------------------------

    def _used_by(self, ref: Ref, node: str) -> bool:
        self.visited += 1
        counts = self.users.get(ref)
        return counts is not None and node in counts

    def _pv_reaches(self, pv: str, node: str) -> bool:
        self.visited += 1
        claim = self.pv_claims.get(pv)
        return claim is not None and self._used_by((PVCS, *claim), node)

    def has_path(self, node: str, resource: str, namespace: str, name: str) -> bool:
        """Whether `node` may reach the object: the graph's hasPathFrom."""
        if resource == PODS:
            self.visited += 1
            found = self.pods.get((namespace, name))
            return found is not None and found[0] == node
        if resource == PVS:
            return self._pv_reaches(name, node)
        if self._used_by((resource, namespace, name), node):
            return True
        if resource == SECRETS:
            return any(self._pv_reaches(pv, node)
                       for pv in self.secret_pvs.get((namespace, name), ()))
        return False


# --- the authorizer ------------------------------------------------------------------------

def node_rules() -> list[dict]:
    """The `system:node` ClusterRole's rules (bootstrappolicy.NodeRules)."""
    from apiserver.auth.bootstrappolicy import cluster_roles
    return next(r["rules"] for r in cluster_roles() if r["metadata"]["name"] == "system:node")


NO_OPINION = Decision.NO_OPINION
ALLOW = (Decision.ALLOW, "")


class NodeAuthorizer:
    """--authorization-mode=Node. `source` is the Graph to decide from, or the API server
    (anything with a watch `cache`): then the authorizer keeps its own graph, which
    `feed` (a CacheFeed the server starts and stops) keeps current."""

    def __init__(self, source: Any = None, rules: list[dict] | None = None):
        self.feed: CacheFeed | None = None
        if isinstance(source, Graph) or source is None:
            self.graph = source if source is not None else Graph()
        else:
            self.graph = Graph()
            self.feed = CacheFeed(source.cache, self.graph, (PODS, PVS), "node authorizer")
        self.rules = compile_rules(node_rules() if rules is None else rules)

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        """As Kubernetes' RulesFor: a node's permissions cannot be listed (they depend on
        the graph), which reviews report as incomplete; others get nothing from here."""
        if node_identity(user)[1]:
            return [], ["node authorizer does not support user rule resolution"]
        return [], []

    def authorize(self, a: Attributes) -> tuple[Decision, str]:
        node, is_node = node_identity(a.user)
        if not is_node:
            return NO_OPINION, ""
        if not node:
            return NO_OPINION, f'unknown node for user "{a.user.name}"'
        if a.resource_request:
            group, resource = a.api_group, a.resource
            if group == "":
                if resource in (SECRETS, CONFIGMAPS):
                    return self._read_namespaced(node, a)
                if resource == PVCS:
                    if a.subresource == "status":
                        return self._status_update(node, a)
                    return self._get(node, a)
                if resource == PVS:
                    return self._get(node, a)
                if resource == SERVICE_ACCOUNTS:
                    return self._service_account(node, a)
                if resource == "nodes":
                    return self._node(node, a)
                if resource == PODS:
                    return self._pod(node, a)
            elif group == "coordination.k8s.io" and resource == "leases":
                return self._lease(node, a)
            elif group == "resource.k8s.io" and resource == RESOURCE_CLAIMS:
                return self._get(node, a)
        if rules_allow(a, self.rules):
            return ALLOW
        return NO_OPINION, ""

    # -- one method per kind of check, as node_authorizer.go has them --------------------

    def _path(self, node: str, a: Attributes) -> tuple[Decision, str]:
        if not a.name:
            return NO_OPINION, "No Object name found"
        if self.graph.has_path(node, a.resource, a.namespace, a.name):
            return ALLOW
        return NO_OPINION, f"no relationship found between node '{node}' and this object"

    def _read_namespaced(self, node: str, a: Attributes) -> tuple[Decision, str]:
        if a.verb not in ("get", "list", "watch"):
            return NO_OPINION, "can only read resources of this type"
        if a.subresource:
            return NO_OPINION, "cannot read subresource"
        if not a.namespace:
            return NO_OPINION, "can only read namespaced object of this type"
        return self._path(node, a)

    def _get(self, node: str, a: Attributes) -> tuple[Decision, str]:
        if a.verb != "get":
            return NO_OPINION, "can only get individual resources of this type"
        if a.subresource:
            return NO_OPINION, "cannot get subresource"
        return self._path(node, a)

    def _status_update(self, node: str, a: Attributes) -> tuple[Decision, str]:
        if a.verb not in ("update", "patch"):
            return NO_OPINION, "can only get/update/patch this type"
        return self._path(node, a)

    def _service_account(self, node: str, a: Attributes) -> tuple[Decision, str]:
        if a.verb == "get" and not a.subresource:
            return self._read_namespaced(node, a)
        if a.verb != "create" or not a.name:
            return NO_OPINION, "can only create tokens for individual service accounts"
        if a.subresource != "token":
            return NO_OPINION, "can only create token subresource of serviceaccount"
        return self._path(node, a)

    def _lease(self, node: str, a: Attributes) -> tuple[Decision, str]:
        if a.verb not in ("get", "create", "update", "patch", "delete"):
            return NO_OPINION, "can only get, create, update, patch, or delete a node lease"
        if a.namespace != NODE_LEASE_NAMESPACE:
            return NO_OPINION, f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace'
        # A create names no object: NodeRestriction checks the name the new lease carries.
        if a.verb != "create" and a.name != node:
            return NO_OPINION, "can only access node lease with the same name as the requesting node"
        return ALLOW

    def _node(self, node: str, a: Attributes) -> tuple[Decision, str]:
        if not a.subresource:
            if a.verb in ("create", "update", "patch"):
                return ALLOW  # NodeRestriction keeps a node to its own Node
            if a.verb in ("get", "list", "watch"):
                # By name, not through the graph: a kubelet reads its Node before creating it.
                if a.name == node:
                    return ALLOW
                if not a.name:
                    return NO_OPINION, f"node '{node}' cannot read all nodes, only its own Node object"
                return NO_OPINION, f"node '{node}' cannot read '{a.name}', only its own Node object"
        elif a.subresource == "status" and a.verb in ("update", "patch"):
            return ALLOW
        return NO_OPINION, ""

    def _pod(self, node: str, a: Attributes) -> tuple[Decision, str]:
        if not a.subresource:
            if a.verb == "get":
                return self._get(node, a)
            if a.verb in ("list", "watch"):
                for req in a.field_selector:
                    if req.field == "spec.nodeName" and req.op == "=" and req.value == node:
                        return ALLOW
                if a.name:
                    return self._path(node, a)
                return NO_OPINION, "can only list/watch pods with spec.nodeName field selector"
            if a.verb in ("create", "delete"):
                return ALLOW  # NodeRestriction: mirror pods of its own; only its pods
        elif a.subresource == "status" and a.verb in ("update", "patch"):
            return ALLOW  # NodeRestriction: only pods bound to it
        elif a.subresource == "eviction" and a.verb == "create":
            return ALLOW  # NodeRestriction: only pods bound to it
        return NO_OPINION, ""
