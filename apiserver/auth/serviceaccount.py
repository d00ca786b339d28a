"""ServiceAccount tokens: issuing them (TokenRequest) and authenticating requests that
carry them, as kube-apiserver does (pkg/serviceaccount, pkg/registry/core/serviceaccount
/storage/token.go), on PyJWT with `cryptography`.

What this module guarantees
- Tokens are JWTs signed RS256 with the key of --service-account-signing-key-file; the
  header's `kid` is the key's ID as Kubernetes computes it (base64url, unpadded, of the
  SHA-256 of the public key's DER), so OIDC discovery consumers and Kubernetes agree.
  Claims have Kubernetes' shape: `iss` (the first --service-account-issuer), `sub`
  `system:serviceaccount:<ns>:<name>`, `aud`, `exp`, `iat`, `nbf`, `jti` and
  `kubernetes.io: {namespace, serviceaccount: {name, uid}, pod|secret: {name, uid},
  node: {name, uid}}` (node only for a token bound to a pod on a node).
- `ServiceAccountTokenAuthenticator.authenticate_token` (the contract of
  apiserver.auth.authn) answers None for anything that is not one of its tokens: not a
  JWT, or an issuer none of --service-account-issuer names. For one of its tokens it
  answers the user, or raises AuthenticationError (a 401) when: no key of
  --service-account-key-file verifies the signature; none of the token's audiences is an
  API audience (--api-audiences, default the issuers); it has expired, is not valid yet,
  or was issued in the future (one minute of leeway, as go-jose's); its ServiceAccount,
  or the Pod or Secret it is bound to, no longer exists, has another uid (deleted and
  made again), or was deleted more than the leeway ago.
- The user is `system:serviceaccount:<ns>:<name>` with uid the ServiceAccount's, groups
  `system:serviceaccounts` and `system:serviceaccounts:<ns>`, and extra
  `authentication.kubernetes.io/pod-name`, `pod-uid` (a pod-bound token),
  `node-name`, `node-uid` and `credential-id` (`JTI=<jti>`), as upstream's
  ServiceAccountInfo.UserInfo().
- `token_request(...)` is the `serviceaccounts/<name>/token` subresource: it checks the
  TokenRequest as kube-apiserver does (expirationSeconds between 600 and 2^32, default
  3600; a boundObjectRef to a Pod or a Secret that exists, whose uid matches when given,
  and a Pod that runs as this ServiceAccount) and answers it with status.token and
  status.expirationTimestamp.
  Simplification: kube-apiserver extends the 3607 s tokens it gives pods' projected
  volumes to a year (--service-account-extend-token-expiration) and caps requests at
  --service-account-max-token-expiration; here a token lives exactly as long as asked
  (the kubelet refreshes it at 80% of its life), and `max_expiration` (0: none) caps a
  request, with the same warning.

`openid_metadata(...)` renders OIDC discovery (`/.well-known/openid-configuration` and
`/openid/v1/jwks`, the --service-account-key-file keys), which relying parties outside the
cluster use to verify these tokens.

Objects are read through `get(resource, namespace, name) -> dict | None` (the server's
watch cache, falling back to etcd), never over HTTP. Signing (~0.3 ms with RSA-2048)
and authenticating (~0.13 ms, the watch cache's reads included; measured on this 2-core
machine) run on the event loop, for every request: kube-apiserver caches token results
for 10 s, which would also let a deleted pod's token live that long.
"""
from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from apiserver.auth.authn import AuthenticationError
from apiserver.auth.authorizer import SERVICE_ACCOUNTS_GROUP, UserInfo, service_account_username
from machinery import errors, times

# The expiration the ServiceAccount admission plugin asks for in a pod's projected token
# (serviceaccount.WarnOnlyBoundTokenExpirationSeconds).
WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS = 60 * 60 + 7
DEFAULT_EXPIRATION_SECONDS = 60 * 60  # TokenRequestSpec's default
MIN_EXPIRATION_SECONDS = 10 * 60
MAX_EXPIRATION_SECONDS = 1 << 32
LEEWAY = 60.0  # go-jose's jwt.DefaultLeeway, used for exp, nbf, iat and deletions

POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
NODE_UID_KEY = "authentication.kubernetes.io/node-uid"
CREDENTIAL_ID_KEY = "authentication.kubernetes.io/credential-id"

TOKEN_REQUEST_GROUP = "authentication.k8s.io"
TOKEN_REQUEST_API_VERSION = "authentication.k8s.io/v1"

Getter = Callable[[str, str, str], Awaitable["dict | None"]]


class KeyFileError(ValueError):
    """A key file that cannot be used: the message names it and says why."""


def key_id(public: rsa.RSAPublicKey) -> str:
    """Kubernetes' key ID of a public key (keyIDFromPublicKey)."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks, rest = [], data
    while (start := rest.find(b"-----BEGIN ")) >= 0:
        end = rest.find(b"-----END ", start)
        stop = rest.find(b"-----", end + 9) if end >= 0 else -1
        if stop < 0:
            break
        blocks.append(rest[start:stop + 5])
        rest = rest[stop + 5:]
    return blocks


def load_signing_key(path: str) -> rsa.RSAPrivateKey:
    """The RSA private key in `path` (PEM, PKCS#1 or PKCS#8)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise KeyFileError(f"failed to read service account signing key file {path}: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"service account signing key file {path} holds no usable private key: {e}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"service account signing key file {path}: only RSA keys (RS256) are supported")
    return key


def load_verification_keys(paths: Sequence[str]) -> list[rsa.RSAPublicKey]:
    """Every RSA key in `paths` (public keys, or private keys whose public half is used;
    several PEM blocks a file, as keyutil.PublicKeysFromFile reads them)."""
    keys: list[rsa.RSAPublicKey] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise KeyFileError(f"failed to read service account key file {path}: {e.strerror or e}") from None
        found = 0
        for block in _pem_blocks(data):
            key: Any
            try:
                if b"PRIVATE KEY" in block.split(b"\n", 1)[0]:
                    key = serialization.load_pem_private_key(block, password=None).public_key()
                else:
                    key = serialization.load_pem_public_key(block)
            except (ValueError, TypeError, NotImplementedError):
                continue
            if isinstance(key, rsa.RSAPublicKey):
                keys.append(key)
                found += 1
        if not found:
            raise KeyFileError(f"service account key file {path} holds no RSA public or private key")
    return keys


@dataclass
class TokenIssuer:
    """Signs ServiceAccount tokens (serviceaccount.JWTTokenGenerator)."""
    key: rsa.RSAPrivateKey
    issuer: str
    clock: Callable[[], float] = time.time
    kid: str = field(init=False)

    def __post_init__(self) -> None:
        self.kid = key_id(self.key.public_key())

    def claims(self, sa: dict, *, audiences: Sequence[str], expiration_seconds: int, now: float,
               pod: dict | None = None, secret: dict | None = None,
               node: dict | None = None) -> dict[str, Any]:
        """serviceaccount.Claims: the public and private claims of a token for `sa`,
        bound to `pod` (and its `node`) or `secret` when given."""
        md = sa["metadata"]
        issued = int(now)

        def ref(obj: dict) -> dict[str, str]:
            omd = obj.get("metadata") or {}
            return {k: v for k, v in (("name", omd.get("name", "")), ("uid", omd.get("uid", ""))) if v}

        private: dict[str, Any] = {"namespace": md["namespace"], "serviceaccount": ref(sa)}
        if pod is not None:
            private["pod"] = ref(pod)
            if node is not None:
                private["node"] = ref(node)
        elif secret is not None:
            private["secret"] = ref(secret)
        return {"aud": list(audiences), "exp": issued + int(expiration_seconds), "iat": issued,
                "iss": self.issuer, "jti": str(uuid.uuid4()), "kubernetes.io": private, "nbf": issued,
                "sub": service_account_username(md["namespace"], md["name"])}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


class ServiceAccountTokenAuthenticator:
    """Authenticates ServiceAccount JWTs (serviceaccount.JWTTokenAuthenticator with the
    bound-token validator); see the module docstring."""

    def __init__(self, keys: Sequence[rsa.RSAPublicKey], *, issuers: Sequence[str],
                 audiences: Sequence[str], get: Getter, clock: Callable[[], float] = time.time):
        if not issuers:
            raise ValueError("at least one issuer is required")
        self.keys = list(keys)
        self.issuers = frozenset(issuers)
        self.audiences = list(audiences) or list(issuers)
        self.get = get
        self.clock = clock

    async def authenticate_token(self, token: str) -> UserInfo | None:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None  # not a JWT: someone else's token
        if not isinstance(unverified, dict) or unverified.get("iss") not in self.issuers:
            return None
        if header.get("alg") != "RS256":
            raise AuthenticationError(f"token signing algorithm {header.get('alg')!r} is not accepted")
        claims = self._verified(token)
        self._check_audience(claims.get("aud"))
        self._check_times(claims)
        return await self._validate(claims)

    def _verified(self, token: str) -> dict[str, Any]:
        # Signature only: the other checks follow, with Kubernetes' own messages.
        options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                   "verify_aud": False, "verify_iss": False}
        for key in self.keys:
            try:
                return jwt.decode(token, key, algorithms=["RS256"], options=options)  # type: ignore[arg-type]
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as e:
                raise AuthenticationError(f"invalid service account token: {e}") from None
        raise AuthenticationError("service account token signature is invalid")

    def _check_audience(self, aud: Any) -> None:
        token_auds = [aud] if isinstance(aud, str) else list(aud or [])
        if not token_auds:
            token_auds = self.audiences  # a legacy token without aud: the API's audiences
        if not set(token_auds) & set(self.audiences):
            raise AuthenticationError(f"token audiences {token_auds} is invalid for the target audiences "
                                      f"{self.audiences}")

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self.clock()
        for name in ("exp", "nbf", "iat"):
            if name in claims and not isinstance(claims[name], (int, float)):
                raise AuthenticationError(f"service account token claim {name} is not a number")
        if "exp" in claims and now > claims["exp"] + LEEWAY:
            raise AuthenticationError("service account token has expired")
        if "nbf" in claims and now + LEEWAY < claims["nbf"]:
            raise AuthenticationError("service account token is not valid yet")
        if "iat" in claims and now + LEEWAY < claims["iat"]:
            raise AuthenticationError("service account token is issued in the future")

    async def _validate(self, claims: dict[str, Any]) -> UserInfo:
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict) or not isinstance(private.get("serviceaccount"), dict):
            raise AuthenticationError("service account token has no kubernetes.io claims")
        namespace = private.get("namespace") or ""
        sa_ref = private["serviceaccount"]
        sa = await self._live("serviceaccounts", namespace, sa_ref)
        if sa is None:
            raise AuthenticationError(f'serviceaccounts "{sa_ref.get("name")}" not found')
        if sa["metadata"].get("uid") != sa_ref.get("uid"):
            raise AuthenticationError(f"service account UID ({sa['metadata'].get('uid')}) does not match "
                                      f"claim ({sa_ref.get('uid')})")
        if self._deleted(sa):
            raise AuthenticationError(f"service account {namespace}/{sa_ref.get('name')} has been deleted")
        extra: dict[str, tuple[str, ...]] = {}
        for resource, ref_key in (("secrets", "secret"), ("pods", "pod")):
            ref = private.get(ref_key)
            if not isinstance(ref, dict):
                continue
            obj = await self._live(resource, namespace, ref)
            if obj is None or self._deleted(obj):
                raise AuthenticationError("service account token has been invalidated")
            if obj["metadata"].get("uid") != ref.get("uid"):
                raise AuthenticationError(f"{ref_key} UID ({obj['metadata'].get('uid')}) does not match "
                                          f"service account {ref_key} ref claim ({ref.get('uid')})")
            if ref_key == "pod":
                extra[POD_NAME_KEY], extra[POD_UID_KEY] = (ref["name"],), (ref["uid"],)
        node = private.get("node")
        if isinstance(node, dict) and node.get("name") and isinstance(private.get("pod"), dict):
            extra[NODE_NAME_KEY] = (node["name"],)
            if node.get("uid"):
                extra[NODE_UID_KEY] = (node["uid"],)
        if isinstance(claims.get("jti"), str) and claims["jti"]:
            extra[CREDENTIAL_ID_KEY] = (f"JTI={claims['jti']}",)
        name = sa["metadata"]["name"]
        return UserInfo(service_account_username(namespace, name),
                        (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
                        sa["metadata"].get("uid", ""), extra)

    async def _live(self, resource: str, namespace: str, ref: dict) -> dict | None:
        name = ref.get("name")
        if not isinstance(name, str) or not name or not namespace:
            return None
        return await self.get(resource, namespace, name)

    def _deleted(self, obj: dict) -> bool:
        """Deleted (marked) more than the leeway ago, as the validator's invalidIfDeletedBefore."""
        ts = obj["metadata"].get("deletionTimestamp")
        if not ts:
            return False
        try:
            return times.parse(ts) < self.clock() - LEEWAY
        except ValueError:
            return True


# -- TokenRequest: the serviceaccounts/<name>/token subresource ------------------------

_BOUND_KINDS = {"Pod": "pods", "Secret": "secrets"}


def _invalid(name: str, field_path: str, value: Any, message: str) -> errors.Invalid:
    """field.Invalid's wording: `spec.x: Invalid value: 60: why` (strings quoted)."""
    shown = value if isinstance(value, int) and not isinstance(value, bool) else orjson.dumps(value).decode()
    return errors.invalid("TokenRequest", name, [{"reason": "FieldValueInvalid", "field": field_path,
                                                 "message": f"Invalid value: {shown}: {message}"}],
                          group=TOKEN_REQUEST_GROUP)


async def token_request(issuer: TokenIssuer, get: Getter, namespace: str, name: str, body: Any, *,
                        audiences: Sequence[str], max_expiration: int = 0,
                        warnings: list[str] | None = None) -> dict:
    """The answer to a TokenRequest `body` for ServiceAccount `namespace/name` (see the
    module docstring); APIError for anything the caller got wrong."""
    if not isinstance(body, dict):
        raise errors.BadRequest("the body of the request must be a TokenRequest")
    if body.get("kind") not in (None, "TokenRequest") or \
            body.get("apiVersion") not in (None, TOKEN_REQUEST_API_VERSION):
        raise errors.BadRequest(f"the body must be a TokenRequest of {TOKEN_REQUEST_API_VERSION}, not "
                                f"{body.get('apiVersion')}/{body.get('kind')}")
    md = body.get("metadata") or {}
    spec = body.get("spec") or {}
    if not isinstance(md, dict) or not isinstance(spec, dict):
        raise errors.BadRequest("metadata and spec of a TokenRequest must be objects")
    if md.get("name") and md["name"] != name:
        raise _invalid(name, "metadata.name", md["name"], "must match the service account name if specified")
    if md.get("namespace") and md["namespace"] != namespace:
        raise _invalid(name, "metadata.namespace", md["namespace"],
                       "must match the service account namespace if specified")
    sa = await get("serviceaccounts", namespace, name)
    if sa is None:
        raise errors.not_found("serviceaccounts", name)
    sa_uid = sa["metadata"].get("uid", "")
    if md.get("uid") and md["uid"] != sa_uid:
        raise errors.conflict("TokenRequest", name, TOKEN_REQUEST_GROUP,
                              why=f"the UID in the token request ({md['uid']}) does not match the UID of "
                                  f"the service account ({sa_uid})")
    auds = spec.get("audiences")
    if auds in (None, []):
        auds = list(audiences)
    if not isinstance(auds, list) or not all(isinstance(a, str) and a for a in auds):
        raise _invalid("", "spec.audiences", auds, "must be a list of non-empty strings")
    expiration = spec.get("expirationSeconds", DEFAULT_EXPIRATION_SECONDS)
    if expiration is None:
        expiration = DEFAULT_EXPIRATION_SECONDS
    if isinstance(expiration, bool) or not isinstance(expiration, int):
        raise _invalid("", "spec.expirationSeconds", expiration, "must be an integer")
    if expiration < MIN_EXPIRATION_SECONDS:
        raise _invalid("", "spec.expirationSeconds", expiration, "may not specify a duration less than 10 minutes")
    if expiration > MAX_EXPIRATION_SECONDS:
        raise _invalid("", "spec.expirationSeconds", expiration, "may not specify a duration larger than 2^32 seconds")

    pod = secret = node = None
    ref = spec.get("boundObjectRef")
    if ref is not None:
        if not isinstance(ref, dict):
            raise errors.BadRequest("spec.boundObjectRef must be an object")
        kind, api_version = ref.get("kind") or "", ref.get("apiVersion") or ""
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        resource = _BOUND_KINDS.get(kind) if group == "" else None
        if resource is None:
            gvk = f"{group}/{api_version.rpartition('/')[2]}, Kind={kind}"
            raise errors.BadRequest(f"cannot bind token to object of type {gvk}")
        ref_name = ref.get("name")
        if not isinstance(ref_name, str) or not ref_name:
            raise errors.BadRequest("spec.boundObjectRef.name is required")
        bound = await get(resource, namespace, ref_name)
        if bound is None:
            raise errors.not_found(resource, ref_name)
        if kind == "Pod":
            pod = bound
            if (pod.get("spec") or {}).get("serviceAccountName") != name:
                raise errors.BadRequest(f'cannot bind token for serviceaccount "{name}" to pod running with '
                                        f"different serviceaccount name.")
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name:
                node = await get("nodes", "", node_name) or {"metadata": {"name": node_name}}
        else:
            secret = bound
        if ref.get("uid") and ref["uid"] != bound["metadata"].get("uid"):
            raise errors.conflict(kind, ref_name, why=f"the UID in the bound object reference ({ref['uid']}) "
                                                      f"does not match the UID in record. The object might "
                                                      f"have been deleted and then recreated")
    if max_expiration > 0 and expiration > max_expiration:
        if warnings is not None:
            warnings.append(f"requested expiration of {expiration} seconds shortened to {max_expiration} seconds")
        expiration = max_expiration

    now = issuer.clock()
    claims = issuer.claims(sa, audiences=auds, expiration_seconds=expiration, now=now,
                           pod=pod, secret=secret, node=node)
    out_spec: dict[str, Any] = {"audiences": auds, "expirationSeconds": expiration}
    if ref is not None:
        out_spec["boundObjectRef"] = {k: v for k, v in ref.items() if k in ("kind", "apiVersion", "name", "uid")}
    return {"kind": "TokenRequest", "apiVersion": TOKEN_REQUEST_API_VERSION,
            "metadata": {"name": name, "namespace": namespace, "uid": sa_uid,
                         "creationTimestamp": times.rfc3339(now)},
            "spec": out_spec,
            "status": {"token": issuer.sign(claims),
                       "expirationTimestamp": times.rfc3339(int(now) + expiration)}}


@dataclass
class ServiceAccounts:
    """What the API server needs for ServiceAccount tokens: the issuer, the authenticator,
    the API's audiences (a TokenRequest's default) and the expiration cap (0: none)."""
    issuer: TokenIssuer
    authenticator: ServiceAccountTokenAuthenticator
    audiences: list[str]
    max_expiration: int = 0


# -- OIDC discovery (pkg/serviceaccount/openidmetadata.go, pkg/routes/openidmetadata.go) ----

OPENID_CONFIG_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"
OPENID_MAX_AGE = 3600  # the Cache-Control max-age kube-apiserver gives static keys
JWKS_CONTENT_TYPE = "application/jwk-set+json"


def _b64_uint(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def jwk(public: rsa.RSAPublicKey) -> dict[str, str]:
    """A public key as go-jose marshals it into a JWKS (its field order)."""
    numbers = public.public_numbers()
    return {"use": "sig", "kty": "RSA", "kid": key_id(public), "alg": "RS256",
            "n": _b64_uint(numbers.n), "e": _b64_uint(numbers.e)}


def openid_metadata(issuer: str, keys: Sequence[rsa.RSAPublicKey], *, jwks_uri: str = "",
                    external_address: str = "") -> tuple[bytes, bytes]:
    """(the discovery document, the JWKS) for the ServiceAccount issuer, as kube-apiserver
    renders them. ValueError, as NewOpenIDMetadataProvider's, when the issuer is no https
    URL (kube-apiserver then logs it and serves neither path). The jwks_uri is `jwks_uri`
    (--service-account-jwks-uri), else https://<external_address>/openid/v1/jwks."""
    from urllib.parse import urlsplit
    iss = urlsplit(issuer)
    if iss.scheme != "https":
        raise ValueError(f"issuer URL must use https scheme, got: {issuer}")
    if iss.query or iss.fragment:
        raise ValueError(f"issuer URL may not include a query or a fragment, got: {issuer}")
    if not jwks_uri:
        if not external_address:
            raise ValueError("either the JWKS URI or the default external address, or both, must be set")
        jwks_uri = f"https://{external_address}{JWKS_PATH}"
    elif urlsplit(jwks_uri).scheme != "https":
        raise ValueError(f"jwksURI requires https scheme, parsed as: {jwks_uri}")
    if not keys:
        raise ValueError("no keys provided for validating keyset")
    keyset = {"keys": [jwk(k) for k in keys]}
    config = {"issuer": issuer, "jwks_uri": jwks_uri, "response_types_supported": ["id_token"],
              "subject_types_supported": ["public"],
              "id_token_signing_alg_values_supported": sorted({k["alg"] for k in keyset["keys"]})}
    return orjson.dumps(config), orjson.dumps(keyset)


def from_flags(*, get: Getter, signing_key_file: str | None = None, key_files: Sequence[str] = (),
               issuers: Sequence[str] = (), api_audiences: Sequence[str] = (), max_expiration: int = 0,
               clock: Callable[[], float] = time.time) -> ServiceAccounts:
    """kube-apiserver's --service-account-* and --api-audiences flags, checked as it checks
    them (KeyFileError or ValueError with a one-line message). Without a signing key file
    an ephemeral RSA key is made for this process (for plain-HTTP experiments: its tokens
    die with it); without a key file the signing key's public half verifies."""
    issuers = [i for i in issuers if i] or ["https://kubernetes.default.svc.cluster.local"]
    audiences = [a for a in api_audiences if a] or list(issuers)
    if signing_key_file:
        signing = load_signing_key(signing_key_file)
    else:
        signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = load_verification_keys(key_files) if key_files else [signing.public_key()]
    if key_id(signing.public_key()) not in {key_id(k) for k in keys}:
        raise ValueError("the service account signing key's public key is not in --service-account-key-file")
    issuer = TokenIssuer(signing, issuers[0], clock=clock)
    authn = ServiceAccountTokenAuthenticator(keys, issuers=issuers, audiences=audiences, get=get, clock=clock)
    return ServiceAccounts(issuer, authn, audiences, max_expiration)
