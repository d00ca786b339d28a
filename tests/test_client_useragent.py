"""The User-Agent is client-go's, with this machine's OS and architecture in Go's
spelling, as the server (through a recording proxy in front of it) receives it."""
import os
import platform
import re
import sys

import pytest

from client.rest import Client
from client.useragent import default_user_agent, goarch, goos
from tests.netfixtures import RecordingProxy


@pytest.fixture(scope="module")
def apiserver(plain_apiserver):
    """Plain HTTP for this module's tests. The recording proxy reads each request's
    User-Agent, which only a plain connection shows."""
    return plain_apiserver


@pytest.mark.parametrize("machine, arch", [
    ("x86_64", "amd64"), ("AMD64", "amd64"), ("aarch64", "arm64"), ("arm64", "arm64"),
    ("armv7l", "arm"), ("armv6l", "arm"), ("i686", "386"), ("ppc64le", "ppc64le"),
    ("s390x", "s390x"), ("riscv64", "riscv64"), ("loongarch64", "loong64"),
    ("mips64el", "mips64le"), ("sparc64", "sparc64"),
])
def test_machine_names_map_to_goarch(machine, arch):
    assert goarch(machine) == arch


def test_platform_names_map_to_goos():
    assert [goos(p) for p in ("linux", "darwin", "win32", "freebsd14")] == \
        ["linux", "darwin", "windows", "freebsd"]


def test_format_is_client_gos():
    assert default_user_agent("/usr/bin/kubelet", version="v1.32.0-minik8s", commit="0123456789abc") == \
        f"kubelet/v1.32.0 ({goos()}/{goarch()}) kubernetes/0123456"
    assert default_user_agent("", version="", commit="") == \
        f"unknown/unknown ({goos()}/{goarch()}) kubernetes/unknown"


async def test_requests_carry_the_real_platform(apiserver, ns):
    async with RecordingProxy() as proxy:
        async with Client(apiserver.connection(proxy_url=proxy.url), max_retries=0) as c:
            await c.get("namespaces", ns)
    ua = proxy.seen[0].headers["user-agent"]
    assert re.fullmatch(r"[^/ ]+/v\d+\.\d+\.\d+ \([a-z0-9]+/[a-z0-9]+\) kubernetes/\w+", ua), ua
    assert ua.startswith(os.path.basename(sys.argv[0]) + "/v1.32.0 ")
    assert f"({goos()}/{goarch(platform.machine())})" in ua
    if platform.machine() == "x86_64":
        assert "(linux/amd64)" in ua
