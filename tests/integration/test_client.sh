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
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc: $(tail -5 "$tmp/serve.log")"
if grep -E 'runtime error|AddressSanitizer|LeakSanitizer' "$tmp/serve.log"; then
    fail "sanitizer report in the server log"
fi
echo PASS
