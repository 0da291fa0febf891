#!/usr/bin/env bash
# inferd serve --nats URL --no-http: a NATS-only worker (the NATS door over
# the request front end, no HTTP server). It registers with "port": null,
# serves inference on worker.{id}.inference and inference.{model} (tokens
# equal to the same request over HTTP on another worker), answers control
# and $SRV, reports field errors with the NATS spelling of the field, and
# drains on SIGTERM with the offline heartbeat. Also: --no-http without
# --nats, and with --ready-callback, are usage errors.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nats_lib.sh"

prompt="Once upon a time"

expect_error 2 "--no-http: give --nats URL" serve -m "$model" --no-http
expect_error 2 "--ready-callback announces the HTTP endpoint" serve -m "$model" --no-http \
    --nats nats://127.0.0.1:1 --ready-callback http://127.0.0.1:1/x

nats_start
monitor_start
"$INFERD" serve -m "$model" -t 1 -np 2 --no-http --nats "$nats_url" --worker-id w-only \
    --heartbeat-ms 500 >"$tmp/only.out" 2>"$tmp/only.log" &
worker_pid[only]=$!
wait_until 60 mon 'any(.[]; .subject == "worker.register" and .data.workerId == "w-only")' ||
    fail "the NATS-only worker did not register: $(cat "$tmp/only.log")"
tcheck "no HTTP door: nothing says 'listening on http'" \
    bash -c "! grep -q 'listening on http' '$tmp/only.log'"
ok "registration: port null, the model listed" \
    'map(select(.subject == "worker.register" and .data.workerId == "w-only")) | .[0].data |
     .port == null and .capabilities.models == ["stories260K"] and .capabilities.loadableModels == ["stories260K"]' \
    "$monitor_log" -s

ctl infer worker.w-only.inference \
    "{\"requestId\":\"only-1\",\"prompt\":\"$prompt\",\"maxTokens\":8,\"temperature\":0}"
cp "$tmp/out" "$tmp/direct.json"
ok "worker.w-only.inference: 8 tokens then done" \
    '.response.end.type == "done" and .response.tokens == 8 and .response.end.totalTokens == 8'
ctl infer inference.stories260K \
    "{\"requestId\":\"only-2\",\"prompt\":\"$prompt\",\"maxTokens\":8,\"temperature\":0}"
ok "inference.stories260K (queue group): the same text" \
    '.response.end.type == "done" and .response.end.text == $t' "$tmp/out" \
    --arg t "$(jq -r '.response.end.text' "$tmp/direct.json")"

# The same request over HTTP on a worker with an HTTP door.
serve_start -m "$model" -t 1
serve_wait_ready
http POST /v1/completions "{\"prompt\":\"$prompt\",\"max_tokens\":8,\"temperature\":0}" >/dev/null
ok "the same text as /v1/completions on an HTTP worker" '.choices[0].text == $t' "$tmp/out" \
    --arg t "$(jq -r '.response.end.text' "$tmp/direct.json")"
serve_stop

ctl infer worker.w-only.inference "{\"requestId\":\"only-3\",\"prompt\":\"$prompt\",\"topK\":\"x\"}"
ok "a bad field: bad_request, param topK as NATS spells it" \
    '.response.end.type == "error" and .response.end.code == "bad_request" and
     .response.end.param == "topK" and (.response.end.error | startswith("topK: expected an integer"))'
ctl infer worker.w-only.inference "{\"requestId\":\"only-4\",\"prompt\":\"$prompt\",\"modelId\":\"nope\"}"
ok "an unknown model: not_found, param modelId" \
    '.response.end.code == "not_found" and .response.end.param == "modelId"'
ctl request worker.w-only.models.list '{}'
ok "models.list answers" '.ok and .data.ok and .data.models[0].id == "stories260K" and .data.models[0].loaded'
ctl srv inferd w-only
ok '$SRV.PING answers' '.ping | length == 1 and .[0].id == "w-only"'

kill -TERM "${worker_pid[only]}"
rc=0
wait "${worker_pid[only]}" || rc=$?
worker_pid[only]=
tcheck "SIGTERM: exit 0 (got $rc)" test "$rc" == 0
wait_until 10 mon 'any(.[]; .subject == "worker.heartbeat" and .data.workerId == "w-only" and .data.status == "offline")' ||
    true
ok "the offline heartbeat was sent" \
    'any(.[]; .subject == "worker.heartbeat" and .data.workerId == "w-only" and .data.status == "offline")' \
    "$monitor_log" -s
nats_finish
