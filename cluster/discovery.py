"""kubeadm's token discovery (cmd/kubeadm/app/discovery/token): how a joining host comes
to trust a control plane it knows only by address, a bootstrap token and the hash of
the cluster CA's public key.

What it guarantees
- `discover(endpoint, token, ca_hashes, timeout=)` fetches ConfigMap
  kube-public/cluster-info anonymously over TLS without verifying the server (it cannot
  yet), retrying until its `jws-kubeconfig-<token id>` key appears (the bootstrapsigner
  adds it a moment after a token is made) or `timeout` passes; checks that key is the
  detached JWS of the `kubeconfig` value made with the token; parses that kubeconfig;
  checks that one of its CA certificates has a pinned public-key hash; then fetches
  cluster-info again, this time verifying the server with that CA, and insists the
  kubeconfig is the same. It answers the cluster's name, server and CA.
- Every failure is a `DiscoveryError` whose text is one line, "cause; fix", with
  kubeadm's wording for the cause where kubeadm has one: a token id with no signature
  ("... is invalid for this cluster or it has expired"), a signature that does not
  verify (a wrong token secret, or not the cluster the user meant), a CA none of whose
  keys are pinned (naming the hash found, so a typo can be seen), an address that does
  not answer within the timeout (naming it and the last cause), malformed arguments
  (caught before any connection).
- Transient failures (connection refused, timeouts, a 403 while RBAC is still being set
  up, the key not signed yet) are retried every `interval` seconds until `timeout`, as
  kubeadm's PollUntilContextTimeout; a bad signature or an unpinned CA is final at once.
- The CA is pinned by kubeadm's pubkeypin.Hash (cluster.tokens.ca_cert_hash, the one
  `minik8s init` prints): `sha256:` and the hex SHA-256 of its DER SubjectPublicKeyInfo.
- `node_api_server(join_address)` is the one place that says which URL a joined node's
  kubeconfigs name: the node-local API load balancer at 127.0.0.1:6444.

Async; one discovery at a time per call, no shared state.
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import ssl
import time
from dataclasses import dataclass

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from client.kubeconfig import Connection
from client.rest import Client
from cluster.tokens import ca_cert_hash  # kubeadm's pubkeypin.Hash, shared with init's output
from machinery import bootstraptoken as bt
from machinery import errors

DEFAULT_TIMEOUT = 300.0  # kubeadm's --discovery-timeout (5m0s)
# kubeadm polls every 5 s (constants.DiscoveryRetryInterval). One second here: a test, or
# a join started right after `token create`, waits less; the load is one small GET.
RETRY_INTERVAL = 1.0
_HEX = re.compile(r"^[0-9a-fA-F]*$")
TOKEN_CREATE = "run `minik8s token create --print-join-command` on a control-plane host for a new one"


class DiscoveryError(Exception):
    """One line: `cause; fix`."""

    def __init__(self, cause: str, fix: str):
        super().__init__(f"{cause}; {fix}")
        self.cause, self.fix = cause, fix


@dataclass(frozen=True)
class ClusterInfo:
    endpoint: str        # HOST:PORT as given to join
    cluster_name: str    # the cluster entry's name in cluster-info's kubeconfig
    server: str          # the server cluster-info names (the control-plane endpoint)
    ca_pem: bytes        # the cluster CA, pinned


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [addr]:port) -> (host, port); DiscoveryError if malformed."""
    fix = "give the API server as HOST:PORT, e.g. 192.168.1.10:6443"
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]/\s]+):(\d+)", endpoint)
    if m is None:
        raise DiscoveryError(f"invalid API server endpoint {endpoint!r}", fix)
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 0 < int(port) < 65536:
        raise DiscoveryError(f"invalid port {port} in API server endpoint {endpoint!r}", fix)
    if m.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise DiscoveryError(f"invalid IPv6 address in API server endpoint {endpoint!r}", fix) from None
    return host, int(port)


def https_url(endpoint: str) -> str:
    host, port = split_endpoint(endpoint)
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def node_api_server(join_address: str) -> str:
    """The API server URL a joined worker's kubeconfigs name: its node-local load balancer
    (`minik8s apiserver-lb`, k3s's 127.0.0.1:6444), which forwards to every API server
    (the join address is its seed)."""
    from cluster.layout import LB_ADDRESS, LB_PORT
    return f"https://{LB_ADDRESS}:{LB_PORT}"


def parse_token(token: str) -> tuple[str, str]:
    try:
        return bt.parse(token)
    except ValueError as exc:
        raise DiscoveryError(str(exc), "pass --token as printed by `minik8s init` or `minik8s token create`") from None


def parse_ca_hashes(hashes: list[str]) -> set[str]:
    """kubeadm's pubkeypin.Set.Allow: each `sha256:<64 hex>`; the lower-case hex digests."""
    fix = ("pass --discovery-token-ca-cert-hash sha256:<hex> as printed by `minik8s init` "
           "(the SHA-256 of the CA's public key)")
    if not hashes:
        raise DiscoveryError("no --discovery-token-ca-cert-hash given", fix)
    out = set()
    for h in hashes:
        fmt, sep, value = h.partition(":")
        if not sep or ":" in value:
            raise DiscoveryError(f"invalid hash {h!r}, expected \"format:hex-value\". "
                                 "Known format(s) are: sha256", fix)
        if fmt.lower() != "sha256":
            raise DiscoveryError(f"unknown hash format {fmt!r}. Known format(s) are: sha256", fix)
        if len(value) != 64 or not _HEX.match(value):
            raise DiscoveryError(f"invalid hash {h!r}, expected a 32 byte SHA-256 hash in hex, "
                                 f"found {len(value)} characters", fix)
        out.add(value.lower())
    return out


class _Transient(Exception):
    """A failure worth retrying; `kind`: unreachable, refused (an API error), unsigned."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


async def _get_cluster_info(conn: Connection, token_id: str) -> dict[str, str]:
    """cluster-info's data once it carries the token's signature; _Transient otherwise,
    DiscoveryError when the server's certificate does not verify (only with a CA)."""
    client = Client(conn, max_retries=0, timeout=10.0, user_agent="minik8s-join")
    what = "failed to request the cluster-info ConfigMap"
    try:
        cm = await client.get("configmaps", bt.CLUSTER_INFO, namespace=bt.CLUSTER_INFO_NAMESPACE)
    except errors.APIError as exc:
        raise _Transient(f"{what}: {exc.message}", "refused") from None
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:
        bad_cert = _ssl_cause(exc)
        if bad_cert is not None:
            # Retrying cannot help: the server is not the one the pinned CA vouches for
            # under this address (kubeadm would poll until its timeout).
            raise DiscoveryError(f"the API server at {conn.server} does not present a certificate the pinned "
                                 f"cluster CA verifies for that address ({bad_cert})",
                                 "join through an address in the API server's certificate (its advertise "
                                 "address or --control-plane-endpoint)") from None
        raise _Transient(f"{what}: {str(exc) or type(exc).__name__}", "unreachable") from None
    finally:
        await client.close()
    data = cm.get("data") or {}
    if bt.JWS_PREFIX + token_id not in data:
        raise _Transient(f"could not find a JWS signature in the cluster-info ConfigMap for token ID {token_id!r}",
                         "unsigned")
    return data


def _ssl_cause(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


async def _poll(conn: Connection, token_id: str, *, deadline: float, interval: float) -> dict[str, str]:
    while True:
        try:
            return await _get_cluster_info(conn, token_id)
        except _Transient as exc:
            last = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise last
        await asyncio.sleep(min(interval, remaining))


def _load_kubeconfig(text: str) -> tuple[str, str, bytes]:
    """(cluster name, server, CA PEM) of cluster-info's kubeconfig."""
    fix = "the cluster's cluster-info ConfigMap is damaged: run `minik8s init` again on the control plane"
    try:
        kc = yaml.safe_load(text)
        clusters = kc["clusters"]
        entry = clusters[-1]
        name, cluster = entry["name"], entry["cluster"]
        server = cluster["server"]
        ca = base64.b64decode(cluster["certificate-authority-data"], validate=True)
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise DiscoveryError(f"couldn't parse the kubeconfig file in the cluster-info ConfigMap ({exc})", fix) from None
    return str(name), str(server), ca


async def discover(endpoint: str, token: str, ca_hashes: list[str], *,
                   timeout: float = DEFAULT_TIMEOUT, interval: float = RETRY_INTERVAL) -> ClusterInfo:
    url = https_url(endpoint)
    token_id, token_secret = parse_token(token)
    pins = parse_ca_hashes(ca_hashes)
    deadline = time.monotonic() + timeout
    interval = min(interval, timeout)
    try:
        insecure = await _poll(Connection(server=url, insecure=True), token_id, deadline=deadline, interval=interval)
    except _Transient as exc:
        raise _timed_out(endpoint, token_id, exc, timeout) from None
    content = insecure.get(bt.KUBECONFIG_KEY, "")
    if not content:
        raise DiscoveryError(f"there is no {bt.KUBECONFIG_KEY} key in the cluster-info ConfigMap. This API Server "
                             "isn't set up for token bootstrapping, can't connect",
                             "check the address: it must be a control plane made by `minik8s init`")
    if not bt.signature_is_valid(insecure[bt.JWS_PREFIX + token_id], content, token_id, token_secret):
        raise DiscoveryError("failed to verify JWS signature of received cluster info object, can't trust "
                             "this API Server",
                             f"check the token's secret (`minik8s token list` on a control-plane host); {TOKEN_CREATE}")
    name, server, ca_pem = _load_kubeconfig(content)
    try:
        certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise DiscoveryError(f"failed to parse cluster CA from the cluster-info ConfigMap ({exc})",
                             "run `minik8s init` again on the control plane") from None
    found = [ca_cert_hash(c.public_bytes(serialization.Encoding.PEM)) for c in certs]
    if not any(h.split(":", 1)[1] in pins for h in found):
        raise DiscoveryError(f"cluster CA found in cluster-info ConfigMap is invalid: none of the public keys "
                             f"\"{':'.join(found)}\" are pinned",
                             "check --discovery-token-ca-cert-hash against the hash `minik8s init` printed "
                             "(or `minik8s token create --print-join-command`)")
    try:
        secure = await _poll(Connection(server=url, ca_data=ca_pem), token_id, deadline=deadline, interval=interval)
    except _Transient as exc:
        raise _timed_out(endpoint, token_id, exc, timeout) from None
    if secure.get(bt.KUBECONFIG_KEY) != content:
        raise DiscoveryError("the second kubeconfig from the cluster-info ConfigMap (using validated TLS) was "
                             "different from the first", "try again; if it persists, the address is not "
                             "the cluster's control plane")
    return ClusterInfo(endpoint=endpoint, cluster_name=name, server=server, ca_pem=ca_pem)


def _timed_out(endpoint: str, token_id: str, last: _Transient, timeout: float) -> DiscoveryError:
    if last.kind == "unsigned":
        return DiscoveryError(f"token id {token_id!r} is invalid for this cluster or it has expired", TOKEN_CREATE)
    if last.kind == "refused":
        return DiscoveryError(f"the control plane at {endpoint} did not serve the cluster-info ConfigMap within "
                              f"{timeout:g}s ({last})",
                              "check that the address is a control plane made by `minik8s init`")
    return DiscoveryError(f"could not reach the control plane at {endpoint} within {timeout:g}s ({last})",
                          "check the address and that its port is open from this host "
                          "(--discovery-timeout waits longer)")
