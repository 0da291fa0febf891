#!/usr/bin/env bash
# `inferd serve`'s KServe v2 (Open Inference Protocol) endpoints: server and
# model metadata, health, inference (greedy text equal to `inferd generate`,
# sampling fields as parameters or as input tensors), the model repository
# (index, unload, load on demand, explicit load), and bad input: each gets a
# precise error ({"error": "message"}) and the server still infers after it.
# Needs $INFERD and $INFERD_FIXTURES.
set -euo pipefail

source "$(dirname "$0")/lib.sh"
unset INFERD_API_KEY # the server would take it as --api-key

m=stories260K
infer=/v2/models/$m/infer
text_input='{"name":"text_input","datatype":"BYTES","shape":[1],"data":["Once upon a time"]}'

# check_kserve_error MESSAGE: $tmp/out is {"error": "...MESSAGE..."}.
check_kserve_error() {
    jq -e --arg msg "$1" 'keys == ["error"] and (.error | type == "string" and contains($msg))' \
        "$tmp/out" >/dev/null || fail "expected a KServe error with '$1', got: $(head -c 400 "$tmp/out")"
}

# A good inference, and a good OpenAI completion.
infers() {
    expect_http 200 POST $infer "{\"inputs\":[$text_input],\"parameters\":{\"max_tokens\":2}}"
    check '.outputs[0].name == "text_output" and (.outputs[0].data[0] | type == "string")'
    still_serves
}

# bad STATUS MESSAGE METHOD PATH [BODY] [CURL ARGS...]
bad() {
    local status=$1 msg=$2
    shift 2
    expect_http "$status" "$@"
    check_kserve_error "$msg"
    infers
}

serve_start -m "$model" -t 1 -np 2
serve_wait_ready

# ---- server, health, model metadata --------------------------------------
expect_http 200 GET /v2
check '.name == "inferd" and (.version | type == "string" and length > 0)'
check '.extensions | index("model_repository") != null'
expect_http 200 GET /v2/health/live
check '.live == true'
expect_http 200 GET /v2/health/ready
check '.ready == true'
expect_http 200 GET /v2/models/$m
check ".name == \"$m\" and .versions == [\"1\"] and .ready == true"
check '.inputs | map(select(.name == "text_input" and .datatype == "BYTES")) | length == 1'
check '.inputs | map(select(.name == "max_tokens" and .datatype == "INT32")) | length == 1'
check '.inputs | map(select(.name == "temperature" and .datatype == "FP32")) | length == 1'
check '.outputs | map(select(.name == "text_output" and .datatype == "BYTES")) | length == 1'
expect_http 200 GET /v2/models/$m/versions/1
check ".name == \"$m\""
expect_http 200 GET /v2/models/$m/ready
check ".name == \"$m\" and .ready == true"
expect_http 200 GET /v2/models/$m/versions/1/ready
bad 404 "model 'nope' is not served here" GET /v2/models/nope
bad 404 "model 'nope' is not served here" GET /v2/models/nope/ready
bad 404 "model '$m' has no version '2' (only 1)" GET /v2/models/$m/versions/2
bad 404 "no route GET /v2/models/$m/bogus" GET /v2/models/$m/bogus
bad 404 "no route GET /v2/nope" GET /v2/nope
bad 405 "POST is not allowed here (allowed: GET, HEAD)" POST /v2/models/$m '{}'
bad 405 "POST is not allowed here (allowed: GET, HEAD)" POST /v2/health/ready '{}'

# ---- inference -----------------------------------------------------------
# The reference: greedy `inferd generate` of 8 tokens.
[[ $(run generate -m "$model" -p "Once upon a time" -n 8 --temp 0 -t 1 --json) == 0 ]] ||
    fail "generate: $(cat "$tmp/err")"
want=$(jq -r .text "$tmp/out")
[[ -n "$want" ]] || fail "generate gave no text"

# Sampling fields as parameters.
expect_http 200 POST $infer \
    "{\"id\":\"req-42\",\"inputs\":[$text_input],\"parameters\":{\"temperature\":0,\"max_tokens\":8}}"
check ".model_name == \"$m\" and .model_version == \"1\" and .id == \"req-42\""
check '.outputs | length == 1'
check '.outputs[0].name == "text_output" and .outputs[0].datatype == "BYTES" and .outputs[0].shape == [1]'
check '.parameters.finish_reason == "length" and .parameters.completion_tokens == 8'
check '.parameters.prompt_tokens == 5'
got=$(jq -r '.outputs[0].data[0]' "$tmp/out")
[[ "$got" == "$want" ]] || fail "infer text '$got' differs from generate's '$want'"

# The same given as input tensors (as Triton's LLM models take them), also
# through the versioned path; no "id", none echoed.
for path in $infer /v2/models/$m/versions/1/infer; do
    expect_http 200 POST $path \
        "{\"inputs\":[$text_input,{\"name\":\"max_tokens\",\"datatype\":\"INT32\",\"shape\":[1],\"data\":[8]},{\"name\":\"temperature\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[0.0]}]}"
    check 'has("id") | not'
    check '.parameters.completion_tokens == 8'
    got=$(jq -r '.outputs[0].data[0]' "$tmp/out")
    [[ "$got" == "$want" ]] || fail "$path with input tensors: '$got' differs from '$want'"
done
# An input tensor overrides the parameter of the same name; data may be [[x]].
expect_http 200 POST $infer \
    "{\"inputs\":[$text_input,{\"name\":\"max_tokens\",\"datatype\":\"INT32\",\"shape\":[1,1],\"data\":[[3]]}],\"parameters\":{\"max_tokens\":8,\"temperature\":0}}"
check '.parameters.completion_tokens == 3'
# A non-string id is not echoed.
expect_http 200 POST $infer "{\"id\":5,\"inputs\":[$text_input],\"parameters\":{\"max_tokens\":1}}"
check 'has("id") | not'

# ---- bad inference requests ----------------------------------------------
bad 400 "invalid JSON at line 1" POST $infer '{"inputs":['
bad 400 "must be a JSON object" POST $infer "[$text_input]"
bad 400 "the request body is empty" POST $infer '' --data-binary ''
bad 400 "inputs: it is required" POST $infer '{"parameters":{"max_tokens":2}}'
bad 400 "inputs: expected an array of tensors" POST $infer "{\"inputs\":$text_input}"
bad 400 "input 'stop': give its data one way: data, binary_data_size or shared memory (it has 0)" POST $infer \
    "{\"inputs\":[$text_input,{\"name\":\"stop\",\"datatype\":\"BYTES\",\"shape\":[1]}]}"
bad 400 "logprobs: not supported on /infer" POST $infer \
    "{\"inputs\":[$text_input],\"parameters\":{\"logprobs\":5}}"
bad 400 "input 0: a name of 1 to 63 bytes is required" POST $infer \
    '{"inputs":[{"datatype":"BYTES","shape":[1],"data":["Once"]}]}'
bad 400 "input 'text_input': expected datatype BYTES with one element" POST $infer \
    '{"inputs":[{"name":"text_input","datatype":"INT32","shape":[1],"data":[5]}]}'
bad 400 "text_input: element 0 of BYTES data is not a string" POST $infer \
    '{"inputs":[{"name":"text_input","datatype":"BYTES","shape":[1],"data":[5]}]}'
bad 400 "input 'text_input': expected datatype BYTES with one element" POST $infer \
    '{"inputs":[{"name":"text_input","datatype":"BYTES","shape":[2],"data":["Once","Twice"]}]}'
bad 400 "input 'text_input': datatype must be one of BOOL" POST $infer \
    '{"inputs":[{"name":"text_input","shape":[1],"data":["Once"]}]}'
bad 400 "text_input: it is empty" POST $infer \
    '{"inputs":[{"name":"text_input","datatype":"BYTES","shape":[1],"data":[""]}]}'
bad 400 "inputs: no text_input (BYTES, shape [1]) or input_ids (INT32 or INT64, shape [n]) tensor" POST $infer \
    '{"inputs":[{"name":"max_tokens","datatype":"INT32","shape":[1],"data":[8]}]}'
bad 400 "inputs must be an array of 1 to 16 tensors" POST $infer '{"inputs":[]}'
bad 400 "input 'max_tokens': expected one element" POST $infer \
    "{\"inputs\":[$text_input,{\"name\":\"max_tokens\",\"datatype\":\"INT32\",\"shape\":[2],\"data\":[8,9]}]}"
bad 400 "parameters: expected an object" POST $infer "{\"inputs\":[$text_input],\"parameters\":[1]}"
# Shapes are checked against the data, and an input is given once.
bad 400 "input 'text_input': 1 data elements, the shape says 2" POST $infer \
    '{"inputs":[{"name":"text_input","datatype":"BYTES","shape":[2],"data":["Once"]}]}'
bad 400 "input 'text_input': shape must be an array of at most 8 sizes" POST $infer \
    '{"inputs":[{"name":"text_input","datatype":"BYTES","data":["Once"]}]}'
bad 400 "input 'max_tokens': shape[0] is not a size" POST $infer \
    "{\"inputs\":[$text_input,{\"name\":\"max_tokens\",\"datatype\":\"INT32\",\"shape\":[-1],\"data\":[3]}]}"
bad 400 "input 'stop': 2 data elements, the shape says 1" POST $infer \
    "{\"inputs\":[$text_input,{\"name\":\"max_tokens\",\"datatype\":\"INT32\",\"shape\":[1],\"data\":[3]},{\"name\":\"stop\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"a\",\"b\"]}]}"
bad 400 "input 'text_input' is given twice" POST $infer \
    "{\"inputs\":[$text_input,$text_input]}"
bad 400 "input 'max_tokens' is given twice" POST $infer \
    "{\"inputs\":[$text_input,{\"name\":\"max_tokens\",\"datatype\":\"INT32\",\"shape\":[1],\"data\":[3]},{\"name\":\"max_tokens\",\"datatype\":\"INT32\",\"shape\":[1],\"data\":[4]}]}"
bad 400 "parameters: expected an object" POST $infer "{\"inputs\":[$text_input],\"parameters\":\"x\"}"
bad 400 "temperature: expected a number, got string" POST $infer \
    "{\"inputs\":[$text_input],\"parameters\":{\"temperature\":\"x\"}}"
bad 400 "temperature: 9 is outside [0, 2]" POST $infer \
    "{\"inputs\":[$text_input,{\"name\":\"temperature\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[9]}]}"
bad 400 "max_tokens: -1 is outside [0, " POST $infer \
    "{\"inputs\":[$text_input],\"parameters\":{\"max_tokens\":-1}}"
bad 400 "stream: not supported on /infer" POST $infer \
    "{\"inputs\":[$text_input],\"parameters\":{\"stream\":true}}"
bad 400 "stream: expected a boolean, got string" POST $infer \
    "{\"inputs\":[$text_input],\"parameters\":{\"stream\":\"yes\"}}"
# A prompt longer than the model's context (the served default).
[[ $(run info -m "$model" --json) == 0 ]] || fail "info: $(cat "$tmp/err")"
n_ctx=$(jq '.metadata["llama.context_length"]' "$tmp/out")
long=$(printf 'Once upon a time there was a little girl. %.0s' $(seq 1 $((n_ctx / 8))))
bad 400 "tokens do not fit the context of $n_ctx (at most $((n_ctx - 1)))" POST $infer \
    "{\"inputs\":[{\"name\":\"text_input\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"$long\"]}]}"
bad 404 "model 'nope' is not served here (see /v2/repository/index)" POST /v2/models/nope/infer \
    "{\"inputs\":[$text_input]}"
bad 404 "model '$m' has no version '2' (only 1)" POST /v2/models/$m/versions/2/infer \
    "{\"inputs\":[$text_input]}"
bad 405 "GET is not allowed here (allowed: POST)" GET $infer '' -D "$tmp/headers"
grep -qi '^Allow: POST' "$tmp/headers" || fail "GET infer: no 'Allow: POST' header"

# ---- model repository ----------------------------------------------------
index_state() { # the index's state of $m
    expect_http 200 POST /v2/repository/index '{}'
    jq -r --arg m "$m" '.[] | select(.name == $m) | .state' "$tmp/out"
}
[[ $(index_state) == READY ]] || fail "index after start: $(cat "$tmp/out")"
check ".[0].name == \"$m\" and .[0].version == \"1\" and .[0].reason == \"\""
expect_http 200 POST /v2/repository/index '' --data-binary ''
check "length == 1 and .[0].state == \"READY\""

# Unload: the index shows UNAVAILABLE and the model is not ready.
expect_http 200 POST /v2/repository/models/$m/unload
check '. == {}'
[[ $(index_state) == UNAVAILABLE ]] || fail "index after unload: $(cat "$tmp/out")"
check '.[0].reason == "not loaded"'
expect_http 200 POST /v2/repository/index '{"ready":true}'
check '. == []'
expect_http 400 GET /v2/models/$m/ready
check ".name == \"$m\" and .ready == false"
expect_http 200 GET /v2/models/$m
check '.ready == false'
# Unloading an unloaded model is not an error.
expect_http 200 POST /v2/repository/models/$m/unload
# An inference loads it again on demand.
expect_http 200 POST $infer "{\"inputs\":[$text_input],\"parameters\":{\"temperature\":0,\"max_tokens\":8}}"
[[ $(jq -r '.outputs[0].data[0]' "$tmp/out") == "$want" ]] || fail "infer after unload: $(cat "$tmp/out")"
[[ $(index_state) == READY ]] || fail "index after an infer loaded the model: $(cat "$tmp/out")"
expect_http 200 GET /v2/models/$m/ready
check '.ready == true'

# Explicit load, after an unload and when loaded already.
expect_http 200 POST /v2/repository/models/$m/unload
[[ $(index_state) == UNAVAILABLE ]] || fail "index after the second unload: $(cat "$tmp/out")"
expect_http 200 POST /v2/repository/models/$m/load
check '. == {}'
[[ $(index_state) == READY ]] || fail "index after load: $(cat "$tmp/out")"
expect_http 200 GET /v2/models/$m/ready
expect_http 200 POST /v2/repository/models/$m/load '{"parameters":{}}'
[[ $(index_state) == READY ]] || fail "index after a second load: $(cat "$tmp/out")"
infers

# Bad repository requests.
bad 404 "model 'nope' is not served here" POST /v2/repository/models/nope/load
bad 404 "model 'nope' is not served here" POST /v2/repository/models/nope/unload
bad 405 "GET is not allowed here (allowed: POST)" GET /v2/repository/models/$m/load '' -D "$tmp/headers"
grep -qi '^Allow: POST' "$tmp/headers" || fail "GET load: no 'Allow: POST' header"
bad 405 "GET is not allowed here (allowed: POST)" GET /v2/repository/models/$m/unload
bad 405 "GET is not allowed here (allowed: POST)" GET /v2/repository/index
bad 404 "no route POST /v2/repository/models/$m/reload" POST /v2/repository/models/$m/reload
bad 400 "ready: expected a boolean" POST /v2/repository/index '{"ready":"yes"}'
bad 400 "invalid JSON" POST /v2/repository/models/$m/load '{"parameters":'
[[ $(index_state) == READY ]] || fail "index at the end: $(cat "$tmp/out")"

serve_stop
[[ "$serve_rc" == 0 ]] || fail "inferd serve exited $serve_rc, not 0, on SIGTERM: $(tail -5 "$tmp/serve.log")"
if grep -E 'runtime error|AddressSanitizer|LeakSanitizer' "$tmp/serve.log"; then
    fail "sanitizer report in the server log"
fi
echo "ok"
