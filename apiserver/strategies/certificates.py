"""CertificateSigningRequests (certificates.k8s.io/v1): Kubernetes' csrStrategy, its
status and approval strategies (pkg/registry/certificates/certificates/strategy.go) and
its validation (pkg/apis/certificates/validation).

What it guarantees
- A create records who asked: spec.username, uid, groups and extra are the requesting
  user's (whatever the client sent), and the status starts empty: nobody creates an
  approved or issued request.
- The spec never changes after creation, and the main resource never changes the
  status: `/status` writes status.certificate and conditions other than Approved and
  Denied (those it sends are replaced by the stored ones); `/approval` writes the
  conditions only (status.certificate stays as stored). Both fill in a condition's
  lastUpdateTime, and its lastTransitionTime (kept from a stored condition of the same
  type and status), when the client left them out.
- Validation, as Kubernetes': spec.request is a PEM `CERTIFICATE REQUEST` whose
  signature verifies; usages are required, known and not repeated; signerName is
  required and `<domain with a dot>/<path>`; `kubernetes.io/legacy-unknown` only on an
  object that already has it; expirationSeconds at least 600; conditions have a type and
  a status (Approved, Denied and Failed only "True"), no type twice, never Approved and
  Denied together, and none of those three is ever removed; status.certificate is PEM
  CERTIFICATE blocks, set only through `/status` and never changed once set.

Which user is asking reaches `set_requestor`, called by the registry after
`prepare_for_create` (Kubernetes reads it from the request's context); a write the
server makes itself has none.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any

from cryptography import x509

from apiserver import validation
from apiserver.strategies.generic import Strategy, _copy
from apiserver.timestamps import now
from machinery import labels, pki

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
LEGACY_UNKNOWN = "kubernetes.io/legacy-unknown"
# Every KeyUsage of certificates/v1, sorted as Kubernetes lists them in its message.
USAGES = sorted((*pki.KEY_USAGES, *pki.EXT_KEY_USAGES))
_TRUE_ONLY = (APPROVED, DENIED, FAILED)
_STATUSES = ("False", "True", "Unknown")


def _show(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), default=str)


def _cause(reason: str, field: str, message: str) -> dict:
    return {"reason": reason, "message": message, "field": field}


def _invalid(field: str, value: Any, detail: str) -> dict:
    return _cause("FieldValueInvalid", field, f"Invalid value: {_show(value)}: {detail}")


def _required(field: str) -> dict:
    return _cause("FieldValueRequired", field, "Required value")


def _forbidden(field: str, detail: str) -> dict:
    return _cause("FieldValueForbidden", field, f"Forbidden: {detail}")


def _conditions(obj: dict) -> list[dict]:
    c = (obj.get("status") or {}).get("conditions")
    return [x for x in c if isinstance(x, dict)] if isinstance(c, list) else []


def _of_type(obj: dict, kind: str) -> list[dict]:
    return [c for c in _conditions(obj) if c.get("type") == kind]


def _certificate(obj: dict) -> str:
    return (obj.get("status") or {}).get("certificate") or ""


def request_bytes(obj: dict) -> bytes:
    """spec.request as the bytes it encodes; ValueError if it is not base64."""
    raw = (obj.get("spec") or {}).get("request")
    if not isinstance(raw, str):
        return b""
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("illegal base64 data") from None


def _check_certificate(data: bytes) -> str | None:
    """validateCertificate: one or more PEM CERTIFICATE blocks, each a parseable certificate."""
    blocks = re.findall(rb"-----BEGIN ([^-]+)-----(.*?)-----END \1-----", data, re.S)
    if not blocks:
        return "must contain at least one CERTIFICATE PEM block"
    for kind, body in blocks:
        if kind != b"CERTIFICATE":
            return f'only CERTIFICATE PEM blocks are allowed, found "{kind.decode(errors="replace")}"'
        if b":" in body:
            return "no PEM block headers are permitted"
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as e:
        return f"x509: malformed certificate ({e})"
    return None


def signer_name_causes(field: str, name: Any) -> list[dict]:
    """apivalidation.ValidateSignerName."""
    if not name:
        return [_required(field)]
    if not isinstance(name, str):
        return []
    parts = name.split("/")
    if len(parts) != 2:
        return [_invalid(field, name, "must be a fully qualified domain and path of the form "
                                      "'example.com/signer-name'")]
    domain, path = parts
    out = []
    if len(domain) > 253:
        out.append(_cause("FieldValueTooLong", field, "Too long: must have at most 253 bytes"))
    labels_ = domain.split(".")
    for label in labels_:
        if msg := labels.validate_dns1123_label(label):
            out.append(_invalid(field, domain, f'validating label "{label}": {msg}'))
            break
    if len(labels_) < 2:
        out.append(_invalid(field, domain, "should be a domain with at least two segments separated by dots"))
    for label in path.split("."):
        if msg := labels.validate_dns1123_subdomain(label):
            out.append(_invalid(field, path, f'validating label "{label}": {msg}'))
            break
    if len(name) > 253 + 253 + 63 + 1 + 1:
        out.append(_cause("FieldValueTooLong", field, "Too long: must have at most 571 bytes"))
    return out


def _path_segment(name: str) -> str | None:
    if name in (".", ".."):
        return f"may not be '{name}'"
    for bad in ("/", "%"):
        if bad in name:
            return f"may not contain '{bad}'"
    return None


def validate_csr(obj: dict, old: dict | None, *, setting_certificate: bool = False,
                 setting_approval: bool = False) -> list[dict]:
    """validateCertificateSigningRequest(+Update) with Kubernetes' options: what a create
    (old None), a main-resource update, a `/status` update (setting_certificate) or an
    `/approval` update (setting_approval) may do. Tolerances for bad data already
    stored (legacy signer, duplicate or empty condition types, odd usages, an
    unparseable certificate) are Kubernetes' too."""
    spec, ospec = obj.get("spec") or {}, (old or {}).get("spec") or {}
    out: list[dict] = []
    try:
        pki.load_csr(request_bytes(obj))
    except ValueError as e:
        out.append(_invalid("spec.request", "<request data>", str(e)))
    usages = spec.get("usages")
    usages = usages if isinstance(usages, list) else []
    old_usages = ospec.get("usages") if isinstance(ospec.get("usages"), list) else []
    if not usages:
        out.append(_required("spec.usages"))
    if not any(u not in USAGES for u in old_usages):
        for i, u in enumerate(usages):
            if u not in USAGES:
                out.append(_cause("FieldValueNotSupported", f"spec.usages[{i}]",
                                  f"Unsupported value: {_show(u)}: supported values: "
                                  + ", ".join(_show(x) for x in USAGES)))
    if len(set(map(str, old_usages))) == len(old_usages):
        seen: set[str] = set()
        for i, u in enumerate(usages):
            if not isinstance(u, str):
                continue  # the schema reports its type
            if u in seen:
                out.append(_cause("FieldValueDuplicate", f"spec.usages[{i}]", f"Duplicate value: {_show(u)}"))
            seen.add(u)
    signer = spec.get("signerName")
    if signer == LEGACY_UNKNOWN and ospec.get("signerName") != LEGACY_UNKNOWN:
        out.append(_invalid("spec.signerName", signer, "the legacy signerName is not allowed via this API version"))
    elif signer != LEGACY_UNKNOWN:
        out += signer_name_causes("spec.signerName", signer)
    seconds = spec.get("expirationSeconds")
    if isinstance(seconds, int) and seconds < 600:
        out.append(_invalid("spec.expirationSeconds", seconds,
                            "may not specify a duration less than 600 seconds (10 minutes)"))
    out += _condition_causes(obj, old)
    cert, old_cert = _certificate(obj), _certificate(old or {})
    arbitrary = old is not None and (cert == old_cert or (old_cert and _decoded_problem(old_cert)))
    if cert and not arbitrary and (why := _decoded_problem(cert)):
        out.append(_invalid("status.certificate", "<certificate data>", why))
    if old is None:
        return out
    for kind in (APPROVED, DENIED, FAILED):
        if len(_of_type(obj, kind)) < len(_of_type(old, kind)):
            out.append(_forbidden("status.conditions", f'updates may not remove a condition of type "{kind}"'))
    if not setting_approval:
        for kind in (APPROVED, DENIED):
            have, had = _of_type(obj, kind), _of_type(old, kind)
            if len(have) > len(had):
                out.append(_forbidden("status.conditions", f'updates may not add a condition of type "{kind}"'))
            elif len(have) == len(had) and have != had:
                out.append(_forbidden("status.conditions", f'updates may not modify a condition of type "{kind}"'))
    if cert != old_cert:
        if not setting_certificate:
            out.append(_forbidden("status.certificate", "updates may not set certificate content"))
        elif old_cert:
            out.append(_forbidden("status.certificate", "updates may not modify existing certificate content"))
    return out


def _decoded_problem(cert: Any) -> str | None:
    if not isinstance(cert, str):
        return None  # the schema's to report
    try:
        data = base64.b64decode(cert, validate=True)
    except (binascii.Error, ValueError):
        return "illegal base64 data"
    return _check_certificate(data)


def _condition_causes(obj: dict, old: dict | None) -> list[dict]:
    old_conditions = _conditions(old or {})
    old_types = [c.get("type") for c in old_conditions]
    both_allowed = APPROVED in old_types and DENIED in old_types
    dup_allowed = len(set(old_types)) != len(old_types)
    empty_allowed = any(not t for t in old_types) and old is not None
    out, seen, approved, denied = [], set(), False, False
    for i, c in enumerate(_conditions(obj)):
        f = f"status.conditions[{i}]"
        kind, status = c.get("type"), c.get("status")
        if not kind and not empty_allowed:
            out.append(_required(f"{f}.type"))
        allowed = ("True",) if kind in _TRUE_ONLY else _STATUSES
        if not status:
            out.append(_required(f"{f}.status"))
        elif status not in allowed:
            out.append(_cause("FieldValueNotSupported", f"{f}.status", f"Unsupported value: {_show(status)}: "
                              "supported values: " + ", ".join(_show(a) for a in allowed)))
        if not both_allowed and ((kind == APPROVED and denied) or (kind == DENIED and approved)):
            out.append(_invalid(f"{f}.type", kind, "Approved and Denied conditions are mutually exclusive"))
        approved, denied = approved or kind == APPROVED, denied or kind == DENIED
        if not dup_allowed and kind in seen:
            out.append(_cause("FieldValueDuplicate", f"{f}.type", f"Duplicate value: {_show(kind)}"))
        seen.add(kind)
    return out


def _timestamps(new: dict, old: dict) -> None:
    """populateConditionTimestamps: a condition sent without times gets now, or the
    transition time of a stored condition of the same type and status."""
    stamp = now()
    for c in _conditions(new):
        if not c.get("lastUpdateTime"):
            c["lastUpdateTime"] = stamp
        if not c.get("lastTransitionTime"):
            same = next((o.get("lastTransitionTime") for o in _conditions(old)
                         if o.get("type") == c.get("type") and o.get("status") == c.get("status")
                         and o.get("lastTransitionTime")), None)
            c["lastTransitionTime"] = same or stamp


def _preserve(new: dict, old: dict, kind: str) -> None:
    """preserveConditionInstances: the stored conditions of `kind` replace those sent,
    unless some were added or removed (which validation then refuses)."""
    mine = [i for i, c in enumerate(_conditions(new)) if c.get("type") == kind]
    theirs = _of_type(old, kind)
    if len(mine) == len(theirs):
        conditions = new["status"]["conditions"]
        for i, c in zip(mine, theirs):
            conditions[i] = _copy(c)


class CSRStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(status_subresource=True)

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        spec = obj.get("spec")
        if isinstance(spec, dict):
            for k in ("username", "uid", "groups", "extra"):
                spec.pop(k, None)
        obj["status"] = {}

    def set_requestor(self, obj: dict, user: Any) -> None:
        spec = obj.get("spec")
        if user is None or not isinstance(spec, dict):
            return
        spec["username"] = user.name
        if user.uid:
            spec["uid"] = user.uid
        if user.groups:
            spec["groups"] = list(user.groups)
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra.items()}

    def prepare_for_update(self, new: dict, old: dict) -> None:
        for k in ("spec", "status"):
            if k in old:
                new[k] = _copy(old[k])
            else:
                new.pop(k, None)

    def for_subresource(self, subresource: str | None) -> Strategy:
        return {"status": _STATUS, "approval": _APPROVAL}.get(subresource or "", self)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        return _meta_causes(rt, obj, old) + validate_csr(obj, old)


def _meta_causes(rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
    """ObjectMeta's rules, but any path segment is a good name ("We don't care what you
    call your certificate requests")."""
    causes = [c for c in validation.semantic_causes(obj, kind=rt.kind, namespaced=False)
              if c.get("field") != "metadata.name" or c.get("reason") == "FieldValueRequired"]
    name = (obj.get("metadata") or {}).get("name")
    if isinstance(name, str) and name and (msg := _path_segment(name)):
        causes.append(_invalid("metadata.name", name, msg))
    if old is not None:
        causes += validation.update_causes(old, obj, kind=rt.kind)
    return causes


class _CSRStatusStrategy(CSRStrategy):
    def prepare_for_status_update(self, new: dict, old: dict) -> dict:
        merged = super().prepare_for_status_update(new, old)
        if isinstance(merged.get("status"), dict) and isinstance(merged["status"].get("conditions"), list):
            _preserve(merged, old, APPROVED)
            _preserve(merged, old, DENIED)
            _timestamps(merged, old)
        return merged

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        return _meta_causes(rt, obj, old) + validate_csr(obj, old, setting_certificate=True)


class _CSRApprovalStrategy(CSRStrategy):
    def prepare_for_status_update(self, new: dict, old: dict) -> dict:
        merged = super().prepare_for_status_update(new, old)
        sent = merged.get("status") if isinstance(merged.get("status"), dict) else {}
        status = _copy(old.get("status") or {})
        if isinstance(sent.get("conditions"), list):
            status["conditions"] = sent["conditions"]
        else:
            status.pop("conditions", None)
        merged["status"] = status
        if isinstance(status.get("conditions"), list):
            _timestamps(merged, old)
        return merged

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        return _meta_causes(rt, obj, old) + validate_csr(obj, old, setting_approval=True)


_STATUS = _CSRStatusStrategy()
_APPROVAL = _CSRApprovalStrategy()
