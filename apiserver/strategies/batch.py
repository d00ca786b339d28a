"""batch/v1 Job and CronJob: Kubernetes 1.32's job and cronjob strategies
(pkg/registry/batch/{job,cronjob}/strategy.go) and their validation
(pkg/apis/batch/validation/validation.go), with its field paths and messages.

- A Job without `spec.manualSelector: true` gets its selector generated at creation:
  `batch.kubernetes.io/controller-uid=<uid>`, and its template carries that label, the
  `batch.kubernetes.io/job-name` label and the legacy `controller-uid`/`job-name` ones.
  A Job whose selector is not the generated one (and not manual) is refused.
- The template's restartPolicy must be OnFailure or Never (Never with a podFailurePolicy).
- An update may not change a Job's selector, completions, completionMode,
  podFailurePolicy, successPolicy, backoffLimitPerIndex, managedBy or template, except a
  suspended Job that never started, whose template's scheduling directives (node
  selector, tolerations, affinity, scheduling gates, labels, annotations) may change.
- A CronJob's schedule must parse as standard cron (5 fields or a macro); its timeZone
  must be an IANA name the server knows; its name at most 52 characters (the controller
  appends an 11-character suffix to name Jobs).

Pure functions over private copies, as every strategy (see the package docstring).
"""
from __future__ import annotations

import zoneinfo
from typing import TYPE_CHECKING, Any

from apiserver import validation as v
from apiserver.strategies.generic import Strategy

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

Cause = dict[str, str]

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"

_COMPLETION_MODES = ["NonIndexed", "Indexed"]
_PFP_ACTIONS = ["Count", "FailIndex", "FailJob", "Ignore"]
_EXIT_OPERATORS = ["In", "NotIn"]
_CONDITION_STATUSES = ["False", "True", "Unknown"]
_REPLACEMENT_POLICIES = ["Failed", "TerminatingOrFailed"]
_CONCURRENCY = ["Allow", "Forbid", "Replace"]
_MAX_PARALLELISM_INDEXED = 100000
_MAX_COMPLETIONS_INDEXED = 100000
# The template fields a suspended Job that never started may still change
# (validatePodTemplateUpdate's mutable scheduling directives).
_SCHEDULING_FIELDS = ("nodeSelector", "tolerations", "affinity", "schedulingGates")


def _spec(obj: dict) -> dict:
    return v._m(obj.get("spec"))


def _generate_selector(job: dict) -> None:
    """generateSelectorIfNeeded: label the template, select by the uid."""
    spec = job.get("spec")
    if not isinstance(spec, dict) or spec.get("manualSelector") is True:
        return
    md = job["metadata"]
    uid, name = md.get("uid", ""), md.get("name", "")
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return
    tmd = template.setdefault("metadata", {})
    if not isinstance(tmd, dict):
        return
    labels = tmd.setdefault("labels", {})
    if not isinstance(labels, dict):
        return
    labels.setdefault(CONTROLLER_UID, uid)
    labels.setdefault(JOB_NAME, name)
    labels.setdefault(LEGACY_CONTROLLER_UID, uid)
    labels.setdefault(LEGACY_JOB_NAME, name)
    if spec.get("selector") is None:
        spec["selector"] = {"matchLabels": {CONTROLLER_UID: uid}}


def _generated_selector(job: dict) -> list[Cause]:
    spec = _spec(job)
    if spec.get("manualSelector") is True or not isinstance(spec.get("selector"), dict):
        return []
    md = v._m(job.get("metadata"))
    uid, name = md.get("uid", ""), md.get("name", "")
    labels = v._m(v._m(v._m(spec.get("template")).get("metadata")).get("labels"))
    out = []
    for key, want in ((CONTROLLER_UID, uid), (JOB_NAME, name)):
        if labels.get(key) != want:
            out.append(v._invalid("spec.template.metadata.labels", labels,
                                  f"must be '{key}={want}'"))
    if spec["selector"] != {"matchLabels": {CONTROLLER_UID: uid}}:
        out.append(v._invalid("spec.selector", spec["selector"], "`selector` not auto-generated"))
    return out


def _nonnegative(spec: dict, p: str, *keys: str) -> list[Cause]:
    return [c for k in keys for c in v._minimum(spec, k, f"{p}.{k}")]


def _pod_failure_policy(spec: dict, p: str) -> list[Cause]:
    pfp, out = v._m(spec.get("podFailurePolicy")), []
    tspec = v._m(v._m(spec.get("template")).get("spec"))
    names = {c.get("name") for key in ("containers", "initContainers")
             for _, c in v._each(tspec.get(key))}
    rules = pfp.get("rules")
    if isinstance(rules, list) and len(rules) > 20:
        out.append(v._cause("FieldValueTooMany", f"{p}.rules",
                            f"Too many: {len(rules)}: must have at most 20 items"))
    for i, rule in v._each(rules):
        rp = f"{p}.rules[{i}]"
        action = rule.get("action")
        if not action:
            out.append(v._required(f"{rp}.action", 'valid values: ["Count" "FailIndex" "FailJob" "Ignore"]'))
        elif action == "FailIndex":
            if spec.get("backoffLimitPerIndex") is None:
                out.append(v._invalid(f"{rp}.action", action, "requires the backoffLimitPerIndex to be set"))
        elif action not in _PFP_ACTIONS:
            out.append(v._not_supported(f"{rp}.action", action, _PFP_ACTIONS))
        codes, conditions = rule.get("onExitCodes"), rule.get("onPodConditions")
        if isinstance(codes, dict):
            out += _on_exit_codes(codes, f"{rp}.onExitCodes", names)
        for j, pattern in v._each(conditions):
            pp = f"{rp}.onPodConditions[{j}]"
            ctype = pattern.get("type")
            if not ctype:
                out.append(v._required(f"{pp}.type", "name part must be non-empty"))
            elif isinstance(ctype, str) and (msg := v._qualified_name(ctype)):
                out.append(v._invalid(f"{pp}.type", ctype, msg))
            status = pattern.get("status")
            if status not in _CONDITION_STATUSES:
                out.append(v._not_supported(f"{pp}.status", status, _CONDITION_STATUSES))
        if codes is not None and conditions:
            out.append(v._cause("FieldValueInvalid", rp, "Invalid value: \"null\": specifying both "
                                "OnExitCodes and OnPodConditions is not supported"))
        if codes is None and not conditions:
            out.append(v._cause("FieldValueInvalid", rp, "Invalid value: \"null\": specifying one "
                                "of OnExitCodes and OnPodConditions is required"))
    return out


def _on_exit_codes(codes: dict, p: str, names: set) -> list[Cause]:
    out = []
    op = codes.get("operator")
    if not op:
        out.append(v._required(f"{p}.operator", 'valid values: ["In" "NotIn"]'))
    elif op not in _EXIT_OPERATORS:
        out.append(v._not_supported(f"{p}.operator", op, _EXIT_OPERATORS))
    cname = codes.get("containerName")
    if cname is not None and cname not in names:
        out.append(v._invalid(f"{p}.containerName", cname,
                              "must be one of the container or initContainer names in the pod template"))
    values = codes.get("values")
    if not isinstance(values, list) or not values:
        out.append(v._invalid(f"{p}.values", values or [], "at least one value is required"))
        return out
    if len(values) > 255:
        out.append(v._cause("FieldValueTooMany", f"{p}.values",
                            f"Too many: {len(values)}: must have at most 255 items"))
    seen: set[int] = set()
    for j, code in enumerate(values):
        if not v._int(code):
            continue
        if op == "In" and code == 0:
            out.append(v._invalid(f"{p}.values[{j}]", code, "must not be 0 for the In operator"))
        if code in seen:
            out.append(v._duplicate(f"{p}.values[{j}]", code))
        seen.add(code)
    if any(v._int(a) and v._int(b) and a > b for a, b in zip(values, values[1:])):
        out.append(v._invalid(f"{p}.values", values, "must be ordered"))
    return out


def _job_spec(spec: dict, p: str) -> list[Cause]:
    """validateJobSpec: what a Job's spec and a CronJob's job template share."""
    out = _nonnegative(spec, p, "parallelism", "completions", "activeDeadlineSeconds",
                       "backoffLimit", "ttlSecondsAfterFinished")
    mode = spec.get("completionMode")
    if mode is not None and mode not in _COMPLETION_MODES:
        out.append(v._not_supported(f"{p}.completionMode", mode, _COMPLETION_MODES))
    if mode == "Indexed":
        completions, parallelism = spec.get("completions"), spec.get("parallelism")
        if completions is None:
            out.append(v._required(f"{p}.completions", "when completion mode is Indexed"))
        elif v._int(completions) and completions > _MAX_COMPLETIONS_INDEXED:
            out.append(v._invalid(f"{p}.completions", completions,
                                  f"must be less than or equal to {_MAX_COMPLETIONS_INDEXED} "
                                  "when completion mode is Indexed"))
        if v._int(parallelism) and parallelism > _MAX_PARALLELISM_INDEXED:
            out.append(v._invalid(f"{p}.parallelism", parallelism,
                                  f"must be less than or equal to {_MAX_PARALLELISM_INDEXED} "
                                  "when completion mode is Indexed"))
    elif spec.get("backoffLimitPerIndex") is not None:
        out.append(v._invalid(f"{p}.backoffLimitPerIndex", spec["backoffLimitPerIndex"],
                              "requires indexed completion mode"))
    if isinstance(spec.get("podFailurePolicy"), dict):
        out += _pod_failure_policy(spec, f"{p}.podFailurePolicy")
    rpol = spec.get("podReplacementPolicy")
    if rpol is not None:
        allowed = ["Failed"] if spec.get("podFailurePolicy") is not None else _REPLACEMENT_POLICIES
        if rpol not in allowed:
            out.append(v._not_supported(f"{p}.podReplacementPolicy", rpol, allowed))
    template = v._m(spec.get("template"))
    out += v._metadata(v._m(template.get("metadata")), f"{p}.template.metadata", name_check=None,
                       namespaced=None)
    tspec = v._m(template.get("spec"))
    out += v._pod_spec(tspec, f"{p}.template.spec")
    rp = tspec.get("restartPolicy")
    if rp in ("Always", "", None):
        out.append(v._required(f"{p}.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
    elif rp not in ("OnFailure", "Never"):
        out.append(v._not_supported(f"{p}.template.spec.restartPolicy", rp, ["OnFailure", "Never"]))
    elif spec.get("podFailurePolicy") is not None and rp != "Never":
        out.append(v._invalid(f"{p}.template.spec.restartPolicy", rp,
                              'only "Never" is supported when podFailurePolicy is specified'))
    return out


def validate_job(job: dict) -> list[Cause]:
    spec = _spec(job)
    out = _generated_selector(job) + _job_spec(spec, "spec")
    sel = spec.get("selector")
    if not isinstance(sel, dict):
        out.append(v._required("spec.selector"))
    else:
        sel_causes = v._selector(sel, "spec.selector")
        labels = v._m(v._m(v._m(spec.get("template")).get("metadata")).get("labels"))
        if not sel_causes and not v._selector_matches(sel, labels):
            out.append(v._invalid("spec.template.metadata.labels", labels,
                                  "`selector` does not match template `labels`"))
        out += sel_causes
    name, completions = v._m(job.get("metadata")).get("name"), spec.get("completions")
    if spec.get("completionMode") == "Indexed" and isinstance(name, str) and v._int(completions) \
            and completions > 0:
        host = f"{name}-{completions - 1}"
        if v._dns1123_label(host):
            out.append(v._invalid("metadata.name", name,
                                  f"will not able to create pod with invalid DNS label: {host}"))
    return out


def validate_job_status(job: dict) -> list[Cause]:
    """validateJobStatus's counters: none negative, no uid twice among the uncounted."""
    status = v._m(job.get("status"))
    out = _nonnegative(status, "status", "active", "succeeded", "failed", "ready", "terminating")
    seen: set[str] = set()
    uncounted = v._m(status.get("uncountedTerminatedPods"))
    for key in ("succeeded", "failed"):
        uids = uncounted.get(key)
        for i, uid in enumerate(uids if isinstance(uids, list) else []):
            f = f"status.uncountedTerminatedPods.{key}[{i}]"
            if uid == "":
                out.append(v._invalid(f, uid, "must not be empty"))
            elif uid in seen:
                out.append(v._duplicate(f, uid))
            seen.add(uid)
    return out


def _immutable(old: Any, new: Any, f: str) -> list[Cause]:
    return [] if old == new else [v._invalid(f, new, "field is immutable")]


def validate_job_update(old: dict, new: dict) -> list[Cause]:
    ospec, nspec = _spec(old), _spec(new)
    out = []
    for key in ("completions", "selector", "completionMode", "podFailurePolicy",
                "backoffLimitPerIndex", "managedBy", "successPolicy"):
        out += _immutable(ospec.get(key), nspec.get(key), f"spec.{key}")
    otpl, ntpl = v._m(ospec.get("template")), v._m(nspec.get("template"))
    never_started = ospec.get("suspend") is True and not v._m(old.get("status")).get("startTime")
    if never_started:
        # Scheduling directives may change while the Job waits to start (KEP-2926).
        otpl, ntpl = _without_scheduling(otpl), _without_scheduling(ntpl)
    out += _immutable(otpl, ntpl, "spec.template")
    return out


def _without_scheduling(template: dict) -> dict:
    out = dict(template)
    out.pop("metadata", None)  # labels and annotations
    out["spec"] = {k: x for k, x in v._m(template.get("spec")).items() if k not in _SCHEDULING_FIELDS}
    return out


# --- CronJob --------------------------------------------------------------------------

_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def schedule_error(schedule: str) -> str | None:
    """robfig/cron's ParseStandard, as far as its message goes: None when it parses."""
    from croniter import CroniterError, croniter  # imported here: only CronJob writes need it

    s = schedule.strip()
    if s.startswith("@"):
        if s in _MACROS:
            return None
        return f"unrecognized descriptor: {s}"
    fields = s.split()
    if len(fields) != 5:
        return f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]"
    try:
        croniter(s)
    except (CroniterError, ValueError) as exc:
        return str(exc)
    return None


def _timezone(tz: Any) -> list[Cause]:
    f = "spec.timeZone"
    if tz is None or not isinstance(tz, str):
        return []
    if tz == "":
        return [v._invalid(f, tz, "timeZone must be nil or non-empty string")]
    if tz.lower() == "local":
        return [v._invalid(f, tz, "timeZone must be an explicit time zone as defined in "
                           "https://www.iana.org/time-zones")]
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return [v._invalid(f, tz, f"unknown time zone {tz}")]
    return []


def validate_cronjob(cj: dict) -> list[Cause]:
    spec, out = _spec(cj), []
    name = v._m(cj.get("metadata")).get("name")
    if isinstance(name, str) and len(name) > 52:
        out.append(v._invalid("metadata.name", name, "must be no more than 52 characters"))
    schedule = spec.get("schedule")
    if not schedule:
        out.append(v._required("spec.schedule"))
    elif isinstance(schedule, str):
        if "TZ" in schedule:
            out.append(v._invalid("spec.schedule", schedule,
                                  "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
        elif msg := schedule_error(schedule):
            out.append(v._invalid("spec.schedule", schedule, msg))
    out += _timezone(spec.get("timeZone"))
    policy = spec.get("concurrencyPolicy")
    if policy not in _CONCURRENCY:
        out.append(v._not_supported("spec.concurrencyPolicy", policy, _CONCURRENCY))
    out += _nonnegative(spec, "spec", "startingDeadlineSeconds", "successfulJobsHistoryLimit",
                        "failedJobsHistoryLimit")
    template = v._m(spec.get("jobTemplate"))
    out += v._metadata(v._m(template.get("metadata")), "spec.jobTemplate.metadata",
                       name_check=None, namespaced=None)
    jspec = v._m(template.get("spec"))
    if jspec.get("manualSelector") is not True and jspec.get("selector") is not None:
        out.append(v._invalid("spec.jobTemplate.spec.selector", jspec["selector"],
                              "`selector` will be auto-generated"))
    out += _job_spec(jspec, "spec.jobTemplate.spec")
    return out


class JobStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(generation=True, status_subresource=True)

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        _generate_selector(obj)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        causes = super().validate(rt, obj, old) + validate_job(obj) + validate_job_status(obj)
        if old is not None:
            causes += validate_job_update(old, obj)
        return causes


class CronJobStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(generation=True, status_subresource=True)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        return super().validate(rt, obj, old) + validate_cronjob(obj)
