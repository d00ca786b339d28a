"""The aggregation layer: APIServices, the proxy to an extension API server, discovery
merged with the extension's, and availability as kube-aggregator reports it.

The extension server is a real process (tests/wardle.py: Starlette over TLS behind
client/extensionserver.py), reached at a non-loopback address of this host through a
Service and an EndpointSlice made here (EndpointSlices refuse loopback addresses).
"""
from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid

import httpx
import pytest
from pyroute2 import IPRoute

from machinery import pki
from tests.procs import session_pki, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUP, VERSION = "wardle.example.com", "v1"
NAME = f"{VERSION}.{GROUP}"
APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
KUBECTL = shutil.which("kubectl")


def host_address() -> str:
    """A global IPv4 address of this host (an EndpointSlice may not name a loopback one)."""
    with IPRoute() as ipr:
        for a in ipr.get_addr(family=2):
            if a["scope"] == 0 and not a.get_attr("IFA_ADDRESS").startswith("127."):
                return a.get_attr("IFA_ADDRESS")
    pytest.skip("this host has no global IPv4 address for an EndpointSlice to name")


def apiservice(ns: str, **spec) -> dict:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": NAME},
            "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "service": {"namespace": ns, "name": "api", "port": 443}, **spec}}


def available(http, name: str = NAME) -> dict:
    r = http.get(f"{APISERVICES}/{name}")
    assert r.status_code == 200, r.text
    return next((c for c in (r.json().get("status") or {}).get("conditions") or [] if c["type"] == "Available"), {})


def wait_reason(http, reason: str) -> dict:
    return wait_for(lambda: (c := available(http)).get("reason") == reason and c, timeout=30,
                    what=f"Available reason {reason} (now {available(http)})")


@pytest.fixture(scope="module")
def wardle_tls(tmp_path_factory):
    """(ca PEM, cert file, key file): a CA of the extension's own and its serving certificate."""
    d = tmp_path_factory.mktemp("wardle-tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = pki.new_key()
    ca = pki.new_ca("wardle-ca", ca_key, now=now)
    return ca_key, ca, d, now


@pytest.fixture(scope="module")
def agg_ns(apiserver):
    name = "agg-" + uuid.uuid4().hex[:8]
    with apiserver.client() as c:
        r = c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        assert r.status_code == 201, r.text
    yield name
    with apiserver.client() as c:
        c.delete(f"{APISERVICES}/{NAME}")
        c.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def wardle(apiserver, agg_ns, wardle_tls, tmp_path_factory):
    """The extension server process; yields (address, port, CA PEM)."""
    ca_key, ca, d, now = wardle_tls
    key = pki.new_key()
    cert = pki.sign(pki.CertSpec("wardle", dns_names=(f"api.{agg_ns}.svc",), usages=(pki.SERVER,)),
                    key.public_key(), ca_cert=ca, ca_key=ca_key, now=now)
    (d / "tls.crt").write_bytes(pki.cert_pem(cert))
    (d / "tls.key").write_bytes(pki.key_pem(key))
    kubeconfig = apiserver.write_kubeconfig(d / "kubeconfig")
    address = host_address()
    port_file = d / "port"
    log = open(d / "wardle.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tests.wardle", "--kubeconfig", kubeconfig,
                             "--cert", str(d / "tls.crt"), "--key", str(d / "tls.key"), "--bind", address,
                             "--port-file", str(port_file)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        def port():
            if proc.poll() is not None:
                raise RuntimeError((d / "wardle.log").read_text())
            return port_file.exists() and int(port_file.read_text())
        yield address, wait_for(port, what="the extension server"), pki.cert_pem(ca)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def service(ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": ns},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}


def endpoint_slice(ns: str, address: str, port: int) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "api-1", "namespace": ns, "labels": {"kubernetes.io/service-name": "api"}},
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


# -- local APIServices and the published ConfigMap ------------------------------------------

def test_builtin_group_versions_have_local_apiservices(http):
    r = http.get(f"{APISERVICES}/v1.apps")
    assert r.status_code == 200, r.text
    obj = r.json()
    assert obj["spec"]["group"] == "apps" and obj["spec"].get("service") is None
    assert obj["spec"]["groupPriorityMinimum"] == 17800
    cond = available(http, "v1.apps")
    assert (cond["status"], cond["reason"]) == ("True", "Local")
    table = http.get(APISERVICES, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Service", "Available", "Age"]
    row = next(r["cells"] for r in table["rows"] if r["cells"][0] == "v1.apps")
    assert row[1:3] == ["Local", "True"]


def test_extension_apiserver_authentication_is_published(http):
    r = http.get("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    with open(os.path.join(session_pki(), "front-proxy-ca.crt")) as f:
        assert data["requestheader-client-ca-file"] == f.read()
    with open(os.path.join(session_pki(), "ca.crt")) as f:
        assert data["client-ca-file"] == f.read()
    assert json.loads(data["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]
    assert json.loads(data["requestheader-group-headers"]) == ["X-Remote-Group"]
    assert json.loads(data["requestheader-extra-headers-prefix"]) == ["X-Remote-Extra-"]


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field, message", [
    ({"metadata": {"name": "v2.wardle.example.com"}}, "metadata.name",
     'must be `spec.version+"."+spec.group`: "v1.wardle.example.com"'),
    ({"spec": {"groupPriorityMinimum": 0}}, "spec.groupPriorityMinimum", "must be positive and less than 20000"),
    ({"spec": {"versionPriority": 1001}}, "spec.versionPriority", "must be positive and less than 1000"),
    ({"spec": {"insecureSkipTLSVerify": True, "caBundle": base64.b64encode(b"x").decode()}},
     "spec.insecureSkipTLSVerify", "may not be true if caBundle is present"),
    ({"spec": {"service": None, "insecureSkipTLSVerify": True}}, "spec.insecureSkipTLSVerify",
     "local APIServices may not have insecureSkipTLSVerify"),
    ({"spec": {"service": {"namespace": "x", "name": "api", "port": 70000}}}, "spec.service.port",
     "port is not valid: must be between 1 and 65535, inclusive"),
])
def test_bad_apiservice_is_refused_and_nothing_is_stored(http, change, field, message):
    obj = apiservice("default")
    obj["metadata"].update(change.get("metadata", {}))
    obj["spec"].update(change.get("spec", {}))
    r = http.post(APISERVICES, json=obj)
    assert r.status_code == 422, r.text
    causes = r.json()["details"]["causes"]
    assert any(c["field"] == field and message in c["message"] for c in causes), causes
    assert http.get(f"{APISERVICES}/{obj['metadata']['name']}").status_code == 404


# -- availability, proxying and discovery ---------------------------------------------------

def test_availability_follows_the_service_and_its_endpoints(http, agg_ns, wardle):
    address, port, ca = wardle
    r = http.post(APISERVICES, json=apiservice(agg_ns, caBundle=base64.b64encode(ca).decode()))
    assert r.status_code == 201, r.text
    cond = wait_reason(http, "ServiceNotFound")
    assert cond["status"] == "False" and cond["message"] == f'service/api in "{agg_ns}" is not present'
    # Not available: the proxy answers as kube-aggregator does.
    r = http.get(f"/apis/{GROUP}/{VERSION}/namespaces/{agg_ns}/flunders")
    assert (r.status_code, r.text) == (503, "service unavailable\n")

    assert http.post(f"/api/v1/namespaces/{agg_ns}/services", json=service(agg_ns)).status_code == 201
    cond = wait_reason(http, "MissingEndpoints")
    assert cond["message"] == f'cannot find endpoints for service/api in "{agg_ns}"'

    # An endpoint where nothing listens: the discovery check fails.
    closed = endpoint_slice(agg_ns, address, 1)
    r = http.post(f"/apis/discovery.k8s.io/v1/namespaces/{agg_ns}/endpointslices", json=closed)
    assert r.status_code == 201, r.text
    cond = wait_reason(http, "FailedDiscoveryCheck")
    assert cond["message"].startswith(f"failing or missing response from https://{address}:1/apis/{GROUP}/{VERSION}")

    live = r.json()
    live["ports"][0]["port"] = port
    r = http.put(f"/apis/discovery.k8s.io/v1/namespaces/{agg_ns}/endpointslices/api-1", json=live)
    assert r.status_code == 200, r.text
    cond = wait_reason(http, "Passed")
    assert (cond["status"], cond["message"]) == ("True", "all checks passed")
    table = http.get(APISERVICES, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert next(r["cells"] for r in table["rows"] if r["cells"][0] == NAME)[1:3] == [f"{agg_ns}/api", "True"]


def test_requests_are_proxied_with_the_authenticated_user(http, agg_ns, wardle):
    wait_reason(http, "Passed")
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{agg_ns}/flunders"
    r = http.get(base)
    assert r.status_code == 200, r.text
    seen = r.json()["items"][0]["seenBy"]
    assert seen["user"] == "kubernetes-admin"
    assert set(seen["groups"]) >= {"system:masters", "system:authenticated"}
    r = http.get(f"{base}/x")
    assert (r.status_code, r.json()["metadata"]["name"]) == (200, "x")
    r = http.post(base, json={"apiVersion": f"{GROUP}/{VERSION}", "kind": "Flunder", "metadata": {"name": "new"}})
    assert (r.status_code, r.json()["metadata"]["name"]) == (201, "new")
    # A client cannot claim another user through the front proxy's headers.
    r = http.get(base, headers={"X-Remote-User": "mallory", "X-Remote-Group": "system:masters"})
    assert r.json()["items"][0]["seenBy"]["user"] == "kubernetes-admin"
    # A watch is streamed: its events arrive while the connection stays open.
    with http.stream("GET", base, params={"watch": "true"}) as w:
        lines = []
        for line in w.iter_lines():
            lines.append(json.loads(line))
            if len(lines) == 3:
                break
    assert [e["object"]["metadata"]["name"] for e in lines] == ["w0", "w1", "w2"]


def test_discovery_includes_the_aggregated_group(http, agg_ns, wardle):
    wait_reason(http, "Passed")
    groups = http.get("/apis").json()["groups"]
    wardle_group = next(g for g in groups if g["name"] == GROUP)
    assert wardle_group["preferredVersion"] == {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}
    assert http.get(f"/apis/{GROUP}").json()["versions"] == [{"groupVersion": f"{GROUP}/{VERSION}",
                                                              "version": VERSION}]
    assert [r["name"] for r in http.get(f"/apis/{GROUP}/{VERSION}").json()["resources"]] == \
        ["flunders", "flunders/status"]

    def aggregated():
        doc = http.get("/apis", headers={
            "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"}).json()
        return next((i for i in doc["items"] if i["metadata"]["name"] == GROUP), None)
    item = wait_for(aggregated, what="the aggregated discovery of the group")
    (version,) = item["versions"]
    assert version["version"] == VERSION and version["freshness"] == "Current"
    (flunders,) = version["resources"]
    assert flunders["resource"] == "flunders" and flunders["scope"] == "Namespaced"
    assert flunders["responseKind"] == {"group": GROUP, "version": VERSION, "kind": "Flunder"}
    assert flunders["shortNames"] == ["fl"]
    assert [s["subresource"] for s in flunders["subresources"]] == ["status"]


@pytest.mark.kubectl
def test_kubectl_sees_the_aggregated_api(apiserver, http, agg_ns, wardle, tmp_path):
    wait_reason(http, "Passed")
    base = [KUBECTL, *apiserver.kubectl_flags(), "--cache-dir", str(tmp_path / "cache")]
    r = subprocess.run([*base, "get", "--raw", f"/apis/{GROUP}/{VERSION}/namespaces/{agg_ns}/flunders/k"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["seenBy"]["user"] == "kubernetes-admin"
    r = subprocess.run([*base, "api-resources", f"--api-group={GROUP}", "--no-headers"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["flunders", "fl", f"{GROUP}/{VERSION}", "true", "Flunder"]


def test_the_extension_authorizes_by_subject_access_review(apiserver, http, agg_ns, wardle):
    """Presenting the front proxy's certificate, as the API server does: the extension asks
    the API server whether the named user may, and refuses with Kubernetes' wording."""
    address, port, ca = wardle
    d = session_pki()
    base = f"https://{address}:{port}/apis/{GROUP}/{VERSION}/namespaces/{agg_ns}/flunders"
    import ssl
    ctx = ssl.create_default_context(cadata=ca.decode())
    ctx.check_hostname = False  # the certificate names api.<ns>.svc, reached here by address
    ctx.load_cert_chain(os.path.join(d, "front-proxy-client.crt"), os.path.join(d, "front-proxy-client.key"))
    user = "jane-" + uuid.uuid4().hex[:6]
    with httpx.Client(verify=ctx, timeout=30) as front:
        r = front.get(base, headers={"X-Remote-User": user, "X-Remote-Group": "system:authenticated"})
        assert r.status_code == 403, r.text
        assert r.json()["message"] == (f'flunders.{GROUP} is forbidden: User "{user}" cannot list resource '
                                       f'"flunders" in API group "{GROUP}" in the namespace "{agg_ns}"')
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "flunder-reader", "namespace": agg_ns},
                "rules": [{"apiGroups": [GROUP], "resources": ["flunders"], "verbs": ["list"]}]}
        assert http.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{agg_ns}/roles", json=role).status_code == 201
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "flunder-reader", "namespace": agg_ns},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "flunder-reader"},
                   "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]}
        r = http.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{agg_ns}/rolebindings", json=binding)
        assert r.status_code == 201, r.text
        # The extension caches a denial for 10 s, as the delegated authorizer does.
        wait_for(lambda: front.get(base, headers={"X-Remote-User": user}).status_code == 200, timeout=30,
                 what="the extension to allow the bound user")
        assert front.get(base, headers={"X-Remote-User": user}).json()["items"][0]["seenBy"]["user"] == user
    # Without the front proxy's certificate, the headers name no one.
    ctx = ssl.create_default_context(cadata=ca.decode())
    ctx.check_hostname = False
    with httpx.Client(verify=ctx, timeout=30) as anonymous:
        r = anonymous.get(base, headers={"X-Remote-User": user})
        assert r.status_code == 401, r.text
    # Through the API server, a user with no RBAC is refused there first.
    with apiserver.client(user="scheduler") as sched:
        r = sched.get(f"/apis/{GROUP}/{VERSION}/namespaces/{agg_ns}/flunders")
        assert r.status_code == 403, r.text


def test_service_gone_makes_it_unavailable(http, agg_ns, wardle):
    wait_reason(http, "Passed")
    assert http.delete(f"/api/v1/namespaces/{agg_ns}/services/api").status_code == 200
    wait_reason(http, "ServiceNotFound")
    r = http.get(f"/apis/{GROUP}/{VERSION}/namespaces/{agg_ns}/flunders")
    assert (r.status_code, r.text) == (503, "service unavailable\n")
    names = [g["name"] for g in http.get("/apis").json()["groups"]]
    assert GROUP in names  # plain discovery still lists it, as Kubernetes does
