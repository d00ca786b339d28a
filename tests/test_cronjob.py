"""The CronJob controller against a real API server, with an injected clock: each test
creates a CronJob, moves a FakeClock to a chosen wall time and runs one sync
(`reconcile`), then reads what the server holds. No waiting for minutes.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from client.clock import FakeClock
from client.informer import SharedInformerFactory
from client.rest import Client
from controller_manager.controllers.cronjob import SCHEDULED_TIMESTAMP, CronJobController
from machinery import errors, times
from tests.procs import eventually

TIMEOUT = 20.0


class Events:
    def __init__(self):
        self.items: list[tuple[str, str, str]] = []

    def event(self, obj, type_, reason, message, **_):
        self.items.append((type_, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.items]


class Env:
    def __init__(self, client: Client, ns: str):
        self.client, self.ns = client, ns
        self.factory = SharedInformerFactory(client, namespace=ns)
        self.clock = FakeClock(0.0, wall=time.time())
        self.events = Events()
        self.ctrl = CronJobController(client, self.factory, clock=self.clock, recorder=self.events)

    async def create(self, name: str, schedule: str, **spec) -> datetime:
        """-> the CronJob's creation time (where its schedule starts)."""
        cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
              "spec": {"schedule": schedule, **spec, "jobTemplate": {
                  "metadata": {"labels": {"team": "batch"}},
                  "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                                                 "containers": [{"name": "c", "image": "busybox"}]}}}}}}
        created = await self.client.create(cj, namespace=self.ns)
        await self.settle(name)
        return datetime.fromtimestamp(times.parse(created["metadata"]["creationTimestamp"]), timezone.utc)

    async def settle(self, name: str) -> None:
        """Until the caches hold what the server holds."""
        async def same():
            cj = await self.client.get("cronjobs", name, namespace=self.ns)
            cached = self.ctrl.cj_informer.store.get(f"{self.ns}/{name}")
            jobs = {j["metadata"]["name"]: j["metadata"]["resourceVersion"]
                    for j in (await self.client.list("jobs", namespace=self.ns))["items"]}
            cached_jobs = {j["metadata"]["name"]: j["metadata"]["resourceVersion"]
                           for j in self.ctrl.job_informer.store.list()}
            return cached is not None and cached["metadata"]["resourceVersion"] == \
                cj["metadata"]["resourceVersion"] and jobs == cached_jobs
        await eventually(same, what="caches in step with the server")

    async def sync(self, name: str, at: datetime) -> dict:
        """One sync of `name` at wall time `at`; -> the CronJob as the server has it after."""
        step = at.timestamp() - self.clock.now()
        assert step >= 0, "time only moves forward"
        self.clock.step(step)
        await self.ctrl.reconcile(f"{self.ns}/{name}")
        await self.settle(name)
        return await self.client.get("cronjobs", name, namespace=self.ns)

    async def jobs(self) -> dict[str, dict]:
        return {j["metadata"]["name"]: j for j in (await self.client.list("jobs", namespace=self.ns))["items"]}

    async def finish(self, name: str, ctype: str, *, start: datetime) -> None:
        job = await self.client.get("jobs", name, namespace=self.ns)
        t = times.rfc3339(start.timestamp())
        status = {"startTime": t, "conditions": [
            {"type": ctype, "status": "True", "lastTransitionTime": t, "reason": "Test", "message": ""}]}
        if ctype == "Complete":
            status["completionTime"] = t
        await self.client.update_status({**job, "status": status})


@pytest.fixture
async def env(apiserver, ns):
    async with Client(apiserver.connection()) as client:
        e = Env(client, ns)
        e.factory.start()
        await e.factory.wait_for_cache_sync(TIMEOUT)
        try:
            yield e
        finally:
            await e.factory.stop()


def next_multiple(t: datetime, minutes: int) -> datetime:
    """The first time after t on a multiple of `minutes` (a `*/minutes` schedule)."""
    base = t.replace(second=0, microsecond=0)
    step = minutes - base.minute % minutes
    return base + timedelta(minutes=step)


def minutes(t: datetime) -> int:
    return int(t.timestamp()) // 60


async def test_a_due_time_makes_one_job_named_by_its_minute(env):
    created = await env.create("tick", "*/5 * * * *")
    t1 = next_multiple(created, 5)
    await env.sync("tick", t1 - timedelta(seconds=1))
    assert await env.jobs() == {}
    cj = await env.sync("tick", t1 + timedelta(seconds=10))
    jobs = await env.jobs()
    name = f"tick-{minutes(t1)}"
    assert list(jobs) == [name]
    job = jobs[name]
    assert job["metadata"]["annotations"][SCHEDULED_TIMESTAMP] == t1.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert job["metadata"]["labels"]["team"] == "batch"
    ref = job["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("CronJob", "tick", True)
    assert [a["name"] for a in cj["status"]["active"]] == [name]
    assert cj["status"]["lastScheduleTime"] == times.rfc3339(t1.timestamp())
    assert ("Normal", "SuccessfulCreate", f"Created job {name}") in env.events.items
    # The same time again, or a little later: nothing new.
    await env.sync("tick", t1 + timedelta(seconds=30))
    assert list(await env.jobs()) == [name]


async def test_forbid_skips_a_time_while_a_job_runs(env):
    created = await env.create("solo", "*/5 * * * *", concurrencyPolicy="Forbid")
    t1 = next_multiple(created, 5)
    t2 = t1 + timedelta(minutes=5)
    await env.sync("solo", t1 + timedelta(seconds=1))
    await env.sync("solo", t2 + timedelta(seconds=1))
    assert list(await env.jobs()) == [f"solo-{minutes(t1)}"]
    assert "JobAlreadyActive" in env.events.reasons()
    # Once the first one is done, the missed time still runs.
    await env.finish(f"solo-{minutes(t1)}", "Complete", start=t1)
    await env.settle("solo")
    cj = await env.sync("solo", t2 + timedelta(seconds=2))
    assert sorted(await env.jobs()) == sorted([f"solo-{minutes(t1)}", f"solo-{minutes(t2)}"])
    assert [a["name"] for a in cj["status"]["active"]] == [f"solo-{minutes(t2)}"]
    assert cj["status"]["lastSuccessfulTime"] == times.rfc3339(t1.timestamp())
    assert ("Normal", "SawCompletedJob", f"Saw completed job: solo-{minutes(t1)}, condition: Complete") \
        in env.events.items


async def test_replace_deletes_the_running_job_first(env):
    created = await env.create("swap", "*/5 * * * *", concurrencyPolicy="Replace")
    t1 = next_multiple(created, 5)
    t2 = t1 + timedelta(minutes=5)
    await env.sync("swap", t1 + timedelta(seconds=1))
    cj = await env.sync("swap", t2 + timedelta(seconds=1))
    assert list(await env.jobs()) == [f"swap-{minutes(t2)}"]
    assert [a["name"] for a in cj["status"]["active"]] == [f"swap-{minutes(t2)}"]
    assert ("Normal", "SuccessfulDelete", f"Deleted job swap-{minutes(t1)}") in env.events.items


async def test_allow_runs_jobs_side_by_side(env):
    created = await env.create("many", "*/5 * * * *")
    t1 = next_multiple(created, 5)
    t2 = t1 + timedelta(minutes=5)
    await env.sync("many", t1 + timedelta(seconds=1))
    cj = await env.sync("many", t2 + timedelta(seconds=1))
    want = sorted([f"many-{minutes(t1)}", f"many-{minutes(t2)}"])
    assert sorted(await env.jobs()) == want
    assert sorted(a["name"] for a in cj["status"]["active"]) == want


async def test_after_missed_times_only_the_latest_runs(env):
    created = await env.create("hourly", "@hourly")
    latest = created.replace(minute=0, second=0, microsecond=0) + timedelta(hours=5)
    await env.sync("hourly", latest + timedelta(minutes=1))
    assert list(await env.jobs()) == [f"hourly-{minutes(latest)}"]
    assert "TooManyMissedTimes" not in env.events.reasons()


async def test_more_than_100_missed_times_warn(env):
    created = await env.create("often", "* * * * *")
    now = created + timedelta(minutes=200, seconds=30)
    await env.sync("often", now)
    latest = now.replace(second=0, microsecond=0)
    assert list(await env.jobs()) == [f"often-{minutes(latest)}"]
    assert ("Warning", "TooManyMissedTimes", "too many missed start times. Set or decrease "
            ".spec.startingDeadlineSeconds or check clock skew") in env.events.items


async def test_starting_deadline_drops_a_late_start(env):
    created = await env.create("strict", "*/5 * * * *", startingDeadlineSeconds=30)
    t1 = next_multiple(created, 5)
    await env.sync("strict", t1 + timedelta(seconds=60))
    assert await env.jobs() == {}
    t2 = t1 + timedelta(minutes=5)
    await env.sync("strict", t2 + timedelta(seconds=20))
    assert list(await env.jobs()) == [f"strict-{minutes(t2)}"]


async def test_suspended_starts_nothing(env):
    created = await env.create("paused", "*/5 * * * *", suspend=True)
    await env.sync("paused", next_multiple(created, 5) + timedelta(seconds=1))
    assert await env.jobs() == {}


async def test_time_zone_moves_the_schedule(env):
    created = await env.create("tokyo", "0 9 * * *", timeZone="Asia/Tokyo")
    # 09:00 in Tokyo is 00:00 UTC.
    midnight = created.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    await env.sync("tokyo", midnight + timedelta(seconds=5))
    jobs = await env.jobs()
    name = f"tokyo-{minutes(midnight)}"
    assert list(jobs) == [name]
    assert jobs[name]["metadata"]["annotations"][SCHEDULED_TIMESTAMP] == \
        (midnight + timedelta(hours=9)).strftime("%Y-%m-%dT%H:%M:%S+09:00")


async def test_history_limits_keep_the_newest_finished_jobs(env):
    created = await env.create("hist", "*/5 * * * *", successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)
    cj = await env.client.get("cronjobs", "hist", namespace=env.ns)
    owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "hist", "uid": cj["metadata"]["uid"],
             "controller": True, "blockOwnerDeletion": True}
    outcomes = {"hist-1": "Complete", "hist-2": "Complete", "hist-3": "Failed", "hist-4": "Failed",
                "hist-5": "Complete"}
    for i, (name, ctype) in enumerate(outcomes.items()):
        await env.client.create({"apiVersion": "batch/v1", "kind": "Job",
                                 "metadata": {"name": name, "ownerReferences": [owner]},
                                 "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                                     {"name": "c", "image": "busybox"}]}}}}, namespace=env.ns)
        await env.finish(name, ctype, start=created + timedelta(minutes=i))
    await env.settle("hist")
    await env.sync("hist", created + timedelta(seconds=1))
    assert sorted(await env.jobs()) == ["hist-4", "hist-5"]


async def test_a_job_lost_from_the_status_is_adopted_not_made_twice(env):
    created = await env.create("lost", "*/5 * * * *")
    t1 = next_multiple(created, 5)
    await env.sync("lost", t1 + timedelta(seconds=1))
    # A restart between the create and the status write: the status never got it.
    cj = await env.client.get("cronjobs", "lost", namespace=env.ns)
    await env.client.update_status({**cj, "status": {}})
    await env.settle("lost")
    cj = await env.sync("lost", t1 + timedelta(seconds=2))
    assert list(await env.jobs()) == [f"lost-{minutes(t1)}"]
    assert [a["name"] for a in cj["status"]["active"]] == [f"lost-{minutes(t1)}"]


async def test_bad_cronjobs_are_refused_with_kubernetes_messages(env):
    with pytest.raises(errors.Invalid) as e:
        await env.create("bad", "61 * * * *", timeZone="Mars/Olympus", concurrencyPolicy="Sometimes")
    causes = {c["field"]: c["message"] for c in e.value.causes}
    assert causes["spec.schedule"] == 'Invalid value: "61 * * * *": [61 * * * *] is not acceptable, out of range'
    assert causes["spec.timeZone"] == 'Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus'
    assert causes["spec.concurrencyPolicy"] == ('Unsupported value: "Sometimes": supported values: '
                                                '"Allow", "Forbid", "Replace"')
    with pytest.raises(errors.Invalid) as e:
        await env.create("bad", "@fortnightly")
    assert e.value.causes[0]["message"] == \
        'Invalid value: "@fortnightly": unrecognized descriptor: @fortnightly'
    with pytest.raises(errors.Invalid) as e:
        await env.create("x" * 53, "@daily")
    assert e.value.causes[0]["message"].endswith("must be no more than 52 characters")


async def test_the_next_sync_is_queued_for_the_next_scheduled_time(env):
    created = await env.create("wake", "*/5 * * * *")
    t1 = next_multiple(created, 5)
    await env.sync("wake", t1 + timedelta(seconds=10))
    while len(env.ctrl.queue):  # what the informers' events queued meanwhile
        key = await env.ctrl.queue.get()
        env.ctrl.queue.done(key)
    # Due at t1 + 5 min (+100 ms): not a moment before.
    env.clock.step((timedelta(minutes=5) - timedelta(seconds=10)).total_seconds())
    assert len(env.ctrl.queue) == 0
    env.clock.step(0.2)
    assert len(env.ctrl.queue) == 1 and await env.ctrl.queue.get() == f"{env.ns}/wake"
