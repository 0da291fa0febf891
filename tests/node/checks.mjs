// The checks harness of the Node drivers (openai_client.mjs,
// grpc_check.mjs): one "ok - name" / "not ok - name: details" /
// "# skip - name: reason" line per check, each under a watchdog, then a
// JSON summary line and the exit status (1 when a check failed).
import { isDeepStrictEqual } from 'node:util';

export class CheckFailure extends Error {}

export function assert(cond, what) {
  if (!cond) throw new CheckFailure(what);
}

// A value for a message (bigints as strings), cut at 300 characters.
export function show(v) {
  const s = JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? String(x) : x));
  return s === undefined ? String(v) : s.length > 300 ? `${s.slice(0, 300)}...` : s;
}

export function assertEq(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected))
    throw new CheckFailure(`${what}: got ${show(actual)}, want ${show(expected)}`);
}

// Throws if a check that this one builds on did not produce its result.
export function need(value, from) {
  if (value === undefined) throw new CheckFailure(`needs the result of "${from}", which failed`);
  return value;
}

// A run of checks. describe(e) turns a client's own error into a line
// (null: the generic "Name: message").
export function checks({ watchdogMs, describe = () => null }) {
  const results = [];
  const details = (e) =>
    e instanceof CheckFailure ? e.message : describe(e) ?? `${e?.name ?? 'Error'}: ${e?.message ?? String(e)}`;
  return {
    describeError: details, // an error as a check's failure line shows it
    async check(name, fn) {
      let timer;
      const watchdog = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new CheckFailure(`no result after ${watchdogMs} ms`)), watchdogMs);
      });
      try {
        await Promise.race([fn(), watchdog]);
        results.push({ name, status: 'ok' });
        console.log(`ok - ${name}`);
      } catch (e) {
        const d = details(e).replace(/\s+/g, ' ');
        results.push({ name, status: 'not ok', details: d });
        console.log(`not ok - ${name}: ${d}`);
      } finally {
        clearTimeout(timer);
      }
    },
    skip(name, reason) {
      results.push({ name, status: 'skip', details: reason });
      console.log(`# skip - ${name}: ${reason}`);
    },
    // Print the summary (with @p extra) and exit: explicitly, so that a
    // request a watchdog abandoned does not keep the process alive.
    finish(extra) {
      const failed = results.filter((r) => r.status === 'not ok');
      console.log(JSON.stringify({
        passed: results.filter((r) => r.status === 'ok').length,
        failed: failed.length,
        skipped: results.filter((r) => r.status === 'skip').length,
        failed_checks: failed.map((r) => r.name),
        ...extra,
        node: process.version,
      }));
      process.exit(failed.length ? 1 : 0);
    },
  };
}
