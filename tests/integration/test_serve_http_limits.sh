#!/usr/bin/env bash
# inferd serve against clients that hold connections: 2000 idle connections
# cost no threads and lock nobody out; connections that trickle a request
# are closed at the receive timeout however they trickle; a client beyond
# its per-address limit gets a 503 with Retry-After at once while other
# addresses are served; at the total limit the oldest idle keep-alive
# connection makes room, fresh connections beyond it get 503, /health is
# served in the reserve and on the operations port. Each case ends with a
# good request that must succeed. Raw sockets (python3), 127.0.0.x sources.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

cat >"$tmp/client.py" <<'EOF'
import json, os, resource, socket, sys, time

port = int(os.environ["PORT"])
pid = int(os.environ["PID"])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

def conn(src="127.0.0.1", p=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", p or port))
    return s

def request(s, method, path, body=None, keep=True):
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
    head += "Content-Type: application/json\r\n" if body is not None else ""
    head += "" if keep else "Connection: close\r\n"
    s.sendall(head.encode() + b"\r\n" + data)

def response(s):
    """Status, headers (lower-case names), body of one response."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            fail(f"connection closed before a response ({buf[:200]!r})")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, hdrs, rest[:n]

def call(method, path, body=None, src="127.0.0.1", p=None):
    s = conn(src, p)
    request(s, method, path, body, keep=False)
    r = response(s)
    s.close()
    return r

GOOD = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}

def good(src="127.0.0.1", what=""):
    st, _, body = call("POST", "/v1/completions", GOOD, src)
    if st != 200:
        fail(f"{what}: a good completion got {st}: {body[:300]!r}")
    text = json.loads(body)["choices"][0]["text"]
    if not text:
        fail(f"{what}: empty completion")
    return text

def health(src="127.0.0.1", p=None, what=""):
    st, _, body = call("GET", "/health", None, src, p)
    if st != 200:
        fail(f"{what}: /health got {st}: {body[:200]!r}")

def proc(field):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(field + ":"):
            return int(l.split()[1])
    fail("no " + field)

def closed_by_server(s):
    """True when the server closed s (EOF or reset), without waiting."""
    s.setblocking(False)
    try:
        d = s.recv(4096)
        return d == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        s.setblocking(True)

def expect_503(s, what):
    t0 = time.monotonic()
    request(s, "POST", "/v1/completions", GOOD)
    st, h, body = response(s)
    dt = time.monotonic() - t0
    if st != 503 or h.get("retry-after") != "1":
        fail(f"{what}: expected 503 with Retry-After: 1, got {st} {h}")
    err = json.loads(body)["error"]
    if err["code"] != "overloaded" or "too many connections" not in err["message"]:
        fail(f"{what}: unexpected error {err}")
    if dt > 2.0:
        fail(f"{what}: the 503 took {dt:.2f} s")
    return dt

def idle(n):
    """2000 idle connections: half after one keep-alive request, half that
    sent nothing. Threads must not grow with them."""
    threads0, rss0 = proc("Threads"), proc("VmRSS")
    conns = []
    for i in range(n // 2):
        s = conn()
        request(s, "GET", "/health")
        conns.append(s)
    for s in conns:
        st, _, _ = response(s)
        if st != 200:
            fail(f"idle: a keep-alive /health got {st}")
    for i in range(n - n // 2):
        conns.append(conn())
    time.sleep(0.5)
    threads1, rss1 = proc("Threads"), proc("VmRSS")
    health(what="idle")
    t0 = time.monotonic()
    good(what="idle")
    dt = time.monotonic() - t0
    print(f"idle: {len(conns)} connections held; threads {threads0} -> {threads1}; "
          f"RSS {rss0} -> {rss1} kB; a good completion took {dt*1000:.0f} ms")
    if threads1 > threads0 + 2:
        fail(f"idle: threads grew from {threads0} to {threads1} with {n} connections")
    closed = sum(closed_by_server(s) for s in conns)
    if closed:
        fail(f"idle: {closed} idle connections were closed within the timeouts")
    for s in conns:
        s.close()

def trickle(timeout_s):
    """Connections that trickle the headers or the body a byte at a time
    are closed at the receive timeout, not later."""
    heads, bodies = [], []
    t0 = time.monotonic()
    for i in range(20):
        s = conn()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        heads.append(s)
    for i in range(5):
        s = conn()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        bodies.append(s)
    open_ = heads + bodies
    ended = {}
    good_done = False
    while open_ and time.monotonic() - t0 < timeout_s + 5:
        for s in list(open_):
            try:
                s.send(b"X" if s in heads else b" ")
            except (BrokenPipeError, ConnectionResetError):
                pass
            if closed_by_server(s):
                ended[s] = time.monotonic() - t0
                open_.remove(s)
        if not good_done and time.monotonic() - t0 > 1:
            good(what="trickle")
            good_done = True
        time.sleep(0.4)
    if open_:
        fail(f"trickle: {len(open_)} trickling connections still open after {timeout_s + 5} s")
    lo, hi = min(ended.values()), max(ended.values())
    print(f"trickle: 25 trickling connections closed after {lo:.2f}..{hi:.2f} s "
          f"(receive timeout {timeout_s} s)")
    if lo < timeout_s - 0.5 or hi > timeout_s + 2:
        fail(f"trickle: closed after {lo:.2f}..{hi:.2f} s, not at {timeout_s} s")
    good(what="after trickle")

def wait_admitted(ops_port, n, what):
    """Until the server has accepted and admitted @n connections (a busy
    machine may not have accepted them all when the client's connect()
    returned)."""
    end = time.time() + 30
    while time.time() < end:
        st, _, body = call("GET", "/v1/status", None, "127.0.0.1", ops_port)
        if st == 200 and json.loads(body)["http"]["connections_admitted"] >= n:
            return
        time.sleep(0.05)
    fail(f"{what}: the server never admitted {n} connections")

def per_client(limit, ops_port):
    held = [conn() for _ in range(limit)]
    wait_admitted(ops_port, limit, "per-client")
    s = conn()
    dt = expect_503(s, "per-client")
    s.close()
    health(what="per-client reserve")
    text = good("127.0.0.2", "per-client: another address")
    health(p=ops_port, what="ops port")
    st, _, _ = call("GET", "/metrics", None, "127.0.0.1", ops_port)
    if st != 200:
        fail(f"ops port: /metrics got {st}")
    st, _, body = call("POST", "/v1/completions", GOOD, "127.0.0.1", ops_port)
    if st != 404:
        fail(f"ops port: a completion got {st}, expected 404: {body[:200]!r}")
    for s in held:
        s.close()
    time.sleep(0.3)
    good(what="per-client: after the held connections closed")
    print(f"per-client: {limit} held, the next answered 503 in {dt*1000:.1f} ms; "
          "127.0.0.2 served; ops port served /health and /metrics, 404 for a completion")

def total(max_conn, per_client, ops_port):
    srcs = [f"127.0.0.{i}" for i in range(10, 10 + max_conn // per_client)]
    fresh = [conn(a) for a in srcs for _ in range(per_client)]
    wait_admitted(ops_port, len(fresh), "total")
    s = conn("127.0.0.50")
    expect_503(s, "total, fresh connections")
    s.close()
    health("127.0.0.50", what="total reserve")
    # Make them idle keep-alive connections: each answers one request.
    for c in fresh:
        request(c, "GET", "/v1/models")
    for c in fresh:
        st, _, _ = response(c)
        if st != 200:
            fail(f"total: /v1/models got {st}")
    time.sleep(0.2)
    good("127.0.0.51", "total, idle connections")
    time.sleep(0.3)
    closed = sum(closed_by_server(c) for c in fresh)
    if closed != 1:
        fail(f"total: expected the oldest idle connection closed for room, {closed} were")
    for c in fresh:
        c.close()
    # The server sees those closes a moment later: wait (on the operations
    # port, which does not count) until they are gone, so that the next
    # connection does not find the limit reached.
    for _ in range(100):
        st, _, body = call("GET", "/v1/status", None, "127.0.0.1", ops_port)
        if st == 200 and json.loads(body)["http"]["connections_admitted"] == 0:
            break
        time.sleep(0.05)
    else:
        fail(f"total: connections still admitted after their clients closed: {body[:300]!r}")
    print(f"total: {max_conn} fresh connections -> 503 and /health served; "
          f"idle ones -> one closed for room and the new client served")

what = sys.argv[1]
if what == "idle":
    idle(int(sys.argv[2]))
elif what == "trickle":
    trickle(int(sys.argv[2]))
elif what == "limits":
    per_client(int(sys.argv[3]), int(sys.argv[4]))
    total(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
EOF

client() { PORT=$port PID=$serve_pid python3 "$tmp/client.py" "$@"; }

# 2000 idle connections.
serve_start -m "$model" -t 1 -np 2 --max-connections 2100 --max-client-connections 2100
serve_wait_ready
client idle 2000
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc after the idle connections"

# Trickling senders, receive timeout 3 s.
serve_start -m "$model" -t 1 -np 2 --receive-timeout 3
serve_wait_ready
client trickle 3
http GET /metrics >/dev/null
grep -q '^inferd_http_connections_closed_total{reason="receive_timeout"} 25$' "$tmp/out" ||
    fail "metrics: $(grep closed_total "$tmp/out")"
serve_stop

# Limits: 32 in all, 8 per address, and the operations port.
serve_start -m "$model" -t 1 -np 2 --max-connections 32 --max-client-connections 8 --ops-port 0
serve_wait_ready
ops_port=$(sed -n 's/.*operations on http:\/\/[^ ]*:\([0-9][0-9]*\) .*/\1/p' "$tmp/serve.log" | head -1)
[[ -n "$ops_port" ]] || fail "no operations port in the log: $(cat "$tmp/serve.log")"
client limits 32 8 "$ops_port"
http GET /metrics >/dev/null
grep -q '^inferd_http_refused_total 2$' "$tmp/out" || fail "metrics: $(grep refused "$tmp/out")"
grep -q '^inferd_http_connections_closed_total{reason="idle_for_room"} 1$' "$tmp/out" ||
    fail "metrics: $(grep closed_total "$tmp/out")"
still_serves
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
echo "PASS"
