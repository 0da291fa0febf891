#!/usr/bin/env bash
# inferd-http-load against a small python3 http.server on a port chosen at run
# time: counts add up, statuses, chunked bodies, keep-alive reuse, and one
# error kind each for refused, reset, truncated, malformed and hung requests;
# 300 concurrent connections all complete; usage errors exit 2 with one line.
# Needs $INFERD_HTTP_LOAD (the tool), $INFERD and $INFERD_FIXTURES (lib.sh).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

: "${INFERD_HTTP_LOAD:?INFERD_HTTP_LOAD must name the inferd-http-load binary}"
command -v python3 >/dev/null || fail "python3 is needed for the test server"

server_pid=""
# Stops the test server, then cleans up as lib.sh does (its cleanup() where
# it has one).
stop_all() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if declare -F cleanup >/dev/null; then
        cleanup
    elif [[ "${INFERD_TEST_KEEP:-0}" == 1 ]]; then
        echo "kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
trap stop_all EXIT

# The server: 200 JSON on /ok, 503 on /busy, alternating on /mixed, a chunked
# (SSE-like) body on /chunked, a body delimited by the close on /untilclose,
# half a body then close on /truncate, a close with no response on /reset, a
# broken status line on /malformed, a 30 s sleep on /slow; /auth and /echo
# check the request the tool sent. It writes its port to a file once bound.
cat >"$tmp/server.py" <<'EOF'
import itertools, json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mixed = itertools.count()
mixed_lock = threading.Lock()
CHUNKS = [b"data: {\"n\":1}\n\n", b"data: {\"n\":22}\n\n", b"data: [DONE]\n\n"]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.route(b"")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.route(self.rfile.read(n) if n else b"")

    def route(self, body):
        p = self.path
        if p == "/ok":
            self.reply(200, b'{"ok":true}')
        elif p == "/busy":
            self.reply(503, b'{"error":"busy"}')
        elif p == "/mixed":
            with mixed_lock:
                n = next(mixed)
            self.reply(200 if n % 2 == 0 else 503, b"{}")
        elif p == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for c in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif p == "/untilclose":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * 5000)
            self.close_connection = True
        elif p == "/truncate":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
        elif p == "/reset":
            self.close_connection = True
        elif p == "/malformed":
            self.wfile.write(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n")
            self.close_connection = True
        elif p == "/slow":
            time.sleep(30)
            self.reply(200, b"{}")
        elif p == "/auth":
            ok = self.headers.get("Authorization") == "Bearer sekret"
            self.reply(200 if ok else 401, b"{}")
        elif p == "/echo":
            try:
                ok = (json.loads(body) == {"prompt": "Once upon a time", "max_tokens": 16}
                      and self.headers.get("Content-Type") == "application/json"
                      and self.headers.get("X-Load") == "yes")
            except ValueError:
                ok = False
            self.reply(200 if ok else 400, b"{}")
        else:
            self.reply(404, b"{}")

class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

srv = Server(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
srv.serve_forever()
EOF

python3 "$tmp/server.py" "$tmp/port" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 200); do
    [[ -s "$tmp/port" ]] && break
    kill -0 "$server_pid" 2>/dev/null || fail "test server died: $(cat "$tmp/server.log")"
    sleep 0.1
done
[[ -s "$tmp/port" ]] || fail "test server did not start: $(cat "$tmp/server.log")"
base="http://127.0.0.1:$(cat "$tmp/port")"

# Run the tool, capturing stdout, stderr and the exit status; prints the status.
load() {
    local rc=0
    "$INFERD_HTTP_LOAD" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    echo "$rc"
}

# Run it with --json; it must exit 0 and print one line.
load_json() {
    local rc
    rc=$(load --json "$@")
    [[ "$rc" == 0 ]] || fail "inferd-http-load $* exited $rc: $(cat "$tmp/err")"
    [[ $(wc -l <"$tmp/out") == 1 ]] || fail "--json must print one line: $(cat "$tmp/out")"
}

# Every request sent ends exactly once: as a status or as one error kind.
check_sums() {
    check '.sent == .requests'
    check '.completed + ([.errors[]] | add) == .sent'
    check '([.status[]] | add // 0) == .completed'
}

expect_usage() { # expect_usage SUBSTRING ARGS...
    local msg=$1 rc
    shift
    rc=$(load "$@")
    [[ "$rc" == 2 ]] || fail "inferd-http-load $* exited $rc, expected 2: $(cat "$tmp/err")"
    [[ $(wc -l <"$tmp/err") -eq 1 ]] || fail "inferd-http-load $*: expected one error line, got: $(cat "$tmp/err")"
    grep -qF -- "$msg" "$tmp/err" || fail "inferd-http-load $*: error '$(cat "$tmp/err")' lacks '$msg'"
}

no_errors='.errors == {"connect":0,"reset":0,"truncated":0,"malformed":0,"timeout":0}'

# --- plain 200s, a new connection per request ----------------------------
load_json --url "$base/ok" --concurrency 10 --requests 50
check_sums
check '.requests == 50 and .completed == 50 and .status == {"200": 50}'
check "$no_errors"
check '.connections == 50 and .keep_alive == false'
check '.body_bytes == 50 * 11'
check '.latency_ms.n == 50 and .latency_200_ms.n == 50 and .ttfb_ms.n == 50'
check '.latency_ms.p50 <= .latency_ms.p90 and .latency_ms.p90 <= .latency_ms.p99 and
       .latency_ms.p99 <= .latency_ms.max and .latency_ms.p50 > 0'
check '.ttfb_ms.p50 <= .ttfb_ms.p99 and .ttfb_ms.p99 <= .latency_ms.max'
check '.wall_s > 0 and .requests_per_s > 0'

# --- keep-alive: four connections carry forty requests --------------------
load_json --url "$base/ok" --concurrency 4 --requests 40 --keep-alive
check_sums
check '.completed == 40 and .status == {"200": 40} and .connections == 4'

# --- 503s, and a mix that must add up -------------------------------------
load_json --url "$base/busy" --concurrency 5 --requests 20
check_sums
check '.status == {"503": 20} and .latency_200_ms == null and .latency_ms.n == 20'
load_json --url "$base/mixed" --concurrency 8 --requests 64
check_sums
check '.status == {"200": 32, "503": 32}'
check "$no_errors"

# --- chunked (SSE-like) and read-until-close bodies -----------------------
load_json --url "$base/chunked" --concurrency 4 --requests 12
check_sums
check '.status == {"200": 12} and .body_bytes == 12 * (15 + 16 + 14)'
check "$no_errors"
load_json --url "$base/chunked" --concurrency 2 --requests 10 --keep-alive
check '.status == {"200": 10} and .connections == 2'
load_json --url "$base/untilclose" --concurrency 3 --requests 9 --keep-alive
check_sums
check '.status == {"200": 9} and .body_bytes == 9 * 5000 and .connections == 9'

# --- a POST body, headers and the API key reach the server ----------------
echo '{"prompt":"Once upon a time","max_tokens":16}' >"$tmp/body.json"
load_json --url "$base/echo" --body '{"prompt":"Once upon a time","max_tokens":16}' \
    --header 'X-Load: yes' --concurrency 3 --requests 6
check '.method == "POST" and .status == {"200": 6}'
load_json --url "$base/echo" --body-file "$tmp/body.json" --header 'X-Load: yes' --concurrency 2
check '.status == {"200": 2}'
load_json --url "$base/echo" --body '{"prompt":"other"}' --header 'X-Load: yes' --concurrency 2
check '.status == {"400": 2}'
load_json --url "$base/auth" --api-key sekret --concurrency 2 --requests 4
check '.method == "GET" and .status == {"200": 4}'
load_json --url "$base/auth" --api-key wrong --concurrency 2 --requests 4
check '.status == {"401": 4}'

# --- each failure is counted once, under its own kind ---------------------
load_json --url "$base/truncate" --concurrency 4 --requests 8
check_sums
check '.completed == 0 and .errors.truncated == 8 and .status == {}'
check '.first_error.truncated | test("after [0-9]+ response bytes")'
check '.latency_ms == null and .ttfb_ms == null'

load_json --url "$base/reset" --concurrency 3 --requests 6
check_sums
check '.completed == 0 and .errors.reset == 6'

load_json --url "$base/malformed" --concurrency 3 --requests 6
check_sums
check '.completed == 0 and .errors.malformed == 6'
check '.first_error.malformed == "bad status code"'

load_json --url "$base/slow" --concurrency 3 --requests 3 --timeout-s 1
check_sums
check '.completed == 0 and .errors.timeout == 3'
check '.first_error.timeout | test("waiting for the response")'

closed_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
load_json --url "http://127.0.0.1:$closed_port/ok" --concurrency 4 --requests 10
check_sums
check '.completed == 0 and .errors.connect == 10 and .connections <= 10'
check '.first_error.connect | test("refused")'

# --- 300 concurrent connections, all complete; then a ramped run ----------
load_json --url "$base/ok" --concurrency 300
check_sums
check '.requests == 300 and .completed == 300 and .status == {"200": 300}'
check "$no_errors"
load_json --url "$base/ok" --concurrency 20 --requests 40 --ramp-ms 200
check '.completed == 40'
check "$no_errors"

# --- the table ------------------------------------------------------------
[[ $(load --url "$base/mixed" --concurrency 2 --requests 4) == 0 ]] || fail "table run: $(cat "$tmp/err")"
grep -qE '^status +200: 2  503: 2$' "$tmp/out" || fail "table status row: $(cat "$tmp/out")"
grep -qE '^requests/s +[0-9]' "$tmp/out" || fail "table requests/s row: $(cat "$tmp/out")"
grep -qE '^latency ms +p50 [0-9.]+  p90 [0-9.]+  p99 [0-9.]+  max [0-9.]+' "$tmp/out" \
    || fail "table latency row: $(cat "$tmp/out")"
[[ $(load --help) == 0 ]] && grep -q '^usage: inferd-http-load' "$tmp/out" || fail "--help"

# --- usage errors: exit 2, one precise line; a missing file: exit 1 -------
expect_usage "--url is required" --concurrency 1
expect_usage "--concurrency N is required" --url "$base/ok"
expect_usage "--concurrency must be an integer in 1..10000, got '0'" --url "$base/ok" --concurrency 0
expect_usage "got '10001'" --url "$base/ok" --concurrency 10001
expect_usage "got '-3'" --url "$base/ok" --concurrency -3
expect_usage "--requests must be an integer in 1..10000000, got 'x'" --url "$base/ok" --concurrency 1 --requests x
expect_usage "--method must be POST or GET, got 'PUT'" --url "$base/ok" --concurrency 1 --method PUT
expect_usage "--body and --body-file are mutually exclusive" --url "$base/ok" --concurrency 1 --body '{}' --body-file "$tmp/body.json"
expect_usage "a body needs --method POST" --url "$base/ok" --concurrency 1 --method GET --body '{}'
expect_usage "--header must look like 'Name: value', got 'NoColon'" --url "$base/ok" --concurrency 1 --header NoColon
expect_usage "--header 'Content-Length' is set by the tool" --url "$base/ok" --concurrency 1 --header 'Content-Length: 3'
expect_usage "--timeout-s must be a number of seconds in (0, 86400], got '0'" --url "$base/ok" --concurrency 1 --timeout-s 0
expect_usage "--ramp-ms must be an integer in 0..3600000, got '1.5'" --url "$base/ok" --concurrency 1 --ramp-ms 1.5
expect_usage "https is not supported" --url https://127.0.0.1/v1 --concurrency 1
expect_usage "--url must start with http://, got 'ftp://x'" --url ftp://x --concurrency 1
expect_usage "port must be 1..65535, got '0'" --url http://127.0.0.1:0/ --concurrency 1
expect_usage "unknown option '--bogus'" --url "$base/ok" --concurrency 1 --bogus
expect_usage "unexpected argument 'extra'" --url "$base/ok" --concurrency 1 extra
expect_usage "--url needs a value" --concurrency 1 --url
rc=$(load --url "$base/ok" --concurrency 1 --body-file "$tmp/missing.json")
[[ "$rc" == 1 ]] || fail "missing --body-file exited $rc"
grep -qF "$tmp/missing.json" "$tmp/err" || fail "missing --body-file message: $(cat "$tmp/err")"

# After all of that the server still answers.
load_json --url "$base/ok" --concurrency 2 --requests 2
check '.status == {"200": 2}'
echo "test_http_load: all checks passed"
