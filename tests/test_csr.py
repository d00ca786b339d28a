"""certificates.k8s.io/v1 CertificateSigningRequests on a real API server: who asked is
recorded, validation and its Status errors, the status and approval subresources, the
approval and signing RBAC of kube-apiserver's admission, discovery, and what the real
kubectl shows and does (`get csr`, `certificate approve|deny`)."""
from __future__ import annotations

import base64
import shutil
import subprocess
import uuid

import pytest

from machinery import pki
from tests.secure import SecureCluster

BASE = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
KUBELET_CLIENT = "kubernetes.io/kube-apiserver-client-kubelet"
CLIENT = "kubernetes.io/kube-apiserver-client"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SecureCluster(str(tmp_path_factory.mktemp("csr")), "--enable-bootstrap-token-auth").start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    with cluster.client(cluster.admin) as c:
        yield c


def request_pem(cn: str = "system:node:n1", orgs: tuple[str, ...] = ("system:nodes",)) -> str:
    key = pki.new_key("ECDSA-P256")
    return base64.b64encode(pki.new_csr(key, common_name=cn, organizations=orgs)).decode()


def csr(name: str | None = None, *, request: str | None = None, signer: str = KUBELET_CLIENT,
        usages: list[str] | None = None, **spec) -> dict:
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": name or "csr-" + uuid.uuid4().hex[:8]},
            "spec": {"request": request or request_pem(), "signerName": signer,
                     "usages": usages if usages is not None else ["digital signature", "client auth"],
                     **spec}}


def test_create_records_the_requestor_and_clears_status(cluster, admin):
    jane = cluster.user("jane", "devs", "qa")
    with cluster.client(jane) as c:
        r = c.post(BASE, json={**csr(username="root", uid="0", groups=["system:masters"],
                                     extra={"x": ["y"]}), "status": {"conditions": [
                                         {"type": "Approved", "status": "True"}]}})
    assert r.status_code == 403  # jane may not create CSRs at all
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "jane-bootstrapper"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "system:node-bootstrapper"},
               "subjects": [{"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}]}
    assert admin.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding).status_code == 201
    try:
        with cluster.client(jane) as c:
            obj = csr(username="root", uid="0", groups=["system:masters"], extra={"x": ["y"]})
            obj["status"] = {"conditions": [{"type": "Approved", "status": "True"}]}
            r = c.post(BASE, json=obj)
        assert r.status_code == 201, r.text
        spec = r.json()["spec"]
        assert spec["username"] == "jane"
        assert spec["groups"] == ["devs", "qa", "system:authenticated"]
        assert "uid" not in spec and "extra" not in spec
        assert r.json()["status"] == {}
        # the spec is immutable: an update keeps the stored one
        got = admin.get(f"{BASE}/{obj['metadata']['name']}").json()
        got["spec"]["signerName"] = "example.com/other"
        got["metadata"]["labels"] = {"a": "b"}
        r = admin.put(f"{BASE}/{obj['metadata']['name']}", json=got)
        assert r.status_code == 200, r.text
        assert r.json()["spec"]["signerName"] == KUBELET_CLIENT
        assert r.json()["metadata"]["labels"] == {"a": "b"}
    finally:
        admin.delete("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/jane-bootstrapper")


@pytest.mark.parametrize("change, field, message", [
    ({"request": base64.b64encode(b"not a csr").decode()}, "spec.request",
     "PEM block type must be CERTIFICATE REQUEST"),
    ({"signerName": ""}, "spec.signerName", "Required value"),
    ({"signerName": "nodomain"}, "spec.signerName", "must be a fully qualified domain and path"),
    ({"signerName": "single/x"}, "spec.signerName", "at least two segments"),
    ({"signerName": "kubernetes.io/legacy-unknown"}, "spec.signerName",
     "the legacy signerName is not allowed via this API version"),
    ({"usages": []}, "spec.usages", "Required value"),
    ({"usages": ["client auth", "flying"]}, "spec.usages[1]", 'Unsupported value: "flying"'),
    ({"usages": ["client auth", "client auth"]}, "spec.usages[1]", "Duplicate value"),
    ({"expirationSeconds": 599}, "spec.expirationSeconds", "may not specify a duration less than 600 seconds"),
])
def test_invalid_requests_are_422_with_the_field_and_store_nothing(admin, change, field, message):
    obj = csr()
    obj["spec"].update(change)
    r = admin.post(BASE, json=obj)
    assert r.status_code == 422, r.text
    status = r.json()
    assert status["kind"] == "Status" and status["reason"] == "Invalid"
    causes = status["details"]["causes"]
    assert any(c["field"] == field and message in c["message"] for c in causes), causes
    assert admin.get(f"{BASE}/{obj['metadata']['name']}").status_code == 404


def test_a_request_whose_signature_does_not_verify_is_invalid(admin):
    good = pki.new_csr(pki.new_key("ECDSA-P256"), common_name="x")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    parsed = x509.load_pem_x509_csr(good)
    der = bytearray(parsed.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF  # inside the signature
    bad = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(der)) + \
        b"-----END CERTIFICATE REQUEST-----\n"
    r = admin.post(BASE, json=csr(request=base64.b64encode(bad).decode()))
    assert r.status_code == 422, r.text
    assert r.json()["details"]["causes"][0]["field"] == "spec.request"


def approval(obj: dict, kind: str = "Approved", **cond) -> dict:
    obj = dict(obj)
    obj["status"] = {"conditions": [{"type": kind, "status": "True", "reason": "Test",
                                     "message": "by the test", **cond}]}
    return obj


def test_approval_and_status_subresources_keep_to_their_own_fields(cluster, admin):
    obj = admin.post(BASE, json=csr()).json()
    name = obj["metadata"]["name"]
    # the main resource never changes status
    r = admin.put(f"{BASE}/{name}", json=approval(obj))
    assert r.status_code == 200 and r.json()["status"] == {}
    # /status may not add Approved: the stored (none) is kept... and adding is refused
    r = admin.put(f"{BASE}/{name}/status", json=approval(obj))
    assert r.status_code == 422, r.text
    assert 'updates may not add a condition of type "Approved"' in r.json()["message"]
    # /approval sets the condition, with times filled in; a certificate sent is ignored
    sent = approval(obj)
    sent["status"]["certificate"] = base64.b64encode(b"junk").decode()
    r = admin.put(f"{BASE}/{name}/approval", json=sent)
    assert r.status_code == 200, r.text
    (cond,) = r.json()["status"]["conditions"]
    assert cond["type"] == "Approved" and cond["lastUpdateTime"] and cond["lastTransitionTime"]
    assert "certificate" not in r.json()["status"]
    approved = r.json()
    # Approved and Denied together are refused
    both = approval(approved)
    both["status"]["conditions"] = approved["status"]["conditions"] + [
        {"type": "Denied", "status": "True", "reason": "X"}]
    r = admin.put(f"{BASE}/{name}/approval", json=both)
    assert r.status_code == 422 and "mutually exclusive" in r.json()["message"]
    # /status sets a certificate (PEM CERTIFICATE blocks only); approval is untouched
    r = admin.put(f"{BASE}/{name}/status", json={**approved, "status": {
        **approved["status"], "certificate": base64.b64encode(b"-----BEGIN X-----\nAA==\n-----END X-----\n").decode()}})
    assert r.status_code == 422 and "only CERTIFICATE PEM blocks are allowed" in r.json()["message"]
    cert = base64.b64encode(cluster_cert(cluster)).decode()
    r = admin.put(f"{BASE}/{name}/status", json={**approved, "status": {"conditions": [], "certificate": cert}})
    assert r.status_code == 422 and 'may not remove a condition of type "Approved"' in r.json()["message"]
    # a changed Approved condition sent to /status is replaced by the stored one
    changed = [{**approved["status"]["conditions"][0], "message": "changed"}]
    r = admin.put(f"{BASE}/{name}/status", json={**approved, "status": {"conditions": changed, "certificate": cert}})
    assert r.status_code == 200, r.text
    assert r.json()["status"]["conditions"] == approved["status"]["conditions"]
    assert [c["type"] for c in r.json()["status"]["conditions"]] == ["Approved"]
    issued = r.json()
    # once set, the certificate never changes
    other = cluster_cert(cluster)
    r = admin.put(f"{BASE}/{name}/status", json={**issued, "status": {
        **issued["status"], "certificate": base64.b64encode(other).decode()}})
    assert r.status_code == 422 and "may not modify existing certificate content" in r.json()["message"]
    # a Failed condition may be added through /status, and never removed
    failed = {**issued, "status": {**issued["status"], "conditions": issued["status"]["conditions"] + [
        {"type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": "m"}]}}
    r = admin.put(f"{BASE}/{name}/status", json=failed)
    assert r.status_code == 200, r.text
    r = admin.put(f"{BASE}/{name}/status", json=issued | {"metadata": r.json()["metadata"]})
    assert r.status_code == 422 and 'may not remove a condition of type "Failed"' in r.json()["message"]
    assert admin.get(f"{BASE}/{name}").json()["status"]["conditions"][-1]["type"] == "Failed"


def cluster_cert(cluster) -> bytes:
    creds = cluster.user("someone-" + uuid.uuid4().hex[:4])
    with open(creds.cert, "rb") as f:
        return f.read()


def test_approving_needs_approve_on_the_signer_and_issuing_needs_sign(cluster, admin):
    obj = admin.post(BASE, json=csr(signer="example.com/widgets")).json()
    name = obj["metadata"]["name"]
    bob = cluster.user("bob")
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "bob-csr"},
            "rules": [{"apiGroups": ["certificates.k8s.io"], "verbs": ["get", "update"],
                       "resources": ["certificatesigningrequests/approval", "certificatesigningrequests/status"]}]}
    bind = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "bob-csr"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bob-csr"},
            "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]}
    assert admin.post(f"{rbac}/clusterroles", json=role).status_code == 201
    assert admin.post(f"{rbac}/clusterrolebindings", json=bind).status_code == 201
    try:
        with cluster.client(bob) as c:
            r = c.put(f"{BASE}/{name}/approval", json=approval(obj))
            assert r.status_code == 403, r.text
            assert r.json()["message"] == (
                f'certificatesigningrequests.certificates.k8s.io "{name}" is forbidden: '
                'user not permitted to approve requests with signerName "example.com/widgets"')
            assert admin.get(f"{BASE}/{name}").json()["status"] == {}
            # approve on `<domain>/*` is enough, as Kubernetes' approval admission checks it
            role["rules"].append({"apiGroups": ["certificates.k8s.io"], "verbs": ["approve"],
                                  "resources": ["signers"], "resourceNames": ["example.com/*"]})
            assert admin.put(f"{rbac}/clusterroles/bob-csr", json=role).status_code == 200
            r = c.put(f"{BASE}/{name}/approval", json=approval(obj))
            assert r.status_code == 200, r.text
            approved = r.json()
            issued = {**approved, "status": {**approved["status"],
                                             "certificate": base64.b64encode(cluster_cert(cluster)).decode()}}
            r = c.put(f"{BASE}/{name}/status", json=issued)
            assert r.status_code == 403 and "user not permitted to sign requests" in r.json()["message"]
            role["rules"].append({"apiGroups": ["certificates.k8s.io"], "verbs": ["sign"],
                                  "resources": ["signers"], "resourceNames": ["example.com/widgets"]})
            assert admin.put(f"{rbac}/clusterroles/bob-csr", json=role).status_code == 200
            r = c.put(f"{BASE}/{name}/status", json=issued)
            assert r.status_code == 200, r.text
    finally:
        admin.delete(f"{rbac}/clusterrolebindings/bob-csr")
        admin.delete(f"{rbac}/clusterroles/bob-csr")


def test_a_client_certificate_for_system_masters_cannot_be_requested(admin):
    r = admin.post(BASE, json=csr(signer=CLIENT, request=request_pem("evil", ("system:masters",))))
    assert r.status_code == 403, r.text
    assert r.json()["message"].endswith(
        "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed")


def test_discovery_field_selector_and_table(admin):
    groups = admin.get("/apis/certificates.k8s.io/v1").json()
    names = {r["name"]: r for r in groups["resources"]}
    assert names["certificatesigningrequests"]["shortNames"] == ["csr"]
    assert not names["certificatesigningrequests"]["namespaced"]
    assert names["certificatesigningrequests/approval"]["verbs"] == ["get", "patch", "update"]
    assert "certificatesigningrequests/status" in names
    obj = admin.post(BASE, json=csr(signer="example.com/table", expirationSeconds=3600)).json()
    r = admin.get(BASE, params={"fieldSelector": "spec.signerName=example.com/table"})
    assert [o["metadata"]["name"] for o in r.json()["items"]] == [obj["metadata"]["name"]]
    r = admin.get(f"{BASE}/{obj['metadata']['name']}",
                  headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    table = r.json()
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Age", "SignerName", "Requestor", "RequestedDuration", "Condition"]
    assert table["rows"][0]["cells"][2:] == ["example.com/table", "kubernetes-admin", "60m", "Pending"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs the real kubectl")
def test_kubectl_get_csr_and_certificate_approve_and_deny(cluster, admin):
    kc = cluster.kubeconfig("admin", cluster.admin)
    one = admin.post(BASE, json=csr(signer="example.com/kubectl")).json()["metadata"]["name"]
    two = admin.post(BASE, json=csr(signer="example.com/kubectl")).json()["metadata"]["name"]
    r = cluster.kubectl(kc, "certificate", "approve", one)
    assert r.returncode == 0, r.stderr
    assert f"certificatesigningrequest.certificates.k8s.io/{one} approved" in r.stdout
    r = cluster.kubectl(kc, "certificate", "deny", two)
    assert r.returncode == 0, r.stderr
    r = cluster.kubectl(kc, "get", "csr", one, two)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[one][2:] == ["example.com/kubectl", "kubernetes-admin", "<none>", "Approved"]
    assert rows[two][-1] == "Denied"
    got = admin.get(f"{BASE}/{one}").json()
    cond = got["status"]["conditions"][0]
    assert (cond["type"], cond["reason"]) == ("Approved", "KubectlApprove")
    (entry,) = [m for m in got["metadata"]["managedFields"] if m.get("subresource") == "approval"]
    assert entry["operation"] == "Update" and "f:status" in entry["fieldsV1"]
    assert "f:spec" not in entry["fieldsV1"]
    r = cluster.kubectl(kc, "describe", "csr", one)
    assert r.returncode == 0, r.stderr
    described = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line and not line.startswith(" "))
    assert described["Requesting User"].strip() == "kubernetes-admin"
    assert described["Signer"].strip() == "example.com/kubectl"
    assert described["Status"].strip() == "Approved"
    assert "Common Name:    system:node:n1" in r.stdout
    # approving a denied request is refused, and changes nothing
    r = cluster.kubectl(kc, "certificate", "approve", two)
    assert r.returncode != 0
    assert [c["type"] for c in admin.get(f"{BASE}/{two}").json()["status"]["conditions"]] == ["Denied"]
    r = subprocess.run(["kubectl", "--kubeconfig", kc, "delete", "csr", one, two], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_kubectl_lite_certificate_approve_and_deny(cluster, admin, tmp_path):
    from tests.test_kubectl_lite import KubectlLite
    kl = KubectlLite(cluster.kubeconfig("admin", cluster.admin), str(tmp_path), "default")
    one = admin.post(BASE, json=csr(signer="example.com/lite")).json()["metadata"]["name"]
    two = admin.post(BASE, json=csr(signer="example.com/lite")).json()["metadata"]["name"]
    assert kl.out("certificate", "approve", one) == f"certificatesigningrequest.certificates.k8s.io/{one} approved\n"
    assert kl.out("certificate", "approve", one) == ""  # already approved: nothing to do
    assert kl.out("certificate", "deny", two) == f"certificatesigningrequest.certificates.k8s.io/{two} denied\n"
    cond = admin.get(f"{BASE}/{one}").json()["status"]["conditions"]
    assert [(c["type"], c["reason"]) for c in cond] == [("Approved", "KubectlApprove")]
    err = kl.err("certificate", "approve", two)  # Approved and Denied are exclusive
    assert err.startswith(f"The CertificateSigningRequest \"{two}\" is invalid") and "mutually exclusive" in err
    assert "not found" in kl.err("certificate", "deny", "ghost")
    assert "one or more CSRs must be specified" in kl.err("certificate", "approve")


def test_each_certificate_admission_plugin_can_be_turned_off(tmp_path):
    c = SecureCluster(str(tmp_path), "--disable-admission-plugins",
                      "CertificateSubjectRestriction,CertificateApproval").start()
    try:
        with c.client(c.admin) as admin:
            r = admin.post(BASE, json=csr(signer=CLIENT, request=request_pem("root", ("system:masters",))))
            assert r.status_code == 201, r.text
            obj = admin.post(BASE, json=csr(signer="example.com/any")).json()
        carol = c.user("carol")
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "carol"},
                "rules": [{"apiGroups": ["certificates.k8s.io"], "verbs": ["update"],
                           "resources": ["certificatesigningrequests/approval",
                                         "certificatesigningrequests/status"]}]}
        bind = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "carol"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "carol"},
                "subjects": [{"kind": "User", "name": "carol", "apiGroup": "rbac.authorization.k8s.io"}]}
        with c.client(c.admin) as admin:
            assert admin.post("/apis/rbac.authorization.k8s.io/v1/clusterroles", json=role).status_code == 201
            assert admin.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                              json=bind).status_code == 201
        with c.client(carol) as cc:  # no approve on the signer: CertificateApproval is off
            r = cc.put(f"{BASE}/{obj['metadata']['name']}/approval", json=approval(obj))
            assert r.status_code == 200, r.text
            issued = {**r.json(), "status": {**r.json()["status"],
                                             "certificate": base64.b64encode(cluster_cert(c)).decode()}}
            r = cc.put(f"{BASE}/{obj['metadata']['name']}/status", json=issued)  # CertificateSigning is on
            assert r.status_code == 403 and "user not permitted to sign" in r.json()["message"]
    finally:
        c.stop()
