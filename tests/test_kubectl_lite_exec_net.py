"""`kubectl-lite exec` reaches the server as every other request does: through the
kubeconfig's proxy-url (a CONNECT tunnel, for ws:// as for wss://), verifying the
server by tls-server-name, and authenticated by an exec credential plugin (token or
client certificate). Everything is real: an API server, a kubelet running the pod on
the Linux runtime (root), the recording proxy, a TLS front, and a tap in front of the
API server that records each request head (the API server logs nothing about auth).

The proxy resolves "kube.test" itself: a connection that did not go through it
cannot reach the server at all.
"""
from __future__ import annotations

import asyncio
import base64
import json
import sys
import textwrap

import pytest

from tests.netfixtures import RecordingProxy, TLSFront, _splice, certificate
from tests.test_kubectl_lite import KubectlLite
from tests.test_kubelet_e2e import (SLEEP, container, create, http, make_pod,  # noqa: F401
                                    node, ns, pytestmark, running, start_api, wait_pod)

PLUGIN = textwrap.dedent("""\
    #!{python}
    import json, os
    status = {{"token": "tok-from-plugin"}}
    if os.environ.get("CERT"):
        status = {{"clientCertificateData": open(os.environ["CERT"]).read(),
                   "clientKeyData": open(os.environ["KEY"]).read()}}
    print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                      "status": status}}))
    """)


class HeaderTap:
    """Plain HTTP on loopback in front of `upstream`: records the first request head of
    each connection (for an exec, the WebSocket upgrade), then pipes both ways."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.heads: list[dict[str, str]] = []
        self.port = 0

    async def __aenter__(self) -> HeaderTap:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()
            return
        line, *lines = head.decode("latin-1").split("\r\n")
        seen = {":request": line}
        for h in lines:
            if h:
                k, _, v = h.partition(":")
                seen[k.strip().lower()] = v.strip()
        self.heads.append(seen)
        ur, uw = await asyncio.open_connection(*self.upstream)
        uw.write(head)
        await _splice(r, w, ur, uw)

    def upgrades(self) -> list[dict[str, str]]:
        return [h for h in self.heads if h.get("upgrade", "").lower() == "websocket"]


@pytest.fixture(scope="module")
def api(etcd):
    """Plain HTTP (--plain-http), unlike the other modules' servers: the tap reads each
    request's head on its way to the server, the fronts here terminate TLS themselves,
    and the plugin's token is no credential a secure server would accept."""
    server = start_api(etcd.url, plain=True)
    yield server
    server.stop()


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "credential-plugin"
    path.write_text(PLUGIN.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def sleeper(node, http, ns):  # noqa: F811
    create(http, ns, make_pod("sleeper", node, container("c", SLEEP)))
    wait_pod(http, ns, "sleeper", running("c"), "sleeper running")
    return "sleeper"


def kubeconfig(path, ns: str, cluster: dict, exec_env: dict[str, str], plugin: str) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": plugin,
            "interactiveMode": "Never",
            "env": [{"name": k, "value": v} for k, v in exec_env.items()]}}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": ns}}]}))
    return str(path)


def api_port(api) -> int:  # noqa: F811
    return int(api.url.rsplit(":", 1)[1])


async def kl_exec(k: KubectlLite, pod: str, *command: str, **kw):
    return await asyncio.to_thread(k, "exec", pod, "--", *command, **kw)


async def test_exec_through_proxy_url_with_tls_server_name_and_plugin_token(
        api, sleeper, ns, tmp_path, plugin):  # noqa: F811
    # The certificate names only kubernetes.lab; the URL says kube.test: only
    # tls-server-name makes the server's certificate acceptable.
    cert, key = certificate("apiserver", dns=("kubernetes.lab",))
    async with HeaderTap(("127.0.0.1", api_port(api))) as tap, \
            TLSFront(("127.0.0.1", tap.port), cert, key) as front, \
            RecordingProxy(hosts={"kube.test": "127.0.0.1"}) as proxy:
        path = kubeconfig(tmp_path / "kc", ns, {
            "server": f"https://kube.test:{front.port}", "proxy-url": proxy.url,
            "tls-server-name": "kubernetes.lab",
            "certificate-authority-data": base64.b64encode(cert).decode()}, {}, plugin)
        k = KubectlLite(path, str(tmp_path), ns)
        r = await kl_exec(k, sleeper, "sh", "-c", "echo out; echo err >&2; exit 3", ok=False)
        assert (r.returncode, r.stdout) == (3, "out\n")
        assert r.stderr == "err\ncommand terminated with exit code 3\n"

        upgrades = tap.upgrades()
        assert len(upgrades) == 1, tap.heads
        assert upgrades[0][":request"].startswith(f"GET /api/v1/namespaces/{ns}/pods/{sleeper}/exec?")
        assert upgrades[0]["authorization"] == "Bearer tok-from-plugin"
        assert upgrades[0]["user-agent"].startswith("kubectl-lite/")
        # every connection the server saw (the pod's GET and the WebSocket) was a
        # tunnel the proxy opened
        connects = [s for s in proxy.seen if s.method == "CONNECT"]
        assert [s.target for s in connects] == [f"kube.test:{front.port}"] * len(tap.heads)
        assert len(tap.heads) == 2

        # without tls-server-name the same server is refused, before any exec
        bad = kubeconfig(tmp_path / "kc-bad", ns, {
            "server": f"https://kube.test:{front.port}", "proxy-url": proxy.url,
            "certificate-authority-data": base64.b64encode(cert).decode()}, {}, plugin)
        r = await asyncio.to_thread(KubectlLite(bad, str(tmp_path), ns), "exec", sleeper,
                                    "--", "true", ok=False)
        assert "certificate" in r.stderr.lower(), r.stderr
        assert len(tap.upgrades()) == 1


async def test_exec_over_plain_ws_goes_through_a_connect_tunnel(api, sleeper, ns, tmp_path, plugin):  # noqa: F811
    async with RecordingProxy(hosts={"kube.test": "127.0.0.1"}) as proxy:
        path = kubeconfig(tmp_path / "kc", ns, {
            "server": f"http://kube.test:{api_port(api)}", "proxy-url": proxy.url}, {}, plugin)
        r = await kl_exec(KubectlLite(path, str(tmp_path), ns), sleeper, "echo", "hello")
        assert r.stdout == "hello\n"
        # the pod's GET goes as an absolute-form request (with the plugin's token), the
        # WebSocket as a tunnel
        gets = [s for s in proxy.seen if s.method == "GET"]
        assert gets and gets[0].target.startswith(f"http://kube.test:{api_port(api)}/api/v1/")
        assert gets[0].headers["authorization"] == "Bearer tok-from-plugin"
        assert [(s.method, s.target) for s in proxy.seen if s.method == "CONNECT"] == \
            [("CONNECT", f"kube.test:{api_port(api)}")]


async def test_exec_with_a_client_certificate_from_the_plugin(api, sleeper, ns, tmp_path, plugin):  # noqa: F811
    server_cert, server_key = certificate("apiserver", ips=("127.0.0.1",))
    client_cert, client_key = certificate("robot")
    (tmp_path / "c.pem").write_bytes(client_cert)
    (tmp_path / "k.pem").write_bytes(client_key)
    async with HeaderTap(("127.0.0.1", api_port(api))) as tap, \
            TLSFront(("127.0.0.1", tap.port), server_cert, server_key, client_ca=client_cert) as front:
        path = kubeconfig(tmp_path / "kc", ns, {
            "server": f"https://127.0.0.1:{front.port}",
            "certificate-authority-data": base64.b64encode(server_cert).decode()},
            {"CERT": str(tmp_path / "c.pem"), "KEY": str(tmp_path / "k.pem")}, plugin)
        r = await kl_exec(KubectlLite(path, str(tmp_path), ns), sleeper, "echo", "mtls")
        assert r.stdout == "mtls\n"
        # the front requires a client certificate: the upgrade got through with the plugin's
        assert len(tap.upgrades()) == 1 and "authorization" not in tap.upgrades()[0]
        assert len(front.peers) == len(tap.heads) == 2
        assert all(dict(rdn[0] for rdn in p)["commonName"] == "robot" for p in front.peers)


async def test_exec_follows_http_proxy_and_no_proxy_from_the_environment(api, sleeper, ns, tmp_path, plugin):  # noqa: F811
    """No proxy-url: HTTP_PROXY chooses for an http server (Go's ProxyFromEnvironment),
    and NO_PROXY naming the host turns it off again."""
    async with RecordingProxy(hosts={"kube.test": "127.0.0.1"}) as proxy:
        path = kubeconfig(tmp_path / "kc", ns, {"server": f"http://kube.test:{api_port(api)}"}, {}, plugin)
        k = KubectlLite(path, str(tmp_path), ns)
        r = await kl_exec(k, sleeper, "echo", "via-env", env={"HTTP_PROXY": proxy.url, "NO_PROXY": ""})
        assert r.stdout == "via-env\n"
        assert [s.target for s in proxy.seen if s.method == "CONNECT"] == [f"kube.test:{api_port(api)}"]
        seen = len(proxy.seen)
        r = await asyncio.to_thread(k, "exec", sleeper, "--", "true", ok=False,
                                    env={"HTTP_PROXY": proxy.url, "NO_PROXY": "kube.test"})
        assert len(proxy.seen) == seen  # direct: and kube.test does not resolve without the proxy
        assert r.stderr.startswith("Unable to connect to the server"), r.stderr


def test_a_failing_plugin_is_one_line(tmp_path):
    path = kubeconfig(tmp_path / "kc", "default", {"server": "http://127.0.0.1:9"}, {},
                      str(tmp_path / "no-such-plugin"))
    r = KubectlLite(path, str(tmp_path), "default")("exec", "p", "--", "true", ok=False)
    assert r.stderr.startswith("Unable to connect to the server: getting credentials: exec plugin: "
                               "cannot run"), r.stderr
    assert len(r.stderr.splitlines()) == 1
