"""The HPA controller against a real API server, with an injected clock.

Each test makes a scale target (a Deployment unless the test is about another kind) and
its pods by hand, sets the pods' CPU usage in a small in-test PodMetrics source (the
metrics API itself is the metrics server's; the end-to-end test in test_hpa_e2e.py reads
it through the aggregation layer), then runs syncs (`reconcile`) at chosen times and
reads what the server holds: the target's replicas, the HPA's status and conditions,
and the events recorded.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

from client.clock import FakeClock
from client.informer import SharedInformerFactory
from client.rest import Client
from controller_manager.controllers.horizontalpodautoscaler import HorizontalPodAutoscalerController, HPAOptions
from machinery import errors, times
from tests.procs import eventually

TIMEOUT = 20.0
LABELS = {"app": "web"}


class Events:
    def __init__(self):
        self.items: list[tuple[str, str, str]] = []

    def event(self, obj, type_, reason, message, **_):
        self.items.append((type_, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.items]


class Metrics:
    """PodMetrics as metrics.k8s.io would answer, by pod name: usage set by the test,
    each sample `age` seconds old by the injected clock when it is read (a scraper that
    keeps up: 1 s)."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.usage: dict[str, tuple[str, float]] = {}  # pod -> (cpu, age)
        self.calls = 0

    def set(self, cpu: str, *pods: str, age: float = 1.0) -> None:
        for p in pods:
            self.usage[p] = (cpu, age)

    async def pod_metrics(self, namespace: str, selector: str) -> list[dict]:
        self.calls += 1
        return [{"metadata": {"name": name, "namespace": namespace},
                 "timestamp": times.rfc3339(self.clock.now() - age),
                 "window": "15s", "containers": [{"name": "app", "usage": {"cpu": cpu, "memory": "10Mi"}}]}
                for name, (cpu, age) in self.usage.items()]


def condition(hpa: dict, ctype: str) -> tuple[str, str, str]:
    for c in hpa["status"].get("conditions") or []:
        if c["type"] == ctype:
            return c["status"], c["reason"], c["message"]
    raise AssertionError(f"no {ctype} condition in {hpa['status']}")


class Env:
    def __init__(self, client: Client, ns: str):
        self.client, self.ns = client, ns
        self.factory = SharedInformerFactory(client, namespace=ns)
        # Pods start an hour "before" the clock, so their CPU initialization is long over.
        self.clock = FakeClock(0.0, wall=time.time() + 3600)
        self.events = Events()
        self.metrics = Metrics(self.clock)
        self.ctrl = HorizontalPodAutoscalerController(client, self.factory, clock=self.clock, recorder=self.events,
                                                      options=HPAOptions(metrics_client=self.metrics))

    async def target(self, replicas: int, *, kind: str = "Deployment", cpu: str | None = "100m") -> None:
        resources = {"requests": {"cpu": cpu}} if cpu else {}
        template = {"metadata": {"labels": LABELS}, "spec": {"containers": [
            {"name": "app", "image": "busybox", "resources": resources}]}}
        if kind == "ReplicationController":
            obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "web"},
                   "spec": {"replicas": replicas, "selector": LABELS, "template": template}}
        else:
            obj = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "web"},
                   "spec": {"replicas": replicas, "selector": {"matchLabels": LABELS}, "template": template}}
            if kind == "StatefulSet":
                obj["spec"]["serviceName"] = "web"
        await self.client.create(obj, namespace=self.ns)
        for i in range(replicas):
            await self.pod(f"web-{i}", cpu=cpu)

    async def pod(self, name: str, *, cpu: str | None = "100m", ready: bool = True) -> None:
        resources = {"requests": {"cpu": cpu}} if cpu else {}
        pod = await self.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": LABELS},
                                        "spec": {"containers": [{"name": "app", "image": "busybox",
                                                                 "resources": resources}]}}, namespace=self.ns)
        start = times.rfc3339(time.time() - 600)
        pod["status"] = {"phase": "Running", "startTime": start, "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": start}]}
        await self.client.update_status(pod)

    async def hpa(self, *, min_replicas: int | None = 2, max_replicas: int = 5, kind: str = "Deployment",
                  api_version: str = "apps/v1", **spec) -> dict:
        body = {"scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": "web"},
                "maxReplicas": max_replicas,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}], **spec}
        if min_replicas is not None:
            body["minReplicas"] = min_replicas
        return await self.client.create({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                         "metadata": {"name": "web"}, "spec": body}, namespace=self.ns)

    async def settle(self) -> None:
        """Until the caches hold what the server holds."""
        async def same():
            hpa = await self.client.get("horizontalpodautoscalers", "web", namespace=self.ns)
            cached = self.ctrl.hpa_informer.store.get(f"{self.ns}/web")
            pods = {p["metadata"]["name"]: p["metadata"]["resourceVersion"]
                    for p in (await self.client.list("pods", namespace=self.ns))["items"]}
            cached_pods = {p["metadata"]["name"]: p["metadata"]["resourceVersion"]
                           for p in self.ctrl.pod_informer.store.list()}
            return cached is not None and cached["metadata"]["resourceVersion"] == \
                hpa["metadata"]["resourceVersion"] and pods == cached_pods
        await eventually(same, what="caches in step with the server")

    async def sync(self, *, after: float = 15.0) -> dict:
        """One sync `after` seconds on; -> the HPA as the server has it after."""
        self.clock.step(after)
        await self.settle()
        await self.ctrl.reconcile(f"{self.ns}/web")
        await self.settle()
        return await self.client.get("horizontalpodautoscalers", "web", namespace=self.ns)

    async def replicas(self, kind: str = "deployments") -> int:
        return (await self.client.get_scale(kind, "web", namespace=self.ns))["spec"]["replicas"]


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


async def test_high_cpu_scales_the_deployment_up_with_conditions_events_and_status(env):
    await env.target(2)
    await env.hpa(max_replicas=10)
    env.metrics.set("200m", "web-0", "web-1")  # 200% of requests against a 50% target
    hpa = await env.sync()
    # ceil(2 * 200/50) = 8, but without `behavior` at most max(2 x 2, 4) = 4 at once.
    assert await env.replicas() == 4
    status = hpa["status"]
    assert (status["currentReplicas"], status["desiredReplicas"]) == (2, 4)
    assert status["lastScaleTime"]
    assert status["currentMetrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "current": {"averageUtilization": 200, "averageValue": "200m"}}}]
    assert condition(hpa, "AbleToScale") == (
        "True", "SucceededRescale", "the HPA controller was able to update the target scale to 4")
    assert condition(hpa, "ScalingActive") == (
        "True", "ValidMetricFound",
        "the HPA was able to successfully calculate a replica count from cpu resource utilization "
        "(percentage of request)")
    assert condition(hpa, "ScalingLimited") == (
        "True", "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
    assert env.events.items == [("Normal", "SuccessfulRescale", "New size: 4; reason: cpu resource "
                                 "utilization (percentage of request) above target")]


async def test_never_past_max_replicas(env):
    await env.target(2)
    await env.hpa(max_replicas=3)
    env.metrics.set("900m", "web-0", "web-1")
    hpa = await env.sync()
    assert await env.replicas() == 3
    assert condition(hpa, "ScalingLimited") == (
        "True", "TooManyReplicas", "the desired replica count is more than the maximum replica count")


async def test_within_tolerance_nothing_changes_and_nothing_is_written_twice(env):
    await env.target(2)
    await env.hpa()
    env.metrics.set("54m", "web-0", "web-1")  # 54% of a 50% target: a ratio of 1.08
    hpa = await env.sync()
    assert await env.replicas() == 2
    assert "lastScaleTime" not in hpa["status"]
    assert condition(hpa, "AbleToScale")[1] == "ReadyForNewScale"
    assert condition(hpa, "ScalingLimited") == (
        "False", "DesiredWithinRange", "the desired count is within the acceptable range")
    again = await env.sync()
    assert again["metadata"]["resourceVersion"] == hpa["metadata"]["resourceVersion"]
    assert env.events.items == []


async def test_scale_down_waits_out_the_5_minute_stabilization_and_stops_at_min(env):
    await env.target(4)
    await env.hpa(min_replicas=2)
    env.metrics.set("50m", *(f"web-{i}" for i in range(4)))
    await env.sync()  # at target: the recommendation of 4 is recorded
    env.metrics.set("5m", *(f"web-{i}" for i in range(4)))
    hpa = await env.sync(after=60)
    assert await env.replicas() == 4
    assert condition(hpa, "AbleToScale") == (
        "True", "ScaleDownStabilized",
        "recent recommendations were higher than current one, applying the highest recent recommendation")
    hpa = await env.sync(after=250)  # 310 s after the recommendation of 4
    assert await env.replicas() == 2
    assert condition(hpa, "ScalingLimited") == (
        "True", "TooFewReplicas", "the desired replica count is less than the minimum replica count")
    assert env.events.items[-1] == ("Normal", "SuccessfulRescale", "New size: 2; reason: All metrics below target")


async def test_behavior_policies_limit_the_rate_under_injected_time(env):
    await env.target(2)
    await env.hpa(max_replicas=10, behavior={"scaleUp": {"policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60}]}})
    env.metrics.set("500m", "web-0", "web-1")
    hpa = await env.sync()
    assert await env.replicas() == 3  # one pod per minute
    assert condition(hpa, "ScalingLimited")[1] == "ScaleUpLimit"
    await env.sync(after=30)  # still within the minute: nothing more
    assert await env.replicas() == 3
    await env.sync(after=31)
    assert await env.replicas() == 4


async def test_a_target_scaled_to_zero_disables_autoscaling(env):
    await env.target(0)
    await env.hpa()
    hpa = await env.sync()
    assert await env.replicas() == 0
    assert condition(hpa, "ScalingActive") == (
        "False", "ScalingDisabled", "scaling is disabled since the replica count of the target is zero")
    assert env.metrics.calls == 0


async def test_below_min_replicas_is_raised_at_once(env):
    await env.target(1)
    await env.hpa(min_replicas=3)
    hpa = await env.sync()
    assert await env.replicas() == 3
    assert env.events.items == [("Normal", "SuccessfulRescale",
                                 "New size: 3; reason: Current number of replicas below Spec.MinReplicas")]
    assert hpa["status"]["desiredReplicas"] == 3


async def test_pods_without_cpu_requests_fail_with_kubernetes_condition(env):
    await env.target(2, cpu=None)
    await env.hpa()
    env.metrics.set("200m", "web-0", "web-1")
    hpa = await env.sync()
    assert await env.replicas() == 2
    message = "failed to get cpu utilization: missing request for cpu in container app of Pod web-0"
    assert condition(hpa, "ScalingActive") == (
        "False", "FailedGetResourceMetric", f"the HPA was unable to compute the replica count: {message}")
    assert env.events.items == [
        ("Warning", "FailedGetResourceMetric", message),
        ("Warning", "FailedComputeMetricsReplicas", f"invalid metrics (1 invalid out of 1), first error is: {message}")]
    assert hpa["status"]["currentReplicas"] == 2


async def test_no_metrics_and_stale_metrics_are_not_used(env):
    await env.target(2)
    await env.hpa()
    hpa = await env.sync()
    assert condition(hpa, "ScalingActive")[1:] == (
        "FailedGetResourceMetric",
        "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get "
        "metrics for resource cpu: no metrics returned from resource metrics API")
    # Samples two windows old: as good as none, so no scale up on them.
    env.metrics.set("900m", "web-0", "web-1", age=31)
    hpa = await env.sync(after=0)
    assert await env.replicas() == 2
    assert condition(hpa, "ScalingActive")[2].endswith("did not receive metrics for any ready pods")


async def test_a_missing_target_is_failed_get_scale(env):
    await env.hpa()
    hpa = await env.sync()
    status, reason, message = condition(hpa, "AbleToScale")
    assert (status, reason) == ("False", "FailedGetScale")
    assert message.startswith("the HPA controller was unable to get the target's current scale: ")
    assert "not found" in message
    assert env.events.reasons() == ["FailedGetScale"]


@pytest.mark.parametrize("kind, plural, api_version", [
    ("ReplicaSet", "replicasets", "apps/v1"),
    ("StatefulSet", "statefulsets", "apps/v1"),
    ("ReplicationController", "replicationcontrollers", "v1"),
])
async def test_every_kind_with_a_scale_subresource_scales(env, kind, plural, api_version):
    await env.target(2, kind=kind)
    scale = await env.client.get_scale(plural, "web", namespace=env.ns)
    assert scale["status"]["selector"] == "app=web"  # a string, as Kubernetes' Scale
    await env.hpa(kind=kind, api_version=api_version)
    env.metrics.set("100m", "web-0", "web-1")
    hpa = await env.sync()
    assert await env.replicas(plural) == 4
    assert hpa["status"]["desiredReplicas"] == 4


async def test_invalid_hpas_are_refused_with_kubernetes_messages(env):
    with pytest.raises(errors.Invalid) as caught:
        await env.hpa(min_replicas=0, max_replicas=0)
    messages = {c["field"]: c["message"] for c in caught.value.causes}
    assert messages["spec.minReplicas"] == "Invalid value: 0: must be greater than or equal to 1"
    assert messages["spec.maxReplicas"] == "Invalid value: 0: must be greater than 0"
    with pytest.raises(errors.Invalid) as caught:
        await env.hpa(min_replicas=4, max_replicas=3, behavior={"scaleDown": {
            "selectPolicy": "Sometimes", "policies": [{"type": "Pods", "value": 0, "periodSeconds": 1801}]}})
    messages = {c["field"]: c["message"] for c in caught.value.causes}
    assert messages == {
        "spec.maxReplicas": "Invalid value: 3: must be greater than or equal to `minReplicas`",
        "spec.behavior.scaleDown.selectPolicy":
            'Unsupported value: "Sometimes": supported values: "Disabled", "Max", "Min"',
        "spec.behavior.scaleDown.policies[0].value": "Invalid value: 0: must be greater than zero",
        "spec.behavior.scaleDown.policies[0].periodSeconds": "Invalid value: 1801: must be less than or equal to 1800"}
    assert (await env.client.list("horizontalpodautoscalers", namespace=env.ns))["items"] == []


async def test_defaults_and_kubectls_table(env, apiserver):
    await env.target(2)
    created = await env.hpa(min_replicas=None)
    assert created["spec"]["minReplicas"] == 1
    env.metrics.set("30m", "web-0", "web-1")
    await env.sync()
    table = await env.client.request(
        "GET", f"/apis/autoscaling/v2/namespaces/{env.ns}/horizontalpodautoscalers",
        params={"includeObject": "None"})
    assert table["kind"] == "HorizontalPodAutoscalerList"
    async with apiserver.async_client() as http:
        resp = await http.get(f"/apis/autoscaling/v2/namespaces/{env.ns}/horizontalpodautoscalers",
                              headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    t = resp.json()
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"]
    assert t["rows"][0]["cells"][:6] == ["web", "Deployment/web", "cpu: 30%/50%", "1", 5, 2]


async def test_scale_selector_is_kubernetes_canonical_string(env):
    await env.client.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sel"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]}, {"key": "env", "operator": "Exists"}]},
        "template": {"metadata": {"labels": {"app": "web", "tier": "a", "env": "x"}},
                     "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}}, namespace=env.ns)
    scale = await env.client.get_scale("deployments", "sel", namespace=env.ns)
    assert scale["status"]["selector"] == "app=web,env,tier in (a,b)"


async def test_an_unknown_kind_is_failed_get_scale(env):
    await env.hpa(kind="Frobnicator", api_version="example.com/v1")
    hpa = await env.sync()
    assert condition(hpa, "AbleToScale") == (
        "False", "FailedGetScale", "the HPA controller was unable to get the target's current scale: "
        'no matches for kind "Frobnicator" in group "example.com"')
    assert env.events.items == [
        ("Warning", "FailedGetScale", 'no matches for kind "Frobnicator" in group "example.com"')]


async def test_an_autoscaling_v1_hpa_is_synced_and_reads_back_as_v1(env):
    await env.target(2)
    # As `kubectl autoscale` without --cpu-percent makes it: no CPU target, so Kubernetes' 80%.
    await env.client.request("POST", f"/apis/autoscaling/v1/namespaces/{env.ns}/horizontalpodautoscalers", body={
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "maxReplicas": 5}})
    env.metrics.set("160m", "web-0", "web-1")  # 160% against 80%: twice the pods
    await env.sync()
    assert await env.replicas() == 4
    v1 = await env.client.request("GET", f"/apis/autoscaling/v1/namespaces/{env.ns}/horizontalpodautoscalers/web")
    assert v1["status"]["currentCPUUtilizationPercentage"] == 160
    assert (v1["status"]["currentReplicas"], v1["status"]["desiredReplicas"]) == (2, 4)
    conditions = json.loads(v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/conditions"])
    assert [c["type"] for c in conditions] == ["AbleToScale", "ScalingActive", "ScalingLimited"]


async def test_a_custom_resource_with_a_scale_subresource_scales(env, http):
    from tests.test_crd import CRDS, crd_body, established
    group = f"t{uuid.uuid4().hex[:8]}.example.com"
    r = http.post(CRDS, json=crd_body(group))
    assert r.status_code == 201, r.text
    established(http, f"widgets.{group}")
    try:
        base = f"/apis/{group}/v1/namespaces/{env.ns}/widgets"
        r = http.post(base, json={"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "web"},
                                  "spec": {"replicas": 2}})
        assert r.status_code == 201, r.text
        w = r.json()
        w["status"] = {"replicas": 2, "selector": "app=web"}
        assert http.put(f"{base}/web/status", json=w).status_code == 200
        for i in range(2):
            await env.pod(f"web-{i}")
        await env.hpa(kind="Widget", api_version=f"{group}/v1")
        env.metrics.set("100m", "web-0", "web-1")
        hpa = await env.sync()  # the controller learns the kind from discovery
        assert http.get(f"{base}/web").json()["spec"]["replicas"] == 4
        assert condition(hpa, "AbleToScale")[1] == "SucceededRescale"
    finally:
        http.delete(f"{CRDS}/widgets.{group}")


@pytest.mark.parametrize("verb, group, resource, subresource", [
    ("update", "apps", "deployments", "scale"), ("update", "example.com", "widgets", "scale"),
    ("get", "apps", "statefulsets", "scale"), ("update", "autoscaling", "horizontalpodautoscalers", "status"),
    ("list", "metrics.k8s.io", "pods", ""), ("watch", "autoscaling", "horizontalpodautoscalers", ""),
])
def test_the_controller_managers_user_may_do_what_the_hpa_does(http, verb, group, resource, subresource):
    # Bootstrap policy: system:controller:horizontal-pod-autoscaler, bound to the
    # controller manager's user as every controller's role (one credential for all).
    r = http.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "system:kube-controller-manager", "resourceAttributes": {
            "namespace": "default", "verb": verb, "group": group, "resource": resource,
            "subresource": subresource}}})
    assert r.status_code == 201, r.text
    assert r.json()["status"]["allowed"] is True, r.json()["status"]


async def test_a_scale_without_a_selector_is_invalid_selector(env, http):
    # A custom resource whose labelSelectorPath holds nothing yet: its Scale has no selector.
    from tests.test_crd import CRDS, crd_body, established
    group = f"t{uuid.uuid4().hex[:8]}.example.com"
    assert http.post(CRDS, json=crd_body(group)).status_code == 201
    established(http, f"widgets.{group}")
    try:
        r = http.post(f"/apis/{group}/v1/namespaces/{env.ns}/widgets", json={
            "apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "web"}, "spec": {"replicas": 2}})
        assert r.status_code == 201, r.text
        await env.hpa(kind="Widget", api_version=f"{group}/v1")
        hpa = await env.sync()
        assert condition(hpa, "ScalingActive") == (
            "False", "InvalidSelector", "the HPA target's scale is missing a selector")
        assert env.events.items == [("Warning", "SelectorRequired", "selector is required"),
                                    ("Warning", "FailedComputeMetricsReplicas", "selector is required")]
    finally:
        http.delete(f"{CRDS}/widgets.{group}")


async def test_average_value_and_container_resource_targets(env):
    await env.target(2)
    await env.hpa(max_replicas=10, metrics=[
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "5Mi"}}},
        {"type": "ContainerResource", "containerResource": {
            "name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 50}}}])
    env.metrics.set("75m", "web-0", "web-1")  # cpu: 75% against 50% -> 3; memory: 10Mi against 5Mi -> 4
    hpa = await env.sync()
    assert await env.replicas() == 4
    assert hpa["status"]["currentMetrics"] == [
        {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "10485760"}}},
        {"type": "ContainerResource", "containerResource": {
            "container": "app", "name": "cpu", "current": {"averageUtilization": 75, "averageValue": "75m"}}}]
    assert env.events.items[-1] == ("Normal", "SuccessfulRescale", "New size: 4; reason: memory resource above target")


async def test_a_failing_metric_blocks_a_scale_down_but_not_a_scale_up(env):
    # DOC "Algorithm details": "If any of these metrics cannot be converted into a desired
    # replica count ... and a scale down is suggested by the metrics which can be fetched,
    # scaling is skipped ... the HPA is still capable of scaling up".
    await env.target(2)
    await env.hpa(max_replicas=10, metrics=[
        {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                                  "target": {"type": "AverageValue", "averageValue": "10"}}},
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
    env.metrics.set("5m", "web-0", "web-1")
    hpa = await env.sync()
    assert await env.replicas() == 2
    assert condition(hpa, "ScalingActive") == (
        "False", "FailedGetPodsMetric", "the HPA was unable to compute the replica count: unable to get metric "
        "requests_per_second: no custom.metrics.k8s.io API is served")
    assert hpa["status"]["currentMetrics"][0] == {"type": ""}  # kept, so statuses line up with specs
    env.metrics.set("100m", "web-0", "web-1")
    hpa = await env.sync()
    assert await env.replicas() == 4
    assert condition(hpa, "ScalingActive")[1] == "ValidMetricFound"
    assert env.events.items[-2:] == [
        ("Warning", "FailedGetPodsMetric", "unable to get metric requests_per_second: no custom.metrics.k8s.io "
         "API is served"),
        ("Normal", "SuccessfulRescale", "New size: 4; reason: cpu resource utilization (percentage of request) "
         "above target")]
