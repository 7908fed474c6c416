// The Selective Attention Layer's CPU ops (sal_gate, linear with count, rope, sal_attention,
// sal_kv_write, sal_mix, swiglu) against float64 references, on the AVX2 and portable paths.
// The strongest check composes them into a whole SAL run chunk by chunk and compares it with
// the oracle test/reference/sal.ts `salLayer` for every option combination.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addon, type NativeTensor } from '../lib/native.js';
import { Ops, type StateArg } from '../lib/ops.js';
import { relError } from './helpers/models.js';
import { randomWeights, tinyConfig } from './reference/fixtures.js';
import * as ref from './reference/ops.js';
import { randu } from './reference/rng.js';
import { cpuPaths, filled, i32, read, readInt, seeded, t } from './helpers/tensors.js';
import { emptySalState, salLayer } from './reference/sal.js';
import type { RefSalConfig, RefWeights, SalPastToken, SalState } from './reference/types.js';

const native = addon();
const seeds = seeded(5000);
const rand = seeds.rand;
function rowsOf(x: Float64Array, n: number, from: number, to: number): Float64Array {
  return x.slice(from * n, to * n);
}
/** Place rows of `cols` values into a wider matrix of `ld` columns at column `at`: a strided view. */
function strided(data: Float64Array, rows: number, cols: number, ld: number, at: number): NativeTensor {
  const wide = new Float64Array(rows * ld).fill(NaN);
  for (let r = 0; r < rows; r++) wide.set(data.subarray(r * cols, (r + 1) * cols), r * ld + at);
  return t(wide, [rows, ld]).cols(at, at + cols);
}

/** The gate in float64: s = rms(r) * norm @ gw^T + gb. */
function refGate(r: Float64Array, norm: Float64Array, gw: Float64Array, gb: Float64Array, M: number, d: number) {
  const x = ref.rmsnorm(r, norm, M, d, 1e-5);
  const s = ref.linear(x, gw, M, d, 2, gb);
  const diff = Array.from({ length: M }, (_, i) => s[2 * i + 1]! - s[2 * i]!);
  return { x, diff, prob: Float64Array.from(diff, ref.sigmoid), mask: diff.map((v) => (v > 0 ? 1 : 0)) };
}

/** Ring buffers for B sequences: one [B, W, HD] tensor each, or lists of B [W, HD] tensors. */
interface Caches {
  kCache: StateArg;
  vCache: StateArg;
  cachePos: StateArg;
}
function newCaches(B: number, W: number, HD: number, form: 'batched' | 'list'): Caches {
  // Stale key/value slots are NaN: using one that cache_pos does not vouch for shows at once.
  const one = (lead: number[]) => ({
    k: filled([...lead, W, HD]),
    v: filled([...lead, W, HD]),
    pos: i32(new Array(lead.reduce((a, b) => a * b, 1) * W).fill(-1), [...lead, W]),
  });
  if (form === 'batched') {
    const c = one([B]);
    return { kCache: c.k, vCache: c.v, cachePos: c.pos };
  }
  const cs = Array.from({ length: B }, () => one([]));
  return { kCache: cs.map((c) => c.k), vCache: cs.map((c) => c.v), cachePos: cs.map((c) => c.pos) };
}
/** The caches of sequence b alone, as a batch of one. */
function cachesOf(c: Caches, b: number): Caches {
  const pick = (s: StateArg) => (Array.isArray(s) ? [s[b]!] : s.rows(b, b + 1));
  return { kCache: pick(c.kCache), vCache: pick(c.vCache), cachePos: pick(c.cachePos) };
}

for (const path of cpuPaths) {
  describe(`SAL ops, ${path} path`, () => {
    const ops = new Ops('cpu');
    beforeAll(() => native.setPortable(path === 'portable'));
    afterAll(() => native.setPortable(false));

    describe('sal_gate', () => {
      function runGate(M: number, d: number, gb: [number, number], withDelta: boolean) {
        const r = rand(M * d, 2);
        const delta = rand(M * d);
        const norm = rand(d).map((v) => 1 + 0.1 * v);
        const gw = rand(2 * d, 1 / Math.sqrt(d));
        const gbias = Float64Array.from(gb);
        const T = {
          residual: t(r, [M, d]),
          delta: withDelta ? t(delta, [M, d]) : null,
          norm: t(norm, [d]),
          gateWeight: t(gw, [2, d]),
          gateBias: t(gbias, [2]),
          x: filled([M, d]),
          prob: filled([M]),
          mask: i32(new Array(M).fill(-7)),
          index: i32(new Array(M).fill(-7)),
          count: i32([-7]),
          gathered: filled([M, d], 7),
        };
        ops.salGate(T, 1e-5);
        ops.syncBlocking();
        const rIn = withDelta ? Float64Array.from(Float32Array.from(ref.add(r, delta))) : r;
        const want = refGate(rIn, norm, gw, gbias, M, d);
        expect(relError(read(T.residual), rIn)).toBe(0);
        expect(relError(read(T.x), want.x)).toBeLessThan(1e-6);
        const prob = read(T.prob); // in [0, 1]: an absolute error (1e-87 may round to 0 in f32)
        expect(Math.max(...prob.map((v, i) => Math.abs(v - want.prob[i]!)))).toBeLessThan(1e-6);
        const mask = readInt(T.mask);
        for (let i = 0; i < M; i++) if (Math.abs(want.diff[i]!) > 1e-5) expect(mask[i]).toBe(want.mask[i]);
        const selected = mask.flatMap((m, i) => (m ? [i] : []));
        const count = readInt(T.count)[0]!;
        expect(count).toBe(selected.length);
        const index = readInt(T.index);
        expect(index.slice(0, count)).toEqual(selected);
        expect(index.slice(count)).toEqual(new Array(M - count).fill(-7)); // past count: untouched
        const gathered = read(T.gathered);
        const x = read(T.x);
        for (let k = 0; k < count; k++) expect(rowsOf(gathered, d, k, k + 1)).toEqual(rowsOf(x, d, selected[k]!, selected[k]! + 1));
        expect(gathered.slice(count * d).every((v) => v === 7)).toBe(true);
        return { count, mask };
      }
      for (const [M, d] of [[1, 8], [37, 20], [64, 64], [9, 131]]) {
        it(`M=${M} d=${d}: values, mask, index order, gathered rows`, () => {
          runGate(M!, d!, [0.3, -0.3], false);
        });
      }
      it('fuses the residual add (delta)', () => {
        const { count } = runGate(40, 24, [0, 0], true);
        expect(count).toBeGreaterThan(0);
        expect(count).toBeLessThan(40);
      });
      it('none selected', () => {
        const { count, mask } = runGate(20, 16, [100, -100], false);
        expect(count).toBe(0);
        expect(mask.every((m) => m === 0)).toBe(true);
      });
      it('all selected', () => {
        const { count, mask } = runGate(20, 16, [-100, 100], true);
        expect(count).toBe(20);
        expect(mask.every((m) => m === 1)).toBe(true);
      });
    });

    describe('linear with count', () => {
      for (const [M, K, N] of [[9, 24, 10], [60, 40, 33]]) {
        for (const c of [0, 1, 4, M!, M! + 5, -3]) {
          it(`M=${M} K=${K} N=${N} count=${c}`, () => {
            const x = rand(M! * K!);
            const w = rand(N! * K!);
            const y = filled([M!, N!], 7);
            ops.linear(t(x, [M!, K!]), t(w, [N!, K!]), y, i32([c]));
            ops.syncBlocking();
            const rows = Math.max(0, Math.min(c, M!));
            const got = read(y);
            if (rows > 0) expect(relError(got.slice(0, rows * N!), ref.linear(x.slice(0, rows * K!), w, rows, K!, N!))).toBeLessThan(1e-5);
            expect(got.slice(rows * N!).every((v) => v === 7)).toBe(true);
          });
        }
      }
      it('reads count when the op runs, not when it is queued', () => {
        const [M, K, N] = [6, 8, 4];
        const x = rand(M * K);
        const w = rand(N * K);
        const count = i32([0]);
        const y = filled([M, N], 7);
        ops.copy(i32([2]), count); // an earlier queued op produces the count
        ops.linear(t(x, [M, K]), t(w, [N, K]), y, count);
        ops.syncBlocking();
        const got = read(y);
        expect(relError(got.slice(0, 2 * N), ref.linear(x.slice(0, 2 * K), w, 2, K, N))).toBeLessThan(1e-5);
        expect(got.slice(2 * N).every((v) => v === 7)).toBe(true);
      });
    });

    describe('rope', () => {
      const theta = 10000;
      it('every row of a chunk, strided, B=2', () => {
        const [B, L, H, hd] = [2, 5, 3, 8];
        const M = B * L;
        const x = rand(M * H * hd);
        const starts = [0, 17];
        const xT = strided(x, M, H * hd, H * hd + 5, 2);
        ops.rope(xT, i32(starts), { headDim: hd, length: L, theta });
        ops.syncBlocking();
        const pos = Array.from({ length: M }, (_, r) => starts[Math.floor(r / L)]! + (r % L));
        expect(relError(read(xT), ref.rope(x, M, H, hd, pos, theta))).toBeLessThan(1e-6);
      });
      it('gathered rows with index and count, positions near 1e6', () => {
        const [L, H, hd] = [7, 2, 12]; // B = 3 sequences (the length of starts)
        const R = 9;
        const x = rand(R * H * hd);
        const starts = [1_000_000, 3, 2_500_001];
        const index = [0, 6, 7, 8, 13, 14, 20, 1, 2];
        const count = 7;
        const xT = t(x, [R, H * hd]);
        ops.rope(xT, i32(starts), { headDim: hd, length: L, theta }, i32(index), i32([count]));
        ops.syncBlocking();
        const pos = index.slice(0, count).map((row) => starts[Math.floor(row / L)]! + (row % L));
        const got = read(xT);
        const w = H * hd;
        expect(relError(got.slice(0, count * w), ref.rope(x.slice(0, count * w), count, H, hd, pos, theta))).toBeLessThan(1e-6);
        expect(got.slice(count * w)).toEqual(x.slice(count * w)); // rows past count untouched
      });
      it('head_dim 2 and theta 500000, a decode step (L = 1)', () => {
        const [B, H, hd] = [4, 5, 2];
        const x = rand(B * H * hd);
        const starts = [0, 1, 999_999, 123_456];
        const xT = t(x, [B, H * hd]);
        ops.rope(xT, i32(starts), { headDim: hd, length: 1, theta: 500000 });
        ops.syncBlocking();
        expect(relError(read(xT), ref.rope(x, B, H, hd, starts, 500000))).toBeLessThan(1e-6);
      });
    });

    describe('sal_attention + sal_kv_write', () => {
      // The history each sequence has seen, position by position, in float64.
      interface Seq {
        first: number; // position of the first token the caches have seen
        k: Float64Array[];
        v: Float64Array[];
        sel: boolean[];
      }
      function refAttend(q: Float64Array, s: Seq, p: number, W: number, H: number, hd: number, kvSel: boolean): Float64Array {
        const out = new Float64Array(H * hd);
        const keys: number[] = [];
        for (let j = Math.max(s.first, p - W + 1); j <= p; j++) if (!kvSel || s.sel[j - s.first]) keys.push(j - s.first);
        for (let h = 0; h < H; h++) {
          const scores = keys.map((j) => {
            let dot = 0;
            for (let c = 0; c < hd; c++) dot += q[h * hd + c]! * s.k[j]![h * hd + c]!;
            return dot / Math.sqrt(hd);
          });
          const pr = ref.softmax(scores);
          keys.forEach((j, n) => {
            for (let c = 0; c < hd; c++) out[h * hd + c] = out[h * hd + c]! + pr[n]! * s.v[j]![h * hd + c]!;
          });
        }
        return out;
      }
      /**
       * One chunk of L tokens per sequence: random q/k/v, mask from `pick(b, t)`; the selected
       * rows are the queries. Checks the context of every query and that rows past count are untouched.
       */
      function chunk(seqs: Seq[], caches: Caches, L: number, W: number, H: number, hd: number, kv: 'all' | 'selected', pick: (b: number, t: number) => boolean) {
        const B = seqs.length;
        const M = B * L;
        const HD = H * hd;
        const starts = seqs.map((s) => s.first + s.k.length);
        const k = rand(M * HD);
        const v = rand(M * HD);
        const mask = Array.from({ length: M }, (_, i) => (pick(Math.floor(i / L), i % L) ? 1 : 0));
        const index = mask.flatMap((m, i) => (m ? [i] : []));
        const qAll = rand(index.length * HD);
        const q = new Float64Array(M * HD).fill(NaN);
        q.set(qAll);
        const kvT = t(new Float64Array(M * 2 * HD), [M, 2 * HD]);
        kvT.cols(0, HD).write(Float32Array.from(k));
        kvT.cols(HD, 2 * HD).write(Float32Array.from(v));
        const out = filled([M, HD], 7);
        const tensors = {
          k: kvT.cols(0, HD),
          v: kvT.cols(HD, 2 * HD),
          mask: i32(mask),
          start: i32(starts),
          ...caches,
        };
        ops.salAttention(
          { ...tensors, q: t(q, [M, HD]), index: i32([...index, ...new Array(M - index.length).fill(-1)]), count: i32([index.length]), out },
          { batch: B, window: W, headDim: hd, kv },
        );
        ops.salKvWrite(tensors, { batch: B, window: W, kv });
        ops.syncBlocking();
        for (let i = 0; i < M; i++) {
          const s = seqs[Math.floor(i / L)]!;
          s.k.push(k.slice(i * HD, (i + 1) * HD));
          s.v.push(v.slice(i * HD, (i + 1) * HD));
          s.sel.push(mask[i] === 1);
        }
        const got = read(out);
        index.forEach((row, n) => {
          const b = Math.floor(row / L);
          const want = refAttend(qAll.slice(n * HD, (n + 1) * HD), seqs[b]!, starts[b]! + (row % L), W, H, hd, kv === 'selected');
          expect(relError(got.slice(n * HD, (n + 1) * HD), want)).toBeLessThan(1e-5);
        });
        expect(got.slice(index.length * HD).every((x) => x === 7)).toBe(true);
      }

      for (const kv of ['all', 'selected'] as const) {
        for (const [W, form] of [[4, 'list'], [9, 'batched']] as const) {
          it(`kv=${kv} W=${W}: only positions 0 and L-1 selected, B=3, starts 0 / 5 / 1e6, ${form} caches`, () => {
            const [H, hd] = [2, 12];
            const seqs: Seq[] = [0, 5, 1_000_000].map((first) => ({ first, k: [], v: [], sel: [] }));
            const caches = newCaches(3, W, H * hd, form);
            for (const L of [1, 3, W - 1, W, W + 1, 2 * W + 3, 1, 1]) {
              chunk(seqs, caches, L, W, H, hd, kv, (_b, tt) => tt === 0 || tt === L - 1);
            }
          });
          it(`kv=${kv} W=${W}: random selections, chunk sizes 1 .. > W, then none selected`, () => {
            const [H, hd] = [3, 40];
            const seqs: Seq[] = [3, 0].map((first) => ({ first, k: [], v: [], sel: [] }));
            const caches = newCaches(2, W, H * hd, form);
            const u = randu(10000, seeds.next());
            let n = 0;
            for (const L of [2, 1, W, W + 1, 3, W - 1, 3 * W]) chunk(seqs, caches, L, W, H, hd, kv, () => u[n++]! < 0.4);
            chunk(seqs, caches, 5, W, H, hd, kv, () => false); // count 0: nothing computed, caches still written
            chunk(seqs, caches, 2, W, H, hd, kv, () => true);
          });
        }
      }
      it('many queries per window (full query tiles), B=2, W=32, every token selected', () => {
        const [H, hd, W] = [4, 16, 32];
        for (const kv of ['all', 'selected'] as const) {
          const seqs: Seq[] = [0, 40].map((first) => ({ first, k: [], v: [], sel: [] }));
          const caches = newCaches(2, W, H * hd, 'list');
          for (const L of [20, 50, 7]) chunk(seqs, caches, L, W, H, hd, kv, (b, tt) => b === 0 || tt % 3 !== 1);
        }
      });
      it('clamps count to M and skips index values outside [0, M)', () => {
        const [M, H, hd, W] = [4, 1, 8, 4];
        const caches = newCaches(1, W, H * hd, 'batched');
        const q = rand(M * H * hd);
        const kv = rand(M * H * hd);
        const out = filled([M, H * hd], 7);
        const tensors = { k: t(kv, [M, H * hd]), v: t(kv, [M, H * hd]), mask: i32([1, 1, 1, 1]), start: i32([0]), ...caches };
        ops.salAttention(
          { ...tensors, q: t(q, [M, H * hd]), index: i32([0, -1, 9, 3]), count: i32([1000]), out },
          { batch: 1, window: W, headDim: hd, kv: 'all' },
        );
        ops.syncBlocking();
        const got = read(out);
        expect(got.slice(0, H * hd).some((x) => x === 7)).toBe(false);
        expect(got.slice(H * hd, 3 * H * hd).every((x) => x === 7)).toBe(true);
        expect(got.slice(3 * H * hd).some((x) => x === 7)).toBe(false);
      });
    });

    describe('sal_mix', () => {
      for (const mix of ['residual', 'normalized'] as const) {
        it(mix, () => {
          const [M, d] = [10, 20];
          const r = rand(M * d);
          const o = rand(M * d);
          const x = rand(M * d);
          const prob = Float64Array.from(Float32Array.from(randu(M, seeds.next())));
          const index = [1, 4, 9, 0, 0, 0, 0, 0, 0, 0];
          const count = 3;
          const rT = t(r, [M, d]);
          ops.salMix({ residual: rT, o: t(o, [M, d]), index: i32(index), count: i32([count]), prob: t(prob, [M]), x: strided(x, M, d, d + 3, 1) }, mix);
          ops.syncBlocking();
          const want = r.slice();
          for (let k = 0; k < count; k++) {
            const i = index[k]!;
            const a = prob[i]!;
            for (let c = 0; c < d; c++) {
              const ri = r[i * d + c]!;
              want[i * d + c] = mix === 'residual' ? (1 - a) * ri + a * o[k * d + c]! : ri + (1 - a) * x[i * d + c]! + a * o[k * d + c]!;
            }
          }
          expect(relError(read(rT), want)).toBeLessThan(1e-6);
        });
      }
    });

    describe('swiglu', () => {
      for (const [M, F] of [[1, 3], [5, 64], [33, 100]]) {
        it(`M=${M} F=${F}, h strided`, () => {
          const h = rand(M! * 2 * F!, 3);
          const o = filled([M!, F!]);
          ops.swiglu(strided(h, M!, 2 * F!, 2 * F! + 7, 3), o);
          ops.syncBlocking();
          expect(relError(read(o), ref.swiglu(h, M!, F!))).toBeLessThan(1e-6);
        });
      }
    });

    describe('a whole SAL, chunk by chunk, against the reference salLayer', () => {
      const prefix = 'backbone.layers.0.';
      /** The reference weights rounded to f32, with the gate bias set, and native copies of them. */
      function setup(sal: Partial<RefSalConfig>, d: number, gateBias: [number, number]) {
        const cfg = tinyConfig({ d_model: d, layer_types: ['sal'], sal });
        const weights: RefWeights = new Map();
        for (const [name, w] of randomWeights(cfg, seeds.next())) weights.set(name, Float64Array.from(Float32Array.from(w)));
        weights.set(prefix + 'mixer.gate.bias', Float64Array.from(gateBias));
        const s = cfg.sal!;
        const HD = s.n_heads * s.head_dim;
        const W = (name: string, shape: number[]) => t(weights.get(prefix + name)!, shape);
        const kv = new Float64Array(2 * HD * d);
        kv.set(weights.get(prefix + 'mixer.k_proj.weight')!);
        kv.set(weights.get(prefix + 'mixer.v_proj.weight')!, HD * d);
        const nw = {
          norm: W('norm.weight', [d]),
          gateW: W('mixer.gate.weight', [2, d]),
          gateB: W('mixer.gate.bias', [2]),
          q: W('mixer.q_proj.weight', [HD, d]),
          kv: t(kv, [2 * HD, d]), // k and v in one GEMM: they reach attention as strided views
          o: W('mixer.o_proj.weight', [d, HD]),
          norm2: W('norm2.weight', [d]),
          fc1: W('mlp.fc1.weight', [2 * s.d_ff, d]),
          fc2: W('mlp.fc2.weight', [d, s.d_ff]),
        };
        return { cfg, weights, nw };
      }
      type Setup = ReturnType<typeof setup>;

      /** One SAL over a chunk of B sequences x L tokens, composed from the native ops. */
      function nativeChunk(S: Setup, caches: Caches, r: Float64Array, B: number, L: number, starts: number[]) {
        const s = S.cfg.sal!;
        const d = S.cfg.d_model;
        const HD = s.n_heads * s.head_dim;
        const F = s.d_ff;
        const M = B * L;
        const eps = S.cfg.norm_eps;
        const rT = t(r, [M, d]);
        const x = filled([M, d]);
        const prob = filled([M]);
        const mask = i32(new Array(M).fill(0));
        const index = i32(new Array(M).fill(0));
        const count = i32([0]);
        const gathered = filled([M, d]); // rows past count stay NaN: nothing may read them
        ops.salGate({ residual: rT, delta: null, norm: S.nw.norm, gateWeight: S.nw.gateW, gateBias: S.nw.gateB, x, prob, mask, index, count, gathered }, eps);
        const kv = filled([M, 2 * HD]);
        ops.linear(x, S.nw.kv, kv);
        const [k, v] = [kv.cols(0, HD), kv.cols(HD, 2 * HD)];
        const start = i32(starts);
        const rp = { headDim: s.head_dim, length: L, theta: s.rope?.theta ?? 0 };
        if (s.rope) ops.rope(k, start, rp);
        const q = filled([M, HD]);
        ops.linear(gathered, S.nw.q, q, count);
        if (s.rope) ops.rope(q, start, rp, index, count);
        const ctx = filled([M, HD]);
        const p = { batch: B, window: s.window, headDim: s.head_dim, kv: s.kv };
        ops.salAttention({ q, index, count, k, v, mask, start, ...caches, out: ctx }, p);
        ops.salKvWrite({ k, v, mask, start, ...caches }, p);
        const o = filled([M, d]);
        ops.linear(ctx, S.nw.o, o, count);
        ops.salMix({ residual: rT, o, index, count, prob, x }, s.mix);
        const h = filled([M, d]);
        ops.rmsnorm(rT, null, S.nw.norm2, h, eps);
        const up = filled([M, 2 * F]);
        ops.linear(h, S.nw.fc1, up);
        const act = filled([M, F]);
        ops.swiglu(up, act);
        const y = filled([M, d]);
        ops.linear(act, S.nw.fc2, y);
        const res = filled([M, d]);
        ops.add(rT, y, res);
        ops.syncBlocking();
        return { out: read(res), mask: readInt(mask), prob: read(prob) };
      }

      /** Run `chunks` (tokens per sequence) on both sides and compare every chunk. */
      function compare(S: Setup, caches: Caches, state: SalState, B: number, chunks: number[]): SalState {
        const d = S.cfg.d_model;
        let st = state;
        for (const L of chunks) {
          const r = rand(B * L * d);
          const starts = st.seqs.map((s) => s.length);
          const got = nativeChunk(S, caches, r, B, L, starts);
          const want = salLayer(r, S.weights, 'backbone.layers.0', S.cfg, B, L, st);
          expect(got.mask).toEqual(want.mask.map((m) => (m ? 1 : 0)));
          expect(relError(got.prob, want.gateProb)).toBeLessThan(1e-5);
          expect(relError(got.out, want.out)).toBeLessThan(2e-5);
          st = want.state;
        }
        return st;
      }

      const combos: { kv: 'all' | 'selected'; mix: 'residual' | 'normalized'; rope: { theta: number } | null }[] = [];
      for (const kv of ['all', 'selected'] as const)
        for (const mix of ['residual', 'normalized'] as const)
          for (const rope of [null, { theta: 10000 }]) combos.push({ kv, mix, rope });
      combos.forEach((c, ci) => {
        const name = `kv=${c.kv} mix=${c.mix} rope=${c.rope ? 'on' : 'off'}`;
        const headDim = [4, 12, 16, 40][ci % 4]!;
        it(`${name}: B=1, W=5, chunks 1, 3, W-1, W, W+1, > W (head_dim ${headDim})`, () => {
          const S = setup({ ...c, window: 5, n_heads: 2, head_dim: headDim }, 32, [0.4, -0.4]);
          const caches = newCaches(1, 5, 2 * headDim, 'list');
          compare(S, caches, emptySalState(1), 1, [1, 3, 4, 5, 6, 11, 1]);
        });
        it(`${name}: B=3 with different starts, W=7 > some chunks (head_dim ${headDim})`, () => {
          const W = 7;
          const S = setup({ ...c, window: W, n_heads: 3, head_dim: headDim }, 24, [0.2, -0.2]);
          const caches = newCaches(3, W, 3 * headDim, 'batched');
          // Bring the sequences to different positions one at a time (views of the batched caches).
          const seqs: SalPastToken[][] = [];
          [0, 2, 9].forEach((len, b) => {
            const one = len === 0 ? emptySalState(1) : compare(S, cachesOf(caches, b), emptySalState(1), 1, [len]);
            seqs.push(one.seqs[0]!);
          });
          compare(S, caches, { kind: 'sal', seqs }, 3, [1, 6, 7, 8, 20, 1]);
        });
        it(`${name}: a whole sequence at once, W=4 < L=30, B=2`, () => {
          const S = setup({ ...c, window: 4, n_heads: 2, head_dim: headDim }, 16, [0, 0]);
          compare(S, newCaches(2, 4, 2 * headDim, 'batched'), emptySalState(2), 2, [30]);
        });
      });
      it('window longer than the sequence (W=64, 40 tokens in chunks)', () => {
        const S = setup({ kv: 'selected', mix: 'residual', rope: { theta: 10000 }, window: 64, n_heads: 2, head_dim: 8 }, 32, [0.3, -0.3]);
        compare(S, newCaches(2, 64, 16, 'list'), emptySalState(2), 2, [10, 1, 29]);
      });
    });

    describe('argument errors', () => {
      const [M, HD, W] = [4, 8, 3];
      const base = () => {
        const caches = newCaches(1, W, HD, 'batched');
        return {
          q: filled([M, HD]), index: i32([0, 1, 2, 3]), count: i32([4]), k: filled([M, HD]), v: filled([M, HD]),
          mask: i32([1, 1, 1, 1]), start: i32([0]), ...caches, out: filled([M, HD]),
        };
      };
      const p = { batch: 1, window: W, headDim: 4, kv: 'all' as const };
      it('sal_attention', () => {
        expect(() => ops.salAttention({ ...base(), q: filled([M, HD + 1]) }, p)).toThrow(TypeError);
        expect(() => ops.salAttention({ ...base(), q: filled([M, HD + 1]) }, p)).toThrow(/sal_attention: tensor 'q' has shape/);
        expect(() => ops.salAttention({ ...base(), mask: filled([M]) }, p)).toThrow(/sal_attention: tensor 'mask' has dtype f32, expected i32/);
        expect(() => ops.salAttention(base(), { ...p, kv: 'some' as 'all' })).toThrow(/sal_attention: parameter 'kv' must be "all" or "selected"/);
        expect(() => ops.salAttention(base(), { ...p, window: 0 })).toThrow(/sal_attention: 'window' must be at least 1/);
        expect(() => ops.salAttention(base(), { ...p, headDim: 3 })).toThrow(/sal_attention: 'head_dim' \(3\) must divide/);
        expect(() => ops.salAttention(base(), { ...p, batch: 3 })).toThrow(/sal_attention: 'batch' \(3\) must divide/);
        expect(() => ops.salAttention({ ...base(), cachePos: filled([1, W]) }, p)).toThrow(/sal_attention: tensor 'cache_pos' has dtype f32/);
        expect(() => ops.salAttention({ ...base(), kCache: [filled([W + 1, HD])] }, p)).toThrow(/sal_attention: tensor 'k_cache\[0\]' has shape/);
        expect(() => ops.salAttention({ ...base(), vCache: [filled([W, HD]), filled([W, HD])] }, p)).toThrow(/sal_attention: list 'v_cache' has 2 tensors/);
      });
      it('sal_kv_write', () => {
        const b = base();
        expect(() => ops.salKvWrite(b, { ...p, window: 0 })).toThrow(/sal_kv_write: 'window' must be at least 1/);
        expect(() => ops.salKvWrite(b, { ...p, kv: 'none' as 'all' })).toThrow(/sal_kv_write: parameter 'kv'/);
        expect(() => ops.salKvWrite({ ...b, start: i32([0, 0]) }, p)).toThrow(/sal_kv_write: tensor 'start' has shape \[2\], expected \[1\]/);
        expect(() => ops.salKvWrite({ ...b, v: filled([M, HD * 2]) }, p)).toThrow(TypeError);
      });
      it('sal_gate, sal_mix, rope, swiglu, linear', () => {
        const [d] = [8];
        const gate = {
          residual: filled([M, d]), delta: null, norm: filled([d]), gateWeight: filled([3, d]), gateBias: filled([2]),
          x: filled([M, d]), prob: filled([M]), mask: i32([0, 0, 0, 0]), index: i32([0, 0, 0, 0]), count: i32([0]), gathered: filled([M, d]),
        };
        expect(() => ops.salGate(gate, 1e-5)).toThrow(/sal_gate: tensor 'gate_weight' has shape \[3, 8\], expected \[2, 8\]/);
        expect(() => ops.salGate({ ...gate, gateWeight: filled([2, d]), index: filled([M]) }, 1e-5)).toThrow(/sal_gate: tensor 'index' has dtype f32/);
        const mix = { residual: filled([M, d]), o: filled([M, d]), index: i32([0, 0, 0, 0]), count: i32([0]), prob: filled([M]), x: filled([M, d]) };
        expect(() => ops.salMix(mix, 'other' as 'residual')).toThrow(/sal_mix: parameter 'mix' must be "residual" or "normalized"/);
        expect(() => ops.salMix({ ...mix, count: i32([0, 0]) }, 'residual')).toThrow(/sal_mix: tensor 'count' has shape/);
        expect(() => ops.rope(filled([M, 12]), i32([0]), { headDim: 5, length: M, theta: 1e4 })).toThrow(/rope: 'head_dim' \(5\) must be even/);
        expect(() => ops.rope(filled([M, 12]), i32([0]), { headDim: 4, length: 0, theta: 1e4 })).toThrow(/rope: 'length' must be at least 1/);
        expect(() => ops.rope(filled([M, 12]), i32([0]), { headDim: 4, length: 2, theta: 1e4 })).toThrow(/rope: x has 4 rows, more than/);
        expect(() => ops.swiglu(filled([M, 10]), filled([M, 4]))).toThrow(/swiglu: tensor 'h' has shape \[4, 10\], expected \[4, 8\]/);
        expect(() => ops.linear(filled([M, d]), filled([3, d]), filled([M, 3]), filled([1]))).toThrow(/linear: tensor 'count' has dtype f32, expected i32/);
      });
    });
  });
}
