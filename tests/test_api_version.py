"""`/version` reports the Kubernetes release served and the platform the server runs on,
in Go's GOOS/GOARCH names, as kube-apiserver does."""
import platform

import pytest

from apiserver.version import go_platform


@pytest.mark.parametrize("machine, want", [
    ("x86_64", "linux/amd64"), ("AMD64", "linux/amd64"), ("aarch64", "linux/arm64"),
    ("arm64", "linux/arm64"), ("armv7l", "linux/arm"), ("i686", "linux/386"),
    ("ppc64le", "linux/ppc64le"), ("s390x", "linux/s390x"), ("riscv64", "linux/riscv64"),
])
def test_machine_names_map_to_go_architectures(machine, want):
    assert go_platform("Linux", machine) == want


def test_version_reports_the_servers_platform(http):
    r = http.get("/version")
    assert r.status_code == 200
    info = r.json()
    assert (info["major"], info["minor"]) == ("1", "32")
    assert info["platform"] == go_platform(platform.system(), platform.machine())
    assert info["platform"].startswith(platform.system().lower() + "/")
