"""A real pod's resolv.conf and service variables: a `minik8s kubelet` started with
--cluster-dns runs a pod, and the pod's own /etc/resolv.conf and environment are read
from its log. The harness (API server, KubeletNode, helpers) is test_kubelet_e2e's."""
from __future__ import annotations

import os

import pytest

from tests.procs import wait_for
from tests.test_kubelet_e2e import (KubeletNode, api, container, make_pod, node, pod_log,  # noqa: F401
                                    terminated, wait_pod)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real pods: needs root")


@pytest.fixture(scope="module")
def dns_node(api, tmp_path_factory):  # noqa: F811 - the imported fixture
    n = KubeletNode(api, tmp_path_factory.mktemp("kubelet-dns"), "--cluster-dns", "10.96.0.10",
                    "--cluster-domain", "cluster.test")
    try:
        yield n.start()
    finally:
        n.cleanup()


@pytest.fixture
def client(api):  # noqa: F811
    with api.client() as c:
        yield c


@pytest.fixture
def namespace(client):
    name = f"dns-e2e-{os.urandom(3).hex()}"
    assert client.post("/api/v1/namespaces", json={"metadata": {"name": name}}).status_code == 201
    yield name
    client.delete(f"/api/v1/namespaces/{name}")


def test_pod_gets_cluster_dns_resolv_conf_and_service_variables(client, namespace, dns_node):
    r = client.post(f"/api/v1/namespaces/{namespace}/services", json={
        "metadata": {"name": "my-web"}, "spec": {"selector": {"app": "x"},
                                                 "ports": [{"name": "http", "port": 8080}]}})
    assert r.status_code == 201, r.text
    ip = r.json()["spec"]["clusterIP"]
    dump = ["sh", "-c", "cat /etc/resolv.conf; env | sort"]
    pod = make_pod("show", dns_node, container("c", dump, env=[{"name": "MY_WEB_SERVICE_PORT", "value": "1"}]),
                   restartPolicy="Never", dnsConfig={"options": [{"name": "edns0"}]})
    assert client.post(f"/api/v1/namespaces/{namespace}/pods", json=pod).status_code == 201
    wait_pod(client, namespace, "show", terminated("c"), "finished", timeout=60)
    out = pod_log(client, namespace, "show")
    assert (f"search {namespace}.svc.cluster.test svc.cluster.test cluster.test" in out
            and "nameserver 10.96.0.10\n" in out and "options ndots:5 edns0\n" in out), out
    assert "\nnameserver" not in out.split("nameserver 10.96.0.10\n", 1)[1], out  # the only one
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith(" "))
    assert env["MY_WEB_SERVICE_HOST"] == ip and env["MY_WEB_SERVICE_PORT_HTTP"] == "8080"
    assert env["MY_WEB_PORT_8080_TCP"] == f"tcp://{ip}:8080"
    assert env["MY_WEB_SERVICE_PORT"] == "1"  # the container's own wins
    assert "KUBERNETES_SERVICE_HOST" in env

    # enableServiceLinks: false keeps the master Service's only; dnsPolicy Default: the node's.
    pod = make_pod("nolinks", dns_node, container("c", dump), restartPolicy="Never",
                   enableServiceLinks=False, dnsPolicy="Default")
    assert client.post(f"/api/v1/namespaces/{namespace}/pods", json=pod).status_code == 201
    wait_pod(client, namespace, "nolinks", terminated("c"), "finished", timeout=60)
    out = pod_log(client, namespace, "nolinks")
    assert "MY_WEB_" not in out and "KUBERNETES_SERVICE_HOST" in out, out
    with open("/etc/resolv.conf") as f:
        host_servers = [line.split()[1] for line in f if line.startswith("nameserver")]
    assert [line.split()[1] for line in out.splitlines() if line.startswith("nameserver")] == host_servers[:3]


def test_without_cluster_dns_cluster_first_falls_back_with_warnings(client, namespace, node):
    pod = make_pod("fallback", node, container("c", ["cat", "/etc/resolv.conf"]), restartPolicy="Never")
    assert client.post(f"/api/v1/namespaces/{namespace}/pods", json=pod).status_code == 201
    wait_pod(client, namespace, "fallback", terminated("c"), "finished", timeout=60)
    with open("/etc/resolv.conf") as f:
        host_servers = [line.split()[1] for line in f if line.startswith("nameserver")]
    out = pod_log(client, namespace, "fallback")
    assert [line.split()[1] for line in out.splitlines() if line.startswith("nameserver")] == host_servers[:3]

    def warned(ns, kind, name):
        evs = client.get(f"/api/v1/namespaces/{ns}/events").json()["items"]
        return [e for e in evs if e["reason"] == "MissingClusterDNS" and e["type"] == "Warning"
                and e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name]
    wait_for(lambda: warned(namespace, "Pod", "fallback"), what="the pod's MissingClusterDNS event")
    [ev] = warned(namespace, "Pod", "fallback")
    assert ev["message"].startswith('pod: "fallback_') and 'Falling back to "Default" policy.' in ev["message"]
    wait_for(lambda: warned("default", "Node", node.name), what="the node's MissingClusterDNS event")
