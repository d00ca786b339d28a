import os
import shutil
import uuid

import pytest

from tests.procs import APIServer, Etcd


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


@pytest.fixture(scope="session")
def etcd():
    e = Etcd().start()
    yield e
    e.stop()


@pytest.fixture(scope="session")
def apiserver(etcd):
    s = APIServer(etcd.url).start()
    yield s
    s.stop()


@pytest.fixture
def http(apiserver):
    with apiserver.client() as c:
        yield c


@pytest.fixture
def ns(http):
    """A fresh namespace per test, so tests sharing one server do not see each other."""
    name = "t-" + uuid.uuid4().hex[:10]
    r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return name


@pytest.fixture(scope="session")
def kubeconfig(apiserver, tmp_path_factory):
    """A kubeconfig file for the session's API server (what components are started with)."""
    path = tmp_path_factory.mktemp("kubeconfig") / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: minik8s\n  cluster:\n    server: {apiserver.url}\n"
        "users:\n- name: admin\n  user: {}\n"
        "contexts:\n- name: minik8s\n  context:\n    cluster: minik8s\n    user: admin\n    namespace: default\n"
        "current-context: minik8s\n")
    return str(path)


@pytest.fixture(scope="module")
def private_apiserver():
    """An etcd and API server of the test module's own, for tests whose subjects act on
    every namespace or node (controllers), so other tests' objects cannot interfere."""
    e = Etcd().start()
    s = APIServer(e.url).start()
    yield s
    s.stop()
    e.stop()
