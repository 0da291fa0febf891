#!/usr/bin/env bash
# inferd serve --ready-callback: once the model is loaded the worker POSTs
# its endpoint and capacity to a pool manager (here a python http.server);
# 5xx answers and refused connections are retried with backoff, a 4xx is
# final and the worker exits 1 saying why.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# A pool manager: answers POST /ready with the statuses listed in $2 (one
# per request, the last one repeated), writes each body to $1/bodyN.json,
# and its port to $1/port.
cat >"$tmp/pool.py" <<'PY'
import http.server, os, sys
out, statuses = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global n
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n += 1
        with open(os.path.join(out, "body%d.json" % n), "wb") as f:
            f.write(body)
        st = statuses[min(n, len(statuses)) - 1]
        msg = b"unknown pool" if st == 400 else b"ok"
        self.send_response(st)
        self.send_header("Content-Length", str(len(msg)))
        self.end_headers()
        self.wfile.write(msg)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
with open(os.path.join(out, "port.tmp"), "w") as f:
    f.write(str(s.server_address[1]))
os.rename(os.path.join(out, "port.tmp"), os.path.join(out, "port"))
s.serve_forever()
PY
pool_pid=
start_pool() { # start_pool DIR STATUSES
    mkdir -p "$1"
    python3 "$tmp/pool.py" "$1" "$2" &
    pool_pid=$!
    for _ in $(seq 1 100); do [[ -s "$1/port" ]] && break; sleep 0.05; done
    [[ -s "$1/port" ]] || fail "the pool manager did not start"
    pool_url="http://127.0.0.1:$(cat "$1/port")/ready"
}
stop_pool() { kill "$pool_pid" 2>/dev/null || true; wait "$pool_pid" 2>/dev/null || true; }
trap 'stop_pool; cleanup' EXIT

# ---- 503, 503, then 200: announced on the third attempt ----
start_pool "$tmp/p1" 503,503,200
serve_start -m "$model" -t 1 -np 2 --ready-callback "$pool_url" --pool-id pool-a --worker-id w-1
serve_wait_ready
for _ in $(seq 1 200); do [[ -s "$tmp/p1/body3.json" ]] && break; sleep 0.05; done
[[ -s "$tmp/p1/body3.json" ]] || fail "no third attempt: $(cat "$tmp/serve.log")"
cmp -s "$tmp/p1/body1.json" "$tmp/p1/body3.json" || fail "the retried bodies differ"
expect_http 200 GET /v2
version=$(jq -r .version "$tmp/out")
jq -e --arg ep "$url" --arg v "$version" --arg m "$model" \
    '.worker_id == "w-1" and .pool_id == "pool-a" and .endpoint == $ep and .memory_bytes > 0 and
     .slots_total == 2 and .capabilities == {"engine": "inferd", "engine_version": $v, "model_ref": $m}' \
    "$tmp/p1/body3.json" >/dev/null || fail "announcement: $(cat "$tmp/p1/body3.json")"
grep -q 'attempt 1 of 8 failed (HTTP 503: ok)' "$tmp/serve.log" || fail "no retry in the log: $(cat "$tmp/serve.log")"
grep -q 'accepted the worker (HTTP 200, attempt 3)' "$tmp/serve.log" || fail "no acceptance in the log"
still_serves
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
stop_pool

# ---- no --worker-id: a random UUID; no --pool-id: null ----
start_pool "$tmp/p2" 201
serve_start -m "$model" -t 1 --ready-callback "$pool_url"
serve_wait_ready
for _ in $(seq 1 200); do [[ -s "$tmp/p2/body1.json" ]] && break; sleep 0.05; done
jq -e '(.worker_id | test("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")) and .pool_id == null' \
    "$tmp/p2/body1.json" >/dev/null || fail "announcement: $(cat "$tmp/p2/body1.json")"
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
stop_pool

# ---- a 4xx is final: logged, exit 1 ----
start_pool "$tmp/p3" 400
serve_start -m "$model" -t 1 --ready-callback "$pool_url" --pool-id nope
rc=0
wait "$serve_pid" || rc=$?
serve_pid=
[[ "$rc" == 1 ]] || fail "a 400 answer: exit $rc, expected 1"
grep -q "answered 400: unknown pool" "$tmp/serve.log" || fail "the 400 is not reported: $(cat "$tmp/serve.log")"
[[ ! -e "$tmp/p3/body2.json" ]] || fail "a 400 was retried"
stop_pool

# ---- nobody listening: 3 attempts, then exit 1 ----
free=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
serve_start -m "$model" -t 1 --ready-callback "http://127.0.0.1:$free/ready" --ready-retries 3
rc=0
wait "$serve_pid" || rc=$?
serve_pid=
[[ "$rc" == 1 ]] || fail "an unreachable callback: exit $rc, expected 1"
grep -q "failed 3 times" "$tmp/serve.log" || fail "no give-up message: $(cat "$tmp/serve.log")"
[[ $(grep -c 'retrying in' "$tmp/serve.log") == 2 ]] || fail "expected 2 retries: $(cat "$tmp/serve.log")"
echo "ok"
