"""The real kubectl (1.32) on HorizontalPodAutoscalers: `autoscale`, `get hpa` with
kubectl's columns, `describe hpa`; and autoscaling/v1 and v2 serving one stored object.
"""
from __future__ import annotations

import json
import re

import pytest

from tests.test_kubectl import Kubectl, cache_dir, get, kubectl, rows, web_deployment, write  # noqa: F401
from tests.test_kubectl_lite import kl  # noqa: F401


@pytest.mark.kubectl
def test_autoscale_get_and_describe(kubectl: Kubectl, http, ns, tmp_path):
    kubectl("apply", "-f", write(tmp_path, "web.yaml", web_deployment(replicas=2)))
    r = kubectl("autoscale", "deployment", "web", "--cpu-percent=50", "--min=2", "--max=5", "-v=6")
    assert r.stdout.strip() == "horizontalpodautoscaler.autoscaling/web autoscaled"
    # kubectl 1.32 creates it at autoscaling/v1; the server stores and serves it as v2 too.
    assert f"POST https://{r.stderr.split('POST https://')[1].split()[0]}".endswith(
        f"/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers?fieldManager=kubectl-autoscale")
    v2 = get(http, f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/web")
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
    assert (v2["spec"]["minReplicas"], v2["spec"]["maxReplicas"]) == (2, 5)
    assert v2["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    v1 = get(http, f"/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers/web")
    assert v1["apiVersion"] == "autoscaling/v1" and v1["spec"]["targetCPUUtilizationPercentage"] == 50

    [row] = rows(kubectl.out("get", "hpa"))
    assert row == {"NAME": "web", "REFERENCE": "Deployment/web", "TARGETS": "cpu: <unknown>/50%",
                   "MINPODS": "2", "MAXPODS": "5", "REPLICAS": "0", "AGE": row["AGE"]}
    out = kubectl.out("describe", "hpa", "web")
    assert re.search(r"Reference:\s+Deployment/web\n", out)
    assert re.search(r"resource cpu on pods  \(as a percentage of request\):\s+<unknown> / 50%\n", out)
    assert re.search(r"Min replicas:\s+2\nMax replicas:\s+5\n", out)


@pytest.mark.kubectl
def test_v1_and_v2_are_one_object(kubectl: Kubectl, http, ns, tmp_path):
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "api"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                    "maxReplicas": 4, "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "target": {
                            "type": "Utilization", "averageUtilization": 60}}},
                        {"type": "Resource", "resource": {"name": "memory", "target": {
                            "type": "AverageValue", "averageValue": "100Mi"}}}],
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}
    kubectl("apply", "-f", write(tmp_path, "hpa.yaml", hpa))
    v1 = json.loads(kubectl.out("get", "horizontalpodautoscalers.v1.autoscaling", "api", "-o", "json"))
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 60
    annotations = v1["metadata"]["annotations"]
    assert json.loads(annotations["autoscaling.alpha.kubernetes.io/metrics"]) == [
        {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}}]
    assert json.loads(annotations["autoscaling.alpha.kubernetes.io/behavior"])["scaleDown"][
        "stabilizationWindowSeconds"] == 60
    # A v1 write keeps what only v2 can say.
    r = http.patch(f"/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers/api",
                   json={"spec": {"maxReplicas": 6}}, headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    v2 = get(http, f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/api")
    assert v2["spec"]["maxReplicas"] == 6
    assert [m["resource"]["name"] for m in v2["spec"]["metrics"]] == ["cpu", "memory"]
    assert v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60
    assert "annotations" not in v2["metadata"] or not any(
        k.startswith("autoscaling.alpha") for k in v2["metadata"]["annotations"])
    [row] = rows(kubectl.out("get", "hpa"))
    assert row["TARGETS"] == "cpu: <unknown>/60%, memory: <unknown>/100Mi"
    # Updates by strategic merge: apply (a three-way merge; metrics replaced whole) and patch.
    hpa["spec"]["metrics"] = hpa["spec"]["metrics"][:1]
    kubectl("apply", "-f", write(tmp_path, "hpa.yaml", hpa))
    kubectl("patch", "hpa", "api", "-p", '{"spec":{"maxReplicas":7}}')
    v2 = get(http, f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/api")
    assert [m["resource"]["name"] for m in v2["spec"]["metrics"]] == ["cpu"]
    assert v2["spec"]["maxReplicas"] == 7


# --- kubectl-lite -------------------------------------------------------------------------

def test_kubectl_lite_autoscale_get_and_describe(kl, http, ns, tmp_path):
    kl("apply", "-f", write(tmp_path, "web.yaml", web_deployment(replicas=2)))
    assert kl.out("autoscale", "deployment", "web", "--cpu-percent=50", "--min=2", "--max=5").strip() == \
        "horizontalpodautoscaler.autoscaling/web autoscaled"
    v2 = get(http, f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/web")
    assert v2["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert (v2["spec"]["minReplicas"], v2["spec"]["maxReplicas"]) == (2, 5)
    managers = {m["manager"] for m in v2["metadata"]["managedFields"]}
    assert "kubectl-autoscale" in managers
    # The controller's status, as the HPA controller writes it, shows in both printers.
    v2["status"] = {"currentReplicas": 2, "desiredReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {
        "name": "cpu", "current": {"averageUtilization": 30, "averageValue": "30m"}}}], "conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
         "message": "recommended size matches current size",
         "lastTransitionTime": v2["metadata"]["creationTimestamp"]}]}
    r = http.put(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/web/status", json=v2)
    assert r.status_code == 200, r.text
    [row] = rows(kl.out("get", "hpa"))
    assert row == {"NAME": "web", "REFERENCE": "Deployment/web", "TARGETS": "cpu: 30%/50%",
                   "MINPODS": "2", "MAXPODS": "5", "REPLICAS": "2", "AGE": row["AGE"]}
    out = kl.out("describe", "hpa", "web")
    assert re.search(r"resource cpu on pods  \(as a percentage of request\):\s+30% \(30m\) / 50%\n", out)
    assert re.search(r"Deployment pods:\s+2 current / 2 desired\n", out)
    assert re.search(r"AbleToScale\s+True\s+ReadyForNewScale\s+recommended size matches current size\n", out)


def test_kubectl_lite_autoscale_refuses_bad_flags_and_kinds(kl, http, ns, tmp_path):
    kl("apply", "-f", write(tmp_path, "cm.yaml", {"apiVersion": "v1", "kind": "ConfigMap",
                                                  "metadata": {"name": "web"}}))
    assert kl.err("autoscale", "deployment", "web", "--min=2").strip() == \
        "error: --max=MAXPODS is required and must be at least 1, max: -1"
    assert kl.err("autoscale", "deployment", "web", "--min=4", "--max=3").strip() == \
        "error: --max=MAXPODS must be larger or equal to --min=MINPODS, max: 3, min: 4"
    assert "cannot autoscale a ConfigMap" in kl.err("autoscale", "configmap", "web", "--max=3")
    assert get(http, f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers")["items"] == []
