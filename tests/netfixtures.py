"""Real network middlemen for client tests: a forwarding HTTP proxy (absolute-form
requests and CONNECT tunnels) that records what went through it, a TLS front that
terminates TLS and pipes to a plain-HTTP server (the API server), and certificates
made with `cryptography`.

The proxy resolves names itself through `hosts` (e.g. "kube.test" -> "127.0.0.1"), so
a request for such a name can only have reached its server through the proxy.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def certificate(common_name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A self-signed certificate (it is its own CA) -> (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while data := await r.read(1 << 16):
            w.write(data)
            await w.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        w.close()


async def _splice(r1: asyncio.StreamReader, w1: asyncio.StreamWriter,
                  r2: asyncio.StreamReader, w2: asyncio.StreamWriter) -> None:
    await asyncio.gather(_pipe(r1, w2), _pipe(r2, w1))


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]


@dataclass
class RecordingProxy:
    """An HTTP forward proxy on loopback. Plain requests are forwarded one per upstream
    connection (sent upstream with `connection: close`); CONNECT opens a tunnel. With
    `credentials`, anything without that Proxy-Authorization gets 407. Tokens in
    `reject_tokens` get a 401 Status from the proxy, as if the server had refused them."""
    hosts: dict[str, str] = field(default_factory=dict)
    credentials: str | None = None
    reject_tokens: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def _resolve(self, hostport: str) -> tuple[str, int]:
        host, _, port = hostport.rpartition(":")
        host = host.strip("[]")
        return self.hosts.get(host, host), int(port)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()
            return
        request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        self.seen.append(Seen(method, target, headers))
        if self.credentials is not None and headers.get("proxy-authorization") != self.credentials:
            w.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await w.drain()
            w.close()
            return
        if method == "CONNECT":
            try:
                ur, uw = await asyncio.open_connection(*self._resolve(target))
            except OSError:
                w.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                w.close()
                return
            w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await _splice(r, w, ur, uw)
            return
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and auth[7:] in self.reject_tokens:
            body = (b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized",'
                    b'"code":401,"message":"Unauthorized"}')
            w.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await w.drain()
            w.close()
            return
        assert target.startswith("http://"), target
        hostport, _, path = target[len("http://"):].partition("/")
        ur, uw = await asyncio.open_connection(*self._resolve(hostport))
        body = await r.readexactly(int(headers.get("content-length", "0")))
        kept = [ln for ln in lines if ln.split(":", 1)[0].strip().lower()
                not in ("connection", "proxy-authorization")]
        uw.write(("\r\n".join([f"{method} /{path} HTTP/1.1", *kept, "connection: close"])
                  + "\r\n\r\n").encode("latin-1") + body)
        await _pipe(ur, w)
        uw.close()


class TLSFront:
    """Terminates TLS with `cert`/`key` on loopback and pipes each connection to the
    plain-HTTP `upstream` (host, port). With `client_ca`, a client certificate signed
    by it is required; `peers` records each client certificate's subject."""

    def __init__(self, upstream: tuple[str, int], cert: bytes, key: bytes, *, client_ca: bytes | None = None):
        self.upstream = upstream
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _load_chain(self.ctx, cert, key)
        if client_ca is not None:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(cadata=client_ca.decode())
        self.peers: list[object] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TLSFront:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peer = w.get_extra_info("peercert")
        if peer:
            self.peers.append(peer["subject"])
        ur, uw = await asyncio.open_connection(*self.upstream)
        await _splice(r, w, ur, uw)


def _load_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        c, k = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        with open(c, "wb") as f:
            f.write(cert)
        with open(k, "wb") as f:
            f.write(key)
        ctx.load_cert_chain(c, k)
