"""apiregistration.k8s.io/v1 APIService: kube-aggregator's strategy and validation
(pkg/registry/apiservice, pkg/apis/apiregistration/validation).

- The status changes only through `/status` (the availability controller writes it).
- Validation as kube-aggregator words it: the name is `<version>.<group>` and equals
  `spec.version + "." + spec.group`; the group a DNS-1123 subdomain (empty only for the
  legacy v1); the version a DNS-1035 label; groupPriorityMinimum in (0, 20000] and
  versionPriority in (0, 1000]; a local APIService (no spec.service) has neither a
  caBundle nor insecureSkipTLSVerify; a service has a namespace, a name and a valid
  port; insecureSkipTLSVerify and a caBundle exclude each other.
"""
from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from apiserver import validation
from apiserver.strategies.generic import Strategy
from machinery import labels

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

_NAME_FORM = "API Service name must be in the form <version>.<group>"


def ca_bundle(spec: dict) -> bytes:
    """spec.caBundle decoded ([]byte, base64 in JSON); b"" if absent or not base64."""
    raw = spec.get("caBundle") or ""
    try:
        return base64.b64decode(raw, validate=True) if isinstance(raw, str) else b""
    except (binascii.Error, ValueError):
        return b""


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def causes(obj: dict) -> list[dict]:
    md = obj.get("metadata") or {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    out: list[dict] = []
    name = md.get("name") or ""
    version, group = str(spec.get("version") or ""), str(spec.get("group") or "")
    if name and "." not in name:
        out.append(validation._invalid("metadata.name", name, _NAME_FORM))
    elif name and name != f"{version}.{group}":
        out.append(validation._invalid("metadata.name", name,
                                       f'must be `spec.version+"."+spec.group`: "{version}.{group}"'))
    if not group and version != "v1":
        out.append(validation._required("spec.group", "only v1 may have an empty group and it better be legacy kube"))
    if group and (why := labels.validate_dns1123_subdomain(group)):
        out.append(validation._invalid("spec.group", group, why))
    if why := validation._dns1035_label(version):
        out.append(validation._invalid("spec.version", version, why))
    gpm, vp = _int(spec.get("groupPriorityMinimum")), _int(spec.get("versionPriority"))
    if gpm <= 0 or gpm > 20000:
        out.append(validation._invalid("spec.groupPriorityMinimum", gpm, "must be positive and less than 20000"))
    if vp <= 0 or vp > 1000:
        out.append(validation._invalid("spec.versionPriority", vp, "must be positive and less than 1000"))
    skip = bool(spec.get("insecureSkipTLSVerify"))
    bundle = ca_bundle(spec)
    service = spec.get("service")
    if not isinstance(service, dict):
        if bundle:
            out.append(validation._invalid("spec.caBundle", f"{len(bundle)} bytes",
                                           "local APIServices may not have a caBundle"))
        if skip:
            out.append(validation._invalid("spec.insecureSkipTLSVerify", True,
                                           "local APIServices may not have insecureSkipTLSVerify"))
        return out
    if not service.get("namespace"):
        out.append(validation._required("spec.service.namespace"))
    if not service.get("name"):
        out.append(validation._required("spec.service.name"))
    port = _int(service.get("port", 443))
    if not 1 <= port <= 65535:
        out.append(validation._invalid("spec.service.port", port,
                                       "port is not valid: must be between 1 and 65535, inclusive"))
    if skip and bundle:
        out.append(validation._invalid("spec.insecureSkipTLSVerify", True, "may not be true if caBundle is present"))
    return out


class APIServiceStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(status_subresource=True)

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        spec = obj.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("service"), dict):
            spec["service"].setdefault("port", 443)  # SetDefaults_ServiceReference

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        # The generic name rule (a DNS-1123 subdomain) is replaced by kube-aggregator's.
        out = [c for c in super().validate(rt, obj, old) if c.get("field") != "metadata.name"
               or c.get("reason") != "FieldValueInvalid"]
        return out + causes(obj)
