"""Against a real API server: OpenAPI `required` is enforced only where Kubernetes'
validation code enforces it, so the status writes real kubelets and simulators (KWOK,
kubemark) make are accepted, and what Kubernetes rejects is still rejected."""
from __future__ import annotations

import uuid

from tests.util import pod


def _created_pod(http, ns) -> dict:
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("web"))
    assert r.status_code == 201, r.text
    return r.json()


def test_container_status_without_image_id_is_accepted(http, ns):
    p = _created_pod(http, ns)
    p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": p["spec"]["containers"][0]["name"],
                                          "image": "busybox", "ready": True,
                                          "restartCount": 0, "state": {"running": {}}}]}
    r = http.put(f"/api/v1/namespaces/{ns}/pods/web/status", json=p)
    assert r.status_code == 200, r.text
    stored = http.get(f"/api/v1/namespaces/{ns}/pods/web").json()
    assert stored["status"]["containerStatuses"][0]["image"] == "busybox"
    assert "imageID" not in stored["status"]["containerStatuses"][0]


def test_container_status_without_image_or_name_is_accepted_as_kubernetes_does(http, ns):
    # ValidatePodStatusUpdate checks neither; a condition without a status neither.
    p = _created_pod(http, ns)
    p["status"] = {"conditions": [{"type": "Ready"}],
                   "containerStatuses": [{"ready": False, "restartCount": 0}]}
    r = http.put(f"/api/v1/namespaces/{ns}/pods/web/status", json=p)
    assert r.status_code == 200, r.text


def test_what_kubernetes_requires_is_still_required(http, ns):
    p = _created_pod(http, ns)
    p["status"] = {"conditions": [{"status": "True"}]}  # validatePodConditions: the type
    r = http.put(f"/api/v1/namespaces/{ns}/pods/web/status", json=p)
    assert r.status_code == 422, r.text
    assert {"field": "status.conditions[0].type", "reason": "FieldValueRequired",
            "message": "Required value"} in r.json()["details"]["causes"]
    bad = pod("nameless")
    del bad["spec"]["containers"][0]["name"]
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json=bad)
    assert r.status_code == 422 and "spec.containers[0].name" in r.text, r.text
    assert http.get(f"/api/v1/namespaces/{ns}/pods/nameless").status_code == 404


def test_node_status_with_partial_node_info_is_accepted(http):
    name = "node-" + uuid.uuid4().hex[:8]
    r = http.post("/api/v1/nodes", json={"apiVersion": "v1", "kind": "Node",
                                         "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    node = r.json()
    node["status"] = {"nodeInfo": {"kubeletVersion": "v1.32.0-kwok"},
                      "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}],
                      "conditions": [{"type": "Ready", "status": "True"}]}
    try:
        r = http.put(f"/api/v1/nodes/{name}/status", json=node)
        assert r.status_code == 200, r.text
        assert r.json()["status"]["nodeInfo"] == {"kubeletVersion": "v1.32.0-kwok"}
    finally:
        http.delete(f"/api/v1/nodes/{name}")
