"""The worker's signing policy and audit trail (security issue): jobs outside the configured hosts,
paths, lifetimes or wildcard scope are answered with policy_denied naming the rule; every answered
job can be audited to a capped {NS}:audit stream that never holds a signature."""

from __future__ import annotations

import json
import time

from .cfsign_system import CLOUDFRONT_HOST, collect, job, push, store_keygroup, unique_namespace

DEADLINE = 20
HOST = CLOUDFRONT_HOST.split("://", 1)[1]

POLICY = {
    "CFSIGN_ALLOWED_HOSTS": HOST,
    "CFSIGN_ALLOWED_PATH_PREFIXES": "/invoices/, /media/",
    "CFSIGN_PREFIX_MAX_LIFETIMES": "/media/=1h",
    "CFSIGN_RESOURCE_WILDCARDS": "within-prefix",
    "CFSIGN_AUDIT": "stream",
    "CFSIGN_AUDIT_STREAM_LENGTH": "1000",
}


def start(redis_server, workers, test_keys, env):
    ns = unique_namespace("policy")
    r = redis_server.client()
    store_keygroup(r, ns, [test_keys["rsa"]])
    workers.start(redis_server, ns, env=env)
    return r, ns


def answer(r, ns, **fields):
    jid = f"j-{time.monotonic_ns()}"
    push(r, ns, [job(ns, jid, reply="p", **fields)])
    (reply,) = collect(r, f"{{{ns}}}:reply:p", 1, DEADLINE)
    assert reply["id"] == jid
    return reply


def test_jobs_inside_the_policy_are_signed(redis_server, workers, test_keys):
    r, ns = start(redis_server, workers, test_keys, POLICY)
    reply = answer(r, ns, url=f"{CLOUDFRONT_HOST}/invoices/1.pdf", expires_in=86400)
    assert reply["ok"] is True, reply
    reply = answer(r, ns, url=f"{CLOUDFRONT_HOST}/invoices/1.pdf", expires_in=600, resource=f"{CLOUDFRONT_HOST}/invoices/*")
    assert reply["ok"] is True, reply


def test_a_host_outside_allowed_hosts_is_policy_denied(redis_server, workers, test_keys):
    r, ns = start(redis_server, workers, test_keys, POLICY)
    reply = answer(r, ns, url="https://evil.example.com/invoices/1.pdf")
    assert reply["error"]["code"] == "policy_denied"
    assert "allowed_hosts" in reply["error"]["message"]


def test_a_path_outside_allowed_prefixes_is_policy_denied(redis_server, workers, test_keys):
    r, ns = start(redis_server, workers, test_keys, POLICY)
    reply = answer(r, ns, url=f"{CLOUDFRONT_HOST}/secrets/1.pdf")
    assert reply["error"]["code"] == "policy_denied"
    assert "allowed_path_prefixes" in reply["error"]["message"]


def test_a_lifetime_over_the_prefix_limit_is_policy_denied(redis_server, workers, test_keys):
    r, ns = start(redis_server, workers, test_keys, POLICY)
    reply = answer(r, ns, url=f"{CLOUDFRONT_HOST}/media/v.mp4", expires_in=7200)
    assert reply["error"]["code"] == "policy_denied"
    assert "prefix_max_lifetimes" in reply["error"]["message"]
    assert answer(r, ns, url=f"{CLOUDFRONT_HOST}/media/v.mp4", expires_in=3000)["ok"] is True


def test_a_bare_or_too_wide_wildcard_is_policy_denied(redis_server, workers, test_keys):
    r, ns = start(redis_server, workers, test_keys, POLICY)
    url = f"{CLOUDFRONT_HOST}/invoices/1.pdf"
    for resource in ("*", "http*://" + HOST + "/invoices/*", f"{CLOUDFRONT_HOST}/*", f"{CLOUDFRONT_HOST}/inv*"):
        reply = answer(r, ns, url=url, resource=resource)
        assert reply["error"]["code"] == "policy_denied", (resource, reply)
        assert "resource_wildcards" in reply["error"]["message"]


def test_without_policy_settings_everything_the_contract_allows_is_signed(redis_server, workers, test_keys):
    r, ns = start(redis_server, workers, test_keys, {})
    assert answer(r, ns, url="https://anything.example.net/x", resource="*")["ok"] is True
    w = workers.started[-1]
    assert "no signing policy" in w.log()


def test_the_audit_stream_records_each_answered_job_without_signatures(redis_server, workers, test_keys):
    r, ns = start(redis_server, workers, test_keys, POLICY)
    ok = answer(r, ns, url=f"{CLOUDFRONT_HOST}/invoices/a.pdf")
    denied = answer(r, ns, url="https://evil.example.com/x")
    # The audit entry follows the reply in the same worker stage; give it a moment.
    deadline = time.monotonic() + DEADLINE
    while r.xlen(f"{{{ns}}}:audit") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = r.xrange(f"{{{ns}}}:audit")
    assert len(entries) == 2
    fields = [{k.decode(): v.decode() for k, v in e[1].items()} for e in entries]
    assert fields[0]["id"] == ok["id"] and fields[0]["outcome"] == "ok"
    assert fields[0]["url"] == f"{CLOUDFRONT_HOST}/invoices/a.pdf"
    assert fields[0]["key_id"] == test_keys["rsa"].key_id
    assert int(fields[0]["expires_at"]) == ok["expires_at"]
    assert fields[0]["reply_to"] == f"{{{ns}}}:reply:p"
    assert fields[1]["id"] == denied["id"] and fields[1]["outcome"] == "policy_denied"
    signature = ok["url"].split("Signature=", 1)[1].split("&", 1)[0]
    for e in entries:
        blob = json.dumps({k.decode(): v.decode() for k, v in e[1].items()})
        assert "Signature" not in blob and signature not in blob


def test_a_junk_flood_does_not_starve_good_jobs(redis_server, workers, test_keys):
    """10% good jobs in a stream of 90% junk: every good job is answered, every junk item is
    accounted for (error reply or dead entry), and the worker keeps running."""
    ns = unique_namespace("flood")
    r = redis_server.client()
    store_keygroup(r, ns, [test_keys["ec"]])
    w = workers.start(redis_server, ns, env={"CFSIGN_DEAD_LIST_LENGTH": "100000"})
    items, good = [], set()
    for i in range(3000):
        if i % 10 == 0:
            good.add(f"good-{i}")
            items.append(job(ns, f"good-{i}", reply="good"))
        elif i % 3 == 0:
            items.append(b"\xff\xfenot json" + bytes([i % 256]) * 50)
        elif i % 3 == 1:
            items.append(json.dumps({"id": f"bad-{i}", "reply_to": f"{{{ns}}}:reply:junk", "url": "nope", "expires_in": "x"}))
        else:
            items.append(json.dumps({"id": f"evil-{i}", "reply_to": f"{{{ns}}}:jobs", "url": "https://x/y", "expires_in": 5}))
    push(r, ns, items)
    replies = collect(r, f"{{{ns}}}:reply:good", len(good), 60)
    assert {x["id"] for x in replies} == good and all(x["ok"] for x in replies)
    junk_replies = collect(r, f"{{{ns}}}:reply:junk", 900, 60)
    assert len(junk_replies) == 900 and not any(x["ok"] for x in junk_replies)
    deadline = time.monotonic() + 30
    while r.llen(f"{{{ns}}}:dead") < 1800 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.llen(f"{{{ns}}}:dead") == 1800
    assert r.llen(f"{{{ns}}}:jobs") == 0
    assert w.alive()


def test_a_wildcard_resource_cannot_widen_an_allowed_url_even_with_wildcards_any(redis_server, workers, test_keys):
    """With host/path rules set, resource_wildcards = any still bounds the resource's reach:
    otherwise "resource": "*" on an allowed URL would open every path of every distribution."""
    env = {k: v for k, v in POLICY.items() if k != "CFSIGN_RESOURCE_WILDCARDS"}
    r, ns = start(redis_server, workers, test_keys, env)
    url = f"{CLOUDFRONT_HOST}/invoices/1.pdf"
    for resource in ("*", "https://*", f"{CLOUDFRONT_HOST}/*"):
        reply = answer(r, ns, url=url, resource=resource, output="cookies")
        assert reply["error"]["code"] == "policy_denied", (resource, reply)
    assert answer(r, ns, url=url, resource=f"{CLOUDFRONT_HOST}/invoices/*")["ok"] is True


def test_a_resource_reaching_a_shorter_lived_prefix_gets_that_prefix_lifetime(redis_server, workers, test_keys):
    env = {"CFSIGN_PREFIX_MAX_LIFETIMES": "/media/=1h"}
    r, ns = start(redis_server, workers, test_keys, env)
    reply = answer(r, ns, url=f"{CLOUDFRONT_HOST}/public/x", resource=f"{CLOUDFRONT_HOST}/*", expires_in=86400)
    assert reply["error"]["code"] == "policy_denied" and "/media/" in reply["error"]["message"]


def test_expiry_rounding_never_breaks_a_prefix_lifetime_rule(redis_server, workers, test_keys):
    env = {"CFSIGN_PREFIX_MAX_LIFETIMES": "/media/=1h", "CFSIGN_EXPIRY_ROUNDING": "1h"}
    r, ns = start(redis_server, workers, test_keys, env)
    for _ in range(3):
        reply = answer(r, ns, url=f"{CLOUDFRONT_HOST}/media/v.mp4", expires_in=3600)
        assert reply["ok"] is True, reply


TRAVERSALS = ["/invoices/../secret.pdf", "/invoices/%2e%2e/secret.pdf", "/invoices/..%2fsecret.pdf",
              "/invoices/a/../../x", "/invoices/../media/v.mp4"]


def test_dot_segments_and_encoded_slashes_never_pass_the_path_rules(redis_server, workers, test_keys):
    """Attack 3 (issue 13): the policy judged the raw path, so these were signed for /invoices/."""
    r, ns = start(redis_server, workers, test_keys, POLICY)
    for path in TRAVERSALS:
        for fields in ({"url": CLOUDFRONT_HOST + path},
                       {"url": CLOUDFRONT_HOST + path, "resource": CLOUDFRONT_HOST + "/invoices/*"}):
            reply = answer(r, ns, expires_in=600, **fields)
            assert reply["ok"] is False, f"attack 3: {fields} was signed under allowed_path_prefixes=/invoices/"
            code = "policy_denied" if "%2f" in path else "invalid_url"
            assert reply["error"]["code"] == code, f"attack 3: {fields} got {reply['error']}"
    reply = answer(r, ns, url=f"{CLOUDFRONT_HOST}/invoices/1.pdf", resource=f"{CLOUDFRONT_HOST}/invoices/..*", expires_in=600)
    assert reply["error"]["code"] == "invalid_url", f"attack 3: a wildcard completing a '..' was not refused: {reply}"


def test_expiry_rounding_never_lifts_a_job_past_a_prefix_rule_its_resource_reaches(redis_server, workers, test_keys):
    """Attack 6 (issue 13): rounding was capped by the URL's own rule only, so a wildcard resource
    reaching /media/ (1h) was rounded past it and refused, depending on the clock."""
    env = {"CFSIGN_PREFIX_MAX_LIFETIMES": "/media/=1h", "CFSIGN_EXPIRY_ROUNDING": "10m"}
    r, ns = start(redis_server, workers, test_keys, env)
    for _ in range(3):
        reply = answer(r, ns, url=f"{CLOUDFRONT_HOST}/m/v.mp4", resource=f"{CLOUDFRONT_HOST}/m*", expires_in=3590)
        assert reply["ok"] is True, f"attack 6: rounding pushed the job past /media/=1h: {reply}"
        assert reply["expires_at"] - time.time() <= 3600 + 2, f"attack 6: signed for longer than /media/=1h: {reply}"
