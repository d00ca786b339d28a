"""Service ClusterIP and NodePort allocation, and the `kubernetes` Service, through a
real API server on real etcd (apiserver/allocators.py, apiserver/kubernetesservice.py).
Each test module's servers use their own etcd, so the allocation state is theirs."""
import asyncio
import concurrent.futures
import ipaddress
import subprocess
import sys

import pytest

from tests.procs import APIServer, Etcd, free_port, wait_for

SVCS = "/api/v1/namespaces/default/services"


@pytest.fixture(scope="module")
def etcd():
    e = Etcd().start()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def server(etcd):
    """Its kubernetes Service reconciled every second (kube-apiserver's: every 10 s)."""
    s = APIServer(etcd.url, "--endpoint-reconciler-interval", "1s").start()
    yield s
    s.stop()


@pytest.fixture
def http(server):
    with server.client(timeout=30) as c:
        yield c


def svc(name, **spec):
    spec.setdefault("ports", [{"port": 80}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def create(http, name, **spec):
    return http.post(SVCS, json=svc(name, **spec))


def test_cluster_ip_is_allocated_in_range_with_single_stack_defaults(http):
    r = create(http, "plain")
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert ipaddress.ip_address(spec["clusterIP"]) in ipaddress.ip_network("10.96.0.0/12")
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert http.get(f"{SVCS}/plain").json()["spec"]["clusterIP"] == spec["clusterIP"]


def test_concurrent_creates_get_unique_ips(server):
    def one(i):
        with server.client(timeout=60) as c:
            r = create(c, f"many-{i}")
            assert r.status_code == 201, r.text
            return r.json()["spec"]["clusterIP"]
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        ips = list(pool.map(one, range(50)))
    assert len(set(ips)) == 50


def test_requested_ip_taken_or_out_of_range_is_422_and_stores_nothing(http):
    r = create(http, "fixed", clusterIP="10.96.0.50")
    assert r.status_code == 201 and r.json()["spec"]["clusterIP"] == "10.96.0.50"
    r = create(http, "fixed-again", clusterIP="10.96.0.50")
    assert r.status_code == 422
    assert r.json()["message"] == ('Service "fixed-again" is invalid: spec.clusterIPs: Invalid value: '
                                   '["10.96.0.50"]: failed to allocate IP 10.96.0.50: provided IP is '
                                   'already allocated')
    r = create(http, "outside", clusterIP="192.168.7.7")
    assert r.status_code == 422
    assert r.json()["message"] == (
        'Service "outside" is invalid: spec.clusterIPs: Invalid value: ["192.168.7.7"]: failed to '
        'allocate IP 192.168.7.7: the provided IP (192.168.7.7) is not in the valid range. The '
        'range of valid IPs is 10.96.0.0/12')
    for name in ("fixed-again", "outside"):
        assert http.get(f"{SVCS}/{name}").status_code == 404


def test_delete_releases_the_ip(http):
    assert create(http, "freed", clusterIP="10.96.0.60").status_code == 201
    assert http.delete(f"{SVCS}/freed").status_code == 200
    r = create(http, "reuser", clusterIP="10.96.0.60")
    assert r.status_code == 201, r.text


def test_failed_create_gives_the_ip_back(http):
    assert create(http, "dup", clusterIP="10.96.0.70").status_code == 201
    # Same name: AlreadyExists after 10.96.0.71 was taken; the address must come back.
    assert create(http, "dup", clusterIP="10.96.0.71").status_code == 409
    assert create(http, "dup-2", clusterIP="10.96.0.71").status_code == 201


def test_headless_allocates_nothing(http):
    r = create(http, "headless", clusterIP="None", selector={"app": "x"})
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert spec["clusterIP"] == "None" and spec["clusterIPs"] == ["None"]
    assert spec["ipFamilies"] == ["IPv4"]


def test_cluster_ip_is_immutable(http):
    ip = create(http, "fixed-ip").json()["spec"]["clusterIP"]
    r = http.patch(f"{SVCS}/fixed-ip", json={"spec": {"clusterIP": "10.96.0.80"}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 422
    assert r.json()["message"] == ('Service "fixed-ip" is invalid: spec.clusterIPs[0]: Invalid value: '
                                   '["10.96.0.80"]: may not change once set')
    # An update that leaves it out keeps it (patchAllocatedValues).
    body = svc("fixed-ip", ports=[{"port": 81}])
    body["metadata"]["resourceVersion"] = http.get(f"{SVCS}/fixed-ip").json()["metadata"]["resourceVersion"]
    r = http.put(f"{SVCS}/fixed-ip", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["clusterIP"] == ip
    assert create(http, "takes-80", clusterIP="10.96.0.80").status_code == 201


def test_node_ports(http):
    r = create(http, "np", type="NodePort", ports=[{"port": 80, "name": "a"},
                                                   {"port": 81, "name": "b", "nodePort": 30080}])
    assert r.status_code == 201, r.text
    ports = r.json()["spec"]["ports"]
    assert 30000 <= ports[0]["nodePort"] <= 32767 and ports[1]["nodePort"] == 30080
    r = create(http, "np-taken", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
    assert r.status_code == 422
    assert r.json()["message"] == ('Service "np-taken" is invalid: spec.ports[0].nodePort: '
                                   'Invalid value: 30080: provided port is already allocated')
    r = create(http, "np-out", type="NodePort", ports=[{"port": 80, "nodePort": 8080}])
    assert r.status_code == 422
    assert r.json()["message"] == (
        'Service "np-out" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided port '
        'is not in the valid range. The range of valid ports is 30000-32767')
    lb = create(http, "lb", type="LoadBalancer").json()
    assert 30000 <= lb["spec"]["ports"][0]["nodePort"] <= 32767
    r = create(http, "cip-np", ports=[{"port": 80, "nodePort": 30090}])
    assert r.status_code == 422 and "may not be used when `type` is 'ClusterIP'" in r.json()["message"]
    # Deleting releases the ports.
    assert http.delete(f"{SVCS}/np").status_code == 200
    assert create(http, "np-after", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]).status_code == 201


def patch(http, name, body):
    return http.patch(f"{SVCS}/{name}", json=body, headers={"content-type": "application/merge-patch+json"})


def test_type_changes(http):
    ip = create(http, "morph", clusterIP="10.96.0.90").json()["spec"]["clusterIP"]
    r = patch(http, "morph", {"spec": {"type": "NodePort"}})
    assert r.status_code == 200, r.text
    port = r.json()["spec"]["ports"][0]["nodePort"]
    assert r.json()["spec"]["clusterIP"] == ip and 30000 <= port <= 32767
    r = patch(http, "morph", {"spec": {"type": "ClusterIP"}})
    assert r.status_code == 200, r.text
    assert "nodePort" not in r.json()["spec"]["ports"][0]
    assert create(http, "port-back", type="NodePort", ports=[{"port": 80, "nodePort": port}]).status_code == 201
    r = patch(http, "morph", {"spec": {"type": "ExternalName", "externalName": "example.com"}})
    assert r.status_code == 200, r.text
    spec = r.json()["spec"]
    assert "clusterIP" not in spec and "clusterIPs" not in spec and "ipFamilies" not in spec
    assert create(http, "ip-back", clusterIP=ip).status_code == 201
    r = patch(http, "morph", {"spec": {"type": "ClusterIP", "externalName": None}})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["clusterIP"] not in ("", None, ip)


def test_kubernetes_service(http, server):
    r = http.get(f"{SVCS}/kubernetes")
    assert r.status_code == 200
    spec = r.json()["spec"]
    assert spec["clusterIP"] == "10.96.0.1"
    assert spec["ports"] == [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": server.port}]
    ep = http.get("/api/v1/namespaces/default/endpoints/kubernetes").json()
    assert ep["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}],
                              "ports": [{"name": "https", "port": server.port, "protocol": "TCP"}]}]
    r = create(http, "wants-first", clusterIP="10.96.0.1")
    assert r.status_code == 422 and "provided IP is already allocated" in r.json()["message"]


def test_restart_keeps_allocations_and_repairs_drift(etcd):
    first = APIServer(etcd.url).start()
    try:
        with first.client(timeout=30) as c:
            assert create(c, "kept", clusterIP="10.96.1.1").status_code == 201
            assert create(c, "kept-np", type="NodePort", ports=[{"port": 80, "nodePort": 31000}]).status_code == 201
            assert create(c, "leaks", clusterIP="10.96.1.2").status_code == 201
    finally:
        first.stop()
    # Drift while no server runs: a Service removed from etcd behind the allocator's back
    # (its address leaks), and an address marked by nobody's Service missing (10.96.1.1's
    # mark cleared by writing the bitmap without it).
    asyncio.run(_drift(etcd.url))
    second = APIServer(etcd.url).start()
    try:
        with second.client(timeout=30) as c:
            assert c.get(f"{SVCS}/kept").json()["spec"]["clusterIP"] == "10.96.1.1"
            # Kept across the restart, and put back by the repair:
            r = create(c, "steal", clusterIP="10.96.1.1")
            assert r.status_code == 422 and "already allocated" in r.json()["message"]
            r = create(c, "steal-np", type="NodePort", ports=[{"port": 80, "nodePort": 31000}])
            assert r.status_code == 422 and "already allocated" in r.json()["message"]
            # The leaked address is held until repairs have seen it leaked three times in
            # a row (it could be a create in flight on another server).
            r = create(c, "reclaims", clusterIP="10.96.1.2")
            assert r.status_code == 422 and "already allocated" in r.json()["message"]
    finally:
        second.stop()


async def _drift(url):
    from apiserver.allocators import IPAllocator
    from apiserver.storage import EtcdStore

    store = EtcdStore([url])
    await store.open()
    try:
        ok, _ = await store.delete("/registry/services/default/leaks")
        assert ok
        await IPAllocator(store).release("10.96.1.1")
    finally:
        await store.close()


def test_two_servers_never_hand_out_the_same_ip(etcd, server):
    other = APIServer(etcd.url).start()
    try:
        def one(i):
            with (server, other)[i % 2].client(timeout=60) as c:
                r = create(c, f"two-{i}")
                assert r.status_code == 201, r.text
                return r.json()["spec"]["clusterIP"]
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            ips = list(pool.map(one, range(40)))
        assert len(set(ips)) == 40
    finally:
        other.stop()


def test_dry_run_takes_nothing(http):
    r = http.post(SVCS, params={"dryRun": "All"}, json=svc("dry", clusterIP="10.96.0.100"))
    assert r.status_code == 201 and r.json()["spec"]["clusterIP"] == "10.96.0.100"
    assert create(http, "wet", clusterIP="10.96.0.100").status_code == 201
    r = http.post(SVCS, params={"dryRun": "All"}, json=svc("dry", clusterIP="10.96.0.100"))
    assert r.status_code == 422 and "provided IP is already allocated" in r.json()["message"]


def test_configured_ranges():
    fresh = Etcd().start()
    s = APIServer(fresh.url, "--service-cluster-ip-range", "10.200.0.0/29",
                  "--service-node-port-range", "31000-31001").start()
    try:
        with s.client(timeout=30) as c:
            assert c.get(f"{SVCS}/kubernetes").json()["spec"]["clusterIP"] == "10.200.0.1"
            r = create(c, "np", type="NodePort", ports=[{"port": 1, "name": "a"}, {"port": 2, "name": "b"}])
            assert r.status_code == 201, r.text
            assert sorted(p["nodePort"] for p in r.json()["spec"]["ports"]) == [31000, 31001]
            r = create(c, "np-full", type="NodePort")
            assert r.status_code == 500 and "failed to allocate a nodePort: range is full" in r.json()["message"]
            # 6 usable addresses (.1 to .6): the kubernetes Service's, np's, and 4 more.
            ips = {create(c, f"small-{i}").json()["spec"]["clusterIP"] for i in range(4)}
            ips.add(c.get(f"{SVCS}/np").json()["spec"]["clusterIP"])
            assert ips == {f"10.200.0.{i}" for i in range(2, 7)}
            r = create(c, "one-too-many")
            assert r.status_code == 500 and "failed to allocate a serviceIP: range is full" in r.json()["message"]
            for name in ("one-too-many", "np-full"):
                assert c.get(f"{SVCS}/{name}").status_code == 404
            r = create(c, "headless-np", clusterIP="None", type="NodePort")
            assert r.status_code == 422
            assert r.json()["message"] == ('Service "headless-np" is invalid: spec.clusterIPs[0]: Invalid '
                                           'value: "None": may not be set to \'None\' for NodePort services')
    finally:
        s.stop()
        fresh.stop()


@pytest.mark.parametrize("flag,value,why", [
    ("--service-cluster-ip-range", "bogus", "--service-cluster-ip-range: "),
    ("--service-cluster-ip-range", "fd00::/108", "only single-stack IPv4 is supported"),
    ("--service-node-port-range", "30000-x", "--service-node-port-range: invalid range"),
])
def test_bad_range_flags_are_one_line(etcd, flag, value, why):
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "apiserver", "--etcd-servers", etcd.url,
                          "--plain-http", "--port", str(free_port()), flag, value],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("error: ") and why in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_repair_frees_a_leak_only_on_its_third_sighting():
    from apiserver.allocators import IPAllocator, PortAllocator, ServiceAllocations
    from apiserver.storage import EtcdStore

    fresh = Etcd().start()

    async def run():
        store = EtcdStore([fresh.url])
        await store.open()
        try:
            allocs = ServiceAllocations(IPAllocator(store), PortAllocator(store))
            await allocs.ips.allocate("10.96.3.3")  # leaked: no Service holds it
            await allocs.ports.allocate(30500)
            held = {"metadata": {"name": "a", "namespace": "default"},
                    "spec": {"type": "NodePort", "clusterIP": "10.96.3.4",
                             "ports": [{"port": 80, "nodePort": 30501}]}}
            notes = await allocs.repair([held])
            assert any("marked 1 cluster IP" in n for n in notes), notes
            assert await allocs.ips.allocated() == {"10.96.3.3", "10.96.3.4"}
            assert await allocs.ports.allocated() == {30500, 30501}
            await allocs.repair([held])
            assert "10.96.3.3" in await allocs.ips.allocated()
            await allocs.repair([held])
            assert await allocs.ips.allocated() == {"10.96.3.4"}
            assert await allocs.ports.allocated() == {30501}
            # A leak that a Service comes to hold before its third sighting stays.
            await allocs.ips.allocate("10.96.3.5")
            await allocs.repair([held])
            held["spec"]["clusterIP"] = "10.96.3.5"
            await allocs.repair([held])
            await allocs.repair([held])
            assert "10.96.3.5" in await allocs.ips.allocated()
        finally:
            await store.close()
    try:
        asyncio.run(run())
    finally:
        fresh.stop()


def test_node_ports_follow_the_ports_on_update(http):
    r = create(http, "grow", type="NodePort", ports=[{"port": 80, "name": "a", "nodePort": 30200}])
    assert r.status_code == 201, r.text
    body = r.json()
    # Sent back without nodePorts (as its manifest would be): port `a` keeps 30200 and the
    # new port `b` gets one of its own.
    body["spec"]["ports"] = [{"port": 80, "name": "a"}, {"port": 81, "name": "b"}]
    r = http.put(f"{SVCS}/grow", json=body)
    assert r.status_code == 200, r.text
    a, b = r.json()["spec"]["ports"]
    assert a["nodePort"] == 30200 and 30000 <= b["nodePort"] <= 32767 and b["nodePort"] != 30200
    # Dropping port `a` releases 30200 once the update is stored.
    body = r.json()
    body["spec"]["ports"] = [b]
    assert http.put(f"{SVCS}/grow", json=body).status_code == 200
    assert create(http, "takes-30200", type="NodePort",
                  ports=[{"port": 80, "nodePort": 30200}]).status_code == 201
    r = create(http, "takes-b", type="NodePort", ports=[{"port": 80, "nodePort": b["nodePort"]}])
    assert r.status_code == 422


def test_kubernetes_service_comes_back_after_a_delete(http, server):
    assert http.delete(f"{SVCS}/kubernetes").status_code == 200
    assert http.delete("/api/v1/namespaces/default/endpoints/kubernetes").status_code == 200

    def back():
        svc = http.get(f"{SVCS}/kubernetes")
        ep = http.get("/api/v1/namespaces/default/endpoints/kubernetes")
        return svc.status_code == 200 and ep.status_code == 200 and svc.json()
    # kube-apiserver's controller puts them back on its next round.
    svc = wait_for(back, timeout=30, interval=0.2, what="the kubernetes Service back")
    assert svc["spec"]["clusterIP"] == "10.96.0.1"


def test_load_balancer_without_node_port_allocation_keeps_only_requested_ones(http):
    r = create(http, "lb-none", type="LoadBalancer", allocateLoadBalancerNodePorts=False,
               ports=[{"port": 80, "name": "a"}, {"port": 81, "name": "b", "nodePort": 30300}])
    assert r.status_code == 201, r.text
    a, b = r.json()["spec"]["ports"]
    assert "nodePort" not in a and b["nodePort"] == 30300
    r = create(http, "lb-steal", type="NodePort", ports=[{"port": 80, "nodePort": 30300}])
    assert r.status_code == 422
    assert http.delete(f"{SVCS}/lb-none").status_code == 200
    assert create(http, "lb-steal", type="NodePort", ports=[{"port": 80, "nodePort": 30300}]).status_code == 201


def test_health_check_node_port_for_local_load_balancers(http):
    r = create(http, "local-lb", type="LoadBalancer", externalTrafficPolicy="Local")
    assert r.status_code == 201, r.text
    hc = r.json()["spec"]["healthCheckNodePort"]
    assert 30000 <= hc <= 32767 and hc != r.json()["spec"]["ports"][0]["nodePort"]
    r = create(http, "local-lb-2", type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=hc)
    assert r.status_code == 500
    assert r.json()["message"] == (f"Internal error occurred: failed to allocate requested HealthCheck "
                                   f"NodePort {hc}: provided port is already allocated")
    # Cluster traffic policy needs no health check: the port is dropped and released.
    r = patch(http, "local-lb", {"spec": {"externalTrafficPolicy": "Cluster"}})
    assert r.status_code == 200, r.text
    assert "healthCheckNodePort" not in r.json()["spec"]
    assert create(http, "takes-hc", type="NodePort", ports=[{"port": 80, "nodePort": hc}]).status_code == 201
