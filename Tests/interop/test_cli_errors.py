"""What cfsign does with bad input: the contract's error codes, nothing on stdout, no crash.

`cfsign sign` refusals exit 1 with `cfsign: <code>: <message>` on stderr (CLI.md); `cfsign sign-batch`
answers each bad job with the reply or dead entry a worker would push (PROTOCOL.md, "Reply").
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import subprocess
import termios
import time

import pytest

from .conftest import REPLY_TO

NOW = int(time.time())
DAY = 86400
URL = "https://d111111abcdef8.cloudfront.net/invoices/42.pdf"
KEY_ID = "K2JCJMDEHXQW5F"


@pytest.fixture(scope="module")
def rsa_key(test_keys) -> str:
    return str(test_keys["rsa-pkcs1"].path)


@pytest.fixture(scope="module")
def sign(cfsign, rsa_key):
    """`cfsign sign` with a good key; the URL and the extra flags are the test's."""

    def run(url: str, *flags: str, key: str | None = None):
        return cfsign("sign", url, "--key-id", KEY_ID, "--private-key", key or rsa_key, *flags, timeout=30)

    return run


def assert_refused(result: subprocess.CompletedProcess, code: str) -> str:
    """Exit 1, `cfsign: <code>: <message>` on stderr, nothing on stdout; returns the message."""
    assert result.returncode == 1, f"exit {result.returncode}; stderr: {result.stderr!r}"
    assert result.stdout == "", f"stdout must stay empty on a refusal: {result.stdout!r}"
    match = re.match(rf"cfsign: {re.escape(code)}: (.+)\n\Z", result.stderr, re.S)
    assert match, f"stderr does not name {code}: {result.stderr!r}"
    assert "Fatal error" not in result.stderr and "Stack dump" not in result.stderr
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# cfsign sign: URLs
# ---------------------------------------------------------------------------------------------

BAD_URLS = {
    "fragment": URL + "#page=2",
    "signing-param-Expires": URL + "?Expires=1700000000",
    "signing-param-Policy": URL + "?a=1&Policy=abc",
    "signing-param-Signature": URL + "?Signature=abc&b=2",
    "signing-param-Key-Pair-Id": URL + "?x&Key-Pair-Id=K1",
    "signing-param-Hash-Algorithm": URL + "?Hash-Algorithm=SHA256",
    "non-ascii": "https://d111111abcdef8.cloudfront.net/caf\u00e9/\u20ac.pdf",
    "space": "https://d111111abcdef8.cloudfront.net/a b.pdf",
    "control-char-soh": "https://d111111abcdef8.cloudfront.net/a\x01b",
    "control-char-tab": "https://d111111abcdef8.cloudfront.net/a\tb",
    "control-char-del": "https://d111111abcdef8.cloudfront.net/a\x7fb",
    "double-quote": 'https://d111111abcdef8.cloudfront.net/a"b',
    "backslash": "https://d111111abcdef8.cloudfront.net/a\\b",
    "relative": "/invoices/42.pdf",
    "relative-no-slash": "d111111abcdef8.cloudfront.net/invoices/42.pdf",
    "ftp-scheme": "ftp://d111111abcdef8.cloudfront.net/invoices/42.pdf",
    "no-host": "https:///invoices/42.pdf",
    "too-long": "https://d111111abcdef8.cloudfront.net/" + "a" * 8200,
}


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_sign_refuses_bad_url_with_invalid_url(sign, url):
    assert_refused(sign(url, "--expires-in", "1h"), "invalid_url")


def test_sign_names_the_signing_parameter_it_refuses(sign):
    message = assert_refused(sign(URL + "?Key-Pair-Id=K1", "--expires-in", "1h"), "invalid_url")
    assert "Key-Pair-Id" in message


# ---------------------------------------------------------------------------------------------
# cfsign sign: times
# ---------------------------------------------------------------------------------------------


def test_sign_refuses_expiry_in_the_past(sign):
    assert_refused(sign(URL, "--expires-at", str(NOW - 60)), "invalid_expiry")


def test_sign_refuses_iso_expiry_in_the_past(sign):
    assert_refused(sign(URL, "--expires-at", "2001-09-09T01:46:40Z"), "invalid_expiry")


def test_sign_refuses_starts_at_after_expiry(sign):
    assert_refused(sign(URL, "--expires-at", str(NOW + DAY), "--starts-at", str(NOW + 2 * DAY)), "invalid_expiry")


def test_sign_refuses_starts_at_equal_to_expiry(sign):
    assert_refused(sign(URL, "--expires-at", str(NOW + DAY), "--starts-at", str(NOW + DAY)), "invalid_expiry")


def test_sign_refuses_both_expires_at_and_expires_in(sign):
    assert_refused(sign(URL, "--expires-at", str(NOW + DAY), "--expires-in", "1h"), "invalid_expiry")


def test_sign_refuses_neither_expires_at_nor_expires_in(sign):
    assert_refused(sign(URL), "invalid_expiry")


def test_sign_refuses_lifetime_over_max_lifetime(sign):
    assert_refused(sign(URL, "--expires-in", "2d", "--max-lifetime", "1d"), "ttl_too_long")


def test_sign_refuses_expires_at_over_max_lifetime(sign):
    assert_refused(sign(URL, "--expires-at", str(NOW + 400 * DAY), "--max-lifetime", "365d"), "ttl_too_long")


def test_sign_accepts_lifetime_within_max_lifetime(sign):
    result = sign(URL, "--expires-in", "12h", "--max-lifetime", "1d")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(URL + "?Expires=")


# ---------------------------------------------------------------------------------------------
# cfsign sign: IP conditions and resources
# ---------------------------------------------------------------------------------------------

BAD_IPS = {
    "ipv6": "2001:db8::1",
    "ipv6-cidr": "2001:db8::/32",
    "ipv4-mapped-ipv6": "::ffff:192.0.2.7",
    "leading-zero": "010.1.2.3",
    "leading-zero-inner-octet": "10.01.2.3",
    "host-bits-set": "10.1.2.3/24",
    "host-bits-set-16": "192.168.1.0/16",
    "prefix-over-32": "10.0.0.0/33",
    "prefix-leading-zero": "10.0.0.0/08",
    "empty-prefix": "10.0.0.0/",
    "octet-over-255": "256.1.1.1",
    "three-octets": "10.0.0",
    "hostname": "example.com",
    "empty": "",
}


@pytest.mark.parametrize("ip", BAD_IPS.values(), ids=BAD_IPS.keys())
def test_sign_refuses_bad_ip_with_invalid_ip(sign, ip):
    assert_refused(sign(URL, "--expires-in", "1h", "--ip", ip), "invalid_ip")


def test_sign_suggests_the_network_for_host_bits_set(sign):
    message = assert_refused(sign(URL, "--expires-in", "1h", "--ip", "10.1.2.3/24"), "invalid_ip")
    assert "10.1.2.0/24" in message


BAD_RESOURCES = {
    "other-path": "https://d111111abcdef8.cloudfront.net/other/*",
    "other-host": "https://d222222abcdef8.cloudfront.net/*",
    "other-scheme": "http://d111111abcdef8.cloudfront.net/*",
    "too-short-for-question-marks": URL + "?",
    "no-trailing-star": "https://d111111abcdef8.cloudfront.net/invoices/",
    "space": "https://d111111abcdef8.cloudfront.net/in voices/*",
    "non-ascii": "https://d111111abcdef8.cloudfront.net/\u20ac/*",
}


@pytest.mark.parametrize("resource", BAD_RESOURCES.values(), ids=BAD_RESOURCES.keys())
def test_sign_refuses_resource_not_matching_url_with_invalid_resource(sign, resource):
    assert_refused(sign(URL, "--expires-in", "1h", "--resource", resource), "invalid_resource")


# ---------------------------------------------------------------------------------------------
# cfsign sign: keys
# ---------------------------------------------------------------------------------------------

BAD_KEYS = [
    "rsa-1024", "rsa-4096", "ec-secp384r1", "ed25519", "encrypted-pkcs8", "encrypted-pkcs1", "public-key",
    "garbage", "empty", "missing", "directory", "fifo",
]


@pytest.mark.parametrize("name", BAD_KEYS)
def test_sign_refuses_unusable_key_naming_the_file(sign, bad_key_files, name):
    path = str(bad_key_files[name])
    message = assert_refused(sign(URL, "--expires-in", "1h", key=path), "no_signing_key")
    assert path in message


@pytest.mark.parametrize("name", ["encrypted-pkcs8", "encrypted-pkcs1"])
def test_sign_refuses_encrypted_key_without_prompting_on_the_terminal(cfsign_bin, bad_key_files, name):
    """OpenSSL's default password callback reads the controlling terminal, not stdin: give cfsign one."""
    path = str(bad_key_files[name])
    master, slave = pty.openpty()

    def make_controlling_terminal():  # runs in the child after setsid(): stdin is the pty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        process = subprocess.Popen(
            [str(cfsign_bin), "sign", URL, "--key-id", KEY_ID, "--private-key", path, "--expires-in", "1h"],
            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, preexec_fn=make_controlling_terminal,
        )
        try:
            stdout, stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("cfsign waited for a pass phrase on the terminal instead of refusing the encrypted key")
    finally:
        os.close(slave)
        os.close(master)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert "encrypted" in assert_refused(result, "no_signing_key")


def test_sign_refuses_expiry_after_9999_with_ttl_too_long_with_or_without_max_lifetime(sign):
    for extra in ((), ("--max-lifetime", "365d")):
        assert_refused(sign(URL, "--expires-at", "253402300800", *extra), "ttl_too_long")


def test_sign_refuses_invalid_key_id(cfsign, rsa_key):
    result = cfsign("sign", URL, "--key-id", "bad id", "--private-key", rsa_key, "--expires-in", "1h")
    assert_refused(result, "unknown_key")


def test_sign_names_an_ed25519_key_with_the_right_article(sign, bad_key_files):
    message = assert_refused(sign(URL, "--expires-in", "1h", key=str(bad_key_files["ed25519"])), "no_signing_key")
    assert "is an ED25519 key" in message, f"grammar of the key type: {message}"


# ---------------------------------------------------------------------------------------------
# Usage errors: exit 64 (swift-argument-parser's), with a message that says what is accepted
# ---------------------------------------------------------------------------------------------


def assert_usage_error(result: subprocess.CompletedProcess, *wanted: str) -> str:
    assert result.returncode == 64, f"a usage error exits 64; got {result.returncode}: {result.stderr!r}"
    assert result.stdout == "", result.stdout
    for text in wanted:
        assert text in result.stderr, f"stderr does not say {text!r}: {result.stderr!r}"
    return result.stderr


@pytest.mark.parametrize("flags", [["--expires-in", "-5"], ["--expires-in=-5"]], ids=["separate", "attached"])
def test_sign_negative_expires_in_says_a_duration_cannot_be_negative(sign, flags):
    stderr = assert_usage_error(sign(URL, *flags), "cannot be negative", "90m")
    assert "Missing value" not in stderr, f"-5 was read as a flag: {stderr!r}"


def test_sign_unreadable_expires_in_names_the_accepted_forms(sign):
    assert_usage_error(sign(URL, "--expires-in", "1w"), "'1w'", "3600, 90m, 12h, 30d")


def test_sign_expires_at_date_without_time_names_the_accepted_forms(sign):
    assert_usage_error(sign(URL, "--expires-at", "2027-03-01"), "date without a time", "2027-03-01T00:00:00Z")


def test_sign_expires_at_without_zone_says_to_add_one(sign):
    assert_usage_error(sign(URL, "--expires-at", "2027-03-01T00:00:00"), "no time zone", "2027-03-01T00:00:00Z")


def test_root_help_says_usage_errors_exit_64(cfsign):
    help_text = cfsign("--help").stdout
    assert re.search(r"64 usage error", help_text), f"root help does not document exit 64: {help_text}"
    assert cfsign("sign", "--no-such-flag").returncode == 64


def test_keygroup_set_of_a_directory_says_it_is_a_directory(cfsign, tmp_path):
    result = cfsign("keygroup", "set", str(tmp_path), "--redis", "redis://127.0.0.1:1")
    assert result.returncode == 1, result.stderr
    assert "is a directory" in result.stderr and "NSCocoaErrorDomain" not in result.stderr, result.stderr


def test_keys_generate_says_an_ec_key_pair(cfsign, tmp_path):
    result = cfsign("keys", "generate", "--type", "ec", "--out", str(tmp_path / "keys"), "--name", "test-only-grammar")
    assert result.returncode == 0, result.stderr
    assert "Made an EC P-256 key pair" in result.stderr, result.stderr


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory):
    """A real redis-server on a free loopback port that wants the password test-only-secret."""
    from cfsign_support import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), extra_args=["--requirepass", "test-only-secret"]).start()
    try:
        yield server.port
    finally:
        server.stop()


@pytest.mark.parametrize("command", [["status"], ["keygroup", "show"], ["request", URL, "--expires-in", "1h", "--timeout", "2"]],
                         ids=["status", "keygroup-show", "request"])
def test_wrong_redis_password_says_authentication_failed(cfsign, redis_with_password, command):
    result = cfsign(*command, "--redis", f"redis://:wrong-password@127.0.0.1:{redis_with_password}")
    assert result.returncode == 1, result.stderr
    assert "authentication failed" in result.stderr, f"a wrong password must say so: {result.stderr!r}"
    assert "is Redis running" not in result.stderr, f"Redis runs; the password is wrong: {result.stderr!r}"
    assert "wrong-password" not in result.stderr, "the password must never be printed"


# ---------------------------------------------------------------------------------------------
# cfsign sign-batch: bad jobs get the reply or dead entry a worker would push
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(cfsign, rsa_key):
    """Feeds raw job lines to one `cfsign sign-batch`; returns one parsed reply per line."""

    def run(*lines: str) -> list[dict]:
        result = cfsign("sign-batch", "--key-id", KEY_ID, "--private-key", rsa_key,
                        input="".join(line + "\n" for line in lines), timeout=30)
        assert result.returncode == 0, result.stderr
        replies = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(replies) == len(lines), result.stdout
        return replies

    return run


def job(**fields) -> str:
    base = {"id": "j1", "reply_to": REPLY_TO, "url": URL, "expires_at": NOW + DAY}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not DROP}, separators=(",", ":"))


DROP = object()


def with_raw_member(line: str, member: str) -> str:
    """Appends a member written as raw JSON text (numbers Python's json would not write that way)."""
    assert line.endswith("}")
    return line[:-1] + "," + member + "}"


def assert_error_reply(reply: dict, code: str, job_id: str = "j1") -> None:
    assert set(reply) == {"id", "ok", "error"}, reply
    assert reply["id"] == job_id and reply["ok"] is False
    assert set(reply["error"]) == {"code", "message"}
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"]


def assert_dead_entry(entry: dict, code: str, raw_job: str) -> None:
    assert set(entry) == {"error", "job", "worker", "at"}, entry
    assert entry["error"]["code"] == code, entry
    assert entry["error"]["message"]
    raw, kept = raw_job.encode(), entry["job"].encode()
    if len(raw) <= 1024:
        assert kept == raw
    else:  # the first KiB, less a character the cut would split
        assert raw.startswith(kept) and 1021 <= len(kept) <= 1024, (len(kept), kept[-8:])
    assert isinstance(entry["at"], int) and abs(entry["at"] - time.time() * 1000) < 600_000


WRONG_TYPES = {
    "expires_at-string": job(expires_at=str(NOW + DAY)),
    "expires_at-fraction": job(expires_at=1.5),
    "expires_at-exponent": with_raw_member(job(expires_at=DROP), '"expires_at":1e3'),
    "expires_at-big-exponent": with_raw_member(job(expires_at=DROP), '"expires_at":2e9'),
    "expires_at-integral-fraction": with_raw_member(job(expires_at=DROP), f'"expires_at":{NOW + DAY}.0'),
    "expires_in-huge-exponent": with_raw_member(job(expires_at=DROP), '"expires_in":1e300'),
    "expires_in-negative-huge-exponent": with_raw_member(job(expires_at=DROP), '"expires_in":-1e300'),
    "expires_at-bool": job(expires_at=True),
    "expires_in-string": job(expires_at=DROP, expires_in="1h"),
    "starts_at-string": job(starts_at="2026-01-01T00:00:00Z"),
    "url-number": job(url=42),
    "url-array": job(url=[URL]),
    "ip-number": job(ip=3232235777),
    "resource-object": job(resource={"pattern": "*"}),
    "output-unknown": job(output="zip"),
    "hash-number": job(hash=256),
}


@pytest.mark.parametrize("line", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_batch_answers_wrong_field_type_with_invalid_job(batch, line):
    assert_error_reply(batch(line)[0], "invalid_job")


def test_batch_answers_job_without_url_with_missing_field(batch):
    assert_error_reply(batch(job(url=DROP))[0], "missing_field")


def test_batch_answers_job_without_expiry_with_invalid_expiry(batch):
    assert_error_reply(batch(job(expires_at=DROP))[0], "invalid_expiry")


def test_batch_answers_job_with_both_expiries_with_invalid_expiry(batch):
    assert_error_reply(batch(job(expires_in=3600))[0], "invalid_expiry")


def test_batch_answers_past_expiry_with_invalid_expiry(batch):
    assert_error_reply(batch(job(expires_at=NOW - 60))[0], "invalid_expiry")


# Attack 7 (issue 13): one code per class of extreme expiry (docs/PROTOCOL.md, "Expiry classes").
# `cfsign sign-batch` has no maximum lifetime, so 9999-12-31T23:59:59Z is its limit.
TOO_FAR = {
    "expires_in-2^63-1": with_raw_member(job(expires_at=DROP), f'"expires_in":{2**63 - 1}'),
    "expires_in-over-64-bits": with_raw_member(job(expires_at=DROP), '"expires_in":99999999999999999999'),
    "expires_at-2^63-1": job(expires_at=2**63 - 1),
    "expires_at-over-64-bits": with_raw_member(job(expires_at=DROP), '"expires_at":99999999999999999999'),
    "expires_at-after-9999": job(expires_at=253402300800),
}


@pytest.mark.parametrize("line", TOO_FAR.values(), ids=TOO_FAR.keys())
def test_batch_answers_expiry_past_year_9999_at_any_magnitude_with_ttl_too_long(batch, line):
    assert_error_reply(batch(line)[0], "ttl_too_long")


NOT_POSITIVE = {
    "expires_in-0": job(expires_at=DROP, expires_in=0),
    "expires_in--0": with_raw_member(job(expires_at=DROP), '"expires_in":-0'),
    "expires_in-int64-min": job(expires_at=DROP, expires_in=-2**63),
    "expires_in-under-64-bits": with_raw_member(job(expires_at=DROP), '"expires_in":-99999999999999999999'),
    "expires_at-int64-min": job(expires_at=-2**63),
    "starts_at-2^63-1": job(starts_at=2**63 - 1),
}


@pytest.mark.parametrize("line", NOT_POSITIVE.values(), ids=NOT_POSITIVE.keys())
def test_batch_answers_not_positive_or_misordered_times_at_any_magnitude_with_invalid_expiry(batch, line):
    assert_error_reply(batch(line)[0], "invalid_expiry")


def test_batch_signs_expiry_up_to_year_9999_without_a_maximum(batch):
    for line in (job(expires_at=253402300799), job(expires_at=DROP, expires_in=10**11)):
        reply = batch(line)[0]
        assert reply.get("ok") is True, f"extreme but valid expiry refused: {reply}"


def test_batch_answers_lower_case_hash_with_unsupported_hash(batch):
    assert_error_reply(batch(job(hash="sha256"))[0], "unsupported_hash")


def test_batch_answers_bad_url_with_invalid_url(batch):
    assert_error_reply(batch(job(url=URL + "#x"))[0], "invalid_url")


def test_batch_answers_bad_ip_with_invalid_ip(batch):
    assert_error_reply(batch(job(ip="10.1.2.3/24"))[0], "invalid_ip")


def test_batch_answers_unmatched_resource_with_invalid_resource(batch):
    assert_error_reply(batch(job(resource="https://elsewhere.example/*"))[0], "invalid_resource")


DEAD_JOBS = {
    "no-id": (job(id=DROP), "missing_field"),
    "no-reply_to": (job(reply_to=DROP), "missing_field"),
    "id-number": (job(id=7), "invalid_job"),
    "id-empty": (job(id=""), "invalid_job"),
    "id-over-200-bytes": (job(id="x" * 201), "invalid_job"),
    "reply_to-number": (job(reply_to=1), "invalid_job"),
    "reply_to-queue": (job(reply_to="{cfsign}:jobs"), "invalid_job"),
    "reply_to-other-namespace": (job(reply_to="{other}:reply:t"), "invalid_job"),
    "reply_to-prefix-only": (job(reply_to="{cfsign}:reply:"), "invalid_job"),
    "reply_to-without-braces": (job(reply_to="cfsign:reply:t"), "invalid_job"),
    "not-json": ("not json at all", "invalid_job"),
    "json-array": ('[{"id":"j1"}]', "invalid_job"),
    "json-string": ('"job"', "invalid_job"),
}


@pytest.mark.parametrize("line,code", DEAD_JOBS.values(), ids=DEAD_JOBS.keys())
def test_batch_sends_unanswerable_job_to_dead_list(batch, line, code):
    assert_dead_entry(batch(line)[0], code, line)


def test_batch_sends_job_over_64_kib_to_dead_list_with_invalid_job(batch):
    line = job(padding="p" * (64 * 1024))
    assert len(line.encode()) > 64 * 1024
    entry = batch(line)[0]
    assert_dead_entry(entry, "invalid_job", line)
    assert len(entry["job"].encode()) <= 1024


def test_batch_dead_entry_cuts_long_job_on_a_character_boundary(batch):
    line = "x" * 1023 + "\u20ac" * 10  # not JSON; the euro sign's 3 bytes straddle the 1 KiB cut
    entry = batch(line)[0]
    assert_dead_entry(entry, "invalid_job", line)
    assert "\ufffd" not in entry["job"]


def test_batch_dead_entry_shows_bytes_that_are_not_utf8_as_replacement_characters(cfsign_bin, rsa_key):
    result = subprocess.run(
        [str(cfsign_bin), "sign-batch", "--key-id", KEY_ID, "--private-key", rsa_key],
        input=b"\xff\xfe{not a job}\n", capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry["error"]["code"] == "invalid_job"
    assert entry["job"] == "\ufffd\ufffd{not a job}"


def test_batch_answers_url_over_8_kib_with_invalid_url(batch):
    url = URL + "/" + "a" * (8193 - len(URL) - 1)
    assert len(url) == 8193
    assert_error_reply(batch(job(url=url))[0], "invalid_url")


def test_batch_reads_job_of_exactly_64_kib(batch):
    line = job()
    line = job(padding="p" * (64 * 1024 - len(line) - len(',"padding":""')))
    assert len(line.encode()) == 64 * 1024
    reply = batch(line)[0]
    assert reply.get("ok") is True, reply


def test_batch_answers_each_job_in_order_after_bad_ones(batch):
    lines = [job(id="a"), "garbage", job(id="b", url=URL + "#x"), job(id="c", output="cookies")]
    replies = batch(*lines)
    assert replies[0]["id"] == "a" and replies[0]["ok"] is True
    assert_dead_entry(replies[1], "invalid_job", "garbage")
    assert_error_reply(replies[2], "invalid_url", "b")
    assert replies[3]["id"] == "c" and "cookies" in replies[3]
