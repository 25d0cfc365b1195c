"""Helpers of the edge suite (fixtures are in conftest.py): `cfsign edge` processes, signing with
`cfsign sign`, raw HTTP requests, and a small recording test origin.

Every process is started on a loopback address and stopped by pid; every wait has a deadline.
"""

from __future__ import annotations

import http.client
import http.server
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cfsign_support import free_port, wait_until  # noqa: F401  (re-exported for the suite's tests)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "cfsign"

SIGNING_PARAMETERS = {"Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm"}


def clean_environment() -> dict[str, str]:
    """The test's environment without CFSIGN_* variables (they would change the edge's defaults)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CFSIGN_")}


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM (the edge's graceful stop), then SIGKILL by pid if it is still there."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=grace)
        except ProcessLookupError:
            pass


@dataclass
class TestKey:
    __test__ = False

    key_id: str
    private: Path
    public: Path


class Edge:
    """One running `cfsign edge`; `base` is the URL it printed on stdout (http://127.0.0.1:PORT)."""

    def __init__(self, proc: subprocess.Popen, base: str, log_path: Path):
        self.proc = proc
        self.base = base
        self.log_path = log_path
        self.port = int(base.rsplit(":", 1)[1])
        self.host = f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        stop(self.proc)
        return self.proc.returncode


class EdgeFactory:
    """Starts `cfsign edge` processes for a test or module; all are stopped at teardown."""

    def __init__(self, binary: Path, directory: Path):
        self.binary = binary
        self.directory = directory
        self.started: list[Edge] = []

    def start(self, *args: str, listen: str = "127.0.0.1:0", timeout: float = 15) -> Edge:
        n = len(self.started)
        log_path = self.directory / f"edge-{n}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(self.binary), "edge", "--listen", listen, *args],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=clean_environment())
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if proc.poll() is not None or remaining <= 0:
                stop(proc)
                pytest.fail(f"cfsign edge did not start (exit {proc.returncode}):\n{log_path.read_text(errors='replace')}")
            ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.2))
            if ready:
                chunk = os.read(proc.stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        edge = Edge(proc, line.decode().strip(), log_path)
        self.started.append(edge)
        return edge

    def close(self) -> None:
        for edge in self.started:
            stop(edge.proc)
            if edge.proc.stdout:
                edge.proc.stdout.close()


def run_cfsign(binary: Path, *args: str, timeout: float = 30, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env or clean_environment())


def sign(binary: Path, url: str, key: TestKey, *flags: str, key_id: str | None = None) -> str:
    """`cfsign sign URL --key-id ID --private-key FILE FLAGS...`; its stdout (a URL, or cookie lines)."""
    if not any(f in ("--expires-in", "--expires-at") for f in flags):
        flags = (*flags, "--expires-in", "1h")
    result = run_cfsign(binary, "sign", url, "--key-id", key_id or key.key_id, "--private-key", str(key.private), *flags)
    assert result.returncode == 0, f"cfsign sign failed: {result.stderr}"
    return result.stdout.strip()


def cookie_header(lines: str) -> str:
    """`Name=value` lines from `cfsign sign --cookies` as one Cookie header value."""
    return "; ".join(line.strip() for line in lines.splitlines() if line.strip())


def split_signed(url: str) -> tuple[str, str]:
    """A signed URL as (URL without the signing parameters, the signing parameters as a query string)."""
    path, _, query = url.partition("?")
    kept, signing = [], []
    for item in query.split("&") if query else []:
        (signing if item.split("=", 1)[0] in SIGNING_PARAMETERS else kept).append(item)
    return path + ("?" + "&".join(kept) if kept else ""), "&".join(signing)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def raw_request(edge: Edge, target: str, method: str = "GET", headers: dict[str, str] | None = None) -> Response:
    """One request with the request target sent exactly as given (no normalisation of `..` or `%2e`)."""
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        all_headers = {"Host": edge.host, **(headers or {})}
        for name, value in all_headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return Response(response.status, response.headers, body)
    finally:
        conn.close()


def target_of(url: str) -> str:
    """The request target (path and query) of an absolute http URL."""
    rest = url.split("://", 1)[1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


# ---------------------------------------------------------------------------------------------
# A recording test origin (for --origin): serves a few objects under /bucket/ and remembers every
# request it got (path with query, headers).


@dataclass
class SeenRequest:
    method: str
    target: str
    headers: dict[str, str]


@dataclass
class TestOrigin:
    __test__ = False

    server: http.server.ThreadingHTTPServer
    thread: threading.Thread
    seen: list[SeenRequest] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


ORIGIN_OBJECTS = {
    "/bucket/report.txt": (b"origin report body\n", "text/plain", '"etag-report-1"'),
    "/bucket/data.json": (b'{"ok": true}\n', "application/json", '"etag-data-1"'),
}


def start_test_origin() -> TestOrigin:
    holder: dict[str, TestOrigin] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _answer(self, head: bool) -> None:
            holder["origin"].seen.append(SeenRequest(self.command, self.path, {k: v for k, v in self.headers.items()}))
            path = self.path.split("?", 1)[0]
            if path == "/bucket/moved":
                self.send_response(302)
                self.send_header("Location", "/bucket/report.txt")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path == "/bucket/huge":
                # Announces one byte over the edge's 64 MiB buffer; the edge refuses on the header.
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str((64 << 20) + 1))
                self.end_headers()
                self.close_connection = True
                return
            if path not in ORIGIN_OBJECTS:
                body = b"<Error><Code>NoSuchKey</Code></Error>"
                self.send_response(404)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                return
            body, ctype, etag = ORIGIN_OBJECTS[path]
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            status, part, extra = 200, body, {}
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and "-" in rng:
                a, b = rng[6:].split("-", 1)
                first, last = int(a), (int(b) if b else len(body) - 1)
                part = body[first:last + 1]
                status, extra = 206, {"Content-Range": f"bytes {first}-{first + len(part) - 1}/{len(body)}"}
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(part)))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            self.send_header("Accept-Ranges", "bytes")
            if path.endswith(".json"):
                self.send_header("Cache-Control", "max-age=5")
            self.send_header("X-Origin-Secret-Header", "not passed on")
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(part)

        def do_GET(self):
            self._answer(head=False)

        def do_HEAD(self):
            self._answer(head=True)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test-origin", daemon=True)
    origin = TestOrigin(server, thread)
    holder["origin"] = origin
    thread.start()
    return origin
