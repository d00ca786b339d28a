"""API server benchmark: prints figures and ratios measured side by side in one run.

(a) raw etcd: compare-and-create transactions/s through aetcd at 1, 10, 100 in flight;
(b) the same number of pod creates through the API server over HTTP at 1, 10, 100
    concurrent clients, with p50/p99 latency, and the ratio (b)/(a);
(c) LIST of 10,000 pods with a label selector matching 100 of them (p50/p99);
(d) 100 concurrent watchers each receiving 1,000 events: delivery latency from the
    write being sent to the event's receipt (p50/p99);
(e) pod creates/s at 100 in flight with the audit log on (--audit-log-path: every write
    is one event) against the same server without it, rounds alternating between the two;
(f) pod creates/s at 100 in flight with all of issue 14's security on (HTTPS, x509
    client-certificate authentication, --authorization-mode=Node,RBAC, the audit log)
    against the same server without it (--plain-http, AlwaysAllow, no audit), rounds
    alternating; connections, and so their handshakes, are opened before the clock
    starts. The secure side's client is a user with no privileged group, allowed by a
    ClusterRoleBinding to a ClusterRole that may create pods, so that every create is
    decided by the RBAC authorizer (the admin certificate's system:masters group is
    allowed before RBAC is asked, which would leave RBAC out of the figure; `edit` is
    aggregated by the controller manager, not run here). Then, on the secure server, GET
    /version with the client certificate on a new connection per request (TCP connect,
    TLS handshake, request, response) and on one kept-alive connection (p50/p99);
(g) creates/s at 100 in flight of a custom resource whose CRD's schema has 50 fields
    (validated, pruned and defaulted on every create) against pods, on one server,
    rounds alternating between the two (target: >= 0.8x); then, for several new CRDs,
    the time from the CRD's create being sent to the first create of one of its objects
    being accepted (201), retried every 5 ms while the server answers 404 (p50, max).

Run: .venv/bin/python -m bench.api [--creates N] [--only-audit] [--only-security] [--only-crd]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from typing import Callable

import aetcd
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.procs import APIServer, Etcd  # noqa: E402
from tests.secure import SecureCluster  # noqa: E402


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


class Conn:
    """A minimal HTTP/1.1 keep-alive connection.

    httpx spends more CPU per request than the server does, so with it the load
    generator, not the server, is what gets measured; this client costs next to nothing.
    """

    def __init__(self, base: str, tls: ssl.SSLContext | None = None):
        host, port = base.rsplit("//", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.tls = tls

    async def open(self) -> "Conn":
        self.r, self.w = await asyncio.open_connection(self.host, self.port, ssl=self.tls)
        return self

    async def send(self, method: str, path: str, body: bytes = b"") -> None:
        self.w.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    async def head(self) -> tuple[int, dict]:
        status = int((await self.r.readline()).split()[1])
        headers = {}
        while (line := await self.r.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        await self.send(method, path, body)
        status, headers = await self.head()
        return status, await self.r.readexactly(int(headers.get("content-length", 0)))

    async def lines(self):
        """The lines of a chunked streaming response (a watch)."""
        buf = b""
        while True:
            size = int((await self.r.readline()).strip() or b"0", 16)
            if size == 0:
                return
            buf += await self.r.readexactly(size)
            await self.r.readline()
            *done, buf = buf.split(b"\n")
            for line in done:
                if line:
                    yield line

    def close(self) -> None:
        self.w.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def api_creates(base: str, ns: str, total: int, inflight: int,
                      tls: ssl.SSLContext | None = None,
                      cpu: tuple[int, list[float]] | None = None, *,
                      collection: str = "/api/v1/namespaces/{ns}/pods",
                      body: Callable[[str], bytes] | None = None) -> tuple[float, list[float]]:
    """Creates/s and latencies of pods (or of `body(name)` POSTed to `collection`); with
    `cpu` (a server's PID, a list), appends the server's CPU seconds per create over the
    timed part (the connections are open by then)."""
    latencies: list[float] = []
    counter = iter(range(total))
    conns = [await Conn(base, tls).open() for _ in range(inflight)]
    make = body or (lambda name: pod_body(name, {"app": "bench"}))
    url = collection.format(ns=ns)

    async def worker(conn: Conn):
        for i in counter:
            payload = make(f"p{inflight}-{i}")
            t = time.perf_counter()
            status, data = await conn.request("POST", url, payload)
            latencies.append(time.perf_counter() - t)
            assert status == 201, data
    cpu_before = cpu_seconds(cpu[0]) if cpu else 0.0
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    if cpu:
        cpu[1].append((cpu_seconds(cpu[0]) - cpu_before) / total)
    for c in conns:
        c.close()
    return total / elapsed, latencies


async def create_namespace(base: str, name: str, tls: ssl.SSLContext | None = None) -> None:
    """The namespace and its `default` ServiceAccount, as the serviceaccount controller
    (not run here) would make it: without it the ServiceAccount admission refuses pods."""
    conn = await Conn(base, tls).open()
    status, data = await conn.request("POST", "/api/v1/namespaces", orjson.dumps({"metadata": {"name": name}}))
    assert status in (201, 409), data
    status, data = await conn.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts",
                                      orjson.dumps({"metadata": {"name": "default"}}))
    assert status in (201, 409), data
    conn.close()


async def list_bench(base: str, n_pods: int, n_match: int, rounds: int) -> list[float]:
    ns = "bench-list"
    await create_namespace(base, ns)
    conns = [await Conn(base).open() for _ in range(20)]
    counter = iter(range(n_pods))

    async def make(conn: Conn):
        for i in counter:
            labels = {"app": "needle" if i < n_match else "hay", "idx": str(i)}
            status, data = await conn.request("POST", f"/api/v1/namespaces/{ns}/pods", pod_body(f"l{i}", labels))
            assert status == 201, data
    await asyncio.gather(*(make(c) for c in conns))
    times = []
    for _ in range(rounds + 1):
        t = time.perf_counter()
        status, data = await conns[0].request("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dneedle")
        times.append(time.perf_counter() - t)
        assert len(orjson.loads(data)["items"]) == n_match
    for c in conns:
        c.close()
    return times


async def watch_bench(base: str, watchers: int, events: int) -> list[float]:
    ns = "bench-watch"
    await create_namespace(base, ns)
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    conn = await Conn(base).open()
    _, data = await conn.request("GET", f"/api/v1/namespaces/{ns}/configmaps")
    rv = orjson.loads(data)["metadata"]["resourceVersion"]

    async def watch(c: Conn):
        await c.send("GET", f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv}")
        status, _ = await c.head()
        assert status == 200
        got = 0
        async for line in c.lines():
            now = time.perf_counter()
            # The name is the only thing needed: find it without decoding the whole event.
            i = line.index(b'"name":"') + 8
            latencies.append(now - sent[line[i:line.index(b'"', i)]])
            got += 1
            if got == events:
                return
    conns = [await Conn(base).open() for _ in range(watchers)]
    tasks = [asyncio.create_task(watch(c)) for c in conns]
    # every watcher is registered once the server reports them all
    while True:
        _, m = await conn.request("GET", "/metrics")
        registered = sum(int(float(line.rsplit(" ", 1)[1])) for line in m.decode().splitlines()
                         if line.startswith(("apiserver_registered_watchers ", "apiserver_registered_watchers{")))
        if registered >= watchers:
            break
        await asyncio.sleep(0.05)
    writers = [await Conn(base).open() for _ in range(10)]
    counter = iter(range(events))

    async def write(c: Conn):
        for i in counter:
            name = f"w{i}"
            sent[name.encode()] = time.perf_counter()
            status, _ = await c.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                        orjson.dumps({"metadata": {"name": name}}))
            assert status == 201
    await asyncio.gather(*(write(c) for c in writers))
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    for c in conns + writers + [conn]:
        c.close()
    return latencies


async def audit_bench(total: int, rounds: int) -> None:
    """(e): two servers, each on its own etcd, alike but for --audit-log-path."""
    log_dir = tempfile.mkdtemp(prefix="minik8s-audit-bench-")
    path = os.path.join(log_dir, "audit.log")
    etcds = [Etcd().start(), Etcd().start()]
    servers = {"without": APIServer(etcds[0].url, "--compaction-window", "0", plain=True).start(),
               "with audit": APIServer(etcds[1].url, "--compaction-window", "0",
                                       "--audit-log-path", path, plain=True).start()}
    rates: dict[str, list[float]] = {k: [] for k in servers}
    try:
        for r in range(rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                ns = f"bench-audit-{r}"
                await create_namespace(servers[name].url, ns)
                rate, _ = await api_creates(servers[name].url, ns, total, 100)
                rates[name].append(rate)
        servers["with audit"].stop()  # flushes the log
        with open(path, "rb") as f:
            logged = sum(1 for line in f if b'"resource":"pods"' in line)
        a, b = statistics.median(rates["with audit"]), statistics.median(rates["without"])
        print(f"pod creates/s at 100 in flight, median of {rounds} rounds of {total}: "
              f"with the audit log {a:.0f}, without {b:.0f}, ratio {a / b:.2f} "
              f"({logged} pod create events logged; rounds: with {[round(x) for x in rates['with audit']]}, "
              f"without {[round(x) for x in rates['without']]})")
    finally:
        for s in servers.values():
            s.stop()
        for e in etcds:
            e.stop()
        for f in os.listdir(log_dir):
            os.unlink(os.path.join(log_dir, f))
        os.rmdir(log_dir)


BENCH_USER = "bench-user"


async def security_bench(total: int, rounds: int, handshakes: int) -> None:
    """(f): a secure server (tests/secure.py's, with Node,RBAC and the audit log) and a
    plain one, each on its own etcd."""
    work = tempfile.mkdtemp(prefix="minik8s-sec-bench-")
    path = os.path.join(work, "audit.log")
    secure = SecureCluster(work, "--authorization-mode", "Node,RBAC", "--audit-log-path", path,
                           "--compaction-window", "0")
    plain_etcd = None
    servers: dict[str, APIServer] = {}
    try:
        secure.start()
        plain_etcd = Etcd().start()
        servers["plain"] = APIServer(plain_etcd.url, "--compaction-window", "0", plain=True).start()
        servers["secure"] = secure.server
        admin_tls = secure.tls(secure.admin)
        user_tls = secure.tls(secure.user(BENCH_USER))
        tls = {"plain": None, "secure": user_tls}
        setup = {"plain": None, "secure": admin_tls}
        # `edit` would do, but its rules are aggregated by the controller manager's
        # clusterrole-aggregation controller, which this bench does not run.
        conn = await Conn(secure.url, admin_tls).open()
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        for kind, body in (("clusterroles", {"metadata": {"name": "bench-pods"}, "rules": [
                               {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list"]}]}),
                           ("clusterrolebindings", {
                               "metadata": {"name": "bench-pods"},
                               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                           "name": "bench-pods"},
                               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                             "name": BENCH_USER}]})):
            status, data = await conn.request("POST", f"{rbac}/{kind}", orjson.dumps(body))
            assert status == 201, data
        conn.close()

        async def bound() -> bool:
            c = await Conn(secure.url, user_tls).open()
            status, data = await c.request("GET", "/api/v1/namespaces/default/pods?limit=1")
            c.close()
            assert status in (200, 403), data
            return status == 200
        # The RBAC index is fed by the watch cache: wait for it to see the binding.
        deadline = time.monotonic() + 30
        while not await bound():
            assert time.monotonic() < deadline, "the RBAC authorizer never saw the binding"
            await asyncio.sleep(0.05)

        rates: dict[str, list[float]] = {k: [] for k in servers}
        # the server's own CPU per create, which the load generator's share of the two
        # cores does not move (its TLS is on the secure side only)
        cpu: dict[str, list[float]] = {k: [] for k in servers}
        for r in range(rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                ns = f"bench-sec-{r}"
                await create_namespace(servers[name].url, ns, setup[name])
                rate, _ = await api_creates(servers[name].url, ns, total, 100, tls[name],
                                            (servers[name].proc.pid, cpu[name]))
                rates[name].append(rate)
        a, b = statistics.median(rates["secure"]), statistics.median(rates["plain"])
        ca, cb = statistics.median(cpu["secure"]) * 1e6, statistics.median(cpu["plain"]) * 1e6
        print(f"pod creates/s at 100 in flight, median of {rounds} rounds of {total}: with TLS, x509 "
              f"authentication (user {BENCH_USER!r}, RBAC-bound to create pods), Node,RBAC and the audit log "
              f"{a:.0f}, plain HTTP with AlwaysAllow {b:.0f}, ratio {a / b:.2f} "
              f"(rounds: secure {[round(x) for x in rates['secure']]}, plain {[round(x) for x in rates['plain']]})")
        print(f"API server CPU per create (median of the rounds; the timed part, after "
              f"the handshakes): secure {ca:.0f} us, plain {cb:.0f} us, ratio {cb / ca:.2f}")

        new_conn: list[float] = []
        reused: list[float] = []
        keep = await Conn(secure.url, user_tls).open()
        for i in range(handshakes * 2):
            # alternate the two, so that the machine's load falls on both alike
            if i % 2 == 0:
                t = time.perf_counter()
                c = await Conn(secure.url, user_tls).open()
                status, _ = await c.request("GET", "/version")
                new_conn.append(time.perf_counter() - t)
                c.close()
            else:
                t = time.perf_counter()
                status, _ = await keep.request("GET", "/version")
                reused.append(time.perf_counter() - t)
            assert status == 200
        keep.close()
        print(f"GET /version with a client certificate, {handshakes} each: new connection (TCP + TLS "
              f"handshake + request) p50 {statistics.median(new_conn) * 1000:.2f} ms, p99 "
              f"{pct(new_conn, 99) * 1000:.2f} ms; kept-alive connection p50 "
              f"{statistics.median(reused) * 1000:.2f} ms, p99 {pct(reused, 99) * 1000:.2f} ms")
    finally:
        for s in servers.values():
            s.stop()
        secure.stop()
        if plain_etcd is not None:
            plain_etcd.stop()
        for s in (secure.server, *servers.values()):
            if os.path.exists(s.logfile.name):
                os.unlink(s.logfile.name)
        shutil.rmtree(work, ignore_errors=True)


CRD_GROUP = "bench.minik8s.io"
# 50 fields, of the three scalar types with a constraint each, so that every create is
# validated field by field; `f00` has a default, so defaulting runs too.
CRD_FIELDS = {f"f{i:02d}": ({"type": "string", "maxLength": 64}, {"type": "integer", "minimum": 0},
                            {"type": "boolean"})[i % 3] for i in range(50)}


def crd_body(plural: str, kind: str) -> dict:
    fields = {k: dict(v) for k, v in CRD_FIELDS.items()}
    fields["f00"]["default"] = "x"
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{CRD_GROUP}"},
            "spec": {"group": CRD_GROUP, "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                       "spec": {"type": "object", "properties": fields}}}}}]}}


def cr_body(kind: str, name: str) -> bytes:
    values = ("some value", 7, True)
    spec = {k: values[i % 3] for i, k in enumerate(CRD_FIELDS) if k != "f00"}  # f00 from its default
    return orjson.dumps({"apiVersion": f"{CRD_GROUP}/v1", "kind": kind,
                         "metadata": {"name": name, "labels": {"app": "bench"}}, "spec": spec})


async def established(conn: Conn, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status, data = await conn.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        assert status == 200, data
        conds = orjson.loads(data).get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
            return
        assert time.monotonic() < deadline, f"CRD {name} never became Established"
        await asyncio.sleep(0.01)


async def crd_bench(total: int, rounds: int, n_crds: int) -> None:
    """(g): one plain server on its own etcd."""
    etcd = Etcd().start()
    server = APIServer(etcd.url, "--compaction-window", "0", plain=True).start()
    try:
        conn = await Conn(server.url).open()
        status, data = await conn.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                          orjson.dumps(crd_body("widgets", "Widget")))
        assert status == 201, data
        await established(conn, f"widgets.{CRD_GROUP}")
        widgets = f"/apis/{CRD_GROUP}/v1/namespaces/{{ns}}/widgets"
        # The figure means something only if every create is validated against the schema.
        await create_namespace(server.url, "bench-crd-check")
        bad = orjson.loads(cr_body("Widget", "bad"))
        bad["spec"]["f01"] = "not an integer"
        status, data = await conn.request("POST", widgets.format(ns="bench-crd-check"), orjson.dumps(bad))
        assert status == 422, f"a custom resource that fails its schema was answered {status}: {data[:300]!r}"
        rates: dict[str, list[float]] = {"custom resource": [], "pod": []}
        # the server's own CPU per create, which the load generator's share of the cores does not move
        cpu: dict[str, list[float]] = {k: [] for k in rates}
        for r in range(rounds):
            order = list(rates) if r % 2 == 0 else list(reversed(rates))
            for what in order:
                ns = f"bench-crd-{r}-{what.split()[0]}"
                await create_namespace(server.url, ns)
                if what == "pod":
                    rate, _ = await api_creates(server.url, ns, total, 100, cpu=(server.proc.pid, cpu[what]))
                else:
                    rate, _ = await api_creates(server.url, ns, total, 100, cpu=(server.proc.pid, cpu[what]),
                                                collection=widgets, body=lambda name: cr_body("Widget", name))
                rates[what].append(rate)
        a, b = statistics.median(rates["custom resource"]), statistics.median(rates["pod"])
        ca, cb = statistics.median(cpu["custom resource"]) * 1e6, statistics.median(cpu["pod"]) * 1e6
        print(f"creates/s at 100 in flight, median of {rounds} rounds of {total}: custom resource with a "
              f"50-field schema {a:.0f}, pod {b:.0f}, ratio {a / b:.2f} (target >= 0.8; rounds: custom "
              f"{[round(x) for x in rates['custom resource']]}, pod {[round(x) for x in rates['pod']]})")
        print(f"API server CPU per create (median of the rounds): custom resource {ca:.0f} us, pod {cb:.0f} us, "
              f"ratio {cb / ca:.2f}")

        await create_namespace(server.url, "bench-crd-first")
        waits: list[float] = []
        for i in range(n_crds):
            plural, kind = f"gadgets{i}", f"Gadget{i}"
            t = time.perf_counter()
            status, data = await conn.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                              orjson.dumps(crd_body(plural, kind)))
            assert status == 201, data
            while True:
                status, data = await conn.request(
                    "POST", f"/apis/{CRD_GROUP}/v1/namespaces/bench-crd-first/{plural}", cr_body(kind, "first"))
                if status == 201:
                    break
                assert status == 404, data
                assert time.perf_counter() - t < 60, f"{plural} never served"
                await asyncio.sleep(0.005)
            waits.append(time.perf_counter() - t)
        print(f"CRD created to its first object accepted, {n_crds} CRDs: p50 "
              f"{statistics.median(waits) * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms")
        conn.close()
    finally:
        server.stop()
        etcd.stop()
        if os.path.exists(server.logfile.name):
            os.unlink(server.logfile.name)


async def main_async(args) -> None:
    if args.only_audit:
        await audit_bench(args.creates, args.rounds)
        return
    if args.only_security:
        await security_bench(args.creates, args.rounds, args.handshakes)
        return
    if args.only_crd:
        await crd_bench(args.creates, args.rounds, args.crds)
        return
    etcd = Etcd().start()
    server = APIServer(etcd.url, "--compaction-window", "0", plain=True).start()
    try:
        print(f"# minik8s API benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
        print("in-flight | raw etcd txn/s | API creates/s | ratio | API p50 ms | API p99 ms")
        for inflight in (1, 10, 100):
            await create_namespace(server.url, f"bench-{inflight}")
        for inflight in (1, 10, 100):
            total = args.creates if inflight > 1 else max(200, args.creates // 5)
            raw = await raw_etcd(etcd.url, total, inflight)
            rate, lat = await api_creates(server.url, f"bench-{inflight}", total, inflight)
            print(f"{inflight:9d} | {raw:14.0f} | {rate:13.0f} | {rate / raw:5.2f} | "
                  f"{statistics.median(lat) * 1000:10.1f} | {pct(lat, 99) * 1000:10.1f}")
        first, *times = await list_bench(server.url, args.list_pods, 100, 30)
        print(f"LIST {args.list_pods} pods, selector matching 100: p50 {statistics.median(times) * 1000:.1f} ms, "
              f"p99 {pct(times, 99) * 1000:.1f} ms (first list right after the creates, waiting for "
              f"the watch cache to catch up: {first * 1000:.0f} ms)")
        lat = await watch_bench(server.url, 100, 1000)
        print(f"100 watchers x 1000 events: delivery p50 {statistics.median(lat) * 1000:.1f} ms, "
              f"p99 {pct(lat, 99) * 1000:.1f} ms ({len(lat)} deliveries)")
    finally:
        server.stop()
        etcd.stop()
    await audit_bench(args.creates, args.rounds)
    await security_bench(args.creates, args.rounds, args.handshakes)
    await crd_bench(args.creates, args.rounds, args.crds)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--creates", type=int, default=2000)
    p.add_argument("--list-pods", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=4, help="rounds of (e), (f) and (g), alternating the sides")
    p.add_argument("--only-audit", action="store_true", help="run (e) alone")
    p.add_argument("--only-security", action="store_true", help="run (f) alone")
    p.add_argument("--only-crd", action="store_true", help="run (g) alone")
    p.add_argument("--crds", type=int, default=10, help="CRDs timed from create to first object in (g)")
    p.add_argument("--handshakes", type=int, default=500, help="requests of each kind in (f)'s TLS figures")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
