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
  e2e         API server + etcd + scheduler, node objects only (to come with the
              scheduler's client wiring; see SECTIONS).

Run: .venv/bin/python -m bench.scheduler [--section algorithm] [--scenario 5000x5000]
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from scheduler.algorithm import Algorithm  # noqa: E402
from scheduler.cache import Cache  # noqa: E402
from scheduler.config import build_frameworks  # noqa: E402
from scheduler.queue import SchedulingQueue  # noqa: E402
from scheduler.types import PodInfo  # noqa: E402

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


def section_e2e(scenarios: list[tuple[int, int]]) -> None:
    print("== end to end (API server + etcd + scheduler) ==")
    print("not yet: needs the scheduler wired to client/ informers and the binding API")


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
