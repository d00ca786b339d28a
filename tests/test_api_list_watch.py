"""LIST and WATCH: selectors, paging, resourceVersion semantics, compaction."""
import pytest

from tests.procs import APIServer, compact_etcd
from tests.util import WatchReader, names, pod


def _seed(http, ns):
    specs = [("a", {"app": "web", "tier": "fe"}), ("b", {"app": "web"}), ("c", {"app": "db"}),
             ("d", {})]
    for name, labels in specs:
        assert http.post(f"/api/v1/namespaces/{ns}/pods", json=pod(name, labels=labels)).status_code == 201


@pytest.mark.parametrize("selector,want", [
    ("app=web", ["a", "b"]), ("app==web", ["a", "b"]), ("app!=web", ["c", "d"]),
    ("app in (web,db)", ["a", "b", "c"]), ("app notin (web)", ["c", "d"]),
    ("tier", ["a"]), ("!tier", ["b", "c", "d"]), ("app=web,!tier", ["b"]), ("", ["a", "b", "c", "d"]),
])
def test_label_selectors(http, ns, selector, want):
    _seed(http, ns)
    r = http.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": selector})
    assert r.status_code == 200
    assert [p["metadata"]["name"] for p in r.json()["items"]] == want


def test_list_shape_and_field_selectors(http, ns):
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("on1", node="n1"))
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("on2", node="n2"))
    r = http.get(f"/api/v1/namespaces/{ns}/pods", params={"fieldSelector": "spec.nodeName=n1"}).json()
    assert r["kind"] == "PodList" and r["apiVersion"] == "v1" and int(r["metadata"]["resourceVersion"]) > 0
    assert [p["metadata"]["name"] for p in r["items"]] == ["on1"]
    r = http.get("/api/v1/pods", params={"fieldSelector": f"metadata.namespace={ns},spec.nodeName!=n1"}).json()
    assert [p["metadata"]["name"] for p in r["items"]] == ["on2"]
    r = http.get("/api/v1/pods",
                 params={"fieldSelector": f"metadata.name=on2,metadata.namespace={ns},status.phase=Pending"})
    assert [p["metadata"]["name"] for p in r.json()["items"]] == ["on2"]
    r = http.get(f"/api/v1/namespaces/{ns}/pods", params={"fieldSelector": "spec.bogus=1"})
    assert r.status_code == 400 and "field label not supported" in r.json()["message"]


def test_event_field_selectors(http, ns):
    ev = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "x", "namespace": ns, "uid": "u1"},
          "reason": "Started", "message": "m", "type": "Normal"}
    assert http.post(f"/api/v1/namespaces/{ns}/events", json=ev).status_code == 201
    sel = f"involvedObject.uid=u1,involvedObject.name=x,involvedObject.namespace={ns}"
    r = http.get(f"/api/v1/namespaces/{ns}/events", params={"fieldSelector": sel}).json()
    assert [e["metadata"]["name"] for e in r["items"]] == ["e1"]


def test_limit_and_continue_pages_at_one_revision(http, ns):
    for i in range(7):
        http.post(f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": f"cm{i}"}})
    url = f"/api/v1/namespaces/{ns}/configmaps"
    first = http.get(url, params={"limit": 3}).json()
    assert [c["metadata"]["name"] for c in first["items"]] == ["cm0", "cm1", "cm2"]
    assert first["metadata"]["remainingItemCount"] == 4
    # A write between pages must not show up in the rest of this list.
    http.post(url, json={"metadata": {"name": "cm3a"}})
    seen = [c["metadata"]["name"] for c in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = http.get(url, params={"limit": 3, "continue": token}).json()
        assert page["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        seen += [c["metadata"]["name"] for c in page["items"]]
        token = page["metadata"].get("continue")
    assert seen == [f"cm{i}" for i in range(7)]
    assert http.get(url, params={"continue": "garbage!"}).status_code == 400


def test_watch_from_revision_sees_changes_in_order(apiserver, http, ns):
    url = f"/api/v1/namespaces/{ns}/configmaps"
    rv = http.get(url).json()["metadata"]["resourceVersion"]
    w = WatchReader(apiserver, url, resourceVersion=rv)
    try:
        http.post(url, json={"metadata": {"name": "w1"}, "data": {"v": "1"}})
        http.patch(f"{url}/w1", json={"data": {"v": "2"}}, headers={"content-type": "application/merge-patch+json"})
        http.delete(f"{url}/w1")
        events = w.wait(lambda ev: len(ev) >= 3)
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert rvs == sorted(rvs) and rvs[0] > int(rv)
        assert events[1]["object"]["data"] == {"v": "2"}
        # A deletion carries the object's last state, at the delete's own revision.
        assert events[2]["object"]["data"] == {"v": "2"} and rvs[2] > rvs[1]
    finally:
        w.close()


def test_watch_without_revision_starts_with_current_state(apiserver, http, ns):
    url = f"/api/v1/namespaces/{ns}/configmaps"
    http.post(url, json={"metadata": {"name": "pre"}})
    w = WatchReader(apiserver, url)
    try:
        w.wait(lambda ev: names(ev) == ["pre"])
        http.post(url, json={"metadata": {"name": "post"}})
        w.wait(lambda ev: names(ev, "ADDED") == ["pre", "post"])
    finally:
        w.close()


def test_watch_selector_transitions(apiserver, http, ns):
    url = f"/api/v1/namespaces/{ns}/configmaps"
    rv = http.get(url).json()["metadata"]["resourceVersion"]
    w = WatchReader(apiserver, url, resourceVersion=rv, labelSelector="sel=yes")
    try:
        http.post(url, json={"metadata": {"name": "t", "labels": {"sel": "no"}}})
        mp = {"content-type": "application/merge-patch+json"}
        http.patch(f"{url}/t", json={"metadata": {"labels": {"sel": "yes"}}}, headers=mp)  # starts matching
        http.patch(f"{url}/t", json={"data": {"x": "1"}}, headers=mp)
        http.patch(f"{url}/t", json={"metadata": {"labels": {"sel": "no"}}}, headers=mp)  # stops matching
        http.delete(f"{url}/t")
        http.post(url, json={"metadata": {"name": "marker", "labels": {"sel": "yes"}}})
        events = w.wait(lambda ev: "marker" in names(ev))
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "t"), ("MODIFIED", "t"), ("DELETED", "t"), ("ADDED", "marker")]
    finally:
        w.close()


def test_watch_timeout_seconds_ends_stream(apiserver, http, ns):
    w = WatchReader(apiserver, f"/api/v1/namespaces/{ns}/configmaps", timeoutSeconds=1)
    assert w.done.wait(15), "the watch did not end after timeoutSeconds"
    assert w.status_code == 200
    w.close()


def test_watch_bookmarks(etcd):
    server = APIServer(etcd.url, "--bookmark-interval", "0.2").start()
    try:
        url = "/api/v1/namespaces/default/configmaps"
        with server.client() as c:
            rv = c.get(url).json()["metadata"]["resourceVersion"]
        w = WatchReader(server, url, resourceVersion=rv, allowWatchBookmarks="true")
        try:
            events = w.wait(lambda ev: any(e["type"] == "BOOKMARK" for e in ev))
            bm = next(e for e in events if e["type"] == "BOOKMARK")
            assert bm["object"]["kind"] == "ConfigMap" and int(bm["object"]["metadata"]["resourceVersion"]) >= int(rv)
        finally:
            w.close()
    finally:
        server.stop()


def test_watch_disconnect_releases_watcher(apiserver, http, ns):
    def watchers():
        from prometheus_client.parser import text_string_to_metric_families
        return int(next(s.value for f in text_string_to_metric_families(http.get("/metrics").text)
                        for s in f.samples if s.name == "apiserver_registered_watchers"
                        and s.labels == {"group": "", "version": "v1", "kind": "Pod"}))
    before = watchers()
    import time
    sock = apiserver.socket()
    sock.sendall(f"GET /api/v1/namespaces/{ns}/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 10
    while watchers() != before + 1:
        assert time.monotonic() < deadline, "watcher never registered"
        time.sleep(0.02)
    sock.close()
    while watchers() != before:
        assert time.monotonic() < deadline + 10, "watcher not released after disconnect"
        time.sleep(0.02)


def test_watch_resumes_across_apiserver_restart(etcd):
    server = APIServer(etcd.url).start()
    url = "/api/v1/namespaces/default/configmaps"
    try:
        with server.client() as c:
            c.delete(url, params={"labelSelector": "resume=test"})
            rv = c.get(url).json()["metadata"]["resourceVersion"]
            for i in range(5):
                c.post(url, json={"metadata": {"name": f"r{i}", "labels": {"resume": "test"}}})
        w = WatchReader(server, url, resourceVersion=rv, labelSelector="resume=test")
        events = w.wait(lambda ev: len(ev) >= 5)
        w.close()
        last = events[-1]["object"]["metadata"]["resourceVersion"]
        server.stop()
        server2 = APIServer(etcd.url, port=server.port)
        # Writes that happen while the server is down must be seen after the restart.
        server2.start()
        with server2.client() as c:
            for i in range(5, 8):
                c.post(url, json={"metadata": {"name": f"r{i}", "labels": {"resume": "test"}}})
        w = WatchReader(server2, url, resourceVersion=last, labelSelector="resume=test")
        more = w.wait(lambda ev: len(ev) >= 3)
        w.close()
        all_events = events + more
        assert [e["object"]["metadata"]["name"] for e in all_events] == [f"r{i}" for i in range(8)]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in all_events]
        assert len(set(rvs)) == len(rvs) and rvs == sorted(rvs)
        server = server2
    finally:
        server.stop()


def test_watch_and_list_after_compaction_are_gone(etcd):
    server = APIServer(etcd.url).start()
    try:
        url = "/api/v1/namespaces/default/configmaps"
        with server.client() as c:
            old = c.get(url).json()["metadata"]["resourceVersion"]
            for _ in range(3):
                c.post(url, json={"metadata": {"generateName": "compact-"}})
            page = c.get(url, params={"limit": 1}).json()
            assert page["metadata"].get("continue")
            c.post(url, json={"metadata": {"generateName": "compact-"}})
            compact_etcd(etcd.url)
            # a restarted server has no history before the compaction in its cache
            server.stop()
            server = APIServer(etcd.url, port=server.port).start()
            r = c.get(url, params={"watch": "true", "resourceVersion": old})
            assert r.status_code == 410 and r.json()["reason"] == "Expired"
            r = c.get(url, params={"limit": 1, "continue": page["metadata"]["continue"]})
            assert r.status_code == 410
    finally:
        server.stop()
