"""The kubelet's eviction manager with real signals: a real kubelet, real pods, a disk
that really fills and memory that is really taken.

- Disk: the kubelet's root dir is a 64 MiB tmpfs of the test's own, with
  `--eviction-hard nodefs.available<24Mi`. A pod writes 48 MiB into its emptyDir: the node
  reports DiskPressure (the kubelet's reason and message), the writer, the pod using
  most, is evicted (Failed, reason Evicted, the kubelet's message, a DisruptionTarget
  condition) while a quiet pod keeps running, a new pod is refused admission, and once the
  eviction has freed its emptyDir the condition clears after the 5 s pressure
  transition period.
- Memory: `--eviction-hard memory.available<X` with X 768 MiB below what the node has
  available when the kubelet starts; a pod takes 1.5 GiB and is the one evicted (not the
  quiet pod), the node reports MemoryPressure, then clears.

Pure parts (flag parsing, ranking, admission) have table tests below. Takes about 50 s:
two kubelets of their own, each up for a few seconds; the tmpfs is unmounted and every
pod removed even on failure.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from fractions import Fraction

import pytest

from kubelet import eviction
from kubelet.eviction import PodUsage, Threshold, parse_thresholds, rank
from kubelet.runtime.linux import cgroups
from kubelet.runtime.linux.runtime import _usage
from tests.procs import wait_for
from tests.test_kubelet_e2e import (KubeletNode, api, container, create, get_pod, make_pod,  # noqa: F401
                                    ns, phase, running, wait_pod)
from tests.test_kubelet_e2e import http  # noqa: F401

root = pytest.mark.skipif(os.geteuid() != 0, reason="runs real pods and mounts a tmpfs: needs root")


# -- the pure parts ------------------------------------------------------------------------

@pytest.mark.parametrize("hard,soft,grace,reclaim,want", [
    (None, "", "", "", {"memory.available", "nodefs.available", "imagefs.available", "nodefs.inodesFree"}),
    ("nodefs.available<1Gi", "", "", "", {"nodefs.available"}),
    ("", "memory.available<1Gi", "memory.available=1m30s", "memory.available=100Mi", {"memory.available"}),
])
def test_parses_thresholds(hard, soft, grace, reclaim, want):
    got = parse_thresholds(hard, soft, grace, reclaim)
    assert {t.signal for t in got} == want
    if soft:
        assert got[0].grace_period == 90 and got[0].reclaim(0) == 100 * 1024 * 1024


@pytest.mark.parametrize("hard,soft,grace,error", [
    ("memory.free<1Gi", "", "", "unsupported eviction signal"),
    ("memory.available>1Gi", "", "", "expected SIGNAL<VALUE"),
    ("nodefs.available<150%", "", "", "percentage"),
    ("nodefs.available<-1", "", "", "must be positive"),
    ("nodefs.available<1Gi,nodefs.available<2Gi", "", "", "duplicate"),
    ("", "memory.available<1Gi", "", "has no grace period"),
    ("", "memory.available<1Gi", "memory.available=soon", "--eviction-soft-grace-period"),
])
def test_refuses_bad_thresholds(hard, soft, grace, error):
    with pytest.raises(ValueError, match=error):
        parse_thresholds(hard, soft, grace)


def pod(name: str, *, memory: str | None = None, priority: int = 0) -> dict:
    res = {"requests": {"memory": memory}} if memory else {}
    return {"metadata": {"name": name, "uid": name},
            "spec": {"priority": priority, "containers": [{"name": "c", "resources": res}]}}


def test_ranks_as_kubernetes():
    mi = 1024 * 1024
    pods = [PodUsage(pod("within-requests", memory="500Mi"), memory=400 * mi),
            PodUsage(pod("over-high-priority", memory="100Mi", priority=10), memory=900 * mi),
            PodUsage(pod("over-a-little"), memory=50 * mi),
            PodUsage(pod("over-a-lot"), memory=300 * mi)]
    assert [p.pod["metadata"]["name"] for p in rank(pods, eviction.MEMORY_AVAILABLE)] == \
        ["over-a-lot", "over-a-little", "over-high-priority", "within-requests"]


def test_admission_under_pressure():
    m = eviction.Manager([Threshold("memory.available", 1)], "/", list, None)  # type: ignore[arg-type]
    best_effort, burstable = pod("be"), pod("bu", memory="1Mi")
    assert m.admit(best_effort)[0]
    m.conditions = {eviction.MEMORY_PRESSURE}
    assert m.admit(burstable)[0]
    assert m.admit(best_effort) == (False, "Evicted", "The node had condition: [MemoryPressure]. ")
    tolerant = pod("tol")
    tolerant["spec"]["tolerations"] = [{"key": "node.kubernetes.io/memory-pressure", "operator": "Exists",
                                        "effect": "NoSchedule"}]
    assert m.admit(tolerant)[0]
    m.conditions = {eviction.DISK_PRESSURE}
    assert m.admit(burstable) == (False, "Evicted", "The node had condition: [DiskPressure]. ")


def test_threshold_value_of_a_percentage():
    assert Threshold("nodefs.available", percentage=Fraction(1, 10)).value(1000) == 100


def test_soft_threshold_waits_for_its_grace_then_evicts_one_pod_per_pass():
    """The manager's clockwork, signals given by hand: soft grace, minimum reclaim, one
    eviction per pass, and the pressure transition period."""
    from client.clock import FakeClock
    mi = 1024 * 1024
    clock, available, evicted_pods = FakeClock(), [1000 * mi], []
    pods = [PodUsage(pod("small"), memory=10 * mi), PodUsage(pod("big"), memory=500 * mi)]

    async def evict(ev):
        evicted_pods.append(ev.pod["metadata"]["name"])

    m = eviction.Manager(parse_thresholds("", "memory.available<200Mi", "memory.available=30s",
                                          "memory.available=100Mi"),
                         "/", lambda: [p for p in pods if p.pod["metadata"]["name"] not in evicted_pods],
                         evict, clock=clock, pressure_transition_period=60,
                         signals=lambda: {"memory.available": eviction.Observation(available[0], 4096 * mi)})

    def sync():
        return asyncio.run(m.synchronize())

    assert sync() is None and m.conditions == set()
    available[0] = 150 * mi
    assert sync() is None and m.conditions == {"MemoryPressure"}  # met, grace not over
    clock.step(30)
    ev = sync()
    assert ev is not None and evicted_pods == ["big"] and ev.grace_period == 0
    assert ev.message.startswith("The node was low on resource: memory. Threshold quantity: 200Mi, "
                                 "available: 150Mi. Container c was using 500Mi, request is 0")
    available[0] = 250 * mi  # above the threshold, not above threshold + minimum reclaim
    clock.step(10)
    assert sync() is not None and evicted_pods == ["big", "small"]
    available[0] = 350 * mi
    clock.step(10)
    assert sync() is None and m.conditions == {"MemoryPressure"}  # the transition period
    clock.step(49)  # 59 s since the threshold was last met
    sync()
    assert m.conditions == {"MemoryPressure"}
    clock.step(2)
    sync()
    assert m.conditions == set()
    assert [c[:3] for c in m.node_conditions()] == [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure")]


# -- a real kubelet ----------------------------------------------------------------------------

def node_condition(http, node: KubeletNode, type_: str) -> dict:
    n = http.get(f"/api/v1/nodes/{node.name}").json()
    return next((c for c in (n.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def wait_condition(http, node: KubeletNode, type_: str, status: str) -> dict:
    return wait_for(lambda: (c := node_condition(http, node, type_)).get("status") == status and c,
                    timeout=60, what=f"node {type_}={status}")


@pytest.fixture
def tmpfs_node(api, tmp_path):  # noqa: F811
    mnt = tmp_path / "root"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    n = KubeletNode(api, tmp_path, "--node-status-update-frequency", "1",
                    "--eviction-hard", "nodefs.available<24Mi",
                    "--eviction-pressure-transition-period", "5s")
    try:
        yield n
    finally:
        try:
            n.cleanup()
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def evicted(p: dict) -> bool:
    return phase(p) == "Failed" and (p.get("status") or {}).get("reason") == "Evicted"


@root
def test_disk_fills_pressure_evicts_the_pod_using_most_then_clears(http, ns, tmpfs_node):  # noqa: F811
    node = tmpfs_node.start()
    assert node_condition(http, node, "DiskPressure")["status"] == "False"
    create(http, ns, make_pod("quiet", node, container("c", ["sleep", "infinity"])))
    wait_pod(http, ns, "quiet", running("c"), "running")
    create(http, ns, make_pod("writer", node, container(
        "c", ["sh", "-c", "head -c 50331648 /dev/zero > /data/fill; sleep infinity"],
        volumeMounts=[{"name": "data", "mountPath": "/data"}]),
        volumes=[{"name": "data", "emptyDir": {}}]))

    cond = wait_condition(http, node, "DiskPressure", "True")
    assert (cond["reason"], cond["message"]) == ("KubeletHasDiskPressure", "kubelet has disk pressure")
    # Under disk pressure no new pod is admitted (the condition holds for the transition
    # period after the last time it was seen, so this pod is looked at within it).
    create(http, ns, make_pod("late", node, container("c", ["sleep", "infinity"])))
    p = wait_pod(http, ns, "writer", evicted, "evicted")
    msg = p["status"]["message"]
    assert msg.startswith("The node was low on resource: ephemeral-storage. Threshold quantity: 24Mi, available: "), msg
    assert any(c["type"] == "DisruptionTarget" and c["reason"] == "TerminationByKubelet"
               for c in p["status"]["conditions"])
    late = wait_pod(http, ns, "late", lambda p: phase(p) == "Failed", "refused")
    assert (late["status"]["reason"], late["status"]["message"]) == \
        ("Evicted", "The node had condition: [DiskPressure]. ")

    # The eviction freed the writer's emptyDir, as Kubernetes' does: the condition clears
    # after the transition period, and the quiet pod was never touched.
    cond = wait_condition(http, node, "DiskPressure", "False")
    assert cond["reason"] == "KubeletHasNoDiskPressure"
    quiet = get_pod(http, ns, "quiet")
    assert phase(quiet) == "Running" and quiet["status"]["containerStatuses"][0]["restartCount"] == 0


def memory_available() -> int:
    u = _usage(cgroups.root())
    return eviction.observe("/", None, u.working_set if u else None)[eviction.MEMORY_AVAILABLE].available


@pytest.fixture
def memory_node(api, tmp_path):  # noqa: F811
    # A wide margin: other processes on the machine move the figure too.
    threshold = (memory_available() - 768 * 1024 * 1024) // (1024 * 1024)
    n = KubeletNode(api, tmp_path, "--node-status-update-frequency", "1",
                    "--eviction-hard", f"memory.available<{threshold}Mi",
                    "--eviction-pressure-transition-period", "2s")
    try:
        yield n
    finally:
        n.cleanup()


@root
def test_memory_pressure_evicts_the_pod_using_most_then_clears(http, ns, memory_node):  # noqa: F811
    node = memory_node.start()
    create(http, ns, make_pod("quiet", node, container("c", ["sleep", "infinity"])))
    wait_pod(http, ns, "quiet", running("c"), "running")
    hog = "import time; b = b'x' * (1536 << 20); time.sleep(600)"
    create(http, ns, make_pod("hog", node, container("c", ["python3", "-c", hog])))

    cond = wait_condition(http, node, "MemoryPressure", "True")
    assert (cond["reason"], cond["message"]) == ("KubeletHasInsufficientMemory",
                                                 "kubelet has insufficient memory available")
    p = wait_pod(http, ns, "hog", evicted, "evicted", timeout=60)
    assert p["status"]["message"].startswith("The node was low on resource: memory. Threshold quantity: ")
    assert "Container c was using" in p["status"]["message"]
    cond = wait_condition(http, node, "MemoryPressure", "False")
    assert cond["reason"] == "KubeletHasSufficientMemory"
    assert phase(get_pod(http, ns, "quiet")) == "Running"


def test_kubelet_refuses_a_bad_threshold_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "kubelet", "--kubeconfig", str(tmp_path / "none"),
                        "--eviction-soft", "memory.available<1Gi"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: --eviction-soft: threshold memory.available has no grace period "
                                "(--eviction-soft-grace-period)")
