"""ops/kubernetes: every core object validates against Kubernetes' schemas (kubernetes-validate
--strict, offline: the package ships the schemas), the KEDA objects say what they must, and the
Deployment runs a real `cfsign worker` command line whose probes match its --http-address."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .ops_support import OPS, REPO_ROOT, config_keys, environment_names_in

K8S = OPS / "kubernetes"
CORE_FILES = sorted(p for p in K8S.rglob("*.yaml") if "keda" not in p.relative_to(K8S).parts)
KEDA_FILE = K8S / "keda" / "scaledobject.yaml"


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def objects() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(K8S.rglob("*.yaml")):
        for d in documents(path):
            found[(d["kind"], d["metadata"]["name"])] = d
    return found


def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("kubernetes_validate", reason="pip install -r Tests/requirements.txt (kubernetes-validate)")
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_core_objects_validate_strictly():
    assert {p.name for p in CORE_FILES} >= {"deployment.yaml", "configmap.yaml", "pdb.yaml", "service.yaml",
                                            "secret-signing-keys.yaml"}
    result = kubernetes_validate(*CORE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr and "WARN" not in result.stdout + result.stderr, result.stdout
    passed = result.stdout.count(" passed for resource ")
    assert passed == sum(len(documents(p)) for p in CORE_FILES), result.stdout


def test_the_validator_rejects_a_misspelt_field(tmp_path: Path):
    """The check above is not vacuous: --strict refuses an unknown property."""
    bad = tmp_path / "deployment.yaml"
    bad.write_text((K8S / "deployment.yaml").read_text().replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:"))
    result = kubernetes_validate(bad)
    assert result.returncode != 0 and "readOnlyRootFileSystem" in result.stdout + result.stderr


def deployment() -> dict:
    return objects()[("Deployment", "cfsign-worker")]


def container() -> dict:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_deployment_runs_real_worker_flags(worker_help):
    c = container()
    argv = c["command"] + c["args"]
    assert argv[0].endswith("/cfsign") and argv[1] == "worker", argv
    for arg in argv[2:]:
        if arg.startswith("--"):
            assert arg.split("=")[0] in worker_help.flags, f"{arg} is not a `cfsign worker` flag"
    assert "--http-address" in argv and "--config" in argv


def flag(argv: list[str], name: str) -> str:
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not given")


def test_probes_and_ports_match_http_address():
    c = container()
    argv = c["command"] + c["args"]
    host, _, port = flag(argv, "--http-address").rpartition(":")
    assert host == "0.0.0.0", "probes and scrapes come from outside the pod: listen on every address"
    port = int(port)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert [p["containerPort"] for p in c["ports"]] == [port]
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service = objects()[("Service", "cfsign-worker-metrics")]
    assert service["spec"]["ports"][0]["port"] == port
    assert service["spec"]["selector"] == deployment()["spec"]["selector"]["matchLabels"]


def test_keys_secret_volume_and_security_context():
    spec = deployment()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    keys = volumes["signing-keys"]["secret"]
    assert keys["secretName"] == "cfsign-signing-keys"
    assert keys["defaultMode"] == 0o400 == 256
    assert mounts["signing-keys"]["mountPath"] == "/etc/cfsign/keys"
    assert mounts["signing-keys"]["readOnly"] is True
    assert "subPath" not in mounts["signing-keys"], "a subPath mount never sees Secret updates (new keys)"
    config_path = flag(container()["command"] + container()["args"], "--config")
    assert mounts["config"]["mountPath"] == config_path
    assert volumes["config"]["configMap"]["name"] == "cfsign-worker-config"
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "requests" in container()["resources"] and "limits" in container()["resources"]
    # fsGroup turns 0400 into 0440: the worker must be told that is acceptable here.
    assert spec["securityContext"].get("fsGroup") is not None
    conf = objects()[("ConfigMap", "cfsign-worker-config")]["data"]["worker.conf"]
    assert re.search(r"^allow_group_readable_keys = true$", conf, re.M)


def test_configmap_and_environment_name_real_settings(worker_help):
    conf = objects()[("ConfigMap", "cfsign-worker-config")]["data"]["worker.conf"]
    keys = config_keys(conf)
    assert keys
    unknown = set(keys) - worker_help.settings
    assert not unknown, f"worker.conf in the ConfigMap names unknown settings: {sorted(unknown)}"
    env_names = {e["name"] for e in container()["env"]}
    text_names = set()
    for path in K8S.rglob("*"):
        if path.is_file():
            text_names |= environment_names_in(path.read_text())
    cfsign_names = {n for n in env_names if n.startswith("CFSIGN_")} | text_names
    assert "CFSIGN_REDIS" in cfsign_names
    unknown = cfsign_names - worker_help.environment_names
    assert not unknown, f"not worker settings: {sorted(unknown)}"


def test_pdb_selects_the_workers():
    pdb = objects()[("PodDisruptionBudget", "cfsign-worker")]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment()["spec"]["selector"]["matchLabels"]


def keda_objects() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents(KEDA_FILE)}


def test_keda_scaled_object():
    scaled = keda_objects()[("ScaledObject", "cfsign-worker")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert target["name"] == deployment()["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert scaled["spec"]["minReplicaCount"] >= 1, "the gauge comes from the workers: never scale to 0"
    assert scaled["spec"]["maxReplicaCount"] >= scaled["spec"]["minReplicaCount"]


def test_keda_scales_on_the_queue_depth_metric_without_redis_access(worker_help):
    """Attack 4 (issue 13): KEDA's `redis` trigger needs EVAL, and a user that may EVAL may run any
    Lua. The trigger reads the workers' own cfsign_queue_depth from Prometheus instead."""
    found = keda_objects()
    (trigger,) = found[("ScaledObject", "cfsign-worker")]["spec"]["triggers"]
    assert trigger["type"] == "prometheus", f"KEDA must not log in to Redis; trigger is {trigger['type']!r}"
    assert "authenticationRef" not in trigger, "the prometheus trigger needs no Redis login"
    assert not any(kind == "TriggerAuthentication" for kind, _ in found), "no KEDA login object remains"
    meta = trigger["metadata"]
    assert all(isinstance(v, str) for v in meta.values()), f"KEDA metadata values are strings: {meta}"
    assert re.fullmatch(r"https?://[^/\s]+(/\S*)?", meta["serverAddress"]), meta["serverAddress"]
    # The queue's length once: every worker reports the same list, so max, never sum.
    assert re.fullmatch(r'max\(cfsign_queue_depth\{job="cfsign-worker"\}\)', meta["query"]), meta["query"]
    assert float(meta["threshold"]) > 0
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    assert meta.get("ignoreNullValues") == "false", "a lost target must not read as an empty queue"
    # The metric is the worker's: a running worker serves it (scraped_worker fixture in conftest.py).
    text = (REPO_ROOT / "Sources" / "CFSignWorker" / "WorkerMetrics.swift").read_text()
    assert 'Gauge(label: "cfsign_queue_depth")' in text
    # Nothing KEDA-and-Redis remains in the Deployment or the example Secrets.
    assert "KEDA_REDIS_ADDRESS" not in {e["name"] for e in container()["env"]}
    assert ("Secret", "cfsign-keda-redis") not in objects()


def test_queue_depth_metric_is_served(scraped_worker):
    assert re.search(r"^cfsign_queue_depth(\{[^}]*\})? \d", scraped_worker.metrics, re.M), \
        "the KEDA trigger's metric must be on /metrics"


def test_example_secrets_are_placeholders():
    for path in (K8S / "examples").glob("*.yaml"):
        for d in documents(path):
            assert d["kind"] == "Secret"
            for value in d.get("stringData", {}).values():
                assert "PLACEHOLDER" in value or "CHANGE-ME" in value, (path, value)
            assert "data" not in d, f"{path}: base64 data could hide real material; use stringData placeholders"


def test_no_private_key_material_anywhere_under_ops():
    for path in OPS.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text), f"{path} holds a private key"
