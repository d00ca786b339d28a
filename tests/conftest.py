import os
import shutil
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
