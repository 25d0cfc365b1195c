#!/usr/bin/env python3
"""A cfsign producer in a few lines of redis-py: push a job, wait for its reply.

Usage: python_producer.py URL [REDIS_URL] [NAMESPACE]
Prints the signed URL; exits 1 with the error code on an error reply or a timeout.
With TRACEPARENT (and TRACESTATE) set, the job carries that W3C trace context, so the worker's span
is a child of yours; with OpenTelemetry, pass your span's: propagate.inject(carrier) fills both.
"""
import json, os, sys, uuid
import redis

url = sys.argv[1]
r = redis.Redis.from_url(sys.argv[2] if len(sys.argv) > 2 else "redis://127.0.0.1:6379")
ns = sys.argv[3] if len(sys.argv) > 3 else "cfsign"

reply_to = f"{{{ns}}}:reply:example-{uuid.uuid4().hex}"   # one reply list per client
job_id = uuid.uuid4().hex
job = {"id": job_id, "reply_to": reply_to, "url": url, "expires_in": 3600}
for field in ("traceparent", "tracestate"):           # optional: the caller's trace context
    if os.environ.get(field.upper()):
        job[field] = os.environ[field.upper()]
r.lpush(f"{{{ns}}}:jobs", json.dumps(job))

while True:
    got = r.blpop(reply_to, timeout=10)
    if got is None:
        sys.exit(f"no worker answered within 10 s; is a worker running on namespace {ns}?")
    reply = json.loads(got[1])
    if reply["id"] != job_id:
        continue  # a duplicate or a stale reply: delivery is at least once, match by id
    if not reply["ok"]:
        sys.exit(f"{reply['error']['code']}: {reply['error']['message']}")
    print(reply["url"])
    break
