#!/usr/bin/env python3
"""Checks the head-end's Helm chart (helm/headend) with no helm binary and no cluster.

For the default values, values-scale-out.yaml and every helm/headend/ci/*-values.yaml:

1. lint (helm-python-sdk, the Helm library itself; strict: warnings fail) and values.schema.json;
2. render, then validate every manifest: Kubernetes kinds against the API's OpenAPI schemas of the
   oldest and newest supported Kubernetes (kubernetes-validate, strict: unknown fields fail), custom
   resources against their CRD's schema vendored in helm/ci/crds/ (unknown fields fail too);
3. the chart's own rules: hardened pods, probes, no Secret rendered from values, labels, selectors
   that match, the rendered headend.toml against config/headend.example.toml (keys and types), the
   HEADEND_* variables against the same, the dashboard's metrics against headend/src/metrics.rs, the
   Mosquitto settings against config/mosquitto.conf;
4. values the chart must refuse are refused;
5. with a headend binary (--headend, or target/{debug,release}/headend when present), each role's
   rendered configuration and environment is loaded by `headend config`, the real parser.

Run through helm/ci/run.sh, which provides the two PyPI packages in a cached venv.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "headend"
CRDS = Path(__file__).resolve().parent / "crds"
RELEASE, NAMESPACE = "hes", "metering"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
# Custom resources: (apiVersion, kind) -> vendored openAPIV3Schema.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com_v1.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "cluster.postgresql.cnpg.io_v1.partial.json",
}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
# Values the chart must refuse, and a word the refusal must contain.
MUST_REFUSE = [
    ("several intake replicas without $share", {"roles": {"intake": {"replicas": 2}}}, "shared subscription"),
    ("a database URL in config", {"config": {"database": {"url": "postgres://u:pw@db/h"}}}, "Secret"),
    ("credentials in mqtt.url", {"mqtt": {"url": "mqtt://u:pw@broker:1883"}}, "mqtt"),
    ("collect.enabled in the shared config", {"config": {"collect": {"enabled": True}}}, "roles.poller"),
    ("an unknown config section", {"config": {"colect": {"enabled": True}}}, "colect"),
    ("CloudNativePG without an image", {"cnpg": {"enabled": True}}, "imageName"),
    ("an unknown top-level value", {"replicaCount": 3}, "replicaCount"),
]


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")


def scenarios() -> list[tuple[str, dict[str, Any]]]:
    out = [("default", {})]
    files = [CHART / "values-scale-out.yaml"] + sorted(Path(p) for p in glob.glob(str(CHART / "ci" / "*-values.yaml")))
    for f in files:
        out.append((str(f.relative_to(ROOT)), helm.values_from_yaml(f.read_text())))
    return out


def documents(rendered: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                yield path, doc


# ---------------------------------------------------------------- schemas


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists properties (kubectl's strict field
    validation; a structural CRD schema would otherwise prune them silently)."""
    if isinstance(schema, dict):
        s = {k: strict(v) for k, v in schema.items()}
        if "properties" in s and "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
        return s
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


_crd_cache: dict[str, Any] = {}


def validate_manifest(where: str, doc: dict[str, Any], fail: Failures, counts: dict[str, int]) -> None:
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if not api or not kind or not doc.get("metadata", {}).get("name"):
        fail.add(where, "a manifest without apiVersion, kind or metadata.name")
        return
    crd = CRD_SCHEMAS.get((api, kind))
    if crd:
        if crd not in _crd_cache:
            _crd_cache[crd] = strict(json.loads((CRDS / crd).read_text()))
        errors = sorted(jsonschema.Draft202012Validator(_crd_cache[crd]).iter_errors(doc), key=str)
        for e in errors[:5]:
            fail.add(where, f"{kind} {'.'.join(map(str, e.path))}: {e.message}")
        counts["custom resources"] += 1
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail.add(where, f"{kind} against Kubernetes {e.version}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            fail.add(where, f"{api} {kind} has no schema for Kubernetes {version}")
    counts["Kubernetes manifests"] += 1


# ---------------------------------------------------------------- the chart's rules


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in WORKLOADS:
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return doc["spec"]
    return None


def check_pods(where: str, doc: dict[str, Any], fail: Failures) -> None:
    spec = pod_spec(doc)
    if spec is None:
        return
    name = f"{doc['kind']} {doc['metadata']['name']}"
    if spec.get("automountServiceAccountToken") is not False:
        fail.add(where, f"{name}: automountServiceAccountToken must be false")
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail.add(where, f"{name}: pod securityContext needs runAsNonRoot and seccomp RuntimeDefault")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        if not (
            sc.get("readOnlyRootFilesystem") is True
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and sc.get("runAsNonRoot") is True
        ):
            fail.add(where, f"{name}/{c['name']}: container securityContext is not hardened")
        if not c.get("resources", {}).get("requests"):
            fail.add(where, f"{name}/{c['name']}: no resource requests")
        for e in c.get("env", []):
            if e["name"] in ("DATABASE_URL",) and "value" in e:
                fail.add(where, f"{name}: DATABASE_URL given as a literal, not from a Secret")
            if e["name"] == "MQTT_URL" and "@" in e.get("value", ""):
                fail.add(where, f"{name}: MQTT_URL with credentials as a literal")
        if c.get("args") == ["serve"]:
            probes = {p: c.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")}
            if probes != {"livenessProbe": "/livez", "readinessProbe": "/readyz"}:
                fail.add(where, f"{name}: probes must be /livez and /readyz, not {probes}")
    if doc["kind"] in ("Deployment", "StatefulSet"):
        ann = doc["spec"]["template"]["metadata"].get("annotations", {})
        if "checksum/config" not in ann:
            fail.add(where, f"{name}: no checksum/config annotation (config changes would not roll the pods)")


def check_empty(where: str, doc: Any, fail: Failures, path: str = "") -> None:
    """A null field: a template wrote a key whose value reference is misspelt or missing (Helm
    renders those as nothing, and Kubernetes' schemas accept null for most fields)."""
    if doc is None:
        fail.add(where, f"{path.lstrip('.')} is empty (a misspelt or missing value?)")
    elif isinstance(doc, dict):
        for k, v in doc.items():
            check_empty(where, v, fail, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            check_empty(where, v, fail, f"{path}[{i}]")
    elif isinstance(doc, str) and "<no value>" in doc:
        fail.add(where, f"{path.lstrip('.')} holds <no value>")


def check_labels(where: str, doc: dict[str, Any], fail: Failures) -> None:
    labels = doc["metadata"].get("labels", {})
    for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
              "app.kubernetes.io/managed-by", "helm.sh/chart"):
        if k not in labels:
            fail.add(where, f"{doc['kind']} {doc['metadata']['name']}: label {k} missing")


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check_references(where: str, docs: list[dict[str, Any]], fail: Failures) -> None:
    pods = [(d, d["spec"]["template"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    services = [d for d in docs if d["kind"] == "Service"]
    for d, tpl in pods:
        if not matches(d["spec"]["selector"]["matchLabels"], tpl["metadata"]["labels"]):
            fail.add(where, f"{d['kind']} {d['metadata']['name']}: selector does not match its pods")
    for s in services:
        sel = s["spec"].get("selector", {})
        hit = [tpl for _, tpl in pods if matches(sel, tpl["metadata"]["labels"])]
        if not hit:
            fail.add(where, f"Service {s['metadata']['name']} selects no pod")
        for p in s["spec"]["ports"]:
            tp = p.get("targetPort")
            if isinstance(tp, str) and not any(
                tp in [cp.get("name") for c in t["spec"]["containers"] for cp in c.get("ports", [])] for t in hit
            ):
                fail.add(where, f"Service {s['metadata']['name']}: no selected pod has a port named {tp}")
    for d in docs:
        if d["kind"] == "PodDisruptionBudget":
            sel = d["spec"]["selector"]["matchLabels"]
            if not any(matches(sel, tpl["metadata"]["labels"]) for _, tpl in pods):
                fail.add(where, f"PodDisruptionBudget {d['metadata']['name']} selects no pod")
        if d["kind"] == "HorizontalPodAutoscaler":
            ref = d["spec"]["scaleTargetRef"]
            target = by_name.get((ref["kind"], ref["name"]))
            if target is None:
                fail.add(where, f"HorizontalPodAutoscaler {d['metadata']['name']}: no {ref['kind']} {ref['name']}")
            elif "replicas" in target["spec"]:
                fail.add(where, f"{ref['kind']} {ref['name']} sets replicas although an HPA scales it")
        if d["kind"] == "ServiceMonitor":
            sel = d["spec"]["selector"]["matchLabels"]
            port = d["spec"]["endpoints"][0]["port"]
            svc = [s for s in services if matches(sel, s["metadata"].get("labels", {}))]
            if not svc or not any(port in [p.get("name") for p in s["spec"]["ports"]] for s in svc):
                fail.add(where, f"ServiceMonitor {d['metadata']['name']} selects no Service with port {port}")
        if d["kind"] == "Secret":
            fail.add(where, f"Secret {d['metadata']['name']} rendered: secrets are referenced by name, never made from values")


# ---------------------------------------------------------------- the head-end's own files


def documented_config() -> dict[str, dict[str, Any]]:
    """Sections → keys → example value of config/headend.example.toml, commented-out keys included."""
    text = (ROOT / "config" / "headend.example.toml").read_text()
    doc = tomllib.loads(text)
    known: dict[str, dict[str, Any]] = {s: dict(v) for s, v in doc.items()}
    section = None
    for line in text.splitlines():
        m = re.match(r"^\[\[?([a-z_.]+)\]\]?\s*$", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^# ([a-z_]+) = (.+)$", line)
        if m and section and "." not in section:
            try:
                known.setdefault(section, {}).setdefault(m.group(1), tomllib.loads(f"v = {m.group(2)}")["v"])
            except tomllib.TOMLDecodeError:
                pass
    return known


def type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(type(v), "?")


def check_config(where: str, toml_text: str, known: dict[str, dict[str, Any]], fail: Failures) -> None:
    try:
        cfg = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as e:
        fail.add(where, f"rendered headend.toml does not parse: {e}")
        return
    for section, table in cfg.items():
        if section not in known:
            fail.add(where, f"headend.toml: unknown section [{section}]")
            continue
        for key, value in table.items():
            if key not in known[section]:
                fail.add(where, f"headend.toml: unknown key {section}.{key}")
                continue
            want = known[section][key]
            if isinstance(want, list) and want and isinstance(want[0], dict) and isinstance(value, list):
                for entry in value:
                    for k, v in entry.items():
                        if k not in want[0]:
                            fail.add(where, f"headend.toml: unknown key {section}.{key}[].{k}")
                        elif type_name(v) != type_name(want[0][k]):
                            fail.add(where, f"headend.toml: {section}.{key}[].{k} is a {type_name(v)}, "
                                            f"the documented file has a {type_name(want[0][k])}")
            elif type_name(value) != type_name(want):
                fail.add(where, f"headend.toml: {section}.{key} is a {type_name(value)}, "
                                f"the documented file has a {type_name(want)} ({want!r})")


def check_env(where: str, doc: dict[str, Any], known: dict[str, dict[str, Any]], fail: Failures) -> None:
    spec = pod_spec(doc)
    if spec is None:
        return
    for c in spec["containers"]:
        for e in c.get("env", []):
            m = re.match(r"^HEADEND_([A-Z_]+?)__([A-Z_]+)$", e["name"])
            if e["name"].startswith("HEADEND_") and e["name"] != "HEADEND_CONFIG":
                if not m or m.group(2).lower() not in known.get(m.group(1).lower(), {}):
                    fail.add(where, f"{doc['metadata']['name']}: {e['name']} names no documented setting")


def metric_names() -> set[str]:
    src = (ROOT / "headend" / "src" / "metrics.rs").read_text()
    return set(re.findall(r'"(headend_[a-z0-9_]+)"', src))


def check_dashboard(where: str, doc: dict[str, Any], metrics: set[str], fail: Failures) -> int:
    if doc["kind"] != "ConfigMap" or not doc["metadata"]["name"].endswith("-dashboard"):
        return 0
    dash = json.loads(doc["data"]["headend.json"])
    used = 0
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            for name in re.findall(r"\b(headend_[a-z0-9_]+)", t["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if name not in metrics and base not in metrics:
                    fail.add(where, f"dashboard panel {panel['title']!r}: {name} is not a head-end metric")
                used += 1
    if used == 0:
        fail.add(where, "the dashboard queries no head-end metric")
    return used


def check_mosquitto(where: str, doc: dict[str, Any], fail: Failures) -> None:
    if doc["kind"] != "ConfigMap" or "mosquitto.conf" not in doc.get("data", {}):
        return
    # Where the broker listens, keeps its files and logs belongs to the deployment, not the project.
    local = {"listener", "persistence_location", "log_dest", "log_type"}

    def settings(text: str) -> dict[str, str]:
        pairs = (line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
        return {k: v.strip() for k, v in pairs if k not in local}

    want = settings((ROOT / "config" / "mosquitto.conf").read_text())
    got = settings(doc["data"]["mosquitto.conf"])
    if want != got:
        diff = {k: (want.get(k), got.get(k)) for k in want.keys() | got.keys() if want.get(k) != got.get(k)}
        fail.add(where, f"mosquitto.conf settings differ from config/mosquitto.conf (project, chart): {diff}")


def run_headend(where: str, binary: Path, docs: list[dict[str, Any]], toml_text: str, fail: Failures) -> int:
    """Each role's configuration through `headend config`: the real parser, unknown keys refused."""
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "headend.toml"
        cfg.write_text(toml_text)
        for d in docs:
            spec = pod_spec(d)
            if spec is None:
                continue
            for c in spec["containers"]:
                if c.get("args") not in (["serve"], ["migrate"]):
                    continue
                env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_") and k not in ("DATABASE_URL", "MQTT_URL")}
                for e in c.get("env", []):
                    if "value" in e:
                        env[e["name"]] = e["value"]
                env["HEADEND_CONFIG"] = str(cfg)
                # Files the pod mounts (the DLMS keys) do not exist here; the parser does not open them.
                r = subprocess.run([str(binary), "config"], env=env, capture_output=True, text=True, timeout=60)
                if r.returncode != 0:
                    fail.add(where, f"{d['metadata']['name']}: `headend config` refuses it: {r.stderr.strip()[-400:]}")
                checked += 1
    return checked


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--headend", type=Path, help="a built headend binary to load each role's configuration with")
    ap.add_argument("--keep-rendered", type=Path, help="write the rendered manifests of each scenario here")
    args = ap.parse_args()
    binary = args.headend
    if binary is None:
        for p in (ROOT / "target" / "debug" / "headend", ROOT / "target" / "release" / "headend"):
            if p.exists():
                binary = p
                break
    fail = Failures()
    counts = {"Kubernetes manifests": 0, "custom resources": 0}
    known = documented_config()
    metrics = metric_names()
    dashboard_queries = role_configs = 0

    for name, values in scenarios():
        where = name
        report = helm.lint(str(CHART), values, strict=True, kube_version="v" + KUBE_VERSIONS[0])
        for m in report.get("messages", []):
            if m["severity"] >= 2:
                fail.add(where, f"lint: {m['path']}: {m['error']}")
        for e in report.get("errors", []):
            fail.add(where, f"lint: {e}")
        with helm.Chart.load(str(CHART)) as chart:
            try:
                chart.validate_schema(values)
                rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm.HelmError as e:
                fail.add(where, f"render: {e}")
                continue
        docs = []
        for path, doc in documents(rendered):
            w = f"{where} {path.split('/', 1)[-1]}"
            validate_manifest(w, doc, fail, counts)
            if "kind" not in doc or "metadata" not in doc:
                continue
            docs.append(doc)
            check_empty(f"{w} {doc['kind']} {doc['metadata'].get('name')}", doc, fail)
            check_labels(w, doc, fail)
            check_pods(w, doc, fail)
            check_env(w, doc, known, fail)
            dashboard_queries += check_dashboard(w, doc, metrics, fail)
            check_mosquitto(w, doc, fail)
        check_references(where, docs, fail)
        toml_text = next((d["data"]["headend.toml"] for d in docs
                          if d["kind"] == "ConfigMap" and "headend.toml" in d.get("data", {})), None)
        if toml_text is None:
            fail.add(where, "no ConfigMap with headend.toml rendered")
        else:
            check_config(where, toml_text, known, fail)
            if binary:
                role_configs += run_headend(where, binary, docs, toml_text, fail)
        if args.keep_rendered:
            out = args.keep_rendered / re.sub(r"[^A-Za-z0-9.-]+", "_", name)
            out.mkdir(parents=True, exist_ok=True)
            for path, text in rendered.items():
                (out / Path(path).name).write_text(text)
        print(f"helm/ci: {name}: {len(docs)} manifests rendered", file=sys.stderr)

    refused = 0
    with helm.Chart.load(str(CHART)) as chart:
        for what, values, word in MUST_REFUSE:
            try:
                chart.validate_schema(values)
                chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm.HelmError as e:
                if word.lower() in str(e).lower():
                    refused += 1
                else:
                    fail.add("refusals", f"{what}: refused, but the message does not name {word!r}: {e}")
                continue
            fail.add("refusals", f"{what}: accepted")

    for item in fail.items:
        print(f"helm/ci: FAIL {item}", file=sys.stderr)
    summary = (f"{counts['Kubernetes manifests']} Kubernetes manifests checked against Kubernetes "
               f"{' and '.join(KUBE_VERSIONS)}, {counts['custom resources']} custom resources against their schema "
               f"(helm/ci/crds), {dashboard_queries} dashboard metric references, {refused}/{len(MUST_REFUSE)} bad values refused, "
               + (f"{role_configs} role configurations loaded by {binary}" if binary else "no headend binary: role configurations not loaded"))
    if fail.items:
        print(f"helm/ci: chart check FAILED ({len(fail.items)} problems); {summary}", file=sys.stderr)
        return 1
    print(f"helm/ci: chart check passed: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
