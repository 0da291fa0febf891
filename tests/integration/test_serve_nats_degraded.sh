#!/usr/bin/env bash
# A worker's heartbeats say "degraded" while something is wrong and "ready"
# again once it is not (docs/nats.md "worker.heartbeat"); before that, the
# worker is "idle" while its models load.
#  a. a model fails to load (models.load of a file that is no longer a
#     GGUF): degraded, with the model missing from modelsLoaded; loading it
#     again from the good file: ready;
#  b. a model's queue is full (-np 1 --queue 1, two long requests on a slow
#     model): degraded while both are held; ready once they end (their
#     deadline, timeoutMs, ends them).
# Prints one ok / not ok line per check.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nats_lib.sh"

prompt="Once upon a time"
slow="$INFERD_FIXTURES/models/small-q8_0.gguf"

# hb_after SEQ JQ: a heartbeat of worker w-deg after monitor record SEQ
# satisfies JQ (on .data).
hb_after() {
    mon "any(.[]; .subject == \"worker.heartbeat\" and .seq > \$s and .data.workerId == \"w-deg\" and
        (.data | $2))" --argjson s "$1"
}
last_seq() {
    jq -s 'map(.seq) | max // 0' "$monitor_log"
}

nats_start
monitor_start

# ---- the idle state: models still loading (a FIFO that nobody writes) ----
mkfifo "$tmp/loading.gguf"
serve_start -m "$tmp/loading.gguf" --nats "$nats_url" --worker-id w-idle
tcheck "while the models load, /v1/status says worker.nats.state idle" nats_state_is "$url" idle
exec 7>"$tmp/loading.gguf" # a writer that closes at once: the load fails
exec 7>&-
serve_rc=0
wait "$serve_pid" || serve_rc=$?
serve_pid=
tcheck "a model that cannot load: exit 1, and the worker never registered" \
    test "$serve_rc" == 1 -a "$(jq -s 'map(select(.data.workerId == "w-idle")) | length' "$monitor_log")" == 0

# ---- a. a failed load ----
cp "$model" "$tmp/m.gguf"
serve_start -m "$tmp/m.gguf" -m "$slow" -t 1 -np 1 --queue 1 --heartbeat-ms 200 \
    --nats "$nats_url" --worker-id w-deg
serve_wait_ready
wait_until 30 nats_state_is "$url" ready || fail "the worker is not ready: $(cat "$tmp/serve.log")"
s0=$(last_seq)
tcheck "heartbeats say ready at start" wait_until 30 hb_after "$s0" '.status == "ready"'

ctl request worker.w-deg.models.unload '{"modelId":"m"}' --timeout-ms 30000
ok "models.unload m" '.ok and .data.ok == true and .data.loaded == false'
# The mapped file is gone from the registry; replace its name with garbage.
head -c 4096 /dev/urandom >"$tmp/bad.gguf"
mv "$tmp/bad.gguf" "$tmp/m.gguf"
ctl request worker.w-deg.models.load '{"modelId":"m"}' --timeout-ms 30000
ok "models.load of a file that is not GGUF: ok false with the load's error" \
    '.ok and .data.ok == false and (.data.code | type == "string") and (.data.error | test("m"))'
s1=$(last_seq)
tcheck "after the failed load, heartbeats say degraded without m in modelsLoaded" \
    wait_until 30 hb_after "$s1" '.status == "degraded" and (.modelsLoaded | index("m") | not)'
tcheck "HTTP still serves the other model" \
    curl -sf -o /dev/null "$url/v1/completions" -d '{"model":"small-q8_0","prompt":"a","max_tokens":2}'

cp "$model" "$tmp/good.gguf"
mv "$tmp/good.gguf" "$tmp/m.gguf"
ctl request worker.w-deg.models.load '{"modelId":"m"}' --timeout-ms 30000
ok "models.load from the good file again" '.ok and .data.ok == true and .data.loaded == true'
s2=$(last_seq)
tcheck "heartbeats say ready again, with m loaded" \
    wait_until 30 hb_after "$s2" '.status == "ready" and (.modelsLoaded | index("m") != null)'

# ---- b. a full queue ----
# One request runs in the single slot and one waits in the single queue
# place until their deadline; small-q8_0 (random weights, 2048-token
# context) does not stop by itself before then.
long="{\"modelId\":\"small-q8_0\",\"prompt\":\"$prompt\",\"maxTokens\":1900,\"temperature\":0,\"timeoutMs\":6000"
slot_busy() {
    status_of "$url" && jq -e '.models[] | select(.id == "small-q8_0") | .slots_busy == 1' \
        "$tmp/status.json" >/dev/null
}
s3=$(last_seq)
# The second request is sent once the first holds the slot: sent together,
# both could reach the queue before the scheduler admits one.
NATS_URL="$nats_url" node "$node_dir/nats_controller.mjs" many 1 inference.small-q8_0 \
    "$long,\"requestId\":\"run\"}" --timeout-ms 60000 >"$tmp/run.out" 2>"$tmp/run.err" &
run_pid=$!
wait_until 30 slot_busy || fail "the first long request did not take the slot: $(cat "$tmp/run.err")"
NATS_URL="$nats_url" node "$node_dir/nats_controller.mjs" many 1 inference.small-q8_0 \
    "$long,\"requestId\":\"queued\"}" --timeout-ms 60000 >"$tmp/queued.out" 2>"$tmp/queued.err" &
queued_pid=$!
tcheck "while the queue is full, heartbeats say degraded (queueDepth 1, activeRequests 1)" \
    wait_until 30 hb_after "$s3" '.status == "degraded" and .metrics.queueDepth == 1 and .metrics.activeRequests == 1'
wait "$run_pid" "$queued_pid" || true
for f in run queued; do
    ok "the $f request ends (done or timeout)" \
        '.unanswered == 0 and (.results | length == 1) and (.results | all(.ends == 1))' "$tmp/$f.out"
done
s4=$(last_seq)
tcheck "once they end, heartbeats say ready again" \
    wait_until 30 hb_after "$s4" '.status == "ready" and .metrics.queueDepth == 0'

tcheck "the worker process is alive" kill -0 "$serve_pid"
serve_stop
tcheck "the worker exits 0 on SIGTERM" test "$serve_rc" == 0
monitor_stop
nats_finish
