"""Table-driven tests for every scheduler plugin: (name, pod, node(s), want).

`run_filter` / `run_score` (scheduler.testing) also check that each plugin's columnar
fast path gives the same answer as its per-node method.
"""
import pytest

from scheduler.framework import Code, Status
from scheduler.plugins.balanced_allocation import BalancedAllocation
from scheduler.plugins.image_locality import ImageLocality, calculate_priority
from scheduler.plugins.node_affinity import NodeAffinity
from scheduler.plugins.node_name import NodeName
from scheduler.plugins.node_ports import NodePorts
from scheduler.plugins.node_ready import NodeReady
from scheduler.plugins.node_resources_fit import MOST_ALLOCATED, NodeResourcesFit
from scheduler.plugins.node_unschedulable import NodeUnschedulable
from scheduler.plugins.pod_topology_spread import PodTopologySpread
from scheduler.plugins.taint_toleration import TaintToleration
from scheduler.testing import make_node, make_pod, run_filter, run_score
from scheduler.types import pod_requests

U, UU = Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def ids(rows):
    return [r[0] for r in rows]


# --- NodeResourcesFit: filter -------------------------------------------------------------------

FIT_ROWS = [
    ("fits", make_pod().req(cpu="500m", memory="1Gi").obj(), make_node().cap(cpu="1").obj(), [], None),
    ("no requests fits a full node", make_pod().obj(), make_node().cap(cpu="1").obj(),
     [make_pod("old").req(cpu="1").node("node").obj()], None),
    ("insufficient cpu", make_pod().req(cpu="500m").obj(), make_node().cap(cpu="1").obj(),
     [make_pod("old").req(cpu="800m").node("node").obj()], Status(U, "Insufficient cpu")),
    ("exactly full fits", make_pod().req(cpu="200m").obj(), make_node().cap(cpu="1").obj(),
     [make_pod("old").req(cpu="800m").node("node").obj()], None),
    ("every missing resource is reported",
     make_pod().req(cpu="2", memory="2Gi").obj(), make_node().cap(cpu="2", memory="2Gi").obj(),
     [make_pod("old").req(cpu="1", memory="1Gi").node("node").obj()],
     Status(U, "Insufficient cpu", "Insufficient memory")),
    ("more than the node has at all is unresolvable", make_pod().req(cpu="8").obj(),
     make_node().cap(cpu="4").obj(), [], Status(UU, "Insufficient cpu")),
    ("too many pods", make_pod().obj(), make_node().cap(pods="1").obj(),
     [make_pod("old").node("node").obj()], Status(U, "Too many pods")),
    ("too many pods comes first", make_pod().req(cpu="1").obj(), make_node().cap(cpu="1", pods="1").obj(),
     [make_pod("old").req(cpu="500m").node("node").obj()], Status(U, "Too many pods", "Insufficient cpu")),
    ("init container larger than the containers",
     make_pod().req(cpu="1").init_req(cpu="3").obj(), make_node().cap(cpu="2").obj(), [],
     Status(UU, "Insufficient cpu")),
    ("init container smaller than the containers",
     make_pod().req(cpu="2").init_req(cpu="1").obj(), make_node().cap(cpu="2").obj(), [], None),
    ("sidecar adds to containers and later init containers",
     make_pod().req(cpu="1").init_req(sidecar=True, cpu="1").init_req(cpu="1500m").obj(),
     make_node().cap(cpu="2").obj(), [], Status(UU, "Insufficient cpu")),
    ("overhead counts", make_pod().req(cpu="1").overhead(cpu="500m").obj(),
     make_node().cap(cpu="1").obj(), [], Status(UU, "Insufficient cpu")),
    ("ephemeral storage", make_pod().req(ephemeral_storage="10Gi").obj(),
     make_node().cap(ephemeral_storage="5Gi").obj(), [], Status(UU, "Insufficient ephemeral-storage")),
    ("extended resource missing", make_pod().req(**{"example.com/gpu": "1"}).obj(),
     make_node().obj(), [], Status(UU, "Insufficient example.com/gpu")),
    ("extended resource used up", make_pod().req(**{"example.com/gpu": "1"}).obj(),
     make_node().scalar("example.com/gpu", "1").obj(),
     [make_pod("old").req(**{"example.com/gpu": "1"}).node("node").obj()],
     Status(U, "Insufficient example.com/gpu")),
    ("extended resource available", make_pod().req(**{"example.com/gpu": "1"}).obj(),
     make_node().scalar("example.com/gpu", "2").obj(), [], None),
    ("pods on other nodes do not count", make_pod().req(cpu="1").obj(), make_node().cap(cpu="1").obj(),
     [make_pod("old").req(cpu="1").node("elsewhere").obj()], None),
    ("terminal pods do not count", make_pod().req(cpu="1").obj(), make_node().cap(cpu="1").obj(),
     [make_pod("old").req(cpu="1").node("node").phase("Succeeded").obj()], None),
]


@pytest.mark.parametrize("name,pod,node,pods,want", FIT_ROWS, ids=ids(FIT_ROWS))
def test_node_resources_fit_filter(name, pod, node, pods, want):
    assert run_filter(NodeResourcesFit(), pod, node, pods) == want


def test_limits_only_container_counts_its_limits():
    pod = make_pod().obj()
    pod["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "2"}}
    assert run_filter(NodeResourcesFit(), pod, make_node().cap(cpu="1").obj()) == Status(UU, "Insufficient cpu")


REQUEST_ROWS = [
    ("containers sum", make_pod().req(cpu="1").container(cpu="500m").obj(), {"cpu": 1500}),
    ("init max", make_pod().req(cpu="1").init_req(cpu="2").init_req(cpu="3").obj(), {"cpu": 3000}),
    ("sidecars", make_pod().req(cpu="1").init_req(sidecar=True, cpu="1").init_req(cpu="1500m").obj(),
     {"cpu": 2500}),
    ("overhead", make_pod().req(memory="1Gi").overhead(memory="128Mi").obj(), {"memory": 1207959552}),
]


@pytest.mark.parametrize("name,pod,want", REQUEST_ROWS, ids=ids(REQUEST_ROWS))
def test_pod_requests(name, pod, want):
    assert pod_requests(pod["spec"]) == want


def test_non_zero_requests_fill_only_missing_cpu_and_memory():
    pod = make_pod().req(cpu="0").obj()
    assert pod_requests(pod["spec"], non_zero=True) == {"cpu": 0, "memory": 200 * 1024 * 1024}


# --- NodeResourcesFit / BalancedAllocation: score -------------------------------------------------

def _sized(name, cpu, memory):
    return make_node(name).cap(cpu=cpu, memory=memory).obj()


TWO_CONTAINERS = make_pod().req(cpu="1", memory="2000").container(cpu="2", memory="3000").obj()
SCORE_ROWS = [
    # kube-scheduler least_allocated_test / most_allocated_test / balanced_allocation_test rows
    ("least allocated, differently sized nodes", NodeResourcesFit(), TWO_CONTAINERS,
     [_sized("n1", "4", "10000"), _sized("n2", "6", "10000")], [], [37, 50]),
    ("most allocated, differently sized nodes", NodeResourcesFit(strategy=MOST_ALLOCATED), TWO_CONTAINERS,
     [_sized("n1", "4", "10000"), _sized("n2", "6", "10000")], [], [62, 50]),
    ("balanced, differently sized nodes", BalancedAllocation(), TWO_CONTAINERS,
     [_sized("n1", "4", "10000"), _sized("n2", "6", "10000")], [], [87, 100]),
    ("least allocated counts existing pods", NodeResourcesFit(), make_pod().req(cpu="1", memory="1Gi").obj(),
     [_sized("n1", "4", "4Gi"), _sized("n2", "4", "4Gi")],
     [make_pod("old").req(cpu="2", memory="2Gi").node("n1").obj()], [25, 75]),
    ("least allocated uses non-zero defaults", NodeResourcesFit(), make_pod().obj(),
     [_sized("n1", "4", "32Gi")], [], [98]),
    ("least allocated with weights", NodeResourcesFit(resources=[("cpu", 3), ("memory", 1)]),
     make_pod().req(cpu="2", memory="1Gi").obj(), [_sized("n1", "4", "4Gi")], [], [(50 * 3 + 75) // 4]),
    ("balanced ignores non-zero defaults", BalancedAllocation(), make_pod().obj(),
     [_sized("n1", "4", "32Gi")], [], [100]),
    ("balanced caps fractions at 1", BalancedAllocation(), make_pod().req(cpu="8", memory="1Gi").obj(),
     [_sized("n1", "4", "4Gi")], [], [int((1 - (1 - 0.25) / 2) * 100)]),
]


@pytest.mark.parametrize("name,plugin,pod,nodes,pods,want", SCORE_ROWS, ids=ids(SCORE_ROWS))
def test_resource_scores(name, plugin, pod, nodes, pods, want):
    assert run_score(plugin, pod, nodes, pods) == want


# --- TaintToleration ---------------------------------------------------------------------------

TAINT_ROWS = [
    ("no taints", make_pod().obj(), make_node().obj(), None),
    ("untolerated NoSchedule", make_pod().obj(), make_node().taint("dedicated", "gpu").obj(),
     Status(UU, "node(s) had untolerated taint {dedicated: gpu}")),
    ("taint without value", make_pod().obj(),
     make_node().taint("node-role.kubernetes.io/control-plane").obj(),
     Status(UU, "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }")),
    ("untolerated NoExecute", make_pod().obj(), make_node().taint("k", "v", "NoExecute").obj(),
     Status(UU, "node(s) had untolerated taint {k: v}")),
    ("PreferNoSchedule does not filter", make_pod().obj(),
     make_node().taint("k", "v", "PreferNoSchedule").obj(), None),
    ("tolerated with Equal", make_pod().toleration("dedicated", "gpu", "NoSchedule").obj(),
     make_node().taint("dedicated", "gpu").obj(), None),
    ("Equal with another value", make_pod().toleration("dedicated", "cpu", "NoSchedule").obj(),
     make_node().taint("dedicated", "gpu").obj(), Status(UU, "node(s) had untolerated taint {dedicated: gpu}")),
    ("tolerated with Exists", make_pod().toleration("dedicated", operator="Exists").obj(),
     make_node().taint("dedicated", "gpu").obj(), None),
    ("toleration for another effect", make_pod().toleration("dedicated", "gpu", "NoExecute").obj(),
     make_node().taint("dedicated", "gpu").obj(), Status(UU, "node(s) had untolerated taint {dedicated: gpu}")),
    ("empty key with Exists tolerates everything", make_pod().toleration(operator="Exists").obj(),
     make_node().taint("a", "b").taint("c", "d", "NoExecute").obj(), None),
    ("first untolerated taint is named", make_pod().toleration("a", "b").obj(),
     make_node().taint("a", "b").taint("c", "d").obj(), Status(UU, "node(s) had untolerated taint {c: d}")),
]


@pytest.mark.parametrize("name,pod,node,want", TAINT_ROWS, ids=ids(TAINT_ROWS))
def test_taint_toleration_filter(name, pod, node, want):
    assert run_filter(TaintToleration(), pod, node) == want


def test_taint_toleration_score_prefers_fewer_intolerable_prefer_no_schedule_taints():
    nodes = [make_node("n1").obj(),
             make_node("n2").taint("a", "1", "PreferNoSchedule").obj(),
             make_node("n3").taint("a", "1", "PreferNoSchedule").taint("b", "2", "PreferNoSchedule").obj()]
    assert run_score(TaintToleration(), make_pod().obj(), nodes) == [100, 50, 0]
    tolerant = make_pod().toleration("b", "2", "PreferNoSchedule").obj()
    assert run_score(TaintToleration(), tolerant, nodes) == [100, 0, 0]
    assert run_score(TaintToleration(), make_pod().obj(), nodes[:1]) == [100]


# --- NodeAffinity --------------------------------------------------------------------------------

def expr(key, op, *values):
    e = {"key": key, "operator": op}
    if values:
        e["values"] = list(values)
    return e


MISMATCH = Status(UU, "node(s) didn't match Pod's node affinity/selector")
ZONE_A = make_node().label("zone", "a").label("gen", "5").obj()
AFFINITY_ROWS = [
    ("nothing required", make_pod().obj(), ZONE_A, None),
    ("nodeSelector matches", make_pod().node_selector({"zone": "a"}).obj(), ZONE_A, None),
    ("nodeSelector mismatch", make_pod().node_selector({"zone": "b"}).obj(), ZONE_A, MISMATCH),
    ("nodeSelector key missing", make_pod().node_selector({"disk": "ssd"}).obj(), ZONE_A, MISMATCH),
    ("In", make_pod().node_affinity([expr("zone", "In", "a", "b")]).obj(), ZONE_A, None),
    ("In mismatch", make_pod().node_affinity([expr("zone", "In", "b")]).obj(), ZONE_A, MISMATCH),
    ("NotIn", make_pod().node_affinity([expr("zone", "NotIn", "a")]).obj(), ZONE_A, MISMATCH),
    ("NotIn matches a node without the key",
     make_pod().node_affinity([expr("disk", "NotIn", "hdd")]).obj(), ZONE_A, None),
    ("Exists", make_pod().node_affinity([expr("zone", "Exists")]).obj(), ZONE_A, None),
    ("Exists mismatch", make_pod().node_affinity([expr("disk", "Exists")]).obj(), ZONE_A, MISMATCH),
    ("DoesNotExist", make_pod().node_affinity([expr("disk", "DoesNotExist")]).obj(), ZONE_A, None),
    ("DoesNotExist mismatch", make_pod().node_affinity([expr("zone", "DoesNotExist")]).obj(), ZONE_A, MISMATCH),
    ("Gt", make_pod().node_affinity([expr("gen", "Gt", "4")]).obj(), ZONE_A, None),
    ("Gt equal fails", make_pod().node_affinity([expr("gen", "Gt", "5")]).obj(), ZONE_A, MISMATCH),
    ("Lt", make_pod().node_affinity([expr("gen", "Lt", "6")]).obj(), ZONE_A, None),
    ("Lt on a non-integer label fails", make_pod().node_affinity([expr("zone", "Lt", "6")]).obj(),
     ZONE_A, MISMATCH),
    ("expressions in a term are ANDed",
     make_pod().node_affinity([expr("zone", "In", "a"), expr("gen", "Gt", "7")]).obj(), ZONE_A, MISMATCH),
    ("terms are ORed",
     make_pod().node_affinity([expr("zone", "In", "b")], [expr("gen", "Lt", "7")]).obj(), ZONE_A, None),
    ("a term that does not parse matches nothing",
     make_pod().node_affinity([expr("zone", "Bogus", "a")]).obj(), ZONE_A, MISMATCH),
    ("matchFields metadata.name",
     make_pod().node_affinity(fields=[expr("metadata.name", "In", "node")]).obj(), ZONE_A, None),
    ("matchFields metadata.name mismatch",
     make_pod().node_affinity(fields=[expr("metadata.name", "In", "other")]).obj(), ZONE_A, MISMATCH),
    ("nodeSelector and affinity must both match",
     make_pod().node_selector({"zone": "a"}).node_affinity([expr("gen", "In", "4")]).obj(), ZONE_A, MISMATCH),
]


@pytest.mark.parametrize("name,pod,node,want", AFFINITY_ROWS, ids=ids(AFFINITY_ROWS))
def test_node_affinity_filter(name, pod, node, want):
    assert run_filter(NodeAffinity(), pod, node) == want


def test_empty_required_terms_match_nothing():
    pod = make_pod().obj()
    pod["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": []}}}
    assert run_filter(NodeAffinity(), pod, ZONE_A) == MISMATCH


def test_node_affinity_preferred_score():
    nodes = [make_node("n1").label("zone", "a").obj(), make_node("n2").label("zone", "b").obj(),
             make_node("n3").obj()]
    pod = make_pod().preferred(2, expr("zone", "In", "a")).preferred(5, expr("zone", "In", "b")).obj()
    assert run_score(NodeAffinity(), pod, nodes) == [40, 100, 0]
    assert run_score(NodeAffinity(), pod, nodes, normalize=False) == [2, 5, 0]
    assert run_score(NodeAffinity(), make_pod().obj(), nodes) is None  # skipped


# --- NodeUnschedulable, NodeName, NodeReady --------------------------------------------------------

SIMPLE_ROWS = [
    ("schedulable", NodeUnschedulable(), make_pod().obj(), make_node().obj(), None),
    ("cordoned", NodeUnschedulable(), make_pod().obj(), make_node().unschedulable().obj(),
     Status(UU, "node(s) were unschedulable")),
    ("cordoned but tolerated", NodeUnschedulable(),
     make_pod().toleration("node.kubernetes.io/unschedulable", operator="Exists", effect="NoSchedule").obj(),
     make_node().unschedulable().obj(), None),
    ("no node name", NodeName(), make_pod().obj(), make_node().obj(), None),
    ("node name matches", NodeName(), make_pod().node("node").obj(), make_node().obj(), None),
    ("node name differs", NodeName(), make_pod().node("other").obj(), make_node().obj(),
     Status(UU, "node(s) didn't match the requested node name")),
    ("ready", NodeReady(), make_pod().obj(), make_node().obj(), None),
    ("not ready", NodeReady(), make_pod().obj(), make_node().ready("False").obj(),
     Status(UU, "node(s) were not ready")),
    ("ready unknown", NodeReady(), make_pod().obj(), make_node().ready("Unknown").obj(),
     Status(UU, "node(s) were not ready")),
    ("no Ready condition", NodeReady(), make_pod().obj(), make_node().ready(None).obj(),
     Status(UU, "node(s) were not ready")),
    ("not ready, tolerated", NodeReady(),
     make_pod().toleration("node.kubernetes.io/not-ready", operator="Exists", effect="NoSchedule").obj(),
     make_node().ready("False").obj(), None),
    ("unknown needs the unreachable toleration", NodeReady(),
     make_pod().toleration("node.kubernetes.io/not-ready", operator="Exists", effect="NoSchedule").obj(),
     make_node().ready("Unknown").obj(), Status(UU, "node(s) were not ready")),
    ("NoExecute toleration does not tolerate NoSchedule", NodeReady(),
     make_pod().toleration("node.kubernetes.io/not-ready", operator="Exists", effect="NoExecute").obj(),
     make_node().ready("False").obj(), Status(UU, "node(s) were not ready")),
]


@pytest.mark.parametrize("name,plugin,pod,node,want", SIMPLE_ROWS, ids=ids(SIMPLE_ROWS))
def test_simple_filters(name, plugin, pod, node, want):
    assert run_filter(plugin, pod, node) == want


# --- NodePorts ------------------------------------------------------------------------------------

PORTS_BUSY = Status(U, "node(s) didn't have free ports for the requested pod ports")


def on_node(port, protocol="", ip=""):
    return [make_pod("old").host_port(port, protocol, ip).node("node").obj()]


PORT_ROWS = [
    ("no host ports", make_pod().obj(), on_node(8080), None),
    ("free port", make_pod().host_port(8081).obj(), on_node(8080), None),
    ("same port and protocol", make_pod().host_port(8080).obj(), on_node(8080), PORTS_BUSY),
    ("same port, other protocol", make_pod().host_port(8080, "UDP").obj(), on_node(8080), None),
    ("different specific IPs", make_pod().host_port(8080, ip="10.0.0.2").obj(),
     on_node(8080, ip="10.0.0.1"), None),
    ("0.0.0.0 conflicts with a specific IP", make_pod().host_port(8080).obj(),
     on_node(8080, ip="10.0.0.1"), PORTS_BUSY),
    ("a specific IP conflicts with 0.0.0.0", make_pod().host_port(8080, ip="10.0.0.2").obj(),
     on_node(8080), PORTS_BUSY),
]


@pytest.mark.parametrize("name,pod,pods,want", PORT_ROWS, ids=ids(PORT_ROWS))
def test_node_ports_filter(name, pod, pods, want):
    assert run_filter(NodePorts(), pod, make_node().obj(), pods) == want


# --- ImageLocality ------------------------------------------------------------------------------------

MB = 1024 * 1024


def test_image_locality_score():
    nodes = [make_node("n1").image(250 * MB, "gcr.io/250:latest").obj(),
             make_node("n2").image(250 * MB, "gcr.io/250:latest").image(300 * MB, "gcr.io/300:v1").obj(),
             make_node("n3").obj()]
    pod = make_pod().image("gcr.io/250").obj()  # normalized to gcr.io/250:latest
    spread = int(250 * MB * 2 / 3)
    want = calculate_priority(spread, 1)
    assert want == 14
    assert run_score(ImageLocality(), pod, nodes) == [14, 14, 0]
    two = make_pod().image("gcr.io/250").container("gcr.io/300:v1").obj()
    assert run_score(ImageLocality(), two, nodes) == [
        calculate_priority(spread, 2), calculate_priority(spread + int(300 * MB / 3), 2), 0]
    assert run_score(ImageLocality(), make_pod().image("nginx").obj(), nodes) == [0, 0, 0]


def test_image_locality_small_images_score_zero():
    assert calculate_priority(0, 1) == 0
    assert calculate_priority(22 * MB, 1) == 0
    assert calculate_priority(5000 * MB, 1) == 100


# --- PodTopologySpread (system defaults, by owner) -------------------------------------------------

def replicas(owner, *nodes):
    return [make_pod(f"r{i}").owner(owner).node(n).obj() for i, n in enumerate(nodes)]


def test_topology_spread_hostname_only():
    nodes = [make_node("n1").obj(), make_node("n2").obj(), make_node("n3").obj()]
    pod = make_pod().owner("rs1").obj()
    # log(3+2) per matching pod, +2 for maxSkew 3: n1 5.2 -> 5, n2 2, n3 3.6 -> 4; normalized
    # 100 * (max + min - s) / max.
    assert run_score(PodTopologySpread(), pod, nodes, replicas("rs1", "n1", "n1", "n3")) == [40, 100, 60]


def test_topology_spread_zones_and_hosts():
    nodes = [make_node("n1").label("topology.kubernetes.io/zone", "a").obj(),
             make_node("n2").label("topology.kubernetes.io/zone", "a").obj(),
             make_node("n3").label("topology.kubernetes.io/zone", "b").obj()]
    pod = make_pod().owner("rs1").obj()
    assert run_score(PodTopologySpread(), pod, nodes, replicas("rs1", "n1", "n1", "n3")) == [75, 100, 100]


def test_topology_spread_ignores_other_owners_terminating_pods_and_unowned_pods():
    nodes = [make_node("n1").obj(), make_node("n2").obj()]
    others = replicas("rs2", "n1", "n1") + [make_pod("t").owner("rs1").node("n2").terminating().obj()]
    assert run_score(PodTopologySpread(), make_pod().owner("rs1").obj(), nodes, others) == [100, 100]
    assert run_score(PodTopologySpread(), make_pod().obj(), nodes, others) is None


def test_topology_spread_counts_only_nodes_matching_required_affinity():
    nodes = [make_node("n1").label("topology.kubernetes.io/zone", "a").label("pool", "x").obj(),
             make_node("n2").label("topology.kubernetes.io/zone", "a").obj()]
    pod = make_pod().owner("rs1").node_selector({"pool": "x"}).obj()
    # the replica on n2 is outside the pod's node selector: zone a counts 0, n2 host counts 1
    assert run_score(PodTopologySpread(), pod, nodes[:1], replicas("rs1", "n2")) == [100]
