"""Encryption at rest: kube-apiserver's `--encryption-provider-config`, as a layer over a Store.

What this module guarantees
- `load_config(path)` reads an `apiserver.config.k8s.io/v1` EncryptionConfiguration (YAML
  or JSON) and checks it whole; anything wrong is one `ConfigError` whose message is one
  line naming the field (`resources[0].providers[0].aescbc.keys[0].secret: ...`). Key
  material never appears in a message.
- Providers, with Kubernetes' stored formats (k8s.io/apiserver/pkg/storage/value/encrypt),
  each value prefixed `k8s:enc:<provider>:v1:<key name>:`:
  - `aescbc`: a random 16-byte IV, then AES-CBC of the value with PKCS#7 padding; keys of
    16, 24 or 32 bytes.
  - `aesgcm`: a random 12-byte nonce, then AES-GCM of the value with the etcd key as
    additional authenticated data, so a value copied to another key does not decrypt;
    keys of 16, 24 or 32 bytes. (Random 96-bit nonces: rotate a key well before 2^32
    writes, as Kubernetes' documentation says.)
  - `secretbox`: a random 24-byte nonce, then XSalsa20-Poly1305 (libsodium through
    PyNaCl, the same construction as Go's x/crypto/nacl/secretbox); keys of 32 bytes.
  - `identity`: the value as is, without a prefix; it refuses to return a value that
    starts with `k8s:enc:` (Kubernetes' EncryptCheckTransformer), so a missing key is an
    error rather than ciphertext served as an object.
  `kms` is recognised and refused: there is no KMS plugin here.
- Which rule applies to a resource is kube-apiserver's choice: its name
  (`secrets`, `deployments.apps`), else `*.<group>` (`*.` for the core group), else
  `*.*`; a name in two rules takes the first.
- Per resource, the first provider (and within it, the first key) encrypts every write;
  every key can decrypt what carries its prefix (keys sharing a name are tried in
  order, as Kubernetes' prefix transformers do), so adding a key in second place,
  restarting, moving it first, restarting and re-writing every object rotates keys
  without a moment when a value cannot be read. A value read with anything but the
  first provider's first key is *stale*: `KeyValue.stale` says so, and the resource layer
  then writes it back even when the update changes nothing, which is what makes
  `kubectl replace` (and `minik8s secrets-encrypt reencrypt`) re-encrypt.
- `EncryptedStore(store, transformers)` is a Store: values under the configured key
  prefixes are encrypted on the way in and decrypted on the way out, in gets, lists,
  failed compare-and-swaps, deletes and watch events (value and previous value) alike.
  Keys, revisions and everything else pass through unchanged. A value that no provider
  can read is a StorageError naming the key, from `open` (which reads every configured
  value once, so the server stops at start), a get (answered 500, as kube-apiserver
  does), a list, or a watch (which it ends); ciphertext is never returned as a value.
- The configuration is read once at start: there is no automatic reload
  (kube-apiserver's --encryption-provider-config-automatic-reload). Restart the server to
  change keys.

Concurrency: the transformers hold only immutable keys; encryption runs inline on the
event loop: for a 1.5 KB value, encrypt / decrypt take aescbc 7.5 / 5.5 us, aesgcm 1.1 /
1.3 us, secretbox 3.8 / 4.3 us on the project's 2-core machine, too little to hand to a
thread.
"""
from __future__ import annotations

import base64
import binascii
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.exceptions import InvalidTag

from apiserver.storage.interface import Batch, Event, KeyValue, ListResult, StorageError, Store


API_VERSION = "apiserver.config.k8s.io/v1"
KIND = "EncryptionConfiguration"
ENC_PREFIX = b"k8s:enc:"
PROVIDERS = ("aescbc", "aesgcm", "secretbox", "identity", "kms")
AES_KEY_SIZES = (16, 24, 32)


class ConfigError(ValueError):
    """An EncryptionConfiguration that cannot be used; the message is one line."""


class TransformError(Exception):
    """A stored value that a provider recognises but cannot decrypt."""


# -- providers: one key each -------------------------------------------------------------


class _Key:
    """One named key of one provider: its stored prefix and its cipher."""
    provider = ""

    def __init__(self, name: str, secret: bytes):
        self.name = name
        self.prefix = f"k8s:enc:{self.provider}:v1:{name}:".encode()
        self._setup(secret)

    def _setup(self, secret: bytes) -> None:
        raise NotImplementedError

    def seal(self, data: bytes, key: str) -> bytes:
        raise NotImplementedError

    def open(self, data: bytes, key: str) -> bytes:
        raise NotImplementedError


class _AESCBC(_Key):
    provider = "aescbc"

    def _setup(self, secret: bytes) -> None:
        self._secret = secret

    def seal(self, data: bytes, key: str) -> bytes:
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(self._secret), modes.CBC(iv)).encryptor()
        return iv + enc.update(padder.update(data) + padder.finalize()) + enc.finalize()

    def open(self, data: bytes, key: str) -> bytes:
        if len(data) < 16:
            raise TransformError("the stored data was shorter than the required size")
        if (len(data) - 16) % 16 or len(data) == 16:
            raise TransformError("the stored data is not a multiple of the block size")
        dec = Cipher(algorithms.AES(self._secret), modes.CBC(data[:16])).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(dec.update(data[16:]) + dec.finalize()) + unpadder.finalize()
        except ValueError:
            raise TransformError("invalid padding on input") from None


class _AESGCM(_Key):
    provider = "aesgcm"

    def _setup(self, secret: bytes) -> None:
        self._aead = AESGCM(secret)

    def seal(self, data: bytes, key: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, key.encode())

    def open(self, data: bytes, key: str) -> bytes:
        if len(data) < 12:
            raise TransformError("the stored data was shorter than the required size")
        try:
            return self._aead.decrypt(data[:12], data[12:], key.encode())
        except InvalidTag:
            raise TransformError("cipher: message authentication failed") from None


class _Secretbox(_Key):
    provider = "secretbox"

    def _setup(self, secret: bytes) -> None:
        import nacl.secret  # libsodium: loaded only when a secretbox key is configured
        self._box = nacl.secret.SecretBox(secret)

    def seal(self, data: bytes, key: str) -> bytes:
        return bytes(self._box.encrypt(data))  # nonce (24 random bytes) + box

    def open(self, data: bytes, key: str) -> bytes:
        import nacl.exceptions
        if len(data) < 24:
            raise TransformError("the stored data was shorter than the required size")
        try:
            return self._box.decrypt(data)
        except nacl.exceptions.CryptoError:
            raise TransformError("output array was not large enough for encryption") from None


_KEY_CLASSES: dict[str, type[_Key]] = {"aescbc": _AESCBC, "aesgcm": _AESGCM, "secretbox": _Secretbox}


class Transformer:
    """One resource's providers in order: the first key of the first provider writes
    (None: identity), every key reads what carries its prefix."""

    def __init__(self, keys: list[_Key | None]):
        self.keys = keys  # None stands for identity, wherever it is in the list
        self.writer = keys[0]
        self.identity = None in keys

    def to_storage(self, data: bytes, key: str) -> bytes:
        if self.writer is None:
            return data
        return self.writer.prefix + self.writer.seal(data, key)

    def from_storage(self, data: bytes, key: str) -> tuple[bytes, bool]:
        """(the plain value, whether it is stale: not written by the current writer)."""
        if data.startswith(ENC_PREFIX):
            failed: list[str] = []
            for i, k in enumerate(self.keys):
                if k is not None and data.startswith(k.prefix):
                    try:
                        return k.open(data[len(k.prefix):], key), i != 0
                    except TransformError as e:  # another key of the same name may read it
                        failed.append(f'{k.provider} key "{k.name}": {e}')
            if failed:
                raise StorageError(f"unable to decrypt {key} with {'; '.join(failed)}")
            if self.identity:  # EncryptCheckTransformer's refusal
                raise StorageError(f"unable to read {key}: identity transformer tried to read "
                                   "encrypted data (no configured key matches its prefix "
                                   f"{data[:data.find(b':', 8) + 1].decode(errors='replace')})")
            raise StorageError(f"unable to read {key}: no matching prefix found")
        if self.identity:
            return data, self.writer is not None
        raise StorageError(f"unable to read {key}: no matching prefix found "
                           "(the value is not encrypted and identity is not configured)")


# -- the configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceRule:
    resources: tuple[str, ...]  # "secrets", "deployments.apps", "*.apps", "*.", "*.*"
    transformer: Transformer


def _fail(path: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {msg}")


def _decode_key(path: str, provider: str, key: Any, sizes: tuple[int, ...]) -> tuple[str, bytes]:
    if not isinstance(key, dict):
        raise _fail(path, "Invalid value: a key must be an object with name and secret")
    name, secret = key.get("name"), key.get("secret")
    if not isinstance(name, str) or not name:
        raise _fail(f"{path}.name", "Required value: key's name is missing")
    if not isinstance(secret, str) or not secret:
        raise _fail(f"{path}.secret", "Required value: key's secret is missing")
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"{path}.secret", 'Invalid value: "REDACTED": secret is not a valid '
                    "base64 string") from None
    if len(raw) not in sizes:
        want = f"one of [{' '.join(map(str, sizes))}]" if len(sizes) > 1 else str(sizes[0])
        raise _fail(f"{path}.secret", f'Invalid value: "REDACTED": secret is not of the '
                    f"expected length, got {len(raw)}, expected {want}")
    return name, raw


def _provider(path: str, item: Any) -> list[_Key | None]:
    if not isinstance(item, dict) or not item:
        raise _fail(path, "Required value: provider does not contain any of the expected "
                    "providers: KMS, AESGCM, AESCBC, Secretbox, Identity")
    names = [k for k in item if k in PROVIDERS]
    unknown = [k for k in item if k not in PROVIDERS]
    if unknown:
        raise _fail(f"{path}.{unknown[0]}", f'Unsupported value: "{unknown[0]}": supported '
                    "values: \"aescbc\", \"aesgcm\", \"secretbox\", \"identity\"")
    if len(names) > 1:
        raise _fail(path, "Invalid value: more than one provider specified in a single "
                    "element, should split into different list elements")
    kind = names[0]
    if kind == "kms":
        raise _fail(f"{path}.kms", "Unsupported value: minik8s has no KMS plugin: use aescbc, "
                    "aesgcm or secretbox")
    if kind == "identity":
        return [None]
    body = item[kind]
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list) or not keys:
        raise _fail(f"{path}.{kind}.keys", "Required value: keys (list) should have at least 1 element")
    sizes = (32,) if kind == "secretbox" else AES_KEY_SIZES
    out: list[_Key | None] = []
    for j, key in enumerate(keys):
        name, secret = _decode_key(f"{path}.{kind}.keys[{j}]", kind, key, sizes)
        out.append(_KEY_CLASSES[kind](name, secret))
    return out


def _resource_name_problem(name: Any) -> str:
    """Why a resources[] entry is refused (Kubernetes' validateResourceNames), or ""."""
    if not isinstance(name, str) or not name:
        return "must be a resource name"
    if name != name.lower():
        return "resource name should not contain capital letters"
    if name == "*":
        return "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
    resource, _, group = name.partition(".")
    if group == "events.k8s.io":
        return ("'*.events.k8s.io' objects are stored using the 'events' API group in etcd. "
                "Use 'events' instead in the config file")
    if group == "*" and resource != "*":
        return "encrypting the same resource across groups is not supported"
    return ""


def _overlap_problem(names: list[str]) -> str:
    """Kubernetes' validateResourceOverlap, within one resources list."""
    if len(set(names)) != len(names):
        return "the same resource cannot be specified multiple times"
    parsed = [n.partition(".")[::2] for n in names]
    for i, (r1, g1) in enumerate(parsed):
        for j, (r2, g2) in enumerate(parsed):
            if i != j and ((r1, g1) == ("*", "*") or (g1 == g2 and "*" in (r1, r2))):
                return ("using overlapping resources such as 'secrets' and '*.' in the same "
                        "resource list is not allowed as they will be masked")
    return ""


def parse_config(doc: Any) -> list[ResourceRule]:
    """The rules of an EncryptionConfiguration document, in order; ConfigError if unusable."""
    if not isinstance(doc, dict):
        raise ConfigError("the file is not an EncryptionConfiguration object")
    if doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        raise ConfigError(f'got kind "{doc.get("kind")}" apiVersion "{doc.get("apiVersion")}", '
                          f'want kind "{KIND}" apiVersion "{API_VERSION}"')
    resources = doc.get("resources")
    if not isinstance(resources, list) or not resources:
        raise _fail("resources", "Required value: resources (list) should have at least 1 element")
    rules = []
    for i, entry in enumerate(resources):
        path = f"resources[{i}]"
        if not isinstance(entry, dict):
            raise _fail(path, "Invalid value: must be an object with resources and providers")
        names = entry.get("resources")
        if not isinstance(names, list) or not names:
            raise _fail(f"{path}.resources", "Required value: resources (list) should have at least 1 element")
        for j, name in enumerate(names):
            problem = _resource_name_problem(name)
            if problem:
                raise _fail(f"{path}.resources[{j}]", f'Invalid value: "{name}": {problem}')
        problem = _overlap_problem(names)
        if problem:
            raise _fail(f"{path}.resources", f"Invalid value: {names}: {problem}")
        providers = entry.get("providers")
        if not isinstance(providers, list) or not providers:
            raise _fail(f"{path}.providers", "Required value: providers (list) should have at least 1 element")
        keys: list[_Key | None] = []
        for j, item in enumerate(providers):
            keys += _provider(f"{path}.providers[{j}]", item)
        rules.append(ResourceRule(tuple(names), Transformer(keys)))
    return rules


def load_config(path: str) -> list[ResourceRule]:
    """Read and check the file at `path`; ConfigError (one line) if it cannot be used."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        return parse_config(doc)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def transformers_by_prefix(rules: Iterable[ResourceRule],
                           resources: Iterable[tuple[str, str, str]]) -> dict[str, Transformer]:
    """{etcd key prefix: transformer} for the served resources, given as (group, plural,
    key prefix), as kube-apiserver picks: the resource by name, else `*.<group>`, else
    `*.*`; of several rules naming the same, the first."""
    by_name: dict[str, Transformer] = {}
    for rule in rules:
        for name in rule.resources:
            by_name.setdefault(name, rule.transformer)
    out: dict[str, Transformer] = {}
    for group, plural, prefix in resources:
        t = by_name.get(f"{plural}.{group}" if group else plural) or \
            by_name.get(f"*.{group}") or by_name.get("*.*")
        if t is not None and prefix not in out:
            out[prefix] = t
    return out


# -- the Store layer ---------------------------------------------------------------------


class EncryptedStore:
    """A Store whose values under the given key prefixes are encrypted at rest."""

    def __init__(self, store: Store, transformers: Mapping[str, Transformer]):
        """transformers: {"/registry/<plural>/": its Transformer}; keys under no prefix
        named there pass through as they are. The mapping is read on every call, so its
        owner may add prefixes (kinds registered later)."""
        self.store = store
        self._by_prefix = transformers

    def _transformer(self, key: str) -> Transformer | None:
        # "/registry/<plural>/..." -> "/registry/<plural>/"; a group's resource (custom
        # resources): "/registry/<group>/<plural>/..." -> "/registry/<group>/<plural>/"
        cut = key.find("/", 10)
        if cut > 0 and "." in key[10:cut]:
            cut = key.find("/", cut + 1)
        return self._by_prefix.get(key[:cut + 1]) if cut > 0 else None

    def _encrypt(self, key: str, value: bytes) -> bytes:
        t = self._transformer(key)
        return value if t is None else t.to_storage(value, key)

    def _decrypt(self, kv: KeyValue) -> KeyValue:
        t = self._transformer(kv.key)
        if t is None:
            return kv
        value, stale = t.from_storage(kv.value, kv.key)
        return replace(kv, value=value, stale=stale)

    def _result(self, result: Any) -> Any:
        return self._decrypt(result) if isinstance(result, KeyValue) else result

    async def open(self) -> None:
        """Open the store, then read every value under the configured prefixes once: a
        value no configured key reads is a StorageError naming it now, so the server
        stops at start instead of waiting for a watch cache that can never list."""
        await self.store.open()
        for prefix in sorted(self._by_prefix):
            start: str | None = None
            revision = 0
            while True:
                page = await self.list(prefix, revision=revision, limit=500, start_key=start)
                if not page.more:
                    break
                revision, start = page.revision, page.items[-1].key + "\x00"

    async def close(self) -> None:
        await self.store.close()

    async def get(self, key: str) -> KeyValue | None:
        kv = await self.store.get(key)
        return None if kv is None else self._decrypt(kv)

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0,
                   start_key: str | None = None) -> ListResult:
        res = await self.store.list(prefix, revision=revision, limit=limit, start_key=start_key)
        return ListResult([self._decrypt(kv) for kv in res.items], res.revision, res.more)

    async def count(self, prefix: str) -> int:
        return await self.store.count(prefix)

    async def create(self, key: str, value: bytes) -> tuple[bool, int | KeyValue | None]:
        ok, result = await self.store.create(key, self._encrypt(key, value))
        return ok, self._result(result)

    async def update(self, key: str, value: bytes,
                     expected_revision: int) -> tuple[bool, int | KeyValue | None]:
        ok, result = await self.store.update(key, self._encrypt(key, value), expected_revision)
        return ok, self._result(result)

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[bool, KeyValue | None]:
        ok, result = await self.store.delete(key, expected_revision)
        return ok, self._result(result)

    async def current_revision(self) -> int:
        return await self.store.current_revision()

    async def compact(self, revision: int) -> None:
        await self.store.compact(revision)

    def _event_value(self, t: Transformer, key: str, value: bytes | None) -> bytes | None:
        return None if value is None else t.from_storage(value, key)[0]

    async def watch(self, prefix: str, from_revision: int, *,
                    prev_values: bool = True) -> AsyncIterator[Batch]:
        stream = self.store.watch(prefix, from_revision, prev_values=prev_values)
        try:
            async for batch in stream:
                out: Batch = []
                for ev in batch:
                    t = self._transformer(ev.key)
                    if t is None:
                        out.append(ev)
                        continue
                    # A value no key reads (another server, configured otherwise, wrote
                    # it) ends the watch with StorageError: skipping it would leave the
                    # watcher's copy silently behind etcd's.
                    out.append(Event(ev.type, ev.key, self._event_value(t, ev.key, ev.value),
                                     self._event_value(t, ev.key, ev.prev_value),
                                     ev.revision, ev.created))
                yield out
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def compactor(self, *, window_seconds: float = 300, interval: float = 60) -> None:
        await self.store.compactor(window_seconds=window_seconds, interval=interval)
