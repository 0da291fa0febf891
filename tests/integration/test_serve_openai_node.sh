#!/usr/bin/env bash
# The official `openai` npm client (tests/node, pinned in its package-lock,
# installed by scripts/install-deps.sh) runs completions, chat, streamed
# chat, logprobs and typed errors against inferd serve with an API key.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

node_dir="${INFERD_SRC:?INFERD_SRC must name the source tree}/tests/node"
[[ -d "$node_dir/node_modules/openai" ]] ||
    fail "the openai npm package is not installed: run scripts/install-deps.sh"

serve_start -m "$model" -t 1 -np 2 --api-key test-key-123
serve_wait_ready

expect=$("$INFERD" generate -m "$model" -p "Once upon a time" -n 16 --temp 0 -t 1 --json 2>/dev/null |
    jq -r .text)
INFERD_URL="$url/v1" INFERD_MODEL=stories260K INFERD_API_KEY=test-key-123 EXPECT_TEXT="$expect" \
    INFERD_BAD_KEY_CHECK=1 INFERD_LOGPROBS=1 node "$node_dir/openai_client.mjs" >"$tmp/node.out" 2>&1 ||
    fail "openai client checks failed: $(grep -v '^ok' "$tmp/node.out" | head -40)"
grep -c '^ok - ' "$tmp/node.out" >&2
! grep -q '^not ok' "$tmp/node.out" || fail "$(grep '^not ok' "$tmp/node.out")"
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
echo "ok"
