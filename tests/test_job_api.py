"""batch/v1 through the API server and the real kubectl: defaults, the generated
selector, Kubernetes' 422s for bad Jobs, kubectl's columns, `kubectl create job`
(also `--from=cronjob/x`); and the Job controller's exponential back-off, run in
process against the server with an injected clock.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from client.clock import FakeClock
from client.informer import SharedInformerFactory
from client.rest import Client
from controller_manager.controllers.job import JobController
from machinery import times

KUBECTL = shutil.which("kubectl")
TIMEOUT = 20.0


def job(name: str, **spec) -> dict:
    template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": template, **spec}}


def causes(r) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


def test_a_job_is_defaulted_and_gets_a_generated_selector(http, ns):
    r = http.post(f"/apis/batch/v1/namespaces/{ns}/jobs", json=job("pi"))
    assert r.status_code == 201, r.text
    obj = r.json()
    uid, spec = obj["metadata"]["uid"], obj["spec"]
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"], spec["completionMode"],
            spec["suspend"]) == (1, 1, 6, "NonIndexed", False)
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": "pi",
              "controller-uid": uid, "job-name": "pi"}
    assert spec["template"]["metadata"]["labels"] == labels
    assert obj["metadata"]["labels"] == labels
    assert "status" not in obj
    # A work queue (parallelism without completions) keeps completions unset.
    r = http.post(f"/apis/batch/v1/namespaces/{ns}/jobs", json=job("queue", parallelism=3))
    assert "completions" not in r.json()["spec"]


def test_jobs_are_selectable_by_their_successes(http, ns):
    url = f"/apis/batch/v1/namespaces/{ns}/jobs"
    live = http.post(url, json=job("one")).json()
    http.post(url, json=job("none"))
    assert http.put(f"{url}/one/status", json={**live, "status": {"succeeded": 1}}).status_code == 200
    items = http.get(url, params={"fieldSelector": "status.successful=1"}).json()["items"]
    assert [j["metadata"]["name"] for j in items] == ["one"]


def test_bad_jobs_get_kubernetes_422s(http, ns):
    url = f"/apis/batch/v1/namespaces/{ns}/jobs"
    bad = job("bad", completions=-1, parallelism=-2, completionMode="Sometimes")
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    got = causes(http.post(url, json=bad))
    assert got == {
        "spec.completions": "Invalid value: -1: must be greater than or equal to 0",
        "spec.parallelism": "Invalid value: -2: must be greater than or equal to 0",
        "spec.completionMode": 'Unsupported value: "Sometimes": supported values: "NonIndexed", "Indexed"',
        "spec.template.spec.restartPolicy": 'Required value: valid values: "OnFailure", "Never"'}
    indexed = job("idx", completionMode="Indexed", parallelism=2)
    del indexed["spec"]["template"]["spec"]["restartPolicy"]
    indexed["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    indexed["spec"]["podFailurePolicy"] = {"rules": [{"action": "FailJob"}]}
    got = causes(http.post(url, json={**indexed, "spec": {**indexed["spec"], "completions": None}}))
    assert got["spec.completions"] == "Required value: when completion mode is Indexed"
    assert got["spec.template.spec.restartPolicy"] == \
        'Invalid value: "OnFailure": only "Never" is supported when podFailurePolicy is specified'
    assert got["spec.podFailurePolicy.rules[0]"].endswith(
        "specifying one of OnExitCodes and OnPodConditions is required")
    manual = job("manual", manualSelector=True, selector={"matchLabels": {"app": "x"}})
    assert causes(http.post(url, json=manual))["spec.template.metadata.labels"].endswith(
        "`selector` does not match template `labels`")
    assert http.get(f"{url}/bad").status_code == 404  # nothing was stored


def test_a_bad_job_status_is_refused(http, ns):
    url = f"/apis/batch/v1/namespaces/{ns}/jobs"
    live = http.post(url, json=job("counted")).json()
    r = http.put(f"{url}/counted/status", json={**live, "status": {
        "failed": -1, "uncountedTerminatedPods": {"succeeded": ["a"], "failed": ["a"]}}})
    assert causes(r) == {"status.failed": "Invalid value: -1: must be greater than or equal to 0",
                         "status.uncountedTerminatedPods.failed[0]": 'Duplicate value: "a"'}


def test_a_jobs_template_and_completions_are_immutable(http, ns):
    url = f"/apis/batch/v1/namespaces/{ns}/jobs"
    assert http.post(url, json=job("fixed", completions=2)).status_code == 201
    r = http.patch(f"{url}/fixed", json={"spec": {"completions": 3, "template": {"spec": {
        "containers": [{"name": "c", "image": "busybox:2"}]}}}},
        headers={"Content-Type": "application/strategic-merge-patch+json"})
    got = causes(r)
    assert got["spec.completions"] == "Invalid value: 3: field is immutable"
    assert got["spec.template"].endswith(": field is immutable")
    # A suspended Job that never started may still move its pods elsewhere.
    assert http.post(url, json=job("waiting", suspend=True)).status_code == 201
    r = http.patch(f"{url}/waiting", json={"spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}},
                   headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.status_code == 200, r.text


def test_tables_have_kubectls_columns(http, ns):
    http.post(f"/apis/batch/v1/namespaces/{ns}/jobs", json=job("cols", completions=3))
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
          "spec": {"schedule": "@daily", "timeZone": "Europe/Paris", "jobTemplate": job("t")}}
    del cj["spec"]["jobTemplate"]["apiVersion"], cj["spec"]["jobTemplate"]["kind"]
    cj["spec"]["jobTemplate"]["metadata"] = {}
    assert http.post(f"/apis/batch/v1/namespaces/{ns}/cronjobs", json=cj).status_code == 201
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    t = http.get(f"/apis/batch/v1/namespaces/{ns}/jobs", headers=accept).json()
    assert [c["name"] for c in t["columnDefinitions"] if c["priority"] == 0] == \
        ["Name", "Status", "Completions", "Duration", "Age"]
    assert t["rows"][0]["cells"][:4] == ["cols", "Running", "0/3", ""]
    t = http.get(f"/apis/batch/v1/namespaces/{ns}/cronjobs", headers=accept).json()
    assert [c["name"] for c in t["columnDefinitions"] if c["priority"] == 0] == \
        ["Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age"]
    assert t["rows"][0]["cells"][:6] == ["nightly", "@daily", "Europe/Paris", False, 0, "<none>"]


@pytest.mark.kubectl
def test_kubectl_creates_jobs_and_shows_them(apiserver, ns, tmp_path):
    if not KUBECTL:
        pytest.skip("kubectl is not installed")
    config = apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def kubectl(*args: str) -> str:
        r = subprocess.run([KUBECTL, "--kubeconfig", config, "--cache-dir", str(tmp_path / "cache"), *args],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert kubectl("create", "job", "once", "--image=busybox", "--", "true").strip() == "job.batch/once created"
    assert kubectl("create", "cronjob", "nightly", "--image=busybox", "--schedule=0 3 * * *").strip() == \
        "cronjob.batch/nightly created"
    assert kubectl("create", "job", "manual", "--from=cronjob/nightly").strip() == "job.batch/manual created"
    out = kubectl("get", "jobs,cronjobs")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert any(line.split()[:3] == ["job.batch/manual", "Running", "0/1"] for line in lines)
    header = next(line for line in lines if line.startswith("NAME") and "SCHEDULE" in line)
    assert header.split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    assert any(line.split()[:7] == ["cronjob.batch/nightly", "0", "3", "*", "*", "*", "<none>"] for line in lines)
    manual = kubectl("get", "job", "manual", "-o", "jsonpath={.metadata.annotations}")
    assert '"cronjob.kubernetes.io/instantiate":"manual"' in manual
    owner = kubectl("get", "job", "manual", "-o", "jsonpath={.metadata.ownerReferences[0].name}")
    assert owner == "nightly"


# -- the back-off, with an injected clock ------------------------------------------------

class Nothing:
    def event(self, *a, **kw):
        pass


async def test_failed_pods_are_replaced_after_a_doubling_back_off(apiserver, ns):
    async with Client(apiserver.connection()) as client:
        factory = SharedInformerFactory(client, namespace=ns)
        clock = FakeClock(0.0, wall=time.time())
        ctrl = JobController(client, factory, clock=clock, recorder=Nothing())
        factory.start()
        await factory.wait_for_cache_sync(TIMEOUT)
        try:
            await client.create(job("retry", backoffLimit=3), namespace=ns)
            key = f"{ns}/retry"

            async def settle():
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    live = await client.get("jobs", "retry", namespace=ns)
                    pods = (await client.list("pods", namespace=ns))["items"]
                    cached = ctrl.job_informer.store.get(key)
                    cached_pods = {p["metadata"]["resourceVersion"] for p in ctrl.pod_informer.store.list()}
                    if cached and cached["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"] \
                            and cached_pods == {p["metadata"]["resourceVersion"] for p in pods}:
                        return live, pods
                    await asyncio.sleep(0.02)
                raise TimeoutError("caches never caught up")

            async def sync(after: float = 0.0):
                clock.step(after)
                await settle()
                await ctrl.reconcile(key)
                return await settle()

            async def fail(pod: dict) -> None:
                t = times.rfc3339(clock.now())
                await client.patch("pods", pod["metadata"]["name"], namespace=ns, subresource="status", patch={
                    "status": {"phase": "Failed", "containerStatuses": [{"name": "c", "state": {
                        "terminated": {"exitCode": 1, "startedAt": t, "finishedAt": t}}}]}})

            def running(pods):
                return [p for p in pods if p["status"].get("phase") not in ("Failed", "Succeeded")]

            _, pods = await sync()
            assert len(pods) == 1
            for failures, delay in ((1, 10), (2, 20)):
                await fail(running(pods)[0])
                live, pods = await sync()   # counted, and no replacement yet
                live, pods = await sync()
                assert live["status"]["failed"] == failures and not running(pods)
                _, pods = await sync(delay - 2)
                assert not running(pods), f"replaced before {delay} s"
                _, pods = await sync(3)
                assert len(running(pods)) == 1, f"not replaced after {delay} s"
        finally:
            await factory.stop()


def test_kubectl_lite_gets_and_describes_jobs(http, apiserver, ns, tmp_path):
    url = f"/apis/batch/v1/namespaces/{ns}/jobs"
    assert http.post(url, json=job("shown", completions=3, completionMode="Indexed",
                                   ttlSecondsAfterFinished=60)).status_code == 201
    status = {"startTime": "2026-01-01T10:00:00Z", "completionTime": "2026-01-01T10:01:05Z",
              "succeeded": 3, "completedIndexes": "0-2", "conditions": [
                  {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T10:01:05Z"}]}
    live = http.get(f"{url}/shown").json()
    assert http.put(f"{url}/shown/status", json={**live, "status": status}).status_code == 200
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
          "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": job("t")["spec"]}}}
    assert http.post(f"/apis/batch/v1/namespaces/{ns}/cronjobs", json=cj).status_code == 201
    config = apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def kl(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "kubectl_lite.cli", "--kubeconfig", config, *args],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        return r.stdout

    lines = kl("get", "jobs").splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert lines[1].split()[:4] == ["shown", "Complete", "3/3", "65s"]
    assert "cronjob.batch/nightly" in kl("get", "all")
    out = kl("describe", "job", "shown")
    for want in ("Completion Mode:", "Indexed", "TTL Seconds After Finished:", "Duration:",
                 "Pods Statuses:", "0 Active / 3 Succeeded / 0 Failed",
                 "Completed Indexes:", "0-2", "Pod Template:"):
        assert want in out, out
    out = kl("describe", "cronjob", "nightly")
    for want in ("Schedule:", "0 3 * * *", "Concurrency Policy:", "Allow", "Last Schedule Time:",
                 "Active Jobs:"):
        assert want in out, out


@pytest.mark.parametrize("manifest", ["job.yaml", "cronjob.yaml"])
def test_the_example_manifests_are_accepted(http, ns, manifest):
    path = os.path.join(os.path.dirname(__file__), "..", "manifests", manifest)
    with open(path) as f:
        obj = yaml.safe_load(f)
    plural = {"Job": "jobs", "CronJob": "cronjobs"}[obj["kind"]]
    r = http.post(f"/apis/batch/v1/namespaces/{ns}/{plural}?dryRun=All", json=obj)
    assert r.status_code == 201, r.text
