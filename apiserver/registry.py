"""The table of kinds the API server serves.

One row per resource: the facts shared with the client (`machinery/kinds.py`: group,
version, plural, kind, singular, short names, categories, namespaced, subresources),
plus what only the server needs: which fields a fieldSelector may use, the columns of
its Table form, and how its objects are prepared, validated and deleted (its strategy).
Everything else in the server is driven from this table; there is no hand-written
handler per kind.

The table is dynamic (CustomResourceDefinitions add kinds while the server runs):
- `RESOURCES` holds the built-in rows and never changes; `register(rt)` adds a row (or
  replaces the one at the same group/version/plural), `unregister(rt)` removes it, and
  `served()` is every row, built-ins first, then registered ones in registration order.
  `lookup`, `by_kind`, `by_plural` and `groups` see both. Every part of the server that
  walks the table walks `served()` at the time it answers, or reacts to `on_change`
  listeners (called after each change, on the server's loop); `generation()` counts
  changes, for caches of documents built from the table.
- One kind may be served at several versions from one stored object: each served
  version is its own row, and they share a `storage_version` and a storage key prefix
  (`root`), which holds group and plural but never a version. A row's strategy
  `convert(obj, api_version)` turns an object of any served version into the one asked
  for; the resource layer converts what it stores to the version of the request on
  every output, and what it is sent to the storage version on every write.
- Built-in kinds are stored under `/registry/<plural>/` (as Kubernetes stores most of
  them); a row may name another root, as custom resources do: `/registry/<group>/<plural>/`.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from apiserver import tables
from apiserver.strategies.autoscaling import HorizontalPodAutoscalerStrategy
from apiserver.apiextensions.definition import CRDStrategy
from apiserver.strategies.apiregistration import APIServiceStrategy
from apiserver.flowcontrol.strategy import FlowSchemaStrategy, PriorityLevelConfigurationStrategy
from apiserver.strategies.apps import (
    ControllerRevisionStrategy, DaemonSetStrategy, ReplicationControllerStrategy)
from apiserver.strategies.batch import CronJobStrategy, JobStrategy
from apiserver.strategies import (CSRStrategy, NamespaceStrategy, NodeStrategy, PodStrategy, ServiceStrategy,
                                  Strategy)
from apiserver.strategies.policy import PodDisruptionBudgetStrategy
from apiserver.strategies.statefulset import StatefulSetStrategy
from apiserver.strategies.storage import (PersistentVolumeClaimStrategy, PersistentVolumeStrategy,
                                          StorageClassStrategy)
from machinery import kinds

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


def _job_fields(obj: dict) -> dict[str, str]:
    # JobToSelectableFields: a Job's successful pods are selectable (as a decimal string).
    return {**_meta_fields(obj), "status.successful": str((obj.get("status") or {}).get("succeeded", 0))}
def _csr_fields(obj: dict) -> dict[str, str]:
    return {**_meta_fields(obj), "spec.signerName": (obj.get("spec") or {}).get("signerName", "")}


def _pv_fields(obj: dict) -> dict[str, str]:
    # PersistentVolumeToSelectableFields
    return {**_meta_fields(obj), "name": (obj.get("metadata") or {}).get("name", "")}


def _pvc_fields(obj: dict) -> dict[str, str]:
    # PersistentVolumeClaimToSelectableFields
    return {**_meta_fields(obj), "name": (obj.get("metadata") or {}).get("name", "")}


@dataclass(frozen=True)
class ResourceType(kinds.Kind):
    """A shared kind (machinery/kinds.py) plus what only the server needs."""
    fields: Fields = _meta_fields
    # The columns of its Table form (`kubectl get`); none: NAME and AGE.
    columns: tuple[tables.Col, ...] = ()
    # How the kind's objects are created, updated and deleted (apiserver/strategies/).
    strategy: Strategy = field(default_factory=Strategy)
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch",
                              "update", "watch")
    extra: dict[str, Any] = field(default_factory=dict)
    # The version its objects are stored at (empty: its own `version`).
    storage_version: str = ""
    # The etcd key prefix of its objects, ending in "/" (empty: "/registry/<plural>/").
    storage_root: str = ""

    @property
    def root(self) -> str:
        return self.storage_root or f"/registry/{self.plural}/"

    @property
    def storage_api_version(self) -> str:
        v = self.storage_version or self.version
        return f"{self.group}/{v}" if self.group else v

    @property
    def converts(self) -> bool:
        """Whether its objects are stored at another version than it is served at."""
        return bool(self.storage_version) and self.storage_version != self.version

    def to_storage(self, obj: dict) -> dict:
        """`obj` (at this row's version) as it is stored."""
        return self.strategy.convert(obj, self.storage_api_version) if self.converts else obj

    def to_served(self, obj: dict) -> dict:
        """A stored object at this row's version."""
        if obj.get("apiVersion") == self.api_version:
            return obj
        return self.strategy.convert(obj, self.api_version)

    @property
    def status_subresource(self) -> bool:
        """Whether `.status` changes only through `/status`."""
        return self.strategy.status_subresource

    @property
    def group_resource(self) -> str:
        """'deployments.apps' as Kubernetes names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return self.extra.get("list_kind") or self.kind + "List"  # a CRD may name its own

    def key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"{self.root}{namespace}/{name}"
        return f"{self.root}{name}"

    def prefix(self, namespace: str = "") -> str:
        if self.namespaced and namespace:
            return f"{self.root}{namespace}/"
        return self.root


def _serve(kind: kinds.Kind, **server: Any) -> ResourceType:
    shared = {f.name: getattr(kind, f.name) for f in dataclasses.fields(kinds.Kind)}
    return ResourceType(**shared, **server)


RESOURCES: tuple[ResourceType, ...] = (
    _serve(kinds.NAMESPACES, fields=_namespace_fields, columns=tables.NAMESPACES,
           strategy=NamespaceStrategy()),
    _serve(kinds.PODS, fields=_pod_fields, columns=tables.PODS, strategy=PodStrategy()),
    _serve(kinds.NODES, fields=_node_fields, columns=tables.NODES, strategy=NodeStrategy()),
    _serve(kinds.SERVICES, columns=tables.SERVICES, strategy=ServiceStrategy(),
           verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _serve(kinds.ENDPOINTS, columns=tables.ENDPOINTS),
    _serve(kinds.CONFIGMAPS, columns=tables.CONFIGMAPS),
    _serve(kinds.SECRETS, fields=_secret_fields, columns=tables.SECRETS),
    _serve(kinds.SERVICEACCOUNTS, columns=tables.SERVICEACCOUNTS),
    _serve(kinds.EVENTS, fields=_event_fields, columns=tables.EVENTS),
    _serve(kinds.DEPLOYMENTS, columns=tables.DEPLOYMENTS,
           strategy=Strategy(generation=True, status_subresource=True, status_keeps=("labels",))),
    _serve(kinds.REPLICASETS, fields=_rs_fields, columns=tables.REPLICASETS,
           strategy=Strategy(generation=True, status_subresource=True)),
    _serve(kinds.LEASES, columns=tables.LEASES),
    # A change beyond metadata bumps the generation, which the EndpointSlice controller
    # reads to tell a stale cache (Kubernetes' endpointslice strategy).
    _serve(kinds.ENDPOINTSLICES, columns=tables.ENDPOINTSLICES, strategy=Strategy(generation=True)),
    _serve(kinds.ROLES, columns=tables.ROLES),
    _serve(kinds.CLUSTERROLES, columns=tables.ROLES),
    _serve(kinds.ROLEBINDINGS, columns=tables.ROLEBINDINGS),
    _serve(kinds.CLUSTERROLEBINDINGS, columns=tables.ROLEBINDINGS),
    _serve(kinds.CERTIFICATESIGNINGREQUESTS, fields=_csr_fields, columns=tables.CSRS,
           strategy=CSRStrategy()),
    # Create-only and never stored: answered by apiserver/auth/reviews.py.
    *(_serve(k, verbs=("create",), extra={"review": True}) for k in kinds.REVIEWS),
    _serve(kinds.JOBS, fields=_job_fields, columns=tables.JOBS, strategy=JobStrategy()),
    _serve(kinds.CRONJOBS, columns=tables.CRONJOBS, strategy=CronJobStrategy()),
    _serve(kinds.CONTROLLERREVISIONS, columns=tables.CONTROLLERREVISIONS,
           strategy=ControllerRevisionStrategy()),
    _serve(kinds.DAEMONSETS, columns=tables.DAEMONSETS, strategy=DaemonSetStrategy()),
    _serve(kinds.REPLICATIONCONTROLLERS, fields=_rs_fields, columns=tables.REPLICATIONCONTROLLERS,
           strategy=ReplicationControllerStrategy()),
    _serve(kinds.PODDISRUPTIONBUDGETS, columns=tables.PODDISRUPTIONBUDGETS,
           strategy=PodDisruptionBudgetStrategy()),
    _serve(kinds.STATEFULSETS, columns=tables.STATEFULSETS, strategy=StatefulSetStrategy()),
    _serve(kinds.PERSISTENTVOLUMES, fields=_pv_fields, columns=tables.PERSISTENTVOLUMES,
           strategy=PersistentVolumeStrategy()),
    _serve(kinds.PERSISTENTVOLUMECLAIMS, fields=_pvc_fields, columns=tables.PERSISTENTVOLUMECLAIMS,
           strategy=PersistentVolumeClaimStrategy()),
    _serve(kinds.STORAGECLASSES, columns=tables.STORAGECLASSES, strategy=StorageClassStrategy()),
    _serve(kinds.HORIZONTALPODAUTOSCALERS, columns=tables.HORIZONTALPODAUTOSCALERS,
           strategy=HorizontalPodAutoscalerStrategy(), storage_version="v2"),
    # autoscaling/v1 from the same stored object (what kubectl 1.32's `autoscale` sends).
    _serve(dataclasses.replace(kinds.HORIZONTALPODAUTOSCALERS, version="v1"),
           columns=tables.HORIZONTALPODAUTOSCALERS, strategy=HorizontalPodAutoscalerStrategy(),
           storage_version="v2"),
    _serve(kinds.CUSTOMRESOURCEDEFINITIONS, columns=tables.CRDS, strategy=CRDStrategy(),
           storage_root="/registry/apiextensions.k8s.io/customresourcedefinitions/"),
    _serve(kinds.APISERVICES, columns=tables.APISERVICES, strategy=APIServiceStrategy()),
    _serve(kinds.FLOWSCHEMAS, columns=tables.FLOWSCHEMAS, strategy=FlowSchemaStrategy()),
    _serve(kinds.PRIORITYLEVELCONFIGURATIONS, columns=tables.PRIORITYLEVELCONFIGURATIONS,
           strategy=PriorityLevelConfigurationStrategy()),
)
assert {r.plural for r in RESOURCES} == {k.plural for k in kinds.KINDS}, "serve every shared kind"

_REGISTERED: dict[tuple[str, str, str], ResourceType] = {}
_SERVED: tuple[ResourceType, ...] = RESOURCES
_BY_PATH: dict[tuple[str, str, str], ResourceType] = {}
_BY_KIND: dict[tuple[str, str], ResourceType] = {}
_BY_VERSION_KIND: dict[tuple[str, str], ResourceType] = {}
_LISTENERS: list[Callable[[], None]] = []
_GENERATION = 0


def _index() -> None:
    global _SERVED
    _SERVED = RESOURCES + tuple(_REGISTERED.values())
    _BY_PATH.clear()
    _BY_KIND.clear()
    _BY_VERSION_KIND.clear()
    for r in _SERVED:
        _BY_PATH.setdefault((r.group, r.version, r.plural), r)
        _BY_VERSION_KIND.setdefault((r.api_version, r.kind), r)
        # Without a version, a kind is its stored version's row (else its first).
        if not r.converts or (r.group, r.kind) not in _BY_KIND:
            _BY_KIND[(r.group, r.kind)] = r


_index()


def served() -> tuple[ResourceType, ...]:
    """Every row served now: the built-ins, then the registered ones."""
    return _SERVED


def generation() -> int:
    """How many times the table has changed (0: built-ins only)."""
    return _GENERATION


def register(rt: ResourceType) -> None:
    """Serve `rt`, replacing a registered row at the same group, version and plural.
    A built-in row cannot be replaced (ValueError)."""
    key = (rt.group, rt.version, rt.plural)
    if any((r.group, r.version, r.plural) == key for r in RESOURCES):
        raise ValueError(f"{rt.plural}.{rt.group}/{rt.version} is a built-in resource")
    if _REGISTERED.get(key) is rt:
        return
    _REGISTERED[key] = rt
    _changed()


def unregister(rt: ResourceType) -> None:
    """Stop serving `rt` (its group/version/plural); nothing if it is not registered."""
    if _REGISTERED.pop((rt.group, rt.version, rt.plural), None) is not None:
        _changed()


def on_change(listener: Callable[[], None]) -> Callable[[], None]:
    """Call `listener()` after every change of the table; returns a function that stops it."""
    _LISTENERS.append(listener)
    return lambda: _LISTENERS.remove(listener) if listener in _LISTENERS else None


def _changed() -> None:
    global _GENERATION
    _GENERATION += 1
    _index()
    for listener in tuple(_LISTENERS):
        listener()


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    """The row of `kind` at `api_version`, else (a version not served) of its group."""
    found = _BY_VERSION_KIND.get((api_version, kind))
    if found is not None:
        return found
    group = api_version.rpartition("/")[0]
    return _BY_KIND.get((group, kind))


def by_plural(plural: str, group: str | None = None) -> ResourceType | None:
    """The first row of `plural` (in `group` if given)."""
    for r in _SERVED:
        if r.plural == plural and (group is None or r.group == group):
            return r
    return None


_KUBE_VERSION = re.compile(r"v(\d+)(?:(alpha|beta)(\d+))?")


def version_priority(name: str) -> tuple:
    """Sort key of Kubernetes' version priority: GA, then beta, then alpha (higher numbers
    first), then any other name alphabetically."""
    m = _KUBE_VERSION.fullmatch(name)
    if m is None:
        return (3, 0, 0, name)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    return ({None: 0, "beta": 1, "alpha": 2}[stage], -major, -minor, name)


def groups() -> dict[str, list[str]]:
    """group name -> served versions, core group as ''. A built-in group's come in table
    order; a group with registered versions (custom resources) in Kubernetes' version
    priority, so its first is the preferred version whichever CRD added it."""
    out: dict[str, list[str]] = {}
    for r in _SERVED:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    for group in {r.group for r in _REGISTERED.values()}:
        out[group].sort(key=version_priority)
    return out
