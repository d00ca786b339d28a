"""Authorization in the request path of a real API server over HTTPS with
--authorization-mode=RBAC: Kubernetes' default roles (aggregated by the real controller
manager's clusterrole-aggregation controller, which itself runs as
system:kube-controller-manager under RBAC), the exact 403 wording, RBAC's escalation
check, and the review kinds kubectl's `auth can-i` and `auth whoami` use, checked
against what the server actually does."""
from __future__ import annotations

import json
import os
import uuid

import pytest

from cluster import pki as cluster_pki
from tests.procs import Component, free_port, wait_for
from tests.secure import SecureCluster

pytestmark = pytest.mark.kubectl


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SecureCluster(str(tmp_path_factory.mktemp("secure")), "--authorization-mode", "RBAC").start()
    kc = os.path.join(c.dir, "controller-manager.conf")
    cluster_pki.write_kubeconfig(kc, c.pki_dir, "controller-manager", cluster_name="secure", server=c.url)
    cm = Component("controller-manager", "--kubeconfig", kc, "--controllers", "clusterrole-aggregation",
                   "--leader-elect=false", "--secure-port", str(free_port())).start()
    try:
        with c.client(c.admin) as admin:
            def aggregated():
                roles = [admin.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{r}").json()
                         for r in ("view", "edit", "admin")]
                return all(r.get("rules") for r in roles)
            wait_for(aggregated, what="view, edit and admin aggregated")
        yield c
    finally:
        cm.stop()
        c.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    with cluster.client(cluster.admin) as c:
        yield c


@pytest.fixture
def ns(admin):
    name = "t-" + uuid.uuid4().hex[:8]
    assert admin.post("/api/v1/namespaces", json={"metadata": {"name": name}}).status_code == 201
    return name


def bind(admin, ns: str, user: str, cluster_role: str) -> None:
    r = admin.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", json={
        "metadata": {"name": f"{user}-{cluster_role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]})
    assert r.status_code == 201, r.text

    def effective():  # the authorizer's index follows the watch cache
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": user, "resourceAttributes": {"namespace": ns, "verb": "get",
                                                                "resource": "pods"}}}
        return admin.post("/apis/authorization.k8s.io/v1/subjectaccessreviews",
                          json=review).json()["status"]["allowed"]
    wait_for(effective, what=f"{user}'s binding to take effect")


def configmap(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}}


def role(name: str, rules: list) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
            "rules": rules}


def test_view_reads_and_cannot_write_with_the_exact_403(cluster, admin, ns):
    assert admin.post(f"/api/v1/namespaces/{ns}/configmaps", json=configmap("seen")).status_code == 201
    bind(admin, ns, "viewer", "view")
    with cluster.client(cluster.user("viewer")) as viewer:
        assert viewer.get(f"/api/v1/namespaces/{ns}/configmaps/seen").json()["data"] == {"a": "1"}
        assert viewer.get(f"/api/v1/namespaces/{ns}/pods").status_code == 200
        r = viewer.post(f"/api/v1/namespaces/{ns}/configmaps", json=configmap("new"))
        assert r.status_code == 403
        assert r.json() == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'configmaps is forbidden: User "viewer" cannot create resource "configmaps" '
                       f'in API group "" in the namespace "{ns}"',
            "reason": "Forbidden", "details": {"kind": "configmaps"}, "code": 403}
        r = viewer.delete(f"/api/v1/namespaces/{ns}/configmaps/seen")
        assert r.json()["message"] == (f'configmaps "seen" is forbidden: User "viewer" cannot delete '
                                       f'resource "configmaps" in API group "" in the namespace "{ns}"')
        r = viewer.get(f"/api/v1/namespaces/{ns}/secrets")  # view does not read Secrets
        assert r.status_code == 403
        r = viewer.get("/api/v1/namespaces/default/configmaps")  # nor other namespaces
        assert r.status_code == 403
        r = viewer.get("/metrics")
        assert r.status_code == 403
        assert r.json()["message"] == 'forbidden: User "viewer" cannot get path "/metrics"'
        assert viewer.get("/apis").status_code == 200  # system:discovery
    assert admin.get(f"/api/v1/namespaces/{ns}/configmaps/new").status_code == 404
    assert admin.get(f"/api/v1/namespaces/{ns}/configmaps/seen").status_code == 200
    assert admin.get("/metrics").status_code == 200


def test_edit_writes_and_cannot_touch_roles(cluster, admin, ns):
    bind(admin, ns, "editor", "edit")
    with cluster.client(cluster.user("editor")) as editor:
        assert editor.post(f"/api/v1/namespaces/{ns}/configmaps", json=configmap("mine")).status_code == 201
        r = editor.patch(f"/api/v1/namespaces/{ns}/configmaps/mine", json={"data": {"a": "2"}},
                         headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200 and r.json()["data"] == {"a": "2"}
        assert editor.get(f"/api/v1/namespaces/{ns}/secrets").status_code == 200
        r = editor.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
                        json=role("r", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]))
        assert r.status_code == 403
        assert r.json()["message"] == (
            f'roles.rbac.authorization.k8s.io is forbidden: User "editor" cannot create resource "roles" '
            f'in API group "rbac.authorization.k8s.io" in the namespace "{ns}"')
        assert editor.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings").status_code == 403
        assert editor.delete(f"/api/v1/namespaces/{ns}/configmaps/mine").status_code == 200
    assert admin.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/r").status_code == 404


def test_escalation_is_refused_and_changes_nothing(cluster, admin, ns):
    bind(admin, ns, "boss", "admin")
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
    with cluster.client(cluster.user("boss")) as boss:
        # what admin holds may be granted
        r = boss.post(f"{rbac}/roles", json=role("readers", [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]))
        assert r.status_code == 201, r.text
        # nodes are not the admin role's to give
        r = boss.post(f"{rbac}/roles", json=role("nodes", [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]))
        assert r.status_code == 403
        message = r.json()["message"]
        assert message.startswith('roles.rbac.authorization.k8s.io "nodes" is forbidden: user "boss" '
                                  '(groups=["system:authenticated"]) is attempting to grant RBAC '
                                  'permissions not currently held:\n')
        assert '{APIGroups:[""], Resources:["nodes"], Verbs:["get"]}' in message
        # nor may a binding hand out cluster-admin
        r = boss.post(f"{rbac}/rolebindings", json={
            "metadata": {"name": "up"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "boss"}]})
        assert r.status_code == 403
        assert r.json()["message"].startswith(
            'rolebindings.rbac.authorization.k8s.io "up" is forbidden: user "boss" '
            '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:')
        # an update that widens a role is an escalation too
        current = boss.get(f"{rbac}/roles/readers").json()
        current["rules"][0]["resources"] = ["*"]
        current["rules"][0]["apiGroups"] = ["*"]
        assert boss.put(f"{rbac}/roles/readers", json=current).status_code == 403
        r = boss.patch(f"{rbac}/roles/readers", json={"rules": [{"apiGroups": [""], "resources": ["secrets"],
                                                                 "verbs": ["escalate-me"]}]},
                       headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 403, r.text
        # a change that grants nothing new passes the check
        r = boss.patch(f"{rbac}/roles/readers", json={"metadata": {"labels": {"team": "a"}}},
                       headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
    assert admin.get(f"{rbac}/roles/nodes").status_code == 404
    assert admin.get(f"{rbac}/rolebindings/up").status_code == 404
    assert admin.get(f"{rbac}/roles/readers").json()["rules"][0]["resources"] == ["pods"]


def _request(client, ns: str, verb: str, resource: str):
    base = f"/api/v1/namespaces/{ns}/{resource}" if resource != "roles" else \
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"
    name = "probe-" + uuid.uuid4().hex[:6]
    if verb == "list":
        return client.get(base)
    if verb == "get":
        return client.get(f"{base}/{name}")
    if verb == "create":
        body = configmap(name) if resource == "configmaps" else \
            role(name, []) if resource == "roles" else \
            {"metadata": {"name": name}, "stringData": {"k": "v"}}
        return client.post(base, json=body)
    if verb == "delete":
        return client.delete(f"{base}/{name}")
    raise AssertionError(verb)


def test_kubectl_auth_can_i_agrees_with_the_server(cluster, admin, ns):
    bind(admin, ns, "cv", "view")
    bind(admin, ns, "ce", "edit")
    cases = [(user, verb, resource) for user in ("cv", "ce", "nobody")
             for verb in ("list", "get", "create", "delete")
             for resource in ("configmaps", "secrets", "roles")]
    answers = {}
    for user, verb, resource in cases:
        kc = cluster.kubeconfig(user, cluster.user(user), namespace=ns)
        out = cluster.kubectl(kc, "auth", "can-i", verb, resource)
        assert out.returncode in (0, 1), out.stderr
        said = out.stdout.strip()
        assert said == ("yes" if out.returncode == 0 else "no"), (user, verb, resource, out.stdout)
        with cluster.client(cluster.user(user)) as c:
            r = _request(c, ns, verb, resource)
        did = r.status_code != 403
        assert (said == "yes") == did, (user, verb, resource, said, r.status_code, r.text)
        answers[(user, verb, resource)] = said
    # the table is not trivially uniform: both answers occur, as Kubernetes' roles say
    assert answers[("cv", "list", "configmaps")] == "yes"
    assert answers[("cv", "create", "configmaps")] == "no"
    assert answers[("cv", "list", "secrets")] == "no"
    assert answers[("ce", "create", "secrets")] == "yes"
    assert answers[("ce", "create", "roles")] == "no"
    assert answers[("nobody", "list", "configmaps")] == "no"


def test_kubectl_auth_can_i_list_and_whoami(cluster, admin, ns):
    bind(admin, ns, "lister", "view")
    kc = cluster.kubeconfig("lister", cluster.user("lister", "team-a"), namespace=ns)
    out = cluster.kubectl(kc, "auth", "can-i", "--list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    pods = next(line for line in lines if line.startswith("pods "))
    assert pods.endswith("[get list watch]")
    assert not any(line.startswith("secrets ") for line in lines)
    # system:public-info-viewer's and system:discovery's paths, in the Non-Resource URLs column
    assert any(line.startswith(" ") and "/version" in line.split()[0] for line in lines), out.stdout
    out = cluster.kubectl(kc, "auth", "whoami", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"]["userInfo"] == {
        "username": "lister", "groups": ["team-a", "system:authenticated"]}


def test_subject_access_review(cluster, admin, ns):
    bind(admin, ns, "sar", "view")
    url = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

    def review(spec):
        return admin.post(url, json={"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                                     "spec": spec})
    r = review({"user": "sar", "resourceAttributes": {"namespace": ns, "verb": "list", "resource": "pods"}})
    assert r.status_code == 201
    assert r.json()["status"]["allowed"] is True
    assert "sar-view" in r.json()["status"]["reason"]
    r = review({"user": "sar", "resourceAttributes": {"namespace": ns, "verb": "create", "resource": "pods"}})
    assert r.json()["status"] == {"allowed": False}
    r = review({"user": "x", "groups": ["system:masters"], "nonResourceAttributes": {"path": "/metrics",
                                                                                   "verb": "get"}})
    assert r.json()["status"]["allowed"] is True
    r = review({"resourceAttributes": {"verb": "get", "resource": "pods"}})
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "spec.user"
    r = review({"user": "sar", "resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/"}})
    assert r.status_code == 422
    # only create: no list, no get
    assert admin.get(url).status_code == 405
    # LocalSubjectAccessReview: the same question, about its own namespace only
    local = f"/apis/authorization.k8s.io/v1/namespaces/{ns}/localsubjectaccessreviews"
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
            "spec": {"user": "sar", "resourceAttributes": {"verb": "list", "resource": "pods"}}}
    r = admin.post(local, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["status"]["allowed"] is True
    assert r.json()["spec"]["resourceAttributes"]["namespace"] == ns
    body["spec"]["resourceAttributes"]["namespace"] = "default"
    r = admin.post(local, json=body)
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "spec.resourceAttributes.namespace"
    # and a user who may not create reviews may not ask about others
    with cluster.client(cluster.user("sar")) as c:
        r = c.post(url, json={"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                              "spec": {"user": "sar", "nonResourceAttributes": {"path": "/", "verb": "get"}}})
        assert r.status_code == 403


def test_impersonation_needs_the_impersonate_verb(cluster, admin, ns):
    bind(admin, ns, "imp-viewer", "view")
    kc = cluster.kubeconfig("admin", cluster.admin, namespace=ns)
    out = cluster.kubectl(kc, "auth", "whoami", "--as", "imp-viewer", "--as-group", "g1",
                          "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
    assert out.returncode == 0, out.stderr
    assert out.stdout == 'imp-viewer ["g1","system:authenticated"]'
    out = cluster.kubectl(kc, "create", "configmap", "as-viewer", "--as", "imp-viewer")
    assert out.returncode == 1
    assert out.stderr.strip() == (f'error: failed to create configmap: configmaps is forbidden: User "imp-viewer" '
                                  f'cannot create resource "configmaps" in API group "" in the namespace "{ns}"')
    with cluster.client(cluster.user("imp-viewer")) as c:
        r = c.get(f"/api/v1/namespaces/{ns}/secrets", headers={"Impersonate-User": "kubernetes-admin"})
        assert r.status_code == 403
        assert r.json()["message"] == ('users "kubernetes-admin" is forbidden: User "imp-viewer" cannot '
                                       'impersonate resource "users" in API group "" at the cluster scope')
        r = c.get(f"/api/v1/namespaces/{ns}/pods", headers={"Impersonate-Group": "system:masters"})
        assert r.status_code == 400


def test_exec_is_authorized_as_create_on_pods_exec(cluster, admin, ns):
    # The WebSocket upgrade is refused before it reaches the pod, with kube-apiserver's
    # verb for it (create, since the AuthorizePodWebsocketUpgradeCreatePermission gate).
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "target"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    assert admin.post(f"/api/v1/namespaces/{ns}/pods", json=pod).status_code == 201
    bind(admin, ns, "exec-viewer", "view")
    kc = cluster.kubeconfig("exec-viewer", cluster.user("exec-viewer"), namespace=ns)
    out = cluster.kubectl(kc, "exec", "target", "--", "true")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f'Error from server (Forbidden): pods "target" is forbidden: User "exec-viewer" cannot create '
        f'resource "pods/exec" in API group "" in the namespace "{ns}"')


def test_port_forward_is_authorized_as_create_on_pods_portforward(cluster, admin, ns):
    # As exec: kubectl's WebSocket upgrade is checked as `create` on pods/portforward.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "target"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]},
           "status": {"phase": "Running"}}
    assert admin.post(f"/api/v1/namespaces/{ns}/pods", json=pod).status_code == 201
    assert admin.patch(f"/api/v1/namespaces/{ns}/pods/target/status", json={"status": {"phase": "Running"}},
                       headers={"Content-Type": "application/merge-patch+json"}).status_code == 200
    bind(admin, ns, "pf-viewer", "view")
    kc = cluster.kubeconfig("pf-viewer", cluster.user("pf-viewer"), namespace=ns)
    out = cluster.kubectl(kc, "port-forward", "pod/target", ":80")
    assert out.returncode == 1
    assert f'User "pf-viewer" cannot create resource "pods/portforward" in API group "" in the namespace ' \
           f'"{ns}"' in out.stderr, out.stderr
