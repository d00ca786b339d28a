"""Many simulated nodes in one process, for scale tests of the control plane (like KWOK).

`FakeNodes` registers N Nodes (`<prefix>-0` ... `<prefix>-{N-1}`), renews their Leases
every `renew_interval` (spread evenly over the interval, in small concurrent batches, so
1,000 nodes cost a steady trickle of updates rather than a burst), and plays the kubelet
for the pods bound to them: a pod is reported Running and Ready with a fake IP from its
node's range (10.128.0.0/9, a /24 per node), and a pod being deleted is confirmed at once
(DELETE with grace 0 and its uid as precondition). Nothing runs: no process, no
network. Nodes advertise no kubelet endpoint (port 0), so logs and exec of their pods
get the API server's "no kubelet" answer.

One informer watches every bound pod (`spec.nodeName!=`; one node: only its own) and
keeps those on our nodes; its handlers only enqueue keys, and a few workers write. One
asyncio loop.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time

from client.clock import Clock, RealClock
from client.informer import Informer, key_of, split_key
from client.rest import Client
from client.workqueue import WorkQueue
from kubelet.node import Node, node_info
from kubelet.status import rfc3339
from machinery.errors import Conflict, Invalid, NotFound

log = logging.getLogger("minik8s.kubelet.fake")

POD_NET = ipaddress.ip_network("10.128.0.0/9")
NODE_NET = ipaddress.ip_network("10.127.0.0/16")
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


class FakeNodes:
    def __init__(self, client: Client, *, prefix: str, count: int,
                 capacity: dict[str, str] | None = None, renew_interval: float = 10.0,
                 lease_duration: int = 40, workers: int = 4, clock: Clock | None = None):
        self.client, self.prefix, self.count = client, prefix, count
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
        self._next_ip: dict[str, int] = {}
        self.queue = WorkQueue()
        self.workers = workers
        # One node watches only its own pods, which is all a node's own credential may
        # watch (the Node authorizer): so a bootstrapped fake node works as a real one.
        only = f"spec.nodeName={next(iter(self.nodes))}" if count == 1 else "spec.nodeName!="
        self.pods = Informer(client, "pods", field_selector=only, indexers={})
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
                        await self.clock.sleep(1.0)
        await asyncio.gather(*(one(n) for n in self.nodes.values()))
        log.info("registered %d fake nodes %s-0..%s-%d", self.count, self.prefix, self.prefix, self.count - 1)

    async def start(self) -> None:
        await self.register()
        self.pods.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                              on_delete=lambda _p: None)
        self.pods.start()
        self._tasks = [asyncio.create_task(self._renew_loop(), name="fake-leases"),
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
        except Exception as exc:  # noqa: BLE001 - a later event retries
            log.warning("fake pod %s: %s", key, exc)

    async def _sync(self, key: str) -> None:
        pod = self.pods.store.get(key)
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
            if status.get("phase") == "Running" and status.get("podIP"):
                return
            new = fake_status(pod, host_ip=self.nodes[node].address, pod_ip=self.pod_ip(node, md["uid"]),
                              now=rfc3339(time.time()))
            await self.client.patch("pods", name, [{"op": "test", "path": "/metadata/uid", "value": md["uid"]},
                                                   {"op": "replace", "path": "/status", "value": new}],
                                    namespace=ns, patch_type="json", subresource="status")
        except (NotFound, Conflict, Invalid):
            pass  # gone, or re-created under the same name: its own event follows
