"""StatefulSets end to end: the apps/v1 API (defaults, validation, Table), and the
StatefulSet controller as a process (`minik8s controller-manager --controllers
statefulset,garbagecollector`). The tests play scheduler and kubelet: they bind pods to
a node, report them Running and Ready through pods/status, and finish graceful deletions,
each when the test says so, so the controller's ordering can be observed.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid

import pytest

from client.informer import Informer
from client.rest import Client
from controller_manager.controllers.statefulset import (POD_INDEX_LABEL, POD_NAME_LABEL, max_unavailable,
                                                        new_pod, revision_data)
from machinery import errors
from tests.procs import Component, eventually, free_port

TIMEOUT = 30.0  # catches hangs only
KUBECTL = shutil.which("kubectl")


def start_cm(kubeconfig: str, lease: str) -> Component:
    return Component("controller-manager", "--kubeconfig", kubeconfig,
                     "--controllers", "statefulset,garbagecollector,disruption",
                     "--secure-port", str(free_port()), "--leader-elect-resource-name", lease,
                     "--leader-elect-retry-period", "0.2s").start()


@pytest.fixture
def lease():
    return f"cm-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cm(kubeconfig, lease):
    proc = start_cm(kubeconfig, lease)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def client(apiserver, ns):
    async with Client(apiserver.connection()) as c:
        yield c


@pytest.fixture
async def node(client, ns):
    name = f"n-{ns}"
    await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    yield name
    await client.delete("nodes", name)


def statefulset(name: str = "web", replicas: int = 3, image: str = "nginx:1.27", **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}, **spec}}


class Kubelet:
    """The pods of a namespace through an informer; starts and stops them when told."""

    def __init__(self, client: Client, ns: str, node: str):
        self.client, self.ns, self.node = client, ns, node
        self.informer = Informer(client, "pods", namespace=ns)
        self.created: list[str] = []  # pod names in creation order (one per incarnation)
        self.deleting: list[str] = []  # pod names in the order they were marked for deletion
        self.uids: set[str] = set()
        self.informer.add_handler(on_add=self._seen, on_update=lambda _, p: self._seen(p))

    def _seen(self, pod: dict) -> None:
        md = pod["metadata"]
        if md["uid"] not in self.uids:
            self.uids.add(md["uid"])
            self.created.append(md["name"])
        if md.get("deletionTimestamp") and md["name"] not in self.deleting:
            self.deleting.append(md["name"])

    def get(self, name: str) -> dict | None:
        return self.informer.store.get(f"{self.ns}/{name}")

    def names(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.informer.store.list())

    async def start(self, name: str) -> None:
        pod = self.get(name)
        assert pod is not None, name
        if not pod["spec"].get("nodeName"):
            await self.client.bind(name, self.node, namespace=self.ns)
        await self.client.patch("pods", name, namespace=self.ns, subresource="status", patch={"status": {
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})

    async def finish(self, name: str) -> None:
        """The kubelet confirms a graceful deletion."""
        try:
            await self.client.delete("pods", name, namespace=self.ns, grace_period_seconds=0)
        except errors.NotFound:
            pass

    async def run_all(self) -> None:
        """Start every pod not yet running and finish every deletion, once."""
        for pod in list(self.informer.store.list()):
            md = pod["metadata"]
            try:
                if md.get("deletionTimestamp"):
                    await self.finish(md["name"])
                elif (pod.get("status") or {}).get("phase") != "Running":
                    await self.start(md["name"])
            except (errors.NotFound, errors.Conflict):
                pass

    async def __aenter__(self) -> Kubelet:
        self.task = self.informer.start()
        await self.informer.wait_for_sync(TIMEOUT)
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def sts_status(client: Client, ns: str, name: str = "web") -> dict:
    return (await client.get("statefulsets", name, namespace=ns)).get("status") or {}


async def converge(client: Client, kubelet: Kubelet, ns: str, name: str = "web", **want) -> dict:
    """Play the kubelet until the set's status has `want`."""
    async def step():
        await kubelet.run_all()
        st = await sts_status(client, ns, name)
        return st if all(st.get(k) == v for k, v in want.items()) else None
    return await eventually(step, what=f"statefulset status {want}")


# -- pure helpers ------------------------------------------------------------------------------

def test_pod_identity_and_storage_from_the_template():
    sts = statefulset(volumeClaimTemplates=[{"metadata": {"name": "data"}, "spec": {}}])
    sts["metadata"].update(namespace="ns", uid="u1")
    sts["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}, {"name": "x", "emptyDir": {}}]
    pod = new_pod(sts, 2, "web-abc")
    md, spec = pod["metadata"], pod["spec"]
    assert md["name"] == "web-2" and md["labels"] == {"app": "web", POD_NAME_LABEL: "web-2", POD_INDEX_LABEL: "2",
                                                      "controller-revision-hash": "web-abc"}
    assert md["ownerReferences"][0]["uid"] == "u1" and md["ownerReferences"][0]["controller"] is True
    assert (spec["hostname"], spec["subdomain"]) == ("web-2", "web")
    assert spec["volumes"] == [{"name": "x", "emptyDir": {}},
                               {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-2"}}]
    assert revision_data(sts)["spec"]["template"]["$patch"] == "replace"


def test_max_unavailable_scales_down_and_is_at_least_one():
    def sts(value):
        return {"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": value}}}}
    assert max_unavailable({"spec": {}}, 5) == 1
    assert max_unavailable(sts(2), 5) == 2 and max_unavailable(sts("50%"), 5) == 2
    assert max_unavailable(sts("10%"), 5) == 1


# -- the API ---------------------------------------------------------------------------------

async def test_defaults_validation_and_immutable_claim_templates(client, ns):
    claim = {"metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    created = await client.create(statefulset(volumeClaimTemplates=[claim]), namespace=ns)
    spec = created["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady" and spec["revisionHistoryLimit"] == 10
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["volumeClaimTemplates"][0]["spec"]["volumeMode"] == "Filesystem"
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert created["metadata"]["generation"] == 1

    bad = [(statefulset("a", selector={"matchLabels": {"app": "other"}}), "`selector` does not match template"),
           (statefulset("b", podManagementPolicy="Sometimes"), "must be 'OrderedReady' or 'Parallel'"),
           (statefulset("c", updateStrategy={"type": "OnDelete", "rollingUpdate": {"partition": 1}}),
            "only allowed for updateStrategy 'RollingUpdate'"),
           (statefulset("d", updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": -1}}),
            "must be greater than or equal to 0"),
           (statefulset("e", persistentVolumeClaimRetentionPolicy={"whenDeleted": "Keep", "whenScaled": "Retain"}),
            "Unsupported value: \"Keep\""),
           (statefulset("f", replicas=-1), "must be greater than or equal to 0")]
    for obj, message in bad:
        with pytest.raises(errors.Invalid) as info:
            await client.create(obj, namespace=ns)
        assert message in info.value.message, info.value.message

    changed = {**created, "spec": {**spec, "volumeClaimTemplates": [
        {**claim, "spec": {**claim["spec"], "resources": {"requests": {"storage": "2Gi"}}}}]}}
    with pytest.raises(errors.Invalid) as info:
        await client.update(changed, namespace=ns)
    assert "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', " \
           "'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' " \
           "and 'minReadySeconds' are forbidden" in info.value.message
    stored = await client.get("statefulsets", "web", namespace=ns)
    assert stored["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # What may change does.
    scaled = await client.patch("statefulsets", "web", namespace=ns,
                                patch={"spec": {"replicas": 5, "minReadySeconds": 3}})
    assert scaled["spec"]["replicas"] == 5 and scaled["metadata"]["generation"] == 2
    assert (await client.get_scale("statefulsets", "web", namespace=ns))["spec"]["replicas"] == 5


def test_table_ready_column(http, ns):
    r = http.post(f"/apis/apps/v1/namespaces/{ns}/statefulsets", json=statefulset(replicas=2))
    assert r.status_code == 201, r.text
    t = http.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets",
                 headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Ready", "Age", "Containers", "Images"]
    assert t["rows"][0]["cells"][:2] == ["web", "0/2"]


# -- the controller ------------------------------------------------------------------------------

async def test_ordered_creation_and_reverse_deletion(cm, client, ns, node):
    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=3), namespace=ns)
        for i in range(3):
            name = f"web-{i}"
            await eventually(lambda name=name: kubelet.get(name) is not None, what=name)
            # The next ordinal waits until this one is Running and Ready.
            assert kubelet.names() == [f"web-{j}" for j in range(i + 1)]
            pod = kubelet.get(name)
            assert pod["spec"]["hostname"] == name and pod["spec"]["subdomain"] == "web"
            assert pod["metadata"]["labels"][POD_INDEX_LABEL] == str(i)
            await kubelet.start(name)
        st = await converge(client, kubelet, ns, readyReplicas=3, replicas=3)
        assert st["currentRevision"] == st["updateRevision"] and st["updatedReplicas"] == 3
        assert st["observedGeneration"] == 1
        assert kubelet.created == ["web-0", "web-1", "web-2"]

        # Scale to 1: web-2 goes first, web-1 only once web-2 is gone.
        await client.scale("statefulsets", "web", 1, namespace=ns)
        await eventually(lambda: kubelet.deleting == ["web-2"], what="web-2 terminating")
        await asyncio.sleep(0)  # (no waiting: the next assertion is about what has not happened)
        assert kubelet.get("web-1")["metadata"].get("deletionTimestamp") is None
        await kubelet.finish("web-2")
        await eventually(lambda: kubelet.deleting == ["web-2", "web-1"], what="web-1 terminating")
        await kubelet.finish("web-1")
        await converge(client, kubelet, ns, replicas=1, readyReplicas=1)
        assert kubelet.names() == ["web-0"]


async def test_parallel_creates_all_at_once(cm, client, ns, node):
    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=3, podManagementPolicy="Parallel"), namespace=ns)
        await eventually(lambda: kubelet.names() == ["web-0", "web-1", "web-2"], what="3 pods at once")
        assert all((kubelet.get(n).get("status") or {}).get("phase") != "Running" for n in kubelet.names())


async def test_partitioned_rolling_update_in_reverse_order(cm, client, ns, node):
    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=3, updateStrategy={
            "type": "RollingUpdate", "rollingUpdate": {"partition": 2}}), namespace=ns)
        first = await converge(client, kubelet, ns, readyReplicas=3)
        await client.patch("statefulsets", "web", namespace=ns, patch={"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "nginx:1.28"}]}}}})
        st = await converge(client, kubelet, ns, observedGeneration=2, updatedReplicas=1, readyReplicas=3)
        assert st["updateRevision"] != first["updateRevision"]
        assert st["currentRevision"] == first["currentRevision"] and st["currentReplicas"] == 2
        images = {n: kubelet.get(n)["spec"]["containers"][0]["image"] for n in kubelet.names()}
        assert images == {"web-0": "nginx:1.27", "web-1": "nginx:1.27", "web-2": "nginx:1.28"}
        assert kubelet.deleting == ["web-2"]

        await client.patch("statefulsets", "web", namespace=ns,
                           patch={"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})
        st = await converge(client, kubelet, ns, updatedReplicas=3, readyReplicas=3, currentReplicas=3)
        assert st["currentRevision"] == st["updateRevision"]
        assert kubelet.deleting == ["web-2", "web-1", "web-0"]
        revisions = (await client.list("controllerrevisions", namespace=ns))["items"]
        assert sorted(r["revision"] for r in revisions) == [1, 2]


async def test_max_unavailable_replaces_two_at_a_time(cm, client, ns, node):
    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=4, podManagementPolicy="Parallel", updateStrategy={
            "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}), namespace=ns)
        await converge(client, kubelet, ns, readyReplicas=4)
        await client.patch("statefulsets", "web", namespace=ns, patch={"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "nginx:1.28"}]}}}})
        await eventually(lambda: kubelet.deleting == ["web-3", "web-2"], what="the two highest ordinals going")
        assert not kubelet.get("web-1")["metadata"].get("deletionTimestamp")
        st = await converge(client, kubelet, ns, updatedReplicas=4, readyReplicas=4, currentReplicas=4)
        assert st["currentRevision"] == st["updateRevision"]
        assert kubelet.deleting == ["web-3", "web-2", "web-1", "web-0"]


async def test_on_delete_replaces_only_what_is_deleted(cm, client, ns, node):
    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=2, updateStrategy={"type": "OnDelete"}), namespace=ns)
        await converge(client, kubelet, ns, readyReplicas=2)
        await client.patch("statefulsets", "web", namespace=ns, patch={"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "nginx:1.28"}]}}}})
        st = await converge(client, kubelet, ns, observedGeneration=2)
        assert st["updatedReplicas"] == 0 and kubelet.deleting == []
        await client.delete("pods", "web-1", namespace=ns)
        await converge(client, kubelet, ns, updatedReplicas=1, readyReplicas=2)
        assert kubelet.get("web-1")["spec"]["containers"][0]["image"] == "nginx:1.28"
        assert kubelet.get("web-0")["spec"]["containers"][0]["image"] == "nginx:1.27"


async def test_controller_restart_mid_rollout_creates_no_extra_pod(kubeconfig, lease, client, ns, node):
    proc = start_cm(kubeconfig, lease)
    try:
        async with Kubelet(client, ns, node) as kubelet:
            await client.create(statefulset(replicas=3), namespace=ns)
            await eventually(lambda: kubelet.get("web-0") is not None, what="web-0")
            await kubelet.start("web-0")
            await eventually(lambda: kubelet.get("web-1") is not None, what="web-1")
            proc.stop()  # web-1 is created and not yet ready
            await kubelet.start("web-1")
            proc = start_cm(kubeconfig, lease)
            await converge(client, kubelet, ns, readyReplicas=3)
            assert kubelet.created == ["web-0", "web-1", "web-2"]  # one incarnation each
    finally:
        proc.stop()


async def test_a_budget_counts_the_statefulsets_replicas(cm, client, ns, node):
    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=3), namespace=ns)
        await converge(client, kubelet, ns, readyReplicas=3)
        await client.create({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
                             "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}},
                            namespace=ns)

        async def budget():
            st = (await client.get("poddisruptionbudgets", "web", namespace=ns)).get("status") or {}
            return st if st.get("expectedPods") == 3 and st.get("disruptionsAllowed") == 1 else None
        st = await eventually(budget, what="the budget's status")
        assert (st["desiredHealthy"], st["currentHealthy"]) == (2, 3)


# -- kubectl rollout ---------------------------------------------------------------------------

@pytest.mark.kubectl
async def test_kubectl_rollout_status_history_undo_restart(cm, client, ns, node, apiserver, tmp_path):
    if KUBECTL is None:
        pytest.skip("no kubectl")
    base = [KUBECTL, *apiserver.kubectl_flags(), "--cache-dir", str(tmp_path / "cache"), "-n", ns]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def kubectl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=60)

    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=2), namespace=ns)
        status = await asyncio.to_thread(subprocess.Popen, [*base, "rollout", "status", "statefulset/web",
                                                            "--timeout=60s"],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        await converge(client, kubelet, ns, readyReplicas=2, updatedReplicas=2)
        out, _ = await asyncio.to_thread(status.communicate, timeout=60)
        assert status.returncode == 0, out
        assert "partitioned roll out complete: 2 new pods have been updated..." in out or \
            "statefulset rolling update complete 2 pods at revision web-" in out, out

        r = await asyncio.to_thread(kubectl, "set", "image", "statefulset/web", "c=nginx:1.28")
        assert r.returncode == 0, r.stderr
        await converge(client, kubelet, ns, observedGeneration=2, updatedReplicas=2, readyReplicas=2,
                       currentReplicas=2)
        r = await asyncio.to_thread(kubectl, "rollout", "history", "statefulset/web")
        assert r.returncode == 0, r.stderr
        assert [line.split()[0] for line in r.stdout.splitlines()[2:] if line.strip()] == ["1", "2"], r.stdout

        r = await asyncio.to_thread(kubectl, "rollout", "undo", "statefulset/web")
        assert r.returncode == 0, r.stderr
        assert "statefulset.apps/web rolled back" in r.stdout
        await converge(client, kubelet, ns, observedGeneration=3, updatedReplicas=2, readyReplicas=2,
                       currentReplicas=2)
        sts = await client.get("statefulsets", "web", namespace=ns)
        assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
        assert {kubelet.get(n)["spec"]["containers"][0]["image"] for n in kubelet.names()} == {"nginx:1.27"}
        r = await asyncio.to_thread(kubectl, "rollout", "history", "statefulset/web")
        assert [line.split()[0] for line in r.stdout.splitlines()[2:] if line.strip()] == ["2", "3"], r.stdout

        r = await asyncio.to_thread(kubectl, "get", "statefulsets")
        assert r.stdout.split()[:5] == ["NAME", "READY", "AGE", "web", "2/2"], r.stdout
        r = await asyncio.to_thread(kubectl, "describe", "statefulset", "web")
        assert r.returncode == 0, r.stderr
        assert "Replicas:           2 desired | 2 total" in r.stdout and "Update Strategy:    RollingUpdate" in r.stdout
        r = await asyncio.to_thread(kubectl, "rollout", "restart", "statefulset/web")
        assert r.returncode == 0 and "statefulset.apps/web restarted" in r.stdout, r.stderr
        await converge(client, kubelet, ns, observedGeneration=4, updatedReplicas=2, readyReplicas=2,
                       currentReplicas=2)
        assert all("kubectl.kubernetes.io/restartedAt" in (kubelet.get(n)["metadata"].get("annotations") or {})
                   for n in kubelet.names())


# -- storage ---------------------------------------------------------------------------------

CLAIM = {"metadata": {"name": "data", "labels": {"tier": "db"}},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}


async def claim_state(client: Client, ns: str, name: str) -> dict | None:
    """The claim, or None once it is gone or being deleted."""
    try:
        pvc = await client.get("persistentvolumeclaims", name, namespace=ns)
    except errors.NotFound:
        return None
    return None if pvc["metadata"].get("deletionTimestamp") else pvc


async def test_claims_per_ordinal_and_retention_policy(cm, client, ns, node):
    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=2, volumeClaimTemplates=[CLAIM],
                                        persistentVolumeClaimRetentionPolicy={"whenDeleted": "Retain",
                                                                              "whenScaled": "Delete"}),
                            namespace=ns)
        await eventually(lambda: kubelet.get("web-0") is not None, what="web-0")
        pvc = await client.get("persistentvolumeclaims", "data-web-0", namespace=ns)  # made before the pod
        assert pvc["metadata"]["labels"] == {"tier": "db", "app": "web"}
        assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert not pvc["metadata"].get("ownerReferences")  # whenDeleted Retain
        volumes = kubelet.get("web-0")["spec"]["volumes"]
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}} in volumes
        await converge(client, kubelet, ns, readyReplicas=2)
        assert await claim_state(client, ns, "data-web-1") is not None

        # whenScaled Delete: the condemned pod owns its claim, which goes with it.
        await client.scale("statefulsets", "web", 1, namespace=ns)
        await converge(client, kubelet, ns, replicas=1)
        await eventually(lambda: _claim_gone(client, ns, "data-web-1"), what="data-web-1 deleted")
        assert await claim_state(client, ns, "data-web-0") is not None

        # whenDeleted Delete: the set owns the claims, and they go with it.
        await client.patch("statefulsets", "web", namespace=ns, patch={"spec": {
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}}})

        async def owned_by_set():
            pvc = await client.get("persistentvolumeclaims", "data-web-0", namespace=ns)
            return [r["kind"] for r in pvc["metadata"].get("ownerReferences") or []] == ["StatefulSet"]
        await eventually(owned_by_set, what="data-web-0 owned by the set")
        await client.delete("statefulsets", "web", namespace=ns)

        async def all_gone():
            await kubelet.run_all()
            return kubelet.names() == [] and await _claim_gone(client, ns, "data-web-0")
        await eventually(all_gone, what="pods and claims deleted with the set")


async def test_retained_claims_outlive_the_set(cm, client, ns, node):
    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=1, volumeClaimTemplates=[CLAIM]), namespace=ns)
        await converge(client, kubelet, ns, readyReplicas=1)
        await client.delete("statefulsets", "web", namespace=ns)

        async def pods_gone():
            await kubelet.run_all()
            return kubelet.names() == []
        await eventually(pods_gone, what="pods deleted with the set")
        assert await claim_state(client, ns, "data-web-0") is not None  # Retain/Retain


async def _claim_gone(client: Client, ns: str, name: str) -> bool:
    return await claim_state(client, ns, name) is None


# -- kubectl-lite ------------------------------------------------------------------------------

async def test_kubectl_lite_rollout_and_describe(cm, client, ns, node, apiserver, tmp_path):
    from tests.test_kubectl_lite import KL, write_kubeconfig
    config = write_kubeconfig(tmp_path / "kubeconfig", apiserver, ns)

    def kl(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([*KL, "--kubeconfig", config, *args], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in r.stderr, r.stderr
        return r

    async with Kubelet(client, ns, node) as kubelet:
        await client.create(statefulset(replicas=2, volumeClaimTemplates=[CLAIM]), namespace=ns)
        status = await asyncio.to_thread(subprocess.Popen, [*KL, "--kubeconfig", config, "rollout", "status",
                                                            "sts/web", "--timeout=60s"],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        await converge(client, kubelet, ns, readyReplicas=2, updatedReplicas=2)
        out, _ = await asyncio.to_thread(status.communicate, timeout=60)
        assert status.returncode == 0, out
        assert out.splitlines()[-1] == "partitioned roll out complete: 2 new pods have been updated..."

        await client.patch("statefulsets", "web", namespace=ns, patch={"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "nginx:1.28"}]}}}})
        await converge(client, kubelet, ns, observedGeneration=2, updatedReplicas=2, readyReplicas=2,
                       currentReplicas=2)
        r = await asyncio.to_thread(kl, "rollout", "history", "statefulset/web")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[:4] == ["statefulset.apps/web ", "REVISION  CHANGE-CAUSE",
                                             "1         <none>", "2         <none>"], r.stdout
        r = await asyncio.to_thread(kl, "rollout", "undo", "statefulset/web")
        assert r.returncode == 0 and r.stdout.strip() == "statefulset.apps/web rolled back", r.stderr
        await converge(client, kubelet, ns, observedGeneration=3, updatedReplicas=2, currentReplicas=2)
        assert {kubelet.get(n)["spec"]["containers"][0]["image"] for n in kubelet.names()} == {"nginx:1.27"}
        r = await asyncio.to_thread(kl, "rollout", "pause", "statefulset/web")
        assert r.returncode != 0 and 'statefulsets.apps "web" pausing is not supported' in r.stderr

        r = await asyncio.to_thread(kl, "describe", "statefulset", "web")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert any(line.startswith("Replicas:") and line.endswith("2 desired | 2 total") for line in lines)
        assert any(line.startswith("Pods Status:") and "2 Running / 0 Waiting" in line for line in lines)
        assert "Volume Claims:" in lines and any("Capacity:" in line and "1Gi" in line for line in lines)


async def test_the_example_manifest_is_accepted(client, ns):
    import yaml
    path = os.path.join(os.path.dirname(__file__), "..", "manifests", "statefulset.yaml")
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    for doc in docs:
        await client.create(doc, namespace=ns)
    sts = await client.get("statefulsets", "kv", namespace=ns)
    assert sts["spec"]["serviceName"] == "kv" and sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    svc = await client.get("services", "kv", namespace=ns)
    assert svc["spec"]["clusterIP"] == "None"


@pytest.mark.kubectl
def test_kubectl_applies_the_example_manifest(apiserver, ns, tmp_path):
    if KUBECTL is None:
        pytest.skip("no kubectl")
    path = os.path.join(os.path.dirname(__file__), "..", "manifests", "statefulset.yaml")
    base = [KUBECTL, *apiserver.kubectl_flags(), "--cache-dir", str(tmp_path / "cache"), "-n", ns]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    r = subprocess.run([*base, "apply", "-f", path], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["service/kv created", "statefulset.apps/kv created"]
    # The claim templates are an atomic list that the server defaults (volumeMode, status),
    # so kubectl sends them again, as against Kubernetes; the server sees nothing changed.
    r = subprocess.run([*base, "apply", "-f", path], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*base, "get", "statefulset", "kv", "-o", "jsonpath={.metadata.generation}"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout == "1", r.stdout + r.stderr
