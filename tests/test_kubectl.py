"""The real kubectl (1.32, chosen by the server's /version) against minik8s, unchanged.

Each test gets a throwaway kubeconfig whose context points at the session's API server
(plain HTTP) and at the test's fresh namespace; kubectl's discovery cache lives in a
temporary directory. Objects are checked through the API, not only through kubectl's
own output.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml

from apiserver import registry
from tests.util import pod

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.kubectl  # skipped without kubectl, failed in CI (conftest.py)


class Kubectl:
    def __init__(self, kubeconfig: str, cache_dir: str, cwd: str):
        self.base = [KUBECTL, "--kubeconfig", kubeconfig, "--cache-dir", cache_dir]
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def __call__(self, *args: str, input: str | None = None, ok: bool = True,
                 env: dict | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run([*self.base, *args], input=input, capture_output=True, text=True,
                           cwd=self.cwd, env={**self.env, **(env or {})}, timeout=60)
        if ok and r.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        if not ok and r.returncode == 0:
            pytest.fail(f"kubectl {' '.join(args)} succeeded, expected it to fail: {r.stdout}")
        return r

    def out(self, *args: str, **kw) -> str:
        return self(*args, **kw).stdout

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*self.base, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=self.cwd, env=self.env)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("kubectl-cache"))


@pytest.fixture
def kubectl(apiserver, ns, cache_dir, tmp_path):
    path = apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns)
    return Kubectl(path, cache_dir, str(tmp_path))


def rows(text: str) -> list[dict[str, str]]:
    """kubectl's column output as dicts, cut where the header's columns start (a column
    name may hold single spaces, as in NOMINATED NODE; columns are 3+ spaces apart)."""
    lines = [line for line in text.splitlines() if line.strip()]
    spans = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    out = []
    for line in lines[1:]:
        ends = [s for s, _ in spans[1:]] + [None]
        out.append({name: line[start:end].strip() for (start, name), end in zip(spans, ends)})
    return out


def write(tmp_path, name: str, *docs: dict) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def web_deployment(*, image="nginx:1.27", labels=None, replicas=1) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels or {"app": "web", "tier": "front"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{
                                      "name": "web", "image": image,
                                      "ports": [{"containerPort": 80, "name": "http"}],
                                      "env": [{"name": "A", "value": "1"}]}]}}}}


def get(http, path: str) -> dict:
    r = http.get(path)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def node(http):
    name = "node-" + uuid.uuid4().hex[:8]
    r = http.post("/api/v1/nodes", json={
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/worker": ""}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "10.9.8.7"}],
                   "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian", "kernelVersion": "6.1",
                                "containerRuntimeVersion": "minik8s://1", "machineID": "", "systemUUID": "",
                                "bootID": "", "kubeProxyVersion": "", "operatingSystem": "linux",
                                "architecture": "amd64"}}})
    assert r.status_code == 201, r.text
    yield name
    http.delete(f"/api/v1/nodes/{name}")


# -- version and discovery ----------------------------------------------------------------

def test_version_picks_kubectl_1_32(kubectl, http):
    v = json.loads(kubectl.out("version", "-o", "json"))
    assert v["serverVersion"]["gitVersion"] == "v1.32.0-minik8s"
    assert v["clientVersion"]["minor"].startswith("32")
    assert http.get("/version").headers["cache-control"] == "no-cache, private"


def test_api_resources_lists_every_kind_with_short_names(kubectl):
    listed = {(r["NAME"], r["APIVERSION"]): r for r in rows(kubectl.out("api-resources"))}
    for rt in registry.RESOURCES:
        if rt.converts:
            continue  # another version of a kind: kubectl lists the group's preferred one
        row = listed.pop((rt.plural, rt.api_version))
        assert row["KIND"] == rt.kind
        assert row["SHORTNAMES"] == ",".join(rt.short_names)
        assert row["NAMESPACED"] == str(rt.namespaced).lower()
    assert not listed
    in_all = {r["NAME"] for r in rows(kubectl.out("api-resources", "--categories=all"))}
    assert in_all == {rt.plural for rt in registry.RESOURCES if "all" in rt.categories}


# -- apply, create ------------------------------------------------------------------------

def test_apply_creates_configures_then_is_unchanged(kubectl, http, ns, tmp_path):
    path = write(tmp_path, "web.yaml", web_deployment())
    assert kubectl.out("apply", "-f", path).strip() == "deployment.apps/web created"

    # A changed image and a dropped label: kubectl sends a strategic merge patch that
    # names only the image; applying it as a plain merge patch would lose ports and env.
    write(tmp_path, "web.yaml", web_deployment(image="nginx:1.28", labels={"app": "web"}))
    assert kubectl.out("apply", "-f", path).strip() == "deployment.apps/web configured"
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert d["metadata"]["labels"] == {"app": "web"}
    (c,) = d["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "nginx:1.28"
    assert c["ports"] == [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
    assert c["env"] == [{"name": "A", "value": "1"}]
    assert kubectl.out("apply", "-f", path).strip() == "deployment.apps/web unchanged"
    managers = {m["manager"] for m in d["metadata"]["managedFields"]}
    assert managers == {"kubectl-client-side-apply"}


def test_server_side_apply_creates_updates_prunes_and_conflicts(kubectl, http, ns, tmp_path):
    path = write(tmp_path, "web.yaml", web_deployment())
    assert kubectl.out("apply", "--server-side", "-f", path).strip() == "deployment.apps/web serverside-applied"
    url = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    d = get(http, url)
    (entry,) = d["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("kubectl", "Apply")
    assert "f:image" in entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']

    # The same manager applies without the tier label: the label it no longer applies goes.
    write(tmp_path, "web.yaml", web_deployment(image="nginx:1.28", labels={"app": "web"}))
    kubectl("apply", "--server-side", "-f", path)
    d = get(http, url)
    assert d["metadata"]["labels"] == {"app": "web"}
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"

    # Another manager changing a field kubectl owns is refused, naming field and owner...
    write(tmp_path, "web.yaml", web_deployment(image="nginx:1.29", labels={"app": "web"}))
    r = kubectl("apply", "--server-side", "--field-manager=other", "-f", path, ok=False)
    assert ('Apply failed with 1 conflict: conflict with "kubectl": '
            '.spec.template.spec.containers[name="web"].image') in r.stderr
    assert get(http, url)["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    # ... unless it forces, which moves the field to it.
    kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", path)
    d = get(http, url)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.29"
    owners = {m["manager"]: m["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
              for m in d["metadata"]["managedFields"]}
    assert "f:image" in owners["other"] and "f:image" not in owners["kubectl"]


def test_server_side_apply_takes_over_a_client_side_applied_object(kubectl, http, ns, tmp_path):
    path = write(tmp_path, "web.yaml", web_deployment())
    kubectl("apply", "-f", path)
    assert kubectl.out("apply", "--server-side", "-f", path).strip() == "deployment.apps/web serverside-applied"
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    managers = {(m["manager"], m["operation"]) for m in d["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers
    assert ("kubectl-client-side-apply", "Update") not in managers  # kubectl migrated it


def test_create_of_an_existing_object_is_already_exists(kubectl, tmp_path):
    path = write(tmp_path, "web.yaml", web_deployment())
    kubectl("create", "-f", path)
    r = kubectl("create", "-f", path, ok=False)
    assert r.stderr.strip() == ('Error from server (AlreadyExists): error when creating '
                                f'"{path}": deployments.apps "web" already exists')


def test_apply_dry_run_server_stores_nothing(kubectl, http, ns, tmp_path):
    path = write(tmp_path, "web.yaml", web_deployment())
    assert kubectl.out("apply", "--dry-run=server", "-f", path).strip() == \
        "deployment.apps/web created (server dry run)"
    assert http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web").status_code == 404
    kubectl("apply", "-f", path)
    write(tmp_path, "web.yaml", web_deployment(image="nginx:1.28"))
    assert kubectl.out("apply", "--dry-run=server", "-f", path).strip() == \
        "deployment.apps/web configured (server dry run)"
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"


# -- get ----------------------------------------------------------------------------------

def test_get_in_every_output_form(kubectl, http, ns, node, tmp_path):
    for body in (pod("web-1", labels={"app": "web"}, node=node), pod("db-1", labels={"app": "db"})):
        assert http.post(f"/api/v1/namespaces/{ns}/pods", json=body).status_code == 201
    kubectl("apply", "-f", write(tmp_path, "web.yaml", web_deployment()))

    table = rows(kubectl.out("get", "pods"))
    assert list(table[0]) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [(r["NAME"], r["READY"], r["STATUS"], r["RESTARTS"]) for r in table] == \
        [("db-1", "0/1", "Pending", "0"), ("web-1", "0/1", "Pending", "0")]
    assert [r["NAME"] for r in rows(kubectl.out("get", "po", "-l", "app=web"))] == ["web-1"]

    wide = rows(kubectl.out("get", "pods", "-o", "wide"))
    assert list(wide[0]) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                             "NOMINATED NODE", "READINESS GATES"]
    assert {r["NAME"]: r["NODE"] for r in wide} == {"db-1": "<none>", "web-1": node}

    as_yaml = yaml.safe_load(kubectl.out("get", "pod", "web-1", "-o", "yaml"))
    assert (as_yaml["kind"], as_yaml["metadata"]["name"], as_yaml["spec"]["nodeName"]) == ("Pod", "web-1", node)
    as_json = json.loads(kubectl.out("get", "pods", "-o", "json"))
    assert sorted(i["metadata"]["name"] for i in as_json["items"]) == ["db-1", "web-1"]
    assert kubectl.out("get", "pods", "-o", "jsonpath={.items[*].metadata.labels.app}") == "db web"

    everywhere = rows(kubectl.out("get", "pods", "-A"))
    assert {(r["NAMESPACE"], r["NAME"]) for r in everywhere} >= {(ns, "db-1"), (ns, "web-1")}
    labelled = rows(kubectl.out("get", "pods", "--show-labels"))
    assert {r["NAME"]: r["LABELS"] for r in labelled} == {"db-1": "app=db", "web-1": "app=web"}

    everything = kubectl.out("get", "all")
    assert "pod/web-1" in everything and "deployment.apps/web" in everything

    nodes = {r["NAME"]: r for r in rows(kubectl.out("get", "nodes"))}
    assert list(nodes[node]) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert (nodes[node]["STATUS"], nodes[node]["ROLES"], nodes[node]["VERSION"]) == ("Ready", "worker", "v1.32.0")
    wide_nodes = {r["NAME"]: r for r in rows(kubectl.out("get", "nodes", "-o", "wide"))}
    assert wide_nodes[node]["INTERNAL-IP"] == "10.9.8.7"

    both = kubectl.out("get", "deploy,rs")
    deploy = rows(both.split("\n\n")[0])
    assert list(deploy[0]) == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert deploy[0]["NAME"] == "deployment.apps/web" and deploy[0]["READY"] == "0/1"


def test_apply_and_get_endpointslices(kubectl, http, ns, tmp_path):
    slice_ = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": "web-x1", "labels": {"kubernetes.io/service-name": "web"}},
              "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
              "endpoints": [{"addresses": [f"10.4.0.{i}"], "conditions": {"ready": True}} for i in range(1, 5)]}
    out = kubectl.out("apply", "-f", write(tmp_path, "eps.yaml", slice_))
    assert out.strip() == "endpointslice.discovery.k8s.io/web-x1 created"
    table = rows(kubectl.out("get", "endpointslices"))
    assert list(table[0]) == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    assert (table[0]["NAME"], table[0]["ADDRESSTYPE"], table[0]["PORTS"], table[0]["ENDPOINTS"]) == \
        ("web-x1", "IPv4", "8080", "10.4.0.1,10.4.0.2,10.4.0.3 + 1 more...")
    stored = get(http, f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/web-x1")
    assert stored["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    # A second apply is a strategic merge patch: the endpoints list is replaced whole (atomic).
    slice_["endpoints"] = slice_["endpoints"][:1]
    out = kubectl.out("apply", "-f", write(tmp_path, "eps.yaml", slice_))
    assert out.strip() == "endpointslice.discovery.k8s.io/web-x1 configured"
    stored = get(http, f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/web-x1")
    assert [e["addresses"] for e in stored["endpoints"]] == [["10.4.0.1"]]
    described = kubectl.out("describe", "endpointslice", "web-x1")
    assert "AddressType:  IPv4" in described and "10.4.0.1" in described, described


def test_get_watch_sees_a_later_create_and_delete(kubectl, http, ns):
    assert http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("before")).status_code == 201
    proc = kubectl.popen("get", "pods", "-w", "--output-watch-events")
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []

    def wait_line(pattern: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.05)
            except queue.Empty:
                continue
            seen.append(line)
            if re.match(pattern, line):
                return line
        raise TimeoutError(f"kubectl get -w never printed {pattern!r}; got {seen}")

    try:
        wait_line(r"ADDED\s+before\s")
        assert http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("later")).status_code == 201
        # The watch is served as Tables: the row carries the printer's columns.
        assert wait_line(r"ADDED\s+later\s").split()[2:5] == ["0/1", "Pending", "0"]
        assert http.delete(f"/api/v1/namespaces/{ns}/pods/later").status_code == 200
        wait_line(r"DELETED\s+later\s")
    finally:
        proc.kill()
        proc.wait(10)


def test_describe_pod_shows_its_events(kubectl, http, ns):
    created = http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("p")).json()
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.1"},
             "involvedObject": {"kind": "Pod", "namespace": ns, "name": "p",
                                "uid": created["metadata"]["uid"], "apiVersion": "v1"},
             "reason": "Scheduled", "message": f"Successfully assigned {ns}/p to node-1",
             "type": "Normal", "source": {"component": "default-scheduler"}, "count": 1,
             "firstTimestamp": created["metadata"]["creationTimestamp"],
             "lastTimestamp": created["metadata"]["creationTimestamp"]}
    assert http.post(f"/api/v1/namespaces/{ns}/events", json=event).status_code == 201
    out = kubectl.out("describe", "pod", "p")
    assert re.search(r"^Status:\s+Pending$", out, re.M)
    events = out.split("\nEvents:", 1)[1]
    assert re.search(rf"Normal\s+Scheduled\s+\S+\s+default-scheduler\s+Successfully assigned {ns}/p to node-1",
                     events)


# -- delete, scale, label, annotate, patch, edit ------------------------------------------

def test_delete_by_file_and_by_name(kubectl, http, ns, node, tmp_path):
    path = write(tmp_path, "web.yaml", web_deployment())
    kubectl("apply", "-f", path)
    assert kubectl.out("delete", "-f", path).strip() == 'deployment.apps "web" deleted'
    assert http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web").status_code == 404

    # An unscheduled pod has nothing to stop: it goes at once.
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("idle"))
    assert kubectl.out("delete", "pod", "idle").strip() == 'pod "idle" deleted'
    assert http.get(f"/api/v1/namespaces/{ns}/pods/idle").status_code == 404

    # A pod on a node is deleted gracefully: it is Terminating until its kubelet (or a
    # forced delete) ends it.
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("busy", node=node))
    kubectl("delete", "pod", "busy", "--wait=false")
    assert rows(kubectl.out("get", "pod", "busy"))[0]["STATUS"] == "Terminating"
    kubectl("delete", "pod", "busy", "--grace-period=0", "--force")
    assert http.get(f"/api/v1/namespaces/{ns}/pods/busy").status_code == 404


def test_scale_label_annotate_and_patch(kubectl, http, ns, tmp_path):
    kubectl("apply", "-f", write(tmp_path, "web.yaml", web_deployment()))
    url = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    assert kubectl.out("scale", "deploy", "web", "--replicas=3").strip() == "deployment.apps/web scaled"
    kubectl("label", "deploy", "web", "env=prod")
    kubectl("annotate", "deploy", "web", "owner=team-a")
    kubectl("patch", "deploy", "web", "--type=merge", "-p", '{"spec":{"minReadySeconds":5}}')
    kubectl("patch", "deploy", "web", "--type=json",
            "-p", '[{"op":"replace","path":"/spec/revisionHistoryLimit","value":3}]')
    kubectl("patch", "deploy", "web", "--type=strategic", "-p",
            '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"B","value":"2"}]}]}}}}')
    d = get(http, url)
    assert d["spec"]["replicas"] == 3
    assert d["metadata"]["labels"]["env"] == "prod"
    assert d["metadata"]["annotations"]["owner"] == "team-a"
    assert (d["spec"]["minReadySeconds"], d["spec"]["revisionHistoryLimit"]) == (5, 3)
    assert {e["name"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]} == {"A", "B"}
    managers = {m["manager"] for m in d["metadata"]["managedFields"]}
    assert {"kubectl-client-side-apply", "kubectl-label", "kubectl-annotate", "kubectl-patch"} <= managers


def test_edit_with_an_editor_script(kubectl, http, ns, tmp_path):
    kubectl("apply", "-f", write(tmp_path, "web.yaml", web_deployment()))
    editor = f"{sys.executable} -c \"import sys,pathlib; p=pathlib.Path(sys.argv[1]); " \
             f"p.write_text(p.read_text().replace('nginx:1.27', 'nginx:1.26'))\""
    assert kubectl.out("edit", "deploy", "web", env={"EDITOR": editor}).strip() == "deployment.apps/web edited"
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 80
    assert "kubectl-edit" in {m["manager"] for m in d["metadata"]["managedFields"]}


# -- errors and node-side endpoints -------------------------------------------------------

def test_get_of_a_missing_pod_is_not_found(kubectl):
    r = kubectl("get", "pod", "nosuch", ok=False)
    assert r.stderr == 'Error from server (NotFound): pods "nosuch" not found\n'


def test_an_invalid_manifest_is_rejected_naming_the_field(kubectl, http, ns, tmp_path):
    bad = pod("bad")
    bad["spec"]["containers"][0]["ports"] = [{"containerPort": 99999}]
    r = kubectl("apply", "-f", write(tmp_path, "bad.yaml", bad), ok=False)
    assert 'The Pod "bad" is invalid' in r.stderr
    assert "spec.containers[0].ports[0].containerPort: Invalid value: 99999" in r.stderr
    # kubectl validates with fieldValidation=Strict: an unknown field is an error too.
    typo = pod("typo")
    typo["spec"]["containers"][0]["imagePolicy"] = "Always"
    r = kubectl("apply", "-f", write(tmp_path, "typo.yaml", typo), ok=False)
    assert 'unknown field "spec.containers[0].imagePolicy"' in r.stderr
    for name in ("bad", "typo"):
        assert http.get(f"/api/v1/namespaces/{ns}/pods/{name}").status_code == 404


def test_logs_and_exec_reach_the_endpoints_but_no_node_serves_them(kubectl, http, ns, node):
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("pending"))
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("placed", node=node))
    assert kubectl.out("logs", "pending") == ""  # nothing has run: an empty log, as Kubernetes
    r = kubectl("logs", "placed", ok=False)
    assert f'no kubelet is connected to serve pods on node "{node}"' in r.stderr
    # exec upgrades to a WebSocket (v5.channel.k8s.io) and gets a Status on the error channel.
    r = kubectl("exec", "pending", "--", "true", ok=False)
    assert r.stderr.strip() == "error: pod pending does not have a host assigned"
    r = kubectl("exec", "placed", "--", "true", ok=False)
    assert f'no kubelet is connected to serve pods on node "{node}"' in r.stderr


def test_apply_of_a_list_as_get_o_yaml_writes_it(kubectl, http, ns, tmp_path):
    """kubectl validates a List against /openapi/v2 (not v3): a backup made with
    `get -o yaml` is restored with `apply -f`."""
    for name in ("a", "b"):
        kubectl("create", "configmap", name, "--from-literal", f"k={name}")
    backup = tmp_path / "backup.yaml"
    backup.write_text(kubectl.out("get", "configmaps", "a", "b", "-o", "yaml"))
    assert yaml.safe_load(backup.read_text())["kind"] == "List"
    kubectl("delete", "configmap", "a", "b")
    out = kubectl.out("apply", "-f", str(backup))
    assert "configmap/a created" in out and "configmap/b created" in out, out
    assert get(http, f"/api/v1/namespaces/{ns}/configmaps/b")["data"] == {"k": "b"}


def test_validate_strict_catches_a_bad_field_in_a_list(kubectl, http, ns, tmp_path):
    doc = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad"},
         "data": {"k": "v"}, "dta": {"k": "v"}}]}
    r = kubectl("apply", "--validate=strict", "-f", write(tmp_path, "bad.yaml", doc), ok=False)
    # Caught by kubectl itself, against /openapi/v2's definitions.
    assert 'unknown field "dta" in io.k8s.api.core.v1.ConfigMap' in r.stderr, r.stderr
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps/bad").status_code == 404
