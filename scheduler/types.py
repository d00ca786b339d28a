"""What the scheduler knows about one pod (`PodInfo`) and one node (`NodeInfo`).

Guarantees:
- `PodInfo.of(pod)` reads a pod dict once and keeps everything a cycle needs as plain
  ints and tuples: requests computed as Kubernetes does (resourcehelper.PodRequests:
  sum of containers and sidecars, max with each init container, plus overhead), the
  non-zero requests used by scoring (100m cpu / 200Mi memory for a container that names
  none), host ports, tolerations, images and the controlling owner. Quantity strings are
  parsed through a memo, so the thousandth replica costs no parsing at all.
- `NodeInfo` holds a node's non-numeric facts (labels, taints, conditions, images, the
  pods on it and their host ports). Its numbers (allocatable, requested) live in the
  cache's columns; `NodeInfo.allocatable` / `.requested` read them back.
- Pod and node dicts are the informer's objects: nothing here mutates them.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple

from machinery.quantity import bytes_value, cpu_millis

if TYPE_CHECKING:
    from scheduler.cache import Cache

CPU, MEMORY, EPHEMERAL_STORAGE, PODS = "cpu", "memory", "ephemeral-storage", "pods"
DEFAULT_MILLI_CPU_REQUEST = 100                 # schedutil.DefaultMilliCPURequest
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024      # schedutil.DefaultMemoryRequest
HOSTNAME_LABEL = "kubernetes.io/hostname"
ZONE_LABEL = "topology.kubernetes.io/zone"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE = "NoSchedule", "NoExecute", "PreferNoSchedule"


@lru_cache(maxsize=4096)
def _milli(q: str | int | float) -> int:
    return cpu_millis(q if isinstance(q, str) else str(q))


@lru_cache(maxsize=4096)
def _units(q: str | int | float) -> int:
    return bytes_value(q if isinstance(q, str) else str(q))


def quantity_value(name: str, q: Any) -> int:
    """A resource amount as the scheduler counts it: cpu in millis, the rest in units."""
    return _milli(q) if name == CPU else _units(q)


def resource_list(rl: Mapping[str, Any] | None) -> dict[str, int]:
    return {k: quantity_value(k, v) for k, v in (rl or {}).items()}


def _add(into: dict[str, int], rl: Mapping[str, int]) -> None:
    for k, v in rl.items():
        into[k] = into.get(k, 0) + v


def _max(into: dict[str, int], rl: Mapping[str, int]) -> None:
    for k, v in rl.items():
        if v > into.get(k, 0):
            into[k] = v


def _container_requests(c: Mapping, defaults: Mapping[str, int] | None) -> dict[str, int]:
    res = c.get("resources") or {}
    # The API server defaults missing requests from limits; do the same for objects that
    # reach us undefaulted, so a limits-only container is never counted as free.
    reqs = resource_list(res.get("limits"))
    reqs.update(resource_list(res.get("requests")))
    if defaults:
        for k, v in defaults.items():
            reqs.setdefault(k, v)  # "non-missing": an explicit 0 stays 0
    return reqs


def pod_requests(spec: Mapping, *, non_zero: bool = False) -> dict[str, int]:
    """resourcehelper.PodRequests: containers + sidecars, max'd with init containers, + overhead."""
    defaults = {CPU: DEFAULT_MILLI_CPU_REQUEST, MEMORY: DEFAULT_MEMORY_REQUEST} if non_zero else None
    reqs: dict[str, int] = {}
    for c in spec.get("containers") or ():
        _add(reqs, _container_requests(c, defaults))
    sidecars: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for c in spec.get("initContainers") or ():
        creqs = _container_requests(c, defaults)
        if c.get("restartPolicy") == "Always":
            # A sidecar runs alongside the app containers and every later init container.
            _add(reqs, creqs)
            _add(sidecars, creqs)
            use = dict(sidecars)
        else:
            use = dict(creqs)
            _add(use, sidecars)
        _max(init_max, use)
    _max(reqs, init_max)
    _add(reqs, resource_list(spec.get("overhead")))
    return reqs


class HostPort(NamedTuple):
    ip: str
    protocol: str
    port: int


def host_ports(spec: Mapping) -> tuple[HostPort, ...]:
    """Container ports with a hostPort (nodeports.getContainerPorts), sanitised as
    HostPortInfo does: empty IP is 0.0.0.0, empty protocol is TCP."""
    out = []
    for c in spec.get("containers") or ():
        for p in c.get("ports") or ():
            hp = p.get("hostPort") or 0
            if hp > 0:
                out.append(HostPort(p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", hp))
    return tuple(out)


def tolerates(toleration: Mapping, taint: Mapping) -> bool:
    """v1.Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return op == "Exists"


def tolerations_tolerate(tolerations: Iterable[Mapping], taint: Mapping) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def normalized_image_name(name: str) -> str:
    """imagelocality.normalizedImageName: a reference without a tag gets ':latest'."""
    if name.rfind(":") <= name.rfind("/"):
        name += ":latest"
    return name


class PodInfo:
    """A pod as one scheduling cycle needs it, computed once per pod object.

    `cache` is scratch space for plugins to keep per-pod precomputations (compiled
    selectors and the like) across retries of the same pod object, keyed by plugin name.
    """

    __slots__ = ("pod", "key", "namespace", "name", "uid", "node_name", "scheduler_name",
                 "priority", "cpu", "memory", "ephemeral", "scalars", "nz_cpu", "nz_memory",
                 "host_ports", "tolerations", "images", "owner_uid", "labels", "terminating",
                 "cache")

    def __init__(self, pod: Mapping):
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.namespace = meta.get("namespace") or "default"
        self.name = meta.get("name") or ""
        self.key = f"{self.namespace}/{self.name}"
        self.uid = meta.get("uid") or ""
        self.labels = meta.get("labels") or {}
        self.terminating = bool(meta.get("deletionTimestamp"))
        self.node_name = spec.get("nodeName") or ""
        self.scheduler_name = spec.get("schedulerName") or "default-scheduler"
        self.priority = int(spec.get("priority") or 0)
        reqs = pod_requests(spec)
        self.cpu = reqs.pop(CPU, 0)
        self.memory = reqs.pop(MEMORY, 0)
        self.ephemeral = reqs.pop(EPHEMERAL_STORAGE, 0)
        reqs.pop(PODS, None)
        self.scalars = {k: v for k, v in reqs.items() if v}
        nz = pod_requests(spec, non_zero=True)
        self.nz_cpu = nz.get(CPU, 0)
        self.nz_memory = nz.get(MEMORY, 0)
        self.host_ports = host_ports(spec)
        self.tolerations = tuple(spec.get("tolerations") or ())
        self.images = tuple(c.get("image") or "" for c in
                            [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())])
        self.owner_uid = next((o.get("uid") for o in meta.get("ownerReferences") or ()
                               if o.get("controller")), None)
        self.cache: dict[str, Any] = {}

    @classmethod
    def of(cls, pod: Mapping) -> PodInfo:
        return cls(pod)

    def with_node(self, node_name: str) -> PodInfo:
        """A copy bound to `node_name` (the assumed pod), sharing the parsed requests."""
        spec = dict(self.pod.get("spec") or {}, nodeName=node_name)
        clone = object.__new__(PodInfo)
        for s in PodInfo.__slots__:
            setattr(clone, s, getattr(self, s))
        clone.pod = dict(self.pod, spec=spec)
        clone.node_name = node_name
        return clone

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"


class Resources(NamedTuple):
    cpu: int            # millis
    memory: int         # bytes
    ephemeral: int      # bytes
    pods: int
    scalars: Mapping[str, int]


class NodeInfo:
    """One node's non-columnar facts, and its index into the cache's columns."""

    __slots__ = ("index", "name", "node", "labels", "taints", "unschedulable",
                 "ready", "images", "pods", "used_ports", "alloc_scalars", "req_scalars",
                 "_cache")

    def __init__(self, node: Mapping, index: int, cache: Cache):
        self.index = index
        self._cache = cache
        self.pods: dict[str, PodInfo] = {}
        self.used_ports: dict[HostPort, int] = {}
        self.req_scalars: dict[str, int] = {}
        self.set_node(node)

    def set_node(self, node: Mapping) -> None:
        meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
        self.node = node
        self.name = meta.get("name") or ""
        self.labels = meta.get("labels") or {}
        self.taints = tuple(spec.get("taints") or ())
        self.unschedulable = bool(spec.get("unschedulable"))
        self.ready = next((c.get("status") or "Unknown" for c in status.get("conditions") or ()
                           if c.get("type") == "Ready"), "")
        self.images = {name: im.get("sizeBytes") or 0
                       for im in status.get("images") or () for name in im.get("names") or ()}
        alloc = status.get("allocatable") or status.get("capacity") or {}
        self.alloc_scalars = {k: quantity_value(k, v) for k, v in alloc.items()
                              if k not in (CPU, MEMORY, EPHEMERAL_STORAGE, PODS)}

    @property
    def allocatable(self) -> Resources:
        c, i = self._cache, self.index
        return Resources(c.alloc_cpu[i], c.alloc_mem[i], c.alloc_eph[i], c.alloc_pods[i],
                         self.alloc_scalars)

    @property
    def requested(self) -> Resources:
        c, i = self._cache, self.index
        return Resources(c.req_cpu[i], c.req_mem[i], c.req_eph[i], c.pod_count[i], self.req_scalars)

    @property
    def non_zero_requested(self) -> tuple[int, int]:
        return self._cache.nz_cpu[self.index], self._cache.nz_mem[self.index]

    def __repr__(self) -> str:
        return f"NodeInfo({self.name})"


def node_allocatable(node: Mapping) -> tuple[int, int, int, int]:
    """(cpu millis, memory, ephemeral-storage, pods) from status.allocatable, falling back to
    capacity as the API server's defaulting does when allocatable is unset."""
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return (quantity_value(CPU, alloc.get(CPU, 0)), quantity_value(MEMORY, alloc.get(MEMORY, 0)),
            quantity_value(EPHEMERAL_STORAGE, alloc.get(EPHEMERAL_STORAGE, 0)),
            quantity_value(PODS, alloc.get(PODS, 0)))
