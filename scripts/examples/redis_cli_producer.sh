#!/usr/bin/env bash
# A cfsign producer with nothing but redis-cli: push a job, wait for its reply, print it.
# Usage: [TRACEPARENT=00-<trace id>-<span id>-01] redis_cli_producer.sh URL [HOST] [PORT] [NAMESPACE]
# With TRACEPARENT set, the job carries it, so the worker's span joins that trace.
set -euo pipefail
url="$1"; host="${2:-127.0.0.1}"; port="${3:-6379}"; ns="${4:-cfsign}"
id="sh-$$-$RANDOM"
reply_to="{$ns}:reply:$id"
trace=""
[ -z "${TRACEPARENT:-}" ] || trace=",\"traceparent\":\"$TRACEPARENT\""
redis-cli -h "$host" -p "$port" LPUSH "{$ns}:jobs" \
  "{\"id\":\"$id\",\"reply_to\":\"$reply_to\",\"url\":\"$url\",\"expires_in\":3600$trace}" >/dev/null
reply="$(redis-cli -h "$host" -p "$port" --raw BLPOP "$reply_to" 10 | tail -n 1)"
[ -n "$reply" ] || { echo "no worker answered within 10 s" >&2; exit 1; }
echo "$reply"   # {"id":...,"ok":true,"url":"https://...","key_id":...,"expires_at":...,"policy":"canned"}
