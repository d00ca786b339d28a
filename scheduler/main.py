"""`minik8s scheduler`: the scheduler process.

    minik8s scheduler --kubeconfig PATH [--config FILE] [--leader-elect=true|false]
                      [--lease-duration 15s] [--renew-deadline 10s] [--retry-period 2s]
                      [--secure-port 10259] [--bind-address 127.0.0.1]
                      [-v N] [--logging-format text|json]

The config file is a KubeSchedulerConfiguration (profiles, percentageOfNodesToScore,
backoff, leaderElection, clientConnection.kubeconfig); flags given on the command line
win over it. A bad flag, config or kubeconfig is one line on stderr and exit code 1
(argparse's usage errors: 2), never a traceback.

With leader election (the default, as kube-scheduler) the process runs its informers at
once but schedules only while it holds the Lease `kube-system/kube-scheduler`; losing it
ends the process with code 1, as kube-scheduler does. SIGTERM or SIGINT: stop
scheduling, let bindings in flight finish, release the Lease, log a metrics summary
(`scheduler metrics: cycles=... cycle_p50_ms=...`), exit 0.

While it runs it serves, on kube-scheduler's port 10259 (`--secure-port`, alias `--port`;
0 turns it off), `/metrics` (scheduler.metrics, client/'s, the process's CPU and RSS)
and `/healthz`, `/livez`, `/readyz` with kube-scheduler's checks: `ping`,
`leaderElection` (with leader election: fails when this leader has stopped renewing),
and on /readyz also `shutdown` (fails once stopping) and `sched-handler-sync` (fails
until the informers have synced). Plain HTTP, on 127.0.0.1 unless `--bind-address` says
otherwise: kube-scheduler serves HTTPS with authentication, which minik8s does not yet.
A port that cannot be bound ends the process with code 1, as kube-scheduler's does.
Logs are klog-like (machinery.klog): `-v N`, `--logging-format=json`.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import uuid

from client import kubeconfig
from client.componentserver import ComponentServer, leader_election_check
from client.leaderelection import LeaderElector
from client.metrics import track_leader
from client.rest import Client
from machinery import flags, klog
from machinery.healthz import named_check
from scheduler.config import (ConfigError, SchedulerConfig, build_frameworks, default_config,
                              load_config, parse_duration)

log = logging.getLogger("minik8s.scheduler")


def _duration(v: str) -> float:
    try:
        return parse_duration(v)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s scheduler",
                                description="Assign pods to nodes (kube-scheduler's algorithm).")
    p.add_argument("--kubeconfig", help="kubeconfig file of the API server to schedule for")
    p.add_argument("--config", help="a KubeSchedulerConfiguration file (YAML)")
    p.add_argument("--leader-elect", type=flags.boolean, nargs="?", const=True, default=None,
                   metavar="true|false", help="run leader election on a Lease (default true)")
    p.add_argument("--lease-duration", "--leader-elect-lease-duration", type=_duration,
                   metavar="DURATION", help="how long a Lease is valid without renewal (15s)")
    p.add_argument("--renew-deadline", "--leader-elect-renew-deadline", type=_duration,
                   metavar="DURATION", help="how long the leader retries renewing before giving up (10s)")
    p.add_argument("--retry-period", "--leader-elect-retry-period", type=_duration,
                   metavar="DURATION", help="how often candidates try, and the leader renews (2s)")
    p.add_argument("--leader-elect-resource-name", metavar="NAME", help="the Lease's name (kube-scheduler)")
    p.add_argument("--leader-elect-resource-namespace", metavar="NS",
                   help="the Lease's namespace (kube-system)")
    p.add_argument("--secure-port", "--port", dest="secure_port", type=_port, default=DEFAULT_PORT,
                   metavar="PORT", help=f"port for /metrics and /healthz ({DEFAULT_PORT}; 0: off)")
    p.add_argument("--bind-address", default="127.0.0.1", metavar="IP",
                   help="address to serve /metrics and /healthz on (127.0.0.1)")
    klog.add_flags(p)
    return p


DEFAULT_PORT = 10259  # kube-scheduler's


def _port(v: str) -> int:
    if not v.isdigit() or int(v) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {v!r}: want 0 to 65535")
    return int(v)


def _settings(args: argparse.Namespace) -> tuple[SchedulerConfig, kubeconfig.Connection]:
    """The config and the connection; ConfigError says what is wrong with either."""
    if args.config:
        try:
            cfg = load_config(args.config)
        except OSError as e:
            raise ConfigError(f"config {args.config}: {e.strerror or e}") from None
        except (ConfigError, ValueError, TypeError, AttributeError) as e:  # a shape parse_config missed
            raise ConfigError(f"config {args.config}: {e}") from None
    else:
        cfg = default_config()
    try:
        build_frameworks(cfg)  # every plugin named exists and takes its args
    except (ConfigError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"config {args.config}: {e}" if args.config else str(e)) from None
    le = cfg.leader_election
    for flag, attr in (("leader_elect", "leader_elect"), ("lease_duration", "lease_duration"),
                       ("renew_deadline", "renew_deadline"), ("retry_period", "retry_period"),
                       ("leader_elect_resource_name", "resource_name"),
                       ("leader_elect_resource_namespace", "resource_namespace")):
        if getattr(args, flag) is not None:
            setattr(le, attr, getattr(args, flag))
    if le.leader_elect and not le.lease_duration > le.renew_deadline > le.retry_period * 1.2:
        raise ConfigError(f"leader election needs lease duration ({le.lease_duration:g}s) > renew "
                          f"deadline ({le.renew_deadline:g}s) > 1.2 x retry period ({le.retry_period:g}s)")
    path = args.kubeconfig or cfg.kubeconfig
    if not path:
        raise ConfigError("--kubeconfig is required (or clientConnection.kubeconfig in --config)")
    try:
        conn = kubeconfig.load(path).connection()
        conn.ssl_context()  # unreadable certificates fail here, not in the event loop
    except OSError as e:
        raise ConfigError(f"kubeconfig {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - YAML errors, missing contexts, bad TLS data...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"kubeconfig {path}: {first}") from None
    return cfg, conn


async def run(cfg: SchedulerConfig, conn: kubeconfig.Connection, *, bind_address: str = "127.0.0.1",
              port: int = 0) -> int:
    from scheduler.scheduler import Scheduler

    client = Client(conn, user_agent="minik8s-scheduler")
    sched = Scheduler(client, config=cfg, freeze_gc=True)
    server = ComponentServer()
    stopping = False

    def not_shutting_down() -> None:
        if stopping:
            raise RuntimeError("process is shutting down")

    def handlers_synced() -> None:
        if not (sched.nodes.has_synced() and sched.pods.has_synced()):
            raise RuntimeError("waiting for handlers to sync")

    server.health.add(named_check("shutdown", not_shutting_down), endpoints=["readyz"])
    server.health.add(named_check("sched-handler-sync", handlers_synced), endpoints=["readyz"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ended = asyncio.Event()  # the scheduling loop ended by itself (a bug): do not keep the Lease

    elector: LeaderElector | None = None

    async def lead() -> None:
        try:
            await sched.run(lease_lost=lambda: elector is not None and elector.lost)
        except asyncio.CancelledError:
            raise  # leadership lost, or stopping
        except Exception:  # noqa: BLE001 - reported, then the process ends
            log.exception("the scheduling loop failed")
        ended.set()

    sched.start()
    le = cfg.leader_election
    if le.leader_elect:
        identity = f"{socket.gethostname()}_{uuid.uuid4()}"
        elector = LeaderElector(client, name=le.resource_name, namespace=le.resource_namespace,
                                identity=identity, on_started_leading=lead,
                                lease_duration=le.lease_duration, renew_deadline=le.renew_deadline,
                                retry_period=le.retry_period, release_on_cancel=True)
        server.health.add(leader_election_check(elector))
        track_leader(elector)
    if port:
        try:
            await server.start(bind_address, port)
        except OSError as e:
            log.error("failed to serve /metrics and /healthz on %s:%d: %s", bind_address, port, e)
            await sched.shutdown()
            await client.close()
            return 1
    if le.leader_elect:
        log.info("%s: waiting to lead lease %s/%s", identity, le.resource_namespace, le.resource_name)
        work = asyncio.create_task(elector.run(), name="leader-election")
    else:
        work = asyncio.create_task(lead(), name="scheduling")
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(ended.wait())]
    await asyncio.wait([work, *waiters], return_when=asyncio.FIRST_COMPLETED)
    stopping = True
    code = 0
    if not stop.is_set():
        code = 1
        log.error("the scheduling loop ended" if ended.is_set() else "leader election lost")
    for t in (work, *waiters):
        t.cancel()
    await asyncio.gather(work, *waiters, return_exceptions=True)
    await sched.stop_scheduling()
    log.info("scheduler metrics: %s", sched.metrics.summary())
    await sched.shutdown()
    await server.stop()
    await client.close()
    return code


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        cfg, conn = _settings(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    klog.setup_from_args(args)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    return runner(run(cfg, conn, bind_address=args.bind_address, port=args.secure_port))
