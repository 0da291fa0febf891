#!/usr/bin/env bash
# The gRPC door (KServe v2 inference.GRPCInferenceService) with the grpcio
# client (tests/integration/grpc_check.py; its Python modules generated
# from the .proto at build time):
# every RPC over TCP and the Unix socket with an API key, streaming equal to
# `inferd generate`, parity with the HTTP KServe route, shared memory,
# malformed requests; cancelled streams and calls free their slots, a full
# queue and deadlines; draining on SIGTERM; 1000 concurrent streams, each
# answered or refused, on bounded threads.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

: "${INFERD_GRPC_PY:?INFERD_GRPC_PY must name the Python modules generated from the .proto}"
export INFERD_GRPC_PY
check_py="$(dirname "$0")/grpc_check.py"

# grpc_port: the gRPC port the server logged.
grpc_port() {
    local i p=
    for i in $(seq 1 100); do
        p=$(sed -n 's/.*gRPC on 127\.0\.0\.1:\([0-9][0-9]*\)".*/\1/p' "$tmp/serve.log" | head -1)
        [[ -n "$p" ]] && break
        sleep 0.1
    done
    [[ -n "$p" ]] || fail "no gRPC port in the log: $(cat "$tmp/serve.log")"
    echo "$p"
}

n=16
expect=$("$INFERD" generate -m "$model" -p "Once upon a time" -n $n --temp 0 -t 1 --json 2>/dev/null |
    jq -r .text)
ids=$("$INFERD" tokenize -m "$model" "Once upon a time")

# ---- every RPC, with an API key ----
serve_start -m "$model" -m identity:ident -t 1 -np 2 --api-key grpc-key \
    --grpc-port 0 --grpc-unix "$tmp/grpc.sock"
serve_wait_ready
gport=$(grpc_port)
[[ -S "$tmp/grpc.sock" ]] || fail "no gRPC Unix socket"
[[ "$(stat -c %a "$tmp/grpc.sock")" == 600 ]] || fail "the gRPC socket's mode: $(stat -c %a "$tmp/grpc.sock")"
GRPC_ADDR=127.0.0.1:$gport GRPC_UNIX=$tmp/grpc.sock HTTP_URL=$url API_KEY=grpc-key \
    EXPECT_TEXT="$expect" EXPECT_N=$n PROMPT_IDS="$ids" \
    /usr/bin/python3 "$check_py" basic || fail "grpc_check basic"
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
[[ ! -e "$tmp/grpc.sock" ]] || fail "the gRPC socket is left behind"

# ---- cancel, a full queue, deadlines (a slow model, one slot, a queue of one) ----
slow="$INFERD_FIXTURES/models/small-q8_0.gguf"
serve_start -m "$slow" -t 1 -np 1 --queue 1 --grpc-port 0 --drain-grace 300000
serve_wait_ready
gport=$(grpc_port)
GRPC_ADDR=127.0.0.1:$gport HTTP_URL=$url MODEL=small-q8_0 \
    /usr/bin/python3 "$check_py" cancel || fail "grpc_check cancel"
still_serves

# ---- draining: the running stream finishes, new requests are UNAVAILABLE ----
rm -f "$tmp/flag" "$tmp/sent"
GRPC_ADDR=127.0.0.1:$gport MODEL=small-q8_0 DRAIN_FLAG=$tmp/flag DRAIN_SENT=$tmp/sent \
    /usr/bin/python3 "$check_py" drain >"$tmp/drain.out" 2>&1 &
drain_pid=$!
for _ in $(seq 1 600); do
    [[ -e "$tmp/flag" ]] && break
    kill -0 "$drain_pid" 2>/dev/null || break
    sleep 0.05
done
[[ -e "$tmp/flag" ]] || fail "the draining client did not start: $(cat "$tmp/drain.out")"
kill -TERM "$serve_pid"
touch "$tmp/sent"
rc=0
wait "$drain_pid" || rc=$?
[[ "$rc" == 0 ]] || fail "drain: $(cat "$tmp/drain.out")"
cat "$tmp/drain.out"
serve_rc=0
wait "$serve_pid" || serve_rc=$?
serve_pid=
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc after draining"

# ---- 1000 concurrent streams; at most 600 calls at once ----
serve_start -m "$model" -t 1 -np 4 --queue 64 --grpc-port 0 --max-connections 600
serve_wait_ready
gport=$(grpc_port)
GRPC_ADDR=127.0.0.1:$gport HTTP_URL=$url EXPECT_TEXT="$expect" EXPECT_N=$n STREAMS=1000 \
    SERVE_PID=$serve_pid /usr/bin/python3 "$check_py" storm || fail "grpc_check storm"
# /v1/status counts the door's calls: every stream ended, those refused counted.
wait_status ".grpc.port == $gport and .grpc.calls_active == 0 and .grpc.streams_active == 0
    and .grpc.calls_total >= 1001 and .grpc.calls_refused > 0
    and .grpc.stream_requests_total + .grpc.calls_refused >= 1000"
still_serves
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
echo "PASS"
