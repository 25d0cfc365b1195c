"""A hostile queue: good jobs interleaved with every kind of junk. The worker keeps running, answers
every good job, answers or dead-lists every junk item, and writes nowhere but the protocol's keys."""

from __future__ import annotations

import json
import random

from .cfsign_system import (
    CLOUDFRONT_HOST,
    assert_writes_confined,
    dead_entries,
    encode,
    heartbeat,
    job,
    push,
    store_keygroup,
    wait_until,
)


def junk_items(ns: str, worker_id: str) -> list[bytes]:
    """Everything a broken or hostile producer might push; none of it may be signed."""
    reply = f"{{{ns}}}:reply:junk"
    url = f"{CLOUDFRONT_HOST}/j.pdf"

    def j(**fields) -> bytes:
        return encode(fields)

    items = [
        # Not JSON, or not an object.
        b"not json at all", b"{", b"}", b"", b" ", b"{'id': 'single quotes'}", b"[]", b"[1,2,3]", b"42", b"-0.5",
        b'"a string"', b"null", b"true", b"{}", b"[{\"id\":\"in-array\"}]",
        # Huge.
        b"x" * (100 * 1024),
        j(id="j-huge", reply_to=reply, url=url, expires_in=60, pad="y" * (100 * 1024)),
        b'"' + b"z" * (100 * 1024) + b'"',
        # Deep nesting: over 64 KiB (not parsed at all) and under it (refused by depth).
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        encode({"id": "j-deep-field", "reply_to": reply, "url": url, "expires_in": 60}).rstrip(b"}") + b',"x":' + b"[" * 200 + b"]" * 200 + b"}",
        # Binary: invalid UTF-8, NULs.
        bytes(range(256)), b"\xff\xfe\x00\x00", b"\x00" * 64, b"\xc3\x28\xa0\xa1",
        ('{"id":"j-bad-utf8-\xff","reply_to":"%s","url":"%s","expires_in":60}' % (reply, url)).encode("latin-1"),
        ('{"id":"j-raw-nul\x00","reply_to":"%s","url":"%s","expires_in":60}' % (reply, url)).encode(),
        ('{"id":"j-lone-surrogate-\\ud800","reply_to":"%s","url":"bad url","expires_in":60}' % reply).encode(),
        j(id="j-escaped-nul-\u0000", reply_to=reply, url="not a url", expires_in=60),
        # Wrong types.
        j(id=5, reply_to=reply, url=url, expires_in=60),
        j(id=["j"], reply_to=reply, url=url, expires_in=60),
        j(id="j-rt-list", reply_to=[reply], url=url, expires_in=60),
        j(id="j-rt-num", reply_to=7, url=url, expires_in=60),
        j(id="j-url-num", reply_to=reply, url=123, expires_in=60),
        j(id="j-exp-str", reply_to=reply, url=url, expires_in="60"),
        j(id="j-exp-float", reply_to=reply, url=url, expires_in=1.5),
        j(id="j-exp-bool", reply_to=reply, url=url, expires_in=True),
        j(id="j-exp-huge", reply_to=reply, url=url, expires_in=10**30),
        j(id="j-exp-neg", reply_to=reply, url=url, expires_in=-5),
        j(id="j-ip-list", reply_to=reply, url=url, expires_in=60, ip=["1.2.3.4"]),
        j(id="j-out", reply_to=reply, url=url, expires_in=60, output="pdf"),
        j(id="j-hash-case", reply_to=reply, url=url, expires_in=60, hash="sha256"),
        j(id="j-both", reply_to=reply, url=url, expires_in=60, expires_at=2_000_000_000),
        j(id="j-none", reply_to=reply, url=url),
        j(id="j-space-url", reply_to=reply, url=f"{CLOUDFRONT_HOST}/a b.pdf", expires_in=60),
        j(id="j-unicode-url", reply_to=reply, url=f"{CLOUDFRONT_HOST}/ключ.pdf", expires_in=60),
        j(id="j-ftp", reply_to=reply, url="ftp://example.com/a", expires_in=60),
        j(id="j-signed-already", reply_to=reply, url=f"{url}?Signature=abc", expires_in=60),
        j(id="j-resource-mismatch", reply_to=reply, url=url, expires_in=60, resource=f"{CLOUDFRONT_HOST}/other/*"),
        j(id="ключ-без-url", reply_to=reply, expires_in=60),
        j(id="", reply_to=reply, url=url, expires_in=60),
        j(id="i" * 201, reply_to=reply, url=url, expires_in=60),
        b'{"id":"j-dup","id":"j-dup2","reply_to":"%s","url":"%s","expires_in":60}' % (reply.encode(), url.encode()),
        # Injected reply_to: never answered there.
        j(id="j-inj-jobs", reply_to=f"{{{ns}}}:jobs", url=url, expires_in=60),
        j(id="j-inj-dead", reply_to=f"{{{ns}}}:dead", url=url, expires_in=60),
        j(id="j-inj-inflight", reply_to=f"{{{ns}}}:inflight:{worker_id}", url=url, expires_in=60),
        j(id="j-inj-heartbeat", reply_to=f"{{{ns}}}:worker:{worker_id}", url=url, expires_in=60),
        j(id="j-inj-keygroup", reply_to=f"{{{ns}}}:keygroup", url=url, expires_in=60),
        j(id="j-inj-workers", reply_to=f"{{{ns}}}:workers", url=url, expires_in=60),
        j(id="j-inj-other", reply_to="other:key", url=url, expires_in=60),
        j(id="j-inj-prefix", reply_to=f"{{{ns}}}:replyX", url=url, expires_in=60),
        j(id="j-inj-bare", reply_to=f"{{{ns}}}:reply", url=url, expires_in=60),
        j(id="j-inj-empty", reply_to=f"{{{ns}}}:reply:", url=url, expires_in=60),
        j(id="j-inj-ns", reply_to="{cfsign}:reply:x", url=url, expires_in=60),
        j(id="j-inj-case", reply_to=f"{{{ns.upper()}}}:reply:x", url=url, expires_in=60),
    ]
    return items


FORBIDDEN_TARGETS = ["other:key", "{cfsign}:reply:x"]


def test_garbage_in_the_queue_never_stops_the_worker_nor_loses_a_good_job(redis_server, workers, ns, test_keys, key_events):
    r = redis_server.client()
    store_keygroup(r, ns, [test_keys["ec"]])
    worker = workers.start(redis_server, ns, worker_id="garbage")
    junk = junk_items(ns, worker.worker_id)
    good = [encode(job(ns, f"good-{i}", reply="good")) for i in range(500)]
    stream = good + junk
    random.Random(20261125).shuffle(stream)
    push(r, ns, stream, chunk=50)

    def settled():
        hb = heartbeat(r, ns, worker.worker_id)
        return hb is not None and hb["jobs"] == len(good) and hb["errors"] + hb["dead"] == len(junk)

    wait_until(settled, 60, what=f"{len(good)} jobs signed and {len(junk)} junk items refused")
    assert worker.alive(), worker.log()[-2000:]

    good_replies = [json.loads(x) for x in r.lrange(f"{{{ns}}}:reply:good", 0, -1)]
    assert sorted(x["id"] for x in good_replies) == sorted(f"good-{i}" for i in range(500))
    assert all(x["ok"] for x in good_replies)

    junk_replies = [json.loads(x) for x in r.lrange(f"{{{ns}}}:reply:junk", 0, -1)]
    dead = dead_entries(r, ns)
    assert not any(x["ok"] for x in junk_replies), [x for x in junk_replies if x["ok"]]
    assert len(junk_replies) + len(dead) == len(junk)
    for entry in dead:
        assert {"error", "job", "worker", "at"} <= set(entry)
        assert len(entry["job"].encode()) <= 1024

    assert r.llen(f"{{{ns}}}:jobs") == 0
    assert not r.exists(worker.inflight_key)
    assert r.type(f"{{{ns}}}:keygroup") == b"string" and json.loads(r.get(f"{{{ns}}}:keygroup"))["version"] == 1
    assert r.type(f"{{{ns}}}:workers") == b"set"
    assert r.type(worker.heartbeat_key) == b"string"
    for key in FORBIDDEN_TARGETS + [f"{{{ns}}}:replyX", f"{{{ns}}}:reply", f"{{{ns}}}:reply:"]:
        assert not r.exists(key), key
    events = key_events.snapshot()
    assert_writes_confined(events, ns, [worker.worker_id], FORBIDDEN_TARGETS)
    reply_lists = {k.decode() for e, k in events if e == "rpush"}
    assert reply_lists == {f"{{{ns}}}:reply:good", f"{{{ns}}}:reply:junk"}
