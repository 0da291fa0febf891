#!/usr/bin/env bash
# inferd serve, OpenAI endpoints: completions and chat, streamed and not,
# give the same tokens as `inferd generate` for the same input and seed,
# also when many run at once; usage, logprobs, stop strings, models.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

serve_start -m "$model" -t 1 -np 4
serve_wait_ready

# The reference: inferd generate, greedy and seeded (special-token text is
# parsed there; these prompts have none).
ref() { # ref PROMPT N TEMP SEED -> text
    "$INFERD" generate -m "$model" -p "$1" -n "$2" --temp "$3" --seed "$4" -t 1 --json \
        2>/dev/null | jq -r .text
}
# Join the text of an SSE stream of completion or chat chunks.
sse_text() { # sse_text FILE
    grep '^data: {' "$1" | sed 's/^data: //' |
        jq -j '.choices[0] | select(. != null) | (.text // .delta.content // "")'
}

# ---- models ----
expect_http 200 GET /v1/models
check '.object == "list" and (.data | length) == 1 and .data[0].id == "stories260K"'
check '.data[0].object == "model" and .data[0].owned_by == "inferd"'
expect_http 200 GET /v1/models/stories260K
check '.id == "stories260K"'
expect_http 404 GET /v1/models/other
check '.error.code == "model_not_found"'

# ---- completions: greedy and seeded, equal to generate ----
want=$(ref "Once upon a time" 24 0 1)
[[ -n "$want" ]] || fail "empty reference text"
expect_http 200 POST /v1/completions \
    '{"model":"stories260K","prompt":"Once upon a time","max_tokens":24,"temperature":0}'
check '.object == "text_completion" and (.id | startswith("cmpl-")) and .model == "stories260K"'
check '.choices | length == 1'
check '.choices[0].finish_reason == "length" and .choices[0].logprobs == null'
check '.usage.prompt_tokens == 5 and .usage.completion_tokens == 24 and .usage.total_tokens == 29'
got=$(jq -r '.choices[0].text' "$tmp/out")
[[ "$got" == "$want" ]] || fail "greedy completion '$got' != generate '$want'"

want_seeded=$(ref "Once upon a time" 24 0.9 1234)
body='{"prompt":"Once upon a time","max_tokens":24,"temperature":0.9,"seed":1234}'
expect_http 200 POST /v1/completions "$body"
check '.seed == 1234'
[[ "$(jq -r '.choices[0].text' "$tmp/out")" == "$want_seeded" ]] ||
    fail "seeded completion differs from generate: $(jq -r '.choices[0].text' "$tmp/out") vs $want_seeded"

# top_p 0 keeps only the most likely token: greedy whatever the seed.
for seed in 1 2; do
    expect_http 200 POST /v1/completions \
        "{\"prompt\":\"Once upon a time\",\"max_tokens\":24,\"temperature\":1,\"top_p\":0,\"seed\":$seed}"
    [[ "$(jq -r '.choices[0].text' "$tmp/out")" == "$want" ]] || fail "top_p 0 (seed $seed) is not greedy"
done

# The prompt as token ids gives the same text.
ids=$("$INFERD" tokenize -m "$model" --json "Once upon a time" | jq -c .ids)
expect_http 200 POST /v1/completions "{\"prompt\":$ids,\"max_tokens\":24,\"temperature\":0}"
[[ "$(jq -r '.choices[0].text' "$tmp/out")" == "$want" ]] || fail "token-id prompt differs"

# max_tokens defaults to 16 for completions.
expect_http 200 POST /v1/completions '{"prompt":"Once upon a time","temperature":0}'
check '.usage.completion_tokens == 16'

# ---- streamed completion ----
curl -sN -o "$tmp/sse" -w '%{http_code}' "$url/v1/completions" \
    -d '{"prompt":"Once upon a time","max_tokens":24,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' \
    >"$tmp/code"
[[ "$(cat "$tmp/code")" == 200 ]] || fail "stream status $(cat "$tmp/code")"
[[ "$(sse_text "$tmp/sse")" == "$want" ]] || fail "streamed text '$(sse_text "$tmp/sse")' != '$want'"
[[ "$(tail -n 2 "$tmp/sse" | head -n 1)" == "data: [DONE]" ]] || fail "stream does not end with [DONE]"
grep '^data: {' "$tmp/sse" | sed 's/^data: //' | jq -s -e \
    '(map(select(.choices|length>0)) | last | .choices[0].finish_reason) == "length" and
     (last | .choices == [] and .usage.completion_tokens == 24) and
     (map(.object) | unique) == ["text_completion"] and (map(.id) | unique | length) == 1' >/dev/null ||
    fail "stream chunks: $(head -c 600 "$tmp/sse")"

# ---- stop strings: the text ends before the stop string ----
stop_at=$(printf '%s' "$want" | cut -c 12-16)
expect_http 200 POST /v1/completions \
    "{\"prompt\":\"Once upon a time\",\"max_tokens\":24,\"temperature\":0,\"stop\":[\"$stop_at\"]}"
check '.choices[0].finish_reason == "stop"'
got=$(jq -r '.choices[0].text' "$tmp/out")
[[ "$want" == "$got$stop_at"* ]] || fail "stop: '$got' is not the text before '$stop_at' in '$want'"

# ---- logprobs ----
expect_http 200 POST /v1/completions \
    '{"prompt":"Once upon a time","max_tokens":6,"temperature":0,"logprobs":3}'
check '.choices[0].logprobs.tokens | length == 6'
check '.choices[0].logprobs.token_logprobs | all(. <= 0)'
check '.choices[0].logprobs.top_logprobs | length == 6 and all(length == 3)'
check '.choices[0].logprobs.text_offset | . == (sort)'
check '(.choices[0].logprobs.tokens | join("")) == .choices[0].text'
# Greedy: each token is its step's most likely one.
check '[.choices[0].logprobs as $l | range(6) | ($l.top_logprobs[.] | to_entries | max_by(.value).value) == $l.token_logprobs[.]] | all'

# ---- chat ----
msgs='[{"role":"system","content":"You are a storyteller."},{"role":"user","content":"Tell me a story."}]'
expect_http 200 POST /v1/chat/completions "{\"messages\":$msgs,\"max_tokens\":20,\"temperature\":0}"
check '.object == "chat.completion" and (.id | startswith("chatcmpl-"))'
check '.choices[0].message.role == "assistant" and (.choices[0].message.content | type) == "string"'
check '.choices[0].finish_reason == "length" and .usage.completion_tokens == 20'
chat_text=$(jq -r '.choices[0].message.content' "$tmp/out")
chat_prompt_tokens=$(jq -r '.usage.prompt_tokens' "$tmp/out")
# The model has no template: chatml, rendered and tokenized with special tokens parsed.
chatml=$'<|im_start|>system\nYou are a storyteller.<|im_end|>\n<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n'
[[ "$(ref "$chatml" 20 0 1)" == "$chat_text" ]] || fail "chat text differs from generate on the chatml prompt"
n_tok=$("$INFERD" tokenize -m "$model" --parse-special --json "$chatml" | jq '.ids | length')
[[ "$n_tok" == "$chat_prompt_tokens" ]] || fail "chat prompt tokens $chat_prompt_tokens != $n_tok"

# Content as text parts is the same prompt.
parts='[{"role":"system","content":[{"type":"text","text":"You are a "},{"type":"text","text":"storyteller."}]},{"role":"user","content":"Tell me a story."}]'
expect_http 200 POST /v1/chat/completions "{\"messages\":$parts,\"max_tokens\":20,\"temperature\":0}"
[[ "$(jq -r '.choices[0].message.content' "$tmp/out")" == "$chat_text" ]] || fail "text parts differ"

# Streamed chat: role first, same content, usage at the end.
curl -sN -o "$tmp/sse" "$url/v1/chat/completions" \
    -d "{\"messages\":$msgs,\"max_tokens\":20,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
[[ "$(sse_text "$tmp/sse")" == "$chat_text" ]] || fail "streamed chat '$(sse_text "$tmp/sse")' != '$chat_text'"
grep '^data: {' "$tmp/sse" | sed 's/^data: //' | jq -s -e \
    '(.[0].choices[0].delta.role == "assistant") and (map(.object) | unique) == ["chat.completion.chunk"] and
     (last.usage.completion_tokens == 20) and
     (map(select(.choices|length>0)) | last | .choices[0].finish_reason) == "length"' >/dev/null ||
    fail "chat stream chunks: $(head -c 600 "$tmp/sse")"

# Chat logprobs.
expect_http 200 POST /v1/chat/completions \
    "{\"messages\":$msgs,\"max_tokens\":5,\"temperature\":0,\"logprobs\":true,\"top_logprobs\":2}"
check '.choices[0].logprobs.content | length == 5'
check '.choices[0].logprobs.content | all(.logprob <= 0 and (.top_logprobs | length) == 2 and (.bytes | type) == "array")'
check '.choices[0].logprobs.content | all(.top_logprobs[0].logprob == .logprob)'

# ---- concurrency: 12 requests at once, streamed and not, greedy and seeded ----
pids=()
for i in $(seq 0 11); do
    seed=$((100 + i))
    temp=$([[ $((i % 2)) == 0 ]] && echo 0 || echo 0.8)
    stream=$([[ $((i % 3)) == 0 ]] && echo true || echo false)
    printf '%s\n' "$seed $temp $stream" >"$tmp/req$i"
    curl -sN -o "$tmp/resp$i" "$url/v1/completions" \
        -d "{\"prompt\":\"Once upon a time\",\"max_tokens\":32,\"temperature\":$temp,\"seed\":$seed,\"stream\":$stream}" &
    pids+=($!)
done
wait "${pids[@]}"
for i in $(seq 0 11); do
    read -r seed temp stream <"$tmp/req$i"
    want_i=$(ref "Once upon a time" 32 "$temp" "$seed")
    if [[ "$stream" == true ]]; then
        got_i=$(sse_text "$tmp/resp$i")
    else
        got_i=$(jq -r '.choices[0].text' "$tmp/resp$i")
    fi
    [[ "$got_i" == "$want_i" ]] || fail "concurrent request $i (seed $seed temp $temp stream $stream): '$got_i' != '$want_i'"
done

# Every request above was counted.
expect_http 200 GET /v1/status
check '.state == "ready" and .models[0].requests.done >= 20 and .models[0].slots == 4'

serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve did not exit 0 on SIGTERM: $(cat "$tmp/serve.log")"
grep -q 'draining' "$tmp/serve.log" || fail "no drain in the log"
echo "ok"
