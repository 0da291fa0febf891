#!/usr/bin/env bash
# HTTP serving benchmark: requests/s and p50/p99 latency of short
# completions (POST /v1/completions, max_tokens 16, greedy) at 1, 8 and 64
# concurrent clients through inferd-http-load, and inferd's own overhead per
# request: time in HTTP handling and JSON (the request's time in the server
# less the scheduler's time for it), as /v1/status reports it.
#
# If $LLAMA_SERVER names a llama-server binary (llama.cpp, built outside this
# project), it serves the same model with the same slots and threads and
# runs the same clients in the same run, for a side-by-side.
#
#   bash bench/serve.sh                 # the bundled stories260K model
#   MODEL=FILE SLOTS=4 THREADS=2 REQUESTS=2000 LLAMA_SERVER=... bash bench/serve.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
inferd=$build/inferd
load=$build/bench/inferd-http-load
model=${MODEL:-$here/models/stories260K.gguf}
slots=${SLOTS:-4}
threads=${THREADS:-2}
requests=${REQUESTS:-2000}
body='{"prompt":"Once upon a time","max_tokens":16,"temperature":0}'
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { # wait_up URL
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "server at $1 did not come up" >&2
    exit 1
}

# run NAME PORT MODE: one line per concurrency.
run() {
    local name=$1 port=$2 mode=$3 c ka=
    [[ "$mode" == keep-alive ]] && ka=--keep-alive
    for c in 1 8 64; do
        # A warm-up round, then the measured one.
        "$load" --url "http://127.0.0.1:$port/v1/completions" --body "$body" \
            --concurrency "$c" --requests $((c * 4)) $ka --json >/dev/null
        js=$("$load" --url "http://127.0.0.1:$port/v1/completions" --body "$body" \
            --concurrency "$c" --requests "$requests" $ka --json)
        jq -r --arg n "$name" --arg m "$mode" --arg c "$c" \
            '"| \($n) | \($m) | \($c) | \(.requests_per_s | floor) | \(.latency_ms.p50) | \(.latency_ms.p99) | \(.status | to_entries | map("\(.key):\(.value)") | join(" ")) | \(.errors | to_entries | map(.value) | add) |"' <<<"$js"
    done
}

echo "model $(basename "$model"), $slots slots, $threads threads, $requests requests per row"
echo
echo "| server | connections | clients | req/s | p50 ms | p99 ms | statuses | errors |"
echo "|---|---|---|---|---|---|---|---|"

port=$(free_port)
"$inferd" serve -m "$model" --port "$port" -np "$slots" -t "$threads" --log-level warn &
pids+=($!)
wait_up "http://127.0.0.1:$port/health"
run inferd "$port" new
run inferd "$port" keep-alive
status=$(curl -s "http://127.0.0.1:$port/v1/status")

if [[ -n "${LLAMA_SERVER:-}" ]]; then
    lport=$(free_port)
    "$LLAMA_SERVER" -m "$model" --port "$lport" -np "$slots" -t "$threads" --log-disable \
        >/dev/null 2>&1 &
    pids+=($!)
    wait_up "http://127.0.0.1:$lport/health"
    run llama-server "$lport" new
fi

echo
jq -r '"inferd overhead per non-streamed request (HTTP + JSON, outside the model), over the last \(.http.overhead_us.n | if . > 1000 then 1000 else . end) requests: p50 \(.http.overhead_us.p50 | floor) us, p99 \(.http.overhead_us.p99 | floor) us, mean \(.http.overhead_us.mean | floor) us (\(.http.overhead_us.n) requests)"' <<<"$status"
