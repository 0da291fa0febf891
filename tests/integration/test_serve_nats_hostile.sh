#!/usr/bin/env bash
# inferd serve --nats against hostile or careless clients (docs/nats.md
# "Safety"): a reply subject that is not an inbox (the worker's own control
# subject) gets no events and unloads nothing; a message over --max-body is
# refused before it is parsed, on the reply inbox only; a second request
# with the requestId of one in flight is refused on its reply inbox and
# does not touch the running stream; control requests need the token when
# --nats-control-token is set. After each, a good request succeeds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nats_lib.sh"

prompt="Once upon a time"
slow="$INFERD_FIXTURES/models/small-q8_0.gguf"
subj=worker.w-h.inference
good() { good_after "$subj" "$1"; }

expect_error 2 "--nats-control-token: it is empty" serve -m "$model" --nats nats://127.0.0.1:1 \
    --nats-control-token ""
expect_error 2 "--nats-inbox-prefix: '>' must be" serve -m "$model" --nats nats://127.0.0.1:1 \
    --nats-inbox-prefix '>'

nats_start
serve_start -m "$model" -m "$slow" --alias stories260K --alias slow -t 1 -np 2 --max-body 4096 \
    --nats "$nats_url" --worker-id w-h --nats-control-token s3cret
serve_wait_ready
wait_until 30 nats_state_is "$url" registering || wait_until 30 nats_state_is "$url" ready ||
    fail "the worker did not connect: $(cat "$tmp/serve.log")"
good "start"

# ---- a reply subject that is the worker's own control subject ----
ctl infer "$subj" "{\"requestId\":\"deputy-1\",\"prompt\":\"$prompt\",\"maxTokens\":4,\"temperature\":0}" \
    --reply-to worker.w-h.models.unload
ok "reply worker.w-h.models.unload: events on response.{requestId} only" \
    '.response.end.type == "done" and .response.tokens == 4'
ctl request worker.w-h.models.list '{"token":"s3cret"}'
ok "the model is still loaded" '.ok and .data.ok and .data.models[0].loaded'
status_of "$url"
ok "/v1/status worker.nats.bad_reply counts it" '.worker.nats.bad_reply == 1' "$tmp/status.json"
grep -q "reply subject 'worker.w-h.models.unload', not an inbox" "$tmp/serve.log" ||
    fail "no warning for the reply subject: $(tail -5 "$tmp/serve.log")"
good "a control-subject reply"

# ---- too large: refused before parsing, on the reply inbox only ----
big=$(printf 'x%.0s' $(seq 1 5000))
ctl infer "$subj" "{\"requestId\":\"big-1\",\"prompt\":\"$big\"}" --reply --no-response \
    --watch-responses --settle-ms 300
ok "a message over --max-body: bad_request on the reply inbox, requestId null (not parsed)" \
    '.reply.end.type == "error" and .reply.end.code == "bad_request" and .reply.end.requestId == null and
     (.reply.end.error | test("too large: [0-9]+ bytes, over the limit of 4096")) and .stray == []'
good "a message over the limit"

# ---- over the parse budget: refused by the scan, on the reply inbox ----
deep="$(printf '[%.0s' {1..65})1$(printf ']%.0s' {1..65})"
ctl infer "$subj" "{\"requestId\":\"deep-1\",\"prompt\":$deep}" --reply --no-response \
    --watch-responses --settle-ms 300
ok "nesting deeper than 64: bad_request on the reply inbox" \
    '.reply.end.code == "bad_request" and (.reply.end.error | test("nests deeper than 64")) and
     .stray == []'
good "a message over the parse budget"

# ---- a duplicate requestId in flight ----
# The first runs long (a larger model, 600 tokens past any end of text).
NATS_URL="$nats_url" node "$node_dir/nats_controller.mjs" infer worker.w-h.inference \
    "{\"requestId\":\"dup-1\",\"modelId\":\"slow\",\"prompt\":\"Hello\",\"maxTokens\":600,\"ignoreEos\":true,\"temperature\":0}" \
    --timeout-ms 120000 >"$tmp/first.json" 2>"$tmp/first.err" &
first=$!
for _ in $(seq 1 200); do
    status_of "$url"
    jq -e '.models[1].slots_busy >= 1' "$tmp/status.json" >/dev/null 2>&1 && break
    sleep 0.05
done
ctl infer "$subj" "{\"requestId\":\"dup-1\",\"prompt\":\"other\",\"maxTokens\":3}" --reply --settle-ms 300
cp "$tmp/out" "$tmp/second.json"
ok "the second request with requestId dup-1: conflict on its reply inbox" \
    '.reply.end.type == "error" and .reply.end.code == "conflict" and .reply.end.requestId == "dup-1" and
     (.reply.end.error | test("already in flight"))' "$tmp/second.json"
wait "$first" || fail "the first dup-1 request's client failed: $(cat "$tmp/first.err")"
ok "the running dup-1 stream: 600 tokens then done, nothing of the second in it" \
    '.response.end.type == "done" and .response.tokens == 600 and .response.ends == 1 and
     .response.indicesOk and ([.response.events[] | select(.type == "error")] | length == 0)' \
    "$tmp/first.json"
status_of "$url"
ok "/v1/status worker.nats.duplicate counts it" '.worker.nats.duplicate == 1' "$tmp/status.json"
good "a duplicate requestId"

# ---- control needs the token ----
ctl request worker.w-h.models.unload '{"modelId":"stories260K"}'
ok "models.unload without the token: unauthorized" \
    '.data.ok == false and .data.code == "unauthorized"'
ctl request worker.w-h.models.list '{"token":"wrong"}'
ok "models.list with a wrong token: unauthorized" '.data.code == "unauthorized"'
ctl request worker.w-h.models.list '{"token":"s3cret"}'
ok "the model is still loaded" '.data.ok and .data.models[0].loaded'
good "control without the token"
serve_stop
tcheck "SIGTERM: exit 0 (got $serve_rc)" test "$serve_rc" == 0
nats_finish
