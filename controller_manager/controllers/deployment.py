"""The Deployment controller (pkg/controller/deployment): a Deployment rolls its pod
template out through ReplicaSets it owns.

What it guarantees, per Deployment:
- The ReplicaSet whose template equals the Deployment's (ignoring the
  `pod-template-hash` label) is the new one; it is created, named
  `<deployment>-<hash>`, when missing. The hash is Kubernetes' ComputeHash shape:
  FNV-32a over the template (here its canonical JSON; Kubernetes hashes a Go struct
  dump) plus `status.collisionCount`, printed in decimal and mapped through
  SafeEncodeString. A name taken by a ReplicaSet with another template bumps
  `collisionCount` and tries again.
- ReplicaSets matching the selector are adopted, owned ones that stop matching are
  released, and another controller's are never touched (ControllerRefManager).
- RollingUpdate: the new ReplicaSet grows while the total stays within `replicas +
  maxSurge`; old ones shrink (unhealthy pods first) while the available pods stay at
  least `replicas - maxUnavailable`. Percentages resolve as Kubernetes does: surge
  rounds up, unavailable rounds down, and both zero means unavailable 1. Recreate:
  old ReplicaSets go to zero, and once none of their pods is left the new one scales up.
- A change of `replicas` alone (a scaling event: some active ReplicaSet's
  `desired-replicas` annotation differs) is spread over the active ReplicaSets in
  proportion to their sizes, as Kubernetes does, instead of starting a rollout. A
  paused Deployment is only scaled.
- Revisions: the new ReplicaSet carries `deployment.kubernetes.io/revision` = 1 + the
  highest among the old ones (an old ReplicaSet that becomes new again, as after a
  rollback, gets a new revision and remembers the old in `revision-history`); the
  Deployment carries its new ReplicaSet's revision. Every ReplicaSet the controller
  scales carries `desired-replicas` and `max-replicas`. Once a rollout is complete,
  old ReplicaSets with nothing left beyond `revisionHistoryLimit` are deleted, lowest
  revision first.
- Status (`observedGeneration`, `replicas`, `updatedReplicas`, `readyReplicas`,
  `availableReplicas`, `unavailableReplicas`, `collisionCount`, conditions `Available`
  and `Progressing` with Kubernetes' reasons, including ProgressDeadlineExceeded once
  `progressDeadlineSeconds` pass without progress) is written only when it changed.

Concurrency: one asyncio loop; handlers only enqueue Deployment keys, and the work
queue never hands one key to two workers.
"""
from __future__ import annotations

import copy
import logging
import math
from datetime import datetime, timedelta

import orjson

from client.clock import Clock
from client.events import NORMAL, WARNING, EventRecorder
from client.informer import NAMESPACE, key_of
from controller_manager.controller import Controller, NoOptions
from controller_manager.controller_utils import (
    Now, claim, controller_of, controller_ref, get_condition, parse_time, remove_condition,
    rfc3339, selector_of, set_condition, utcnow)
from machinery import errors
from machinery.labels import Selector

log = logging.getLogger("minik8s.controller.deployment")

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_NOT_COPIED = {"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
               DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"}
MAX_REVISION_HISTORY_CHARS = 2000
MAX_INT32 = 2**31 - 1

AVAILABLE, PROGRESSING, REPLICA_FAILURE = "Available", "Progressing", "ReplicaFailure"


# --- pure helpers (pkg/controller/deployment/util) ------------------------------------

def replicas(obj: dict) -> int:
    r = (obj.get("spec") or {}).get("replicas")
    return 1 if r is None else r


def scaled_value(value, total: int, round_up: bool) -> int:
    """An int-or-percent against `total` (intstr.GetScaledValueFromIntOrPercent)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = int(value[:-1])
        except ValueError:
            raise errors.Invalid(f"invalid value for IntOrString: invalid value {value!r}") from None
        return math.ceil(pct * total / 100) if round_up else math.floor(pct * total / 100)
    raise errors.Invalid(f"invalid type: string is not a percentage: {value!r}")


def resolve_fenceposts(max_surge, max_unavailable, desired: int) -> tuple[int, int]:
    surge = scaled_value(max_surge, desired, True)
    unavailable = scaled_value(max_unavailable, desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # otherwise a rollout could never make a step
    return surge, unavailable


def _rolling(d: dict) -> dict | None:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return None
    return strategy.get("rollingUpdate") or {}


def max_surge(d: dict) -> int:
    ru = _rolling(d)
    if ru is None:
        return 0
    return resolve_fenceposts(ru.get("maxSurge", "25%"), ru.get("maxUnavailable", "25%"), replicas(d))[0]


def max_unavailable(d: dict) -> int:
    ru = _rolling(d)
    if ru is None or replicas(d) == 0:
        return 0
    _, unavailable = resolve_fenceposts(ru.get("maxSurge", "25%"), ru.get("maxUnavailable", "25%"), replicas(d))
    return min(unavailable, replicas(d))


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def safe_encode(s: str) -> str:
    """rand.SafeEncodeString: no vowels, no 0/1/3, so a hash never spells a word."""
    return "".join(_ALPHANUMS[ord(c) % len(_ALPHANUMS)] for c in s)


def compute_hash(template: dict, collision_count: int | None = None) -> str:
    data = orjson.dumps(template, option=orjson.OPT_SORT_KEYS)
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)
    return safe_encode(str(fnv32a(data)))


def _semantic(value):
    """Drop empty maps, lists and nulls, which Kubernetes' semantic equality ignores."""
    if isinstance(value, dict):
        out = {k: _semantic(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def _without_hash(template: dict | None) -> dict:
    """The template in semantic form (see _semantic), without the pod-template-hash label."""
    t = _semantic(template or {})  # new dicts all the way down: safe to change
    md = t.get("metadata") or {}
    labels = md.get("labels") or {}
    if HASH_LABEL in labels:
        del labels[HASH_LABEL]
        if not labels:
            del md["labels"]
            if not md:
                del t["metadata"]
    return t


def equal_ignore_hash(t1: dict | None, t2: dict | None) -> bool:
    return _without_hash(t1) == _without_hash(t2)


def _created(rs: dict) -> tuple:
    return (rs["metadata"].get("creationTimestamp") or "", rs["metadata"]["name"])


def by_creation(rss: list[dict]) -> list[dict]:
    return sorted(rss, key=_created)


def revision(rs: dict) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def max_revision(rss: list[dict]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def find_new_rs(d: dict, rss: list[dict]) -> dict | None:
    """The oldest ReplicaSet whose template is the Deployment's."""
    template = _without_hash(d["spec"].get("template"))
    return next((rs for rs in by_creation(rss) if _without_hash(rs["spec"].get("template")) == template), None)


def find_old_rss(d: dict, rss: list[dict], new_rs: dict | None) -> list[dict]:
    new_uid = new_rs["metadata"]["uid"] if new_rs else None
    return [rs for rs in rss if rs["metadata"]["uid"] != new_uid]


def active(rss: list[dict]) -> list[dict]:
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def spec_total(rss: list[dict]) -> int:
    return sum(replicas(rs) for rs in rss if rs is not None)


def status_total(rss: list[dict], field: str) -> int:
    return sum((rs.get("status") or {}).get(field, 0) for rs in rss if rs is not None)


def _annotations(obj: dict) -> dict:
    return obj["metadata"].setdefault("annotations", {})


def set_replicas_annotations(rs: dict, desired: int, max_replicas: int) -> bool:
    ann = _annotations(rs)
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(max_replicas))):
        if ann.get(key) != value:
            ann[key] = value
            changed = True
    return changed


def replicas_annotations_need_update(rs: dict, desired: int, max_replicas: int) -> bool:
    ann = rs["metadata"].get("annotations") or {}
    return ann.get(DESIRED_REPLICAS) != str(desired) or ann.get(MAX_REPLICAS) != str(max_replicas)


def set_new_rs_annotations(d: dict, rs: dict, new_revision: int, exists: bool) -> bool:
    """Copy the Deployment's own annotations, raise the revision (remembering the one
    replaced in revision-history) and, for a ReplicaSet about to be created, set the
    replica annotations. -> whether anything changed."""
    ann = _annotations(rs)
    changed = False
    for k, v in (d["metadata"].get("annotations") or {}).items():
        if k not in _NOT_COPIED and ann.get(k) != v:
            ann[k] = v
            changed = True
    old = ann.get(REVISION)
    try:
        old_int = int(old) if old is not None else 0
    except ValueError:
        return False
    if old_int < new_revision:
        ann[REVISION] = str(new_revision)
        changed = True
        if old is not None:
            history = [h for h in ann.get(REVISION_HISTORY, "").split(",") if h]
            history.append(old)
            while history and len(",".join(history)) > MAX_REVISION_HISTORY_CHARS:
                history.pop(0)
            ann[REVISION_HISTORY] = ",".join(history)
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


def new_rs_new_replicas(d: dict, all_rss: list[dict], new_rs: dict) -> int:
    """How big the new ReplicaSet may be now (NewRSNewReplicas)."""
    if _rolling(d) is None:
        return replicas(d)
    current = spec_total(all_rss)
    max_total = replicas(d) + max_surge(d)
    if current >= max_total:
        return replicas(new_rs)
    return replicas(new_rs) + min(max_total - current, replicas(d) - replicas(new_rs))


def has_progress_deadline(d: dict) -> bool:
    pds = d["spec"].get("progressDeadlineSeconds")
    return pds is not None and pds != MAX_INT32


def condition(type_: str, status: str, reason: str, message: str, now: datetime) -> dict:
    t = rfc3339(now)
    return {"type": type_, "status": status, "lastUpdateTime": t, "lastTransitionTime": t,
            "reason": reason, "message": message}


def deployment_complete(d: dict, status: dict) -> bool:
    want = replicas(d)
    return (status.get("updatedReplicas", 0) == want and status.get("replicas", 0) == want
            and status.get("availableReplicas", 0) == want
            and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 0))


def deployment_progressing(d: dict, status: dict) -> bool:
    old = d.get("status") or {}
    old_old = old.get("replicas", 0) - old.get("updatedReplicas", 0)
    new_old = status.get("replicas", 0) - status.get("updatedReplicas", 0)
    return (status.get("updatedReplicas", 0) > old.get("updatedReplicas", 0) or new_old < old_old
            or status.get("readyReplicas", 0) > old.get("readyReplicas", 0)
            or status.get("availableReplicas", 0) > old.get("availableReplicas", 0))


def deployment_timed_out(d: dict, status: dict, now: datetime) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.get("reason") == "NewReplicaSetAvailable":
        return False
    if cond.get("reason") == "ProgressDeadlineExceeded":
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + timedelta(seconds=d["spec"]["progressDeadlineSeconds"]) < now


def _omit_zero(status: dict) -> dict:
    return {k: v for k, v in status.items() if v not in (0, None, [])}


def calculate_status(all_rss: list[dict], new_rs: dict | None, d: dict, now: datetime) -> dict:
    available = status_total(all_rss, "availableReplicas")
    total = spec_total(all_rss)
    old = d.get("status") or {}
    status = _omit_zero({
        "observedGeneration": d["metadata"].get("generation", 0),
        "replicas": status_total(all_rss, "replicas"),
        "updatedReplicas": status_total([new_rs], "replicas"),
        "readyReplicas": status_total(all_rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(total - available, 0),
        "conditions": copy.deepcopy(old.get("conditions") or []),
        "collisionCount": old.get("collisionCount")})
    if "collisionCount" in old:
        status["collisionCount"] = old["collisionCount"]
    if available >= replicas(d) - max_unavailable(d):
        cond = condition(AVAILABLE, "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", now)
    else:
        cond = condition(AVAILABLE, "False", "MinimumReplicasUnavailable",
                         "Deployment does not have minimum availability.", now)
    status["conditions"] = set_condition(status.get("conditions") or [], cond)
    return status


def _proportion(rs: dict, d: dict, to_add: int, added: int) -> int:
    """This ReplicaSet's share of a scaling change (GetProportion)."""
    if replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    if replicas(d) == 0:
        fraction = -replicas(rs)
    else:
        deployment_replicas = replicas(d) + max_surge(d)
        try:
            annotated = int((rs["metadata"].get("annotations") or {})[MAX_REPLICAS])
        except (KeyError, ValueError):
            annotated = (d.get("status") or {}).get("replicas", 0)
        if annotated == 0:
            fraction = 0
        else:
            # Go's math.Round: halves away from zero.
            fraction = int(math.floor(replicas(rs) * deployment_replicas / annotated + 0.5)) - replicas(rs)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


# --- the controller ---------------------------------------------------------------

class DeploymentController(Controller):
    name = "deployment"

    def __init__(self, client, factory, *, recorder: EventRecorder | None = None,
                 clock: Clock | None = None, options: NoOptions | None = None, now: Now = utcnow):
        super().__init__(client, clock=clock, recorder=recorder)
        self.now = now
        self.d_informer = factory.informer("deployments")
        self.rs_informer = factory.informer("replicasets")
        self.pod_informer = factory.informer("pods")
        self.d_informer.add_handler(on_add=self._d_changed, on_update=lambda o, n: self._d_changed(n),
                                    on_delete=self._d_changed)
        self.rs_informer.add_handler(on_add=self._rs_added, on_update=self._rs_updated,
                                     on_delete=self._rs_deleted)
        self.pod_informer.add_handler(on_delete=self._pod_deleted)
        self.informers += [self.d_informer, self.rs_informer, self.pod_informer]

    # -- handlers -------------------------------------------------------------------

    def _d_changed(self, d: dict) -> None:
        self.enqueue(key_of(d))

    def _resolve(self, namespace: str, ref: dict | None) -> str | None:
        if ref is None or ref.get("kind") != "Deployment":
            return None
        key = f"{namespace}/{ref.get('name')}"
        d = self.d_informer.store.get(key)
        if d is None or d["metadata"].get("uid") != ref.get("uid"):
            return None
        return key

    def _matching_deployments(self, rs: dict) -> list[str]:
        labels = rs["metadata"].get("labels") or {}
        keys = []
        for d in self.d_informer.store.by_index(NAMESPACE, rs["metadata"]["namespace"]):
            try:
                sel = selector_of(d)
            except errors.APIError:
                continue
            if not sel.empty and sel.matches(labels):
                keys.append(key_of(d))
        return keys

    def _rs_added(self, rs: dict) -> None:
        if rs["metadata"].get("deletionTimestamp"):
            self._rs_deleted(rs)
            return
        ref = controller_of(rs)
        if ref is not None:
            if key := self._resolve(rs["metadata"]["namespace"], ref):
                self.enqueue(key)
            return
        for key in self._matching_deployments(rs):
            self.enqueue(key)

    def _rs_updated(self, old: dict, new: dict) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        ns = new["metadata"]["namespace"]
        cur, prev = controller_of(new), controller_of(old)
        ref_changed = (cur or {}).get("uid") != (prev or {}).get("uid")
        if ref_changed and prev is not None and (key := self._resolve(ns, prev)):
            self.enqueue(key)
        if cur is not None:
            if key := self._resolve(ns, cur):
                self.enqueue(key)
            return
        if ref_changed or old["metadata"].get("labels") != new["metadata"].get("labels"):
            for key in self._matching_deployments(new):
                self.enqueue(key)

    def _rs_deleted(self, rs: dict) -> None:
        if key := self._resolve(rs["metadata"]["namespace"], controller_of(rs)):
            self.enqueue(key)

    def _pod_deleted(self, pod: dict) -> None:
        # Recreate waits for the old pods to be gone, which no ReplicaSet change reports.
        ns = pod["metadata"]["namespace"]
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.rs_informer.store.get(f"{ns}/{ref.get('name')}")
        if rs is None or rs["metadata"].get("uid") != ref.get("uid"):
            return
        key = self._resolve(ns, controller_of(rs))
        if key is not None:
            d = self.d_informer.store.get(key)
            if ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
                self.enqueue(key)

    # -- writes -----------------------------------------------------------------------

    def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(obj, type_, reason, message)

    async def _write_status(self, d: dict) -> None:
        """PUT d's status (compare-and-swap on the resourceVersion d carries)."""
        updated = await self.client.update_status(d)
        d["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"]

    async def _set_revision(self, d: dict, rev: str) -> None:
        """The Deployment's revision annotation (SetDeploymentRevision), written at once
        through the status subresource, as Kubernetes does: a Deployment's status update
        takes its annotations too."""
        if (d["metadata"].get("annotations") or {}).get(REVISION) == rev:
            return
        _annotations(d)[REVISION] = rev
        await self._write_status(d)

    async def _update_rs(self, rs: dict) -> dict:
        return await self.client.update(rs)

    async def scale_rs(self, rs: dict, new_scale: int, d: dict) -> tuple[bool, dict]:
        """Set a ReplicaSet's size and replica annotations (scaleReplicaSetAndRecordEvent)."""
        if replicas(rs) == new_scale:
            return False, rs
        return await self._scale_rs(rs, new_scale, d, "up" if replicas(rs) < new_scale else "down")

    async def _scale_rs(self, rs: dict, new_scale: int, d: dict, operation: str) -> tuple[bool, dict]:
        size_changes = replicas(rs) != new_scale
        if not size_changes and not replicas_annotations_need_update(rs, replicas(d), replicas(d) + max_surge(d)):
            return False, rs
        old_scale = replicas(rs)
        rs = copy.deepcopy(rs)
        rs["spec"]["replicas"] = new_scale
        set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d))
        rs = await self._update_rs(rs)
        if size_changes:
            self._event(d, NORMAL, "ScalingReplicaSet",
                        f"Scaled {operation} replica set {rs['metadata']['name']} to {new_scale} from {old_scale}")
        return size_changes, rs

    # -- reconcile ------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.d_informer.store.get(key)
        if cached is None:
            return
        # A working copy of what a sync changes (metadata, status); the spec, and the
        # managedFields that make a deep copy costly, are only read.
        md = cached["metadata"]
        d = {**cached, "metadata": {**md, "annotations": dict(md.get("annotations") or {})},
             "status": copy.deepcopy(cached.get("status") or {})}
        if not md.get("annotations"):
            del d["metadata"]["annotations"]
        if "status" not in cached:
            del d["status"]
        try:
            selector = selector_of(d)
        except errors.APIError as exc:
            log.warning("deployment %s: bad selector: %s", key, exc.message)
            return
        if selector.empty:
            self._event(d, WARNING, "SelectingAll",
                        "This deployment is selecting all pods. A non-empty selector is required.")
            status = d.setdefault("status", {})
            if status.get("observedGeneration", 0) < d["metadata"].get("generation", 0):
                status["observedGeneration"] = d["metadata"]["generation"]
                await self._write_status(d)
            return
        rss = await self.claim_replicasets(d, selector)
        if d["metadata"].get("deletionTimestamp"):
            new_rs, old_rss = await self.new_and_old(d, rss, create=False)
            await self.sync_status(old_rss + [new_rs], new_rs, d)
            return
        await self.check_paused_conditions(d)
        if d["spec"].get("paused"):
            await self.sync(d, rss)
            return
        if await self.is_scaling_event(d, rss):
            await self.sync(d, rss)
            return
        if (d["spec"].get("strategy") or {}).get("type") == "Recreate":
            await self.rollout_recreate(d, rss, selector)
        else:
            await self.rollout_rolling(d, rss)

    async def claim_replicasets(self, d: dict, selector: Selector) -> list[dict]:
        return await claim(self.client, d, "deployments", selector,
                           self.rs_informer.store.by_index(NAMESPACE, d["metadata"]["namespace"]),
                           "replicasets")

    async def check_paused_conditions(self, d: dict) -> None:
        """Progressing=Unknown while paused, so the deadline does not run meanwhile."""
        if not has_progress_deadline(d):
            return
        status = d.setdefault("status", {})
        cond = get_condition(status, PROGRESSING)
        if cond is not None and cond.get("reason") == "ProgressDeadlineExceeded":
            return
        paused_cond = cond is not None and cond.get("reason") == "DeploymentPaused"
        if d["spec"].get("paused") and not paused_cond:
            new = condition(PROGRESSING, "Unknown", "DeploymentPaused", "Deployment is paused", self.now())
        elif not d["spec"].get("paused") and paused_cond:
            new = condition(PROGRESSING, "Unknown", "DeploymentResumed", "Deployment is resumed", self.now())
        else:
            return
        status["conditions"] = set_condition(status.get("conditions") or [], new)
        await self._write_status(d)

    async def new_and_old(self, d: dict, rss: list[dict], *, create: bool) -> tuple[dict | None, list[dict]]:
        """(new ReplicaSet, old ones), syncing revisions; creates the new one if asked
        (getAllReplicaSetsAndSyncRevision)."""
        existing = find_new_rs(d, rss)
        old = find_old_rss(d, rss, existing)
        new_revision = max_revision(old) + 1
        now = self.now()
        status = d.setdefault("status", {})

        if existing is not None:
            rs = copy.deepcopy(existing)
            annotations_changed = set_new_rs_annotations(d, rs, new_revision, True)
            min_ready = d["spec"].get("minReadySeconds", 0)
            if annotations_changed or rs["spec"].get("minReadySeconds", 0) != min_ready:
                rs["spec"]["minReadySeconds"] = min_ready
                return await self._update_rs(rs), old
            await self._set_revision(d, (rs["metadata"].get("annotations") or {}).get(REVISION, ""))
            if has_progress_deadline(d) and get_condition(status, PROGRESSING) is None:
                found = f'Found new replica set "{rs["metadata"]["name"]}"'
                status["conditions"] = set_condition(status.get("conditions") or [], condition(
                    PROGRESSING, "True", "FoundNewReplicaSet", found, now))
                await self._write_status(d)
            return rs, old
        if not create:
            return None, old

        template = copy.deepcopy(d["spec"].get("template") or {})
        pod_hash = compute_hash(template, status.get("collisionCount"))
        tmd = template.setdefault("metadata", {})
        tmd["labels"] = {**(tmd.get("labels") or {}), HASH_LABEL: pod_hash}
        selector = copy.deepcopy(d["spec"].get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
        md = d["metadata"]
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{md['name']}-{pod_hash}", "namespace": md["namespace"],
                           "ownerReferences": [controller_ref(d)], "labels": dict(tmd["labels"])},
              "spec": {"replicas": 0, "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                       "selector": selector, "template": template}}
        rs["spec"]["replicas"] = new_count = new_rs_new_replicas(d, old + [rs], rs)
        set_new_rs_annotations(d, rs, new_revision, False)
        already_exists = False
        try:
            created = await self.client.create(rs, namespace=md["namespace"])
        except errors.AlreadyExists:
            # A slow cache, or a hash collision: ours only if we own it and it has our template.
            already_exists = True
            created = self.rs_informer.store.get(f"{md['namespace']}/{rs['metadata']['name']}")
            if created is None:
                raise
            if not ((controller_of(created) or {}).get("uid") == md["uid"]
                    and equal_ignore_hash(d["spec"].get("template"), created["spec"].get("template"))):
                status["collisionCount"] = status.get("collisionCount", 0) + 1
                await self._write_status(d)
                raise
        except errors.APIError as exc:
            msg = f'Failed to create new replica set "{rs["metadata"]["name"]}": {exc.message}'
            if has_progress_deadline(d):
                status["conditions"] = set_condition(status.get("conditions") or [], condition(
                    PROGRESSING, "False", "ReplicaSetCreateError", msg, now))
                try:
                    await self._write_status(d)
                except errors.APIError:
                    pass  # the failure to create is the thing to report
            self._event(d, WARNING, "ReplicaSetCreateError", msg)
            raise
        if not already_exists and new_count > 0:
            self._event(d, NORMAL, "ScalingReplicaSet",
                        f"Scaled up replica set {created['metadata']['name']} to {new_count}")
        await self._set_revision(d, str(new_revision))
        if not already_exists and has_progress_deadline(d):
            status["conditions"] = set_condition(status.get("conditions") or [], condition(
                PROGRESSING, "True", "NewReplicaSetCreated",
                f'Created new replica set "{created["metadata"]["name"]}"', now))
            await self._write_status(d)
        return created, old

    # -- scaling (sync.go) ------------------------------------------------------------

    async def is_scaling_event(self, d: dict, rss: list[dict]) -> bool:
        new_rs, old = await self.new_and_old(d, rss, create=False)
        for rs in active(old + [new_rs]):
            desired = (rs["metadata"].get("annotations") or {}).get(DESIRED_REPLICAS)
            try:
                if desired is not None and int(desired) != replicas(d):
                    return True
            except ValueError:
                continue
        return False

    async def sync(self, d: dict, rss: list[dict]) -> None:
        """A scaling event or a paused Deployment: resize, never roll out."""
        new_rs, old = await self.new_and_old(d, rss, create=False)
        new_rs, old = await self.scale(d, new_rs, old)
        if d["spec"].get("paused"):
            await self.cleanup(d, old)
        await self.sync_status(old + [new_rs], new_rs, d)

    async def scale(self, d: dict, new_rs: dict | None, old: list[dict]) -> tuple[dict | None, list[dict]]:
        want = replicas(d)
        everything = [rs for rs in [new_rs, *old] if rs is not None]
        latest = self._active_or_latest(new_rs, old)
        if latest is not None:
            if replicas(latest) != want:
                _, updated = await self.scale_rs(latest, want, d)
                return self._replace(new_rs, old, updated)
            return new_rs, old
        if self._saturated(d, new_rs):
            for rs in active(old):
                _, updated = await self.scale_rs(rs, 0, d)
                new_rs, old = self._replace(new_rs, old, updated)
            return new_rs, old
        if _rolling(d) is None:
            return new_rs, old
        live = active(everything)
        allowed = want + max_surge(d) if want > 0 else 0
        to_add = allowed - spec_total(live)
        if to_add > 0:  # largest first; newer first among equals
            live.sort(key=lambda rs: _created(rs), reverse=True)
            live.sort(key=replicas, reverse=True)
            operation = "up"
        elif to_add < 0:  # largest first; older first among equals
            live.sort(key=_created)
            live.sort(key=replicas, reverse=True)
            operation = "down"
        else:
            # Sizes stay, but every active ReplicaSet still gets the new replica
            # annotations, as in Kubernetes: they are what ends the scaling event.
            operation = ""
        added, sizes = 0, {}
        for rs in live:
            share = _proportion(rs, d, to_add, added)
            sizes[rs["metadata"]["uid"]] = replicas(rs) + share
            added += share
        if live and to_add != added:
            uid = live[0]["metadata"]["uid"]
            sizes[uid] = max(sizes[uid] + to_add - added, 0)
        for rs in live:
            _, updated = await self._scale_rs(rs, sizes[rs["metadata"]["uid"]], d, operation)
            new_rs, old = self._replace(new_rs, old, updated)
        return new_rs, old

    @staticmethod
    def _replace(new_rs: dict | None, old: list[dict], updated: dict) -> tuple[dict | None, list[dict]]:
        uid = updated["metadata"]["uid"]
        if new_rs is not None and new_rs["metadata"]["uid"] == uid:
            return updated, old
        return new_rs, [updated if rs["metadata"]["uid"] == uid else rs for rs in old]

    @staticmethod
    def _active_or_latest(new_rs: dict | None, old: list[dict]) -> dict | None:
        """The one active ReplicaSet, or the newest if none is active; None if several are."""
        if new_rs is None and not old:
            return None
        old = sorted(old, key=_created, reverse=True)
        live = active(old + [new_rs])
        if not live:
            return new_rs if new_rs is not None else old[0]
        return live[0] if len(live) == 1 else None

    @staticmethod
    def _saturated(d: dict, rs: dict | None) -> bool:
        if rs is None:
            return False
        try:
            desired = int((rs["metadata"].get("annotations") or {}).get(DESIRED_REPLICAS, ""))
        except ValueError:
            return False
        want = replicas(d)
        return (replicas(rs) == want and desired == want
                and (rs.get("status") or {}).get("availableReplicas", 0) == want)

    async def cleanup(self, d: dict, old: list[dict]) -> None:
        """Delete old ReplicaSets beyond revisionHistoryLimit, lowest revision first,
        if nothing is left in them."""
        limit = d["spec"].get("revisionHistoryLimit")
        if limit is None or limit == MAX_INT32:
            return
        alive = [rs for rs in old if not rs["metadata"].get("deletionTimestamp")]
        excess = len(alive) - limit
        if excess <= 0:
            return
        alive.sort(key=_created)
        alive.sort(key=revision)
        for rs in alive[:excess]:
            st = rs.get("status") or {}
            if (st.get("replicas", 0) != 0 or replicas(rs) != 0
                    or rs["metadata"].get("generation", 0) > st.get("observedGeneration", 0)):
                continue
            md = rs["metadata"]
            log.info("deployment %s: deleting old replica set %s", key_of(d), md["name"])
            try:
                await self.client.delete("replicasets", md["name"], namespace=md["namespace"])
            except errors.NotFound:
                pass

    async def sync_status(self, all_rss: list, new_rs: dict | None, d: dict) -> None:
        status = calculate_status(all_rss, new_rs, d, self.now())
        if status != (d.get("status") or {}):
            d["status"] = status
            await self._write_status(d)

    # -- rolling update (rolling.go) ----------------------------------------------------

    async def rollout_rolling(self, d: dict, rss: list[dict]) -> None:
        new_rs, old = await self.new_and_old(d, rss, create=True)
        scaled, new_rs = await self.reconcile_new_rs(old + [new_rs], new_rs, d)
        if scaled:
            await self.sync_rollout_status(old + [new_rs], new_rs, d)
            return
        scaled, old = await self.reconcile_old_rss(old + [new_rs], active(old), old, new_rs, d)
        if scaled:
            await self.sync_rollout_status(old + [new_rs], new_rs, d)
            return
        if deployment_complete(d, d.get("status") or {}):
            await self.cleanup(d, old)
        await self.sync_rollout_status(old + [new_rs], new_rs, d)

    async def reconcile_new_rs(self, all_rss: list[dict], new_rs: dict, d: dict) -> tuple[bool, dict]:
        if replicas(new_rs) == replicas(d):
            return False, new_rs
        if replicas(new_rs) > replicas(d):
            return await self.scale_rs(new_rs, replicas(d), d)
        return await self.scale_rs(new_rs, new_rs_new_replicas(d, all_rss, new_rs), d)

    async def reconcile_old_rss(self, all_rss: list[dict], old_active: list[dict], old: list[dict],
                                new_rs: dict, d: dict) -> tuple[bool, list[dict]]:
        """Scale old ReplicaSets down as far as availability allows. -> (scaled, old)."""
        if spec_total(old_active) == 0:
            return False, old
        min_available = replicas(d) - max_unavailable(d)
        new_unavailable = replicas(new_rs) - (new_rs.get("status") or {}).get("availableReplicas", 0)
        max_scaled_down = spec_total(all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False, old
        # First the pods that are not available anyway: removing them costs nothing.
        old_active = by_creation(old_active)
        cleaned = 0
        for i, rs in enumerate(old_active):
            if cleaned >= max_scaled_down:
                break
            available = (rs.get("status") or {}).get("availableReplicas", 0)
            if replicas(rs) == 0 or replicas(rs) == available:
                continue
            n = min(max_scaled_down - cleaned, replicas(rs) - available)
            _, old_active[i] = await self.scale_rs(rs, replicas(rs) - n, d)
            cleaned += n
        # Then available ones, oldest ReplicaSet first, keeping min_available.
        available_now = status_total(old_active + [new_rs], "availableReplicas")
        to_scale_down = available_now - min_available
        scaled_down = 0
        if to_scale_down > 0:
            for i, rs in enumerate(old_active):
                if scaled_down >= to_scale_down:
                    break
                if replicas(rs) == 0:
                    continue
                n = min(replicas(rs), to_scale_down - scaled_down)
                _, old_active[i] = await self.scale_rs(rs, replicas(rs) - n, d)
                scaled_down += n
        by_uid = {rs["metadata"]["uid"]: rs for rs in old_active}
        return cleaned + scaled_down > 0, [by_uid.get(rs["metadata"]["uid"], rs) for rs in old]

    async def sync_rollout_status(self, all_rss: list, new_rs: dict | None, d: dict) -> None:
        """Status with the Progressing condition brought up to date (syncRolloutStatus)."""
        now = self.now()
        status = calculate_status(all_rss, new_rs, d, now)
        if not has_progress_deadline(d):
            remove_condition(status, PROGRESSING)
        current = get_condition(d.get("status") or {}, PROGRESSING)
        complete = (status.get("replicas", 0) == status.get("updatedReplicas", 0) and current is not None
                    and current.get("reason") == "NewReplicaSetAvailable")
        what = f'ReplicaSet "{new_rs["metadata"]["name"]}"' if new_rs else f'Deployment "{d["metadata"]["name"]}"'
        if has_progress_deadline(d) and not complete:
            conds = status.get("conditions") or []
            if deployment_complete(d, status):
                conds = set_condition(conds, condition(PROGRESSING, "True", "NewReplicaSetAvailable",
                                                       f"{what} has successfully progressed.", now))
            elif deployment_progressing(d, status):
                cond = condition(PROGRESSING, "True", "ReplicaSetUpdated", f"{what} is progressing.", now)
                if current is not None and current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime", cond["lastTransitionTime"])
                # Replaced even when the reason is the same: lastUpdateTime marks progress.
                conds = [c for c in conds if c.get("type") != PROGRESSING] + [cond]
            elif deployment_timed_out(d, status, now):
                conds = set_condition(conds, condition(PROGRESSING, "False", "ProgressDeadlineExceeded",
                                                       f"{what} has timed out progressing.", now))
            status["conditions"] = conds
        # The new ReplicaSet's failure first, else any old one's (getReplicaFailures).
        failure = next((c for rs in [new_rs, *all_rss] if rs is not None
                        and (c := get_condition(rs.get("status") or {}, REPLICA_FAILURE))), None)
        if failure is not None:
            status["conditions"] = set_condition(status.get("conditions") or [], {
                "type": REPLICA_FAILURE, "status": failure.get("status"), "reason": failure.get("reason"),
                "message": failure.get("message"), "lastUpdateTime": failure.get("lastTransitionTime"),
                "lastTransitionTime": failure.get("lastTransitionTime")})
        else:
            remove_condition(status, REPLICA_FAILURE)
        if status == (d.get("status") or {}):
            self._requeue_stuck(d, status, now)
            return
        d["status"] = status
        await self._write_status(d)

    def _requeue_stuck(self, d: dict, status: dict, now: datetime) -> None:
        """Look again when the progress deadline would pass without any event."""
        current = get_condition(d.get("status") or {}, PROGRESSING)
        if (not has_progress_deadline(d) or current is None or deployment_complete(d, status)
                or current.get("reason") == "ProgressDeadlineExceeded"):
            return
        since = parse_time(current.get("lastUpdateTime"))
        if since is None:
            return
        after = (since + timedelta(seconds=d["spec"]["progressDeadlineSeconds"]) - now).total_seconds()
        self.queue.add_after(key_of(d), max(after, 0.0) + 1.0)

    # -- recreate (recreate.go) -----------------------------------------------------

    async def rollout_recreate(self, d: dict, rss: list[dict], selector: Selector) -> None:
        new_rs, old = await self.new_and_old(d, rss, create=False)
        scaled = False
        for i, rs in enumerate(old):
            if replicas(rs) != 0:
                did, old[i] = await self.scale_rs(rs, 0, d)
                scaled = scaled or did
        if scaled:
            await self.sync_rollout_status(old + [new_rs], new_rs, d)
            return
        if self._old_pods_running(d, new_rs, old, rss, selector):
            await self.sync_rollout_status(old + [new_rs], new_rs, d)
            return
        if new_rs is None:
            new_rs, old = await self.new_and_old(d, rss, create=True)
        _, new_rs = await self.scale_rs(new_rs, replicas(d), d)
        if deployment_complete(d, d.get("status") or {}):
            await self.cleanup(d, old)
        await self.sync_rollout_status(old + [new_rs], new_rs, d)

    def _old_pods_running(self, d: dict, new_rs: dict | None, old: list[dict], rss: list[dict],
                          selector: Selector) -> bool:
        if status_total(old, "replicas") > 0:
            return True
        owners = {rs["metadata"]["uid"] for rs in rss}
        if new_rs is not None:
            owners.discard(new_rs["metadata"]["uid"])
        for pod in self.pod_informer.store.by_index(NAMESPACE, d["metadata"]["namespace"]):
            ref = controller_of(pod)
            if (ref is not None and ref.get("uid") in owners and selector.matches(pod["metadata"].get("labels"))
                    and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")):
                return True
        return False

    async def _report_invalid(self, key, exc: errors.APIError) -> None:
        d = self.d_informer.store.get(key)
        if d is not None:
            self._event(d, WARNING, "ReconcileError", exc.message)
