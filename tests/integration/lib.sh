# Shared by the integration scripts: sourced after `set -euo pipefail`.
# Checks $INFERD and $INFERD_FIXTURES, makes $tmp (removed on exit unless
# INFERD_TEST_KEEP=1), and defines fail, run, expect_error and check, and
# for `inferd serve`: serve_start, serve_wait_ready, serve_stop, http,
# expect_http, wait_status and still_serves.

: "${INFERD:?INFERD must name the inferd binary}"
: "${INFERD_FIXTURES:?INFERD_FIXTURES must name tests/fixtures}"

model="$INFERD_FIXTURES/models/stories260K.gguf"
vocab="$INFERD_FIXTURES/vocab/ggml-vocab-llama-spm.gguf"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/inferd-$(basename "$0" .sh).XXXXXX")"
serve_pid=
cleanup() {
    # A server started by serve_start goes with the script, even on failure.
    if [[ -n "$serve_pid" ]] && kill -0 "$serve_pid" 2>/dev/null; then
        kill -KILL "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    if [[ "${INFERD_TEST_KEEP:-0}" == 1 ]]; then
        echo "kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# Run inferd, capturing stdout, stderr and the exit status without set -e
# stopping the script; prints the status.
run() {
    local rc=0
    "$INFERD" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    echo "$rc"
}

# jq expression that must be true on $tmp/out.
check() {
    jq -e "$1" "$tmp/out" >/dev/null || fail "jq check failed: $1 (output: $(head -c 400 "$tmp/out"))"
}

# Run inferd and require exit STATUS and exactly one stderr line holding
# SUBSTRING.
expect_error() { # expect_error STATUS SUBSTRING ARGS...
    local want=$1 msg=$2
    shift 2
    local rc
    rc=$(run "$@")
    [[ "$rc" == "$want" ]] || fail "inferd $* exited $rc, expected $want: $(cat "$tmp/err")"
    [[ $(wc -l <"$tmp/err") -eq 1 ]] || fail "inferd $*: expected one error line, got: $(cat "$tmp/err")"
    grep -qF -- "$msg" "$tmp/err" || fail "inferd $*: error '$(cat "$tmp/err")' lacks '$msg'"
}

# ---- inferd serve ---------------------------------------------------------
# serve_start ARGS...: start `inferd serve --port 0 ARGS` in the background,
# wait until it listens, and set $serve_pid, $port and $url (http://...:PORT).
# Its log is $tmp/serve.log. The process is killed when the script exits.
# serve_wait_ready: wait until /health answers 200.
# serve_stop: SIGTERM, wait, and set $serve_rc to the exit status.
# launch_serve PIDVAR PORTVAR OUT LOG ARGS...: `inferd serve --port 0 ARGS`
# in the background (stdout to OUT, stderr to LOG), its pid stored in
# PIDVAR at once (for the cleanup traps), then its port in PORTVAR once it
# logs it. OUT and LOG exist before it starts: the poll must not read a
# file the child has not opened yet (under set -e that ends the script).
launch_serve() {
    local pidvar=$1 portvar=$2 out=$3 log=$4 i p=
    shift 4
    : >"$out"
    : >"$log"
    "$INFERD" serve --port 0 "$@" >"$out" 2>"$log" &
    printf -v "$pidvar" '%s' "$!"
    for i in $(seq 1 600); do
        p=$(sed -n 's/.*listening on http:\/\/[^ ]*:\([0-9][0-9]*\)".*/\1/p' "$log" | head -1)
        [[ -n "$p" ]] && break
        kill -0 "${!pidvar}" 2>/dev/null || fail "inferd serve exited early: $(cat "$log")"
        sleep 0.1
    done
    [[ -n "$p" ]] || fail "inferd serve did not listen within 60 s: $(cat "$log")"
    printf -v "$portvar" '%s' "$p"
}

serve_start() {
    launch_serve serve_pid port "$tmp/serve.out" "$tmp/serve.log" "$@"
    url="http://127.0.0.1:$port"
}

serve_wait_ready() {
    local i
    for i in $(seq 1 600); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" == 200 ]] && return 0
        kill -0 "$serve_pid" 2>/dev/null || fail "inferd serve exited: $(cat "$tmp/serve.log")"
        sleep 0.1
    done
    fail "inferd serve not ready within 60 s: $(cat "$tmp/serve.log")"
}

serve_stop() { # sets $serve_rc (call it directly, not in $(...): wait needs the parent)
    serve_rc=0
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" || serve_rc=$?
    serve_pid=
}

# http METHOD PATH [BODY] [CURL ARGS...]: request $url/PATH; the body goes to
# $tmp/out, the status is printed.
http() {
    local method=$1 path=$2 body=${3-}
    shift 3 2>/dev/null || shift $#
    if [[ -n "$body" ]]; then
        curl -s -o "$tmp/out" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json' \
            --data-binary "$body" "$@" "$url$path"
    else
        curl -s -o "$tmp/out" -w '%{http_code}' -X "$method" "$@" "$url$path"
    fi
}

# expect_http STATUS METHOD PATH [BODY] [CURL ARGS...]: require STATUS.
expect_http() {
    local want=$1
    shift
    local got
    got=$(http "$@")
    [[ "$got" == "$want" ]] || fail "$1 $2: status $got, expected $want: $(head -c 400 "$tmp/out")"
}

# wait_status JQ: poll /v1/status until JQ holds (60 s at most).
wait_status() {
    local i
    for i in $(seq 1 600); do
        curl -s "$url/v1/status" >"$tmp/status" || true
        jq -e "$1" "$tmp/status" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "status never had $1: $(cat "$tmp/status")"
}

# The server still answers a plain completion.
still_serves() {
    expect_http 200 POST /v1/completions '{"prompt":"Once upon a time","max_tokens":2}'
    check '.choices[0].text | type == "string"'
}
