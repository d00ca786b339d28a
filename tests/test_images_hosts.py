"""The node registry config (k3s's registries.yaml, kubelet/images/hosts.py) and pulls
through it against real registries: mirrors tried in order then the registry itself,
rewrites, per-host CA and credentials, plain HTTP only where configured; a bad file
stops the kubelet and `minik8s up` with one line naming the file and the key."""
from __future__ import annotations

import asyncio
import base64
import http.server
import os
import re
import ssl
import subprocess
import sys
import threading

import pytest

from cluster import bringup
from cluster.state import ClusterConfig
from kubelet import main as kubelet_main
from kubelet.images import hosts
from kubelet.images.registry import (Credentials, RegistryClient, RegistryError, RegistryHostConfig,
                                     go_expand, rewrite_repository)
from kubelet.images.service import ImageService, PullError
from kubelet.images.store import ContentStore
from tests.images_fixtures import (PASSWORD, USER, Registry, auth_registry, oci_images,  # noqa: F401
                                   plain_registry)
from tests.netfixtures import certificate
from tests.procs import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSTREAM = "upstream.invalid"  # a registry name that never resolves: only its mirrors can serve it


def mirror_gets(registry: Registry, repository: str, digest: str) -> int:
    """Successful GETs of one blob through a mirror (with its ?ns= query), from the log."""
    needle = re.compile(rf'"GET /v2/{re.escape(repository)}/blobs/{digest}\?ns=[^ ]* HTTP/[0-9.]+" 200 ')
    with open(registry.log_path, errors="replace") as f:
        return sum(1 for line in f if needle.search(line))


def write(tmp_path, text: str, name: str = "registries.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- parsing -----------------------------------------------------------------------------

def test_a_full_file_is_read_into_per_host_configs(tmp_path):
    ca = write(tmp_path, "ca", "ca.pem")
    cert, key = write(tmp_path, "c", "c.pem"), write(tmp_path, "k", "k.pem")
    path = write(tmp_path, f"""
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.lab:5000"
      - mirror2.lab
      - "http://10.0.0.5:5000/v2/"
      - "https://harbor.lab/v2/proxy-dockerhub"
      - "localhost:5001"
    rewrite:
      "^library/(.*)": "hub/$1"
  "*":
    endpoint: ["https://everything.lab"]
configs:
  "mirror.lab:5000":
    auth: {{username: lab, password: pw}}
    tls: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}
  mirror2.lab:
    auth: {{auth: {base64.b64encode(b"u:p:with:colons").decode()}}}
    tls: {{insecure_skip_verify: true}}
  "*":
  registry-1.docker.io:
    auth: {{identitytoken: refresh-me}}
""")
    cfg = hosts.load(path)
    assert cfg["docker.io"].mirrors == ("https://mirror.lab:5000/v2", "https://mirror2.lab/v2",
                                        "http://10.0.0.5:5000/v2", "https://harbor.lab/v2/proxy-dockerhub",
                                        "http://localhost:5001/v2")
    assert cfg["docker.io"].rewrite == (("^library/(.*)", "hub/$1"),)
    assert cfg["*"].mirrors == ("https://everything.lab/v2",)
    m = cfg["mirror.lab:5000"]
    assert (m.credentials, m.ca_file, m.cert_file, m.key_file) == (Credentials("lab", "pw"), ca, cert, key)
    assert cfg["mirror2.lab"].credentials == Credentials("u", "p:with:colons")
    assert cfg["mirror2.lab"].insecure_skip_verify and cfg["mirror2.lab"].mirrors == ()
    assert cfg["registry-1.docker.io"].credentials == Credentials("", "", identity_token="refresh-me")
    assert hosts.load(write(tmp_path, "")) == {}


@pytest.mark.parametrize("endpoint,want", [
    ("https://r.lab", "https://r.lab/v2"),
    ("r.lab:5000", "https://r.lab:5000/v2"),
    ("127.0.0.1:5000", "http://127.0.0.1:5000/v2"),      # containerd: localhost on another port
    ("localhost:443", "https://localhost:443/v2"),
    ("http://r.lab/", "http://r.lab/v2"),
    ("https://r.lab/v2", "https://r.lab/v2"),
    ("https://r.lab/sub/path/", "https://r.lab/sub/path"),  # a path of its own: the API root as given
    ("docker.io", "https://registry-1.docker.io/v2"),
])
def test_endpoints_are_normalized_as_k3s_does(endpoint, want):
    assert hosts.normalize_endpoint(endpoint) == want


@pytest.mark.parametrize("text,where,why", [
    ("mirrors: [a]\n", "mirrors", "want a mapping"),
    ("mirrorz: {}\n", "mirrorz", "unknown key"),
    ("mirrors:\n  docker.io:\n    endpoint: https://m.lab\n", 'mirrors."docker.io".endpoint', "list of URLs"),
    ("mirrors:\n  docker.io:\n    endpoint: [ftp://m.lab]\n", 'mirrors."docker.io".endpoint[0]', "http or https"),
    ("mirrors:\n  docker.io:\n    endpoint: ['https://m.lab?x=1']\n", 'mirrors."docker.io".endpoint[0]',
     "no query"),
    ("mirrors:\n  docker.io:\n    endpoints: [https://m.lab]\n", 'mirrors."docker.io".endpoints', "unknown key"),
    ("mirrors:\n  docker.io:\n    rewrite: {'^(a': b}\n", 'mirrors."docker.io".rewrite."^(a"', "regular expression"),
    ("mirrors:\n  'bad host':\n    endpoint: []\n", 'mirrors."bad host"', "host[:port]"),
    ("configs:\n  r.lab:\n    auth: {auth: bm9jb2xvbg==}\n", 'configs."r.lab".auth.auth', "base64"),
    ("configs:\n  r.lab:\n    auth: {token: x}\n", 'configs."r.lab".auth.token', "unknown key"),
    ("configs:\n  r.lab:\n    tls: {ca_file: /nonexistent/ca.pem}\n", 'configs."r.lab".tls.ca_file',
     "cannot read /nonexistent/ca.pem"),
    ("configs:\n  r.lab:\n    tls: {cert_file: /etc/hostname}\n", 'configs."r.lab".tls.key_file', "go together"),
    ("configs:\n  r.lab:\n    tls: {insecure_skip_verify: 'no'}\n", 'configs."r.lab".tls.insecure_skip_verify',
     "true or false"),
    ("mirrors:\n  docker.io:\n    endpoint: [a\n", "", "not valid YAML at line"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, where, why):
    path = write(tmp_path, text)
    with pytest.raises(hosts.RegistryConfigError) as e:
        hosts.load(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {where}"), msg
    assert why in msg


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(hosts.RegistryConfigError, match=r"^/nonexistent/r\.yaml: cannot read the registry config"):
        hosts.load("/nonexistent/r.yaml")


def test_rewrites_use_gos_replacement_syntax():
    rx = re.compile(r"^(?P<org>[a-z]+)/(.*)$")
    m = rx.match("rancher/pause")
    assert m is not None
    assert go_expand("mirror/$org/${2}-x/$$/$9/$2x", m) == "mirror/rancher/pause-x/$//"
    rules = (("^nomatch/(.*)", "x/$1"), ("^rancher/(.*)", "mirrorproject/rancher-images/$1"), ("(.*)", "last/$1"))
    assert rewrite_repository(rules, "rancher/pause") == "mirrorproject/rancher-images/pause"
    assert rewrite_repository(rules[:2], "library/nginx") == "library/nginx"


# -- pulls through the config --------------------------------------------------------------

@pytest.fixture(scope="module")
def mirror(oci_images):
    """A second registry standing in as the lab's mirror: app-a under the upstream's
    repository name, app-b only under a rewritten one."""
    r = Registry().start()
    try:
        r.push(oci_images.layout, "app-a", "lab/app-a", "v1")
        r.push(oci_images.layout, "app-b", "mirrored/lab/app-b", "v1")
        yield r
    finally:
        r.stop()


def pull(tmp_path, text: str, image: str, credentials=()):
    """Pulls `image` with the registries.yaml `text` into a new store; (store, result or error)."""
    store = ContentStore(str(tmp_path / "store"))

    async def main():
        svc = ImageService(store, registries=hosts.load(write(tmp_path, text)))
        try:
            return await svc.pull(image, credentials)
        except PullError as e:
            return e
        finally:
            await svc.aclose()
    return store, asyncio.run(main())


def test_a_pull_through_a_mirror_fetches_the_blobs_from_it(tmp_path, mirror, oci_images):
    dead = f"127.0.0.1:{free_port()}"
    store, result = pull(tmp_path, f"""
mirrors:
  {UPSTREAM}:
    endpoint: ["http://{dead}", "http://{mirror.host}"]
""", f"{UPSTREAM}/lab/app-a:v1")
    assert not isinstance(result, Exception), result
    built = oci_images.images["app-a"]
    assert result.record.name == f"{UPSTREAM}/lab/app-a:v1"  # stored under its own name
    assert result.image_id == f"{UPSTREAM}/lab/app-a@{built.manifest_digest}"
    for digest in built.layers:
        assert mirror_gets(mirror, "lab/app-a", digest) >= 1
        assert store.has_blob(digest)
    with open(mirror.log_path) as f:
        assert f"ns={UPSTREAM}" in f.read()  # the mirror is told which registry the image is from


def test_a_mirror_without_the_image_passes_the_pull_to_the_next(tmp_path, mirror, plain_registry, oci_images):
    # plain_registry answers 404 for mirrored/...: the next mirror has it.
    store, result = pull(tmp_path, f"""
mirrors:
  {UPSTREAM}:
    endpoint: ["http://{plain_registry.host}", "http://{mirror.host}"]
    rewrite:
      "^lab/(.*)$": "mirrored/lab/$1"
""", f"{UPSTREAM}/lab/app-b:v1")
    assert not isinstance(result, Exception), result
    own = oci_images.images["app-b"].layers[1]
    assert mirror_gets(mirror, "mirrored/lab/app-b", own) >= 1 and store.has_blob(own)


def test_when_every_endpoint_fails_the_first_real_error_is_reported(tmp_path, plain_registry):
    dead = f"127.0.0.1:{free_port()}"
    store, result = pull(tmp_path, f"""
mirrors:
  {UPSTREAM}:
    endpoint: ["http://{plain_registry.host}", "http://{dead}"]
""", f"{UPSTREAM}/lab/nothing:v1")
    # The first mirror's 404 is passed over for the dead one's "connection refused" (then
    # the upstream itself, which does not resolve).
    assert isinstance(result, PullError)
    assert f"cannot connect to registry {dead}: connection refused" in str(result)
    assert os.listdir(os.path.join(store.root, "blobs", "sha256")) == []


def test_the_ca_and_auth_from_configs_reach_a_tls_registry(tmp_path, auth_registry, oci_images):
    host = auth_registry.host
    image = f"{host}/private/app-a:v1"
    _, no_ca = pull(tmp_path / "1", "configs: {}\n", image)
    assert isinstance(no_ca, PullError) and "CERTIFICATE_VERIFY_FAILED" in str(no_ca)
    _, no_auth = pull(tmp_path / "2", f"configs:\n  '{host}':\n    tls: {{ca_file: {auth_registry.ca_file}}}\n",
                      image)
    assert isinstance(no_auth, PullError) and f"401 Unauthorized from {host}" in str(no_auth)
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    store, ok = pull(tmp_path / "3", f"""
configs:
  "{host}":
    auth: {{auth: {encoded}}}
    tls: {{ca_file: {auth_registry.ca_file}}}
""", image)
    assert not isinstance(ok, Exception), ok
    assert ok.record.manifest_digest == oci_images.images["app-a"].manifest_digest


def test_a_tls_mirror_uses_the_credentials_of_its_own_host(tmp_path, auth_registry, oci_images):
    # As k3s: configs are keyed by the endpoint's host, not by the registry mirrored.
    store, result = pull(tmp_path, f"""
mirrors:
  {UPSTREAM}:
    endpoint: ["https://{auth_registry.host}"]
configs:
  "{auth_registry.host}":
    auth: {{username: {USER}, password: {PASSWORD}}}
    tls: {{ca_file: {auth_registry.ca_file}}}
""", f"{UPSTREAM}/private/app-a:v1")
    assert not isinstance(result, Exception), result
    assert result.record.name == f"{UPSTREAM}/private/app-a:v1"
    assert all(store.has_blob(d) for d in oci_images.images["app-a"].layers)


def test_plain_http_only_for_endpoints_configured_so(tmp_path, plain_registry):
    # Configured (auth, no http:// endpoint), but not as plain HTTP: TLS is tried, and fails.
    store, result = pull(tmp_path, f"configs:\n  '{plain_registry.host}':\n    auth: {{username: a, password: b}}\n",
                         f"{plain_registry.host}/lab/app-a:v1")
    assert isinstance(result, PullError) and f"cannot connect to registry {plain_registry.host}" in str(result)
    assert os.listdir(os.path.join(store.root, "blobs", "sha256")) == []
    # A mirror entry naming the registry's own address with http:// is how k3s says "insecure".
    _, ok = pull(tmp_path / "2", f"mirrors:\n  '{plain_registry.host}':\n    endpoint: "
                 f"['http://{plain_registry.host}']\n", f"{plain_registry.host}/lab/app-a:v1")
    assert not isinstance(ok, Exception), ok


def test_the_endpoint_order_is_mirrors_then_the_registry_itself():
    client = RegistryClient({
        "docker.io": RegistryHostConfig(mirrors=("https://m1.lab/v2", "https://registry-1.docker.io/v2",
                                                 "http://m2.lab:5000/v2")),
        "*": RegistryHostConfig(mirrors=("https://all.lab/v2",)),
        "own.lab": RegistryHostConfig()})
    assert [(e.url, e.mirror) for e in client.endpoints("docker.io")] == [
        ("https://m1.lab/v2", True), ("http://m2.lab:5000/v2", True), ("https://registry-1.docker.io/v2", False)]
    assert [e.url for e in client.endpoints("quay.io")] == ["https://all.lab/v2", "https://quay.io/v2"]
    assert [e.url for e in client.endpoints("own.lab")] == ["https://own.lab/v2"]  # its own entry: no "*"
    asyncio.run(client.aclose())


class _Redirector(http.server.BaseHTTPRequestHandler):
    """An HTTPS registry that sends every GET to plain HTTP (`target`)."""
    target = ""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_no_redirect_takes_an_https_endpoint_to_plain_http(tmp_path, plain_registry):
    cert, key = certificate("redirector", ips=("127.0.0.1",))
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    handler = type("H", (_Redirector,), {"target": plain_registry.url})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    store = ContentStore(str(tmp_path / "store"))

    async def main():
        async with RegistryClient({host: RegistryHostConfig(ca_file=str(tmp_path / "cert.pem"))}) as c:
            await c.pull(host, "lab/app-a", "v1", store)
    try:
        with pytest.raises(RegistryError, match=rf"registry {host} redirected to http://{plain_registry.host}: "
                                                "plain HTTP is only used for endpoints configured as http://"):
            asyncio.run(main())
    finally:
        server.shutdown()
        server.server_close()
    assert os.listdir(os.path.join(store.root, "blobs", "sha256")) == []


# -- the flags -----------------------------------------------------------------------------

def run(*argv: str):
    return subprocess.run([sys.executable, "-m", "cluster.cli", *argv], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_the_kubelet_refuses_to_start_with_a_bad_registry_config(tmp_path):
    bad = write(tmp_path, "mirrors:\n  docker.io:\n    endpoint: [ftp://x]\n")
    r = run("kubelet", "--kubeconfig", "/nonexistent/kubeconfig", "--registry-config", bad)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f'error: {bad}: mirrors."docker.io".endpoint[0]: \'ftp://x\': the scheme must be http or https')
    r = run("kubelet", "--kubeconfig", "/nonexistent/kubeconfig", "--image-gc-high-threshold", "70",
            "--image-gc-low-threshold", "80")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == ("error: --image-gc-low-threshold (80) must be less than "
                                                 "--image-gc-high-threshold (70)")


def test_minik8s_up_refuses_a_bad_registry_config_before_starting_anything(tmp_path):
    bad = write(tmp_path, "configs:\n  r.lab:\n    tls: {ca_file: /nonexistent/ca.pem}\n")
    state = tmp_path / "state"
    r = run("up", "--state-dir", str(state), "--runtime", "fake", "--registry-config", bad)
    assert r.returncode == 1
    assert r.stderr.strip() == (f'minik8s: error: {bad}: configs."r.lab".tls.ca_file: cannot read '
                                f'/nonexistent/ca.pem: No such file or directory')
    assert not (state / "cluster.json").exists()


def test_up_passes_the_registry_config_to_every_kubelet(tmp_path):
    good = write(tmp_path, "mirrors:\n  docker.io:\n    endpoint: [https://m.lab]\n")
    cfg = ClusterConfig(state_dir=str(tmp_path), runtime="linux", nodes=2, registry_config=good)
    specs = [s for s in bringup.component_specs(cfg, etcd_port=1, etcd_peer_port=2)
             if s.name.startswith(bringup.KUBELET_PREFIX)]
    assert len(specs) == 2
    for spec in specs:
        args = kubelet_main.parse(spec.argv[spec.argv.index("kubelet") + 1:])
        assert args.registry_config == good
        assert kubelet_main.check_image_flags(args) is None
        assert args.registries["docker.io"].mirrors == ("https://m.lab/v2",)
