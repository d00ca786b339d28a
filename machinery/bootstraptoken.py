"""Bootstrap tokens and the detached JWS that signs `kube-public/cluster-info`
(Kubernetes' k8s.io/cluster-bootstrap: token/api, token/jws, util/secrets).

What it guarantees
- `parse(token)` accepts only `[a-z0-9]{6}.[a-z0-9]{16}` and answers (id, secret);
  anything else is a ValueError whose message says the expected form, as kubeadm's.
- `secret_value(secret, key)` reads a bootstrap token Secret's field from `data`
  (base64) or, for an object not yet through the API, `stringData`; a missing or
  undecodable field is "".
- `signing_token(secret, now=)` is the controller's validateSecretForSigning: the
  (id, secret) of a Secret whose name is `bootstrap-token-<id>`, whose `token-id`
  matches it, which has a `token-secret`, has not expired and has
  `usage-bootstrap-signing: "true"`; else None. An unparseable `expiration` counts as
  expired, as the API server's authenticator treats it.
- `detached_signature(content, token_id, token_secret)` is byte for byte what
  cluster-bootstrap's ComputeDetachedSignature makes, so that a real kubeadm accepts
  ours and we accept a real cluster's: a compact HS256 JWS (RFC 7515) whose protected
  header is `{"alg":"HS256","kid":<id>}` (sorted keys, no spaces, no `typ`), with the
  payload segment left out (`header..signature`, RFC 7515 Appendix F). The key is the
  token's secret half (not `id.secret`): cluster-bootstrap signs with the secret,
  zero-padded to 32 bytes for go-jose's key-length rule, which HMAC's own zero
  padding makes the same key.
- `signature_is_valid(...)` recomputes and compares in constant time, as
  DetachedTokenIsValid does: any other header, or another token, fails.

PyJWT (already the ServiceAccount token signer) makes the JWS. Its own "detached"
mode is RFC 7797's unencoded payload (`b64: false`), a different format, so the payload
segment is cut out of a normal compact JWS instead, as cluster-bootstrap does with
go-jose. Pure functions; no I/O.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import re
from typing import Any

import jwt

from machinery import times

SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
NAMESPACE = "kube-system"
CLUSTER_INFO = "cluster-info"            # ConfigMap in kube-public
CLUSTER_INFO_NAMESPACE = "kube-public"
KUBECONFIG_KEY = "kubeconfig"
JWS_PREFIX = "jws-kubeconfig-"

TOKEN_ID = "token-id"
TOKEN_SECRET = "token-secret"
EXPIRATION = "expiration"
USAGE_SIGNING = "usage-bootstrap-signing"
USAGE_AUTHENTICATION = "usage-bootstrap-authentication"

_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_ID = re.compile(r"^[a-z0-9]{6}$")


def parse(token: str) -> tuple[str, str]:
    """(id, secret) of a bootstrap token string; ValueError with kubeadm's wording."""
    m = _TOKEN.match(token)
    if m is None:
        raise ValueError(f"the bootstrap token {token!r} was not of the form "
                         f"\"{_TOKEN.pattern.strip('^$')}\"")
    return m.group(1), m.group(2)


def secret_value(secret: dict[str, Any], key: str) -> str:
    raw = (secret.get("data") or {}).get(key)
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
    value = (secret.get("stringData") or {}).get(key)
    return value if isinstance(value, str) else ""


def expiration(secret: dict[str, Any]) -> float | None:
    """The Secret's expiration (epoch seconds), None if it has none; an unparseable one is
    the epoch (expired), as the authenticator and cluster-bootstrap's HasExpired treat it."""
    value = secret_value(secret, EXPIRATION)
    if not value:
        return None
    try:
        return times.parse(value)
    except ValueError:
        return 0.0


def expired(secret: dict[str, Any], *, now: float) -> bool:
    exp = expiration(secret)
    return exp is not None and exp <= now


def token_id_of_name(name: str) -> str | None:
    """The id in a `bootstrap-token-<id>` Secret name (cluster-bootstrap's ParseName)."""
    if not name.startswith(SECRET_PREFIX):
        return None
    tid = name[len(SECRET_PREFIX):]
    return tid if _ID.match(tid) else None


def signing_token(secret: dict[str, Any], *, now: float) -> tuple[str, str] | None:
    if secret.get("type") != SECRET_TYPE:
        return None
    name_id = token_id_of_name((secret.get("metadata") or {}).get("name", ""))
    tid = secret_value(secret, TOKEN_ID)
    if not tid or name_id != tid:
        return None
    tsecret = secret_value(secret, TOKEN_SECRET)
    if not tsecret or expired(secret, now=now):
        return None
    if secret_value(secret, USAGE_SIGNING) != "true":
        return None
    return tid, tsecret


def detached_signature(content: str, token_id: str, token_secret: str) -> str:
    key = token_secret.encode().ljust(32, b"\0")
    full = jwt.api_jws.encode(content.encode(), key, algorithm="HS256",
                              headers={"typ": None, "kid": token_id}, sort_headers=True)
    header, _, signature = full.split(".")
    return f"{header}..{signature}"


def signature_is_valid(detached: str, content: str, token_id: str, token_secret: str) -> bool:
    want = detached_signature(content, token_id, token_secret)
    return hmac.compare_digest(want.encode(), detached.encode())
