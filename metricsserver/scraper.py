"""Scraping every node's kubelet, as metrics-server's pkg/scraper does.

Guarantees
- `Scraper.scrape(nodes)` GETs `/metrics/resource` of every node at once, each within
  `timeout` (metrics-server: 0.9 x the metric resolution), and returns one `Batch` of
  every node that answered; a node that failed (no address, refused, 401/403, a body
  that is not Prometheus text, too slow) is logged and left out, so the storage drops
  its points.
- A node's address is the first of `address_types` its status lists (metrics-server's
  --kubelet-preferred-address-types); its port the one the node reports
  (status.daemonEndpoints.kubeletEndpoint.Port) unless `use_node_status_port` is off or
  it reports none, then `port` (10250). A node reporting port 0 (no endpoint) fails.
- The kubelet is reached over HTTPS with the kubeconfig's credentials (client
  certificate or bearer token), its certificate verified against `ca_file` or else the
  kubeconfig's CA, not at all with `insecure` (--kubelet-insecure-tls), as metrics-server
  builds its kubelet client from its rest config.

Concurrency: one asyncio loop; one httpx client shared by the requests of a scrape.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from typing import Any

import httpx

from client.kubeconfig import Connection
from metricsserver import metrics
from metricsserver.storage import Batch, decode

log = logging.getLogger("minik8s.metricsserver")

DEFAULT_ADDRESS_TYPES = ("Hostname", "InternalDNS", "InternalIP", "ExternalDNS", "ExternalIP")
DEFAULT_KUBELET_PORT = 10250


class ScrapeError(Exception):
    pass


def node_address(node: dict[str, Any], address_types: tuple[str, ...]) -> str:
    addresses = (node.get("status") or {}).get("addresses") or []
    for t in address_types:
        for a in addresses:
            if a.get("type") == t and a.get("address"):
                return str(a["address"])
    raise ScrapeError(f"node {node['metadata']['name']} has no valid hostname and/or IP address: "
                      + ", ".join(f"{a.get('address')} {a.get('type')}" for a in addresses))


def kubelet_tls(conn: Connection, *, ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The kubeconfig's TLS settings with the kubelet's CA (or none) in place of the API
    server's, as metrics-server's GetKubeletConfig rewrites its rest config."""
    kubelet = dataclasses.replace(conn, server="https://kubelet", insecure=insecure,
                                  **({"ca_file": ca_file, "ca_data": None} if ca_file else {}))
    ctx = kubelet.ssl_context()
    assert isinstance(ctx, ssl.SSLContext)
    return ctx


class Scraper:
    def __init__(self, conn: Connection, *, timeout: float, address_types: tuple[str, ...] = DEFAULT_ADDRESS_TYPES,
                 port: int = DEFAULT_KUBELET_PORT, use_node_status_port: bool = True,
                 ca_file: str | None = None, insecure: bool = False):
        self.conn, self.timeout = conn, timeout
        self.address_types, self.port, self.use_node_status_port = address_types, port, use_node_status_port
        headers = {"Authorization": f"Bearer {conn.token}"} if conn.token else {}
        # every node at once, as metrics-server's goroutine per node: no pool limit to queue behind
        self.http = httpx.AsyncClient(verify=kubelet_tls(conn, ca_file=ca_file, insecure=insecure),
                                      headers=headers, timeout=timeout, trust_env=False,
                                      limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
        self.last_duration: dict[str, float] = {}

    async def close(self) -> None:
        await self.http.aclose()

    def url(self, node: dict[str, Any]) -> str:
        port = self.port
        if self.use_node_status_port:
            endpoints = (node.get("status") or {}).get("daemonEndpoints") or {}
            reported = (endpoints.get("kubeletEndpoint") or {}).get("Port")
            if reported is not None:
                port = int(reported)
        if not port:
            raise ScrapeError(f"node {node['metadata']['name']} reports no kubelet endpoint")
        host = node_address(node, self.address_types)
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{port}/metrics/resource"

    async def scrape_node(self, node: dict[str, Any]) -> Batch:
        name = node["metadata"]["name"]
        url = self.url(node)
        started = time.time()
        try:
            resp = await asyncio.wait_for(self.http.get(url), self.timeout)
        except (httpx.HTTPError, OSError, asyncio.TimeoutError) as e:
            metrics.KUBELET_REQUESTS.labels("false").inc()
            raise ScrapeError(f"request failed, \"{url}\": {type(e).__name__}: {e}") from None
        finally:
            metrics.KUBELET_DURATION.labels(name).observe(time.time() - started)
            metrics.KUBELET_LAST.labels(name).set(started)
        metrics.KUBELET_REQUESTS.labels(str(resp.status_code == 200).lower()).inc()
        if resp.status_code != 200:
            raise ScrapeError(f"request failed, \"{url}\": {resp.status_code} {resp.text.strip()[:200]}")
        try:
            return decode(resp.text, name, started)
        except ValueError as e:
            raise ScrapeError(f"failed parsing metrics from \"{url}\": {e}") from None

    async def scrape(self, nodes: list[dict[str, Any]]) -> Batch:
        results = await asyncio.gather(*(self.scrape_node(n) for n in nodes), return_exceptions=True)
        out = Batch()
        for node, r in zip(nodes, results):
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                log.error("Failed to scrape node node=%s err=%s", node["metadata"]["name"], r)
                continue
            out.nodes.update(r.nodes)
            out.pods.update(r.pods)
        return out
