"""NodeReady (minik8s): a node whose Ready condition is not True takes no new pods.

Kubernetes gets the same effect indirectly: the node lifecycle controller taints such a
node node.kubernetes.io/not-ready:NoSchedule (Ready False or missing) or
node.kubernetes.io/unreachable:NoSchedule (Ready Unknown), and TaintToleration rejects it.
minik8s checks the condition directly, so scheduling is right even before (or without) a
controller that adds those taints; a pod that tolerates the matching taint, as DaemonSet
pods do, is let through as it would be in Kubernetes. The reason is the one the old
CheckNodeCondition predicate reported."""
from __future__ import annotations

from scheduler.framework import NODE, ActionType, ClusterEvent, CycleState, Status
from scheduler.types import (NO_SCHEDULE, TAINT_NOT_READY, TAINT_UNREACHABLE, NodeInfo, PodInfo,
                             tolerations_tolerate)

NAME = "NodeReady"
ERR_REASON_NOT_READY = "node(s) were not ready"
_NOT_READY = {"key": TAINT_NOT_READY, "effect": NO_SCHEDULE}
_UNREACHABLE = {"key": TAINT_UNREACHABLE, "effect": NO_SCHEDULE}


def _taint_for(ready: str) -> dict:
    return _UNREACHABLE if ready == "Unknown" else _NOT_READY


class NodeReady:
    NAME = NAME
    EVENTS = (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_CONDITION),)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if node.ready != "True" and not tolerations_tolerate(pod.tolerations, _taint_for(node.ready)):
            return Status.unresolvable(ERR_REASON_NOT_READY)
        return None

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        snap = state.snapshot
        not_ready = snap.memo(NAME, lambda: {n.index: n.ready for n in snap.nodes
                                             if n.ready != "True"})
        if not not_ready:
            return nodes
        bad = {j for j, ready in not_ready.items()
               if not tolerations_tolerate(pod.tolerations, _taint_for(ready))}
        return [j for j in nodes if j not in bad] if bad else nodes


def new(args: dict, handle) -> NodeReady:
    return NodeReady()
