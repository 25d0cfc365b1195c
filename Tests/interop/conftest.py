"""Shared fixtures of the interop suite: the cfsign binary and test-only keys made with openssl.

Every key here is generated at test time into a temporary folder (mode 0600 files, named
``test-only-*.pem``); none is ever committed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "cfsign"

# The reply list prefix of the default namespace; sign-batch refuses any other reply_to.
REPLY_TO = "{cfsign}:reply:t"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)


def _private(path: Path) -> Path:
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class TestKey:
    """One generated private key file, with the same key loaded by `cryptography` for the oracle."""

    __test__ = False  # not a test class, despite the name

    name: str  # e.g. "rsa-pkcs1"
    kind: str  # "rsa" or "ec"
    path: Path
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def public_key(self):
        return self.private_key.public_key()


def _load_for_oracle(path: Path):
    """The private key block of a PEM file (skipping a leading EC PARAMETERS block), via cryptography."""
    text = path.read_text()
    match = re.search(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.*?-----END \1-----\n?", text, re.S)
    assert match, f"{path} has no private key block"
    return serialization.load_pem_private_key(match.group(0).encode(), password=None)


def _first_line(path: Path) -> str:
    return path.read_text().splitlines()[0]




@pytest.fixture(scope="session")
def cfsign(cfsign_bin: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Runs cfsign with the given arguments; stdin is closed unless `input` is given. Text mode."""

    def run(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(cfsign_bin), *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("test-only-keys")
    os.chmod(d, 0o700)
    return d


@pytest.fixture(scope="session")
def test_keys(key_dir: Path) -> dict[str, TestKey]:
    """Valid signing keys, RSA-2048 and EC P-256, in every PEM form cfsign must read.

    rsa-pkcs1 and rsa-pkcs1-converted are PKCS#1 (`BEGIN RSA PRIVATE KEY`): the first from
    `openssl genrsa -traditional`, the second the rsa-pkcs8 key rewritten by `openssl pkey -traditional`
    (same key, two forms). ec-sec1 is SEC1 alone; ec-sec1-params has the `BEGIN EC PARAMETERS` block
    that `openssl ecparam -genkey` writes first.
    """
    p = lambda name: key_dir / f"test-only-{name}.pem"  # noqa: E731
    _openssl("genrsa", "-traditional", "-out", str(p("rsa-pkcs1")), "2048")
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(p("rsa-pkcs8")))
    _openssl("pkey", "-traditional", "-in", str(p("rsa-pkcs8")), "-out", str(p("rsa-pkcs1-converted")))
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(p("ec-sec1")))
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-out", str(p("ec-sec1-params")))
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(p("ec-pkcs8")))

    expected_first_lines = {
        "rsa-pkcs1": "-----BEGIN RSA PRIVATE KEY-----",
        "rsa-pkcs8": "-----BEGIN PRIVATE KEY-----",
        "rsa-pkcs1-converted": "-----BEGIN RSA PRIVATE KEY-----",
        "ec-sec1": "-----BEGIN EC PRIVATE KEY-----",
        "ec-sec1-params": "-----BEGIN EC PARAMETERS-----",
        "ec-pkcs8": "-----BEGIN PRIVATE KEY-----",
    }
    keys = {}
    for name, first in expected_first_lines.items():
        path = _private(p(name))
        assert _first_line(path) == first, f"openssl wrote {path} in an unexpected form"
        key = _load_for_oracle(path)
        kind = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"
        if kind == "rsa":
            assert key.key_size == 2048
        else:
            assert isinstance(key.curve, ec.SECP256R1)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        keys[name] = TestKey(name=name, kind=kind, path=path, private_key=key)
    return keys


@pytest.fixture(scope="session")
def bad_key_files(key_dir: Path, test_keys: dict[str, TestKey]) -> dict[str, Path]:
    """Files cfsign must refuse as a signing key, each with a reason in its name.

    The RSA-4096 key is slow to make, so this is done once per session.
    """
    p = lambda name: key_dir / f"test-only-bad-{name}.pem"  # noqa: E731
    _openssl("genrsa", "-traditional", "-out", str(p("rsa-1024")), "1024")
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096", "-out", str(p("rsa-4096")))
    _openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", str(p("ec-secp384r1")))
    _openssl("genpkey", "-algorithm", "ed25519", "-out", str(p("ed25519")))
    _openssl(
        "pkey", "-in", str(test_keys["rsa-pkcs8"].path), "-aes256", "-passout", "pass:test-only",
        "-out", str(p("encrypted-pkcs8")),
    )
    _openssl(
        "pkey", "-traditional", "-in", str(test_keys["rsa-pkcs1"].path), "-aes128", "-passout", "pass:test-only",
        "-out", str(p("encrypted-pkcs1")),
    )
    _openssl("pkey", "-in", str(test_keys["ec-pkcs8"].path), "-pubout", "-out", str(p("public-key")))
    p("garbage").write_bytes(b"this is not a key\n\x00\x01\x02\xff\xfe")
    files = {
        name: _private(p(name))
        for name in (
            "rsa-1024", "rsa-4096", "ec-secp384r1", "ed25519", "encrypted-pkcs8", "encrypted-pkcs1",
            "public-key", "garbage",
        )
    }
    assert "ENCRYPTED PRIVATE KEY" in _first_line(files["encrypted-pkcs8"])
    assert "Proc-Type: 4,ENCRYPTED" in files["encrypted-pkcs1"].read_text()
    p("empty").write_bytes(b"")
    files["empty"] = _private(p("empty"))
    files["missing"] = key_dir / "test-only-bad-missing.pem"  # never created
    fifo = key_dir / "test-only-bad-fifo.pem"  # opening it for reading blocks until a writer comes
    os.mkfifo(fifo, 0o600)
    files["fifo"] = fifo
    directory = key_dir / "test-only-bad-directory.pem"
    directory.mkdir()
    files["directory"] = directory
    return files


@pytest.fixture(scope="session")
def aws_cli(tmp_path_factory) -> Callable[..., subprocess.CompletedProcess]:
    """Runs the AWS CLI (awscli 1.x of this Python, `python -m awscli`) with no user config or credentials."""
    if importlib.util.find_spec("awscli") is None:
        pytest.fail("awscli is not installed; scripts/setup (installs Tests/requirements.txt)")
    home = tmp_path_factory.mktemp("aws-config")
    env = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    env.update(
        {
            "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_PAGER": "",
        }
    )

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "awscli", *args],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout,
        )

    return run
