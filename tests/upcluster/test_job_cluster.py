"""Jobs on `minik8s up` (root): real kubelets run the pods, so the exit codes, phases and
the deletion of a finished or stopped pod are what a kubelet reports, and the Job
controller's finalizers meet a kubelet that deletes pods itself.

The three-node cluster is the package's (tests/upcluster/conftest.py).
"""
from __future__ import annotations

import importlib.util
import os
import time

import httpx
import pytest

from kubelet.images import HOST_ROOT_IMAGE
from machinery import times

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
    pytest.mark.skipif(importlib.util.find_spec("kubelet.main") is None, reason="no kubelet"),
]

TIMEOUT = 90.0
URL = "/apis/batch/v1/namespaces/default/jobs"


def job(name: str, script: str, **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "c", "image": HOST_ROOT_IMAGE,
                                                           "command": ["sh", "-c", script]}]}}, **spec}}


def finished(api: httpx.Client, name: str) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        j = api.get(f"{URL}/{name}").json()
        conds = {c["type"]: c for c in (j.get("status") or {}).get("conditions") or () if c["status"] == "True"}
        if "Complete" in conds or "Failed" in conds:
            return j
        time.sleep(0.3)
    raise TimeoutError(f"job {name} never finished: {j.get('status')}")


def condition(j: dict, ctype: str) -> dict | None:
    return next((c for c in j["status"].get("conditions") or () if c["type"] == ctype and c["status"] == "True"),
                None)


def test_an_indexed_job_runs_each_index_once(api):
    r = api.post(URL, json=job("squares", 'echo "index $JOB_COMPLETION_INDEX"', completions=3, parallelism=2,
                               completionMode="Indexed"))
    assert r.status_code == 201, r.text
    j = finished(api, "squares")
    assert condition(j, "Complete"), j["status"]
    assert j["status"]["succeeded"] == 3 and j["status"]["completedIndexes"] == "0-2"
    pods = api.get("/api/v1/namespaces/default/pods",
                   params={"labelSelector": "batch.kubernetes.io/job-name=squares"}).json()["items"]
    logs = sorted(api.get(f"/api/v1/namespaces/default/pods/{p['metadata']['name']}/log").text.strip()
                  for p in pods)
    assert logs == ["index 0", "index 1", "index 2"]
    assert all("batch.kubernetes.io/job-tracking" not in (p["metadata"].get("finalizers") or ()) for p in pods)


def test_a_real_exit_code_trips_the_pod_failure_policy(api):
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}
    r = api.post(URL, json=job("answer", "exit 42", backoffLimit=6, podFailurePolicy=policy))
    assert r.status_code == 201, r.text
    j = finished(api, "answer")
    failed = condition(j, "Failed")
    assert failed and failed["reason"] == "PodFailurePolicy", j["status"]
    assert "failed with exit code 42 matching FailJob rule at index 0" in failed["message"]
    assert j["status"]["failed"] == 1


def test_the_deadline_stops_running_pods(api):
    r = api.post(URL, json=job("sleepy", "sleep 600", parallelism=2, completions=2, activeDeadlineSeconds=2))
    assert r.status_code == 201, r.text
    j = finished(api, "sleepy")
    assert condition(j, "Failed")["reason"] == "DeadlineExceeded"
    assert "active" not in j["status"] and j["status"].get("terminating", 0) == 0
    # The kubelet stopped them; nothing is left holding the Job's finalizer.
    deadline = time.monotonic() + TIMEOUT
    while api.get("/api/v1/namespaces/default/pods",
                  params={"labelSelector": "batch.kubernetes.io/job-name=sleepy"}).json()["items"]:
        assert time.monotonic() < deadline, "pods left behind"
        time.sleep(0.3)


def test_a_cronjob_starts_a_job_when_its_minute_comes(api, minutely):
    # The controller looks again at the next minute (+100 ms); no test clock here. The
    # CronJob was made when the cluster came up (the package's `minutely`).
    deadline = time.monotonic() + 75
    while True:
        jobs = [j for j in api.get(URL).json()["items"]
                if (j["metadata"].get("ownerReferences") or [{}])[0].get("name") == "minutely"]
        if jobs:
            break
        assert time.monotonic() < deadline, "no Job within a minute"
        time.sleep(0.5)
    name = jobs[0]["metadata"]["name"]
    scheduled = jobs[0]["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    assert name == f"minutely-{int(times.parse(scheduled)) // 60}"
    assert times.parse(scheduled) >= times.parse(minutely["metadata"]["creationTimestamp"])
    assert condition(finished(api, name), "Complete")
    deadline = time.monotonic() + TIMEOUT
    url = "/apis/batch/v1/namespaces/default/cronjobs/minutely"
    while not (api.get(url).json().get("status") or {}).get("lastSuccessfulTime"):
        assert time.monotonic() < deadline, "lastSuccessfulTime never set"
        time.sleep(0.3)
