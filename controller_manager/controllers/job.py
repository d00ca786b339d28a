"""The Job controller (pkg/controller/job, Kubernetes 1.32): runs a Job's pods until
enough succeed, or the Job fails.

What it guarantees, per Job:
- Pods: at most `parallelism` active at once, never more than the completions still
  missing. Each pod is created from the template with our controller reference and
  the `batch.kubernetes.io/job-tracking` finalizer. In Indexed mode each pod carries
  its index (the `batch.kubernetes.io/job-completion-index` annotation and label, a
  `JOB_COMPLETION_INDEX` env var read from the annotation, hostname `<job>-<index>`)
  and the lowest indexes not yet succeeded or running are created first. Orphan pods
  matching the selector are adopted (reference and finalizer added) after a fresh read
  of the Job; pods another controller owns are never touched.
- Counting survives restarts (the finalizer protocol of trackJobStatusAndRemoveFinalizers):
  a finished pod's uid is first written to `status.uncountedTerminatedPods`, then its
  finalizer is removed, then, in one status write, the uid leaves the uncounted list and
  the count grows. A restart between any two steps resumes from what is stored, so a
  completion is never counted twice or lost. Finalizer removals not yet seen in the
  cache are remembered, so a lagging cache does not count a pod again.
- Failed pods are replaced after an exponential back-off (10 s doubling, at most 6 min,
  from the last failure after the last success, read from the pods themselves).
- podFailurePolicy rules, first match wins: FailJob fails the Job (reason
  PodFailurePolicy), Ignore does not count the failure, Count counts it. FailIndex is
  not supported (it needs backoffLimitPerIndex, which is not implemented).
- The Job fails when failures exceed `backoffLimit` (BackoffLimitExceeded; with
  restartPolicy OnFailure container restarts count too), or when it has been active
  `activeDeadlineSeconds` (DeadlineExceeded). It first gets FailureTarget, its active
  pods are deleted, and Failed once none is left, with a Warning event of that reason.
  Success: SuccessCriteriaMet, then Complete with `completionTime` once no pod runs.
- `suspend: true` deletes the active pods (Suspended condition, `Suspended` event);
  resuming sets a new `startTime` (`Resumed`), and the deadline counts only while the
  Job is not suspended.
- A pod deleted before it finished counts as failed (as Kubernetes counts it, whoever
  deleted it), unless only Failed pods are replaced (`podReplacementPolicy: Failed`,
  implied by a podFailurePolicy): then it counts once its phase is Failed.
- Status (`active`, `ready`, `terminating`, `succeeded`, `failed`, `startTime`,
  `completedIndexes`, conditions) goes through the status subresource, only when it
  changed. Events are Kubernetes' (SuccessfulCreate, SuccessfulDelete, Completed, ...).

Wall time comes from the injected clock (`clock.now()`), so tests move time at will.
Concurrency: one asyncio loop; the work queue never hands one Job to two workers.
"""
from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass
from typing import Any

from client.clock import Clock
from client.events import NORMAL, WARNING, EventRecorder
from client.informer import LABEL, NAMESPACE, OWNER_UID, key_of
from controller_manager.controller import Controller
from controller_manager.controller_utils import (Expectations, controller_of, controller_ref,
                                                 get_condition, parse_time, selector_of, set_condition)
from machinery import errors, times

log = logging.getLogger("minik8s.controller.job")

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
DEFAULT_BACKOFF = 10.0   # DefaultJobPodFailureBackOff
MAX_BACKOFF = 360.0      # MaxJobPodFailureBackOff
MAX_UNCOUNTED = 500      # uids recorded per status write (MaxUncountedPods)
MAX_POD_CHANGES = 500    # creates or deletes per sync (MaxPodCreateDeletePerSync)

COMPLETE, FAILED = "Complete", "Failed"
FAILURE_TARGET, SUCCESS_CRITERIA_MET, SUSPENDED = "FailureTarget", "SuccessCriteriaMet", "Suspended"


def has_condition(job: dict, ctype: str) -> bool:
    c = get_condition(job.get("status") or {}, ctype)
    return c is not None and c.get("status") == "True"


def is_finished(job: dict) -> bool:
    return has_condition(job, COMPLETE) or has_condition(job, FAILED)


def finish_time(job: dict) -> float | None:
    """When the Job's Complete or Failed condition became True (what the TTL counts from)."""
    for ctype in (COMPLETE, FAILED):
        c = get_condition(job.get("status") or {}, ctype)
        if c is not None and c.get("status") == "True":
            t = parse_time(c.get("lastTransitionTime"))
            return t.timestamp() if t else None
    return None


def _phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase", "")


def _has_finalizer(pod: dict) -> bool:
    return TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or ())


def _index(pod: dict) -> int | None:
    raw = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _pod_finished_at(pod: dict) -> float:
    """When a finished pod's last container ended (else its last condition change)."""
    status = pod.get("status") or {}
    ends = [parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
            for cs in status.get("containerStatuses") or ()]
    ends += [parse_time(c.get("lastTransitionTime")) for c in status.get("conditions") or ()]
    known = [t.timestamp() for t in ends if t is not None]
    if known:
        return max(known)
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    return created.timestamp() if created else 0.0


def format_indexes(indexes: set[int]) -> str:
    """`1,3-5,7`: the intervals of sorted indexes, as completedIndexes is written."""
    out, run = [], []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def parse_indexes(text: str | None) -> set[int]:
    out: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            out.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            continue
    return out


def backoff_delay(failures: int, base: float = DEFAULT_BACKOFF, cap: float = MAX_BACKOFF) -> float:
    """Back-off before the next pod after `failures` consecutive failures."""
    if failures <= 0:
        return 0.0
    return min(base * 2 ** (failures - 1), cap)


def only_replace_failed_pods(job: dict) -> bool:
    """podReplacementPolicy Failed (implied by a podFailurePolicy): a replacement waits
    until the pod it replaces has failed, and a deleted pod is no failure by itself."""
    spec = job.get("spec") or {}
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def _rule_matches(rule: dict, pod: dict) -> str | None:
    """A podFailurePolicy rule against a failed pod: a message saying why it matched."""
    md, status = pod["metadata"], pod.get("status") or {}
    codes = rule.get("onExitCodes")
    if isinstance(codes, dict):
        values, op, only = set(codes.get("values") or ()), codes.get("operator"), codes.get("containerName")
        for key in ("initContainerStatuses", "containerStatuses"):
            for cs in status.get(key) or ():
                if only and cs.get("name") != only:
                    continue
                term = (cs.get("state") or {}).get("terminated")
                if not term:
                    continue
                code = term.get("exitCode", 0)
                if code == 0:
                    continue  # a container that succeeded never matches
                if (op == "In" and code in values) or (op == "NotIn" and code not in values):
                    return (f"Container {cs.get('name')} for pod {md['namespace']}/{md['name']} "
                            f"failed with exit code {code}")
        return None
    for pattern in rule.get("onPodConditions") or ():
        for c in status.get("conditions") or ():
            if c.get("type") == pattern.get("type") and c.get("status") == pattern.get("status", "True"):
                return f"Pod {md['namespace']}/{md['name']} has condition {c['type']}"
    return None


def match_pod_failure_policy(job: dict, pod: dict) -> tuple[str | None, str]:
    """-> (action of the first matching rule, or None when none matches, message)."""
    pfp = (job.get("spec") or {}).get("podFailurePolicy") or {}
    for i, rule in enumerate(pfp.get("rules") or ()):
        why = _rule_matches(rule, pod)
        if why is not None:
            action = rule.get("action")
            return action, f"{why} matching {action} rule at index {i}"
    return None, ""


@dataclass
class _Sync:
    """What one sync of a Job works out."""
    job: dict
    status: dict
    pods: list[dict]
    active: list[dict]
    now: float
    new_failed_count: int = 0


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    backoff_base: float = DEFAULT_BACKOFF  # seconds before the first replacement of a failed pod


class JobController(Controller):
    name = "job"
    Options = JobOptions

    def __init__(self, client, factory, *, recorder: EventRecorder | None = None,
                 clock: Clock | None = None, options: JobOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        options = options or JobOptions()
        self.backoff_base = options.backoff_base
        self.expectations = Expectations(self.clock)
        # job key -> uids whose finalizer we removed but the cache still shows.
        self.finalizers_removed: dict[str, set[str]] = {}
        self.job_informer = factory.informer("jobs")
        self.pod_informer = factory.informer("pods")
        self.job_informer.add_handler(on_add=self._job_changed, on_update=lambda o, n: self._job_changed(n),
                                      on_delete=self._job_deleted)
        self.pod_informer.add_handler(on_add=self._pod_added, on_update=self._pod_updated,
                                      on_delete=self._pod_deleted)
        self.informers += [self.job_informer, self.pod_informer]

    # -- handlers: keys and expectation bookkeeping only --------------------------------

    def _job_changed(self, job: dict) -> None:
        self.enqueue(key_of(job))

    def _job_deleted(self, job: dict) -> None:
        key = key_of(job)
        self.expectations.delete(key)
        self.finalizers_removed.pop(key, None)
        # Its pods may still hold our finalizer: each is released by its own key.
        for pod in self.pod_informer.store.by_index(OWNER_UID, job["metadata"].get("uid", "")):
            if _has_finalizer(pod):
                self.enqueue(("pod", key_of(pod)))

    def _job_key(self, pod: dict) -> str | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "Job" or not ref.get("apiVersion", "").startswith("batch/"):
            return None
        key = f"{pod['metadata']['namespace']}/{ref.get('name')}"
        job = self.job_informer.store.get(key)
        if job is None or job["metadata"].get("uid") != ref.get("uid"):
            if _has_finalizer(pod):
                self.enqueue(("pod", key_of(pod)))  # an orphan holding our finalizer
            return None
        return key

    def _enqueue_adopters(self, pod: dict) -> None:
        """An orphan: the Jobs of its namespace whose selector matches it may adopt it."""
        labels = pod["metadata"].get("labels") or {}
        for job in self.job_informer.store.by_index(NAMESPACE, pod["metadata"]["namespace"]):
            try:
                sel = selector_of(job)
            except errors.APIError:
                continue
            if not sel.empty and sel.matches(labels) and not is_finished(job):
                self.enqueue(key_of(job))

    def _pod_added(self, pod: dict) -> None:
        if controller_of(pod) is None:
            if not pod["metadata"].get("deletionTimestamp"):
                self._enqueue_adopters(pod)
            return
        key = self._job_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.enqueue(key)

    def _pod_updated(self, old: dict, new: dict) -> None:
        if controller_of(new) is None:
            if not new["metadata"].get("deletionTimestamp"):
                self._enqueue_adopters(new)
            return
        key = self._job_key(new)
        if key is None:
            return
        if not _has_finalizer(new):
            self.finalizers_removed.get(key, set()).discard(new["metadata"]["uid"])
        if new["metadata"].get("deletionTimestamp") and not old["metadata"].get("deletionTimestamp"):
            self.expectations.deletion_observed(key, key_of(new))
        self.enqueue(key)

    def _pod_deleted(self, pod: dict) -> None:
        key = self._job_key(pod)
        if key is None:
            return
        self.finalizers_removed.get(key, set()).discard(pod["metadata"]["uid"])
        self.expectations.deletion_observed(key, key_of(pod))
        self.enqueue(key)

    # -- reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: Any) -> None:
        if isinstance(key, tuple):
            await self._release_orphan(key[1])
            return
        job = self.job_informer.store.get(key)
        if job is None:
            self.expectations.delete(key)
            self.finalizers_removed.pop(key, None)
            return
        if job["metadata"].get("deletionTimestamp") and not is_finished(job):
            # Being deleted: its pods go with it; only our finalizers must not hold them.
            await self._remove_finalizers(key, [p for p in self._pods(job) if _has_finalizer(p)])
            return
        await self.sync_job(key, job)

    def _pods(self, job: dict) -> list[dict]:
        uid = job["metadata"]["uid"]
        return [p for p in self.pod_informer.store.by_index(OWNER_UID, uid)
                if (controller_of(p) or {}).get("uid") == uid]

    async def _adopt_orphans(self, job: dict) -> list[dict]:
        """ClaimPods' adoption: pods matching the Job's selector that no controller owns
        become the Job's (our controller reference and tracking finalizer), once a fresh
        read shows the Job is still the same live object."""
        md = job["metadata"]
        try:
            selector = selector_of(job)
        except errors.APIError:
            return []
        if selector.empty:
            return []
        store, keys = self.pod_informer.store, None
        for req in selector.requirements:
            value = selector.requires_exact_match(req.key)
            if value is not None:
                found = store.index_keys(LABEL, f"{req.key}={value}")
                keys = found if keys is None or len(found) < len(keys) else keys
        orphans = []
        for k in store.index_keys(NAMESPACE, md["namespace"]) if keys is None else keys:
            pod = store.get(k)
            if pod is not None and pod["metadata"].get("namespace") == md["namespace"] \
                    and controller_of(pod) is None and not pod["metadata"].get("deletionTimestamp") \
                    and selector.matches(pod["metadata"].get("labels")):
                orphans.append(pod)
        if not orphans:
            return []
        fresh = await self.client.get("jobs", md["name"], namespace=md["namespace"])
        if fresh["metadata"].get("uid") != md["uid"] or fresh["metadata"].get("deletionTimestamp"):
            return []
        adopted = []
        for pod in orphans:
            pmd = pod["metadata"]
            try:
                adopted.append(await self.client.patch(
                    "pods", pmd["name"], namespace=pmd["namespace"], patch_type="strategic",
                    patch={"metadata": {"ownerReferences": [controller_ref(job)],
                                        "finalizers": [TRACKING_FINALIZER], "uid": pmd["uid"]}}))
            except (errors.NotFound, errors.Conflict):
                pass  # gone, or someone else's meanwhile
        return adopted

    async def _release_orphan(self, pod_key: str) -> None:
        pod = self.pod_informer.store.get(pod_key)
        if pod is None or not _has_finalizer(pod):
            return
        ref = controller_of(pod) or {}
        try:
            live = await self.client.get("jobs", ref.get("name", ""), namespace=pod["metadata"]["namespace"])
            if live["metadata"].get("uid") == ref.get("uid") and not live["metadata"].get("deletionTimestamp"):
                self.enqueue(f"{pod['metadata']['namespace']}/{ref.get('name')}")
                return
        except errors.NotFound:
            pass
        await self._patch_finalizer(pod)

    async def _patch_finalizer(self, pod: dict) -> None:
        md = pod["metadata"]
        try:
            await self.client.patch("pods", md["name"], namespace=md["namespace"], patch_type="strategic",
                                    patch={"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
                                                        "uid": md["uid"]}})
        except (errors.NotFound, errors.Conflict):
            pass  # gone, or another pod of the same name now

    async def _remove_finalizers(self, key: str, pods: list[dict]) -> None:
        """Take our finalizer off `pods`; those it came off are remembered until the cache
        shows it (a pod whose patch failed keeps it, and is tried again)."""
        results = await asyncio.gather(*(self._patch_finalizer(p) for p in pods), return_exceptions=True)
        done = {p["metadata"]["uid"] for p, r in zip(pods, results) if not isinstance(r, BaseException)}
        if done:
            self.finalizers_removed.setdefault(key, set()).update(done)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]

    def _event(self, job: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(job, type_, reason, message)

    def _condition(self, ctype: str, reason: str, message: str, now: float, status: str = "True") -> dict:
        t = times.rfc3339(now)
        return {"type": ctype, "status": status, "lastProbeTime": t, "lastTransitionTime": t,
                "reason": reason, "message": message}

    async def sync_job(self, key: str, job: dict) -> None:
        spec = job.get("spec") or {}
        status = copy.deepcopy(job.get("status") or {})
        now = self.clock.now()
        pods = self._pods(job)
        uncounted = status.get("uncountedTerminatedPods") or {}
        unc_succeeded = list(uncounted.get("succeeded") or ())
        unc_failed = list(uncounted.get("failed") or ())
        in_uncounted = set(unc_succeeded) | set(unc_failed)
        removing = self.finalizers_removed.get(key, set())
        if is_finished(job):
            # Nothing more is counted: only our finalizers must not hold any pod.
            await self._remove_finalizers(key, [p for p in pods if _has_finalizer(p)])
            return
        pods += await self._adopt_orphans(job)
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")

        # 1. Newly finished pods: into uncountedTerminatedPods (and the policy's verdict).
        failure: tuple[str, str] | None = None   # (reason, message) of a FailureTarget
        completed = parse_indexes(status.get("completedIndexes")) if indexed else set()
        done_pods: list[dict] = []               # finished pods whose finalizer goes
        room = MAX_UNCOUNTED - len(in_uncounted)
        replace_failed_only = only_replace_failed_pods(job)
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if not _has_finalizer(pod) or uid in removing:
                continue
            phase = _phase(pod)
            succeeded = phase == "Succeeded"
            # A pod deleted before it finished counts as failed (isPodFailed), unless only
            # Failed pods are replaced: then it counts once the kubelet says it failed.
            failed = phase == "Failed" or (
                bool(pod["metadata"].get("deletionTimestamp")) and not succeeded and not replace_failed_only)
            if not (succeeded or failed):
                continue
            if uid in in_uncounted:
                done_pods.append(pod)
                continue
            if room <= 0:
                break
            idx = _index(pod) if indexed else None
            if indexed and (idx is None or not 0 <= idx < (completions or 0)):
                done_pods.append(pod)  # an index out of range never counts
                continue
            if succeeded:
                if indexed and idx in completed:
                    done_pods.append(pod)  # that index already succeeded once
                    continue
                unc_succeeded.append(uid)
                if indexed and idx is not None:
                    completed.add(idx)
            else:
                action, message = match_pod_failure_policy(job, pod)
                if action == "FailJob" and failure is None:
                    failure = ("PodFailurePolicy", message)
                if action != "Ignore":
                    unc_failed.append(uid)
            in_uncounted.add(uid)
            done_pods.append(pod)
            room -= 1

        # 2. Counts as they will be once the uncounted are flushed.
        succeeded_n = status.get("succeeded", 0) + len(unc_succeeded)
        failed_n = status.get("failed", 0) + len(unc_failed)
        active = [p for p in pods if _phase(p) not in ("Succeeded", "Failed")
                  and not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in pods if p["metadata"].get("deletionTimestamp")
                       and _phase(p) not in ("Succeeded", "Failed")]
        suspended = spec.get("suspend") is True
        events: list[tuple[str, str, str]] = []

        # Start time and suspension.
        cond = get_condition(status, SUSPENDED)
        was_suspended = cond is not None and cond.get("status") == "True"
        conditions = status.get("conditions") or []
        if suspended and not was_suspended and not has_condition(job, FAILURE_TARGET) \
                and not has_condition(job, SUCCESS_CRITERIA_MET):
            conditions = set_condition(conditions, self._condition(SUSPENDED, "JobSuspended", "Job suspended", now))
            events.append((NORMAL, "Suspended", "Job suspended"))
        elif not suspended and was_suspended:
            conditions = set_condition(conditions, self._condition(
                SUSPENDED, "JobResumed", "Job resumed", now, status="False"))
            status["startTime"] = times.rfc3339(now)
            events.append((NORMAL, "Resumed", "Job resumed"))
        if conditions:
            status["conditions"] = conditions
        if not suspended and not status.get("startTime"):
            status["startTime"] = times.rfc3339(now)

        # Failure and success targets.
        if has_condition(job, FAILURE_TARGET) or has_condition(job, SUCCESS_CRITERIA_MET):
            pass  # decided already: waiting for the pods to go
        elif failure is None and self._past_backoff_limit(job, failed_n, active):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif failure is None and self._past_deadline(job, status, now):
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        if failure is not None and not has_condition(job, FAILURE_TARGET) \
                and not has_condition(job, SUCCESS_CRITERIA_MET):
            status["conditions"] = set_condition(status.get("conditions") or [],
                                                 self._condition(FAILURE_TARGET, *failure, now))
        elif not has_condition(job, FAILURE_TARGET) and not has_condition(job, SUCCESS_CRITERIA_MET) \
                and self._succeeded(spec, succeeded_n, completed, active):
            status["conditions"] = set_condition(status.get("conditions") or [], self._condition(
                SUCCESS_CRITERIA_MET, "CompletionsReached", "Reached expected number of succeeded pods", now))

        target_failed = get_condition(status, FAILURE_TARGET)
        target_done = get_condition(status, SUCCESS_CRITERIA_MET)
        ending = (target_failed or {}).get("status") == "True" \
            or (target_done or {}).get("status") == "True"

        # 3. Record the uncounted before any finalizer goes.
        status["uncountedTerminatedPods"] = {k: v for k, v in (("succeeded", unc_succeeded),
                                                                ("failed", unc_failed)) if v}
        if indexed:
            status["completedIndexes"] = format_indexes(completed)
        job = await self._write_status(job, status)
        status = copy.deepcopy(job.get("status") or {})

        # 4. Pods: delete what must stop, create what is missing.
        manage_error: BaseException | None = None
        created = deleted = 0
        if self.expectations.satisfied(key):
            try:
                if ending or suspended:
                    deleted = await self._delete_pods(key, job, active)
                else:
                    created, deleted = await self._manage(key, job, active, pods, completed, now)
            except errors.APIError as exc:
                manage_error = exc

        # 5. Finalizers off the finished pods, then flush the uncounted into the counts.
        await self._remove_finalizers(key, done_pods)
        gone = set(self.finalizers_removed.get(key, set()))
        by_uid = {p["metadata"]["uid"]: p for p in self._pods(job)}
        for uid in list(in_uncounted):
            pod = by_uid.get(uid)
            if pod is None or not _has_finalizer(pod) or uid in gone:
                continue
            in_uncounted.discard(uid)  # still held: counted by a later sync
        still_s = [u for u in unc_succeeded if u not in in_uncounted]
        still_f = [u for u in unc_failed if u not in in_uncounted]
        status["succeeded"] = status.get("succeeded", 0) + len(unc_succeeded) - len(still_s)
        status["failed"] = status.get("failed", 0) + len(unc_failed) - len(still_f)
        status["uncountedTerminatedPods"] = {k: v for k, v in (("succeeded", still_s), ("failed", still_f)) if v}
        for k in ("succeeded", "failed"):
            if not status[k]:
                status.pop(k)
        n_active = max(len(active) + created - deleted, 0)
        if n_active:
            status["active"] = n_active
        else:
            status.pop("active", None)
        status["ready"] = 0 if ending or suspended else sum(
            1 for p in active if any(c.get("type") == "Ready" and c.get("status") == "True"
                                     for c in (p.get("status") or {}).get("conditions") or ()))
        status["terminating"] = len(terminating) + deleted

        # 6. The terminal condition, once no pod is left running and all is counted.
        if ending and not still_s and not still_f and not n_active and not status["terminating"]:
            if (target_failed or {}).get("status") == "True":
                status["conditions"] = set_condition(status.get("conditions") or [], self._condition(
                    FAILED, target_failed["reason"], target_failed["message"], now))
                events.append((WARNING, target_failed["reason"], target_failed["message"]))
            else:
                status["conditions"] = set_condition(status.get("conditions") or [], self._condition(
                    COMPLETE, "CompletionsReached", "Reached expected number of succeeded pods", now))
                status["completionTime"] = times.rfc3339(now)
                events.append((NORMAL, "Completed", "Job completed"))
        job = await self._write_status(job, status)
        for type_, reason, message in events:
            self._event(job, type_, reason, message)
        if manage_error is not None:
            raise manage_error
        self._requeue_for_deadline(key, job, now)

    # -- decisions ------------------------------------------------------------------------

    def _past_backoff_limit(self, job: dict, failed: int, active: list[dict]) -> bool:
        spec = job.get("spec") or {}
        limit = spec.get("backoffLimit", 6)
        if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") == "OnFailure":
            # pastBackoffLimitOnFailure: container restarts of running and pending pods.
            restarts = sum(cs.get("restartCount", 0) for p in active if _phase(p) in ("Running", "Pending", "")
                           for key in ("initContainerStatuses", "containerStatuses")
                           for cs in (p.get("status") or {}).get(key) or ())
            if (limit == 0 and restarts > 0) or (limit > 0 and restarts >= limit):
                return True
        return failed > limit

    def _past_deadline(self, job: dict, status: dict, now: float) -> bool:
        if (job.get("spec") or {}).get("suspend") is True:
            return False  # the deadline counts continuous activity only
        ads = (job.get("spec") or {}).get("activeDeadlineSeconds")
        start = parse_time(status.get("startTime"))
        return ads is not None and start is not None and now - start.timestamp() >= ads

    def _succeeded(self, spec: dict, succeeded: int, completed: set[int], active: list[dict]) -> bool:
        completions = spec.get("completions")
        if spec.get("completionMode") == "Indexed":
            return completions is not None and len(completed) >= completions
        if completions is None:
            return succeeded > 0 and not active  # a work queue: one success, then all done
        return succeeded >= completions and not active

    def _requeue_for_deadline(self, key: str, job: dict, now: float) -> None:
        ads = (job.get("spec") or {}).get("activeDeadlineSeconds")
        start = parse_time((job.get("status") or {}).get("startTime"))
        if ads is not None and start is not None and not is_finished(job) \
                and (job.get("spec") or {}).get("suspend") is not True:
            self.queue.add_after(key, max(start.timestamp() + ads - now, 0.0) + 0.01)

    def _backoff_remaining(self, job: dict, pods: list[dict], now: float) -> float:
        """Seconds until a replacement may be created: the pods that failed after the last
        success count as consecutive failures (newBackoffRecord, from the pods)."""
        last_success = max((_pod_finished_at(p) for p in pods if _phase(p) == "Succeeded"), default=0.0)
        fails = [_pod_finished_at(p) for p in pods if _phase(p) == "Failed"]
        fails = [t for t in fails if t >= last_success]
        if not fails:
            return 0.0
        return max(max(fails) + backoff_delay(len(fails), self.backoff_base) - now, 0.0)

    async def _manage(self, key: str, job: dict, active: list[dict], pods: list[dict],
                      completed: set[int], now: float) -> tuple[int, int]:
        spec = job.get("spec") or {}
        parallelism = spec.get("parallelism", 1)
        completions = spec.get("completions")
        status = job.get("status") or {}
        uncounted = status.get("uncountedTerminatedPods") or {}
        succeeded = status.get("succeeded", 0) + len(uncounted.get("succeeded") or ())
        indexed = spec.get("completionMode") == "Indexed"
        if indexed:
            running: dict[int, list[dict]] = {}
            for p in active:
                idx = _index(p)
                running.setdefault(idx if idx is not None else -1, []).append(p)
            # Duplicates, out-of-range and already-completed indexes go first.
            surplus = [p for idx, ps in running.items() for p in
                       (ps if idx < 0 or idx >= (completions or 0) or idx in completed else ps[1:])]
            alive = len(active) - len(surplus)
            excess = max(alive - parallelism, 0)
            if excess:
                keep = [p for p in active if p not in surplus]
                surplus += sorted(keep, key=lambda p: -(_index(p) or 0))[:excess]
            if surplus:
                return 0, await self._delete_pods(key, job, surplus[:MAX_POD_CHANGES])
            pending = [i for i in range(completions or 0) if i not in completed and i not in running]
            want = min(parallelism - alive, len(pending))
            to_create: list[int | None] = list(pending[:want])
        else:
            if completions is None:
                # A work queue: once one pod succeeded, no new pod starts.
                want_active = len(active) if succeeded > 0 else parallelism
            else:
                want_active = min(parallelism, max(completions - succeeded, 0))
            if len(active) > want_active:
                victims = sorted(active, key=lambda p: (bool((p.get("spec") or {}).get("nodeName")),
                                                        _phase(p) == "Running"))
                return 0, await self._delete_pods(key, job, victims[:len(active) - want_active])
            # With only Failed pods replaced, a terminating pod still holds its place.
            terminating = sum(1 for p in pods if p["metadata"].get("deletionTimestamp")
                              and _phase(p) not in ("Succeeded", "Failed")) if only_replace_failed_pods(job) else 0
            to_create = [None] * (want_active - terminating - len(active))
        if not to_create:
            return 0, 0
        wait = self._backoff_remaining(job, pods, now)
        if wait > 0:
            self.queue.add_after(key, wait)
            return 0, 0
        to_create = to_create[:MAX_POD_CHANGES]
        self.expectations.expect_creations(key, len(to_create))
        results = await asyncio.gather(*(self._create_pod(job, idx) for idx in to_create),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for _ in failed:
            self.expectations.creation_observed(key)
        if failed:
            raise failed[0]
        return len(to_create), 0

    async def _create_pod(self, job: dict, index: int | None) -> None:
        pod = self.pod_for(job, index)
        try:
            created = await self.client.create(pod, namespace=job["metadata"]["namespace"])
        except errors.APIError as exc:
            self._event(job, WARNING, "FailedCreate", f"Error creating: {exc.message}")
            raise
        self._event(job, NORMAL, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")

    @staticmethod
    def pod_for(job: dict, index: int | None) -> dict:
        """A pod from the Job's template (GetPodFromTemplate, plus the index in Indexed mode)."""
        template = (job.get("spec") or {}).get("template") or {}
        tmd = template.get("metadata") or {}
        name = job["metadata"]["name"]
        md: dict = {"generateName": f"{name}-" if index is None else f"{name}-{index}-",
                    "namespace": job["metadata"]["namespace"],
                    "labels": copy.deepcopy(tmd.get("labels") or {}),
                    "ownerReferences": [controller_ref(job)],
                    "finalizers": [*(tmd.get("finalizers") or ()), TRACKING_FINALIZER]}
        if tmd.get("annotations"):
            md["annotations"] = copy.deepcopy(tmd["annotations"])
        spec = copy.deepcopy(template.get("spec") or {})
        if index is not None:
            md.setdefault("annotations", {})[COMPLETION_INDEX] = str(index)
            md["labels"][COMPLETION_INDEX] = str(index)
            spec["hostname"] = f"{name}-{index}"
            env_var = {"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
                "apiVersion": "v1", "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}}
            for key in ("initContainers", "containers"):
                for c in spec.get(key) or ():
                    env = c.setdefault("env", [])
                    if not any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
                        env.append(env_var)
        return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}

    async def _delete_pods(self, key: str, job: dict, pods: list[dict]) -> int:
        if not pods:
            return 0
        self.expectations.expect_deletions(key, [key_of(p) for p in pods])

        async def delete(pod: dict) -> bool:
            md = pod["metadata"]
            try:
                await self.client.delete("pods", md["name"], namespace=md["namespace"])
            except errors.NotFound:
                self.expectations.deletion_observed(key, key_of(pod))
                return False
            except errors.APIError as exc:
                self.expectations.deletion_observed(key, key_of(pod))
                self._event(job, WARNING, "FailedDelete", f"Error deleting: {exc.message}")
                raise
            self._event(job, NORMAL, "SuccessfulDelete", f"Deleted pod: {md['name']}")
            return True
        results = await asyncio.gather(*(delete(p) for p in pods), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        return sum(1 for r in results if r is True)

    async def _write_status(self, job: dict, status: dict) -> dict:
        if status == (job.get("status") or {}):
            return job
        return await self.client.update_status({**job, "status": status})
