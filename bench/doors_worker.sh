# Sourced by bench/nats.sh and bench/grpc.sh (after `set -euo pipefail`,
# with $inferd, $model and $nats_server set): starts nats-server on a free
# port and one `inferd serve --nats` worker (1 compute thread, 4 slots, any
# free HTTP port, and the extra serve arguments given to start_worker),
# both stopped on exit; logs in $tmp (kept with KEEP=1).
#   start_worker [SERVE ARGS...]: sets $nport, $hport, $gport (the gRPC
#   port when --grpc-port 0 is among the arguments, else empty), $state
#   (the worker's NATS state) and $id (the model id).

command -v "$nats_server" >/dev/null || { echo "nats-server not found" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -n "${KEEP:-}" ]]; then echo "logs kept in $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fail() { echo "$*" >&2; for f in "$tmp"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }

start_worker() {
    local want_grpc=
    [[ " $* " == *" --grpc-port "* ]] && want_grpc=1
    nport=$(free_port)
    "$nats_server" -a 127.0.0.1 -p "$nport" >"$tmp/nats-server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break
        sleep 0.1
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null || fail "nats-server did not come up on $nport"

    "$inferd" serve -m "$model" -t 1 -np 4 --port 0 --nats "nats://127.0.0.1:$nport" \
        --log-level info "$@" >"$tmp/inferd.log" 2>&1 &
    pids+=($!)
    # --port 0 (and --grpc-port 0): the bound ports are in the "listening
    # on" (and "gRPC on") lines.
    hport= gport=
    for _ in $(seq 1 300); do
        hport=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$tmp/inferd.log" | head -1)
        gport=$(sed -n 's|.*gRPC on 127\.0\.0\.1:\([0-9]*\).*|\1|p' "$tmp/inferd.log" | head -1)
        [[ -n "$hport" && ( -z "$want_grpc" || -n "$gport" ) ]] && break
        kill -0 "${pids[1]}" 2>/dev/null || fail "inferd serve exited"
        sleep 0.1
    done
    [[ -n "$hport" && ( -z "$want_grpc" || -n "$gport" ) ]] || fail "inferd serve did not log its ports"
    # Requests are taken over NATS from the registering state on (no
    # controller here acknowledges the registration).
    state=
    for _ in $(seq 1 300); do
        state=$(curl -sf "http://127.0.0.1:$hport/v1/status" | jq -r '.worker.nats.state // empty' || true)
        [[ "$state" == registering || "$state" == ready ]] && break
        sleep 0.1
    done
    [[ "$state" == registering || "$state" == ready ]] || fail "worker NATS state '$state' after 30 s"
    id=$(basename "$model" .gguf)
    echo "model $id, 1 thread, 4 slots; nats-server $("$nats_server" --version | sed 's/.*v//'); worker state $state"
}
