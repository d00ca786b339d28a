"""NodeName: a pod that names its node (spec.nodeName) fits only there."""
from __future__ import annotations

from scheduler.framework import NODE, SKIP, ActionType, ClusterEvent, CycleState, Status
from scheduler.types import NodeInfo, PodInfo

NAME = "NodeName"
ERR_REASON = "node(s) didn't match the requested node name"


class NodeName:
    NAME = NAME
    EVENTS = (ClusterEvent(NODE, ActionType.ADD),)

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None if pod.node_name else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if pod.node_name and pod.node_name != node.name:
            return Status.unresolvable(ERR_REASON)
        return None

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        if not pod.node_name:
            return nodes
        target = state.snapshot.get(pod.node_name)
        return [] if target is None else [j for j in nodes if j == target.index]


def new(args: dict, handle) -> NodeName:
    return NodeName()
