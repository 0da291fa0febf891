#!/usr/bin/python3
"""The driver of bench/soak.sh (standard library only; the plot needs
python3-matplotlib or gnuplot).

  soak.py run --pid PID --port PORT --out DIR [--seconds N] [--api-key KEY]
              [--nats-url URL --worker-id ID] [--max-body B] [--conn-timeout S]
              [--http-workers N] [--nats-concurrency N] [--think-ms MS]
  soak.py plot CSV PNG

`run` drives an `inferd serve` (pid PID, HTTP on 127.0.0.1:PORT) for N
seconds with a mix of good, malformed and abandoned requests over HTTP (from
threads here) and NATS (bench/soak_nats.mjs, started here), samples the
server every 10 s and writes DIR/samples.csv, DIR/summary.md,
DIR/unexpected.txt and DIR/plot.png. Exit status 0 when every request got
what it should and the server lived, 1 otherwise.

HTTP kinds (expected result):
  completion, chat                 200, a JSON completion (good: timed)
  completion_stream, chat_stream   200, SSE chunks then [DONE] (good: timed)
  bad_json        400 invalid_json          bad_field   400 invalid_value temperature
  missing_prompt  400 missing_required_parameter prompt
  bad_route       404 not_found             bad_method  405 method_not_allowed
  oversize        413 request_too_large (fresh connection, body over --max-body)
  bad_auth        401 invalid_api_key (only with --api-key)
  abandon_stream  200 and a first SSE event, then the client closes (FIN or RST)
  abandon_nostream  the request is sent and the socket closed at once
  abandon_upload  headers and part of the body, then the socket closed
  slow_sender     the request trickled in 10-byte pieces over ~3 s: 200
  idle_reuse      a keep-alive connection idle 1..(conn-timeout/2) s, reused: 200
  idle_expire     idle conn-timeout + 3 s: the server must have closed it
"""
import argparse
import csv
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STOP = threading.Event()  # set when the server dies: the clients stop at once
SAMPLE_S = 10.0
GOOD_HTTP = ("completion", "chat", "completion_stream", "chat_stream")
GOOD_NATS = ("nats_good_queue", "nats_good_worker", "nats_good_chat")


def pct(values, p):
    """Nearest-rank percentile of VALUES (None when empty)."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.total = {}          # kind -> count
        self.bad = {}            # kind -> unexpected count
        self.win = {}            # kind -> count in the current window
        self.win_bad = 0
        self.lat = {"http": [], "nats": []}      # current window, ms
        self.all_lat = {"http": [], "nats": []}  # whole run
        self.examples = []       # (t, kind, why), capped
        self.n_examples = 0
        self.t0 = time.monotonic()

    def add(self, kind, ok, ms=None, why=None):
        with self.lock:
            self.total[kind] = self.total.get(kind, 0) + 1
            self.win[kind] = self.win.get(kind, 0) + 1
            if not ok:
                self.bad[kind] = self.bad.get(kind, 0) + 1
                self.win_bad += 1
                self.n_examples += 1
                if len(self.examples) < 200:
                    self.examples.append((time.monotonic() - self.t0, kind, why))
            elif ms is not None:
                door = "nats" if kind in GOOD_NATS else "http" if kind in GOOD_HTTP else None
                if door:
                    self.lat[door].append(ms)
                    self.all_lat[door].append(ms)

    def window(self):
        with self.lock:
            w, self.win = self.win, {}
            lat, self.lat = self.lat, {"http": [], "nats": []}
            bad, self.win_bad = self.win_bad, 0
        return w, lat, bad


# ---- HTTP ------------------------------------------------------------------

class Unexpected(Exception):
    pass


class Http:
    def __init__(self, port, key, max_body):
        self.port = port
        self.key = key
        self.max_body = max_body

    def headers(self, auth=True):
        h = {"Content-Type": "application/json"}
        if self.key and auth:
            h["Authorization"] = "Bearer " + self.key
        return h

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def raw(self, timeout=60):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def raw_head(self, path, body, extra=""):
        auth = "Authorization: Bearer %s\r\n" % self.key if self.key else ""
        return ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%s%s"
                "Content-Length: %d\r\n\r\n" % (path, auth, extra, len(body))).encode()


def body_for(kind, max_tokens, stream=False):
    if kind.startswith("chat"):
        b = {"messages": [{"role": "user", "content": "Tell me a story"}]}
    else:
        b = {"prompt": "Once upon a time"}
    b.update(max_tokens=max_tokens, temperature=0)
    if stream:
        b["stream"] = True
    return b


def check_json_ok(kind, status, data, max_tokens):
    if status != 200:
        raise Unexpected("status %d: %s" % (status, data[:300]))
    try:
        js = json.loads(data)
        ch = js["choices"][0]
        text = ch["message"]["content"] if kind == "chat" else ch["text"]
        if not isinstance(text, str):
            raise Unexpected("no text")
        if not 0 <= js["usage"]["completion_tokens"] <= max_tokens:
            raise Unexpected("usage.completion_tokens %r" % js["usage"]["completion_tokens"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise Unexpected("bad body (%s): %s" % (e, data[:300]))


def read_sse(resp):
    """Read an SSE response to its [DONE]; return the data events."""
    events = []
    while True:
        line = resp.readline()
        if not line:
            raise Unexpected("stream ended without [DONE] after %d events" % len(events))
        line = line.rstrip(b"\r\n")
        if not line.startswith(b"data: "):
            continue
        payload = line[6:]
        if payload == b"[DONE]":
            resp.read()  # the end of the chunked body: the connection can be reused
            return events
        try:
            ev = json.loads(payload)
        except ValueError:
            raise Unexpected("SSE event not JSON: %r" % payload[:200])
        if "error" in ev:
            raise Unexpected("SSE error event: %s" % payload[:300])
        events.append(ev)


def expect_error(status, data, want_status, want_code, want_param=None):
    if status != want_status:
        raise Unexpected("status %d, expected %d: %s" % (status, want_status, data[:300]))
    try:
        err = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        raise Unexpected("not an OpenAI error body: %r" % data[:300])
    if err.get("code") != want_code:
        raise Unexpected("code %r, expected %s: %s" % (err.get("code"), want_code, data[:300]))
    if want_param is not None and err.get("param") != want_param:
        raise Unexpected("param %r, expected %s" % (err.get("param"), want_param))


def read_raw_response(s):
    """Read one HTTP response (Content-Length bodies) from raw socket S."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise Unexpected("connection closed before a response (%d bytes read)" % len(buf))
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return status, hdrs, rest[:n]


class HttpWorker(threading.Thread):
    """Loops over a weighted mix of kinds on one keep-alive connection
    (fresh raw sockets for the kinds that need them)."""

    def __init__(self, h, stats, deadline, think_ms, weights, seed):
        super().__init__(daemon=True)
        self.h, self.stats, self.deadline, self.think = h, stats, deadline, think_ms
        self.kinds = [k for k, _ in weights]
        self.weights = [w for _, w in weights]
        self.rng = random.Random(seed)
        self.c = None

    def keepalive(self):
        if self.c is None:
            self.c = self.h.conn()
        return self.c

    def drop(self):
        if self.c is not None:
            self.c.close()
            self.c = None

    def request(self, method, path, body, auth=True):
        c = self.keepalive()
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers=self.h.headers(auth))
        return c.getresponse()

    def run(self):
        while time.monotonic() < self.deadline and not STOP.is_set():
            kind = self.rng.choices(self.kinds, self.weights)[0]
            t0 = time.perf_counter()
            try:
                getattr(self, "k_" + kind)(kind)
                self.stats.add(kind, True, (time.perf_counter() - t0) * 1000)
            except Unexpected as e:
                self.stats.add(kind, False, why=str(e))
                self.drop()
            except (OSError, http.client.HTTPException) as e:
                self.stats.add(kind, False, why="%s: %s" % (type(e).__name__, e))
                self.drop()
                STOP.wait(0.2)
            if self.think:
                time.sleep(self.rng.random() * 2 * self.think / 1000)
        self.drop()

    # -- good
    def good(self, kind, stream):
        mt = self.rng.randint(8, 48)
        path = "/v1/chat/completions" if kind.startswith("chat") else "/v1/completions"
        r = self.request("POST", path, body_for(kind, mt, stream))
        if not stream:
            check_json_ok(kind, r.status, r.read(), mt)
            return
        if r.status != 200:
            raise Unexpected("status %d: %s" % (r.status, r.read()[:300]))
        ev = read_sse(r)
        if not ev or not all("choices" in e for e in ev):
            raise Unexpected("stream of %d events, not all chunks" % len(ev))

    def k_completion(self, kind):
        self.good(kind, False)

    def k_chat(self, kind):
        self.good(kind, False)

    def k_completion_stream(self, kind):
        self.good(kind, True)

    def k_chat_stream(self, kind):
        self.good(kind, True)

    # -- malformed, on the keep-alive connection (it must stay usable)
    def k_bad_json(self, kind):
        r = self.request("POST", "/v1/completions", b'{"prompt": "Once upon", "max_tokens": ')
        expect_error(r.status, r.read(), 400, "invalid_json")

    def k_bad_field(self, kind):
        path = self.rng.choice(["/v1/completions", "/v1/chat/completions"])
        b = body_for("chat" if "chat" in path else "completion", 4)
        b["temperature"] = 5
        r = self.request("POST", path, b)
        expect_error(r.status, r.read(), 400, "invalid_value", "temperature")

    def k_missing_prompt(self, kind):
        r = self.request("POST", "/v1/completions", {"max_tokens": 4})
        expect_error(r.status, r.read(), 400, "missing_required_parameter", "prompt")

    def k_bad_route(self, kind):
        r = self.request("POST", "/v1/complete", {"prompt": "x"})
        expect_error(r.status, r.read(), 404, "not_found")

    def k_bad_method(self, kind):
        r = self.request("GET", "/v1/completions", None)
        expect_error(r.status, r.read(), 405, "method_not_allowed")

    def k_bad_auth(self, kind):
        c = self.keepalive()
        c.request("POST", "/v1/completions", body=b'{"prompt":"Once","max_tokens":2}',
                  headers={"Content-Type": "application/json", "Authorization": "Bearer wrong-key"})
        r = c.getresponse()
        expect_error(r.status, r.read(), 401, "invalid_api_key")

    # -- fresh sockets
    def k_oversize(self, kind):
        body = json.dumps({"prompt": "a" * (self.h.max_body + 4096), "max_tokens": 1}).encode()
        s = self.h.raw()
        try:
            s.sendall(self.h.raw_head("/v1/completions", body))
            try:
                s.sendall(body)
            except OSError:
                pass  # the server may answer and close before taking it all
            status, hdrs, data = read_raw_response(s)
            expect_error(status, data, 413, "request_too_large")
            if hdrs.get("connection", "").lower() != "close":
                raise Unexpected("413 without Connection: close")
        finally:
            s.close()

    def k_abandon_stream(self, kind):
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
                           "stream": True, "temperature": 0.8}).encode()
        s = self.h.raw()
        try:
            s.sendall(self.h.raw_head("/v1/completions", body) + body)
            buf = b""
            while not first_event(buf):
                d = s.recv(4096)
                if not d:
                    raise Unexpected("closed before the first SSE event: %r" % buf[:300])
                buf += d
            if not buf.startswith(b"HTTP/1.1 200"):
                raise Unexpected("abandon_stream: %r" % buf[:300])
            if self.rng.random() < 0.5:  # half by RST, half by FIN
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        finally:
            s.close()

    def k_abandon_nostream(self, kind):
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": True}).encode()
        s = self.h.raw()
        try:
            s.sendall(self.h.raw_head("/v1/completions", body) + body)
            time.sleep(self.rng.random() * 0.02)
        finally:
            s.close()

    def k_abandon_upload(self, kind):
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 8}).encode()
        s = self.h.raw()
        try:
            s.sendall(self.h.raw_head("/v1/completions", body) + body[: len(body) // 3])
            time.sleep(self.rng.random() * 0.2)
        finally:
            s.close()


def first_event(buf):
    """BUF (a response so far) holds its head and a whole first SSE event."""
    head, sep, body = buf.partition(b"\r\n\r\n")
    i = body.find(b"data: ")
    return bool(sep) and i >= 0 and body.find(b"\n\n", i) >= 0


class SlowWorker(threading.Thread):
    """Trickles whole requests in 10-byte pieces, 150 ms apart."""

    def __init__(self, h, stats, deadline, seed):
        super().__init__(daemon=True)
        self.h, self.stats, self.deadline = h, stats, deadline
        self.rng = random.Random(seed)

    def run(self):
        while time.monotonic() < self.deadline and not STOP.is_set():
            t0 = time.perf_counter()
            mt = self.rng.randint(4, 16)
            body = json.dumps(body_for("completion", mt)).encode()
            req = self.h.raw_head("/v1/completions", body, "Connection: close\r\n") + body
            try:
                s = self.h.raw()
                try:
                    for i in range(0, len(req), 10):
                        s.sendall(req[i:i + 10])
                        time.sleep(0.15)
                    status, _, data = read_raw_response(s)
                finally:
                    s.close()
                check_json_ok("completion", status, data, mt)
                self.stats.add("slow_sender", True, (time.perf_counter() - t0) * 1000)
            except Unexpected as e:
                self.stats.add("slow_sender", False, why=str(e))
            except OSError as e:
                self.stats.add("slow_sender", False, why="%s: %s" % (type(e).__name__, e))
                STOP.wait(0.2)  # no storm of failures against a dead server


class IdleWorker(threading.Thread):
    """One keep-alive connection at a time: a request, an idle pause, then
    either another request on it (idle under conn-timeout) or, one time in
    five, a check that the server closed it after conn-timeout."""

    def __init__(self, h, stats, deadline, conn_timeout, seed):
        super().__init__(daemon=True)
        self.h, self.stats, self.deadline, self.ct = h, stats, deadline, conn_timeout
        self.rng = random.Random(seed)

    def once(self, c):
        c.request("POST", "/v1/completions", body=json.dumps(body_for("completion", 4)).encode(),
                  headers=self.h.headers())
        r = c.getresponse()
        check_json_ok("completion", r.status, r.read(), 4)

    def run(self):
        while time.monotonic() < self.deadline and not STOP.is_set():
            expire = self.rng.random() < 0.2
            idle = self.ct + 3 if expire else self.rng.uniform(1, self.ct / 2)
            if time.monotonic() + idle > self.deadline:
                STOP.wait(max(0, self.deadline - time.monotonic()))
                break
            kind = "idle_expire" if expire else "idle_reuse"
            c = self.h.conn()
            try:
                self.once(c)
                if STOP.wait(idle):
                    break
                if expire:
                    c.sock.settimeout(2)
                    try:
                        d = c.sock.recv(1)
                    except socket.timeout:
                        raise Unexpected("still open after %.0f s idle (conn-timeout %d)" % (idle, self.ct))
                    except ConnectionResetError:
                        d = b""
                    if d:
                        raise Unexpected("unexpected bytes on an idle connection: %r" % d)
                else:
                    self.once(c)
                self.stats.add(kind, True)
            except Unexpected as e:
                self.stats.add(kind, False, why=str(e))
            except (OSError, http.client.HTTPException) as e:
                self.stats.add(kind, False, why="%s: %s" % (type(e).__name__, e))
            finally:
                c.close()


def nats_reader(proc, stats):
    for line in proc.stdout:
        try:
            r = json.loads(line)
        except ValueError:
            stats.add("nats_driver", False, why="bad line %r" % line[:200])
            continue
        stats.add(r["k"], r["ok"], r.get("ms"), r.get("err"))


# ---- sampling --------------------------------------------------------------

def proc_sample(pid):
    """RSS (KiB), threads, open fds, CPU seconds of PID; None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            st = dict(ln.split(":", 1) for ln in f if ":" in ln)
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        fds = len(os.listdir("/proc/%d/fd" % pid))
        if st.get("State", "").strip().startswith("Z"):
            return None
    except (OSError, ValueError):
        return None
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"rss_kb": int(st["VmRSS"].split()[0]), "threads": int(st["Threads"]), "fds": fds, "cpu_s": cpu}


def server_status(h):
    try:
        c = h.conn()
        c.request("GET", "/v1/status", headers=h.headers())
        r = c.getresponse()
        js = json.loads(r.read())
        c.close()
        return js
    except (OSError, ValueError, http.client.HTTPException):
        return None


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def run(a):
    os.makedirs(a.out, exist_ok=True)
    h = Http(a.port, a.api_key, a.max_body)
    stats = Stats()
    first = proc_sample(a.pid)
    if first is None:
        print("soak: server pid %d is not running" % a.pid, file=sys.stderr)
        return 1
    status0 = server_status(h)

    # A short warm-up (not counted) so that the first sample is not the
    # server's first touch of its buffers.
    w = HttpWorker(h, Stats(), time.monotonic() + 2, 0, [("completion", 1), ("chat_stream", 1)], 0)
    w.start()
    w.join()
    warm = proc_sample(a.pid)

    weights = [("completion", 22), ("chat", 12), ("completion_stream", 14), ("chat_stream", 10),
               ("bad_json", 5), ("bad_field", 5), ("missing_prompt", 3), ("bad_route", 2),
               ("bad_method", 2), ("oversize", 3), ("abandon_stream", 7), ("abandon_nostream", 2),
               ("abandon_upload", 3)]
    if a.api_key:
        weights.append(("bad_auth", 4))
    stats.t0 = time.monotonic()
    deadline = stats.t0 + a.seconds
    threads = [HttpWorker(h, stats, deadline, a.think_ms, weights, 100 + i) for i in range(a.http_workers)]
    threads += [SlowWorker(h, stats, deadline, 1), IdleWorker(h, stats, deadline, a.conn_timeout, 2),
                IdleWorker(h, stats, deadline, a.conn_timeout, 3)]
    nats = None
    if a.nats_url:
        env = dict(os.environ, NATS_URL=a.nats_url, WORKER_ID=a.worker_id, MODEL_ID=a.model_id,
                   MAX_BODY=str(a.max_body), SECONDS=str(a.seconds),
                   CONCURRENCY=str(a.nats_concurrency), THINK_MS=str(a.think_ms))
        nats_err = open(os.path.join(a.out, "soak_nats.err"), "w")
        nats = subprocess.Popen(["node", os.path.join(HERE, "soak_nats.mjs")], env=env,
                                stdout=subprocess.PIPE, stderr=nats_err, text=True)
        rt = threading.Thread(target=nats_reader, args=(nats, stats), daemon=True)
        rt.start()
    for t in threads:
        t.start()

    kinds = [k for k, _ in weights] + ["slow_sender", "idle_reuse", "idle_expire"]
    if a.nats_url:
        kinds += ["nats_good_queue", "nats_good_worker", "nats_good_chat", "nats_bad_json",
                  "nats_bad_field", "nats_oversize", "nats_unread"]
    cols = ["t_s", "rss_kb", "threads", "fds", "cpu_pct", "http_n", "http_p50_ms", "http_p99_ms",
            "nats_n", "nats_p50_ms", "nats_p99_ms", "unexpected"] + kinds + \
        ["srv_done", "srv_cancelled", "srv_failed", "srv_timeout", "srv_rejected", "nats_malformed"]
    rows = [{"t_s": 0, "rss_kb": warm["rss_kb"], "threads": warm["threads"], "fds": warm["fds"]}]
    died = False
    last_cpu, last_t = warm["cpu_s"], time.monotonic()
    next_t = stats.t0 + SAMPLE_S
    with open(os.path.join(a.out, "samples.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, cols, restval="")
        wr.writeheader()
        wr.writerow(rows[0])
        f.flush()
        while True:
            # one sample every SAMPLE_S, the last one at the deadline; the
            # server's life checked every 0.5 s
            while time.monotonic() < min(next_t, deadline) and proc_sample(a.pid) is not None:
                time.sleep(max(0, min(0.5, min(next_t, deadline) - time.monotonic())))
            end = time.monotonic() >= deadline - 0.5
            s = proc_sample(a.pid)
            win, lat, bad = stats.window()
            t = time.monotonic()
            if s is None:
                died = True
                STOP.set()
                if nats is not None:
                    nats.terminate()
                stats.add("server_alive", False, why="the server process is gone")
                print("soak: the server died at %.0f s" % (t - stats.t0), file=sys.stderr)
                break
            st = server_status(h) or {}
            m = (st.get("models") or [{}])[0].get("requests", {})
            row = {"t_s": round(t - stats.t0, 1), "rss_kb": s["rss_kb"], "threads": s["threads"],
                   "fds": s["fds"], "cpu_pct": round(100 * (s["cpu_s"] - last_cpu) / (t - last_t), 1),
                   "http_n": len(lat["http"]), "http_p50_ms": fmt(pct(lat["http"], 50), ".3f"),
                   "http_p99_ms": fmt(pct(lat["http"], 99), ".3f"), "nats_n": len(lat["nats"]),
                   "nats_p50_ms": fmt(pct(lat["nats"], 50), ".3f"),
                   "nats_p99_ms": fmt(pct(lat["nats"], 99), ".3f"), "unexpected": bad,
                   "srv_done": m.get("done", ""), "srv_cancelled": m.get("cancelled", ""),
                   "srv_failed": m.get("failed", ""), "srv_timeout": m.get("timeout", ""),
                   "srv_rejected": sum(v for k, v in m.items() if k.startswith("rejected")) if m else "",
                   "nats_malformed": ((st.get("worker") or {}).get("nats") or {}).get("malformed", "")}
            for k in kinds:
                row[k] = win.get(k, 0)
            last_cpu, last_t = s["cpu_s"], t
            wr.writerow(row)
            f.flush()
            rows.append(row)
            print("soak: %4.0f s  rss %6.1f MiB  threads %3d  fds %4d  cpu %5.1f%%  http p50/p99 %s/%s ms (%d)  "
                  "nats p50/p99 %s/%s ms (%d)  unexpected %d" %
                  (row["t_s"], s["rss_kb"] / 1024, s["threads"], s["fds"], row["cpu_pct"],
                   row["http_p50_ms"], row["http_p99_ms"], row["http_n"], row["nats_p50_ms"],
                   row["nats_p99_ms"], row["nats_n"], bad), flush=True)
            next_t += SAMPLE_S
            if end:
                break

    for t in threads:
        t.join(timeout=a.conn_timeout + 30)
    if nats is not None:
        try:
            nats.wait(timeout=60)
        except subprocess.TimeoutExpired:
            nats.kill()
            nats.wait()
            stats.add("nats_driver", False, why="soak_nats.mjs did not end")
        rt.join(timeout=10)
        if nats.returncode not in (0, None) and not died:
            stats.add("nats_driver", False, why="soak_nats.mjs exited %d" % nats.returncode)

    # Settled: once the load is over and idle connections have timed out,
    # threads and fds should be back near where they started.
    settled = None
    status1 = None
    if not died:
        time.sleep(a.conn_timeout + 2)
        settled = proc_sample(a.pid)
        status1 = server_status(h)
        if settled is None:
            died = True
            stats.add("server_alive", False, why="the server process is gone")
    write_summary(a, stats, rows, first, warm, settled, status0, status1, died)
    plot(os.path.join(a.out, "samples.csv"), os.path.join(a.out, "plot.png"))
    n_bad = sum(stats.bad.values())
    return 1 if died or n_bad else 0


def write_summary(a, stats, rows, first, warm, settled, status0, status1, died):
    samples = [r for r in rows[1:]]
    rss = [r["rss_kb"] for r in rows]
    half = [r for r in samples if r["t_s"] >= a.seconds / 2]
    slope = None
    if len(half) >= 3:
        xs = [r["t_s"] / 60 for r in half]
        ys = [r["rss_kb"] for r in half]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None
    hl, nl = stats.all_lat["http"], stats.all_lat["nats"]
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "?"
    L = []
    L.append("# inferd soak, %s\n" % time.strftime("%Y-%m-%d %H:%M:%S"))
    L.append("%d s of mixed load; %d HTTP workers, a slow sender, 2 idle-connection workers%s; "
             "think time up to %d ms. Machine: %d CPUs (%s), load average at the end %s.\n" %
             (a.seconds, a.http_workers,
              ", %d NATS loops" % a.nats_concurrency if a.nats_url else "", 2 * a.think_ms,
              os.cpu_count(), cpu, " ".join(open("/proc/loadavg").read().split()[:3])))
    L.append("Server: `%s`\n" % a.server_args if a.server_args else "")
    n_bad = sum(stats.bad.values())
    verdict = "FAIL" if died or n_bad else "PASS"
    L.append("**%s**: server %s, %d unexpected result(s).\n" %
             (verdict, "died" if died else "alive", n_bad))
    L.append("## Server process\n")
    L.append("| | RSS MiB | threads | open fds |\n|---|---|---|---|")
    L.append("| before any request | %.1f | %d | %d |" % (first["rss_kb"] / 1024, first["threads"], first["fds"]))
    L.append("| after 2 s warm-up (t=0) | %.1f | %d | %d |" % (warm["rss_kb"] / 1024, warm["threads"], warm["fds"]))
    if samples:
        L.append("| max under load | %.1f | %d | %d |" % (max(rss) / 1024, max(r["threads"] for r in samples),
                                                        max(r["fds"] for r in samples)))
        e = samples[-1]
        L.append("| last sample (t=%.0f s) | %.1f | %d | %d |" % (e["t_s"], e["rss_kb"] / 1024, e["threads"], e["fds"]))
    if settled:
        L.append("| settled (%d s after the load) | %.1f | %d | %d |" %
                 (a.conn_timeout + 2, settled["rss_kb"] / 1024, settled["threads"], settled["fds"]))
    L.append("")
    if slope is not None:
        L.append("RSS trend over the second half (least squares): %+.1f KiB/min.\n" % slope)
    L.append("## Latency of good requests (client side, whole request)\n")
    L.append("| door | n | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    for name, v in (("HTTP", hl), ("NATS", nl)):
        if v:
            L.append("| %s | %d | %.2f | %.2f | %.2f |" % (name, len(v), pct(v, 50), pct(v, 99), max(v)))
    lw = [float(r["http_p99_ms"]) for r in samples if r.get("http_p99_ms") not in ("", "-", None)]
    if lw:
        L.append("\nPer-10 s HTTP p99: min %.2f ms, max %.2f ms." % (min(lw), max(lw)))
    L.append("\n## Requests\n")
    L.append("| kind | count | unexpected |\n|---|---|---|")
    for k in sorted(stats.total, key=lambda k: (k.startswith("nats"), k)):
        L.append("| %s | %d | %d |" % (k, stats.total[k], stats.bad.get(k, 0)))
    L.append("| **total** | %d | %d |" % (sum(stats.total.values()), n_bad))
    if status1:
        m = (status1.get("models") or [{}])[0]
        L.append("\nServer's own counters at the end (`/v1/status`): requests %s; NATS %s; "
                 "http.overhead_us %s." % (json.dumps(m.get("requests")),
                                           json.dumps({k: v for k, v in ((status1.get("worker") or {}).get("nats") or {}).items()
                                                       if isinstance(v, int)}),
                                           json.dumps(status1.get("http", {}).get("overhead_us"))))
    if stats.examples:
        L.append("\n## Unexpected results (first %d of %d)\n" % (min(20, len(stats.examples)), stats.n_examples))
        for t, k, why in stats.examples[:20]:
            L.append("- %.1f s %s: %s" % (t, k, why))
    L.append("\nFiles: samples.csv (one row per 10 s), plot.png, unexpected.txt.")
    text = "\n".join(L) + "\n"
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "unexpected.txt"), "w") as f:
        for t, k, why in stats.examples:
            f.write("%.1f\t%s\t%s\n" % (t, k, why))
    print(text)


# ---- plot ------------------------------------------------------------------

def plot(csv_path, png):
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    num = lambda r, k: float(r[k]) if r.get(k) not in (None, "", "-") else None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return plot_gnuplot(csv_path, png, rows)
    t = [float(r["t_s"]) for r in rows]
    fig, ax = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    ax[0].plot(t, [int(r["rss_kb"]) / 1024 for r in rows], "o-", color="tab:blue")
    ax[0].set_ylabel("RSS MiB")
    ax[0].grid(alpha=0.3)
    for key, label, style in (("http_p50_ms", "HTTP p50", "-"), ("http_p99_ms", "HTTP p99", "--"),
                              ("nats_p50_ms", "NATS p50", "-"), ("nats_p99_ms", "NATS p99", "--")):
        pts = [(x, num(r, key)) for x, r in zip(t, rows) if num(r, key) is not None]
        if pts:
            ax[1].plot([p[0] for p in pts], [p[1] for p in pts], style, marker=".", label=label,
                       color="tab:orange" if key.startswith("http") else "tab:green")
    ax[1].set_ylabel("latency ms (good requests)")
    ax[1].set_ylim(bottom=0)
    ax[1].legend(loc="upper left", ncol=4, fontsize="small")
    ax[1].grid(alpha=0.3)
    ax[2].plot(t, [int(r["threads"]) for r in rows], "-", label="threads")
    ax[2].plot(t, [int(r["fds"]) for r in rows], "-", label="open fds")
    ax[2].set_ylabel("count")
    ax[2].set_xlabel("seconds")
    ax[2].legend(loc="upper left", fontsize="small")
    ax[2].grid(alpha=0.3)
    fig.suptitle("inferd soak: server RSS, good-request latency per 10 s window, threads and fds")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    return 0


def plot_gnuplot(csv_path, png, rows):
    import shutil
    if not shutil.which("gnuplot"):
        print("soak: no plot (install python3-matplotlib or gnuplot-nox)", file=sys.stderr)
        return 1
    cols = list(rows[0].keys()) if rows else []
    c = lambda k: cols.index(k) + 1
    script = """set terminal pngcairo size 1000,900
set output '%s'
set datafile separator ','
set datafile missing '-'
set key autotitle columnhead left top
set grid
set multiplot layout 3,1 title 'inferd soak'
set ylabel 'RSS MiB'
plot '%s' using %d:($%d/1024) with linespoints title 'RSS'
set ylabel 'latency ms'
set yrange [0:*]
plot '%s' using %d:%d with lines title 'HTTP p50', '' using %d:%d with lines title 'HTTP p99', \\
     '' using %d:%d with lines title 'NATS p50', '' using %d:%d with lines title 'NATS p99'
set autoscale y
set ylabel 'count'
set xlabel 'seconds'
plot '%s' using %d:%d with lines title 'threads', '' using %d:%d with lines title 'open fds'
unset multiplot
""" % (png, csv_path, c("t_s"), c("rss_kb"), csv_path, c("t_s"), c("http_p50_ms"), c("t_s"),
       c("http_p99_ms"), c("t_s"), c("nats_p50_ms"), c("t_s"), c("nats_p99_ms"), csv_path, c("t_s"),
       c("threads"), c("t_s"), c("fds"))
    r = subprocess.run(["gnuplot"], input=script, text=True)
    return r.returncode


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--seconds", type=int, default=600)
    r.add_argument("--api-key", default="")
    r.add_argument("--nats-url", default="")
    r.add_argument("--worker-id", default="")
    r.add_argument("--model-id", default="stories260K")
    r.add_argument("--max-body", type=int, default=65536)
    r.add_argument("--conn-timeout", type=int, default=10)
    r.add_argument("--http-workers", type=int, default=4)
    r.add_argument("--nats-concurrency", type=int, default=2)
    r.add_argument("--think-ms", type=int, default=5)
    r.add_argument("--server-args", default="")
    q = sub.add_parser("plot")
    q.add_argument("csv")
    q.add_argument("png")
    a = p.parse_args()
    if a.cmd == "plot":
        return plot(a.csv, a.png)
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
