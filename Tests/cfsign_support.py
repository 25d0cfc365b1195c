"""Helpers every Python suite shares (Tests/conftest.py puts Tests/ on sys.path, so any suite can
`import cfsign_support`): bounded waits, free loopback ports, redis-server and `cfsign worker`
processes, test-only keys, and the producer side of the protocol (jobs, pushes, replies).

Rules kept here so no suite has to remember them:
- every wait has a deadline and fails the test (naming what it waited for) when it passes;
- every process is started on 127.0.0.1 and stopped by its pid, never by name;
- redis-server runs without persistence unless asked (`--save ''`, `--appendonly no`);
- test keys are generated at test time (`test-only-*.pem`, mode 0600) and never committed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "cfsign"
CLOUDFRONT_HOST = "https://d111111abcdef8.cloudfront.net"

#: Fast timing for test workers (the contract's defaults are seconds).
FAST_TIMING = {
    "CFSIGN_HEARTBEAT_INTERVAL": "0.5",
    "CFSIGN_HEARTBEAT_TTL": "1.5",
    "CFSIGN_KEYGROUP_POLL_INTERVAL": "0.5",
    "CFSIGN_BLOCK_TIMEOUT": "0.5",
}

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


# ---------------------------------------------------------------------------------------------
# Small helpers


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.05,
               ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Polls `predicate` until it returns something truthy (returned) or `timeout` seconds pass
    (the test fails, naming `what`). Exceptions of the types in `ignore` count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any CFSIGN_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFSIGN_")}
    env.update(extra or {})
    return env


def unique_namespace(label: str, prefix: str = "t") -> str:
    """A namespace no other test uses (1-64 of A-Z a-z 0-9 _ . -)."""
    label = re.sub(r"[^A-Za-z0-9_.-]", "-", label)[:40]
    return f"{prefix}-{label}-{secrets.token_hex(4)}"


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


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> int | None:
    """SIGTERM by pid, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            terminate(proc)
        except ProcessLookupError:
            pass
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


def exit_description(returncode: int | None) -> str:
    """`rc -4 (SIGILL)` for a process killed by a signal, `rc 1` otherwise, `running` if alive."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"rc {returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"rc {returncode}"
    return f"rc {returncode}"


# ---------------------------------------------------------------------------------------------
# redis-server


class RedisServer:
    """One redis-server on a free 127.0.0.1 port with its own data folder; stopped by pid.

    No persistence unless `appendonly` (then fsync on every write, so it can be restarted without
    losing a job); `appendonly=None` leaves it to `config`, a redis.conf read first. `extra_args`
    come last, so they override anything before them."""

    def __init__(self, directory: Path, appendonly: bool | None = False, extra_args: list[str] | None = None,
                 config: Path | str | None = None):
        self.extra_args = list(extra_args or [])
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.log_path = directory / "redis-server.log"
        self._log = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> "RedisServer":
        import redis  # only suites that start Redis need the client library

        args = ["redis-server"] + ([str(self.config)] if self.config is not None else [])
        args += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.directory),
                 "--daemonize", "no", "--logfile", ""]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        elif self.appendonly is not None:
            args += ["--appendonly", "no"]
        args += self.extra_args
        self._log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            pytest.fail("redis-server is not installed; run scripts/setup")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                if redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1).ping():
                    return self
            except redis.AuthenticationError:
                return self  # up, with the default user off (an ACL file): the caller logs in
            except redis.RedisError as e:
                if "NOAUTH" in str(e) or "NOPERM" in str(e):
                    return self
            if time.monotonic() >= deadline:
                pytest.fail(f"redis-server on port {self.port} did not answer PING within {timeout} s")
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown: the AOF is flushed), then SIGKILL if it lingers."""
        if self.proc is not None:
            stop_process(self.proc, timeout)
            terminate(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self, **kwargs):
        import redis

        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(port=self.port, **kwargs)


def make_redis(directory: Path, appendonly: bool = False, extra_args: list[str] | None = None) -> RedisServer:
    """A started RedisServer (see RedisServer)."""
    return RedisServer(directory, appendonly=appendonly, extra_args=extra_args).start()


# ---------------------------------------------------------------------------------------------
# Test-only keys


@dataclass(frozen=True)
class TestKey:
    __test__ = False  # not a test class

    key_id: str
    kind: str  # "rsa" or "ec"
    path: Path

    def private_key(self):
        from cryptography.hazmat.primitives import serialization

        return serialization.load_pem_private_key(self.path.read_bytes(), password=None)

    def public_key(self):
        return self.private_key().public_key()


def openssl(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60, cwd=cwd)


def make_test_keys(folder: Path) -> dict[str, TestKey]:
    """Fresh RSA-2048 and EC P-256 keys made by openssl in `folder` (mode 0700, files 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    rsa_path = folder / "test-only-rsa.pem"
    ec_path = folder / "test-only-ec.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(rsa_path))
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(ec_path))
    for p in (rsa_path, ec_path):
        os.chmod(p, 0o600)
    return {
        "rsa": TestKey("KTESTONLYRSA01", "rsa", rsa_path),
        "ec": TestKey("KTESTONLYEC001", "ec", ec_path),
    }


def store_keygroup(r, ns: str, keys: Iterable[TestKey], active: TestKey | None = None, version: int = 1) -> None:
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

    def __init__(self, proc: subprocess.Popen, worker_id: str, ns: str, log_path: Path, out_path: Path,
                 http_port: int | None = None):
        self.proc = proc
        self.worker_id = worker_id
        self.ns = ns
        self.log_path = log_path
        self.out_path = out_path
        self.http_port = http_port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit(self) -> str:
        """`running`, or how it ended (e.g. `rc -4 (SIGILL)`)."""
        return exit_description(self.proc.poll())

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

    def status(self) -> dict[str, str]:
        """/proc/PID/status as a dict (Linux), empty once the process is gone."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return {}
        return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)

    def peak_rss_bytes(self) -> int | None:
        """VmHWM (the peak resident set size) of the live process, in bytes."""
        value = self.status().get("VmHWM")
        return int(value.split()[0]) * 1024 if value else None

    def metrics(self) -> str:
        """The text of /metrics (the worker must have been started with an HTTP port)."""
        assert self.http_port is not None, "worker started without http_address"
        status, body = http_get(f"http://127.0.0.1:{self.http_port}/metrics")
        return body if status == 200 else ""

    @property
    def inflight_key(self) -> str:
        return f"{{{self.ns}}}:inflight:{self.worker_id}"

    @property
    def heartbeat_key(self) -> str:
        return f"{{{self.ns}}}:worker:{self.worker_id}"


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The sum of every sample of `name` whose labels include `labels`, or None when absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        sample_labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(sample_labels.get(k) == v for k, v in (labels or {}).items()):
            total += float(m.group(3))
            seen = True
    return total if seen else None


class WorkerFactory:
    """Starts `cfsign worker` processes and guarantees that each one is gone at teardown."""

    def __init__(self, binary: Path, folder: Path):
        self.binary = binary
        self.folder = folder
        self.started: list[WorkerProcess] = []
        self._files = []

    def start(self, server: RedisServer, ns: str, worker_id: str | None = None, concurrency: int | None = None,
              env: dict[str, str] | None = None, args: list[str] | None = None, wait: bool = True,
              fast: bool = True, http: bool = False) -> WorkerProcess:
        """`cfsign worker --redis URL --namespace NS --worker-id ID [--concurrency N] ARGS`, with fast
        timing unless `fast` is False and /metrics on a free port when `http`; waits until the
        worker is in {NS}:workers (and its HTTP server answers) unless `wait` is False."""
        worker_id = worker_id or f"w{len(self.started) + 1}-{secrets.token_hex(3)}"
        command = ["--redis", server.url, "--namespace", ns, "--worker-id", worker_id]
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        command += args or []
        environment = {**(FAST_TIMING if fast else {}), **(env or {})}
        port = None
        if http:
            port = free_port()
            environment["CFSIGN_HTTP_ADDRESS"] = f"127.0.0.1:{port}"
        worker = self.spawn(command, worker_id, ns, env=environment, http_port=port)
        if wait:
            self.wait_registered(server, worker)
            if http:
                wait_until(lambda: worker.metrics() or not worker.alive(), 10, what=f"/metrics of worker {worker_id}")
        return worker

    def spawn(self, worker_args: list[str], label: str, ns: str, env: dict[str, str] | None = None,
              http_port: int | None = None) -> WorkerProcess:
        """`cfsign worker WORKER_ARGS` exactly, with a clean environment plus `env`; killed at teardown."""
        environment = clean_environment(env)
        log_path = self.folder / f"worker-{label}.stderr.log"
        out_path = self.folder / f"worker-{label}.stdout.log"
        err = open(log_path, "ab")
        out = open(out_path, "ab")
        self._files += [err, out]
        proc = subprocess.Popen([str(self.binary), "worker", *worker_args], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=environment)
        worker = WorkerProcess(proc, label, ns, log_path, out_path, http_port)
        self.started.append(worker)
        return worker

    @staticmethod
    def wait_registered(server: RedisServer, worker: WorkerProcess, timeout: float = 20) -> None:
        import redis

        r = server.client()
        deadline = time.monotonic() + timeout
        while True:
            if not worker.alive():
                pytest.fail(f"worker {worker.worker_id} exited with {worker.exit()} before registering:\n{worker.log()[-3000:]}")
            try:
                if r.sismember(f"{{{worker.ns}}}:workers", worker.worker_id):
                    return
            except redis.ConnectionError:
                pass
            except redis.ResponseError as e:  # BUSY: a long script; the deadline still holds
                if not str(e).startswith("BUSY"):
                    raise
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


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


#: Pass as a field value to `job` to leave the field out.
OMIT = _Omit()


def job(ns: str, job_id: str, reply: str = "t", **fields) -> dict:
    """A job dict: defaults to a canned URL job that expires in an hour."""
    document = {"id": job_id, "reply_to": f"{{{ns}}}:reply:{reply}"}
    if "url" not in fields:
        document["url"] = f"{CLOUDFRONT_HOST}/private/{job_id}.pdf"
    if "expires_at" not in fields and "expires_in" not in fields:
        document["expires_in"] = 3600
    document.update(fields)
    return {k: v for k, v in document.items() if v is not OMIT}


def encode(item: dict | bytes | str) -> bytes:
    """Compact JSON bytes of a job dict; bytes and text are sent as they are."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    return json.dumps(item, separators=(",", ":")).encode()


def push(r, ns: str, items: Iterable[dict | bytes | str], chunk: int = 500) -> int:
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


def collect(r, key: str, count: int, timeout: float) -> list[dict]:
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
        more = r.lpop(key, count - len(replies)) if len(replies) < count else None
        for raw in more or []:
            replies.append(json.loads(raw))
    return replies


def collect_ids(r, key: str, wanted: set[str], timeout: float) -> list[dict]:
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


def heartbeat(r, ns: str, worker_id: str) -> dict | None:
    raw = r.get(f"{{{ns}}}:worker:{worker_id}")
    return json.loads(raw) if raw is not None else None


def dead_entries(r, ns: str) -> list[dict]:
    return [json.loads(x) for x in r.lrange(f"{{{ns}}}:dead", 0, -1)]


def audit_entries(r, ns: str) -> list[dict[str, str]]:
    """{NS}:audit (a stream) as a list of field dicts, oldest first."""
    return [{k.decode(): v.decode(errors="replace") for k, v in fields.items()} for _, fields in r.xrange(f"{{{ns}}}:audit")]


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
        import redis

        self._errors = (redis.RedisError, ValueError, OSError)
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
            except self._errors:
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
        except self._errors:
            pass


# ---------------------------------------------------------------------------------------------
# OTLP/HTTP receiver (issue 19: the worker's traces)


@dataclass
class ReceivedSpan:
    """One span as an OTLP/HTTP collector received it (ids as lower-case hex)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int]]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    # Each event's attributes, in the order of `events`.
    event_attributes: list[dict[str, Any]] = field(default_factory=list)


class OTLPReceiver:
    """A small OTLP/HTTP trace collector on 127.0.0.1: decodes each POSTed
    `ExportTraceServiceRequest` (opentelemetry-proto; protobuf, or OTLP/JSON, whose hex ids are
    turned into protobuf JSON's base64 before `json_format` reads it) and keeps its spans and raw
    bodies. Point a worker at it with `env()`; set `status` to make it answer with an error."""

    def __init__(self) -> None:
        import gzip
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from google.protobuf import json_format
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.status = 200
        self.spans: list[ReceivedSpan] = []
        self.bodies: list[bytes] = []
        self.requests: list[tuple[str, str]] = []  # (path, content type)
        self.authorizations: list[str | None] = []  # each request's Authorization header
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    json_format.ParseDict(OTLPReceiver._hex_ids_as_base64(json.loads(body)), request)
                else:
                    request.ParseFromString(body)
                if receiver.status != 200:
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.requests.append((self.path, self.headers.get("Content-Type", "")))
                    receiver.authorizations.append(self.headers.get("Authorization"))
                    receiver.bodies.append(body)
                    receiver.spans.extend(OTLPReceiver._spans(request))
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()

    @staticmethod
    def _hex_ids_as_base64(request: dict) -> dict:
        """OTLP/JSON writes trace and span ids in hex, protobuf's JSON mapping in base64."""
        for rs in request.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in s:
                            s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
        return request

    @staticmethod
    def _value(v) -> Any:
        kind = v.WhichOneof("value")
        if kind == "array_value":
            return [OTLPReceiver._value(x) for x in v.array_value.values]
        return getattr(v, kind) if kind else None

    @staticmethod
    def _spans(request) -> list[ReceivedSpan]:
        spans = []
        for rs in request.resource_spans:
            resource = {a.key: OTLPReceiver._value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(ReceivedSpan(
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(), parent_span_id=s.parent_span_id.hex(),
                        name=s.name, kind=s.kind, start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                        attributes={a.key: OTLPReceiver._value(a.value) for a in s.attributes},
                        events=[(e.name, e.time_unix_nano) for e in s.events],
                        status_code=s.status.code, status_message=s.status.message, resource=resource,
                        event_attributes=[{a.key: OTLPReceiver._value(a.value) for a in e.attributes} for e in s.events]))
        return spans

    def env(self, **extra: str) -> dict[str, str]:
        """The worker's OTEL_* environment for this receiver (a short batch delay for tests)."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}", "OTEL_BSP_SCHEDULE_DELAY": "100", **extra}

    def received(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, predicate: Callable[[ReceivedSpan], bool], count: int = 1, timeout: float = 20,
                 what: str = "spans") -> list[ReceivedSpan]:
        """Waits until at least `count` received spans match; returns the matching ones."""
        found: list[ReceivedSpan] = []

        def enough() -> bool:
            nonlocal found
            found = [s for s in self.received() if predicate(s)]
            return len(found) >= count

        wait_until(enough, timeout, what=what)
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (a dead collector)."""
    return free_port()


def readyz(port: int) -> tuple[int, str]:
    """A worker's `/readyz` on 127.0.0.1:`port`: the status and the body (503 is an answer too)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
