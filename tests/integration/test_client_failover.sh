#!/usr/bin/env bash
# The resilient client (include/inferd/client.h) over two real workers:
# tests/client/failover_check.c kills worker A (-9) halfway through a
# 200-token stream and checks that the text equals `inferd generate`'s for
# the seed, with no piece lost or repeated; that A's breaker opens, and
# closes once this script has restarted A on the same port; that a 400 is
# not retried; and that with every worker down the breakers open and a
# call keeps its deadline. The model is a random-weight one large enough
# (8 layers, width 768, Q8_0) that A is still generating when it is killed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

check_bin=${INFERD_FAILOVER_CHECK:-$(dirname "$INFERD")/tests/inferd-failover-check}
[[ -x "$check_bin" ]] || fail "no failover check program at $check_bin"
slow="$tmp/slow.gguf"
"$INFERD" make-model --dim 768 --layers 8 --heads 12 --ffn 2048 --vocab-from "$model" \
    --type Q8_0 -o "$slow" >/dev/null || fail "make-model"
gen_text=$("$INFERD" generate -m "$slow" -p "Once upon a time" -n 200 --seed 7 --json -t 1 |
    jq -r .text)
[[ -n "$gen_text" ]] || fail "inferd generate gave no text"

launch_serve pid_a port_a "$tmp/a.out" "$tmp/a.log" -m "$slow" -t 1 -np 2
launch_serve pid_b port_b "$tmp/b.out" "$tmp/b.log" -m "$slow" -t 1 -np 2
cleanup_ab() { kill -9 ${pid_a:-} ${pid_b:-} ${check_pid:-} 2>/dev/null || true; }
trap 'cleanup_ab; cleanup' EXIT
url="http://127.0.0.1:$port_a" serve_pid=$pid_a serve_wait_ready
url="http://127.0.0.1:$port_b" serve_pid=$pid_b serve_wait_ready

URL_A="http://127.0.0.1:$port_a" URL_B="http://127.0.0.1:$port_b" PID_A=$pid_a \
    GEN_TEXT="$gen_text" STATE_DIR="$tmp" DEAD_A="unix://$tmp/dead-a.sock" \
    DEAD_B="unix://$tmp/dead-b.sock" "$check_bin" &
check_pid=$!
# When the check has killed A and seen its breaker open: A comes back.
for _ in $(seq 1 1200); do
    [[ -e "$tmp/a-killed" ]] && break
    kill -0 $check_pid 2>/dev/null || break
    sleep 0.1
done
if [[ -e "$tmp/a-killed" ]]; then
    wait $pid_a 2>/dev/null || true # killed by the check
    launch_serve pid_a port_a2 "$tmp/a2.out" "$tmp/a2.log" -m "$slow" -t 1 -np 2 --port $port_a
    [[ "$port_a2" == "$port_a" ]] || fail "A came back on port $port_a2, not $port_a"
    url="http://127.0.0.1:$port_a" serve_pid=$pid_a serve_wait_ready
    touch "$tmp/a-back"
fi
check_rc=0
wait $check_pid || check_rc=$?
check_pid=
[[ $check_rc == 0 ]] || fail "the failover checks failed ($check_rc)"
for who in a2 b; do
    if grep -E 'runtime error|AddressSanitizer|LeakSanitizer' "$tmp/$who.log"; then
        fail "sanitizer report in worker $who's log"
    fi
done
echo PASS
