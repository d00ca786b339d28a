"""The runtime's kernel calls: pivot_root by the architecture's own system call number."""
import os
import subprocess
import sys

import pytest

from kubelet.runtime.linux import kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("machine,number", [
    ("x86_64", 155),   # arch/x86/entry/syscalls/syscall_64.tbl
    ("i686", 217),     # arch/x86/entry/syscalls/syscall_32.tbl
    ("aarch64", 41),   # include/uapi/asm-generic/unistd.h
    ("armv7l", 218),   # arch/arm/tools/syscall.tbl
    ("riscv64", 41),   # asm-generic
    ("ppc64le", 203),  # arch/powerpc/kernel/syscalls/syscall.tbl
    ("s390x", 217),    # arch/s390/kernel/syscalls/syscall.tbl
])
def test_pivot_root_uses_the_architectures_system_call_number(machine, number):
    assert kernel.pivot_root_syscall(machine) == number


def test_an_unknown_architecture_has_no_number():
    assert kernel.pivot_root_syscall("vax") is None


def test_this_machine_has_a_number():
    assert kernel.pivot_root_syscall(os.uname().machine) is not None


PIVOT = r"""
import os, sys
from kubelet.runtime.linux import kernel
new = sys.argv[1]
kernel.unshare(kernel.CLONE_NEWNS)
kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
kernel.mount("tmpfs", new, "tmpfs")
os.mkdir(os.path.join(new, ".oldroot"))
open(os.path.join(new, "marker"), "w").close()
os.chdir(new)
kernel.pivot_root(".", ".oldroot")
os.chdir("/")
print(sorted(os.listdir("/")))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="pivot_root needs root (a new mount namespace)")
def test_pivot_root_really_changes_the_root(tmp_path):
    new = tmp_path / "root"
    new.mkdir()
    r = subprocess.run([sys.executable, "-c", PIVOT, str(new)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['.oldroot', 'marker']"
    assert not os.path.exists(new / "marker")  # the tmpfs lived in the child's namespace only
