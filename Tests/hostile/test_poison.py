"""Issue 13, "Poison jobs": a job that keeps killing the workers that take it must end in {NS}:dead
as `poison_job` after `max_recoveries` (default 3) moves back from dead workers' in-flight lists,
instead of taking the fleet down one worker at a time (contract, "Poison jobs").

The chain is made of real worker processes, each killed while it holds the job:
- a victim worker (batch_size 1, long heartbeat TTL) blocks in BLMOVE on the empty queue and is
  then stopped with SIGSTOP. Redis serves a blocked BLMOVE itself, so when the job reaches the
  queue it lands in the stopped victim's in-flight list, as if that worker had taken it and hung;
- the holder is then killed (SIGKILL) and its heartbeat key deleted (what its TTL would do a few
  seconds later), and a live worker (the reaper) moves its in-flight job back to the queue, where
  the next stopped victim, which has waited in BLMOVE longer than the reaper's own short BLMOVE,
  receives it.
Each round is one recovery; the job must be dead-lettered at the one past max_recoveries."""

from __future__ import annotations

import signal
import time

from cfsign_support import dead_entries, job, push, wait_until

from .hostile_support import assert_still_the_same_worker, sign_good_job, start_worker

MAX_RECOVERIES = 3  # the contract's default

#: A victim blocks long (20 s, so Redis still counts it as waiting however slow a loaded machine
#: makes a round) in BLMOVE, and keeps its heartbeat alive for 30 s once stopped, so only the test
#: decides when it "dies".
VICTIM = {
    "CFSIGN_BATCH_SIZE": "1",
    "CFSIGN_BLOCK_TIMEOUT": "20",
    "CFSIGN_COMMAND_TIMEOUT": "60",
    "CFSIGN_HEARTBEAT_INTERVAL": "10",
    "CFSIGN_HEARTBEAT_TTL": "30",
}


def blocked_in_blmove(r) -> set[int]:
    return {c["id"] for c in r.client_list() if c.get("cmd") == "blmove" and "b" in c.get("flags", "")}


def start_stopped_victim(server, workers, r, ns, label: str):
    """A victim worker, stopped (SIGSTOP) while its BLMOVE waits on the empty queue."""
    before = {c["id"] for c in r.client_list()}
    victim = workers.start(server, ns, worker_id=f"victim-{label}", env=VICTIM, fast=False)
    wait_until(lambda: (blocked_in_blmove(r) - before) or not victim.alive(), 10,
               what=f"victim {label} to block in BLMOVE")
    assert victim.alive(), f"victim {label} died at start: {victim.exit()}"
    victim.send(signal.SIGSTOP)
    # The reaper's own BLMOVE (0.5 s) is re-issued behind the victim's, so the victim is served first.
    time.sleep(0.8)
    return victim


def holds(r, worker, job_id: str) -> bool:
    return any(f'"{job_id}"' in raw.decode(errors="replace") for raw in r.lrange(worker.inflight_key, 0, -1))


def poison_entry(r, ns, job_id: str) -> dict | None:
    for entry in dead_entries(r, ns):
        if f'"{job_id}"' in entry.get("job", ""):
            return entry
    return None


def test_a_job_that_keeps_killing_workers_ends_as_poison_job(redis_server, workers, ns, test_keys):
    attack = "a poison job (every worker that takes it dies)"
    r, reaper = start_worker(redis_server, workers, ns, test_keys)
    job_id = "poison-1"

    holder = start_stopped_victim(redis_server, workers, r, ns, "1")
    push(r, ns, [job(ns, job_id, reply="poison")])
    wait_until(lambda: holds(r, holder, job_id), 15, what="the first victim to take the job")

    handed_on, entry = 0, None
    for round_ in range(2, MAX_RECOVERIES + 3):
        victim = start_stopped_victim(redis_server, workers, r, ns, str(round_))
        assert r.exists(holder.heartbeat_key), "test set-up too slow: the holder's heartbeat expired on its own"
        holder.send(signal.SIGKILL)
        holder.wait(5)
        r.delete(holder.heartbeat_key)  # the holder is dead: what its heartbeat TTL would do

        def settled():
            if holds(r, victim, job_id):
                return "handed on"
            return "dead" if poison_entry(r, ns, job_id) else None

        where = wait_until(settled, 20, what=f"attack: {attack}; the reaper to recover the job from {holder.worker_id}")
        if where == "dead":
            entry = poison_entry(r, ns, job_id)
            victim.send(signal.SIGKILL)
            r.delete(victim.heartbeat_key)
            break
        handed_on += 1
        holder = victim

    assert entry is not None, (f"attack: {attack}; recovered {handed_on} times from dead workers' in-flight lists and "
                               f"handed to the next worker each time, never dead-lettered as poison_job "
                               f"(max_recoveries {MAX_RECOVERIES})")
    assert handed_on == MAX_RECOVERIES, f"attack: {attack}; handed on {handed_on} times before poison_job, expected {MAX_RECOVERIES}"
    assert entry["error"]["code"] == "poison_job", f"attack: {attack}; dead entry {entry}"
    assert entry.get("recoveries") in (MAX_RECOVERIES, MAX_RECOVERIES + 1), f"attack: {attack}; dead entry `recoveries`: {entry}"
    assert r.llen(f"{{{ns}}}:reply:poison") == 0, "the poison job was answered as well as dead-lettered"
    assert not any(f'"{job_id}"' in raw.decode(errors="replace") for raw in r.lrange(f"{{{ns}}}:jobs", 0, -1)), \
        "the poison job is back on the queue as well"

    # The fleet is still there: the reaper signs a good job.
    wait_until(lambda: not any(v.alive() for v in workers.started if v is not reaper), 5, what="every victim to be gone")
    sign_good_job(r, ns, reaper, attack)
    assert_still_the_same_worker(r, ns, reaper, attack)
