"""The kubelet's side of security, end to end: its HTTPS endpoint (client certificates
from the cluster CA, the API server's kubelet-client certificate, Webhook authorization
through SubjectAccessReviews), projected and downwardAPI volumes (ServiceAccount tokens
requested through TokenRequest and refreshed by the kubelet's token manager), and the
KUBERNETES_SERVICE_* variables every container gets.

Real parts only: the session's etcd, an API server of the module's own that dials
kubelets with the kubelet-client certificate of a cluster PKI made by cluster.pki, and
one `minik8s kubelet` serving HTTPS with that PKI's serving certificate for its node.
The token manager's refresh is driven through its own check with an injected clock
(TokenRequest's minimum lifetime is 600 s; nothing sleeps). Tests that need a piece of
the API server another branch adds (SubjectAccessReview, serviceaccounts/token) skip,
saying which, when the server does not serve it.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
import uuid
from pathlib import Path

import httpx
import pytest

from client.clock import FakeClock
from client.rest import Client
from cluster import pki
from kubelet import auth as kauth
from kubelet.token import TokenManager
from tests.procs import APIServer, wait_for
from tests.test_kubelet_e2e import (SLEEP, KubeletNode, api_exec, container, create, make_pod,
                                    pod_log, running, wait_pod)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real pods: needs root")


class TLSKubeletNode(KubeletNode):
    """A KubeletNode whose endpoint serves HTTPS with the node's certificate of `pki_dir`
    (made here, for the node's name), checking client certificates against its CA."""

    def __init__(self, api: APIServer, tmp: Path, pki_dir: Path, *extra: str):
        super().__init__(api, tmp, *extra)
        pki.ensure(str(pki_dir), pki.ClusterFacts(nodes=(pki.Node(self.name, "127.0.0.1"),)))
        self.pki = pki_dir
        base = pki_dir / "kubelets" / self.name / "kubelet"
        self.args += ["--tls-cert-file", f"{base}.crt", "--tls-private-key-file", f"{base}.key",
                      "--client-ca-file", str(pki_dir / "ca.crt")]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, cert: str | None = None) -> httpx.Client:
        """A client of the endpoint that verifies it against the cluster CA, presenting
        `cert` (a path in the PKI without .crt/.key) if given."""
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if cert:
            ctx.load_cert_chain(str(self.pki / f"{cert}.crt"), str(self.pki / f"{cert}.key"))
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10)

    def start(self) -> "TLSKubeletNode":
        from tests.procs import Component
        self.proc = Component(*self.args).start()

        def up():
            if not self.proc.alive():
                raise RuntimeError(f"kubelet exited: {self.proc.log()}")
            node = httpx.get(f"{self.api.url}/api/v1/nodes/{self.name}").json()
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in (node.get("status") or {}).get("conditions") or [])
            with self.client() as c:
                return ready and c.get("/healthz").status_code == 200
        try:
            wait_for(up, what=f"kubelet {self.name}")
        except (TimeoutError, RuntimeError):
            raise RuntimeError(f"kubelet {self.name} did not come up: {self.proc.log()}") from None
        return self


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def api(etcd, pki_dir):
    pki.ensure(str(pki_dir), pki.ClusterFacts())
    server = APIServer(etcd.url, "--kubelet-client-certificate", str(pki_dir / "apiserver-kubelet-client.crt"),
                       "--kubelet-client-key", str(pki_dir / "apiserver-kubelet-client.key"),
                       "--kubelet-certificate-authority", str(pki_dir / "ca.crt"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http(api):
    with httpx.Client(base_url=api.url, timeout=30) as c:
        yield c


@pytest.fixture
def ns(http):
    name = "t-" + uuid.uuid4().hex[:10]
    assert http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": name}}).status_code == 201
    return name


@pytest.fixture(scope="module")
def node(api, pki_dir, tmp_path_factory):
    n = TLSKubeletNode(api, tmp_path_factory.mktemp("kubelet"), pki_dir,
                       "--lease-renew-interval", "1", "--node-status-update-frequency", "1")
    try:
        yield n.start()
    finally:
        n.cleanup()


def serves(http, path: str, resource: str) -> bool:
    r = http.get(path)
    return r.status_code == 200 and any(x["name"] == resource for x in r.json()["resources"])


# -- the endpoint -----------------------------------------------------------------------------

def test_endpoint_refuses_a_client_without_a_certificate_and_the_shared_token(node):
    with node.client() as c:
        r = c.get("/metrics")
        assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
        r = c.get("/metrics", headers={"authorization": "Bearer kubelet-test-token"})
        assert r.status_code == 401
        r = c.get("/containerLogs/default/nothing/c")
        assert r.status_code == 401


def test_endpoint_refuses_a_certificate_from_another_ca(node, tmp_path):
    other = tmp_path / "other-pki"
    pki.ensure(str(other), pki.ClusterFacts())
    ctx = ssl.create_default_context(cafile=str(node.pki / "ca.crt"))
    ctx.load_cert_chain(str(other / "admin.crt"), str(other / "admin.key"))
    with httpx.Client(base_url=node.url, verify=ctx, timeout=10) as c:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            c.get("/metrics")


def test_endpoint_accepts_the_api_servers_kubelet_client_certificate(node):
    with node.client("apiserver-kubelet-client") as c:
        r = c.get("/metrics")
        assert r.status_code == 200, r.text
        assert "kubelet_running_pods" in r.text


def test_logs_and_exec_through_the_api_server_over_https(node, api, http, ns):
    create(http, ns, make_pod("talker", node, container("c", ["sh", "-c", "echo hello-tls; exec sleep infinity"])))
    wait_pod(http, ns, "talker", running("c"), "talker running")
    wait_for(lambda: "hello-tls" in pod_log(http, ns, "talker", container="c"), what="the log over HTTPS")
    code, out, _err = api_exec(api, ns, "talker", ["sh", "-c", "echo exec-ok"])
    assert (code, out) == (0, b"exec-ok\n")


def test_request_attributes_follow_the_kubelets_paths():
    u = kauth.User("jane", ("g",))
    cases = [("GET", "/metrics", "get", "metrics"), ("GET", "/metrics/cadvisor", "get", "metrics"),
             ("GET", "/containerLogs/ns/p/c", "get", "proxy"), ("GET", "/exec/ns/p/c", "get", "proxy"),
             ("POST", "/exec/ns/p/c", "create", "proxy"), ("GET", "/logs/", "get", "log"),
             ("GET", "/stats/summary", "get", "stats"), ("GET", "/metricsx", "get", "proxy"),
             ("DELETE", "/pods", "delete", "proxy")]
    for method, path, verb, sub in cases:
        a = kauth.request_attributes(u, method, path, "n1")
        assert (a.verb, a.subresource, a.node) == (verb, sub, "n1"), (method, path)


def test_webhook_authorization_asks_the_api_server_and_caches_the_answer(api, http, pki_dir):
    if not serves(http, "/apis/authorization.k8s.io/v1", "subjectaccessreviews"):
        pytest.skip("the API server does not serve subjectaccessreviews yet (issue 14, h-authn)")
    clock = FakeClock(wall=time.time())

    async def run():
        async with Client(api.url) as client:
            webhook = kauth.Webhook(client, clock=clock)
            endpoint = kauth.EndpointAuth(node_name="n1", tls=True, authorizer=webhook)
            admin = {"subject": ((("organizationName", "system:masters"),), (("commonName", "kubernetes-admin"),))}
            assert await endpoint.check(method="GET", path="/metrics", headers={}, peer_cert=admin) is None
            assert webhook.reviews == 1
            assert await endpoint.check(method="GET", path="/metrics", headers={}, peer_cert=admin) is None
            assert webhook.reviews == 1  # cached
            clock.step(kauth.AUTHORIZED_TTL + 1)
            assert await endpoint.check(method="GET", path="/metrics", headers={}, peer_cert=admin) is None
            assert webhook.reviews == 2
    asyncio.run(run())


# -- downwardAPI, projected volumes and the service variables --------------------------------

def sh(api, ns: str, pod: str, script: str) -> str:
    code, out, err = api_exec(api, ns, pod, ["sh", "-c", script])
    assert code == 0, (out, err)
    return out.decode()


def test_downward_api_volume_files_modes_and_updates(node, api, http, ns):
    pod = make_pod("dw", node, container("c", SLEEP, resources={"limits": {"memory": "64Mi"}},
                                         volumeMounts=[{"name": "info", "mountPath": "/info"}]),
                   volumes=[{"name": "info", "downwardAPI": {"defaultMode": 0o640, "items": [
                       {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                       {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}, "mode": 0o400},
                       {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                       {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                       {"path": "sub/tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
                       {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory",
                                                            "divisor": "1Mi"}}]}}])
    pod["metadata"]["labels"] = {"tier": "web", "app": "shop"}
    pod["metadata"]["annotations"] = {"note": 'say "hi"\nbye'}
    create(http, ns, pod)
    wait_pod(http, ns, "dw", running("c"), "dw running")
    assert sh(api, ns, "dw", "cat /info/name; echo; cat /info/ns; echo; cat /info/sub/tier; echo; cat /info/mem") \
        == f"dw\n{ns}\nweb\n64"
    assert sh(api, ns, "dw", "cat /info/labels") == 'app="shop"\ntier="web"'
    assert sh(api, ns, "dw", "cat /info/annotations") == 'note="say \\"hi\\"\\nbye"'
    assert sh(api, ns, "dw", "stat -L -c %a /info/name /info/ns") == "640\n400\n"
    assert sh(api, ns, "dw", "readlink /info/name") == "..data/name\n"
    r = http.patch(f"/api/v1/namespaces/{ns}/pods/dw", json={"metadata": {"labels": {"tier": "db"}}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    wait_for(lambda: sh(api, ns, "dw", "cat /info/sub/tier") == "db", timeout=30, what="the label's update")


def test_every_container_gets_the_kubernetes_service_variables(node, api, http, ns):
    create(http, ns, make_pod("envs", node, container("c", SLEEP, env=[
        {"name": "URL", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"}])))
    wait_pod(http, ns, "envs", running("c"), "envs running")
    env = dict(line.split("=", 1) for line in sh(api, ns, "envs", "env").splitlines() if "=" in line)
    port = str(api.port)
    # The kubeconfig names 127.0.0.1, which a pod cannot reach: the node's address instead.
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == port
    assert env["KUBERNETES_PORT"] == f"tcp://127.0.0.1:{port}"
    assert env[f"KUBERNETES_PORT_{port}_TCP_ADDR"] == "127.0.0.1"
    assert env[f"KUBERNETES_PORT_{port}_TCP_PROTO"] == "tcp"
    assert env["URL"] == f"https://127.0.0.1:{port}"


def test_projected_volume_of_config_map_secret_and_downward_api(node, api, http, ns):
    http.post(f"/api/v1/namespaces/{ns}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "root-ca"}, "data": {"ca.crt": "PEM-1"}})
    http.post(f"/api/v1/namespaces/{ns}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"pw": base64.b64encode(b"hunter2").decode()}})
    create(http, ns, make_pod("proj", node, container("c", SLEEP, volumeMounts=[
        {"name": "all", "mountPath": "/all"}]), volumes=[{"name": "all", "projected": {
            "defaultMode": 0o440, "sources": [
                {"configMap": {"name": "root-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"secret": {"name": "s", "items": [{"key": "pw", "path": "creds/pw", "mode": 0o400}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]))
    wait_pod(http, ns, "proj", running("c"), "proj running")
    assert sh(api, ns, "proj", "cat /all/ca.crt /all/creds/pw /all/namespace") == f"PEM-1hunter2{ns}"
    assert sh(api, ns, "proj", "stat -L -c %a /all/ca.crt /all/creds/pw /all/namespace") == "440\n400\n440\n"
    # An update reaches the file in place, through the ..data swap.
    r = http.patch(f"/api/v1/namespaces/{ns}/configmaps/root-ca", json={"data": {"ca.crt": "PEM-2"}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    wait_for(lambda: sh(api, ns, "proj", "cat /all/ca.crt") == "PEM-2", timeout=30, what="the update")


def _jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_service_account_token_volume_holds_a_token_bound_to_the_pod(node, api, http, ns):
    if not serves(http, "/api/v1", "serviceaccounts/token"):
        pytest.skip("the API server does not serve serviceaccounts/token yet (issue 14, h-sa)")
    http.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json={
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    http.post(f"/api/v1/namespaces/{ns}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"},
        "data": {"ca.crt": (node.pki / "ca.crt").read_text()}})
    pod = make_pod("sa", node, container("c", SLEEP, volumeMounts=[
        {"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}]),
        serviceAccountName="robot", automountServiceAccountToken=False,
        volumes=[{"name": "token", "projected": {"defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607, "audience": "api"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}}])
    created = create(http, ns, pod)
    wait_pod(http, ns, "sa", running("c"), "sa running")
    d = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert sh(api, ns, "sa", f"stat -L -c %a {d}/token {d}/ca.crt {d}/namespace") == "644\n644\n644\n"
    assert sh(api, ns, "sa", f"cat {d}/namespace") == ns
    assert "BEGIN CERTIFICATE" in sh(api, ns, "sa", f"cat {d}/ca.crt")
    claims = _jwt_claims(sh(api, ns, "sa", f"cat {d}/token"))
    assert claims["sub"] == f"system:serviceaccount:{ns}:robot"
    assert claims["aud"] in ("api", ["api"])
    k8s = claims["kubernetes.io"]
    assert k8s["pod"] == {"name": "sa", "uid": created["metadata"]["uid"]}
    assert claims["exp"] - claims["iat"] == 3607


def test_token_manager_refreshes_at_80_percent_of_the_lifetime(api, http, ns):
    if not serves(http, "/api/v1", "serviceaccounts/token"):
        pytest.skip("the API server does not serve serviceaccounts/token yet (issue 14, h-sa)")
    http.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json={
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    pod = http.post(f"/api/v1/namespaces/{ns}/pods", json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "robot", "automountServiceAccountToken": False,
                 "containers": [{"name": "c", "image": "x"}]}}).json()
    uid = pod["metadata"]["uid"]
    clock = FakeClock(wall=time.time())

    async def run():
        async with Client(api.url) as client:
            tm = TokenManager(client, clock=clock, jitter=lambda: 0.0)
            kw = dict(pod_name="p", pod_uid=uid, audience="", expiration_seconds=1000)
            first = await tm.get(ns, "robot", **kw)
            assert await tm.get(ns, "robot", **kw) == first and tm.requests == 1
            left = tm.refresh_in(ns, "robot", pod_uid=uid, audience="", expiration_seconds=1000)
            assert 790 <= left <= 800
            clock.step(left - 5)  # not yet
            assert await tm.get(ns, "robot", **kw) == first and tm.requests == 1
            clock.step(10)  # past 80 % of the lifetime
            second = await tm.get(ns, "robot", **kw)
            assert tm.requests == 2 and second != first
            assert _jwt_claims(second)["exp"] > _jwt_claims(first)["exp"]
            tm.forget_pod(uid)
            assert tm.refresh_in(ns, "robot", pod_uid=uid, audience="", expiration_seconds=1000) is None
    asyncio.run(run())


def test_downward_api_item_with_an_unsupported_field_is_a_failed_mount(node, http, ns):
    create(http, ns, make_pod("bad", node, container("c", SLEEP, volumeMounts=[
        {"name": "info", "mountPath": "/info"}]), volumes=[{"name": "info", "downwardAPI": {"items": [
            {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}}]))

    def failed_mount():
        evs = http.get(f"/api/v1/namespaces/{ns}/events").json()["items"]
        return [e for e in evs if e.get("reason") == "FailedMount"]
    evs = wait_for(failed_mount, timeout=30, what="a FailedMount event")
    assert "status.podIP" in evs[0]["message"]
    pod = http.get(f"/api/v1/namespaces/{ns}/pods/bad").json()
    waiting = pod["status"]["containerStatuses"][0]["state"].get("waiting") if pod["status"].get(
        "containerStatuses") else {"reason": "ContainerCreating"}
    assert waiting["reason"] == "ContainerCreating"
