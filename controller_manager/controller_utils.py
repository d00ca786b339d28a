"""Helpers the controllers share (kube-controller-manager's pkg/controller/controller_utils.go
and the small pieces of podutil and metav1 it leans on).

What it guarantees:
- Pure functions over API objects (dicts) never mutate their arguments.
- Pod state reads as Kubernetes reads it: a pod is *active* unless it is Succeeded,
  Failed or being deleted; *ready* when its Ready condition is True; *available* once
  it has been ready for `minReadySeconds` by the condition's `lastTransitionTime`.
- Ownership: `controller_of` is metav1.GetControllerOf, `controller_ref` is
  metav1.NewControllerRef, and `claim` is ControllerRefManager.ClaimObject: matching
  orphans are adopted (after re-reading the owner from the API), owned objects that
  stopped matching are released, and what another controller owns is never touched.
- `Expectations` is UIDTrackingControllerExpectations: the creates and deletes a sync
  issued, remembered until the informer observes each (or they expire).
- `deletion_order` ranks pods as ActivePodsWithRanks; `slow_start_batch` issues calls in
  batches of 1, 2, 4, ... and stops after the first batch that fails.
- Times are RFC 3339 in UTC with whole seconds, as Kubernetes writes metav1.Time.

Concurrency: one asyncio loop. `Expectations` is not locked: a controller's work queue
never hands one key to two workers, and handlers run on the same loop.
"""
from __future__ import annotations

import asyncio
import copy
import functools
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, Iterable

import orjson

from client.clock import Clock
from client.informer import key_of
from machinery import errors, kinds, times
from machinery.labels import Selector, from_label_selector

EXPECTATIONS_TIMEOUT = 300.0    # seconds before unobserved expectations are given up
SLOW_START_INITIAL_BATCH = 1
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"

Now = Callable[[], datetime]

def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- times and object references --------------------------------------------------

def rfc3339(dt: datetime) -> str:
    return times.rfc3339(dt.timestamp())


def parse_time(value: str | None) -> datetime | None:
    """An object's timestamp as a datetime; None if absent or not RFC 3339."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(times.parse(value), timezone.utc)
    except ValueError:
        return None


def controller_of(obj: dict) -> dict | None:
    """The ownerReference with `controller: true`, if any (metav1.GetControllerOf)."""
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def controller_ref(owner: dict) -> dict:
    """The ownerReference a controller puts on what it creates (metav1.NewControllerRef)."""
    md = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": md["name"],
            "uid": md["uid"], "controller": True, "blockOwnerDeletion": True}


class _MatchLabels(Selector):
    """A selector of matchLabels only (almost every one): matching is a subset test of
    label items, done in C, for the loops over every pod of a large ReplicaSet."""

    __slots__ = ("_want",)

    def __init__(self, selector: Selector, match_labels: dict):
        super().__init__(selector.requirements)
        self._want = dict(match_labels).items()

    def matches(self, labels) -> bool:
        return self._want <= (labels or {}).items()


@functools.lru_cache(maxsize=4096)
def _selector(raw: bytes) -> Selector:
    obj = orjson.loads(raw)
    selector = from_label_selector(obj)
    if isinstance(obj, dict) and not obj.get("matchExpressions"):
        return _MatchLabels(selector, obj.get("matchLabels") or {})
    return selector


def selector_of(obj: dict) -> Selector:
    """`spec.selector` as a Selector (BadRequest if malformed); parsed once per shape."""
    sel = (obj.get("spec") or {}).get("selector")
    return _selector(orjson.dumps(sel, option=orjson.OPT_SORT_KEYS))


def ready_condition(pod: dict) -> dict | None:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return c
    return None


def is_pod_ready(pod: dict) -> bool:
    c = ready_condition(pod)
    return c is not None and c.get("status") == "True"


def is_pod_available(pod: dict, min_ready_seconds: int, now: datetime) -> bool:
    """Ready for at least `min_ready_seconds` (podutil.IsPodAvailable)."""
    c = ready_condition(pod)
    if c is None or c.get("status") != "True":
        return False
    if not min_ready_seconds:
        return True
    since = parse_time(c.get("lastTransitionTime"))
    return since is not None and since + timedelta(seconds=min_ready_seconds) < now


_TERMINAL = ("Succeeded", "Failed")


def is_pod_active(pod: dict) -> bool:
    return ((pod.get("status") or {}).get("phase") not in _TERMINAL
            and not pod["metadata"].get("deletionTimestamp"))


def set_condition(conditions: list[dict], cond: dict) -> list[dict]:
    """Replace the condition of cond's type, keeping lastTransitionTime when the status
    did not change; a same status-and-reason condition is left as it was."""
    for i, cur in enumerate(conditions):
        if cur.get("type") == cond["type"]:
            if cur.get("status") == cond["status"] and cur.get("reason") == cond.get("reason"):
                return conditions
            if cur.get("status") == cond["status"] and "lastTransitionTime" in cur:
                cond = {**cond, "lastTransitionTime": cur["lastTransitionTime"]}
            return [c for j, c in enumerate(conditions) if j != i] + [cond]
    return [*conditions, cond]


def get_condition(status: dict, type_: str) -> dict | None:
    return next((c for c in status.get("conditions") or () if c.get("type") == type_), None)


def remove_condition(status: dict, type_: str) -> None:
    conds = [c for c in status.get("conditions") or () if c.get("type") != type_]
    if conds:
        status["conditions"] = conds
    else:
        status.pop("conditions", None)


async def slow_start_batch(count: int, fn: Callable[[], Awaitable[None]],
                           initial: int = SLOW_START_INITIAL_BATCH) -> tuple[int, BaseException | None]:
    """Call `fn` `count` times in batches of 1, 2, 4, ... run concurrently; stop after
    the first batch with a failure. -> (successes, first error)."""
    remaining, successes, batch = count, 0, min(count, initial)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        successes += batch - len(failed)
        if failed:
            return successes, failed[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


class Expectations:
    """Creates and deletes a controller issued but has not yet seen in its cache, per
    controller key (UIDTrackingControllerExpectations). Deletions are tracked by pod
    key, so a pod seen first as terminating and then as deleted counts once."""

    def __init__(self, clock: Clock, timeout: float = EXPECTATIONS_TIMEOUT):
        self.clock, self.timeout = clock, timeout
        self._adds: dict[str, int] = {}
        self._dels: dict[str, set[str]] = {}
        self._since: dict[str, float] = {}

    def satisfied(self, key: str) -> bool:
        """True when nothing is in flight, or the record has expired (the watch lost
        something, or an event was missed): then a sync recounts from the cache."""
        if key not in self._since:
            return True
        if self._adds.get(key, 0) <= 0 and not self._dels.get(key):
            return True
        return self.clock.monotonic() - self._since[key] > self.timeout

    def expect_creations(self, key: str, n: int) -> None:
        self._adds[key], self._dels[key], self._since[key] = n, set(), self.clock.monotonic()

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        self._adds[key], self._dels[key], self._since[key] = 0, set(pod_keys), self.clock.monotonic()

    def expect(self, key: str, creations: int, pod_keys: Iterable[str]) -> None:
        """Both at once (a DaemonSet sync creates on some nodes and deletes on others)."""
        self._adds[key], self._dels[key], self._since[key] = creations, set(pod_keys), self.clock.monotonic()

    def creation_observed(self, key: str) -> None:
        if key in self._adds:
            self._adds[key] -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        dels = self._dels.get(key)
        if dels:
            dels.discard(pod_key)

    def pending(self, key: str) -> tuple[int, int]:
        return max(self._adds.get(key, 0), 0), len(self._dels.get(key) or ())

    def delete(self, key: str) -> None:
        for d in (self._adds, self._dels, self._since):
            d.pop(key, None)


# --- deletion order ---------------------------------------------------------------

_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}
_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def _deletion_cost(pod: dict) -> int:
    try:
        return int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, 0))
    except ValueError:
        return 0


def _restarts(pod: dict) -> int:
    return max((c.get("restartCount", 0) for c in (pod.get("status") or {}).get("containerStatuses") or ()),
               default=0)


def deletion_order(pods: list[dict], related: list[dict]) -> list[dict]:
    """`pods` sorted most-deletable first (controller.ActivePodsWithRanks, with a plain
    newest-first comparison of times where Kubernetes compares them on a log scale)."""
    on_node: dict[str, int] = {}
    for p in related:
        if is_pod_active(p):
            node = (p.get("spec") or {}).get("nodeName") or ""
            on_node[node] = on_node.get(node, 0) + 1

    def key(pod: dict) -> tuple:
        node = (pod.get("spec") or {}).get("nodeName") or ""
        ready = is_pod_ready(pod)
        ready_at = parse_time(ready_condition(pod).get("lastTransitionTime")) if ready else None
        created = parse_time(pod["metadata"].get("creationTimestamp"))
        # Each element sorts ascending; "empty time first, then newest" is a pair
        # (has-time, negated time).
        return (bool(node), _PHASE_ORDER.get((pod.get("status") or {}).get("phase"), 0), ready,
                _deletion_cost(pod), -on_node.get(node, 0),
                (ready_at is not None, -(ready_at or _EPOCH).timestamp()) if ready else (False, 0),
                -_restarts(pod),
                (created is not None, -(created or _EPOCH).timestamp()))
    return sorted(pods, key=key)


def pod_from_template(owner: dict, template: dict) -> dict:
    """A pod for `owner` from its template (controller.GetPodFromTemplate)."""
    tmd = template.get("metadata") or {}
    md: dict = {"generateName": f"{owner['metadata']['name']}-",
                "namespace": owner["metadata"]["namespace"],
                "ownerReferences": [controller_ref(owner)]}
    for field in ("labels", "annotations", "finalizers"):
        if tmd.get(field):
            md[field] = copy.deepcopy(tmd[field])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": copy.deepcopy(template.get("spec") or {})}


# --- claiming (ControllerRefManager) ---------------------------------------------

async def claim(client, owner: dict, owner_resource: str, selector: Selector, objs: list[dict],
                resource: str) -> list[dict]:
    """Of `objs`, those `owner` controls once matching orphans are adopted and owned
    ones that stopped matching are released (ControllerRefManager.ClaimObject). What
    another controller owns is never touched. Before the first adoption the owner is
    read fresh from the API: adopting for an owner that is gone or going would leave
    objects pointing at nothing."""
    omd = owner["metadata"]
    uid, deleting = omd["uid"], bool(omd.get("deletionTimestamp"))
    claimed: list[dict] = []
    failures: list[BaseException] = []
    can_adopt: list[BaseException | None] = []  # the recheck, done once and lazily

    async def recheck() -> BaseException | None:
        try:
            fresh = await client.get(owner_resource, omd["name"], namespace=omd["namespace"])
        except errors.APIError as exc:
            return exc
        if fresh["metadata"].get("uid") != uid:
            return errors.Conflict(f"original {key_of(owner)} is gone: got uid "
                                   f"{fresh['metadata'].get('uid')}, wanted {uid}")
        if fresh["metadata"].get("deletionTimestamp"):
            return errors.Conflict(f"{key_of(owner)} has just been deleted at "
                                   f"{fresh['metadata']['deletionTimestamp']}")
        return None

    for obj in objs:
        md = obj["metadata"]
        ref = controller_of(obj)
        matches = selector.matches(md.get("labels"))
        if ref is not None:
            if ref.get("uid") != uid:
                continue  # another controller's: never ours to touch
            if matches:
                claimed.append(obj)
            elif not deleting:
                try:
                    await client.patch(resource, md["name"], namespace=md["namespace"], patch_type="strategic",
                                       patch={"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}],
                                                           "uid": md["uid"]}})
                except (errors.NotFound, errors.Invalid):
                    pass  # gone, or recreated under the same name: nothing to release
                except errors.APIError as exc:
                    failures.append(exc)
            continue
        if deleting or not matches or md.get("deletionTimestamp") or md.get("namespace") != omd["namespace"]:
            continue
        if not can_adopt:
            can_adopt.append(await recheck())
        if can_adopt[0] is not None:
            failures.append(can_adopt[0])
            continue
        try:
            claimed.append(await client.patch(
                resource, md["name"], namespace=md["namespace"], patch_type="strategic",
                patch={"metadata": {"ownerReferences": [controller_ref(owner)], "uid": md["uid"]}}))
        except errors.NotFound:
            pass  # gone meanwhile
        except errors.APIError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    return claimed


# Kinds served for create only (the access and token reviews: discovery's verbs are
# ["create"]), which have no objects to list, watch or delete.
_CREATE_ONLY = frozenset((k.group, k.plural) for k in kinds.REVIEWS)


_STORED_VERBS = frozenset(("list", "watch", "delete"))


def stored_kinds(resources: Iterable) -> list:
    """The resources that hold objects: what the garbage collector watches and the
    namespace controller empties. Kubernetes picks them by their discovery verbs (list,
    watch and delete: not metrics.k8s.io's get-and-list kinds); a kind from the built-in
    table, whose verbs discovery has not told, is known to have them."""
    verbs = getattr(resources, "verbs", lambda r: None)
    return [r for r in resources if (r.group, r.plural) not in _CREATE_ONLY
            and (verbs(r) is None or _STORED_VERBS <= set(verbs(r)))]
