"""Helpers of the system suite (fixtures are in conftest.py): redis-server and `cfsign worker`
processes, test-only keys, and the producer side of the protocol (push jobs, collect replies).

Every wait here is bounded by a deadline: no loop can spin forever. Processes are stopped by pid.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import redis
from cryptography.hazmat.primitives import serialization

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "cfsign"

#: Fast timing for every worker of this suite (the contract's defaults are seconds).
FAST_TIMING = {
    "CFSIGN_HEARTBEAT_INTERVAL": "0.5",
    "CFSIGN_HEARTBEAT_TTL": "1.5",
    "CFSIGN_KEYGROUP_POLL_INTERVAL": "0.5",
    "CFSIGN_BLOCK_TIMEOUT": "0.5",
}

#: The contract's stable error codes (PROTOCOL.md, "Reply").
ERROR_CODES = {
    "invalid_job", "missing_field", "invalid_url", "invalid_expiry", "ttl_too_long", "invalid_ip",
    "invalid_resource", "unsupported_hash", "policy_denied", "unknown_key", "no_signing_key", "internal",
}

CLOUDFRONT_HOST = "https://d111111abcdef8.cloudfront.net"


# ---------------------------------------------------------------------------------------------
# Small helpers


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Polls `predicate` until it returns something truthy (returned) or `timeout` seconds pass (fails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any CFSIGN_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFSIGN_")}
    env.update(extra or {})
    return env


def unique_namespace(label: str) -> str:
    """A namespace no other test uses (1-64 of A-Z a-z 0-9 _ . -)."""
    label = re.sub(r"[^A-Za-z0-9_.-]", "-", label)[:40]
    return f"sys-{label}-{secrets.token_hex(4)}"


def terminate(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stops a process we started: SIGKILL by pid if it is still there, then reaps it."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


# ---------------------------------------------------------------------------------------------
# redis-server


class RedisServer:
    """One redis-server on a free loopback port, with its own data folder; stopped by pid."""

    def __init__(self, directory: Path, appendonly: bool = False, extra_args: list[str] | None = None):
        self.extra_args = list(extra_args or [])
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None
        self.log_path = directory / "redis-server.log"
        self._log = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.directory)]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += self.extra_args
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1).ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() >= deadline:
                pytest.fail(f"redis-server on port {self.port} did not answer PING within 10 s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown: the AOF is flushed), then SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                terminate(self.proc)
        if self.proc is not None:
            terminate(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(port=self.port, **kwargs)


def make_redis(directory: Path, appendonly: bool, extra_args: list[str] | None = None):
    server = RedisServer(directory, appendonly=appendonly, extra_args=extra_args)
    server.start()
    return server


# ---------------------------------------------------------------------------------------------
# Test-only keys


@dataclass(frozen=True)
class TestKey:
    __test__ = False  # not a test class

    key_id: str
    kind: str  # "rsa" or "ec"
    path: Path

    def private_key(self):
        return serialization.load_pem_private_key(self.path.read_bytes(), password=None)

    def public_key(self):
        return self.private_key().public_key()


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)


def store_keygroup(r: redis.Redis, ns: str, keys: Iterable[TestKey], active: TestKey | None = None, version: int = 1) -> None:
    """SET {NS}:keygroup to a group of these key files (first key active unless told)."""
    keys = list(keys)
    active = active or keys[0]
    document = {
        "version": version,
        "active": active.key_id,
        "keys": [{"id": k.key_id, "private_key_file": str(k.path)} for k in keys],
    }
    r.set(f"{{{ns}}}:keygroup", json.dumps(document))


# ---------------------------------------------------------------------------------------------
# Workers


class WorkerProcess:
    """One `cfsign worker` process; stderr goes to a log file, stdout to another."""

    def __init__(self, proc: subprocess.Popen, worker_id: str, ns: str, log_path: Path, out_path: Path):
        self.proc = proc
        self.worker_id = worker_id
        self.ns = ns
        self.log_path = log_path
        self.out_path = out_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.worker_id} did not exit within {timeout} s; log tail:\n{self.log()[-3000:]}")

    @property
    def inflight_key(self) -> str:
        return f"{{{self.ns}}}:inflight:{self.worker_id}"

    @property
    def heartbeat_key(self) -> str:
        return f"{{{self.ns}}}:worker:{self.worker_id}"


class WorkerFactory:
    """Starts workers and guarantees that each one is gone at teardown."""

    def __init__(self, binary: Path, folder: Path):
        self.binary = binary
        self.folder = folder
        self.started: list[WorkerProcess] = []
        self._files = []

    def start(self, server: RedisServer, ns: str, worker_id: str | None = None, concurrency: int | None = None,
              env: dict[str, str] | None = None, args: list[str] | None = None, wait: bool = True,
              fast: bool = True) -> WorkerProcess:
        """`cfsign worker --redis URL --namespace NS --worker-id ID [--concurrency N] ARGS`, with the
        suite's fast timing unless `fast` is False; waits until it is in {NS}:workers."""
        worker_id = worker_id or f"w{len(self.started) + 1}-{secrets.token_hex(3)}"
        command = ["--redis", server.url, "--namespace", ns, "--worker-id", worker_id]
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        command += args or []
        worker = self.spawn(command, worker_id, ns, env={**(FAST_TIMING if fast else {}), **(env or {})})
        if wait:
            self.wait_registered(server, worker)
        return worker

    def spawn(self, worker_args: list[str], label: str, ns: str, env: dict[str, str] | None = None) -> WorkerProcess:
        """`cfsign worker WORKER_ARGS` exactly, with a clean environment plus `env`; killed at teardown."""
        environment = clean_environment(env)
        log_path = self.folder / f"worker-{label}.stderr.log"
        out_path = self.folder / f"worker-{label}.stdout.log"
        err = open(log_path, "ab")
        out = open(out_path, "ab")
        self._files += [err, out]
        proc = subprocess.Popen([str(self.binary), "worker", *worker_args], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=environment)
        worker = WorkerProcess(proc, label, ns, log_path, out_path)
        self.started.append(worker)
        return worker

    @staticmethod
    def wait_registered(server: RedisServer, worker: WorkerProcess, timeout: float = 20) -> None:
        r = server.client()
        deadline = time.monotonic() + timeout
        while True:
            if not worker.alive():
                pytest.fail(f"worker {worker.worker_id} exited with {worker.proc.returncode} before registering:\n{worker.log()[-3000:]}")
            try:
                if r.sismember(f"{{{worker.ns}}}:workers", worker.worker_id):
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() >= deadline:
                pytest.fail(f"worker {worker.worker_id} did not register within {timeout} s:\n{worker.log()[-3000:]}")
            time.sleep(0.02)

    def close(self) -> None:
        for w in self.started:
            terminate(w.proc)
        for f in self._files:
            f.close()


# ---------------------------------------------------------------------------------------------
# Producer side


def job(ns: str, job_id: str, reply: str = "t", **fields) -> dict:
    """A job dict: defaults to a canned URL job that expires in an hour."""
    document = {"id": job_id, "reply_to": f"{{{ns}}}:reply:{reply}"}
    if "url" not in fields:
        document["url"] = f"{CLOUDFRONT_HOST}/private/{job_id}.pdf"
    if "expires_at" not in fields and "expires_in" not in fields:
        document["expires_in"] = 3600
    document.update(fields)
    return {k: v for k, v in document.items() if v is not _OMIT}


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


#: Pass as a field value to `job` to leave the field out.
_OMIT = OMIT = _Omit()


def encode(item: dict | bytes | str) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    return json.dumps(item, separators=(",", ":")).encode()


def push(r: redis.Redis, ns: str, items: Iterable[dict | bytes | str], chunk: int = 500) -> int:
    """LPUSH every item onto {NS}:jobs, in order (the first pushed is taken first)."""
    key = f"{{{ns}}}:jobs"
    batch: list[bytes] = []
    n = 0
    for item in items:
        batch.append(encode(item))
        if len(batch) >= chunk:
            r.lpush(key, *batch)
            n += len(batch)
            batch = []
    if batch:
        r.lpush(key, *batch)
        n += len(batch)
    return n


def collect(r: redis.Redis, key: str, count: int, timeout: float) -> list[dict]:
    """BLPOPs up to `count` replies from `key` within an overall deadline; returns them parsed."""
    replies: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(replies) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        got = r.blpop([key], timeout=min(1.0, max(0.05, left)))
        if got is None:
            continue
        replies.append(json.loads(got[1]))
        # Drain whatever else is already there in one round trip.
        more = r.lpop(key, count - len(replies)) if len(replies) < count else None
        for raw in more or []:
            replies.append(json.loads(raw))
    return replies


def collect_ids(r: redis.Redis, key: str, wanted: set[str], timeout: float) -> list[dict]:
    """BLPOPs replies until every id in `wanted` has been seen (duplicates kept), or the deadline."""
    replies: list[dict] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= seen:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        got = r.blpop([key], timeout=min(1.0, max(0.05, left)))
        if got is None:
            continue
        batch = [got[1]] + (r.lpop(key, 1000) or [])
        for raw in batch:
            reply = json.loads(raw)
            replies.append(reply)
            seen.add(reply.get("id"))
    return replies


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


def heartbeat(r: redis.Redis, ns: str, worker_id: str) -> dict | None:
    raw = r.get(f"{{{ns}}}:worker:{worker_id}")
    return json.loads(raw) if raw is not None else None


def dead_entries(r: redis.Redis, ns: str) -> list[dict]:
    return [json.loads(x) for x in r.lrange(f"{{{ns}}}:dead", 0, -1)]


def wait_heartbeat(r: redis.Redis, ns: str, worker_id: str, predicate: Callable[[dict], bool], timeout: float, what: str) -> dict:
    def check():
        hb = heartbeat(r, ns, worker_id)
        return hb if hb is not None and predicate(hb) else None

    return wait_until(check, timeout, what=what)


# ---------------------------------------------------------------------------------------------
# Watching every write


class KeyEvents:
    """Records every keyspace event (event name, key) of a redis-server while active.

    Uses keyspace notifications (`notify-keyspace-events EA`), so a write the worker should never
    make (a reply pushed into the queue, a key outside the namespace) shows up by name. A write to
    a marker key (`SET` of ``system-test-marker:<n>``, left out of `events`) is the barrier that
    says every earlier event has arrived.
    """

    MARKER = b"system-test-marker:"

    def __init__(self, server: RedisServer):
        self.client = server.client()
        self.client.config_set("notify-keyspace-events", "EA")
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("__keyevent@*__:*")
        self.events: list[tuple[str, bytes]] = []
        self._markers: set[bytes] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.barrier()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.pubsub.get_message(timeout=0.2)
            except (redis.RedisError, ValueError, OSError):
                return
            if message and message.get("type") == "pmessage":
                event = message["channel"].decode().split(":", 1)[1]
                key = message["data"]
                with self._lock:
                    if key.startswith(self.MARKER):
                        self._markers.add(key)
                    else:
                        self.events.append((event, key))

    def barrier(self, timeout: float = 10) -> None:
        """Returns once every event before this call has been recorded."""
        marker = self.MARKER + secrets.token_hex(6).encode()
        deadline = time.monotonic() + timeout
        while True:
            self.client.set(marker, b"1", px=60000)
            with self._lock:
                if marker in self._markers:
                    return
            if time.monotonic() >= deadline:
                pytest.fail("keyspace notifications did not arrive (notify-keyspace-events)")
            time.sleep(0.05)

    def snapshot(self) -> list[tuple[str, bytes]]:
        self.barrier()
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.pubsub.close()
        except (redis.RedisError, OSError):
            pass
