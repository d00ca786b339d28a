"""The bootstrapsigner and tokencleaner controllers: the detached JWS against
cluster-bootstrap's own test vectors, which Secrets may sign, the controllers' reconciles
on seeded caches, and then end to end: a real API server and `minik8s controller-manager
--controllers bootstrapsigner,tokencleaner` under RBAC keeping kube-public/cluster-info
signed as tokens come, go and expire."""
from __future__ import annotations

import base64
import time

import pytest

from controller_manager.controllers.bootstrapsigner import CLUSTER_INFO_KEY, BootstrapSigner, TokenCleaner
from controller_manager.manager import enabled_controllers
from controller_manager.testing import RecordingClient
from machinery import bootstraptoken as bt
from tests.clusterinfo import SigningControlPlane, new_token, publish_cluster_info, token_secret
from tests.procs import wait_for

# cluster-bootstrap's token/jws/jws_test.go
CONTENT = "Hello from the other side. I must have called a thousand times."
VECTORS = [
    (CONTENT, "joshua", "my voice is my passcode",
     "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"),
    ("", "joshua", "my voice is my passcode",
     "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"),
    (CONTENT, "joshua", "",
     "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..UfkqvDGiIFxrMnFseDj9LYJOLNrvjW8aHhF71mvvAs8"),
]


@pytest.mark.parametrize("content,tid,tsecret,want", VECTORS)
def test_detached_signature_is_cluster_bootstraps(content, tid, tsecret, want):
    assert bt.detached_signature(content, tid, tsecret) == want
    assert bt.signature_is_valid(want, content, tid, tsecret)


def test_a_signature_fails_with_another_token_content_or_header():
    sig = VECTORS[0][3]
    assert not bt.signature_is_valid(sig + "foo", CONTENT, "joshua", "my voice is my passcode")
    assert not bt.signature_is_valid(sig, CONTENT + " ", "joshua", "my voice is my passcode")
    assert not bt.signature_is_valid(sig, CONTENT, "joshua", "my voice is my passkey")
    assert not bt.signature_is_valid(sig, CONTENT, "joshub", "my voice is my passcode")
    # The same MAC under another header (a `typ`, as a JWT library adds) is not accepted.
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"joshua","typ":"JWT"}').rstrip(b"=").decode()
    assert not bt.signature_is_valid(header + sig[sig.index(".."):], CONTENT, "joshua", "my voice is my passcode")


@pytest.mark.parametrize("bad", ["", "abcdef", "abcdef.0123456789abcde", "ABCDEF.0123456789abcdef",
                                 "abcdef:0123456789abcdef", "abcdef.0123456789abcdef0"])
def test_a_malformed_token_is_refused_with_the_expected_form(bad):
    with pytest.raises(ValueError, match=r"was not of the form \"\(\[a-z0-9\]\{6\}\)"):
        bt.parse(bad)


def _secret(token: str, **kw) -> dict:
    s = token_secret(token, **kw)
    s["metadata"]["uid"] = "u-" + token[:6]
    return s


@pytest.mark.parametrize("name,mutate,signs", [
    ("a signing token", lambda s: s, True),
    ("not for signing", lambda s: _set(s, "usage-bootstrap-signing", "false"), False),
    ("expired", lambda s: _set(s, "expiration", "2000-01-01T00:00:00Z"), False),
    ("unparseable expiration", lambda s: _set(s, "expiration", "soon"), False),
    ("no expiration", lambda s: _drop(s, "expiration"), True),
    ("name and token-id disagree", lambda s: {**s, "metadata": {**s["metadata"], "name": "bootstrap-token-zzzzzz"}},
     False),
    ("not a bootstrap token", lambda s: {**s, "type": "Opaque"}, False),
    ("no token-secret", lambda s: _drop(s, "token-secret"), False),
])
def test_which_secrets_may_sign(name, mutate, signs):
    token = "abcdef.0123456789abcdef"
    got = bt.signing_token(mutate(_secret(token)), now=time.time())
    assert got == (("abcdef", "0123456789abcdef") if signs else None), name


def _set(s: dict, key: str, value: str) -> dict:
    return {**s, "data": {**s["data"], key: base64.b64encode(value.encode()).decode()}}


def _drop(s: dict, key: str) -> dict:
    return {**s, "data": {k: v for k, v in s["data"].items() if k != key}}


def test_both_are_off_unless_named_as_in_kube_controller_manager():
    assert "bootstrapsigner" not in enabled_controllers("*")
    assert "tokencleaner" not in enabled_controllers("*")
    assert {"bootstrapsigner", "tokencleaner"} <= set(enabled_controllers("*,bootstrapsigner,tokencleaner"))


# -- reconciles on seeded caches ----------------------------------------------------

def _cluster_info(data: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cluster-info", "namespace": "kube-public", "resourceVersion": "1"},
            "data": data}


def _signer() -> tuple[RecordingClient, BootstrapSigner]:
    rc = RecordingClient()
    return rc, BootstrapSigner(rc, rc)  # type: ignore[arg-type]


async def test_signs_for_every_signing_token_and_drops_stale_keys():
    rc, signer = _signer()
    a, b = "aaaaaa.0123456789abcdef", "bbbbbb.0123456789abcdef"
    rc.seed(_secret(a), _secret(b, signing=False),
            _cluster_info({"kubeconfig": "KC", "other": "kept", "jws-kubeconfig-gone00": "x..y"}))
    await signer.reconcile(CLUSTER_INFO_KEY)
    [(verb, plural, key, obj)] = [a for a in rc.actions if a[0] == "update"]
    assert (verb, plural, key) == ("update", "configmaps", CLUSTER_INFO_KEY)
    assert obj["data"] == {"kubeconfig": "KC", "other": "kept",
                           "jws-kubeconfig-aaaaaa": bt.detached_signature("KC", "aaaaaa", "0123456789abcdef")}


async def test_does_nothing_when_in_sync_or_without_a_kubeconfig():
    rc, signer = _signer()
    a = "aaaaaa.0123456789abcdef"
    rc.seed(_secret(a), _cluster_info({"kubeconfig": "KC",
                                        "jws-kubeconfig-aaaaaa": bt.detached_signature("KC", "aaaaaa",
                                                                                       "0123456789abcdef")}))
    await signer.reconcile(CLUSTER_INFO_KEY)
    rc2, signer2 = _signer()
    rc2.seed(_secret(a), _cluster_info({"other": "x"}))
    await signer2.reconcile(CLUSTER_INFO_KEY)
    assert [x for x in rc.actions + rc2.actions if x[0] != "get"] == []


async def test_tokencleaner_deletes_only_expired_tokens_with_a_uid_precondition():
    rc = RecordingClient()
    cleaner = TokenCleaner(rc, rc)  # type: ignore[arg-type]
    old, new = "oooooo.0123456789abcdef", "nnnnnn.0123456789abcdef"
    rc.seed(_secret(old, ttl=-5), _secret(new, ttl=3600))
    await cleaner.reconcile("kube-system/bootstrap-token-oooooo")
    await cleaner.reconcile("kube-system/bootstrap-token-nnnnnn")
    assert [a for a in rc.actions if a[0] == "delete"] == [
        ("delete", "secrets", "kube-system/bootstrap-token-oooooo", {"preconditions": {"uid": "u-oooooo"}})]


# -- end to end ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    p = SigningControlPlane(str(tmp_path_factory.mktemp("signer"))).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def admin(plane):
    with plane.server.client() as c:
        publish_cluster_info(c, "https://" + plane.endpoint, plane.ca_pem)
        yield c


def _create(admin, secret: dict) -> None:
    r = admin.post("/api/v1/namespaces/kube-system/secrets", json=secret)
    assert r.status_code == 201, r.text


def _kubeconfig(admin) -> str:
    return admin.get("/api/v1/namespaces/kube-public/configmaps/cluster-info").json()["data"]["kubeconfig"]


def test_signatures_appear_for_signing_tokens_and_verify(plane, admin):
    token, other = new_token(), new_token()
    _create(admin, token_secret(token))
    _create(admin, token_secret(other, signing=False))
    tid, tsecret = bt.parse(token)
    sigs = plane.wait_signed(admin, tid)
    assert bt.parse(other)[0] not in sigs
    assert bt.signature_is_valid(sigs[tid], _kubeconfig(admin), tid, tsecret)
    wrong = new_token()
    assert not bt.signature_is_valid(sigs[tid], _kubeconfig(admin), tid, bt.parse(wrong)[1])


def test_a_changed_kubeconfig_is_signed_again(plane, admin):
    token = new_token()
    tid, tsecret = bt.parse(token)
    _create(admin, token_secret(token))
    plane.wait_signed(admin, tid)
    cm = admin.get("/api/v1/namespaces/kube-public/configmaps/cluster-info").json()
    cm["data"]["kubeconfig"] += "# changed\n"
    assert admin.put("/api/v1/namespaces/kube-public/configmaps/cluster-info", json=cm).status_code == 200

    def resigned():
        data = admin.get("/api/v1/namespaces/kube-public/configmaps/cluster-info").json()["data"]
        return bt.signature_is_valid(data.get(bt.JWS_PREFIX + tid, ""), data["kubeconfig"], tid, tsecret)
    wait_for(resigned, what="signature over the new kubeconfig")


def test_a_deleted_token_loses_its_signature(plane, admin):
    token = new_token()
    tid = bt.parse(token)[0]
    _create(admin, token_secret(token))
    plane.wait_signed(admin, tid)
    assert admin.delete(f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{tid}").status_code == 200
    plane.wait_signed(admin, tid, present=False)


def test_an_expiring_token_loses_its_signature_and_is_deleted(plane, admin):
    token, lasting = new_token(), new_token()
    tid = bt.parse(token)[0]
    _create(admin, token_secret(lasting))
    _create(admin, token_secret(token, ttl=3))
    plane.wait_signed(admin, tid)
    plane.wait_signed(admin, tid, present=False)
    wait_for(lambda: admin.get(f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{tid}").status_code == 404,
             what="the expired token's Secret deleted by tokencleaner")
    lasting_id = bt.parse(lasting)[0]
    assert admin.get(f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{lasting_id}").status_code == 200
    assert lasting_id in plane.signatures(admin)
