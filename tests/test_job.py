"""The Job and TTL-after-finished controllers end to end: a real API server, `minik8s
controller-manager` as a child process (job, ttl-after-finished, garbagecollector),
no kubelets. The tests play the kubelet: they finish pods (phase, container exit
codes) through pods/status, as a kubelet reports them.
"""
from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest

from client.informer import Informer
from client.rest import Client
from controller_manager.controllers.job import (COMPLETION_INDEX, TRACKING_FINALIZER, backoff_delay,
                                                format_indexes, match_pod_failure_policy, parse_indexes)
from machinery import errors, times
from tests.procs import Component, eventually, free_port

TIMEOUT = 30.0  # catches hangs only


def start_cm(kubeconfig: str) -> Component:
    lease = f"cm-{uuid.uuid4().hex[:8]}"
    return Component("controller-manager", "--kubeconfig", kubeconfig,
                     "--controllers", "job,ttl-after-finished,garbagecollector",
                     "--secure-port", str(free_port()), "--leader-elect-resource-name", lease,
                     "--leader-elect-retry-period", "0.2s").start()


@pytest.fixture
def cm(kubeconfig):
    proc = start_cm(kubeconfig)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def client(apiserver, ns):
    async with Client(apiserver.connection()) as c:
        yield c


class Pods:
    """The pods of a namespace through an informer, and the kubelet's reports."""

    def __init__(self, client: Client, ns: str):
        self.client, self.ns = client, ns
        self.informer = Informer(client, "pods", namespace=ns)
        self.max_active = 0
        self.seen: set[str] = set()
        self.informer.add_handler(on_add=self._count, on_update=lambda _, p: self._count(p))

    def _count(self, pod: dict) -> None:
        self.seen.add(pod["metadata"]["uid"])
        self.max_active = max(self.max_active, len(self.active()))

    def all(self) -> list[dict]:
        return self.informer.store.list()

    def active(self) -> list[dict]:
        return [p for p in self.all() if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]

    async def finish(self, pod: dict, exit_code: int = 0) -> None:
        t = times.rfc3339(time.time())
        phase = "Succeeded" if exit_code == 0 else "Failed"
        await self.client.patch("pods", pod["metadata"]["name"], namespace=self.ns, subresource="status", patch={
            "status": {"phase": phase, "containerStatuses": [{
                "name": "c", "ready": False, "restartCount": 0, "image": "busybox", "imageID": "",
                "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if not exit_code else "Error",
                                         "startedAt": t, "finishedAt": t}}}]}})

    async def __aenter__(self) -> Pods:
        self.task = self.informer.start()
        await self.informer.wait_for_sync(TIMEOUT)
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def job(name: str, **spec) -> dict:
    template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": template, **spec}}


def condition(job: dict, ctype: str) -> dict | None:
    return next((c for c in (job.get("status") or {}).get("conditions") or () if c["type"] == ctype
                 and c["status"] == "True"), None)


async def get_job(client: Client, ns: str, name: str) -> dict:
    return await client.get("jobs", name, namespace=ns)


async def events(client: Client, ns: str, name: str) -> list[tuple[str, str, str]]:
    items = (await client.list("events", namespace=ns))["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items
            if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == "Job"]


async def run_to_completion(client: Client, pods: Pods, ns: str, name: str, *, exit_code=0) -> dict:
    """Finish every active pod as it appears until the Job has a terminal condition."""
    async def step():
        for p in pods.active():
            if TRACKING_FINALIZER in (p["metadata"].get("finalizers") or ()):
                try:
                    await pods.finish(p, exit_code)
                except errors.NotFound:
                    pass
        j = await get_job(client, ns, name)
        return j if condition(j, "Complete") or condition(j, "Failed") else None
    return await eventually(step, what=f"job {name} finished")


async def test_completions_with_parallelism(cm, client, ns):
    async with Pods(client, ns) as pods:
        created = await client.create(job("work", completions=5, parallelism=2), namespace=ns)
        await eventually(lambda: len(pods.active()) == 2, what="2 pods")
        done = await run_to_completion(client, pods, ns, "work")
        st = done["status"]
        assert st["succeeded"] == 5 and "failed" not in st and "active" not in st
        assert condition(done, "SuccessCriteriaMet")["reason"] == "CompletionsReached"
        assert condition(done, "Complete")["message"] == "Reached expected number of succeeded pods"
        assert st["startTime"] <= st["completionTime"] and st["uncountedTerminatedPods"] == {}
        assert pods.max_active <= 2 and len(pods.seen) == 5
        uid = created["metadata"]["uid"]
        for p in pods.all():
            md = p["metadata"]
            assert TRACKING_FINALIZER not in (md.get("finalizers") or ())
            assert md["labels"]["batch.kubernetes.io/controller-uid"] == uid
            assert md["labels"]["job-name"] == "work"
            assert md["ownerReferences"][0]["kind"] == "Job" and md["ownerReferences"][0]["uid"] == uid
        evs = await eventually(lambda: _with(events(client, ns, "work"), ("Normal", "Completed", "Job completed")),
                               what="Completed event")
        assert sum(1 for e in evs if e[1] == "SuccessfulCreate") == 5


async def _with(coro, want):
    evs = await coro
    return evs if want in evs else None


async def test_indexed_job_gives_each_pod_its_index(cm, client, ns):
    async with Pods(client, ns) as pods:
        await client.create(job("idx", completions=3, parallelism=3, completionMode="Indexed"), namespace=ns)
        await eventually(lambda: len(pods.active()) == 3, what="3 pods")
        got = {}
        for p in pods.active():
            index = p["metadata"]["annotations"][COMPLETION_INDEX]
            assert p["metadata"]["labels"][COMPLETION_INDEX] == index
            assert p["metadata"]["name"].startswith(f"idx-{index}-")
            assert p["spec"]["hostname"] == f"idx-{index}"
            env = p["spec"]["containers"][0]["env"]
            assert {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "apiVersion": "v1", "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}} in env
            got[index] = p
        assert sorted(got) == ["0", "1", "2"]
        await pods.finish(got["0"])
        await pods.finish(got["2"])
        await eventually(lambda: _status_is(client, ns, "idx", "completedIndexes", "0,2"), what="0,2 done")
        done = await run_to_completion(client, pods, ns, "idx")
        assert done["status"]["completedIndexes"] == "0-2" and done["status"]["succeeded"] == 3


async def _status_is(client, ns, name, field, want):
    return ((await get_job(client, ns, name)).get("status") or {}).get(field) == want


async def test_backoff_limit_fails_the_job(cm, client, ns):
    async with Pods(client, ns) as pods:
        await client.create(job("flaky", backoffLimit=0), namespace=ns)
        done = await run_to_completion(client, pods, ns, "flaky", exit_code=1)
        assert condition(done, "FailureTarget")["reason"] == "BackoffLimitExceeded"
        failed = condition(done, "Failed")
        assert failed["reason"] == "BackoffLimitExceeded"
        assert failed["message"] == "Job has reached the specified backoff limit"
        assert done["status"]["failed"] == 1 and "completionTime" not in done["status"]
        await eventually(lambda: _with(events(client, ns, "flaky"), (
            "Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit")), what="event")


async def test_pod_failure_policy_fails_the_job_on_an_exit_code(cm, client, ns):
    async with Pods(client, ns) as pods:
        policy = {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In",
                                                                   "values": [42]}}]}
        await client.create(job("pfp", backoffLimit=6, podFailurePolicy=policy), namespace=ns)
        await eventually(lambda: pods.active(), what="a pod")
        name = pods.active()[0]["metadata"]["name"]
        done = await run_to_completion(client, pods, ns, "pfp", exit_code=42)
        failed = condition(done, "Failed")
        assert failed["reason"] == "PodFailurePolicy"
        assert failed["message"] == (f"Container c for pod {ns}/{name} failed with exit code 42 "
                                     "matching FailJob rule at index 0")
        assert len(pods.seen) == 1  # not retried, although backoffLimit allows 6


async def test_active_deadline_fails_the_job_and_stops_its_pods(cm, client, ns):
    async with Pods(client, ns) as pods:
        await client.create(job("slow", parallelism=2, completions=4, activeDeadlineSeconds=1), namespace=ns)
        await eventually(lambda: len(pods.active()) == 2, what="2 pods")
        done = await eventually(lambda: _failed(client, ns, "slow"), what="deadline")
        assert condition(done, "Failed")["reason"] == "DeadlineExceeded"
        assert condition(done, "Failed")["message"] == "Job was active longer than specified deadline"
        await eventually(lambda: not pods.all(), what="pods deleted")
        assert "active" not in done["status"] and done["status"]["failed"] == 2


async def _failed(client, ns, name):
    j = await get_job(client, ns, name)
    return j if condition(j, "Failed") else None


async def test_suspend_and_resume(cm, client, ns):
    async with Pods(client, ns) as pods:
        await client.create(job("later", parallelism=2, completions=2, suspend=True), namespace=ns)
        j = await eventually(lambda: _cond(client, ns, "later", "Suspended"), what="Suspended")
        assert condition(j, "Suspended")["reason"] == "JobSuspended"
        assert not pods.all() and "startTime" not in j["status"]
        await client.patch("jobs", "later", {"spec": {"suspend": False}}, namespace=ns)
        await eventually(lambda: len(pods.active()) == 2, what="pods after resume")
        j = await get_job(client, ns, "later")
        assert j["status"]["startTime"]
        resumed = next(c for c in j["status"]["conditions"] if c["type"] == "Suspended")
        assert (resumed["status"], resumed["reason"]) == ("False", "JobResumed")
        await client.patch("jobs", "later", {"spec": {"suspend": True}}, namespace=ns)
        await eventually(lambda: not pods.all(), what="pods deleted on suspend")
        # A pod deleted before it finished counts as failed, whoever deleted it (isPodFailed).
        await eventually(lambda: _status_is(client, ns, "later", "failed", 2), what="2 counted failed")
        evs = await events(client, ns, "later")
        assert ("Normal", "Resumed", "Job resumed") in evs and ("Normal", "Suspended", "Job suspended") in evs


async def _cond(client, ns, name, ctype):
    j = await get_job(client, ns, name)
    return j if condition(j, ctype) else None


async def test_a_controller_restart_mid_job_counts_every_pod_once(kubeconfig, client, ns):
    proc = start_cm(kubeconfig)
    try:
        async with Pods(client, ns) as pods:
            await client.create(job("count", completions=6, parallelism=3), namespace=ns)
            await eventually(lambda: len(pods.active()) == 3, what="3 pods")
            # Pods finish while the controller manager dies, mid-count.
            first = pods.active()
            await pods.finish(first[0])
            await asyncio.sleep(0)  # let the process see some of it, not necessarily all
            proc.stop(signal.SIGKILL)
            for p in first[1:]:
                await pods.finish(p)
            proc = start_cm(kubeconfig)
            done = await run_to_completion(client, pods, ns, "count")
            assert done["status"]["succeeded"] == 6 and len(pods.seen) == 6
            assert done["status"]["uncountedTerminatedPods"] == {}
            assert all(TRACKING_FINALIZER not in (p["metadata"].get("finalizers") or ()) for p in pods.all())
    finally:
        proc.stop()


async def test_ttl_after_finished_deletes_the_job_and_its_pods(cm, client, ns):
    async with Pods(client, ns) as pods:
        await client.create(job("brief", ttlSecondsAfterFinished=1), namespace=ns)
        await run_to_completion(client, pods, ns, "brief")

        async def gone():
            try:
                await get_job(client, ns, "brief")
            except errors.NotFound:
                return True
            return False
        await eventually(gone, what="job deleted by its TTL")
        await eventually(lambda: not pods.all(), what="its pods deleted")


def test_backoff_doubles_from_10s_to_6_minutes():
    assert [backoff_delay(n) for n in range(0, 8)] == [0, 10, 20, 40, 80, 160, 320, 360]


def test_completed_indexes_read_and_write_as_intervals():
    assert format_indexes({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7"
    assert parse_indexes("0-2,4,6-7") == {0, 1, 2, 4, 6, 7}
    assert format_indexes(set()) == "" and parse_indexes("") == set()


@pytest.mark.parametrize("pod_status, want", [
    ({"containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 42}}}]}, "FailJob"),
    ({"containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 5}}}]}, "Ignore"),
    ({"containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 1}}}]}, None),
    ({"conditions": [{"type": "DisruptionTarget", "status": "True"}]}, "Count"),
])
def test_pod_failure_policy_first_matching_rule_wins(pod_status, want):
    job_obj = {"spec": {"podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [5, 42]}},
        {"action": "Count", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}}}
    pod = {"metadata": {"name": "p", "namespace": "n"}, "status": {"phase": "Failed", **pod_status}}
    assert match_pod_failure_policy(job_obj, pod)[0] == want


async def test_a_job_deleted_in_the_background_takes_its_pods(cm, client, ns):
    async with Pods(client, ns) as pods:
        await client.create(job("gone", parallelism=2, completions=2), namespace=ns)
        await eventually(lambda: len(pods.active()) == 2, what="2 pods")
        await pods.finish(pods.active()[0])  # one finished, one running: both go
        await client.delete("jobs", "gone", namespace=ns, propagation_policy="Background")
        # The garbage collector deletes them; the Job controller lets go of its finalizer.
        await eventually(lambda: not pods.all(), what="pods deleted with their Job")


async def test_an_orphan_matching_a_manual_selector_is_adopted(cm, client, ns):
    async with Pods(client, ns) as pods:
        orphan = await client.create({"apiVersion": "v1", "kind": "Pod",
                                      "metadata": {"name": "stray", "labels": {"batch": "mine"}},
                                      "spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "c", "image": "busybox"}]}}, namespace=ns)
        spec = job("adopter", manualSelector=True, selector={"matchLabels": {"batch": "mine"}})
        spec["spec"]["template"]["metadata"] = {"labels": {"batch": "mine"}}
        created = await client.create(spec, namespace=ns)

        def adopted():
            p = pods.informer.store.get(f"{ns}/stray")
            return p if p and (p["metadata"].get("ownerReferences") or [{}])[0].get("uid") == \
                created["metadata"]["uid"] else None
        pod = await eventually(adopted, what="the orphan adopted")
        assert TRACKING_FINALIZER in pod["metadata"]["finalizers"]
        # (Had the controller synced before it saw the orphan, it made a pod of its own
        # too, as Kubernetes' would: each success counts, once.)
        done = await run_to_completion(client, pods, ns, "adopter")
        assert orphan["metadata"]["uid"] in pods.seen
        assert done["status"]["succeeded"] == len(pods.seen)


async def test_on_failure_restarts_count_against_the_backoff_limit(cm, client, ns):
    async with Pods(client, ns) as pods:
        spec = job("restarts", backoffLimit=2)
        spec["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
        await client.create(spec, namespace=ns)
        await eventually(lambda: pods.active(), what="a pod")
        pod = pods.active()[0]
        # The kubelet restarted its container twice (restartPolicy OnFailure).
        await client.patch("pods", pod["metadata"]["name"], namespace=ns, subresource="status", patch={
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "c", "ready": False, "restartCount": 2, "image": "busybox", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}})
        done = await eventually(lambda: _failed(client, ns, "restarts"), what="failed")
        assert condition(done, "Failed")["reason"] == "BackoffLimitExceeded"
