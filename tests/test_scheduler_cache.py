"""The node cache: assume / confirm / forget, pod and node updates, the columns."""
import pytest

from scheduler.cache import Cache, CacheError
from scheduler.testing import make_cache, make_node, make_pod
from scheduler.types import PodInfo


def requested(cache, node):
    i = cache.get(node).index
    return cache.req_cpu[i], cache.free_cpu[i], cache.pod_count[i]


def assumed(name, node, cpu="500m"):
    return PodInfo(make_pod(name).req(cpu=cpu).obj()).with_node(node)


def test_assumed_pod_counts_at_once_and_confirm_does_not_double_count():
    cache = make_cache([make_node("n1").cap(cpu="2").obj()])
    pi = assumed("p", "n1")
    cache.assume_pod(pi)
    assert cache.is_assumed("default/p") and requested(cache, "n1") == (500, 1500, 1)
    cache.add_pod(make_pod("p").req(cpu="500m").node("n1").obj())  # the watch sees the binding
    assert not cache.is_assumed("default/p") and requested(cache, "n1") == (500, 1500, 1)


def test_forget_undoes_the_assumption():
    cache = make_cache([make_node("n1").cap(cpu="2").obj()])
    pi = assumed("p", "n1")
    cache.assume_pod(pi)
    cache.forget_pod(pi)
    assert cache.pod("default/p") is None and requested(cache, "n1") == (0, 2000, 0)
    assert cache.get("n1").pods == {}


def test_confirmed_on_another_node_moves_the_pod():
    cache = make_cache([make_node("n1").obj(), make_node("n2").obj()])
    cache.assume_pod(assumed("p", "n1"))
    cache.add_pod(make_pod("p").req(cpu="500m").node("n2").obj())
    assert requested(cache, "n1") == (0, 4000, 0) and requested(cache, "n2") == (500, 3500, 1)


def test_assume_and_forget_misuse():
    cache = make_cache([make_node("n1").obj()])
    cache.add_pod(make_pod("bound").node("n1").obj())
    with pytest.raises(CacheError):
        cache.assume_pod(assumed("bound", "n1"))
    with pytest.raises(CacheError):
        cache.forget_pod(PodInfo(make_pod("bound").node("n1").obj()))
    with pytest.raises(CacheError):
        cache.assume_pod(PodInfo(make_pod("nowhere").obj()))
    cache.assume_pod(assumed("p", "n1"))
    with pytest.raises(CacheError):
        cache.forget_pod(assumed("p", "n2"))


def test_pod_update_delete_and_terminal_phase():
    cache = make_cache([make_node("n1").obj()])
    cache.add_pod(make_pod("p").req(cpu="1").node("n1").obj())
    cache.update_pod(make_pod("p").req(cpu="2").node("n1").obj())
    assert requested(cache, "n1") == (2000, 2000, 1)
    cache.update_pod(make_pod("p").req(cpu="2").node("n1").phase("Succeeded").obj())
    assert requested(cache, "n1") == (0, 4000, 0)
    cache.add_pod(make_pod("q").req(cpu="1").node("n1").obj())
    cache.remove_pod(make_pod("q").obj())
    assert requested(cache, "n1") == (0, 4000, 0) and cache.pod_count_total() == 0


def test_unscheduled_pods_are_not_cached():
    cache = make_cache([make_node("n1").obj()])
    cache.add_pod(make_pod("p").req(cpu="1").obj())
    assert cache.pod_count_total() == 0


def test_pods_seen_before_their_node_count_when_it_arrives():
    cache = Cache()
    cache.add_pod(make_pod("early").req(cpu="1", memory="1Gi").node("n1").obj())
    cache.add_node(make_node("n1").obj())
    assert requested(cache, "n1") == (1000, 3000, 1)
    cache.remove_node("n1")
    cache.add_node(make_node("n1").obj())
    assert requested(cache, "n1") == (1000, 3000, 1)


def test_removing_a_node_keeps_the_other_columns_right():
    cache = make_cache([make_node(f"n{i}").cap(cpu=str(i + 1)).obj() for i in range(4)],
                       [make_pod(f"p{i}").req(cpu="500m").node(f"n{i}").obj() for i in range(4)])
    gen = cache.generation
    cache.remove_node("n1")
    assert cache.generation > gen and len(cache) == 3
    assert sorted(n.name for n in cache.nodes) == ["n0", "n2", "n3"]
    for n in cache.nodes:
        i, k = n.index, int(n.name[1:])
        assert cache.nodes[i] is n and cache.alloc_cpu[i] == (k + 1) * 1000
        assert (cache.req_cpu[i], cache.free_cpu[i]) == (500, (k + 1) * 1000 - 500)
    assert cache.get("n1") is None


def test_update_node_reports_what_changed():
    cache = make_cache([make_node("n1").obj()])
    gen = cache.generation
    heartbeat = make_node("n1").obj()
    heartbeat["status"]["conditions"][0]["lastHeartbeatTime"] = "2024-01-01T00:00:00Z"
    assert cache.update_node(heartbeat) == frozenset()
    assert cache.generation == gen
    assert cache.update_node(make_node("n1").cap(cpu="8").obj()) == {"Allocatable"}
    assert cache.free_cpu[0] == 8000 and cache.generation == gen
    assert cache.update_node(make_node("n1").cap(cpu="8").label("a", "b").taint("k").obj()) == {"Label", "Taint"}
    assert cache.generation > gen
    changed = make_node("n1").cap(cpu="8").label("a", "b").taint("k").ready("False").obj()
    assert cache.update_node(changed) == {"Condition"}
    assert cache.update_node(make_node("n1").cap(cpu="8").label("a", "b").taint("k").ready("False")
                             .unschedulable().obj()) == {"Taint"}


def test_allocatable_falls_back_to_capacity():
    node = make_node("n1").obj()
    node["status"] = {"capacity": {"cpu": "2", "memory": "1Gi", "pods": "10"}}
    cache = make_cache([node])
    assert (cache.alloc_cpu[0], cache.alloc_mem[0], cache.alloc_pods[0]) == (2000, 1 << 30, 10)


def test_owner_and_image_counts():
    cache = make_cache([make_node("n1").image(10, "a:1", "a@sha").obj(), make_node("n2").image(10, "a:1").obj()],
                       [make_pod("r1").owner("rs").node("n1").obj(), make_pod("r2").owner("rs").node("n1").obj(),
                        make_pod("t").owner("rs").node("n2").terminating().obj()])
    assert cache.owner_counts == {"rs": {"n1": 2}}
    assert cache.image_nodes == {"a:1": 2, "a@sha": 1}
    cache.remove_pod("default/r1")
    cache.remove_pod("default/r2")
    cache.remove_node("n1")
    assert cache.owner_counts == {} and cache.image_nodes == {"a:1": 1}


def test_memo_lives_until_the_generation_moves():
    cache = make_cache([make_node("n1").obj()])
    calls = []
    assert cache.memo("k", lambda: calls.append(1) or "v") == "v"
    assert cache.memo("k", lambda: calls.append(1) or "w") == "v"
    cache.add_pod(make_pod("p").node("n1").obj())  # pods do not invalidate
    assert cache.memo("k", lambda: "w") == "v"
    cache.add_node(make_node("n2").obj())
    assert cache.memo("k", lambda: "w") == "w" and calls == [1]


def test_host_ports_are_reference_counted():
    cache = make_cache([make_node("n1").obj()],
                       [make_pod("a").host_port(80).node("n1").obj(), make_pod("b").host_port(80).node("n1").obj()])
    cache.remove_pod("default/a")
    assert list(cache.get("n1").used_ports.values()) == [1]
    cache.remove_pod("default/b")
    assert cache.get("n1").used_ports == {}
