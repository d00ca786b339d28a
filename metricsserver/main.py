"""`minik8s metrics-server`: kubernetes-sigs/metrics-server's process.

    minik8s metrics-server [--kubeconfig PATH] [--secure-port 443] [--bind-address 0.0.0.0]
        [--tls-cert-file F --tls-private-key-file F | --cert-dir DIR]
        [--metric-resolution 15s] [--kubelet-insecure-tls] [--kubelet-certificate-authority F]
        [--kubelet-preferred-address-types Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP]
        [--kubelet-use-node-status-port] [--kubelet-port 10250] [-v N] [--logging-format text|json]

Every --metric-resolution (metrics-server's default 15 s, at least 10 s as it demands)
it scrapes every node's kubelet `/metrics/resource` (metricsserver/scraper.py), each
within 0.9 x the resolution, and stores the last two points (metricsserver/storage.py).
It serves `metrics.k8s.io/v1beta1` (metricsserver/api.py) and `/metrics`, `/healthz`,
`/livez` (`metric-collection-timely`: the last scrape ended within 1.5 x the
resolution), `/readyz` (`metric-storage-ready`: some node has two points;
`informer-sync`) over HTTPS, as an extension API server behind the aggregation layer:
who is asking is the front proxy's X-Remote-* headers (or a client certificate or a
token), and whether they may is a SubjectAccessReview to the API server
(client/extensionserver.py, trust read from kube-system/extension-apiserver-
authentication). Without --tls-cert-file it serves a self-signed certificate, written
to --cert-dir (a private temporary directory if none), as metrics-server does.

Without --kubeconfig it uses the in-cluster configuration. A bad flag, kubeconfig or
certificate is one line on stderr and exit code 1 (argparse's usage errors: 2); a port
that cannot be bound is 1. SIGTERM or SIGINT: stop serving, exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from client import kubeconfig
from client.informer import Informer, strip_managed_fields
from client.rest import Client
from machinery import klog, pki
from machinery.duration import parse_duration
from machinery.healthz import ENDPOINTS, Health, named_check
from machinery.metrics import REGISTRY, exposition
from metricsserver import metrics
from metricsserver.api import MetricsAPI
from metricsserver.scraper import DEFAULT_ADDRESS_TYPES, DEFAULT_KUBELET_PORT, Scraper
from metricsserver.storage import Storage

log = logging.getLogger("minik8s.metricsserver")

DEFAULT_PORT = 443               # k8s.io/apiserver's secure serving default
DEFAULT_RESOLUTION = 15.0        # metrics-server's --metric-resolution
MIN_RESOLUTION = 10.0            # metrics-server refuses less
ADDRESS_TYPES = ("Hostname", "InternalDNS", "InternalIP", "ExternalDNS", "ExternalIP")


class ConfigError(Exception):
    pass


def _resolution(v: str) -> float:
    try:
        seconds = parse_duration(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds < MIN_RESOLUTION:
        raise argparse.ArgumentTypeError(f"metric-resolution should be a time duration at least "
                                         f"{MIN_RESOLUTION:g}s, but value {v!r} provided")
    return seconds


def _port(v: str) -> int:
    if not v.isdigit() or int(v) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {v!r}: want 0 to 65535")
    return int(v)


def _address_types(v: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in v.split(",") if t.strip())
    bad = [t for t in types if t not in ADDRESS_TYPES]
    if bad or not types:
        raise argparse.ArgumentTypeError(f"unknown address type {', '.join(bad) or repr(v)}: want some of "
                                         f"{','.join(ADDRESS_TYPES)}")
    return types


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s metrics-server",
                                description="Serve metrics.k8s.io from every kubelet's resource metrics.")
    p.add_argument("--kubeconfig", help="kubeconfig of the API server (default: in-cluster)")
    p.add_argument("--secure-port", type=_port, default=DEFAULT_PORT, metavar="PORT",
                   help=f"HTTPS port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--bind-address", default="0.0.0.0", metavar="IP", help="address to serve on (0.0.0.0)")
    p.add_argument("--tls-cert-file", metavar="FILE", help="serving certificate (default: self-signed)")
    p.add_argument("--tls-private-key-file", metavar="FILE", help="its key")
    p.add_argument("--cert-dir", metavar="DIR", help="where the self-signed certificate is written")
    p.add_argument("--metric-resolution", type=_resolution, default=DEFAULT_RESOLUTION, metavar="DURATION",
                   help="how often kubelets are scraped (15s; at least 10s)")
    p.add_argument("--kubelet-insecure-tls", action="store_true",
                   help="do not verify the kubelets' serving certificates")
    p.add_argument("--kubelet-certificate-authority", metavar="FILE",
                   help="the CA of the kubelets' serving certificates (default: the kubeconfig's)")
    p.add_argument("--kubelet-preferred-address-types", type=_address_types, default=DEFAULT_ADDRESS_TYPES,
                   metavar="TYPES", help="which node address to use, in order "
                   f"(default {','.join(DEFAULT_ADDRESS_TYPES)})")
    p.add_argument("--kubelet-use-node-status-port", action="store_true",
                   help="use the port the node reports (status.daemonEndpoints)")
    p.add_argument("--kubelet-port", type=_port, default=DEFAULT_KUBELET_PORT, metavar="PORT",
                   help=f"the kubelets' port when not the node's ({DEFAULT_KUBELET_PORT})")
    klog.add_flags(p)
    return p


def _connection(path: str | None) -> kubeconfig.Connection:
    try:
        conn = kubeconfig.load(path).connection() if path else kubeconfig.in_cluster()
        conn.ssl_context()  # unreadable certificates fail here, not in the event loop
        return conn
    except OSError as e:
        raise ConfigError(f"kubeconfig {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - YAML errors, missing contexts, bad TLS data...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"kubeconfig {path}: {first}" if path else first) from None


def self_signed(cert_dir: str, host: str = "localhost") -> tuple[str, str]:
    """A self-signed CA and a serving certificate it signed (k8s.io/apiserver's
    MaybeDefaultWithSelfSignedCerts): apiserver.crt / apiserver.key in `cert_dir`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = pki.new_key(), pki.new_key()
    ca = pki.new_ca(f"{host}-ca@{int(time.time())}", ca_key, now=now)
    cert = pki.sign(pki.CertSpec(f"{host}@{int(time.time())}", dns_names=(host,), ips=("127.0.0.1",),
                                 usages=(pki.SERVER,)), key.public_key(), ca_cert=ca, ca_key=ca_key, now=now)
    os.makedirs(cert_dir, mode=0o700, exist_ok=True)
    cert_file, key_file = os.path.join(cert_dir, "apiserver.crt"), os.path.join(cert_dir, "apiserver.key")
    with open(cert_file, "wb") as f:
        f.write(pki.cert_pem(cert) + pki.cert_pem(ca))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pki.key_pem(key))
    return cert_file, key_file


class MetricsServer:
    """The scrape loop, the storage, the informers and the API, on one loop."""

    def __init__(self, client: Client, scraper: Scraper, *, resolution: float):
        self.client, self.scraper, self.resolution = client, scraper, resolution
        self.storage = Storage(resolution)
        self.nodes = Informer(client, "nodes", transform=strip_managed_fields)
        self.pods = Informer(client, "pods", transform=strip_managed_fields)
        self.last_tick = 0.0   # monotonic: when the last scrape cycle ended
        self.health = Health()
        self.health.add(named_check("metric-collection-timely", self._timely), endpoints=["healthz", "livez"])
        self.health.add(named_check("metric-storage-ready", self._storage_ready), endpoints=["readyz"])
        self.health.add(named_check("informer-sync", self._synced), endpoints=["readyz"])
        routes = [Route("/metrics", self._metrics, methods=["GET"])]
        for e in ENDPOINTS:
            routes += [Route(f"/{e}", self._health, methods=["GET"]),
                       Route(f"/{e}/{{name}}", self._health, methods=["GET"])]
        self.api = MetricsAPI(
            self.storage, nodes=self.nodes.store.list, node=self.nodes.store.get,
            pods=lambda ns: self.pods.store.by_index("namespace", ns) if ns else self.pods.store.list(),
            pod=lambda ns, name: self.pods.store.get(f"{ns}/{name}"), extra_routes=routes)

    def _timely(self) -> None:
        if self.last_tick and time.monotonic() - self.last_tick > 1.5 * self.resolution:
            ago = time.monotonic() - self.last_tick
            raise RuntimeError(f"metric collection didn't finish on time; last {ago:.1f}s ago")

    def _storage_ready(self) -> None:
        if not self.storage.ready():
            raise RuntimeError("no metrics to serve")

    def _synced(self) -> None:
        if not (self.nodes.has_synced() and self.pods.has_synced()):
            raise RuntimeError("informers not synced")

    async def _metrics(self, request: Request) -> Response:
        body, content_type = exposition(request.headers.get("accept"), REGISTRY)
        return Response(body, media_type=content_type)

    async def _health(self, request: Request) -> Response:
        answer = await self.health.handle(request.url.path, request.url.query)
        if answer is None:
            return PlainTextResponse("404 page not found\n", 404)
        code, body = answer
        return PlainTextResponse(body, code, headers={"X-Content-Type-Options": "nosniff"})

    async def tick(self) -> None:
        """One scrape of every node, stored."""
        started = time.monotonic()
        nodes = self.nodes.store.list()
        batch = await self.scraper.scrape(nodes)
        self.storage.store(batch)
        n, c = self.storage.counts()
        metrics.STORAGE_POINTS.labels("node").set(n)
        metrics.STORAGE_POINTS.labels("container").set(c)
        metrics.TICK_DURATION.observe(time.monotonic() - started)
        self.last_tick = time.monotonic()
        log.debug("scraped %d nodes: %d nodes and %d containers with metrics", len(nodes), n, c)

    async def run(self) -> None:
        self.nodes.start()
        self.pods.start()
        while not self.nodes.has_synced():
            await asyncio.sleep(0.05)
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - one bad cycle must not end the loop
                log.exception("scrape cycle failed")
            await asyncio.sleep(max(0.0, self.resolution - (time.monotonic() - started)))

    async def stop(self) -> None:
        await self.nodes.stop()
        await self.pods.stop()
        await self.scraper.close()


async def _auth(client: Client) -> Any:
    """k8s.io/apiserver's delegated authentication options: the trust the API server
    published. Missing or not readable: warned about, and the server goes on without
    front-proxy or client-certificate authentication (tokens still work), as theirs
    does; the API server not answering yet: asked again."""
    from client.extensionserver import DelegatedAuth, load_config
    from machinery.errors import Forbidden, NotFound
    from machinery.requestheader import RequestHeaderConfig
    delay = 0.2
    while True:
        try:
            return DelegatedAuth(await load_config(client), client)
        except (NotFound, Forbidden) as e:
            log.warning("Unable to get configmap/extension-apiserver-authentication in kube-system.  Usually "
                        "fixed by 'kubectl create rolebinding -n kube-system ROLEBINDING_NAME "
                        "--role=extension-apiserver-authentication-reader --serviceaccount=YOUR_NS:YOUR_SA': %s", e)
            log.warning("Continuing without authentication configuration. This may treat all requests as "
                        "anonymous.")
            return DelegatedAuth(RequestHeaderConfig(), client)
        except Exception as e:  # noqa: BLE001 - the API server may still be starting
            log.warning("unable to load configmap based request-header-client-ca-file: %s", e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def run(args: argparse.Namespace, conn: kubeconfig.Connection, cert_file: str, key_file: str) -> int:
    from client.extensionserver import ExtensionServer

    client = Client(conn, user_agent="metrics-server")
    scraper = Scraper(conn, timeout=0.9 * args.metric_resolution, address_types=args.kubelet_preferred_address_types,
                      port=args.kubelet_port, use_node_status_port=args.kubelet_use_node_status_port,
                      ca_file=args.kubelet_certificate_authority, insecure=args.kubelet_insecure_tls)
    ms = MetricsServer(client, scraper, resolution=args.metric_resolution)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    auth_task = asyncio.create_task(_auth(client))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([auth_task, stopper], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        auth_task.cancel()
        await ms.stop()
        await client.close()
        return 0
    try:
        server = ExtensionServer(ms.api, auth_task.result(), cert_file=cert_file, key_file=key_file)
        await server.start(args.bind_address, args.secure_port)
    except OSError as e:
        log.error("failed to serve on %s:%d: %s", args.bind_address, args.secure_port, e)
        await ms.stop()
        await client.close()
        return 1
    log.info("serving metrics.k8s.io on https://%s:%d", args.bind_address, server.port)
    work = asyncio.create_task(ms.run(), name="scrape")
    await asyncio.wait([work, stopper], return_when=asyncio.FIRST_COMPLETED)
    code = 0 if stop.is_set() else 1
    work.cancel()
    stopper.cancel()
    await asyncio.gather(work, stopper, return_exceptions=True)
    await server.stop()
    await ms.stop()
    await client.close()
    return code


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if bool(args.tls_cert_file) != bool(args.tls_private_key_file):
        print("error: --tls-cert-file and --tls-private-key-file go together", file=sys.stderr)
        return 1
    try:
        conn = _connection(args.kubeconfig)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    klog.setup_from_args(args)
    temp = None
    if args.tls_cert_file:
        cert_file, key_file = args.tls_cert_file, args.tls_private_key_file
        for f in (cert_file, key_file):
            if not os.access(f, os.R_OK):
                print(f"error: cannot read {f}", file=sys.stderr)
                return 1
    else:
        cert_dir = args.cert_dir or (temp := tempfile.mkdtemp(prefix="metrics-server-"))
        try:
            cert_file, key_file = self_signed(cert_dir)
        except OSError as e:
            print(f"error: --cert-dir {cert_dir}: {e.strerror or e}", file=sys.stderr)
            return 1
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    try:
        return runner(run(args, conn, cert_file, key_file))
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
