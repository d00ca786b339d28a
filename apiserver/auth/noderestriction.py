"""NodeRestriction admission (plugin/pkg/admission/noderestriction): what a kubelet may
write, checked on the object itself, after the Node authorizer allowed the verb.

What it guarantees, for a user the Node authorizer calls a node (`system:node:<name>` in
`system:nodes`; one with an empty name is refused everything), on create, update and
delete (other users, and other operations, pass untouched):
- nodes: only its own Node (by name); on create it may not set a label in the
  `node-restriction.kubernetes.io/` namespace, nor a `kubernetes.io`/`k8s.io` label the
  kubelet does not own (kubeletapis.IsKubeletLabel), nor `spec.configSource`; on update it
  may not change those labels, nor its taints, nor set a new `spec.configSource`.
- pods: create only of a mirror pod (annotation `kubernetes.io/config.mirror`) bound to
  itself, owned by its Node alone (controller, no blockOwnerDeletion, the Node's uid) and
  using no ServiceAccount, Secret, ConfigMap, ClusterTrustBundle or claim. minik8s runs
  no static pods, so its kubelets never create pods: every ordinary pod a node tries to
  create is refused, as Kubernetes refuses it. Delete only of pods bound to itself;
  `pods/status` updates only of pods bound to itself, without touching labels or resource
  claim statuses; `pods/eviction` only of pods bound to itself. Any other pod subresource
  is refused.
- persistentvolumeclaims: only `status` updates, changing nothing but
  status.capacity, status.conditions and the allocated-resource fields.
- serviceaccounts/token: only a TokenRequest bound to a pod (v1 Pod, name and uid) that
  exists with that uid and is bound to itself.
- leases: only in `kube-node-lease`, and only the lease named like the node.
A refusal is a 403 Status worded as admission.NewForbidden words it: `pods "x" is
forbidden: node "a" can only update pod status for pods with spec.nodeName set to itself`.
A pod the check needs that does not exist is a 404, as the plugin returns the lister's
NotFound.

Reads only the watch cache (the plugin's informers); no I/O, no locks: it runs on the
server's event loop.
"""
from __future__ import annotations

from typing import Any

from apiserver.auth.authorizer import Attributes, UserInfo, forbidden_error
from apiserver.auth.node import (MIRROR_POD_ANNOTATION, NODE_LEASE_NAMESPACE, PVCS,
                                 node_identity, pod_references)
from machinery import errors

NAME = "NodeRestriction"
NODE_RESTRICTION_LABEL_NAMESPACE = "node-restriction.kubernetes.io"

# k8s.io/kubelet/pkg/apis: the labels a kubelet may set on its own Node.
KUBELET_LABELS = frozenset((
    "kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
    "kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/arch"))
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")

_OPERATIONS = {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE", "delete": "DELETE",
               "deletecollection": "DELETE"}


def _label_namespace(key: str) -> str:
    prefix, slash, _ = key.partition("/")
    return prefix if slash else ""


def _in(namespace: str, domain: str) -> bool:
    return namespace == domain or namespace.endswith("." + domain)


def is_kubelet_label(key: str) -> bool:
    return key in KUBELET_LABELS or any(_in(_label_namespace(key), ns)
                                        for ns in KUBELET_LABEL_NAMESPACES)


def forbidden_labels(new: dict | None, old: dict | None) -> list[str]:
    """The labels added, removed or changed that a node may not touch, sorted."""
    new, old = new or {}, old or {}
    modified = {k for k in new.keys() | old.keys() if new.get(k) != old.get(k) or
                (k in new) != (k in old)}
    out = set()
    for key in modified:
        ns = _label_namespace(key)
        if _in(ns, NODE_RESTRICTION_LABEL_NAMESPACE):
            out.add(key)
        if (_in(ns, "kubernetes.io") or _in(ns, "k8s.io")) and not is_kubelet_label(key):
            out.add(key)
    return sorted(out)


def _md(obj: Any) -> dict:
    md = obj.get("metadata") if isinstance(obj, dict) else None
    return md if isinstance(md, dict) else {}


def _spec(obj: Any) -> dict:
    spec = obj.get("spec") if isinstance(obj, dict) else None
    return spec if isinstance(spec, dict) else {}


class NodeRestriction:
    """The admission plugin; `cache` is the server's WatchCache (pods and nodes are read
    from it, as the plugin reads its informers' listers)."""

    name = NAME

    def __init__(self, cache: Any):
        self.cache = cache

    def _get(self, plural: str, namespace: str, name: str) -> dict | None:
        from apiserver import registry  # the registry imports the strategies
        rt = registry.by_plural(plural)
        if rt is None:
            return None
        entry = self.cache.get(rt, rt.key(namespace, name))
        return entry.obj if entry is not None else None

    def _existing_pod(self, namespace: str, name: str) -> dict:
        pod = self._get("pods", namespace, name)
        if pod is None:
            raise errors.NotFound(f'pods "{name}" not found', kind="pods", name=name)
        return pod

    async def admit(self, user: UserInfo, attrs: Attributes, obj: Any, old: Any) -> None:
        node, is_node = node_identity(user)
        if not is_node:
            return
        op = _OPERATIONS.get(attrs.verb)
        if op is None or not attrs.resource_request:
            return
        name = attrs.name or _md(obj).get("name") or _md(obj).get("generateName") or "Unknown"

        def refuse(why: str) -> errors.Forbidden:
            return forbidden_error(attrs.resource, attrs.api_group, name, why)

        if not node:
            raise refuse(f'could not determine node from user "{user.name}"')
        group, resource, sub = attrs.api_group, attrs.resource, attrs.subresource
        if group == "" and resource == "pods":
            if sub == "":
                self._pod(node, op, attrs, obj, old, refuse)
            elif sub == "status":
                self._pod_status(node, op, obj, old, refuse)
            elif sub == "eviction":
                self._eviction(node, op, attrs, obj, refuse)
            else:
                raise refuse(f"unexpected pod subresource \"{sub}\", only 'status' and 'eviction' are allowed")
        elif group == "" and resource == "nodes":
            self._node(node, op, attrs, obj, old, refuse)
        elif group == "" and resource == PVCS:
            if sub != "status":
                raise refuse("may only update PVC status")
            self._pvc_status(node, op, obj, old, refuse)
        elif group == "" and resource == "serviceaccounts":
            if op == "CREATE" and sub == "token":
                self._token(node, attrs, obj, refuse)
        elif group == "coordination.k8s.io" and resource == "leases":
            if attrs.namespace != NODE_LEASE_NAMESPACE:
                raise refuse(f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace')
            lease = _md(obj).get("name") if op == "CREATE" else attrs.name
            if lease != node:
                raise refuse("can only access node lease with the same name as the requesting node")

    # -- pods ---------------------------------------------------------------------------

    def _pod(self, node: str, op: str, attrs: Attributes, pod: Any, old: Any, refuse: Any) -> None:
        if op == "DELETE":
            existing = old if isinstance(old, dict) else self._existing_pod(attrs.namespace, attrs.name)
            if _spec(existing).get("nodeName") != node:
                raise refuse(f'node "{node}" can only delete pods with spec.nodeName set to itself')
            return
        if op != "CREATE":
            raise refuse(f'unexpected operation "{op}", node "{node}" can only create and delete mirror pods')
        md, spec = _md(pod), _spec(pod)
        if MIRROR_POD_ANNOTATION not in (md.get("annotations") or {}):
            raise refuse(f'pod does not have "{MIRROR_POD_ANNOTATION}" annotation, node "{node}" '
                         "can only create mirror pods")
        if spec.get("nodeName") != node:
            raise refuse(f'node "{node}" can only create pods with spec.nodeName set to itself')
        owners = md.get("ownerReferences") or []
        if len(owners) > 1:
            raise refuse(f'node "{node}" can only create pods with a single owner reference set to itself')
        owner = owners[0] if owners and isinstance(owners[0], dict) else None
        if owner is None or (owner.get("apiVersion"), owner.get("kind"), owner.get("name")) != ("v1", "Node", node):
            raise refuse(f'node "{node}" can only create pods with an owner reference set to itself')
        if owner.get("controller") is not True:
            raise refuse(f'node "{node}" can only create pods with a controller owner reference set to itself')
        if owner.get("blockOwnerDeletion") is True:
            raise refuse(f'node "{node}" must not set blockOwnerDeletion on an owner reference')
        node_obj = self._get("nodes", "", node)
        if node_obj is None:
            raise errors.NotFound(f'nodes "{node}" not found', kind="nodes", name=node)
        if owner.get("uid") != _md(node_obj).get("uid"):
            raise refuse(f"node {node} UID mismatch: expected {owner.get('uid')} got {_md(node_obj).get('uid')}")
        if spec.get("serviceAccountName"):
            raise refuse(f'node "{node}" can not create pods that reference a service account')
        # The pod's references as the graph reads them, annotation aside.
        unmarked = {**pod, "metadata": {**md, "annotations": {}}}
        used = {kind for kind, _ in pod_references(unmarked)}
        for kind in ("secrets", "configmaps"):
            if kind in used:
                raise refuse(f'node "{node}" can not create pods that reference {kind}')
        for vol in spec.get("volumes") or []:
            sources = ((vol.get("projected") or {}).get("sources") or []) if isinstance(vol, dict) else []
            if any(isinstance(s, dict) and s.get("clusterTrustBundle") is not None for s in sources):
                raise refuse(f'node "{node}" can not create pods that reference clustertrustbundles')
        if any(isinstance(v, dict) and v.get("persistentVolumeClaim") is not None
               for v in spec.get("volumes") or []):
            raise refuse(f'node "{node}" can not create pods that reference persistentvolumeclaims')

    def _pod_status(self, node: str, op: str, pod: Any, old: Any, refuse: Any) -> None:
        if op != "UPDATE":
            raise refuse(f'unexpected operation "{op}"')
        if _spec(old).get("nodeName") != node:
            raise refuse(f'node "{node}" can only update pod status for pods with spec.nodeName set to itself')
        if (_md(old).get("labels") or {}) != (_md(pod).get("labels") or {}):
            raise refuse(f'node "{node}" cannot update labels through pod status')

        def claims(p: Any) -> list:
            st = p.get("status") if isinstance(p, dict) else None
            return [(c.get("name"), c.get("resourceClaimName"))
                    for c in ((st or {}).get("resourceClaimStatuses") or []) if isinstance(c, dict)]
        if claims(old) != claims(pod):
            raise refuse(f'node "{node}" cannot update resource claim statues')

    def _eviction(self, node: str, op: str, attrs: Attributes, eviction: Any, refuse: Any) -> None:
        if op != "CREATE":
            raise refuse(f"unexpected operation {op}")
        pod_name = attrs.name or _md(eviction).get("name") or ""
        if not pod_name:
            raise refuse("could not determine pod from request data")
        if _spec(self._existing_pod(attrs.namespace, pod_name)).get("nodeName") != node:
            raise refuse(f"node {node} can only evict pods with spec.nodeName set to itself")

    # -- nodes, claims, tokens ------------------------------------------------------------

    def _node(self, node: str, op: str, attrs: Attributes, obj: Any, old: Any, refuse: Any) -> None:
        requested = attrs.name or (_md(obj).get("name") if op == "CREATE" else "")
        if requested != node:
            raise refuse(f'node "{node}" is not allowed to modify node "{requested}"')
        spec = _spec(obj)
        if op == "CREATE":
            if spec.get("configSource") is not None:
                raise refuse(f'node "{node}" is not allowed to create pods with a non-nil configSource')
            bad = forbidden_labels(_md(obj).get("labels"), None)
            if bad:
                raise refuse(f'node "{node}" is not allowed to set the following labels: {", ".join(bad)}')
        elif op == "UPDATE":
            old_spec = _spec(old)
            if spec.get("configSource") is not None and spec.get("configSource") != old_spec.get("configSource"):
                raise refuse(f'node "{node}" is not allowed to update configSource to a new non-nil configSource')
            if (spec.get("taints") or []) != (old_spec.get("taints") or []):
                raise refuse(f'node "{node}" is not allowed to modify taints')
            bad = forbidden_labels(_md(obj).get("labels"), _md(old).get("labels"))
            if bad:
                raise refuse(f"is not allowed to modify labels: {', '.join(bad)}")

    def _pvc_status(self, node: str, op: str, pvc: Any, old: Any, refuse: Any) -> None:
        if op != "UPDATE":
            raise refuse(f'unexpected operation "{op}"')

        def comparable(obj: Any) -> dict:
            md = {k: v for k, v in _md(obj).items() if k not in ("resourceVersion", "managedFields")}
            status = {k: v for k, v in ((obj or {}).get("status") or {}).items()
                      if k not in ("capacity", "conditions", "allocatedResources",
                                   "allocatedResourceStatuses")}
            return {**(obj or {}), "metadata": md, "status": status}
        if comparable(pvc) != comparable(old):
            raise refuse(f'node "{node}" is not allowed to update fields other than '
                         "status.capacity and status.conditions")

    def _token(self, node: str, attrs: Attributes, request: Any, refuse: Any) -> None:
        ref = _spec(request).get("boundObjectRef")
        if (not isinstance(ref, dict) or ref.get("apiVersion") != "v1" or ref.get("kind") != "Pod"
                or not ref.get("name")):
            raise refuse("node requested token not bound to a pod")
        if not ref.get("uid"):
            raise refuse("node requested token with a pod binding without a uid")
        pod = self._existing_pod(attrs.namespace, ref["name"])
        if ref["uid"] != _md(pod).get("uid"):
            raise refuse(f"the UID in the bound object reference ({ref['uid']}) does not match the UID "
                         "in record. The object might have been deleted and then recreated")
        if _spec(pod).get("nodeName") != node:
            raise refuse("node requested token bound to a pod scheduled on a different node")
