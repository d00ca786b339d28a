"""Small builders and helpers shared by the API tests."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse


def pod(name: str, *, labels: dict | None = None, node: str | None = None, image: str = "busybox",
        **spec) -> dict:
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": image}], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    return body


def deployment(name: str, *, replicas: int = 1, image: str = "nginx:1.27", labels=None) -> dict:
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": dict(labels)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{
                                      "name": "web", "image": image,
                                      "ports": [{"containerPort": 80, "name": "http"}],
                                      "env": [{"name": "A", "value": "1"}]}]}}}}


class WatchReader:
    """Reads a watch stream on a thread, collecting events, so tests can poll for them.

    It speaks HTTP/1.1 over a plain socket so that `close()` really drops the
    connection at once, as a client going away does.
    """

    def __init__(self, server, path: str, **params):
        """`server`: a tests.procs.APIServer, reached as its admin over TLS when it is
        secure (or, as before, a server's URL: an https one is taken to be a server of
        the session's PKI)."""
        self.events: list[dict] = []
        self.done = threading.Event()
        self.status_code: int | None = None
        query = urllib.parse.urlencode({"watch": "true", **params})
        if isinstance(server, str):
            from tests.procs import admin_context, session_pki
            host, port = server.rsplit("//", 1)[1].rsplit(":", 1)
            self._sock = socket.create_connection((host, int(port)), timeout=60)
            if server.startswith("https://"):
                self._sock = admin_context(session_pki()).wrap_socket(self._sock, server_hostname=host)
        else:
            host = server.url.rsplit("//", 1)[1].rsplit(":", 1)[0]
            self._sock = server.socket()
        self._sock.sendall(f"GET {path}?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        f = self._sock.makefile("rb")
        try:
            self.status_code = int(f.readline().split()[1])
            chunked = False
            while (line := f.readline().strip()):
                chunked |= line.lower() == b"transfer-encoding: chunked"
            buf = b""
            while True:
                if chunked:
                    size = int(f.readline().strip() or b"0", 16)
                    if size == 0:
                        break
                    buf += f.read(size)
                    f.readline()
                else:
                    data = f.read1(65536)
                    if not data:
                        break
                    buf += data
                *lines, buf = buf.split(b"\n")
                self.events.extend(json.loads(x) for x in lines if x.strip())
        except (OSError, ValueError, IndexError):
            pass
        finally:
            self.done.set()

    def wait(self, pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.events):
                return self.events
            time.sleep(0.01)
        raise TimeoutError(f"watch did not see expected events; got {self.events}")

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)


def names(events, type_=None):
    return [e["object"]["metadata"]["name"] for e in events if type_ is None or e["type"] == type_]


# -- protobuf wire bytes, built by hand for the tests of protobuf request bodies ----------

def pb_varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative ints travel as 64-bit two's complement
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb(number: int, value: int | bool | str | bytes) -> bytes:
    """One protobuf field: an int or bool as a varint, str or bytes length-delimited
    (a nested message is the bytes of its fields)."""
    if isinstance(value, (int, bool)):
        return pb_varint(number << 3) + pb_varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return pb_varint(number << 3 | 2) + pb_varint(len(data)) + data


def pb_body(api_version: str, kind: str, *fields: bytes) -> bytes:
    """A request body as client-go sends it: `k8s\\x00` + runtime.Unknown{typeMeta, raw}."""
    return (b"k8s\x00" + pb(1, pb(1, api_version) + pb(2, kind)) + pb(2, b"".join(fields))
            + pb(3, "") + pb(4, ""))
