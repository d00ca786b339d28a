"""The real kubectl's typed-client commands (create <kind>, run, expose, drain) against minik8s.

kubectl sends these bodies as protobuf (`application/vnd.kubernetes.protobuf`), unlike
`create -f`/`apply`, which send JSON. Each object is compared with its twin created from
kubectl's own JSON (`--dry-run=client -o json | kubectl create -f -`): the two must be
stored alike.
"""
from __future__ import annotations

import base64
import json
import re
import uuid

from tests.test_kubectl import Kubectl, cache_dir, get, kubectl, node, pytestmark  # noqa: F401

SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")


def comparable(obj: dict, name: str, twin: str) -> str:
    """The object without what the server sets per object, its twin's name read as its own."""
    for k in SERVER_SET:
        obj["metadata"].pop(k, None)
    if obj.get("kind") == "Service":  # allocated per object: a Service's address and node ports
        spec = obj["spec"]
        for k in ("clusterIP", "clusterIPs"):
            spec.pop(k, None)
        for p in spec.get("ports") or []:
            p.pop("nodePort", None)
    text = json.dumps(obj, sort_keys=True).replace(f'"{twin}"', f'"{name}"')
    # the ServiceAccount admission names a pod's token volume kube-api-access-<5 random>
    return re.sub(r'"kube-api-access-[a-z0-9]{5}"', '"kube-api-access-*"', text)


def created_alike(kubectl: Kubectl, http, path: str, name: str, twin: str, *create: str):
    """Create `name` with kubectl's protobuf body, `twin` from its JSON, compare both.
    `create` is the kubectl command with "{}" where the new object's name goes."""
    kubectl(*[a.format(name) for a in create])
    first, *rest = [a.format(twin) for a in create]
    as_json = kubectl.out(first, "--dry-run=client", "-o", "json", *rest)  # before any "--"
    kubectl("create", "-f", "-", input=as_json)
    one, two = get(http, f"{path}/{name}"), get(http, f"{path}/{twin}")
    assert comparable(one, name, twin) == comparable(two, name, twin)
    return one


def test_create_namespace(kubectl, http):
    name = "pb-" + uuid.uuid4().hex[:8]
    r = kubectl("create", "namespace", name, "-v=8")
    try:
        assert "Content-Type: application/vnd.kubernetes.protobuf" in r.stderr
        got = get(http, f"/api/v1/namespaces/{name}")
        assert got["status"]["phase"] == "Active"
        assert got["metadata"]["labels"] == {"kubernetes.io/metadata.name": name}
    finally:
        http.delete(f"/api/v1/namespaces/{name}")


def test_create_configmap_and_secret(kubectl, http, ns):
    kubectl("create", "configmap", "cm", "--from-literal=a=1", "--from-literal=b=two words")
    cm = get(http, f"/api/v1/namespaces/{ns}/configmaps/cm")
    assert cm["data"] == {"a": "1", "b": "two words"}

    secret = created_alike(kubectl, http, f"/api/v1/namespaces/{ns}/secrets", "s", "s-json",
                           "create", "secret", "generic", "{}", "--from-literal=pw=s3cr:et\u00e9")
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["pw"]).decode() == "s3cr:et\u00e9"


def test_create_deployment_keeps_zero_replicas(kubectl, http, ns):
    d = created_alike(kubectl, http, f"/apis/apps/v1/namespaces/{ns}/deployments", "web",
                      "web-json", "create", "deployment", "{}", "--image", "nginx:1.27",
                      "--replicas", "0", "--port", "80")
    assert d["spec"]["replicas"] == 0
    assert d["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 80, "protocol": "TCP"}]
    assert json.loads(kubectl.out("get", "deploy", "web", "-o", "json"))["spec"]["replicas"] == 0


def test_run_a_pod_and_expose_it(kubectl, http, ns):
    p = created_alike(kubectl, http, f"/api/v1/namespaces/{ns}/pods", "p", "p-json",
                      "run", "{}", "--image", "busybox", "--labels", "app=p", "--env", "A=B",
                      "--", "sleep", "1000")
    assert p["spec"]["containers"][0]["env"] == [{"name": "A", "value": "B"}]
    assert p["spec"]["containers"][0]["args"] == ["sleep", "1000"]

    kubectl("create", "deployment", "web", "--image", "nginx:1.27", "--replicas", "0")
    svc = created_alike(kubectl, http, f"/api/v1/namespaces/{ns}/services", "web", "web-json",
                        "expose", "deployment", "web", "--name", "{}", "--port", "8080",
                        "--target-port", "80")
    assert svc["spec"]["ports"] == [{"port": 8080, "protocol": "TCP", "targetPort": 80}]
    assert svc["spec"]["selector"] == {"app": "web"}

    kubectl("create", "service", "clusterip", "named", "--tcp=5678:http")
    named = get(http, f"/api/v1/namespaces/{ns}/services/named")
    assert named["spec"]["ports"][0]["targetPort"] == "http"


def test_drain_evicts_the_nodes_pods(kubectl, http, ns, node):
    # kubectl drain evicts only where discovery names pods/eviction's group and version
    # (policy/v1); else it falls back to DELETE.
    kubectl("run", "victim", "--image", "busybox", "--overrides",
            json.dumps({"spec": {"nodeName": node}}))
    out = kubectl.out("drain", node, "--force", "--grace-period=0", "--timeout=30s")
    assert f"node/{node} drained" in out and "pod/victim evicted" in out, out
    assert http.get(f"/api/v1/namespaces/{ns}/pods/victim").status_code == 404
    assert get(http, f"/api/v1/nodes/{node}")["spec"]["unschedulable"] is True
