"""`cfsign edge --keygroup-from-redis`: the edge trusts the keys of the key group stored with
`cfsign keygroup set/rotate` in a real redis-server, and follows rotations within a poll interval.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from cfsign_support import free_port, make_redis

from .edge_support import clean_environment, run_cfsign, sign, wait_until


@pytest.fixture
def redis_url(tmp_path: Path):
    """A fresh redis-server on a free loopback port (no persistence), stopped by pid."""
    server = make_redis(tmp_path / "redis")
    try:
        yield server.url
    finally:
        server.stop()


def keygroup(cfsign_bin, redis_url: str, ns: str, *args: str) -> str:
    result = run_cfsign(cfsign_bin, "keygroup", *args, "--redis", redis_url, "--namespace", ns)
    assert result.returncode == 0, result.stderr
    return result.stdout


def store_group(cfsign_bin, tmp_path: Path, redis_url: str, ns: str, group: dict) -> None:
    path = tmp_path / f"group-{len(list(tmp_path.glob('group-*')))}.json"
    path.write_text(json.dumps(group))
    keygroup(cfsign_bin, redis_url, ns, "set", str(path))


def status(url: str) -> tuple[int, str | None]:
    response = requests.get(url, timeout=10)
    return response.status_code, response.headers.get("X-Cfsign-Refusal")


def test_keys_from_the_key_group_and_rotation(edges, cfsign_bin, keys, site, redis_url, tmp_path):
    ns = "edge-rotation"
    rsa, ec, rsa2 = keys["rsa"], keys["ec"], keys["rsa2"]
    # Version 1: the RSA key by its private key file only (the edge derives the public key).
    store_group(cfsign_bin, tmp_path, redis_url, ns, {"active": rsa.key_id, "keys": [{"id": rsa.key_id, "private_key_file": str(rsa.private)}]})
    edge = edges.start("--root", str(site), "--keygroup-from-redis", "--redis", redis_url, "--namespace", ns,
                       "--keygroup-poll-interval", "0.2")
    assert f"trusting key ids {rsa.key_id} (key group version 1)" in edge.log()
    assert f"trusted_key_ids={rsa.key_id}" in edge.log()
    rsa_url = sign(cfsign_bin, edge.url("/hello.txt"), rsa)
    ec_url = sign(cfsign_bin, edge.url("/hello.txt"), ec, "--hash", "SHA256")
    assert status(rsa_url) == (200, None)
    assert status(ec_url) == (403, "unknown_key")

    # Rotate to the EC key (with its public key): the previous key stays in the group.
    keygroup(cfsign_bin, redis_url, ns, "rotate", "--key-id", ec.key_id, "--private-key-file", str(ec.private), "--public-key", str(ec.public))
    wait_until(lambda: status(ec_url)[0] == 200, timeout=10, what="the edge to trust the rotated key")
    assert status(rsa_url) == (200, None)
    wait_until(lambda: f"trusting key ids {ec.key_id}, {rsa.key_id} (key group version 2)" in edge.log(), timeout=5, what="the log line")

    # A group without the RSA key, with an inline private key: RSA links are refused from then on.
    store_group(cfsign_bin, tmp_path, redis_url, ns, {"active": rsa2.key_id, "keys": [{"id": rsa2.key_id, "private_key_pem": rsa2.private.read_text()}]})
    wait_until(lambda: status(rsa_url) == (403, "unknown_key"), timeout=10, what="the edge to drop the old key")
    assert status(sign(cfsign_bin, edge.url("/hello.txt"), rsa2)) == (200, None)
    assert "BEGIN PRIVATE KEY" not in edge.log()


def test_public_key_pem_is_what_the_edge_trusts(edges, cfsign_bin, keys, site, redis_url, tmp_path):
    """The edge host need not have the private keys: public_key_pem (what CloudFront holds) is used."""
    ns = "edge-public-pem"
    rsa = keys["rsa"]
    store_group(cfsign_bin, tmp_path, redis_url, ns, {"active": rsa.key_id, "keys": [
        {"id": rsa.key_id, "private_key_file": "/nonexistent/on/the/edge/host.pem", "public_key_pem": rsa.public.read_text()},
    ]})
    edge = edges.start("--root", str(site), "--keygroup-from-redis", "--redis", redis_url, "--namespace", ns)
    assert status(sign(cfsign_bin, edge.url("/hello.txt"), rsa)) == (200, None)


def test_no_key_group_yet_then_one_is_stored(edges, cfsign_bin, keys, site, redis_url, tmp_path):
    ns = "edge-empty"
    edge = edges.start("--root", str(site), "--keygroup-from-redis", "--redis", redis_url, "--namespace", ns,
                       "--keygroup-poll-interval", "0.2")
    assert "no key group in Redis yet" in edge.log()
    url = sign(cfsign_bin, edge.url("/hello.txt"), keys["ec"])
    response = requests.get(url, timeout=10)
    assert response.status_code == 403 and "trusts no key yet" in response.text
    store_group(cfsign_bin, tmp_path, redis_url, ns, {"active": keys["ec"].key_id, "keys": [{"id": keys["ec"].key_id, "private_key_file": str(keys["ec"].private)}]})
    wait_until(lambda: status(url)[0] == 200, timeout=10, what="the edge to load the stored group")


def test_a_key_that_cannot_be_loaded_is_named_in_the_log(edges, cfsign_bin, keys, site, redis_url, tmp_path):
    ns = "edge-bad-key"
    rsa = keys["rsa"]
    store_group(cfsign_bin, tmp_path, redis_url, ns, {"active": rsa.key_id, "keys": [
        {"id": rsa.key_id, "private_key_file": str(rsa.private)},
        {"id": "KMISSINGFILE01", "private_key_file": "/nonexistent/test-only-missing.pem"},
    ]})
    edge = edges.start("--root", str(site), "--keygroup-from-redis", "--redis", redis_url, "--namespace", ns)
    log = edge.log()
    assert "KMISSINGFILE01" in log and "cannot be trusted" in log
    assert f"trusting key ids {rsa.key_id} (key group version 1)" in log
    assert status(sign(cfsign_bin, edge.url("/hello.txt"), rsa)) == (200, None)


def test_redis_unreachable_at_start(cfsign_bin, site):
    result = subprocess.run(
        [str(cfsign_bin), "edge", "--root", str(site), "--listen", "127.0.0.1:0", "--keygroup-from-redis",
         "--redis", f"redis://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=clean_environment())
    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot read the key group from Redis" in result.stderr and "is Redis running?" in result.stderr
