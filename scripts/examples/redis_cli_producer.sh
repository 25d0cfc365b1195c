#!/usr/bin/env bash
# A cfsign producer with nothing but redis-cli: push a job, wait for its reply, print it.
# Usage: redis_cli_producer.sh URL [HOST] [PORT] [NAMESPACE]
set -euo pipefail
url="$1"; host="${2:-127.0.0.1}"; port="${3:-6379}"; ns="${4:-cfsign}"
id="sh-$$-$RANDOM"
reply_to="{$ns}:reply:$id"
redis-cli -h "$host" -p "$port" LPUSH "{$ns}:jobs" \
  "{\"id\":\"$id\",\"reply_to\":\"$reply_to\",\"url\":\"$url\",\"expires_in\":3600}" >/dev/null
reply="$(redis-cli -h "$host" -p "$port" --raw BLPOP "$reply_to" 10 | tail -n 1)"
[ -n "$reply" ] || { echo "no worker answered within 10 s" >&2; exit 1; }
echo "$reply"   # {"id":...,"ok":true,"url":"https://...","key_id":...,"expires_at":...,"policy":"canned"}
