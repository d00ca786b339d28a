"""Image references as containerd/Docker normalize them, and Kubernetes' defaults."""
import pytest

from kubelet.images.reference import default_pull_policy, image_id, normalize, parse

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("given, want", [
    ("nginx", "docker.io/library/nginx:latest"),
    ("nginx:1.25", "docker.io/library/nginx:1.25"),
    ("library/nginx", "docker.io/library/nginx:latest"),
    ("docker.io/nginx", "docker.io/library/nginx:latest"),
    ("index.docker.io/nginx:1", "docker.io/library/nginx:1"),
    ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
    ("registry.lab:5000/team/web:1.2", "registry.lab:5000/team/web:1.2"),
    ("registry.lab:5000/web", "registry.lab:5000/web:latest"),
    ("localhost/web", "localhost/web:latest"),
    ("localhost:5000/a/b/c:v_1.0-rc", "localhost:5000/a/b/c:v_1.0-rc"),
    ("quay.io/coreos/etcd:v3.5", "quay.io/coreos/etcd:v3.5"),
    ("Foo/bar", "Foo/bar:latest"),  # an upper-case first component is a domain
    ("[::1]:5000/web:2", "[::1]:5000/web:2"),
    ("my-app__x--y/z", "docker.io/my-app__x--y/z:latest"),
    (f"nginx@{D}", f"docker.io/library/nginx@{D}"),
    (f"nginx:1.25@{D}", f"docker.io/library/nginx:1.25@{D}"),
    (f"registry.lab:5000/team/web@{D}", f"registry.lab:5000/team/web@{D}"),
])
def test_normalize(given, want):
    assert normalize(given) == want


def test_parts():
    r = parse(f"registry.lab:5000/team/web:1.2@{D}")
    assert (r.domain, r.path, r.tag, r.digest, r.name) == (
        "registry.lab:5000", "team/web", "1.2", D, "registry.lab:5000/team/web")


@pytest.mark.parametrize("given, message", [
    ("", "empty"),
    ("Nginx", "must be lowercase"),
    ("docker.io/Library/nginx", "must be lowercase"),
    ("registry.lab:5000/Team/web:1", "must be lowercase"),
    ("ab" * 32, "64-byte hexadecimal"),
    ("nginx@sha256:abc", "malformed digest"),
    ("nginx@sha256:" + "AB" * 32, "invalid digest"),
    ("nginx@md5:" + "ab" * 16, "unsupported digest algorithm"),
    ("nginx:", "invalid reference format"),
    ("nginx:-x", "invalid reference format"),
    (":tag", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("my_app.lab/x", "invalid reference format"),  # a "." makes it a domain; "_" is not in one
    ("-nginx", "invalid reference format"),
    ("nginx ", "white space"),
    ("nginx:" + "x" * 129, "invalid reference format"),
    ("registry.lab:port/web", "invalid reference format"),
    ("a/" * 130 + "b", "longer than 255"),
])
def test_invalid(given, message):
    with pytest.raises(ValueError, match=message):
        parse(given)


@pytest.mark.parametrize("image, want", [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("registry.lab:5000/web", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    (f"nginx@{D}", "IfNotPresent"),
    (f"nginx:1.25@{D}", "IfNotPresent"),
    (f"nginx:latest@{D}", "Always"),   # Kubernetes looks at the tag only
    ("Not Valid", "IfNotPresent"),     # validation, not defaulting, reports it
])
def test_default_pull_policy(image, want):
    assert default_pull_policy(image) == want


def test_image_id():
    assert image_id("nginx", D) == f"docker.io/library/nginx@{D}"
    assert image_id("registry.lab:5000/team/web:1.2", D) == f"registry.lab:5000/team/web@{D}"
    with pytest.raises(ValueError, match="invalid digest"):
        image_id("nginx", "sha256:zz")
