"""ops/prometheus: the alerting rules are valid (promtool), fire when they should (promtool unit
tests), use only metrics a real worker exports, and link to sections that exist in the runbook.
The worker's /healthz and /readyz are checked here too, on the same running worker."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .ops_support import OPS, REPO_ROOT

RULES = OPS / "prometheus" / "cfsign-alerts.yml"
UNIT_TESTS = Path(__file__).with_name("cfsign-alerts.test.yml")
RUNBOOK = OPS / "runbook.md"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`, ~96 MB installed); "
                    "scripts/setup installs it only when CI=true. `apt-get install prometheus` to run this here.")
    return path


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_check_rules():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_fire_the_alerts(tmp_path: Path):
    tool = promtool()
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts-under-test.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = subprocess.run([tool, "test", "rules", UNIT_TESTS.name], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_and_runbook():
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules():
        assert rule["alert"].startswith("CFSign"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["runbook_url"].startswith("ops/runbook.md#"), rule["alert"]


def github_anchor(heading: str) -> str:
    anchor = heading.strip().lower()
    anchor = re.sub(r"[^\w\- ]", "", anchor)
    return anchor.replace(" ", "-")


def test_runbook_urls_name_existing_runbook_sections():
    anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", RUNBOOK.read_text(), re.M)}
    for rule in rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: ops/runbook.md has no section #{anchor}"


def test_the_brief_s_alerts_are_all_there():
    """The situations an operator must hear about, each covered by an alert on the right metric."""
    by_name = {r["alert"]: r["expr"] for r in rules()}
    wanted = {
        "CFSignBacklogGrowing": "cfsign_queue_depth",
        "CFSignBacklogHigh": "cfsign_queue_depth",
        "CFSignNoLiveWorker": "up{",
        "CFSignMixedKeyGroupVersions": "cfsign_keygroup_version",
        "CFSignKeyGroupRefused": "cfsign_keygroup_refused",
        "CFSignDeadJobs": 'outcome="dead"',
        "CFSignErrorRatioHigh": 'outcome="error"',
        "CFSignClockSkew": "abs(cfsign_clock_skew_seconds) > 1",
        "CFSignRedisEvicting": "cfsign_redis_evicting",
    }
    for name, fragment in wanted.items():
        assert name in by_name, f"missing alert {name}"
        assert fragment in by_name[name], f"{name}: expected {fragment!r} in {by_name[name]!r}"


def test_only_ops_prometheus_files_start_a_line_with_groups():
    """CLI.md: the files under ops/prometheus/ are the only ones under ops/ with a `groups:` line."""
    offenders = []
    for path in OPS.rglob("*"):
        if path.is_file() and not path.is_relative_to(OPS / "prometheus"):
            if any(line.startswith("groups:") for line in path.read_text(errors="replace").splitlines()):
                offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == []
    assert any(line.startswith("groups:") for line in RULES.read_text().splitlines())


# ---------------------------------------------------------------------------------------------
# Against a real worker's /metrics


def exposition(metrics: str) -> tuple[dict[str, str], dict[str, set[str]], dict[tuple[str, str], set[str]]]:
    """(family -> type, sample name -> label names, (family, label) -> values) of a scrape."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", metrics, re.M))
    labels: dict[str, set[str]] = {}
    values: dict[tuple[str, str], set[str]] = {}
    for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*?)\})? ", metrics, re.M):
        name, body = m.group(1), m.group(2) or ""
        pairs = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', body)
        labels.setdefault(name, set()).update(k for k, _ in pairs)
        for k, v in pairs:
            values.setdefault((name, k), set()).add(v)
    return types, labels, values


def test_metrics_are_served_and_every_name_starts_with_cfsign(scraped_worker):
    types, samples, _ = exposition(scraped_worker.metrics)
    assert types, scraped_worker.metrics[:2000]
    assert all(name.startswith("cfsign_") for name in types), sorted(types)
    brief = {
        "cfsign_jobs_total": "counter", "cfsign_sign_duration_seconds": "histogram",
        "cfsign_job_age_seconds": "histogram", "cfsign_batch_size": "histogram",
        "cfsign_queue_depth": "gauge", "cfsign_inflight_jobs": "gauge", "cfsign_dead_list_length": "gauge",
        "cfsign_redis_reconnects_total": "counter", "cfsign_keygroup_version": "gauge",
        "cfsign_keygroup_refusals_total": "counter", "cfsign_keygroup_refused": "gauge",
        "cfsign_clock_skew_seconds": "gauge", "cfsign_redis_evicting": "gauge",
    }
    for name, kind in brief.items():
        assert types.get(name) == kind, f"{name}: expected a {kind}, /metrics says {types.get(name)}"


def test_every_metric_and_label_in_the_rules_is_exported(scraped_worker):
    types, samples, values = exposition(scraped_worker.metrics)
    exported = set()
    for name, kind in types.items():
        exported.add(name)
        if kind == "histogram":
            exported.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    used = set()
    for rule in rules():
        expr = rule["expr"]
        for m in re.finditer(r"\b(cfsign_[a-z0-9_]+)\b(\{[^}]*\})?", expr):
            name, selector = m.group(1), m.group(2) or ""
            used.add(name)
            assert name in exported, f"{rule['alert']}: {name} is not on a worker's /metrics"
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector):
                assert label in samples.get(family, set()) | samples.get(name, set()), \
                    f"{rule['alert']}: {name} has no label {label}"
                if op == "=":
                    assert value in values.get((family, label), set()), \
                        f"{rule['alert']}: {name}{{{label}={value!r}}} never appears on /metrics"
                elif op == "=~":
                    for alternative in value.split("|"):
                        assert alternative in values.get((family, label), set()), \
                            f"{rule['alert']}: {label} value {alternative!r} never appears on /metrics"
        # `by (...)` labels on cfsign_ metrics other than Prometheus's own job/instance/le.
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                assert label in {"job", "instance", "le", "code", "outcome"}, f"{rule['alert']}: by ({label})"
    assert {"cfsign_queue_depth", "cfsign_keygroup_version", "cfsign_jobs_total"} <= used


def test_counters_moved_for_signed_refused_and_dead_jobs(scraped_worker):
    metrics = scraped_worker.metrics
    assert re.search(r'^cfsign_jobs_total\{outcome="ok",code=""\} 1$', metrics, re.M), metrics
    assert re.search(r'^cfsign_jobs_total\{outcome="error",code="invalid_url"\} 1$', metrics, re.M)
    assert re.search(r'^cfsign_jobs_total\{outcome="dead",code="invalid_job"\} 1$', metrics, re.M)
    assert re.search(r"^cfsign_keygroup_version 1(\.0)?$", metrics, re.M)


def test_healthz_and_readyz(scraped_worker):
    assert scraped_worker.healthz_before[0] == 200
    status, body = scraped_worker.readyz_before
    assert status == 503 and "key group" in body, scraped_worker.readyz_before
    status, body = scraped_worker.readyz_after
    assert status == 200 and "version 1" in body, scraped_worker.readyz_after
    assert scraped_worker.worker_exit == 0, "the worker should drain and exit 0 on SIGTERM"
