"""Controller history (pkg/controller/history): the ControllerRevisions a DaemonSet or a
StatefulSet keeps of its pod template, for rollouts and `kubectl rollout undo`.

What it guarantees:
- `hash_revision(data, probe)` is Kubernetes' HashControllerRevision: FNV-32 (FNV-1, not
  1a) over the revision's data bytes, then the decimal collision count if there is one,
  printed in decimal through SafeEncodeString. Data is a JSON object here; its bytes are
  its compact JSON with sorted keys (Go's encoding of a map, which is what Kubernetes
  hashes after its own JSON round trip), so a revision's hash depends on its content
  only.
- `revision_name(prefix, hash)` is `<prefix>-<hash>`, the prefix cut to 223 characters
  so the name stays a DNS subdomain.
- `new_revision(...)` builds an unsaved revision owned (controller reference) by its
  parent and labelled with the template's labels plus `controller-revision-hash`.
- `create_revision(client, parent, revision, collision_count)` creates it under the hash
  of its data and `collision_count`; a name already taken by an equal revision returns
  that one, a name taken by a different one bumps the count and tries again (as
  realHistory.CreateControllerRevision), returning the count it settled on.
- `owned_revisions` lists the revisions whose controller is the parent (by uid);
  `claim_revisions` also adopts matching orphans and releases owned ones that stopped
  matching, as ClaimControllerRevisions does.
- `find_equal_revisions` / `equal_revision` compare the hash label, then the data.
- `truncate_history` deletes the oldest revisions beyond a limit, never one named in
  `live` (those still backing pods or the current/update revisions).
- `sort_revisions` orders by revision number, then creation time, then name.
- `apply_revision(obj, revision)` is the object as a rollback to that revision makes it
  (ApplyRevision): the revision's data applied as the strategic merge patch it is.

Every function that writes takes the REST client; the rest are pure and never mutate
their arguments.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import orjson

from controller_manager.controller_utils import claim, controller_of, controller_ref
from controller_manager.controllers.deployment import safe_encode
from machinery import errors
from machinery.labels import Selector
from machinery.patch import strategic_merge_patch

HASH_LABEL = "controller-revision-hash"
_MAX_PREFIX = 223  # 253 (a DNS subdomain) less room for the hash


def revision_bytes(data: Any) -> bytes:
    """A revision's data as the bytes Kubernetes hashes: compact JSON, keys sorted, with
    Go's HTML-safe escapes."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return (raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
            .replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029"))


def fnv32(data: bytes) -> int:
    """FNV-1, 32 bits (Go's hash/fnv New32)."""
    h = 0x811C9DC5
    for b in data:
        h = ((h * 0x01000193) & 0xFFFFFFFF) ^ b
    return h


def hash_revision(data: Any, probe: int | None = None) -> str:
    """HashControllerRevision: the hash of a revision's data and a collision count."""
    raw = revision_bytes(data)
    if probe is not None:
        raw += str(probe).encode()
    return safe_encode(str(fnv32(raw)))


def revision_name(prefix: str, hash_: str) -> str:
    return f"{prefix[:_MAX_PREFIX]}-{hash_}"


def new_revision(parent: dict, template_labels: dict | None, data: Any, revision: int,
                 collision_count: int | None = None) -> dict:
    """NewControllerRevision: an unsaved revision of `parent`, named and labelled by its
    hash."""
    md = parent["metadata"]
    hash_ = hash_revision(data, collision_count)
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": revision_name(md["name"], hash_), "namespace": md.get("namespace", ""),
                         "labels": {**(template_labels or {}), HASH_LABEL: hash_},
                         "ownerReferences": [controller_ref(parent)]},
            "data": copy.deepcopy(data), "revision": revision}


def _created(rev: dict) -> tuple:
    md = rev["metadata"]
    return (rev.get("revision", 0), md.get("creationTimestamp") or "", md.get("name", ""))


def sort_revisions(revisions: Iterable[dict]) -> list[dict]:
    return sorted(revisions, key=_created)


def next_revision(revisions: Iterable[dict]) -> int:
    return max((r.get("revision", 0) for r in revisions), default=0) + 1


def equal_revision(a: dict | None, b: dict | None) -> bool:
    """EqualRevision: equal hash labels where both have one, and equal data."""
    if a is None or b is None:
        return a is b
    ha = (a["metadata"].get("labels") or {}).get(HASH_LABEL)
    hb = (b["metadata"].get("labels") or {}).get(HASH_LABEL)
    if ha and hb and ha != hb:
        return False
    return revision_bytes(a.get("data")) == revision_bytes(b.get("data"))


def find_equal_revisions(revisions: Iterable[dict], needle: dict) -> list[dict]:
    return [r for r in revisions if equal_revision(r, needle)]


def owned_revisions(parent: dict, revisions: Iterable[dict]) -> list[dict]:
    """The revisions in parent's namespace whose controller is `parent` (uid checked)."""
    md = parent["metadata"]
    return [r for r in revisions if r["metadata"].get("namespace") == md.get("namespace")
            and (controller_of(r) or {}).get("uid") == md["uid"]]


async def claim_revisions(client, parent: dict, owner_resource: str, selector: Selector,
                          revisions: Iterable[dict]) -> list[dict]:
    """ClaimControllerRevisions: the owned revisions matching `selector`, after adopting
    matching orphans and releasing owned ones that no longer match."""
    ns, uid = parent["metadata"].get("namespace"), parent["metadata"]["uid"]
    mine, undecided = [], []
    for r in revisions:
        if r["metadata"].get("namespace") != ns:
            continue
        ref = controller_of(r)
        matches = selector.matches(r["metadata"].get("labels") or {})
        if ref is None and matches:
            undecided.append(r)
        elif ref is not None and ref.get("uid") == uid:
            (mine if matches else undecided).append(r)
    if undecided:
        mine += await claim(client, parent, owner_resource, selector, undecided, "controllerrevisions")
    return mine


async def create_revision(client, parent: dict, revision: dict,
                          collision_count: int | None) -> tuple[dict, int | None]:
    """Create `revision` under the hash of its data and `collision_count`; -> (the
    stored revision, the collision count used). An equal revision already there is
    returned as it is."""
    count = collision_count
    ns = parent["metadata"].get("namespace", "")
    while True:
        clone = copy.deepcopy(revision)
        hash_ = hash_revision(clone.get("data"), count)
        clone["metadata"]["name"] = revision_name(parent["metadata"]["name"], hash_)
        clone["metadata"]["labels"] = {**(clone["metadata"].get("labels") or {}), HASH_LABEL: hash_}
        try:
            return await client.create(clone, namespace=ns), count
        except errors.AlreadyExists:
            existing = await client.get("controllerrevisions", clone["metadata"]["name"], namespace=ns)
            if equal_revision(existing, clone):
                return existing, count
            count = (count or 0) + 1


def apply_revision(obj: dict, revision: dict) -> dict:
    """ApplyRevision: a new object, `obj` with the revision's data patched in (its
    apiVersion names the group whose patch strategies apply)."""
    group = (obj.get("apiVersion") or "").rpartition("/")[0]
    return strategic_merge_patch(copy.deepcopy(obj), copy.deepcopy(revision.get("data") or {}),
                                 obj.get("kind", ""), group)


async def update_revision(client, revision: dict, number: int) -> dict:
    """Give an existing revision a new revision number (rolling back to it)."""
    if revision.get("revision") == number:
        return revision
    return await client.update({**revision, "revision": number})


async def truncate_history(client, revisions: Iterable[dict], live: set[str], limit: int) -> list[str]:
    """Delete the oldest revisions not in `live` (names) beyond `limit` of them; -> the
    names deleted."""
    history = [r for r in sort_revisions(revisions) if r["metadata"]["name"] not in live]
    doomed = history[:max(len(history) - max(limit, 0), 0)]
    deleted = []
    for r in doomed:
        md = r["metadata"]
        try:
            await client.delete("controllerrevisions", md["name"], namespace=md.get("namespace", ""))
        except errors.NotFound:
            pass
        deleted.append(md["name"])
    return deleted
