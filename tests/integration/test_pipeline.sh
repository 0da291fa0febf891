#!/usr/bin/env bash
# `inferd pipeline` (docs/pipeline.md) with built-in nodes in their own
# processes: tokenize -> identity (fan-out) -> llm and detokenize, whose
# llm gives `inferd generate`'s text for the same seed and prompt, over two
# sessions; every malformed manifest refused with its precise error; and
# kill -9 of a node while the pipeline runs: the run fails naming the node
# and the signal, every node process is gone, nothing is left in /dev/shm.
# The C API's own checks (sizes, sessions, backpressure, failures) are in
# tests/pipeline/pipeline_check.c.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

m="$tmp/story.json"
write_story() { # write_story EXTRA_LLM_OPTIONS
    cat >"$m" <<JSON
{
  "name": "story",
  "channels": {"prompt": {"slot_bytes": 65536}, "ids": {}, "ids_llm": {}, "ids_text": {},
               "text": {}, "pieces": {"slots": 16}},
  "inputs": ["prompt"],
  "outputs": ["pieces", "text"],
  "nodes": [
    {"name": "tok", "kind": "tokenize", "inputs": ["prompt"], "outputs": ["ids"],
     "options": {"model": "$model"}},
    {"name": "fan", "kind": "identity", "inputs": ["ids"], "outputs": ["ids_llm", "ids_text"]},
    {"name": "detok", "kind": "detokenize", "inputs": ["ids_text"], "outputs": ["text"],
     "options": {"model": "$model"}},
    {"name": "llm", "kind": "llm", "inputs": ["ids_llm"], "outputs": ["pieces"],
     "options": {"model": "$model", "max_tokens": 24, "seed": 42, "threads": 1$1}}
  ]
}
JSON
}
write_story ""

# ---- the llm node gives inferd generate's tokens ----
want1=$("$INFERD" generate -m "$model" -p "Once upon a time" -n 24 --seed 42 -t 1 --json | jq -r .text)
want2=$("$INFERD" generate -m "$model" -p "The cat sat" -n 24 --seed 42 -t 1 --json | jq -r .text)
"$INFERD" pipeline run "$m" --input "Once upon a time" --input "The cat sat" --json \
    >"$tmp/out" 2>"$tmp/err" || fail "pipeline run: $(cat "$tmp/err")"
got1=$(jq -rj 'select(.session == 1 and .text) | .text' "$tmp/out")
got2=$(jq -rj 'select(.session == 2 and .text) | .text' "$tmp/out")
[[ "$got1" == "$want1" ]] || fail "session 1: '$got1', inferd generate '$want1'"
[[ "$got2" == "$want2" ]] || fail "session 2: '$got2', inferd generate '$want2'"
[[ $(jq -s '[.[] | select(.end)] | map(.session)' "$tmp/out" | jq -c .) == "[1,2]" ]] ||
    fail "each session ends once, in order: $(cat "$tmp/out")"
# The other output: the prompt back through tokenize and detokenize, six
# times; the pieces nobody prints are drained (else the llm node would fill
# its output, then hold back the fan-out feeding detokenize).
inputs=()
for i in 1 2 3 4 5 6; do inputs+=(--input "Once upon a time $i"); done
"$INFERD" pipeline run "$m" --output text "${inputs[@]}" >"$tmp/text" 2>"$tmp/err" ||
    fail "pipeline run --output text: $(cat "$tmp/err")"
[[ "$(cat "$tmp/text")" == "$(printf 'Once upon a time %s\n' 1 2 3 4 5 6)" ]] ||
    fail "detokenize(tokenize): '$(cat "$tmp/text")'"
echo "llm node: inferd generate's text over two sessions; tokenize/detokenize round trip"

# ---- malformed manifests: each refused with its exact error ----
bad() { # bad SUBSTRING JSON
    printf '%s' "$2" >"$tmp/bad.json"
    expect_error 1 "$1" pipeline check "$tmp/bad.json"
    expect_error 1 "$1" pipeline run "$tmp/bad.json" --input x
}
ok_nodes='"nodes": [{"name": "a", "kind": "identity", "inputs": ["x"], "outputs": ["y"]}]'
bad "manifest: not JSON" '{"channels": '
bad "manifest: expected a JSON object" '[1]'
bad "manifest: manifest.nodez: unknown field" '{"channels": {"x": {}}, "nodez": []}'
bad "manifest: channels: expected an object of channels, at least one" '{"channels": {}, "nodes": []}'
bad "manifest: channels.x.policy: expected \"block\" or \"drop_oldest\"" \
    '{"channels": {"x": {"policy": "lossy"}}, "nodes": []}'
bad "manifest: channels.x.slot_bytes: expected bytes, 65" '{"channels": {"x": {"slot_bytes": 10}}, "nodes": []}'
bad "manifest: nodes[0].kind: unknown kind 'whisper'" \
    '{"channels": {"x": {}, "y": {}}, "inputs": ["x"], "outputs": ["y"],
      "nodes": [{"name": "a", "kind": "whisper", "inputs": ["x"], "outputs": ["y"]}]}'
bad "manifest: nodes[0].inputs[0]: no channel 'z' is declared in channels" \
    '{"channels": {"x": {}, "y": {}}, "inputs": ["x"], "outputs": ["y"],
      "nodes": [{"name": "a", "kind": "identity", "inputs": ["z"], "outputs": ["y"]}]}'
bad "manifest: channels.y: nobody publishes into it" \
    '{"channels": {"x": {}, "y": {}, "x2": {}}, "inputs": ["x"], "outputs": ["y"],
      "nodes": [{"name": "a", "kind": "identity", "inputs": ["x"], "outputs": ["x2"]}]}'
bad "manifest: channels.w: nobody receives from it" \
    '{"channels": {"x": {}, "y": {}, "w": {}}, "inputs": ["x"], "outputs": ["y"],
      "nodes": [{"name": "a", "kind": "identity", "inputs": ["x"], "outputs": ["y", "w"]}]}'
bad "manifest: nodes[1].outputs: channel 'y' has a publisher already (node 'a')" \
    '{"channels": {"x": {}, "y": {}}, "inputs": ["x"], "outputs": ["y"],
      "nodes": [{"name": "a", "kind": "identity", "inputs": ["x"], "outputs": ["y"]},
                {"name": "b", "kind": "identity", "inputs": ["x"], "outputs": ["y"]}]}'
bad "manifest: nodes: a cycle: a -> b -> a" \
    '{"channels": {"x": {}, "y": {}, "p": {}, "q": {}}, "inputs": ["x"], "outputs": ["y"],
      "nodes": [{"name": "a", "kind": "python", "module": "m", "class": "C", "inputs": ["x", "q"], "outputs": ["p", "y"]},
                {"name": "b", "kind": "identity", "inputs": ["p"], "outputs": ["q"]}]}'
bad "manifest: nodes[1].name: node 'a' is named twice" \
    '{"channels": {"x": {}, "y": {}, "z": {}}, "inputs": ["x"], "outputs": ["y", "z"],
      "nodes": [{"name": "a", "kind": "identity", "inputs": ["x"], "outputs": ["y"]},
                {"name": "a", "kind": "identity", "inputs": ["x"], "outputs": ["z"]}]}'
bad "manifest: nodes[0].options.model: required (a GGUF file)" \
    '{"channels": {"x": {}, "y": {}}, "inputs": ["x"], "outputs": ["y"],
      "nodes": [{"name": "a", "kind": "llm", "inputs": ["x"], "outputs": ["y"]}]}'
bad "manifest: nodes[0].options.model: cannot read '/nonexistent.gguf'" \
    '{"channels": {"x": {}, "y": {}}, "inputs": ["x"], "outputs": ["y"],
      "nodes": [{"name": "a", "kind": "tokenize", "inputs": ["x"], "outputs": ["y"], "options": {"model": "/nonexistent.gguf"}}]}'
bad "manifest: nodes[0].options.temprature: unknown field" \
    "{\"channels\": {\"x\": {}, \"y\": {}}, \"inputs\": [\"x\"], \"outputs\": [\"y\"],
      \"nodes\": [{\"name\": \"a\", \"kind\": \"llm\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"options\": {\"model\": \"$model\", \"temprature\": 1}}]}"
bad "manifest: nodes[0].options.top_p: 2 is out of range [0, 1]" \
    "{\"channels\": {\"x\": {}, \"y\": {}}, \"inputs\": [\"x\"], \"outputs\": [\"y\"],
      \"nodes\": [{\"name\": \"a\", \"kind\": \"llm\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"options\": {\"model\": \"$model\", \"top_p\": 2}}]}"
bad "manifest: nodes[0].class: a python node needs its module and class" \
    '{"channels": {"x": {}, "y": {}}, "inputs": ["x"], "outputs": ["y"],
      "nodes": [{"name": "a", "kind": "python", "module": "m", "inputs": ["x"], "outputs": ["y"]}]}'
bad "manifest: nodes[0]: a tokenize node has one input and one output" \
    "{\"channels\": {\"x\": {}, \"y\": {}, \"z\": {}}, \"inputs\": [\"x\"], \"outputs\": [\"y\", \"z\"],
      \"nodes\": [{\"name\": \"a\", \"kind\": \"tokenize\", \"inputs\": [\"x\"], \"outputs\": [\"y\", \"z\"], \"options\": {\"model\": \"$model\"}}]}"
bad "manifest: preload[0]: cannot read '/nonexistent.gguf'" \
    '{"channels": {"x": {}, "y": {}}, "inputs": ["x"], "outputs": ["y"], "preload": ["/nonexistent.gguf"],
      "nodes": [{"name": "a", "kind": "identity", "inputs": ["x"], "outputs": ["y"]}]}'
expect_error 1 "cannot read" pipeline check "$tmp/none.json"
expect_error 2 "expected run or check" pipeline start "$m"
# After all that, the pipeline still runs.
"$INFERD" pipeline check "$m" >/dev/null
echo "malformed manifests: each refused with its error"

# ---- kill -9 of a node mid-run ----
mkfifo "$tmp/in"
run_pid=
trap 'if [[ -n "$run_pid" ]]; then kill -9 "$run_pid" 2>/dev/null || true; fi; cleanup' EXIT
shm_before=$(ls /dev/shm | sort)
for victim in llm tok fan; do
    "$INFERD" pipeline run "$m" <"$tmp/in" >"$tmp/run.out" 2>"$tmp/run.err" &
    run_pid=$!
    exec 7>"$tmp/in" # keep stdin open: the pipeline waits for sessions
    echo "Once upon a time" >&7
    for _ in $(seq 1 300); do
        [[ -s "$tmp/run.out" ]] && break
        sleep 0.05
    done
    [[ -s "$tmp/run.out" ]] || fail "no output before the kill: $(cat "$tmp/run.err")"
    nodes=$(pgrep -P "$run_pid" | sort)
    [[ $(echo "$nodes" | wc -l) -eq 4 ]] || fail "expected 4 node processes, got: $nodes"
    vpid=
    for p in $nodes; do
        [[ "$(tr '\0' ' ' </proc/"$p"/cmdline)" == *pipeline-node* ]] || fail "node $p: $(tr '\0' ' ' </proc/"$p"/cmdline)"
    done
    # The victim: the node whose log names it (node processes are started in manifest order).
    case $victim in tok) i=1 ;; fan) i=2 ;; llm) i=4 ;; esac
    vpid=$(echo "$nodes" | sed -n "${i}p")
    kill -9 "$vpid"
    for _ in $(seq 1 600); do # the run ends on its own (60 s at most)
        kill -0 "$run_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$run_pid" 2>/dev/null && { kill -9 "$run_pid"; fail "kill -9 of $victim: the run did not end"; }
    rc=0
    wait "$run_pid" || rc=$?
    exec 7>&-
    [[ $rc -eq 1 ]] || fail "kill -9 of $victim: the run exited $rc: $(cat "$tmp/run.err")"
    grep -q "node '$victim' ([a-z]*) was killed by signal 9 (KILL)" "$tmp/run.err" ||
        fail "kill -9 of $victim: $(cat "$tmp/run.err")"
    for p in $nodes; do
        [[ ! -e /proc/$p ]] || [[ "$(cat /proc/"$p"/stat 2>/dev/null | cut -d' ' -f3)" == Z ]] ||
            fail "node process $p is still there after the failure"
    done
done
[[ "$(ls /dev/shm | sort)" == "$shm_before" ]] || fail "/dev/shm changed: $(ls /dev/shm)"
echo "kill -9 of llm, tok and fan: the run fails naming the node; no process or shared memory left"
echo PASS
