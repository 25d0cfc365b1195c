"""What a producer sees: replies to good and bad jobs, exactly in the contract's shape (PROTOCOL.md,
"Job", "Signatures", "Reply").

The tests of this module share one redis-server and one worker (each uses its own reply list);
the worker signs with a test-only RSA key (active) and a test-only EC key of the same group.
"""

from __future__ import annotations

import base64
import json
import time
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from .cfsign_system import (
    CLOUDFRONT_HOST,
    ERROR_CODES,
    OMIT,
    collect,
    job,
    push,
    store_keygroup,
    unique_namespace,
    wait_until,
)

DEADLINE = 20  # seconds: generous; a worker answers in milliseconds


def cloudfront_b64(data: bytes) -> str:
    return base64.b64encode(data).decode().replace("+", "-").replace("=", "_").replace("/", "~")


def cloudfront_unb64(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"), validate=True)


def canned_policy(url: str, expires: int) -> bytes:
    return ('{"Statement":[{"Resource":"%s","Condition":{"DateLessThan":{"AWS:EpochTime":%d}}}]}' % (url, expires)).encode()


def query_parameters(url: str) -> list[tuple[str, str]]:
    """The query's name=value pairs in order, not percent-decoded (CloudFront's base64 needs none)."""
    _, _, query = url.partition("?")
    return [tuple(p.split("=", 1)) for p in query.split("&")]


def compact(raw: bytes) -> bool:
    """True when `raw` is compact JSON: re-encoding it compactly gives the same bytes."""
    return json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode() == raw


@pytest.fixture(scope="module")
def signer(module_redis, module_workers, test_keys):
    """One running worker with a key group of the RSA key (active) and the EC key."""
    ns = unique_namespace("replies")
    r = module_redis.client()
    store_keygroup(r, ns, [test_keys["rsa"], test_keys["ec"]])
    worker = module_workers.start(module_redis, ns)
    return SimpleNamespace(r=r, ns=ns, keys=test_keys, worker=worker)


def wait_replies(r, key: str, count: int) -> list[bytes]:
    """Waits until `key` holds `count` replies and returns them raw, without popping them."""
    wait_until(lambda: r.llen(key) >= count, DEADLINE, what=f"{count} replies on {key}")
    return r.lrange(key, 0, -1)


def test_canned_url_job_is_answered_with_its_id_on_its_reply_list(signer):
    r, ns, rsa_key = signer.r, signer.ns, signer.keys["rsa"]
    expires = int(time.time()) + 3600
    url = f"{CLOUDFRONT_HOST}/invoices/canned-1.pdf"
    reply_key = f"{{{ns}}}:reply:canned"
    push(r, ns, [job(ns, "canned-1", reply="canned", url=url, expires_at=expires)])

    raw = wait_replies(r, reply_key, 1)
    assert len(raw) == 1
    ttl = r.ttl(reply_key)
    assert 0 < ttl <= 300, f"reply list TTL is {ttl}"
    assert compact(raw[0]), raw[0]

    reply = json.loads(raw[0])
    assert set(reply) == {"id", "ok", "url", "key_id", "expires_at", "policy"}
    assert reply["id"] == "canned-1"
    assert reply["ok"] is True
    assert reply["key_id"] == rsa_key.key_id
    assert reply["expires_at"] == expires
    assert reply["policy"] == "canned"

    # RSA PKCS#1 v1.5 is deterministic: the whole URL is known in advance (SHA-1 by default).
    signature = rsa_key.private_key().sign(canned_policy(url, expires), padding.PKCS1v15(), hashes.SHA1())
    assert reply["url"] == f"{url}?Expires={expires}&Signature={cloudfront_b64(signature)}&Key-Pair-Id={rsa_key.key_id}"


def test_custom_policy_job_carries_the_policy_and_a_valid_signature(signer):
    r, ns, rsa_key = signer.r, signer.ns, signer.keys["rsa"]
    now = int(time.time())
    starts, expires = now - 60, now + 3600
    url = f"{CLOUDFRONT_HOST}/private/report.pdf?download=1"
    resource = f"{CLOUDFRONT_HOST}/private/*"
    reply_key = f"{{{ns}}}:reply:custom"
    push(r, ns, [job(ns, "custom-1", reply="custom", url=url, expires_at=expires, starts_at=starts,
                     ip="192.0.2.7", resource=resource)])

    (raw,) = wait_replies(r, reply_key, 1)
    reply = json.loads(raw)
    assert set(reply) == {"id", "ok", "url", "key_id", "expires_at", "policy"}
    assert (reply["id"], reply["ok"], reply["policy"], reply["expires_at"]) == ("custom-1", True, "custom", expires)

    signed = reply["url"]
    assert signed.startswith(url + "&Policy="), signed  # the URL had a query: `&`, not `?`
    params = query_parameters(signed)
    assert [name for name, _ in params] == ["download", "Policy", "Signature", "Key-Pair-Id"]
    values = dict(params)
    assert values["Key-Pair-Id"] == rsa_key.key_id

    expected_policy = (
        '{"Statement":[{"Resource":"%s","Condition":{"DateLessThan":{"AWS:EpochTime":%d},'
        '"IpAddress":{"AWS:SourceIp":"192.0.2.7/32"},"DateGreaterThan":{"AWS:EpochTime":%d}}}]}'
        % (resource, expires, starts)
    ).encode()
    policy = cloudfront_unb64(values["Policy"])
    assert policy == expected_policy
    rsa_key.public_key().verify(cloudfront_unb64(values["Signature"]), policy, padding.PKCS1v15(), hashes.SHA1())


def test_cookies_job_with_sha256_gets_the_signed_cookie_set(signer):
    r, ns, ec_key = signer.r, signer.ns, signer.keys["ec"]
    expires = int(time.time()) + 600
    url = f"{CLOUDFRONT_HOST}/media/video.m3u8"
    reply_key = f"{{{ns}}}:reply:cookies"
    push(r, ns, [job(ns, "cookies-1", reply="cookies", url=url, expires_at=expires, output="cookies",
                     hash="SHA256", key_id=ec_key.key_id)])

    (raw,) = wait_replies(r, reply_key, 1)
    assert compact(raw), raw
    reply = json.loads(raw)
    assert set(reply) == {"id", "ok", "cookies", "key_id", "expires_at", "policy"}
    assert (reply["id"], reply["ok"], reply["key_id"], reply["expires_at"], reply["policy"]) == (
        "cookies-1", True, ec_key.key_id, expires, "canned")
    cookies = reply["cookies"]
    assert set(cookies) == {"CloudFront-Expires", "CloudFront-Signature", "CloudFront-Key-Pair-Id", "CloudFront-Hash-Algorithm"}
    assert cookies["CloudFront-Expires"] == str(expires)
    assert cookies["CloudFront-Key-Pair-Id"] == ec_key.key_id
    assert cookies["CloudFront-Hash-Algorithm"] == "SHA256"
    ec_key.public_key().verify(cloudfront_unb64(cookies["CloudFront-Signature"]), canned_policy(url, expires),
                               ec.ECDSA(hashes.SHA256()))


ERROR_CASES = [
    # (case, job fields, expected code)
    ("fragment", {"url": f"{CLOUDFRONT_HOST}/a.pdf#page=2"}, "invalid_url"),
    ("no_url", {"url": OMIT}, "missing_field"),
    ("expired", {"expires_at": 1_000_000_000}, "invalid_expiry"),
    ("past_now", {"expires_at": "NOW-10"}, "invalid_expiry"),
    ("too_long", {"expires_in": 366 * 86400}, "ttl_too_long"),
    ("bad_ip", {"ip": "300.1.2.3"}, "invalid_ip"),
    ("ipv6", {"ip": "2001:db8::1"}, "invalid_ip"),
    ("host_bits", {"ip": "10.1.2.3/24"}, "invalid_ip"),
    ("unknown_key", {"key_id": "KNOSUCHKEY0001"}, "unknown_key"),
    ("md5", {"hash": "MD5"}, "unsupported_hash"),
    ("string_expiry", {"expires_at": "1767225600"}, "invalid_job"),
]


@pytest.mark.parametrize("case,fields,code", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bad_job_is_answered_with_its_error_code(signer, case, fields, code):
    r, ns = signer.r, signer.ns
    fields = dict(fields)
    if fields.get("expires_at") == "NOW-10":
        fields["expires_at"] = int(time.time()) - 10
    reply_key = f"{{{ns}}}:reply:err-{case}"
    push(r, ns, [job(ns, f"err-{case}", reply=f"err-{case}", **fields)])

    (raw,) = wait_replies(r, reply_key, 1)
    assert compact(raw), raw
    reply = json.loads(raw)
    assert set(reply) == {"id", "ok", "error"}
    assert reply["id"] == f"err-{case}"
    assert reply["ok"] is False
    assert set(reply["error"]) == {"code", "message"}
    assert reply["error"]["code"] == code, reply
    assert code in ERROR_CODES
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    assert 0 < r.ttl(reply_key) <= 300


def test_job_without_a_key_group_is_answered_with_no_signing_key(redis_server, workers, ns):
    r = redis_server.client()
    worker = workers.start(redis_server, ns)  # nothing at {NS}:keygroup
    push(r, ns, [job(ns, "nokey-1", reply="nokey")])

    replies = collect(r, f"{{{ns}}}:reply:nokey", 1, DEADLINE)
    assert len(replies) == 1, "the job was not answered"
    assert replies[0]["id"] == "nokey-1"
    assert replies[0]["ok"] is False
    assert replies[0]["error"]["code"] == "no_signing_key"
    assert r.llen(f"{{{ns}}}:jobs") == 0
    assert r.llen(worker.inflight_key) == 0
    assert r.llen(f"{{{ns}}}:dead") == 0
