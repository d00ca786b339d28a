"""What `/version` reports: the Kubernetes release minik8s serves the API of (kubectl
picks its behaviour from it) and the platform the server runs on, named as Go names it
(`linux/amd64`, `linux/arm64`, ...), as kube-apiserver's runtime.GOOS/GOARCH would."""
from __future__ import annotations

import platform as _platform

# platform.machine() -> Go's GOARCH; a machine not listed is reported as Python names it.
GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
          "armv7l": "arm", "armv6l": "arm", "armv8l": "arm", "i386": "386", "i686": "386",
          "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
          "loongarch64": "loong64", "mips64": "mips64"}


def go_platform(system: str | None = None, machine: str | None = None) -> str:
    system = (system if system is not None else _platform.system()).lower()
    machine = (machine if machine is not None else _platform.machine()).lower()
    return f"{system}/{GOARCH.get(machine, machine)}"


def info() -> dict[str, str]:
    return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-minik8s", "gitCommit": "",
            "gitTreeState": "clean", "buildDate": "2026-11-27T00:00:00Z", "goVersion": "python",
            "compiler": "cpython", "platform": go_platform()}
