"""Redis Cluster: every key of a namespace shares the `{NS}` hash tag, so one slot, so one master
serves all of it. A worker given any node of the cluster follows `MOVED` to that master, `ASK`
while the slot migrates, and several namespaces spread a fleet over the masters.

One cluster of three masters (`redis-cli --cluster create ... --cluster-replicas 0`) is shared by
the module; each test uses namespaces of its own.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import redis

from .ha_support import (
    KEY_ID,
    Cluster,
    Processes,
    cli,
    collect_ids,
    heartbeat,
    job,
    keygroup_document,
    namespace,
    push,
    start_worker,
    wait_registered,
    wait_until,
)
from .measure import measure_jobs, report


@pytest.fixture(scope="module")
def cluster_procs(tmp_path_factory, ha_tools):
    p = Processes(tmp_path_factory.mktemp("cluster"))
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def cluster(cluster_procs) -> Cluster:
    return Cluster(cluster_procs, cluster_procs.folder, masters=3)


@pytest.fixture
def rc(cluster):
    """A cluster-aware producer client (redis-py RedisCluster)."""
    client = cluster.client()
    try:
        yield client
    finally:
        client.close()


def store_keygroup_through(cfsign_bin, seed_port: int, ns: str, ec_key, folder) -> None:
    document = folder / f"keygroup-{ns}.json"
    document.write_text(keygroup_document(ec_key))
    result = cli(cfsign_bin, "keygroup", "set", str(document), "--redis", f"redis://127.0.0.1:{seed_port}", "--namespace", ns)
    assert result.returncode == 0, result.stderr


def start_cluster_worker(procs, cfsign_bin, rc, seed_port: int, ns: str, worker_id: str, env=None):
    proc = start_worker(procs, cfsign_bin, f"redis://127.0.0.1:{seed_port}", ns, worker_id, env=env)
    wait_registered(procs, proc, worker_id, ns, lambda key, member: rc.sismember(key, member))
    return proc


def test_worker_and_cli_through_a_node_that_does_not_own_the_slot(procs, cfsign_bin, cluster, rc, ec_key, tmp_path):
    ns = namespace("cluster-seed")
    slot = cluster.slot(f"{{{ns}}}:jobs")
    owner = cluster.owner_port(slot)
    seed = next(p for p in cluster.ports if p != owner)
    # Every key of the namespace hashes to the same slot.
    for suffix in ("jobs", "keygroup", "workers", "dead", "reply:t", "inflight:w", "worker:w"):
        assert cluster.slot(f"{{{ns}}}:{suffix}") == slot
    # The seed really is the wrong node: it answers MOVED for the namespace's keys.
    with pytest.raises(redis.exceptions.MovedError):
        redis.Redis(port=seed).llen(f"{{{ns}}}:jobs")

    store_keygroup_through(cfsign_bin, seed, ns, ec_key, tmp_path)
    assert json.loads(rc.get(f"{{{ns}}}:keygroup"))["version"] == 1
    worker_id = "w-seed"
    worker = start_cluster_worker(procs, cfsign_bin, rc, seed, ns, worker_id)
    ids = [f"c-{i}" for i in range(300)]
    push(rc, ns, ids, chunk=100)
    replies = collect_ids(rc, f"{{{ns}}}:reply:t", set(ids), 30)
    assert {r["id"] for r in replies} == set(ids)
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]

    # Everything lives on the owner; the worker says it followed the redirect.
    owner_client = redis.Redis(port=owner)
    assert owner_client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) >= 3
    assert owner_client.sismember(f"{{{ns}}}:workers", worker_id)
    log = procs.log(f"worker-{worker_id}")
    assert "the namespace's slot is on another cluster node" in log and f":{owner}" in log
    hb = wait_until(lambda: (h := heartbeat(rc, ns, worker_id)) and h["jobs"] >= 300 and h, 10, what="a heartbeat counting every job")
    assert hb["reconnects"] == 0, hb  # following MOVED is not a lost connection

    # The operator's CLI through the same non-owner seed.
    status = cli(cfsign_bin, "status", "--json", "--redis", f"redis://127.0.0.1:{seed}", "--namespace", ns)
    assert status.returncode == 0, status.stderr
    assert worker_id in status.stdout
    shown = cli(cfsign_bin, "keygroup", "show", "--json", "--redis", f"redis://127.0.0.1:{seed}", "--namespace", ns)
    assert shown.returncode == 0 and json.loads(shown.stdout)["keygroup"]["version"] == 1, shown.stdout + shown.stderr
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert not rc.sismember(f"{{{ns}}}:workers", worker_id), "deregistered on the owner"


def test_namespaces_spread_a_fleet_over_the_masters(procs, cfsign_bin, cluster, rc, ec_key, tmp_path):
    chosen = cluster.namespaces_on_distinct_masters(3, "cluster-spread")
    # 1, 2 and 3 namespaces land on 1, 2 and 3 masters.
    for n in (1, 2, 3):
        assert len({port for _, port in chosen[:n]}) == n
    seed = cluster.ports[0]
    workers = []
    for i, (ns, _) in enumerate(chosen):
        store_keygroup_through(cfsign_bin, seed, ns, ec_key, tmp_path)
        workers.append(start_cluster_worker(procs, cfsign_bin, rc, seed, ns, f"w-spread-{i}"))
    wanted = {}
    for ns, _ in chosen:
        wanted[ns] = {f"{ns}-{i}" for i in range(150)}
        push(rc, ns, sorted(wanted[ns]), chunk=50)
    for ns, port in chosen:
        replies = collect_ids(rc, f"{{{ns}}}:reply:t", wanted[ns], 30)
        assert {r["id"] for r in replies} == wanted[ns], ns
        node = redis.Redis(port=port)
        assert node.execute_command("CLUSTER", "COUNTKEYSINSLOT", cluster.slot(f"{{{ns}}}:jobs")) >= 3
        others = [p for p in cluster.ports if p != port]
        for other in others:
            with pytest.raises(redis.exceptions.MovedError):
                redis.Redis(port=other).exists(f"{{{ns}}}:workers")
    print("\nnamespaces -> masters: " + ", ".join(f"{ns} (slot {cluster.slot(f'{{{ns}}}:jobs')}) -> :{port}" for ns, port in chosen))
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(timeout=20) == 0


def test_slot_migration_ask_then_moved(procs, cfsign_bin, cluster, rc, ec_key, tmp_path):
    """The namespace's slot moves to another master while the worker runs, as `redis-cli --cluster
    reshard` moves it: IMPORTING/MIGRATING, MIGRATE key by key, SETSLOT NODE.

    While it migrates, a key already moved is answered with ASK: the worker's heartbeat (a
    pipelined SET + SADD; the SET's key is moved first) must keep being written on the target via
    ASKING. Multi-key commands whose keys are split or missing get TRYAGAIN (Redis's rule), so no
    job is taken until the slot is handed over; nothing is lost. Then the worker follows MOVED."""
    ns = namespace("cluster-migrate")
    slot = cluster.slot(f"{{{ns}}}:jobs")
    source = cluster.owner_port(slot)
    target = next(p for p in cluster.ports if p != source)
    store_keygroup_through(cfsign_bin, source, ns, ec_key, tmp_path)
    worker_id = "w-migrate"
    worker = start_cluster_worker(procs, cfsign_bin, rc, source, ns, worker_id)
    src, dst = redis.Redis(port=source, socket_timeout=10), redis.Redis(port=target, socket_timeout=10)
    first = [f"m1-{i}" for i in range(50)]
    push(rc, ns, first)
    assert {r["id"] for r in collect_ids(rc, f"{{{ns}}}:reply:t", set(first), 20)} == set(first)

    heartbeat_key = f"{{{ns}}}:worker:{worker_id}"

    def heartbeat_on_target():
        pipe = dst.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.get(heartbeat_key)
        raw = pipe.execute()[1]
        return json.loads(raw) if raw else None

    src_id, dst_id = cluster.node_id(source), cluster.node_id(target)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    try:
        src.execute_command("MIGRATE", "127.0.0.1", target, heartbeat_key, 0, 5000)
        moved_at = int(time.time() * 1000)
        hb = wait_until(lambda: (h := heartbeat_on_target()) and h["seen_at"] > moved_at + 600 and h, 10,
                        what="the worker's heartbeat written on the target through ASK")
        assert hb["state"] == "running"
        second = [f"m2-{i}" for i in range(100)]
        push(rc, ns, second, chunk=10)  # the producer's LPUSH lands on the target through ASK too
        time.sleep(1)
    finally:
        for _ in range(100):
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        for port in [target, source] + [p for p in cluster.ports if p not in (source, target)]:
            redis.Redis(port=port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    wait_until(lambda: cluster.owner_port(slot) == target, 10, what="every node to agree on the new owner")
    third = [f"m3-{i}" for i in range(100)]
    push(rc, ns, third, chunk=10)
    replies = collect_ids(rc, f"{{{ns}}}:reply:t", set(second) | set(third), 30)
    assert {r["id"] for r in replies} == set(second) | set(third)
    assert all(r["ok"] for r in replies)
    wait_until(lambda: (h := heartbeat(dst, ns, worker_id)) and h["jobs"] >= 250 and h, 10, what="the heartbeat on the new owner")
    assert dst.sismember(f"{{{ns}}}:workers", worker_id)
    log = procs.log(f"worker-{worker_id}")
    assert f":{target}" in log and "the namespace's slot is on another cluster node" in log
    assert worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0


def test_commands_and_bytes_per_job_on_the_owner(procs, cfsign_bin, cluster, rc, ec_key, tmp_path):
    """The capacity model's inputs, measured on the master that owns the namespace (INFO
    commandstats, INFO stats net bytes, INFO cpu), for a backlog and for one job at a time."""
    ns = namespace("cluster-measure")
    owner = cluster.owner_port(cluster.slot(f"{{{ns}}}:jobs"))
    seed = next(p for p in cluster.ports if p != owner)
    store_keygroup_through(cfsign_bin, seed, ns, ec_key, tmp_path)
    # The worker's default timing (heartbeat every 2 s, 2 s blocks), as in production.
    worker = start_cluster_worker(procs, cfsign_bin, rc, seed, ns, "w-measure",
                                  env={"CFSIGN_HEARTBEAT_INTERVAL": "2", "CFSIGN_HEARTBEAT_TTL": "6",
                                       "CFSIGN_BLOCK_TIMEOUT": "2", "CFSIGN_KEYGROUP_POLL_INTERVAL": "5"})
    figures = measure_jobs(redis.Redis(port=owner, socket_timeout=10), rc, ns, backlog=2000, trickle=200)
    report("cluster owner node", figures)
    backlog, trickle = figures["backlog"], figures["trickle"]
    # A backlog is taken in batches: about one script call per job, plus little else.
    assert backlog["worker_commands_per_job"] < 1.5, figures
    assert backlog["bytes_per_job"] < 2500, figures
    # One job at a time: a take, a block, a reply, at most a few round trips each.
    assert trickle["worker_commands_per_job"] < 6, figures
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0


def test_edge_reads_the_key_group_through_a_node_that_does_not_own_the_slot(procs, cfsign_bin, cluster, ec_key, tmp_path):
    """`cfsign edge --keygroup-from-redis` follows MOVED the way the worker does (issue 14)."""
    ns = namespace("cluster-edge")
    owner = cluster.owner_port(cluster.slot(f"{{{ns}}}:keygroup"))
    seed = next(p for p in cluster.ports if p != owner)
    store_keygroup_through(cfsign_bin, seed, ns, ec_key, tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("hello")
    edge = procs.start("edge", [str(cfsign_bin), "edge", "--root", str(site), "--listen", "127.0.0.1:0", "--keygroup-from-redis",
                                "--redis", f"redis://127.0.0.1:{seed}", "--namespace", ns, "--log-level", "debug"])
    wait_until(lambda: edge.poll() is not None or "trusted_key_ids=" in procs.log("edge"), 20, what="the edge's start-up line")
    log = procs.log("edge")
    assert edge.poll() is None, f"the edge did not start through seed node {seed} (slot on {owner}):\n{log[-2000:]}"
    assert f"trusted_key_ids={KEY_ID}" in log, log[-2000:]
