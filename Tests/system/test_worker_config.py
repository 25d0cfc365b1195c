"""`cfsign worker` settings (CLI.md, "cfsign worker"): a bad setting stops it at once, naming the
setting; an unknown one is ignored with a warning; with no config file at all it runs on defaults."""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.request

import pytest

from .cfsign_system import clean_environment, free_port, wait_until

CASES = [
    # (case, extra args, environment, config file text, what stderr must name)
    ("concurrency_zero", ["--concurrency", "0"], {}, None, "concurrency"),
    ("batch_size_not_a_number", [], {"CFSIGN_BATCH_SIZE": "abc"}, None, "CFSIGN_BATCH_SIZE"),
    ("http_max_connections_zero", ["--http-max-connections", "0"], {}, None, "http_max_connections"),
    ("http_idle_timeout_negative", [], {"CFSIGN_HTTP_IDLE_TIMEOUT": "-1"}, None, "CFSIGN_HTTP_IDLE_TIMEOUT"),
    ("http_header_timeout_not_a_number", [], {}, "http_header_timeout = soon\n", "http_header_timeout"),
    # A setting that has only had a flag since every setting got one: named as the flag.
    ("reply_ttl_flag_not_a_duration", ["--reply-ttl", "x"], {}, None, "flag --reply-ttl"),
    # The trace exporter's OTEL_* variables (docs/TRACING.md), checked before Redis is dialled.
    ("otlp_grpc", [], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, None, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
    ("otlp_sampler_unknown", [], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_SAMPLER": "sometimes"}, None, "OTEL_TRACES_SAMPLER"),
    ("otlp_timeout_not_a_number", [], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, None, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ("otlp_endpoint_not_http", [], {"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"}, None, "OTEL_EXPORTER_OTLP_ENDPOINT"),
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


def test_every_setting_of_the_table_has_a_flag(cfsign_bin):
    # The settings table's keys as `--help` lists them (WorkerConfiguration.keys), against the
    # flags swift-argument-parser shows: a new setting without a flag fails here.
    done = subprocess.run([str(cfsign_bin), "worker", "--help"], env=clean_environment({}), capture_output=True, timeout=15)
    assert done.returncode == 0, done.stderr
    help_text = done.stdout.decode()
    text = " ".join(help_text.split())
    listed = re.search(r"Settings \(file key / CFSIGN_ variable\): (.*?)\. See", text)
    assert listed, text
    keys = [k.strip() for k in listed.group(1).split(",")]
    assert len(keys) >= 36, keys
    # Only where an option's own entry starts, not a mention in another one's help.
    flags = set(re.findall(r"^ +(?:-\w, )?--([a-z0-9-]+)", help_text, re.M))
    missing = [k for k in keys if k.replace("_", "-") not in flags]
    assert not missing, f"settings without a flag: {missing}"


def test_a_flag_beats_the_environment_and_the_config_file(cfsign_bin, tmp_path):
    # command_timeout 1 from the file and the environment would make the default block_timeout (2)
    # too long; the flag's 3 wins over both, and the cross-setting check names the flag's value.
    path = tmp_path / "worker.conf"
    path.write_text("command_timeout = 1\n")
    command = [str(cfsign_bin), "worker", "--redis", f"redis://127.0.0.1:{free_port()}", "--config", str(path), "--command-timeout", "3"]
    done = subprocess.run(command, env=clean_environment({"CFSIGN_COMMAND_TIMEOUT": "1"}), capture_output=True, stdin=subprocess.DEVNULL, timeout=15)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0, stderr
    assert "command_timeout (3.0)" in stderr, stderr


def test_an_unknown_flag_is_a_usage_error_exit_64(cfsign_bin):
    done = subprocess.run([str(cfsign_bin), "worker", "--bogus"], env=clean_environment({}), capture_output=True, stdin=subprocess.DEVNULL, timeout=15)
    assert done.returncode == 64, done.stderr


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


def _worker_with_config(workers, redis_server, tmp_path, text: str, label: str):
    path = tmp_path / f"{label}.conf"
    path.write_text(text)
    return workers.spawn(["--redis", redis_server.url, "--config", str(path)], label, "cfsign")


def test_config_file_accepts_end_of_line_comments(redis_server, workers, tmp_path):
    # The README's signing-policy block has `key = value  # note` lines; pasted into a config file
    # they must work, not stop the worker.
    r = redis_server.client()
    worker = _worker_with_config(workers, redis_server, tmp_path, (
        "namespace = commented   # the key prefix\n"
        "worker_id = eol-comment-1\t# tab before the note\n"
        "resource_wildcards = within-prefix     # never a bare *\n"
    ), "eol-comment")
    members = wait_until(lambda: r.smembers("{commented}:workers") or not worker.alive(), 20, what="registration in {commented}:workers")
    assert worker.alive(), f"a config file with end-of-line comments stopped the worker:\n{worker.log()[-2000:]}"
    assert members == {b"eol-comment-1"}, f"the comment became part of a value: {members}"


def test_unknown_keys_from_the_file_and_the_environment_are_ignored_with_a_warning(redis_server, workers, tmp_path):
    # Issue 14: an unknown key is treated alike from every source, and variables such as
    # CFSIGN_BIN are not settings, so it warns (naming the source and the nearest key) instead of
    # refusing to start.
    path = tmp_path / "typo.conf"
    path.write_text("worker_id = typo-1\nbatchsize = 5\n")
    r = redis_server.client()
    worker = workers.spawn(["--redis", redis_server.url, "--config", str(path)], "typo", "cfsign", env={"CFSIGN_MAX_LIFETME": "1h"})
    wait_until(lambda: r.smembers("{cfsign}:workers") or not worker.alive(), 20, what="registration in {cfsign}:workers")
    assert worker.alive(), f"an unknown key stopped the worker:\n{worker.log()[-2000:]}"
    log = worker.log()
    assert f'{path} line 2: unknown setting "batchsize", ignored; did you mean batch_size?' in log, log[-2000:]
    assert 'environment variable CFSIGN_MAX_LIFETME: unknown setting "max_lifetme", ignored; did you mean max_lifetime?' in log, log[-2000:]


def test_config_file_keeps_a_hash_inside_a_quoted_value(redis_server, workers, tmp_path):
    r = redis_server.client()
    worker = _worker_with_config(workers, redis_server, tmp_path, 'worker_id = "w#1"   # quoted, then a note\n', "quoted-hash")
    members = wait_until(lambda: r.smembers("{cfsign}:workers") or not worker.alive(), 20, what="registration in {cfsign}:workers")
    assert worker.alive(), worker.log()[-2000:]
    assert members == {b"w#1"}, f"a # inside quotes must stay in the value: {members}"


def test_config_file_keeps_a_spaced_hash_inside_quotes_as_part_of_the_value(cfsign_bin, tmp_path):
    # log_level refuses the value and its message shows it: the " #2" must still be there.
    path = tmp_path / "worker.conf"
    path.write_text('log_level = "loud #2"   # a note\n')
    done = subprocess.run([str(cfsign_bin), "worker", "--redis", f"redis://127.0.0.1:{free_port()}", "--config", str(path)],
                          env=clean_environment({}), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=15)
    assert done.returncode != 0, done.stderr
    assert "log_level = loud #2 " in done.stderr, f"the quoted value lost its ' #2': {done.stderr}"


def test_config_file_that_is_a_directory_is_named_as_such(cfsign_bin, tmp_path):
    done = subprocess.run([str(cfsign_bin), "worker", "--redis", f"redis://127.0.0.1:{free_port()}", "--config", str(tmp_path)],
                          env=clean_environment({}), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=15)
    assert done.returncode != 0
    assert "is a directory" in done.stderr and "NSCocoaErrorDomain" not in done.stderr, done.stderr


def test_worker_logs_the_port_it_bound_for_http_address_port_zero(redis_server, workers):
    worker = workers.spawn(["--redis", redis_server.url, "--http-address", "127.0.0.1:0"], "http-port-0", "cfsign")
    line = wait_until(lambda: next((l for l in worker.log().splitlines() if "listening on 127.0.0.1:" in l), None) or (not worker.alive() and "exited"),
                      20, what="a `listening on 127.0.0.1:PORT` log line")
    assert worker.alive(), worker.log()[-2000:]
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))
    assert port != 0, f"the log names port 0, not the bound one: {line}"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert response.status == 200, f"the logged port {port} does not serve /healthz"
