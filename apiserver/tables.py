"""Table (meta.k8s.io/v1) renderings of objects: what `kubectl get` prints.

Columns follow Kubernetes' own printers (pkg/printers/internalversion) for the kinds
served; a column with priority 1 shows only with `-o wide`.
"""
# ruff: noqa: E501  (the column tables below read one column a line, as Kubernetes' printers list them)
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from apiserver.strategies.autoscaling import to_v2
from machinery import times
from machinery.duration import human_duration

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

Col = tuple[str, str, str, int, Callable[[dict], Any]]  # name, type, description, priority, fn


def _since(ts: str | None) -> str:
    """How long ago an RFC 3339 time (Time or MicroTime) was, as kubectl prints it."""
    if not ts:
        return "<unknown>"
    try:
        t = times.parse(ts)
    except ValueError:
        return "<unknown>"
    return human_duration(time.time() - t)


def _age(obj: dict) -> str:
    return _since((obj.get("metadata") or {}).get("creationTimestamp"))


def _pod_status(pod: dict) -> str:
    md, status = pod.get("metadata") or {}, pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated"):
            t = state["terminated"]
            reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal") else
                                         f"ExitCode:{t.get('exitCode', 0)}")
    if md.get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_ready(pod: dict) -> str:
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in (pod.get("status") or {}).get("containerStatuses") or [] if c.get("ready"))
    return f"{ready}/{total}"


def _pod_restarts(pod: dict) -> int:
    return sum(c.get("restartCount", 0) for c in (pod.get("status") or {}).get("containerStatuses") or [])


def _node_status(node: dict) -> str:
    ready = "Unknown"
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            ready = "Ready" if c.get("status") == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    return ready


def _node_roles(node: dict) -> str:
    roles = sorted(k.split("/", 1)[1] for k in ((node.get("metadata") or {}).get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    return ",".join(roles) or "<none>"


def _node_address(kind: str):
    def get(node: dict) -> str:
        for a in (node.get("status") or {}).get("addresses") or []:
            if a.get("type") == kind:
                return a.get("address", "")
        return "<none>"
    return get


def _svc_ports(svc: dict) -> str:
    out = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _selector(sel: dict | None) -> str:
    """A Service's plain map or a metav1.LabelSelector, printed as a selector string."""
    sel = sel or {}
    if "matchLabels" not in sel and "matchExpressions" not in sel:
        sel = {"matchLabels": sel}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        parts.append(f"{e.get('key')} {e.get('operator', '').lower()} ({','.join(e.get('values') or [])})")
    return ",".join(parts) or "<none>"


def _containers(field: str):
    def get(obj: dict) -> str:
        cs = ((((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [])
        return ",".join(c.get(field, "") for c in cs)
    return get


def _endpoints(ep: dict) -> str:
    addrs = []
    for s in ep.get("subsets") or []:
        for a in s.get("addresses") or []:
            for p in s.get("ports") or [{}]:
                addrs.append(f"{a.get('ip')}:{p.get('port')}" if p.get("port") else a.get("ip"))
    if not addrs:
        return "<none>"
    more = len(addrs) - 3
    return ",".join(addrs[:3]) + (f" + {more} more..." if more > 0 else "")


def _more(items: list[str], limit: int = 3) -> str:
    """The first `limit` items and how many more (listWithMoreString)."""
    more = len(items) - limit
    return (",".join(items[:limit]) + (f" + {more} more..." if more > 0 else "")) or "<unset>"


def _slice_ports(es: dict) -> str:
    # A port without a number means every port: shown by name, or "*".
    return _more([str(p["port"]) if p.get("port") is not None else (p.get("name") or "*")
                  for p in es.get("ports") or [] if isinstance(p, dict)])


def _slice_endpoints(es: dict) -> str:
    return _more([str(a) for e in es.get("endpoints") or [] if isinstance(e, dict)
                  for a in e.get("addresses") or []])


def _get(*path: str, default: Any = "") -> Callable[[dict], Any]:
    def get(obj: dict) -> Any:
        cur: Any = obj
        for p in path:
            if not isinstance(cur, dict) or p not in cur:
                return default
            cur = cur[p]
        return cur if cur is not None else default
    return get


def _event_last_seen(ev: dict) -> str:
    return _since(ev.get("lastTimestamp") or ev.get("eventTime")
                  or (ev.get("metadata") or {}).get("creationTimestamp"))


def _event_source(ev: dict) -> str:
    src = ev.get("source") or {}
    component = src.get("component") or ev.get("reportingComponent") or ""
    host = src.get("host") or ev.get("reportingInstance") or ""
    return f"{component}, {host}" if host else component


def _event_object(ev: dict) -> str:
    io = ev.get("involvedObject") or {}
    return f"{(io.get('kind') or '').lower()}/{io.get('name', '')}"


def _svc_external_ip(svc: dict) -> str:
    """kubectl's getServiceExternalIP (server-side, so wide: never truncated): a
    LoadBalancer's ingress IPs (or hostnames), sorted and unique, then its externalIPs;
    `<pending>` until it has either; an ExternalName its name."""
    spec = svc.get("spec") or {}
    external = list(spec.get("externalIPs") or ())
    stype = spec.get("type", "ClusterIP")
    if stype == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
        ips = sorted({i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")})
        return ",".join(ips + external) or "<pending>"
    if stype == "ExternalName":
        return spec.get("externalName", "")
    if stype in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    return "<unknown>"


NAME: Col = ("Name", "string", "Name must be unique within a namespace.", 0, _get("metadata", "name"))
AGE: Col = ("Age", "string", "CreationTimestamp is a timestamp representing the server time when this "
            "object was created.", 0, _age)

# Per kind, attached to its row in apiserver/registry.py; a kind without its own shows
# NAME and AGE.
# The default table convertor's (what a CustomResourceDefinition gets): the time itself.
CREATED_AT: Col = ("Created At", "date", "CreationTimestamp is a timestamp representing the server time "
                   "when this object was created.", 0, _get("metadata", "creationTimestamp"))
CRDS: tuple[Col, ...] = (NAME, CREATED_AT)
PODS: tuple[Col, ...] = (NAME, ("Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", 0, _pod_ready),
                         ("Status", "string", "The aggregate status of the containers in this pod.", 0, _pod_status),
                         ("Restarts", "string", "The number of times the containers in this pod have been restarted.", 0, _pod_restarts),
                         AGE,
                         ("IP", "string", "IP address allocated to the pod.", 1, _get("status", "podIP", default="<none>")),
                         ("Node", "string", "Name of the node assigned to this pod.", 1, _get("spec", "nodeName", default="<none>")),
                         ("Nominated Node", "string", "Nominated node.", 1, _get("status", "nominatedNodeName", default="<none>")),
                         ("Readiness Gates", "string", "Readiness gates.", 1, lambda p: "<none>"))
NODES: tuple[Col, ...] = (NAME, ("Status", "string", "The status of the node", 0, _node_status),
                          ("Roles", "string", "The roles of the node", 0, _node_roles), AGE,
                          ("Version", "string", "Kubelet Version reported by the node.", 0, _get("status", "nodeInfo", "kubeletVersion")),
                          ("Internal-IP", "string", "List of internal IPs.", 1, _node_address("InternalIP")),
                          ("External-IP", "string", "List of external IPs.", 1, _node_address("ExternalIP")),
                          ("OS-Image", "string", "OS image reported by the node.", 1, _get("status", "nodeInfo", "osImage", default="<unknown>")),
                          ("Kernel-Version", "string", "Kernel version reported by the node.", 1, _get("status", "nodeInfo", "kernelVersion", default="<unknown>")),
                          ("Container-Runtime", "string", "Container runtime reported by the node.", 1, _get("status", "nodeInfo", "containerRuntimeVersion", default="<unknown>")))
DEPLOYMENTS: tuple[Col, ...] = (NAME, ("Ready", "string", "Number of the pod with ready state", 0,
                                       lambda d: f"{_get('status', 'readyReplicas', default=0)(d)}/{_get('spec', 'replicas', default=0)(d)}"),
                                ("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0, _get("status", "updatedReplicas", default=0)),
                                ("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0, _get("status", "availableReplicas", default=0)),
                                AGE,
                                ("Containers", "string", "Names of each container in the template.", 1, _containers("name")),
                                ("Images", "string", "Images referenced by each container in the template.", 1, _containers("image")),
                                ("Selector", "string", "Label selector for pods.", 1, lambda d: _selector(_get("spec", "selector", default={})(d))))
REPLICASETS: tuple[Col, ...] = (NAME, ("Desired", "integer", "Number of desired pods.", 0, _get("spec", "replicas", default=0)),
                                ("Current", "integer", "Number of actual pods.", 0, _get("status", "replicas", default=0)),
                                ("Ready", "integer", "Number of ready pods.", 0, _get("status", "readyReplicas", default=0)),
                                AGE,
                                ("Containers", "string", "Names of each container in the template.", 1, _containers("name")),
                                ("Images", "string", "Images referenced by each container in the template.", 1, _containers("image")),
                                ("Selector", "string", "Label selector for pods.", 1, lambda d: _selector(_get("spec", "selector", default={})(d))))
SERVICES: tuple[Col, ...] = (NAME, ("Type", "string", "The type of the service.", 0, _get("spec", "type", default="ClusterIP")),
                             ("Cluster-IP", "string", "The cluster IP of the service.", 0, _get("spec", "clusterIP", default="<none>")),
                             ("External-IP", "string", "The external IP of the service.", 0, _svc_external_ip),
                             ("Port(s)", "string", "The ports of the service.", 0, _svc_ports), AGE,
                             ("Selector", "string", "The label selector of the service.", 1, lambda s: _selector((s.get("spec") or {}).get("selector"))))
ENDPOINTS: tuple[Col, ...] = (NAME, ("Endpoints", "string", "Endpoints.", 0, _endpoints), AGE)
ENDPOINTSLICES: tuple[Col, ...] = (NAME, ("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice.", 0, _get("addressType")),
                                   ("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice.", 0, _slice_ports),
                                   ("Endpoints", "string", "endpoints is a list of unique endpoints in this slice.", 0, _slice_endpoints), AGE)
NAMESPACES: tuple[Col, ...] = (NAME, ("Status", "string", "The status of the namespace", 0, _get("status", "phase", default="Active")), AGE)
CONFIGMAPS: tuple[Col, ...] = (NAME, ("Data", "integer", "Number of data items.", 0,
                                      lambda c: len(c.get("data") or {}) + len(c.get("binaryData") or {})), AGE)
SECRETS: tuple[Col, ...] = (NAME, ("Type", "string", "The type of the secret.", 0, _get("type", default="Opaque")),
                            ("Data", "integer", "Number of data items.", 0, lambda s: len(s.get("data") or {})), AGE)
SERVICEACCOUNTS: tuple[Col, ...] = (NAME, ("Secrets", "integer", "Number of secrets.", 0, lambda s: len(s.get("secrets") or [])), AGE)
EVENTS: tuple[Col, ...] = (("Last Seen", "string", "Time since the event was last seen.", 0, _event_last_seen),
                           ("Type", "string", "The type of the event.", 0, _get("type")),
                           ("Reason", "string", "The reason of the event.", 0, _get("reason")),
                           ("Object", "string", "The object the event is about.", 0, _event_object),
                           ("Subobject", "string", "The field of the object the event is about.", 1,
                            _get("involvedObject", "fieldPath")),
                           ("Source", "string", "The component reporting this event.", 1, _event_source),
                           ("Message", "string", "The message of the event.", 0, _get("message")),
                           ("First Seen", "string", "The time at which the event was first recorded.", 1,
                            lambda e: _since(e.get("firstTimestamp") or e.get("eventTime"))),
                           ("Count", "string", "The number of times this event has occurred.", 1, _get("count", default=1)),
                           ("Name", "string", "Name must be unique within a namespace.", 1, _get("metadata", "name")))
LEASES: tuple[Col, ...] = (NAME, ("Holder", "string", "The holder of the lease.", 0, _get("spec", "holderIdentity")), AGE)


def _subjects(kind: str) -> Callable[[dict], str]:
    """One kind of a binding's subjects, joined as kubectl's wide columns show them
    (service accounts as namespace/name)."""
    def cell(obj: dict) -> str:
        return ", ".join(f"{s.get('namespace', '')}/{s.get('name', '')}" if kind == "ServiceAccount" else s.get("name", "")
                         for s in obj.get("subjects") or [] if isinstance(s, dict) and s.get("kind") == kind)
    return cell


def _role_ref(obj: dict) -> str:
    ref = obj.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


# Roles print their creation time as a date, not an age (Kubernetes' roleColumnDefinitions).
ROLES: tuple[Col, ...] = (NAME, ("Created At", "date", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0, _get("metadata", "creationTimestamp")))
ROLEBINDINGS: tuple[Col, ...] = (NAME, ("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.", 0, _role_ref), AGE,
                                 ("Users", "string", "Users in the roleBinding", 1, _subjects("User")),
                                 ("Groups", "string", "Groups in the roleBinding", 1, _subjects("Group")),
                                 ("ServiceAccounts", "string", "ServiceAccounts in the roleBinding", 1, _subjects("ServiceAccount")))


# --- batch/v1 (printJob, printCronJob) --------------------------------------------------

def _has_condition(obj: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict))


def _job_status(job: dict) -> str:
    if _has_condition(job, "Complete"):
        return "Complete"
    if _has_condition(job, "Failed"):
        return "Failed"
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    for kind in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if _has_condition(job, kind):
            return kind
    return "Running"


def _job_completions(job: dict) -> str:
    spec, succeeded = job.get("spec") or {}, (job.get("status") or {}).get("succeeded", 0)
    if spec.get("completions") is not None:
        return f"{succeeded}/{spec['completions']}"
    if isinstance(spec.get("parallelism"), int) and spec["parallelism"] > 1:
        return f"{succeeded}/1 of {spec['parallelism']}"
    return f"{succeeded}/1"


def _job_duration(job: dict) -> str:
    status = job.get("status") or {}
    if not status.get("startTime"):
        return ""
    if not status.get("completionTime"):
        return _since(status["startTime"])
    try:
        return human_duration(times.parse(status["completionTime"]) - times.parse(status["startTime"]))
    except ValueError:
        return "<unknown>"


def _job_template(field: str) -> Callable[[dict], str]:
    inner = _containers(field)
    return lambda cj: inner(((cj.get("spec") or {}).get("jobTemplate") or {}))


def _cronjob_last_schedule(cj: dict) -> str:
    last = (cj.get("status") or {}).get("lastScheduleTime")
    return _since(last) if last else "<none>"


JOBS: tuple[Col, ...] = (NAME, ("Status", "string", "Status of the job.", 0, _job_status),
                         ("Completions", "string", "The number of pods which reached phase Succeeded.", 0, _job_completions),
                         ("Duration", "string", "Time required to complete the job.", 0, _job_duration), AGE,
                         ("Containers", "string", "Names of each container in the template.", 1, _containers("name")),
                         ("Images", "string", "Images referenced by each container in the template.", 1, _containers("image")),
                         ("Selector", "string", "Label selector for pods.", 1, lambda j: _selector(_get("spec", "selector", default={})(j))))
CRONJOBS: tuple[Col, ...] = (NAME, ("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.", 0, _get("spec", "schedule")),
                             ("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.", 0, _get("spec", "timeZone", default="<none>")),
                             ("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions.", 0, _get("spec", "suspend", default=False)),
                             ("Active", "integer", "A list of pointers to currently running jobs.", 0, lambda cj: len((cj.get("status") or {}).get("active") or [])),
                             ("Last Schedule", "string", "Information when was the last time the job was successfully scheduled.", 0, _cronjob_last_schedule), AGE,
                             ("Containers", "string", "Names of each container in the template.", 1, _job_template("name")),
                             ("Images", "string", "Images referenced by each container in the template.", 1, _job_template("image")),
                             ("Selector", "string", "Label selector for pods.", 1,
                              lambda cj: _selector(_get("spec", "jobTemplate", "spec", "selector", default={})(cj))))


def _csr_condition(csr: dict) -> str:
    """extractCSRStatus: Denied over Approved over Pending, then Failed and Issued."""
    types = {c.get("type") for c in (csr.get("status") or {}).get("conditions") or [] if isinstance(c, dict)}
    out = "Denied" if "Denied" in types else "Approved" if "Approved" in types else "Pending"
    if "Failed" in types:
        out += ",Failed"
    if (csr.get("status") or {}).get("certificate"):
        out += ",Issued"
    return out


def _csr_duration(csr: dict) -> str:
    seconds = (csr.get("spec") or {}).get("expirationSeconds")
    return human_duration(seconds) if isinstance(seconds, int) else "<none>"


CSRS: tuple[Col, ...] = (NAME, AGE,
                         ("SignerName", "string", "signerName indicates the requested signer, and is a qualified name.", 0, _get("spec", "signerName", default="<none>")),
                         ("Requestor", "string", "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block.", 0, _get("spec", "username")),
                         ("RequestedDuration", "string", "expirationSeconds is the requested duration of validity of the issued certificate.", 0, _csr_duration),
                         ("Condition", "string", "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".", 0, _csr_condition))
# --- apps/v1 ControllerRevision and DaemonSet, core/v1 ReplicationController -------------

def _controller(obj: dict) -> str:
    """printControllerRevision's controller: `<kind>.<group>/<name>`, lowercased kind."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            group = (ref.get("apiVersion") or "").rpartition("/")[0]
            kind = ref.get("kind", "") + (f".{group}" if group else "")
            return f"{kind.lower()}/{ref.get('name', '')}" if kind else ref.get("name", "")
    return "<none>"


def _labels_of(*path: str) -> Callable[[dict], str]:
    """labels.FormatLabels: `k=v` sorted and comma-joined, or <none>."""
    get = _get(*path, default={})
    return lambda obj: ",".join(f"{k}={v}" for k, v in sorted((get(obj) or {}).items())) or "<none>"


CONTROLLERREVISIONS: tuple[Col, ...] = (NAME, ("Controller", "string", "Controller of the object", 0, _controller),
                                        ("Revision", "integer", "Revision indicates the revision of the state represented by Data.", 0, _get("revision", default=0)), AGE)
DAEMONSETS: tuple[Col, ...] = (NAME, ("Desired", "integer", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/", 0, _get("status", "desiredNumberScheduled", default=0)),
                               ("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/", 0, _get("status", "currentNumberScheduled", default=0)),
                               ("Ready", "integer", "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.", 0, _get("status", "numberReady", default=0)),
                               ("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod", 0, _get("status", "updatedNumberScheduled", default=0)),
                               ("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)", 0, _get("status", "numberAvailable", default=0)),
                               ("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/", 0, _labels_of("spec", "template", "spec", "nodeSelector")),
                               AGE,
                               ("Containers", "string", "Names of each container in the template.", 1, _containers("name")),
                               ("Images", "string", "Images referenced by each container in the template.", 1, _containers("image")),
                               ("Selector", "string", "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors", 1, lambda d: _selector(_get("spec", "selector", default={})(d))))
REPLICATIONCONTROLLERS: tuple[Col, ...] = (NAME, ("Desired", "integer", "Number of desired pods.", 0, _get("spec", "replicas", default=0)),
                                           ("Current", "integer", "Number of actual pods.", 0, _get("status", "replicas", default=0)),
                                           ("Ready", "integer", "Number of ready pods.", 0, _get("status", "readyReplicas", default=0)),
                                           AGE,
                                           ("Containers", "string", "Names of each container in the template.", 1, _containers("name")),
                                           ("Images", "string", "Images referenced by each container in the template.", 1, _containers("image")),
                                           ("Selector", "string", "Label selector for pods.", 1, _labels_of("spec", "selector")))


# --- policy/v1 (printPodDisruptionBudget) ------------------------------------------------

def _int_or_percent(key: str) -> Callable[[dict], str]:
    def cell(pdb: dict) -> str:
        value = (pdb.get("spec") or {}).get(key)
        return "N/A" if value is None else str(value)
    return cell


PODDISRUPTIONBUDGETS: tuple[Col, ...] = (
    NAME, ("Min Available", "string", "The minimum number of pods that must be available.", 0,
           _int_or_percent("minAvailable")),
    ("Max Unavailable", "string", "The maximum number of pods that may be unavailable.", 0,
     _int_or_percent("maxUnavailable")),
    ("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time.", 0,
     _get("status", "disruptionsAllowed", default=0)),
    AGE)



# --- apps/v1 StatefulSet (printStatefulSet) -----------------------------------------------

def _sts_ready(sts: dict) -> str:
    return f"{(sts.get('status') or {}).get('readyReplicas', 0)}/{(sts.get('spec') or {}).get('replicas', 0)}"


STATEFULSETS: tuple[Col, ...] = (NAME, ("Ready", "string", "Number of the pod with ready state", 0, _sts_ready), AGE,
                                 ("Containers", "string", "Names of each container in the template.", 1, _containers("name")),
                                 ("Images", "string", "Images referenced by each container in the template.", 1, _containers("image")))


# --- storage (printPersistentVolume, printPersistentVolumeClaim, printStorageClass) -----

_MODE_ABBREVIATIONS = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
                       ("ReadWriteOncePod", "RWOP"))


def _access_modes(modes: Any) -> str:
    """GetAccessModesAsString: the modes abbreviated, in Kubernetes' fixed order."""
    modes = modes if isinstance(modes, list) else []
    return ",".join(short for mode, short in _MODE_ABBREVIATIONS if mode in modes)


def _storage(resources: Any) -> str:
    return str((resources if isinstance(resources, dict) else {}).get("storage", ""))


def _terminating_or(phase: Callable[[dict], Any]) -> Callable[[dict], Any]:
    return lambda obj: "Terminating" if (obj.get("metadata") or {}).get("deletionTimestamp") else phase(obj)


def _pv_claim(pv: dict) -> str:
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    return f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref else ""


def _pvc_bound(field: str) -> Callable[[dict], str]:
    """Capacity and access modes show once the claim names its volume (from its status)."""
    def get(pvc: dict) -> str:
        if not (pvc.get("spec") or {}).get("volumeName"):
            return ""
        status = pvc.get("status") or {}
        return _storage(status.get("capacity")) if field == "capacity" else _access_modes(status.get("accessModes"))
    return get


def _sc_name(sc: dict) -> str:
    name = (sc.get("metadata") or {}).get("name", "")
    ann = (sc.get("metadata") or {}).get("annotations") or {}
    default = "true" in (ann.get("storageclass.kubernetes.io/is-default-class"),
                         ann.get("storageclass.beta.kubernetes.io/is-default-class"))
    return f"{name} (default)" if default else name


PERSISTENTVOLUMES: tuple[Col, ...] = (NAME, ("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity.", 0, lambda pv: _storage((pv.get("spec") or {}).get("capacity"))),
                                      ("Access Modes", "string", "accessModes contains all ways the volume can be mounted.", 0, lambda pv: _access_modes((pv.get("spec") or {}).get("accessModes"))),
                                      ("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.", 0, _get("spec", "persistentVolumeReclaimPolicy")),
                                      ("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim.", 0, _terminating_or(_get("status", "phase"))),
                                      ("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.", 0, _pv_claim),
                                      ("StorageClass", "string", "StorageClass of the pv", 0, _get("spec", "storageClassName")),
                                      ("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv", 0, _get("spec", "volumeAttributesClassName", default="<unset>")),
                                      ("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.", 0, _get("status", "reason")),
                                      AGE,
                                      ("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.", 1, _get("spec", "volumeMode", default="<unset>")))
PERSISTENTVOLUMECLAIMS: tuple[Col, ...] = (NAME, ("Status", "string", "phase represents the current phase of PersistentVolumeClaim.", 0, _terminating_or(_get("status", "phase"))),
                                           ("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim.", 0, _get("spec", "volumeName")),
                                           ("Capacity", "string", "capacity represents the actual resources of the underlying volume.", 0, _pvc_bound("capacity")),
                                           ("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has.", 0, _pvc_bound("accessModes")),
                                           ("StorageClass", "string", "StorageClass of the pvc", 0, _get("spec", "storageClassName")),
                                           ("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc", 0, _get("spec", "volumeAttributesClassName", default="<unset>")),
                                           AGE,
                                           ("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim.", 1, _get("spec", "volumeMode", default="<unset>")))
STORAGECLASSES: tuple[Col, ...] = (("Name", "string", "Name must be unique within a namespace.", 0, _sc_name),
                                   ("Provisioner", "string", "Indicates the type of the provisioner", 0, _get("provisioner")),
                                   ("ReclaimPolicy", "string", "Indicates the type of the reclaim policy", 0, _get("reclaimPolicy", default="Delete")),
                                   ("VolumeBindingMode", "string", "Indicates the type of the volume binding mode", 0, _get("volumeBindingMode", default="Immediate")),
                                   ("AllowVolumeExpansion", "string", "Indicates whether the storage class allow volume expand", 0, lambda sc: str(bool(sc.get("allowVolumeExpansion"))).lower()),
                                   AGE)


# --- autoscaling/v2 HorizontalPodAutoscaler (printHorizontalPodAutoscaler, formatHPAMetrics) ---

def _hpa_metric(spec: dict, status: dict | None) -> str:
    t = spec.get("type")
    key = "containerResource" if t == "ContainerResource" else str(t).lower()
    source, target = spec.get(key) or {}, (spec.get(key) or {}).get("target") or {}
    reported = (status or {}).get(key)  # None: no status for this metric yet
    current = (reported or {}).get("current") or {}

    def cur(field: str) -> str:
        return "<unknown>" if not reported or current.get(field) is None else str(current[field])
    if t in ("External", "Object"):
        if target.get("averageValue") is not None:
            return f"{cur('averageValue')}/{target['averageValue']} (avg)"
        return f"{cur('value')}/{target.get('value', '')}"
    if t == "Pods":
        return f"{cur('averageValue')}/{target.get('averageValue', '')}"
    if t in ("Resource", "ContainerResource"):
        name = source.get("name", "")
        if target.get("averageValue") is not None:
            return f"{name}: {cur('averageValue')}/{target['averageValue']}"
        util = cur("averageUtilization")
        goal = target.get("averageUtilization")
        return f"{name}: {util if util == '<unknown>' else util + '%'}/{'<auto>' if goal is None else f'{goal}%'}"
    return "<unknown type>"


def _hpa_targets(hpa: dict) -> str:
    if hpa.get("apiVersion") == "autoscaling/v1":  # printed as its v2 form, as Kubernetes prints it
        hpa = to_v2(hpa)
    specs = (hpa.get("spec") or {}).get("metrics") or []
    statuses = (hpa.get("status") or {}).get("currentMetrics") or []
    if not specs:
        return "<none>"
    shown = [_hpa_metric(s, statuses[i] if i < len(statuses) else None) for i, s in enumerate(specs[:2])]
    more = f" + {len(specs) - 2} more..." if len(specs) > 2 else ""
    return ", ".join(shown) + more


def _hpa_min(hpa: dict) -> str:
    n = (hpa.get("spec") or {}).get("minReplicas")
    return "<unset>" if n is None else str(n)


HORIZONTALPODAUTOSCALERS: tuple[Col, ...] = (
    NAME,
    ("Reference", "string", "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.", 0,
     lambda hpa: "{}/{}".format(((hpa.get("spec") or {}).get("scaleTargetRef") or {}).get("kind", ""),
                                ((hpa.get("spec") or {}).get("scaleTargetRef") or {}).get("name", ""))),
    ("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).", 0, _hpa_targets),
    ("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.", 0, _hpa_min),
    ("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.", 0, _get("spec", "maxReplicas", default=0)),
    ("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.", 0, _get("status", "currentReplicas", default=0)),
    AGE)


def table(rt: ResourceType, entries: list, resource_version: str, *, wide: bool = True) -> dict:
    cols = rt.columns or (NAME, AGE)
    defs = [{"name": n, "type": t, "format": "name" if n == "Name" else "", "description": d, "priority": p}
            for n, t, d, p, _ in cols]
    rows = []
    for e in entries:
        obj = e.obj
        md = obj.get("metadata") or {}
        rows.append({"cells": [fn(obj) for *_, fn in cols],
                     "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                "metadata": md}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version}, "columnDefinitions": defs, "rows": rows}



def _apiservice_service(obj: dict) -> str:
    svc = (obj.get("spec") or {}).get("service")
    return f"{svc.get('namespace', '')}/{svc.get('name', '')}" if isinstance(svc, dict) else "Local"


def _apiservice_available(obj: dict) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Available":
            return "True" if c.get("status") == "True" else f"{c.get('status')} ({c.get('reason')})"
    return "Unknown"


# kube-aggregator's printer (pkg/registry/apiservice/etcd).
APISERVICES: tuple[Col, ...] = (NAME, ("Service", "string", "The reference to the service that hosts this API endpoint.", 0, _apiservice_service),
                                ("Available", "string", "Whether this service is available.", 0, _apiservice_available),
                                AGE)


# --- flowcontrol.apiserver.k8s.io/v1 (printFlowSchema, printPriorityLevelConfiguration) ---

def _missing_pl(fs: dict) -> str:
    for c in (fs.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Dangling":
            return str(c.get("status", "?"))
    return "?"


def _queuing(key: str) -> Callable[[dict], Any]:
    def get(plc: dict) -> Any:
        limited = (plc.get("spec") or {}).get("limited") or {}
        q = (limited.get("limitResponse") or {}).get("queuing")
        return q.get(key, 0) if isinstance(q, dict) else "<none>"
    return get


def _nominal_shares(plc: dict) -> Any:
    limited = (plc.get("spec") or {}).get("limited")
    return limited.get("nominalConcurrencyShares", 0) if isinstance(limited, dict) else "<none>"


FLOWSCHEMAS: tuple[Col, ...] = (
    NAME,
    ("PriorityLevel", "string", "`name` is the name of the priority level configuration being referenced Required.",
     0, _get("spec", "priorityLevelConfiguration", "name")),
    ("MatchingPrecedence", "string", "`matchingPrecedence` is used to choose among the FlowSchemas that match a "
     "given request.", 0, _get("spec", "matchingPrecedence", default=0)),
    ("DistinguisherMethod", "string", "`distinguisherMethod` defines how to compute the flow distinguisher for "
     "requests that match this schema.", 0, _get("spec", "distinguisherMethod", "type", default="<none>")),
    AGE,
    ("MissingPL", "string", "references a broken or non-existent PriorityLevelConfiguration", 0, _missing_pl))
PRIORITYLEVELCONFIGURATIONS: tuple[Col, ...] = (
    NAME,
    ("Type", "string", "`type` indicates whether this priority level is subject to limitation on request "
     "execution.", 0, _get("spec", "type")),
    ("NominalConcurrencyShares", "string", "`nominalConcurrencyShares` (NCS) contributes to the computation of "
     "the NominalConcurrencyLimit (NominalCL) of this level.", 0, _nominal_shares),
    ("Queues", "string", "`queues` is the number of queues for this priority level.", 0, _queuing("queues")),
    ("HandSize", "string", "`handSize` is a small positive number that configures the shuffle sharding of "
     "requests into queues.", 0, _queuing("handSize")),
    ("QueueLengthLimit", "string", "`queueLengthLimit` is the maximum number of requests allowed to be waiting "
     "in a given queue of this priority level at a time", 0, _queuing("queueLengthLimit")),
    AGE)
