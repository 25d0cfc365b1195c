"""`cfsign edge --origin URL`: accepted requests are forwarded to the origin without the signing
parameters (as CloudFront forwards them), and the origin's answer comes back.

The origin is a small recording HTTP server in this process (it remembers every request), and once
a real local S3 server (`moto_server` from moto[server]) with a public-read object.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .edge_support import (
    SIGNING_PARAMETERS, clean_environment, cookie_header, free_port, sign, start_test_origin, stop, wait_until,
)


@pytest.fixture(scope="module")
def origin():
    server = start_test_origin()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def edge(module_edges, origin, keys):
    return module_edges.start("--origin", origin.base + "/bucket", "--public-key", f"{keys['rsa'].key_id}={keys['rsa'].public}")


@pytest.fixture(scope="module")
def signer(cfsign_bin, keys):
    def run(url: str, *flags: str, key: str = "rsa") -> str:
        return sign(cfsign_bin, url, keys[key], *flags)

    return run


def get(url: str, method: str = "GET", **kwargs) -> requests.Response:
    return requests.request(method, url, allow_redirects=False, timeout=10, **kwargs)


def seen_since(origin, count: int):
    return origin.seen[count:]


def test_signing_parameters_are_stripped_before_the_origin(edge, origin, signer):
    before = len(origin.seen)
    url = signer(edge.url("/report.txt?v=1&lang=en"), "--hash", "SHA256")
    response = get(url)
    assert response.status_code == 200, response.text
    assert response.content == b"origin report body\n"
    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["ETag"] == '"etag-report-1"'
    assert response.headers["Last-Modified"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "X-Origin-Secret-Header" not in response.headers
    seen = seen_since(origin, before)
    assert len(seen) == 1
    assert seen[0].method == "GET"
    # The origin path is put before the request's path; the other parameters keep their order.
    assert seen[0].target == "/bucket/report.txt?v=1&lang=en"
    assert not any(p + "=" in seen[0].target for p in SIGNING_PARAMETERS)
    assert seen[0].headers.get("X-Forwarded-For") == "127.0.0.1"


def test_signed_cookies_are_not_forwarded(edge, origin, signer):
    before = len(origin.seen)
    jar = cookie_header(signer(edge.url("/*"), "--cookies", "--resource", edge.url("/*")))
    response = get(edge.url("/data.json"), headers={"Cookie": jar})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    seen = seen_since(origin, before)
    assert len(seen) == 1 and seen[0].target == "/bucket/data.json"
    assert "Cookie" not in seen[0].headers


def test_refused_requests_never_reach_the_origin(edge, origin, signer):
    before = len(origin.seen)
    assert get(edge.url("/report.txt")).status_code == 403
    url = signer(edge.url("/report.txt"), "--ip", "10.0.0.0/8")
    refused = get(url)
    assert refused.status_code == 403 and refused.headers["X-Cfsign-Refusal"] == "ip_not_allowed"
    time.sleep(0.1)
    assert seen_since(origin, before) == []


def test_range_and_conditional_headers_are_forwarded(edge, origin, signer):
    url = signer(edge.url("/report.txt"))
    before = len(origin.seen)
    part = get(url, headers={"Range": "bytes=0-5"})
    assert part.status_code == 206
    assert part.content == b"origin"
    assert part.headers["Content-Range"] == "bytes 0-5/19"
    assert origin.seen[before].headers.get("Range") == "bytes=0-5"
    not_modified = get(url, headers={"If-None-Match": '"etag-report-1"'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert origin.seen[-1].headers.get("If-None-Match") == '"etag-report-1"'
    modified_since = get(url, headers={"If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert origin.seen[-1].headers.get("If-Modified-Since") == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert modified_since.status_code == 200  # this origin ignores it


def test_head_is_forwarded_as_head(edge, origin, signer):
    url = signer(edge.url("/report.txt"))
    response = get(url, method="HEAD")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "19"
    assert response.content == b""
    assert origin.seen[-1].method == "HEAD"


def test_origin_status_and_cache_control_pass_through(edge, origin, signer):
    signing = signer(edge.url("/*"), "--resource", edge.url("/*")).split("?", 1)[1]
    assert get(edge.url("/data.json?" + signing)).headers["Cache-Control"] == "max-age=5"
    assert "Cache-Control" not in get(edge.url("/report.txt?" + signing)).headers
    missing = get(edge.url("/nope.txt?" + signing))
    assert missing.status_code == 404 and "NoSuchKey" in missing.text
    # Redirects go back to the viewer; the edge does not follow them.
    moved = get(edge.url("/moved?" + signing))
    assert moved.status_code == 302
    assert moved.headers["Location"] == "/bucket/report.txt"


def test_an_origin_body_over_64_mib_is_a_502_naming_the_limit(edge, origin, signer):
    signing = signer(edge.url("/*"), "--resource", edge.url("/*")).split("?", 1)[1]
    response = get(edge.url("/huge?" + signing))
    assert response.status_code == 502
    assert "sent a body over 64 MiB, more than the edge buffers" in response.text


def test_cache_control_flag_fills_in_when_the_origin_sends_none(edges, origin, keys, signer):
    edge = edges.start("--origin", origin.base + "/bucket/", "--public-key", f"{keys['rsa'].key_id}={keys['rsa'].public}",
                       "--cache-control", "no-store")
    signing = signer(edge.url("/*"), "--resource", edge.url("/*")).split("?", 1)[1]
    assert get(edge.url("/report.txt?" + signing)).headers["Cache-Control"] == "no-store"
    assert get(edge.url("/data.json?" + signing)).headers["Cache-Control"] == "max-age=5"


def test_unreachable_origin_is_502(edges, keys, signer):
    closed = free_port()
    edge = edges.start("--origin", f"http://127.0.0.1:{closed}", "--public-key", f"{keys['rsa'].key_id}={keys['rsa'].public}")
    response = get(signer(edge.url("/report.txt")))
    assert response.status_code == 502
    assert "<Code>BadGateway</Code>" in response.text
    # The reason, in words: which origin, and what the connection attempt got.
    assert f"The origin http://127.0.0.1:{closed} could not be reached: Connection refused" in response.text
    # Unsigned requests are still refused first.
    assert get(edge.url("/report.txt")).status_code == 403


def test_an_unreachable_origin_by_host_name_names_no_address_to_the_viewer(edges, keys, signer):
    # "localhost" resolves to 127.0.0.1 and ::1: the connection error lists each address tried,
    # which goes to the edge's log, not to the viewer.
    closed = free_port()
    edge = edges.start("--origin", f"http://localhost:{closed}", "--public-key", f"{keys['rsa'].key_id}={keys['rsa'].public}")
    response = get(signer(edge.url("/report.txt")))
    assert response.status_code == 502
    assert f"The origin http://localhost:{closed} could not be reached: Connection refused" in response.text
    assert "127.0.0.1" not in response.text and "::1" not in response.text


@pytest.fixture
def moto_s3(tmp_path: Path):
    """A local S3 (`moto_server`) on a free loopback port with bucket `private-bucket` and one
    public-read object (the edge, not S3, is what restricts access here)."""
    if shutil.which("moto_server") is None:
        pytest.fail("moto_server is not installed (pip install -r Tests/requirements.txt: moto[server])")
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=clean_environment())
    base = f"http://127.0.0.1:{port}"
    try:
        def up():
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited: {(tmp_path / 'moto.log').read_text()}")
            try:
                return requests.get(base + "/", timeout=1) is not None
            except requests.ConnectionError:
                return False

        wait_until(up, timeout=20, interval=0.1, what="moto_server to start")
        assert requests.put(base + "/private-bucket", timeout=10).status_code == 200
        put = requests.put(base + "/private-bucket/invoices/42.pdf", data=b"%PDF-1.4 invoice 42\n", timeout=10,
                           headers={"Content-Type": "application/pdf", "x-amz-acl": "public-read"})
        assert put.status_code == 200
        yield base
    finally:
        stop(proc)
        log.close()


def test_moto_s3_origin(edges, moto_s3, keys, signer):
    edge = edges.start("--origin", moto_s3 + "/private-bucket", "--public-key", f"{keys['ec'].key_id}={keys['ec'].public}")
    url = signer(edge.url("/invoices/42.pdf"), key="ec")
    response = get(url)
    assert response.status_code == 200, response.text
    assert response.content == b"%PDF-1.4 invoice 42\n"
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["ETag"].startswith('"')
    part = get(url, headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == b"%PDF-1.4"
    assert part.headers["Content-Range"] == "bytes 0-7/20"
    # The object is public in S3, but not through the edge without a signature.
    assert get(edge.url("/invoices/42.pdf")).status_code == 403
