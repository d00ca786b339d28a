"""KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) -> one Framework per profile.

What is read, with kube-scheduler's semantics:
- `profiles[].schedulerName` (default "default-scheduler"), `profiles[].plugins` per
  extension point (`multiPoint`, `preFilter`, `filter`, `postFilter`, `preScore`, `score`,
  `reserve`, `bind`; `queueSort` accepts only PrioritySort, which the queue implements),
  each with `enabled: [{name, weight}]` and `disabled: [{name}]` (`*` = all defaults),
  `profiles[].pluginConfig: [{name, args}]`, and `percentageOfNodesToScore` at the top
  level or per profile (0 or absent = adaptive).
- Defaults are kube-scheduler's multiPoint plugins that minik8s implements (see
  plugins.DEFAULT_PLUGINS). Merging is config/v1 mergePluginSet: a default re-enabled by
  name is re-configured in place, other enabled plugins are appended. At each extension
  point the order is kube-scheduler's: plugins named at that point that are also
  multiPoint plugins, then the remaining multiPoint plugins, then the rest named there.
- A score weight comes from the point's entry, else the multiPoint entry, else 1.
- `podInitialBackoffSeconds` (1) and `podMaxBackoffSeconds` (10) for the queue.
- `leaderElection` (leaderElect, leaseDuration, renewDeadline, retryPeriod as Go
  durations such as `15s`, resourceName, resourceNamespace) and
  `clientConnection.kubeconfig`: what `minik8s scheduler` runs with, unless its flags say
  otherwise.
Enabling a plugin minik8s does not implement is an error, not silently ignored, and a
plugin's `args` are read strictly, as kube-scheduler decodes them: a field its Args type
does not have (a typo) is an error rather than a silent default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from machinery import duration
from scheduler.framework import EXTENSION_POINTS, Framework
from scheduler.plugins import DEFAULT_PLUGINS, KNOWN_ELSEWHERE, REGISTRY

API_VERSION = "kubescheduler.config.k8s.io/v1"
KIND = "KubeSchedulerConfiguration"
DEFAULT_SCHEDULER_NAME = "default-scheduler"

# extension point in config -> Framework keyword (and so its protocol, EXTENSION_POINTS)
_POINTS = {"preFilter": "pre_filter", "filter": "filter", "postFilter": "post_filter",
           "preScore": "pre_score", "score": "score", "reserve": "reserve", "bind": "bind"}
_UNSUPPORTED_POINTS = ("preEnqueue", "permit", "preBind", "postBind")


class ConfigError(ValueError):
    pass


@dataclass
class ProfileConfig:
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    plugins: Mapping[str, Any] = field(default_factory=dict)
    plugin_config: dict[str, dict] = field(default_factory=dict)
    percentage_of_nodes_to_score: int | None = None


@dataclass
class LeaderElectionConfig:
    """kube-scheduler's defaults: a Lease `kube-system/kube-scheduler`, 15s / 10s / 2s."""
    leader_elect: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    resource_name: str = "kube-scheduler"
    resource_namespace: str = "kube-system"


@dataclass
class SchedulerConfig:
    profiles: list[ProfileConfig] = field(default_factory=lambda: [ProfileConfig()])
    percentage_of_nodes_to_score: int | None = None
    pod_initial_backoff_seconds: float = 1.0
    pod_max_backoff_seconds: float = 10.0
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    kubeconfig: str = ""


def default_config() -> SchedulerConfig:
    return SchedulerConfig()


def _percentage(v: Any, where: str) -> int | None:
    if v is None:
        return None
    if not isinstance(v, int) or not 0 <= v <= 100:
        raise ConfigError(f"{where}: percentageOfNodesToScore must be an integer in [0, 100], got {v!r}")
    return v


def parse_duration(v: Any, where: str = "duration") -> float:
    """Seconds from a Go duration (`15s`, `1m30s`, `500ms`) or a plain number of seconds."""
    if isinstance(v, bool):
        raise ConfigError(f"{where}: expected a duration such as 15s, got {v!r}")
    if isinstance(v, (int, float)):
        seconds = float(v)
    else:
        try:
            seconds = duration.parse_duration(str(v))
        except ValueError:
            raise ConfigError(f"{where}: expected a duration such as 15s, got {v!r}") from None
    if seconds <= 0:
        raise ConfigError(f"{where}: must be positive, got {v!r}")
    return seconds


def _seconds(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ConfigError(f"{where} must be a positive number of seconds, got {v!r}")
    return float(v)


def _leader_election(obj: Any) -> LeaderElectionConfig:
    le = LeaderElectionConfig()
    if obj is None:
        return le
    if not isinstance(obj, Mapping):
        raise ConfigError("leaderElection must be a mapping")
    if "leaderElect" in obj:
        if not isinstance(obj["leaderElect"], bool):
            raise ConfigError(f"leaderElection.leaderElect must be true or false, got {obj['leaderElect']!r}")
        le.leader_elect = obj["leaderElect"]
    for key, attr in (("leaseDuration", "lease_duration"), ("renewDeadline", "renew_deadline"),
                      ("retryPeriod", "retry_period")):
        if obj.get(key) is not None:
            setattr(le, attr, parse_duration(obj[key], f"leaderElection.{key}"))
    le.resource_name = obj.get("resourceName") or le.resource_name
    le.resource_namespace = obj.get("resourceNamespace") or le.resource_namespace
    return le


def parse_config(obj: Mapping | str | None) -> SchedulerConfig:
    """Parse a KubeSchedulerConfiguration given as YAML text or a decoded mapping."""
    if isinstance(obj, str):
        obj = yaml.safe_load(obj)
    obj = obj or {}
    if not isinstance(obj, Mapping):
        raise ConfigError("the configuration must be a YAML mapping")
    if obj.get("apiVersion", API_VERSION) != API_VERSION or obj.get("kind", KIND) != KIND:
        raise ConfigError(f"expected apiVersion {API_VERSION} kind {KIND}, got "
                          f"{obj.get('apiVersion')} {obj.get('kind')}")
    cfg = SchedulerConfig(
        percentage_of_nodes_to_score=_percentage(obj.get("percentageOfNodesToScore"), "config"),
        pod_initial_backoff_seconds=_seconds(obj.get("podInitialBackoffSeconds", 1), "podInitialBackoffSeconds"),
        pod_max_backoff_seconds=_seconds(obj.get("podMaxBackoffSeconds", 10), "podMaxBackoffSeconds"),
        leader_election=_leader_election(obj.get("leaderElection")),
        kubeconfig=str((obj.get("clientConnection") or {}).get("kubeconfig") or ""))
    profiles = []
    names = set()
    if not isinstance(obj.get("profiles") or [], list):
        raise ConfigError("profiles must be a list")
    for i, p in enumerate(obj.get("profiles") or [{}]):
        if not isinstance(p, Mapping):
            raise ConfigError(f"profiles[{i}] must be a mapping")
        name = p.get("schedulerName") or DEFAULT_SCHEDULER_NAME
        if name in names:
            raise ConfigError(f"profiles[{i}].schedulerName: duplicate {name!r}")
        names.add(name)
        args = {}
        for pc in p.get("pluginConfig") or ():
            if pc.get("name") in args:
                raise ConfigError(f"profiles[{i}].pluginConfig: {pc.get('name')!r} repeated")
            args[pc.get("name")] = pc.get("args") or {}
        profiles.append(ProfileConfig(
            name, p.get("plugins") or {}, args,
            _percentage(p.get("percentageOfNodesToScore"), f"profiles[{i}]")))
    cfg.profiles = profiles
    return cfg


def load_config(path: str) -> SchedulerConfig:
    """Read and parse a config file; OSError and ConfigError (also for bad YAML) say why not."""
    with open(path) as f:
        text = f.read()
    try:
        return parse_config(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {str(e).splitlines()[0]}") from None


def _entries(plugin_set: Mapping | None, key: str) -> list[tuple[str, int | None]]:
    out = []
    for e in (plugin_set or {}).get(key) or ():
        if not e.get("name"):
            raise ConfigError(f"a plugin entry without a name: {e!r}")
        w = e.get("weight")
        if w is not None and (not isinstance(w, int) or w < 0):
            raise ConfigError(f"plugin {e['name']}: weight must be a non-negative integer")
        out.append((e["name"], w or None))
    return out


def _merge(defaults: list[tuple[str, int | None]], custom: Mapping | None) -> list[tuple[str, int | None]]:
    """config/v1 mergePluginSet."""
    disabled = {n for n, _ in _entries(custom, "disabled")}
    enabled = _entries(custom, "enabled")
    by_name = {n: (i, w) for i, (n, w) in enumerate(enabled)}
    replaced = set()
    out = []
    if "*" not in disabled:
        for name, weight in defaults:
            if name in disabled:
                continue
            if name in by_name:
                i, w = by_name[name]
                replaced.add(i)
                weight = w
            out.append((name, weight))
    out += [e for i, e in enumerate(enabled) if i not in replaced]
    return out


def build_framework(profile: ProfileConfig, *, handle: Any = None,
                    percentage_of_nodes_to_score: int | None = None) -> Framework:
    plugins_cfg = profile.plugins or {}
    for point in _UNSUPPORTED_POINTS:
        if _entries(plugins_cfg.get(point), "enabled"):
            raise ConfigError(f"extension point {point} is not supported by minik8s")
    for name, _ in _entries(plugins_cfg.get("queueSort"), "enabled"):
        if name != "PrioritySort":
            raise ConfigError(f"queueSort plugin {name!r} is not supported (only PrioritySort)")
    multipoint = _merge(DEFAULT_PLUGINS, plugins_cfg.get("multiPoint"))
    mp_names = [n for n, _ in multipoint]
    if len(set(mp_names)) != len(mp_names):
        raise ConfigError(f"plugin enabled twice in multiPoint: {mp_names}")
    mp_weight = dict(multipoint)

    instances: dict[str, Any] = {}

    def instance(name: str) -> Any:
        if name not in instances:
            if name not in REGISTRY:
                hint = " (a kube-scheduler plugin minik8s does not implement)" if name in KNOWN_ELSEWHERE else ""
                raise ConfigError(f"plugin {name!r} is not registered{hint}")
            try:
                instances[name] = REGISTRY[name](profile.plugin_config.get(name, {}), handle)
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"plugin {name}: invalid args: {e}") from None
        return instances[name]

    kwargs: dict[str, Any] = {}
    for point, kw in _POINTS.items():
        proto = EXTENSION_POINTS[kw]
        point_cfg = plugins_cfg.get(point)
        disabled = {n for n, _ in _entries(point_cfg, "disabled")}
        enabled = _entries(point_cfg, "enabled")
        en_names = {n for n, _ in enabled}
        order: list[tuple[str, int | None]] = [e for e in enabled if e[0] in mp_weight]
        order += [(n, None) for n in mp_names if n not in en_names and n not in disabled
                  and "*" not in disabled and isinstance(instance(n), proto)]
        order += [e for e in enabled if e[0] not in mp_weight]
        chosen: list[Any] = []  # plugins, or (plugin, weight) for score
        for name, weight in order:
            p = instance(name)
            if not isinstance(p, proto):
                raise ConfigError(f"plugin {name!r} does not extend {point}")
            if point == "score":
                chosen.append((p, weight or mp_weight.get(name) or 1))
            else:
                chosen.append(p)
        kwargs[kw] = chosen
    pct = profile.percentage_of_nodes_to_score
    return Framework(profile.scheduler_name, **kwargs,
                     percentage_of_nodes_to_score=pct if pct is not None else percentage_of_nodes_to_score)


def build_frameworks(cfg: SchedulerConfig | None = None, *, handle: Any = None) -> dict[str, Framework]:
    """One Framework per profile, by schedulerName."""
    cfg = cfg or default_config()
    return {p.scheduler_name: build_framework(p, handle=handle,
                                              percentage_of_nodes_to_score=cfg.percentage_of_nodes_to_score)
            for p in cfg.profiles}
