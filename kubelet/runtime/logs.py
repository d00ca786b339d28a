"""Container logs in the CRI file format, written with size rotation and read back.

Format (the one containerd and CRI-O write and the kubelet reads), one entry a line:
    2026-11-27T10:00:00.000000000Z stdout F hello
The tag is F for a full line and P for a piece of a longer one (split at MAX_LINE, or
cut by the end of the stream); a reader joins P pieces with the F that ends them.

`LogWriter` is used by exactly one writer, the container's monitor (kubelet/runtime/linux/shim.py).
When the file passes max_bytes it is renamed to `<path>.<UTC time>` (names sort in
time order) and a new one started; rotated files beyond max_files - 1 are deleted.

`read_log` may run concurrently with the writer (any number of readers). It walks the
files in the order they were written, rotated ones then the live one, moving from a
file to its successor only once that file has been rotated away and read to its end, so
no entry is skipped or repeated while the writer rotates, unless the writer deletes a
file before the reader got to it (more than max_files rotations behind).

Stdlib only: the shim imports this module in a bare interpreter.
"""
from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing, glob and collections cost the shim start-up time
if TYPE_CHECKING:
    from typing import Callable, Iterator

MAX_LINE = 16 * 1024  # containerd's maximum entry size


def format_time(ns: int) -> bytes:
    sec, frac = divmod(ns, 1_000_000_000)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z").encode()


def parse_time(ts: bytes) -> int:
    """RFC 3339 with nanoseconds (UTC 'Z') -> ns since the epoch."""
    import calendar  # only readers need it; the writer (the shim) starts faster without
    text = ts.decode()
    base, _, frac = text.rstrip("Z").partition(".")
    sec = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return sec * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


class LogWriter:
    def __init__(self, path: str, *, max_bytes: int = 10 * 1024 * 1024, max_files: int = 5,
                 clock_ns: Callable[[], int] = time.time_ns):
        self.path, self.max_bytes, self.max_files = path, max_bytes, max(max_files, 1)
        self.clock_ns = clock_ns
        self.pending = {b"stdout": b"", b"stderr": b""}
        self.f = open(path, "ab")
        self.size = self.f.tell()

    def write(self, stream: bytes, data: bytes) -> None:
        """Append a chunk read from the container's stdout or stderr."""
        buf = self.pending[stream] + data
        lines = buf.split(b"\n")
        self.pending[stream] = lines.pop()
        for line in lines:
            self._entry(stream, line, full=True)
        while len(self.pending[stream]) >= MAX_LINE:
            piece, self.pending[stream] = (self.pending[stream][:MAX_LINE],
                                           self.pending[stream][MAX_LINE:])
            self._entry(stream, piece, full=False)

    def close(self) -> None:
        """End of the streams: a last line without a newline is written as full."""
        for stream, rest in self.pending.items():
            if rest:
                self._entry(stream, rest, full=True)
        self.f.close()

    def _entry(self, stream: bytes, msg: bytes, *, full: bool) -> None:
        while len(msg) > MAX_LINE:
            self._entry(stream, msg[:MAX_LINE], full=False)
            msg = msg[MAX_LINE:]
        line = b"%s %s %s %s\n" % (format_time(self.clock_ns()), stream,
                                   b"F" if full else b"P", msg)
        self.f.write(line)
        self.f.flush()
        self.size += len(line)
        if self.size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self.f.close()
        sec, ns = divmod(time.time_ns(), 1_000_000_000)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(sec)) + f".{ns:09d}"
        os.rename(self.path, f"{self.path}.{stamp}")
        for old in rotated_files(self.path)[:-(self.max_files - 1) or None]:
            os.unlink(old)
        self.f = open(self.path, "ab")
        self.size = 0


def rotated_files(path: str) -> list[str]:
    """The rotated files of a log, oldest first (their UTC suffixes sort in time order)."""
    import glob  # here: the writer (the shim) needs it only when it rotates
    return sorted(glob.glob(glob.escape(path) + ".*"))


def parse_line(line: bytes) -> tuple[bytes, bytes, bool, bytes] | None:
    """(timestamp, stream, full, message) of one entry without its newline; None if
    the line is not a CRI entry."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    return parts[0], parts[1], parts[2] == b"F", parts[3] if len(parts) == 4 else b""


def read_log(path: str, *, tail: int | None = None, since_ns: int | None = None,
             timestamps: bool = False, limit_bytes: int | None = None,
             follow: bool = False, running: Callable[[], bool] = lambda: False,
             poll: float = 0.1) -> Iterator[bytes]:
    """Yield a container's log as `kubectl logs` prints it: each entry's message, with a
    newline after full lines, prefixed by its timestamp when timestamps is set.

    tail keeps the last N entries, since_ns drops entries older than it, limit_bytes
    stops after that many bytes. With follow, waits for more until running() is false
    and the file has no more to give."""
    budget = limit_bytes

    def render(entries) -> Iterator[bytes]:
        nonlocal budget
        for ts, _stream, full, msg in entries:
            if since_ns is not None and parse_time(ts) < since_ns:
                continue
            out = (ts + b" " if timestamps else b"") + msg + (b"\n" if full else b"")
            if budget is not None:
                out, budget = out[:budget], budget - len(out)
            if out:
                yield out
            if budget is not None and budget <= 0:
                return

    # One walk over the files in the order they were written: each rotated file, then
    # the live one. A file is done when it is no longer the live one (it was rotated:
    # the writer no longer touches it) and a read returns nothing; then on to the file
    # written after it. Entries are held back until the live file's end is reached
    # once, for tail.
    import collections
    backlog = collections.deque(maxlen=tail) if tail is not None else []
    catching_up = True
    cur, rest, missing = None, b"", 0
    while True:
        finished = not running()  # read once more after the container has stopped
        data = cur.read() if cur else b""
        if data:
            rest += data
            cut = rest.rfind(b"\n") + 1
            chunk, rest = rest[:cut], rest[cut:]
            if catching_up:
                backlog.extend(_entries(chunk))
                continue
            for out in render(_entries(chunk)):
                yield out
            if budget is not None and budget <= 0:
                break
            continue
        if cur is None or _inode(path) != os.fstat(cur.fileno()).st_ino:
            nxt_file = _open_next(path, os.fstat(cur.fileno()).st_ino if cur else None)
            if nxt_file is None:  # the writer is between rename and create, or no log
                missing += 1
                if finished and (cur is None or missing > 100):
                    break
                time.sleep(poll / 10)
                continue
            missing = 0
            if cur:
                cur.close()
            cur, rest = nxt_file, b""
            continue
        if catching_up:  # at the end of the live file for the first time
            catching_up = False
            for out in render(backlog):
                yield out
            if not follow or budget is not None and budget <= 0:
                break
        if finished:
            break
        time.sleep(poll)
    if cur:
        cur.close()


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _successor(path: str, inode: int | None) -> str:
    """The log file written after the one with this inode (None: the first one)."""
    files = rotated_files(path)
    if inode is None:
        return (files + [path])[0]
    for i, f in enumerate(files):
        if _inode(f) == inode:
            return files[i + 1] if i + 1 < len(files) else path
    return path  # deleted by rotation: what it led to is lost


def _open_next(path: str, inode: int | None):
    """Open the successor; None if it does not exist (yet). Checked again after the
    open, as a rotation in between could have renamed what we opened."""
    while True:
        nxt = _successor(path, inode)
        try:
            f = open(nxt, "rb")
        except FileNotFoundError:
            return None
        if _successor(path, inode) == nxt:
            return f
        f.close()


def _entries(data: bytes):
    for line in data.split(b"\n"):
        e = parse_line(line)
        if e is not None:
            yield e
