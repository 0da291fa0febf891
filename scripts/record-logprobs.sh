#!/usr/bin/env bash
# Record reference greedy log-probabilities from llama.cpp's llama-server,
# in the format of tests/fixtures/expected/logprobs_*.json: for each prompt,
# its ids (/tokenize with the vocabulary's special tokens), up to 8 greedy
# tokens and the top-10 logprobs of each step (/completion, temperature 0,
# top_k 1, n_probs 10, no prompt cache, 2 threads); null where llama-server
# reports none (a token that ends inside a UTF-8 character).
#
#   scripts/record-logprobs.sh LLAMA_SERVER MODEL.gguf OUT.json [PROMPT...]
#
# LLAMA_SERVER is a llama-server binary built from llama.cpp (outside this
# repository); the fixture's README records its commit. Default prompts are
# those of the shared reference files.
set -euo pipefail
server=$1 model=$2 out=$3
shift 3
[ $# -gt 0 ] || set -- "Once upon a time" "The little girl" "Lily and Ben were"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
"$server" -m "$model" --host 127.0.0.1 --port "$port" -t 2 -c 512 -np 1 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.2
done
result='{}'
for p in "$@"; do
  body=$(jq -n --arg p "$p" '{content: $p, add_special: true}')
  ids=$(curl -sf "http://127.0.0.1:$port/tokenize" -d "$body" | jq -c '.tokens')
  body=$(jq -n --argjson ids "$ids" \
    '{prompt: $ids, n_predict: 8, temperature: 0, top_k: 1, n_probs: 10, cache_prompt: false,
      return_tokens: true}')
  # llama-server gives no probabilities for a token that leaves the text
  # an incomplete UTF-8 sequence (a byte token): such steps get null, and
  # the others stay aligned with their tokens (the ids are a subsequence).
  entry=$(curl -sf "http://127.0.0.1:$port/completion" -d "$body" |
    jq -c --argjson ids "$ids" '
      .tokens as $toks | .completion_probabilities as $cp |
      {prompt_ids: $ids, tokens: $toks,
       completion_probabilities: (reduce range(0; $toks | length) as $i
         ({out: [], j: 0};
          if .j < ($cp | length) and $cp[.j].id == $toks[$i]
          then {out: (.out + [$cp[.j]]), j: (.j + 1)}
          else {out: (.out + [null]), j: .j} end) | .out)}')
  result=$(jq -c --arg p "$p" --argjson e "$entry" '. + {($p): $e}' <<<"$result")
done
jq . <<<"$result" >"$out"
echo "wrote $out"
