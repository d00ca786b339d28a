"""The service load balancer (k3s's ServiceLB): unit tests on seeded caches, then a
LoadBalancer's ingress following nodes against a real API server, and kubectl's
EXTERNAL-IP column."""
import uuid

import pytest

from apiserver import registry, tables
from apiserver.cache import Entry
from client.rest import Client
from controller_manager.controllers.servicelb import ServiceLBController
from controller_manager.testing import RecordingClient, Running, eventually


def service(name="web", *, type_="LoadBalancer", ns="default", labels=None, ingress=None, **spec):
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
           "spec": {"type": type_, "clusterIP": "10.96.0.20", "ipFamilies": ["IPv4"],
                    "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
                    **spec}}
    if ingress is not None:
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ingress]}}
    return svc


def node(name, internal, *, external=None, ready=True, labels=None, taints=None):
    addresses = [{"type": "InternalIP", "address": internal}, {"type": "Hostname", "address": name}]
    if external:
        addresses.append({"type": "ExternalIP", "address": external})
    n = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
         "spec": {"taints": taints or []},
         "status": {"addresses": addresses,
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    return n


def controller(*objs):
    client = RecordingClient()
    ctrl = ServiceLBController(client, client)
    client.seed(*objs)
    return client, ctrl


def ingress_of(client, key="default/web"):
    svc = client.informers["services"].store.get(key)
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()]


THREE = (node("n1", "10.0.0.1"), node("n2", "10.0.0.2"), node("n3", "10.0.0.3"))


async def test_sets_ingress_to_the_ready_nodes_internal_ips_with_ip_mode_vip():
    client, ctrl = controller(service(), *THREE[:2], node("n3", "10.0.0.3", ready=False))
    await ctrl.reconcile("default/web")
    assert client.verbs() == [("patch_status", "services", "default/web")]
    assert client.actions[0][3] == {"status": {"loadBalancer": {"ingress": [
        {"ip": "10.0.0.1", "ipMode": "VIP"}, {"ip": "10.0.0.2", "ipMode": "VIP"}]}}}


async def test_does_nothing_when_in_sync():
    client, ctrl = controller(service(ingress=["10.0.0.1", "10.0.0.2", "10.0.0.3"]), *THREE)
    await ctrl.reconcile("default/web")
    assert client.actions == []


async def test_external_ips_win_over_internal_ones_as_k3s_has_it():
    client, ctrl = controller(service(), node("n1", "10.0.0.1", external="203.0.113.1"),
                              node("n2", "10.0.0.2"))
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["203.0.113.1"]


async def test_addresses_are_sorted_as_strings_and_of_the_services_family_only():
    client, ctrl = controller(service(), node("n1", "10.0.0.10"), node("n2", "10.0.0.9"),
                              node("n3", "fd00::3"))
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.10", "10.0.0.9"]


async def test_services_with_a_load_balancer_class_or_another_type_are_not_written():
    client, ctrl = controller(service("classed", loadBalancerClass="example.com/lb"),
                              service("plain", type_="ClusterIP"), *THREE)
    await ctrl.reconcile("default/classed")
    await ctrl.reconcile("default/plain")
    assert client.actions == []


async def test_clears_the_ingress_when_the_type_changes_away():
    client, ctrl = controller(service(), *THREE)
    await ctrl.reconcile("default/web")
    status = client.informers["services"].store.get("default/web")["status"]
    client.seed({**service(type_="NodePort"), "status": status})
    await ctrl.reconcile("default/web")
    assert client.actions[-1][3] == {"status": {"loadBalancer": {"ingress": None}}}
    assert ingress_of(client) == []


async def test_follows_nodes_coming_going_and_turning_not_ready():
    client, ctrl = controller(service(), *THREE[:2])
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.1", "10.0.0.2"]
    client.seed(THREE[2])
    assert "default/web" in ctrl.queue._queue
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    client.seed(node("n1", "10.0.0.1", ready=False))
    await client.delete("nodes", "n2")
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.3"]


async def test_no_eligible_node_leaves_the_ingress_empty():
    client, ctrl = controller(service(ingress=["10.0.0.1"]), node("n1", "10.0.0.1", ready=False))
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == []


async def test_enablelb_label_on_any_node_restricts_to_the_labelled_ones():
    enable = "svccontroller.k3s.cattle.io/enablelb"
    client, ctrl = controller(service(), node("n1", "10.0.0.1", labels={enable: "true"}),
                              node("n2", "10.0.0.2", labels={enable: "false"}),
                              node("n3", "10.0.0.3"))
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.1"]


async def test_lbpool_label_picks_the_pools_nodes():
    pool = {"svccontroller.k3s.cattle.io/lbpool": "edge"}
    client, ctrl = controller(service(labels=pool), node("n1", "10.0.0.1", labels=pool), *THREE[1:])
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.1"]


async def test_untolerated_taints_exclude_a_node_but_control_plane_ones_do_not():
    client, ctrl = controller(
        service(),
        node("n1", "10.0.0.1", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        node("n2", "10.0.0.2", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        node("n3", "10.0.0.3", taints=[{"key": "dedicated", "value": "db", "effect": "PreferNoSchedule"}]))
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.1", "10.0.0.3"]


def endpoint_slice(name, *endpoints, service="web"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "namespace": "default", "name": f"pod-{ip}"}}
                          for ip, node, ready in endpoints]}


async def test_local_traffic_policy_uses_only_nodes_with_a_ready_pod_endpoint():
    client, ctrl = controller(service(externalTrafficPolicy="Local"), *THREE,
                              endpoint_slice("web-a", ("10.244.2.5", "n2", True), ("10.244.3.5", "n3", False)),
                              endpoint_slice("other", ("10.244.1.5", "n1", True), service="other"))
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.2"]
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    client.seed(endpoint_slice("web-b", ("10.244.3.6", "n3", True)))   # a second slice of the service
    assert list(ctrl.queue._queue) == ["default/web"]
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.2", "10.0.0.3"]
    await client.delete("endpointslices", "web-a", namespace="default")
    await ctrl.reconcile("default/web")
    assert ingress_of(client) == ["10.0.0.3"]


async def test_cluster_traffic_policy_ignores_endpoint_slices():
    client, ctrl = controller(service(), *THREE)
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    client.seed(endpoint_slice("web-a", ("10.244.2.5", "n2", True)))
    assert len(ctrl.queue) == 0


async def test_irrelevant_node_changes_enqueue_nothing():
    client, ctrl = controller(service(), *THREE)
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    changed = node("n1", "10.0.0.1")
    changed["metadata"]["annotations"] = {"heartbeat": "now"}
    client.seed(changed)
    assert len(ctrl.queue) == 0


def external_ip_cell(svc: dict) -> str:
    t = tables.table(registry.by_plural("services"), [Entry.of("", svc, 0)], "1")
    return dict(zip((c["name"] for c in t["columnDefinitions"]), t["rows"][0]["cells"]))["External-IP"]


def test_external_ip_column_reads_as_kubectls():
    assert external_ip_cell(service()) == "<pending>"
    assert external_ip_cell(service(ingress=["10.0.0.9", "10.0.0.10"])) == "10.0.0.10,10.0.0.9"
    with_external = service(ingress=["10.0.0.9"], externalIPs=["192.0.2.7"])
    assert external_ip_cell(with_external) == "10.0.0.9,192.0.2.7"
    hostname = service()
    hostname["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}
    assert external_ip_cell(hostname) == "lb.example.com"
    assert external_ip_cell(service(type_="ClusterIP")) == "<none>"
    assert external_ip_cell(service(type_="NodePort", externalIPs=["192.0.2.7"])) == "192.0.2.7"
    assert external_ip_cell(service(type_="ExternalName", externalName="db.example.com")) == "db.example.com"


# -- against a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(private_apiserver):
    return private_apiserver


async def _lb_ips(client, ns, name):
    svc = await client.get("services", name, namespace=ns)
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()]


async def _external_ip_cell(server, ns, name):
    async with server.async_client() as http:
        resp = await http.get(f"/api/v1/namespaces/{ns}/services/{name}",
                              headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    table = resp.raise_for_status().json()
    columns = [c["name"] for c in table["columnDefinitions"]]
    return table["rows"][0]["cells"][columns.index("External-IP")]


async def test_load_balancer_ingress_follows_nodes_and_type_against_the_api(cluster):
    async with Client(cluster.connection()) as client:
        ns = "lb-" + uuid.uuid4().hex[:8]
        prefix = uuid.uuid4().hex[:6]
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        # Addresses from TEST-NET-2 unique to this test, so other nodes in the shared
        # server (none are ready with these) cannot be mistaken for ours.
        names = [f"lb-{prefix}-{i}" for i in (1, 2)]
        for i, name in enumerate(names, 1):
            await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
            await client.patch("nodes", name, {"status": {
                "addresses": [{"type": "InternalIP", "address": f"198.51.100.{i}"}],
                "conditions": [{"type": "Ready", "status": "True"}]}}, subresource="status")
        await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                             "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                                      "ports": [{"port": 80, "targetPort": 8080}]}})
        assert await _external_ip_cell(cluster, ns, "web") == "<pending>"

        def ours(ips):
            return [ip for ip in ips if ip.startswith("198.51.100.")]

        async with Running(client, (ServiceLBController, {})):
            await eventually(lambda: _has(client, ns, ours, ["198.51.100.1", "198.51.100.2"]),
                             what="both nodes' addresses")
            cell = await _external_ip_cell(cluster, ns, "web")
            assert "198.51.100.1" in cell.split(",") and "198.51.100.2" in cell.split(",")
            await client.patch("nodes", names[0], {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                               subresource="status")
            await eventually(lambda: _has(client, ns, ours, ["198.51.100.2"]), what="the not-ready node dropped")
            await client.delete("nodes", names[1])
            await eventually(lambda: _has(client, ns, ours, []), what="the deleted node dropped")
            await client.patch("nodes", names[0], {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                               subresource="status")
            await eventually(lambda: _has(client, ns, ours, ["198.51.100.1"]), what="the node back")
            await client.patch("services", "web", {"spec": {"type": "ClusterIP"}}, namespace=ns)
            await eventually(lambda: _has(client, ns, lambda ips: ips, []), what="ingress cleared")
            assert await _external_ip_cell(cluster, ns, "web") == "<none>"
        await client.delete("nodes", names[0])


async def _has(client, ns, pick, want):
    return pick(await _lb_ips(client, ns, "web")) == want


def test_the_controller_managers_role_lets_it_do_what_the_controller_does():
    from apiserver.auth import bootstrappolicy
    from apiserver.auth.authorizer import Attributes, UserInfo
    from apiserver.auth.rbac import compile_rules, rules_allow
    name = "system:controller:service-controller"
    role = next(r for r in bootstrappolicy.cluster_roles() if r["metadata"]["name"] == name)
    rules = compile_rules(role["rules"])
    user = UserInfo(name="system:kube-controller-manager")
    for verb, resource, sub in (("list", "services", ""), ("watch", "services", ""), ("patch", "services", "status"),
                                ("list", "nodes", ""), ("watch", "nodes", "")):
        assert rules_allow(Attributes(user, verb, resource=resource, subresource=sub), rules), (verb, resource, sub)
    assert rules_allow(Attributes(user, "watch", api_group="discovery.k8s.io", resource="endpointslices"), rules)
    assert not rules_allow(Attributes(user, "update", resource="services"), rules)
    binding = next(b for b in bootstrappolicy.cluster_role_bindings()
                   if b["metadata"]["name"] == name)
    assert {"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
            "name": "system:kube-controller-manager"} in binding["subjects"]
