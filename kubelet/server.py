"""The kubelet's endpoint on the node's address (pkg/kubelet/server): what the API server
proxies `pods/{name}/log` and `pods/{name}/exec` to.

    GET /healthz                                      "ok" (no credential needed)
    GET /metrics                                      kubelet/metrics.py and the process's,
                                                      Prometheus' text format
    GET /metrics/resource                             the node's, pods' and containers' CPU
                                                      and memory (kubelet/stats.py)
    GET /stats/summary                                the Summary API (stats/v1alpha1) JSON
    GET /containerLogs/{namespace}/{pod}/{container}  follow, tailLines, previous,
                                                      timestamps, sinceSeconds, sinceTime,
                                                      limitBytes
    GET /exec/{namespace}/{pod}/{container}           WebSocket, v5.channel.k8s.io or
                                                      v4.channel.k8s.io: command (repeated),
                                                      stdin, stdout, stderr, tty
    GET /portForward/{namespace}/{pod}[/{uid}]        WebSocket, v4.channel.k8s.io,
                                                      v4.base64.channel.k8s.io or none:
                                                      port (repeated or comma-separated)

Every request but /healthz (/metrics included: Kubernetes protects it) is authenticated
and authorized by kubelet/auth.py: over HTTPS (`tls`: --tls-cert-file and
--tls-private-key-file) by the client certificate, verified against --client-ca-file in
the handshake, and --authorization-mode (Webhook: a SubjectAccessReview for
`nodes/proxy`, `nodes/metrics`...); over plain HTTP by the token shared with the API
server (`Authorization: Bearer <token>`). The verified peer certificate reaches the app
as `scope["minik8s.peer_cert"]`, put there by the uvicorn protocol classes below, which
read it from the connection's SSL object. Which run of a container a log request reads
follows the kubelet (validateContainerLogStatus): the running or last terminated run,
`previous` the one before; errors are `kind: Status` bodies.

No step of an exec blocks the kubelet's event loop: finding the container, starting the
command (the runtime's fork server) and collecting its exit code run in the kubelet's
thread pool; the output is read through the loop's pipe transports.

Exec frames carry a leading channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a Status
JSON with the exit code when it is not 0), 4 resize (ignored), and with v5 255 close (the
client's stdin is done). There is no TTY: with `tty` the command's stderr goes to stdout.

Port forwarding follows the kubelet's websocket.go: per port, a data channel (2i) and an
error channel (2i+1), each opened by the port as two little-endian bytes; the kubelet
connects to localhost:port in the pod's network namespace (Runtime.port_forward) when
the WebSocket opens, and a refused connection is reported on the error channel as
"error forwarding port P to pod <sandbox>, uid : failed to connect ...". The WebSocket
closes when every port's connection has ended (the pod closed it, or the client left).
In base64 mode a frame is text: the channel as a digit, then the payload in base64.

Log files are read by a thread per request that hands chunks to the event loop; it stops
when the container stops (follow), the file ends, or the client goes away.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from kubelet.auth import EndpointAuth
from kubelet import stats
from kubelet.kubelet import Kubelet
from kubelet.runtime import ContainerRuntimeError, ContainerStatus, logs
from kubelet.status import CONTAINER_ID_PREFIX
from machinery.errors import APIError, BadRequest, InternalError, NotFound
from machinery.metrics import exposition

log = logging.getLogger("minik8s.kubelet.server")

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PORT_FORWARD_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def _status(err: APIError) -> Response:
    return Response(orjson.dumps(err.to_status()), status_code=err.code, media_type="application/json")


def _flag(q, name: str) -> bool:
    return q.get(name, "").lower() in ("1", "true")


def _ports(values: list[str]) -> list[int]:
    """The `port` query parameters, as the kubelet's NewV4Options reads them."""
    if not values:
        raise BadRequest('query parameter "port" is required')
    ports = []
    for value in values:
        if not value:
            raise BadRequest('query parameter "port" cannot be empty')
        for part in value.split(","):
            if not part.isdigit() or int(part) > 65535:
                raise BadRequest(f'unable to parse "{value}" as a port')
            if int(part) < 1:
                raise BadRequest(f'port "{value}" must be > 0')
            ports.append(int(part))
    return ports


def _int(q, name: str) -> int | None:
    raw = q.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f'invalid value for {name}: "{raw}"') from None


@dataclass(frozen=True)
class TLSConfig:
    """The endpoint's HTTPS: its serving certificate and key, and the CA its clients'
    certificates must chain to (None: no client certificate is asked for)."""
    cert_file: str
    key_file: str
    client_ca_file: str | None = None


class KubeletServer:
    def __init__(self, kubelet: Kubelet, *, token: str | None = None, auth: EndpointAuth | None = None,
                 tls: TLSConfig | None = None):
        """`auth` decides who may call (default: the shared `token`, plain HTTP)."""
        self.kubelet, self.tls = kubelet, tls
        self.auth = auth or EndpointAuth(node_name=kubelet.node_name, tls=False, token=token)
        self.summarizer, self.boot_time = stats.Summarizer(), stats.boot_time()
        self.app = Starlette(routes=[
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics),
            Route("/metrics/resource", self.resource_metrics),
            Route("/stats/summary", self.stats_summary),
            Route("/containerLogs/{namespace}/{pod}/{container}", self.container_logs),
            WebSocketRoute("/exec/{namespace}/{pod}/{container}", self.exec),
            WebSocketRoute("/portForward/{namespace}/{pod}", self.port_forward),
            WebSocketRoute("/portForward/{namespace}/{pod}/{uid}", self.port_forward),
        ])

    async def _refused(self, conn: Request | WebSocket) -> APIError | None:
        return await self.auth.check(method=conn.scope.get("method") or "GET", path=conn.url.path,
                                     headers=conn.headers, peer_cert=conn.scope.get("minik8s.peer_cert"))

    async def healthz(self, request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    async def metrics(self, request: Request) -> Response:
        if err := await self._refused(request):
            return _status(err)
        body, content_type = exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def _summary(self) -> dict | None:
        try:
            node, pods = await self.kubelet.blocking(stats.read_runtime, self.kubelet.runtime)
        except Exception as exc:  # noqa: BLE001 - reported as the kubelet does: scrape_error 1
            log.warning("reading the node's stats: %r", exc)
            return None
        return self.summarizer.summary(node_name=self.kubelet.node_name, node_start=self.boot_time,
                                       node=node, pods=pods)

    async def stats_summary(self, request: Request) -> Response:
        if err := await self._refused(request):
            return _status(err)
        summary = await self._summary()
        if summary is None:
            return _status(InternalError("failed to get the node's stats"))
        return Response(orjson.dumps(stats.to_json(summary)), media_type="application/json")

    async def resource_metrics(self, request: Request) -> Response:
        if err := await self._refused(request):
            return _status(err)
        return Response(stats.resource_metrics(await self._summary()), media_type=stats.CONTENT_TYPE)

    # -- which run -------------------------------------------------------------------

    def _find_run(self, namespace: str, pod_name: str, container: str, *, previous: bool,
                  running_only: bool = False) -> ContainerStatus:
        pod = self.kubelet.pod(namespace, pod_name)
        if pod is None:
            raise NotFound(f'pod "{pod_name}" not found', kind="pods", name=pod_name)
        uid = pod["metadata"]["uid"]
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []] + \
                [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
        if container not in names:
            raise BadRequest(f"container {container} is not valid for pod {pod_name}")
        runtime = self.kubelet.runtime
        if running_only:  # exec: the current run, straight from the runtime
            runs = sorted((c for c in runtime.list_containers(uid) if c.name == container),
                          key=lambda c: c.attempt)
            if not runs or not runs[-1].running:
                raise BadRequest(f'container not found ("{container}")')
            return runs[-1]
        cs = self.kubelet.container_status(uid, container)
        if cs is None:  # not synced yet since the kubelet started: the runs on the node
            runs = sorted((c for c in runtime.list_containers(uid) if c.name == container),
                          key=lambda c: c.attempt)
            if len(runs) < (2 if previous else 1):
                raise BadRequest(f'previous terminated container "{container}" in pod "{pod_name}" not found'
                                 if previous else f'container "{container}" in pod "{pod_name}" is '
                                 "waiting to start: ContainerCreating")
            return runs[-2] if previous else runs[-1]
        state, last = cs.get("state") or {}, (cs.get("lastState") or {}).get("terminated") or {}
        if previous:
            cid = last.get("containerID")
            if not cid:
                raise BadRequest(f'previous terminated container "{container}" in pod "{pod_name}" not found')
        elif "running" in state or "terminated" in state:
            cid = cs.get("containerID") or last.get("containerID")
        elif last.get("containerID"):
            cid = last["containerID"]
        else:
            reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
            raise BadRequest(f'container "{container}" in pod "{pod_name}" is waiting to start: {reason}')
        run = runtime.container_status(cid.removeprefix(CONTAINER_ID_PREFIX))
        if run is None:
            raise NotFound(f'container "{container}" in pod "{pod_name}" not found on the node')
        return run

    # -- logs ---------------------------------------------------------------------------

    async def container_logs(self, request: Request) -> Response:
        if err := await self._refused(request):
            return _status(err)
        p, q = request.path_params, request.query_params
        try:
            previous, follow = _flag(q, "previous"), _flag(q, "follow")
            tail, since_s, limit = _int(q, "tailLines"), _int(q, "sinceSeconds"), _int(q, "limitBytes")
            since_ns = None
            if since_s is not None:
                since_ns = int((time.time() - since_s) * 1e9)
            elif q.get("sinceTime"):
                try:
                    since_ns = logs.parse_time(q["sinceTime"].encode())
                except ValueError:
                    raise BadRequest(f'invalid value for sinceTime: "{q["sinceTime"]}"') from None
            run = await self.kubelet.blocking(self._find_run, p["namespace"], p["pod"], p["container"],
                                              previous=previous)
        except APIError as err:
            return _status(err)
        runtime = self.kubelet.runtime

        def running() -> bool:
            st = runtime.container_status(run.id)
            return st is not None and st.state != "exited"
        chunks = _read_in_thread(run.log_path, tail=tail, since_ns=since_ns,
                                 timestamps=_flag(q, "timestamps"), limit_bytes=limit,
                                 follow=follow and not previous, running=running)
        return _Streaming(chunks, media_type="text/plain")

    # -- exec ---------------------------------------------------------------------------

    async def exec(self, ws: WebSocket) -> None:
        p, q = ws.path_params, ws.query_params
        try:
            if err := await self._refused(ws):
                raise err
            argv = q.getlist("command")
            if not argv:
                raise BadRequest("you must specify at least 1 command")
            protocol = next((x for x in PROTOCOLS if x in ws.scope.get("subprotocols", ())), None)
            if protocol is None:
                raise BadRequest("a WebSocket subprotocol is required, one of: " + ", ".join(PROTOCOLS))
            run = await self.kubelet.blocking(self._find_run, p["namespace"], p["pod"], p["container"],
                                              previous=False, running_only=True)
        except APIError as err:
            await ws.send_denial_response(_status(err))
            return
        await ws.accept(subprotocol=protocol)
        stdin, tty = _flag(q, "stdin"), _flag(q, "tty")
        wanted = {STDOUT: _flag(q, "stdout"), STDERR: _flag(q, "stderr") or tty}
        try:
            proc = await self.kubelet.blocking(self.kubelet.runtime.exec, run.id, argv, stdin=stdin)
        except ContainerRuntimeError as e:
            await self._finish(ws, InternalError(e.message).to_status())
            return
        loop = asyncio.get_running_loop()

        async def pump(pipe, channel: int) -> None:
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
            try:
                while data := await reader.read(65536):
                    if wanted[channel]:
                        await ws.send_bytes(bytes([STDOUT if tty else channel]) + data)
            finally:
                transport.close()

        async def output() -> None:
            """Both output pipes to their end; a failed send (the client is gone)
            stops the other pump too."""
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pump(proc.stdout, STDOUT))
                tg.create_task(pump(proc.stderr, STDERR))

        async def feed() -> None:
            """Client frames: stdin data, v5 close of stdin, resize; returns when the
            client goes away."""
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                data = msg.get("bytes") or (msg.get("text") or "").encode()
                if not data or proc.stdin is None:
                    continue
                if data[0] == STDIN and len(data) > 1:
                    try:
                        await self.kubelet.blocking(_write_all, proc.stdin, data[1:])
                    except OSError:
                        pass
                elif data[0] == CLOSE and data[1:2] == bytes([STDIN]):
                    with contextlib.suppress(OSError):
                        proc.stdin.close()

        exited = loop.create_future()
        pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
        feeder = asyncio.create_task(feed())
        pumps = asyncio.create_task(output())
        try:
            for step in (pumps, exited):  # the output to its end, then the exit
                done, _ = await asyncio.wait({feeder, step}, return_when=asyncio.FIRST_COMPLETED)
                if step not in done or step.exception() is not None:  # the client left
                    proc.kill()
                    return
            # The command has exited, but its helper may not have reported the code yet
            # (on a loaded node, seconds later): wait for it off the event loop, which
            # serves every other exec, log and probe meanwhile.
            code = await self.kubelet.blocking(proc.wait)
            status = {"metadata": {}, "status": "Success"} if code == 0 else {
                "metadata": {}, "status": "Failure",
                "message": f"command terminated with non-zero exit code: error executing command "
                           f"{argv}, exit code {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
            await self._finish(ws, status)
        except (WebSocketDisconnect, OSError):
            proc.kill()
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            feeder.cancel()
            pumps.cancel()
            await asyncio.gather(feeder, pumps, return_exceptions=True)
            if proc.stdin:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            await self.kubelet.blocking(proc.wait)

    # -- port forwarding --------------------------------------------------------------------

    async def port_forward(self, ws: WebSocket) -> None:
        p = ws.path_params
        try:
            if err := await self._refused(ws):
                raise err
            ports = _ports(ws.query_params.getlist("port"))
            offered = ws.scope.get("subprotocols") or []
            protocol = next((x for x in PORT_FORWARD_PROTOCOLS if x in offered), None)
            if offered and protocol is None:
                raise BadRequest("unable to upgrade: requested protocol(s) are not supported: "
                                 + ", ".join(offered))
            pod = self.kubelet.pod(p["namespace"], p["pod"])
            if pod is None or (p.get("uid") and pod["metadata"].get("uid") != p["uid"]):
                raise NotFound(f'pod "{p["pod"]}" not found', kind="pods", name=p["pod"])
        except APIError as err:
            await ws.send_denial_response(_status(err))
            return
        await ws.accept(subprotocol=protocol)
        b64 = protocol == "v4.base64.channel.k8s.io"

        async def send(channel: int, data: bytes) -> None:
            if b64:
                await ws.send_text(str(channel) + base64.b64encode(data).decode())
            else:
                await ws.send_bytes(bytes([channel]) + data)

        uid = pod["metadata"]["uid"]
        socks: dict[int, Any] = {}  # data channel -> the connection in the pod
        loop = asyncio.get_running_loop()

        async def connect(i: int, port: int) -> None:
            try:
                sock = await self.kubelet.blocking(self.kubelet.runtime.port_forward, uid, port)
            except ContainerRuntimeError as e:
                msg = f"error forwarding port {port} to pod {uid}, uid : {e.message}"
                log.info("%s", msg)
                await send(2 * i + 1, msg.encode())
                return
            sock.setblocking(False)
            socks[2 * i] = sock

        async def forward(channel: int) -> None:
            sock = socks[channel]
            try:
                while data := await loop.sock_recv(sock, 65536):
                    await send(channel, data)
            except OSError:
                pass
            finally:
                socks.pop(channel, None)
                sock.close()

        async def take() -> None:
            while (msg := await ws.receive())["type"] != "websocket.disconnect":
                if msg.get("bytes"):
                    channel, data = msg["bytes"][0], msg["bytes"][1:]
                elif msg.get("text"):
                    channel, data = int(msg["text"][0]), base64.b64decode(msg["text"][1:])
                else:
                    continue
                if data and (sock := socks.get(channel)) is not None:
                    with contextlib.suppress(OSError):
                        await loop.sock_sendall(sock, data)

        try:
            for i, port in enumerate(ports):
                for channel in (2 * i, 2 * i + 1):
                    await send(channel, port.to_bytes(2, "little"))
            # Connected before the client's frames are read, so none is lost meanwhile.
            for i, port in enumerate(ports):
                await connect(i, port)
            forwards = asyncio.gather(*(forward(channel) for channel in list(socks)))
            taker = asyncio.create_task(take())
            try:
                await asyncio.wait({taker, forwards}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                taker.cancel()
                forwards.cancel()
                await asyncio.gather(taker, forwards, return_exceptions=True)
                for sock in list(socks.values()):
                    sock.close()
            with contextlib.suppress(Exception):
                await ws.close()
        except (WebSocketDisconnect, OSError, RuntimeError, ValueError) as exc:
            log.debug("port forward for %s/%s ended: %r", p["namespace"], p["pod"], exc)

    @staticmethod
    async def _finish(ws: WebSocket, status: dict) -> None:
        with contextlib.suppress(Exception):
            await ws.send_bytes(bytes([ERROR]) + orjson.dumps(status))
            await ws.close()

    # -- serving --------------------------------------------------------------------------

    async def serve(self, host: str, port: int, *, started: asyncio.Event | None = None) -> None:
        await serve(self.app, host, port, tls=self.tls, started=started)


async def serve(app: Any, host: str, port: int, *, tls: TLSConfig | None,
                sockets: list[socket.socket] | None = None, started: asyncio.Event | None = None) -> None:
    """Serve `app` as the kubelet's endpoint (HTTPS with `tls`, the verified peer
    certificate in every scope) on host:port, or on `sockets` already bound, until cancelled."""
    opts: dict[str, Any] = {}
    if tls is not None:
        opts = {"ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file, "ssl_ca_certs": tls.client_ca_file,
                # Optional, not required: a caller without a certificate gets a 401
                # Status rather than a failed handshake; one from another CA fails.
                "ssl_cert_reqs": ssl.CERT_OPTIONAL if tls.client_ca_file else ssl.CERT_NONE}
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                    access_log=False, lifespan="off", http=_HttpWithPeer,
                                    ws=_WSWithPeer, **opts))
    task = asyncio.create_task(server.serve(sockets=sockets))
    try:
        while not server.started:
            if task.done():
                await task  # raise what made it fail (the port is taken...)
                raise RuntimeError(f"the kubelet endpoint did not start on {host}:{port}")
            await asyncio.sleep(0.01)
        if started is not None:
            started.set()
        await task
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(task), 3)


def _with_peer(app: Any, transport: asyncio.BaseTransport) -> Any:
    """`app` with the connection's verified client certificate in every scope."""
    ssl_object = transport.get_extra_info("ssl_object")
    peer = ssl_object.getpeercert() if ssl_object is not None else None

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        scope["minik8s.peer_cert"] = peer
        await app(scope, receive, send)
    return wrapped


class _HttpWithPeer(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self.app = _with_peer(self.app, transport)


class _WSWithPeer(WebSocketsSansIOProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self.app = _with_peer(self.app, transport)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the kubelet decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class _Streaming(StreamingResponse):
    """A streamed body that ends as soon as the client goes away, even while idle (a
    followed log of a quiet container)."""

    async def __call__(self, scope, receive, send) -> None:
        async def stream() -> None:
            try:
                await self.stream_response(send)
            except OSError:
                pass
        task = asyncio.create_task(stream())
        waiter = asyncio.create_task(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()
            waiter.cancel()
            await asyncio.gather(task, waiter, return_exceptions=True)


def _write_all(f, data: bytes) -> None:
    f.write(data)
    f.flush()


async def _read_in_thread(path: str, *, running, **opts) -> AsyncIterator[bytes]:
    """`logs.read_log` on a thread of its own, its chunks handed to this loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        try:
            for chunk in logs.read_log(path, running=lambda: not stop.is_set() and running(), **opts):
                if stop.is_set():
                    break
                put(chunk)
        except Exception as exc:  # noqa: BLE001 - reported by ending the stream
            log.warning("reading %s: %s", path, exc)
        finally:
            put(None)
    threading.Thread(target=produce, name="log-reader", daemon=True).start()
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
    finally:
        stop.set()
