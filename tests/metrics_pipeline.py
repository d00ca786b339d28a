"""The metrics pipeline for tests: fake-runtime nodes (their HTTPS endpoint, Webhook
authorization, as `up` runs them; usage set by pods' `fake.minik8s.io/usage`), a real
`minik8s metrics-server` as its own user with metrics-server's manifests' RBAC
(cluster/metricsaddon.py), listening on this host's global address, and, with
`register`, its Service, EndpointSlice and APIService v1beta1.metrics.k8s.io, so the API
server's aggregation layer serves metrics.k8s.io from it (EndpointSlices refuse loopback
addresses, hence the global one). Processes stopped by PID; objects removed."""
from __future__ import annotations

import contextlib
import json
import os
import ssl
import uuid
from typing import Iterator

import httpx
import pytest

from cluster import metricsaddon
from tests.procs import Component, free_port, session_pki, wait_for

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
API = "/apis/metrics.k8s.io/v1beta1"
RESOLUTION = 10.0  # the least metrics-server accepts
PATHS = {"ServiceAccount": "/api/v1/namespaces/kube-system/serviceaccounts",
         "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
         "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
         "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles",
         "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings",
         "Service": "/api/v1/namespaces/kube-system/services",
         "EndpointSlice": "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
         "APIService": "/apis/apiregistration.k8s.io/v1/apiservices"}
REGISTRATION = ("Service", "EndpointSlice", "APIService")


def host_address() -> str:
    address = metricsaddon.default_route_address()
    if address is None:
        pytest.skip("this host has no global IPv4 address for an EndpointSlice to name")
    return address


def _name(kind: str) -> str:
    return metricsaddon.APISERVICE if kind == "APIService" else metricsaddon.NAME


def _ensure(http: httpx.Client, obj: dict) -> None:
    path = PATHS[obj["kind"]]
    if obj["kind"] in REGISTRATION:  # a previous module's: made anew for this server's port
        http.delete(f"{path}/{_name(obj['kind'])}")
        wait_for(lambda: http.get(f"{path}/{_name(obj['kind'])}").status_code == 404, what="the old object")
    r = http.post(path, json=obj)
    assert r.status_code in (201, 409), r.text


def _request_header_trust(http: httpx.Client) -> None:
    """The ConfigMap kube-apiserver publishes for extension servers, made here when this
    API server has not (a server without the aggregation layer)."""
    with open(os.path.join(session_pki(), "ca.crt")) as f:
        ca = f.read()
    r = http.post("/api/v1/namespaces/kube-system/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": {"client-ca-file": ca}})
    assert r.status_code in (201, 409), r.text


@contextlib.contextmanager
def pipeline(apiserver, tmp, *, nodes: int = 2, register: bool = False) -> Iterator[dict]:
    prefix = "ms-" + uuid.uuid4().hex[:6]
    admin_kc = apiserver.write_kubeconfig(tmp / "admin.conf")
    ms_kc = apiserver.write_kubeconfig(tmp / "ms.conf", user="metrics-server")
    address, port = host_address(), free_port()
    with apiserver.client() as http:
        _request_header_trust(http)
        for obj in metricsaddon.objects(address, port):
            if obj["kind"] not in REGISTRATION or register:
                _ensure(http, obj)
        kubelet = Component("kubelet", "--kubeconfig", admin_kc, "--runtime", "fake", "--nodes", str(nodes),
                            "--node-name", prefix, "--healthz-port", "0", "--cert-dir", str(tmp / "kubelet"),
                            "--client-ca-file", os.path.join(session_pki(), "ca.crt"),
                            "--authorization-mode", "Webhook").start()
        server = Component("metrics-server", "--kubeconfig", ms_kc, "--secure-port", str(port),
                           "--bind-address", address, "--cert-dir", str(tmp / "serving"),
                           "--metric-resolution", f"{RESOLUTION:g}s", "--kubelet-insecure-tls",
                           "--kubelet-use-node-status-port", "--kubelet-preferred-address-types",
                           "InternalIP").start()
        names = [f"{prefix}-{i}" for i in range(nodes)]
        try:
            wait_for(lambda: all(http.get(f"/api/v1/nodes/{n}").status_code == 200 for n in names)
                     or not kubelet.alive(), what="the fake nodes")
            assert kubelet.alive(), kubelet.log()
            with direct_client("admin") as c:
                wait_for(lambda: not server.alive() or c.get(f"https://{address}:{port}/livez").status_code == 200,
                         what="the metrics server to serve")
            assert server.alive(), server.log()
            yield {"nodes": names, "url": f"https://{address}:{port}", "server": server, "kubelet": kubelet,
                   "http": http}
        finally:
            if register:
                for kind in reversed(REGISTRATION):
                    http.delete(f"{PATHS[kind]}/{_name(kind)}")
            server.stop()
            kubelet.stop()
            for name in names:
                http.delete(f"{LEASES}/{name}")
                http.delete(f"/api/v1/nodes/{name}")


def direct_client(user: str | None) -> httpx.Client:
    """A client of the metrics server itself (its certificate is self-signed), presenting
    `user`'s certificate of the session PKI."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if user:
        ctx.load_cert_chain(os.path.join(session_pki(), f"{user}.crt"), os.path.join(session_pki(), f"{user}.key"))
    return httpx.Client(verify=ctx, timeout=10)


def make_pod(http, ns: str, name: str, node: str, usage: dict | None, labels: dict | None = None) -> None:
    md: dict = {"name": name, "labels": labels or {}}
    if usage is not None:
        md["annotations"] = {"fake.minik8s.io/usage": json.dumps(usage)}
    containers = [{"name": c, "image": "x"} for c in (usage or {"app": {}})]
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json={
        "apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": {"nodeName": node, "containers": containers}})
    assert r.status_code == 201, r.text
