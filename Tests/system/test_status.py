"""`cfsign status` tells the truth (CLI.md): exit 0 only when at least one worker is live, every
live worker signs with the stored key-group version and none reports a refusal; exit 1 otherwise,
with the reason on stderr. And what a job gets while the stored group is refused."""

from __future__ import annotations

import json
import subprocess

from .cfsign_system import collect, job, push, store_keygroup, wait_until


def status(cfsign_bin, server, ns) -> subprocess.CompletedProcess:
    return subprocess.run([str(cfsign_bin), "status", "--redis", server.url, "--namespace", ns],
                          capture_output=True, text=True, timeout=30)


def test_status_fails_when_no_worker_is_live(cfsign_bin, redis_server, ns):
    out = status(cfsign_bin, redis_server, ns)
    assert out.returncode == 1 and "no live worker" in out.stderr, out


def test_status_fails_when_no_group_is_stored(cfsign_bin, redis_server, workers, ns):
    workers.start(redis_server, ns)
    out = status(cfsign_bin, redis_server, ns)
    assert out.returncode == 1 and "no key group stored" in out.stderr, out


def test_status_fails_with_the_refusal_when_every_worker_refuses_the_stored_group(cfsign_bin, redis_server, workers, ns, tmp_path):
    worker = workers.start(redis_server, ns)
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": "K1", "keys": [{"id": "K1", "private_key_file": str(tmp_path / "missing.pem")}]}))
    out = wait_until(lambda: (o := status(cfsign_bin, redis_server, ns)) and "refused" in o.stderr and o, 20, what="status to report the refusal")
    assert out.returncode == 1 and "missing.pem" in out.stderr and worker.worker_id in out.stderr, out
    # The job's answer and the worker's log say the stored group was refused, not that none is stored.
    push(r, ns, [job(ns, "refused-1", reply="st")])
    reply = collect(r, f"{{{ns}}}:reply:st", 1, 20)[0]
    assert reply["error"]["code"] == "no_signing_key" and "was refused" in reply["error"]["message"], reply
    assert "this worker has no group to sign with" in worker.log() and "in_use=none" not in worker.log()


def test_status_passes_once_every_live_worker_signs_with_the_stored_group(cfsign_bin, redis_server, workers, ns, test_keys):
    workers.start(redis_server, ns)
    store_keygroup(redis_server.client(), ns, [test_keys["ec"]])
    out = wait_until(lambda: (o := status(cfsign_bin, redis_server, ns)).returncode == 0 and o, 20, what="status to pass")
    assert "all on key-group version 1" in out.stdout


def test_status_json_carries_the_verdict_and_its_reason(cfsign_bin, redis_server, workers, ns):
    workers.start(redis_server, ns)
    out = subprocess.run([str(cfsign_bin), "status", "--json", "--redis", redis_server.url, "--namespace", ns],
                         capture_output=True, text=True, timeout=30)
    doc = json.loads(out.stdout)
    assert out.returncode == 1 and doc["ok"] is False and "no key group stored" in doc["problem"], out
