"""Real registries and real images for the image tests.

- `Registry`: Debian's `docker-registry` (distribution 2.8) serving on a free loopback
  port from a temp dir, plain HTTP, or TLS with a certificate the test makes plus
  htpasswd (bcrypt, written by apache2-utils' `htpasswd -B`) Basic auth, or bearer
  tokens from `TokenServer`. Started and stopped by PID; its access log counts blob GETs.
- `TokenServer`: a Docker token-auth server (the `realm` of a Bearer challenge) in a
  thread: anonymous tokens for any repository, as Docker Hub grants public pulls. Its JWTs
  are ES256, signed by a key whose certificate the registry trusts (`x5c` header).
- `build_images`: OCI images made with `umoci` from busybox-static (two sharing a base
  layer, one with a whiteout and an opaque directory, one multi-arch index), pushed with
  `skopeo copy`.
- `TamperingProxy`: an HTTP proxy in front of a registry that flips one byte of one
  blob's or manifest's body (the digest-mismatch tests), or redirects blob GETs.

The session-scoped pytest fixtures (import them by name into a test module):
`oci_images` (built once), `plain_registry` (plain HTTP; every image pushed as
`lab/<tag>:v1`, plus Docker schema 2 copies `lab/docker-app-a:v1` and
`lab/docker-multi:v1`), `auth_registry` (TLS + htpasswd; `private/app-a:v1`; client
config needs `.ca_file`, credentials USER/PASSWORD) and `token_registry` (bearer tokens;
`public/app-b:v1` for anyone, `private/app-a:v1` with USER/PASSWORD; yields (registry,
token server)).

`require_tools()` skips a test when a tool is missing, but fails it when CI=true (as
tests/conftest.py does for kubectl): in CI a missing tool is an install bug.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import io
import json
import os
import shutil
import socketserver
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.netfixtures import certificate
from tests.procs import free_port, wait_for

TOOLS = ("docker-registry", "skopeo", "umoci", "htpasswd")
BUSYBOX = "/bin/busybox"
USER, PASSWORD = "lab", "s3cret-pw"


def require_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not os.path.exists(BUSYBOX):
        missing.append("busybox-static (/bin/busybox)")
    if missing:
        msg = f"the image tests need {', '.join(missing)} (hack/setup.sh installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + ", and CI=true: they must run in CI", pytrace=False)
        pytest.skip(msg)


def _run(*cmd: str, **kw) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


# -- JWT for the token server (ES256, the token spec's JWS) ------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _es256_jwt(claims: dict, key_pem: bytes, cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
    signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class TokenServer:
    """Issues tokens for the scope asked: to anyone, except for repositories under
    `private/`, whose tokens need Basic USER/PASSWORD at the realm (401 otherwise), as
    Docker Hub's private repositories do. Records the scopes it issued tokens for."""

    SERVICE, ISSUER = "minik8s-test-registry", "minik8s-test-token-server"

    def __init__(self, expires_in: int = 300):
        self.cert, self.key = certificate("token-signer")
        self.expires_in = expires_in
        self.issued: list[str] = []  # scopes
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = parse_qs(urlsplit(self.path).query)
                scope = q.get("scope", [""])[0]
                if q.get("service", [""])[0] != outer.SERVICE:
                    self.send_response(400)
                    self.end_headers()
                    return
                private = any(part.startswith("repository:private/") for part in q.get("scope", []))
                basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if private and self.headers.get("Authorization") != basic:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                access = []
                if scope.startswith("repository:"):
                    _, name, actions = scope.split(":", 2)
                    access = [{"type": "repository", "name": name,
                               "actions": actions.split(",")}]
                now = int(time.time())
                token = _es256_jwt({"iss": outer.ISSUER, "sub": "", "aud": outer.SERVICE,
                                    "exp": now + outer.expires_in, "nbf": now - 10, "iat": now,
                                    "jti": uuid.uuid4().hex, "access": access}, outer.key, outer.cert)
                outer.issued.append(scope)
                body = json.dumps({"token": token, "expires_in": outer.expires_in}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port>. `tls` makes a certificate for
    127.0.0.1 (`ca_file` is it); `htpasswd` turns on Basic auth for USER/PASSWORD;
    `token_server` turns on bearer-token auth."""

    def __init__(self, *, tls: bool = False, htpasswd: bool = False, token_server: TokenServer | None = None):
        self.dir = tempfile.mkdtemp(prefix="minik8s-registry-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.tls, self.htpasswd, self.token_server = tls, htpasswd, token_server
        self.ca_file: str | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.dir, "registry.log")

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _config(self) -> str:
        lines = ["version: 0.1", "log:", "  level: info", "  accesslog:", "    disabled: false",
                 "storage:", "  filesystem:", f"    rootdirectory: {self.dir}/data",
                 "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.host}", "  headers:", "    X-Content-Type-Options: [nosniff]"]
        if self.tls:
            cert, key = certificate("minik8s test registry", ips=("127.0.0.1",))
            self.ca_file = os.path.join(self.dir, "ca.pem")
            with open(self.ca_file, "wb") as f:
                f.write(cert)
            with open(os.path.join(self.dir, "key.pem"), "wb") as f:
                f.write(key)
            lines += ["  tls:", f"    certificate: {self.ca_file}", f"    key: {self.dir}/key.pem"]
        if self.htpasswd:
            path = os.path.join(self.dir, "htpasswd")
            with open(path, "w") as f:
                f.write(_run("htpasswd", "-Bbn", USER, PASSWORD))
            lines += ["auth:", "  htpasswd:", "    realm: minik8s-test", f"    path: {path}"]
        elif self.token_server is not None:
            bundle = os.path.join(self.dir, "token-signer.pem")
            with open(bundle, "wb") as f:
                f.write(self.token_server.cert)
            lines += ["auth:", "  token:", f"    realm: {self.token_server.realm}",
                      f"    service: {TokenServer.SERVICE}", f"    issuer: {TokenServer.ISSUER}",
                      f"    rootcertbundle: {bundle}"]
        return "\n".join(lines) + "\n"

    def start(self) -> Registry:
        path = os.path.join(self.dir, "config.yml")
        with open(path, "w") as f:
            f.write(self._config())
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", path], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {open(self.log_path).read()[-2000:]}")
            # 200, or 401 when auth is on: either way it answers.
            return httpx.get(self.url + "/v2/", verify=False, timeout=2).status_code in (200, 401)

        try:
            wait_for(up, timeout=30, what=f"docker-registry on {self.host}")
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def blob_gets(self, repository: str, digest: str) -> int:
        """Successful GETs of one blob, from the registry's access log."""
        needle = f'"GET /v2/{repository}/blobs/{digest} '
        with open(self.log_path, errors="replace") as f:
            return sum(1 for line in f if needle in line and '" 200 ' in line)

    def push(self, layout: str, tag: str, repository: str, dest_tag: str | None = None, *,
             all_platforms: bool = False, docker_format: bool = False) -> None:
        """skopeo copy from the OCI layout; `docker_format` converts to Docker schema 2
        (manifest, or manifest list with `all_platforms`)."""
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        if docker_format:
            cmd += ["--format", "v2s2"]
        if self.htpasswd or self.token_server is not None:
            cmd += ["--dest-creds", f"{USER}:{PASSWORD}"]
        if all_platforms:
            cmd += ["--all"]
        _run(*cmd, f"oci:{layout}:{tag}", f"docker://{self.host}/{repository}:{dest_tag or tag}")


# -- images --------------------------------------------------------------------------------

@dataclass
class BuiltImage:
    tag: str
    manifest_digest: str
    config_digest: str
    layers: list[str]  # compressed layer digests, bottom first
    diff_ids: list[str]


@dataclass
class Images:
    layout: str
    images: dict[str, BuiltImage] = field(default_factory=dict)
    index_digest: str = ""  # of the "multi" index
    index_platforms: list[str] = field(default_factory=list)


def _blob(layout: str, digest: str) -> bytes:
    with open(os.path.join(layout, "blobs", *digest.split(":")), "rb") as f:
        return f.read()


def _put_blob(layout: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest[7:]), "wb") as f:
        f.write(data)
    return digest


def _index(layout: str) -> dict:
    with open(os.path.join(layout, "index.json")) as f:
        return json.load(f)


def _manifest_desc(layout: str, tag: str) -> dict:
    for m in _index(layout)["manifests"]:
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
            return m
    raise KeyError(tag)


def _describe(layout: str, tag: str) -> BuiltImage:
    desc = _manifest_desc(layout, tag)
    manifest = json.loads(_blob(layout, desc["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    return BuiltImage(tag, desc["digest"], manifest["config"]["digest"],
                      [la["digest"] for la in manifest["layers"]], config["rootfs"]["diff_ids"])


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """An uncompressed layer tar: (name, content) files, (name, None) directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_images(workdir: str) -> Images:
    """OCI images in a layout at workdir/layout:
    - base: one layer, busybox-static as /bin/busybox with /bin/sh and friends, /etc/passwd;
    - app-a, app-b: base's layer plus one of their own (a file /app/a or /app/b), with
      Entrypoint/Cmd/Env/WorkingDir/User;
    - whiteout: base + a layer with /etc/motd and /data/{x,y}, then a layer removing
      /etc/motd (a whiteout) and replacing /data (an opaque directory with /data/z);
    - arm64: app-a's layers under an arm64/v8 config;
    - multi: an OCI index of app-a (linux/amd64) and arm64 (linux/arm64/v8)."""
    layout = os.path.join(workdir, "layout")
    _run("umoci", "init", "--layout", layout)
    _run("umoci", "new", "--image", f"{layout}:base")
    root = os.path.join(workdir, "rootfs")
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "etc"))
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for applet in ("sh", "cat", "ls", "echo", "id", "env", "pwd", "sleep", "true"):
        os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    _run("umoci", "insert", "--image", f"{layout}:base", root, "/")
    _run("umoci", "config", "--image", f"{layout}:base", "--config.env", "PATH=/bin",
         "--config.cmd", "/bin/sh")

    for name in ("a", "b"):
        tag = f"app-{name}"
        _run("umoci", "tag", "--image", f"{layout}:base", tag)
        src = os.path.join(workdir, f"app-{name}")
        with open(src, "w") as f:
            f.write(f"this is app {name}\n")
        _run("umoci", "insert", "--image", f"{layout}:{tag}", src, f"/app/{name}")
        _run("umoci", "config", "--image", f"{layout}:{tag}",
             "--config.entrypoint", "/bin/sh", "--config.entrypoint", "-c",
             "--config.cmd", f"cat /app/{name}", "--config.env", f"APP={name}",
             "--config.workingdir", "/app", "--config.user", "app")

    _run("umoci", "tag", "--image", f"{layout}:base", "whiteout")
    for i, entries in enumerate((
            [("etc/", None), ("etc/motd", b"hello\n"), ("data/", None), ("data/x", b"x\n"), ("data/y", b"y\n")],
            [("etc/", None), ("etc/.wh.motd", b""), ("data/", None), ("data/.wh..wh..opq", b""),
             ("data/z", b"z\n")])):
        path = os.path.join(workdir, f"whiteout-{i}.tar")
        with open(path, "wb") as f:
            f.write(_tar(entries))
        _run("umoci", "raw", "add-layer", "--image", f"{layout}:whiteout", path)

    _run("umoci", "tag", "--image", f"{layout}:app-a", "arm64")
    _run("umoci", "config", "--image", f"{layout}:arm64", "--architecture", "arm64")
    # umoci has no flag for the variant: write it into the config and manifest by hand.
    arm = _manifest_desc(layout, "arm64")
    manifest = json.loads(_blob(layout, arm["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    config["variant"] = "v8"
    cfg = json.dumps(config).encode()
    manifest["config"] = {**manifest["config"], "digest": _put_blob(layout, cfg), "size": len(cfg)}
    mbytes = json.dumps(manifest).encode()
    arm_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _put_blob(layout, mbytes),
                "size": len(mbytes), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
    amd = _manifest_desc(layout, "app-a")
    amd_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd["digest"],
                "size": amd["size"], "platform": {"os": "linux", "architecture": "amd64"}}
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [amd_desc, arm_desc]}).encode()
    index_digest = _put_blob(layout, index)
    top = _index(layout)
    top["manifests"] = [m for m in top["manifests"]
                        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != "arm64"]
    top["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest,
                             "size": len(index),
                             "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(top, f)
    _run("umoci", "gc", "--layout", layout)

    out = Images(layout, index_digest=index_digest, index_platforms=["linux/amd64", "linux/arm64/v8"])
    for tag in ("base", "app-a", "app-b", "whiteout"):
        out.images[tag] = _describe(layout, tag)
    return out


# -- a tampering proxy ---------------------------------------------------------------------

class TamperingProxy:
    """Forwards plain-HTTP GETs to `upstream` (a registry's base URL). The body of a GET
    whose path ends with `/<target>` (a blob's digest, or a manifest's tag or digest)
    comes back with its first byte flipped (or, with `truncate`, its last byte cut),
    `times` times. With `redirect_blobs`, blob
    GETs are answered with a 307 to the upstream instead, as registries send blob GETs
    to their storage; `redirected` counts those."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.target = ""
        self.times = 0
        self.tampered = 0
        self.truncate = False
        self.redirect_blobs = False
        self.redirected = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if outer.redirect_blobs and "/blobs/" in self.path:
                    outer.redirected += 1
                    self.send_response(307)
                    self.send_header("Location", outer.upstream + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
                r = httpx.get(outer.upstream + self.path, headers=headers, follow_redirects=True, timeout=30)
                body = r.content
                if outer.target and self.path.endswith("/" + outer.target) and outer.times > 0 \
                        and r.status_code == 200:
                    outer.times -= 1
                    outer.tampered += 1
                    body = body[:-1] if outer.truncate else bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() in ("content-type", "docker-content-digest", "www-authenticate"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# -- session fixtures ----------------------------------------------------------------------

IMAGE_TAGS = ("base", "app-a", "app-b", "whiteout")


@contextlib.contextmanager
def _running(registry: Registry):
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def oci_images(tmp_path_factory) -> Images:
    require_tools()
    return build_images(str(tmp_path_factory.mktemp("oci-images")))


@pytest.fixture(scope="session")
def plain_registry(oci_images):
    with _running(Registry()) as r:
        for tag in IMAGE_TAGS:
            r.push(oci_images.layout, tag, f"lab/{tag}", "v1")
        r.push(oci_images.layout, "multi", "lab/multi", "v1", all_platforms=True)
        r.push(oci_images.layout, "app-a", "lab/docker-app-a", "v1", docker_format=True)
        r.push(oci_images.layout, "multi", "lab/docker-multi", "v1", all_platforms=True, docker_format=True)
        yield r


@pytest.fixture(scope="session")
def auth_registry(oci_images):
    with _running(Registry(tls=True, htpasswd=True)) as r:
        r.push(oci_images.layout, "app-a", "private/app-a", "v1")
        yield r


@pytest.fixture(scope="session")
def token_registry(oci_images):
    ts = TokenServer()
    try:
        with _running(Registry(token_server=ts)) as r:
            r.push(oci_images.layout, "app-b", "public/app-b", "v1")
            r.push(oci_images.layout, "app-a", "private/app-a", "v1")
            yield r, ts
    finally:
        ts.stop()
