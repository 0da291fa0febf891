#!/usr/bin/env bash
# inferd serve under load and over its life: /health while loading, a full
# queue (503 + Retry-After at once), deadlines (504, or an SSE error once
# streaming began), a client that hangs up (its request is cancelled and its
# slot freed), /metrics through promtool, and SIGTERM draining (running
# requests finish within the grace period, new ones get 503, exit 0).
#
# Long requests run on small-q8_0.gguf (random weights, 2048-token context)
# with ignore_eos: ~1500 tokens keep one slot busy for seconds. The script
# waits on /v1/status for each state it needs instead of sleeping.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

slow="$INFERD_FIXTURES/models/small-q8_0.gguf"
long='"prompt":"Hello","max_tokens":1500,"ignore_eos":true,"temperature":0'
medium='"prompt":"Hello","max_tokens":600,"ignore_eos":true,"temperature":0'

# ---- /health is 503 while the model loads ----
# A FIFO as the model file: the load blocks opening it until a writer comes.
mkfifo "$tmp/loading.gguf"
serve_start -m "$tmp/loading.gguf"
expect_http 503 GET /health
check '.status == "loading"'
expect_http 400 GET /v2/health/ready
expect_http 200 GET /v2/health/live
# A writer that closes at once: the load fails, and serve exits 1 saying why.
exec 3>"$tmp/loading.gguf"
exec 3>&-
rc=0
wait "$serve_pid" || rc=$?
serve_pid=
[[ "$rc" == 1 ]] || fail "a failed load exited $rc, expected 1"
grep -q "model 'loading'" "$tmp/serve.log" || fail "the load error does not name the model: $(cat "$tmp/serve.log")"

# ---- one slot, a queue of one ----
# A grace period long enough for the medium request below to finish even
# in a sanitizer build (ThreadSanitizer runs it several times slower).
serve_start -m "$slow" -t 1 -np 1 --queue 1 --drain-grace 300000
serve_wait_ready

curl -sN -o "$tmp/a" "$url/v1/completions" -d "{$long,\"stream\":true}" &
pid_a=$!
wait_status '.models[0].slots_busy == 1'
curl -s -o "$tmp/b" "$url/v1/completions" -d "{$long}" &
pid_b=$!
wait_status '.models[0].queue_depth == 1'

# The queue is full: 503 at once, with Retry-After.
code=$(curl -s -D "$tmp/headers" -o "$tmp/out" -w '%{http_code}' "$url/v1/completions" \
    -d '{"prompt":"Hello","max_tokens":4}')
[[ "$code" == 503 ]] || fail "full queue answered $code: $(cat "$tmp/out")"
check '.error.code == "overloaded" and .error.type == "server_error"'
grep -qi '^Retry-After: 1' "$tmp/headers" || fail "no Retry-After: $(cat "$tmp/headers")"

# A client that hangs up mid-stream: its request is cancelled, the queued one runs.
kill "$pid_a" 2>/dev/null || true
wait "$pid_a" 2>/dev/null || true
wait_status '.models[0].requests.cancelled == 1 and .models[0].queue_depth == 0 and .models[0].slots_busy == 1'
# And a non-streamed client that hangs up as well: the slot is free.
kill "$pid_b" 2>/dev/null || true
wait "$pid_b" 2>/dev/null || true
wait_status '.models[0].requests.cancelled == 2 and .models[0].slots_busy == 0'
still_serves

# ---- deadlines ----
expect_http 504 POST /v1/completions "{$long,\"timeout_ms\":300}"
check '.error.code == "timeout" and .error.type == "server_error"'
# Streaming began: the deadline comes as an SSE error event, then [DONE].
code=$(curl -sN -o "$tmp/sse" -w '%{http_code}' "$url/v1/chat/completions" \
    -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":1500,"ignore_eos":true,"stream":true,"timeout_ms":300}')
[[ "$code" == 200 ]] || fail "streamed deadline: status $code"
grep '^data: {"error"' "$tmp/sse" | sed 's/^data: //' | jq -e '.error.code == "timeout"' >/dev/null ||
    fail "no timeout error event in the stream: $(tail -c 400 "$tmp/sse")"
[[ "$(tail -n 2 "$tmp/sse" | head -n 1)" == "data: [DONE]" ]] || fail "stream does not end with [DONE]"
wait_status '.models[0].requests.timeout == 2 and .models[0].slots_busy == 0'

# ---- metrics ----
expect_http 200 GET /metrics
promtool check metrics <"$tmp/out" >"$tmp/promtool" 2>&1 || fail "promtool: $(cat "$tmp/promtool")"
grep -q '^inferd_requests_total{model="small-q8_0",outcome="cancelled"} 2$' "$tmp/out" ||
    fail "cancelled count: $(grep requests_total "$tmp/out")"
# The non-streamed client hung up while its connection waited (suspended):
# the HTTP guard saw it.
grep -q '^inferd_http_client_hangups_total [12]$' "$tmp/out" ||
    fail "hang-ups: $(grep hangups "$tmp/out")"
grep -q '^inferd_requests_total{model="small-q8_0",outcome="timeout"} 2$' "$tmp/out" ||
    fail "timeout count: $(grep requests_total "$tmp/out")"
grep -q '^inferd_requests_total{model="small-q8_0",outcome="rejected_overloaded"} 1$' "$tmp/out" ||
    fail "overloaded count: $(grep requests_total "$tmp/out")"
grep -q '^inferd_http_requests_total{endpoint="/v1/completions",code="503"} 1$' "$tmp/out" ||
    fail "http 503 count: $(grep http_requests_total "$tmp/out")"
grep -q '^inferd_request_duration_seconds_bucket{model="small-q8_0",le="+Inf"} [1-9]' "$tmp/out" ||
    fail "latency histogram: $(grep duration "$tmp/out")"
grep -q '^process_resident_memory_bytes [1-9]' "$tmp/out" || fail "no RSS in /metrics"
expect_http 200 GET /v1/status
check '.memory.rss_bytes > 0 and (.cpu_percent | type) == "number" and .models[0].loaded'
check '.models[0].latency_ms.p50 > 0 and .throughput.requests_total >= 1'

# ---- SIGTERM drains: the running request finishes, new ones get 503 ----
curl -sN -o "$tmp/f" "$url/v1/completions" -d "{$medium,\"stream\":true}" &
pid_f=$!
wait_status '.models[0].slots_busy == 1'
kill -TERM "$serve_pid"
for i in $(seq 1 600); do
    [[ "$(http GET /health)" == 503 ]] && break
    sleep 0.05
done
check '.status == "draining"'
expect_http 503 POST /v1/completions '{"prompt":"Hello","max_tokens":4}'
check '.error.code == "unavailable"'
wait "$pid_f" || fail "the draining stream's client failed"
rc=0
wait "$serve_pid" || rc=$?
serve_pid=
[[ "$rc" == 0 ]] || fail "serve exited $rc after the drain: $(tail -5 "$tmp/serve.log")"
grep '^data: {' "$tmp/f" | sed 's/^data: //' | jq -s -e \
    'map(select(.choices|length>0)) | last | .choices[0].finish_reason == "length"' >/dev/null ||
    fail "the running request did not finish during the drain: $(tail -c 300 "$tmp/f")"

# ---- a grace period that ends: the running request gets 503 ----
serve_start -m "$slow" -t 1 -np 1 --drain-grace 200
serve_wait_ready
curl -s -o "$tmp/g" -w '%{http_code}' "$url/v1/completions" -d "{$long}" >"$tmp/g_code" &
pid_g=$!
wait_status '.models[0].slots_busy == 1'
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc after a short grace"
wait "$pid_g" || true
[[ "$(cat "$tmp/g_code")" == 503 ]] || fail "request cut by the grace: status $(cat "$tmp/g_code")"
jq -e '.error.code == "unavailable" and (.error.message | test("grace"))' "$tmp/g" >/dev/null ||
    fail "grace error: $(cat "$tmp/g")"
echo "ok"
