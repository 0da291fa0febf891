// Drives an OpenAI-compatible server (`inferd serve`) with the official
// `openai` npm client and checks what the client sees: response shapes,
// determinism, streaming, typed errors and (optionally) auth and logprobs.
//
// Environment:
//   INFERD_URL            base URL including /v1, e.g. http://127.0.0.1:8080/v1 (required)
//   INFERD_MODEL          model id the server serves (required)
//   INFERD_API_KEY        bearer key; "none" when unset
//   PROMPT                prompt text; default "Once upon a time"
//   EXPECT_TEXT           when set, the greedy 16-token completion must equal it
//   INFERD_BAD_KEY_CHECK  "1": a wrong key must give AuthenticationError (401)
//   INFERD_LOGPROBS       "1": check logprobs on chat and completions
//
// Output: one "ok - name" / "not ok - name: details" line per check,
// "# skip - name: reason" for checks not enabled, then one JSON summary line.
// Exit status 0 when every check passed, 1 otherwise, 2 on bad usage.

import OpenAI from 'openai';
import { VERSION as OPENAI_VERSION } from 'openai/version';
import http from 'node:http';
import { Readable } from 'node:stream';
import { CheckFailure, assert, assertEq, checks, need, show } from './checks.mjs';

const BASE_URL = process.env.INFERD_URL;
const MODEL = process.env.INFERD_MODEL;
const API_KEY = process.env.INFERD_API_KEY || 'none';
const PROMPT = process.env.PROMPT ?? 'Once upon a time';
const EXPECT_TEXT = process.env.EXPECT_TEXT;
const BAD_KEY_CHECK = process.env.INFERD_BAD_KEY_CHECK === '1';
const LOGPROBS_CHECK = process.env.INFERD_LOGPROBS === '1';

// Hang guards, not performance limits: a healthy server answers the tiny
// test model in well under a second, so these only fire on a stuck server.
const REQUEST_TIMEOUT_MS = 60_000;
const CHECK_WATCHDOG_MS = 180_000;
const MAX_TOKENS = 16;
const EARLY_ANSWER_WAIT_MS = 50;

if (!BASE_URL || !MODEL) {
  console.error('usage: INFERD_URL=http://127.0.0.1:PORT/v1 INFERD_MODEL=<id> node openai_client.mjs');
  process.exit(2);
}

function makeClient(apiKey, fetch) {
  return new OpenAI({ baseURL: BASE_URL, apiKey, maxRetries: 0, timeout: REQUEST_TIMEOUT_MS, fetch });
}

// A fetch for the client that sends every request over one kept-alive
// connection, the body written after the headers. The error checks use it:
// a server that answers early (404, 401) and neither reads the request body
// nor closes the connection parses that body as the next request, and the
// follow-up request, sure to use the same connection, fails. Node's built-in
// fetch pools several connections, so with it such a bug shows by chance.
function singleConnectionFetch(agent) {
  return (url, init = {}) => new Promise((resolve, reject) => {
    const target = new URL(url);
    if (target.protocol !== 'http:') {
      reject(new Error(`singleConnectionFetch: only http: URLs, got ${target.protocol}`));
      return;
    }
    const headers = Object.fromEntries(new Headers(init.headers ?? {}));
    const body = init.body;
    if (body !== undefined && typeof body !== 'string') {
      reject(new Error('singleConnectionFetch: only string bodies'));
      return;
    }
    if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
    const req = http.request(target, { method: init.method ?? 'GET', headers, agent, signal: init.signal });
    req.on('error', reject);
    req.on('response', (res) => {
      const resHeaders = new Headers();
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2)
        resHeaders.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
      const noBody = res.statusCode === 204 || res.statusCode === 304 || init.method === 'HEAD';
      if (noBody) res.resume();
      resolve(new Response(noBody ? null : Readable.toWeb(res),
        { status: res.statusCode, statusText: res.statusMessage, headers: resHeaders }));
    });
    if (body === undefined) {
      req.end();
      return;
    }
    // Send the headers alone, then the body once the server has answered
    // or after a short pause, whichever comes first. The pause only decides
    // how surely an early-answering server is caught; a correct server
    // passes whatever its length.
    req.flushHeaders();
    let timer;
    const sendBody = () => {
      clearTimeout(timer);
      if (!req.writableEnded) req.end(body);
    };
    timer = setTimeout(sendBody, EARLY_ANSWER_WAIT_MS);
    req.once('response', sendBody);
  });
}

const client = makeClient(API_KEY);

// Clients with the right and a wrong key sharing one fresh connection, so
// that a broken connection fails one check only.
function oneConnection() {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const fetch = singleConnectionFetch(agent);
  return {
    client: makeClient(API_KEY, fetch),
    badClient: makeClient('wrong', fetch),
    close: () => agent.destroy(),
  };
}

// The client's timeout covers only the wait for response headers, so a
// streamed body gets its own abort signal.
function streamOpts() {
  return { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) };
}

const MESSAGES = [
  { role: 'system', content: 'You are a storyteller. Continue the story.' },
  { role: 'user', content: PROMPT },
];

// ---------------------------------------------------------------- harness

const { check, skip, finish, describeError } = checks({
  watchdogMs: CHECK_WATCHDOG_MS,
  describe: (e) =>
    e instanceof OpenAI.APIError
      ? `${e.constructor.name} status=${e.status} code=${show(e.code)}: ${e.message}`
      : null,
});

// --------------------------------------------------------- shape helpers

const FINISH_REASONS = ['length', 'stop'];

function checkUsage(usage, maxCompletion) {
  assert(usage && typeof usage === 'object', `usage missing: ${show(usage)}`);
  assert(Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0,
    `usage.prompt_tokens ${show(usage.prompt_tokens)} not a positive integer`);
  assert(Number.isInteger(usage.completion_tokens) && usage.completion_tokens > 0 &&
    usage.completion_tokens <= maxCompletion,
  `usage.completion_tokens ${show(usage.completion_tokens)} not in 1..${maxCompletion}`);
  assertEq(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens,
    'usage.total_tokens (prompt + completion)');
}

function checkEnvelope(r, object) {
  assert(typeof r.id === 'string' && r.id.length > 0, `id ${show(r.id)} not a non-empty string`);
  assertEq(r.object, object, 'object');
  assert(typeof r.created === 'number' && Number.isFinite(r.created),
    `created ${show(r.created)} not a number`);
  assertEq(r.model, MODEL, 'model');
}

function checkCompletion(r) {
  checkEnvelope(r, 'text_completion');
  assert(Array.isArray(r.choices), `choices not an array: ${show(r.choices)}`);
  assertEq(r.choices.length, 1, 'choices.length');
  const c = r.choices[0];
  assertEq(c.index, 0, 'choices[0].index');
  assert(typeof c.text === 'string', `choices[0].text ${show(c.text)} not a string`);
  assert(FINISH_REASONS.includes(c.finish_reason),
    `choices[0].finish_reason ${show(c.finish_reason)} not in ${show(FINISH_REASONS)}`);
  checkUsage(r.usage, MAX_TOKENS);
  return c.text;
}

function checkChatCompletion(r) {
  checkEnvelope(r, 'chat.completion');
  assert(Array.isArray(r.choices), `choices not an array: ${show(r.choices)}`);
  assertEq(r.choices.length, 1, 'choices.length');
  const c = r.choices[0];
  assertEq(c.index, 0, 'choices[0].index');
  assert(c.message && typeof c.message === 'object', `choices[0].message missing: ${show(c)}`);
  assertEq(c.message.role, 'assistant', 'choices[0].message.role');
  assert(typeof c.message.content === 'string',
    `choices[0].message.content ${show(c.message.content)} not a string`);
  assert(FINISH_REASONS.includes(c.finish_reason),
    `choices[0].finish_reason ${show(c.finish_reason)} not in ${show(FINISH_REASONS)}`);
  checkUsage(r.usage, MAX_TOKENS);
  return c.message.content;
}

function completionParams(extra = {}) {
  return { model: MODEL, prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0, ...extra };
}

function chatParams(extra = {}) {
  return { model: MODEL, messages: MESSAGES, max_tokens: MAX_TOKENS, temperature: 0, ...extra };
}

// Expects `call` to be rejected with the typed error `cls` and `status`.
async function expectApiError(call, cls, status) {
  let err;
  try {
    const r = await call();
    throw new CheckFailure(`request succeeded, want ${cls.name} ${status}: ${show(r)}`);
  } catch (e) {
    if (e instanceof CheckFailure) throw e;
    err = e;
  }
  assert(err instanceof OpenAI.APIError, `want ${cls.name}, got ${describeError(err)}`);
  assertEq(err.status, status, 'HTTP status');
  assert(err instanceof cls, `want ${cls.name}, got ${err.constructor.name}`);
  // The body must be OpenAI's error object {"error":{message,type,param,code}}.
  const body = err.error;
  assert(body && typeof body === 'object', `error body is not {"error":{...}}: ${show(body)}`);
  assert(typeof body.message === 'string' && body.message.length > 0,
    `error.message ${show(body.message)} not a non-empty string`);
  assert(typeof body.type === 'string' && body.type.length > 0,
    `error.type ${show(body.type)} not a non-empty string`);
  for (const key of ['param', 'code'])
    assert(key in body, `error object lacks "${key}": ${show(body)}`);
  return err;
}

// A small request that must succeed after an error was answered.
async function stillServes(c) {
  try {
    const r = await c.completions.create(completionParams({ max_tokens: 2 }));
    assert(r.choices?.length === 1, `choices ${show(r.choices)}`);
  } catch (e) {
    throw new CheckFailure(`follow-up request failed: ${describeError(e)}`);
  }
}

// Runs `expectError` and then, whatever it found, a normal request on the
// same connection (see singleConnectionFetch).
async function errorThenServes(expectError) {
  const conn = oneConnection();
  let failure;
  try {
    await expectError(conn);
  } catch (e) {
    failure = e;
  }
  try {
    await stillServes(conn.client);
  } catch (e) {
    failure = failure ? new CheckFailure(`${describeError(failure)}; and ${describeError(e)}`) : e;
  }
  conn.close();
  if (failure) throw failure;
}

// ----------------------------------------------------------------- checks

// Results that later checks compare against.
let greedyText;
let chatContent;
let chatUsage;

await check('models.list includes INFERD_MODEL', async () => {
  const ids = [];
  let found;
  for await (const m of client.models.list()) {
    ids.push(m.id);
    if (m.id === MODEL) found = m;
  }
  assert(found, `model ${show(MODEL)} not among ${show(ids)}`);
  assertEq(found.object, 'model', 'object');
});

await check('completion greedy: response shape and usage', async () => {
  const r = await client.completions.create(completionParams());
  greedyText = checkCompletion(r);
});

await check('completion greedy: same text on a second call', async () => {
  const first = need(greedyText, 'completion greedy: response shape and usage');
  const r = await client.completions.create(completionParams());
  assertEq(checkCompletion(r), first, 'second greedy text');
});

if (EXPECT_TEXT !== undefined) {
  await check('completion greedy: text equals the CLI output (EXPECT_TEXT)', async () => {
    assertEq(need(greedyText, 'completion greedy: response shape and usage'), EXPECT_TEXT, 'text');
  });
} else {
  skip('completion greedy: text equals the CLI output (EXPECT_TEXT)', 'EXPECT_TEXT not set');
}

await check('completion seeded sampling: seed 7 twice gives the same text', async () => {
  const params = completionParams({ temperature: 0.9, seed: 7 });
  const a = checkCompletion(await client.completions.create(params));
  const b = checkCompletion(await client.completions.create(params));
  assertEq(b, a, 'text of the second seed-7 completion');
});

await check('completion seeded sampling: seed 8 is accepted', async () => {
  checkCompletion(await client.completions.create(completionParams({ temperature: 0.9, seed: 8 })));
});

await check('completion streamed: chunks concatenate to the greedy text', async () => {
  const want = need(greedyText, 'completion greedy: response shape and usage');
  const stream = await client.completions.create(completionParams({ stream: true }), streamOpts());
  let text = '';
  let nChoiceChunks = 0;
  let lastFinish;
  for await (const chunk of stream) {
    assertEq(chunk.object, 'text_completion', 'chunk object');
    if (!chunk.choices?.length) continue;
    nChoiceChunks++;
    assert(typeof chunk.choices[0].text === 'string',
      `chunk choices[0].text ${show(chunk.choices[0].text)} not a string`);
    text += chunk.choices[0].text;
    lastFinish = chunk.choices[0].finish_reason;
  }
  assert(nChoiceChunks > 0, 'stream carried no choice chunks');
  assertEq(text, want, 'streamed text');
  assert(FINISH_REASONS.includes(lastFinish),
    `last choice chunk finish_reason ${show(lastFinish)} not in ${show(FINISH_REASONS)}`);
});

await check('chat greedy: response shape and usage', async () => {
  const r = await client.chat.completions.create(chatParams());
  chatContent = checkChatCompletion(r);
  chatUsage = r.usage;
});

// One streamed chat request; the checks after it look at what it collected.
let chatStream;

await check('chat streamed: chunks are chat.completion.chunk with one id', async () => {
  const stream = await client.chat.completions.create(
    chatParams({ stream: true, stream_options: { include_usage: true } }), streamOpts());
  const got = { content: '', firstDelta: undefined, finish: undefined, usage: undefined };
  let id;
  for await (const chunk of stream) {
    assertEq(chunk.object, 'chat.completion.chunk', 'chunk object');
    if (id === undefined) id = chunk.id;
    assertEq(chunk.id, id, 'chunk id (all chunks of one stream share it)');
    if (chunk.usage) got.usage = chunk.usage;
    if (!chunk.choices?.length) continue;
    const choice = chunk.choices[0];
    if (got.firstDelta === undefined) got.firstDelta = choice.delta;
    if (typeof choice.delta?.content === 'string') got.content += choice.delta.content;
    if (choice.finish_reason) got.finish = choice.finish_reason;
  }
  assert(got.firstDelta !== undefined, 'stream carried no choice chunks');
  chatStream = got;
});

const CHAT_STREAM = 'chat streamed: chunks are chat.completion.chunk with one id';
const CHAT_GREEDY = 'chat greedy: response shape and usage';

await check('chat streamed: first delta has role "assistant"', async () => {
  assertEq(need(chatStream, CHAT_STREAM).firstDelta.role, 'assistant', 'first chunk delta.role');
});

await check('chat streamed: delta.content concatenates to the non-streamed content', async () => {
  assertEq(need(chatStream, CHAT_STREAM).content, need(chatContent, CHAT_GREEDY), 'streamed content');
});

await check('chat streamed: a finish_reason arrives', async () => {
  const finish = need(chatStream, CHAT_STREAM).finish;
  assert(FINISH_REASONS.includes(finish), `finish_reason ${show(finish)} not in ${show(FINISH_REASONS)}`);
});

await check('chat streamed: include_usage chunk equals the non-streamed usage', async () => {
  const usage = need(chatStream, CHAT_STREAM).usage;
  assert(usage, 'no chunk carried usage although include_usage was set');
  const pick = (u) => ({
    prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens,
  });
  assertEq(pick(usage), pick(need(chatUsage, CHAT_GREEDY)), 'streamed usage vs non-streamed usage');
});

const errorCases = [
  ['completion model "no-such-model" -> NotFoundError 404 model_not_found', OpenAI.NotFoundError, 404,
    (c) => c.completions.create(completionParams({ model: 'no-such-model' })), 'model_not_found'],
  ['chat model "no-such-model" -> NotFoundError 404 model_not_found', OpenAI.NotFoundError, 404,
    (c) => c.chat.completions.create(chatParams({ model: 'no-such-model' })), 'model_not_found'],
  ['completion n:2 -> BadRequestError 400', OpenAI.BadRequestError, 400,
    (c) => c.completions.create(completionParams({ n: 2 }))],
  ['chat n:2 -> BadRequestError 400', OpenAI.BadRequestError, 400,
    (c) => c.chat.completions.create(chatParams({ n: 2 }))],
  ['completion max_tokens:-5 -> BadRequestError 400', OpenAI.BadRequestError, 400,
    (c) => c.completions.create(completionParams({ max_tokens: -5 }))],
  ['chat max_tokens:-5 -> BadRequestError 400', OpenAI.BadRequestError, 400,
    (c) => c.chat.completions.create(chatParams({ max_tokens: -5 }))],
  ['completion temperature:5 -> BadRequestError 400', OpenAI.BadRequestError, 400,
    (c) => c.completions.create(completionParams({ temperature: 5 }))],
  ['chat temperature:5 -> BadRequestError 400', OpenAI.BadRequestError, 400,
    (c) => c.chat.completions.create(chatParams({ temperature: 5 }))],
];

for (const [name, cls, status, call, code] of errorCases) {
  await check(name, () => errorThenServes(async ({ client: c }) => {
    const err = await expectApiError(() => call(c), cls, status);
    if (code !== undefined) assertEq(err.code, code, 'error.code');
  }));
}

if (BAD_KEY_CHECK) {
  await check('completion with a wrong API key -> AuthenticationError 401', () => errorThenServes(
    ({ badClient }) => expectApiError(() => badClient.completions.create(completionParams()),
      OpenAI.AuthenticationError, 401)));
  await check('chat with a wrong API key -> AuthenticationError 401', () => errorThenServes(
    ({ badClient }) => expectApiError(() => badClient.chat.completions.create(chatParams()),
      OpenAI.AuthenticationError, 401)));
} else {
  skip('wrong API key -> AuthenticationError 401', 'INFERD_BAD_KEY_CHECK is not 1');
}

// At temperature 0 the chosen token is the most likely one, so its logprob
// must be the largest among the alternatives (ties allowed).
const LOGPROB_TOL = 1e-4;

function checkLogprobValue(v, what) {
  assert(typeof v === 'number' && !Number.isNaN(v) && v <= 0, `${what} ${show(v)} not a number <= 0`);
}

if (LOGPROBS_CHECK) {
  await check('chat logprobs:true top_logprobs:3', async () => {
    const r = await client.chat.completions.create(chatParams({ logprobs: true, top_logprobs: 3 }));
    const content = checkChatCompletion(r);
    const lp = r.choices[0].logprobs?.content;
    assert(Array.isArray(lp), `choices[0].logprobs.content not an array: ${show(r.choices[0].logprobs)}`);
    assertEq(lp.length, r.usage.completion_tokens, 'logprobs.content.length (one per generated token)');
    lp.forEach((t, i) => {
      const at = `logprobs.content[${i}]`;
      assert(typeof t.token === 'string', `${at}.token ${show(t.token)} not a string`);
      checkLogprobValue(t.logprob, `${at}.logprob`);
      assert(Array.isArray(t.bytes) && t.bytes.every((b) => Number.isInteger(b) && b >= 0 && b <= 255),
        `${at}.bytes ${show(t.bytes)} not an array of bytes`);
      assert(Array.isArray(t.top_logprobs), `${at}.top_logprobs not an array`);
      assertEq(t.top_logprobs.length, 3, `${at}.top_logprobs.length`);
      t.top_logprobs.forEach((a, j) => {
        assert(typeof a.token === 'string', `${at}.top_logprobs[${j}].token not a string`);
        checkLogprobValue(a.logprob, `${at}.top_logprobs[${j}].logprob`);
        if (j > 0)
          assert(a.logprob <= t.top_logprobs[j - 1].logprob,
            `${at}.top_logprobs not sorted by logprob descending: ${show(t.top_logprobs)}`);
      });
      assert(t.logprob >= t.top_logprobs[0].logprob - LOGPROB_TOL,
        `${at}: greedy token logprob ${t.logprob} below the best alternative ${t.top_logprobs[0].logprob}`);
    });
    assertEq(lp.map((t) => t.token).join(''), content, 'concatenated logprobs tokens vs message.content');
  });

  await check('completion logprobs:2', async () => {
    const r = await client.completions.create(completionParams({ logprobs: 2 }));
    const text = checkCompletion(r);
    const lp = r.choices[0].logprobs;
    assert(lp && typeof lp === 'object', `choices[0].logprobs missing: ${show(lp)}`);
    const n = r.usage.completion_tokens;
    for (const key of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset']) {
      assert(Array.isArray(lp[key]), `logprobs.${key} not an array: ${show(lp[key])}`);
      assertEq(lp[key].length, n, `logprobs.${key}.length (usage.completion_tokens)`);
    }
    for (let i = 0; i < n; i++) {
      assert(typeof lp.tokens[i] === 'string', `logprobs.tokens[${i}] not a string`);
      checkLogprobValue(lp.token_logprobs[i], `logprobs.token_logprobs[${i}]`);
      assert(Number.isInteger(lp.text_offset[i]) && lp.text_offset[i] >= 0,
        `logprobs.text_offset[${i}] ${show(lp.text_offset[i])} not an integer >= 0`);
      if (i > 0)
        assert(lp.text_offset[i] >= lp.text_offset[i - 1], `logprobs.text_offset decreases at ${i}`);
      const top = lp.top_logprobs[i];
      assert(top && typeof top === 'object' && !Array.isArray(top),
        `logprobs.top_logprobs[${i}] not an object {token: logprob}: ${show(top)}`);
      const vals = Object.values(top);
      assert(vals.length >= 2 && vals.length <= 3,
        `logprobs.top_logprobs[${i}] has ${vals.length} entries, want 2 (3 if the chosen token is added)`);
      vals.forEach((v) => checkLogprobValue(v, `logprobs.top_logprobs[${i}] value`));
      assert(lp.token_logprobs[i] >= Math.max(...vals) - LOGPROB_TOL,
        `greedy token ${i} logprob ${lp.token_logprobs[i]} below the best alternative ${Math.max(...vals)}`);
    }
    assertEq(lp.tokens.join(''), text, 'concatenated logprobs.tokens vs text');
  });
} else {
  skip('logprobs on chat and completions', 'INFERD_LOGPROBS is not 1');
}

// ---------------------------------------------------------------- summary

finish({ openai: OPENAI_VERSION });
