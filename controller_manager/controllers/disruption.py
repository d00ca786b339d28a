"""The disruption controller (pkg/controller/disruption): keeps each PodDisruptionBudget's
status, which the pods/eviction subresource spends (apiserver/eviction.py).

What it guarantees, per budget, from the pods its selector picks in its namespace (an
empty selector picks all of them, as policy/v1 says):
- `desiredHealthy`: `minAvailable` as an integer is taken as is; a percent of
  `minAvailable`, or `maxUnavailable` (integer or percent), is scaled against
  `expectedPods`, the sum of the pods' controllers' scales (a Deployment's
  spec.replicas for a ReplicaSet it owns, a ReplicaSet's, a StatefulSet's or a
  ReplicationController's through `/scale`), rounding percents up; with an integer
  minAvailable, expectedPods is the number of pods.
- `currentHealthy`: pods that are Ready, not being deleted and not recorded in
  `disruptedPods` within the last two minutes (DeletionTimeout).
- `disruptionsAllowed` = max(currentHealthy - desiredHealthy, 0), the condition
  `DisruptionAllowed` (True/SufficientPods, False/InsufficientPods), and
  `observedGeneration`.
- `disruptedPods`: an entry is dropped once its pod is being deleted or gone, or after
  two minutes (the eviction's delete never happened); the budget is looked at again
  when the oldest entry expires.
- A pod without a controller, or whose controller cannot be read, when the budget needs
  a scale, fails safe: disruptionsAllowed 0 and DisruptionAllowed False/SyncFailed with
  the reason, as Kubernetes' failSafe.
- The status is written only when it differs, with the budget's resourceVersion, so a
  concurrent eviction's decrement is never overwritten (a conflict requeues).

One asyncio loop; one key per budget. Pod changes enqueue the budgets that select the
pod, old and new labels both.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from client.clock import Clock
from client.events import EventRecorder
from client.informer import key_of, split_key
from controller_manager.controller import Controller
from controller_manager.controller_utils import is_pod_ready
from machinery import errors, labels, times

log = logging.getLogger("minik8s.controller.disruption")

DELETION_TIMEOUT = 120.0  # seconds an eviction's delete has to show up (DeletionTimeout)

# Controllers whose scale `/scale` answers, by (apiVersion group, kind).
_SCALED = {("apps", "StatefulSet"): "statefulsets", ("", "ReplicationController"): "replicationcontrollers",
           ("apps", "Deployment"): "deployments", ("apps", "ReplicaSet"): "replicasets"}


class SyncFailed(Exception):
    """The budget's expected pod count cannot be worked out."""


def _selector(pdb: dict) -> labels.Selector:
    try:
        return labels.from_label_selector((pdb.get("spec") or {}).get("selector"))
    except errors.APIError:
        return labels.nothing()


def scaled(value: Any, total: int) -> int:
    """GetScaledValueFromIntOrPercent with roundUp: an int as is, "N%" of total rounded up."""
    if isinstance(value, int):
        return value
    return math.ceil(int(str(value).rstrip("%")) * total / 100)


def count_healthy(pods: list[dict], disrupted: dict[str, str], now: float) -> int:
    healthy = 0
    for pod in pods:
        md = pod["metadata"]
        if md.get("deletionTimestamp"):
            continue
        at = disrupted.get(md["name"])
        if at is not None and _parse(at) + DELETION_TIMEOUT > now:
            continue
        if is_pod_ready(pod):
            healthy += 1
    return healthy


def _parse(ts: str) -> float:
    try:
        return times.parse(ts)
    except (ValueError, TypeError):
        return 0.0


def disrupted_map(pods: list[dict], recorded: dict[str, str], now: float) -> tuple[dict[str, str], float | None]:
    """buildDisruptedPodMap: the entries still pending, and when the next one expires."""
    by_name = {p["metadata"]["name"]: p for p in pods}
    kept, recheck = {}, None
    for name, at in (recorded or {}).items():
        pod = by_name.get(name)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            continue
        expires = _parse(at) + DELETION_TIMEOUT
        if expires <= now:
            log.warning("pod %s was expected to be deleted at %s but it wasn't; updating the budget", name, at)
            continue
        kept[name] = at
        recheck = expires if recheck is None else min(recheck, expires)
    return kept, recheck


class DisruptionController(Controller):
    name = "disruption"

    def __init__(self, client, factory, *, recorder: EventRecorder | None = None,
                 clock: Clock | None = None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.pdbs = self.watch(factory.informer("poddisruptionbudgets"))
        self.pods = factory.informer("pods")
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated,
                              on_delete=self._pod_changed)
        self.replicasets = factory.informer("replicasets")
        self.deployments = factory.informer("deployments")
        self.informers += [self.pods, self.replicasets, self.deployments]

    # -- events -------------------------------------------------------------------------

    def _pod_changed(self, pod: dict) -> None:
        md = pod["metadata"]
        for pdb in self.pdbs.store.by_index("namespace", md.get("namespace", "")):
            if _selector(pdb).matches(md.get("labels") or {}):
                self.enqueue(key_of(pdb))

    def _pod_updated(self, old: dict, new: dict) -> None:
        self._pod_changed(old)
        self._pod_changed(new)

    # -- reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        pdb = self.pdbs.store.get(key)
        if pdb is None:
            return
        namespace, _ = split_key(key)
        sel = _selector(pdb)
        pods = [p for p in self.pods.store.by_index("namespace", namespace)
                if sel.matches(p["metadata"].get("labels") or {})]
        now = self.clock.now()
        try:
            expected, desired = await self._expected(pdb, pods)
        except SyncFailed as exc:
            await self._write(pdb, {"disruptionsAllowed": 0}, reason="SyncFailed", message=str(exc))
            return
        disrupted, recheck = disrupted_map(pods, (pdb.get("status") or {}).get("disruptedPods") or {}, now)
        healthy = count_healthy(pods, disrupted, now)
        await self._write(pdb, {"currentHealthy": healthy, "desiredHealthy": desired,
                                "expectedPods": expected, "disruptedPods": disrupted,
                                "disruptionsAllowed": max(healthy - desired, 0)})
        if recheck is not None:
            self.queue.add_after(key, max(recheck - now, 0.0))

    async def _expected(self, pdb: dict, pods: list[dict]) -> tuple[int, int]:
        """getExpectedPodCount: (expectedPods, desiredHealthy)."""
        spec = pdb.get("spec") or {}
        max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
        if max_unavailable is None and isinstance(min_available, int):
            return len(pods), min_available
        if max_unavailable is None and min_available is None:
            return len(pods), 0
        expected = await self._expected_count(pods)
        if max_unavailable is not None:
            return expected, max(expected - scaled(max_unavailable, expected), 0)
        return expected, scaled(min_available, expected)

    async def _expected_count(self, pods: list[dict]) -> int:
        """The sum of the scales of the pods' controllers, each counted once."""
        scales: dict[str, int] = {}
        for pod in pods:
            md = pod["metadata"]
            if md.get("deletionTimestamp"):
                continue
            ref = next((r for r in md.get("ownerReferences") or [] if r.get("controller")), None)
            if ref is None:
                raise SyncFailed(f"found no controller ref for pod {md['name']!r}")
            uid, scale = await self._scale(md["namespace"], ref)
            scales[uid] = scale
        return sum(scales.values())

    async def _scale(self, namespace: str, ref: dict) -> tuple[str, int]:
        group = (ref.get("apiVersion") or "").rpartition("/")[0]
        kind, name = ref.get("kind", ""), ref.get("name", "")
        if (group, kind) == ("apps", "ReplicaSet"):
            rs = self.replicasets.store.get(f"{namespace}/{name}")
            if rs is not None and rs["metadata"].get("uid") == ref.get("uid"):
                owner = next((r for r in rs["metadata"].get("ownerReferences") or []
                              if r.get("controller") and r.get("kind") == "Deployment"), None)
                if owner is not None:
                    deploy = self.deployments.store.get(f"{namespace}/{owner['name']}")
                    if deploy is not None and deploy["metadata"].get("uid") == owner.get("uid"):
                        return owner["uid"], (deploy.get("spec") or {}).get("replicas", 1)
                return ref["uid"], (rs.get("spec") or {}).get("replicas", 1)
        plural = _SCALED.get((group, kind))
        if plural is None:
            raise SyncFailed(f"found no controllers for pod's owner {kind} {name!r}")
        try:
            scale = await self.client.get_scale(plural, name, namespace=namespace)
        except errors.APIError as exc:
            raise SyncFailed(f"getting the scale of {kind} {name!r}: {exc.message}") from exc
        if (scale.get("metadata") or {}).get("uid") not in (None, ref.get("uid")):
            raise SyncFailed(f"{kind} {name!r} is no longer the pod's controller")
        return ref["uid"], (scale.get("spec") or {}).get("replicas", 0)

    async def _write(self, pdb: dict, values: dict, *, reason: str = "", message: str = "") -> None:
        old = pdb.get("status") or {}
        status = {"disruptedPods": old.get("disruptedPods") or {}, "currentHealthy": old.get("currentHealthy", 0),
                  "desiredHealthy": old.get("desiredHealthy", 0), "expectedPods": old.get("expectedPods", 0),
                  **values, "observedGeneration": pdb["metadata"].get("generation", 1)}
        if not status["disruptedPods"]:
            status.pop("disruptedPods")
        allowed = status["disruptionsAllowed"] > 0
        if not reason:
            reason = "SufficientPods" if allowed else "InsufficientPods"
        conditions = [c for c in old.get("conditions") or [] if c.get("type") != "DisruptionAllowed"]
        prev = next((c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None)
        cond = {"type": "DisruptionAllowed", "status": "True" if allowed else "False", "reason": reason,
                "message": message, "observedGeneration": status["observedGeneration"]}
        same = prev is not None and all(prev.get(k) == cond[k] for k in ("status", "reason", "message"))
        cond["lastTransitionTime"] = prev["lastTransitionTime"] if same and prev.get("lastTransitionTime") \
            else times.rfc3339(self.clock.now())
        if same and prev.get("observedGeneration") == cond["observedGeneration"]:
            cond = prev
        status["conditions"] = conditions + [cond]
        if status == old:
            return
        new = {**pdb, "status": status}
        log.debug("updating budget %s/%s: %s", pdb["metadata"]["namespace"], pdb["metadata"]["name"], status)
        await self.client.update_status(new)
