"""The pods/eviction subresource: a pod delete that honours PodDisruptionBudgets, as
kube-apiserver 1.32's (pkg/registry/core/pod/storage/eviction.go).

What it guarantees:
- A pod that is Succeeded, Failed or Pending, or already being deleted, is deleted
  without consulting any budget (canIgnorePDB).
- A pod no budget selects is deleted. A pod two or more budgets select is refused with
  500 and Kubernetes' message: the subresource does not support it.
- With one budget: a budget whose status the disruption controller has not yet caught up
  with (observedGeneration behind generation) or that allows no disruption answers 429
  TooManyRequests, "Cannot evict pod as it would violate the pod's disruption budget.",
  with a `DisruptionBudget` cause saying why. Otherwise `status.disruptionsAllowed` is
  decremented and the pod recorded in `status.disruptedPods`, in one compare-and-swap on
  the budget's resourceVersion; a lost swap rereads the pod and the budget and decides
  again. Only after that write is the pod deleted, so two evictions racing for the last
  allowed disruption cannot both win.
- A pod that is not Ready is deleted without spending the budget when
  `unhealthyPodEvictionPolicy` is AlwaysAllow, or (IfHealthyBudget, the default) when the
  budget is currently met (currentHealthy >= desiredHealthy > 0); the delete is then
  conditioned on the pod's resourceVersion, so a pod that turned Ready meanwhile is
  decided again.
- Before the delete the pod gets the `DisruptionTarget` condition (reason
  EvictionByEvictionAPI), as Kubernetes 1.31+ does. The Eviction's deleteOptions
  (grace period, preconditions, propagation, dryRun: ["All"] as the query's dryRun)
  apply to the delete; a dry run writes nothing.

Bad input (a body that is not an Eviction, a name that differs from the URL's) is 400
and changes nothing.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from apiserver.registry import by_plural
from apiserver.resources import Selection
from machinery import errors, labels, times

if TYPE_CHECKING:
    from apiserver.resources import Resources, WriteOptions

log = logging.getLogger("minik8s.apiserver.eviction")

# eviction.go's MaxDisruptedPodSize: evictions the controller has not confirmed yet.
MAX_DISRUPTED_PODS = 2000
# How often a lost compare-and-swap is decided again before the client is asked to retry.
ATTEMPTS = 20
VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."
MORE_THAN_ONE = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."


def _too_many(message: str, retry_after: int | None = None) -> errors.TooManyRequests:
    return errors.TooManyRequests(VIOLATION, causes=[{"type": "DisruptionBudget", "message": message}],
                                  retry_after=retry_after)


def can_ignore_budget(pod: dict) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed", "Pending") or bool(pod["metadata"].get("deletionTimestamp"))


def pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [] if isinstance(c, dict))


def selects(pdb: dict, pod: dict) -> bool:
    """policy/v1: an empty selector selects every pod of the namespace; none selects none."""
    try:
        sel = labels.from_label_selector((pdb.get("spec") or {}).get("selector"))
    except errors.APIError:
        return False
    return sel.matches(pod["metadata"].get("labels") or {})


def check_body(body: Any, name: str) -> dict:
    if not isinstance(body, dict):
        raise errors.BadRequest("the body of the request must be an Eviction")
    given = (body.get("metadata") or {}).get("name") if isinstance(body.get("metadata"), dict) else None
    if given and given != name:
        raise errors.BadRequest("name in URL does not match name in Eviction object")
    options = body.get("deleteOptions") or {}
    if not isinstance(options, dict):
        raise errors.BadRequest("deleteOptions must be an object")
    return options


async def evict(resources: Resources, namespace: str, name: str, body: Any, opts: WriteOptions) -> None:
    """Evict pod `name`, or raise the APIError that says why not."""
    options = dict(check_body(body, name))
    dry = options.pop("dryRun", None)
    if dry is not None:
        if not isinstance(dry, list) or any(d != "All" for d in dry):
            raise errors.BadRequest(f"unsupported dryRun value in deleteOptions: {dry!r}")
        if dry:
            opts = replace(opts, dry_run=True)
    pods, pdbs = by_plural("pods"), by_plural("poddisruptionbudgets")
    assert pods is not None and pdbs is not None
    for _ in range(ATTEMPTS):
        pod = await resources.get(pods, namespace, name)
        if can_ignore_budget(pod):
            return await _delete(resources, pod, options, opts)
        entries, *_ = await resources.list(pdbs, Selection(pdbs, namespace))
        matching = [e.obj for e in entries if selects(e.obj, pod)]
        if not matching:
            return await _delete(resources, pod, options, opts)
        if len(matching) > 1:
            raise errors.InternalError(MORE_THAN_ONE)
        pdb = matching[0]
        status = pdb.get("status") or {}
        if not pod_ready(pod):
            policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
            healthy = status.get("currentHealthy", 0) >= status.get("desiredHealthy", 0) > 0
            if policy == "AlwaysAllow" or healthy:
                # The pod must still be the unready one decided on.
                pinned = dict(options, preconditions={**(options.get("preconditions") or {}),
                                                      "resourceVersion": pod["metadata"]["resourceVersion"]})
                try:
                    return await _delete(resources, pod, pinned, opts)
                except errors.Conflict:
                    continue
        if not await _spend(resources, pdbs, pdb, pod, opts):
            continue  # the budget changed under us: decide again on fresh copies
        return await _delete(resources, pod, options, opts)
    raise errors.TooManyRequests("too many conflicts deciding this eviction: retry", retry_after=1)


async def _spend(resources: Resources, rt: Any, pdb: dict, pod: dict, opts: WriteOptions) -> bool:
    """checkAndDecrement: one disruption taken from the budget; False on a lost swap."""
    md, status = pdb["metadata"], dict(pdb.get("status") or {})
    pdb_name = md["name"]
    if status.get("observedGeneration", 0) < md.get("generation", 1):
        raise _too_many(f"The disruption budget {pdb_name} is still being processed by the server.",
                        retry_after=10)
    allowed = status.get("disruptionsAllowed", 0)
    if allowed < 0:
        raise errors.Forbidden("pdb disruptions allowed is negative")
    disrupted = dict(status.get("disruptedPods") or {})
    if len(disrupted) > MAX_DISRUPTED_PODS:
        raise errors.Forbidden("DisruptedPods map too big - too many evictions not confirmed by PDB controller")
    if allowed == 0:
        raise _too_many(f"The disruption budget {pdb_name} needs {status.get('desiredHealthy', 0)} "
                        f"healthy pods and has {status.get('currentHealthy', 0)} currently")
    if opts.dry_run:
        return True
    disrupted[pod["metadata"]["name"]] = times.rfc3339()
    status.update(disruptionsAllowed=allowed - 1, disruptedPods=disrupted)
    new = {**pdb, "status": status}
    try:
        await resources.update(rt, md["namespace"], pdb_name, new, _plain(opts), subresource="status")
    except errors.Conflict:
        return False
    return True


def _plain(opts: WriteOptions) -> WriteOptions:
    """The eviction's own writes: no admission of the user's request, no field check."""
    return replace(opts, admit=None, field_validation="", warnings=None)


async def _delete(resources: Resources, pod: dict, options: dict, opts: WriteOptions) -> None:
    pods = by_plural("pods")
    assert pods is not None
    md = pod["metadata"]
    if not opts.dry_run and not md.get("deletionTimestamp"):
        options = await _mark_disruption_target(resources, pods, pod, options, opts)
    await resources.delete(pods, md["namespace"], md["name"], options, opts)


async def _mark_disruption_target(resources: Resources, pods: Any, pod: dict, options: dict,
                                  opts: WriteOptions) -> dict:
    """The DisruptionTarget condition, so the pod's owner can tell an eviction from a
    crash. A resourceVersion precondition is checked here and moved to the marked pod's,
    as addConditionAndDeletePod does. -> the delete's options."""
    md = pod["metadata"]
    pre = options.get("preconditions") or {}
    pinned = pre.get("resourceVersion")

    def add(obj: dict, revision: int) -> dict:
        if pinned and pinned != str(revision):
            raise errors.conflict("pods", md["name"], why=f"Precondition failed: ResourceVersion in "
                                  f"precondition: {pinned}, ResourceVersion in object meta: {revision}")
        status = obj.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"]
        conditions.append({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                           "message": "Eviction API: evicting", "lastTransitionTime": times.rfc3339()})
        status["conditions"] = conditions
        return obj

    try:
        marked, _ = await resources.guaranteed_update(pods, pods.key(md["namespace"], md["name"]), add,
                                                      opts=_plain(opts))
    except errors.NotFound:
        return options  # the delete that follows reports it
    if pinned:
        return dict(options, preconditions={**pre, "resourceVersion": marked["metadata"]["resourceVersion"]})
    return options
