"""Issue 19: the worker's spans, exported over OTLP/HTTP to a real receiver (cfsign_support's
OTLPReceiver decodes each ExportTraceServiceRequest with opentelemetry-proto).

A job's span is a child of its `traceparent` (a root without one), carries the messaging
attributes, the queue wait, the key's id, algorithm and holder, and the error code of a refused
job; replies never carry trace context back, and no span holds a signature, a policy, a URL or
key material. A dead collector costs jobs nothing: spans are dropped and counted. A job signed by
a KMS key (real moto_server) gets the same span, its signing covering the KMS round trip; a job
held for an unavailable key (KMS stopped, a SoftHSM token removed) keeps one span from its first
try to its reply, its retries as events.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from .cfsign_system import OMIT, collect, job, push, store_keygroup, wait_until
from cfsign_support import closed_port, metric_value
# The KMS and HSM suites' own helpers (moto_server with real KMS keys, a SoftHSM token), shared.
from .test_kms import create_key, group, own_moto  # noqa: F401 (`own_moto` is a fixture)
from .test_pkcs11 import MODULE as SOFTHSM_MODULE, token, token_folder  # noqa: F401 (`token` is a fixture)

needs_moto = pytest.mark.skipif(shutil.which("moto_server") is None, reason="moto_server is not installed (scripts/setup)")
needs_softhsm = pytest.mark.skipif(not (os.path.exists(SOFTHSM_MODULE) and shutil.which("softhsm2-util")),
                                   reason="softhsm2 is not installed (scripts/setup installs it)")

DEADLINE = 20
SPAN_KIND_CONSUMER = 5
STATUS_UNSET, STATUS_ERROR = 0, 2


def traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def start_traced(workers, redis_server, ns, test_keys, env, http=False):
    """A worker with the RSA key (active) exporting to `env`'s endpoint."""
    store_keygroup(redis_server.client(), ns, [test_keys["rsa"], test_keys["ec"]])
    worker = workers.start(redis_server, ns, env=env, http=http)
    return worker


def reply_key(ns: str, name: str) -> str:
    return f"{{{ns}}}:reply:{name}"


def test_a_job_with_a_traceparent_gets_a_child_span_with_messaging_queue_and_key_attributes(
        workers, redis_server, ns, test_keys, otlp_receiver):
    start_traced(workers, redis_server, ns, test_keys, otlp_receiver.env())
    r = redis_server.client()
    parent, trace_id, parent_id = traceparent()
    enqueued = int(time.time() * 1000) - 1500  # it "waited" 1.5 s before being pushed
    push(r, ns, [job(ns, "traced-1", reply="traced", traceparent=parent, tracestate="vendor=opaque",
                     enqueued_at_ms=enqueued)])
    [reply] = collect(r, reply_key(ns, "traced"), 1, DEADLINE)
    assert reply["ok"] is True, reply

    [span] = otlp_receiver.wait_for(lambda s: s.trace_id == trace_id, what=f"a span of trace {trace_id}")
    assert span.parent_span_id == parent_id
    assert span.span_id not in ("", "0" * 16)
    assert span.kind == SPAN_KIND_CONSUMER
    assert span.name == f"process {{{ns}}}:jobs"
    a = span.attributes
    assert a["messaging.system"] == "redis"
    assert a["messaging.destination.name"] == f"{{{ns}}}:jobs"
    assert a["messaging.operation"] == "process"
    assert a["messaging.message.id"] == "traced-1"
    assert 1500 <= a["cfsign.queue_wait_ms"] < 1500 + DEADLINE * 1000
    assert a["cfsign.key.id"] == test_keys["rsa"].key_id
    assert a["cfsign.key.location"] == "memory"
    assert a["cfsign.key.algorithm"] == "RSA-2048"
    assert a["cfsign.outcome"] == "ok"
    assert span.status_code == STATUS_UNSET
    assert span.resource.get("service.name") == "cfsign-worker"
    # One span per job, covering that job: parse → signed → reply pushed, in order.
    names = [name for name, _ in span.events]
    assert names == ["parsed", "signed", "reply pushed"], span.events
    times = [span.start_ns] + [t for _, t in span.events] + [span.end_ns]
    assert times == sorted(times), times
    assert otlp_receiver.requests[0][0] == "/v1/traces"
    assert otlp_receiver.requests[0][1].startswith("application/x-protobuf")


def test_refused_jobs_get_error_status_with_the_contracts_code(workers, redis_server, ns, test_keys, otlp_receiver):
    start_traced(workers, redis_server, ns, test_keys, otlp_receiver.env())
    r = redis_server.client()
    parsed_refusal, trace_a, _ = traceparent()
    signer_refusal, trace_b, _ = traceparent()
    push(r, ns, [
        job(ns, "no-url", reply="refused", url=OMIT, traceparent=parsed_refusal),  # missing_field at parse
        job(ns, "too-long", reply="refused", expires_in=10 * 365 * 86400, traceparent=signer_refusal),  # ttl_too_long
    ])
    replies = {x["id"]: x for x in collect(r, reply_key(ns, "refused"), 2, DEADLINE)}
    codes = {i: replies[i]["error"]["code"] for i in replies}
    spans = {s.trace_id: s for s in otlp_receiver.wait_for(lambda s: s.trace_id in (trace_a, trace_b), count=2)}
    for trace_id, job_id in ((trace_a, "no-url"), (trace_b, "too-long")):
        span = spans[trace_id]
        assert span.status_code == STATUS_ERROR
        assert span.status_message == codes[job_id]
        assert span.attributes["error.type"] == codes[job_id]
        assert span.attributes["cfsign.outcome"] == "error"
    assert codes == {"no-url": "missing_field", "too-long": "ttl_too_long"}


def test_a_job_without_or_with_a_malformed_traceparent_gets_a_root_span(workers, redis_server, ns, test_keys, otlp_receiver):
    start_traced(workers, redis_server, ns, test_keys, otlp_receiver.env())
    r = redis_server.client()
    bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"  # all-zero trace id: ignored
    push(r, ns, [job(ns, "plain", reply="root"), job(ns, "malformed", reply="root", traceparent=bad)])
    replies = collect(r, reply_key(ns, "root"), 2, DEADLINE)
    assert all(x["ok"] for x in replies), replies
    spans = otlp_receiver.wait_for(lambda s: s.attributes.get("messaging.message.id") in ("plain", "malformed"), count=2)
    for span in spans:
        assert span.parent_span_id == ""
        assert len(span.trace_id) == 32 and span.trace_id != "0" * 32
    assert spans[0].trace_id != spans[1].trace_id


def test_no_trace_context_in_replies_and_no_secret_in_spans(workers, redis_server, ns, test_keys, otlp_receiver):
    start_traced(workers, redis_server, ns, test_keys, otlp_receiver.env())
    r = redis_server.client()
    parent, trace_id, parent_id = traceparent()
    url = "https://d111111abcdef8.cloudfront.net/private/secret-report.pdf?token=do-not-trace"
    push(r, ns, [
        job(ns, "s-url", reply="secret", url=url, traceparent=parent, tracestate="vendor=opaque"),
        job(ns, "s-cookies", reply="secret", output="cookies", ip="10.1.2.3/32", traceparent=parent),
    ])
    raw = wait_until(lambda: r.llen(reply_key(ns, "secret")) >= 2 and r.lrange(reply_key(ns, "secret"), 0, -1), DEADLINE,
                     what="two replies")
    for body in raw:
        for needle in (trace_id, parent_id, "traceparent", "tracestate", "opaque"):
            assert needle.encode() not in body, (needle, body)
    replies = [json.loads(x) for x in raw]
    assert all(x["ok"] for x in replies), replies
    otlp_receiver.wait_for(lambda s: s.trace_id == trace_id, count=2)

    secrets_seen: list[bytes] = []
    for reply in replies:
        if "url" in reply:
            query = parse_qs(urlsplit(reply["url"]).query)
            secrets_seen += [query["Signature"][0].encode(), reply["url"].encode()]
            secrets_seen += [base64.b64decode(query["Signature"][0].replace("-", "+").replace("_", "=").replace("~", "/"))]
        for name, value in (reply.get("cookies") or {}).items():
            if name != "CloudFront-Key-Pair-Id":
                secrets_seen.append(value.encode())
    secrets_seen += [url.encode(), b"token=do-not-trace", b"secret-report", b"10.1.2.3", b"Statement", b"DateLessThan"]
    pem = test_keys["rsa"].path.read_text()
    secrets_seen += [line.encode() for line in pem.splitlines() if line and not line.startswith("-----")]
    bodies = b"".join(otlp_receiver.bodies)
    leaked = [s[:40] for s in secrets_seen if s and s in bodies]
    assert not leaked, f"span export carries {leaked}"


def test_a_dead_collector_does_not_hold_jobs_and_dropped_spans_are_counted(workers, redis_server, ns, test_keys):
    dead = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "500", "OTEL_BSP_EXPORT_TIMEOUT": "1000"}
    worker = start_traced(workers, redis_server, ns, test_keys, dead, http=True)
    r = redis_server.client()
    n = 500
    push(r, ns, [job(ns, f"d{i}", reply="dead-collector", traceparent=traceparent()[0]) for i in range(n)])
    replies = collect(r, reply_key(ns, "dead-collector"), n, DEADLINE)
    assert len(replies) == n and all(x["ok"] for x in replies)

    def dropped() -> float:
        return metric_value(worker.metrics(), "cfsign_spans_dropped_total") or 0

    wait_until(lambda: dropped() > 0, 30, what="cfsign_spans_dropped_total > 0 with a dead collector")
    assert worker.alive()
    # And the worker keeps answering while its exporter keeps failing.
    push(r, ns, [job(ns, "after", reply="after")])
    assert collect(r, reply_key(ns, "after"), 1, DEADLINE)[0]["ok"] is True


def test_a_collector_that_answers_an_error_loses_that_batch_only_and_it_is_counted(
        workers, redis_server, ns, test_keys, otlp_receiver):
    otlp_receiver.status = 503
    worker = start_traced(workers, redis_server, ns, test_keys, otlp_receiver.env(), http=True)
    r = redis_server.client()
    push(r, ns, [job(ns, f"e{i}", reply="erroring") for i in range(5)])
    assert len(collect(r, reply_key(ns, "erroring"), 5, DEADLINE)) == 5
    wait_until(lambda: (metric_value(worker.metrics(), "cfsign_spans_dropped_total") or 0) >= 5, DEADLINE,
               what="the 5 spans the collector refused counted as dropped")
    assert "the collector answered 503" in worker.log()
    # The collector back: the next spans arrive (nothing was retried, so nothing arrives twice).
    otlp_receiver.status = 200
    parent, trace_id, _ = traceparent()
    push(r, ns, [job(ns, "recovered", reply="erroring", traceparent=parent)])
    collect(r, reply_key(ns, "erroring"), 1, DEADLINE)
    otlp_receiver.wait_for(lambda s: s.trace_id == trace_id)
    assert [s.attributes["messaging.message.id"] for s in otlp_receiver.received()] == ["recovered"]
    assert metric_value(worker.metrics(), "cfsign_spans_exported_total") == 1


def test_http_json_carries_the_same_span(workers, redis_server, ns, test_keys, otlp_receiver):
    start_traced(workers, redis_server, ns, test_keys, otlp_receiver.env(OTEL_EXPORTER_OTLP_PROTOCOL="http/json"))
    r = redis_server.client()
    parent, trace_id, parent_id = traceparent()
    push(r, ns, [job(ns, "json-1", reply="json", traceparent=parent, expires_in=10 * 365 * 86400)])  # refused: ttl_too_long
    collect(r, reply_key(ns, "json"), 1, DEADLINE)
    [span] = otlp_receiver.wait_for(lambda s: s.trace_id == trace_id)
    assert otlp_receiver.requests[0] == ("/v1/traces", "application/json")
    assert span.parent_span_id == parent_id and span.kind == SPAN_KIND_CONSUMER
    assert span.attributes["messaging.message.id"] == "json-1"
    assert span.status_code == STATUS_ERROR and span.status_message == "ttl_too_long"
    assert [name for name, _ in span.events] == ["parsed", "signed", "reply pushed"]
    assert span.resource["service.name"] == "cfsign-worker"


@pytest.mark.parametrize("example", ["python_producer.py", "redis_cli_producer.sh"])
def test_the_producer_examples_pass_traceparent_by_hand(example, workers, redis_server, ns, test_keys, otlp_receiver):
    import subprocess
    import sys
    from pathlib import Path

    start_traced(workers, redis_server, ns, test_keys, otlp_receiver.env())
    parent, trace_id, parent_id = traceparent()
    script = Path(__file__).resolve().parents[2] / "scripts" / "examples" / example
    url = "https://d111111abcdef8.cloudfront.net/invoices/traced-example.pdf"
    args = ([sys.executable, str(script), url, redis_server.url, ns] if example.endswith(".py")
            else ["bash", str(script), url, "127.0.0.1", str(redis_server.port), ns])
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                         env={**os.environ, "TRACEPARENT": parent})
    assert out.returncode == 0, out.stderr
    [span] = otlp_receiver.wait_for(lambda s: s.trace_id == trace_id, what=f"the span of {example}'s job")
    assert span.parent_span_id == parent_id


# --- keys held elsewhere: KMS (moto_server) and an HSM (SoftHSM) ----------------------------------

KMS_KEY_ID = "KKMSRSA0000001"


def start_kms_traced(workers, redis_server, ns, moto, key, tmp_path, otlp_receiver, **settings):
    """A worker signing with `key` (KMS, in moto) as its only key, exporting to the receiver."""
    redis_server.client().set(f"{{{ns}}}:keygroup", group([{"id": KMS_KEY_ID, "private_key_uri": key.uri}], KMS_KEY_ID))
    worker = workers.start(redis_server, ns, env={**moto.env(tmp_path, **settings), **otlp_receiver.env()})
    return worker


def event_times(span) -> dict[str, int]:
    return {name: t for name, t in span.events}


def retry_events(span) -> list[tuple[int, dict]]:
    return [(t, attrs) for (name, t), attrs in zip(span.events, span.event_attributes) if name == "retry"]


def only_span_of(otlp_receiver, trace_id: str, what: str):
    """The one span of `trace_id`, once the receiver has it, after a further export interval in
    which no second span of that trace may arrive (one span per job, not one per try)."""
    otlp_receiver.wait_for(lambda s: s.trace_id == trace_id, what=what)
    time.sleep(0.5)  # five times the test batch delay (OTEL_BSP_SCHEDULE_DELAY=100)
    spans = [s for s in otlp_receiver.received() if s.trace_id == trace_id]
    assert len(spans) == 1, [(s.name, s.events) for s in spans]
    return spans[0]


@needs_moto
def test_a_kms_signed_job_gets_the_same_span_with_the_kms_round_trip_inside_signing(
        workers, redis_server, ns, otlp_receiver, own_moto, tmp_path):
    m = own_moto
    key = create_key(m, "RSA_2048")
    start_kms_traced(workers, redis_server, ns, m, key, tmp_path, otlp_receiver,
                     CFSIGN_KMS_CALL_TIMEOUT="20", CFSIGN_KEY_UNAVAILABLE_AFTER="60")
    r = redis_server.client()
    parent, trace_id, parent_id = traceparent()
    push(r, ns, [job(ns, "kms-1", reply="kms", traceparent=parent)])
    [reply] = collect(r, reply_key(ns, "kms"), 1, DEADLINE)
    assert reply["ok"] is True, reply
    span = only_span_of(otlp_receiver, trace_id, "the KMS job's span")
    assert span.parent_span_id == parent_id and span.kind == SPAN_KIND_CONSUMER
    a = span.attributes
    assert (a["cfsign.key.id"], a["cfsign.key.location"], a["cfsign.key.algorithm"]) == (KMS_KEY_ID, "kms", "RSA-2048")
    assert a["cfsign.hash"] == "SHA256" and a["cfsign.outcome"] == "ok" and "cfsign.retries" not in a
    assert [name for name, _ in span.events] == ["parsed", "signed", "reply pushed"], span.events
    times = [span.start_ns] + [t for _, t in span.events] + [span.end_ns]
    assert times == sorted(times), times

    # KMS stopped for a second while the next job is signed: that second is inside parsed → signed.
    slow, slow_trace, _ = traceparent()
    m.proc.send_signal(signal.SIGSTOP)
    try:
        push(r, ns, [job(ns, "kms-2", reply="kms", traceparent=slow)])
        time.sleep(1.0)
    finally:
        m.proc.send_signal(signal.SIGCONT)
    [reply] = collect(r, reply_key(ns, "kms"), 1, DEADLINE)
    assert reply["ok"] is True, reply
    span = only_span_of(otlp_receiver, slow_trace, "the slow KMS job's span")
    e = event_times(span)
    assert e["signed"] - e["parsed"] >= 800_000_000, f"signing took {(e['signed'] - e['parsed']) / 1e6:.0f} ms, not the KMS wait"
    assert e["parsed"] - span.start_ns < 500_000_000 and span.end_ns >= e["reply pushed"] >= e["signed"]

    bodies = b"".join(otlp_receiver.bodies)
    signature = parse_qs(urlsplit(reply["url"]).query)["Signature"][0]
    for secret in (signature, key.arn, reply["url"], key.public_pem.decode().splitlines()[1]):
        assert secret.encode() not in bodies, f"span export carries {secret[:40]}"


@needs_moto
def test_a_job_retried_while_kms_is_stopped_has_one_span_from_first_try_to_reply_with_retry_events(
        workers, redis_server, ns, otlp_receiver, own_moto, tmp_path):
    m = own_moto
    key = create_key(m, "ECC_NIST_P256")
    start_kms_traced(workers, redis_server, ns, m, key, tmp_path, otlp_receiver,
                     CFSIGN_KMS_CALL_TIMEOUT="0.3", CFSIGN_KEY_UNAVAILABLE_AFTER="60")
    r = redis_server.client()
    parent, trace_id, parent_id = traceparent()
    m.proc.send_signal(signal.SIGSTOP)
    try:
        pushed = time.time_ns()
        push(r, ns, [job(ns, "held", reply="held", traceparent=parent)])
        time.sleep(2.0)  # several 0.3 s timeouts and backoffs
        assert r.llen(reply_key(ns, "held")) == 0, "answered while KMS was stopped"
    finally:
        m.proc.send_signal(signal.SIGCONT)
    [reply] = collect(r, reply_key(ns, "held"), 1, DEADLINE)
    assert reply["ok"] is True, reply
    span = only_span_of(otlp_receiver, trace_id, "the held job's span")
    assert span.parent_span_id == parent_id
    # From the first try (right after the push), not the last (after the 2 s pause).
    assert span.start_ns - pushed < 1_000_000_000 and span.end_ns - span.start_ns >= 1_800_000_000
    names = [name for name, _ in span.events]
    assert names[0] == "parsed" and names[-2:] == ["signed", "reply pushed"], names
    retries = retry_events(span)
    assert len(retries) >= 2 and len(retries) == len(names) - 3, span.events
    assert [a["cfsign.attempt"] for _, a in retries] == list(range(2, len(retries) + 2))
    assert all(a["error.type"] == "key_unavailable" for _, a in retries)
    assert span.attributes["cfsign.retries"] == len(retries)
    assert span.attributes["cfsign.outcome"] == "ok" and span.status_code == STATUS_UNSET
    times = [span.start_ns] + [t for _, t in span.events] + [span.end_ns]
    assert times == sorted(times), times


@needs_moto
def test_a_job_answered_key_unavailable_after_retries_has_one_error_span_over_the_whole_wait(
        workers, redis_server, ns, otlp_receiver, own_moto, tmp_path):
    m = own_moto
    key = create_key(m, "ECC_NIST_P256")
    start_kms_traced(workers, redis_server, ns, m, key, tmp_path, otlp_receiver,
                     CFSIGN_KMS_CALL_TIMEOUT="0.3", CFSIGN_KEY_UNAVAILABLE_AFTER="1.5")
    r = redis_server.client()
    parent, trace_id, _ = traceparent()
    m.proc.send_signal(signal.SIGSTOP)
    try:
        push(r, ns, [job(ns, "late", reply="late", traceparent=parent)])
        [reply] = collect(r, reply_key(ns, "late"), 1, DEADLINE)
    finally:
        m.proc.send_signal(signal.SIGCONT)
    assert reply["error"]["code"] == "key_unavailable", reply
    span = only_span_of(otlp_receiver, trace_id, "the refused job's span")
    assert span.status_code == STATUS_ERROR and span.status_message == "key_unavailable"
    assert span.attributes["cfsign.outcome"] == "error" and span.attributes["cfsign.retries"] >= 1
    assert span.end_ns - span.start_ns >= 1_400_000_000, "the span does not cover key_unavailable_after"


@needs_softhsm
def test_a_job_held_for_a_removed_hsm_token_has_one_span_across_its_retries(
        workers, redis_server, ns, otlp_receiver, token, test_keys):  # noqa: F811 (the `token` fixture)
    """The in-process path (Pipeline.retryUnavailable): the token goes, the held job is retried,
    and a rotation to a file key signs it; its one span ends with the key that signed."""
    rsa, ec_key = test_keys["rsa"], test_keys["ec"]
    r = redis_server.client()
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 1, "active": rsa.key_id, "keys": [
        {"id": rsa.key_id, "private_key_uri": token.uri("KRSA")}]}))
    worker = workers.start(redis_server, ns, env={**token.env, "CFSIGN_KEY_UNAVAILABLE_AFTER": "60", **otlp_receiver.env()})
    token_folder(token).rename(token.conf.parent / "token-away")
    parent, trace_id, _ = traceparent()
    push(r, ns, [job(ns, "hsm-held", reply="hsm", traceparent=parent)])
    time.sleep(1.5)
    assert r.llen(reply_key(ns, "hsm")) == 0, "answered while the token was gone"
    r.set(f"{{{ns}}}:keygroup", json.dumps({"version": 2, "active": ec_key.key_id, "keys": [
        {"id": ec_key.key_id, "private_key_file": str(ec_key.path)}]}))
    r.publish(f"{{{ns}}}:keygroup:changed", "2")
    [reply] = collect(r, reply_key(ns, "hsm"), 1, DEADLINE)
    assert reply["ok"] is True and reply["key_id"] == ec_key.key_id, reply
    span = only_span_of(otlp_receiver, trace_id, "the held HSM job's span")
    assert span.end_ns - span.start_ns >= 1_400_000_000
    assert len(retry_events(span)) >= 2 and span.attributes["cfsign.retries"] == len(retry_events(span))
    a = span.attributes
    assert (a["cfsign.key.id"], a["cfsign.key.location"], a["cfsign.outcome"]) == (ec_key.key_id, "memory", "ok")
    times = [span.start_ns] + [t for _, t in span.events] + [span.end_ns]
    assert times == sorted(times), times


def test_the_endpoints_userinfo_is_sent_as_basic_auth_and_never_logged(workers, redis_server, ns, test_keys, otlp_receiver):
    endpoint = f"http://cfsign:do-not-log@127.0.0.1:{otlp_receiver.port}"
    worker = start_traced(workers, redis_server, ns, test_keys, otlp_receiver.env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint))
    log = wait_until(lambda: "exporting traces" in worker.log() and worker.log(), 10, what="the exporting line")
    assert f"***@127.0.0.1:{otlp_receiver.port}" in log, log[-2000:]
    r = redis_server.client()
    parent, trace_id, _ = traceparent()
    push(r, ns, [job(ns, "with-auth", reply="auth", traceparent=parent)])
    collect(r, reply_key(ns, "auth"), 1, DEADLINE)
    otlp_receiver.wait_for(lambda s: s.trace_id == trace_id)
    assert otlp_receiver.authorizations[0] == "Basic " + base64.b64encode(b"cfsign:do-not-log").decode()
    assert "do-not-log" not in worker.log(), worker.log()[-2000:]


def test_a_collector_that_never_answers_holds_a_drain_about_one_timeout_at_most(workers, redis_server, ns, test_keys):
    # Accepts connections (the kernel's backlog) and never reads or answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}", "OTEL_BSP_SCHEDULE_DELAY": "100",
               "OTEL_EXPORTER_OTLP_TIMEOUT": "2000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10"}
        worker = start_traced(workers, redis_server, ns, test_keys, env)
        r = redis_server.client()
        push(r, ns, [job(ns, f"s{i}", reply="silent", traceparent=traceparent()[0]) for i in range(200)])
        assert len(collect(r, reply_key(ns, "silent"), 200, DEADLINE)) == 200
        # 20 batches queued behind a collector that never answers: a drain waits for it about one
        # 2 s timeout (plus a request already in flight), not one per batch (40 s).
        worker.send(signal.SIGTERM)
        assert worker.wait(15) == 0, worker.log()[-3000:]
    finally:
        silent.close()
