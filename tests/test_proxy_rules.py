"""The service proxy's pure parts: what it reads from Services and EndpointSlices, the
rules it renders, the batches it plans (full and partial), its health check server
(a real socket), and its place in `minik8s up` (the Spec per node). No kernel needed;
tests/test_proxy.py runs the rules on a real node."""
from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from cluster import bringup
from cluster.state import ClusterConfig
from proxy import rules
from proxy.healthcheck import ServiceHealth, ServiceHealthServer
from proxy.model import Endpoint, ServicePort, endpoints_for, service_ports
from proxy.nft import Table
from tests.procs import free_port, wait_for

CFG = rules.Config(hostname="node-a", cluster_cidr="10.244.0.0/16")
T = Table("ip", rules.TABLE)


def sp(**kw) -> ServicePort:
    base = dict(namespace="ns", name="web", port_name="http", protocol="tcp", cluster_ip="10.96.0.5", port=80)
    return ServicePort(**{**base, **kw})


def ep(last: int, **kw) -> Endpoint:
    return Endpoint(ip=f"10.244.1.{last}", port=8080, **kw)


def targets(rule) -> list[str]:
    """The endpoint chains a `numgen ... vmap` rule spreads over."""
    (vm,) = [e["vmap"] for e in rule if "vmap" in e]
    assert vm["key"]["numgen"]["mod"] == len(vm["data"]["set"])
    return [v["goto"]["target"] for _, v in vm["data"]["set"]]


def chain(r: rules.Rendered, prefix: str) -> tuple[str, list]:
    (name,) = [n for n in r.chains if n.startswith(prefix)]
    return name, r.chains[name]


def dnat_of(r: rules.Rendered, chain_name: str) -> str:
    (d,) = [e["dnat"] for rule in r.chains[chain_name] for e in rule if "dnat" in e]
    return f"{d['addr']}:{d['port']}"


# -- reading the API --------------------------------------------------------------------

def test_service_ports_skip_headless_and_external_name_and_proxy_mode_balancers():
    def svc(**spec):
        return {"metadata": {"name": "s", "namespace": "ns"},
                "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "nodePort": 30001}], **spec}}
    assert service_ports(svc(clusterIP="None")) == []
    assert service_ports(svc(type="ExternalName", externalName="x.example")) == []
    (p,) = service_ports(svc())
    assert (p.protocol, p.node_port, p.key) == ("tcp", 0, "ns/s")    # ClusterIP: no NodePort
    lb = svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=31000)
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "10.250.0.2"}, {"ip": "10.250.0.3", "ipMode": "Proxy"},
                                                 {"hostname": "lb.example"}]}}
    (p,) = service_ports(lb)
    assert p.lb_ips == ("10.250.0.2",) and p.node_port == 30001
    assert p.external_local and p.health_check_node_port == 31000
    (p,) = service_ports(svc(sessionAffinity="ClientIP"))
    assert p.affinity_timeout == 10800                                # Kubernetes' default


def test_endpoints_merge_slices_by_port_name_and_protocol_with_condition_defaults():
    port = sp(port_name="http")

    def slc(name, eps, ports=None, **kw):
        return {"metadata": {"name": name, "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "ports": ports or [{"name": "http", "port": 8080}], "endpoints": eps, **kw}
    slices = [
        slc("a", [{"addresses": ["10.244.1.1"], "nodeName": "node-a"},                      # no conditions: ready
                  {"addresses": ["10.244.1.2"], "conditions": {"ready": False, "terminating": True}}]),
        slc("b", [{"addresses": ["10.244.1.1"]}, {"addresses": ["10.244.1.3"]}]),             # .1 again: once
        slc("c", [{"addresses": ["10.244.1.4"]}], ports=[{"name": "http", "port": 8080, "protocol": "UDP"}]),
        slc("d", [{"addresses": ["fd00::1"]}], addressType="IPv6"),
    ]
    got = {e.ip: e for e in endpoints_for(port, slices, "node-a")}
    assert sorted(got) == ["10.244.1.1", "10.244.1.2", "10.244.1.3"]
    assert got["10.244.1.1"].ready and got["10.244.1.1"].local and got["10.244.1.1"].port == 8080
    e2 = got["10.244.1.2"]
    assert (e2.ready, e2.serving, e2.terminating) == (False, False, True)   # serving follows ready


# -- rendering --------------------------------------------------------------------------

def test_ready_endpoints_share_traffic_equally_and_terminating_ones_only_as_a_fallback():
    r = rules.render(sp(), [ep(1), ep(2), ep(3), ep(4, ready=False, serving=True, terminating=True)], CFG)
    name, chain_rules = chain(r, "service-")
    assert r.elements[(rules.SERVICE_IPS, ("10.96.0.5", "tcp", 80))] == {"goto": {"target": name}}
    assert sorted(dnat_of(r, c) for c in targets(chain_rules[-1])) == [
        "10.244.1.1:8080", "10.244.1.2:8080", "10.244.1.3:8080"]
    r = rules.render(sp(), [ep(1, ready=False, serving=False, terminating=True),
                            ep(4, ready=False, serving=True, terminating=True)], CFG)
    _, chain_rules = chain(r, "service-")
    assert [dnat_of(r, c) for c in targets(chain_rules[-1])] == ["10.244.1.4:8080"]


def test_a_service_without_endpoints_is_rejected_not_routed():
    r = rules.render(sp(node_port=30080), [ep(1, ready=False, serving=False)], CFG)
    assert r.chains == {}
    assert r.elements == {(rules.NO_ENDPOINT_SERVICES, ("10.96.0.5", "tcp", 80)): rules.GOTO_REJECT,
                          (rules.NO_ENDPOINT_NODEPORTS, ("tcp", 30080)): rules.GOTO_REJECT}


def test_masquerade_for_off_cluster_clients_external_traffic_and_hairpin():
    r = rules.render(sp(node_port=30080), [ep(1)], CFG)
    _, svc_rules = chain(r, "service-")
    first = svc_rules[0]
    assert {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                      "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}} in first
    assert first[-1] == {"jump": {"target": rules.MARK_MASQ}}
    _, ext = chain(r, "external-")
    assert ext[0] == [{"jump": {"target": rules.MARK_MASQ}}]           # externalTrafficPolicy Cluster
    _, ep_rules = chain(r, "endpoint-")
    assert ep_rules[0][0]["match"]["right"] == "10.244.1.1"            # the endpoint reaching itself
    # without --cluster-cidr nothing tells pods from others: ClusterIP traffic is left alone
    r = rules.render(sp(), [ep(1)], rules.Config(hostname="node-a"))
    _, svc_rules = chain(r, "service-")
    assert len(svc_rules) == 1


def test_internal_traffic_policy_local_uses_only_this_nodes_endpoints():
    eps = [ep(1, local=True), ep(2), ep(3, local=True)]
    r = rules.render(sp(internal_local=True), eps, CFG)
    name, local = chain(r, "local-")
    assert r.elements[(rules.SERVICE_IPS, ("10.96.0.5", "tcp", 80))] == {"goto": {"target": name}}
    assert sorted(dnat_of(r, c) for c in targets(local[-1])) == ["10.244.1.1:8080", "10.244.1.3:8080"]
    assert not any(n.startswith("service-") for n in r.chains)
    # endpoints elsewhere only: dropped here (there are endpoints, just none for this node)
    r = rules.render(sp(internal_local=True), [ep(2)], CFG)
    assert r.elements == {(rules.NO_ENDPOINT_SERVICES, ("10.96.0.5", "tcp", 80)): rules.DROP}


def test_external_traffic_policy_local_keeps_the_client_address_for_outside_traffic():
    eps = [ep(1, local=True), ep(2)]
    r = rules.render(sp(node_port=30080, external_local=True, lb_ips=("10.250.0.2",)), eps, CFG)
    cluster_name, _ = chain(r, "service-")
    local_name, local = chain(r, "local-")
    ext_name, ext = chain(r, "external-")
    assert r.elements[(rules.SERVICE_NODEPORTS, ("tcp", 30080))] == {"goto": {"target": ext_name}}
    assert r.elements[(rules.SERVICE_IPS, ("10.250.0.2", "tcp", 80))] == {"goto": {"target": ext_name}}
    assert ext[0][-1] == {"goto": {"target": cluster_name}}            # pods: short-circuited
    assert ext[1][-1] == {"jump": {"target": rules.MARK_MASQ}}         # the node itself: masqueraded
    assert ext[-1] == [{"goto": {"target": local_name}}]               # everyone else: local, not masqueraded
    assert [dnat_of(r, c) for c in targets(local[-1])] == ["10.244.1.1:8080"]
    # no local endpoint: outside traffic is dropped, the ClusterIP still works
    r = rules.render(sp(node_port=30080, external_local=True), [ep(2)], CFG)
    assert r.elements[(rules.NO_ENDPOINT_NODEPORTS, ("tcp", 30080))] == rules.DROP
    assert (rules.SERVICE_IPS, ("10.96.0.5", "tcp", 80)) in r.elements


def test_client_ip_affinity_has_a_set_per_endpoint_with_the_timeout():
    r = rules.render(sp(affinity_timeout=60), [ep(1), ep(2)], CFG)
    assert set(r.affinity_sets.values()) == {60} and len(r.affinity_sets) == 2
    _, svc_rules = chain(r, "service-")
    assert [rule[0]["match"]["right"] for rule in svc_rules[1:3]] == [f"@{n}" for n in r.affinity_sets]
    # a new timeout is a new set (a set's timeout cannot change in place)
    other = rules.render(sp(affinity_timeout=30), [ep(1), ep(2)], CFG)
    assert not set(other.affinity_sets) & set(r.affinity_sets)


# -- planning batches -----------------------------------------------------------------------

def _names(cmds: list[dict], verb: str, kind: str) -> set[str]:
    return {c[verb][kind]["name"] for c in cmds if verb in c and kind in c[verb]}


def test_a_partial_sync_touches_only_the_changed_service():
    a, b = sp(name="a", cluster_ip="10.96.0.1"), sp(name="b", cluster_ip="10.96.0.2")
    desired = {a.key: rules.render(a, [ep(1), ep(2)], CFG), b.key: rules.render(b, [ep(3)], CFG)}
    full = rules.full_plan(T, CFG, rules.Applied(), desired, cluster_ips={"10.96.0.1", "10.96.0.2"},
                           nodeport_ips=(), existing_chains=set(), existing_sets=set(), now=100.0)
    new_a = rules.render(a, [ep(2), ep(4)], CFG)
    plan = rules.partial_plan(T, full.after, {a.key: new_a}, cluster_ips={"10.96.0.1", "10.96.0.2"},
                              nodeport_ips=(), now=200.0)
    touched = {c["add"]["rule"]["chain"] for c in plan.commands if "add" in c and "rule" in c["add"]}
    touched |= _names(plan.commands, "flush", "chain")
    assert touched and all("/a/" in n for n in touched)
    gone = [n for n in desired[a.key].chains if "10.244.1.1" in n]
    assert set(gone) <= _names(plan.commands, "flush", "chain") and set(gone) == set(plan.after.stale_chains)
    # the unchanged endpoint's chain is not rewritten; the new one is made
    assert not any("10.244.1.2" in n for n in touched) and any("10.244.1.4" in n for n in touched)
    assert plan.after.services[b.key] is desired[b.key]
    # nothing changed: nothing to do
    again = rules.partial_plan(T, plan.after, {a.key: rules.render(a, [ep(2), ep(4)], CFG)},
                               cluster_ips={"10.96.0.1", "10.96.0.2"}, nodeport_ips=(), now=201.0)
    assert again.commands == []
    deletes, names = rules.stale_chain_deletes(T, plan.after, 200.5)
    assert deletes == []                                               # not stale long enough
    deletes, names = rules.stale_chain_deletes(T, plan.after, 201.5)
    assert names == sorted(gone) and _names(deletes, "delete", "chain") == set(gone)


def test_a_full_sync_removes_what_nothing_wants_and_keeps_live_affinity_sets():
    a = sp(name="a", affinity_timeout=60)
    r = rules.render(a, [ep(1)], CFG)
    (kept,) = r.affinity_sets
    plan = rules.full_plan(T, CFG, rules.Applied(), {a.key: r}, cluster_ips={a.cluster_ip}, nodeport_ips=(),
                           existing_chains={"service-OLD-ns/old/tcp/", "services"},
                           existing_sets={kept, "affinity-OLD-ns/old/tcp/__10.0.0.1/80"}, now=5.0)
    assert "service-OLD-ns/old/tcp/" in _names(plan.commands, "flush", "chain")
    assert "services" not in plan.after.stale_chains                   # a fixed chain is never stale
    assert _names(plan.commands, "delete", "set") == {"affinity-OLD-ns/old/tcp/__10.0.0.1/80"}
    assert kept not in _names(plan.commands, "add", "set")             # live entries survive a resync
    assert all(c.get("add", {}).get("table", {}).get("name", rules.TABLE) == rules.TABLE for c in plan.commands)


# -- the health check server and bring-up ---------------------------------------------------

async def test_health_check_node_port_answers_by_local_endpoints():
    port = free_port()
    server = ServiceHealthServer(addresses=("127.0.0.1",))
    try:
        await server.sync({port: ServiceHealth("ns", "web", 2)})
        async with httpx.AsyncClient() as c:
            r = await c.get(f"http://127.0.0.1:{port}/")
            assert r.status_code == 200 and r.json()["localEndpoints"] == 2
            assert r.headers["x-load-balancing-endpoint-weight"] == "2"
            await server.sync({port: ServiceHealth("ns", "web", 0)})
            r = await c.get(f"http://127.0.0.1:{port}/")
            assert r.status_code == 503 and r.json()["service"] == {"namespace": "ns", "name": "web"}
            await server.sync({})
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/")
    finally:
        await server.close()
        await asyncio.sleep(0)


def test_up_runs_a_proxy_in_every_node_namespace(tmp_path):
    cfg = ClusterConfig(state_dir=str(tmp_path), nodes=2, runtime="linux")
    os.makedirs(cfg.state_dir, exist_ok=True)
    specs = {s.name: s for s in bringup.component_specs(cfg, etcd_port=1, etcd_peer_port=2)}
    for node in ("node-1", "node-2"):
        spec = specs[f"kube-proxy-{node}"]
        argv = spec.argv
        assert argv[argv.index("proxy") - 1:argv.index("proxy") + 1] == ["cluster.cli", "proxy"]
        assert argv[argv.index("--hostname-override") + 1] == node
        assert argv[argv.index("--cluster-cidr") + 1] == cfg.cluster_cidr
        assert argv[argv.index("--kubeconfig") + 1] == cfg.component_kubeconfig("kube-proxy")
        assert spec.netns is not None and spec.netns.endswith(cfg.netns(node))


def test_the_kube_proxy_identity_may_watch_what_the_proxy_reads_and_nothing_more(tmp_path):
    """`up` gives every node's proxy the PKI's kube-proxy certificate (system:kube-proxy,
    bound to system:node-proxier by the bootstrap policy): enough to list and watch
    Services and EndpointSlices, as the proxier's informers do, and not to write."""
    from tests.secure import Credentials, SecureCluster
    cluster = SecureCluster(str(tmp_path), "--authorization-mode", "Node,RBAC").start()
    try:
        me = Credentials(os.path.join(cluster.pki_dir, "kube-proxy.crt"),
                         os.path.join(cluster.pki_dir, "kube-proxy.key"))
        with cluster.client(me) as c:
            # the server's RBAC cache fills from the bootstrap policy just after it starts
            wait_for(lambda: c.get("/api/v1/services").status_code == 200, what="RBAC loaded", timeout=20)
            for path in ("/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices"):
                assert c.get(path).status_code == 200, path
                with c.stream("GET", path, params={"watch": "1", "timeoutSeconds": "1"}) as r:
                    assert r.status_code == 200, path
            r = c.post("/api/v1/namespaces/default/services", json={
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                "spec": {"ports": [{"port": 80}]}})
            assert r.status_code == 403 and "system:kube-proxy" in r.json()["message"]
    finally:
        cluster.stop()


def test_nodeport_addresses_limit_node_ports_to_the_listed_addresses():
    every = rules.base_commands(T, CFG, ())
    listed = rules.base_commands(T, rules.Config(hostname="node-a", nodeport_all=False), ("10.250.0.2",))

    def nodeport_rule(cmds):
        (rule,) = [c["add"]["rule"]["expr"] for c in cmds if "rule" in c.get("add", {})
                   and c["add"]["rule"]["chain"] == rules.SERVICES and len(c["add"]["rule"]["expr"]) > 1]
        return rule
    assert nodeport_rule(every)[0]["match"]["left"] == {"fib": {"result": "type", "flags": ["daddr"]}}
    assert nodeport_rule(listed)[0]["match"]["right"] == f"@{rules.NODEPORT_IPS}"
    assert {"add": {"element": {"family": "ip", "table": rules.TABLE, "name": rules.NODEPORT_IPS,
                                "elem": ["10.250.0.2"]}}} in listed
