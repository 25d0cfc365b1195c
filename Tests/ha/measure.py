"""The capacity model's inputs, measured on one Redis node: Redis commands, bytes and Redis CPU per
job, from INFO commandstats / stats / cpu before and after a run of jobs (docs/SCALING.md).

Two runs per node: a backlog (N jobs pushed at once, taken in batches) and a trickle (one job at a
time, each reply awaited before the next push: the worst case for batching). The producer's own
commands are counted here; the worker's are the rest, minus the commands its Lua scripts run
inside Redis (counted by Redis too, listed separately).
"""

from __future__ import annotations

import json
import os
import time

from .ha_support import job

#: Commands that only the worker's Lua scripts run (inside EVALSHA), never a client.
SCRIPT_ONLY = {"rpop", "type", "lrem", "rpush", "expire", "ltrim", "lmove", "srem",
               "hlen", "hexists", "hdel", "hincrby", "lindex"}  # the poison-job bookkeeping (Scripts.swift)
#: What this module's producer sends.
PRODUCER = {"blpop", "lpop"}


def snapshot(node) -> dict:
    stats = node.info("stats")
    cpu = node.info("cpu")
    commands = {k[len("cmdstat_"):]: v for k, v in node.info("commandstats").items()}
    return {
        "in": stats["total_net_input_bytes"],
        "out": stats["total_net_output_bytes"],
        "processed": stats["total_commands_processed"],
        "cpu": cpu["used_cpu_user"] + cpu["used_cpu_sys"],
        "calls": {k: v["calls"] for k, v in commands.items()},
        "usec": {k: v["usec"] for k, v in commands.items()},
    }


def delta(after: dict, before: dict) -> dict:
    return {
        "in": after["in"] - before["in"],
        "out": after["out"] - before["out"],
        "processed": after["processed"] - before["processed"],
        "cpu": after["cpu"] - before["cpu"],
        "calls": {k: after["calls"].get(k, 0) - before["calls"].get(k, 0) for k in after["calls"]},
        "usec": {k: after["usec"].get(k, 0) - before["usec"].get(k, 0) for k in after["usec"]},
    }


def _run(node, producer, ns: str, n: int, trickle: bool) -> dict:
    key = f"{{{ns}}}:jobs"
    reply_key = f"{{{ns}}}:reply:measure"
    prefix = f"{'t' if trickle else 'b'}-{time.monotonic_ns()}"
    jobs = [job(ns, f"{prefix}-{i}", reply="measure") for i in range(n)]
    sent = {"lpush": 0, "blpop": 0, "lpop": 0}
    reply_bytes = 0
    # The cost of the snapshots themselves (INFO replies are kilobytes), to take off below.
    s0 = snapshot(node)
    s1 = snapshot(node)
    overhead = delta(s1, s0)
    started = time.monotonic()
    got = 0
    if trickle:
        for j in jobs:
            producer.lpush(key, j)
            sent["lpush"] += 1
            r = producer.blpop([reply_key], timeout=10)
            sent["blpop"] += 1
            assert r is not None, "a reply within 10 s"
            reply_bytes += len(r[1])
            got += 1
    else:
        for i in range(0, n, 500):
            producer.lpush(key, *jobs[i:i + 500])
            sent["lpush"] += 1
        deadline = time.monotonic() + 60
        while got < n and time.monotonic() < deadline:
            r = producer.blpop([reply_key], timeout=1)
            sent["blpop"] += 1
            if r is None:
                continue
            batch = [r[1]] + (producer.lpop(reply_key, 1000) or [])
            sent["lpop"] += 1
            got += len(batch)
            reply_bytes += sum(len(x) for x in batch)
        assert got == n, f"{got} of {n} replies"
    seconds = time.monotonic() - started
    s2 = snapshot(node)
    d = delta(s2, s1)
    calls = {k: v - overhead["calls"].get(k, 0) for k, v in d["calls"].items() if v - overhead["calls"].get(k, 0) > 0}
    calls.pop("info", None)
    usec = {k: v for k, v in d["usec"].items() if k in calls}
    script_inner = sum(v for k, v in calls.items() if k in SCRIPT_ONLY) + (calls.get("lpush", 0) - sent["lpush"])
    producer_commands = sum(sent.values())
    worker_commands = sum(calls.values()) - script_inner - producer_commands
    client_level = {k for k in calls if k not in SCRIPT_ONLY}
    return {
        "jobs": n,
        "seconds": round(seconds, 3),
        "job_bytes": round(sum(len(j) for j in jobs) / n, 1),
        "reply_bytes": round(reply_bytes / n, 1),
        "worker_commands_per_job": round(worker_commands / n, 3),
        "producer_commands_per_job": round(producer_commands / n, 3),
        "script_inner_commands_per_job": round(script_inner / n, 3),
        "redis_commands_per_job": round(sum(calls.values()) / n, 3),
        "bytes_per_job": round((d["in"] - overhead["in"] + d["out"] - overhead["out"]) / n, 1),
        "bytes_in_per_job": round((d["in"] - overhead["in"]) / n, 1),
        "bytes_out_per_job": round((d["out"] - overhead["out"]) / n, 1),
        "redis_usec_per_job": round(sum(usec.get(k, 0) for k in client_level) / n, 2),
        "redis_cpu_usec_per_job": round((d["cpu"] - overhead["cpu"]) * 1e6 / n, 2),
        "calls": dict(sorted(calls.items())),
    }


def measure_jobs(node, producer, ns: str, backlog: int, trickle: int) -> dict:
    """`node`: a plain client of the node that owns the namespace; `producer`: any client that
    reaches it (a RedisCluster on a cluster)."""
    return {"backlog": _run(node, producer, ns, backlog, False), "trickle": _run(node, producer, ns, trickle, True)}


def report(label: str, figures: dict) -> None:
    """Prints the figures; appends them as one JSON line to $CFSIGN_HA_REPORT when set."""
    for kind, f in figures.items():
        print(f"\n{label}, {kind}: " + ", ".join(f"{k}={v}" for k, v in f.items() if k != "calls") + f"\n  calls: {f['calls']}")
    path = os.environ.get("CFSIGN_HA_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"label": label, **figures}) + "\n")


# ---------------------------------------------------------------------------------------------
# Stand-alone: `cd Tests && python3 -m ha.measure --binary ../.build/release/cfsign --key ec`
# One redis-server and one worker on loopback; a backlog of jobs; the worker's CPU per job (from
# /proc/PID/stat) besides the Redis figures above. Prints one JSON object. docs/SCALING.md quotes it.


def _process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import signal
    import tempfile
    from pathlib import Path

    import redis

    from .ha_support import (Processes, RedisNode, free_ports, keygroup_document, namespace, openssl, start_worker,
                             wait_registered)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=str(Path(__file__).resolve().parents[2] / ".build" / "release" / "cfsign"))
    parser.add_argument("--key", choices=["rsa", "ec"], default="ec")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--trickle", type=int, default=0, help="then this many jobs one at a time (each reply awaited)")
    parser.add_argument("--concurrency", type=int, default=0, help="worker signing threads (0: the worker's default)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cfsign-measure-") as tmp:
        folder = Path(tmp)
        procs = Processes(folder)
        try:
            key = folder / "test-only-key.pem"
            if args.key == "rsa":
                openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
            else:
                openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
            os.chmod(key, 0o600)
            (port,) = free_ports(1)
            node = RedisNode(procs, folder / "redis", port, "redis")
            r = node.client()
            ns = namespace("measure")
            r.set(f"{{{ns}}}:keygroup", keygroup_document(key))
            worker_args = ["--concurrency", str(args.concurrency)] if args.concurrency else []
            worker = start_worker(procs, Path(args.binary), node.url, ns, "w-measure", args=worker_args,
                                  env={"CFSIGN_HEARTBEAT_INTERVAL": "2", "CFSIGN_HEARTBEAT_TTL": "6",
                                       "CFSIGN_BLOCK_TIMEOUT": "2", "CFSIGN_KEYGROUP_POLL_INTERVAL": "5"})
            try:
                wait_registered(procs, worker, "w-measure", ns, lambda k, m: r.sismember(k, m))
            except BaseException:
                print(procs.log("worker-w-measure")[-2000:])
                raise
            cpu0 = _process_cpu_seconds(worker.pid)
            result = _run(node.client(), r, ns, args.jobs, False)
            worker_cpu = _process_cpu_seconds(worker.pid) - cpu0
            result.update({
                "key": args.key,
                "binary": args.binary,
                "worker_cpu_usec_per_job": round(worker_cpu * 1e6 / args.jobs, 1),
                "jobs_per_worker_core_second": round(args.jobs / worker_cpu) if worker_cpu > 0 else None,
                "jobs_per_second_wall": round(args.jobs / result["seconds"]),
            })
            if args.trickle:
                cpu0 = _process_cpu_seconds(worker.pid)
                trickle = _run(node.client(), r, ns, args.trickle, True)
                worker_cpu = _process_cpu_seconds(worker.pid) - cpu0
                trickle["worker_cpu_usec_per_job"] = round(worker_cpu * 1e6 / args.trickle, 1)
                trickle["jobs_per_second_wall"] = round(args.trickle / trickle["seconds"])
                result["trickle"] = trickle
            print(json.dumps(result, indent=1))
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        finally:
            procs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
