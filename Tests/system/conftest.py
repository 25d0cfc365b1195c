"""Fixtures of the system suite: the real `cfsign worker` binary against real `redis-server`s.

Every test gets its own namespace. The keys (made by openssl at test time, ``test-only-*.pem``,
mode 0600, never committed), `redis_server`, `module_redis`, `workers` and `module_workers` are
the shared fixtures of ../conftest.py (free loopback ports, stopped by pid at teardown, pass or
fail); this file adds the suite's own Redis variants. The helpers the tests call (pushing jobs,
collecting replies, ...) are in cfsign_system.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .cfsign_system import KeyEvents, RedisServer, make_redis, unique_namespace


@pytest.fixture
def redis_server_aof(tmp_path: Path):
    """A fresh redis-server with the AOF on and fsync on every write, so it can be restarted."""
    server = make_redis(tmp_path / "redis-aof", appendonly=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server_debug(tmp_path: Path):
    """A fresh redis-server that accepts DEBUG commands (DEBUG SLEEP stalls it on purpose)."""
    server = make_redis(tmp_path / "redis-debug", appendonly=False, extra_args=["--enable-debug-command", "yes"])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ns(request) -> str:
    """A namespace of this test alone."""
    return unique_namespace(request.node.name)


@pytest.fixture
def key_events(redis_server: RedisServer):
    """Records every write event of the test's redis-server (keyspace notifications)."""
    recorder = KeyEvents(redis_server)
    try:
        yield recorder
    finally:
        recorder.close()
