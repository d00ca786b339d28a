"""API server benchmark: prints figures and ratios measured side by side in one run.

(a) raw etcd: compare-and-create transactions/s through aetcd at 1, 10, 100 in flight;
(b) the same number of pod creates through the API server over HTTP at 1, 10, 100
    concurrent clients, with p50/p99 latency, and the ratio (b)/(a);
(c) LIST of 10,000 pods with a label selector matching 100 of them (p50/p99);
(d) 100 concurrent watchers each receiving 1,000 events: delivery latency from the
    write being sent to the event's receipt (p50/p99).

Run: .venv/bin/python -m bench.api [--creates N]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import aetcd
import httpx
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.procs import APIServer, Etcd  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def pod_body(name: str, labels: dict) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                         "spec": {"containers": [{"name": "c", "image": "busybox",
                                                  "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}})


async def raw_etcd(url: str, total: int, inflight: int) -> float:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    client = aetcd.Client(host=host, port=int(port))
    await client.connect()
    value = pod_body("x", {"app": "x"})
    counter = iter(range(total))
    prefix = f"/bench/raw/{inflight}/{time.monotonic_ns()}/"

    async def worker():
        for i in counter:
            key = f"{prefix}{i}".encode()
            await client.transaction(compare=[client.transactions.create(key) == 0],
                                     success=[client.transactions.put(key, value)], failure=[])
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed = time.perf_counter() - t0
    await client.close()
    return total / elapsed


async def api_creates(base: str, ns: str, total: int, inflight: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as c:
        async def worker():
            for i in counter:
                t = time.perf_counter()
                r = await c.post(f"/api/v1/namespaces/{ns}/pods", content=pod_body(f"p{inflight}-{i}", {"app": "bench"}),
                                 headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - t)
                assert r.status_code == 201, r.text
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        elapsed = time.perf_counter() - t0
    return total / elapsed, latencies


async def create_namespace(c: httpx.AsyncClient, name: str) -> None:
    r = await c.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert r.status_code in (201, 409), r.text


async def list_bench(base: str, n_pods: int, n_match: int, rounds: int) -> list[float]:
    ns = "bench-list"
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as c:
        await create_namespace(c, ns)
        sem = asyncio.Semaphore(20)

        async def make(i):
            async with sem:
                labels = {"app": "needle" if i < n_match else "hay", "idx": str(i)}
                r = await c.post(f"/api/v1/namespaces/{ns}/pods", content=pod_body(f"l{i}", labels),
                                 headers={"content-type": "application/json"})
                assert r.status_code == 201, r.text
        await asyncio.gather(*(make(i) for i in range(n_pods)))
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            r = await c.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": "app=needle"})
            times.append(time.perf_counter() - t)
            assert len(r.json()["items"]) == n_match
    return times


async def watch_bench(base: str, watchers: int, events: int) -> list[float]:
    ns = "bench-watch"
    sent: dict[str, float] = {}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(120, read=None),
                                 limits=httpx.Limits(max_connections=watchers + 20)) as c:
        await create_namespace(c, ns)
        rv = (await c.get(f"/api/v1/namespaces/{ns}/configmaps")).json()["metadata"]["resourceVersion"]
        ready = asyncio.Event()
        started = 0

        async def watch():
            nonlocal started
            got = 0
            async with c.stream("GET", f"/api/v1/namespaces/{ns}/configmaps",
                                params={"watch": "true", "resourceVersion": rv}) as r:
                started += 1
                if started == watchers:
                    ready.set()
                async for line in r.aiter_lines():
                    if not line:
                        continue
                    now = time.perf_counter()
                    name = orjson.loads(line)["object"]["metadata"]["name"]
                    latencies.append(now - sent[name])
                    got += 1
                    if got == events:
                        return
        tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
        await asyncio.wait_for(ready.wait(), 60)
        sem = asyncio.Semaphore(10)

        async def write(i):
            async with sem:
                name = f"w{i}"
                sent[name] = time.perf_counter()
                r = await c.post(f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": name}})
                assert r.status_code == 201
        await asyncio.gather(*(write(i) for i in range(events)))
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
    return latencies


async def main_async(args) -> None:
    etcd = Etcd().start()
    server = APIServer(etcd.url, "--compaction-window", "0").start()
    try:
        print(f"# minik8s API benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
        print("in-flight | raw etcd txn/s | API creates/s | ratio | API p50 ms | API p99 ms")
        async with httpx.AsyncClient(base_url=server.url) as c:
            for inflight in (1, 10, 100):
                await create_namespace(c, f"bench-{inflight}")
        for inflight in (1, 10, 100):
            total = args.creates if inflight > 1 else max(200, args.creates // 5)
            raw = await raw_etcd(etcd.url, total, inflight)
            rate, lat = await api_creates(server.url, f"bench-{inflight}", total, inflight)
            print(f"{inflight:9d} | {raw:14.0f} | {rate:13.0f} | {rate / raw:5.2f} | "
                  f"{statistics.median(lat) * 1000:10.1f} | {pct(lat, 99) * 1000:10.1f}")
        times = await list_bench(server.url, args.list_pods, 100, 30)
        print(f"LIST {args.list_pods} pods, selector matching 100: p50 {statistics.median(times) * 1000:.1f} ms, "
              f"p99 {pct(times, 99) * 1000:.1f} ms")
        lat = await watch_bench(server.url, 100, 1000)
        print(f"100 watchers x 1000 events: delivery p50 {statistics.median(lat) * 1000:.1f} ms, "
              f"p99 {pct(lat, 99) * 1000:.1f} ms ({len(lat)} deliveries)")
    finally:
        server.stop()
        etcd.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--creates", type=int, default=2000)
    p.add_argument("--list-pods", type=int, default=10000)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
