"""kubectl-lite's other verbs as subprocesses against the real API server: describe,
delete, create/replace, patch/label/annotate, scale, edit, rollout, logs, exec (its
error paths through the server, and the channel protocol against a small WebSocket
server), cordon/uncordon/drain, config, api-resources, version, explain.

No controllers run here: where a verb waits on one (rollout status, undo), the test
plays the controller's part through the API (status writes, owned ReplicaSets).
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import sys
import threading
import urllib.parse
import uuid

import pytest
import yaml

from tests.test_kubectl_lite import (KubectlLite, absent, create, deployment, get, kl, pod,  # noqa: F401
                                     rows, write, write_kubeconfig)


@pytest.fixture
def node(http):
    name = "node-" + uuid.uuid4().hex[:8]
    r = http.post("/api/v1/nodes", json={
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                   "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                   "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                   "addresses": [{"type": "InternalIP", "address": "10.9.8.7"}]}})
    assert r.status_code == 201, r.text
    yield name
    http.delete(f"/api/v1/nodes/{name}")


def merge(http, path: str, body: dict) -> dict:
    r = http.patch(path, json=body, headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    return r.json()


# -- describe ----------------------------------------------------------------------------

def test_describe_pod_with_events_deployment_node_and_any_kind(kl, http, ns, node, tmp_path):
    p = create(http, ns, pod("p", labels={"app": "x", "tier": "a"}, node=node))
    create(http, ns, {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.1"},
                      "involvedObject": {"kind": "Pod", "name": "p", "namespace": ns,
                                         "uid": p["metadata"]["uid"]},
                      "reason": "Scheduled", "message": f"Successfully assigned {ns}/p to {node}",
                      "type": "Normal", "source": {"component": "default-scheduler"}, "count": 1})
    out = kl.out("describe", "pod", "p")
    assert out.startswith(f"Name:             p\nNamespace:        {ns}\n")
    assert "Labels:           app=x\n                  tier=a\n" in out
    assert f"Node:             {node}\n" in out
    events = out[out.index("Events:"):].splitlines()
    assert events[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert events[3].split()[:2] == ["Normal", "Scheduled"] and "default-scheduler" in events[3]
    kl("apply", "-f", write(tmp_path, "d.yaml", deployment()))
    out = kl.out("describe", "deploy/web")
    assert "Replicas:               3 desired | 0 updated | 0 total | 0 available | 0 unavailable" in out
    assert "Pod Template:\n  Labels:  app=web\n  Containers:\n   web:\n" in out
    out = kl.out("describe", "node", node)
    assert f"Name:               {node}" in out and "Non-terminated Pods:          (1 in total)" in out
    kl("apply", "-f", write(tmp_path, "lease.yaml", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}))
    out = kl.out("describe", "lease", "l")  # the generic describer
    assert "API Version:  coordination.k8s.io/v1\nKind:         Lease\n" in out
    assert "Spec:\n  Holder Identity:         me\n  Lease Duration Seconds:  15\n" in out
    assert kl.err("describe", "pod", "nope") == 'Error from server (NotFound): pods "nope" not found\n'


# -- delete ------------------------------------------------------------------------------

def test_delete_by_name_selector_all_and_file_waiting_for_graceful_deletion(kl, http, ns, node, tmp_path):
    for name, labels in (("a", {"app": "x"}), ("b", {"app": "y"}), ("c", {})):
        create(http, ns, pod(name, labels=labels))
    assert kl.out("delete", "pod", "a") == 'pod "a" deleted\n'
    assert kl.out("delete", "pods", "-l", "app") == 'pod "b" deleted\n'
    assert kl.out("delete", "pods", "--all") == 'pod "c" deleted\n'
    assert kl.err("delete", "pod", "a") == 'Error from server (NotFound): pods "a" not found\n'
    assert kl("delete", "pod", "a", "--ignore-not-found").stdout == ""
    assert "resource(s) were provided, but no name was specified" in kl.err("delete", "pods")
    f = write(tmp_path, "cm.yaml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}})
    kl("apply", "-f", f)
    assert kl.out("delete", "-f", f) == 'configmap "cm" deleted\n'
    # a pod on a node ends only when its kubelet confirms: none runs here, so waiting
    # times out, --wait=false returns at once, and --force --grace-period=0 removes it
    create(http, ns, pod("bound", node=node))
    r = kl("delete", "pod", "bound", "--timeout=1s", ok=False)
    assert r.stdout == 'pod "bound" deleted\n'
    assert "error: timed out waiting for the condition on pods/bound" in r.stderr
    live = get(http, f"/api/v1/namespaces/{ns}/pods/bound")
    assert live["metadata"]["deletionTimestamp"] and live["metadata"]["deletionGracePeriodSeconds"] == 30
    r = kl("delete", "pod", "bound", "--grace-period=0", "--force")
    assert r.stdout == 'pod "bound" force deleted\n' and "Immediate deletion" in r.stderr
    assert absent(http, f"/api/v1/namespaces/{ns}/pods/bound")
    # the propagation policy reaches the server (recorded as a finalizer there)
    kl("apply", "-f", write(tmp_path, "three.yaml", *(deployment(n) for n in ("keep", "fore", "back"))))
    assert kl.out("delete", "deploy", "keep", "--cascade=orphan", "--wait=false") == \
        'deployment.apps "keep" deleted\n'
    kl("delete", "deploy", "fore", "--cascade=foreground", "--wait=false")
    assert get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/keep")["metadata"]["finalizers"] == ["orphan"]
    assert get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/fore")["metadata"]["finalizers"] == \
        ["foregroundDeletion"]
    kl("delete", "deployment/back")
    assert absent(http, f"/apis/apps/v1/namespaces/{ns}/deployments/back")
    assert 'invalid --cascade value "sideways"' in kl.err("delete", "deploy", "x", "--cascade=sideways")


# -- create, replace, patch, label, annotate, scale, edit --------------------------------

def test_create_replace_patch_label_and_annotate(kl, http, ns, tmp_path):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1"}}
    f = write(tmp_path, "c.yaml", cm)
    assert kl.out("create", "-f", f) == "configmap/c created\n"
    assert kl.err("create", "-f", f) == (f'Error from server (AlreadyExists): error when creating '
                                        f'"{f}": configmaps "c" already exists\n')
    f = write(tmp_path, "c.yaml", {**cm, "data": {"k": "2"}})
    assert kl.out("replace", "-f", f) == "configmap/c replaced\n"
    assert get(http, f"/api/v1/namespaces/{ns}/configmaps/c")["data"] == {"k": "2"}
    other = ns + "-made"
    assert kl.out("create", "namespace", other) == f"namespace/{other} created\n"
    http.delete(f"/api/v1/namespaces/{other}")

    kl("apply", "-f", write(tmp_path, "d.yaml", deployment()))
    assert kl.out("patch", "deploy", "web", "-p", '{"spec":{"replicas":2}}') == "deployment.apps/web patched\n"
    assert kl.out("patch", "deploy/web", "-p", "spec: {replicas: 2}") == \
        "deployment.apps/web patched (no change)\n"
    kl("patch", "deploy", "web", "-p",  # strategic: containers merge by name, env is added
       '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"X","value":"1"}]}]}}}}')
    c = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["spec"]["template"]["spec"]["containers"][0]
    assert c["env"] == [{"name": "X", "value": "1"}] and c["image"] == "python:3"
    kl("patch", "deploy", "web", "--type", "merge", "-p", '{"metadata":{"labels":{"m":"1"}}}')
    kl("patch", "deploy", "web", "--type", "json", "-p", '[{"op":"replace","path":"/spec/replicas","value":5}]')
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert d["metadata"]["labels"]["m"] == "1" and d["spec"]["replicas"] == 5
    assert kl.err("patch", "deploy", "web", "--type", "merge", "-p", '{"spec":{"replicas":"x"}}').startswith(
        'The Deployment "web" is invalid: spec.replicas: Invalid value: "x"')
    assert "must specify --patch or --patch-file" in kl.err("patch", "deploy", "web")

    assert kl.out("label", "deploy", "web", "team=a", "tier=web") == "deployment.apps/web labeled\n"
    assert kl.err("label", "deploy", "web", "team=b") == \
        "error: 'team' already has a value (a), and --overwrite is false\n"
    assert kl.out("label", "deploy", "web", "team=b", "--overwrite") == "deployment.apps/web labeled\n"
    assert kl.out("label", "deploy", "web", "tier-", "gone-") == \
        'label "gone" not found.\ndeployment.apps/web unlabeled\n'
    assert kl.out("label", "deploy", "web", "team=b") == "deployment.apps/web not labeled\n"
    assert "invalid label value" in kl.err("label", "deploy", "web", "x=not valid")
    assert get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["metadata"]["labels"] == {
        "app": "web", "m": "1", "team": "b"}
    assert kl.out("annotate", "deploy", "web", "note=hello world") == "deployment.apps/web annotated\n"
    assert "'note' already has a value (hello world)" in kl.err("annotate", "deploy", "web", "note=x")
    kl("annotate", "deploy", "web", "note-")
    assert "note" not in get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["metadata"]["annotations"]


def test_scale_with_precondition_and_edit_with_an_editor(kl, http, ns, tmp_path):
    kl("apply", "-f", write(tmp_path, "d.yaml", deployment()))
    assert kl.out("scale", "deploy", "web", "--replicas=5") == "deployment.apps/web scaled\n"
    assert kl.err("scale", "deploy/web", "--replicas=1", "--current-replicas=2") == \
        "error: Expected replicas to be 2, was 5\n"
    assert kl.out("scale", "deploy/web", "--replicas=1", "--current-replicas=5") == "deployment.apps/web scaled\n"
    assert get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["spec"]["replicas"] == 1
    assert 'required flag(s) "replicas" not set' in kl.err("scale", "deploy/web")

    editor = tmp_path / "editor.py"
    editor.write_text("import sys, re\np = sys.argv[1]\ns = open(p).read()\n"
                      "s = re.sub(r'replicas: 1', 'replicas: 4', s, count=1)\n"
                      "s = s.replace('image: python:3', 'image: python:3.12')\nopen(p, 'w').write(s)\n")
    r = kl("edit", "deployment", "web", env={"EDITOR": f"{sys.executable} {editor}"})
    assert r.stdout == "deployment.apps/web edited\n"
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert d["spec"]["replicas"] == 4
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "python:3.12"
    assert kl.out("edit", "deploy/web", env={"KUBE_EDITOR": "true"}) == "Edit cancelled, no changes made.\n"
    editor.write_text("import sys\np = sys.argv[1]\ns = open(p).read()\n"
                      "open(p, 'w').write(s.replace('replicas: 4', 'replicas: 4\\n  replicaz: 1', 1))\n")
    r = kl("edit", "deploy", "web", env={"EDITOR": f"{sys.executable} {editor}"}, ok=False)
    assert 'unknown field "spec.replicaz"' in r.stderr and "A copy of your changes" in r.stderr


# -- rollout -----------------------------------------------------------------------------

def test_rollout_status_follows_the_deployment_until_it_is_rolled_out(kl, http, ns, tmp_path):
    kl("apply", "-f", write(tmp_path, "d.yaml", deployment(), deployment("stuck")))
    r = kl("rollout", "status", "deploy/stuck", "--timeout=1s", ok=False)
    assert r.stdout == "Waiting for deployment spec update to be observed...\n"
    assert r.stderr == "error: timed out waiting for the condition\n"
    assert kl.out("rollout", "status", "deploy/stuck", "--watch=false") == \
        "Waiting for deployment spec update to be observed...\n"
    proc = kl.popen("rollout", "status", "deployment/web", "--timeout=60s")
    try:
        assert proc.stdout.readline() == "Waiting for deployment spec update to be observed...\n"
        status = f"/apis/apps/v1/namespaces/{ns}/deployments/web/status"
        steps = [({"replicas": 3, "updatedReplicas": 1}, "1 out of 3 new replicas have been updated..."),
                 ({"replicas": 4, "updatedReplicas": 3}, "1 old replicas are pending termination..."),
                 ({"replicas": 3, "updatedReplicas": 3, "availableReplicas": 1},
                  "1 of 3 updated replicas are available...")]
        for st, message in steps:
            merge(http, status, {"status": {"observedGeneration": 1, **st}})
            assert proc.stdout.readline() == f'Waiting for deployment "web" rollout to finish: {message}\n'
        merge(http, status, {"status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                                        "availableReplicas": 3, "readyReplicas": 3}})
        assert proc.stdout.readline() == 'deployment "web" successfully rolled out\n'
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_rollout_history_undo_restart_pause_resume(kl, http, ns, tmp_path):
    kl("apply", "-f", write(tmp_path, "d.yaml", deployment(image="python:3.12")))
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert kl.out("rollout", "history", "deploy/web") == "deployment.apps/web \nNo rollout history found.\n"
    assert kl.err("rollout", "undo", "deploy/web") == 'error: no rollout history found for deployment "web"\n'
    # the deployment controller's part: one ReplicaSet per template, numbered by revision
    for rev, image in ((1, "python:3.11"), (2, "python:3.12")):
        template = json.loads(json.dumps(d["spec"]["template"]))
        template["metadata"]["labels"]["pod-template-hash"] = f"h{rev}"
        template["spec"]["containers"][0]["image"] = image
        create(http, ns, {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
            "name": f"web-h{rev}", "labels": template["metadata"]["labels"],
            "annotations": {"deployment.kubernetes.io/revision": str(rev),
                            **({"kubernetes.io/change-cause": "bump"} if rev == 2 else {})},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                 "uid": d["metadata"]["uid"], "controller": True}]},
            "spec": {"replicas": 0, "selector": {"matchLabels": template["metadata"]["labels"]},
                     "template": template}})
    assert kl.out("rollout", "history", "deployment", "web") == (
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         <none>\n2         bump\n\n")
    out = kl.out("rollout", "history", "deploy/web", "--revision=1")
    assert out.startswith("deployment.apps/web with revision #1\nPod Template:\n") and "python:3.11" in out
    assert kl.out("rollout", "undo", "deploy/web") == "deployment.apps/web rolled back\n"
    tpl = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["spec"]["template"]
    assert tpl["spec"]["containers"][0]["image"] == "python:3.11"
    assert tpl["metadata"]["labels"] == {"app": "web"}  # no pod-template-hash
    assert kl.out("rollout", "undo", "deploy/web", "--to-revision=1") == \
        "deployment.apps/web skipped rollback (current template already matches revision 1)\n"
    assert kl.err("rollout", "undo", "deploy/web", "--to-revision=9") == \
        "error: unable to find specified revision 9 in history\n"
    assert kl.out("rollout", "restart", "deploy/web") == "deployment.apps/web restarted\n"
    tpl = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in tpl["metadata"]["annotations"]
    assert kl.out("rollout", "pause", "deploy/web") == "deployment.apps/web paused\n"
    assert get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["spec"]["paused"] is True
    assert kl.err("rollout", "pause", "deploy/web") == 'error: deployments.apps "web" is already paused\n'
    assert "can't restart paused deployment" in kl.err("rollout", "restart", "deploy/web")
    assert "you cannot rollback a paused deployment" in kl.err("rollout", "undo", "deploy/web")
    assert kl.out("rollout", "resume", "deploy/web") == "deployment.apps/web resumed\n"
    assert kl.err("rollout", "resume", "deploy/web") == 'error: deployments.apps "web" is not paused\n'


# -- logs and exec -----------------------------------------------------------------------

def test_logs_and_exec_report_the_servers_answers(kl, http, ns, node):
    create(http, ns, pod("waiting", labels={"app": "l"}))
    create(http, ns, {**pod("two", node=node), "spec": {
        "nodeName": node, "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}})
    assert kl("logs", "waiting").stdout == ""  # nothing ran yet: an empty log
    assert kl("logs", "-f", "pod/waiting", "--tail=5").stdout == ""
    assert kl("logs", "-l", "app=l", "--prefix").stdout == ""
    r = kl("logs", "two", ok=False)
    assert r.stderr == ('Defaulted container "a" out of: a, b\n'
                        f'Error from server (BadRequest): no kubelet is connected to serve pods on node "{node}"\n')
    assert kl.err("logs", "two", "-c", "zz") == \
        "Error from server (BadRequest): container zz is not valid for pod two\n"
    assert kl.err("logs", "nope") == 'Error from server (NotFound): pods "nope" not found\n'
    r = kl("exec", "two", "-c", "b", "--", "ls", "/", ok=False)
    assert r.stderr == f'Error from server (BadRequest): no kubelet is connected to serve pods on node "{node}"\n'
    assert kl.err("exec", "waiting", "--", "ls") == \
        "Error from server (BadRequest): pod waiting does not have a host assigned\n"
    assert kl.err("exec", "nope", "--", "ls") == 'Error from server (NotFound): pods "nope" not found\n'
    assert "you must specify at least one command" in kl.err("exec", "two")


class ExecServer:
    """Just enough of an API server for `exec`: GET of a pod, and the exec WebSocket.

    The exec side speaks v5.channel.k8s.io: it reads stdin (channel 0) until the v5
    close signal (255, 0), answers the upper-cased input on stdout (1), a line on
    stderr (2), then a Status on the error channel (3): exit code 3 for `fail`,
    success otherwise."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[dict] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        f = conn.makefile("rb")
        request_line = f.readline().decode().split()
        headers = {}
        while (line := f.readline().decode().strip()):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        url = urllib.parse.urlsplit(request_line[1])
        query = urllib.parse.parse_qs(url.query)
        if headers.get("upgrade", "").lower() != "websocket":
            body = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "p", "namespace": url.path.split("/")[4]},
                "spec": {"containers": [{"name": "main"}, {"name": "side"}]},
                "status": {"phase": "Running"}}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            conn.close()
            return
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        self.requests.append({"path": url.path, "query": query, "protocols": offered})
        accept = base64.b64encode(hashlib.sha1(
            (headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n")
        stdin = b""
        if query.get("stdin") == ["true"]:
            while True:
                frame = self._read_frame(f)
                if frame == b"\xff\x00":
                    break
                assert frame[0] == 0, frame
                stdin += frame[1:]

        def send(data: bytes):
            n = len(data)
            head = bytes([0x82, n]) if n < 126 else bytes([0x82, 126]) + n.to_bytes(2, "big")
            conn.sendall(head + data)
        send(b"\x01" + stdin.upper())
        send(b"\x02" + b"from stderr\n")
        if query["command"][0] == "fail":
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": "command terminated with non-zero exit code", "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
        else:
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        send(b"\x03" + json.dumps(status).encode())
        conn.sendall(b"\x88\x02\x03\xe8")  # close, 1000
        conn.close()

    @staticmethod
    def _read_frame(f) -> bytes:
        b0, b1 = f.read(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(f.read(2), "big")
        elif n == 127:
            n = int.from_bytes(f.read(8), "big")
        assert b1 & 0x80, "client frames must be masked"
        key = f.read(4)
        data = f.read(n)
        return bytes(b ^ key[i % 4] for i, b in enumerate(data))

    def close(self):
        self.sock.close()


def test_exec_speaks_the_channel_protocol(tmp_path):
    server = ExecServer()
    try:
        k = KubectlLite(write_kubeconfig(tmp_path / "kc", server.url, "demo", token="s3cret"),
                        str(tmp_path), "demo")
        r = k("exec", "-i", "p", "--", "fail", "--now", input="hello\n", ok=False)
        assert r.returncode == 3
        assert r.stdout == "HELLO\n"
        assert r.stderr == ('Defaulted container "main" out of: main, side\n'
                            "from stderr\ncommand terminated with exit code 3\n")
        req = server.requests[0]
        assert req["path"] == "/api/v1/namespaces/demo/pods/p/exec"
        assert req["query"]["command"] == ["fail", "--now"] and req["query"]["container"] == ["main"]
        assert req["query"]["stdin"] == ["true"] and req["query"]["stderr"] == ["true"]
        assert req["protocols"][0] == "v5.channel.k8s.io"
        r = k("exec", "p", "-c", "side", "--", "true")
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "from stderr\n"
        assert server.requests[1]["query"]["container"] == ["side"]
        assert "stdin" not in server.requests[1]["query"]
    finally:
        server.close()


# -- nodes -------------------------------------------------------------------------------

def test_cordon_uncordon_and_drain(kl, http, ns, node):
    assert kl.out("cordon", node) == f"node/{node} cordoned\n"
    assert kl.out("cordon", node) == f"node/{node} already cordoned\n"
    assert get(http, f"/api/v1/nodes/{node}")["spec"]["unschedulable"] is True
    assert kl.out("uncordon", node) == f"node/{node} uncordoned\n"
    assert kl.out("uncordon", node) == f"node/{node} already uncordoned\n"

    def owned(kind):
        return [{"apiVersion": "apps/v1", "kind": kind, "name": "x", "uid": str(uuid.uuid4()),
                 "controller": True}]
    for name, owners in (("managed", owned("ReplicaSet")), ("loner", None), ("daemon", owned("DaemonSet"))):
        p = pod(name, node=node)
        if owners:
            p["metadata"]["ownerReferences"] = owners
        create(http, ns, p)
    r = kl("drain", node, ok=False)
    assert r.stdout == f"node/{node} cordoned\n"
    assert (f"cannot delete Pods that declare no controller (use --force to override): {ns}/loner"
            in r.stderr)
    assert f"cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {ns}/daemon" in r.stderr
    assert "There are pending nodes to be drained:" in r.stderr
    assert not absent(http, f"/api/v1/namespaces/{ns}/pods/loner")
    # evictions honour the pods' grace period: without a kubelet they stay terminating
    r = kl("drain", node, "--force", "--ignore-daemonsets", "--timeout=2s", ok=False)
    assert f"evicting pod {ns}/managed\n" in r.stdout and f"evicting pod {ns}/loner\n" in r.stdout
    assert f"Warning: ignoring DaemonSet-managed Pods: {ns}/daemon" in r.stderr
    assert "global timeout reached: 2s" in r.stderr
    assert get(http, f"/api/v1/namespaces/{ns}/pods/managed")["metadata"]["deletionTimestamp"]
    r = kl("drain", node, "--force", "--ignore-daemonsets", "--grace-period=0")
    lines = r.stdout.splitlines()
    assert lines[0] == f"node/{node} already cordoned" and lines[-1] == f"node/{node} drained"
    assert {"pod/managed evicted", "pod/loner evicted"} <= set(lines)
    assert absent(http, f"/api/v1/namespaces/{ns}/pods/managed")
    assert not absent(http, f"/api/v1/namespaces/{ns}/pods/daemon")


# -- config, api-resources, version, explain ---------------------------------------------

def test_config_commands(tmp_path, apiserver):
    path = write_kubeconfig(tmp_path / "config", apiserver, "default", token="s3cret")
    k = KubectlLite(path, str(tmp_path), "default")
    view = yaml.safe_load(k.out("config", "view"))
    files = {f: f"{apiserver.pki_dir}/admin.{ext}" for f, ext in (("client-certificate", "crt"), ("client-key", "key"))}
    assert view["users"] == [{"name": "me", "user": {"token": "REDACTED", **files}}]  # file paths are shown
    assert yaml.safe_load(k.out("config", "view", "--raw"))["users"][0]["user"]["token"] == "s3cret"
    assert k.out("config", "set-context", "other", "--cluster", "minik8s", "--user", "me",
                 "--namespace", "kube-system") == 'Context "other" created.\n'
    assert k.out("config", "use-context", "other") == 'Switched to context "other".\n'
    assert k.out("config", "current-context") == "other\n"
    assert rows(k.out("config", "get-contexts")) == [
        {"CURRENT": "*", "NAME": "other", "CLUSTER": "minik8s", "AUTHINFO": "me", "NAMESPACE": "kube-system"},
        {"CURRENT": "", "NAME": "test", "CLUSTER": "minik8s", "AUTHINFO": "me", "NAMESPACE": "default"}]
    assert k.out("config", "set-context", "--current", "--namespace", "default") == 'Context "other" modified.\n'
    assert k.err("config", "use-context", "nope") == 'error: no context exists with the name: "nope"\n'
    assert (tmp_path / "config").stat().st_mode & 0o777 == 0o600
    k("get", "pods")  # the rewritten file still works


def test_api_resources_version_and_explain(kl):
    table = {r["NAME"]: r for r in rows(kl.out("api-resources"))}
    assert table["deployments"] == {"NAME": "deployments", "SHORTNAMES": "deploy", "APIVERSION": "apps/v1",
                                    "NAMESPACED": "true", "KIND": "Deployment"}
    assert "namespaces" in kl.out("api-resources", "--namespaced=false", "-o", "name").split()
    assert kl.out("version").splitlines()[1] == "Server Version: v1.32.0-minik8s"
    out = kl.out("explain", "deployments.spec.replicas")
    assert out.startswith("GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\n"
                          "FIELD: replicas <integer>\n")
    out = kl.out("explain", "pod.spec.containers")
    assert "FIELD: containers <[]Container>" in out and "  image\t<string>" in out
    assert kl.err("explain", "pod.spec.nope") == 'error: field "nope" does not exist\n'
