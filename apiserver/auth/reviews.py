"""The review kinds: create-only, never stored, answered from the server's authenticator
and authorizers (pkg/registry/authorization and pkg/registry/authentication).

What this module guarantees
- `SubjectAccessReview` (authorization.k8s.io/v1) asks the server's authorizer about the
  user, groups and attributes in its spec, exactly as given (no group is added);
  `LocalSubjectAccessReview` does the same for resources of its own namespace only;
  `SelfSubjectAccessReview` asks about the requester. The answer is the object back
  with `status.allowed` (and `status.denied` when an authorizer denied, `status.reason`).
  A spec with both or neither of resourceAttributes and nonResourceAttributes, or a
  SubjectAccessReview with no user and no group, is a 422 Invalid naming the field.
- `SelfSubjectRulesReview` lists the requester's rules in `spec.namespace`
  (`kubectl auth can-i --list`): everything for `system:masters`, RBAC's rules otherwise,
  `incomplete` with the evaluation errors when some role could not be resolved.
- `SelfSubjectReview` (authentication.k8s.io/v1) answers who the requester is
  (`kubectl auth whoami`); `TokenReview` authenticates `spec.token` with the server's
  token authenticators.
Each answer is 201 Created, as kube-apiserver's.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from apiserver.auth import authn
from apiserver.auth.authorizer import SYSTEM_PRIVILEGED_GROUP, Attributes, Decision, UserInfo
from machinery import errors

if TYPE_CHECKING:
    from apiserver.app import API
    from apiserver.registry import ResourceType


def _invalid(kind: str, group: str, field: str, message: str, value: Any = None) -> errors.Invalid:
    reason = "FieldValueRequired" if value is None else "FieldValueInvalid"
    msg = f"Required value: {message}" if value is None else f"Invalid value: {orjson.dumps(value).decode()}: {message}"
    return errors.invalid(kind, "", [{"reason": reason, "field": field, "message": msg}], group=group)


def _attributes(kind: str, group: str, user: UserInfo, spec: dict) -> Attributes:
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if ra is not None and nra is not None:
        raise _invalid(kind, group, "spec.nonResourceAttributes", "cannot be specified in combination "
                       "with resourceAttributes", nra)
    if ra is None and nra is None:
        raise _invalid(kind, group, "spec.resourceAttributes",
                       "exactly one of nonResourceAttributes or resourceAttributes must be specified", "")
    if nra is not None:
        if not isinstance(nra, dict):
            raise errors.BadRequest("spec.nonResourceAttributes must be an object")
        return Attributes(user, str(nra.get("verb") or ""), resource_request=False,
                          path=str(nra.get("path") or ""))
    if not isinstance(ra, dict):
        raise errors.BadRequest("spec.resourceAttributes must be an object")
    return Attributes(user, str(ra.get("verb") or ""), str(ra.get("namespace") or ""),
                      str(ra.get("group") or ""), str(ra.get("version") or ""),
                      str(ra.get("resource") or ""), str(ra.get("subresource") or ""),
                      str(ra.get("name") or ""))


def _access_status(api: API, attrs: Attributes) -> dict:
    decision, reason = api.authorizer.authorize(attrs)
    status: dict[str, Any] = {"allowed": decision is Decision.ALLOW}
    if decision is Decision.DENY:
        status["denied"] = True
    if reason:
        status["reason"] = reason
    return status


def _extra(raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): tuple(str(x) for x in v or ()) for k, v in raw.items() if isinstance(v, list)}


def _rules(api: API, user: UserInfo, namespace: str) -> dict:
    if SYSTEM_PRIVILEGED_GROUP in user.groups:
        return {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
    rules, errs = api.rbac.rules_for(user, namespace)
    resource_rules, non_resource_rules = [], []
    for r in rules:
        if r.get("nonResourceURLs"):
            non_resource_rules.append({"verbs": list(r.get("verbs") or []),
                                       "nonResourceURLs": list(r["nonResourceURLs"])})
        else:
            out = {"verbs": list(r.get("verbs") or []), "apiGroups": list(r.get("apiGroups") or []),
                   "resources": list(r.get("resources") or [])}
            if r.get("resourceNames"):
                out["resourceNames"] = list(r["resourceNames"])
            resource_rules.append(out)
    status: dict[str, Any] = {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                              "incomplete": bool(errs)}
    if errs:
        status["evaluationError"] = "[" + ", ".join(errs) + "]"
    return status


async def create(api: API, request: Request, rt: ResourceType, namespace: str, body: Any) -> Response:
    """The answer to a create of review kind `rt`."""
    if not isinstance(body, dict):
        raise errors.BadRequest(f"the body of the request must be a {rt.kind} object")
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise errors.BadRequest("spec must be an object")
    user: UserInfo = request.scope.get("user") or authn.ANONYMOUS_USER
    kind, group = rt.kind, rt.group
    if kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
        name = spec.get("user") or ""
        groups = tuple(str(g) for g in spec.get("groups") or ())
        if not name and not groups:
            raise _invalid(kind, group, "spec.user", "at least one of user or group must be specified", "")
        subject = UserInfo(str(name), groups, str(spec.get("uid") or ""), _extra(spec.get("extra")))
        attrs = _attributes(kind, group, subject, spec)
        if kind == "LocalSubjectAccessReview":
            if not attrs.resource_request:
                raise _invalid(kind, group, "spec.nonResourceAttributes", "disallowed on this kind of request",
                               spec.get("nonResourceAttributes"))
            if attrs.namespace not in ("", namespace):
                raise _invalid(kind, group, "spec.resourceAttributes.namespace",
                               "must match metadata.namespace", attrs.namespace)
            attrs = replace(attrs, namespace=namespace)
            spec = {**spec, "resourceAttributes": {**spec["resourceAttributes"], "namespace": namespace}}
        status = _access_status(api, attrs)
    elif kind == "SelfSubjectAccessReview":
        status = _access_status(api, _attributes(kind, group, user, spec))
        spec = {k: v for k, v in spec.items() if k in ("resourceAttributes", "nonResourceAttributes")}
    elif kind == "SelfSubjectRulesReview":
        status = _rules(api, user, str(spec.get("namespace") or ""))
    elif kind == "SelfSubjectReview":
        status = {"userInfo": authn.user_info_json(user)}
        spec = {}
    elif kind == "TokenReview":
        token = spec.get("token")
        if not isinstance(token, str) or not token:
            raise _invalid(kind, group, "spec.token", "token must be specified")
        status = {"authenticated": False}
        try:
            for a in api.authn.token_authenticators:
                found = await a.authenticate_token(token)
                if found is not None:
                    status = {"authenticated": True, "user": authn.user_info_json(authn.authenticated(found))}
                    if spec.get("audiences"):
                        status["audiences"] = list(spec["audiences"])
                    break
        except authn.AuthenticationError as exc:
            status = {"authenticated": False, "error": str(exc)}
        if not status["authenticated"] and "error" not in status:
            status["error"] = "invalid bearer token"
    else:
        raise errors.MethodNotAllowed("the server does not allow this method on the requested resource")
    md = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    md = {**md, "creationTimestamp": None}
    if rt.namespaced:
        md["namespace"] = namespace
    answer = {"kind": kind, "apiVersion": rt.api_version, "metadata": md, "spec": spec, "status": status}
    return Response(orjson.dumps(answer), status_code=201, media_type="application/json")
