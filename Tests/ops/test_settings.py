"""Every worker setting the ops files mention, as a CFSIGN_* variable or a worker.conf key, is one
the worker really reads (`cfsign worker --help` lists them), and worker-config/worker.conf, which
operators install as /etc/cfsign/worker.conf, names only real settings."""

from __future__ import annotations

import re

from .ops_support import OPS, REPO_ROOT, config_keys, environment_names_in


def test_every_cfsign_variable_under_ops_is_a_setting(worker_help):
    mentioned: dict[str, set[str]] = {}
    for path in OPS.rglob("*"):
        if path.is_file():
            for name in environment_names_in(path.read_text(errors="replace")):
                mentioned.setdefault(name, set()).add(str(path.relative_to(REPO_ROOT)))
    assert "CFSIGN_REDIS" in mentioned
    unknown = {name: sorted(paths) for name, paths in mentioned.items() if name not in worker_help.environment_names}
    assert not unknown, f"not worker settings: {unknown}"


def test_settings_named_in_backticks_under_ops_are_real(worker_help):
    """`key = value` snippets in the docs (e.g. `allow_group_readable_keys = true`)."""
    for path in OPS.rglob("*.md"):
        for key in re.findall(r"`([a-z][a-z0-9_]*) = [^`]*`", path.read_text()):
            assert key in worker_help.settings, f"{path.relative_to(REPO_ROOT)} names setting {key}"


def test_worker_conf_names_only_real_settings(worker_help):
    keys = config_keys((REPO_ROOT / "worker-config" / "worker.conf").read_text())
    assert {"redis", "namespace", "batch_size"} <= set(keys)
    unknown = set(keys) - worker_help.settings
    assert not unknown, f"worker-config/worker.conf names unknown settings: {sorted(unknown)}"
