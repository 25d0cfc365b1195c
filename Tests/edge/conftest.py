"""Fixtures of the edge suite: the real `cfsign edge` binary serving a temporary folder of test files
(or forwarding to a test origin), with links and cookies signed by the real `cfsign sign`.

Keys are made at test time by `cfsign keys generate` into a temporary folder (mode 0600 private key
files named ``test-only-*.pem``); none is ever committed. Every process listens on 127.0.0.1 only and
is stopped by pid at teardown, pass or fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .edge_support import DEFAULT_BIN, REPO_ROOT, EdgeFactory, TestKey, run_cfsign

#: Bytes 0..255 repeated: range tests can name the byte at any offset.
BIG_FILE = bytes(range(256)) * 64  # 16 KiB


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives headless Chromium through selenium (always run when CI=true)")




@pytest.fixture(scope="session")
def keys(cfsign_bin: Path, tmp_path_factory) -> dict[str, TestKey]:
    """RSA-2048 and EC P-256 key pairs made by `cfsign keys generate`, plus a second RSA key the edge
    does not trust unless a test says so."""
    folder = tmp_path_factory.mktemp("test-only-keys")
    os.chmod(folder, 0o700)
    made = {}
    for name, kind, key_id in (("rsa", "rsa", "KTESTONLYRSA01"), ("ec", "ec", "KTESTONLYEC001"), ("rsa2", "rsa", "KTESTONLYRSA02")):
        result = run_cfsign(cfsign_bin, "keys", "generate", "--type", kind, "--out", str(folder), "--name", f"test-only-{name}")
        assert result.returncode == 0, result.stderr
        private, public = (Path(p) for p in result.stdout.split())
        assert (private.stat().st_mode & 0o777) == 0o600
        made[name] = TestKey(key_id, private, public)
    return made


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The folder the edge serves: one file per content type, a folder with an index, a folder
    without one, files for wildcard policies, a symlink that leads outside, and a secret beside it."""
    base = tmp_path_factory.mktemp("edge-site")
    root = base / "root"
    root.mkdir()
    files = {
        "hello.txt": b"hello from the edge\n",
        "report.pdf": b"%PDF-1.4\n% test-only\n%%EOF\n",
        "data.json": b'{"private": true}\n',
        "page.html": b"<!doctype html><title>private</title><p>private page</p>\n",
        "style.css": b"p { color: red }\n",
        "app.js": b"console.log('private');\n",
        "logo.png": b"\x89PNG\r\n\x1a\nnot really a png",
        "photo.jpg": b"\xff\xd8\xffnot really a jpeg",
        "anim.gif": b"GIF89a",
        "icon.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "movie.mp4": b"\x00\x00\x00\x18ftypmp42",
        "blob.dat": b"\x00\x01\x02",
        "big.bin": BIG_FILE,
        "empty.txt": b"",
        "name with space.txt": b"spaced\n",
        "docs/a.txt": b"doc a\n",
        "docs/b.txt": b"doc b\n",
        "docs/deep/c.txt": b"doc c\n",
        "sub/index.html": b"<p>sub index</p>\n",
        "noindex/file.txt": b"x\n",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # Over the edge's 1 MiB streaming threshold: sent in chunks from the file, not read whole first.
    (root / "large.mp4").write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"outside the root: never served\n")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    return root


@pytest.fixture(scope="module")
def module_edges(cfsign_bin: Path, tmp_path_factory):
    factory = EdgeFactory(cfsign_bin, tmp_path_factory.mktemp("edges"))
    try:
        yield factory
    finally:
        factory.close()




@pytest.fixture
def edges(cfsign_bin: Path, tmp_path: Path, request):
    """Starts `cfsign edge` processes for one test; all stopped at teardown (logs shown on failure)."""
    factory = EdgeFactory(cfsign_bin, tmp_path)
    try:
        yield factory
    finally:
        factory.close()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            for edge in factory.started:
                print(f"\n--- cfsign edge {edge.base} (exit {edge.proc.returncode}) stderr tail ---\n{edge.log()[-4000:]}")
