#!/usr/bin/env bash
# NATS vs HTTP latency: starts nats-server on a free port and one
# `inferd serve --nats` worker (1 compute thread, 4 slots, any free HTTP
# port), then runs inferd-nats-latency against both doors, one request at a
# time: round trip of a 1-token greedy request and time to the first token,
# mean/p50/p99 in microseconds. Both servers are stopped on exit.
#
#   bash bench/nats.sh [MODEL]          # default: the stories260K fixture
#   BUILD=build-natsbench REQUESTS=1000 WARMUP=100 MAX_TOKENS=32 bash bench/nats.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
[[ "$build" == /* ]] || build=$here/$build
inferd=$build/inferd
bench=$build/bench/inferd-nats-latency
model=${1:-$here/tests/fixtures/models/stories260K.gguf}
requests=${REQUESTS:-1000}
warmup=${WARMUP:-100}
max_tokens=${MAX_TOKENS:-32}
nats_server=${NATS_SERVER:-nats-server}

for f in "$inferd" "$bench"; do
    [[ -x "$f" ]] || { echo "$f not built (BUILD=$build)" >&2; exit 1; }
done
source "$here/bench/doors_worker.sh"
start_worker
"$bench" --nats "nats://127.0.0.1:$nport" --http "127.0.0.1:$hport" --model "$id" \
    -n "$requests" --warmup "$warmup" --max-tokens "$max_tokens"
