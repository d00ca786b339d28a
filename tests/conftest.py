import os
import re
import shutil
import time
import uuid

import pytest

from tests.procs import APIServer, Etcd, default_service_account


def pytest_runtest_setup(item):
    """Tests marked `kubectl` need the real kubectl: skipped without it on a developer's
    machine, failed in CI (CI=true), where a missing kubectl would otherwise thin the
    acceptance suite without anyone noticing."""
    if item.get_closest_marker("kubectl") and shutil.which("kubectl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is not on PATH, and CI=true: the kubectl acceptance tests "
                        "must run in CI (hack/setup.sh should have failed)", pytrace=False)
        pytest.skip("kubectl is not on PATH: the kubectl compatibility tests need a kubectl "
                    "binary (v1.32)")


# Parallel runs (hack/test.sh: pytest-xdist, `-n 2 --dist loadgroup`). Every test module
# that touches host-global state runs in ONE group, "host": its tests run one after another
# on one worker, as in a serial run, never beside another such module: network namespaces,
# veths, nft (the `ip minik8s-proxy` table), cgroups, mounts, fixed ports (53, 6443/6444,
# 8472, 10250) bound, /etc, /var and /run paths, root (geteuid), "the machine as it was"
# checks, `minik8s up` clusters, the lab. A module is in "host" when it lives in
# tests/upcluster/ or tests/chaos/, or its source matches HOST_GLOBAL below (conservative:
# a false match costs only parallelism), or it imports from a test module in "host" (it
# shares that module's fixtures, kubelets and all); a module all these miss says
# `pytestmark = pytest.mark.host`. The words are matched as words: `mountPath`,
# `conftest` or a `kube.test:6443` URL touch nothing, and cost the group a module each.
# Everything else must be safe beside any other test: its own processes on free ports
# (tests/procs.py), tmp_path, its own namespace (`ns`) or its own API server
# (`private_apiserver`) for cluster-wide subjects. Per worker, the session fixtures
# (etcd, apiserver, kubeconfig) are separate processes.
# The grouping is a scheduler of ours (xdist's LoadGroupScheduling, scoped by module path),
# not xdist_group marks: with pytest 9.2, xdist 3.8 drops those marks' groups silently
# (pytest-dev/pytest-xdist#1386), and the controller, which schedules, sees only node ids.
# xdist hands out the scope with the most tests first, so "host", the longest, starts at once.
HOST_GLOBAL = re.compile(
    r"geteuid|netns|\bnft\b|cgroup|unshare|\bmount\b|/run/|/var/|/etc/"
    # a fixed port bound: an (address, port) pair or a --*port flag's value
    r"|(?:[\"'](?:[\d.:]*|localhost)[\"']\s*,\s*|--[\w-]*port[= \"',]+)(?:53|6443|6444|8472|10250)\b"
    r"|Lab\(|labhost|podnet|iptables|ip link|\bveth|mark\.host\b")
HOST_PACKAGES = {"upcluster", "chaos"}
IMPORTS_TEST_MODULE = re.compile(r"^from tests\.(test_\w+) import", re.M)
_host_modules: dict[str, bool] = {}


def touches_host(path: str) -> bool:
    """Whether the test module at `path` is in the "host" group."""
    if path not in _host_modules:
        _host_modules[path] = False  # an import cycle ends here
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read()
        except OSError:
            source = ""
        parts = set(os.path.normpath(path).split(os.sep)[:-1])
        _host_modules[path] = bool(
            parts & HOST_PACKAGES or HOST_GLOBAL.search(source)
            or any(touches_host(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{m}.py"))
                   for m in IMPORTS_TEST_MODULE.findall(source)))
    return _host_modules[path]


@pytest.hookimpl(optionalhook=True)   # a hook of pytest-xdist's: none without it
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class HostGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if touches_host(os.path.join(str(config.rootpath), nodeid.split("::", 1)[0])):
                return "host"
            return super()._split_scope(nodeid)
    return HostGroupScheduling(config, log)


def _minik8s_cgroups() -> dict[str, bool]:
    """The cgroups named minik8s* where kubelets put their pods' parent (minik8s-<node>)
    and `minik8s up` its cluster's tree (minik8s-<id>), directly under this process's own
    cgroup in every hierarchy (kubelet/runtime/linux/cgroups.bases): name -> whether
    any process is left in one. Only names found in EVERY hierarchy: both make theirs in
    each, and a machine that gives each session a cgroup of its own in one hierarchy
    (a sandbox's memory cgroup, say) keeps other sessions' cgroups out of the count."""
    from kubelet.runtime.linux.cgroups import bases
    found: list[dict[str, bool]] = []
    for base in bases():
        here: dict[str, bool] = {}
        try:
            names = [e.name for e in os.scandir(base) if e.is_dir() and e.name.startswith("minik8s")]
        except OSError:
            names = []
        for name in names:
            busy = False
            for d, _dirs, _files in os.walk(os.path.join(base, name)):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        busy = busy or bool(f.read().strip())
                except OSError:
                    pass
            here[name] = busy
        found.append(here)
    common = set.intersection(*(set(h) for h in found)) if found else set()
    return {n: any(h[n] for h in found) for n in common}


@pytest.fixture(scope="module", autouse=True)
def no_leaked_cgroups(request):
    """A host-group module (run as root) leaves no cgroup of its kubelets or clusters
    behind: one that appeared while the module ran and is still there, empty, a few
    seconds after its last fixture ended is an error of the module's last test. (Only
    host-group modules run kubelets or clusters, one at a time on one worker, so what
    appears meanwhile is the module's; suites run side by side on one machine can
    see each other's, unless each has a cgroup of its own, see above.)"""
    path = str(request.path)
    if os.geteuid() != 0 or not touches_host(path):
        yield
        return
    before = set(_minik8s_cgroups())
    yield
    deadline = time.monotonic() + 10
    while True:
        left = sorted(n for n, busy in _minik8s_cgroups().items() if n not in before and not busy)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"{os.path.relpath(path)} left empty cgroups behind: {left}"


@pytest.fixture(scope="session")
def etcd():
    e = Etcd().start()
    yield e
    e.stop()


@pytest.fixture(scope="session")
def apiserver(etcd):
    """The session's API server: secure, as `minik8s up` runs it (tests/procs.APIServer);
    `default` has its `default` ServiceAccount."""
    s = APIServer(etcd.url).start()
    with s.client() as c:
        default_service_account(c, "default")
    yield s
    s.stop()


@pytest.fixture
def http(apiserver):
    with apiserver.client() as c:
        yield c


@pytest.fixture
def ns(http):
    """A fresh namespace per test, so tests sharing one server do not see each other,
    with its `default` ServiceAccount."""
    name = "t-" + uuid.uuid4().hex[:10]
    r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    default_service_account(http, name)
    return name


@pytest.fixture(scope="session")
def kubeconfig(apiserver, tmp_path_factory):
    """A kubeconfig file for the session's API server as its admin (certificate-authority,
    client-certificate and client-key files): what components are started with."""
    path = tmp_path_factory.mktemp("kubeconfig") / "config"
    return apiserver.write_kubeconfig(path, namespace="default")


@pytest.fixture(scope="module")
def plain_apiserver(etcd):
    """An API server of the module's own in plain-HTTP mode (`--plain-http`: no TLS, no
    authentication, AlwaysAllow), on the session's etcd: only for tests about that mode,
    or about what only a plain connection shows (a proxy or tap reading requests)."""
    s = APIServer(etcd.url, plain=True).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def private_apiserver():
    """An etcd and API server of the test module's own, for tests whose subjects act on
    every namespace or node (controllers), so other tests' objects cannot interfere."""
    e = Etcd().start()
    # No serviceaccount controller serves it (tests run the controllers they are about):
    # ServiceAccount admission off, as Kubernetes' integration tests start theirs.
    s = APIServer(e.url, "--disable-admission-plugins", "ServiceAccount").start()
    yield s
    s.stop()
    e.stop()
