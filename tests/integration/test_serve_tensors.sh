#!/usr/bin/env bash
# KServe tensors through the built-in identity model (-m identity:NAME), in
# all three ways a client sends them, with a Python (numpy) client over TCP
# and the Unix socket: JSON data, Triton's binary tensor data
# (Inference-Header-Content-Length) and system shared memory (inputs read
# in place, outputs written into the client's region, or left in place when
# the output is the input's own bytes). FP32, INT8 and BYTES tensors from
# 1 KB to 64 MB come back equal. Every malformed tensor request, and the
# misbehaving shared-memory clients (a region truncated, unlinked, an
# output overlapping an input, an output region too small), get their
# precise error, and the worker still serves a good request after each.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

sock="$tmp/inferd.sock"
serve_start -m "$model" -m identity:ident -t 1 -np 2 --unix "$sock" --max-body 200000000
serve_wait_ready

PORT=$port SOCK=$sock PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - <<'PY'
import json, os
import numpy as np
from kserve_http import Doors, fail, region as make_region

PORT, SOCK = int(os.environ["PORT"]), os.environ["SOCK"]
TAG = f"tens-{os.getpid()}"
CONNS = ("tcp", "unix")
doors = Doors(PORT, SOCK)
post_json, register = doors.post_json, doors.register

def post(door, path, body, headers=None):
    return doors.request(door, "POST", path, body, headers)

def infer_json(door, obj):
    return post_json(door, "/v2/models/ident/infer", obj)

def region(name, size):
    return make_region(TAG, name, size)

def good(door="tcp"):
    st, b = infer_json(door, {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [3],
                                          "data": [1, 2, 3]}]})
    if st != 200 or b["outputs"][0]["data"] != [1, 2, 3]:
        fail(f"a good request after an error: {st} {b}")

KS = {"FP32": np.float32, "INT8": np.int8}

def make(dt, nbytes, seed):
    rng = np.random.default_rng(seed)
    if dt == "FP32":
        return rng.standard_normal(nbytes // 4).astype(np.float32)
    return rng.integers(-128, 128, nbytes, dtype=np.int8)

def bytes_encode(items):
    return b"".join(len(s).to_bytes(4, "little") + s for s in items)

def make_bytes(nbytes, seed):
    """BYTES elements of random lengths (0..2000) whose encoding is nbytes:
    the encoding and the element count."""
    rng = np.random.default_rng(seed)
    items, total = [], 0
    while total < nbytes:
        n = min(int(rng.integers(0, 2001)), nbytes - total - 4)
        if n < 0:  # less than a length field left: pad the last element
            items[-1] += bytes(nbytes - total)
            break
        items.append(rng.bytes(n))
        total += 4 + n
    enc = bytes_encode(items)
    assert len(enc) == nbytes
    return enc, len(items)

# ---- JSON data ----
for door in CONNS:
    for dt in KS:
        a = make(dt, 1024, 1)
        st, b = infer_json(door, {"inputs": [{"name": "INPUT0", "datatype": dt,
                                              "shape": [2, a.size // 2], "data": a.tolist()}]})
        out = b["outputs"][0] if st == 200 else None
        if st != 200 or out["shape"] != [2, a.size // 2] or out["datatype"] != dt or \
                not np.array_equal(np.array(out["data"], dtype=KS[dt]), a):
            fail(f"JSON {dt} via {door}: {st} {str(b)[:300]}")
    words = ["once", "upon", "a", "time", "é"]
    st, b = infer_json(door, {"inputs": [{"name": "INPUT3", "datatype": "BYTES", "shape": [5],
                                          "data": words}]})
    if st != 200 or b["outputs"][0]["name"] != "OUTPUT3" or b["outputs"][0]["data"] != words:
        fail(f"JSON BYTES via {door}: {st} {b}")
print("json: FP32, INT8 (1 KB) and BYTES equal over tcp and unix")

# ---- binary data, 1 KB .. 64 MB ----
def infer_binary(door, arrays, binary_out=True):
    ins, blob = [], b""
    for i, (dt, shape, raw) in enumerate(arrays):
        ins.append({"name": f"INPUT{i}", "datatype": dt, "shape": shape,
                    "parameters": {"binary_data_size": len(raw)}})
        blob += raw
    hdr = json.dumps({"inputs": ins, "parameters": {"binary_data_output": binary_out}}).encode()
    st, h, body = post(door, "/v2/models/ident/infer", hdr + blob,
                       {"Inference-Header-Content-Length": str(len(hdr)),
                        "Content-Type": "application/octet-stream"})
    if st != 200:
        fail(f"binary via {door}: {st} {body[:300]}")
    n = int(h["Inference-Header-Content-Length"])
    js, rest, outs = json.loads(body[:n]), body[n:], []
    for o in js["outputs"]:
        k = o["parameters"]["binary_data_size"]
        outs.append((o, rest[:k]))
        rest = rest[k:]
    if rest:
        fail("binary: bytes left after the outputs")
    return outs

for door in CONNS:
    for dt in KS:
        for nbytes in (1024, 65536, 1 << 20, 64 << 20):
            a = make(dt, nbytes, nbytes)
            (o, raw), = infer_binary(door, [(dt, [a.size], a.tobytes())])
            if o["datatype"] != dt or o["shape"] != [a.size] or raw != a.tobytes():
                fail(f"binary {dt} {nbytes} via {door}: outputs differ")
    items = [os.urandom(n) for n in (0, 1, 100, 70000)]
    (o, raw), = infer_binary(door, [("BYTES", [4], bytes_encode(items))])
    if raw != bytes_encode(items) or o["shape"] != [4]:
        fail(f"binary BYTES via {door}")
    for nbytes in (1024, 65536, 1 << 20, 64 << 20):
        enc, k = make_bytes(nbytes, nbytes)
        (o, raw), = infer_binary(door, [("BYTES", [k], enc)])
        if raw != enc or o["shape"] != [k] or o["datatype"] != "BYTES":
            fail(f"binary BYTES {nbytes} via {door}: outputs differ")
print("binary: FP32, INT8 and BYTES of 1 KB, 64 KB, 1 MB, 64 MB equal over tcp and unix")

# ---- shared memory, 1 KB .. 64 MB ----
for door in CONNS:
    for dt in list(KS) + ["BYTES"]:
        for nbytes in (1024, 65536, 1 << 20, 64 << 20):
            if dt == "BYTES":
                raw, k = make_bytes(nbytes, nbytes + 1)
                a = np.frombuffer(raw, np.uint8)
                a_shape = [k]
            else:
                a = make(dt, nbytes, nbytes + 1)
                a_shape = [a.size]
            m = region(f"{door}-{dt}-{nbytes}", 2 * nbytes)
            m.buf[:nbytes] = a.tobytes()
            name = f"r-{door}-{dt}-{nbytes}"
            register(door, name, m)
            shm = lambda off: {"shared_memory_region": name, "shared_memory_byte_size": nbytes,
                               "shared_memory_offset": off}
            st, b = infer_json(door, {"inputs": [{"name": "INPUT0", "datatype": dt,
                                                  "shape": a_shape, "parameters": shm(0)}],
                                      "outputs": [{"name": "OUTPUT0", "parameters": shm(nbytes)}]})
            if st != 200 or b["outputs"][0]["parameters"]["shared_memory_byte_size"] != nbytes \
                    or "data" in b["outputs"][0]:
                fail(f"shm {dt} {nbytes} via {door}: {st} {b}")
            if bytes(m.buf[nbytes:2 * nbytes]) != a.tobytes():
                fail(f"shm {dt} {nbytes} via {door}: the output region differs")
            # In place: the output is the input's own bytes.
            st, b = infer_json(door, {"inputs": [{"name": "INPUT0", "datatype": dt,
                                                  "shape": a_shape, "parameters": shm(0)}],
                                      "outputs": [{"name": "OUTPUT0", "parameters": shm(0)}]})
            if st != 200 or bytes(m.buf[:nbytes]) != a.tobytes():
                fail(f"shm in place {dt} {nbytes} via {door}: {st} {b}")
            # Input in shared memory, output in the body.
            if nbytes <= 65536:
                st, b = infer_json(door, {"inputs": [{"name": "INPUT0", "datatype": dt,
                                                      "shape": a_shape, "parameters": shm(0)}]})
                if dt == "BYTES":  # random bytes are no JSON strings: refused, with the way out
                    ok = st == 400 and "holds bytes that are not UTF-8 text: ask for binary_data" \
                        in b.get("error", "")
                else:
                    ok = st == 200 and np.array_equal(np.array(b["outputs"][0]["data"], KS[dt]), a)
                if not ok:
                    fail(f"shm in, JSON out {dt} {nbytes} via {door}: {st}")
            post_json(door, f"/v2/systemsharedmemory/region/{name}/unregister", {})
            m.close()
            os.unlink("/dev/shm/" + m.name)
print("shm: FP32, INT8 and BYTES of 1 KB, 64 KB, 1 MB, 64 MB equal over tcp and unix, "
      "into an output region and in place")

# ---- malformed tensor requests: each a precise error, then a good request ----
def bad(status, msg, obj, door="tcp"):
    st, b = infer_json(door, obj)
    if st != status or msg not in b.get("error", ""):
        fail(f"expected {status} '{msg}': {st} {b}")
    good(door)

def inp(**kw):
    d = {"name": "INPUT0", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}
    d.update(kw)
    return d

bad(400, "inputs must be an array of 1 to 16 tensors", {"inputs": []})
bad(400, "datatype must be one of", {"inputs": [inp(datatype="INT3")]})
bad(400, "shape must be an array", {"inputs": [inp(shape=3)]})
bad(400, "shape[0] is not a size", {"inputs": [inp(shape=[-3])]})
bad(400, "3 data elements, the shape says 4", {"inputs": [inp(shape=[4])]})
bad(400, "element 1 is not a INT32 value", {"inputs": [inp(data=[1, "x", 3])]})
bad(400, "element 0, 300, is out of range for INT8", {"inputs": [inp(datatype="INT8", data=[300, 1, 2])]})
bad(400, "input 'INPUT0' is given twice", {"inputs": [inp(), inp()]})
bad(400, "give its data one way", {"inputs": [inp(parameters={"binary_data_size": 12})]})
bad(400, "give its data one way", {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [3]}]})
bad(400, "identity model 'ident' takes inputs INPUT0, INPUT1", {"inputs": [inp(name="X")]})
bad(400, "identity model 'ident' has no output 'OUTPUT7'",
    {"inputs": [inp()], "outputs": [{"name": "OUTPUT7"}]})
bad(400, "output 'OUTPUT0' is asked for twice",
    {"inputs": [inp()], "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]})
bad(400, "shared_memory_region and shared_memory_byte_size go together",
    {"inputs": [inp(data=None, parameters={"shared_memory_region": "x"})]})
bad(404, "no region 'nowhere' is registered",
    {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [3],
                 "parameters": {"shared_memory_region": "nowhere", "shared_memory_byte_size": 12}}]})
# binary data that does not match
hdr = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [3],
                              "parameters": {"binary_data_size": 16}}]}).encode()
hdr12 = hdr.replace(b'"binary_data_size": 16', b'"binary_data_size": 12')
for h_, extra, msg in ((hdr, b"\0" * 12, "binary_data_size 16 is beyond the 12 bytes"),
                       (hdr12, b"\0" * 20, "20 bytes of binary data follow the JSON; the "
                                           "inputs' binary_data_size take 12")):
    st, h, body = post("tcp", "/v2/models/ident/infer", h_ + extra,
                       {"Inference-Header-Content-Length": str(len(h_))})
    if st != 400 or msg.encode() not in body:
        fail(f"binary mismatch: {st} {body}")
    good()
hdr2 = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [4],
                               "parameters": {"binary_data_size": 12}}]}).encode()
st, h, body = post("tcp", "/v2/models/ident/infer", hdr2 + b"\0" * 12,
                   {"Inference-Header-Content-Length": str(len(hdr2))})
if st != 400 or b"16 bytes for the shape, 12 given" not in body:
    fail(f"binary shape mismatch: {st} {body}")
st, h, body = post("tcp", "/v2/models/ident/infer", b"{}",
                   {"Inference-Header-Content-Length": "99"})
if st != 400 or b"is not a length within the 2 bytes of the body" not in body:
    fail(f"a bad Inference-Header-Content-Length: {st} {body}")
good()
print("malformed tensor requests: each its error, and the worker still serves")

# ---- misbehaving shared-memory clients ----
m = region("bad", 1 << 16)
m.buf[:12] = np.array([7, 8, 9], np.int32).tobytes()
register("tcp", "bad", m)
sh = lambda off, n=12: {"shared_memory_region": "bad", "shared_memory_byte_size": n,
                        "shared_memory_offset": off}
shin = [{"name": "INPUT0", "datatype": "INT32", "shape": [3], "parameters": sh(0)}]
bad(400, "output 'OUTPUT0' overlaps input 'INPUT0' in shared memory",
    {"inputs": shin, "outputs": [{"name": "OUTPUT0", "parameters": sh(4)}]})
bad(400, "should be at least 12 bytes to hold the results",
    {"inputs": shin, "outputs": [{"name": "OUTPUT0", "parameters": sh(100, 8)}]})
bad(400, "12 bytes for the shape, 8 given",
    {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [3], "parameters": sh(0, 8)}]})
bad(400, "is beyond region 'bad'",
    {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [3], "parameters": sh(65530)}]})
# The client unlinks its object: the registered region still works.
os.unlink("/dev/shm/" + m.name)
st, b = infer_json("tcp", {"inputs": shin})
if st != 200 or b["outputs"][0]["data"] != [7, 8, 9]:
    fail(f"after the client unlinked its object: {st} {b}")
# The client truncates it: requests using the region fail, the worker lives.
os.truncate(f"/proc/self/fd/{m._fd}", 0)
bad(500, "its object shrank to 0 bytes", {"inputs": shin})
post_json("tcp", "/v2/systemsharedmemory/region/bad/unregister", {})
m.close()
good("unix")
print("misbehaving shared-memory clients: overlap, too small, truncated, unlinked: each "
      "refused or served, and the worker still serves")
PY
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve exited $serve_rc: $(tail -5 "$tmp/serve.log")"
if grep -E 'runtime error|AddressSanitizer|LeakSanitizer' "$tmp/serve.log"; then
    fail "sanitizer report in the server log"
fi

# ---- the identity model alone: no language model is loaded ----
serve_start -m identity:solo -m identity:duo
serve_wait_ready
expect_http 200 GET /v2/health/ready
expect_http 200 POST /v2/models/duo/infer \
    '{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[2],"data":[1.5,-2]}]}'
check '.outputs[0].name == "OUTPUT0" and .outputs[0].data == [1.5, -2]'
expect_http 200 POST /v2/repository/index
check '[.[].name] == ["solo", "duo"]'
expect_http 200 GET /v1/models
check '.data == []'
for route in /v1/completions /v1/chat/completions; do
    expect_http 404 POST $route '{"prompt":"x","messages":[{"role":"user","content":"x"}]}'
    check '.error.code == "model_not_found" and .error.message == "no language model is served here"'
done
expect_http 404 POST /v2/models/llama/infer \
    '{"inputs":[{"name":"text_input","datatype":"BYTES","shape":[1],"data":["x"]}]}'
check '.error | contains("model '"'"'llama'"'"' is not served here")'
expect_http 200 POST /v2/models/solo/infer \
    '{"inputs":[{"name":"INPUT1","datatype":"BYTES","shape":[1],"data":["still"]}]}'
check '.outputs[0].data == ["still"]'
serve_stop
[[ "$serve_rc" == 0 ]] || fail "serve (identity only) exited $serve_rc: $(tail -5 "$tmp/serve.log")"
echo PASS
