#!/usr/bin/env bash
# Several `inferd serve --nats` workers and a nats-server that goes away
# (docs/nats.md "Subjects", "Lifecycle", "Failure behaviour"):
#  a. two workers with the same model share inference.{model} (queue group
#     inferd): 40 requests are all answered, by both; after kill -9 of one,
#     10 more are all answered by the other;
#  b. nats-server stopped and restarted on the same port: HTTP keeps
#     answering, worker.nats.state is "connecting" while it is down, the
#     worker registers again after the restart and NATS requests work again;
#  c. nats-server not running when a worker starts: HTTP serves, the state
#     is "connecting"; once nats-server starts the worker registers;
#  d. no controller acknowledges: the registration is retried, the state stays
#     "registering" and requests are served; a random UUID id without
#     --worker-id, the NATS connection's address as ip with --host 0.0.0.0,
#     and two models (maxConcurrent, inference.{model} with . replaced by _).
# Prints one ok / not ok line per check.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nats_lib.sh"

prompt="Once upon a time"

done_count() { # done_count NAME: requests done by worker NAME's model, over HTTP /v1/status
    status_of "${worker_url[$1]}" && jq '.models[0].requests.done' "$tmp/status.json"
}
registers_of() { # registers_of ID: worker.register messages from ID so far
    jq -s --arg id "$1" 'map(select(.subject == "worker.register" and .data.workerId == $id)) | length' \
        "$monitor_log"
}
# The nats-server has dropped every subscriber of SUBJECT (a request gets
# "no responders" at once rather than a timeout).
no_responders() {
    ctl request "$1" '{}' --timeout-ms 500 && jq -e '.ok == false and .code == "503"' "$tmp/out" >/dev/null
}
http_completion() { # http_completion NAME: a completion over HTTP works
    curl -s -o "$tmp/http.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data-binary "{\"prompt\":\"$prompt\",\"max_tokens\":4}" "${worker_url[$1]}/v1/completions" |
        grep -qx 200 && jq -e '.choices[0].text | type == "string"' "$tmp/http.json" >/dev/null
}
req='{"requestId":"RID","prompt":"Once upon a time","maxTokens":8,"temperature":0}'

# ---- a. two workers share inference.stories260K ----
nats_start
monitor_start
worker_start w1 -m "$model" -t 1 -np 2 --nats "$nats_url" --worker-id w1 --heartbeat-ms 500
worker_start w2 -m "$model" -t 1 -np 2 --nats "$nats_url" --worker-id w2 --heartbeat-ms 500
for w in w1 w2; do
    wait_until 30 nats_state_is "${worker_url[$w]}" ready ||
        fail "$w is not ready: $(cat "$tmp/$w.log")"
done
tcheck "both workers registered" mon \
    '[.[] | select(.subject == "worker.register") | .data.workerId] | index("w1") and index("w2")'
d1=$(done_count w1)
d2=$(done_count w2)
ctl many 40 inference.stories260K "${req//RID/a}"
ok "40 requests on inference.stories260K: all done" \
    '.done == 40 and .unanswered == 0 and (.results | all(.ends == 1 and .indicesOk))'
ok "40 requests: the same greedy answer from both workers" '[.results[].end.text] | unique | length == 1'
both_counted() { (($(done_count w1) - d1 + $(done_count w2) - d2 == 40)); }
tcheck "the workers' /v1/status count 40 done requests together" wait_until 30 both_counted
n1=$(($(done_count w1) - d1))
n2=$(($(done_count w2) - d2))
echo "# w1 answered $n1, w2 answered $n2"
tcheck "both workers answered some of the 40" test "$n1" -gt 0 -a "$n2" -gt 0

ctl srv inferd
ok "\$SRV ping of service inferd answers for w1 and w2" '[.ping[].id] | sort == ["w1", "w2"]'

worker_kill w2 KILL
wait_until 30 no_responders worker.w2.inference || fail "nats-server still routes to the killed w2"
d1=$(done_count w1)
ctl many 10 inference.stories260K "${req//RID/b}"
ok "after kill -9 of w2: 10 more requests all done" '.done == 10 and .unanswered == 0'
w1_took_all() { (($(done_count w1) - d1 == 10)); }
tcheck "after kill -9 of w2: w1 answered all 10" wait_until 30 w1_took_all

# ---- b. nats-server stopped and restarted on the same port ----
regs=$(registers_of w1)
nats_stop
tcheck "NATS down: worker.nats.state is connecting" wait_until 30 nats_state_is "${worker_url[w1]}" connecting
tcheck "NATS down: HTTP /v1/completions still answers" http_completion w1
tcheck "NATS down: the worker logs the lost connection" grep -q 'connection to NATS lost' "$tmp/w1.log"
nats_restart
tcheck "NATS back: the worker registers again" wait_until 60 mon \
    '[.[] | select(.subject == "worker.register" and .data.workerId == "w1")] | length > $n' \
    --argjson n "$regs"
tcheck "NATS back: worker.nats.state is ready again" wait_until 30 nats_state_is "${worker_url[w1]}" ready
ctl infer inference.stories260K "${req//RID/c-1}"
ok "NATS back: a request on inference.stories260K is answered" \
    '.response.end.type == "done" and .response.indicesOk and .response.ends == 1'
ctl infer worker.w1.inference "${req//RID/c-2}"
ok "NATS back: a request on worker.w1.inference is answered" '.response.end.type == "done"'
tcheck "NATS back: HTTP still answers" http_completion w1

# ---- c. nats-server not running when the worker starts ----
nats_stop
worker_start w3 -m "$model" -t 1 -np 1 --nats "$nats_url" --worker-id w3 --heartbeat-ms 500
wait_until 30 http_completion w3 || fail "w3 does not serve HTTP: $(cat "$tmp/w3.log")"
echo "ok - NATS not running: the worker serves HTTP"
tcheck "NATS not running: worker.nats.state is connecting" wait_until 30 nats_state_is "${worker_url[w3]}" connecting
tcheck "NATS not running: /health is 200" \
    test "$(curl -s -o /dev/null -w '%{http_code}' "${worker_url[w3]}/health")" == 200
nats_start same-port
tcheck "NATS started: w3 registers" wait_until 60 mon \
    'any(.[]; .subject == "worker.register" and .data.workerId == "w3")'
tcheck "NATS started: w3 is ready" wait_until 30 nats_state_is "${worker_url[w3]}" ready
ctl infer worker.w3.inference "${req//RID/d-1}"
ok "NATS started: a request on worker.w3.inference is answered" '.response.end.type == "done"'
tcheck "NATS started: w1 registered once more too" wait_until 60 mon \
    '[.[] | select(.subject == "worker.register" and .data.workerId == "w1")] | length > $n + 1' \
    --argjson n "$regs"

# ---- d. no controller acknowledges yet; default id, wildcard host, two models ----
monitor_stop
monitor_start --no-ack
worker_start w4 -m "$model" -m "$model" --alias stories260K --alias Llama-3.2-1B.Q4_K_M -t 1 -np 2 \
    --host 0.0.0.0 --nats "$nats_url" --heartbeat-ms 500
w4_regs() { # w4_regs N: w4 has sent N registrations
    mon 'map(select(.subject == "worker.register" and .data.port == $p)) | length >= $n' \
        --argjson p "${worker_port[w4]}" --argjson n "$1"
}
tcheck "no acknowledgement: the registration is sent again" wait_until 30 w4_regs 2
wait_until 30 w4_regs 3 || fail "no third registration from w4"
# Each unanswered attempt waits 2 s for a reply, then backs off: the 1st and
# 3rd are over 4 s apart, time for 8 heartbeats at 500 ms; 5 is generous.
n_hb=$(jq -s --argjson p "${worker_port[w4]}" \
    '[.[] | select(.subject == "worker.register" and .data.port == $p)] as $r | $r[0].data.workerId as $id |
     [.[] | select(.subject == "worker.heartbeat" and .data.workerId == $id and .seq > $r[0].seq and
                   .seq < $r[2].seq)] | length' "$monitor_log")
tcheck "no acknowledgement: heartbeats keep to --heartbeat-ms 500 meanwhile ($n_hb between the 1st and 3rd registration, >= 5 wanted)" \
    test "$n_hb" -ge 5
jq -s --argjson p "${worker_port[w4]}" 'map(select(.subject == "worker.register" and .data.port == $p)) | first' \
    "$monitor_log" >"$tmp/reg4.json"
w4_id=$(jq -r .data.workerId "$tmp/reg4.json")
ok "no --worker-id: a random UUID" \
    '.data.workerId | test("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")' "$tmp/reg4.json"
ok "--host 0.0.0.0: ip is the local address of the NATS connection (127.0.0.1)" '.data.ip == "127.0.0.1"' \
    "$tmp/reg4.json"
ok "two models: maxConcurrent 4, both models listed" \
    '.data.capabilities | .maxConcurrent == 4 and (.models | sort) == ["Llama-3.2-1B.Q4_K_M", "stories260K"]' \
    "$tmp/reg4.json"
tcheck "no acknowledgement: worker.nats.state stays registering" nats_state_is "${worker_url[w4]}" registering
tcheck "no acknowledgement: heartbeats say state registering" wait_until 10 mon \
    'any(.[]; .subject == "worker.heartbeat" and .data.workerId == $id and .data.state == "registering")' \
    --arg id "$w4_id"
ctl infer "worker.$w4_id.inference" "${req//RID/e-1}"
ok "registering: requests are already served" '.response.end.type == "done" and .response.end.modelId == "stories260K"'
ctl infer inference.Llama-3_2-1B_Q4_K_M "${req//RID/e-2}"
ok "inference.Llama-3_2-1B_Q4_K_M (the id's . replaced by _) serves model Llama-3.2-1B.Q4_K_M" \
    '.response.end.type == "done" and .response.end.modelId == "Llama-3.2-1B.Q4_K_M"'
ctl infer "worker.$w4_id.inference" \
    '{"requestId":"e-3","modelId":"Llama-3.2-1B.Q4_K_M","prompt":"Once upon a time","maxTokens":4}'
ok "modelId on the worker subject picks the second model" '.response.end.modelId == "Llama-3.2-1B.Q4_K_M"'
monitor_stop
monitor_start
tcheck "a controller answers: w4 becomes ready" wait_until 30 nats_state_is "${worker_url[w4]}" ready

for w in w1 w3 w4; do
    rc=0
    kill -TERM "${worker_pid[$w]}"
    wait "${worker_pid[$w]}" || rc=$?
    worker_pid[$w]=
    tcheck "$w exits 0 on SIGTERM" test "$rc" == 0
done
monitor_stop
nats_finish
