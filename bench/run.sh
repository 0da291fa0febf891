#!/usr/bin/env bash
# `make bench`: prompt processing (pp128) and generation (tg64) tokens/s of
# TinyLlama-1.1B-shape models (dim 2048, 22 layers, 32 heads, 4 KV heads,
# FFN 5632, the 32000-token llama vocabulary) made by `inferd make-model` in
# Q8_0 and Q4_0, at 1 and 2 threads, beside the memory-bandwidth ceiling
# for tg (read bandwidth / weight bytes one decode step reads). If $LLAMA_BENCH names a llama-bench binary (built outside this
# project), it runs on the same files in the same run for a side-by-side.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
inferd=$build/inferd
models=${BENCH_MODELS:-$here/build/bench-models}
reps=${BENCH_REPS:-3}
vocab=$here/tests/fixtures/vocab/ggml-vocab-llama-spm.gguf
mkdir -p "$models"

for t in Q8_0 Q4_0; do
  f=$models/tinyllama-shape-$t.gguf
  if [ ! -s "$f" ]; then
    echo "making $f ..." >&2
    "$inferd" make-model --dim 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5632 \
      --vocab-from "$vocab" --type "$t" --seed 1 -o "$f"
  fi
done

declare -A bw
for th in 1 2; do bw[$th]=$("$build/bench/membw" "$th"); done

printf '| model | threads | pp128 t/s | tg64 t/s | tg ceiling t/s (GB/s) |'
[ -n "${LLAMA_BENCH:-}" ] && printf ' llama.cpp pp128 | llama.cpp tg64 | pp ratio | tg ratio |'
printf '\n|---|---|---|---|---|'
[ -n "${LLAMA_BENCH:-}" ] && printf -- '---|---|---|---|'
printf '\n'
for t in Q8_0 Q4_0; do
  f=$models/tinyllama-shape-$t.gguf
  for th in 1 2; do
    js=$("$inferd" bench -m "$f" -p 128 -n 64 -t "$th" -r "$reps" --json)
    pp=$(jq -r '.pp_tps' <<<"$js"); tg=$(jq -r '.tg_tps' <<<"$js")
    ppsd=$(jq -r '.pp_std' <<<"$js"); tgsd=$(jq -r '.tg_std' <<<"$js")
    wb=$(jq -r '.decode_bytes' <<<"$js")
    ceil=$(awk -v b="${bw[$th]}" -v w="$wb" 'BEGIN{printf "%.1f", b*1e9/w}')
    printf '| %s | %s | %.1f ± %.1f | %.2f ± %.2f | %s (%s) |' "$t" "$th" "$pp" "$ppsd" "$tg" "$tgsd" "$ceil" "${bw[$th]}"
    if [ -n "${LLAMA_BENCH:-}" ]; then
      lj=$("$LLAMA_BENCH" -m "$f" -p 128 -n 64 -t "$th" -r "$reps" -o json 2>/dev/null)
      lpp=$(jq -r '[.[] | select(.n_prompt>0)][0].avg_ts' <<<"$lj")
      ltg=$(jq -r '[.[] | select(.n_gen>0)][0].avg_ts' <<<"$lj")
      printf ' %.1f | %.2f | %.2fx | %.2fx |' "$lpp" "$ltg" \
        "$(awk -v a="$pp" -v b="$lpp" 'BEGIN{print a/b}')" "$(awk -v a="$tg" -v b="$ltg" 'BEGIN{print a/b}')"
    fi
    printf '\n'
  done
done
