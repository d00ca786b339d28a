"""In-cluster configuration (client/kubeconfig.py in_cluster, client-go's
rest.InClusterConfig) and a token file read again as it rotates (client/rest.py), against
a real HTTP server that records the credential each request carries."""
from __future__ import annotations

import http.server
import threading

import pytest

from client.clock import FakeClock
from client.kubeconfig import NotInCluster, in_cluster, loads
from client.rest import TOKEN_FILE_PERIOD, Client

ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


@pytest.fixture
def sa_dir(tmp_path):
    (tmp_path / "token").write_text("first-token\n")
    (tmp_path / "namespace").write_text("kube-system")
    (tmp_path / "ca.crt").write_text("not read until a TLS context is made")
    return tmp_path


def test_in_cluster_reads_the_service_account_files(sa_dir):
    conn = in_cluster(env=ENV, directory=str(sa_dir))
    assert conn.server == "https://10.96.0.1:443"
    assert (conn.token, conn.token_file) == ("first-token", str(sa_dir / "token"))
    assert conn.ca_file == str(sa_dir / "ca.crt") and conn.namespace == "kube-system"
    v6 = in_cluster(env={**ENV, "KUBERNETES_SERVICE_HOST": "fd00::1"}, directory=str(sa_dir))
    assert v6.server == "https://[fd00::1]:443"


def test_in_cluster_without_the_variables_or_the_token_is_an_error(sa_dir, tmp_path):
    with pytest.raises(NotInCluster, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined"):
        in_cluster(env={"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, directory=str(sa_dir))
    with pytest.raises(FileNotFoundError):
        in_cluster(env=ENV, directory=str(tmp_path / "nothing"))
    (sa_dir / "ca.crt").unlink()
    assert in_cluster(env=ENV, directory=str(sa_dir)).ca_file is None  # the system's trust store


def test_a_kubeconfig_token_file_is_kept_for_rereading(tmp_path):
    (tmp_path / "tok").write_text("t1")
    cfg = loads("clusters: [{name: c, cluster: {server: 'http://x'}}]\n"
                "users: [{name: u, user: {tokenFile: tok}}]\n"
                "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
                base_dir=str(tmp_path))
    conn = cfg.connection()
    assert (conn.token, conn.token_file) == ("t1", str(tmp_path / "tok"))


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Recorder.seen.append(self.headers.get("authorization", ""))
        body = b'{"kind": "Namespace", "metadata": {"name": "default"}}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Recorder.seen = []
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_a_rotated_token_file_is_read_again_after_a_minute(recorder, sa_dir):
    conn = in_cluster(env=ENV, directory=str(sa_dir))
    conn.server = recorder  # the same credential handling over plain HTTP
    clock = FakeClock(1000.0)
    client = Client(conn, clock=clock)
    try:
        await client.request("GET", "/api/v1/namespaces/default")
        (sa_dir / "token").write_text("second-token\n")
        clock.step(TOKEN_FILE_PERIOD / 2)
        await client.request("GET", "/api/v1/namespaces/default")
        clock.step(TOKEN_FILE_PERIOD / 2)
        await client.request("GET", "/api/v1/namespaces/default")
        (sa_dir / "token").unlink()  # unreadable: the last token goes on
        clock.step(TOKEN_FILE_PERIOD)
        await client.request("GET", "/api/v1/namespaces/default")
    finally:
        await client.close()
    assert Recorder.seen == ["Bearer first-token", "Bearer first-token", "Bearer second-token",
                             "Bearer second-token"]
