"""Which proxy, if any, a request goes through: kubeconfig's `proxy-url`, else the
environment, with the rules Go's net/http `ProxyFromEnvironment` applies (client-go's
default), so one shell setting sends kubectl and minik8s the same way.

Guarantees
- `parse_proxy_url` accepts http and https proxy URLs (a URL without a scheme is read as
  http://, as Go does) and answers a `Proxy` carrying the Proxy-Authorization header for
  any user:password in it. socks5 is refused with a clear ValueError: no library in
  minik8s' dependencies speaks SOCKS (httpx would need `socksio`).
  `Proxy.url_with_credentials` gives the URL back with its user:password, for a
  library that takes a proxy URL (kubectl-lite's WebSocket client).
- `EnvProxy` reads HTTP_PROXY / HTTPS_PROXY / NO_PROXY (upper case first, then lower
  case) once, when made. An https URL uses HTTPS_PROXY only and an http URL
  HTTP_PROXY only (no fallback from one to the other); HTTP_PROXY is ignored when
  REQUEST_METHOD is set (a CGI process must not trust a header-set proxy, Go's
  "httpoxy" rule). localhost and loopback addresses never go through a proxy.
- NO_PROXY is a comma-separated list of: `*` (nothing is proxied); IP addresses
  (`10.0.0.1`, `[::1]:6443` with a port); CIDR blocks (`10.0.0.0/8`); host names,
  which match the host and its subdomains (`example.com`, `.example.com` and
  `*.example.com` all match `a.example.com`; the forms with a leading dot or `*.` do
  not match `example.com` itself); any host or IP entry may carry `:port`, which then
  must match too (CIDR blocks match every port). Matching ignores case.
- `choose_proxy(proxy_url, scheme, host, port)` is the one decision client-go's
  transport makes: the kubeconfig's proxy-url for everything, else the environment's.

Concurrency: immutable values; pure functions.
"""
from __future__ import annotations

import base64
import ipaddress
import os
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Proxy:
    scheme: str                      # "http" or "https": how we talk to the proxy itself
    host: str
    port: int
    authorization: str | None = None  # the Proxy-Authorization header's value
    userinfo: str | None = None       # "user:password" as the URL spelled it (percent-encoded)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        if self.userinfo is None:
            return self.url
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{self.userinfo}@{rest}"


def parse_proxy_url(value: str) -> Proxy:
    """A proxy URL as kubeconfig's `proxy-url` or $HTTPS_PROXY hold it -> `Proxy`."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text  # Go: "proxy.example:3128" means an HTTP proxy
    try:
        u = urlsplit(text)
        port = u.port
    except ValueError as e:
        raise ValueError(f"invalid proxy URL {value!r}: {e}") from None
    scheme = u.scheme.lower()
    if scheme in ("socks5", "socks5h"):
        raise ValueError(f"proxy URL {value!r}: socks5 proxies are not supported by minik8s "
                         "(no SOCKS library among its dependencies); use an http or https proxy")
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"proxy URL {value!r}: scheme {u.scheme!r} is not supported "
                         "(http, https)")
    if not u.hostname:
        raise ValueError(f"invalid proxy URL {value!r}: no host")
    auth = userinfo = None
    if u.username is not None:
        pair = f"{unquote(u.username)}:{unquote(u.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
        userinfo = f"{u.username}:{u.password or ''}"
    return Proxy(scheme, u.hostname, port or _DEFAULT_PORTS[scheme], auth, userinfo)


def choose_proxy(proxy_url: str | None, scheme: str, host: str, port: int, *,
                 env: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy a request to scheme://host:port goes through: `proxy_url` (the
    kubeconfig's) whatever the host, else the one the environment chooses."""
    if proxy_url:
        return parse_proxy_url(proxy_url)
    return EnvProxy(env).proxy_for(scheme, host, port)


def _split_host_port(entry: str) -> tuple[str, str]:
    """Go's net.SplitHostPort, leniently: "host:port", "[v6]:port", or a bare host."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class NoProxy:
    """A parsed NO_PROXY value: `matches(host, port)` is True where no proxy is used."""

    def __init__(self, value: str):
        self.all = False
        self._cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._ips: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]] = []
        self._domains: list[tuple[str, str, bool]] = []  # (".suffix", port, also the bare host)
        for raw in value.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.all = True
                return
            if "/" in entry:
                try:
                    self._cidrs.append(ipaddress.ip_network(entry, strict=False))
                    continue
                except ValueError:
                    pass
            host, port = _split_host_port(entry)
            if not host:
                continue
            ip = _ip(host)
            if ip is not None:
                self._ips.append((ip, port))
                continue
            if host.startswith("*."):
                host = host[1:]
            bare = not host.startswith(".")
            self._domains.append((host if not bare else "." + host, port, bare))

    def matches(self, host: str, port: int) -> bool:
        if self.all:
            return True
        host = host.lower().rstrip(".")
        p = str(port)
        ip = _ip(host)
        if ip is not None:
            if any(ip in net for net in self._cidrs if net.version == ip.version):
                return True
            if any(ip == m and (not mp or mp == p) for m, mp in self._ips):
                return True
        return any((host.endswith(suffix) or (bare and host == suffix[1:])) and (not mp or mp == p)
                   for suffix, mp, bare in self._domains)


class EnvProxy:
    """Go's ProxyFromEnvironment: `proxy_for(scheme, host, port)` -> Proxy or None."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name.upper()) or env.get(name.lower()) or ""
        http = get("http_proxy")
        if env.get("REQUEST_METHOD") and env.get("HTTP_PROXY"):
            http = env.get("http_proxy", "")  # CGI: HTTP_PROXY may come from a request header
        self._proxies = {"http": parse_proxy_url(http) if http else None,
                         "https": parse_proxy_url(get("https_proxy")) if get("https_proxy") else None}
        self.no_proxy = NoProxy(get("no_proxy"))

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self._proxies.get(scheme)
        if proxy is None or host.lower() == "localhost":
            return None
        ip = _ip(host)
        if ip is not None and ip.is_loopback:
            return None
        return None if self.no_proxy.matches(host, port) else proxy
