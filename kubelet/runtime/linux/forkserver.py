"""The kubelet's end of the fork server that starts the runtime's helpers.

`ForkServer` starts `shim.py server` (see kubelet/runtime/linux/shim.py) on first use and
hands it one request per sandbox, container monitor or exec; `ForkedExec` is an exec's
process as a caller sees it, shaped like subprocess.Popen. Thread-safe: requests from
many runtime threads are sent whole, one at a time; a server that died is started again.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

from kubelet.runtime import ContainerRuntimeError

# Run by path, not as a module: see shim.py on why it imports nothing of the kubelet.
SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.py")


class ForkServer:
    """The kubelet's end of the helpers' fork server (kubelet/runtime/linux/shim.py, mode server).

    Started on first use, as a child of this process in a session of its own; restarted
    when it has died (helpers it started are not affected). Thread-safe: a request is one
    datagram, sent under a lock. The server never answers; a helper reports on the status
    fd it is given, and a server that dies before forking it closes that fd, which the
    caller sees as a report-less end."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SHIM, "server", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                start_new_session=True, cwd="/")
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours

    def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the server sees EOF and exits
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def fork(self, mode: str, arg, *, status_fd: int, stderr_fd: int,
             stdin_fd: int | None = None, stdout_fd: int | None = None) -> None:
        """Ask for helper `mode` with these fds (stdin and stdout: /dev/null if None).
        The caller keeps its fds: they are copied into the server."""
        msg = json.dumps([mode, arg]).encode()
        fds = [status_fd, stderr_fd]
        if stdin_fd is not None or stdout_fd is not None:
            fds += [os.open(os.devnull, os.O_RDONLY) if stdin_fd is None else stdin_fd,
                    os.open(os.devnull, os.O_WRONLY) if stdout_fd is None else stdout_fd]
        try:
            self._send(msg, fds)
        finally:
            for fd in fds[2:]:
                if fd not in (stdin_fd, stdout_fd):
                    os.close(fd)

    def _send(self, msg: bytes, fds: list[int]) -> None:
        with self._lock:
            for attempt in range(2):
                if self._proc is None or self._proc.poll() is not None:
                    self._stop()
                    self._start()
                try:
                    socket.send_fds(self._sock, [msg], fds)
                    return
                except (BrokenPipeError, ConnectionResetError):  # it died meanwhile
                    self._stop()
                    if attempt:
                        raise ContainerRuntimeError("the runtime's fork server is not running") from None

    def close(self) -> None:
        with self._lock:
            self._stop()


class Unsent(Exception):
    """The fork server could not be asked (so nothing was started)."""


class ForkedExec:
    """A command run by `LinuxRuntime.exec` through the fork server: the part of
    subprocess.Popen that exec's callers use. stdin (None unless asked for), stdout and
    stderr are pipes; pid is the command's process (outside the container's PID
    namespace); returncode is the exit code as the container runtime reports it (128 +
    n when killed by signal n), None until wait() or poll() has collected it.

    The command is a child of a helper (shim.py exec, forked by the server), which
    reports {"exit": CODE} on the status socket and keeps the command a zombie until
    that socket is closed here, on collecting the code. So until then pid names the
    command for sure (kill() and os.pidfd_open(pid) are safe, even after it has
    exited); afterwards kill() does nothing, as Popen's. Thread-safe."""

    def __init__(self, args: list[str], status: socket.socket, pid: int, *,
                 stdin: int | None, stdout: int, stderr: int):
        self.args, self.pid, self.returncode = args, pid, None
        self._status, self._lock = status, threading.Lock()
        self.stdin = open(stdin, "wb") if stdin is not None else None
        self.stdout, self.stderr = open(stdout, "rb"), open(stderr, "rb")
        self._output: dict = {self.stdout: [], self.stderr: []}

    def _collect(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self.returncode is not None:
                    return True
                try:
                    data = self._status.recv(4096, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    fd = self._status.fileno()
                else:  # the report, or nothing if the helper died (killed) without one
                    self.returncode = json.loads(data)["exit"] if data else 128 + signal.SIGKILL
                    self._status.close()
                    return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:  # outside the lock; another thread may collect (and close fd) meanwhile
                select.select([fd], [], [], left)
            except (OSError, ValueError):
                pass

    def poll(self) -> int | None:
        self._collect(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._collect(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with self._lock:
            if self.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, input: bytes | None = None,
                    timeout: float | None = None) -> tuple[bytes, bytes]:
        """Write input to stdin and close it, read stdout and stderr to their end, wait.
        Raises subprocess.TimeoutExpired; calling again goes on where it stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = memoryview(input or b"")
        with selectors.DefaultSelector() as sel:
            if self.stdin is not None and not self.stdin.closed:
                self.stdin.flush()
                if pending:
                    sel.register(self.stdin, selectors.EVENT_WRITE)
                else:
                    self.stdin.close()
            for f in self._output:
                if not f.closed:
                    sel.register(f, selectors.EVENT_READ)
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                for key, _ in sel.select(left):
                    f = key.fileobj
                    if f is self.stdin:
                        try:
                            pending = pending[os.write(f.fileno(), pending[:65536]):]
                        except BrokenPipeError:
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(f)
                            f.close()
                    elif chunk := os.read(f.fileno(), 65536):
                        self._output[f].append(chunk)
                    else:
                        sel.unregister(f)
                        f.close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return b"".join(self._output[self.stdout]), b"".join(self._output[self.stderr])
