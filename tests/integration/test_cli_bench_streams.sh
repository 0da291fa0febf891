#!/usr/bin/env bash
# `inferd bench --streams`: the JSON shape (one entry per stream count, in
# order, positive speeds, p50 <= p99), the markdown table, and one-line
# errors: exit 2 for a bad --streams list or options, exit 1 for a missing
# model. Speed ratios are not asserted (docs/bench.md has the numbers).
# Needs $INFERD and $INFERD_FIXTURES.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

# JSON: three entries for 1,2,4 in that order, with the documented fields.
[[ $(run bench -m "$model" --streams 1,2,4 -n 16 -p 8 -r 1 --json -t 1) == 0 ]] \
    || fail "bench --streams: $(cat "$tmp/err")"
check '.streams | length == 3'
check '[.streams[].n] == [1,2,4]'
check 'all(.streams[]; .tg_tps > 0 and .tg_tps_std >= 0)'
check 'all(.streams[]; .ttft_p50_ms > 0 and .ttft_p50_ms <= .ttft_p99_ms)'
check '.n_prompt == 8 and .n_gen == 16 and .threads == 1 and .repetitions == 1'
check '.streams[0].speedup == 1'

# Repetitions and a list without 1 (no speedup to report); any order.
[[ $(run bench -m "$model" --streams 3,2 -n 4 -p 2 -r 2 --json -t 2) == 0 ]] \
    || fail "bench --streams 3,2: $(cat "$tmp/err")"
check '[.streams[].n] == [3,2] and .repetitions == 2 and .threads == 2'
check 'all(.streams[]; .tg_tps > 0 and .ttft_p50_ms <= .ttft_p99_ms and (has("speedup") | not))'

# The table: a header and one row per count.
[[ $(run bench -m "$model" --streams 1,2 -n 4 -p 4 -r 1 -t 1) == 0 ]] \
    || fail "bench --streams table: $(cat "$tmp/err")"
grep -qF '| streams | tg t/s | speedup vs 1 | ttft p50 ms | ttft p99 ms |' "$tmp/out" \
    || fail "table header: $(cat "$tmp/out")"
[[ $(grep -c '^| [0-9]' "$tmp/out") == 2 ]] || fail "table rows: $(cat "$tmp/out")"
grep -q '^| 1 | .* | 1.00x |' "$tmp/out" || fail "table row for 1 stream: $(cat "$tmp/out")"

# Without --streams the pp/tg mode is unchanged.
[[ $(run bench -m "$model" -p 8 -n 4 -r 1 -t 1 --json) == 0 ]] || fail "bench pp/tg: $(cat "$tmp/err")"
check '.pp_tps > 0 and .tg_tps > 0'

# Errors: one line; exit 2 for usage, 1 for a missing model.
expect_error 2 "--streams: 0 out of range" bench -m "$model" --streams 0
expect_error 2 "got '1,,2'" bench -m "$model" --streams 1,,2
expect_error 2 "got 'abc'" bench -m "$model" --streams abc
expect_error 2 "got '2,'" bench -m "$model" --streams 2,
expect_error 2 "--streams: 256 out of range" bench -m "$model" --streams 1,256
expect_error 2 "--streams needs a value" bench -m "$model" --streams
expect_error 2 "-n >= 2" bench -m "$model" --streams 2 -n 1
expect_error 2 "--batch does not apply" bench -m "$model" --streams 2 -b 8
expect_error 2 "-m FILE is required" bench --streams 1,2
expect_error 1 "$tmp/missing.gguf" bench -m "$tmp/missing.gguf" --streams 1,2

# After all of that, a run still works.
[[ $(run bench -m "$model" --streams 2 -n 4 -p 4 -r 1 -t 1 --json) == 0 ]] || fail "final bench"
check '.streams[0].n == 2'
echo "test_cli_bench_streams: all checks passed"
