#!/usr/bin/env bash
# Pipeline channels (include/inferd/channel.h): how long a sample of 1 KB to
# 10 MB takes to reach a subscriber waiting in another process, beside the
# same bytes sent through a Unix socket pair (bench/channel_rt.c), p50/p99;
# then how long a node's kill -9 takes to reach a caller waiting on the
# pipeline (the issue's bound: 100 ms).
#
#   bash bench/channel.sh          # ITERATIONS=2000 BUILD=build
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
iterations=${ITERATIONS:-2000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --build "$build" --target inferd-channel-rt inferd >/dev/null
echo "publish to receive, subscriber waiting in another process, $iterations samples per row, $(nproc) CPUs"
echo
echo "| size | channel p50 us | channel p99 us | socket p50 us | socket p99 us |"
echo "|---|---|---|---|---|"
"$build/bench/inferd-channel-rt" --iterations "$iterations" --inferd "$build/inferd" \
    >"$tmp/rt.jsonl"
jq -rs 'map(select(.size)) | group_by(.size)[] | (map({(.path): .}) | add) as $r |
    "| \($r.channel.size / 1024 | tostring) KB | \($r.channel.p50_us) | \($r.channel.p99_us) | \($r.socket.p50_us) | \($r.socket.p99_us) |"' \
    "$tmp/rt.jsonl"
echo
echo "a node killed (-9) to the caller's receive returning the pipeline's failure:"
echo
echo "| n | p50 ms | p99 ms |"
echo "|---|---|---|"
jq -r 'select(.path == "failure") | "| \(.n) | \(.p50_ms) | \(.p99_ms) |"' "$tmp/rt.jsonl"
