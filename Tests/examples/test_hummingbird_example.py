"""The example web app (Examples/hummingbird-links): a Hummingbird service whose route
`GET /invoices/:id/link` answers with a link signed by a real cfsign worker, queried over HTTP.

Building the example compiles Hummingbird (minutes on a fresh clone), so it has its own scratch
folder (.build-examples) and scripts/test runs it once, outside the sanitizer build; set
CFSIGN_SKIP_EXAMPLES=1 to skip it locally."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cfsign_support import (WorkerFactory, clean_environment, free_port, http_get, make_redis, make_test_keys,
                            store_keygroup, terminate, unique_namespace, wait_until)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "Examples" / "hummingbird-links"
SCRATCH = REPO / ".build-examples"

pytestmark = pytest.mark.skipif(os.environ.get("CFSIGN_SKIP_EXAMPLES") == "1", reason="CFSIGN_SKIP_EXAMPLES=1")


@pytest.fixture(scope="module")
def app_binary() -> Path:
    build = subprocess.run(["swift", "build", "--package-path", str(EXAMPLE), "--scratch-path", str(SCRATCH)],
                           capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, f"the example app does not build:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    binary = SCRATCH / "debug" / "InvoiceLinks"
    assert binary.is_file()
    return binary


@pytest.fixture
def fleet(tmp_path, cfsign_bin):
    server = make_redis(tmp_path / "redis")
    ns = unique_namespace("example")
    keys = make_test_keys(tmp_path / "test-only-keys")
    store_keygroup(server.client(), ns, [keys["rsa"]])
    workers = WorkerFactory(cfsign_bin, tmp_path)
    workers.start(server, ns)
    try:
        yield server, ns, keys["rsa"]
    finally:
        workers.close()
        server.stop()


def start_app(binary: Path, server, ns: str, tmp_path: Path):
    port = free_port()
    log = open(tmp_path / "app.log", "wb")
    proc = subprocess.Popen([str(binary)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=clean_environment({"CFSIGN_REDIS": server.url, "CFSIGN_NAMESPACE": ns, "PORT": str(port)}))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: proc.poll() is None and http_get(base + "/invoices/1/link", timeout=5)[0] in (200, 503), 30,
               what=f"the example app to answer on {base}")
    return proc, base


def test_the_route_answers_with_a_link_the_key_verifies(app_binary, fleet, tmp_path, cfsign_bin):
    server, ns, key = fleet
    proc, base = start_app(app_binary, server, ns, tmp_path)
    try:
        status, body = http_get(base + "/invoices/42/link", timeout=10)
        assert status == 200, body
        link = json.loads(body)
        assert link["url"].startswith("https://d111111abcdef8.cloudfront.net/invoices/42.pdf?Expires="), link
        public = tmp_path / "public.pem"
        subprocess.run(["openssl", "pkey", "-in", str(key.path), "-pubout", "-out", str(public)], check=True, capture_output=True)
        verify = subprocess.run([str(cfsign_bin), "verify", link["url"], "--public-key", str(public)],
                                capture_output=True, text=True, timeout=30)
        assert verify.returncode == 0, verify.stderr
    finally:
        terminate(proc)


def test_a_bad_invoice_id_is_refused_before_any_job(app_binary, fleet, tmp_path):
    server, ns, _ = fleet
    proc, base = start_app(app_binary, server, ns, tmp_path)
    try:
        status, _ = http_get(base + "/invoices/..%2fsecret/link", timeout=10)
        assert status in (400, 404), status
    finally:
        terminate(proc)
