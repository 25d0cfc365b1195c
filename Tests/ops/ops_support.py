"""Helpers of the ops suite: the repository's ops/ files, the real cfsign binary, redis-server and
`cfsign worker` processes on free loopback ports, and what `cfsign worker --help` says is real.

Every process started here is stopped by pid (SIGTERM, then SIGKILL after a bounded wait), and
every wait has a deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OPS = REPO_ROOT / "ops"
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "cfsign"

#: Fast timing so the worker notices things within a fraction of a second.
FAST_TIMING = {
    "CFSIGN_HEARTBEAT_INTERVAL": "0.3",
    "CFSIGN_HEARTBEAT_TTL": "0.9",
    "CFSIGN_KEYGROUP_POLL_INTERVAL": "0.3",
    "CFSIGN_BLOCK_TIMEOUT": "0.3",
}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls `predicate` until it returns something truthy (returned), or fails after `timeout` s."""
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
    """This process's environment without any CFSIGN_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFSIGN_")}
    env.update(extra or {})
    return env


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


def http_get(url: str, timeout: float = 2) -> tuple[int, str]:
    """(status, body) of a GET; (0, error text) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=env or clean_environment(),
                          stdin=subprocess.DEVNULL, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# redis-server


@dataclass
class RedisServer:
    """One redis-server on a free loopback port, started by this suite and stopped by pid."""

    folder: Path
    args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed; run scripts/setup")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = open(self.folder / "redis.log", "w")
        # Options after the config file (if any) override it: port, address and folder are ours.
        cmd = ["redis-server", *self.args, "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.folder), "--save", "", "--daemonize", "no", "--logfile", ""]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

        def up() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited at start: {self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_until(up, 10, "redis-server to listen")
        return self

    def log(self) -> str:
        return (self.folder / "redis.log").read_text(errors="replace")

    def url(self, user: str | None = None, password: str | None = None) -> str:
        if user is None:
            return f"redis://127.0.0.1:{self.port}"
        return f"redis://{user}:{password}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# ---------------------------------------------------------------------------------------------
# cfsign worker


@dataclass
class WorkerProcess:
    """A running `cfsign worker`; stderr goes to a file."""

    proc: subprocess.Popen
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.proc)


def start_worker(cfsign_bin: Path, folder: Path, args: list[str], env: dict[str, str] | None = None) -> WorkerProcess:
    folder.mkdir(parents=True, exist_ok=True)
    stderr_path = folder / f"worker-{time.monotonic_ns()}.err"
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen([str(cfsign_bin), "worker", *args], stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, env=clean_environment({**FAST_TIMING, **(env or {})}))
    return WorkerProcess(proc, stderr_path)


def make_key(cfsign_bin: Path, folder: Path, name: str) -> Path:
    """A fresh test-only EC P-256 key, made with `cfsign keys generate` (mode 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    result = run([str(cfsign_bin), "keys", "generate", "--type", "ec", "--out", str(folder), "--name", name])
    assert result.returncode == 0, result.stderr
    path = folder / f"{name}.pem"
    assert path.is_file() and (path.stat().st_mode & 0o077) == 0
    return path


# ---------------------------------------------------------------------------------------------
# What the binary says is real


@dataclass(frozen=True)
class WorkerInterface:
    """`cfsign worker --help`: its flags, and the settings it reads from files and CFSIGN_*."""

    flags: frozenset[str]
    settings: frozenset[str]

    @property
    def environment_names(self) -> frozenset[str]:
        return frozenset("CFSIGN_" + s.upper() for s in self.settings)


def worker_interface(cfsign_bin: Path) -> WorkerInterface:
    result = run([str(cfsign_bin), "worker", "--help"])
    assert result.returncode == 0, result.stderr
    text = result.stdout
    usage = text[text.index("USAGE:"):]
    flags = frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", usage))
    match = re.search(r"Settings \(file key / CFSIGN_ variable\):(.*?)\.\s", text, re.S)
    assert match, f"`cfsign worker --help` no longer lists its settings:\n{text}"
    settings = frozenset(s.strip() for s in match.group(1).replace("\n", " ").split(",") if s.strip())
    assert "redis" in settings and "namespace" in settings, settings
    return WorkerInterface(flags, settings)


def config_keys(text: str) -> list[str]:
    """The keys of `key = value` lines (worker.conf format), commented-out examples included."""
    keys = []
    for line in text.splitlines():
        m = re.match(r"^\s*#?\s*([a-z][a-z0-9_]*)\s*=", line)
        if m:
            keys.append(m.group(1))
    return keys


def environment_names_in(text: str) -> set[str]:
    return set(re.findall(r"\bCFSIGN_[A-Z0-9_]+\b", text))
