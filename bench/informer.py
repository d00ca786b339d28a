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

--memory (no server; issue 20's "informer memory per pod <= 2x its JSON"): 5,000 pods as
a fake-kubelet cluster holds them (`scale_pods`: one pod a Deployment's ReplicaSet
created, bound and given a status by the fake kubelet through a real API server, then
varied as 30 Deployments on 1,000 nodes vary it), decoded from one LIST body and
applied with `Informer.replace`; per pod: the Python heap held (tracemalloc), the CPU
time (process time, so the machine's other load counts less) of applying it at sync
and of a MODIFIED event, and the cost of two consumers' scans
(the ReplicaSet controller's pods for a selector, a scheduler-style sum of requests by
node), each with the informer as it is made by default and as the controller manager
and scheduler make it (`strip_managed_fields`). `memory_probe()` is importable
(bench/scale.py).

Run: .venv/bin/python -m bench.informer [--pods N] [--memory]
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import os
import random
import subprocess
import sys
import time
import tracemalloc

import httpx
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from client.informer import LABEL, Informer, strip_managed_fields  # noqa: E402
from client.rest import Resources  # noqa: E402
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


# -- --memory: a fake-kubelet cluster's pods, no server -------------------------------

# Captured from a real API server (2026-12-05): a ReplicaSet's pod after its create,
# its binding and the fake kubelet's status write; `scale_pod` varies what differs
# from pod to pod in bench/scale.py's cluster.
_SCALE_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {
        "generateName": "", "labels": {}, "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "", "uid": "", "controller": True,
            "blockOwnerDeletion": True}],
        "namespace": "scale", "name": "", "uid": "", "creationTimestamp": "",
        "managedFields": [
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": "",
             "fieldsType": "FieldsV1", "fieldsV1": {
                 "f:metadata": {"f:labels": {"f:app": {}, "f:pod-template-hash": {}}, "f:ownerReferences": {}},
                 "f:spec": {
                     "f:containers": {'k:{"name":"app"}': {
                         ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                         "f:resources": {"f:requests": {"f:cpu": {}, "f:memory": {}}},
                         "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {},
                         "f:volumeMounts": {'k:{"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}': {
                             ".": {}, "f:mountPath": {}, "f:name": {}, "f:readOnly": {}}}}},
                     "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:preemptionPolicy": {}, "f:priority": {},
                     "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
                     "f:serviceAccount": {}, "f:serviceAccountName": {}, "f:terminationGracePeriodSeconds": {},
                     "f:tolerations": {}, "f:volumes": {}}}},
            {"manager": "fake-kubelet", "operation": "Update", "apiVersion": "v1", "time": "",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {
                 "f:conditions": {
                     **{f'k:{{"type":"{t}"}}': {".": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}
                        for t in ("ContainersReady", "Initialized", "PodReadyToStartContainers")},
                     'k:{"type":"PodScheduled"}': {"f:lastTransitionTime": {}},
                     'k:{"type":"Ready"}': {".": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}},
                 "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {}, "f:podIP": {},
                 "f:podIPs": {}, "f:startTime": {}}},
             "subresource": "status"}],
        "resourceVersion": ""},
    "spec": {
        "containers": [{
            "name": "app", "image": "registry.k8s.io/pause:3.9",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "volumeMounts": [{"name": "", "readOnly": True,
                              "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler", "securityContext": {}, "enableServiceLinks": True,
        "priority": 0, "preemptionPolicy": "PreemptLowerPriority", "serviceAccountName": "default",
        "serviceAccount": "default",
        "tolerations": [{"key": f"node.kubernetes.io/{t}", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300} for t in ("not-ready", "unreachable")],
        "volumes": [{"name": "", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
        "nodeName": ""},
    "status": {
        "phase": "Running",
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": ""} for t in (
            "PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled")],
        "hostIP": "", "hostIPs": [], "podIP": "", "podIPs": [], "startTime": "",
        "containerStatuses": [{"name": "app", "image": "registry.k8s.io/pause:3.9", "imageID": "",
                               "ready": True, "restartCount": 0, "started": True,
                               "state": {"running": {"startedAt": ""}}, "containerID": ""}],
        "qosClass": "Burstable"}}


def scale_pods(n: int, *, deployments: int = 30, nodes: int = 1000, seed: int = 1) -> list[dict]:
    """`n` pods as bench/scale.py's cluster has them: what differs from pod to pod
    (names, uids, the token volume's random name, node, IPs, times by batch) differs."""
    rnd = random.Random(seed)

    def word(k: int) -> str:
        return "".join(rnd.choices("bcdfghjklmnpqrstvwxz2456789", k=k))

    def uid() -> str:
        h = f"{rnd.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    owners = [(f"scale-{d}-{word(10)}", uid()) for d in range(deployments)]
    out = []
    for i in range(n):
        d = i % deployments
        rs, rs_uid = owners[d]
        p = copy.deepcopy(_SCALE_POD)
        md, spec, status = p["metadata"], p["spec"], p["status"]
        created = f"2026-12-05T15:{30 + i // 3000 % 30:02d}:{i // 50 % 60:02d}Z"
        started = f"2026-12-05T15:{31 + i // 3000 % 29:02d}:{(i // 50 + 7) % 60:02d}Z"
        pod_uid, volume, node = uid(), f"kube-api-access-{word(5)}", i % nodes
        host, ip = f"127.127.{node // 250}.{node % 250 + 1}", f"10.128.{i // 250}.{i % 250 + 1}"
        md.update(generateName=f"{rs}-", name=f"{rs}-{word(5)}", uid=pod_uid, creationTimestamp=created,
                  labels={"app": f"scale-{d}", "pod-template-hash": rs.rsplit("-", 1)[1]},
                  resourceVersion=str(1000 + 3 * i))
        md["ownerReferences"][0].update(name=rs, uid=rs_uid)
        create, write = md["managedFields"]
        create["time"], write["time"] = created, started
        create["fieldsV1"]["f:metadata"]["f:ownerReferences"] = {f'k:{{"uid":"{rs_uid}"}}': {}}
        create["fieldsV1"]["f:spec"]["f:volumes"] = {f'k:{{"name":"{volume}"}}': {
            ".": {}, "f:name": {}, "f:projected": {"f:defaultMode": {}, "f:sources": {}}}}
        write["fieldsV1"]["f:status"]["f:podIPs"] = {f'k:{{"ip":"{ip}"}}': {".": {}, "f:ip": {}}}
        spec["containers"][0]["volumeMounts"][0]["name"] = spec["volumes"][0]["name"] = volume
        spec["nodeName"] = f"fake-node-{node:04d}"
        for c in status["conditions"]:
            c["lastTransitionTime"] = started
        status.update(hostIP=host, hostIPs=[{"ip": host}], podIP=ip, podIPs=[{"ip": ip}], startTime=started)
        status["containerStatuses"][0]["state"]["running"]["startedAt"] = started
        status["containerStatuses"][0]["containerID"] = f"fake://{pod_uid[:8]}-app"
        out.append(p)
    return out


class _Offline:
    """What an Informer needs of a client when it is fed by hand."""
    resources = Resources()


def _informer(transform) -> Informer:
    return Informer(_Offline(), "pods", transform=transform)  # type: ignore[arg-type]


def memory_probe(n: int = 5000, *, transform=None) -> dict[str, float]:
    """Heap held per pod by an informer synced from one LIST body of `n` scale pods
    (tracemalloc: cache, indexes, the interner's table), against a pod's JSON; and
    again once every pod has had one more status write (a MODIFIED event)."""
    body = orjson.dumps({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
                         "items": scale_pods(n)})
    json_size = (len(body) - 100) / n
    # then the fake kubelet writes every pod's status again (a restart: new times)
    writes = []
    for i, p in enumerate(orjson.loads(body)["items"]):
        status = p["status"]
        later = status["startTime"].replace("2026-12-05T15", "2026-12-05T16")
        status["containerStatuses"][0].update(restartCount=1, state={"running": {"startedAt": later}})
        for c in status["conditions"][:4]:
            c["lastTransitionTime"] = later
        p["metadata"]["resourceVersion"] = str(10**6 + i)
        writes.append(orjson.dumps(p))
    from client.watch import Event
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    inf = _informer(transform)
    inf.replace(orjson.loads(body)["items"], "1")
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    for w in writes:
        inf.apply(Event("MODIFIED", orjson.loads(w)))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    cached = sum(len(orjson.dumps(o)) for o in inf.store.list()) / n
    return {"pods": n, "heap_per_pod": held / n, "json_per_pod": json_size, "cached_json_per_pod": cached,
            "heap_per_pod_after_writes": after / n}


def _best(fn, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _cpu_figures(body: bytes, n: int, transform) -> str:
    from client.watch import Event
    from controller_manager.controllers.replicaset import pod_view
    from machinery import labels

    def sync() -> tuple[float, Informer]:
        items = orjson.loads(body)["items"]
        inf = _informer(transform)
        t = time.process_time()
        inf.replace(items, "1")
        return time.process_time() - t, inf
    t, inf = min((sync() for _ in range(3)), key=lambda r: r[0])
    # a MODIFIED event for every pod (a new version of each), decoded as the watch does
    events = [Event("MODIFIED", orjson.loads(orjson.dumps(
        {**o, "metadata": {**o["metadata"], "resourceVersion": str(10**6 + i)}})))
        for i, o in enumerate(inf.store.list())]
    t0 = time.process_time()
    for e in events:
        inf.apply(e)
    ev = time.process_time() - t0
    # consumers: the ReplicaSet controller's pods for each selector (label index, get,
    # match, the view it reads), and a scheduler-style sum of requests by node
    hashes = [v for v in inf.store.index_values(LABEL) if v.startswith("pod-template-hash=")]
    selectors = [labels.parse(h) for h in hashes]

    def rs_scan() -> None:
        for h, sel in zip(hashes, selectors):
            for key in inf.store.index_keys(LABEL, h):
                pod = inf.store.get(key)
                if pod is not None and sel.matches(pod["metadata"].get("labels")):
                    pod_view(pod)

    def node_scan() -> None:
        req: dict[str, int] = {}
        for pod in inf.store.list():
            node = pod["spec"].get("nodeName")
            for c in pod["spec"]["containers"]:
                cpu = c.get("resources", {}).get("requests", {}).get("cpu", "0")
                req[node] = req.get(node, 0) + int(cpu.rstrip("m") or 0)
    return (f"sync apply {t / n * 1e6:.1f} us, MODIFIED event {ev / n * 1e6:.1f} us, "
            f"ReplicaSet selector scan {_best(rs_scan) / n * 1e6:.2f} us, "
            f"requests-by-node scan {_best(node_scan) / n * 1e6:.2f} us; interner table {len(inf.interner):,}")


def memory_main(n: int) -> None:
    print(f"# informer memory, {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}, {n} pods")
    body = orjson.dumps({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
                         "items": scale_pods(n)})
    t = _best(lambda: orjson.loads(body), 3)
    print(f"decode: {t / n * 1e6:.1f} us a pod")
    for name, transform in (("default", None), ("strip_managed_fields", strip_managed_fields)):
        m = memory_probe(n, transform=transform)
        print(f"{name}: heap {m['heap_per_pod'] / 1024:.2f} KiB a pod = {m['heap_per_pod'] / m['json_per_pod']:.2f}x "
              f"its JSON ({m['json_per_pod'] / 1024:.2f} KiB; "
              f"{m['heap_per_pod'] / m['cached_json_per_pod']:.2f}x the cached object's "
              f"{m['cached_json_per_pod'] / 1024:.2f} KiB); after a status write a pod "
              f"{m['heap_per_pod_after_writes'] / 1024:.2f} KiB")
        print("  CPU a pod: " + _cpu_figures(body, n, transform))


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
    p.add_argument("--memory", action="store_true", help="the memory and CPU trade-off, no server")
    p.add_argument("--write", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--round", default="1", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory:
        memory_main(5000 if args.pods == 10000 else args.pods)
    elif args.write:
        asyncio.run(write(args.write, args.pods, args.round))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
