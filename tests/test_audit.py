"""The audit log (--audit-log-path), against a real API server over TLS with client
certificates, so each event's user is the one authentication found."""
from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
import uuid

import httpx
import orjson
import pytest

from apiserver import audit
from cluster import pki
from tests.procs import APIServer, Etcd, default_service_account, wait_for


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    pki.ensure(str(d), pki.ClusterFacts())
    return str(d)


@pytest.fixture(scope="module")
def etcd():
    e = Etcd().start()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def server(etcd, pki_dir, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("audit") / "audit.log"
    s = APIServer(etcd.url, "--authorization-mode", "RBAC", "--enable-bootstrap-token-auth",
                  "--audit-log-path", str(log_path), pki_dir=pki_dir).start()
    s.audit_log = log_path
    yield s
    s.stop()


def admin(server) -> httpx.Client:
    """The admin's client certificate (kubernetes-admin in system:masters)."""
    ctx = ssl.create_default_context(cafile=server.ca_file)
    ctx.load_cert_chain(f"{server.pki_dir}/admin.crt", f"{server.pki_dir}/admin.key")
    return httpx.Client(base_url=server.url, verify=ctx, timeout=30,
                        headers={"user-agent": "audit-test/1.0"})


def events(path) -> list[dict]:
    try:
        with open(path, "rb") as f:
            return [orjson.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def event_for(path, audit_id: str) -> dict:
    found = wait_for(lambda: [e for e in events(path) if e["auditID"] == audit_id],
                     timeout=10, what=f"audit event {audit_id}")
    assert len(found) == 1
    return found[0]


def test_writes_are_logged_as_metadata_events_with_user_verb_object_and_code(server):
    ns = "audit-" + uuid.uuid4().hex[:6]
    with admin(server) as c:
        calls = [
            ("create", "namespaces", "", ns, c.post("/api/v1/namespaces", json={"metadata": {"name": ns}}), 201),
            ("create", "configmaps", ns, "", c.post(f"/api/v1/namespaces/{ns}/configmaps",
                                                    json={"metadata": {"name": "cm"}, "data": {"a": "1"}}), 201),
            ("update", "configmaps", ns, "cm", c.put(f"/api/v1/namespaces/{ns}/configmaps/cm",
                                                     json={"metadata": {"name": "cm"}, "data": {"a": "2"}}), 200),
            ("patch", "configmaps", ns, "cm", c.patch(
                f"/api/v1/namespaces/{ns}/configmaps/cm", content=b'{"data":{"a":"3"}}',
                headers={"content-type": "application/merge-patch+json"}), 200),
            ("create", "configmaps", ns, "", c.post(f"/api/v1/namespaces/{ns}/configmaps",
                                                    json={"metadata": {"name": "cm"}}), 409),
            ("delete", "configmaps", ns, "cm", c.delete(f"/api/v1/namespaces/{ns}/configmaps/cm"), 200),
            ("delete", "configmaps", ns, "cm", c.delete(f"/api/v1/namespaces/{ns}/configmaps/cm"), 404),
            ("deletecollection", "configmaps", ns, "", c.delete(f"/api/v1/namespaces/{ns}/configmaps"), 200),
        ]
        read = c.get(f"/api/v1/namespaces/{ns}/configmaps")
    for verb, resource, namespace, name, r, code in calls:
        assert r.status_code == code, r.text
        ev = event_for(server.audit_log, r.headers["audit-id"])
        assert ev["kind"] == "Event" and ev["apiVersion"] == "audit.k8s.io/v1"
        assert ev["level"] == "Metadata" and ev["stage"] == "ResponseComplete"
        assert ev["verb"] == verb
        assert ev["requestURI"] == r.request.url.raw_path.decode()
        want_ref = {"resource": resource, "apiVersion": "v1"}
        if namespace and resource != "namespaces":
            want_ref["namespace"] = namespace
        if name and resource != "namespaces":
            want_ref["name"] = name
        assert ev["objectRef"] == want_ref
        assert ev["responseStatus"]["code"] == code
        if code >= 400:
            assert ev["responseStatus"]["status"] == "Failure"
            assert ev["responseStatus"]["reason"] == r.json()["reason"]
            assert ev["responseStatus"]["message"] == r.json()["message"]
        assert ev["user"]["username"] == "kubernetes-admin"
        assert "system:masters" in ev["user"]["groups"]
        assert "system:authenticated" in ev["user"]["groups"]
        assert ev["sourceIPs"] == ["127.0.0.1"]
        assert ev["userAgent"] == "audit-test/1.0"
        assert ev["annotations"]["authorization.k8s.io/decision"] == "allow"
        received = datetime.datetime.fromisoformat(ev["requestReceivedTimestamp"])
        completed = datetime.datetime.fromisoformat(ev["stageTimestamp"])
        assert received <= completed
    # Reads are not audited without a policy that asks for them.
    assert not [e for e in events(server.audit_log) if e["auditID"] == read.headers["audit-id"]]


def test_a_refused_write_is_logged_with_the_anonymous_user_and_403(server):
    with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca_file),
                      timeout=30) as anon:
        r = anon.post("/api/v1/namespaces/default/secrets", json={"metadata": {"name": "x"}})
    assert r.status_code == 403
    ev = event_for(server.audit_log, r.headers["audit-id"])
    assert ev["verb"] == "create"
    assert ev["objectRef"] == {"resource": "secrets", "namespace": "default", "apiVersion": "v1"}
    assert ev["user"] == {"username": "system:anonymous", "groups": ["system:unauthenticated"]}
    assert ev["responseStatus"]["code"] == 403
    assert ev["responseStatus"]["reason"] == "Forbidden"
    assert ev["annotations"]["authorization.k8s.io/decision"] == "forbid"


def test_a_write_with_a_bad_token_is_logged_with_401_and_no_user(server):
    with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca_file),
                      timeout=30) as c:
        r = c.delete("/api/v1/namespaces/default/configmaps/x",
                     headers={"authorization": "Bearer abcdef.0123456789abcdef"})  # no such token
    assert r.status_code == 401
    ev = event_for(server.audit_log, r.headers["audit-id"])
    assert ev["user"] == {}
    assert ev["verb"] == "delete"
    assert ev["objectRef"] == {"resource": "configmaps", "namespace": "default", "name": "x", "apiVersion": "v1"}
    assert ev["responseStatus"]["code"] == 401 and ev["responseStatus"]["reason"] == "Unauthorized"


def test_an_exec_websocket_is_logged_as_a_create_of_pods_exec(server):
    from client.wsclient import connect
    ns = "audit-" + uuid.uuid4().hex[:6]
    with admin(server) as c:
        assert c.post("/api/v1/namespaces", json={"metadata": {"name": ns}}).status_code == 201
        default_service_account(c, ns)
        r = c.post(f"/api/v1/namespaces/{ns}/pods", json={"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "busybox"}]}})
        assert r.status_code == 201, r.text
    ctx = ssl.create_default_context(cafile=server.ca_file)
    ctx.load_cert_chain(f"{server.pki_dir}/admin.crt", f"{server.pki_dir}/admin.key")
    url = server.url.replace("https", "wss") + f"/api/v1/namespaces/{ns}/pods/p/exec?command=ls&stdout=true"
    with connect(url, ssl=ctx, subprotocols=["v5.channel.k8s.io"]) as ws:
        audit_id = ws.response.headers["audit-id"]
        status = ws.recv(timeout=10)  # the pod has no node: a failure Status on channel 3
        assert status[0] == 3
    ev = event_for(server.audit_log, audit_id)
    assert ev["verb"] == "create"
    assert ev["objectRef"] == {"resource": "pods", "namespace": ns, "name": "p", "subresource": "exec",
                               "apiVersion": "v1"}
    assert ev["responseStatus"]["code"] == 101
    assert ev["user"]["username"] == "kubernetes-admin"


def test_an_impersonated_write_names_both_users(server):
    with admin(server) as c:
        r = c.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"generateName": "i-"}},
                   headers={"impersonate-user": "jane", "impersonate-group": "devs"})
    assert r.status_code == 403, r.text  # jane has no role
    ev = event_for(server.audit_log, r.headers["audit-id"])
    assert ev["user"]["username"] == "kubernetes-admin"
    assert ev["impersonatedUser"]["username"] == "jane"
    assert "devs" in ev["impersonatedUser"]["groups"]
    assert ev["responseStatus"]["code"] == 403


def test_a_client_audit_id_is_kept(server):
    mine = str(uuid.uuid4())
    with admin(server) as c:
        r = c.post("/api/v1/namespaces", json={"metadata": {"name": "audit-" + uuid.uuid4().hex[:6]}},
                   headers={"audit-id": mine})
    assert r.headers["audit-id"] == mine
    assert event_for(server.audit_log, mine)["verb"] == "create"


POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  users: ["system:kube-scheduler"]
- level: Metadata
  resources: [{group: "", resources: ["secrets"]}]
- level: None
"""


def test_a_policy_file_chooses_what_is_logged_and_stdout_takes_the_events(etcd, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    s = APIServer(etcd.url, "--audit-log-path", "-", "--audit-policy-file", str(policy)).start()
    try:
        with s.client(timeout=30) as c:
            secret = c.post("/api/v1/namespaces/default/secrets",
                            json={"metadata": {"generateName": "a-"}})
            got = c.get(f"/api/v1/namespaces/default/secrets/{secret.json()['metadata']['name']}")
            cm = c.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"generateName": "a-"}})
        assert {secret.status_code, got.status_code, cm.status_code} == {200, 201}

        def stdout_events():
            return [orjson.loads(line) for line in s.log().splitlines() if line.startswith('{"kind":"Event"')]
        wait_for(lambda: len(stdout_events()) >= 2, timeout=10, what="two events on stdout")
        ids = {e["auditID"]: e["verb"] for e in stdout_events()}
        assert ids.get(secret.headers["audit-id"]) == "create"
        assert ids.get(got.headers["audit-id"]) == "get"
        assert cm.headers["audit-id"] not in ids
    finally:
        s.stop()


def test_events_buffered_at_shutdown_are_flushed(etcd, tmp_path):
    path = tmp_path / "audit.log"
    s = APIServer(etcd.url, "--audit-log-path", str(path)).start()
    with s.client(timeout=30) as c:
        ids = [c.post("/api/v1/namespaces/default/configmaps",
                      json={"metadata": {"generateName": "f-"}}).headers["audit-id"] for _ in range(20)]
    s.stop()
    assert s.proc.returncode == 0
    assert {e["auditID"] for e in events(path)} >= set(ids)


@pytest.mark.parametrize("args,message", [
    (["--audit-log-path", "/nonexistent-dir/audit.log"],
     "--audit-log-path /nonexistent-dir/audit.log: cannot write there"),
    (["--audit-policy-file", "{policy}"], "--audit-policy-file needs --audit-log-path"),
    (["--audit-log-path", "-", "--audit-policy-file", "{bad}"],
     'rules[0].level: Unsupported value: "Everything"'),
    (["--audit-log-path", "-", "--audit-log-maxsize", "-1"], "must not be negative"),
])
def test_bad_audit_flags_are_one_line_errors(etcd, tmp_path, args, message):
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "bad.yaml").write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n")
    args = [a.format(policy=tmp_path / "policy.yaml", bad=tmp_path / "bad.yaml") for a in args]
    p = subprocess.run([sys.executable, "-m", "cluster.cli", "apiserver", "--etcd-servers", etcd.url,
                        "--port", "0", "--plain-http", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], p.stderr


# -- pieces without a server -----------------------------------------------------------------


def attrs(verb="create", resource="pods", namespace="ns", user="jane", groups=()):
    from apiserver.auth.authorizer import Attributes, UserInfo
    return Attributes(UserInfo(user, tuple(groups)), verb, namespace, "", "v1", resource)


@pytest.mark.parametrize("rules,request_attrs,want", [
    ("- level: Metadata\n  verbs: [create]\n", attrs(), "Metadata"),
    ("- level: Metadata\n  verbs: [delete]\n", attrs(), "None"),
    ("- level: RequestResponse\n  users: [jane]\n", attrs(), "RequestResponse"),
    ("- level: Metadata\n  userGroups: [devs]\n", attrs(groups=("ops",)), "None"),
    ("- level: Metadata\n  namespaces: [other]\n", attrs(), "None"),
    ("- level: Metadata\n  resources: [{group: '', resources: ['pods/*']}]\n", attrs(), "Metadata"),
    ("- level: Metadata\n  resources: [{group: apps}]\n", attrs(), "None"),
    ("- level: None\n  resources: [{resources: [pods]}]\n- level: Metadata\n", attrs(), "None"),
    ("- level: None\n  resources: [{resources: [pods]}]\n- level: Metadata\n", attrs(resource="secrets"), "Metadata"),
])
def test_policy_rules_match_in_order(rules, request_attrs, want):
    import yaml
    policy = audit.parse_policy(yaml.safe_load(f"apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n{rules}"))
    assert audit.level_of(policy, request_attrs) == want


def test_the_log_file_rotates_by_size_and_keeps_maxbackup_files(tmp_path):
    path = tmp_path / "audit.log"
    f = audit._File(str(path), 1, 2)
    f.max_bytes = 1000  # the flag is in megabytes; the rule is the same
    line = b"x" * 399 + b"\n"
    for _ in range(12):
        f.write(line)
    f.close()
    backups = sorted(p.name for p in tmp_path.iterdir() if p.name != "audit.log")
    assert len(backups) == 2
    assert all(n.startswith("audit-") and n.endswith(".log") for n in backups)
    assert path.stat().st_size <= 1000
    assert all((tmp_path / n).stat().st_size <= 1000 for n in backups)


def test_a_spdy_port_forward_upgrade_is_logged_as_a_create_of_pods_portforward(server):
    import socket
    ns = "audit-" + uuid.uuid4().hex[:6]
    with admin(server) as c:
        assert c.post("/api/v1/namespaces", json={"metadata": {"name": ns}}).status_code == 201
        default_service_account(c, ns)
        r = c.post(f"/api/v1/namespaces/{ns}/pods", json={"metadata": {"name": "p"}, "spec": {
            "nodeName": "nowhere", "containers": [{"name": "c", "image": "busybox"}]}})
        assert r.status_code == 201, r.text
    ctx = ssl.create_default_context(cafile=server.ca_file)
    ctx.load_cert_chain(f"{server.pki_dir}/admin.crt", f"{server.pki_dir}/admin.key")
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    with ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host) as s:
        s.sendall(f"POST /api/v1/namespaces/{ns}/pods/p/portforward HTTP/1.1\r\nHost: {host}\r\n"
                  "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n"
                  "Content-Length: 0\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head
    assert b"\r\nUpgrade: SPDY/3.1\r\n" in head and b"\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n" in head

    def logged():
        return [e for e in events(server.audit_log) if (e.get("objectRef") or {}).get("namespace") == ns
                and e["objectRef"].get("subresource") == "portforward"]
    (ev,) = wait_for(logged, what="the port-forward's audit event")
    assert ev["verb"] == "create" and ev["responseStatus"]["code"] == 101
    assert ev["user"]["username"] == "kubernetes-admin"
