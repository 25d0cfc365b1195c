"""Helpers of the ops suite: the repository's ops/ files, the real cfsign binary, redis-server and
`cfsign worker` processes on free loopback ports, and what `cfsign worker --help` says is real.

Every process started here is stopped by pid (SIGTERM, then SIGKILL after a bounded wait), and
every wait has a deadline.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


from cfsign_support import RedisServer as SharedRedisServer
from cfsign_support import clean_environment, free_port, http_get, stop_process, wait_until  # noqa: F401  (re-exported)

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


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=env or clean_environment(),
                          stdin=subprocess.DEVNULL, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# redis-server


@dataclass
class RedisServer:
    """One redis-server on a free loopback port (the shared launcher, cfsign_support.RedisServer),
    started by this suite and stopped by pid. `args` may start with a redis.conf path; the options
    after it override it (port, address, folder and no snapshots are ours)."""

    folder: Path
    args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None
    _server: SharedRedisServer | None = None

    def start(self) -> "RedisServer":
        config = self.args[0] if self.args and not self.args[0].startswith("--") else None
        extra = self.args[1:] if config is not None else list(self.args)
        self._server = SharedRedisServer(self.folder, appendonly=None, extra_args=extra, config=config).start()
        self.port, self.proc = self._server.port, self._server.proc
        return self

    def log(self) -> str:
        return self._server.log() if self._server else ""

    def url(self, user: str | None = None, password: str | None = None) -> str:
        if user is None:
            return f"redis://127.0.0.1:{self.port}"
        return f"redis://{user}:{password}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


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
