"""Image references, read as containerd and Docker read them (distribution's `reference`
grammar and its docker normalization), and Kubernetes' defaults that depend on them.

Guarantees:
- `parse(s)` accepts exactly what `ParseNormalizedNamed` accepts and returns the fully
  qualified form: `nginx` is `docker.io/library/nginx:latest`, `index.docker.io/x` is
  `docker.io/library/x`; a reference with a digest keeps its tag if it gave one and gets no
  `:latest` added. Anything else raises ValueError with a one-line message naming the input.
- The first path component is a registry only when it has a `.` or a `:`, is `localhost`,
  or has an upper-case letter (so `Foo/bar` is a domain, as in distribution; `foo/bar`
  is Docker Hub's `foo/bar`). The repository path must be lower case.
- `default_pull_policy` is what the API server's defaulting gives `imagePullPolicy`.
- `image_id` is `status.containerStatuses[].imageID`: `repo@sha256:<hex>`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

# The whole reference: [domain/]path[:tag][@digest], as distribution's ReferenceRegexp.
_REFERENCE = re.compile(
    rf"^((?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)(?::({_TAG}))?(?:@({_DIGEST}))?$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_ANCHORED_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_SHA256_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    domain: str          # "docker.io", "registry.lab:5000"
    path: str            # "library/nginx", "team/web"
    tag: str | None      # None when only a digest was given
    digest: str | None   # "sha256:<64 hex>"

    @property
    def name(self) -> str:
        """The repository, fully qualified: `docker.io/library/nginx`."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.name
        if self.tag is not None:
            s += ":" + self.tag
        if self.digest is not None:
            s += "@" + self.digest
        return s


def check_digest(digest: str) -> str:
    """`digest` if it is `sha256:<64 lower-case hex>`, else ValueError. The only algorithm
    this node verifies is sha256 (what every registry serves)."""
    if not isinstance(digest, str) or not _SHA256_DIGEST.match(digest):
        raise ValueError(f"invalid digest {digest!r}: want sha256:<64 lower-case hex digits>")
    return digest


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"
                     and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse(s: str) -> Reference:
    """The normalized reference for `s` (see the module docstring); ValueError if invalid."""
    if not isinstance(s, str) or not s:
        raise ValueError("invalid reference format: the image name is empty")
    if _ANCHORED_HEX64.match(s):
        raise ValueError(f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings")
    if s != s.strip():
        raise ValueError(f"invalid reference format: {s!r} has surrounding white space")
    m = _REFERENCE.match(s)
    if m is None:
        # Say which rule failed, when it is one users meet.
        base = s.split("@", 1)[0]
        domain, remainder = _split_domain(base)
        repo = remainder.rsplit(":", 1)[0] if ":" in remainder.rsplit("/", 1)[-1] else remainder
        if repo != repo.lower() and _PATH_RE.match(repo.lower()):
            raise ValueError(f"invalid reference format: repository name ({repo}) must be lowercase")
        if "@" in s and not re.search(rf"@{_DIGEST}$", s):
            raise ValueError(f"invalid reference format: {s!r} has a malformed digest")
        raise ValueError(f"invalid reference format: {s!r}")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ValueError(f"invalid reference format: repository name {name!r} is longer than "
                         f"{NAME_TOTAL_LENGTH_MAX} characters")
    domain, path = _split_domain(name)
    if path != path.lower():
        raise ValueError(f"invalid reference format: repository name ({path}) must be lowercase")
    if not _DOMAIN_RE.match(domain) or not _PATH_RE.match(path):
        raise ValueError(f"invalid reference format: {s!r}")
    if digest is not None:
        if digest.startswith("sha256:"):
            check_digest(digest)
        else:
            raise ValueError(f"invalid reference format: {s!r}: unsupported digest algorithm "
                             f"{digest.split(':', 1)[0]!r} (only sha256)")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def normalize(s: str) -> str:
    """The fully qualified string for `s`: `nginx` -> `docker.io/library/nginx:latest`."""
    return str(parse(s))


def default_pull_policy(image: str) -> str:
    """`imagePullPolicy` as the API server defaults it: Always when the tag is `latest`
    (given or implied by no tag and no digest), else IfNotPresent. As Kubernetes does, a
    reference that does not parse is not an error here (validation reports it) and gets
    IfNotPresent; and `name:latest@sha256:...` keeps its `latest` tag, so it is Always."""
    try:
        ref = parse(image)
    except ValueError:
        return "IfNotPresent"
    return "Always" if ref.tag == DEFAULT_TAG else "IfNotPresent"


def image_id(repo: str, digest: str) -> str:
    """`repo@sha256:<hex>`, the container status' imageID. `repo` may be any reference to
    the repository (`nginx`, `docker.io/library/nginx:1.25`); its tag and digest are dropped."""
    return f"{parse(repo).name}@{check_digest(digest)}"
