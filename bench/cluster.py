"""`minik8s up` benchmark: prints figures.

1. `minik8s up --nodes 3` in a fresh state dir: seconds from the command to its return
   (every node Ready: its kubelet registered, got a pod CIDR and renewed its Lease), then
   the same after `minik8s down` on the existing state dir (a restart).
2. Pod startup latency, as Kubernetes' SLO measures it (pod created -> Running, seen by
   a watch, no image pulls): a Deployment of 60 replicas across the 3 nodes; for each
   pod, from the watch's ADDED event (its creation by the ReplicaSet controller) to the
   first event showing it Running. Prints p50/p99/max and the time from creating the
   Deployment to the last pod Running. Kubernetes' SLO: p99 <= 5 s; target here 2 s.
   Then the CPU each component used meanwhile, per pod (a kubelet's with its reaped
   helpers and its fork server; not the long-lived sandboxes, monitors or containers).

Needs root (the linux runtime). The cluster gets its own temporary state dir, port and
address ranges, and is taken down at the end.

Run: .venv/bin/python -m bench.cluster [--nodes 3] [--replicas 60]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cluster.state import ClusterConfig  # noqa: E402
from kubelet.images import HOST_ROOT_IMAGE  # noqa: E402
from tests.procs import free_port, wait_for  # noqa: E402
from tests.test_cluster_network import unique_cidrs  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def minik8s(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"minik8s {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    return r


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024 // 1024
    return f"{os.cpu_count()} cpu ({cpu}), {mem} GiB, Linux {platform.release()}, Python {platform.python_version()}"


TICK = os.sysconf("SC_CLK_TCK")


def component_cpu(state: str) -> dict[str, float]:
    """CPU seconds used so far by each cluster component, kubelets summed (with the
    helpers they have reaped, and their children still running, such as a fork server)."""
    with open(os.path.join(state, "run", "status.json")) as f:
        comps = json.load(f)["components"]
    children: dict[int, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            children[ppid] = children.get(ppid, 0.0) + sum(int(x) for x in fields[11:15]) / TICK
        except (OSError, ValueError):
            pass
    out: dict[str, float] = {}
    for name, c in comps.items():
        if not c.get("pid"):
            continue
        try:
            with open(f"/proc/{c['pid']}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used = sum(int(x) for x in fields[11:15]) / TICK + children.get(c["pid"], 0.0)
        key = "kubelets" if name.startswith("kubelet-") else name
        out[key] = out.get(key, 0.0) + used
    return out


class PodWatch:
    """Watches pods on a thread: first time each was seen, first time seen Running."""

    def __init__(self, api_url: str, selector: str, verify):
        self.verify = verify        # the admin kubeconfig's TLS: the cluster is secure by default
        self.added: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self._stop = False
        rv = httpx.get(f"{api_url}/api/v1/namespaces/default/pods", params={"labelSelector": selector},
                       timeout=30, verify=verify).json()["metadata"]["resourceVersion"]
        self._args = (api_url, selector, rv)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        api_url, selector, rv = self._args
        params = {"watch": "true", "labelSelector": selector, "resourceVersion": rv}
        try:
            self._watch(api_url, params)
        except httpx.HTTPError:
            if not self._stop:
                raise

    def _watch(self, api_url: str, params: dict) -> None:
        with httpx.stream("GET", f"{api_url}/api/v1/namespaces/default/pods", params=params,
                          timeout=None, verify=self.verify) as r:
            for line in r.iter_lines():
                if self._stop:
                    return
                if not line:
                    continue
                now = time.monotonic()
                ev = json.loads(line)
                pod = ev["object"]
                name = pod["metadata"]["name"]
                self.added.setdefault(name, now)
                if (pod.get("status") or {}).get("phase") == "Running":
                    self.running.setdefault(name, now)

    def close(self) -> None:
        self._stop = True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=60)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/cluster.py needs root (the linux runtime)")
    state = tempfile.mkdtemp(prefix="minik8s-bench-")
    node_cidr, cluster_cidr = unique_cidrs()
    print(f"minik8s up benchmark, {time.strftime('%Y-%m-%d')}, {machine()}")
    try:
        t0 = time.monotonic()
        minik8s("up", "--nodes", str(args.nodes), "--state-dir", state, "--port", str(free_port()),
                "--node-cidr", node_cidr, "--cluster-cidr", cluster_cidr)
        cold = time.monotonic() - t0
        minik8s("down", "--state-dir", state)
        t0 = time.monotonic()
        minik8s("up", "--state-dir", state)
        warm = time.monotonic() - t0
        print(f"up --nodes {args.nodes}, all nodes Ready: {cold:.1f} s (fresh state dir), "
              f"{warm:.1f} s (restart on the same state dir)")

        cfg = ClusterConfig.load(state)
        from cluster.bringup import admin_tls
        tls = admin_tls(cfg)
        watch = PodWatch(cfg.api_url, "app=bench", tls)
        d = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench"},
             "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "bench"}},
                      "template": {"metadata": {"labels": {"app": "bench"}},
                                   "spec": {"terminationGracePeriodSeconds": 0,
                                            "containers": [{"name": "c", "image": HOST_ROOT_IMAGE,
                                                            "command": ["sleep", "3600"]}]}}}}
        cpu0 = component_cpu(state)
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        r = httpx.post(f"{cfg.api_url}/apis/apps/v1/namespaces/default/deployments", json=d, timeout=30, verify=tls)
        r.raise_for_status()
        wait_for(lambda: len(watch.running) >= args.replicas, timeout=600, interval=0.05,
                 what=f"{args.replicas} pods Running")
        total = max(watch.running.values()) - t0
        cpu1 = component_cpu(state)
        watch.close()
        lat = [watch.running[n] - watch.added[n] for n in watch.running]
        nodes = {}
        for p in httpx.get(f"{cfg.api_url}/api/v1/namespaces/default/pods",
                           params={"labelSelector": "app=bench"}, timeout=30, verify=tls).json()["items"]:
            nodes[p["spec"]["nodeName"]] = nodes.get(p["spec"]["nodeName"], 0) + 1
        print(f"pod startup latency, {args.replicas}-replica Deployment on {args.nodes} nodes "
              f"({', '.join(f'{n}: {c}' for n, c in sorted(nodes.items()))}): "
              f"p50 {pct(lat, 50):.2f} s, p99 {pct(lat, 99):.2f} s, max {max(lat):.2f} s "
              f"(SLO p99 <= 5 s, target 2 s); Deployment created -> all Running {total:.1f} s")
        print("  CPU per pod started: " + ", ".join(
            f"{k} {(cpu1[k] - cpu0.get(k, 0.0)) / args.replicas * 1000:.0f} ms" for k in sorted(cpu1))
            + f" (load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after)")
    finally:
        subprocess.run([sys.executable, "-m", "cluster.cli", "down", "--purge", "--state-dir", state],
                       capture_output=True, timeout=300)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
