"""Helpers of the system suite (fixtures are in conftest.py): redis-server and `cfsign worker`
processes, test-only keys, and the producer side of the protocol (push jobs, collect replies).

Most of them are shared by every Python suite and live in Tests/cfsign_support.py; this module
re-exports them and adds what only this suite checks. Every wait is bounded by a deadline; every
process is stopped by pid.
"""

from __future__ import annotations

from typing import Callable

import redis

from cfsign_support import (  # noqa: F401  (re-exported for the suite's tests)
    CLOUDFRONT_HOST,
    DEFAULT_BIN,
    FAST_TIMING,
    OMIT,
    REPO_ROOT,
    KeyEvents,
    RedisServer,
    TestKey,
    WorkerFactory,
    WorkerProcess,
    clean_environment,
    collect,
    collect_ids,
    dead_entries,
    encode,
    free_port,
    heartbeat,
    job,
    make_redis,
    openssl,
    push,
    store_keygroup,
    terminate,
    wait_until,
)
from cfsign_support import unique_namespace as _unique_namespace

#: The contract's stable error codes (PROTOCOL.md, "Reply").
ERROR_CODES = {
    "invalid_job", "missing_field", "invalid_url", "invalid_expiry", "ttl_too_long", "invalid_ip",
    "invalid_resource", "unsupported_hash", "policy_denied", "unknown_key", "no_signing_key", "key_unavailable", "internal",
}

_OMIT = OMIT


def unique_namespace(label: str) -> str:
    """A namespace no other test uses (1-64 of A-Z a-z 0-9 _ . -)."""
    return _unique_namespace(label, prefix="sys")


def assert_writes_confined(events: list[tuple[str, bytes]], ns: str, worker_ids: list[str], forbidden: list[str]) -> None:
    """Every write is to a key of the namespace the protocol allows; replies go only to reply lists."""
    prefix = f"{{{ns}}}:"
    allowed = {f"{prefix}jobs", f"{prefix}dead", f"{prefix}workers", f"{prefix}keygroup"}
    for w in worker_ids:
        allowed |= {f"{prefix}worker:{w}", f"{prefix}inflight:{w}"}
    for event, raw_key in events:
        key = raw_key.decode(errors="replace")
        assert key not in forbidden, f"the worker wrote to {key!r} ({event})"
        assert key in allowed or key.startswith(f"{prefix}reply:"), f"write outside the protocol's keys: {event} {key!r}"
        if event == "rpush":
            assert key.startswith(f"{prefix}reply:"), f"RPUSH onto {key!r}: a reply outside the reply lists"


def wait_heartbeat(r: redis.Redis, ns: str, worker_id: str, predicate: Callable[[dict], bool], timeout: float, what: str) -> dict:
    def check():
        hb = heartbeat(r, ns, worker_id)
        return hb if hb is not None and predicate(hb) else None

    return wait_until(check, timeout, what=what)
