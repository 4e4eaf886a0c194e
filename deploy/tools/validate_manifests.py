#!/usr/bin/env python3
"""Offline validation of everything under deploy/ (run through deploy/validate.sh).

What it checks, without any network access:

1. YAML: every file under deploy/k8s parses, with duplicate keys rejected (PyYAML would
   silently keep the last one).
2. Kubernetes objects: against the JSON schemas bundled in the `kubernetes-validate` wheel, in
   strict mode (unknown fields are errors), for the oldest and the newest Kubernetes version
   we support. A kind without a bundled schema is an error, not a warning.
3. KEDA ScaledObjects: against deploy/schemas/keda-scaledobject.schema.json (written from
   KEDA's documented spec), plus the cross-field rules JSON Schema cannot express.
4. Kustomizations: referenced files exist and every manifest belongs to some kustomization;
   when `kubectl` is available, each kustomization is rendered (`kubectl kustomize`, local
   files only) and the rendered objects are validated again (this covers the patches).
5. Fleet policy, on each rendered set: the security posture and wiring that deploy/README.md
   promises (non-root, read-only root, no capabilities, probes, scrape annotations, grace
   period longer than the drain budget, selectors that match, the environment key only from a
   Secret, network policy ports, ...).
6. The seccomp profile's structure, and the ConfigMap's TOML (and, when a built
   `wasm-sandbox` binary is around, `wasm-sandbox config check` on it).

`--self-test` copies deploy/ to a temporary directory, breaks it in many small ways one at a
time, and requires every broken copy to fail with the expected message: proof that the
validator rejects what it should.

Exit status: 0 when everything is valid, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

# Oldest supported (user namespaces on by default from 1.33) and newest bundled schema.
K8S_VERSIONS = ("1.33", "1.37")
SECCOMP_LOCALHOST_PROFILE = "profiles/wasm-sandbox.json"
DRAIN_ANNOTATION = "wasm-sandbox/drain-budget-seconds"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "metadata", "namespace", "namePrefix", "nameSuffix", "resources",
    "components", "patches", "images", "labels", "commonAnnotations", "configMapGenerator",
    "secretGenerator", "generatorOptions", "replicas", "replacements", "buildMetadata",
}
# Syscalls the seccomp profile must deny, and the ones bubblewrap needs that it must not.
SECCOMP_MUST_DENY = {
    "kexec_load", "init_module", "finit_module", "bpf", "perf_event_open", "io_uring_setup",
    "keyctl", "add_key", "ptrace", "open_by_handle_at", "userfaultfd",
}
SECCOMP_MUST_ALLOW = {
    "clone", "clone3", "unshare", "mount", "umount2", "pivot_root", "seccomp", "prctl",
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
}
ENV_KEY_PATTERN = re.compile(r"sk-ant-[A-Za-z]+[0-9]*-[A-Za-z0-9_-]{8,}")


# --------------------------------------------------------------------------- reporting


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    passed: int = 0
    notes: list[str] = field(default_factory=list)

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def ok(self) -> None:
        self.passed += 1

    def note(self, message: str) -> None:
        self.notes.append(message)


# --------------------------------------------------------------------------- YAML


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark,
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d is not None]


def ident(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def is_kustomization(doc: dict) -> bool:
    return str(doc.get("apiVersion", "")).startswith("kustomize.config.k8s.io/")


def is_scaledobject(doc: dict) -> bool:
    return doc.get("apiVersion") == "keda.sh/v1alpha1" and doc.get("kind") == "ScaledObject"


# --------------------------------------------------------------------------- schemas


@functools.lru_cache(maxsize=None)
def _schema_file(relative: str, version: str) -> Any:
    return kv.schema_contents(relative, version)


@functools.lru_cache(maxsize=None)
def _k8s_validator(version: str, kind: str, api_version: str):
    """A cached strict validator for one kind.

    Same schema selection as kubernetes_validate.utils.validate (the newest bundled schema not
    newer than `version`, strict variant), but the multi-megabyte definitions file is parsed
    once instead of once per object. Returns None when no schema is bundled for the kind.
    """
    bundled = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(version)][-1]
    schema_dir = f"kubernetes-json-schema/v{bundled}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = _schema_file(f"{schema_dir}/{kind.lower()}-{api}.json", version)
    except FileNotFoundError:
        return None
    definitions = _schema_file(f"{schema_dir}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_k8s(doc: dict, where: str, report: Report) -> None:
    for version in K8S_VERSIONS:
        validator = _k8s_validator(version, str(doc["kind"]), str(doc["apiVersion"]))
        if validator is None:
            report.error(where, f"{ident(doc)}: no bundled Kubernetes {version} schema for "
                         f"{doc['apiVersion']}; unknown kinds are not accepted")
            return
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
        if error is not None:
            path = ".".join(str(p) for p in error.absolute_path) or "(root)"
            report.error(where, f"{ident(doc)} (Kubernetes {version}) at {path}: {error.message}")
            return
    report.ok()


def validate_scaledobject(doc: dict, where: str, report: Report, validator) -> None:
    errors = sorted(
        {(".".join(str(p) for p in e.absolute_path) or "(root)", e.message)
         for e in validator.iter_errors(doc)}
    )  # a set: the same failure can be reached through two subschemas
    for path, message in errors:
        report.error(where, f"{ident(doc)} (KEDA schema) at {path}: {message}")
    if errors:
        return
    before = len(report.errors)
    spec = doc["spec"]
    lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if lo > hi:
        report.error(where, f"{ident(doc)}: minReplicaCount {lo} > maxReplicaCount {hi}")
    if "idleReplicaCount" in spec and spec["idleReplicaCount"] >= lo:
        report.error(where, f"{ident(doc)}: idleReplicaCount must be less than minReplicaCount")
    triggers = spec["triggers"]
    names = [t["name"] for t in triggers if "name" in t]
    if len(names) != len(set(names)):
        report.error(where, f"{ident(doc)}: trigger names must be unique")
    if "scalingModifiers" in spec.get("advanced", {}) and len(names) != len(triggers):
        report.error(where, f"{ident(doc)}: scalingModifiers needs a name on every trigger")
    if "fallback" in spec and any(t["type"] in ("cpu", "memory") for t in triggers):
        report.error(where, f"{ident(doc)}: fallback is not supported with cpu/memory triggers")
    if len(report.errors) == before:
        report.ok()


# --------------------------------------------------------------------------- kustomize


def kustomization_dirs(k8s_dir: Path) -> list[Path]:
    return sorted(
        {p.parent for name in KUSTOMIZATION_FILES for p in k8s_dir.rglob(name)}
    )


def check_kustomization(path: Path, where: str, doc: dict, report: Report, used: set[Path]) -> None:
    if doc.get("kind") != "Kustomization":
        report.error(where, "kind must be Kustomization")
    unknown = set(doc) - KUSTOMIZATION_KEYS
    if unknown:
        report.error(where, f"unknown kustomization fields: {sorted(unknown)}")
    for entry in doc.get("resources", []) or []:
        target = (path.parent / entry).resolve()
        if not target.exists():
            report.error(where, f"resource {entry!r} does not exist")
        elif target.is_file():
            used.add(target)
        elif not any((target / n).exists() for n in KUSTOMIZATION_FILES):
            report.error(where, f"resource directory {entry!r} has no kustomization")
    for patch in doc.get("patches", []) or []:
        if "path" in patch:
            target = (path.parent / patch["path"]).resolve()
            if not target.is_file():
                report.error(where, f"patch {patch['path']!r} does not exist")
            else:
                used.add(target)
        elif "patch" not in patch:
            report.error(where, "a patch needs `path` or `patch`")
    report.ok()


def render(kdir: Path, kubectl: str) -> tuple[list[dict] | None, str]:
    proc = subprocess.run(
        [kubectl, "kustomize", str(kdir)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        return None, proc.stderr.strip()
    return load_docs(proc.stdout), ""


# --------------------------------------------------------------------------- fleet policy


def _labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def _container_ports(container: dict) -> dict[Any, int]:
    ports: dict[Any, int] = {}
    for p in container.get("ports", []) or []:
        ports[p["containerPort"]] = p["containerPort"]
        if "name" in p:
            ports[p["name"]] = p["containerPort"]
    return ports


def policy_checks(docs: list[dict], where: str, report: Report) -> None:
    """The posture and wiring the README promises, on one rendered set of objects."""

    def fail(message: str) -> None:
        report.error(where, message)

    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind", "?"), []).append(d)
    before = len(report.errors)

    for kind in ("Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                 "NetworkPolicy", "PodDisruptionBudget", "ScaledObject"):
        if len(by_kind.get(kind, [])) != 1:
            fail(f"expected exactly one {kind}, found {len(by_kind.get(kind, []))}")
    if len(report.errors) > before:
        return
    for secret in by_kind.get("Secret", []):
        if secret.get("data") or secret.get("stringData"):
            fail(f"{ident(secret)}: secrets must not be inlined in manifests")

    (sa,) = by_kind["ServiceAccount"]
    (dep,) = by_kind["Deployment"]
    (svc,) = by_kind["Service"]
    (netpol,) = by_kind["NetworkPolicy"]
    (pdb,) = by_kind["PodDisruptionBudget"]
    (so,) = by_kind["ScaledObject"]
    (cm,) = by_kind["ConfigMap"]
    namespace = by_kind["Namespace"][0]["metadata"]["name"]
    for d in docs:
        if d.get("kind") != "Namespace" and d["metadata"].get("namespace") != namespace:
            fail(f"{ident(d)}: not in namespace {namespace}")

    if sa.get("automountServiceAccountToken") is not False:
        fail("ServiceAccount: automountServiceAccountToken must be false")
    pod = dep["spec"]["template"]
    pod_spec = pod["spec"]
    pod_labels = pod["metadata"].get("labels", {})
    if pod_spec.get("serviceAccountName") != sa["metadata"]["name"]:
        fail("Deployment: serviceAccountName must be the fleet's ServiceAccount")
    if pod_spec.get("automountServiceAccountToken") is not False:
        fail("Deployment: automountServiceAccountToken must be false")
    if "replicas" in dep["spec"]:
        fail("Deployment: no spec.replicas (KEDA owns the replica count)")

    psc = pod_spec.get("securityContext", {})
    seccomp = psc.get("seccompProfile", {})
    if seccomp.get("type") == "Localhost":
        if seccomp.get("localhostProfile") != SECCOMP_LOCALHOST_PROFILE:
            fail(f"Deployment: Localhost seccomp profile must be {SECCOMP_LOCALHOST_PROFILE}")
    elif seccomp.get("type") != "Unconfined":
        fail("Deployment: seccompProfile must be Localhost (deploy/seccomp) or, as the documented "
             "fallback, Unconfined; RuntimeDefault blocks the user namespaces bubblewrap needs")
    if psc.get("runAsUser", 0) == 0 or psc.get("runAsGroup", 0) == 0:
        fail("Deployment: pod runAsUser/runAsGroup must be set and non-zero")
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    drain = dep["metadata"].get("annotations", {}).get(DRAIN_ANNOTATION)
    if drain is None or not drain.isdigit():
        fail(f"Deployment: annotation {DRAIN_ANNOTATION} (seconds) is required")
    elif grace <= int(drain):
        fail(f"Deployment: terminationGracePeriodSeconds {grace} must exceed the drain budget {drain}s")

    annotations = pod["metadata"].get("annotations", {})
    containers = pod_spec.get("containers", [])
    if len(containers) != 1:
        fail("Deployment: exactly one container (the worker) expected")
        return
    (c,) = containers
    ports = _container_ports(c)
    if annotations.get("prometheus.io/scrape") != "true":
        fail("Deployment: pod annotation prometheus.io/scrape must be \"true\"")
    if annotations.get("prometheus.io/path") != "/metrics":
        fail("Deployment: pod annotation prometheus.io/path must be /metrics")
    scrape_port = annotations.get("prometheus.io/port", "")
    if not scrape_port.isdigit() or int(scrape_port) not in ports.values():
        fail("Deployment: pod annotation prometheus.io/port must name a container port")

    csc = c.get("securityContext", {})
    if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        fail("Deployment: runAsNonRoot must be true")
    if csc.get("readOnlyRootFilesystem") is not True:
        fail("Deployment: readOnlyRootFilesystem must be true")
    if csc.get("allowPrivilegeEscalation") is not False:
        fail("Deployment: allowPrivilegeEscalation must be false")
    if csc.get("privileged"):
        fail("Deployment: privileged must not be set")
    caps = csc.get("capabilities", {})
    if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
        fail("Deployment: capabilities must drop ALL and add none")
    if csc.get("procMount") == "Unmasked" and pod_spec.get("hostUsers") is not False:
        fail("Deployment: procMount Unmasked only together with hostUsers: false")

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet")
        if not get or get.get("path") != path:
            fail(f"Deployment: {probe} must be an HTTP GET of {path}")
        elif get.get("port") not in ports:
            fail(f"Deployment: {probe} port {get.get('port')!r} is not a container port")
    resources = c.get("resources", {})
    for part in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in resources.get(part, {}):
                fail(f"Deployment: resources.{part}.{res} must be set")

    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        vol = volumes.get(m["name"], {})
        if not m.get("readOnly") and "emptyDir" not in vol:
            fail(f"Deployment: writable mount {m['mountPath']} must be an emptyDir")
    mounted = {m["mountPath"] for m in c.get("volumeMounts", [])}
    if "/tmp" not in mounted:
        fail("Deployment: /tmp must be a mounted emptyDir (read-only root filesystem)")

    env = {e["name"]: e for e in c.get("env", [])}
    key = env.get("ANTHROPIC_ENVIRONMENT_KEY")
    if key is None or "secretKeyRef" not in key.get("valueFrom", {}):
        fail("Deployment: ANTHROPIC_ENVIRONMENT_KEY must come from a secretKeyRef (the environment key)")
    if any("environment-key" in a and "=" in a and "$(" not in a for a in c.get("args", [])):
        fail("Deployment: the environment key must not be passed as a flag")
    for d in docs:
        if ENV_KEY_PATTERN.search(json.dumps(d)):
            fail(f"{ident(d)}: contains what looks like an Anthropic key")

    if not svc["spec"].get("selector") or not _labels_match(svc["spec"]["selector"], pod_labels):
        fail("Service: selector does not match the worker pods")
    svc_ports = svc["spec"].get("ports", [])
    for p in svc_ports:
        target = p.get("targetPort", p["port"])
        if target not in ports:
            fail(f"Service: targetPort {target!r} is not a container port")

    pdb_sel = pdb["spec"].get("selector", {}).get("matchLabels", {})
    if not pdb_sel or not _labels_match(pdb_sel, pod_labels):
        fail("PodDisruptionBudget: selector does not match the worker pods")
    dep_sel = dep["spec"]["selector"].get("matchLabels", {})
    if pdb_sel != dep_sel:
        fail("PodDisruptionBudget: selector differs from the Deployment's")

    np_sel = netpol["spec"].get("podSelector", {}).get("matchLabels", {})
    if not np_sel or not _labels_match(np_sel, pod_labels):
        fail("NetworkPolicy: podSelector does not match the worker pods")
    if sorted(netpol["spec"].get("policyTypes", [])) != ["Egress", "Ingress"]:
        fail("NetworkPolicy: must restrict both Ingress and Egress")
    ops_ports = {p.get("targetPort", p["port"]) for p in svc_ports} | {p["port"] for p in svc_ports}
    for rule in netpol["spec"].get("ingress", []):
        if not rule.get("from"):
            fail("NetworkPolicy: every ingress rule must name its sources")
        for p in rule.get("ports", []) or [{}]:
            if p.get("port") not in ops_ports:
                fail(f"NetworkPolicy: ingress port {p.get('port')!r} is not the ops port")
    for rule in netpol["spec"].get("egress", []):
        for p in rule.get("ports", []) or [{}]:
            if (p.get("port"), p.get("protocol", "TCP")) not in ((53, "UDP"), (53, "TCP"), (443, "TCP")):
                fail(f"NetworkPolicy: egress port {p.get('port')!r}/{p.get('protocol', 'TCP')} "
                     "is neither DNS nor HTTPS")

    ref = so["spec"]["scaleTargetRef"]
    if (ref.get("kind", "Deployment"), ref["name"]) != ("Deployment", dep["metadata"]["name"]):
        fail("ScaledObject: scaleTargetRef does not name the worker Deployment")
    if so["spec"].get("minReplicaCount", 0) < 1:
        fail("ScaledObject: minReplicaCount must be >= 1 (the queue depth is read from a worker)")
    svc_host = f"{svc['metadata']['name']}.{namespace}.svc"
    for t in so["spec"]["triggers"]:
        if t["type"] == "metrics-api":
            url = t["metadata"]["url"]
            m = re.match(r"^http://([^/:]+)(?::(\d+))?(/.*)$", url)
            if not m or not m.group(1).startswith(svc_host) or m.group(3) != "/queue":
                fail(f"ScaledObject: metrics-api url {url} must be the ops Service's /queue")
            elif int(m.group(2) or 80) not in {p["port"] for p in svc_ports}:
                fail(f"ScaledObject: metrics-api url port is not a port of {svc['metadata']['name']}")
            if t["metadata"].get("aggregateFromKubeServiceEndpoints") == "true":
                fail("ScaledObject: /queue is environment-wide; aggregating over replicas would multiply it")

    toml_text = cm.get("data", {}).get("wasm-sandbox.toml")
    if toml_text is None:
        fail("ConfigMap: key wasm-sandbox.toml missing")
    else:
        try:
            tomllib.loads(toml_text)
        except tomllib.TOMLDecodeError as e:
            fail(f"ConfigMap: wasm-sandbox.toml is not valid TOML: {e}")
    if len(report.errors) == before:
        report.ok()


def run_policy(docs: list[dict], where: str, report: Report) -> None:
    try:
        policy_checks(docs, where, report)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        report.error(where, f"policy check could not read the objects ({type(e).__name__}: {e})")


# --------------------------------------------------------------------------- other files


def check_seccomp_profile(path: Path, where: str, report: Report) -> None:
    try:
        profile = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        report.error(where, f"not valid JSON: {e}")
        return
    actions = {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
               "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_LOG"}
    if profile.get("defaultAction") not in actions:
        report.error(where, "defaultAction missing or unknown")
        return
    denied: set[str] = set()
    allowed: set[str] = set()
    for i, group in enumerate(profile.get("syscalls", [])):
        if group.get("action") not in actions or not group.get("names"):
            report.error(where, f"syscalls[{i}]: needs names and a known action")
            continue
        if group["action"] == "SCMP_ACT_ERRNO" and group.get("errnoRet") != 1:
            report.error(where, f"syscalls[{i}]: deny with EPERM (errnoRet 1)")
        if "args" in group or "includes" in group or "excludes" in group:
            report.error(where, f"syscalls[{i}]: conditional rules are not expected in this profile")
        (allowed if group["action"] in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG") else denied).update(group["names"])
    default_denies = profile["defaultAction"] not in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
    missing = sorted(n for n in SECCOMP_MUST_DENY if n not in denied and not (default_denies and n not in allowed))
    if missing:
        report.error(where, f"must deny {missing}")
    blocked = sorted(n for n in SECCOMP_MUST_ALLOW if n in denied or (default_denies and n not in allowed))
    if blocked:
        report.error(where, f"must allow {blocked} (bubblewrap and the worker's own sandbox need them)")
    report.ok()


def find_binary(repo: Path) -> Path | None:
    explicit = os.environ.get("WASM_SANDBOX_BIN")
    if explicit:
        return Path(explicit)
    for profile in ("release", "debug"):
        candidate = repo / "target" / profile / "wasm-sandbox"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def config_check(deploy: Path, report: Report) -> None:
    """The ConfigMap's wasm-sandbox.toml loads in every command that reads the file (one
    schema: issue 17): `config check`, `serve --dry-run` and `replay --config`."""
    binary = find_binary(deploy.parent)
    if binary is None:
        report.note("config check: no built wasm-sandbox binary (set WASM_SANDBOX_BIN); TOML syntax only")
        return
    probe = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0 or "--dry-run" not in probe.stdout:
        report.note(f"config check: {binary} predates `serve --dry-run`; TOML syntax only")
        return
    cm = load_docs((deploy / "k8s/base/configmap.yaml").read_text())[0]
    text = cm["data"]["wasm-sandbox.toml"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    with tempfile.TemporaryDirectory(prefix="wasm-sandbox-validate-") as tmp:
        tmp = Path(tmp)
        config = tmp / "wasm-sandbox.toml"
        config.write_text(text)
        # replay runs a real session: keep its compile cache off the host's /var/lib.
        replay_config = tmp / "replay.toml"
        replay_config.write_text(text.replace("/var/lib/wasm-sandbox/cache", str(tmp / "cache")))
        call = '{"id": "1", "name": "write", "input": {"file_path": "a.txt", "content": "ok"}}\n'
        commands = [
            ("config check", [binary, "config", "check", "--config", config], None),
            ("serve --dry-run", [binary, "serve", "--dry-run", "--config", config], None),
            ("replay", [binary, "replay", "--workdir", tmp / "ws", "--config", replay_config], call),
        ]
        for name, argv, stdin in commands:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120,
                                  check=False, env=env)
            if proc.returncode != 0 or (name == "replay" and '"is_error":false' not in proc.stdout):
                report.error("k8s/base/configmap.yaml", f"`wasm-sandbox {name}` rejects wasm-sandbox.toml: "
                             f"{(proc.stderr or proc.stdout).strip()}")
            else:
                report.ok()
                report.note(f"{name}: {binary} accepts the ConfigMap's wasm-sandbox.toml")


# --------------------------------------------------------------------------- driver


def validate_tree(deploy: Path, report: Report, kubectl: str | None, with_binary: bool = True) -> None:
    k8s_dir = deploy / "k8s"
    schema = json.loads((deploy / "schemas" / "keda-scaledobject.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    keda = jsonschema.Draft202012Validator(schema)

    def validate_resource(doc: dict, where: str) -> None:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            report.error(where, "not a Kubernetes object (apiVersion and kind required)")
        elif is_scaledobject(doc):
            validate_scaledobject(doc, where, report, keda)
        else:
            validate_k8s(doc, where, report)

    used: set[Path] = set()
    manifests: list[Path] = []
    parsed: dict[Path, list[dict]] = {}  # files that parsed and validated cleanly
    for path in sorted(k8s_dir.rglob("*")):
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        rel = str(path.relative_to(deploy))
        try:
            docs = load_docs(path.read_text())
        except yaml.YAMLError as e:
            report.error(rel, f"YAML: {e}")
            continue
        before = len(report.errors)
        for doc in docs:
            if is_kustomization(doc):
                check_kustomization(path, rel, doc, report, used)
            else:
                manifests.append(path)
                validate_resource(doc, rel)
        if len(report.errors) == before:
            parsed[path.resolve()] = docs
    for path in manifests:
        if path.resolve() not in used:
            report.error(str(path.relative_to(deploy)), "not referenced by any kustomization")

    kdirs = kustomization_dirs(k8s_dir)
    if kubectl is None:
        report.note("kustomize: kubectl not found; overlays not rendered, policy checked on base/ sources")
        base = k8s_dir / "base"
        kustomization = parsed.get((base / "kustomization.yaml").resolve(), [{}])[0]
        files = [(base / name).resolve() for name in kustomization.get("resources", [])]
        if files and all(f in parsed for f in files):  # else the errors are reported already
            run_policy([d for f in files for d in parsed[f]], "k8s/base (sources)", report)
    else:
        with ThreadPoolExecutor(max_workers=4) as pool:
            rendered = list(pool.map(lambda d: render(d, kubectl), kdirs))
        for kdir, (docs, err) in zip(kdirs, rendered):
            rel = str(kdir.relative_to(deploy))
            if docs is None:
                report.error(rel, f"kubectl kustomize failed: {err}")
                continue
            before = len(report.errors)
            for doc in docs:
                validate_resource(doc, f"{rel} (rendered)")
            if len(report.errors) == before:  # policy reads fields the schemas guarantee
                run_policy(docs, f"{rel} (rendered)", report)

    check_seccomp_profile(deploy / "seccomp" / "wasm-sandbox.json", "seccomp/wasm-sandbox.json", report)
    if with_binary:
        config_check(deploy, report)


# --------------------------------------------------------------------------- self-test


@dataclass
class Mutation:
    name: str
    file: str
    old: str
    new: str
    expect: str  # substring of at least one error message


MUTATIONS = [
    Mutation("port as a string", "k8s/base/deployment.yaml",
             "containerPort: 9090", 'containerPort: "9090"', "is not of type 'integer'"),
    Mutation("misspelled field (strict schema)", "k8s/base/deployment.yaml",
             "readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true",
             "Additional properties are not allowed"),
    Mutation("duplicate key", "k8s/base/deployment.yaml",
             "      enableServiceLinks: false\n",
             "      enableServiceLinks: false\n      enableServiceLinks: true\n", "duplicate key"),
    Mutation("grace period shorter than the drain", "k8s/base/deployment.yaml",
             "terminationGracePeriodSeconds: 180", "terminationGracePeriodSeconds: 60",
             "must exceed the drain budget"),
    Mutation("added capability", "k8s/base/deployment.yaml",
             "              drop:\n                - ALL\n",
             "              add:\n                - SYS_ADMIN\n              drop:\n                - ALL\n",
             "capabilities must drop ALL and add none"),
    Mutation("writable root filesystem", "k8s/base/deployment.yaml",
             "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false",
             "readOnlyRootFilesystem must be true"),
    Mutation("inline environment key", "k8s/base/deployment.yaml",
             "              valueFrom:\n                secretKeyRef:\n                  name: wasm-sandbox-environment-key\n"
             "                  key: environment-key\n",
             "              value: sk-ant-oat01-abcdefghijklmnop\n",
             "must come from a secretKeyRef"),
    Mutation("liveness probe path", "k8s/base/deployment.yaml",
             "              path: /healthz\n              port: ops\n            periodSeconds: 10",
             "              path: /health\n              port: ops\n            periodSeconds: 10",
             "livenessProbe must be an HTTP GET of /healthz"),
    Mutation("scrape annotation", "k8s/base/deployment.yaml",
             'prometheus.io/scrape: "true"', 'prometheus.io/scrape: "false"', "prometheus.io/scrape"),
    Mutation("service selector", "k8s/base/service.yaml",
             "    app.kubernetes.io/component: worker\n  ports:",
             "    app.kubernetes.io/component: workers\n  ports:", "Service: selector"),
    Mutation("token automount", "k8s/base/serviceaccount.yaml",
             "automountServiceAccountToken: false", "automountServiceAccountToken: true",
             "automountServiceAccountToken must be false"),
    Mutation("egress port", "k8s/base/networkpolicy.yaml",
             "          port: 443", "          port: 80", "egress port 80"),
    Mutation("missing kustomize resource", "k8s/base/kustomization.yaml",
             "  - service.yaml", "  - services.yaml", "does not exist"),
    Mutation("broken TOML", "k8s/base/configmap.yaml",
             "    concurrency = 8", "    concurrency = ", "not valid TOML"),
    Mutation("targetValue as a number", "k8s/base/scaledobject.yaml",
             'targetValue: "1"', "targetValue: 1", "is not of type 'string'"),
    Mutation("misspelled metrics-api parameter", "k8s/base/scaledobject.yaml",
             "valueLocation: depth", "valuelocation: depth", "'valueLocation' is a required property"),
    Mutation("scaleTargetRef without a name", "k8s/base/scaledobject.yaml",
             "    kind: Deployment\n    name: wasm-sandbox\n", "    kind: Deployment\n",
             "'name' is a required property"),
    Mutation("min above max", "k8s/base/scaledobject.yaml",
             "minReplicaCount: 1", "minReplicaCount: 30", "minReplicaCount 30 > maxReplicaCount"),
    Mutation("unknown metricType", "k8s/base/scaledobject.yaml",
             "metricType: Value", "metricType: Utilization", "metricType"),
    Mutation("target is not the Deployment", "k8s/base/scaledobject.yaml",
             "    name: wasm-sandbox\n  pollingInterval", "    name: wasm-sandbox-x\n  pollingInterval",
             "scaleTargetRef does not name the worker Deployment"),
    Mutation("prometheus trigger without threshold", "k8s/alternatives/prometheus/scaledobject.yaml",
             'threshold: "6"', 'treshold: "6"', "'threshold' is a required property"),
    Mutation("seccomp profile allows keyctl", "seccomp/wasm-sandbox.json",
             '"add_key", "request_key", "keyctl"', '"add_key", "request_key"', "must deny ['keyctl']"),
]


def self_test(deploy: Path, kubectl: str | None) -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="deploy-selftest-") as tmp:
        for m in MUTATIONS:
            copy = Path(tmp) / m.name.replace(" ", "-")
            shutil.copytree(deploy, copy, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
            target = copy / m.file
            text = target.read_text()
            if m.old not in text:
                print(f"FAIL self-test {m.name!r}: {m.file} no longer contains the text to break")
                failures += 1
                continue
            target.write_text(text.replace(m.old, m.new, 1))
            report = Report()
            validate_tree(copy, report, kubectl, with_binary=False)
            hit = [e for e in report.errors if m.expect in e]
            if not report.errors:
                print(f"FAIL self-test {m.name!r}: the broken copy validated")
                failures += 1
            elif not hit:
                print(f"FAIL self-test {m.name!r}: rejected, but not for the expected reason "
                      f"({m.expect!r}); got: {report.errors[0]}")
                failures += 1
            else:
                print(f"ok   self-test {m.name!r} rejected: {hit[0]}")
    print(f"self-test: {len(MUTATIONS) - failures} passed, {failures} failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deploy-dir", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--self-test", action="store_true", help="break copies, expect failures")
    args = parser.parse_args(argv)
    deploy = args.deploy_dir.resolve()
    # KUBECTL=none validates without rendering (what a machine without kubectl does).
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if kubectl == "none":
        kubectl = None
    start = time.monotonic()
    if args.self_test:
        return self_test(deploy, kubectl)
    report = Report()
    validate_tree(deploy, report, kubectl)
    for note in report.notes:
        print(f"note {note}")
    for err in report.errors:
        print(f"ERROR {err}")
    print(f"manifests: {report.passed} passed, {len(report.errors)} failed "
          f"(Kubernetes {', '.join(K8S_VERSIONS)}; {time.monotonic() - start:.1f}s)")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
