#!/usr/bin/env bash
# `make bench`: prompt processing (pp128) and generation (tg64) tokens/s,
# at 1 and 2 threads, beside the memory-bandwidth ceiling for tg (read
# bandwidth / weight bytes one decode step reads), of random-weight models
# made by `inferd make-model` in real shapes:
#  - TinyLlama-1.1B (dim 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632, the
#    32000-token llama vocabulary) in Q8_0, Q4_0 and Q4_K_M;
#  - Qwen2.5-0.5B (qwen2, dim 896, 24 layers, 14 heads, 2 KV heads, FFN 4864,
#    the 151936-token Qwen vocabulary, tied output) in Q4_K_M: its 896-wide
#    rows fall back to Q5_0/Q8_0 as llama-quantize's recipe says.
# If $LLAMA_BENCH names a llama-bench binary (built outside this project),
# it runs on the same files in the same run for a side-by-side.
# BENCH_ONLY=name[,name] restricts the models (e.g. BENCH_ONLY=qwen2.5-0.5b-Q4_K_M).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
inferd=$build/inferd
models=${BENCH_MODELS:-$here/build/bench-models}
reps=${BENCH_REPS:-3}
fixtures=$here/tests/fixtures/vocab
mkdir -p "$models"

tinyllama="--dim 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5632 --vocab-from $fixtures/ggml-vocab-llama-spm.gguf"
qwen05="--arch qwen2 --dim 896 --layers 24 --heads 14 --kv-heads 2 --ffn 4864 --vocab-from $fixtures/ggml-vocab-qwen2.gguf"
names=(tinyllama-Q8_0 tinyllama-Q4_0 tinyllama-Q4_K_M qwen2.5-0.5b-Q4_K_M)
declare -A args=(
  [tinyllama-Q8_0]="$tinyllama --type Q8_0"
  [tinyllama-Q4_0]="$tinyllama --type Q4_0"
  [tinyllama-Q4_K_M]="$tinyllama --type Q4_K_M"
  [qwen2.5-0.5b-Q4_K_M]="$qwen05 --type Q4_K_M"
)
if [ -n "${BENCH_ONLY:-}" ]; then
  IFS=, read -r -a names <<<"$BENCH_ONLY"
fi
for n in "${names[@]}"; do
  f=$models/$n.gguf
  if [ ! -s "$f" ]; then
    echo "making $f ..." >&2
    # shellcheck disable=SC2086 # the argument lists are split on purpose
    "$inferd" make-model ${args[$n]} --seed 1 -o "$f"
  fi
done

declare -A bw
for th in 1 2; do bw[$th]=$("$build/bench/membw" "$th"); done

printf '| model | threads | pp128 t/s | tg64 t/s | tg ceiling t/s (GB/s) |'
[ -n "${LLAMA_BENCH:-}" ] && printf ' llama.cpp pp128 | llama.cpp tg64 | pp ratio | tg ratio |'
printf '\n|---|---|---|---|---|'
[ -n "${LLAMA_BENCH:-}" ] && printf -- '---|---|---|---|'
printf '\n'
for t in "${names[@]}"; do
  f=$models/$t.gguf
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
