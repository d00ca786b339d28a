"""A pod's resolv.conf (kubelet/dns.py, runtime.resolv_conf) per dnsPolicy and dnsConfig,
as the kubelet's dns.go forms it, and the API server's validation of both."""
from __future__ import annotations

import pytest

from kubelet.dns import Configurer, parse_resolv_conf
from kubelet.kubelet import sandbox_config
from kubelet.runtime import resolv_conf

HOST = """# from the node
nameserver 192.0.2.53
nameserver 192.0.2.54
search corp.example. lab.example
options timeout:2 attempts:3
"""
CLUSTER = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]


def pod(policy: str | None = "ClusterFirst", *, ns: str = "default", host_network: bool = False,
        dns_config: dict | None = None) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "busybox"}]}
    if policy is not None:
        spec["dnsPolicy"] = policy
    if host_network:
        spec["hostNetwork"] = True
    if dns_config is not None:
        spec["dnsConfig"] = dns_config
    return {"metadata": {"name": "p", "namespace": ns, "uid": "u-1"}, "spec": spec}


@pytest.fixture
def host_resolv(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_text(HOST)
    return str(path)


def configurer(resolv: str, cluster_dns=("10.96.0.10",)) -> Configurer:
    return Configurer(cluster_dns=list(cluster_dns), cluster_domain="cluster.local", resolv_conf=resolv,
                      node_ips=["192.0.2.10"])


def test_parse_resolv_conf_accumulates_servers_and_last_search_wins():
    cfg = parse_resolv_conf("nameserver 1.1.1.1\nsearch a.example\n  # comment\nnameserver 8.8.8.8\n"
                            "search b.example. . c.example\noptions ndots:2 rotate\noptions ndots:3\n")
    assert cfg.servers == ["1.1.1.1", "8.8.8.8"]
    assert cfg.searches == ["b.example", "c.example"]
    assert cfg.options == ["ndots:3", "rotate"]


@pytest.mark.parametrize("name, p, want_servers, want_searches, want_options", [
    ("ClusterFirst: the cluster DNS, cluster then host searches, ndots:5",
     pod(), ["10.96.0.10"], CLUSTER + ["corp.example", "lab.example"], ["ndots:5"]),
    ("ClusterFirst in another namespace searches that namespace first",
     pod(ns="team"), ["10.96.0.10"],
     ["team.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example", "lab.example"], ["ndots:5"]),
    ("ClusterFirst on the host network falls back to Default",
     pod(host_network=True), ["192.0.2.53", "192.0.2.54"], ["corp.example", "lab.example"],
     ["timeout:2", "attempts:3"]),
    ("ClusterFirstWithHostNet on the host network is ClusterFirst",
     pod("ClusterFirstWithHostNet", host_network=True), ["10.96.0.10"], CLUSTER + ["corp.example", "lab.example"],
     ["ndots:5"]),
    ("Default is the node's resolv.conf",
     pod("Default"), ["192.0.2.53", "192.0.2.54"], ["corp.example", "lab.example"], ["timeout:2", "attempts:3"]),
    ("None is only dnsConfig",
     pod("None", dns_config={"nameservers": ["1.1.1.1"], "searches": ["x.example"],
                             "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}),
     ["1.1.1.1"], ["x.example"], ["ndots:2", "edns0"]),
    ("dnsConfig is appended without duplicates, options merged by name (the pod's wins)",
     pod(dns_config={"nameservers": ["10.96.0.10", "1.1.1.1"], "searches": ["cluster.local", "y.example"],
                     "options": [{"name": "ndots", "value": "1"}, {"name": "single-request"}]}),
     ["10.96.0.10", "1.1.1.1"], CLUSTER + ["corp.example", "lab.example", "y.example"],
     ["ndots:1", "single-request"]),
])
def test_pod_dns_per_policy(host_resolv, name, p, want_servers, want_searches, want_options):
    cfg, events = configurer(host_resolv).pod_dns(p)
    assert (cfg.servers, cfg.searches, cfg.options) == (want_servers, want_searches, want_options), name
    assert events == []


def test_cluster_first_without_cluster_dns_falls_back_to_default_with_warnings(host_resolv):
    cfg, events = configurer(host_resolv, cluster_dns=()).pod_dns(pod())
    assert cfg.servers == ["192.0.2.53", "192.0.2.54"]
    assert cfg.searches == ["corp.example", "lab.example"]
    msg = ('kubelet does not have ClusterDNS IP configured and cannot create Pod using "ClusterFirst" '
           'policy. Falling back to "Default" policy.')
    assert [(e.reason, e.message, e.on_node) for e in events] == [
        ("MissingClusterDNS", msg, True),
        ("MissingClusterDNS", f'pod: "p_default(u-1)". {msg}', False)]


def test_no_resolv_conf_means_the_local_resolver(tmp_path):
    cfg, _ = configurer("").pod_dns(pod("Default"))
    assert (cfg.servers, cfg.searches) == (["127.0.0.1"], ["."])


def test_too_many_nameservers_are_cut_with_an_event(host_resolv):
    cfg, events = configurer(host_resolv).pod_dns(
        pod(dns_config={"nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9"]}))
    assert cfg.servers == ["10.96.0.10", "1.1.1.1", "8.8.8.8"]
    assert [(e.reason, e.message) for e in events] == [
        ("DNSConfigForming", "Nameserver limits were exceeded, some nameservers have been omitted, "
                             "the applied nameserver line is: 10.96.0.10 1.1.1.1 8.8.8.8")]


def test_search_line_limits_cut_from_the_end_with_an_event(host_resolv):
    many = [f"d{i}.example" for i in range(40)]
    cfg, events = configurer(host_resolv).pod_dns(pod(dns_config={"searches": many}))
    assert len(cfg.searches) == 32 and cfg.searches[:3] == CLUSTER
    assert events[0].reason == "DNSConfigForming"
    assert events[0].message.endswith("the applied search line is: " + " ".join(cfg.searches))
    long = ["a" * 250 + f"{i:03d}" for i in range(9)]  # 253 chars each: 9 of them exceed 2048
    cfg, events = configurer(host_resolv).pod_dns(pod(dns_config={"searches": long}))
    full = CLUSTER + ["corp.example", "lab.example"] + long
    n = len(cfg.searches)
    assert cfg.searches == full[:n] and n < len(full)
    assert len(" ".join(full[:n])) <= 2048 < len(" ".join(full[:n + 1]))
    assert events and events[0].reason == "DNSConfigForming"


def test_the_runtime_writes_search_nameservers_options(host_resolv):
    cfg, _ = configurer(host_resolv).pod_dns(pod())
    assert resolv_conf(sandbox_config({**pod(), "metadata": {"name": "p", "uid": "u"}}, cfg)) == (
        "search default.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
        "nameserver 10.96.0.10\noptions ndots:5\n")
    assert resolv_conf(sandbox_config(pod())) is None  # no DNS config: the node's file as it is


# -- validation, through the API server --------------------------------------------------

def _create(http, ns, spec_extra):
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dns"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec_extra}}
    return http.post(f"/api/v1/namespaces/{ns}/pods", json=body)


@pytest.mark.parametrize("spec, field, message", [
    ({"dnsPolicy": "Cluster"}, "spec.dnsPolicy",
     'Unsupported value: "Cluster": supported values: "ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"'),
    ({"dnsPolicy": "None"}, "spec.dnsConfig", "Required value: must provide `dnsConfig` when `dnsPolicy` is None"),
    ({"dnsPolicy": "None", "dnsConfig": {"searches": ["a.example"]}}, "spec.dnsConfig.nameservers",
     "Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"),
    ({"dnsConfig": {"nameservers": ["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]}}, "spec.dnsConfig.nameservers",
     'Invalid value: ["1.1.1.1","1.0.0.1","8.8.8.8","8.8.4.4"]: must not have more than 3 nameservers'),
    ({"dnsConfig": {"nameservers": ["dns.example"]}}, "spec.dnsConfig.nameservers[0]",
     'Invalid value: "dns.example": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)'),
    ({"dnsConfig": {"searches": [f"d{i}.example" for i in range(33)]}}, "spec.dnsConfig.searches",
     "must not have more than 32 search paths"),
    ({"dnsConfig": {"searches": ["Bad_Domain"]}}, "spec.dnsConfig.searches[0]",
     'Invalid value: "Bad_Domain": a lowercase RFC 1123 subdomain'),
    ({"dnsConfig": {"options": [{"value": "2"}]}}, "spec.dnsConfig.options[0]", "Required value: must not be empty"),
])
def test_invalid_dns_settings_are_422(http, ns, spec, field, message):
    r = _create(http, ns, spec)
    assert r.status_code == 422, r.text
    causes = r.json()["details"]["causes"]
    assert any(c["field"] == field and message in c["message"] for c in causes), causes
    assert http.get(f"/api/v1/namespaces/{ns}/pods/dns").status_code == 404


def test_valid_dns_settings_are_accepted(http, ns):
    r = _create(http, ns, {"dnsPolicy": "None", "dnsConfig": {
        "nameservers": ["1.1.1.1"], "searches": ["corp.example."], "options": [{"name": "ndots", "value": "2"}]}})
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["enableServiceLinks"] is True
