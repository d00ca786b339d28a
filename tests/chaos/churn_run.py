"""Churn with a component killed at random (issue 19), as a function that returns figures.

`run()` brings up a real `minik8s up` cluster (linux runtime: real pods in namespaces
and cgroups) of `nodes` nodes in a temporary state dir, and for `seconds`:
  - churns pods: bare pods created and deleted, 5 Deployments scaled (1..4 replicas)
    and rolled (a template annotation), until `pods` pods have been asked for;
  - every `kill_every` seconds kills -9 one component chosen by a seeded RNG: the
    scheduler, the controller manager, the API server, a kubelet or a kubelet's fork
    server (kubelet/runtime/linux/forkserver.py). `minik8s up`'s supervisor restarts
    the first four; a kubelet starts a new fork server when it next needs one;
  - watches every pod of the cluster throughout, resuming from its last
    resourceVersion across API server kills (relisting only on 410), and checks two
    invariants on every event: no pod's spec.nodeName ever changes once set (no pod
    bound twice), and no ReplicaSet of a Deployment ever made a pod that took it above
    the Deployment's replicas + maxSurge live (not terminating) pods, where replicas is
    the highest the churn asked for within `SCALE_WINDOW` seconds before the pod's
    creationTimestamp (the controller acts on what its informer saw a moment ago; a
    scale-down is carried out late under load, which is no over-creation).
Convergence is measured after EVERY kill, so one run gives one sample per kill. The
cluster has converged after a kill at the first check (every 0.5 s) at which all of
this holds, as a Kubernetes user would judge it with kubectl:
  - the killed component is back and serving (`back()`: the API server ready, a
    kubelet heartbeating again on a Ready Node, the scheduler or controller manager
    running again as a new process);
  - every component of the cluster is running (the supervisor's status);
  - every Deployment has observed its latest generation, and its status counts
    replicas == updatedReplicas == readyReplicas == availableReplicas == the replicas
    last asked for, with exactly that many pods: none of an old template left;
  - every pod is Running and Ready (so none Pending, none terminating), and the bare
    pods are exactly those the churn created and has not deleted.
From a kill until that point the churn asks for nothing new, so the desired state is the
one asked for before the kill (which a kill usually interrupts: rollouts and scale
changes in flight); kills stay on their schedule, and a kill that comes before the
previous one converged opens a second sample that the same convergence closes.
`convergence_after_kills` gives n, p50, p99 (nearest rank: with fewer than 100 samples
p99 is the largest) and max, also per kind of component.

Once the killing stops it measures how long the cluster takes to converge in the same
sense (`convergence_seconds`, the issue's "within 60 s once the killing stops") within
`converge_timeout`, then looks on every node for anything of a pod that no longer
exists: processes (by /proc/<pid>/cgroup), pod cgroups under the node's tree in every
hierarchy, mounts under the kubelet's pod directories, veths in the node's network
namespace, IP allocations, and the pod directories themselves.

The cluster is taken down (`minik8s down`, then bringup.cleanup: processes by PID and
by cgroup, network namespaces, links, cgroups, mounts) whatever happens.

The default seed (22, env MINIK8S_CHAOS_SEED) kills each of the five kinds once in
the first five kills. Bounded: `seconds` of churn (default 60, env MINIK8S_CHAOS_SECONDS; the issue's full
run is 180 s), `pods` pods (default 150, env MINIK8S_CHAOS_PODS; the issue's is 500),
plus bring-up (~30 s), convergence (at most `converge_timeout`) and teardown.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from typing import Callable

import httpx
import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from cluster import bringup, host  # noqa: E402
from cluster.cgroups import ClusterCgroups  # noqa: E402
from cluster.state import ClusterConfig, kubelet_component  # noqa: E402
from kubelet.images import HOST_ROOT_IMAGE  # noqa: E402
from kubelet.runtime.linux.network import veth_name  # noqa: E402
from machinery import times  # noqa: E402

NS = "default"
DEPLOYMENTS = [f"churn-{i}" for i in range(5)]
MAX_SURGE = 1
SCALE_WINDOW = 30.0
WALL_MINUS_MONOTONIC = time.time() - time.monotonic()  # one host: the API server's stamps to ours
KINDS = ("scheduler", "controller-manager", "apiserver", "kubelet", "forkserver")
PODS = f"/api/v1/namespaces/{NS}/pods"
DEPLOYS = f"/apis/apps/v1/namespaces/{NS}/deployments"
VETH = re.compile(r"^mk[0-9a-f]{11}$")


def env_int(name: str, default: int) -> int:
    return int(float(os.environ.get(name) or default))  # bench/chaos.py passes "60.0"


def minik8s(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unique_cidrs() -> tuple[str, str]:
    """A node network and a cluster CIDR that nothing on this host uses (as
    tests/test_cluster_network.py picks them; not from the scenario's seeded RNG)."""
    from cluster import network
    pick = random.SystemRandom()
    for _ in range(100):
        a, b = pick.randrange(100, 250), pick.randrange(0, 256)
        node, cluster = f"10.{a}.{b}.0/24", f"172.{pick.randrange(16, 32)}.0.0/16"
        if not network.overlapping_routes(node, cluster):
            return node, cluster
    raise RuntimeError("no free address range")


# -- the watch that checks the invariants ----------------------------------------------

class PodWatch(threading.Thread):
    """Every pod event of the cluster, with the invariants checked on each."""

    def __init__(self, api: httpx.Client, desired: Callable[[str, float], int],
                 history: Callable[[str, float], list[tuple[float, int]]] = lambda app, t: []):
        super().__init__(daemon=True, name="pod-watch")
        self.api, self.desired, self.history = api, desired, history
        self.stop_event = threading.Event()
        self.bound: dict[str, str] = {}           # uid -> nodeName first seen
        self.live: dict[str, dict] = {}           # uid -> pod (last seen)
        self.violations: list[str] = []
        self.events = 0
        self.resumes = 0
        self.relists = 0
        self.max_live: dict[str, int] = defaultdict(int)

    def run(self) -> None:
        # self.rv is the last event handled, kept as each arrives: a stream that breaks
        # resumes after it (resuming from where the stream began would replay events
        # already handled, and judge a replayed ADDED against a later view).
        self.rv: str | None = None
        while not self.stop_event.is_set():
            try:
                if self.rv is None:
                    self.rv = self._list()
                self._watch()
            except _Gone:
                self.relists += 1
                self.rv = None
            except (httpx.HTTPError, OSError, ValueError):
                self.resumes += 1
                self.stop_event.wait(0.2)

    def _list(self) -> str:
        r = self.api.get("/api/v1/pods")
        r.raise_for_status()
        body = r.json()
        seen = set()
        for p in body["items"]:
            seen.add(p["metadata"]["uid"])
            self._observe(p)
        for uid in set(self.live) - seen:
            self.live.pop(uid, None)
        return body["metadata"]["resourceVersion"]

    def _watch(self) -> None:
        params = {"watch": "1", "resourceVersion": self.rv, "allowWatchBookmarks": "true",
                  "timeoutSeconds": "30"}
        with self.api.stream("GET", "/api/v1/pods", params=params,
                             timeout=httpx.Timeout(10, read=40)) as r:
            if r.status_code == 410:
                raise _Gone()
            r.raise_for_status()
            for line in r.iter_lines():
                if self.stop_event.is_set():
                    return
                if not line:
                    continue
                ev = orjson.loads(line)
                obj = ev["object"]
                if ev["type"] == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ValueError(f"watch error {obj}")
                if ev["type"] != "BOOKMARK":
                    self.events += 1
                    if ev["type"] == "DELETED":
                        self._observe(obj)
                        self.live.pop(obj["metadata"]["uid"], None)
                    else:
                        self._observe(obj, created=ev["type"] == "ADDED")
                self.rv = obj["metadata"].get("resourceVersion") or self.rv

    def _observe(self, pod: dict, *, created: bool = False) -> None:
        uid, node = pod["metadata"]["uid"], pod["spec"].get("nodeName")
        if node:
            first = self.bound.setdefault(uid, node)
            if first != node:
                self.violations.append(f"pod {pod['metadata']['name']} ({uid}) bound to {first}, then {node}")
        self.live[uid] = pod
        labels = pod["metadata"].get("labels") or {}
        app, rs = labels.get("app"), labels.get("pod-template-hash")
        if app in DEPLOYMENTS and rs:
            live = [p for p in self.live.values()
                    if (p["metadata"].get("labels") or {}).get("app") == app
                    and not p["metadata"].get("deletionTimestamp")
                    and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
            # The whole Deployment may be above replicas + maxSurge for a moment, in
            # Kubernetes too: its controller counts ReplicaSets' spec.replicas, and an
            # old ReplicaSet's pods go after the new one's come. A figure, not a check.
            self.max_live[app] = max(self.max_live[app], len(live))
            if not created:
                return
            # Judged when the pod was made, against what was asked by then: a watch
            # resumed after an outage replays old events, and a scale-down is carried
            # out late under load (both only delay deletions; an over-creation shows).
            mine = [p for p in live if p["metadata"]["labels"].get("pod-template-hash") == rs]
            made = times.parse(pod["metadata"]["creationTimestamp"]) - WALL_MINUS_MONOTONIC
            limit = self.desired(app, made + 1.0) + MAX_SURGE  # + 1 s: whole-second stamps
            if len(mine) > limit:
                meta = pod["metadata"]
                self.violations.append(
                    f"ReplicaSet {app}-{rs} had {len(mine)} live pods when it made {meta['name']} at "
                    f"{meta['creationTimestamp']}, more than replicas + maxSurge = {limit}: "
                    f"{[(p['metadata']['name'], p['metadata']['creationTimestamp']) for p in mine]}; "
                    f"asked {self.history(app, made)}")


class _Gone(Exception):
    pass


# -- the churn --------------------------------------------------------------------------

def deployment(name: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": MAX_SURGE, "maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": _pod_spec()}}}


def _pod_spec() -> dict:
    return {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": HOST_ROOT_IMAGE, "command": ["sleep", "3600"]}]}


class Churn:
    """The workload: what it asked for, and when, so the watch knows the bound."""

    def __init__(self, api: httpx.Client, rng: random.Random):
        self.api, self.rng = api, rng
        self.replicas = {d: 2 for d in DEPLOYMENTS}
        self.history: dict[str, list[tuple[float, int]]] = {d: [(0.0, 2)] for d in DEPLOYMENTS}
        self.lock = threading.Lock()
        self.bare: list[str] = []
        self.unsure: set[str] = set()   # bare pods whose create or delete got no answer
        self.asked = 0          # pods asked for: bare creates, scale-ups, rollouts
        self.ops: Counter = Counter()
        self.failed = 0
        self.seq = 0

    def desired(self, app: str, now: float) -> int:
        with self.lock:
            hist = self.history[app]
            # the replicas in effect at now - SCALE_WINDOW, and every value set since
            past = [r for t, r in hist if t <= now - SCALE_WINDOW]
            recent = [r for t, r in hist if now - SCALE_WINDOW < t <= now]
            return max(past[-1:] + recent)

    def asked_for(self, app: str, at: float) -> list[tuple[float, int]]:
        """The replicas asked for `app`, each with its time relative to `at` (for reports)."""
        with self.lock:
            return [(round(t - at, 1), r) for t, r in self.history[app] if t]

    def setup(self) -> None:
        for d in DEPLOYMENTS:
            r = self.api.post(DEPLOYS, json=deployment(d, self.replicas[d]))
            r.raise_for_status()
            self.asked += self.replicas[d]

    def step(self) -> None:
        op = self.rng.choices(["create", "delete", "scale", "rollout"], weights=[4, 3, 2, 1])[0]
        try:
            getattr(self, op)()
            self.ops[op] += 1
        except httpx.HTTPError:
            self.failed += 1   # the API server may be down: the churn goes on, paced
            time.sleep(0.2)

    def create(self) -> None:
        self.seq += 1
        name = f"bare-{self.seq}"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"churn": "bare"}},
               "spec": _pod_spec()}
        try:
            r = self.api.post(PODS, json=pod)
        except httpx.HTTPError:
            self.unsure.add(name)  # the API server may have stored it before it died
            raise
        if r.status_code == 201:
            self.bare.append(name)
            self.asked += 1
        elif r.status_code >= 500:
            raise httpx.HTTPError(f"{r.status_code}")

    def delete(self) -> None:
        if len(self.bare) < 3:
            return self.create()
        name = self.bare.pop(self.rng.randrange(len(self.bare)))
        try:
            r = self.api.delete(f"{PODS}/{name}")
        except httpx.HTTPError:
            self.unsure.add(name)
            raise
        if r.status_code not in (200, 202, 404):
            self.unsure.add(name)
            raise httpx.HTTPError(f"{r.status_code}")

    def settle(self, timeout: float = 30.0) -> None:
        """Find out what became of requests whose answer was lost (the API server was
        killed): a pod that exists is kept, as a user who looked would keep it."""
        deadline = time.monotonic() + timeout
        while self.unsure and time.monotonic() < deadline:
            name = next(iter(self.unsure))
            try:
                r = self.api.get(f"{PODS}/{name}")
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if r.status_code == 200 and not r.json()["metadata"].get("deletionTimestamp"):
                if name not in self.bare:
                    self.bare.append(name)
            elif r.status_code not in (200, 404):
                time.sleep(0.5)
                continue
            self.unsure.discard(name)

    def scale(self) -> None:
        d = self.rng.choice(DEPLOYMENTS)
        n = self.rng.randint(1, 4)
        with self.lock:  # recorded before it is asked for: the bound may only be generous
            self.history[d].append((time.monotonic(), n))
        r = self.api.patch(f"{DEPLOYS}/{d}/scale", json={"spec": {"replicas": n}},
                           headers={"content-type": "application/merge-patch+json"})
        if r.status_code != 200:
            raise httpx.HTTPError(f"{r.status_code}")
        self.asked += max(0, n - self.replicas[d])
        self.replicas[d] = n

    def rollout(self) -> None:
        d = self.rng.choice(DEPLOYMENTS)
        self.seq += 1
        r = self.api.patch(f"{DEPLOYS}/{d}", json={"spec": {"template": {"metadata": {
            "annotations": {"churn/revision": str(self.seq)}}}}},
            headers={"content-type": "application/merge-patch+json"})
        if r.status_code != 200:
            raise httpx.HTTPError(f"{r.status_code}")
        self.asked += self.replicas[d]


# -- killing ------------------------------------------------------------------------------

def fork_server_pid(kubelet_pid: int) -> int | None:
    """The kubelet's fork server: its child running shim.py server."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
            if ppid != kubelet_pid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if any(a.endswith(b"shim.py") for a in argv) and b"server" in argv:
            return int(pid)
    return None


@dataclasses.dataclass
class Kill:
    """One kill -9: what, where, when (monotonic and wall clock), and which process."""
    kind: str
    node: str | None
    pid: int
    at: float
    wall: float


def kill_one(cfg: ClusterConfig, rng: random.Random) -> Kill | None:
    """Kill -9 one component chosen by rng; what was killed, or None if it was not running."""
    kind = rng.choice(KINDS)
    comps = bringup.read_json(bringup.status_path(cfg)).get("components") or {}
    node = rng.choice(cfg.node_names())
    if kind not in ("kubelet", "forkserver"):
        c = comps.get(kind) or {}
        if host.kill(c.get("pid"), c.get("start"), signal.SIGKILL):
            return Kill(kind, None, c["pid"], time.monotonic(), time.time())
        return None
    # the chosen node first; a fork server runs only once its kubelet has started a pod
    names = cfg.node_names()
    for n in names[names.index(node):] + names[:names.index(node)]:
        c = comps.get(kubelet_component(n)) or {}
        pid, start = c.get("pid"), c.get("start")
        if kind == "forkserver":
            pid = fork_server_pid(pid) if host.alive(pid, start) else None
            start = host.start_time(pid) if pid else None
        if host.kill(pid, start, signal.SIGKILL):
            return Kill(kind, n, pid, time.monotonic(), time.time())
    return None


# -- convergence and leftovers ----------------------------------------------------------

def converged(api: httpx.Client, cfg: ClusterConfig, churn: Churn) -> str | None:
    """None when the cluster is in its desired state, else what is not yet."""
    comps = bringup.read_json(bringup.status_path(cfg)).get("components") or {}
    down = [n for n, c in comps.items() if c.get("state") != "running"]
    if down:
        return f"not running: {down}"
    pods = api.get(PODS).json()["items"]
    for p in pods:
        if p["metadata"].get("deletionTimestamp"):
            return f"pod {p['metadata']['name']} terminating"
        st = p.get("status", {})
        if st.get("phase") != "Running" or not any(
                c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or ()):
            return f"pod {p['metadata']['name']} not Running and Ready"
    by_app = Counter((p["metadata"].get("labels") or {}).get("app") for p in pods)
    for d in DEPLOYMENTS:
        dep = api.get(f"{DEPLOYS}/{d}").json()
        want, st = dep["spec"]["replicas"], dep.get("status", {})
        if want != churn.replicas[d]:
            return f"{d}: spec.replicas {want}, asked {churn.replicas[d]}"
        if st.get("observedGeneration", 0) < dep["metadata"]["generation"]:
            return f"{d}: generation not observed"
        if not (st.get("replicas") == st.get("updatedReplicas") == st.get("readyReplicas")
                == st.get("availableReplicas") == want == by_app[d]):
            return f"{d}: status {st} with {by_app[d]} pods, want {want}"
    bare = {p["metadata"]["name"] for p in pods if (p["metadata"].get("labels") or {}).get("churn") == "bare"}
    if bare != set(churn.bare):
        return f"bare pods {sorted(bare ^ set(churn.bare))} differ"
    return None


def back(api: httpx.Client, cfg: ClusterConfig, kill: Kill) -> str | None:
    """None once the component `kill` took down is back and serving, else what is not yet.

    The API server: running again and /readyz answers 200. The scheduler and the
    controller manager (no health port in a churn cluster: --secure-port 0): a new process
    running, as the supervisor reports; that they act again shows in the workload reaching
    its desired state. A kubelet: a new process running, and it has renewed its node's
    Lease since the kill and its Node is Ready (what `kubectl get nodes` and the node
    lifecycle controller go by). A fork server: nothing to wait for, as its kubelet starts
    a new one when it next needs one; its pods must still be Running and Ready."""
    if kill.kind == "forkserver":
        return None
    name = kubelet_component(kill.node) if kill.kind == "kubelet" and kill.node else kill.kind
    c = (bringup.read_json(bringup.status_path(cfg)).get("components") or {}).get(name) or {}
    if c.get("state") != "running" or c.get("pid") == kill.pid or not host.alive(c.get("pid"), c.get("start")):
        return f"{name} not running again"
    if kill.kind == "apiserver":
        r = api.get("/readyz")
        return None if r.status_code == 200 else f"apiserver /readyz {r.status_code}"
    if kill.kind == "kubelet":
        lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{kill.node}")
        renewed = lease.json().get("spec", {}).get("renewTime") if lease.status_code == 200 else None
        if not renewed or times.parse(renewed) < kill.wall:
            return f"{name} has not renewed its node Lease since it was killed"
        node = api.get(f"/api/v1/nodes/{kill.node}").json()
        if not any(c["type"] == "Ready" and c["status"] == "True"
                   for c in node.get("status", {}).get("conditions") or ()):
            return f"node {kill.node} not Ready"
    return None


def percentile(samples: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (so p99 of fewer than 100 samples is the largest)."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _summary(samples: list[float]) -> dict[str, object]:
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    return {"n": len(samples), "p50": None if p50 is None else round(p50, 2),
            "p99": None if p99 is None else round(p99, 2),
            "max": round(max(samples), 2) if samples else None}


def diagnose(api: httpx.Client) -> dict[str, object]:
    """What a Deployment that did not converge is made of: its ReplicaSets (size,
    annotations, status) and their pods' phases."""
    out: dict[str, object] = {}
    rss = api.get(f"/apis/apps/v1/namespaces/{NS}/replicasets").json()["items"]
    pods = api.get(PODS).json()["items"]
    for rs in rss:
        h = rs["metadata"]["labels"].get("pod-template-hash")
        out[rs["metadata"]["name"]] = {
            "replicas": rs["spec"]["replicas"], "annotations": rs["metadata"].get("annotations"),
            "status": rs.get("status"), "created": rs["metadata"].get("creationTimestamp"),
            "pods": sorted(f"{p['metadata']['name']}:{p['status'].get('phase')}"
                           f"{':terminating' if p['metadata'].get('deletionTimestamp') else ''}"
                           for p in pods if p["metadata"]["labels"].get("pod-template-hash") == h)}
    return out


def _node_cgroup_dirs(cfg: ClusterConfig, node: str) -> list[str]:
    out = []
    for base in ClusterCgroups(cfg.cgroup_name).bases:
        for d, subdirs, _ in os.walk(os.path.join(base, node)):
            for s in subdirs:
                if s.startswith("pod"):
                    out.append(os.path.join(d, s))
    return out


def leftovers(cfg: ClusterConfig, live_uids: set[str]) -> dict[str, list[str]]:
    """Per node, what remains of pods whose uid is not in live_uids."""
    out: dict[str, list[str]] = {}
    mounts = host.mounts_under(cfg.path("nodes"))
    procs: list[tuple[int, str]] = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cgroup") as f:
                    procs.append((int(pid), f.read()))
            except OSError:
                pass
    for node in cfg.node_names():
        found = []
        pods_dir = os.path.join(cfg.node_dir(node), "root", "pods")
        for uid in (os.listdir(pods_dir) if os.path.isdir(pods_dir) else ()):
            if uid not in live_uids:
                found.append(f"directory {uid}")
        ipam = os.path.join(cfg.node_dir(node), "root", "ipam")
        for ip in (os.listdir(ipam) if os.path.isdir(ipam) else ()):
            if ip.startswith("last"):
                continue
            try:
                with open(os.path.join(ipam, ip)) as f:
                    owner = f.read().strip()
            except OSError:
                continue
            if owner not in live_uids:
                found.append(f"ip {ip} of {owner}")
        for d in _node_cgroup_dirs(cfg, node):
            uid = os.path.basename(d)[3:]
            if uid not in live_uids:
                found.append(f"cgroup {d}")
        for m in mounts:
            rel = os.path.relpath(m, pods_dir)
            if not rel.startswith("..") and rel.split("/")[0] not in live_uids:
                found.append(f"mount {m}")
        marker = f"/{cfg.cgroup_name}/{node}/"
        for pid, cg in procs:
            for uid in set(re.findall(re.escape(marker) + r"\S*?/pod([^/\s]+)", cg)):
                if uid not in live_uids:
                    found.append(f"process {pid} of pod {uid}")
        r = subprocess.run(["ip", "-n", cfg.netns(node), "-o", "link"], capture_output=True, text=True)
        live_veths = {veth_name(u) for u in live_uids}
        for line in r.stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if VETH.match(name) and name not in live_veths:
                found.append(f"veth {name}")
        out[node] = sorted(set(found))
    return out


# -- the scenario ----------------------------------------------------------------------

def run(*, seconds: float | None = None, pods: int | None = None, seed: int | None = None,
        nodes: int | None = None, kill_every: float = 10.0, converge_timeout: float = 60.0,
        leftover_timeout: float = 30.0, log: Callable[[str], None] = lambda s: None) -> dict[str, object]:
    """The scenario; its figures. Raises only if the cluster cannot be brought up."""
    seconds = seconds or env_int("MINIK8S_CHAOS_SECONDS", 60)
    pods = pods or env_int("MINIK8S_CHAOS_PODS", 150)
    seed = seed if seed is not None else env_int("MINIK8S_CHAOS_SEED", 22)
    nodes = nodes or env_int("MINIK8S_CHAOS_NODES", 2)
    rng, kill_rng = random.Random(seed), random.Random(seed + 1)
    state = tempfile.mkdtemp(prefix="minik8s-churn-")
    node_cidr, cluster_cidr = _unique_cidrs()
    figures: dict[str, object] = {"seconds": seconds, "pods_budget": pods, "seed": seed, "nodes": nodes}
    cfg = None
    watch = None
    clients: list[httpx.Client] = []
    try:
        r = minik8s("up", "--nodes", str(nodes), "--state-dir", state, "--port", str(_free_port()),
                    "--node-cidr", node_cidr, "--cluster-cidr", cluster_cidr, timeout=300)
        cfg = ClusterConfig.load(state)
        if r.returncode != 0:
            raise RuntimeError(f"minik8s up failed: {r.stdout}{r.stderr}")
        api = httpx.Client(base_url=cfg.api_url, timeout=10, verify=bringup.admin_tls(cfg))
        wapi = httpx.Client(base_url=cfg.api_url, timeout=10, verify=bringup.admin_tls(cfg))
        clients += [api, wapi]
        churn = Churn(api, rng)
        watch = PodWatch(wapi, churn.desired, churn.asked_for)
        watch.start()
        churn.setup()
        kills: Counter = Counter()
        pending: list[Kill] = []             # kills the cluster has not converged after yet
        samples: list[tuple[str, float]] = []  # (kind, seconds from the kill to convergence)
        why = "never checked"

        def check(open_kills: list[Kill]) -> str | None:
            if churn.unsure:
                churn.settle(timeout=2.0)
            try:
                for k in open_kills:
                    if (not_back := back(api, cfg, k)) is not None:
                        return not_back
                return converged(api, cfg, churn)
            except (httpx.HTTPError, KeyError, ValueError) as e:
                return f"{type(e).__name__}: {e}"

        t0 = time.monotonic()
        next_kill = t0 + kill_every
        next_check = t0
        log(f"churning for {seconds}s, {pods} pods, seed {seed}")
        while time.monotonic() - t0 < seconds:
            now = time.monotonic()
            if now >= next_kill:
                kill = kill_one(cfg, kill_rng)
                kills[kill.kind if kill else "missed"] += 1
                log(f"{now - t0:5.1f}s killed {kill.kind if kill else 'nothing (not running)'}")
                if kill:
                    pending.append(kill)
                next_kill += kill_every
                next_check = now + 0.5
            if pending:
                # The churn waits while the cluster recovers, so "converged" means the
                # state asked for before the kill; the next kill comes on time regardless.
                if now >= next_check:
                    why = check(pending)
                    if why is None:
                        done = time.monotonic()
                        for k in pending:
                            samples.append((k.kind, done - k.at))
                            log(f"{done - t0:5.1f}s converged {done - k.at:.1f}s after killing {k.kind}")
                        pending = []
                    next_check = time.monotonic() + 0.5
                else:
                    time.sleep(0.1)
            elif churn.asked < pods * (now - t0) / seconds:  # paced: the budget spread over the run
                churn.step()
            else:
                time.sleep(0.1)
        t_stop = time.monotonic()
        churn.settle()
        log(f"killing stopped; {churn.asked} pods asked for, ops {dict(churn.ops)}")
        convergence = None
        while time.monotonic() - t_stop < converge_timeout:
            why = check(pending)
            if why is None:
                done = time.monotonic()
                convergence = done - t_stop
                for k in pending:
                    samples.append((k.kind, done - k.at))
                pending = []
                break
            time.sleep(0.5)
        log(f"converged in {convergence}s" if convergence is not None else f"not converged: {why}")
        if convergence is None:
            figures["diagnosis"] = diagnose(api)
            log(f"diagnosis: {figures['diagnosis']}")
        left: dict[str, list[str]] = {}
        deadline = time.monotonic() + leftover_timeout
        while True:
            live = {p["metadata"]["uid"] for p in api.get("/api/v1/pods").json()["items"]}
            left = leftovers(cfg, live)
            if not any(left.values()) or time.monotonic() > deadline:
                break
            time.sleep(1)
        watch.stop_event.set()
        figures.update(
            convergence_seconds=None if convergence is None else round(convergence, 2),
            not_converged=why,
            convergence_after_kills=_summary([t for _, t in samples]),
            convergence_after_kill_by_kind={kind: _summary([t for k, t in samples if k == kind])
                                            for kind in sorted({k for k, _ in samples})},
            kills_not_converged=[k.kind for k in pending],
            kills=dict(kills), pods_asked=churn.asked, ops=dict(churn.ops),
            failed_requests=churn.failed, leftovers={n: len(v) for n, v in left.items()},
            leftover_items=left, violations=list(watch.violations), watch_events=watch.events,
            watch_resumes=watch.resumes, watch_relists=watch.relists,
            max_live_per_deployment=dict(watch.max_live),
            restarts={n: c.get("restarts") for n, c in
                      (bringup.read_json(bringup.status_path(cfg)).get("components") or {}).items()
                      if c.get("restarts")})
        return figures
    finally:
        if watch is not None:
            watch.stop_event.set()
        for c in clients:
            c.close()
        if cfg is not None:
            if os.environ.get("MINIK8S_CHAOS_KEEP_LOGS"):
                figures["state_dir"] = state
            minik8s("down", "--state-dir", state, timeout=180)
            bringup.cleanup(cfg)  # in case `down` itself failed: never leave anything behind
        if not os.environ.get("MINIK8S_CHAOS_KEEP_LOGS"):
            import shutil
            shutil.rmtree(state, ignore_errors=True)


def figures() -> dict[str, object]:
    """For bench/chaos.py: one run with the environment's (or the default) bounds."""
    return run(log=lambda s: print(s, file=sys.stderr, flush=True))


if __name__ == "__main__":
    import json
    print(json.dumps(figures(), indent=1, default=str))
