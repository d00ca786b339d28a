"""NodeUnschedulable: a cordoned node (spec.unschedulable) takes no new pods, unless the
pod tolerates the node.kubernetes.io/unschedulable:NoSchedule taint."""
from __future__ import annotations

from scheduler.framework import NODE, ActionType, ClusterEvent, CycleState, Status
from scheduler.types import NO_SCHEDULE, TAINT_UNSCHEDULABLE, NodeInfo, PodInfo, tolerations_tolerate

NAME = "NodeUnschedulable"
ERR_REASON_UNSCHEDULABLE = "node(s) were unschedulable"
_TAINT = {"key": TAINT_UNSCHEDULABLE, "effect": NO_SCHEDULE}


def tolerates_unschedulable(pod: PodInfo) -> bool:
    return tolerations_tolerate(pod.tolerations, _TAINT)


class NodeUnschedulable:
    NAME = NAME
    EVENTS = (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT),)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if node.unschedulable and not tolerates_unschedulable(pod):
            return Status.unresolvable(ERR_REASON_UNSCHEDULABLE)
        return None

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        snap = state.snapshot
        cordoned = snap.memo(NAME, lambda: frozenset(
            n.index for n in snap.nodes if n.unschedulable))
        if not cordoned or tolerates_unschedulable(pod):
            return nodes
        return [j for j in nodes if j not in cordoned]


def new(args: dict, handle) -> NodeUnschedulable:
    return NodeUnschedulable()
