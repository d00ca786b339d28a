"""Above the limits, the API server degrades as kube-apiserver does, in bounded memory:

- an unpaged LIST of 20,000 pods is streamed from the watch cache's serialized bytes: the
  server's peak RSS grows by far less than the response (measured with /proc's VmHWM);
- a page of one namespace reads only that page from the cache, whatever the cluster's
  size (counted with the cacher's apiserver_cache_list_fetched_objects_total);
- a watcher that stops reading while 20,000 events are produced is closed once it is
  max_backlog (10,000) events behind: the server's RSS grows by less than the events
  produced, and the client's stream ends once it reads again;
- a body over 3 MiB is 413 RequestEntityTooLarge on every path that reads one, with
  Kubernetes' wording, and so is a JSON patch of more than 10,000 operations.

One API server and etcd of their own. The objects are written straight to etcd (the
server's own storage layer, as many writes as fast as etcd takes them): this is about
what the server does with them, not about admitting them. About 60 s on 2 cores.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil

import orjson
import pytest

from apiserver.storage import EtcdStore
from tests.procs import APIServer, Etcd, wait_for

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")

PODS = 20_000
NAMESPACES = 200


def pod(ns: str, name: str) -> bytes:
    """A pod of about 1 KiB, as a controller makes them."""
    return orjson.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}",
                     "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b4",
                                          "uid": "rs-uid", "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.2.3",
                                 "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                                 "terminationMessagePath": "/dev/termination-log",
                                 "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
                 "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                 "serviceAccountName": "default", "schedulerName": "default-scheduler",
                 "nodeName": f"node-{hash(name) % 500}"},
        "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "192.168.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}]}})


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:  # "5": reset the peak RSS (VmHWM)
        f.write("5")


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _bounded(n: int, fn) -> None:
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            await fn(i)
    await asyncio.gather(*(one(i) for i in range(n)))


@pytest.fixture(scope="module")
def server():
    etcd = Etcd().start()
    srv = APIServer(etcd.url)
    try:
        srv.start()
        yield etcd, srv
    finally:
        srv.stop()
        etcd.stop()


@pytest.fixture(scope="module")
def seeded(server):
    etcd, srv = server

    async def seed() -> None:
        store = EtcdStore([etcd.url])
        await store.open()
        try:
            async def put(i: int) -> None:
                ns, name = f"ns-{i % NAMESPACES:03d}", f"web-{i:05d}"
                ok, _ = await store.create(f"/registry/pods/{ns}/{name}", pod(ns, name))
                assert ok
            await _bounded(PODS, put)
        finally:
            await store.close()
    asyncio.run(seed())
    with srv.client() as c:
        wait_for(lambda: c.get("/api/v1/pods", params={"limit": 1}).json()["metadata"].get(
            "remainingItemCount") == PODS - 1, timeout=120, what="the cache to hold every pod")
    return srv


def test_an_unpaged_list_of_20000_pods_is_streamed_in_bounded_memory(seeded):
    pid = seeded.proc.pid
    with seeded.client() as c:
        c.get("/api/v1/pods", params={"limit": 1})  # warm
        before = status_kib(pid, "VmRSS")
        reset_peak(pid)
        size, items = 0, None
        with c.stream("GET", "/api/v1/pods") as r:
            assert r.status_code == 200
            assert "content-length" not in r.headers  # chunked: streamed, not built whole
            body = bytearray()
            for chunk in r.iter_bytes():
                body += chunk
            size = len(body)
            items = orjson.loads(body)["items"]
        peak = status_kib(pid, "VmHWM")
    assert len(items) == PODS
    assert items[0]["metadata"]["namespace"] == "ns-000"
    growth = (peak - before) * 1024
    # Built whole, the body costs its size several times over (measured: 72 MB for this
    # 19.6 MB LIST); streamed, a few chunks of 256 KiB.
    assert size > 15_000_000
    assert growth < size / 4, f"RSS grew {growth / 1e6:.1f} MB for a {size / 1e6:.1f} MB LIST"


def test_a_page_of_one_namespace_reads_only_the_page(seeded):
    with seeded.client() as c:
        def fetched() -> float:
            return metric(c.get("/metrics").text, "apiserver_cache_list_fetched_objects_total",
                          resource_prefix="/pods")
        start = fetched()
        first = c.get("/api/v1/namespaces/ns-123/pods", params={"limit": 10}).json()
        assert [p["metadata"]["name"] for p in first["items"]] == [f"web-{i:05d}" for i in range(123, 2123, NAMESPACES)]
        assert first["metadata"]["remainingItemCount"] == PODS // NAMESPACES - 10
        second = c.get("/api/v1/namespaces/ns-123/pods", params={"limit": 10,
                                                                   "continue": first["metadata"]["continue"]}).json()
        assert second["items"][0]["metadata"]["name"] == "web-02123"
        read = fetched() - start
    # Two pages of 10 out of 20,000 pods: 20 objects read, not the cluster or the namespace.
    assert read == 20, read


def test_a_watcher_that_stops_reading_is_closed_and_memory_stays_flat(seeded):
    etcd_url = seeded.etcd_url
    pid = seeded.proc.pid
    keys = 100
    value = "x" * 2048

    async def churn(rounds: int) -> None:
        """keys ConfigMaps of 2 KiB, each updated `rounds` times: events without growth."""
        store = EtcdStore([etcd_url])
        await store.open()
        try:
            async def one(i: int) -> None:
                key = f"/registry/configmaps/churn/cm-{i}"
                found = await store.get(key)
                rev = found.mod_revision if found else 0
                for r in range(rounds):
                    obj = orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": f"cm-{i}", "namespace": "churn",
                                                     "uid": f"u{i}"}, "data": {"round": str(r), "v": value}})
                    ok, rev = await (store.update(key, obj, rev) if rev else store.create(key, obj))
                    assert ok
            await _bounded(keys, one)
        finally:
            await store.close()

    # Warm up: the cache's history of configmaps fills to its bound with the same events,
    # and the server's allocator reaches its steady state (measured: +180 MB over the
    # first 10,000 events, +24 MB over the next 20,000, then flat).
    asyncio.run(churn(300))
    with seeded.client() as c:
        rv = c.get("/api/v1/namespaces/churn/configmaps", params={"limit": 1}).json()["metadata"]["resourceVersion"]
        terminated = metric(c.get("/metrics").text, "apiserver_terminated_watchers_total", resource="configmaps")
    sock = seeded.socket(timeout=60)
    sock.sendall(f"GET /api/v1/namespaces/churn/configmaps?watch=1&resourceVersion={rv} HTTP/1.1\r\n"
                 f"Host: x\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200")
    before = status_kib(pid, "VmRSS")
    reset_peak(pid)
    # 20,000 events (40 MB of them) while the client reads nothing.
    asyncio.run(churn(200))
    with seeded.client() as c:
        wait_for(lambda: metric(c.get("/metrics").text, "apiserver_terminated_watchers_total",
                                resource="configmaps") > terminated, what="the slow watcher to be closed")
    peak = status_kib(pid, "VmHWM")
    growth = (peak - before) * 1024
    # Bounded, the server holds at most max_backlog (10,000) events beyond its history,
    # until it drops them, and the connection's buffers (measured: 12 to 26 MB); unbounded,
    # every event produced, decoded (measured: 140 MB). Less than the events' own bytes:
    payload = 20_000 * (len(value) + 150)
    assert growth < payload, f"RSS grew {growth / 1e6:.1f} MB under a watcher that does not read " \
        f"while {payload / 1e6:.0f} MB of events were produced"
    # Reading again, the client gets what was on its connection, then the end of the stream.
    data = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
        if data.endswith(b"0\r\n\r\n"):
            break
    sock.close()
    assert data.endswith(b"0\r\n\r\n"), data[-200:]
    assert len(data) < 40_000_000  # some of the 20,000 events, not all
    assert os.path.exists(f"/proc/{pid}")


WRITES = [  # (method, path, content type): every path that reads a request body
    ("POST", "/api/v1/namespaces/default/configmaps", "application/json"),
    ("PUT", "/api/v1/namespaces/default/configmaps/big", "application/json"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/big", "application/merge-patch+json"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/big", "application/strategic-merge-patch+json"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/big", "application/json-patch+json"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/big?fieldManager=t", "application/apply-patch+yaml"),
    ("PUT", "/api/v1/namespaces/default/pods/big/status", "application/json"),
    ("DELETE", "/api/v1/namespaces/default/configmaps/big", "application/json"),
    ("DELETE", "/api/v1/namespaces/default/configmaps", "application/json"),
    ("POST", "/api/v1/namespaces/default/pods/p/binding", "application/json"),
    ("POST", "/api/v1/namespaces/default/pods/p/eviction", "application/json"),
    ("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "application/json"),
    ("PUT", "/apis/apps/v1/namespaces/default/deployments/d/scale", "application/json"),
    ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", "application/json"),
    ("POST", "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas", "application/json"),
]


@pytest.mark.parametrize("method,path,ctype", WRITES)
def test_a_too_large_body_is_413_on_every_write_path(server, method, path, ctype):
    _, srv = server
    body = b'{"metadata":{"name":"big"},"data":{"k":"' + b"x" * (3 * 1024 * 1024) + b'"}}'
    with srv.client() as c:
        r = c.request(method, path, content=body, headers={"Content-Type": ctype})
        assert r.status_code == 413, r.text[:300]
        status = r.json()
        assert (status["kind"], status["reason"], status["message"]) == (
            "Status", "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
        assert c.get("/api/v1/namespaces/default/configmaps/big").status_code == 404


def test_a_json_patch_of_too_many_operations_is_413(server):
    _, srv = server
    with srv.client() as c:
        assert c.post("/api/v1/namespaces/default/configmaps",
                      json={"metadata": {"name": "small"}, "data": {"a": "1"}}).status_code == 201
        ops = [{"op": "test", "path": "/data/a", "value": "1"}] * 10001
        r = c.patch("/api/v1/namespaces/default/configmaps/small", content=orjson.dumps(ops),
                    headers={"Content-Type": "application/json-patch+json"})
        assert r.status_code == 413, r.text[:300]
        assert r.json()["message"] == ("Request entity too large: The allowed maximum operations in a JSON "
                                       "patch is 10000, got 10001")
