#!/usr/bin/env bash
# Bounded soak: `inferd serve` with HTTP and NATS under a mix of good,
# malformed and abandoned requests for SOAK_SECONDS (default 600), sampled
# every 10 s: server RSS, threads, open fds, CPU, and p50/p99 latency of the
# good requests per door. Writes to the output directory:
#   samples.csv    one row per 10 s (and the t=0 row)
#   summary.md     RSS before/warm/max/end/settled, latency p50/p99, counts
#                  per kind, unexpected results, the server's own counters
#   unexpected.txt every unexpected result (time, kind, why)
#   plot.png       RSS, latency and threads/fds over time
#   server.log, nats-server.log, soak_nats.err
# Exit status 1 if the server died, a request got anything but its expected
# result (a good request failing, a malformed one not getting its exact
# 4xx), or the server did not exit 0 on SIGTERM afterwards.
#
#   bash bench/soak.sh                                # 10 minutes
#   SOAK_SECONDS=60 BUILD=/tmp/build-soak bash bench/soak.sh
#
# Environment: BUILD (default build/), MODEL (the stories260K fixture),
# SOAK_SECONDS (600), SOAK_OUT (bench/out/soak-DATE), SOAK_HTTP_WORKERS (4),
# SOAK_NATS_CONCURRENCY (2), SOAK_THINK_MS (5: each client pauses 0..2x this
# between requests), SOAK_API_KEY (soak-key; empty: no key and no bad-auth
# requests), SOAK_NO_NATS=1 (HTTP only), THREADS (1), SLOTS (4),
# SOAK_LOG_LEVEL (warn).
# Needs python3 (the system one, /usr/bin/python3), node with the npm
# packages of tests/node (scripts/install-deps.sh), nats-server, curl, jq, and
# for the plot python3-matplotlib (or gnuplot-nox).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
[[ "$build" == /* ]] || build=$here/$build
inferd=$build/inferd
model=${MODEL:-$here/tests/fixtures/models/stories260K.gguf}
seconds=${SOAK_SECONDS:-600}
out=${SOAK_OUT:-$here/bench/out/soak-$(date +%Y%m%d-%H%M%S)}
key=${SOAK_API_KEY-soak-key}
threads=${THREADS:-1}
slots=${SLOTS:-4}
max_body=65536
conn_timeout=10
worker_id=soak-w1
py=/usr/bin/python3
[[ -x "$py" ]] || py=python3

[[ -x "$inferd" ]] || { echo "$inferd not built (BUILD=$build)" >&2; exit 1; }
use_nats=1
[[ -n "${SOAK_NO_NATS:-}" ]] && use_nats=
if [[ -n "$use_nats" ]]; then
    command -v nats-server >/dev/null || { echo "nats-server not found (or set SOAK_NO_NATS=1)" >&2; exit 1; }
    [[ -d "$here/tests/node/node_modules/nats" ]] ||
        { echo "tests/node/node_modules/nats missing: run scripts/install-deps.sh" >&2; exit 1; }
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

pids=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fail() { echo "soak: $*" >&2; for f in "$out"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }

nats_args=()
nats_url=
if [[ -n "$use_nats" ]]; then
    nport=$(free_port)
    nats-server -a 127.0.0.1 -p "$nport" >"$out/nats-server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break
        sleep 0.1
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null || fail "nats-server did not come up on $nport"
    nats_url=nats://127.0.0.1:$nport
    nats_args=(--nats "$nats_url" --worker-id "$worker_id")
fi

args=(serve -m "$model" -t "$threads" -np "$slots" --port 0 --max-body "$max_body"
      --conn-timeout "$conn_timeout" --log-level "${SOAK_LOG_LEVEL:-warn}" "${nats_args[@]}")
# The key through the environment, so that it is not in ps or the summary.
if [[ -n "$key" ]]; then
    INFERD_API_KEY=$key "$inferd" "${args[@]}" >"$out/server.out" 2>"$out/server.log" &
else
    env -u INFERD_API_KEY "$inferd" "${args[@]}" >"$out/server.out" 2>"$out/server.log" &
fi
spid=$!
pids+=("$spid")
# --port 0: the bound port is in the "listening on" line, which is logged at
# info; at warn, ask /proc which port the process listens on.
hport=
for _ in $(seq 1 300); do
    hport=$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$out/server.log" | head -1)
    [[ -z "$hport" ]] && hport=$("$py" - "$spid" <<'PY'
import os, sys
pid = sys.argv[1]
inodes = set()
try:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        t = os.readlink(f"/proc/{pid}/fd/{fd}")
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
except OSError:
    pass
for f in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        for ln in open(f).readlines()[1:]:
            p = ln.split()
            if p[3] == "0A" and p[9] in inodes:  # LISTEN
                print(int(p[1].split(":")[1], 16)); sys.exit()
    except OSError:
        pass
PY
)
    [[ -n "$hport" ]] && break
    kill -0 "$spid" 2>/dev/null || fail "inferd serve exited"
    sleep 0.1
done
[[ -n "$hport" ]] || fail "inferd serve did not listen within 30 s"
for _ in $(seq 1 300); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hport/health")" == 200 ]] && break
    kill -0 "$spid" 2>/dev/null || fail "inferd serve exited"
    sleep 0.1
done
auth=()
[[ -n "$key" ]] && auth=(-H "Authorization: Bearer $key")
if [[ -n "$use_nats" ]]; then
    # Requests are taken from the registering state on (no controller here).
    state=
    for _ in $(seq 1 300); do
        state=$(curl -sf "${auth[@]}" "http://127.0.0.1:$hport/v1/status" | jq -r '.worker.nats.state // empty' || true)
        [[ "$state" == registering || "$state" == ready ]] && break
        sleep 0.1
    done
    [[ "$state" == registering || "$state" == ready ]] || fail "worker NATS state '$state' after 30 s"
fi
model_id=$(curl -sf "${auth[@]}" "http://127.0.0.1:$hport/v1/models" | jq -r '.data[0].id')

echo "soak: $seconds s against inferd pid $spid (http 127.0.0.1:$hport${nats_url:+, $nats_url}), output in $out"
rc=0
"$py" "$here/bench/soak.py" run --pid "$spid" --port "$hport" --out "$out" --seconds "$seconds" \
    --api-key "$key" ${nats_url:+--nats-url "$nats_url" --worker-id "$worker_id"} --model-id "$model_id" \
    --max-body "$max_body" --conn-timeout "$conn_timeout" \
    --http-workers "${SOAK_HTTP_WORKERS:-4}" --nats-concurrency "${SOAK_NATS_CONCURRENCY:-2}" \
    --think-ms "${SOAK_THINK_MS:-5}" \
    --server-args "inferd ${args[*]}${key:+ (INFERD_API_KEY set)}" || rc=$?

# The server must still drain and exit 0 on SIGTERM.
if kill -0 "$spid" 2>/dev/null; then
    kill -TERM "$spid"
    src=0
    wait "$spid" || src=$?
    echo "soak: inferd serve exited $src on SIGTERM" | tee -a "$out/summary.md"
    [[ "$src" == 0 ]] || rc=1
else
    echo "soak: inferd serve was not running at the end" | tee -a "$out/summary.md"
    rc=1
fi
if grep -E 'AddressSanitizer|runtime error:|ThreadSanitizer' "$out/server.log" >/dev/null; then
    echo "soak: sanitizer report in server.log" | tee -a "$out/summary.md"
    rc=1
fi
echo "soak: $( ((rc == 0)) && echo PASS || echo FAIL ), output in $out"
exit "$rc"
