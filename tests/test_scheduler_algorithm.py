"""One scheduling cycle: sampling, the FitError message, scoring, assume, reserve, bind."""
import asyncio
import random
from collections import Counter
from types import SimpleNamespace

import pytest

from scheduler.algorithm import Algorithm, num_feasible_nodes_to_find
from scheduler.config import build_frameworks, parse_config
from scheduler.framework import (SKIP, Code, CycleState, FilterNodes, FilterPlugin, Framework,
                                 ReservePlugin, ScorePlugin, Status)
from scheduler.plugins.default_binder import DefaultBinder
from scheduler.testing import make_cache, make_node, make_pod
from scheduler.types import PodInfo


def default_framework(bind=None):
    return build_frameworks(handle=SimpleNamespace(bind=bind))["default-scheduler"]


def cycle(algo, fwk, pod):
    return algo.scheduling_cycle(fwk, PodInfo(pod))


def test_fit_error_message_for_five_nodes():
    nodes = [make_node("n1").cap(cpu="1").label("disk", "ssd").obj(),
             make_node("n2").cap(cpu="1").label("disk", "ssd").obj(),
             make_node("n3").label("disk", "ssd").taint("dedicated", "gpu").obj(),
             make_node("n4").label("disk", "ssd").taint("dedicated", "gpu").obj(),
             make_node("n5").obj()]
    algo = Algorithm(make_cache(nodes))
    r = cycle(algo, default_framework(), make_pod().req(cpu="2").node_selector({"disk": "ssd"}).obj())
    assert r.node_name is None and r.status.code == Code.UNSCHEDULABLE
    # kube-scheduler's FitError sorts the "<count> <reason>" strings as strings (sort.Strings),
    # so "1 node(s)..." comes before "2 Insufficient cpu".
    assert r.message == ("0/5 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
                         "2 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}.")
    assert r.unschedulable_plugins == {"NodeAffinity", "NodeResourcesFit", "TaintToleration"}


def test_fit_error_counts_every_reason_of_a_node():
    nodes = [make_node("n1").cap(cpu="1", memory="1Gi").obj(), make_node("n2").cap(cpu="1").obj()]
    r = cycle(Algorithm(make_cache(nodes)), default_framework(), make_pod().req(cpu="2", memory="2Gi").obj())
    assert r.message == "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."


def test_more_reason_strings():
    nodes = [make_node("n1").unschedulable().obj(), make_node("n2").ready("False").obj(),
             make_node("n3").obj()]
    pods = [make_pod("web").host_port(80).node("n3").obj()]
    r = cycle(Algorithm(make_cache(nodes, pods)), default_framework(), make_pod().host_port(80).obj())
    assert r.message == ("0/3 nodes are available: 1 node(s) didn't have free ports for the requested "
                         "pod ports, 1 node(s) were not ready, 1 node(s) were unschedulable.")


def test_no_nodes():
    r = cycle(Algorithm(make_cache()), default_framework(), make_pod().obj())
    assert r.status == Status.unresolvable("no nodes available to schedule pods")


class RejectAtPreFilter:
    NAME = "RejectAtPreFilter"

    def pre_filter(self, state, pod):
        return Status.unresolvable("pod has an impossible wish")

    def filter(self, state, pod, node):
        raise AssertionError("filter must not run after a PreFilter rejection")


def test_pre_filter_rejection_is_the_whole_message():
    fwk = Framework.from_plugins([RejectAtPreFilter()])
    r = cycle(Algorithm(make_cache([make_node("a").obj(), make_node("b").obj()])), fwk, make_pod().obj())
    assert r.message == "0/2 nodes are available: pod has an impossible wish."
    assert r.unschedulable_plugins == {"RejectAtPreFilter"}


@pytest.mark.parametrize("percentage,nodes,want", [
    (None, 1, 1), (None, 99, 99), (None, 100, 100), (None, 200, 100), (None, 1000, 420),
    (None, 5000, 500), (None, 6000, 300), (None, 10000, 500), (30, 1000, 300), (1, 1000, 100),
    (100, 5000, 5000), (0, 1000, 420)])
def test_num_feasible_nodes_to_find(percentage, nodes, want):
    assert num_feasible_nodes_to_find(percentage, nodes) == want


def test_samples_nodes_and_starts_where_the_last_cycle_stopped():
    algo = Algorithm(make_cache([make_node(f"n{i}").obj() for i in range(1000)]))
    fwk = default_framework()
    r = cycle(algo, fwk, make_pod("a").obj())
    assert (r.feasible_nodes, r.evaluated_nodes, algo.next_start_node_index) == (420, 420, 420)
    r = cycle(algo, fwk, make_pod("b").obj())
    assert algo.next_start_node_index == 840
    r = cycle(algo, fwk, make_pod("c").obj())
    assert algo.next_start_node_index == (840 + 420) % 1000
    assert r.feasible_nodes == 420


def test_sampling_skips_infeasible_nodes_and_counts_them_as_examined():
    # every third node fits; 300 nodes -> look for 147 feasible, only 100 exist
    nodes = [make_node(f"n{i}").obj() if i % 3 == 0 else make_node(f"n{i}").taint("k", "v").obj()
             for i in range(300)]
    algo = Algorithm(make_cache(nodes))
    r = cycle(algo, default_framework(), make_pod().obj())
    assert r.feasible_nodes == 100 and int(r.node_name[1:]) % 3 == 0
    assert algo.next_start_node_index == 0  # went all the way round


def test_sampling_stops_at_enough_feasible_nodes_among_rejects():
    nodes = [make_node(f"n{i}").obj() if i % 2 == 0 else make_node(f"n{i}").taint("k", "v").obj()
             for i in range(1000)]
    algo = Algorithm(make_cache(nodes))
    r = cycle(algo, default_framework(), make_pod().obj())
    assert r.feasible_nodes == 420
    assert algo.next_start_node_index == 839  # n838 was the 420th feasible node


def test_assumed_pods_count_at_once():
    algo = Algorithm(make_cache([make_node("n1").cap(cpu="1").obj(), make_node("n2").cap(cpu="1").obj()]))
    fwk = default_framework()
    placed = [cycle(algo, fwk, make_pod(f"p{i}").req(cpu="600m").obj()).node_name for i in range(3)]
    assert sorted(placed[:2]) == ["n1", "n2"] and placed[2] is None
    assert algo.cache.is_assumed("default/p0") and algo.cache.is_assumed("default/p1")


def test_least_allocated_spreads_and_most_allocated_packs():
    nodes = [make_node(f"n{i}").obj() for i in range(4)]
    algo = Algorithm(make_cache(nodes), rng=random.Random(0))
    fwk = default_framework()
    spread = Counter(cycle(algo, fwk, make_pod(f"s{i}").req(cpu="500m", memory="1Gi").obj()).node_name
                     for i in range(8))
    assert sorted(spread.values()) == [2, 2, 2, 2]
    cfg = parse_config("""
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: packer
  plugins:
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
""")
    packer = build_frameworks(cfg)["packer"]
    algo = Algorithm(make_cache(nodes), rng=random.Random(0))
    packed = Counter(cycle(algo, packer, make_pod(f"p{i}").req(cpu="500m", memory="1Gi").obj()).node_name
                     for i in range(8))
    assert list(packed.values()) == [8]


def test_selector_and_taints_respected_by_the_whole_cycle():
    nodes = [make_node("gpu").label("accel", "gpu").taint("dedicated", "gpu").obj(),
             make_node("plain").obj()]
    algo = Algorithm(make_cache(nodes))
    fwk = default_framework()
    assert cycle(algo, fwk, make_pod("a").obj()).node_name == "plain"
    wants_gpu = make_pod("b").node_selector({"accel": "gpu"}).toleration("dedicated", "gpu", "NoSchedule").obj()
    assert cycle(algo, fwk, wants_gpu).node_name == "gpu"


def test_ties_are_broken_at_random():
    class Everywhere:
        NAME = "Everywhere"

        def filter(self, state, pod, node):
            return None
    nodes = [make_node(f"n{i}").obj() for i in range(3)]
    algo = Algorithm(make_cache(nodes), rng=random.Random(7))
    fwk = Framework.from_plugins([Everywhere()])
    picks = Counter(cycle(algo, fwk, make_pod(f"p{i}").obj()).node_name for i in range(60))
    assert set(picks) == {"n0", "n1", "n2"}


def test_filter_plugin_without_fast_path_runs_node_by_node():
    class OnlyN1:
        NAME = "OnlyN1"

        def filter(self, state, pod, node):
            return None if node.name == "n1" else Status.unschedulable("not n1")
    algo = Algorithm(make_cache([make_node("n0").obj(), make_node("n1").obj(), make_node("n2").obj()]))
    fwk = Framework.from_plugins([OnlyN1()])
    assert cycle(algo, fwk, make_pod("a").obj()).node_name == "n1"


def test_filter_error_aborts_the_cycle():
    class Broken:
        NAME = "Broken"

        def filter(self, state, pod, node):
            return Status.error("boom")
    r = cycle(Algorithm(make_cache([make_node("n0").obj()])), Framework.from_plugins([Broken()]),
              make_pod().obj())
    assert r.status.code == Code.ERROR and "boom" in r.message and not r.unschedulable_plugins


def test_score_out_of_range_is_an_error():
    class TooHigh:
        NAME = "TooHigh"

        def score(self, state, pod, node):
            return 101
    algo = Algorithm(make_cache([make_node("n0").obj(), make_node("n1").obj()]))
    r = cycle(algo, Framework.from_plugins([TooHigh()]), make_pod().obj())
    assert r.status.code == Code.ERROR and "invalid score" in r.message
    assert algo.cache.pod_count_total() == 0


def test_score_weights_decide():
    class Prefer:
        def __init__(self, name, node):
            self.NAME, self.node = name, node

        def score(self, state, pod, node):
            return 100 if node.name == self.node else 0
    nodes = [make_node("n0").obj(), make_node("n1").obj()]
    fwk = Framework(score=[(Prefer("A", "n0"), 1), (Prefer("B", "n1"), 3)])
    assert cycle(Algorithm(make_cache(nodes)), fwk, make_pod().obj()).node_name == "n1"


def test_reserve_failure_forgets_the_pod():
    class Refuse:
        NAME = "Refuse"
        unreserved = []

        def reserve(self, state, pod, node):
            return Status.unschedulable("no room in the ledger")

        def unreserve(self, state, pod, node):
            self.unreserved.append((pod.key, node))
    algo = Algorithm(make_cache([make_node("n0").obj()]))
    refuse = Refuse()
    r = cycle(algo, Framework(reserve=[refuse]), make_pod().obj())
    assert r.node_name is None and r.unschedulable_plugins == {"Refuse"}
    assert refuse.unreserved == [("default/pod", "n0")]
    assert algo.cache.pod_count_total() == 0


def test_extension_points_are_found_by_their_protocols():
    class ScoreOnly:
        NAME = "ScoreOnly"

        def score(self, state, pod, node):
            return 0

    class HalfReserve:  # Reserve without Unreserve is not a ReservePlugin
        NAME = "HalfReserve"

        def reserve(self, state, pod, node):
            return None
    fwk = Framework.from_plugins([ScoreOnly(), HalfReserve()])
    assert fwk.filter_plugins == [] and fwk.reserve_plugins == []
    assert [p.NAME for p, _ in fwk.score_plugins] == ["ScoreOnly"]
    assert isinstance(ScoreOnly(), ScorePlugin) and not isinstance(ScoreOnly(), FilterPlugin)
    assert not isinstance(HalfReserve(), ReservePlugin)
    with pytest.raises(TypeError, match="'ScoreOnly' does not implement FilterPlugin"):
        Framework(filter=[ScoreOnly()])
    fit = default_framework().plugins["NodeResourcesFit"]
    assert isinstance(fit, FilterPlugin) and isinstance(fit, FilterNodes)


def test_binding_success_and_failure():
    bound = []

    async def bind(pod, node):
        if pod.name == "bad":
            raise RuntimeError("409 Conflict")
        bound.append((pod.key, node))
    fwk = default_framework(bind=bind)
    algo = Algorithm(make_cache([make_node("n0").cap(cpu="1").obj()]))
    ok = cycle(algo, fwk, make_pod("good").req(cpu="500m").obj())
    assert asyncio.run(algo.binding_cycle(ok)) is None
    assert bound == [("default/good", "n0")]
    bad = cycle(algo, fwk, make_pod("bad").req(cpu="500m").obj())
    assert algo.cache.free_cpu[0] == 0
    s = asyncio.run(algo.binding_cycle(bad))
    assert s.code == Code.ERROR and "409 Conflict" in s.message and s.plugin == "DefaultBinder"
    assert algo.cache.free_cpu[0] == 500 and not algo.cache.is_assumed("default/bad")


def test_bind_plugins_can_skip():
    class NotMine:
        NAME = "NotMine"

        async def bind(self, state, pod, node):
            return SKIP
    calls = []

    async def bind(pod, node):
        calls.append(node)
    fwk = Framework(bind=[NotMine(), DefaultBinder(bind)])
    algo = Algorithm(make_cache([make_node("n0").obj()]))
    r = cycle(algo, fwk, make_pod().obj())
    assert asyncio.run(algo.binding_cycle(r)) is None and calls == ["n0"]


def test_columnar_filters_and_scores_agree_with_per_node_ones_on_a_random_cluster():
    rng = random.Random(42)
    nodes = []
    for i in range(60):
        b = make_node(f"n{i}").cap(cpu=str(rng.choice([1, 2, 4])), memory=rng.choice(["1Gi", "4Gi"]),
                                   pods=str(rng.choice([2, 110])))
        if rng.random() < 0.3:
            b.label("zone", rng.choice("abc")).label("topology.kubernetes.io/zone", rng.choice("ab"))
        if rng.random() < 0.2:
            b.taint("dedicated", rng.choice(["gpu", "db"]), rng.choice(["NoSchedule", "PreferNoSchedule"]))
        if rng.random() < 0.1:
            b.unschedulable()
        if rng.random() < 0.1:
            b.ready(rng.choice(["False", "Unknown", None]))
        if rng.random() < 0.3:
            b.image(rng.choice([50, 500]) * 1024 * 1024, "app:v1")
        nodes.append(b.obj())
    bound = [make_pod(f"b{i}").req(cpu=rng.choice(["200m", "1"]), memory="512Mi").owner(rng.choice(["x", "y"]))
             .host_port(80).node(f"n{rng.randrange(60)}").obj() if i % 5 == 0 else
             make_pod(f"b{i}").req(cpu=rng.choice(["200m", "1"])).owner(rng.choice(["x", "y"]))
             .node(f"n{rng.randrange(60)}").obj() for i in range(80)]
    cache = make_cache(nodes, bound)
    fwk = default_framework()
    for i in range(40):
        b = make_pod(f"p{i}").req(cpu=rng.choice(["100m", "1", "3"]), memory=rng.choice(["100Mi", "2Gi"]))
        b.owner(rng.choice(["x", "y"])).image("app:v1")
        if rng.random() < 0.3:
            b.node_affinity([{"key": "zone", "operator": rng.choice(["In", "NotIn"]), "values": ["a"]}])
        if rng.random() < 0.3:
            b.toleration("dedicated", "gpu", rng.choice(["NoSchedule", ""]))
        if rng.random() < 0.2:
            b.host_port(80)
        if rng.random() < 0.3:
            b.preferred(rng.randint(1, 50), {"key": "zone", "operator": "In", "values": ["b"]})
        pod = b.info()
        state = CycleState(cache)
        assert fwk.run_pre_filter(state, pod) is None
        fast = fwk.filter_nodes(state, pod, list(range(len(cache))))
        per_node = {j: fwk.run_filter(state, pod, cache.nodes[j]) for j in range(len(cache))}
        assert fast == [j for j, s in per_node.items() if s is None]
        diagnosis = fwk.diagnose(state, pod, list(range(len(cache))))
        assert diagnosis == {j: s for j, s in per_node.items() if s is not None}
        assert all(diagnosis[j].plugin == per_node[j].plugin for j in diagnosis)
        if len(fast) > 1:
            fwk.run_pre_score(state, pod, fast)
            for p, _ in fwk.score_plugins:
                if p.NAME in state.skip_score:
                    continue
                assert p.score_nodes(state, pod, fast) == [p.score(state, pod, cache.nodes[j]) for j in fast], p.NAME
