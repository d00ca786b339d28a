"""The official `kubernetes` Python client against minik8s, unchanged."""
from __future__ import annotations

import threading

import pytest
from kubernetes import client, dynamic, watch
from kubernetes.client.exceptions import ApiException


@pytest.fixture
def api(apiserver):
    config = client.Configuration(host=apiserver.url)
    config.ssl_ca_cert = apiserver.ca_file
    config.cert_file, config.key_file = f"{apiserver.pki_dir}/admin.crt", f"{apiserver.pki_dir}/admin.key"
    with client.ApiClient(config) as c:
        yield c


def v1_pod(name: str, labels: dict) -> client.V1Pod:
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name, labels=labels),
                        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))


def test_create_read_list_patch_replace_delete(api, ns):
    core = client.CoreV1Api(api)
    created = core.create_namespaced_pod(ns, v1_pod("a", {"app": "web"}))
    core.create_namespaced_pod(ns, v1_pod("b", {"app": "db"}))
    assert created.spec.restart_policy == "Always"  # defaulted by the server
    assert core.read_namespaced_pod("a", ns).metadata.uid == created.metadata.uid
    assert [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector="app=web").items] == ["a"]

    patched = core.patch_namespaced_pod("a", ns, {"metadata": {"labels": {"tier": "front"}}})
    assert patched.metadata.labels == {"app": "web", "tier": "front"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)

    stale = created  # still at the resourceVersion before the patch
    stale.metadata.labels = {"app": "other"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("a", ns, stale)
    assert err.value.status == 409
    assert core.read_namespaced_pod("a", ns).metadata.labels == {"app": "web", "tier": "front"}

    core.delete_namespaced_pod("a", ns)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("a", ns)
    assert err.value.status == 404


def test_watch_stream_sees_added_modified_deleted(api, ns):
    core = client.CoreV1Api(api)
    # Watching from the list's resourceVersion sees every later change, however soon.
    rv = core.list_namespaced_config_map(ns).metadata.resource_version

    def act():
        core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
        core.patch_namespaced_config_map("cm", ns, {"data": {"a": "2"}})
        core.delete_namespaced_config_map("cm", ns)

    writer = threading.Thread(target=act)
    writer.start()
    w, events = watch.Watch(), []
    try:
        for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=15):
            assert isinstance(ev["object"], client.V1ConfigMap)
            events.append((ev["type"], ev["object"].metadata.name, ev["object"].data["a"]))
            if ev["type"] == "DELETED":
                w.stop()
    finally:
        writer.join(10)
    assert events == [("ADDED", "cm", "1"), ("MODIFIED", "cm", "2"), ("DELETED", "cm", "2")]


def test_dynamic_client_discovers_and_applies_server_side(api, ns):
    # The dynamic client reads the plain discovery documents (/api, /apis/...).
    dyn = dynamic.DynamicClient(api)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}
    created = deployments.server_side_apply(body=body, field_manager="py", namespace=ns)
    assert created.spec.replicas == 1
    assert [(m.manager, m.operation) for m in created.metadata.managedFields] == [("py", "Apply")]
    body["spec"]["replicas"] = 2
    assert deployments.server_side_apply(body=body, field_manager="py", namespace=ns).spec.replicas == 2


def test_scale_is_patched_with_the_clients_strategic_merge_patch(api, ns):
    # The generated client sends a dict body to /scale as a strategic merge patch (of an
    # autoscaling/v1 Scale); Kubernetes accepts it, as it does merge and JSON patches.
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")])))))
    scale = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3
    assert apps.read_namespaced_deployment_scale("web", ns).spec.replicas == 3
