// Drives inferd's KServe v2 gRPC door (`inferd serve --grpc-port N`) with the
// official Node gRPC client, @grpc/grpc-js, and @grpc/proto-loader reading
// proto/grpc_service.proto at run time; checks what the client sees: health,
// metadata, API keys, unary and streamed inference, the identity model, the
// model repository, system shared memory and malformed requests.
//
// Environment:
//   INFERD_GRPC      host:port of the gRPC door, e.g. 127.0.0.1:50051 (required)
//   INFERD_MODEL     the LLM's model id (required), e.g. stories260K
//   INFERD_IDENTITY  an identity model's id (served with -m identity:NAME); default "ident"
//   INFERD_API_KEY   the server's --api-key (required: the auth checks need one)
//   INFERD_PROTO     the proto file; default ../../proto/grpc_service.proto from this script
//   EXPECT_TEXT      the greedy 16-token completion of PROMPT (required)
//   PROMPT           the prompt; default "Once upon a time"
//   LOGITS_VOCAB     the vocabulary size in the logits output's shape; default 512
//
// Output: one "ok - name" / "not ok - name: details" line per check, then one
// JSON summary line. Exit status 0 when every check passed, 1 otherwise, 2 on
// bad usage.

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { CheckFailure, assert, assertEq, checks, show } from './checks.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

const ADDR = process.env.INFERD_GRPC;
const MODEL = process.env.INFERD_MODEL;
const IDENT = process.env.INFERD_IDENTITY || 'ident';
const API_KEY = process.env.INFERD_API_KEY;
const PROTO = process.env.INFERD_PROTO || path.join(here, '..', '..', 'proto', 'grpc_service.proto');
const EXPECT_TEXT = process.env.EXPECT_TEXT;
const PROMPT = process.env.PROMPT ?? 'Once upon a time';
const LOGITS_VOCAB = Number(process.env.LOGITS_VOCAB || 512);

// Hang guards, not performance limits: the tiny test model answers in well
// under a second, so these only fire on a stuck server.
const REQUEST_TIMEOUT_MS = 60_000;
const CHECK_WATCHDOG_MS = 180_000;
const MAX_TOKENS = 16;

if (!ADDR || !MODEL || !API_KEY || EXPECT_TEXT === undefined) {
  console.error('usage: INFERD_GRPC=127.0.0.1:PORT INFERD_MODEL=<id> INFERD_API_KEY=<key> ' +
    'EXPECT_TEXT=<greedy text> node grpc_check.mjs');
  process.exit(2);
}

const Status = grpc.status;
const STATUS_NAME = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k]));

// ---------------------------------------------------------------- harness

const { check, finish, describeError } = checks({
  watchdogMs: CHECK_WATCHDOG_MS,
  describe: (e) =>
    e && typeof e.code === 'number' && 'details' in e
      ? `gRPC error ${STATUS_NAME[e.code] ?? e.code} (${e.code}): ${e.details}`
      : null,
});

// ---------------------------------------------------------------- client

const pkgDef = protoLoader.loadSync(PROTO, {
  keepCase: true, // the proto's field names (raw_input_contents, not rawInputContents)
  longs: Number, // int64/uint64 as numbers: the values here are small
  enums: String,
  defaults: true,
  oneofs: true, // InferParameter's parameter_choice names the field that is set
});
const inference = grpc.loadPackageDefinition(pkgDef).inference;
const client = new inference.GRPCInferenceService(ADDR, grpc.credentials.createInsecure(), {
  'grpc.max_receive_message_length': 64 << 20,
});

function keyMd(key = API_KEY) {
  const md = new grpc.Metadata();
  if (key !== null) md.set('authorization', `Bearer ${key}`);
  return md;
}

// Unary call METHOD(REQ) with metadata MD (default: the right key); resolves
// with the response, rejects with the grpc-js error (code, details).
function call(method, req, md = keyMd()) {
  return new Promise((resolve, reject) => {
    client[method](req, md, { deadline: Date.now() + REQUEST_TIMEOUT_MS }, (err, res) =>
      (err ? reject(err) : resolve(res)));
  });
}

// The call must fail with CODE, its message holding SUBSTR (when given).
async function expectStatus(method, req, code, substr, md = keyMd()) {
  let res;
  try {
    res = await call(method, req, md);
  } catch (e) {
    assert(typeof e.code === 'number', `${method}: not a gRPC error: ${describeError(e)}`);
    assert(e.code === code,
      `${method}: status ${STATUS_NAME[e.code] ?? e.code} (${e.code}), want ${STATUS_NAME[code]} ` +
      `(${code}); message: ${show(e.details)}`);
    if (substr !== undefined)
      assert(String(e.details).includes(substr),
        `${method}: message ${show(e.details)} lacks ${show(substr)}`);
    return e;
  }
  throw new CheckFailure(`${method}: succeeded, want ${STATUS_NAME[code]} (${code}): ${show(res)}`);
}

// A bidirectional ModelStreamInfer call: write() requests, waitFor() a
// response matching a predicate, end() the writes, done() for the status.
class Stream {
  constructor(md = keyMd()) {
    this.responses = [];
    this.waiters = [];
    this.status = null;
    this.error = null;
    this.call = client.ModelStreamInfer(md, { deadline: Date.now() + CHECK_WATCHDOG_MS });
    this.call.on('data', (r) => {
      this.responses.push(r);
      this.wake();
    });
    // 'error' comes with a failed status, 'end' when the server closes the
    // read side; 'status' always comes last.
    this.call.on('error', (e) => {
      this.error = e;
      this.ended = true;
      this.wake();
    });
    this.call.on('end', () => {
      this.ended = true;
      this.wake();
    });
    this.finished = new Promise((resolve) => {
      this.call.on('status', (st) => {
        this.status = st;
        this.ended = true;
        this.wake();
        resolve();
      });
    });
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  write(req) {
    this.call.write(req);
  }

  end() {
    this.call.end();
  }

  // Resolves with the first response PRED accepts.
  waitFor(pred, what) {
    return new Promise((resolve, reject) => {
      let timer;
      const w = () => {
        const r = this.responses.find(pred);
        if (r || this.error || this.ended) {
          clearTimeout(timer);
          this.waiters = this.waiters.filter((x) => x !== w);
          if (r) resolve(r);
          else reject(new CheckFailure(`stream ended before ${what}: ` +
            `${this.error ? describeError(this.error) : 'no error'}; got ${show(this.responses)}`));
        }
      };
      timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new CheckFailure(`no ${what} within ${REQUEST_TIMEOUT_MS} ms; got ${show(this.responses)}`));
      }, REQUEST_TIMEOUT_MS);
      this.waiters.push(w);
      w();
    });
  }

  // Resolves with every response once the server ends the stream cleanly.
  async done() {
    let timer;
    const t = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new CheckFailure(
        `stream not ended within ${REQUEST_TIMEOUT_MS} ms; got ${show(this.responses)}`)),
      REQUEST_TIMEOUT_MS);
    });
    try {
      await Promise.race([this.finished, t]);
    } finally {
      clearTimeout(timer);
    }
    if (this.error) throw this.error;
    if (this.status.code !== Status.OK)
      throw new CheckFailure(`stream status ${STATUS_NAME[this.status.code]}: ${this.status.details}`);
    return this.responses;
  }
}

// ---------------------------------------------------------------- helpers

// A BYTES element: 4-byte little-endian length, then its bytes.
function bytesElement(s) {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(b.length);
  return Buffer.concat([len, b]);
}

// The one BYTES element in B (a text_output's raw contents).
function decodeBytesElement(b, what) {
  assert(Buffer.isBuffer(b), `${what}: not bytes: ${show(b)}`);
  assert(b.length >= 4, `${what}: ${b.length} bytes, want at least the 4-byte length`);
  const n = b.readUInt32LE(0);
  assertEq(b.length, 4 + n, `${what}: byte count (4 + the length prefix ${n})`);
  return b.subarray(4).toString('utf8');
}

function fp32Bytes(values) {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeFloatLE(v, 4 * i));
  return b;
}

// The value of an InferParameter (undefined when none is set).
function param(params, key) {
  const p = params?.[key];
  if (!p) return undefined;
  return { kind: p.parameter_choice, value: p[p.parameter_choice] };
}

function paramIs(params, key, kind, what) {
  const p = param(params, key);
  assert(p !== undefined, `${what}: parameter ${key} missing; parameters ${show(params)}`);
  assertEq(p.kind, kind, `${what}: parameter ${key}'s kind`);
  return p.value;
}

function textRequest(extra = {}) {
  return {
    model_name: MODEL,
    inputs: [{ name: 'text_input', datatype: 'BYTES', shape: [1] }],
    raw_input_contents: [bytesElement(PROMPT)],
    parameters: { max_tokens: { int64_param: MAX_TOKENS }, temperature: { double_param: 0 } },
    ...extra,
  };
}

// A ModelInferResponse of the LLM: its text_output's text.
function inferText(r, what) {
  assert(Array.isArray(r.outputs) && r.outputs.length >= 1, `${what}: no outputs: ${show(r)}`);
  assertEq(r.outputs[0].name, 'text_output', `${what}: outputs[0].name`);
  assert(Array.isArray(r.raw_output_contents) && r.raw_output_contents.length === r.outputs.length,
    `${what}: ${r.raw_output_contents?.length} raw_output_contents for ${r.outputs.length} outputs`);
  return decodeBytesElement(r.raw_output_contents[0], `${what}: text_output`);
}

// The pieces, and the final response, of request ID among stream responses.
function streamRun(responses, id) {
  const mine = responses.filter((m) => m.infer_response?.id === id);
  assert(mine.length > 0, `no responses with id ${show(id)}`);
  const final = (m) => param(m.infer_response.parameters, 'triton_final_response');
  mine.forEach((m, i) => {
    assertEq(m.error_message, '', `request ${id}: response ${i} error_message`);
    const f = final(m);
    assert(f && f.kind === 'bool_param',
      `request ${id}: response ${i} lacks triton_final_response (bool): ${show(m.infer_response.parameters)}`);
    assertEq(f.value, i === mine.length - 1,
      `request ${id}: response ${i} of ${mine.length} triton_final_response`);
  });
  const pieces = mine.slice(0, -1).map((m, i) => {
    const r = m.infer_response;
    const k = r.outputs.findIndex((o) => o.name === 'text_output');
    assert(k >= 0, `request ${id}: token response ${i} has no text_output: ${show(r.outputs)}`);
    return decodeBytesElement(r.raw_output_contents[k], `request ${id}: token response ${i} text_output`);
  });
  return { pieces, final: mine[mine.length - 1].infer_response };
}

async function stillServes(what = 'after the checks') {
  const r = await call('ModelInfer', textRequest({ parameters: { max_tokens: { int64_param: 2 } } }));
  const text = inferText(r, what);
  assert(typeof text === 'string', `${what}: no text`);
}

// ---------------------------------------------------------------- health

await check('ServerLive without a key: live', async () => {
  assertEq((await call('ServerLive', {}, keyMd(null))).live, true, 'live');
});

await check('ServerReady without a key: ready', async () => {
  assertEq((await call('ServerReady', {}, keyMd(null))).ready, true, 'ready');
});

await check(`ModelReady ${MODEL} and ${IDENT}: ready`, async () => {
  assertEq((await call('ModelReady', { name: MODEL })).ready, true, `${MODEL} ready`);
  assertEq((await call('ModelReady', { name: IDENT })).ready, true, `${IDENT} ready`);
});

await check('ModelReady nope: NOT_FOUND naming it', async () => {
  await expectStatus('ModelReady', { name: 'nope' }, Status.NOT_FOUND, 'nope');
});

// ---------------------------------------------------------------- auth

await check('ServerMetadata without a key: UNAUTHENTICATED', async () => {
  await expectStatus('ServerMetadata', {}, Status.UNAUTHENTICATED, 'API key', keyMd(null));
});

await check('ServerMetadata with a wrong key: UNAUTHENTICATED', async () => {
  await expectStatus('ServerMetadata', {}, Status.UNAUTHENTICATED, 'API key', keyMd('wrong-key'));
});

// ---------------------------------------------------------------- metadata

await check('ServerMetadata: name inferd, extension model_repository', async () => {
  const r = await call('ServerMetadata', {});
  assertEq(r.name, 'inferd', 'name');
  assert(typeof r.version === 'string' && r.version.length > 0, `version ${show(r.version)} empty`);
  assert(r.extensions.includes('model_repository'),
    `extensions ${show(r.extensions)} lack model_repository`);
});

await check(`ModelMetadata ${MODEL}: its inputs and outputs`, async () => {
  const r = await call('ModelMetadata', { name: MODEL });
  assertEq(r.name, MODEL, 'name');
  const byName = (list) => Object.fromEntries(list.map((t) => [t.name, t]));
  const ins = byName(r.inputs);
  const outs = byName(r.outputs);
  assert(ins.text_input, `no input text_input: ${show(r.inputs)}`);
  assertEq(ins.text_input.datatype, 'BYTES', 'text_input datatype');
  assert(ins.input_ids, `no input input_ids: ${show(r.inputs)}`);
  assertEq(ins.input_ids.datatype, 'INT32', 'input_ids datatype');
  for (const name of ['text_output', 'output_ids', 'logits', 'hidden'])
    assert(outs[name], `no output ${name}: ${show(r.outputs)}`);
  assertEq(outs.logits.datatype, 'FP32', 'logits datatype');
  assertEq(outs.logits.shape, [-1, LOGITS_VOCAB], 'logits shape');
});

// ---------------------------------------------------------------- inference

await check(`ModelInfer ${MODEL}: greedy text, finish_reason and token counts`, async () => {
  const r = await call('ModelInfer', textRequest());
  assertEq(r.model_name, MODEL, 'model_name');
  assertEq(inferText(r, 'ModelInfer'), EXPECT_TEXT, 'text_output');
  const p = r.parameters;
  const fr = paramIs(p, 'finish_reason', 'string_param', 'response');
  assert(fr.length > 0, 'finish_reason empty');
  assertEq(paramIs(p, 'completion_tokens', 'int64_param', 'response'), MAX_TOKENS, 'completion_tokens');
  const pt = paramIs(p, 'prompt_tokens', 'int64_param', 'response');
  assert(Number.isInteger(pt) && pt > 0, `prompt_tokens ${show(pt)} not a positive integer`);
  const seed = param(p, 'seed');
  assert(seed && ['int64_param', 'uint64_param'].includes(seed.kind),
    `seed missing or not an integer parameter: ${show(p.seed)}`);
});

await check('ModelInfer: sampling as input tensors gives the same text', async () => {
  const r = await call('ModelInfer', {
    model_name: MODEL,
    inputs: [
      { name: 'text_input', datatype: 'BYTES', shape: [1],
        contents: { bytes_contents: [Buffer.from(PROMPT, 'utf8')] } },
      { name: 'max_tokens', datatype: 'INT32', shape: [1], contents: { int_contents: [MAX_TOKENS] } },
      { name: 'temperature', datatype: 'FP32', shape: [1], contents: { fp32_contents: [0] } },
    ],
  });
  assertEq(inferText(r, 'ModelInfer'), EXPECT_TEXT, 'text_output');
  assertEq(paramIs(r.parameters, 'completion_tokens', 'int64_param', 'response'), MAX_TOKENS,
    'completion_tokens');
});

await check('ModelStreamInfer: one response per token, then a final one', async () => {
  const s = new Stream();
  s.write(textRequest({ id: 's1' }));
  s.end();
  const all = await s.done();
  all.forEach((m, i) => assertEq(m.infer_response?.id, 's1', `response ${i} infer_response.id`));
  const { pieces, final } = streamRun(all, 's1');
  assertEq(pieces.length, MAX_TOKENS, 'non-final responses');
  assertEq(pieces.join(''), EXPECT_TEXT, 'concatenated text_output pieces');
  const fr = paramIs(final.parameters, 'finish_reason', 'string_param', 'final response');
  assert(fr.length > 0, 'finish_reason empty');
});

await check('ModelStreamInfer: two requests on one stream are both answered', async () => {
  const s = new Stream();
  s.write(textRequest({ id: 'a' }));
  s.write(textRequest({ id: 'b' }));
  s.end();
  const all = await s.done();
  const ids = new Set(all.map((m) => m.infer_response?.id));
  assertEq([...ids].sort(), ['a', 'b'], 'response ids');
  for (const id of ['a', 'b']) {
    const { pieces } = streamRun(all, id);
    assertEq(pieces.join(''), EXPECT_TEXT, `request ${id}: concatenated text`);
  }
});

// ---------------------------------------------------------------- identity

const FOUR = [1, 2, 3, 4];

function checkIdentity(r, what) {
  assertEq(r.model_name, IDENT, `${what}: model_name`);
  assertEq(r.outputs.length, 1, `${what}: outputs`);
  assertEq(r.outputs[0].name, 'OUTPUT0', `${what}: output name`);
  assertEq(r.outputs[0].datatype, 'FP32', `${what}: output datatype`);
  assertEq(r.outputs[0].shape, [2, 2], `${what}: output shape`);
  assertEq(r.raw_output_contents.length, 1, `${what}: raw_output_contents entries`);
  assertEq([...r.raw_output_contents[0]], [...fp32Bytes(FOUR)], `${what}: OUTPUT0 bytes`);
}

await check(`ModelInfer ${IDENT}: FP32 [2,2] in contents comes back`, async () => {
  const r = await call('ModelInfer', {
    model_name: IDENT,
    inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [2, 2], contents: { fp32_contents: FOUR } }],
  });
  checkIdentity(r, 'contents');
});

await check(`ModelInfer ${IDENT}: FP32 [2,2] in raw_input_contents comes back`, async () => {
  const r = await call('ModelInfer', {
    model_name: IDENT,
    inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [2, 2] }],
    raw_input_contents: [fp32Bytes(FOUR)],
  });
  checkIdentity(r, 'raw_input_contents');
});

// ---------------------------------------------------------------- repository

function stateOf(index, name) {
  const m = index.models.find((x) => x.name === name);
  return m?.state;
}

await check(`RepositoryIndex, unload and load ${MODEL}`, async () => {
  let idx = await call('RepositoryIndex', {});
  assertEq(stateOf(idx, MODEL), 'READY', `${MODEL} state (index ${show(idx.models)})`);
  assert(idx.models.some((m) => m.name === IDENT), `index lacks ${IDENT}: ${show(idx.models)}`);

  await call('RepositoryModelUnload', { model_name: MODEL });
  idx = await call('RepositoryIndex', {});
  assertEq(stateOf(idx, MODEL), 'UNAVAILABLE', `${MODEL} state after unload (index ${show(idx.models)})`);
  assertEq((await call('ModelReady', { name: MODEL })).ready, false, 'ModelReady after unload');

  await call('RepositoryModelLoad', { model_name: MODEL });
  idx = await call('RepositoryIndex', {});
  assertEq(stateOf(idx, MODEL), 'READY', `${MODEL} state after load (index ${show(idx.models)})`);

  const r = await call('ModelInfer', textRequest());
  assertEq(inferText(r, 'ModelInfer after reload'), EXPECT_TEXT, 'text after reload');
});

// ---------------------------------------------------------------- shared memory

await check('system shared memory: register, infer in and out of a region, unregister', async () => {
  const name = `inferd-node-${process.pid}`;
  const file = `/dev/shm/${name}`;
  const key = `/${name}`;
  const input = fp32Bytes(FOUR);
  const buf = Buffer.alloc(64);
  input.copy(buf, 0);
  fs.writeFileSync(file, buf);
  try {
    await call('SystemSharedMemoryRegister', { name: 'r1', key, offset: 0, byte_size: 64 });
    let st = await call('SystemSharedMemoryStatus', {});
    const r1 = st.regions?.r1;
    assert(r1, `status lacks r1: ${show(st)}`);
    assertEq(r1.name, 'r1', 'r1 name');
    assertEq(r1.key, key, 'r1 key');
    assertEq(r1.byte_size, 64, 'r1 byte_size');

    const shm = (offset) => ({
      shared_memory_region: { string_param: 'r1' },
      shared_memory_byte_size: { int64_param: 16 },
      shared_memory_offset: { int64_param: offset },
    });
    const r = await call('ModelInfer', {
      model_name: IDENT,
      inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [2, 2], parameters: shm(0) }],
      outputs: [{ name: 'OUTPUT0', parameters: shm(32) }],
    });
    const k = r.outputs.findIndex((o) => o.name === 'OUTPUT0');
    assert(k >= 0, `no OUTPUT0 in ${show(r.outputs)}`);
    assertEq(r.raw_output_contents.length, r.outputs.length, 'raw_output_contents entries');
    assertEq(r.raw_output_contents[k].length, 0, 'OUTPUT0 raw_output_contents length (in the region)');
    const after = fs.readFileSync(file);
    assertEq([...after.subarray(32, 48)], [...input], 'region bytes 32..48');

    await call('SystemSharedMemoryUnregister', { name: 'r1' });
    st = await call('SystemSharedMemoryStatus', {});
    assert(!st.regions?.r1, `status still lists r1: ${show(st)}`);
  } finally {
    try {
      await call('SystemSharedMemoryUnregister', { name: 'r1' });
    } catch { /* gone already */ }
    fs.rmSync(file, { force: true });
  }
});

// ---------------------------------------------------------------- malformed

await check('ModelInfer without inputs: INVALID_ARGUMENT', async () => {
  await expectStatus('ModelInfer', { model_name: MODEL }, Status.INVALID_ARGUMENT, 'inputs');
});

await check('ModelInfer text_input as FP32: INVALID_ARGUMENT', async () => {
  await expectStatus('ModelInfer', {
    model_name: MODEL,
    inputs: [{ name: 'text_input', datatype: 'FP32', shape: [1], contents: { fp32_contents: [1] } }],
  }, Status.INVALID_ARGUMENT, 'text_input');
});

await check('ModelInfer raw_input_contents count off: INVALID_ARGUMENT', async () => {
  await expectStatus('ModelInfer', textRequest({
    raw_input_contents: [bytesElement(PROMPT), bytesElement(PROMPT)],
  }), Status.INVALID_ARGUMENT, 'raw_input_contents');
});

await check('ModelInfer max_tokens as a string: INVALID_ARGUMENT', async () => {
  await expectStatus('ModelInfer', textRequest({ parameters: { max_tokens: { string_param: 'x' } } }),
    Status.INVALID_ARGUMENT, 'max_tokens');
});

await check('ModelInfer unknown model: NOT_FOUND', async () => {
  await expectStatus('ModelInfer', textRequest({ model_name: 'nope' }), Status.NOT_FOUND, 'nope');
});

await check('ModelInfer model_version 7: NOT_FOUND', async () => {
  await expectStatus('ModelInfer', textRequest({ model_version: '7' }), Status.NOT_FOUND, 'version');
});

await check('ModelStreamInfer: a bad request gets an error response, the stream goes on', async () => {
  const s = new Stream();
  s.write({
    model_name: MODEL,
    id: 'bad',
    inputs: [{ name: 'text_input', datatype: 'FP32', shape: [1], contents: { fp32_contents: [1] } }],
  });
  const bad = await s.waitFor((m) => m.infer_response?.id === 'bad', 'the bad request\'s response');
  assert(bad.error_message.length > 0, `error_message empty: ${show(bad)}`);
  assertEq(param(bad.infer_response.parameters, 'triton_final_response')?.value, true,
    'the error response\'s triton_final_response');
  s.write(textRequest({ id: 'good' }));
  await s.waitFor((m) => m.infer_response?.id === 'good' &&
    param(m.infer_response.parameters, 'triton_final_response')?.value === true,
  'the good request\'s final response');
  s.end();
  const all = await s.done();
  assertEq(all.filter((m) => m.infer_response?.id === 'bad').length, 1, 'responses to the bad request');
  const { pieces } = streamRun(all, 'good');
  assertEq(pieces.join(''), EXPECT_TEXT, 'the good request\'s text');
});

await check('ModelInfer still answers after the malformed requests', async () => {
  await stillServes();
});

// ---------------------------------------------------------------- summary

client.close();
finish({
  grpc_js: require('@grpc/grpc-js/package.json').version,
  proto_loader: require('@grpc/proto-loader/package.json').version,
});
