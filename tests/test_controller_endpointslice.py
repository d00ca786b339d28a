"""The EndpointSlice controller: unit tests on seeded caches (the API actions each sync
makes), then slices following pods, readiness, termination and the Service against a
real API server."""
import uuid

import pytest

from client.rest import Client
from controller_manager.controllers.endpointslice import (
    CONTROLLER_NAME, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION, EndpointSliceController,
    EndpointSliceOptions, StaleCache)
from controller_manager.controllers.garbagecollector import GarbageCollector
from controller_manager.testing import RecordingClient, Running, eventually
from machinery import times

CREATED = "2024-01-01T00:00:00Z"
HTTP = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}


def service(name="web", *, selector=None, ports=None, ns="default", labels=None, **spec):
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "labels": labels or {}, "uid": f"uid-svc-{name}",
                        "creationTimestamp": CREATED},
           "spec": {"ports": [HTTP] if ports is None else ports, "clusterIP": "10.96.0.20",
                    "ipFamilies": ["IPv4"], **spec}}
    if selector is not False:
        svc["spec"]["selector"] = selector or {"app": "web"}
    return svc


def pod(name, *, ip=None, ready=True, labels=None, ns="default", node="n1", ports=None,
        phase="Running", deleting=False, since="2024-01-01T00:01:00Z", **spec):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "web"},
                      "uid": f"uid-{name}"},
         "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": ports or []}], **spec},
         "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                                    "lastTransitionTime": since}]}}
    if ip:
        p["status"].update(podIP=ip, podIPs=[{"ip": ip}])
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2024-01-01T00:05:00Z"
    return p


def node(name="n1", zone=None):
    md = {"name": name, "labels": {"topology.kubernetes.io/zone": zone} if zone else {}}
    return {"apiVersion": "v1", "kind": "Node", "metadata": md}


def endpoint(name, ip, *, ready=True, serving=None, terminating=False, node="n1", ns="default", **more):
    return {"addresses": [ip],
            "conditions": {"ready": ready, "serving": ready if serving is None else serving,
                           "terminating": terminating},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": name, "uid": f"uid-{name}"},
            "nodeName": node, **more}


def controller(*objs, max_per_slice=100):
    client = RecordingClient()
    ctrl = EndpointSliceController(client, client,
                                   options=EndpointSliceOptions(max_endpoints_per_slice=max_per_slice))
    client.seed(node(), *objs)
    return client, ctrl


def slices(client, ns="default"):
    return sorted((s for s in client.informers["endpointslices"].store.list()
                   if s["metadata"]["namespace"] == ns), key=lambda s: s["metadata"]["name"])


def writes(client):
    return [(verb, plural) for verb, plural, *_ in client.actions if plural == "endpointslices"]


def written(client):
    """(verb, slice name) of each slice write."""
    return [(verb, key.split("/")[1]) for verb, plural, key, _ in client.actions if plural == "endpointslices"]


async def test_creates_a_slice_with_ready_serving_and_terminating_endpoints():
    client, ctrl = controller(service(labels={"tier": "front"}), pod("a", ip="10.0.0.2"),
                              pod("b", ip="10.0.0.1", ready=False), pod("c", ip="10.0.0.3", deleting=True))
    await ctrl.reconcile("default/web")
    assert writes(client) == [("create", "endpointslices")]
    [s] = slices(client)
    md = s["metadata"]
    assert md["generateName"] == "web-" and md["name"].startswith("web-")
    assert md["labels"] == {"tier": "front", SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: CONTROLLER_NAME}
    assert md["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "uid-svc-web",
                                      "controller": True, "blockOwnerDeletion": True}]
    assert md["annotations"] == {TRIGGER_TIME_ANNOTATION: CREATED}  # first sync: the Service's creation
    assert s["addressType"] == "IPv4"
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert s["endpoints"] == [endpoint("b", "10.0.0.1", ready=False), endpoint("a", "10.0.0.2"),
                              endpoint("c", "10.0.0.3", ready=False, serving=True, terminating=True)]


async def test_does_nothing_when_in_sync():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.2"))
    await ctrl.reconcile("default/web")
    await ctrl.reconcile("default/web")
    assert writes(client) == [("create", "endpointslices")]


async def test_leaves_out_pods_without_ip_terminal_or_unselected():
    client, ctrl = controller(service(), pod("noip"), pod("done", ip="10.0.0.5", phase="Succeeded"),
                              pod("failed", ip="10.0.0.9", phase="Failed"),
                              pod("other", ip="10.0.0.7", labels={"app": "db"}),
                              pod("elsewhere", ip="10.0.0.8", ns="other"), pod("in", ip="10.0.0.6"))
    await ctrl.reconcile("default/web")
    assert [e["targetRef"]["name"] for e in slices(client)[0]["endpoints"]] == ["in"]


async def test_publish_not_ready_addresses_makes_every_endpoint_ready_but_not_serving():
    client, ctrl = controller(service(publishNotReadyAddresses=True), pod("a", ip="10.0.0.1", ready=False))
    await ctrl.reconcile("default/web")
    assert slices(client)[0]["endpoints"] == [endpoint("a", "10.0.0.1", ready=True, serving=False)]


async def test_zone_comes_from_the_node_and_hostname_from_a_matching_subdomain():
    client, ctrl = controller(service(clusterIP="None", ports=[]), node("n2", zone="z-b"),
                              pod("a", ip="10.0.0.1", node="n2", hostname="a0", subdomain="web"),
                              pod("b", ip="10.0.0.2", hostname="b0", subdomain="other"))
    await ctrl.reconcile("default/web")
    [s] = slices(client)
    assert s["ports"] == [] and s["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    assert s["endpoints"] == [endpoint("a", "10.0.0.1", node="n2", zone="z-b", hostname="a0"),
                              endpoint("b", "10.0.0.2")]


async def test_a_pod_on_an_unknown_node_is_left_out_and_the_sync_retried():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.1"), pod("lost", ip="10.0.0.2", node="ghost"))
    with pytest.raises(RuntimeError, match="skipping Pod lost for Service default/web: Node ghost Not Found"):
        await ctrl.reconcile("default/web")
    assert [e["targetRef"]["name"] for e in slices(client)[0]["endpoints"]] == ["a"]
    client.seed(node("ghost"))
    await ctrl.reconcile("default/web")
    assert [e["targetRef"]["name"] for e in slices(client)[0]["endpoints"]] == ["a", "lost"]


async def test_a_pod_without_the_named_target_port_is_listed_without_that_port():
    svc = service(ports=[{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}])
    client, ctrl = controller(
        svc,
        pod("a", ip="10.0.0.1", ports=[{"name": "web", "containerPort": 8080, "protocol": "TCP"}]),
        pod("b", ip="10.0.0.2", ports=[{"name": "web", "containerPort": 9090, "protocol": "TCP"}]),
        pod("c", ip="10.0.0.3", ports=[{"name": "admin", "containerPort": 7070, "protocol": "TCP"}]))
    await ctrl.reconcile("default/web")
    by_ports = {tuple(p["port"] for p in s["ports"]): [e["targetRef"]["name"] for e in s["endpoints"]]
                for s in slices(client)}
    assert by_ports == {(8080,): ["a"], (9090,): ["b"], (): ["c"]}


async def test_a_named_port_may_be_a_sidecars_and_publish_not_ready_lists_pods_on_unknown_nodes():
    svc = service(ports=[{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}],
                  publishNotReadyAddresses=True)
    sidecar = {"name": "proxy", "image": "x", "restartPolicy": "Always",
               "ports": [{"name": "web", "containerPort": 15001, "protocol": "TCP"}]}
    client, ctrl = controller(svc, pod("a", ip="10.0.0.1", node="ghost", initContainers=[sidecar]))
    await ctrl.reconcile("default/web")
    [s] = slices(client)
    assert s["ports"] == [{"name": "http", "port": 15001, "protocol": "TCP"}]
    assert s["endpoints"] == [endpoint("a", "10.0.0.1", node="ghost")]


async def test_at_most_max_endpoints_per_slice():
    pods = [pod(f"p{i:03}", ip=f"10.0.{i // 200}.{i % 200 + 1}") for i in range(250)]
    client, ctrl = controller(service(), *pods)
    await ctrl.reconcile("default/web")
    assert writes(client) == [("create", "endpointslices")] * 3
    assert sorted(len(s["endpoints"]) for s in slices(client)) == [50, 100, 100]
    names = {e["targetRef"]["name"] for s in slices(client) for e in s["endpoints"]}
    assert names == {p["metadata"]["name"] for p in pods}


async def test_changes_touch_only_the_slices_that_hold_them():
    pods = [pod(f"p{i:03}", ip=f"10.0.1.{i + 1}") for i in range(8)]
    client, ctrl = controller(service(), *pods, max_per_slice=3)
    await ctrl.reconcile("default/web")
    before = {s["metadata"]["name"]: [e["targetRef"]["name"] for e in s["endpoints"]] for s in slices(client)}
    assert sorted(map(len, before.values())) == [2, 3, 3]
    full = next(n for n, eps in before.items() if len(eps) == 3)
    gone = before[full][0]
    client.actions.clear()
    await client.delete("pods", gone, namespace="default")
    await ctrl.reconcile("default/web")
    assert written(client) == [("update", full)]
    # A new pod fills a slice it fits most closely (one with room for exactly one).
    before = {s["metadata"]["name"]: [e["targetRef"]["name"] for e in s["endpoints"]] for s in slices(client)}
    client.actions.clear()
    client.seed(pod("new", ip="10.0.1.100"))
    await ctrl.reconcile("default/web")
    updated = [name for _, name in written(client)]
    assert len(updated) == 1 and writes(client) == [("update", "endpointslices")]
    after = {s["metadata"]["name"]: [e["targetRef"]["name"] for e in s["endpoints"]] for s in slices(client)}
    assert len(before[updated[0]]) == 2 and after[updated[0]] == before[updated[0]] + ["new"]
    assert {n: e for n, e in after.items() if n != updated[0]} == \
        {n: e for n, e in before.items() if n != updated[0]}


async def test_a_changed_endpoint_is_rewritten_in_place_with_its_trigger_time():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.1"), pod("b", ip="10.0.0.2"))
    await ctrl.reconcile("default/web")
    name = slices(client)[0]["metadata"]["name"]
    client.actions.clear()
    client.seed(pod("b", ip="10.0.0.2", ready=False, since="2024-01-01T00:09:00Z"))
    await ctrl.reconcile("default/web")
    assert written(client) == [("update", name)]
    [s] = slices(client)
    assert s["endpoints"] == [endpoint("a", "10.0.0.1"), endpoint("b", "10.0.0.2", ready=False)]
    assert s["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION] == "2024-01-01T00:09:00Z"
    # A change no pod or Service event timed (a label) clears the annotation.
    client.seed(service(labels={"new": "label"}))
    await ctrl.reconcile("default/web")
    [s] = slices(client)
    assert s["metadata"]["labels"]["new"] == "label"
    assert TRIGGER_TIME_ANNOTATION not in s["metadata"].get("annotations", {})


def changes(op):
    from machinery.metrics import REGISTRY
    return REGISTRY.get_sample_value("endpoint_slice_controller_changes_total", {"operation": op}) or 0.0


async def test_a_service_without_pods_keeps_one_placeholder_which_is_reused():
    created, updated = changes("create"), changes("update")
    client, ctrl = controller(service())
    await ctrl.reconcile("default/web")
    await ctrl.reconcile("default/web")
    assert writes(client) == [("create", "endpointslices")]
    [placeholder] = slices(client)
    assert placeholder["endpoints"] == [] and placeholder["ports"] == []
    client.seed(pod("a", ip="10.0.0.1"))
    await ctrl.reconcile("default/web")
    assert writes(client) == [("create", "endpointslices"), ("update", "endpointslices")]
    [s] = slices(client)
    assert s["metadata"]["name"] == placeholder["metadata"]["name"]
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}] and len(s["endpoints"]) == 1
    assert (changes("create") - created, changes("update") - updated) == (1, 1)
    await client.delete("pods", "a", namespace="default")
    await ctrl.reconcile("default/web")
    [s] = slices(client)
    assert s["metadata"]["name"] == placeholder["metadata"]["name"] and s["endpoints"] == [] and s["ports"] == []


async def test_a_service_port_change_updates_the_slice_in_place():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.1"))
    await ctrl.reconcile("default/web")
    name = slices(client)[0]["metadata"]["name"]
    client.seed(service(ports=[{**HTTP, "targetPort": 9090}]))
    await ctrl.reconcile("default/web")
    assert writes(client) == [("create", "endpointslices"), ("update", "endpointslices")]
    [s] = slices(client)
    assert s["metadata"]["name"] == name and s["ports"][0]["port"] == 9090


async def test_services_without_selector_or_external_name_are_left_alone():
    client, ctrl = controller(service(selector=False), pod("a", ip="10.0.0.1"),
                              service("ext", type="ExternalName", externalName="example.com"))
    await ctrl.reconcile("default/web")
    await ctrl.reconcile("default/ext")
    assert client.actions == []


async def test_slices_of_an_older_service_are_deleted_and_foreign_ones_kept():
    old = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
           "metadata": {"name": "web-old", "namespace": "default", "uid": "uid-old",
                        "labels": {SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: CONTROLLER_NAME},
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                             "uid": "uid-previous", "controller": True}]},
           "endpoints": [endpoint("x", "10.0.0.9")], "ports": []}
    mine = {**old, "metadata": {**old["metadata"], "name": "web-byhand", "uid": "uid-byhand",
                                "labels": {SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: "someone-else"}}}
    client, ctrl = controller(service(), pod("a", ip="10.0.0.1"), old, mine)
    await ctrl.reconcile("default/web")
    # Another owner's slice is never reused (as an update) for this Service: deleted, and a
    # new one created.
    assert sorted(writes(client)) == [("create", "endpointslices"), ("delete", "endpointslices")]
    assert [n for v, n in written(client) if v == "delete"] == ["web-old"]
    assert "web-byhand" in {s["metadata"]["name"] for s in slices(client)}


async def test_a_stale_cache_is_not_acted_on():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.1"))
    await ctrl.reconcile("default/web")
    [s] = slices(client)
    ctrl.slices.store.delete(f"default/{s['metadata']['name']}")  # the watch has not told us yet
    client.actions.clear()
    with pytest.raises(StaleCache):
        await ctrl.reconcile("default/web")
    assert client.actions == []


async def test_its_own_writes_do_not_enqueue_but_others_changes_do():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.1"))
    await ctrl.reconcile("default/web")
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    [s] = slices(client)
    assert len(ctrl.queue) == 0  # the create's echo
    edited = {**s, "endpoints": [], "metadata": {**s["metadata"], "generation": 2, "resourceVersion": "x"}}
    client.seed(edited)
    assert list(ctrl.queue._queue) == ["default/web"]


async def drain(ctrl):
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())


async def test_a_delete_it_did_not_make_enqueues_its_service_tracked_or_not():
    client, ctrl = controller(service(), pod("a", ip="10.0.0.1"))
    await ctrl.reconcile("default/web")
    await drain(ctrl)
    [s] = slices(client)
    ctrl.tracker.expect_deletion(s)  # as if this controller had deleted it
    await client.delete("endpointslices", s["metadata"]["name"], namespace="default")
    assert len(ctrl.queue) == 0
    await ctrl.reconcile("default/web")  # recreated
    await drain(ctrl)
    [s] = slices(client)
    await client.delete("endpointslices", s["metadata"]["name"], namespace="default")
    assert list(ctrl.queue._queue) == ["default/web"]
    # after a restart nothing is tracked: a delete is still news
    client, ctrl = controller(service(), s)
    await drain(ctrl)
    await client.delete("endpointslices", s["metadata"]["name"], namespace="default")
    assert list(ctrl.queue._queue) == ["default/web"]


async def test_pod_changes_enqueue_the_services_selecting_it_before_and_after():
    client, ctrl = controller(service("web"), service("db", selector={"app": "db"}), pod("a", ip="10.0.0.1"))
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    annotated = pod("a", ip="10.0.0.1")
    annotated["metadata"]["annotations"] = {"x": "y"}
    client.seed(annotated)
    assert len(ctrl.queue) == 0
    client.seed(pod("a", ip="10.0.0.1", labels={"app": "db"}))
    assert sorted(ctrl.queue._queue) == ["default/db", "default/web"]


def test_max_endpoints_per_slice_is_bounded_as_kubernetes_bounds_it():
    with pytest.raises(ValueError, match="between 1 and 1000"):
        EndpointSliceOptions(max_endpoints_per_slice=1001)


# -- against a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(private_apiserver):
    return private_apiserver


async def set_pod_status(client, ns, name, *, ip, ready):
    await client.patch("pods", name, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                        "lastTransitionTime": times.rfc3339()}]}},
        namespace=ns, subresource="status")


async def test_slices_follow_pods_readiness_termination_and_the_service(cluster):
    async with Client(cluster.url) as client:
        ns = "eps-" + uuid.uuid4().hex[:8]
        node_name = "node-" + ns
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": node_name, "labels": {"topology.kubernetes.io/zone": "zone-a"}}})
        await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                             "spec": {"selector": {"app": "web"},
                                      "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        for name in ("a", "b", "c"):
            await client.create({"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
                                 "spec": {"nodeName": node_name, "containers": [{
                                     "name": "c", "image": "busybox",
                                     "ports": [{"name": "http", "containerPort": 8080}]}]}})

        async def endpoints(pred):
            items = (await client.list("endpointslices", namespace=ns,
                                       label_selector=f"{SERVICE_NAME_LABEL}=web"))["items"]
            eps = {e["targetRef"]["name"]: e for s in items for e in s.get("endpoints") or ()}
            return items if pred(items, eps) else None

        def conditions(eps):
            return {n: tuple(e["conditions"][k] for k in ("ready", "serving", "terminating")) for n, e in eps.items()}

        async with Running(client, (EndpointSliceController, {"max_endpoints_per_slice": 2}), (GarbageCollector, {})):
            items = await eventually(lambda: endpoints(lambda items, eps: len(items) == 1 and not eps),
                                     what="a placeholder slice (no pod IPs yet)")
            assert items[0]["metadata"]["ownerReferences"][0]["kind"] == "Service"
            await set_pod_status(client, ns, "a", ip="10.1.0.1", ready=True)
            await set_pod_status(client, ns, "b", ip="10.1.0.2", ready=False)
            await set_pod_status(client, ns, "c", ip="10.1.0.3", ready=True)
            items = await eventually(lambda: endpoints(lambda items, eps: conditions(eps) == {
                "a": (True, True, False), "b": (False, False, False), "c": (True, True, False)}),
                what="a and c ready, b not")
            assert sorted(len(s["endpoints"]) for s in items) == [1, 2]  # two a slice at most
            for s in items:
                assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
                assert all(e["zone"] == "zone-a" and e["nodeName"] == node_name for e in s["endpoints"])
                assert times.parse(s["metadata"]["annotations"][TRIGGER_TIME_ANNOTATION]) > 0
            # A graceful delete: the pod stays, terminating, until its grace period ends.
            await client.delete("pods", "a", namespace=ns)
            await eventually(lambda: endpoints(lambda items, eps: conditions(eps)["a"] == (False, True, True)),
                             what="a terminating: not ready, still serving")
            await client.delete("pods", "a", namespace=ns, grace_period_seconds=0)
            await eventually(lambda: endpoints(lambda items, eps: set(eps) == {"b", "c"}), what="a gone")
            await client.delete("services", "web", namespace=ns)
            async def collected():
                return not (await client.list("endpointslices", namespace=ns))["items"]
            await eventually(collected, what="slices collected with their Service")
        await client.delete("nodes", node_name)


async def test_a_pod_on_an_unknown_node_is_reported_on_the_service_and_placed_once_the_node_exists(cluster):
    from client.events import EventRecorder
    async with Client(cluster.url) as client:
        ns = "eps-" + uuid.uuid4().hex[:8]
        late = "late-" + ns
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                             "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        await client.create({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": "p", "namespace": ns, "labels": {"app": "web"}},
                             "spec": {"nodeName": late, "containers": [{"name": "c", "image": "busybox"}]}})
        await set_pod_status(client, ns, "p", ip="10.1.0.9", ready=True)
        recorder = EventRecorder(client, component="endpoint-slice-controller")
        try:
            async with Running(client, (EndpointSliceController, {}), recorder=recorder):
                async def warned():
                    events = (await client.list("events", namespace=ns))["items"]
                    return [e for e in events if e["reason"] == "FailedToUpdateEndpointSlices"]
                [event] = await eventually(warned, what="a FailedToUpdateEndpointSlices event")
                assert event["type"] == "Warning"
                assert (event["involvedObject"]["kind"], event["involvedObject"]["name"]) == ("Service", "web")
                assert f"skipping Pod p for Service {ns}/web: Node {late} Not Found" in event["message"]
                await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": late}})

                async def placed():
                    items = (await client.list("endpointslices", namespace=ns))["items"]
                    return [a for s in items for e in s.get("endpoints") or () for a in e["addresses"]] == ["10.1.0.9"]
                await eventually(placed, what="the pod listed once its node exists (a retry, not an event)")
        finally:
            await recorder.close()
            await client.delete("nodes", late)
