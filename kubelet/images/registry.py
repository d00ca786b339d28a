"""A client of the OCI Distribution API: pulls an image's manifest, config and layers.

`RegistryClient.pull(host, repository, reference, store)` resolves a tag or digest to
one image for the node's platform and leaves its config and layer blobs in the content
store, returning a `PulledImage` (manifest digest, config digest and parsed config,
layers with media types and sizes, diff_ids). What it guarantees:

- Manifests are asked for as OCI image manifest or index and as Docker schema 2
  manifest or manifest list. An index (or list) is resolved to the entry for the
  requested OS/architecture (+ variant); if none matches, `PlatformNotFound` names the
  platforms the index has.
- Every manifest's bytes are checked against the digest they were asked by (the
  reference when it is a digest, the descriptor when it came from an index) and against
  the Docker-Content-Digest header when the registry sends one.
- Blobs are streamed into `store.ingest(digest, size)` and hashed on the way: a blob
  whose bytes do not hash to its digest, or that is longer or shorter than its
  descriptor says, raises inside the ingest, so the store keeps nothing of it. Such a
  blob is fetched once more, then the pull fails naming the blob. A blob the store
  already has is not fetched. Redirects (registries send blob GETs to storage) are
  followed; credentials are not sent to another host.
- Auth: the `WWW-Authenticate: Bearer realm=,service=,scope=` token flow (anonymous, or
  with Basic credentials at the realm), tokens cached per scope until they expire; and
  Basic auth for registries that ask for it. `credentials_for` finds the credentials
  for a registry in dockerconfigjson documents (imagePullSecrets) by Kubernetes' rules.
- Endpoints, as containerd with k3s's registries.yaml (kubelet/images/hosts.py): an image
  of a registry is pulled from its mirrors in order, then from the registry itself
  (docker.io's is registry-1.docker.io); an endpoint that does not answer, or answers an
  error status (404, 5xx, ...), passes the pull to the next one, and when all fail the
  first error that is not a 404 is raised (else the 404). A mirror gets the repository as
  `rewrite` maps it and `?ns=<registry>`. The TLS settings and node credentials used are
  those of the host connected to.
- HTTPS with the system CAs, or a CA file (and a client certificate) given per host;
  plain HTTP only for an endpoint configured as `http://` (or a registry configured
  `insecure`), and never by a redirect from HTTPS.
- Every failure is a `RegistryError` whose message names the registry and the cause,
  e.g. ``401 Unauthorized from 127.0.0.1:5000``, with `.status` (the HTTP status, or
  None when no answer came) and `.registry`.

The client is asynchronous (httpx.AsyncClient): the kubelet runs on asyncio, pulls of
different images run side by side there, and a pull waiting on the network must not
hold a thread.

The client knows nothing of pods or the API; reference parsing (defaults such as
docker.io/library/) is the caller's: it passes the registry host, the repository and
the tag or digest already split.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, ContextManager, Protocol
from urllib.parse import urlsplit

import httpx

from kubelet.images.store import DigestMismatch
from machinery.platforms import goarch, goos

log = logging.getLogger("minik8s.kubelet.images.registry")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))

# The distribution spec lets a registry refuse manifests over 4 MiB; a client need not
# read more either.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Used when a token response gives no expires_in (the token spec's default).
DEFAULT_TOKEN_SECONDS = 60
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
CHUNK = 256 * 1024


class RegistryError(Exception):
    """A pull failed. The message names the registry and the cause."""

    def __init__(self, message: str, *, registry: str, status: int | None = None):
        super().__init__(message)
        self.registry = registry
        self.status = status


class RegistryUnreachable(RegistryError):
    """No answer came from the registry (refused, timed out, TLS failed, the connection
    broke): a pull tries its next endpoint."""


class PlatformNotFound(RegistryError):
    """The index has no image for the requested platform; `.available` lists those it has."""

    def __init__(self, message: str, *, registry: str, available: list[str]):
        super().__init__(message, registry=registry)
        self.available = available


class BlobDigestMismatch(RegistryError):
    """A blob's bytes did not match its digest or size (raised inside the store's ingest)."""


class BlobStore(Protocol):
    """What the client needs of the content store (kubelet/images/store.py's ContentStore)."""

    def has_blob(self, digest: str) -> bool: ...
    def blob_path(self, digest: str) -> str: ...
    def ingest(self, digest: str, size: int | None = None) -> ContextManager[BinaryIO]: ...


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    # An OAuth2 refresh token (docker login's identitytoken), exchanged at the token
    # server instead of the password.
    identity_token: str = ""

    def __repr__(self) -> str:  # a password never lands in a log line or a traceback
        return f"Credentials(username={self.username!r}, password=<redacted>)"


@dataclass(frozen=True)
class RegistryHostConfig:
    """One registry host's entry in the node's registry config (kubelet/images/hosts.py
    reads registries.yaml into these), keyed by host[:port] or "*" (every host that has no
    entry of its own).

    As the images *of* that registry: `mirrors` (API roots, `https://mirror.lab:5000/v2`)
    are tried in order before the registry's own endpoint, with `rewrite` ((regex,
    replacement) pairs, Go's `$1` syntax, first that changes it wins) applied to the
    repository on mirrors only. As a host *connected to* (its own endpoint, or a mirror
    endpoint on it): the CA, client certificate and credentials. `insecure` makes the
    registry's own endpoint plain HTTP (registries.yaml says that with an `http://`
    endpoint; plain HTTP is used for nothing else)."""
    ca_file: str | None = None
    insecure: bool = False  # plain HTTP
    credentials: Credentials | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    mirrors: tuple[str, ...] = ()
    rewrite: tuple[tuple[str, str], ...] = ()


DOCKER_IO = "docker.io"
DOCKER_IO_ENDPOINT = "registry-1.docker.io"  # docker.io's API host, as containerd's DefaultHost


def default_host(registry: str) -> str:
    """The host serving `registry`'s API (docker.io's is registry-1.docker.io)."""
    return DOCKER_IO_ENDPOINT if registry in (DOCKER_IO, "index.docker.io") else registry


@dataclass(frozen=True)
class Endpoint:
    """One place to pull an image of `registry` from."""
    url: str        # the API root: https://registry.lab:5000/v2, or a mirror's own path
    host: str       # host[:port] of url: whose TLS settings and credentials apply
    registry: str   # the registry the image is named by (docker.io)
    mirror: bool    # a mirror (rewrites apply, ?ns= names the registry), not its own endpoint

    @property
    def params(self) -> dict[str, str]:
        # As containerd: a mirror is told which registry the image is from (pull-through
        # caches that mirror several registries need it).
        return {"ns": self.registry} if self.mirror else {}


_GO_TEMPLATE = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def go_expand(template: str, m: re.Match[str]) -> str:
    """Go's Regexp.Expand: `$1`, `${1}`, `$name`, `${name}`, `$$`; a group that does not
    exist (or did not match) is empty. `$1x` is the group named "1x", as in Go."""
    def sub(t: re.Match[str]) -> str:
        name = t.group(1) or t.group(2)
        if name is None:
            return "$"
        try:
            return m.group(int(name) if name.isdigit() else name) or ""
        except IndexError:
            return ""
    return _GO_TEMPLATE.sub(sub, template)


def rewrite_repository(rewrites: Sequence[tuple[str, str]], repository: str) -> str:
    """The repository as a mirror names it: the first rewrite whose regex changes it
    (every match replaced, as Go's ReplaceAllString), else unchanged."""
    for pattern, replacement in rewrites:
        rx = re.compile(pattern)
        out = rx.sub(lambda m, r=replacement: go_expand(r, m), repository)
        if out != repository:
            return out
    return repository


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class PulledImage:
    registry: str
    repository: str
    reference: str
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    config: dict[str, Any]
    layers: list[Layer]
    diff_ids: list[str]
    # Bytes fetched from the registry for this pull (blobs the store had are not counted).
    fetched_bytes: int = 0
    size: int = 0  # config + layers, as the manifest gives them
    endpoint: str = ""  # the API root it came from (a mirror's, or the registry's own)


Platform = tuple[str, ...]  # (os, architecture) or (os, architecture, variant)

def node_platform() -> Platform:
    """This node's platform in OCI terms (GOOS/GOARCH names, a variant for 32-bit arm)."""
    machine = os.uname().machine.lower()
    if machine == "armv7l":
        return ("linux", "arm", "v7")
    if machine == "armv6l":
        return ("linux", "arm", "v6")
    return (goos(), goarch(machine))


def _platform_name(p: Mapping[str, Any]) -> str:
    name = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return name + (f"/{p['variant']}" if p.get("variant") else "")


def _matches(want: Platform, p: Mapping[str, Any]) -> bool:
    if p.get("os") != want[0] or p.get("architecture") != want[1]:
        return False
    if len(want) < 3 or not want[2]:
        return True
    variant = p.get("variant") or ""
    # containerd treats arm64 with no variant as arm64/v8.
    if want[1] == "arm64" and variant in ("", "v8") and want[2] in ("", "v8"):
        return True
    return bool(variant == want[2])


def select_platform(index: Mapping[str, Any], want: Platform, registry: str, what: str) -> dict[str, Any]:
    """The index entry for `want`; PlatformNotFound naming the ones there are."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    for m in entries:
        if _matches(want, m.get("platform") or {}) and m.get("mediaType", OCI_MANIFEST) in IMAGE_MANIFESTS:
            return m
    available = sorted({_platform_name(m.get("platform") or {}) for m in entries if m.get("platform")})
    raise PlatformNotFound(
        f"no image for platform {'/'.join(x for x in want if x)} in {what} from {registry}; "
        f"available: {', '.join(available) or 'none'}", registry=registry, available=available)


# -- credentials ------------------------------------------------------------------------

_DEFAULT_REGISTRY_HOST = "index.docker.io"


def _parse_key(key: str) -> tuple[str, str]:
    """A dockerconfigjson key as (host[:port], path), as Kubernetes' keyring reads it:
    the scheme is optional, and /v1/ or /v2/ after the host means the host itself."""
    value = key if key.startswith(("http://", "https://")) else "https://" + key
    parts = urlsplit(value)
    path = parts.path
    if path.startswith(("/v1/", "/v2/")):
        path = path[3:]
    path = path.rstrip("/")
    return (parts.netloc.lower(), path)


def _host_matches(pattern: str, host: str) -> bool:
    """Kubernetes' URLsMatch for the host part: equal ports, and each dot-separated label
    matches, where a pattern label may be a glob (`*.lab.example`)."""
    p_host, _, p_port = pattern.partition(":")
    h_host, _, h_port = host.partition(":")
    if p_port != h_port:
        return False
    p_labels, h_labels = p_host.split("."), h_host.split(".")
    if len(p_labels) != len(h_labels):
        return False
    return all(fnmatch.fnmatchcase(h, p) for p, h in zip(p_labels, h_labels))


def _is_default_registry(host: str) -> bool:
    return host in ("docker.io", "index.docker.io", "registry-1.docker.io")


def _entry_credentials(entry: Mapping[str, Any]) -> Credentials | None:
    if entry.get("username") or entry.get("password"):
        return Credentials(str(entry.get("username") or ""), str(entry.get("password") or ""))
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if sep:
            return Credentials(user, password)
    return None


def credentials_for(host: str, dockerconfigjsons: Sequence[Mapping[str, Any]],
                    repository: str = "") -> list[Credentials]:
    """The credentials for an image at `host`/`repository`, most specific key first, from
    dockerconfigjson documents (`{"auths": {key: {"auth": ...} or username/password}}`,
    the `.dockerconfigjson` of kubernetes.io/dockerconfigjson Secrets, in the order the
    kubelet reads them: the pod's imagePullSecrets, then its ServiceAccount's).

    As Kubernetes' keyring: a key may carry a scheme and /v1/ or /v2/; a key's path
    must be a prefix of the repository; host labels may be globs; a key for
    docker.io's default registry (`https://index.docker.io/v1/`, `index.docker.io`)
    also serves `docker.io`. The kubelet tries each in turn until one is accepted."""
    host = host.lower()
    image_path = "/" + repository if repository else ""
    found: list[tuple[str, Credentials]] = []
    default: list[Credentials] = []
    for doc in dockerconfigjsons:
        auths = doc.get("auths") if isinstance(doc, Mapping) else None
        if not isinstance(auths, Mapping):
            continue
        for key, entry in auths.items():
            if not isinstance(entry, Mapping):
                continue
            creds = _entry_credentials(entry)
            if creds is None:
                continue
            k_host, k_path = _parse_key(str(key))
            if k_host == _DEFAULT_REGISTRY_HOST and not k_path:
                default.append(creds)
            if _host_matches(k_host, host) and (
                    not k_path or image_path == k_path or image_path.startswith(k_path + "/")):
                found.append((k_host + k_path, creds))
    # Longest (most specific) key first; a stable sort keeps the documents' order within one key.
    found.sort(key=lambda kc: len(kc[0]), reverse=True)
    result = [c for _, c in found]
    if not result and _is_default_registry(host):
        result = default
    return result


# -- the client -------------------------------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` as ("bearer", {params})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


@dataclass
class _Token:
    value: str
    expires: float  # on the client's clock (monotonic)


def _error_detail(response: httpx.Response) -> str:
    """The first error of a distribution-spec error body: `MANIFEST_UNKNOWN: manifest unknown`."""
    try:
        errors = json.loads(response.content).get("errors") or []
        e = errors[0]
        return f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError, httpx.ResponseNotRead):
        return ""


def _cause(e: BaseException) -> str:
    """The root cause of a connection error, as a person reads it ("connection refused"
    rather than httpx's "All connection attempts failed")."""
    seen = e
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
        if isinstance(seen, ssl.SSLError):
            return str(seen)
        if isinstance(seen, OSError) and (seen.errno or seen.strerror):
            if isinstance(seen.errno, int) and seen.errno > 0:  # not a resolver (gaierror) code
                return os.strerror(seen.errno).lower()
            return str(seen.strerror).lower()
    return str(e)


def _who(creds: Credentials | None) -> str:
    if creds is None:
        return ""
    return hashlib.sha256(f"{creds.username}\0{creds.password}".encode()).hexdigest()


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """Pulls images; one per kubelet, shared by its pulls (tokens and connections are
    reused). `registries` maps a host[:port] to how to reach it."""

    def __init__(self, registries: Mapping[str, RegistryHostConfig] | None = None, *,
                 timeout: float = 30.0, max_parallel_blobs: int = 3,
                 clock: Callable[[], float] = time.monotonic):
        self._registries = dict(registries or {})
        self._timeout = timeout
        self._clock = clock  # token expiry; injectable so tests need not wait for it
        self._clients: dict[str, httpx.AsyncClient] = {}
        # Tokens and "this host wants Basic" are remembered per identity (_who), so one
        # pod's imagePullSecret never authorizes another pod's pull.
        self._tokens: dict[tuple[str, str, str], _Token] = {}  # (host, who, scope)
        self._basic: set[tuple[str, str]] = set()  # (host, who)
        self._parallel = max_parallel_blobs
        self.blob_requests = 0  # GETs of blobs sent, for tests and metrics
        # Concurrent pulls through this client that need one blob share its download.
        self._inflight: dict[tuple[int, str], asyncio.Future[int]] = {}

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _registry_config(self, registry: str) -> RegistryHostConfig:
        """The entry for the images of `registry`: its own, else "*"'s."""
        return self._registries.get(registry) or self._registries.get("*") or RegistryHostConfig()

    def _host_config(self, ep: Endpoint) -> RegistryHostConfig:
        """The TLS settings and credentials for connecting to `ep`, as k3s picks them: the
        entry of the endpoint's host (docker.io's for registry-1.docker.io); for the
        registry's own endpoint, "*"'s when the registry has no entry."""
        cfg = self._registries.get(ep.host)
        if cfg is None and ep.host == DOCKER_IO_ENDPOINT:
            cfg = self._registries.get(DOCKER_IO)
        if cfg is None and not ep.mirror:
            cfg = self._registries.get("*")
        return cfg or RegistryHostConfig()

    def endpoints(self, registry: str) -> list[Endpoint]:
        """Where an image of `registry` is pulled from, in order: its mirrors, then the
        registry itself (always last, as containerd's default endpoint; a mirror naming
        that same URL is the same endpoint)."""
        cfg = self._registry_config(registry)
        own_host = default_host(registry)
        own = f"{'http' if cfg.insecure else 'https'}://{own_host}/v2"
        out: list[Endpoint] = []
        seen = {own}
        for url in cfg.mirrors:
            url = url.rstrip("/")
            if url in seen:
                continue
            seen.add(url)
            out.append(Endpoint(url, urlsplit(url).netloc, registry, True))
        out.append(Endpoint(own, own_host, registry, False))
        return out

    def _client(self, ep: Endpoint) -> httpx.AsyncClient:
        scheme = urlsplit(ep.url).scheme
        key = f"{scheme}://{ep.host}"
        c = self._clients.get(key)
        if c is None:
            cfg = self._host_config(ep)
            verify: ssl.SSLContext | bool = True
            if scheme == "https" and (cfg.ca_file or cfg.cert_file or cfg.insecure_skip_verify):
                ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
                if cfg.insecure_skip_verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                if cfg.cert_file:
                    ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
                verify = ctx

            async def no_downgrade(request: httpx.Request) -> None:
                # A redirect (blob GETs go to storage) never takes an https endpoint's
                # request to plain HTTP.
                if scheme == "https" and request.url.scheme != "https":
                    raise RegistryError(f"registry {ep.host} redirected to {request.url.scheme}://"
                                        f"{request.url.netloc.decode()}: plain HTTP is only used for "
                                        "endpoints configured as http://", registry=ep.host)

            c = httpx.AsyncClient(verify=verify, timeout=self._timeout, follow_redirects=True,
                                  trust_env=False, event_hooks={"request": [no_downgrade]})
            self._clients[key] = c
        return c

    def _url(self, ep: Endpoint, path: str) -> str:
        return f"{ep.url}/{path}"

    # -- auth --

    def _auth_header(self, host: str, scope: str, creds: Credentials | None) -> str | None:
        tok = self._tokens.get((host, _who(creds), scope))
        if tok is not None and tok.expires > self._clock():
            return f"Bearer {tok.value}"
        if creds is not None and (host, _who(creds)) in self._basic:
            raw = f"{creds.username}:{creds.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        return None

    async def _authenticate(self, ep: Endpoint, scope: str, response: httpx.Response,
                            creds: Credentials | None) -> bool:
        """Answers a 401's challenge; False when there is nothing more to try."""
        host = ep.host
        header = response.headers.get("www-authenticate", "")
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            if creds is None or (host, _who(creds)) in self._basic:
                return False  # nothing to send, or these were refused
            self._basic.add((host, _who(creds)))
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        realm = params["realm"]
        query = {k: v for k, v in (("service", params.get("service")),
                                    ("scope", params.get("scope") or scope)) if v}
        auth = (creds.username, creds.password) if creds else None
        try:
            if creds is not None and creds.identity_token:
                # The OAuth2 refresh-token grant, as containerd's FetchTokenWithOAuth.
                form = {**query, "grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "client_id": "minik8s"}
                r = await self._client(ep).post(realm, data=form)
            else:
                r = await self._client(ep).get(realm, params=query, auth=auth)
        except httpx.HTTPError as e:
            raise RegistryError(f"token request to {realm} for {host} failed: {e}", registry=host) from e
        if r.status_code != 200:
            raise RegistryError(f"{r.status_code} {r.reason_phrase} from {host} (token server {realm})",
                                registry=host, status=r.status_code)
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
            expires_in = int(body.get("expires_in") or DEFAULT_TOKEN_SECONDS)
        except (ValueError, AttributeError, TypeError) as e:
            raise RegistryError(f"bad token response from {realm} for {host}", registry=host) from e
        if not token:
            raise RegistryError(f"token response from {realm} for {host} has no token", registry=host)
        # A little early, so a token does not expire between the check and the request.
        self._tokens[(host, _who(creds), scope)] = _Token(token, self._clock() + max(expires_in - 5, 1))
        return True

    async def _send(self, ep: Endpoint, path: str, scope: str, creds: Credentials | None,
                    headers: Mapping[str, str] | None = None) -> httpx.Response:
        """GET with auth, streaming; the caller closes the response. Non-2xx raises."""
        host = ep.host
        client = self._client(ep)
        url = self._url(ep, path)
        for _ in range(3):
            h = dict(headers or {})
            auth = self._auth_header(host, scope, creds)
            if auth:
                h["Authorization"] = auth
            try:
                r = await client.send(client.build_request("GET", url, headers=h, params=ep.params), stream=True)
            except httpx.ConnectError as e:
                raise RegistryUnreachable(f"cannot connect to registry {host}: {_cause(e)}", registry=host) from e
            except httpx.TimeoutException as e:
                raise RegistryUnreachable(f"registry {host} timed out: {e}", registry=host) from e
            except httpx.HTTPError as e:
                raise RegistryUnreachable(f"request to registry {host} failed: {e}", registry=host) from e
            if r.status_code == 401:
                await r.aread()
                await r.aclose()
                if await self._authenticate(ep, scope, r, creds):
                    continue
            if r.status_code >= 400:
                await r.aread()
                await r.aclose()
                detail = _error_detail(r)
                raise RegistryError(f"{r.status_code} {r.reason_phrase} from {host}"
                                    + (f": {detail}" if detail else ""),
                                    registry=host, status=r.status_code)
            return r
        raise RegistryError(f"401 Unauthorized from {host}", registry=host, status=401)

    # -- manifests --

    async def _manifest(self, ep: Endpoint, repository: str, reference: str, scope: str,
                        creds: Credentials | None) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest, its digest verified."""
        host = ep.host
        try:
            r = await self._send(ep, f"{repository}/manifests/{reference}", scope, creds,
                                 {"Accept": ACCEPT})
        except RegistryError as e:
            if e.status == 404:
                sep = "@" if DIGEST_RE.match(reference) else ":"
                raise RegistryError(f"manifest unknown: {host}/{repository}{sep}{reference} not found "
                                    f"(404 Not Found from {host})", registry=host, status=404) from e
            raise
        try:
            data = bytearray()
            async for chunk in r.aiter_bytes():
                data += chunk
                if len(data) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"manifest {repository}:{reference} from {host} is over "
                                        f"{MAX_MANIFEST_BYTES} bytes", registry=host)
        except httpx.HTTPError as e:
            raise RegistryError(f"reading manifest {repository}:{reference} from {host} failed: {e}",
                                registry=host) from e
        finally:
            await r.aclose()
        body = bytes(data)
        digest = _digest_of(body)
        if DIGEST_RE.match(reference) and digest != reference:
            raise RegistryError(f"manifest {repository}@{reference} from {host} has digest {digest}",
                                registry=host)
        header = r.headers.get("docker-content-digest", "")
        if header.startswith("sha256:") and header != digest:
            raise RegistryError(f"manifest {repository}:{reference} from {host} has digest {digest}, "
                                f"Docker-Content-Digest says {header}", registry=host)
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise RegistryError(f"manifest {repository}:{reference} from {host} is not JSON",
                                registry=host) from e
        if not isinstance(doc, dict):
            raise RegistryError(f"manifest {repository}:{reference} from {host} is not a JSON object",
                                registry=host)
        media_type = str(doc.get("mediaType") or r.headers.get("content-type", "").split(";")[0].strip())
        if not media_type:
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        return body, media_type, digest

    # -- blobs --

    async def _fetch_blob(self, ep: Endpoint, repository: str, scope: str, creds: Credentials | None,
                          digest: str, size: int | None, store: BlobStore) -> int:
        """Streams one blob into the store, or waits for the download of it already under
        way for the same store; bytes fetched by this call."""
        key = (id(store), digest)
        running = self._inflight.get(key)
        if running is not None:
            try:
                await asyncio.shield(running)
                return 0
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # this pull was cancelled
                # The pull that was downloading it was cancelled: download it here.
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            n = await self._download_blob(ep, repository, scope, creds, digest, size, store)
            fut.set_result(n)
            return n
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as e:
            fut.set_exception(e)
            fut.exception()  # the waiters (if any) re-raise it; none waiting is not an error
            raise
        finally:
            if self._inflight.get(key) is fut:
                del self._inflight[key]

    async def _download_blob(self, ep: Endpoint, repository: str, scope: str, creds: Credentials | None,
                             digest: str, size: int | None, store: BlobStore) -> int:
        """Streams one blob into the store; bytes fetched. Retried once on a mismatch."""
        host = ep.host
        last: Exception | None = None
        for _ in range(2):
            if store.has_blob(digest):
                return 0
            self.blob_requests += 1
            r = await self._send(ep, f"{repository}/blobs/{digest}", scope, creds)
            got = 0
            try:
                with store.ingest(digest, size) as f:
                    h = hashlib.sha256()
                    async for chunk in r.aiter_raw(CHUNK):
                        got += len(chunk)
                        if size is not None and got > size:
                            raise BlobDigestMismatch(f"blob {digest} of {repository} from {host} is longer "
                                                     f"than its {size} bytes", registry=host)
                        h.update(chunk)
                        f.write(chunk)
                    if size is not None and got != size:
                        raise BlobDigestMismatch(f"blob {digest} of {repository} from {host} is truncated: "
                                                 f"{got} of {size} bytes", registry=host)
                    if "sha256:" + h.hexdigest() != digest:
                        raise BlobDigestMismatch(f"blob {digest} of {repository} from {host} does not "
                                                 f"match its digest (got sha256:{h.hexdigest()})",
                                                 registry=host)
                return got
            except BlobDigestMismatch as e:
                last = e
            except httpx.HTTPError as e:
                last = BlobDigestMismatch(f"blob {digest} of {repository} from {host}: download broke "
                                          f"after {got} bytes: {e}", registry=host)
            except OSError as e:  # the store's disk: full, or not writable; not retried
                raise RegistryError(f"storing blob {digest} of {repository} from {host} failed: {e}",
                                    registry=host) from e
            except DigestMismatch as e:  # the store's own check
                last = BlobDigestMismatch(f"blob {digest} of {repository} from {host}: {e}", registry=host)
            finally:
                await r.aclose()
        assert last is not None
        raise last

    # -- pull --

    async def pull(self, host: str, repository: str, reference: str, store: BlobStore, *,
                   platform: Platform | None = None,
                   credentials: Credentials | Sequence[Credentials] | None = None) -> PulledImage:
        """Pulls `host/repository:reference` (reference: a tag or sha256 digest) for
        `platform` (default: this node's) into `store`. `credentials`: one, or several
        (credentials_for's list) tried in turn while the registry answers 401/403."""
        given = [credentials] if isinstance(credentials, Credentials) else list(credentials or [])
        rewrites = self._registry_config(host).rewrite
        endpoints = self.endpoints(host)
        first: RegistryError | None = None
        not_found: RegistryError | None = None
        for ep in endpoints:
            repo = rewrite_repository(rewrites, repository) if ep.mirror else repository
            # A pod's credentials were matched to the image's registry: they go to its own
            # endpoint only. The node's are those of the host connected to (k3s's configs).
            pod = [] if ep.mirror else given
            node = self._host_config(ep).credentials
            try:
                img = await self._pull_with(ep, host, repo, reference, store, platform or node_platform(),
                                            [*pod, *([node] if node and node not in pod else [])] or [None])
                return dataclasses.replace(img, repository=repository)
            except RegistryError as e:
                # As containerd's resolver: no answer or an error status moves on to the
                # next endpoint; what is reported is the first error that is not a 404.
                if not (isinstance(e, RegistryUnreachable) or (e.status or 0) >= 400):
                    raise
                if e.status == 404:
                    not_found = not_found or e
                else:
                    first = first or e
                if ep is not endpoints[-1]:
                    log.info("pulling %s/%s:%s from %s failed (%s); trying the next endpoint",
                             host, repository, reference, ep.url, e)
        err = first or not_found
        assert err is not None
        raise err

    async def _pull_with(self, ep: Endpoint, registry: str, repository: str, reference: str,
                         store: BlobStore, want: Platform, tries: list[Credentials | None]) -> PulledImage:
        """Pulls from one endpoint, trying each credential in turn while it answers 401/403."""
        for i, creds in enumerate(tries):
            try:
                return await self._pull(ep, registry, repository, reference, store, want, creds)
            except RegistryError as e:
                if e.status not in (401, 403) or i == len(tries) - 1:
                    raise
        raise AssertionError("unreachable")

    async def _pull(self, ep: Endpoint, registry: str, repository: str, reference: str, store: BlobStore,
                    want: Platform, creds: Credentials | None) -> PulledImage:
        host = ep.host
        scope = f"repository:{repository}:pull"
        body, media_type, digest = await self._manifest(ep, repository, reference, scope, creds)
        if media_type in DOCKER_SCHEMA1:
            raise RegistryError(f"{host}/{repository}:{reference} is a Docker schema 1 manifest, "
                                "which is not supported", registry=host)
        if media_type in INDEXES:
            entry = select_platform(json.loads(body), want, host, f"{repository}:{reference}")
            child = str(entry.get("digest", ""))
            if not DIGEST_RE.match(child):
                raise RegistryError(f"index {repository}:{reference} from {host} has a bad digest {child!r}",
                                    registry=host)
            body, media_type, digest = await self._manifest(ep, repository, child, scope, creds)
        if media_type not in IMAGE_MANIFESTS:
            raise RegistryError(f"{host}/{repository}:{reference}: unsupported manifest type {media_type!r}",
                                registry=host)
        manifest = json.loads(body)
        try:
            cfg = manifest["config"]
            config_desc = (str(cfg["digest"]), int(cfg["size"]))
            layers = [Layer(str(d["digest"]), str(d.get("mediaType", "")), int(d["size"]))
                      for d in manifest["layers"]]
        except (KeyError, TypeError, ValueError) as e:
            raise RegistryError(f"manifest {repository}@{digest} from {host} is malformed: {e!r}",
                                registry=host) from e
        for d in [config_desc[0]] + [la.digest for la in layers]:
            if not DIGEST_RE.match(d):
                raise RegistryError(f"manifest {repository}@{digest} from {host} has an unsupported digest {d!r}",
                                    registry=host)

        fetched = await self._fetch_blob(ep, repository, scope, creds, config_desc[0], config_desc[1], store)
        sem = asyncio.Semaphore(self._parallel)

        async def one(la: Layer) -> int:
            async with sem:
                return await self._fetch_blob(ep, repository, scope, creds, la.digest, la.size, store)

        # One task per distinct layer: an image may list a layer twice.
        unique = list({la.digest: la for la in layers}.values())
        fetched += sum(await asyncio.gather(*(one(la) for la in unique)))

        try:
            with open(store.blob_path(config_desc[0]), "rb") as f:
                config = json.load(f)
            diff_ids = [str(d) for d in config["rootfs"]["diff_ids"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RegistryError(f"image config {config_desc[0]} of {repository} from {host} is malformed: {e!r}",
                                registry=host) from e
        if len(diff_ids) != len(layers):
            raise RegistryError(f"image {repository}@{digest} from {host} has {len(layers)} layers but "
                                f"{len(diff_ids)} diff_ids in its config", registry=host)
        return PulledImage(registry=registry, repository=repository, reference=reference,
                           manifest_digest=digest, manifest_media_type=media_type,
                           config_digest=config_desc[0], config=config, layers=layers,
                           diff_ids=diff_ids, fetched_bytes=fetched,
                           size=config_desc[1] + sum(la.size for la in layers), endpoint=ep.url)


__all__ = ["ACCEPT", "BlobDigestMismatch", "BlobStore", "Credentials", "DOCKER_IO", "DOCKER_IO_ENDPOINT",
           "Endpoint", "Layer", "PlatformNotFound", "PulledImage", "RegistryClient", "RegistryError",
           "RegistryHostConfig", "RegistryUnreachable", "credentials_for", "default_host", "go_expand",
           "node_platform", "parse_challenge", "rewrite_repository", "select_platform"]
