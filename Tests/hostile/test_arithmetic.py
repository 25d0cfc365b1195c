"""Issue 13, attack 1 and "Arithmetic": every number a producer sends reaches a worker that cannot
trap on it. With `enqueued_at_ms = Int64.min` the worker used to die of an integer overflow
(SIGILL) after pushing the batch's replies, before writing their audit entries.

For each numeric job field at Int64.min/max, one past each, ±1e300 and -0: the worker stays alive
(same pid), the job gets a reply or a dead entry, a replied job has its audit entry in
{NS}:audit, and a good job pushed after it is signed."""

from __future__ import annotations

import pytest

from cfsign_support import INT64_MAX, INT64_MIN, OMIT, push

from .hostile_support import (
    assert_still_the_same_worker,
    audited,
    outcome_of,
    raw_job,
    sign_good_job,
    start_worker,
)

VALUES = {
    "Int64.min": str(INT64_MIN),
    "Int64.max": str(INT64_MAX),
    "Int64.min-1": str(INT64_MIN - 1),
    "Int64.max+1": str(INT64_MAX + 1),
    "1e300": "1e300",
    "-1e300": "-1e300",
    "-0": "-0",
}

FIELDS = ["enqueued_at_ms", "round_expiry", "expires_in", "expires_at", "starts_at"]


@pytest.mark.parametrize("value", VALUES, ids=list(VALUES))
@pytest.mark.parametrize("field", FIELDS)
def test_an_extreme_number_cannot_kill_a_worker(module_redis, workers, ns, test_keys, field, value):
    r, worker = start_worker(module_redis, workers, ns, test_keys)
    text = VALUES[value]
    attack = f"{field}={value} ({text})"
    job_id = f"{field}-{value}"
    # The attack is the job's only expiry when it is expires_at or expires_in (`job` would add
    # expires_in=3600 otherwise).
    omit = {"expires_in": OMIT} if field in ("expires_in", "expires_at") else {}
    item = raw_job(ns, job_id, tail=f',"{field}":{text}', **omit)
    push(module_redis.client(), ns, [item])

    outcome = outcome_of(r, ns, f"{{{ns}}}:reply:h", job_id, worker, attack)
    if "dead" not in outcome:
        audited(r, ns, job_id, worker, attack)
    sign_good_job(r, ns, worker, attack)
    assert_still_the_same_worker(r, ns, worker, attack)
