#!/usr/bin/env bash
# Bad input to `inferd serve`'s OpenAI endpoints, routing, limits and
# authentication: every malformed request gets a precise error (status,
# {"error":{"message","type","param","code"}}, a distinctive part of the
# message, param) and the server still serves a completion afterwards.
# Needs $INFERD and $INFERD_FIXTURES.
set -euo pipefail

source "$(dirname "$0")/lib.sh"
unset INFERD_API_KEY # the server would take it as --api-key

completions=/v1/completions
chat=/v1/chat/completions
ok_prompt='"prompt":"Once upon a time"'
ok_messages='"messages":[{"role":"user","content":"Once upon a time"}]'

# The OpenAI error "type" that goes with a status.
oai_type() {
    case $1 in
    401) echo authentication_error ;;
    404) echo not_found_error ;;
    *) echo invalid_request_error ;;
    esac
}

# check_oai_error CODE PARAM MESSAGE: $tmp/out is exactly the OpenAI error
# shape with that code, param ("-": null), type for $status and a message
# holding MESSAGE.
check_oai_error() {
    local code=$1 param=$2 msg=$3 type
    type=$(oai_type "$status")
    jq -e --arg code "$code" --arg param "$param" --arg msg "$msg" --arg type "$type" '
        (keys == ["error"])
        and (.error | keys == ["code", "message", "param", "type"])
        and .error.code == $code
        and .error.type == $type
        and (.error.message | type == "string" and contains($msg))
        and (if $param == "-" then .error.param == null else .error.param == $param end)' \
        "$tmp/out" >/dev/null ||
        fail "expected $status $code param=$param '$msg', got: $(head -c 400 "$tmp/out")"
}

# bad STATUS CODE PARAM MESSAGE METHOD PATH [BODY] [CURL ARGS...]: the
# request gets that error, then a good completion still works.
bad() {
    status=$1
    local code=$2 param=$3 msg=$4
    shift 4
    expect_http "$status" "$@"
    check_oai_error "$code" "$param" "$msg"
    still_serves
}

# bad_completion / bad_chat STATUS CODE PARAM MESSAGE FIELDS: a body with a
# good prompt (messages) and FIELDS added.
bad_completion() { bad "$1" "$2" "$3" "$4" POST $completions "{$ok_prompt,$5}"; }
bad_chat() { bad "$1" "$2" "$3" "$4" POST $chat "{$ok_messages,$5}"; }
bad_both() {
    bad_completion "$@"
    bad_chat "$@"
}

# ---- server 1: small context, small body limit, no key -------------------
serve_start -m "$model" -t 1 -np 2 -c 64 --max-body 4096
serve_wait_ready
still_serves

# ---- the body ------------------------------------------------------------
for path in $completions $chat; do
    bad 400 invalid_json - "invalid JSON at line 1" POST $path '{"prompt": "x",'
    bad 400 invalid_json - "invalid JSON at line 1" POST $path '{"prompt" "x"}'
    bad 400 invalid_json - "must be a JSON object" POST $path '["Once upon a time"]'
    bad 400 invalid_json - "invalid JSON" POST $path '42'
    bad 400 invalid_json - "the request body is empty" POST $path '' --data-binary ''
    bad 400 invalid_json - "invalid JSON" POST $path '{"prompt":"a","prompt":"b"}'
    # The parse budget: refused by a scan before jansson allocates a node.
    bad 400 invalid_json - "the JSON nests deeper than 64 arrays and objects" POST $path \
        "{\"prompt\":$(printf '[%.0s' {1..65})1$(printf ']%.0s' {1..65})}"
done

# ---- model ---------------------------------------------------------------
bad_both 404 model_not_found model "model 'nope' is not served here" '"model":"nope"'
bad_both 400 invalid_type model "model: expected a string" '"model":7'
bad_both 400 invalid_type model "model: expected a string" '"model":["stories260K"]'
# The served id and null (the default) are fine.
expect_http 200 POST $completions "{$ok_prompt,\"model\":\"stories260K\",\"max_tokens\":1}"
expect_http 200 POST $chat "{$ok_messages,\"model\":null,\"max_tokens\":1}"
check '.choices[0].message.role == "assistant"'

# ---- sampling and generation fields (both endpoints) ----------------------
bad_both 400 invalid_value temperature "temperature: 5 is outside [0, 2]" '"temperature":5'
bad_both 400 invalid_value temperature "temperature: -1 is outside [0, 2]" '"temperature":-1'
bad_both 400 invalid_type temperature "temperature: expected a number, got string" '"temperature":"hot"'
bad_both 400 invalid_value top_p "top_p: 1.5 is outside [0, 1]" '"top_p":1.5'
bad_both 400 invalid_value max_tokens "max_tokens: -1 is outside [0, " '"max_tokens":-1'
bad_both 400 invalid_type max_tokens "max_tokens: expected an integer, got number" '"max_tokens":1.5'
bad_both 400 invalid_type max_tokens "max_tokens: expected an integer, got string" '"max_tokens":"10"'
bad_chat 400 invalid_value max_completion_tokens "max_completion_tokens: -1 is outside [0, " \
    '"max_completion_tokens":-1'
bad_both 400 invalid_value n "n: only 1 choice per request is supported" '"n":2'
bad_completion 400 invalid_value best_of "best_of: only 1 is supported" '"best_of":3'
stop17=$(jq -nc '[range(17) | "s\(.)"]')
bad_both 400 invalid_value stop "stop: 17 strings, at most 16" "\"stop\":$stop17"
bad_both 400 invalid_type stop "stop[0]: expected a string, got integer" '"stop":[1]'
bad_both 400 invalid_type stop "stop: expected a string or an array of strings, got integer" '"stop":1'
bad_both 400 invalid_type seed "seed: expected an integer, got string" '"seed":"x"'
bad_completion 400 invalid_value logprobs "logprobs: 50 is outside [0, 20]" '"logprobs":50'
bad_chat 400 invalid_type logprobs "logprobs: expected a boolean, got integer" '"logprobs":5'
bad_chat 400 invalid_value top_logprobs 'top_logprobs: needs "logprobs": true' '"top_logprobs":2'
bad_chat 400 invalid_value top_logprobs "top_logprobs: 21 is outside [0, 20]" \
    '"logprobs":true,"top_logprobs":21'
bad_both 400 invalid_type stream "stream: expected a boolean, got string" '"stream":"yes"'
bad_both 400 invalid_value stream_options 'stream_options: only allowed with "stream": true' \
    '"stream_options":{"include_usage":true}'
bad_both 400 invalid_type stream_options "stream_options: expected an object, got boolean" \
    '"stream":true,"stream_options":true'
bad_both 400 invalid_value priority "priority: 'urgent' is not high, normal or low" '"priority":"urgent"'
bad_both 400 unsupported logit_bias "logit_bias is not supported" '"logit_bias":{"1":5}'
bad_completion 400 unsupported echo "echo is not supported" '"echo":true'
bad_completion 400 unsupported suffix "suffix is not supported" '"suffix":"x"'
bad_chat 400 unsupported response_format 'response_format: only {"type": "text"} is supported' \
    '"response_format":{"type":"json_object"}'
bad_chat 400 unsupported tools "tools are not supported" \
    '"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]'
# The same fields asking for nothing we lack are accepted.
expect_http 200 POST $completions \
    "{$ok_prompt,\"max_tokens\":1,\"n\":1,\"best_of\":1,\"echo\":false,\"suffix\":\"\",\"logit_bias\":{}}"
expect_http 200 POST $chat \
    "{$ok_messages,\"max_tokens\":1,\"n\":1,\"tools\":[],\"response_format\":{\"type\":\"text\"}}"

# ---- /v1/completions: the prompt -----------------------------------------
bad 400 missing_required_parameter prompt "prompt: it is required" POST $completions '{}'
bad 400 missing_required_parameter prompt "prompt: it is required" POST $completions '{"prompt":null}'
bad 400 invalid_type prompt "prompt: expected a string, an array of token ids" \
    POST $completions '{"prompt":42}'
bad 400 invalid_type prompt "prompt: expected a string, an array of token ids" \
    POST $completions '{"prompt":{"text":"Once"}}'
bad 400 invalid_type prompt "prompt[0]: expected a token id" POST $completions '{"prompt":[true,false]}'
bad 400 invalid_type prompt "prompt[1]: expected a token id" POST $completions '{"prompt":[1,-3]}'
bad 400 invalid_value prompt "prompt: it is empty" POST $completions '{"prompt":""}'
bad 400 invalid_value prompt "prompt: it is empty" POST $completions '{"prompt":[]}'
bad 400 invalid_value prompt "prompt: only one prompt per request is supported (got 2)" \
    POST $completions '{"prompt":["Once upon a time","There was"]}'
bad 400 invalid_value prompt "prompt: only one prompt per request is supported (got 2)" \
    POST $completions '{"prompt":[[1,403],[1,407]]}'
# stories260K's vocabulary has 512 tokens.
bad 400 invalid_value prompt "prompt: token 1 has id 512, outside the vocabulary [0, 512)" \
    POST $completions '{"prompt":[1,512,403]}'
bad 400 invalid_value prompt "outside the vocabulary [0, 512)" POST $completions '{"prompt":[[100000]]}'
# One prompt, as a one-element array of a string or of ids, is fine.
expect_http 200 POST $completions '{"prompt":["Once upon a time"],"max_tokens":1}'
expect_http 200 POST $completions '{"prompt":[[1,403,407,261,378]],"max_tokens":1}'
check '.usage.prompt_tokens == 5'

# More tokens than the context of 64 (-c 64).
long=$(printf 'Once upon a time there was a little girl. %.0s' {1..20})
bad 400 context_length_exceeded prompt "tokens do not fit the context of 64 (at most 63)" \
    POST $completions "{\"prompt\":\"$long\"}"
ids=$(jq -nc '[1] + [range(64) | 403]')
bad 400 context_length_exceeded prompt "prompt: 65 tokens do not fit the context of 64" \
    POST $completions "{\"prompt\":$ids}"
bad 400 context_length_exceeded messages "tokens do not fit the context of 64 (at most 63)" \
    POST $chat "{\"messages\":[{\"role\":\"user\",\"content\":\"$long\"}]}"

# ---- /v1/chat/completions: the messages ----------------------------------
bad 400 missing_required_parameter messages "messages: it is required" POST $chat '{}'
bad 400 invalid_type messages "messages: expected an array" POST $chat '{"messages":"hi"}'
bad 400 invalid_type messages "messages: expected an array" POST $chat \
    '{"messages":{"role":"user","content":"hi"}}'
bad 400 invalid_value messages "messages: it is empty" POST $chat '{"messages":[]}'
bad 400 invalid_type messages "messages[0]: expected an object" POST $chat '{"messages":["hi"]}'
bad 400 invalid_type messages "messages[1]: expected an object" POST $chat \
    '{"messages":[{"role":"user","content":"hi"},7]}'
bad 400 invalid_type messages "messages[0].role: expected a string" POST $chat \
    '{"messages":[{"content":"hi"}]}'
bad 400 invalid_type messages "messages[0].role: expected a string" POST $chat \
    '{"messages":[{"role":1,"content":"hi"}]}'
bad 400 invalid_value messages "messages[0].role: unknown role 'tool' (expected system, user or assistant)" \
    POST $chat '{"messages":[{"role":"tool","content":"42"}]}'
bad 400 invalid_type messages "messages[0].content: expected a string or an array of text parts" \
    POST $chat '{"messages":[{"role":"user","content":5}]}'
bad 400 invalid_type messages "messages[0].content: expected a string or an array of text parts" \
    POST $chat '{"messages":[{"role":"user","content":{"type":"text","text":"hi"}}]}'
bad 400 unsupported messages 'messages[0].content[1]: only parts of type "text" are supported' \
    POST $chat '{"messages":[{"role":"user","content":[{"type":"text","text":"Look:"},{"type":"image_url","image_url":{"url":"http://x/y.png"}}]}]}'
bad 400 invalid_type messages "messages[0].content[0].text: expected a string" \
    POST $chat '{"messages":[{"role":"user","content":[{"type":"text","text":3}]}]}'
# Text parts are joined.
expect_http 200 POST $chat \
    '{"max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"Once upon"},{"type":"text","text":" a time"}]}]}'
check '.choices[0].message.content | type == "string"'

# ---- routing -------------------------------------------------------------
bad 404 not_found - "no route GET /nope" GET /nope
bad 404 not_found - "no route POST /v1/complete" POST /v1/complete "{$ok_prompt}"
bad 404 model_not_found model "model 'nope' is not served here" GET /v1/models/nope
for path in $completions $chat; do
    bad 405 method_not_allowed - "GET is not allowed here (allowed: POST)" GET $path '' -D "$tmp/headers"
    grep -qi '^Allow: POST' "$tmp/headers" || fail "GET $path: no 'Allow: POST' header: $(cat "$tmp/headers")"
    bad 405 method_not_allowed - "PUT is not allowed here (allowed: POST)" PUT $path "{$ok_prompt}"
    bad 405 method_not_allowed - "DELETE is not allowed here (allowed: POST)" DELETE $path
done
bad 405 method_not_allowed - "POST is not allowed here (allowed: GET, HEAD)" POST /health '{}' -D "$tmp/headers"
grep -qi '^Allow: GET, HEAD' "$tmp/headers" || fail "POST /health: no 'Allow: GET, HEAD' header"
bad 405 method_not_allowed - "DELETE is not allowed here (allowed: GET, HEAD)" DELETE /v1/models

# HEAD /health: 200, headers, no body.
code=$(curl -s -I -o "$tmp/out" -w '%{http_code}' "$url/health")
[[ "$code" == 200 ]] || fail "HEAD /health: status $code"
grep -qi '^Content-Type: application/json' "$tmp/out" || fail "HEAD /health headers: $(cat "$tmp/out")"
code=$(curl -s -I -o /dev/null -w '%{size_download}' "$url/health")
[[ "$code" == 0 ]] || fail "HEAD /health sent a body of $code bytes"
expect_http 200 GET /health
check '.status == "ok"'

# ---- body over --max-body 4096 -------------------------------------------
# A JSON object of 10000 bytes: 413 whether the size is known up front
# (Content-Length) or only while reading (chunked).
jq -nc --arg p "$(head -c 9980 /dev/zero | tr '\0' 'a')" '{prompt: $p, max_tokens: 1}' >"$tmp/big.json"
[[ $(wc -c <"$tmp/big.json") -ge 10000 ]] || fail "big.json is too small"
bad 413 request_too_large - "the request body of $(wc -c <"$tmp/big.json") bytes exceeds the limit of 4096" \
    POST $completions "@$tmp/big.json" -D "$tmp/headers"
grep -qi '^Connection: close' "$tmp/headers" || fail "413: the connection is not closed"
bad 413 request_too_large - "the request body exceeds the limit of 4096 bytes" \
    POST $completions "@$tmp/big.json" -H 'Transfer-Encoding: chunked'
bad 413 request_too_large - "exceeds the limit of 4096" POST $chat "@$tmp/big.json" \
    -H 'Transfer-Encoding: chunked'
# Just under the limit is read and answered.
jq -nc --arg p "$(printf 'Once %.0s' {1..10})" '{prompt: $p, max_tokens: 1}' >"$tmp/ok.json"
expect_http 200 POST $completions "@$tmp/ok.json" -H 'Transfer-Encoding: chunked'

# ---- request smuggling (RFC 9112 6.3): an ambiguous length is a 400 and
# the connection is closed, so a request hidden in the body never runs ----
# raw_send REQUEST: send these bytes (Python: curl will not send them),
# print every response read until the server closes (or 10 s). '|' is a
# line end (CRLF), and \r, \n, \0 and \xHH are CR, LF, NUL and byte HH.
raw_send() {
    /usr/bin/python3 - "$port" "$1" <<'PY'
import re, socket, sys, time
port, raw = int(sys.argv[1]), sys.argv[2]
raw = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), raw)
req = (raw.replace("|", "\r\n").replace("\\r", "\r").replace("\\n", "\n")
       .replace("\\0", "\0").encode("latin-1"))
s = socket.create_connection(("127.0.0.1", port), timeout=10)
t0 = time.time()
s.sendall(req)
out = b""
closed = False
while True:
    try:
        d = s.recv(65536)
    except socket.timeout:
        break
    if not d:
        closed = True
        break
    out += d
text = out.decode("utf-8", "replace")
n_resp = len(re.findall(r"(?m)^HTTP/1\.1 \d{3} ", text))
print("responses=%d closed=%d secs=%.1f" % (n_resp, closed, time.time() - t0))
print(text)
PY
}
# raw_http HEAD_LINES BODY: a POST to /v1/completions with these header
# lines and this body (escaped as for raw_send).
raw_http() {
    raw_send "POST /v1/completions HTTP/1.1|Host: x|Content-Type: application/json|$1||$2"
}
smuggled='GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n'
good_body='{"prompt":"Once upon a time","max_tokens":1}'
# smuggle LABEL HEAD BODY MESSAGE: one 400 naming MESSAGE, then closed.
smuggle() {
    raw_http "$2" "$3" >"$tmp/raw"
    head -1 "$tmp/raw" | grep -q '^responses=1 closed=1' ||
        fail "$1: expected one response then a closed connection: $(head -c 400 "$tmp/raw")"
    grep -q '^HTTP/1.1 400' "$tmp/raw" || fail "$1: expected 400: $(head -c 400 "$tmp/raw")"
    grep -qF "$4" "$tmp/raw" || fail "$1: the error does not say '$4': $(cat "$tmp/raw")"
    still_serves
}
n=${#good_body}
smuggle "two different Content-Lengths" "Content-Length: $n|Content-Length: $((n + ${#smuggled}))" \
    "$good_body$smuggled" "Content-Length given twice with different values"
smuggle "Content-Length with Transfer-Encoding" "Content-Length: 5|Transfer-Encoding: chunked" \
    "0\r\n\r\n$smuggled" "Content-Length together with Transfer-Encoding"
smuggle "an unknown transfer coding" "Transfer-Encoding: gzip, chunked" "$good_body" \
    "a transfer coding other than chunked"
# A NUL byte in a header name or in the body: 400 for that request only.
raw_http "X-Bad\0Name: 1|Content-Length: $n|Connection: close" "$good_body" >"$tmp/raw"
grep -q '^HTTP/1.1 400' "$tmp/raw" || fail "a NUL in a header name: $(head -c 400 "$tmp/raw")"
still_serves
nul_body='{"prompt":"Once\0upon","max_tokens":1}'
raw_http "Content-Length: $((${#nul_body} - 1))|Connection: close" "$nul_body" >"$tmp/raw"
grep -q '^HTTP/1.1 400' "$tmp/raw" && grep -q '"code":"invalid_json"' "$tmp/raw" ||
    fail "a NUL in the body: $(head -c 400 "$tmp/raw")"
still_serves
# The same Content-Length twice is not ambiguous: answered.
raw_http "Content-Length: $n|Content-Length: $n|Connection: close" "$good_body" >"$tmp/raw"
grep -q '^HTTP/1.1 200' "$tmp/raw" || fail "a repeated equal Content-Length: $(head -c 400 "$tmp/raw")"

# ---- the request head (RFC 9112): what two parties could read differently,
# or a byte the server would not see, is refused with the status RFC 9112
# gives, a message naming it, and the connection closed ----
# refused LABEL STATUS MESSAGE REQUEST: one response of STATUS whose error
# message says MESSAGE, then the connection closed; then a good request.
refused() {
    raw_send "$4" >"$tmp/raw"
    head -1 "$tmp/raw" | grep -q '^responses=1 closed=1' ||
        fail "$1: expected one response then a closed connection: $(head -c 400 "$tmp/raw")"
    grep -q "^HTTP/1.1 $2 " "$tmp/raw" || fail "$1: expected $2: $(head -c 400 "$tmp/raw")"
    sed -n '/^{/p' "$tmp/raw" | jq -e --arg m "$3" '.error.message | contains($m)' >/dev/null ||
        fail "$1: the error does not say '$3': $(cat "$tmp/raw")"
    still_serves
}
post="POST /v1/completions HTTP/1.1|Host: x|Content-Length: $n"
refused "a NUL in a header value" 400 "a NUL byte in a header value" \
    "$post|Authorization: Bearer key\0junk||$good_body"
refused "a NUL at a header value's end" 400 "a NUL byte in a header value" \
    "$post|X-Trace: abc\0||$good_body"
refused "a NUL in the request target" 400 "a NUL byte in the request line" \
    "POST /v1/comp\0letions HTTP/1.1|Host: x|Content-Length: $n||$good_body"
refused "a NUL escaped in the path" 400 "a NUL byte (%00) in the request path" \
    "GET /v1/models%00x HTTP/1.1|Host: x||"
refused "a bare CR in a header value" 400 "a CR not followed by LF" \
    "$post|X-Trace: a\rb||$good_body"
refused "a control character in a header value" 400 "a control character in a header value" \
    "$post|X-Trace: a\x01b||$good_body"
refused "a folded header line" 400 "obs-fold" "$post|X-Trace: a| b||$good_body"
refused "whitespace before a colon" 400 "whitespace between a header name and its colon" \
    "$post|Content-Type : application/json||$good_body"
refused "a header line without a colon" 400 "a header line without a colon" \
    "$post|X-Trace||$good_body"
refused "HTTP/1.1 without Host" 400 "an HTTP/1.1 request without a Host header" \
    "GET /v1/models HTTP/1.1||"
refused "two Host headers" 400 "more than one Host header" "GET /v1/models HTTP/1.1|Host: a|Host: b||"
refused "a Content-Length that is not a number" 400 "a Content-Length that is not a number" \
    "POST /v1/completions HTTP/1.1|Host: x|Content-Length: 4x||$good_body"
refused "Transfer-Encoding on HTTP/1.0" 400 "Transfer-Encoding in an HTTP/1.0 request" \
    "POST /v1/completions HTTP/1.0|Transfer-Encoding: chunked||0||"
refused "a malformed request line" 400 "a malformed request" "GET  /v1/models HTTP/1.1|Host: x||"
refused "a malformed chunk size" 400 "a chunk size that is not a hexadecimal number" \
    "POST /v1/completions HTTP/1.1|Host: x|Transfer-Encoding: chunked||zz|$good_body|0||"
refused "HTTP/2.0 on HTTP/1 framing" 505 "only HTTP/1.1 and HTTP/1.0 are served" \
    "GET /v1/models HTTP/2.0|Host: x||"
refused "an unknown expectation" 417 "only 'Expect: 100-continue' is understood" \
    "$post|Expect: magic||$good_body"
big=$(printf 'a%.0s' {1..33000})
refused "a head over 32 KiB" 431 "the request head is larger than the limit" \
    "GET /v1/models HTTP/1.1|Host: x|X-Big: $big||"
# A KServe route's error has KServe's face.
raw_send "GET /v2/models/x%00 HTTP/1.1|Host: x||" >"$tmp/raw"
sed -n '/^{/p' "$tmp/raw" | jq -e '.error | type == "string" and contains("%00")' >/dev/null ||
    fail "a malformed KServe request: $(cat "$tmp/raw")"

# ---- what the head allows: each answered, the connection kept ----
# Two requests in one write (pipelined): two answers, in order.
raw_send "GET /health HTTP/1.1|Host: x||GET /v1/models HTTP/1.1|Host: x|Connection: close||" >"$tmp/raw"
head -1 "$tmp/raw" | grep -q '^responses=2 closed=1' || fail "pipelined: $(head -c 600 "$tmp/raw")"
grep -q '"status":"ok"' "$tmp/raw" && grep -q '"object":"list"' "$tmp/raw" ||
    fail "pipelined: $(cat "$tmp/raw")"
[[ $(grep -n '"status":"ok"' "$tmp/raw" | cut -d: -f1) -lt $(grep -n '"object":"list"' "$tmp/raw" | cut -d: -f1) ]] ||
    fail "pipelined answers out of order: $(cat "$tmp/raw")"
# Empty lines before a request line are skipped (RFC 9112 2.2); bare LF
# line ends are read as CRLF.
raw_send "||GET /health HTTP/1.1\nHost: x\nConnection: close\n\n" >"$tmp/raw"
grep -q '^HTTP/1.1 200 ' "$tmp/raw" || fail "leading empty lines, bare LF: $(head -c 400 "$tmp/raw")"
# A chunked body with an extension and a trailer field.
len_hex=$(printf '%x' $n)
raw_send "POST /v1/completions HTTP/1.1|Host: x|Transfer-Encoding: chunked|Connection: close||$len_hex;ext=1|$good_body|0|X-Trailer: t||" >"$tmp/raw"
grep -q '^HTTP/1.1 200 ' "$tmp/raw" && grep -q '"text_completion"' "$tmp/raw" ||
    fail "a chunked body: $(head -c 400 "$tmp/raw")"
# HTTP/1.0: answered, then closed unless it asks for keep-alive.
raw_send "GET /health HTTP/1.0||" >"$tmp/raw"
head -1 "$tmp/raw" | grep -q '^responses=1 closed=1' && grep -q '"status":"ok"' "$tmp/raw" ||
    fail "HTTP/1.0: $(head -c 400 "$tmp/raw")"
raw_send "GET /health HTTP/1.0|Connection: keep-alive||GET /health HTTP/1.0||" >"$tmp/raw"
head -1 "$tmp/raw" | grep -q '^responses=2 closed=1' && grep -q '^Connection: keep-alive' "$tmp/raw" ||
    fail "HTTP/1.0 keep-alive: $(head -c 600 "$tmp/raw")"
# An HTTP/1.0 stream is not chunked: its end is the close.
sbody='{"prompt":"Once upon a time","max_tokens":2,"stream":true}'
raw_send "POST /v1/completions HTTP/1.0|Content-Length: ${#sbody}||$sbody" >"$tmp/raw"
head -1 "$tmp/raw" | grep -q '^responses=1 closed=1' && grep -q '^data: \[DONE\]' "$tmp/raw" &&
    ! grep -qi '^Transfer-Encoding' "$tmp/raw" || fail "an HTTP/1.0 stream: $(head -c 600 "$tmp/raw")"
# Expect: 100-continue gets its interim answer, then the final one.
raw_send "$post|Expect: 100-continue|Connection: close||$good_body" >"$tmp/raw"
grep -q '^HTTP/1.1 100 Continue' "$tmp/raw" && grep -q '^HTTP/1.1 200 OK' "$tmp/raw" ||
    fail "Expect: 100-continue: $(head -c 600 "$tmp/raw")"
expect_http 200 POST $completions '{"prompt":"Once upon a time","max_tokens":2}' -H 'Expect: 100-continue'
# HEAD: the headers of GET, no body.
curl -sS -I "http://127.0.0.1:$port/health" >"$tmp/head.txt" || fail "HEAD /health failed"
grep -q '^HTTP/1.1 200' "$tmp/head.txt" && grep -qi '^Content-Length: 16' "$tmp/head.txt" ||
    fail "HEAD /health: $(cat "$tmp/head.txt")"
still_serves

serve_stop
[[ "$serve_rc" == 0 ]] || fail "inferd serve exited $serve_rc, not 0, on SIGTERM: $(tail -5 "$tmp/serve.log")"
if grep -E 'runtime error|AddressSanitizer|LeakSanitizer' "$tmp/serve.log"; then
    fail "sanitizer report in the server log"
fi

# ---- server 2: --api-key -------------------------------------------------
# An empty key is a usage error, not "no authentication".
expect_error 2 '--api-key: the API key is empty' serve -m "$model" --api-key ""
INFERD_API_KEY="" expect_error 2 'INFERD_API_KEY: the API key is empty' serve -m "$model"
key=s3cret-key
serve_start -m "$model" -t 1 -np 2 --api-key "$key"
serve_wait_ready
auth=(-H "Authorization: Bearer $key")
still_serves_key() {
    expect_http 200 POST $completions '{"prompt":"Once upon a time","max_tokens":2}' "${auth[@]}"
    check '.choices[0].text | type == "string"'
}
bad_key() { # bad_key MESSAGE METHOD PATH [BODY] [CURL ARGS...]
    status=401
    local msg=$1
    shift
    expect_http 401 "$@"
    check_oai_error invalid_api_key - "$msg"
    still_serves_key
}
bad_key "missing or wrong API key" POST $completions "{$ok_prompt}"
bad_key "missing or wrong API key" POST $chat "{$ok_messages}"
bad_key "missing or wrong API key" POST $completions "{$ok_prompt}" -H "Authorization: Bearer wrong"
bad_key "missing or wrong API key" POST $completions "{$ok_prompt}" -H "Authorization: Bearer ${key}x"
bad_key "missing or wrong API key" POST $completions "{$ok_prompt}" -H "Authorization: Bearer ${key:0:5}"
bad_key "missing or wrong API key" POST $completions "{$ok_prompt}" -H "Authorization: $key"
bad_key "missing or wrong API key" POST $completions "{$ok_prompt}" -H "Authorization: Basic $key"
bad_key "missing or wrong API key" GET /v1/models
bad_key "missing or wrong API key" GET /metrics
bad_key "missing or wrong API key" GET /nope
# The challenge header RFC 7235 asks of a 401.
curl -s -o /dev/null -D "$tmp/headers" "$url/v1/models"
grep -qi '^WWW-Authenticate: Bearer' "$tmp/headers" || fail "401 without WWW-Authenticate: $(cat "$tmp/headers")"
# On a KServe path the error has KServe's shape.
expect_http 401 POST /v2/models/stories260K/infer \
    '{"inputs":[{"name":"text_input","datatype":"BYTES","shape":[1],"data":["Once"]}]}'
jq -e 'keys == ["error"] and (.error | type == "string" and contains("missing or wrong API key"))' \
    "$tmp/out" >/dev/null || fail "KServe 401 shape: $(cat "$tmp/out")"
# The right key works; health probes need none.
still_serves_key
expect_http 200 POST $chat "{$ok_messages,\"max_tokens\":2}" "${auth[@]}"
expect_http 200 GET /v1/models '' "${auth[@]}"
check '.data[0].id == "stories260K"'
expect_http 200 GET /health
check '.status == "ok"'
expect_http 200 GET /v2/health/live
check '.live == true'
expect_http 200 GET /v2/health/ready
check '.ready == true'
code=$(curl -s -I -o /dev/null -w '%{http_code}' "$url/health")
[[ "$code" == 200 ]] || fail "HEAD /health with a key set: status $code"
still_serves_key

serve_stop
[[ "$serve_rc" == 0 ]] || fail "inferd serve --api-key exited $serve_rc, not 0, on SIGTERM: $(tail -5 "$tmp/serve.log")"
if grep -E 'runtime error|AddressSanitizer|LeakSanitizer' "$tmp/serve.log"; then
    fail "sanitizer report in the server log"
fi
echo "ok"
