#!/usr/bin/env bash
# The client library (include/inferd/client.h):
#   - overhead per call: a 1-token greedy completion of stories260K through
#     a raw keep-alive socket and through inferd_client_complete,
#     alternating, REQUESTS each, over TCP and the Unix socket;
#   - failover time: kill -9 of the worker serving a 200-token stream at
#     piece 100, to the next piece delivered by the resilient client (from
#     the other worker, after it replayed 100 pieces), ITERATIONS times,
#     with a random-weight model (8 layers, width 768, Q8_0) slow enough
#     that the killed worker is still generating.
#
#   bash bench/client.sh          # REQUESTS=1000 ITERATIONS=20 BUILD=build
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
requests=${REQUESTS:-1000}
iterations=${ITERATIONS:-20}
model=$here/tests/fixtures/models/stories260K.gguf
tmp=$(mktemp -d)
pid=
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
"$build/inferd" serve -m "$model" -t 1 --port "$port" --unix "$tmp/s.sock" --log-level warn &
pid=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break
    sleep 0.1
done
echo "1-token completion, $requests calls per row, $(nproc) CPUs"
echo
echo "| transport | path | p50 us | p99 us |"
echo "|---|---|---|---|"
for tr in tcp unix; do
    conn=(--port "$port")
    [[ $tr == unix ]] && conn=(--unix "$tmp/s.sock")
    "$build/bench/inferd-client-rt" --mode overhead "${conn[@]}" --requests "$requests" |
        jq -r --arg t $tr '"| \($t) | \(.path) | \(.p50_us) | \(.p99_us) |"'
done
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=
"$build/inferd" make-model --dim 768 --layers 8 --heads 12 --ffn 2048 --vocab-from "$model" \
    --type Q8_0 -o "$tmp/slow.gguf" >/dev/null
echo
echo "failover: kill -9 at piece 100 of 200 to the next piece, $iterations iterations"
echo
echo "| n | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|"
"$build/bench/inferd-client-rt" --mode failover --inferd "$build/inferd" --model "$tmp/slow.gguf" \
    --port-a "$(free_port)" --port-b "$(free_port)" --iterations "$iterations" |
    jq -r '"| \(.n) | \(.p50_ms) | \(.p99_ms) | \(.max_ms) |"'
