"""Scheduler benchmark (kube-scheduler's scheduler_perf SchedulingBasic): prints figures.

Workload: N nodes (4 cpu, 32Gi, 110 pods, as scheduler_perf's node-default.yaml), then M
pods each requesting 100m cpu and 500Mi memory (pod-default.yaml), default profile.
Scenarios: 100 nodes / 1,000 pods, 1,000 / 5,000, 5,000 / 5,000.

Sections:
  algorithm   the scheduler alone, in-process, no API: pods enter the queue as an
              informer would hand them over (parsed into PodInfo), each cycle pops one,
              filters, scores, assumes it, and the binding is "confirmed" at once as the
              watch would. Prints pods/s (first pod queued to last pod assumed) and the
              scheduling-cycle latency p50/p99; once for pods without an owner, once
              for pods owned by 50 ReplicaSets (so PodTopologySpread scores too).
  e2e         API server + etcd + the scheduler process (`minik8s scheduler`), node
              objects only: a fresh server per scenario, N nodes created, the
              scheduler started and synced, then M pods created with 100 requests in
              flight. Prints pods bound per second (first create to the last binding
              seen by a watch), the scheduler's own cycle latency p50/p99 (from the
              metrics summary it logs on SIGTERM) and its binding latency, next to the
              algorithm-alone figures for the same scenario.

Run: .venv/bin/python -m bench.scheduler [--section algorithm|e2e] [--scenario 5000x5000]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
from typing import Callable

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.api import Conn  # noqa: E402
from scheduler.algorithm import Algorithm  # noqa: E402
from scheduler.cache import Cache  # noqa: E402
from scheduler.config import build_frameworks  # noqa: E402
from scheduler.queue import SchedulingQueue  # noqa: E402
from scheduler.types import PodInfo  # noqa: E402
from tests.procs import APIServer, Component, Etcd, wait_for  # noqa: E402

SCENARIOS = [(100, 1000), (1000, 5000), (5000, 5000)]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def node_obj(i: int) -> dict:
    name = f"node-{i}"
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
                       "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod_obj(i: int, owners: int = 0) -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"pod-{i}", "namespace": "bench", "uid": f"uid-{i}"},
           "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}}
    if owners:
        rs = f"rs-{i % owners}"
        pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                               "name": rs, "uid": rs, "controller": True}]
    return pod


def algorithm_alone(n_nodes: int, n_pods: int, *, owners: int = 0, seed: int = 1) -> dict:
    cache = Cache()
    for i in range(n_nodes):
        cache.add_node(node_obj(i))
    fwk = build_frameworks()["default-scheduler"]
    algo = Algorithm(cache, rng=random.Random(seed))
    queue = SchedulingQueue()
    # As the scheduler process does once its informers have synced: move the long-lived
    # objects (here the nodes) out of the cyclic GC's sight, so full collections do not
    # rescan them during cycles. Pods arrive afterwards and stay collectable.
    gc.collect()
    gc.freeze()
    pods = [pod_obj(i, owners) for i in range(n_pods)]
    latencies: list[float] = []
    unscheduled = 0
    t0 = time.perf_counter()
    for p in pods:
        queue.add(PodInfo(p))
    while (q := queue.pop_nowait()) is not None:
        t = time.perf_counter()
        r = algo.scheduling_cycle(fwk, q.pod_info)
        latencies.append(time.perf_counter() - t)
        if r.node_name is None:
            unscheduled += 1
            queue.add_unschedulable(q, r.unschedulable_plugins)
            continue
        queue.done(q.key)
        cache.add_pod(r.pod)  # the watch confirms the binding
    elapsed = time.perf_counter() - t0
    gc.unfreeze()
    counts = [cache.pod_count[i] for i in range(len(cache))]
    assert sum(counts) == n_pods - unscheduled
    assert all(cache.free_cpu[i] >= 0 and cache.free_mem[i] >= 0 for i in range(len(cache)))
    return {"pods_per_s": (n_pods - unscheduled) / elapsed, "p50_ms": pct(latencies, 50) * 1e3,
            "p99_ms": pct(latencies, 99) * 1e3, "unscheduled": unscheduled,
            "max_pods_per_node": max(counts), "min_pods_per_node": min(counts),
            "stdev_pods_per_node": statistics.pstdev(counts)}


def section_algorithm(scenarios: list[tuple[int, int]]) -> None:
    print("== algorithm alone (in-process, no API) ==")
    for owners, title in ((0, "pods without owner (SchedulingBasic)"),
                          (50, "pods owned by 50 ReplicaSets (PodTopologySpread scoring active)")):
        print(f"-- {title}")
        print(f"{'nodes':>6} {'pods':>6} {'pods/s':>9} {'cycle p50':>10} {'cycle p99':>10}  pods/node min/max")
        for n, m in scenarios:
            r = algorithm_alone(n, m, owners=owners)
            print(f"{n:>6} {m:>6} {r['pods_per_s']:>9.0f} {r['p50_ms']:>8.3f}ms {r['p99_ms']:>8.3f}ms"
                  f"  {r['min_pods_per_node']}/{r['max_pods_per_node']}"
                  + (f"  UNSCHEDULED {r['unscheduled']}" if r["unscheduled"] else ""))


async def _pool(n: int, inflight: int, base: str, fn) -> None:
    """Run fn(conn, i) for i in range(n) over `inflight` keep-alive connections."""
    counter = iter(range(n))
    conns = [await Conn(base).open() for _ in range(inflight)]

    async def worker(conn: Conn) -> None:
        for i in counter:
            await fn(conn, i)
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()


async def _create(conn: Conn, path: str, obj: dict) -> None:
    status, data = await conn.request("POST", path, orjson.dumps(obj))
    assert status == 201, data[:300]


async def _e2e_scenario(server: APIServer, etcd_pid: int, kubeconfig: str, n_nodes: int,
                        n_pods: int) -> dict:
    base, ns = server.url, "bench"
    await _pool(1, 1, base, lambda c, i: _create(c, "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
    t = time.perf_counter()
    await _pool(n_nodes, 50, base, lambda c, i: _create(c, "/api/v1/nodes", node_obj(i)))
    nodes_s = time.perf_counter() - t
    sched = Component("scheduler", "--kubeconfig", kubeconfig, "--leader-elect=false").start()
    try:
        wait_for(lambda: "] scheduling\n" in sched.log() or not sched.alive(), 120, what="scheduler sync")
        assert sched.alive(), sched.log()
        conn = await Conn(base).open()  # fresh: the server closes connections idle for 5s
        status, data = await conn.request("GET", f"/api/v1/namespaces/{ns}/pods")
        rv = orjson.loads(data)["metadata"]["resourceVersion"]
        # A pod enters this selector when it is bound: one ADDED line per binding.
        await conn.send("GET", f"/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}"
                               "&fieldSelector=spec.nodeName%21%3D")
        status, _ = await conn.head()
        assert status == 200
        bound: set[str] = set()
        last = 0.0

        async def watch() -> None:
            nonlocal last
            async for line in conn.lines():
                ev = orjson.loads(line)
                if ev["type"] == "ADDED":
                    bound.add(ev["object"]["metadata"]["name"])
                    last = time.perf_counter()
                    if len(bound) == n_pods:
                        return
        watcher = asyncio.create_task(watch())
        procs = {"scheduler": sched.proc.pid, "apiserver": server.proc.pid, "etcd": etcd_pid,
                 "bench": os.getpid()}
        cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
        t0 = time.perf_counter()
        await _pool(n_pods, 100, base,
                    lambda c, i: _create(c, f"/api/v1/namespaces/{ns}/pods", pod_obj(i)))
        created = time.perf_counter() - t0
        try:
            await asyncio.wait_for(watcher, 600)
        finally:
            conn.close()
        elapsed = last - t0
        cpu = {k: cpu_seconds(pid) - cpu0[k] for k, pid in procs.items()}
    finally:
        sched.stop()
    with open(sched.logfile.name, errors="replace") as f:
        summary = next((line.split("scheduler metrics: ", 1)[1] for line in f
                        if "scheduler metrics: " in line), None)
    assert summary is not None, sched.log()
    metrics = dict(kv.split("=") for kv in summary.split())
    return {"pods_per_s": n_pods / elapsed, "create_s": created, "nodes_s": nodes_s,
            "bind_s": elapsed, "cpu": cpu, **{k: float(v) for k, v in metrics.items()}}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def e2e(n_nodes: int, n_pods: int) -> dict:
    etcd = Etcd().start()
    server = APIServer(etcd.url, "--compaction-window", "0", plain=True).start()
    kubeconfig = os.path.join(etcd.dir, "kubeconfig")
    with open(kubeconfig, "w") as f:
        f.write("apiVersion: v1\nkind: Config\n"
                f"clusters: [{{name: c, cluster: {{server: '{server.url}'}}}}]\n"
                "users: [{name: u, user: {}}]\n"
                "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n")
    try:
        return asyncio.run(_e2e_scenario(server, etcd.proc.pid, kubeconfig, n_nodes, n_pods))
    finally:
        server.stop()
        etcd.stop()


def section_e2e(scenarios: list[tuple[int, int]]) -> None:
    print("== end to end (API server + etcd + scheduler process, node objects only) ==")
    print(f"{'nodes':>6} {'pods':>6} {'pods/s':>7} {'cycle p50':>10} {'cycle p99':>10} {'bind p50':>9} "
          f"{'bind p99':>9} | {'algo pods/s':>11} {'cycle p50':>10} {'cycle p99':>10}")
    for n, m in scenarios:
        r = e2e(n, m)
        a = algorithm_alone(n, m)
        print(f"{n:>6} {m:>6} {r['pods_per_s']:>7.0f} {r['cycle_p50_ms']:>8.3f}ms {r['cycle_p99_ms']:>8.3f}ms "
              f"{r['binding_p50_ms']:>7.1f}ms {r['binding_p99_ms']:>7.1f}ms | {a['pods_per_s']:>11.0f} "
              f"{a['p50_ms']:>8.3f}ms {a['p99_ms']:>8.3f}ms   (pods created in {r['create_s']:.1f}s, "
              f"last bound at {r['bind_s']:.1f}s; {n} nodes created in {r['nodes_s']:.1f}s)", flush=True)
        print("       CPU seconds from first create to last binding: "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu"].items())
              + f" (wall {r['bind_s']:.1f}s, {os.cpu_count()} cores)", flush=True)


SECTIONS: dict[str, Callable[[list[tuple[int, int]]], None]] = {
    "algorithm": section_algorithm,
    "e2e": section_e2e,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    ap.add_argument("--scenario", action="append", metavar="NODESxPODS",
                    help="e.g. 5000x5000 (repeatable); default: 100x1000 1000x5000 5000x5000")
    args = ap.parse_args()
    scenarios = ([tuple(int(x) for x in s.lower().split("x")) for s in args.scenario]
                 if args.scenario else SCENARIOS)
    for name, fn in SECTIONS.items():
        if args.section in (name, "all"):
            fn(scenarios)


if __name__ == "__main__":
    main()
