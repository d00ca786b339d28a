"""machinery/spdy.py: SPDY/3.1 framing and sessions. Frames round-trip through the codec;
header blocks share one compression context per direction; bytes split anywhere still
make whole frames; two sessions over a real socket pair open streams, move data both
ways, half-close, reset, ping, and keep to the flow-control windows."""
from __future__ import annotations

import asyncio
import socket
import zlib

import pytest

from machinery import spdy
from machinery.spdy import Frame, FrameReader, HeaderCodec, Session, SpdyError


def roundtrip(*frames: Frame) -> list[Frame]:
    out, reader = HeaderCodec(), FrameReader(HeaderCodec())
    return reader.feed(b"".join(spdy.encode(f, out) for f in frames))


@pytest.mark.parametrize("frame", [
    Frame(0, spdy.FLAG_FIN, 7, data=b"hello"),
    Frame(0, 0, 0x7FFFFFFF, data=b""),
    Frame(spdy.SYN_STREAM, spdy.FLAG_UNIDIRECTIONAL, 3, associated=1, priority=5,
          headers={"streamtype": "data", "port": "80", "requestid": "0"}),
    Frame(spdy.SYN_REPLY, spdy.FLAG_FIN, 3, headers={}),
    Frame(spdy.HEADERS, 0, 5, headers={"x": "a\0b"}),
    Frame(spdy.RST_STREAM, 0, 9, status=spdy.CANCEL),
    Frame(spdy.SETTINGS, 0, settings={spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20, 4: 100}),
    Frame(spdy.PING, ping_id=0xFFFFFFFF),
    Frame(spdy.GOAWAY, 0, 11, status=spdy.GOAWAY_PROTOCOL_ERROR),
    Frame(spdy.WINDOW_UPDATE, 0, 0, delta=12345),
], ids=lambda f: str(f.type))
def test_each_frame_type_round_trips(frame):
    assert roundtrip(frame) == [frame]


def test_control_frame_header_is_version_3_big_endian():
    wire = spdy.encode(Frame(spdy.PING, ping_id=1), HeaderCodec())
    assert wire == bytes.fromhex("80030006" "00000004" "00000001")
    data = spdy.encode(Frame(0, spdy.FLAG_FIN, 1, data=b"ab"), HeaderCodec())
    assert data == bytes.fromhex("00000001" "01000002") + b"ab"


def test_header_names_are_sent_lowercase():
    (f,) = roundtrip(Frame(spdy.SYN_STREAM, 0, 1, headers={"StreamType": "error", "Port": "80"}))
    assert f.headers == {"streamtype": "error", "port": "80"}


def test_dictionary_is_the_drafts():
    # The draft's dictionary: 1423 bytes, zlib dictionary id (Adler-32) 0xe3c6a7c2.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_header_compression_context_carries_across_frames():
    out = HeaderCodec()
    headers = {"streamtype": "data", "port": "8080", "requestid": "17"}
    first = spdy.encode(Frame(spdy.SYN_STREAM, 0, 1, headers=headers), out)
    second = spdy.encode(Frame(spdy.SYN_STREAM, 0, 3, headers=headers), out)
    assert len(second) < len(first)  # the second block refers back to the first
    reader = FrameReader(HeaderCodec())
    assert [f.headers for f in reader.feed(first + second)] == [headers, headers]
    with pytest.raises(SpdyError):  # alone, the second block cannot be read
        FrameReader(HeaderCodec()).feed(second)


def test_frames_split_at_every_byte_and_packed_together():
    out = HeaderCodec()
    frames = [Frame(spdy.SYN_STREAM, 0, 1, headers={"a": "b"}), Frame(0, 0, 1, data=b"x" * 300),
              Frame(spdy.PING, ping_id=2), Frame(0, spdy.FLAG_FIN, 1)]
    wire = b"".join(spdy.encode(f, out) for f in frames)
    reader, got = FrameReader(HeaderCodec()), []
    for i in range(len(wire)):
        got += reader.feed(wire[i:i + 1])
    assert got == frames


def test_unknown_version_and_garbage_headers_are_errors():
    with pytest.raises(SpdyError, match="version"):
        FrameReader(HeaderCodec()).feed(bytes.fromhex("80020006" "00000004" "00000001"))
    bad = bytes.fromhex("80030002") + (8).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"junk"
    with pytest.raises(SpdyError):
        FrameReader(HeaderCodec()).feed(bad)


# -- sessions over a real socket pair ----------------------------------------------------

class Pair:
    """A client and a server session joined by a socketpair, each reader running."""

    def __init__(self, **server_kw):
        self.server_kw = server_kw

    async def __aenter__(self) -> Pair:
        a, b = socket.socketpair()
        self.ends = []
        sessions = []
        for sock, client, kw in ((a, True, {}), (b, False, self.server_kw)):
            r, w = await asyncio.open_connection(sock=sock)

            async def write(data: bytes, w=w) -> None:
                w.write(data)
                await w.drain()
            sessions.append(Session(lambda r=r: r.read(65536), write, client=client, **kw))
            self.ends.append(w)
        self.client, self.server = sessions
        self.tasks = [asyncio.create_task(s.run()) for s in sessions]
        return self

    async def __aexit__(self, *exc) -> None:
        for w in self.ends:
            w.close()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)


async def read_all(stream: spdy.Stream) -> bytes:
    out = b""
    while chunk := await stream.read():
        out += chunk
    return out


async def test_open_reply_data_both_ways_and_half_close():
    async with Pair() as p:
        async def serve():
            s = await p.server.accept()
            assert s.id == 1 and s.headers == {"streamtype": "data", "port": "80"}
            await s.reply()
            got = await read_all(s)  # until the client's FIN
            await s.write(got.upper())  # a half-closed stream still carries the answer
            await s.close()
        server = asyncio.create_task(serve())
        s = await p.client.open({"streamType": "data", "port": "80"})
        await s.write(b"ping " * 20000)  # many DATA frames
        await s.close()
        assert await asyncio.wait_for(read_all(s), 10) == b"PING " * 20000
        await server


async def test_stream_ids_and_ping_ids_follow_the_roles():
    async with Pair() as p:
        accepted = []

        async def serve():
            while (s := await p.server.accept()) is not None:
                accepted.append(s.id)
                await s.reply()
        server = asyncio.create_task(serve())
        for _ in range(3):
            await p.client.open({"k": "v"})
        assert accepted == [1, 3, 5]
        await asyncio.wait_for(p.client.ping(), 10)  # the server echoes it
        await asyncio.wait_for(p.server.ping(), 10)  # and the client echoes the server's
        server.cancel()


async def test_reset_ends_the_peers_reads_and_refuses_writes():
    async with Pair() as p:
        async def serve():
            s = await p.server.accept()
            await s.reply()
            return s
        server = asyncio.create_task(serve())
        s = await p.client.open({"a": "b"})
        theirs = await server
        await s.write(b"before")
        await s.reset()
        assert await asyncio.wait_for(read_all(theirs), 10) == b"before"
        assert theirs.was_reset
        with pytest.raises(SpdyError):
            await s.write(b"after")


async def test_a_refused_stream_fails_open():
    async with Pair() as p:
        async def serve():
            s = await p.server.accept()
            await s.reset(spdy.REFUSED_STREAM)
        server = asyncio.create_task(serve())
        with pytest.raises(SpdyError, match="refused"):
            await p.client.open({"a": "b"})
        await server


async def test_goaway_stops_new_streams_and_the_transports_end_ends_the_rest():
    async with Pair() as p:
        async def serve():
            s = await p.server.accept()
            await s.reply()
            await p.server.goaway()
            await s.write(b"still here")
            return s
        server = asyncio.create_task(serve())
        s = await p.client.open({"a": "b"})
        await server
        assert await asyncio.wait_for(s.read(), 10) == b"still here"
        await asyncio.wait_for(_until(lambda: p.client.gone_away), 10)
        with pytest.raises(SpdyError, match="closed"):
            await p.client.open({"c": "d"})
        p.ends[1].close()  # the server's side of the transport
        assert await asyncio.wait_for(read_all(s), 10) == b""
        assert await asyncio.wait_for(p.client.accept(), 10) is None


async def test_sender_keeps_to_the_window_until_the_reader_consumes():
    async with Pair(flow_control=True) as p:
        async def serve():
            s = await p.server.accept()
            await s.reply()
            return s
        server = asyncio.create_task(serve())
        s = await p.client.open({"a": "b"})
        theirs = await server
        payload = b"z" * (200 * 1024)
        writer = asyncio.create_task(theirs.write(payload))
        # Nothing read yet: the writer stops at the initial 64 KiB window.
        await asyncio.wait_for(_until(lambda: s.buffered == spdy.DEFAULT_WINDOW), 10)
        # the writer waits for window, having sent exactly the window
        await asyncio.wait_for(_until(lambda: not theirs._window_open.is_set()), 10)
        assert not writer.done() and theirs.send_window == 0
        got = b""
        while len(got) < len(payload):  # reading sends WINDOW_UPDATEs that release it
            got += await asyncio.wait_for(s.read(), 10)
        await asyncio.wait_for(writer, 10)
        assert got == payload


async def test_settings_initial_window_size_changes_the_send_window():
    async with Pair(flow_control=True) as p:
        async def serve():
            s = await p.server.accept()
            await s.reply()
            return s
        server = asyncio.create_task(serve())
        await p.client.open({"a": "b"})
        theirs = await server
        await p.client._send(Frame(spdy.SETTINGS, settings={spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1024}))
        await asyncio.wait_for(_until(lambda: theirs.send_window == 1024), 10)


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.01)
