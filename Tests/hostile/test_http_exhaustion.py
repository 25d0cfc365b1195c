"""Attack 5 (issue 13): HTTP clients exhaust the worker's file descriptors.

Under `nofile=1024` (systemd's default soft limit), 1,100 idle connections to `--http-address` once
stopped the worker answering jobs and made `/healthz` time out. Now the HTTP server caps its
connections (`http_max_connections`, a new one replacing the longest-open idle one at the cap),
closes idle connections and slow requests, answers an oversized head with 431, and the signing path
never needs a descriptor the HTTP clients could take.

Self-contained: redis-server and worker processes come from the system suite's helpers.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Tests/, for system.cfsign_system
from system.cfsign_system import (  # noqa: E402
    TestKey,
    WorkerFactory,
    collect,
    free_port,
    job,
    make_redis,
    openssl,
    push,
    store_keygroup,
    unique_namespace,
    wait_until,
)

NOFILE = 1024
IDLE_CONNECTIONS = 1_100
IDLE_TIMEOUT = 2.0
HEADER_TIMEOUT = 1.5


def http(port: int, request: bytes, timeout: float = 5) -> bytes:
    """Sends one raw request on a new connection; returns all it gets until the server closes or
    the response is complete."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:  # closed with part of our request unread: what came first counts
            pass
        return data


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


def closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `s` (recv returns b""), or None if it is still open."""
    start = time.monotonic()
    s.settimeout(seconds)
    try:
        while True:
            if s.recv(4096) == b"":
                return time.monotonic() - start
    except (socket.timeout, TimeoutError):
        return None
    except OSError:
        return time.monotonic() - start


def under_nofile(cfsign_bin: Path, folder: Path, nofile: int) -> Path:
    """A stand-in for the binary that runs the real one under `prlimit --nofile=N:N` (same pid):
    the factory runs `<binary> worker ARGS`."""
    wrapper = folder / f"cfsign-nofile-{nofile}"
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --nofile={nofile}:{nofile} "{cfsign_bin}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture(scope="module")
def hostile_http(cfsign_bin: Path, tmp_path_factory):
    """redis-server, a key group, and one worker run as `prlimit --nofile=1024:1024 cfsign worker
    --http-address ...` with short HTTP timeouts; yields (redis, namespace, worker, http port)."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    folder = tmp_path_factory.mktemp("hostile-http")
    os.chmod(folder, 0o700)
    key_path = folder / "test-only-ec.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key_path))
    os.chmod(key_path, 0o600)
    server = make_redis(folder / "redis", appendonly=False)
    factory = WorkerFactory(under_nofile(cfsign_bin, folder, NOFILE), folder)
    ns = unique_namespace("hostile-http")
    port = free_port()
    try:
        store_keygroup(server.client(), ns, [TestKey("KTESTONLYEC001", "ec", key_path)])
        worker = factory.start(server, ns, args=[
            "--http-address", f"127.0.0.1:{port}",
            "--http-idle-timeout", str(IDLE_TIMEOUT), "--http-header-timeout", str(HEADER_TIMEOUT)])
        wait_until(lambda: status(http(port, b"GET /readyz HTTP/1.0\r\n\r\n")) == 200, 15, what="/readyz 200")
        yield server, ns, worker, port
    finally:
        factory.close()
        server.stop()


def test_idle_connection_flood_under_nofile_1024_leaves_jobs_and_healthz_answered(hostile_http):
    server, ns, worker, port = hostile_http
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE_CONNECTIONS + 200:
        pytest.skip(f"this test process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert f"open_files_limit={NOFILE}" in worker.log(), "the worker must log its open-files limit at start"
    flood: list[socket.socket] = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            flood.append(s)
        time.sleep(0.5)  # every handshake done and accepted (or closed) by the worker
        held = len(os.listdir(f"/proc/{worker.pid}/fd"))
        assert held < NOFILE - 100, f"attack 5: {IDLE_CONNECTIONS} idle connections took {held} of the worker's {NOFILE} descriptors"

        r = server.client()
        reply_to = "flood"
        push(r, ns, [job(ns, f"flood-{i}", reply=reply_to) for i in range(20)])
        replies = collect(r, f"{{{ns}}}:reply:{reply_to}", 20, timeout=15)
        assert len(replies) == 20 and all(x.get("ok") for x in replies), \
            f"attack 5: with {IDLE_CONNECTIONS} idle HTTP connections open, {len(replies)} of 20 jobs were answered: {replies[:3]}\n{worker.log()[-2000:]}"

        started = time.monotonic()
        answer = http(port, b"GET /healthz HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n", timeout=5)
        assert status(answer) == 200, f"attack 5: /healthz under the flood answered {answer[:80]!r}"
        assert time.monotonic() - started < 2, "a probe must not wait for idle connections to time out"
        assert worker.alive()
    finally:
        for s in flood:
            s.close()


def test_oversized_request_head_gets_431(hostile_http):
    _, _, _, port = hostile_http
    answer = http(port, b"GET /healthz HTTP/1.1\r\nHost: w\r\nX-Padding: " + b"a" * (20 * 1024) + b"\r\n\r\n")
    assert status(answer) == 431, f"a 20 KiB request head (limit 16 KiB) got {answer[:80]!r}, not 431"
    normal = http(port, b"GET /healthz HTTP/1.1\r\nHost: w\r\nX-Padding: " + b"a" * (8 * 1024) + b"\r\nConnection: close\r\n\r\n")
    assert status(normal) == 200, f"an 8 KiB head must still be served: {normal[:80]!r}"


def test_connection_that_sends_nothing_is_closed_after_the_idle_timeout(hostile_http):
    _, _, _, port = hostile_http
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        after = closed_within(s, IDLE_TIMEOUT + 5)
    assert after is not None, f"a silent connection was still open {IDLE_TIMEOUT + 5} s later (http_idle_timeout {IDLE_TIMEOUT})"
    assert after >= IDLE_TIMEOUT - 0.5, f"closed after {after:.1f} s, before http_idle_timeout ({IDLE_TIMEOUT} s)"


def test_keep_alive_connection_is_closed_after_the_idle_timeout(hostile_http):
    _, _, _, port = hostile_http
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n")
        assert b" 200 " in s.recv(4096)
        after = closed_within(s, IDLE_TIMEOUT + 5)
    assert after is not None, "an idle keep-alive connection was never closed"


def test_request_head_sent_a_byte_at_a_time_is_closed_after_the_header_timeout(hostile_http):
    _, _, _, port = hostile_http
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        closed = None
        deadline = started + HEADER_TIMEOUT + 5
        while time.monotonic() < deadline:
            try:
                s.sendall(b"a")  # one byte every 0.2 s: never idle, never a whole head
            except OSError:
                closed = time.monotonic() - started
                break
            if closed_within(s, 0.2) is not None:
                closed = time.monotonic() - started
                break
    assert closed is not None, f"a head dribbled for {HEADER_TIMEOUT + 5} s was never cut off (http_header_timeout {HEADER_TIMEOUT})"
    assert closed < HEADER_TIMEOUT + 1.5, f"the dribbled head was cut off only after {closed:.1f} s"


def test_cap_is_lowered_when_the_open_files_limit_leaves_too_little_room(hostile_http, cfsign_bin, tmp_path):
    """Under nofile=200 the default cap of 256 would let HTTP clients take every descriptor: the
    worker lowers it to leave 128 free, says so, and still signs."""
    server, flood_ns, _, _ = hostile_http
    r = server.client()
    ns = unique_namespace("hostile-low-nofile")  # its own queue: only this worker can answer
    r.set(f"{{{ns}}}:keygroup", r.get(f"{{{flood_ns}}}:keygroup"))
    factory = WorkerFactory(under_nofile(cfsign_bin, tmp_path, 200), tmp_path)
    try:
        worker = factory.start(server, ns, args=["--http-address", f"127.0.0.1:{free_port()}"])
        assert "lowered_to=72" in worker.log() and "open_files_limit=200" in worker.log(), worker.log()[-2000:]
        push(r, ns, [job(ns, f"low-{i}", reply="low") for i in range(5)])
        assert len(collect(r, f"{{{ns}}}:reply:low", 5, timeout=10)) == 5
    finally:
        factory.close()
