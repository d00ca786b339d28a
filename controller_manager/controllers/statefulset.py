"""The StatefulSet controller (pkg/controller/statefulset): pods with stable ordinal names,
stable network identity and stable storage, created, updated and removed in order.

What it guarantees, for a StatefulSet `web` with replicas N and ordinals.start S:
- Its pods are `web-S` .. `web-(S+N-1)`, each owned (controller reference) by the set,
  labelled `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
  `controller-revision-hash`, with hostname = its name and subdomain = serviceName, so
  the headless Service gives it a stable DNS name.
- For each of spec.volumeClaimTemplates a claim `<template>-web-<ordinal>` exists before
  the pod is created, and the pod mounts it (a pod volume of the template's name).
  persistentVolumeClaimRetentionPolicy: whenDeleted Delete makes the set an owner of its
  claims (the garbage collector removes them with the set); whenScaled Delete makes a
  condemned pod (ordinal beyond the replicas) the owner of its claims before it is
  deleted, and a claim kept by a scale back up loses that reference again.
- OrderedReady: at most one pod is created, or removed, at a time: a pod is created only
  when every lower ordinal is Running and Ready (and available for minReadySeconds), and
  the highest ordinal beyond the replicas is removed only when every other pod is
  healthy and nothing else is terminating. Parallel creates and removes all at once.
  A pod that failed (or succeeded) is deleted and created again.
- The template is recorded in ControllerRevisions (controller_manager/history.py):
  status.updateRevision is the current template's, status.currentRevision the one the
  pods below the partition keep. RollingUpdate replaces pods whose revision is not the
  update revision from the highest ordinal down to `partition`, one at a time, or up to
  `maxUnavailable` unhealthy pods at a time, waiting for each to be healthy again;
  OnDelete replaces nothing (a pod deleted by hand comes back at the update revision).
  When every pod is updated and ready, currentRevision becomes updateRevision. Old
  revisions beyond revisionHistoryLimit that no pod uses are deleted.
- status: replicas, readyReplicas, availableReplicas, currentReplicas, updatedReplicas,
  currentRevision, updateRevision, collisionCount, observedGeneration; written only
  when it changed.

Restart safety: nothing is remembered between reconciles but what the API holds. Pods
are created under their ordinal names, so a restarted controller that did not see its
last create gets AlreadyExists, never a second pod.

One asyncio loop; one key per StatefulSet. Pod changes enqueue the pod's controlling
StatefulSet (orphans: every set whose selector matches).
"""
from __future__ import annotations

import copy
import logging
import re
from typing import Any

from client.clock import Clock
from client.events import NORMAL, WARNING, EventRecorder
from client.informer import key_of, split_key
from controller_manager import history
from controller_manager.controller import Controller
from controller_manager.controller_utils import (claim, controller_of, controller_ref, is_pod_available,
                                                 is_pod_ready, selector_of, utcnow)
from machinery import errors

log = logging.getLogger("minik8s.controller.statefulset")

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")


# -- identity -----------------------------------------------------------------------------

def ordinal_of(pod: dict) -> int:
    """The ordinal in a pod's name, -1 if it has none (getParentNameAndOrdinal)."""
    m = _ORDINAL.match(pod["metadata"]["name"])
    return int(m.group(2)) if m else -1


def is_member(sts: dict, pod: dict) -> bool:
    m = _ORDINAL.match(pod["metadata"]["name"])
    return bool(m) and m.group(1) == sts["metadata"]["name"]


def claim_name(template: dict, sts: dict, ordinal: int) -> str:
    return f"{template['metadata']['name']}-{sts['metadata']['name']}-{ordinal}"


def _spec(sts: dict) -> dict:
    return sts.get("spec") or {}


def start_ordinal(sts: dict) -> int:
    return (_spec(sts).get("ordinals") or {}).get("start", 0) or 0


def revision_of(pod: dict) -> str:
    return (pod["metadata"].get("labels") or {}).get(history.HASH_LABEL, "")


def revision_data(sts: dict) -> dict:
    """getPatch: what a revision records, as the strategic merge patch `rollout undo`
    applies: the pod template, replacing the set's."""
    template = copy.deepcopy(_spec(sts).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def apply_revision(sts: dict, revision: dict) -> dict:
    """ApplyRevision: the set with the revision's template."""
    out = copy.deepcopy(sts)
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    out.setdefault("spec", {})["template"] = template
    return out


def new_pod(sts: dict, ordinal: int, revision: str) -> dict:
    """newStatefulSetPod: the pod for `ordinal` from the set's template, with its
    identity and storage."""
    md = sts["metadata"]
    template = _spec(sts).get("template") or {}
    tmd = template.get("metadata") or {}
    name = f"{md['name']}-{ordinal}"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": md["namespace"],
                        "labels": {**(tmd.get("labels") or {}), POD_NAME_LABEL: name,
                                   POD_INDEX_LABEL: str(ordinal), history.HASH_LABEL: revision},
                        "ownerReferences": [controller_ref(sts)]},
           "spec": copy.deepcopy(template.get("spec") or {})}
    if tmd.get("annotations"):
        pod["metadata"]["annotations"] = copy.deepcopy(tmd["annotations"])
    spec = pod["spec"]
    spec["hostname"] = name
    if _spec(sts).get("serviceName"):
        spec["subdomain"] = _spec(sts)["serviceName"]
    claims = {t["metadata"]["name"]: claim_name(t, sts, ordinal)
              for t in _spec(sts).get("volumeClaimTemplates") or []}
    if claims:
        volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in claims]
        volumes += [{"name": n, "persistentVolumeClaim": {"claimName": c}} for n, c in claims.items()]
        spec["volumes"] = volumes
    return pod


def identity_matches(sts: dict, pod: dict) -> bool:
    labels = pod["metadata"].get("labels") or {}
    name = pod["metadata"]["name"]
    return (is_member(sts, pod) and labels.get(POD_NAME_LABEL) == name
            and labels.get(POD_INDEX_LABEL) == str(ordinal_of(pod)))


# -- health ---------------------------------------------------------------------------------

def _phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase", "")


def is_terminating(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_failed(pod: dict) -> bool:
    return _phase(pod) in ("Failed", "Succeeded")


def is_running_and_ready(pod: dict) -> bool:
    return _phase(pod) == "Running" and is_pod_ready(pod)


def is_healthy(pod: dict, min_ready: int = 0) -> bool:
    return (is_running_and_ready(pod) and not is_terminating(pod)
            and is_pod_available(pod, min_ready, utcnow()))


def max_unavailable(sts: dict, replicas: int) -> int:
    """The rolling update's budget of unhealthy pods: maxUnavailable scaled down (at least
    1), or 1 when it is not set."""
    value = ((_spec(sts).get("updateStrategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable")
    if value is None:
        return 1
    if isinstance(value, str) and value.endswith("%"):
        value = int(value[:-1]) * replicas // 100
    return max(int(value), 1)


class StatefulSetController(Controller):
    name = "statefulset"

    def __init__(self, client, factory, *, recorder: EventRecorder | None = None,
                 clock: Clock | None = None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.sets = self.watch(factory.informer("statefulsets"))
        self.pods = factory.informer("pods")
        self.pods.add_handler(on_add=self._pod_changed, on_update=lambda o, n: (self._pod_changed(o),
                                                                                  self._pod_changed(n)),
                              on_delete=self._pod_changed)
        self.revisions = factory.informer("controllerrevisions")
        self.informers += [self.pods, self.revisions]
        self.claims = None
        try:
            self.claims = factory.informer("persistentvolumeclaims")
            self.informers.append(self.claims)
        except errors.NotFound:  # a server without PersistentVolumeClaims: templates cannot be served
            pass

    def _pod_changed(self, pod: dict) -> None:
        md = pod["metadata"]
        ref = controller_of(pod)
        if ref is not None:
            if ref.get("kind") == "StatefulSet":
                self.enqueue(f"{md['namespace']}/{ref['name']}")
            return
        for sts in self.sets.store.by_index("namespace", md.get("namespace", "")):
            try:
                if selector_of(sts).matches(md.get("labels") or {}):
                    self.enqueue(key_of(sts))
            except errors.APIError:
                continue

    # -- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        sts = self.sets.store.get(key)
        if sts is None or is_terminating(sts):
            return
        namespace, _ = split_key(key)
        selector = selector_of(sts)
        uid = sts["metadata"]["uid"]
        candidates = [p for p in self.pods.store.by_index("namespace", namespace)
                      if (controller_of(p) or {}).get("uid") == uid
                      or (controller_of(p) is None and is_member(sts, p))]
        pods = await claim(self.client, sts, "statefulsets", selector, candidates, "pods")
        pods = [p for p in pods if is_member(sts, p)]
        revisions = await history.claim_revisions(
            self.client, sts, "statefulsets", selector,
            self.revisions.store.by_index("namespace", namespace))
        current, update, collisions = await self._revisions(sts, revisions)
        status = await self._update(sts, current, update, pods)
        status["collisionCount"] = collisions
        min_ready = _spec(sts).get("minReadySeconds", 0) or 0
        if min_ready and status["readyReplicas"] > status["availableReplicas"]:
            # Nothing changes when a ready pod becomes available: look again then.
            self.queue.add_after(key, float(min_ready))
        await self._write_status(sts, status, current, update)
        live = {revision_of(p) for p in pods} | {current["metadata"]["name"], update["metadata"]["name"]}
        revisions = history.owned_revisions(sts, self.revisions.store.by_index("namespace", namespace))
        await history.truncate_history(self.client, revisions, live,
                                       _spec(sts).get("revisionHistoryLimit", 10))

    async def _revisions(self, sts: dict, revisions: list[dict]) -> tuple[dict, dict, int | None]:
        """getStatefulSetRevisions: (current revision, update revision, collision count)."""
        revisions = history.sort_revisions(revisions)
        collisions = (sts.get("status") or {}).get("collisionCount")
        labels = ((_spec(sts).get("template") or {}).get("metadata") or {}).get("labels")
        wanted = history.new_revision(sts, labels, revision_data(sts), history.next_revision(revisions),
                                      collisions)
        equal = history.find_equal_revisions(revisions, wanted)
        if equal and equal[-1]["metadata"]["name"] == revisions[-1]["metadata"]["name"]:
            update = equal[-1]  # the newest revision is the template already
        elif equal:
            # A rollback to an older template: that revision becomes the newest.
            update = await history.update_revision(self.client, equal[-1], wanted["revision"])
        else:
            update, collisions = await history.create_revision(self.client, sts, wanted, collisions)
        current_name = (sts.get("status") or {}).get("currentRevision")
        current = next((r for r in revisions if r["metadata"]["name"] == current_name), update)
        return current, update, collisions

    async def _update(self, sts: dict, current: dict, update: dict, pods: list[dict]) -> dict:
        """updateStatefulSet: one pass of creates, deletes and replacements; -> the status."""
        spec = _spec(sts)
        replicas, start = spec.get("replicas", 1), start_ordinal(sts)
        min_ready = spec.get("minReadySeconds", 0) or 0
        monotonic = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition", 0) or 0
        cur_name, upd_name = current["metadata"]["name"], update["metadata"]["name"]
        current_set, update_set = apply_revision(sts, current), apply_revision(sts, update)

        by_ordinal = {ordinal_of(p): p for p in pods}
        slots: list[dict | None] = [by_ordinal.get(o) for o in range(start, start + replicas)]
        condemned = sorted((p for o, p in by_ordinal.items() if not start <= o < start + replicas),
                           key=ordinal_of, reverse=True)
        status = self._count(pods, cur_name, upd_name, min_ready)

        # Pods that ended are replaced.
        for i, pod in enumerate(slots):
            if pod is not None and is_failed(pod) and not is_terminating(pod):
                await self._delete_pod(sts, pod, "recreate")
                slots[i] = None
                if monotonic:
                    return status

        for i, pod in enumerate(slots):
            ordinal = start + i
            if pod is None:
                below_partition = rolling and ordinal < start + partition
                base, rev = (current_set, cur_name) if below_partition else (update_set, upd_name)
                await self._create_pod(sts, base, ordinal, rev)
                if monotonic:
                    return status
                continue
            if is_terminating(pod):
                if monotonic:
                    return status  # wait for it to go before its replacement
                continue
            await self._ensure_claims(sts, ordinal, pod)
            if not is_healthy(pod, min_ready) and monotonic:
                return status

        # Removal, highest ordinal first.
        for pod in condemned:
            if is_terminating(pod):
                if monotonic:
                    return status
                continue
            if monotonic and any(p is None or not is_healthy(p, min_ready) for p in slots):
                return status
            await self._retain_or_orphan_claims(sts, pod, condemned=True)
            await self._delete_pod(sts, pod, "scale down")
            if monotonic:
                return status

        if not rolling:
            return status
        # Rolling update: from the top down to the partition.
        updatable = sorted((p for p in slots if p is not None and ordinal_of(p) >= start + partition),
                           key=ordinal_of, reverse=True)
        budget = max_unavailable(sts, replicas)
        unavailable = sum(1 for p in updatable if not is_healthy(p, min_ready))
        for pod in updatable:
            if revision_of(pod) != upd_name and not is_terminating(pod):
                if unavailable >= budget:
                    return status
                await self._delete_pod(sts, pod, "update")
                unavailable += 1
                if budget == 1:
                    return status
                continue
            if not is_healthy(pod, min_ready) and budget == 1:
                return status  # wait for this one before the next
        return status

    def _count(self, pods: list[dict], cur: str, upd: str, min_ready: int) -> dict:
        status = {"replicas": 0, "readyReplicas": 0, "availableReplicas": 0, "currentReplicas": 0,
                  "updatedReplicas": 0}
        now = utcnow()
        for pod in pods:
            if is_terminating(pod):
                continue
            status["replicas"] += 1
            if is_running_and_ready(pod):
                status["readyReplicas"] += 1
                if is_pod_available(pod, min_ready, now):
                    status["availableReplicas"] += 1
            rev = revision_of(pod)
            status["currentReplicas"] += rev == cur
            status["updatedReplicas"] += rev == upd
        return status

    # -- children ---------------------------------------------------------------------------

    async def _create_pod(self, sts: dict, base: dict, ordinal: int, revision: str) -> None:
        pod = new_pod(base, ordinal, revision)
        await self._ensure_claims(sts, ordinal, None)
        name = pod["metadata"]["name"]
        try:
            await self.client.create(pod, namespace=sts["metadata"]["namespace"])
        except errors.AlreadyExists:
            return  # created by an earlier pass the cache has not shown yet
        except errors.APIError as exc:
            self._event(sts, WARNING, "FailedCreate", f"create Pod {name} in StatefulSet "
                        f"{sts['metadata']['name']} failed error: {exc.message}")
            raise
        self._event(sts, NORMAL, "SuccessfulCreate",
                    f"create Pod {name} in StatefulSet {sts['metadata']['name']} successful")

    async def _delete_pod(self, sts: dict, pod: dict, why: str) -> None:
        md = pod["metadata"]
        log.info("statefulset %s/%s: deleting pod %s (%s)", md["namespace"], sts["metadata"]["name"], md["name"], why)
        try:
            await self.client.delete("pods", md["name"], namespace=md["namespace"],
                                     preconditions={"uid": md["uid"]})
        except (errors.NotFound, errors.Conflict):
            return
        self._event(sts, NORMAL, "SuccessfulDelete",
                    f"delete Pod {md['name']} in StatefulSet {sts['metadata']['name']} successful")

    def _event(self, sts: dict, kind: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(sts, kind, reason, message)

    async def _ensure_claims(self, sts: dict, ordinal: int, pod: dict | None) -> None:
        """createPersistentVolumeClaims, and the owner references the retention policy
        asks for on the claims of a pod that stays."""
        templates = _spec(sts).get("volumeClaimTemplates") or []
        if not templates:
            return
        if self.claims is None:
            raise errors.Invalid("this server serves no PersistentVolumeClaims for volumeClaimTemplates")
        ns = sts["metadata"]["namespace"]
        for template in templates:
            name = claim_name(template, sts, ordinal)
            existing = self.claims.store.get(f"{ns}/{name}")
            if existing is None:
                try:
                    existing = await self.client.get("persistentvolumeclaims", name, namespace=ns)
                except errors.NotFound:
                    existing = None
            if existing is None:
                await self._create_claim(sts, template, name, ordinal)
            elif pod is not None:
                await self._set_claim_refs(sts, existing, pod, condemned=False)

    async def _create_claim(self, sts: dict, template: dict, name: str, ordinal: int) -> None:
        tmd = template.get("metadata") or {}
        match = ((_spec(sts).get("selector") or {}).get("matchLabels") or {})
        claim_obj = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": name, "namespace": sts["metadata"]["namespace"],
                                  "labels": {**(tmd.get("labels") or {}), **match}},
                     "spec": copy.deepcopy(template.get("spec") or {})}
        if tmd.get("annotations"):
            claim_obj["metadata"]["annotations"] = copy.deepcopy(tmd["annotations"])
        if self._policy(sts, "whenDeleted") == "Delete":
            claim_obj["metadata"]["ownerReferences"] = [controller_ref(sts)]
        pod_name = f"{sts['metadata']['name']}-{ordinal}"
        try:
            await self.client.create(claim_obj, namespace=sts["metadata"]["namespace"])
        except errors.AlreadyExists:
            return
        except errors.APIError as exc:
            self._event(sts, WARNING, "FailedCreate", f"create Claim {name} for Pod {pod_name} in StatefulSet "
                        f"{sts['metadata']['name']} failed error: {exc.message}")
            raise
        self._event(sts, NORMAL, "SuccessfulCreate",
                    f"create Claim {name} Pod {pod_name} in StatefulSet {sts['metadata']['name']} success")

    @staticmethod
    def _policy(sts: dict, key: str) -> str:
        return (_spec(sts).get("persistentVolumeClaimRetentionPolicy") or {}).get(key, "Retain")

    async def _retain_or_orphan_claims(self, sts: dict, pod: dict, *, condemned: bool) -> None:
        if self.claims is None:
            return
        ns, ordinal = sts["metadata"]["namespace"], ordinal_of(pod)
        for template in _spec(sts).get("volumeClaimTemplates") or []:
            existing = self.claims.store.get(f"{ns}/{claim_name(template, sts, ordinal)}")
            if existing is not None:
                await self._set_claim_refs(sts, existing, pod, condemned=condemned)

    async def _set_claim_refs(self, sts: dict, pvc: dict, pod: dict, *, condemned: bool) -> None:
        """updateClaimOwnerRefForSetAndPod: the set owns the claim when whenDeleted is
        Delete; a condemned pod owns it when whenScaled is Delete; no one else's
        references are touched."""
        refs = [r for r in pvc["metadata"].get("ownerReferences") or []]
        set_uid, pod_uid = sts["metadata"]["uid"], pod["metadata"]["uid"]
        want_set = self._policy(sts, "whenDeleted") == "Delete"
        want_pod = condemned and self._policy(sts, "whenScaled") == "Delete"
        new = [r for r in refs if r.get("uid") not in (set_uid, pod_uid)
               and not (r.get("kind") == "StatefulSet" and r.get("name") == sts["metadata"]["name"])
               and not (r.get("kind") == "Pod" and r.get("name") == pod["metadata"]["name"])]
        if want_set:
            new.append(controller_ref(sts))
        if want_pod:
            new.append({"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod_uid})
        if sorted(map(str, new)) == sorted(map(str, refs)):
            return
        updated = copy.deepcopy(pvc)
        updated["metadata"]["ownerReferences"] = new
        if not new:
            updated["metadata"].pop("ownerReferences")
        await self.client.update(updated)

    # -- status -----------------------------------------------------------------------------

    async def _write_status(self, sts: dict, counts: dict, current: dict, update: dict) -> None:
        status = dict(sts.get("status") or {})
        status.update(counts)
        status["observedGeneration"] = sts["metadata"].get("generation", 1)
        status["currentRevision"] = current["metadata"]["name"]
        status["updateRevision"] = update["metadata"]["name"]
        if status.get("collisionCount") is None:
            status.pop("collisionCount", None)
        rolling = (_spec(sts).get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        # completeRollingUpdate: every pod is at the update revision and ready.
        if rolling and status["updatedReplicas"] == status["replicas"] == status["readyReplicas"]:
            status["currentReplicas"] = status["updatedReplicas"]
            status["currentRevision"] = status["updateRevision"]
        if status == (sts.get("status") or {}):
            return
        await self.client.update_status({**sts, "status": status})

    async def _report_invalid(self, key: Any, exc: errors.APIError) -> None:
        sts = self.sets.store.get(key)
        if sts is not None:
            self._event(sts, WARNING, "FailedCreate", exc.message)
