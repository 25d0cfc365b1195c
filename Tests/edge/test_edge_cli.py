"""`cfsign edge` start-up: clear errors for bad flags, files and ports; help; a clean stop."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from .edge_support import clean_environment, run_cfsign

USAGE = 64  # swift-argument-parser's exit code for usage errors (CLI.md: "its own code")


def edge_run(cfsign_bin: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs `cfsign edge ARGS` that is expected to exit at once (bad input)."""
    return run_cfsign(cfsign_bin, "edge", *args, timeout=30)


@pytest.fixture(scope="module")
def pub(keys) -> str:
    return f"{keys['rsa'].key_id}={keys['rsa'].public}"


@pytest.mark.parametrize("args,code,needle", [
    ([], USAGE, "--listen"),
    (["--listen", "127.0.0.1:0", "--public-key", "K=f"], USAGE, "give --root DIR (serve files) or --origin URL"),
    (["--listen", "127.0.0.1:0", "--root", "/tmp", "--origin", "http://127.0.0.1:1", "--public-key", "K=f"], USAGE, "only one of --root and --origin"),
    (["--listen", "127.0.0.1:0", "--root", "/tmp"], USAGE, "--public-key ID=FILE (repeatable) or --keygroup-from-redis"),
    (["--listen", "127.0.0.1:0", "--root", "/tmp", "--public-key", "K=f", "--keygroup-from-redis"], USAGE, "not both"),
    (["--listen", "127.0.0.1:0", "--root", "/tmp", "--public-key", "K=f", "--redis", "redis://127.0.0.1:1"], USAGE, "only with --keygroup-from-redis"),
    (["--listen", "127.0.0.1:0", "--root", "/tmp", "--public-key", "just-a-file.pem"], USAGE, "is not ID=FILE"),
    (["--listen", "127.0.0.1:0", "--root", "/tmp", "--public-key", "bad id=f.pem"], USAGE, "is not a valid key id"),
    (["--listen", "localhost", "--root", "/tmp", "--public-key", "K=f"], USAGE, "is not HOST:PORT"),
    (["--listen", "127.0.0.1:70000", "--root", "/tmp", "--public-key", "K=f"], USAGE, "is not HOST:PORT"),
])
def test_usage_errors(cfsign_bin, args, code, needle):
    result = edge_run(cfsign_bin, *args)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr
    assert result.stdout == ""


def test_missing_root(cfsign_bin, pub, tmp_path):
    result = edge_run(cfsign_bin, "--listen", "127.0.0.1:0", "--root", str(tmp_path / "nope"), "--public-key", pub)
    assert result.returncode == 1
    assert f"--root {tmp_path / 'nope'} does not exist" in result.stderr


def test_root_is_a_file(cfsign_bin, pub, site):
    result = edge_run(cfsign_bin, "--listen", "127.0.0.1:0", "--root", str(site / "hello.txt"), "--public-key", pub)
    assert result.returncode == 1 and "is not a folder" in result.stderr


def test_unreadable_and_wrong_key_files(cfsign_bin, keys, site, tmp_path):
    missing = tmp_path / "test-only-missing.pub.pem"
    result = edge_run(cfsign_bin, "--listen", "127.0.0.1:0", "--root", str(site), "--public-key", f"KX={missing}")
    assert result.returncode == 1
    assert str(missing) in result.stderr and "edge not started" in result.stderr
    # The private key instead of the public one: said so, and nothing of the key is printed.
    result = edge_run(cfsign_bin, "--listen", "127.0.0.1:0", "--root", str(site), "--public-key", f"KX={keys['rsa'].private}")
    assert result.returncode == 1
    assert "is a private key; give the public key" in result.stderr
    assert "BEGIN" not in result.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    result = edge_run(cfsign_bin, "--listen", "127.0.0.1:0", "--root", str(site), "--public-key", f"KX={garbage}")
    assert result.returncode == 1 and "is not a PEM public key" in result.stderr


def test_bad_origin(cfsign_bin, pub):
    for origin in ("ftp://127.0.0.1/x", "127.0.0.1:9000", "http://127.0.0.1:9000/?a=1"):
        result = edge_run(cfsign_bin, "--listen", "127.0.0.1:0", "--origin", origin, "--public-key", pub)
        assert result.returncode == 1, origin
        assert f"--origin {origin}" in result.stderr


def test_port_in_use(cfsign_bin, pub, site):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = edge_run(cfsign_bin, "--listen", f"127.0.0.1:{port}", "--root", str(site), "--public-key", pub)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert result.stdout == ""


def test_help(cfsign_bin):
    result = run_cfsign(cfsign_bin, "edge", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for needle in ("--root <dir>", "--origin <url>", "--listen <host:port>", "--public-key <id=file>", "--keygroup-from-redis",
                   "--trust-x-forwarded-for", "--cache-control <value>", "--redis <url>", "--namespace <ns>",
                   "X-Cfsign-Refusal", "MissingKey", "Examples:"):
        assert needle in text, needle
    assert "edge" in run_cfsign(cfsign_bin, "--help").stdout


def test_sigterm_stops_cleanly(edges, site, pub):
    edge = edges.start("--root", str(site), "--public-key", pub)
    assert edge.base.startswith("http://127.0.0.1:") and edge.port > 0
    assert edge.stop() == 0
    assert "cfsign edge stopped" in edge.log()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert s.connect_ex(("127.0.0.1", edge.port)) != 0
