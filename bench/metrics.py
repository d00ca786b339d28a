"""The metrics pipeline's CPU per pod per scrape (issue 18).

A real etcd and a secure API server (tests/procs.py), one fake-runtime kubelet process
playing --nodes fake nodes (each with its HTTPS endpoint, Webhook authorization, as `up`
runs them), and P pods spread over them with `fake.minik8s.io/usage` set. Then, for each
P (100 and 1,000 by default), R back-to-back scrape cycles of the metrics server's own
code (metricsserver.scraper + storage, in this process: every node's /metrics/resource
fetched at once, decoded, stored) and, after each, the list of every pod's PodMetrics as
the API serves it (metricsserver.api, what an HPA or `kubectl top` reads). Reported:

- metrics server: this process's CPU seconds (time.process_time) per pod per scrape;
- kubelet side: the fake kubelet process's CPU seconds (/proc) per pod per scrape over
  the same cycles (its lease renewals are in there too; they are a few per second);
- wall time of one scrape cycle.

Run: .venv/bin/python -m bench.metrics [--pods 100,1000] [--nodes 10] [--rounds 10]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.api import cpu_seconds  # noqa: E402
from tests.procs import APIServer, Component, Etcd, default_service_account, wait_for  # noqa: E402


async def _create_pods(server: APIServer, ns: str, nodes: list[str], start: int, count: int) -> None:
    async with server.async_client() as c:
        sem = asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async with sem:
                r = await c.post(f"/api/v1/namespaces/{ns}/pods", json={
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"p{i}", "labels": {"app": "bench"}, "annotations": {
                        "fake.minik8s.io/usage": json.dumps({"c": {"cpu": "100m", "memory": "32Mi"}})}},
                    "spec": {"nodeName": nodes[i % len(nodes)], "containers": [{"name": "c", "image": "x"}]}})
                assert r.status_code == 201, r.text
        await asyncio.gather(*(one(i) for i in range(start, start + count)))


async def _measure(server: APIServer, kubelet_pid: int, pods: int, rounds: int) -> tuple[float, float, float]:
    from client.informer import Informer
    from client.rest import Client
    from metricsserver.main import MetricsServer
    from metricsserver.scraper import Scraper
    conn = server.connection()
    client = Client(conn)
    scraper = Scraper(conn, timeout=30, address_types=("InternalIP",), insecure=True)
    ms = MetricsServer(client, scraper, resolution=15)
    for inf in (ms.nodes, ms.pods):
        inf.start()
    informers: list[Informer] = [ms.nodes, ms.pods]
    while not all(i.has_synced() for i in informers) or len(ms.pods.store) < pods:
        await asyncio.sleep(0.1)
    # two warm-up cycles: the kubelets' authorization caches fill, the storage has two points
    for _ in range(2):
        await ms.tick()
    served = 0
    transport = httpx.ASGITransport(app=ms.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://ms") as api:
        cpu0, kcpu0, t0 = time.process_time(), cpu_seconds(kubelet_pid), time.perf_counter()
        for _ in range(rounds):
            await ms.tick()
            served = len((await api.get("/apis/metrics.k8s.io/v1beta1/pods")).json()["items"])
        cpu, kcpu, wall = time.process_time() - cpu0, cpu_seconds(kubelet_pid) - kcpu0, time.perf_counter() - t0
    assert served >= pods, f"only {served} of {pods} pods had metrics"
    await ms.stop()
    await client.close()
    return cpu / pods / rounds, kcpu / pods / rounds, wall / rounds


async def main_async(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-metrics-")
    etcd = Etcd().start()
    server = APIServer(etcd.url).start()
    kubelet = None
    try:
        kc = server.write_kubeconfig(os.path.join(tmp, "admin.conf"))
        prefix = "bm"
        kubelet = Component("kubelet", "--kubeconfig", kc, "--runtime", "fake", "--nodes", str(args.nodes),
                            "--node-name", prefix, "--healthz-port", "0", "--cert-dir", os.path.join(tmp, "kpki"),
                            "--client-ca-file", server.ca_file, "--authorization-mode", "Webhook").start()
        nodes = [f"{prefix}-{i}" for i in range(args.nodes)]
        with server.client() as http:
            wait_for(lambda: all(http.get(f"/api/v1/nodes/{n}").status_code == 200 for n in nodes),
                     timeout=120, what="the fake nodes")
            http.post("/api/v1/namespaces", json={"metadata": {"name": "bench"}})
            default_service_account(http, "bench")
        print(f"# minik8s metrics pipeline benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
              f"{args.nodes} fake nodes, {args.rounds} scrapes per row")
        print("pods | metrics-server CPU µs/pod/scrape | kubelet CPU µs/pod/scrape | scrape cycle ms")
        made = 0
        for pods in sorted(args.pods):
            await _create_pods(server, "bench", nodes, made, pods - made)
            made = pods
            ms_cpu, k_cpu, wall = await _measure(server, kubelet.proc.pid, pods, args.rounds)
            print(f"{pods:4d} | {ms_cpu * 1e6:32.1f} | {k_cpu * 1e6:25.1f} | {wall * 1000:15.1f}")
    finally:
        if kubelet is not None:
            kubelet.stop()
        server.stop()
        etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pods", type=lambda v: [int(x) for x in v.split(",")], default=[100, 1000])
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
