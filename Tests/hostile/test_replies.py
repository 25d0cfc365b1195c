"""Issue 13, attack 8: replies.

- A reply the stale-reply guard refuses (the job is no longer in the worker's in-flight list,
  because another worker requeued it while this one stalled) must be logged and counted
  (`cfsign_stale_replies_total` on /metrics); it used to vanish without a trace.
- Reply injection: what a producer writing jobs can and cannot do to another app's
  `{NS}:reply:*` list (SECURITY.md, "Reply injection")."""

from __future__ import annotations

import json
import time

from cfsign_support import (
    CLOUDFRONT_HOST,
    KeyEvents,
    job,
    metric_value,
    push,
    wait_until,
)

from .hostile_support import DEADLINE, outcome_of, start_worker

#: Enough RSA signatures that the worker is still signing the batch when the test takes it away.
JOBS = 300


def test_a_reply_refused_by_the_stale_reply_guard_is_logged_and_counted(redis_server, workers, ns, test_keys):
    attack = "stale replies (jobs requeued while a worker held them)"
    r, worker = start_worker(redis_server, workers, ns, test_keys, key="rsa", concurrency=1, http=True,
                             env={"CFSIGN_BATCH_SIZE": str(JOBS)})
    ids = [f"stale-{i}" for i in range(JOBS)]
    push(r, ns, [job(ns, i, reply="stale") for i in ids], chunk=JOBS)
    # As soon as the worker holds the batch, take it away, as a reaper does with the jobs of a
    # worker whose heartbeat expired: every reply still to come is a stale one.
    wait_until(lambda: r.llen(worker.inflight_key) > 0, 10, what="the worker to take the batch", interval=0.001)
    r.delete(worker.inflight_key)

    def settled():
        answered = r.llen(f"{{{ns}}}:reply:stale")
        stale = metric_value(worker.metrics(), "cfsign_stale_replies_total") or 0
        return (answered, stale) if answered + stale >= JOBS else None

    deadline = time.monotonic() + DEADLINE * 2
    result = None
    while time.monotonic() < deadline and result is None and worker.alive():
        result = settled()
        time.sleep(0.1)
    answered = r.llen(f"{{{ns}}}:reply:stale")
    stale = metric_value(worker.metrics(), "cfsign_stale_replies_total")
    assert worker.alive(), f"attack: {attack}; worker died with {worker.exit()}"
    assert answered < JOBS, f"test set-up: the worker answered all {JOBS} jobs before the in-flight list was taken away"
    assert stale is not None, (f"attack: {attack}; {JOBS - answered} replies refused by the guard, "
                               f"but /metrics has no cfsign_stale_replies_total")
    assert answered + stale == JOBS, f"attack: {attack}; {answered} answered + {stale} counted stale != {JOBS} jobs"
    assert "stale" in worker.log().lower(), f"attack: {attack}; {stale:.0f} stale replies and no log line says so"


def test_a_producer_can_make_a_worker_reply_into_another_apps_list_of_the_same_namespace(redis_server, workers, ns, test_keys):
    """What the worker cannot prevent (SECURITY.md, "Reply injection"): a job names its reply_to and
    its id, so a producer can have a reply with the id of another app's request pushed onto that
    app's list. What it gets there is only a genuine link for the URL the attacker asked for, so a
    client that checks each reply against its request (CFSignClient does) drops it; the
    victim's own reply is neither removed nor changed (replies are only ever appended); and the
    per-app namespace (or a per-app reply prefix under the ACL) keeps other apps out of reach."""
    r, worker = start_worker(redis_server, workers, ns, test_keys)
    victim_list = f"{{{ns}}}:reply:billing-app"
    victim_url = f"{CLOUDFRONT_HOST}/invoices/42.pdf"
    push(r, ns, [job(ns, "billing-42", reply="billing-app", url=victim_url, expires_in=600)])
    wait_until(lambda: r.llen(victim_list) == 1, DEADLINE, what="the victim's own reply")

    attacker_url = f"{CLOUDFRONT_HOST}/attacker/phish.pdf"
    push(r, ns, [job(ns, "billing-42", reply="billing-app", url=attacker_url, expires_in=30)])
    wait_until(lambda: r.llen(victim_list) == 2, DEADLINE, what="the injected reply (the documented limitation)")
    genuine, injected = [json.loads(x) for x in r.lrange(victim_list, 0, -1)]

    assert genuine["id"] == injected["id"] == "billing-42"
    assert genuine["url"].startswith(victim_url + "?"), "the victim's own reply was changed"
    assert injected["url"].startswith(attacker_url + "?"), "an injected reply must carry the attacker's own URL"
    assert not injected["url"].startswith(victim_url), "the injected reply passes a client's url check"
    assert injected["expires_at"] != genuine["expires_at"]


def test_a_producer_cannot_reach_reply_lists_of_another_namespace(redis_server, workers, ns, test_keys):
    r, worker = start_worker(redis_server, workers, ns, test_keys)
    events = KeyEvents(redis_server)
    try:
        other = "{someone-else}:reply:billing-app"
        push(r, ns, [job(ns, "cross-ns", url=f"{CLOUDFRONT_HOST}/x.pdf", reply_to=other)])
        outcome = outcome_of(r, ns, other, "cross-ns", worker, f"reply_to={other}")
        assert "dead" in outcome, f"attack: reply_to={other}; the worker answered into another namespace: {outcome}"
        written = {key.decode() for _, key in events.snapshot()}
        assert other not in written and r.exists(other) == 0, f"attack: reply_to={other}; the worker wrote to it"
    finally:
        events.close()
