"""Thin wrappers over the Linux calls the runtime needs and Python 3.11 lacks.

unshare(2), setns(2), mount(2), umount2(2), pivot_root(2) and sethostname(2) through
ctypes; /proc helpers that identify a process by (pid, start time) so a recycled pid is
never mistaken for one of ours; /proc/self/mountinfo parsing; and `netns_socket`, which
opens a socket inside another network namespace.

Stdlib only: the shim (kubelet/runtime/linux/shim.py) imports this module in a bare interpreter.
Every function is safe from any thread except where noted: setns(CLONE_NEWNS) and
unshare(CLONE_NEWNS) need a single-threaded caller, so only the shim calls them.
"""
from __future__ import annotations

import ctypes
import errno
import os

# re, signal, socket and threading are imported where used: the shim, which imports
# this module, starts faster without them (see kubelet/runtime/linux/shim.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
NS_FLAGS = {"ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "net": CLONE_NEWNET,
            "pid": CLONE_NEWPID, "mnt": CLONE_NEWNS}

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
# pivot_root(2) has no glibc wrapper, so it is called by number, and the number is the
# architecture's (os.uname().machine, as the kernel names it). From the kernel's tables:
# arch/x86/entry/syscalls/syscall_64.tbl and syscall_32.tbl, arch/arm/tools/syscall.tbl,
# arch/powerpc/kernel/syscalls/syscall.tbl, arch/s390/kernel/syscalls/syscall.tbl, and
# include/uapi/asm-generic/unistd.h for the architectures that use the generic table.
PIVOT_ROOT_SYSCALLS = {
    "x86_64": 155,
    "i386": 217, "i486": 217, "i586": 217, "i686": 217,
    "aarch64": 41, "aarch64_be": 41, "arm64": 41,
    "armv6l": 218, "armv7l": 218, "armv8l": 218, "arm": 218,
    "riscv64": 41, "loongarch64": 41,
    "ppc64le": 203, "ppc64": 203, "ppc": 203,
    "s390x": 217,
}


def pivot_root_syscall(machine: str) -> int | None:
    """pivot_root's system call number on `machine`; None where it is not known."""
    return PIVOT_ROOT_SYSCALLS.get(machine)


_MACHINE = os.uname().machine
_SYS_PIVOT_ROOT = pivot_root_syscall(_MACHINE)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
           f"mount {source or fstype} on {target}")


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    if _SYS_PIVOT_ROOT is None:
        raise OSError(errno.ENOSYS, f"pivot_root: system call number unknown on {_MACHINE}")
    _check(_libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root")


def set_parent_death_signal(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends sig to the caller when its parent dies."""
    _check(_libc.prctl(1, sig, 0, 0, 0), "prctl")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


# -- processes -------------------------------------------------------------------------

def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/pid/stat),
    or None if there is no such process. (pid, start_time) names one process forever."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] == b"Z":  # a zombie has finished; only its exit status is left
        return None
    return int(fields[19])


def alive(pid: int | None, started: int | None) -> bool:
    return bool(pid) and start_time(pid) == started


def open_pidfd(pid: int, started: int) -> int | None:
    """A pidfd for the process, or None if it has exited (or the pid was reused).
    Checking the start time after opening makes the fd refer to our process for sure."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if start_time(pid) != started:
        os.close(fd)
        return None
    return fd


def signal_process(pid: int, started: int, sig: int) -> bool:
    """Send sig to the process if it is still the one we started; True if sent."""
    import signal
    fd = open_pidfd(pid, started)
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def wait_exit(pid: int, started: int, timeout: float) -> bool:
    """Wait up to timeout for a process (not necessarily our child) to exit; True if
    it has. A pidfd becomes readable when the process exits."""
    import select
    fd = open_pidfd(pid, started)
    if fd is None:
        return True
    try:
        return bool(select.select([fd], [], [], max(timeout, 0))[0])
    finally:
        os.close(fd)


# -- mounts ----------------------------------------------------------------------------

def mountpoints(pid: str | int = "self") -> list[str]:
    """Mount points of the process's mount namespace, in mount order."""
    import re
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            # mountinfo escapes space, tab, newline and backslash as octal.
            out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]))
    return out


def mounts_under(path: str) -> list[str]:
    """Mount points at or below path, deepest first (the order to unmount them in)."""
    path = os.path.realpath(path).rstrip("/")
    found = {m for m in mountpoints() if m == path or m.startswith(path + "/")}
    return sorted(found, key=lambda m: m.count("/"), reverse=True)


def unmount_all(path: str) -> None:
    for m in mounts_under(path):
        try:
            umount(m)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise


# -- network namespaces ------------------------------------------------------------------

def in_netns(netns_path: str, fn):
    """fn() run inside the network namespace at netns_path; its result or its exception.

    setns(CLONE_NEWNET) changes only the calling thread, so a short-lived thread joins
    the namespace, runs fn and ends: this process's other threads never change
    namespace, and nothing forks (a fork of a threaded asyncio process inherits the
    loop's signal wake-up fd, so a signal sent to the child reaches the parent's loop)."""
    import threading
    result: list = []

    def run():
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            result.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            result.append((False, e))

    t = threading.Thread(target=run, name="netns")
    t.start()
    t.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


def netns_socket(netns_path: str | None, family: int = 2, type: int = 1) -> socket.socket:
    """A socket created inside the network namespace at netns_path (None: this one);
    a socket stays in the namespace it was created in. (Defaults: AF_INET, SOCK_STREAM.)"""
    import socket
    if netns_path is None:
        return socket.socket(family, type)
    return in_netns(netns_path, lambda: socket.socket(family, type))
