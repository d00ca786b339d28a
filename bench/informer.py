"""Informer benchmark: prints figures measured in one run against a real etcd + API server.

(a) sync: time for an informer to LIST 10,000 pods into its indexed cache and deliver
    an add for each; its steady memory (RSS growth, and Python heap held per tracemalloc
    in a second, traced run);
(b) live events/s: a writer process patches every pod (50 in flight) while the
    informer follows; the rate it applied updates at and how far behind it ended;
(c) catch-up events/s: the informer's API server is stopped, 10,000 more patches are
    made through another API server, the first comes back, and the informer resumes
    from its resourceVersion: the rate it applies the backlog it is sent at once;
(d) client-side ceiling: the same informer fed 10,000 MODIFIED events from an in-memory
    stream (httpx MockTransport): parse + cache + indexes + handler, no server.

Run: .venv/bin/python -m bench.informer [--pods N]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
import tracemalloc

import httpx
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from client.informer import Informer  # noqa: E402
from client.rest import Client  # noqa: E402
from client.watch import Watch  # noqa: E402
from tests.procs import APIServer, Etcd  # noqa: E402

NS = "bench-informer"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pod(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "labels": {"app": f"a{i % 100}", "bench": "informer"}},
            "spec": {"nodeName": f"node-{i % 50}",
                     "containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}


async def run_pool(n: int, inflight: int, fn) -> None:
    counter = iter(range(n))

    async def worker():
        for i in counter:
            await fn(i)
    await asyncio.gather(*(worker() for _ in range(inflight)))


async def write(url: str, n: int, round_: str) -> None:
    """The writer process: patch every pod once."""
    async with Client(url) as c:
        await run_pool(n, 50, lambda i: c.patch("pods", f"p{i}", {"metadata": {"labels": {"round": round_}}},
                                                namespace=NS))


def start_writer(url: str, n: int, round_: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.informer", "--write", url, "--pods", str(n),
                             "--round", round_], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Counter:
    def __init__(self, informer: Informer):
        self.adds = self.updates = 0
        self.first_update = self.last_update = 0.0
        informer.add_handler(on_add=self.add, on_update=self.update)

    def add(self, obj):
        self.adds += 1

    def update(self, old, new):
        now = time.perf_counter()
        if not self.updates:
            self.first_update = now
        self.updates += 1
        self.last_update = now


async def wait_until(cond, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.01)


async def main_async(args) -> None:
    etcd = Etcd().start()
    server = APIServer(etcd.url, "--compaction-window", "0", plain=True).start()
    other = None
    n = args.pods
    try:
        print(f"# minik8s informer benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {n} pods")
        async with Client(server.url) as c:
            await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
            t = time.perf_counter()
            await run_pool(n, 50, lambda i: c.create(pod(i), namespace=NS))
            print(f"created {n} pods in {time.perf_counter() - t:.1f} s (setup)")

        # (a) sync time and memory
        async with Client(server.url) as c:
            gc.collect()
            rss0 = rss_bytes()
            inf = Informer(c, "pods", namespace=NS)
            counter = Counter(inf)
            t = time.perf_counter()
            inf.start()
            await inf.wait_for_sync()
            sync = time.perf_counter() - t
            assert counter.adds == n and len(inf.store) == n
            gc.collect()
            rss = rss_bytes() - rss0
            print(f"sync: {sync:.2f} s for {n} pods ({n / sync:,.0f} objects/s); "
                  f"RSS growth {rss / 2**20:.1f} MiB ({rss / n / 1024:.1f} KiB/pod)")

            async with Client(server.url) as c2:
                gc.collect()
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
                traced = Informer(c2, "pods", namespace=NS)
                traced.start()
                await traced.wait_for_sync()
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - base
                tracemalloc.stop()
                await traced.stop()
            print(f"steady memory (tracemalloc, cache + indexes): {held / 2**20:.1f} MiB "
                  f"({held / n / 1024:.1f} KiB/pod)")

            # (b) live: a writer process patches every pod while the informer follows
            t = time.perf_counter()
            proc = await asyncio.to_thread(lambda: start_writer(server.url, n, "live"))
            await asyncio.to_thread(proc.wait)
            written = time.perf_counter()
            await wait_until(lambda: counter.updates >= n)
            span = counter.last_update - counter.first_update
            print(f"live: {n} updates written at {n / (written - t):,.0f}/s; informer applied "
                  f"{n / span:,.0f} events/s; behind by {max(0.0, counter.last_update - written) * 1000:.0f} ms "
                  f"when the writer finished")

            # (c) catch-up: a backlog replayed from etcd's history after a reconnect
            await asyncio.to_thread(server.stop)
            other = await asyncio.to_thread(APIServer(etcd.url, plain=True).start)
            proc = await asyncio.to_thread(lambda: start_writer(other.url, n, "backlog"))
            await asyncio.to_thread(proc.wait)
            before = counter.updates
            counter.updates = 0
            await asyncio.to_thread(server.start)
            await wait_until(lambda: counter.updates >= n)
            span = counter.last_update - counter.first_update
            assert inf.relists == 0 and before == n
            print(f"catch-up: {n} missed updates applied in {span:.2f} s ({n / span:,.0f} events/s), "
                  f"resumed without a relist")
            await inf.stop()

            # (d) the client-side ceiling: an in-memory stream, no server in the way
            base = int(inf.resource_version)
            lines = b"".join(
                b'{"type":"MODIFIED","object":' + orjson.dumps(
                    {**o, "metadata": {**o["metadata"], "resourceVersion": str(base + 1 + i)}}) + b"}\n"
                for i, o in enumerate(inf.store.list()))
            replay = httpx.MockTransport(lambda request: httpx.Response(200, content=lines))
            counter.updates = 0
            async with Client("http://replay", transport=replay) as rc:
                t = time.perf_counter()
                async for event in Watch(rc, "pods", namespace=NS, resource_version=str(base)):
                    inf.apply(event)
                    if counter.updates == n:
                        break
                span = time.perf_counter() - t
            print(f"client-side ceiling: {n} events parsed and applied in {span:.2f} s ({n / span:,.0f} events/s)")
    finally:
        if other:
            other.stop()
        server.stop()
        etcd.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--write", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--round", default="1", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write:
        asyncio.run(write(args.write, args.pods, args.round))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
