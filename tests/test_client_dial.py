"""`Client.dial()` and the proxy helpers it rests on: what a caller opening its own
connection to the server (kubectl-lite's exec WebSocket) is told. The end-to-end use,
through a real proxy and TLS front to a real kubelet, is in
tests/test_kubectl_lite_exec_net.py."""
import ssl

from client.kubeconfig import Connection
from client.proxy import choose_proxy, parse_proxy_url
from client.rest import Client


def test_proxy_url_keeps_its_credentials_for_libraries_that_take_a_url():
    p = parse_proxy_url("https://us%40er:p%3Ass@proxy.corp:3129")
    assert p.url == "https://proxy.corp:3129"
    assert p.url_with_credentials == "https://us%40er:p%3Ass@proxy.corp:3129"
    assert parse_proxy_url("proxy.corp:3128").url_with_credentials == "http://proxy.corp:3128"
    assert parse_proxy_url("http://alone@p:1").url_with_credentials == "http://alone:@p:1"


def test_choose_proxy_prefers_proxy_url_then_the_environment():
    env = {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "skip.corp"}
    assert choose_proxy("http://kc:2", "https", "skip.corp", 443, env=env).url == "http://kc:2"
    assert choose_proxy(None, "https", "a.corp", 443, env=env).url == "http://env:1"
    assert choose_proxy(None, "https", "skip.corp", 443, env=env) is None
    assert choose_proxy(None, "http", "a.corp", 80, env=env) is None  # HTTPS_PROXY is for https only


async def test_dial_reports_proxy_tls_name_context_and_credentials():
    conn = Connection(server="https://kube.test:6443", token="t0k", tls_server_name="kubernetes.lab",
                      proxy_url="http://u:p@proxy:3128")
    async with Client(conn, user_agent="ua/1") as c:
        d = await c.dial()
    assert d.server == "https://kube.test:6443"
    assert d.proxy is not None and d.proxy.url_with_credentials == "http://u:p@proxy:3128"
    assert d.server_hostname == "kubernetes.lab"
    assert isinstance(d.ssl_context, ssl.SSLContext)
    assert d.headers == {"user-agent": "ua/1", "authorization": "Bearer t0k"}


async def test_dial_over_plain_http_has_no_tls_and_follows_the_environment(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://env-proxy:8080")
    monkeypatch.setenv("NO_PROXY", "")
    async with Client(Connection(server="http://kube.test:8080")) as c:
        d = await c.dial()
    assert d.ssl_context is None and d.server_hostname is None
    assert d.proxy is not None and d.proxy.url == "http://env-proxy:8080"
    assert "authorization" not in d.headers
