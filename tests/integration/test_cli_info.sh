#!/usr/bin/env bash
# `inferd info`: JSON and text output for the bundled model and a
# vocabulary-only file, exit 1 with one message line for a broken file, exit 2
# for usage errors. Needs $INFERD (the binary) and $INFERD_FIXTURES.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

# --- the model, as JSON -----------------------------------------------------
rc=$(run info -m "$model" --json)
[[ "$rc" == 0 ]] || fail "info --json exited $rc: $(cat "$tmp/err")"
[[ $(wc -l <"$tmp/out") == 1 ]] || fail "--json must print one line"
check '.version == 3 and .alignment == 32'
check '.metadata["general.architecture"] == "llama"'
check '.metadata["llama.embedding_length"] == 64'
check '.metadata["llama.block_count"] == 5'
check '.metadata["llama.attention.layer_norm_rms_epsilon"] > 0.0000099 and
       .metadata["llama.attention.layer_norm_rms_epsilon"] < 0.0000101'
check '.metadata["tokenizer.ggml.tokens"] == {"type":"array","elem_type":"string","n":512}'
check '.metadata["tokenizer.ggml.scores"].elem_type == "f32"'
check '.tensors | length == 48'
check '.tensors[0] == {"name":"token_embd.weight","type":"F32","ne":[64,512],"offset":0,
                       "size_bytes":131072}'
check '[.tensors[] | select(.name == "blk.4.ffn_down.weight")][0].ne == [172, 64]'
check '.totals.n_tensors == 48'
check '.totals.size_bytes == ([.tensors[].size_bytes] | add)'
check '.totals.by_type == {"F32": {"n": 48, "size_bytes": 1171200}}'
check '.data_offset % 32 == 0 and .file_size == 1185376'

# A quantized model: totals split by type.
rc=$(run info -m "$INFERD_FIXTURES/models/stories260K-ff192-q4_0.gguf" --json)
[[ "$rc" == 0 ]] || fail "info on the q4_0 model exited $rc"
check '.totals.by_type.Q4_0.n > 0 and .totals.by_type.F32.n > 0'
check '([.totals.by_type[].n] | add) == .totals.n_tensors'

# --- a vocabulary-only file: no tensors, short arrays listed in full ------
rc=$(run info -m "$vocab" --json)
[[ "$rc" == 0 ]] || fail "info on the vocab exited $rc"
check '.tensors == [] and .totals.n_tensors == 0 and .totals.by_type == {}'
check '.metadata["tokenizer.ggml.model"] == "llama"'
check '.metadata["tokenizer.ggml.add_bos_token"] == true'

# --- text output ---------------------------------------------------------------
rc=$(run info -m "$model")
[[ "$rc" == 0 ]] || fail "info (text) exited $rc"
grep -q '^version: *3$' "$tmp/out" || fail "text: no version line"
grep -q 'general.architecture .*"llama"' "$tmp/out" || fail "text: no architecture"
grep -q 'tokenizer.ggml.tokens .*\[string x 512\] "<unk>", "<s>"' "$tmp/out" ||
    fail "text: token array not summarized"
grep -q '^  token_embd.weight  *F32  *64 x 512 ' "$tmp/out" || fail "text: no tensor row"
grep -q '^  all  *48 tensors  *1171200 bytes$' "$tmp/out" || fail "text: no totals"

# --- broken files: exit 1, one line naming the problem ------------------------
# Cut inside the token list.
head -c 5000 "$model" >"$tmp/truncated.gguf"
rc=$(run info -m "$tmp/truncated.gguf" --json)
[[ "$rc" == 1 ]] || fail "truncated file: exit $rc, want 1"
[[ ! -s "$tmp/out" ]] || fail "truncated file: something on stdout"
[[ $(wc -l <"$tmp/err") == 1 ]] || fail "truncated file: want one line on stderr"
grep -q '^inferd info: gguf: truncated at offset 4996 reading key 0 array string' "$tmp/err" ||
    fail "truncated file: message: $(cat "$tmp/err")"

# Cut so early that the counts in the header cannot fit.
head -c 1000 "$model" >"$tmp/truncated-early.gguf"
rc=$(run info -m "$tmp/truncated-early.gguf")
[[ "$rc" == 1 ]] || fail "early cut: exit $rc, want 1"
grep -q '^inferd info: gguf: n_tensors 48 at offset 8 is absurd for a file of 1000 bytes' \
    "$tmp/err" || fail "early cut: message: $(cat "$tmp/err")"

# The whole header but not all the tensor data.
size=$(stat -c %s "$model")
head -c $((size - 100)) "$model" >"$tmp/short-data.gguf"
rc=$(run info -m "$tmp/short-data.gguf")
[[ "$rc" == 1 ]] || fail "short data: exit $rc, want 1"
grep -q "^inferd info: gguf: tensor '.*' data \[.*) extends past end of file" "$tmp/err" ||
    fail "short data: message: $(cat "$tmp/err")"

printf 'GGML\3\0\0\0' >"$tmp/magic.gguf"
head -c 100 /dev/zero >>"$tmp/magic.gguf"
rc=$(run info -m "$tmp/magic.gguf")
[[ "$rc" == 1 ]] || fail "bad magic: exit $rc, want 1"
grep -q '^inferd info: gguf: bad magic 0x4c4d4747' "$tmp/err" || fail "bad magic: $(cat "$tmp/err")"

rc=$(run info -m "$tmp/does-not-exist.gguf")
[[ "$rc" == 1 ]] || fail "missing file: exit $rc, want 1"
grep -q "^inferd info: gguf: cannot open '$tmp/does-not-exist.gguf'" "$tmp/err" ||
    fail "missing file: $(cat "$tmp/err")"

# --- usage errors: exit 2 ------------------------------------------------------
rc=$(run info)
[[ "$rc" == 2 ]] || fail "no -m: exit $rc, want 2"
grep -q '^inferd info: ' "$tmp/err" || fail "no -m: message: $(cat "$tmp/err")"
rc=$(run info -m "$model" --frobnicate)
[[ "$rc" == 2 ]] || fail "unknown option: exit $rc, want 2"
grep -q "unknown option '--frobnicate'" "$tmp/err" || fail "unknown option: $(cat "$tmp/err")"
rc=$(run info -m)
[[ "$rc" == 2 ]] || fail "-m without value: exit $rc, want 2"
rc=$(run info -m "$model" extra)
[[ "$rc" == 2 ]] || fail "extra argument: exit $rc, want 2"
rc=$(run info --help)
[[ "$rc" == 0 ]] || fail "--help: exit $rc"
grep -q 'usage: inferd info' "$tmp/out" || fail "--help: no usage line"

echo "test_cli_info: ok"
