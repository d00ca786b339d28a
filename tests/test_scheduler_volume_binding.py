"""VolumeBinding as a table: (name, claims and volumes in the cache, pod, node, want),
calling pre_filter and filter with no scheduler running; and its Bind step, which names
the node in the claim and waits for the claim to be bound."""
from __future__ import annotations

import asyncio

import pytest

from client.informer import Indexer
from scheduler.cache import Cache
from scheduler.framework import Code, CycleState
from scheduler.plugins.volume_binding import (ERR_BIND_CONFLICT, ERR_NODE_CONFLICT, ERR_PV_NOT_EXIST,
                                              ERR_UNBOUND_IMMEDIATE, VolumeBinding)
from scheduler.testing import make_node, make_pod
from scheduler.types import PodInfo


class Informed:
    def __init__(self, objs: list[dict]):
        self.store = Indexer()
        for o in objs:
            md = o["metadata"]
            self.store.set(f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"], o)


class Handle:
    def __init__(self, claims=(), volumes=(), classes=()):
        self.pvcs, self.pvs = Informed(list(claims)), Informed(list(volumes))
        self.storageclasses = Informed(list(classes))
        self.annotated: list[tuple[str, str, dict]] = []

    async def annotate_claim(self, namespace: str, name: str, annotations: dict) -> None:
        self.annotated.append((namespace, name, annotations))
        claim = self.pvcs.store.get(f"{namespace}/{name}")
        claim["metadata"].setdefault("annotations", {}).update(annotations)


def claim(name: str, klass: str = "local", volume: str = "", **ann) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "annotations": dict(ann)},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": klass, **({"volumeName": volume} if volume else {})},
            "status": {"phase": "Bound" if volume else "Pending"}}


def volume(name: str, node: str | None = None, klass: str = "local", size: str = "1Gi") -> dict:
    spec: dict = {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": klass,
                  "hostPath": {"path": "/x"}}
    if node:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": "Available"}}


def sc(name: str, mode: str = "WaitForFirstConsumer", provisioner: str = "minik8s.io/local-path") -> dict:
    return {"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode}


def with_claims(*names: str) -> dict:
    pod = make_pod("p").obj()
    pod["spec"]["volumes"] = [{"name": n, "persistentVolumeClaim": {"claimName": n}} for n in names]
    return pod


def run(handle: Handle, pod: dict, node: dict):
    plugin = VolumeBinding(handle, bind_timeout=5)
    state = CycleState(Cache())
    info = PodInfo(pod)
    s = plugin.pre_filter(state, info)
    if s is not None:
        return s.code, s.message
    cache = Cache()
    cache.add_node(node)
    s = plugin.filter(state, info, cache.get(node["metadata"]["name"]))
    return (Code.SUCCESS, "") if s is None else (s.code, s.message)


def node(name: str) -> dict:
    return make_node(name).label("kubernetes.io/hostname", name).obj()


CASES = [
    ("no claims: skipped", Handle(), make_pod("p").obj(), node("n1"), (Code.SKIP, "")),
    ("missing claim", Handle(), with_claims("data"), node("n1"),
     (Code.UNSCHEDULABLE_AND_UNRESOLVABLE, 'persistentvolumeclaim "data" not found')),
    ("unbound immediate claim", Handle([claim("data")], classes=[sc("local", "Immediate")]), with_claims("data"),
     node("n1"), (Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_UNBOUND_IMMEDIATE)),
    ("bound, volume on this node", Handle([claim("data", volume="pv1")], [volume("pv1", "n1")]),
     with_claims("data"), node("n1"), (Code.SUCCESS, "")),
    ("bound, volume on another node", Handle([claim("data", volume="pv1")], [volume("pv1", "n2")]),
     with_claims("data"), node("n1"), (Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_NODE_CONFLICT)),
    ("bound to a volume that is gone", Handle([claim("data", volume="pv1")]), with_claims("data"), node("n1"),
     (Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_PV_NOT_EXIST)),
    ("delayed, provisioner can make one", Handle([claim("data")], classes=[sc("local")]), with_claims("data"),
     node("n1"), (Code.SUCCESS, "")),
    ("delayed, static volume only elsewhere", Handle([claim("data")], [volume("pv1", "n2")],
                                                     [sc("local", provisioner="kubernetes.io/no-provisioner")]),
     with_claims("data"), node("n1"), (Code.UNSCHEDULABLE, ERR_BIND_CONFLICT)),
    ("delayed, static volume here", Handle([claim("data")], [volume("pv1", "n1")],
                                           [sc("local", provisioner="kubernetes.io/no-provisioner")]),
     with_claims("data"), node("n1"), (Code.SUCCESS, "")),
    ("delayed, another node already selected",
     Handle([claim("data", **{"volume.kubernetes.io/selected-node": "n2"})], classes=[sc("local")]),
     with_claims("data"), node("n1"), (Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_NODE_CONFLICT)),
]


@pytest.mark.parametrize("name,handle,pod,node,want", CASES, ids=[c[0] for c in CASES])
def test_filter(name, handle, pod, node, want):
    assert run(handle, pod, node) == want


async def test_bind_names_the_node_and_waits_for_the_claim_to_be_bound():
    handle = Handle([claim("data")], classes=[sc("local")])
    plugin = VolumeBinding(handle, bind_timeout=10)
    state = CycleState(Cache())
    pod = PodInfo(with_claims("data"))
    assert plugin.pre_filter(state, pod) is None
    task = asyncio.create_task(plugin.bind(state, pod, "n1"))
    async with asyncio.timeout(5):
        while not handle.annotated:
            await asyncio.sleep(0.01)
    assert handle.annotated == [("default", "data", {"volume.kubernetes.io/selected-node": "n1"})]
    assert not task.done()  # the claim is not bound yet
    handle.pvcs.store.get("default/data")["status"]["phase"] = "Bound"  # the binder's work
    status = await asyncio.wait_for(task, 5)
    assert status is not None and status.code == Code.SKIP  # DefaultBinder binds the pod next
