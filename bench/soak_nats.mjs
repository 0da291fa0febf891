// The NATS side of bench/soak.sh, driven by bench/soak.py: CONCURRENCY
// loops send a mix of good, malformed and abandoned requests to an
// `inferd serve --nats` worker for SECONDS, and print one JSON line per
// finished request on stdout:
//   {"k": KIND, "ok": true|false, "ms": LATENCY, "err": "why (when not ok)"}
// soak.py counts them and takes the latency of the good kinds.
//
// Uses the official `nats` npm client pinned by tests/node (run
// scripts/install-deps.sh). Environment: NATS_URL, WORKER_ID, MODEL_ID,
// MAX_BODY (the worker's --max-body), SECONDS, CONCURRENCY, THINK_MS.
//
// Kinds (what counts as expected):
//   nats_good_queue   on inference.{model}: done on response.{rid}, one token
//                     event per token, indices 0..n-1, totalTokens = n
//   nats_good_worker  the same on worker.{id}.inference, with a reply inbox
//                     that must get the same done event
//   nats_good_chat    messages instead of prompt, on inference.{model}
//   nats_bad_json     not JSON, reply inbox: error bad_request, requestId null
//   nats_bad_field    maxTokens a string: error bad_request, param maxTokens,
//                     on response.{rid}
//   nats_oversize     over --max-body, reply inbox: error bad_request "too large"
//   nats_unread       a good request whose response.{rid} and reply inbox
//                     nobody reads (nothing to check: the worker must cope)
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'tests', 'node', 'package.json'));
const { connect, createInbox, StringCodec } = require('nats');

const sc = StringCodec();
const env = (k, d) => (process.env[k] === undefined || process.env[k] === '' ? d : process.env[k]);
const NATS_URL = env('NATS_URL');
const WORKER_ID = env('WORKER_ID');
const MODEL_ID = env('MODEL_ID', 'stories260K');
const MAX_BODY = Number(env('MAX_BODY', '65536'));
const SECONDS = Number(env('SECONDS', '60'));
const CONCURRENCY = Number(env('CONCURRENCY', '2'));
const THINK_MS = Number(env('THINK_MS', '5'));
const TIMEOUT_MS = 30_000;
if (!NATS_URL || !WORKER_ID) {
  console.error('soak_nats: NATS_URL and WORKER_ID are required');
  process.exit(2);
}
const modelSubject = `inference.${MODEL_ID.replace(/[^A-Za-z0-9_-]/g, '_')}`;
const workerSubject = `worker.${WORKER_ID}.inference`;

const WEIGHTS = [
  ['nats_good_queue', 35],
  ['nats_good_worker', 20],
  ['nats_good_chat', 10],
  ['nats_bad_json', 9],
  ['nats_bad_field', 9],
  ['nats_oversize', 5],
  ['nats_unread', 12],
];
const TOTAL_WEIGHT = WEIGHTS.reduce((a, [, w]) => a + w, 0);
function pick() {
  let r = Math.random() * TOTAL_WEIGHT;
  for (const [k, w] of WEIGHTS) {
    if ((r -= w) < 0) return k;
  }
  return WEIGHTS[0][0];
}

let seq = 0;
const rid = () => `soak-${process.pid}-${++seq}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const emit = (k, ok, ms, err) =>
  process.stdout.write(JSON.stringify(ok ? { k, ok, ms } : { k, ok, ms, err }) + '\n');

function decode(m) {
  try {
    return JSON.parse(sc.decode(m.data));
  } catch {
    return { _raw: sc.decode(m.data) };
  }
}

// Collect the events on SUBJECT until an end (done/error) or the timeout.
function collect(nc, subject) {
  const events = [];
  let resolve;
  const ended = new Promise((r) => (resolve = r));
  const sub = nc.subscribe(subject, {
    callback: (err, m) => {
      if (err) return;
      if (m.headers && m.data.length === 0) {
        events.push({ type: 'status', code: m.headers.code });
        resolve();
        return;
      }
      const ev = decode(m);
      events.push(ev);
      if (ev.type === 'done' || ev.type === 'error') resolve();
    },
  });
  const timer = setTimeout(resolve, TIMEOUT_MS);
  return {
    events,
    done: ended.then(() => {
      clearTimeout(timer);
      sub.unsubscribe();
      return events;
    }),
  };
}

// Why a finished good stream is wrong, or null.
function checkGood(events, id) {
  const end = events[events.length - 1];
  if (!end || (end.type !== 'done' && end.type !== 'error')) return `no end event in ${TIMEOUT_MS} ms`;
  if (end.type === 'error') return `error ${end.code}: ${end.error}`;
  const tokens = events.filter((e) => e.type === 'token');
  if (!tokens.every((e, i) => e.index === i && e.requestId === id)) return 'token indices/requestIds wrong';
  if (end.totalTokens !== tokens.length) return `totalTokens ${end.totalTokens}, ${tokens.length} token events`;
  if (events.filter((e) => e.type === 'done' || e.type === 'error').length !== 1) return 'more than one end';
  if (typeof end.text !== 'string') return 'done without text';
  return null;
}

function checkError(events, code, { rid: wantRid, param, contains }) {
  const end = events[events.length - 1];
  if (!end) return `no event in ${TIMEOUT_MS} ms`;
  if (end.type !== 'error') return `expected error ${code}, got ${JSON.stringify(end).slice(0, 200)}`;
  if (end.code !== code) return `expected code ${code}, got ${end.code}: ${end.error}`;
  if (wantRid !== undefined && end.requestId !== wantRid) return `requestId ${end.requestId}, expected ${wantRid}`;
  if (param !== undefined && end.param !== param) return `param ${end.param}, expected ${param}`;
  if (contains && !(typeof end.error === 'string' && end.error.includes(contains)))
    return `message '${end.error}' lacks '${contains}'`;
  return null;
}

async function one(nc, kind) {
  const id = rid();
  const maxTokens = 8 + Math.floor(Math.random() * 40);
  const body = { requestId: id, modelId: MODEL_ID, prompt: 'Once upon a time', maxTokens, temperature: 0 };
  const t0 = performance.now();
  const ms = () => performance.now() - t0;
  switch (kind) {
    case 'nats_good_queue':
    case 'nats_good_chat': {
      if (kind === 'nats_good_chat') {
        delete body.prompt;
        body.messages = [{ role: 'user', content: 'Tell me a story' }];
      }
      const c = collect(nc, `response.${id}`);
      nc.publish(modelSubject, sc.encode(JSON.stringify(body)));
      const why = checkGood(await c.done, id);
      return emit(kind, !why, ms(), why);
    }
    case 'nats_good_worker': {
      const inbox = createInbox();
      const c = collect(nc, `response.${id}`);
      const r = collect(nc, inbox);
      nc.publish(workerSubject, sc.encode(JSON.stringify(body)), { reply: inbox });
      const [ev, rev] = await Promise.all([c.done, r.done]);
      const t = ms();
      let why = checkGood(ev, id) || checkGood(rev, id);
      if (!why && ev[ev.length - 1].text !== rev[rev.length - 1].text) why = 'inbox and response.{rid} differ';
      return emit(kind, !why, t, why && `${why}`);
    }
    case 'nats_bad_json': {
      const inbox = createInbox();
      const r = collect(nc, inbox);
      nc.publish(workerSubject, sc.encode(`{"requestId":"${id}","prompt":`), { reply: inbox });
      const why = checkError(await r.done, 'bad_request', { rid: null });
      return emit(kind, !why, ms(), why);
    }
    case 'nats_bad_field': {
      body.maxTokens = 'ten';
      const c = collect(nc, `response.${id}`);
      nc.publish(modelSubject, sc.encode(JSON.stringify(body)));
      const why = checkError(await c.done, 'bad_request', { rid: id, param: 'maxTokens' });
      return emit(kind, !why, ms(), why);
    }
    case 'nats_oversize': {
      const inbox = createInbox();
      const r = collect(nc, inbox);
      body.prompt = 'x'.repeat(MAX_BODY + 1000);
      nc.publish(workerSubject, sc.encode(JSON.stringify(body)), { reply: inbox });
      const why = checkError(await r.done, 'bad_request', { rid: null, contains: 'too large' });
      return emit(kind, !why, ms(), why);
    }
    case 'nats_unread': {
      // Nobody subscribes response.{rid} or the inbox: the worker publishes
      // into the void.
      nc.publish(Math.random() < 0.5 ? modelSubject : workerSubject, sc.encode(JSON.stringify(body)),
        { reply: createInbox() });
      return emit(kind, true, ms());
    }
  }
}

async function loop(nc, deadline) {
  while (performance.now() < deadline) {
    const kind = pick();
    try {
      await one(nc, kind);
    } catch (e) {
      emit(kind, false, 0, `exception: ${e.message}`);
    }
    if (THINK_MS > 0) await sleep(Math.random() * 2 * THINK_MS);
  }
}

const nc = await connect({ servers: NATS_URL, name: 'inferd-soak', maxReconnectAttempts: -1 });
(async () => {
  for await (const s of nc.status()) {
    if (s.type === 'disconnect' || s.type === 'error') emit('nats_connection', false, 0, `${s.type}: ${s.data}`);
  }
})().catch(() => {});
const deadline = performance.now() + SECONDS * 1000;
await Promise.all(Array.from({ length: CONCURRENCY }, () => loop(nc, deadline)));
await nc.drain();
