"""Redis Sentinel: a worker given `redis+sentinel://s1,s2,s3/master` finds the master, follows a
failover, and loses no job that the promoted replica holds.

Topology per test: a master, one replica, three redis-sentinel processes (quorum 2,
down-after-milliseconds 1000, failover-timeout 3000), all on loopback. Replication is
asynchronous, so the producer runs `WAIT 1 1000` after each push: a job whose WAIT saw the replica
acknowledge it is on the replica, and must be answered after the failover. Duplicates (a job taken
or answered on the old master whose removal did not reach the replica) are allowed and counted.
"""

from __future__ import annotations

import collections
import json
import signal
import threading
import time

import pytest
import redis
from redis.sentinel import Sentinel

from .ha_support import (
    RedisNode,
    cli,
    collect_ids,
    free_ports,
    heartbeat,
    job,
    keygroup_document,
    namespace,
    start_sentinel,
    start_worker,
    wait_registered,
    wait_until,
)

MASTER = "cfsign-ha"


class SentinelSetup:
    def __init__(self, procs, folder):
        master_port, replica_port, *sentinel_ports = free_ports(5)
        self.master = RedisNode(procs, folder / "master", master_port, "redis-master")
        self.replica = RedisNode(procs, folder / "replica", replica_port, "redis-replica",
                                 ["--replicaof", "127.0.0.1", str(master_port)])
        self.sentinel_ports = sentinel_ports
        wait_until(lambda: self.replica.client().info("replication").get("master_link_status") == "up", 20,
                   what="the replica to sync with the master")
        for i, p in enumerate(sentinel_ports):
            start_sentinel(procs, folder / f"sentinel-{i}", p, MASTER, master_port, f"sentinel-{p}")

        def discovered():
            for p in sentinel_ports:
                s = redis.Redis(port=p, socket_timeout=2, decode_responses=True)
                if len(s.sentinel_slaves(MASTER)) < 1 or len(s.sentinel_sentinels(MASTER)) < 2:
                    return False
            return True

        # Sentinels find the replica and each other through the master (hello messages every 2 s).
        wait_until(discovered, 30, interval=0.2, what="every sentinel to know the replica and the other two sentinels")
        self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in sentinel_ports) + f"/{MASTER}"
        self.sentinel = Sentinel([("127.0.0.1", p) for p in sentinel_ports], socket_timeout=1, socket_connect_timeout=1)

    def master_port(self) -> int:
        host, port = self.sentinel.discover_master(MASTER)
        return int(port)

    def master_client(self) -> redis.Redis:
        return self.sentinel.master_for(MASTER, socket_timeout=3, socket_connect_timeout=1)

    def wait_new_master(self, old_port: int, timeout: float = 30) -> int:
        def promoted():
            try:
                port = self.master_port()
            except redis.RedisError:
                return None
            if port == old_port:
                return None
            role = redis.Redis(port=port, socket_timeout=1).execute_command("ROLE")
            return port if role[0] == b"master" else None

        return wait_until(promoted, timeout, interval=0.1, what="the sentinels to promote the replica")


@pytest.fixture
def sentinel_setup(procs, tmp_path):
    return SentinelSetup(procs, tmp_path)


def start_sentinel_worker(procs, cfsign_bin, setup: SentinelSetup, ns: str, ec_key, worker_id: str, env=None):
    master = setup.master_client()
    master.set(f"{{{ns}}}:keygroup", keygroup_document(ec_key))
    master.execute_command("WAIT", 1, 2000)
    proc = start_worker(procs, cfsign_bin, setup.url, ns, worker_id, args=["--concurrency", "2", "--batch-size", "16"], env=env)
    wait_registered(procs, proc, worker_id, ns, lambda key, member: setup.master_client().sismember(key, member))
    return proc


class Collector(threading.Thread):
    """Reads replies from whichever node is the master, through the sentinels, until stopped."""

    def __init__(self, setup: SentinelSetup, key: str):
        super().__init__(daemon=True)
        self.setup = setup
        self.key = key
        self.ids: collections.Counter[str] = collections.Counter()
        self.refused: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self):
        client = None
        while not self.stop.is_set():
            try:
                if client is None:
                    client = self.setup.master_client()
                got = client.blpop([self.key], timeout=0.5)
                if got is None:
                    continue
                # Count the popped reply before the next call: if the master dies during the LPOP,
                # the BLPOP's removal is already replicated and the reply exists only here.
                self.count([got[1]])
                self.count(client.lpop(self.key, 1000) or [])
            except (redis.RedisError, OSError):
                client = None
                time.sleep(0.1)

    def count(self, batch: list[bytes]):
        with self.lock:
            for raw in batch:
                reply = json.loads(raw)
                if reply.get("ok") is not True:
                    self.refused.append(reply)
                self.ids[reply["id"]] += 1

    def seen(self) -> set[str]:
        with self.lock:
            return set(self.ids)


def test_failover_under_load_loses_no_replicated_job(procs, cfsign_bin, sentinel_setup, ec_key):
    ns = namespace("sentinel-failover")
    worker_id = "w-sentinel"
    worker = start_sentinel_worker(procs, cfsign_bin, sentinel_setup, ns, ec_key, worker_id)
    reply_key = f"{{{ns}}}:reply:t"
    collector = Collector(sentinel_setup, reply_key)
    collector.start()

    confirmed: list[str] = []      # WAIT 1 1000 said the replica has it
    unconfirmed: list[str] = []    # the push or the WAIT failed or timed out: may be lost
    stop = threading.Event()

    def produce():
        client = sentinel_setup.master_client()
        i = 0
        while not stop.is_set():
            job_id = f"f-{i}"
            i += 1
            try:
                client.lpush(f"{{{ns}}}:jobs", job(ns, job_id))
                acked = client.execute_command("WAIT", 1, 1000)
                (confirmed if acked >= 1 else unconfirmed).append(job_id)
            except (redis.RedisError, OSError):
                unconfirmed.append(job_id)
                time.sleep(0.05)
            time.sleep(0.002)

    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        # Under load: the worker has answered some jobs and the producer keeps pushing.
        wait_until(lambda: len(confirmed) >= 300 and len(collector.seen()) >= 100, 30, what="jobs flowing before the kill")
        old_port = sentinel_setup.master.port
        sentinel_setup.master.kill()  # kill -9 the master
        killed_at = time.monotonic()
        new_port = sentinel_setup.wait_new_master(old_port)
        failover_seconds = time.monotonic() - killed_at
        # The new master has no replica: WAIT would time out; stop the WAITing producer and push
        # a last batch straight to the new master, which must be served too.
        stop.set()
        producer.join(timeout=10)
        after = [f"after-{i}" for i in range(100)]
        redis.Redis(port=new_port, socket_timeout=5).lpush(f"{{{ns}}}:jobs", *[job(ns, i) for i in after])
        expected = set(confirmed) | set(after)
        deadline = time.monotonic() + 60
        while not expected <= collector.seen() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not expected <= collector.seen():
            # Say where the unanswered jobs are, so a failure can be read without a rerun.
            nm = redis.Redis(port=new_port, socket_timeout=5)
            missing = sorted(expected - collector.seen())
            where = {"queue": nm.llen(f"{{{ns}}}:jobs"), "inflight": nm.llen(f"{{{ns}}}:inflight:{worker_id}"),
                     "dead": nm.llen(f"{{{ns}}}:dead"), "replies waiting": nm.llen(reply_key)}
            pytest.fail(f"{len(missing)} of {len(expected)} replicated jobs unanswered 60 s after the failover "
                        f"(e.g. {missing[:5]}); on the new master: {where}")
    finally:
        stop.set()
        collector.stop.set()
        producer.join(timeout=10)
        collector.join(timeout=10)

    assert not collector.refused, f"every job signed: {collector.refused[:3]}"
    duplicates = sum(n - 1 for n in collector.ids.values() if n > 1)
    unconfirmed_answered = len(set(unconfirmed) & set(collector.ids))
    print(f"\nsentinel failover: kill -9 master :{old_port} -> new master :{new_port} after {failover_seconds:.1f} s; "
          f"{len(confirmed)} replicated jobs + {len(after)} after the failover all answered; "
          f"{duplicates} duplicate replies; {unconfirmed_answered}/{len(unconfirmed)} unconfirmed jobs answered")
    new_master = redis.Redis(port=new_port, socket_timeout=5)
    hb = wait_until(lambda: (h := heartbeat(new_master, ns, worker_id)) and h["reconnects"] >= 1 and h, 20,
                    what="the worker's heartbeat on the new master with reconnects >= 1")
    assert hb["reconnects"] >= 1
    assert worker.poll() is None, "the worker must survive the failover"
    # Nothing left behind on the new master: the queue and the worker's in-flight list are empty.
    wait_until(lambda: new_master.llen(f"{{{ns}}}:jobs") == 0 and new_master.llen(f"{{{ns}}}:inflight:{worker_id}") == 0, 20,
               what="the queue and the in-flight list to drain on the new master")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0


def test_manual_failover_is_followed_before_the_old_master_is_demoted(procs, cfsign_bin, sentinel_setup, ec_key):
    """SENTINEL FAILOVER keeps the old master up, still a master, for ~10 s until Sentinel converts
    it into a replica; its connections keep working. The worker asks the Sentinels with each
    heartbeat and moves every connection to the new master as soon as they name it, so jobs
    pushed to the new master are answered well within that window."""
    ns = namespace("sentinel-switch")
    worker_id = "w-sentinel-switch"
    # Key-group polling slowed right down: a rotation after the switch must arrive by pub/sub,
    # so the subscription must have moved to the new master too.
    worker = start_sentinel_worker(procs, cfsign_bin, sentinel_setup, ns, ec_key, worker_id,
                                   env={"CFSIGN_KEYGROUP_POLL_INTERVAL": "120"})
    # The CLI reaches the master through the Sentinels too; a master name they do not know is an error.
    status = cli(cfsign_bin, "status", "--json", "--redis", sentinel_setup.url, "--namespace", ns)
    assert status.returncode == 0, status.stderr
    assert worker_id in status.stdout
    bad = cli(cfsign_bin, "status", "--redis", sentinel_setup.url.replace(MASTER, "no-such-master"), "--namespace", ns)
    assert bad.returncode != 0
    assert "no-such-master" in bad.stderr and "Sentinel" in bad.stderr, bad.stderr
    old_port = sentinel_setup.master.port
    redis.Redis(port=sentinel_setup.sentinel_ports[0], socket_timeout=5).execute_command("SENTINEL", "FAILOVER", MASTER)
    new_port = sentinel_setup.wait_new_master(old_port)
    switched_at = time.monotonic()
    new_master = redis.Redis(port=new_port, socket_timeout=5)
    ids = [f"s-{i}" for i in range(100)]
    new_master.lpush(f"{{{ns}}}:jobs", *[job(ns, i) for i in ids])
    replies = collect_ids(new_master, f"{{{ns}}}:reply:t", set(ids), 30)
    answered_after = time.monotonic() - switched_at
    assert {r["id"] for r in replies} >= set(ids), procs.log(f"worker-{worker_id}")[-3000:]
    old_role = redis.Redis(port=old_port, socket_timeout=5).execute_command("ROLE")[0]
    print(f"\nmanual failover: jobs on the new master answered {answered_after:.1f} s after the switch; old master's role then: {old_role.decode()}")
    assert answered_after < 6, f"the worker took {answered_after:.1f} s to follow the failover"
    assert "the Sentinels name a new master" in procs.log(f"worker-{worker_id}")
    new_master.set(f"{{{ns}}}:keygroup", keygroup_document(ec_key, version=2))
    new_master.publish(f"{{{ns}}}:keygroup:changed", "2")
    wait_until(lambda: (h := heartbeat(new_master, ns, worker_id)) and h["keygroup_version"] == 2, 10,
               what="the rotation announced on the new master to reach the worker")
    hb = wait_until(lambda: (h := heartbeat(new_master, ns, worker_id)) and h["reconnects"] >= 1 and h, 20,
                    what="the worker's heartbeat on the new master with reconnects >= 1")
    assert hb["state"] == "running"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
