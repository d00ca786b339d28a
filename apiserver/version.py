"""What `/version` reports: the Kubernetes release minik8s serves the API of (kubectl
picks its behaviour from it) and the platform the server runs on, named as Go names it
(`linux/amd64`, `linux/arm64`, ...), as kube-apiserver's runtime.GOOS/GOARCH would."""
from __future__ import annotations

from machinery.platforms import goarch, goos


def go_platform(system: str | None = None, machine: str | None = None) -> str:
    """`<GOOS>/<GOARCH>` of this machine, or of a `sys.platform`-like system name and a
    `uname -m` machine name."""
    return f"{goos(system.lower() if system is not None else None)}/{goarch(machine)}"


def info() -> dict[str, str]:
    return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-minik8s", "gitCommit": "",
            "gitTreeState": "clean", "buildDate": "2026-11-27T00:00:00Z", "goVersion": "python",
            "compiler": "cpython", "platform": go_platform()}
