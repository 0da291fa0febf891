#!/usr/bin/env bash
# The official Node gRPC client (@grpc/grpc-js, with @grpc/proto-loader
# reading proto/grpc_service.proto at run time; tests/node, pinned in its
# package-lock, installed by scripts/install-deps.sh) drives the KServe v2
# gRPC door of inferd serve with an API key: health, metadata, unary and
# streamed inference, the identity model, the model repository, system shared
# memory and malformed requests (tests/node/grpc_check.mjs).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

src="${INFERD_SRC:?INFERD_SRC must name the source tree}"
node_dir="$src/tests/node"
for p in @grpc/grpc-js @grpc/proto-loader; do
    [[ -d "$node_dir/node_modules/$p" ]] ||
        fail "the $p npm package is not installed: run scripts/install-deps.sh"
done

serve_start -m "$model" -m identity:ident -t 1 -np 2 --grpc-port 0 --api-key test-key-123
serve_wait_ready
grpc_port=
for _ in $(seq 1 600); do
    grpc_port=$(sed -n 's/.*gRPC on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$tmp/serve.log" | head -1)
    [[ -n "$grpc_port" ]] && break
    kill -0 "$serve_pid" 2>/dev/null || fail "inferd serve exited: $(cat "$tmp/serve.log")"
    sleep 0.1
done
[[ -n "$grpc_port" ]] || fail "no 'gRPC on 127.0.0.1:PORT' in the serve log: $(cat "$tmp/serve.log")"

expect=$("$INFERD" generate -m "$model" -p "Once upon a time" -n 16 --temp 0 -t 1 --json 2>/dev/null |
    jq -r .text)
[[ -n "$expect" ]] || fail "inferd generate gave no text"

INFERD_GRPC="127.0.0.1:$grpc_port" INFERD_MODEL=stories260K INFERD_IDENTITY=ident \
    INFERD_API_KEY=test-key-123 INFERD_PROTO="$src/proto/grpc_service.proto" EXPECT_TEXT="$expect" \
    timeout 300 node "$node_dir/grpc_check.mjs" >"$tmp/node.out" 2>&1 ||
    fail "gRPC client checks failed: $(grep -v '^ok' "$tmp/node.out" | head -40)"
grep -c '^ok - ' "$tmp/node.out" >&2
! grep -q '^not ok' "$tmp/node.out" || fail "$(grep '^not ok' "$tmp/node.out")"
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc: $(tail -20 "$tmp/serve.log")"
echo "ok"
