// The native `sample` op and lib/sampler.ts against the reference (test/reference/sampler.ts):
// exact token agreement for many (seed, step) pairs, empirical distributions, truncation sets,
// determinism, batching, and the errors for bad settings and bad logits.
import { afterAll, describe, expect, it } from 'vitest';

import { addon, type NativeTensor } from '../lib/native.js';
import { Ops } from '../lib/ops.js';
import {
  Sampler,
  sampleArray,
  validateSamplingOptions,
  type SampleRequest,
  type SamplingOptions,
} from '../lib/sampler.js';
import * as ref from './reference/sampler.js';
import { mulberry32, randn } from './reference/rng.js';

const native = addon();
const ops = new Ops('cpu');
afterAll(() => ops.dispose());

const V = 100; // real vocabulary
const Vp = 112; // padded to a multiple of 16, as MODEL.md §2 does

/** Random fp32 logits, B rows of `cols`. */
function logitsRows(B: number, cols: number, seed: number, scale = 2): Float32Array {
  return Float32Array.from(randn(B * cols, seed, scale));
}
function row(all: Float32Array, b: number, cols = Vp): Float32Array {
  return all.subarray(b * cols, (b + 1) * cols);
}
function req(o: SamplingOptions, step = 0, seen?: number[]): SampleRequest {
  return { options: validateSamplingOptions({ seed: 1, ...o }), step, seen };
}
/** Draw `steps` tokens from one fixed row, one per step, in a single batched call. */
async function drawMany(logits: Float32Array, o: SamplingOptions, steps: number, seen?: number[]) {
  const all = new Float32Array(steps * Vp);
  for (let s = 0; s < steps; s++) all.set(logits, s * Vp);
  const seqs = Array.from({ length: steps }, (_, s) => req(o, s, seen));
  return (await sampleArray(ops, all, Vp, V, seqs)).tokens;
}

describe('the generator', () => {
  it('is SplitMix64 as documented (values computed independently)', () => {
    // u = (mix64(mix64(seed) + (step + 1) * gamma) >> 11) / 2^53; seed 0, step 0 is the
    // well-known first SplitMix64 output from state 0, 0xE220A8397B1DCDAF.
    expect(ref.uniform(0, 0)).toBe(Number(0xe220a8397b1dcdafn >> 11n) / 2 ** 53);
    expect(ref.uniform(0, 0)).toBe(0.8833108082136426);
    expect(ref.uniform(1, 0)).toBe(0.7497482413580301);
    expect(ref.uniform(42, 7)).toBe(0.15289334222649975);
    expect(ref.uniform(4294967295, 123456)).toBe(0.030054548326428288);
    expect(ref.uniform(2024, 2147483647)).toBe(0.36142108546824236);
  });

  it('is uniform over steps (mean, variance and a 20-bin histogram)', () => {
    const n = 50_000;
    const bins = new Array(20).fill(0);
    let sum = 0;
    let sq = 0;
    for (let s = 0; s < n; s++) {
      const u = ref.uniform(7, s);
      sum += u;
      sq += u * u;
      bins[Math.floor(u * 20)]++;
    }
    expect(Math.abs(sum / n - 0.5)).toBeLessThan(0.005);
    expect(Math.abs(sq / n - sum ** 2 / n ** 2 - 1 / 12)).toBeLessThan(0.002);
    const chi2 = bins.reduce((c, k) => c + (k - n / 20) ** 2 / (n / 20), 0);
    expect(chi2).toBeLessThan(45); // df 19: p < 1e-3 above ~43.8
  });
});

describe('greedy', () => {
  it('takes the argmax, ties to the smallest id, never a padded id', async () => {
    const l = logitsRows(1, Vp, 11);
    l[37] = 9;
    l[61] = 9; // a tie: 37 wins
    for (let i = V; i < Vp; i++) l[i] = 1000; // padding is larger than everything
    for (const o of [{ temperature: 0 }, { temperature: 1, topK: 1 }, { temperature: 0, topP: 0.1, minP: 0.5 }]) {
      const r = await sampleArray(ops, l, Vp, V, [req({ ...o, logprobs: true })]);
      expect(r.tokens[0]).toBe(37);
      expect(r.logprobs![0]).toBeCloseTo(ref.sample(l, V, validateSamplingOptions(o), 1, 0).logprob, 5);
    }
  });

  it('argmax over whole rows of equal logits is id 0', async () => {
    const l = new Float32Array(Vp).fill(0.5);
    const r = await sampleArray(ops, l, Vp, V, [req({ temperature: 0, logprobs: true })]);
    expect(r.tokens[0]).toBe(0);
    expect(r.logprobs![0]).toBeCloseTo(-Math.log(V), 5); // padding takes no part in the softmax
  });

  it('never draws a padded id when sampling either', async () => {
    const l = new Float32Array(Vp).fill(-5);
    for (let i = V; i < Vp; i++) l[i] = 50;
    const tokens = await drawMany(l, { temperature: 2 }, 2000);
    expect(Math.max(...tokens)).toBeLessThan(V);
  });
});

describe('repetition penalty', () => {
  const greedy = async (l: Float32Array, seen: number[], penalty: number) =>
    (await sampleArray(ops, l, Vp, V, [req({ temperature: 0, repetitionPenalty: penalty }, 0, seen)])).tokens[0];

  it('divides positive logits and multiplies negative ones', async () => {
    const pos = new Float32Array(Vp).fill(-10);
    pos[0] = 2;
    pos[1] = 1.9;
    expect(await greedy(pos, [], 1.2)).toBe(0);
    expect(await greedy(pos, [0], 1.2)).toBe(1); // 2 / 1.2 = 1.67 < 1.9
    const neg = new Float32Array(Vp).fill(-10);
    neg[0] = -1;
    neg[1] = -1.1;
    expect(await greedy(neg, [0], 1.2)).toBe(1); // -1 * 1.2 = -1.2 < -1.1 (dividing would raise it)
    const boost = new Float32Array(Vp).fill(-10);
    boost[0] = 1;
    boost[1] = 1.5;
    expect(await greedy(boost, [0], 0.5)).toBe(0); // a penalty below 1 favours seen tokens
  });

  it('penalises each distinct id once and ignores seen ids in the padding', async () => {
    const l = new Float32Array(Vp).fill(-10);
    l[0] = 2;
    l[1] = 1.5;
    // Once: 2 / 1.2 = 1.67 > 1.5. Applied three times it would be 1.16 and pick 1.
    expect(await greedy(l, [0, 0, 0, V + 3], 1.2)).toBe(0);
  });

  it('matches the reference with logprobs for mixed-sign rows', async () => {
    const B = 64;
    const all = logitsRows(B, Vp, 21, 3);
    const seqs = Array.from({ length: B }, (_, b) =>
      req({ temperature: 0.8, repetitionPenalty: 1.3, seed: b, logprobs: true }, b, [b, b + 1, 5, 5, 99, (3 * b) % Vp]),
    );
    const r = await sampleArray(ops, all, Vp, V, seqs);
    for (let b = 0; b < B; b++) {
      const want = ref.sample(row(all, b), V, seqs[b]!.options, b, b, seqs[b]!.seen);
      expect(r.tokens[b]).toBe(want.token);
      expect(r.logprobs![b]).toBeCloseTo(want.logprob, 4);
    }
  });
});

describe('exact agreement with the reference', () => {
  const pick = <T>(next: () => number, xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;

  it('over 4000 random (seed, step, options) rows', async () => {
    const next = mulberry32(99);
    const B = 4000;
    const all = logitsRows(B, Vp, 31, 2.5);
    const seqs: SampleRequest[] = [];
    for (let b = 0; b < B; b++) {
      const o: SamplingOptions = {
        temperature: pick(next, [0, 0.3, 0.7, 1, 1.5, 3]),
        topK: pick(next, [0, 0, 1, 2, 5, 40, 99, 100, 500]),
        topP: pick(next, [1, 1, 0.95, 0.8, 0.5, 0.05]),
        minP: pick(next, [0, 0, 0.01, 0.1, 0.5, 1]),
        repetitionPenalty: pick(next, [1, 1, 1.1, 1.5, 0.7]),
        seed: Math.floor(next() * 2 ** 32),
        logprobs: true,
      };
      const seen = Array.from({ length: Math.floor(next() * 12) }, () => Math.floor(next() * Vp));
      seqs.push(req(o, Math.floor(next() * 100_000), seen));
    }
    const r = await sampleArray(ops, all, Vp, V, seqs);
    let mismatches = 0;
    for (let b = 0; b < B; b++) {
      const s = seqs[b]!;
      const want = ref.sample(row(all, b), V, s.options, s.options.seed, s.step, s.seen);
      if (r.tokens[b] !== want.token) mismatches++;
      else expect(Math.abs(r.logprobs![b]! - want.logprob)).toBeLessThan(1e-4);
    }
    expect(mismatches).toBe(0);
  });

  it('on a 128256-id vocabulary (selection paths with large candidate sets)', async () => {
    const Vbig = 128256;
    const cases: SamplingOptions[] = [
      { temperature: 1 },
      { temperature: 0.8, topK: 50 },
      { temperature: 1.2, topK: 60_000 },
      { temperature: 1, topP: 0.9 },
      { temperature: 4, topP: 0.99 }, // a flat distribution: top-p keeps tens of thousands
      { temperature: 0.7, topK: 1000, topP: 0.7, minP: 0.05 },
      { temperature: 1, minP: 0.001, repetitionPenalty: 1.2 },
      { temperature: 0, repetitionPenalty: 1.2 },
    ];
    const B = cases.length;
    const all = logitsRows(B, Vbig, 41, 1.5);
    const seqs = cases.map((o, b) => req({ ...o, seed: 1000 + b, logprobs: true }, 17 * b, [0, 1, 2, 128255, b * 999]));
    const r = await sampleArray(ops, all, Vbig, Vbig, seqs);
    for (let b = 0; b < B; b++) {
      const want = ref.sample(row(all, b, Vbig), Vbig, seqs[b]!.options, 1000 + b, 17 * b, seqs[b]!.seen);
      expect(r.tokens[b], `case ${JSON.stringify(cases[b])}`).toBe(want.token);
      expect(Math.abs(r.logprobs![b]! - want.logprob)).toBeLessThan(1e-4);
    }
  });
});

describe('distributions', () => {
  // Empirical frequencies over N fixed-seed draws against the reference probabilities.
  // chi2 has (kept - 1) degrees of freedom; the bound is about 6 standard deviations above
  // its mean, which a correct sampler passes by construction (the seeds are fixed) and a
  // sampler with, say, a 10% wrong temperature fails by a wide margin (checked below).
  const N = 20_000;
  function chi2(tokens: Int32Array, probs: Float64Array): number {
    const counts = new Float64Array(probs.length);
    for (const t of tokens) counts[t]!++;
    let c = 0;
    for (let i = 0; i < probs.length; i++) {
      if (probs[i]! > 0) c += (counts[i]! - N * probs[i]!) ** 2 / (N * probs[i]!);
      else if (counts[i]! > 0) return Infinity; // drawn but outside the kept set
    }
    return c;
  }
  const bound = (df: number) => df + 6 * Math.sqrt(2 * df) + 10;

  const base = logitsRows(1, Vp, 51, 1.5);
  const cases: [string, SamplingOptions][] = [
    ['plain softmax', { temperature: 1 }],
    ['low temperature', { temperature: 0.5 }],
    ['top-k 10', { temperature: 1, topK: 10 }],
    ['top-p 0.8', { temperature: 1.2, topP: 0.8 }],
    ['min-p 0.1', { temperature: 1, minP: 0.1 }],
    ['all together with a penalty', { temperature: 0.9, topK: 30, topP: 0.9, minP: 0.02, repetitionPenalty: 1.3 }],
  ];
  for (const [name, o] of cases) {
    it(name, async () => {
      const seen = [0, 5, 17, 42];
      const resolved = validateSamplingOptions({ seed: 123, ...o });
      const d = ref.distribution(base, V, resolved, seen);
      const tokens = await drawMany(base, { ...o, seed: 123 }, N, seen);
      const kept = new Set(d.kept);
      for (const t of tokens) expect(kept.has(t)).toBe(true);
      expect(chi2(tokens, d.probs)).toBeLessThan(bound(d.kept.length - 1));
      // The test has teeth: the same draws are far from a 25% hotter distribution.
      const wrong = ref.distribution(base, V, { ...resolved, temperature: resolved.temperature * 1.25 }, seen);
      expect(chi2(tokens, wrong.probs)).toBeGreaterThan(bound(wrong.kept.length - 1));
    });
  }
});

describe('truncation never leaves the kept set', () => {
  it('top-k, top-p and min-p over many rows and steps', async () => {
    const next = mulberry32(7);
    const B = 3000;
    const all = logitsRows(B, Vp, 61, 3);
    const seqs: SampleRequest[] = [];
    for (let b = 0; b < B; b++) {
      const kind = b % 3;
      seqs.push(
        req(
          {
            temperature: 0.5 + 2 * next(),
            topK: kind === 0 ? 1 + Math.floor(next() * 20) : 0,
            topP: kind === 1 ? 0.1 + 0.8 * next() : 1,
            minP: kind === 2 ? 0.05 + 0.5 * next() : 0,
            seed: b,
          },
          b,
        ),
      );
    }
    const r = await sampleArray(ops, all, Vp, V, seqs);
    for (let b = 0; b < B; b++) {
      const d = ref.distribution(row(all, b), V, seqs[b]!.options);
      expect(d.kept.includes(r.tokens[b]!)).toBe(true);
      // And the kept sets mean what they say.
      const o = seqs[b]!.options;
      if (o.topK > 0) expect(d.kept.length).toBeLessThanOrEqual(o.topK);
      if (o.minP > 0) for (const i of d.kept) expect(d.weights[i]!).toBeGreaterThanOrEqual(Math.fround(o.minP));
    }
  });
});

describe('determinism and batching', () => {
  const l = logitsRows(1, Vp, 71, 1);

  it('the same seed gives the same tokens; another seed gives others', async () => {
    const a = await drawMany(l, { seed: 5 }, 64);
    const b = await drawMany(l, { seed: 5 }, 64);
    const c = await drawMany(l, { seed: 6 }, 64);
    expect([...a]).toEqual([...b]);
    const same = a.reduce((n, t, i) => n + (t === c[i] ? 1 : 0), 0);
    expect(same).toBeLessThan(20);
  });

  it('a batch of rows gives what each row gives alone', async () => {
    const B = 12;
    const all = logitsRows(B, Vp, 81, 2);
    const seqs = Array.from({ length: B }, (_, b) =>
      req({ temperature: 0.6 + 0.1 * b, topK: b % 4 ? 0 : 8, topP: b % 3 ? 1 : 0.7, repetitionPenalty: 1.1, seed: 300 + b, logprobs: true }, b * 3, [b, 2 * b]),
    );
    const batch = await sampleArray(ops, all, Vp, V, seqs);
    for (let b = 0; b < B; b++) {
      const alone = await sampleArray(ops, row(all, b), Vp, V, [seqs[b]!]);
      expect(alone.tokens[0]).toBe(batch.tokens[b]);
      expect(alone.logprobs![0]).toBe(batch.logprobs![b]);
    }
  });

  it('reads strided rows of a wider logits tensor', async () => {
    const B = 5;
    const ld = Vp + 24;
    const wide = new Float32Array(B * ld).fill(NaN); // columns outside the view must not be read
    const all = logitsRows(B, Vp, 91, 2);
    for (let b = 0; b < B; b++) wide.set(row(all, b), b * ld + 8);
    const t = native.tensor(wide, [B, ld]).cols(8, 8 + Vp);
    const seqs = Array.from({ length: B }, (_, b) => req({ temperature: 1, topP: 0.9, seed: b }, b));
    const sampler = new Sampler(ops, V);
    const r = await sampler.sample(t, seqs);
    const want = await sampleArray(ops, all, Vp, V, seqs);
    expect([...r.tokens]).toEqual([...want.tokens]);
    sampler.dispose();
    t.dispose();
  });
});

describe('errors', () => {
  it('validateSamplingOptions names the bad field', () => {
    const bad: [SamplingOptions, RegExp][] = [
      [{ temperature: -1 }, /'temperature' must be a finite number >= 0/],
      [{ temperature: Infinity }, /'temperature'/],
      [{ topK: 1.5 }, /'topK' must be an integer >= 0/],
      [{ topK: -1 }, /'topK'/],
      [{ topP: 0 }, /'topP' must be in \(0, 1\]/],
      [{ topP: 1.01 }, /'topP'/],
      [{ minP: -0.1 }, /'minP' must be in \[0, 1\]/],
      [{ minP: NaN }, /'minP'/],
      [{ repetitionPenalty: 0 }, /'repetitionPenalty' must be a finite number > 0/],
      [{ seed: -1 }, /'seed' must be an integer in \[0, 4294967295\]/],
      [{ seed: 2 ** 32 }, /'seed'/],
      [{ temperature: '1' as unknown as number }, /'temperature'.*got "1"/],
      [{ logprobs: 1 as unknown as boolean }, /'logprobs' must be a boolean/],
    ];
    for (const [o, msg] of bad) {
      expect(() => validateSamplingOptions(o)).toThrow(RangeError);
      expect(() => validateSamplingOptions(o)).toThrow(msg);
    }
  });

  it('fills the documented defaults, with a random seed when none is given', () => {
    const o = validateSamplingOptions();
    expect(o).toMatchObject({ temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, logprobs: false });
    expect(Number.isInteger(o.seed) && o.seed >= 0 && o.seed < 2 ** 32).toBe(true);
    expect(validateSamplingOptions().seed).not.toBe(o.seed); // 1 in 4 billion to fail
  });

  // The op itself, called with settings the TypeScript would have refused.
  function callOp(params: number[], extra: { seen?: NativeTensor; steps?: number[]; vocab?: number } = {}) {
    const B = params.length / 5;
    const logits = native.tensor(logitsRows(B, Vp, 1), [B, Vp]);
    ops.sample(
      {
        logits,
        params: native.tensor(Float32Array.from(params), [B, 5]),
        seeds: native.tensor(new Int32Array(B), [B], 'i32'),
        steps: native.tensor(Int32Array.from(extra.steps ?? new Array(B).fill(0)), [B], 'i32'),
        seen: extra.seen ?? null,
      },
      { tokens: native.empty([B], 'i32') },
      extra.vocab ?? V,
    );
  }
  const ok = [1, 0, 1, 0, 1];

  it('the op rejects bad settings with a TypeError naming the sequence and field', () => {
    const cases: [number[], RegExp][] = [
      [[-0.5, 0, 1, 0, 1], /sample: sequence 1: temperature must be a finite number >= 0, got -0.5/],
      [[NaN, 0, 1, 0, 1], /sequence 1: temperature/],
      [[1, 2.5, 1, 0, 1], /sequence 1: top_k must be an integer >= 0, got 2.5/],
      [[1, 0, 0, 0, 1], /sequence 1: top_p must be in \(0, 1\], got 0/],
      [[1, 0, 1, 2, 1], /sequence 1: min_p must be in \[0, 1\], got 2/],
      [[1, 0, 1, 0, 0], /sequence 1: repetition_penalty must be a finite number > 0, got 0/],
    ];
    for (const [p, msg] of cases) {
      expect(() => callOp([...ok, ...p])).toThrow(TypeError);
      expect(() => callOp([...ok, ...p])).toThrow(msg);
    }
    expect(() => callOp(ok, { steps: [-1] })).toThrow(/sequence 0: step must be >= 0/);
    expect(() => callOp(ok, { vocab: Vp + 1 })).toThrow(/'vocab' \(113\) must be in \[1, 112\]/);
    expect(() => callOp(ok, { vocab: 0 })).toThrow(/'vocab'/);
    const seen = native.tensor(Int32Array.from([3, -1, Vp]), [1, 3], 'i32');
    expect(() => callOp(ok, { seen })).toThrow(/sequence 0: seen id 112 is out of range \[0, 112\)/);
    const seen2 = native.tensor(Int32Array.from([3, -2]), [1, 2], 'i32');
    expect(() => callOp(ok, { seen: seen2 })).toThrow(/seen id -2/);
    ops.syncBlocking(); // nothing was queued
  });

  it('the Sampler checks its requests', async () => {
    const t = native.tensor(logitsRows(2, Vp, 3), [2, Vp]);
    const s = new Sampler(ops, V);
    await expect(s.sample(t, [req({})])).rejects.toThrow(/1 requests for 2 rows/);
    await expect(s.sample(t, [req({}), req({}, -1)])).rejects.toThrow(/sequence 1: step must be/);
    await expect(s.sample(t, [req({ repetitionPenalty: 1.1 }, 0, [Vp]), req({})])).rejects.toThrow(/seen id 112/);
    expect(() => new Sampler(ops, 0)).toThrow(/vocab/);
    await expect(new Sampler(ops, Vp + 1).sample(t, [req({}), req({})])).rejects.toThrow(/fewer than the vocabulary/);
    s.dispose();
    await expect(s.sample(t, [req({}), req({})])).rejects.toThrow(/disposed/);
    t.dispose();
  });

  it('NaN or +Infinity logits reject the promise, naming the sequence', async () => {
    const all = logitsRows(3, Vp, 5);
    all[Vp + 10] = NaN;
    const seqs = [req({}), req({ temperature: 0 }), req({})];
    await expect(sampleArray(ops, all, Vp, V, seqs)).rejects.toThrow(/sample failed: sequence 1: the logits contain NaN \(id 10\)/);
    all[Vp + 10] = Infinity;
    await expect(sampleArray(ops, all, Vp, V, seqs)).rejects.toThrow(/sequence 1: a logit is \+Infinity \(id 10\)/);
    const dead = new Float32Array(Vp).fill(-Infinity);
    dead[V] = 1; // only padding is finite
    await expect(sampleArray(ops, dead, Vp, V, [req({})])).rejects.toThrow(/sequence 0: every logit is -Infinity/);
    // NaN in the padding is never read.
    const padNaN = logitsRows(1, Vp, 6);
    padNaN[V + 1] = NaN;
    await expect(sampleArray(ops, padNaN, Vp, V, [req({})])).resolves.toBeTruthy();
    // The stream still works afterwards.
    expect((await sampleArray(ops, row(all, 0), Vp, V, [req({ temperature: 0 })])).tokens.length).toBe(1);
  });

  it('-Infinity logits are simply never drawn', async () => {
    const l = logitsRows(1, Vp, 8);
    for (let i = 0; i < V; i += 2) l[i] = -Infinity;
    const tokens = await drawMany(l, { temperature: 1.5, seed: 3 }, 2000);
    for (const t of tokens) expect(t % 2).toBe(1);
  });
});
