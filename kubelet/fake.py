"""Many simulated nodes in one process, for scale tests of the control plane (like KWOK).

`FakeNodes` registers N Nodes (`<prefix>-0` ... `<prefix>-{N-1}`), renews their Leases
every `renew_interval` (spread evenly over the interval, in small concurrent batches, so
1,000 nodes cost a steady trickle of updates rather than a burst), and plays the kubelet
for the pods bound to them: a pod is reported Running and Ready with a fake IP from its
node's range (10.128.0.0/9, a /24 per node), and a pod being deleted is confirmed at once
(DELETE with grace 0 and its uid as precondition). Nothing runs: no process, no
network.

Every node serves the kubelet's stats on its endpoint: InternalIP 127.127.x.y (one
loopback address per node, `NODE_NET`) and the port of one listening socket for all of
them (the wildcard address, --port or a free one), which tells the nodes apart by the
address a connection was made to. `/stats/summary` and `/metrics/resource` report the
usage a pod's annotation `fake.minik8s.io/usage` sets, `{"<container>": {"cpu": "250m",
"memory": "64Mi"}}`: memory as the working set, CPU as a rate, so that each container's
cumulative CPU time grows at it from when the pod runs (a changed annotation changes the
rate from then on; a container it does not name uses nothing). A pod's and a node's usage
are their containers' sums; a node's CPU time keeps what its deleted pods used. The
endpoint is authenticated and authorized as the real kubelet's (kubelet/auth.py, one
`EndpointAuth` per node); other paths (logs, exec) are 404: nothing runs to read.

One informer watches every bound pod (`spec.nodeName!=`; one node: only its own) and
keeps those on our nodes; its handlers only enqueue keys, and a few workers write; a
write that fails is retried with the queue's per-pod backoff (client-go's default
controller rate limiter). One asyncio loop.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from client.clock import Clock, RealClock
from client.informer import Informer, key_of, split_key, strip_managed_fields
from client.rest import Client
from client.workqueue import RateLimitingQueue
from kubelet import stats
from kubelet.auth import EndpointAuth
from kubelet.node import Node, node_info
from kubelet.runtime import Usage
from kubelet.status import rfc3339
from machinery.errors import APIError, Conflict, Invalid, NotFound
from machinery.quantity import bytes_value, cpu_millis

if TYPE_CHECKING:
    from kubelet.server import TLSConfig

log = logging.getLogger("minik8s.kubelet.fake")

POD_NET = ipaddress.ip_network("10.128.0.0/9")
NODE_NET = ipaddress.ip_network("127.127.0.0/16")
USAGE_ANNOTATION = "fake.minik8s.io/usage"
DEFAULT_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}


def fake_status(pod: dict, *, host_ip: str, pod_ip: str, now: str) -> dict:
    spec, old = pod.get("spec") or {}, pod.get("status") or {}
    conds = [{"type": t, "status": "True", "lastTransitionTime": now}
             for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled")]

    def running(c: dict) -> dict:
        return {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
                "restartCount": 0, "started": True, "state": {"running": {"startedAt": now}},
                "containerID": f"fake://{pod['metadata']['uid'][:8]}-{c['name']}"}
    status = {"phase": "Running", "conditions": conds, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
              "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": old.get("startTime") or now,
              "containerStatuses": [running(c) for c in spec.get("containers") or []]}
    if spec.get("initContainers"):
        status["initContainerStatuses"] = [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True, "restartCount": 0,
             "started": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                        "startedAt": now, "finishedAt": now}}}
            for c in spec["initContainers"]]
    if "qosClass" in old:
        status["qosClass"] = old["qosClass"]
    return status


class Meter:
    """A cumulative counter that grows at a rate, which may change."""

    def __init__(self, now: float, rate: float = 0.0):
        self.total, self.rate, self.since = 0.0, rate, now

    def value(self, now: float) -> float:
        return self.total + self.rate * max(0.0, now - self.since)

    def set(self, rate: float, now: float) -> None:
        self.total, self.since, self.rate = self.value(now), now, rate


@dataclass
class _Container:
    cpu: Meter  # core-nanoseconds, at nanocores per second
    memory: int
    start: float


@dataclass
class _Pod:
    uid: str
    node: str
    start: float
    containers: dict[str, _Container] = field(default_factory=dict)


def parse_usage(pod: dict) -> dict[str, tuple[int, int]]:
    """container -> (nanocores, bytes) from the usage annotation; ValueError if malformed."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(USAGE_ANNOTATION)
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise ValueError("want an object of container names to {cpu, memory}")
        return {name: (cpu_millis(str(v.get("cpu", "0"))) * 1_000_000, bytes_value(str(v.get("memory", "0"))))
                for name, v in doc.items()}
    except (ValueError, TypeError, ArithmeticError) as e:
        raise ValueError(f"annotation {USAGE_ANNOTATION}: {e}") from None


class FakeNodes:
    def __init__(self, client: Client, *, prefix: str, count: int,
                 capacity: dict[str, str] | None = None, renew_interval: float = 10.0,
                 lease_duration: int = 40, workers: int = 4, clock: Clock | None = None,
                 port: int = 0, bind_address: str = "0.0.0.0", tls: "TLSConfig | None" = None,
                 auth: Callable[[str], EndpointAuth] | None = None):
        """`port` (0: a free one) on `bind_address` is every node's endpoint, HTTPS with
        `tls`; `auth(node)` is who may use a node's (default: nobody)."""
        self.client, self.prefix, self.count = client, prefix, count
        self.port, self.bind_address, self.tls = port, bind_address, tls
        self._auth = auth or (lambda node: EndpointAuth(node_name=node, tls=False))
        self.auths: dict[str, EndpointAuth] = {}
        self.renew_interval, self.clock = renew_interval, clock or RealClock()
        info = {**node_info(), "containerRuntimeVersion": "fake://0.1.0"}
        self.nodes: dict[str, Node] = {}
        for i in range(count):
            name = f"{prefix}-{i}"
            self.nodes[name] = Node(client, name, address=str(NODE_NET[i + 1]), port=0,
                                    capacity=dict(capacity or DEFAULT_CAPACITY), info=info, hostname=name,
                                    labels={"type": "fake"}, lease_duration=lease_duration,
                                    clock=self.clock)
        self.index = {name: i for i, name in enumerate(self.nodes)}
        self.by_address = {node.address: name for name, node in self.nodes.items()}
        self.usage: dict[str, dict[str, _Pod]] = {n: {} for n in self.nodes}  # node -> pod key -> use
        self.where: dict[str, str] = {}  # pod key -> its node
        self.node_cpu = {name: Meter(self.clock.now()) for name in self.nodes}
        self.summarizers = {name: stats.Summarizer() for name in self.nodes}
        self.boot_time = self.clock.now()
        self._next_ip: dict[str, int] = {}
        self.queue = RateLimitingQueue()
        self.workers = workers
        # One node watches only its own pods, which is all a node's own credential may
        # watch (the Node authorizer): so a bootstrapped fake node works as a real one.
        only = f"spec.nodeName={next(iter(self.nodes))}" if count == 1 else "spec.nodeName!="
        self.pods = Informer(client, "pods", field_selector=only, indexers={}, transform=strip_managed_fields)
        self.renewals = 0
        self._tasks: list[asyncio.Task] = []

    def pod_ip(self, node: str, uid: str) -> str:
        i = self.index[node]
        base = int(POD_NET.network_address) + i * 256
        n = self._next_ip.get(node, 0)
        self._next_ip[node] = n + 1
        return str(ipaddress.ip_address(base + 2 + n % 252))

    async def register(self, concurrency: int = 32) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(node: Node) -> None:
            async with sem:
                while True:
                    try:
                        await node.register()
                        await node.renew_lease()
                        return
                    except Exception as exc:  # noqa: BLE001 - the API server may be starting
                        log.warning("registering %s: %s; retrying", node.name, exc)
                        # jittered: N nodes turned away at once do not come back in step
                        await self.clock.sleep(random.uniform(0.5, 1.5))
        await asyncio.gather(*(one(n) for n in self.nodes.values()))
        log.info("registered %d fake nodes %s-0..%s-%d", self.count, self.prefix, self.prefix, self.count - 1)

    async def start(self) -> None:
        from kubelet import server
        sock = socket.create_server((self.bind_address, self.port), reuse_port=False)
        self.port = sock.getsockname()[1]
        for node in self.nodes.values():
            node.port = self.port
        serving = asyncio.Event()
        self._tasks = [asyncio.create_task(server.serve(self._app(), self.bind_address, self.port, tls=self.tls,
                                                        sockets=[sock], started=serving), name="fake-endpoint")]
        await serving.wait()
        await self.register()
        self.pods.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                              on_delete=self._enqueue)
        self.pods.start()
        self._tasks += [asyncio.create_task(self._renew_loop(), name="fake-leases"),
                        asyncio.create_task(self._status_loop(), name="fake-node-status")]
        self._tasks += [asyncio.create_task(self.queue.serve(self._handle), name=f"fake-pods-{i}")
                        for i in range(self.workers)]

    async def stop(self) -> None:
        self.queue.shutdown()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pods.stop()

    def _enqueue(self, pod: dict) -> None:
        if (pod.get("spec") or {}).get("nodeName") in self.nodes:
            self.queue.add(key_of(pod))

    # -- usage and the endpoint ----------------------------------------------------------

    def _set_usage(self, key: str, pod: dict | None) -> None:
        """Meters follow the pod's annotation; a pod gone or going stops using anything."""
        now = self.clock.now()
        node = self.where.get(key)
        old = self.usage[node].get(key) if node is not None else None
        if pod is None or pod["metadata"].get("deletionTimestamp") or \
                (old is not None and old.uid != pod["metadata"]["uid"]):
            if old is not None:
                self._retire(old, now)
                del self.usage[old.node][key], self.where[key]
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                return
        try:
            wanted = parse_usage(pod)
        except ValueError as e:
            log.warning("pod %s: %s; it uses nothing", key, e)
            wanted = {}
        node = self.where[key] = pod["spec"]["nodeName"]  # spec.nodeName never changes
        p = self.usage[node].setdefault(key, _Pod(pod["metadata"]["uid"], node, now))
        node_cpu = self.node_cpu[node]
        for c in (pod.get("spec") or {}).get("containers") or []:
            rate, memory = wanted.get(c["name"], (0, 0))
            have = p.containers.get(c["name"])
            if have is None:
                p.containers[c["name"]] = _Container(Meter(now, rate), memory, now)
                node_cpu.set(node_cpu.rate + rate, now)
            elif have.cpu.rate != rate or have.memory != memory:
                node_cpu.set(node_cpu.rate + rate - have.cpu.rate, now)
                have.cpu.set(rate, now)
                have.memory = memory

    def _retire(self, p: _Pod, now: float) -> None:
        node_cpu = self.node_cpu[p.node]
        node_cpu.set(node_cpu.rate - sum(c.cpu.rate for c in p.containers.values()), now)

    def summary(self, node: str) -> dict:
        """The node's Summary (times as epoch seconds; stats.to_json for the API's)."""
        now = self.clock.now()
        pods, working_set = [], 0
        for key, p in self.usage[node].items():
            ns, name = split_key(key)
            containers = [stats.ContainerReading(cname, c.start, Usage(now, int(c.cpu.value(now)), c.memory,
                                                                       c.memory, c.memory))
                          for cname, c in sorted(p.containers.items())]
            mem = sum(c.memory for c in p.containers.values())
            working_set += mem
            pods.append(stats.PodReading(name, ns, p.uid, p.start,
                                         Usage(now, sum(c.usage.cpu_ns for c in containers if c.usage), mem,
                                               mem, mem), containers))
        node_usage = Usage(now, int(self.node_cpu[node].value(now)), working_set, working_set, working_set)
        return self.summarizers[node].summary(node_name=node, node_start=self.boot_time, node=node_usage,
                                              pods=pods)

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route
        import orjson

        def status(err: APIError) -> Response:
            return Response(orjson.dumps(err.to_status()), status_code=err.code, media_type="application/json")

        async def node_of(request: Request) -> tuple[str | None, APIError | None]:
            host = (request.scope.get("server") or ("", 0))[0]
            node = self.by_address.get(host)
            if node is None:
                return None, NotFound(f"no fake node has the address {host}")
            auth = self.auths.get(node)
            if auth is None:
                auth = self.auths[node] = self._auth(node)
            return node, await auth.check(method=request.method, path=request.url.path, headers=request.headers,
                                          peer_cert=request.scope.get("minik8s.peer_cert"))

        async def healthz(request: Request) -> Response:
            return Response(b"ok", media_type="text/plain")

        async def summary(request: Request) -> Response:
            node, err = await node_of(request)
            if err is not None or node is None:
                return status(err or NotFound("no such node"))
            return Response(orjson.dumps(stats.to_json(self.summary(node))), media_type="application/json")

        async def resource(request: Request) -> Response:
            node, err = await node_of(request)
            if err is not None or node is None:
                return status(err or NotFound("no such node"))
            return Response(stats.resource_metrics(self.summary(node)), media_type=stats.CONTENT_TYPE)

        async def other(request: Request) -> Response:
            _node, err = await node_of(request)
            return status(err or NotFound(f"the fake runtime runs nothing: {request.url.path} is not served"))
        return Starlette(routes=[Route("/healthz", healthz), Route("/stats/summary", summary),
                                 Route("/metrics/resource", resource),
                                 Route("/{path:path}", other, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])

    async def _renew_loop(self) -> None:
        """Every node once per interval, in batches spread over it."""
        names = list(self.nodes)
        batches = max(1, min(len(names), int(self.renew_interval * 10)))  # a batch every 100 ms at most
        size = -(-len(names) // batches)
        while True:
            start = self.clock.monotonic()
            for b in range(0, len(names), size):
                await asyncio.gather(*(self._renew(self.nodes[n]) for n in names[b:b + size]))
                next_at = start + (b // size + 1) * self.renew_interval / batches
                await self.clock.sleep(next_at - self.clock.monotonic())

    async def _renew(self, node: Node) -> None:
        try:
            await node.renew_lease()
            self.renewals += 1
        except Exception as exc:  # noqa: BLE001 - next round
            log.warning("renewing the lease of %s: %s", node.name, exc)

    async def _status_loop(self) -> None:
        """A node's status changes only by its heartbeat: report it every report interval."""
        nodes = list(self.nodes.values())
        while True:
            await self.clock.sleep(nodes[0].report_interval if nodes else 300)
            for node in nodes:
                try:
                    await node.update_status()
                except Exception as exc:  # noqa: BLE001 - next round
                    log.warning("updating the status of %s: %s", node.name, exc)

    async def _handle(self, key: str) -> None:
        try:
            await self._sync(key)
        except Exception as exc:  # noqa: BLE001 - retried with backoff
            # No later event need come (a pod whose status write failed changes no
            # more), so the key itself goes back, as the kubelet's pod workers requeue.
            log.warning("fake pod %s: %s; retrying", key, exc)
            self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)

    async def _sync(self, key: str) -> None:
        pod = self.pods.store.get(key)
        self._set_usage(key, pod if pod is not None and pod["spec"].get("nodeName") in self.nodes else None)
        if pod is None:
            return
        md, node = pod["metadata"], pod["spec"]["nodeName"]
        ns, name = split_key(key)
        try:
            if md.get("deletionTimestamp"):
                await self.client.delete("pods", name, namespace=ns, grace_period_seconds=0,
                                         preconditions={"uid": md["uid"]})
                return
            status = pod.get("status") or {}
            # Another writer may have turned Ready False (the node lifecycle controller
            # marks a node's pods NotReady when its lease is late): write ours back, as
            # the kubelet's status manager does when the API's status differs from its own.
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or [])
            if status.get("phase") == "Running" and status.get("podIP") and ready:
                return
            new = fake_status(pod, host_ip=self.nodes[node].address, pod_ip=self.pod_ip(node, md["uid"]),
                              now=rfc3339(time.time()))
            await self.client.patch("pods", name, [{"op": "test", "path": "/metadata/uid", "value": md["uid"]},
                                                   {"op": "replace", "path": "/status", "value": new}],
                                    namespace=ns, patch_type="json", subresource="status")
        except (NotFound, Conflict, Invalid):
            pass  # gone, or re-created under the same name: its own event follows
