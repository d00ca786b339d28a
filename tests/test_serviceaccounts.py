"""ServiceAccounts as pods use them: token issue and verification (apiserver/auth/
serviceaccount.py), the TokenRequest subresource through the API and the real
`kubectl create token`, the ServiceAccount admission plugin's token volume, and the
controllers that make every namespace's `default` ServiceAccount and `kube-root-ca.crt`.

The authenticator's tests run it on real tokens against objects held in a dict (its
`get` seam, which the server fills from its watch cache); the API tests run a real API
server started with kube-apiserver's --service-account-* flags.
"""
from __future__ import annotations

import base64
import copy
import json
import threading
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from apiserver.auth.authn import AuthenticationError
from apiserver.auth.serviceaccount import (
    KeyFileError, ServiceAccountTokenAuthenticator, TokenIssuer, from_flags, key_id, token_request)
from apiserver.strategies.pods import token_volume_source
from client.rest import Client
from controller_manager.controllers import REGISTRY
from controller_manager.controllers.rootcacertpublisher import (
    CONFIGMAP_NAME, DESCRIPTION, DESCRIPTION_ANNOTATION, RootCACertPublisher, RootCACertPublisherOptions)
from controller_manager.controllers.serviceaccount import ServiceAccountController
from controller_manager.testing import RecordingClient, Running, eventually
from machinery import errors
from tests.procs import APIServer, Component, Etcd, free_port, wait_for
from tests.test_kubectl import KUBECTL, Kubectl
from tests.util import pod

ISSUER = "https://kubernetes.default.svc.cluster.local"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY, OTHER_KEY = rsa_key(), rsa_key()


def obj(kind: str, name: str, namespace: str = "team", **fields) -> dict:
    return {"kind": kind, "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
            **fields}


class World:
    """Objects by (resource, namespace, name): what the authenticator's `get` reads."""

    def __init__(self, *objs: tuple[str, dict]):
        self.objs = {(r, o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for r, o in objs}

    async def get(self, resource: str, namespace: str, name: str) -> dict | None:
        return self.objs.get((resource, namespace, name))


class Clock:
    def __init__(self):
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def setup(*, audiences=(ISSUER,)):
    sa = obj("ServiceAccount", "builder")
    p = obj("Pod", "web", spec={"serviceAccountName": "builder", "nodeName": "n1"})
    node = obj("Node", "n1", namespace="")
    world = World(("serviceaccounts", sa), ("pods", p), ("nodes", node))
    clock = Clock()
    issuer = TokenIssuer(KEY, ISSUER, clock=clock)
    authn = ServiceAccountTokenAuthenticator([KEY.public_key()], issuers=[ISSUER], audiences=list(audiences),
                                             get=world.get, clock=clock)
    return world, clock, issuer, authn, sa, p, node


def token(issuer, sa, *, clock, audiences=(ISSUER,), seconds=3600, **bound) -> str:
    return issuer.sign(issuer.claims(sa, audiences=audiences, expiration_seconds=seconds, now=clock(), **bound))


# -- issuing and verifying -----------------------------------------------------------------

async def test_a_pod_bound_token_has_kubernetes_claims_and_authenticates_as_its_service_account():
    world, clock, issuer, authn, sa, p, node = setup()
    tok = token(issuer, sa, clock=clock, pod=p, node=node)
    header = jwt.get_unverified_header(tok)
    assert header["alg"] == "RS256" and header["kid"] == key_id(KEY.public_key())
    claims = jwt.decode(tok, KEY.public_key(), algorithms=["RS256"], audience=ISSUER)
    now = int(clock())
    assert claims["kubernetes.io"] == {
        "namespace": "team",
        "serviceaccount": {"name": "builder", "uid": sa["metadata"]["uid"]},
        "pod": {"name": "web", "uid": p["metadata"]["uid"]},
        "node": {"name": "n1", "uid": node["metadata"]["uid"]}}
    assert (claims["sub"], claims["iss"], claims["aud"]) == ("system:serviceaccount:team:builder", ISSUER, [ISSUER])
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (now, now, now + 3600)
    assert uuid.UUID(claims["jti"])

    user = await authn.authenticate_token(tok)
    assert user.name == "system:serviceaccount:team:builder"
    assert user.uid == sa["metadata"]["uid"]
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:team")
    assert user.extra == {
        "authentication.kubernetes.io/pod-name": ("web",),
        "authentication.kubernetes.io/pod-uid": (p["metadata"]["uid"],),
        "authentication.kubernetes.io/node-name": ("n1",),
        "authentication.kubernetes.io/node-uid": (node["metadata"]["uid"],),
        "authentication.kubernetes.io/credential-id": (f"JTI={claims['jti']}",)}


async def test_tokens_that_are_not_this_issuers_are_not_its_business():
    world, clock, issuer, authn, sa, p, node = setup()
    assert await authn.authenticate_token("abcdef.0123456789abcdef") is None  # a bootstrap token
    assert await authn.authenticate_token("not-a-jwt") is None
    other = TokenIssuer(KEY, "https://elsewhere.example", clock=clock)
    assert await authn.authenticate_token(token(other, sa, clock=clock)) is None


@pytest.mark.parametrize("case, why", [
    ("expired", "service account token has expired"),
    ("not yet valid", "service account token is not valid yet"),
    ("wrong audience", "token audiences ['https://vault.example'] is invalid"),
    ("another key", "signature is invalid"),
    ("bound pod deleted", "service account token has been invalidated"),
    ("bound pod recreated", "pod UID"),
    ("bound pod deleting", "service account token has been invalidated"),
    ("service account deleted", 'serviceaccounts "builder" not found'),
    ("service account recreated", "service account UID"),
    ("bound secret deleted", "service account token has been invalidated"),
])
async def test_invalid_tokens_are_refused(case, why):
    world, clock, issuer, authn, sa, p, node = setup()
    secret = obj("Secret", "s")
    world.objs[("secrets", "team", "s")] = secret
    bound = {"secret": secret} if case == "bound secret deleted" else {"pod": p}
    tok = token(issuer, sa, clock=clock, **bound)
    assert (await authn.authenticate_token(tok)).name == "system:serviceaccount:team:builder"
    if case == "expired":
        clock.t += 3600 + 61  # past exp and go-jose's minute of leeway
    elif case == "not yet valid":
        clock.t -= 120
    elif case == "wrong audience":
        tok = token(issuer, sa, clock=clock, audiences=["https://vault.example"], pod=p)
    elif case == "another key":
        tok = token(TokenIssuer(OTHER_KEY, ISSUER, clock=clock), sa, clock=clock)
    elif case == "bound pod deleted":
        del world.objs[("pods", "team", "web")]
    elif case == "bound pod recreated":
        world.objs[("pods", "team", "web")] = obj("Pod", "web", spec={"serviceAccountName": "builder"})
    elif case == "bound pod deleting":
        marked = copy.deepcopy(p)
        marked["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock() - 120))
        world.objs[("pods", "team", "web")] = marked
    elif case == "service account deleted":
        del world.objs[("serviceaccounts", "team", "builder")]
    elif case == "service account recreated":
        world.objs[("serviceaccounts", "team", "builder")] = obj("ServiceAccount", "builder")
    elif case == "bound secret deleted":
        del world.objs[("secrets", "team", "s")]
    with pytest.raises(AuthenticationError, match=why.replace("[", r"\[").replace("]", r"\]")):
        await authn.authenticate_token(tok)


async def test_a_token_is_accepted_for_any_of_the_api_audiences_and_by_any_verification_key():
    world, clock, issuer, authn, sa, p, node = setup(audiences=(ISSUER, "api"))
    authn.keys = [OTHER_KEY.public_key(), KEY.public_key()]  # a key rotation in progress
    assert await authn.authenticate_token(token(issuer, sa, clock=clock, audiences=["api"]))


def write_key(tmp_path, name: str, key, *, public=False) -> str:
    path = tmp_path / name
    if public:
        path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(path)


def test_flags_are_checked_as_kube_apiserver_checks_them(tmp_path):
    world = World()
    signing = write_key(tmp_path, "sa.key", KEY)
    pub = write_key(tmp_path, "sa.pub", KEY, public=True)
    other = write_key(tmp_path, "other.pub", OTHER_KEY, public=True)
    got = from_flags(signing_key_file=signing, key_files=[other, pub], issuers=["https://a", "https://b"],
                     api_audiences=[], get=world.get)
    assert got.issuer.issuer == "https://a" and got.audiences == ["https://a", "https://b"]
    assert len(got.authenticator.keys) == 2
    with pytest.raises(ValueError, match="signing key's public key is not in --service-account-key-file"):
        from_flags(signing_key_file=signing, key_files=[other], issuers=[], api_audiences=[], get=world.get)
    ec_key = write_key(tmp_path, "ec.key", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(KeyFileError, match="only RSA keys"):
        from_flags(signing_key_file=ec_key, key_files=[], issuers=[], api_audiences=[], get=world.get)
    with pytest.raises(KeyFileError, match="failed to read"):
        from_flags(signing_key_file=str(tmp_path / "missing"), key_files=[], issuers=[], api_audiences=[],
                   get=world.get)
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(KeyFileError, match="holds no RSA public or private key"):
        from_flags(signing_key_file=signing, key_files=[str(tmp_path / "junk.pub")], issuers=[],
                   api_audiences=[], get=world.get)


async def test_token_request_is_checked_before_a_token_is_made():
    world, clock, issuer, authn, sa, p, node = setup()
    other = obj("Pod", "other", spec={"serviceAccountName": "default"})
    world.objs[("pods", "team", "other")] = other

    async def request(spec, sa_name="builder", **md):
        return await token_request(issuer, world.get, "team", sa_name,
                                   {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                    "metadata": md, "spec": spec}, audiences=[ISSUER])

    with pytest.raises(errors.Invalid, match="spec.expirationSeconds: Invalid value: 599: may not specify a "
                                             "duration less than 10 minutes"):
        await request({"expirationSeconds": 599})
    with pytest.raises(errors.Invalid, match="larger than 2\\^32 seconds"):
        await request({"expirationSeconds": 2 ** 32 + 1})
    with pytest.raises(errors.NotFound, match='serviceaccounts "nobody" not found'):
        await request({}, sa_name="nobody")
    with pytest.raises(errors.BadRequest, match='cannot bind token for serviceaccount "builder" to pod running '
                                                'with different serviceaccount name'):
        await request({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "other"}})
    with pytest.raises(errors.Conflict, match="does not match the UID in record"):
        await request({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "u-old"}})
    with pytest.raises(errors.BadRequest, match="cannot bind token to object of type apps/v1, Kind=Deployment"):
        await request({"boundObjectRef": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "web"}})
    with pytest.raises(errors.NotFound, match='pods "gone" not found'):
        await request({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "gone"}})
    with pytest.raises(errors.Invalid, match="must match the service account name"):
        await request({}, name="someone")

    warnings: list[str] = []
    out = await token_request(issuer, world.get, "team", "builder", {"spec": {"expirationSeconds": 7200}},
                              audiences=[ISSUER], max_expiration=3600, warnings=warnings)
    assert out["spec"]["expirationSeconds"] == 3600
    assert warnings == ["requested expiration of 7200 seconds shortened to 3600 seconds"]


# -- through a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def sa_server(etcd, tmp_path_factory):
    """An API server started with its own signing key, issuer and audiences."""
    d = tmp_path_factory.mktemp("sa-keys")
    s = APIServer(etcd.url, "--service-account-signing-key-file", write_key(d, "sa.key", KEY),
                  "--service-account-key-file", write_key(d, "sa.pub", KEY, public=True),
                  "--service-account-issuer", ISSUER, "--service-account-issuer", "https://old.example",
                  "--api-audiences", f"{ISSUER},api").start()
    yield s
    s.stop()


@pytest.fixture
def api(sa_server):
    with sa_server.client(timeout=30) as c:
        yield c


@pytest.fixture
def bearer(sa_server):
    """A client of sa_server without a client certificate: a certificate is looked at
    before a token, so the tokens' tests send theirs from here."""
    with sa_server.client(user=None, timeout=30) as c:
        yield c


@pytest.fixture
def space(api):
    name = "sa-" + uuid.uuid4().hex[:10]
    assert api.post("/api/v1/namespaces", json={"metadata": {"name": name}}).status_code == 201
    return name


def create(api, path: str, body: dict) -> dict:
    r = api.post(path, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_token_request_through_the_api(api, space):
    sa = create(api, f"/api/v1/namespaces/{space}/serviceaccounts", {"metadata": {"name": "builder"}})
    p = create(api, f"/api/v1/namespaces/{space}/pods", pod("web", serviceAccountName="builder"))
    before = int(time.time())
    r = api.post(f"/api/v1/namespaces/{space}/serviceaccounts/builder/token",
                 json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                       "spec": {"expirationSeconds": 1200,
                                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web"}}})
    assert r.status_code == 201, r.text
    out = r.json()
    assert (out["kind"], out["apiVersion"]) == ("TokenRequest", "authentication.k8s.io/v1")
    assert out["metadata"]["name"] == "builder" and out["metadata"]["namespace"] == space
    assert out["spec"]["audiences"] == [ISSUER, "api"]  # --api-audiences
    claims = jwt.decode(out["status"]["token"], KEY.public_key(), algorithms=["RS256"], audience="api")
    assert claims["iss"] == ISSUER
    assert claims["kubernetes.io"]["pod"] == {"name": "web", "uid": p["metadata"]["uid"]}
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "builder", "uid": sa["metadata"]["uid"]}
    expires = time.mktime(time.strptime(out["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + 1200 <= expires == claims["exp"] <= int(time.time()) + 1200

    # Bad requests are Statuses, and make nothing.
    r = api.post(f"/api/v1/namespaces/{space}/serviceaccounts/builder/token", json={"spec": {"expirationSeconds": 60}})
    assert r.status_code == 422 and r.json()["reason"] == "Invalid", r.text
    assert "may not specify a duration less than 10 minutes" in r.json()["message"]
    r = api.post(f"/api/v1/namespaces/{space}/serviceaccounts/nobody/token", json={})
    assert r.status_code == 404 and r.json()["message"] == 'serviceaccounts "nobody" not found'
    r = api.get(f"/api/v1/namespaces/{space}/serviceaccounts/builder/token")
    assert r.status_code == 405
    r = api.post(f"/api/v1/namespaces/{space}/serviceaccounts/builder/token", content=b"[1",
                 headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_token_subresource_is_discoverable(api):
    resources = {r["name"]: r for r in api.get("/api/v1").json()["resources"]}
    assert resources["serviceaccounts/token"] == {
        "name": "serviceaccounts/token", "singularName": "", "namespaced": True,
        "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}


@pytest.fixture
def kubectl_sa(sa_server, space, tmp_path):
    path = sa_server.write_kubeconfig(tmp_path / "kubeconfig", namespace=space)
    (tmp_path / "cache").mkdir()
    return Kubectl(path, str(tmp_path / "cache"), str(tmp_path))


def unverified(tok: str) -> dict:
    payload = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.mark.kubectl
@pytest.mark.skipif(KUBECTL is None, reason="needs kubectl")
def test_kubectl_create_token(kubectl_sa, api, space):
    create(api, f"/api/v1/namespaces/{space}/serviceaccounts", {"metadata": {"name": "builder"}})
    p = create(api, f"/api/v1/namespaces/{space}/pods", pod("web", serviceAccountName="builder"))

    r = kubectl_sa("create", "token", "builder", "-v=8")
    assert "application/vnd.kubernetes.protobuf" in r.stderr  # kubectl's typed client sends protobuf
    claims = unverified(r.stdout.strip())
    assert claims["sub"] == f"system:serviceaccount:{space}:builder"
    assert claims["exp"] - claims["iat"] == 3600  # the default

    claims = unverified(kubectl_sa.out("create", "token", "builder", "--duration", "20m", "--audience", "vault",
                                       "--bound-object-kind", "Pod", "--bound-object-name", "web").strip())
    assert claims["exp"] - claims["iat"] == 1200 and claims["aud"] == ["vault"]
    assert claims["kubernetes.io"]["pod"] == {"name": "web", "uid": p["metadata"]["uid"]}

    r = kubectl_sa("create", "token", "builder", "--duration", "1m", ok=False)
    assert "may not specify a duration less than 10 minutes" in r.stderr
    r = kubectl_sa("create", "token", "nobody", ok=False)
    assert 'serviceaccounts "nobody" not found' in r.stderr
    r = kubectl_sa("create", "token", "builder", "--bound-object-kind", "Pod", "--bound-object-name", "web",
                   "--bound-object-uid", "0d4691ed-659b-4935-a832-355f77ee47cc", ok=False)
    assert "does not match the UID in record" in r.stderr


# -- admission: the token volume ------------------------------------------------------------

def test_admission_adds_the_token_volume_exactly_as_upstream(api, space):
    create(api, f"/api/v1/namespaces/{space}/serviceaccounts", {"metadata": {"name": "default"}})
    body = pod("web")
    body["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    body["spec"]["containers"].append({"name": "own", "image": "busybox", "volumeMounts": [
        {"name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]})
    body["spec"]["volumes"] = [{"name": "mine", "emptyDir": {}}]
    got = create(api, f"/api/v1/namespaces/{space}/pods", body)["spec"]
    assert got["serviceAccountName"] == "default"
    vol = got["volumes"][-1]
    assert vol["name"].startswith("kube-api-access-") and len(vol["name"]) == len("kube-api-access-") + 5
    # What kube-apiserver stores for a pod (kubectl get pod -o json on a real cluster).
    assert vol["projected"] == {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                        "path": "namespace"}]}}]}
    mount = {"name": vol["name"], "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    assert got["initContainers"][0]["volumeMounts"] == [mount]
    assert got["containers"][0]["volumeMounts"] == [mount]
    assert got["containers"][1]["volumeMounts"] == body["spec"]["containers"][1]["volumeMounts"]
    assert [v["name"] for v in got["volumes"]] == ["mine", vol["name"]]


@pytest.mark.parametrize("pod_setting, sa_setting, mounted", [
    (None, None, True), (False, None, False), (None, False, False), (True, False, True), (False, True, False)])
def test_automount_service_account_token_decides(api, space, pod_setting, sa_setting, mounted):
    sa = {"metadata": {"name": "builder"}}
    if sa_setting is not None:
        sa["automountServiceAccountToken"] = sa_setting
    create(api, f"/api/v1/namespaces/{space}/serviceaccounts", sa)
    spec = {"serviceAccountName": "builder"}
    if pod_setting is not None:
        spec["automountServiceAccountToken"] = pod_setting
    got = create(api, f"/api/v1/namespaces/{space}/pods", pod("web", **spec))["spec"]
    assert bool(got.get("volumes")) is mounted
    assert bool(got["containers"][0].get("volumeMounts")) is mounted


def test_a_pod_whose_service_account_is_missing_is_refused_as_upstream_refuses_it(api, space):
    r = api.post(f"/api/v1/namespaces/{space}/pods", json=pod("web", serviceAccountName="robot"))
    assert r.status_code == 403, r.text
    assert r.json()["reason"] == "Forbidden"
    assert r.json()["message"] == (f'pods "web" is forbidden: error looking up service account {space}/robot: '
                                   'serviceaccount "robot" not found')
    assert r.json()["details"] == {"name": "web", "kind": "pods"}
    # `default` is waited for a moment (the controller makes it), then refused the same way.
    r = api.post(f"/api/v1/namespaces/{space}/pods", json=pod("web"))
    assert r.status_code == 403 and r.json()["message"].endswith(
        f'error looking up service account {space}/default: serviceaccount "default" not found'), r.text
    r = api.post(f"/api/v1/namespaces/{space}/pods", json={**pod("x"), "metadata": {"generateName": "gen-"}})
    assert r.status_code == 403 and r.json()["message"].startswith('pods "gen-" is forbidden: '), r.text
    assert api.get(f"/api/v1/namespaces/{space}/pods").json()["items"] == []  # nothing stored
    # Made a moment after the pod asks for it, `default` is found: the pod is admitted.
    made = threading.Timer(0.3, lambda: create(api, f"/api/v1/namespaces/{space}/serviceaccounts",
                                               {"metadata": {"name": "default"}}))
    made.start()
    try:
        got = create(api, f"/api/v1/namespaces/{space}/pods", pod("web"))["spec"]
    finally:
        made.join()
    assert got["serviceAccountName"] == "default"
    assert got["volumes"][0]["name"].startswith("kube-api-access-")


def test_the_volume_source_is_upstreams():
    assert token_volume_source()["sources"][0] == {"serviceAccountToken": {"expirationSeconds": 3607,
                                                                           "path": "token"}}


# -- the controllers -------------------------------------------------------------------------

def ns_obj(name, *, deleting=False):
    md = {"name": name}
    if deleting:
        md["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": md, "status": {"phase": "Active"}}


def publisher(*objs, root_ca="CA"):
    client = RecordingClient()
    ctrl = RootCACertPublisher(client, client, options=RootCACertPublisherOptions(root_ca=root_ca))
    client.seed(*objs)
    return client, ctrl


def ca_configmap(namespace, data=None, annotations=None):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP_NAME, "namespace": namespace,
                         "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION} if annotations is None else annotations},
            "data": {"ca.crt": "CA"} if data is None else data}


def test_controllers_are_named_as_kube_controller_manager_names_them():
    assert REGISTRY["serviceaccount"] is ServiceAccountController
    assert REGISTRY["root-ca-cert-publisher"] is RootCACertPublisher


async def test_publisher_creates_the_configmap_in_a_new_namespace():
    client, ctrl = publisher(ns_obj("team"))
    await ctrl.reconcile("team")
    assert client.verbs() == [("create", "configmaps", f"team/{CONFIGMAP_NAME}")]
    made = await client.get("configmaps", CONFIGMAP_NAME, namespace="team")
    assert made["data"] == {"ca.crt": "CA"}
    assert made["metadata"]["annotations"] == {DESCRIPTION_ANNOTATION: DESCRIPTION}


async def test_publisher_does_nothing_when_in_sync_or_namespace_terminating():
    client, ctrl = publisher(ns_obj("team"), ca_configmap("team"), ns_obj("gone", deleting=True))
    await ctrl.reconcile("team")
    await ctrl.reconcile("gone")
    await ctrl.reconcile("missing")
    assert client.actions == []


@pytest.mark.parametrize("cm", [ca_configmap("team", data={"ca.crt": "OLD"}),
                                ca_configmap("team", annotations={"keep": "me"})])
async def test_publisher_restores_drifted_data_and_annotation(cm):
    client, ctrl = publisher(ns_obj("team"), cm)
    await ctrl.reconcile("team")
    assert client.verbs() == [("update", "configmaps", f"team/{CONFIGMAP_NAME}")]
    got = await client.get("configmaps", CONFIGMAP_NAME, namespace="team")
    assert got["data"] == {"ca.crt": "CA"}
    assert got["metadata"]["annotations"][DESCRIPTION_ANNOTATION] == DESCRIPTION
    assert got["metadata"]["annotations"].get("keep") == cm["metadata"]["annotations"].get("keep")


async def test_publisher_treats_a_terminating_namespace_as_done():
    client, ctrl = publisher(ns_obj("team"))
    client.fail[("create", "configmaps")] = errors.Forbidden(
        "configmaps is forbidden: unable to create new content in namespace team because it is being terminated")
    await ctrl.reconcile("team")


@pytest.fixture
def admitting_apiserver():
    """An etcd and API server of the test's own with the ServiceAccount admission on
    (private_apiserver has it off): the controllers under test act on every namespace."""
    e = Etcd().start()
    s = APIServer(e.url).start()
    yield s
    s.stop()
    e.stop()


async def test_controllers_make_default_service_accounts_and_ca_configmaps_in_new_namespaces(admitting_apiserver):
    async with Client(admitting_apiserver.connection()) as client:
        name = "ca-" + uuid.uuid4().hex[:8]
        async with Running(client, (ServiceAccountController, {}), (RootCACertPublisher, {"root_ca": "PEM"})):
            await eventually(lambda: client.get("configmaps", CONFIGMAP_NAME, namespace="kube-system"),
                             what="kube-root-ca.crt in kube-system")
            await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            cm = await eventually(lambda: client.get("configmaps", CONFIGMAP_NAME, namespace=name),
                                  what="kube-root-ca.crt in a new namespace")
            assert cm["data"] == {"ca.crt": "PEM"}
            await eventually(lambda: client.get("serviceaccounts", "default", namespace=name),
                             what="default SA in a new namespace")
            await client.delete("configmaps", CONFIGMAP_NAME, namespace=name)

            async def recreated():
                got = await client.get("configmaps", CONFIGMAP_NAME, namespace=name)
                return got["metadata"]["uid"] != cm["metadata"]["uid"]
            await eventually(recreated, what="kube-root-ca.crt recreated")

            # The pod then gets its token volume, as on a real cluster.
            made = await client.create(pod("web"), namespace=name)
            assert made["spec"]["volumes"][0]["name"].startswith("kube-api-access-")


def test_controller_manager_refuses_a_bad_root_ca_file(tmp_path, kubeconfig):
    from controller_manager import main
    (tmp_path / "ca.crt").write_text("not a certificate")
    args = main.parser().parse_args(["--kubeconfig", kubeconfig, "--root-ca-file", str(tmp_path / "ca.crt")])
    with pytest.raises(main.UsageError, match="error parsing root-ca-file at"):
        main.build(args)
    args = main.parser().parse_args(["--kubeconfig", kubeconfig, "--root-ca-file", str(tmp_path / "none")])
    with pytest.raises(main.UsageError, match="error reading root-ca-file at .*No such file"):
        main.build(args)


def test_apiserver_refuses_an_unusable_signing_key(etcd, tmp_path):
    (tmp_path / "sa.key").write_text("junk")
    s = Component("apiserver", "--plain-http", "--etcd-servers", etcd.url, "--bind-address", "127.0.0.1",
                  "--port", str(free_port()), "--service-account-signing-key-file", str(tmp_path / "sa.key")).start()
    try:
        wait_for(lambda: s.proc.poll() is not None, what="apiserver to exit")
    finally:
        s.stop()
    assert s.proc.returncode == 1
    assert "service account signing key file" in s.log() and "Traceback" not in s.log()


def test_disabling_the_service_account_admission_admits_pods_as_they_are(private_apiserver):
    # private_apiserver runs with --disable-admission-plugins ServiceAccount (conftest.py)
    with private_apiserver.client() as c:
        name = "off-" + uuid.uuid4().hex[:8]
        assert c.post("/api/v1/namespaces", json={"metadata": {"name": name}}).status_code == 201
        got = create(c, f"/api/v1/namespaces/{name}/pods", pod("web", serviceAccountName="nobody"))["spec"]
    assert got["serviceAccountName"] == "nobody" and "volumes" not in got


def test_apiserver_refuses_an_unknown_admission_plugin(etcd):
    s = Component("apiserver", "--plain-http", "--etcd-servers", etcd.url, "--bind-address", "127.0.0.1",
                  "--port", str(free_port()), "--disable-admission-plugins", "ServiceAccount,Nope").start()
    try:
        wait_for(lambda: s.proc.poll() is not None, what="apiserver to exit")
    finally:
        s.stop()
    assert s.proc.returncode == 1
    assert 'error: disable-admission-plugins plugin "Nope" is unknown' in s.log() and "Traceback" not in s.log()


# -- the authenticator in the server's chain -------------------------------------------------

def whoami(api, tok: str) -> httpx.Response:
    return api.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", headers={"Authorization": f"Bearer {tok}"},
                    json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})


def test_the_server_authenticates_its_tokens_and_refuses_bad_ones_with_401(api, bearer, space):
    sa = create(api, f"/api/v1/namespaces/{space}/serviceaccounts", {"metadata": {"name": "builder"}})
    p = create(api, f"/api/v1/namespaces/{space}/pods", pod("web", serviceAccountName="builder"))
    path = f"/api/v1/namespaces/{space}/serviceaccounts/builder/token"
    bound = api.post(path, json={"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web"}}})
    tok = bound.json()["status"]["token"]

    r = whoami(bearer, tok)
    assert r.status_code == 201, r.text
    info = r.json()["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{space}:builder"
    assert info["uid"] == sa["metadata"]["uid"]
    assert info["groups"] == ["system:serviceaccounts", f"system:serviceaccounts:{space}", "system:authenticated"]
    assert info["extra"]["authentication.kubernetes.io/pod-name"] == ["web"]
    assert info["extra"]["authentication.kubernetes.io/pod-uid"] == [p["metadata"]["uid"]]

    def signed(claims_change: dict, key=KEY) -> str:
        claims = jwt.decode(tok, KEY.public_key(), algorithms=["RS256"], audience=ISSUER)
        claims.update(claims_change)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": key_id(key.public_key())})

    now = int(time.time())
    for bad in (signed({"exp": now - 120, "iat": now - 4000, "nbf": now - 4000}),  # expired
                signed({"aud": ["https://vault.example"]}),                         # another audience
                signed({}, key=OTHER_KEY),                                          # another key
                tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")):       # tampered
        r = whoami(bearer, bad)
        assert r.status_code == 401 and r.json()["reason"] == "Unauthorized", r.text
    # Another issuer's token is nobody's here: over TLS a 401 ("invalid bearer token").
    r = whoami(bearer, signed({"iss": "https://elsewhere.example"}))
    assert r.status_code == 401 and r.json()["reason"] == "Unauthorized", r.text
    # The second --service-account-issuer is accepted too (an issuer being retired).
    assert whoami(bearer, signed({"iss": "https://old.example"})).status_code == 201

    # A token of a deleted pod is refused, once the server has seen the deletion.
    assert api.delete(f"/api/v1/namespaces/{space}/pods/web", params={"gracePeriodSeconds": "0"}).status_code == 200
    wait_for(lambda: whoami(bearer, tok).status_code == 401, timeout=30, what="the deleted pod's token refused")


def test_a_recreated_service_accounts_tokens_are_refused(api, bearer, space):
    create(api, f"/api/v1/namespaces/{space}/serviceaccounts", {"metadata": {"name": "builder"}})
    tok = api.post(f"/api/v1/namespaces/{space}/serviceaccounts/builder/token", json={}).json()["status"]["token"]
    assert whoami(bearer, tok).status_code == 201
    assert api.delete(f"/api/v1/namespaces/{space}/serviceaccounts/builder").status_code == 200
    create(api, f"/api/v1/namespaces/{space}/serviceaccounts", {"metadata": {"name": "builder"}})
    wait_for(lambda: whoami(bearer, tok).status_code == 401, timeout=30, what="the old ServiceAccount's token refused")
    fresh = api.post(f"/api/v1/namespaces/{space}/serviceaccounts/builder/token", json={}).json()["status"]["token"]
    assert whoami(bearer, fresh).status_code == 201


# -- over TLS, with RBAC -------------------------------------------------------------------

@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """An HTTPS API server with RBAC and the cluster PKI's sa.key / sa.pub."""
    from tests.secure import SecureCluster
    d = str(tmp_path_factory.mktemp("sa-secure"))
    c = SecureCluster(d, "--authorization-mode", "RBAC",
                      "--service-account-signing-key-file", f"{d}/pki/sa.key",
                      "--service-account-key-file", f"{d}/pki/sa.pub",
                      "--service-account-issuer", ISSUER).start()
    yield c
    c.stop()


def test_over_tls_a_service_account_token_is_its_user_for_rbac(secure):
    space = "sa-" + uuid.uuid4().hex[:8]
    with secure.client(secure.admin) as admin:
        create(admin, "/api/v1/namespaces", {"metadata": {"name": space}})
        create(admin, f"/api/v1/namespaces/{space}/serviceaccounts", {"metadata": {"name": "reader"}})
        tok = create(admin, f"/api/v1/namespaces/{space}/serviceaccounts/reader/token", {})["status"]["token"]
        with secure.client(token=tok) as sa:
            r = sa.get(f"/api/v1/namespaces/{space}/pods")
            assert r.status_code == 403, r.text
            assert r.json()["message"] == (f'pods is forbidden: User "system:serviceaccount:{space}:reader" cannot '
                                           f'list resource "pods" in API group "" in the namespace "{space}"')
            # (`view` itself is aggregated by a controller not running here: its source role.)
            create(admin, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{space}/rolebindings", {
                "metadata": {"name": "reader-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:aggregate-to-view"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": space}]})
            wait_for(lambda: sa.get(f"/api/v1/namespaces/{space}/pods").status_code == 200, what="view granted")
            assert sa.post(f"/api/v1/namespaces/{space}/configmaps",
                           json={"metadata": {"name": "x"}}).status_code == 403  # view cannot write

        # Over TLS a token nobody claims is a 401, and so is one of ours gone bad.
        claims = jwt.decode(tok, options={"verify_signature": False})
        with open(f"{secure.pki_dir}/sa.key", "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        for change in ({"iss": "https://elsewhere.example"}, {"exp": int(time.time()) - 120}):
            bad = jwt.encode({**claims, **change}, key, algorithm="RS256")
            with secure.client(token=bad) as c:
                r = c.get(f"/api/v1/namespaces/{space}/pods")
                assert r.status_code == 401 and r.json()["message"] == "Unauthorized", r.text


# -- OIDC discovery ---------------------------------------------------------------------------

def test_oidc_discovery_serves_the_issuer_and_its_keys_to_service_accounts(apiserver, http, ns):
    """The session's server (tests/procs.py: issuer https://kubernetes.default.svc.cluster.local,
    the PKI's sa.pub) serves discovery as kube-apiserver does; a relying party verifies a
    token with the JWKS alone."""
    r = http.get("/.well-known/openid-configuration")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "public, max-age=3600"
    assert r.json() == {"issuer": "https://kubernetes.default.svc.cluster.local",
                        "jwks_uri": f"https://127.0.0.1:{apiserver.port}/openid/v1/jwks",
                        "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"]}
    r = http.get("/openid/v1/jwks")
    assert r.status_code == 200 and r.headers["content-type"] == "application/jwk-set+json"
    assert r.headers["cache-control"] == "public, max-age=3600"
    with open(f"{apiserver.pki_dir}/sa.pub", "rb") as f:
        sa_pub = serialization.load_pem_public_key(f.read())
    (jwk,) = r.json()["keys"]
    assert jwk["kid"] == key_id(sa_pub)
    assert (jwk["use"], jwk["kty"], jwk["alg"], jwk["e"]) == ("sig", "RSA", "RS256", "AQAB")

    create(http, f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "relying"}})
    tok = http.post(f"/api/v1/namespaces/{ns}/serviceaccounts/relying/token", json={}).json()["status"]["token"]
    header = jwt.get_unverified_header(tok)
    assert header["kid"] == jwk["kid"]
    claims = jwt.decode(tok, jwt.PyJWK(jwk).key, algorithms=["RS256"],
                        audience="https://kubernetes.default.svc.cluster.local")
    assert claims["sub"] == f"system:serviceaccount:{ns}:relying"

    # system:service-account-issuer-discovery is bound to every ServiceAccount, not to anonymous
    with apiserver.client(user=None) as anonymous:
        r = anonymous.get("/openid/v1/jwks")
        assert r.status_code == 403, r.text
        assert r.json()["message"] == 'forbidden: User "system:anonymous" cannot get path "/openid/v1/jwks"'
        r = anonymous.get("/.well-known/openid-configuration", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200 and r.json()["issuer"] == "https://kubernetes.default.svc.cluster.local"
        r = anonymous.post("/openid/v1/jwks", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 403, r.text  # the role allows get only


@pytest.mark.parametrize("issuer, jwks_uri, message", [
    ("http://kubernetes.default.svc", "", "issuer URL must use https scheme, got: http://kubernetes.default.svc"),
    ("https://k8s.example?x=1", "", "issuer URL may not include a query or a fragment, got: https://k8s.example?x=1"),
    ("https://k8s.example", "http://keys.example/jwks", "jwksURI requires https scheme, parsed as: http://keys.example/jwks"),
])
def test_oidc_discovery_needs_https_urls(issuer, jwks_uri, message):
    from apiserver.auth.serviceaccount import openid_metadata
    with pytest.raises(ValueError) as err:
        openid_metadata(issuer, [KEY.public_key()], jwks_uri=jwks_uri, external_address="10.0.0.1:6443")
    assert str(err.value) == message
    config, _ = openid_metadata("https://k8s.example", [KEY.public_key()], jwks_uri="https://keys.example/jwks")
    assert json.loads(config)["jwks_uri"] == "https://keys.example/jwks"
