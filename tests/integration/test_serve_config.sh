#!/usr/bin/env bash
# inferd serve configuration: --config FILE.json with the flags' names
# (flags win), several models with aliases (the first is the default), and
# precise errors for bad options and files.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

q4="$INFERD_FIXTURES/models/stories260K-ff192-q4_0.gguf"
cat >"$tmp/cfg.json" <<JSON
{"model": ["$model", "$q4"], "alias": ["story", "story-q4"], "parallel": 2,
 "queue": 8, "ctx": 96, "threads": 1, "api_key": "k1", "drain-grace": 1000}
JSON
# -np on the command line wins over the file's "parallel".
serve_start --config "$tmp/cfg.json" -np 3
serve_wait_ready
auth=(-H "Authorization: Bearer k1")
expect_http 200 GET /v1/models "" "${auth[@]}"
check '[.data[].id] == ["story", "story-q4"]'
expect_http 200 GET /v1/status "" "${auth[@]}"
check '.models[0].slots == 3 and .models[0].queue_capacity == 8 and (.models | length) == 2'
# No model named: the first. Named: that one.
expect_http 200 POST /v1/completions '{"prompt":"Once upon a time","max_tokens":4}' "${auth[@]}"
check '.model == "story"'
expect_http 200 POST /v1/completions '{"model":"story-q4","prompt":"Once upon a time","max_tokens":4}' "${auth[@]}"
check '.model == "story-q4"'
expect_http 404 POST /v1/completions '{"model":"stories260K","prompt":"x"}' "${auth[@]}"
check '.error.code == "model_not_found"'
# ctx 96 from the file: a prompt of 96 tokens does not fit.
long=$(printf 'Once upon a time %.0s' $(seq 1 30))
expect_http 400 POST /v1/completions "{\"prompt\":\"$long\"}" "${auth[@]}"
check '.error.code == "context_length_exceeded"'
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"

# --conn-timeout: an idle connection is closed by the server (1 s here; the
# 20 s bound only keeps a broken server from hanging the test).
serve_start -m "$model" -t 1 --conn-timeout 1
serve_wait_ready
exec 3<>"/dev/tcp/127.0.0.1/$port"
rc=0
timeout 20 cat <&3 >/dev/null || rc=$?
exec 3<&-
[[ "$rc" == 0 ]] || fail "an idle connection was not closed (cat exited $rc)"
still_serves
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc"

# Bad options and files: exit 2 and one line saying what is wrong.
echo '{"port": "eighty"}' >"$tmp/bad1.json"
expect_error 2 '"port" must be an integer, not a string' serve -m "$model" --config "$tmp/bad1.json"
echo '{"colour": "blue"}' >"$tmp/bad2.json"
expect_error 2 'unknown option "colour"' serve -m "$model" --config "$tmp/bad2.json"
echo '{"port": 8080,' >"$tmp/bad3.json"
expect_error 2 "config $tmp/bad3.json:" serve -m "$model" --config "$tmp/bad3.json"
expect_error 2 'No such file or directory' serve -m "$model" --config "$tmp/missing.json"
echo '["port"]' >"$tmp/bad4.json"
expect_error 2 'expected a JSON object' serve -m "$model" --config "$tmp/bad4.json"
expect_error 2 '-m FILE is required' serve --port 0
expect_error 2 "model id 'stories260K' is given twice" serve --port 0 -m "$model" -m "$model"
expect_error 2 '2 aliases for 1 models' serve --port 0 -m "$model" --alias a --alias b
expect_error 2 "chat-template: 'jinja' is not one of" serve --port 0 -m "$model" --chat-template jinja
expect_error 2 '--parallel 0 out of range' serve --port 0 -m "$model" --parallel 0
expect_error 2 "host 'no such host'" serve --port 0 -m "$model" --host 'no such host'
expect_error 1 "model 'nope'" serve --port 0 -m "$tmp/nope.gguf"
echo "ok"
