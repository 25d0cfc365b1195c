"""No private key material ever reaches a log, heartbeat, metric, reply, dead entry, audit entry or
error message (security issue; PROTOCOL.md "Key group and rotation")."""

from __future__ import annotations

import json
import re
import time
import urllib.request

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .cfsign_system import collect, free_port, job, push, unique_namespace, wait_until


def pem_fragments(path) -> list[str]:
    """The PEM text and every base64 line of its body (a leak of any line is a leak)."""
    text = path.read_text()
    body = [line for line in text.splitlines() if line and not line.startswith("-----")]
    return [text.strip()] + [line for line in body if len(line) >= 16] + ["".join(body)]


def test_no_private_key_material_reaches_any_output(redis_server, workers, test_keys):
    ns = unique_namespace("hygiene")
    r = redis_server.client()
    rsa, ec = test_keys["rsa"], test_keys["ec"]
    port = free_port()
    # An inline key (allowed), a file key, then a group refused for a mismatched public key, then
    # one refused for an inline key without the opt-in on a second worker.
    inline_group = {"version": 1, "active": ec.key_id, "keys": [
        {"id": ec.key_id, "private_key_pem": ec.path.read_text()},
        {"id": rsa.key_id, "private_key_file": str(rsa.path)}]}
    r.set(f"{{{ns}}}:keygroup", json.dumps(inline_group))
    w = workers.start(redis_server, ns, args=["--allow-inline-keys", "--http-address", f"127.0.0.1:{port}", "--log-level", "trace"],
                      env={"CFSIGN_AUDIT": "stream"})
    other = workers.start(redis_server, ns, worker_id="strict-" + str(port))  # refuses the inline key
    jobs = [job(ns, f"ok-{i}", reply="h") for i in range(20)]
    jobs += [job(ns, "bad-url", reply="h", url="https://x/#frag"), job(ns, "bad-key", reply="h", key_id="NOPE"),
             b"garbage", job(ns, "k", reply="h", key_id=rsa.key_id)]
    push(r, ns, jobs)
    replies = collect(r, f"{{{ns}}}:reply:h", 23, 20)

    mismatched = dict(inline_group, version=2)
    wrong_public = rsa.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    mismatched["keys"] = [dict(inline_group["keys"][0], public_key_pem=wrong_public), inline_group["keys"][1]]
    r.set(f"{{{ns}}}:keygroup", json.dumps(mismatched))
    r.publish(f"{{{ns}}}:keygroup:changed", "2")
    wait_until(lambda: "does not match" in (r.get(f"{{{ns}}}:worker:{w.worker_id}") or b"").decode(), 20, what="refusal in heartbeat")

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    time.sleep(0.5)
    everything = [w.log(), other.log(), metrics, json.dumps(replies)]
    for key in r.scan_iter(f"{{{ns}}}:*"):
        kind = r.type(key)
        if key == f"{{{ns}}}:keygroup".encode():
            continue  # the operator put the inline PEM there themselves
        if kind == b"string":
            everything.append(r.get(key).decode(errors="replace"))
        elif kind == b"list":
            everything += [x.decode(errors="replace") for x in r.lrange(key, 0, -1)]
        elif kind == b"stream":
            everything += [json.dumps({k.decode(): v.decode() for k, v in e[1].items()}) for e in r.xrange(key)]
    blob = "\n".join(everything)
    assert len(blob) > 1000
    for path in (rsa.path, ec.path):
        for fragment in pem_fragments(path):
            assert fragment not in blob, f"key material from {path.name} leaked"
    assert not re.search(r"PRIVATE KEY-----", blob)
