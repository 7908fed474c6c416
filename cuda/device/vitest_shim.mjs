// A minimal stand-in for the parts of vitest that test/cuda.test.ts and test/cuda_graph.test.ts
// use (describe, describe.skipIf, it, beforeAll, afterAll, expect with toBe / toEqual /
// toBeLessThan / toBeGreaterThan / toBeGreaterThanOrEqual / toThrow / rejects.toThrow /
// toMatch; timeouts are ignored), so that the tests can run as one bundled file under plain
// node on a device machine, which has no node_modules (see pack.mjs).
// Tests run in order, one at a time; `node cuda_test.mjs [-t pattern]` runs the matching ones.
import { inspect, isDeepStrictEqual } from 'node:util';

const root = { name: '', children: [], before: [], after: [], skip: false };
let current = root;

export function describe(name, fn) {
  const suite = { name, children: [], before: [], after: [], skip: false };
  current.children.push(suite);
  const parent = current;
  current = suite;
  try {
    fn();
  } finally {
    current = parent;
  }
  return suite;
}
describe.skipIf = (cond) => (name, fn) => {
  describe(name, fn).skip = Boolean(cond);
};
export function it(name, fn) {
  current.children.push({ name, fn, test: true });
}
export const test = it;
export const beforeAll = (fn) => current.before.push(fn);
export const afterAll = (fn) => current.after.push(fn);

class AssertionError extends Error {}
const show = (v) => inspect(v, { depth: 3, maxArrayLength: 8, breakLength: Infinity });
function check(ok, msg) {
  if (!ok) throw new AssertionError(msg);
}
function thrownMatches(err, want) {
  const msg = err instanceof Error ? err.message : String(err);
  if (want === undefined) return [true, msg];
  if (want instanceof RegExp) return [want.test(msg), msg];
  return [msg.includes(String(want)), msg];
}
// Plain arrays and typed arrays compare by values (as vitest's toEqual does for these tests).
const plain = (v) => (ArrayBuffer.isView(v) && !(v instanceof DataView) ? Array.from(v) : v);

export function expect(actual, label = '') {
  const pre = label ? `${label}: ` : '';
  return {
    toBe: (w) => check(Object.is(actual, w), `${pre}expected ${show(actual)} to be ${show(w)}`),
    toEqual: (w) => check(isDeepStrictEqual(plain(actual), plain(w)), `${pre}expected ${show(actual)} to equal ${show(w)}`),
    toBeLessThan: (w) => check(actual < w, `${pre}expected ${show(actual)} to be less than ${show(w)}`),
    toBeGreaterThan: (w) => check(actual > w, `${pre}expected ${show(actual)} to be greater than ${show(w)}`),
    toBeGreaterThanOrEqual: (w) => check(actual >= w, `${pre}expected ${show(actual)} to be >= ${show(w)}`),
    toMatch: (re) => check(re.test(String(actual)), `${pre}expected ${show(actual)} to match ${re}`),
    toThrow: (want) => {
      try {
        actual();
      } catch (e) {
        const [ok, msg] = thrownMatches(e, want);
        check(ok, `${pre}expected the error to match ${show(want)}, got "${msg}"`);
        return;
      }
      throw new AssertionError(`${pre}expected a throw matching ${show(want)}, nothing was thrown`);
    },
    rejects: {
      toThrow: async (want) => {
        try {
          await actual;
        } catch (e) {
          const [ok, msg] = thrownMatches(e, want);
          check(ok, `${pre}expected the rejection to match ${show(want)}, got "${msg}"`);
          return;
        }
        throw new AssertionError(`${pre}expected a rejection matching ${show(want)}, it resolved`);
      },
    },
  };
}

function count(suite) {
  return suite.children.reduce((n, c) => n + (c.test ? 1 : count(c)), 0);
}

// Runs after the test module has registered everything (it is imported first, then this runs).
export async function run() {
  const i = process.argv.indexOf('-t');
  const filter = i >= 0 ? new RegExp(process.argv[i + 1]) : null;
  const totals = { passed: 0, failed: 0, skipped: 0 };
  const failures = [];
  async function go(suite, path) {
    if (suite.skip) {
      totals.skipped += count(suite);
      return;
    }
    const wanted = (c, p) => (c.test ? !filter || filter.test(`${p} > ${c.name}`) : c.children.some((k) => wanted(k, `${p} > ${c.name}`)));
    if (!suite.children.some((c) => wanted(c, path))) {
      totals.skipped += count(suite);
      return;
    }
    try {
      for (const f of suite.before) await f();
    } catch (e) {
      failures.push(`${path}: beforeAll failed: ${e?.stack ?? e}`);
      totals.failed += count(suite);
      return;
    }
    for (const c of suite.children) {
      const name = `${path} > ${c.name}`;
      if (!c.test) {
        await go(c, name);
        continue;
      }
      if (filter && !filter.test(name)) {
        totals.skipped++;
        continue;
      }
      const t0 = performance.now();
      try {
        await c.fn();
        totals.passed++;
        console.log(`  ok   ${name} (${(performance.now() - t0).toFixed(0)} ms)`);
      } catch (e) {
        totals.failed++;
        failures.push(`${name}\n    ${e instanceof AssertionError ? e.message : e?.stack ?? e}`);
        console.log(`  FAIL ${name}`);
      }
    }
    for (const f of suite.after) {
      try {
        await f();
      } catch (e) {
        failures.push(`${path}: afterAll failed: ${e?.stack ?? e}`);
      }
    }
  }
  await go(root, '');
  for (const f of failures) console.log(`\nFAILED ${f}`);
  console.log(`\n${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
  process.exitCode = totals.failed ? 1 : 0;
}
