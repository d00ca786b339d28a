"""discovery.k8s.io/v1 EndpointSlice through a real API server on real etcd: served and
discovered, defaulted and validated as Kubernetes' discovery validation does, printed
with kubectl's columns, and accepted as protobuf."""
from __future__ import annotations

import pytest

from tests.procs import APIServer, Etcd, wait_for
from tests.util import pb, pb_body

# ruff: noqa: E501  (the table of invalid slices reads one case and its Kubernetes message a line)

GV = "/apis/discovery.k8s.io/v1"
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
PROTOBUF = {"Content-Type": "application/vnd.kubernetes.protobuf",
            "Accept": "application/vnd.kubernetes.protobuf,application/json"}


def url(ns: str, name: str = "") -> str:
    return f"{GV}/namespaces/{ns}/endpointslices" + (f"/{name}" if name else "")


def eps(name: str, *addresses: str, address_type: str = "IPv4", ports=None, **more) -> dict:
    obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name}, "addressType": address_type,
           "endpoints": [{"addresses": [a]} for a in addresses],
           "ports": [{"port": 80}] if ports is None else ports}
    obj.update(more)
    return obj


def causes(r) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


def test_discovery_lists_endpointslices_namespaced_without_short_names(http):
    assert "discovery.k8s.io" in {g["name"] for g in http.get("/apis").json()["groups"]}
    found = [r for r in http.get(GV).json()["resources"] if r["name"] == "endpointslices"]
    assert len(found) == 1
    res = found[0]
    assert (res["kind"], res["namespaced"], res["singularName"]) == ("EndpointSlice", True, "endpointslice")
    assert "shortNames" not in res and "categories" not in res
    assert set(res["verbs"]) >= {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}


def test_create_defaults_ports_and_keeps_conditions(http, ns):
    body = eps("web-abc", "10.1.0.5", "10.1.0.6",
               ports=[{"port": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}])
    body["endpoints"][0].update(conditions={"ready": True, "serving": True, "terminating": False},
                                nodeName="node-1", zone="z1",
                                targetRef={"kind": "Pod", "namespace": ns, "name": "web-1"})
    body["metadata"]["labels"] = {"kubernetes.io/service-name": "web"}
    r = http.post(url(ns), json=body)
    assert r.status_code == 201, r.text
    got = http.get(url(ns, "web-abc")).json()
    assert got["ports"] == [{"name": "", "port": 8080, "protocol": "TCP"},
                            {"name": "dns", "port": 53, "protocol": "UDP"}]
    assert got["endpoints"][0]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert got["endpoints"][0]["nodeName"] == "node-1" and got["endpoints"][0]["zone"] == "z1"
    listed = http.get(url(ns), params={"labelSelector": "kubernetes.io/service-name=web"}).json()
    assert listed["kind"] == "EndpointSliceList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web-abc"]


def test_a_slice_without_endpoints_or_ports_is_accepted(http, ns):
    body = eps("empty")
    del body["endpoints"], body["ports"]
    r = http.post(url(ns), json=body)
    assert r.status_code == 201, r.text
    assert r.json()["addressType"] == "IPv4"


@pytest.mark.parametrize("name, body, want", [
    ("no address type", eps("x", "10.0.0.1", address_type=""), {"addressType": "Required value"}),
    ("unknown address type", eps("x", "10.0.0.1", address_type="IP"),
     {"addressType": 'Unsupported value: "IP": supported values: "FQDN", "IPv4", "IPv6"'}),
    ("an IPv6 address in an IPv4 slice", eps("x", "fd00::1"),
     {"endpoints[0].addresses[0]": 'Invalid value: "fd00::1": must be a valid IPv4 address'}),
    ("loopback", eps("x", "127.0.0.1"),
     {"endpoints[0].addresses[0]": 'Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)'}),
    ("link-local", eps("x", "fe80::1", address_type="IPv6"),
     {"endpoints[0].addresses[0]": 'Invalid value: "fe80::1": may not be in the link-local range (169.254.0.0/16, fe80::/10)'}),
    ("FQDN of one label", eps("x", "web", address_type="FQDN"),
     {"endpoints[0].addresses[0]": 'Invalid value: "web": should be a domain with at least two segments separated by dots'}),
    ("no addresses", {**eps("x"), "endpoints": [{"addresses": []}]},
     {"endpoints[0].addresses": "Required value: must contain at least 1 address"}),
    ("hostname not a label", {**eps("x"), "endpoints": [{"addresses": ["10.0.0.1"], "hostname": "a.b"}]},
     {"endpoints[0].hostname": 'Invalid value: "a.b": must not contain dots'}),
    ("condition not a boolean", {**eps("x"), "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]},
     {"endpoints[0].conditions.ready": 'Invalid value: "yes": must be of type boolean'}),
    ("duplicate port names", eps("x", "10.0.0.1", ports=[{"name": "a", "port": 1}, {"name": "a", "port": 2}]),
     {"ports[1].name": 'Duplicate value: "a"'}),
    ("unknown protocol", eps("x", "10.0.0.1", ports=[{"port": 1, "protocol": "ICMP"}]),
     {"ports[0].protocol": 'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'}),
    ("1001 endpoints", eps("x", *(f"10.0.{i // 250}.{i % 250 + 1}" for i in range(1001))),
     {"endpoints": "Too many: 1001: must have at most 1000 items"}),
    ("20001 ports", eps("x", "10.0.0.1", ports=[{"name": f"p{i}", "port": i % 65535 + 1} for i in range(20001)]),
     {"ports": "Too many: 20001: must have at most 20000 items"}),
    ("node name", {**eps("x"), "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "Node_1"}]},
     {"endpoints[0].nodeName": "Invalid value: \"Node_1\": a lowercase RFC 1123 subdomain must consist of lower case "
      "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
      "'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"}),
    ("zone hints", {**eps("x"), "endpoints": [{"addresses": ["10.0.0.1"], "hints": {"forZones": [{"name": "a"}, {"name": "a"}]}}]},
     {"endpoints[0].hints.forZones[1].name": 'Duplicate value: "a"'}),
])
def test_invalid_slices_are_422_with_each_cause_and_store_nothing(http, ns, name, body, want):
    assert causes(http.post(url(ns), json=body)) == want, name
    assert http.get(url(ns, "x")).status_code == 404


def test_every_problem_is_listed_at_once(http, ns):
    body = eps("x", "0.0.0.0", "not-an-ip", ports=[{"port": 1, "protocol": "ICMP"}])
    assert set(causes(http.post(url(ns), json=body))) == {
        "endpoints[0].addresses[0]", "endpoints[1].addresses[0]", "ports[0].protocol"}


def test_address_type_is_immutable_but_endpoints_change(http, ns):
    created = http.post(url(ns), json=eps("web", "10.0.0.1")).json()
    assert created["metadata"]["generation"] == 1
    created["metadata"]["labels"] = {"a": "b"}
    relabelled = http.put(url(ns, "web"), json=created).json()
    assert relabelled["metadata"]["generation"] == 1  # metadata only
    relabelled["endpoints"].append({"addresses": ["10.0.0.2"]})
    r = http.put(url(ns, "web"), json=relabelled)
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["metadata"]["generation"] == 2
    changed["addressType"] = "IPv6"
    changed["endpoints"] = [{"addresses": ["fd00::1"]}]
    assert causes(http.put(url(ns, "web"), json=changed)) == {
        "addressType": 'Invalid value: "IPv6": field is immutable'}
    got = http.get(url(ns, "web")).json()
    assert got["addressType"] == "IPv4" and len(got["endpoints"]) == 2


def test_table_has_kubectls_columns(http, ns):
    many = eps("many", *(f"10.0.0.{i}" for i in range(1, 6)),
               ports=[{"name": n, "port": p} for n, p in (("a", 80), ("b", 81), ("c", 82), ("d", 83))])
    allports = eps("allports", "10.0.0.9", ports=[{"name": "x"}])
    none = eps("none", ports=[])
    for body in (many, allports, none):
        assert http.post(url(ns), json=body).status_code == 201
    t = http.get(url(ns), headers=TABLE).json()
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    rows = {r["cells"][0]: r["cells"][1:4] for r in t["rows"]}
    assert rows == {"many": ["IPv4", "80,81,82 + 1 more...", "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more..."],
                    "allports": ["IPv4", "x", "10.0.0.9"],
                    "none": ["IPv4", "<unset>", "<unset>"]}


def test_protobuf_create_reads_kubernetes_field_numbers(http, ns):
    meta = pb(1, pb(1, "pb") + pb(8, b""))
    endpoint = pb(1, "10.2.0.7") + pb(2, pb(1, True) + pb(2, True) + pb(3, False)) + pb(6, "node-2")
    port = pb(1, "http") + pb(2, "TCP") + pb(3, 8080)
    body = pb_body("discovery.k8s.io/v1", "EndpointSlice", meta, pb(4, "IPv4"), pb(2, endpoint), pb(3, port))
    r = http.post(url(ns), content=body, headers=PROTOBUF)
    assert r.status_code == 201, r.text
    got = http.get(url(ns, "pb")).json()
    assert got["addressType"] == "IPv4"
    assert got["endpoints"] == [{"addresses": ["10.2.0.7"], "nodeName": "node-2",
                                 "conditions": {"ready": True, "serving": True, "terminating": False}}]
    assert got["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]


def test_openapi_documents_the_kind(http):
    doc = http.get("/openapi/v3/apis/discovery.k8s.io/v1").json()
    assert "io.k8s.api.discovery.v1.EndpointSlice" in doc["components"]["schemas"]
    assert "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}" in doc["paths"]


# -- the `default/kubernetes` Service's slice (apiserver/kubernetesservice.py) -------------

KUBERNETES_SLICE = f"{GV}/namespaces/default/endpointslices/kubernetes"


@pytest.fixture(scope="module")
def advertised():
    """A server of its own that advertises a routable address (it need not own it), its
    kubernetes Service reconciled every second rather than kube-apiserver's 10 s."""
    e = Etcd().start()
    s = APIServer(e.url, "--advertise-address", "192.0.2.10", "--endpoint-reconciler-interval", "1s").start()
    yield s
    s.stop()
    e.stop()


def test_the_kubernetes_service_has_its_slice_next_to_its_endpoints(advertised):
    with advertised.client() as c:
        s = wait_for(lambda: (r := c.get(KUBERNETES_SLICE)).status_code == 200 and r.json(),
                     what="the kubernetes EndpointSlice")
        assert s["metadata"]["labels"] == {"kubernetes.io/service-name": "kubernetes"}  # not the controller's
        assert "ownerReferences" not in s["metadata"]
        assert s["addressType"] == "IPv4"
        assert s["endpoints"] == [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}}]
        assert s["ports"] == [{"name": "https", "port": advertised.port, "protocol": "TCP"}]
        ep = c.get("/api/v1/namespaces/default/endpoints/kubernetes").json()
        assert ep["subsets"][0]["addresses"] == [{"ip": "192.0.2.10"}]
        # Taken away or changed, it is put back on the next round.
        s["endpoints"] = [{"addresses": ["192.0.2.99"]}]
        assert c.put(KUBERNETES_SLICE, json=s).status_code == 200
        wait_for(lambda: c.get(KUBERNETES_SLICE).json()["endpoints"][0]["addresses"] == ["192.0.2.10"],
                 timeout=30, interval=0.2, what="the slice repaired")
        assert c.delete(KUBERNETES_SLICE).status_code == 200
        wait_for(lambda: c.get(KUBERNETES_SLICE).status_code == 200, timeout=30, interval=0.2,
                 what="the slice back")


def test_a_loopback_only_server_writes_no_slice_it_could_not_validate(http):
    # Bound to 127.0.0.1 alone: EndpointSlice validation refuses loopback endpoints.
    assert http.get("/api/v1/namespaces/default/endpoints/kubernetes").status_code == 200
    assert http.get(KUBERNETES_SLICE).status_code == 404
