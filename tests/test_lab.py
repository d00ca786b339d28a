"""Issue 16's acceptance tests on the lab of tests/lab.py (root, slow): the Ansible playbook
brings up three control-plane hosts and three workers over SSH (one worker behind a router,
so the pod network is VXLAN), then the cluster is checked and broken.

The tests share ONE lab and ONE cluster (module scope), in file order: every node Ready; a
Deployment of 6 spread over the workers; pod to pod across the router by IP and by
Service name; the etcd leader's host crashing under a stream of writes; an API server
killed; a worker cut off and back (issue 19's network partition: its pods recreated
elsewhere, its stale copies killed when it returns, and nothing false reported in
between); a second playbook run that changes nothing; reset.yml
leaving every host, and the machine, as they were. The lab itself is removed whatever
happens (tests/lab.py). Pods run the kubelet's host-root image (`minik8s.local/host-root`:
the machine's root, nothing pulled) with the machine's /usr/bin/python3.

The controller managers run with `--node-monitor-grace-period=20s` (the playbook's
minik8s_controller_manager_extra_args, kubeadm's controllerManager.extraArgs) instead of
40 s: twice the kubelet's 10 s lease renewal, so the cut-off worker goes NotReady sooner.

Everything the cluster does is eventually true, so every check polls with a timeout that
only catches a hang; nothing sleeps instead of a condition.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from client import kubeconfig
from tests.lab import Host, Lab, cmdline, descendants, machine_state
from tests.procs import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSIBLE = os.path.join(ROOT, "deploy", "ansible")
BIN = os.path.dirname(sys.executable)
MINIK8S = os.path.join(BIN, "minik8s")
KUBECTL_LITE = os.path.join(BIN, "kubectl-lite")
HOST_ROOT = "minik8s.local/host-root"

CONTROL_PLANE = ["cp1", "cp2", "cp3"]
WORKERS_SAME_LINK = ["w1", "w2"]
WORKERS_ROUTED = ["w3"]
WORKERS = WORKERS_SAME_LINK + WORKERS_ROUTED
GRACE = "20s"   # the controller manager's --node-monitor-grace-period (Kubernetes: 40s)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab's namespaces and the linux runtime need root"),
]


class LabCluster:
    """The lab, its inventory and admin access to the cluster the playbook made."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.inventory = lab.inventory(
            CONTROL_PLANE, WORKERS, minik8s_bin=MINIK8S, minik8s_manage_packages=False,
            minik8s_network_backend="vxlan", minik8s_pod_network_cidr=lab.cluster_cidr,
            minik8s_controller_manager_extra_args={"node-monitor-grace-period": GRACE})
        self.kubeconfig = os.path.join(lab.dir, "admin.conf")
        self._api: httpx.Client | None = None

    def playbook(self, name: str):
        return self.lab.playbook(os.path.join(ANSIBLE, name), self.inventory)

    def host(self, short: str) -> Host:
        return self.lab.host(short)

    def node(self, short: str) -> str:
        return self.lab.node_name(short)

    @property
    def api(self) -> httpx.Client:
        """The API through admin.conf (server: the control-plane endpoint, cp1)."""
        if self._api is None:
            with open(self.kubeconfig, "w") as f:
                f.write(self.host("cp1").read("/etc/minik8s/admin.conf"))
            self._api = self.client_for(None)
        return self._api

    def client_for(self, server: str | None) -> httpx.Client:
        """An admin client of one API server (https://IP:6443), or of admin.conf's."""
        conn = kubeconfig.load(self.kubeconfig).connection()
        return httpx.Client(base_url=server or conn.server, verify=conn.ssl_context(), timeout=10)

    def nodes(self) -> dict[str, dict]:
        return {n["metadata"]["name"]: n for n in self.api.get("/api/v1/nodes").json()["items"]}

    def ready(self, name: str) -> bool:
        node = self.nodes().get(name)
        conds = {c["type"]: c["status"] for c in (node or {}).get("status", {}).get("conditions", [])}
        return conds.get("Ready") == "True"

    def pods(self, selector: str, ns: str = "default") -> list[dict]:
        r = self.api.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": selector})
        r.raise_for_status()
        return r.json()["items"]

    def running(self, selector: str) -> list[dict]:
        return [p for p in self.pods(selector) if p["status"].get("phase") == "Running"
                and p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")]

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([KUBECTL_LITE, "--kubeconfig", self.kubeconfig, *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl-lite {' '.join(args)}: {r.stderr or r.stdout}")
        return r

    def create(self, path: str, obj: dict) -> dict:
        r = self.api.post(path, json=obj)
        assert r.status_code == 201, r.text
        return r.json()


def exactly(n: int, items):
    """items when there are n of them, else None (for wait_for)."""
    return items if len(items) == n else None


def deployment(name: str, replicas: int, command: list[str], *, node_selector: dict | None = None,
               evict_after: int | None = None) -> dict:
    """A Deployment of host-root pods running `command`; `evict_after` sets the
    not-ready/unreachable tolerations (Kubernetes' default is 300 s)."""
    spec: dict = {"containers": [{"name": "c", "image": HOST_ROOT, "command": command}],
                  "terminationGracePeriodSeconds": 1}
    if node_selector:
        spec["nodeSelector"] = node_selector
    if evict_after is not None:
        spec["tolerations"] = [{"key": f"node.kubernetes.io/{k}", "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": evict_after} for k in ("not-ready", "unreachable")]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


# The pods' Python: the machine's own (their root is the machine's, but their /tmp is
# theirs, so a checkout's venv under /tmp would not be there); stdlib only.
POD_PYTHON = "/usr/bin/python3"
SERVE = [POD_PYTHON, "-c",
         "import http.server, os, socketserver\n"
         "class H(http.server.BaseHTTPRequestHandler):\n"
         "    def do_GET(self):\n"
         "        b = ('pod ' + os.environ['HOSTNAME'] + '\\n').encode()\n"
         "        self.send_response(200); self.send_header('content-length', str(len(b))); self.end_headers()\n"
         "        self.wfile.write(b)\n"
         "    def log_message(self, *a): pass\n"
         "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
         "socketserver.ThreadingTCPServer(('', 8080), H).serve_forever()\n"]
FETCH = ("import sys, urllib.request\n"
         "try:\n"
         "    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())\n"
         "except Exception as e:\n"
         "    print('error: %r' % (e,))\n")


@pytest.fixture(scope="module")
def before():
    return machine_state()


@pytest.fixture(scope="module")
def lab(before):
    lab = Lab(CONTROL_PLANE + WORKERS_SAME_LINK, behind_router=WORKERS_ROUTED)
    try:
        yield lab.start()
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def cluster(lab):
    c = LabCluster(lab)
    run = c.playbook("site.yml")
    if run.returncode != 0:
        for h in lab.hosts.values():  # the units' logs say why
            for log in h.run("sh", "-c", "tail -n 30 /var/lib/minik8s/logs/*.log /var/log/minik8s/*.log",
                             check=False).stdout.split("==> ")[1:]:
                print(f"--- {h.name}: {log}")
    run.check()
    c.first_run = run
    yield c
    if c._api is not None:
        c._api.close()


def test_playbook_brings_up_three_control_planes_and_three_workers(cluster):
    recap = cluster.first_run.recap()
    assert set(recap) == {cluster.node(s) for s in CONTROL_PLANE + WORKERS}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values())
    nodes = wait_for(lambda: exactly(6, cluster.nodes()), timeout=120, what="six nodes")
    for s in CONTROL_PLANE:
        labels = nodes[cluster.node(s)]["metadata"].get("labels", {})
        assert "node-role.kubernetes.io/control-plane" in labels
        taints = nodes[cluster.node(s)]["spec"].get("taints", [])
        assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in \
            [{"key": t["key"], "effect": t["effect"]} for t in taints]
    for s in CONTROL_PLANE + WORKERS:
        wait_for(lambda s=s: cluster.ready(cluster.node(s)), timeout=180, what=f"{s} Ready")
    # Three etcd members, one per control plane, by etcd's own member list.
    peers = {m["peerURLs"][0] for m in _etcd(cluster, "cp1", "/v3/cluster/member/list", {})["members"]}
    assert peers == {f"https://{cluster.host(s).ip}:2380" for s in CONTROL_PLANE}, peers
    for s in CONTROL_PLANE:
        assert cluster.host(s).exists("/etc/minik8s/admin.conf")


def test_deployment_of_six_spreads_over_the_workers(cluster):
    cluster.create("/apis/apps/v1/namespaces/default/deployments", deployment("web", 6, SERVE, evict_after=5))
    pods = wait_for(lambda: exactly(6, cluster.running("app=web")), timeout=240, what="six web pods running")
    on = {p["spec"]["nodeName"] for p in pods}
    assert on == {cluster.node(s) for s in WORKERS}, on


def test_pod_reaches_pod_behind_the_router_by_ip_and_by_service_name(cluster):
    w1, w3 = cluster.node("w1"), cluster.node("w3")
    cluster.create("/apis/apps/v1/namespaces/default/deployments",
                   deployment("echo", 1, SERVE, node_selector={"kubernetes.io/hostname": w3}))
    cluster.create("/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    cluster.create("/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "labels": {"app": "client"}},
        "spec": {"nodeName": w1, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": HOST_ROOT, "command": ["sleep", "infinity"]}]}})
    server = wait_for(lambda: (p := cluster.running("app=echo")) and p[0], timeout=180, what="echo running")
    wait_for(lambda: cluster.running("app=client"), timeout=180, what="client running")
    assert server["spec"]["nodeName"] == w3

    def fetch(url: str) -> str:
        r = cluster.kubectl("exec", "client", "--", POD_PYTHON, "-c", FETCH, url, check=False)
        return r.stdout.strip()
    name = server["metadata"]["name"]
    by_ip = wait_for(lambda: (o := fetch(f"http://{server['status']['podIP']}:8080/")) == f"pod {name}" and o,
                     timeout=120, what="pod on w1 reaching the pod on w3 by IP")
    assert by_ip == f"pod {name}"
    by_name = wait_for(lambda: (o := fetch("http://echo.default.svc.cluster.local/")) == f"pod {name}" and o,
                       timeout=180, what="pod on w1 reaching the Service's pod by name")
    assert by_name == f"pod {name}"


def _etcd(cluster: LabCluster, short: str, path: str, body: dict | None = None) -> dict:
    """A request to the host's etcd (its gRPC gateway) with the healthcheck client
    certificate, from inside the host; the JSON answer."""
    h = cluster.host(short)
    code = ("import json, ssl, sys, urllib.request as u\n"
            "c = ssl.create_default_context(cafile='ca.crt')\n"
            "c.load_cert_chain('healthcheck-client.crt', 'healthcheck-client.key')\n"
            "data = sys.argv[2].encode() if sys.argv[2] else None\n"
            "print(u.urlopen(u.Request(sys.argv[1], data=data), context=c, timeout=5).read().decode())\n")
    r = h.run("sh", "-c", 'cd /etc/minik8s/pki/etcd && exec python3 -c "$0" "$1" "$2"', code,
              f"https://{h.ip}:2379{path}", json.dumps(body) if body is not None else "")
    return json.loads(r.stdout) if body is not None else {"text": r.stdout}


def _etcd_leader(cluster: LabCluster) -> str:
    """The control plane whose etcd leads, by etcd's own is_leader metric."""
    for s in CONTROL_PLANE:
        try:
            if "\netcd_server_is_leader 1" in _etcd(cluster, s, "/metrics")["text"]:
                return s
        except RuntimeError:   # a crashed host's etcd does not answer
            continue
    raise AssertionError("no etcd member says it leads")


class Writer(threading.Thread):
    """Creates ConfigMaps one after another through every API server in turn, and keeps
    the names of those the API acknowledged (201)."""

    def __init__(self, cluster: LabCluster, servers: list[str]):
        super().__init__(daemon=True)
        self.clients = [cluster.client_for(s) for s in servers]
        self.acked: list[str] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            name = f"w-{uuid.uuid4().hex[:8]}"
            c = self.clients[i % len(self.clients)]
            i += 1
            try:
                r = c.post("/api/v1/namespaces/default/configmaps",
                           json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name,
                                 "labels": {"stream": "etcd"}}, "data": {"i": str(i)}})
                if r.status_code == 201:
                    self.acked.append(name)
                else:
                    self.failures += 1
            except httpx.HTTPError:
                self.failures += 1

    def acked_after(self, n: int) -> int:
        return len(self.acked) - n


def test_etcd_leader_host_crash_loses_no_acknowledged_write(cluster):
    leader = _etcd_leader(cluster)
    others = [s for s in CONTROL_PLANE if s != leader]
    writer = Writer(cluster, [f"https://{cluster.host(s).ip}:6443" for s in CONTROL_PLANE])
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) >= 20, timeout=60, what="writes before the crash")
        killed = cluster.host(leader).crash()
        assert killed
        at_kill = len(writer.acked)
        wait_for(lambda: writer.acked_after(at_kill) >= 20, timeout=120, what="writes after the election")
    finally:
        writer.stop.set()
        writer.join(timeout=30)
        for c in writer.clients:
            c.close()
    assert _etcd_leader_among(cluster, others) in others
    api = cluster.client_for(f"https://{cluster.host(others[0]).ip}:6443")
    names = {c["metadata"]["name"] for c in api.get("/api/v1/namespaces/default/configmaps",
                                                     params={"labelSelector": "stream=etcd"}).json()["items"]}
    lost = [n for n in writer.acked if n not in names]
    assert not lost, f"{len(lost)} acknowledged writes are gone"
    # The crashed host boots again: its supervisor restarts its units, its etcd rejoins.
    cluster.host(leader).ssh(f"setsid {MINIK8S} supervise-host --detach </dev/null >/dev/null 2>&1")
    wait_for(lambda: cluster.ready(cluster.node(leader)), timeout=240, what=f"{leader} Ready again")


def _etcd_leader_among(cluster: LabCluster, shorts: list[str]) -> str:
    return wait_for(lambda: next((s for s in shorts if _is_leader(cluster, s)), None), timeout=60,
                    what="an etcd leader among the survivors")


def _is_leader(cluster: LabCluster, short: str) -> bool:
    try:
        return _etcd_leader(cluster) == short
    except AssertionError:
        return False


def _lease_renewed(cluster: LabCluster, node: str, after: str) -> bool:
    r = cluster.api.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}")
    return r.status_code == 200 and r.json()["spec"].get("renewTime", "") > after


def test_api_server_killed_kubelets_and_informers_go_on(cluster):
    victim = "cp2"
    # Talk to the API through a survivor from now on.
    cluster._api = cluster.client_for(f"https://{cluster.host('cp3').ip}:6443")
    killed = cluster.host(victim).kill_matching(r"cluster\.cli apiserver( |$)")
    assert killed, "no API server process found on " + victim
    # Kubelets go on: each worker's lease renews after the kill...
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    for s in WORKERS:
        wait_for(lambda s=s: _lease_renewed(cluster, cluster.node(s), now), timeout=120,
                 what=f"{s}'s lease renewed after an API server died")
    # ...and their informers see new work: a pod made now runs.
    cluster.create("/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after-kill", "labels": {"app": "after-kill"}},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": HOST_ROOT, "command": ["sleep", "infinity"]}]}})
    wait_for(lambda: cluster.running("app=after-kill"), timeout=180, what="a pod started after the kill")
    # The supervisor restarts the API server it lost.
    wait_for(lambda: cluster.client_for(f"https://{cluster.host(victim).ip}:6443").get("/readyz").status_code == 200,
             timeout=180, what=f"{victim}'s API server back")


def _pod_cgroups(host: Host, node: str) -> set[str]:
    """pod<uid> cgroup names under the node's kubelet cgroups (every hierarchy)."""
    out = host.run("sh", "-c", f"find /sys/fs/cgroup -maxdepth 8 -type d -path '*minik8s-{node}*' -name 'pod*'",
                   check=False).stdout.split()
    return {os.path.basename(p) for p in out}


def _ready(obj: dict) -> str | None:
    return next((c["status"] for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)


class PartitionObserver(threading.Thread):
    """Reads the cut-off node and the web pods from the API, over and over, for as long as
    the partition test runs, and keeps whatever would be false: the node Ready while its
    link is down once it was seen NotReady; one of its old pods Ready again once the node
    lifecycle controller marked it not Ready; a pod on two nodes; more web pods serving
    (Running, not terminating) than the Deployment's replicas."""

    def __init__(self, cluster: LabCluster, node: str, old_uids: set[str], replicas: int):
        super().__init__(daemon=True)
        self.api = cluster.client_for(None)
        self.node, self.old_uids, self.replicas = node, old_uids, replicas
        self.cut = threading.Event()        # set while the link is down
        self.stop = threading.Event()
        self.false: list[str] = []
        self.seen_not_ready = False
        self.marked: set[str] = set()       # old pods seen with Ready=False
        self.node_of: dict[str, str] = {}
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            cut = self.cut.is_set()
            try:
                node = self.api.get(f"/api/v1/nodes/{self.node}").json()
                pods = self.api.get("/api/v1/namespaces/default/pods", params={"labelSelector": "app=web"}).json()
            except (httpx.HTTPError, ValueError):
                continue
            self.samples += 1
            ready = _ready(node)
            if ready is not None and ready != "True":
                self.seen_not_ready = True
            elif ready == "True" and cut and self.seen_not_ready:
                self.false.append(f"{self.node} reported Ready while cut off")
            serving = 0
            for p in pods.get("items", []):
                uid, on = p["metadata"]["uid"], p["spec"].get("nodeName")
                if on and self.node_of.setdefault(uid, on) != on:
                    self.false.append(f"pod {p['metadata']['name']} on {self.node_of[uid]} and then on {on}")
                if uid in self.old_uids:
                    if _ready(p) == "False":
                        self.marked.add(uid)
                    elif _ready(p) == "True" and uid in self.marked:
                        self.false.append(f"stale pod {p['metadata']['name']} reported Ready again")
                if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"):
                    serving += 1
            if serving > self.replicas:
                self.false.append(f"{serving} web pods serving, more than {self.replicas}")


def test_worker_cut_off_goes_not_ready_pods_move_and_it_rejoins_clean(cluster):
    short = "w2"
    node, host = cluster.node(short), cluster.host(short)
    old = [p for p in cluster.running("app=web") if p["spec"]["nodeName"] == node]
    assert old, "no web pod on the worker to cut off"
    old_uids = {p["metadata"]["uid"] for p in old}
    assert {f"pod{u}" for u in old_uids} <= _pod_cgroups(host, node)
    observer = PartitionObserver(cluster, node, old_uids, replicas=6)
    observer.start()
    try:
        observer.cut.set()
        host.cut_link()
        try:
            wait_for(lambda: not cluster.ready(node), timeout=180, what=f"{short} NotReady")
            # The old pods are marked not Ready, then evicted (their 5 s tolerations),
            # and recreated on the other workers.
            wait_for(lambda: observer.marked == old_uids, timeout=120, what="the old pods marked not Ready")
            wait_for(lambda: len([p for p in cluster.running("app=web") if p["spec"]["nodeName"] != node]) == 6,
                     timeout=240, what="six web pods on the other workers")
            # While cut off, the worker's stale copies still run there: only it can kill them.
            assert {f"pod{u}" for u in old_uids} <= _pod_cgroups(host, node)
        finally:
            host.restore_link()
            observer.cut.clear()
        wait_for(lambda: cluster.ready(node), timeout=240, what=f"{short} Ready again")
        wait_for(lambda: not ({p["metadata"]["uid"] for p in cluster.pods("app=web")} & old_uids), timeout=240,
                 what="the cut-off worker's old pods gone from the API")
        wait_for(lambda: not ({f"pod{u}" for u in old_uids} & _pod_cgroups(host, node)), timeout=240,
                 what="the old pods' containers gone from the worker")
    finally:
        observer.stop.set()
        observer.join(timeout=30)
        observer.api.close()
    assert observer.samples > 0 and observer.seen_not_ready
    assert not observer.false, observer.false[:10]
    assert len(cluster.running("app=web")) == 6


def test_second_playbook_run_changes_nothing(cluster):
    run = cluster.playbook("site.yml").check()
    assert run.changed() == 0, run.stdout[-4000:]
    assert set(run.recap()) == {cluster.node(s) for s in CONTROL_PLANE + WORKERS}


def test_reset_on_every_host_leaves_the_machine_as_it_was(cluster, before):
    run = cluster.playbook("reset.yml").check()
    assert run.changed() >= 6, run.stdout[-4000:]
    for h in cluster.lab.hosts.values():
        # Only sshd is left (and the sessions of Ansible's persistent connection).
        sessions = set(descendants(h.sshd_pid))
        left = {p: cmdline(p) for p in h.processes() if p != h.sshd_pid and p not in sessions}
        assert not left, left
        assert not h.exists("/etc/minik8s/admin.conf") and not h.exists("/etc/minik8s/kubelet.conf")
        assert not h.exists("/var/lib/minik8s/etcd")
        links = h.run("ip", "-o", "link", "show").stdout
        assert {line.split(": ")[1].split("@")[0] for line in links.splitlines()} == {"lo", "eth0"}, links
        assert h.run("nft", "list", "tables", check=False).stdout.strip() == ""
    after = machine_state()
    names = [cluster.node(s) for s in CONTROL_PLANE + WORKERS]
    assert not [c for c in after["cgroups"] - before["cgroups"] if any(n in c for n in names)]
    assert not [m for m in after["mounts"] - before["mounts"]
                if "minik8s" in m or any(n in m for n in names) and "/run/netns/" not in m]
    # A second reset finds nothing to do.
    assert cluster.playbook("reset.yml").check().changed() == 0
