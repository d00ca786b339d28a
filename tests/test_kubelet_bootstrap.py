"""The kubelet's TLS bootstrap and client certificate rotation, end to end: a real API
server with bootstrap-token authentication, kubeadm's token and bindings (made here),
a real controller manager running the CSR controllers, and a real kubelet process (the
fake runtime: one node) started with nothing but a bootstrap kubeconfig."""
from __future__ import annotations

import base64
import os
import time
import uuid

import pytest

from kubelet import certificate
from machinery import pki
from tests.procs import Component, default_service_account, wait_for
from tests.secure import Credentials, SecureCluster
from tests.test_csr_controllers import TOKEN, TOKEN_ID, kubeadm_bootstrap_objects

BASE = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SecureCluster(str(tmp_path_factory.mktemp("boot")), "--enable-bootstrap-token-auth").start()
    with c.client(c.admin) as admin:
        kubeadm_bootstrap_objects(admin)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    with cluster.client(cluster.admin) as c:
        yield c


def controller_manager(cluster, duration: str) -> Component:
    kc = cluster.kubeconfig("cm", Credentials(os.path.join(cluster.pki_dir, "controller-manager.crt"),
                                              os.path.join(cluster.pki_dir, "controller-manager.key")))
    return Component("controller-manager", "--kubeconfig", kc, "--leader-elect=false", "--secure-port", "0",
                     "--controllers", "csrapproving,csrsigning,csrcleaner",
                     "--cluster-signing-cert-file", os.path.join(cluster.pki_dir, "ca.crt"),
                     "--cluster-signing-key-file", os.path.join(cluster.pki_dir, "ca.key"),
                     "--cluster-signing-duration", duration).start()


class Kubelet:
    """`minik8s kubelet --runtime fake --nodes 1` with only a bootstrap kubeconfig."""

    def __init__(self, cluster, tmp, *extra: str):
        self.prefix = "boot-" + uuid.uuid4().hex[:6]
        self.node = f"{self.prefix}-0"
        self.boot = cluster.kubeconfig(f"bootstrap-{self.prefix}", token=TOKEN)
        self.kubeconfig, self.cert_dir = str(tmp / "kubelet.conf"), str(tmp / "pki")
        self.args = ["kubelet", "--runtime", "fake", "--nodes", "1", "--node-name", self.prefix,
                     "--bootstrap-kubeconfig", self.boot, "--kubeconfig", self.kubeconfig,
                     "--cert-dir", self.cert_dir, "--lease-renew-interval", "1", "--healthz-port", "0",
                     *extra]
        self.proc: Component | None = None

    def start(self) -> "Kubelet":
        self.proc = Component(*self.args).start()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def current(self):
        with open(os.path.join(self.cert_dir, "kubelet-client-current.pem"), "rb") as f:
            return pki.load_cert(f.read())


def ready(admin, name: str) -> bool:
    r = admin.get(f"/api/v1/nodes/{name}")
    return r.status_code == 200 and any(
        c["type"] == "Ready" and c["status"] == "True" for c in r.json().get("status", {}).get("conditions", []))


def csrs_of(admin, username: str) -> list[dict]:
    return [c for c in admin.get(BASE).json()["items"] if c["spec"].get("username") == username]


def cleanup(admin, kubelet: Kubelet) -> None:
    kubelet.stop()
    admin.delete(f"{LEASES}/{kubelet.node}")
    admin.delete(f"/api/v1/nodes/{kubelet.node}")


def test_a_kubelet_with_only_a_bootstrap_kubeconfig_joins_with_its_issued_certificate(cluster, admin, tmp_path):
    cm = controller_manager(cluster, "8760h")
    kubelet = Kubelet(cluster, tmp_path).start()
    try:
        wait_for(lambda: ready(admin, kubelet.node), timeout=60, what=f"node {kubelet.node} Ready")
        # the Node exists: only system:node:<name> may create it (the bootstrap token may not)
        cert = kubelet.current()
        spec = pki.spec_of(cert)
        assert (spec.common_name, spec.organizations) == (f"system:node:{kubelet.node}", ("system:nodes",))
        with open(os.path.join(cluster.pki_dir, "ca.crt"), "rb") as f:
            assert pki.issued_by(cert, pki.load_cert(f.read()))
        link = os.readlink(os.path.join(kubelet.cert_dir, "kubelet-client-current.pem"))
        assert link.startswith("kubelet-client-") and link.endswith(".pem") and "current" not in link
        assert not os.path.exists(os.path.join(kubelet.cert_dir, "kubelet-client.key.tmp"))
        # --kubeconfig now names the current certificate, as the kubelet writes it
        conn = __import__("client.kubeconfig", fromlist=["load"]).load(kubelet.kubeconfig).connection()
        assert conn.cert_file == conn.key_file == os.path.join(kubelet.cert_dir, "kubelet-client-current.pem")
        assert conn.token is None and oct(os.stat(kubelet.kubeconfig).st_mode & 0o777) == "0o600"
        (req,) = csrs_of(admin, f"system:bootstrap:{TOKEN_ID}")
        assert req["metadata"]["name"].startswith("node-csr-")
        assert req["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
        assert req["spec"]["usages"] == ["digital signature", "client auth"]
        assert req["status"]["conditions"][0]["reason"] == "AutoApproved"
        # as a node, it runs the pods bound to it (it may watch only those)
        ns = "t-" + uuid.uuid4().hex[:8]
        assert admin.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": ns}}).status_code == 201
        default_service_account(admin, ns)
        r = admin.post(f"/api/v1/namespaces/{ns}/pods", json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": kubelet.node, "automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "nginx"}]}})
        assert r.status_code == 201, r.text
        wait_for(lambda: admin.get(f"/api/v1/namespaces/{ns}/pods/p").json()["status"].get("phase") == "Running",
                 what="the pod to run")
        assert "forbidden" not in kubelet.proc.log()
        admin.delete(f"/api/v1/namespaces/{ns}")
        # restarted, it keeps its valid certificate: no new request
        kubelet.stop()
        kubelet.start()
        first = admin.get(f"{LEASES}/{kubelet.node}").json()["spec"]["renewTime"]
        wait_for(lambda: admin.get(f"{LEASES}/{kubelet.node}").json()["spec"]["renewTime"] != first,
                 what="a lease renewal after the restart")
        assert len(csrs_of(admin, f"system:bootstrap:{TOKEN_ID}")) == 1
        assert kubelet.current().serial_number == cert.serial_number
    finally:
        cleanup(admin, kubelet)
        cm.stop()
        for c in csrs_of(admin, f"system:bootstrap:{TOKEN_ID}"):
            admin.delete(f"{BASE}/{c['metadata']['name']}")


def test_the_client_certificate_rotates_and_the_kubelet_goes_on_without_a_restart(cluster, admin, tmp_path):
    cm = controller_manager(cluster, "10s")
    kubelet = Kubelet(cluster, tmp_path, "--rotate-certificates").start()
    try:
        wait_for(lambda: ready(admin, kubelet.node), timeout=60, what=f"node {kubelet.node} Ready")
        pid = kubelet.proc.proc.pid
        bootstrapped = kubelet.current()
        first = bootstrapped.serial_number
        wait_for(lambda: kubelet.current().serial_number != first, timeout=60, what="a rotated certificate")
        # renewed by the node itself, approved as selfnodeclient
        mine = wait_for(lambda: [c for c in csrs_of(admin, f"system:node:{kubelet.node}")
                                 if (c.get("status") or {}).get("certificate")], what="the node's own CSR")
        assert mine[0]["status"]["conditions"][0]["message"] == \
            "Auto approving self kubelet client certificate after SubjectAccessReview."
        # the same process goes on renewing its lease with the new certificates, also once
        # the bootstrapped one (10 s) has expired and the server would refuse it
        end = bootstrapped.not_valid_after_utc.timestamp()
        wait_for(lambda: time.time() > end + 2, timeout=60, what="the first certificate's expiry")
        for _ in range(3):
            seen = admin.get(f"{LEASES}/{kubelet.node}").json()["spec"]["renewTime"]
            wait_for(lambda seen=seen: admin.get(f"{LEASES}/{kubelet.node}").json()["spec"]["renewTime"] != seen,
                     what="a lease renewal after rotation")
        assert kubelet.proc.alive() and kubelet.proc.proc.pid == pid
        assert "rotated the client certificate" in kubelet.proc.log()
    finally:
        cleanup(admin, kubelet)
        cm.stop()


def test_a_denied_bootstrap_request_stops_the_kubelet_and_writes_nothing(cluster, admin, tmp_path):
    kubelet = Kubelet(cluster, tmp_path).start()  # no controller manager: a person decides
    try:
        def pending():
            return [c for c in csrs_of(admin, f"system:bootstrap:{TOKEN_ID}")
                    if f"system:node:{kubelet.node}" in _subject(c)]
        (req,) = wait_for(pending, what="the kubelet's CSR")
        req["status"] = {"conditions": [{"type": "Denied", "status": "True", "reason": "NotOnMyWatch",
                                         "message": "unknown machine"}]}
        r = admin.put(f"{BASE}/{req['metadata']['name']}/approval", json=req)
        assert r.status_code == 200, r.text
        wait_for(lambda: not kubelet.proc.alive(), what="the kubelet to exit")
        assert kubelet.proc.proc.returncode == 1
        assert "is denied, reason: NotOnMyWatch, message: unknown machine" in kubelet.proc.log()
        assert not os.path.exists(kubelet.kubeconfig)
        assert not os.path.exists(os.path.join(kubelet.cert_dir, "kubelet-client-current.pem"))
        admin.delete(f"{BASE}/{req['metadata']['name']}")
    finally:
        cleanup(admin, kubelet)


def _subject(csr: dict) -> str:
    req = pki.load_csr(base64.b64decode(csr["spec"]["request"]))
    return pki.csr_subject(req)[0]


def test_serving_certificate_is_made_once_for_the_node(tmp_path):
    crt, key = certificate.serving_certificate(str(tmp_path), "n1", "10.1.2.3")
    with open(crt, "rb") as f:
        data = f.read()
    leaf = pki.load_cert(data)
    spec = pki.spec_of(leaf)
    assert spec.dns_names == ("n1",) and spec.ips == ("10.1.2.3",) and spec.usages == ("server",)
    assert spec.common_name.startswith("n1@")
    with open(key, "rb") as f:
        assert pki.key_matches(leaf, pki.load_key(f.read()))
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    assert certificate.serving_certificate(str(tmp_path), "n1", "10.1.2.3") == (crt, key)
    with open(crt, "rb") as f:
        assert f.read() == data


def test_rotation_deadline_is_70_to_90_percent_of_the_lifetime(tmp_path):
    import datetime
    import random
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    key = pki.new_key("ECDSA-P256")
    ca = pki.new_ca("ca", key, now=now)
    cert = pki.sign(pki.CertSpec("x"), key.public_key(), ca_cert=ca, ca_key=key, now=now,
                    validity=datetime.timedelta(seconds=1000))
    start = cert.not_valid_before_utc.timestamp()
    total = cert.not_valid_after_utc.timestamp() - start
    rng = random.Random(1)
    points = [(certificate.rotation_deadline(cert, rng=rng) - start) / total for _ in range(200)]
    assert min(points) >= 0.7 and max(points) <= 0.9 and max(points) - min(points) > 0.1


def test_bootstrap_flags_are_checked(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "kubelet", "--runtime", "fake",
                        "--bootstrap-kubeconfig", str(tmp_path / "boot.conf")],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "KUBECONFIG": ""})
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: --bootstrap-kubeconfig needs --kubeconfig: the kubelet writes the "
                                "credential it gets there")


# -- a real node: the Linux runtime, its self-signed endpoint, the API server dialing it -----------

@pytest.mark.skipif(os.geteuid() != 0, reason="runs real pods: needs root")
def test_a_bootstrapped_linux_kubelet_serves_its_self_signed_endpoint_to_the_api_server(tmp_path_factory):
    """kubeadm's worker: no --tls-cert-file (kubelet.crt is made in --cert-dir), the
    cluster CA as --client-ca-file, and an API server without
    --kubelet-certificate-authority, which so reaches pods' logs through the endpoint."""
    import ssl

    import httpx

    from tests.procs import default_service_account, root_ca_configmap
    from tests.test_kubelet_e2e import KubeletNode, container, create, make_pod, pod_log, terminated, wait_pod
    tmp = tmp_path_factory.mktemp("linuxboot")
    c = SecureCluster(str(tmp / "cluster"), "--enable-bootstrap-token-auth",
                      "--kubelet-certificate-authority=").start()
    cm = node = None
    try:
        with c.client(c.admin) as admin:
            kubeadm_bootstrap_objects(admin)
            cm = controller_manager(c, "8760h")
            node = KubeletNode(c.server, tmp / "node")
            cert_dir = str(tmp / "node" / "pki")
            args = node.args
            del args[args.index("--token-file"):args.index("--token-file") + 2]
            args[args.index("--kubeconfig") + 1] = str(tmp / "node" / "kubelet.conf")
            args += ["--bootstrap-kubeconfig", c.kubeconfig("boot-linux", token=TOKEN), "--cert-dir", cert_dir,
                     "--client-ca-file", c.ca]
            node.proc = Component(*args).start()
            wait_for(lambda: ready(admin, node.name) or (not node.proc.alive() and
                                                          pytest.fail(node.proc.log())),
                     timeout=90, what=f"node {node.name} Ready")
            # the endpoint is HTTPS with the self-signed certificate made in --cert-dir
            ctx = ssl.create_default_context(cafile=os.path.join(cert_dir, "kubelet.crt"))
            ctx.check_hostname = False
            def answer():
                try:
                    return httpx.get(f"https://127.0.0.1:{node.port}/metrics", verify=ctx, timeout=5).status_code
                except httpx.ConnectError as e:
                    if "CERTIFICATE_VERIFY_FAILED" in str(e):
                        raise
                    return None  # not listening yet
            assert wait_for(answer, what="the endpoint") == 401  # kubelet.crt's; no client certificate
            ns = "t-" + uuid.uuid4().hex[:8]
            assert admin.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": ns}}).status_code == 201
            default_service_account(admin, ns)
            root_ca_configmap(admin, ns, ca_file=c.ca)
            create(admin, ns, make_pod("hello", node, container("c", ["echo", "bootstrapped"]),
                                       restartPolicy="Never"))
            wait_pod(admin, ns, "hello", terminated("c"), "the container to finish", timeout=60)
            assert pod_log(admin, ns, "hello") == "bootstrapped\n"
            admin.delete(f"/api/v1/namespaces/{ns}/pods/hello", params={"gracePeriodSeconds": "0"})
    finally:
        if node is not None and node.proc is not None:
            node.cleanup()
        if cm is not None:
            cm.stop()
        c.stop()


def test_a_client_sharing_the_kubelets_certificate_file_follows_its_rotation(cluster, tmp_path):
    """What reads kubelet.conf (kube-proxy, the pod network agent) uses the rotated
    kubelet-client-current.pem once it looks at the files again (every five minutes, as
    client-go's dynamic client certificate)."""
    import asyncio

    from client.clock import FakeClock
    from client.kubeconfig import Connection
    from client.rest import CERT_FILE_PERIOD, Client

    def pair(creds) -> bytes:
        with open(creds.cert, "rb") as c, open(creds.key, "rb") as k:
            return c.read() + k.read()
    current = tmp_path / "kubelet-client-current.pem"
    current.write_bytes(pair(cluster.user("alice")))
    conn = Connection(server=cluster.url, ca_file=cluster.ca, cert_file=str(current), key_file=str(current))
    clock = FakeClock()

    async def main() -> list[str]:
        seen = []
        async with Client(conn, clock=clock) as client:
            async def who() -> None:
                review = await client.create({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
                seen.append(review["status"]["userInfo"]["username"])
            await who()
            rotated = tmp_path / "kubelet-client-next.pem"
            rotated.write_bytes(pair(cluster.user("bob")))
            os.replace(rotated, current)
            await who()  # not looked at yet
            clock.step(CERT_FILE_PERIOD + 1)
            await who()
            await who()
        return seen
    assert asyncio.run(main()) == ["alice", "alice", "bob", "bob"]
