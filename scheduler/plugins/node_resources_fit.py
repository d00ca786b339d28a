"""NodeResourcesFit: the pod's requests must fit in what the node has left (filter), and
nodes are scored by how allocated they would be (LeastAllocated or MostAllocated).

Filter (noderesources.fitsRequest): the pod count first ("Too many pods"), then cpu,
memory, ephemeral-storage and extended resources; every insufficient resource is
reported, and the status is UnschedulableAndUnresolvable when some request exceeds the
node's whole allocatable (no eviction could make room), Unschedulable otherwise.

Score: per configured resource (default cpu and memory, weight 1 each),
  LeastAllocated  (allocatable - requested) * 100 / allocatable
  MostAllocated   requested * 100 / allocatable
where `requested` includes the incoming pod and counts cpu/memory with the non-zero
defaults; the node score is the weighted mean over resources the node has, in integer
arithmetic as kube-scheduler does.
"""
from __future__ import annotations

from operator import itemgetter
from typing import NamedTuple, Sequence

from scheduler.framework import (ASSIGNED_POD, NODE, ActionType, ClusterEvent, Code, CycleState, Status,
                                 plugin_args)
from scheduler.types import CPU, EPHEMERAL_STORAGE, MEMORY, NodeInfo, PodInfo

NAME = "NodeResourcesFit"
LEAST_ALLOCATED, MOST_ALLOCATED = "LeastAllocated", "MostAllocated"
DEFAULT_RESOURCES = ((CPU, 1), (MEMORY, 1))


class Insufficient(NamedTuple):
    resource: str
    reason: str
    requested: int
    used: int
    capacity: int
    unresolvable: bool = False


def fits(pod: PodInfo, node: NodeInfo, ignored: frozenset[str] = frozenset()) -> list[Insufficient]:
    """Every resource the node lacks for the pod (empty when it fits)."""
    alloc, used = node.allocatable, node.requested
    out = []
    if used.pods + 1 > alloc.pods:
        out.append(Insufficient("pods", "Too many pods", 1, used.pods, alloc.pods))
    for name, want, have, taken in ((CPU, pod.cpu, alloc.cpu, used.cpu),
                                    (MEMORY, pod.memory, alloc.memory, used.memory),
                                    (EPHEMERAL_STORAGE, pod.ephemeral, alloc.ephemeral,
                                     used.ephemeral)):
        if want > 0 and want > have - taken:
            out.append(Insufficient(name, f"Insufficient {name}", want, taken, have, want > have))
    for name, want in pod.scalars.items():
        if name in ignored:
            continue
        have, taken = alloc.scalars.get(name, 0), used.scalars.get(name, 0)
        if want > have - taken:
            out.append(Insufficient(name, f"Insufficient {name}", want, taken, have, want > have))
    return out


def pod_resource_request(pod: PodInfo, resource: str, *, use_requested: bool) -> int:
    if resource == CPU:
        return pod.cpu if use_requested else pod.nz_cpu
    if resource == MEMORY:
        return pod.memory if use_requested else pod.nz_memory
    if resource == EPHEMERAL_STORAGE:
        return pod.ephemeral
    return pod.scalars.get(resource, 0)


def allocatable_and_requested(node: NodeInfo, pod: PodInfo, resource: str, *,
                              use_requested: bool) -> tuple[int, int]:
    """resourceAllocationScorer.calculateResourceAllocatableRequest."""
    want = pod_resource_request(pod, resource, use_requested=use_requested)
    alloc, used = node.allocatable, node.requested
    if resource == CPU:
        base = used.cpu if use_requested else node.non_zero_requested[0]
        return alloc.cpu, base + want
    if resource == MEMORY:
        base = used.memory if use_requested else node.non_zero_requested[1]
        return alloc.memory, base + want
    if resource == EPHEMERAL_STORAGE:
        return alloc.ephemeral, used.ephemeral + want
    if want == 0:
        return 0, 0  # an extended resource the pod does not ask for is not scored
    return alloc.scalars.get(resource, 0), used.scalars.get(resource, 0) + want


def least_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * 100 // capacity


def most_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0:
        return 0
    return min(requested, capacity) * 100 // capacity


class NodeResourcesFit:
    NAME = NAME
    EVENTS = (ClusterEvent(ASSIGNED_POD, ActionType.DELETE | ActionType.UPDATE_POD),
              ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_ALLOCATABLE))

    def __init__(self, *, strategy: str = LEAST_ALLOCATED,
                 resources: Sequence[tuple[str, int]] = DEFAULT_RESOURCES,
                 ignored_resources: Sequence[str] = ()):
        if strategy not in (LEAST_ALLOCATED, MOST_ALLOCATED):
            raise ValueError(f"scoring strategy {strategy!r} is not supported "
                             f"(use {LEAST_ALLOCATED} or {MOST_ALLOCATED})")
        self.strategy = strategy
        self.resources = tuple(resources)
        self.ignored = frozenset(ignored_resources)
        self._resource_score = least_requested_score if strategy == LEAST_ALLOCATED else most_requested_score

    # --- filter ---------------------------------------------------------------------------

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        missing = fits(pod, node, self.ignored)
        if not missing:
            return None
        code = (Code.UNSCHEDULABLE_AND_UNRESOLVABLE if any(m.unresolvable for m in missing)
                else Code.UNSCHEDULABLE)
        return Status(code, *(m.reason for m in missing))

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        s = state.snapshot
        fp, fc, fm, fe = s.free_pods, s.free_cpu, s.free_mem, s.free_eph
        c, m, e = pod.cpu, pod.memory, pod.ephemeral
        if c and m and not e:  # the common case, spelled out for speed
            kept = [j for j in nodes if fp[j] > 0 and fc[j] >= c and fm[j] >= m]
        else:
            kept = [j for j in nodes if fp[j] > 0 and (not c or fc[j] >= c)
                    and (not m or fm[j] >= m) and (not e or fe[j] >= e)]
        if pod.scalars and set(pod.scalars) - self.ignored:
            infos = s.nodes
            kept = [j for j in kept if not fits(pod, infos[j], self.ignored)]
        return kept

    # --- score ----------------------------------------------------------------------------

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        total = weights = 0
        for name, weight in self.resources:
            alloc, req = allocatable_and_requested(node, pod, name, use_requested=False)
            if alloc == 0:
                continue
            total += self._resource_score(req, alloc) * weight
            weights += weight
        return total // weights if weights else 0

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        if not nodes:
            return []
        if {r for r, _ in self.resources} != {CPU, MEMORY} or len(self.resources) != 2:
            infos = state.snapshot.nodes
            return [self.score(state, pod, infos[j]) for j in nodes]
        s = state.snapshot
        get = itemgetter(*nodes) if len(nodes) > 1 else (lambda col: (col[nodes[0]],))
        ac, am = get(s.alloc_cpu), get(s.alloc_mem)
        if 0 in ac or 0 in am:  # a node without cpu or memory: weights differ per node
            return [self.score(state, pod, s.nodes[j]) for j in nodes]
        wc, wm = dict(self.resources)[CPU], dict(self.resources)[MEMORY]
        pc, pm = pod.nz_cpu, pod.nz_memory
        rc, rm = [r + pc for r in get(s.nz_cpu)], [r + pm for r in get(s.nz_mem)]
        if self.strategy == LEAST_ALLOCATED:
            sc = [(a - r) * 100 // a if r <= a else 0 for a, r in zip(ac, rc)]
            sm = [(a - r) * 100 // a if r <= a else 0 for a, r in zip(am, rm)]
        else:
            sc = [min(r, a) * 100 // a for a, r in zip(ac, rc)]
            sm = [min(r, a) * 100 // a for a, r in zip(am, rm)]
        if wc == wm:
            return [(x + y) // 2 for x, y in zip(sc, sm)]
        return [(x * wc + y * wm) // (wc + wm) for x, y in zip(sc, sm)]


def parse_resources(args: dict) -> list[tuple[str, int]]:
    entries = [plugin_args(r, "name", "weight") for r in args.get("resources") or ()]
    res = [(r["name"], int(r.get("weight") or 1)) for r in entries]
    return res or list(DEFAULT_RESOURCES)


def new(args: dict, handle) -> NodeResourcesFit:
    args = plugin_args(args, "ignoredResources", "ignoredResourceGroups", "scoringStrategy")
    if args.get("ignoredResourceGroups"):
        raise ValueError("ignoredResourceGroups is not supported by minik8s")
    strategy = plugin_args(args.get("scoringStrategy") or {}, "type", "resources",
                           "requestedToCapacityRatio")
    return NodeResourcesFit(strategy=strategy.get("type") or LEAST_ALLOCATED,
                            resources=parse_resources(strategy),
                            ignored_resources=args.get("ignoredResources") or ())
