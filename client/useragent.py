"""The User-Agent client-go sends, for minik8s' components and clients.

Guarantees
- `default_user_agent()` is `<program>/<version> (<os>/<arch>) kubernetes/<commit>`,
  as client-go's `rest.DefaultKubernetesUserAgent` builds it: the program is the base
  name of `sys.argv[0]`, the version is cut at its first `-` ("v1.32.0-minik8s" ->
  "v1.32.0"), the commit is cut to 7 characters, and any empty part is "unknown".
- `<os>/<arch>` are the machine's, in Go's GOOS/GOARCH spelling (`platform.machine()`
  "x86_64" -> "amd64", "aarch64" -> "arm64", ...), so a server that parses the agent
  (kube-apiserver's audit log, a field manager name) sees what a Go client on the same
  machine would report. A machine name Go has no spelling for is passed through lower
  cased.

Concurrency: pure functions.
"""
from __future__ import annotations

import os
import platform
import sys

# The Kubernetes release whose API minik8s serves (apiserver's /version says the same).
KUBERNETES_VERSION = "v1.32.0-minik8s"
GIT_COMMIT = ""  # no build stamps a commit into minik8s: client-go then says "unknown"

# platform.machine() spellings (Linux uname -m, macOS, Windows) -> Go's GOARCH.
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
    """Go's GOARCH for `machine` (default: this one's)."""
    m = (platform.machine() if machine is None else machine).lower()
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


def default_user_agent(program: str | None = None, *, version: str = KUBERNETES_VERSION,
                       commit: str = GIT_COMMIT) -> str:
    """client-go's default User-Agent for `program` (default: this process's name)."""
    command = os.path.basename(sys.argv[0] if program is None and sys.argv else program or "")
    version = version.split("-", 1)[0]
    return (f"{command or 'unknown'}/{version or 'unknown'} ({goos()}/{goarch()}) "
            f"kubernetes/{commit[:7] or 'unknown'}")
