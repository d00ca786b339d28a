#!/usr/bin/env python3
"""Generate machinery/protobuf_fields.py, the field table of Kubernetes' protobuf wire format.

Kubernetes' protobuf messages are generated (by go-to-protobuf) from the Go types in
k8s.io/api and k8s.io/apimachinery, and every field of those types carries what the
wire needs in its struct tag: `protobuf:"bytes,3,opt,name=x"` gives the field number,
`json:"x,omitempty"` the JSON name and whether a zero value is left out, and the Go type
(pointer or not, slice, map, a named type) the shape of the value. This script reads
those struct definitions (a small line-based parser of `types.go`, stdlib only) and
writes the table of the messages reachable from the kinds minik8s accepts in request
bodies. It copies no Kubernetes code; the output is plain data.

The committed table was generated from
    kubernetes/api           10b39a39bcee995dfe7cd5e8e7b922be5e46f1e2
    kubernetes/apimachinery  eed236ceee2c19c2753a3d93ac0631dc20750454
(field numbers never change between releases, so a newer tree decodes older kubectls).

Usage:
    python hack/gen_protobuf.py --api /path/to/kubernetes/api/.git \
        --apimachinery /path/to/kubernetes/apimachinery/.git [--kube-aggregator /path/.git] \
        [--out machinery/protobuf_fields.py]
"""
from __future__ import annotations

import argparse
import pprint
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

# Go package import path -> (repository, file holding its types, short name in the table).
PACKAGES = {
    "k8s.io/api/core/v1": ("api", "core/v1/types.go", "core/v1"),
    "k8s.io/api/apps/v1": ("api", "apps/v1/types.go", "apps/v1"),
    "k8s.io/api/coordination/v1": ("api", "coordination/v1/types.go", "coordination/v1"),
    "k8s.io/api/policy/v1": ("api", "policy/v1/types.go", "policy/v1"),
    "k8s.io/api/autoscaling/v1": ("api", "autoscaling/v1/types.go", "autoscaling/v1"),
    "k8s.io/api/rbac/v1": ("api", "rbac/v1/types.go", "rbac/v1"),
    "k8s.io/api/discovery/v1": ("api", "discovery/v1/types.go", "discovery/v1"),
    "k8s.io/api/authorization/v1": ("api", "authorization/v1/types.go", "authorization/v1"),
    "k8s.io/api/authentication/v1": ("api", "authentication/v1/types.go", "authentication/v1"),
    "k8s.io/api/batch/v1": ("api", "batch/v1/types.go", "batch/v1"),
    # h-storage (issue 17): StorageClass.
    "k8s.io/api/storage/v1": ("api", "storage/v1/types.go", "storage/v1"),
    # A Job's `scheduling` (workload-aware scheduling) refers to these.
    "k8s.io/api/scheduling/v1alpha3": ("api", "scheduling/v1alpha3/types.go", "scheduling/v1alpha3"),
    "k8s.io/api/certificates/v1": ("api", "certificates/v1/types.go", "certificates/v1"),
    # h-hpa (issue 18): HorizontalPodAutoscaler.
    "k8s.io/api/autoscaling/v2": ("api", "autoscaling/v2/types.go", "autoscaling/v2"),
    # h-apf (issue 20): FlowSchema and PriorityLevelConfiguration.
    "k8s.io/api/flowcontrol/v1": ("api", "flowcontrol/v1/types.go", "flowcontrol/v1"),
    "k8s.io/apimachinery/pkg/apis/meta/v1": ("apimachinery", "pkg/apis/meta/v1/types.go",
                                             "meta/v1"),
    # h-agg (issue 18): APIService, from k8s.io/kube-aggregator.
    "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1": (
        "kube-aggregator", "pkg/apis/apiregistration/v1/types.go", "apiregistration/v1"),
}

# The kinds a request body may carry: (apiVersion, kind, package, Go type). The served
# kinds (apiserver/registry.py) plus the bodies of subresources and options.
ROOTS = [
    ("v1", "Namespace", "k8s.io/api/core/v1", "Namespace"),
    ("v1", "Pod", "k8s.io/api/core/v1", "Pod"),
    ("v1", "Node", "k8s.io/api/core/v1", "Node"),
    ("v1", "Service", "k8s.io/api/core/v1", "Service"),
    ("v1", "Endpoints", "k8s.io/api/core/v1", "Endpoints"),
    ("v1", "ConfigMap", "k8s.io/api/core/v1", "ConfigMap"),
    ("v1", "Secret", "k8s.io/api/core/v1", "Secret"),
    ("v1", "ServiceAccount", "k8s.io/api/core/v1", "ServiceAccount"),
    ("v1", "Event", "k8s.io/api/core/v1", "Event"),
    ("v1", "Binding", "k8s.io/api/core/v1", "Binding"),
    ("apps/v1", "Deployment", "k8s.io/api/apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet", "k8s.io/api/apps/v1", "ReplicaSet"),
    ("coordination.k8s.io/v1", "Lease", "k8s.io/api/coordination/v1", "Lease"),
    ("discovery.k8s.io/v1", "EndpointSlice", "k8s.io/api/discovery/v1", "EndpointSlice"),
    ("rbac.authorization.k8s.io/v1", "Role", "k8s.io/api/rbac/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "k8s.io/api/rbac/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "k8s.io/api/rbac/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "k8s.io/api/rbac/v1",
     "ClusterRoleBinding"),
    ("authorization.k8s.io/v1", "SubjectAccessReview", "k8s.io/api/authorization/v1",
     "SubjectAccessReview"),
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview", "k8s.io/api/authorization/v1",
     "LocalSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview", "k8s.io/api/authorization/v1",
     "SelfSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview", "k8s.io/api/authorization/v1",
     "SelfSubjectRulesReview"),
    ("authentication.k8s.io/v1", "SelfSubjectReview", "k8s.io/api/authentication/v1",
     "SelfSubjectReview"),
    ("authentication.k8s.io/v1", "TokenReview", "k8s.io/api/authentication/v1", "TokenReview"),
    ("authentication.k8s.io/v1", "TokenRequest", "k8s.io/api/authentication/v1", "TokenRequest"),
    ("batch/v1", "Job", "k8s.io/api/batch/v1", "Job"),
    ("batch/v1", "CronJob", "k8s.io/api/batch/v1", "CronJob"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest", "k8s.io/api/certificates/v1",
     "CertificateSigningRequest"),
    # h-ds (issue 17): controller history, DaemonSets, ReplicationControllers.
    ("apps/v1", "ControllerRevision", "k8s.io/api/apps/v1", "ControllerRevision"),
    ("apps/v1", "DaemonSet", "k8s.io/api/apps/v1", "DaemonSet"),
    ("v1", "ReplicationController", "k8s.io/api/core/v1", "ReplicationController"),
    # h-storage (issue 17): persistent storage.
    ("v1", "PersistentVolume", "k8s.io/api/core/v1", "PersistentVolume"),
    ("v1", "PersistentVolumeClaim", "k8s.io/api/core/v1", "PersistentVolumeClaim"),
    ("storage.k8s.io/v1", "StorageClass", "k8s.io/api/storage/v1", "StorageClass"),
    ("policy/v1", "Eviction", "k8s.io/api/policy/v1", "Eviction"),
    # h-sts (issue 17): PodDisruptionBudget.
    ("policy/v1", "PodDisruptionBudget", "k8s.io/api/policy/v1", "PodDisruptionBudget"),
    # h-sts (issue 17): StatefulSet.
    ("apps/v1", "StatefulSet", "k8s.io/api/apps/v1", "StatefulSet"),
    ("autoscaling/v1", "Scale", "k8s.io/api/autoscaling/v1", "Scale"),
    # h-hpa (issue 18): HorizontalPodAutoscaler, stored as v2 and served as v1 too.
    ("autoscaling/v2", "HorizontalPodAutoscaler", "k8s.io/api/autoscaling/v2", "HorizontalPodAutoscaler"),
    ("autoscaling/v1", "HorizontalPodAutoscaler", "k8s.io/api/autoscaling/v1", "HorizontalPodAutoscaler"),
    # h-apf (issue 20): API Priority and Fairness.
    ("flowcontrol.apiserver.k8s.io/v1", "FlowSchema", "k8s.io/api/flowcontrol/v1", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io/v1", "PriorityLevelConfiguration", "k8s.io/api/flowcontrol/v1",
     "PriorityLevelConfiguration"),
    # h-agg (issue 18): the aggregation layer's APIService.
    ("apiregistration.k8s.io/v1", "APIService", "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1",
     "APIService"),
    ("meta.k8s.io/v1", "DeleteOptions", "k8s.io/apimachinery/pkg/apis/meta/v1", "DeleteOptions"),
]

# Types with a hand-written wire form and JSON form (a custom Marshal/MarshalJSON in Go).
SPECIAL = {
    ("k8s.io/apimachinery/pkg/apis/meta/v1", "Time"): "@time",
    ("k8s.io/apimachinery/pkg/apis/meta/v1", "MicroTime"): "@microtime",
    ("k8s.io/apimachinery/pkg/apis/meta/v1", "Duration"): "@duration",
    ("k8s.io/apimachinery/pkg/apis/meta/v1", "FieldsV1"): "@fieldsv1",
    ("k8s.io/apimachinery/pkg/api/resource", "Quantity"): "@quantity",
    ("k8s.io/apimachinery/pkg/util/intstr", "IntOrString"): "@intorstring",
    ("k8s.io/apimachinery/pkg/runtime", "RawExtension"): "@rawextension",
    ("k8s.io/apimachinery/pkg/types", "UID"): "string",
    # `[]string` named types that are map values: go-to-protobuf wraps each in a message
    # of one repeated string (`items = 1`); in JSON it is the plain list.
    ("k8s.io/api/authorization/v1", "ExtraValue"): "@stringlist",
    ("k8s.io/api/authentication/v1", "ExtraValue"): "@stringlist",
    ("k8s.io/api/certificates/v1", "ExtraValue"): "@stringlist",
    ("k8s.io/api/authentication/v1", "AttestationValue"): "@stringlist",
    ("k8s.io/apimachinery/pkg/types", "NodeName"): "string",
}

SCALARS = {"string": "string", "bool": "bool", "int32": "int", "int64": "int", "int": "int",
           "uint32": "uint", "uint64": "uint", "uint16": "uint", "uint8": "uint",
           "byte": "uint"}

TAG = re.compile(r'(\w+):"([^"]*)"')


class Package:
    """The struct and named types of one Go file, and its imports by alias."""

    def __init__(self, path: str, source: str):
        self.path = path
        self.imports: dict[str, str] = {}
        self.structs: dict[str, list[dict]] = {}
        self.named: dict[str, str] = {}
        self._parse(source)

    def _parse(self, source: str) -> None:
        lines = source.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("import ("):
                i += 1
                while lines[i].strip() != ")":
                    parts = lines[i].split()
                    if parts and parts[-1].startswith('"'):
                        path = parts[-1].strip('"')
                        alias = parts[0] if len(parts) == 2 else path.rsplit("/", 1)[-1]
                        self.imports[alias] = path
                    i += 1
            elif m := re.match(r'^import (?:(\w+) )?"([^"]+)"', line):  # a single import
                self.imports[m.group(1) or m.group(2).rsplit("/", 1)[-1]] = m.group(2)
            elif m := re.match(r"^type (\w+) struct \{\s*$", line):
                fields = []
                i += 1
                while lines[i] != "}":
                    if f := self._field(lines[i]):
                        fields.append(f)
                    i += 1
                self.structs[m.group(1)] = fields
            elif m := re.match(r"^type (\w+) (?:= )?(\S+)\s*(?://.*)?$", line):
                self.named[m.group(1)] = m.group(2)
            i += 1

    @staticmethod
    def _field(line: str) -> dict | None:
        code = line.strip()
        if not code or code.startswith("//") or "`" not in code:
            return None
        decl, _, rest = code.partition("`")
        tags = dict(TAG.findall(rest.partition("`")[0]))
        if "protobuf" not in tags:
            return None  # not on the wire (TypeMeta, fields marked `protobuf:"-"`)
        words = decl.split()
        name, gotype = (words[0], words[1]) if len(words) == 2 else (None, words[0])
        return {"name": name, "type": gotype, "json": tags.get("json", ""),
                "protobuf": tags["protobuf"]}


class Generator:
    def __init__(self, packages: dict[str, Package]):
        self.packages = packages
        self.messages: dict[str, list[tuple]] = {}
        self.queue: deque[tuple[str, str]] = deque()

    def short(self, pkg: str, name: str) -> str:
        return f"{PACKAGES[pkg][2]}.{name}"

    def resolve(self, pkg: str, gotype: str) -> tuple:
        """A Go type -> ('scalar', kind) | ('special', kind) | ('msg', name) |
        ('list', elem) | ('map', key, value)."""
        if gotype == "[]byte":
            return ("scalar", "bytes")
        if gotype.startswith("[]"):
            return ("list", self.resolve(pkg, gotype[2:]))
        if gotype.startswith("map["):
            depth, j = 0, 3
            for j in range(3, len(gotype)):
                depth += {"[": 1, "]": -1}.get(gotype[j], 0)
                if depth == 0:
                    break
            return ("map", self.resolve(pkg, gotype[4:j]), self.resolve(pkg, gotype[j + 1:]))
        if gotype.startswith("*"):
            return self.resolve(pkg, gotype[1:])
        if gotype in SCALARS:
            return ("scalar", SCALARS[gotype])
        if "." in gotype:
            alias, name = gotype.split(".", 1)
            pkg = self.packages[pkg].imports[alias]
        else:
            name = gotype
        if (pkg, name) in SPECIAL:
            kind = SPECIAL[(pkg, name)]
            return ("scalar", kind) if not kind.startswith("@") else ("special", kind)
        if pkg not in self.packages:
            raise SystemExit(f"gen_protobuf: {pkg}.{name} is outside the packages read; "
                             f"add it to PACKAGES or SPECIAL")
        p = self.packages[pkg]
        if name in p.structs:
            full = self.short(pkg, name)
            if full not in self.messages and (pkg, name) not in self.queue:
                self.queue.append((pkg, name))
            return ("msg", full)
        if name in p.named:
            return self.resolve(pkg, p.named[name])
        raise SystemExit(f"gen_protobuf: unknown type {pkg}.{name}")

    @staticmethod
    def spell(t: tuple) -> str:
        if t[0] == "list":
            if t[1][0] in ("list", "map"):
                raise SystemExit(f"gen_protobuf: nested collection {t} has no plain wire form")
            return "[]" + Generator.spell(t[1])
        if t[0] == "map":
            if t[1][0] != "scalar" or t[2][0] in ("list", "map"):
                raise SystemExit(f"gen_protobuf: map {t} has no plain wire form")
            return f"map[{t[1][1]}]{Generator.spell(t[2])}"
        return t[1]

    def message(self, pkg: str, name: str) -> None:
        out = []
        for f in self.packages[pkg].structs[name]:
            # The tag's wire word is not trusted: go-to-protobuf derives the proto type
            # from the Go type (DeleteOptions.propagationPolicy says varint, is a string).
            _wire, number, *_opts = f["protobuf"].split(",")
            t = self.resolve(pkg, f["type"])
            json_name, *json_opts = f["json"].split(",")
            inline = f["name"] is None and (json_name == "" or "inline" in json_opts)
            if json_name == "-" and not inline:
                continue
            flags = "".join(flag for flag, on in (
                ("p", f["type"].startswith("*")), ("o", "omitempty" in json_opts),
                ("z", "omitzero" in json_opts), ("i", inline)) if on)
            out.append((int(number), json_name, self.spell(t), flags))
        self.messages[self.short(pkg, name)] = out

    def run(self) -> dict:
        kinds = {}
        for api_version, kind, pkg, name in ROOTS:
            kinds[f"{api_version}/{kind}"] = self.resolve(pkg, name)[1]
        while self.queue:
            self.message(*self.queue.popleft())
        return kinds


def git_show(git_dir: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"HEAD:{path}"],
                          check=True, capture_output=True, text=True).stdout


def git_head(git_dir: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, "rev-parse", "HEAD"],
                          check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api", required=True, help="git dir of kubernetes/api")
    ap.add_argument("--apimachinery", required=True, help="git dir of kubernetes/apimachinery")
    ap.add_argument("--kube-aggregator", default="",
                    help="git dir of kubernetes/kube-aggregator (default: kubernetes+kube-aggregator/repo "
                         "beside --api's mirror)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent
                                         / "machinery" / "protobuf_fields.py"))
    args = ap.parse_args()
    aggregator = args.kube_aggregator or str(Path(args.api).resolve().parent.parent
                                             / "kubernetes+kube-aggregator" / "repo")
    repos = {"api": args.api, "apimachinery": args.apimachinery, "kube-aggregator": aggregator}
    packages = {path: Package(path, git_show(repos[repo], file))
                for path, (repo, file, _) in PACKAGES.items()}
    gen = Generator(packages)
    kinds = gen.run()
    messages = dict(sorted(gen.messages.items()))
    text = (
        '"""Kubernetes\' protobuf field table: GENERATED by hack/gen_protobuf.py, do not edit.\n\n'
        f"Read from kubernetes/api@{git_head(args.api)} and\n"
        f"kubernetes/apimachinery@{git_head(args.apimachinery)} and\n"
        f"kubernetes/kube-aggregator@{git_head(aggregator)}.\n\n"
        "KINDS maps 'apiVersion/kind' to a message. MESSAGES maps a message to its fields,\n"
        "(number, json name, type, flags): type is a scalar (string, bytes, bool, int, uint),\n"
        "a message, an @special (custom wire and JSON form), '[]T' (repeated) or\n"
        "'map[K]V' (repeated entries, key=1, value=2); flags: p = Go pointer (encoded only\n"
        "when set), o = json omitempty, z = json omitzero, i = embedded (inlined in JSON).\n"
        '"""\n\n'
        f"KINDS = {pprint.pformat(kinds, width=100)}\n\n"
        f"MESSAGES = {pprint.pformat(messages, width=100)}\n")
    Path(args.out).write_text(text)
    print(f"wrote {args.out}: {len(kinds)} kinds, {len(messages)} messages, "
          f"{sum(map(len, messages.values()))} fields", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
