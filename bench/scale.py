"""Scale benchmark (issue 20): `minik8s up --runtime fake --nodes N` at growing N, filled
with Deployments up to 110 pods a node (or --max-pods), printing figures at each size
and, with --plot, drawing their curves (matplotlib: `pip install -e .[bench]`).

At each size, in a fresh cluster (its own state dir and port; taken down at the end):
 1. `up` until every node is Ready; then, idle, the CPU of the fake kubelet and of the
    API server while the nodes renew their Leases every 10 s (--idle seconds);
 2. --deployments Deployments adding up to the size's pods: time to all pods Running
    (every pod bound and none in another phase), and to the Deployments reporting
    them all ready; the curve of pods bound (the scheduler's
    scheduler_schedule_attempts_total{result="scheduled"}) and ready (the Deployments'
    readyReplicas) against time: the scheduler's pods/s as the nodes fill, from empty;
 3. the RSS of every control-plane process, etcd included, empty and full; the API
    server's growth per pod (its watch cache, mostly) against a pod's JSON size;
 4. a LIST of every pod, unpaged and paged (limit 500): time and bytes;
 5. an informer of every pod in a process of its own: sync time, RSS and Python heap
    (tracemalloc) per pod, against a pod's JSON size;
 6. --churn seconds of 50 pods/s created and deleted (bare pods in a namespace of
    their own), with a namespace-scoped LIST every second and a cluster-scoped LIST
    every 10 s: the p99 per Kubernetes SLO class from the API server's own
    apiserver_request_duration_seconds histogram (the delta over the window; p99 is
    the upper bound of the bucket the 99th percentile falls in, as Prometheus'
    histogram_quantile interpolates inside it): single-object mutating calls (POST,
    PUT, PATCH, DELETE, APPLY), namespace-scoped LIST, cluster-scoped LIST;
 7. the API server killed (SIGKILL; the supervisor restarts it, with its back-off):
    time until a LIST of pods (limit 500) is served again.
Once, on the first size (--fairness): tests/test_controller_fairness.py's scenario
against that cluster's API server, with the work queue's worker loop as it is (a yield
after every key) and as it was before issue 20 (none): the busy controller's reconcile
count when the ReplicaSet controller had created all its pods.

Run: .venv/bin/python -m bench.scale [--nodes 500,1000,2500,5000] [--max-pods 150000]
        [--deployments 30] [--churn 30] [--idle 20] [--plot bench/scale.png] [--json FILE]
Everything at the issue's sizes needs a quiet machine with 2 cores and 24 GiB.

`--scheduler-curve` measures only the scheduler as pods pile up, without kubelets: an
etcd with `minik8s up`'s size flags (cluster.bringup.ETCD_SIZE_FLAGS), an API server
(plain HTTP) and the scheduler process; --curve-nodes Node objects (4 cpu, 32Gi, 110
pods: scheduler_perf's); then at each of --levels, pods already bound (spec.nodeName,
round robin, in 10 namespaces, owned by 50 ReplicaSets each) are created up to the level
(their rate and CPU per pod), and the figures taken: etcd's DB size; one page of 500
pods of a namespace and of the cluster, first and continued (the continued one with and
without a write in between: the watch cache serves it only while nothing moved); and a
--batch of new pods bound by the scheduler, created to bound as a watch sees it (pods/s
and the CPU per pod of the scheduler, API server and etcd: the figure the machine's load
changes least). --profile records the scheduler with py-spy during each batch.

    .venv/bin/python -m bench.scale --scheduler-curve [--curve-nodes 5000]
        [--levels 0,25000,50000,100000,150000] [--batch 2000] [--profile /tmp/sched.json]
        [--json FILE] [--plot bench/scale-scheduler.png]; --replot --json FILE redraws
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.cluster import component_cpu, machine, minik8s  # noqa: E402
from client import kubeconfig  # noqa: E402
from client.rest import Client  # noqa: E402
from cluster.state import ClusterConfig  # noqa: E402
from tests.procs import free_port, wait_for  # noqa: E402

NS, CHURN_NS = "scale", "scale-churn"
CONTROL_PLANE = ("etcd", "apiserver", "scheduler", "controller-manager", "kubelet")
MUTATING = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}


def pod_template() -> dict:
    return {"metadata": {"labels": {"app": "scale"}},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9",
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


def components(state: str) -> dict[str, int]:
    with open(os.path.join(state, "run", "status.json")) as f:
        return {n: c["pid"] for n, c in json.load(f)["components"].items() if c.get("pid")}


def rss_mib(state: str) -> dict[str, float]:
    out = {}
    for name, pid in components(state).items():
        try:
            with open(f"/proc/{pid}/status") as f:
                kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        out[name] = kib / 1024
    return out


# -- the API server's request duration histogram -------------------------------------

LINE = re.compile(r'^apiserver_request_duration_seconds_bucket\{(.*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')


def scrape(http: httpx.Client) -> dict[tuple[str, str, str], float]:
    """(verb, scope, le) -> cumulative count, summed over every resource."""
    out: dict[tuple[str, str, str], float] = {}
    for line in http.get("/metrics").text.splitlines():
        m = LINE.match(line)
        if m:
            lb = dict(LABEL.findall(m.group(1)))
            k = (lb.get("verb", ""), lb.get("scope", ""), lb["le"])
            out[k] = out.get(k, 0.0) + float(m.group(2))
    return out


def p99(before: dict, after: dict, want) -> tuple[float | None, int]:
    """The 99th percentile's bucket bound over the requests `want(verb, scope)` picks,
    between two scrapes -> (seconds or None if none, how many requests)."""
    buckets: dict[float, float] = {}
    for (verb, scope, le), v in after.items():
        if want(verb, scope):
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + v - before.get((verb, scope, le), 0.0)
    if not buckets:
        return None, 0
    total = buckets[float("inf")]
    if total <= 0:
        return None, 0
    for bound in sorted(buckets):
        if buckets[bound] >= 0.99 * total:
            return bound, int(total)
    return float("inf"), int(total)


SLO = {  # class -> (selector, Kubernetes' SLO in s)
    "mutating": (lambda verb, scope: verb in MUTATING, 1.0),
    "namespace LIST": (lambda verb, scope: verb == "LIST" and scope == "namespace", 5.0),
    "cluster LIST": (lambda verb, scope: verb == "LIST" and scope == "cluster", 30.0),
}


# -- the informer probe (a process of its own, so its RSS is its own) -----------------

async def informer_probe(path: str) -> dict[str, float]:
    import gc
    import tracemalloc

    from client.informer import Informer

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    async with Client(kubeconfig.load(path).connection()) as c:
        gc.collect()
        rss0 = rss()
        tracemalloc.start()
        heap0 = tracemalloc.get_traced_memory()[0]
        t = time.perf_counter()
        inf = Informer(c, "pods")
        inf.start()
        await inf.wait_for_sync()
        sync = time.perf_counter() - t
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0] - heap0
        tracemalloc.stop()
        n = len(inf.store)
        size = sum(len(json.dumps(p, separators=(",", ":"))) for p in inf.store.list()) / max(n, 1)
        grown = rss() - rss0
        await inf.stop()
    return {"pods": n, "sync_s": sync, "rss_per_pod": grown / max(n, 1), "heap_per_pod": heap / max(n, 1),
            "json_per_pod": size}


# -- one size ----------------------------------------------------------------------

class Cluster:
    def __init__(self, nodes: int):
        self.nodes = nodes
        self.state = tempfile.mkdtemp(prefix="minik8s-scale-")
        self.sched_port = free_port()

    def up(self) -> float:
        t = time.monotonic()
        minik8s("up", "--runtime", "fake", "--nodes", str(self.nodes), "--state-dir", self.state,
                "--port", str(free_port()), "--scheduler-args", f"--secure-port {self.sched_port}",
                timeout=1800)
        took = time.monotonic() - t
        self.cfg = ClusterConfig.load(self.state)
        from cluster.bringup import admin_tls
        self.http = httpx.Client(base_url=self.cfg.api_url, verify=admin_tls(self.cfg), timeout=600)
        return took

    def down(self) -> None:
        subprocess.run([sys.executable, "-m", "cluster.cli", "down", "--purge", "--state-dir", self.state],
                       capture_output=True, timeout=600)
        shutil.rmtree(self.state, ignore_errors=True)

    def scheduled(self) -> int:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.sched_port}/metrics", timeout=10).text
        except httpx.HTTPError:
            return -1
        m = re.search(r'^scheduler_schedule_attempts_total\{[^}]*result="scheduled"[^}]*\} (\S+)$', text, re.M)
        return int(float(m.group(1))) if m else 0

    def all_running(self) -> bool:
        r = self.http.get(f"/api/v1/namespaces/{NS}/pods",
                          params={"fieldSelector": "status.phase!=Running", "limit": 1})
        return r.status_code == 200 and not r.json()["items"]

    def running(self) -> int:
        items = self.http.get(f"/apis/apps/v1/namespaces/{NS}/deployments").json()["items"]
        return sum((d.get("status") or {}).get("readyReplicas", 0) for d in items)


async def fill(cfg: ClusterConfig, pods: int, deployments: int) -> None:
    async with Client(kubeconfig.load(cfg.kubeconfig).connection()) as c:
        for ns in (NS, CHURN_NS):
            await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for i in range(deployments):
            n = pods // deployments + (1 if i < pods % deployments else 0)
            tmpl = pod_template()
            tmpl["metadata"]["labels"] = {"app": f"scale-{i}"}
            await c.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"scale-{i}"},
                            "spec": {"replicas": n, "selector": {"matchLabels": tmpl["metadata"]["labels"]},
                                     "template": tmpl}}, namespace=NS)


async def churn(cfg: ClusterConfig, seconds: float, rate: float) -> dict[str, int]:
    """`rate` pods/s created, each deleted a second later; a namespace LIST every second,
    a cluster-scoped LIST every 10 s. -> counts."""
    counts = {"created": 0, "deleted": 0, "ns_lists": 0, "cluster_lists": 0, "errors": 0}
    async with Client(kubeconfig.load(cfg.kubeconfig).connection()) as c:
        async def one(i: int) -> None:
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"churn-{i}"},
                    "spec": pod_template()["spec"]}
            try:
                await c.create(body, namespace=CHURN_NS)
                counts["created"] += 1
                await asyncio.sleep(1.0)
                await c.delete("pods", f"churn-{i}", namespace=CHURN_NS)
                counts["deleted"] += 1
            except Exception:  # noqa: BLE001 - counted; the histogram tells the rest
                counts["errors"] += 1

        async def lists() -> None:
            k = 0
            while True:
                await c.list("pods", namespace=CHURN_NS)
                counts["ns_lists"] += 1
                if k % 10 == 0:
                    await c.list("pods", namespace="")  # every namespace: scope cluster
                    counts["cluster_lists"] += 1
                k += 1
                await asyncio.sleep(1.0)
        lister = asyncio.create_task(lists())
        tasks = []
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        await asyncio.gather(*tasks)
        lister.cancel()
    return counts


def list_all(http: httpx.Client, limit: int | None) -> tuple[float, int, int]:
    """-> (seconds, bytes, pages) for a LIST of every pod."""
    t = time.monotonic()
    size = pages = 0
    cont = ""
    while True:
        params: dict[str, Any] = {"limit": limit} if limit else {}
        if cont:
            params["continue"] = cont
        r = http.get("/api/v1/pods", params=params)
        r.raise_for_status()
        size += len(r.content)
        pages += 1
        cont = r.json()["metadata"].get("continue", "") if limit else ""
        if not cont:
            return time.monotonic() - t, size, pages


def fairness(cfg: ClusterConfig) -> dict[str, dict]:
    """The fairness test's scenario, with the worker loop as it is and as it was."""
    from client.workqueue import ShutDown, WorkQueue
    from tests.test_controller_fairness import scenario

    async def before(self, handle):  # the loop before issue 20: no yield between keys
        while True:
            try:
                key = await self.get()
            except ShutDown:
                return
            try:
                await handle(key)
            finally:
                self.done(key)

    async def run(ns: str) -> dict:
        async with Client(kubeconfig.load(cfg.kubeconfig).connection()) as c:
            await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            try:
                return await scenario(c, ns)
            finally:
                await c.delete("namespaces", ns)
    out = {"after": asyncio.run(run("fair-after"))}
    fair = WorkQueue.serve
    WorkQueue.serve = before  # type: ignore[method-assign]
    try:
        out["before"] = asyncio.run(run("fair-before"))
    finally:
        WorkQueue.serve = fair  # type: ignore[method-assign]
    return out


def measure(nodes: int, pods: int, args: argparse.Namespace, first: bool) -> dict[str, Any]:
    fig: dict[str, Any] = {"nodes": nodes, "pods": pods}
    cl = Cluster(nodes)
    try:
        fig["up_s"] = cl.up()
        print(f"\n== {nodes} nodes, {pods} pods: up (all nodes Ready) in {fig['up_s']:.1f} s", flush=True)
        cpu0, t0 = component_cpu(cl.state), time.monotonic()
        time.sleep(args.idle)
        cpu1, dt = component_cpu(cl.state), time.monotonic() - t0
        fig["idle_cpu_pct"] = {k: round((cpu1[k] - cpu0.get(k, 0.0)) / dt * 100, 1)
                               for k in CONTROL_PLANE if k in cpu1}
        fig["rss_empty_mib"] = rss_mib(cl.state)
        print(f"idle, leases every 10 s, % of a core over {dt:.0f} s: {fig['idle_cpu_pct']}")
        print(f"RSS empty (MiB): { {k: round(v) for k, v in fig['rss_empty_mib'].items()} }", flush=True)

        if first and args.fairness:
            fig["fairness"] = f = fairness(cl.cfg)
            print("fairness: busy controller's reconciles when the ReplicaSet was done "
                  f"(limit {f['after']['busy_limit']}): after {f['after']['busy_reconciles_when_replicaset_done']}, "
                  f"before {f['before']['busy_reconciles_when_replicaset_done']}; ReplicaSet reconciles "
                  f"{f['after']['replicaset_reconciles']} / {f['before']['replicaset_reconciles']}", flush=True)

        sched0 = cl.scheduled()
        t0 = time.monotonic()
        asyncio.run(fill(cl.cfg, pods, args.deployments))
        curve = []
        fig["all_running_s"] = fig["deployments_ready_s"] = None
        while True:
            now = time.monotonic() - t0
            running, bound = cl.running(), cl.scheduled() - sched0
            curve.append((round(now, 2), bound, running))
            if running >= pods and fig["deployments_ready_s"] is None:
                fig["deployments_ready_s"] = now
            # The pods themselves, not only what the controllers report: under load the
            # ReplicaSets' status was seen to lag minutes behind pods already Running.
            if fig["all_running_s"] is None and bound >= pods and cl.all_running():
                fig["all_running_s"] = now
            if fig["all_running_s"] is not None and (fig["deployments_ready_s"] is not None
                                                     or now > fig["all_running_s"] + args.report_grace):
                break
            if now > args.fill_timeout:
                print(f"gave up after {now:.0f} s: {bound} bound, {running} Running")
                break
            if len(curve) % 60 == 0:  # a line a minute, for a run that takes half an hour
                print(f"  {now:.0f} s: {bound} bound, {running} Running (load {os.getloadavg()[0]:.1f})", flush=True)
            time.sleep(1.0)
        fig["curve"] = curve
        rates = [((b1 - b0) / (t1 - t0_), b1) for (t0_, b0, _), (t1, b1, _) in zip(curve, curve[1:]) if t1 > t0_]
        fig["scheduler_curve"] = [(b, round(r)) for r, b in rates]
        def secs(v: float | None) -> str:
            return "never" if v is None else f"{v:.1f} s"
        print(f"all {pods} pods Running in {secs(fig['all_running_s'])} (the Deployments reporting them all "
              f"ready: {secs(fig['deployments_ready_s'])}); scheduler pods/s as the nodes fill "
              f"(pods placed: pods/s): "
              + ", ".join(f"{b}: {round(r)}" for r, b in rates[:: max(1, len(rates) // 12)]), flush=True)

        fig["rss_full_mib"] = rss = rss_mib(cl.state)
        fig["rss_total_gib"] = sum(rss.values()) / 1024
        print(f"RSS full (MiB): { {k: round(v) for k, v in rss.items()} }; "
              f"total {fig['rss_total_gib']:.2f} GiB (target 16 GiB at 5,000 nodes / 150,000 pods)")

        t, size, _ = list_all(cl.http, None)
        fig["list_unpaged"] = {"s": t, "bytes": size}
        tp, _, pages = list_all(cl.http, 500)
        fig["list_paged"] = {"s": tp, "pages": pages}
        json_per_pod = size / pods
        fig["json_per_pod"] = json_per_pod
        grown = (rss.get("apiserver", 0) - fig["rss_empty_mib"].get("apiserver", 0)) * 2**20 / pods
        fig["apiserver_rss_per_pod"] = grown
        print(f"LIST every pod: unpaged {t:.2f} s ({size / 2**20:.1f} MiB; target < 10 s at 150,000), "
              f"paged by 500: {tp:.2f} s in {pages} pages ({tp / pages * 1000:.0f} ms a page)")
        print(f"API server RSS growth per pod {grown / 1024:.1f} KiB against {json_per_pod / 1024:.2f} KiB "
              f"of JSON = {grown / json_per_pod:.1f}x (watch cache target <= 2x)", flush=True)

        probe = subprocess.run([sys.executable, "-m", "bench.scale", "--informer-probe", cl.cfg.kubeconfig],
                               capture_output=True, text=True, timeout=1800, cwd=ROOT)
        if probe.returncode == 0:
            fig["informer"] = inf = json.loads(probe.stdout.strip().splitlines()[-1])
            print(f"informer of every pod: sync {inf['sync_s']:.1f} s, RSS {inf['rss_per_pod'] / 1024:.1f} KiB/pod, "
                  f"heap {inf['heap_per_pod'] / 1024:.1f} KiB/pod, against {inf['json_per_pod'] / 1024:.2f} KiB "
                  f"of JSON = {inf['heap_per_pod'] / inf['json_per_pod']:.1f}x (target <= 2x)", flush=True)
        else:
            print(f"informer probe failed: {probe.stderr[-500:]}")

        before = scrape(cl.http)
        counts = asyncio.run(churn(cl.cfg, args.churn, 50.0))
        after = scrape(cl.http)
        fig["slo"] = {}
        for name, (want, target) in SLO.items():
            p, n = p99(before, after, want)
            fig["slo"][name] = {"p99_le_s": p, "requests": n, "slo_s": target}
        print(f"while 50 pods/s were created and deleted for {args.churn:.0f} s ({counts}), p99 from "
              "apiserver_request_duration_seconds (bucket bound): "
              + "; ".join(f"{k} <= {v['p99_le_s']} s of {v['requests']} (SLO {v['slo_s']:.0f} s)"
                          for k, v in fig["slo"].items()), flush=True)

        pid = components(cl.state)["apiserver"]
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def served() -> bool:
            try:
                return cl.http.get("/api/v1/pods", params={"limit": 500}, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(lambda: components(cl.state).get("apiserver") not in (None, pid), timeout=300, interval=0.05,
                 what="the API server restarted")
        restarted = time.monotonic() - t0
        wait_for(served, timeout=600, interval=0.1, what="lists served again")
        fig["restart_s"] = {"respawned": restarted, "lists_served": time.monotonic() - t0}
        print(f"API server killed: respawned by the supervisor after {restarted:.1f} s, "
              f"lists served again after {fig['restart_s']['lists_served']:.1f} s", flush=True)
        cl.http.close()
    finally:
        cl.down()
    return fig


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    a = ax[0][0]
    for r in results:
        c = r["curve"]
        a.plot([x[0] for x in c], [x[2] for x in c], label=f"{r['nodes']} nodes: ready (Deployments)")
        a.plot([x[0] for x in c], [x[1] for x in c], "--", label=f"{r['nodes']} nodes: bound")
    a.set(title="Pods bound and Running after the Deployments were created", xlabel="s", ylabel="pods")
    a.legend(fontsize=7)
    a = ax[0][1]
    for r in results:
        sc = r["scheduler_curve"]
        a.plot([x[0] for x in sc], [x[1] for x in sc], label=f"{r['nodes']} nodes")
    a.set(title="Scheduler pods/s end to end as the nodes fill", xlabel="pods placed", ylabel="pods/s")
    a.legend(fontsize=7)
    a = ax[1][0]
    pods = [r["pods"] for r in results]
    for comp in CONTROL_PLANE:
        a.plot(pods, [r["rss_full_mib"].get(comp, 0) for r in results], "o-", label=comp)
    a.set(title="RSS when full", xlabel="pods", ylabel="MiB")
    a.legend(fontsize=7)
    a = ax[1][1]
    nodes = [r["nodes"] for r in results]
    for name in SLO:
        a.plot(nodes, [r["slo"][name]["p99_le_s"] or 0 for r in results], "o-", label=f"{name} p99")
    a.plot(nodes, [r["list_unpaged"]["s"] for r in results], "s--", label="LIST all pods, unpaged")
    a.set(title="Latency while 50 pods/s churn", xlabel="nodes", ylabel="s", yscale="log")
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"curves drawn in {path}")



# -- the scheduler's curve at 5,000 nodes as pods pile up (--scheduler-curve) ----------

FILL_NAMESPACES = 10


def etcd_size_flags() -> list[str]:
    from cluster.bringup import ETCD_SIZE_FLAGS
    return list(ETCD_SIZE_FLAGS)


async def _read_body(conn: Any) -> tuple[int, bytes]:
    """A response of the server on bench.api.Conn, content-length or chunked (streamed
    LISTs are chunked)."""
    status, headers = await conn.head()
    if "content-length" in headers:
        return status, await conn.r.readexactly(int(headers["content-length"]))
    body = bytearray()
    while True:
        size = int((await conn.r.readline()).strip() or b"0", 16)
        if size == 0:
            await conn.r.readline()
            return status, bytes(body)
        body += await conn.r.readexactly(size)
        await conn.r.readline()


async def _timed_get(base: str, path: str) -> tuple[float, int, bytes]:
    from bench.api import Conn
    conn = await Conn(base).open()
    try:
        t = time.perf_counter()
        await conn.send("GET", path)
        status, body = await _read_body(conn)
        return time.perf_counter() - t, status, body
    finally:
        conn.close()


async def page_costs(base: str, repeat: int = 5) -> dict[str, float]:
    """Median seconds of one page (limit 500) of pods, of one fill namespace and of
    every namespace: the first page; a continued (second) page with nothing written in
    between (the watch cache serves it); and one with a write in between (the cache has
    moved past the token's revision, so etcd serves it at that revision, as in a live
    cluster where Leases are renewed all the time)."""
    from bench.api import Conn
    from bench.scheduler import _create
    out: dict[str, float] = {}
    k = 0
    for name, path in (("namespace", "/api/v1/namespaces/fill-0/pods?limit=500"),
                       ("cluster", "/api/v1/pods?limit=500")):
        got: dict[str, list[float]] = {"first": [], "next": [], "next_after_write": []}
        served: dict[str, list[bool]] = {"next": [], "next_after_write": []}
        for _ in range(repeat):
            for kind in ("next", "next_after_write"):
                s, status, body = await _timed_get(base, path)
                assert status == 200, body[:300]
                got["first"].append(s)
                cont = json.loads(body)["metadata"].get("continue")
                if not cont:
                    continue
                if kind == "next_after_write":
                    conn = await Conn(base).open()
                    k += 1
                    await _create(conn, "/api/v1/namespaces/default/configmaps", {
                        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"page-{time.time_ns()}-{k}"}})
                    conn.close()
                s, status, body = await _timed_get(base, f"{path}&continue={cont}")
                assert status == 200, body[:300]
                got[kind].append(s)
                # Only the watch cache's pages carry remainingItemCount: which one served it.
                served[kind].append("remainingItemCount" in json.loads(body)["metadata"])
        for kind, v in got.items():
            if v:
                out[f"{name}_{kind}"] = sorted(v)[len(v) // 2]
        for kind, v in served.items():
            if v:
                out[f"{name}_{kind}_from_cache"] = sum(v) / len(v)
    return out


def etcd_db(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    out = {}
    for name in ("etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
                 "etcd_debugging_mvcc_keys_total", "etcd_server_quota_backend_bytes"):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        if m:
            out[name] = float(m.group(1))
    return out


async def create_retrying(conn: Any, path: str, obj: dict) -> None:
    """POST obj; on a loaded machine etcd's deadline passes at times (504) and API
    Priority and Fairness sheds (429): both say to retry, as a client would."""
    for attempt in range(30):
        status, data = await conn.request("POST", path, json.dumps(obj).encode())
        if status == 201 or (status == 409 and attempt):  # 409: an earlier try went through
            return
        assert status in (429, 500, 503, 504), data[:300]
        await asyncio.sleep(1.0)
    raise AssertionError(f"{obj['metadata']['name']}: {status} {data[:300]!r}")


async def place(base: str, nodes: int, start: int, end: int) -> float:
    """Pods start..end-1 created already bound (spec.nodeName, round robin over the
    nodes), in FILL_NAMESPACES namespaces, owned by 50 ReplicaSets each; -> seconds."""
    from bench.scheduler import _pool, pod_obj

    def body(i: int) -> tuple[dict, str]:
        p = pod_obj(i, owners=50)
        p["metadata"]["namespace"] = ns = f"fill-{i % FILL_NAMESPACES}"
        del p["metadata"]["uid"]
        p["spec"]["nodeName"] = f"node-{i % nodes}"
        return p, ns
    t = time.perf_counter()

    async def one(conn, k: int) -> None:
        p, ns = body(start + k)
        await create_retrying(conn, f"/api/v1/namespaces/{ns}/pods", p)
    await _pool(end - start, 100, base, one)
    return time.perf_counter() - t


async def bind_batch(base: str, ns: str, n: int, sched_pid: int, procs: dict[str, int],
                     profile: str | None) -> dict[str, Any]:
    """n new pods created (100 in flight) in `ns`, to the last of them bound, seen by a
    watch: pods/s end to end, and the CPU each process spent meanwhile."""
    from bench.api import Conn
    from bench.scheduler import _pool, cpu_seconds, pod_obj
    conn = await Conn(base).open()
    await conn.send("GET", f"/api/v1/namespaces/{ns}/pods?limit=1")
    status, body = await _read_body(conn)
    rv = json.loads(body)["metadata"]["resourceVersion"]
    await conn.send("GET", f"/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}"
                           "&fieldSelector=spec.nodeName%21%3D")
    status, _ = await conn.head()
    assert status == 200
    bound = 0
    last = 0.0

    async def watch() -> None:
        nonlocal bound, last
        async for line in conn.lines():
            if json.loads(line)["type"] == "ADDED":
                bound += 1
                last = time.perf_counter()
                if bound == n:
                    return
    watcher = asyncio.create_task(watch())
    spy = None
    if profile:
        py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
        spy = subprocess.Popen([py_spy, "record", "--pid", str(sched_pid), "--format", "speedscope",
                                "--output", profile, "--rate", "50", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
    t0 = time.perf_counter()

    def pod(i: int) -> dict:
        p = pod_obj(i)
        p["metadata"]["namespace"] = ns
        del p["metadata"]["uid"]
        return p
    await _pool(n, 100, base, lambda c, i: create_retrying(c, f"/api/v1/namespaces/{ns}/pods", pod(i)))
    created = time.perf_counter() - t0
    try:
        await asyncio.wait_for(watcher, 900)
    finally:
        conn.close()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
    cpu = {k: round(cpu_seconds(pid) - cpu0[k], 1) for k, pid in procs.items()}
    return {"pods_per_s": n / (last - t0), "bound_s": last - t0, "created_s": created, "cpu_s": cpu}


def settled(pid: int, quiet: float = 0.05, seconds: int = 3, timeout: float = 600.0) -> None:
    """Wait until process `pid` uses less than `quiet` of a core in each of `seconds`
    seconds in a row (more than one: on a loaded machine a busy process can be starved
    for a second)."""
    from bench.scheduler import cpu_seconds
    deadline = time.monotonic() + timeout
    last, calm = cpu_seconds(pid), 0
    while time.monotonic() < deadline and calm < seconds:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        calm = calm + 1 if now - last < quiet else 0
        last = now


def scheduler_curve(args: argparse.Namespace) -> dict[str, Any]:
    """API server + etcd (with `minik8s up`'s size flags) + the scheduler process, node
    objects only (no kubelets: the scheduler reads nodes and pods, nothing else). At each
    fill level, pods already bound are created up to it, then a batch of new pods is
    bound by the scheduler end to end."""
    from bench.scheduler import _create, _pool, cpu_seconds, node_obj
    from tests.procs import APIServer, Component, Etcd

    levels = [int(x) for x in args.levels.split(",")]
    nodes = args.curve_nodes
    etcd = Etcd(args=tuple(etcd_size_flags())).start()
    server = APIServer(etcd.url, plain=True).start()
    kubeconfig_path = os.path.join(etcd.dir, "kubeconfig")
    with open(kubeconfig_path, "w") as f:
        f.write("apiVersion: v1\nkind: Config\n"
                f"clusters: [{{name: c, cluster: {{server: '{server.url}'}}}}]\n"
                "users: [{name: u, user: {}}]\n"
                "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n")
    base = server.url
    out: dict[str, Any] = {"nodes": nodes, "batch": args.batch, "levels": []}
    sched = None
    try:
        async def setup() -> float:
            for ns in [*(f"fill-{k}" for k in range(FILL_NAMESPACES)),
                       *(f"sched-{k}" for k in range(len(levels)))]:
                await _pool(1, 1, base, lambda c, i, ns=ns: _create(c, "/api/v1/namespaces", {
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
                # no controller manager here: the ServiceAccount admission wants "default"
                await _pool(1, 1, base, lambda c, i, ns=ns: _create(c, f"/api/v1/namespaces/{ns}/serviceaccounts", {
                    "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}))
            t = time.perf_counter()
            await _pool(nodes, 50, base, lambda c, i: _create(c, "/api/v1/nodes", node_obj(i)))
            return time.perf_counter() - t
        out["nodes_s"] = asyncio.run(setup())
        print(f"{nodes} nodes created in {out['nodes_s']:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        sched = Component("scheduler", "--kubeconfig", kubeconfig_path, "--leader-elect=false",
                          "--secure-port", str(free_port())).start()
        wait_for(lambda: "] scheduling\n" in sched.log() or not sched.alive(), 300, what="scheduler sync")
        assert sched.alive(), sched.log()
        procs = {"scheduler": sched.proc.pid, "apiserver": server.proc.pid, "etcd": etcd.proc.pid}
        placed = 0
        for k, level in enumerate(levels):
            row: dict[str, Any] = {"placed": level, "load_start": round(os.getloadavg()[0], 1)}
            if level > placed:
                cpu0 = {n: cpu_seconds(pid) for n, pid in procs.items()}
                s = asyncio.run(place(base, nodes, placed, level))
                row["place_s"], row["place_per_s"] = s, (level - placed) / s
                row["place_cpu_ms_per_pod"] = {n: round((cpu_seconds(pid) - cpu0[n]) / (level - placed) * 1e3, 2)
                                               for n, pid in procs.items()}
                placed = level
                # The scheduler has taken in every placed pod before the batch starts: its
                # CPU goes quiet once its watch has caught up.
                settled(sched.proc.pid)
            db = etcd_db(etcd.url)
            row["etcd"] = db
            row["pages"] = asyncio.run(page_costs(base))
            profile = f"{args.profile.removesuffix('.json')}-{level}.json" if args.profile else None
            row["batch"] = asyncio.run(bind_batch(base, f"sched-{k}", args.batch, sched.proc.pid, procs,
                                                  profile))
            placed_total = placed + args.batch * k
            row["load_end"] = round(os.getloadavg()[0], 1)
            out["levels"].append(row)
            per_pod = db.get("etcd_mvcc_db_total_size_in_bytes", 0) / max(placed_total, 1)
            print(f"{level:>7} placed" + (f" (created in {row['place_s']:.1f} s, {row['place_per_s']:.0f}/s; "
                                         f"CPU ms a pod {row['place_cpu_ms_per_pod']})" if "place_s" in row else "")
                  + f": batch of {args.batch} bound at {row['batch']['pods_per_s']:.0f} pods/s "
                  f"({row['batch']['bound_s']:.1f} s; CPU s {row['batch']['cpu_s']}); a page of 500: "
                  + ", ".join(f"{n} {v * 1e3:.0f} ms" for n, v in row["pages"].items() if not n.endswith("_cache"))
                  + f"; etcd DB {db.get('etcd_mvcc_db_total_size_in_bytes', 0) / 2**20:.0f} MiB "
                  f"(in use {db.get('etcd_mvcc_db_total_size_in_use_in_bytes', 0) / 2**20:.0f} MiB, "
                  f"{per_pod:.0f} B a pod, {db.get('etcd_debugging_mvcc_keys_total', 0):.0f} keys); "
                  f"load {row['load_start']} to {row['load_end']}", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(out, f, indent=1)
    finally:
        if sched is not None:
            sched.stop()
            out["scheduler_log"] = sched.logfile.name
        server.stop()
        etcd.stop()
    return out


def plot_curve(out: dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = out["levels"]
    x = [r["placed"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes.flatten()
    ax[0].plot(x, [r["batch"]["pods_per_s"] for r in rows], "o-", label="end to end")
    ax[0].axhline(100, color="grey", ls=":", label="target 100 pods/s")
    ax[0].set(title=f"Scheduler at {out['nodes']} nodes: a batch of {out['batch']} bound",
              xlabel="pods already placed", ylabel="pods/s", ylim=(0, None))
    for r in rows:
        ax[0].annotate(f"load {r['load_start']:.0f}", (r["placed"], r["batch"]["pods_per_s"]), fontsize=7)
    ax[0].legend(fontsize=7)
    # CPU per bound pod: what the machine's load changes least.
    for name in rows[0]["batch"]["cpu_s"]:
        ax[3].plot(x, [r["batch"]["cpu_s"][name] / out["batch"] * 1e3 for r in rows], "o-", label=name)
    ax[3].set(title="CPU per pod bound, end to end", xlabel="pods already placed", ylabel="ms of CPU",
              ylim=(0, None))
    ax[3].legend(fontsize=7)
    for key in ("namespace_first", "namespace_next", "namespace_next_after_write", "cluster_first",
                "cluster_next", "cluster_next_after_write"):
        pts = [(r["placed"], r["pages"][key] * 1e3) for r in rows if key in r["pages"]]
        if not pts:
            continue
        ax[1].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=key.replace("_", " "))
    ax[1].set(title="One page of 500 pods (LIST limit=500)", xlabel="pods in the cluster", ylabel="ms",
              ylim=(0, None))
    ax[1].legend(fontsize=7)
    ax[2].plot(x, [r["etcd"].get("etcd_mvcc_db_total_size_in_bytes", 0) / 2**20 for r in rows], "o-",
               label="DB size")
    ax[2].plot(x, [r["etcd"].get("etcd_mvcc_db_total_size_in_use_in_bytes", 0) / 2**20 for r in rows],
               "s--", label="in use")
    ax[2].set(title="etcd", xlabel="pods placed", ylabel="MiB")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    print(f"curves drawn in {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="500,1000,2500,5000", help="comma list of cluster sizes")
    ap.add_argument("--pods-per-node", type=int, default=110)
    ap.add_argument("--max-pods", type=int, default=150_000)
    ap.add_argument("--deployments", type=int, default=30)
    ap.add_argument("--churn", type=float, default=30.0, help="seconds of 50 pods/s churn")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle lease renewals measured")
    ap.add_argument("--fill-timeout", type=float, default=3600.0)
    ap.add_argument("--report-grace", type=float, default=120.0,
                    help="seconds to wait, once every pod is Running, for the Deployments to say so")
    ap.add_argument("--no-fairness", dest="fairness", action="store_false")
    ap.add_argument("--plot", nargs="?", const="bench/scale.png", default=None, metavar="PNG")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write every figure as JSON")
    ap.add_argument("--informer-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scheduler-curve", action="store_true",
                    help="only the scheduler's curve: node objects, pods placed up to --levels, a batch bound at each")
    ap.add_argument("--curve-nodes", type=int, default=5000)
    ap.add_argument("--replot", action="store_true", help="with --scheduler-curve: draw the curves from --json")
    ap.add_argument("--levels", default="0,25000,50000,100000", help="pods already placed, comma list")
    ap.add_argument("--batch", type=int, default=2000, help="new pods the scheduler binds at each level")
    ap.add_argument("--profile", default=None, metavar="JSON",
                    help="py-spy's speedscope profiles of the scheduler during each level's batch: JSON-<level>.json")
    args = ap.parse_args()
    if args.informer_probe:
        print(json.dumps(asyncio.run(informer_probe(args.informer_probe))))
        return
    if args.scheduler_curve and args.replot:
        with open(args.json) as f:
            plot_curve(json.load(f), args.plot or "bench/scale-scheduler.png")
        return
    if args.scheduler_curve:
        print(f"minik8s scheduler curve, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, "
              f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
        out = scheduler_curve(args)
        if args.plot:
            plot_curve(out, args.plot)
        return
    load = os.getloadavg()
    print(f"minik8s scale benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, "
          f"load average {load[0]:.1f} at start")
    results = []
    for i, n in enumerate(int(x) for x in args.nodes.split(",")):
        results.append(measure(n, min(args.max_pods, n * args.pods_per_node), args, first=i == 0))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
