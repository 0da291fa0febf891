#!/usr/bin/env bash
# gRPC beside HTTP and NATS: starts nats-server on a free port and ONE
# `inferd serve --nats ... --grpc-port 0` worker (1 compute thread, 4 slots,
# any free HTTP and gRPC ports), then, against that same worker and one
# request at a time, runs inferd-nats-latency (HTTP and NATS rows) and
# inferd-grpc-latency (ModelInfer and ModelStreamInfer on one stream), and
# prints their rows and one table: for each door, round trip of a 1-token
# greedy request and time to the first token (MAX_TOKENS-token requests),
# p50 and p99 in microseconds. Both servers are stopped on exit.
#
#   bash bench/grpc.sh [MODEL]          # default: the stories260K fixture
#   BUILD=build REQUESTS=500 WARMUP=50 MAX_TOKENS=32 bash bench/grpc.sh
#   GRPC_NEW_STREAM=1 bash bench/grpc.sh   # gRPC first token: a stream per request
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
[[ "$build" == /* ]] || build=$here/$build
inferd=$build/inferd
nats_bench=$build/bench/inferd-nats-latency
grpc_bench=$build/bench/inferd-grpc-latency
model=${1:-$here/tests/fixtures/models/stories260K.gguf}
requests=${REQUESTS:-500}
warmup=${WARMUP:-50}
max_tokens=${MAX_TOKENS:-32}
nats_server=${NATS_SERVER:-nats-server}

for f in "$inferd" "$nats_bench" "$grpc_bench"; do
    [[ -x "$f" ]] || { echo "$f not built (BUILD=$build; the gRPC one needs -DINFERD_GRPC=ON)" >&2; exit 1; }
done
source "$here/bench/doors_worker.sh"
start_worker --grpc-port 0
echo "one worker: http 127.0.0.1:$hport, grpc 127.0.0.1:$gport, nats 127.0.0.1:$nport"
echo
"$nats_bench" --nats "nats://127.0.0.1:$nport" --http "127.0.0.1:$hport" --model "$id" \
    -n "$requests" --warmup "$warmup" --max-tokens "$max_tokens" | tee "$tmp/nats.out"
echo
"$grpc_bench" --port "$gport" --model "$id" -n "$requests" --warmup "$warmup" \
    --max-tokens "$max_tokens" ${GRPC_NEW_STREAM:+--new-stream} | tee "$tmp/grpc.out"
kill -0 "${pids[1]}" 2>/dev/null || fail "inferd serve exited during the run"

# One table from the rows "| name | n | mean | p50 | p99 |" of both.
echo
echo "| door | round trip p50 us | round trip p99 us | first token p50 us | first token p99 us |"
echo "|---|---|---|---|---|"
awk -F'|' '
    $2 ~ /^ *(http|nats|grpc)_(rtt|ttft) *$/ {
        name = $2; gsub(/ /, "", name); p50[name] = $5 + 0; p99[name] = $6 + 0
    }
    END {
        split("http nats grpc", doors, " "); split("HTTP NATS gRPC", label, " ")
        for (i = 1; i <= 3; i++) {
            d = doors[i]
            printf "| %s | %s | %s | %s | %s |\n", label[i],
                (d "_rtt") in p50 ? p50[d "_rtt"] : "-", (d "_rtt") in p99 ? p99[d "_rtt"] : "-",
                (d "_ttft") in p50 ? p50[d "_ttft"] : "-", (d "_ttft") in p99 ? p99[d "_ttft"] : "-"
        }
    }' "$tmp/nats.out" "$tmp/grpc.out"
