#!/usr/bin/env bash
# A language model's KServe tensors, with a Python (numpy) client over TCP
# and the Unix socket: input_ids (INT32/INT64) beside text_input, and the
# outputs text_output, output_ids, logits and hidden. The logits of the
# prompt's last position match llama.cpp's log-probabilities (the
# reference fixture); ids in give the same tokens as the text; input_ids
# written into a shared-memory region and logits/hidden/output_ids read
# from the client's output regions equal the same request's JSON and binary
# answers bit for bit. Every malformed request gets its precise error and
# the worker still serves after it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

sock="$tmp/inferd.sock"
# The prompt's ids, as the model's tokenizer makes them (with BOS).
ids=$("$INFERD" tokenize -m "$model" "Once upon a time")
serve_start -m "$model" -t 1 -np 2 --unix "$sock"
serve_wait_ready

PORT=$port SOCK=$sock IDS="$ids" PYTHONPATH="$(dirname "$0")" REF="$INFERD_FIXTURES/expected/logprobs_stories260K.json" \
    /usr/bin/python3 - <<'PY'
import json, os
import numpy as np
from kserve_http import Doors, fail, region as make_region

PORT, SOCK = int(os.environ["PORT"]), os.environ["SOCK"]
IDS = [int(x) for x in os.environ["IDS"].split()]
REF = json.load(open(os.environ["REF"]))["Once upon a time"]
TAG = f"llmt-{os.getpid()}"
M = "/v2/models/stories260K"
doors = Doors(PORT, SOCK)
conns = doors.conns
request, post_json, register = doors.request, doors.post_json, doors.register

def infer(door, obj):
    return post_json(door, M + "/infer", obj)

def outputs(b):
    return {o["name"]: o for o in b["outputs"]}

def ids_input(dt="INT32", shape=None, data=None):
    return {"name": "input_ids", "datatype": dt, "shape": shape or [len(IDS)],
            "data": IDS if data is None else data}

TEXT = {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["Once upon a time"]}
GREEDY = {"max_tokens": 8, "temperature": 0}

# ---- metadata: the inputs and outputs, with their widths once loaded ----
st, _, body = request("tcp", "GET", M)
meta = json.loads(body)
ins = {t["name"]: t for t in meta["inputs"]}
outs = {t["name"]: t for t in meta["outputs"]}
if st != 200 or ins["input_ids"]["datatype"] != "INT32" or ins["input_ids"]["shape"] != [-1] \
        or outs["logits"]["shape"] != [-1, 512] or outs["hidden"]["shape"] != [-1, 64] \
        or outs["output_ids"]["datatype"] != "INT32" or outs["text_output"]["shape"] != [1]:
    fail(f"metadata: {st} {meta}")

# ---- text in: the logits of the last position are llama.cpp's ----
st, b = infer("tcp", {"inputs": [TEXT], "parameters": GREEDY,
                      "outputs": [{"name": "text_output"}, {"name": "output_ids"},
                                  {"name": "logits"}]})
if st != 200:
    fail(f"text in: {st} {b}")
o = outputs(b)
if o["output_ids"]["data"] != REF["tokens"][:8] or o["output_ids"]["shape"] != [8]:
    fail(f"output_ids {o['output_ids']} != llama.cpp's {REF['tokens'][:8]}")
text = o["text_output"]["data"][0]
logits = np.array(o["logits"]["data"], dtype=np.float64).astype(np.float32)
if o["logits"]["shape"] != [1, 512] or o["logits"]["datatype"] != "FP32" or logits.size != 512:
    fail(f"logits: {o['logits']['shape']}")
x = logits.astype(np.float64)
lsm = x - x.max() - np.log(np.exp(x - x.max()).sum())
for t in REF["completion_probabilities"][0]["top_logprobs"]:
    if abs(lsm[t["id"]] - t["logprob"]) > 1e-3:
        fail(f"logprob of {t['id']}: {lsm[t['id']]} vs llama.cpp {t['logprob']}")
if int(np.argmax(logits)) != REF["tokens"][0]:
    fail("the first token is not the argmax of the logits")
print("text in: output_ids and the last position's logits match llama.cpp's")

# ---- ids in: the same tokens and text; INT32 or INT64, [n] or [1, n] ----
for dt, shape in (("INT32", None), ("INT64", [1, len(IDS)])):
    for door in conns:
        st, b = infer(door, {"inputs": [ids_input(dt, shape)], "parameters": GREEDY})
        o = outputs(b) if st == 200 else {}
        if st != 200 or set(o) != {"text_output", "output_ids"} or \
                o["output_ids"]["data"] != REF["tokens"][:8] or o["text_output"]["data"] != [text] \
                or b["parameters"]["prompt_tokens"] != len(IDS):
            fail(f"ids in ({dt} {shape}) via {door}: {st} {b}")
print("ids in: the text's tokens and text, over tcp and unix")

# ---- every position, JSON and binary ----
ALL = {"inputs": [ids_input()], "parameters": dict(GREEDY, all_logits=True),
       "outputs": [{"name": "logits"}, {"name": "hidden"}, {"name": "output_ids"}]}
st, b = infer("tcp", ALL)
if st != 200:
    fail(f"all_logits: {st} {b}")
o = outputs(b)
n = len(IDS)
j_logits = np.array(o["logits"]["data"], dtype=np.float64).astype(np.float32).reshape(n, 512)
j_hidden = np.array(o["hidden"]["data"], dtype=np.float64).astype(np.float32).reshape(n, 64)
if o["logits"]["shape"] != [n, 512] or o["hidden"]["shape"] != [n, 64]:
    fail(f"all_logits shapes: {o['logits']['shape']} {o['hidden']['shape']}")
if not np.array_equal(j_logits[-1], logits):
    fail("the last position of all_logits differs from the last-position logits")
if o["output_ids"]["data"] != REF["tokens"][:8]:
    fail("all_logits changed the generated tokens")
# max_tokens 0: the prompt is computed, nothing generated.
st, b = infer("tcp", {"inputs": [ids_input()], "parameters": {"max_tokens": 0},
                      "outputs": [{"name": "hidden"}, {"name": "output_ids"}]})
o = outputs(b) if st == 200 else {}
if st != 200 or o["output_ids"]["shape"] != [0] or b["parameters"]["completion_tokens"] != 0 or \
        not np.array_equal(np.array(o["hidden"]["data"], np.float32), j_hidden[-1]):
    fail(f"max_tokens 0: {st} {b}")
# Binary data.
hdr = json.dumps({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [n],
                              "parameters": {"binary_data_size": 8 * n}}],
                  "parameters": dict(GREEDY, all_logits=True, binary_data_output=True),
                  "outputs": [{"name": "logits"}, {"name": "hidden"}]}).encode()
st, h, body = request("unix", "POST", M + "/infer", hdr + np.array(IDS, np.int64).tobytes(),
                      {"Inference-Header-Content-Length": str(len(hdr))})
if st != 200:
    fail(f"binary: {st} {body[:300]}")
k = int(h["Inference-Header-Content-Length"])
js, rest = json.loads(body[:k]), body[k:]
sizes = [x["parameters"]["binary_data_size"] for x in js["outputs"]]
b_logits = np.frombuffer(rest[:sizes[0]], np.float32).reshape(n, 512)
b_hidden = np.frombuffer(rest[sizes[0]:sizes[0] + sizes[1]], np.float32).reshape(n, 64)
if not np.array_equal(b_logits, j_logits) or not np.array_equal(b_hidden, j_hidden):
    fail("binary logits/hidden differ from JSON's")
print(f"all_logits: [{n}, 512] logits and [{n}, 64] hidden, JSON and binary equal")

# ---- shared memory: ids from a region, outputs into the client's regions ----
def region(name, size):
    return make_region(TAG, name, size)

def shm(name, size, off=0):
    return {"shared_memory_region": name, "shared_memory_byte_size": size,
            "shared_memory_offset": off}

LB, HB = n * 512 * 4, n * 64 * 4
for door in conns:
    mi, mo = region(f"{door}-in", 4096), region(f"{door}-out", LB + HB + 64)
    np.ndarray((n,), np.int32, mi.buf)[:] = IDS
    register(door, f"in-{door}", mi)
    register(door, f"out-{door}", mo)
    st, b = infer(door, {
        "inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [n],
                    "parameters": shm(f"in-{door}", 4 * n)}],
        "parameters": dict(GREEDY, all_logits=True),
        "outputs": [{"name": "logits", "parameters": shm(f"out-{door}", LB)},
                    {"name": "hidden", "parameters": shm(f"out-{door}", HB, LB)},
                    {"name": "output_ids", "parameters": shm(f"out-{door}", 32, LB + HB)}]})
    if st != 200 or any("data" in x for x in b["outputs"]):
        fail(f"shm via {door}: {st} {b}")
    o = outputs(b)
    if o["logits"]["parameters"]["shared_memory_byte_size"] != LB or o["logits"]["shape"] != [n, 512]:
        fail(f"shm via {door}: {o['logits']}")
    s_logits = np.ndarray((n, 512), np.float32, mo.buf)
    s_hidden = np.ndarray((n, 64), np.float32, mo.buf, offset=LB)
    s_ids = np.ndarray((8,), np.int32, mo.buf, offset=LB + HB)
    if not np.array_equal(s_logits, j_logits) or not np.array_equal(s_hidden, j_hidden) or \
            s_ids.tolist() != REF["tokens"][:8]:
        fail(f"shm via {door}: the regions differ from the JSON answer")
    del s_logits, s_hidden, s_ids
    for r in ("in", "out"):
        post_json(door, f"/v2/systemsharedmemory/region/{r}-{door}/unregister", {})
    for m in (mi, mo):
        m.close()
        os.unlink("/dev/shm/" + m.name)
print("shm: input_ids read from a region, logits/hidden/output_ids written into the client's "
      "regions equal the JSON answer, over tcp and unix")

# ---- malformed requests: each a precise error, then a good request ----
def good(door="tcp"):
    st, b = infer(door, {"inputs": [ids_input()], "parameters": {"max_tokens": 1}})
    if st != 200 or outputs(b)["output_ids"]["shape"] != [1]:
        fail(f"a good request after an error: {st} {b}")

def bad(status, msg, obj, door="tcp"):
    st, b = infer(door, obj)
    if st != status or msg not in b.get("error", ""):
        fail(f"expected {status} '{msg}': {st} {b}")
    good(door)

IDS_MSG = "input 'input_ids': expected token ids, datatype INT32 or INT64, of shape [n] or [1, n]"
bad(400, IDS_MSG, {"inputs": [ids_input("FP32", data=[1.0] * n)]})
bad(400, IDS_MSG, {"inputs": [ids_input("INT32", [2, 3], [1, 2, 3, 4, 5, 6])]})
bad(400, IDS_MSG, {"inputs": [ids_input("INT32", [1, 1, n])]})
bad(400, "input 'input_ids': it is empty", {"inputs": [ids_input(shape=[0], data=[])]})
bad(400, "input 'input_ids': element 1, -5, is not a token id",
    {"inputs": [ids_input(shape=[3], data=[1, -5, 7])]})
bad(400, "input 'input_ids': element 0, 4294967296, is not a token id",
    {"inputs": [ids_input("INT64", [1], [1 << 32])]})
bad(400, "token 2 has id 99999, outside the vocabulary [0, 512)",
    {"inputs": [ids_input(shape=[3], data=[1, 403, 99999])]})
bad(400, "inputs: give text_input or input_ids, not both", {"inputs": [TEXT, ids_input()]})
bad(400, "unexpected inference input 'foo' for model 'stories260K'",
    {"inputs": [ids_input(), {"name": "foo", "datatype": "INT32", "shape": [1], "data": [1]}]})
bad(400, "unexpected inference output 'scores' for model 'stories260K'",
    {"inputs": [ids_input()], "outputs": [{"name": "scores"}]})
bad(400, "all_logits: expected a boolean",
    {"inputs": [ids_input()], "parameters": {"all_logits": "yes"}})
bad(400, "input 'max_tokens': expected one element",
    {"inputs": [ids_input(), {"name": "max_tokens", "datatype": "INT32", "shape": [2],
                              "data": [1, 2]}]})
# Shared memory: an output region too small, an output over the input, a
# region the client truncated.
m = region("bad", 65536)
np.ndarray((n,), np.int32, m.buf)[:] = IDS
register("tcp", "bad", m)
shin = [{"name": "input_ids", "datatype": "INT32", "shape": [n], "parameters": shm("bad", 4 * n)}]
bad(400, "shared memory size specified with the request for output 'logits' should be at "
         "least 2048 bytes to hold the results",
    {"inputs": shin, "outputs": [{"name": "logits", "parameters": shm("bad", 100, 4096)}]})
bad(400, "output 'logits' overlaps input 'input_ids' in shared memory",
    {"inputs": shin, "outputs": [{"name": "logits", "parameters": shm("bad", 2048, 8)}]})
bad(400, "output 'logits' should be at least 10240 bytes",
    {"inputs": shin, "parameters": {"all_logits": True},
     "outputs": [{"name": "logits", "parameters": shm("bad", 2048, 4096)}]})
os.truncate(f"/proc/self/fd/{m._fd}", 0)
bad(500, "its object shrank to 0 bytes", {"inputs": shin})
bad(500, "its object shrank to 0 bytes",
    {"inputs": [ids_input()], "outputs": [{"name": "logits", "parameters": shm("bad", 2048)}]})
post_json("tcp", "/v2/systemsharedmemory/region/bad/unregister", {})
m.close()
os.unlink("/dev/shm/" + m.name)
good("unix")
print("malformed requests: each refused with its error, and the worker still serves")
PY
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc: $(tail -5 "$tmp/serve.log")"
if grep -E 'runtime error|AddressSanitizer|LeakSanitizer' "$tmp/serve.log"; then
    fail "sanitizer report in the server log"
fi
echo PASS
