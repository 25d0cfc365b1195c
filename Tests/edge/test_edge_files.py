"""`cfsign edge --root DIR`: what it serves to signed URLs and cookies, and what it refuses.

One edge serves the test folder for the whole module (trusting the RSA and the EC test key); links and
cookies are made by the real `cfsign sign` for http://127.0.0.1:PORT/...; requests come from real
`curl` in a few tests and from `requests` / `http.client` in the rest.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .conftest import BIG_FILE
from .edge_support import Edge, cookie_header, raw_request, sign, split_signed, target_of, wait_until

ERROR_XML = re.compile(r'^<\?xml version="1\.0" encoding="UTF-8"\?><Error><Code>([A-Za-z]+)</Code><Message>([^<]*)</Message>')


@pytest.fixture(scope="module")
def edge(module_edges, site: Path, keys) -> Edge:
    return module_edges.start(
        "--root", str(site),
        "--public-key", f"{keys['rsa'].key_id}={keys['rsa'].public}",
        "--public-key", f"{keys['ec'].key_id}={keys['ec'].public}",
    )


@pytest.fixture(scope="module")
def signer(cfsign_bin, keys):
    """sign(url, key="rsa", *flags) -> the signed URL (or cookie lines with --cookies)."""

    def run(url: str, *flags: str, key: str = "rsa", key_id: str | None = None) -> str:
        return sign(cfsign_bin, url, keys[key], *flags, key_id=key_id)

    return run


def get(url: str, method: str = "GET", **kwargs) -> requests.Response:
    return requests.request(method, url, allow_redirects=False, timeout=10, **kwargs)


def assert_refused(response, reason: str, code: str = "AccessDenied", message: str | None = None):
    """403, the reason in X-Cfsign-Refusal, CloudFront's XML body with the code (and message part)."""
    body = response.text
    status = response.status_code if hasattr(response, "status_code") else response.status
    assert status == 403, f"expected 403, got {status}: {body}"
    headers = response.headers
    assert headers.get("X-Cfsign-Refusal") == reason, f"refusal header {headers.get('X-Cfsign-Refusal')!r}, body {body}"
    assert headers.get("Content-Type") == "text/xml"
    match = ERROR_XML.match(body)
    assert match, body
    assert match.group(1) == code, body
    if message is not None:
        assert message in match.group(2), body
    return match.group(2)


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, timeout=20)


# ---------------------------------------------------------------------------------------------
# Accepted


def test_canned_signed_url_with_curl(edge, signer):
    url = signer(edge.url("/hello.txt"))
    assert "Expires=" in url and "Key-Pair-Id=KTESTONLYRSA01" in url
    result = curl("-D", "-", url)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == b"hello from the edge\n"
    assert b"Content-Type: text/plain; charset=utf-8" in head
    assert b"Cache-Control: private, max-age=3600" in head


def test_unsigned_request_with_curl_is_missing_key(edge):
    result = curl("-w", "\n%{http_code}", edge.url("/hello.txt"))
    body, _, status = result.stdout.rpartition(b"\n")
    assert status == b"403"
    assert body == (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>MissingKey</Code>'
                    b"<Message>Missing Key-Pair-Id query parameter or cookie value</Message></Error>\n")
    response = get(edge.url("/hello.txt"))
    assert_refused(response, "missing_key_pair_id", code="MissingKey")


def test_custom_policy_with_wildcard_resource(edge, signer):
    url = signer(edge.url("/docs/a.txt"), "--resource", edge.url("/docs/*"))
    assert "Policy=" in url
    assert get(url).text == "doc a\n"
    _, signing = split_signed(url)
    # The same policy covers every URL under /docs/, deeper folders too ('*' matches '/').
    assert get(edge.url("/docs/deep/c.txt?" + signing)).text == "doc c\n"
    # ... and nothing outside it.
    message = assert_refused(get(edge.url("/hello.txt?" + signing)), "resource_mismatch")
    assert edge.url("/hello.txt") in message and edge.url("/docs/*") in message


def test_question_mark_wildcard(edge, signer):
    url = signer(edge.url("/docs/a.txt"), "--resource", edge.url("/docs/?.txt"))
    _, signing = split_signed(url)
    assert get(edge.url("/docs/b.txt?" + signing)).status_code == 200
    assert_refused(get(edge.url("/docs/deep/c.txt?" + signing)), "resource_mismatch")


@pytest.mark.parametrize("key,digest", [("rsa", "SHA1"), ("rsa", "SHA256"), ("ec", "SHA1"), ("ec", "SHA256")])
def test_rsa_and_ec_keys_with_sha1_and_sha256(edge, signer, key, digest):
    url = signer(edge.url("/data.json"), "--hash", digest, key=key)
    assert ("Hash-Algorithm=SHA256" in url) == (digest == "SHA256")
    response = get(url)
    assert response.status_code == 200, response.text
    assert response.json() == {"private": True}
    # Custom policy with the same key and digest.
    url = signer(edge.url("/data.json"), "--hash", digest, "--resource", edge.url("/data.*"), key=key)
    assert get(url).status_code == 200


def test_sha256_signature_claimed_as_sha1_is_refused(edge, signer):
    url = signer(edge.url("/hello.txt"), "--hash", "SHA256")
    assert_refused(get(url.replace("&Hash-Algorithm=SHA256", "")), "bad_signature")


def test_signed_cookies_canned(edge, signer):
    lines = signer(edge.url("/report.pdf"), "--cookies")
    names = [line.split("=", 1)[0] for line in lines.splitlines()]
    assert names == ["CloudFront-Expires", "CloudFront-Signature", "CloudFront-Key-Pair-Id"]
    response = get(edge.url("/report.pdf"), headers={"Cookie": cookie_header(lines)})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-1.4")
    # A canned cookie is for that one URL.
    assert_refused(get(edge.url("/hello.txt"), headers={"Cookie": cookie_header(lines)}), "bad_signature")


def test_signed_cookies_custom_wildcard_with_curl(edge, signer):
    lines = signer(edge.url("/docs/a.txt"), "--cookies", "--resource", edge.url("/docs/*"), "--hash", "SHA256", key="ec")
    assert "CloudFront-Policy=" in lines and "CloudFront-Hash-Algorithm=SHA256" in lines
    jar = cookie_header(lines)
    result = curl("-b", jar, edge.url("/docs/b.txt"))
    assert result.stdout == b"doc b\n", result.stdout
    result = curl("-b", jar, "-o", "/dev/null", "-w", "%{http_code}", edge.url("/hello.txt"))
    assert result.stdout == b"403"
    # Other cookies beside them are ignored, in any order.
    mixed = "session=abc; " + "; ".join(reversed(jar.split("; "))) + "; theme=dark"
    assert get(edge.url("/docs/deep/c.txt"), headers={"Cookie": mixed}).status_code == 200


def test_query_signature_wins_over_cookies(edge, signer):
    cookies = cookie_header(signer(edge.url("/hello.txt"), "--cookies"))
    # A signed query is checked, even when good cookies come along: a bad one is refused.
    url = signer(edge.url("/hello.txt"))
    tampered = url.replace("Expires=", "Expires=1")
    assert_refused(get(tampered, headers={"Cookie": cookies}), "bad_signature")


def test_checked_url_keeps_other_parameters_in_order(edge, signer):
    url = signer(edge.url("/hello.txt?b=2&a=1"))
    assert get(url).status_code == 200
    base, signing = split_signed(url)
    # The signing parameters may sit anywhere in the query; the others keep their order.
    b, a = base.split("?")[1].split("&")
    assert get(edge.url(f"/hello.txt?{b}&{signing}&{a}")).status_code == 200
    assert_refused(get(edge.url(f"/hello.txt?{a}&{b}&{signing}")), "bad_signature")
    assert_refused(get(edge.url(f"/hello.txt?{b}&{signing}")), "bad_signature")


def test_checked_url_uses_the_host_header(edge, signer):
    url = signer(edge.url("/hello.txt"))
    target = target_of(url)
    assert raw_request(edge, target).status == 200
    other = raw_request(edge, target, headers={"Host": f"localhost:{edge.port}"})
    assert other.status == 403 and other.header("X-Cfsign-Refusal") == "bad_signature"
    assert f"the URL checked was http://localhost:{edge.port}/hello.txt" in other.text


def test_request_without_host_is_400(edge, signer):
    target = target_of(signer(edge.url("/hello.txt")))
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 400"), answer[:200]
    assert b"no Host header" in answer


def test_head_sends_headers_only(edge, signer):
    url = signer(edge.url("/big.bin"))
    response = get(url, method="HEAD")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(BIG_FILE))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.content == b""
    unsigned = get(edge.url("/big.bin"), method="HEAD")
    assert unsigned.status_code == 403 and unsigned.headers["X-Cfsign-Refusal"] == "missing_key_pair_id"


@pytest.mark.parametrize("range_header,first,last", [
    ("bytes=10-19", 10, 19),
    ("bytes=16380-", 16380, 16383),
    ("bytes=-5", 16379, 16383),
    ("bytes=0-0", 0, 0),
    ("bytes=16000-99999", 16000, 16383),
    ("bytes=-100000", 0, 16383),
])
def test_range_requests(edge, signer, range_header, first, last):
    url = signer(edge.url("/big.bin"))
    response = get(url, headers={"Range": range_header})
    assert response.status_code == 206, response.text
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(BIG_FILE)}"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert response.content == BIG_FILE[first:last + 1]


def test_range_with_curl_and_unsatisfiable_range(edge, signer):
    url = signer(edge.url("/big.bin"))
    result = curl("-r", "256-511", url)
    assert result.stdout == BIG_FILE[256:512]
    for bad in ("bytes=16384-", "bytes=99999-100000", "bytes=-0"):
        response = get(url, headers={"Range": bad})
        assert response.status_code == 416, (bad, response.text)
        assert response.headers["Content-Range"] == f"bytes */{len(BIG_FILE)}"
    empty = get(signer(edge.url("/empty.txt")), headers={"Range": "bytes=0-"})
    assert empty.status_code == 416 and empty.headers["Content-Range"] == "bytes */0"


def test_ranges_the_edge_does_not_serve_get_the_whole_file(edge, signer):
    url = signer(edge.url("/big.bin"))
    for header in ("bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=9-3"):
        response = get(url, headers={"Range": header})
        assert response.status_code == 200, header
        assert response.content == BIG_FILE


def test_if_range_with_a_stale_validator_gets_the_whole_file(edge, signer):
    url = signer(edge.url("/big.bin"))
    etag = get(url, method="HEAD").headers["ETag"]
    assert get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    assert get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}).status_code == 200


def test_large_file_is_streamed_whole_and_in_ranges(edge, signer, site, tmp_path):
    data = (site / "large.mp4").read_bytes()
    url = signer(edge.url("/large.mp4"))
    out = tmp_path / "large.mp4"
    result = curl("-o", str(out), "-w", "%{http_code} %{content_type} %{size_download}", url)
    assert result.stdout.decode() == f"200 video/mp4 {len(data)}"
    assert out.read_bytes() == data
    # Ranges across the 256 KiB chunks, and "bytes=N-" as video players send it.
    for header, first, last in (("bytes=100000-900000", 100000, 900000), ("bytes=1048576-", 1048576, len(data) - 1),
                                ("bytes=-2000000", len(data) - 2000000, len(data) - 1)):
        response = get(url, headers={"Range": header})
        assert response.status_code == 206
        assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
        assert response.content == data[first:last + 1]
    head = get(url, method="HEAD")
    assert head.headers["Content-Length"] == str(len(data)) and head.content == b""
    # Several requests on one keep-alive connection stay in step.
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(url, timeout=10).content == data
            assert session.get(url, headers={"Range": "bytes=0-9"}, timeout=10).content == data[:10]


@pytest.mark.parametrize("name,content_type", [
    ("report.pdf", "application/pdf"),
    ("page.html", "text/html; charset=utf-8"),
    ("hello.txt", "text/plain; charset=utf-8"),
    ("data.json", "application/json"),
    ("logo.png", "image/png"),
    ("photo.jpg", "image/jpeg"),
    ("anim.gif", "image/gif"),
    ("icon.svg", "image/svg+xml"),
    ("style.css", "text/css; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("movie.mp4", "video/mp4"),
    ("blob.dat", "application/octet-stream"),
])
def test_content_types(edge, signer, site, name, content_type):
    url = signer(edge.url("/" + name))
    response = get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.content == (site / name).read_bytes()


def test_validators_and_conditional_requests(edge, signer):
    url = signer(edge.url("/hello.txt"))
    response = get(url)
    etag, modified = response.headers["ETag"], response.headers["Last-Modified"]
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', etag)
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", modified)
    assert response.headers["Cache-Control"] == "private, max-age=3600"
    assert response.headers["Content-Length"] == str(len(b"hello from the edge\n"))
    not_modified = get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    assert get(url, headers={"If-Modified-Since": modified}).status_code == 304
    assert get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    # A conditional request is still checked first.
    assert get(edge.url("/hello.txt"), headers={"If-None-Match": etag}).status_code == 403


def test_folders_index_and_missing_files(edge, signer):
    signing = split_signed(signer(edge.url("/x"), "--resource", edge.url("/*")))[1]
    sub = get(edge.url("/sub/?" + signing))
    assert sub.status_code == 200 and sub.text == "<p>sub index</p>\n"
    assert sub.headers["Content-Type"] == "text/html; charset=utf-8"
    assert get(edge.url("/noindex/?" + signing)).status_code == 404
    missing = get(edge.url("/no/such/file.txt?" + signing))
    assert missing.status_code == 404
    assert "<Code>NoSuchKey</Code>" in missing.text
    # Without a valid signature a missing path is refused like any other: nothing is revealed.
    assert_refused(get(edge.url("/no/such/file.txt")), "missing_key_pair_id", code="MissingKey")


def test_percent_encoded_path(edge, signer):
    url = signer(edge.url("/name%20with%20space.txt"))
    assert get(url).text == "spaced\n"


# ---------------------------------------------------------------------------------------------
# Refused


def test_unknown_key_id(edge, signer, keys):
    url = signer(edge.url("/hello.txt"), key="rsa2")
    message = assert_refused(get(url), "unknown_key")
    assert "KTESTONLYRSA02" in message


def test_good_signature_under_another_trusted_id(edge, signer, keys):
    # Signed with the RSA key but claiming the EC key's id: the signature does not verify.
    url = signer(edge.url("/hello.txt"), key="rsa", key_id=keys["ec"].key_id)
    assert_refused(get(url), "bad_signature")


def test_tampered_signature_and_url(edge, signer):
    url = signer(edge.url("/hello.txt"))
    sig = re.search(r"Signature=([^&]+)", url).group(1)
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    assert_refused(get(url.replace(sig, flipped)), "bad_signature", message="signature does not match")
    # The canned policy is for that URL: the same signature on another path is refused.
    assert_refused(get(url.replace("/hello.txt", "/data.json")), "bad_signature")
    # A longer expiry than the one signed.
    expires = re.search(r"Expires=(\d+)", url).group(1)
    assert_refused(get(url.replace(f"Expires={expires}", f"Expires={int(expires) + 1}")), "bad_signature")


def test_malformed_signing_parameters(edge, signer):
    url = signer(edge.url("/hello.txt"))
    assert_refused(get(re.sub(r"&Signature=[^&]+", "", url)), "missing_signature")
    assert_refused(get(re.sub(r"Expires=\d+", "Expires=soon", url)), "malformed_policy")
    assert_refused(get(url + "&Hash-Algorithm=MD5"), "unsupported_hash")
    assert_refused(get(url.replace("Expires=", "Nope=")), "missing_policy")
    sig = re.search(r"Signature=([^&]+)", url).group(1)
    assert_refused(get(url.replace(sig, "not*base64")), "bad_signature")


def test_expired_link(edge, signer):
    expires = int(time.time()) + 3
    url = signer(edge.url("/hello.txt"), "--expires-at", str(expires))
    if time.time() < expires - 1:  # (a very slow machine may already be past it)
        assert get(url).status_code == 200
    wait_until(lambda: time.time() >= expires + 0.05, timeout=5, what="the link to expire")
    message = assert_refused(get(url), "expired", message="the link expired at")
    assert str(expires) in message


def test_not_yet_valid_link(edge, signer):
    starts = int(time.time()) + 3600
    url = signer(edge.url("/hello.txt"), "--starts-at", str(starts), "--expires-in", "2h")
    assert_refused(get(url), "not_yet_valid", message="valid only from")


def test_ip_condition_uses_the_peer_address(edge, signer):
    url = signer(edge.url("/hello.txt"), "--ip", "10.0.0.0/8")
    message = assert_refused(get(url), "ip_not_allowed")
    assert "10.0.0.0/8" in message
    # Without --trust-x-forwarded-for a viewer cannot claim another address.
    assert_refused(get(url, headers={"X-Forwarded-For": "10.1.2.3"}), "ip_not_allowed")
    allowed = signer(edge.url("/hello.txt"), "--ip", "127.0.0.1")
    assert get(allowed).status_code == 200


def test_x_forwarded_for_only_with_the_flag(edges, site, signer, keys):
    edge = edges.start("--root", str(site), "--public-key", f"{keys['rsa'].key_id}={keys['rsa'].public}",
                       "--trust-x-forwarded-for", "--cache-control", "public, max-age=60")
    url = signer(edge.url("/hello.txt"), "--ip", "10.0.0.0/8")
    ok = get(url, headers={"X-Forwarded-For": "10.1.2.3"})
    assert ok.status_code == 200
    assert ok.headers["Cache-Control"] == "public, max-age=60"
    # The first entry is the viewer; proxies add theirs after it.
    assert get(url, headers={"X-Forwarded-For": "10.9.9.9, 127.0.0.1"}).status_code == 200
    assert_refused(get(url, headers={"X-Forwarded-For": "192.168.1.1, 10.1.2.3"}), "ip_not_allowed")
    # No header: the TCP peer (127.0.0.1) is the viewer.
    assert_refused(get(url), "ip_not_allowed")
    assert "viewer_ip_from=X-Forwarded-For" in edge.log()


def test_path_traversal_is_refused(edge, signer, site):
    signing = split_signed(signer(edge.url("/x"), "--resource", edge.url("/*")))[1]
    secret = (site.parent / "outside" / "secret.txt").read_bytes()
    for target in ("/../outside/secret.txt", "/%2e%2e/outside/secret.txt", "/docs/%2E%2E/%2e%2e/outside/secret.txt",
                   "/docs/..%2f..%2foutside/secret.txt", "/docs/../hello.txt"):
        response = raw_request(edge, f"{target}?{signing}")
        assert response.status == 403, (target, response.status)
        assert response.header("X-Cfsign-Refusal") == "path_traversal", target
        assert secret not in response.body
    # A symbolic link inside the root that leads outside it.
    response = raw_request(edge, f"/escape.txt?{signing}")
    assert response.status == 403 and response.header("X-Cfsign-Refusal") == "outside_root"
    assert secret not in response.body
    # Unsigned, the same paths are refused before any lookup.
    assert raw_request(edge, "/../outside/secret.txt").header("X-Cfsign-Refusal") == "missing_key_pair_id"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_are_405(edge, signer, method):
    url = signer(edge.url("/hello.txt"))
    response = get(url, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


def test_one_log_line_per_refusal(edge, signer):
    marker = f"marker{time.time_ns()}"
    assert get(edge.url(f"/hello.txt?{marker}=1")).status_code == 403
    url = signer(edge.url(f"/hello.txt?{marker}=2"), "--ip", "10.0.0.0/8")
    assert get(url).status_code == 403

    def lines():
        return [line for line in edge.log().splitlines() if marker in line]

    found = wait_until(lambda: len(lines()) >= 2 and lines(), timeout=5, what="the refusal log lines")
    assert len(found) == 2, found
    assert "403 missing_key_pair_id GET" in found[0] and "[unsigned]" in found[0]
    assert "403 ip_not_allowed GET" in found[1] and "viewer 127.0.0.1" in found[1]
    # Signatures never reach the log (a logged signed URL could be replayed).
    assert "Signature=" not in edge.log()
