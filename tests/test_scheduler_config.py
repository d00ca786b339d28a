"""KubeSchedulerConfiguration profiles -> Frameworks."""
import pytest

from scheduler.config import ConfigError, build_frameworks, parse_config, parse_duration

HEADER = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"


def names(plugins):
    return [p.NAME for p in plugins]


def scores(fwk):
    return [(p.NAME, w) for p, w in fwk.score_plugins]


def test_default_profile():
    fwk = build_frameworks()["default-scheduler"]
    assert names(fwk.filter_plugins) == ["NodeUnschedulable", "NodeName", "NodeReady", "TaintToleration",
                                         "NodeAffinity", "NodePorts", "NodeResourcesFit", "VolumeBinding"]
    assert scores(fwk) == [("TaintToleration", 3), ("NodeAffinity", 2), ("NodeResourcesFit", 1),
                           ("PodTopologySpread", 2), ("NodeResourcesBalancedAllocation", 1),
                           ("ImageLocality", 1)]
    assert names(fwk.bind_plugins) == ["VolumeBinding", "DefaultBinder"]
    assert fwk.percentage_of_nodes_to_score is None
    assert fwk.plugins["NodeResourcesFit"].strategy == "LeastAllocated"


def test_profiles_weights_disabling_and_plugin_args():
    cfg = parse_config(HEADER + """
percentageOfNodesToScore: 30
podInitialBackoffSeconds: 2
profiles:
- schedulerName: default-scheduler
- schedulerName: packer
  percentageOfNodesToScore: 100
  plugins:
    score:
      enabled: [{name: NodeResourcesFit, weight: 5}]
      disabled: [{name: ImageLocality}, {name: NodeResourcesBalancedAllocation}]
    filter:
      disabled: [{name: NodeReady}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources: [{name: cpu, weight: 2}, {name: memory, weight: 1}]
""")
    assert cfg.pod_initial_backoff_seconds == 2 and cfg.pod_max_backoff_seconds == 10
    fwks = build_frameworks(cfg)
    assert set(fwks) == {"default-scheduler", "packer"}
    assert fwks["default-scheduler"].percentage_of_nodes_to_score == 30
    packer = fwks["packer"]
    assert packer.percentage_of_nodes_to_score == 100
    # a plugin named at the point comes first, with its weight
    assert scores(packer) == [("NodeResourcesFit", 5), ("TaintToleration", 3), ("NodeAffinity", 2),
                              ("PodTopologySpread", 2)]
    assert "NodeReady" not in names(packer.filter_plugins)
    fit = packer.plugins["NodeResourcesFit"]
    assert fit.strategy == "MostAllocated" and fit.resources == (("cpu", 2), ("memory", 1))


def test_multipoint_disable_all_and_enable_some():
    cfg = parse_config(HEADER + """
profiles:
- plugins:
    multiPoint:
      enabled: [{name: NodeResourcesFit, weight: 4}, {name: DefaultBinder}]
      disabled: [{name: "*"}]
""")
    fwk = build_frameworks(cfg)["default-scheduler"]
    assert names(fwk.filter_plugins) == ["NodeResourcesFit"]
    assert scores(fwk) == [("NodeResourcesFit", 4)]


def test_multipoint_reconfigures_a_default_in_place():
    cfg = parse_config(HEADER + "profiles:\n- plugins:\n    multiPoint:\n"
                             "      enabled: [{name: TaintToleration, weight: 9}]\n")
    assert scores(build_frameworks(cfg)["default-scheduler"])[0] == ("TaintToleration", 9)


@pytest.mark.parametrize("text,error", [
    ("apiVersion: kubescheduler.config.k8s.io/v1beta3\nkind: KubeSchedulerConfiguration\n", "expected apiVersion"),
    (HEADER + "profiles:\n- plugins:\n    filter:\n      enabled: [{name: InterPodAffinity}]\n",
     "does not implement"),
    (HEADER + "profiles:\n- plugins:\n    filter:\n      enabled: [{name: NoSuchPlugin}]\n", "not registered"),
    (HEADER + "profiles:\n- plugins:\n    score:\n      enabled: [{name: NodeName}]\n", "does not extend score"),
    (HEADER + "profiles:\n- pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: Magic}}}]\n",
     "invalid args"),
    (HEADER + "profiles:\n- pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategyy: {}}}]\n",
     'invalid args: strict decoding error: unknown field "scoringStrategyy"'),
    (HEADER + "profiles:\n- pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: "
     "{type: MostAllocated, resources: [{name: cpu, wieght: 2}]}}}]\n", 'unknown field "wieght"'),
    (HEADER + "profiles:\n- pluginConfig: [{name: PodTopologySpread, args: {defaultingType: List, "
     "defaultConstraints: [{maxSkew: 1, topologyKey: k, whenUnsatisfiable: ScheduleAnyway, skew: 2}]}}]\n",
     'unknown field "skew"'),
    (HEADER + "profiles:\n- pluginConfig: [{name: NodeAffinity, args: {addedAfinity: {}}}]\n",
     'unknown field "addedAfinity"'),
    (HEADER + "profiles:\n- pluginConfig: [{name: NodeResourcesBalancedAllocation, args: [cpu]}]\n",
     "expected a mapping"),
    (HEADER + "percentageOfNodesToScore: 101\n", "percentageOfNodesToScore"),
    (HEADER + "profiles:\n- schedulerName: a\n- schedulerName: a\n", "duplicate"),
    (HEADER + "profiles:\n- plugins:\n    permit:\n      enabled: [{name: X}]\n", "not supported"),
])
def test_bad_configs_fail_loudly(text, error):
    with pytest.raises(ConfigError, match=error):
        build_frameworks(parse_config(text))


def test_plugin_args_may_carry_their_type_meta():
    cfg = parse_config(HEADER + "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n"
                       "      apiVersion: kubescheduler.config.k8s.io/v1\n      kind: NodeResourcesFitArgs\n"
                       "      scoringStrategy: {type: MostAllocated}\n")
    assert build_frameworks(cfg)["default-scheduler"].plugins["NodeResourcesFit"].strategy == "MostAllocated"


def test_disabling_an_unimplemented_kube_scheduler_plugin_is_fine():
    cfg = parse_config(HEADER + "profiles:\n- plugins:\n    multiPoint:\n      disabled: [{name: InterPodAffinity}]\n")
    assert "NodeResourcesFit" in build_frameworks(cfg)["default-scheduler"].plugins


def test_leader_election_and_client_connection():
    cfg = parse_config(HEADER + """
clientConnection: {kubeconfig: /etc/minik8s/scheduler.conf}
leaderElection:
  leaderElect: false
  leaseDuration: 1m30s
  renewDeadline: 500ms
  retryPeriod: 0.1
  resourceName: my-scheduler
""")
    le = cfg.leader_election
    assert (le.leader_elect, le.lease_duration, le.renew_deadline, le.retry_period) == (False, 90.0, 0.5, 0.1)
    assert (le.resource_name, le.resource_namespace) == ("my-scheduler", "kube-system")
    assert cfg.kubeconfig == "/etc/minik8s/scheduler.conf"
    d = parse_config(None).leader_election
    assert (d.leader_elect, d.lease_duration, d.renew_deadline, d.retry_period) == (True, 15.0, 10.0, 2.0)


@pytest.mark.parametrize("text, error", [
    ("leaderElection: {leaseDuration: soon}", "leaseDuration: expected a duration"),
    ("leaderElection: {retryPeriod: -1s}", "retryPeriod: must be positive"),
    ("leaderElection: {leaderElect: maybe}", "true or false"),
    ("podMaxBackoffSeconds: ten", "podMaxBackoffSeconds must be a positive number"),
    ("profiles: {a: 1}", "profiles must be a list"),
])
def test_bad_top_level_settings(text, error):
    with pytest.raises(ConfigError, match=error):
        parse_config(HEADER + text)


@pytest.mark.parametrize("text, seconds", [("15s", 15.0), ("1m30s", 90.0), ("250ms", 0.25),
                                           ("1h", 3600.0), ("2", 2.0), (3, 3.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds
