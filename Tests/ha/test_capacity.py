"""The capacity model's inputs on a single redis-server (the cluster's are measured in
test_cluster.py): Redis commands, bytes and Redis CPU per job, for a backlog and for one job at
a time. Printed (pytest -s) and appended to $CFSIGN_HA_REPORT when set; docs/SCALING.md quotes them.
"""

from __future__ import annotations

import signal

import redis

from .ha_support import RedisNode, free_ports, keygroup_document, namespace, start_worker, wait_registered
from .measure import measure_jobs, report


def test_commands_and_bytes_per_job_on_a_single_server(procs, cfsign_bin, ec_key, tmp_path):
    (port,) = free_ports(1)
    node = RedisNode(procs, tmp_path / "redis", port, "redis-single")
    r = node.client()
    ns = namespace("single-measure")
    r.set(f"{{{ns}}}:keygroup", keygroup_document(ec_key))
    worker = start_worker(procs, cfsign_bin, node.url, ns, "w-single",
                          env={"CFSIGN_HEARTBEAT_INTERVAL": "2", "CFSIGN_HEARTBEAT_TTL": "6",
                               "CFSIGN_BLOCK_TIMEOUT": "2", "CFSIGN_KEYGROUP_POLL_INTERVAL": "5"})
    wait_registered(procs, worker, "w-single", ns, lambda key, member: r.sismember(key, member))
    figures = measure_jobs(redis.Redis(port=port, socket_timeout=10), r, ns, backlog=2000, trickle=200)
    report("single server", figures)
    assert figures["backlog"]["worker_commands_per_job"] < 1.5, figures
    assert figures["backlog"]["bytes_per_job"] < 2500, figures
    assert figures["trickle"]["worker_commands_per_job"] < 6, figures
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
