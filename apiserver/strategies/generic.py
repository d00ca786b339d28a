"""The default strategy: what a plain kind (ConfigMap, Secret, Lease, ...) does, and the
hooks a kind's own strategy overrides. See the package docstring for the contract."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from apiserver import validation
from machinery import errors

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

_STATUS_META = ("labels", "annotations", "finalizers", "ownerReferences")


def _spec(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _copy(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))  # a deep copy; much faster than copy.deepcopy


class Strategy:
    """generation: metadata.generation counts spec changes (the observedGeneration
    pattern). status_subresource: `.status` changes only through `/status`, so a create
    drops it and a main-resource update keeps the stored one. status_keeps: metadata a
    status update leaves as stored (a status update otherwise takes the labels,
    annotations, finalizers and owner references sent, but never spec)."""

    # A kind whose delete waits out a grace period (only pods, in Kubernetes).
    graceful = False
    # A kind whose status may be set at creation although it has a status subresource.
    status_on_create = False

    def __init__(self, *, generation: bool = False, status_subresource: bool = False,
                 status_keeps: tuple[str, ...] = ()):
        self.generation = generation
        self.status_subresource = status_subresource
        self.status_keeps = status_keeps

    # -- create (RESTCreateStrategy.PrepareForCreate) ---------------------------------

    def prepare_for_create(self, obj: dict) -> None:
        md = obj["metadata"]
        if self.generation:
            md["generation"] = 1
        else:
            md.pop("generation", None)
        if self.status_subresource and not self.status_on_create:
            obj.pop("status", None)

    def set_requestor(self, obj: dict, user: Any) -> None:
        """PrepareForCreate's part that reads who is asking (an authorizer.UserInfo, None
        for the server's own writes), which Kubernetes takes from the request's context:
        only a kind that records its requestor (CertificateSigningRequest) overrides it."""

    # -- admission of a create (the mutating admission plugins that read other objects) --

    # The kube-apiserver admission plugin `admission_refs`/`admit_create` stand for, by
    # the name --disable-admission-plugins turns it off with.
    admission_plugin = ""

    def admission_refs(self, obj: dict) -> list[tuple[str, str]]:
        """(resource, name) of the objects in the new object's namespace that
        `admit_create` needs; the caller reads them (no I/O here)."""
        return []

    def admission_attempts(self, ref: tuple[str, str]) -> int:
        """How many times the caller reads `ref` (100-200 ms apart) before it counts as
        missing: more than once for an object a controller is expected to make soon."""
        return 1

    def admit_create(self, obj: dict, found: dict[tuple[str, str], dict | None], *, name: str) -> None:
        """Mutate a defaulted object being created, given the objects `admission_refs`
        named (None for one that does not exist); raise an APIError to refuse it. `name`
        is what a refusal calls the object: its generateName if its name is to be
        generated (admission runs before generation in kube-apiserver)."""

    # -- update (RESTUpdateStrategy.PrepareForUpdate, and the status strategy's) ------

    def prepare_for_update(self, new: dict, old: dict) -> None:
        """A main-resource update: status is not the client's to change here; a spec
        change bumps the generation."""
        if self.status_subresource:
            if "status" in old:
                new["status"] = _copy(old["status"])
            else:
                new.pop("status", None)
        if self.generation and _spec(old) != _spec(new):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1

    def prepare_for_status_update(self, new: dict, old: dict) -> dict:
        """An update through `/status`: the stored object with the status sent, and the
        metadata a status write may change."""
        merged = _copy(old)
        merged["status"] = new.get("status")
        if merged["status"] is None:
            merged.pop("status")
        nmd = new.get("metadata") or {}
        for k in _STATUS_META:
            if k not in self.status_keeps:
                if k in nmd:
                    merged["metadata"][k] = nmd[k]
                else:
                    merged["metadata"].pop(k, None)
        if nmd.get("managedFields") is not None:
            merged["metadata"]["managedFields"] = nmd["managedFields"]
        return merged

    def for_subresource(self, subresource: str | None) -> Strategy:
        """The strategy of writes through `subresource` (Kubernetes registers a strategy
        per subresource, e.g. a CSR's status and approval strategies): this one for a
        plain kind, whose `prepare_for_status_update` and `validate` serve them all."""
        return self

    # -- validation (Validate, ValidateUpdate) ------------------------------------------

    def schema_causes(self, rt: ResourceType, obj: dict) -> list[dict]:
        """Where `obj` breaks its kind's schema; a cause whose message starts with
        "unknown field" is a field the caller drops or refuses (fieldValidation)."""
        return validation.schema_causes(obj, strict=True)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        """Semantic problems beyond the schema (which the caller checks)."""
        causes = validation.semantic_causes(obj, kind=rt.kind, namespaced=rt.namespaced)
        if old is not None:
            causes += validation.update_causes(old, obj, kind=rt.kind)
        return causes

    # -- delete (RESTDeleteStrategy, RESTGracefulDeleteStrategy.CheckGracefulDelete) ---

    def grace_period(self, obj: dict, requested: int | None) -> int:
        """Seconds the delete of `obj` waits before removal; 0 removes it at once (unless
        finalizers hold it)."""
        return 0

    def before_delete(self, obj: dict) -> bool:
        """Mark `obj` (a private copy) for a deletion that kind-specific finalization
        holds, and say whether it does; a plain kind has none."""
        return False

    def deletion_finished(self, obj: dict) -> bool:
        """Whether `obj`, marked for deletion and with no finalizers left, may go."""
        return True

    # -- versions (a kind served at several versions from one stored object) --------------

    def convert(self, obj: dict, api_version: str) -> dict:
        """`obj`, of any version this kind is served at, as `api_version`: a new object
        (`obj` may be shared). By default only apiVersion changes, which is a
        CustomResourceDefinition's `None` conversion."""
        return {**obj, "apiVersion": api_version}

    # -- kind-specific subresources -----------------------------------------------------

    def bind(self, obj: dict, binding: Any, *, now: str) -> dict:
        raise errors.MethodNotAllowed("the server does not allow this method on the requested resource")
