"""The worker's threads carry names the OS shows (`top -H`, `perf report --sort comm`,
/proc/PID/task/*/comm), so an operator can tell where a busy worker's CPU goes: take, sign,
reply, heartbeat, key-group watch, and the span export thread when traces are on."""

from __future__ import annotations

from pathlib import Path

from .cfsign_system import store_keygroup, wait_until
from cfsign_support import closed_port


def thread_names(pid: int) -> set[str]:
    return {(task / "comm").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir()}


def test_each_pipeline_thread_is_named(workers, redis_server, ns, test_keys):
    store_keygroup(redis_server.client(), ns, [test_keys["ec"]])
    # A dead collector: the span thread starts too (and costs nothing; docs/TRACING.md).
    worker = workers.start(redis_server, ns, env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}"})
    expected = {"cfsign-main", "cfsign-take", "cfsign-sign", "cfsign-reply", "cfsign-beat", "cfsign-keygroup", "cfsign-spans"}
    # Each thread names itself once it runs, and some start only once the worker has registered.
    wait_until(lambda: expected <= thread_names(worker.pid), 10,
               what=f"threads named {sorted(expected)}")
