"""Key groups and rotation without restart (PROTOCOL.md "Key group and rotation"; rotation issue):
the fleet follows a new group within the poll interval even when the PUBLISH is lost, never signs
with a half-loaded group, refuses a broken group whole and keeps signing with the old one."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from .cfsign_system import collect, job, openssl, push, unique_namespace, wait_until

DEADLINE = 20


def group(version, active, *keys, **extra):
    """A key-group document; keys are (id, path) pairs or ready dicts."""
    entries = [k if isinstance(k, dict) else {"id": k[0], "private_key_file": str(k[1])} for k in keys]
    return json.dumps({"version": version, "active": active, "keys": entries, **extra})


def versions(r, ns, ids):
    out = {}
    for wid in ids:
        raw = r.get(f"{{{ns}}}:worker:{wid}")
        out[wid] = json.loads(raw)["keygroup_version"] if raw else None
    return out


def heartbeat(r, ns, wid):
    raw = r.get(f"{{{ns}}}:worker:{wid}")
    return json.loads(raw) if raw else {}


@pytest.fixture
def fleet(redis_server, workers, test_keys, tmp_path):
    ns = unique_namespace("rotate")
    r = redis_server.client()
    rsa, ec = test_keys["rsa"], test_keys["ec"]
    r.set(f"{{{ns}}}:keygroup", group(1, rsa.key_id, (rsa.key_id, rsa.path)))
    ws = [workers.start(redis_server, ns) for _ in range(2)]
    return r, ns, ws, rsa, ec, tmp_path


def test_under_load_a_rotation_without_publish_reaches_every_worker_and_new_jobs_use_the_new_key(fleet):
    r, ns, ws, rsa, ec, _ = fleet
    ids = [w.worker_id for w in ws]
    stop = threading.Event()
    pushed = []

    def produce():
        i = 0
        while not stop.is_set() and i < 20000:
            batch = [job(ns, f"load-{i + k}", reply="load") for k in range(20)]
            push(r, ns, batch)
            pushed.extend(j["id"] for j in batch)
            i += 20
            time.sleep(0.01)

    t = threading.Thread(target=produce)
    t.start()
    try:
        time.sleep(1)
        # SET only, no PUBLISH: the poll (0.5 s here) must pick it up.
        r.set(f"{{{ns}}}:keygroup", group(2, ec.key_id, (ec.key_id, ec.path), (rsa.key_id, rsa.path)))
        start = time.monotonic()
        wait_until(lambda: set(versions(r, ns, ids).values()) == {2}, 5, what="every worker on version 2")
        took = time.monotonic() - start
        # Jobs pushed from now on are taken after every worker reported version 2.
        after = [job(ns, f"after-{k}", reply="after") for k in range(200)]
        push(r, ns, after)
    finally:
        stop.set()
        t.join()
    replies = collect(r, f"{{{ns}}}:reply:after", 200, DEADLINE)
    assert all(x["ok"] and x["key_id"] == ec.key_id for x in replies)
    load = collect(r, f"{{{ns}}}:reply:load", len(pushed), 60)
    assert all(x["ok"] for x in load), [x for x in load if not x["ok"]][:3]
    assert {x["key_id"] for x in load} <= {rsa.key_id, ec.key_id}
    assert took < 3, f"fleet took {took:.1f} s to follow (poll interval 0.5 s, heartbeat 0.5 s)"


def broken_groups(rsa, ec, tmp_path):
    """(name, document) for each way a group can fail to load completely; all at version 2."""
    small = tmp_path / "test-only-rsa1024.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", str(small))
    ed = tmp_path / "test-only-ed25519.pem"
    openssl("genpkey", "-algorithm", "ED25519", "-out", str(ed))
    readable = tmp_path / "test-only-readable.pem"
    readable.write_bytes(ec.path.read_bytes())
    for p in (small, ed):
        os.chmod(p, 0o600)
    os.chmod(readable, 0o644)
    wrong_public = subprocess.run(["openssl", "pkey", "-in", str(rsa.path), "-pubout"], capture_output=True, check=True, text=True).stdout
    return [
        ("bad JSON", '{"version": 2, "active": '),
        ("missing file", group(2, "KMISSING", ("KMISSING", tmp_path / "nope.pem"))),
        ("a directory instead of a file", group(2, "KDIR", ("KDIR", tmp_path))),
        ("RSA-1024", group(2, "KSMALL", ("KSMALL", small))),
        ("ed25519", group(2, "KED", ("KED", ed))),
        ("group-readable key file", group(2, "KREAD", ("KREAD", readable))),
        ("active not among keys", group(2, "KOTHER", (ec.key_id, ec.path))),
        ("version not higher", group(1, ec.key_id, (ec.key_id, ec.path))),
        ("public key mismatch", group(2, ec.key_id, {"id": ec.key_id, "private_key_file": str(ec.path), "public_key_pem": wrong_public})),
        ("inline key without opt-in", group(2, "KINLINE", {"id": "KINLINE", "private_key_pem": ec.path.read_text()})),
    ]


def test_each_broken_group_is_refused_whole_and_signing_goes_on_with_the_old_group(fleet):
    r, ns, ws, rsa, ec, tmp_path = fleet
    w = ws[0]
    for name, document in broken_groups(rsa, ec, tmp_path):
        r.set(f"{{{ns}}}:keygroup", document)
        r.publish(f"{{{ns}}}:keygroup:changed", "2")
        def refused():
            hb = heartbeat(r, ns, w.worker_id)  # one read: the condition and the value agree
            return hb if (hb.get("keygroup_refusal") or {}).get("reason") else None

        hb = wait_until(refused, DEADLINE, what=f"refusal of {name}")
        reason = hb["keygroup_refusal"]["reason"]
        assert hb["keygroup_version"] == 1, name
        push(r, ns, [job(ns, "during-" + name.replace(" ", "-"), reply="during")])
        (reply,) = collect(r, f"{{{ns}}}:reply:during", 1, DEADLINE)
        assert reply["ok"] and reply["key_id"] == rsa.key_id, (name, reply)
        # Reset to the good group (same version: not a refusal) so the next case starts clean.
        r.set(f"{{{ns}}}:keygroup", group(1, rsa.key_id, (rsa.key_id, rsa.path)))
        r.publish(f"{{{ns}}}:keygroup:changed", "1")
        def cleared():
            hb = heartbeat(r, ns, w.worker_id)
            return bool(hb) and hb.get("keygroup_refusal") is None and hb.get("keygroup_version") == 1

        wait_until(cleared, DEADLINE, what="reset")
        assert reason, name
    # A later good group is accepted.
    r.set(f"{{{ns}}}:keygroup", group(3, ec.key_id, (ec.key_id, ec.path)))
    r.publish(f"{{{ns}}}:keygroup:changed", "3")
    wait_until(lambda: heartbeat(r, ns, w.worker_id).get("keygroup_version") == 3, DEADLINE, what="version 3")
    assert heartbeat(r, ns, w.worker_id)["keygroup_refusal"] is None


def test_the_refusal_reason_names_what_is_wrong(fleet):
    r, ns, ws, rsa, ec, tmp_path = fleet
    w = ws[0]
    expectations = {"missing file": "nope.pem", "RSA-1024": "RSA-1024", "group-readable key file": "mode",
                    "active not among keys": "KOTHER", "version not higher": "not higher",
                    "public key mismatch": "does not match", "inline key without opt-in": "allow-inline-keys"}
    for name, document in broken_groups(rsa, ec, tmp_path):
        if name not in expectations:
            continue
        r.set(f"{{{ns}}}:keygroup", document)
        r.publish(f"{{{ns}}}:keygroup:changed", "2")
        wait_until(lambda: expectations[name] in json.dumps(heartbeat(r, ns, w.worker_id).get("keygroup_refusal")),
                   DEADLINE, what=f"reason for {name} mentioning {expectations[name]}")


def test_keygroup_set_refuses_a_stale_version_and_a_missing_active_key_and_writes_nothing(fleet, cfsign_bin):
    r, ns, ws, rsa, ec, tmp_path = fleet
    before = r.get(f"{{{ns}}}:keygroup")
    url = f"redis://127.0.0.1:{r.connection_pool.connection_kwargs['port']}"
    for name, document in (("stale", group(1, ec.key_id, (ec.key_id, ec.path))),
                           ("no active", group(5, "KNOPE", (ec.key_id, ec.path)))):
        f = tmp_path / f"{name}.json"
        f.write_text(document)
        out = subprocess.run([str(cfsign_bin), "keygroup", "set", str(f), "--redis", url, "--namespace", ns],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1, (name, out.stdout, out.stderr)
        assert "Nothing was written" in out.stderr, out.stderr
        assert r.get(f"{{{ns}}}:keygroup") == before


def test_keygroup_rotate_makes_the_new_key_active_and_keeps_the_previous_for_key_id(fleet, cfsign_bin):
    r, ns, ws, rsa, ec, tmp_path = fleet
    url = f"redis://127.0.0.1:{r.connection_pool.connection_kwargs['port']}"
    out = subprocess.run([str(cfsign_bin), "keygroup", "rotate", "--key-id", ec.key_id, "--private-key-file", str(ec.path),
                          "--redis", url, "--namespace", ns, "--check-files"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    stored = json.loads(r.get(f"{{{ns}}}:keygroup"))
    assert stored["version"] == 2 and stored["active"] == ec.key_id
    assert [k["id"] for k in stored["keys"]] == [ec.key_id, rsa.key_id]
    wait_until(lambda: set(versions(r, ns, [w.worker_id for w in ws]).values()) == {2}, DEADLINE, what="fleet on v2")
    push(r, ns, [job(ns, "old", reply="rot", key_id=rsa.key_id), job(ns, "new", reply="rot")])
    replies = {x["id"]: x for x in collect(r, f"{{{ns}}}:reply:rot", 2, DEADLINE)}
    assert replies["old"]["key_id"] == rsa.key_id and replies["new"]["key_id"] == ec.key_id
    status = subprocess.run([str(cfsign_bin), "status", "--redis", url, "--namespace", ns, "--json"], capture_output=True, text=True, timeout=30)
    assert status.returncode == 0 and json.loads(status.stdout)["agreed"] is True
