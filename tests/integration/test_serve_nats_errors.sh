#!/usr/bin/env bash
# inferd serve --nats with bad input (docs/nats.md "Inference requests" and
# "Control"): each malformed message gets its precise error event (code,
# message, param; requestId null on the reply subject when the requestId
# cannot be read, nothing at all without a reply subject, counted in
# worker.nats.malformed), and a good request still succeeds after each one.
# Also: a message over --max-body, a prompt longer than the context, a full
# queue (overloaded), timeoutMs, and bad control messages. The worker must
# still be alive at the end. Prints one ok / not ok line per check.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nats_lib.sh"

prompt="Once upon a time"
subj=worker.w-err.inference

malformed_count() {
    status_of "$url" && jq -e '.worker.nats.malformed' "$tmp/status.json"
}

good() { good_after "$subj" "$1"; }

# bad LABEL CODE REGEX PARAM PAYLOAD: PAYLOAD (requestId readable) gets one
# error event on response.{requestId}: CODE, a message matching REGEX
# (case-insensitive) and PARAM ("" when none is expected); no token event.
bad() {
    local label=$1 code=$2 re=$3 param=$4 payload=$5
    ctl infer "$subj" "$payload"
    ok "$label: $code${param:+ (param $param)}, message matches /$re/" \
        '.response | .tokens == 0 and .ends == 1 and .afterEnd == 0 and .ridOk and
         .end.type == "error" and .end.code == $code and (.end.error | test($re; "i")) and
         (if $param == "" then true else .end.param == $param end)' \
        "$tmp/out" --arg code "$code" --arg re "$re" --arg param "$param"
    good "$label"
}

# unreadable LABEL REGEX PAYLOAD: the requestId cannot be read: with a reply
# subject the error goes there with requestId null, nothing goes to
# response.>, and worker.nats.malformed counts it.
unreadable() {
    local label=$1 re=$2 payload=$3 before after
    before=$(malformed_count)
    ctl infer "$subj" "$payload" --reply --watch-responses --settle-ms 300
    ok "$label: bad_request on the reply subject with requestId null, message matches /$re/" \
        '.reply | .ends == 1 and .afterEnd == 0 and .tokens == 0 and .end.type == "error" and
         .end.requestId == null and .end.code == "bad_request" and (.end.error | test($re; "i"))' \
        "$tmp/out" --arg re "$re"
    ok "$label: nothing published on response.>" '.stray == [] and (.response == null or .response.events == [])'
    after=$(malformed_count)
    tcheck "$label: worker.nats.malformed counts it ($before -> $after)" test "$after" == $((before + 1))
    good "$label"
}

nats_start
monitor_start
serve_start -m "$model" -t 1 -np 1 --queue 1 --max-body 4096 --nats "$nats_url" --worker-id w-err \
    --heartbeat-ms 1000
serve_wait_ready
wait_until 30 nats_state_is "$url" ready || fail "the worker is not ready: $(cat "$tmp/serve.log")"
good "start"
ok "/v1/status worker.nats.malformed starts at 0" '.worker.nats.malformed == 0' "$tmp/status.json"

# ---- messages whose requestId cannot be read ----
unreadable "not JSON, with a reply subject" 'json' 'this is not JSON'
unreadable "JSON without requestId" 'requestId' "{\"prompt\":\"$prompt\"}"
unreadable "requestId a number" 'requestId' "{\"requestId\":42,\"prompt\":\"$prompt\"}"
unreadable "requestId \"a b\"" 'requestId' "{\"requestId\":\"a b\",\"prompt\":\"$prompt\"}"
unreadable "requestId \"x.*\"" 'requestId' "{\"requestId\":\"x.*\",\"prompt\":\"$prompt\"}"
unreadable "requestId \"x.>\"" 'requestId' "{\"requestId\":\"x.>\",\"prompt\":\"$prompt\"}"
unreadable "requestId \"a..b\"" 'requestId' "{\"requestId\":\"a..b\",\"prompt\":\"$prompt\"}"
unreadable "requestId \"\"" 'requestId' "{\"requestId\":\"\",\"prompt\":\"$prompt\"}"
long_rid=$(printf 'r%.0s' $(seq 1 129))
unreadable "requestId of 129 characters" 'requestId' "{\"requestId\":\"$long_rid\",\"prompt\":\"$prompt\"}"
unreadable "a JSON array" 'object' '[1,2]'

# Not JSON and no reply subject: no event anywhere, logged and counted.
# (Malformed-message warnings are written at most once a second: after a
# quiet second this one is.)
sleep 1.2
before=$(malformed_count)
log_lines=$(grep -c 'malformed' "$tmp/serve.log" || true)
ctl infer "$subj" 'still not JSON' --watch-responses --settle-ms 500
ok "not JSON without a reply subject: no event" '.stray == [] and .response == null and .reply == null'
after=$(malformed_count)
tcheck "not JSON without a reply subject: worker.nats.malformed counts it ($before -> $after)" \
    test "$after" == $((before + 1))
tcheck "not JSON without a reply subject: logged" \
    test "$(grep -c 'malformed' "$tmp/serve.log" || true)" -gt "$log_lines"
good "not JSON without a reply subject"

# ---- readable requestId, bad fields: the error goes to response.{requestId} ----
bad "maxTokens \"ten\"" bad_request 'maxTokens' maxTokens \
    "{\"requestId\":\"e-1\",\"prompt\":\"$prompt\",\"maxTokens\":\"ten\"}"
bad "maxTokens -1" bad_request 'maxTokens' maxTokens \
    "{\"requestId\":\"e-2\",\"prompt\":\"$prompt\",\"maxTokens\":-1}"
bad "temperature 5" bad_request 'temperature' temperature \
    "{\"requestId\":\"e-3\",\"prompt\":\"$prompt\",\"temperature\":5}"
bad "topP -1" bad_request 'topP' topP \
    "{\"requestId\":\"e-4\",\"prompt\":\"$prompt\",\"topP\":-1}"
bad "topK -1" bad_request 'topK' topK \
    "{\"requestId\":\"e-5\",\"prompt\":\"$prompt\",\"topK\":-1}"
bad "stop [1]" bad_request 'stop' stop \
    "{\"requestId\":\"e-6\",\"prompt\":\"$prompt\",\"stop\":[1]}"
bad "a stop string of 257 bytes" bad_request 'stop' stop \
    "{\"requestId\":\"e-7\",\"prompt\":\"$prompt\",\"stop\":[\"$(printf 'x%.0s' $(seq 257))\"]}"
bad "stop of 17 strings" bad_request 'stop' stop \
    "{\"requestId\":\"e-7b\",\"prompt\":\"$prompt\",\"stop\":$(jq -nc '[range(17) | "s\(.)"]')}"
bad "timeoutMs 0" bad_request 'timeoutMs' timeoutMs \
    "{\"requestId\":\"e-8\",\"prompt\":\"$prompt\",\"timeoutMs\":0}"
bad "priority \"urgent\"" bad_request 'priority' priority \
    "{\"requestId\":\"e-9\",\"prompt\":\"$prompt\",\"priority\":\"urgent\"}"
bad "no prompt and no messages" bad_request 'prompt' "" \
    '{"requestId":"e-10","maxTokens":4}'
bad "both prompt and messages" bad_request 'prompt|messages' "" \
    "{\"requestId\":\"e-11\",\"prompt\":\"$prompt\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
bad "messages not an array" bad_request 'messages' messages \
    '{"requestId":"e-12","messages":"hi"}'
bad "prompt a number" bad_request 'prompt' prompt \
    '{"requestId":"e-13","prompt":7}'
bad "unknown modelId" not_found 'nope' "" \
    "{\"requestId\":\"e-14\",\"modelId\":\"nope\",\"prompt\":\"$prompt\"}"

# Over --max-body 4096: refused before it is parsed, so its requestId is not
# read; the error goes to the reply inbox only (test_serve_nats_hostile has
# more of this).
big=$(printf 'x%.0s' $(seq 1 5000))
before=$(malformed_count)
ctl infer "$subj" "{\"requestId\":\"e-big\",\"prompt\":\"$big\"}" --reply --no-response \
    --watch-responses --settle-ms 300
ok "a message over --max-body 4096: bad_request on the reply subject, requestId null" \
    '.reply.end.type == "error" and .reply.end.code == "bad_request" and .reply.end.requestId == null and
     (.reply.end.error | test("too large: [0-9]+ bytes, over the limit of 4096")) and .stray == []'
tcheck "a message over --max-body: worker.nats.malformed counts it" test "$(malformed_count)" == $((before + 1))
good "a message over --max-body"

# A prompt longer than the context (stories260K: 128 tokens).
long_prompt=$(printf 'Once upon a time %.0s' $(seq 1 40))
bad "a prompt longer than the context" bad_request 'context|too long' "" \
    "{\"requestId\":\"e-ctx\",\"prompt\":\"$long_prompt\",\"maxTokens\":4}"

# timeoutMs 1 on a long request: ends with a timeout error, not done.
ctl infer "$subj" "{\"requestId\":\"e-to\",\"prompt\":\"$prompt\",\"maxTokens\":120,\"timeoutMs\":1}"
ok "timeoutMs 1 on a long request: code timeout" \
    '.response | .ends == 1 and .afterEnd == 0 and .indicesOk and .ridOk and .end.type == "error" and
     .end.code == "timeout" and (.end.error | type == "string")'
good "timeoutMs 1"

# ---- a full queue: -np 1 --queue 1, 10 long requests at once ----
ctl many 10 "$subj" "{\"requestId\":\"q\",\"prompt\":\"$prompt\",\"maxTokens\":120,\"temperature\":0}"
ok "queue full: every request ends (done or error), none unanswered" \
    '.unanswered == 0 and (.results | all(.ends == 1))'
ok "queue full: some get overloaded, the rest complete" \
    '.errors == {"overloaded": (.n - .done)} and .done >= 1 and .errors.overloaded >= 1'
ok "queue full: the overloaded ones get no token event" \
    '[.results[] | select(.type == "error") | .tokens] | all(. == 0)'
good "a full queue"

# ---- control subjects with bad input ----
ctl request worker.w-err.models.load '{}'
ok "models.load {}: bad_request" '.ok and .data.ok == false and .data.code == "bad_request" and (.data.error | test("modelId"))'
ctl request worker.w-err.models.load 'not JSON'
ok "models.load not JSON: bad_request" '.ok and .data.ok == false and .data.code == "bad_request"'
ctl request worker.w-err.models.unload '{"modelId":5}'
ok "models.unload {\"modelId\":5}: bad_request" '.ok and .data.ok == false and .data.code == "bad_request"'
ctl request worker.w-err.models.unload '{"modelId":"nope"}'
ok "models.unload nope: not_found" '.ok and .data.ok == false and .data.code == "not_found"'
ctl request worker.w-err.models.list '[]'
ok "models.list [] (not an object): bad_request" '.ok and .data.ok == false and .data.code == "bad_request"'
ctl request worker.w-err.models.list '{}'
ok "models.list still answers" '.ok and .data.ok == true and (.data.models[0].loaded == true)'
good "bad control messages"

# ---- $SRV stats count the errors ----
ctl request '$SRV.STATS.inferd.w-err' ''
ok "\$SRV stats: the inference endpoint counts errors and keeps the last one" \
    '.ok and (.data.endpoints[] | select(.subject == "worker.w-err.inference") |
     .num_errors > 0 and .num_errors < .num_requests and (.last_error | type == "string" and length > 0))'
ok "\$SRV stats: the models.load endpoint counts its bad requests" \
    '.data.endpoints[] | select(.subject == "worker.w-err.models.load") | .num_errors >= 2 and .num_requests >= 2'

# ---- the worker is still alive and serving both doors ----
tcheck "the worker process is alive" kill -0 "$serve_pid"
still_serves
echo "ok - HTTP still serves"
tcheck "worker.nats.state is still ready" nats_state_is "$url" ready
serve_stop
tcheck "the worker exits 0 on SIGTERM" test "$serve_rc" == 0
monitor_stop
nats_finish
