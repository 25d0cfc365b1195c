"""The heartbeat (PROTOCOL.md, "Heartbeat"): `{NS}:worker:<id>`, a JSON object with a TTL."""

from __future__ import annotations

import json
import time

from .cfsign_system import heartbeat, job, push, store_keygroup, wait_heartbeat

CONTRACT_FIELDS = {
    "id", "host", "pid", "started_at", "seen_at", "jobs", "errors", "dead",
    "keygroup_version", "keygroup_refusal", "state", "reconnects",
}


def test_heartbeat_has_the_contract_fields_a_ttl_and_moving_counters(redis_server, workers, ns, test_keys):
    r = redis_server.client()
    t0 = int(time.time() * 1000)
    store_keygroup(r, ns, [test_keys["ec"]])
    worker = workers.start(redis_server, ns)
    key = worker.heartbeat_key

    first = wait_heartbeat(r, ns, worker.worker_id, lambda hb: True, 10, "the first heartbeat")
    raw = r.get(key)
    assert json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode() == raw, "not compact JSON"
    assert CONTRACT_FIELDS <= set(first), CONTRACT_FIELDS - set(first)
    assert first["id"] == worker.worker_id
    assert isinstance(first["host"], str) and first["host"]
    assert first["pid"] == worker.pid
    now = int(time.time() * 1000)
    assert isinstance(first["started_at"], int) and t0 - 1000 <= first["started_at"] <= now
    assert isinstance(first["seen_at"], int) and first["started_at"] <= first["seen_at"] <= now + 1000
    assert (first["jobs"], first["errors"], first["dead"]) == (0, 0, 0)
    assert first["keygroup_version"] == 1
    assert first["keygroup_refusal"] is None
    assert first["state"] == "running"
    assert first["reconnects"] == 0
    pttl = r.pttl(key)
    assert 0 < pttl <= 1500, f"heartbeat TTL {pttl} ms; the configured TTL is 1.5 s"
    assert r.sismember(f"{{{ns}}}:workers", worker.worker_id)

    push(r, ns, [
        job(ns, "hb-ok", reply="hb"),                          # answered ok -> jobs
        job(ns, "hb-err", reply="hb", hash="MD5"),             # answered with an error -> errors
        b"not json",                                           # dead list -> dead
    ])
    moved = wait_heartbeat(r, ns, worker.worker_id, lambda hb: (hb["jobs"], hb["errors"], hb["dead"]) == (1, 1, 1),
                           20, "jobs/errors/dead = 1/1/1")
    assert moved["seen_at"] > first["seen_at"]
    assert moved["started_at"] == first["started_at"]
    assert 0 < r.pttl(key) <= 1500


def test_heartbeat_shows_a_refused_key_group_and_the_version_still_in_use(redis_server, workers, ns, test_keys, tmp_path):
    r = redis_server.client()
    store_keygroup(r, ns, [test_keys["ec"]])
    worker = workers.start(redis_server, ns)
    missing = tmp_path / "test-only-missing.pem"
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 2, "active": "KMISSING", "keys": [{"id": "KMISSING", "private_key_file": str(missing)}]}))

    hb = wait_heartbeat(r, ns, worker.worker_id, lambda hb: hb["keygroup_refusal"] is not None, 20, "a key-group refusal")
    assert hb["keygroup_version"] == 1
    assert hb["keygroup_refusal"]["version"] == 2
    assert isinstance(hb["keygroup_refusal"]["reason"], str) and hb["keygroup_refusal"]["reason"]
    # Still signing with version 1.
    push(r, ns, [job(ns, "still-1", reply="still")])
    got = r.blpop([f"{{{ns}}}:reply:still"], timeout=20)
    assert got is not None
    reply = json.loads(got[1])
    assert reply["ok"] is True and reply["key_id"] == test_keys["ec"].key_id
    assert heartbeat(r, ns, worker.worker_id)["keygroup_version"] == 1
