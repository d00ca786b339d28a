"""End to end: a pod that burns CPU makes the HPA scale its Deployment up, and down once
the load stops, under injected time.

Real parts: the API server with its aggregation layer, fake-runtime nodes whose kubelet
endpoint reports the CPU a pod's `fake.minik8s.io/usage` annotation sets, the metrics
server scraping them and registered as APIService v1beta1.metrics.k8s.io
(tests/metrics_pipeline.py), a controller manager running the deployment and replicaset
controllers, and the HPA controller reading PodMetrics through the API server. The test
drives the HPA's syncs (`reconcile`) itself, with a clock whose wall time is the
machine's (the metrics server stamps its samples with it) and whose monotonic time,
which times the stabilization window, moves only when the test steps it: the 5-minute
scale-down window passes in one step.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from client.clock import FakeClock
from client.informer import SharedInformerFactory
from client.rest import Client
from controller_manager.controllers.horizontalpodautoscaler import HorizontalPodAutoscalerController
from tests import metrics_pipeline
from tests.procs import Component, free_port, wait_for


TIMEOUT = 120.0
USAGE = "fake.minik8s.io/usage"


class InjectedClock(FakeClock):
    """Wall time is the machine's; monotonic time moves only when the test steps it."""

    def now(self) -> float:
        return time.time()


class Events:
    def __init__(self):
        self.items: list[tuple[str, str, str]] = []

    def event(self, obj, type_, reason, message, **_):
        self.items.append((type_, reason, message))


def condition(hpa: dict, ctype: str) -> tuple[str, str]:
    for c in (hpa.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c["status"], c["reason"]
    return "", ""


@pytest.fixture
def pipeline(apiserver, tmp_path):
    with metrics_pipeline.pipeline(apiserver, tmp_path, nodes=1, register=True) as p:
        # Until the aggregator finds the metrics server Available, it answers 503.
        wait_for(lambda: p["http"].get(f"{metrics_pipeline.API}/pods").status_code == 200, timeout=90,
                 what="metrics.k8s.io through the API server")
        yield p


@pytest.fixture
def controllers(apiserver, tmp_path):
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "cm.conf")
    cm = Component("controller-manager", "--kubeconfig", kubeconfig, "--controllers", "deployment,replicaset",
                   "--secure-port", str(free_port()), "--leader-elect-resource-name",
                   f"cm-{uuid.uuid4().hex[:8]}", "--leader-elect-retry-period", "0.2s").start()
    try:
        yield cm
    finally:
        cm.stop()


async def test_a_cpu_burning_pod_scales_its_deployment_up_then_down(apiserver, ns, pipeline, controllers):
    node = pipeline["nodes"][0]
    async with Client(apiserver.connection()) as client:
        await client.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "burn"}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "burn"}},
            "template": {"metadata": {"labels": {"app": "burn"},
                                      "annotations": {USAGE: json.dumps({"app": {"cpu": "400m", "memory": "8Mi"}})}},
                         "spec": {"nodeName": node, "containers": [
                             {"name": "app", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]}}}},
            namespace=ns)
        await client.create({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                             "metadata": {"name": "burn"}, "spec": {
                                 "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burn"},
                                 "minReplicas": 1, "maxReplicas": 4, "metrics": [{"type": "Resource", "resource": {
                                     "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}},
                            namespace=ns)
        factory = SharedInformerFactory(client, namespace=ns)
        clock, events = InjectedClock(0.0), Events()
        # A pod's first samples count once a full window follows its readiness; the
        # CPU initialization period is kept short so that the test need not wait 5 min.
        ctrl = HorizontalPodAutoscalerController(client, factory, clock=clock, recorder=events,
                                                 options=HorizontalPodAutoscalerController.Options(
                                                     horizontal_pod_autoscaler_cpu_initialization_period=0.0))
        factory.start()
        await factory.wait_for_cache_sync(TIMEOUT)
        key = f"{ns}/burn"

        async def replicas() -> int:
            return (await client.get_scale("deployments", "burn", namespace=ns))["spec"]["replicas"]

        async def sync_until(cond, what: str, *, step: float = 15.0) -> dict:
            deadline = time.monotonic() + TIMEOUT
            while True:
                clock.step(step)
                await ctrl.reconcile(key)
                hpa = await client.get("horizontalpodautoscalers", "burn", namespace=ns)
                if await cond(hpa):
                    return hpa
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out waiting for {what}: {hpa.get('status')}, {events.items[-4:]}")
                await asyncio.sleep(1.0)

        try:
            # 400m of a 100m request is 400% against 50%: ceil(1 * 8) = 8, at most 4 at once
            # and at most maxReplicas 4.
            async def scaled_up(hpa):
                return await replicas() == 4
            hpa = await sync_until(scaled_up, "the scale up")
            assert hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"] >= 300
            assert ("Normal", "SuccessfulRescale", "New size: 4; reason: cpu resource utilization "
                    "(percentage of request) above target") in events.items

            # The load stops: every pod of the Deployment (all four, once they are made) now
            # uses (almost) nothing.
            async def four_pods():
                pods = (await client.list("pods", namespace=ns, label_selector="app=burn"))["items"]
                return pods if len(pods) == 4 else None
            deadline = time.monotonic() + TIMEOUT
            while not (pods := await four_pods()):
                assert time.monotonic() < deadline, "the Deployment's four pods"
                await asyncio.sleep(0.2)
            for pod in pods:
                await client.patch("pods", pod["metadata"]["name"], {"metadata": {"annotations": {
                    USAGE: json.dumps({"app": {"cpu": "1m", "memory": "8Mi"}})}}}, namespace=ns)

            async def low_and_held(hpa):
                current = (hpa["status"].get("currentMetrics") or [{}])[0].get("resource", {}).get("current", {})
                return current.get("averageUtilization", 100) < 10 and \
                    condition(hpa, "AbleToScale") == ("True", "ScaleDownStabilized")
            await sync_until(low_and_held, "the low usage, held by the stabilization window", step=1.0)
            assert await replicas() == 4  # within the 5-minute window, nothing goes

            async def scaled_down(hpa):
                return await replicas() == 1
            clock.step(300)
            hpa = await sync_until(scaled_down, "the scale down after the window")
            assert ("Normal", "SuccessfulRescale", "New size: 1; reason: All metrics below target") in events.items
            assert condition(hpa, "ScalingActive") == ("True", "ValidMetricFound")
        finally:
            await factory.stop()
