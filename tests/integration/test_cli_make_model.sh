#!/usr/bin/env bash
# `inferd make-model`: the per-tensor types of llama.cpp's quantization
# recipes (--dry-run against the lists llama-quantize c392e5094 chose, in
# tests/fixtures/recipes), files of every --arch that `inferd info` reads
# with the right keys, tensors, shapes and types, one-line errors with exit
# 2 for malformed options and 1 for a type this build cannot quantize; and,
# when llama.cpp's tools are at $LLAMA_CPP_BIN (default
# /tmp/llama/src/build/bin) at test time, that llama.cpp loads the files and
# that llama-quantize writes the same types and bytes. Needs $INFERD and
# $INFERD_FIXTURES.
set -euo pipefail

source "$(dirname "$0")/lib.sh"
recipes="$INFERD_FIXTURES/recipes"
llama_bin=${LLAMA_CPP_BIN:-/tmp/llama/src/build/bin}

# make_model ARGS...: make-model must succeed.
make_model() {
    [[ $(run make-model "$@") == 0 ]] || fail "make-model $*: $(cat "$tmp/err")"
}

# --- recipes: --dry-run equals what llama-quantize chose ---------------------
n_lists=0
while IFS='|' read -r shape args types; do
    [[ -z "$shape" || "$shape" == \#* ]] && continue
    args=${args//--vocab-from /--vocab-from $INFERD_FIXTURES/}
    for t in $types; do
        want="$recipes/$shape-$t.txt"
        [[ -f "$want" ]] || fail "no recorded list $want"
        # shellcheck disable=SC2086 # args is a list of words
        make_model $args --type "$t" --seed 1 --dry-run
        LC_ALL=C sort "$tmp/out" >"$tmp/got.txt"
        diff -u "$want" "$tmp/got.txt" >"$tmp/diff" ||
            fail "$shape $t: make-model's types differ from llama-quantize's: $(head -40 "$tmp/diff")"
        n_lists=$((n_lists + 1))
    done
done <"$recipes/shapes.txt"
[[ $n_lists -ge 19 ]] || fail "only $n_lists recipe lists checked"

# A few rows of Qwen2.5-0.5B's Q4_K_M by name, as a reader would check them:
# 896-wide rows fall back (Q4_K -> Q5_0, Q6_K -> Q8_0); the tied embeddings
# take the output's rule; ffn_down's 4864-wide rows stay K-quants.
grep -qx 'token_embd.weight Q8_0 896 151936' "$recipes/qwen2-0.5b-Q4_K_M.txt" || fail "qwen2 token_embd"
grep -qx 'blk.0.attn_v.weight Q8_0 896 128' "$recipes/qwen2-0.5b-Q4_K_M.txt" || fail "qwen2 attn_v 0"
grep -qx 'blk.3.attn_v.weight Q5_0 896 128' "$recipes/qwen2-0.5b-Q4_K_M.txt" || fail "qwen2 attn_v 3"
grep -qx 'blk.0.ffn_down.weight Q6_K 4864 896' "$recipes/qwen2-0.5b-Q4_K_M.txt" || fail "qwen2 ffn_down 0"
grep -qx 'blk.3.ffn_down.weight Q4_K 4864 896' "$recipes/qwen2-0.5b-Q4_K_M.txt" || fail "qwen2 ffn_down 3"
grep -qx 'output.weight Q6_K 2048 32000' "$recipes/tinyllama-1.1b-Q4_K_M.txt" || fail "tinyllama output"

# --- every --arch: a file inferd info reads back ---------------------------
# dim 64, 2 layers, 4 heads (head 16), 2 KV heads, FFN 128, 32000 tokens.
shape=(--dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --vocab-from "$vocab" --seed 3)
for arch in llama qwen2 phi3 gemma llama3; do
    for t in F32 Q8_0; do
        f="$tmp/$arch-$t.gguf"
        make_model --arch "$arch" "${shape[@]}" --type "$t" -o "$f"
        [[ $(run info -m "$f" --json) == 0 ]] || fail "info on $arch $t: $(cat "$tmp/err")"
        cp "$tmp/out" "$tmp/$arch-$t.json"
        gguf_arch=$arch
        [[ $arch == llama3 ]] && gguf_arch=llama
        check ".metadata[\"general.architecture\"] == \"$gguf_arch\""
        check ".metadata[\"general.file_type\"] == $([[ $t == F32 ]] && echo 0 || echo 7)"
        for k in context_length embedding_length block_count feed_forward_length \
            attention.head_count attention.head_count_kv rope.dimension_count vocab_size \
            attention.layer_norm_rms_epsilon rope.freq_base; do
            check ".metadata | has(\"$gguf_arch.$k\")"
        done
        check ".metadata[\"$gguf_arch.embedding_length\"] == 64 and .metadata[\"$gguf_arch.vocab_size\"] == 32000"
        check '.metadata["tokenizer.ggml.tokens"].n == 32000'
        # Matrices are the type asked for, everything 1-D is F32.
        check "[.tensors[] | select((.ne | length) == 2) | .type] | all(. == \"$t\")"
        check '[.tensors[] | select((.ne | length) == 1) | .type] | all(. == "F32")'
        check '[.tensors[] | select(.name == "token_embd.weight")][0].ne == [64, 32000]'
        check '[.tensors[] | select(.name == "blk.1.ffn_down.weight")][0].ne == [128, 64]'
    done
done

# llama: 9 tensors a block, its own output. The old llama file is unchanged.
jq -e '.tensors | length == 21' "$tmp/llama-F32.json" >/dev/null || fail "llama: tensor count"
jq -e '[.tensors[] | select(.name == "output.weight")][0].ne == [64, 32000]' "$tmp/llama-F32.json" \
    >/dev/null || fail "llama: output.weight"
jq -e '.metadata["llama.rope.freq_base"] == 10000 and (.metadata | has("llama.attention.key_length") | not)' \
    "$tmp/llama-F32.json" >/dev/null || fail "llama: keys"
make_model --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --type F32 --ctx 256 --seed 7 \
    --vocab-from "$model" -o "$tmp/again.gguf"
cmp -s "$tmp/again.gguf" "$INFERD_FIXTURES/models/random-vocab260K-f32.gguf" ||
    fail "make-model no longer reproduces random-vocab260K-f32.gguf"

# qwen2: Q/K/V biases, tied output, its rope base and epsilon.
q="$tmp/qwen2-F32.json"
jq -e '.tensors | length == 26' "$q" >/dev/null || fail "qwen2: tensor count"
jq -e '[.tensors[] | select(.name == "output.weight")] == []' "$q" >/dev/null || fail "qwen2: tied"
jq -e '[.tensors[] | select(.name | test("^blk\\.0\\.attn_[qkv]\\.bias$")) | .ne] == [[64], [32], [32]]' \
    "$q" >/dev/null || fail "qwen2: biases"
jq -e '.metadata["qwen2.rope.freq_base"] == 1000000 and
       .metadata["qwen2.attention.layer_norm_rms_epsilon"] < 1.1e-6' "$q" >/dev/null ||
    fail "qwen2: rope base / eps"
make_model --arch qwen2 "${shape[@]}" --no-tied-output --dry-run
grep -qx 'output.weight F32 64 32000' "$tmp/out" || fail "qwen2 --no-tied-output"

# phi3: fused QKV and gate+up, sliding window, an output.weight.
p="$tmp/phi3-Q8_0.json"
jq -e '.tensors | length == 15' "$p" >/dev/null || fail "phi3: tensor count"
jq -e '[.tensors[] | select(.name == "blk.0.attn_qkv.weight")][0].ne == [64, 128]' "$p" >/dev/null ||
    fail "phi3: attn_qkv"
jq -e '[.tensors[] | select(.name == "blk.0.ffn_up.weight")][0].ne == [64, 256]' "$p" >/dev/null ||
    fail "phi3: ffn_up"
jq -e '[.tensors[] | select(.name | test("ffn_gate|attn_q\\.|attn_k\\.|attn_v\\."))] == []' "$p" \
    >/dev/null || fail "phi3: unfused tensors"
jq -e '[.tensors[] | select(.name == "output.weight")][0].type == "Q8_0"' "$p" >/dev/null ||
    fail "phi3: output.weight"
jq -e '.metadata["phi3.attention.sliding_window"] == 2047' "$p" >/dev/null || fail "phi3: swa"
make_model --arch phi3 "${shape[@]}" --swa 1000 --dry-run

# gemma: a wider head (--head-dim), key/value lengths, tied output.
make_model --arch gemma "${shape[@]}" --head-dim 32 --type Q8_0 -o "$tmp/gemma-wide.gguf"
[[ $(run info -m "$tmp/gemma-wide.gguf" --json) == 0 ]] || fail "info gemma-wide"
check '.tensors | length == 20'
check '[.tensors[] | select(.name == "output.weight")] == []'
check '[.tensors[] | select(.name == "blk.0.attn_q.weight")][0].ne == [64, 128]'
check '[.tensors[] | select(.name == "blk.0.attn_k.weight")][0].ne == [64, 64]'
check '[.tensors[] | select(.name == "blk.0.attn_output.weight")][0].ne == [128, 64]'
check '.metadata["gemma.attention.key_length"] == 32 and .metadata["gemma.attention.value_length"] == 32'
check '.metadata["gemma.rope.dimension_count"] == 32'
check '[.tensors[] | select(.name == "output_norm.weight")][0].type == "F32"'

# llama3: llama with rope base 500000 and Llama 3.1's rope factors.
l3="$tmp/llama3-F32.json"
jq -e '.tensors | length == 22' "$l3" >/dev/null || fail "llama3: tensor count"
jq -e '[.tensors[] | select(.name == "rope_freqs.weight")][0] | .ne == [8] and .type == "F32"' \
    "$l3" >/dev/null || fail "llama3: rope_freqs"
jq -e '.metadata["llama.rope.freq_base"] == 500000' "$l3" >/dev/null || fail "llama3: rope base"
# Factors of a 128-wide head (as Llama 3.1 8B's): 1 for short wavelengths, 8
# for long ones, a blend between.
make_model --arch llama3 --dim 256 --layers 1 --heads 2 --kv-heads 1 --ffn 256 \
    --vocab-from "$model" --type F32 -o "$tmp/l3-128.gguf"
[[ $(run info -m "$tmp/l3-128.gguf" --json) == 0 ]] || fail "info l3-128"
read -r off size < <(jq -r '.data_offset as $d | .tensors[] | select(.name == "rope_freqs.weight") |
                            "\($d + .offset) \(.size_bytes)"' "$tmp/out")
[[ $size == 256 ]] || fail "rope_freqs of a 128-wide head: $size bytes"
factors=$(tail -c +$((off + 1)) "$tmp/l3-128.gguf" | head -c "$size" | od -An -v -tf4 | tr -s ' \n' ' ')
read -r -a f <<<"$factors"
[[ ${#f[@]} == 64 ]] || fail "rope_freqs: ${#f[@]} values"
[[ ${f[0]} == 1 && ${f[28]} == 1 && ${f[35]} == 8 && ${f[63]} == 8 ]] || fail "rope_freqs ends: $factors"
awk -v a="${f[29]}" -v b="${f[34]}" 'BEGIN { exit !(a > 1.2074 && a < 1.2076 && b > 5.2572 && b < 5.2574) }' ||
    fail "rope_freqs blend: ${f[29]} .. ${f[34]}"

# The made llama model still generates.
[[ $(run generate -m "$tmp/llama-Q8_0.gguf" -p "Hello" -n 4 --temp 0 --json) == 0 ]] ||
    fail "generate on the made llama: $(cat "$tmp/err")"

# --- quantized mixes this build can write ---------------------------------
# A mix needing a type without a quantizer here fails before writing,
# naming the tensor; one whose types all have quantizers is written with
# exactly the --dry-run types.
small=(--dim 256 --layers 8 --heads 4 --kv-heads 1 --ffn 512 --vocab-from "$vocab")
for t in Q4_K_M Q6_K Q2_K IQ4_NL; do
    rc=$(run make-model "${small[@]}" --type "$t" -o "$tmp/mix.gguf")
    if [[ $rc == 0 ]]; then
        make_model "${small[@]}" --type "$t" --dry-run
        LC_ALL=C sort "$tmp/out" >"$tmp/plan.txt"
        [[ $(run info -m "$tmp/mix.gguf" --json) == 0 ]] || fail "info on $t: $(cat "$tmp/err")"
        jq -r '.tensors[] | "\(.name) \(.type) \(.ne[0]) \(.ne[1] // 1)"' "$tmp/out" | LC_ALL=C sort \
            >"$tmp/written.txt"
        diff -u "$tmp/plan.txt" "$tmp/written.txt" || fail "$t: written types differ from --dry-run"
    else
        [[ $rc == 1 ]] || fail "make-model --type $t: exit $rc: $(cat "$tmp/err")"
        grep -Eq "^inferd make-model: tensor '[a-z0-9_.]+' needs [A-Z0-9_]+, which this build cannot quantize$" \
            "$tmp/err" || fail "make-model --type $t: $(cat "$tmp/err")"
        [[ ! -e "$tmp/mix.gguf" ]] || fail "$t: a file was left behind"
        echo "note: this build cannot write $t: $(cat "$tmp/err")" >&2
    fi
    rm -f "$tmp/mix.gguf"
done

# --- malformed options: one line, exit 2 -------------------------------------
base=(--dim 64 --layers 1 --heads 4 --ffn 128 --vocab-from "$vocab" -o "$tmp/x.gguf")
expect_error 2 "unknown --arch 'mistral'" make-model --arch mistral "${base[@]}"
expect_error 2 "unsupported --type 'Q4_K_X'" make-model --type Q4_K_X "${base[@]}"
expect_error 2 "--dim must be a multiple of --heads" make-model "${base[@]}" --heads 5
expect_error 2 "--heads a multiple of --kv-heads" make-model "${base[@]}" --kv-heads 3
expect_error 2 "--head-dim must be --dim / --heads for qwen2" make-model --arch qwen2 "${base[@]}" --head-dim 32
expect_error 2 "--tied-output does not apply" make-model --arch phi3 "${base[@]}" --tied-output
expect_error 2 "--no-tied-output does not apply" make-model --arch gemma "${base[@]}" --no-tied-output
expect_error 2 "contradict" make-model "${base[@]}" --tied-output --no-tied-output
expect_error 2 "--swa applies to phi3 only" make-model "${base[@]}" --swa 100
expect_error 2 "must be multiples of 256 for Q4_K" make-model "${base[@]}" --type Q4_K
expect_error 2 "must be multiples of 256 for Q6_K" make-model "${base[@]}" --type Q6_K --pure
# A mix whose rows fit no type: llama-quantize refuses these too.
expect_error 2 "tensor 'token_embd.weight' (48 x 32000): rows of 48 are not whole IQ4_NL blocks" \
    make-model --dim 48 --layers 1 --heads 4 --ffn 128 --vocab-from "$vocab" --type IQ4_NL --dry-run
expect_error 2 "-o (or --dry-run) are required" make-model --dim 64 --layers 1 --heads 4 --ffn 128 \
    --vocab-from "$vocab"
expect_error 2 "--head-dim 1 out of range" make-model --arch gemma "${base[@]}" --head-dim 1
[[ ! -e "$tmp/x.gguf" ]] || fail "a failed make-model left a file"
[[ $(run make-model --help) == 0 ]] || fail "--help"
for word in --arch qwen2 phi3 gemma llama3 Q4_K_M Q3_K_L IQ4_XS --pure --head-dim --tied-output \
    --no-tied-output --swa --rope-base --dry-run; do
    grep -q -- "$word" "$tmp/out" || fail "--help does not mention $word"
done

# --- llama.cpp, when it is there ---------------------------------------------
if [[ ! -x "$llama_bin/llama-cli" || ! -x "$llama_bin/llama-quantize" ]] || ! command -v python3 >/dev/null; then
    echo "test_cli_make_model: no llama-cli and llama-quantize in $llama_bin (or no python3):" \
        "skipping the llama.cpp checks" >&2
    echo "test_cli_make_model: ok"
    exit 0
fi
# llama.cpp loads and runs every architecture.
for arch in llama qwen2 phi3 gemma llama3; do
    for t in F32 Q8_0; do
        "$llama_bin/llama-cli" -m "$tmp/$arch-$t.gguf" -p "Hello" -n 2 -no-cnv --temp 0 -t 2 \
            -c 128 >"$tmp/llama.out" 2>"$tmp/llama.err" </dev/null ||
            fail "llama-cli on $arch $t: $(tail -5 "$tmp/llama.err")"
    done
done
"$llama_bin/llama-cli" -m "$tmp/gemma-wide.gguf" -p "Hello" -n 2 -no-cnv --temp 0 -t 2 -c 128 \
    >"$tmp/llama.out" 2>"$tmp/llama.err" </dev/null || fail "llama-cli on gemma-wide: $(tail -5 "$tmp/llama.err")"

# llama-quantize on make-model's F32 file picks the --dry-run types and,
# where this build can quantize them, writes the same bytes.
n_bytes_checked=0 n_written=0
for arch in qwen2 phi3 gemma llama; do
    args=(--arch "$arch" --dim 320 --layers 8 --heads 5 --kv-heads 1 --ffn 768 --vocab-from "$vocab")
    [[ $arch == phi3 ]] && args=(--arch phi3 --dim 320 --layers 8 --heads 5 --ffn 800 --vocab-from "$vocab")
    make_model "${args[@]}" --type F32 -o "$tmp/src.gguf"
    for t in Q4_K_M Q5_K_M Q6_K Q3_K_M IQ4_NL; do
        "$llama_bin/llama-quantize" "$tmp/src.gguf" "$tmp/lq.gguf" "$t" >"$tmp/lq.log" 2>&1 ||
            fail "llama-quantize $arch $t: $(tail -5 "$tmp/lq.log")"
        make_model "${args[@]}" --type "$t" --dry-run
        LC_ALL=C sort "$tmp/out" >"$tmp/plan.txt"
        python3 "$recipes/gguf_types.py" "$tmp/lq.gguf" >"$tmp/lq.txt"
        diff -u "$tmp/lq.txt" "$tmp/plan.txt" || fail "$arch $t: llama-quantize chose other types"
        if [[ $(run make-model "${args[@]}" --type "$t" -o "$tmp/ours.gguf") == 0 ]]; then
            n_written=$((n_written + 1))
            [[ $(run info -m "$tmp/lq.gguf" --json) == 0 ]] || fail "info on llama-quantize's $t"
            jq -r '.data_offset as $d | .tensors[] | "\(.name) \($d + .offset) \(.size_bytes)"' \
                "$tmp/out" | LC_ALL=C sort >"$tmp/lq.idx"
            [[ $(run info -m "$tmp/ours.gguf" --json) == 0 ]] || fail "info on our $t"
            jq -r '.data_offset as $d | .tensors[] | "\(.name) \($d + .offset) \(.size_bytes)"' \
                "$tmp/out" | LC_ALL=C sort >"$tmp/ours.idx"
            while read -r name off size && read -r name2 off2 size2 <&3; do
                [[ $name == "$name2" && $size == "$size2" ]] || fail "$arch $t: $name $size vs $name2 $size2"
                cmp -s <(tail -c +$((off + 1)) "$tmp/lq.gguf" | head -c "$size") \
                    <(tail -c +$((off2 + 1)) "$tmp/ours.gguf" | head -c "$size2") ||
                    fail "$arch $t: $name differs from llama-quantize's bytes"
                n_bytes_checked=$((n_bytes_checked + 1))
            done <"$tmp/lq.idx" 3<"$tmp/ours.idx"
        fi
        rm -f "$tmp/lq.gguf" "$tmp/ours.gguf"
    done
done
[[ $n_written == 0 || $n_bytes_checked -gt 0 ]] || fail "no tensor compared with llama-quantize's bytes"
echo "test_cli_make_model: ok (with llama.cpp from $llama_bin; $n_written files, $n_bytes_checked tensors" \
    "byte-identical to llama-quantize's)"
