"""NodePorts: a pod's hostPorts must be free on the node (same protocol and port, on the
same IP or where either side binds 0.0.0.0)."""
from __future__ import annotations

from typing import Mapping

from scheduler.framework import ASSIGNED_POD, NODE, SKIP, ActionType, ClusterEvent, CycleState, Status
from scheduler.types import HostPort, NodeInfo, PodInfo

NAME = "NodePorts"
ERR_REASON = "node(s) didn't have free ports for the requested pod ports"
_ANY = "0.0.0.0"


def conflicts(used: Mapping[HostPort, int], want: HostPort) -> bool:
    """HostPortInfo.CheckConflict."""
    if want.ip == _ANY:
        return any(u.port == want.port and u.protocol == want.protocol for u in used)
    return HostPort(_ANY, want.protocol, want.port) in used or want in used


def fits(pod: PodInfo, node: NodeInfo) -> bool:
    used = node.used_ports
    return not used or not any(conflicts(used, hp) for hp in pod.host_ports)


class NodePorts:
    NAME = NAME
    EVENTS = (ClusterEvent(ASSIGNED_POD, ActionType.DELETE), ClusterEvent(NODE, ActionType.ADD))

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None if pod.host_ports else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        return None if fits(pod, node) else Status.unschedulable(ERR_REASON)

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        if not pod.host_ports:
            return nodes
        infos = state.snapshot.nodes
        return [j for j in nodes if fits(pod, infos[j])]


def new(args: dict, handle) -> NodePorts:
    return NodePorts()
