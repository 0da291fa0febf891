#!/usr/bin/env bash
# `inferd generate`, `tokenize`, `make-model` and `bench` as a user runs them:
# greedy JSON output equal to llama.cpp's reference ids, the same ids with
# 1 and 2 threads and any prompt chunking, seeded sampling reproducible from
# the reported seed, stop strings, and one-line errors with exit 2 (usage)
# or 1 (failure). Needs $INFERD and $INFERD_FIXTURES.
set -euo pipefail

source "$(dirname "$0")/lib.sh"
expected="$INFERD_FIXTURES/expected/generation.json"

# Greedy JSON equals llama.cpp's ids for the first reference case.
want_ids=$(jq -c '.cases[0].generated_ids' "$expected")
want_prompt=$(jq -c '.cases[0].prompt_ids' "$expected")
want_text=$(jq -r '.cases[0].text' "$expected")
prompt=$(jq -r '.cases[0].prompt' "$expected")
for t in 1 2; do
    for b in 512 2; do
        [[ $(run generate -m "$model" -p "$prompt" -n 64 --temp 0 -t $t -b $b --json) == 0 ]] \
            || fail "generate -t $t -b $b: $(cat "$tmp/err")"
        [[ $(jq -c .ids "$tmp/out") == "$want_ids" ]] || fail "ids with -t $t -b $b differ"
        [[ $(jq -c .prompt_ids "$tmp/out") == "$want_prompt" ]] || fail "prompt ids differ"
    done
done
# llama.cpp's text is the detokenized prompt + continuation: SPM's space
# prefix shows as a leading space.
[[ " $prompt$(jq -r .text "$tmp/out")" == "$want_text" ]] || fail "text differs: $(jq -r .text "$tmp/out")"
[[ $(jq -r .finish_reason "$tmp/out") == length ]] || fail "finish_reason"

# Streaming prints the prompt then the same text.
[[ $(run generate -m "$model" -p "$prompt" -n 64 --temp 0) == 0 ]] || fail "stream"
[[ " $(cat "$tmp/out")" == "$want_text" ]] || fail "streamed text differs: $(cat "$tmp/out")"
grep -q "tok/s" "$tmp/err" || fail "no speed line on stderr"

# Sampling: the reported seed reproduces the run; another seed differs.
[[ $(run generate -m "$model" -p "$prompt" -n 48 --temp 1 --top-k 0 --top-p 1 --min-p 0 --json) == 0 ]] \
    || fail "sampled generate"
seed=$(jq -r .seed "$tmp/out")
ids=$(jq -c .ids "$tmp/out")
[[ $(run generate -m "$model" -p "$prompt" -n 48 --temp 1 --top-k 0 --top-p 1 --min-p 0 --seed "$seed" --json) == 0 ]] \
    || fail "seeded generate"
[[ $(jq -c .ids "$tmp/out") == "$ids" ]] || fail "seed $seed did not reproduce the run"
[[ $(run generate -m "$model" -p "$prompt" -n 48 --temp 1 --top-k 0 --top-p 1 --min-p 0 --seed 7 -t 1 --json) == 0 ]] || fail "seed 7"
a=$(jq -c .ids "$tmp/out")
[[ $(run generate -m "$model" -p "$prompt" -n 48 --temp 1 --top-k 0 --top-p 1 --min-p 0 --seed 7 -t 2 -b 3 --json) == 0 ]] || fail "seed 7 again"
[[ $(jq -c .ids "$tmp/out") == "$a" ]] || fail "seed 7 differs between 1 thread and 2 threads with chunked prompt"
[[ $(run generate -m "$model" -p "$prompt" -n 48 --temp 1 --top-k 0 --top-p 1 --min-p 0 --seed 8 --json) == 0 ]] || fail "seed 8"
[[ $(jq -c .ids "$tmp/out") != "$a" ]] || fail "seeds 7 and 8 gave the same tokens"

# A stop string ends the text before it.
[[ $(run generate -m "$model" -p "$prompt" -n 64 --temp 0 --stop "Lily" --json) == 0 ]] || fail "stop"
[[ $(jq -r .finish_reason "$tmp/out") == stop ]] || fail "finish_reason with --stop"
[[ $(jq -r .text "$tmp/out") == ", there was a little girl named " ]] || fail "stop text: $(jq -r .text "$tmp/out")"

# tokenize: plain and JSON, BOS and special-token parsing.
[[ $(run tokenize -m "$model" "Once upon a time") == 0 ]] || fail "tokenize"
[[ "$(cat "$tmp/out")" == "1 403 407 261 378" ]] || fail "tokenize ids: $(cat "$tmp/out")"
[[ $(run tokenize -m "$vocab" --json --no-bos "Hello world") == 0 ]] || fail "tokenize vocab file"
[[ $(jq -c .ids "$tmp/out") == "[15043,3186]" ]] || fail "tokenize json: $(cat "$tmp/out")"
[[ $(run tokenize -m "$model" --parse-special --no-bos "<s>") == 0 ]] || fail "parse special"
[[ "$(cat "$tmp/out")" == "1" ]] || fail "<s> with --parse-special: $(cat "$tmp/out")"

# make-model: a small random model that loads and generates.
[[ $(run make-model --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --vocab-from "$vocab" --type Q8_0 --seed 3 -o "$tmp/m.gguf") == 0 ]] \
    || fail "make-model: $(cat "$tmp/err")"
[[ $(run info -m "$tmp/m.gguf" --json) == 0 ]] || fail "info on made model"
[[ $(jq -r '.metadata["llama.block_count"]' "$tmp/out") == 2 ]] || fail "made model block_count"
[[ $(jq -r '.totals.by_type.Q8_0.n' "$tmp/out") == 16 ]] || fail "made model Q8_0 tensors: $(jq -c .totals "$tmp/out")"
[[ $(run generate -m "$tmp/m.gguf" -p "Hello" -n 8 --temp 0 --json) == 0 ]] || fail "generate on made model: $(cat "$tmp/err")"
[[ $(jq '.ids | length' "$tmp/out") -le 8 ]] || fail "made model ids"

# bench: JSON with both speeds.
[[ $(run bench -m "$model" -p 16 -n 8 -r 2 -t 1 --json) == 0 ]] || fail "bench: $(cat "$tmp/err")"
jq -e '.pp_tps > 0 and .tg_tps > 0' "$tmp/out" >/dev/null || fail "bench json: $(cat "$tmp/out")"

# Errors: one line, exit 2 for usage, 1 for failures.
expect_error 2 "unknown command 'frobnicate'" frobnicate
expect_error 2 "-p TEXT is required" generate -m "$model"
expect_error 2 "-m FILE is required" generate -p hi
expect_error 2 "--temp expects a number, got 'hot'" generate -m "$model" -p hi --temp hot
expect_error 2 "--top-p 1.5 out of range" generate -m "$model" -p hi --top-p 1.5
expect_error 2 "unknown option '--bogus'" generate -m "$model" -p hi --bogus
expect_error 2 "--threads needs a value" generate -m "$model" -p hi --threads
expect_error 1 "/nonexistent.gguf" generate -m /nonexistent.gguf -p hi
head -c 1000 "$model" >"$tmp/trunc.gguf"
expect_error 1 "inferd generate: gguf:" generate -m "$tmp/trunc.gguf" -p hi
long=$(printf 'Once upon a time %.0s' $(seq 1 60))
expect_error 1 "does not fit the context of 128" generate -m "$model" -p "$long"
expect_error 1 "missing tensor 'token_embd.weight'" generate -m "$vocab" -p hi
expect_error 2 "unsupported --type 'Q9_9'" make-model --dim 64 --layers 1 --heads 4 --ffn 128 --vocab-from "$vocab" --type Q9_9 -o "$tmp/x.gguf"
expect_error 2 "must be multiples of 32 for Q4_0" make-model --dim 48 --layers 1 --heads 4 --ffn 128 --vocab-from "$vocab" --type Q4_0 -o "$tmp/x.gguf"
expect_error 1 "$tmp/missing.gguf" make-model --dim 64 --layers 1 --heads 4 --ffn 128 --vocab-from "$tmp/missing.gguf" -o "$tmp/x.gguf"
expect_error 2 "TEXT is required" tokenize -m "$model"

# After all of that, the model still serves.
[[ $(run generate -m "$model" -p "$prompt" -n 8 --temp 0 --json) == 0 ]] || fail "final generate"
echo "test_cli_generate: all checks passed"
