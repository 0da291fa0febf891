#!/usr/bin/env bash
# The C client library (include/inferd/client.h) against a real worker on
# TCP and on its Unix socket, with an API key and a shared-memory quota:
# tests/client/client_check.c makes every call and checks what comes back
# (see there); the generated text is compared with `inferd generate`'s for
# the same seed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

check_bin=${INFERD_CLIENT_CHECK:-$(dirname "$INFERD")/tests/inferd-client-check}
[[ -x "$check_bin" ]] || fail "no client check program at $check_bin"
sock="$tmp/inferd.sock"
n=24
gen_text=$("$INFERD" generate -m "$model" -p "Once upon a time" -n $n --seed 42 --json -t 1 |
    jq -r .text)
[[ -n "$gen_text" ]] || fail "inferd generate gave no text"
serve_start -m "$model" -m identity:ident -t 1 -np 2 --unix "$sock" --api-key secret \
    --shm-session-mb 1
serve_wait_ready

TCP_URL=$url UNIX_URL="unix://$sock" KEY=secret GEN_TEXT="$gen_text" GEN_N=$n \
    DEAD_URL="unix://$tmp/nobody.sock" "$check_bin" || fail "client checks failed"
# ---- inferd client: the resilient client from the command line ----
cli() { "$INFERD" client --api-key secret "$@" >"$tmp/out" 2>"$tmp/err"; }
# A dead worker first: the call fails over to the live one.
cli --url "unix://$tmp/nobody.sock" --url "$url" complete -p "Once upon a time" -n $n --seed 42 ||
    fail "client complete: $(cat "$tmp/err")"
[[ "$(cat "$tmp/out")" == "$gen_text" ]] ||
    fail "client complete: '$(cat "$tmp/out")', inferd generate '$gen_text'"
cli --url "unix://$sock" complete -p "Once upon a time" -n $n --seed 42 --json ||
    fail "client complete --json: $(cat "$tmp/err")"
[[ "$(head -1 "$tmp/out")" == "$gen_text" ]] || fail "client complete over unix: $(cat "$tmp/out")"
tail -1 "$tmp/out" | jq -e '.seed == 42 and .completion_tokens == 24 and .attempts == 1' \
    >/dev/null || fail "client --json: $(tail -1 "$tmp/out")"
cli --url "$url" chat -p "Tell me a story" -n 8 --seed 1 || fail "client chat: $(cat "$tmp/err")"
[[ -s "$tmp/out" ]] || fail "client chat printed nothing"
cli --url "$url" status || fail "client status: $(cat "$tmp/err")"
jq -e '.state == "ready"' "$tmp/out" >/dev/null || fail "client status: $(cat "$tmp/out")"
cli --url "$url" health --ready || fail "client health: $(cat "$tmp/err")"
[[ "$(cat "$tmp/out")" == ready ]] || fail "client health: $(cat "$tmp/out")"
# Errors: the worker's message, one line, exit 1; usage errors exit 2.
rc=0
cli --url "$url" complete -p x --temp 0 --model nope || rc=$?
[[ $rc == 1 && "$(cat "$tmp/err")" == "inferd client: model 'nope' is not served here" ]] ||
    fail "client, unknown model: rc $rc, '$(cat "$tmp/err")'"
rc=0
"$INFERD" client --url "$url" health >"$tmp/out" 2>"$tmp/err" || rc=$? # no key: health is open
[[ $rc == 0 ]] || fail "client health without a key: $(cat "$tmp/err")"
rc=0
"$INFERD" client --url "$url" status >"$tmp/out" 2>"$tmp/err" || rc=$?
[[ $rc == 1 ]] && grep -q "API key" "$tmp/err" || fail "client status without a key: rc $rc, $(cat "$tmp/err")"
rc=0
cli --url "unix://$tmp/nobody.sock" --deadline 300 health || rc=$?
[[ $rc == 1 ]] && grep -q "deadline of 300 ms passed" "$tmp/err" ||
    fail "client, no worker: rc $rc, $(cat "$tmp/err")"
rc=0
cli --url ftp://x health || rc=$?
[[ $rc == 2 ]] && grep -q "is not a worker's URL" "$tmp/err" || fail "client, bad URL: rc $rc"
rc=0
cli --url "$url" complete || rc=$?
[[ $rc == 2 ]] && grep -q -- "complete: -p TEXT is required" "$tmp/err" || fail "client, no prompt: rc $rc"

serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc: $(tail -5 "$tmp/serve.log")"
if grep -E 'runtime error|AddressSanitizer|LeakSanitizer' "$tmp/serve.log"; then
    fail "sanitizer report in the server log"
fi
echo PASS
