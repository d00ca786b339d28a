"""The endpoints controller: unit tests on seeded caches, then endpoints following pod
readiness against a real API server."""
import uuid

import pytest

from client.rest import Client
from controller_manager.controllers.endpoints import EndpointsController, desired_subsets
from controller_manager.testing import RecordingClient, Running, eventually
from machinery import errors


def service(name="web", *, selector=None, ports=None, ns="default", labels=None, **spec):
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
           "spec": {"ports": ports if ports is not None else [{"name": "http", "port": 80, "targetPort": 8080,
                                                                 "protocol": "TCP"}], **spec}}
    if selector is not False:
        svc["spec"]["selector"] = selector or {"app": "web"}
    return svc


def pod(name, *, ip=None, ready=True, labels=None, ns="default", node="n1", ports=None,
        phase="Running", deleting=False):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "web"},
                      "uid": f"uid-{name}"},
         "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": ports or []}]},
         "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if ip:
        p["status"]["podIP"] = ip
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return p


def addr(name, ip, node="n1", ns="default"):
    return {"ip": ip, "nodeName": node,
            "targetRef": {"kind": "Pod", "namespace": ns, "name": name, "uid": f"uid-{name}"}}


def controller(*objs):
    client = RecordingClient()
    ctrl = EndpointsController(client, client)
    client.seed(*objs)
    return client, ctrl


async def test_creates_endpoints_with_ready_and_not_ready_addresses():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.2"), pod("b", ip="10.0.0.1"),
                              pod("c", ip="10.0.0.3", ready=False))
    await ctrl.reconcile("default/web")
    assert client.verbs() == [("create", "endpoints", "default/web")]
    ep = client.actions[0][3]
    assert ep["subsets"] == [{
        "addresses": [addr("b", "10.0.0.1"), addr("a", "10.0.0.2")],
        "notReadyAddresses": [addr("c", "10.0.0.3")],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]


async def test_does_nothing_when_endpoints_are_in_sync():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.2"))
    await ctrl.reconcile("default/web")
    await ctrl.reconcile("default/web")
    assert client.verbs() == [("create", "endpoints", "default/web")]


async def test_updates_when_a_pod_becomes_not_ready():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.2"))
    await ctrl.reconcile("default/web")
    client.seed(pod("a", ip="10.0.0.2", ready=False))
    await ctrl.reconcile("default/web")
    assert client.verbs()[-1] == ("update", "endpoints", "default/web")
    assert client.actions[-1][3]["subsets"][0]["notReadyAddresses"] == [addr("a", "10.0.0.2")]
    assert "addresses" not in client.actions[-1][3]["subsets"][0]


async def test_leaves_out_pods_without_ip_terminal_or_deleting_and_unselected():
    client, ctrl = controller(service(), pod("noip"), pod("done", ip="10.0.0.5", phase="Succeeded"),
                              pod("bye", ip="10.0.0.6", deleting=True),
                              pod("other", ip="10.0.0.7", labels={"app": "db"}),
                              pod("elsewhere", ip="10.0.0.8", ns="other"))
    await ctrl.reconcile("default/web")
    assert client.actions[0][3]["subsets"] == []


async def test_named_target_port_is_resolved_per_pod_and_pods_without_it_are_left_out():
    svc = service(ports=[{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}])
    client, ctrl = controller(
        svc,
        pod("a", ip="10.0.0.1", ports=[{"name": "web", "containerPort": 8080, "protocol": "TCP"}]),
        pod("b", ip="10.0.0.2", ports=[{"name": "web", "containerPort": 9090, "protocol": "TCP"}]),
        pod("c", ip="10.0.0.3", ports=[{"name": "admin", "containerPort": 7070, "protocol": "TCP"}]))
    await ctrl.reconcile("default/web")
    assert client.actions[0][3]["subsets"] == [
        {"addresses": [addr("a", "10.0.0.1")], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
        {"addresses": [addr("b", "10.0.0.2")], "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}]},
    ]


async def test_publish_not_ready_addresses_lists_every_pod_as_ready():
    client, ctrl = controller(service(publishNotReadyAddresses=True), pod("a", ip="10.0.0.1", ready=False))
    await ctrl.reconcile("default/web")
    assert client.actions[0][3]["subsets"][0]["addresses"] == [addr("a", "10.0.0.1")]


async def test_headless_service_without_ports_lists_addresses_and_is_labelled():
    client, ctrl = controller(service(ports=[], clusterIP="None", labels={"tier": "db"}),
                              pod("a", ip="10.0.0.1"))
    await ctrl.reconcile("default/web")
    ep = client.actions[0][3]
    assert ep["subsets"] == [{"addresses": [addr("a", "10.0.0.1")]}]
    assert ep["metadata"]["labels"] == {"tier": "db", "service.kubernetes.io/headless": ""}


async def test_service_without_selector_is_left_alone():
    client, ctrl = controller(service(selector=False), pod("a", ip="10.0.0.1"),
                              {"apiVersion": "v1", "kind": "Endpoints",
                               "metadata": {"name": "web", "namespace": "default"},
                               "subsets": [{"addresses": [{"ip": "192.168.1.1"}]}]})
    await ctrl.reconcile("default/web")
    assert client.actions == []


async def test_deletes_endpoints_when_the_service_goes():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.1"))
    await ctrl.reconcile("default/web")
    await client.delete("services", "web", namespace="default")
    await ctrl.reconcile("default/web")
    assert client.verbs()[-1] == ("delete", "endpoints", "default/web")


async def test_service_labels_follow_onto_endpoints():
    client, ctrl = controller(service(labels={"a": "1"}), pod("a", ip="10.0.0.1"))
    await ctrl.reconcile("default/web")
    client.seed(service(labels={"a": "2"}))
    await ctrl.reconcile("default/web")
    assert client.verbs()[-1] == ("update", "endpoints", "default/web")
    assert client.actions[-1][3]["metadata"]["labels"] == {"a": "2"}


async def test_pod_changes_enqueue_the_services_selecting_it_before_and_after():
    client, ctrl = controller(service("web"), service("db", selector={"app": "db"}),
                              pod("a", ip="10.0.0.1"))
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    client.seed(pod("a", ip="10.0.0.1", labels={"app": "db"}))  # relabelled: leaves web, joins db
    assert sorted(ctrl.queue._queue) == ["default/db", "default/web"]


async def test_irrelevant_pod_changes_enqueue_nothing():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.1"))
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    changed = pod("a", ip="10.0.0.1")
    changed["metadata"]["annotations"] = {"x": "y"}
    client.seed(changed)
    assert len(ctrl.queue) == 0


def test_subsets_are_a_function_of_the_state_alone():
    pods = [pod(n, ip=f"10.0.0.{i}") for i, n in enumerate("dcba")]
    assert desired_subsets(service(), pods) == desired_subsets(service(), list(reversed(pods)))


# -- against a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(private_apiserver):
    return private_apiserver


async def set_pod_status(client, ns, name, *, ip, ready):
    await client.patch("pods", name, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}},
        namespace=ns, subresource="status")


async def test_endpoints_follow_pod_readiness_and_the_service(cluster):
    async with Client(cluster.connection()) as client:
        ns = "ep-" + uuid.uuid4().hex[:8]
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                             "spec": {"selector": {"app": "web"},
                                      "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        for name in ("a", "b"):
            await client.create({"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
                                 "spec": {"nodeName": "n1", "containers": [{
                                     "name": "c", "image": "busybox",
                                     "ports": [{"name": "http", "containerPort": 8080}]}]}})

        async def endpoints(pred):
            ep = await client.get("endpoints", "web", namespace=ns)
            return ep if pred(ep.get("subsets") or []) else None

        def ips(subsets, field):
            return sorted(a["ip"] for s in subsets for a in s.get(field) or ())

        async with Running(client, (EndpointsController, {})):
            await eventually(lambda: endpoints(lambda s: s == []), what="empty endpoints (no pod IPs yet)")
            await set_pod_status(client, ns, "a", ip="10.1.0.1", ready=True)
            await set_pod_status(client, ns, "b", ip="10.1.0.2", ready=False)
            ep = await eventually(lambda: endpoints(
                lambda s: ips(s, "addresses") == ["10.1.0.1"] and ips(s, "notReadyAddresses") == ["10.1.0.2"]),
                what="a ready, b not ready")
            assert ep["subsets"][0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
            await set_pod_status(client, ns, "b", ip="10.1.0.2", ready=True)
            await set_pod_status(client, ns, "a", ip="10.1.0.1", ready=False)
            await eventually(lambda: endpoints(
                lambda s: ips(s, "addresses") == ["10.1.0.2"] and ips(s, "notReadyAddresses") == ["10.1.0.1"]),
                what="readiness swapped")
            await client.delete("pods", "b", namespace=ns, grace_period_seconds=0)
            await eventually(lambda: endpoints(lambda s: ips(s, "addresses") == []), what="deleted pod gone")
            await client.delete("services", "web", namespace=ns)

            async def endpoints_gone():
                try:
                    await client.get("endpoints", "web", namespace=ns)
                    return False
                except errors.NotFound:
                    return True
            await eventually(endpoints_gone, what="endpoints deleted with the service")
