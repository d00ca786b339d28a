"""A small blocking WebSocket client (RFC 6455), enough for `exec`'s channel protocol.

- `connect()` performs the HTTP/1.1 Upgrade handshake, offering subprotocols and
  checking `Sec-WebSocket-Accept`; a non-101 answer raises `HandshakeError` carrying the
  status code and body (the API server's `Status`), so callers can report it as kubectl.
- Messages: `send(data)` writes one masked binary frame (thread-safe: a lock serialises
  writers, e.g. a stdin pump and a resize handler); `recv()` returns one whole message
  (fragments joined), answers pings itself, and returns (OPCODE_CLOSE, payload) once
  when the peer closes.
- TLS comes from the caller's `ssl.SSLContext` (the kubeconfig's CA and client cert).
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import threading
import urllib.parse

OPCODE_CONT, OPCODE_TEXT, OPCODE_BINARY = 0x0, 0x1, 0x2
OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x8, 0x9, 0xA
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    def __init__(self, status: int, reason: str, body: bytes):
        super().__init__(f"WebSocket upgrade failed: {status} {reason}")
        self.status, self.reason, self.body = status, reason, body


class ConnectionClosed(Exception):
    pass


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


class WebSocket:
    def __init__(self, sock: socket.socket, subprotocol: str, leftover: bytes = b""):
        self.sock = sock
        self.subprotocol = subprotocol
        self._buf = bytearray(leftover)
        self._send_lock = threading.Lock()
        self.closed = False

    # -- connecting ------------------------------------------------------------------

    @classmethod
    def connect(cls, url: str, *, subprotocols: list[str], headers: dict[str, str] | None = None,
                ssl_context: ssl.SSLContext | None = None, timeout: float = 30.0) -> "WebSocket":
        u = urllib.parse.urlsplit(url)
        secure = u.scheme in ("https", "wss")
        port = u.port or (443 if secure else 80)
        sock = socket.create_connection((u.hostname, port), timeout=timeout)
        try:
            if secure:
                ctx = ssl_context or ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
            key = base64.b64encode(os.urandom(16)).decode()
            target = u.path + (f"?{u.query}" if u.query else "")
            host = u.hostname if u.port is None else f"{u.hostname}:{u.port}"
            lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
                     "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                     "Sec-WebSocket-Version: 13",
                     f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            raw = b""
            while b"\r\n\r\n" not in raw:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionClosed("the server closed the connection during the handshake")
                raw += chunk
            head, _, rest = raw.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("iso-8859-1").split("\r\n")
            parts = status_line.split(" ", 2)
            status = int(parts[1])
            got = {}
            for h in header_lines:
                k, _, v = h.partition(":")
                got[k.strip().lower()] = v.strip()
            if status != 101:
                body = rest + _read_body(sock, got, len(rest))
                raise HandshakeError(status, parts[2] if len(parts) > 2 else "", body)
            want = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            if got.get("sec-websocket-accept") != want:
                raise ConnectionClosed("the server's Sec-WebSocket-Accept does not match")
            sock.settimeout(None)
            return cls(sock, got.get("sec-websocket-protocol", ""), rest)
        except BaseException:
            sock.close()
            raise

    # -- frames ----------------------------------------------------------------------

    def send(self, data: bytes, opcode: int = OPCODE_BINARY) -> None:
        n = len(data)
        head = bytearray([0x80 | opcode])
        if n < 126:
            head.append(0x80 | n)
        elif n < 1 << 16:
            head.append(0x80 | 126)
            head += n.to_bytes(2, "big")
        else:
            head.append(0x80 | 127)
            head += n.to_bytes(8, "big")
        key = os.urandom(4)
        with self._send_lock:
            if self.closed:
                raise ConnectionClosed("the WebSocket is closed")
            self.sock.sendall(bytes(head) + key + _mask(data, key))

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionClosed("the connection was closed")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._read(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read(8), "big")
        key = self._read(4) if b1 & 0x80 else None
        payload = self._read(n)
        if key:
            payload = _mask(payload, key)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv(self) -> tuple[int, bytes]:
        """The next whole message: (opcode, payload); (OPCODE_CLOSE, payload) at the end."""
        parts: list[bytes] = []
        first = None
        while True:
            fin, opcode, payload = self._frame()
            if opcode == OPCODE_PING:
                try:
                    self.send(payload, OPCODE_PONG)
                except (OSError, ConnectionClosed):
                    pass
                continue
            if opcode == OPCODE_PONG:
                continue
            if opcode == OPCODE_CLOSE:
                self.close()
                return OPCODE_CLOSE, payload
            if opcode != OPCODE_CONT:
                first = opcode
            parts.append(payload)
            if fin:
                return first if first is not None else OPCODE_BINARY, b"".join(parts)

    def close(self, code: int = 1000) -> None:
        with self._send_lock:
            if self.closed:
                return
            self.closed = True
            try:
                key = os.urandom(4)
                self.sock.sendall(bytes([0x80 | OPCODE_CLOSE, 0x80 | 2]) + key +
                                  _mask(code.to_bytes(2, "big"), key))
            except OSError:
                pass
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def shutdown(self) -> None:
        self.close()
        self.sock.close()


def _read_body(sock: socket.socket, headers: dict[str, str], have: int) -> bytes:
    """The rest of a non-101 answer's body (Content-Length, else until the server closes)."""
    want = int(headers.get("content-length", "0") or 0) - have
    out = b""
    try:
        sock.settimeout(5)
        while want > 0 or "content-length" not in headers:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
            want -= len(chunk)
    except OSError:
        pass
    return out
