"""One probe attempt, as the kubelet's prober runs it: exec, httpGet or tcpSocket.

Network probes connect from inside the pod's network namespace through
`Runtime.pod_socket`, so a server listening on the pod's 127.0.0.1 can be probed and
nothing depends on the node routing to the pod. The default host is the pod IP. As in
Kubernetes, an HTTP status in [200, 400) is success, and a timeout is a failure.

Scheduling (initialDelaySeconds, periodSeconds, thresholds) belongs to the pod worker;
these functions block for at most the probe's timeout and are safe from any thread.
"""
from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from typing import Callable, Mapping

from kubelet.runtime import ContainerRuntimeError, Runtime

USER_AGENT = "kube-probe/1.32"


@dataclass
class ProbeResult:
    success: bool
    message: str = ""


def tcp_socket(open_socket: Callable[[], socket.socket], host: str, port: int,
               timeout: float) -> ProbeResult:
    try:
        with open_socket() as s:
            s.settimeout(timeout)
            s.connect((host, port))
        return ProbeResult(True)
    except OSError as e:
        return ProbeResult(False, f"dial tcp {host}:{port}: {e}")


class _PodHTTPConnection(http.client.HTTPConnection):
    def __init__(self, open_socket, host, port, timeout, tls):
        super().__init__(host, port, timeout=timeout)
        self._open_socket, self._tls = open_socket, tls

    def connect(self):
        s = self._open_socket()
        s.settimeout(self.timeout)
        try:
            s.connect((self.host, self.port))
            if self._tls:  # Kubernetes does not verify probe certificates
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                s = ctx.wrap_socket(s, server_hostname=self.host)
        except BaseException:
            s.close()
            raise
        self.sock = s


def http_get(open_socket: Callable[[], socket.socket], *, host: str, port: int,
             path: str = "/", scheme: str = "HTTP", headers: Mapping[str, str] | None = None,
             timeout: float = 1.0) -> ProbeResult:
    conn = _PodHTTPConnection(open_socket, host, port, timeout, scheme.upper() == "HTTPS")
    try:
        conn.request("GET", path or "/", headers={"User-Agent": USER_AGENT, "Accept": "*/*",
                                                  **(headers or {})})
        resp = conn.getresponse()
        body = resp.read(10 * 1024)
        if 200 <= resp.status < 400:
            return ProbeResult(True)
        return ProbeResult(False, f"HTTP probe failed with statuscode: {resp.status} "
                                  f"{body.decode(errors='replace')}".strip())
    except (OSError, http.client.HTTPException) as e:
        return ProbeResult(False, f"Get {scheme.lower()}://{host}:{port}{path}: {e}")
    finally:
        conn.close()


def exec_command(runtime: Runtime, container_id: str, command: list[str],
                 timeout: float) -> ProbeResult:
    try:
        r = runtime.exec_sync(container_id, command, timeout=timeout)
    except TimeoutError:
        return ProbeResult(False, f"command timed out after {timeout}s")
    except ContainerRuntimeError as e:
        return ProbeResult(False, e.message)
    output = (r.stdout + r.stderr).decode(errors="replace")
    return ProbeResult(r.exit_code == 0, output if r.exit_code == 0 else
                       f"command exited with {r.exit_code}: {output}".strip())


def run_probe(runtime: Runtime, uid: str, container_id: str, probe: Mapping, *,
              pod_ip: str, ports: Mapping[str, int] | None = None) -> ProbeResult:
    """Run one attempt of a v1 Probe. Named ports are looked up in `ports` (the
    container's ports by name)."""
    timeout = float(probe.get("timeoutSeconds") or 1)

    def port_of(p) -> int:
        if isinstance(p, str) and not p.isdigit():
            if p not in (ports or {}):
                raise ValueError(f"port {p!r} not found in the container's ports")
            return (ports or {})[p]
        return int(p)

    def opener():
        return runtime.pod_socket(uid)
    try:
        if "exec" in probe:
            return exec_command(runtime, container_id, probe["exec"].get("command") or [], timeout)
        if "httpGet" in probe:
            h = probe["httpGet"]
            headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
            return http_get(opener, host=h.get("host") or pod_ip, port=port_of(h["port"]),
                            path=h.get("path") or "/", scheme=h.get("scheme") or "HTTP",
                            headers=headers, timeout=timeout)
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            return tcp_socket(opener, t.get("host") or pod_ip, port_of(t["port"]), timeout)
    except (ValueError, ContainerRuntimeError) as e:
        return ProbeResult(False, str(e))
    return ProbeResult(False, "probe has no supported handler (exec, httpGet, tcpSocket)")
