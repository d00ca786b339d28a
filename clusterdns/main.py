"""`minik8s dns`: the cluster DNS server (CoreDNS with the kubernetes and forward plugins).

    minik8s dns [--kubeconfig PATH] [--cluster-domain cluster.local] [--ttl 5]
                [--bind-address 0.0.0.0] [--port 53] [--upstream IP[:PORT] ...]
                [--metrics-port 9153] [--metrics-bind-address 127.0.0.1]
                [-v N] [--logging-format text|json]

Without --kubeconfig it uses the pod's in-cluster configuration (the ServiceAccount
token and CA under /var/run/secrets/kubernetes.io/serviceaccount and
KUBERNETES_SERVICE_HOST/PORT; client.kubeconfig.in_cluster), as CoreDNS's kubernetes
plugin does; `minik8s up` runs it so, as the `coredns` Deployment in kube-system
(cluster/addons.py). It follows Services and Endpoints with informers and answers the cluster domain from
them (clusterdns.kubernetes); every other name goes to the upstreams (`--upstream`,
repeatable, or the host's /etc/resolv.conf nameservers) through a cache. It starts
answering once both caches have synced, or after 5 s without them (CoreDNS's startup
wait), so a cluster whose API server is down still resolves other names; until then
a cluster name it has not heard of is SERVFAIL, never NXDOMAIN. A bad flag or
kubeconfig is one line on stderr and exit code 1 (argparse's usage errors: 2); a port
that cannot be bound: exit 1. SIGTERM or
SIGINT: stop serving, exit 0.

On `--metrics-port` (CoreDNS's prometheus port, 9153; 0: off) it serves /metrics
(clusterdns.metrics, client/'s, the process's) and /healthz, /livez, /readyz, where
/readyz fails until both informers have synced (CoreDNS serves health on :8080 and
ready on :8181; one port here, as the other components have it).
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from typing import Any, Callable, Coroutine

from client import kubeconfig
from client.componentserver import ComponentServer, informer_sync_check
from client.informer import Informer, wait_for_cache_sync
from client.rest import Client
from clusterdns.forward import Forwarder, resolv_conf_nameservers
from clusterdns.kubernetes import ENDPOINT_INDEXERS, INDEXERS, Zone
from clusterdns.server import DNSServer
from machinery import klog

log = logging.getLogger("minik8s.clusterdns")

STARTUP_SYNC_TIMEOUT = 5.0  # CoreDNS's kubernetes plugin waits this long for its caches


def _upstream(v: str) -> tuple[str, int]:
    host, port = v, 53
    if v.startswith("["):  # [v6]:port
        host, _, rest = v[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 53
    elif v.count(":") == 1:
        host, _, p = v.partition(":")
        if not p.isdigit():
            raise argparse.ArgumentTypeError(f"invalid upstream {v!r}: want IP[:PORT]")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid upstream {v!r}: want IP[:PORT]") from None
    if not 0 < port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid upstream {v!r}: port out of range")
    return host, port


def _port(v: str) -> int:
    if not v.isdigit() or int(v) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {v!r}: want 0 to 65535")
    return int(v)


def _ttl(v: str) -> int:
    if not v.isdigit() or int(v) > 3600:
        raise argparse.ArgumentTypeError(f"invalid ttl {v!r}: want 0 to 3600 (CoreDNS's bounds)")
    return int(v)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s dns", description="The cluster DNS (CoreDNS's kubernetes plugin).")
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig file of the API server (default: the pod's in-cluster configuration)")
    p.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain (cluster.local)")
    p.add_argument("--ttl", type=_ttl, default=5, help="TTL of the cluster's records (5, CoreDNS's default)")
    p.add_argument("--bind-address", default="0.0.0.0", metavar="IP", help="address to serve on (0.0.0.0)")
    p.add_argument("--port", type=_port, default=53, help="UDP and TCP port (53)")
    p.add_argument("--upstream", type=_upstream, action="append", metavar="IP[:PORT]",
                   help="resolver for other names (repeatable; default: /etc/resolv.conf's nameservers)")
    p.add_argument("--metrics-port", type=_port, default=9153,
                   help="port for /metrics and /healthz (9153, CoreDNS's prometheus port; 0: off)")
    p.add_argument("--metrics-bind-address", default="127.0.0.1", metavar="IP",
                   help="address for /metrics and /healthz (127.0.0.1)")
    klog.add_flags(p)
    return p


async def run(conn: kubeconfig.Connection, *, domain: str, ttl: int, bind_address: str, port: int,
              upstreams: list[tuple[str, int]], metrics_address: str = "127.0.0.1",
              metrics_port: int = 0) -> int:
    client = Client(conn, user_agent="minik8s-dns")
    services, endpoints = Informer(client, "services"), Informer(client, "endpointslices")
    services.add_indexers(INDEXERS)
    endpoints.add_indexers(ENDPOINT_INDEXERS)
    zone = Zone(services.store, endpoints.store, domain=domain, ttl=ttl,
                synced=lambda: services.has_synced() and endpoints.has_synced())
    for inf in (services, endpoints):
        inf.add_handler(on_add=zone.changed, on_update=zone.changed, on_delete=zone.changed)
        inf.start()
    server = DNSServer(zone, Forwarder(upstreams))
    component = ComponentServer()
    component.health.add(informer_sync_check([services, endpoints]), endpoints=["readyz"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if metrics_port:
            try:
                await component.start(metrics_address, metrics_port)
            except OSError as e:
                log.error("failed to serve /metrics and /healthz on %s:%d: %s", metrics_address, metrics_port, e)
                return 1
        if not await wait_for_cache_sync(services, endpoints, timeout=STARTUP_SYNC_TIMEOUT):
            log.warning("starting before the Service and Endpoints caches have synced")
        try:
            bound = await server.start(bind_address, port)
        except OSError as e:
            log.error("failed to serve DNS on %s:%d: %s", bind_address, port, e)
            return 1
        log.info("serving %s on %s:%d (udp, tcp); upstreams %s", domain, bind_address, bound,
                 ", ".join(f"{h}:{p}" for h, p in upstreams) or "none")
        await stop.wait()
    finally:
        await server.stop()
        await component.stop()
        for inf in (services, endpoints):
            await inf.stop()
        await client.close()
    return 0


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    what = f"kubeconfig {args.kubeconfig}" if args.kubeconfig else "in-cluster configuration"
    try:
        if args.kubeconfig:
            conn = kubeconfig.load(args.kubeconfig).connection()
        else:
            conn = kubeconfig.in_cluster()
        conn.ssl_context()
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) and not args.kubeconfig else ""
        print(f"error: {what}: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - YAML errors, missing contexts, bad TLS data...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {what}: {first}", file=sys.stderr)
        return 1
    upstreams = args.upstream or [(ip, 53) for ip in resolv_conf_nameservers()]
    klog.setup_from_args(args)
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        pass
    return runner(run(conn, domain=args.cluster_domain.strip("."), ttl=args.ttl,
                           bind_address=args.bind_address, port=args.port, upstreams=upstreams,
                           metrics_address=args.metrics_bind_address, metrics_port=args.metrics_port))
