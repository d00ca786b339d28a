"""The node lifecycle controller: notices nodes that stopped reporting, taints them,
and evicts the pods that do not tolerate it (Kubernetes'
pkg/controller/nodelifecycle with its NoExecute taint manager).

What it guarantees
- Health: a node shows life when its Lease in `kube-node-lease` is renewed (a new
  `renewTime`) or its Ready condition gets a new `lastHeartbeatTime`. The time is
  the controller's own clock at the moment it sees the change, never the timestamps'
  values (clocks of different machines disagree). A node silent for
  `node_monitor_grace_period` seconds (40; `node_startup_grace_period`, 60, for one
  that never posted a Ready condition) gets, through the status subresource, every
  condition of Ready, MemoryPressure, DiskPressure and PIDPressure set to Unknown
  (reason NodeStatusUnknown, "Kubelet stopped posting node status.";
  NodeStatusNeverUpdated for a condition never posted). Pods on a node it turns from
  Ready to Unknown get Ready=False. It never sets conditions back: the kubelet does
  that when it reports again.
- NoSchedule taints follow conditions (TaintNodesByCondition): Ready False ->
  `node.kubernetes.io/not-ready`, Ready Unknown -> `node.kubernetes.io/unreachable`,
  MemoryPressure/DiskPressure/PIDPressure/NetworkUnavailable True -> their taints,
  `spec.unschedulable` -> `node.kubernetes.io/unschedulable`.
- NoExecute taints (taint-based eviction): Ready False -> `not-ready:NoExecute`,
  Unknown -> `unreachable:NoExecute`, True -> neither. Adding one is rate limited per
  zone (topology.kubernetes.io/region + zone labels) by a token bucket with a burst
  of 1: `node_eviction_rate` nodes per second (0.1) while a zone is healthy;
  `secondary_node_eviction_rate` (0.01) when at least `unhealthy_zone_threshold` (55%) and
  more than 2 of its nodes are not Ready, or 0 if the zone has no more than
  `large_cluster_size_threshold` (50) nodes; and no NoExecute taints at all while
  every node of every zone is not Ready (the control plane is the likelier one cut
  off): existing ones are removed, and when a node comes back every node gets a fresh
  grace period. Swapping not-ready for unreachable (or back) is immediate.
- Eviction (the taint manager): a pod on a node with NoExecute taints is deleted at
  once if some taint is not tolerated, otherwise after the smallest
  `tolerationSeconds` of the tolerations used (never if none has one), counted from
  when this controller first saw the pod under the taints. A toleration exactly like
  the ones the API server adds to every pod (`not-ready`/`unreachable`, Exists,
  NoExecute, 300 s) counts as `default_not_ready_toleration_seconds` /
  `default_unreachable_toleration_seconds` (300, so by default the pod's own value):
  the cluster-wide defaults, which Kubernetes sets with API server flags of these
  names. The pod first gets a DisruptionTarget condition (DeletionByTaintManager),
  then a normal graceful delete with its uid as a precondition; a pod already being
  deleted is left alone.

Keys are ("node", name) and ("pod", namespace/name). Node, Lease and pod changes
enqueue them; every node is looked at again at least every `node_monitor_period`
seconds (5) and exactly when its grace period would run out; a pod waiting out its
toleration is looked at again when it is due. All timing reads the injected clock.

Concurrency: one asyncio loop; a key is never handled by two workers at once. The
health records, eviction timers and zone buckets are touched only between awaits.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

from client.events import NORMAL
from client.informer import NODE_NAME, key_of, split_key
from controller_manager.controller import Controller
from controller_manager.controller_utils import rfc3339, utcnow
from machinery import errors

log = logging.getLogger("minik8s.controller.nodelifecycle")

LEASE_NAMESPACE = "kube-node-lease"
NO_SCHEDULE, NO_EXECUTE = "NoSchedule", "NoExecute"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
CONDITION_TAINTS = {  # condition type -> status -> NoSchedule taint key
    "Ready": {"False": NOT_READY, "Unknown": UNREACHABLE},
    "MemoryPressure": {"True": "node.kubernetes.io/memory-pressure"},
    "DiskPressure": {"True": "node.kubernetes.io/disk-pressure"},
    "NetworkUnavailable": {"True": "node.kubernetes.io/network-unavailable"},
    "PIDPressure": {"True": "node.kubernetes.io/pid-pressure"},
}
NO_SCHEDULE_KEYS = {k for by_status in CONDITION_TAINTS.values() for k in by_status.values()} | {UNSCHEDULABLE}
UNKNOWN_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
ADMISSION_DEFAULT_SECONDS = 300
ZONE_LABELS = (("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region"),
               ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"))

NORMAL_STATE, PARTIAL, FULL = "Normal", "PartialDisruption", "FullDisruption"


def condition(obj: dict, type_: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c
    return None


def ready_status(node: dict) -> str | None:
    c = condition(node, "Ready")
    return c.get("status") if c else None


def zone_of(node: dict) -> str:
    node_labels = node["metadata"].get("labels") or {}
    region, zone = (next((node_labels[k] for k in keys if k in node_labels), "") for keys in ZONE_LABELS)
    return f"{region}:\x00:{zone}" if region or zone else ""


def tolerates(toleration: dict, taint: dict) -> bool:
    """Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    return op == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def matching_tolerations(taints: list[dict], tolerations: list[dict]) -> list[dict] | None:
    """The first toleration matching each taint, or None if some taint is not tolerated."""
    used = []
    for taint in taints:
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return None
        used.append(match)
    return used


@dataclass
class Health:
    probe: float              # our clock when the node last showed life
    heartbeat: str | None     # the Ready condition's lastHeartbeatTime last seen
    renew: str | None         # the Lease's renewTime last seen
    mark_pods: bool = False   # pods still to be marked not ready


class ZoneLimiter:
    """A token bucket with a burst of 1 that hands out a token only when one is there
    (TryAccept), at a rate that changes with the zone's state. A rate of 0 never hands
    one out; a new rate keeps the tokens (so one just used is not handed out again)."""

    def __init__(self, qps: float, now: float):
        self.qps, self.tokens, self.last = qps, (1.0 if qps > 0 else 0.0), now

    def _refill(self, now: float) -> None:
        if self.qps > 0:
            self.tokens = min(1.0, self.tokens + max(0.0, now - self.last) * self.qps)
        self.last = now

    def set_rate(self, qps: float, now: float) -> None:
        if qps != self.qps:
            self._refill(now)
            self.qps = qps

    def try_accept(self, now: float) -> bool:
        self._refill(now)
        if self.qps > 0 and self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self, now: float) -> float:
        self._refill(now)
        return math.inf if self.qps <= 0 else max(0.0, (1.0 - self.tokens) / self.qps)


@dataclass(frozen=True, kw_only=True)
class NodeLifecycleOptions:
    """kube-controller-manager's NodeLifecycleControllerConfiguration, in seconds."""
    node_monitor_grace_period: float = 40.0
    node_startup_grace_period: float = 60.0
    node_monitor_period: float = 5.0
    default_not_ready_toleration_seconds: float = 300
    default_unreachable_toleration_seconds: float = 300
    node_eviction_rate: float = 0.1
    secondary_node_eviction_rate: float = 0.01
    unhealthy_zone_threshold: float = 0.55
    large_cluster_size_threshold: int = 50


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    Options = NodeLifecycleOptions

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: NodeLifecycleOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        o = options or NodeLifecycleOptions()
        self.grace = o.node_monitor_grace_period
        self.startup_grace = o.node_startup_grace_period
        self.period = o.node_monitor_period
        self.default_toleration_seconds = {NOT_READY: o.default_not_ready_toleration_seconds,
                                           UNREACHABLE: o.default_unreachable_toleration_seconds}
        self.eviction_rate = o.node_eviction_rate
        self.secondary_eviction_rate = o.secondary_node_eviction_rate
        self.unhealthy_zone_threshold = o.unhealthy_zone_threshold
        self.large_cluster_size_threshold = o.large_cluster_size_threshold

        # Keys are tuples, so key functions answer lists (a bare tuple means several keys).
        self.nodes = self.watch(factory.informer("nodes"), key_fn=lambda n: [("node", n["metadata"]["name"])])
        self.leases = self.watch(factory.informer("leases", namespace=LEASE_NAMESPACE),
                                 key_fn=self._lease_key)
        self.pods = factory.informer("pods")
        self.pods.add_handler(on_add=self._pod_changed,
                              on_update=lambda old, new: self._pod_changed(new),
                              on_delete=lambda pod: self.enqueue(("pod", key_of(pod))))
        self.informers.append(self.pods)

        self.health: dict[str, Health] = {}
        self.limiters: dict[str, ZoneLimiter] = {}
        self.zone_states: dict[str, str] = {}
        self._zone_of_node: dict[str, tuple[str, bool]] = {}        # node -> (zone, Ready)
        self._zone_counts: dict[str, dict[bool, int]] = {}          # zone -> {Ready: n, not: n}
        self.all_disrupted = False
        self._no_execute_seen: dict[str, tuple] = {}      # node -> its NoExecute taints last seen
        self._tainted_since: dict[str, tuple[str, float]] = {}  # pod key -> (uid, since)

    # -- handlers -------------------------------------------------------------------------

    @staticmethod
    def _lease_key(lease: dict):
        md = lease["metadata"]
        return [("node", md["name"])] if md.get("namespace") == LEASE_NAMESPACE else None

    def _pod_changed(self, pod: dict) -> None:
        node = self.nodes.store.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is not None and self._no_execute_taints(node):
            self.enqueue(("pod", key_of(pod)))

    # -- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key) -> None:
        kind, name = key
        if kind == "node":
            await self._reconcile_node(name)
        else:
            await self._reconcile_pod(name)

    @staticmethod
    def _no_execute_taints(node: dict) -> list[dict]:
        return [t for t in (node.get("spec") or {}).get("taints") or () if t.get("effect") == NO_EXECUTE]

    async def _reconcile_node(self, name: str) -> None:
        cached = self.nodes.store.get(name)
        if cached is None:
            self._count(name, None)
            self.health.pop(name, None)
            self._no_execute_seen.pop(name, None)
            return
        now = self.clock.monotonic()
        seen = tuple(sorted((t.get("key", ""), t.get("value", "")) for t in self._no_execute_taints(cached)))
        if self._no_execute_seen.get(name, ()) != seen:
            # The taint manager looks at every pod on a node whose NoExecute taints changed.
            self._no_execute_seen[name] = seen
            for pod_key in self.pods.store.index_keys(NODE_NAME, name):
                self.enqueue(("pod", pod_key))
        node, remaining = await self._update_health(cached, now)
        self._update_zones(node)
        node, wait = await self._update_taints(node, now)
        h = self.health[name]
        if h.mark_pods:
            await self._mark_pods_not_ready(name)
            h.mark_pods = False
        delay = self.period
        for d in (remaining, wait):
            if 0 < d < delay:
                delay = d
        self.queue.add_after(("node", name), delay)

    async def _update_health(self, node: dict, now: float) -> tuple[dict, float]:
        """-> (the node as it now is, seconds until its grace period runs out, or 0)."""
        name = node["metadata"]["name"]
        ready = condition(node, "Ready")
        heartbeat = ready.get("lastHeartbeatTime") if ready else None
        lease = self.leases.store.get(f"{LEASE_NAMESPACE}/{name}")
        renew = ((lease or {}).get("spec") or {}).get("renewTime")
        h = self.health.get(name)
        if h is None:
            h = self.health[name] = Health(now, heartbeat, renew)
        elif heartbeat != h.heartbeat or (renew and renew != h.renew):
            h.probe, h.heartbeat, h.renew = now, heartbeat, renew
        grace = self.startup_grace if ready is None else self.grace
        left = h.probe + grace - now
        if left > 0:
            return node, left
        new = copy.deepcopy(node)
        conditions = new.setdefault("status", {}).setdefault("conditions", [])
        changed = False
        stamp = rfc3339(utcnow())
        for type_ in UNKNOWN_CONDITIONS:
            c = condition(new, type_)
            if c is None:
                conditions.append({"type": type_, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                                   "message": "Kubelet never posted node status.",
                                   "lastHeartbeatTime": node["metadata"].get("creationTimestamp"),
                                   "lastTransitionTime": stamp})
                changed = True
            elif c.get("status") != "Unknown":
                c.update(status="Unknown", reason="NodeStatusUnknown",
                         message="Kubelet stopped posting node status.", lastTransitionTime=stamp)
                changed = True
        if not changed:
            return node, 0.0
        log.info("%s: node %s has not reported for %.0fs; marking its conditions Unknown",
                 self.name, name, now - h.probe)
        updated = await self.client.update_status(new)
        # Our own write is no sign of life: remember the heartbeat it carries.
        h.heartbeat = (condition(updated, "Ready") or {}).get("lastHeartbeatTime")
        if ready is not None and ready.get("status") == "True":
            h.mark_pods = True
            if self.recorder is not None:
                self.recorder.event(updated, NORMAL, "NodeNotReady",
                                    f"Node {name} status is now: NodeNotReady")
        return updated, 0.0

    def _count(self, name: str, node: dict | None) -> None:
        """Move one node's (zone, Ready) in the per-zone counts; None: the node is gone."""
        before = self._zone_of_node.pop(name, None)
        if before is not None:
            self._zone_counts[before[0]][before[1]] -= 1
            if not sum(self._zone_counts[before[0]].values()):
                del self._zone_counts[before[0]]
        if node is not None:
            zone, ready = zone_of(node), ready_status(node) == "True"
            self._zone_of_node[name] = (zone, ready)
            self._zone_counts.setdefault(zone, {True: 0, False: 0})[ready] += 1

    def _update_zones(self, current: dict) -> None:
        """Zone states and their eviction rates, from every node's Ready condition.

        The counts per zone are kept as each node is reconciled, so a reconcile costs the
        number of zones, not of nodes (a pass over every node on each lease renewal was
        nodes² per cycle, a core at 5,000 nodes). They start from the informer's store."""
        if not self._zone_of_node:
            for node in self.nodes.store.list():
                self._count(node["metadata"]["name"], node)
        self._count(current["metadata"]["name"], current)
        by_zone = {zone: (c[True], c[True] + c[False]) for zone, c in self._zone_counts.items()}
        states = {}
        for zone, (ready, total) in by_zone.items():
            not_ready = total - ready
            if ready == 0 and not_ready > 0:
                states[zone] = FULL
            elif not_ready > 2 and not_ready / total >= self.unhealthy_zone_threshold:
                states[zone] = PARTIAL
            else:
                states[zone] = NORMAL_STATE
        all_now = bool(states) and all(s == FULL for s in states.values())
        now = self.clock.monotonic()
        if all_now != self.all_disrupted:
            if all_now:
                log.warning("%s: every node is not Ready; the control plane may be cut off: "
                            "no NoExecute taints, no evictions", self.name)
            else:
                log.info("%s: some nodes are Ready again; resuming normal evictions, with a "
                         "fresh grace period for every node", self.name)
                for h in self.health.values():
                    h.probe = now
            self.all_disrupted = all_now
            for node in self.nodes.store.list():
                self.enqueue(("node", node["metadata"]["name"]))
        for zone, state in states.items():
            if state != self.zone_states.get(zone):
                log.info("%s: zone %r is now %s", self.name, zone, state)
            if state == PARTIAL:
                rate = (self.secondary_eviction_rate
                        if by_zone[zone][1] > self.large_cluster_size_threshold else 0.0)
            else:
                rate = self.eviction_rate
            limiter = self.limiters.get(zone)
            if limiter is None:
                self.limiters[zone] = ZoneLimiter(rate, now)
            else:
                limiter.set_rate(rate, now)
        self.zone_states = states

    async def _update_taints(self, node: dict, now: float) -> tuple[dict, float]:
        """Write the taints the node's conditions call for. -> (node, seconds until a
        rate-limited NoExecute taint may be added, or 0)."""
        name = node["metadata"]["name"]
        spec = node.get("spec") or {}
        taints = list(spec.get("taints") or ())
        have = {(t.get("key"), t.get("effect")) for t in taints}

        want: set[tuple[str, str]] = set()
        for c in (node.get("status") or {}).get("conditions") or ():
            key = CONDITION_TAINTS.get(c.get("type"), {}).get(c.get("status"))
            if key:
                want.add((key, NO_SCHEDULE))
        if spec.get("unschedulable"):
            want.add((UNSCHEDULABLE, NO_SCHEDULE))

        ready = ready_status(node)
        wait = 0.0
        current_ne = {k for k, e in have if e == NO_EXECUTE and k in (NOT_READY, UNREACHABLE)}
        if self.all_disrupted or ready == "True":
            pass  # neither NoExecute taint
        elif ready in ("False", "Unknown"):
            taint, opposite = (NOT_READY, UNREACHABLE) if ready == "False" else (UNREACHABLE, NOT_READY)
            if taint in current_ne:
                want.add((taint, NO_EXECUTE))
            elif opposite in current_ne:
                want.add((taint, NO_EXECUTE))  # a swap is not rate limited
            else:
                limiter = self.limiters[zone_of(node)]
                if limiter.try_accept(now):
                    log.info("%s: node %s is %s; tainting it %s:NoExecute", self.name, name,
                             "NotReady" if ready == "False" else "unreachable", taint)
                    want.add((taint, NO_EXECUTE))
                else:
                    wait = limiter.wait(now)
        else:
            want |= {(k, NO_EXECUTE) for k in current_ne}  # no Ready condition yet: leave as is

        managed = {(k, NO_SCHEDULE) for k in NO_SCHEDULE_KEYS} | \
                  {(NOT_READY, NO_EXECUTE), (UNREACHABLE, NO_EXECUTE)}
        if {x for x in have if x in managed} == want:
            return node, wait
        stamp = rfc3339(utcnow())
        new_taints = [t for t in taints if (t.get("key"), t.get("effect")) not in managed
                      or (t.get("key"), t.get("effect")) in want]
        for key, effect in sorted(want - have):
            new_taints.append({"key": key, "effect": effect, "timeAdded": stamp})
        log.info("%s: node %s taints: %s", self.name, name,
                 ", ".join(f"{t['key']}:{t['effect']}" for t in new_taints) or "none")
        updated = await self.client.patch("nodes", name, {
            "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
            "spec": {"taints": new_taints}})
        return updated, wait

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        for pod in self.pods.store.by_index(NODE_NAME, node_name):
            c = condition(pod, "Ready")
            if c is None or c.get("status") != "True":
                continue
            md = pod["metadata"]
            log.info("%s: marking pod %s/%s not ready (node %s is not ready)", self.name,
                     md.get("namespace"), md["name"], node_name)
            try:
                await self.client.patch("pods", md["name"], {"status": {"conditions": [{
                    "type": "Ready", "status": "False", "lastTransitionTime": rfc3339(utcnow())}]}},
                    namespace=md.get("namespace"), patch_type="strategic", subresource="status")
            except errors.NotFound:
                pass

    # -- the taint manager ---------------------------------------------------------------

    def _toleration_seconds(self, t: dict) -> float | None:
        seconds = t.get("tolerationSeconds")
        if seconds is None:
            return None
        if (t.get("key") in (NOT_READY, UNREACHABLE) and t.get("operator") == "Exists"
                and t.get("effect") == NO_EXECUTE and not t.get("value")
                and seconds == ADMISSION_DEFAULT_SECONDS):
            return self.default_toleration_seconds[t["key"]]  # the API server's default, overridden
        return seconds

    def _eviction_delay(self, pod: dict, taints: list[dict]) -> float | None:
        """Seconds a pod may stay under `taints`; None for as long as they last."""
        used = matching_tolerations(taints, (pod.get("spec") or {}).get("tolerations") or [])
        if used is None:
            return 0.0
        delays = [s for s in map(self._toleration_seconds, used) if s is not None]
        if not delays:
            return None
        return max(0.0, min(delays))

    async def _reconcile_pod(self, key: str) -> None:
        pod = self.pods.store.get(key)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            self._tainted_since.pop(key, None)
            return
        node = self.nodes.store.get((pod.get("spec") or {}).get("nodeName") or "")
        taints = self._no_execute_taints(node) if node is not None else []
        delay = self._eviction_delay(pod, taints) if taints else None
        if delay is None:
            self._tainted_since.pop(key, None)
            return
        uid = pod["metadata"].get("uid", "")
        now = self.clock.monotonic()
        since = self._tainted_since.get(key)
        if since is None or since[0] != uid:
            since = self._tainted_since[key] = (uid, now)
        left = since[1] + delay - now
        if left > 0:
            self.queue.add_after(("pod", key), left)
            return
        namespace, name = split_key(key)
        log.info("%s: evicting pod %s from node %s (NoExecute taints %s)", self.name, key,
                 pod["spec"]["nodeName"], ", ".join(t.get("key", "") for t in taints))
        if self.recorder is not None:
            self.recorder.event(pod, NORMAL, "TaintManagerEviction", f"Marking for deletion Pod {key}")
        try:
            await self.client.patch("pods", name, {"status": {"conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": rfc3339(utcnow())}]}},
                namespace=namespace, patch_type="strategic", subresource="status")
            await self.client.delete("pods", name, namespace=namespace, preconditions={"uid": uid})
        except errors.NotFound:
            pass
        except errors.Conflict:
            pass  # a new pod took the name: its own events bring it here
        self._tainted_since.pop(key, None)
