"""The controller manager: flag handling and the controller table (no server), then the
ReplicaSet and Deployment controllers end to end: a real API server, `minik8s
controller-manager` as a child process, no kubelets. `FakeKubelets` stands in for
them, marking every pod that appears Running and Ready through the status subresource.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.informer import Informer
from client.rest import Client, retry_on_conflict
from controller_manager import main as cm_main
from controller_manager.controllers import REGISTRY
from controller_manager.controllers.nodeipam import NodeIPAMOptions
from controller_manager.controllers.podgc import PodGCController, PodGCOptions
from controller_manager.manager import Manager, controller_options, enabled_controllers
from controller_manager.testing import RecordingClient
from machinery import errors
from machinery.metrics import REGISTRY as METRICS
from tests.procs import Component, eventually, free_port

KUBECTL = shutil.which("kubectl")
TIMEOUT = 20.0  # catches hangs only; everything here takes well under a second or two


# -- without a server --------------------------------------------------------------

def test_controllers_flag_reads_as_kube_controller_managers():
    known = ["a", "b", "c"]
    assert enabled_controllers("*", known) == ["a", "b", "c"]
    assert enabled_controllers("*,-b", known) == ["a", "c"]
    assert enabled_controllers("b", known) == ["b"]
    assert enabled_controllers("-a,*", known) == ["b", "c"]
    assert enabled_controllers("a,-a", known) == ["a"]  # the first mention wins
    assert enabled_controllers("", known) == []
    with pytest.raises(ValueError, match='"nope" is not in the list of known controllers'):
        enabled_controllers("*,-nope", known)


def test_the_controller_table_is_a_registry_of_controller_classes():
    assert list(REGISTRY) == ["replicaset", "deployment", "garbagecollector", "namespace",
                              "serviceaccount", "endpoints", "endpointslice", "podgc", "nodelifecycle",
                              "nodeipam", "clusterrole-aggregation", "root-ca-cert-publisher",
                              "service-lb-controller", "job", "cronjob", "ttl-after-finished",
                              "bootstrapsigner", "tokencleaner", "csrapproving", "csrsigning", "csrcleaner",
                              "disruption", "statefulset",
                              "persistentvolume-binder", "pvc-protection", "pv-protection",
                              "local-path-provisioner", "daemonset", "replicationcontroller",
                              "horizontalpodautoscaling"]
    assert all(REGISTRY[name].name == name for name in REGISTRY)
    with pytest.raises(KeyError, match='"ghost" is not in the list of known controllers'):
        REGISTRY["ghost"]
    with pytest.raises(ValueError, match="'podgc' is registered twice"):
        REGISTRY.register("podgc", PodGCController)


def test_a_misspelt_controller_option_is_an_error_not_dropped():
    rc = RecordingClient()
    with pytest.raises(ValueError, match="no controller has the option.s. terminated_pod_gc_treshold"):
        Manager(rc, controllers=["podgc"], options={"terminated_pod_gc_treshold": 3},  # type: ignore[arg-type]
                leader_elect=False)
    with pytest.raises(TypeError, match="terminated_pod_gc_treshold"):
        PodGCOptions(terminated_pod_gc_treshold=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="terminated_pod_gc_threshold"):
        PodGCController(rc, rc, terminated_pod_gc_threshold=3)  # type: ignore[call-arg]
    # An option of a controller that is not enabled is fine: the flag exists either way.
    m = Manager(rc, controllers=["podgc"], leader_elect=False,  # type: ignore[arg-type]
                options={"terminated_pod_gc_threshold": 3, "cluster_cidr": "10.9.0.0/16"})
    assert m.options == {"podgc": PodGCOptions(terminated_pod_gc_threshold=3)}
    assert m.build(rc)["podgc"].threshold == 3  # type: ignore[arg-type, attr-defined]


def test_every_controller_option_flag_reaches_the_controllers_that_declare_it():
    args = cm_main.parser().parse_args(["--terminated-pod-gc-threshold", "7", "--node-monitor-period", "3s",
                                        "--cluster-cidr", "10.9.0.0/16", "--allocate-node-cidrs"])
    options = {k: getattr(args, k) for k in args.controller_options}
    assert "terminated_pod_gc_threshold" in options and "kubeconfig" not in options
    per = controller_options(list(REGISTRY), options)
    assert per["podgc"].terminated_pod_gc_threshold == 7
    assert per["nodelifecycle"].node_monitor_period == 3.0
    assert per["nodeipam"] == NodeIPAMOptions(allocate_node_cidrs=True, cluster_cidr="10.9.0.0/16")
    for name in options:
        assert any(hasattr(o, name) for o in per.values()), name


def sample(metric: str, /, **labels: str) -> float:
    """A sample of this process's registry (0 when absent); tests compare before/after,
    as every controller built in this process counts in the same series."""
    return METRICS.get_sample_value(metric, labels) or 0.0


async def test_a_reconcile_counts_in_its_named_queues_metrics():
    rc = RecordingClient()
    m = Manager(rc, controllers=["replicaset"], leader_elect=False)  # type: ignore[arg-type]
    m.controllers = m.build(rc)  # type: ignore[arg-type]
    c = m.controllers["replicaset"]
    assert c.queue.name == "replicaset"
    q = {"name": "replicaset"}
    names = ("workqueue_adds_total", "workqueue_retries_total", "workqueue_work_duration_seconds_count")
    before = {n: sample(n, **q) for n in names}
    errors_before = sample("controller_reconcile_errors_total", controller="replicaset")

    def delta() -> tuple[float, ...]:
        return (*(sample(n, **q) - before[n] for n in names),
                sample("controller_reconcile_errors_total", controller="replicaset") - errors_before)

    rc.fail[("create", "pods")] = errors.InternalError("etcd is down")
    rc.seed({"apiVersion": "apps/v1", "kind": "ReplicaSet",
             "metadata": {"name": "web", "namespace": "default", "generation": 1},
             "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                      "template": {"metadata": {"labels": {"a": "b"}}, "spec": {}}}})
    assert delta() == (1, 0, 0, 0)  # the informer's add
    await _work_one(c)
    # Failed: requeued with backoff, counted as an error. (Its status write, applied to
    # the cache, enqueued the key again meanwhile: a second add.)
    adds, *rest = delta()
    assert adds >= 1 and rest == [1, 1, 1]
    rc.fail.clear()
    await asyncio.wait_for(_work_one(c), TIMEOUT)
    adds, *rest = delta()
    assert rest == [1, 2, 1]  # succeeded: no new retry, no new error
    assert sum(1 for v in rc.verbs() if v[:2] == ("create", "pods")) == 1


async def _work_one(c) -> None:
    key = await c.queue.get()
    try:
        await c._process(key)
    finally:
        c.queue.done(key)


def test_every_controllers_queue_is_named_so_that_it_reports():
    rc = RecordingClient()
    built = Manager(rc, controllers=list(REGISTRY), leader_elect=False).build(rc)  # type: ignore[arg-type]
    # kube-controller-manager's names where they differ from the controller's.
    other = {"endpoints": "endpoint", "endpointslice": "endpoint_slice",
             "root-ca-cert-publisher": "root_ca_cert_publisher",
             "ttl-after-finished": "ttl_jobs_to_delete",
             "bootstrapsigner": "bootstrap_signer_queue", "tokencleaner": "token_cleaner",
             "persistentvolume-binder": "claims",
             "pvc-protection": "pvcprotection", "pv-protection": "pvprotection",
             "local-path-provisioner": "local_path_provisioner", "replicationcontroller": "replicationmanager",
             "horizontalpodautoscaling": "horizontalpodautoscaler"}
    assert {n: c.queue.name for n, c in built.items()} == {n: other.get(n, n) for n in REGISTRY}


def _cm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", "controller-manager", *args],
                          capture_output=True, text=True, timeout=60)


def test_bad_flags_and_kubeconfig_are_one_line_errors(tmp_path):
    r = _cm("--kubeconfig", str(tmp_path / "missing"))
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"error: kubeconfig {tmp_path / 'missing'}: No such file or directory"]
    bad = tmp_path / "bad"
    bad.write_text("apiVersion: v1\nkind: Config\n")
    r = _cm("--kubeconfig", str(bad))
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"error: kubeconfig {bad}: kubeconfig has no current-context and none was given"]
    r = _cm("--kubeconfig", str(bad), "--controllers", "replicaset,bogus")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert '"bogus" is not in the list of known controllers' in r.stderr
    r = _cm("--leader-elect-lease-duration", "soon")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("invalid duration 'soon' (e.g. 15s, 1m30s, 250ms)")


# -- against a real API server -----------------------------------------------------

def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubelets:
    """Marks each pod that appears Running and Ready (through pods/status), and records,
    after every watch event, how many pods are ready and not terminating."""

    def __init__(self, client: Client, ns: str, *, mark_ready: bool = True):
        self.client, self.ns, self.mark_ready = client, ns, mark_ready
        self.informer = Informer(client, "pods", namespace=ns)
        self.todo: asyncio.Queue[str] = asyncio.Queue()
        self.ready_counts: list[int] = []
        self.max_pods = 0
        self.informer.add_handler(on_add=self._seen, on_update=lambda _, p: self._seen(p),
                                  on_delete=lambda _: self._count())
        self.tasks: list[asyncio.Task] = []

    def pods(self) -> list[dict]:
        return self.informer.store.list()

    def _count(self) -> None:
        pods = [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]
        self.max_pods = max(self.max_pods, len(pods))
        self.ready_counts.append(sum(1 for p in pods if _ready(p)))

    def _seen(self, pod: dict) -> None:
        self._count()
        if self.mark_ready and not _ready(pod) and not pod["metadata"].get("deletionTimestamp"):
            self.todo.put_nowait(pod["metadata"]["name"])

    async def _work(self) -> None:
        while True:
            name = await self.todo.get()
            t = now()
            try:
                await self.client.patch("pods", name, namespace=self.ns, subresource="status", patch={
                    "status": {"phase": "Running", "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
                        {"type": "Ready", "status": "True", "lastTransitionTime": t}]}})
            except errors.NotFound:
                pass

    async def __aenter__(self) -> FakeKubelets:
        self.tasks = [self.informer.start(), asyncio.create_task(self._work())]
        await self.informer.wait_for_sync(TIMEOUT)
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


def start_cm(kubeconfig: str, *extra: str, port: int | None = None) -> tuple[Component, int]:
    port = port or free_port()
    cm = Component("controller-manager", "--kubeconfig", kubeconfig,
                   "--controllers", "replicaset,deployment", "--secure-port", str(port), *extra).start()
    return cm, port


def metrics(port: int) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted label pairs) -> value, from the process's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def master(lease: str) -> tuple[str, tuple]:
    """leader_election_master_status is labelled with the Lease's name."""
    return ("leader_election_master_status", (("name", lease),))


def scrape(port: int) -> dict[tuple[str, tuple], float] | None:
    """metrics(port), or None while the process is not serving yet (or no longer)."""
    try:
        return metrics(port)
    except httpx.HTTPError:
        return None


def leads(port: int, lease: str) -> bool:
    return (scrape(port) or {}).get(master(lease)) == 1


@pytest.fixture
def controller_manager(kubeconfig):
    """One per test: a controller manager acts on every namespace, so one left running
    would act beside the processes another test starts. -> (process, port, lease)."""
    lease = f"cm-{uuid.uuid4().hex[:8]}"
    cm, port = start_cm(kubeconfig, "--leader-elect-resource-name", lease)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not leads(port, lease):
            assert cm.alive(), cm.log()
            assert time.monotonic() < deadline, cm.log()
            time.sleep(0.05)
        yield cm, port, lease
    finally:
        cm.stop()


@pytest.fixture
async def client(apiserver, ns):
    async with Client(apiserver.connection()) as c:
        yield c


def replicaset(name: str, replicas: int, image: str = "nginx:1") -> dict:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


def deployment(name: str, replicas: int, image: str, *, surge=1, unavailable=0) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


async def scale(client: Client, kind: str, name: str, replicas: int, ns: str) -> None:
    # A patch of the main resource: the server retries it on a conflict with a
    # concurrent status write (PATCH .../scale does not yet: it answers 409).
    await client.patch(kind, name, {"spec": {"replicas": replicas}}, namespace=ns)


def images(pods: list[dict]) -> list[str]:
    return sorted(p["spec"]["containers"][0]["image"] for p in pods
                  if not p["metadata"].get("deletionTimestamp"))


async def test_scales_a_replicaset_from_0_to_5_to_2(controller_manager, client, ns):
    async with FakeKubelets(client, ns) as kubelets:
        rs = await client.create(replicaset("web", 0), namespace=ns)

        async def status(want: dict):
            got = (await client.get("replicasets", "web", namespace=ns)).get("status") or {}
            return all(got.get(k, 0) == v for k, v in want.items())
        await eventually(lambda: status({"replicas": 0, "observedGeneration": 1}), what="status at 0")
        assert kubelets.pods() == []

        await scale(client, "replicasets", "web", 5, ns)
        await eventually(lambda: status({"replicas": 5, "readyReplicas": 5, "availableReplicas": 5,
                                         "fullyLabeledReplicas": 5, "observedGeneration": 2}),
                         what="5 ready")
        pods = kubelets.pods()
        assert len(pods) == 5 and kubelets.max_pods == 5
        for p in pods:
            assert p["metadata"]["name"].startswith("web-")
            assert p["metadata"]["ownerReferences"] == [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]

        await scale(client, "replicasets", "web", 2, ns)
        await eventually(lambda: status({"replicas": 2, "readyReplicas": 2, "observedGeneration": 3}),
                         what="2 left")
        await eventually(lambda: len(kubelets.pods()) == 2, what="surplus deleted")
        assert kubelets.max_pods == 5


async def test_a_deleted_pod_is_replaced(controller_manager, client, ns):
    async with FakeKubelets(client, ns) as kubelets:
        await client.create(replicaset("web", 3), namespace=ns)
        await eventually(lambda: sum(map(_ready, kubelets.pods())) == 3, what="3 ready")
        victim = kubelets.pods()[0]["metadata"]["name"]
        await client.delete("pods", victim, namespace=ns)
        await eventually(lambda: len(kubelets.pods()) == 3
                         and victim not in {p["metadata"]["name"] for p in kubelets.pods()},
                         what="replacement")
        await eventually(lambda: sum(map(_ready, kubelets.pods())) == 3, what="3 ready again")
        assert kubelets.max_pods == 3


async def test_orphans_are_adopted_and_relabelled_pods_released(controller_manager, client, ns):
    async with FakeKubelets(client, ns, mark_ready=False) as kubelets:
        orphan = await client.create({"apiVersion": "v1", "kind": "Pod",
                                      "metadata": {"name": "orphan", "labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "c", "image": "x"}]}}, namespace=ns)
        rs = await client.create(replicaset("web", 2), namespace=ns)
        await eventually(lambda: len(kubelets.pods()) == 2, what="one more pod")

        async def owner_of(name):
            refs = (await client.get("pods", name, namespace=ns))["metadata"].get("ownerReferences") or []
            return [r["uid"] for r in refs]
        assert await owner_of("orphan") == [rs["metadata"]["uid"]]
        assert orphan["metadata"]["uid"] in {p["metadata"]["uid"] for p in kubelets.pods()}

        await client.patch("pods", "orphan", {"metadata": {"labels": {"app": "debug"}}}, namespace=ns)
        await eventually(lambda: len(kubelets.pods()) == 3, what="a replacement for the released pod")
        assert await owner_of("orphan") == []


async def test_rolling_update_never_drops_below_replicas_ready(controller_manager, client, ns):
    """maxSurge 1, maxUnavailable 0: every state the watch shows has at least `replicas`
    ready pods, and the rollout ends with only v2 pods."""
    replicas = 4
    async with FakeKubelets(client, ns) as kubelets:
        await client.create(deployment("web", replicas, "nginx:v1"), namespace=ns)

        async def rolled_out(image: str):
            d = await client.get("deployments", "web", namespace=ns)
            st = d.get("status") or {}
            return (st.get("observedGeneration", 0) >= d["metadata"]["generation"]
                    and st.get("updatedReplicas") == st.get("replicas") == st.get("availableReplicas") == replicas
                    and images(kubelets.pods()) == [image] * replicas)
        await eventually(lambda: rolled_out("nginx:v1"), what="v1 rolled out")
        kubelets.ready_counts.clear()

        await client.patch("deployments", "web", {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:v2"}]}}}}, namespace=ns, patch_type="strategic")
        await eventually(lambda: rolled_out("nginx:v2"), what="v2 rolled out")
        assert kubelets.ready_counts and min(kubelets.ready_counts) >= replicas, kubelets.ready_counts

        d = await client.get("deployments", "web", namespace=ns)
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        conds = {c["type"]: (c["status"], c["reason"]) for c in d["status"]["conditions"]}
        assert conds == {"Available": ("True", "MinimumReplicasAvailable"),
                         "Progressing": ("True", "NewReplicaSetAvailable")}
        rss = (await client.list("replicasets", namespace=ns))["items"]
        assert sorted((r["spec"]["replicas"], r["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
                      for r in rss) == [(0, "1"), (replicas, "2")]


async def test_rollback_restores_the_old_template(controller_manager, client, ns, kubeconfig, tmp_path):
    async with FakeKubelets(client, ns) as kubelets:
        await client.create(deployment("web", 2, "nginx:v1"), namespace=ns)
        await eventually(lambda: images(kubelets.pods()) == ["nginx:v1"] * 2, what="v1")
        await client.patch("deployments", "web", {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:v2"}]}}}}, namespace=ns, patch_type="strategic")
        await eventually(lambda: images(kubelets.pods()) == ["nginx:v2"] * 2, what="v2")

        if KUBECTL:
            cfg = tmp_path / "config"
            cfg.write_text(open(kubeconfig).read().replace("namespace: default", f"namespace: {ns}"))
            kubectl = [KUBECTL, "--kubeconfig", str(cfg), "--cache-dir", str(tmp_path / "cache")]
            env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
            r = await asyncio.to_thread(subprocess.run, [*kubectl, "rollout", "undo", "deployment/web"],
                                        capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 0, r.stderr
        else:  # what `kubectl rollout undo` does: the old ReplicaSet's template, applied
            await client.patch("deployments", "web", {"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "nginx:v1"}]}}}}, namespace=ns, patch_type="strategic")
        await eventually(lambda: images(kubelets.pods()) == ["nginx:v1"] * 2, what="back to v1")
        if KUBECTL:
            r = await asyncio.to_thread(subprocess.run, [*kubectl, "rollout", "status", "deployment/web",
                                                         "--timeout=20s"],
                                        capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 0 and 'deployment "web" successfully rolled out' in r.stdout, r.stdout + r.stderr
        rss = (await client.list("replicasets", namespace=ns))["items"]
        # No third ReplicaSet: the first one came back, with the next revision.
        assert len(rss) == 2
        back = next(r for r in rss if r["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:v1")
        assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
        d = await client.get("deployments", "web", namespace=ns)
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"


def _get(url: str) -> tuple[int, str]:
    r = httpx.get(url, timeout=5)
    return r.status_code, r.text


async def test_serves_kube_controller_managers_health_checks(controller_manager):
    _, port, _ = controller_manager
    base = f"http://127.0.0.1:{port}"
    await eventually(lambda: _get(f"{base}/readyz") == (200, "ok"), what="/readyz ok")
    assert _get(f"{base}/healthz") == (200, "ok")
    code, body = _get(f"{base}/healthz?verbose")
    assert code == 200 and body.splitlines() == [
        "[+]ping ok", "[+]leaderElection ok", "[+]replicaset ok", "[+]deployment ok",
        "healthz check passed"]
    code, body = _get(f"{base}/readyz?verbose")
    assert code == 200 and body.splitlines() == [
        "[+]ping ok", "[+]leaderElection ok", "[+]informer-sync ok", "readyz check passed"]
    assert _get(f"{base}/livez/leaderElection") == (200, "ok")
    assert _get(f"{base}/readyz/informer-sync") == (200, "ok")
    assert _get(f"{base}/nope")[0] == 404


async def test_a_created_object_moves_its_queues_metrics(controller_manager, client, ns):
    _, port, lease = controller_manager
    rs_queue = (("name", "replicaset"),)

    def value(m: dict, name: str, labels: tuple = rs_queue) -> float:
        return m.get((name, labels), 0.0)
    before = metrics(port)
    assert before[master(lease)] == 1
    for name in ("replicaset", "deployment"):
        assert before[("running_managed_controllers",
                       (("manager", "kube-controller-manager"), ("name", name)))] == 1
        assert ("workqueue_depth", (("name", name),)) in before

    await client.create(replicaset("web", 0), namespace=ns)
    await eventually(lambda: value(metrics(port), "workqueue_adds_total")
                     > value(before, "workqueue_adds_total"), what="the replicaset queue's adds to move")
    # One reconcile per add, timed by the queue, once the worker is done with the key.
    await eventually(lambda: value(metrics(port), "workqueue_work_duration_seconds_count")
                     > value(before, "workqueue_work_duration_seconds_count"), what="a reconcile timed")
    after = metrics(port)
    assert value(after, "controller_reconcile_errors_total", (("controller", "replicaset"),)) == 0
    assert sum(v for k, v in after.items()
               if k[0] == "rest_client_requests_total" and dict(k[1])["code"] == "200") > 0
    assert after[("process_resident_memory_bytes", ())] > 0


async def test_logs_klog_lines_and_json_lines_on_request(kubeconfig, client, ns):
    # Text by default, with klog's header.
    cm, _ = start_cm(kubeconfig, "--leader-elect=false", "--secure-port", "0")
    try:
        header = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ manager\.py:\d+\] controllers started: "
                            r"replicaset, deployment$", re.M)
        await eventually(lambda: header.search(cm.log()), what="the klog-style start line")
    finally:
        cm.stop()
    assert cm.proc.returncode == 0, cm.log()

    # -v 4 --logging-format=json: one JSON object a line, V(4) reconciles among them.
    cm, _ = start_cm(kubeconfig, "--leader-elect=false", "--secure-port", "0",
                     "-v", "4", "--logging-format=json")
    try:
        await client.create(replicaset("web", 0), namespace=ns)

        def synced() -> list[dict]:
            lines = [json.loads(line) for line in open(cm.logfile.name) if line.strip()]
            return [r for r in lines if r["msg"] == "Finished syncing" and r.get("key") == f"{ns}/web"]
        record = (await eventually(synced, what="a V(4) 'Finished syncing' line"))[0]
        assert record["v"] == 4 and record["controller"] == "replicaset"
        assert record["duration"].endswith("s") and record["caller"].startswith("controller.py:")
    finally:
        cm.stop()


def test_a_taken_port_is_a_one_line_error(kubeconfig):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _cm("--kubeconfig", kubeconfig, "--leader-elect=false", "--secure-port", str(port))
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"error: cannot serve /metrics and /healthz on 127.0.0.1:{port}: Address already in use"], r.stderr


async def test_leader_kill_hands_over_without_two_leaders(kubeconfig, client, ns):
    """Two controller managers: only the Lease holder acts; kill -9 it and the other
    takes over after the lease runs out and carries on reconciling."""
    lease = f"cm-{uuid.uuid4().hex[:8]}"
    flags = ("--leader-elect-resource-name", lease, "--leader-elect-lease-duration", "2s",
             "--leader-elect-renew-deadline", "1.5s", "--leader-elect-retry-period", "0.25s")
    procs = [start_cm(kubeconfig, *flags), start_cm(kubeconfig, *flags)]

    def leading() -> list[int]:
        return [i for i, (cm, port) in enumerate(procs) if cm.alive() and leads(port, lease)]
    try:
        async with FakeKubelets(client, ns, mark_ready=False) as kubelets:
            first = (await eventually(leading, what="a leader"))[0]
            other = 1 - first
            await client.create(replicaset("web", 3), namespace=ns)
            await eventually(lambda: len(kubelets.pods()) == 3, what="3 pods")
            assert leading() == [first]
            # The follower may still be starting its server under load.
            follower = await eventually(lambda: scrape(procs[other][1]), what="the follower's /metrics")
            assert follower[master(lease)] == 0
            # A standby runs no controllers: no queue reports, and it is ready.
            assert not any(k[0] == "workqueue_adds_total" for k in follower)
            assert _get(f"http://127.0.0.1:{procs[other][1]}/readyz") == (200, "ok")

            killed_at = time.monotonic()
            procs[first][0].proc.send_signal(signal.SIGKILL)
            procs[first][0].proc.wait()
            await scale(client, "replicasets", "web", 5, ns)
            await eventually(lambda: len(kubelets.pods()) == 5, what="the new leader scales up")
            assert leading() == [other], procs[other][0].log()
            assert time.monotonic() - killed_at >= 1.0  # it waited for the lease to run out
            # Settled: the leader has counted the 5 pods in its own cache and said so in
            # the status. An over-creation would have shown as a 6th pod before that.
            async def settled() -> bool:
                rs = await client.get("replicasets", "web", namespace=ns)
                st = rs.get("status") or {}
                return st.get("replicas") == 5 and st.get("observedGeneration") == rs["metadata"]["generation"]
            await eventually(settled, what="the new leader's status to report 5 replicas")
            live = [p for p in (await client.list("pods", namespace=ns))["items"]
                    if not p["metadata"].get("deletionTimestamp")]
            assert len(live) == 5 and kubelets.max_pods == 5

            held = await client.get("leases", lease, namespace="kube-system")
            assert held["spec"]["leaseTransitions"] == 1

            # SIGTERM gives the Lease up at once rather than letting it expire.
            procs[other][0].stop()
            assert procs[other][0].proc.returncode == 0, procs[other][0].log()
            held = await client.get("leases", lease, namespace="kube-system")
            assert held["spec"].get("holderIdentity", "") == ""
    finally:
        for cm, _ in procs:
            cm.stop(signal.SIGKILL)


async def test_losing_the_lease_stops_the_process(kubeconfig, client):
    """Another holder in the Lease: the leader stops at once and exits 1, as
    kube-controller-manager does, to be restarted clean."""
    lease = f"cm-{uuid.uuid4().hex[:8]}"
    cm, port = start_cm(kubeconfig, "--leader-elect-resource-name", lease,
                        "--leader-elect-lease-duration", "2s", "--leader-elect-renew-deadline", "1.5s",
                        "--leader-elect-retry-period", "0.25s")
    try:
        await eventually(lambda: leads(port, lease), what="leadership")

        async def usurp():  # re-read on conflict: the leader renews every 0.25s
            held = await client.get("leases", lease, namespace="kube-system")
            held["spec"]["holderIdentity"] = "usurper"
            await client.update(held)
        await retry_on_conflict(usurp, steps=20)
        await eventually(lambda: not cm.alive(), what="the process to exit")
        assert cm.proc.returncode == 1
        assert "leader election lost" in cm.log()
    finally:
        cm.stop(signal.SIGKILL)
