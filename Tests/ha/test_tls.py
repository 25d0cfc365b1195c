"""TLS: hiredis 0.14 has none, so a worker reaches a TLS-only Redis through stunnel in client mode,
configured by ops/stunnel/cfsign-redis-client.conf.

The test makes a throwaway CA and a server certificate for `redis.internal` with openssl, starts
`redis-server --port 0 --tls-port P` (Debian's redis-server is built with TLS), runs stunnel4 in the
foreground with a copy of the shipped configuration in which only the addresses, the CA file and
the pid file are changed (`connect` goes to 127.0.0.1:P; `checkHost`/`sni` stay `redis.internal`,
so the host-name check is the shipped one), and runs a worker through it. A copy whose checkHost
names another host, and one that trusts another CA, must refuse the server.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

import pytest
import redis

from .ha_support import (
    REPO_ROOT,
    RedisNode,
    collect_ids,
    free_ports,
    keygroup_document,
    namespace,
    openssl,
    push,
    start_worker,
    wait_registered,
    wait_until,
)

SHIPPED = REPO_ROOT / "ops" / "stunnel" / "cfsign-redis-client.conf"


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
            "-out", str(crt), "-days", "2", "-subj", f"/CN={name} (cfsign test only)")
    return key, crt


def make_server_cert(folder: Path, ca_key: Path, ca_crt: Path, host: str) -> tuple[Path, Path]:
    key, csr, crt, ext = folder / "server.key", folder / "server.csr", folder / "server.crt", folder / "server.ext"
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
            "-out", str(csr), "-subj", f"/CN={host}")
    ext.write_text(f"subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return key, crt


def shipped_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in SHIPPED.read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$", line)
        if m and not line.lstrip().startswith(";"):
            settings.setdefault(m.group(1), []).append(m.group(2))
    return settings


def test_shipped_configuration_verifies_the_server():
    s = shipped_settings()
    assert s["client"] == ["yes"]
    assert s["accept"] == ["127.0.0.1:6380"], "plain side on loopback only"
    assert s["connect"] == ["redis.internal:6379"]
    assert s["verifyChain"] == ["yes"]
    assert s["checkHost"] == ["redis.internal"]
    assert s["CAfile"] and s["CAfile"][0].startswith("/")
    assert s["foreground"] == ["yes"], "Debian's stunnel@.service expects a foreground process"
    assert "verifyPeer" not in s or s["verifyPeer"] == ["no"]


def tunnel_config(folder: Path, label: str, accept: int, tls_port: int, ca: Path, check_host: str | None = None) -> Path:
    """The shipped file with only addresses, the CA file and the pid file changed (and no setuid:
    the test may not run as root)."""
    text = SHIPPED.read_text()
    replacements = {
        "accept": f"127.0.0.1:{accept}",
        "connect": f"127.0.0.1:{tls_port}",
        "CAfile": str(ca),
        "pid": str(folder / f"{label}.pid"),
    }
    if check_host:
        replacements["checkHost"] = check_host
    for key, value in replacements.items():
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)
        assert n == 1, f"{key} appears once in the shipped file"
    text = re.sub(r"(?m)^set[ug]id\s*=.*$", "", text)
    path = folder / f"{label}.conf"
    path.write_text(text)
    return path


def start_tunnel(procs, folder: Path, label: str, conf: Path, accept: int):
    proc = procs.start(label, ["stunnel4", str(conf)])

    def listening():
        if proc.poll() is not None:
            pytest.fail(f"stunnel exited with {proc.returncode}: {procs.log(label)[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", accept)) == 0

    wait_until(listening, 10, what=f"stunnel ({label}) listening on {accept}")
    pid_file = folder / f"{label}.pid"
    wait_until(pid_file.exists, 5, what="stunnel's pid file")
    assert int(pid_file.read_text().strip()) == proc.pid, "foreground: the pid file names the process we started"
    return proc


def raw_ping(port: int) -> bytes:
    """PING in plain text on a fresh socket: what comes back before the peer closes or 3 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"PING\r\n")
        try:
            return s.recv(64)
        except (socket.timeout, ConnectionResetError):
            return b""


@pytest.fixture
def tls_redis(procs, tmp_path):
    ca_key, ca_crt = make_ca(tmp_path, "test-ca")
    server_key, server_crt = make_server_cert(tmp_path, ca_key, ca_crt, "redis.internal")
    (tls_port,) = free_ports(1)
    node = RedisNode(procs, tmp_path / "redis-tls", tls_port, "redis-tls",
                     ["--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", str(server_crt),
                      "--tls-key-file", str(server_key), "--tls-ca-cert-file", str(ca_crt), "--tls-auth-clients", "no"],
                     check=False)
    # The test producer checks the chain only (it dials 127.0.0.1; the certificate names redis.internal).
    client = redis.Redis(port=tls_port, ssl=True, ssl_ca_certs=str(ca_crt), ssl_cert_reqs="required", ssl_check_hostname=False,
                         socket_timeout=10)
    wait_until(lambda: node.proc.poll() is not None or client.ping(), 10, what="redis-server with TLS")
    if node.proc.poll() is not None:
        pytest.fail(f"redis-server --tls-port exited ({node.proc.returncode}): {procs.log('redis-tls')[-2000:]}")
    # TLS only: a plain-text client gets nowhere.
    assert raw_ping(tls_port) != b"+PONG\r\n"
    return {"port": tls_port, "ca": ca_crt, "client": client}


def test_worker_through_stunnel_to_a_tls_only_redis(procs, cfsign_bin, tls_redis, ec_key, tmp_path):
    accept, wrong_host_accept, wrong_ca_accept = free_ports(3)
    tunnel = start_tunnel(procs, tmp_path, "stunnel", tunnel_config(tmp_path, "stunnel", accept, tls_redis["port"], tls_redis["ca"]), accept)
    plain = redis.Redis(port=accept, socket_timeout=10)
    assert plain.ping(), "a plain client reaches the TLS server through the tunnel"

    ns = namespace("tls")
    tls = tls_redis["client"]
    tls.set(f"{{{ns}}}:keygroup", keygroup_document(ec_key))
    worker_id = "w-tls"
    worker = start_worker(procs, cfsign_bin, f"redis://127.0.0.1:{accept}", ns, worker_id)
    wait_registered(procs, worker, worker_id, ns, lambda key, member: tls.sismember(key, member))
    ids = [f"tls-{i}" for i in range(200)]
    push(tls, ns, ids)  # the producer speaks TLS itself
    replies = collect_ids(tls, f"{{{ns}}}:reply:t", set(ids), 30)
    assert {r["id"] for r in replies} == set(ids)
    assert all(r["ok"] for r in replies)
    clients = tls.client_list()
    assert len(clients) >= 4, "the worker's connections arrive over TLS (from stunnel)"

    # The checks are real: another host name, or another CA, and stunnel refuses the server.
    _, other_ca = make_ca(tmp_path, "other-ca")
    for label, port, conf in [
        ("stunnel-wrong-host", wrong_host_accept,
         tunnel_config(tmp_path, "stunnel-wrong-host", wrong_host_accept, tls_redis["port"], tls_redis["ca"], check_host="other.internal")),
        ("stunnel-wrong-ca", wrong_ca_accept, tunnel_config(tmp_path, "stunnel-wrong-ca", wrong_ca_accept, tls_redis["port"], other_ca)),
    ]:
        start_tunnel(procs, tmp_path, label, conf, port)
        assert raw_ping(port) == b"", f"{label}: stunnel must close the connection"
        log = procs.log(label)
        assert re.search(r"(?i)certificate|verif", log), log[-2000:]

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert tunnel.poll() is None
