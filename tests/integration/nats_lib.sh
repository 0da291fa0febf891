# Shared by the test_serve_nats*.sh scripts: sourced after lib.sh. Defines
#   nats_start / nats_stop / nats_restart: a nats-server on 127.0.0.1 (sets
#     $nats_port, $nats_url, $nats_pid; log $tmp/nats.log),
#   ctl ARGS...: tests/node/nats_controller.mjs against $nats_url, its JSON
#     output in $tmp/out (so lib.sh's check works on it too),
#   monitor_start [--no-ack] / monitor_stop: the controller's `monitor` in
#     the background, recording worker.register and worker.heartbeat in
#     $tmp/monitor.jsonl (appended to by each monitor in turn),
#   worker_start NAME ARGS... / worker_kill NAME: more `inferd serve`
#     processes (log $tmp/NAME.log, ${worker_url[NAME]}, ${worker_pid[NAME]}),
#   ok NAME JQ [FILE [JQ ARGS...]] and tcheck: TAP-like "ok - NAME" /
#     "not ok - NAME" lines; nats_finish fails the script if any was not ok,
#   wait_until SECONDS COMMAND...: poll until COMMAND succeeds.
# and sets the EXIT trap so that every process started here (and lib.sh's
# serve_pid) is killed even on failure.

: "${INFERD_SRC:?INFERD_SRC must name the source tree}"
node_dir="$INFERD_SRC/tests/node"
[[ -d "$node_dir/node_modules/nats" ]] ||
    fail "the nats npm package is not installed: run scripts/install-deps.sh"
command -v nats-server >/dev/null || fail "nats-server is not installed"

nats_pid=
nats_port=
nats_url=
monitor_pid=
monitor_log="$tmp/monitor.jsonl"
declare -A worker_pid=() worker_url=() worker_port=()
n_not_ok=0

nats_cleanup() {
    local name pid
    for name in "${!worker_pid[@]}"; do
        pid=${worker_pid[$name]}
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n "$monitor_pid" ]] && kill -0 "$monitor_pid" 2>/dev/null; then
        kill -KILL "$monitor_pid" 2>/dev/null || true
        wait "$monitor_pid" 2>/dev/null || true
    fi
    if [[ -n "$nats_pid" ]] && kill -0 "$nats_pid" 2>/dev/null; then
        kill -KILL "$nats_pid" 2>/dev/null || true
        wait "$nats_pid" 2>/dev/null || true
    fi
}
trap 'nats_cleanup; cleanup' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() { # port_open PORT: something accepts on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_until SECONDS COMMAND...: run COMMAND every 0.1 s until it succeeds;
# returns 1 if it never did.
wait_until() {
    local secs=$1 i
    shift
    for i in $(seq 1 $((secs * 10))); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

# Start nats-server on $nats_port (a free one unless set), wait until it
# accepts connections.
nats_start() {
    local try
    for try in 1 2 3; do
        [[ -n "$nats_port" ]] || nats_port=$(free_port)
        nats-server -a 127.0.0.1 -p "$nats_port" >>"$tmp/nats.log" 2>&1 &
        nats_pid=$!
        if wait_until 20 port_open "$nats_port"; then
            nats_url="nats://127.0.0.1:$nats_port"
            return 0
        fi
        kill -0 "$nats_pid" 2>/dev/null || {
            wait "$nats_pid" 2>/dev/null || true
            nats_pid=
            # the port was taken between free_port and the bind: pick another
            [[ "${1-}" == same-port ]] && break
            nats_port=
            continue
        }
        break
    done
    fail "nats-server did not start: $(tail -5 "$tmp/nats.log")"
}

nats_stop() {
    [[ -n "$nats_pid" ]] || return 0
    kill -TERM "$nats_pid" 2>/dev/null || true
    wait "$nats_pid" 2>/dev/null || true
    nats_pid=
}

# Start it again on the same port.
nats_restart() {
    nats_stop
    nats_start same-port
}

# ctl ARGS...: run the controller; output in $tmp/out, status printed.
ctl() {
    local rc=0
    NATS_URL="$nats_url" node "$node_dir/nats_controller.mjs" "$@" >"$tmp/out" 2>"$tmp/ctl.err" || rc=$?
    [[ "$rc" == 0 ]] || echo "# controller $1 exited $rc: $(head -c 600 "$tmp/ctl.err")" >&2
    return "$rc"
}

monitor_start() { # monitor_start [--no-ack]
    : >"$tmp/monitor.out"
    NATS_URL="$nats_url" node "$node_dir/nats_controller.mjs" monitor "$monitor_log" "$@" \
        >"$tmp/monitor.out" 2>"$tmp/monitor.err" &
    monitor_pid=$!
    wait_until 30 grep -q '^subscribed' "$tmp/monitor.out" ||
        fail "the controller did not subscribe: $(cat "$tmp/monitor.err")"
}

monitor_stop() {
    [[ -n "$monitor_pid" ]] || return 0
    kill -TERM "$monitor_pid" 2>/dev/null || true
    wait "$monitor_pid" 2>/dev/null || true
    monitor_pid=
}

# mon JQ [JQ ARGS...]: jq -e over the monitor's records as one array.
mon() {
    local expr=$1
    shift
    [[ -s "$monitor_log" ]] || return 1
    jq -e -s "$@" "$expr" "$monitor_log" >/dev/null 2>&1
}

# worker_start NAME ARGS...: `inferd serve --port 0 ARGS` in the background,
# like lib.sh's serve_start, with its own log $tmp/NAME.log.
worker_start() {
    local name=$1
    shift
    launch_serve "worker_pid[$name]" "worker_port[$name]" "$tmp/$name.out" "$tmp/$name.log" "$@"
    worker_url[$name]="http://127.0.0.1:${worker_port[$name]}"
}

worker_kill() { # worker_kill NAME [SIGNAL]: signal (default KILL) and wait
    local pid=${worker_pid[$1]}
    kill "-${2:-KILL}" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    worker_pid[$1]=
}

# status_of URL: GET URL/v1/status into $tmp/status.json.
status_of() {
    curl -s -o "$tmp/status.json" "$1/v1/status"
}

# nats_state_is URL STATE: /v1/status at URL says worker.nats.state STATE.
nats_state_is() {
    status_of "$1" && jq -e --arg s "$2" '.worker.nats.state == $s' "$tmp/status.json" >/dev/null 2>&1
}

# ok NAME JQ [FILE [JQ ARGS...]]: one check on FILE (default $tmp/out):
# prints "ok - NAME" or "not ok - NAME" with the start of FILE.
ok() {
    local name=$1 expr=$2 file=${3:-$tmp/out}
    shift 3 2>/dev/null || shift $#
    if jq -e "$@" "$expr" "$file" >/dev/null 2>&1; then
        echo "ok - $name"
    else
        echo "not ok - $name: $(head -c 1500 "$file")"
        n_not_ok=$((n_not_ok + 1))
    fi
}

# tcheck NAME COMMAND...: one check that COMMAND succeeds.
tcheck() {
    local name=$1
    shift
    if "$@"; then
        echo "ok - $name"
    else
        echo "not ok - $name"
        n_not_ok=$((n_not_ok + 1))
    fi
}

# good_after SUBJECT LABEL: right after a bad message, a good 4-token request
# on SUBJECT still succeeds (one check).
n_good=0
good_after() {
    n_good=$((n_good + 1))
    ctl infer "$1" "{\"requestId\":\"good-$n_good\",\"prompt\":\"Once upon a time\",\"maxTokens\":4,\"temperature\":0}"
    ok "after $2: a good request succeeds" \
        '.response.end.type == "done" and .response.tokens == 4 and .response.end.totalTokens == 4 and
         .response.ends == 1'
}

# nats_finish: no sanitizer report in any worker log, and every check ok.
nats_finish() {
    local reports
    reports=$(grep -l -E 'ERROR: AddressSanitizer|runtime error:|WARNING: ThreadSanitizer' "$tmp"/*.log 2>/dev/null || true)
    tcheck "no sanitizer report in the workers' logs${reports:+ (see $reports)}" test -z "$reports"
    [[ -z "$reports" ]] || grep -h -A12 -E 'ERROR: AddressSanitizer|runtime error:|WARNING: ThreadSanitizer' $reports | head -40 >&2
    [[ "$n_not_ok" == 0 ]] || fail "$n_not_ok check(s) not ok"
    echo "ok"
}
