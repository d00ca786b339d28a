"""Kubeconfig files (~/.kube/config format): load, merge, resolve to a connection, write.

Guarantees
- `load()` reads an explicit path, else every file in `$KUBECONFIG` (os.pathsep
  separated, missing files skipped), else `~/.kube/config` if it exists (an empty
  config otherwise), and merges them as kubectl
  does: the first file to define a cluster, user or context name wins, and
  `current-context` comes from the first file that sets it.
- File paths inside a file (certificate-authority, client-certificate, client-key,
  tokenFile) are resolved relative to that file's directory at load time.
- Entries are kept as the dicts found in the file, unknown fields included, so
  `save()` followed by `load()` gives back an equal `KubeConfig`.
- `KubeConfig.connection(context=None)` resolves one context into a `Connection`
  (server, namespace, token, TLS material, proxy, exec plugin) that
  `client.rest.Client` takes. Inline `*-data` fields win over their file
  counterparts, as in client-go. The cluster's `proxy-url` (http or https; socks5 is
  refused with a clear error, see client/proxy.py) and `tls-server-name` are carried
  over; a user's `exec` stanza is checked here (client/execcred.py) and run by the
  client when it first needs a credential. A bad entry is a ValueError naming it, and
  so is a file that is not YAML or has a part of the wrong shape.
- `in_cluster()` is client-go's rest.InClusterConfig: a pod's connection to its API
  server from KUBERNETES_SERVICE_HOST/PORT, the ServiceAccount token and ca.crt projected
  at /var/run/secrets/kubernetes.io/serviceaccount (and its `namespace`). A token read
  from a file (in-cluster, or a kubeconfig's tokenFile) is carried as `token_file` too,
  and `client.rest.Client` reads the file again once a minute, as client-go's cached
  file token source does, so a rotated projected token is picked up.

Concurrency: plain values and file I/O; nothing is shared or cached.
"""
from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml


_PATH_FIELDS = {"cluster": ("certificate-authority",),
                "user": ("client-certificate", "client-key", "tokenFile")}
_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


@dataclass
class KubeConfig:
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict[str, Any])
    users: dict[str, dict[str, Any]] = field(default_factory=dict[str, Any])
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict[str, Any])
    current_context: str = ""
    preferences: dict[str, Any] = field(default_factory=dict)

    # -- building (what `minik8s` bring-up writes) --------------------------------------

    def set_cluster(self, name: str, *, server: str, certificate_authority: str | None = None,
                    certificate_authority_data: bytes | str | None = None,
                    insecure_skip_tls_verify: bool | None = None) -> None:
        entry = {"server": server}
        _put(entry, "certificate-authority", certificate_authority)
        _put(entry, "certificate-authority-data", _b64(certificate_authority_data))
        _put(entry, "insecure-skip-tls-verify", insecure_skip_tls_verify)
        self.clusters[name] = entry

    def set_user(self, name: str, *, token: str | None = None, token_file: str | None = None,
                 client_certificate: str | None = None, client_certificate_data: bytes | str | None = None,
                 client_key: str | None = None, client_key_data: bytes | str | None = None) -> None:
        entry: dict[str, Any] = {}
        _put(entry, "token", token)
        _put(entry, "tokenFile", token_file)
        _put(entry, "client-certificate", client_certificate)
        _put(entry, "client-certificate-data", _b64(client_certificate_data))
        _put(entry, "client-key", client_key)
        _put(entry, "client-key-data", _b64(client_key_data))
        self.users[name] = entry

    def set_context(self, name: str, *, cluster: str, user: str, namespace: str | None = None) -> None:
        entry = {"cluster": cluster, "user": user}
        _put(entry, "namespace", namespace)
        self.contexts[name] = entry

    # -- reading --------------------------------------------------------------------

    def connection(self, context: str | None = None, *, namespace: str | None = None) -> Connection:
        name = context or self.current_context
        if not name:
            raise ValueError("kubeconfig has no current-context and none was given")
        if name not in self.contexts:
            raise ValueError(f"context {name!r} not found in kubeconfig")
        ctx = self.contexts[name]
        cluster = self.clusters.get(ctx.get("cluster", ""))
        if cluster is None:
            raise ValueError(f"cluster {ctx.get('cluster')!r} of context {name!r} not found")
        user = self.users.get(ctx.get("user", ""), {})
        token = user.get("token")
        if not token and user.get("tokenFile"):
            with open(user["tokenFile"]) as f:
                token = f.read().strip()
        proxy_url = cluster.get("proxy-url") or None
        if proxy_url:
            from client.proxy import parse_proxy_url  # only then: ~2 ms of a CLI's start-up
            try:
                parse_proxy_url(proxy_url)
            except ValueError as e:
                raise ValueError(f"cluster {ctx.get('cluster')!r}: {e}") from None
        exec_config = user.get("exec") or None
        if exec_config is not None:
            from client.execcred import ExecPlugin  # only then: ~2 ms of a CLI's start-up
            try:
                ExecPlugin(exec_config)  # validate now: a typo fails here, not mid-request
            except ValueError as e:
                raise ValueError(f"user {ctx.get('user')!r}: {e}") from None
        return Connection(
            token_file=user.get("tokenFile") if not user.get("token") else None,
            proxy_url=proxy_url, tls_server_name=cluster.get("tls-server-name") or None,
            exec=exec_config, exec_cluster=cluster if exec_config is not None else None,
            server=cluster["server"], namespace=namespace or ctx.get("namespace") or "default",
            token=token or None,
            ca_file=cluster.get("certificate-authority"),
            ca_data=_unb64(cluster.get("certificate-authority-data")),
            cert_file=user.get("client-certificate"),
            cert_data=_unb64(user.get("client-certificate-data")),
            key_file=user.get("client-key"), key_data=_unb64(user.get("client-key-data")),
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)))

    # -- writing --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
        for section, body in _SECTIONS:
            out[section] = [{"name": n, body: dict(e)} for n, e in getattr(self, section).items()]
        out["current-context"] = self.current_context
        out["preferences"] = dict(self.preferences)
        return out

    def dumps(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str) -> None:
        """Write atomically with mode 0600: a kubeconfig holds credentials."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kubeconfig-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.dumps())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


@dataclass
class Connection:
    """Everything needed to reach one API server as one user."""
    server: str
    namespace: str = "default"
    token: str | None = None
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_file: str | None = None
    cert_data: bytes | None = None
    key_file: str | None = None
    key_data: bytes | None = None
    insecure: bool = False
    proxy_url: str | None = None          # the cluster's proxy-url: every request goes there
    tls_server_name: str | None = None    # the name checked in the server's certificate
    exec: dict[str, Any] | None = None    # the user's exec credential plugin stanza
    exec_cluster: dict[str, Any] | None = None  # the cluster entry, for provideClusterInfo
    token_file: str | None = None         # where `token` was read: reread as it rotates

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What httpx takes as `verify`: a context carrying the CA and client certificate."""
        if not self.server.startswith("https://"):
            return True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # A cluster's CA replaces the system's trust store rather than adding to it.
        if self.ca_data:
            ctx.load_verify_locations(cadata=self.ca_data.decode())
        elif self.ca_file:
            ctx.load_verify_locations(cafile=self.ca_file)
        else:
            ctx.load_default_certs()
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_data or self.cert_file:
            _load_cert_chain(ctx, self.cert_data, self.cert_file, self.key_data, self.key_file)
        return ctx


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class NotInCluster(ValueError):
    """rest.ErrNotInCluster: the process does not run in a pod."""

    def __init__(self) -> None:
        super().__init__("unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and "
                         "KUBERNETES_SERVICE_PORT must be defined")


def in_cluster(*, env: Mapping[str, str] | None = None, directory: str = SERVICE_ACCOUNT_DIR) -> Connection:
    """rest.InClusterConfig. NotInCluster without the variables; OSError if the token
    cannot be read. A ca.crt that is missing leaves the system's trust store (client-go
    logs and goes on the same way)."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise NotInCluster()
    token_file = os.path.join(directory, "token")
    with open(token_file) as f:
        token = f.read().strip()
    ca = os.path.join(directory, "ca.crt")
    namespace = "default"
    try:
        with open(os.path.join(directory, "namespace")) as f:
            namespace = f.read().strip() or namespace
    except OSError:
        pass
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return Connection(server=server, namespace=env.get("POD_NAMESPACE") or namespace, token=token,
                      token_file=token_file, ca_file=ca if os.path.exists(ca) else None)


def load(path: str | None = None, *, env: Mapping[str, str] | None = None) -> KubeConfig:
    env = os.environ if env is None else env
    if path:
        paths = [path]
    elif env.get("KUBECONFIG"):
        paths = [p for p in env["KUBECONFIG"].split(os.pathsep) if p and os.path.exists(p)]
    else:
        default = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".kube", "config")
        paths = [default] if os.path.exists(default) else []
    merged = KubeConfig()
    for p in paths:
        with open(p) as f:
            _merge(merged, _document(f.read(), p), os.path.dirname(os.path.abspath(p)))
    return merged


def loads(text: str, *, base_dir: str = ".") -> KubeConfig:
    cfg = KubeConfig()
    _merge(cfg, _document(text, "<string>"), os.path.abspath(base_dir))
    return cfg


def _document(text: str, source: str) -> dict[str, Any]:
    """The file's mapping; a ValueError naming the file for text that is not YAML, or for
    any part of the wrong shape, as client-go refuses such a file."""
    def bad(why: str) -> ValueError:
        return ValueError(f'error loading config file "{source}": {why}')
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise bad(" ".join(str(e).split())) from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise bad(f"a kubeconfig is a mapping, not {type(doc).__name__}")
    for section, body in _SECTIONS:
        items = doc.get(section) or []
        if not isinstance(items, list):
            raise bad(f"{section}: must be a list, not {type(items).__name__}")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name", ""), str) \
                    or not isinstance(item.get(body) or {}, dict):
                raise bad(f"{section}[{i}]: must be a mapping with a name and a {body} mapping")
    if not isinstance(doc.get("current-context") or "", str):
        raise bad("current-context: must be a string")
    if not isinstance(doc.get("preferences") or {}, dict):
        raise bad("preferences: must be a mapping")
    return doc


def _merge(into: KubeConfig, doc: dict[str, Any], base_dir: str) -> None:
    for section, body in _SECTIONS:
        target = getattr(into, section)
        for item in doc.get(section) or []:
            name = item.get("name")
            if name is None or name in target:
                continue  # the first file to define a name wins
            entry = dict(item.get(body) or {})
            for key in _PATH_FIELDS.get(body, ()):
                if entry.get(key) and not os.path.isabs(entry[key]):
                    entry[key] = os.path.join(base_dir, entry[key])
            target[name] = entry
    if not into.current_context and doc.get("current-context"):
        into.current_context = doc["current-context"]
    for k, v in (doc.get("preferences") or {}).items():
        into.preferences.setdefault(k, v)


def _put(entry: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        entry[key] = value


def _b64(data: bytes | str | None) -> str | None:
    if data is None:
        return None
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(data: str | None) -> bytes | None:
    return base64.b64decode(data) if data else None


def _load_cert_chain(ctx: ssl.SSLContext, cert_data: bytes | None, cert_file: str | None,
                     key_data: bytes | None, key_file: str | None) -> None:
    # ssl only loads certificates and keys from files: inline data goes through a
    # private temporary file that is removed as soon as it has been read.
    tmp: list[str] = []
    try:
        def as_file(data: bytes | None, path: str | None) -> str | None:
            if not data:
                return path
            fd, name = tempfile.mkstemp(prefix="minik8s-cred-")
            tmp.append(name)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return name
        cert = as_file(cert_data, cert_file)
        if cert is None:
            raise ValueError("a client key needs a client certificate (client-certificate or -data)")
        ctx.load_cert_chain(cert, as_file(key_data, key_file))
    finally:
        for name in tmp:
            os.unlink(name)
