"""Proxies and tls-server-name as client-go honours them, for real: a recording
forward proxy (tests/netfixtures.py) in front of the real API server, and a TLS front
whose certificate names another host.

"kube.test" resolves only inside the proxy, so a request for it that succeeds went
through the proxy."""
import asyncio
import base64
import os
import sys
from urllib.parse import urlsplit

import httpx
import pytest

from client import kubeconfig
from client.kubeconfig import Connection
from client.proxy import EnvProxy, NoProxy, parse_proxy_url
from client.rest import Client
from client.transport import LeanTransport
from client.watch import Watch
from tests.netfixtures import RecordingProxy, TLSFront, certificate
from tests.util import pod


@pytest.fixture(scope="module")
def apiserver(plain_apiserver):
    """Plain HTTP for this module's tests. The recording proxy reads each request
    (method, absolute target, headers), which only a plain connection shows; the TLS
    fronts here terminate TLS themselves."""
    return plain_apiserver

PROXY_ENV = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
             "REQUEST_METHOD")


@pytest.fixture(autouse=True)
def clean_proxy_env(monkeypatch):
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


def api_port(apiserver):
    return urlsplit(apiserver.url).port


async def test_kubeconfig_proxy_url_carries_every_request_and_watch(apiserver, ns, tmp_path):
    async with RecordingProxy(hosts={"kube.test": "127.0.0.1"},
                              credentials="Basic " + base64.b64encode(b"me:p@ss").decode()) as proxy:
        path = tmp_path / "config"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: c\n  cluster:\n    server: http://kube.test:{api_port(apiserver)}\n"
            f"    proxy-url: http://me:p%40ss@{proxy.url[len('http://'):]}\n"
            "users:\n- name: u\n  user: {}\n"
            f"contexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: {ns}}}\n"
            "current-context: x\n")
        async with Client(kubeconfig.load(str(path)).connection(), max_retries=0) as c:
            await c.create(pod("via-proxy"))
            got = await c.get("pods", "via-proxy")
            assert got["metadata"]["namespace"] == ns
            listed = await c.list("pods")

            async def first_event():
                async for ev in Watch(c, "pods", resource_version=listed["metadata"]["resourceVersion"]):
                    if ev.type == "ADDED":
                        return ev.object["metadata"]["name"]
            watching = asyncio.create_task(first_event())
            await c.create(pod("seen-by-watch"))
            assert await asyncio.wait_for(watching, 30) == "seen-by-watch"
    base = f"http://kube.test:{api_port(apiserver)}"
    targets = [(s.method, s.target) for s in proxy.seen]
    assert ("POST", f"{base}/api/v1/namespaces/{ns}/pods") in targets
    assert ("GET", f"{base}/api/v1/namespaces/{ns}/pods/via-proxy") in targets
    assert any(m == "GET" and t.startswith(f"{base}/api/v1/namespaces/{ns}/pods?") and "watch=" in t
               for m, t in targets), targets
    assert all(s.headers.get("proxy-authorization") == proxy.credentials for s in proxy.seen)


async def test_proxy_url_applies_even_to_a_loopback_server(apiserver, ns):
    async with RecordingProxy() as proxy:
        async with Client(apiserver.connection(proxy_url=proxy.url), max_retries=0) as c:
            await c.get("namespaces", ns)
    assert [s.target for s in proxy.seen] == [f"{apiserver.url}/api/v1/namespaces/{ns}"]


async def test_a_proxy_that_refuses_is_an_error_not_a_silent_direct_connection(apiserver):
    async with RecordingProxy(credentials="Basic nope") as proxy:
        async with Client(apiserver.connection(proxy_url=proxy.url), max_retries=0) as c:
            with pytest.raises(Exception, match="407|Proxy Authentication"):
                await c.list("namespaces")
        # over TLS the refusal comes as the CONNECT's answer
        async with Client(Connection(server="https://kube.test:1", proxy_url=proxy.url),
                          max_retries=0) as c:
            with pytest.raises(httpx.ProxyError, match="407"):
                await c.list("namespaces")
    assert [s.method for s in proxy.seen] == ["GET", "CONNECT"]


def test_socks5_and_unknown_proxy_schemes_are_clear_errors():
    cfg = kubeconfig.loads(
        "clusters:\n- name: c\n  cluster: {server: 'https://k:6443', proxy-url: 'socks5://p:1080'}\n"
        "users:\n- name: u\n  user: {}\n"
        "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n")
    with pytest.raises(ValueError, match="cluster 'c'.*socks5 proxies are not supported"):
        cfg.connection()
    with pytest.raises(ValueError, match="scheme 'ftp' is not supported"):
        parse_proxy_url("ftp://p:21")
    assert parse_proxy_url("proxy.corp:3128").url == "http://proxy.corp:3128"


async def test_tls_server_name_checks_the_certificate_for_that_name(apiserver, ns):
    cert, key = certificate("apiserver", dns=("kube.internal",))
    async with TLSFront(("127.0.0.1", api_port(apiserver)), cert, key) as front:
        server = f"https://127.0.0.1:{front.port}"
        # The certificate names kube.internal, not 127.0.0.1: refused without tls-server-name.
        async with Client(Connection(server=server, ca_data=cert), max_retries=0) as c:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|match"):
                await c.get("namespaces", ns)
        conn = Connection(server=server, ca_data=cert, tls_server_name="kube.internal")
        async with Client(conn, max_retries=0) as c:
            assert (await c.get("namespaces", ns))["metadata"]["name"] == ns
        # ...and the name comes from the kubeconfig's cluster entry
        cfg = kubeconfig.KubeConfig()
        cfg.set_cluster("c", server=server, certificate_authority_data=cert)
        cfg.clusters["c"]["tls-server-name"] = "kube.internal"
        cfg.set_user("u")
        cfg.set_context("x", cluster="c", user="u")
        async with Client(cfg.connection("x"), max_retries=0) as c:
            assert (await c.get("namespaces", ns))["metadata"]["name"] == ns


async def test_https_proxy_env_tunnels_with_connect_and_tls_end_to_end(apiserver, ns, monkeypatch):
    cert, key = certificate("apiserver", dns=("kube.test",))
    async with TLSFront(("127.0.0.1", api_port(apiserver)), cert, key) as front, \
            RecordingProxy(hosts={"kube.test": "127.0.0.1"}) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # not for https URLs
        async with Client(Connection(server=f"https://kube.test:{front.port}", ca_data=cert),
                          max_retries=0) as c:
            assert (await c.get("namespaces", ns))["metadata"]["name"] == ns
            assert (await c.get("namespaces", ns))["metadata"]["name"] == ns
        assert [(s.method, s.target) for s in proxy.seen] == [("CONNECT", f"kube.test:{front.port}")], \
            "one tunnel, reused by the keep-alive connection"


async def test_http_proxy_env_and_no_proxy(apiserver, ns, monkeypatch):
    async with RecordingProxy(hosts={"kube.test": "127.0.0.1"}) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        server = f"http://kube.test:{api_port(apiserver)}"
        async with Client(server, max_retries=0) as c:
            await c.get("namespaces", ns)
        assert [s.target for s in proxy.seen] == [f"{server}/api/v1/namespaces/{ns}"]
        # NO_PROXY naming the host: a direct connection, which cannot resolve kube.test
        monkeypatch.setenv("NO_PROXY", f"other.example, .test:{api_port(apiserver)}")
        async with Client(server, max_retries=0) as c:
            with pytest.raises(httpx.ConnectError):
                await c.get("namespaces", ns)
        # the loopback server is never proxied
        monkeypatch.delenv("NO_PROXY")
        async with Client(apiserver.connection(), max_retries=0) as c:
            await c.get("namespaces", ns)
        # trust_env=False ignores the environment
        async with Client(server, transport=LeanTransport(trust_env=False), max_retries=0) as c:
            with pytest.raises(httpx.ConnectError):
                await c.get("namespaces", ns)
        assert len(proxy.seen) == 1


@pytest.mark.parametrize("no_proxy, host, port, proxied", [
    ("", "api.corp", 443, True),
    ("*", "api.corp", 443, False),
    ("corp", "api.corp", 443, False),           # a name matches its subdomains
    ("corp", "corp", 443, False),               # ...and itself
    (".corp", "corp", 443, True),               # a leading dot: subdomains only
    ("*.corp", "api.corp", 443, False),
    ("*.corp", "corp", 443, True),
    ("notcorp", "api.corp", 443, True),
    ("API.Corp", "api.corp", 443, False),       # case does not matter
    ("api.corp:6443", "api.corp", 443, True),   # a port must match when given
    ("api.corp:6443", "api.corp", 6443, False),
    ("10.0.0.0/8", "10.1.2.3", 443, False),     # CIDR
    ("10.0.0.0/8", "11.1.2.3", 443, True),
    ("fd00::/8", "fd00::1", 443, False),
    ("10.1.2.3", "10.1.2.3", 443, False),       # an IP
    ("10.1.2.3:80", "10.1.2.3", 443, True),
    ("[fd00::1]:443", "fd00::1", 443, False),
    (" a.example , corp ", "x.corp", 443, False),  # spaces around entries
    ("", "localhost", 443, False),              # loopback never goes through a proxy
    ("", "127.0.0.1", 443, False),
    ("", "::1", 443, False),
])
def test_no_proxy_rules_match_go(no_proxy, host, port, proxied):
    env = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy}
    got = EnvProxy(env).proxy_for("https", host, port)
    assert (got is not None) == proxied
    if proxied:
        assert got.url == "http://proxy:3128"


def test_env_proxy_scheme_rules():
    assert EnvProxy({"HTTP_PROXY": "http://p:1"}).proxy_for("https", "a.corp", 443) is None, \
        "https does not fall back to HTTP_PROXY"
    assert EnvProxy({"https_proxy": "p:2"}).proxy_for("https", "a.corp", 443).url == "http://p:2"
    assert EnvProxy({"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"}).proxy_for(
        "http", "a.corp", 80) is None, "CGI: HTTP_PROXY may be a request header"
    assert EnvProxy({"HTTPS_PROXY": "http://u:p@p:1"}).proxy_for("https", "a", 443).authorization == \
        "Basic " + base64.b64encode(b"u:p").decode()
    assert not NoProxy("").matches("a", 1)


async def test_kubectl_lite_goes_through_the_kubeconfig_proxy(apiserver, ns, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "kubectl-lite")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "kubectl_lite.cli"]
    async with RecordingProxy(hosts={"kube.test": "127.0.0.1"}) as proxy:
        path = tmp_path / "config"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: c\n  cluster:\n    server: http://kube.test:{api_port(apiserver)}\n"
            f"    proxy-url: {proxy.url}\n"
            "users:\n- name: u\n  user: {}\n"
            "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n")
        proc = await asyncio.create_subprocess_exec(
            *cmd, "--kubeconfig", str(path), "get", "namespace", ns, "-o", "name",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == f"namespace/{ns}"
    assert any(s.target.startswith(f"http://kube.test:{api_port(apiserver)}/api/v1/namespaces/{ns}")
               for s in proxy.seen), proxy.seen
