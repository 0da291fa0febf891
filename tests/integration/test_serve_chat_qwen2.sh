#!/usr/bin/env bash
# A chat request through inferd serve on a qwen2 file with the Qwen
# byte-level BPE vocabulary gives llama-server's greedy reply: the file is
# written by make-model (deterministic), the replies were recorded from
# llama.cpp c392e5094 (tests/fixtures/expected/chat_qwen2.json). Checks the
# chatml rendering with <|im_start|>/<|im_end|> as control tokens, the BPE
# tokenizer, the qwen2 forward pass and the streamed text.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

expected="$INFERD_FIXTURES/expected/chat_qwen2.json"
model_file="$tmp/chat-qwen2.gguf"
read -r -a mm_args < <(jq -r '.make_model' "$expected" | sed 's/^inferd make-model //')
for i in "${!mm_args[@]}"; do
    [[ "${mm_args[$i]}" == vocab/* ]] && mm_args[$i]="$INFERD_FIXTURES/${mm_args[$i]}"
done
"$INFERD" make-model "${mm_args[@]}" -o "$model_file" >/dev/null || fail "make-model failed"

serve_start -m "$model_file" --alias qwen -c 512 -t 2
serve_wait_ready

n=$(jq '.cases | length' "$expected")
[[ "$n" -ge 1 ]] || fail "no cases in $expected"
for ((i = 0; i < n; i++)); do
    user=$(jq -r ".cases[$i].user" "$expected")
    body=$(jq -n --arg q "$user" '{model: "qwen", temperature: 0, max_tokens: 24,
        messages: [{role: "system", content: "You are a helpful assistant."},
                   {role: "user", content: $q}]}')
    expect_http 200 POST /v1/chat/completions "$body"
    want=$(jq -r ".cases[$i].content" "$expected")
    got=$(jq -r '.choices[0].message.content' "$tmp/out")
    [[ "$got" == "$want" ]] || fail "case $i: reply differs from llama-server's
 got: $got
want: $want"
    check ".choices[0].finish_reason == $(jq ".cases[$i].finish_reason" "$expected")"
    check ".usage.prompt_tokens == $(jq ".cases[$i].prompt_tokens" "$expected")"
    check ".usage.completion_tokens == $(jq ".cases[$i].completion_tokens" "$expected")"

    # Streamed: the chunks join to the same text (no broken UTF-8 on the way).
    sbody=$(jq -c '. + {stream: true}' <<<"$body")
    expect_http 200 POST /v1/chat/completions "$sbody"
    sgot=$(grep '^data: {' "$tmp/out" | sed 's/^data: //' | jq -j '.choices[0].delta.content // ""')
    [[ "$sgot" == "$want" ]] || fail "case $i: streamed reply differs"
done
echo "ok: $n chat replies equal llama-server's"
