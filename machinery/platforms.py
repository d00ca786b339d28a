"""This machine's OS and architecture as Go names them (GOOS/GOARCH: `linux`, `amd64`,
`arm64`, ...), for what Kubernetes reports as a platform: `/version`, the User-Agent,
a node's `kubernetes.io/arch` label and nodeInfo, `kubectl-lite version`.

Pure, and cheap to import: the machine comes from `os.uname()` (the `platform` module
costs ~1.7 ms of a CLI's start-up).
"""
from __future__ import annotations

import os
import sys

# uname -m spellings (Linux uname -m, macOS, Windows) -> Go's GOARCH.
_GOARCH = {
    "x86_64": "amd64", "amd64": "amd64", "x64": "amd64",
    "aarch64": "arm64", "arm64": "arm64", "aarch64_be": "arm64be",
    "i386": "386", "i486": "386", "i586": "386", "i686": "386", "x86": "386",
    "armv5l": "arm", "armv6l": "arm", "armv7l": "arm", "armv8l": "arm", "arm": "arm",
    "ppc64le": "ppc64le", "ppc64": "ppc64", "s390x": "s390x",
    "riscv64": "riscv64", "loongarch64": "loong64",
    "mips": "mips", "mipsel": "mipsle", "mips64": "mips64", "mips64el": "mips64le",
}


def goarch(machine: str | None = None) -> str:
    """Go's GOARCH for `machine`, a `uname -m` value (default: this machine's); a name
    Go has no spelling for is passed through lower cased."""
    m = (os.uname().machine if machine is None else machine).lower()
    return _GOARCH.get(m, m) or "unknown"


def goos(name: str | None = None) -> str:
    """Go's GOOS for a `sys.platform` value (default: this one's)."""
    p = sys.platform if name is None else name
    for prefix, go in (("linux", "linux"), ("darwin", "darwin"), ("win32", "windows"),
                       ("cygwin", "windows"), ("freebsd", "freebsd"), ("openbsd", "openbsd"),
                       ("netbsd", "netbsd")):
        if p.startswith(prefix):
            return go
    return p or "unknown"
