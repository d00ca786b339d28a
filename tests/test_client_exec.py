"""Exec credential plugins, run for real: a tiny script that writes an ExecCredential,
in front of the real API server (through the recording proxy, which shows the
Authorization header each request carried)."""
import datetime
import json
import sys
import textwrap

import pytest

from client import kubeconfig
from client.clock import FakeClock
from client.execcred import ExecPlugin, ExecPluginError
from client.kubeconfig import Connection
from client.rest import Client
from tests.netfixtures import RecordingProxy, TLSFront, certificate


@pytest.fixture(scope="module")
def apiserver(plain_apiserver):
    """Plain HTTP for this module's tests. The recording proxy reads each request's
    Authorization header, which only a plain connection shows, and the plugins' tokens
    are no credentials a secure server accepts."""
    return plain_apiserver

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc).timestamp()

PLUGIN = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    state = sys.argv[1]
    n = int(open(state).read()) + 1 if os.path.exists(state) else 1
    open(state, "w").write(str(n))
    open(state + ".info", "w").write(os.environ["KUBERNETES_EXEC_INFO"])
    open(state + ".env", "w").write(os.environ.get("TEAM", ""))
    status = {{"token": f"tok-{{n}}"}}
    if os.environ.get("EXPIRES"):
        status["expirationTimestamp"] = os.environ["EXPIRES"]
    if os.environ.get("CERT"):
        status = {{"clientCertificateData": open(os.environ["CERT"]).read(),
                   "clientKeyData": open(os.environ["KEY"]).read()}}
    if os.environ.get("OUTPUT"):
        print(os.environ["OUTPUT"])
    else:
        print(json.dumps({{"apiVersion": os.environ["API_VERSION"], "kind": "ExecCredential",
                          "status": status}}))
    """)


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "credential-plugin"
    path.write_text(PLUGIN.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def stanza(plugin, tmp_path, api_version="client.authentication.k8s.io/v1", **env):
    return {"apiVersion": api_version, "command": plugin, "args": [str(tmp_path / "state")],
            "interactiveMode": "Never",
            "env": [{"name": "API_VERSION", "value": api_version}, {"name": "TEAM", "value": "blue"},
                    *({"name": k, "value": v} for k, v in env.items())]}


def tokens(proxy):
    return [s.headers.get("authorization") for s in proxy.seen]


@pytest.mark.parametrize("api_version", ["client.authentication.k8s.io/v1",
                                         "client.authentication.k8s.io/v1beta1"])
async def test_token_from_plugin_is_sent_and_rerun_after_expiry(apiserver, ns, plugin, tmp_path, api_version):
    expires = datetime.datetime.fromtimestamp(T0 + 600, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    cfg = kubeconfig.loads(json.dumps({
        "clusters": [{"name": "c", "cluster": {"server": apiserver.url, "proxy-url": "",
                                               "tls-server-name": "ignored.for.http",
                                               "extensions": [{"name": "client.authentication.k8s.io/exec",
                                                               "extension": {"audience": "lab"}}]}}],
        "users": [{"name": "u", "user": {"exec": {**stanza(plugin, tmp_path, api_version, EXPIRES=expires),
                                                  "provideClusterInfo": True}}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": ns}}],
        "current-context": "x"}))
    clock = FakeClock(wall=T0)
    async with RecordingProxy() as proxy:
        conn = cfg.connection()
        conn.proxy_url = proxy.url
        async with Client(conn, clock=clock, max_retries=0) as c:
            await c.get("namespaces", ns)
            await c.list("pods")
            assert tokens(proxy) == ["Bearer tok-1", "Bearer tok-1"], "cached until it expires"
            clock.step(599)
            await c.list("pods")
            clock.step(2)
            await c.list("pods")
            assert tokens(proxy)[2:] == ["Bearer tok-1", "Bearer tok-2"]
    info = json.loads((tmp_path / "state.info").read_text())
    assert info == {"apiVersion": api_version, "kind": "ExecCredential",
                    "spec": {"interactive": False,
                             "cluster": {"server": apiserver.url, "tls-server-name": "ignored.for.http",
                                         "config": {"audience": "lab"}}}}
    assert (tmp_path / "state.env").read_text() == "blue", "the stanza's env reaches the plugin"


async def test_a_401_runs_the_plugin_again_once(apiserver, ns, plugin, tmp_path):
    async with RecordingProxy(reject_tokens={"tok-1"}) as proxy:
        conn = apiserver.connection(proxy_url=proxy.url, exec=stanza(plugin, tmp_path))
        async with Client(conn, max_retries=2) as c:
            assert (await c.get("namespaces", ns))["metadata"]["name"] == ns
        assert tokens(proxy) == ["Bearer tok-1", "Bearer tok-2"]


async def test_client_certificate_from_plugin(apiserver, ns, plugin, tmp_path):
    server_cert, server_key = certificate("apiserver", ips=("127.0.0.1",))
    client_cert, client_key = certificate("robot")
    (tmp_path / "c.pem").write_bytes(client_cert)
    (tmp_path / "k.pem").write_bytes(client_key)
    port = int(apiserver.url.rsplit(":", 1)[1])
    async with TLSFront(("127.0.0.1", port), server_cert, server_key, client_ca=client_cert) as front:
        conn = Connection(server=f"https://127.0.0.1:{front.port}", ca_data=server_cert,
                          exec=stanza(plugin, tmp_path, CERT=str(tmp_path / "c.pem"),
                                      KEY=str(tmp_path / "k.pem")))
        async with Client(conn, max_retries=0) as c:
            assert (await c.get("namespaces", ns))["metadata"]["name"] == ns
    assert front.peers == [((("commonName", "robot"),),)]


@pytest.mark.parametrize("output, error", [
    ("not json", "invalid JSON"),
    ('{"apiVersion": "client.authentication.k8s.io/v1", "kind": "Pod", "status": {"token": "x"}}',
     "not an ExecCredential"),
    ('{"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential", "status": {"token": "x"}}',
     "does not match"),
    ('{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {}}',
     "neither a token nor a client certificate"),
    ('{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", '
     '"status": {"clientCertificateData": "x"}}', "must be given together"),
])
async def test_bad_plugin_output_is_a_clear_error(plugin, tmp_path, output, error):
    p = ExecPlugin(stanza(plugin, tmp_path, OUTPUT=output))
    with pytest.raises(ExecPluginError, match=error):
        await p.credential()


async def test_missing_command_shows_the_install_hint(tmp_path):
    p = ExecPlugin({"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(tmp_path / "nope"),
                    "installHint": "install it with: apt install nope"})
    assert p.interactive_mode == "IfAvailable", "v1beta1's default"
    with pytest.raises(ExecPluginError, match="(?s)cannot run.*install it with"):
        await p.credential()


async def test_interactive_always_without_a_terminal_is_an_error(plugin, tmp_path):
    p = ExecPlugin({**stanza(plugin, tmp_path), "interactiveMode": "Always"})
    with pytest.raises(ExecPluginError, match="not a terminal"):
        await p.credential()
    assert not (tmp_path / "state").exists(), "the plugin was not run"


@pytest.mark.parametrize("change, error", [
    ({"apiVersion": "client.authentication.k8s.io/v1alpha1"}, "apiVersion"),
    ({"command": ""}, "command is required"),
    ({"interactiveMode": None}, "interactiveMode must be specified"),
    ({"interactiveMode": "Sometimes"}, "invalid interactiveMode"),
    ({"env": [{"value": "x"}]}, "env entries need a name"),
])
def test_bad_exec_stanza_fails_when_the_kubeconfig_is_resolved(plugin, tmp_path, change, error):
    cfg = kubeconfig.KubeConfig()
    cfg.set_cluster("c", server="http://127.0.0.1:1")
    cfg.users["u"] = {"exec": {k: v for k, v in {**stanza(plugin, tmp_path), **change}.items() if v is not None}}
    cfg.set_context("x", cluster="c", user="u")
    with pytest.raises(ValueError, match=f"user 'u'.*{error}"):
        cfg.connection("x")
