"""SPDY/3.1 sessions over any byte transport, as Kubernetes' streaming protocols use them
(k8s.io/apimachinery/pkg/util/httpstream/spdy, on github.com/moby/spdystream).

Written here because no SPDY/3.1 library on PyPI is kept up (the last, spdy-py, had one
release in 2021; python-spdylay binds a C library abandoned in 2012).

What this module guarantees
- Framing as the SPDY/3.1 draft has it: SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS,
  PING, GOAWAY, HEADERS, WINDOW_UPDATE and DATA frames. Header blocks are zlib-compressed
  with the draft's dictionary, one compression context per direction for the whole
  session (each block ends with a sync flush), so a block may refer back to earlier ones.
  Header names are sent lowercased, as spdystream insists on reading them.
- `FrameReader.feed(bytes)` returns whole frames however the bytes were split: a frame
  may span many transport messages (a WebSocket tunnel) and a message may carry many.
- `Session(read, write, client=...)`: streams the peer opens come out of `accept()`;
  `open(headers)` opens one and returns when the peer's SYN_REPLY arrives. Stream ids and
  ping ids follow the draft's parity (client odd, server even). A PING from the peer is
  echoed. After a GOAWAY (either way) no stream is opened, and those open go on; the
  transport's end ends the session and every stream.
- Flow control: received DATA is acknowledged with WINDOW_UPDATE (stream and session)
  as the application consumes it, once half a window is consumed, so a peer that keeps
  to its window never stalls. Sending keeps to the peer's windows (SETTINGS
  INITIAL_WINDOW_SIZE, WINDOW_UPDATE) only with `flow_control=True`: spdystream, the only
  peer Kubernetes has, never sends WINDOW_UPDATE and sends past any window, so by
  default we do as it does. The reader stops reading the transport while a stream holds
  more than `max_buffered` unread bytes, which bounds memory against such a peer.
- A malformed frame ends the session: GOAWAY PROTOCOL_ERROR to the peer, the
  `SpdyError` kept in `Session.error`. Operations on an ended stream or session raise
  `SpdyError`.

Concurrency: one asyncio task runs `Session.run()` (the reader); any task may write.
Frames are written whole and in order under one lock, which is also what keeps the
header compressor's context in step with the peer's decompressor.
"""
from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02
# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL, INTERNAL_ERROR, \
    FLOW_CONTROL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED = range(1, 10)
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2
SETTINGS_INITIAL_WINDOW_SIZE = 7
DEFAULT_WINDOW = 64 * 1024
MAX_DATA = 32 * 1024  # bytes per DATA frame we send
MAX_HEADER_BLOCK = 1 << 20  # a decompressed header block bigger than this is refused

# The draft's dictionary: length-prefixed header names and common values, then a tail
# of raw text.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base "
    "content-encoding content-language content-length content-location content-md5 "
    "content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status").split() + ["200 OK", "version", "HTTP/1.1", "url",
                                                     "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()

Headers = dict[str, str]


class SpdyError(Exception):
    """The peer broke the protocol, or the session is gone."""


# -- frames -------------------------------------------------------------------------------

@dataclass
class Frame:
    type: int  # 0 for DATA
    flags: int = 0
    stream_id: int = 0
    data: bytes = b""  # DATA payload
    headers: Headers = field(default_factory=dict)
    associated: int = 0  # SYN_STREAM
    priority: int = 0  # SYN_STREAM
    status: int = 0  # RST_STREAM, GOAWAY
    delta: int = 0  # WINDOW_UPDATE
    ping_id: int = 0  # PING
    settings: dict[int, int] = field(default_factory=dict)  # SETTINGS id -> value

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class HeaderCodec:
    """One direction's zlib context: compress() for what we send, decompress() for what
    we read. A context lives as long as the session."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                                   zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._d = zlib.decompressobj(zdict=DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        block = [struct.pack(">I", len(headers))]
        for name, value in headers.items():
            n, v = name.lower().encode(), value.encode()
            block.append(struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v)
        return self._z.compress(b"".join(block)) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def decompress(self, data: bytes) -> Headers:
        try:
            raw = self._d.decompress(data, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise SpdyError(f"bad header block: {exc}") from None
        if self._d.unconsumed_tail:
            raise SpdyError("header block too large")
        try:
            (count,), off, out = struct.unpack_from(">I", raw), 4, {}
            for _ in range(count):
                (n,) = struct.unpack_from(">I", raw, off)
                name = raw[off + 4:off + 4 + n].decode()
                off += 4 + n
                (v,) = struct.unpack_from(">I", raw, off)
                value = raw[off + 4:off + 4 + v].decode()
                off += 4 + v
                if off > len(raw):
                    raise SpdyError("truncated header block")
                out[name.lower()] = value
        except (struct.error, UnicodeDecodeError):
            raise SpdyError("malformed header block") from None
        return out


def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def encode(frame: Frame, codec: HeaderCodec) -> bytes:
    """One frame on the wire; header blocks go through `codec` (so order matters)."""
    t, sid = frame.type, frame.stream_id & 0x7FFFFFFF
    if t == 0:
        return struct.pack(">II", sid, (frame.flags << 24) | len(frame.data)) + frame.data
    if t == SYN_STREAM:
        payload = struct.pack(">IIBB", sid, frame.associated & 0x7FFFFFFF, (frame.priority & 7) << 5, 0) \
            + codec.compress(frame.headers)
    elif t in (SYN_REPLY, HEADERS):
        payload = struct.pack(">I", sid) + codec.compress(frame.headers)
    elif t == RST_STREAM:
        payload = struct.pack(">II", sid, frame.status)
    elif t == SETTINGS:
        payload = struct.pack(">I", len(frame.settings)) + b"".join(
            struct.pack(">II", k & 0xFFFFFF, v) for k, v in frame.settings.items())
    elif t == PING:
        payload = struct.pack(">I", frame.ping_id)
    elif t == GOAWAY:
        payload = struct.pack(">II", sid, frame.status)
    elif t == WINDOW_UPDATE:
        payload = struct.pack(">II", sid, frame.delta & 0x7FFFFFFF)
    else:
        raise ValueError(f"unknown frame type {t}")
    return _control(t, frame.flags, payload)


class FrameReader:
    """Bytes in, whole frames out (see the module docstring)."""

    def __init__(self, codec: HeaderCodec):
        self.codec, self._buf = codec, bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= 8:
            first, second = struct.unpack_from(">II", self._buf)
            length = second & 0xFFFFFF
            if len(self._buf) < 8 + length:
                break
            body = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            frames.append(self._parse(first, second >> 24, body))
        return frames

    def _parse(self, first: int, flags: int, body: bytes) -> Frame:
        if not first & 0x80000000:
            return Frame(0, flags, first & 0x7FFFFFFF, data=body)
        version, t = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SpdyError(f"unsupported SPDY version {version}")
        try:
            if t == SYN_STREAM:
                sid, assoc, pri, _slot = struct.unpack_from(">IIBB", body)
                return Frame(t, flags, sid & 0x7FFFFFFF, associated=assoc & 0x7FFFFFFF, priority=pri >> 5,
                             headers=self.codec.decompress(body[10:]))
            if t in (SYN_REPLY, HEADERS):
                (sid,) = struct.unpack_from(">I", body)
                return Frame(t, flags, sid & 0x7FFFFFFF, headers=self.codec.decompress(body[4:]))
            if t == RST_STREAM:
                sid, status = struct.unpack_from(">II", body)
                return Frame(t, flags, sid & 0x7FFFFFFF, status=status)
            if t == SETTINGS:
                (n,) = struct.unpack_from(">I", body)
                pairs = (struct.unpack_from(">II", body, 4 + 8 * i) for i in range(n))
                return Frame(t, flags, settings={k & 0xFFFFFF: v for k, v in pairs})
            if t == PING:
                return Frame(t, flags, ping_id=struct.unpack_from(">I", body)[0])
            if t == GOAWAY:
                sid, status = struct.unpack_from(">II", body[:8].ljust(8, b"\0"))
                return Frame(t, flags, sid & 0x7FFFFFFF, status=status)
            if t == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", body)
                return Frame(t, flags, sid & 0x7FFFFFFF, delta=delta & 0x7FFFFFFF)
        except struct.error:
            raise SpdyError(f"short control frame of type {t}") from None
        return Frame(-t, flags)  # unknown control frames are ignored, as the draft says


# -- streams and the session --------------------------------------------------------------

class Stream:
    """One SPDY stream: `read()` returns b"" once the peer has finished (FIN or reset);
    `close()` is our FIN (half-close); `reset()` abandons the stream both ways."""

    def __init__(self, session: Session, stream_id: int, headers: Headers):
        self.session, self.id, self.headers = session, stream_id, headers
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.buffered = 0
        self.remote_closed = self.local_closed = self.was_reset = False
        self.replied = asyncio.Event()
        self.refused = False  # reset (or the session ended) before the peer replied
        self.send_window = session.initial_send_window
        self._window_open = asyncio.Event()
        self._window_open.set()
        self._unacked = 0

    async def read(self) -> bytes:
        if self.remote_closed and self._chunks.empty():
            self.session._forget_if_done(self)
            return b""
        data = await self._chunks.get()
        self.buffered -= len(data)
        self.session._room.set()
        if data:
            await self.session._consumed(self, len(data))
        return data

    async def write(self, data: bytes) -> None:
        if self.local_closed or self.was_reset:
            raise SpdyError(f"stream {self.id} is closed")
        view = memoryview(data)
        while view:
            n = min(len(view), MAX_DATA)
            if self.session.flow_control:
                n = await self._take_window(n)
            await self.session._send(Frame(0, 0, self.id, data=bytes(view[:n])))
            view = view[n:]

    async def _take_window(self, want: int) -> int:
        while min(self.send_window, self.session.send_window) <= 0:
            self._window_open.clear()
            await self._window_open.wait()
            if self.was_reset or self.session.closed:
                raise SpdyError(f"stream {self.id} is closed")
        n = min(want, self.send_window, self.session.send_window)
        self.send_window -= n
        self.session.send_window -= n
        return n

    async def close(self) -> None:
        if not (self.local_closed or self.was_reset or self.session.closed):
            self.local_closed = True
            await self.session._send(Frame(0, FLAG_FIN, self.id))
            self.session._forget_if_done(self)

    async def reset(self, status: int = CANCEL) -> None:
        if not (self.was_reset or self.session.closed):
            await self.session._send(Frame(RST_STREAM, 0, self.id, status=status))
        self._end(reset=True)

    async def reply(self, headers: Headers | None = None) -> None:
        """Accept a stream the peer opened (SYN_REPLY)."""
        await self.session._send(Frame(SYN_REPLY, 0, self.id, headers=headers or {}))

    def _deliver(self, data: bytes) -> None:
        if not self.remote_closed:
            self.buffered += len(data)
            self._chunks.put_nowait(data)

    def _end(self, *, reset: bool = False) -> None:
        if reset:
            self.was_reset = self.local_closed = True
            self.refused = self.refused or not self.replied.is_set()
        if not self.remote_closed:
            self.remote_closed = True
            self._chunks.put_nowait(b"")
        self.replied.set()
        self._window_open.set()
        self.session._forget_if_done(self)


class Session:
    def __init__(self, read: Callable[[], Awaitable[bytes]], write: Callable[[bytes], Awaitable[None]], *,
                 client: bool, flow_control: bool = False, max_buffered: int = 1 << 20):
        self._read, self._write = read, write
        self.client, self.flow_control, self.max_buffered = client, flow_control, max_buffered
        self._codec_out, self._reader = HeaderCodec(), FrameReader(HeaderCodec())
        self._lock = asyncio.Lock()
        self.streams: dict[int, Stream] = {}
        self._incoming: asyncio.Queue[Stream | None] = asyncio.Queue()
        self._next_id = 1 if client else 2
        self._next_ping = 1 if client else 2
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._last_received = 0
        self.initial_send_window = DEFAULT_WINDOW
        self.send_window = DEFAULT_WINDOW
        self._unacked = 0
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False  # the transport is done with
        self.gone_away = False  # either side said GOAWAY
        self.error: Exception | None = None

    # -- the reader
    async def run(self) -> None:
        """Read frames until the transport ends or the peer says GOAWAY; then every
        stream ends and `accept()` returns None."""
        try:
            while not self.closed:
                data = await self._read()
                if not data:
                    break
                for frame in self._reader.feed(data):
                    await self._handle(frame)
                    while sum(s.buffered for s in self.streams.values()) > self.max_buffered:
                        self._room.clear()
                        await self._room.wait()
        except SpdyError as exc:
            self.error = exc
            await self.goaway(GOAWAY_PROTOCOL_ERROR)
        finally:
            self._shutdown()

    async def _handle(self, f: Frame) -> None:
        s = self.streams.get(f.stream_id)
        if f.type == 0:
            if s is None:  # a stream already over (spdystream ignores these too)
                return
            if f.data:
                s._deliver(f.data)
            if f.fin:
                s._end()
        elif f.type == SYN_STREAM:
            if f.stream_id == 0 or (f.stream_id % 2 == 1) != (not self.client) or f.stream_id <= self._last_received:
                raise SpdyError(f"invalid stream id {f.stream_id}")
            self._last_received = f.stream_id
            s = Stream(self, f.stream_id, f.headers)
            s.replied.set()
            self.streams[f.stream_id] = s
            if f.flags & FLAG_UNIDIRECTIONAL:
                s.local_closed = True
            if f.fin:
                s._end()
            self._incoming.put_nowait(s)
        elif f.type == SYN_REPLY:
            if s is not None:
                s.replied.set()
                if f.fin:
                    s._end()
        elif f.type == HEADERS:
            if s is not None and f.fin:
                s._end()
        elif f.type == RST_STREAM:
            if s is not None:
                s._end(reset=True)
        elif f.type == SETTINGS:
            if SETTINGS_INITIAL_WINDOW_SIZE in f.settings:
                new = f.settings[SETTINGS_INITIAL_WINDOW_SIZE]
                for st in self.streams.values():
                    st.send_window += new - self.initial_send_window
                    st._window_open.set()
                self.initial_send_window = new
        elif f.type == PING:
            if (f.ping_id % 2 == 1) == self.client:  # the answer to ours
                fut = self._pings.pop(f.ping_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            else:
                await self._send(f)
        elif f.type == GOAWAY:  # no new streams; those open run to their end
            self.gone_away = True
        elif f.type == WINDOW_UPDATE:
            if f.stream_id == 0:
                self.send_window += f.delta
                for st in self.streams.values():
                    st._window_open.set()
            elif s is not None:
                s.send_window += f.delta
                s._window_open.set()

    def _shutdown(self) -> None:
        self.closed = True
        for s in list(self.streams.values()):
            s._end(reset=True)
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(SpdyError("session closed"))
        self._incoming.put_nowait(None)
        self._room.set()

    # -- the application's side
    async def accept(self) -> Stream | None:
        """The next stream the peer opened, or None once the session is over."""
        s = await self._incoming.get()
        if s is None:
            self._incoming.put_nowait(None)
        return s

    async def open(self, headers: Headers, *, fin: bool = False, timeout: float = 30) -> Stream:
        """Open a stream and wait for the peer's SYN_REPLY (as client-go does, 30 s)."""
        if self.closed or self.gone_away:
            raise SpdyError("session closed")
        async with self._lock:
            sid, self._next_id = self._next_id, self._next_id + 2
            s = self.streams[sid] = Stream(self, sid, headers)
            await self._write(encode(Frame(SYN_STREAM, FLAG_FIN if fin else 0, sid, headers=headers),
                                     self._codec_out))
        if fin:
            s.local_closed = True
        async with asyncio.timeout(timeout):
            await s.replied.wait()
        if s.refused:
            raise SpdyError(f"stream {sid} was refused")
        return s

    async def ping(self, timeout: float = 30) -> None:
        pid, self._next_ping = self._next_ping, self._next_ping + 2
        fut = self._pings[pid] = asyncio.get_running_loop().create_future()
        await self._send(Frame(PING, ping_id=pid))
        async with asyncio.timeout(timeout):
            await fut

    async def goaway(self, status: int = GOAWAY_OK) -> None:
        """Tell the peer no new streams will be taken (streams open go on)."""
        if not (self.closed or self.gone_away):
            self.gone_away = True
            try:
                await self._send(Frame(GOAWAY, 0, self._last_received, status=status))
            except (OSError, SpdyError, RuntimeError):
                pass

    # -- internals
    async def _send(self, frame: Frame) -> None:
        async with self._lock:
            await self._write(encode(frame, self._codec_out))

    async def _consumed(self, s: Stream, n: int) -> None:
        """Give the peer back the window the application just used up."""
        s._unacked += n
        self._unacked += n
        updates = []
        if s._unacked >= DEFAULT_WINDOW // 2 and not s.remote_closed:
            updates.append(Frame(WINDOW_UPDATE, 0, s.id, delta=s._unacked))
            s._unacked = 0
        if self._unacked >= DEFAULT_WINDOW // 2:
            updates.append(Frame(WINDOW_UPDATE, 0, 0, delta=self._unacked))
            self._unacked = 0
        for u in updates:
            if not self.closed:
                await self._send(u)

    def _forget_if_done(self, s: Stream) -> None:
        if s.remote_closed and s.local_closed and s._chunks.empty():
            self.streams.pop(s.id, None)
