"""Node IPAM: unit tests on seeded caches, then pod CIDRs for nodes of a real API server."""
import pytest

from client.rest import Client
from controller_manager.controllers.nodeipam import CIDRSet, NodeIPAMController, NodeIPAMOptions
from controller_manager.testing import RecordingClient, Running, eventually
from machinery import errors


def node(name, cidr=None):
    n = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}
    if cidr:
        n["spec"]["podCIDR"] = cidr
        n["spec"]["podCIDRs"] = [cidr]
    return n


def controller(*objs, **options):
    client = RecordingClient()
    ctrl = NodeIPAMController(client, client, options=NodeIPAMOptions(**options))
    client.seed(*objs)
    return client, ctrl


def assigned(client):
    return {a[2]: a[3]["spec"]["podCIDR"] for a in client.actions if a[0] == "patch"}


async def test_assigns_the_first_free_block_to_a_node_without_one():
    client, ctrl = controller(node("n1"))
    await ctrl.reconcile("n1")
    assert client.verbs() == [("patch", "nodes", "n1")]
    assert client.actions[0][3]["spec"] == {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
    assert "resourceVersion" in client.actions[0][3]["metadata"]  # never overwrite a concurrent writer


async def test_does_nothing_for_a_node_that_has_a_cidr():
    client, ctrl = controller(node("n1", "10.244.7.0/24"))
    await ctrl.reconcile("n1")
    assert client.actions == []


async def test_cidrs_in_use_at_startup_are_never_handed_out():
    client, ctrl = controller(node("new"), node("old", "10.244.0.0/24"), node("older", "10.244.1.0/24"))
    await ctrl.reconcile("new")  # reconciled before the nodes that hold CIDRs
    assert assigned(client) == {"new": "10.244.2.0/24"}


async def test_no_two_nodes_get_the_same_block():
    client, ctrl = controller(*[node(f"n{i}") for i in range(5)])
    for i in range(5):
        await ctrl.reconcile(f"n{i}")
    cidrs = list(assigned(client).values())
    assert len(set(cidrs)) == 5


async def test_a_node_looked_at_again_before_its_patch_is_seen_gets_the_same_block():
    client, ctrl = controller(node("n1"))
    await ctrl.reconcile("n1")
    client.seed(node("n1"))  # the cache still shows it without a CIDR
    await ctrl.reconcile("n1")
    assert [a[3]["spec"]["podCIDR"] for a in client.actions] == ["10.244.0.0/24", "10.244.0.0/24"]


async def test_deleted_node_releases_its_block():
    client, ctrl = controller(node("a"), cluster_cidr="10.0.0.0/23", node_cidr_mask_size=24)
    await ctrl.reconcile("a")
    await ctrl.reconcile("b")  # not there: nothing
    client.seed(node("b"))
    await ctrl.reconcile("b")
    client.seed(node("c"))
    with pytest.raises(RuntimeError):
        await ctrl.reconcile("c")  # both blocks taken
    await client.delete("nodes", "a")
    await ctrl.reconcile("a")
    await ctrl.reconcile("c")
    assert assigned(client)["c"] == "10.0.0.0/24"


async def test_exhaustion_is_a_warning_and_a_retry():
    class Recorder:
        def __init__(self):
            self.events = []

        def event(self, obj, type_, reason, message):
            self.events.append((obj["metadata"]["name"], type_, reason))
    recorder = Recorder()
    client = RecordingClient()
    ctrl = NodeIPAMController(client, client, recorder=recorder, options=NodeIPAMOptions(
        cluster_cidr="10.0.0.0/24", node_cidr_mask_size=24))
    client.seed(node("a"), node("b"))
    await ctrl.reconcile("a")
    with pytest.raises(RuntimeError):
        await ctrl.reconcile("b")
    assert recorder.events == [("b", "Warning", "CIDRNotAvailable")]


async def test_failed_patch_gives_the_block_back():
    client, ctrl = controller(node("a"), node("b"), cluster_cidr="10.0.0.0/24", node_cidr_mask_size=24)
    client.fail[("patch", "nodes")] = errors.InternalError("boom")
    with pytest.raises(errors.InternalError):
        await ctrl.reconcile("a")
    del client.fail[("patch", "nodes")]
    await ctrl.reconcile("b")
    assert assigned(client) == {"b": "10.0.0.0/24"}


async def test_cidr_outside_the_cluster_cidr_is_left_alone():
    client, ctrl = controller(node("odd", "192.168.0.0/24"), node("n1"))
    await ctrl.reconcile("odd")
    await ctrl.reconcile("n1")
    assert assigned(client) == {"n1": "10.244.0.0/24"}


async def test_does_nothing_unless_allocating_node_cidrs():
    client, ctrl = controller(node("n1"), allocate_node_cidrs=False, cluster_cidr="")
    await ctrl.reconcile("n1")
    assert client.actions == []
    assert ctrl.informers == []


async def test_empty_cluster_cidr_means_the_default():
    client, ctrl = controller(node("n1"), cluster_cidr="")
    await ctrl.reconcile("n1")
    assert assigned(client) == {"n1": "10.244.0.0/24"}


def test_cidr_set_covers_larger_blocks_and_ipv6():
    s = CIDRSet("10.244.0.0/16", 24)
    assert list(s.indices("10.244.4.0/23")) == [4, 5]
    assert s.indices("10.245.0.0/24") is None
    v6 = CIDRSet("fd00::/48", 64)
    assert v6.cidr(v6.allocate("n")) == "fd00::/64"
    with pytest.raises(ValueError):
        CIDRSet("10.0.0.0/16", 8)


# -- against a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(private_apiserver):
    return private_apiserver


async def test_nodes_get_distinct_pod_cidrs_and_keep_existing_ones(cluster):
    async with Client(cluster.connection()) as client:
        await client.create(node("pre", "10.244.0.0/24"))
        async with Running(client, (NodeIPAMController, {})):
            for i in range(4):
                await client.create(node(f"n{i}"))

            async def cidrs():
                nodes = (await client.list("nodes"))["items"]
                got = {n["metadata"]["name"]: (n.get("spec") or {}).get("podCIDR") for n in nodes}
                return got if all(got.values()) and len(got) == 5 else None
            got = await eventually(cidrs, what="every node has a pod CIDR")
        assert got["pre"] == "10.244.0.0/24"
        assert len(set(got.values())) == 5
        n0 = await client.get("nodes", "n0")
        assert n0["spec"]["podCIDRs"] == [n0["spec"]["podCIDR"]]
