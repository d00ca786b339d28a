"""The kubelet end to end: `minik8s kubelet` processes running real pods for an API
server, driven only through the API (and the real kubectl).

The module starts its own API server (on the session's etcd) that presents a kubelet
token, and one kubelet on 127.0.0.1 with a bridge, cgroup parent, pod CIDR and state
dir of its own; a test that kills its kubelet gets a node of its own. Pods carry
spec.nodeName (no scheduler runs). Every node is torn down afterwards, even on failure:
its pods' processes, mounts, cgroups, veths and its Node and Lease. Waits are polls
with timeouts that only catch hangs.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pytest
from pyroute2 import IPRoute
from client.wsclient import connect

from prometheus_client.parser import text_string_to_metric_families

from kubelet.runtime.linux import kernel
from kubelet.runtime.linux.cgroups import Cgroup, Hierarchies
from kubelet.runtime.linux.network import veth_name
from kubelet.runtime.linux.runtime import LinuxRuntime
from tests.procs import APIServer, Component, default_service_account, free_port, root_ca_configmap, wait_for
from tests.test_kubelet_runtime import free_cidr, host_processes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real pods: needs root")

TOKEN = "kubelet-test-" + uuid.uuid4().hex
TOKEN_ENV = "MINIK8S_KUBELET_TOKEN"
KUBECTL = shutil.which("kubectl")
SLEEP = ["sleep", "infinity"]


def start_api(etcd_url: str, **kw) -> APIServer:
    """An API server that presents TOKEN to kubelets (it reads it from its environment).
    Secure towards its clients; towards kubelets it keeps the shared-token mode, which
    tests here are about (the TLS kubelet is test_kubelet_security's)."""
    old = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = TOKEN
    try:
        return APIServer(etcd_url, kubelet_tls=False, **kw).start()
    finally:
        if old is None:
            del os.environ[TOKEN_ENV]
        else:
            os.environ[TOKEN_ENV] = old


@pytest.fixture(scope="module")
def api(etcd):
    server = start_api(etcd.url)
    yield server
    server.stop()


@pytest.fixture
def http(api):
    with api.client(timeout=30) as c:
        yield c


@pytest.fixture
def ns(http):
    """conftest's namespace, with the `kube-root-ca.crt` the pods' token volumes project
    (the root-ca-cert-publisher's: no controller manager runs here)."""
    name = "t-" + uuid.uuid4().hex[:10]
    r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    default_service_account(http, name)
    root_ca_configmap(http, name)
    return name


class KubeletNode:
    """One `minik8s kubelet` on 127.0.0.1 with everything of its own."""

    def __init__(self, api: APIServer, tmp: Path, *extra: str):
        tag = uuid.uuid4().hex[:8]
        self.name, self.tmp = f"kl-{tag}", tmp
        self.port, self.cidr, self.healthz_port = free_port(), free_cidr(), free_port()
        self.bridge, self.cgroup_parent = f"mk8st{tag}", f"minik8s-test-{tag}"
        self.root = str(tmp / "root")
        kubeconfig, token = tmp / "kubeconfig", tmp / "token"
        api.write_kubeconfig(kubeconfig)
        token.write_text(TOKEN)
        self.args = ["kubelet", "--kubeconfig", str(kubeconfig), "--node-name", self.name,
                     "--pod-cidr", self.cidr, "--root-dir", self.root, "--address", "127.0.0.1",
                     "--port", str(self.port), "--token-file", str(token), "--bridge", self.bridge,
                     "--cgroup-parent", self.cgroup_parent, "--healthz-port", str(self.healthz_port),
                     # the pods run the host's tools (sh, sleep) whatever their image says
                     "--host-root-images", *extra]
        self.api = api
        self.proc: Component | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "KubeletNode":
        self.proc = Component(*self.args).start()

        def up():
            if not self.proc.alive():
                raise RuntimeError(f"kubelet exited: {self.proc.log()}")
            node = api.get(f"/api/v1/nodes/{self.name}").json()
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in (node.get("status") or {}).get("conditions") or [])
            return ready and httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        try:
            with self.api.client() as api:  # one connection for the whole poll
                wait_for(up, what=f"kubelet {self.name}")
        except (TimeoutError, RuntimeError):
            raise RuntimeError(f"kubelet {self.name} did not come up: {self.proc.log()}") from None
        return self

    def kill(self) -> None:
        self.proc.stop(signal.SIGKILL)

    def runtime(self) -> LinuxRuntime:
        """The node's runtime state, read directly (for checks and cleanup)."""
        return LinuxRuntime(self.root, pod_cidr=self.cidr, bridge=self.bridge, cgroup_parent=self.cgroup_parent)

    def cleanup(self) -> None:
        if self.proc:
            self.proc.stop()
        rt = self.runtime()
        for uid in os.listdir(rt.pods_dir):
            rt.remove_pod(uid)
        rt.cleanup_orphans(keep=[])
        rt.network.delete_bridge()
        Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
        with self.api.client() as c:
            c.delete(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}")
            c.delete(f"/api/v1/nodes/{self.name}")


@pytest.fixture(scope="module")
def node(api, tmp_path_factory):
    n = KubeletNode(api, tmp_path_factory.mktemp("kubelet"), "--lease-renew-interval", "1",
                    "--node-status-update-frequency", "1", "-v", "2")
    try:
        yield n.start()
    finally:
        n.cleanup()


@pytest.fixture
def own_node(api, tmp_path):
    n = KubeletNode(api, tmp_path)
    try:
        yield n
    finally:
        n.cleanup()


# -- helpers ----------------------------------------------------------------------------------

def make_pod(name: str, node: KubeletNode, *containers: dict, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node.name, "terminationGracePeriodSeconds": 1,
                     "containers": list(containers), **spec}}


def container(name: str, command: list[str], **kw) -> dict:
    return {"name": name, "image": "busybox", "command": command, **kw}


def create(http, ns: str, obj: dict) -> dict:
    plural = {"Pod": "pods", "ConfigMap": "configmaps", "Secret": "secrets"}[obj["kind"]]
    r = http.post(f"/api/v1/namespaces/{ns}/{plural}", json=obj)
    assert r.status_code == 201, r.text
    return r.json()


def get_pod(http, ns: str, name: str) -> dict | None:
    r = http.get(f"/api/v1/namespaces/{ns}/pods/{name}")
    return r.json() if r.status_code == 200 else None


def wait_pod(http, ns: str, name: str, pred, what: str, timeout: float = 30) -> dict:
    def check():
        p = get_pod(http, ns, name)
        return p if p is not None and pred(p) else None
    try:
        return wait_for(check, timeout=timeout, what=f"pod {name}: {what}")
    except TimeoutError:
        raise AssertionError(f"pod {name}: {what}; last seen: "
                             f"{json.dumps((get_pod(http, ns, name) or {}).get('status'), indent=1)}") from None


def cstatus(pod: dict, name: str, init: bool = False) -> dict:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next((c for c in (pod.get("status") or {}).get(key) or [] if c["name"] == name), {})


def phase(p: dict) -> str:
    return (p.get("status") or {}).get("phase", "")


def condition(p: dict, type_: str) -> dict:
    return next((c for c in (p.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def running(name: str):
    return lambda p: "running" in cstatus(p, name).get("state", {})


def terminated(name: str, init: bool = False):
    return lambda p: "terminated" in cstatus(p, name, init).get("state", {})


def pod_log(http, ns: str, name: str, **params) -> str:
    r = http.get(f"/api/v1/namespaces/{ns}/pods/{name}/log", params=params)
    assert r.status_code == 200, r.text
    return r.text


def api_exec(api, ns: str, pod: str, command: list[str], *, container: str | None = None,
             stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """exec through the API server's WebSocket, as kubectl does (v5.channel.k8s.io)."""
    query = "&".join(f"command={quote(c, safe='')}" for c in command)
    query += "&stdout=true&stderr=true" + ("&stdin=true" if stdin is not None else "")
    if container:
        query += f"&container={container}"
    url = api.ws_url(f"/api/v1/namespaces/{ns}/pods/{pod}/exec?{query}")
    out, err, status = b"", b"", None
    # tests/wsclient.py, not websockets' sync client: that one could lose the upgrade request
    # over TLS under load (its reader thread and this one share the SSL socket).
    with connect(url, subprotocols=["v5.channel.k8s.io"], open_timeout=30, ssl=api.ws_ssl()) as ws:
        if stdin is not None:
            ws.send(b"\x00" + stdin)
            ws.send(b"\xff\x00")  # stdin is done
        while True:
            try:
                frame = ws.recv(timeout=30)
            except Exception:  # noqa: BLE001 - closed: the command is over
                break
            if frame[0] == 1:
                out += frame[1:]
            elif frame[0] == 2:
                err += frame[1:]
            elif frame[0] == 3:
                status = orjson.loads(frame[1:])
    assert status is not None, (out, err)
    if status["status"] == "Success":
        return 0, out, err
    causes = (status.get("details") or {}).get("causes") or []
    code = next((int(c["message"]) for c in causes if c.get("reason") == "ExitCode"), None)
    assert code is not None, status
    return code, out, err


def events(http, ns: str) -> list[dict]:
    return http.get(f"/api/v1/namespaces/{ns}/events").json()["items"]


FETCH = ("python3 -c \"import sys, urllib.request as u; "
         "print(u.urlopen(sys.argv[1], timeout=2).read().decode(), end='')\"")


# -- the node -------------------------------------------------------------------------------

def test_node_is_registered_with_status_lease_and_a_guarded_endpoint(node, http):
    n = http.get(f"/api/v1/nodes/{node.name}").json()
    st = n["status"]
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}
    assert {"type": "InternalIP", "address": "127.0.0.1"} in st["addresses"]
    assert st["daemonEndpoints"] == {"kubeletEndpoint": {"Port": node.port}}
    assert int(st["capacity"]["cpu"]) == os.cpu_count() and st["capacity"]["pods"] == "110"
    assert st["allocatable"]["memory"].endswith("Ki")
    assert st["nodeInfo"]["kubeletVersion"].startswith("v1.32") and st["nodeInfo"]["operatingSystem"] == "linux"
    assert n["metadata"]["labels"]["kubernetes.io/hostname"] == node.name
    lease_url = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node.name}"
    lease = http.get(lease_url).json()
    assert lease["spec"]["holderIdentity"] == node.name and lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["uid"] == n["metadata"]["uid"]
    wait_for(lambda: http.get(lease_url).json()["spec"]["renewTime"] != lease["spec"]["renewTime"],
             what="the lease to be renewed")
    # A controller marks the node NotReady and adds a condition of its own: the kubelet
    # puts Ready back and keeps the other condition.
    r = http.patch(f"/api/v1/nodes/{node.name}/status", headers={
        "content-type": "application/strategic-merge-patch+json"}, json={"status": {"conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"},
            {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}]}})
    assert r.status_code == 200, r.text

    def conditions():
        return {c["type"]: c["status"] for c in http.get(f"/api/v1/nodes/{node.name}").json()["status"]["conditions"]}
    wait_for(lambda: conditions()["Ready"] == "True", what="the kubelet to report Ready again")
    assert conditions()["NetworkUnavailable"] == "False"
    # The endpoint serves only the API server's token.
    logs = f"{node.url}/containerLogs/default/nope/c"
    assert httpx.get(logs).status_code == 401
    assert httpx.get(logs, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(logs, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    assert httpx.get(node.url + "/healthz").text == "ok"


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a /metrics answer."""
    r = httpx.get(url, headers=headers)
    assert r.status_code == 200, r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def test_health_server_lists_its_checks_and_serves_metrics(node):
    health = f"http://127.0.0.1:{node.healthz_port}"
    r = httpx.get(health + "/healthz?verbose")
    assert r.status_code == 200, r.text
    assert r.text.splitlines() == ["[+]ping ok", "[+]syncloop ok", "healthz check passed"]
    assert httpx.get(health + "/healthz/syncloop").text == "ok"
    assert httpx.get(health + "/healthz").text == "ok"
    assert ("kubelet_running_pods", ()) in scrape(health + "/metrics")
    # klog's text header on the kubelet's own lines
    assert re.search(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ node\.py:\d+\] registered node " + node.name,
                     node.proc.log(), re.M)


def test_metrics_on_the_endpoint_need_the_token(node):
    url = node.url + "/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")


def test_metrics_count_started_and_running_pods(node, http, ns):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = scrape(node.url + "/metrics", **auth)
    create(http, ns, make_pod("counted", node, container("c", SLEEP)))
    wait_pod(http, ns, "counted", running("c"), "running")

    def moved(m, name, labels=()):
        return m.get((name, labels), 0) - before.get((name, labels), 0)

    def scraped():
        m = scrape(node.url + "/metrics", **auth)
        return m if m[("kubelet_running_pods", ())] >= 1 else None
    m = wait_for(scraped, what="kubelet_running_pods to count the pod")
    assert m[("kubelet_running_containers", (("container_state", "running"),))] >= 1
    assert moved(m, "kubelet_started_pods_total") >= 1
    assert moved(m, "kubelet_started_containers_total", (("container_type", "container"),)) >= 1
    assert moved(m, "kubelet_pod_start_duration_seconds_count") >= 1
    assert moved(m, "kubelet_pod_start_sli_duration_seconds_count", (("first_with_network", "false"),)) >= 1
    assert moved(m, "kubelet_pod_worker_duration_seconds_count", (("operation_type", "create"),)) >= 1
    assert m[("kubelet_pleg_relist_duration_seconds_count", ())] >= 1
    assert m[("process_resident_memory_bytes", ())] > 0
    # -v 2 shows the pod's arrival, as the kubelet's "SyncLoop ADD"
    assert f'"SyncLoop ADD" source="api" pod="{ns}/counted"' in node.proc.log()


# -- pods -----------------------------------------------------------------------------------

def test_containers_of_a_pod_share_volume_hostname_loopback_and_ipc(node, http, ns):
    mount = [{"name": "shared", "mountPath": "/data"}]
    server = container("server", ["sh", "-c", "echo hello > /data/greeting; "
                                  "ipcmk -Q | tr -dc 0-9 > /data/q && mv /data/q /data/queue-id; "
                                  "exec python3 -m http.server 8080 --bind 127.0.0.1 --directory /data"],
                       volumeMounts=mount)
    client = container("client", ["sh", "-c", "until [ -s /data/queue-id ]; do sleep 0.05; done; "
                                  "cat /data/greeting; hostname; cat /etc/hostname; "
                                  f"until {FETCH} http://127.0.0.1:8080/greeting 2>/dev/null; do sleep 0.05; done; "
                                  "ipcs -q | awk '{print $2}' | grep -qx \"$(cat /data/queue-id)\" && echo ipc-shared"],
                       volumeMounts=mount)
    create(http, ns, make_pod("duo", node, server, client, restartPolicy="Never",
                              volumes=[{"name": "shared", "emptyDir": {}}]))
    p = wait_pod(http, ns, "duo", terminated("client"), "the client to finish")
    assert cstatus(p, "client")["state"]["terminated"]["exitCode"] == 0
    assert pod_log(http, ns, "duo", container="client") == "hello\nduo\nduo\nhello\nipc-shared\n"
    assert phase(p) == "Running" and running("server")(p)  # the server is still up
    assert p["status"]["podIP"] and p["status"]["hostIP"] == "127.0.0.1"


def test_pods_reach_each_other_and_the_node_reaches_them_by_ip(node, http, ns):
    create(http, ns, make_pod("a", node, container("server", [
        "sh", "-c", "echo pod-a > /tmp/who; exec python3 -m http.server 8080 --directory /tmp"])))
    a = wait_pod(http, ns, "a", lambda p: phase(p) == "Running", "running")
    ip = a["status"]["podIP"]
    create(http, ns, make_pod("b", node, container("client", [
        # Quiet until a's server listens (Running means its process started, not that).
        "sh", "-c", f"until {FETCH} http://{ip}:8080/who 2>/dev/null; do sleep 0.05; done"]),
        restartPolicy="Never"))
    b = wait_pod(http, ns, "b", lambda p: phase(p) == "Succeeded", "succeeded")
    assert b["status"]["podIP"] != ip
    assert pod_log(http, ns, "b") == "pod-a\n"

    def from_node():
        conn = HTTPConnection(ip, 8080, timeout=2)
        try:
            conn.request("GET", "/who")
            return conn.getresponse().read().decode()
        finally:
            conn.close()
    assert wait_for(from_node, what="pod a from the node") == "pod-a\n"


def test_memory_limit_kills_the_container_as_oom_killed(node, http, ns):
    create(http, ns, make_pod("hog", node, container(
        "hog", ["python3", "-c", "b = b'x' * (512 << 20)"],
        resources={"limits": {"memory": "64Mi"}}), restartPolicy="Never"))
    p = wait_pod(http, ns, "hog", lambda p: phase(p) == "Failed", "failed")
    t = cstatus(p, "hog")["state"]["terminated"]
    assert (t["reason"], t["exitCode"]) == ("OOMKilled", 137)


def test_liveness_failure_restarts_the_container(node, http, ns):
    create(http, ns, make_pod("sick", node, container(
        "c", ["sh", "-c", "if [ -e /state/ran ]; then touch /tmp/healthy; fi; touch /state/ran; exec sleep infinity"],
        volumeMounts=[{"name": "state", "mountPath": "/state"}],
        livenessProbe={"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1}),
        volumes=[{"name": "state", "emptyDir": {}}]))
    p = wait_pod(http, ns, "sick", lambda p: cstatus(p, "c").get("restartCount") == 1 and running("c")(p),
                 "restarted once")
    assert cstatus(p, "c")["lastState"]["terminated"]["exitCode"] == 137  # sleep ignores SIGTERM
    reasons = {(e["reason"], e["message"].split(":")[0]) for e in events(http, ns)}
    assert ("Unhealthy", "Liveness probe failed") in reasons
    assert ("Killing", "Container c failed liveness probe, will be restarted") in reasons


def test_a_new_image_restarts_the_container_whatever_the_policy(node, http, ns):
    create(http, ns, make_pod("updated", node, container("c", SLEEP), restartPolicy="Never"))
    wait_pod(http, ns, "updated", running("c"), "running")
    r = http.patch(f"/api/v1/namespaces/{ns}/pods/updated", json={"spec": {"containers": [
        {"name": "c", "image": "busybox:1.37"}]}}, headers={"content-type": "application/strategic-merge-patch+json"})
    assert r.status_code == 200, r.text
    p = wait_pod(http, ns, "updated", lambda p: cstatus(p, "c").get("restartCount") == 1 and running("c")(p),
                 "restarted with the new image")
    assert cstatus(p, "c")["image"] == "busybox:1.37"
    assert ("Killing", "Container c definition changed, will be restarted") in \
        [(e["reason"], e["message"]) for e in events(http, ns)]


def test_readiness_probe_gates_the_ready_condition(node, api, http, ns):
    create(http, ns, make_pod("gated", node, container(
        "c", SLEEP, readinessProbe={"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1,
                                    "failureThreshold": 1})))
    p = wait_pod(http, ns, "gated", lambda p: phase(p) == "Running", "running")
    assert cstatus(p, "c")["ready"] is False and cstatus(p, "c")["started"] is True
    assert (condition(p, "Ready")["status"], condition(p, "Ready")["reason"]) == ("False", "ContainersNotReady")
    assert api_exec(api, ns, "gated", ["touch", "/tmp/ready"])[0] == 0
    p = wait_pod(http, ns, "gated", lambda p: condition(p, "Ready").get("status") == "True", "ready")
    assert condition(p, "ContainersReady")["status"] == "True" and cstatus(p, "c")["ready"] is True
    assert api_exec(api, ns, "gated", ["rm", "/tmp/ready"])[0] == 0
    p = wait_pod(http, ns, "gated", lambda p: condition(p, "Ready").get("status") == "False", "unready again")
    assert cstatus(p, "c")["restartCount"] == 0


def test_config_maps_and_secrets_reach_volumes_and_env_and_updates_appear_in_place(node, api, http, ns):
    create(http, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                      "data": {"greeting": "v1"}})
    create(http, ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
                      "stringData": {"token": "s3cret"}})
    env = [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
           {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
           {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
           {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "BOTH", "value": "$(POD)@$(NODE)"}]
    create(http, ns, make_pod("cfg-user", node, container(
        "c", SLEEP, env=env, workingDir="/etc/cfg",
        volumeMounts=[{"name": "cfg", "mountPath": "/etc/cfg"},
                      {"name": "sec", "mountPath": "/etc/sec", "readOnly": True}]),
        volumes=[{"name": "cfg", "configMap": {"name": "cfg"}},
                 {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}}]))
    p = wait_pod(http, ns, "cfg-user", lambda p: phase(p) == "Running", "running")

    def sh(script: str) -> str:
        code, out, err = api_exec(api, ns, "cfg-user", ["sh", "-c", script])
        assert code == 0, err
        return out.decode()
    assert sh("cat greeting; stat -L -c %a /etc/sec/token; cat /etc/sec/token") == "v1400\ns3cret"
    assert sh("echo $GREETING $TOKEN $POD $NS $IP $NODE $BOTH; pwd") == \
        f"v1 s3cret cfg-user {ns} {p['status']['podIP']} {node.name} cfg-user@{node.name}\n/etc/cfg\n"
    r = http.patch(f"/api/v1/namespaces/{ns}/configmaps/cfg", json={"data": {"greeting": "v2"}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert wait_for(lambda: sh("cat /etc/cfg/greeting") == "v2", what="the new content") is True
    assert sh("echo $GREETING") == "v1\n"  # the environment is fixed at start, as in Kubernetes

    # A container whose configuration refers to what does not exist yet waits for it.
    create(http, ns, make_pod("early", node, container("c", SLEEP, env=[
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "x"}}}])))
    p = wait_pod(http, ns, "early", lambda p: cstatus(p, "c").get("state", {}).get("waiting"), "waiting")
    assert cstatus(p, "c")["state"]["waiting"] == {"reason": "CreateContainerConfigError",
                                                   "message": 'configmap "late" not found'}
    create(http, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}, "data": {"x": "1"}})
    wait_pod(http, ns, "early", running("c"), "running once the ConfigMap exists")


def test_init_containers_run_in_order_and_restart_policies_end_in_a_phase(node, http, ns):
    work = [{"name": "w", "mountPath": "/w"}]
    create(http, ns, make_pod(
        "ordered", node, container("main", ["cat", "/w/order"], volumeMounts=work), restartPolicy="Never",
        volumes=[{"name": "w", "emptyDir": {}}],
        initContainers=[container("one", ["sh", "-c", "echo 1 >> /w/order"], volumeMounts=work),
                        container("two", ["sh", "-c", "echo 2 >> /w/order"], volumeMounts=work)]))
    p = wait_pod(http, ns, "ordered", lambda p: phase(p) == "Succeeded", "succeeded")
    assert pod_log(http, ns, "ordered", container="main") == "1\n2\n"
    assert [(cstatus(p, n, init=True)["state"]["terminated"]["reason"], cstatus(p, n, init=True)["ready"])
            for n in ("one", "two")] == [("Completed", True), ("Completed", True)]
    assert condition(p, "Initialized")["status"] == "True"
    assert (condition(p, "Ready")["status"], condition(p, "Ready")["reason"]) == ("False", "PodCompleted")

    create(http, ns, make_pod("fails", node, container("c", ["sh", "-c", "exit 3"]), restartPolicy="Never"))
    p = wait_pod(http, ns, "fails", lambda p: phase(p) == "Failed", "failed")
    assert (cstatus(p, "c")["state"]["terminated"]["exitCode"], cstatus(p, "c")["restartCount"]) == (3, 0)

    create(http, ns, make_pod("blocked", node, container("c", SLEEP), restartPolicy="Never",
                              initContainers=[container("init", ["false"])]))
    p = wait_pod(http, ns, "blocked", lambda p: phase(p) == "Failed", "failed")
    assert cstatus(p, "c")["state"] == {"waiting": {"reason": "PodInitializing"}}

    create(http, ns, make_pod("retried", node, container("c", SLEEP), restartPolicy="OnFailure",
                              initContainers=[container("init", ["false"])]))
    p = wait_pod(http, ns, "retried", lambda p: cstatus(p, "init", init=True).get("state", {}).get(
        "waiting", {}).get("reason") == "CrashLoopBackOff", "init in back-off")
    assert phase(p) == "Pending" and cstatus(p, "init", init=True)["restartCount"] == 1
    assert condition(p, "Initialized")["reason"] == "ContainersNotInitialized"

    create(http, ns, make_pod("done", node, container("c", ["true"]), restartPolicy="OnFailure"))
    wait_pod(http, ns, "done", lambda p: phase(p) == "Succeeded", "succeeded")


@pytest.mark.kubectl
def test_kubectl_logs_and_exec(node, api, http, ns, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    api.write_kubeconfig(kubeconfig, namespace=ns)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    base = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache")]

    def kubectl(*args, input=None):
        return subprocess.run([*base, *args], input=input, capture_output=True, text=True, env=env, timeout=60)

    create(http, ns, make_pod("talker", node, container(
        "c", ["sh", "-c", "echo one; echo two; echo three; while [ ! -e /tmp/stop ]; do sleep 0.05; done; "
                          "echo bye; exit 1"]), container("side", SLEEP)))
    wait_pod(http, ns, "talker", running("c"), "running")
    wait_for(lambda: kubectl("logs", "talker", "-c", "c").stdout == "one\ntwo\nthree\n", what="the log")
    r = kubectl("logs", "talker", "-c", "c", "--tail=1", "--timestamps")
    assert r.returncode == 0 and r.stdout.endswith(" three\n") and r.stdout[:4].isdigit(), r
    assert kubectl("logs", "talker", "-c", "c", "--since=1h").stdout == "one\ntwo\nthree\n"
    r = kubectl("logs", "talker", "-c", "c", "--previous")
    assert r.returncode != 0 and 'previous terminated container "c" in pod "talker" not found' in r.stderr

    follower = subprocess.Popen([*base, "logs", "-f", "talker", "-c", "c"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert [follower.stdout.readline() for _ in range(3)] == ["one\n", "two\n", "three\n"]
        r = kubectl("exec", "talker", "-c", "c", "--", "touch", "/tmp/stop")
        assert r.returncode == 0, r.stderr
        assert follower.stdout.read() == "bye\n"  # the stream ends with the container
        assert follower.wait(30) == 0
    finally:
        follower.kill()
        follower.wait()
    wait_pod(http, ns, "talker", lambda p: cstatus(p, "c").get("restartCount") == 1 and running("c")(p),
             "restarted")
    assert kubectl("logs", "talker", "-c", "c", "--previous").stdout == "one\ntwo\nthree\nbye\n"
    wait_for(lambda: kubectl("logs", "talker", "-c", "c").stdout == "one\ntwo\nthree\n", what="the new run's log")

    r = kubectl("exec", "talker", "-c", "c", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout) == (3, "out\n")
    assert "err\n" in r.stderr and "command terminated with exit code 3" in r.stderr
    r = kubectl("exec", "-i", "talker", "-c", "side", "--", "sh", "-c", "cat; hostname", input="from stdin\n")
    assert (r.returncode, r.stdout) == (0, "from stdin\ntalker\n"), r.stderr
    r = kubectl("exec", "talker", "-c", "side", "--", "no-such-command")
    assert r.returncode == 127


def test_deleting_a_pod_stops_it_gracefully_and_leaves_nothing_behind(node, http, ns, tmp_path):
    create(http, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}})
    create(http, ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}})
    mounts = [{"name": n, "mountPath": f"/v/{n}"} for n in ("mem", "disk", "sec", "cm")]
    create(http, ns, make_pod(
        "doomed", node,
        container("polite", ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"], volumeMounts=mounts),
        container("stubborn", ["sh", "-c", "sleep infinity & exec sleep infinity"], volumeMounts=mounts[:1]),
        terminationGracePeriodSeconds=2,
        volumes=[{"name": "mem", "emptyDir": {"medium": "Memory"}}, {"name": "disk", "emptyDir": {}},
                 {"name": "sec", "secret": {"secretName": "s"}}, {"name": "cm", "configMap": {"name": "c"}}]))
    p = wait_pod(http, ns, "doomed", lambda p: running("polite")(p) and running("stubborn")(p), "running")
    uid, ip = p["metadata"]["uid"], p["status"]["podIP"]
    rt = node.runtime()
    pod_dir = os.path.join(rt.pods_dir, uid)
    procs = [(pid, kernel.start_time(pid)) for pid in rt.cgroups.cgroup(f"pod{uid}").pids()]
    assert len(procs) >= 4  # the sandbox, two containers, the stubborn one's child (and monitors elsewhere)
    assert [m for m in kernel.mountpoints() if uid in m]
    with IPRoute() as ipr:
        assert ipr.link_lookup(ifname=veth_name(uid))

    r = http.delete(f"/api/v1/namespaces/{ns}/pods/doomed")
    assert r.status_code == 200
    wait_for(lambda: http.get(f"/api/v1/namespaces/{ns}/pods/doomed").status_code == 404, timeout=30,
             what="the kubelet to confirm the deletion")

    def nothing_left():
        with IPRoute() as ipr:
            veth = ipr.link_lookup(ifname=veth_name(uid))
        return (not [p for p, started in procs if kernel.alive(p, started)]
                and not [m for m in kernel.mountpoints() if uid in m]
                and not [d for d in rt.cgroups.cgroup(f"pod{uid}").dirs if os.path.exists(d)]
                and not veth and ip not in rt.network.allocations() and not os.path.exists(pod_dir))
    wait_for(nothing_left, what="everything of the pod to be gone")
    reasons = [(e["reason"], e["message"]) for e in events(http, ns)]
    assert ("Killing", "Stopping container polite") in reasons


def test_a_killed_kubelet_comes_back_and_adopts_its_pods(own_node, api, http, ns):
    node = own_node.start()
    marker = f"adopt-{uuid.uuid4().hex}"
    create(http, ns, make_pod("survivor", node, container("c", ["python3", "-c", "import time; time.sleep(10000)",
                                                                marker])))
    create(http, ns, make_pod("forgotten", node, container("c", SLEEP)))
    p = wait_pod(http, ns, "survivor", running("c"), "running")
    f = wait_pod(http, ns, "forgotten", running("c"), "running")
    (pid,) = wait_for(lambda: host_processes(marker), what="the container process")
    cid = cstatus(p, "c")["containerID"]
    rt = node.runtime()
    forgotten_procs = [(q, kernel.start_time(q)) for q in rt.cgroups.cgroup(f"pod{f['metadata']['uid']}").pids()]

    node.kill()
    # While the kubelet is away: a pod is force-deleted (nobody stops its processes)...
    assert http.delete(f"/api/v1/namespaces/{ns}/pods/forgotten", params={"gracePeriodSeconds": 0}).status_code == 200
    # ... and a crash leaves a stray cgroup behind.
    stray = rt.cgroups.cgroup(f"pod{uuid.uuid4()}")
    stray.create()
    node.start()

    p = wait_pod(http, ns, "survivor", lambda p: cstatus(p, "c").get("containerID") == cid, "still running")
    assert cstatus(p, "c")["restartCount"] == 0 and running("c")(p)
    assert host_processes(marker) == [pid]  # adopted, not started again
    assert api_exec(api, ns, "survivor", ["echo", "adopted"])[1] == b"adopted\n"
    wait_for(lambda: not [q for q, started in forgotten_procs if kernel.alive(q, started)]
             and not os.path.exists(os.path.join(rt.pods_dir, f["metadata"]["uid"])),
             what="the force-deleted pod to be swept")
    assert not [d for d in stray.dirs if os.path.exists(d)]
    assert len(host_processes(marker)) == 1


def _minik8s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_cleanup_removes_what_a_stopped_kubelet_left_and_nothing_else(own_node, http, ns):
    node = own_node.start()
    marker = f"cleanup-{uuid.uuid4().hex}"
    create(http, ns, make_pod("left", node, container("c", ["python3", "-c", "import time; time.sleep(10000)",
                                                            marker], volumeMounts=[{"name": "m", "mountPath": "/m"}]),
                              volumes=[{"name": "m", "emptyDir": {"medium": "Memory"}}]))
    uid = wait_pod(http, ns, "left", running("c"), "running")["metadata"]["uid"]
    rt = node.runtime()
    # Someone else's things, named like ours, that the clean-up must leave alone.
    tag = uuid.uuid4().hex[:8]
    decoy_bridge, decoy_cgroup = f"mk8sd{tag}", Cgroup(Hierarchies(f"minik8s-decoy-{tag}").dirs, v2=rt.cgroups.v2)
    with IPRoute() as ipr:
        ipr.link("add", ifname=decoy_bridge, kind="bridge")
    decoy_cgroup.create()
    try:
        node.proc.stop()  # SIGTERM: the kubelet goes, its pod stays
        assert not node.proc.alive() and host_processes(marker)
        assert node.proc.proc.returncode == 0, node.proc.log()
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname=node.bridge)

        r = _minik8s(*node.args, "--cleanup")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"removed bridge {node.bridge}" in r.stdout
        net = ipaddress.ip_network(node.cidr)
        with IPRoute() as ipr:
            assert not ipr.link_lookup(ifname=node.bridge)
            assert not ipr.link_lookup(ifname=veth_name(uid))
            assert not [rt_ for rt_ in ipr.get_routes(family=socket.AF_INET)
                        if rt_.get_attr("RTA_DST") == str(net.network_address) and rt_["dst_len"] == net.prefixlen]
            assert ipr.link_lookup(ifname=decoy_bridge), "another bridge was removed"
        wait_for(lambda: not host_processes(marker), what="the pod's process to be gone")
        assert not [m for m in kernel.mountpoints() if m.startswith(node.root)]
        assert not [d for d in rt.cgroups.dirs if os.path.exists(d)]
        assert not os.path.exists(rt.pods_dir) and os.path.isdir(node.root)
        assert all(os.path.isdir(d) for d in decoy_cgroup.dirs), "another cgroup was removed"

        again = _minik8s(*node.args, "--cleanup")
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.strip() == "nothing to clean up"
        assert "--cleanup" in _minik8s("kubelet", "--help").stdout
    finally:
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=decoy_bridge):
                ipr.link("del", index=idx)
        decoy_cgroup.remove()


def test_kubectl_lite_logs_and_exec(node, api, http, ns, tmp_path):
    """kubectl-lite's logs and exec against a real kubelet, through the API server."""
    script = os.path.join(os.path.dirname(sys.executable), "kubectl-lite")
    kubeconfig = tmp_path / "kubeconfig"
    api.write_kubeconfig(kubeconfig, namespace=ns)
    env = {**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, "KUBECONFIG": str(kubeconfig)}

    def lite(*args, input=None):
        return subprocess.run([script, *args], input=input, capture_output=True, text=True, env=env, timeout=60)

    create(http, ns, make_pod("lite", node, container(
        "c", ["sh", "-c", "echo one; echo two; while [ ! -e /tmp/stop ]; do sleep 0.05; done; echo bye"]),
        container("side", SLEEP), restartPolicy="Never"))
    wait_pod(http, ns, "lite", running("c"), "running")
    wait_for(lambda: lite("logs", "lite", "-c", "c").stdout == "one\ntwo\n", what="the log")
    assert lite("logs", "lite", "-c", "c", "--tail=1").stdout == "two\n"
    follower = subprocess.Popen([script, "logs", "-f", "lite", "-c", "c"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert [follower.stdout.readline() for _ in range(2)] == ["one\n", "two\n"]
        r = lite("exec", "lite", "-c", "c", "--", "touch", "/tmp/stop")
        assert r.returncode == 0, r.stderr
        assert follower.stdout.read() == "bye\n"  # the stream ends with the container
    finally:
        follower.kill()
        follower.wait()
    r = lite("exec", "lite", "-c", "side", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout) == (3, "out\n") and "err" in r.stderr
    r = lite("exec", "-i", "lite", "-c", "side", "--", "sh", "-c", "cat; hostname", input="from stdin\n")
    assert (r.returncode, r.stdout) == (0, "from stdin\nlite\n"), r.stderr
