"""The table of kinds the API server serves.

One row per resource: where it lives in the API (group, version, plural), how it is
named (kind, singular, short names, categories), whether it is namespaced, which
subresources it has, which fields a fieldSelector may use, and the columns of its
Table form. Everything else in the server is driven from this table; there is no
hand-written handler per kind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

Fields = Callable[[dict], dict[str, str]]


def _meta_fields(obj: dict) -> dict[str, str]:
    md = obj.get("metadata") or {}
    return {"metadata.name": md.get("name", ""), "metadata.namespace": md.get("namespace", "")}


def _pod_fields(obj: dict) -> dict[str, str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {**_meta_fields(obj), "spec.nodeName": spec.get("nodeName", ""),
            "spec.restartPolicy": spec.get("restartPolicy", ""),
            "spec.schedulerName": spec.get("schedulerName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "spec.hostNetwork": str(bool(spec.get("hostNetwork", False))).lower(),
            "status.phase": status.get("phase", ""), "status.podIP": status.get("podIP", ""),
            "status.nominatedNodeName": status.get("nominatedNodeName", "")}


def _event_fields(obj: dict) -> dict[str, str]:
    io = obj.get("involvedObject") or {}
    src = obj.get("source") or {}
    out = _meta_fields(obj)
    for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
        out[f"involvedObject.{k}"] = str(io.get(k, ""))
    out.update({"reason": obj.get("reason", ""), "type": obj.get("type", ""),
                "source": src.get("component", ""),
                "reportingComponent": obj.get("reportingComponent", "")})
    return out


def _node_fields(obj: dict) -> dict[str, str]:
    return {**_meta_fields(obj),
            "spec.unschedulable": str(bool((obj.get("spec") or {}).get("unschedulable"))).lower()}


def _namespace_fields(obj: dict) -> dict[str, str]:
    return {**_meta_fields(obj), "status.phase": (obj.get("status") or {}).get("phase", "")}


def _secret_fields(obj: dict) -> dict[str, str]:
    return {**_meta_fields(obj), "type": obj.get("type", "")}


def _rs_fields(obj: dict) -> dict[str, str]:
    return {**_meta_fields(obj), "status.replicas": str((obj.get("status") or {}).get("replicas", 0))}


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    fields: Fields = _meta_fields
    # Kinds whose metadata.generation tracks spec changes (observedGeneration pattern).
    has_generation: bool = False
    # Objects that carry a status which only the status subresource may change.
    status_subresource: bool = False
    # Metadata a status update leaves as it was (Kubernetes' status strategies): it takes
    # status and the labels, annotations, finalizers and owner references sent, not spec.
    status_keeps: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch",
                              "update", "watch")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """'deployments.apps' as Kubernetes names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"/registry/{self.plural}/{namespace}/{name}"
        return f"/registry/{self.plural}/{name}"

    def prefix(self, namespace: str = "") -> str:
        if self.namespaced and namespace:
            return f"/registry/{self.plural}/{namespace}/"
        return f"/registry/{self.plural}/"


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "Namespace", "namespaces", False, ("ns",),
                 subresources=("status", "finalize"), fields=_namespace_fields,
                 status_subresource=True),
    ResourceType("", "v1", "Pod", "pods", True, ("po",), ("all",),
                 subresources=("status", "binding", "log", "exec", "eviction"),
                 fields=_pod_fields, status_subresource=True, status_keeps=("ownerReferences",)),
    ResourceType("", "v1", "Node", "nodes", False, ("no",), subresources=("status",),
                 fields=_node_fields, status_subresource=True),
    ResourceType("", "v1", "Service", "services", True, ("svc",), ("all",),
                 subresources=("status",), status_subresource=True,
                 verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    ResourceType("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    ResourceType("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    ResourceType("", "v1", "Secret", "secrets", True, fields=_secret_fields),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    ResourceType("", "v1", "Event", "events", True, ("ev",), fields=_event_fields),
    ResourceType("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("all",),
                 subresources=("status", "scale"), has_generation=True,
                 status_subresource=True, status_keeps=("labels",)),
    ResourceType("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ("all",),
                 subresources=("status", "scale"), fields=_rs_fields, has_generation=True,
                 status_subresource=True),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", True),
)

_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {(r.group, r.kind): r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    group = api_version.rpartition("/")[0]
    return _BY_KIND.get((group, kind))


def by_plural(plural: str) -> ResourceType | None:
    for r in RESOURCES:
        if r.plural == plural:
            return r
    return None


def groups() -> dict[str, list[str]]:
    """group name -> served versions, core group as ''."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out
