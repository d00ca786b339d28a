"""The aggregator's proxy to extension API servers (kube-aggregator's proxyHandler).

A request for an aggregated group/version goes to one ready endpoint of the
APIService's Service (available.resolve), over HTTPS with the front-proxy client
certificate, the TLS server name `<service>.<namespace>.svc` verified against
spec.caBundle unless insecureSkipTLSVerify. The user the API server authenticated goes
in the requestheader headers; the client's own credentials and any header that could
claim another user are not forwarded. Request and response bodies are streamed, so a
watch stays open as long as either side keeps it. One httpx client per distinct TLS
configuration, kept until the server stops.
"""
from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from apiserver.aggregator import available
from apiserver.serving import WatchResponse
from apiserver.strategies.apiregistration import ca_bundle
from machinery import requestheader

if TYPE_CHECKING:
    from apiserver.aggregator import Aggregator

log = logging.getLogger("minik8s.apiserver.aggregator")

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host"}
# Who the availability check is, as kube-aggregator's discovery check names itself.
CHECKER = ("system:kube-aggregator", ("system:masters",))


def unavailable() -> Response:
    """kube-aggregator's proxyError: http.Error(w, "service unavailable", 503)."""
    return PlainTextResponse("service unavailable\n", 503, headers={"X-Content-Type-Options": "nosniff"})


def ssl_context(svc: dict, client_cert: tuple[str, str] | None) -> ssl.SSLContext:
    """How to dial an APIService's Service: verified by spec.caBundle (the system's roots
    without one), or not at all with insecureSkipTLSVerify; the front-proxy certificate."""
    spec = svc.get("spec") or {}
    ctx = ssl.create_default_context()
    if spec.get("insecureSkipTLSVerify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        bundle = ca_bundle(spec)
        if bundle:
            ctx = ssl.create_default_context(cadata=bundle.decode("latin-1"))
    if client_cert is not None:
        ctx.load_cert_chain(*client_cert)
    return ctx


class Proxy:
    def __init__(self, agg: Aggregator, client_cert: tuple[str, str] | None):
        self.agg = agg
        self.client_cert = client_cert
        self._clients: dict[tuple[str, bool], httpx.AsyncClient] = {}

    @staticmethod
    def netloc(host: str, port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _client(self, apisvc: dict) -> httpx.AsyncClient:
        spec = apisvc.get("spec") or {}
        key = (str(spec.get("caBundle") or ""), bool(spec.get("insecureSkipTLSVerify")))
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = httpx.AsyncClient(
                verify=ssl_context(apisvc, self.client_cert),
                timeout=httpx.Timeout(connect=5.0, read=None, write=30.0, pool=5.0))
        return client

    @staticmethod
    def _server_name(apisvc: dict) -> str:
        ref = (apisvc.get("spec") or {}).get("service") or {}
        return f"{ref.get('name', '')}.{ref.get('namespace', '')}.svc"

    def _user_headers(self, name: str, groups: Any, extra: dict, uid: str = "") -> list[tuple[str, str]]:
        return requestheader.headers_for(name, groups, extra, self.agg.options.requestheader, uid)

    async def get(self, apisvc: dict, host: str, port: int, path: str, *, timeout: float) -> httpx.Response:
        """The availability check's GET, as the aggregator itself."""
        client = self._client(apisvc)
        headers = [("accept", "application/json"), *self._user_headers(CHECKER[0], CHECKER[1], {})]
        return await client.get(f"https://{self.netloc(host, port)}{path}", headers=headers, timeout=timeout,
                                extensions={"sni_hostname": self._server_name(apisvc)})

    async def serve(self, request: Request, apisvc: dict) -> Response:
        conds = (apisvc.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Available" and c.get("status") == "True" for c in conds):
            return unavailable()
        try:
            host, port = available.resolve(self.agg, apisvc)
        except available.NotAvailable:
            return unavailable()
        cfg = self.agg.options.requestheader
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        headers = [(k, v) for k, v in headers if k.lower() not in _HOP and k.lower() != "authorization"
                   and not k.lower().startswith("impersonate-")
                   and not requestheader.is_front_proxy_header(k, cfg)]
        user = request.scope.get("user")
        if user is not None:
            headers += self._user_headers(user.name, user.groups, dict(user.extra), user.uid)
        query = request.scope.get("query_string", b"").decode("latin-1")
        url = f"https://{self.netloc(host, port)}{request.scope['path']}" + (f"?{query}" if query else "")
        has_body = request.method in ("POST", "PUT", "PATCH") or "content-length" in request.headers
        client = self._client(apisvc)
        upstream = client.build_request(request.method, url, headers=headers,
                                        content=request.stream() if has_body else None,
                                        extensions={"sni_hostname": self._server_name(apisvc)})
        try:
            resp = await client.send(upstream, stream=True)
        except (httpx.HTTPError, OSError) as e:
            log.warning("Error while proxying request to %s: %s", url, e)
            return unavailable()
        out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
        return WatchResponse(resp.aiter_raw(), status_code=resp.status_code, headers=out_headers,
                                 background=BackgroundTask(resp.aclose))

    async def close(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()
