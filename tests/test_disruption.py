"""PodDisruptionBudgets end to end: the policy/v1 API (validation, Table), the disruption
controller as a process (`minik8s controller-manager --controllers
disruption,replicaset,deployment`), the pods/eviction subresource spending the budget,
and the real kubectl's drain stopping at a budget and finishing once it allows.
The tests play the kubelet: they bind pods to a node and report them Running and Ready
through pods/status.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid

import pytest

from client.rest import Client
from controller_manager.controllers.disruption import count_healthy, disrupted_map, scaled
from machinery import errors, times
from tests.procs import Component, eventually, free_port
from tests.test_kubectl_lite import KL, write_kubeconfig

TIMEOUT = 30.0  # catches hangs only
KUBECTL = shutil.which("kubectl")


@pytest.fixture
def cm(kubeconfig):
    proc = Component("controller-manager", "--kubeconfig", kubeconfig,
                     "--controllers", "disruption,replicaset,deployment",
                     "--secure-port", str(free_port()),
                     "--leader-elect-resource-name", f"cm-{uuid.uuid4().hex[:8]}",
                     "--leader-elect-retry-period", "0.2s").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def client(apiserver, ns):
    async with Client(apiserver.connection()) as c:
        yield c


def pdb(name: str = "db", **spec) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, **spec}}


def bare_pod(name: str, **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "db", **labels}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "busybox"}]}}


async def run_ready(client: Client, ns: str, name: str, node: str, *, ready: bool = True) -> None:
    """What a kubelet reports for a started pod."""
    await client.bind(name, node, namespace=ns)
    await client.patch("pods", name, namespace=ns, subresource="status", patch={"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})


async def evict(client: Client, ns: str, name: str, **body) -> dict:
    return await client.request("POST", f"/api/v1/namespaces/{ns}/pods/{name}/eviction",
                                body={"apiVersion": "policy/v1", "kind": "Eviction",
                                      "metadata": {"name": name, "namespace": ns}, **body})


async def status_of(client: Client, ns: str, name: str = "db") -> dict:
    return (await client.get("poddisruptionbudgets", name, namespace=ns)).get("status") or {}


async def settled(client: Client, ns: str, name: str = "db", **want) -> dict:
    async def check():
        got = await status_of(client, ns, name)
        return got if all(got.get(k) == v for k, v in want.items()) else None
    return await eventually(check, what=f"budget status {want}")


async def gone(client: Client, ns: str, name: str) -> bool:
    try:
        await client.get("pods", name, namespace=ns)
    except errors.NotFound:
        return True
    return False


# -- pure helpers ------------------------------------------------------------------------

def test_percent_scales_round_up():
    assert scaled(2, 10) == 2 and scaled("25%", 3) == 1 and scaled("50%", 3) == 2 and scaled("0%", 5) == 0


def test_healthy_pods_exclude_recent_evictions_and_deleting_pods():
    now = time.time()
    def p(name, ready=True, deleting=False):
        md = {"name": name, **({"deletionTimestamp": "x"} if deleting else {})}
        return {"metadata": md, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}
    pods = [p("a"), p("b"), p("c", ready=False), p("d", deleting=True), p("e")]
    recent, old = times.rfc3339(now - 5), times.rfc3339(now - 500)
    assert count_healthy(pods, {"b": recent, "e": old}, now) == 2
    kept, recheck = disrupted_map(pods, {"b": recent, "e": old, "d": recent, "ghost": recent}, now)
    assert kept == {"b": recent} and recheck is not None and now < recheck <= now + 120


# -- the API -----------------------------------------------------------------------------

async def test_validation_refuses_both_bounds_and_bad_percents(client, ns):
    cases = [({"minAvailable": 1, "maxUnavailable": 1}, "minAvailable and maxUnavailable cannot be both set"),
             ({"minAvailable": "5"}, "a valid percent string must be"),
             ({"maxUnavailable": "120%"}, "must not be greater than 100%"),
             ({"minAvailable": -1}, "must be greater than or equal to 0"),
             ({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Sometimes"}, "Unsupported value")]
    for spec, message in cases:
        with pytest.raises(errors.Invalid) as info:
            await client.create(pdb(**spec), namespace=ns)
        assert message in info.value.message
    assert (await client.list("poddisruptionbudgets", namespace=ns))["items"] == []
    created = await client.create(pdb(minAvailable="50%"), namespace=ns)
    assert created["metadata"]["generation"] == 1 and "status" not in created


def test_table_columns(http, ns):
    r = http.post(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", json=pdb(maxUnavailable=1))
    assert r.status_code == 201, r.text
    t = http.get(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
                 headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert [c["name"] for c in t["columnDefinitions"]] == \
        ["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"]
    assert t["rows"][0]["cells"][:4] == ["db", "N/A", "1", 0]


# -- the controller and eviction ---------------------------------------------------------

async def test_eviction_spends_the_budget_then_429(cm, client, ns):
    node = f"n-{ns}"
    await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    try:
        for i in range(3):
            await client.create(bare_pod(f"db-{i}"), namespace=ns)
            await run_ready(client, ns, f"db-{i}", node)
        await client.create(pdb(minAvailable=2), namespace=ns)
        st = await settled(client, ns, disruptionsAllowed=1, currentHealthy=3, desiredHealthy=2, expectedPods=3)
        cond = next(c for c in st["conditions"] if c["type"] == "DisruptionAllowed")
        assert (cond["status"], cond["reason"]) == ("True", "SufficientPods")
        assert st["observedGeneration"] == 1

        # A dry run decides but writes nothing.
        await client.request("POST", f"/api/v1/namespaces/{ns}/pods/db-0/eviction", params={"dryRun": "All"},
                             body={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "db-0"}})
        assert not await gone(client, ns, "db-0")
        assert (await status_of(client, ns))["disruptionsAllowed"] == 1

        await evict(client, ns, "db-0")
        assert await gone(client, ns, "db-0")
        with pytest.raises(errors.TooManyRequests) as info:
            await evict(client, ns, "db-1")
        assert info.value.message == "Cannot evict pod as it would violate the pod's disruption budget."
        assert info.value.causes[0]["type"] == "DisruptionBudget"
        assert "The disruption budget db needs 2 healthy pods and has" in info.value.causes[0]["message"]
        assert not await gone(client, ns, "db-1")
        # The controller sees db-0 go: it leaves disruptedPods. (A status written while its
        # informer still held the pod has the same counts with db-0 still listed.)
        async def saw_it_go():
            got = await status_of(client, ns)
            return got if (got.get("disruptionsAllowed"), got.get("currentHealthy")) == (0, 2) \
                and "db-0" not in (got.get("disruptedPods") or {}) else None
        st = await eventually(saw_it_go, what="the controller to see db-0 go")
        cond = next(c for c in st["conditions"] if c["type"] == "DisruptionAllowed")
        assert (cond["status"], cond["reason"]) == ("False", "InsufficientPods")

        # An unready pod goes when the budget is met (IfHealthyBudget) ...
        await client.create(bare_pod("db-3"), namespace=ns)
        await run_ready(client, ns, "db-3", node)
        await settled(client, ns, disruptionsAllowed=1, currentHealthy=3)
        await client.create(bare_pod("sick"), namespace=ns)
        await run_ready(client, ns, "sick", node, ready=False)
        await evict(client, ns, "sick")
        assert await gone(client, ns, "sick")
        assert (await status_of(client, ns))["disruptionsAllowed"] == 1  # not spent

        # ... and a Pending one always.
        await client.create(bare_pod("waiting"), namespace=ns)
        await evict(client, ns, "waiting")
        assert await gone(client, ns, "waiting")

        # A pod two budgets select: the subresource does not support it.
        await client.create(pdb("other", maxUnavailable=1), namespace=ns)
        with pytest.raises(errors.InternalError) as info:
            await evict(client, ns, "db-1")
        assert info.value.message == ("This pod has more than one PodDisruptionBudget, which the eviction "
                                      "subresource does not support.")
        assert not await gone(client, ns, "db-1")
    finally:
        await client.delete("nodes", node)


async def test_eviction_bad_input_changes_nothing(client, ns):
    await client.create(bare_pod("p"), namespace=ns)
    with pytest.raises(errors.BadRequest, match="name in URL does not match"):
        await client.request("POST", f"/api/v1/namespaces/{ns}/pods/p/eviction",
                             body={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "q"}})
    assert not await gone(client, ns, "p")
    with pytest.raises(errors.NotFound):
        await evict(client, ns, "nobody")
    # policy/v1beta1, as older kubectls send it, is an Eviction too.
    await client.request("POST", f"/api/v1/namespaces/{ns}/pods/p/eviction",
                         body={"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "p"},
                               "deleteOptions": {"gracePeriodSeconds": 0}})
    assert await gone(client, ns, "p")


async def test_a_budget_not_yet_processed_refuses_and_a_dry_run_in_delete_options_writes_nothing(
        client, http, ns):
    node = f"n-{ns}"
    await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    try:
        slow = bare_pod("db-0")
        slow["spec"]["terminationGracePeriodSeconds"] = 30  # stays, marked, for the kubelet to finish
        await client.create(slow, namespace=ns)
        await run_ready(client, ns, "db-0", node)
        await client.create(pdb(maxUnavailable=1), namespace=ns)  # no disruption controller here
        r = await asyncio.to_thread(http.post, f"/api/v1/namespaces/{ns}/pods/db-0/eviction",
                                    json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "db-0"}})
        assert r.status_code == 429 and r.headers["retry-after"] == "10", r.text
        assert r.json()["details"]["causes"] == [{"type": "DisruptionBudget", "message": "The disruption budget "
                                                  "db is still being processed by the server."}]
        await client.delete("poddisruptionbudgets", "db", namespace=ns)
        await evict(client, ns, "db-0", deleteOptions={"dryRun": ["All"]})
        pod = await client.get("pods", "db-0", namespace=ns)
        assert not pod["metadata"].get("deletionTimestamp")
        assert not any(c["type"] == "DisruptionTarget" for c in pod["status"].get("conditions") or [])
        await evict(client, ns, "db-0")
        marked = await client.get("pods", "db-0", namespace=ns)
        assert marked["metadata"].get("deletionTimestamp")
        cond = next(c for c in marked["status"]["conditions"] if c["type"] == "DisruptionTarget")
        assert (cond["status"], cond["reason"]) == ("True", "EvictionByEvictionAPI")
        await client.delete("pods", "db-0", namespace=ns, grace_period_seconds=0)
    finally:
        await client.delete("nodes", node)


async def test_no_controller_fails_safe_for_percent_budgets(cm, client, ns):
    await client.create(bare_pod("lonely"), namespace=ns)
    await client.create(pdb(maxUnavailable="50%"), namespace=ns)
    st = await settled(client, ns, disruptionsAllowed=0, observedGeneration=1)
    cond = await eventually(lambda: _sync_failed(client, ns), what="SyncFailed")
    assert "found no controller ref for pod 'lonely'" in cond["message"]
    assert st["disruptionsAllowed"] == 0


async def _sync_failed(client, ns):
    st = await status_of(client, ns)
    return next((c for c in st.get("conditions") or [] if c["reason"] == "SyncFailed"), None)


def deployment(replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                         "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "c", "image": "busybox"}]}}}}


async def start_deployment(client: Client, ns: str, node: str, replicas: int) -> None:
    """Play scheduler and kubelet: every pod of the Deployment runs Ready on `node`."""
    await client.create(deployment(replicas), namespace=ns)

    async def all_running():
        items = (await client.list("pods", namespace=ns))["items"]
        for p in items:
            if not (p.get("spec") or {}).get("nodeName"):
                await run_ready(client, ns, p["metadata"]["name"], node)
        return len(items) == replicas and all((p.get("spec") or {}).get("nodeName") for p in items)
    await eventually(all_running, what=f"{replicas} pods running")


async def test_max_unavailable_scales_from_the_deployment(cm, client, ns):
    node = f"n-{ns}"
    await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    try:
        await start_deployment(client, ns, node, 4)
        await client.create(pdb(maxUnavailable="25%"), namespace=ns)
        await settled(client, ns, expectedPods=4, desiredHealthy=3, currentHealthy=4, disruptionsAllowed=1)
        await client.scale("deployments", "db", 8, namespace=ns)
        # The expected count follows the Deployment's replicas before any pod exists.
        await client.patch("poddisruptionbudgets", "db", namespace=ns, patch={"spec": {"maxUnavailable": "50%"}})
        await settled(client, ns, expectedPods=8, desiredHealthy=4, observedGeneration=2)
    finally:
        await client.delete("nodes", node)


# -- kubectl drain, kubectl-lite drain ---------------------------------------------------

async def drain_against_budget(client: Client, ns: str, node: str, command: list[str], out) -> None:
    """A drain of `node` stops at a budget that allows nothing and finishes once the
    budget is lowered."""
    await start_deployment(client, ns, node, 2)
    await client.create(pdb(minAvailable=2), namespace=ns)
    await settled(client, ns, disruptionsAllowed=0, currentHealthy=2)
    with open(out, "w") as log:
        drain = subprocess.Popen([*command, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                                  "--timeout=90s"], stdout=log, stderr=subprocess.STDOUT,
                                 env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"})
    try:
        await eventually(lambda: "disruption budget" in out.read_text(), timeout=60,
                         what="drain refused by the budget")
        assert drain.poll() is None, out.read_text()
        assert (await client.get("nodes", node))["spec"]["unschedulable"] is True
        assert "(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget." \
            in out.read_text()
        assert len((await client.list("pods", namespace=ns))["items"]) == 2  # nothing evicted
        # Lower the budget: the drain's next retry gets through.
        await client.patch("poddisruptionbudgets", "db", namespace=ns, patch={"spec": {"minAvailable": 0}})
        await eventually(lambda: drain.poll() is not None, timeout=60, what="drain to finish")
        text = out.read_text()
        assert drain.returncode == 0, text
        assert f"node/{node} drained" in text
        left = [p for p in (await client.list("pods", namespace=ns))["items"]
                if (p.get("spec") or {}).get("nodeName") == node]
        assert left == []
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.wait()


@pytest.fixture
async def node(client, ns):
    name = f"n-{ns}"
    await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    yield name
    await client.delete("nodes", name)


@pytest.mark.kubectl
async def test_kubectl_drain_stops_at_the_budget_and_finishes_when_it_allows(cm, client, ns, node, apiserver,
                                                                             tmp_path):
    if KUBECTL is None:
        pytest.skip("no kubectl")
    await drain_against_budget(client, ns, node, [KUBECTL, *apiserver.kubectl_flags(),
                                                  "--cache-dir", str(tmp_path / "cache")], tmp_path / "drain.log")


async def test_kubectl_lite_drain_stops_at_the_budget_and_finishes_when_it_allows(cm, client, ns, node, apiserver,
                                                                                  tmp_path):
    config = write_kubeconfig(tmp_path / "kubeconfig", apiserver, ns)
    await drain_against_budget(client, ns, node, [*KL, "--kubeconfig", config],
                               tmp_path / "drain.log")


async def test_kubectl_lite_drain_gives_up_at_its_timeout(cm, client, ns, node, apiserver, tmp_path):
    await start_deployment(client, ns, node, 1)
    await client.create(pdb(maxUnavailable=0), namespace=ns)
    await settled(client, ns, disruptionsAllowed=0, currentHealthy=1)
    config = write_kubeconfig(tmp_path / "kubeconfig", apiserver, ns)
    r = await asyncio.to_thread(subprocess.run, [*KL, "--kubeconfig", config,
                                                 "drain", node, "--timeout=2s"],
                                capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "global timeout reached" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert len((await client.list("pods", namespace=ns))["items"]) == 1


async def test_kubectl_lite_describe_and_get_pdb(cm, client, ns, apiserver, tmp_path):
    await client.create(pdb(minAvailable="50%"), namespace=ns)
    await settled(client, ns, observedGeneration=1)
    config = write_kubeconfig(tmp_path / "kubeconfig", apiserver, ns)
    r = await asyncio.to_thread(subprocess.run, [*KL, "--kubeconfig", config, "describe", "pdb", "db"],
                                capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [" ".join(line.split()) for line in r.stdout.splitlines()]
    assert "Min available: 50%" in lines and "Selector: app=db" in lines and "Status:" in lines
    assert "Allowed disruptions: 0" in lines and "Total: 0" in lines
    r = await asyncio.to_thread(subprocess.run, [*KL, "--kubeconfig", config, "get", "pdb"],
                                capture_output=True, text=True, timeout=60)
    assert r.stdout.split()[:5] == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE"], r.stdout
    assert r.stdout.splitlines()[1].split()[:4] == ["db", "50%", "N/A", "0"]
