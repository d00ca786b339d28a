"""`kubectl-lite port-forward TYPE/NAME [LOCAL_PORT:]REMOTE_PORT...`: local ports to a
pod's, through the API server's `pods/{name}/portforward` (which proxies to the node's
kubelet), as kubectl port-forward does.

- TYPE/NAME is a pod (`NAME`, `pod/NAME`), a service (`svc/NAME`: a running pod its
  selector picks, and each service port translated to the container port it targets,
  a named targetPort looked up in the pod's containers), or anything with a pod
  selector (`deploy/NAME`, `rs/NAME`...), as kubectl's AttachablePodForObject picks.
- A port is `REMOTE` (local = remote), `LOCAL:REMOTE`, or `:REMOTE` / `0:REMOTE` (a free
  local port). It listens on `--address` (default `localhost`: 127.0.0.1 and, where the
  host has it, ::1), printing kubectl's `Forwarding from 127.0.0.1:8080 -> 80` for each,
  and `Handling connection for 8080` for each connection.
- Each local connection is its own WebSocket (`v4.channel.k8s.io`, `?ports=REMOTE`):
  channel 0 carries the data, channel 1 the errors, each opened by the port as two
  little-endian bytes. A connection the pod refuses is reported on stderr as kubectl
  reports it (`an error occurred forwarding 8080 -> 80: error forwarding port 80 to pod
  ...`) and closed; the forward goes on for the next connections.
- It runs until interrupted (Ctrl-C), then exits 0.
"""
from __future__ import annotations

import contextlib
import socket
import sys
import threading
import urllib.parse
from typing import Any

from kubectl_lite.common import CLIError, Parser

PROTOCOLS = ["v4.channel.k8s.io"]


def add_port_forward(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="TYPE/NAME [LOCAL_PORT:]REMOTE_PORT")
    p.add_argument("--address", action="append", default=None,
                   help="Addresses to listen on (comma separated). Only accepts IP addresses or "
                        "localhost as a value. When localhost is supplied, kubectl-lite will try "
                        "to bind on both 127.0.0.1 and ::1")


def parse_ports(specs: list[str]) -> list[tuple[int, int]]:
    """(local, remote) pairs; local 0 asks for a free port."""
    out = []
    for spec in specs:
        local, sep, remote = spec.partition(":")
        if not sep:
            local = remote = spec
        try:
            lp, rp = int(local or 0), int(remote)
        except ValueError:
            raise CLIError(f"Error parsing local port '{local}': invalid port" if not local.isdigit()
                           else f"Error parsing remote port '{remote}': invalid port") from None
        if not 0 <= lp < 65536:
            raise CLIError(f"Error parsing local port '{local}': port out of range")
        if not 0 < rp < 65536:
            raise CLIError(f"Remote port must be > 0 and < 65536: {remote}")
        out.append((lp, rp))
    return out


def _service_pod(s: Any, svc: dict) -> dict:
    sel = (svc.get("spec") or {}).get("selector") or {}
    name = svc["metadata"]["name"]
    if not sel:
        raise CLIError(f"invalid service '{name}': Service is defined without a selector")
    label_selector = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
    pods = s.client.list("pods", namespace=svc["metadata"].get("namespace"),
                         label_selector=label_selector).get("items", [])
    if not pods:
        raise CLIError(f"no pods found for service/{name}")
    # running and ready first, then the oldest (kubectl's ActivePods order, roughly)
    def rank(p: dict) -> tuple:
        status = p.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        return (status.get("phase") != "Running", not ready,
                p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"])
    return sorted(pods, key=rank)[0]


def _translate(svc: dict, pod: dict, ports: list[tuple[int, int]], specs: list[str]) -> list[tuple[int, int]]:
    """Service ports to the container ports they target (kubectl's
    translateServicePortToTargetPort); a local port left out stays the service port."""
    out = []
    for (local, remote), spec in zip(ports, specs):
        sp = next((p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("port") == remote), None)
        if sp is None:
            raise CLIError(f"Service {svc['metadata']['name']} does not have a service port {remote}")
        target = sp.get("targetPort", remote)
        if isinstance(target, str) and not target.isdigit():
            target = next((cp.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or []
                           for cp in c.get("ports") or [] if cp.get("name") == target), None)
            if target is None:
                raise CLIError(f"Pod '{pod['metadata']['name']}' does not have a named port "
                               f"'{sp.get('targetPort')}'")
        if ":" not in spec:
            local = remote
        out.append((local, int(target)))
    return out


def _target(s: Any, arg: str, specs: list[str]) -> tuple[dict, list[tuple[int, int]]]:
    from kubectl_lite.pods import _pod_name, _resolve_pod
    ports = parse_ports(specs)
    kind, name = _pod_name(arg)
    r = s.resource(kind)
    if r.kind == "Service":
        svc = s.client.get(r, name)
        pod = _service_pod(s, svc)
        return pod, _translate(svc, pod, ports, specs)
    return _resolve_pod(s, arg), ports


def _addresses(values: list[str] | None) -> list[str]:
    out = []
    for v in values or ["localhost"]:
        for a in v.split(","):
            a = a.strip()
            if a == "localhost":
                out += ["127.0.0.1", "::1"]
            else:
                try:
                    socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)
                except OSError:
                    raise CLIError(f"{a} is not a valid IP") from None
                out.append(a)
    return list(dict.fromkeys(out))


def run_port_forward(args: Any, s: Any) -> int:
    if len(args.args) < 2:
        raise CLIError("TYPE/NAME and list of ports are required for port-forward")
    addresses = _addresses(args.address)
    pod, ports = _target(s, args.args[0], args.args[1:])
    phase = (pod.get("status") or {}).get("phase")
    if phase != "Running":
        raise CLIError(f"unable to forward port because pod is not running. Current status={phase}")
    md = pod["metadata"]
    path = s.client.resources.get("pods").path(namespace=md["namespace"], name=md["name"],
                                               subresource="portforward")
    listeners = []
    for local, remote in ports:
        for addr in addresses:
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            try:
                ls = socket.socket(family, socket.SOCK_STREAM)
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind((addr, local))
                ls.listen(128)
            except OSError as exc:
                if addr == "::1" and args.address is None:  # no IPv6 loopback: localhost is 127.0.0.1
                    continue
                print(f"Unable to listen on port {local}: Listeners failed to create with the "
                      f"following errors: [unable to create listener: Error listen tcp "
                      f"{_join(addr, local)}: bind: {exc.strerror}]", file=sys.stderr)
                continue
            local = ls.getsockname()[1]
            host = f"[{addr}]" if ":" in addr else addr
            print(f"Forwarding from {host}:{local} -> {remote}", flush=True)
            listeners.append((ls, local, remote))
    if not listeners:
        raise CLIError(f"unable to listen on any of the requested ports: {[p for _, p in ports]}")
    for ls, local, remote in listeners:
        threading.Thread(target=_accept, args=(s, ls, path, local, remote), daemon=True).start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for ls, _, _ in listeners:
            ls.close()
    return 0


def _join(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _accept(s: Any, ls: socket.socket, path: str, local: int, remote: int) -> None:
    while True:
        try:
            conn, _ = ls.accept()
        except OSError:
            return
        print(f"Handling connection for {local}", flush=True)
        threading.Thread(target=_forward, args=(s, conn, path, local, remote), daemon=True).start()


def _forward(s: Any, conn: socket.socket, path: str, local: int, remote: int) -> None:
    """One local connection: its own WebSocket, bytes both ways until either side ends."""
    from websockets.exceptions import ConnectionClosed

    from kubectl_lite.pods import _open_websocket
    try:
        ws = _open_websocket(s, path + "?" + urllib.parse.urlencode({"ports": remote}), PROTOCOLS)
    except Exception as exc:  # noqa: BLE001 - reported per connection, as kubectl does
        print(f"error: error upgrading connection: {exc}", file=sys.stderr, flush=True)
        conn.close()
        return
    started = [False, False]

    def up() -> None:
        try:
            while data := conn.recv(65536):
                ws.send(b"\x00" + data)
        except (OSError, ConnectionClosed):
            pass
        # v4 has no half-close: after the local side's end, the pod's answer still
        # comes, until the pod closes

    threading.Thread(target=up, daemon=True).start()
    try:
        for frame in ws:
            if isinstance(frame, str) or not frame:
                continue
            channel, payload = frame[0], frame[1:]
            if channel > 1:
                continue
            if not started[channel]:
                started[channel], payload = True, payload[2:]
            if not payload:
                continue
            if channel == 0:
                conn.sendall(payload)
            else:
                print(f"an error occurred forwarding {local} -> {remote}: "
                      f"{payload.decode(errors='replace')}", file=sys.stderr, flush=True)
    except (OSError, ConnectionClosed):
        pass
    finally:
        ws.close()
        # shutdown, not only close: the other thread's recv() would keep the socket open
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()
