#!/usr/bin/env bash
# The Unix-socket door: `inferd serve --unix PATH` serves the whole HTTP API
# on a Unix-domain socket (curl --unix-socket): completions plain and
# streamed, KServe, operations, errors; the socket file's mode (0600, or
# --unix-mode); a stale socket file replaced, a live one or a file that is
# not a socket refused (exit 1, one line, the file untouched); bad options
# (exit 2); the file removed at exit; a malformed request on the socket
# answered 400 and the socket still serving; per-client limits apply to the
# socket's user.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

sock="$tmp/inferd.sock"
# ucurl ARGS...: curl through the socket; the body to $tmp/out, the status
# printed.
ucurl() { curl -s --unix-socket "$sock" -o "$tmp/out" -w '%{http_code}' "$@"; }
uexpect() { # uexpect STATUS ARGS...
    local want=$1 got
    shift
    got=$(ucurl "$@")
    [[ "$got" == "$want" ]] || fail "curl --unix-socket $*: $got, expected $want: $(head -c 300 "$tmp/out")"
}
good='{"prompt":"Once upon a time","max_tokens":8,"temperature":0}'

# ---- options ---------------------------------------------------------------
expect_error 2 "--unix-mode: '0999' is not an octal file mode" serve -m "$model" --unix "$sock" \
    --unix-mode 0999
expect_error 2 "--unix-mode: give --unix PATH too" serve -m "$model" --unix-mode 0600
expect_error 2 "--unix serves the HTTP API: not with --no-http" serve -m "$model" --unix "$sock" \
    --no-http --nats nats://127.0.0.1:1
long=$(printf 'x%.0s' {1..120})
expect_error 2 "unix: the socket path must have 1 to 107 bytes" serve -m "$model" --unix "$tmp/$long"
# A file that is not a socket is never replaced.
echo keep >"$tmp/file"
expect_error 1 "is not a socket (not replaced)" serve -m "$model" --unix "$tmp/file"
[[ "$(cat "$tmp/file")" == keep ]] || fail "the regular file was changed"

# ---- a stale socket file (its server died) is replaced -----------------------
/usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$sock"
[[ -S "$sock" ]] || fail "no stale socket made"
serve_start -m "$model" -t 1 -np 2 --unix "$sock"
serve_wait_ready
grep -q "listening on unix:$sock (mode 0600)" "$tmp/serve.log" || fail "no unix line: $(cat "$tmp/serve.log")"
[[ "$(stat -c %a "$sock")" == 600 ]] || fail "socket mode $(stat -c %a "$sock"), not 600"

# ---- the API through the socket ----------------------------------------------
uexpect 200 http://localhost/health
jq -e '.status == "ok"' "$tmp/out" >/dev/null || fail "/health: $(cat "$tmp/out")"
uexpect 200 -H 'Content-Type: application/json' -d "$good" http://localhost/v1/completions
unix_text=$(jq -r '.choices[0].text' "$tmp/out")
expect_http 200 POST /v1/completions "$good"
[[ "$(jq -r '.choices[0].text' "$tmp/out")" == "$unix_text" ]] ||
    fail "the socket's completion differs from TCP's: '$unix_text'"
ucurl -N -d '{"prompt":"Once upon a time","max_tokens":4,"stream":true}' \
    http://localhost/v1/completions >/dev/null
grep -c '^data: {' "$tmp/out" | grep -qx 5 && grep -q '^data: \[DONE\]' "$tmp/out" ||
    fail "a stream over the socket: $(cat "$tmp/out")"
uexpect 200 -d '{"inputs":[{"name":"text_input","datatype":"BYTES","shape":[1],"data":["Once upon a time"]}],"parameters":{"max_tokens":4}}' \
    http://localhost/v2/models/stories260K/infer
jq -e '.outputs[0].name == "text_output"' "$tmp/out" >/dev/null || fail "KServe over the socket: $(cat "$tmp/out")"
uexpect 200 http://localhost/metrics
grep -q '^inferd_http_connections ' "$tmp/out" || fail "/metrics over the socket"
uexpect 400 -d '{"prompt": "x",' http://localhost/v1/completions
jq -e '.error.code == "invalid_json"' "$tmp/out" >/dev/null || fail "bad JSON over the socket: $(cat "$tmp/out")"

# A malformed head on the socket: 400, closed, and the socket still serves.
/usr/bin/python3 - "$sock" >"$tmp/raw" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n")
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
print(out.decode("utf-8", "replace"))
PY
grep -q '^HTTP/1.1 400' "$tmp/raw" && grep -q 'a NUL byte in a header value' "$tmp/raw" ||
    fail "a NUL over the socket: $(cat "$tmp/raw")"
uexpect 200 -d "$good" http://localhost/v1/completions

# ---- a live socket is not taken over -----------------------------------------
expect_error 1 "is in use by another server" serve -m "$model" --port 0 --unix "$sock"
uexpect 200 http://localhost/health

# ---- removed at exit -----------------------------------------------------------
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc: $(tail -5 "$tmp/serve.log")"
[[ ! -e "$sock" ]] || fail "the socket file is still there after exit"

# ---- --unix-mode, and the per-client limit for the socket's user ----------------
serve_start -m "$model" -t 1 -np 2 --unix "$sock" --unix-mode 0660 --max-connections 16 \
    --max-client-connections 2
serve_wait_ready
[[ "$(stat -c %a "$sock")" == 660 ]] || fail "socket mode $(stat -c %a "$sock"), not 660"
/usr/bin/python3 - "$sock" <<'PY'
import socket, sys, time
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s
def get(s, p):
    s.sendall(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    d = b""
    while b"\r\n\r\n" not in d:
        d += s.recv(65536)
    return int(d.split(b" ")[1])
held = [conn(), conn()]
for s in held:
    if get(s, "/v1/models") != 200:
        sys.exit("FAIL: the first two connections of this user should be served")
third = conn()
st = get(third, "/v1/models")
if st != 503:
    sys.exit(f"FAIL: the third connection of this user got {st}, expected 503")
if get(conn(), "/health") != 200:
    sys.exit("FAIL: /health should be served beyond the limit")
PY
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
[[ ! -e "$sock" ]] || fail "the socket file is still there after exit"
echo PASS
