"""Producers (producers issue): the copyable examples in scripts/examples against a real worker,
`cfsign request` (happy path, same output as `cfsign sign`, timeout), and `cfsign verify` accepting
what cfsign and botocore produce and refusing bad links with the right reason."""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from .cfsign_system import CLOUDFRONT_HOST, store_keygroup, unique_namespace

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=30, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


@pytest.fixture
def fleet(redis_server, workers, test_keys):
    ns = unique_namespace("producers")
    store_keygroup(redis_server.client(), ns, [test_keys["rsa"], test_keys["ec"]])
    workers.start(redis_server, ns)
    return redis_server, ns


def public_pem(key, tmp_path) -> Path:
    path = tmp_path / f"{key.key_id}.pub.pem"
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_the_python_example_gets_a_signed_url_from_a_real_worker(fleet):
    server, ns = fleet
    url = f"{CLOUDFRONT_HOST}/invoices/example.pdf"
    out = run(sys.executable, ROOT / "scripts/examples/python_producer.py", url, server.url, ns)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(url + "?Expires=") and "&Signature=" in out.stdout and "&Key-Pair-Id=" in out.stdout


def test_the_redis_cli_example_gets_a_reply_from_a_real_worker(fleet):
    server, ns = fleet
    url = f"{CLOUDFRONT_HOST}/invoices/shell.pdf"
    out = run("bash", ROOT / "scripts/examples/redis_cli_producer.sh", url, "127.0.0.1", server.port, ns)
    assert out.returncode == 0, out.stderr
    assert '"ok":true' in out.stdout and url in out.stdout


def test_cfsign_request_prints_exactly_what_cfsign_sign_prints(fleet, cfsign_bin, test_keys):
    server, ns = fleet
    rsa = test_keys["rsa"]
    expires = str(int(time.time()) + 3600)
    url = f"{CLOUDFRONT_HOST}/invoices/req.pdf?tenant=7"
    for extra in ([], ["--cookies"], ["--ip", "10.0.0.0/8", "--hash", "SHA256"]):
        remote = run(cfsign_bin, "request", url, "--expires-at", expires, "--redis", server.url, "--namespace", ns, *extra)
        local = run(cfsign_bin, "sign", url, "--expires-at", expires, "--key-id", rsa.key_id, "--private-key", rsa.path, *extra)
        assert remote.returncode == 0, remote.stderr
        assert remote.stdout == local.stdout, extra


def test_cfsign_request_key_id_picks_a_non_active_key(fleet, cfsign_bin, test_keys):
    server, ns = fleet
    out = run(cfsign_bin, "request", f"{CLOUDFRONT_HOST}/a.pdf", "--expires-in", "1h", "--key-id", test_keys["ec"].key_id,
              "--redis", server.url, "--namespace", ns, "--json")
    assert out.returncode == 0, out.stderr
    assert f'"key_id":"{test_keys["ec"].key_id}"' in out.stdout


def test_cfsign_request_reports_an_error_reply_with_its_code(fleet, cfsign_bin):
    server, ns = fleet
    out = run(cfsign_bin, "request", f"{CLOUDFRONT_HOST}/a.pdf", "--expires-in", "1h", "--key-id", "KNOTINGROUP",
              "--redis", server.url, "--namespace", ns)
    assert out.returncode == 1 and out.stdout == ""
    assert "unknown_key" in out.stderr


def test_cfsign_request_times_out_with_a_sentence_naming_the_namespace(redis_server, cfsign_bin):
    ns = unique_namespace("nobody")
    start = time.monotonic()
    out = run(cfsign_bin, "request", f"{CLOUDFRONT_HOST}/a.pdf", "--expires-in", "1h", "--redis", redis_server.url,
              "--namespace", ns, "--timeout", "1")
    assert out.returncode == 1
    assert f"no worker answered within 1 s; is a worker running on namespace {ns}?" in out.stderr
    assert "cfsign status" in out.stderr
    assert time.monotonic() - start < 10


# ---- cfsign verify

@pytest.fixture
def signed(cfsign_bin, test_keys, tmp_path):
    """Helpers to sign with cfsign and to verify."""
    rsa, ec = test_keys["rsa"], test_keys["ec"]

    def sign(url, key=rsa, *extra):
        out = run(cfsign_bin, "sign", url, "--key-id", key.key_id, "--private-key", key.path, *extra)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def verify(link, key=rsa, *extra):
        return run(cfsign_bin, "verify", link, "--public-key", public_pem(key, tmp_path), *extra)

    return sign, verify


def test_verify_accepts_what_cfsign_sign_produces(signed, test_keys):
    sign, verify = signed
    url = f"{CLOUDFRONT_HOST}/reports/q3.pdf"
    for key in (test_keys["rsa"], test_keys["ec"]):
        for extra in ([], ["--hash", "SHA256"], ["--resource", f"{CLOUDFRONT_HOST}/reports/*", "--ip", "10.0.0.0/8"]):
            link = sign(url, key, "--expires-in", "1h", *extra)
            out = verify(link, key, "--ip", "10.1.2.3")
            assert out.returncode == 0, (extra, out.stderr)
            assert "CloudFront would accept" in out.stdout


def test_verify_accepts_signed_cookies(signed, test_keys):
    sign, verify = signed
    url = f"{CLOUDFRONT_HOST}/reports/x.pdf"
    cookies = sign(url, test_keys["ec"], "--expires-in", "1h", "--cookies", "--resource", f"{CLOUDFRONT_HOST}/reports/*").splitlines()
    args = [a for c in cookies for a in ("--cookie", c)]
    assert verify(f"{CLOUDFRONT_HOST}/reports/other.pdf", test_keys["ec"], *args).returncode == 0
    refused = verify(f"{CLOUDFRONT_HOST}/private/other.pdf", test_keys["ec"], *args)
    assert refused.returncode == 1 and "resource_mismatch" in refused.stderr


def test_verify_accepts_what_botocore_produces(signed, test_keys):
    _, verify = signed
    rsa = test_keys["rsa"]
    key = rsa.private_key()
    signer = CloudFrontSigner(rsa.key_id, lambda m: key.sign(m, padding.PKCS1v15(), hashes.SHA1()))
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    url = f"{CLOUDFRONT_HOST}/botocore/a.pdf?x=1"
    assert verify(signer.generate_presigned_url(url, date_less_than=expires)).returncode == 0
    policy = signer.build_policy(f"{CLOUDFRONT_HOST}/botocore/*", expires, ip_address="192.0.2.7")
    link = signer.generate_presigned_url(url, policy=policy)
    assert verify(link, rsa, "--ip", "192.0.2.7").returncode == 0


@pytest.mark.parametrize("case,reason", [
    ("tampered signature", "bad_signature"),
    ("tampered URL", "bad_signature"),
    ("expired", "expired"),
    ("before starts_at", "not_yet_valid"),
    ("outside the IP range", "ip_not_allowed"),
    ("no viewer IP for an IP policy", "needs_viewer_ip"),
    ("path outside the resource", "resource_mismatch"),
    ("wrong public key", "bad_signature"),
    ("unsigned", "missing_key_pair_id"),
])
def test_verify_refuses_with_the_right_reason(signed, test_keys, case, reason):
    sign, verify = signed
    url = f"{CLOUDFRONT_HOST}/reports/a.pdf"
    now = int(time.time())
    key, extra = test_keys["rsa"], []
    if case == "tampered signature":
        link = sign(url, key, "--expires-in", "1h")
        sig = link.split("Signature=")[1].split("&")[0]
        link = link.replace(sig, ("A" if sig[0] != "A" else "B") + sig[1:])
    elif case == "tampered URL":
        link = sign(url, key, "--expires-in", "1h").replace("/reports/a.pdf", "/reports/b.pdf")
    elif case == "expired":
        link = sign(url, key, "--expires-at", str(now + 60))
        extra = ["--at", str(now + 120)]
    elif case == "before starts_at":
        link = sign(url, key, "--expires-in", "1h", "--starts-at", str(now + 600))
    elif case == "outside the IP range":
        link = sign(url, key, "--expires-in", "1h", "--ip", "10.0.0.0/8")
        extra = ["--ip", "11.0.0.1"]
    elif case == "no viewer IP for an IP policy":
        link = sign(url, key, "--expires-in", "1h", "--ip", "10.0.0.0/8")
    elif case == "path outside the resource":
        link = sign(url, key, "--expires-in", "1h", "--resource", f"{CLOUDFRONT_HOST}/reports/*")
        link = link.replace("/reports/a.pdf", "/private/a.pdf")
    elif case == "wrong public key":
        link = sign(url, key, "--expires-in", "1h")
        key = test_keys["ec"]
    else:
        link = url
    out = verify(link, key, *extra)
    assert out.returncode == 1, out.stdout
    assert f"({reason})" in out.stderr, out.stderr
    assert out.stdout == ""
