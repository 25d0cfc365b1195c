"""Keys held in an HSM (PROTOCOL.md, "Keys held outside the worker"; issue 15), against real SoftHSM2.

Each test gets its own SoftHSM token folder (SOFTHSM2_CONF in a temp dir) with one token, into which
the suite's openssl-made test keys are imported as key pairs (softhsm2-util --import of PKCS#8).
The same RSA key in the token and as a file must give byte-identical URLs and cookies, both equal to
botocore's; EC signatures from the token must verify; a group may mix file and HSM keys; rotation
goes file -> HSM -> file without a restart; refusals name the URI part at fault and never the PIN.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from cfsign_support import readyz

from .cfsign_system import CLOUDFRONT_HOST, clean_environment, collect, free_port, job, openssl, push, unique_namespace, wait_until

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "246810"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(MODULE) and shutil.which("softhsm2-util")),
    reason="softhsm2 is not installed (scripts/setup installs it)",
)


@dataclass
class Token:
    conf: Path
    label: str
    pin_file: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}

    def uri(self, obj: str, pin_file: Path | None = None, module: str = MODULE) -> str:
        return f"pkcs11:token={self.label};object={obj}?module-path={module}&pin-source=file:{pin_file or self.pin_file}"


@pytest.fixture
def token(tmp_path, test_keys) -> Token:
    """A fresh SoftHSM token holding the suite's RSA key (object KRSA) and EC key (object KEC)."""
    folder = tmp_path / "softhsm"
    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = clean_environment({"SOFTHSM2_CONF": str(conf)})

    def util(*args):
        subprocess.run(["softhsm2-util", *args], check=True, capture_output=True, env=env, timeout=60)

    util("--init-token", "--free", "--label", "cfsign-test", "--pin", PIN, "--so-pin", "13579")
    for name, key, key_id in (("KRSA", test_keys["rsa"], "01"), ("KEC", test_keys["ec"], "02")):
        p8 = folder / f"test-only-{name}.p8"
        openssl("pkcs8", "-topk8", "-nocrypt", "-in", str(key.path), "-out", str(p8))
        util("--import", str(p8), "--token", "cfsign-test", "--label", name, "--id", key_id, "--pin", PIN)
        p8.unlink()
    pin_file = folder / "pin"
    pin_file.write_text(PIN + "\n")
    os.chmod(pin_file, 0o600)
    return Token(conf, "cfsign-test", pin_file)


def run(cfsign_bin, *args, env=None):
    return subprocess.run([str(cfsign_bin), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=clean_environment(env), timeout=60)


def utc(t: int) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def botocore_url(key, key_id: str, url: str, expires_at: int) -> str:
    signer = CloudFrontSigner(key_id, lambda m: key.private_key().sign(m, padding.PKCS1v15(), hashes.SHA1()))
    return signer.generate_presigned_url(url, date_less_than=utc(expires_at))


def test_keys_public_prints_the_tokens_public_key_to_upload(cfsign_bin, token, test_keys):
    for obj, key in (("KRSA", test_keys["rsa"]), ("KEC", test_keys["ec"])):
        done = run(cfsign_bin, "keys", "public", "--uri", token.uri(obj), env=token.env)
        assert done.returncode == 0, f"keys public --uri for {obj} failed: {done.stderr}"
        expected = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        assert done.stdout.strip() == expected.strip(), f"keys public printed another key for {obj}:\n{done.stdout}"


@pytest.mark.parametrize("hash_name", ["SHA1", "SHA256"])
@pytest.mark.parametrize("cookies", [False, True], ids=["url", "cookies"])
def test_the_same_rsa_key_in_the_token_and_in_a_file_signs_byte_identically(cfsign_bin, token, test_keys, hash_name, cookies):
    rsa = test_keys["rsa"]
    expires = int(time.time()) + 3600
    common = ["sign", f"{CLOUDFRONT_HOST}/private/a%20b.pdf?x=1", "--key-id", rsa.key_id, "--expires-at", str(expires), "--hash", hash_name]
    if cookies:
        common += ["--cookies", "--resource", f"{CLOUDFRONT_HOST}/private/*"]
    from_file = run(cfsign_bin, *common, "--private-key", str(rsa.path))
    from_hsm = run(cfsign_bin, *common, "--private-key-uri", token.uri("KRSA"), env=token.env)
    assert from_file.returncode == 0, from_file.stderr
    assert from_hsm.returncode == 0, f"signing with the HSM key failed: {from_hsm.stderr}"
    assert from_hsm.stdout == from_file.stdout, f"HSM and file signatures differ ({hash_name}):\n{from_hsm.stdout}\n{from_file.stdout}"
    if not cookies and hash_name == "SHA1":
        url = f"{CLOUDFRONT_HOST}/private/a%20b.pdf?x=1"
        ours = run(cfsign_bin, "sign", url, "--key-id", rsa.key_id, "--expires-at", str(expires), "--private-key-uri", token.uri("KRSA"), env=token.env)
        assert ours.stdout.strip() == botocore_url(rsa, rsa.key_id, url, expires), "HSM-signed URL differs from botocore's"


def test_a_worker_signs_with_a_group_mixing_an_hsm_key_and_a_file_key(redis_server, workers, token, test_keys):
    rsa, ec_key = test_keys["rsa"], test_keys["ec"]
    ns = unique_namespace("hsm-mixed")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": rsa.key_id, "keys": [
        {"id": rsa.key_id, "private_key_uri": token.uri("KRSA")},
        {"id": ec_key.key_id, "private_key_file": str(ec_key.path)},
    ]}))
    workers.start(redis_server, ns, env=token.env)
    expires = int(time.time()) + 3600
    jobs = [job(ns, f"r{i}", reply="m", url=f"{CLOUDFRONT_HOST}/p/{i}.pdf", expires_at=expires) for i in range(50)]
    jobs += [job(ns, f"e{i}", reply="m", url=f"{CLOUDFRONT_HOST}/p/{i}.pdf", expires_at=expires, key_id=ec_key.key_id) for i in range(50)]
    push(r, ns, jobs)
    replies = {x["id"]: x for x in collect(r, f"{{{ns}}}:reply:m", len(jobs), 30)}
    assert all(x["ok"] for x in replies.values()), [x for x in replies.values() if not x["ok"]][:3]
    for i in range(50):
        assert replies[f"r{i}"]["url"] == botocore_url(rsa, rsa.key_id, f"{CLOUDFRONT_HOST}/p/{i}.pdf", expires), \
            f"worker's HSM-signed URL r{i} differs from botocore's"
        assert replies[f"e{i}"]["key_id"] == ec_key.key_id


def test_ec_signatures_from_the_token_verify_in_a_worker(redis_server, workers, token, test_keys):
    ec_key = test_keys["ec"]
    ns = unique_namespace("hsm-ec")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": ec_key.key_id, "keys": [
        {"id": ec_key.key_id, "private_key_uri": token.uri("KEC")}]}))
    workers.start(redis_server, ns, env=token.env, concurrency=4)
    expires = int(time.time()) + 3600
    jobs = [job(ns, f"j{i}", reply="ec", url=f"{CLOUDFRONT_HOST}/e/{i}", expires_at=expires, hash="SHA256" if i % 2 else "SHA1") for i in range(40)]
    push(r, ns, jobs)
    replies = collect(r, f"{{{ns}}}:reply:ec", len(jobs), 30)
    assert all(x["ok"] for x in replies), [x for x in replies if not x["ok"]][:3]
    public = ec_key.public_key()
    for x in replies:
        params = dict(p.split("=", 1) for p in x["url"].split("?", 1)[1].split("&"))
        sig = cloudfront_b64decode(params["Signature"])
        i = int(x["id"][1:])
        policy = ('{"Statement":[{"Resource":"%s/e/%d","Condition":{"DateLessThan":{"AWS:EpochTime":%d}}}]}' % (CLOUDFRONT_HOST, i, expires)).encode()
        digest = hashes.SHA256() if i % 2 else hashes.SHA1()
        public.verify(sig, policy, ec.ECDSA(digest))  # raises if the token's signature is wrong


def cloudfront_b64decode(text: str) -> bytes:
    import base64
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"))


def heartbeat(r, ns, wid):
    raw = r.get(f"{{{ns}}}:worker:{wid}")
    return json.loads(raw) if raw else {}


def test_rotation_file_to_hsm_to_file_under_load_without_restart(redis_server, workers, token, test_keys):
    import threading
    rsa, ec_key = test_keys["rsa"], test_keys["ec"]
    ns = unique_namespace("hsm-rotate")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": ec_key.key_id, "keys": [
        {"id": ec_key.key_id, "private_key_file": str(ec_key.path)}]}))
    ws = [workers.start(redis_server, ns, env=token.env) for _ in range(2)]
    steps = [
        (2, "KHSMRSA0000001", {"id": "KHSMRSA0000001", "private_key_uri": token.uri("KRSA")}),
        (3, rsa.key_id, {"id": rsa.key_id, "private_key_file": str(rsa.path)}),
        (4, "KHSMRSA0000002", {"id": "KHSMRSA0000002", "private_key_uri": token.uri("KRSA")}),
        (5, ec_key.key_id, {"id": ec_key.key_id, "private_key_file": str(ec_key.path)}),
    ]
    expires = int(time.time()) + 3600
    stop = threading.Event()
    pushed = []

    def produce():
        i = 0
        while not stop.is_set() and i < 5000:
            batch = [job(ns, f"load-{i + k}", reply="load", expires_at=expires) for k in range(10)]
            push(r, ns, batch)
            pushed.extend(j["id"] for j in batch)
            i += 10
            time.sleep(0.02)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for version, key_id, entry in steps:
            time.sleep(0.5)
            r.set(f"{{{ns}}}:keygroup", json.dumps({"version": version, "active": key_id, "keys": [entry]}))
            r.publish(f"{{{ns}}}:keygroup:changed", str(version))
            for w in ws:
                wait_until(lambda: heartbeat(r, ns, w.worker_id).get("keygroup_version") == version, 10,
                           what=f"worker {w.worker_id} on version {version}")
            url = f"{CLOUDFRONT_HOST}/rot/{version}.pdf"
            push(r, ns, [job(ns, f"v{version}", reply="rot", url=url, expires_at=expires)])
            [reply] = collect(r, f"{{{ns}}}:reply:rot", 1, 20)
            assert reply["ok"] and reply["key_id"] == key_id, f"version {version}: {reply}"
            if key_id != ec_key.key_id:
                assert reply["url"] == botocore_url(rsa, key_id, url, expires), f"version {version} signed with another key"
    finally:
        stop.set()
        producer.join()
    load = collect(r, f"{{{ns}}}:reply:load", len(pushed), 60)
    assert all(x["ok"] for x in load), f"jobs failed during rotation: {[x for x in load if not x['ok']][:3]}"
    assert sorted(x["id"] for x in load) == sorted(pushed), "a job pushed during rotation was lost"
    assert all(w.alive() for w in ws), "a worker exited during rotation"


def test_keygroup_set_check_files_loads_an_hsm_key_and_refuses_a_wrong_pin(cfsign_bin, redis_server, token, tmp_path):
    ns = unique_namespace("hsm-set")
    group = tmp_path / "group.json"
    group.write_text(json.dumps({"active": "KHSM", "keys": [{"id": "KHSM", "private_key_uri": token.uri("KRSA")}]}))
    done = run(cfsign_bin, "keygroup", "set", str(group), "--check-files", "--redis", redis_server.url, "--namespace", ns, env=token.env)
    assert done.returncode == 0, f"keygroup set --check-files refused a good HSM key: {done.stderr}"
    stored = json.loads(redis_server.client().get(f"{{{ns}}}:keygroup"))
    assert stored["keys"][0]["private_key_uri"] == token.uri("KRSA")
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("8642\n")
    os.chmod(wrong, 0o600)
    group.write_text(json.dumps({"active": "KHSM", "keys": [{"id": "KHSM", "private_key_uri": token.uri("KRSA", pin_file=wrong)}]}))
    done = run(cfsign_bin, "keygroup", "set", str(group), "--check-files", "--redis", redis_server.url, "--namespace", ns, env=token.env)
    assert done.returncode != 0 and f"pin-source {wrong}" in done.stderr and "8642" not in done.stderr, done.stderr
    assert json.loads(redis_server.client().get(f"{{{ns}}}:keygroup"))["version"] == stored["version"], "a refused group was written"


def refusal_of(cfsign_bin, token, uri):
    done = run(cfsign_bin, "keys", "public", "--uri", uri, env=token.env)
    assert done.returncode != 0, f"keys public accepted {uri}"
    return done.stderr


def test_a_module_that_cannot_be_loaded_is_refused_naming_module_path(cfsign_bin, token):
    err = refusal_of(cfsign_bin, token, token.uri("KRSA", module="/nonexistent/libpkcs11.so"))
    assert "module-path /nonexistent/libpkcs11.so" in err, err


def test_a_wrong_pin_is_refused_naming_pin_source_and_never_the_pin(cfsign_bin, token, tmp_path):
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("97531\n")
    os.chmod(wrong, 0o600)
    err = refusal_of(cfsign_bin, token, token.uri("KRSA", pin_file=wrong))
    assert f"pin-source {wrong}" in err and "CKR_PIN_INCORRECT" in err, err
    assert "97531" not in err and PIN not in err, f"the refusal shows a PIN: {err}"


def test_a_missing_object_is_refused_naming_object(cfsign_bin, token):
    err = refusal_of(cfsign_bin, token, token.uri("KNOTTHERE"))
    assert "object=KNOTTHERE" in err, err


def test_a_key_of_the_wrong_type_is_refused_naming_object(cfsign_bin, token, tmp_path):
    small = tmp_path / "test-only-rsa1024.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", str(small))
    p8 = tmp_path / "test-only-rsa1024.p8"
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", str(small), "-out", str(p8))
    subprocess.run(["softhsm2-util", "--import", str(p8), "--token", token.label, "--label", "KSMALL", "--id", "09", "--pin", PIN],
                   check=True, capture_output=True, env=clean_environment(token.env), timeout=60)
    err = refusal_of(cfsign_bin, token, token.uri("KSMALL"))
    assert "object=KSMALL" in err and "RSA-1024" in err, err


def test_a_worker_refuses_a_group_with_a_wrong_pin_whole_and_keeps_the_old_one(redis_server, workers, token, test_keys, tmp_path):
    ec_key = test_keys["ec"]
    ns = unique_namespace("hsm-refuse")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": ec_key.key_id, "keys": [
        {"id": ec_key.key_id, "private_key_file": str(ec_key.path)}]}))
    w = workers.start(redis_server, ns, env=token.env)
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("1111\n")
    os.chmod(wrong, 0o600)
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 2, "active": "KHSM", "keys": [
        {"id": "KHSM", "private_key_uri": token.uri("KRSA", pin_file=wrong)}]}))
    r.publish(f"{{{ns}}}:keygroup:changed", "2")
    hb = wait_until(lambda: (heartbeat(r, ns, w.worker_id).get("keygroup_refusal") or None), 10, what="refusal in heartbeat")
    assert f"pin-source {wrong}" in hb["reason"] and "1111" not in hb["reason"], hb
    assert heartbeat(r, ns, w.worker_id)["keygroup_version"] == 1


def test_a_worker_refuses_a_module_outside_pkcs11_modules_and_loads_one_inside(redis_server, workers, token, test_keys):
    ec_key = test_keys["ec"]
    ns = unique_namespace("hsm-modules")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": ec_key.key_id, "keys": [
        {"id": ec_key.key_id, "private_key_file": str(ec_key.path)}]}))
    w = workers.start(redis_server, ns, env={**token.env, "CFSIGN_PKCS11_MODULES": "/usr/lib/x86_64-linux-gnu/libnot-this-one.so"})
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 2, "active": "KHSM", "keys": [{"id": "KHSM", "private_key_uri": token.uri("KEC")}]}))
    r.publish(f"{{{ns}}}:keygroup:changed", "2")
    hb = wait_until(lambda: (heartbeat(r, ns, w.worker_id).get("keygroup_refusal") or None), 10, what="refusal in heartbeat")
    assert f"module-path {MODULE}" in hb["reason"] and "pkcs11_modules" in hb["reason"], hb
    assert heartbeat(r, ns, w.worker_id)["keygroup_version"] == 1

    allowed = workers.start(redis_server, ns, env={**token.env, "CFSIGN_PKCS11_MODULES": MODULE})
    wait_until(lambda: heartbeat(r, ns, allowed.worker_id).get("keygroup_version") == 2, 10, what="the allowed module's group in use")
    assert "pkcs11_modules is not set" not in allowed.log()


def test_a_worker_without_pkcs11_modules_warns_when_it_loads_a_module(redis_server, workers, token, test_keys):
    ns = unique_namespace("hsm-any-module")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": "KHSM", "keys": [{"id": "KHSM", "private_key_uri": token.uri("KEC")}]}))
    w = workers.start(redis_server, ns, env=token.env)
    wait_until(lambda: "pkcs11_modules is not set" in w.log(), 10, what="the warning")


def token_folder(token: Token) -> Path:
    """The one token's own folder inside the token dir (SoftHSM names it by a UUID)."""
    [folder] = [p for p in (token.conf.parent / "tokens").iterdir() if p.is_dir()]
    return folder


def test_a_token_that_disappears_mid_drain_loses_no_job(redis_server, workers, token, test_keys):
    """SoftHSM does not bring a removed token back within a process, so the jobs held while it is gone
    are rescued the way an operator would: by a rotation to a key that works (here a file)."""
    rsa, ec_key = test_keys["rsa"], test_keys["ec"]
    ns = unique_namespace("hsm-gone")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": rsa.key_id, "keys": [
        {"id": rsa.key_id, "private_key_uri": token.uri("KRSA")}]}))
    port = free_port()
    w = workers.start(redis_server, ns, env={**token.env, "CFSIGN_KEY_UNAVAILABLE_AFTER": "60"},
                      args=["--http-address", f"127.0.0.1:{port}"])
    expires = int(time.time()) + 3600
    push(r, ns, [job(ns, "before", reply="gone", expires_at=expires)])
    [first] = collect(r, f"{{{ns}}}:reply:gone", 1, 20)
    assert first["ok"], first
    assert readyz(port)[0] == 200
    token_folder(token).rename(token.conf.parent / "token-away")
    jobs = [job(ns, f"g{i}", reply="gone", expires_at=expires) for i in range(20)]
    push(r, ns, jobs)
    reason = wait_until(lambda: heartbeat(r, ns, w.worker_id).get("key_unavailable"), 15, what="key_unavailable in the heartbeat")
    assert "cfsign-test" in reason and PIN not in reason, reason
    status, text = readyz(port)
    assert status == 503 and "key unavailable" in text, f"/readyz while the token is gone: {status} {text}"
    time.sleep(1)
    assert r.llen(f"{{{ns}}}:reply:gone") == 0, "a job was answered while the token was gone"
    assert r.llen(w.inflight_key) == 20, "the unsigned jobs are not all in the worker's in-flight list"
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 2, "active": ec_key.key_id, "keys": [
        {"id": ec_key.key_id, "private_key_file": str(ec_key.path)}]}))
    r.publish(f"{{{ns}}}:keygroup:changed", "2")
    replies = collect(r, f"{{{ns}}}:reply:gone", 20, 30)
    assert all(x["ok"] and x["key_id"] == ec_key.key_id for x in replies), f"held jobs not signed after the rotation: {replies[:3]}"
    assert sorted(x["id"] for x in replies) == sorted(j["id"] for j in jobs)
    wait_until(lambda: heartbeat(r, ns, w.worker_id).get("key_unavailable") is None, 10, what="key_unavailable cleared")
    wait_until(lambda: readyz(port)[0] == 200, 10, what="/readyz ready again")


def test_jobs_are_answered_key_unavailable_after_key_unavailable_after(redis_server, workers, token, test_keys):
    rsa = test_keys["rsa"]
    ns = unique_namespace("hsm-timeout")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": rsa.key_id, "keys": [
        {"id": rsa.key_id, "private_key_uri": token.uri("KRSA")}]}))
    workers.start(redis_server, ns, env={**token.env, "CFSIGN_KEY_UNAVAILABLE_AFTER": "1.5"})
    folder = token_folder(token)
    folder.rename(folder.parent.parent / "token-away")
    start = time.monotonic()
    push(r, ns, [job(ns, f"t{i}", reply="late") for i in range(5)])
    replies = collect(r, f"{{{ns}}}:reply:late", 5, 30)
    took = time.monotonic() - start
    assert all(not x["ok"] and x["error"]["code"] == "key_unavailable" for x in replies), replies[:2]
    assert took >= 1.4, f"answered key_unavailable after {took:.1f} s, before key_unavailable_after (1.5 s)"
