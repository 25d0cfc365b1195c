"""Fixtures of the hostile suite: a producer that wants to hurt the fleet (issue 13) against the
real `cfsign worker` binary ($CFSIGN_BIN) and real redis-server processes.

Each test gets its own namespace; Redis and workers are started on free 127.0.0.1 ports and
killed by pid at teardown, pass or fail. Helpers are in ../cfsign_support.py (shared by every
suite). Keys are made by openssl at test time (`test-only-*.pem`, mode 0600).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cfsign_support import WorkerFactory, make_redis, make_test_keys, unique_namespace


@pytest.fixture(scope="session")
def test_keys(tmp_path_factory):
    return make_test_keys(tmp_path_factory.mktemp("test-only-keys"))


@pytest.fixture
def redis_server(tmp_path: Path):
    """A fresh redis-server for one test (no persistence)."""
    server = make_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory):
    """One redis-server for a module's tests (each test still uses its own namespace)."""
    server = make_redis(tmp_path_factory.mktemp("redis-module"))
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _dump_logs_if_failed(node, factory: WorkerFactory) -> None:
    report = getattr(node, "report_call", None)
    if report is not None and report.failed:
        for w in factory.started:
            print(f"\n--- worker {w.worker_id} ({w.exit()}) stderr tail ---\n{w.log()[-3000:]}")


@pytest.fixture
def workers(cfsign_bin: Path, tmp_path: Path, request):
    """Starts `cfsign worker` processes for one test; all are killed at teardown."""
    factory = WorkerFactory(cfsign_bin, tmp_path)
    try:
        yield factory
    finally:
        factory.close()
        _dump_logs_if_failed(request.node, factory)


@pytest.fixture(scope="module")
def module_workers(cfsign_bin: Path, tmp_path_factory):
    """Like `workers`, shared by a module's tests; all are killed when the module ends."""
    factory = WorkerFactory(cfsign_bin, tmp_path_factory.mktemp("workers"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def ns(request) -> str:
    """A namespace of this test alone."""
    return unique_namespace(request.node.name, prefix="hostile")
