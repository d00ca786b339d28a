"""NodeResourcesBalancedAllocation: favour nodes whose cpu and memory (by default) would be
equally used: score = (1 - standard deviation of the requested/allocatable fractions)
* 100, with the pod's actual requests (no non-zero defaults), as kube-scheduler does."""
from __future__ import annotations

import math
from operator import itemgetter
from typing import Sequence

from scheduler.framework import ASSIGNED_POD, NODE, ActionType, ClusterEvent, CycleState, plugin_args
from scheduler.plugins.node_resources_fit import (DEFAULT_RESOURCES, allocatable_and_requested,
                                                  parse_resources)
from scheduler.types import CPU, MEMORY, NodeInfo, PodInfo

NAME = "NodeResourcesBalancedAllocation"


def balanced_score(fractions: list[float]) -> int:
    if len(fractions) == 2:
        std = abs((fractions[0] - fractions[1]) / 2)
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) * (f - mean) for f in fractions) / len(fractions))
    else:
        std = 0.0
    return int((1 - std) * 100)


class BalancedAllocation:
    NAME = NAME
    EVENTS = (ClusterEvent(ASSIGNED_POD, ActionType.DELETE | ActionType.UPDATE_POD),
              ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_ALLOCATABLE))

    def __init__(self, resources: Sequence[tuple[str, int]] = DEFAULT_RESOURCES):
        self.resources = tuple(resources)

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        fractions = []
        for name, _ in self.resources:
            alloc, req = allocatable_and_requested(node, pod, name, use_requested=True)
            if alloc:
                fractions.append(min(req / alloc, 1.0))
        return balanced_score(fractions)

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        s = state.snapshot
        if not nodes:
            return []
        if [r for r, _ in self.resources] not in ([CPU, MEMORY], [MEMORY, CPU]):
            return [self.score(state, pod, s.nodes[j]) for j in nodes]
        get = itemgetter(*nodes) if len(nodes) > 1 else (lambda col: (col[nodes[0]],))
        ac, am = get(s.alloc_cpu), get(s.alloc_mem)
        if 0 in ac or 0 in am:
            return [self.score(state, pod, s.nodes[j]) for j in nodes]
        pc, pm = pod.cpu, pod.memory
        fc = [(r + pc) / a for r, a in zip(get(s.req_cpu), ac)]
        fm = [(r + pm) / a for r, a in zip(get(s.req_mem), am)]
        return [int((1 - abs(((x if x < 1.0 else 1.0) - (y if y < 1.0 else 1.0)) / 2)) * 100)
                for x, y in zip(fc, fm)]


def new(args: dict, handle) -> BalancedAllocation:
    return BalancedAllocation(parse_resources(plugin_args(args, "resources")))
