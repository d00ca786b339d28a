"""Small host facts the supervisor needs: process identity, mounts, free ports.

A process is recorded as (pid, start time in clock ticks since boot), so that a pid
recycled by the kernel after ours died is never signalled. Stdlib only.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket

CLONE_NEWNET = 0x40000000
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def start_time(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    return bool(pid) and start is not None and start_time(pid) == start


def kill(pid: int | None, start: int | None, sig: int = signal.SIGTERM) -> bool:
    if not alive(pid, start):
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child before exec: the kernel sends sig when the spawning thread dies, so a
    killed supervisor leaves no orphaned component behind."""
    _libc.prctl(PR_SET_PDEATHSIG, int(sig))


def setns(path: str) -> None:
    """Move the calling thread into the network namespace at path (Python 3.11 has no
    os.setns). Used in a child before exec, or in a throwaway thread."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def mounts_under(path: str) -> list[str]:
    """Mount points at or below path, deepest first."""
    path = os.path.realpath(path).rstrip("/") + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            if (mp + "/").startswith(path):
                out.append(mp)
    return sorted(set(out), key=lambda m: (-m.count("/"), m))


def unmount_all(path: str) -> list[str]:
    """Lazily unmount everything at or below path; what was unmounted."""
    done = []
    for _ in range(10):  # stacked mounts show up again once the top one is gone
        mps = mounts_under(path)
        if not mps:
            break
        for mp in mps:
            if _libc.umount2(os.fsencode(mp), MNT_DETACH) == 0:
                done.append(mp)
            elif ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
                err = ctypes.get_errno()
                raise OSError(err, f"umount {mp}: {os.strerror(err)}")
    return done


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
