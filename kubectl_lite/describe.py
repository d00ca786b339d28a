"""`describe`: a human summary of objects, laid out as kubectl's describers lay it out
(`Key:<tab>value` lines at two-space indent levels, aligned by Go's tabwriter with
padding 2), with the object's events at the end.

Pods, deployments and nodes have kubectl's specific describers (the subset of fields
minik8s uses); every other kind gets kubectl's generic describer, which prints the whole
object as nested `Title Case:` fields.
"""
from __future__ import annotations

import sys
from typing import Any

from kubectl_lite.common import CLIError, Parser, split_type_name
from kubectl_lite.describe_storage import (describe_claim_volume, describe_persistentvolume,
                                           describe_persistentvolumeclaim, describe_storageclass)
from kubectl_lite.printers import age, parse_time, rfc1123, tabwrite
from machinery.duration import human_duration
from machinery.errors import APIError

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class W:
    """Lines for tabwriter: `level` is kubectl's LEVEL_n (two spaces each)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, level: int, text: str) -> None:
        self.lines.append("  " * level + text)

    def kv(self, level: int, key: str, value: Any) -> None:
        self.line(level, f"{key}:\t{value}")

    def multiline(self, level: int, key: str, values: list[str]) -> None:
        """kubectl's printLabelsMultiline: the first value beside the key, the rest below it."""
        if not values:
            self.kv(level, key, "<none>")
            return
        self.kv(level, key, values[0])
        for v in values[1:]:
            self.lines.append(f"\t{v}")

    def render(self, *, align: bool = True) -> str:
        lines = tabwrite(self.lines, minwidth=0, padding=2) if align else self.lines
        return "".join(line + "\n" for line in lines)


def add_describe(p: Parser) -> None:
    p.add_argument("args", nargs="*", metavar="TYPE [NAME_PREFIX] | TYPE/NAME")
    p.add_argument("-l", "--selector", default=None)
    p.add_bool("--all-namespaces", "-A")
    p.add_bool("--show-events", default=True)
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_bool("--recursive", "-R")


def run_describe(args: Any, s: Any) -> int:
    from kubectl_lite.cli import api_error_message
    from kubectl_lite.session import ALL
    from machinery.errors import NotFound
    targets: list[tuple[Any, dict]] = []
    errors = []
    if args.filename:
        from kubectl_lite.manifests import read_documents
        for d in read_documents(args.filename, recursive=args.recursive):
            r = s.for_object(d.obj, d.source)
            try:
                targets.append((r, s.client.get(r, d.obj["metadata"]["name"],
                                                namespace=s.namespace_of(r, d.obj) or None)))
            except NotFound as err:
                errors.append(api_error_message(err))
    pairs = split_type_name(args.args)
    if not pairs and not args.filename:
        raise CLIError('You must specify the type of resource to describe. Use "kubectl-lite '
                       'api-resources" for a complete list of supported resources.')
    for kind, names in pairs:
        r = s.resource(kind)
        ns = ALL if args.all_namespaces else None
        if names and "/" in (args.args[0] if args.args else ""):
            for n in names:
                try:
                    targets.append((r, s.client.get(r, n)))
                except NotFound as err:
                    errors.append(api_error_message(err))
            continue
        if names:
            # kubectl: an exact name, else every object whose name starts with it
            for n in names:
                try:
                    targets.append((r, s.client.get(r, n)))
                    continue
                except NotFound as err:
                    found = [o for o in s.client.list(r, namespace=ns, label_selector=args.selector)
                             .get("items", []) if o["metadata"]["name"].startswith(n)]
                    if not found:
                        errors.append(api_error_message(err))
                    targets += [(r, o) for o in found]
        else:
            items = s.client.list(r, namespace=ns, label_selector=args.selector).get("items", [])
            targets += [(r, o) for o in items]
    if not targets and not errors:
        print(f"No resources found in {s.namespace} namespace." if not args.all_namespaces
              else "No resources found", file=sys.stderr)
    first = True
    for r, obj in targets:
        obj.setdefault("kind", r.kind)
        obj.setdefault("apiVersion", r.api_version)
        w = W()
        describer = DESCRIBERS.get((r.group, r.kind), describe_generic)
        describer(s, r, obj, w)
        if args.show_events and (r.group, r.kind) != ("", "Namespace"):
            events_section(s, obj, w)
        if not first:
            sys.stdout.write("\n\n")
        sys.stdout.write(w.render())
        first = False
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


# -- shared pieces -----------------------------------------------------------------------

def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _annotations(md: dict) -> list[str]:
    return [f"{k}: {v}" for k, v in sorted((md.get("annotations") or {}).items())
            if k != LAST_APPLIED]


def _labels(md: dict) -> list[str]:
    return [f"{k}={v}" for k, v in sorted((md.get("labels") or {}).items())]


def events_section(s: Any, obj: dict, w: W, level: int = 0) -> None:
    md = _meta(obj)
    fs = f"involvedObject.name={md.get('name', '')}"
    if md.get("namespace"):
        fs += f",involvedObject.namespace={md['namespace']}"
    if md.get("uid"):
        fs += f",involvedObject.uid={md['uid']}"
    try:
        events = s.client.list("events", namespace=md.get("namespace") or "default",
                               field_selector=fs).get("items", [])
    except APIError:  # best effort, as in kubectl
        events = []
    if not events:
        w.kv(level, "Events", "<none>")
        return
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or
                _meta(e).get("creationTimestamp") or "")
    w.line(level, "Events:")
    w.line(level + 1, "Type\tReason\tAge\tFrom\tMessage")
    w.line(level + 1, "----\t------\t----\t----\t-------")
    for e in events:
        last = e.get("lastTimestamp") or e.get("eventTime") or _meta(e).get("creationTimestamp")
        when = age(last)
        count = e.get("count") or 1
        if count > 1:
            when = f"{when} (x{count} over {age(e.get('firstTimestamp') or last)})"
        # kubectl 1.32 shows the reporting component only (not the host).
        source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or ""
        message = (e.get("message") or "").strip()
        w.line(level + 1, f"{e.get('type', '')}\t{e.get('reason', '')}\t{when}\t{source}\t{message}")


def _int_or_str(v: Any) -> str:
    return str(v) if v is not None else ""


def describe_probe(p: dict) -> str:
    attrs = (f"delay={p.get('initialDelaySeconds', 0)}s timeout={p.get('timeoutSeconds', 1)}s "
             f"period={p.get('periodSeconds', 10)}s #success={p.get('successThreshold', 1)} "
             f"#failure={p.get('failureThreshold', 3)}")
    if p.get("exec"):
        return f"exec [{' '.join(p['exec'].get('command') or [])}] {attrs}"
    if p.get("httpGet"):
        h = p["httpGet"]
        host = h.get("host", "")
        port = _int_or_str(h.get("port"))
        netloc = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}") if port else host
        return f"http-get {(h.get('scheme') or 'HTTP').lower()}://{netloc}{h.get('path', '')} {attrs}"
    if p.get("tcpSocket"):
        t = p["tcpSocket"]
        return f"tcp-socket {t.get('host', '')}:{_int_or_str(t.get('port'))} {attrs}"
    if p.get("grpc"):
        g = p["grpc"]
        return f"grpc <pod>:{g.get('port')} {g.get('service', '')} {attrs}"
    return f"unknown {attrs}"


def _env_value(e: dict) -> str:
    if "value" in e or not e.get("valueFrom"):
        return str(e.get("value", ""))
    vf = e["valueFrom"]
    if vf.get("fieldRef"):
        f = vf["fieldRef"]
        return f"({f.get('apiVersion', 'v1')}:{f.get('fieldPath', '')})"
    if vf.get("resourceFieldRef"):
        f = vf["resourceFieldRef"]
        return f"{f.get('resource', '')} ({f.get('containerName', '')})"
    for key, what in (("configMapKeyRef", "config map"), ("secretKeyRef", "secret")):
        if vf.get(key):
            ref = vf[key]
            return (f"<set to the key '{ref.get('key', '')}' of {what} '{ref.get('name', '')}'>"
                    f"\tOptional: {str(bool(ref.get('optional', False))).lower()}")
    return ""


def describe_containers(w: W, title: str, containers: list[dict], statuses: list[dict] | None,
                        space: str = "") -> None:
    w.line(1 if space else 0, f"{title}:")
    by_name = {cs.get("name"): cs for cs in statuses or []}
    for c in containers:
        w.line(1, f"{space}{c.get('name', '')}:")
        st = by_name.get(c.get("name"))
        if st is not None and st.get("containerID"):
            w.kv(2, "Container ID", st["containerID"])
        w.kv(2, "Image", c.get("image", ""))
        if st is not None:
            w.kv(2, "Image ID", st.get("imageID", ""))
        ports = c.get("ports") or []
        if not ports:
            w.kv(2, "Port", "<none>")
            w.kv(2, "Host Port", "<none>")
        else:
            w.kv(2, "Port" if len(ports) == 1 else "Ports",
                 ", ".join(f"{p.get('containerPort')}/{p.get('protocol', 'TCP')}" for p in ports))
            w.kv(2, "Host Port" if len(ports) == 1 else "Host Ports",
                 ", ".join(f"{p.get('hostPort', 0)}/{p.get('protocol', 'TCP')}" for p in ports))
        for key, label in (("command", "Command"), ("args", "Args")):
            if c.get(key):
                w.line(2, f"{label}:")
                for part in c[key]:
                    for piece in str(part).split("\n"):
                        w.line(3, piece)
        if st is not None:
            _state(w, "State", st.get("state") or {})
            if st.get("lastState"):
                _state(w, "Last State", st["lastState"])
            w.kv(2, "Ready", "True" if st.get("ready") else "False")
            w.kv(2, "Restart Count", st.get("restartCount", 0))
        res = c.get("resources") or {}
        for key, label in (("limits", "Limits"), ("requests", "Requests")):
            if res.get(key):
                w.line(2, f"{label}:")
                for name, q in sorted(res[key].items()):
                    w.kv(3, name, q)
        for key, label in (("livenessProbe", "Liveness"), ("readinessProbe", "Readiness"),
                           ("startupProbe", "Startup")):
            if c.get(key):
                w.kv(2, label, describe_probe(c[key]))
        env_from = c.get("envFrom") or []
        if env_from:
            w.line(2, "Environment Variables from:")
            for ef in env_from:
                ref, what = (ef.get("configMapRef"), "ConfigMap") if ef.get("configMapRef") else \
                    (ef.get("secretRef"), "Secret")
                ref = ref or {}
                w.kv(3, ref.get("name", ""), f"{what}  Optional: "
                     f"{str(bool(ref.get('optional', False))).lower()}")
        env = c.get("env") or []
        if not env:
            w.kv(2, "Environment", "<none>")
        else:
            w.line(2, "Environment:")
            for e in env:
                w.kv(3, e.get("name", ""), _env_value(e))
        mounts = c.get("volumeMounts") or []
        if not mounts:
            w.kv(2, "Mounts", "<none>")
        else:
            w.line(2, "Mounts:")
            for m in sorted(mounts, key=lambda m: m.get("mountPath", "")):
                flags = ["ro" if m.get("readOnly") else "rw"]
                if m.get("subPath"):
                    flags.append(f"path=\"{m['subPath']}\"")
                w.line(3, f"{m.get('mountPath', '')} from {m.get('name', '')} ({','.join(flags)})")


def _state(w: W, label: str, state: dict) -> None:
    if state.get("running"):
        w.kv(2, label, "Running")
        w.kv(3, "Started", rfc1123(state["running"].get("startedAt")))
    elif state.get("waiting"):
        w.kv(2, label, "Waiting")
        if state["waiting"].get("reason"):
            w.kv(3, "Reason", state["waiting"]["reason"])
        if state["waiting"].get("message"):
            w.kv(3, "Message", state["waiting"]["message"])
    elif state.get("terminated"):
        t = state["terminated"]
        w.kv(2, label, "Terminated")
        if t.get("reason"):
            w.kv(3, "Reason", t["reason"])
        if t.get("message"):
            w.kv(3, "Message", t["message"])
        w.kv(3, "Exit Code", t.get("exitCode", 0))
        if t.get("signal"):
            w.kv(3, "Signal", t["signal"])
        w.kv(3, "Started", rfc1123(t.get("startedAt")))
        w.kv(3, "Finished", rfc1123(t.get("finishedAt")))
    else:
        w.kv(2, label, "Waiting")


def describe_volumes(w: W, volumes: list[dict], level: int = 0) -> None:
    if not volumes:
        w.kv(level, "Volumes", "<none>")
        return
    w.line(level, "Volumes:")
    for v in volumes:
        w.line(level + 1, f"{v.get('name', '')}:")
        lv = level + 2
        if "emptyDir" in v:
            ed = v.get("emptyDir") or {}
            w.kv(lv, "Type", "EmptyDir (a temporary directory that shares a pod's lifetime)")
            w.kv(lv, "Medium", ed.get("medium", ""))
            w.kv(lv, "SizeLimit", ed.get("sizeLimit", "<unset>"))
        elif v.get("configMap") is not None:
            cm = v["configMap"]
            w.kv(lv, "Type", "ConfigMap (a volume populated by a ConfigMap)")
            w.kv(lv, "Name", cm.get("name", ""))
            w.kv(lv, "Optional", str(bool(cm.get("optional", False))).lower())
        elif v.get("secret") is not None:
            sec = v["secret"]
            w.kv(lv, "Type", "Secret (a volume populated by a Secret)")
            w.kv(lv, "SecretName", sec.get("secretName", ""))
            w.kv(lv, "Optional", str(bool(sec.get("optional", False))).lower())
        elif v.get("hostPath") is not None:
            hp = v["hostPath"]
            w.kv(lv, "Type", "HostPath (bare host directory volume)")
            w.kv(lv, "Path", hp.get("path", ""))
            w.kv(lv, "HostPathType", hp.get("type", ""))
        elif v.get("persistentVolumeClaim") is not None:
            describe_claim_volume(w, lv, v["persistentVolumeClaim"])
        elif v.get("projected") is not None:
            w.kv(lv, "Type", "Projected (a volume that contains injected data from multiple sources)")
            describe_projected_sources(w, (v["projected"] or {}).get("sources") or [], lv)
        else:
            kind = next((k for k in v if k != "name"), "<unknown>")
            w.kv(lv, "Type", kind)


def describe_projected_sources(w: W, sources: list[dict], level: int) -> None:
    """kubectl's printProjectedVolumeSource: a line or two per source (an unset optional
    prints as Go prints a nil *bool)."""
    def optional(src: dict) -> str:
        return "<nil>" if src.get("optional") is None else str(bool(src["optional"])).lower()
    for src in sources:
        if src.get("secret") is not None:
            w.kv(level, "SecretName", src["secret"].get("name", ""))
            w.kv(level, "SecretOptionalName", optional(src["secret"]))
        elif src.get("downwardAPI") is not None:
            w.kv(level, "DownwardAPI", "true")
        elif src.get("configMap") is not None:
            w.kv(level, "ConfigMapName", src["configMap"].get("name", ""))
            w.kv(level, "ConfigMapOptional", optional(src["configMap"]))
        elif src.get("serviceAccountToken") is not None:
            w.kv(level, "TokenExpirationSeconds", src["serviceAccountToken"].get("expirationSeconds", 3600))


def describe_tolerations(w: W, tolerations: list[dict], level: int = 0, key: str = "Tolerations") -> None:
    texts = []
    for t in sorted(tolerations, key=lambda t: t.get("key", "")):
        s = t.get("key", "")
        if t.get("value"):
            s += f"={t['value']}"
        if t.get("effect"):
            s += f":{t['effect']}"
        if t.get("operator") == "Exists" and not t.get("value"):
            s += " op=Exists" if (t.get("key") or t.get("effect")) else "op=Exists"
        if t.get("tolerationSeconds") is not None:
            s += f" for {t['tolerationSeconds']}s"
        texts.append(s)
    w.multiline(level, key, texts)


def qos_class(pod: dict) -> str:
    if (pod.get("status") or {}).get("qosClass"):
        return pod["status"]["qosClass"]
    containers = (pod.get("spec") or {}).get("containers") or []
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    guaranteed = True
    any_set = False
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            want = req.get(r, lim.get(r))
            if lim.get(r) is None or str(want) != str(lim.get(r)):
                guaranteed = False
        requests.update(req)
        limits.update(lim)
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


# -- pods --------------------------------------------------------------------------------

def describe_pod(s: Any, r: Any, pod: dict, w: W) -> None:
    md, spec, status = _meta(pod), pod.get("spec") or {}, pod.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.kv(0, "Priority", spec.get("priority", 0))
    if spec.get("priorityClassName"):
        w.kv(0, "Priority Class Name", spec["priorityClassName"])
    if spec.get("runtimeClassName"):
        w.kv(0, "Runtime Class Name", spec["runtimeClassName"])
    w.kv(0, "Service Account", spec.get("serviceAccountName", ""))
    node = spec.get("nodeName")
    w.kv(0, "Node", f"{node}/{status['hostIP']}" if node and status.get("hostIP") else (node or "<none>"))
    if status.get("startTime"):
        w.kv(0, "Start Time", rfc1123(status["startTime"]))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    if md.get("deletionTimestamp"):
        grace = md.get("deletionGracePeriodSeconds", 0)
        w.kv(0, "Status", f"Terminating (lasts {age(md['deletionTimestamp'])})")
        w.kv(0, "Termination Grace Period", f"{grace}s")
    else:
        w.kv(0, "Status", status.get("phase", ""))
    if status.get("reason"):
        w.kv(0, "Reason", status["reason"])
    if status.get("message"):
        w.kv(0, "Message", status["message"])
    w.kv(0, "IP", status.get("podIP", ""))
    ips = [x.get("ip", "") for x in status.get("podIPs") or []]
    if not ips:
        w.kv(0, "IPs", "<none>")
    else:
        w.line(0, "IPs:")
        for ip in ips:
            w.kv(1, "IP", ip)
    ctrl = next((o for o in md.get("ownerReferences") or [] if o.get("controller")), None)
    if ctrl:
        w.kv(0, "Controlled By", f"{ctrl.get('kind')}/{ctrl.get('name')}")
    if spec.get("initContainers"):
        describe_containers(w, "Init Containers", spec["initContainers"],
                            status.get("initContainerStatuses"))
    describe_containers(w, "Containers", spec.get("containers") or [],
                        status.get("containerStatuses"))
    if status.get("conditions"):
        w.line(0, "Conditions:")
        w.line(1, "Type\tStatus")
        for c in status["conditions"]:
            w.line(1, f"{c.get('type', '')} \t{c.get('status', '')} ")
    describe_volumes(w, spec.get("volumes") or [])
    w.kv(0, "QoS Class", qos_class(pod))
    w.multiline(0, "Node-Selectors", [f"{k}={v}" for k, v in sorted((spec.get("nodeSelector") or {}).items())])
    describe_tolerations(w, spec.get("tolerations") or [])


# -- deployments -------------------------------------------------------------------------

def selector_string(sel: dict | None) -> str:
    sel = sel or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = e.get("operator", "")
        if op in ("Exists", "DoesNotExist"):
            parts.append(("" if op == "Exists" else "!") + e.get("key", ""))
        else:
            parts.append(f"{e.get('key')} {op.lower()} ({','.join(e.get('values') or [])})")
    return ",".join(parts) or "<none>"


def describe_replicaset(s: Any, r: Any, rs: dict, w: W) -> None:
    md, spec, status = _meta(rs), rs.get("spec") or {}, rs.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.kv(0, "Selector", selector_string(spec.get("selector")))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    ctrl = next((o for o in md.get("ownerReferences") or [] if o.get("controller")), None)
    if ctrl:
        w.kv(0, "Controlled By", f"{ctrl.get('kind')}/{ctrl.get('name')}")
    w.kv(0, "Replicas", f"{status.get('replicas', 0)} current / {spec.get('replicas', 1)} desired")
    w.kv(0, "Pods Status", _pods_status(s, rs, selector_string(spec.get("selector"))))
    describe_template(w, spec.get("template") or {})
    describe_conditions(w, status.get("conditions") or [])


def _pods_status(s: Any, owner: dict, selector: str) -> str:
    """`N Running / N Waiting / N Succeeded / N Failed` over the owner's pods."""
    md = _meta(owner)
    phases = {"Running": 0, "Pending": 0, "Succeeded": 0, "Failed": 0}
    try:
        pods = s.client.list("pods", namespace=md.get("namespace"),
                             label_selector=None if selector == "<none>" else selector).get("items", [])
    except APIError:
        pods = []
    for p in pods:
        if any(o.get("uid") == md.get("uid") for o in _meta(p).get("ownerReferences") or []):
            phase = (p.get("status") or {}).get("phase", "Pending")
            phases[phase] = phases.get(phase, 0) + 1
    return (f"{phases['Running']} Running / {phases['Pending']} Waiting / "
            f"{phases['Succeeded']} Succeeded / {phases['Failed']} Failed")


def describe_daemonset(s: Any, r: Any, ds: dict, w: W) -> None:
    """kubectl's describeDaemonSet."""
    md, spec, status = _meta(ds), ds.get("spec") or {}, ds.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    sel = selector_string(spec.get("selector"))
    w.kv(0, "Selector", sel)
    node_sel = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    w.kv(0, "Node-Selector", ",".join(f"{k}={v}" for k, v in sorted(node_sel.items())) or "<none>")
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.line(0, f"Desired Number of Nodes Scheduled: {status.get('desiredNumberScheduled', 0)}")
    w.line(0, f"Current Number of Nodes Scheduled: {status.get('currentNumberScheduled', 0)}")
    w.line(0, f"Number of Nodes Scheduled with Up-to-date Pods: {status.get('updatedNumberScheduled', 0)}")
    w.line(0, f"Number of Nodes Scheduled with Available Pods: {status.get('numberAvailable', 0)}")
    w.line(0, f"Number of Nodes Misscheduled: {status.get('numberMisscheduled', 0)}")
    w.kv(0, "Pods Status", _pods_status(s, ds, sel))
    describe_template(w, spec.get("template") or {})


def describe_replicationcontroller(s: Any, r: Any, rc: dict, w: W) -> None:
    """kubectl's ReplicationControllerDescriber: a plain-map selector."""
    md, spec, status = _meta(rc), rc.get("spec") or {}, rc.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    sel = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>"
    w.kv(0, "Selector", sel)
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "Replicas", f"{status.get('replicas', 0)} current / {spec.get('replicas', 1)} desired")
    w.kv(0, "Pods Status", _pods_status(s, rc, sel))
    describe_template(w, spec.get("template") or {})
    describe_conditions(w, status.get("conditions") or [])


def describe_conditions(w: W, conditions: list[dict]) -> None:
    """A workload's conditions, as kubectl prints them for ReplicaSets and Deployments."""
    if conditions:
        w.line(0, "Conditions:")
        w.line(1, "Type\tStatus\tReason")
        w.line(1, "----\t------\t------")
        for c in conditions:
            w.line(1, f"{c.get('type', '')} \t{c.get('status', '')}\t{c.get('reason', '')}")


def describe_template(w: W, template: dict, level: int = 0) -> None:
    md, spec = template.get("metadata") or {}, template.get("spec") or {}
    w.line(level, "Pod Template:")
    w.multiline(level + 1, "Labels", _labels(md))
    if md.get("annotations"):
        w.multiline(level + 1, "Annotations", _annotations(md))
    if spec.get("serviceAccountName"):
        w.kv(level + 1, "Service Account", spec["serviceAccountName"])
    if spec.get("initContainers"):
        describe_containers(w, "Init Containers", spec["initContainers"], None, space=" ")
    describe_containers(w, "Containers", spec.get("containers") or [], None, space=" ")
    describe_volumes(w, spec.get("volumes") or [], level + 1)
    w.multiline(level + 1, "Node-Selectors",
                [f"{k}={v}" for k, v in sorted((spec.get("nodeSelector") or {}).items())])
    describe_tolerations(w, spec.get("tolerations") or [], level + 1)


def owned_replicasets(s: Any, deploy: dict) -> list[dict]:
    md = _meta(deploy)
    sel = selector_string((deploy.get("spec") or {}).get("selector"))
    items = s.client.list("replicasets", namespace=md.get("namespace"),
                          label_selector=None if sel == "<none>" else sel).get("items", [])
    return [rs for rs in items if any(o.get("uid") == md.get("uid") and o.get("controller")
                                      for o in _meta(rs).get("ownerReferences") or [])]


def revision(obj: dict) -> int:
    try:
        return int((_meta(obj).get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))
    except ValueError:
        return 0


def describe_deployment(s: Any, r: Any, d: dict, w: W) -> None:
    md, spec, status = _meta(d), d.get("spec") or {}, d.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.kv(0, "CreationTimestamp", rfc1123(md.get("creationTimestamp")))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "Selector", selector_string(spec.get("selector")))
    want = spec.get("replicas", 1)
    w.kv(0, "Replicas", f"{want} desired | {status.get('updatedReplicas', 0)} updated | "
                        f"{status.get('replicas', 0)} total | {status.get('availableReplicas', 0)} "
                        f"available | {status.get('unavailableReplicas', 0)} unavailable")
    strategy = spec.get("strategy") or {}
    w.kv(0, "StrategyType", strategy.get("type", "RollingUpdate"))
    w.kv(0, "MinReadySeconds", spec.get("minReadySeconds", 0))
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        ru = strategy.get("rollingUpdate") or {}
        w.kv(0, "RollingUpdateStrategy", f"{ru.get('maxUnavailable', '25%')} max unavailable, "
                                         f"{ru.get('maxSurge', '25%')} max surge")
    describe_template(w, spec.get("template") or {})
    describe_conditions(w, status.get("conditions") or [])
    try:
        rss = owned_replicasets(s, d)
    except APIError:  # best effort, as in kubectl
        rss = []
    tpl = _strip_hash(spec.get("template") or {})
    new = [rs for rs in rss if _strip_hash((rs.get("spec") or {}).get("template") or {}) == tpl]
    new_rs = max(new, key=revision) if new else None
    old = [rs for rs in rss if rs is not new_rs and ((rs.get("spec") or {}).get("replicas") or 0) > 0]

    def show(rs: dict) -> str:
        return (f"{_meta(rs).get('name')} ({(rs.get('status') or {}).get('replicas', 0)}/"
                f"{(rs.get('spec') or {}).get('replicas', 0)} replicas created)")
    if rss:
        w.kv(0, "OldReplicaSets", ", ".join(show(rs) for rs in old) or "<none>")
        w.kv(0, "NewReplicaSet", show(new_rs) if new_rs else "<none>")


def _strip_hash(template: dict) -> dict:
    import copy
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop("pod-template-hash", None)
    return t


# -- nodes -------------------------------------------------------------------------------

def describe_node(s: Any, r: Any, node: dict, w: W) -> None:
    from machinery.quantity import parse_quantity
    md, spec, status = _meta(node), node.get("spec") or {}, node.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    roles = sorted(k.split("/", 1)[1] for k in (md.get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    w.kv(0, "Roles", ",".join(roles) or "<none>")
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "CreationTimestamp", rfc1123(md.get("creationTimestamp")))
    taints = []
    for t in spec.get("taints") or []:
        taints.append(f"{t.get('key', '')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect', '')}")
    w.multiline(0, "Taints", taints)
    w.kv(0, "Unschedulable", "true" if spec.get("unschedulable") else "false")
    try:
        lease = s.client.get("leases", md.get("name", ""), namespace="kube-node-lease")
        ls = lease.get("spec") or {}
        w.line(0, "Lease:")
        w.kv(1, "HolderIdentity", ls.get("holderIdentity", "<unset>"))
        w.kv(1, "AcquireTime", rfc1123(ls.get("acquireTime")))
        w.kv(1, "RenewTime", rfc1123(ls.get("renewTime")))
    except APIError as err:  # best effort, as in kubectl
        w.kv(0, "Lease", f"Failed to get lease: {err}")
    conditions = status.get("conditions") or []
    if conditions:
        w.line(0, "Conditions:")
        w.line(1, "Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage")
        w.line(1, "----\t------\t-----------------\t------------------\t------\t-------")
        for c in conditions:
            w.line(1, f"{c.get('type', '')} \t{c.get('status', '')} \t"
                      f"{rfc1123(c.get('lastHeartbeatTime'))} \t{rfc1123(c.get('lastTransitionTime'))} \t"
                      f"{c.get('reason', '')} \t{c.get('message', '')}")
    addresses = status.get("addresses") or []
    if addresses:
        w.line(0, "Addresses:")
        for a in addresses:
            w.kv(1, a.get("type", ""), a.get("address", ""))
    for key, label in (("capacity", "Capacity"), ("allocatable", "Allocatable")):
        if status.get(key):
            w.line(0, f"{label}:")
            for name, q in sorted(status[key].items()):
                w.kv(1, name, q)
    info = status.get("nodeInfo") or {}
    w.line(0, "System Info:")
    for k, label in (("machineID", "Machine ID"), ("systemUUID", "System UUID"),
                     ("bootID", "Boot ID"), ("kernelVersion", "Kernel Version"),
                     ("osImage", "OS Image"), ("operatingSystem", "Operating System"),
                     ("architecture", "Architecture"),
                     ("containerRuntimeVersion", "Container Runtime Version"),
                     ("kubeletVersion", "Kubelet Version"), ("kubeProxyVersion", "Kube-Proxy Version")):
        w.kv(1, label, info.get(k, ""))
    if spec.get("podCIDR"):
        w.kv(0, "PodCIDR", spec["podCIDR"])
        w.kv(0, "PodCIDRs", ",".join(spec.get("podCIDRs") or [spec["podCIDR"]]))
    from kubectl_lite.session import ALL
    try:
        pods = s.client.list("pods", namespace=ALL, field_selector=(
            f"spec.nodeName={md.get('name')},status.phase!=Succeeded,status.phase!=Failed")
        ).get("items", [])
    except APIError:  # best effort, as in kubectl
        pods = []
    alloc = status.get("allocatable") or {}

    def total(pod: dict, kind: str, res: str):
        return sum((parse_quantity((c.get("resources") or {}).get(kind, {}).get(res, 0))
                    for c in (pod.get("spec") or {}).get("containers") or []), start=parse_quantity(0))

    def pct(v, res: str) -> str:
        cap = parse_quantity(alloc.get(res, 0))
        return f"{int(v * 100 / cap) if cap else 0}%"

    def show(v, res: str) -> str:
        if res == "cpu":
            m = int(v * 1000)
            return f"{m}m" if m % 1000 else str(m // 1000)
        from machinery.quantity import BINARY_SI, format_quantity
        return format_quantity(v, BINARY_SI) if v else "0"
    w.kv(0, "Non-terminated Pods", f"({len(pods)} in total)")
    w.line(1, "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge")
    w.line(1, "---------\t----\t\t------------\t----------\t---------------\t-------------\t---")
    sums = {(k, r): parse_quantity(0) for k in ("requests", "limits") for r in ("cpu", "memory")}
    for p in pods:
        pm = _meta(p)
        cells = []
        for res in ("cpu", "memory"):
            for kind in ("requests", "limits"):
                v = total(p, kind, res)
                sums[(kind, res)] += v
                cells.append(f"{show(v, res)} ({pct(v, res)})")
        w.line(1, f"{pm.get('namespace', '')}\t{pm.get('name', '')}\t\t{cells[0]}\t{cells[1]}\t"
                  f"{cells[2]}\t{cells[3]}\t{age(pm.get('creationTimestamp'))}")
    w.line(0, "Allocated resources:")
    w.line(1, "(Total limits may be over 100 percent, i.e., overcommitted.)")
    w.line(1, "Resource\tRequests\tLimits")
    w.line(1, "--------\t--------\t------")
    for res in ("cpu", "memory"):
        rq, lm = sums[("requests", res)], sums[("limits", res)]
        w.line(1, f"{res}\t{show(rq, res)} ({pct(rq, res)})\t{show(lm, res)} ({pct(lm, res)})")
    w.line(1, "ephemeral-storage\t0 (0%)\t0 (0%)")


# -- everything else ---------------------------------------------------------------------

_ACRONYMS = {"api": "API", "uid": "UID", "ip": "IP", "ips": "IPs", "url": "URL", "id": "ID",
             "cidr": "CIDR", "cidrs": "CIDRs", "tls": "TLS", "dns": "DNS", "http": "HTTP",
             "https": "HTTPS", "tcp": "TCP", "udp": "UDP", "json": "JSON", "uri": "URI"}


def title(key: str) -> str:
    """camelCase -> `Camel Case`, with kubectl's acronyms (`apiVersion` -> `API Version`)."""
    words, cur = [], ""
    for i, ch in enumerate(key):
        if ch.isupper() and cur and (not cur[-1].isupper() or
                                     (i + 1 < len(key) and key[i + 1].islower())):
            words.append(cur)
            cur = ch
        elif ch in "_-." and cur:
            words.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        words.append(cur)
    return " ".join(_ACRONYMS.get(w.lower(), w[:1].upper() + w[1:]) for w in words)


_SKIP = {("metadata", "name"), ("metadata", "namespace"), ("metadata", "labels"),
         ("metadata", "annotations"), ("metadata", "managedFields")}


def _generic(w: W, level: int, value: dict, path: tuple = ()) -> None:
    for k in sorted(value):
        v = value[k]
        if path + (k,) in _SKIP:
            continue
        if isinstance(v, dict):
            if not v:
                continue
            w.line(level, f"{title(k)}:")
            _generic(w, level + 1, v, path + (k,))
        elif isinstance(v, list):
            if not v:
                continue
            w.line(level, f"{title(k)}:")
            for item in v:
                if isinstance(item, dict):
                    _generic(w, level + 1, item, path + (k,))
                else:
                    w.line(level + 1, str(item))
        else:
            text = "true" if v is True else "false" if v is False else "" if v is None else str(v)
            w.kv(level, title(k), text)


def describe_generic(s: Any, r: Any, obj: dict, w: W) -> None:
    md = _meta(obj)
    w.kv(0, "Name", md.get("name", ""))
    if r.namespaced:
        w.kv(0, "Namespace", md.get("namespace", ""))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    rest = {k: v for k, v in obj.items()}
    _generic(w, 0, rest)


def describe_configmap(s: Any, r: Any, cm: dict, w: W) -> None:
    md = _meta(cm)
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    for k, v in sorted((cm.get("data") or {}).items()):
        w.line(0, f"{k}:")
        w.line(0, "----")
        w.line(0, str(v))
        w.line(0, "")
    w.line(0, "")
    w.line(0, "BinaryData")
    w.line(0, "====")
    for k, v in sorted((cm.get("binaryData") or {}).items()):
        w.line(0, f"{k}: {len(v) * 3 // 4} bytes")
    w.line(0, "")


def describe_service(s: Any, r: Any, svc: dict, w: W) -> None:
    md, spec = _meta(svc), svc.get("spec") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "Selector", ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
         or "<none>")
    w.kv(0, "Type", spec.get("type", "ClusterIP"))
    if spec.get("ipFamilyPolicy"):
        w.kv(0, "IP Family Policy", spec["ipFamilyPolicy"])
    w.kv(0, "IP Families", ",".join(spec.get("ipFamilies") or []) or "<none>")
    w.kv(0, "IP", spec.get("clusterIP", ""))
    w.kv(0, "IPs", ",".join(spec.get("clusterIPs") or []) or "<none>")
    try:
        ep = s.client.get("endpoints", md.get("name", ""), namespace=md.get("namespace"))
    except APIError:
        ep = {}
    for port in spec.get("ports") or []:
        proto = port.get("protocol", "TCP")
        w.kv(0, "Port", f"{port.get('name') or '<unset>'}\t{port.get('port')}/{proto}")
        target = port.get("targetPort", port.get("port"))
        w.kv(0, "TargetPort", f"{target}/{proto}")
        if port.get("nodePort"):
            w.kv(0, "NodePort", f"{port.get('name') or '<unset>'}\t{port['nodePort']}/{proto}")
        addrs = []
        for sub in ep.get("subsets") or []:
            ports = [p for p in sub.get("ports") or [] if p.get("name", "") == port.get("name", "")
                     or len(sub.get("ports") or []) == 1]
            for a in sub.get("addresses") or []:
                addrs += [f"{a.get('ip')}:{p.get('port')}" for p in ports]
        w.kv(0, "Endpoints", ",".join(addrs) or "<none>")
    w.kv(0, "Session Affinity", spec.get("sessionAffinity", "None"))
    if spec.get("internalTrafficPolicy"):
        w.kv(0, "Internal Traffic Policy", spec["internalTrafficPolicy"])


def describe_namespace(s: Any, r: Any, ns: dict, w: W) -> None:
    md = _meta(ns)
    w.kv(0, "Name", md.get("name", ""))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "Status", (ns.get("status") or {}).get("phase", "Active"))


# -- batch/v1 (kubectl's describeJob and describeCronJob) --------------------------------

def _controlled_by(w: W, md: dict) -> None:
    ctrl = next((o for o in md.get("ownerReferences") or [] if o.get("controller")), None)
    if ctrl:
        w.kv(0, "Controlled By", f"{ctrl.get('kind')}/{ctrl.get('name')}")


def describe_job(s: Any, r: Any, job: dict, w: W) -> None:
    md, spec, status = _meta(job), job.get("spec") or {}, job.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.kv(0, "Selector", selector_string(spec.get("selector")))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    _controlled_by(w, md)
    w.kv(0, "Parallelism", spec.get("parallelism", "<unset>"))
    w.kv(0, "Completions", spec.get("completions", "<unset>"))
    w.kv(0, "Completion Mode", spec.get("completionMode", "NonIndexed"))
    w.kv(0, "Suspend", str(spec.get("suspend", False)).lower())
    w.kv(0, "Backoff Limit", spec.get("backoffLimit", 6))
    if spec.get("ttlSecondsAfterFinished") is not None:
        w.kv(0, "TTL Seconds After Finished", spec["ttlSecondsAfterFinished"])
    start, done = status.get("startTime"), status.get("completionTime")
    if start:
        w.kv(0, "Start Time", rfc1123(start))
    if done:
        w.kv(0, "Completed At", rfc1123(done))
    t0, t1 = parse_time(start), parse_time(done)
    if t0 is not None and t1 is not None:
        w.kv(0, "Duration", human_duration((t1 - t0).total_seconds()))
    if spec.get("activeDeadlineSeconds") is not None:
        w.kv(0, "Active Deadline Seconds", f"{spec['activeDeadlineSeconds']}s")
    ready = f" ({status['ready']} Ready)" if status.get("ready") is not None else ""
    w.kv(0, "Pods Statuses", f"{status.get('active', 0)} Active{ready} / "
                             f"{status.get('succeeded', 0)} Succeeded / {status.get('failed', 0)} Failed")
    if spec.get("completionMode") == "Indexed":
        w.kv(0, "Completed Indexes", status.get("completedIndexes") or "<none>")
    describe_template(w, spec.get("template") or {})


def describe_cronjob(s: Any, r: Any, cj: dict, w: W) -> None:
    md, spec, status = _meta(cj), cj.get("spec") or {}, cj.get("status") or {}
    jspec = (spec.get("jobTemplate") or {}).get("spec") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "Schedule", spec.get("schedule", ""))
    w.kv(0, "Concurrency Policy", spec.get("concurrencyPolicy", "Allow"))
    w.kv(0, "Suspend", "True" if spec.get("suspend") else "False")
    for key, title_ in (("successfulJobsHistoryLimit", "Successful Job History Limit"),
                        ("failedJobsHistoryLimit", "Failed Job History Limit"),
                        ("startingDeadlineSeconds", "Starting Deadline Seconds")):
        value = spec.get(key)
        w.kv(0, title_, "<unset>" if value is None else (f"{value}s" if key.startswith("starting") else value))
    w.kv(0, "Selector", selector_string(jspec["selector"]) if jspec.get("selector") else "<unset>")
    w.kv(0, "Parallelism", jspec.get("parallelism", "<unset>"))
    w.kv(0, "Completions", jspec.get("completions", "<unset>"))
    if jspec.get("activeDeadlineSeconds") is not None:
        w.kv(0, "Active Deadline Seconds", f"{jspec['activeDeadlineSeconds']}s")
    describe_template(w, jspec.get("template") or {})
    w.kv(0, "Last Schedule Time", rfc1123(status.get("lastScheduleTime")))
    w.kv(0, "Active Jobs", ", ".join(a.get("name", "") for a in status.get("active") or []) or "<none>")


DESCRIBERS = {("", "Namespace"): describe_namespace, ("", "Pod"): describe_pod,
              ("apps", "ReplicaSet"): describe_replicaset, ("apps", "Deployment"): describe_deployment,
              ("", "Node"): describe_node, ("", "ConfigMap"): describe_configmap,
              ("", "Service"): describe_service,
              ("batch", "Job"): describe_job, ("batch", "CronJob"): describe_cronjob,
              ("", "PersistentVolume"): describe_persistentvolume,
              ("", "PersistentVolumeClaim"): describe_persistentvolumeclaim,
              ("storage.k8s.io", "StorageClass"): describe_storageclass,
              ("apps", "DaemonSet"): describe_daemonset,
              ("", "ReplicationController"): describe_replicationcontroller}


# --- StatefulSet and PodDisruptionBudget (kubectl's StatefulSetDescriber, PodDisruptionBudgetDescriber) ---

def describe_statefulset(s: Any, r: Any, sts: dict, w: W) -> None:
    md, spec, status = _meta(sts), sts.get("spec") or {}, sts.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.kv(0, "CreationTimestamp", rfc1123(md.get("creationTimestamp")))
    w.kv(0, "Selector", selector_string(spec.get("selector")))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "Replicas", f"{spec.get('replicas', 1)} desired | {status.get('replicas', 0)} total")
    strategy = spec.get("updateStrategy") or {}
    w.kv(0, "Update Strategy", strategy.get("type", "RollingUpdate"))
    rolling = strategy.get("rollingUpdate") or {}
    if rolling.get("partition") is not None:
        w.kv(1, "Partition", rolling["partition"])
    if rolling.get("maxUnavailable") is not None:
        w.kv(1, "MaxUnavailable", rolling["maxUnavailable"])
    w.kv(0, "Pods Status", _pods_status(s, sts, selector_string(spec.get("selector"))))
    describe_template(w, spec.get("template") or {})
    claims = spec.get("volumeClaimTemplates") or []
    if not claims:
        w.kv(0, "Volume Claims", "<none>")
    else:
        w.line(0, "Volume Claims:")
        for c in claims:
            cmd, cspec = c.get("metadata") or {}, c.get("spec") or {}
            w.kv(1, "Name", cmd.get("name", ""))
            w.kv(1, "StorageClass", cspec.get("storageClassName", ""))
            w.multiline(1, "Labels", _labels(cmd))
            w.multiline(1, "Annotations", _annotations(cmd))
            w.kv(1, "Capacity", ((cspec.get("resources") or {}).get("requests") or {}).get("storage", "0"))
            w.kv(1, "Access Modes", "[" + " ".join(cspec.get("accessModes") or []) + "]")


def describe_poddisruptionbudget(s: Any, r: Any, pdb: dict, w: W) -> None:
    md, spec, status = _meta(pdb), pdb.get("spec") or {}, pdb.get("status") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    if spec.get("minAvailable") is not None:
        w.kv(0, "Min available", spec["minAvailable"])
    elif spec.get("maxUnavailable") is not None:
        w.kv(0, "Max unavailable", spec["maxUnavailable"])
    else:
        w.kv(0, "Min available", "N/A")
    w.kv(0, "Selector", selector_string(spec.get("selector")) if spec.get("selector") is not None else "<unset>")
    w.line(0, "Status:")
    w.kv(2, "Allowed disruptions", status.get("disruptionsAllowed", 0))
    w.kv(2, "Current", status.get("currentHealthy", 0))
    w.kv(2, "Desired", status.get("desiredHealthy", 0))
    w.kv(2, "Total", status.get("expectedPods", 0))


DESCRIBERS.update({("apps", "StatefulSet"): describe_statefulset,
                   ("policy", "PodDisruptionBudget"): describe_poddisruptionbudget})


# --- HorizontalPodAutoscaler (kubectl's describeHorizontalPodAutoscalerV2) ---

def _hpa_metric_line(w: W, i: int, m: dict, current: list[dict]) -> None:
    t = m.get("type", "")
    status = current[i] if i < len(current) else {}
    if t in ("Resource", "ContainerResource"):
        key = "resource" if t == "Resource" else "containerResource"
        src, now = m.get(key) or {}, (status.get(key) or {}).get("current")
        target = src.get("target") or {}
        where = f'resource {src.get("name", "")} on pods' if t == "Resource" else \
            f'resource {src.get("name", "")} of container "{src.get("container", "")}" on pods'
        if target.get("averageValue") is not None:
            cur = (now or {}).get("averageValue") or "<unknown>"
            w.line(1, f"{where}:\t{cur} / {target['averageValue']}")
            return
        cur = "<unknown>"
        if now and now.get("averageUtilization") is not None:
            cur = f"{now['averageUtilization']}% ({now.get('averageValue', '0')})"
        goal = f"{target['averageUtilization']}%" if target.get("averageUtilization") is not None else "<auto>"
        w.line(1, f"{where}  (as a percentage of request):\t{cur} / {goal}")
    elif t == "Pods":
        src = m.get("pods") or {}
        cur = ((status.get("pods") or {}).get("current") or {}).get("averageValue") or "<unknown>"
        w.line(1, f'"{(src.get("metric") or {}).get("name", "")}" on pods:\t{cur} / '
                  f'{(src.get("target") or {}).get("averageValue", "")}')
    elif t in ("Object", "External"):
        key = t.lower()
        src, target = m.get(key) or {}, (m.get(key) or {}).get("target") or {}
        now = (status.get(key) or {}).get("current") or {}
        name = (src.get("metric") or {}).get("name", "")
        obj = src.get("describedObject") or {}
        where = f'"{name}" on {obj.get("kind", "")}/{obj.get("name", "")}' if t == "Object" else f'"{name}"'
        if target.get("averageValue") is not None:
            w.line(1, f"{where} (target average value):\t{now.get('averageValue') or '<unknown>'} / "
                      f"{target['averageValue']}")
        else:
            w.line(1, f"{where} (target value):\t{now.get('value') or '<unknown>'} / {target.get('value', '')}")
    else:
        w.line(1, f'<unknown metric type "{t}">')


def describe_horizontalpodautoscaler(s: Any, r: Any, hpa: dict, w: W) -> None:
    md, spec, status = _meta(hpa), hpa.get("spec") or {}, hpa.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    w.kv(0, "Name", md.get("name", ""))
    w.kv(0, "Namespace", md.get("namespace", ""))
    w.multiline(0, "Labels", _labels(md))
    w.multiline(0, "Annotations", _annotations(md))
    w.kv(0, "CreationTimestamp", rfc1123(md.get("creationTimestamp")))
    w.kv(0, "Reference", f"{ref.get('kind', '')}/{ref.get('name', '')}")
    w.kv(0, "Metrics", "( current / target )")
    current = status.get("currentMetrics") or []
    for i, m in enumerate(spec.get("metrics") or []):
        _hpa_metric_line(w, i, m, current)
    w.kv(0, "Min replicas", spec.get("minReplicas", "<unset>"))
    w.kv(0, "Max replicas", spec.get("maxReplicas", 0))
    behavior = spec.get("behavior")
    if behavior is not None:
        w.line(0, "Behavior:")
        for title_, key in (("Scale Up", "scaleUp"), ("Scale Down", "scaleDown")):
            rules = behavior.get(key)
            if rules is None:
                continue
            w.line(1, f"{title_}:")
            if rules.get("stabilizationWindowSeconds") is not None:
                w.line(2, f"Stabilization Window: {rules['stabilizationWindowSeconds']} seconds")
            if rules.get("policies"):
                w.line(2, f"Select Policy: {rules.get('selectPolicy') or 'Max'}")
                w.line(2, "Policies:")
                for p in rules["policies"]:
                    w.line(3, f"- Type: {p.get('type', '')}\tValue: {p.get('value', 0)}\t"
                              f"Period: {p.get('periodSeconds', 0)} seconds")
    w.kv(0, f"{ref.get('kind', '')} pods",
         f"{status.get('currentReplicas', 0)} current / {status.get('desiredReplicas', 0)} desired")
    conditions = status.get("conditions") or []
    if conditions:
        w.line(0, "Conditions:")
        w.line(1, "Type\tStatus\tReason\tMessage")
        w.line(1, "----\t------\t------\t-------")
        for c in conditions:
            w.line(1, f"{c.get('type', '')}\t{c.get('status', '')}\t{c.get('reason', '')}\t{c.get('message', '')}")


DESCRIBERS[("autoscaling", "HorizontalPodAutoscaler")] = describe_horizontalpodautoscaler
