"""The CSR controllers (csrapproving, csrsigning, csrcleaner): unit tables of what they
recognise, and a real controller manager (with the controller manager's own credential,
so the certificate-controller role is exercised) against a real API server with
bootstrap-token authentication and kubeadm's bindings."""
from __future__ import annotations

import asyncio
import base64
import datetime
import os
import subprocess
import sys
import uuid

import pytest

from client.clock import FakeClock
from controller_manager.controllers.certificates import (CSRApprovingController, CSRCleanerController,
                                                         cleanup_deadline, kubelet_client_problem)
from controller_manager.testing import RecordingClient
from machinery import pki, times
from tests.procs import Component, wait_for
from tests.secure import Credentials, SecureCluster

BASE = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
KUBELET_CLIENT = "kubernetes.io/kube-apiserver-client-kubelet"
TOKEN_ID, TOKEN_SECRET = "abcdef", "0123456789abcdef"
TOKEN = f"{TOKEN_ID}.{TOKEN_SECRET}"
BOOTSTRAPPERS = "system:bootstrappers:kubeadm:default-node-token"
NODE_USAGES = ["digital signature", "client auth"]


def request_pem(cn="system:node:n1", orgs=("system:nodes",), dns=()) -> str:
    key = pki.new_key("ECDSA-P256")
    return base64.b64encode(pki.new_csr(key, common_name=cn, organizations=tuple(orgs), dns_names=dns)).decode()


def csr(*, request=None, signer=KUBELET_CLIENT, usages=None, name=None, **spec) -> dict:
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": name or "node-csr-" + uuid.uuid4().hex[:8],
                         "uid": str(uuid.uuid4()), "creationTimestamp": times.rfc3339()},
            "spec": {"request": request or request_pem(), "signerName": signer,
                     "usages": usages if usages is not None else list(NODE_USAGES), **spec}}


# -- unit: what the approver recognises ---------------------------------------------------------

@pytest.mark.parametrize("cn, orgs, dns, usages, problem", [
    ("system:node:a", ["system:nodes"], [], ["digital signature", "client auth"], None),
    ("system:node:a", ["system:nodes"], [], ["digital signature", "key encipherment", "client auth"], None),
    ("system:node:a", ["system:nodes", "x"], [], NODE_USAGES, "subject organization is not system:nodes"),
    ("system:node:a", [], [], NODE_USAGES, "subject organization is not system:nodes"),
    ("a", ["system:nodes"], [], NODE_USAGES, "subject common name does not begin with system:node:"),
    ("system:node:a", ["system:nodes"], ["a.example"], NODE_USAGES, "DNS subjectAltNames are not allowed"),
    ("system:node:a", ["system:nodes"], [], ["client auth"], "usages did not match"),
    ("system:node:a", ["system:nodes"], [], ["digital signature", "client auth", "server auth"],
     "usages did not match"),
])
def test_kubelet_client_checks(cn, orgs, dns, usages, problem):
    req = pki.load_csr(base64.b64decode(request_pem(cn, orgs, tuple(dns))))
    got = kubelet_client_problem(req, set(usages))
    assert got == problem if problem is None else got.startswith(problem)


@pytest.mark.parametrize("obj", [
    csr(request=request_pem(orgs=("system:masters",)), username="system:bootstrap:abcdef"),
    csr(usages=["digital signature", "client auth", "server auth"], username="system:bootstrap:abcdef"),
    csr(signer="kubernetes.io/kube-apiserver-client", username="system:bootstrap:abcdef"),
])
def test_approver_asks_nothing_about_requests_it_does_not_recognise(obj):
    client = RecordingClient()
    approver = CSRApprovingController(client, client)
    client.seed(obj)
    asyncio.run(approver.reconcile(obj["metadata"]["name"]))
    assert client.actions == []


def test_cleaner_deadlines_are_kubernetes():
    now = 1_000_000.0
    pending = csr()
    pending["metadata"]["creationTimestamp"] = times.rfc3339(now)
    assert cleanup_deadline(pending) == now + 24 * 3600
    denied = dict(pending, status={"conditions": [{"type": "Denied", "status": "True",
                                                   "lastUpdateTime": times.rfc3339(now + 10)}]})
    assert cleanup_deadline(denied) == now + 10 + 3600
    approved_only = dict(pending, status={"conditions": [{"type": "Approved", "status": "True",
                                                          "lastUpdateTime": times.rfc3339(now)}]})
    assert cleanup_deadline(approved_only) is None  # approved, never issued: Kubernetes keeps it


def test_cleaner_deletes_a_pending_request_a_day_old_and_not_before():
    clock = FakeClock(wall=2_000_000.0)
    client = RecordingClient()
    cleaner = CSRCleanerController(client, client, clock=clock)
    obj = csr()
    obj["metadata"]["creationTimestamp"] = times.rfc3339(clock.now() - 23 * 3600)
    client.seed(obj)
    name = obj["metadata"]["name"]
    asyncio.run(cleaner.reconcile(name))
    assert client.actions == []
    clock.step(3601)
    asyncio.run(cleaner.reconcile(name))
    assert [a[:3] for a in client.actions] == [("delete", "certificatesigningrequests", name)]


# -- end to end ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SecureCluster(str(tmp_path_factory.mktemp("csrctl")), "--enable-bootstrap-token-auth").start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    with cluster.client(cluster.admin) as c:
        yield c


def kubeadm_bootstrap_objects(admin) -> None:
    """What `kubeadm init` makes for TLS bootstrap: a bootstrap token and its bindings."""
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
              "metadata": {"name": f"bootstrap-token-{TOKEN_ID}", "namespace": "kube-system"},
              "data": {"token-id": b64(TOKEN_ID), "token-secret": b64(TOKEN_SECRET),
                       "usage-bootstrap-authentication": b64("true"), "usage-bootstrap-signing": b64("true"),
                       "auth-extra-groups": b64(BOOTSTRAPPERS)}}
    r = admin.post("/api/v1/namespaces/kube-system/secrets", json=secret)
    assert r.status_code in (201, 409), r.text
    for name, role, group in (
            ("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", BOOTSTRAPPERS),
            ("kubeadm:node-autoapprove-bootstrap",
             "system:certificates.k8s.io:certificatesigningrequests:nodeclient", BOOTSTRAPPERS),
            ("kubeadm:node-autoapprove-certificate-rotation",
             "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes")):
        r = admin.post(f"{RBAC}/clusterrolebindings", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "Group", "name": group, "apiGroup": "rbac.authorization.k8s.io"}]})
        assert r.status_code in (201, 409), r.text


@pytest.fixture(scope="module")
def manager(cluster, admin):
    kubeadm_bootstrap_objects(admin)
    # the token's Secret and its bindings reach the server's authenticator and RBAC
    # cache through watches: until then the bootstrapper is refused
    with cluster.client(token=TOKEN) as bootstrapper:
        wait_for(lambda: bootstrapper.get(BASE).status_code == 200, what="the bootstrapper allowed to list CSRs")
    pki_dir = cluster.pki_dir
    kc = cluster.kubeconfig("cm", Credentials(os.path.join(pki_dir, "controller-manager.crt"),
                                              os.path.join(pki_dir, "controller-manager.key")))
    cm = Component("controller-manager", "--kubeconfig", kc, "--leader-elect=false", "--secure-port", "0",
                   "--controllers", "csrapproving,csrsigning,csrcleaner",
                   "--cluster-signing-cert-file", os.path.join(pki_dir, "ca.crt"),
                   "--cluster-signing-key-file", os.path.join(pki_dir, "ca.key"),
                   "--cluster-signing-duration", "2h", "-v", "4").start()
    yield cm
    cm.stop()


def whole_log(component: Component) -> str:
    with open(component.logfile.name, errors="replace") as f:
        return f.read()


def get(admin, name) -> dict:
    return admin.get(f"{BASE}/{name}").json()


def issued(admin, name):
    obj = get(admin, name)
    return (obj.get("status") or {}).get("certificate") and obj


def certificate(obj) -> "pki.x509.Certificate":
    return pki.load_cert(base64.b64decode(obj["status"]["certificate"]))


def test_a_bootstrappers_node_csr_is_approved_and_issued(cluster, admin, manager):
    with cluster.client(token=TOKEN) as bootstrapper:
        r = bootstrapper.post(BASE, json=csr(expirationSeconds=3600))
        assert r.status_code == 201, r.text
        name = r.json()["metadata"]["name"]
        assert r.json()["spec"]["username"] == f"system:bootstrap:{TOKEN_ID}"
        obj = wait_for(lambda: issued(bootstrapper, name), what="the certificate")
    (cond,) = obj["status"]["conditions"]
    assert (cond["type"], cond["reason"], cond["message"]) == (
        "Approved", "AutoApproved", "Auto approving kubelet client certificate after SubjectAccessReview.")
    cert = certificate(obj)
    assert pki.spec_of(cert).common_name == "system:node:n1"
    assert pki.spec_of(cert).organizations == ("system:nodes",)
    with open(os.path.join(cluster.pki_dir, "ca.crt"), "rb") as f:
        assert pki.issued_by(cert, pki.load_cert(f.read()))
    # expirationSeconds (1h) is shorter than --cluster-signing-duration (2h): back-dated
    # five minutes, ending an hour after signing
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(minutes=65)
    # without expirationSeconds, the flag's 2h (also under 8h: its end is not back-dated)
    with cluster.client(token=TOKEN) as bootstrapper:
        name = bootstrapper.post(BASE, json=csr()).json()["metadata"]["name"]
        obj = wait_for(lambda: issued(bootstrapper, name), what="the certificate")
    cert = certificate(obj)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(hours=2, minutes=5)


def test_a_node_renewing_its_own_certificate_is_approved_as_selfnodeclient(cluster, admin, manager):
    node = cluster.user("system:node:n2", "system:nodes")
    with cluster.client(node) as c:
        r = c.post(BASE, json=csr(request=request_pem("system:node:n2")))
        assert r.status_code == 201, r.text
        obj = wait_for(lambda: issued(c, r.json()["metadata"]["name"]), what="the certificate")
    assert obj["status"]["conditions"][0]["message"] == \
        "Auto approving self kubelet client certificate after SubjectAccessReview."


def test_wrong_org_or_usages_stay_pending_and_a_stranger_is_not_approved(cluster, admin, manager):
    with cluster.client(token=TOKEN) as bootstrapper:
        bad_org = bootstrapper.post(BASE, json=csr(request=request_pem(orgs=("system:masters",)))).json()
        bad_usages = bootstrapper.post(BASE, json=csr(usages=["digital signature", "client auth",
                                                              "server auth"])).json()
    stranger = cluster.user("mallory")
    rbac_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": "mallory-bootstrapper"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": "system:node-bootstrapper"},
                 "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]}
    assert admin.post(f"{RBAC}/clusterrolebindings", json=rbac_role).status_code == 201
    try:
        with cluster.client(stranger) as c:
            by_stranger = c.post(BASE, json=csr()).json()
        with cluster.client(token=TOKEN) as bootstrapper:
            good = bootstrapper.post(BASE, json=csr()).json()
            wait_for(lambda: issued(bootstrapper, good["metadata"]["name"]), what="the good one")
        # the good one, made last, was handled: the others were looked at and left pending
        for obj in (bad_org, bad_usages, by_stranger):
            assert get(admin, obj["metadata"]["name"])["status"] == {}, obj["metadata"]["name"]
        stranger_name = by_stranger["metadata"]["name"]
        wait_for(lambda: f"recognized csr '{stranger_name}' as ['nodeclient'] but subject access review "
                         "was not approved" in whole_log(manager), what="the approver's refusal")
        assert "Traceback" not in whole_log(manager)
    finally:
        admin.delete(f"{RBAC}/clusterrolebindings/mallory-bootstrapper")


def test_signer_marks_an_approved_request_it_may_not_sign_failed_and_leaves_unknown_signers(admin, manager):
    bad = admin.post(BASE, json=csr(request=request_pem("not-a-node"))).json()
    other = admin.post(BASE, json=csr(signer="example.com/other")).json()
    for obj in (other, bad):
        obj["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "Test"}]}
        r = admin.put(f"{BASE}/{obj['metadata']['name']}/approval", json=obj)
        assert r.status_code == 200, r.text

    def failed():
        conds = get(admin, bad["metadata"]["name"])["status"].get("conditions") or []
        return [c for c in conds if c["type"] == "Failed"]
    (cond,) = wait_for(failed, what="the Failed condition")
    assert (cond["reason"], cond["message"]) == (
        "SignerValidationFailure", "subject common name does not begin with system:node:")
    assert "certificate" not in get(admin, bad["metadata"]["name"])["status"]
    assert "certificate" not in get(admin, other["metadata"]["name"])["status"]
    assert [c["type"] for c in get(admin, other["metadata"]["name"])["status"]["conditions"]] == ["Approved"]


def test_cleaner_deletes_a_request_denied_over_an_hour_ago(admin, manager):
    obj = admin.post(BASE, json=csr(signer="example.com/nobody")).json()  # no controller approves it
    name = obj["metadata"]["name"]
    obj["status"] = {"conditions": [{"type": "Denied", "status": "True", "reason": "Test",
                                     "lastUpdateTime": times.rfc3339(times.parse(obj["metadata"]["creationTimestamp"])
                                                                     - 7200)}]}
    assert admin.put(f"{BASE}/{name}/approval", json=obj).status_code == 200
    wait_for(lambda: admin.get(f"{BASE}/{name}").status_code == 404, what="the cleaner")


def test_controller_manager_refuses_an_unusable_signing_ca(cluster, tmp_path):
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate")
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "controller-manager", "--kubeconfig", "/nonexistent",
                        "--cluster-signing-cert-file", str(bad),
                        "--cluster-signing-key-file", os.path.join(cluster.pki_dir, "ca.key")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith("error: cluster signing CA:") and "not a PEM certificate" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- unit: what the signer puts in a certificate ---------------------------------------------------

def test_signed_certificates_follow_the_permissive_signing_policy():
    from cryptography import x509
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    ca_key = pki.new_key("ECDSA-P256")
    ca = pki.new_ca("ca", ca_key, now=now, validity=datetime.timedelta(days=1))
    req = pki.load_csr(base64.b64decode(request_pem("system:node:a", dns=("a.example",))))

    def sign(usages, hours):
        return pki.sign_request(req, usages, ca_cert=ca, ca_key=ca_key, now=now, ttl=datetime.timedelta(hours=hours))
    cert = sign(["digital signature", "key encipherment", "server auth", "client auth"], 10)
    assert cert.not_valid_before_utc == now - datetime.timedelta(minutes=5)
    # long-lived (8h or more): the end is back-dated too, so the whole span is the TTL
    assert cert.not_valid_after_utc == now + datetime.timedelta(hours=10, minutes=-5)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [o.dotted_string for o in eku] == ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pki.spec_of(cert).dns_names == ("a.example",) and pki.spec_of(cert).common_name == "system:node:a"
    # never past the CA's own end
    assert sign(["client auth"], 100).not_valid_after_utc == ca.not_valid_after_utc
    with pytest.raises(ValueError, match="unrecognized usage: flying"):
        sign(["flying"], 1)
