#!/usr/bin/env bash
# inferd serve --nats (docs/nats.md) against a real nats-server, driven by the
# official `nats` npm client (tests/node/nats_controller.mjs): registration and
# its fields, heartbeats and their metrics under load, greedy inference on the
# worker's subject, on inference.{model} and with a reply inbox, chat, the
# control subjects, $SRV discovery, and a drain on SIGTERM that finishes the
# running request before the "offline" heartbeat. Prints one ok / not ok line
# per check and fails if any is not ok.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nats_lib.sh"

prompt="Once upon a time"
gen16=$("$INFERD" generate -m "$model" -p "$prompt" -n 16 --temp 0 -t 1 --json 2>/dev/null)
exp16=$(jq -r .text <<<"$gen16")
fr16=$(jq -r .finish_reason <<<"$gen16")
np16=$(jq '.prompt_ids | length' <<<"$gen16")
ng16=$(jq '.ids | length' <<<"$gen16")
[[ -n "$exp16" && "$ng16" -gt 0 ]] || fail "inferd generate gave no reference text: $gen16"

# greedy_checks LABEL STREAM: the 16-token greedy completion of $prompt in
# $tmp/out's STREAM ("response" or "reply"), as inferd generate gives it.
greedy_checks() {
    local label=$1 s=$2
    ok "$label: token events index 0..n-1, then exactly one done" \
        '.[$s] | .tokens > 0 and .indicesOk and .tokenShapeOk and .ridOk and .end.type == "done" and
         .ends == 1 and .afterEnd == 0' "$tmp/out" --arg s "$s"
    ok "$label: the tokens concatenated == done.text == inferd generate" \
        '.[$s] | .concat == $exp and .end.text == $exp' "$tmp/out" --arg s "$s" --arg exp "$exp16"
    ok "$label: done.totalTokens == the number of token events" \
        '.[$s] | .end.totalTokens == .tokens and .tokens == $ng' "$tmp/out" --arg s "$s" --argjson ng "$ng16"
    ok "$label: done has finishReason, promptTokens, latencyMs, ttftMs, seed, modelId" \
        '.[$s].end | .finishReason == $fr and .promptTokens == $np and (.latencyMs | type == "number") and
         .latencyMs >= 0 and (.ttftMs | type == "number") and .ttftMs >= 0 and .ttftMs <= .latencyMs and
         (.seed | type == "number") and .modelId == "stories260K"' \
        "$tmp/out" --arg s "$s" --arg fr "$fr16" --argjson np "$np16"
}

greedy() { # greedy SUBJECT RID [infer options]: the 16-token greedy request
    local subject=$1 rid=$2
    shift 2
    ctl infer "$subject" "{\"requestId\":\"$rid\",\"prompt\":\"$prompt\",\"maxTokens\":16,\"temperature\":0}" "$@"
}

hb_count() { jq -s 'map(select(.subject == "worker.heartbeat")) | length' "$monitor_log"; }
last_seq() { jq -s 'last | .seq' "$monitor_log"; }

# ---- 1. registration: the controller listens before the worker starts ----
nats_start
monitor_start
serve_start -m "$model" -t 1 -np 2 --nats "$nats_url" --heartbeat-ms 300 --worker-id w-test --worker-tags a,b
serve_wait_ready
expect_http 200 GET /v1/status
version=$(jq -r .version "$tmp/out")
wait_until 30 mon 'any(.[]; .subject == "worker.register")' ||
    fail "no worker.register within 30 s: $(cat "$tmp/serve.log")"
jq -s 'map(select(.subject == "worker.register")) | first' "$monitor_log" >"$tmp/reg.json"
ok "register: workerId, hostname, ip, port, version, tags, status" \
    '.data | .workerId == "w-test" and (.hostname | type == "string" and length > 0) and .ip == "127.0.0.1" and
     .port == $port and .version == $v and .tags == ["a", "b"] and .status == "registering"' \
    "$tmp/reg.json" --argjson port "$port" --arg v "$version"
ok "register: timestamp is ms since the epoch, near now" \
    '(.data.timestamp | type == "number") and ((.data.timestamp - .t) | fabs) < 60000' "$tmp/reg.json"
ok "register: hardware (cpuModel, cpuCores >= 1, isa, memory, gpus)" \
    '.data.hardware | (.cpuModel | type == "string") and (.cpuCores | type == "number" and . >= 1 and floor == .) and
     (.isa | type == "array" and all(type == "string")) and .memoryTotalGB > 0 and .memoryAvailableGB > 0 and
     .memoryAvailableGB <= .memoryTotalGB and
     (.gpus | type == "array" and all(has("index") and (.model | type == "string")))' "$tmp/reg.json"
ok "register: capabilities (maxConcurrent 2, availableMemoryGB, models, loadableModels, sharedMemory)" \
    '.data.capabilities | .maxConcurrent == 2 and .availableMemoryGB > 0 and (.models | index("stories260K")) and
     (.loadableModels | index("stories260K")) and
     (.sharedMemory | .shm == true and (.memfd | type == "boolean") and .shmTotalBytes > 0 and
      .shmFreeBytes <= .shmTotalBytes)' "$tmp/reg.json"

# ---- 2. heartbeats every ~300 ms; ready after the acknowledgement ----
wait_until 30 mon '[.[] | select(.subject == "worker.heartbeat" and .data.state == "ready")] | length >= 5' ||
    fail "no 5 ready heartbeats within 30 s: $(tail -5 "$monitor_log")"
cp "$monitor_log" "$tmp/mon.json"
ok "heartbeat: fields and types" \
    '[.[] | select(.subject == "worker.heartbeat") | .data] | length >= 5 and all(
       .workerId == "w-test" and .tags == ["a", "b"] and (.timestamp | type == "number") and
       (.status | IN("ready", "degraded", "draining")) and (.state | type == "string") and
       (.modelsLoaded | index("stories260K")) and
       (.metrics | ([.cpuUsagePercent, .memoryUsedGB, .activeRequests, .queueDepth, .totalRequestsHandled,
                     .avgLatencyMs, .p50LatencyMs, .p95LatencyMs, .p99LatencyMs, .tokensPerSecond]
                    | all(type == "number" and . >= 0))))' "$tmp/mon.json" -s
ok "heartbeat: not ready before the registration was acknowledged; ready (status and state) after" \
    '(map(.subject) | index("worker.register")) as $r |
     (.[:$r] | map(select(.subject == "worker.heartbeat")) | all(.data.state != "ready")) and
     (.[$r:] | any(.subject == "worker.heartbeat" and .data.state == "ready" and .data.status == "ready"))' \
    "$tmp/mon.json" -s
ok "heartbeat: interval near --heartbeat-ms 300 (median of the timestamps' gaps in 100..2500 ms)" \
    '[.[] | select(.subject == "worker.heartbeat") | .data.timestamp] as $ts |
     [range(1; $ts | length) | $ts[.] - $ts[. - 1]] | sort | .[length / 2 | floor] | . >= 100 and . <= 2500' \
    "$tmp/mon.json" -s
tcheck "/v1/status worker.nats.state is ready" wait_until 30 nats_state_is "$url" ready

# ---- 3. greedy request on worker.w-test.inference ----
greedy worker.w-test.inference g-1
greedy_checks "worker.w-test.inference" response

# ---- 4. inference.stories260K (queue group), then with a reply inbox ----
greedy inference.stories260K g-2
greedy_checks "inference.stories260K" response
greedy inference.stories260K g-3 --reply
greedy_checks "inference.stories260K, response.{requestId}" response
greedy_checks "inference.stories260K, reply inbox" reply
ok "the reply inbox gets the same events as response.{requestId}" \
    '[.response.events[] | del(.seq, .t)] == [.reply.events[] | del(.seq, .t)]'

# ---- 5. chat: the same content as /v1/chat/completions ----
msgs='[{"role":"system","content":"You tell stories."},{"role":"user","content":"Tell me about a cat."}]'
expect_http 200 POST /v1/chat/completions "{\"messages\":$msgs,\"max_tokens\":16,\"temperature\":0}"
chat_content=$(jq -r '.choices[0].message.content' "$tmp/out")
chat_finish=$(jq -r '.choices[0].finish_reason' "$tmp/out")
ctl infer worker.w-test.inference "{\"requestId\":\"chat-1\",\"messages\":$msgs,\"maxTokens\":16,\"temperature\":0}"
ok "messages: done.text == the HTTP chat completion's content" \
    '.response.end.type == "done" and .response.end.text == $c and .response.concat == $c and
     .response.end.finishReason == $fr' "$tmp/out" --arg c "$chat_content" --arg fr "$chat_finish"

# ---- 6. heartbeat metrics under load ----
# Requests so far: 4 over NATS and 1 over HTTP.
before_seq=$(last_seq)
ctl many 20 inference.stories260K "{\"requestId\":\"load\",\"prompt\":\"$prompt\",\"maxTokens\":64,\"temperature\":0}"
ok "load: 20 concurrent requests on inference.stories260K all done" \
    '.done == 20 and .unanswered == 0 and (.results | all(.indicesOk and .ends == 1 and .tokens == .end.totalTokens))'
ok "load: the 20 greedy answers are identical" '[.results[].end.text] | unique | length == 1'
after_seq=$(last_seq)
wait_until 30 mon 'any(.[]; .subject == "worker.heartbeat" and .data.metrics.totalRequestsHandled >= 25)' || true
wait_until 10 mon '[.[] | select(.subject == "worker.heartbeat" and .seq > $s)] | length >= 3' \
    --argjson s "$after_seq" || true
cp "$monitor_log" "$tmp/mon.json"
ok "load: totalRequestsHandled reaches 25 (20 + 4 NATS + 1 HTTP) and stays there" \
    '[.[] | select(.subject == "worker.heartbeat") | .data.metrics.totalRequestsHandled] as $n |
     ($n | last) == 25 and ($n | . == sort)' "$tmp/mon.json" -s
ok "load: a heartbeat after the load started shows activeRequests > 0 or tokensPerSecond > 0" \
    'any(.[]; .subject == "worker.heartbeat" and .seq > $s and
         (.data.metrics.activeRequests > 0 or .data.metrics.tokensPerSecond > 0))' \
    "$tmp/mon.json" -s --argjson s "$before_seq"
ok "load: cpuUsagePercent > 0 in some heartbeat; memoryUsedGB > 0 in all" \
    '[.[] | select(.subject == "worker.heartbeat") | .data.metrics] |
     any(.cpuUsagePercent > 0) and all(.memoryUsedGB > 0)' "$tmp/mon.json" -s
ok "load: latency figures after the load (avg > 0, 0 < p50 <= p95 <= p99), idle again" \
    '[.[] | select(.subject == "worker.heartbeat")] | last | .data.metrics |
     .avgLatencyMs > 0 and .p50LatencyMs > 0 and .p50LatencyMs <= .p95LatencyMs and
     .p95LatencyMs <= .p99LatencyMs and .activeRequests == 0 and .queueDepth == 0' "$tmp/mon.json" -s

# ---- 7. control subjects ----
ctl request worker.w-test.models.list '{}'
ok "models.list" \
    '.ok and .data.ok == true and (.data.models | length == 1) and (.data.models[0] | .id == "stories260K" and
     .loaded == true and .state == "ready" and .path == $path and .subject == "inference.stories260K")' \
    "$tmp/out" --arg path "$model"
seq_unload=$(last_seq)
ctl request worker.w-test.models.unload '{"modelId":"stories260K"}' --timeout-ms 30000
ok "models.unload" '.ok and .data.ok == true and .data.modelId == "stories260K" and .data.loaded == false'
ctl request worker.w-test.models.list '{}'
ok "models.list after unload: loaded false" \
    '.data.ok == true and (.data.models[] | select(.id == "stories260K") | .loaded == false)'
ctl request inference.stories260K "{\"requestId\":\"unloaded-1\",\"prompt\":\"$prompt\",\"maxTokens\":4}" \
    --timeout-ms 1000
ok "after unload, inference.stories260K has no responder (request fails)" '.ok == false and (.code | IN("503", "TIMEOUT"))'
tcheck "after unload, a heartbeat's modelsLoaded lacks stories260K" wait_until 10 mon \
    'any(.[]; .subject == "worker.heartbeat" and .seq > $s and (.data.modelsLoaded | index("stories260K") | not))' \
    --argjson s "$seq_unload"
ctl request worker.w-test.models.load '{"modelId":"stories260K"}' --timeout-ms 30000
ok "models.load" '.ok and .data.ok == true and .data.modelId == "stories260K" and .data.loaded == true'
greedy inference.stories260K g-4
greedy_checks "inference.stories260K after models.load" response
ctl request worker.w-test.models.load '{"modelId":"nope"}'
ok "models.load nope: ok false, not_found" \
    '.ok and .data.ok == false and .data.code == "not_found" and (.data.error | test("nope"))'
# A request on the worker's own subject loads an unloaded model on demand.
ctl request worker.w-test.models.unload '{"modelId":"stories260K"}' --timeout-ms 30000
ok "models.unload again" '.ok and .data.loaded == false'
greedy worker.w-test.inference g-5
greedy_checks "worker.w-test.inference loads an unloaded model on demand" response
ctl request worker.w-test.models.list '{}'
ok "models.list after the on-demand load: loaded and subscribed again" \
    '.data.models[] | select(.id == "stories260K") | .loaded == true and .subject == "inference.stories260K"'
greedy inference.stories260K g-6
greedy_checks "inference.stories260K after the on-demand load" response
ctl request worker.w-test.models.load '{"modelId":"stories260K"}' --timeout-ms 30000
ok "models.load of a loaded model" '.ok and .data.ok == true and .data.loaded == true'
greedy inference.stories260K g-7
greedy_checks "inference.stories260K after on-demand load + models.load" response

# ---- 8. $SRV discovery ----
ctl srv inferd w-test
cp "$tmp/out" "$tmp/srv1.json"
ok "\$SRV ping (Services client): inferd / w-test" \
    '.ping | type == "array" and length == 1 and (.[0] | .type == "io.nats.micro.v1.ping_response" and
     .name == "inferd" and .id == "w-test" and .version == $v and .metadata.workerId == "w-test")' \
    "$tmp/srv1.json" --arg v "$version"
ok "\$SRV info: description and endpoints (worker subject, inference.stories260K in queue group inferd)" \
    '.info | length == 1 and (.[0] | .type == "io.nats.micro.v1.info_response" and .name == "inferd" and
     .id == "w-test" and (.description | type == "string") and (.endpoints | type == "array") and
     any(.endpoints[]; .subject == "worker.w-test.inference" and (.name | type == "string")) and
     any(.endpoints[]; .subject == "inference.stories260K" and .queue_group == "inferd"))' "$tmp/srv1.json"
ok "\$SRV stats: started (RFC 3339) and per-endpoint counters" \
    '.stats | length == 1 and (.[0] | .type == "io.nats.micro.v1.stats_response" and .id == "w-test" and
     (.started | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")) and
     (.endpoints | length > 0 and all((.num_requests, .num_errors, .processing_time, .average_processing_time)
      | type == "number")) and
     any(.endpoints[]; .subject == "worker.w-test.inference" and .num_requests >= 3))' "$tmp/srv1.json"
ctl srv
ok "\$SRV ping without a name finds w-test" 'any(.ping[]; .name == "inferd" and .id == "w-test")'
ctl request '$SRV.PING.inferd.w-test' ''
ok "raw \$SRV.PING.inferd.w-test" \
    '.ok and (.data | .type == "io.nats.micro.v1.ping_response" and .name == "inferd" and .id == "w-test")'
ctl request '$SRV.INFO.inferd' ''
ok "raw \$SRV.INFO.inferd" '.ok and .data.type == "io.nats.micro.v1.info_response" and .data.id == "w-test"'
ctl request '$SRV.STATS' ''
ok "raw \$SRV.STATS" '.ok and .data.type == "io.nats.micro.v1.stats_response" and .data.id == "w-test"'
for i in 1 2 3; do
    ctl infer worker.w-test.inference "{\"requestId\":\"srv-$i\",\"prompt\":\"$prompt\",\"maxTokens\":4}"
done
ctl srv inferd w-test
ok "\$SRV stats: num_requests of worker.w-test.inference grew by 3 or more" \
    '($a[0].stats[0].endpoints[] | select(.subject == "worker.w-test.inference") | .num_requests) as $before |
     (.stats[0].endpoints[] | select(.subject == "worker.w-test.inference") | .num_requests) >= $before + 3' \
    "$tmp/out" --slurpfile a "$tmp/srv1.json"

# ---- sampling fields: seed, sessionId, stop, modelId ----
sampled="{\"requestId\":\"RID\",\"modelId\":\"stories260K\",\"prompt\":\"$prompt\",\"maxTokens\":24,\"temperature\":0.9,\"topP\":0.95,\"topK\":20,\"seed\":7,\"sessionId\":\"s-1\",\"priority\":\"high\"}"
ctl infer worker.w-test.inference "${sampled//RID/seed-1}"
cp "$tmp/out" "$tmp/seed1.json"
ok "seed 7: done.seed == 7, sessionId echoed, modelId, tokens == text" \
    '.response | .end.type == "done" and .end.seed == 7 and .end.sessionId == "s-1" and
     .end.modelId == "stories260K" and .concat == .end.text and .indicesOk' "$tmp/seed1.json"
ctl infer inference.stories260K "${sampled//RID/seed-2}"
ok "seed 7 again (other subject): the same text" \
    '.response.end.type == "done" and .response.end.text == $a[0].response.end.text' "$tmp/out" \
    --slurpfile a "$tmp/seed1.json"
# A stop string taken from the greedy text: generation stops before it, it
# is not in the output, and the tokens still add up to done.text.
stop_str=$(cut -c 14-20 <<<"$exp16")
ctl infer worker.w-test.inference \
    "$(jq -nc --arg p "$prompt" --arg s "$stop_str" '{requestId: "stop-1", prompt: $p, maxTokens: 16, temperature: 0, stop: [$s]}')"
ok "stop [\"$stop_str\"]: finishReason stop, text == the greedy text up to the stop string" \
    '.response | .end.type == "done" and .end.finishReason == "stop" and .concat == .end.text and
     .indicesOk and .end.text == ($exp | split($s)[0])' "$tmp/out" --arg exp "$exp16" --arg s "$stop_str"

# ---- 9. SIGTERM while a long request runs ----
gen100=$("$INFERD" generate -m "$model" -p "$prompt" -n 100 --temp 0 -t 1 --json 2>/dev/null | jq -r .text)
ctl infer worker.w-test.inference "{\"requestId\":\"drain-1\",\"prompt\":\"$prompt\",\"maxTokens\":100,\"temperature\":0}" \
    --kill-on-first-token "$serve_pid" --watch-heartbeats
serve_rc=0
wait "$serve_pid" || serve_rc=$?
serve_pid=
ok "SIGTERM: sent on the first token; the request still ends with done, the same greedy text" \
    '.killSeq != null and .response.end.type == "done" and .response.indicesOk and .response.ends == 1 and
     .response.end.text == $exp and .response.end.totalTokens == .response.tokens' "$tmp/out" --arg exp "$gen100"
ok "SIGTERM: then a heartbeat with status offline arrives" \
    '.response.end.seq as $d | any(.heartbeats[]; .data.status == "offline" and .seq > $d and
     .data.workerId == "w-test")'
ok "SIGTERM: no heartbeat after the offline one" \
    '(.heartbeats | map(.data.status) | index("offline")) as $i | $i != null and ($i == (.heartbeats | length) - 1)'
echo "# note: $(jq '.killSeq as $k | [.response.events[] | select(.type == "token" and .seq > $k)] | length' \
    "$tmp/out") of 100 token events arrived after the SIGTERM was sent"
tcheck "SIGTERM: the worker exits 0" test "$serve_rc" == 0
monitor_stop
nats_finish
