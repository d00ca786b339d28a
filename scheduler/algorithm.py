"""One scheduling cycle (kube-scheduler's schedulePod / schedulingCycle / bindingCycle).

`Algorithm.scheduling_cycle(fwk, pod)` is synchronous and never yields, so the cache
cannot change under it:
1. PreFilter. A rejection there applies to every node.
2. Filter over a sample of nodes: starting where the previous cycle stopped, walk the
   nodes in order until `num_feasible_nodes_to_find` feasible ones are found
   (percentageOfNodesToScore; adaptive by default: 50% at 100 nodes, minus 1% per 125
   nodes, at least 5% and at least 100 nodes; every node below 100). Nodes are filtered
   in chunks through each plugin's columnar `filter_nodes`.
3. Nothing feasible: each node's status is that of the first filter rejecting it, as in
   kube-scheduler (`Framework.diagnose`) - the diagnosis; PostFilter runs, and
   the result carries FitError's message: `0/5 nodes are available: 1 node(s) didn't
   match Pod's node affinity/selector, 2 Insufficient cpu.` (the "count reason" strings
   sorted as strings, exactly as kube-scheduler sorts them).
4. One feasible node is taken as is; otherwise PreScore, Score, NormalizeScore and the
   weights give each node a total and the best wins, ties broken uniformly at random.
5. The pod is assumed in the cache on that node (it counts at once) and Reserve runs.

`await Algorithm.binding_cycle(fwk, result)` then runs Bind; on failure it unreserves
and forgets the assumed pod. The caller runs it concurrently with the next cycle.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from scheduler.cache import Cache, CacheError
from scheduler.framework import Code, CycleState, Framework, FrameworkError, Status
from scheduler.types import PodInfo

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
NO_NODES_AVAILABLE = "no nodes available to schedule pods"
_MIN_CHUNK = 64


def num_feasible_nodes_to_find(percentage: int | None, num_all_nodes: int) -> int:
    """kube-scheduler's numFeasibleNodesToFind."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    if not percentage:
        percentage = max(50 - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    n = num_all_nodes * percentage // 100
    return max(n, MIN_FEASIBLE_NODES_TO_FIND)


@dataclass
class Diagnosis:
    node_to_status: dict[str, Status] = field(default_factory=dict)
    unschedulable_plugins: set[str] = field(default_factory=set)
    pre_filter_msg: str = ""
    post_filter_msg: str = ""


class FitError(Exception):
    """No node fits the pod; str() is kube-scheduler's FitError message."""

    def __init__(self, pod: PodInfo, num_all_nodes: int, diagnosis: Diagnosis):
        self.pod, self.num_all_nodes, self.diagnosis = pod, num_all_nodes, diagnosis
        super().__init__(self.message)

    @property
    def message(self) -> str:
        d = self.diagnosis
        msg = f"0/{self.num_all_nodes} nodes are available:"
        if d.pre_filter_msg:
            msg += f" {d.pre_filter_msg}."
        else:
            reasons = Counter(r for s in d.node_to_status.values() for r in s.reasons)
            histogram = sorted(f"{n} {r}" for r, n in reasons.items())
            if histogram:
                msg += f" {', '.join(histogram)}."
        if d.post_filter_msg:
            msg += f" {d.post_filter_msg}"
        return msg


class NoNodesAvailable(Exception):
    def __init__(self) -> None:
        super().__init__(NO_NODES_AVAILABLE)


@dataclass
class ScheduleResult:
    suggested_host: str
    evaluated_nodes: int
    feasible_nodes: int


@dataclass
class CycleResult:
    """What one scheduling cycle decided. On success `node_name` is set, `pod` is the
    assumed copy (spec.nodeName set) and `status` is None; otherwise `status` says why
    (Unschedulable: `message` is the FitError text; Error: something broke) and
    `unschedulable_plugins` names the plugins whose rejections the queue waits on."""
    pod: PodInfo
    framework: Framework
    state: CycleState
    node_name: str | None = None
    status: Status | None = None
    unschedulable_plugins: frozenset[str] = frozenset()
    evaluated_nodes: int = 0
    feasible_nodes: int = 0

    @property
    def message(self) -> str:
        return self.status.message if self.status is not None else ""


class Algorithm:
    """Runs cycles against one cache for any number of profiles (Frameworks)."""

    def __init__(self, cache: Cache, *, rng: random.Random | None = None):
        self.cache = cache
        self.rng = rng or random.Random()
        self.next_start_node_index = 0

    # --- filtering ---------------------------------------------------------------------------

    def find_nodes_that_fit(self, fwk: Framework, state: CycleState,
                            pod: PodInfo) -> tuple[list[int], Diagnosis | None]:
        """Feasible node indexes (at most num_feasible_nodes_to_find), and the diagnosis
        when there are none."""
        snap = state.snapshot
        nodes = snap.nodes
        n = len(nodes)
        s = fwk.run_pre_filter(state, pod)
        if s is not None:
            if s.code == Code.ERROR:
                raise FrameworkError(s)
            return [], Diagnosis({ni.name: s for ni in nodes}, {s.plugin}, pre_filter_msg=s.message)
        to_find = num_feasible_nodes_to_find(fwk.percentage_of_nodes_to_score, n)
        start = self.next_start_node_index % n
        feasible: list[int] = []
        examined = 0
        while examined < n and len(feasible) < to_find:
            need = to_find - len(feasible)
            # Size the chunk by the pass rate seen so far, so a cluster where most nodes
            # fit costs one pass and a cluster where few fit does not crawl.
            chunk = need if not examined else need * examined // max(len(feasible), 1)
            chunk = min(max(chunk, _MIN_CHUNK), n - examined)
            a = (start + examined) % n
            b = a + chunk
            candidates = list(range(a, b)) if b <= n else [*range(a, n), *range(0, b - n)]
            kept = fwk.filter_nodes(state, pod, candidates)
            if len(kept) >= need:
                kept = kept[:need]
                examined += (kept[-1] - a) % n + 1
            else:
                examined += chunk
            feasible += kept
        self.next_start_node_index = (start + examined) % n
        if feasible:
            return feasible, None
        diagnosis = Diagnosis()
        for j, s in fwk.diagnose(state, pod, list(range(n))).items():
            if s.code == Code.ERROR:
                raise FrameworkError(s)
            diagnosis.node_to_status[nodes[j].name] = s
            diagnosis.unschedulable_plugins.add(s.plugin)
        return [], diagnosis

    def schedule_pod(self, fwk: Framework, state: CycleState, pod: PodInfo) -> ScheduleResult:
        """Pick a node for the pod; raises NoNodesAvailable, FitError or FrameworkError."""
        snap = state.snapshot
        if not len(snap):
            raise NoNodesAvailable()
        feasible, diagnosis = self.find_nodes_that_fit(fwk, state, pod)
        if not feasible:
            assert diagnosis is not None
            s = fwk.run_post_filter(state, pod, diagnosis.node_to_status)
            if s is not None and s.message:
                diagnosis.post_filter_msg = s.message
            raise FitError(pod, len(snap), diagnosis)
        evaluated = len(feasible) + (len(diagnosis.node_to_status) if diagnosis else 0)
        if len(feasible) == 1:
            return ScheduleResult(snap.nodes[feasible[0]].name, evaluated, 1)
        fwk.run_pre_score(state, pod, feasible)
        totals = fwk.run_score(state, pod, feasible)
        best = max(totals)
        ties = [k for k, t in enumerate(totals) if t == best]
        pick = ties[0] if len(ties) == 1 else self.rng.choice(ties)
        return ScheduleResult(snap.nodes[feasible[pick]].name, evaluated, len(feasible))

    # --- the cycles --------------------------------------------------------------------------

    def scheduling_cycle(self, fwk: Framework, pod: PodInfo) -> CycleResult:
        state = CycleState(self.cache.snapshot())
        result = CycleResult(pod, fwk, state)
        try:
            r = self.schedule_pod(fwk, state, pod)
        except FitError as e:
            result.status = Status.unschedulable(e.message)
            result.unschedulable_plugins = frozenset(e.diagnosis.unschedulable_plugins)
            return result
        except NoNodesAvailable as e:
            result.status = Status.unresolvable(str(e))
            return result
        except FrameworkError as e:
            result.status = Status.error(str(e))
            return result
        assumed = pod.with_node(r.suggested_host)
        try:
            self.cache.assume_pod(assumed)
        except CacheError as e:
            result.status = Status.error(str(e))
            return result
        s = fwk.run_reserve(state, assumed, r.suggested_host)
        if s is not None:
            self.cache.forget_pod(assumed)
            result.status = s if s.is_rejected() else Status.error(s.message)
            result.unschedulable_plugins = frozenset({s.plugin}) if s.is_rejected() else frozenset()
            return result
        result.pod, result.node_name = assumed, r.suggested_host
        result.evaluated_nodes, result.feasible_nodes = r.evaluated_nodes, r.feasible_nodes
        return result

    async def binding_cycle(self, result: CycleResult) -> Status | None:
        """Bind an assumed pod; on failure undo Reserve and the assumption."""
        assert result.node_name is not None
        fwk, pod = result.framework, result.pod
        s = await fwk.run_bind(result.state, pod, result.node_name)
        if s is not None:
            fwk.run_unreserve(result.state, pod, result.node_name)
            # While the binding was in flight the watch may have confirmed the pod (bound
            # by someone else) or reported it deleted: then there is no assumption left.
            if self.cache.is_assumed(pod.key):
                self.cache.forget_pod(pod)
        return s
