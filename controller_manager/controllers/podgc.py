"""The pod garbage collector (Kubernetes' pkg/controller/podgc).

What it guarantees, each pass:
- Terminated pods (phase Succeeded or Failed): when there are more than
  `terminated_pod_gc_threshold` (default 12500; 0 or less turns this off), the surplus
  is deleted, evicted pods first, then oldest first by creationTimestamp.
- Orphaned pods, bound to a node that no longer exists: a missing node is quarantined
  for `orphaned_pod_quarantine` seconds (40, as Kubernetes) and then confirmed absent
  with a live GET (a node the cache lacks may only be late in the cache); its pods
  are marked Failed with a DisruptionTarget condition (reason DeletionByPodGC) and
  force-deleted (grace 0): no kubelet is left to confirm a graceful deletion.
- Unscheduled pods that are terminating are force-deleted.
Deletes carry the pod's uid as a precondition, so a new pod of the same name is safe.

One key ("podgc") is reconciled: a pass over the pod and node caches. It is enqueued
when a pod turns terminal, is bound to a node the cache lacks, or is terminating
unscheduled, when a node is deleted, and every `pod_gc_period` seconds (20), and at
the moment a quarantine ends. Time is read from the injected clock.

Not done: Kubernetes' gcTerminating (terminating pods on nodes with the
`node.kubernetes.io/out-of-service` taint).

Concurrency: one asyncio loop; there is one key, so passes never overlap.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from controller_manager.controller import Controller
from controller_manager.controller_utils import rfc3339, utcnow
from machinery import errors

log = logging.getLogger("minik8s.controller.podgc")

KEY = "podgc"
TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True, kw_only=True)
class PodGCOptions:
    terminated_pod_gc_threshold: int = 12500  # terminated pods kept (<= 0: no limit)
    pod_gc_period: float = 20.0               # seconds between passes
    orphaned_pod_quarantine: float = 40.0     # seconds a node must stay missing


class PodGCController(Controller):
    name = "podgc"
    Options = PodGCOptions

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: PodGCOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        options = options or PodGCOptions()
        self.threshold = options.terminated_pod_gc_threshold
        self.period = options.pod_gc_period
        self.quarantine = options.orphaned_pod_quarantine
        self.pods = factory.informer("pods")
        self.nodes = factory.informer("nodes")
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new))
        self.nodes.add_handler(on_delete=lambda node: self.enqueue(KEY))
        self.informers += [self.pods, self.nodes]
        self._missing_since: dict[str, float] = {}  # node name -> when first seen missing
        # Pods this controller deleted that the cache still shows: a pass must not count
        # them again (a pod marked Failed before its deletion would look terminated).
        self._deleted: set[str] = set()
        self.enqueue(KEY)

    def _pod_changed(self, pod: dict) -> None:
        spec, md = pod.get("spec") or {}, pod["metadata"]
        node = spec.get("nodeName")
        if ((pod.get("status") or {}).get("phase") in TERMINAL
                or (node and node not in self.nodes.store)
                or (not node and md.get("deletionTimestamp"))):
            self.enqueue(KEY)

    async def reconcile(self, key) -> None:
        cached = self.pods.store.list()
        self._deleted &= {p["metadata"].get("uid") for p in cached}
        pods = [p for p in cached if p["metadata"].get("uid") not in self._deleted]
        try:
            if self.threshold > 0:
                await self._gc_terminated(pods)
            await self._gc_orphaned(pods)
            await self._gc_unscheduled_terminating(pods)
        finally:
            now = self.clock.monotonic()
            due = [since + self.quarantine - now for since in self._missing_since.values()]
            self.queue.add_after(KEY, max(0.0, min([self.period, *due])))

    async def _gc_terminated(self, pods: list[dict]) -> None:
        terminated = [p for p in pods if (p.get("status") or {}).get("phase") in TERMINAL]
        surplus = len(terminated) - self.threshold
        if surplus <= 0:
            return
        # Evicted first, then oldest (byEvictionAndCreationTimestamp).
        terminated.sort(key=lambda p: ((p.get("status") or {}).get("reason") != "Evicted",
                                       p["metadata"].get("creationTimestamp", ""),
                                       p["metadata"].get("namespace", ""), p["metadata"]["name"]))
        log.info("%s: %d terminated pods over the threshold of %d; deleting the oldest",
                 self.name, surplus, self.threshold)
        for pod in terminated[:surplus]:
            await self._force_delete(pod)

    async def _gc_orphaned(self, pods: list[dict]) -> None:
        now = self.clock.monotonic()
        missing = {p["spec"]["nodeName"] for p in pods
                   if (p.get("spec") or {}).get("nodeName")
                   and p["spec"]["nodeName"] not in self.nodes.store}
        for name in list(self._missing_since):
            if name not in missing:
                del self._missing_since[name]  # back, or no pod cares any more
        gone = set()
        for name in sorted(missing):
            since = self._missing_since.setdefault(name, now)
            if now - since < self.quarantine:
                continue
            try:
                await self.client.get("nodes", name)
                self._missing_since.pop(name, None)  # the cache was late; it exists
            except errors.NotFound:
                gone.add(name)
        for pod in pods:
            if pod["metadata"].get("uid") in self._deleted:
                continue
            if (pod.get("spec") or {}).get("nodeName") in gone:
                log.info("%s: pod %s/%s is bound to node %s, which no longer exists; deleting",
                         self.name, pod["metadata"].get("namespace"), pod["metadata"]["name"],
                         pod["spec"]["nodeName"])
                await self._mark_failed(pod, "PodGC: node no longer exists")
                await self._force_delete(pod)

    async def _gc_unscheduled_terminating(self, pods: list[dict]) -> None:
        for pod in pods:
            if pod["metadata"].get("uid") in self._deleted:
                continue
            if pod["metadata"].get("deletionTimestamp") and not (pod.get("spec") or {}).get("nodeName"):
                log.info("%s: unscheduled pod %s/%s is terminating; deleting", self.name,
                         pod["metadata"].get("namespace"), pod["metadata"]["name"])
                await self._force_delete(pod)

    async def _mark_failed(self, pod: dict, message: str) -> None:
        """Set phase Failed with a DisruptionTarget condition (markFailedAndDeletePod)."""
        if (pod.get("status") or {}).get("phase") in TERMINAL:
            return
        md = pod["metadata"]
        try:
            await self.client.patch("pods", md["name"], {"status": {
                "phase": "Failed",
                "conditions": [{"type": "DisruptionTarget", "status": "True",
                                "reason": "DeletionByPodGC", "message": message,
                                "lastTransitionTime": rfc3339(utcnow())}]}},
                namespace=md.get("namespace"), patch_type="strategic", subresource="status")
        except errors.NotFound:
            pass

    async def _force_delete(self, pod: dict) -> None:
        md = pod["metadata"]
        try:
            await self.client.delete("pods", md["name"], namespace=md.get("namespace"),
                                     grace_period_seconds=0, preconditions={"uid": md["uid"]})
        except (errors.NotFound, errors.Conflict):
            pass  # gone already, or a new pod took the name
        self._deleted.add(md["uid"])
