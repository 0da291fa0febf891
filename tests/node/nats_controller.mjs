// A NATS controller and client for `inferd serve --nats` (docs/nats.md),
// written with the official `nats` npm client (pinned in package.json). The
// integration scripts (tests/integration/test_serve_nats*.sh) run one
// subcommand per step and check its JSON output with jq.
//
// Environment: NATS_URL (required), e.g. nats://127.0.0.1:4222.
//
// Subcommands (OPTIONS after the positional arguments):
//   monitor OUT [--no-ack]
//       The controller side: subscribes worker.register (replying {"ok":true}
//       unless --no-ack)
//       and worker.heartbeat, and appends one JSON line per message to OUT:
//       {"seq", "t" (ms since the epoch, on arrival), "subject", "data"}.
//       Reconnects for ever; connection events are lines with subject
//       "_status". Prints "subscribed" once the server has the
//       subscriptions. Runs until SIGTERM/SIGINT.
//   infer SUBJECT PAYLOAD [--rid ID] [--reply] [--timeout-ms N] [--settle-ms N]
//         [--watch-responses] [--watch-heartbeats] [--kill-on-first-token PID]
//       Publishes PAYLOAD (sent verbatim; its requestId names the stream
//       unless --rid is given) and collects the events on response.{rid}
//       and, with --reply, on a fresh inbox given as the reply subject. Ends
//       when every stream it listens to has ended (done or error; for the
//       inbox also a server status such as 503 no responders, listed in the
//       stream's "status"), then
//       waits --settle-ms (default 100) for anything after the end.
//       --watch-responses also records every message on response.> that is
//       not response.{rid} ("stray"). --watch-heartbeats records
//       worker.heartbeat and, with --kill-on-first-token, waits for an
//       "offline" one too. --kill-on-first-token sends SIGTERM to PID when
//       the first token event arrives. --reply-to SUBJECT publishes with that
//       reply subject instead (not listened to: a hostile client's choice).
//       --no-response does not wait on response.{rid} (with
//       --watch-responses, anything published there is "stray").
//   many N SUBJECT PAYLOAD [--timeout-ms N]
//       Publishes N copies of the JSON PAYLOAD at once, requestId
//       "{requestId}-{i}", and waits for every stream to end.
//   request SUBJECT PAYLOAD [--timeout-ms N]
//       nc.request(); prints {"ok":true,"data":...} or
//       {"ok":false,"code":...,"message":...} (code "503": no responders,
//       "TIMEOUT": no answer in time).
//   srv [NAME [ID]]
//       The nats Services client: ping(), info() and stats() for NAME/ID.
//
// Output: one JSON document on stdout. Exit status 0 when the subcommand
// ran (the checks are the caller's), 1 when it could not (no connection,
// hang guard), 2 on bad usage.

import { connect, createInbox, Events, StringCodec } from 'nats';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';

const sc = StringCodec();
const NATS_URL = process.env.NATS_URL;
// Hang guard for the one-shot subcommands: they end on their own long
// before this unless the worker is stuck.
const DEFAULT_TIMEOUT_MS = 60_000;

function usage(msg) {
  console.error(`nats_controller: ${msg}`);
  process.exit(2);
}

function parseArgs(argv) {
  const pos = [];
  const opt = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      pos.push(a);
      continue;
    }
    const name = a.slice(2);
    if (['reply', 'watch-responses', 'watch-heartbeats', 'no-ack', 'no-response'].includes(name)) {
      opt[name] = true;
    } else if (['rid', 'timeout-ms', 'settle-ms', 'kill-on-first-token', 'reply-to'].includes(name)) {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      opt[name] = argv[++i];
    } else {
      usage(`unknown option ${a}`);
    }
  }
  return { pos, opt };
}

function intOpt(opt, name, dflt) {
  if (opt[name] === undefined) return dflt;
  const v = Number(opt[name]);
  if (!Number.isInteger(v) || v < 0) usage(`--${name}: expected a non-negative integer`);
  return v;
}

function decode(data) {
  const text = sc.decode(data);
  try {
    return JSON.parse(text);
  } catch {
    return { _raw: text };
  }
}

// A requestId the worker can use as response.{requestId} (docs/nats.md).
function subjectSafe(rid) {
  return typeof rid === 'string' && rid.length >= 1 && rid.length <= 128 && !/[\s*>]/.test(rid) &&
    rid.split('.').every((t) => t.length > 0);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function open(extra = {}) {
  if (!NATS_URL) usage('NATS_URL must name the NATS server');
  return connect({ servers: NATS_URL, name: 'inferd-test-controller', ...extra });
}

// ---- monitor ---------------------------------------------------------------

async function monitor(out, opt) {
  if (!out) usage('monitor OUT');
  const nc = await open({ maxReconnectAttempts: -1, reconnectTimeWait: 200, waitOnFirstConnect: true });
  // seq goes on from the records already in OUT (an earlier monitor's)
  let seq = existsSync(out) ? readFileSync(out, 'utf8').split('\n').filter((l) => l).length : 0;
  const record = (subject, data) => {
    appendFileSync(out, JSON.stringify({ seq: ++seq, t: Date.now(), subject, data }) + '\n');
  };
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === Events.Disconnect || s.type === Events.Reconnect)
        record('_status', { type: s.type });
    }
  })().catch(() => {});
  nc.subscribe('worker.register', {
    callback: (err, m) => {
      if (err) return;
      record(m.subject, decode(m.data));
      if (m.reply && !opt['no-ack']) m.respond(sc.encode(JSON.stringify({ ok: true })));
    },
  });
  nc.subscribe('worker.heartbeat', {
    callback: (err, m) => {
      if (!err) record(m.subject, decode(m.data));
    },
  });
  await nc.flush();
  console.log('subscribed');
  const stop = async () => {
    await nc.drain().catch(() => {});
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  await nc.closed();
}

// ---- infer -----------------------------------------------------------------

// One event stream (response.{rid} or the reply inbox).
function newStream() {
  return { events: [], end: null, endSeq: null, status: [] };
}

function isEnd(ev) {
  return ev && (ev.type === 'done' || ev.type === 'error');
}

function summarize(st, rid) {
  if (!st) return null;
  const tokens = st.events.filter((e) => e.type === 'token');
  const endIdx = st.events.findIndex(isEnd);
  return {
    events: st.events,
    tokens: tokens.length,
    // index counts 0..n-1 in arrival order, every token before the end
    indicesOk: tokens.every((e, i) => e.index === i) &&
      (endIdx < 0 || st.events.slice(endIdx + 1).every((e) => e.type !== 'token')),
    tokenShapeOk: tokens.every((e) => typeof e.token === 'string' && Number.isInteger(e.tokenId)),
    concat: tokens.map((e) => (typeof e.token === 'string' ? e.token : '')).join(''),
    end: st.end,
    ends: st.events.filter(isEnd).length,
    afterEnd: endIdx < 0 ? 0 : st.events.length - endIdx - 1,
    ridOk: st.events.every((e) => e.requestId === rid),
    status: st.status,
  };
}

async function infer(subject, payload, opt) {
  if (!subject || payload === undefined) usage('infer SUBJECT PAYLOAD');
  const timeoutMs = intOpt(opt, 'timeout-ms', DEFAULT_TIMEOUT_MS);
  const settleMs = intOpt(opt, 'settle-ms', 100);
  const killPid = opt['kill-on-first-token'] !== undefined ? intOpt(opt, 'kill-on-first-token', 0) : null;
  let rid = opt.rid;
  if (rid === undefined) {
    try {
      rid = JSON.parse(payload).requestId;
    } catch {
      rid = undefined;
    }
  }
  const nc = await open();
  let seq = 0;
  let wake = () => {};
  const response = subjectSafe(rid) && !opt['no-response'] ? newStream() : null;
  const reply = opt.reply ? newStream() : null;
  const stray = [];
  const heartbeats = [];
  let killSeq = null;
  const t0 = Date.now();

  const onEvent = (st) => (err, m) => {
    if (err) return;
    if (m.headers && m.data.length === 0) {
      // a status message from the server (503: no responders), not an event
      st.status.push(m.headers.code);
      wake();
      return;
    }
    const ev = { seq: ++seq, t: Date.now() - t0, ...decode(m.data) };
    st.events.push(ev);
    if (ev.type === 'token' && killPid !== null && killSeq === null) {
      killSeq = ev.seq;
      process.kill(killPid, 'SIGTERM');
    }
    if (!st.end && isEnd(ev)) {
      st.end = ev;
      st.endSeq = ev.seq;
    }
    wake();
  };
  const responseSubject = response ? `response.${rid}` : null;
  if (response) nc.subscribe(responseSubject, { callback: onEvent(response) });
  const inbox = reply ? createInbox() : undefined;
  if (reply) nc.subscribe(inbox, { callback: onEvent(reply) });
  if (opt['watch-responses']) {
    nc.subscribe('response.>', {
      callback: (err, m) => {
        if (!err && m.subject !== responseSubject)
          stray.push({ seq: ++seq, subject: m.subject, data: decode(m.data) });
        wake();
      },
    });
  }
  if (opt['watch-heartbeats']) {
    nc.subscribe('worker.heartbeat', {
      callback: (err, m) => {
        if (!err) heartbeats.push({ seq: ++seq, t: Date.now() - t0, data: decode(m.data) });
        wake();
      },
    });
  }
  await nc.flush();
  // --reply-to SUBJECT: a reply subject of the caller's choosing (not
  // subscribed here), as a hostile client would set it.
  const replyTo = opt['reply-to'] !== undefined ? String(opt['reply-to']) : inbox;
  nc.publish(subject, sc.encode(payload), replyTo ? { reply: replyTo } : undefined);
  await nc.flush();

  const finished = () => (!response || response.end) && (!reply || reply.end || reply.status.length) &&
    (killPid === null || !opt['watch-heartbeats'] ||
      heartbeats.some((h) => h.data.status === 'offline'));
  const deadline = Date.now() + timeoutMs;
  let timedOut = false;
  if (response || reply || killPid !== null) {
    while (!finished()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        timedOut = true;
        break;
      }
      await new Promise((r) => {
        wake = r;
        setTimeout(r, Math.min(left, 200));
      });
    }
  }
  await sleep(settleMs);
  const out = {
    subject,
    rid: rid === undefined ? null : rid,
    timedOut,
    killSeq,
    response: summarize(response, rid),
    reply: summarize(reply, rid),
    stray,
    heartbeats,
  };
  await nc.close();
  return out;
}

// ---- many ------------------------------------------------------------------

async function many(n, subject, payload, opt) {
  const count = Number(n);
  if (!Number.isInteger(count) || count < 1 || !subject || payload === undefined) usage('many N SUBJECT PAYLOAD');
  const timeoutMs = intOpt(opt, 'timeout-ms', DEFAULT_TIMEOUT_MS);
  let base;
  try {
    base = JSON.parse(payload);
  } catch {
    usage('many: PAYLOAD must be JSON');
  }
  const nc = await open();
  let wake = () => {};
  const streams = [];
  for (let i = 0; i < count; i++) {
    const rid = `${base.requestId}-${i}`;
    const st = { rid, ...newStream() };
    streams.push(st);
    nc.subscribe(`response.${rid}`, {
      callback: (err, m) => {
        if (err) return;
        const ev = decode(m.data);
        st.events.push(ev);
        if (!st.end && isEnd(ev)) st.end = ev;
        wake();
      },
    });
  }
  await nc.flush();
  for (const st of streams) nc.publish(subject, sc.encode(JSON.stringify({ ...base, requestId: st.rid })));
  await nc.flush();
  const deadline = Date.now() + timeoutMs;
  let timedOut = false;
  while (!streams.every((s) => s.end)) {
    const left = deadline - Date.now();
    if (left <= 0) {
      timedOut = true;
      break;
    }
    await new Promise((r) => {
      wake = r;
      setTimeout(r, Math.min(left, 200));
    });
  }
  await nc.close();
  const codes = {};
  for (const s of streams) {
    if (s.end && s.end.type === 'error') codes[s.end.code] = (codes[s.end.code] || 0) + 1;
  }
  return {
    n: count,
    timedOut,
    done: streams.filter((s) => s.end && s.end.type === 'done').length,
    errors: codes,
    unanswered: streams.filter((s) => !s.end).length,
    results: streams.map((s) => {
      const r = summarize(s, s.rid);
      return {
        rid: s.rid, type: s.end ? s.end.type : null, code: s.end ? s.end.code ?? null : null,
        tokens: r.tokens, indicesOk: r.indicesOk, ends: r.ends, concat: r.concat, end: s.end,
      };
    }),
  };
}

// ---- request ---------------------------------------------------------------

async function request(subject, payload, opt) {
  if (!subject || payload === undefined) usage('request SUBJECT PAYLOAD');
  const timeoutMs = intOpt(opt, 'timeout-ms', 5000);
  const nc = await open();
  let out;
  try {
    const m = await nc.request(subject, sc.encode(payload), { timeout: timeoutMs });
    out = { ok: true, data: decode(m.data) };
  } catch (e) {
    out = { ok: false, code: e.code ?? null, message: String(e.message) };
  }
  await nc.close();
  return out;
}

// ---- srv -------------------------------------------------------------------

// The answers, or {"error": code} (503 when no service answered).
async function collect(iterPromise) {
  const items = [];
  try {
    for await (const x of await iterPromise) items.push(x);
  } catch (e) {
    return { error: e.code ?? String(e.message) };
  }
  return items;
}

async function srv(name = '', id = '') {
  const nc = await open();
  const client = nc.services.client();
  const out = {
    ping: await collect(client.ping(name, id)),
    info: await collect(client.info(name, id)),
    stats: await collect(client.stats(name, id)),
  };
  await nc.close();
  return out;
}

// ---- main ------------------------------------------------------------------

const { pos, opt } = parseArgs(process.argv.slice(2));
const [cmd, ...args] = pos;
const guard = setTimeout(() => {
  console.error('nats_controller: hang guard fired');
  process.exit(1);
}, 180_000);
guard.unref();

try {
  let result;
  switch (cmd) {
    case 'monitor':
      clearTimeout(guard);
      await monitor(args[0], opt);
      process.exit(0);
      break;
    case 'infer':
      result = await infer(args[0], args[1], opt);
      break;
    case 'many':
      result = await many(args[0], args[1], args[2], opt);
      break;
    case 'request':
      result = await request(args[0], args[1], opt);
      break;
    case 'srv':
      result = await srv(args[0], args[1]);
      break;
    default:
      usage('usage: NATS_URL=... node nats_controller.mjs monitor|infer|many|request|srv ...');
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
} catch (e) {
  console.error(`nats_controller ${cmd}: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
}
