"""Keys held by AWS KMS (PROTOCOL.md, "Keys held outside the worker"; issue 16), against real moto_server.

One moto_server per module on a free 127.0.0.1 port holds an RSA_2048 and an ECC_NIST_P256 KMS key
(made with botocore). The worker signs URL and cookie jobs with them; each link is checked with the
key's public key (from KMS) and with `cfsign verify`. SigV4 and the DIGEST framing are held against
botocore's own request (moto 5.2.5 ignores MessageType, so it cannot judge DIGEST). Tests that stop
moto (SIGSTOP keeps its in-memory keys; a restarted moto has lost them) get their own moto_server.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from cfsign_support import readyz

from .cfsign_system import CLOUDFRONT_HOST, clean_environment, collect, free_port, job, push, unique_namespace, wait_until

pytestmark = pytest.mark.skipif(shutil.which("moto_server") is None, reason="moto_server is not installed (scripts/setup)")

REGION = "us-east-1"


@dataclass
class Moto:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str, key_id: str = "testing", secret: str = "testing"):
        import boto3
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    def env(self, tmp_path: Path, **extra: str) -> dict[str, str]:
        """Environment for cfsign: moto's endpoint, static test credentials, no shared files."""
        env = {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}
        env.update(extra)
        return env


def start_moto(folder: Path, extra_env: dict[str, str] | None = None) -> Moto:
    import urllib.request
    port = free_port()
    log = folder / f"moto-{port}.log"
    handle = open(log, "wb")
    env = clean_environment({k: v for k, v in (extra_env or {}).items()})
    # `exec` form: the pid is moto_server's own, so SIGSTOP/SIGCONT reach it.
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=handle, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not answer within 30 s")
            time.sleep(0.2)
    return Moto(proc, port, log)


def stop_moto(m: Moto) -> None:
    if m.proc.poll() is None:
        m.proc.send_signal(signal.SIGCONT)
        m.proc.kill()
    m.proc.wait(timeout=10)


@dataclass
class KMSKeyInfo:
    arn: str
    spec: str
    public_pem: bytes

    @property
    def uri(self) -> str:
        return f"awskms:{self.arn}"

    def public_key(self):
        return serialization.load_pem_public_key(self.public_pem)


def create_key(m: Moto, spec: str) -> KMSKeyInfo:
    kms = m.client("kms")
    arn = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    der = kms.get_public_key(KeyId=arn)["PublicKey"]
    pem = serialization.load_der_public_key(der).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return KMSKeyInfo(arn, spec, pem)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = start_moto(tmp_path_factory.mktemp("moto"))
    yield m
    stop_moto(m)


@pytest.fixture
def own_moto(tmp_path):
    """A moto of this test's own, for tests that pause, stop or reconfigure it (the module's
    `moto` is shared); stopped after the test whatever happens."""
    m = start_moto(tmp_path)
    yield m
    stop_moto(m)


@pytest.fixture(scope="module")
def kms_keys(moto) -> dict[str, KMSKeyInfo]:
    return {"rsa": create_key(moto, "RSA_2048"), "ec": create_key(moto, "ECC_NIST_P256")}


def run(cfsign_bin, *args, env=None, timeout=60):
    return subprocess.run([str(cfsign_bin), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=clean_environment(env), timeout=timeout)


def unb64(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"))


def canned_policy(url: str, expires: int) -> bytes:
    return ('{"Statement":[{"Resource":"%s","Condition":{"DateLessThan":{"AWS:EpochTime":%d}}}]}' % (url, expires)).encode()


def verify_with(key: KMSKeyInfo, signature: bytes, policy: bytes) -> None:
    """Raises unless `signature` is the KMS key's SHA-256 signature of `policy`."""
    public = key.public_key()
    if key.spec == "RSA_2048":
        public.verify(signature, policy, padding.PKCS1v15(), hashes.SHA256())
    else:
        public.verify(signature, policy, ec.ECDSA(hashes.SHA256()))


def group(ns_key_entries, active):
    return json.dumps({"version": 1, "active": active, "keys": ns_key_entries})


def heartbeat(r, ns, wid):
    raw = r.get(f"{{{ns}}}:worker:{wid}")
    return json.loads(raw) if raw else {}


# --- SigV4 and framing, against botocore ---------------------------------------------------------

def frozen_clock(at: int):
    """botocore's signing clock stopped at `at` (seconds since 1970)."""
    import botocore.auth
    fixed = datetime.datetime.fromtimestamp(at, tz=datetime.timezone.utc).replace(tzinfo=None)

    class Frozen(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return fixed

        @classmethod
        def now(cls, tz=None):
            return fixed.replace(tzinfo=tz) if tz else fixed

    return mock.patch.object(botocore.auth.datetime, "datetime", Frozen)


SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def botocore_sign_request(m: Moto, key_id: str, message: bytes, algorithm: str, at: int, session_token: str | None):
    """The Sign request botocore itself would send at instant `at` (captured, never sent)."""
    import boto3
    import hashlib
    captured = {}

    def capture(request, **_):
        captured["request"] = request
        raise RuntimeError("captured")

    client = boto3.client("kms", endpoint_url=m.url, region_name=REGION, aws_access_key_id="AKIDEXAMPLE",
                          aws_secret_access_key=SECRET, aws_session_token=session_token)
    client.meta.events.register("before-send.kms.Sign", capture)
    message_type = "RAW" if len(message) <= 4096 else "DIGEST"
    payload = message if message_type == "RAW" else hashlib.sha256(message).digest()
    with frozen_clock(at), pytest.raises(RuntimeError, match="captured"):
        client.sign(KeyId=key_id, Message=payload, MessageType=message_type, SigningAlgorithm=algorithm)
    return captured["request"]


@pytest.mark.parametrize("size", [100, 4096, 4097, 20000], ids=["raw-small", "raw-limit", "digest-above", "digest-large"])
@pytest.mark.parametrize("session_token", [None, "FQoGZXIvYXdzE+temporary/token=="], ids=["keys", "session"])
def test_sign_requests_match_botocores_framing_and_sigv4_authorization(cfsign_bin, moto, tmp_path, size, session_token):
    """The body holds what botocore serializes (RAW up to 4,096 bytes, the SHA-256 DIGEST above), and
    botocore's SigV4Auth over cfsign's exact request gives cfsign's Authorization header."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    key_id = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    message = (b'{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/' + b"x" * size)[:size]
    message_file = tmp_path / "message"
    message_file.write_bytes(message)
    at = 1_796_171_405
    env = moto.env(tmp_path, AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY=SECRET)
    if session_token:
        env["AWS_SESSION_TOKEN"] = session_token
    done = run(cfsign_bin, "kms-request", "--key-id", key_id, "--message-file", str(message_file), "--at", str(at), env=env)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr, "the request printout shows the secret key"
    if session_token:
        assert session_token not in done.stdout + done.stderr, "the request printout shows the session token"
    ours = json.loads(done.stdout)
    theirs = botocore_sign_request(moto, key_id, message, "RSASSA_PKCS1_V1_5_SHA_256", at, session_token)
    assert json.loads(ours["body"]) == json.loads(theirs.body), f"Sign body differs from botocore's:\n{ours['body'][:300]}\n{theirs.body[:300]!r}"
    assert json.loads(ours["body"])["MessageType"] == ("RAW" if size <= 4096 else "DIGEST")
    def header(name):
        value = theirs.headers.get(name)
        return value.decode() if isinstance(value, bytes) else value
    for name in ("X-Amz-Target", "Content-Type", "X-Amz-Date"):
        assert ours["headers"].get(name) == header(name), name
    # The token is shown redacted; the Authorization match below proves the same token was signed.
    assert ours["headers"].get("X-Amz-Security-Token") == ("(redacted)" if session_token else None)
    request = AWSRequest(method="POST", url=ours["url"], data=ours["body"].encode(),
                         headers={k: v for k, v in ours["headers"].items() if k not in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")})
    with frozen_clock(at):
        SigV4Auth(Credentials("AKIDEXAMPLE", SECRET, session_token), "kms", REGION).add_auth(request)
    assert ours["headers"]["Authorization"] == request.headers["Authorization"]


# --- keys public, sign, verify -------------------------------------------------------------------

def test_keys_public_prints_the_kms_public_key(cfsign_bin, moto, kms_keys, tmp_path):
    for key in kms_keys.values():
        done = run(cfsign_bin, "keys", "public", "--uri", key.uri, env=moto.env(tmp_path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == key.public_pem.decode().strip()
        assert "AWS KMS" in done.stderr


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_cfsign_sign_with_a_kms_key_signs_sha256_and_verifies(cfsign_bin, moto, kms_keys, tmp_path, kind):
    key = kms_keys[kind]
    pub = tmp_path / "kms.pub.pem"
    pub.write_bytes(key.public_pem)
    url = f"{CLOUDFRONT_HOST}/kms/report.pdf"
    done = run(cfsign_bin, "sign", url, "--key-id", "KKMSTEST000001", "--private-key-uri", key.uri, "--expires-in", "1h", env=moto.env(tmp_path))
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert "Hash-Algorithm=SHA256" in link, f"a job naming no hash is signed SHA256 with a KMS key: {link}"
    checked = run(cfsign_bin, "verify", link, "--public-key", str(pub))
    assert checked.returncode == 0, checked.stderr
    sha1 = run(cfsign_bin, "sign", url, "--key-id", "KKMSTEST000001", "--private-key-uri", key.uri, "--hash", "SHA1", "--expires-in", "1h", env=moto.env(tmp_path))
    assert sha1.returncode != 0 and "KMS keys sign SHA-256 only" in sha1.stderr, sha1.stderr


def test_a_worker_signs_url_and_cookie_jobs_with_kms_keys(redis_server, workers, moto, kms_keys, tmp_path, cfsign_bin):
    rsa, eck = kms_keys["rsa"], kms_keys["ec"]
    ns = unique_namespace("kms-sign")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", group([
        {"id": "KKMSRSA0000001", "private_key_uri": rsa.uri, "public_key_pem": rsa.public_pem.decode()},
        {"id": "KKMSEC00000001", "private_key_uri": eck.uri},
    ], "KKMSRSA0000001"))
    workers.start(redis_server, ns, env=moto.env(tmp_path))
    expires = int(time.time()) + 3600
    jobs = []
    for i in range(30):
        key_id = "KKMSRSA0000001" if i % 2 else "KKMSEC00000001"
        fields = {"url": f"{CLOUDFRONT_HOST}/k/{i}.pdf", "expires_at": expires, "key_id": key_id}
        if i % 3 == 0:
            fields.update(output="cookies")
        if i % 5 == 0:
            fields.update(hash="SHA256")
        jobs.append(job(ns, f"j{i}", reply="kms", **fields))
    push(r, ns, jobs)
    replies = {x["id"]: x for x in collect(r, f"{{{ns}}}:reply:kms", len(jobs), 60)}
    assert all(x["ok"] for x in replies.values()), [x for x in replies.values() if not x["ok"]][:3]
    pubs = {}
    for name, key in (("KKMSRSA0000001", rsa), ("KKMSEC00000001", eck)):
        pubs[name] = tmp_path / f"{name}.pem"
        pubs[name].write_bytes(key.public_pem)
    for i in range(30):
        x = replies[f"j{i}"]
        key = rsa if i % 2 else eck
        url = f"{CLOUDFRONT_HOST}/k/{i}.pdf"
        if "cookies" in x:
            c = x["cookies"]
            assert c["CloudFront-Hash-Algorithm"] == "SHA256"
            verify_with(key, unb64(c["CloudFront-Signature"]), canned_policy(url, expires))
            args = [a for name, value in c.items() for a in ("--cookie", f"{name}={value}")]
            checked = run(cfsign_bin, "verify", url, *args, "--public-key", str(pubs[x["key_id"]]))
        else:
            params = dict(p.split("=", 1) for p in x["url"].split("?", 1)[1].split("&"))
            assert params["Hash-Algorithm"] == "SHA256"
            verify_with(key, unb64(params["Signature"]), canned_policy(url, expires))
            checked = run(cfsign_bin, "verify", x["url"], "--public-key", str(pubs[x["key_id"]]))
        assert checked.returncode == 0, f"cfsign verify refused j{i}: {checked.stderr}"


def test_a_sha1_job_with_a_kms_key_is_unsupported_hash(redis_server, workers, moto, kms_keys, tmp_path):
    ns = unique_namespace("kms-sha1")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", group([{"id": "KKMSRSA0000001", "private_key_uri": kms_keys["rsa"].uri}], "KKMSRSA0000001"))
    workers.start(redis_server, ns, env=moto.env(tmp_path))
    push(r, ns, [job(ns, "s1", reply="h", hash="SHA1"), job(ns, "s2", reply="h")])
    replies = {x["id"]: x for x in collect(r, f"{{{ns}}}:reply:h", 2, 30)}
    assert not replies["s1"]["ok"] and replies["s1"]["error"]["code"] == "unsupported_hash"
    assert "KMS keys sign SHA-256 only; send hash SHA256" in replies["s1"]["error"]["message"]
    assert replies["s2"]["ok"] and "Hash-Algorithm=SHA256" in replies["s2"]["url"]


def test_a_group_mixing_a_file_key_and_a_kms_key(redis_server, workers, moto, kms_keys, test_keys, tmp_path):
    rsa_file, kms = test_keys["rsa"], kms_keys["ec"]
    ns = unique_namespace("kms-mixed")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", group([
        {"id": rsa_file.key_id, "private_key_file": str(rsa_file.path)},
        {"id": "KKMSEC00000001", "private_key_uri": kms.uri},
    ], rsa_file.key_id))
    workers.start(redis_server, ns, env=moto.env(tmp_path))
    expires = int(time.time()) + 3600
    jobs = [job(ns, f"f{i}", reply="mix", url=f"{CLOUDFRONT_HOST}/m/{i}", expires_at=expires) for i in range(40)]
    jobs += [job(ns, f"k{i}", reply="mix", url=f"{CLOUDFRONT_HOST}/m/{i}", expires_at=expires, key_id="KKMSEC00000001") for i in range(40)]
    push(r, ns, jobs)
    replies = {x["id"]: x for x in collect(r, f"{{{ns}}}:reply:mix", len(jobs), 60)}
    assert all(x["ok"] for x in replies.values()), [x for x in replies.values() if not x["ok"]][:3]
    for i in range(40):
        f = replies[f"f{i}"]
        assert f["key_id"] == rsa_file.key_id and "Hash-Algorithm" not in f["url"], "the file key keeps the SHA1 default"
        params = dict(p.split("=", 1) for p in replies[f"k{i}"]["url"].split("?", 1)[1].split("&"))
        verify_with(kms, unb64(params["Signature"]), canned_policy(f"{CLOUDFRONT_HOST}/m/{i}", expires))


def test_repeated_policies_are_signed_once_by_kms(redis_server, workers, moto, kms_keys, tmp_path):
    """The signature cache holds KMS signatures too: the same link asked 20 times is one Sign call."""
    ns = unique_namespace("kms-cache")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", group([{"id": "KKMSRSA0000001", "private_key_uri": kms_keys["rsa"].uri}], "KKMSRSA0000001"))
    w = workers.start(redis_server, ns, env=moto.env(tmp_path))
    expires = int(time.time()) + 3600
    push(r, ns, [job(ns, "first", reply="c", expires_at=expires, url=f"{CLOUDFRONT_HOST}/same.pdf")])
    [first] = collect(r, f"{{{ns}}}:reply:c", 1, 30)
    push(r, ns, [job(ns, f"c{i}", reply="c", expires_at=expires, url=f"{CLOUDFRONT_HOST}/same.pdf") for i in range(20)])
    replies = collect(r, f"{{{ns}}}:reply:c", 20, 30)
    assert all(x["ok"] and x["url"] == first["url"] for x in replies)
    wait_until(lambda: (heartbeat(r, ns, w.worker_id).get("cache_hits") or 0) >= 20 or None, 10, what="20 cache hits in the heartbeat")


# --- credentials ---------------------------------------------------------------------------------

def test_credentials_from_a_profile_file(cfsign_bin, moto, kms_keys, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[cfsign]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profilesecret\n")
    config = tmp_path / "config"
    config.write_text("[profile cfsign]\nregion = us-east-1\n")
    env = {"AWS_ENDPOINT_URL": moto.url, "AWS_PROFILE": "cfsign", "AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(config)}
    done = run(cfsign_bin, "keys", "public", "--uri", kms_keys["rsa"].uri, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == kms_keys["rsa"].public_pem.decode().strip()
    missing = run(cfsign_bin, "keys", "public", "--uri", kms_keys["rsa"].uri, env={**env, "AWS_PROFILE": "nothere"})
    assert missing.returncode != 0 and "nothere" in missing.stderr and "profilesecret" not in missing.stderr, missing.stderr


def test_credentials_through_web_identity_and_sts(redis_server, workers, moto, kms_keys, tmp_path):
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjZnNpZ24ifQ.c2ln\n")
    env = {"AWS_ENDPOINT_URL": moto.url, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
           "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/cfsign-worker", "AWS_ROLE_SESSION_NAME": "cfsign-test",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    ns = unique_namespace("kms-webid")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", group([{"id": "KKMSEC00000001", "private_key_uri": kms_keys["ec"].uri}], "KKMSEC00000001"))
    w = workers.start(redis_server, ns, env=env)
    push(r, ns, [job(ns, f"w{i}", reply="wi") for i in range(5)])
    replies = collect(r, f"{{{ns}}}:reply:wi", 5, 30)
    assert all(x["ok"] for x in replies), replies[:2]
    assert "eyJhbGci" not in w.log() and "SecretAccessKey" not in w.log()


def test_a_missing_web_identity_token_file_refuses_the_group_naming_it(cfsign_bin, moto, kms_keys, tmp_path):
    env = {"AWS_ENDPOINT_URL": moto.url, "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "no-token"),
           "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/cfsign-worker",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    done = run(cfsign_bin, "keys", "public", "--uri", kms_keys["ec"].uri, env=env)
    assert done.returncode != 0 and "web identity token file" in done.stderr and str(tmp_path / "no-token") in done.stderr, done.stderr


def test_no_credentials_at_all_says_what_is_not_supported(cfsign_bin, moto, kms_keys, tmp_path):
    env = {"AWS_ENDPOINT_URL": moto.url, "HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    done = run(cfsign_bin, "keys", "public", "--uri", kms_keys["ec"].uri, env=env)
    assert done.returncode != 0 and "no AWS credentials found" in done.stderr and "instance metadata" in done.stderr, done.stderr


# --- refusals ------------------------------------------------------------------------------------

def test_a_wrong_arn_refuses_the_group_with_the_aws_code(redis_server, workers, moto, kms_keys, tmp_path):
    ns = unique_namespace("kms-wrong")
    r = redis_server.client()
    good = {"id": "KKMSEC00000001", "private_key_uri": kms_keys["ec"].uri}
    r.set(f"{{{ns}}}:keygroup", group([good], "KKMSEC00000001"))
    w = workers.start(redis_server, ns, env=moto.env(tmp_path))
    wrong = f"awskms:arn:aws:kms:{REGION}:123456789012:key/00000000-0000-0000-0000-000000000000"
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 2, "active": "KKMSEC00000001", "keys": [good, {"id": "KWRONG", "private_key_uri": wrong}]}))
    r.publish(f"{{{ns}}}:keygroup:changed", "2")
    hb = wait_until(lambda: heartbeat(r, ns, w.worker_id).get("keygroup_refusal"), 15, what="refusal in heartbeat")
    assert "NotFoundException" in hb["reason"] and "KWRONG" in hb["reason"], hb
    assert heartbeat(r, ns, w.worker_id)["keygroup_version"] == 1, "the whole group must be refused"


def test_a_public_key_pem_that_is_not_the_kms_keys_refuses_the_group(cfsign_bin, redis_server, moto, kms_keys, tmp_path):
    ns = unique_namespace("kms-pem")
    doc = tmp_path / "group.json"
    doc.write_text(json.dumps({"active": "KK", "keys": [{"id": "KK", "private_key_uri": kms_keys["ec"].uri, "public_key_pem": kms_keys["rsa"].public_pem.decode()}]}))
    done = run(cfsign_bin, "keygroup", "set", str(doc), "--check-files", "--redis", redis_server.url, "--namespace", ns, env=moto.env(tmp_path))
    assert done.returncode != 0 and "public_key_pem" in done.stderr, done.stderr


def test_access_denied_refuses_the_group_with_the_aws_code(cfsign_bin, tmp_path):
    """moto with IAM enforcement on (after a few setup calls): a user with no KMS permission gets
    AccessDeniedException from GetPublicKey, and SigV4 is checked by moto itself."""
    m = start_moto(tmp_path, {"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        arn = m.client("kms").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        iam = m.client("iam")
        iam.create_user(UserName="nokms")
        key = iam.create_access_key(UserName="nokms")["AccessKey"]
        iam.create_user(UserName="kmsuser")  # the 4th unauthenticated call; from here on IAM decides
        env = m.env(tmp_path, AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        done = run(cfsign_bin, "keys", "public", "--uri", f"awskms:{arn}", env=env)
        assert done.returncode != 0, done.stdout
        assert "AccessDenied" in done.stderr, done.stderr
        assert key["SecretAccessKey"] not in done.stderr
        bad = run(cfsign_bin, "keys", "public", "--uri", f"awskms:{arn}", env=m.env(tmp_path, AWS_ACCESS_KEY_ID="AKIANOTAKEY0000", AWS_SECRET_ACCESS_KEY="x"))
        assert bad.returncode != 0 and ("InvalidClientTokenId" in bad.stderr or "UnrecognizedClient" in bad.stderr), bad.stderr
    finally:
        stop_moto(m)


def test_a_plain_http_endpoint_that_is_not_loopback_is_refused_naming_the_variable(cfsign_bin, kms_keys, tmp_path):
    """Nothing is sent: the override is refused before any call (so no non-loopback address is used)."""
    for variable in ("AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"):
        env = {variable: "http://kms.example.com:4566", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        done = run(cfsign_bin, "keys", "public", "--uri", kms_keys["ec"].uri, env=env)
        assert done.returncode != 0 and variable in done.stderr and "loopback" in done.stderr, done.stderr


ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
SIGNER_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:Sign", "kms:GetPublicKey"], "Resource": "*"}]})


def test_access_denied_mid_run_shows_the_key_and_code_and_signing_resumes_when_allowed_again(redis_server, workers, tmp_path):
    """moto with IAM enforcement: the signer's policy is removed while jobs wait (KMS answers
    AccessDeniedException, not retryable by AWS's rules), then put back. Meanwhile the worker logs the
    key and the code, /readyz is false and the heartbeat says why; the jobs stay in flight and are
    all signed once the policy is back, with no restart (PROTOCOL.md: key_unavailable only after
    key_unavailable_after)."""
    m = start_moto(tmp_path, {"INITIAL_NO_AUTH_ACTION_COUNT": "6"})
    try:
        arn = m.client("kms").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]  # 1
        iam = m.client("iam")
        iam.create_user(UserName="admin")  # 2
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=ADMIN_POLICY)  # 3
        admin_key = iam.create_access_key(UserName="admin")["AccessKey"]  # 4
        iam.create_user(UserName="signer")  # 5
        iam.put_user_policy(UserName="signer", PolicyName="sign", PolicyDocument=SIGNER_POLICY)  # 6: IAM decides from here on
        admin = m.client("iam", admin_key["AccessKeyId"], admin_key["SecretAccessKey"])
        signer = admin.create_access_key(UserName="signer")["AccessKey"]
        ns = unique_namespace("kms-denied")
        r = redis_server.client()
        r.set(f"{{{ns}}}:keygroup", group([{"id": "KKMSEC00000001", "private_key_uri": f"awskms:{arn}"}], "KKMSEC00000001"))
        port = free_port()
        env = {**m.env(tmp_path, AWS_ACCESS_KEY_ID=signer["AccessKeyId"], AWS_SECRET_ACCESS_KEY=signer["SecretAccessKey"]),
               "CFSIGN_KEY_UNAVAILABLE_AFTER": "120"}
        w = workers.start(redis_server, ns, env=env, args=["--http-address", f"127.0.0.1:{port}"])
        push(r, ns, [job(ns, f"a{i}", reply="d", url=f"{CLOUDFRONT_HOST}/d/a{i}") for i in range(10)])
        assert all(x["ok"] for x in collect(r, f"{{{ns}}}:reply:d", 10, 30)), "signing before the policy was removed"

        admin.delete_user_policy(UserName="signer", PolicyName="sign")
        jobs = [job(ns, f"b{i}", reply="d", url=f"{CLOUDFRONT_HOST}/d/b{i}") for i in range(30)]
        push(r, ns, jobs)
        reason = wait_until(lambda: heartbeat(r, ns, w.worker_id).get("key_unavailable"), 20, what="key_unavailable in the heartbeat")
        assert "AccessDenied" in reason and arn in reason, reason
        status, text = readyz(port)
        assert status == 503 and "AccessDenied" in text and arn in text, (status, text)
        logged = [line for line in w.log().splitlines() if "AccessDenied" in line]
        assert logged and arn in logged[0], w.log()[-2000:]
        assert len(logged) == 1, f"the reason is logged once, not per call: {logged[:3]}"
        assert signer["SecretAccessKey"] not in w.log() and signer["SecretAccessKey"] not in reason
        time.sleep(1)
        assert r.llen(f"{{{ns}}}:reply:d") == 0, "a job was answered while KMS denied every call"

        admin.put_user_policy(UserName="signer", PolicyName="sign", PolicyDocument=SIGNER_POLICY)
        replies = collect(r, f"{{{ns}}}:reply:d", 30, 60)
        assert all(x["ok"] for x in replies), [x for x in replies if not x["ok"]][:3]
        assert sorted(x["id"] for x in replies) == sorted(j["id"] for j in jobs), "a job was lost"
        wait_until(lambda: heartbeat(r, ns, w.worker_id).get("key_unavailable") is None, 15, what="key_unavailable cleared")
        wait_until(lambda: readyz(port)[0] == 200, 15, what="/readyz ready again")
        assert w.alive()
    finally:
        stop_moto(m)


# --- KMS paused and back -------------------------------------------------------------------------

def test_kms_paused_mid_drain_loses_no_job_and_resumes_without_restart(redis_server, workers, own_moto, tmp_path):
    m = own_moto
    key = create_key(m, "RSA_2048")
    ns = unique_namespace("kms-pause")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", group([{"id": "KKMSRSA0000001", "private_key_uri": key.uri}], "KKMSRSA0000001"))
    port = free_port()
    w = workers.start(redis_server, ns, env={**m.env(tmp_path), "CFSIGN_KEY_UNAVAILABLE_AFTER": "120", "CFSIGN_KMS_CALL_TIMEOUT": "0.5"},
                      args=["--http-address", f"127.0.0.1:{port}"])
    expires = int(time.time()) + 3600
    jobs = [job(ns, f"p{i}", reply="p", url=f"{CLOUDFRONT_HOST}/p/{i}", expires_at=expires) for i in range(300)]
    push(r, ns, jobs)
    wait_until(lambda: r.llen(f"{{{ns}}}:reply:p") >= 20, 30, what="some jobs answered before the pause")
    m.proc.send_signal(signal.SIGSTOP)
    try:
        reason = wait_until(lambda: heartbeat(r, ns, w.worker_id).get("key_unavailable"), 20, what="key_unavailable in the heartbeat")
        assert "KMS" in reason and "testing" not in reason, reason
        # A call timed out by a slow (loaded) moto just before the stop can set the reason and a
        # late success clear it again: wait for the stop's own, lasting unreadiness.
        status, text = wait_until(lambda: (lambda a: a if a[0] == 503 else None)(readyz(port)), 20, what="/readyz 503")
        assert "key unavailable" in text, (status, text)
        answered = r.llen(f"{{{ns}}}:reply:p")
        time.sleep(1.5)
        assert r.llen(f"{{{ns}}}:reply:p") == answered, "jobs were answered while KMS was stopped"
        assert answered < 300, "every job was answered before the pause; nothing was tested"
        assert r.llen(w.inflight_key) + answered + r.llen(f"{{{ns}}}:jobs") == 300, "a job is neither answered, in flight nor queued"
    finally:
        m.proc.send_signal(signal.SIGCONT)
    replies = collect(r, f"{{{ns}}}:reply:p", 300, 120)
    assert all(x["ok"] for x in replies), [x for x in replies if not x["ok"]][:3]
    assert sorted(x["id"] for x in replies) == sorted(j["id"] for j in jobs), "a job was lost"
    for x in replies[:20]:
        i = int(x["id"][1:])
        params = dict(p.split("=", 1) for p in x["url"].split("?", 1)[1].split("&"))
        verify_with(key, unb64(params["Signature"]), canned_policy(f"{CLOUDFRONT_HOST}/p/{i}", expires))
    wait_until(lambda: heartbeat(r, ns, w.worker_id).get("key_unavailable") is None, 15, what="key_unavailable cleared")
    wait_until(lambda: readyz(port)[0] == 200, 15, what="/readyz ready again")
    assert w.alive()


def test_jobs_are_answered_key_unavailable_after_the_configured_time_while_kms_is_stopped(redis_server, workers, own_moto, tmp_path):
    m = own_moto
    key = create_key(m, "ECC_NIST_P256")
    ns = unique_namespace("kms-late")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", group([{"id": "KKMSEC00000001", "private_key_uri": key.uri}], "KKMSEC00000001"))
    workers.start(redis_server, ns, env={**m.env(tmp_path), "CFSIGN_KEY_UNAVAILABLE_AFTER": "1.5", "CFSIGN_KMS_CALL_TIMEOUT": "0.3"})
    m.proc.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        push(r, ns, [job(ns, f"t{i}", reply="late") for i in range(5)])
        replies = collect(r, f"{{{ns}}}:reply:late", 5, 30)
        took = time.monotonic() - start
    finally:
        m.proc.send_signal(signal.SIGCONT)
    assert all(not x["ok"] and x["error"]["code"] == "key_unavailable" for x in replies), replies[:2]
    assert "Timeout" in replies[0]["error"]["message"] or "did not answer" in replies[0]["error"]["message"], replies[0]
    assert took >= 1.4, f"answered key_unavailable after {took:.1f} s, before key_unavailable_after (1.5 s)"


def test_the_worker_keeps_64_kms_calls_in_flight_on_few_threads(redis_server, workers, own_moto, tmp_path):
    """While moto is stopped, calls pile up to kms_max_in_flight; the worker's threads stay few
    (the NIO event loop is the one thread waiting on KMS sockets)."""
    m = own_moto
    key = create_key(m, "RSA_2048")
    ns = unique_namespace("kms-inflight")
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", group([{"id": "KKMSRSA0000001", "private_key_uri": key.uri}], "KKMSRSA0000001"))
    w = workers.start(redis_server, ns, env={**m.env(tmp_path), "CFSIGN_KEY_UNAVAILABLE_AFTER": "60", "CFSIGN_KMS_CALL_TIMEOUT": "10"})
    push(r, ns, [job(ns, "warm", reply="f")])
    collect(r, f"{{{ns}}}:reply:f", 1, 30)
    before = len(os.listdir(f"/proc/{w.proc.pid}/task"))
    m.proc.send_signal(signal.SIGSTOP)
    try:
        push(r, ns, [job(ns, f"f{i}", reply="f", url=f"{CLOUDFRONT_HOST}/f/{i}") for i in range(200)])

        def connections():
            out = subprocess.run(["ss", "-tn", "state", "established", f"dport = :{m.port}"], capture_output=True, text=True).stdout
            return max(0, len(out.strip().splitlines()) - 1)
        if shutil.which("ss"):
            wait_until(lambda: connections() >= 64 or None, 20, what="64 KMS connections open")
            time.sleep(0.5)
            assert connections() <= 70, f"more KMS calls in flight than kms_max_in_flight: {connections()}"
        during = len(os.listdir(f"/proc/{w.proc.pid}/task"))
        assert during <= before + 2, f"threads grew from {before} to {during} with 64 KMS calls in flight"
    finally:
        m.proc.send_signal(signal.SIGCONT)
    replies = collect(r, f"{{{ns}}}:reply:f", 200, 120)
    assert all(x["ok"] for x in replies), [x for x in replies if not x["ok"]][:3]
