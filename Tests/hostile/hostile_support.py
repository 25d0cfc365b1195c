"""What several hostile tests do: start a worker that audits to {NS}:audit, push one attack and a
good job after it, and say what happened in words a failure message can carry."""

from __future__ import annotations

import json
import time

import pytest

from cfsign_support import CLOUDFRONT_HOST, audit_entries, dead_entries, encode, heartbeat, job, push, store_keygroup

DEADLINE = 15
HOST = CLOUDFRONT_HOST.split("://", 1)[1]


def start_worker(server, workers, ns, test_keys, env=None, key="ec", **kwargs):
    """A worker of `ns` signing with a test key, auditing every answered job to {NS}:audit."""
    r = server.client()
    store_keygroup(r, ns, [test_keys[key]])
    worker = workers.start(server, ns, env={"CFSIGN_AUDIT": "stream", **(env or {})}, **kwargs)
    return r, worker


def raw_job(ns: str, job_id: str, reply: str = "h", tail: str = "", **fields) -> bytes:
    """A job's bytes with `tail` (raw JSON text such as `,"expires_in":-0`) spliced in before the
    closing brace, so numbers reach the worker exactly as written (Python would print 1e300 as
    1e+300 and -0 as 0)."""
    text = encode(job(ns, job_id, reply=reply, **fields)).decode()
    return (text[:-1] + tail + "}").encode()


def outcome_of(r, ns: str, reply_key: str, job_id: str, worker, attack: str, timeout: float = DEADLINE) -> dict:
    """The reply to `job_id`, or its dead entry as {"dead": entry}; fails naming `attack` when the
    worker dies first or nothing comes within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for raw in r.lrange(reply_key, 0, -1):
            reply = json.loads(raw)
            if reply.get("id") == job_id:
                return reply
        for entry in dead_entries(r, ns):
            if f'"{job_id}"' in entry.get("job", ""):
                return {"dead": entry}
        if not worker.alive():
            pytest.fail(f"attack: {attack}; worker died with {worker.exit()} before job {job_id} was answered; "
                        f"log tail:\n{worker.log()[-1500:]}")
        if time.monotonic() >= deadline:
            pytest.fail(f"attack: {attack}; job {job_id} got no reply and no dead entry within {timeout} s "
                        f"(worker {worker.exit()})")
        time.sleep(0.02)


def audited(r, ns: str, job_id: str, worker, attack: str, timeout: float = 5) -> dict:
    """The audit entry of `job_id`; fails naming `attack` when it is not written in time."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in audit_entries(r, ns):
            if entry.get("id") == job_id:
                return entry
        if not worker.alive():
            pytest.fail(f"attack: {attack}; worker died with {worker.exit()} before the audit entry of {job_id} was written")
        if time.monotonic() >= deadline:
            pytest.fail(f"attack: {attack}; no audit entry for job {job_id} in {{{ns}}}:audit within {timeout} s")
        time.sleep(0.02)


def assert_still_the_same_worker(r, ns: str, worker, attack: str) -> None:
    """Alive, and the heartbeat still shows the pid it started with (not a restarted process)."""
    assert worker.alive(), f"attack: {attack}; worker died with {worker.exit()}; log tail:\n{worker.log()[-1500:]}"
    # A heartbeat may lapse for a moment on a loaded machine (TTL 1.5 s); it must come back.
    deadline = time.monotonic() + 5
    hb = heartbeat(r, ns, worker.worker_id)
    while hb is None and time.monotonic() < deadline and worker.alive():
        time.sleep(0.05)
        hb = heartbeat(r, ns, worker.worker_id)
    assert hb is not None and hb.get("pid") == worker.pid, f"attack: {attack}; heartbeat {hb} is not worker pid {worker.pid}"


def sign_good_job(r, ns: str, worker, attack: str, reply: str = "good") -> dict:
    """Pushes a good job now; it must be signed (the attack did not stall the worker)."""
    good_id = f"good-{time.monotonic_ns()}"
    push(r, ns, [job(ns, good_id, reply=reply, url=f"{CLOUDFRONT_HOST}/invoices/{good_id}.pdf")])
    reply = outcome_of(r, ns, f"{{{ns}}}:reply:{reply}", good_id, worker, f"{attack} (then a good job)")
    assert reply.get("ok") is True, f"attack: {attack}; the good job after it was not signed: {reply}"
    return reply
