"""Jobs that cannot be answered go to `{NS}:dead` in the contract's shape, and a job can never make
the worker write anywhere but `{NS}:reply:*` and `{NS}:dead` (PROTOCOL.md, "Job", "Reply")."""

from __future__ import annotations

import json
import time

from .cfsign_system import (
    assert_writes_confined,
    CLOUDFRONT_HOST,
    ERROR_CODES,
    dead_entries,
    encode,
    job,
    push,
    store_keygroup,
    wait_heartbeat,
    wait_until,
)

DEADLINE = 20


def now_ms() -> int:
    return int(time.time() * 1000)


def check_dead_entry(entry: dict, worker_id: str, t0: int, t1: int) -> None:
    """The contract's dead entry: error.code/message, job excerpt, worker, at (epoch ms)."""
    assert {"error", "job", "worker", "at"} <= set(entry), entry
    assert set(entry["error"]) >= {"code", "message"}, entry
    assert entry["error"]["code"] in ERROR_CODES, entry
    assert isinstance(entry["error"]["message"], str) and entry["error"]["message"]
    assert isinstance(entry["job"], str) and len(entry["job"].encode()) <= 1024
    assert entry["worker"] == worker_id
    assert isinstance(entry["at"], int) and t0 - 1000 <= entry["at"] <= t1 + 1000, (entry["at"], t0, t1)


def test_unanswerable_jobs_go_to_the_dead_list_and_nothing_is_written_to_their_reply_to(redis_server, workers, ns, test_keys, key_events):
    r = redis_server.client()
    store_keygroup(r, ns, [test_keys["ec"]])
    worker = workers.start(redis_server, ns)
    base = {"url": f"{CLOUDFRONT_HOST}/x.pdf", "expires_in": 600}
    big = encode({"id": "big", "reply_to": f"{{{ns}}}:reply:big", **base, "pad": "x" * (70 * 1024)})
    bad = {
        "not_json": b"this is not json {",
        "no_id": encode({"reply_to": f"{{{ns}}}:reply:noid", **base}),
        "no_reply_to": encode({"id": "noreply", **base}),
        "reply_to_jobs": encode({"id": "intojobs", "reply_to": f"{{{ns}}}:jobs", **base}),
        "reply_to_other": encode({"id": "other", "reply_to": "other:key", **base}),
        "reply_to_other_ns": encode({"id": "otherns", "reply_to": "{someone-else}:reply:x", **base}),
        "too_big": big,
    }
    forbidden = ["other:key", "{someone-else}:reply:x", f"{{{ns}}}:reply:big", f"{{{ns}}}:reply:noid"]
    t0 = now_ms()
    push(r, ns, bad.values())

    wait_until(lambda: r.llen(f"{{{ns}}}:dead") >= len(bad), DEADLINE, what="every bad job on the dead list")
    wait_heartbeat(r, ns, worker.worker_id, lambda hb: hb["dead"] == len(bad), DEADLINE, "dead counter")
    t1 = now_ms()
    entries = dead_entries(r, ns)
    assert len(entries) == len(bad), "a reply pushed into the queue would have come back as another dead entry"
    for entry in entries:
        check_dead_entry(entry, worker.worker_id, t0, t1)

    by_text = {e["job"]: e for e in entries}
    for name, raw in bad.items():
        excerpt = raw[:1024].decode()
        assert excerpt in by_text, f"{name} is not on the dead list"
    assert by_text[bad["not_json"].decode()]["error"]["code"] == "invalid_job"
    assert by_text[big[:1024].decode()]["error"]["code"] == "invalid_job"

    assert r.llen(f"{{{ns}}}:jobs") == 0
    assert not r.exists(worker.inflight_key)
    for key in forbidden:
        assert not r.exists(key), key
    events = key_events.snapshot()
    assert ("lpush", f"{{{ns}}}:jobs".encode()) in events, "the event recorder saw nothing"
    assert_writes_confined(events, ns, [worker.worker_id], forbidden)
    assert not any(e == "rpush" for e, _ in events), "no job here may be answered"


def test_dead_list_is_trimmed_to_its_configured_length(redis_server, workers, ns, test_keys):
    r = redis_server.client()
    store_keygroup(r, ns, [test_keys["ec"]])
    worker = workers.start(redis_server, ns, env={"CFSIGN_DEAD_LIST_LENGTH": "5"})
    garbage = [f"garbage #{i}".encode() for i in range(20)]
    push(r, ns, garbage)

    wait_heartbeat(r, ns, worker.worker_id, lambda hb: hb["dead"] == 20, DEADLINE, "20 dead jobs")
    assert r.llen(f"{{{ns}}}:dead") == 5
    # LPUSH + LTRIM keeps the newest entries.
    assert {e["job"] for e in dead_entries(r, ns)} == {g.decode() for g in garbage[-5:]}
    assert r.llen(f"{{{ns}}}:jobs") == 0
    assert not r.exists(worker.inflight_key)


def test_reply_to_holding_a_string_sends_the_job_to_the_dead_list_and_leaves_the_string(redis_server, workers, ns, test_keys):
    r = redis_server.client()
    store_keygroup(r, ns, [test_keys["ec"]])
    worker = workers.start(redis_server, ns)
    string_key = f"{{{ns}}}:reply:a-string"
    r.set(string_key, b"keep me")
    raw = encode(job(ns, "wrongtype-1", reply="a-string"))
    push(r, ns, [raw, job(ns, "after-1", reply="fine")])

    wait_until(lambda: r.llen(f"{{{ns}}}:dead") >= 1, DEADLINE, what="the job on the dead list")
    (entry,) = dead_entries(r, ns)
    check_dead_entry(entry, worker.worker_id, 0, now_ms())
    assert entry["job"] == raw.decode()
    assert r.get(string_key) == b"keep me"
    assert r.ttl(string_key) == -1, "the string key must not get an EXPIRE"
    # The worker carries on: the next job is answered.
    wait_until(lambda: r.llen(f"{{{ns}}}:reply:fine") == 1, DEADLINE, what="the next job's reply")
    assert json.loads(r.lindex(f"{{{ns}}}:reply:fine", 0))["id"] == "after-1"
    wait_heartbeat(r, ns, worker.worker_id, lambda hb: hb["dead"] == 1 and hb["jobs"] == 1, DEADLINE, "counters")
    assert r.llen(f"{{{ns}}}:jobs") == 0
    assert not r.exists(worker.inflight_key)
