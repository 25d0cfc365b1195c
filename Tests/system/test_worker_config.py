"""`cfsign worker` settings (CLI.md, "cfsign worker"): a bad setting stops it at once, naming the
setting; with no config file at all it runs on defaults."""

from __future__ import annotations

import signal
import subprocess

import pytest

from .cfsign_system import clean_environment, free_port, wait_until

CASES = [
    # (case, extra args, environment, config file text, what stderr must name)
    ("concurrency_zero", ["--concurrency", "0"], {}, None, "concurrency"),
    ("unknown_setting_in_config_file", [], {}, "namespace = fine\nno_such_setting = 1\n", "no_such_setting"),
    ("batch_size_not_a_number", [], {"CFSIGN_BATCH_SIZE": "abc"}, None, "CFSIGN_BATCH_SIZE"),
    ("http_max_connections_zero", ["--http-max-connections", "0"], {}, None, "http_max_connections"),
    ("http_idle_timeout_negative", [], {"CFSIGN_HTTP_IDLE_TIMEOUT": "-1"}, None, "CFSIGN_HTTP_IDLE_TIMEOUT"),
    ("http_header_timeout_not_a_number", [], {}, "http_header_timeout = soon\n", "http_header_timeout"),
]


@pytest.mark.parametrize("case,args,env,config,named", CASES, ids=[c[0] for c in CASES])
def test_bad_setting_exits_non_zero_at_once_naming_the_setting(cfsign_bin, tmp_path, case, args, env, config, named):
    # Nothing listens on this port: a worker that got past its settings would wait for Redis
    # instead of exiting, and the timeout below would catch it.
    command = [str(cfsign_bin), "worker", "--redis", f"redis://127.0.0.1:{free_port()}", *args]
    if config is not None:
        path = tmp_path / "worker.conf"
        path.write_text(config)
        command += ["--config", str(path)]
    try:
        done = subprocess.run(command, env=clean_environment(env), capture_output=True, stdin=subprocess.DEVNULL, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"cfsign worker with a bad setting ({case}) did not exit within 15 s")
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0, stderr
    assert named in stderr, stderr
    assert done.stdout == b""


def test_worker_runs_with_no_config_file_and_default_settings(redis_server, workers):
    r = redis_server.client()
    worker = workers.spawn(["--redis", redis_server.url], "defaults", "cfsign")  # no --config, no CFSIGN_*

    members = wait_until(lambda: r.smembers("{cfsign}:workers") or not worker.alive(), 20, what="registration in {cfsign}:workers")
    assert worker.alive(), worker.log()[-2000:]
    (member,) = members
    worker_id = member.decode()
    assert ":" not in worker_id and f"-{worker.pid}-" in worker_id, worker_id  # <host>-<pid>-<random hex>
    pttl = r.pttl(f"{{cfsign}}:worker:{worker_id}")
    assert 0 < pttl <= 15_000, f"heartbeat TTL {pttl} ms: at most 3 intervals of at most 5 s"

    worker.send(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.log()[-2000:]
    assert not r.sismember("{cfsign}:workers", worker_id)
    assert not r.exists(f"{{cfsign}}:worker:{worker_id}")
