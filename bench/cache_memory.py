"""The API server's watch cache memory per object, against the object's JSON (issue 20).

Prints figures and ratios; nothing here is a pass/fail test. One run:

1. A real etcd and a real API server (`--plain-http`). N pods of a Deployment's shape
   (owner reference, template labels, two containers with env, ports, probes, mounts;
   the server's defaults on top) are created through the API, then each is bound to a
   node and given a kubelet's status: three events a pod, so each pod's JSON is what a
   running cluster stores (about 4 KiB).
2. In-process, precise (tracemalloc): a `WatchCache` of this process, on the same etcd,
   lists everything; the Python heap it grew by, against the JSON of everything it holds
   (the pods and the server's bootstrap objects, as served), is the steady-state ratio
   the issue's target (<= 2x) is about. Then every pod gets one more update (an annotation) through the
   API server while the cache follows etcd's watch: what the heap grew by now is the
   event window (each event's old version kept for watchers that resume), per event.
3. The real API server's RSS: after a warm-up, and after the creates, binds and status
   updates (with its window full), divided by N and the JSON size. RSS includes the
   allocator's slack and the window; it is what `bench/scale.py` reports. And a second
   API server started once the pods exist (its cache filled by one list, no window):
   its RSS over the first's when that was fresh, per pod.
4. `--throughput`: the list and watch rows of bench/api.py at small sizes (LIST of
   `--list-pods` pods with a selector matching 100; 50 watchers x 500 events), and pod
   creates/s at 100 in flight: to show what the cache's shape costs in CPU.

`measure(n)` returns the figures as a dict (bench/scale.py may import it).

Run: .venv/bin/python -m bench.cache_memory [--pods 3000] [--throughput]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import tracemalloc

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.api import Conn, api_creates, cpu_seconds, create_namespace, list_bench, pct, watch_bench  # noqa: E402
from tests.procs import APIServer, Etcd  # noqa: E402

NS = "bench-cache"


def pod_body(i: int) -> bytes:
    """A pod as a Deployment's ReplicaSet makes it."""
    rs = "web-7d4b9c8f6d"
    return orjson.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": f"{rs}-{i:05d}x", "generateName": f"{rs}-",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6d", "tier": "frontend"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-05T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                 "uid": "5f0c3a52-8a6e-4c1b-9a3e-2b7d0f6c9e11",
                                 "controller": True, "blockOwnerDeletion": True}]},
        "spec": {
            "containers": [
                {"name": "app", "image": "registry.example.com/web/app:1.24.3",
                 "args": ["--port=8080", "--log-level=info"],
                 "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                 "env": [{"name": "MODE", "value": "production"},
                         {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                               "limits": {"cpu": "500m", "memory": "256Mi"}},
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]},
                {"name": "sidecar", "image": "registry.example.com/web/proxy:2.1.0",
                 "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                 "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}}],
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}}]}})


def status_patch(i: int, node: str) -> bytes:
    """What a kubelet reports for a running pod."""
    t = "2026-12-05T10:00:05Z"
    ready = [{"type": c, "status": "True", "lastProbeTime": None, "lastTransitionTime": t}
             for c in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
    containers = [{"name": n, "ready": True, "restartCount": 0, "started": True, "image": img,
                   "imageID": f"{img}@sha256:{'ab' * 32}", "containerID": f"containerd://{'%064x' % (i * 2 + k)}",
                   "state": {"running": {"startedAt": t}}}
                  for k, (n, img) in enumerate((("app", "registry.example.com/web/app:1.24.3"),
                                                ("sidecar", "registry.example.com/web/proxy:2.1.0")))]
    ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    return orjson.dumps({"status": {"phase": "Running", "conditions": ready, "hostIP": "192.168.0.7",
                                    "hostIPs": [{"ip": "192.168.0.7"}], "podIP": ip, "podIPs": [{"ip": ip}],
                                    "startTime": t, "qosClass": "Burstable", "containerStatuses": containers}})


class PatchConn(Conn):
    async def patch(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.w.write(f"PATCH {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                     f"Content-Type: application/merge-patch+json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status, headers = await self.head()
        return status, await self.r.readexactly(int(headers.get("content-length", 0)))


    async def get(self, path: str) -> tuple[int, bytes]:
        """A GET whose answer may be streamed (chunked, as a long LIST is)."""
        await self.send("GET", path)
        status, headers = await self.head()
        if headers.get("transfer-encoding") != "chunked":
            return status, await self.r.readexactly(int(headers.get("content-length", 0)))
        parts = []
        while size := int((await self.r.readline()).strip(), 16):
            parts.append(await self.r.readexactly(size))
            await self.r.readline()
        await self.r.readline()
        return status, b"".join(parts)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024


async def _each(base: str, n: int, step, inflight: int = 20) -> None:
    counter = iter(range(n))
    conns = [await PatchConn(base).open() for _ in range(inflight)]

    async def worker(c: PatchConn):
        for i in counter:
            await step(c, i)
    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        c.close()


async def _create_running_pods(base: str, n: int) -> None:
    async def step(c: PatchConn, i: int) -> None:
        name = f"web-7d4b9c8f6d-{i:05d}x"
        status, data = await c.request("POST", f"/api/v1/namespaces/{NS}/pods", pod_body(i))
        assert status == 201, data
        node = f"node-{i % 100:03d}"
        status, data = await c.request("POST", f"/api/v1/namespaces/{NS}/pods/{name}/binding",
                                       orjson.dumps({"metadata": {"name": name}, "target": {"kind": "Node",
                                                                                            "name": node}}))
        assert status == 201, data
        status, data = await c.patch(f"/api/v1/namespaces/{NS}/pods/{name}/status", status_patch(i, node))
        assert status == 200, data
    await _each(base, n, step)


async def _touch_pods(base: str, n: int) -> None:
    async def step(c: PatchConn, i: int) -> None:
        name = f"web-7d4b9c8f6d-{i:05d}x"
        status, data = await c.patch(f"/api/v1/namespaces/{NS}/pods/{name}",
                                     orjson.dumps({"metadata": {"annotations": {"touched": str(i)}}}))
        assert status == 200, data
    await _each(base, n, step)


def _heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _in_process(etcd_url: str, base: str, n: int) -> dict:
    """The watch cache alone, in this process, on the same etcd (see the module docstring)."""
    from apiserver import registry
    from apiserver.cache import WatchCache
    from apiserver.storage.etcd import EtcdStore

    store = EtcdStore([etcd_url])
    await store.open()
    pods = registry.by_plural("pods")
    tracemalloc.start()
    try:
        cache = WatchCache(store, bookmark_interval=3600)
        before = _heap()
        await cache.start()
        await cache.ready.wait()
        steady = _heap() - before
        # Everything the cache holds (pods, and the bootstrap objects: RBAC, priority
        # classes, flow schemas), as JSON: the steady ratio is against all of it.
        objects = sum(len(b.objects) for b in cache.buckets.values())
        json_all = sum(len(e.raw) for b in cache.buckets.values() for e in b.objects.values())
        # The served JSON: what a LIST returns for each pod.
        conn = await Conn(base).open()
        sizes, token = [], ""
        while True:  # pages of 500: a longer LIST is streamed, which this client does not read
            status, data = await conn.request("GET", f"/api/v1/namespaces/{NS}/pods?limit=500&continue={token}")
            page = orjson.loads(data)
            sizes += [len(orjson.dumps(p)) for p in page["items"]]
            if not (token := page["metadata"].get("continue", "")):
                break
        json_size = sum(sizes) / len(sizes)
        del page, data
        assert cache.count(pods, NS) == n
        # The window: one more event a pod, old versions kept for resuming watchers.
        window_before = _heap()
        bucket = cache.buckets[pods.root]
        events_before = len(bucket.history)
        await _touch_pods(base, n)
        status, data = await conn.request("GET", f"/api/v1/namespaces/{NS}/pods?limit=1")
        assert await cache.wait_for(int(orjson.loads(data)["metadata"]["resourceVersion"]), timeout=60)
        conn.close()
        window = _heap() - window_before
        events = len(bucket.history) - events_before
        await cache.stop()
    finally:
        tracemalloc.stop()
        await store.close()
    return {"json_per_pod": json_size, "objects": objects, "json_all": json_all,
            "steady_per_pod": steady / n, "steady_ratio": steady / json_all,
            "window_events": events, "window_per_event": window / max(events, 1),
            "window_ratio": window / max(events, 1) / json_size}


async def measure(n: int) -> dict:
    """Every figure of one run at `n` pods (the module docstring's 1 to 3)."""
    etcd = Etcd().start()
    server = APIServer(etcd.url, plain=True).start()
    fresh = rss_bytes(server.proc.pid)
    second = None
    try:
        # Warm-up: the request paths run once before the first RSS is taken.
        await create_namespace(server.url, "bench-warm")
        await create_namespace(server.url, NS)
        conn = await Conn(server.url).open()
        for i in range(20):
            status, data = await conn.request("POST", "/api/v1/namespaces/bench-warm/pods", pod_body(i))
            assert status == 201, data
        conn.close()
        rss0 = rss_bytes(server.proc.pid)
        t = time.perf_counter()
        await _create_running_pods(server.url, n)
        made = time.perf_counter() - t
        await asyncio.sleep(1)  # let the server's cache take the last events in (RSS only)
        rss1 = rss_bytes(server.proc.pid)
        # A second API server started now: its cache is filled by one list, no window.
        second = APIServer(etcd.url, plain=True).start()
        loaded = rss_bytes(second.proc.pid)
        second.stop()
        fig = await _in_process(etcd.url, server.url, n)
        fig.update(pods=n, create_bind_status_s=made, apiserver_rss_per_pod=(rss1 - rss0) / n,
                   apiserver_rss_ratio=(rss1 - rss0) / n / fig["json_per_pod"],
                   restarted_rss_per_pod=(loaded - fresh) / n,
                   restarted_rss_ratio=(loaded - fresh) / n / fig["json_per_pod"])
        return fig
    finally:
        if second is not None:
            second.stop()
        server.stop()
        etcd.stop()


async def throughput(list_pods: int) -> None:
    """Wall-clock figures, and the server's own CPU per operation (steadier than wall time
    on a shared machine)."""
    etcd = Etcd().start()
    server = APIServer(etcd.url, "--compaction-window", "0", plain=True).start()
    pid = server.proc.pid
    try:
        await create_namespace(server.url, "bench-100")
        cpu: list[float] = []
        rate, lat = await api_creates(server.url, "bench-100", 2000, 100, cpu=(pid, cpu))
        print(f"pod creates at 100 in flight: {rate:.0f}/s, p50 {statistics.median(lat) * 1000:.1f} ms, "
              f"p99 {pct(lat, 99) * 1000:.1f} ms; server CPU {cpu[0] * 1000:.2f} ms a create")
        first, *times = await list_bench(server.url, list_pods, 100, 30)
        c0 = cpu_seconds(pid)
        first, *times = await list_bench_again(server.url, 100, 30)
        print(f"LIST {list_pods} pods, selector matching 100: p50 {statistics.median(times) * 1000:.1f} ms, "
              f"p99 {pct(times, 99) * 1000:.1f} ms; server CPU {(cpu_seconds(pid) - c0) / 31 * 1000:.1f} ms a LIST")
        conn = await PatchConn(server.url).open()
        times = []
        c0 = cpu_seconds(pid)
        for _ in range(10):
            t = time.perf_counter()
            status, data = await conn.get("/api/v1/namespaces/bench-list/pods")
            times.append(time.perf_counter() - t)
            assert status == 200 and len(orjson.loads(data)["items"]) == list_pods
        conn.close()
        print(f"LIST {list_pods} pods, all: p50 {statistics.median(times) * 1000:.1f} ms; "
              f"server CPU {(cpu_seconds(pid) - c0) / 10 * 1000:.1f} ms a LIST")
        c0 = cpu_seconds(pid)
        lat = await watch_bench(server.url, 50, 500)
        print(f"50 watchers x 500 events: delivery p50 {statistics.median(lat) * 1000:.1f} ms, "
              f"p99 {pct(lat, 99) * 1000:.1f} ms ({len(lat)} deliveries); server CPU "
              f"{(cpu_seconds(pid) - c0) / len(lat) * 1e6:.0f} us a delivery (the 500 creates included)")
    finally:
        server.stop()
        etcd.stop()


async def list_bench_again(base: str, n_match: int, rounds: int) -> list[float]:
    """bench/api.py's LIST with a selector, on the pods list_bench made."""
    conn = await Conn(base).open()
    times = []
    for _ in range(rounds + 1):
        t = time.perf_counter()
        status, data = await conn.request("GET", "/api/v1/namespaces/bench-list/pods?labelSelector=app%3Dneedle")
        times.append(time.perf_counter() - t)
        assert len(orjson.loads(data)["items"]) == n_match
    conn.close()
    return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pods", type=int, default=3000)
    p.add_argument("--throughput", action="store_true", help="the list/watch/create rows instead")
    p.add_argument("--list-pods", type=int, default=3000)
    args = p.parse_args()
    print(f"# watch cache memory, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.throughput:
        asyncio.run(throughput(args.list_pods))
        return
    f = asyncio.run(measure(args.pods))
    print(f"{f['pods']} pods created, bound and given a status in {f['create_bind_status_s']:.1f} s; "
          f"a pod's JSON as served: {f['json_per_pod']:.0f} B")
    print(f"watch cache, steady state (tracemalloc): {f['objects']} objects, {f['json_all'] / 2**20:.1f} MiB "
          f"of JSON held in {f['steady_per_pod'] * f['pods'] / 2**20:.1f} MiB = {f['steady_ratio']:.2f}x "
          f"(target <= 2x); {f['steady_per_pod']:.0f} B a pod")
    print(f"watch cache, event window (tracemalloc): {f['window_per_event']:.0f} B an event "
          f"({f['window_events']} events) = {f['window_ratio']:.2f}x a pod's JSON")
    print(f"API server RSS growth (creates, binds, statuses; window full): {f['apiserver_rss_per_pod']:.0f} B "
          f"a pod = {f['apiserver_rss_ratio']:.2f}x its JSON")
    print(f"API server started with the pods in etcd, RSS over a fresh one's (no window): "
          f"{f['restarted_rss_per_pod']:.0f} B a pod = {f['restarted_rss_ratio']:.2f}x its JSON")


if __name__ == "__main__":
    main()
