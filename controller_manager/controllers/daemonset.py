"""The DaemonSet controller (pkg/controller/daemon): one pod of the template on every
eligible node, rolled out by revision.

What it guarantees, per DaemonSet (Kubernetes 1.32 semantics):
- Eligibility (NodeShouldRunDaemonPod): the template's nodeName (if set), nodeSelector
  and required node affinity must match the node; a taint with effect NoSchedule or
  NoExecute that the pod does not tolerate means no new pod there, and an untolerated
  NoExecute taint means an existing one goes too. The pod's tolerations are the
  template's plus the ones Kubernetes adds to every daemon pod: not-ready and
  unreachable NoExecute (no tolerationSeconds), disk-, memory- and pid-pressure and
  unschedulable NoSchedule, and network-unavailable NoSchedule for hostNetwork pods.
  So a cordoned node still runs its daemons.
- Pods are created unbound, with a required node affinity on `metadata.name` naming
  their node (replacing the template's required terms, which were already checked), so
  the default scheduler places them, as ScheduleDaemonSetPods (GA) does. They carry
  `controller-revision-hash` (the current revision's hash) and `pod-template-generation`
  (the DaemonSet's `deprecated.daemonset.template.generation`), and our controller
  reference.
- Per node: a missing pod is created; failed and succeeded pods are deleted (a node
  whose pods keep failing is retried with back-off, 1 s doubling to 15 min); extra pods
  are deleted, keeping the oldest (with maxSurge, the oldest updated and the oldest old
  one, and the old one only while it is ready and the updated one not yet available).
  Pods on nodes that should not run them, and unscheduled pods aimed at nodes that no
  longer exist, are deleted. Without surge a terminating pod still occupies its node, so
  a replacement waits for it to go; with surge a node whose pods are all terminating
  gets a new one at once.
- History: the current revision is the ControllerRevision whose data equals the
  DaemonSet's template patch (`{"spec":{"template":{...,"$patch":"replace"}}}`), made
  when missing as `<name>-<hash>` (the hash is ComputeHash of the template and
  `status.collisionCount`; a name taken by another revision bumps collisionCount), and
  renumbered to be the newest. Revisions no pod uses beyond `revisionHistoryLimit` are
  deleted, oldest first.
- RollingUpdate: without surge, old available pods are deleted while the unavailable
  pods stay within maxUnavailable (an unavailable old pod is replaced at once); with
  maxSurge, a new pod is created beside an old one on up to maxSurge nodes at a time and
  the old one is deleted once the new one is available. Both round percentages up
  against the number of nodes that should run the pod. OnDelete: only pods a user
  deletes are replaced.
- Expectations: creates and deletes are remembered until the pod informer shows them;
  until then only status is written, so a lagging watch or a restarted controller never
  creates a second pod on a node (the pods in the API are the record).
- Status: desiredNumberScheduled, currentNumberScheduled, numberMisscheduled,
  numberReady, numberAvailable, numberUnavailable, updatedNumberScheduled,
  observedGeneration and collisionCount, written only when changed.
- Events: SuccessfulCreate, FailedCreate, SuccessfulDelete, FailedDelete,
  FailedDaemonPod, SucceededDaemonPod, SelectingAll, as Kubernetes records them.

Concurrency: one asyncio loop; handlers only enqueue DaemonSet keys (and do expectation
bookkeeping); the work queue never hands one key to two workers.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import math
from dataclasses import dataclass

from client.clock import Clock
from client.events import NORMAL, WARNING, EventRecorder
from client.informer import NAMESPACE, OWNER_UID, key_of
from controller_manager import history
from controller_manager.controller import Controller
from controller_manager.controller_utils import (
    Expectations, Now, claim, controller_of, controller_ref, is_pod_available, is_pod_ready,
    selector_of, slow_start_batch, utcnow)
from controller_manager.controllers.deployment import compute_hash
from controller_manager.controllers.nodelifecycle import tolerates
from machinery import errors
from machinery.labels import Selector

log = logging.getLogger("minik8s.controller.daemonset")

BURST_REPLICAS = 250
HASH_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
BACKOFF_INITIAL, BACKOFF_MAX = 1.0, 900.0

# AddOrUpdateDaemonPodTolerations: what every daemon pod tolerates.
DAEMON_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
NETWORK_UNAVAILABLE = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                       "effect": "NoSchedule"}


# --- pure helpers (pkg/controller/daemon/util, component-helpers' nodeaffinity) ---------

def _same_toleration(a: dict, b: dict) -> bool:
    """Toleration.MatchToleration: same key, operator, value and effect."""
    return all((a.get(k) or "") == (b.get(k) or "") for k in ("key", "value", "effect")) \
        and (a.get("operator") or "Equal") == (b.get("operator") or "Equal")


def add_daemon_tolerations(spec: dict) -> None:
    """Add (or replace an equal-but-for-seconds one with) each daemon toleration."""
    wanted = list(DAEMON_TOLERATIONS) + ([NETWORK_UNAVAILABLE] if spec.get("hostNetwork") else [])
    tolerations = list(spec.get("tolerations") or [])
    for want in wanted:
        for i, t in enumerate(tolerations):
            if _same_toleration(t, want):
                tolerations[i] = dict(want)
                break
        else:
            tolerations.append(dict(want))
    spec["tolerations"] = tolerations


def _expr_matches(expr: dict, labels: dict, name: str, field: bool) -> bool:
    key, op, values = expr.get("key") or "", expr.get("operator"), expr.get("values") or []
    if field:
        if key != "metadata.name":
            return False
        return (name in values) if op == "In" else (name not in values) if op == "NotIn" else False
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        try:
            v, bound = int(labels[key]), int(values[0])
        except (KeyError, IndexError, ValueError):
            return False
        return v > bound if op == "Gt" else v < bound
    return False


def required_affinity_matches(spec: dict, node: dict) -> bool:
    """GetRequiredNodeAffinity(pod).Match(node): nodeSelector AND (any required term)."""
    labels = node["metadata"].get("labels") or {}
    name = node["metadata"]["name"]
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    for term in required.get("nodeSelectorTerms") or []:
        exprs = [(e, False) for e in term.get("matchExpressions") or []] + \
                [(e, True) for e in term.get("matchFields") or []]
        if exprs and all(_expr_matches(e, labels, name, f) for e, f in exprs):
            return True
    return False


def _untolerated(taints: list[dict], tolerations: list[dict], effects: tuple[str, ...]) -> bool:
    return any(t.get("effect") in effects and not any(tolerates(tol, t) for tol in tolerations)
               for t in taints)


def pod_spec_for(ds: dict) -> dict:
    spec = copy.deepcopy(((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
    add_daemon_tolerations(spec)
    return spec


def should_run(ds: dict, node: dict, spec: dict | None = None) -> tuple[bool, bool]:
    """NodeShouldRunDaemonPod -> (a pod should be created there, an existing one may stay)."""
    spec = spec if spec is not None else pod_spec_for(ds)
    node_name = spec.get("nodeName")
    if node_name and node_name != node["metadata"]["name"]:
        return False, False
    if not required_affinity_matches(spec, node):
        return False, False
    taints = (node.get("spec") or {}).get("taints") or []
    tolerations = spec.get("tolerations") or []
    if _untolerated(taints, tolerations, ("NoSchedule", "NoExecute")):
        return False, not _untolerated(taints, tolerations, ("NoExecute",))
    return True, True


def target_node(pod: dict) -> str:
    """GetTargetNodeName: the node a pod is bound to, or the one its affinity names."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for f in term.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("operator") == "In" and len(f.get("values") or []) == 1:
                return f["values"][0]
    return ""


def node_name_affinity(affinity: dict | None, node: str) -> dict:
    """ReplaceDaemonSetPodNodeNameNodeAffinity."""
    affinity = copy.deepcopy(affinity or {})
    na = affinity.setdefault("nodeAffinity", {})
    na["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
    return affinity


def template_generation(ds: dict) -> str | None:
    value = (ds["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION)
    try:
        return None if value is None else str(int(value))
    except ValueError:
        return None


def is_pod_updated(pod: dict, hash_: str, generation: str | None) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return bool(hash_) and labels.get(HASH_LABEL) == hash_ or \
        (generation is not None and labels.get(GENERATION_LABEL) == generation)


def template_patch(ds: dict) -> dict:
    """getPatch: the revision data, `{"spec": {"template": {..., "$patch": "replace"}}}`."""
    template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def _rolling(ds: dict) -> dict | None:
    strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return None
    return strategy.get("rollingUpdate") or {}


def _scaled(value, total: int) -> int:
    """GetScaledValueFromIntOrPercent, rounding up (as the DaemonSet controller does)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            return math.ceil(int(value[:-1]) * total / 100)
        except ValueError:
            pass
    raise errors.Invalid(f"invalid value for IntOrString: {value!r}")


def surge_and_unavailable(ds: dict, desired: int) -> tuple[int, int]:
    ru = _rolling(ds)
    if ru is None:
        return 0, 0
    surge = _scaled(ru.get("maxSurge", 0), desired)
    unavailable = _scaled(ru.get("maxUnavailable", 1), desired)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # an impossible configuration obeys the default
    return surge, unavailable


def _by_age(pods: list[dict]) -> list[dict]:
    """podByCreationTimestampAndPhase: scheduled pods first, then oldest, then by name."""
    return sorted(pods, key=lambda p: (not (p.get("spec") or {}).get("nodeName"),
                                       p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))


def find_updated_pods(pods: list[dict], hash_: str, generation: str | None
                      ) -> tuple[dict | None, dict | None, bool]:
    """findUpdatedPodsOnNode -> (new pod, old pod, at most one of each)."""
    new = old = None
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if is_pod_updated(pod, hash_, generation):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


# --- the controller ---------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class DaemonSetOptions:
    burst_replicas: int = BURST_REPLICAS  # creates or deletes one sync may issue


class DaemonSetController(Controller):
    name = "daemonset"
    queue_name = "daemonset"
    Options = DaemonSetOptions

    def __init__(self, client, factory, *, recorder: EventRecorder | None = None,
                 clock: Clock | None = None, options: DaemonSetOptions | None = None,
                 now: Now = utcnow):
        super().__init__(client, clock=clock, recorder=recorder)
        options = options or DaemonSetOptions()
        self.burst_replicas = options.burst_replicas
        self.now = now
        self.expectations = Expectations(self.clock)
        self._backoff: dict[tuple[str, str], tuple[float, float]] = {}  # (ds, node) -> (until, delay)
        self.ds_informer = factory.informer("daemonsets")
        self.pod_informer = factory.informer("pods")
        self.node_informer = factory.informer("nodes")
        self.rev_informer = factory.informer("controllerrevisions")
        self.ds_informer.add_handler(on_add=self._ds_changed, on_update=lambda o, n: self._ds_changed(n),
                                     on_delete=self._ds_deleted)
        self.pod_informer.add_handler(on_add=self._pod_added, on_update=self._pod_updated,
                                      on_delete=self._pod_deleted)
        self.node_informer.add_handler(on_add=self._node_added, on_update=self._node_updated,
                                       on_delete=self._node_changed)
        self.rev_informer.add_handler(on_add=self._owned_changed, on_update=lambda o, n: self._owned_changed(n),
                                      on_delete=self._owned_changed)
        self.informers += [self.ds_informer, self.pod_informer, self.node_informer, self.rev_informer]

    # -- handlers ---------------------------------------------------------------------

    def _ds_changed(self, ds: dict) -> None:
        self.enqueue(key_of(ds))

    def _ds_deleted(self, ds: dict) -> None:
        self.expectations.delete(key_of(ds))
        self.enqueue(key_of(ds))

    def _owner_key(self, obj: dict) -> str | None:
        ref = controller_of(obj)
        if ref is None or ref.get("kind") != "DaemonSet" or not str(ref.get("apiVersion", "")).startswith("apps/"):
            return None
        key = f"{obj['metadata'].get('namespace')}/{ref.get('name')}"
        ds = self.ds_informer.store.get(key)
        return key if ds is not None and ds["metadata"].get("uid") == ref.get("uid") else None

    def _matching(self, obj: dict) -> list[str]:
        labels = obj["metadata"].get("labels") or {}
        out = []
        for ds in self.ds_informer.store.by_index(NAMESPACE, obj["metadata"].get("namespace", "")):
            try:
                sel = selector_of(ds)
            except errors.APIError:
                continue
            if not sel.empty and sel.matches(labels):
                out.append(key_of(ds))
        return out

    def _owned_changed(self, obj: dict) -> None:
        """Enqueue the DaemonSet that controls `obj`; for an orphan, every one that may
        adopt it. What another controller owns is none of ours."""
        if controller_of(obj) is not None:
            key = self._owner_key(obj)
            if key is not None:
                self.enqueue(key)
            return
        for k in self._matching(obj):
            self.enqueue(k)

    def _pod_added(self, pod: dict) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self._pod_deleted(pod)
            return
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
        self._owned_changed(pod)

    def _pod_updated(self, old: dict, new: dict) -> None:
        if new["metadata"].get("deletionTimestamp"):
            self._pod_deleted(new)
            return
        prev, cur = self._owner_key(old), self._owner_key(new)
        if prev and prev != cur:
            self.enqueue(prev)
        self._owned_changed(new)
        key = cur
        if key is not None and not is_pod_ready(old) and is_pod_ready(new):
            ds = self.ds_informer.store.get(key)
            mrs = ((ds or {}).get("spec") or {}).get("minReadySeconds") or 0
            if mrs:
                self.queue.add_after(key, float(mrs) + 1.0)

    def _pod_deleted(self, pod: dict) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, key_of(pod))
            self.enqueue(key)

    def _node_added(self, node: dict) -> None:
        for ds in self.ds_informer.store.list():
            if should_run(ds, node)[0]:
                self.enqueue(key_of(ds))

    def _node_changed(self, node: dict) -> None:
        for ds in self.ds_informer.store.list():
            self.enqueue(key_of(ds))

    def _node_updated(self, old: dict, new: dict) -> None:
        # Only labels and taints decide eligibility (shouldIgnoreNodeUpdate); a DaemonSet
        # looks again only if the change made a difference to it.
        if (old["metadata"].get("labels") == new["metadata"].get("labels")
                and (old.get("spec") or {}).get("taints") == (new.get("spec") or {}).get("taints")):
            return
        for ds in self.ds_informer.store.list():
            if should_run(ds, old) != should_run(ds, new):
                self.enqueue(key_of(ds))

    # -- reading ----------------------------------------------------------------------

    async def _daemon_pods(self, ds: dict, selector: Selector) -> list[dict]:
        """Our pods: owned and matching, after adopting matching orphans and releasing
        owned ones that stopped matching (ClaimPods)."""
        ns, uid = ds["metadata"]["namespace"], ds["metadata"]["uid"]
        store = self.pod_informer.store
        mine, undecided = [], []
        owned = set(store.index_keys(OWNER_UID, uid))
        for key in owned:
            pod = store.get(key)
            if pod is None or (controller_of(pod) or {}).get("uid") != uid:
                continue
            (mine if selector.matches(pod["metadata"].get("labels") or {}) else undecided).append(pod)
        for pod in store.by_index(NAMESPACE, ns):
            if controller_of(pod) is None and not pod["metadata"].get("deletionTimestamp") \
                    and selector.matches(pod["metadata"].get("labels") or {}):
                undecided.append(pod)
        if undecided and not ds["metadata"].get("deletionTimestamp"):
            mine += await claim(self.client, ds, "daemonsets", selector, undecided, "pods")
        return mine

    def _by_node(self, pods: list[dict]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for pod in pods:
            out.setdefault(target_node(pod), []).append(pod)
        return out

    # -- reconcile --------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        ds = self.ds_informer.store.get(key)
        if ds is None:
            self.expectations.delete(key)
            for k in [k for k in self._backoff if k[0] == key]:
                del self._backoff[k]
            return
        try:
            selector = selector_of(ds)
        except errors.APIError as exc:
            self._event(ds, WARNING, "SelectingAll", f"Invalid selector: {exc.message}")
            return
        if selector.empty:
            self._event(ds, WARNING, "SelectingAll",
                        "This daemon set is selecting all pods. A non-empty selector is required.")
            return
        if ds["metadata"].get("deletionTimestamp"):
            return
        nodes = self.node_informer.store.list()
        cur, old = await self._construct_history(ds, selector)
        hash_ = (cur["metadata"].get("labels") or {}).get(HASH_LABEL, "")
        pods = await self._daemon_pods(ds, selector)
        if not self.expectations.satisfied(key):
            # Counts only: the generation is not observed until a sync has acted on it.
            await self._update_status(key, ds, nodes, self._by_node(pods), hash_, observe=False)
            return
        await self._manage(key, ds, nodes, pods, hash_)
        if self.expectations.satisfied(key) and _rolling(ds) is not None:
            pods = await self._daemon_pods(ds, selector)
            await self._rolling_update(key, ds, nodes, pods, hash_)
        await self._cleanup_history(ds, pods, cur, old)
        await self._update_status(key, ds, nodes, self._by_node(pods), hash_)

    # -- history ----------------------------------------------------------------------

    async def _construct_history(self, ds: dict, selector: Selector) -> tuple[dict, list[dict]]:
        ns = ds["metadata"]["namespace"]
        revisions = await history.claim_revisions(
            self.client, ds, "daemonsets", selector, self.rev_informer.store.by_index(NAMESPACE, ns))
        patch = history.revision_bytes(template_patch(ds))
        current = [r for r in revisions if history.revision_bytes(r.get("data")) == patch]
        old = [r for r in revisions if r not in current]
        next_number = history.next_revision(old)
        if not current:
            cur = await self._snapshot(ds, next_number)
        else:
            current = history.sort_revisions(current)
            cur = current[-1]
            for dup in current[:-1]:  # dedupCurHistories: keep the newest
                try:
                    await self.client.delete("controllerrevisions", dup["metadata"]["name"], namespace=ns)
                except errors.NotFound:
                    pass
            if cur.get("revision", 0) < next_number:
                cur = await history.update_revision(self.client, cur, next_number)
        return cur, old

    async def _snapshot(self, ds: dict, number: int) -> dict:
        md = ds["metadata"]
        count = (ds.get("status") or {}).get("collisionCount")
        hash_ = compute_hash((ds.get("spec") or {}).get("template") or {}, count)
        labels = (((ds.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        rev = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
               "metadata": {"name": f"{md['name']}-{hash_}", "namespace": md["namespace"],
                            "labels": {**labels, HASH_LABEL: hash_},
                            "ownerReferences": [controller_ref(ds)]},
               "data": template_patch(ds), "revision": number}
        if md.get("annotations"):
            rev["metadata"]["annotations"] = dict(md["annotations"])
        try:
            return await self.client.create(rev, namespace=md["namespace"])
        except errors.AlreadyExists:
            existing = await self.client.get("controllerrevisions", rev["metadata"]["name"], namespace=md["namespace"])
            if history.revision_bytes(existing.get("data")) == history.revision_bytes(rev["data"]):
                return existing
            fresh = await self.client.get("daemonsets", md["name"], namespace=md["namespace"])
            if (fresh.get("status") or {}).get("collisionCount") != count:
                raise errors.Conflict(f"found a stale collision count ({count}) of DaemonSet "
                                      f"{md['name']!r} while processing; will retry until it is updated") from None
            status = dict(fresh.get("status") or {})
            status["collisionCount"] = (count or 0) + 1
            await self.client.update_status({**fresh, "status": status})
            raise errors.Conflict(f"hash collision for DaemonSet {md['name']!r}: "
                                  f"collisionCount bumped to {status['collisionCount']}") from None

    async def _cleanup_history(self, ds: dict, pods: list[dict], cur: dict, old: list[dict]) -> None:
        limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else limit
        if len(old) <= limit:
            return
        live_hashes = {(p["metadata"].get("labels") or {}).get(HASH_LABEL) for p in pods}
        live = {r["metadata"]["name"] for r in old
                if (r["metadata"].get("labels") or {}).get(HASH_LABEL) in live_hashes}
        live.add(cur["metadata"]["name"])
        await history.truncate_history(self.client, old, live, limit)

    # -- manage -----------------------------------------------------------------------

    def _backoff_ok(self, key: str, node: str) -> bool:
        entry = self._backoff.get((key, node))
        return entry is None or self.clock.monotonic() >= entry[0]

    def _backoff_next(self, key: str, node: str) -> float:
        _, delay = self._backoff.get((key, node), (0.0, BACKOFF_INITIAL / 2))
        delay = min(delay * 2, BACKOFF_MAX)
        self._backoff[(key, node)] = (self.clock.monotonic() + delay, delay)
        return delay

    async def _manage(self, key: str, ds: dict, nodes: list[dict], pods: list[dict], hash_: str) -> None:
        spec = pod_spec_for(ds)
        mrs = (ds.get("spec") or {}).get("minReadySeconds") or 0
        by_node = self._by_node(pods)
        surge = _rolling(ds) is not None and surge_and_unavailable(ds, 1)[0] > 0
        needing: list[str] = []
        to_delete: list[dict] = []
        node_names = set()
        for node in nodes:
            name = node["metadata"]["name"]
            node_names.add(name)
            run, keep = should_run(ds, node, spec)
            daemon_pods = by_node.get(name, [])
            if run and not daemon_pods:
                needing.append(name)
            elif keep:
                running = []
                for pod in daemon_pods:
                    if pod["metadata"].get("deletionTimestamp"):
                        continue
                    phase = (pod.get("status") or {}).get("phase")
                    if phase == "Failed":
                        if not self._backoff_ok(key, name):
                            continue  # keep fighting a rejecting kubelet at a slower pace
                        delay = self._backoff_next(key, name)
                        self.queue.add_after(key, delay)
                        self._event(ds, WARNING, "FailedDaemonPod",
                                    f"Found failed daemon pod {pod['metadata']['namespace']}/"
                                    f"{pod['metadata']['name']} on node {name}, will try to kill it")
                        to_delete.append(pod)
                    elif phase == "Succeeded":
                        self._event(ds, NORMAL, "SucceededDaemonPod",
                                    f"Found succeeded daemon pod {pod['metadata']['namespace']}/"
                                    f"{pod['metadata']['name']} on node {name}, will try to delete it")
                        to_delete.append(pod)
                    else:
                        running.append(pod)
                running = _by_age(running)
                if not surge:
                    to_delete += running[1:]
                    continue
                if len(running) <= 1:
                    if not running and run:
                        needing.append(name)  # surging: a node needs one pod not being deleted
                    continue
                # Two pods at most: the oldest updated one and the oldest old one, and the
                # old one only while it is ready and the updated one is not yet available.
                oldest_new = oldest_old = None
                for pod in running:
                    if (pod["metadata"].get("labels") or {}).get(HASH_LABEL) == hash_:
                        if oldest_new is None:
                            oldest_new = pod
                            continue
                    elif oldest_old is None:
                        oldest_old = pod
                        continue
                    to_delete.append(pod)
                if oldest_new is not None and oldest_old is not None and (
                        not is_pod_ready(oldest_old) or is_pod_available(oldest_new, mrs, self.now())):
                    to_delete.append(oldest_old)
            elif daemon_pods:
                to_delete += [p for p in daemon_pods if not p["metadata"].get("deletionTimestamp")]
        # Unscheduled pods aimed at nodes that are gone: nothing else will ever remove them.
        for node, node_pods in by_node.items():
            if node not in node_names:
                to_delete += [p for p in node_pods if not (p.get("spec") or {}).get("nodeName")
                              and not p["metadata"].get("deletionTimestamp")]
        await self._sync_nodes(key, ds, to_delete, needing, hash_)

    async def _sync_nodes(self, key: str, ds: dict, to_delete: list[dict], nodes: list[str], hash_: str) -> None:
        creates = nodes[:self.burst_replicas]
        deletes = to_delete[:self.burst_replicas]
        self.expectations.expect(key, len(creates), [key_of(p) for p in deletes])
        errors_seen: list[BaseException] = []
        if creates:
            template = (ds.get("spec") or {}).get("template") or {}
            tmd = template.get("metadata") or {}
            spec = pod_spec_for(ds)
            generation = template_generation(ds)
            labels = {**(tmd.get("labels") or {}), HASH_LABEL: hash_}
            if generation is not None:
                labels[GENERATION_LABEL] = generation
            md = ds["metadata"]
            queue = list(creates)

            async def create() -> None:
                node = queue.pop(0)
                pod_md = {"generateName": f"{md['name']}-", "namespace": md["namespace"],
                          "labels": dict(labels), "ownerReferences": [controller_ref(ds)]}
                for f in ("annotations", "finalizers"):
                    if tmd.get(f):
                        pod_md[f] = copy.deepcopy(tmd[f])
                pod_spec = copy.deepcopy(spec)
                pod_spec["affinity"] = node_name_affinity(pod_spec.get("affinity"), node)
                try:
                    created = await self.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": pod_md,
                                                        "spec": pod_spec}, namespace=md["namespace"])
                except errors.APIError as exc:
                    self._event(ds, WARNING, "FailedCreate", f"Error creating: {exc.message}")
                    raise
                self._event(ds, NORMAL, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
            successes, err = await slow_start_batch(len(creates), create)
            for _ in range(len(creates) - successes):
                self.expectations.creation_observed(key)
            if err is not None:
                errors_seen.append(err)

        async def delete(pod: dict) -> None:
            pmd = pod["metadata"]
            try:
                await self.client.delete("pods", pmd["name"], namespace=pmd["namespace"])
            except errors.NotFound:
                self.expectations.deletion_observed(key, key_of(pod))
                return
            except errors.APIError as exc:
                self.expectations.deletion_observed(key, key_of(pod))
                self._event(ds, WARNING, "FailedDelete", f"Error deleting: {exc.message}")
                raise
            self._event(ds, NORMAL, "SuccessfulDelete", f"Deleted pod: {pmd['name']}")
        results = await asyncio.gather(*(delete(p) for p in deletes), return_exceptions=True)
        errors_seen += [r for r in results if isinstance(r, BaseException)]
        if errors_seen:
            raise errors_seen[0]

    # -- rolling update ---------------------------------------------------------------

    async def _rolling_update(self, key: str, ds: dict, nodes: list[dict], pods: list[dict], hash_: str) -> None:
        spec = pod_spec_for(ds)
        by_node = self._by_node(pods)
        node_by_name = {n["metadata"]["name"]: n for n in nodes}
        desired = sum(1 for n in nodes if should_run(ds, n, spec)[0])
        max_surge, max_unavailable = surge_and_unavailable(ds, desired)
        mrs = (ds.get("spec") or {}).get("minReadySeconds") or 0
        now = self.now()
        generation = template_generation(ds)

        def available(pod: dict) -> bool:
            return is_pod_available(pod, mrs, now)

        to_delete: list[dict] = []
        if max_surge == 0:
            unavailable = 0
            replacements: list[dict] = []
            candidates: list[dict] = []
            for _, node_pods in sorted(by_node.items()):
                new, old, ok = find_updated_pods(node_pods, hash_, generation)
                if not ok or (new is None) == (old is None):
                    unavailable += 1  # the manage loop creates or trims here
                elif new is not None:
                    if not available(new):
                        unavailable += 1
                elif old is not None:
                    if not available(old):
                        replacements.append(old)
                        unavailable += 1
                    elif unavailable < max_unavailable:
                        candidates.append(old)
            room = max(0, min(max_unavailable - unavailable, len(candidates)))
            to_delete = replacements + candidates[:room]
            await self._sync_nodes(key, ds, to_delete, [], hash_)
            return

        surge_count = available_count = 0
        allowed_new: list[str] = []
        candidate_new: list[str] = []
        sunset: list[dict] = []
        for name, node_pods in sorted(by_node.items()):
            new, old, ok = find_updated_pods(node_pods, hash_, generation)
            if not ok:
                surge_count += 1
                continue
            if old is not None:
                available_count += available(old)
            elif new is not None:
                available_count += available(new)
            if old is None:
                continue
            node = node_by_name.get(name)
            if new is None:
                runs = node is not None and should_run(ds, node, spec)[0]
                if not available(old):
                    if not runs:
                        to_delete.append(old)
                    else:
                        allowed_new.append(name)
                elif not runs:
                    sunset.append(old)
                elif surge_count < max_surge:
                    candidate_new.append(name)
            elif not available(new):
                surge_count += 1
            else:
                to_delete.append(old)
        deletable = available_count - desired
        if deletable > 0:
            to_delete += [p for p in sunset[:deletable] if not p["metadata"].get("deletionTimestamp")]
        room = max(0, min(max_surge - surge_count, len(candidate_new)))
        await self._sync_nodes(key, ds, to_delete, allowed_new + candidate_new[:room], hash_)

    # -- status -----------------------------------------------------------------------

    async def _update_status(self, key: str, ds: dict, nodes: list[dict], by_node: dict[str, list[dict]],
                             hash_: str, *, observe: bool = True) -> None:
        spec = pod_spec_for(ds)
        mrs = (ds.get("spec") or {}).get("minReadySeconds") or 0
        now = self.now()
        generation = template_generation(ds)
        desired = current = ready = available = updated = misscheduled = 0
        for node in nodes:
            run, _ = should_run(ds, node, spec)
            node_pods = by_node.get(node["metadata"]["name"]) or []
            if run:
                desired += 1
                if not node_pods:
                    continue
                current += 1
                pod = _by_age(node_pods)[0]
                if is_pod_ready(pod):
                    ready += 1
                    if is_pod_available(pod, mrs, now):
                        available += 1
                if is_pod_updated(pod, hash_, generation):
                    updated += 1
            elif node_pods:
                misscheduled += 1
        status = dict(ds.get("status") or {})
        status.update({"desiredNumberScheduled": desired, "currentNumberScheduled": current,
                       "numberMisscheduled": misscheduled, "numberReady": ready})
        if observe:
            status["observedGeneration"] = ds["metadata"].get("generation", 0)
        for field, value in (("updatedNumberScheduled", updated), ("numberAvailable", available),
                             ("numberUnavailable", desired - available)):
            if value:
                status[field] = value
            else:
                status.pop(field, None)  # omitempty
        if status != (ds.get("status") or {}):
            try:
                await self.client.update_status({**ds, "status": status})
            except errors.Conflict:
                md = ds["metadata"]
                fresh = await self.client.get("daemonsets", md["name"], namespace=md["namespace"])
                if fresh["metadata"].get("generation") != ds["metadata"].get("generation"):
                    raise
                status["collisionCount"] = (fresh.get("status") or {}).get("collisionCount")
                if status["collisionCount"] is None:
                    status.pop("collisionCount")
                await self.client.update_status({**fresh, "status": status})
        if mrs and ready != available:
            self.queue.add_after(key, float(mrs))

    # -- events -----------------------------------------------------------------------

    def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(obj, type_, reason, message)

    async def _report_invalid(self, key, exc: errors.APIError) -> None:
        ds = self.ds_informer.store.get(key)
        if ds is not None:
            self._event(ds, WARNING, "FailedCreate", exc.message)

