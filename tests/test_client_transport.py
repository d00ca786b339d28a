"""The lean HTTP/1.1 transport under client.rest.Client: the same answers,
errors and watches as httpx's own transport, against the real API server and against a
small scripted server for the connection edge cases."""
import asyncio
import shutil
import ssl
import subprocess

import httpx
import pytest

from client.kubeconfig import Connection
from client.rest import Client
from client.watch import Watch
from machinery.errors import AlreadyExists, NotFound
from client.transport import LeanTransport
from tests.util import pod


@pytest.fixture
async def client(apiserver):
    c = Client(apiserver.connection())
    yield c
    await c.close()


async def test_is_the_clients_default_transport(apiserver):
    async with Client(apiserver.connection()) as c:
        assert isinstance(c._http._transport, LeanTransport)


async def test_verbs_and_typed_errors_against_the_api_server(client, ns):
    created = await client.create(pod("a"), namespace=ns)
    assert created["metadata"]["name"] == "a"
    with pytest.raises(AlreadyExists):
        await client.create(pod("a"), namespace=ns)
    with pytest.raises(NotFound):
        await client.get("pods", "nope", namespace=ns)
    patched = await client.patch("pods", "a", {"metadata": {"labels": {"x": "1"}}}, namespace=ns)
    assert patched["metadata"]["labels"] == {"x": "1"}
    await client.bind("a", "node-1", namespace=ns)
    assert (await client.get("pods", "a", namespace=ns))["spec"]["nodeName"] == "node-1"
    # many requests at once share and reuse a handful of connections
    got = await asyncio.gather(*(client.get("pods", "a", namespace=ns) for _ in range(50)))
    assert {g["metadata"]["name"] for g in got} == {"a"}


async def test_watch_streams_chunked_events(client, ns):
    listed = await client.list("pods", namespace=ns)
    seen = []

    async def follow():
        async for ev in Watch(client, "pods", namespace=ns,
                              resource_version=listed["metadata"]["resourceVersion"]):
            if ev.type != "BOOKMARK":
                seen.append((ev.type, ev.object["metadata"]["name"]))
            if len(seen) == 3:
                return
    task = asyncio.create_task(follow())
    for name in ("w1", "w2"):
        await client.create(pod(name), namespace=ns)
    await client.delete("pods", "w1", namespace=ns, grace_period_seconds=0)
    await asyncio.wait_for(task, 10)
    assert seen[:2] == [("ADDED", "w1"), ("ADDED", "w2")]
    assert seen[2][1] == "w1"


class Scripted:
    """A server that answers each connection's requests from a script of raw responses;
    `None` in the script closes the connection instead of answering."""

    def __init__(self, *script: bytes | None):
        self.script = list(script)
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.script:
                head = await r.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await r.readexactly(length)
                self.requests.append(head.split(b"\r\n", 1)[0])
                answer = self.script.pop(0)
                if answer is None:
                    break
                w.write(answer)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        w.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()


OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}'


async def test_reuses_a_connection_and_replaces_one_the_server_closed():
    script = Scripted(OK, OK, None, OK)
    async with script as url:
        async with Client(url, transport=LeanTransport(), max_retries=0) as c:
            assert await c.request("GET", "/a") == {}
            assert await c.request("GET", "/b") == {}
            assert script.connections == 1
            # The server drops the connection instead of answering: a GET is re-sent once,
            # on a fresh connection.
            assert await c.request("GET", "/c") == {}
            assert script.connections == 2
            assert script.requests == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1", b"GET /c HTTP/1.1",
                                       b"GET /c HTTP/1.1"]


async def test_a_post_on_a_dropped_connection_is_not_repeated():
    script = Scripted(OK, None, OK)
    async with script as url:
        async with Client(url, transport=LeanTransport(), max_retries=0) as c:
            await c.request("GET", "/a")
            with pytest.raises(httpx.TransportError):
                await c.request("POST", "/bind", body={})
            assert script.requests.count(b"POST /bind HTTP/1.1") == 1


async def test_chunked_and_close_delimited_bodies_and_connection_close():
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"3\r\n{\"a\r\n5\r\n\": 1}\r\n0\r\n\r\n")
    closing = b'HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 8\r\n\r\n{"b": 2}'
    script = Scripted(chunked, closing, OK)
    async with script as url:
        async with Client(url, transport=LeanTransport(), max_retries=0) as c:
            assert await c.request("GET", "/x") == {"a": 1}
            assert await c.request("GET", "/y") == {"b": 2}
            assert await c.request("GET", "/z") == {}
            assert script.connections == 2  # "connection: close" was honoured


async def test_request_line_headers_and_a_429_retried_after_retry_after():
    busy = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-length: 0\r\n\r\n"
    script = Scripted(busy, OK)
    heads = []
    handle = script.handle

    async def recording(r, w):
        class Tee:
            async def readuntil(self, sep):
                heads.append(await r.readuntil(sep))
                return heads[-1]

            async def readexactly(self, n):
                return await r.readexactly(n)
        await handle(Tee(), w)
    script.handle = recording
    async with script as url:
        async with Client(Connection(server=url + "/prefix/", token="t"), max_retries=1,
                          user_agent="ua/1") as c:
            assert await c.request("POST", "/api/v1/x", body={"a": 1},
                                   params={"labelSelector": "app in (a,b)", "watch": True,
                                           "limit": 5, "skipped": None}) == {}
    assert len(heads) == 2  # the 429 was retried: the server did nothing
    first = heads[0].split(b"\r\n")
    assert first[0] == b"POST /prefix/api/v1/x?labelSelector=app+in+%28a%2Cb%29&watch=true&limit=5 HTTP/1.1"
    host = url.split("//")[1].encode()
    assert {b"user-agent: ua/1", b"authorization: Bearer t", b"content-type: application/json",
            b"content-length: 7", b"host: " + host} <= set(first[1:])


async def test_connection_refused_is_a_connect_error():
    async with Scripted() as url:
        pass  # closed: nothing listens there any more
    async with Client(url, transport=LeanTransport(), max_retries=0) as c:
        with pytest.raises(httpx.ConnectError):
            await c.request("POST", "/x", body={})


async def test_read_timeout():
    script = Scripted()

    async def silent(r, w):
        await r.readuntil(b"\r\n\r\n")
        await r.read()  # never answer; return once the client gives up and closes
        w.close()
    script.handle = silent
    async with script as url:
        async with Client(url, transport=LeanTransport(), max_retries=0, timeout=0.2) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.request("POST", "/x", body={})


def _certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1, used as the CA, the server's and the
    client's certificate at once."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    crt, key = tmp_path / "c.crt", tmp_path / "c.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=admin", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return crt, key


async def test_tls_with_a_client_certificate_and_a_bearer_token(tmp_path):
    crt, key = _certificate(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake
    server_ctx.load_verify_locations(crt)
    seen = []

    async def handle(r, w):
        head = await r.readuntil(b"\r\n\r\n")
        seen.append((w.get_extra_info("peercert")["subject"],
                     [line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization:")]))
        w.write(OK)
        await w.drain()
        w.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = Connection(server=f"https://127.0.0.1:{port}", token="s3cret", ca_data=crt.read_bytes(),
                          cert_data=crt.read_bytes(), key_data=key.read_bytes())
        async with Client(conn, max_retries=0) as c:
            assert await c.request("GET", "/x") == {}
        assert seen == [(((("commonName", "admin"),),), [b"authorization: Bearer s3cret"])]
        # A server the CA does not vouch for is refused before anything is sent.
        async with Client(Connection(server=f"https://127.0.0.1:{port}"), max_retries=0) as c:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await c.request("GET", "/x")
        assert len(seen) == 1
    finally:
        server.close()
