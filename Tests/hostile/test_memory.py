"""Issue 13, attack 2 and "Memory": oversized jobs must not exhaust a worker's memory before they
are dead-lettered. 64 jobs of 2 MiB took one worker to ~280 MB peak RSS; under the shipped
Kubernetes limit (256Mi) each worker died in turn. A job over 64 KiB is moved to {NS}:dead inside
Redis (its dead entry holds only the first 1 KiB), and the shipped Redis settings bound the largest
element a producer can write at all (`proto-max-bulk-len 1mb`)."""

from __future__ import annotations

import re
import threading
import time

import pytest
import redis

from cfsign_support import REPO_ROOT, dead_entries, encode, job, make_redis, push, wait_until

from .hostile_support import DEADLINE, assert_still_the_same_worker, sign_good_job, start_worker

MiB = 1024 * 1024
PEAK_RSS_LIMIT = 100 * 1000 * 1000  # 100 MB
SHIPPED_REDIS_CONF = REPO_ROOT / "ops" / "redis" / "redis.conf"


class Stalls:
    """Pings Redis every 20 ms from its own connection while active: the longest a PING waited and
    how many BUSY answers (a script running past lua-time-limit) it got, i.e. how long the attack
    stalled Redis for every other client of the fleet."""

    def __init__(self, server):
        self.client = server.client(socket_timeout=60)
        self.longest = 0.0
        self.busy = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.client.ping()
            except redis.ResponseError as e:
                self.busy += str(e).startswith("BUSY")
            except redis.RedisError:
                pass
            self.longest = max(self.longest, time.monotonic() - t0)
            time.sleep(0.02)

    def stop(self) -> "Stalls":
        self._stop.set()
        self._thread.join(timeout=70)
        return self


def not_busy(predicate):
    """`predicate`, with Redis's BUSY answer (a long script) counted as "not yet"."""
    def check():
        try:
            return predicate()
        except redis.ResponseError as e:
            if str(e).startswith("BUSY"):
                return None
            raise
    return check


def big_job(ns: str, i: int, size: int = 2 * MiB) -> bytes:
    """A well-formed job padded to `size` bytes, so only its size is wrong."""
    head = encode(job(ns, f"big-{i}", reply="big"))[:-1] + b',"pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.fixture
def roomy_redis(tmp_path):
    """A Redis that accepts 2 MiB elements (as an unhardened Redis does), so the worker is tested."""
    server = make_redis(tmp_path / "redis-roomy", extra_args=["--proto-max-bulk-len", "512mb"])
    try:
        yield server
    finally:
        server.stop()


def test_64_jobs_of_2_mib_are_dead_lettered_without_growing_the_worker(roomy_redis, workers, ns, test_keys):
    attack = "64 jobs of 2 MiB, then a good job"
    r = roomy_redis.client(socket_timeout=30)
    # Queue the jobs before the worker starts, so its first take meets all 64 at once.
    push(r, ns, (big_job(ns, i) for i in range(64)), chunk=8)
    r, worker = start_worker(roomy_redis, workers, ns, test_keys, env={"CFSIGN_DEAD_LIST_LENGTH": "1000"})
    r = roomy_redis.client(socket_timeout=30)

    wait_until(not_busy(lambda: r.llen(f"{{{ns}}}:dead") >= 64 or not worker.alive()), DEADLINE * 2,
               what=f"attack: {attack}; all 64 on the dead list")
    assert worker.alive(), f"attack: {attack}; worker died with {worker.exit()}"
    sign_good_job(r, ns, worker, attack)

    dead = dead_entries(r, ns)
    ids = {m.group(1) for e in dead for m in [re.search(r'"id":"(big-\d+)"', e.get("job", ""))] if m}
    assert len(dead) == 64 and len(ids) == 64, f"attack: {attack}; {len(dead)} dead entries for {len(ids)} of the 64 jobs"
    longest = max(len(e["job"].encode()) for e in dead)
    assert longest <= 1024, f"attack: {attack}; a dead entry's `job` holds {longest} bytes (at most 1 KiB)"
    assert {e["error"]["code"] for e in dead} == {"invalid_job"}, f"attack: {attack}; codes {sorted({e['error']['code'] for e in dead})}"
    assert r.llen(f"{{{ns}}}:reply:big") == 0, f"attack: {attack}; an oversized job was answered"

    peak = worker.peak_rss_bytes()
    assert peak is not None, "VmHWM not readable in /proc"
    assert peak < PEAK_RSS_LIMIT, f"attack: {attack}; worker peak RSS (VmHWM) {peak / 1e6:.0f} MB, limit 100 MB"
    assert_still_the_same_worker(r, ns, worker, attack)


def shipped_proto_max_bulk_len() -> str:
    text = SHIPPED_REDIS_CONF.read_text()
    m = re.search(r"^\s*proto-max-bulk-len\s+(\S+)\s*$", text, re.M)
    assert m, f"attack: a 2 MiB job; {SHIPPED_REDIS_CONF.relative_to(REPO_ROOT)} sets no proto-max-bulk-len (Redis's default accepts 512 MB elements)"
    return m.group(1)


def test_the_shipped_redis_settings_refuse_a_2_mib_push(tmp_path, ns):
    value = shipped_proto_max_bulk_len()
    assert value.lower() == "1mb", f"ops/redis/redis.conf: proto-max-bulk-len {value}, expected 1mb (Redis's minimum)"
    server = make_redis(tmp_path / "redis-shipped", extra_args=["--proto-max-bulk-len", value])
    try:
        r = server.client()
        with pytest.raises((redis.ResponseError, redis.ConnectionError)) as refused:
            r.lpush(f"{{{ns}}}:jobs", big_job(ns, 0))
        assert "bulk" in str(refused.value).lower() or isinstance(refused.value, redis.ConnectionError), refused.value
        fresh = server.client()
        assert fresh.llen(f"{{{ns}}}:jobs") == 0, "attack: a 2 MiB LPUSH under proto-max-bulk-len 1mb; Redis stored it"
        # A job of the contract's largest size still goes through.
        fresh.lpush(f"{{{ns}}}:jobs", big_job(ns, 1, size=64 * 1024))
        assert fresh.llen(f"{{{ns}}}:jobs") == 1
    finally:
        server.stop()


def test_the_largest_jobs_the_shipped_settings_allow_do_not_stall_redis(tmp_path, workers, ns, test_keys):
    """Dead-lettering inside Redis must not trade the worker's memory for Redis's time. A producer
    pushes 300 jobs of just under 1 MiB (the most `proto-max-bulk-len 1mb` lets it write) to a
    worker with `batch_size = 1000` (the largest allowed): they are moved to the dead list while
    every other client of Redis still gets answers: no BUSY (one script past lua-time-limit, 5 s,
    refuses every client) and no stall of a second. A take script that pops by count alone copies
    300 MiB into one Lua call; one that stops at a byte budget stays in milliseconds."""
    attack = "300 jobs of 1 MiB (the largest the shipped proto-max-bulk-len allows), batch_size 1000"
    server = make_redis(tmp_path / "redis-shipped", extra_args=["--proto-max-bulk-len", "1mb"])
    try:
        r = server.client(socket_timeout=60)
        push(r, ns, (big_job(ns, i, size=MiB - 64) for i in range(300)), chunk=8)
        stalls = Stalls(server)
        try:
            _, worker = start_worker(server, workers, ns, test_keys,
                                     env={"CFSIGN_DEAD_LIST_LENGTH": "1000", "CFSIGN_BATCH_SIZE": "1000"})
            wait_until(not_busy(lambda: r.llen(f"{{{ns}}}:dead") >= 300 or not worker.alive()), DEADLINE * 3,
                       what=f"attack: {attack}; all 300 on the dead list")
        finally:
            stalls.stop()
        assert worker.alive(), f"attack: {attack}; worker died with {worker.exit()}"
        assert stalls.busy == 0 and stalls.longest < 1.0, (
            f"attack: {attack}; Redis stalled {stalls.longest:.1f} s for every other client "
            f"({stalls.busy} BUSY answers) while the worker took them")
        sign_good_job(r, ns, worker, attack)
    finally:
        server.stop()
