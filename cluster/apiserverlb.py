"""The node-local API server load balancer (`minik8s apiserver-lb`), as the k3s agent's.

    minik8s apiserver-lb --listen 127.0.0.1:6444 --servers A:6443,B:6443 [--kubeconfig F]

Every component of a worker (kubelet, proxy, pod network agent) talks to
https://127.0.0.1:6444, and this process passes each TCP connection to one of the API
servers. We pick this node-local TCP load balancer rather than a client-side list of
servers because every component, and the kubeconfigs a user copies to the real
kubectl, keep exactly one server URL, as Kubernetes' kubeconfig has; no client needs to
know about fail-over; and TLS passes through untouched, so client certificates still
authenticate the client to the API server itself (every API server's certificate names
127.0.0.1 for this reason, as k3s's do).

Guarantees
- A new connection goes to a healthy server, round robin; a server that refuses or
  times out the dial is marked unhealthy and the next one is tried, so a client never
  sees a dead server while another is healthy. Seeds not in the Endpoints come after
  the healthy servers; with none healthy, the unhealthy ones are tried anyway (the
  checks may lag), and only when every dial fails is the client's connection closed.
- Health: every `--health-interval` each server is checked: a TCP connect, or, with a
  kubeconfig, GET /readyz over TLS verified with its CA (an API server that lost etcd
  is not ready and is avoided). After `FAILURES_TO_DROP` failed checks in a row, the
  connections open to that server are closed, so their clients (watches, informers)
  reconnect through us to another server rather than hang on a half-dead one.
- With `--kubeconfig`, the server list follows the `default/kubernetes` Endpoints
  (watched through this balancer itself, as k3s's agent does): servers are added and
  removed as control-plane hosts come and go, and the connections of a removed server
  are closed. The `--servers` given are seeds: kept as the last resort, and the whole
  list while the Endpoints are empty or unreadable (a missing kubeconfig file is waited
  for: on a worker the kubelet's TLS bootstrap writes it after we start).
- Bytes are copied as they come, both ways; a half-close is passed on.

Concurrency: one asyncio loop; every piece of state is touched only from it.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import ssl
import sys
from dataclasses import dataclass, field

log = logging.getLogger("minik8s.apiserverlb")

DEFAULT_LISTEN = "127.0.0.1:6444"   # k3s's supervisor/apiserver LB port on agents
HEALTH_INTERVAL = 1.0
DIAL_TIMEOUT = 3.0
FAILURES_TO_DROP = 2
BUFFER = 64 * 1024


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """("host", port) of HOST:PORT or [V6]:PORT; ValueError with a one-line reason."""
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        if default_port is None:
            raise ValueError(f"{value!r} is not HOST:PORT")
        host, port = value, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(eq=False)
class Server:
    address: str                    # HOST:PORT
    seed: bool = False
    healthy: bool = True            # optimistic until the first check: we just started
    failures: int = 0
    conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)

    def drop(self, why: str) -> None:
        if self.conns:
            log.info("closing %d connection(s) to %s: %s", len(self.conns), self.address, why)
        for a, b in list(self.conns):
            a.transport.abort()
            b.transport.abort()
        self.conns.clear()


class LoadBalancer:
    def __init__(self, listen: str, seeds: list[str], *, kubeconfig: str | None = None,
                 health_interval: float = HEALTH_INTERVAL, dial_timeout: float = DIAL_TIMEOUT):
        self.listen = split_host_port(listen)
        if not seeds:
            raise ValueError("at least one server is needed")
        self.seeds = [Server(join_host_port(*split_host_port(s, 6443)), seed=True) for s in seeds]
        self.servers: dict[str, Server] = {}    # from the Endpoints; empty: use the seeds
        self.kubeconfig = kubeconfig
        self.health_interval = health_interval
        self.dial_timeout = dial_timeout
        self._rr = itertools.count()
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._tls: ssl.SSLContext | None = None

    # -- the server list -------------------------------------------------------------

    def all(self) -> list[Server]:
        listed = list(self.servers.values())
        return listed + [s for s in self.seeds if s.address not in self.servers] if listed else list(self.seeds)

    def set_servers(self, addresses: list[str]) -> None:
        """Follow the Endpoints: add new servers, drop the connections of removed ones."""
        want = list(dict.fromkeys(addresses))
        for gone in set(self.servers) - set(want):
            self.servers.pop(gone).drop("no longer an endpoint of default/kubernetes")
        for a in want:
            if a not in self.servers:
                seed = next((s for s in self.seeds if s.address == a), None)
                self.servers[a] = Server(a, healthy=seed.healthy if seed else True)
        if want:
            log.info("servers: %s", ", ".join(want))

    def candidates(self) -> list[Server]:
        """The order to dial in: healthy servers round robin, then healthy seeds not
        listed (k3s's "default server"), then the unhealthy ones (the checks may lag)."""
        listed = list(self.servers.values()) or list(self.seeds)
        extra = [s for s in self.seeds if s not in listed and s.address not in self.servers]
        healthy = [s for s in listed if s.healthy]
        if healthy:
            k = next(self._rr) % len(healthy)
            healthy = healthy[k:] + healthy[:k]
        return (healthy + [s for s in extra if s.healthy] + [s for s in listed if not s.healthy]
                + [s for s in extra if not s.healthy])

    # -- proxying ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for server in self.candidates():
            host, port = split_host_port(server.address)
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                              self.dial_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                if server.healthy:
                    log.info("dial %s failed (%s): marking it unhealthy", server.address, e or type(e).__name__)
                server.healthy = False
                continue
            break
        else:
            log.warning("no API server reachable: closing the client's connection")
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        server.conns.add(pair)
        try:
            await asyncio.gather(self._copy(reader, up_writer), self._copy(up_reader, writer))
        finally:
            server.conns.discard(pair)
            for w in pair:
                w.transport.abort() if w.transport.is_closing() else w.close()

    @staticmethod
    async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(BUFFER):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof() and not dst.transport.is_closing():
                dst.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            # One side is gone: so is the other (gather waits for both copies).
            dst.transport.abort()

    # -- health --------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        """With a readable kubeconfig: a context trusting its CA (no client certificate:
        /readyz is for anyone, system:public-info-viewer)."""
        if self._tls is None and self.kubeconfig and os.path.exists(self.kubeconfig):
            from client import kubeconfig
            conn = kubeconfig.load(self.kubeconfig).connection()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if conn.ca_data:
                ctx.load_verify_locations(cadata=conn.ca_data.decode())
            elif conn.ca_file:
                ctx.load_verify_locations(cafile=conn.ca_file)
            else:
                ctx.load_default_certs()
            self._tls = ctx
        return self._tls

    async def check(self, server: Server) -> bool:
        host, port = split_host_port(server.address)
        tls = self._tls_context()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None),
                self.dial_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            return False
        try:
            if tls is None:
                return True
            writer.write(f"GET /readyz HTTP/1.1\r\nHost: {server.address}\r\nConnection: close\r\n\r\n".encode())
            status = await asyncio.wait_for(reader.readline(), self.dial_timeout)
            # 401/403 still say the server is up and serving; only "not ready" is not.
            return status.split(b" ")[1:2] in ([b"200"], [b"401"], [b"403"])
        except (OSError, asyncio.TimeoutError, ssl.SSLError, IndexError):
            return False
        finally:
            writer.transport.abort()

    async def _check_all(self) -> None:
        servers = self.all()
        results = await asyncio.gather(*(self.check(s) for s in servers))
        for server, ok in zip(servers, results):
            if ok:
                if not server.healthy:
                    log.info("server %s is healthy again", server.address)
                server.healthy, server.failures = True, 0
                continue
            server.failures += 1
            if server.healthy:
                log.info("server %s failed its health check", server.address)
            server.healthy = False
            if server.failures >= FAILURES_TO_DROP:
                server.drop("failed its health checks")

    async def _health_loop(self) -> None:
        while True:
            try:
                await self._check_all()
            except Exception:  # noqa: BLE001 - a bug in one round must not stop the checks
                log.exception("health check round failed")
            await asyncio.sleep(self.health_interval)

    # -- following the Endpoints ---------------------------------------------------------

    async def _follow_endpoints(self) -> None:
        from client.kubeconfig import load
        from client.rest import Client
        from client.watch import Watch
        from machinery.errors import APIError
        delay = 1.0
        while True:
            if not os.path.exists(self.kubeconfig or ""):
                await asyncio.sleep(delay)
                continue
            try:
                conn = load(self.kubeconfig).connection()
                # Reach the Endpoints through ourselves: whichever server is up answers.
                conn = dataclasses.replace(conn, server="https://" + join_host_port(*self.listen))
                async with Client(conn) as client:
                    ep = await client.get("endpoints", "kubernetes", namespace="default")
                    self._apply_endpoints(ep)
                    async for event in Watch(client, "endpoints", namespace="default",
                                             field_selector="metadata.name=kubernetes",
                                             resource_version=ep["metadata"]["resourceVersion"]):
                        if event.type in ("ADDED", "MODIFIED"):
                            self._apply_endpoints(event.object)
                delay = 1.0
            except (APIError, OSError, ValueError, KeyError) as e:
                log.info("following default/kubernetes endpoints: %s", e)
                delay = min(delay * 2, 30.0)
            except Exception as e:  # noqa: BLE001 - httpx and kubeconfig errors: retry later
                log.info("following default/kubernetes endpoints: %s", e)
                delay = min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    def _apply_endpoints(self, ep: dict) -> None:
        addresses = [join_host_port(a["ip"], p["port"])
                     for subset in ep.get("subsets") or []
                     for p in subset.get("ports") or [] if p.get("name", "https") == "https"
                     for a in subset.get("addresses") or []]
        if addresses:  # an empty list would leave only the seeds: keep what works
            self.set_servers(addresses)

    # -- running -------------------------------------------------------------------------

    async def start(self) -> None:
        host, port = self.listen
        self._server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        self._tasks.append(asyncio.create_task(self._health_loop()))
        if self.kubeconfig:
            self._tasks.append(asyncio.create_task(self._follow_endpoints()))
        log.info("listening on %s for %s", join_host_port(host, port), ", ".join(s.address for s in self.seeds))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for s in self.all():
            s.drop("shutting down")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s apiserver-lb",
                                description="a node-local TCP load balancer in front of the API servers")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT to accept clients on")
    p.add_argument("--servers", required=True,
                   help="comma-separated API servers HOST:PORT, the seeds (the control-plane endpoint)")
    p.add_argument("--kubeconfig", default="",
                   help="follow default/kubernetes Endpoints and check /readyz with this kubeconfig's "
                        "credentials and CA (may appear later)")
    p.add_argument("--health-interval", type=float, default=HEALTH_INTERVAL,
                   help="seconds between health checks of each server")
    from machinery import klog
    klog.add_flags(p)
    return p


def main(argv: list[str]) -> int:
    from machinery import klog
    args = parser().parse_args(argv)
    klog.setup_from_args(args)
    try:
        lb = LoadBalancer(args.listen, [s for s in args.servers.split(",") if s.strip()],
                          kubeconfig=args.kubeconfig or None, health_interval=args.health_interval)
    except ValueError as e:
        print(f"error: {e}; give --listen and --servers as HOST:PORT", file=sys.stderr)
        return 1

    async def run() -> None:
        try:
            await lb.start()
        except OSError as e:
            raise SystemExit(f"error: cannot listen on {args.listen}: {e.strerror}; "
                             "stop what holds the port or pick another --listen") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await lb.close()
    asyncio.run(run())
    return 0
