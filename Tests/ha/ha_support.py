"""Helpers of the high-availability suite: redis-server, redis-sentinel, Redis Cluster, stunnel and
`cfsign worker` processes on loopback, and the producer side of the protocol.

Copied in spirit from Tests/system/cfsign_system.py (suites do not import each other). Every wait
is bounded by a deadline; every process is started through `Processes`, which kills it by pid at
teardown, pass or fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import redis

from cfsign_support import collect_ids, free_port, heartbeat  # noqa: F401  (re-exported for the suite's tests)
from cfsign_support import push as _push
from cfsign_support import terminate
from cfsign_support import wait_until as _wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "cfsign"

#: Fast timing for every worker of this suite (the contract's defaults are seconds).
FAST_TIMING = {
    "CFSIGN_HEARTBEAT_INTERVAL": "0.5",
    "CFSIGN_HEARTBEAT_TTL": "1.5",
    "CFSIGN_KEYGROUP_POLL_INTERVAL": "0.5",
    "CFSIGN_BLOCK_TIMEOUT": "0.5",
    "CFSIGN_CONNECT_TIMEOUT": "1",
    "CFSIGN_COMMAND_TIMEOUT": "5",
}

CLOUDFRONT_HOST = "https://d111111abcdef8.cloudfront.net"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.05) -> Any:
    """cfsign_support.wait_until, with Redis and socket errors counted as "not yet" (nodes of a
    failover or a cluster come and go while this suite waits)."""
    return _wait_until(predicate, timeout, what=what, interval=interval, ignore=(redis.RedisError, OSError))


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any CFSIGN_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFSIGN_")}
    env.update(extra or {})
    return env


def namespace(label: str) -> str:
    label = re.sub(r"[^A-Za-z0-9_.-]", "-", label)[:30]
    return f"ha-{label}-{secrets.token_hex(4)}"


def openssl(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60, cwd=cwd)


# ---------------------------------------------------------------------------------------------
# Processes


class Processes:
    """Every process a test starts; all are SIGKILLed by pid and reaped at teardown."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.started: list[tuple[str, subprocess.Popen, Path]] = []
        self._files = []

    def start(self, label: str, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        log = self.folder / f"{label}.log"
        f = open(log, "ab")
        self._files.append(f)
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        self.started.append((label, proc, log))
        return proc

    def log(self, label: str) -> str:
        try:
            return (self.folder / f"{label}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        terminate(proc, grace=10)

    def close(self) -> None:
        for _, proc, _ in reversed(self.started):
            self.kill(proc)
        for f in self._files:
            f.close()

    def tails(self, limit: int = 3000) -> str:
        out = []
        for label, proc, log in self.started:
            if label.startswith("worker") or label.startswith("stunnel") or proc.returncode not in (None, -9):
                out.append(f"--- {label} (exit {proc.returncode}) ---\n{self.log(label)[-limit:]}")
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# redis-server, redis-sentinel, cluster


def ping(port: int, **kwargs) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, **kwargs).ping())
    except redis.RedisError:
        return False


class RedisNode:
    def __init__(self, procs: Processes, folder: Path, port: int, label: str, extra: list[str] | None = None, check: bool = True):
        self.port = port
        self.label = label
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(folder)] + list(extra or [])
        self.proc = procs.start(label, args)
        self.procs = procs
        if check:
            wait_until(lambda: self.proc.poll() is not None or ping(port), 10, what=f"{label} on port {port}")
            if self.proc.poll() is not None:
                pytest.fail(f"{label} exited with {self.proc.returncode}: {procs.log(label)[-2000:]}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(port=self.port, **kwargs)

    def kill(self) -> None:
        Processes.kill(self.proc)


def start_sentinel(procs: Processes, folder: Path, port: int, master: str, master_port: int, label: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / f"sentinel-{port}.conf"
    conf.write_text("\n".join([
        f"port {port}",
        "bind 127.0.0.1",
        "daemonize no",
        f"dir {folder}",
        f"sentinel monitor {master} 127.0.0.1 {master_port} 2",
        f"sentinel down-after-milliseconds {master} 1000",
        f"sentinel failover-timeout {master} 3000",
        f"sentinel parallel-syncs {master} 1",
        "",
    ]))
    proc = procs.start(label, ["redis-sentinel", str(conf)])
    wait_until(lambda: proc.poll() is not None or ping(port), 10, what=f"{label} on port {port}")
    if proc.poll() is not None:
        pytest.fail(f"{label} exited with {proc.returncode}: {procs.log(label)[-2000:]}")
    return proc


class Cluster:
    """A Redis Cluster of `len(ports)` masters made with `redis-cli --cluster create`."""

    def __init__(self, procs: Processes, folder: Path, masters: int = 3):
        self.nodes = [self._start_node(procs, folder) for _ in range(masters)]
        self.ports = [n.port for n in self.nodes]
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if create.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {create.stdout[-2000:]} {create.stderr[-2000:]}")

        def ready():
            for n in self.nodes:
                info = n.client().cluster("info")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != masters:
                    return False
            return True

        wait_until(ready, 20, interval=0.1, what="cluster_state:ok on every node")

    @staticmethod
    def _start_node(procs: Processes, folder: Path) -> RedisNode:
        """One cluster-enabled redis-server; its bus port is chosen too (`cluster-port`), not
        port + 10000, which may be taken. Retried on a port another process took meanwhile."""
        for attempt in range(5):
            port, bus = free_ports(2)
            node = RedisNode(procs, folder / f"node-{port}", port, f"cluster-{port}",
                             ["--cluster-enabled", "yes", "--cluster-port", str(bus),
                              "--cluster-config-file", str(folder / f"nodes-{port}.conf"), "--cluster-node-timeout", "2000"],
                             check=False)
            wait_until(lambda: node.proc.poll() is not None or ping(port), 10, what=f"cluster node on port {port}")
            if node.proc.poll() is None:
                return node
        pytest.fail(f"no cluster node would start: {procs.log(node.label)[-2000:]}")

    def client(self) -> "redis.cluster.RedisCluster":
        from redis.cluster import RedisCluster
        return RedisCluster(host="127.0.0.1", port=self.ports[0], socket_timeout=10)

    def slot(self, key: str) -> int:
        return int(self.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", key))

    def owner_port(self, slot: int) -> int:
        """The port of the master that serves `slot`, from CLUSTER NODES."""
        text = self.nodes[0].client().execute_command("CLUSTER", "NODES")
        text = text.decode() if isinstance(text, bytes) else text
        for line in text.splitlines():
            fields = line.split()
            if "master" not in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for r in fields[8:]:
                if r.startswith("["):
                    continue
                lo, _, hi = r.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return port
        pytest.fail(f"no master serves slot {slot}:\n{text}")

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def node_id(self, port: int) -> str:
        raw = self.node(port).client().execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else raw

    def namespaces_on_distinct_masters(self, count: int, label: str) -> list[tuple[str, int]]:
        """`count` fresh namespaces whose `{NS}` slots are served by `count` different masters."""
        chosen: list[tuple[str, int]] = []
        used: set[int] = set()
        for _ in range(500):
            ns = namespace(label)
            port = self.owner_port(self.slot(f"{{{ns}}}:jobs"))
            if port not in used:
                used.add(port)
                chosen.append((ns, port))
                if len(chosen) == count:
                    return chosen
        pytest.fail("could not find namespaces on distinct masters")


# ---------------------------------------------------------------------------------------------
# Keys, workers, the CLI


def make_ec_key(folder: Path) -> Path:
    """A fresh P-256 test key (mode 0600) in `folder`; test fixture only."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / "test-only-ec.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    os.chmod(path, 0o600)
    return path


KEY_ID = "KTESTONLYHA0001"


def keygroup_document(key: Path, version: int = 1) -> str:
    return json.dumps({"version": version, "active": KEY_ID, "keys": [{"id": KEY_ID, "private_key_file": str(key)}]})


def start_worker(procs: Processes, binary: Path, redis_url: str, ns: str, worker_id: str,
                 env: dict[str, str] | None = None, args: list[str] | None = None) -> subprocess.Popen:
    command = [str(binary), "worker", "--redis", redis_url, "--namespace", ns, "--worker-id", worker_id, "--log-level", "debug"]
    return procs.start(f"worker-{worker_id}", command + list(args or []), env=clean_environment({**FAST_TIMING, **(env or {})}))


def wait_registered(procs: Processes, proc: subprocess.Popen, worker_id: str, ns: str, is_member: Callable[[str, str], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"worker {worker_id} exited with {proc.returncode} before registering:\n{procs.log('worker-' + worker_id)[-3000:]}")
        try:
            if is_member(f"{{{ns}}}:workers", worker_id):
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() >= deadline:
            pytest.fail(f"worker {worker_id} did not register within {timeout} s:\n{procs.log('worker-' + worker_id)[-3000:]}")
        time.sleep(0.05)


def cli(binary: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=clean_environment(env))


# ---------------------------------------------------------------------------------------------
# Producer side


def job(ns: str, job_id: str, reply: str = "t") -> bytes:
    document = {"id": job_id, "reply_to": f"{{{ns}}}:reply:{reply}", "url": f"{CLOUDFRONT_HOST}/private/{job_id}.pdf", "expires_in": 3600}
    return json.dumps(document, separators=(",", ":")).encode()


def push(r, ns: str, ids: Iterable[str], chunk: int = 500, reply: str = "t") -> int:
    """LPUSH a job for each id (this suite's job shape), in chunks, through the shared helper."""
    return _push(r, ns, (job(ns, job_id, reply) for job_id in ids), chunk=chunk)
