#!/usr/bin/env python3
"""Validates Ferrid's Kubernetes deployment files without a cluster.

Run through scripts/validate-deploy.sh, which provides the virtualenv (PyYAML,
kubernetes-validate) and the helm, helm3 and kubectl binaries. What is checked:

1. Every YAML document in deploy/*.yaml and deploy/examples/*.yaml, the output of
   `kubectl kustomize deploy/`, and the Helm chart rendered with default values and
   with tests/deploy/values-nondefault.yaml: strict schema validation against the
   Kubernetes JSON schemas bundled by kubernetes-validate (unknown fields, wrong types
   and missing required fields are errors; a kind with no schema is an error) for
   Kubernetes 1.30 and 1.37; YAML duplicate keys and null values are errors.
2. What the schemas cannot see: names, label values, enum fields, quantities, image
   tags, selectors against pod labels, volume mounts against volumes, named ports,
   references between objects, and that every ConfigMap's *.toml parses (tomllib).
3. The deployment contract across objects: the server's and agent's configurations
   agree with each other and with the pod specs (paths, ports, socket, token audience,
   bundle ConfigMap, service account, RBAC grants, security contexts).
4. The chart: helm lint --strict, the same objects as the plain manifests (modulo
   labels and annotations; TOML compared parsed), the same output under Helm 3 and 4,
   non-default values landing where they should, values.schema.json refusing typos.
5. The Containerfile: stages, base images, the cargo package it builds, the
   dependency stage covering every workspace crate (and, with cargo, that its stub
   workspace loads and its Rust is new enough for every dependency), non-root USER,
   ENTRYPOINT, OCI labels, .dockerignore.
6. With a built target/*/ferrid (scripts/test.sh builds it first; skipped otherwise):
   every ferrid command line in the pod specs, NOTES.txt, docs/kubernetes.md and the
   example parses with the real CLI; their admin commands (entry create, agent list)
   succeed against a real throwaway server on loopback; the binary links only
   libraries distroless/cc has.
7. Self-checks: each check above is fed deliberately broken input and must reject it.

Prints one line per check and a closing "deploy: N passed, N failed, N skipped".
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv
from kubernetes_validate.version import __version__ as KV_VERSION

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "ferrid"
NONDEFAULT_VALUES = ROOT / "tests" / "deploy" / "values-nondefault.yaml"
CONTAINERFILE = ROOT / "Containerfile"

# The oldest Kubernetes the deployment supports (k8s_psat needs the node claims of
# 1.30) and the newest the pinned kubernetes-validate has schemas for.
K8S_VERSIONS = ("1.30", "1.37")
NAMESPACE = "ferrid"
EXPECTED_TOOLS = {"helm": "v4.3.1", "helm3": "v3.17.3", "kubectl": "v1.37.1"}

Obj = dict[str, Any]


# --------------------------------------------------------------------------- output


class Report:
    def __init__(self) -> None:
        self.passed = self.failed = self.skipped = 0

    def check(self, name: str, errors: Iterable[str]) -> bool:
        errors = list(errors)
        if errors:
            self.failed += 1
            print(f"FAIL {name}")
            for e in errors[:40]:
                print(f"       {e}")
            if len(errors) > 40:
                print(f"       ... and {len(errors) - 40} more")
            return False
        self.passed += 1
        print(f"ok   {name}")
        return True

    def rejects(self, name: str, errors: Iterable[str], expect: str) -> None:
        """A self-check: `errors` comes from a check fed broken input; it must be
        non-empty and mention `expect` (a regex)."""
        errors = list(errors)
        if not errors:
            self.check(f"self-check: {name}", ["the broken input was ACCEPTED"])
        elif not any(re.search(expect, e) for e in errors):
            self.check(f"self-check: {name}", [f"rejected, but not for /{expect}/:", *errors])
        else:
            hit = next(e for e in errors if re.search(expect, e))
            hit = re.sub(r"^.*?(\[k8s [0-9.]+\] |: )(?=.)", "", hit, count=1) if "broken copy" in hit else hit
            hit = " | ".join(l.strip() for l in hit.splitlines() if l.strip())
            self.check(f"self-check: {name} -> {hit[:150]}", [])

    def skip(self, name: str, why: str) -> None:
        self.skipped += 1
        print(f"skip {name}: {why}")


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ------------------------------------------------------------------ YAML, strictly


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (the API server's strict field
    validation refuses them too; PyYAML would silently keep the last)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_docs(text: str, origin: str) -> tuple[list[Obj], list[str]]:
    """Parses a multi-document YAML stream; returns (objects, errors)."""
    try:
        docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
    except yaml.YAMLError as e:
        return [], [f"{origin}: YAML: {e}".replace("\n", " ")]
    errors = [f"{origin}: document {i} is not a mapping" for i, d in enumerate(docs) if not isinstance(d, dict)]
    for d in docs:
        if isinstance(d, dict):
            d.setdefault("__origin__", origin)
    return [d for d in docs if isinstance(d, dict)], errors


def strip_origin(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: strip_origin(v) for k, v in o.items() if k != "__origin__"}
    return o


def kn(o: Obj) -> str:
    return f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}"


def where(o: Obj) -> str:
    return f"{o.get('__origin__', '?')}: {kn(o)}"


# ------------------------------------------------------------ schema validation


@functools.lru_cache(maxsize=None)
def _validator(kind: str, api_version: str, k8s: str) -> jsonschema.protocols.Validator | None:
    # The same lookup kubernetes_validate.utils.validate does (strict schema directory,
    # newest schema version not newer than k8s), but cached and reporting every error.
    version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(k8s)][-1]
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema_dir = f"kubernetes-json-schema/v{version}-local-strict"
    try:
        schema = kv.schema_contents(f"{schema_dir}/{kind.lower()}-{api}.json", k8s)
    except FileNotFoundError:
        return None
    definitions = kv.schema_contents(f"{schema_dir}/_definitions.json", k8s)
    registry = referencing.Registry().with_resources(
        [
            (schema["$id"], referencing.Resource.from_contents(schema)),
            (definitions["$id"], referencing.Resource.from_contents(definitions)),
        ]
    )
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_errors(o: Obj, k8s: str) -> list[str]:
    kind, api = o.get("kind"), o.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api, str):
        return [f"{where(o)}: no kind/apiVersion"]
    validator = _validator(kind, api, k8s)
    if validator is None:
        return [f"{where(o)}: no schema for {api} {kind} in Kubernetes {k8s} (unknown kind or apiVersion)"]
    out = []
    for e in sorted(validator.iter_errors(strip_origin(o)), key=lambda e: list(map(str, e.path))):
        path = ".".join(str(p) for p in e.absolute_path) or "(top)"
        out.append(f"{where(o)} [k8s {k8s}] {path}: {e.message[:200]}")
    return out


def validate_schemas(objs: list[Obj]) -> list[str]:
    return [e for k8s in K8S_VERSIONS for o in objs for e in schema_errors(o, k8s)]


# ------------------------------------------- what the schemas do not check (lint)

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
ENUMS = {
    "imagePullPolicy": {"Always", "IfNotPresent", "Never"},
    "dnsPolicy": {"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"},
    "restartPolicy": {"Always", "OnFailure", "Never"},
    "protocol": {"TCP", "UDP", "SCTP"},
    "fsGroupChangePolicy": {"OnRootMismatch", "Always"},
}
HOSTPATH_TYPES = {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


def walk(o: Any, path: str = "") -> Iterable[tuple[str, Any, Any]]:
    """(path, key, value) for every mapping entry and list item."""
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "__origin__":
                continue
            p = f"{path}.{k}" if path else str(k)
            yield p, k, v
            yield from walk(v, p)
    elif isinstance(o, list):
        for i, v in enumerate(o):
            p = f"{path}[{i}]"
            yield p, i, v
            yield from walk(v, p)


def pod_spec(o: Obj) -> Obj | None:
    if o.get("kind") in WORKLOAD_KINDS:
        return ((o.get("spec") or {}).get("template") or {}).get("spec") or {}
    if o.get("kind") == "Pod":
        return o.get("spec") or {}
    return None


def containers(spec: Obj) -> list[Obj]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def lint_object(o: Obj) -> list[str]:
    w = where(o)
    errs = []
    for path, key, value in walk(o):
        if value is None:
            errs.append(f"{w}: {path} is null (an empty or mis-templated value)")
        if key in ENUMS and isinstance(value, str) and value not in ENUMS[key]:
            errs.append(f"{w}: {path}: {value!r} is not one of {sorted(ENUMS[key])}")
        if key in ("cpu", "memory", "storage", "ephemeral-storage") and ".resources." in f".{path}":
            if not QUANTITY.match(str(value)):
                errs.append(f"{w}: {path}: {value!r} is not a quantity")
    meta = o.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        errs.append(f"{w}: metadata.name {name!r} is not a DNS-1123 subdomain")
    if o.get("kind") in ("Service", "Namespace") and isinstance(name, str) and not DNS1123_LABEL.match(name):
        errs.append(f"{w}: a {o['kind']} name must be a DNS-1123 label")
    for path, key, value in walk(o):
        if path.endswith("labels") and isinstance(value, dict) or path.endswith("matchLabels"):
            for lk, lv in (value or {}).items():
                if not isinstance(lv, str) or len(lv) > 63 or not LABEL_VALUE.match(lv):
                    errs.append(f"{w}: {path}.{lk}: {lv!r} is not a valid label value")
    if o.get("kind") not in CLUSTER_SCOPED and not meta.get("namespace"):
        errs.append(f"{w}: a namespaced object without metadata.namespace")
    if o.get("kind") in CLUSTER_SCOPED and meta.get("namespace"):
        errs.append(f"{w}: a cluster-scoped object with a namespace")
    for key, text in ((o.get("data") or {}).items() if o.get("kind") == "ConfigMap" else []):
        if key.endswith(".toml"):
            try:
                tomllib.loads(text)
            except (tomllib.TOMLDecodeError, TypeError) as e:
                errs.append(f"{w}: data.{key} is not valid TOML: {e}")
    spec = pod_spec(o)
    if spec is not None:
        errs += lint_pod(o, spec)
    return errs


def lint_pod(o: Obj, spec: Obj) -> list[str]:
    w = where(o)
    errs = []
    if o.get("kind") in WORKLOAD_KINDS:
        sel = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        labels = (((o.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not sel:
            errs.append(f"{w}: no spec.selector.matchLabels")
        for k, v in sel.items():
            if labels.get(k) != v:
                errs.append(f"{w}: selector {k}={v} does not match the pod template's labels")
    volumes = [v.get("name") for v in spec.get("volumes") or []]
    claims = [((c.get("metadata") or {}).get("name")) for c in (o.get("spec") or {}).get("volumeClaimTemplates") or []]
    for dup in {v for v in volumes + claims if (volumes + claims).count(v) > 1}:
        errs.append(f"{w}: volume {dup!r} declared twice")
    for v in spec.get("volumes") or []:
        hp = v.get("hostPath")
        if hp and hp.get("type", "") not in HOSTPATH_TYPES:
            errs.append(f"{w}: volume {v.get('name')}: hostPath type {hp.get('type')!r} is not valid")
        for src in ((v.get("projected") or {}).get("sources") or []):
            sat = src.get("serviceAccountToken")
            if sat and sat.get("expirationSeconds", 3600) < 600:
                errs.append(f"{w}: volume {v.get('name')}: expirationSeconds below the API's minimum of 600")
    names = [c.get("name") for c in containers(spec)]
    for dup in {n for n in names if names.count(n) > 1}:
        errs.append(f"{w}: container name {dup!r} used twice")
    for c in containers(spec):
        cw = f"{w} container {c.get('name')}"
        image = c.get("image", "")
        if not re.search(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", image.rsplit("/", 1)[-1]) and "@sha256:" not in image:
            errs.append(f"{cw}: image {image!r} has no tag")
        elif image.endswith(":latest"):
            errs.append(f"{cw}: image {image!r} uses :latest")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or [] if p.get("name")}
        for p in c.get("ports") or []:
            if "name" in p and (not PORT_NAME.match(str(p["name"])) or len(str(p["name"])) > 15):
                errs.append(f"{cw}: port name {p['name']!r} is not a valid IANA service name (≤15, a-z0-9-)")
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = c.get(probe_name) or {}
            for handler in ("httpGet", "tcpSocket", "grpc"):
                port = (probe.get(handler) or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    errs.append(f"{cw}: {probe_name} uses port {port!r}, which the container does not name")
        paths = [m.get("mountPath") for m in c.get("volumeMounts") or []]
        for dup in {p for p in paths if paths.count(p) > 1}:
            errs.append(f"{cw}: two volumes mounted at {dup}")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes + claims:
                errs.append(f"{cw}: mounts volume {m.get('name')!r}, which the pod does not declare")
        for e in c.get("env") or []:
            if "value" in e and not isinstance(e["value"], str):
                errs.append(f"{cw}: env {e.get('name')} value is not a string")
    return errs


def lint_references(objs: list[Obj], external_config_maps: Iterable[str] = ()) -> list[str]:
    """References between objects of one set: service accounts, ConfigMaps, role
    bindings, Services selecting pods and their named target ports."""
    errs = []
    have = {(o.get("kind"), (o.get("metadata") or {}).get("namespace"), (o.get("metadata") or {}).get("name")) for o in objs}
    namespaces = {(o.get("metadata") or {}).get("name") for o in objs if o.get("kind") == "Namespace"}
    for o in objs:
        ns = (o.get("metadata") or {}).get("namespace")
        if namespaces and ns and ns not in namespaces and o.get("kind") not in CLUSTER_SCOPED:
            errs.append(f"{where(o)}: namespace {ns} is not among the set's Namespaces {sorted(namespaces)}")
        spec = pod_spec(o)
        if spec is not None:
            sa = spec.get("serviceAccountName", "default")
            if sa != "default" and ("ServiceAccount", ns, sa) not in have:
                errs.append(f"{where(o)}: service account {ns}/{sa} is not defined")
            for v in spec.get("volumes") or []:
                cm = (v.get("configMap") or {}).get("name")
                if cm and ("ConfigMap", ns, cm) not in have and cm not in external_config_maps:
                    errs.append(f"{where(o)}: volume {v.get('name')} uses ConfigMap {ns}/{cm}, which is not defined")
        if o.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
            ref = o.get("roleRef") or {}
            role_ns = None if ref.get("kind") == "ClusterRole" else ns
            if (ref.get("kind"), role_ns, ref.get("name")) not in have:
                errs.append(f"{where(o)}: roleRef {ref.get('kind')}/{ref.get('name')} is not defined")
            for s in o.get("subjects") or []:
                if s.get("kind") == "ServiceAccount" and ("ServiceAccount", s.get("namespace"), s.get("name")) not in have:
                    errs.append(f"{where(o)}: subject ServiceAccount {s.get('namespace')}/{s.get('name')} is not defined")
        if o.get("kind") == "Service":
            sel = (o.get("spec") or {}).get("selector") or {}
            pods = [
                p for p in objs
                if p.get("kind") in WORKLOAD_KINDS and (p.get("metadata") or {}).get("namespace") == ns
                and all((((p["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in sel.items())
            ]
            if not pods:
                errs.append(f"{where(o)}: selector {sel} matches no pod template")
            for p in pods:
                named = {pt.get("name") for c in containers(pod_spec(p) or {}) for pt in c.get("ports") or []}
                for sp in (o.get("spec") or {}).get("ports") or []:
                    tp = sp.get("targetPort")
                    if isinstance(tp, str) and tp not in named:
                        errs.append(f"{where(o)}: port {sp.get('name')} targets {tp!r}, which {kn(p)} does not name")
    return errs


# ------------------------------------------------------------ RBAC, evaluated


def allowed(objs: list[Obj], sa_ns: str, sa: str, verb: str, group: str, resource: str,
            namespace: str | None = None, name: str | None = None) -> bool:
    """Whether the service account may do `verb` on `group`/`resource` (optionally one
    `name` in `namespace`) under the (Cluster)Roles and bindings of `objs`."""
    roles = {(o["kind"], (o.get("metadata") or {}).get("namespace"), o["metadata"]["name"]): o
             for o in objs if o.get("kind") in ("Role", "ClusterRole")}
    for b in objs:
        if b.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        bns = (b.get("metadata") or {}).get("namespace")
        if b["kind"] == "RoleBinding" and bns != namespace:
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa and s.get("namespace") == sa_ns
                   for s in b.get("subjects") or []):
            continue
        ref = b.get("roleRef") or {}
        role = roles.get((ref.get("kind"), None if ref.get("kind") == "ClusterRole" else bns, ref.get("name")))
        for rule in (role or {}).get("rules") or []:
            if (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])) \
                    and (resource in rule.get("resources", []) or "*" in rule.get("resources", [])) \
                    and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", [])) \
                    and (not rule.get("resourceNames") or name in rule["resourceNames"]):
                return True
    return False


# ------------------------------------------------- the deployment's own contract


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name]
    if len(found) != 1:
        raise LookupError(f"expected one {kind}/{name}, found {len(found)}")
    return found[0]


def the_container(o: Obj) -> Obj:
    cs = (pod_spec(o) or {}).get("containers") or []
    if len(cs) != 1:
        raise LookupError(f"{kn(o)}: expected one container, found {len(cs)}")
    return cs[0]


def mount_of(o: Obj, path: str) -> tuple[Obj, Obj] | None:
    """The (volumeMount, volume) whose mountPath contains `path` (deepest wins)."""
    c = the_container(o)
    spec = pod_spec(o) or {}
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    for t in (o.get("spec") or {}).get("volumeClaimTemplates") or []:
        vols[t["metadata"]["name"]] = {"name": t["metadata"]["name"], "persistentVolumeClaim": t}
    best = None
    for m in c.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[0]["mountPath"].rstrip("/")):
                best = (m, vols.get(m["name"], {}))
    return best


def config_of(objs: list[Obj], workload: Obj, what: str) -> tuple[dict, list[str]]:
    """The TOML the workload's `--config` points at, found through its mounts."""
    c = the_container(workload)
    args = c.get("args") or []
    if "--config" not in args:
        return {}, [f"{kn(workload)}: no --config in args {args}"]
    path = args[args.index("--config") + 1]
    m = mount_of(workload, path)
    if not m or "configMap" not in m[1]:
        return {}, [f"{kn(workload)}: --config {path} is not on a ConfigMap volume"]
    cm = find(objs, "ConfigMap", m[1]["configMap"]["name"])
    key = path[len(m[0]["mountPath"].rstrip("/")) + 1:]
    if key not in (cm.get("data") or {}):
        return {}, [f"{kn(workload)}: --config {path}: ConfigMap {kn(cm)} has no key {key!r}"]
    if key != what:
        return {}, [f"{kn(workload)}: --config {path}: expected {what}"]
    return tomllib.loads(cm["data"][key]), []


def port_number(o: Obj, port: Any) -> Any:
    if isinstance(port, int):
        return port
    for p in the_container(o).get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def security(spec: Obj, c: Obj, key: str) -> Any:
    """A security setting as it applies to the container (container over pod)."""
    csc = c.get("securityContext") or {}
    if key in csc:
        return csc[key]
    return (spec.get("securityContext") or {}).get(key)


def contract(objs: list[Obj], containerfile: dict | None = None) -> list[str]:
    """Cross-object consistency of a full deployment (kustomize output or a chart
    render). Returns errors."""
    errs: list[str] = []

    def need(cond: bool, msg: str) -> None:
        if not cond:
            errs.append(msg)

    try:
        sts = find(objs, "StatefulSet", "ferrid-server")
        ds = find(objs, "DaemonSet", "ferrid-agent")
        svc = find(objs, "Service", "ferrid-server")
        server, e1 = config_of(objs, sts, "server.toml")
        agent, e2 = config_of(objs, ds, "agent.toml")
        errs += e1 + e2
        if e1 or e2:
            return errs
        srv_c, agt_c = the_container(sts), the_container(ds)
    except (LookupError, KeyError, tomllib.TOMLDecodeError) as e:
        return [f"contract: {e}"]
    ns = sts["metadata"]["namespace"]
    srv_spec, agt_spec = pod_spec(sts) or {}, pod_spec(ds) or {}
    agent_sa = agt_spec.get("serviceAccountName", "default")
    server_sa = srv_spec.get("serviceAccountName", "default")

    # Identity: trust domain and cluster.
    need(server.get("trust_domain") == agent.get("trust_domain"),
         f"trust_domain differs: server {server.get('trust_domain')!r}, agent {agent.get('trust_domain')!r}")
    cluster = (agent.get("k8s_psat") or {}).get("cluster")
    clusters = (server.get("k8s_psat") or {}).get("clusters") or {}
    need(cluster in clusters, f"agent cluster {cluster!r} is not in the server's k8s_psat.clusters {sorted(clusters)}")
    cl = clusters.get(cluster) or {}
    need(cl.get("verify") == "token_review", f"k8s_psat cluster {cluster!r}: verify is {cl.get('verify')!r}, not token_review")
    need(f"{ds['metadata']['namespace']}:{agent_sa}" in (cl.get("allowed_service_accounts") or []),
         f"the agent's service account {ds['metadata']['namespace']}:{agent_sa} is not in allowed_service_accounts {cl.get('allowed_service_accounts')}")

    # The node API: server bind port, Service, agent's server_address, DNS names.
    bind_port = int(str(server.get("bind_address", "0.0.0.0:8081")).rsplit(":", 1)[1])
    svc_ports = {p.get("port"): p for p in svc["spec"].get("ports") or []}
    addr = str(agent.get("server_address", ""))
    host, _, aport = addr.rpartition(":")
    need(host in (f"ferrid-server.{ns}.svc", f"ferrid-server.{ns}.svc.cluster.local"),
         f"agent server_address {addr!r} is not the Service ferrid-server in {ns}")
    sp = svc_ports.get(int(aport)) if aport.isdigit() else None
    need(sp is not None, f"agent server_address port {aport} is not a port of Service ferrid-server")
    if sp is not None:
        need(port_number(sts, sp.get("targetPort")) == bind_port,
             f"Service port {aport} targets {sp.get('targetPort')!r}, not the server's bind_address port {bind_port}")
    need(host in (server.get("server_dns_names") or []), f"{host} is not in server_dns_names {server.get('server_dns_names')}")

    # Health: probes hit health_address on /ready and /live.
    haddr = str(server.get("health_address", "127.0.0.1:8082"))
    hhost, _, hport = haddr.rpartition(":")
    need(hhost in ("0.0.0.0", "[::]"), f"health_address {haddr!r} is not reachable by the kubelet's probes (bind 0.0.0.0)")
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/live")):
        hg = (srv_c.get(probe) or {}).get("httpGet") or {}
        need(hg.get("path") == path, f"server {probe} path is {hg.get('path')!r}, not {path}")
        need(str(port_number(sts, hg.get("port"))) == hport, f"server {probe} port {hg.get('port')!r} is not health_address's {hport}")

    # Server storage and sockets under a read-only root filesystem.
    data_dir = str(server.get("data_dir", "/var/lib/ferrid/server"))
    m = mount_of(sts, data_dir)
    need(bool(m) and "persistentVolumeClaim" in m[1], f"server data_dir {data_dir} is not on the volumeClaimTemplate")
    if m:
        need(m[0]["mountPath"].rstrip("/") != data_dir,
             f"server data_dir {data_dir} is a volume's root: the server chmods it to 0700, which it cannot do there")
    admin = str(server.get("admin_socket", "/tmp/ferrid/server/admin.sock"))
    m = mount_of(sts, admin)
    need(bool(m) and "emptyDir" in m[1], f"admin socket {admin} is not on an emptyDir (the root filesystem is read-only)")

    # Security: server non-root 65532; both read-only, no escalation, caps dropped.
    need(security(srv_spec, srv_c, "runAsNonRoot") is True, "server: runAsNonRoot is not true")
    need(security(srv_spec, srv_c, "runAsUser") == 65532, "server: runAsUser is not 65532")
    if containerfile:
        need(str(security(srv_spec, srv_c, "runAsUser")) == containerfile.get("user", "").split(":")[0],
             f"server runAsUser differs from the Containerfile's USER {containerfile.get('user')}")
    for who, spec, c, adds in (("server", srv_spec, srv_c, set()), ("agent", agt_spec, agt_c, {"SYS_PTRACE"})):
        need(security(spec, c, "readOnlyRootFilesystem") is True, f"{who}: readOnlyRootFilesystem is not true")
        need(security(spec, c, "allowPrivilegeEscalation") is False, f"{who}: allowPrivilegeEscalation is not false")
        need(not security(spec, c, "privileged"), f"{who}: privileged")
        caps = (c.get("securityContext") or {}).get("capabilities") or {}
        need(caps.get("drop") == ["ALL"], f"{who}: capabilities.drop is {caps.get('drop')}, not [ALL]")
        need(set(caps.get("add") or []) <= adds, f"{who}: adds capabilities {caps.get('add')} (allowed: {sorted(adds) or 'none'})")
        need((security(spec, c, "seccompProfile") or {}).get("type") == "RuntimeDefault", f"{who}: seccompProfile is not RuntimeDefault")
        need(c.get("command") is None, f"{who}: sets command, overriding the image's ENTRYPOINT")
        need(c.get("image") == srv_c.get("image"), f"{who}: image differs from the server's")
    need((srv_c.get("args") or [None])[0] == "server", "server container does not run `ferrid server`")
    need((agt_c.get("args") or [None])[0] == "agent", "agent container does not run `ferrid agent`")

    # The agent's node-level plumbing.
    need(agt_spec.get("hostPID") is True, "agent: hostPID is not true")
    need(agt_spec.get("hostNetwork") is True, "agent: hostNetwork is not true")
    need(agt_spec.get("dnsPolicy") == "ClusterFirstWithHostNet", "agent: dnsPolicy is not ClusterFirstWithHostNet (cluster DNS under hostNetwork)")
    node_env = [e for e in agt_c.get("env") or [] if e.get("name") == "FERRID_NODE_NAME"]
    need(bool(node_env) and ((node_env[0].get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == "spec.nodeName",
         "agent: env FERRID_NODE_NAME is not from spec.nodeName")

    sock = str(agent.get("socket_path", ""))
    m = mount_of(ds, sock)
    hp = (m[1].get("hostPath") or {}) if m else {}
    need(bool(hp) and hp.get("path") == m[0]["mountPath"] == os.path.dirname(sock) and hp.get("type") == "DirectoryOrCreate",
         f"agent socket_path {sock}: its directory is not a DirectoryOrCreate hostPath mounted at the same path")
    for probe in ("readinessProbe", "livenessProbe"):
        cmd = ((agt_c.get(probe) or {}).get("exec") or {}).get("command") or []
        need(cmd[:3] == ["/usr/local/bin/ferrid", "agent", "healthcheck"] and f"unix://{sock}" in cmd
             and cmd[cmd.index("--socket") + 1 if "--socket" in cmd else 0] == f"unix://{sock}",
             f"agent {probe} {cmd} is not `ferrid agent healthcheck --socket unix://{sock}`")
        if containerfile:
            need(cmd[:1] == containerfile.get("entrypoint", [])[:1], f"agent {probe} binary {cmd[:1]} is not the image's ENTRYPOINT")

    token = str((agent.get("k8s_psat") or {}).get("token_path", "/var/run/secrets/tokens/ferrid-agent"))
    m = mount_of(ds, token)
    sat = {}
    if m:
        for src in (m[1].get("projected") or {}).get("sources") or []:
            sat = src.get("serviceAccountToken") or sat
    need(bool(sat) and f"{m[0]['mountPath'].rstrip('/')}/{sat.get('path')}" == token,
         f"agent token_path {token} is not a projected service-account token")
    need(sat.get("audience") == cl.get("audience", "ferrid-server"),
         f"projected token audience {sat.get('audience')!r} is not the server's {cl.get('audience', 'ferrid-server')!r}")
    need(sat.get("expirationSeconds") == 7200, f"projected token expirationSeconds is {sat.get('expirationSeconds')}, not 7200")

    bundle = server.get("k8s_bundle") or {}
    tbf = str(agent.get("trust_bundle_file", ""))
    m = mount_of(ds, tbf)
    bcm = (m[1].get("configMap") or {}) if m else {}
    need(bundle.get("namespace") == ns == ds["metadata"]["namespace"],
         f"k8s_bundle.namespace {bundle.get('namespace')!r} is not the namespace of the server and agents ({ns})")
    need(bool(bcm) and bcm.get("name") == bundle.get("config_map"),
         f"agent trust_bundle_file {tbf} is not on the ConfigMap {bundle.get('config_map')!r} the server publishes")
    need(bcm.get("optional") is False, "the bundle ConfigMap volume is not `optional: false`")
    if m:
        need(tbf == f"{m[0]['mountPath'].rstrip('/')}/{bundle.get('key')}", f"trust_bundle_file {tbf} is not key {bundle.get('key')!r} of the ConfigMap")
    adata = str(agent.get("data_dir", "/var/lib/ferrid/agent"))
    m = mount_of(ds, adata)
    need(bool(m) and "emptyDir" in m[1], f"agent data_dir {adata} is not on an emptyDir")

    # RBAC, evaluated: what each service account can and cannot do.
    bname = bundle.get("config_map")
    for sa, verb, group, res, where_ns, name, want in (
        (server_sa, "create", "authentication.k8s.io", "tokenreviews", None, None, True),
        (server_sa, "get", "", "pods", None, None, True),
        (server_sa, "list", "", "pods", None, None, True),
        (server_sa, "get", "", "nodes", None, None, True),
        (server_sa, "list", "", "nodes", None, None, True),
        (server_sa, "create", "", "configmaps", ns, bname, True),
        (server_sa, "get", "", "configmaps", ns, bname, True),
        (server_sa, "update", "", "configmaps", ns, bname, True),
        (server_sa, "patch", "", "configmaps", ns, bname, True),
        (server_sa, "update", "", "configmaps", ns, "ferrid-server", False),
        (server_sa, "delete", "", "configmaps", ns, bname, False),
        (server_sa, "create", "", "configmaps", "kube-system", bname, False),
        (server_sa, "get", "", "secrets", ns, None, False),
        (agent_sa, "get", "", "nodes/proxy", None, None, True),
        (agent_sa, "get", "", "pods", None, None, True),
        (agent_sa, "list", "", "pods", None, None, True),
        (agent_sa, "get", "", "nodes", None, None, True),
        (agent_sa, "create", "authentication.k8s.io", "tokenreviews", None, None, False),
        (agent_sa, "update", "", "configmaps", ns, bname, False),
    ):
        got = allowed(objs, ns, sa, verb, group, res, where_ns, name)
        scope = f" {where_ns}/{name or '*'}" if where_ns else ""
        need(got == want, f"RBAC: {ns}:{sa} {'can' if got else 'cannot'} {verb} {group or 'core'}/{res}{scope}")
    return errs


def workload_contract(example: list[Obj], deployment: list[Obj]) -> list[str]:
    """The example workload finds the agent's socket."""
    errs = []
    ds = find(deployment, "DaemonSet", "ferrid-agent")
    agent, e = config_of(deployment, ds, "agent.toml")
    if e:
        return e
    sock = agent["socket_path"]
    host_dir = ((mount_of(ds, sock) or ({}, {}))[1].get("hostPath") or {}).get("path")
    workloads = [o for o in example if o.get("kind") in WORKLOAD_KINDS]
    if not workloads:
        return ["the example has no workload"]
    for o in workloads:
        c = the_container(o)
        env = {x.get("name"): x.get("value") for x in c.get("env") or []}
        if env.get("SPIFFE_ENDPOINT_SOCKET") != f"unix://{sock}":
            errs.append(f"{where(o)}: SPIFFE_ENDPOINT_SOCKET is {env.get('SPIFFE_ENDPOINT_SOCKET')!r}, not unix://{sock}")
        m = mount_of(o, sock)
        hp = (m[1].get("hostPath") or {}) if m else {}
        if not hp or hp.get("path") != host_dir or m[0]["mountPath"] != os.path.dirname(sock):
            errs.append(f"{where(o)}: the agent's socket directory {host_dir} is not mounted at {os.path.dirname(sock)}")
        elif m[0].get("readOnly") is not True:
            errs.append(f"{where(o)}: the socket directory is not mounted read-only")
        elif hp.get("type") not in ("Directory", "DirectoryOrCreate"):
            errs.append(f"{where(o)}: hostPath type {hp.get('type')!r} for a directory")
    return errs


# -------------------------------------------------- chart against plain manifests


def normalize(o: Obj) -> Obj:
    """An object modulo what legitimately differs between the chart and the plain
    manifests: labels, annotations, selectors (label-based), comments in TOML."""
    o = copy.deepcopy(strip_origin(o))
    meta = o.get("metadata") or {}
    meta.pop("labels", None)
    meta.pop("annotations", None)
    spec = o.get("spec")
    if isinstance(spec, dict):
        if o.get("kind") == "Service":
            spec.pop("selector", None)
        if o.get("kind") in WORKLOAD_KINDS:
            spec.pop("selector", None)
            tm = (spec.get("template") or {}).get("metadata") or {}
            tm.pop("labels", None)
            tm.pop("annotations", None)
            if not tm:
                spec["template"].pop("metadata", None)
        for t in spec.get("volumeClaimTemplates") or []:
            (t.get("metadata") or {}).pop("labels", None)
    if o.get("kind") == "ConfigMap":
        o["data"] = {k: (tomllib.loads(v) if k.endswith(".toml") else v) for k, v in (o.get("data") or {}).items()}
    return o


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: only in the chart: {json.dumps(b[k])[:120]}")
            elif k not in b:
                out.append(f"{p}: only in the plain manifests: {json.dumps(a[k])[:120]}")
            else:
                out += diff(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [e for i, (x, y) in enumerate(zip(a, b)) for e in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: plain {json.dumps(a)[:100]} != chart {json.dumps(b)[:100]}"]


def compare_sets(plain: list[Obj], chart: list[Obj]) -> list[str]:
    """The chart (default values, release namespace ferrid) against kustomize's output
    of the plain manifests. The Namespace is the plain manifests' only (Helm installs
    into a namespace, created with --create-namespace)."""
    key = lambda o: (o.get("kind"), (o.get("metadata") or {}).get("namespace"), (o.get("metadata") or {}).get("name"))
    p = {key(o): normalize(o) for o in plain if o.get("kind") != "Namespace"}
    c = {key(o): normalize(o) for o in chart}
    errs = [f"{k[0]}/{k[2]}: only in the plain manifests" for k in p if k not in c]
    errs += [f"{k[0]}/{k[2]}: only in the chart" for k in c if k not in p]
    for k in p.keys() & c.keys():
        errs += [f"{k[0]}/{k[2]}: {d}" for d in diff(p[k], c[k])]
    return errs


# ---------------------------------------------------------------- Containerfile


def parse_containerfile(text: str) -> tuple[list[dict], list[str]]:
    """Instructions (with line continuations joined, comments dropped) grouped by stage.
    Returns (stages, errors); each stage: {"from", "name", "instructions": [(op, args)]}."""
    lines, buf = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    errs = [f"a line continuation runs past the end: {buf[:60]!r}"] if buf else []
    stages: list[dict] = []
    for line in lines:
        op, _, args = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.match(r"^(--platform=\S+\s+)?(\S+)(\s+AS\s+(\S+))?\s*$", args.strip(), re.I)
            if not m:
                errs.append(f"FROM {args!r} is not `image [AS name]`")
                continue
            stages.append({"from": m.group(2), "name": m.group(4), "instructions": []})
        elif not stages:
            if op != "ARG":
                errs.append(f"{op} before the first FROM")
        else:
            stages[-1]["instructions"].append((op, args.strip()))
    return stages, errs


def workspace() -> dict:
    root = tomllib.loads((ROOT / "Cargo.toml").read_text())
    members = {}
    for manifest in sorted((ROOT / "crates").glob("*/Cargo.toml")):
        m = tomllib.loads(manifest.read_text())
        bins = [b.get("name") for b in m.get("bin") or []]
        if not bins and (manifest.parent / "src" / "main.rs").exists():
            bins = [m["package"]["name"]]
        members[m["package"]["name"]] = {"dir": manifest.parent.relative_to(ROOT).as_posix(), "bins": bins}
    return {"package": root["workspace"]["package"], "members": members}


def check_containerfile(text: str, ws: dict) -> tuple[list[str], dict]:
    """Structure checks; returns (errors, facts) with facts user/entrypoint/rust."""
    stages, errs = parse_containerfile(text)
    facts: dict = {}
    if len(stages) < 2:
        return errs + [f"{len(stages)} stage(s): expected a build stage and a runtime stage"], facts
    final, builders = stages[-1], stages[:-1]
    for s in builders:
        m = re.fullmatch(r"(docker\.io/(library/)?)?rust:(\d+)\.(\d+)(\.\d+)?-bookworm", s["from"])
        if not m:
            errs.append(f"build stage {s['name']}: FROM {s['from']} is not rust:<version>-bookworm")
            continue
        if not s["name"]:
            errs.append(f"build stage FROM {s['from']} has no name (AS ...)")
        rust = (int(m.group(3)), int(m.group(4)))
        facts["rust"] = min(facts.get("rust", rust), rust)
        if len({st["from"] for st in builders}) != 1:
            errs.append(f"the build stages use different Rust images: {sorted({st['from'] for st in builders})}")
    msrv = tuple(int(x) for x in str(ws["package"].get("rust-version", "0.0")).split(".")[:2])
    if facts.get("rust") and facts["rust"] < msrv:
        errs.append(f"rust:{facts['rust'][0]}.{facts['rust'][1]} is older than the workspace's rust-version {ws['package'].get('rust-version')}")
    if final["from"] != "gcr.io/distroless/cc-debian12:nonroot":
        errs.append(f"final stage FROM {final['from']}, not gcr.io/distroless/cc-debian12:nonroot")

    # cargo build of a workspace package that makes the ferrid binary.
    builds = [(s, a) for s in builders for op, a in s["instructions"] if op == "RUN" and "cargo build" in a]
    build_stage = None
    if len(builds) != 1:
        errs.append(f"expected one RUN with `cargo build`, found {len(builds)}")
    else:
        build_stage, cmd = builds[0]
        m = re.search(r"cargo build((?:\s+--?[\w-]+(?:[ =](?!-)\S+)?)*)", cmd)
        flags = m.group(1).split() if m else []
        for flag in ("--release", "--locked"):
            if flag not in flags:
                errs.append(f"cargo build without {flag}")
        pkgs = [flags[i + 1] for i, f in enumerate(flags[:-1]) if f in ("-p", "--package")]
        pkgs += [f.split("=", 1)[1] for f in flags if f.startswith("--package=")]
        if len(pkgs) != 1:
            errs.append(f"cargo build names packages {pkgs}, expected exactly one (-p)")
        elif pkgs[0] not in ws["members"]:
            errs.append(f"cargo build -p {pkgs[0]}: no such workspace package (have {sorted(ws['members'])})")
        elif "ferrid" not in ws["members"][pkgs[0]]["bins"]:
            errs.append(f"cargo build -p {pkgs[0]}: that package builds no `ferrid` binary")
        if "target/release/ferrid" not in cmd:
            errs.append("the cargo build step does not take target/release/ferrid")
        copy_all = [i for i, (op, a) in enumerate(build_stage["instructions"]) if op == "COPY" and a.split()[-2:] == [".", "."]]
        run_i = [i for i, (op, a) in enumerate(build_stage["instructions"]) if op == "RUN" and "cargo build" in a]
        if not copy_all or copy_all[0] > run_i[0]:
            errs.append("the build stage does not `COPY . .` before cargo build")

    # The dependency stage: manifests of every workspace crate, then cargo fetch.
    deps = [s for s in builders if any(op == "RUN" and "cargo fetch --locked" in a for op, a in s["instructions"])]
    if len(deps) != 1:
        errs.append("no stage runs `cargo fetch --locked` (the dependency-caching stage)")
    else:
        copied = set()
        for op, a in deps[0]["instructions"]:
            if op == "COPY":
                parts = [p for p in a.split() if not p.startswith("--")]
                if parts[:-1] == ["."] or "." == parts[0]:
                    errs.append("the dependency stage copies the whole context: it would never be reused")
                copied |= set(parts[:-1])
        want = {"Cargo.toml", "Cargo.lock"} | {f"{m['dir']}/Cargo.toml" for m in ws["members"].values()}
        for missing in sorted(want - copied):
            errs.append(f"the dependency stage does not copy {missing} (a crate added since?)")
        facts["deps_stage"] = deps[0]
        if build_stage is not None and not any(
            op == "COPY" and f"--from={deps[0]['name']}" in a and "/usr/local/cargo/registry" in a
            for op, a in build_stage["instructions"]
        ):
            errs.append(f"the build stage does not take the registry from stage {deps[0]['name']}")

    # The runtime stage.
    final_ins = final["instructions"]
    users = [a for op, a in final_ins if op == "USER"]
    if not users:
        errs.append("the final stage has no USER")
    else:
        facts["user"] = users[-1]
        uid = users[-1].split(":")[0]
        if uid != "65532":
            errs.append(f"final USER {users[-1]}, not 65532 (non-root)")
    entry = [a for op, a in final_ins if op == "ENTRYPOINT"]
    try:
        facts["entrypoint"] = json.loads(entry[-1]) if entry else None
    except json.JSONDecodeError:
        facts["entrypoint"] = None
    if facts.get("entrypoint") != ["/usr/local/bin/ferrid"]:
        errs.append(f"ENTRYPOINT {entry[-1] if entry else None!r} is not [\"/usr/local/bin/ferrid\"] (exec form)")
    if build_stage is not None and not any(
        op == "COPY" and f"--from={build_stage['name']}" in a and a.split()[-1] == "/usr/local/bin/ferrid"
        for op, a in final_ins
    ):
        errs.append(f"the final stage does not COPY --from={build_stage['name']} ... /usr/local/bin/ferrid")
    if any(op == "RUN" for op, _ in final_ins):
        errs.append("RUN in the final stage: distroless has no shell")
    labels = {}
    for op, a in final_ins:
        if op == "LABEL":
            for k, v in re.findall(r'([\w.\-]+)=("(?:[^"\\]|\\.)*"|\S+)', a):
                labels[k] = v.strip('"')
    pkg = ws["package"]
    for k, want in (
        ("org.opencontainers.image.title", "ferrid"),
        ("org.opencontainers.image.source", re.sub(r"\.git$", "", pkg.get("repository", ""))),
        ("org.opencontainers.image.licenses", pkg.get("license")),
        ("org.opencontainers.image.version", pkg.get("version")),
        ("org.opencontainers.image.description", None),
    ):
        if k not in labels:
            errs.append(f"no LABEL {k}")
        elif want is not None and labels[k] != want:
            errs.append(f"LABEL {k}={labels[k]!r}, expected {want!r} (Cargo.toml)")
    return errs, facts


def check_ignore(text: str) -> list[str]:
    pats = {l.strip().rstrip("/").lstrip("/") for l in text.splitlines() if l.strip() and not l.startswith("#")}
    return [f".dockerignore does not exclude {p}/" for p in ("target", ".git") if p not in pats and f"**/{p}" not in pats]


def emulate_deps_stage(stage: dict, cargo: str) -> list[str]:
    """Runs the dependency stage's COPY and stub RUN steps in a temporary directory and
    asks cargo to load the stub workspace (--locked: the lockfile still fits, --offline:
    no download; needs the crates already fetched on this machine)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "src"
        work.mkdir()
        for op, a in stage["instructions"]:
            if op == "COPY":
                parts = [p for p in a.split() if not p.startswith("--")]
                dest = work / parts[-1]
                for src in parts[:-1]:
                    target = dest / Path(src).name if parts[-1].endswith("/") else dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / src, target)
            elif op == "RUN" and "cargo" not in a:
                r = run(["sh", "-c", a], cwd=work)
                if r.returncode:
                    return [f"the stub RUN step failed: {r.stderr.strip()[:300]}"]
        r = run([cargo, "metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform",
                 "x86_64-unknown-linux-gnu"], cwd=work)
        if r.returncode:
            return [f"cargo cannot load the dependency stage's stub workspace: {r.stderr.strip()[-400:]}"]
        meta = json.loads(r.stdout)
        real = run([cargo, "metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform",
                 "x86_64-unknown-linux-gnu"], cwd=ROOT)
        if real.returncode == 0:
            ids = lambda m: sorted(p["name"] + " " + p["version"] for p in m["packages"] if p.get("source"))
            if ids(meta) != ids(json.loads(real.stdout)):
                return ["the stub workspace resolves other dependencies than the real one"]
        return []


def rust_floor(cargo: str) -> tuple[tuple[int, int] | None, str]:
    """The highest rust-version among the packages `ferrid` depends on."""
    r = run([cargo, "metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform",
             "x86_64-unknown-linux-gnu"], cwd=ROOT)
    if r.returncode:
        return None, r.stderr.strip()[-200:]
    meta = json.loads(r.stdout)
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    pkgs = {p["id"]: p for p in meta["packages"]}
    root = next(p["id"] for p in meta["packages"] if p["name"] == "ferrid" and p.get("source") is None)
    seen, todo = set(), [root]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo += [d["pkg"] for d in nodes[i]["deps"] if any(k.get("kind") in (None, "build") for k in d["dep_kinds"])]
    best, who = (0, 0), ""
    for i in seen:
        rv = pkgs[i].get("rust_version")
        if rv:
            v = tuple(int(x) for x in rv.split(".")[:2])
            if v > best:
                best, who = v, f"{pkgs[i]['name']} {pkgs[i]['version']} needs {rv}"
    return best, who


def command_lines(objs: list[Obj], texts: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Every ferrid command line the deployment runs or tells people to run: container
    args (the image's ENTRYPOINT is ferrid), exec probes, and `kubectl exec ... --
    ferrid ...` in the given texts (NOTES.txt, docs, comments)."""
    out = []
    for o in objs:
        for c in containers(pod_spec(o) or {}):
            if c.get("args") and not c.get("command"):
                out.append((f"{kn(o)} args", list(c["args"])))
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                cmd = ((c.get(probe) or {}).get("exec") or {}).get("command") or []
                if cmd[:1] == ["/usr/local/bin/ferrid"]:
                    out.append((f"{kn(o)} {probe}", cmd[1:]))
    for origin, text in texts.items():
        joined = re.sub(r"\\\n[\s#]*", " ", text)
        for line in joined.splitlines():
            if " -- ferrid " in line:
                cmd = line.split(" -- ferrid ", 1)[1].split("#", 1)[0].strip().strip("`")
                out.append((origin, shlex.split(cmd)))
    return out


def cli_errors(binary: Path, cmds: list[tuple[str, list[str]]]) -> list[str]:
    """Runs each command line against the real binary, pointed at sockets and files that
    do not exist: it may fail to connect or to read its configuration, but clap must
    accept the arguments (clap exits 2 on a usage error)."""
    errs = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SPIFFE_ENDPOINT_SOCKET": f"unix://{tmp}/none.sock", "FERRID_ADMIN_SOCKET": f"{tmp}/none.sock"}
        for origin, argv in cmds:
            argv = [a.replace("/etc/ferrid/", f"{tmp}/absent/").replace("/run/svid", f"{tmp}/svid")
                    .replace("unix:///run/ferrid/sockets/", f"unix://{tmp}/") for a in argv]
            try:
                r = subprocess.run([str(binary), *argv], capture_output=True, text=True, env=env, timeout=5)
            except subprocess.TimeoutExpired:
                continue  # still running (e.g. --watch retrying): the arguments parsed
            if r.returncode == 2 or "Usage:" in r.stderr:
                errs.append(f"{origin}: `ferrid {' '.join(argv)}` is refused by the CLI: {r.stderr.strip()[:300]}")
            elif r.returncode == 0 and argv[0] in ("server", "agent") and "--config" in argv:
                errs.append(f"{origin}: `ferrid {' '.join(argv)}` succeeded with a missing config?")
    return errs


def admin_errors(binary: Path, cmds: list[tuple[str, list[str]]]) -> list[str]:
    """Runs the admin command lines (entry ..., agent list) of each origin against a
    real throwaway server on loopback (a minimal configuration of today's keys, not the
    deployment's, in the trust domain the commands name): each must succeed, e.g. the
    node alias under the server's ID and the workload entry under the alias."""
    groups: dict[str, list[list[str]]] = {}
    for origin, argv in cmds:
        if argv[:1] == ["entry"] or argv[:2] == ["agent", "list"]:
            groups.setdefault(origin, []).append(argv)
    errs = []
    for origin, argvs in groups.items():
        tds = {m for a in argvs for m in re.findall(r"spiffe://([^/]+)", " ".join(a))}
        if len(tds) != 1:
            errs.append(f"{origin}: the commands name trust domains {sorted(tds)}, expected one")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            sock = f"{tmp}/admin.sock"
            Path(tmp, "server.toml").write_text(
                f'trust_domain = "{tds.pop()}"\ndata_dir = "{tmp}/data"\nbind_address = "127.0.0.1:0"\n'
                f'health_address = ""\nadmin_socket = "{sock}"\n[ca]\nkey_manager = "memory"\n')
            env = {**os.environ, "FERRID_ADMIN_SOCKET": sock}
            with open(f"{tmp}/server.log", "w") as log:
                server = subprocess.Popen([str(binary), "server", "--config", f"{tmp}/server.toml"],
                                          stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                deadline = time.monotonic() + 20
                while run([str(binary), "entry", "list"], env=env).returncode != 0:
                    if server.poll() is not None or time.monotonic() > deadline:
                        errs.append(f"{origin}: the throwaway server did not start: {Path(tmp, 'server.log').read_text()[-300:]}")
                        break
                    time.sleep(0.1)
                else:
                    for argv in argvs:
                        r = run([str(binary), *argv], env=env)
                        if r.returncode:
                            errs.append(f"{origin}: `ferrid {' '.join(argv)}` failed against a real server: {r.stderr.strip()[:300]}")
            finally:
                server.terminate()
                server.wait(timeout=10)
    return errs


def elf_needed(path: Path) -> list[str] | None:
    r = run(["readelf", "-d", str(path)]) if shutil.which("readelf") else None
    if r is None or r.returncode:
        return None
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)


# ------------------------------------------------------------------------- main


class Tools:
    def __init__(self, bindir: Path) -> None:
        self.helm = str(bindir / "helm")
        self.helm3 = str(bindir / "helm3")
        self.kubectl = str(bindir / "kubectl")

    def version(self, name: str) -> str:
        if name == "kubectl":
            r = run([self.kubectl, "version", "--client", "-o", "json"])
            return json.loads(r.stdout)["clientVersion"]["gitVersion"] if r.returncode == 0 else r.stderr
        r = run([getattr(self, name), "version", "--template", "{{.Version}}"])
        return r.stdout.strip() if r.returncode == 0 else r.stderr

    def notes(self, chart: Path, namespace: str, values: list[str]) -> tuple[str, list[str]]:
        # Helm 4's client-side dry run renders NOTES.txt without a cluster.
        cmd = [self.helm, "install", "ferrid", str(chart), "--namespace", namespace, "--dry-run=client"]
        for v in values:
            cmd += ["--values", v]
        r = run(cmd, env={**os.environ, "KUBECONFIG": os.devnull})
        if r.returncode or "NOTES:" not in r.stdout:
            return "", [f"helm install --dry-run=client failed: {r.stderr.strip()[:400]}"]
        return r.stdout.split("NOTES:", 1)[1], []

    def template(self, helm: str, chart: Path, namespace: str, values: list[str] = (), extra: list[str] = ()) -> tuple[list[Obj], list[str]]:
        cmd = [helm, "template", "ferrid", str(chart), "--namespace", namespace]
        for v in values:
            cmd += ["--values", v]
        r = run(cmd + list(extra))
        if r.returncode:
            return [], [f"helm template failed: {' | '.join(l.strip() for l in r.stderr.strip().splitlines() if l.strip())[:600]}"]
        return load_docs(r.stdout, f"helm template ({Path(helm).name}, {namespace}{', ' + ', '.join(Path(v).name for v in values) if values else ''})")


def plain_files() -> list[Path]:
    files = sorted(DEPLOY.glob("*.yaml")) + sorted((DEPLOY / "examples").glob("*.yaml"))
    return [f for f in files if f.name != "kustomization.yaml"]


def config_check_errors(binary: Path, objs: list[Obj]) -> list[str]:
    """Every ConfigMap's server.toml and agent.toml pass the real binary's config check
    (`ferrid server|agent --config F --check`: keys, types and values, as at start-up)."""
    errs = []
    found = 0
    for o in objs:
        if o.get("kind") != "ConfigMap":
            continue
        for key, text in (o.get("data") or {}).items():
            role = {"server.toml": "server", "agent.toml": "agent"}.get(key)
            if role is None:
                continue
            found += 1
            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / key
                f.write_text(text)
                r = run([str(binary), role, "--config", str(f), "--check"])
                if r.returncode:
                    errs.append(f"{kn(o)} {key}: `ferrid {role} --check` refused it: {(r.stdout + r.stderr).strip()[-400:]}")
    if found < 2:
        errs.append(f"expected a server.toml and an agent.toml, found {found} config files")
    return errs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tools", type=Path, required=True, help="directory with helm, helm3 and kubectl")
    args = ap.parse_args()
    tools = Tools(args.tools)
    rep = Report()
    rel = lambda p: Path(p).relative_to(ROOT).as_posix() if Path(p).is_relative_to(ROOT) else str(p)

    # --- Tools.
    versions = {name: tools.version(name) for name in EXPECTED_TOOLS}
    rep.check(f"tools: helm {versions['helm']}, helm3 {versions['helm3']}, kubectl {versions['kubectl']}, "
              f"kubernetes-validate {KV_VERSION} (schemas for {', '.join(K8S_VERSIONS)}, strict)",
              [f"{n}: {versions[n]!r}, expected {v}" for n, v in EXPECTED_TOOLS.items() if versions[n] != v])

    # --- Plain manifests, file by file.
    plain: dict[str, list[Obj]] = {}
    for f in plain_files():
        objs, errs = load_docs(f.read_text(), rel(f))
        plain[rel(f)] = objs
        rep.check(f"{rel(f)}: {len(objs)} objects, strict schemas + lint",
                  errs + validate_schemas(objs) + [e for o in objs for e in lint_object(o)])
    covered = {ROOT / n for n in plain} | {DEPLOY / "kustomization.yaml"}
    stray = [rel(f) for f in sorted(DEPLOY.rglob("*.y*ml")) if f not in covered and CHART not in f.parents]
    rep.check("every YAML file under deploy/ is validated (or is part of the chart)", [f"{f} is not" for f in stray])
    top = [o for name, objs in plain.items() if not name.startswith("deploy/examples/") for o in objs]
    example = [o for name, objs in plain.items() if name.startswith("deploy/examples/") for o in objs]

    # --- kustomize.
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kust.get("resources") or [])
    on_disk = {f.name for f in DEPLOY.glob("*.yaml") if f.name != "kustomization.yaml"}
    rep.check("deploy/kustomization.yaml lists every manifest in deploy/ (and nothing else)",
              [f"{n} is not listed" for n in sorted(on_disk - listed)] + [f"{n} is listed but missing" for n in sorted(listed - on_disk)])
    r = run([tools.kubectl, "kustomize", str(DEPLOY)])
    kobjs, errs = (load_docs(r.stdout, "kubectl kustomize deploy") if r.returncode == 0 else ([], [r.stderr.strip()]))
    rep.check(f"kubectl kustomize deploy/: {len(kobjs)} objects, strict schemas + lint + references",
              errs + validate_schemas(kobjs) + [e for o in kobjs for e in lint_object(o)]
              + lint_references(kobjs, external_config_maps=["ferrid-bundle"])
              + [f"{kn(o)}: namespace {o['metadata'].get('namespace')}" for o in kobjs
                 if o.get("kind") not in CLUSTER_SCOPED and o["metadata"].get("namespace") != NAMESPACE]
              + ([] if len(kobjs) == len(top) else [f"{len(kobjs)} objects, but the files hold {len(top)}"]))
    rep.check("deploy/examples: references, and the workload finds the agent's socket",
              lint_references(example) + workload_contract(example, kobjs))

    # --- Containerfile (its facts feed the contract checks).
    ws = workspace()
    cf_errs, cf = check_containerfile(CONTAINERFILE.read_text(), ws)
    rep.check("Containerfile: stages, rust:<version>-bookworm, cargo build -p <workspace package>, dependency stage, "
              "distroless runtime, USER 65532, ENTRYPOINT, OCI labels", cf_errs)
    ignore = ROOT / ".dockerignore"
    rep.check(".dockerignore excludes target/ and .git/", check_ignore(ignore.read_text()) if ignore.exists() else ["no .dockerignore"])
    image = the_container(find(kobjs, "StatefulSet", "ferrid-server")).get("image", "") if kobjs else ""
    rep.check("the manifests' image tag is the workspace version, as is the chart's appVersion",
              [f"manifest image {image}, workspace version {ws['package']['version']}" for _ in [0]
               if not image.endswith(f":{ws['package']['version']}")]
              + [f"Chart.yaml appVersion {c.get('appVersion')!r}" for c in [yaml.safe_load((CHART / 'Chart.yaml').read_text())]
                 if str(c.get("appVersion")) != ws["package"]["version"]])
    cargo = shutil.which("cargo")
    if cargo and cf.get("deps_stage"):
        rep.check("Containerfile dependency stage: its stub workspace loads in cargo (--locked --offline) with the real dependencies",
                  emulate_deps_stage(cf["deps_stage"], cargo))
        floor, who = rust_floor(cargo)
        if floor is None:
            rep.skip("Containerfile rust version vs dependencies' rust-version", f"cargo metadata --offline failed: {who}")
        else:
            rep.check(f"Containerfile rust:{cf['rust'][0]}.{cf['rust'][1]} is at least every dependency's rust-version (highest: {who})",
                      [] if cf.get("rust", (0, 0)) >= floor else [f"rust {cf.get('rust')} < {floor}: {who}"])
    else:
        rep.skip("Containerfile dependency stage under cargo, rust version vs dependencies", "no cargo on PATH")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    built = sorted((p for p in (target / "release/ferrid", target / "debug/ferrid") if p.exists()),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    needed = elf_needed(built[0]) if built else None
    if needed is None:
        rep.skip("the binary's shared libraries are in distroless/cc", "no built target/*/ferrid or no readelf")
    else:
        distroless_cc = re.compile(r"^(libc|libm|libgcc_s|libpthread|libdl|librt|libresolv|ld-linux-x86-64|ld-linux-aarch64)\.so(\.\d+)*$")
        rep.check(f"{rel(built[0])} links only what distroless/cc has: {', '.join(needed)}",
                  [f"needs {lib}" for lib in needed if not distroless_cc.match(lib)])

    # --- The deployment contract on the plain manifests.
    rep.check("contract (plain manifests): configs, pod specs, Service, RBAC and security agree", contract(kobjs, cf))

    # --- Helm chart.
    for values in ([], [str(NONDEFAULT_VALUES)]):
        cmd = [tools.helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE]
        for v in values:
            cmd += ["--values", v]
        r = run(cmd)
        rep.check(f"helm lint --strict{' --values ' + rel(values[0]) if values else ''}",
                  [] if r.returncode == 0 else [(r.stdout + r.stderr).strip()[-800:]])
    chart_default, errs = tools.template(tools.helm, CHART, NAMESPACE)
    rep.check(f"helm template (default values): {len(chart_default)} objects, strict schemas + lint + references",
              errs + validate_schemas(chart_default) + [e for o in chart_default for e in lint_object(o)]
              + lint_references(chart_default, external_config_maps=["ferrid-bundle"]))
    rep.check("contract (chart, default values)", contract(chart_default, cf))
    rep.check("chart (default values) = plain manifests, modulo labels, annotations and the Namespace",
              compare_sets(kobjs, chart_default))
    chart3, errs = tools.template(tools.helm3, CHART, NAMESPACE)
    rep.check("Helm 3 renders the same objects as Helm 4",
              errs + ([] if [strip_origin(o) for o in chart3] == [strip_origin(o) for o in chart_default]
                      else [d for a, b in zip(chart3, chart_default) for d in diff(strip_origin(a), strip_origin(b))] or ["different object counts"]))
    _, errs = tools.template(tools.helm, CHART, NAMESPACE, extra=["--kube-version", "1.30.0"])
    rep.check("the chart's kubeVersion admits Kubernetes 1.30", errs)
    _, errs = tools.template(tools.helm, CHART, NAMESPACE, extra=["--kube-version", "1.29.0"])
    rep.rejects("the chart refuses Kubernetes 1.29 (no node claims in tokens)", errs, "kubeVersion|incompatible|not compatible")

    nd, errs = tools.template(tools.helm, CHART, "identity", values=[str(NONDEFAULT_VALUES)])
    rep.check(f"helm template (values-nondefault.yaml, namespace identity): {len(nd)} objects, strict schemas + lint + references",
              errs + validate_schemas(nd) + [e for o in nd for e in lint_object(o)] + lint_references(nd, external_config_maps=["ferrid-bundle"]))
    rep.check("contract (chart, non-default values)", contract(nd, cf))
    rep.check("non-default values land where they should", nondefault_landed(nd))
    notes, errs = tools.notes(CHART, "identity", [str(NONDEFAULT_VALUES)])
    rep.check("NOTES.txt renders (helm install --dry-run=client) with the values in its commands",
              errs + notes_errors(notes))
    if built:
        texts = {"NOTES.txt": notes}
        for f in (ROOT / "docs/kubernetes.md", DEPLOY / "examples/workload.yaml"):
            texts[rel(f)] = f.read_text()
        cmds = command_lines(kobjs + example, texts)
        rep.check(f"{len(cmds)} ferrid command lines (container args, probes; kubectl exec lines in NOTES.txt, "
                  f"docs/kubernetes.md, the example) parse with {rel(built[0])}",
                  cli_errors(built[0], cmds))
        rep.check("the admin commands of NOTES.txt, docs/kubernetes.md and the example succeed against a real ferrid server "
                  "(loopback, throwaway)", admin_errors(built[0], cmds))
        for label, objs in (("plain manifests", kobjs), ("chart, default values", chart_default),
                            ("chart, non-default values", nd)):
            rep.check(f"{label}: server.toml and agent.toml pass `ferrid server|agent --config F --check`",
                      config_check_errors(built[0], objs))
        broken = copy.deepcopy(kobjs)
        for o in broken:
            if o.get("kind") == "ConfigMap" and "server.toml" in (o.get("data") or {}):
                o["data"]["server.toml"] = o["data"]["server.toml"].replace("trust_domain", "trust_domian", 1)
        rep.rejects("the config check refuses a misspelled server key (trust_domian)",
                    config_check_errors(built[0], broken), "trust_domian")
        rep.rejects("the server check refuses an entry under the reserved /ferrid/ path",
                    admin_errors(built[0], [("mutated", ["entry", "create", "--spiffe-id", "spiffe://example.org/ferrid/nodes/x",
                                                         "--parent-id", "spiffe://example.org/ferrid/server",
                                                         "--selector", "k8s_psat:cluster:x"])]), "reserved")
        rep.rejects("the CLI check refuses a misspelled flag (agent healthcheck --sockett)",
                    cli_errors(built[0], [("probe", ["agent", "healthcheck", "--sockett", "unix:///run/ferrid/sockets/api.sock"])]),
                    "refused by the CLI")
        rep.rejects("the CLI check refuses an unknown subcommand (entry add)",
                    cli_errors(built[0], [("NOTES.txt", ["entry", "add", "--spiffe-id", "spiffe://example.org/x"])]),
                    "refused by the CLI")
    else:
        rep.skip("ferrid command lines parse with the real CLI", "no built target/*/ferrid")

    # --- Self-checks: every checker must reject broken input.
    self_checks(rep, tools, kobjs, chart_default, example, ws, cf)

    print(f"deploy: {rep.passed} passed, {rep.failed} failed, {rep.skipped} skipped")
    return 1 if rep.failed else 0


def notes_errors(notes: str) -> list[str]:
    v = yaml.safe_load(NONDEFAULT_VALUES.read_text())
    td, cluster = v["trustDomain"], v["clusterName"]
    want = [
        "kubectl exec -n identity ferrid-server-0 -- ferrid entry create",
        f"--spiffe-id spiffe://{td}/nodes/{cluster}",
        f"--parent-id spiffe://{td}/ferrid/server",
        f"--selector k8s_psat:cluster:{cluster}",
        f"--parent-id spiffe://{td}/nodes/{cluster}",
        "--selector k8s:ns:default --selector k8s:sa:ferrid-demo",
        "SPIFFE_ENDPOINT_SOCKET=unix:///run/ferrid/sockets/api.sock",
    ]
    return [f"NOTES.txt lacks {w!r}" for w in want if w not in notes]


def nondefault_landed(objs: list[Obj]) -> list[str]:
    v = yaml.safe_load(NONDEFAULT_VALUES.read_text())
    errs = []

    def eq(what: str, got: Any, want: Any) -> None:
        if got != want:
            errs.append(f"{what}: {got!r}, expected {want!r}")

    try:
        server = tomllib.loads(find(objs, "ConfigMap", "ferrid-server")["data"]["server.toml"])
        agent = tomllib.loads(find(objs, "ConfigMap", "ferrid-agent")["data"]["agent.toml"])
        sts, ds = find(objs, "StatefulSet", "ferrid-server"), find(objs, "DaemonSet", "ferrid-agent")
    except (LookupError, KeyError) as e:
        return [str(e)]
    eq("server trust_domain", server["trust_domain"], v["trustDomain"])
    eq("agent trust_domain", agent["trust_domain"], v["trustDomain"])
    eq("server clusters", list(server["k8s_psat"]["clusters"]), [v["clusterName"]])
    eq("agent cluster", agent["k8s_psat"]["cluster"], v["clusterName"])
    eq("allowed_service_accounts", server["k8s_psat"]["clusters"][v["clusterName"]]["allowed_service_accounts"], ["identity:ferrid-agent"])
    eq("server_address", agent["server_address"], "ferrid-server.identity.svc:8081")
    eq("server_dns_names", server["server_dns_names"], ["ferrid-server", "ferrid-server.identity", "ferrid-server.identity.svc"])
    eq("k8s_bundle.namespace", server["k8s_bundle"]["namespace"], "identity")
    for cfg, who in ((server, "server"), (agent, "agent")):
        eq(f"{who} log", cfg["log"], v["log"])
    eq("svid", server["svid"], v["svid"])
    eq("skip_kubelet_verification", agent["k8s"]["skip_kubelet_verification"], v["agent"]["skipKubeletVerification"])
    for o, who in ((sts, "server"), (ds, "agent")):
        c = the_container(o)
        eq(f"{who} image", c["image"], f"{v['image']['repository']}:{v['image']['tag']}")
        eq(f"{who} imagePullPolicy", c["imagePullPolicy"], v["image"]["pullPolicy"])
        eq(f"{who} imagePullSecrets", pod_spec(o).get("imagePullSecrets"), v["imagePullSecrets"])
        eq(f"{who} resources", c["resources"], v[who]["resources"])
    pvc = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    eq("storage size", pvc["resources"]["requests"]["storage"], v["server"]["storage"]["size"])
    eq("storageClassName", pvc.get("storageClassName"), v["server"]["storage"]["storageClassName"])
    eq("agent nodeSelector", pod_spec(ds).get("nodeSelector"), v["agent"]["nodeSelector"])
    eq("agent tolerations", pod_spec(ds).get("tolerations"), v["agent"]["tolerations"])
    return errs


def self_checks(rep: Report, tools: Tools, kobjs: list[Obj], chart: list[Obj], example: list[Obj], ws: dict, cf: dict) -> None:
    """Feeds each checker broken input derived from the real files; each must refuse."""
    sts_file = DEPLOY / "server-statefulset.yaml"
    text = sts_file.read_text()

    def file_errors(broken: str) -> list[str]:
        # The same path a file in deploy/ takes: YAML loading, schemas, lint.
        objs, errs = load_docs(broken, "broken copy of server-statefulset.yaml")
        return errs + validate_schemas(objs) + [e for o in objs for e in lint_object(o)]

    def sub(old: str, new: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    rep.rejects("a typo'd field (imagePullPolicyy)", file_errors(sub("imagePullPolicy:", "imagePullPolicyy:")),
                r"imagePullPolicyy.*(not allowed|unexpected)")
    rep.rejects("a typo'd field deep in a pod spec (readOnlyRootFilesytem)",
                file_errors(sub("readOnlyRootFilesystem:", "readOnlyRootFilesytem:")), "readOnlyRootFilesytem")
    rep.rejects("a wrong type (replicas: \"one\")", file_errors(sub("replicas: 1", 'replicas: "one"')), r"replicas: 'one' is not of type")
    rep.rejects("a wrong type (containerPort: \"8081\")", file_errors(sub("containerPort: 8081", 'containerPort: "8081"')), "containerPort")
    rep.rejects("a missing required field (container name)", file_errors(sub("- name: server\n", "- \n")), r"'name' is a required property|null")
    rep.rejects("a duplicate key", file_errors(sub("      serviceAccountName: ferrid-server\n",
                                                   "      serviceAccountName: ferrid-server\n      serviceAccountName: other\n")), "duplicate key")
    rep.rejects("a null value (resources:)", file_errors(sub("          resources:\n            requests:\n              cpu: 100m\n              memory: 128Mi\n            limits:\n              memory: 512Mi\n",
                                                             "          resources:\n")), "null")
    rep.rejects("an unknown apiVersion", file_errors(sub("apiVersion: apps/v1", "apiVersion: apps/v1beta9")), "no schema")
    rep.rejects("a probe on an unnamed port", file_errors(sub("port: health\n", "port: healthz\n")), "does not name")
    rep.rejects("an enum value (imagePullPolicy: Sometimes)", file_errors(sub("imagePullPolicy: IfNotPresent", "imagePullPolicy: Sometimes")), "Sometimes")
    rep.rejects("a bad quantity (memory: 512MB)", file_errors(sub("memory: 512Mi", "memory: 512MB")), "not a quantity")
    rep.rejects("a mount of an undeclared volume", file_errors(sub("- name: tmp\n              mountPath: /tmp", "- name: scratch\n              mountPath: /tmp")), "does not declare")

    cm_text = (DEPLOY / "server-config.yaml").read_text().replace('key = "bundle.pem"', 'key = "bundle.pem', 1)
    objs, _ = load_docs(cm_text, "broken copy of server-config.yaml")
    rep.rejects("broken TOML in a ConfigMap", [e for o in objs for e in lint_object(o)], "not valid TOML")

    def mutated(objs: list[Obj], kind: str, name: str, change: Callable[[Obj], None]) -> list[Obj]:
        out = copy.deepcopy(objs)
        change(find(out, kind, name))
        return out

    def set_toml(cm: str, key: str, fn: Callable[[str], str]) -> Callable[[Obj], None]:
        def go(o: Obj) -> None:
            o["data"][key] = fn(o["data"][key])
        return go

    def agent_c(o: Obj) -> Obj:
        return the_container(o)

    rep.rejects("contract: agent socket_path moved, probes not",
                contract(mutated(kobjs, "ConfigMap", "ferrid-agent", set_toml("ferrid-agent", "agent.toml",
                         lambda t: t.replace("/run/ferrid/sockets/api.sock", "/run/ferrid/sockets/workload.sock")))), "healthcheck")
    rep.rejects("contract: a trust domain that differs",
                contract(mutated(kobjs, "ConfigMap", "ferrid-agent", set_toml("ferrid-agent", "agent.toml",
                         lambda t: t.replace('trust_domain = "example.org"', 'trust_domain = "example.com"')))), "trust_domain differs")
    rep.rejects("contract: the projected token's audience",
                contract(mutated(kobjs, "DaemonSet", "ferrid-agent", lambda o: pod_spec(o)["volumes"][3]["projected"]["sources"][0]
                                 ["serviceAccountToken"].update(audience="kubernetes"))), "audience")
    rep.rejects("contract: data_dir at the volume's root",
                contract(mutated(kobjs, "StatefulSet", "ferrid-server", lambda o: [m.update(mountPath="/var/lib/ferrid/server")
                                 for m in the_container(o)["volumeMounts"] if m["name"] == "data"])), "volume's root")
    rep.rejects("contract: RBAC without update on the bundle ConfigMap",
                contract(mutated(kobjs, "Role", "ferrid-server-bundle", lambda o: o["rules"][1]["verbs"].remove("update"))), "RBAC.*cannot update")
    rep.rejects("contract: RBAC granting every ConfigMap",
                contract(mutated(kobjs, "Role", "ferrid-server-bundle", lambda o: o["rules"][1].pop("resourceNames"))), "RBAC.*can update")
    rep.rejects("contract: the agent running privileged capabilities",
                contract(mutated(kobjs, "DaemonSet", "ferrid-agent", lambda o: agent_c(o)["securityContext"]["capabilities"]
                                 .update(add=["SYS_PTRACE", "SYS_ADMIN"]))), "adds capabilities")
    rep.rejects("contract: the bundle volume made optional",
                contract(mutated(kobjs, "DaemonSet", "ferrid-agent", lambda o: pod_spec(o)["volumes"][2]["configMap"].update(optional=True))), "optional")
    rep.rejects("references: a RoleBinding to a missing Role",
                lint_references(mutated(kobjs, "RoleBinding", "ferrid-server-bundle", lambda o: o["roleRef"].update(name="ferrid-bundle-writer"))), "not defined")
    rep.rejects("references: a Service targeting a port the pod does not name",
                lint_references(mutated(kobjs, "Service", "ferrid-server", lambda o: o["spec"]["ports"][0].update(targetPort="grpc"))), "does not name")
    rep.rejects("example: SPIFFE_ENDPOINT_SOCKET elsewhere",
                workload_contract(mutated(example, "Deployment", "ferrid-demo", lambda o: the_container(o)["env"][0]
                                          .update(value="unix:///tmp/api.sock")), kobjs), "SPIFFE_ENDPOINT_SOCKET")
    rep.rejects("chart vs plain: a port that differs",
                compare_sets(mutated(kobjs, "Service", "ferrid-server", lambda o: o["spec"]["ports"][1].update(port=9090)), chart), "port")
    rep.rejects("chart vs plain: a TOML value that differs",
                compare_sets(mutated(kobjs, "ConfigMap", "ferrid-server", set_toml("ferrid-server", "server.toml",
                             lambda t: t.replace('x509_ttl = "10m"', 'x509_ttl = "15m"'))), chart), "x509_ttl")
    rep.rejects("chart vs plain: an object missing from the chart",
                compare_sets(kobjs, [o for o in chart if kn(o) != "ClusterRole/ferrid-agent"]), "only in the plain")

    for name, args, expect in (
        ("values.schema.json: a typo'd value (image.tagg)", ["--set", "image.tagg=1"], "tagg|additional"),
        ("values.schema.json: a wrong type (svid.x509_ttl=10)", ["--set", "svid.x509_ttl=10"], "x509_ttl"),
        ("values.schema.json: a trust domain that is a URI", ["--set", "trustDomain=spiffe://example.org"], "trustDomain"),
    ):
        for helm in (tools.helm, tools.helm3):
            _, errs = tools.template(helm, CHART, NAMESPACE, extra=args)
            rep.rejects(f"{name} under {Path(helm).name}", errs, expect)

    cf_text = CONTAINERFILE.read_text()
    for name, old, new, expect in (
        ("Containerfile: USER root", "USER 65532:65532", "USER root", "not 65532"),
        ("Containerfile: no USER", "USER 65532:65532\n", "", "no USER"),
        ("Containerfile: cargo build -p of a package that does not exist", "-p ferrid", "-p ferrid-cli", "no such workspace package"),
        ("Containerfile: cargo build -p of a package without the binary", "-p ferrid", "-p ferrid-types", "no `ferrid` binary"),
        ("Containerfile: shell-form ENTRYPOINT", 'ENTRYPOINT ["/usr/local/bin/ferrid"]', "ENTRYPOINT /usr/local/bin/ferrid", "exec form"),
        ("Containerfile: a runtime stage on another base", "FROM gcr.io/distroless/cc-debian12:nonroot", "FROM debian:bookworm-slim", "distroless"),
        ("Containerfile: a crate missing from the dependency stage", "COPY crates/ferrid-tls/Cargo.toml crates/ferrid-tls/\n", "", "ferrid-tls/Cargo.toml"),
        ("Containerfile: build stages on different Rust images", "rust:1.95.0-bookworm AS deps", "rust:1.94-bookworm AS deps", "different Rust images"),
        ("Containerfile: a Rust older than rust-version", "FROM rust:1.95.0-bookworm", "FROM rust:1.80-bookworm", "older than"),
    ):
        assert old in cf_text, old
        rep.rejects(name, check_containerfile(cf_text.replace(old, new), ws)[0], expect)


if __name__ == "__main__":
    sys.exit(main())
