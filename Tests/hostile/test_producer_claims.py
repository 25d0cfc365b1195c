"""SECURITY.md, "What someone who controls a producer can do": each "cannot" claim, tried as an
attacker with the producer's powers (LPUSH anything onto {NS}:jobs) would try it."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cfsign_support import (
    CLOUDFRONT_HOST,
    KeyEvents,
    audit_entries,
    collect_ids,
    dead_entries,
    encode,
    heartbeat,
    job,
    make_redis,
    push,
    store_keygroup,
    wait_until,
)

from .hostile_support import DEADLINE, assert_still_the_same_worker, outcome_of, sign_good_job, start_worker


def cloudfront_b64decode(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"))


def query(url: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))


def test_a_reply_to_outside_the_reply_lists_is_dead_lettered_and_nothing_else_is_written(redis_server, workers, ns, test_keys):
    r, worker = start_worker(redis_server, workers, ns, test_keys)
    w = worker.worker_id
    targets = [
        f"{{{ns}}}:jobs", f"{{{ns}}}:dead", f"{{{ns}}}:keygroup", f"{{{ns}}}:workers", f"{{{ns}}}:audit",
        f"{{{ns}}}:inflight:{w}", f"{{{ns}}}:worker:{w}", f"{{{ns}}}:reply", f"{{{ns}}}:replyx", f"{{{ns}}}:reply:",
        f"{{{ns}}}:REPLY:x", f"{ns}:reply:x", f"{{{ns}}} :reply:x", "{other}:reply:x", "other:key", "",
    ]
    events = KeyEvents(redis_server)
    try:
        keygroup_before = r.get(f"{{{ns}}}:keygroup")
        items = [job(ns, f"rt-{i}", reply_to=t, url=f"{CLOUDFRONT_HOST}/invoices/{i}.pdf") for i, t in enumerate(targets)]
        push(r, ns, items)
        wait_until(lambda: len(dead_entries(r, ns)) >= len(targets) or not worker.alive(), DEADLINE,
                   what="every job with a foreign reply_to on the dead list")
        assert_still_the_same_worker(r, ns, worker, "reply_to outside {NS}:reply:")
        dead = dead_entries(r, ns)
        for i, t in enumerate(targets):
            assert any(f'"rt-{i}"' in e["job"] for e in dead), f"attack: reply_to={t!r}; job not on the dead list"
        # What the worker wrote: only its own bookkeeping and the dead list; no reply anywhere.
        allowed = {f"{{{ns}}}:{k}" for k in ("jobs", "dead", "workers", "audit", "recoveries", f"inflight:{w}", f"worker:{w}")}
        for event, raw_key in events.snapshot():
            key = raw_key.decode(errors="replace")
            assert key in allowed, f"attack: a foreign reply_to; the worker wrote {event} to {key!r}"
            assert event != "rpush", f"attack: a foreign reply_to; a reply was pushed onto {key!r}"
        assert r.get(f"{{{ns}}}:keygroup") == keygroup_before
        for t in targets:
            if t and r.type(t) == b"list" and t not in (f"{{{ns}}}:jobs", f"{{{ns}}}:dead"):
                pytest.fail(f"attack: reply_to={t!r}; a list appeared there")
    finally:
        events.close()
    sign_good_job(r, ns, worker, "reply_to outside {NS}:reply:")


@pytest.mark.parametrize("field,text", [
    ("url", f'{CLOUDFRONT_HOST}/a"}}]}},{{"Resource":"*'),
    ("url", f'{CLOUDFRONT_HOST}/a\\\\"b'),
    ("resource", f'{CLOUDFRONT_HOST}/a"*'),
    ("url", f"{CLOUDFRONT_HOST}/a\u0000b"),
    ("url", f"{CLOUDFRONT_HOST}/a\nb"),
])
def test_a_quote_backslash_or_control_character_is_refused(redis_server, workers, ns, test_keys, field, text):
    """The policy is written byte for byte from validated fields: `"` and `\\` can never close the
    Resource string and add a statement of the attacker's."""
    r, worker = start_worker(redis_server, workers, ns, test_keys)
    fields = {"url": f"{CLOUDFRONT_HOST}/a", "resource": text} if field == "resource" else {"url": text}
    push(r, ns, [job(ns, "inject", reply="inj", **fields)])
    reply = outcome_of(r, ns, f"{{{ns}}}:reply:inj", "inject", worker, f"JSON injection via {field} {text!r}")
    assert reply.get("ok") is False, f"attack: JSON injection via {field} {text!r}; signed: {reply}"
    assert reply["error"]["code"] in ("invalid_url", "invalid_resource"), f"attack: JSON injection via {field}; {reply['error']}"


def test_an_encoded_quote_is_signed_as_text_in_one_well_formed_statement(redis_server, workers, ns, test_keys):
    r, worker = start_worker(redis_server, workers, ns, test_keys)
    url = f'{CLOUDFRONT_HOST}/invoices/a%22%7D%5D%7D%2C%7B%22Resource%22:%22*.pdf'
    push(r, ns, [job(ns, "encoded", reply="enc", url=url, ip="10.0.0.0/8", expires_in=600)])
    reply = outcome_of(r, ns, f"{{{ns}}}:reply:enc", "encoded", worker, "encoded quote in url")
    assert reply.get("ok") is True, reply
    params = query(reply["url"])
    policy_bytes = cloudfront_b64decode(params["Policy"])
    policy = json.loads(policy_bytes)
    assert len(policy["Statement"]) == 1 and policy["Statement"][0]["Resource"] == url, policy
    assert set(policy["Statement"][0]["Condition"]) == {"DateLessThan", "IpAddress"}, policy
    signature = cloudfront_b64decode(params["Signature"])
    test_keys["ec"].public_key().verify(signature, policy_bytes, ec.ECDSA(hashes.SHA1()))


def junk(ns: str) -> list[bytes]:
    """Malformed jobs of every kind a broken or hostile producer can push."""
    reply = f"{{{ns}}}:reply:junk"
    url = f"{CLOUDFRONT_HOST}/j.pdf"

    def j(**fields) -> bytes:
        return encode(fields)

    return [
        b"", b" ", b"not json", b"{", b"}", b"[]", b"null", b"42", b'"x"', b"{}", b"\xff\xfe\x00", b"\x00" * 100,
        b"[" * 100_000 + b"]" * 100_000, b"[" * 20_000 + b"]" * 20_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b"x" * (70 * 1024), j(id="huge", reply_to=reply, url=url, expires_in=60, pad="y" * (70 * 1024)),
        j(id=5, reply_to=reply, url=url, expires_in=60), j(id="rt", reply_to=[reply], url=url, expires_in=60),
        j(id="u", reply_to=reply, url=123, expires_in=60), j(id="e", reply_to=reply, url=url, expires_in="60"),
        j(id="f", reply_to=reply, url=url, expires_in=1.5), j(id="n", reply_to=reply, url=url, expires_in=10**40),
        j(id="ip", reply_to=reply, url=url, expires_in=60, ip="300.1.1.1/99"),
        j(id="res", reply_to=reply, url=url, expires_in=60, resource="*" * 5000),
        j(id="wild", reply_to=reply, url="https://" + "a" * 8000 + ".com/" + "b" * 200, expires_in=60,
          resource="https://" + "*a" * 2000),
        j(id="h", reply_to=reply, url=url, expires_in=60, hash="MD5"), j(id="k", reply_to=reply, url=url, expires_in=60, key_id="nope"),
        b'{"id":"dup","id":"dup2","reply_to":"%s","url":"%s","expires_in":60}' % (reply.encode(), url.encode()),
        b'{"id":"esc\\ud800","reply_to":"%s","url":"%s","expires_in":60}' % (reply.encode(), url.encode()),
    ]


def test_a_garbage_flood_cannot_crash_or_stall_a_worker(redis_server, workers, ns, test_keys):
    attack = "a flood of malformed jobs"
    r, worker = start_worker(redis_server, workers, ns, test_keys, env={"CFSIGN_DEAD_LIST_LENGTH": "100000"})
    bad = junk(ns)
    items, good = [], set()
    for round_ in range(20):
        for item in bad:
            items.append(item)
        gid = f"good-{round_}"
        good.add(gid)
        items.append(job(ns, gid, reply="junk", url=f"{CLOUDFRONT_HOST}/invoices/{gid}.pdf"))
    t0 = time.monotonic()
    push(r, ns, items, chunk=50)
    replies = collect_ids(r, f"{{{ns}}}:reply:junk", good, DEADLINE * 2)
    elapsed = time.monotonic() - t0
    signed = {x["id"] for x in replies if x.get("ok")}
    assert good <= signed, f"attack: {attack}; good jobs not signed within {DEADLINE * 2} s: {sorted(good - signed)[:5]} (worker {worker.exit()})"
    wait_until(lambda: r.llen(f"{{{ns}}}:jobs") == 0 and r.llen(worker.inflight_key) == 0, DEADLINE,
               what=f"attack: {attack}; the queue and in-flight list to drain")
    hb = wait_until(lambda: (h := heartbeat(r, ns, worker.worker_id)) and h["jobs"] + h["errors"] + h["dead"] >= len(items) and h,
                    DEADLINE, what=f"attack: {attack}; every item counted as answered or dead")
    assert hb["jobs"] + hb["errors"] + hb["dead"] == len(items), f"attack: {attack}; heartbeat counts {hb} for {len(items)} items"
    assert_still_the_same_worker(r, ns, worker, attack)
    assert elapsed < DEADLINE * 2


def test_no_key_material_reaches_replies_dead_entries_audit_heartbeat_log_or_metrics(redis_server, workers, ns, test_keys):
    r, worker = start_worker(redis_server, workers, ns, test_keys, key="rsa", http=True)
    items = [
        job(ns, "ok-url", reply="k", url=f"{CLOUDFRONT_HOST}/invoices/1.pdf"),
        job(ns, "ok-cookies", reply="k", url=f"{CLOUDFRONT_HOST}/invoices/2.pdf", output="cookies", ip="10.0.0.0/8"),
        job(ns, "bad-key", reply="k", key_id="KNOPE"),
        job(ns, "bad-url", reply="k", url="ftp://x/y"),
        b"garbage",
    ]
    push(r, ns, items)
    replies = collect_ids(r, f"{{{ns}}}:reply:k", {"ok-url", "ok-cookies", "bad-key", "bad-url"}, DEADLINE)
    wait_until(lambda: len(dead_entries(r, ns)) == 1, DEADLINE, what="the garbage job's dead entry")
    wait_until(lambda: len(audit_entries(r, ns)) >= 4, DEADLINE, what="the audit entries")
    written = "\n".join([
        json.dumps(replies), json.dumps(dead_entries(r, ns)), json.dumps(audit_entries(r, ns)),
        json.dumps(heartbeat(r, ns, worker.worker_id)), worker.log(), worker.metrics(),
    ])
    pem = test_keys["rsa"].path.read_text()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    fragments = [body[i:i + 24] for i in range(0, len(body) - 24, 24)]
    leaked = [f for f in fragments if f in written]
    assert "PRIVATE KEY" not in written, "attack: collect everything a worker writes; a PEM header is in it"
    assert not leaked, f"attack: collect everything a worker writes; {len(leaked)} fragments of the key's base64 body are in it"


def test_filling_the_queue_is_refused_by_redis_and_loses_nothing(tmp_path, workers, ns, test_keys):
    """A producer can fill the queue, no more: under `maxmemory-policy noeviction` (ops/redis) Redis
    refuses its pushes once full, evicts nothing, and a worker started on the full Redis still
    takes and answers every job that was accepted (its scripts pop before they push)."""
    attack = "fill Redis with jobs until it refuses them"
    server = make_redis(tmp_path / "redis-small", extra_args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
    try:
        r = server.client()
        store_keygroup(r, ns, [test_keys["ec"]])
        accepted, refused, n = 0, None, 0
        while refused is None and n < 100_000:
            chunk = [job(ns, f"fill-{n + i}", reply="fill", url=f"{CLOUDFRONT_HOST}/invoices/{n + i}.pdf", pad="p" * 900)
                     for i in range(100)]
            try:
                push(r, ns, chunk)
                accepted += len(chunk)
            except redis.ResponseError as e:
                refused = str(e)
            n += 100
        assert refused and "maxmemory" in refused, f"attack: {attack}; Redis never refused a push ({accepted} accepted)"
        assert r.llen(f"{{{ns}}}:jobs") == accepted, f"attack: {attack}; accepted jobs went missing (evicted?)"

        worker = workers.start(server, ns, env={"CFSIGN_AUDIT": "off"})
        replies = collect_ids(r, f"{{{ns}}}:reply:fill", {f"fill-{i}" for i in range(accepted)}, DEADLINE * 2)
        signed = {x["id"] for x in replies if x.get("ok")}
        assert len(signed) == accepted, f"attack: {attack}; {accepted - len(signed)} of {accepted} accepted jobs not answered"
        assert_still_the_same_worker(r, ns, worker, attack)
    finally:
        server.stop()
