"""One busy controller must not stop the others (issue 20).

The controller manager runs every controller on one asyncio loop. A controller whose
reconciles never wait on I/O (the node lifecycle controller deciding from its caches on
each lease renewal, say) and whose queue never empties would, if its workers did not
hand the loop back, hold it for as long as its queue had keys: the ReplicaSet controller
then created no pod at all. Here a controller that burns CPU in every reconcile and
re-queues its own keys runs beside the real ReplicaSet controller, on one loop, against
a real API server; the ReplicaSet must reach its replicas while the busy controller is
still busy. Progress is judged by counts of reconciles, never by time.

`scenario` is also what bench/scale.py runs for its before/after figure (with the work
queue's loop as it was before, which never yielded between keys).

Takes about 5 s (at most `LIMIT * COST` = 15 s of busy reconciles if it fails).
"""
from __future__ import annotations

import asyncio
import time
from typing import Hashable

from client.informer import SharedInformerFactory
from client.rest import Client
from controller_manager.controller import Controller
from controller_manager.controllers.replicaset import ReplicaSetController

REPLICAS = 20
BUSY_KEYS = 5
COST = 0.005     # CPU seconds each busy reconcile burns, without awaiting anything
LIMIT = 3000     # busy reconciles in all; then it stops re-queueing (so a failure ends)
TIMEOUT = 120.0  # only catches a hang


class BusyController(Controller):
    """A controller that always has work: each reconcile spins for `cost` seconds on the
    loop and puts its key back, until `limit` reconciles have been done."""
    name = "busy"

    def __init__(self, client: Client, *, cost: float, limit: int):
        super().__init__(client)
        self.cost, self.limit, self.reconciles = cost, limit, 0

    async def reconcile(self, key: Hashable) -> None:
        end = time.perf_counter() + self.cost
        while time.perf_counter() < end:
            pass
        self.reconciles += 1
        if self.reconciles < self.limit:
            self.queue.add(key)


class CountingReplicaSetController(ReplicaSetController):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.reconciles = 0

    async def reconcile(self, key: Hashable) -> None:
        self.reconciles += 1
        await super().reconcile(key)


async def scenario(client: Client, namespace: str, *, replicas: int = REPLICAS, cost: float = COST,
                   limit: int = LIMIT, workers: int = 5) -> dict[str, int]:
    """Run the busy controller and a ReplicaSet controller on this loop; create a
    ReplicaSet of `replicas` and wait until its status counts them all. -> reconcile
    counts: the busy controller's when the ReplicaSet got there, and the ReplicaSet
    controller's."""
    factory = SharedInformerFactory(client, namespace=namespace)
    rs = CountingReplicaSetController(client, factory)
    busy = BusyController(client, cost=cost, limit=limit)
    reached = asyncio.get_running_loop().create_future()

    def seen(_old: dict, new: dict) -> None:
        if (new.get("status") or {}).get("replicas") == replicas and not reached.done():
            reached.set_result(busy.reconciles)
    rs.rs_informer.add_handler(on_update=seen)
    factory.start()
    try:
        assert await factory.wait_for_cache_sync(TIMEOUT), "caches did not sync"
        for i in range(BUSY_KEYS):
            busy.enqueue(f"busy-{i}")
        labels = {"app": "fair"}
        await client.create({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "fair"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}},
            namespace=namespace)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c.run(workers)) for c in (busy, rs)]
            try:
                busy_then = await asyncio.wait_for(reached, TIMEOUT)
            finally:
                for t in tasks:
                    t.cancel()
        return {"busy_reconciles_when_replicaset_done": busy_then, "busy_limit": limit,
                "replicaset_reconciles": rs.reconciles, "replicas": replicas}
    finally:
        busy.queue.shutdown()
        rs.queue.shutdown()
        await factory.stop()


async def test_replicaset_scales_while_another_controller_is_always_busy(apiserver, ns):
    async with Client(apiserver.connection()) as client:
        got = await scenario(client, ns)
    # The busy controller really was busy throughout: it had started, and had work
    # left, when the ReplicaSet controller had created every pod and reported it.
    assert 0 < got["busy_reconciles_when_replicaset_done"] < LIMIT, got
    assert got["replicaset_reconciles"] >= 1, got

