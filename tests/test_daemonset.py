"""The DaemonSet controller end to end: a real API server, `minik8s controller-manager`
as a child process (daemonset, garbagecollector), Node objects the tests create (with
labels, taints, unschedulable), and the tests playing each node's kubelet: they report
the daemon pods Running and Ready through pods/status. Each test's nodes carry a label
of its own, which its DaemonSets select, so tests sharing the server never share nodes.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid

import pytest

from client.informer import Informer
from client.rest import Client
from controller_manager.controllers.daemonset import (
    DAEMON_TOLERATIONS, GENERATION_LABEL, HASH_LABEL, add_daemon_tolerations, should_run, target_node)
from machinery import times
from tests.procs import Component, eventually, free_port

TIMEOUT = 30.0  # catches hangs only
KUBECTL = shutil.which("kubectl")


def start_cm(kubeconfig: str) -> Component:
    return Component("controller-manager", "--kubeconfig", kubeconfig,
                     "--controllers", "daemonset,garbagecollector",
                     "--secure-port", str(free_port()),
                     "--leader-elect-resource-name", f"cm-{uuid.uuid4().hex[:8]}",
                     "--leader-elect-retry-period", "0.2s").start()


@pytest.fixture
def cm_kubeconfig(apiserver, tmp_path):
    """The controller manager's own credential, so its RBAC roles are what is tested."""
    return apiserver.write_kubeconfig(tmp_path / "cm-kubeconfig", "controller-manager")


@pytest.fixture
def cm(cm_kubeconfig):
    proc = start_cm(cm_kubeconfig)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def client(apiserver, ns):
    async with Client(apiserver.connection()) as c:
        yield c


class Cluster:
    """One test's nodes (labelled `ds-test=<ns>`) and the kubelets' side of its pods:
    every daemon pod not being deleted or finished is reported Running and Ready, unless `hold`
    names its revision hash (a rollout that stalls)."""

    def __init__(self, client: Client, ns: str):
        self.client, self.ns = client, ns
        self.nodes: list[str] = []
        self.hold: set[str] = set()
        self.informer = Informer(client, "pods", namespace=ns)
        self.informer.add_handler(on_add=self._seen, on_update=lambda _, p: self._seen(p))
        self.samples: list[dict[str, list[dict]]] = []
        self.seen: set[str] = set()  # every pod uid ever seen
        self._tasks: set[asyncio.Task] = set()
        self._pending: set[str] = set()

    def _seen(self, pod: dict) -> None:
        self.samples.append(self.by_node())
        if pod["metadata"].get("deletionTimestamp") and pod["spec"].get("nodeName"):
            # A bound pod's kubelet confirms its deletion once its containers stopped.
            self._spawn(self._finish(pod["metadata"]["name"]))
            return
        if pod["metadata"].get("deletionTimestamp") or is_ready(pod):
            return
        if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            return  # a kubelet never brings a finished pod back: it would hide the failure
        self.seen.add(pod["metadata"]["uid"])
        if "*" in self.hold or (pod["metadata"].get("labels") or {}).get(HASH_LABEL) in self.hold:
            return
        name = pod["metadata"]["name"]
        if name not in self._pending:
            self._pending.add(name)
            self._spawn(self._ready(name))

    async def _ready(self, name: str) -> None:
        t = times.rfc3339(time.time())
        try:
            await self.client.patch("pods", name, namespace=self.ns, subresource="status", patch={
                "status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": t}]}})
        except Exception:  # noqa: BLE001 - gone meanwhile
            pass
        finally:
            self._pending.discard(name)

    def _spawn(self, coro) -> None:
        # The loop holds tasks weakly: keep each until it is done.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, name: str) -> None:
        try:
            await self.client.delete("pods", name, namespace=self.ns, grace_period_seconds=0)
        except Exception:  # noqa: BLE001 - gone already
            pass

    def release(self, hash_: str) -> None:
        self.hold.discard(hash_)
        for pod in self.informer.store.list():
            self._seen(pod)

    async def node(self, name: str, *, labels=None, taints=None, unschedulable=False,
                   selected=True) -> str:
        name = f"{name}-{self.ns}"
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                      **({"ds-test": self.ns} if selected else {}),
                                                      **(labels or {})}},
                "spec": {**({"taints": taints} if taints else {}),
                         **({"unschedulable": True} if unschedulable else {})},
                "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]}}
        await self.client.create(body)
        self.nodes.append(name)
        return name

    def pods(self) -> list[dict]:
        return self.informer.store.list()

    def by_node(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for p in self.informer.store.list():
            if not p["metadata"].get("deletionTimestamp"):
                out.setdefault(target_node(p), []).append(p)
        return out

    async def __aenter__(self) -> Cluster:
        self.task = self.informer.start()
        await self.informer.wait_for_sync(TIMEOUT)
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        for n in self.nodes:
            try:
                await self.client.delete("nodes", n)
            except Exception:  # noqa: BLE001
                pass


def is_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def daemonset(name: str, ns: str, *, image="busybox", strategy=None, **spec) -> dict:
    template = {"metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": {"ds-test": ns},
                         "containers": [{"name": "c", "image": image}]}}
    body = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": template, **spec}}
    if strategy:
        body["spec"]["updateStrategy"] = strategy
    return body


async def get_ds(client: Client, ns: str, name: str) -> dict:
    return await client.get("daemonsets", name, namespace=ns)


async def set_image(client: Client, ns: str, name: str, image: str) -> None:
    await client.patch("daemonsets", name, namespace=ns, patch_type="strategic",
                       patch={"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})


def image_of(pod: dict) -> str:
    return pod["spec"]["containers"][0]["image"]


def rolled_out(ds: dict, n: int) -> bool:
    st = ds.get("status") or {}
    return (st.get("observedGeneration") == ds["metadata"]["generation"] and st.get("desiredNumberScheduled") == n
            and st.get("updatedNumberScheduled") == n and st.get("numberAvailable") == n)


# -- pure rules ------------------------------------------------------------------------

def test_eligibility_follows_selector_affinity_and_taints():
    ds = daemonset("d", "x")
    ds["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}

    def node(labels, taints=()):
        return {"metadata": {"name": "n", "labels": {"ds-test": "x", **labels}}, "spec": {"taints": list(taints)}}
    assert should_run(ds, node({"zone": "a"})) == (True, True)
    assert should_run(ds, node({"zone": "b"})) == (False, False)
    assert should_run(ds, {"metadata": {"name": "n", "labels": {"zone": "a"}}}) == (False, False)
    # NoSchedule: no new pod, but a running one stays; NoExecute: neither.
    assert should_run(ds, node({"zone": "a"}, [{"key": "k", "effect": "NoSchedule"}])) == (False, True)
    assert should_run(ds, node({"zone": "a"}, [{"key": "k", "effect": "NoExecute"}])) == (False, False)
    # The daemon tolerations: a cordoned, not-ready, pressured node still runs daemons.
    for key, effect in (("node.kubernetes.io/unschedulable", "NoSchedule"),
                        ("node.kubernetes.io/not-ready", "NoExecute"),
                        ("node.kubernetes.io/disk-pressure", "NoSchedule")):
        assert should_run(ds, node({"zone": "a"}, [{"key": key, "effect": effect}])) == (True, True)
    # network-unavailable only for hostNetwork pods.
    taint = [{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]
    assert should_run(ds, node({"zone": "a"}, taint)) == (False, True)
    ds["spec"]["template"]["spec"]["hostNetwork"] = True
    assert should_run(ds, node({"zone": "a"}, taint)) == (True, True)


def test_daemon_tolerations_replace_an_equal_one_with_seconds():
    spec = {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 300}, {"key": "mine", "operator": "Exists"}]}
    add_daemon_tolerations(spec)
    assert spec["tolerations"][0] == DAEMON_TOLERATIONS[0]
    assert spec["tolerations"][1] == {"key": "mine", "operator": "Exists"}
    assert len(spec["tolerations"]) == 1 + len(DAEMON_TOLERATIONS)


# -- the API ---------------------------------------------------------------------------

def causes(r) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


def test_defaults_template_generation_and_bad_input(http, ns):
    url = f"/apis/apps/v1/namespaces/{ns}/daemonsets"
    r = http.post(url, json=daemonset("web", ns))
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert obj["spec"]["revisionHistoryLimit"] == 10
    assert obj["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert obj["metadata"]["generation"] == 1
    assert obj["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "1"
    # A template change bumps the template generation; a client cannot set it.
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx"
    obj["metadata"]["annotations"]["deprecated.daemonset.template.generation"] = "9"
    obj = http.put(f"{url}/web", json=obj).json()
    assert obj["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "2"
    assert obj["metadata"]["generation"] == 2
    obj["spec"]["minReadySeconds"] = 3
    obj = http.put(f"{url}/web", json=obj).json()
    assert obj["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "2"
    assert obj["metadata"]["generation"] == 3

    bad = daemonset("bad", ns)
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    assert causes(http.post(url, json=bad)) == {
        "spec.template.metadata.labels": 'Invalid value: {"app":"bad"}: `selector` does not match template `labels`'}
    bad = daemonset("bad", ns)
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert causes(http.post(url, json=bad)) == {
        "spec.template.spec.restartPolicy": 'Unsupported value: "Never": supported values: "Always"'}
    both = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}
    assert causes(http.post(url, json=daemonset("bad", ns, strategy=both))) == {
        "spec.updateStrategy.rollingUpdate.maxSurge":
            "Invalid value: 1: may not be set when maxUnavailable is non-zero"}
    bad = daemonset("bad", ns, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}})
    assert causes(http.post(url, json=bad)) == {
        "spec.updateStrategy.rollingUpdate.maxUnavailable": "Required value: cannot be 0 when maxSurge is 0"}
    bad = daemonset("bad", ns, strategy={"type": "Sometimes"})
    assert "spec.updateStrategy" in causes(http.post(url, json=bad))
    assert http.get(f"{url}/bad").status_code == 404
    # The selector is immutable.
    obj["spec"]["selector"] = {"matchLabels": {"app": "web", "x": "y"}}
    obj["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    assert causes(http.put(f"{url}/web", json=obj))["spec.selector"].endswith("field is immutable")


# -- the controller ----------------------------------------------------------------------

async def test_one_pod_per_eligible_node_and_a_joining_node_gets_one(client, ns, cm):
    async with Cluster(client, ns) as c:
        plain = await c.node("plain")
        tainted = await c.node("tainted", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
        cordoned = await c.node("cordoned", unschedulable=True,
                                taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}])
        await c.node("other", selected=False)
        await client.create(daemonset("agent", ns), namespace=ns)

        placed = await eventually(lambda: (lambda m: m if set(m) == {plain, cordoned} else None)(c.by_node()),
                                  what="a pod on each eligible node")
        pod = placed[plain][0]
        tolerations = pod["spec"]["tolerations"]
        for t in DAEMON_TOLERATIONS:
            assert t in tolerations
        assert not any(t["key"] == "node.kubernetes.io/network-unavailable" for t in tolerations)
        assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [plain]}]}]}
        assert "nodeName" not in pod["spec"]  # the scheduler binds it
        labels = pod["metadata"]["labels"]
        assert labels[GENERATION_LABEL] == "1" and labels["app"] == "agent"
        revs = (await client.list("controllerrevisions", namespace=ns))["items"]
        assert [r["metadata"]["name"] for r in revs] == [f"agent-{labels[HASH_LABEL]}"]
        assert revs[0]["revision"] == 1
        assert revs[0]["data"]["spec"]["template"]["$patch"] == "replace"
        ref = pod["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["controller"]) == ("DaemonSet", "agent", True)

        ds = await _status_is(client, ns, "agent", 2, wait=True)
        st = ds["status"]
        assert (st["desiredNumberScheduled"], st["currentNumberScheduled"], st["numberReady"],
                st["numberMisscheduled"]) == (2, 2, 2, 0)

        # A node that joins gets a pod.
        joined = await c.node("joined")
        await eventually(lambda: joined in c.by_node(), what="a pod on the joining node")
        await _status_is(client, ns, "agent", 3, wait=True)

        # An untolerated NoExecute taint evicts the daemon; a NoSchedule one does not.
        await client.patch("nodes", tainted, patch={"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}})
        await client.patch("nodes", plain, patch={"spec": {"taints": [{"key": "x", "effect": "NoExecute"}]}})
        await eventually(lambda: plain not in c.by_node(), what="the daemon pod leaves the NoExecute node")
        assert tainted not in c.by_node() and cordoned in c.by_node()
        # Losing the label does too.
        await client.patch("nodes", joined, patch={"metadata": {"labels": {"ds-test": None}}})
        await eventually(lambda: joined not in c.by_node(), what="the daemon pod leaves the unlabelled node")

        evs = [(e["reason"], e["message"]) for e in (await client.list("events", namespace=ns))["items"]
               if e["involvedObject"].get("kind") == "DaemonSet"]
        assert any(r == "SuccessfulCreate" and m.startswith("Created pod: agent-") for r, m in evs)
        assert any(r == "SuccessfulDelete" for r, _ in evs)


async def _status_is(client: Client, ns: str, name: str, n: int, *, wait: bool = False):
    async def check():
        ds = await get_ds(client, ns, name)
        return ds if rolled_out(ds, n) else None
    if wait:
        return await eventually(check, what=f"{name} rolled out on {n} nodes")
    return await check()


async def test_rolling_update_never_exceeds_max_unavailable(client, ns, cm):
    async with Cluster(client, ns) as c:
        nodes = [await c.node(f"n{i}") for i in range(5)]
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}
        await client.create(daemonset("roll", ns, strategy=strategy), namespace=ns)
        await _status_is(client, ns, "roll", 5, wait=True)
        first = len(c.samples)
        await set_image(client, ns, "roll", "nginx")

        def done():
            m = c.by_node()
            return all(len(m.get(n, [])) == 1 and image_of(m[n][0]) == "nginx" and is_ready(m[n][0])
                       for n in nodes)
        await eventually(done, what="every node runs the new pod")
        await _status_is(client, ns, "roll", 5, wait=True)
        worst = max(sum(1 for n in nodes if not any(is_ready(p) for p in s.get(n, []))) for s in c.samples[first:])
        assert 1 <= worst <= 2
        assert max(len(ps) for s in c.samples for ps in s.values()) == 1  # no surge
        revs = sorted((r["revision"], r["metadata"]["name"])
                      for r in (await client.list("controllerrevisions", namespace=ns))["items"])
        assert [r for r, _ in revs] == [1, 2]


async def test_rolling_update_with_max_surge_keeps_every_node_available(client, ns, cm):
    async with Cluster(client, ns) as c:
        nodes = [await c.node(f"s{i}") for i in range(3)]
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        await client.create(daemonset("surge", ns, strategy=strategy), namespace=ns)
        await _status_is(client, ns, "surge", 3, wait=True)
        first = len(c.samples)
        await set_image(client, ns, "surge", "nginx")

        def done():
            m = c.by_node()
            return all(len(m.get(n, [])) == 1 and image_of(m[n][0]) == "nginx" and is_ready(m[n][0])
                       for n in nodes)
        await eventually(done, what="every node runs the new pod")
        during = c.samples[first:]
        # Every node keeps a ready pod throughout; a node has at most two pods, and at
        # most maxSurge nodes at a time have a second pod that is not yet available (the
        # old pod of a node whose new one is available is deleted in the same sync that
        # surges onto the next node).
        assert all(any(is_ready(p) for p in s.get(n, [])) for s in during for n in nodes)
        assert max(len(ps) for s in during for ps in s.values()) == 2
        assert max(sum(1 for n in nodes if len(s.get(n, [])) == 2 and not all(is_ready(p) for p in s[n]))
                   for s in during) == 1


async def test_on_delete_replaces_only_deleted_pods(client, ns, cm):
    async with Cluster(client, ns) as c:
        nodes = [await c.node(f"o{i}") for i in range(2)]
        await client.create(daemonset("od", ns, strategy={"type": "OnDelete"}), namespace=ns)
        await _status_is(client, ns, "od", 2, wait=True)
        await set_image(client, ns, "od", "nginx")
        ds = await eventually(lambda: _observed(client, ns, "od"), what="the update observed")
        assert ds["status"].get("updatedNumberScheduled", 0) == 0
        assert all(image_of(c.by_node()[n][0]) == "busybox" for n in nodes)
        victim = c.by_node()[nodes[0]][0]
        await client.delete("pods", victim["metadata"]["name"], namespace=ns)
        await eventually(lambda: nodes[0] in c.by_node() and image_of(c.by_node()[nodes[0]][0]) == "nginx",
                         what="the deleted pod replaced from the new template")
        assert image_of(c.by_node()[nodes[1]][0]) == "busybox"
        await eventually(lambda: _observed(client, ns, "od", updated=1), what="one pod updated")


async def _observed(client: Client, ns: str, name: str, updated: int | None = None):
    ds = await get_ds(client, ns, name)
    st = ds.get("status") or {}
    if st.get("observedGeneration") != ds["metadata"]["generation"]:
        return None
    if updated is not None and st.get("updatedNumberScheduled", 0) != updated:
        return None
    return ds


async def test_controller_restart_mid_rollout_creates_no_extra_pod(client, ns, cm_kubeconfig):
    cm = start_cm(cm_kubeconfig)
    try:
        async with Cluster(client, ns) as c:
            nodes = [await c.node(f"r{i}") for i in range(4)]
            await client.create(daemonset("rs", ns), namespace=ns)
            await _status_is(client, ns, "rs", 4, wait=True)
            first = len(c.samples)
            # New pods stay unready, so the rollout stalls after its first step.
            c.hold.add("*")
            await set_image(client, ns, "rs", "nginx")
            new = await eventually(lambda: [p for ps in c.by_node().values() for p in ps if image_of(p) == "nginx"],
                                   what="the first new pod")
            c.hold.add(new[0]["metadata"]["labels"][HASH_LABEL])
            c.hold.discard("*")
            cm.stop()
            cm = start_cm(cm_kubeconfig)
            await asyncio.sleep(0)  # let the new process start; the checks below poll
            await eventually(lambda: _observed(client, ns, "rs"), what="the new controller's status")
            c.release(new[0]["metadata"]["labels"][HASH_LABEL])
            await eventually(lambda: all(len(c.by_node().get(n, [])) == 1 and image_of(c.by_node()[n][0]) == "nginx"
                                         for n in nodes), what="the rollout finishes")
            assert max(len(ps) for s in c.samples[first:] for ps in s.values()) == 1
            assert len(c.seen) == 8  # four old pods, four new ones: none twice
    finally:
        cm.stop()


@pytest.mark.kubectl
async def test_history_undo_restart_and_status_with_kubectl(apiserver, client, ns, cm, tmp_path):
    if not KUBECTL:
        pytest.skip("kubectl is not installed")
    config = apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    async def kubectl(*args: str) -> str:
        r = await asyncio.to_thread(subprocess.run, [KUBECTL, "--kubeconfig", config, "--cache-dir",
                                                     str(tmp_path / "cache"), *args],
                                    capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    async with Cluster(client, ns) as c:
        await c.node("h0")
        await c.node("h1")
        await client.create(daemonset("hist", ns), namespace=ns)
        out = await kubectl("rollout", "status", "daemonset/hist", "--timeout=60s")
        assert 'daemon set "hist" successfully rolled out' in out
        await kubectl("set", "image", "daemonset/hist", "c=nginx")
        out = await kubectl("rollout", "status", "daemonset/hist", "--timeout=60s")
        assert out.strip().endswith('daemon set "hist" successfully rolled out')
        out = await kubectl("rollout", "history", "daemonset/hist")
        lines = out.splitlines()
        assert lines[0].strip() == "daemonset.apps/hist"
        assert lines[1].split() == ["REVISION", "CHANGE-CAUSE"]
        assert [line.split()[0] for line in lines[2:] if line.strip()] == ["1", "2"]
        out = await kubectl("rollout", "history", "daemonset/hist", "--revision=1")
        assert "busybox" in out and "nginx" not in out

        assert (await kubectl("rollout", "undo", "daemonset/hist")).strip() == "daemonset.apps/hist rolled back"
        ds = await get_ds(client, ns, "hist")
        assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
        await kubectl("rollout", "status", "daemonset/hist", "--timeout=60s")
        assert all(image_of(ps[0]) == "busybox" for ps in c.by_node().values())
        revs = sorted(r["revision"] for r in (await client.list("controllerrevisions", namespace=ns))["items"])
        assert revs == [2, 3]  # revision 1 came back as revision 3

        assert (await kubectl("rollout", "restart", "daemonset/hist")).strip() == "daemonset.apps/hist restarted"
        await kubectl("rollout", "status", "daemonset/hist", "--timeout=60s")
        ds = await get_ds(client, ns, "hist")
        assert "kubectl.kubernetes.io/restartedAt" in ds["spec"]["template"]["metadata"]["annotations"]

        out = await kubectl("get", "daemonsets")
        assert out.splitlines()[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE",
                                               "NODE", "SELECTOR", "AGE"]
        assert out.splitlines()[1].split()[:7] == ["hist", "2", "2", "2", "2", "2", f"ds-test={ns}"]


async def test_the_scheduler_binds_daemon_pods_through_match_fields(apiserver, client, ns, cm, tmp_path):
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "sched-kubeconfig", "scheduler")
    cfg = tmp_path / "sched.yaml"
    cfg.write_text("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
                   f"profiles:\n- schedulerName: ds-{ns}\n")
    sched = Component("scheduler", "--kubeconfig", kubeconfig, "--config", str(cfg),
                      "--secure-port", str(free_port())).start()
    try:
        async with Cluster(client, ns) as c:
            nodes = {await c.node("b0"), await c.node("b1", unschedulable=True, taints=[
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}])}
            body = daemonset("bound", ns)
            body["spec"]["template"]["spec"]["schedulerName"] = f"ds-{ns}"
            await client.create(body, namespace=ns)

            def bound():
                pods = c.pods()
                return pods if len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods) else None
            pods = await eventually(bound, what="both daemon pods bound")
            assert {p["spec"]["nodeName"] for p in pods} == nodes
            assert all(p["spec"]["nodeName"] == target_node({"spec": {**p["spec"], "nodeName": ""}}) for p in pods)
    finally:
        sched.stop()


async def test_kubectl_lite_rollout_describe_and_get(apiserver, client, ns, cm, tmp_path):
    from tests.test_kubectl_lite import KubectlLite, write_kubeconfig
    kl = KubectlLite(write_kubeconfig(tmp_path / "kubeconfig", apiserver, ns), str(tmp_path), ns)

    def run(*args: str, ok: bool = True):
        return asyncio.to_thread(kl, *args, ok=ok)

    async with Cluster(client, ns) as c:
        await c.node("l0")
        await client.create(daemonset("lite", ns), namespace=ns)
        out = (await run("rollout", "status", "ds/lite", "--timeout=60s")).stdout
        assert out.endswith('daemon set "lite" successfully rolled out\n')
        await set_image(client, ns, "lite", "nginx")
        await run("rollout", "status", "daemonset/lite", "--timeout=60s")
        assert (await run("rollout", "history", "ds/lite")).stdout == \
            "daemonset.apps/lite \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n"
        out = (await run("rollout", "history", "ds/lite", "--revision=1")).stdout
        assert out.startswith("daemonset.apps/lite with revision #1\nPod Template:\n") and "busybox" in out
        assert (await run("rollout", "undo", "ds/lite")).stdout == "daemonset.apps/lite rolled back\n"
        assert (await get_ds(client, ns, "lite"))["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
        await run("rollout", "status", "ds/lite", "--timeout=60s")
        assert (await run("rollout", "undo", "ds/lite", "--to-revision=3")).stdout == \
            "daemonset.apps/lite skipped rollback (current template already matches revision 3)\n"
        assert (await run("rollout", "pause", "ds/lite", ok=False)).stderr == \
            'error: daemonsets.apps "lite" pausing is not supported\n'
        assert (await run("rollout", "restart", "ds/lite")).stdout == "daemonset.apps/lite restarted\n"

        out = (await run("describe", "ds", "lite")).stdout
        assert out.startswith(f"Name:           lite\nNamespace:      {ns}\nSelector:       app=lite\n"
                              f"Node-Selector:  ds-test={ns}\n")
        assert "Desired Number of Nodes Scheduled: 1\n" in out
        assert "Pods Status:" in out and "Pod Template:" in out
        out = (await run("get", "ds")).stdout
        assert out.splitlines()[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE",
                                               "NODE", "SELECTOR", "AGE"]


def test_the_example_manifest_is_accepted(http, ns):
    import yaml
    path = os.path.join(os.path.dirname(__file__), "..", "manifests", "daemonset.yaml")
    with open(path) as f:
        obj = yaml.safe_load(f)
    r = http.post(f"/apis/apps/v1/namespaces/{ns}/daemonsets?dryRun=All", json=obj)
    assert r.status_code == 201, r.text


async def test_a_failed_daemon_pod_is_replaced_with_an_event(client, ns, cm):
    async with Cluster(client, ns) as c:
        node = await c.node("f0")
        await client.create(daemonset("flaky", ns), namespace=ns)
        (pod,) = await eventually(lambda: c.by_node().get(node), what="the daemon pod")
        await client.patch("pods", pod["metadata"]["name"], namespace=ns, subresource="status",
                           patch={"status": {"phase": "Failed", "conditions": []}})
        await eventually(lambda: (ps := c.by_node().get(node)) and ps[0]["metadata"]["uid"] != pod["metadata"]["uid"],
                         what="a replacement")

        async def warned():
            evs = (await client.list("events", namespace=ns))["items"]
            return [e["message"] for e in evs if e["reason"] == "FailedDaemonPod"]
        (message,) = await eventually(warned, what="the FailedDaemonPod event")
        assert message == f"Found failed daemon pod {ns}/{pod['metadata']['name']} on node {node}, will try to kill it"


def test_openapi_and_discovery_describe_the_new_kinds(http):
    index = http.get("/openapi/v3").json()["paths"]
    apps = http.get(index["apis/apps/v1"]["serverRelativeURL"]).json()
    core = http.get(index["api/v1"]["serverRelativeURL"]).json()
    schemas = {**apps["components"]["schemas"], **core["components"]["schemas"]}
    for name in ("io.k8s.api.apps.v1.DaemonSet", "io.k8s.api.apps.v1.ControllerRevision",
                 "io.k8s.api.core.v1.ReplicationController"):
        assert name in schemas
    assert "/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}/status" in apps["paths"]
    assert "/api/v1/namespaces/{namespace}/replicationcontrollers/{name}/scale" in core["paths"]
    resources = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
    assert resources["daemonsets"]["shortNames"] == ["ds"] and resources["daemonsets"]["categories"] == ["all"]
    assert "daemonsets/status" in resources and "controllerrevisions" in resources
    core_resources = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
    assert core_resources["replicationcontrollers"]["shortNames"] == ["rc"]
    assert "replicationcontrollers/scale" in core_resources


async def test_an_orphan_on_an_eligible_node_is_adopted_then_rolled(client, ns, cm):
    async with Cluster(client, ns) as c:
        first, second = await c.node("a0"), await c.node("a1")
        orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "adopt"}},
                  "spec": {"nodeName": first, "containers": [{"name": "c", "image": "busybox"}]}}
        await client.create(orphan, namespace=ns)
        await client.create(daemonset("adopt", ns), namespace=ns)
        # Adopted (only its own pods does a DaemonSet delete), it is from no revision of
        # the DaemonSet's, so the rolling update replaces it; never two pods on its node.
        await _status_is(client, ns, "adopt", 2, wait=True)
        placed = c.by_node()
        assert set(placed) == {first, second}
        assert placed[first][0]["metadata"]["name"] != "orphan"
        assert placed[first][0]["metadata"]["labels"][HASH_LABEL]
        evs = [e["message"] for e in (await client.list("events", namespace=ns))["items"]
               if e["reason"] == "SuccessfulDelete"]
        assert evs == ["Deleted pod: orphan"]
        assert max(len(s.get(first, [])) for s in c.samples) == 1
