"""The ReplicaSet controller (pkg/controller/replicaset): exactly `spec.replicas` active
pods matching the selector, each owned by the ReplicaSet.

What it guarantees, per ReplicaSet:
- Pods are claimed as Kubernetes' ControllerRefManager claims them: matching orphans
  are adopted (a patch adding our controller ownerReference, after re-reading the
  ReplicaSet from the API to be sure it is still the same live object), owned pods
  that stop matching are released (the reference removed), and a pod some other
  controller owns is never touched.
- Only active pods count: not Succeeded/Failed and not being deleted.
- Missing pods are created from the template (generateName `<rs>-`, our controller
  reference with `blockOwnerDeletion`) in slow-start batches of 1, 2, 4, ...: a batch
  that fails stops the rest, so a broken template costs one failed create, not 500.
  Surplus pods are deleted in ActivePodsWithRanks order: unscheduled, then pending,
  then not ready, then a lower `controller.kubernetes.io/pod-deletion-cost`, then
  pods doubled up on a node with their siblings, then the most recently ready, the
  most restarted, the newest.
- Expectations (ControllerExpectations): the creates and deletes a sync issues are
  remembered until the pod informer has observed each of them (or five minutes have
  passed). Until then the ReplicaSet's status is still refreshed but its pods are not
  counted for creating or deleting, so a watch that lags behind our own writes never
  causes over-creation or over-deletion.
- Status (`replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`
  counting `minReadySeconds` from the Ready condition's `lastTransitionTime`,
  `observedGeneration`, and the `ReplicaFailure` condition while creates or deletes
  fail) is written through the status subresource, and only when it changed.

Concurrency: one asyncio loop. Event handlers do only expectation bookkeeping (as
Kubernetes' do) and enqueue ReplicaSet keys; the work queue never hands one key to
two workers, so the expectations of one ReplicaSet are never raced by its own syncs.
"""
from __future__ import annotations

import asyncio
import copy
import itertools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from client.clock import Clock
from client.events import NORMAL, WARNING, EventRecorder
from client.informer import LABEL, NAMESPACE, OWNER_UID, key_of
from controller_manager.controller import Controller
from controller_manager.controller_utils import (
    Expectations, Now, claim, controller_of, deletion_order, get_condition, is_pod_active,
    is_pod_ready, parse_time, pod_from_template, ready_condition, remove_condition, rfc3339,
    selector_of, set_condition, slow_start_batch, utcnow)
from machinery import errors
from machinery.labels import Selector

log = logging.getLogger("minik8s.controller.replicaset")

BURST_REPLICAS = 500            # creates or deletes per sync (Kubernetes' BurstReplicas)
REPLICA_FAILURE = "ReplicaFailure"


class PodView(NamedTuple):
    """What a sync reads of one version of a pod, extracted once: the informer puts a
    new object in its cache for every change, so object identity tells versions apart."""
    obj: dict
    namespace: str
    labels: dict
    controller: str | None  # the controller's uid ("" if it names none); None: an orphan
    active: bool
    ready: bool
    ready_at: datetime | None


def pod_view(pod: dict) -> PodView:
    md = pod["metadata"]
    ref = controller_of(pod)
    cond = ready_condition(pod)
    ready = cond is not None and cond.get("status") == "True"
    return PodView(pod, md.get("namespace", ""), md.get("labels") or {},
                   None if ref is None else ref.get("uid") or "", is_pod_active(pod), ready,
                   parse_time(cond.get("lastTransitionTime")) if ready else None)


# --- the controller ---------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ReplicaSetOptions:
    burst_replicas: int = BURST_REPLICAS  # creates or deletes one sync may issue


class ReplicaSetController(Controller):
    """The one reconciler for ReplicaSets and (through ReplicationControllerController,
    which changes only what is named here) ReplicationControllers, as Kubernetes runs
    its replication manager on the ReplicaSet controller's code."""
    name = "replicaset"
    kind = "ReplicaSet"
    resource = "replicasets"
    group = "apps"
    Options = ReplicaSetOptions

    def __init__(self, client, factory, *, recorder: EventRecorder | None = None,
                 clock: Clock | None = None, options: ReplicaSetOptions | None = None,
                 now: Now = utcnow):
        super().__init__(client, clock=clock, recorder=recorder)
        options = options or ReplicaSetOptions()
        self.now = now
        self.burst_replicas = options.burst_replicas
        self.expectations = Expectations(self.clock)
        self._views: dict[str, PodView] = {}  # pod key -> view of the version last read
        self.rs_informer = factory.informer(self.resource)
        self.pod_informer = factory.informer("pods")
        self.rs_informer.add_handler(on_add=self._rs_changed, on_update=lambda o, n: self._rs_changed(n),
                                     on_delete=self._rs_deleted)
        self.pod_informer.add_handler(on_add=self._pod_added, on_update=self._pod_updated,
                                      on_delete=self._pod_deleted)
        self.informers += [self.rs_informer, self.pod_informer]

    def selector(self, rs: dict) -> Selector:
        """The owner's `spec.selector` (a LabelSelector; BadRequest if malformed)."""
        return selector_of(rs)

    # -- handlers: keys and expectation bookkeeping only ----------------------------

    def _rs_changed(self, rs: dict) -> None:
        self.enqueue(key_of(rs))

    def _rs_deleted(self, rs: dict) -> None:
        key = key_of(rs)
        self.expectations.delete(key)
        self.enqueue(key)

    def _resolve(self, namespace: str, ref: dict | None) -> str | None:
        """The key of the ReplicaSet `ref` names, if it is one we have (uid checked)."""
        if ref is None or ref.get("kind") != self.kind or \
                ref.get("apiVersion", "").rpartition("/")[0] != self.group:
            return None
        key = f"{namespace}/{ref.get('name')}"
        rs = self.rs_informer.store.get(key)
        if rs is None or rs["metadata"].get("uid") != ref.get("uid"):
            return None
        return key

    def _matching_replicasets(self, pod: dict) -> list[str]:
        labels = pod["metadata"].get("labels") or {}
        keys = []
        for rs in self.rs_informer.store.by_index(NAMESPACE, pod["metadata"]["namespace"]):
            try:
                sel = self.selector(rs)
            except errors.APIError:
                continue
            if not sel.empty and sel.matches(labels):
                keys.append(key_of(rs))
        return keys

    def _pod_added(self, pod: dict) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self._pod_deleted(pod)  # seen first as terminating (e.g. after a restart)
            return
        ns = pod["metadata"]["namespace"]
        ref = controller_of(pod)
        if ref is not None:
            key = self._resolve(ns, ref)
            if key is not None:
                self.expectations.creation_observed(key)
                self.enqueue(key)
            return
        for key in self._matching_replicasets(pod):  # an orphan: whoever may adopt it
            self.enqueue(key)

    def _pod_updated(self, old: dict, new: dict) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        ns = new["metadata"]["namespace"]
        labels_changed = old["metadata"].get("labels") != new["metadata"].get("labels")
        if new["metadata"].get("deletionTimestamp"):
            # Terminating counts as gone now; the later delete event is then a no-op
            # for expectations, which track pods by key.
            self._pod_deleted(new)
            if labels_changed:
                self._pod_deleted(old)
            return
        cur, prev = controller_of(new), controller_of(old)
        ref_changed = (cur or {}).get("uid") != (prev or {}).get("uid")
        if ref_changed and prev is not None and (key := self._resolve(ns, prev)):
            self.enqueue(key)
        if cur is not None:
            key = self._resolve(ns, cur)
            if key is not None:
                self.enqueue(key)
                rs = self.rs_informer.store.get(key)
                mrs = (rs.get("spec") or {}).get("minReadySeconds") or 0
                if mrs and not is_pod_ready(old) and is_pod_ready(new):
                    # Becomes available later without another event: look again then
                    # (a second late, as timestamps have whole seconds).
                    self.queue.add_after(key, float(mrs) + 1.0)
            return
        if labels_changed or ref_changed:
            for key in self._matching_replicasets(new):
                self.enqueue(key)

    def _pod_deleted(self, pod: dict) -> None:
        self._views.pop(key_of(pod), None)
        key = self._resolve(pod["metadata"]["namespace"], controller_of(pod))
        if key is not None:
            self.expectations.deletion_observed(key, key_of(pod))
            self.enqueue(key)

    # -- reading the cache --------------------------------------------------------------

    def _index_keys(self, namespace: str, selector: Selector) -> list[str]:
        """Keys of the pods that may match: through the label index when the selector
        pins labels to one value (it usually does: the narrowest wins, e.g.
        `pod-template-hash` rather than `app` for a Deployment's ReplicaSet), else
        the whole namespace. A superset: callers still match."""
        store = self.pod_informer.store
        keys = None
        for req in selector.requirements:
            value = selector.requires_exact_match(req.key)
            if value is not None:
                found = store.index_keys(LABEL, f"{req.key}={value}")
                if keys is None or len(found) < len(keys):
                    keys = found
        return store.index_keys(NAMESPACE, namespace) if keys is None else keys

    def pods_selected(self, namespace: str, selector: Selector) -> list[dict]:
        """Pods in `namespace` matching `selector`."""
        out = []
        for key in self._index_keys(namespace, selector):
            pod = self.pod_informer.store.get(key)
            if (pod is not None and pod["metadata"].get("namespace") == namespace
                    and selector.matches(pod["metadata"].get("labels"))):
                out.append(pod)
        return out

    def _claimable(self, rs: dict, selector: Selector) -> tuple[list[PodView], list[dict]]:
        """One pass over the active pods that could be ours (matching, or owned by us):
        -> (those we own and that match, those `claim` must decide on: matching orphans
        to adopt and owned ones that stopped matching, to release). Pods another
        controller owns are left out. This loop runs over every pod of the ReplicaSet on
        every sync, so it reads little of each (see PodView)."""
        namespace, uid = rs["metadata"]["namespace"], rs["metadata"]["uid"]
        keys = self._index_keys(namespace, selector)
        selected = set(keys)
        owned_elsewhere = [k for k in self.pod_informer.store.index_keys(OWNER_UID, uid) if k not in selected]
        mine, undecided = [], []
        get, views = self.pod_informer.store.get, self._views
        for key in itertools.chain(keys, owned_elsewhere):
            pod = get(key)
            if pod is None:
                continue
            view = views.get(key)
            if view is None or view.obj is not pod:
                view = views[key] = pod_view(pod)
            if not view.active or view.namespace != namespace:
                continue
            if view.controller is None:
                if selector.matches(view.labels):
                    undecided.append(pod)  # an orphan to adopt
            elif view.controller == uid:
                if selector.matches(view.labels):
                    mine.append(view)
                else:
                    undecided.append(pod)  # ours, no longer matching: to release
        return mine, undecided

    def _related_pods(self, rs: dict) -> list[dict]:
        """Pods of every ReplicaSet with the same controller (a Deployment's old and new
        ReplicaSets), for ranking pods doubled up on a node."""
        ref = controller_of(rs)
        if ref is None:
            return []
        seen: dict[str, dict] = {}
        for other in self.rs_informer.store.by_index(OWNER_UID, ref["uid"]):
            if (controller_of(other) or {}).get("uid") != ref["uid"]:
                continue
            try:
                sel = self.selector(other)
            except errors.APIError:
                continue
            for p in self.pods_selected(other["metadata"]["namespace"], sel):
                seen.setdefault(p["metadata"]["uid"], p)
        return list(seen.values())

    # -- reconcile ------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        rs = self.rs_informer.store.get(key)
        if rs is None:
            self.expectations.delete(key)
            return
        try:
            selector = self.selector(rs)
        except errors.APIError as exc:
            log.warning("replicaset %s: bad selector: %s", key, exc.message)
            return
        needs_sync = self.expectations.satisfied(key)
        views, undecided = self._claimable(rs, selector)
        if undecided:
            views += [pod_view(p) for p in await self.claim_pods(rs, selector, undecided)]
        pods = [v.obj for v in views]

        manage_error: BaseException | None = None
        if needs_sync and not rs["metadata"].get("deletionTimestamp"):
            try:
                await self.manage_replicas(key, rs, pods)
            except errors.APIError as exc:
                manage_error = exc
        status = self.calculate_status(rs, views, manage_error)
        updated = await self.update_status(rs, status)
        if manage_error is not None:
            raise manage_error
        spec, st = updated.get("spec") or {}, updated.get("status") or {}
        mrs = spec.get("minReadySeconds") or 0
        if mrs and st.get("readyReplicas", 0) == spec.get("replicas", 1) != st.get("availableReplicas", 0):
            self.queue.add_after(key, float(mrs))

    async def claim_pods(self, rs: dict, selector: Selector, pods: list[dict]) -> list[dict]:
        return await claim(self.client, rs, self.resource, selector, pods, "pods")

    async def manage_replicas(self, key: str, rs: dict, pods: list[dict]) -> None:
        diff = len(pods) - (rs["spec"].get("replicas", 1))
        if diff < 0:
            n = min(-diff, self.burst_replicas)
            # Expect before creating: the watch may report a pod before its POST returns.
            self.expectations.expect_creations(key, n)
            template = rs["spec"].get("template") or {}

            async def create() -> None:
                pod = pod_from_template(rs, template)
                try:
                    created = await self.client.create(pod, namespace=rs["metadata"]["namespace"])
                except errors.APIError as exc:
                    self._event(rs, WARNING, "FailedCreate", f"Error creating: {exc.message}")
                    raise
                self._event(rs, NORMAL, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
            successes, err = await slow_start_batch(n, create)
            for _ in range(n - successes):
                # Never created, so never observed: stop waiting for them.
                self.expectations.creation_observed(key)
            if err is not None:
                raise err
        elif diff > 0:
            n = min(diff, self.burst_replicas)
            victims = deletion_order(pods, self._related_pods(rs))[:n] if n < len(pods) else pods[:n]
            self.expectations.expect_deletions(key, [key_of(p) for p in victims])

            async def delete(pod: dict) -> None:
                md = pod["metadata"]
                try:
                    await self.client.delete("pods", md["name"], namespace=md["namespace"])
                except errors.NotFound:
                    return  # already gone: the watch reports it
                except errors.APIError as exc:
                    self.expectations.deletion_observed(key, key_of(pod))
                    self._event(rs, WARNING, "FailedDelete", f"Error deleting: {exc.message}")
                    raise
                self._event(rs, NORMAL, "SuccessfulDelete", f"Deleted pod: {md['name']}")
            results = await asyncio.gather(*(delete(p) for p in victims), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise failed[0]

    def calculate_status(self, rs: dict, pods: list[PodView], manage_error: BaseException | None) -> dict:
        spec = rs.get("spec") or {}
        status = copy.deepcopy(rs.get("status") or {})
        template_labels = (((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}).items()
        mrs = spec.get("minReadySeconds") or 0
        now = self.now()
        available_before = now - timedelta(seconds=mrs)
        fully = ready = available = 0
        for pod in pods:
            if template_labels <= pod.labels.items():
                fully += 1
            if pod.ready:
                ready += 1
                # podutil.IsPodAvailable: Ready for minReadySeconds, by lastTransitionTime.
                if not mrs or (pod.ready_at is not None and pod.ready_at < available_before):
                    available += 1
        failure = get_condition(status, REPLICA_FAILURE)
        if manage_error is not None and failure is None:
            reason = "FailedCreate" if len(pods) < spec.get("replicas", 1) else "FailedDelete"
            message = getattr(manage_error, "message", None) or str(manage_error)
            status["conditions"] = set_condition(status.get("conditions") or [], {
                "type": REPLICA_FAILURE, "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": rfc3339(now)})
        elif manage_error is None and failure is not None:
            remove_condition(status, REPLICA_FAILURE)
        status["replicas"] = len(pods)
        for field, value in (("fullyLabeledReplicas", fully), ("readyReplicas", ready),
                             ("availableReplicas", available),
                             ("observedGeneration", rs["metadata"].get("generation", 0))):
            if value:
                status[field] = value
            else:
                status.pop(field, None)  # omitempty, as Kubernetes serializes it
        return status

    async def update_status(self, rs: dict, status: dict) -> dict:
        if status == (rs.get("status") or {}):
            return rs
        return await self.client.update_status({**rs, "status": status})

    def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(obj, type_, reason, message)

    async def _report_invalid(self, key, exc: errors.APIError) -> None:
        rs = self.rs_informer.store.get(key)
        if rs is not None:
            self._event(rs, WARNING, "FailedCreate", exc.message)
