"""The live settings of `cfsign worker` (worker-config/README.md, "Live settings"): log_level and
the signing policy follow the config file while the worker runs; a bad edit is not taken; every
other setting waits for a restart, and a flag still beats the file."""

from __future__ import annotations

import time

from .cfsign_system import CLOUDFRONT_HOST, collect, job, push, store_keygroup, unique_namespace, wait_until

HOST = CLOUDFRONT_HOST.split("://", 1)[1]


def start(redis_server, workers, test_keys, tmp_path, text: str, args: list[str] | None = None):
    ns = unique_namespace("reload")
    r = redis_server.client()
    store_keygroup(r, ns, [test_keys["rsa"]])
    path = tmp_path / "worker.conf"
    path.write_text(text)
    worker = workers.start(redis_server, ns, args=["--config", str(path), *(args or [])])
    return r, ns, path, worker


def answer(r, ns, url=f"{CLOUDFRONT_HOST}/invoices/1.pdf"):
    jid = f"j-{time.monotonic_ns()}"
    push(r, ns, [job(ns, jid, reply="live", url=url)])
    (reply,) = collect(r, f"{{{ns}}}:reply:live", 1, 20)
    assert reply["id"] == jid
    return reply


def rewrite(path, text: str) -> None:
    """Replaces the file the way editors do (a new file renamed over the old one)."""
    new = path.with_suffix(".new")
    new.write_text(text)
    new.replace(path)


def test_signing_policy_follows_the_config_file(redis_server, workers, test_keys, tmp_path):
    r, ns, path, worker = start(redis_server, workers, test_keys, tmp_path, "allowed_hosts = elsewhere.example.com  # not yet\n")
    reply = answer(r, ns)
    assert reply.get("error", {}).get("code") == "policy_denied", reply

    rewrite(path, f"allowed_hosts = {HOST}\n")
    wait_until(lambda: "config file reloaded" in worker.log(), 20, what="a `config file reloaded` log line")
    assert "changed=allowed_hosts" in worker.log(), worker.log()[-2000:]
    reply = answer(r, ns)
    assert reply["ok"] is True, reply
    assert worker.alive()


def test_log_level_follows_the_config_file(redis_server, workers, test_keys, tmp_path):
    # audit = log writes one info line per job: hidden at warning, shown once the file says info.
    r, ns, path, worker = start(redis_server, workers, test_keys, tmp_path, "log_level = warning\naudit = log\n")
    assert answer(r, ns)["ok"] is True
    assert audit_lines(worker) == [], worker.log()[-2000:]

    rewrite(path, "log_level = info\naudit = log\n")
    wait_until(lambda: "config file reloaded" in worker.log(), 20, what="a `config file reloaded` log line")
    assert answer(r, ns)["ok"] is True
    wait_until(lambda: audit_lines(worker), 10, what="an info-level audit line")


def audit_lines(worker) -> list[str]:
    return [line for line in worker.log().splitlines() if line.endswith("] audit")]


def test_a_bad_edit_is_not_taken_and_the_policy_in_use_stays(redis_server, workers, test_keys, tmp_path):
    r, ns, path, worker = start(redis_server, workers, test_keys, tmp_path, f"allowed_hosts = {HOST}\n")
    rewrite(path, f"allowed_hosts = elsewhere.example.com\nallowed_path_prefixes = invoices\n")
    line = wait_until(lambda: next((l for l in worker.log().splitlines() if "config file not reloaded" in l), None), 20,
                      what="a `config file not reloaded` warning")
    assert "allowed_path_prefixes" in line and f"{path} line 2" in line, line
    assert answer(r, ns)["ok"] is True, "the policy in use was dropped by a file that was refused"
    assert worker.alive()


def test_settings_read_at_start_wait_for_a_restart_and_a_flag_beats_the_file(redis_server, workers, test_keys, tmp_path):
    r, ns, path, worker = start(redis_server, workers, test_keys, tmp_path, "batch_size = 10\n", args=["--log-level", "info"])
    rewrite(path, "batch_size = 20\nlog_level = error\n")
    line = wait_until(lambda: next((l for l in worker.log().splitlines() if "read only at start" in l), None), 20,
                      what="a `restart the worker` warning")
    assert "batch_size" in line and "log_level" not in line, line
    # --log-level info still wins over the file's log_level = error: the reload line says so.
    reloaded = next(l for l in worker.log().splitlines() if "config file reloaded" in l)
    assert "log_level=info" in reloaded, reloaded
    assert answer(r, ns)["ok"] is True
