#!/usr/bin/env bash
# inferd builds without the gRPC door (-DINFERD_GRPC=OFF: no C++, no gRPC
# or protobuf), serves HTTP as ever, and says why --grpc-port cannot be
# served. A Debug build of the inferd target alone, from this source tree.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

src="${INFERD_SRC:?INFERD_SRC must name the source tree}"
cmake -S "$src" -B "$tmp/b" -DINFERD_GRPC=OFF -DCMAKE_BUILD_TYPE=Debug >"$tmp/cmake.log" 2>&1 ||
    fail "configure without gRPC: $(tail -20 "$tmp/cmake.log")"
cmake --build "$tmp/b" -j"$(nproc)" --target inferd >"$tmp/build.log" 2>&1 ||
    fail "build without gRPC: $(grep -E 'error|Error' "$tmp/build.log" | head -20)"
! grep -q "^GRPCPP_FOUND:INTERNAL=1" "$tmp/b/CMakeCache.txt" ||
    fail "the gRPC packages were looked for"
INFERD="$tmp/b/inferd"
expect_error 2 "built without the gRPC door (-DINFERD_GRPC=OFF)" serve -m "$model" --grpc-port 0
serve_start -m "$model" -t 1
serve_wait_ready
still_serves
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"
echo "PASS"
