"""TaintToleration: NoSchedule and NoExecute taints the pod does not tolerate rule a node
out (the first such taint is named); PreferNoSchedule taints it does not tolerate lower
the node's score."""
from __future__ import annotations

from typing import Iterable, Mapping

from scheduler.framework import (NODE, ActionType, ClusterEvent, CycleState, Status,
                                 default_normalize_score)
from scheduler.types import (NO_EXECUTE, NO_SCHEDULE, PREFER_NO_SCHEDULE, NodeInfo, PodInfo,
                             tolerations_tolerate)

NAME = "TaintToleration"


def untolerated_taint(taints: Iterable[Mapping], tolerations: tuple) -> Mapping | None:
    """v1helper.FindMatchingUntoleratedTaint for NoSchedule/NoExecute taints."""
    for t in taints:
        if t.get("effect") in (NO_SCHEDULE, NO_EXECUTE) and not tolerations_tolerate(tolerations, t):
            return t
    return None


def count_intolerable_prefer_no_schedule(taints: Iterable[Mapping], tolerations: tuple) -> int:
    prefer = [t for t in tolerations if (t.get("effect") or "") in ("", PREFER_NO_SCHEDULE)]
    return sum(1 for t in taints if t.get("effect") == PREFER_NO_SCHEDULE
               and not tolerations_tolerate(prefer, t))


def _signature(pod: PodInfo) -> tuple:
    sig = pod.cache.get(NAME)
    if sig is None:
        sig = pod.cache[NAME] = tuple(tuple(sorted(t.items())) for t in pod.tolerations)
    return sig


class TaintToleration:
    NAME = NAME
    EVENTS = (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT),)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        t = untolerated_taint(node.taints, pod.tolerations)
        if t is None:
            return None
        return Status.unresolvable(
            f"node(s) had untolerated taint {{{t.get('key') or ''}: {t.get('value') or ''}}}")

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        snap = state.snapshot
        hard = snap.memo((NAME, "hard"), lambda: {
            n.index: n.taints for n in snap.nodes
            if any(t.get("effect") in (NO_SCHEDULE, NO_EXECUTE) for t in n.taints)})
        if not hard:
            return nodes
        bad = snap.memo((NAME, "bad", _signature(pod)), lambda: frozenset(
            j for j, taints in hard.items() if untolerated_taint(taints, pod.tolerations)))
        return [j for j in nodes if j not in bad] if bad else nodes

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        return count_intolerable_prefer_no_schedule(node.taints, pod.tolerations)

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        snap = state.snapshot
        soft = snap.memo((NAME, "soft"), lambda: {
            n.index: n.taints for n in snap.nodes
            if any(t.get("effect") == PREFER_NO_SCHEDULE for t in n.taints)})
        if not soft:
            return [0] * len(nodes)
        tol = pod.tolerations
        return [count_intolerable_prefer_no_schedule(soft[j], tol) if j in soft else 0
                for j in nodes]

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        default_normalize_score(scores, reverse=True)


def new(args: dict, handle) -> TaintToleration:
    return TaintToleration()
