#!/usr/bin/env bash
# Tensor transports: the round trip of one KServe infer of the built-in
# identity model (-m identity:ident) with a UINT8 tensor of 1 KB, 64 KB,
# 1 MB and 10 MB, sent as JSON data, as Triton binary data, or in system
# shared memory (the output written to a second window of the region:
# "shm"; or left in place on the input's bytes: "shm-inplace"), over TCP
# and the Unix socket; p50/p99 of REQUESTS round trips on one keep-alive
# connection (bench/tensor_rt.c). JSON stops at 64 KB: larger bodies pass
# the parse budget (262144 values) and are refused by design. The last
# column is the p50 beyond the same transport's 1 KB p50.
#
#   bash bench/tensors.sh            # REQUESTS=200 BUILD=build
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
requests=${REQUESTS:-200}
model=${MODEL:-$here/tests/fixtures/models/stories260K.gguf}
tmp=$(mktemp -d)
pid=
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$build/inferd" serve -m "$model" -m identity:ident -t 1 --port "$port" --unix "$tmp/s.sock" \
    --max-body 67108864 --log-level warn &
pid=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break
    sleep 0.1
done
echo "identity round trip, $requests requests per row, one connection, $(nproc) CPUs"
echo
echo "| transport | mode | bytes | p50 us | p99 us | p50 beyond 1 KB us |"
echo "|---|---|---|---|---|---|"
for tr in tcp unix; do
    conn=(--port "$port")
    [[ $tr == unix ]] && conn=(--unix "$tmp/s.sock")
    for mode in json binary shm shm-inplace; do
        base=
        for bytes in 1024 65536 1048576 10485760; do
            if [[ $mode == json && $bytes -gt 65536 ]]; then
                continue
            fi
            js=$("$build/bench/inferd-tensor-rt" "${conn[@]}" --model ident --mode $mode \
                --bytes $bytes --requests "$requests")
            p50=$(jq .p50_us <<<"$js")
            [[ -z "$base" ]] && base=$p50
            jq -r --arg b "$base" '"| \(.transport) | \(.mode) | \(.bytes) | \(.p50_us) | \(.p99_us) | \((.p50_us - ($b|tonumber)) * 10 | round / 10) |"' <<<"$js"
        done
    done
done
