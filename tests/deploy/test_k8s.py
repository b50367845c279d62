"""k8s/: both overlays render offline with kustomize, every object is valid against the
Kubernetes JSON schemas (kubernetes-validate, strict, offline), the ServiceMonitor against the
schema in tests/deploy/schemas, and the objects refer to each other correctly."""

from __future__ import annotations

import copy
import re
import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import COMPOSE_FILE, K8S, REPO, require_tool
from tests.deploy.test_compose import settings_env_names

OVERLAYS = ("cpu", "gpu")
# Every overlay shipped; `sentinel` is the CPU overlay with k8s/components/redis-sentinel.
ALL_OVERLAYS = OVERLAYS + ("sentinel",)
# Oldest and newest Kubernetes minor versions the manifests are checked against.
K8S_VERSIONS = ("1.30.0", "1.35.0")
SERVICEMONITOR_SCHEMA = json.loads(
    (Path(__file__).parent / "schemas" / "servicemonitor.json").read_text(encoding="utf-8"))
PROMETHEUSRULE_SCHEMA = json.loads(
    (Path(__file__).parent / "schemas" / "prometheusrule.json").read_text(encoding="utf-8"))
CUSTOM_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICEMONITOR_SCHEMA,
                  ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUSRULE_SCHEMA}


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / "overlays" / name) for name in ALL_OVERLAYS}


def validate(doc: dict[str, Any], version: str) -> None:
    """Raise on an invalid object: custom resources against our schema, the rest against
    Kubernetes' own (strict: unknown fields are errors)."""
    custom = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if custom is not None:
        jsonschema.validate(doc, custom)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_is_valid(rendered, overlay: str, version: str) -> None:
    docs = rendered[overlay]
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace", "NetworkPolicy",
                 "PersistentVolumeClaim", "PodDisruptionBudget", "PrometheusRule", "Service",
                 "ServiceMonitor", "StatefulSet"):
        assert kind in kinds, f"{overlay}: no {kind}"
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize("template", ["secret-template.yaml", "redis-secret-template.yaml"])
def test_secret_template_is_valid(template: str) -> None:
    doc = yaml.safe_load((K8S / "base" / template).read_text(encoding="utf-8"))
    for version in K8S_VERSIONS:
        validate(doc, version)
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert template not in kustomization["resources"], "apply must not overwrite the key"


def test_validation_rejects_broken_objects(rendered) -> None:
    docs = rendered["cpu"]
    deployment = copy.deepcopy(one(docs, "Deployment"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="'two' is not of type 'integer'"):
        validate(deployment, K8S_VERSIONS[0])
    deployment = copy.deepcopy(one(docs, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = {}  # typo
    with pytest.raises(kubernetes_validate.ValidationError, match="'readinessProb' was unexpected"):
        validate(deployment, K8S_VERSIONS[0])
    monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "fifteen seconds"
    with pytest.raises(jsonschema.ValidationError, match="'fifteen seconds' does not match"):
        validate(monitor, K8S_VERSIONS[0])
    rule = copy.deepcopy(one(docs, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "two minutes"
    with pytest.raises(jsonschema.ValidationError, match="'two minutes' does not match"):
        validate(rule, K8S_VERSIONS[0])
    rule = copy.deepcopy(one(docs, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["expresion"] = "up == 0"  # typo
    with pytest.raises(jsonschema.ValidationError, match="expresion"):
        validate(rule, K8S_VERSIONS[0])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_probes_drain_and_hardening(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    dep = one(docs, "Deployment", "himnet-forecast")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    drain = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > drain
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/models"]["readOnly"] is True
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == c["ports"][0]["containerPort"]
    gpus = c["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert (gpus == "1") if overlay == "gpu" else (gpus is None)
    assert c["image"] == f"himnet-service:{project_version()}-{overlay}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_and_secret_wiring(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    dep = one(docs, "Deployment", "himnet-forecast")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    cm_name = c["envFrom"][0]["configMapRef"]["name"]
    cm = one(docs, "ConfigMap", cm_name)
    env = cm["data"]
    unknown = sorted(set(env) - settings_env_names())
    assert not unknown, f"ConfigMap keys no setting reads: {unknown}"
    assert env["HIMNET_DEVICE"] == ("cuda" if overlay == "gpu" else "cpu")
    assert int(env["HIMNET_PORT"]) == c["ports"][0]["containerPort"]
    # the key file the service reads is the mounted secret's key
    key_file = Path(env["HIMNET_API_KEY_FILE"])
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(key_file.parent))
    secret = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
    assert secret["secretName"] == "himnet-api-key"
    assert [i["path"] for i in secret["items"]] == [key_file.name]
    template = yaml.safe_load((K8S / "base" / "secret-template.yaml").read_text(encoding="utf-8"))
    assert template["metadata"]["name"] == secret["secretName"]
    assert secret["items"][0]["key"] in template["stringData"]
    # Redis URL points at the Redis Service
    redis_svc = one(docs, "Service", "himnet-redis")
    assert env["HIMNET_REDIS_URL"].startswith(
        f"redis://{redis_svc['metadata']['name']}:{redis_svc['spec']['ports'][0]['port']}/")
    # the bundle directory is inside the mounted models volume
    models = next(m for m in c["volumeMounts"] if m["mountPath"] == "/models")
    assert env["HIMNET_BUNDLE_DIR"].startswith(models["mountPath"] + "/")
    claim = next(v for v in pod["volumes"] if v["name"] == models["name"])["persistentVolumeClaim"]
    one(docs, "PersistentVolumeClaim", claim["claimName"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_and_references_line_up(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    dep = one(docs, "Deployment", "himnet-forecast")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = one(docs, "Service", "himnet-forecast")
    assert matches(svc["spec"]["selector"], pod_labels)
    assert svc["spec"]["ports"][0]["targetPort"] == dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in dep["spec"], "with an autoscaler, every apply would reset the count"
    pdb = one(docs, "PodDisruptionBudget", "himnet-forecast")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain could never proceed"
    monitor = one(docs, "ServiceMonitor")
    assert matches(monitor["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # everything lands in one namespace, which the overlay creates
    ns = one(docs, "Namespace")["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == ns for d in docs if d["kind"] != "Namespace")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_statefulset_and_network_policy(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    sts = one(docs, "StatefulSet", "himnet-redis")
    headless = one(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    redis_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert matches(headless["spec"]["selector"], redis_labels)
    c, _exporter = sts["spec"]["template"]["spec"]["containers"]
    data_dir = c["args"][c["args"].index("--dir") + 1]
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert any(m["mountPath"] == data_dir and m["name"] in claims for m in c["volumeMounts"])
    # same persistence options as the compose stack
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert compose["services"]["redis"]["command"][1:] == c["args"]
    policy = one(docs, "NetworkPolicy")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], redis_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    by_port = {tuple(p["port"] for p in r["ports"]): r for r in policy["spec"]["ingress"]}
    assert set(by_port) == {(6379,), (9121,)}, "Redis for the forecast pods, metrics for the scraper"
    assert [p["containerPort"] for p in sts["spec"]["template"]["spec"]["containers"][1]["ports"]] == [9121]
    rule = by_port[(6379,)]
    (source,) = rule["from"]
    forecast_labels = one(docs, "Deployment", "himnet-forecast")["spec"]["template"]["metadata"]["labels"]
    assert set(source) == {"podSelector"}, "only pods of this namespace, selected by label"
    assert matches(source["podSelector"]["matchLabels"], forecast_labels)
    assert not matches(source["podSelector"]["matchLabels"], redis_labels)
    assert [p["port"] for p in rule["ports"]] == [6379]


def test_gpu_overlay_differs_from_cpu_only_where_it_should(rendered) -> None:
    cpu = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap"
            else d["metadata"]["name"]) for d in rendered["cpu"]}
    gpu = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap"
            else d["metadata"]["name"]) for d in rendered["gpu"]}
    assert cpu == gpu
    pod = one(rendered["gpu"], "Deployment")["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    requests = pod["containers"][0]["resources"]["requests"]
    assert requests["nvidia.com/gpu"] == pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


SCRAPE_ANNOTATION = "prometheus.io/scrape"


def _annotated(doc: dict[str, Any]) -> list[str]:
    """Where ``doc`` carries prometheus.io/* annotations: its metadata and/or pod template."""
    places = []
    if any(k.startswith("prometheus.io/") for k in doc["metadata"].get("annotations", {})):
        places.append(f"{doc['kind']}/{doc['metadata']['name']}")
    template = doc.get("spec", {}).get("template", {}).get("metadata", {})
    if any(k.startswith("prometheus.io/") for k in template.get("annotations", {})):
        places.append(f"{doc['kind']}/{doc['metadata']['name']} pods")
    return places


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_scraped_once(rendered, overlay: str) -> None:
    """Annotations on the pods only (a Service annotation would scrape every pod again through
    its endpoints); the ServiceMonitor names the job the alert rules select."""
    docs = rendered[overlay]
    places = [p for d in docs for p in _annotated(d)]
    # The forecast pods and the Redis pods (its exporter sidecar) are scraped, each once, as pods.
    assert sorted(places) == ["Deployment/himnet-forecast pods", "StatefulSet/himnet-redis pods"], places
    monitor = one(docs, "ServiceMonitor")
    svc = one(docs, "Service", "himnet-forecast")
    job = svc["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    rules = one(docs, "PrometheusRule")
    exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    assert all(f'job="{job}"' in e for e in exprs), f"the rules do not all select job={job}"


def test_scrape_check_catches_a_second_annotated_object(rendered) -> None:
    svc = copy.deepcopy(one(rendered["cpu"], "Service", "himnet-forecast"))
    svc["metadata"]["annotations"] = {SCRAPE_ANNOTATION: "true"}
    assert _annotated(svc) == ["Service/himnet-forecast"]


def _render_with(tmp_path: Path, kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """Render a kustomization written in ``tmp_path`` whose paths are given relative to K8S
    (kustomize accepts only relative paths)."""
    tmp_path.mkdir(parents=True)
    rel = Path(*[".."] * len(tmp_path.resolve().parts[1:])) / K8S.resolve().relative_to("/")
    doc = {key: [str(rel / p) for p in value] if key in ("resources", "components") else value
           for key, value in kustomization.items()}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return render(tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_selector_labels_are_configurable(tmp_path: Path, overlay: str) -> None:
    component = {"resources": [f"overlays/{overlay}"],
                 "components": ["components/prometheus-selector"]}
    docs = _render_with(tmp_path / "default", component)
    labelled = sorted(d["kind"] for d in docs if "release" in d["metadata"].get("labels", {}))
    assert labelled == ["PrometheusRule", "ServiceMonitor"]
    assert {one(docs, k)["metadata"]["labels"]["release"] for k in labelled} == {"kube-prometheus-stack"}
    # an overlay sets its own value without editing the component (docs/deployment.md)
    own = dict(component, labels=[{"pairs": {"release": "my-prometheus"}, "includeSelectors": False,
                                   "fields": [{"kind": k, "path": "metadata/labels", "create": True}
                                              for k in ("ServiceMonitor", "PrometheusRule")]}])
    docs = _render_with(tmp_path / "own", own)
    assert {one(docs, k)["metadata"]["labels"]["release"] for k in labelled} == {"my-prometheus"}
    monitor, svc = one(docs, "ServiceMonitor"), one(docs, "Service", "himnet-forecast")
    assert matches(monitor["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    for doc in docs:
        validate(doc, K8S_VERSIONS[-1])


ADAPTER_VALUES = K8S / "overlays" / "gpu" / "prometheus-adapter-values.yaml"


def test_gpu_autoscaler_scales_on_the_inference_queue(rendered, tmp_path: Path) -> None:
    from tests.deploy.test_monitoring import exported_families

    cpu_hpa = one(rendered["cpu"], "HorizontalPodAutoscaler")
    assert [m["type"] for m in cpu_hpa["spec"]["metrics"]] == ["Resource"]
    (metric,) = one(rendered["gpu"], "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods", "a GPU pod's CPU does not track its inference load"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    queue = int(one(rendered["gpu"], "ConfigMap")["data"].get("HIMNET_INFERENCE_QUEUE", "8"))
    assert 0 < float(metric["pods"]["target"]["averageValue"]) < queue, "scale before shedding"
    # prometheus-adapter serves that name from a metric the service exports
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text(encoding="utf-8"))["rules"]["custom"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    series = rule["seriesQuery"].split("{")[0]
    assert series in exported_families() and exported_families()[series] == "gauge"
    assert re.fullmatch(rule["name"]["matches"], series)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    # its query, with the adapter's template filled in, is valid PromQL
    query = (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.GroupBy>>", "pod")
             .replace("<<.LabelMatchers>>", 'namespace="himnet", pod=~"himnet-forecast-.*"'))
    check = tmp_path / "adapter.rules.yml"
    check.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": [
        {"record": "adapter:query", "expr": query}]}]}), encoding="utf-8")
    result = subprocess.run([require_tool("promtool"), "check", "rules", str(check)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
