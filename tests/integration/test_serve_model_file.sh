#!/usr/bin/env bash
# inferd serve when a served model's file changes on disk: truncated (while
# idle, and while a request runs), overwritten in place by another model,
# replaced by an atomic rename (of a file that does not load, then of one
# that does), and truncated under --no-mmap. The worker never dies or
# answers from bad weights: requests get a clear error (exact JSON) or the
# right text, /health answers, and once a good file is back the next
# completion has the expected text. Needs $INFERD and $INFERD_FIXTURES.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
unset INFERD_API_KEY

other="$INFERD_FIXTURES/models/random-dim256-f16.gguf"
slow="$INFERD_FIXTURES/models/small-q8_0.gguf"
live="$tmp/live.gguf"
big="$tmp/big.gguf"
req='"model":"live","prompt":"Once upon a time","max_tokens":8,"temperature":0,"seed":1'

# complete: a completion of the live model; its text in $text.
complete() {
    expect_http 200 POST /v1/completions "{$req}"
    text=$(jq -r '.choices[0].text' "$tmp/out")
}

# still_alive: the process runs and /health answers.
still_alive() {
    kill -0 "$serve_pid" 2>/dev/null || fail "inferd serve died: $(tail -n 5 "$tmp/serve.log")"
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url/health")
    [[ "$code" == 200 || "$code" == 503 ]] || fail "/health answered $code"
}

# ---- the expected texts ----
cp "$other" "$live"
serve_start -m "$live" -t 1
serve_wait_ready
complete
text_other=$text
serve_stop

cp "$model" "$live"
cp "$slow" "$big"
serve_start -m "$live" -m "$big" -t 1
serve_wait_ready
complete
text_good=$text
[[ -n "$text_good" && "$text_good" != "$text_other" ]] || fail "the two models answer alike: '$text_good'"

# ---- (a) truncated while idle: a clear 503, then the good file serves ----
truncate -s 0 "$live"
expect_http 503 POST /v1/completions "{$req}"
jq -e --arg live "$live" '
    (keys == ["error"]) and (.error | keys == ["code", "message", "param", "type"])
    and .error.code == "unavailable" and .error.type == "server_error" and .error.param == null
    and .error.message == "model '"'live'"' cannot be loaded from '"'"'\($live)'"'"': gguf: truncated at offset 0 reading header magic (file size 0)"' \
    "$tmp/out" >/dev/null || fail "truncated model: $(cat "$tmp/out")"
still_alive
grep -q "level=warn comp=registry .*model file '$live' changed on disk while loaded (truncated)" \
    "$tmp/serve.log" || fail "no log line names the file: $(tail -n 5 "$tmp/serve.log")"
cp "$model" "$live"
complete
[[ "$text" == "$text_good" ]] || fail "after the restore: '$text', expected '$text_good'"

# ---- (a) truncated while a request runs: its stream ends with the error ----
curl -sN -o "$tmp/sse" "$url/v1/completions" \
    -d '{"model":"big","prompt":"Hello","max_tokens":1500,"ignore_eos":true,"temperature":0,"stream":true}' &
pid_stream=$!
wait_status '.models[1].slots_busy == 1'
truncate -s 0 "$big"
wait "$pid_stream" || fail "the streaming client failed"
grep '^data: {"error"' "$tmp/sse" | sed 's/^data: //' | jq -e --arg big "$big" '
    .error.code == "io_error" and .error.type == "server_error"
    and (.error.message == "model file '"'"'\($big)'"'"' changed on disk while loaded (truncated: a read of its weights went past the new end); reload needed"
         or .error.message == "model file '"'"'\($big)'"'"' changed on disk while loaded (truncated); reload needed")' \
    >/dev/null || fail "no file error in the stream: $(tail -c 600 "$tmp/sse")"
[[ "$(tail -n 2 "$tmp/sse" | head -n 1)" == "data: [DONE]" ]] || fail "stream does not end with [DONE]"
[[ $(grep -c "level=error comp=sched .*model file '$big' changed on disk" "$tmp/serve.log") == 1 ]] ||
    fail "expected one error line naming the file: $(grep "comp=sched" "$tmp/serve.log" | tail -n 3)"
still_alive
expect_http 503 POST /v1/completions '{"model":"big","prompt":"Hello","max_tokens":2}'
check '.error.code == "unavailable" and (.error.message | contains("cannot be loaded from"))'
cp "$slow" "$big"
expect_http 200 POST /v1/completions '{"model":"big","prompt":"Hello","max_tokens":2}'
complete
[[ "$text" == "$text_good" ]] || fail "live changed: '$text'"

# ---- (b) another, larger model copied over it in place ----
cp "$other" "$live"
status=$(http POST /v1/completions "{$req}")
if [[ "$status" == 200 ]]; then
    text=$(jq -r '.choices[0].text' "$tmp/out")
    [[ "$text" == "$text_other" ]] || fail "after cp over: '$text', expected '$text_other'"
else
    [[ "$status" == 500 || "$status" == 503 ]] || fail "after cp over: status $status"
    check '.error.message | contains("changed on disk") or contains("cannot be loaded")'
fi
still_alive
complete
[[ "$text" == "$text_other" ]] || fail "after cp over: '$text', expected '$text_other'"
cp "$model" "$live"
complete
[[ "$text" == "$text_good" ]] || fail "after cp back: '$text', expected '$text_good'"

# ---- (c) atomic renames: one that does not load keeps the old model ----
head -c 4096 "$other" >"$tmp/next.gguf"
mv "$tmp/next.gguf" "$live"
complete
[[ "$text" == "$text_good" ]] || fail "after a bad rename: '$text', expected '$text_good'"
grep -q "level=warn comp=registry .*the new file at '$live' does not load" "$tmp/serve.log" ||
    fail "the bad new file is not logged"
cp "$other" "$tmp/next.gguf"
mv "$tmp/next.gguf" "$live"
complete
[[ "$text" == "$text_other" ]] || fail "after a good rename: '$text', expected '$text_other'"
cp "$model" "$tmp/next.gguf"
mv "$tmp/next.gguf" "$live"
complete
[[ "$text" == "$text_good" ]] || fail "after renaming back: '$text', expected '$text_good'"
still_alive
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"

# ---- (d) --no-mmap: truncation does not reach the loaded weights ----
serve_start -m "$live" -t 1 --no-mmap
serve_wait_ready
complete
[[ "$text" == "$text_good" ]] || fail "--no-mmap: '$text', expected '$text_good'"
truncate -s 0 "$live"
complete
[[ "$text" == "$text_good" ]] || fail "--no-mmap after truncate: '$text', expected '$text_good'"
complete
[[ "$text" == "$text_good" ]] || fail "--no-mmap after truncate (2): '$text'"
cp "$model" "$live"
complete
[[ "$text" == "$text_good" ]] || fail "--no-mmap after restore: '$text'"
still_alive
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
echo "ok"
