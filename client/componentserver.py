"""The small HTTP server every component (scheduler, controller manager, kubelet) runs
beside its work: `/metrics`, `/healthz`, `/livez`, `/readyz` and `/<endpoint>/<check>`,
as kube-scheduler serves them on 10259 and kube-controller-manager on 10257.

Guarantees
- `/metrics`: machinery.metrics' registry (the process's CPU and RSS, client/'s
  workqueue and REST client metrics, the component's own) in Prometheus' text format, or
  OpenMetrics when the scraper asks for it.
- `/healthz`, `/livez`, `/readyz` (`?verbose`, `?exclude=NAME`) and one path per check
  answer what machinery.healthz's `Health` decides: 200 or 500, text/plain.
- Anything else is 404 `404 page not found`. GET and HEAD only.
- `start(host, port)` returns once the socket listens (port 0: any free one; `port` then
  holds it), or raises what stopped it (the port is taken...). `stop()` closes it.
  Served over plain HTTP: Kubernetes serves these ports over HTTPS with authentication,
  which comes with the security issue.
- Checks that concern the client live here too: `leader_election_check` (client-go's
  `leaderElection` watchdog) and `informer_sync_check` (`informer-sync`).
- `run_until_signalled(work, what)`: a node agent's main loop (the proxy, podnet): runs
  `work` until SIGTERM or SIGINT, or until it fails (logged; exit code 1).

Concurrency: one asyncio loop (the component's own); uvicorn serves each request as a
task on it, so checks may read the component's state without locks.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import Any, Coroutine, Iterable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import client.metrics  # noqa: F401 - registers client/'s collectors (workqueue, REST client, leader)
from machinery.healthz import ENDPOINTS, Health, HealthCheck, named_check
from machinery.metrics import REGISTRY, exposition

log = logging.getLogger("minik8s.componentserver")

_NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def leader_election_check(elector: Any, *, timeout: float = 20.0) -> HealthCheck:
    """`leaderElection`: fails while `elector` leads but has not renewed its Lease for
    its lease duration plus `timeout` (kube-scheduler and kube-controller-manager use
    20 s)."""
    return named_check("leaderElection", lambda: elector.check(timeout))


def informer_sync_check(informers: Iterable[Any]) -> HealthCheck:
    """`informer-sync`: fails until every informer has synced its first list."""
    informers = list(informers)

    def check() -> None:
        waiting = [getattr(getattr(i, "resource", None), "plural", repr(i))
                   for i in informers if not i.has_synced()]
        if waiting:
            raise RuntimeError(f"{len(waiting)} informers not started yet: {waiting}")
    return named_check("informer-sync", check)


async def run_until_signalled(work: Coroutine[Any, Any, Any], what: str) -> int:
    """Run `work` as a task until SIGTERM or SIGINT (0), or until it raises (logged, 1);
    it is cancelled and awaited either way."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(work, name=what)
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.error("the %s failed: %r", what, task.exception())
        code = 1
    for t in (task, waiter):
        t.cancel()
    await asyncio.gather(task, waiter, return_exceptions=True)
    return code


class ComponentServer:
    def __init__(self, health: Health | None = None, *, registry: Any = REGISTRY):
        self.health = health or Health()
        self.registry = registry
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        routes = [Route("/metrics", self._metrics, methods=["GET"])]
        for endpoint in ENDPOINTS:
            routes.append(Route(f"/{endpoint}", self._health, methods=["GET"]))
            routes.append(Route(f"/{endpoint}/{{name}}", self._health, methods=["GET"]))
        self.app = Starlette(routes=routes, exception_handlers={404: self._not_found})

    async def _metrics(self, request: Request) -> Response:
        body, content_type = exposition(request.headers.get("accept"), self.registry)
        return Response(body, media_type=content_type)

    async def _health(self, request: Request) -> Response:
        answer = await self.health.handle(request.url.path, request.url.query)
        if answer is None:
            return await self._not_found(request, None)
        code, body = answer
        return PlainTextResponse(body, code, headers=_NOSNIFF)

    @staticmethod
    async def _not_found(request: Request, exc: Any) -> Response:
        return PlainTextResponse("404 page not found\n", 404, headers=_NOSNIFF)

    async def start(self, host: str, port: int) -> None:
        # The socket is bound here so that a taken port is an OSError to the caller
        # (uvicorn would log it and raise SystemExit inside its task).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", ws="none", timeout_graceful_shutdown=1)
        server = self._server = _Server(config)
        self._task = asyncio.create_task(_serve(server, sock), name=f"componentserver-{self.port}")
        while not server.started:
            if self._task.done():
                self._server = None
                sock.close()
                await self._task  # raises what made it fail
                raise OSError(f"could not serve on {host}:{port}")
            await asyncio.sleep(0.01)
        log.info("serving %s on http://%s:%d", ", ".join(("/metrics", *(f"/{e}" for e in ENDPOINTS))),
                 host, self.port)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._task), 3)
        if not self._task.done():
            self._task.cancel()
        self._server = self._task = None


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit:  # uvicorn's way to say startup failed (it logged why)
        raise OSError("the metrics and health server failed to start") from None


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the component decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


__all__ = ["ComponentServer", "Health", "HealthCheck", "informer_sync_check",
           "leader_election_check", "named_check"]
