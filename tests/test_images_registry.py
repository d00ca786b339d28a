"""The registry client (kubelet/images/registry.py) against real registries: Debian's
docker-registry, plain, with TLS + htpasswd, and with bearer tokens; images built with
umoci from busybox-static and pushed with skopeo (tests/images_fixtures.py)."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import tempfile

import pytest

from kubelet.images.store import ContentStore
from kubelet.images.registry import (Credentials, PlatformNotFound, RegistryClient, RegistryError,
                                     RegistryHostConfig, credentials_for)
from tests.images_fixtures import (PASSWORD, USER, TamperingProxy, auth_registry, oci_images,  # noqa: F401
                                   plain_registry, token_registry)
from tests.procs import free_port


class RecordingStore(ContentStore):
    """The real ContentStore, also recording each digest whose ingest completed (so a
    test can count downloads) and listing what it holds, committed or half-written."""

    def __init__(self, root: str):
        super().__init__(root)
        self.ingested: list[str] = []

    @contextlib.contextmanager
    def ingest(self, digest: str, size: int | None = None):
        with super().ingest(digest, size) as f:
            yield f
        self.ingested.append(digest)

    def files(self) -> list[str]:
        """Blobs and ingest files, by hex digest."""
        return sorted(os.listdir(os.path.join(self.root, "blobs", "sha256"))
                      + os.listdir(os.path.join(self.root, "ingest")))

    def partial(self) -> list[str]:
        return os.listdir(os.path.join(self.root, "ingest"))


@pytest.fixture
def store(tmp_path):
    return RecordingStore(str(tmp_path))


def insecure(*regs) -> dict[str, RegistryHostConfig]:
    return {r.host: RegistryHostConfig(insecure=True) for r in regs}


def dockerconfig(key: str, user: str = USER, password: str = PASSWORD, *, fields: bool = False) -> dict:
    if fields:
        return {"auths": {key: {"username": user, "password": password}}}
    return {"auths": {key: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}


async def test_pull_puts_config_and_layers_in_the_store(plain_registry, oci_images, store):
    want = oci_images.images["app-a"]
    async with RegistryClient(insecure(plain_registry)) as c:
        img = await c.pull(plain_registry.host, "lab/app-a", "v1", store, platform=("linux", "amd64"))
    assert img.manifest_digest == want.manifest_digest
    assert img.config_digest == want.config_digest
    assert [la.digest for la in img.layers] == want.layers
    assert all(la.media_type == "application/vnd.oci.image.layer.v1.tar+gzip" for la in img.layers)
    assert img.diff_ids == want.diff_ids
    assert img.config["config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert img.config["config"]["WorkingDir"] == "/app"
    for d in [want.config_digest, *want.layers]:
        assert store.has_blob(d)
        with open(store.blob_path(d), "rb") as f:
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == d
    assert store.partial() == []


async def test_pull_by_digest_verifies_the_manifest(plain_registry, oci_images, store):
    want = oci_images.images["app-b"]
    async with RegistryClient(insecure(plain_registry)) as c:
        img = await c.pull(plain_registry.host, "lab/app-b", want.manifest_digest, store, platform=("linux", "amd64"))
        assert img.manifest_digest == want.manifest_digest
        # A digest the registry has no manifest for is a 404 naming it.
        wrong = "sha256:" + "0" * 64
        with pytest.raises(RegistryError) as e:
            await c.pull(plain_registry.host, "lab/app-b", wrong, store)
    assert e.value.status == 404 and f"lab/app-b@{wrong}" in str(e.value)


async def test_shared_base_layer_is_downloaded_once(plain_registry, oci_images, store):
    base = oci_images.images["app-a"].layers[0]
    assert base == oci_images.images["app-b"].layers[0]
    before = plain_registry.blob_gets("lab/app-a", base) + plain_registry.blob_gets("lab/app-b", base)
    async with RegistryClient(insecure(plain_registry)) as c:
        a = await c.pull(plain_registry.host, "lab/app-a", "v1", store, platform=("linux", "amd64"))
        b = await c.pull(plain_registry.host, "lab/app-b", "v1", store, platform=("linux", "amd64"))
    after = plain_registry.blob_gets("lab/app-a", base) + plain_registry.blob_gets("lab/app-b", base)
    assert after - before == 1
    assert store.ingested.count(base) == 1
    assert b.fetched_bytes < a.fetched_bytes  # b fetched only its config and own layer
    assert b.layers[0].digest == base


async def test_whiteout_image_pulls_all_layers(plain_registry, oci_images, store):
    want = oci_images.images["whiteout"]
    async with RegistryClient(insecure(plain_registry)) as c:
        img = await c.pull(plain_registry.host, "lab/whiteout", "v1", store, platform=("linux", "amd64"))
    assert [la.digest for la in img.layers] == want.layers and len(img.diff_ids) == 3


async def test_index_is_resolved_to_the_platform(plain_registry, oci_images, store):
    async with RegistryClient(insecure(plain_registry)) as c:
        amd = await c.pull(plain_registry.host, "lab/multi", "v1", store, platform=("linux", "amd64"))
        arm = await c.pull(plain_registry.host, "lab/multi", "v1", store, platform=("linux", "arm64", "v8"))
        arm_novariant = await c.pull(plain_registry.host, "lab/multi", "v1", store, platform=("linux", "arm64"))
        with pytest.raises(PlatformNotFound) as e:
            await c.pull(plain_registry.host, "lab/multi", "v1", store, platform=("linux", "s390x"))
    assert amd.manifest_digest == oci_images.images["app-a"].manifest_digest
    assert amd.config["architecture"] == "amd64"
    assert arm.config["architecture"] == "arm64" and arm.config["variant"] == "v8"
    assert arm.manifest_digest != amd.manifest_digest == oci_images.images["app-a"].manifest_digest
    assert arm_novariant.manifest_digest == arm.manifest_digest
    assert e.value.available == ["linux/amd64", "linux/arm64/v8"]
    assert "linux/s390x" in str(e.value) and "linux/amd64, linux/arm64/v8" in str(e.value)


async def test_docker_schema2_manifest_and_manifest_list(plain_registry, oci_images, store):
    async with RegistryClient(insecure(plain_registry)) as c:
        img = await c.pull(plain_registry.host, "lab/docker-app-a", "v1", store, platform=("linux", "amd64"))
        listed = await c.pull(plain_registry.host, "lab/docker-multi", "v1", store, platform=("linux", "arm64"))
        with pytest.raises(PlatformNotFound) as e:
            await c.pull(plain_registry.host, "lab/docker-multi", "v1", store, platform=("windows", "amd64"))
    assert img.manifest_media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert {la.media_type for la in img.layers} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    # The same layers and diff_ids as the OCI image it was converted from.
    assert [la.digest for la in img.layers] == oci_images.images["app-a"].layers
    assert img.diff_ids == oci_images.images["app-a"].diff_ids
    assert listed.manifest_media_type == img.manifest_media_type and listed.config["architecture"] == "arm64"
    assert e.value.available == ["linux/amd64", "linux/arm64/v8"]


async def test_concurrent_pulls_share_one_download(plain_registry, oci_images, store):
    want = oci_images.images["app-b"]
    async with RegistryClient(insecure(plain_registry)) as c:
        before = c.blob_requests
        pulled = await asyncio.gather(*(
            c.pull(plain_registry.host, "lab/app-b", "v1", store, platform=("linux", "amd64")) for _ in range(3)))
        assert c.blob_requests - before == 1 + len(want.layers)
    assert {p.manifest_digest for p in pulled} == {want.manifest_digest}
    assert sorted(store.ingested) == sorted([want.config_digest, *want.layers])


async def test_blob_redirects_are_followed(plain_registry, oci_images, store):
    proxy = TamperingProxy(plain_registry.url)
    proxy.redirect_blobs = True
    try:
        async with RegistryClient({proxy.host: RegistryHostConfig(insecure=True),
                                   plain_registry.host: RegistryHostConfig(insecure=True)}) as c:
            img = await c.pull(proxy.host, "lab/app-a", "v1", store, platform=("linux", "amd64"))
    finally:
        proxy.stop()
    assert proxy.redirected == 1 + len(img.layers)
    assert all(store.has_blob(la.digest) for la in img.layers)


async def test_tampered_manifest_is_rejected(plain_registry, oci_images, store):
    proxy = TamperingProxy(plain_registry.url)
    try:
        async with RegistryClient({proxy.host: RegistryHostConfig(insecure=True)}) as c:
            # By tag: the registry's Docker-Content-Digest header gives it away.
            proxy.target, proxy.times = "v1", 1
            with pytest.raises(RegistryError) as by_tag:
                await c.pull(proxy.host, "lab/app-a", "v1", store)
            digest = oci_images.images["app-a"].manifest_digest
            proxy.target, proxy.times = digest, 1
            with pytest.raises(RegistryError) as by_digest:
                await c.pull(proxy.host, "lab/app-a", digest, store)
    finally:
        proxy.stop()
    assert "Docker-Content-Digest says " + digest in str(by_tag.value)
    assert f"manifest lab/app-a@{digest} from {proxy.host} has digest sha256:" in str(by_digest.value)
    assert store.files() == []


async def test_unknown_tag_is_a_404_naming_it(plain_registry, store):
    async with RegistryClient(insecure(plain_registry)) as c:
        with pytest.raises(RegistryError) as e:
            await c.pull(plain_registry.host, "lab/app-a", "nope", store)
    assert e.value.status == 404 and e.value.registry == plain_registry.host
    assert f"{plain_registry.host}/lab/app-a:nope" in str(e.value)
    assert store.files() == []


async def test_registry_down_is_a_connection_error(store):
    host = f"127.0.0.1:{free_port()}"
    async with RegistryClient({host: RegistryHostConfig(insecure=True)}) as c:
        with pytest.raises(RegistryError) as e:
            await c.pull(host, "lab/app-a", "v1", store)
    assert e.value.status is None and str(e.value) == f"cannot connect to registry {host}: connection refused"


async def test_https_needs_the_registry_ca(auth_registry, store):
    creds = Credentials(USER, PASSWORD)
    async with RegistryClient() as c:  # system CAs only
        with pytest.raises(RegistryError) as e:
            await c.pull(auth_registry.host, "private/app-a", "v1", store, credentials=creds)
    assert auth_registry.host in str(e.value) and "CERTIFICATE_VERIFY_FAILED" in str(e.value)
    assert store.files() == []


async def test_no_credentials_is_401_naming_the_registry(auth_registry, store):
    async with RegistryClient({auth_registry.host: RegistryHostConfig(ca_file=auth_registry.ca_file)}) as c:
        with pytest.raises(RegistryError) as e:
            await c.pull(auth_registry.host, "private/app-a", "v1", store)
    assert e.value.status == 401
    assert str(e.value).startswith(f"401 Unauthorized from {auth_registry.host}")
    assert store.files() == []


async def test_wrong_then_right_credentials_from_dockerconfigjson(auth_registry, oci_images, store):
    host = auth_registry.host
    wrong = dockerconfig(f"https://{host}", password="wrong")
    right = dockerconfig(host, fields=True)
    creds = credentials_for(host, [wrong, right], "private/app-a")
    assert creds == [Credentials(USER, "wrong"), Credentials(USER, PASSWORD)]
    async with RegistryClient({host: RegistryHostConfig(ca_file=auth_registry.ca_file)}) as c:
        with pytest.raises(RegistryError) as e:
            await c.pull(host, "private/app-a", "v1", store, credentials=creds[:1])
        assert e.value.status == 401 and host in str(e.value)
        # The kubelet tries each matching credential in turn.
        img = await c.pull(host, "private/app-a", "v1", store, credentials=creds)
        # What one pull's credentials got is not lent to a pull without them.
        with pytest.raises(RegistryError) as e:
            await c.pull(host, "private/app-a", "v1", store)
        assert e.value.status == 401
    assert img.manifest_digest == oci_images.images["app-a"].manifest_digest
    assert all(store.has_blob(d) for d in [img.config_digest, *(la.digest for la in img.layers)])


async def test_node_credentials_from_the_registry_config(auth_registry, store):
    cfg = RegistryHostConfig(ca_file=auth_registry.ca_file, credentials=Credentials(USER, PASSWORD))
    async with RegistryClient({auth_registry.host: cfg}) as c:
        # A pod's wrong credential is tried first, then the node's.
        img = await c.pull(auth_registry.host, "private/app-a", "v1", store,
                           credentials=[Credentials(USER, "wrong")])
    assert store.has_blob(img.config_digest)


async def test_plain_http_only_when_insecure(plain_registry, store):
    async with RegistryClient() as c:
        with pytest.raises(RegistryError) as e:
            await c.pull(plain_registry.host, "lab/app-a", "v1", store)
    assert plain_registry.host in str(e.value) and e.value.status is None
    assert store.files() == []


async def test_anonymous_bearer_token_flow_caches_the_token(token_registry, oci_images, store):
    reg, ts = token_registry
    before = len(ts.issued)
    now = [1000.0]
    async with RegistryClient(insecure(reg), clock=lambda: now[0]) as c:
        img = await c.pull(reg.host, "public/app-b", "v1", store, platform=("linux", "amd64"))
        issued = ts.issued[before:]
        # One token for the repository's pull scope serves the manifest and every blob.
        assert issued == ["repository:public/app-b:pull"]
        await c.pull(reg.host, "public/app-b", "v1", store, platform=("linux", "amd64"))
        assert len(ts.issued) == before + 1
        # Past its expires_in, the token is not sent again: a new one is fetched.
        now[0] += ts.expires_in
        await c.pull(reg.host, "public/app-b", "v1", store, platform=("linux", "amd64"))
        assert len(ts.issued) == before + 2
    assert img.manifest_digest == oci_images.images["app-b"].manifest_digest


async def test_tampered_blob_is_retried_then_rejected(plain_registry, oci_images, store):
    layer = oci_images.images["app-a"].layers[1]
    proxy = TamperingProxy(plain_registry.url)
    try:
        async with RegistryClient({proxy.host: RegistryHostConfig(insecure=True)}) as c:
            # Tampered once: the retry gets the right bytes.
            proxy.target, proxy.times = layer, 1
            img = await c.pull(proxy.host, "lab/app-a", "v1", store, platform=("linux", "amd64"))
            assert proxy.tampered == 1 and store.has_blob(layer)
            assert img.manifest_digest == oci_images.images["app-a"].manifest_digest

            other = RecordingStore(tempfile.mkdtemp(dir=store.root))
            proxy.target, proxy.times, proxy.tampered = layer, 5, 0
            with pytest.raises(RegistryError) as e:
                await c.pull(proxy.host, "lab/app-a", "v1", other, platform=("linux", "amd64"))
            assert proxy.tampered == 2
    finally:
        proxy.stop()
    assert layer in str(e.value) and "does not match its digest" in str(e.value)
    assert not other.has_blob(layer)
    assert not [f for f in other.files() if layer[7:] in f]


def test_credentials_for_follows_the_keyring_rules():
    hub = dockerconfig("https://index.docker.io/v1/", "hub", "h")
    assert credentials_for("docker.io", [hub]) == [Credentials("hub", "h")]
    assert credentials_for("docker.io", [dockerconfig("index.docker.io", "hub", "h")]) == [Credentials("hub", "h")]
    assert credentials_for("docker.io", [dockerconfig("docker.io", "d", "x")]) == [Credentials("d", "x")]
    assert credentials_for("registry.lab:5000", [hub]) == []
    lab = {"auths": {
        "registry.lab:5000": {"auth": base64.b64encode(b"host:1").decode()},
        "http://registry.lab:5000/team": {"username": "team", "password": "2"},
        "registry.lab": {"username": "noport", "password": "3"},
        "*.lab:5000": {"username": "glob", "password": "4"},
        "broken": {"auth": "not base64 !"},
    }}
    assert credentials_for("registry.lab:5000", [lab], "team/web") == [
        Credentials("team", "2"), Credentials("host", "1"), Credentials("glob", "4")]
    assert credentials_for("registry.lab:5000", [lab], "teamx/web") == [
        Credentials("host", "1"), Credentials("glob", "4")]
    assert credentials_for("registry.lab", [lab], "x") == [Credentials("noport", "3")]
    assert credentials_for("other.lab", [{"auths": "junk"}, json.loads("{}")]) == []


async def test_truncated_blob_is_never_taken_as_complete(plain_registry, oci_images, store):
    layer = oci_images.images["app-b"].layers[1]
    proxy = TamperingProxy(plain_registry.url)
    proxy.target, proxy.times, proxy.truncate = layer, 2, True
    try:
        async with RegistryClient({proxy.host: RegistryHostConfig(insecure=True)}) as c:
            with pytest.raises(RegistryError) as e:
                await c.pull(proxy.host, "lab/app-b", "v1", store, platform=("linux", "amd64"))
    finally:
        proxy.stop()
    assert proxy.tampered == 2
    assert f"blob {layer} of lab/app-b from {proxy.host} is truncated" in str(e.value)
    assert not store.has_blob(layer) and not [f for f in store.files() if layer[7:] in f]


async def test_bearer_token_with_credentials_for_a_private_repository(token_registry, oci_images, store):
    reg, ts = token_registry
    async with RegistryClient(insecure(reg)) as c:
        with pytest.raises(RegistryError) as e:
            await c.pull(reg.host, "private/app-a", "v1", store, platform=("linux", "amd64"))
        assert e.value.status == 401 and str(e.value).startswith(f"401 Unauthorized from {reg.host}")
        assert store.files() == []
        img = await c.pull(reg.host, "private/app-a", "v1", store, platform=("linux", "amd64"),
                           credentials=credentials_for(reg.host, [dockerconfig(f"http://{reg.host}")]))
    assert img.manifest_digest == oci_images.images["app-a"].manifest_digest
    assert ts.issued[-1] == "repository:private/app-a:pull"
