"""Container resources: from the pod spec to the numbers written to cgroup files."""
from kubelet.runtime.linux import cgroups
from kubelet.runtime import Resources


def test_from_spec_reads_requests_and_limits():
    r = Resources.from_spec({"requests": {"cpu": "250m", "memory": "64Mi"},
                             "limits": {"cpu": "1", "memory": "128Mi"}})
    assert r == Resources(cpu_request_milli=250, cpu_limit_milli=1000, memory_limit=128 << 20)
    assert Resources.from_spec(None) == Resources()


def test_pod_total_limits_only_when_every_container_has_one():
    a = Resources(cpu_request_milli=100, cpu_limit_milli=200, memory_limit=10)
    b = Resources(cpu_request_milli=50, memory_limit=20)
    assert Resources.pod_total([a, b]) == Resources(cpu_request_milli=150, memory_limit=30)
    assert Resources.pod_total([a, Resources()]) == Resources(cpu_request_milli=100)


def test_cpu_mapping_matches_the_kubelet():
    assert [cgroups.shares(m) for m in (None, 1, 100, 1000, 10**9)] == [2, 2, 102, 1024, 262144]
    assert [cgroups.quota_us(m) for m in (1, 250, 1500)] == [1000, 25000, 150000]
