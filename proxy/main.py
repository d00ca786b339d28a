"""`minik8s proxy`: the per-node service proxy (kube-proxy), in nftables mode.

    minik8s proxy --kubeconfig PATH [--hostname-override NODE] [--cluster-cidr CIDR]
                  [--nodeport-addresses CIDR,...] [--proxy-mode nftables]
                  [--sync-period 30s] [--min-sync-period 1s] [--masquerade-all]
                  [--metrics-bind-address 127.0.0.1:10249] [--healthz-bind-address 0.0.0.0:10256]
                  [--cleanup] [-v N] [--logging-format text|json]

It programs the netfilter of the network namespace it runs in (a node's), in one table
of its own, `ip minik8s-proxy`, and touches no other table (proxy/rules.py documents
the table). Run one per node, in the node's namespace.

Why nftables, and only nftables: it is Kubernetes' newest proxy mode (KEP-3866, GA in
1.33) and the one its authors point new work to. Its verdict maps make dispatch one
hash lookup per packet whatever the number of Services (iptables walks a chain of
rules per Service), and a change is one atomic transaction that touches only the
changed Services' chains and map elements (iptables-restore rewrites whole tables).
nft's JSON interface lets rules be built as data, never as text. `--proxy-mode
iptables` or `ipvs` (which upstream is deprecating, KEP-5495) is refused with a
one-line error. It needs Linux 5.13 or later, as kube-proxy's nftables mode does.

Flags are kube-proxy's. `--nodeport-addresses` empty (the default): NodePorts answer on
every local address of the node but loopback; else only on local addresses inside the
given CIDRs. `--cluster-cidr`: the pod network; traffic to a ClusterIP from outside
it is masqueraded. `--min-sync-period` batches changes; `--sync-period` is how often
everything is re-synced in full. `--cleanup` removes the table and exits.

Served: `--metrics-bind-address` (kube-proxy's 127.0.0.1:10249) /metrics and
/healthz; `--healthz-bind-address` (0.0.0.0:10256) /healthz and /livez, which fail
until the first sync and when a change has waited more than two sync periods. An
empty address turns a server off. Plain HTTP, as kube-proxy serves these.

SIGTERM or SIGINT: stop, leaving the rules in place (a restarted proxy adopts them,
and established connections live on in conntrack). A bad flag or kubeconfig is one
line on stderr and exit code 1 (argparse's usage errors: 2), never a traceback.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import socket
import sys

from client import kubeconfig
from client.componentserver import ComponentServer, run_until_signalled
from client.rest import Client
from machinery import klog
from machinery.flags import duration
from machinery.healthz import named_check

log = logging.getLogger("minik8s.proxy")


class ConfigError(Exception):
    """A one-line reason the flags cannot be used."""


def _cidrs(v: str) -> tuple[str, ...]:
    out = []
    for part in filter(None, (p.strip() for p in v.split(","))):
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid CIDR {part!r}") from None
        if net.version != 4:
            raise argparse.ArgumentTypeError(f"{part!r}: only IPv4 is proxied")
        out.append(str(net))
    return tuple(out)


def _cidr(v: str) -> str:
    nets = _cidrs(v)
    if len(nets) != 1:
        raise argparse.ArgumentTypeError(f"invalid CIDR {v!r}: want one IPv4 CIDR")
    return nets[0]


def _address(v: str) -> tuple[str, int] | None:
    if not v:
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"invalid address {v!r}: want IP:PORT")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid address {v!r}: {host!r} is not an IP") from None
    return (host.strip("[]"), int(port)) if int(port) else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s proxy",
                                description="Program this node's netfilter for Services (kube-proxy, nftables mode).")
    p.add_argument("--kubeconfig", help="kubeconfig file of the API server")
    p.add_argument("--hostname-override", metavar="NODE",
                   help="this node's name, for local endpoints (default: the host name)")
    p.add_argument("--cluster-cidr", type=_cidr, metavar="CIDR",
                   help="the pods' range: traffic to a ClusterIP from outside it is masqueraded")
    p.add_argument("--nodeport-addresses", type=_cidrs, default=(), metavar="CIDR,...",
                   help="NodePorts answer only on local addresses in these ranges (default: all but loopback)")
    p.add_argument("--proxy-mode", default="nftables", metavar="MODE", help="nftables (the only mode)")
    p.add_argument("--sync-period", type=duration, default=30.0, metavar="DURATION",
                   help="how often every rule is re-synced (30s)")
    p.add_argument("--min-sync-period", type=duration, default=1.0, metavar="DURATION",
                   help="the least time between syncs: changes within it are batched (1s)")
    p.add_argument("--masquerade-all", action="store_true",
                   help="masquerade all traffic to ClusterIPs")
    p.add_argument("--metrics-bind-address", type=_address, default=("127.0.0.1", 10249), metavar="IP:PORT",
                   help="where /metrics is served (127.0.0.1:10249; empty: off)")
    p.add_argument("--healthz-bind-address", type=_address, default=("0.0.0.0", 10256), metavar="IP:PORT",
                   help="where /healthz is served (0.0.0.0:10256; empty: off)")
    p.add_argument("--cleanup", action="store_true", help="remove the proxy's nftables table and exit")
    klog.add_flags(p)
    return p


def _connection(args: argparse.Namespace) -> kubeconfig.Connection:
    if args.proxy_mode != "nftables":
        raise ConfigError(f"--proxy-mode {args.proxy_mode!r} is not supported: minik8s proxies with nftables only")
    if not args.kubeconfig:
        raise ConfigError("--kubeconfig is required")
    try:
        conn = kubeconfig.load(args.kubeconfig).connection()
        conn.ssl_context()
    except OSError as e:
        raise ConfigError(f"kubeconfig {args.kubeconfig}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - YAML errors, missing contexts, bad TLS data...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"kubeconfig {args.kubeconfig}: {first}") from None
    return conn


async def cleanup() -> int:
    from proxy.nft import Nft, NftError, Table
    from proxy.rules import TABLE
    t = Table("ip", TABLE)
    try:
        await Nft().run([t.table("add"), t.table("delete")])
    except NftError as e:
        log.error("cleanup failed: %s", e)
        return 1
    log.info("removed table ip %s", TABLE)
    return 0


def check_bridge_netfilter() -> None:
    """Warn, as kube-proxy does, when bridged traffic skips netfilter: a pod reaching a
    Service whose endpoint is on its own bridge would get replies that are not un-DNATed."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            if f.read().strip() == "1":
                return
        log.warning("net.bridge.bridge-nf-call-iptables is 0: Services reached from pods on the same "
                    "bridge as their endpoint will not work")
    except OSError:
        log.warning("the br_netfilter module is not loaded (modprobe br_netfilter): Services reached "
                    "from pods on the same bridge as their endpoint will not work")


async def run(args: argparse.Namespace, conn: kubeconfig.Connection) -> int:
    from proxy.proxier import Proxier
    from proxy.rules import Config

    node = args.hostname_override or socket.gethostname()
    check_bridge_netfilter()
    client = Client(conn, user_agent="minik8s-proxy")
    proxier = Proxier(client, Config(hostname=node, cluster_cidr=args.cluster_cidr,
                                     nodeport_all=not args.nodeport_addresses,
                                     masquerade_all=args.masquerade_all),
                      sync_period=args.sync_period, min_sync_period=args.min_sync_period,
                      nodeport_cidrs=args.nodeport_addresses)

    def healthy() -> None:
        if not proxier.healthy():
            raise RuntimeError("proxy rules are not synced" if proxier.last_sync_ok is None
                               else "a change has waited for more than two sync periods")

    servers: list[ComponentServer] = []
    for where in (args.metrics_bind_address, args.healthz_bind_address):
        if where is None:
            continue
        server = ComponentServer()
        server.health.add(named_check("proxier", healthy))
        try:
            await server.start(*where)
        except OSError as e:
            log.error("failed to serve on %s:%d: %s", where[0], where[1], e)
            for s in servers:
                await s.stop()
            await client.close()
            return 1
        servers.append(server)
    log.info("proxying for node %s (nftables, table ip minik8s-proxy, cluster CIDR %s, NodePorts on %s)",
             node, args.cluster_cidr or "unset", ",".join(args.nodeport_addresses) or "every local address")
    code = await run_until_signalled(proxier.run(), "proxier")
    for s in servers:
        await s.stop()
    await client.close()
    log.info("stopped after %d syncs; the rules stay in place", proxier.syncs)
    return code


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    klog.setup_from_args(args)
    if args.cleanup:
        return asyncio.run(cleanup())
    try:
        conn = _connection(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        import uvloop
        return uvloop.run(run(args, conn))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(run(args, conn))
