"""Fixtures of the high-availability suite: the real `cfsign worker` against Redis Sentinel (a master,
a replica and three redis-sentinel processes), Redis Cluster (three masters made with
`redis-cli --cluster create`) and a TLS-only redis-server reached through stunnel, all on loopback
ports and all started and killed (by pid) by the tests themselves.

A slower suite: it runs when CI=true (scripts/setup then installs redis-sentinel and stunnel4) or
when CFSIGN_HA_TESTS=1, and skips itself at once otherwise. Under CI a missing tool is a failure,
not a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .ha_support import DEFAULT_BIN, REPO_ROOT, Processes, make_ec_key

HERE = Path(__file__).resolve().parent
ENABLED = os.environ.get("CI") == "true" or os.environ.get("CFSIGN_HA_TESTS") == "1"
TOOLS = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "redis-sentinel": "redis-sentinel",
    "stunnel4": "stunnel4",
    "openssl": "openssl",
}


def pytest_collection_modifyitems(config, items):
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="Tests/ha (Redis Sentinel, Cluster, TLS) is a slower suite: it runs with CI=true or CFSIGN_HA_TESTS=1")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ha_tools() -> None:
    missing = [f"{tool} (apt {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        message = "missing: " + ", ".join(missing) + "; scripts/setup installs them when CI=true"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def cfsign_bin(ha_tools, cfsign_bin) -> Path:
    """The shared cfsign_bin (Tests/conftest.py), once this suite's tools are known to be there."""
    return cfsign_bin


@pytest.fixture(scope="session")
def ec_key(tmp_path_factory) -> Path:
    """A fresh P-256 key made by openssl (mode 0600); a test fixture only, never committed."""
    return make_ec_key(tmp_path_factory.mktemp("test-only-keys"))




@pytest.fixture
def procs(tmp_path: Path, request, ha_tools):
    """Every process of one test; all killed by pid at teardown, with log tails printed on failure."""
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.close()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print("\n" + p.tails())
