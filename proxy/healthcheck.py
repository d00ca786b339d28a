"""The per-Service health check server (kube-proxy's ServiceHealthServer,
pkg/proxy/healthcheck/service_health.go).

For every Service with `externalTrafficPolicy: Local` and a `healthCheckNodePort`, the
proxy listens on that port (on every address, or on each --nodeport-addresses one) and
answers any GET with 200 while this node has local endpoints for it and 503 while it
has none, so an external load balancer sends traffic only to nodes that can serve it.
The body is kube-proxy's JSON: `{"service": {"namespace", "name"}, "localEndpoints": N,
"serviceProxyHealthy": true}`, with `X-Load-Balancing-Endpoint-Weight: N`.

HTTP/1.1 parsing through h11 (uvicorn's own parser); one request per connection.
`sync(wanted)` opens and closes listeners to match; a port that cannot be bound is
logged and retried at the next sync, as kube-proxy does. One asyncio loop.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass

import h11

log = logging.getLogger("minik8s.proxy.healthcheck")


@dataclass
class ServiceHealth:
    namespace: str
    name: str
    local_endpoints: int


class ServiceHealthServer:
    def __init__(self, addresses: tuple[str, ...] = ("0.0.0.0",)):
        self.addresses = addresses
        self.services: dict[int, ServiceHealth] = {}
        self._servers: dict[int, list[asyncio.Server]] = {}

    async def sync(self, wanted: dict[int, ServiceHealth]) -> None:
        self.services = dict(wanted)
        for port in list(self._servers):
            if port not in wanted:
                for s in self._servers.pop(port):
                    s.close()
        for port in wanted:
            if port in self._servers:
                continue
            servers = []
            try:
                for addr in self.addresses:
                    servers.append(await asyncio.start_server(
                        functools.partial(self._handle, port), addr, port, reuse_address=True))
            except OSError as e:
                log.error("cannot serve the health check of %s/%s on port %d: %s",
                          wanted[port].namespace, wanted[port].name, port, e)
                for s in servers:
                    s.close()
                continue
            self._servers[port] = servers

    async def close(self) -> None:
        await self.sync({})

    async def _handle(self, port: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(r.read(4096), 10)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    break
                if isinstance(event, h11.ConnectionClosed):
                    return
            svc = self.services.get(port)
            count = svc.local_endpoints if svc else 0
            body = json.dumps({"service": {"namespace": svc.namespace if svc else "",
                                           "name": svc.name if svc else ""},
                               "localEndpoints": count, "serviceProxyHealthy": True}).encode()
            status = 200 if count else 503
            headers = [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
                       ("X-Load-Balancing-Endpoint-Weight", str(count)),
                       ("Content-Length", str(len(body))), ("Connection", "close")]
            w.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
            if event.method != b"HEAD":
                w.write(conn.send(h11.Data(data=body)) or b"")
            w.write(conn.send(h11.EndOfMessage()) or b"")
            await w.drain()
        except (h11.RemoteProtocolError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            w.close()
