"""Fixtures of the ops suite: the deployment files under ops/ checked with the tools that consume
them (promtool, systemd-analyze, kubernetes-validate, redis-server) and against the real binary.

Keys are generated at test time into temporary folders (mode 0600); none is ever committed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import redis as redis_py

from .ops_support import (
    DEFAULT_BIN,
    REPO_ROOT,
    RedisServer,
    WorkerInterface,
    free_port,
    http_get,
    make_key,
    run,
    start_worker,
    wait_until,
    worker_interface,
)




@pytest.fixture(scope="session")
def worker_help(cfsign_bin: Path) -> WorkerInterface:
    """The flags and settings `cfsign worker --help` lists."""
    return worker_interface(cfsign_bin)


class ScrapedWorker:
    """What a real worker served over HTTP, before and after it had a key group."""

    def __init__(self) -> None:
        self.healthz_before: tuple[int, str] = (0, "")
        self.readyz_before: tuple[int, str] = (0, "")
        self.readyz_after: tuple[int, str] = (0, "")
        self.metrics: str = ""
        self.worker_exit: int | None = None


@pytest.fixture(scope="session")
def scraped_worker(cfsign_bin: Path, tmp_path_factory) -> ScrapedWorker:
    """Runs redis-server and `cfsign worker --http-address 127.0.0.1:<port>`; records /healthz and
    /readyz before any key group exists, stores a group with a mode-0600 key file, waits for
    /readyz 200, signs one job, one refused job and one garbage job (so every kind of counter
    moved), then scrapes /metrics and stops both."""
    folder = tmp_path_factory.mktemp("scraped-worker")
    key = make_key(cfsign_bin, folder / "keys", "KOPSTESTONLY1")
    redis = RedisServer(folder / "redis", ["--appendonly", "no"]).start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = start_worker(cfsign_bin, folder, ["--redis", redis.url(), "--http-address", f"127.0.0.1:{port}"])
    seen = ScrapedWorker()
    try:
        seen.healthz_before = wait_until(lambda: (r := http_get(base + "/healthz"))[0] == 200 and r,
                                         15, "/healthz to answer 200")
        # Connected to Redis but no key group yet: not ready.
        seen.readyz_before = wait_until(lambda: (r := http_get(base + "/readyz"))[0] == 503 and "key group" in r[1] and r,
                                        10, "/readyz to say 503 for want of a key group")
        group = folder / "group.json"
        group.write_text(json.dumps({"active": "KOPSTESTONLY1",
                                     "keys": [{"id": "KOPSTESTONLY1", "private_key_file": str(key)}]}))
        stored = run([str(cfsign_bin), "keygroup", "set", str(group), "--redis", redis.url()])
        assert stored.returncode == 0, stored.stderr
        seen.readyz_after = wait_until(lambda: (r := http_get(base + "/readyz"))[0] == 200 and r,
                                       10, "/readyz to answer 200 once a key group is stored")
        client = redis_py.Redis(host="127.0.0.1", port=redis.port)
        reply_to = "{cfsign}:reply:ops-metrics"
        client.lpush("{cfsign}:jobs",
                     json.dumps({"id": "ok", "reply_to": reply_to, "url": "https://d111111abcdef8.cloudfront.net/a",
                                 "expires_in": 60, "enqueued_at_ms": int(time.time() * 1000)}),
                     json.dumps({"id": "refused", "reply_to": reply_to,
                                 "url": "https://d111111abcdef8.cloudfront.net/a#fragment", "expires_in": 60}),
                     "not json")
        assert client.blpop(reply_to, timeout=10) is not None
        assert client.blpop(reply_to, timeout=10) is not None
        wait_until(lambda: client.llen("{cfsign}:dead") == 1, 10, "the garbage job to reach the dead list")
        client.close()

        def counted() -> str | None:
            status, body = http_get(base + "/metrics")
            return body if status == 200 and 'outcome="dead"' in body and "cfsign_dead_list_length 1" in body else None

        seen.metrics = wait_until(counted, 10, "/metrics to count the jobs and see the dead list")
    finally:
        seen.worker_exit = worker.stop()
        redis.stop()
    return seen
