#!/usr/bin/env bash
# inferd serve under 1000 concurrent connections on 127.0.0.1: every request
# gets a complete 200 or 503 (none hangs, none is lost), the server still
# answers afterwards, and its RSS stays bounded: a second round of 1000 does
# not grow it by more than a small margin over the first.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${INFERD_HTTP_LOAD:?INFERD_HTTP_LOAD must name the inferd-http-load binary}"

# Under AddressSanitizer freed memory waits in a quarantine (256 MiB by
# default) before reuse, which would read as growth: keep it small so the
# bound below means the same in every build. (Ignored without ASan.)
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8"
serve_start -m "$model" -t 1 -np 4 --queue 64 --max-connections 1100 --max-client-connections 1100
serve_wait_ready

rss() { curl -s "$url/v1/status" | jq .memory.rss_bytes; }

round() { # round N: 1000 requests at once, JSON summary in $tmp/load$N
    "$INFERD_HTTP_LOAD" --url "$url/v1/completions" --concurrency 1000 --requests 1000 \
        --body '{"prompt":"Once upon a time","max_tokens":8,"temperature":0}' \
        --timeout-s 120 --json >"$tmp/load$1"
    jq -e '.sent == 1000 and .completed == 1000' "$tmp/load$1" >/dev/null ||
        fail "round $1: not every request completed: $(cat "$tmp/load$1")"
    jq -e '(.errors | to_entries | map(.value) | add) == 0' "$tmp/load$1" >/dev/null ||
        fail "round $1: errors: $(cat "$tmp/load$1")"
    jq -e '(.status | keys - ["200", "503"]) == [] and (.status["200"] // 0) > 0' \
        "$tmp/load$1" >/dev/null || fail "round $1: statuses: $(jq -c .status "$tmp/load$1")"
}

rss0=$(rss)
round 1
rss1=$(rss)
round 2
rss2=$(rss)
still_serves
expect_http 200 GET /v1/status
check '.http.active == 1 and .models[0].slots_busy == 0 and .models[0].queue_depth == 0'

echo "rss: start $rss0, after round 1 $rss1, after round 2 $rss2" >&2
for n in 1 2; do
    jq -c '{status, requests_per_s, latency_ms}' "$tmp/load$n" >&2
done
# Bounded: the second round reuses what the first grew (thread stacks,
# allocator arenas); 64 MiB of slack covers allocator noise.
(( rss2 <= rss1 + 64 * 1024 * 1024 )) || fail "RSS grew from $rss1 to $rss2 in the second round"
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
echo "ok"
