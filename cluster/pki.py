"""The cluster's PKI on disk: what kubeadm makes under /etc/kubernetes/pki, made and kept.

Layout (kubeadm's file names where kubeadm has the file):

    ca.crt, ca.key                       the cluster CA (CN kubernetes)
    apiserver.crt/.key                   the API server's serving certificate
    apiserver-kubelet-client.crt/.key    the API server as a client of kubelets (logs, exec)
    apiserver-etcd-client.crt/.key       the API server as a client of etcd
    sa.key, sa.pub                       the service-account signing key pair (RSA)
    front-proxy-ca.crt/.key              the aggregation layer's CA (CN front-proxy-ca)
    front-proxy-client.crt/.key          the API server as the front proxy of extension servers
    etcd/ca.crt, etcd/ca.key             etcd's own CA (CN etcd-ca)
    etcd/server, etcd/peer               etcd's serving and peer certificates
    etcd/healthcheck-client              a client of etcd for health checks
    admin, scheduler, controller-manager, those clients' certificates (kubeadm embeds them in
    kube-proxy, metrics-server
                                         admin.conf, scheduler.conf and controller-manager.conf;
                                         here they are files, and `kubeconfig()` embeds them)
    kubelets/<node>/kubelet              the node's kubelet serving certificate
    kubelets/<node>/kubelet-client       the node's kubelet client certificate

Guarantees
- `ensure(directory, facts)` is idempotent: every certificate that is still good for
  `facts` (its key matches, the same CA signed it, its subject is the one asked for, its
  SANs and usages include the ones asked for, and it does not expire within
  `renew_before`) is kept byte for byte; only what is missing or not good is made anew,
  with a new key. A missing CA is never quietly replaced while certificates it signed
  exist (that would cut every holder of those certificates off): it is a `PKIError`, as
  is an unreadable CA or service-account key. Every refusal comes before the first
  write, so it leaves the directory as it was.
- `renew(directory, names)` re-issues leaves under its existing CA with a new key and the
  subject, SANs and usages read from the current certificate (kubeadm's `certs renew`).
  CAs are never renewed. An unknown name or an unreadable certificate changes nothing.
- Key files are written 0600, certificates 0644; every file is written to a temporary
  file in the same directory and renamed over the old one, so a reader sees the old file
  or the new one, never half of either. A key is written before its certificate: a
  crash in between leaves a pair that does not match, which the next `ensure` remakes.
- Calls on one directory are serialized by an flock on `<directory>/.lock`.

The names `check-expiration` shows and `renew` takes are kubeadm's for its certificates
(`apiserver`, `etcd-server`, ...), and the file path without `.crt` for the others
(`admin`, `kubelets/node-1/kubelet`).
"""
from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from cryptography import x509

from machinery import labels, pki
from machinery.pki import CLIENT, SERVER, CertSpec

if TYPE_CHECKING:
    from client.kubeconfig import KubeConfig

PKI_DIR = "pki"                                     # under a cluster's state dir
RENEW_BEFORE = datetime.timedelta(days=90)          # k3s renews at start-up within 90 days
SA_KEY_BITS = 2048                                  # kubeadm: sa.key is RSA-2048


class PKIError(Exception):
    """A one-line reason the PKI cannot be made or used as it is on disk."""


@dataclass(frozen=True)
class Node:
    name: str
    ip: str | None = None


@dataclass(frozen=True)
class ClusterFacts:
    """What the certificates must name."""
    cluster_name: str = "kubernetes"
    apiserver_ips: tuple[str, ...] = ("127.0.0.1",)     # every address the API server listens on
    apiserver_dns_names: tuple[str, ...] = ()
    service_ip: str | None = None                       # the `kubernetes` Service's ClusterIP
    nodes: tuple[Node, ...] = ()
    # The host etcd and the API server run on (kubeadm: the control-plane node's name).
    control_plane_name: str = field(default_factory=socket.gethostname)
    etcd_ips: tuple[str, ...] = ()                      # etcd's addresses besides loopback
    dns_domain: str = "cluster.local"


@dataclass(frozen=True)
class Leaf:
    name: str           # what check-expiration lists and renew takes
    path: str           # relative to the PKI dir, without .crt / .key
    ca: str             # "ca" or "etcd-ca"
    long_name: str


CA = tuple[x509.Certificate, pki.PrivateKey]
CAS = {"ca": ("ca", "kubernetes"), "etcd-ca": ("etcd/ca", "etcd-ca"),      # name: (path, CN)
       "front-proxy-ca": ("front-proxy-ca", "front-proxy-ca")}

_FIXED = (
    Leaf("apiserver", "apiserver", "ca", "certificate for serving the Kubernetes API"),
    Leaf("apiserver-kubelet-client", "apiserver-kubelet-client", "ca",
         "certificate for the API server to connect to kubelet"),
    Leaf("apiserver-etcd-client", "apiserver-etcd-client", "etcd-ca",
         "certificate the apiserver uses to access etcd"),
    Leaf("front-proxy-client", "front-proxy-client", "front-proxy-ca",
         "certificate for the front proxy client"),
    Leaf("etcd-server", "etcd/server", "etcd-ca", "certificate for serving etcd"),
    Leaf("etcd-peer", "etcd/peer", "etcd-ca", "certificate for etcd nodes to communicate with each other"),
    Leaf("etcd-healthcheck-client", "etcd/healthcheck-client", "etcd-ca",
         "certificate for liveness probes to healthcheck etcd"),
    Leaf("admin", "admin", "ca", "certificate for the admin to use"),
    Leaf("controller-manager", "controller-manager", "ca", "certificate for the controller manager to use"),
    Leaf("scheduler", "scheduler", "ca", "certificate for the scheduler to use"),
    # kubeadm gives kube-proxy a ServiceAccount token; here it runs beside the kubelet
    # as a process, so a client certificate for system:kube-proxy (bound to
    # system:node-proxier by the bootstrap policy) names it instead.
    Leaf("kube-proxy", "kube-proxy", "ca", "certificate for the service proxy of every node to use"),
    # metrics-server runs as a process too (cluster/metricsaddon.py): its certificate names
    # the ServiceAccount its manifests bind.
    Leaf("metrics-server", "metrics-server", "ca", "certificate for the metrics server to use"),
)


def _kubelet_leaves(node: str) -> tuple[Leaf, Leaf]:
    serving = f"kubelets/{node}/kubelet"
    client = f"kubelets/{node}/kubelet-client"
    return (Leaf(serving, serving, "ca", f"certificate for serving the kubelet API of {node}"),
            Leaf(client, client, "ca", f"certificate for the kubelet of {node} to use"))


def check(facts: ClusterFacts) -> None:
    """PKIError naming the first fact no certificate can carry. A node's name becomes a
    directory, so it must be a DNS-1123 subdomain, as a Node's name is."""
    for node in facts.nodes:
        why = labels.validate_dns1123_subdomain(node.name)
        if why:
            raise PKIError(f"node name {node.name!r}: {why}")
    ips = [*facts.apiserver_ips, *facts.etcd_ips, *(n.ip for n in facts.nodes if n.ip)]
    for ip in ips + ([facts.service_ip] if facts.service_ip else []):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise PKIError(f"{ip!r} is not an IP address") from None
    for name in (facts.control_plane_name, *facts.apiserver_dns_names):
        if not name or any(c.isspace() for c in name):
            raise PKIError(f"{name!r} is not a DNS name")


def desired(facts: ClusterFacts) -> list[tuple[Leaf, CertSpec]]:
    """Every leaf `facts` asks for, with what it must say."""
    d = facts.dns_domain
    api_dns = _unique((facts.control_plane_name, *facts.apiserver_dns_names, "kubernetes",
                       "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{d}"))
    api_ips = _unique(((facts.service_ip,) if facts.service_ip else ()) + facts.apiserver_ips)
    etcd_dns = (facts.control_plane_name, "localhost")
    etcd_ips = _unique((*facts.etcd_ips, "127.0.0.1", "::1"))
    specs = {
        "apiserver": CertSpec("kube-apiserver", dns_names=api_dns, ips=api_ips, usages=(SERVER,)),
        # kubeadm before 1.29 put this one in system:masters, which needs no binding; later
        # kubeadm uses its own group bound to cluster-admin. Without RBAC yet, the former.
        "apiserver-kubelet-client": CertSpec("kube-apiserver-kubelet-client", ("system:masters",)),
        "apiserver-etcd-client": CertSpec("kube-apiserver-etcd-client"),
        "front-proxy-client": CertSpec("front-proxy-client"),
        # etcd (3.2 and later) also checks clientAuth on its serving certificate; kubeadm
        # gives both usages to server and peer.
        "etcd-server": CertSpec(facts.control_plane_name, dns_names=etcd_dns, ips=etcd_ips,
                                usages=(SERVER, CLIENT)),
        "etcd-peer": CertSpec(facts.control_plane_name, dns_names=etcd_dns, ips=etcd_ips,
                              usages=(SERVER, CLIENT)),
        "etcd-healthcheck-client": CertSpec("kube-etcd-healthcheck-client"),
        "admin": CertSpec("kubernetes-admin", ("system:masters",)),
        "controller-manager": CertSpec("system:kube-controller-manager"),
        "scheduler": CertSpec("system:kube-scheduler"),
        "kube-proxy": CertSpec("system:kube-proxy"),
        "metrics-server": CertSpec("system:serviceaccount:kube-system:metrics-server",
                                   ("system:serviceaccounts", "system:serviceaccounts:kube-system")),
    }
    out = [(leaf, specs[leaf.name]) for leaf in _FIXED]
    for node in facts.nodes:
        serving, client = _kubelet_leaves(node.name)
        user, group = f"system:node:{node.name}", ("system:nodes",)
        out.append((serving, CertSpec(user, group, dns_names=(node.name,),
                                      ips=(node.ip,) if node.ip else (), usages=(SERVER,))))
        out.append((client, CertSpec(user, group)))
    return out


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def on_disk(directory: str) -> list[Leaf]:
    """The leaves this directory is meant to hold: kubeadm's, ours, and each node's found there."""
    leaves = list(_FIXED)
    kubelets = os.path.join(directory, "kubelets")
    if os.path.isdir(kubelets):
        for node in sorted(os.listdir(kubelets)):
            if os.path.isdir(os.path.join(kubelets, node)):
                leaves.extend(_kubelet_leaves(node))
    return leaves


# -- ensure ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    name: str
    made: bool
    reason: str         # why it was made ("missing", "signed by another CA", ...); "" if kept


def ensure(directory: str, facts: ClusterFacts, *, now: datetime.datetime | None = None,
           ca_validity: datetime.timedelta = pki.CA_VALIDITY,
           validity: datetime.timedelta = pki.LEAF_VALIDITY,
           renew_before: datetime.timedelta = RENEW_BEFORE,
           key_algorithm: str = pki.DEFAULT_KEY_ALGORITHM) -> list[Outcome]:
    """Make what `facts` needs under `directory`, keeping every file that is still good.

    Facts no certificate can carry (a node name that is not a DNS-1123 subdomain, an IP
    that is not one, an unknown key algorithm) are a PKIError before anything is written.

    `renew_before` must be shorter than `validity`, or every call remakes every leaf.
    """
    now = now or _now()
    check(facts)
    if key_algorithm not in pki.KEY_ALGORITHMS:
        raise PKIError(f"unknown key algorithm {key_algorithm!r} (one of {', '.join(pki.KEY_ALGORITHMS)})")
    leaves = desired(facts)
    with _locked(directory):
        # Everything that can fail is read and checked before the first write, so a
        # refusal leaves the directory as it was.
        cas: dict[str, CA] = {ca: _load_ca(directory, ca, now=now)
                              for ca in CAS if _ca_present(directory, ca)}
        sa_key = _load_sa_key(directory)
        out: list[Outcome] = []
        for ca, (path, cn) in CAS.items():
            if ca in cas:
                out.append(Outcome(ca, False, ""))
                continue
            ca_key = pki.new_key(key_algorithm)
            cas[ca] = pki.new_ca(cn, ca_key, now=now, validity=ca_validity), ca_key
            _write_pair(directory, path, cas[ca][0], ca_key)
            out.append(Outcome(ca, True, "missing"))
        out.append(_ensure_sa(directory, sa_key))
        for leaf, spec in leaves:
            ca_cert, ca_key = cas[leaf.ca]
            reason = _leaf_problem(directory, leaf, spec, ca_cert, now=now, renew_before=renew_before)
            if reason:
                _issue(directory, leaf, spec, ca_cert, ca_key, now=now, validity=validity,
                       key_algorithm=key_algorithm)
            out.append(Outcome(leaf.name, bool(reason), reason))
        return out


def _ca_present(directory: str, name: str) -> bool:
    """Whether the CA is on disk (both files); PKIError if only half of it is, or if it
    is missing while certificates it signed are there."""
    path, _ = CAS[name]
    crt, key = _file(directory, path, ".crt"), _file(directory, path, ".key")
    have_crt, have_key = os.path.exists(crt), os.path.exists(key)
    if have_crt and have_key:
        return True
    if have_crt or have_key:
        present, absent = (crt, key) if have_crt else (key, crt)
        raise PKIError(f"{present} exists but {absent} does not: restore it, or remove both to make a new {name}")
    signed = [_file(directory, leaf.path, ".crt") for leaf in on_disk(directory) if leaf.ca == name]
    existing = [p for p in signed if os.path.exists(p)]
    if existing:
        raise PKIError(f"{crt} is missing but certificates it signed exist ({', '.join(existing)}): "
                       f"restore it, or remove them to start a new {name}")
    return False


def _load_ca(directory: str, name: str, *, now: datetime.datetime) -> CA:
    path, _ = CAS[name]
    crt, key = _file(directory, path, ".crt"), _file(directory, path, ".key")
    try:
        ca_cert = pki.load_cert(_read(crt))
        ca_key = pki.load_key(_read(key))
    except (OSError, ValueError) as e:
        raise PKIError(f"cannot read {name} ({crt}, {key}): {e}") from None
    if not pki.key_matches(ca_cert, ca_key):
        raise PKIError(f"{key} is not the key of {crt}")
    if ca_cert.not_valid_after_utc <= now:
        raise PKIError(f"{name} ({crt}) expired at {ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
                       f"a CA is not renewed: remove the PKI directory to start a new one")
    return ca_cert, ca_key


def _load_sa_key(directory: str) -> pki.PrivateKey | None:
    """sa.key, or None if there is none. An unreadable one is an error, never replaced:
    every ServiceAccount token the cluster issued depends on it."""
    path = os.path.join(directory, "sa.key")
    try:
        return pki.load_key(_read(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise PKIError(f"cannot read {path}: {e}") from None


def _ensure_sa(directory: str, key: pki.PrivateKey | None) -> Outcome:
    """sa.key is kept when there is one; sa.pub is derived from it, so a missing or stale
    one is simply rewritten."""
    pub_path = os.path.join(directory, "sa.pub")
    if key is None:
        key = pki.new_key(f"RSA-{SA_KEY_BITS}")
        _write(os.path.join(directory, "sa.key"), pki.key_pem(key), 0o600)
        _write(pub_path, pki.public_key_pem(key), 0o644)
        return Outcome("sa", True, "missing")
    pub = pki.public_key_pem(key)
    try:
        current = _read(pub_path)
    except FileNotFoundError:
        current = b""
    if current != pub:
        _write(pub_path, pub, 0o644)
        return Outcome("sa", True, "sa.pub missing or not sa.key's")
    return Outcome("sa", False, "")


def _leaf_problem(directory: str, leaf: Leaf, spec: CertSpec, ca_cert: x509.Certificate, *,
                  now: datetime.datetime, renew_before: datetime.timedelta) -> str:
    crt, key = _file(directory, leaf.path, ".crt"), _file(directory, leaf.path, ".key")
    if not (os.path.exists(crt) and os.path.exists(key)):
        return "missing"
    try:
        cert = pki.load_cert(_read(crt))
        private = pki.load_key(_read(key))
    except (OSError, ValueError):
        return "unreadable"
    if not pki.key_matches(cert, private):
        return "its key does not match"
    if not pki.issued_by(cert, ca_cert):
        return f"not signed by {leaf.ca}"
    return "; ".join(pki.problems(cert, spec, now=now, renew_before=renew_before))


def _issue(directory: str, leaf: Leaf, spec: CertSpec, ca_cert: x509.Certificate, ca_key: pki.PrivateKey, *,
           now: datetime.datetime, validity: datetime.timedelta, key_algorithm: str) -> None:
    key = pki.new_key(key_algorithm)
    cert = pki.sign(spec, key.public_key(), ca_cert=ca_cert, ca_key=ca_key, now=now, validity=validity)
    _write_pair(directory, leaf.path, cert, key)


def _write_pair(directory: str, path: str, cert: x509.Certificate, key: pki.PrivateKey) -> None:
    # The key first: a crash in between leaves a pair that does not match, which the
    # next ensure() remakes, rather than a new certificate no one has the key of.
    _write(_file(directory, path, ".key"), pki.key_pem(key), 0o600)
    _write(_file(directory, path, ".crt"), pki.cert_pem(cert), 0o644)


# -- renew and check-expiration ---------------------------------------------------------------

def leaf_named(directory: str, name: str) -> Leaf:
    for leaf in on_disk(directory):
        if leaf.name == name:
            return leaf
    raise PKIError(f"{name} is not a valid certificate for this cluster")   # kubeadm's words


def renew(directory: str, names: list[str], *, now: datetime.datetime | None = None,
          validity: datetime.timedelta = pki.LEAF_VALIDITY,
          key_algorithm: str = pki.DEFAULT_KEY_ALGORITHM) -> list[tuple[Leaf, bool]]:
    """Re-issue the named leaves ("all": every one on disk) under their CA, unconditionally.

    Returns (leaf, renewed) for each; a leaf whose certificate is missing is not renewed
    (kubeadm reports it MISSING and goes on). Unknown names fail before anything changes.
    """
    now = now or _now()
    if not os.path.isdir(directory):
        raise PKIError(f"no certificates in {directory}")
    with _locked(directory):
        leaves = on_disk(directory) if names == ["all"] else [leaf_named(directory, n) for n in names]
        cas = {ca: _load_ca(directory, ca, now=now) for ca in {leaf.ca for leaf in leaves}}
        specs: dict[str, CertSpec | None] = {}      # read them all first: a bad one stops before any write
        for leaf in leaves:
            crt = _file(directory, leaf.path, ".crt")
            try:
                specs[leaf.name] = pki.spec_of(pki.load_cert(_read(crt)))
            except FileNotFoundError:
                specs[leaf.name] = None
            except (OSError, ValueError) as e:
                raise PKIError(f"cannot read {crt}: {e}") from None
        out = []
        for leaf in leaves:
            spec = specs[leaf.name]
            if spec is not None:
                ca_cert, ca_key = cas[leaf.ca]
                _issue(directory, leaf, spec, ca_cert, ca_key, now=now, validity=validity,
                       key_algorithm=key_algorithm)
            out.append((leaf, spec is not None))
        return out


@dataclass(frozen=True)
class Expiration:
    name: str
    expires: datetime.datetime | None      # None: missing
    ca: str                                 # "" for a CA itself


def expirations(directory: str) -> tuple[list[Expiration], list[Expiration]]:
    """(leaves, CAs), each sorted by name as kubeadm lists them."""
    def expiry(path: str) -> datetime.datetime | None:
        try:
            return pki.load_cert(_read(_file(directory, path, ".crt"))).not_valid_after_utc
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise PKIError(f"cannot read {_file(directory, path, '.crt')}: {e}") from None
    leaves = sorted((Expiration(leaf.name, expiry(leaf.path), leaf.ca) for leaf in on_disk(directory)),
                    key=lambda e: e.name)
    cas = [Expiration(name, expiry(path), "") for name, (path, _) in sorted(CAS.items())]
    return leaves, cas


def format_expirations(directory: str, *, now: datetime.datetime | None = None) -> str:
    """kubeadm's `certs check-expiration` tables (without its EXTERNALLY MANAGED column:
    every CA here has its key)."""
    now = now or _now()
    leaves, cas = expirations(directory)

    def cells(e: Expiration) -> list[str]:
        if e.expires is None:
            return [f"!MISSING! {e.name}", "", ""]
        return [e.name, e.expires.strftime("%b %d, %Y %H:%M UTC"), short_human_duration(e.expires - now)]
    first = _table(["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY"],
                   [cells(e) + [e.ca if e.expires else ""] for e in leaves])
    second = _table(["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME"], [cells(e) for e in cas])
    return first + "\n" + second


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines) + "\n"


def short_human_duration(d: datetime.timedelta) -> str:
    """apimachinery's duration.ShortHumanDuration, which kubeadm prints as RESIDUAL TIME."""
    seconds = int(d.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    hours = seconds // 3600
    if hours < 24:
        return f"{hours}h"
    if hours < 24 * 365:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


# -- the API server's flags ----------------------------------------------------------------

def aggregation_flags(directory: str) -> list[str]:
    """The aggregation layer's kube-apiserver flags over this PKI, as kubeadm sets them."""
    f = lambda name: os.path.join(directory, name)  # noqa: E731
    return ["--proxy-client-cert-file", f("front-proxy-client.crt"),
            "--proxy-client-key-file", f("front-proxy-client.key"),
            "--requestheader-client-ca-file", f("front-proxy-ca.crt"),
            "--requestheader-allowed-names", "front-proxy-client",
            "--requestheader-username-headers", "X-Remote-User",
            "--requestheader-group-headers", "X-Remote-Group",
            "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
            "--enable-aggregator-routing=true"]


# -- kubeconfigs ----------------------------------------------------------------------------

def kubeconfig(directory: str, name: str, *, cluster_name: str, server: str,
               namespace: str | None = None) -> KubeConfig:
    """A kubeconfig that reaches `server` as leaf `name` (say "admin"), everything embedded:
    certificate-authority-data, client-certificate-data, client-key-data. The user is the
    certificate's CN and the context `<user>@<cluster>`, as in kubeadm's admin.conf."""
    from client.kubeconfig import KubeConfig

    leaf = leaf_named(directory, name)
    try:
        cert = _read(_file(directory, leaf.path, ".crt"))
        key = _read(_file(directory, leaf.path, ".key"))
        ca = _read(_file(directory, CAS[leaf.ca][0], ".crt"))
        user = pki.spec_of(pki.load_cert(cert)).common_name
    except (OSError, ValueError) as e:
        raise PKIError(f"cannot read {name} or its CA in {directory}: {e}") from None
    context = f"{user}@{cluster_name}"
    kc = KubeConfig()
    kc.set_cluster(cluster_name, server=server, certificate_authority_data=ca)
    kc.set_user(user, client_certificate_data=cert, client_key_data=key)
    kc.set_context(context, cluster=cluster_name, user=user, namespace=namespace)
    kc.current_context = context
    return kc


def write_kubeconfig(path: str, directory: str, name: str, *, cluster_name: str, server: str,
                     namespace: str | None = None) -> None:
    """`kubeconfig(...)` saved to `path` (0600, atomically)."""
    kubeconfig(directory, name, cluster_name=cluster_name, server=server, namespace=namespace).save(path)


# -- files ------------------------------------------------------------------------------------

def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _file(directory: str, path: str, ext: str) -> str:
    return os.path.join(directory, path + ext)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(path: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")   # created 0600: never readable by others
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@contextmanager
def _locked(directory: str) -> Iterator[None]:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
