"""PodTopologySpread, with the system default constraints: spread the replicas of one
owner across nodes (kubernetes.io/hostname, maxSkew 3) and zones
(topology.kubernetes.io/zone, maxSkew 5), both ScheduleAnyway, i.e. as a score.

Kubernetes derives the default constraints' selector from the Services, ReplicaSets,
ReplicationControllers and StatefulSets that select the pod; minik8s counts the pods
that share the pod's controller ownerReference, which is what those selectors pick out
for the replicas of one workload, and needs no extra informers. The score itself is
kube-scheduler's: for every constraint whose topology key the node has,
`count * log(domains + 2) + (maxSkew - 1)`, rounded, then normalized so the node with
the fewest matching pods scores 100. Counted pods are the owner's non-terminating pods on
nodes that match the incoming pod's required node affinity (nodeAffinityPolicy Honor).

Not yet: explicit `spec.topologySpreadConstraints` (their DoNotSchedule filter and
ScheduleAnyway score). A pod that has them is skipped by this plugin.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from scheduler.framework import (ASSIGNED_POD, MAX_NODE_SCORE, NODE, SKIP, ActionType, ClusterEvent,
                                 CycleState, Status, plugin_args)
from scheduler.plugins.node_affinity import required_affinity
from scheduler.types import HOSTNAME_LABEL, ZONE_LABEL, NodeInfo, PodInfo

NAME = "PodTopologySpread"
SYSTEM_DEFAULT_CONSTRAINTS = ((HOSTNAME_LABEL, 3), (ZONE_LABEL, 5))


class _State(NamedTuple):
    constraints: tuple[tuple[str, int], ...]
    weights: list[float]
    node_counts: dict[str, int]                  # node name -> owner's pods there
    pair_counts: dict[tuple[str, str], int]      # (key, value) -> owner's pods in that domain


class PodTopologySpread:
    NAME = NAME
    EVENTS = (ClusterEvent(ASSIGNED_POD, ActionType.ADD | ActionType.DELETE | ActionType.UPDATE_POD),
              ClusterEvent(NODE, ActionType.ADD | ActionType.DELETE | ActionType.UPDATE_NODE_LABEL))

    def __init__(self, default_constraints=SYSTEM_DEFAULT_CONSTRAINTS):
        self.defaults = tuple(default_constraints)

    def _values(self, snap, key: str) -> list[str | None]:
        """Each node's value of label `key` (None when absent), by node index."""
        return snap.memo((NAME, key), lambda: [n.labels.get(key) for n in snap.nodes])

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> Status | None:
        if (pod.pod.get("spec") or {}).get("topologySpreadConstraints"):
            return SKIP
        if not pod.owner_uid or not self.defaults or not nodes:
            return SKIP
        snap = state.snapshot
        constraints = self.defaults
        pair_counts: dict[tuple[str, str], int] = {}
        weights = []
        for key, _ in constraints:
            if key == HOSTNAME_LABEL:
                weights.append(math.log(len(nodes) + 2))
                continue
            # As kube-scheduler does, a filtered node without the key forms the "" domain.
            domains = {"" if v is None else v for v in map(self._values(snap, key).__getitem__, nodes)}
            pair_counts.update(((key, v), 0) for v in domains)
            weights.append(math.log(len(domains) + 2))
        node_counts = snap.owner_counts.get(pod.owner_uid, {})
        if pair_counts:
            req = required_affinity(pod)
            for name, count in node_counts.items():
                info = snap.get(name)
                if info is None or (req is not None and not req.matches(info)):
                    continue
                for key, _ in constraints:
                    pair = (key, info.labels.get(key, ""))
                    if pair in pair_counts:
                        pair_counts[pair] += count
        state.write(NAME, _State(constraints, weights, node_counts, pair_counts))
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        s: _State = state.read(NAME)
        labels = node.labels
        score = 0.0
        for (key, max_skew), w in zip(s.constraints, s.weights):
            value = labels.get(key)
            if value is None:
                continue
            cnt = (s.node_counts.get(node.name, 0) if key == HOSTNAME_LABEL
                   else s.pair_counts.get((key, value), 0))
            score += cnt * w + (max_skew - 1)
        return math.floor(score + 0.5)  # Go's math.Round: half away from zero

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        s: _State = state.read(NAME)
        snap = state.snapshot
        totals = [0.0] * len(nodes)
        for (key, max_skew), w in zip(s.constraints, s.weights):
            values = list(map(self._values(snap, key).__getitem__, nodes))
            if key == HOSTNAME_LABEL:
                # every node with the label gets maxSkew-1; the few holding replicas get more
                totals = [t if v is None else t + (max_skew - 1) for t, v in zip(totals, values)]
                if s.node_counts:
                    where = {j: k for k, j in enumerate(nodes)}
                    for name, cnt in s.node_counts.items():
                        info = snap.get(name)
                        k = where.get(info.index) if info is not None else None
                        if k is not None and values[k] is not None:
                            totals[k] += cnt * w
            else:
                per_value = {v: cnt * w + (max_skew - 1) for (k, v), cnt in s.pair_counts.items()
                             if k == key}
                totals = [t if v is None else t + per_value.get(v, max_skew - 1)
                          for t, v in zip(totals, values)]
        return [int(t + 0.5) for t in totals]  # t >= 0, so this is Go's math.Round

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        if not scores:
            return
        lo, hi = min(scores), max(scores)
        if hi == 0:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
            return
        scores[:] = [MAX_NODE_SCORE * (hi + lo - s) // hi for s in scores]


def new(args: dict, handle) -> PodTopologySpread:
    args = plugin_args(args, "defaultConstraints", "defaultingType")
    if args.get("defaultingType") == "List":
        constraints = []
        for c in args.get("defaultConstraints") or ():
            c = plugin_args(c, "maxSkew", "topologyKey", "whenUnsatisfiable", "labelSelector",
                            "minDomains", "nodeAffinityPolicy", "nodeTaintsPolicy", "matchLabelKeys")
            if c.get("whenUnsatisfiable", "DoNotSchedule") != "ScheduleAnyway":
                raise ValueError("minik8s supports only ScheduleAnyway default constraints")
            constraints.append((c["topologyKey"], int(c.get("maxSkew") or 1)))
        return PodTopologySpread(constraints)
    return PodTopologySpread()
