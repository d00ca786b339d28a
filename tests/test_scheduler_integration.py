"""`minik8s scheduler` processes against a real API server, with node objects only (no
kubelets): spreading, selectors and taints, the unschedulable story, no over-commit
under a burst, leader failover, /metrics and the health endpoints, and the command line's errors.

The module runs its own etcd and API server, so the node count in "0/N nodes are
available" is exactly what a test created; every test deletes its nodes when it ends,
uses a fresh namespace and its own scheduler name.
"""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid

import httpx
import pytest

from prometheus_client.parser import text_string_to_metric_families

from client.rest import Client
from scheduler.main import main as scheduler_main
from tests.procs import APIServer, Component, Etcd, default_service_account, free_port, wait_for

HEADER = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    etcd = Etcd().start()
    server = APIServer(etcd.url).start()
    path = server.write_kubeconfig(tmp_path_factory.mktemp("sched") / "kubeconfig")
    yield server, str(path)
    server.stop()
    etcd.stop()


class Env:
    """One test's view: its namespace, scheduler name, nodes and scheduler processes."""

    def __init__(self, server: APIServer, kubeconfig: str, tmp_path):
        self.server, self.url, self.kubeconfig, self.tmp = server, server.url, kubeconfig, tmp_path
        self.http = server.client(timeout=30)
        self.ns = "t-" + uuid.uuid4().hex[:8]
        self.name = "sched-" + uuid.uuid4().hex[:8]
        self.nodes: list[str] = []
        self.procs: list[Component] = []
        r = self.http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": self.ns}})
        assert r.status_code == 201, r.text
        default_service_account(self.http, self.ns)

    def node(self, name: str, *, cpu="4", memory="8Gi", pods="110", labels=None, taints=None) -> str:
        name = f"{name}-{self.ns}"
        alloc = {"cpu": cpu, "memory": memory, "pods": pods}
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
                "spec": {"taints": taints} if taints else {},
                "status": {"capacity": alloc, "allocatable": alloc,
                           "conditions": [{"type": "Ready", "status": "True"}]}}
        r = self.http.post("/api/v1/nodes", json=body)
        assert r.status_code == 201, r.text
        self.nodes.append(name)
        return name

    def pod_body(self, name: str, *, cpu="100m", memory="64Mi", **spec) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"schedulerName": self.name,
                         "containers": [{"name": "c", "image": "pause",
                                         "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
                         **spec}}

    def pod(self, name: str, **kw) -> None:
        r = self.http.post(f"/api/v1/namespaces/{self.ns}/pods", json=self.pod_body(name, **kw))
        assert r.status_code == 201, r.text

    def pods(self) -> list[dict]:
        return self.http.get(f"/api/v1/namespaces/{self.ns}/pods").json()["items"]

    def get_pod(self, name: str) -> dict:
        return self.http.get(f"/api/v1/namespaces/{self.ns}/pods/{name}").json()

    def placement(self) -> dict[str, str | None]:
        return {p["metadata"]["name"]: p["spec"].get("nodeName") for p in self.pods()}

    def wait_bound(self, n: int, timeout: float = 30) -> dict[str, str]:
        def enough():
            got = {k: v for k, v in self.placement().items() if v}
            return got if len(got) >= n else None
        return wait_for(enough, timeout, interval=0.05, what=f"{n} pods bound")

    def scheduler(self, *flags: str, profile: str = "") -> Component:
        """A scheduler process serving /metrics and health on a free port (`.port`)."""
        cfg = self.tmp / f"config-{len(self.procs)}.yaml"
        cfg.write_text(HEADER + f"profiles:\n- schedulerName: {self.name}\n{profile}")
        port = free_port()
        proc = Component("scheduler", "--kubeconfig", self.kubeconfig, "--config", str(cfg),
                         "--secure-port", str(port), *flags).start()
        proc.port = port
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        for n in self.nodes:
            self.http.delete(f"/api/v1/nodes/{n}")
        self.http.close()


@pytest.fixture
def env(cluster, tmp_path):
    e = Env(*cluster, tmp_path)
    yield e
    e.close()


def test_spreads_pods_by_least_allocated(env):
    nodes = [env.node(f"n{i}") for i in range(3)]
    env.scheduler("--leader-elect=false")
    for i in range(6):
        env.pod(f"p{i}", cpu="1", memory="1Gi")
    placed = env.wait_bound(6)
    assert sorted(list(placed.values()).count(n) for n in nodes) == [2, 2, 2]
    # Each binding got its event and the binding's PodScheduled=True condition.
    events = env.http.get(f"/api/v1/namespaces/{env.ns}/events").json()["items"]
    wait_for(lambda: len([e for e in env.http.get(f"/api/v1/namespaces/{env.ns}/events").json()["items"]
                          if e["reason"] == "Scheduled"]) == 6, 10, what="Scheduled events")
    events = env.http.get(f"/api/v1/namespaces/{env.ns}/events").json()["items"]
    assert {e["message"] for e in events if e["reason"] == "Scheduled"} == {
        f"Successfully assigned {env.ns}/{p} to {n}" for p, n in placed.items()}
    cond = next(c for c in env.get_pod("p0")["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "True"


def test_respects_node_selector_and_taints(env):
    plain = env.node("plain", labels={"disk": "ssd"})
    tainted = env.node("gpu", labels={"disk": "ssd"},
                       taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    other = env.node("hdd", labels={"disk": "hdd"})
    env.scheduler("--leader-elect=false")
    tolerate = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    for i in range(4):
        env.pod(f"ssd-{i}", nodeSelector={"disk": "ssd"})
        env.pod(f"any-{i}")
        env.pod(f"tol-{i}", nodeSelector={"disk": "ssd"}, tolerations=tolerate)
    placed = env.wait_bound(12)
    assert {placed[f"ssd-{i}"] for i in range(4)} == {plain}
    assert {placed[f"any-{i}"] for i in range(4)} <= {plain, other}
    assert {placed[f"tol-{i}"] for i in range(4)} <= {plain, tainted}
    assert tainted in {placed[f"tol-{i}"] for i in range(4)}  # least allocated sends some there


def test_unschedulable_pod_says_why_and_lands_on_a_new_node(env):
    env.node("small1", cpu="1", labels={"disk": "ssd"})
    env.node("small2", cpu="1", labels={"disk": "ssd"})
    env.node("gpu1", labels={"disk": "ssd"}, taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    env.node("gpu2", labels={"disk": "ssd"}, taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    env.node("hdd")
    env.scheduler("--leader-elect=false")
    env.pod("big", cpu="2", nodeSelector={"disk": "ssd"})
    want = ("0/5 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
            "2 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}.")

    def condition():
        c = next((c for c in env.get_pod("big")["status"].get("conditions") or ()
                  if c["type"] == "PodScheduled"), None)
        return c if c and c.get("message") else None
    cond = wait_for(condition, 20, what="PodScheduled condition")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", want)

    def failed_event():
        return next((e for e in env.http.get(f"/api/v1/namespaces/{env.ns}/events").json()["items"]
                     if e["reason"] == "FailedScheduling"), None)
    ev = wait_for(failed_event, 10, what="FailedScheduling event")
    assert (ev["type"], ev["message"], ev["involvedObject"]["name"]) == ("Warning", want, "big")
    assert ev["source"]["component"] == "default-scheduler"

    roomy = env.node("roomy", cpu="4", labels={"disk": "ssd"})
    assert env.wait_bound(1, timeout=15) == {"big": roomy}


def test_no_node_is_overcommitted_when_500_pods_arrive_at_once(env):
    # 20 nodes x 2 cpu hold 400 pods of 100m; the other 100 must stay pending.
    nodes = [env.node(f"n{i}", cpu="2", memory="4Gi") for i in range(20)]
    env.scheduler("--leader-elect=false")

    async def create_all():
        async with Client(env.server.connection()) as c:
            todo = iter(range(500))

            async def creator():
                for i in todo:
                    await c.create(env.pod_body(f"p{i}", cpu="100m", memory="128Mi"), namespace=env.ns)
            await asyncio.gather(*(creator() for _ in range(20)))
    asyncio.run(create_all())
    placed = env.wait_bound(400, timeout=60)

    def pending_reported():
        pods = env.pods()
        waiting = [p for p in pods if not p["spec"].get("nodeName")]
        said = [p for p in waiting if any(c["type"] == "PodScheduled" and c["status"] == "False"
                                          for c in p["status"].get("conditions") or ())]
        return len(waiting) == 100 and len(said) == 100
    wait_for(pending_reported, 30, what="100 pods reported unschedulable")
    per_node = {n: 0 for n in nodes}
    for node in placed.values():
        per_node[node] += 1
    assert len(placed) == 400
    assert all(count * 100 <= 2000 for count in per_node.values()), per_node
    assert set(per_node.values()) == {20}


def lease_holder(env) -> str:
    r = env.http.get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler")
    return r.json()["spec"].get("holderIdentity") or "" if r.status_code == 200 else ""


def identity_of(proc: Component) -> str:
    line = next(text for text in proc.log().splitlines() if "waiting to lead" in text)
    return line.split(": waiting to lead")[0].rsplit(" ", 1)[1]


def test_leader_failover(env):
    env.node("n1")
    flags = ("--leader-elect=true", "--lease-duration=3s", "--renew-deadline=2s", "--retry-period=0.3s")
    a, b = env.scheduler(*flags), env.scheduler(*flags)
    wait_for(lambda: "waiting to lead" in a.log() and "waiting to lead" in b.log(), 20,
             what="both schedulers up")
    ids = {identity_of(a): a, identity_of(b): b}
    leader_id = wait_for(lambda: lease_holder(env) in ids and lease_holder(env), 20, what="a leader")
    leader, follower = ids[leader_id], next(p for i, p in ids.items() if i != leader_id)
    env.pod("first")
    assert env.wait_bound(1, timeout=20)
    wait_for(lambda: "caches synced" in follower.log(), 20, what="the follower's informers")
    assert "] scheduling\n" not in follower.log()  # a warm cache, but it does not schedule

    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait()
    env.pod("second")
    placed = env.wait_bound(2, timeout=30)
    assert placed["second"]
    assert lease_holder(env) == identity_of(follower)
    assert "] scheduling\n" in follower.log()


def scrape(proc: Component) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"http://127.0.0.1:{proc.port}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_serves_kube_scheduler_metrics_and_health(env):
    env.node("n1", cpu="1")
    sched = env.scheduler("--leader-elect=true", "--lease-duration=3s", "--renew-deadline=2s",
                          "--retry-period=0.3s", "--leader-elect-resource-name", env.name)
    base = f"http://127.0.0.1:{sched.port}"
    wait_for(lambda: sched.alive() and _get(f"{base}/readyz") == (200, "ok"), 30, what="/readyz ok")
    code, body = _get(f"{base}/healthz?verbose")
    assert code == 200 and body == "[+]ping ok\n[+]leaderElection ok\nhealthz check passed\n"
    code, body = _get(f"{base}/readyz?verbose")
    assert body.splitlines() == ["[+]ping ok", "[+]shutdown ok", "[+]sched-handler-sync ok",
                                 "[+]leaderElection ok", "readyz check passed"]
    assert _get(f"{base}/livez/leaderElection") == (200, "ok")

    for i in range(2):
        env.pod(f"fits{i}", cpu="400m")
    env.wait_bound(2)
    env.pod("too-big", cpu="2")
    profile = ("profile", env.name)

    def attempts(result: str) -> float:
        return scrape(sched).get(("scheduler_schedule_attempts_total", (profile, ("result", result))), 0)
    wait_for(lambda: attempts("scheduled") == 2 and attempts("unschedulable") >= 1, 20,
             what="the attempts counted")
    m = scrape(sched)
    assert m[("scheduler_pending_pods", (("queue", "unschedulable"),))] == 1
    assert m[("scheduler_pending_pods", (("queue", "active"),))] == 0
    assert m[("scheduler_scheduling_attempt_duration_seconds_count", (profile, ("result", "scheduled")))] == 2
    assert m[("scheduler_pod_scheduling_sli_duration_seconds_count", (("attempts", "1"),))] == 2
    assert m[("scheduler_pod_scheduling_attempts_count", ())] == 2
    assert m[("scheduler_scheduling_algorithm_duration_seconds_count", ())] >= 3
    assert m[("leader_election_master_status", (("name", env.name),))] == 1
    assert m[("rest_client_requests_total", (("code", "201"), ("host", env.url.split("//")[1]),
                                             ("method", "POST")))] >= 2  # bindings, events
    assert m[("process_resident_memory_bytes", ())] > 0
    assert ("scheduler_pod_scheduling_duration_seconds_count", (("attempts", "1"),)) not in m  # hidden in 1.32

    sched.stop()
    assert sched.proc.returncode == 0
    assert "scheduler metrics: cycles=" in sched.log()  # the summary bench/scheduler.py reads


def _get(url: str) -> tuple[int, str]:
    try:
        r = httpx.get(url, timeout=5)
    except httpx.TransportError:
        return 0, ""
    return r.status_code, r.text


def test_a_taken_port_ends_the_process(env):
    first = env.scheduler("--leader-elect=false")
    wait_for(lambda: _get(f"http://127.0.0.1:{first.port}/healthz")[0] == 200, 30, what="first up")
    second = env.scheduler("--leader-elect=false", "--secure-port", str(first.port))
    assert second.proc.wait(30) == 1
    assert "failed to serve /metrics and /healthz" in second.log()
    assert "Traceback" not in second.log()


# --- the command line ------------------------------------------------------------------------


def test_command_line_errors_are_one_clean_line(tmp_path, capsys):
    def run(*argv) -> str:
        assert scheduler_main(list(argv)) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err.strip()

    assert run() == "error: --kubeconfig is required (or clientConnection.kubeconfig in --config)"
    assert run("--kubeconfig", str(tmp_path / "nope")) == \
        f"error: kubeconfig {tmp_path / 'nope'}: No such file or directory"
    bad = tmp_path / "bad"
    bad.write_text("{{{ not yaml")
    assert run("--kubeconfig", str(bad)).startswith(f"error: kubeconfig {bad}: ")
    empty = tmp_path / "empty"
    empty.write_text("apiVersion: v1\nkind: Config\n")
    assert run("--kubeconfig", str(empty)) == \
        f"error: kubeconfig {empty}: kubeconfig has no current-context and none was given"
    assert run("--kubeconfig", str(empty), "--config", str(tmp_path / "nope.yaml")) == \
        f"error: config {tmp_path / 'nope.yaml'}: No such file or directory"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(HEADER + "profiles:\n- plugins:\n    score:\n      enabled: [{name: InterPodAffinity}]\n")
    assert run("--kubeconfig", str(empty), "--config", str(cfg)) == (
        f"error: config {cfg}: plugin 'InterPodAffinity' is not registered "
        "(a kube-scheduler plugin minik8s does not implement)")
    cfg.write_text(HEADER + "profiles: [\n")
    assert run("--kubeconfig", str(empty), "--config", str(cfg)).startswith(
        f"error: config {cfg}: not valid YAML")
    assert run("--kubeconfig", str(empty), "--lease-duration=1s", "--renew-deadline=2s") == (
        "error: leader election needs lease duration (1s) > renew deadline (2s) > 1.2 x retry period (2s)")


def test_command_line_usage_errors_exit_2_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "scheduler", "--leader-elect=maybe"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "argument --leader-elect: expected true or false, got 'maybe'" in r.stderr
