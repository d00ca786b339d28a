"""The front proxy's request headers and the ConfigMap that tells extension servers about them.

kube-apiserver, as the aggregation layer's front proxy, forwards a request to an
extension API server presenting its front-proxy client certificate
(--proxy-client-cert-file) and naming the user it authenticated in headers
(--requestheader-username-headers, --requestheader-group-headers,
--requestheader-extra-headers-prefix; X-Remote-User, X-Remote-Group, X-Remote-Extra-<key>
by kubeadm's flags). It publishes how to trust that in kube-system's
`extension-apiserver-authentication` ConfigMap (k8s.io/apiserver's
authentication_configmap keys), which extension servers read.

What this module guarantees (pure, no I/O):
- `RequestHeaderConfig.to_data()` is the ConfigMap's data exactly as kube-apiserver
  writes it (the list values JSON arrays); `from_data()` reads it back, and missing
  keys give an empty CA (requestheader authentication off) and no header names.
- `headers_for(user, cfg)` are the headers the proxy sends for a user; extra keys are
  lower-cased and percent-escaped as Kubernetes escapes them (url.PathEscape).
- `user_from_headers(headers, cfg)` reads a user back (None when no username header
  is set), unescaping the extra keys.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import quote, unquote

NAMESPACE = "kube-system"
CONFIGMAP = "extension-apiserver-authentication"

CLIENT_CA_KEY = "client-ca-file"
REQUESTHEADER_CA_KEY = "requestheader-client-ca-file"
ALLOWED_NAMES_KEY = "requestheader-allowed-names"
USERNAME_HEADERS_KEY = "requestheader-username-headers"
UID_HEADERS_KEY = "requestheader-uid-headers"
GROUP_HEADERS_KEY = "requestheader-group-headers"
EXTRA_PREFIXES_KEY = "requestheader-extra-headers-prefix"

# kubeadm's values for the --requestheader-* flags (the API server's own defaults are empty).
DEFAULT_USERNAME_HEADERS = ("X-Remote-User",)
DEFAULT_GROUP_HEADERS = ("X-Remote-Group",)
DEFAULT_EXTRA_PREFIXES = ("X-Remote-Extra-",)
DEFAULT_ALLOWED_NAMES = ("front-proxy-client",)


@dataclass(frozen=True)
class RequestHeaderConfig:
    """What an extension server needs to authenticate requests from the front proxy."""
    client_ca: str = ""                 # PEM bundle verifying ordinary client certificates
    requestheader_client_ca: str = ""   # PEM bundle verifying the front proxy's certificate
    allowed_names: tuple[str, ...] = ()  # CNs the front proxy may have; empty: any
    username_headers: tuple[str, ...] = ()
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ()
    extra_prefixes: tuple[str, ...] = ()

    def to_data(self) -> dict[str, str]:
        data = {}
        if self.client_ca:
            data[CLIENT_CA_KEY] = self.client_ca
        if self.requestheader_client_ca:
            data[REQUESTHEADER_CA_KEY] = self.requestheader_client_ca
            for key, value in ((ALLOWED_NAMES_KEY, self.allowed_names),
                               (USERNAME_HEADERS_KEY, self.username_headers),
                               (UID_HEADERS_KEY, self.uid_headers),
                               (GROUP_HEADERS_KEY, self.group_headers),
                               (EXTRA_PREFIXES_KEY, self.extra_prefixes)):
                data[key] = json.dumps(list(value))
        return data

    @classmethod
    def from_data(cls, data: dict[str, str] | None) -> RequestHeaderConfig:
        data = data or {}

        def names(key: str) -> tuple[str, ...]:
            try:
                value = json.loads(data.get(key) or "[]")
            except ValueError:
                return ()
            return tuple(str(v) for v in value) if isinstance(value, list) else ()
        return cls(client_ca=data.get(CLIENT_CA_KEY, ""),
                   requestheader_client_ca=data.get(REQUESTHEADER_CA_KEY, ""),
                   allowed_names=names(ALLOWED_NAMES_KEY), username_headers=names(USERNAME_HEADERS_KEY),
                   uid_headers=names(UID_HEADERS_KEY), group_headers=names(GROUP_HEADERS_KEY),
                   extra_prefixes=names(EXTRA_PREFIXES_KEY))


@dataclass(frozen=True)
class RemoteUser:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


def headers_for(name: str, groups: Iterable[str], extra: dict[str, Iterable[str]], cfg: RequestHeaderConfig,
                uid: str = "") -> list[tuple[str, str]]:
    """The headers the front proxy adds for a user (the first header name of each kind)."""
    out: list[tuple[str, str]] = []
    if cfg.username_headers:
        out.append((cfg.username_headers[0], name))
    if uid and cfg.uid_headers:
        out.append((cfg.uid_headers[0], uid))
    if cfg.group_headers:
        out += [(cfg.group_headers[0], g) for g in groups]
    if cfg.extra_prefixes:
        for key, values in extra.items():
            out += [(cfg.extra_prefixes[0] + quote(key.lower(), safe=""), v) for v in values]
    return out


def user_from_headers(headers: Iterable[tuple[str, str]], cfg: RequestHeaderConfig) -> RemoteUser | None:
    """The user the front proxy named (header names compare case-insensitively)."""
    pairs = [(k.lower(), v) for k, v in headers]
    user_keys = [h.lower() for h in cfg.username_headers]
    name = next((v for k, v in pairs if k in user_keys and v), "")
    if not name:
        return None
    uid_keys = [h.lower() for h in cfg.uid_headers]
    uid = next((v for k, v in pairs if k in uid_keys and v), "")
    group_keys = [h.lower() for h in cfg.group_headers]
    groups = tuple(v for k, v in pairs if k in group_keys)
    extra: dict[str, list[str]] = {}
    for prefix in (p.lower() for p in cfg.extra_prefixes):
        for k, v in pairs:
            if k.startswith(prefix) and len(k) > len(prefix):
                extra.setdefault(unquote(k[len(prefix):]), []).append(v)
    return RemoteUser(name, groups, uid, tuple((k, tuple(v)) for k, v in extra.items()))


def is_front_proxy_header(name: str, cfg: RequestHeaderConfig) -> bool:
    """Whether a header is one the front proxy sets, so a client's own must be dropped."""
    low = name.lower()
    return (low in (h.lower() for h in (*cfg.username_headers, *cfg.uid_headers, *cfg.group_headers))
            or any(low.startswith(p.lower()) for p in cfg.extra_prefixes))
