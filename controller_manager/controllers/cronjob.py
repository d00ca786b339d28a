"""The CronJob controller (pkg/controller/cronjob, Kubernetes 1.32's ControllerV2): makes
a Job for each time a CronJob's schedule comes due.

What it guarantees, per CronJob:
- The schedule is standard cron (five fields, via `croniter`) or one of the macros
  @yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly, read in `spec.timeZone`
  (an IANA zone, zoneinfo) or UTC without one.
- At most one Job per scheduled time, named `<cronjob>-<scheduled time in minutes since
  the epoch>`: the name is the lock, so a restart between creating a Job and recording
  it in `status.active` never makes a second one (AlreadyExists: the Job is adopted
  into the status if we own it). Each Job carries the
  `batch.kubernetes.io/cronjob-scheduled-timestamp` annotation (RFC 3339, in the time
  zone), the template's labels and annotations and our controller reference.
- Only the most recent missed time is run; more than 100 missed times also make a
  `TooManyMissedTimes` Warning. A time older than `startingDeadlineSeconds` is not run
  (`MissSchedule`), and with a deadline only times inside it count as missed.
- concurrencyPolicy: Allow starts regardless; Forbid skips a time while a Job is
  active (`JobAlreadyActive`); Replace deletes the active Jobs first.
- `suspend: true` starts nothing (the status is still kept).
- Status: `active` (references of our unfinished Jobs, pruned of finished or vanished
  ones), `lastScheduleTime`, `lastSuccessfulTime`, written only when changed.
- History: finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`
  are deleted oldest first (Background propagation).
- The next look is queued for the next scheduled time (+100 ms).

`now` is the injected clock's `now()`, so a test picks the time a sync runs at.
Concurrency: one asyncio loop; the work queue never hands one CronJob to two workers.
"""
from __future__ import annotations

import copy
import logging
import zoneinfo
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

from croniter import CroniterError, croniter

from client.clock import Clock
from client.events import NORMAL, WARNING, EventRecorder
from client.informer import OWNER_UID, key_of
from controller_manager.controller import Controller
from controller_manager.controller_utils import controller_of, controller_ref, get_condition, parse_time
from controller_manager.controllers.job import COMPLETE, FAILED, is_finished
from machinery import errors, times

log = logging.getLogger("minik8s.controller.cronjob")

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
NEXT_SCHEDULE_DELTA = 0.1   # seconds after a scheduled time the sync runs
MANY_MISSED = 100


class Schedule:
    """A parsed schedule in a time zone: `next(t)` is the first time strictly after t."""

    def __init__(self, expr: str, tz: str | None):
        self.expr = expr
        self.tz = zoneinfo.ZoneInfo(tz) if tz else timezone.utc
        croniter(expr)  # raises CroniterError / ValueError if it does not parse

    def next(self, t: datetime) -> datetime:
        return croniter(self.expr, t.astimezone(self.tz)).get_next(datetime)


def job_name(cronjob: dict, scheduled: datetime) -> str:
    return f"{cronjob['metadata']['name']}-{int(scheduled.timestamp()) // 60}"


def most_recent_schedule_time(cj: dict, now: datetime, sched: Schedule, *,
                              with_deadline: bool) -> tuple[datetime, datetime | None, int]:
    """-> (the earliest time considered, the latest scheduled time not after `now`
    (None: none missed), the rough number of missed times), as mostRecentScheduleTime."""
    status, spec = cj.get("status") or {}, cj.get("spec") or {}
    earliest = parse_time(status.get("lastScheduleTime")) or parse_time(
        cj["metadata"].get("creationTimestamp")) or now
    deadline = spec.get("startingDeadlineSeconds")
    if with_deadline and deadline is not None:
        earliest = max(earliest, now - timedelta(seconds=deadline))
    t1 = sched.next(earliest)
    if now < t1:
        return earliest, None, 0
    t2 = sched.next(t1)
    if now < t2:
        return earliest, t1, 1
    between = round((t2 - t1).total_seconds())
    if between < 1:
        raise ValueError("time difference between two schedules is less than 1 second")
    missed = int((now - t1).total_seconds()) // between + 1
    # Start a little before the estimate and walk forward: schedules are not regular.
    t = sched.next(t1 + timedelta(seconds=(missed - 2) * between))
    recent = None
    while t <= now:
        recent = t
        t = sched.next(t)
    return earliest, recent, missed


class CronJobController(Controller):
    name = "cronjob"

    def __init__(self, client, factory, *, recorder: EventRecorder | None = None,
                 clock: Clock | None = None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.cj_informer = factory.informer("cronjobs")
        self.job_informer = factory.informer("jobs")
        self.cj_informer.add_handler(on_add=self._cj_changed, on_update=lambda o, n: self._cj_changed(n),
                                     on_delete=self._cj_changed)
        self.job_informer.add_handler(on_add=self._job_changed, on_update=lambda o, n: self._job_changed(n),
                                      on_delete=self._job_changed)
        self.informers += [self.cj_informer, self.job_informer]

    def _cj_changed(self, cj: dict) -> None:
        self.enqueue(key_of(cj))

    def _job_changed(self, job: dict) -> None:
        ref = controller_of(job)
        if ref is not None and ref.get("kind") == "CronJob" and ref.get("apiVersion", "").startswith("batch/"):
            self.enqueue(f"{job['metadata']['namespace']}/{ref.get('name')}")

    def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(obj, type_, reason, message)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), timezone.utc)

    async def reconcile(self, key: Any) -> None:
        cj = self.cj_informer.store.get(key)
        if cj is None:
            return
        uid = cj["metadata"]["uid"]
        jobs = [j for j in self.job_informer.store.by_index(OWNER_UID, uid)
                if (controller_of(j) or {}).get("uid") == uid]
        cj = copy.deepcopy(cj)
        original = copy.deepcopy(cj.get("status") or {})
        requeue = await self.sync_cronjob(cj, jobs)
        if (cj.get("status") or {}) != original:
            cj = await self.client.update_status(cj)
        if not cj["metadata"].get("deletionTimestamp"):
            await self.cleanup_finished_jobs(cj, jobs)
        if requeue is not None:
            self.queue.add_after(key, max(requeue, 0.0))

    async def sync_cronjob(self, cj: dict, jobs: list[dict]) -> float | None:
        """Mutates cj's status; -> seconds until it should be looked at again."""
        now = self.now()
        status = cj.setdefault("status", {})
        active = list(status.get("active") or [])
        children = {j["metadata"]["uid"] for j in jobs}
        for j in jobs:
            juid, jname = j["metadata"]["uid"], j["metadata"]["name"]
            listed = any(r.get("uid") == juid for r in active)
            if not listed and not is_finished(j):
                self._event(cj, WARNING, "UnexpectedJob",
                            f"Saw a job that the controller did not create or forgot: {jname}")
            elif listed and is_finished(j):
                cond = COMPLETE if get_condition(j.get("status") or {}, COMPLETE) else FAILED
                active = [r for r in active if r.get("uid") != juid]
                self._event(cj, NORMAL, "SawCompletedJob", f"Saw completed job: {jname}, condition: {cond}")
            if _succeeded(j):
                done = (j.get("status") or {}).get("completionTime")
                last = parse_time(status.get("lastSuccessfulTime"))
                when = parse_time(done)
                if when is not None and (last is None or when > last):
                    status["lastSuccessfulTime"] = done
        for ref in list(active):
            if ref.get("uid") in children:
                continue
            try:  # the cache may lag: ask the server before calling it gone
                await self.client.get("jobs", ref.get("name", ""), namespace=cj["metadata"]["namespace"])
            except errors.NotFound:
                self._event(cj, NORMAL, "MissingJob", f"Active job went missing: {ref.get('name')}")
                active = [r for r in active if r.get("uid") != ref.get("uid")]
        _set_active(status, active)

        spec = cj.get("spec") or {}
        if cj["metadata"].get("deletionTimestamp") or spec.get("suspend") is True:
            return None
        try:
            sched = Schedule(spec.get("schedule", ""), spec.get("timeZone"))
        except zoneinfo.ZoneInfoNotFoundError as exc:
            self._event(cj, WARNING, "UnknownTimeZone", f"invalid timeZone: {spec.get('timeZone')!r}: {exc}")
            return None
        except (CroniterError, ValueError) as exc:
            self._event(cj, WARNING, "UnparseableSchedule",
                        f"unparseable schedule: {spec.get('schedule')!r} : {exc}")
            return None
        try:
            _, scheduled, missed = most_recent_schedule_time(cj, now, sched, with_deadline=True)
        except ValueError as exc:
            self._event(cj, WARNING, "InvalidSchedule", f"invalid schedule: {spec.get('schedule')} : {exc}")
            return None
        if scheduled is None:
            return self._next_in(cj, now, sched)
        if missed > MANY_MISSED:
            self._event(cj, WARNING, "TooManyMissedTimes", "too many missed start times. Set or decrease "
                        ".spec.startingDeadlineSeconds or check clock skew")
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and scheduled + timedelta(seconds=deadline) < now:
            self._event(cj, WARNING, "MissSchedule", "Missed scheduled time to start a job: "
                        f"{format_datetime(scheduled.astimezone(timezone.utc))}")
            return self._next_in(cj, now, sched)
        name = job_name(cj, scheduled)
        if any(r.get("name") == name for r in active) or \
                parse_time(status.get("lastScheduleTime")) == scheduled.astimezone(timezone.utc):
            return self._next_in(cj, now, sched)
        policy = spec.get("concurrencyPolicy", "Allow")
        if policy == "Forbid" and active:
            self._event(cj, NORMAL, "JobAlreadyActive", "Not starting job because prior execution is "
                        "running and concurrency policy is Forbid")
            return self._next_in(cj, now, sched)
        if policy == "Replace":
            for ref in list(active):
                await self._delete_job(cj, ref.get("name", ""))
                active = [r for r in active if r.get("uid") != ref.get("uid")]
            _set_active(status, active)

        job = self.job_for(cj, scheduled, sched)
        try:
            created = await self.client.create(job, namespace=cj["metadata"]["namespace"])
        except errors.AlreadyExists:
            # Made by an earlier sync whose status write was lost: adopt it if ours.
            created = await self.client.get("jobs", name, namespace=cj["metadata"]["namespace"])
            if (controller_of(created) or {}).get("uid") != cj["metadata"]["uid"] or \
                    any(r.get("uid") == created["metadata"]["uid"] for r in active):
                return None
        except errors.APIError as exc:
            self._event(cj, WARNING, "FailedCreate", f"Error creating job: {exc.message}")
            raise
        else:
            self._event(cj, NORMAL, "SuccessfulCreate", f"Created job {created['metadata']['name']}")
        md = created["metadata"]
        active.append({"kind": "Job", "namespace": md["namespace"], "name": md["name"], "uid": md["uid"],
                       "apiVersion": "batch/v1", "resourceVersion": md.get("resourceVersion", "")})
        _set_active(status, active)
        status["lastScheduleTime"] = times.rfc3339(scheduled.timestamp())
        return self._next_in(cj, now, sched)

    def _next_in(self, cj: dict, now: datetime, sched: Schedule) -> float | None:
        """Seconds from now to the next scheduled time (nextScheduleTimeDuration)."""
        try:
            earliest, recent, _ = most_recent_schedule_time(cj, now, sched, with_deadline=False)
        except ValueError:
            return None
        return (sched.next(recent or earliest) - now).total_seconds() + NEXT_SCHEDULE_DELTA

    @staticmethod
    def job_for(cj: dict, scheduled: datetime, sched: Schedule) -> dict:
        """The Job for one scheduled time (getJobFromTemplate2)."""
        template = (cj.get("spec") or {}).get("jobTemplate") or {}
        tmd = template.get("metadata") or {}
        annotations = copy.deepcopy(tmd.get("annotations") or {})
        annotations[SCHEDULED_TIMESTAMP] = _rfc3339_in(scheduled, sched.tz)
        md: dict = {"name": job_name(cj, scheduled), "annotations": annotations,
                    "ownerReferences": [controller_ref(cj)]}
        if tmd.get("labels"):
            md["labels"] = copy.deepcopy(tmd["labels"])
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": md,
                "spec": copy.deepcopy(template.get("spec") or {})}

    async def _delete_job(self, cj: dict, name: str) -> bool:
        try:
            await self.client.delete("jobs", name, namespace=cj["metadata"]["namespace"],
                                     propagation_policy="Background")
        except errors.NotFound:
            return False
        except errors.APIError as exc:
            self._event(cj, WARNING, "FailedDelete", f"Deleted job: {exc.message}")
            raise
        self._event(cj, NORMAL, "SuccessfulDelete", f"Deleted job {name}")
        return True

    async def cleanup_finished_jobs(self, cj: dict, jobs: list[dict]) -> None:
        """Keep the newest finished Jobs up to each history limit (by start time)."""
        spec = cj.get("spec") or {}
        for limit, pick in ((spec.get("successfulJobsHistoryLimit"), _succeeded),
                            (spec.get("failedJobsHistoryLimit"), _failed)):
            if limit is None:
                continue
            done = sorted((j for j in jobs if pick(j) and not j["metadata"].get("deletionTimestamp")),
                          key=_start_order)
            for j in done[:max(len(done) - limit, 0)]:
                await self._delete_job(cj, j["metadata"]["name"])


def _rfc3339_in(t: datetime, tz: Any) -> str:
    """Go's time.RFC3339 of t in zone tz: `Z` for UTC, else the zone's offset."""
    local = t.astimezone(tz).replace(microsecond=0)
    return local.strftime("%Y-%m-%dT%H:%M:%SZ") if not local.utcoffset() else local.isoformat()


def _set_active(status: dict, active: list[dict]) -> None:
    if active:
        status["active"] = active
    else:
        status.pop("active", None)


def _succeeded(job: dict) -> bool:
    c = get_condition(job.get("status") or {}, COMPLETE)
    return c is not None and c.get("status") == "True"


def _failed(job: dict) -> bool:
    c = get_condition(job.get("status") or {}, FAILED)
    return c is not None and c.get("status") == "True"


def _start_order(job: dict) -> tuple:
    """byJobStartTime: by status.startTime, Jobs without one last, then by name."""
    start = parse_time((job.get("status") or {}).get("startTime"))
    return (start is None, start.timestamp() if start else 0.0, job["metadata"]["name"])
