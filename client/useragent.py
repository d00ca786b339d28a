"""The User-Agent client-go sends, for minik8s' components and clients.

Guarantees
- `default_user_agent()` is `<program>/<version> (<os>/<arch>) kubernetes/<commit>`,
  as client-go's `rest.DefaultKubernetesUserAgent` builds it: the program is the base
  name of `sys.argv[0]`, the version is cut at its first `-` ("v1.32.0-minik8s" ->
  "v1.32.0"), the commit is cut to 7 characters, and any empty part is "unknown".
- `<os>/<arch>` are the machine's, in Go's GOOS/GOARCH spelling (machinery.platforms:
  "x86_64" -> "amd64", "aarch64" -> "arm64", ...), so a server that parses the agent
  (kube-apiserver's audit log, a field manager name) sees what a Go client on the same
  machine would report. A machine name Go has no spelling for is passed through lower
  cased.

Concurrency: pure functions.
"""
from __future__ import annotations

import os
import sys

from machinery.platforms import goarch, goos

# The Kubernetes release whose API minik8s serves (apiserver's /version says the same).
KUBERNETES_VERSION = "v1.32.0-minik8s"
GIT_COMMIT = ""  # no build stamps a commit into minik8s: client-go then says "unknown"

def default_user_agent(program: str | None = None, *, version: str = KUBERNETES_VERSION,
                       commit: str = GIT_COMMIT) -> str:
    """client-go's default User-Agent for `program` (default: this process's name)."""
    command = os.path.basename(sys.argv[0] if program is None and sys.argv else program or "")
    version = version.split("-", 1)[0]
    return (f"{command or 'unknown'}/{version or 'unknown'} ({goos()}/{goarch()}) "
            f"kubernetes/{commit[:7] or 'unknown'}")
