"""Checks of inferd's gRPC door with the grpcio client (Debian's
python3-grpcio), with the client classes protoc generates from
proto/grpc_service.proto at build time ($INFERD_GRPC_PY). Run by test_serve_grpc.sh: `grpc_check.py PART`,
with the server's addresses and the expected outputs in the environment.

Parts:
  basic   every RPC over TCP and the Unix socket, streaming equal to
          `inferd generate`, parity with the HTTP KServe route, shared
          memory, the API key, malformed requests (each its status and
          message, and the worker still serves).
  cancel  a cancelled stream and a cancelled call free their slots; a full
          queue is RESOURCE_EXHAUSTED; a deadline is DEADLINE_EXCEEDED.
  storm   1000 concurrent streams: each answered or refused with its
          reason, none hangs, the worker's threads stay bounded, and it
          still serves afterwards.
"""
import asyncio
import json
import os
import struct
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.environ["INFERD_GRPC_PY"])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import grpc_service_pb2 as pb  # noqa: E402
import grpc_service_pb2_grpc as pbg  # noqa: E402
from kserve_http import fail, region  # noqa: E402

ADDR = os.environ["GRPC_ADDR"]
UNIX = os.environ.get("GRPC_UNIX", "")
HTTP = os.environ.get("HTTP_URL", "")
KEY = os.environ.get("API_KEY", "")
MODEL = os.environ.get("MODEL", "stories260K")
AUTH = (("authorization", f"Bearer {KEY}"),) if KEY else ()


def ok(msg):
    print(f"ok - {msg}", flush=True)


def client(addr=ADDR):
    return pbg.GRPCInferenceServiceStub(grpc.insecure_channel(addr))


def raw_text(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def text_of(raw):
    (n,) = struct.unpack_from("<I", raw)
    return raw[4 : 4 + n].decode()


def text_request(prompt, rid="", **params):
    q = pb.ModelInferRequest(model_name=MODEL, id=rid)
    t = q.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    q.raw_input_contents.append(raw_text(prompt))
    for k, v in params.items():
        if isinstance(v, bool):
            q.parameters[k].bool_param = v
        elif isinstance(v, int):
            q.parameters[k].int64_param = v
        elif isinstance(v, float):
            q.parameters[k].double_param = v
        else:
            q.parameters[k].string_param = v
    del t
    return q


def outputs(resp):
    """{name: (output, raw bytes)} of a ModelInferResponse."""
    return {o.name: (o, resp.raw_output_contents[i]) for i, o in enumerate(resp.outputs)}


def expect_status(fn, code, part, what):
    try:
        fn()
    except grpc.RpcError as e:
        if e.code() != code or part not in (e.details() or ""):
            fail(f"{what}: {e.code()} '{e.details()}', expected {code} with '{part}'")
        return e.details()
    fail(f"{what}: succeeded, expected {code}")


def stream_all(s, reqs, timeout=60, metadata=AUTH):
    """Send @reqs on one ModelStreamInfer; every response, in order."""
    return list(s.ModelStreamInfer(iter(reqs), timeout=timeout, metadata=metadata))


def pieces(resps, rid=None):
    """The text pieces, ids, final and error responses of request @rid."""
    text, ids, final, errors, n_tok = [], [], None, [], 0
    for m in resps:
        r = m.infer_response
        if rid is not None and r.id != rid:
            continue
        if m.error_message:
            errors.append(m)
            continue
        fin = r.parameters["triton_final_response"].bool_param
        outs = outputs(r)
        if "text_output" in outs:
            text.append(text_of(outs["text_output"][1]))
        if "output_ids" in outs:
            raw = outs["output_ids"][1]
            ids.extend(struct.unpack(f"<{len(raw) // 4}i", raw))
        if fin:
            if final is not None:
                fail(f"request {rid}: two final responses")
            final = r
        else:
            n_tok += 1
    return "".join(text), ids, final, errors, n_tok


def http_json(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    rq = urllib.request.Request(HTTP + path, data=data, method=method)
    rq.add_header("Content-Type", "application/json")
    if KEY:
        rq.add_header("Authorization", f"Bearer {KEY}")
    with urllib.request.urlopen(rq, timeout=60) as r:
        return json.load(r)


def status():
    return http_json("GET", "/v1/status")


def wait_for(pred, what, timeout=60):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = status()
        if pred(last):
            return last
        time.sleep(0.05)
    fail(f"never {what}: {json.dumps(last)[:600]}")


# ---------------------------------------------------------------------------


def part_basic():
    expect = os.environ["EXPECT_TEXT"]
    n_gen = int(os.environ["EXPECT_N"])
    s = client()

    # ---- health and metadata, over TCP and the Unix socket ----
    for name, st in (("tcp", s), ("unix", client(f"unix:{UNIX}"))):
        if not st.ServerLive(pb.ServerLiveRequest()).live:
            fail(f"{name}: not live")
        if not st.ServerReady(pb.ServerReadyRequest()).ready:
            fail(f"{name}: not ready")
        md = st.ServerMetadata(pb.ServerMetadataRequest(), metadata=AUTH)
        if md.name != "inferd" or "model_repository" not in md.extensions:
            fail(f"{name}: server metadata {md}")
        if "system_shared_memory" not in md.extensions:
            fail(f"{name}: shared memory not announced on a loopback/unix door: {md}")
        for m in (MODEL, "ident"):
            if not st.ModelReady(pb.ModelReadyRequest(name=m), metadata=AUTH).ready:
                fail(f"{name}: model {m} not ready")
    ok("ServerLive, ServerReady, ServerMetadata, ModelReady over tcp and unix")
    expect_status(
        lambda: s.ModelReady(pb.ModelReadyRequest(name="nope"), metadata=AUTH),
        grpc.StatusCode.NOT_FOUND, "model 'nope' is not served here", "ModelReady nope")
    expect_status(
        lambda: s.ModelReady(pb.ModelReadyRequest(name=MODEL, version="2"), metadata=AUTH),
        grpc.StatusCode.NOT_FOUND, "version '2'", "ModelReady version 2")
    mm = s.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), metadata=AUTH)
    ins = {t.name: t for t in mm.inputs}
    outs = {t.name: t for t in mm.outputs}
    if (mm.name != MODEL or list(mm.versions) != ["1"] or mm.platform != "inferd_gguf"
            or ins["text_input"].datatype != "BYTES" or ins["input_ids"].datatype != "INT32"
            or list(outs["logits"].shape) != [-1, 512] or outs["text_output"].datatype != "BYTES"):
        fail(f"model metadata: {mm}")
    im = s.ModelMetadata(pb.ModelMetadataRequest(name="ident"), metadata=AUTH)
    if im.platform != "inferd_identity":
        fail(f"identity metadata: {im}")
    ok("ModelMetadata: the language model's tensors (logits [-1, 512]) and the identity's")

    # ---- the API key ----
    if KEY:
        expect_status(lambda: s.ServerMetadata(pb.ServerMetadataRequest()),
                      grpc.StatusCode.UNAUTHENTICATED, "missing API key", "no key")
        expect_status(
            lambda: s.ModelInfer(text_request("Hi"), metadata=(("authorization", "Bearer nope"),)),
            grpc.StatusCode.UNAUTHENTICATED, "wrong API key", "wrong key")
        bad = s.ModelStreamInfer(iter([text_request("Hi")]), metadata=(("authorization", "x"),))
        expect_status(lambda: list(bad), grpc.StatusCode.UNAUTHENTICATED, "wrong API key",
                      "stream, wrong key")
        ok("API key: none or a wrong one is UNAUTHENTICATED (unary and stream); health needs none")

    # ---- ModelInfer: text in, equal to `inferd generate` ----
    q = text_request("Once upon a time", "r1", max_tokens=n_gen, temperature=0.0)
    q.outputs.add(name="text_output")
    q.outputs.add(name="output_ids")
    r = s.ModelInfer(q, metadata=AUTH)
    o = outputs(r)
    text, ids_raw = text_of(o["text_output"][1]), o["output_ids"][1]
    ids = list(struct.unpack(f"<{len(ids_raw) // 4}i", ids_raw))
    if text != expect:
        fail(f"ModelInfer text {text!r} != inferd generate's {expect!r}")
    p = r.parameters
    if (r.id != "r1" or r.model_name != MODEL or r.model_version != "1"
            or p["completion_tokens"].int64_param != n_gen or len(ids) != n_gen
            or p["finish_reason"].string_param != "length" or p["prompt_tokens"].int64_param < 1
            or list(o["output_ids"][0].shape) != [n_gen] or list(o["text_output"][0].shape) != [1]):
        fail(f"ModelInfer response: {r}")
    ok("ModelInfer: text_output equals inferd generate's, with output_ids and the usage")

    # Sampling as input tensors, not parameters: the same answer.
    q2 = pb.ModelInferRequest(model_name=MODEL)
    q2.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"Once upon a time")
    q2.inputs.add(name="max_tokens", datatype="INT32", shape=[1]).contents.int_contents.append(n_gen)
    q2.inputs.add(name="temperature", datatype="FP32", shape=[1]).contents.fp32_contents.append(0)
    r2 = s.ModelInfer(q2, metadata=AUTH)
    if text_of(outputs(r2)["text_output"][1]) != expect:
        fail(f"sampling as tensors: {r2}")
    ok("ModelInfer: sampling fields as input tensors (typed contents) equal the parameters")

    # input_ids in: the same as the HTTP KServe route's answer, logits bit for bit.
    prompt_ids = [int(x) for x in os.environ["PROMPT_IDS"].split()]
    q3 = pb.ModelInferRequest(model_name=MODEL)
    q3.inputs.add(name="input_ids", datatype="INT32", shape=[len(prompt_ids)])
    q3.raw_input_contents.append(struct.pack(f"<{len(prompt_ids)}i", *prompt_ids))
    q3.parameters["max_tokens"].int64_param = n_gen
    q3.parameters["temperature"].double_param = 0
    for name in ("text_output", "output_ids", "logits"):
        q3.outputs.add(name=name)
    r3 = s.ModelInfer(q3, metadata=AUTH)
    o3 = outputs(r3)
    hj = http_json("POST", f"/v2/models/{MODEL}/infer", {
        "inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [len(prompt_ids)],
                    "data": prompt_ids}],
        "parameters": {"max_tokens": n_gen, "temperature": 0},
        "outputs": [{"name": "output_ids"}, {"name": "logits"}, {"name": "text_output"}]})
    ho = {x["name"]: x for x in hj["outputs"]}
    g_ids = list(struct.unpack(f"<{n_gen}i", o3["output_ids"][1]))
    lg = o3["logits"]
    g_logits = list(struct.unpack(f"<{len(lg[1]) // 4}f", lg[1]))
    h_logits = [struct.unpack("<f", struct.pack("<f", v))[0] for v in ho["logits"]["data"]]
    if (g_ids != ho["output_ids"]["data"] or g_ids != ids or list(lg[0].shape) != [1, 512]
            or g_logits != h_logits or text_of(o3["text_output"][1]) != expect):
        fail(f"input_ids: gRPC {g_ids} / HTTP {ho['output_ids']['data']}; logits equal: "
             f"{g_logits == h_logits}")
    ok("ModelInfer: input_ids in; output_ids and logits [1, 512] equal the HTTP route's bit for bit")

    # ---- ModelStreamInfer: one response per token, then a final one ----
    q = text_request("Once upon a time", "s1", max_tokens=n_gen, temperature=0.0)
    q.outputs.add(name="text_output")
    q.outputs.add(name="output_ids")
    resps = stream_all(s, [q])
    st_text, st_ids, final, errors, n_tok = pieces(resps, "s1")
    if errors or final is None or st_text != expect or n_tok != n_gen or st_ids != ids:
        fail(f"stream: text {st_text!r} (want {expect!r}), {n_tok} token responses, ids "
             f"{st_ids} (want {ids}), errors {errors}")
    if (resps[-1].infer_response is not final or final.parameters["finish_reason"].string_param
            != "length" or final.parameters["completion_tokens"].int64_param != n_gen):
        fail(f"stream final: {final}")
    idx = [m.infer_response.parameters["index"].int64_param for m in resps[:-1]]
    if idx != list(range(n_gen)):
        fail(f"stream indexes {idx}")
    ok(f"ModelStreamInfer: {n_gen} token responses then a final one; text and ids equal "
       "inferd generate's and ModelInfer's")
    # Over the Unix socket too, with the default outputs (text only).
    resps = stream_all(client(f"unix:{UNIX}"),
                       [text_request("Once upon a time", "u", max_tokens=n_gen, temperature=0.0)])
    if pieces(resps, "u")[0] != expect:
        fail(f"unix stream: {resps}")
    # Several requests on one stream, answered side by side.
    reqs = [text_request("Once upon a time", f"m{i}", max_tokens=n_gen, temperature=0.0)
            for i in range(5)]
    resps = stream_all(s, reqs)
    for i in range(5):
        t, _, fin, errs, _ = pieces(resps, f"m{i}")
        if t != expect or fin is None or errs:
            fail(f"request m{i} on a shared stream: {t!r} final {fin} errors {errs}")
    ok("ModelStreamInfer: over the Unix socket; five requests on one stream, each answered")

    # ---- identity: typed contents and raw bytes; every datatype's field ----
    for dt, field, vals, fmt in (("FP32", "fp32_contents", [1.5, 2, 3, 4], "f"),
                                 ("INT64", "int64_contents", [1, -2, 3, 1 << 40], "q"),
                                 ("INT8", "int_contents", [-128, 0, 5, 127], "b"),
                                 ("UINT16", "uint_contents", [0, 1, 65535, 7], "H"),
                                 ("BOOL", "bool_contents", [True, False, True, True], "?"),
                                 ("FP64", "fp64_contents", [0.25, -1, 2, 1e300], "d")):
        q = pb.ModelInferRequest(model_name="ident")
        t = q.inputs.add(name="INPUT0", datatype=dt, shape=[2, 2])
        getattr(t.contents, field).extend(vals)
        r = s.ModelInfer(q, metadata=AUTH)
        o = r.outputs[0]
        got = list(struct.unpack(f"<4{fmt}", r.raw_output_contents[0]))
        if o.name != "OUTPUT0" or o.datatype != dt or list(o.shape) != [2, 2] or got != vals:
            fail(f"identity {dt}: {r}")
    q = pb.ModelInferRequest(model_name="ident")
    q.inputs.add(name="INPUT0", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [b"ab", b"\x00\xffz"])
    q.inputs.add(name="INPUT1", datatype="FP16", shape=[3])
    q.raw_input_contents.extend([raw_text("ab") + struct.pack("<I", 3) + b"\x00\xffz", b""])
    expect_status(lambda: s.ModelInfer(q, metadata=AUTH), grpc.StatusCode.INVALID_ARGUMENT,
                  "raw_input_contents or contents, not both", "raw and contents")
    q.inputs[0].ClearField("contents")
    q.raw_input_contents[1] = struct.pack("<3e", 1, 2, 0.5)
    q.outputs.add(name="OUTPUT1")
    q.outputs.add(name="OUTPUT0")
    r = s.ModelInfer(q, metadata=AUTH)
    if ([o.name for o in r.outputs] != ["OUTPUT1", "OUTPUT0"]
            or struct.unpack("<3e", r.raw_output_contents[0]) != (1, 2, 0.5)
            or r.raw_output_contents[1] != q.raw_input_contents[0]):
        fail(f"identity raw: {r}")
    ok("identity: every contents field and raw bytes (FP16, BYTES) round-trip, outputs in the "
       "order asked")

    # ---- the repository ----
    idx = {m.name: m for m in s.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=AUTH).models}
    if idx[MODEL].state != "READY" or idx["ident"].state != "READY" or idx[MODEL].version != "1":
        fail(f"index: {idx}")
    s.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=MODEL), metadata=AUTH)
    idx = {m.name: m for m in s.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=AUTH).models}
    ready = [m.name for m in s.RepositoryIndex(pb.RepositoryIndexRequest(ready=True),
                                               metadata=AUTH).models]
    if idx[MODEL].state != "UNAVAILABLE" or MODEL in ready or "ident" not in ready:
        fail(f"after unload: {idx} ready {ready}")
    if s.ModelReady(pb.ModelReadyRequest(name=MODEL), metadata=AUTH).ready:
        fail("ModelReady after unload")
    # A request loads it again on the pump (the model is not loaded).
    r = s.ModelInfer(text_request("Once upon a time", max_tokens=n_gen, temperature=0.0),
                     metadata=AUTH)
    if text_of(outputs(r)["text_output"][1]) != expect:
        fail(f"infer after unload: {r}")
    s.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=MODEL), metadata=AUTH)
    s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=MODEL), metadata=AUTH)
    if not s.ModelReady(pb.ModelReadyRequest(name=MODEL), metadata=AUTH).ready:
        fail("not ready after load")
    expect_status(
        lambda: s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nope"),
                                      metadata=AUTH),
        grpc.StatusCode.NOT_FOUND, "model 'nope' is not served here", "load nope")
    lq = pb.RepositoryModelLoadRequest(model_name=MODEL)
    lq.parameters["config"].string_param = "{}"
    expect_status(lambda: s.RepositoryModelLoad(lq, metadata=AUTH),
                  grpc.StatusCode.INVALID_ARGUMENT, "parameters:", "load with config")
    ok("RepositoryIndex (ready filter), RepositoryModelUnload, RepositoryModelLoad; a request "
       "reloads an unloaded model")

    # ---- system shared memory ----
    tag = f"grpcchk-{os.getpid()}"
    m = region(tag, "io", 4096)
    try:
        vals = [1.0, -2.5, 3.25, 4.0]
        struct.pack_into("<4f", m.buf, 0, *vals)
        s.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
            name="io", key=f"/{tag}-io", offset=0, byte_size=4096), metadata=AUTH)
        stt = s.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(), metadata=AUTH)
        rs = stt.regions["io"]
        if rs.key != f"/{tag}-io" or rs.byte_size != 4096 or rs.offset != 0:
            fail(f"status: {stt}")
        expect_status(lambda: s.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
            name="io", key=f"/{tag}-io", offset=0, byte_size=16), metadata=AUTH),
            grpc.StatusCode.ALREADY_EXISTS, "io", "register twice")
        expect_status(lambda: s.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
            name="big", key=f"/{tag}-io", offset=0, byte_size=8192), metadata=AUTH),
            grpc.StatusCode.OUT_OF_RANGE, "", "register beyond the object")

        def shm(params, name, size, offset):
            params["shared_memory_region"].string_param = name
            params["shared_memory_byte_size"].int64_param = size
            params["shared_memory_offset"].int64_param = offset

        q = pb.ModelInferRequest(model_name="ident")
        shm(q.inputs.add(name="INPUT0", datatype="FP32", shape=[4]).parameters, "io", 16, 0)
        shm(q.outputs.add(name="OUTPUT0").parameters, "io", 16, 64)
        r = s.ModelInfer(q, metadata=AUTH)
        if (r.raw_output_contents[0] != b"" or list(struct.unpack_from("<4f", m.buf, 64)) != vals
                or r.outputs[0].parameters["shared_memory_region"].string_param != "io"):
            fail(f"identity through shared memory: {r}")
        # A language model: input_ids from the region, output_ids and logits into it.
        struct.pack_into(f"<{len(prompt_ids)}i", m.buf, 128, *prompt_ids)
        q = pb.ModelInferRequest(model_name=MODEL)
        shm(q.inputs.add(name="input_ids", datatype="INT32", shape=[len(prompt_ids)]).parameters,
            "io", 4 * len(prompt_ids), 128)
        q.parameters["max_tokens"].int64_param = n_gen
        q.parameters["temperature"].double_param = 0
        shm(q.outputs.add(name="output_ids").parameters, "io", 4 * n_gen, 256)
        shm(q.outputs.add(name="logits").parameters, "io", 2048, 512)
        r = s.ModelInfer(q, metadata=AUTH)
        got_ids = list(struct.unpack_from(f"<{n_gen}i", m.buf, 256))
        got_lg = list(struct.unpack_from("<512f", m.buf, 512))
        if got_ids != ids or got_lg != g_logits or list(r.raw_output_contents) != [b"", b""]:
            fail(f"llm through shared memory: ids {got_ids} (want {ids}), logits equal "
                 f"{got_lg == g_logits}")
        # An output region too small: its precise error.
        q.outputs[1].parameters["shared_memory_byte_size"].int64_param = 100
        expect_status(lambda: s.ModelInfer(q, metadata=AUTH), grpc.StatusCode.INVALID_ARGUMENT,
                      "should be at least 2048 bytes", "small output region")
        s.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name="io"),
                                       metadata=AUTH)
        if "io" in s.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(),
                                              metadata=AUTH).regions:
            fail("io still registered")
        expect_status(lambda: s.SystemSharedMemoryUnregister(
            pb.SystemSharedMemoryUnregisterRequest(name="io"), metadata=AUTH),
            grpc.StatusCode.NOT_FOUND, "io", "unregister twice")
        expect_status(lambda: s.ModelInfer(q, metadata=AUTH), grpc.StatusCode.NOT_FOUND, "io",
                      "infer with an unregistered region")
    finally:
        m.close()
        os.unlink("/dev/shm/" + m.name)
    ok("system shared memory: register, status, identity and language model tensors in and "
       "out of a region, unregister; each misuse its error")

    # ---- malformed requests: each its status and message ----
    INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND

    def infer_of(build):
        q = pb.ModelInferRequest(model_name=MODEL)
        build(q)
        return lambda: s.ModelInfer(q, metadata=AUTH)

    def two_raw(q):
        q.inputs.add(name="text_input", datatype="BYTES", shape=[1])
        q.raw_input_contents.extend([raw_text("a"), raw_text("b")])

    def fp32_text(q):
        q.inputs.add(name="text_input", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)

    def bad_param(q):
        two = text_request("Hi")
        q.CopyFrom(two)
        q.parameters["max_tokens"].string_param = "x"

    def short_raw(q):
        q.inputs.add(name="input_ids", datatype="INT32", shape=[4])
        q.raw_input_contents.append(b"\x01\x00\x00\x00")

    def wrong_field(q):
        q.inputs.add(name="input_ids", datatype="INT32", shape=[1]).contents.int64_contents.append(1)

    def count(q):
        q.inputs.add(name="input_ids", datatype="INT32", shape=[3]).contents.int_contents.extend([1, 2])

    def unknown_input(q):
        q.CopyFrom(text_request("Hi"))
        q.inputs.add(name="colour", datatype="INT32", shape=[1])
        q.raw_input_contents.append(b"\x01\x00\x00\x00")

    def bad_utf8(q):
        q.inputs.add(name="text_input", datatype="BYTES", shape=[1])
        q.raw_input_contents.append(struct.pack("<I", 2) + b"\xff\xfe")

    def neg_ids(q):
        q.inputs.add(name="input_ids", datatype="INT32", shape=[1]).contents.int_contents.append(-3)

    def range8(q):
        q.model_name = "ident"
        q.inputs.add(name="INPUT0", datatype="INT8", shape=[1]).contents.int_contents.append(300)

    def fp16_contents(q):
        q.model_name = "ident"
        q.inputs.add(name="INPUT0", datatype="FP16", shape=[1]).contents.fp32_contents.append(1)

    def bad_output(q):
        q.CopyFrom(text_request("Hi"))
        q.outputs.add(name="colour")

    def too_long(q):
        q.CopyFrom(text_request("Hi", max_tokens=-1))

    cases = [
        ("no inputs", infer_of(lambda q: None), INVALID, "inputs must be an array of 1 to 16"),
        ("text_input as FP32", infer_of(fp32_text), INVALID, "expected datatype BYTES"),
        ("raw_input_contents per input", infer_of(two_raw), INVALID, "raw_input_contents has 2"),
        ("a parameter of the wrong type", infer_of(bad_param), INVALID, "max_tokens"),
        ("raw bytes short of the shape", infer_of(short_raw), INVALID, "input_ids"),
        ("elements in another datatype's field", infer_of(wrong_field), INVALID,
         "takes its elements in int_contents"),
        ("contents short of the shape", infer_of(count), INVALID, "its shape holds 3 elements"),
        ("an unknown input", infer_of(unknown_input), INVALID, "unexpected inference input 'colour'"),
        ("text that is not UTF-8", infer_of(bad_utf8), INVALID, "not UTF-8"),
        ("a negative token id", infer_of(neg_ids), INVALID, "is not a token id"),
        ("INT8 out of range", infer_of(range8), grpc.StatusCode.OUT_OF_RANGE, "out of range for INT8"),
        ("FP16 in contents", infer_of(fp16_contents), INVALID, "send them in raw_input_contents"),
        ("an unknown output", infer_of(bad_output), INVALID, "unexpected inference output 'colour'"),
        ("max_tokens -1", infer_of(too_long), INVALID, "max_tokens"),
        ("an unknown model", lambda: s.ModelInfer(pb.ModelInferRequest(model_name="nope"),
                                                  metadata=AUTH), NOT_FOUND, "model 'nope'"),
        ("a version not served", lambda: s.ModelInfer(
            pb.ModelInferRequest(model_name=MODEL, model_version="7"), metadata=AUTH),
         NOT_FOUND, "version '7'"),
    ]
    for what, fn, code, part in cases:
        expect_status(fn, code, part, what)
    # In a stream: the bad request's error comes as a response naming it, and
    # the stream goes on.
    bad = pb.ModelInferRequest(model_name=MODEL, id="bad")
    good = text_request("Once upon a time", "good", max_tokens=n_gen, temperature=0.0)
    resps = stream_all(s, [bad, good])
    errs = [m for m in resps if m.error_message]
    if (len(errs) != 1 or errs[0].infer_response.id != "bad"
            or "inputs must be an array" not in errs[0].error_message
            or errs[0].infer_response.parameters["grpc_code"].int64_param != 3
            or errs[0].infer_response.parameters["error_code"].string_param != "bad_request"
            or pieces(resps, "good")[0] != expect):
        fail(f"stream with a bad request: {resps}")
    # Bytes that are not the call's message: INVALID_ARGUMENT naming it.
    ch = grpc.insecure_channel(ADDR)
    raw = lambda m: ch.unary_unary(f"/inference.GRPCInferenceService/{m}",
                                   request_serializer=bytes, response_deserializer=bytes)
    for method, garbage in (("ModelInfer", b"\xff\xff\xff"), ("ServerMetadata", b"\x0a\x05ab"),
                            ("RepositoryModelLoad", b"\x12\x80"),
                            ("SystemSharedMemoryRegister", b"\x08")):
        req_type = {"ModelInfer": "ModelInferRequest", "ServerMetadata": "ServerMetadataRequest",
                    "RepositoryModelLoad": "RepositoryModelLoadRequest",
                    "SystemSharedMemoryRegister": "SystemSharedMemoryRegisterRequest"}[method]
        expect_status(lambda: raw(method)(garbage, metadata=AUTH), INVALID,
                      f"the message is not a valid inference.{req_type}", f"garbage to {method}")
    st_raw = ch.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                              request_serializer=bytes,
                              response_deserializer=pb.ModelStreamInferResponse.FromString)
    good = text_request("Once upon a time", "after", max_tokens=n_gen, temperature=0.0)
    resps = list(st_raw(iter([b"\xff\xff", good.SerializeToString()]), metadata=AUTH, timeout=60))
    errs = [m for m in resps if m.error_message]
    if (len(errs) != 1 or "not a valid inference.ModelInferRequest" not in errs[0].error_message
            or pieces(resps, "after")[0] != expect):
        fail(f"garbage on a stream: {resps}")
    ch.close()
    # A message beyond the size limit.
    q = text_request("x" * (2 << 20))
    expect_status(lambda: s.ModelInfer(q, metadata=AUTH), grpc.StatusCode.RESOURCE_EXHAUSTED, "",
                  "a message over --max-body")
    r = s.ModelInfer(text_request("Once upon a time", max_tokens=n_gen, temperature=0.0),
                     metadata=AUTH)
    if text_of(outputs(r)["text_output"][1]) != expect:
        fail("the worker does not serve after the malformed requests")
    ok(f"{len(cases) + 7} malformed requests (bytes that are no message among them): each its "
       "status and message (in a stream: an error response, and the stream goes on); the "
       "worker still serves")


# ---------------------------------------------------------------------------


def part_cancel():
    s = client()
    long = dict(max_tokens=1500, ignore_eos=True, temperature=0.0)
    base = status()["models"][0]["requests"].get("cancelled", 0)
    # A stream cancelled mid-generation frees its slot.
    call = s.ModelStreamInfer(iter([text_request("Hello", "long", **long)]), metadata=AUTH)
    first = next(call)
    if first.error_message or first.infer_response.parameters["triton_final_response"].bool_param:
        fail(f"first response: {first}")
    wait_for(lambda st: st["models"][0]["slots_busy"] == 1, "one slot busy")
    call.cancel()
    wait_for(lambda st: st["models"][0]["requests"]["cancelled"] == base + 1
             and st["models"][0]["slots_busy"] == 0, "the stream's request cancelled")
    ok("a cancelled stream's request is cancelled and its slot freed")

    # A unary call cancelled by its client, likewise.
    fut = s.ModelInfer.future(text_request("Hello", **long), metadata=AUTH)
    wait_for(lambda st: st["models"][0]["slots_busy"] == 1, "one slot busy")
    fut.cancel()
    wait_for(lambda st: st["models"][0]["requests"]["cancelled"] == base + 2
             and st["models"][0]["slots_busy"] == 0, "the call's request cancelled")
    ok("a cancelled ModelInfer's request is cancelled and its slot freed")

    # One slot, a queue of one: the third request is RESOURCE_EXHAUSTED at once.
    a = s.ModelInfer.future(text_request("Hello", **long), metadata=AUTH)
    wait_for(lambda st: st["models"][0]["slots_busy"] == 1, "one slot busy")
    b = s.ModelInfer.future(text_request("Hello", **long), metadata=AUTH)
    wait_for(lambda st: st["models"][0]["queue_depth"] == 1, "one queued")
    expect_status(lambda: s.ModelInfer(text_request("Hello", max_tokens=2), metadata=AUTH),
                  grpc.StatusCode.RESOURCE_EXHAUSTED, "queue", "a full queue")
    resps = stream_all(s, [text_request("Hello", "q3", max_tokens=2)])
    if (len(resps) != 1 or resps[0].infer_response.parameters["error_code"].string_param
            != "overloaded" or resps[0].infer_response.parameters["grpc_code"].int64_param != 8):
        fail(f"a full queue on a stream: {resps}")
    a.cancel()
    b.cancel()
    wait_for(lambda st: st["models"][0]["slots_busy"] == 0 and st["models"][0]["queue_depth"] == 0,
             "the slot and the queue empty")
    ok("a full queue: RESOURCE_EXHAUSTED (unary), an 'overloaded' error response (stream)")

    # The call's deadline ends the request on the server too.
    expect_status(lambda: s.ModelInfer(text_request("Hello", **long), timeout=0.5, metadata=AUTH),
                  grpc.StatusCode.DEADLINE_EXCEEDED, "", "a deadline")
    wait_for(lambda st: st["models"][0]["slots_busy"] == 0, "the slot free after the deadline")
    # A server-side deadline (timeout_ms) is DEADLINE_EXCEEDED too, with inferd's message.
    expect_status(lambda: s.ModelInfer(text_request("Hello", timeout_ms=300, **long),
                                       metadata=AUTH),
                  grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", "timeout_ms")
    ok("deadlines: the client's, and timeout_ms, are DEADLINE_EXCEEDED and free the slot")


def part_drain_start():
    """A stream that runs while the worker drains: print its first token,
    then (after the SIGTERM) its whole text."""
    s = client()
    q = text_request("Hello", "d", max_tokens=400, ignore_eos=True, temperature=0.0)
    call = s.ModelStreamInfer(iter([q]), metadata=AUTH)
    got = [next(call)]
    print("first", flush=True)
    open(os.environ["DRAIN_FLAG"], "w").close()
    # Wait for the driver to send SIGTERM, then try a new request.
    while not os.path.exists(os.environ["DRAIN_SENT"]):
        time.sleep(0.02)
    time.sleep(0.2)
    expect_status(lambda: s.ModelInfer(text_request("Hello", max_tokens=2), metadata=AUTH),
                  grpc.StatusCode.UNAVAILABLE, "", "a new request while draining")
    got.extend(call)
    t, _, fin, errs, n = pieces(got, "d")
    if errs or fin is None or n != 400:
        fail(f"the running stream while draining: {n} tokens, final {fin}, errors {errs}")
    ok("draining: the running stream finishes (400 tokens), a new request is UNAVAILABLE")


def part_storm():
    n = int(os.environ.get("STREAMS", "1000"))
    pid = int(os.environ["SERVE_PID"])
    peak = [0]
    stop = threading.Event()

    def threads():
        while not stop.is_set():
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Threads:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            time.sleep(0.01)

    watcher = threading.Thread(target=threads)
    watcher.start()
    counts = {"answered": 0, "overloaded": 0, "calls": 0}
    expect = os.environ["EXPECT_TEXT"]

    async def one(ch, i):
        st = pbg.GRPCInferenceServiceStub(ch)
        q = text_request("Once upon a time", f"r{i}", max_tokens=int(os.environ["EXPECT_N"]),
                         temperature=0.0)
        text, final = [], None
        try:
            call = st.ModelStreamInfer(metadata=AUTH, timeout=300)
            await call.write(q)
            await call.done_writing()
            async for m in call:
                if m.error_message:
                    if m.infer_response.parameters["error_code"].string_param != "overloaded":
                        fail(f"stream {i}: {m}")
                    counts["overloaded"] += 1
                    return
                r = m.infer_response
                if r.raw_output_contents:
                    text.append(text_of(r.raw_output_contents[0]))
                if r.parameters["triton_final_response"].bool_param:
                    final = r
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or "too many calls" not in e.details():
                fail(f"stream {i}: {e.code()} {e.details()}")
            counts["calls"] += 1
            return
        if final is None or "".join(text) != expect:
            fail(f"stream {i}: text {''.join(text)!r}, final {final}")
        counts["answered"] += 1

    async def main():
        # Several connections, as many clients would open.
        chans = [grpc.aio.insecure_channel(ADDR) for _ in range(8)]
        await asyncio.gather(*(one(chans[i % 8], i) for i in range(n)))
        for c in chans:
            await c.close()

    t0 = time.time()
    asyncio.run(main())
    stop.set()
    watcher.join()
    total = counts["answered"] + counts["overloaded"] + counts["calls"]
    if total != n or counts["answered"] == 0:
        fail(f"{n} streams: {counts}")
    limit = int(os.environ.get("THREADS_MAX", "64"))
    if peak[0] > limit:
        fail(f"the worker ran {peak[0]} threads during the storm (bound {limit})")
    st = wait_for(lambda st: st["models"][0]["slots_busy"] == 0
                  and st["models"][0]["queue_depth"] == 0, "idle after the storm")
    r = client().ModelInfer(text_request("Once upon a time", max_tokens=int(os.environ["EXPECT_N"]),
                                       temperature=0.0), metadata=AUTH)
    if text_of(outputs(r)["text_output"][1]) != expect:
        fail("the worker does not serve after the storm")
    ok(f"{n} concurrent streams in {time.time() - t0:.1f} s: {counts['answered']} answered, "
       f"{counts['overloaded']} refused 'overloaded', {counts['calls']} refused 'too many "
       f"calls'; at most {peak[0]} worker threads; idle and serving afterwards")
    del st


PARTS = {"basic": part_basic, "cancel": part_cancel, "drain": part_drain_start,
         "storm": part_storm}

if __name__ == "__main__":
    PARTS[sys.argv[1]]()
