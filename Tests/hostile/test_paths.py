"""Issue 13, attack 3 and "Paths": the signing policy used to judge the raw path, so with
`allowed_path_prefixes = /invoices/` the worker signed links that a browser or origin resolves
outside /invoices/. A dot segment (`.`/`..` in any mix of `.`, `%2e`, `%2E`) in `url` or
`resource` is `invalid_url`; an encoded slash (`%2f`) is `policy_denied` when path rules are set
(contract, "URL rule: no dot segments"). Each attack is tried as `url` and as `resource`."""

from __future__ import annotations

import time

import pytest

from cfsign_support import CLOUDFRONT_HOST, job, push, store_keygroup, unique_namespace

from .hostile_support import outcome_of, sign_good_job

POLICY = {
    "CFSIGN_ALLOWED_PATH_PREFIXES": "/invoices/",
    "CFSIGN_PREFIX_MAX_LIFETIMES": "/invoices/=30d",
    "CFSIGN_RESOURCE_WILDCARDS": "any",
    "CFSIGN_AUDIT": "stream",
}

#: path -> the code the contract gives it.
ATTACKS = {
    "/invoices/../secret.pdf": "invalid_url",
    "/invoices/%2e%2e/secret.pdf": "invalid_url",
    "/invoices/%2E./secret.pdf": "invalid_url",
    "/invoices/./../secret.pdf": "invalid_url",
    "/invoices/a/../../x": "invalid_url",
    "/invoices/../media/v.mp4": "invalid_url",
    "/invoices/..": "invalid_url",
    "/invoices/..%2fsecret.pdf": "policy_denied",
    "/invoices/a%2F..%2F..%2Fsecret.pdf": "policy_denied",
}


@pytest.fixture(scope="module")
def policy_worker(module_redis, module_workers, test_keys):
    ns = unique_namespace("paths", prefix="hostile")
    r = module_redis.client()
    store_keygroup(r, ns, [test_keys["ec"]])
    worker = module_workers.start(module_redis, ns, env=POLICY)
    return r, ns, worker


@pytest.mark.parametrize("as_", ["url", "resource"])
@pytest.mark.parametrize("path", ATTACKS)
def test_a_dot_segment_or_encoded_slash_is_refused(policy_worker, path, as_):
    r, ns, worker = policy_worker
    attack = f"{as_} path {path} under allowed_path_prefixes=/invoices/"
    job_id = f"path-{time.monotonic_ns()}"
    url = f"{CLOUDFRONT_HOST}{path}"
    # A resource must match its url as a string, so the url carries the same path; the wildcard
    # makes the attack the resource's (a policy for every object "under" the dotted prefix).
    fields = {"url": url} if as_ == "url" else {"url": url + "?v=1", "resource": url + "*"}
    push(r, ns, [job(ns, job_id, reply="paths", expires_in=3600, **fields)])
    reply = outcome_of(r, ns, f"{{{ns}}}:reply:paths", job_id, worker, attack)
    assert reply.get("ok") is False, f"attack: {attack}; the worker signed it ({str(reply.get('url', reply)).split('?')[0]})"
    assert reply["error"]["code"] == ATTACKS[path], f"attack: {attack}; refused with {reply['error']}, expected {ATTACKS[path]}"


def test_clean_paths_under_the_prefix_are_still_signed(policy_worker):
    r, ns, worker = policy_worker
    for path in ("/invoices/a.pdf", "/invoices/a..b.pdf", "/invoices/.well-known-ish/x", "/invoices/...", "/invoices/%2e%2ex"):
        job_id = f"clean-{time.monotonic_ns()}"
        push(r, ns, [job(ns, job_id, reply="clean", url=f"{CLOUDFRONT_HOST}{path}")])
        reply = outcome_of(r, ns, f"{{{ns}}}:reply:clean", job_id, worker, f"clean path {path}")
        assert reply.get("ok") is True, f"a clean path {path} was refused: {reply}"
    sign_good_job(r, ns, worker, "dot segments")
