"""cfsign against AWS's own CloudFront signers, job by job.

Thousands of seeded random jobs (canned and custom policies, URLs and cookies, every key form,
SHA-1 and SHA-256, awkward but legal URLs) go through `cfsign sign-batch`; each reply is compared with
what botocore's CloudFrontSigner makes for the same key, URL and times (PROTOCOL.md, "Signatures").
RSA PKCS#1 v1.5 is deterministic, so RSA links must be equal byte for byte. ECDSA is randomised, so
for EC keys everything but the Signature value must be equal byte for byte, and the signature must
verify with the public key over the policy bytes botocore builds.

A few cases also go through `cfsign sign` directly, and through `aws cloudfront sign` (awscli 1.x:
RSA, SHA-1, URLs only).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from botocore.signers import CloudFrontSigner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from .conftest import REPLY_TO, TestKey

SEED = 20261125
NOW = int(time.time())
DAY = 86400

JOBS_PER_KEY = 500  # six keys: 3000 generated jobs

# The Key-Pair-Id each test key signs under: CloudFront's shape, and odd but legal ids.
KEY_IDS = {
    "rsa-pkcs1": "K2JCJMDEHXQW5F",
    "rsa-pkcs8": "APKAEIBAERJR2EXAMPLE",
    "rsa-pkcs1-converted": "K1!$'()*+,-./:<>?@[]^_`{|}~",
    "ec-sec1": "KEC256SEC1TEST",
    "ec-sec1-params": "k-ec_params.test",
    "ec-pkcs8": "K3" + "X" * 126,  # 128 characters, the longest id allowed
}

# ---------------------------------------------------------------------------------------------
# Job generation (deterministic for a given seed; times are relative to NOW)
# ---------------------------------------------------------------------------------------------

HOSTS = [
    ("d111111abcdef8.cloudfront.net", set()),
    ("d111111abcdef8.cloudfront.net", set()),
    ("d111111abcdef8.cloudfront.net:8443", {"port"}),
    ("media.example.org:443", {"port"}),
    ("example.com:65535", {"port"}),
    ("[2001:db8::1]:8080", {"ipv6-host", "port"}),
    ("[2001:db8::1]", {"ipv6-host"}),
    ("[::1]", {"ipv6-host"}),
    ("192.0.2.10:8080", {"port"}),
    ("localhost", set()),
]

# Path pieces, each legal in a contract URL; the tag names what it exercises.
PATH_ATOMS = [
    ("invoices", None), ("42.pdf", None), ("a", None), ("video", None), ("index.html", None),
    ("%20", "percent-encoding"), ("%E2%82%AC", "percent-encoding"), ("%22", "percent-encoding"),
    ("%2F", "percent-encoding"), ("%25", "percent-encoding"),
    ("~user", "char-~"), ("it's", "char-'"), ("(1)", "char-parens"), ("wow!", "char-!"),
    ("*", "char-*"), ("$5", "char-$"), ("a,b", "char-,"), ("x;y", "char-;"), ("@me", "char-@"),
    ("a+b", "char-+"), ("-._", None), ("k=v", None), (":", None), ("Expires=1", None),
    ("[x]", "char-other"), ("{y}", "char-other"), ("a|b^c", "char-other"), ("`q`", "char-other"),
    ("<p>", "char-other"),
]

QUERIES = [
    ("", set()),
    ("", set()),
    ("", set()),
    ("?a=1&b=2", {"query"}),
    ("?x", {"query"}),
    ("?", {"query"}),
    ("?q=%20%E2%82%AC&r=a+b", {"query", "percent-encoding", "char-+"}),
    ("?list=1,2,3&sel=(a)&t=~x", {"query"}),
    ("?PolicyVersion=2&ExpiresSoon=1&a=Expires&b=Key-Pair-Id", {"query", "signing-name-lookalike"}),
    ("?a=1&&b=", {"query"}),
    ("?k=v?w&redirect=https://x.example/y", {"query"}),
    ("?*=?&$=@", {"query"}),
]


@dataclass
class Case:
    job: dict
    tags: set = field(default_factory=set)


def make_path(rng: random.Random, tags: set) -> str:
    if rng.random() < 0.04:
        tags.add("long-path")
        pieces, size = [], 0
        while size < 4000:
            atom, tag = rng.choice(PATH_ATOMS)
            pieces.append(atom)
            size += len(atom) + 1
            if tag:
                tags.add(tag)
        return "/" + "/".join(pieces)
    if rng.random() < 0.05:
        tags.add("no-path")
        return ""
    segments = []
    for _ in range(rng.randint(1, 5)):
        seg = ""
        for _ in range(rng.randint(1, 3)):
            atom, tag = rng.choice(PATH_ATOMS)
            seg += atom
            if tag:
                tags.add(tag)
        segments.append(seg)
    path = "/" + "/".join(segments)
    if rng.random() < 0.1:
        path += "/"
    return path


def make_url(rng: random.Random, tags: set) -> str:
    scheme = rng.choice(["https", "https", "http"])
    host, host_tags = rng.choice(HOSTS)
    query, query_tags = rng.choice(QUERIES)
    tags |= host_tags | query_tags
    return f"{scheme}://{host}{make_path(rng, tags)}{query}"


def make_resource(rng: random.Random, url: str, tags: set) -> str:
    """A policy Resource that matches `url` (PROTOCOL.md: `*` any run, `?` exactly one character)."""
    scheme_end = url.index("://") + 3
    choice = rng.randrange(7)
    if choice == 0:
        return url
    tags.add("resource-wildcard")
    if choice == 1:  # prefix, then *
        tags.add("resource-*")
        return url[: rng.randint(scheme_end, len(url))] + "*"
    if choice == 2:  # any scheme
        tags.add("resource-*")
        return "http*://" + url[scheme_end:]
    if choice == 3:  # a few characters replaced by ?
        tags.add("resource-?")
        chars = list(url)
        for i in rng.sample(range(len(chars)), k=min(3, len(chars))):
            chars[i] = "?"
        return "".join(chars)
    if choice == 4:  # a middle run replaced by *
        tags.add("resource-*")
        i = rng.randint(scheme_end, len(url))
        j = rng.randint(i, len(url))
        return url[:i] + "*" + url[j:]
    if choice == 5:
        tags.add("resource-*")
        return "*"
    tags.update({"resource-*", "resource-?"})  # * then ? for the last character
    return "*" + url[rng.randint(scheme_end, len(url) - 1) : -1] + "?"


def make_ip(rng: random.Random, tags: set) -> str:
    address = ipaddress.IPv4Address(rng.getrandbits(32))
    if rng.random() < 0.4:
        tags.add("ip-address")
        return str(address)
    tags.add("ip-cidr")
    prefix = rng.choice([0, 8, 16, 24, 32, rng.randint(1, 31)])
    return str(ipaddress.IPv4Network((address, prefix), strict=False))


def make_case(rng: random.Random, n: int, key_name: str) -> Case:
    tags: set = set()
    url = make_url(rng, tags)
    job = {"id": f"{key_name}-{n}", "reply_to": REPLY_TO, "url": url}

    expires_at = NOW + rng.randint(1, 3650) * DAY + rng.randrange(DAY)
    if rng.random() < 0.1:
        tags.add("expires_in")
        job["expires_in"] = rng.randint(3600, 400 * DAY)
        latest_start = NOW - 1
    else:
        job["expires_at"] = expires_at
        latest_start = expires_at - 1

    if rng.random() < 0.6:
        tags.add("custom")
        wanted = [w for w in ("starts_at", "ip", "resource") if rng.random() < 0.5] or [rng.choice(["starts_at", "ip", "resource"])]
        if "starts_at" in wanted:
            tags.add("starts_at")
            job["starts_at"] = rng.choice([NOW - rng.randrange(400 * DAY), rng.randint(NOW - DAY, latest_start)])
        if "ip" in wanted:
            job["ip"] = make_ip(rng, tags)
        if "resource" in wanted:
            tags.add("resource")
            job["resource"] = make_resource(rng, url, tags)
    else:
        tags.add("canned")

    output = rng.choice([None, "url", "cookies", "cookies"])
    if output is not None:
        job["output"] = output
    tags.add("cookies" if output == "cookies" else "url")

    hash_name = rng.choice([None, "SHA1", "SHA256", "SHA256"])
    if hash_name is not None:
        job["hash"] = hash_name
    tags.add({None: "sha1-default", "SHA1": "sha1", "SHA256": "sha256"}[hash_name])

    if rng.random() < 0.1:
        job["key_id"] = KEY_IDS[key_name]
    if rng.random() < 0.05:
        job["note"] = "unknown fields are ignored"
    return Case(job=job, tags=tags)


def generate_cases(key_name: str, count: int = JOBS_PER_KEY) -> list[Case]:
    rng = random.Random(f"{SEED}:{key_name}")
    return [make_case(rng, n, key_name) for n in range(count)]


# ---------------------------------------------------------------------------------------------
# The oracle: botocore's CloudFrontSigner
# ---------------------------------------------------------------------------------------------

HASHES = {"SHA1": hashes.SHA1, "SHA256": hashes.SHA256}


def utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


@dataclass
class Expected:
    url: str  # the signed URL botocore makes (plus &Hash-Algorithm=SHA256 for SHA-256)
    policy_bytes: bytes  # what was signed
    params: list  # [(name, value)] appended to the URL, in order
    policy_kind: str


def botocore_link(key: TestKey, key_id: str, url: str, expires_at: int, hash_name: str,
                  starts_at: int | None = None, ip: str | None = None, resource: str | None = None) -> Expected:
    digest = HASHES[hash_name]()
    if key.kind == "rsa":
        sign = lambda message: key.private_key.sign(message, padding.PKCS1v15(), digest)  # noqa: E731
    else:  # botocore only frames the signature; ECDSA values differ per call anyway
        sign = lambda message: key.private_key.sign(message, ec.ECDSA(digest))  # noqa: E731
    signer = CloudFrontSigner(key_id, sign)
    if starts_at is None and ip is None and resource is None:
        policy = signer.build_policy(url, utc(expires_at))
        signed = signer.generate_presigned_url(url, date_less_than=utc(expires_at))
        kind = "canned"
    else:
        policy = signer.build_policy(
            resource if resource is not None else url, utc(expires_at),
            date_greater_than=utc(starts_at) if starts_at is not None else None, ip_address=ip,
        )
        signed = signer.generate_presigned_url(url, policy=policy)
        kind = "custom"
    if hash_name == "SHA256":
        signed += "&Hash-Algorithm=SHA256"  # botocore has no SHA-256; the contract says this is what it adds
    return Expected(url=signed, policy_bytes=policy.encode(), params=appended_params(signed, url), policy_kind=kind)


def appended_params(signed: str, url: str) -> list:
    assert signed.startswith(url), f"signed URL does not start with the URL:\n{signed}\n{url}"
    separator = signed[len(url) : len(url) + 1]
    assert separator == ("&" if "?" in url else "?"), f"wrong separator {separator!r} after {url!r}"
    return [tuple(p.split("=", 1)) for p in signed[len(url) + 1 :].split("&")]


def cloudfront_b64decode(text: str) -> bytes:
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-~_"), text
    try:
        raw = base64.b64decode(text.translate(str.maketrans("-_~", "+=/")), validate=True)
    except binascii.Error as e:
        raise AssertionError(f"signature {text} is not CloudFront base64: {e}") from None
    canonical = base64.b64encode(raw).decode().translate(str.maketrans("+=/", "-_~"))
    assert canonical == text, f"signature is not canonical CloudFront base64: {text}"
    return raw


def verify_ec_signature(key: TestKey, signature: str, policy_bytes: bytes, hash_name: str) -> None:
    try:
        key.public_key.verify(cloudfront_b64decode(signature), policy_bytes, ec.ECDSA(HASHES[hash_name]()))
    except InvalidSignature:
        raise AssertionError(f"ECDSA/{hash_name} signature {signature} does not verify over {policy_bytes!r}") from None


def check_params(key: TestKey, actual: list, expected: Expected, hash_name: str) -> None:
    """Name/value pairs in order: all equal, except an EC Signature, which must verify instead."""
    names = [n for n, _ in actual]
    assert names == [n for n, _ in expected.params], f"parameters {names} != {[n for n, _ in expected.params]}"
    for (name, value), (_, want) in zip(actual, expected.params):
        if name == "Signature" and key.kind == "ec":
            verify_ec_signature(key, value, expected.policy_bytes, hash_name)
        else:
            assert value == want, f"{name}: cfsign {value!r} != botocore {want!r}"


def check_url(key: TestKey, url: str, actual: str, expected: Expected, hash_name: str) -> None:
    if key.kind == "rsa":
        assert actual == expected.url, f"URL differs from botocore:\ncfsign:   {actual}\nbotocore: {expected.url}"
        return
    assert actual[: len(url) + 1] == expected.url[: len(url) + 1], f"URL prefix differs:\n{actual}\n{expected.url}"
    check_params(key, appended_params(actual, url), expected, hash_name)


def check_cookies(key: TestKey, cookies: dict, expected: Expected, hash_name: str) -> None:
    """Each CloudFront-<name> cookie carries the value botocore puts in the URL as <name>."""
    want = {f"CloudFront-{name}": value for name, value in expected.params}
    assert set(cookies) == set(want), f"cookie names {sorted(cookies)} != {sorted(want)}"
    for name, value in cookies.items():
        if name == "CloudFront-Signature" and key.kind == "ec":
            verify_ec_signature(key, value, expected.policy_bytes, hash_name)
        else:
            assert value == want[name], f"{name}: cfsign {value!r} != botocore {want[name]!r}"


# ---------------------------------------------------------------------------------------------
# sign-batch: thousands of jobs
# ---------------------------------------------------------------------------------------------

KEY_NAMES = list(KEY_IDS)


def check_reply(key: TestKey, key_id: str, job: dict, reply: dict, signed_between: tuple[int, int]) -> None:
    assert reply.get("ok") is True, f"refused: {reply.get('error')}"
    assert reply["id"] == job["id"]
    output = "cookies" if job.get("output") == "cookies" else "url"
    assert set(reply) == {"id", "ok", output, "key_id", "expires_at", "policy"}, f"reply fields {sorted(reply)}"
    assert reply["key_id"] == key_id
    if "expires_at" in job:
        assert reply["expires_at"] == job["expires_at"]
    else:
        earliest, latest = signed_between
        assert earliest + job["expires_in"] <= reply["expires_at"] <= latest + job["expires_in"]
    hash_name = job.get("hash", "SHA1")
    expected = botocore_link(
        key, key_id, job["url"], reply["expires_at"], hash_name,
        starts_at=job.get("starts_at"), ip=job.get("ip"), resource=job.get("resource"),
    )
    assert reply["policy"] == expected.policy_kind
    if output == "url":
        check_url(key, job["url"], reply["url"], expected, hash_name)
    else:
        assert isinstance(reply["cookies"], dict)
        check_cookies(key, reply["cookies"], expected, hash_name)


@pytest.mark.parametrize("key_name", KEY_NAMES)
def test_sign_batch_matches_botocore(cfsign, test_keys, key_name):
    key, key_id = test_keys[key_name], KEY_IDS[key_name]
    cases = generate_cases(key_name)
    stdin = "".join(json.dumps(c.job, separators=(",", ":")) + "\n" for c in cases)

    started = int(time.time())
    result = cfsign("sign-batch", "--key-id", key_id, "--private-key", str(key.path), input=stdin)
    finished = int(time.time()) + 1

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(cases), f"{len(lines)} replies for {len(cases)} jobs; stderr: {result.stderr}"
    failures = []
    for case, line in zip(cases, lines):
        try:
            check_reply(key, key_id, case.job, json.loads(line), (started, finished))
        except AssertionError as e:
            failures.append(f"job {json.dumps(case.job)}\nreply {line}\n{e}")
    assert not failures, f"{len(failures)} of {len(cases)} jobs differ from botocore; first ones:\n\n" + "\n\n".join(failures[:3])


REQUIRED_TAGS = {
    "canned", "custom", "starts_at", "ip-address", "ip-cidr", "resource", "resource-*", "resource-?",
    "url", "cookies", "sha1-default", "sha1", "sha256", "expires_in", "query", "percent-encoding", "port",
    "ipv6-host", "long-path", "no-path", "signing-name-lookalike",
    "char-~", "char-'", "char-parens", "char-!", "char-*", "char-$", "char-,", "char-;", "char-@", "char-+",
    "char-other",
}


def test_generated_jobs_cover_every_feature():
    for key_name in KEY_NAMES:
        seen = {}
        for case in generate_cases(key_name):
            for tag in case.tags:
                seen[tag] = seen.get(tag, 0) + 1
        rare = {t: seen.get(t, 0) for t in REQUIRED_TAGS if seen.get(t, 0) < 3}
        assert not rare, f"jobs for {key_name} barely exercise {rare}"


def test_generated_jobs_are_deterministic():
    assert [c.job for c in generate_cases("rsa-pkcs1", 50)] == [c.job for c in generate_cases("rsa-pkcs1", 50)]


def test_same_rsa_key_in_pkcs1_and_pkcs8_signs_identically(cfsign, test_keys):
    job = {"id": "same", "reply_to": REPLY_TO, "url": "https://d111111abcdef8.cloudfront.net/a?b=1", "expires_at": NOW + 30 * DAY}
    urls = []
    for name in ("rsa-pkcs8", "rsa-pkcs1-converted"):
        result = cfsign("sign-batch", "--key-id", "K1", "--private-key", str(test_keys[name].path), input=json.dumps(job) + "\n")
        assert result.returncode == 0, result.stderr
        urls.append(json.loads(result.stdout)["url"])
    assert urls[0] == urls[1]


EDGE_URL = "https://d111111abcdef8.cloudfront.net/edge"
EDGE_JOBS = {
    "url-of-exactly-8-KiB": {"url": EDGE_URL + "/" + "x" * (8192 - len(EDGE_URL) - 1)},
    "latest-expiry-9999-12-31": {"url": EDGE_URL, "expires_at": 253402300799},
    "starts-at-epoch-zero": {"url": EDGE_URL, "starts_at": 0},
    "ip-everyone": {"url": EDGE_URL, "ip": "0.0.0.0/0"},
    "ip-broadcast-bare": {"url": EDGE_URL, "ip": "255.255.255.255"},
    "ip-explicit-32": {"url": EDGE_URL, "ip": "198.51.100.1/32"},
    "resource-star-only": {"url": EDGE_URL + "?a=1", "resource": "*"},
    "bare-host": {"url": "http://d111111abcdef8.cloudfront.net"},
    "bare-host-query": {"url": "https://d111111abcdef8.cloudfront.net?x"},
    "empty-query": {"url": EDGE_URL + "?"},
    "all-custom-conditions-sha256-cookies": {
        "url": EDGE_URL + "/a?b=1", "starts_at": NOW - DAY, "ip": "10.0.0.0/8", "resource": EDGE_URL + "/*",
        "hash": "SHA256", "output": "cookies",
    },
}


@pytest.mark.parametrize("key_name", ["rsa-pkcs1", "ec-pkcs8"])
@pytest.mark.parametrize("fields", EDGE_JOBS.values(), ids=EDGE_JOBS.keys())
def test_edge_job_matches_botocore(cfsign, test_keys, key_name, fields):
    key, key_id = test_keys[key_name], KEY_IDS[key_name]
    job = {"id": "edge", "reply_to": REPLY_TO, "expires_at": NOW + 7 * DAY, **fields}
    result = cfsign("sign-batch", "--key-id", key_id, "--private-key", str(key.path), input=json.dumps(job) + "\n")
    assert result.returncode == 0, result.stderr
    check_reply(key, key_id, job, json.loads(result.stdout), (NOW, NOW))


def test_batch_reads_json_escapes_in_url(cfsign, test_keys):
    """Producers whose JSON encoders escape `/` or write \\uXXXX get the same link as plain JSON."""
    key, key_id = test_keys["rsa-pkcs8"], KEY_IDS["rsa-pkcs8"]
    url = "https://d111111abcdef8.cloudfront.net/a/b?c=1"
    escaped = url.replace("/", "\\/").replace("a", "\\u0061")
    line = '{"id":"esc","reply_to":"{cfsign}:reply:t","url":"%s","expires_at":%d}' % (escaped, NOW + DAY)
    result = cfsign("sign-batch", "--key-id", key_id, "--private-key", str(key.path), input=line + "\n")
    assert result.returncode == 0, result.stderr
    job = {"id": "esc", "url": url, "expires_at": NOW + DAY}
    check_reply(key, key_id, job, json.loads(result.stdout), (NOW, NOW))


# ---------------------------------------------------------------------------------------------
# cfsign sign: the same comparison through the command line
# ---------------------------------------------------------------------------------------------


def iso(epoch: int, offset_minutes: int = 0) -> str:
    if offset_minutes == 0:
        return utc(epoch).strftime("%Y-%m-%dT%H:%M:%SZ")
    return utc(epoch).astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat()


def direct_cases() -> list[tuple[str, Case]]:
    rng = random.Random(f"{SEED}:direct")
    cases = []
    for n in range(20):
        key_name = KEY_NAMES[n % len(KEY_NAMES)]
        case = make_case(rng, n, key_name)
        case.job.pop("expires_in", None)
        case.job.setdefault("expires_at", NOW + rng.randint(1, 3650) * DAY)
        if "starts_at" in case.job and case.job["starts_at"] >= case.job["expires_at"]:
            case.job["starts_at"] = NOW - DAY
        cases.append((key_name, case))
    return cases


def time_argument(rng: random.Random, epoch: int) -> str:
    return rng.choice([str(epoch), iso(epoch), iso(epoch, 120), iso(epoch, -330)])


@pytest.mark.parametrize("key_name,case", direct_cases(), ids=lambda v: v if isinstance(v, str) else v.job["id"])
def test_cfsign_sign_matches_botocore(cfsign, test_keys, key_name, case):
    key, key_id, job = test_keys[key_name], KEY_IDS[key_name], case.job
    rng = random.Random(job["id"])
    args = ["sign", job["url"], "--key-id", key_id, "--private-key", str(key.path),
            "--expires-at", time_argument(rng, job["expires_at"])]
    if "starts_at" in job:
        args += ["--starts-at", time_argument(rng, job["starts_at"])]
    if "ip" in job:
        args += ["--ip", job["ip"]]
    if "resource" in job:
        args += ["--resource", job["resource"]]
    if "hash" in job:
        args += ["--hash", job["hash"]]
    if job.get("output") == "cookies":
        args += ["--cookies"]

    result = cfsign(*args)

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    hash_name = job.get("hash", "SHA1")
    expected = botocore_link(key, key_id, job["url"], job["expires_at"], hash_name,
                             starts_at=job.get("starts_at"), ip=job.get("ip"), resource=job.get("resource"))
    lines = result.stdout.splitlines()
    if job.get("output") == "cookies":
        cookies = dict(line.split("=", 1) for line in lines)
        assert len(cookies) == len(lines), f"a cookie is printed twice: {lines}"
        check_cookies(key, cookies, expected, hash_name)
    else:
        assert len(lines) == 1, f"expected one URL line, got {lines}"
        check_url(key, job["url"], lines[0], expected, hash_name)


# ---------------------------------------------------------------------------------------------
# aws cloudfront sign (awscli 1.x: RSA PKCS#1 keys, SHA-1, URLs only)
# ---------------------------------------------------------------------------------------------

AWS_CASES = {
    # name: (url, expiry in days from now, start in days from now or None, ip or None)
    "canned": ("https://d111111abcdef8.cloudfront.net/invoices/42.pdf", 30, None, None),
    "percent-encoded-path-and-query": ("https://d111111abcdef8.cloudfront.net/a%20b/%E2%82%AC?x", 1, None, None),
    "ipv6-host-and-port": ("http://[2001:db8::1]:8080/p", 365, None, None),
    "special-characters": ("https://example.com:8443/it's/(1)/wow!/$5/a,b;c/@me/a+b/~u/*?a=1&b=2", 2, None, None),
    "long-path": ("https://d111111abcdef8.cloudfront.net/v/" + "segment%22/" * 350, 10, None, None),
    "starts-at": ("https://d111111abcdef8.cloudfront.net/custom/start", 30, -1, None),
    "bare-ip": ("https://d111111abcdef8.cloudfront.net/custom/ip?q=1", 7, None, "192.0.2.7"),
    "cidr": ("https://d111111abcdef8.cloudfront.net/custom/cidr", 90, None, "10.1.0.0/16"),
    "starts-at-and-everyone": ("https://media.example.org/all?k=v", 3650, -30, "0.0.0.0/0"),
    "starts-now-and-cidr": ("http://192.0.2.10:8080/", 5, 0, "203.0.113.0/24"),
}


@pytest.mark.parametrize("name", AWS_CASES)
def test_cfsign_sign_matches_aws_cli(cfsign, aws_cli, test_keys, name):
    n = list(AWS_CASES).index(name)
    url, days, start_days, ip = AWS_CASES[name]
    key = test_keys["rsa-pkcs1" if n % 2 == 0 else "rsa-pkcs1-converted"]
    expires = NOW + days * DAY
    expires_arg = str(expires) if n % 3 else iso(expires)
    aws_args = ["cloudfront", "sign", "--url", url, "--key-pair-id", "K2JCJMDEHXQW5F",
                "--private-key", f"file://{key.path}", "--date-less-than", expires_arg]
    cfsign_args = ["sign", url, "--key-id", "K2JCJMDEHXQW5F", "--private-key", str(key.path), "--expires-at", expires_arg]
    if start_days is not None:
        start_arg = str(NOW + start_days * DAY - 60)
        aws_args += ["--date-greater-than", start_arg]
        cfsign_args += ["--starts-at", start_arg]
    if ip is not None:
        aws_args += ["--ip-address", ip]
        cfsign_args += ["--ip", ip]

    aws = aws_cli(*aws_args)
    ours = cfsign(*cfsign_args)

    assert aws.returncode == 0, aws.stderr
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == aws.stdout.rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------
# Resource wildcards: cfsign's matcher against a reference, over many small patterns
# ---------------------------------------------------------------------------------------------


def reference_match(pattern: str, url: str) -> bool:
    """PROTOCOL.md: `*` is any run of characters (`/` and `?` included), `?` exactly one; whole string."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, url, re.S) is not None


def is_dot_segment(segment: str) -> bool:
    """PROTOCOL.md "URL rule: no dot segments": `.` or `..` in any mix of `.`, `%2e`, `%2E`
    (cfsign also counts `..;params`, which Tomcat and Jetty climb)."""
    name = segment.split(";", 1)[0]
    return re.sub("%2[eE]", ".", name) in (".", "..")


def has_dot_segment(path: str) -> bool:
    return any(is_dot_segment(s) for s in path.split("/"))


def url_has_dot_segment(url: str) -> bool:
    rest = url.split("://", 1)[1]
    path = rest[len(re.match(r"[^/?]*", rest).group(0)):]
    return has_dot_segment(path.split("?", 1)[0])


def resource_has_dot_segment(resource: str) -> bool:
    """The resource's path (after scheme://host, before the first `?`), and the text before its
    first `*`, whose last segment a wildcard would complete."""
    judged = resource.split("?", 1)[0]
    m = re.match(r"[A-Za-z0-9+.-]+://[^/]*", judged)
    path = judged[m.end():] if m else judged
    if has_dot_segment(path):
        return True
    return "*" in path and is_dot_segment(path.split("*", 1)[0].split("/")[-1])


def wildcard_cases(count: int = 400) -> list[tuple[str, str]]:
    rng = random.Random(f"{SEED}:wildcards")
    base = "https://d111111abcdef8.cloudfront.net/"
    cases = []
    for _ in range(count):
        url = base + "".join(rng.choice("ab/.=") for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.3:
            url += "?" + "".join(rng.choice("ab=&?") for _ in range(rng.randint(0, 5)))
        if rng.random() < 0.5:  # mutate the URL itself: mostly matches
            chars = list(url)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(chars))
                chars[i] = rng.choice(["*", "?", "", "**", "a", "*?", "?*"])
            pattern = "".join(chars)
        else:  # anything: mostly does not match
            head = rng.choice(["", "*", "http*://*", "*net/", base])
            pattern = head + "".join(rng.choice("ab/?*.=") for _ in range(rng.randint(0, 6)))
            pattern = pattern or "?"
        cases.append((url, pattern))
    return cases


def test_resource_wildcards_agree_with_reference_matcher(cfsign, test_keys):
    key, key_id = test_keys["rsa-pkcs1"], KEY_IDS["rsa-pkcs1"]
    cases = wildcard_cases()
    expires = NOW + 30 * DAY
    jobs = [{"id": str(n), "reply_to": REPLY_TO, "url": u, "resource": p, "expires_at": expires} for n, (u, p) in enumerate(cases)]
    result = cfsign("sign-batch", "--key-id", key_id, "--private-key", str(key.path),
                    input="".join(json.dumps(j) + "\n" for j in jobs))
    assert result.returncode == 0, result.stderr
    replies = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(replies) == len(jobs)
    matched = 0
    for (url, pattern), reply in zip(cases, replies):
        if url_has_dot_segment(url) or resource_has_dot_segment(pattern):
            assert reply.get("error", {}).get("code") == "invalid_url", f"{pattern!r} for {url!r} holds a dot segment: {reply}"
        elif reference_match(pattern, url):
            matched += 1
            assert reply.get("ok") is True, f"{pattern!r} matches {url!r} but cfsign refused it: {reply}"
            expected = botocore_link(key, key_id, url, expires, "SHA1", resource=pattern)
            assert reply["url"] == expected.url
        else:
            assert reply.get("error", {}).get("code") == "invalid_resource", f"{pattern!r} does not match {url!r}: {reply}"
    assert 80 < matched < len(cases) - 80, f"only {matched} of {len(cases)} patterns match: a weak test"
