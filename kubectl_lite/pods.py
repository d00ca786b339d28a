"""`logs` and `exec`: a pod's output and a command in its container, through the API
server (which proxies them to the node's kubelet).

logs reads `pods/{name}/log` as text; `-f` keeps the stream open and writes each chunk
as it arrives; `-l` reads the logs of every matching pod (concurrently when following),
each line prefixed with `[pod/NAME/CONTAINER]` under `--prefix`.

exec speaks the `v5.channel.k8s.io` WebSocket protocol (offering `v4.channel.k8s.io` as
well): every binary message starts with a channel byte, 0 stdin, 1 stdout, 2 stderr,
3 error (a `Status` that also carries the command's exit code), 4 terminal resize
(`{"Width","Height"}`), and under v5 255 "close" (`255, 0` ends stdin). The command's
exit code becomes kubectl-lite's. The WebSocket is the `websockets` library's asyncio
client, driven from one thread by client/wsclient.py (the stdin pump sends while the main
thread reads, which websockets' threaded client cannot do safely over TLS). It is opened
as the session's other requests reach the server (`client.rest.Client.dial`): the same
proxy (kubeconfig proxy-url, else HTTP(S)_PROXY / NO_PROXY; a CONNECT tunnel), the same
tls-server-name and CA, the same credential (a token, a client certificate, an exec
plugin's); `logs -f` is a stream of the client itself.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from kubectl_lite.common import CLIError, Parser

DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io"]


def _pod_name(arg: str) -> tuple[str, str]:
    kind, sep, name = arg.partition("/")
    return (kind, name) if sep else ("pods", arg)


def _resolve_pod(s: Any, arg: str) -> dict:
    """A pod by name, `pod/NAME`, or the first pod of `deployment/NAME`/`replicaset/NAME`."""
    kind, name = _pod_name(arg)
    r = s.resource(kind)
    if r.kind == "Pod":
        return s.client.get(r, name)
    obj = s.client.get(r, name)
    from kubectl_lite.describe import selector_string
    sel = selector_string((obj.get("spec") or {}).get("selector"))
    if sel == "<none>":
        raise CLIError(f"cannot find the pods of {kind}/{name}: it has no selector")
    pods = s.client.list("pods", namespace=obj["metadata"].get("namespace"),
                         label_selector=sel).get("items", [])
    if not pods:
        raise CLIError(f"no pods found for {kind}/{name}")
    pods.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
    return pods[0]


def pick_container(pod: dict, container: str | None, *, quiet: bool = False) -> str:
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    if container:
        return container
    default = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER)
    chosen = default if default in names else (names[0] if names else "")
    if len(names) > 1 and not quiet:
        print(f'Defaulted container "{chosen}" out of: {", ".join(names)}', file=sys.stderr)
    return chosen


# -- logs --------------------------------------------------------------------------------

def add_logs(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="POD | TYPE/NAME [CONTAINER]")
    p.add_argument("-c", "--container", default=None)
    p.add_bool("--follow", "-f", help="Keep streaming the log")
    p.add_bool("--previous", "-p", help="The log of the previous, terminated container")
    p.add_argument("--tail", type=int, default=-1, help="Lines from the end to show (-1: all; "
                                                        "10 with -l)")
    p.add_bool("--timestamps", help="Prefix each line with its timestamp")
    p.add_argument("--since", default=None, help="Only lines newer than this duration (e.g. 5m)")
    p.add_argument("-l", "--selector", default=None)
    p.add_bool("--prefix", help="Prefix each line with [pod/NAME/CONTAINER]")
    p.add_bool("--all-containers", help="The logs of every container of the pods")
    p.add_argument("--max-log-requests", type=int, default=5)
    p.add_bool("--ignore-errors")


def _since_seconds(value: str | None) -> int | None:
    if not value:
        return None
    from kubectl_lite.session import _timeout
    return max(1, int(_timeout(value)))


def run_logs(args: Any, s: Any) -> int:
    from kubectl_lite.cli import api_error_message
    from machinery.errors import APIError
    if args.selector:
        if args.args:
            raise CLIError("only a selector (-l) or a pod name is allowed")
        from kubectl_lite.get import check_selectors
        check_selectors(args)
        pods = s.client.list("pods", label_selector=args.selector).get("items", [])
        if not pods:
            print(f"No resources found in {s.namespace} namespace.", file=sys.stderr)
            return 0
        if args.follow and len(pods) > args.max_log_requests:
            raise CLIError(f"you are attempting to follow {len(pods)} log streams, but maximum "
                           f"allowed concurrency is {args.max_log_requests}, use "
                           "--max-log-requests to increase the limit")
        tail = args.tail if args.tail >= 0 else 10
        prefix = args.prefix
    else:
        if not args.args:
            raise CLIError("expected POD or TYPE/NAME (or -l SELECTOR) as the argument")
        if len(args.args) > 2:
            raise CLIError("expected POD [CONTAINER]")
        pods = [_resolve_pod(s, args.args[0])]
        if len(args.args) == 2:
            args.container = args.container or args.args[1]
        tail, prefix = args.tail, args.prefix
    streams = []
    for pod in pods:
        names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        containers = names if args.all_containers else [
            pick_container(pod, args.container, quiet=bool(args.selector))]
        for c in containers:
            streams.append((pod, c))
    params_base = {"tailLines": tail if tail >= 0 else None,
                   "previous": "true" if args.previous else None,
                   "timestamps": "true" if args.timestamps else None,
                   "sinceSeconds": _since_seconds(args.since)}
    failures = 0
    if args.follow:
        return _follow(s, streams, params_base, prefix)
    for pod, c in streams:
        md = pod["metadata"]
        path = s.client.resources.get("pods").path(namespace=md["namespace"], name=md["name"],
                                                   subresource="log")
        try:
            text = s.client.request("GET", path, params={"container": c, **params_base}, raw=True)
        except APIError as err:
            print(api_error_message(err), file=sys.stderr)
            failures += 1
            if not args.ignore_errors and not args.selector:
                return 1
            continue
        _write(text, f"[pod/{md['name']}/{c}] " if prefix else "")
    return 1 if failures else 0


def _write(text: str, prefix: str) -> None:
    if prefix:
        text = "".join(prefix + line for line in text.splitlines(keepends=True))
    sys.stdout.write(text)
    sys.stdout.flush()


def _follow(s: Any, streams: list, params: dict, prefix: bool) -> int:
    import asyncio
    from kubectl_lite.cli import api_error_message
    from machinery.errors import APIError
    aio = s.client.aio
    failures = 0

    async def one(pod: dict, c: str) -> None:
        nonlocal failures
        md = pod["metadata"]
        path = aio.resources.get("pods").path(namespace=md["namespace"], name=md["name"],
                                              subresource="log")
        tag = f"[pod/{md['name']}/{c}] " if prefix else ""
        try:
            async with aio.stream(path, params={"container": c, "follow": "true", **params},
                                  read_timeout=None) as resp:
                if tag:
                    async for line in resp.aiter_lines():
                        _write(line + "\n", tag)
                else:
                    async for chunk in resp.aiter_bytes():
                        sys.stdout.buffer.write(chunk)
                        sys.stdout.buffer.flush()
        except APIError as err:
            print(api_error_message(err), file=sys.stderr)
            failures += 1

    async def all_streams() -> None:
        await asyncio.gather(*(one(p, c) for p, c in streams))
    s.client.run(all_streams())
    return 1 if failures else 0


# -- exec --------------------------------------------------------------------------------

def add_exec(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="POD | TYPE/NAME [-- COMMAND [args...]]")
    p.add_argument("-c", "--container", default=None)
    p.add_bool("--stdin", "-i", help="Pass stdin to the container")
    p.add_bool("--tty", "-t", help="Stdin is a TTY")
    p.add_bool("--quiet", "-q", help="Only print output from the remote session")


def run_exec(args: Any, s: Any) -> int:
    import urllib.parse
    if not args.args:
        raise CLIError("pod or type/name must be specified")
    command = list(args.command) or args.args[1:]
    if args.command and args.args[1:]:
        raise CLIError("expected POD -- COMMAND [args...]: arguments after the pod must follow --")
    if not command:
        raise CLIError("you must specify at least one command for the container")
    pod = _resolve_pod(s, args.args[0])
    md = pod["metadata"]
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise CLIError(f"cannot exec into a container in a completed pod; current phase is {phase}")
    container = pick_container(pod, args.container, quiet=args.quiet)
    tty = args.tty and args.stdin and sys.stdin.isatty()
    if args.tty and not tty and not args.quiet:
        print("Unable to use a TTY - input is not a terminal or the right kind of file",
              file=sys.stderr)
    query = [("command", c) for c in command] + [("container", container)]
    if args.stdin:
        query.append(("stdin", "true"))
    query.append(("stdout", "true"))
    if not tty:
        query.append(("stderr", "true"))
    if tty:
        query.append(("tty", "true"))
    path = s.client.resources.get("pods").path(namespace=md["namespace"], name=md["name"],
                                               subresource="exec")
    ws = _open_websocket(s, path + "?" + urllib.parse.urlencode(query))
    return Session(ws, stdin=args.stdin, tty=tty).run()


def _open_websocket(s: Any, target: str, protocols: list[str] = PROTOCOLS) -> Any:
    """The exec WebSocket, opened as every other request of the session reaches the
    server (kubectl's executors share its rest.Config transport): through the same
    proxy (a CONNECT tunnel, for ws:// too), verifying the same name (tls-server-name),
    with the same credential (an exec plugin's token or client certificate)."""
    import ssl

    from websockets.exceptions import InvalidProxyStatus, InvalidStatus

    from client.wsclient import connect
    from machinery.errors import from_status
    dial = s.client.run(s.client.aio.dial())
    secure = dial.server.startswith("https://")
    url = ("wss://" if secure else "ws://") + dial.server.split("://", 1)[1].rstrip("/") + target
    proxy = dial.proxy
    proxy_ssl = None
    if proxy is not None and proxy.scheme == "https":
        # the proxy's certificate is checked as client/transport.py checks it
        proxy_ssl = dial.ssl_context or ssl.create_default_context()
    headers = {k: v for k, v in dial.headers.items() if k != "user-agent"}
    # asyncio's create_connection takes TLS arguments only for a TLS connection
    tls: dict[str, Any] = {"ssl": dial.ssl_context, "server_hostname": dial.server_hostname} if secure else {}
    if proxy_ssl is not None:
        tls["proxy_ssl"] = proxy_ssl
    try:
        return connect(url, subprotocols=protocols, additional_headers=headers,
                       user_agent_header=dial.headers.get("user-agent"),
                       proxy=proxy.url_with_credentials if proxy is not None else None,
                       open_timeout=s.timeout, compression=None, ping_interval=None, max_size=None,
                       **tls)
    except InvalidStatus as err:
        body, code = err.response.body or b"", err.response.status_code
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("kind") == "Status":
            raise from_status(status, code) from None
        raise CLIError(f"unable to upgrade connection: {code} {err.response.reason_phrase}: "
                       f"{body.decode(errors='replace').strip()}") from None
    except InvalidProxyStatus as err:
        assert proxy is not None
        raise CLIError(f"proxy {proxy.url} refused the tunnel to {dial.server}: "
                       f"{err.response.status_code} {err.response.reason_phrase}") from None


class Session:
    """One exec stream: a stdin pump thread, terminal handling, and the reading loop."""

    def __init__(self, ws: Any, *, stdin: bool, tty: bool):
        self.ws, self.stdin, self.tty = ws, stdin, tty  # a client.wsclient.Connection
        self.v5 = ws.subprotocol == "v5.channel.k8s.io"

    def run(self) -> int:
        restore = self._raw_terminal() if self.tty else None
        try:
            if self.tty:
                self._resize()
                self._watch_resize()
            if self.stdin:
                threading.Thread(target=self._pump_stdin, daemon=True).start()
            return self._read()
        finally:
            if restore:
                restore()
            self.ws.close()

    def _read(self) -> int:
        from websockets.exceptions import ConnectionClosed
        out, err = sys.stdout.buffer, sys.stderr.buffer
        while True:
            try:
                data = self.ws.recv()
            except (ConnectionClosed, OSError):
                return 0
            if isinstance(data, str):
                data = data.encode()
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == 1:
                out.write(payload)
                out.flush()
            elif channel == 2:
                err.write(payload)
                err.flush()
            elif channel == 3:
                return self._status(payload)

    def _status(self, payload: bytes) -> int:
        from kubectl_lite.cli import api_error_message
        from machinery.errors import from_status
        try:
            status = json.loads(payload)
        except ValueError:
            print(f"error: {payload.decode(errors='replace')}", file=sys.stderr)
            return 1
        if status.get("status") == "Success":
            return 0
        if status.get("reason") == "NonZeroExitCode":
            for cause in (status.get("details") or {}).get("causes") or []:
                if cause.get("reason") == "ExitCode":
                    try:
                        code = int(cause.get("message", "1"))
                    except ValueError:
                        code = 1
                    print(f"command terminated with exit code {code}", file=sys.stderr)
                    return code
            return 1
        print(api_error_message(from_status(status, status.get("code") or 500)), file=sys.stderr)
        return 1

    def _pump_stdin(self) -> None:
        from websockets.exceptions import ConnectionClosed
        fd = sys.stdin.fileno()
        try:
            while True:
                data = os.read(fd, 32 * 1024)
                if not data:
                    break
                self.ws.send(b"\x00" + data)
            if self.v5:
                self.ws.send(b"\xff\x00")  # v5: close the stdin stream
        except (OSError, ConnectionClosed):
            pass

    def _resize(self) -> None:
        try:
            cols, rows = os.get_terminal_size(sys.stdout.fileno())
        except OSError:
            return
        from websockets.exceptions import ConnectionClosed
        try:
            self.ws.send(b"\x04" + json.dumps({"Width": cols, "Height": rows}).encode())
        except (OSError, ConnectionClosed):
            pass

    def _watch_resize(self) -> None:
        import signal
        try:
            signal.signal(signal.SIGWINCH, lambda *_: self._resize())
        except (ValueError, AttributeError):
            pass

    def _raw_terminal(self):
        if not sys.stdin.isatty():
            return None
        import termios
        import tty
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty.setraw(fd)
        return lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)
