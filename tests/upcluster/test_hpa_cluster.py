"""The HPA on real pods (issue 18): a Deployment whose pod burns CPU in its cgroup scales
up through the whole pipeline `minik8s up` runs (kubelet cgroup stats, the metrics
server, the aggregation layer, the controller manager's HPA controller), and back down
once the load stops. About 90 s: two metrics resolutions and HPA syncs each way. The
scale-down window is 0 s here (`behavior`); the default 300 s window is shown under
injected time by tests/test_hpa_e2e.py and tests/test_controller_hpa.py."""
from __future__ import annotations

import os
import shutil
import uuid

from kubelet.images import HOST_ROOT_IMAGE
from tests.procs import wait_for

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
HPAS = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"


def test_a_pod_burning_cpu_scales_its_deployment_up_and_down(api):
    name = "burn-" + uuid.uuid4().hex[:6]
    # The pods share the host's filesystem (`up`'s nodes are namespaces of one machine):
    # a file in a hostPath directory stops every pod's busy loop at once.
    stop_dir = f"/tmp/minik8s-{name}"
    os.makedirs(stop_dir)
    burn = "while [ ! -e /stop/now ]; do :; done; exec sleep 100000"
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                       "template": {"metadata": {"labels": {"app": name}}, "spec": {
                           "terminationGracePeriodSeconds": 1,
                           "volumes": [{"name": "stop", "hostPath": {"path": stop_dir}}],
                           "containers": [{"name": "burn", "image": HOST_ROOT_IMAGE,
                                           "command": ["sh", "-c", burn],
                                           "volumeMounts": [{"name": "stop", "mountPath": "/stop"}],
                                           "resources": {"requests": {"cpu": "100m"}}}]}}}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": 1, "maxReplicas": 3,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}
    try:
        assert api.post(DEPLOYMENTS, json=deploy).status_code == 201
        assert api.post(HPAS, json=hpa).status_code == 201

        def status() -> dict:
            return api.get(f"{HPAS}/{name}").json().get("status") or {}

        def replicas() -> int:
            return api.get(f"{DEPLOYMENTS}/{name}").json()["spec"]["replicas"]

        # A full core against a 100m request is 1,000 %: the HPA goes to its maximum.
        wait_for(lambda: replicas() == 3 and status().get("desiredReplicas") == 3, timeout=180,
                 what="the HPA to scale the Deployment up to 3")
        st = status()
        cpu = next(m["resource"]["current"] for m in st["currentMetrics"] if m["type"] == "Resource")
        assert cpu["averageUtilization"] > 50, st
        conditions = {c["type"]: c for c in st["conditions"]}
        assert conditions["ScalingLimited"]["status"] == "True"
        assert conditions["ScalingLimited"]["reason"] == "TooManyReplicas"

        # The load stops: utilization falls to about 0 and the HPA goes to its minimum.
        open(os.path.join(stop_dir, "now"), "w").close()
        wait_for(lambda: replicas() == 1, timeout=180, what="the HPA to scale the Deployment down to 1")
        events = api.get("/api/v1/namespaces/default/events",
                         params={"fieldSelector": f"involvedObject.name={name},reason=SuccessfulRescale"}).json()
        messages = [e["message"] for e in events["items"]]
        assert any(m.startswith("New size: 3; reason: cpu resource utilization (percentage of request) "
                                "above target") for m in messages), messages
        assert any(m.startswith("New size: 1; reason: All metrics below target") for m in messages), messages
    finally:
        api.delete(f"{HPAS}/{name}")
        api.delete(f"{DEPLOYMENTS}/{name}", params={"propagationPolicy": "Foreground"})
        wait_for(lambda: not api.get("/api/v1/namespaces/default/pods",
                                     params={"labelSelector": f"app={name}"}).json()["items"],
                 timeout=120, what="the burning pods to go")
        shutil.rmtree(stop_dir, ignore_errors=True)
