"""Port forwarding end to end: `pods/{name}/portforward` on a real API server, proxied to
a real kubelet (`minik8s kubelet`, Linux runtime, root) that connects inside the pod's
network namespace. The pod's HTTP server listens on the pod's 127.0.0.1 only, so only a
connection made inside the pod's namespace reaches it.

Driven by the real kubectl (SPDY tunneled in a WebSocket), by our SPDY client over the
same tunnel, by the official Python client (v4.channel.k8s.io) and by kubectl-lite.
"""
from __future__ import annotations

import asyncio
import hashlib
import http.client as httpclient
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from machinery.spdy import Session
from tests.procs import wait_for
from tests.test_kubectl_lite import KL
from tests.test_kubelet_e2e import (KUBECTL, api, container, create, http, make_pod,  # noqa: F401
                                    node, pytestmark, running, wait_pod)

PAGE = "hello-from-pod"
BIG = 3 << 20  # bytes of /tmp/big: many times SPDY's 64 KiB window
SERVER = ["sh", "-c", f"echo {PAGE} > /tmp/who; head -c {BIG} /dev/urandom > /tmp/big; "
                      "exec python3 -m http.server 8080 --bind 127.0.0.1 --directory /tmp"]
NOBODY = 9  # a port nothing in the pod listens on
UPLOAD = 1 << 20
# On 9000: reads UPLOAD bytes, answers their SHA-256 and closes.
SINK = ["python3", "-c", "import hashlib, socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', 9000)); s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept(); h = hashlib.sha256(); n = 0\n"
        f"    while n < {UPLOAD} and (d := c.recv(65536)):\n"
        "        h.update(d); n += len(d)\n"
        "    c.sendall(h.hexdigest().encode()); c.close()\n"]


@pytest.fixture
def web(node, http, ns):  # noqa: F811
    # Ready once the server listens: kubectl ends a forward at the first refused connection.
    pod = make_pod("web", node, container(
        "c", SERVER, ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"tcpSocket": {"host": "127.0.0.1", "port": 8080}, "periodSeconds": 1}),
        container("sink", SINK, readinessProbe={"tcpSocket": {"host": "127.0.0.1", "port": 9000},
                                                "periodSeconds": 1}))
    pod["metadata"]["labels"] = {"app": "web"}
    create(http, ns, pod)
    wait_pod(http, ns, "web", ready, "ready")
    return "web"


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


@pytest.fixture
def kubeconfig(api, ns, tmp_path):  # noqa: F811
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {api.url}\n"
        "users:\n- name: u\n  user: {}\n"
        f"contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: {ns}\n"
        "current-context: c\n")
    return str(path)


class Forwarder:
    """A port-forward process: its output read by threads; `local(remote)` is the local
    port it announced for a remote one."""

    def __init__(self, argv: list[str], env: dict | None = None):
        env = {**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, **(env or {})}
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.out: list[str] = []
        self.err: list[str] = []
        for pipe, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda p=pipe, s=sink: [s.append(line) for line in p], daemon=True).start()

    def local(self, remote: int) -> int:
        def announced():
            if self.proc.poll() is not None:
                return -1
            for line in self.out:
                if m := re.match(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {remote}$", line.strip()):
                    return int(m.group(1))
            return None
        try:
            port = wait_for(announced, timeout=30, what=f"Forwarding from ... -> {remote}")
        except TimeoutError:
            port = None
        assert port and port > 0, f"no forward announced: {''.join(self.out)}{self.stderr()}"
        return port

    def stderr(self) -> str:
        return "".join(self.err)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def forward(kubeconfig, tmp_path):
    started: list[Forwarder] = []

    def start(tool: str, *args: str, env: dict | None = None) -> Forwarder:
        base = ([KUBECTL, "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "cache")]
                if tool == "kubectl" else [*KL, "--kubeconfig", kubeconfig])
        f = Forwarder([*base, "port-forward", *args], env)
        started.append(f)
        return f
    yield start
    for f in started:
        f.stop()


def get(port: int, path: str = "/who") -> tuple[int, str]:
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def first_get(port: int) -> tuple[int, str]:
    """The first request, retried until the pod's server listens (Running means its
    process started, not that it listens yet)."""
    def attempt():
        try:
            return get(port)
        except (OSError, httpclient.HTTPException):
            return None
    return wait_for(attempt, timeout=30, what="the pod's server through the forward")


def refused(port: int) -> bytes:
    """Connect to a forwarded port whose pod side refuses: what comes back before the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


# -- the real kubectl -----------------------------------------------------------------------

@pytest.mark.kubectl
def test_kubectl_port_forward_to_a_pod_serves_two_requests(web, forward):
    f = forward("kubectl", "pod/web", ":8080", ":9000")
    port = f.local(8080)
    assert first_get(port) == (200, PAGE + "\n")
    assert get(port) == (200, PAGE + "\n")
    assert any(line.startswith(f"Handling connection for {port}") for line in f.out)
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/big")
    assert len(conn.getresponse().read()) == BIG
    conn.close()
    # and as much the other way: kubectl sends past SPDY's window too
    payload = os.urandom(UPLOAD)
    with socket.create_connection(("127.0.0.1", f.local(9000)), timeout=30) as s:
        s.sendall(payload)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.decode() == hashlib.sha256(payload).hexdigest()


@pytest.mark.kubectl
def test_kubectl_port_forward_over_plain_spdy(web, forward):
    # Without WebSockets kubectl asks for `Upgrade: SPDY/3.1` (its fallback, and what
    # clients before 1.31 always did).
    f = forward("kubectl", "-v=4", "pod/web", ":8080", env={"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"})
    port = f.local(8080)
    assert first_get(port) == (200, PAGE + "\n")
    assert get(port) == (200, PAGE + "\n")
    assert "tunneling" not in f.stderr() and "Before WebSocket" not in f.stderr(), f.stderr()


@pytest.mark.kubectl
def test_kubectl_port_forward_to_a_service_reaches_its_target_port(web, forward, http, ns):  # noqa: F811
    r = http.post(f"/api/v1/namespaces/{ns}/services", json={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}})
    assert r.status_code == 201, r.text
    f = forward("kubectl", "svc/web", ":80")
    port = f.local(8080)  # kubectl names the container port the service port targets
    assert first_get(port) == (200, PAGE + "\n")
    assert get(port) == (200, PAGE + "\n")


@pytest.mark.kubectl
def test_kubectl_reports_a_port_nothing_listens_on(web, forward):
    f = forward("kubectl", "pod/web", ":8080", f":{NOBODY}")
    good, bad = f.local(8080), f.local(NOBODY)
    assert first_get(good) == (200, PAGE + "\n")
    assert refused(bad) == b""
    wait_for(lambda: "error forwarding port 9 to pod" in f.stderr(), timeout=30, what="kubectl's error")
    err = f.stderr()
    assert "an error occurred forwarding" in err and f"-> {NOBODY}" in err, err
    assert "failed to connect to localhost:9 inside namespace" in err and "connection refused" in err, err
    # kubectl (client-go since 1.31) then ends the whole forward, as it does against Kubernetes.
    assert f.proc.wait(30) == 1
    assert "lost connection to pod" in f.stderr()


# -- SPDY over WebSocket, our client ----------------------------------------------------------

async def spdy_session(api, ns):  # noqa: F811
    """Our SPDY client in the tunnel kubectl uses. The `websockets` client refuses the
    subprotocol's "/" (not an RFC 7230 token), so the tunnel is websocket-client's (the
    official Python client's dependency), driven from threads."""
    import websocket
    url = api.url.replace("http", "ws", 1) + f"/api/v1/namespaces/{ns}/pods/web/portforward"
    ws = await asyncio.to_thread(websocket.create_connection, url, timeout=30,
                                 subprotocols=["SPDY/3.1+portforward.k8s.io"])
    assert ws.getsubprotocol().lower() == "spdy/3.1+portforward.k8s.io"  # it lowercases

    async def read() -> bytes:
        try:
            return await asyncio.to_thread(ws.recv) or b""
        except Exception:  # noqa: BLE001 - the tunnel's end is the session's
            return b""

    async def write(data: bytes) -> None:
        await asyncio.to_thread(ws.send_binary, data)
    session = Session(read, write, client=True)
    return ws, session, asyncio.create_task(session.run())


async def pair(session: Session, port: int, request: int):
    headers = {"streamType": "error", "port": str(port), "requestID": str(request)}
    error = await session.open(headers)
    await error.close()  # as kubectl: nothing is written to the error stream
    data = await session.open({**headers, "streamType": "data"})
    return data, error


async def read_all(stream) -> bytes:
    out = b""
    while chunk := await asyncio.wait_for(stream.read(), 30):
        out += chunk
    return out


async def test_spdy_tunnel_pairs_refusals_and_later_pairs(web, api, ns, http):  # noqa: F811
    ws, session, reader = await spdy_session(api, ns)
    try:
        async def fetch(request: int) -> tuple[bytes, bytes]:
            data, error = await pair(session, 8080, request)
            await data.write(b"GET /who HTTP/1.0\r\n\r\n")
            return await read_all(data), await read_all(error)

        body = b""
        deadline = time.monotonic() + 30
        request = 0
        while PAGE.encode() not in body and time.monotonic() < deadline:  # until the server listens
            body, err = await fetch(request)
            request += 1
        assert body.startswith(b"HTTP/1.0 200") and body.endswith(PAGE.encode() + b"\n") and err == b""

        data, error = await pair(session, NOBODY, request)
        assert await read_all(data) == b""
        message = (await read_all(error)).decode()
        assert message.startswith(f"error forwarding port {NOBODY} to pod "), message
        assert f'failed to connect to localhost:{NOBODY} inside namespace "' in message, message

        body, err = await fetch(request + 1)  # the session goes on
        assert body.endswith(PAGE.encode() + b"\n") and err == b""
        # counted as kube-apiserver counts it: a long-running GET of pods/portforward
        metrics = http.get("/metrics").text
        assert re.search(r'apiserver_longrunning_requests\{[^}]*resource="pods"[^}]*'
                         r'subresource="portforward"[^}]*\} 1', metrics), metrics
    finally:
        await asyncio.to_thread(ws.close)
        await asyncio.wait_for(reader, 10)


def test_upgrade_refusals_are_statuses(web, api, ns, http):  # noqa: F811
    import websocket
    base = api.url.replace("http", "ws", 1) + f"/api/v1/namespaces/{ns}/pods"

    def refusal(path: str, protocol: str) -> tuple[int, dict]:
        with pytest.raises(websocket.WebSocketBadStatusException) as exc:
            websocket.create_connection(base + path, subprotocols=[protocol], timeout=30)
        return exc.value.status_code, json.loads(exc.value.resp_body)
    code, status = refusal("/nope/portforward", "SPDY/3.1+portforward.k8s.io")
    assert (code, status["reason"], status["message"]) == (404, "NotFound", 'pods "nope" not found')
    code, status = refusal("/web/portforward", "v4.channel.k8s.io")  # a channel client names its ports
    assert (code, status["message"]) == (400, 'query parameter "port" is required')
    code, status = refusal("/web/portforward?ports=99999", "v4.channel.k8s.io")
    assert (code, status["message"]) == (400, 'port "99999" must be > 0 and < 65536')
    code, status = refusal("/web/portforward?ports=80", "v9.nothing.k8s.io")
    assert code == 400 and "requested protocol(s) are not supported" in status["message"]
    r = http.post(f"/api/v1/namespaces/{ns}/pods/web/portforward")
    assert r.status_code == 400 and r.json()["message"] == "Upgrade request required"
    spdy = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
    r = http.post(f"/api/v1/namespaces/{ns}/pods/web/portforward", headers=spdy)
    assert r.status_code == 400 and r.json()["message"] == \
        "unable to upgrade: X-Stream-Protocol-Version is required"
    r = http.post(f"/api/v1/namespaces/{ns}/pods/web/portforward",
                  headers={**spdy, "X-Stream-Protocol-Version": "v4.channel.k8s.io"})
    assert r.status_code == 403 and r.json()["message"] == ("unable to upgrade: unable to negotiate "
                                                            "protocol: client supports [v4.channel.k8s.io], "
                                                            "server accepts [portforward.k8s.io]")


# -- the official Python client ------------------------------------------------------------

def test_python_client_portforward(web, api, ns):  # noqa: F811
    from kubernetes import client
    from kubernetes.stream import portforward

    core = client.CoreV1Api(client.ApiClient(client.Configuration(host=api.url)))

    def fetch():
        pf = portforward(core.connect_get_namespaced_pod_portforward, "web", ns, ports=f"8080,{NOBODY}")
        try:
            sock = pf.socket(8080)
            sock.setblocking(True)
            sock.settimeout(10)
            sock.sendall(b"GET /who HTTP/1.0\r\n\r\n")
            out = b""
            while chunk := sock.recv(4096):
                out += chunk
            sock.close()
            return out, pf.error(8080), pf.error(NOBODY)
        finally:
            pf.close()

    out, err, nobody = wait_for(lambda: (r := fetch())[0].endswith(PAGE.encode() + b"\n") and r,
                                timeout=30, what="the page through the Python client")
    assert out.startswith(b"HTTP/1.0 200") and err is None
    assert nobody.startswith(f"error forwarding port {NOBODY} to pod "), nobody


# -- kubectl-lite ---------------------------------------------------------------------------

def test_kubectl_lite_port_forward_pod_and_refused_port(web, forward):
    f = forward("kubectl-lite", "pod/web", ":8080", f"{0}:{NOBODY}")
    good, bad = f.local(8080), f.local(NOBODY)
    assert first_get(good) == (200, PAGE + "\n")
    assert refused(bad) == b""
    wait_for(lambda: f"error forwarding port {NOBODY} to pod" in f.stderr(), timeout=30,
             what="kubectl-lite's error")
    assert f"an error occurred forwarding {bad} -> {NOBODY}: error forwarding port" in f.stderr()
    assert get(good) == (200, PAGE + "\n")  # the forward goes on
    assert f"Handling connection for {good}\n" in f.out


def test_kubectl_lite_port_forward_service_and_deployment_forms(web, forward, http, ns):  # noqa: F811
    r = http.post(f"/api/v1/namespaces/{ns}/services", json={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}})
    assert r.status_code == 201, r.text
    f = forward("kubectl-lite", "svc/web", ":80")
    assert first_get(f.local(8080)) == (200, PAGE + "\n")
    # A Deployment's pods are found by its selector (no controller runs here: the
    # selector finds the pod made above).
    r = http.post(f"/apis/apps/v1/namespaces/{ns}/deployments", json={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    assert r.status_code == 201, r.text
    f = forward("kubectl-lite", "deploy/web", "0:8080")
    assert first_get(f.local(8080)) == (200, PAGE + "\n")


def test_kubectl_lite_port_forward_bad_input(web, kubeconfig, http, ns):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def run(*args):
        return subprocess.run([*KL, "--kubeconfig", kubeconfig, "port-forward", *args],
                              capture_output=True, text=True, env=env, timeout=60)
    r = run("pod/web")
    assert r.returncode == 1 and r.stderr == "error: TYPE/NAME and list of ports are required for port-forward\n"
    r = run("pod/web", "x:80")
    assert r.returncode == 1 and "Error parsing local port 'x'" in r.stderr
    r = run("pod/nope", "80")
    assert r.returncode == 1 and 'pods "nope" not found' in r.stderr
    for svc in ({"metadata": {"name": "bare"}, "spec": {"ports": [{"port": 80}]}},
                {"metadata": {"name": "other"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 81}]}}):
        r = http.post(f"/api/v1/namespaces/{ns}/services", json={"apiVersion": "v1", "kind": "Service", **svc})
        assert r.status_code == 201, r.text
    r = run("svc/bare", "80")
    assert r.returncode == 1 and r.stderr == \
        "error: invalid service 'bare': Service is defined without a selector\n", r.stderr
    r = run("svc/other", "80")
    assert r.returncode == 1 and r.stderr == "error: Service other does not have a service port 80\n", r.stderr
    create(http, ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending"},  # no node
                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    r = run("pod/pending", "80")
    assert r.returncode == 1 and "unable to forward port because pod is not running. Current status=Pending" \
        in r.stderr, r.stderr



async def test_base64_channels_through_the_api_server(web, api, ns):  # noqa: F811
    import base64

    from websockets.asyncio.client import connect
    url = api.url.replace("http", "ws", 1) + f"/api/v1/namespaces/{ns}/pods/web/portforward?ports=8080"
    async with connect(url, subprotocols=["v4.base64.channel.k8s.io"]) as ws:
        assert ws.subprotocol == "v4.base64.channel.k8s.io"
        opening = [await asyncio.wait_for(ws.recv(), 30) for _ in range(2)]
        port = base64.b64encode((8080).to_bytes(2, "little")).decode()
        assert sorted(opening) == ["0" + port, "1" + port]
        await ws.send("0" + base64.b64encode(b"GET /who HTTP/1.0\r\n\r\n").decode())
        body = b""
        async for frame in ws:
            assert frame[0] == "0", frame
            body += base64.b64decode(frame[1:])
        assert body.startswith(b"HTTP/1.0 200") and body.endswith(PAGE.encode() + b"\n")
