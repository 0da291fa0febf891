#!/usr/bin/env bash
# The Python package's cost per call (python/, docs/python.md), beside the C
# it wraps, with stories260K at one thread:
#   - in-process: a 1-token greedy completion through the C API (the
#     registry and the scheduler, as python/src/model.c drives them:
#     bench/registry_rt.c) and through Model.complete and an iteration of
#     Model.generate (bench/python_rt.py), REQUESTS each; then TOKENS tokens
#     (end-of-generation ignored, seed 42) through the C API and through
#     Model.generate, as us per token. Both twice: on any CPU, and pinned to
#     CPU 0 (taskset), where the caller and the scheduler's thread share a
#     core: no wake-up then crosses CPUs, which on a 2-CPU VM moves a call
#     by 20 us depending on where the kernel put the two threads;
#   - against one `inferd serve`, over TCP and the Unix socket: a 1-token
#     greedy completion through a raw socket and inferd_client_complete
#     (bench/client_rt.c) and through the asyncio ModelWorkerClient's
#     `await complete(...)` and `async for` over stream(...), REQUESTS each.
# The C and Python programs run in turn, ROUNDS chunks of REQUESTS/ROUNDS
# calls each (the first of each pair alternating), so that the machine's
# noise falls on both; within a program the paths alternate call by call.
# Rows of raw samples are p50/p99 over every chunk's samples; the C client
# rows (inferd-client-rt prints only its percentiles) are the medians of
# the chunks' p50 and p99. "Python - C" is the difference at p50.
# Then ModelWorkerClient.infer of a 64 KB, 1 MB and 10 MB input to a local
# worker, staged into the client's region against binary data,
# INFER_REQUESTS calls each, alternating.
#
#   bash bench/python.sh   # REQUESTS=1000 ROUNDS=20 TOKENS=64 INFER_REQUESTS=200 BUILD=build
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
requests=${REQUESTS:-1000}
rounds=${ROUNDS:-20}
tokens=${TOKENS:-64}
infer_n=${INFER_REQUESTS:-200}
model=$here/tests/fixtures/models/stories260K.gguf
py=/usr/bin/python3 # Debian's interpreter (sees python3-numpy, python3-torch)
tmp=$(mktemp -d)
pid=
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The programs and the package from the same libraries: pip builds them in
# $build too (INFERD_CMAKE_BUILD), so a stale program would compare old C
# with new Python.
cmake --build "$build" -j "$(nproc)" --target inferd inferd-registry-rt inferd-client-rt \
    >"$tmp/build.log" 2>&1 || { tail -20 "$tmp/build.log" >&2; exit 1; }
# The package, linked against this build's libraries, in a scratch directory.
INFERD_CMAKE_BUILD=$build "$py" -m pip install -q --no-build-isolation --no-deps \
    --no-cache-dir --target "$tmp/site" "$here/python" >"$tmp/pip.log" 2>&1 ||
    { tail -20 "$tmp/pip.log" >&2; exit 1; }
rt() { PYTHONPATH="$tmp/site" PYTHONDONTWRITEBYTECODE=1 "$py" "$here/bench/python_rt.py" "$@"; }
chunk=$(((requests + rounds - 1) / rounds))

# Run functions $1 and $2 ROUNDS times, $1 first in even rounds, $2 in odd.
interleave() {
    local r
    for ((r = 0; r < rounds; r++)); do
        if ((r % 2 == 0)); then "$1"; "$2"; else "$2"; "$1"; fi
    done
}
# Markdown rows of JSON lines {path, p50_us, p99_us} read from stdin, with
# the p50 difference to the row whose path is $1 on the Python rows; $2 (if
# given) is a first column.
rows() {
    jq -rs --arg base "$1" --arg col "${2:-}" '
        (map(select(.path == $base))[0].p50_us) as $b | .[] |
        (if $col == "" then "" else "| \($col) " end) +
        "| \(.path) | \(.p50_us) | \(.p99_us) | " +
        (if (.path | startswith("Python")) then ((.p50_us - $b) * 10 | round / 10 | tostring)
         else "" end) + " |"'
}

echo "$(nproc) CPUs; $rounds rounds of $chunk calls per path, C and Python in turn"
# In-process, twice: on any CPU (the kernel places the caller and the
# scheduler's thread), and with the process pinned to CPU 0 (taskset -c 0:
# the two threads share a core, so no wake-up crosses CPUs and the
# difference is the Python code's).
placements=("any" "cpu0")
for pl in "${placements[@]}"; do
    pin=()
    [[ $pl == cpu0 ]] && pin=(taskset -c 0)
    mkdir -p "$tmp/$pl-1" "$tmp/$pl-$tokens"
    c_in() {
        ${pin[@]+"${pin[@]}"} "$build/bench/inferd-registry-rt" --model "$model" --threads 1 \
            --requests "$chunk" --tokens "$n_tok" --raw "$tmp/$pl-$n_tok/c.txt" >/dev/null
    }
    py_in() {
        ${pin[@]+"${pin[@]}"} env PYTHONPATH="$tmp/site" PYTHONDONTWRITEBYTECODE=1 "$py" \
            "$here/bench/python_rt.py" inproc --model "$model" --requests "$chunk" \
            --tokens "$n_tok" --raw-dir "$tmp/$pl-$n_tok"
    }
    n_tok=1
    interleave c_in py_in
    n_tok=$tokens
    interleave c_in py_in
done

c_api="C API (registry + scheduler)"
echo
echo "In-process, 1-token greedy completion, $((rounds * chunk)) calls per row:"
echo
echo "| CPUs | path | p50 us | p99 us | Python - C p50 us |"
echo "|---|---|---|---|---|"
for pl in "${placements[@]}"; do
    {
        rt stats --path "$c_api" "$tmp/$pl-1/c.txt"
        rt stats --path "Python Model.complete" "$tmp/$pl-1/complete.txt"
        rt stats --path "Python Model.generate (iterated)" "$tmp/$pl-1/generate.txt"
    } | rows "$c_api" "$pl"
done
echo
echo "In-process, $tokens tokens (ignore_eos, seed 42), us per token (the call / $tokens), $((rounds * chunk)) calls per row:"
echo
echo "| CPUs | path | p50 us/token | p99 us/token | Python - C p50 us/token |"
echo "|---|---|---|---|---|"
for pl in "${placements[@]}"; do
    {
        rt stats --path "$c_api" "$tmp/$pl-$tokens/c.txt"
        rt stats --path "Python Model.generate (iterated)" "$tmp/$pl-$tokens/generate.txt"
    } | rows "$c_api" "$pl"
done

port=$(free_port)
"$build/inferd" serve -m "$model" -t 1 --port "$port" --unix "$tmp/s.sock" --log-level warn &
pid=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && [[ -S $tmp/s.sock ]] && break
    sleep 0.1
done
echo
echo "One inferd serve -t 1, 1-token greedy completion, $((rounds * chunk)) calls per row:"
echo
echo "| transport | path | p50 us | p99 us | Python - C p50 us |"
echo "|---|---|---|---|---|"
for tr in tcp unix; do
    conn=(--port "$port")
    url=http://127.0.0.1:$port
    if [[ $tr == unix ]]; then
        conn=(--unix "$tmp/s.sock")
        url=unix://$tmp/s.sock
    fi
    mkdir "$tmp/$tr"
    c_client() {
        "$build/bench/inferd-client-rt" --mode overhead "${conn[@]}" --requests "$chunk" \
            >>"$tmp/$tr/c.jsonl"
    }
    py_client() { rt client --url "$url" --requests "$chunk" --raw-dir "$tmp/$tr"; }
    interleave c_client py_client
    jq -c 'select(.path == "raw")' "$tmp/$tr/c.jsonl" >"$tmp/$tr/raw.jsonl"
    jq -c 'select(.path == "client")' "$tmp/$tr/c.jsonl" >"$tmp/$tr/client.jsonl"
    {
        rt chunks --path "C raw socket" "$tmp/$tr/raw.jsonl"
        rt chunks --path "C inferd_client_complete" "$tmp/$tr/client.jsonl"
        rt stats --path "Python await complete" "$tmp/$tr/complete.txt"
        rt stats --path "Python async for stream" "$tmp/$tr/stream.txt"
    } | rows "C inferd_client_complete" "$tr"
done
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=

# KServe inference through the asyncio client: a local worker gets big
# inputs staged into the client's region (shm="auto") or as binary data
# (shm="never"), alternating call by call; the output comes back as binary
# data in both. The body limit is raised so that binary data can carry it.
"$build/inferd" serve -m identity:ident --port "$port" --unix "$tmp/s.sock" --log-level warn \
    --max-body $((64 << 20)) &
pid=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && [[ -S $tmp/s.sock ]] && break
    sleep 0.1
done
echo
echo "ModelWorkerClient.infer over the Unix socket, identity model, one FP32 input, $infer_n calls per row:"
echo
echo "| input | staged p50 us | staged p99 us | binary p50 us | binary p99 us |"
echo "|---|---|---|---|---|"
for kb in 64 1024 10240; do
    mkdir "$tmp/infer-$kb"
    rt infer --url "unix://$tmp/s.sock" --bytes $((kb << 10)) --requests "$infer_n" \
        --raw-dir "$tmp/infer-$kb"
    s=$(rt stats --path staged "$tmp/infer-$kb/staged.txt")
    b=$(rt stats --path binary "$tmp/infer-$kb/binary.txt")
    jq -nr --argjson s "$s" --argjson b "$b" --arg kb "$kb" \
        '"| \($kb) KB | \($s.p50_us) | \($s.p99_us) | \($b.p50_us) | \($b.p99_us) |"'
done
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=
