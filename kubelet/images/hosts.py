"""The node's registry config: k3s's registries.yaml (docs.k3s.io, "Private Registry
Configuration"), read into the registry client's per-host `RegistryHostConfig`s.

    mirrors:
      docker.io:                      # a registry host[:port], or "*": every registry
        endpoint:                     #   without an entry of its own
          - "https://mirror.lab:5000"   # tried in order, then the registry itself
        rewrite:
          "^library/(.*)": "dockerhub/$1"   # the repository on the mirrors (Go regexp)
    configs:
      "mirror.lab:5000":              # a host connected to (an endpoint's), or "*"
        auth: {username: u, password: p}   # or auth: base64(u:p), or identitytoken
        tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem, insecure_skip_verify: false}

What it guarantees:
- An endpoint is read as k3s normalizes it: no scheme means https (http for localhost or
  127.0.0.1 on a port other than 443, as containerd does); a path of "", "/" or "/v2" is
  the API root /v2, any other path is used as the API root as given (containerd's
  override_path). `http://` is the only way to plain HTTP.
- A bad file is refused whole with one `RegistryConfigError` line naming the file and
  the key (`registries.yaml: mirrors."docker.io".endpoint[0]: ...`): not YAML, an unknown
  key, a wrong type, an endpoint that is not an http(s) URL, a rewrite that is not a
  regular expression, an `auth` that is not base64 of user:password, a TLS file that
  cannot be read, a certificate without its key. The kubelet and `minik8s up` do not
  start with one.
- `configs` entries are looked up by the host an endpoint is on (docker.io's entry
  serves registry-1.docker.io); "*" serves registries with no entry of their own.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml

from kubelet.images.registry import DOCKER_IO, Credentials, RegistryHostConfig, default_host

_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                      r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_AUTH_KEYS = ("username", "password", "auth", "identitytoken")
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure_skip_verify")


class RegistryConfigError(ValueError):
    """The registry config is invalid; the message is one line naming the file and key."""


def _key(*parts: str | int) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            name = f'"{p}"' if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", p) else p
            out += ("." if out else "") + name
    return out


def _is_localhost(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in ("localhost", "[::1]", "::1") or name.startswith("127.")


def normalize_endpoint(endpoint: str) -> str:
    """An endpoint as k3s/containerd read it, as the URL of its API root
    (`mirror.lab:5000` -> `https://mirror.lab:5000/v2`); ValueError if it is not one."""
    if not endpoint or endpoint != endpoint.strip():
        raise ValueError(f"{endpoint!r} is not a URL")
    url = endpoint if "://" in endpoint else "//" + endpoint
    parts = urlsplit(url)
    host = parts.netloc
    if parts.scheme not in ("", "http", "https"):
        raise ValueError(f"{endpoint!r}: the scheme must be http or https")
    if not host or "@" in host or not _HOST_RE.match(host):
        raise ValueError(f"{endpoint!r} has no valid host[:port]")
    if parts.port is not None and not 0 < parts.port < 65536:
        raise ValueError(f"{endpoint!r}: invalid port")
    if parts.query or parts.fragment:
        raise ValueError(f"{endpoint!r}: an endpoint has no query or fragment")
    scheme = parts.scheme
    if not scheme:
        port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else ""
        scheme = "http" if _is_localhost(host) and port not in ("", "443") else "https"
    host = default_host(host)
    path = parts.path
    if path in ("", "/", "/v2", "/v2/"):
        path = "/v2"
    return f"{scheme}://{host}{path.rstrip('/')}"


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: want a mapping, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise ValueError(f"{where}: key {k!r} is not a string")
    return value


def _unknown(m: Mapping[str, Any], known: tuple[str, ...], *where: str) -> None:
    for k in m:
        if k not in known:
            raise ValueError(f"{_key(*where, k)}: unknown key (want one of {', '.join(known)})")


def _str(value: Any, *where: str | int) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"{_key(*where)}: want a string, got {type(value).__name__}")
    return str(value)


def _host_key(host: str, section: str) -> None:
    if host != "*" and not _HOST_RE.match(host):
        raise ValueError(f"{_key(section, host)}: not a registry host[:port] or \"*\"")


def _readable(path: str, *where: str) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ValueError(f"{_key(*where)}: cannot read {path}: {e.strerror or e}") from None
    return path


def _mirror(host: str, entry: Any) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    m = _mapping(entry, _key("mirrors", host))
    _unknown(m, ("endpoint", "rewrite"), "mirrors", host)
    raw = m.get("endpoint") or []
    if isinstance(raw, str) or not isinstance(raw, list):
        raise ValueError(f"{_key('mirrors', host, 'endpoint')}: want a list of URLs")
    endpoints = []
    for i, e in enumerate(raw):
        try:
            endpoints.append(normalize_endpoint(_str(e, "mirrors", host, "endpoint", i)))
        except ValueError as err:
            where = _key("mirrors", host, "endpoint", i)
            raise ValueError(str(err) if str(err).startswith(where) else f"{where}: {err}") from None
    rewrites = []
    for pattern, replacement in _mapping(m.get("rewrite"), _key("mirrors", host, "rewrite")).items():
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{_key('mirrors', host, 'rewrite', pattern)}: not a regular expression: "
                             f"{err}") from None
        rewrites.append((pattern, _str(replacement, "mirrors", host, "rewrite", pattern)))
    return tuple(endpoints), tuple(rewrites)


def _config(host: str, entry: Any) -> dict[str, Any]:
    m = _mapping(entry, _key("configs", host))
    _unknown(m, ("auth", "tls"), "configs", host)
    out: dict[str, Any] = {}
    auth = _mapping(m.get("auth"), _key("configs", host, "auth"))
    _unknown(auth, _AUTH_KEYS, "configs", host, "auth")
    user, password = _str(auth.get("username"), "configs", host, "auth", "username"), \
        _str(auth.get("password"), "configs", host, "auth", "password")
    token = _str(auth.get("identitytoken"), "configs", host, "auth", "identitytoken")
    encoded = _str(auth.get("auth"), "configs", host, "auth", "auth")
    if encoded and not (user or password):
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise ValueError(f"{_key('configs', host, 'auth', 'auth')}: not base64 of username:password")
    if user or password or token:
        out["credentials"] = Credentials(user, password, identity_token=token)
    tls = _mapping(m.get("tls"), _key("configs", host, "tls"))
    _unknown(tls, _TLS_KEYS, "configs", host, "tls")
    for k in ("ca_file", "cert_file", "key_file"):
        path = _readable(_str(tls.get(k), "configs", host, "tls", k), "configs", host, "tls", k)
        if path:
            out[k] = os.path.abspath(path)
    if bool(out.get("cert_file")) != bool(out.get("key_file")):
        missing = "key_file" if out.get("cert_file") else "cert_file"
        raise ValueError(f"{_key('configs', host, 'tls', missing)}: cert_file and key_file go together")
    skip = tls.get("insecure_skip_verify", False)
    if not isinstance(skip, bool):
        raise ValueError(f"{_key('configs', host, 'tls', 'insecure_skip_verify')}: want true or false")
    if skip:
        out["insecure_skip_verify"] = True
    return out


def parse(doc: Any) -> dict[str, RegistryHostConfig]:
    """The per-host configs of a parsed registries.yaml; ValueError (naming the key) if bad."""
    top = _mapping(doc, "the file")
    _unknown(top, ("mirrors", "configs"))
    mirrors = _mapping(top.get("mirrors"), "mirrors")
    configs = _mapping(top.get("configs"), "configs")
    fields: dict[str, dict[str, Any]] = {}
    for host, entry in mirrors.items():
        _host_key(host, "mirrors")
        endpoints, rewrite = _mirror(host, entry)
        fields.setdefault(_canonical(host), {}).update(mirrors=endpoints, rewrite=rewrite)
    for host, entry in configs.items():
        _host_key(host, "configs")
        fields.setdefault(_canonical(host), {}).update(_config(host, entry))
    return {host: RegistryHostConfig(**f) for host, f in fields.items()}


def _canonical(host: str) -> str:
    return DOCKER_IO if host == "index.docker.io" else host


def load(path: str) -> dict[str, RegistryHostConfig]:
    """The per-host configs in the registries.yaml at `path`; RegistryConfigError, one
    line naming the file and the key, if it cannot be read or is invalid."""
    name = path
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise RegistryConfigError(f"{name}: cannot read the registry config: {e.strerror or e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RegistryConfigError(f"{name}: not valid YAML{where}: {problem}") from None
    try:
        return parse(doc)
    except ValueError as e:
        raise RegistryConfigError(f"{name}: {e}") from None


__all__ = ["RegistryConfigError", "load", "normalize_endpoint", "parse"]
