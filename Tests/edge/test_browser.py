"""A real browser against `cfsign edge`: headless Chromium (Debian's chromium and chromium-driver)
driven by selenium.

A test origin on 127.0.0.1:A sets the signed cookies with Set-Cookie (as an app's login page
would); cookies belong to a host, not a port, so Chromium sends them to the edge on 127.0.0.1:B.
The origin's page embeds a private image from the edge, and the browser then opens a private page
on the edge: both arrive. A fresh browser profile (no cookies) gets the edge's 403 instead.

Runs whenever Chromium, chromedriver and selenium are there; with CI=true their absence is a failure
(scripts/setup installs them when CI=true), otherwise a skip that says what is missing.
"""

from __future__ import annotations

import http.server
import os
import shutil
import struct
import threading
import zlib
from pathlib import Path

import pytest

from .edge_support import sign, wait_until

pytestmark = pytest.mark.browser

PRIVATE_TEXT = "private page for the browser test"


def _missing() -> list[str]:
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -r Tests/requirements.txt)")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        missing.append("chromium (apt-get install chromium)")
    if not shutil.which("chromedriver"):
        missing.append("chromedriver (apt-get install chromium-driver)")
    return missing


@pytest.fixture(scope="module", autouse=True)
def browser_available():
    missing = _missing()
    if missing:
        why = "the browser test needs " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; scripts/setup installs them when CI=true")
        pytest.skip(why + "; scripts/setup installs them when CI=true")


def tiny_png() -> bytes:
    """A valid 1x1 PNG (red), made here so no binary file is committed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture
def browser_root(tmp_path: Path) -> Path:
    root = tmp_path / "browser-root"
    root.mkdir()
    (root / "private.html").write_text(f"<!doctype html><title>private</title><p id='secret'>{PRIVATE_TEXT}</p>\n")
    (root / "pixel.png").write_bytes(tiny_png())
    return root


class CookieOrigin:
    """The app on 127.0.0.1:A: /login sets the signed cookies and shows a page with a private image."""

    def __init__(self, cookies: list[tuple[str, str]], image_url: str):
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = (f"<!doctype html><title>app</title><p>logged in</p>"
                        f"<img id='private' src='{image_url}'>").encode()
                self.send_response(200)
                if self.path.startswith("/login"):
                    for name, value in origin.cookies:
                        self.send_header("Set-Cookie", f"{name}={value}; Path=/; HttpOnly; SameSite=Lax")
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.cookies = cookies
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def make_driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                 "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


def test_browser_with_signed_cookies_from_the_app(edges, cfsign_bin, keys, browser_root, tmp_path):
    edge = edges.start("--root", str(browser_root), "--public-key", f"{keys['ec'].key_id}={keys['ec'].public}")
    lines = sign(cfsign_bin, edge.url("/private.html"), keys["ec"], "--cookies", "--resource", edge.url("/*"), "--hash", "SHA256")
    cookies = [tuple(line.split("=", 1)) for line in lines.splitlines()]
    assert [c[0] for c in cookies] == ["CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id", "CloudFront-Hash-Algorithm"]
    app = CookieOrigin(cookies, edge.url("/pixel.png"))
    driver = make_driver(tmp_path / "profile-signed")
    try:
        # The app's page sets the cookies; its <img> comes from the edge with them.
        driver.get(app.base + "/login")
        assert "logged in" in driver.page_source
        width = wait_until(
            lambda: driver.execute_script("const i = document.getElementById('private'); return i.complete ? i.naturalWidth : 0;"),
            timeout=15, what="the private image to load through the edge")
        assert width == 1
        # Then the browser opens a private page on the edge.
        driver.get(edge.url("/private.html"))
        assert PRIVATE_TEXT in driver.page_source
        assert driver.find_element("id", "secret").text == PRIVATE_TEXT
    finally:
        driver.quit()

    fresh = make_driver(tmp_path / "profile-fresh")
    try:
        fresh.get(edge.url("/private.html"))
        source = fresh.page_source
        assert PRIVATE_TEXT not in source
        assert "MissingKey" in source and "Missing Key-Pair-Id query parameter or cookie value" in source
        # The app's page without its login: the image is refused too.
        fresh.get(app.base + "/")
        loaded = wait_until(lambda: fresh.execute_script("return document.getElementById('private').complete;"),
                            timeout=15, what="the image request to finish")
        assert loaded
        assert fresh.execute_script("return document.getElementById('private').naturalWidth;") == 0
    finally:
        fresh.quit()
        app.close()

    log = edge.log()
    assert "200 GET " + edge.url("/pixel.png") in log and "signed cookies" in log
    assert "200 GET " + edge.url("/private.html") in log
    assert "403 missing_key_pair_id GET " + edge.url("/private.html") in log
