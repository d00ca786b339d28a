"""apiserver/portforward.py's SPDY side without a kubelet: how the client's streams are
paired, refused and timed out. Two real SPDY sessions over a socket pair; the kubelet
dial is a function that answers as a kubelet refusing the pod would."""
from __future__ import annotations

import asyncio
import contextlib
import socket

from apiserver import portforward
from machinery import errors
from machinery.spdy import Session, SpdyError


@contextlib.asynccontextmanager
async def sessions(dial, **kw):
    a, b = socket.socketpair()
    ends = []
    made = []
    for sock, client in ((a, True), (b, False)):
        r, w = await asyncio.open_connection(sock=sock)

        async def write(data: bytes, w=w) -> None:
            w.write(data)
            await w.drain()
        made.append(Session(lambda r=r: r.read(65536), write, client=client))
        ends.append(w)
    client, server = made
    served = asyncio.create_task(portforward.serve_session(server, dial, **kw))
    reader = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        for w in ends:
            w.close()
        await asyncio.wait_for(asyncio.gather(served, reader, return_exceptions=True), 10)


@contextlib.asynccontextmanager
async def refusing_dial(ports, protocol):
    raise errors.NotFound('pod "web" not found', kind="pods", name="web")
    yield  # pragma: no cover


async def read_all(stream) -> bytes:
    out = b""
    while chunk := await asyncio.wait_for(stream.read(), 10):
        out += chunk
    return out


async def test_a_pair_whose_kubelet_refuses_gets_the_message_on_its_error_stream():
    async with sessions(refusing_dial) as client:
        headers = {"streamType": "error", "port": "80", "requestID": "0"}
        error = await client.open(headers)
        data = await client.open({**headers, "streamType": "data"})
        assert await read_all(error) == b'pod "web" not found'
        assert await read_all(data) == b""


async def test_streams_without_a_type_or_port_are_refused():
    async with sessions(refusing_dial) as client:
        for headers in ({"port": "80"}, {"streamType": "data"}, {"streamType": "other", "port": "80"}):
            try:
                await client.open(headers)
            except SpdyError as exc:
                assert "refused" in str(exc)
            else:
                raise AssertionError(f"{headers} was accepted")


async def test_a_bad_port_is_reported_on_the_error_stream():
    async with sessions(refusing_dial) as client:
        headers = {"streamType": "error", "port": "http", "requestID": "1"}
        error = await client.open(headers)
        await client.open({**headers, "streamType": "data"})
        assert await read_all(error) == b'unable to parse "http" as a port'


async def test_a_request_whose_data_stream_never_comes_times_out():
    async with sessions(refusing_dial, stream_timeout=0.2) as client:
        error = await client.open({"streamType": "error", "port": "80", "requestID": "7"})
        assert await read_all(error) == b"(request=7) timed out waiting for streams"
