"""`minik8s up --nodes 3` end to end (root): real etcd, API server, scheduler, controller
manager and three kubelets, each in its own network namespace, running real pods.

One cluster is shared by the tests of this module (they run in file order, and each
leaves the cluster as the next expects it); it lives in a temporary state dir with its
own port, address ranges, bridge, namespace and cgroup names, so it never meets a
user's cluster or another test's. `minik8s down` runs at the end whatever happens.
"""
import importlib.util
import os
import signal
import subprocess
import sys

import httpx
import pytest

from cluster import bringup, host, network
from cluster.cgroups import ClusterCgroups
from cluster.state import ClusterConfig
from kubelet.images import HOST_ROOT_IMAGE
from tests.procs import free_port, wait_for
from tests.test_cluster_cli import minik8s
from tests.test_cluster_network import unique_cidrs

COMPONENT_MODULES = ("scheduler.main", "controller_manager.main", "kubelet.main")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in COMPONENT_MODULES),
                       reason="a component is missing: " + ", ".join(
                           m for m in COMPONENT_MODULES if importlib.util.find_spec(m) is None)),
]

# Shortened node lifecycle: a node is NotReady 6 s after its last lease renewal, and
# its pods are evicted 3 s after that.
CONTROLLER_MANAGER_ARGS = ("--node-monitor-period=1s --node-monitor-grace-period=6s "
                           "--default-not-ready-toleration-seconds=3 "
                           "--default-unreachable-toleration-seconds=3 --node-eviction-rate=10")
KUBELET_ARGS = "--lease-renew-interval=1 --node-status-update-frequency=2"
KUBECTL_LITE = os.path.join(os.path.dirname(sys.executable), "kubectl-lite")
WEB = "cd /tmp && hostname > index.html && exec python3 -m http.server 8080"


class Cluster:
    def __init__(self, cfg: ClusterConfig, cache_dir: str):
        self.cfg = cfg
        # the user's kubeconfig: the admin certificate, the cluster CA
        self.api = httpx.Client(base_url=cfg.api_url, timeout=30, verify=bringup.admin_tls(cfg))
        self.cache_dir = cache_dir

    def cli(self, *args, timeout=180):
        return minik8s(*args, "--state-dir", self.cfg.state_dir, timeout=timeout)

    def kubectl(self, *args, binary="kubectl", check=True):
        extra = ["--cache-dir", self.cache_dir] if binary == "kubectl" else []
        r = subprocess.run([binary, "--kubeconfig", self.cfg.kubeconfig, *extra, *args],
                           capture_output=True, text=True, timeout=60)
        if check:
            assert r.returncode == 0, f"{binary} {' '.join(args)}: {r.stdout}{r.stderr}"
        return r

    def nodes(self) -> dict[str, dict]:
        return {n["metadata"]["name"]: n for n in self.api.get("/api/v1/nodes").json()["items"]}

    def pods(self, selector="app=web") -> list[dict]:
        r = self.api.get("/api/v1/namespaces/default/pods", params={"labelSelector": selector})
        return r.json()["items"]

    def running(self, selector="app=web") -> list[dict]:
        """Pods Running and Ready, not being deleted."""
        return [p for p in self.pods(selector) if not p["metadata"].get("deletionTimestamp")
                and p.get("status", {}).get("phase") == "Running"
                and any(c["type"] == "Ready" and c["status"] == "True"
                        for c in p["status"].get("conditions", ()))]

    def status(self) -> dict:
        return bringup.read_json(bringup.status_path(self.cfg))

    def scale(self, replicas: int) -> None:
        r = self.api.patch("/apis/apps/v1/namespaces/default/deployments/web",
                           json={"spec": {"replicas": replicas}},
                           headers={"content-type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text


def leftovers(cfg: ClusterConfig) -> list[str]:
    """Everything of the cluster still on the machine: namespaces, links, routes,
    cgroups, mounts, processes."""
    out = network.leftovers(cfg)
    if ClusterCgroups(cfg.cgroup_name).exists():
        out.append(f"cgroup {cfg.cgroup_name}")
    out += [f"mount {m}" for m in host.mounts_under(cfg.state_dir)]
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cfg.state_dir in cmd:
                out.append(f"process {pid}: {cmd[:100]}")
    return out


def dump_logs(cfg: ClusterConfig) -> str:
    out = []
    for name in ("supervisor", "controller-manager", "scheduler", "kubelet-node-1", "kubelet-node-2"):
        out.append(f"--- {name}:\n{bringup.log_tail(cfg.log_path(name), 15)}")
    return "\n".join(out)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = str(tmp_path_factory.mktemp("cluster"))
    node_cidr, cluster_cidr = unique_cidrs()
    r = minik8s("up", "--nodes", "3", "--state-dir", state, "--port", str(free_port()),
                "--node-cidr", node_cidr, "--cluster-cidr", cluster_cidr,
                f"--controller-manager-args={CONTROLLER_MANAGER_ARGS}", f"--kubelet-args={KUBELET_ARGS}",
                timeout=240)
    cfg = ClusterConfig.load(state)
    try:
        assert r.returncode == 0, r.stdout + r.stderr + (dump_logs(cfg) if cfg else "")
        c = Cluster(cfg, str(tmp_path_factory.mktemp("kubectl-cache")))
        c.up_output = r.stdout
        yield c
    finally:
        if cfg is not None:
            minik8s("down", "--state-dir", state, timeout=180)
            bringup.cleanup(cfg)  # in case `down` itself failed: never leave anything behind


def test_up_brings_all_nodes_ready(cluster):
    out = cluster.up_output
    for line in ("etcd", "apiserver", "controller-manager", "scheduler", "route-syncer",
                 "node-1 ", "node-2 ", "node-3 ", "Cluster ready", "kubectl-lite", "kubectl get",
                 f"KUBECONFIG={cluster.cfg.kubeconfig}", "pki ", "admin certificate"):
        assert line in out, out
    nodes = cluster.nodes()
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    cidrs = set()
    for name, node in nodes.items():
        assert bringup.node_ready(node), node["status"]
        assert bringup.internal_ip(node) == cluster.cfg.node_ip(name)
        cidrs.add(node["spec"]["podCIDR"])
    assert len(cidrs) == 3
    assert all(c.startswith(cluster.cfg.cluster_cidr.split(".")[0] + ".") for c in cidrs)
    r = cluster.cli("status")
    assert r.returncode == 0 and "3 of 3 Ready" in r.stdout, r.stdout + r.stderr
    for component in ("etcd", "apiserver", "controller-manager", "scheduler", "route-syncer",
                      "kubelet-node-1", "kubelet-node-2", "kubelet-node-3"):
        assert cluster.status()["components"][component]["state"] == "running"
    assert "kubelet" in cluster.cli("logs", "node-1", "--tail", "50").stdout


def test_a_deployment_spreads_across_the_three_nodes(cluster):
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "terminationGracePeriodSeconds": 2,  # the server is PID 1: SIGTERM does nothing
                     "containers": [{"name": "web", "image": HOST_ROOT_IMAGE, "command": ["sh", "-c", WEB],
                                     "ports": [{"containerPort": 8080}],
                                     # Ready once it serves: Running only says it started.
                                     "readinessProbe": {"httpGet": {"path": "/", "port": 8080},
                                                        "periodSeconds": 1},
                                     "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}}]}}}}
    r = cluster.api.post("/apis/apps/v1/namespaces/default/deployments", json=deployment)
    assert r.status_code == 201, r.text
    wait_for(lambda: len(cluster.running()) == 6, timeout=120, what="6 web pods Running")
    assert {p["spec"]["nodeName"] for p in cluster.running()} == {"node-1", "node-2", "node-3"}


def test_a_service_gets_endpointslices_of_its_pods_and_the_kubernetes_service_its_own(cluster):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    r = cluster.api.post("/api/v1/namespaces/default/services", json=svc)
    assert r.status_code == 201, r.text
    want = {(p["status"]["podIP"], p["spec"]["nodeName"]) for p in cluster.running()}

    def listed():
        items = cluster.api.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                                params={"labelSelector": "kubernetes.io/service-name=web"}).json()["items"]
        got = {(e["addresses"][0], e["nodeName"]) for s in items for e in s.get("endpoints") or ()
               if e["conditions"]["ready"]}
        return got == want and items
    [slice_] = wait_for(listed, timeout=60, what="the web Service's EndpointSlice")
    assert slice_["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert slice_["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    k8s = cluster.api.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes").json()
    assert k8s["endpoints"][0]["addresses"] == [cluster.cfg.host_ip]


def test_a_pod_on_node_1_fetches_from_a_pod_on_node_3_by_ip(cluster):
    target = next(p for p in cluster.running() if p["spec"]["nodeName"] == "node-3")
    name, ip = target["metadata"]["name"], target["status"]["podIP"]
    fetch = ("import urllib.request, sys; body = urllib.request.urlopen("
             f"'http://{ip}:8080/', timeout=10).read().decode().strip(); print(body); "
             f"sys.exit(0 if body == {name!r} else 1)")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fetch", "labels": {"app": "fetch"}},
           "spec": {"nodeName": "node-1", "restartPolicy": "Never",
                    "containers": [{"name": "fetch", "image": HOST_ROOT_IMAGE, "command": ["python3", "-c", fetch]}]}}
    r = cluster.api.post("/api/v1/namespaces/default/pods", json=pod)
    assert r.status_code == 201, r.text

    def done():
        p = cluster.api.get("/api/v1/namespaces/default/pods/fetch").json()
        return p["status"].get("phase") in ("Succeeded", "Failed") and p
    p = wait_for(done, timeout=90, what="the fetching pod to finish")
    assert p["status"]["phase"] == "Succeeded", (p["status"], dump_logs(cluster.cfg))
    node1_cidr = cluster.nodes()["node-1"]["spec"]["podCIDR"]
    assert p["status"]["podIP"].rsplit(".", 1)[0] == node1_cidr.rsplit(".", 1)[0]
    cluster.api.delete("/api/v1/namespaces/default/pods/fetch")


@pytest.mark.kubectl
def test_kubectl_drives_it(cluster):
    out = cluster.kubectl("get", "nodes", "-o", "wide").stdout
    assert all(f"node-{i}" in out for i in (1, 2, 3)) and out.count(" Ready ") == 3, out
    out = cluster.kubectl("get", "pods", "-l", "app=web", "-o", "wide").stdout
    assert out.count("Running") == 6, out
    cluster.kubectl("scale", "deployment", "web", "--replicas=7")
    wait_for(lambda: len(cluster.running()) == 7, timeout=90, what="7 web pods")
    pod = cluster.running()[0]["metadata"]["name"]
    assert cluster.kubectl("exec", pod, "--", "hostname").stdout.strip() == pod
    cluster.kubectl("scale", "deployment", "web", "--replicas=6")
    wait_for(lambda: len(cluster.pods()) == 6, timeout=90, what="back to 6 web pods")


@pytest.mark.kubectl
def test_kubectl_port_forward_reaches_a_pod_through_the_tls_kubelet(cluster):
    # API server -> kubelet over HTTPS with the API server's client certificate, the
    # kubelet authorizing it by a SubjectAccessReview; kubectl over WebSocket, then over
    # its plain SPDY/3.1 fallback (through the API server's TLS front).
    pod = cluster.running()[0]["metadata"]["name"]
    for env in ({}, {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}):
        proc = subprocess.Popen(["kubectl", "--kubeconfig", cluster.cfg.kubeconfig, "--cache-dir",
                                 cluster.cache_dir, "port-forward", f"pod/{pod}", ":8080"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env})
        try:
            line = proc.stdout.readline()
            assert line.startswith("Forwarding from 127.0.0.1:"), line + proc.stderr.read()
            port = int(line.split(":")[1].split()[0])
            r = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
            assert r.status_code == 200 and r.text.strip() == pod, r.text
        finally:
            proc.terminate()
            proc.wait(10)


def test_kubectl_lite_drives_it(cluster):
    if not os.path.exists(KUBECTL_LITE):
        pytest.skip(f"kubectl-lite is not installed ({KUBECTL_LITE})")
    out = cluster.kubectl("get", "nodes", binary=KUBECTL_LITE).stdout
    assert out.count(" Ready ") == 3, out
    out = cluster.kubectl("get", "pods", "-o", "wide", "-l", "app=web", binary=KUBECTL_LITE).stdout
    assert out.count("Running") == 6 and "node-" in out, out
    cluster.kubectl("scale", "deployment", "web", "--replicas=7", binary=KUBECTL_LITE)
    wait_for(lambda: len(cluster.running()) == 7, timeout=90, what="7 web pods")
    cluster.kubectl("scale", "deployment", "web", "--replicas=6", binary=KUBECTL_LITE)
    wait_for(lambda: len(cluster.pods()) == 6, timeout=90, what="back to 6 web pods")


def test_node_stop_moves_its_pods_and_node_start_brings_it_back(cluster):
    wait_for(lambda: len(cluster.running()) == 6, timeout=90, what="6 web pods")
    on_node2 = {p["metadata"]["name"] for p in cluster.running() if p["spec"]["nodeName"] == "node-2"}
    assert on_node2
    r = cluster.cli("node", "stop", "node-2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert cluster.status()["components"]["kubelet-node-2"]["state"] == "stopped"
    wait_for(lambda: not bringup.node_ready(cluster.nodes()["node-2"]), timeout=60, what="node-2 NotReady")
    # the supervisor ticked many times while the node went NotReady (tens of seconds)
    assert cluster.status()["components"]["kubelet-node-2"]["state"] == "stopped"  # not restarted

    def moved():
        pods = cluster.running()
        return len(pods) == 6 and all(p["spec"]["nodeName"] != "node-2" for p in pods)
    wait_for(moved, timeout=120, what="node-2's pods recreated on the other nodes")
    assert not on_node2 & {p["metadata"]["name"] for p in cluster.running()}

    r = cluster.cli("node", "start", "node-2")
    assert r.returncode == 0 and "node-2: Ready" in r.stdout, r.stdout + r.stderr
    assert bringup.node_ready(cluster.nodes()["node-2"])
    # back, the kubelet finds its pods deleted and confirms it
    wait_for(lambda: not [p for p in cluster.pods() if p["spec"].get("nodeName") == "node-2"],
             timeout=90, what="the evicted pods gone from node-2")


def test_killed_control_plane_components_are_restarted(cluster):
    before = cluster.status()["components"]
    for name in ("scheduler", "controller-manager"):
        c = before[name]
        assert host.kill(c["pid"], c["start"], signal.SIGKILL)

    def restarted():
        now = cluster.status()["components"]
        return all(now[n]["state"] == "running" and now[n]["pid"] != before[n]["pid"]
                   and now[n]["restarts"] == before[n]["restarts"] + 1
                   for n in ("scheduler", "controller-manager"))
    wait_for(restarted, timeout=60, what="the scheduler and controller manager restarted")
    # the cluster converges: a new replica is created, scheduled and run, a deleted pod replaced
    cluster.scale(8)
    wait_for(lambda: len(cluster.running()) == 8, timeout=120, what="8 web pods")
    victim = cluster.running()[0]["metadata"]["name"]
    cluster.api.delete(f"/api/v1/namespaces/default/pods/{victim}")
    wait_for(lambda: len(cluster.running()) == 8 and victim not in
             {p["metadata"]["name"] for p in cluster.pods()}, timeout=120, what="the deleted pod replaced")
    cluster.scale(6)
    wait_for(lambda: len(cluster.pods()) == 6, timeout=90, what="back to 6 web pods")


def test_down_leaves_nothing_and_up_brings_the_same_cluster_back(cluster):
    cfg = cluster.cfg
    r = cluster.cli("down")
    assert r.returncode == 0, r.stdout + r.stderr
    assert leftovers(cfg) == []
    assert cluster.cli("status").returncode == 3
    assert os.path.isdir(cfg.path("etcd", "data"))

    r = cluster.cli("up", timeout=240)
    assert r.returncode == 0 and "Restarting" in r.stdout, r.stdout + r.stderr + dump_logs(cfg)
    assert all(bringup.node_ready(n) for n in cluster.nodes().values())
    r = cluster.api.get("/apis/apps/v1/namespaces/default/deployments/web")
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 6
    wait_for(lambda: len(cluster.running()) == 6, timeout=120, what="the web pods running again")

    # A supervisor killed outright takes its components with it but not the pods;
    # `down` still finds and removes everything.
    sup = cluster.status()["supervisor"]
    assert host.kill(sup["pid"], sup["start"], signal.SIGKILL)
    wait_for(lambda: bringup.running_pid(cfg) is None, what="the supervisor gone")
    r = cluster.cli("down")
    assert r.returncode == 0 and "Removed what was left" in r.stdout, r.stdout + r.stderr
    assert leftovers(cfg) == []
