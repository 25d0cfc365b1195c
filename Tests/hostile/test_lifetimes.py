"""Issue 13, attacks 6 and 7: the edges of lifetime rules.

- Expiry rounding (a job's `round_expiry`, or the worker's `expiry_rounding`) must never lift a
  link past the strictest `prefix_max_lifetimes` rule its url or resource can reach, also through
  a wildcard resource (it did, depending on the clock).
- Extreme expiries of one class get one code: `expires_in` 2^63-1 gave `invalid_expiry` where
  10^11 gave `ttl_too_long`."""

from __future__ import annotations

import time

import pytest

from cfsign_support import CLOUDFRONT_HOST, INT64_MAX, OMIT, job, push

from .hostile_support import outcome_of, raw_job, sign_good_job, start_worker

STRICT = 3600  # /media/=1h
RULES = {"CFSIGN_PREFIX_MAX_LIFETIMES": "/invoices/=30d, /media/=1h", "CFSIGN_RESOURCE_WILDCARDS": "any"}

#: (url path, resource or None): each reaches /media/ (1 h), directly or through a wildcard.
REACHES_MEDIA = {
    "url": ("/media/v.mp4", None),
    "resource-under-media": ("/media/v.mp4", "/media/*"),
    "wildcard-over-everything": ("/invoices/1.pdf", "/*"),
    "wildcard-inside-path": ("/invoices/1.pdf", "/*i*"),
}


def _reply_lifetime(reply: dict, t0: int) -> int:
    return reply["expires_at"] - t0


@pytest.mark.parametrize("rounding", ["round_expiry", "expiry_rounding"])
@pytest.mark.parametrize("case", REACHES_MEDIA)
def test_rounding_never_lifts_a_link_past_the_strictest_reachable_rule(module_redis, workers, ns, test_keys, case, rounding):
    env = dict(RULES)
    fields = {"expires_in": STRICT - 1}
    if rounding == "expiry_rounding":
        env["CFSIGN_EXPIRY_ROUNDING"] = "1h"
    else:
        fields["round_expiry"] = 3600
    r, worker = start_worker(module_redis, workers, ns, test_keys, env=env)
    path, resource = REACHES_MEDIA[case]
    if resource is not None:
        fields["resource"] = f"{CLOUDFRONT_HOST}{resource}"
    attack = f"{rounding}=1h on expires_in {STRICT - 1} for {case} ({path}, resource {resource}) with /media/=1h"
    t0 = int(time.time())
    push(r, ns, [job(ns, "round", reply="round", url=f"{CLOUDFRONT_HOST}{path}", **fields)])
    reply = outcome_of(r, ns, f"{{{ns}}}:reply:round", "round", worker, attack)
    if reply.get("ok"):
        lifetime = _reply_lifetime(reply, t0)
        assert lifetime <= STRICT + 1, f"attack: {attack}; signed for {lifetime} s, over the 1 h rule (expires_at {reply['expires_at']})"
    else:
        assert reply["error"]["code"] in ("policy_denied", "ttl_too_long"), f"attack: {attack}; refused with {reply['error']}"


@pytest.mark.parametrize("field", ["expires_in"])
def test_extreme_expiries_of_one_class_get_one_code(module_redis, workers, ns, test_keys, field):
    r, worker = start_worker(module_redis, workers, ns, test_keys, env={"CFSIGN_MAX_LIFETIME": "30d"})
    codes = {}
    for label, text in (("2^63-1", str(INT64_MAX)), ("10^11", str(10**11)), ("10^12", str(10**12)), ("2^62", str(2**62))):
        job_id = f"extreme-{label}"
        push(r, ns, [raw_job(ns, job_id, reply="extreme", expires_in=OMIT, tail=f',"{field}":{text}')])
        reply = outcome_of(r, ns, f"{{{ns}}}:reply:extreme", job_id, worker, f"{field}={label}")
        assert reply.get("ok") is False, f"attack: {field}={label}; signed: {reply}"
        codes[label] = reply["error"]["code"]
    assert set(codes.values()) == {"ttl_too_long"}, f"attack: {field} far past max_lifetime=30d; codes differ: {codes}"
    sign_good_job(r, ns, worker, f"extreme {field}")
