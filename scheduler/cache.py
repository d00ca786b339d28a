"""The scheduler's node cache: nodes, the pods bound or assumed on them, in columns.

Guarantees:
- Every node has an index `i` into flat per-node lists (`alloc_cpu[i]`, `req_mem[i]`,
  `free_pods[i]`, ...), so Filter and Score plugins evaluate hundreds of nodes with one
  list comprehension instead of walking objects. cpu is in millis, memory and
  ephemeral-storage in bytes. `nodes[i]` is the `NodeInfo` for everything non-numeric.
  Removing a node moves the last node into its slot: an index is valid only until the
  next node add/remove, which bumps `generation`.
- `requested` counts every pod the cache holds on the node, bound or assumed; `nz_*`
  count them with the scoring defaults (100m / 200Mi for a container with no request).
- Assume / confirm / forget (kube-scheduler's cache): `assume_pod` counts a pod on its
  node at once, before the binding is written; `add_pod` of the same pod from the watch
  confirms it (moving it if it landed elsewhere); `forget_pod` undoes an assumption when
  binding failed. An assumed pod never expires by itself (kube-scheduler's default TTL 0).
- Pods whose node is not (yet, or any more) in the cache are kept and counted as soon
  as the node appears. Pods in phase Succeeded or Failed hold no resources and are dropped.
- `generation` bumps whenever something a filter may have indexed changes: a node is
  added or removed, or its labels, taints, unschedulable flag or Ready condition change.
  `memo(key, fn)` keeps a computed value until the generation moves on; plugins use it
  for "which nodes does this selector match" and the like. Resource changes (pods coming
  and going) do not bump it: plugins read those from the columns every cycle.
- One scheduling cycle runs start to end without yielding to the event loop, so the
  cache itself serves as that cycle's snapshot (`snapshot()` returns it); nothing here is
  thread-safe, and all calls come from the event-loop thread.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping

from scheduler.types import NodeInfo, PodInfo, node_allocatable

_COLUMNS = ("alloc_cpu", "alloc_mem", "alloc_eph", "alloc_pods", "req_cpu", "req_mem",
            "req_eph", "pod_count", "nz_cpu", "nz_mem", "free_cpu", "free_mem", "free_eph",
            "free_pods")

# Node update kinds, as kube-scheduler's ActionTypes name them.
ALLOCATABLE, LABEL, TAINT, CONDITION = "Allocatable", "Label", "Taint", "Condition"


class CacheError(Exception):
    """An assume/forget call that contradicts what the cache holds (a caller bug)."""


class _PodEntry:
    __slots__ = ("info", "node", "assumed")

    def __init__(self, info: PodInfo, node: str, assumed: bool):
        self.info, self.node, self.assumed = info, node, assumed


class Cache:
    def __init__(self) -> None:
        self.nodes: list[NodeInfo] = []
        self._by_name: dict[str, NodeInfo] = {}
        for c in _COLUMNS:
            setattr(self, c, [])
        self.alloc_cpu: list[int]
        self.alloc_mem: list[int]
        self.alloc_eph: list[int]
        self.alloc_pods: list[int]
        self.req_cpu: list[int]
        self.req_mem: list[int]
        self.req_eph: list[int]
        self.pod_count: list[int]
        self.nz_cpu: list[int]
        self.nz_mem: list[int]
        self.free_cpu: list[int]
        self.free_mem: list[int]
        self.free_eph: list[int]
        self.free_pods: list[int]
        self._pods: dict[str, _PodEntry] = {}
        self._pods_on: dict[str, dict[str, PodInfo]] = {}
        # owner uid -> node name -> number of non-terminating pods of that owner there.
        self.owner_counts: dict[str, dict[str, int]] = {}
        # image name -> number of nodes reporting it (ImageLocality's spread factor).
        self.image_nodes: dict[str, int] = {}
        self.generation = 0
        self._memo: dict[Hashable, Any] = {}
        self._memo_generation = 0

    # --- reading -------------------------------------------------------------------------

    def snapshot(self) -> Cache:
        """The view one scheduling cycle reads (see the module docstring)."""
        return self

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, name: str) -> NodeInfo | None:
        return self._by_name.get(name)

    def pod(self, key: str) -> PodInfo | None:
        e = self._pods.get(key)
        return e.info if e else None

    def node_of(self, key: str) -> str | None:
        e = self._pods.get(key)
        return e.node if e else None

    def is_assumed(self, key: str) -> bool:
        e = self._pods.get(key)
        return bool(e and e.assumed)

    def pod_count_total(self) -> int:
        return len(self._pods)

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if self._memo_generation != self.generation:
            self._memo.clear()
            self._memo_generation = self.generation
        try:
            return self._memo[key]
        except KeyError:
            v = self._memo[key] = compute()
            return v

    # --- nodes ---------------------------------------------------------------------------

    def add_node(self, node: Mapping) -> frozenset[str]:
        """Add a node, or update it if known. Returns the update kinds (see update_node)."""
        name = (node.get("metadata") or {}).get("name") or ""
        if name in self._by_name:
            return self.update_node(node)
        info = NodeInfo(node, len(self.nodes), self)
        self.nodes.append(info)
        self._by_name[name] = info
        ac, am, ae, ap = node_allocatable(node)
        for col, v in zip(_COLUMNS, (ac, am, ae, ap, 0, 0, 0, 0, 0, 0, ac, am, ae, ap)):
            getattr(self, col).append(v)
        self._count_images(info, +1)
        for pi in self._pods_on.get(name, {}).values():
            self._account(info, pi, +1)
        self.generation += 1
        return frozenset((ALLOCATABLE, LABEL, TAINT, CONDITION))

    def update_node(self, node: Mapping) -> frozenset[str]:
        """Update a node; returns which scheduling-relevant properties changed (empty for,
        e.g., a heartbeat), so the caller only wakes unschedulable pods when it matters."""
        name = (node.get("metadata") or {}).get("name") or ""
        info = self._by_name.get(name)
        if info is None:
            return self.add_node(node)
        old = (info.labels, info.taints, info.unschedulable, info.ready)
        i = info.index
        old_alloc = (self.alloc_cpu[i], self.alloc_mem[i], self.alloc_eph[i], self.alloc_pods[i],
                     info.alloc_scalars)
        self._count_images(info, -1)
        info.set_node(node)
        self._count_images(info, +1)
        new_alloc = node_allocatable(node)
        changes = set()
        if old_alloc != (*new_alloc, info.alloc_scalars):
            changes.add(ALLOCATABLE)
            for col, req, v in zip(("alloc_cpu", "alloc_mem", "alloc_eph", "alloc_pods"),
                                   ("req_cpu", "req_mem", "req_eph", "pod_count"), new_alloc):
                getattr(self, col)[i] = v
                getattr(self, "free" + col[5:])[i] = v - getattr(self, req)[i]
        if old[0] != info.labels:
            changes.add(LABEL)
        if old[1] != info.taints or old[2] != info.unschedulable:
            changes.add(TAINT)
        if old[3] != info.ready:
            changes.add(CONDITION)
        if changes - {ALLOCATABLE}:
            self.generation += 1
        return frozenset(changes)

    def remove_node(self, name: str) -> None:
        info = self._by_name.pop(name, None)
        if info is None:
            return
        self._count_images(info, -1)
        i, last = info.index, len(self.nodes) - 1
        moved = self.nodes[last]
        self.nodes[i] = moved
        moved.index = i
        self.nodes.pop()
        for c in _COLUMNS:
            col = getattr(self, c)
            col[i] = col[last]
            col.pop()
        self.generation += 1

    def _count_images(self, info: NodeInfo, sign: int) -> None:
        for name in info.images:
            n = self.image_nodes.get(name, 0) + sign
            if n > 0:
                self.image_nodes[name] = n
            else:
                self.image_nodes.pop(name, None)

    # --- pods ----------------------------------------------------------------------------

    def add_pod(self, pod: Mapping | PodInfo) -> None:
        """A pod bound to a node, as the watch reports it. Confirms an assumed pod."""
        pi = pod if isinstance(pod, PodInfo) else PodInfo(pod)
        phase = (pi.pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            self.remove_pod(pi)
            return
        if not pi.node_name:
            return
        e = self._pods.get(pi.key)
        if e is not None:
            self._detach(e.info, e.node)
        self._pods[pi.key] = _PodEntry(pi, pi.node_name, False)
        self._attach(pi, pi.node_name)

    update_pod = add_pod

    def remove_pod(self, pod: Mapping | PodInfo | str) -> None:
        if isinstance(pod, str):
            key = pod
        elif isinstance(pod, PodInfo):
            key = pod.key
        else:
            meta = pod.get("metadata") or {}
            key = f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}"
        e = self._pods.pop(key, None)
        if e is not None:
            self._detach(e.info, e.node)

    def assume_pod(self, pi: PodInfo) -> None:
        """Count `pi` (whose node_name is set) on its node before the binding is written."""
        if not pi.node_name:
            raise CacheError(f"pod {pi.key} has no node to be assumed on")
        if pi.key in self._pods:
            raise CacheError(f"pod {pi.key} is in the cache, so can't be assumed")
        self._pods[pi.key] = _PodEntry(pi, pi.node_name, True)
        self._attach(pi, pi.node_name)

    def forget_pod(self, pi: PodInfo) -> None:
        """Undo `assume_pod` after a failed binding."""
        e = self._pods.get(pi.key)
        if e is None:
            return
        if not e.assumed:
            raise CacheError(f"pod {pi.key} was not assumed, so can't be forgotten")
        if pi.node_name and e.node != pi.node_name:
            raise CacheError(f"pod {pi.key} was assumed on {e.node} but forgotten on {pi.node_name}")
        del self._pods[pi.key]
        self._detach(e.info, e.node)

    def _attach(self, pi: PodInfo, node: str) -> None:
        self._pods_on.setdefault(node, {})[pi.key] = pi
        if pi.owner_uid and not pi.terminating:
            per_node = self.owner_counts.setdefault(pi.owner_uid, {})
            per_node[node] = per_node.get(node, 0) + 1
        info = self._by_name.get(node)
        if info is not None:
            self._account(info, pi, +1)

    def _detach(self, pi: PodInfo, node: str) -> None:
        on = self._pods_on.get(node)
        if on is not None:
            on.pop(pi.key, None)
            if not on:
                del self._pods_on[node]
        if pi.owner_uid and not pi.terminating:
            per_node = self.owner_counts.get(pi.owner_uid, {})
            n = per_node.get(node, 0) - 1
            if n > 0:
                per_node[node] = n
            else:
                per_node.pop(node, None)
                if not per_node:
                    self.owner_counts.pop(pi.owner_uid, None)
        info = self._by_name.get(node)
        if info is not None:
            self._account(info, pi, -1)

    def _account(self, info: NodeInfo, pi: PodInfo, sign: int) -> None:
        i = info.index
        if sign > 0:
            info.pods[pi.key] = pi
        else:
            info.pods.pop(pi.key, None)
        self.req_cpu[i] += sign * pi.cpu
        self.free_cpu[i] -= sign * pi.cpu
        self.req_mem[i] += sign * pi.memory
        self.free_mem[i] -= sign * pi.memory
        self.req_eph[i] += sign * pi.ephemeral
        self.free_eph[i] -= sign * pi.ephemeral
        self.pod_count[i] += sign
        self.free_pods[i] -= sign
        self.nz_cpu[i] += sign * pi.nz_cpu
        self.nz_mem[i] += sign * pi.nz_memory
        for k, v in pi.scalars.items():
            info.req_scalars[k] = info.req_scalars.get(k, 0) + sign * v
        for hp in pi.host_ports:
            n = info.used_ports.get(hp, 0) + sign
            if n > 0:
                info.used_ports[hp] = n
            else:
                info.used_ports.pop(hp, None)
