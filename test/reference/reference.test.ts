// Tests of the float64 reference itself, against facts that can fail: hand-computed tiny cases,
// closed forms, and structural identities (grouping, windowing, streaming, batching).

import { describe, expect, it } from 'vitest';
import { randomWeights, tinyConfig } from './fixtures.js';
import { mamba2Mixer } from './mamba2.js';
import { initialState, referenceForward } from './model.js';
import {
  conv1dSilu,
  embedding,
  gatedRmsnorm,
  linear,
  rmsnorm,
  rope,
  sigmoid,
  silu,
  sliceCols,
  softplus,
  ssdRecurrence,
  swiglu,
  swigluMlp,
} from './ops.js';
import { randint, randn, randu } from './rng.js';
import { salLayer } from './sal.js';
import type { RefConfig, RefModelState, RefWeights, SalState } from './types.js';

// ------------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------------

/** max |a - b| / (1 + max |b|): a relative-to-scale error that is also fine near zero. */
function maxErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  let err = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i]! - b[i]!);
    if (Number.isNaN(e)) return Infinity;
    err = Math.max(err, e);
  }
  return err / (1 + scale);
}

function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-12): void {
  expect(maxErr(a, b)).toBeLessThanOrEqual(tol);
}

/** Rows [r0, r1) of a [M, n] matrix. */
function rows(x: Float64Array, r0: number, r1: number, n: number): Float64Array {
  return x.slice(r0 * n, r1 * n);
}

/** Concatenate Float64Arrays. */
function cat(...parts: Float64Array[]): Float64Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Float64Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Select time steps [t0, t1) of every sequence of a [B, L, C] array -> [B, t1-t0, C]. */
function timeSlice(x: Float64Array, B: number, L: number, C: number, t0: number, t1: number): Float64Array {
  const parts: Float64Array[] = [];
  for (let b = 0; b < B; b++) parts.push(x.slice((b * L + t0) * C, (b * L + t1) * C));
  return cat(...parts);
}

/** Interleave per-piece [B, Li, C] arrays back into [B, sum Li, C]. */
function timeCat(pieces: { x: Float64Array; L: number }[], B: number, C: number): Float64Array {
  const parts: Float64Array[] = [];
  for (let b = 0; b < B; b++) {
    for (const p of pieces) parts.push(p.x.slice(b * p.L * C, (b + 1) * p.L * C));
  }
  return cat(...parts);
}

// ------------------------------------------------------------------------------------------------
// scalar activations
// ------------------------------------------------------------------------------------------------

describe('activations', () => {
  it('sigmoid, silu, softplus hand values', () => {
    expect(sigmoid(0)).toBe(0.5);
    expect(sigmoid(2)).toBeCloseTo(0.8807970779778823, 15);
    expect(silu(0)).toBe(0);
    expect(silu(1)).toBeCloseTo(0.7310585786300049, 15);
    expect(silu(-1)).toBeCloseTo(-0.2689414213699951, 15);
    expect(softplus(0)).toBeCloseTo(Math.LN2, 15);
    expect(softplus(1)).toBeCloseTo(1.3132616875182228, 15);
    expect(softplus(-30)).toBeGreaterThan(0);
    expect(softplus(-30)).toBeCloseTo(Math.exp(-30), 25);
  });

  it('softplus is exactly the identity above 20 and continuous at 20', () => {
    expect(softplus(20.5)).toBe(20.5);
    expect(softplus(100)).toBe(100);
    expect(Math.abs(softplus(20) - 20)).toBeLessThan(3e-9);
  });
});

// ------------------------------------------------------------------------------------------------
// embedding, rmsnorm, linear
// ------------------------------------------------------------------------------------------------

describe('embedding / rmsnorm / linear', () => {
  it('embedding picks rows and rejects out-of-range ids', () => {
    const E = Float64Array.from([0, 1, 10, 11, 20, 21]); // V=3, d=2
    expect(Array.from(embedding([2, 0, 2], E, 3, 2))).toEqual([20, 21, 0, 1, 20, 21]);
    expect(() => embedding([3], E, 3, 2)).toThrow();
    expect(() => embedding([-1], E, 3, 2)).toThrow();
  });

  it('rmsnorm of [3, 4] with w = 1: mean square 12.5', () => {
    const out = rmsnorm(Float64Array.from([3, 4]), Float64Array.from([1, 1]), 1, 2, 0);
    expectClose(out, [3 / Math.sqrt(12.5), 4 / Math.sqrt(12.5)], 1e-15);
    expect(out[0]).toBeCloseTo(0.848528137423857, 14);
    expect(out[1]).toBeCloseTo(1.131370849898476, 14);
  });

  it('rmsnorm applies eps inside the sqrt and w per channel, row by row', () => {
    const x = Float64Array.from([3, 4, 0, 0, 1, -1]);
    const out = rmsnorm(x, Float64Array.from([2, 0.5]), 3, 2, 0.5);
    const r0 = 1 / Math.sqrt(12.5 + 0.5);
    expectClose(out, [3 * r0 * 2, 4 * r0 * 0.5, 0, 0, 1 / Math.sqrt(1.5) * 2, -1 / Math.sqrt(1.5) * 0.5], 1e-15);
  });

  it('linear computes x W^T with W stored [out, in], plus bias', () => {
    const x = Float64Array.from([1, 2, 3, -1]); // M=2, K=2
    const W = Float64Array.from([1, 0, 0, 1, 1, 1]); // N=3: rows [1,0], [0,1], [1,1]
    expect(Array.from(linear(x, W, 2, 2, 3))).toEqual([1, 2, 3, 3, -1, 2]);
    const b = Float64Array.from([10, 20, 30]);
    expect(Array.from(linear(x, W, 2, 2, 3, b))).toEqual([11, 22, 33, 13, 19, 32]);
  });

  it('linear rejects wrong sizes', () => {
    expect(() => linear(new Float64Array(3), new Float64Array(4), 1, 2, 2)).toThrow();
  });
});

// ------------------------------------------------------------------------------------------------
// conv1d + silu
// ------------------------------------------------------------------------------------------------

describe('conv1dSilu', () => {
  const w = Float64Array.from([1, 2, 3]); // C=1, K=3: w[2] multiplies the current token
  const bias = Float64Array.from([0.5]);
  const x = Float64Array.from([1, 2, 3, 4]);

  it('hand case without state (zeros before t = 0)', () => {
    const { out, stateOut } = conv1dSilu(x, w, bias, 1, 4, 1, 3, null);
    // t0: 3*1; t1: 2*1 + 3*2; t2: 1*1 + 2*2 + 3*3; t3: 1*2 + 2*3 + 3*4; all + 0.5
    expectClose(out, [3.5, 8.5, 14.5, 20.5].map(silu), 1e-15);
    expect(Array.from(stateOut)).toEqual([3, 4]); // last K-1 raw inputs, oldest first
  });

  it('hand case with a carried state', () => {
    const state = Float64Array.from([10, 20]);
    const { out, stateOut } = conv1dSilu(x.slice(0, 2), w, bias, 1, 2, 1, 3, state);
    // t0: 1*10 + 2*20 + 3*1; t1: 1*20 + 2*1 + 3*2
    expectClose(out, [53.5, 28.5].map(silu), 1e-15);
    expect(Array.from(stateOut)).toEqual([1, 2]);
    // L = 1 < K-1: the state shifts by one
    const one = conv1dSilu(Float64Array.from([7]), w, bias, 1, 1, 1, 3, state);
    expect(Array.from(one.stateOut)).toEqual([20, 7]);
    expectClose(one.out, [silu(10 + 40 + 21 + 0.5)], 1e-15);
  });

  it('channels and batch rows use their own kernels, bias and history', () => {
    // B=2, L=2, C=2, K=2: w = [[1, 2], [3, 4]], bias = [0, 1]
    const w2 = Float64Array.from([1, 2, 3, 4]);
    const b2 = Float64Array.from([0, 1]);
    const xx = Float64Array.from([1, 2, 3, 4, /* b=1 */ 5, 6, 7, 8]);
    const { out, stateOut } = conv1dSilu(xx, w2, b2, 2, 2, 2, 2, null);
    const pre = [2 * 1, 4 * 2 + 1, 1 * 1 + 2 * 3, 3 * 2 + 4 * 4 + 1, 2 * 5, 4 * 6 + 1, 5 + 2 * 7, 3 * 6 + 4 * 8 + 1];
    expectClose(out, pre.map(silu), 1e-15);
    expect(Array.from(stateOut)).toEqual([3, 4, 7, 8]); // [B, C, K-1]
  });

  it('streaming in pieces (1, 2, 3 tokens) equals one call', () => {
    const B = 2, L = 6, C = 3, K = 4;
    const xs = randn(B * L * C, 1);
    const ws = randn(C * K, 2);
    const bs = randn(C, 3);
    const whole = conv1dSilu(xs, ws, bs, B, L, C, K, null);
    let st: Float64Array | null = null;
    const pieces: { x: Float64Array; L: number }[] = [];
    for (const [t0, t1] of [[0, 1], [1, 3], [3, 6]] as const) {
      const r = conv1dSilu(timeSlice(xs, B, L, C, t0, t1), ws, bs, B, t1 - t0, C, K, st);
      pieces.push({ x: r.out, L: t1 - t0 });
      st = r.stateOut;
    }
    expectClose(timeCat(pieces, B, C), whole.out, 1e-14);
    expectClose(st!, whole.stateOut, 0);
  });
});

// ------------------------------------------------------------------------------------------------
// SSD recurrence
// ------------------------------------------------------------------------------------------------

describe('ssdRecurrence', () => {
  it('1 head, P = N = 1, constant inputs: closed form of a geometric series', () => {
    // dt = softplus(dtRaw + 0) = 0.5 ; A = -exp(log 2) = -2 ; decay a = exp(-1)
    const L = 6, xv = 1.5, bv = 0.7, cv = -1.3, Dv = 0.25, S0 = 2.0;
    const dtRaw = new Float64Array(L).fill(Math.log(Math.expm1(0.5)));
    const x = new Float64Array(L).fill(xv);
    const Bm = new Float64Array(L).fill(bv);
    const Cm = new Float64Array(L).fill(cv);
    const dims = { B: 1, L, H: 1, P: 1, G: 1, N: 1 };
    const args = [x, dtRaw, Float64Array.from([0]), Float64Array.from([Math.log(2)]), Bm, Cm, Float64Array.from([Dv])] as const;
    const a = Math.exp(-1);
    for (const init of [null, Float64Array.from([S0])]) {
      const { y, stateOut } = ssdRecurrence(...args, dims, init);
      const s0 = init === null ? 0 : S0;
      const expected: number[] = [];
      let S = 0;
      for (let t = 1; t <= L; t++) {
        // S_t = a^t S_0 + dt x b (1 - a^t) / (1 - a)
        S = Math.pow(a, t) * s0 + (0.5 * xv * bv * (1 - Math.pow(a, t))) / (1 - a);
        expected.push(S * cv + Dv * xv);
      }
      expectClose(y, expected, 1e-14);
      expectClose(stateOut, [S], 1e-14);
    }
  });

  it('state is the sum of dt * x (outer) B with no decay when A -> 0 (P = 2, N = 3)', () => {
    // A_log = -60 -> A = -exp(-60) ~ 0: S_L = sum_t dt_t x_t B_t^T ; y_t = S_t C_t + D x_t
    const L = 4, P = 2, N = 3;
    const x = randn(L * P, 11);
    const Bm = randn(L * N, 12);
    const Cm = randn(L * N, 13);
    const dtRaw = randn(L, 14);
    const { y, stateOut } = ssdRecurrence(
      x, dtRaw, Float64Array.from([0.3]), Float64Array.from([-60]), Bm, Cm, Float64Array.from([0]),
      { B: 1, L, H: 1, P, G: 1, N }, null,
    );
    const S = new Float64Array(P * N);
    for (let t = 0; t < L; t++) {
      const dt = Math.log1p(Math.exp(dtRaw[t]! + 0.3));
      for (let p = 0; p < P; p++) for (let n = 0; n < N; n++) S[p * N + n] = S[p * N + n]! + dt * x[t * P + p]! * Bm[t * N + n]!;
      for (let p = 0; p < P; p++) {
        let acc = 0;
        for (let n = 0; n < N; n++) acc += S[p * N + n]! * Cm[t * N + n]!;
        expect(y[t * P + p]).toBeCloseTo(acc, 12);
      }
    }
    expectClose(stateOut, S, 1e-13);
  });

  it('G = 2: heads 0..H/2-1 read group 0 and the rest group 1 (equals running each group alone)', () => {
    const B = 2, L = 5, H = 4, P = 3, G = 2, N = 2;
    const x = randn(B * L * H * P, 21);
    const dtRaw = randn(B * L * H, 22);
    const dtBias = randn(H, 23, 0.5);
    const A_log = randu(H, 24, -1, 1);
    const Bm = randn(B * L * G * N, 25);
    const Cm = randn(B * L * G * N, 26);
    const D = randn(H, 27);
    const S0 = randn(B * H * P * N, 28);
    const full = ssdRecurrence(x, dtRaw, dtBias, A_log, Bm, Cm, D, { B, L, H, P, G, N }, S0);
    const M = B * L;

    // Run each group's heads as a separate G = 1 problem with that group's B and C columns,
    // then scatter the heads back: y [M, H*P], state [B, H, P, N].
    const byGroups = (headsOfGroup: number[][]) => {
      const y = new Float64Array(M * H * P);
      const st = new Float64Array(B * H * P * N);
      headsOfGroup.forEach((heads, g) => {
        const n = heads.length;
        const xg = new Float64Array(M * n * P);
        const dtg = new Float64Array(M * n);
        const S0g = new Float64Array(B * n * P * N);
        heads.forEach((h, k) => {
          for (let m = 0; m < M; m++) {
            xg.set(x.slice(m * H * P + h * P, m * H * P + h * P + P), m * n * P + k * P);
            dtg[m * n + k] = dtRaw[m * H + h]!;
          }
          for (let b = 0; b < B; b++) S0g.set(S0.slice((b * H + h) * P * N, (b * H + h + 1) * P * N), (b * n + k) * P * N);
        });
        const pick = (v: Float64Array) => Float64Array.from(heads.map((h) => v[h]!));
        const r = ssdRecurrence(
          xg, dtg, pick(dtBias), pick(A_log), sliceCols(Bm, M, G * N, g * N, N), sliceCols(Cm, M, G * N, g * N, N),
          pick(D), { B, L, H: n, P, G: 1, N }, S0g,
        );
        heads.forEach((h, k) => {
          for (let m = 0; m < M; m++) y.set(r.y.slice(m * n * P + k * P, m * n * P + k * P + P), m * H * P + h * P);
          for (let b = 0; b < B; b++) {
            st.set(r.stateOut.slice((b * n + k) * P * N, (b * n + k + 1) * P * N), (b * H + h) * P * N);
          }
        });
      });
      return { y, st };
    };

    const contiguous = byGroups([[0, 1], [2, 3]]); // floor(h / (H/G))
    expectClose(full.y, contiguous.y, 1e-14);
    expectClose(full.stateOut, contiguous.st, 1e-14);
    // The h % G reading (heads 0, 2 in group 0) is a different answer, so the test can tell them apart.
    const modulo = byGroups([[0, 2], [1, 3]]);
    expect(maxErr(full.y, modulo.y)).toBeGreaterThan(1e-3);
  });

  it('streaming in pieces equals one call', () => {
    const B = 2, L = 7, H = 2, P = 2, G = 1, N = 3;
    const x = randn(B * L * H * P, 31);
    const dtRaw = randn(B * L * H, 32);
    const Bm = randn(B * L * G * N, 33);
    const Cm = randn(B * L * G * N, 34);
    const par = [Float64Array.from([0.1, -0.2]), Float64Array.from([0.3, 0.9]), Float64Array.from([1, 0.5])] as const;
    const whole = ssdRecurrence(x, dtRaw, par[0], par[1], Bm, Cm, par[2], { B, L, H, P, G, N }, null);
    let st: Float64Array | null = null;
    const pieces: { x: Float64Array; L: number }[] = [];
    for (const [t0, t1] of [[0, 3], [3, 4], [4, 7]] as const) {
      const l = t1 - t0;
      const r = ssdRecurrence(
        timeSlice(x, B, L, H * P, t0, t1), timeSlice(dtRaw, B, L, H, t0, t1), par[0], par[1],
        timeSlice(Bm, B, L, G * N, t0, t1), timeSlice(Cm, B, L, G * N, t0, t1), par[2],
        { B, L: l, H, P, G, N }, st,
      );
      pieces.push({ x: r.y, L: l });
      st = r.stateOut;
    }
    expectClose(timeCat(pieces, B, H * P), whole.y, 1e-14);
    expectClose(st!, whole.stateOut, 1e-14);
  });
});

// ------------------------------------------------------------------------------------------------
// gated norm, swiglu, rope
// ------------------------------------------------------------------------------------------------

describe('gatedRmsnorm / swiglu / rope', () => {
  it('gate before norm: y = [3, 4], z = 40 gives the rms of [3, 4] (norm is scale-free)', () => {
    const out = gatedRmsnorm(Float64Array.from([3, 4]), Float64Array.from([40, 40]), Float64Array.from([1, 2]), 1, 2, 1, 0);
    expectClose(out, [3 / Math.sqrt(12.5), (4 / Math.sqrt(12.5)) * 2], 1e-14);
    // A zero gate zeroes the output (norm of zero with eps > 0 is zero).
    const zero = gatedRmsnorm(Float64Array.from([3, 4]), Float64Array.from([0, 0]), Float64Array.from([1, 1]), 1, 2, 1, 1e-5);
    expect(Array.from(zero)).toEqual([0, 0]);
  });

  it('G groups normalise each contiguous block on its own', () => {
    const M = 3, d = 8, G = 2;
    const y = randn(M * d, 41);
    const z = randn(M * d, 42);
    const w = randn(d, 43);
    const out = gatedRmsnorm(y, z, w, M, d, G, 1e-5);
    const u = y.map((v, i) => v * silu(z[i]!));
    for (let g = 0; g < G; g++) {
      const part = rmsnorm(sliceCols(u, M, d, g * 4, 4), w.slice(g * 4, g * 4 + 4), M, 4, 1e-5);
      expectClose(sliceCols(out, M, d, g * 4, 4), part, 1e-15);
    }
    // and differs from one norm over all 8 channels
    expect(maxErr(out, rmsnorm(u, w, M, d, 1e-5))).toBeGreaterThan(1e-3);
  });

  it('swiglu: up in the first half, gate in the second', () => {
    const h = Float64Array.from([2, 5, /* gate */ 1, 0]);
    expectClose(swiglu(h, 1, 2), [2 * silu(1), 0], 1e-15);
  });

  it('swigluMlp = fc2(up * silu(gate)) with [up | gate] = x fc1^T', () => {
    // d = 1, dff = 1: fc1 = [[2], [3]] -> up = 2x, gate = 3x ; fc2 = [[0.5]]
    const out = swigluMlp(Float64Array.from([1.5]), Float64Array.from([2, 3]), Float64Array.from([0.5]), 1, 1, 1);
    expectClose(out, [0.5 * 3 * silu(4.5)], 1e-15);
  });

  it('rope hand cases (rotate-half pairs i and i + half)', () => {
    // head_dim 2, position 1: rotate by 1 radian
    const x = Float64Array.from([1, 2]);
    expectClose(rope(x, 1, 1, 2, [1], 10000), [Math.cos(1) - 2 * Math.sin(1), 2 * Math.cos(1) + Math.sin(1)], 1e-15);
    // head_dim 4, theta 100, position 2: freqs [1, 100^(-1/2) = 0.1]; pairs (0,2) and (1,3)
    const x4 = Float64Array.from([1, 0, 0, 1]);
    const c1 = Math.cos(2), s1 = Math.sin(2), c2 = Math.cos(0.2), s2 = Math.sin(0.2);
    expectClose(rope(x4, 1, 1, 4, [2], 100), [c1, -s2, s1, c2], 1e-15);
    // position 0 is the identity; two heads rotate independently
    const xx = randn(2 * 8, 51);
    expectClose(rope(xx, 2, 2, 4, [0, 0], 10000), xx, 0);
  });

  it('rope: q(m) . k(n) depends only on m - n and norms are kept', () => {
    const q = randn(8, 52);
    const k = randn(8, 53);
    const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i]!, 0);
    const at = (v: Float64Array, p: number) => rope(v, 1, 1, 8, [p], 10000);
    expect(dot(at(q, 7), at(k, 3))).toBeCloseTo(dot(at(q, 14), at(k, 10)), 12);
    expect(dot(at(q, 7), at(q, 7))).toBeCloseTo(dot(q, q), 12);
    expect(Math.abs(dot(at(q, 7), at(k, 3)) - dot(at(q, 7), at(k, 4)))).toBeGreaterThan(1e-6);
  });
});

// ------------------------------------------------------------------------------------------------
// Mamba-2 mixer
// ------------------------------------------------------------------------------------------------

describe('mamba2Mixer', () => {
  const cfg = tinyConfig({ model_type: 'mamba2', d_model: 8, headdim: 4, d_state: 3, ngroups: 2, layer_types: ['mamba2'] });
  const W = randomWeights(cfg, 7);
  const pre = 'backbone.layers.0.mixer.';

  it('L = 1 from zero state: only the last conv tap acts and S = dt x B^T (closed form)', () => {
    const d = cfg.d_model, di = cfg.d_inner, H = cfg.nheads, P = cfg.ssm.headdim, N = cfg.ssm.d_state, K = cfg.ssm.d_conv;
    const G = cfg.ssm.ngroups;
    const u = randn(d, 61);
    const { out } = mamba2Mixer(u, W, 'backbone.layers.0', cfg, 1, 1, null);

    const zx = linear(u, W.get(pre + 'in_proj.weight')!, 1, d, cfg.d_in_proj);
    const convW = W.get(pre + 'conv1d.weight')!;
    const convB = W.get(pre + 'conv1d.bias')!;
    const xBC: number[] = [];
    for (let c = 0; c < cfg.conv_dim; c++) xBC.push(silu(convB[c]! + convW[c * K + K - 1]! * zx[di + c]!));
    const y = new Float64Array(di);
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / G));
      const dt = softplus(zx[di + cfg.conv_dim + h]! + W.get(pre + 'dt_bias')![h]!);
      let bc = 0;
      for (let n = 0; n < N; n++) bc += xBC[di + g * N + n]! * xBC[di + G * N + g * N + n]!;
      for (let p = 0; p < P; p++) {
        const xv = xBC[h * P + p]!;
        y[h * P + p] = dt * xv * bc + W.get(pre + 'D')![h]! * xv;
      }
    }
    const z = zx.slice(0, di);
    const yn = gatedRmsnorm(y, z, W.get(pre + 'norm.weight')!, 1, di, G, cfg.norm_eps);
    expectClose(out, linear(yn, W.get(pre + 'out_proj.weight')!, 1, di, d), 1e-14);
  });

  it('streaming (4 + 1 + 1 + 2 tokens) equals one call, and the input state is not modified', () => {
    const B = 2, L = 8, d = cfg.d_model;
    const u = randn(B * L * d, 62);
    const whole = mamba2Mixer(u, W, 'backbone.layers.0.', cfg, B, L, null);
    let st = null as ReturnType<typeof mamba2Mixer>['state'] | null;
    const pieces: { x: Float64Array; L: number }[] = [];
    for (const [t0, t1] of [[0, 4], [4, 5], [5, 6], [6, 8]] as const) {
      const before = st === null ? null : { conv: st.conv.slice(), ssm: st.ssm.slice() };
      const r = mamba2Mixer(timeSlice(u, B, L, d, t0, t1), W, 'backbone.layers.0', cfg, B, t1 - t0, st);
      if (st !== null && before !== null) {
        expect(Array.from(st.conv)).toEqual(Array.from(before.conv));
        expect(Array.from(st.ssm)).toEqual(Array.from(before.ssm));
      }
      pieces.push({ x: r.out, L: t1 - t0 });
      st = r.state;
    }
    expectClose(timeCat(pieces, B, d), whole.out, 1e-13);
    expectClose(st!.ssm, whole.state.ssm, 1e-13);
    expectClose(st!.conv, whole.state.conv, 0);
  });

  it('missing or mis-sized weights are clear errors', () => {
    const bad = new Map(W);
    bad.delete(pre + 'A_log');
    expect(() => mamba2Mixer(new Float64Array(8), bad, 'backbone.layers.0', cfg, 1, 1, null)).toThrow(/A_log/);
    bad.set(pre + 'A_log', new Float64Array(1));
    expect(() => mamba2Mixer(new Float64Array(8), bad, 'backbone.layers.0', cfg, 1, 1, null)).toThrow(/A_log/);
  });
});

// ------------------------------------------------------------------------------------------------
// Selective Attention Layer
// ------------------------------------------------------------------------------------------------

function salCfg(sal: Partial<NonNullable<RefConfig['sal']>> = {}): RefConfig {
  return tinyConfig({ model_type: 'taipan', d_model: 8, layer_types: ['sal'], sal });
}

/** Weights for a one-SAL model with the gate forced: 'none' unselects all, 'all' selects all. */
function salWeights(cfg: RefConfig, seed: number, force?: 'none' | 'all'): RefWeights {
  const W = randomWeights(cfg, seed);
  const p = 'backbone.layers.0.mixer.';
  if (force !== undefined) {
    W.set(p + 'gate.weight', new Float64Array(2 * cfg.d_model));
    // s = [s0, s1] = bias: all selected with a = sigmoid(0.7), or none.
    W.set(p + 'gate.bias', Float64Array.from(force === 'all' ? [0, 0.7] : [0.7, 0]));
  }
  return W;
}

const allOptions = (() => {
  const out: Partial<NonNullable<RefConfig['sal']>>[] = [];
  for (const kv of ['all', 'selected'] as const) {
    for (const mix of ['residual', 'normalized'] as const) {
      for (const rp of [null, { theta: 100 }]) out.push({ kv, mix, rope: rp });
    }
  }
  return out;
})();

describe('salLayer', () => {
  const B = 2, L = 7;

  it('every token unselected: r passes through and only the MLP acts (all option combinations)', () => {
    for (const opt of allOptions) {
      const cfg = salCfg(opt);
      const W = salWeights(cfg, 3, 'none');
      const d = cfg.d_model;
      const r = randn(B * L * d, 71);
      const res = salLayer(r, W, 'backbone.layers.0', cfg, B, L, null);
      expect(res.mask.every((m) => !m)).toBe(true);
      expect(res.selectedFraction).toBe(0);
      const h = rmsnorm(r, W.get('backbone.layers.0.norm2.weight')!, B * L, d, cfg.norm_eps);
      const mlp = swigluMlp(h, W.get('backbone.layers.0.mlp.fc1.weight')!, W.get('backbone.layers.0.mlp.fc2.weight')!, B * L, d, cfg.sal!.d_ff);
      expectClose(res.out, r.map((v, i) => v + mlp[i]!), 1e-14);
    }
  });

  it('window 1, every token selected: attention returns v_i (softmax of one), any kv / rope', () => {
    for (const opt of allOptions) {
      const cfg = salCfg({ ...opt, window: 1 });
      const W = salWeights(cfg, 4, 'all');
      const d = cfg.d_model, M = B * L, HD = cfg.sal!.n_heads * cfg.sal!.head_dim;
      const p = 'backbone.layers.0.';
      const r = randn(M * d, 72);
      const res = salLayer(r, W, 'backbone.layers.0', cfg, B, L, null);
      expect(res.selectedFraction).toBe(1);
      const a = sigmoid(0.7);
      const x = rmsnorm(r, W.get(p + 'norm.weight')!, M, d, cfg.norm_eps);
      const o = linear(linear(x, W.get(p + 'mixer.v_proj.weight')!, M, d, HD), W.get(p + 'mixer.o_proj.weight')!, M, HD, d);
      const rp = r.map((v, i) => (opt.mix === 'residual' ? (1 - a) * v + a * o[i]! : v + (1 - a) * x[i]! + a * o[i]!));
      const h = rmsnorm(rp, W.get(p + 'norm2.weight')!, M, d, cfg.norm_eps);
      const mlp = swigluMlp(h, W.get(p + 'mlp.fc1.weight')!, W.get(p + 'mlp.fc2.weight')!, M, d, cfg.sal!.d_ff);
      expectClose(res.out, rp.map((v, i) => v + mlp[i]!), 1e-14);
    }
  });

  it('q_proj = 0: attention is the plain mean of v over the window (selected keys under kv = selected)', () => {
    for (const kv of ['all', 'selected'] as const) {
      const cfg = salCfg({ kv, window: 3 });
      const W = salWeights(cfg, 5);
      const p = 'backbone.layers.0.';
      const d = cfg.d_model, HD = cfg.sal!.n_heads * cfg.sal!.head_dim;
      W.set(p + 'mixer.q_proj.weight', new Float64Array(HD * d));
      const LL = 12;
      const r = randn(LL * d, 73);
      const res = salLayer(r, W, 'backbone.layers.0', cfg, 1, LL, null);
      const nSel = res.mask.filter((m) => m).length;
      expect(nSel).toBeGreaterThan(1);
      expect(nSel).toBeLessThan(LL - 1);
      const x = rmsnorm(r, W.get(p + 'norm.weight')!, LL, d, cfg.norm_eps);
      const v = linear(x, W.get(p + 'mixer.v_proj.weight')!, LL, d, HD);
      const rp = r.slice();
      for (let i = 0; i < LL; i++) {
        if (!res.mask[i]) continue;
        const js = [i - 2, i - 1, i].filter((j) => j >= 0 && (kv === 'all' || res.mask[j]));
        const mean = new Float64Array(HD);
        for (const j of js) for (let c = 0; c < HD; c++) mean[c] = mean[c]! + v[j * HD + c]! / js.length;
        const o = linear(mean, W.get(p + 'mixer.o_proj.weight')!, 1, HD, d);
        const a = res.gateProb[i]!;
        for (let c = 0; c < d; c++) rp[i * d + c] = (1 - a) * r[i * d + c]! + a * o[c]!;
      }
      const h = rmsnorm(rp, W.get(p + 'norm2.weight')!, LL, d, cfg.norm_eps);
      const mlp = swigluMlp(h, W.get(p + 'mlp.fc1.weight')!, W.get(p + 'mlp.fc2.weight')!, LL, d, cfg.sal!.d_ff);
      expectClose(res.out, rp.map((val, i) => val + mlp[i]!), 1e-14);
    }
  });

  it('gate: m_i = s_i1 > s_i0 and a_i = sigmoid(s_i1 - s_i0)', () => {
    const cfg = salCfg();
    const W = salWeights(cfg, 6);
    const p = 'backbone.layers.0.';
    const d = cfg.d_model;
    const r = randn(B * L * d, 74);
    const res = salLayer(r, W, 'backbone.layers.0', cfg, B, L, null);
    const x = rmsnorm(r, W.get(p + 'norm.weight')!, B * L, d, cfg.norm_eps);
    const s = linear(x, W.get(p + 'mixer.gate.weight')!, B * L, d, 2, W.get(p + 'mixer.gate.bias')!);
    for (let i = 0; i < B * L; i++) {
      expect(res.mask[i]).toBe(s[2 * i + 1]! > s[2 * i]!);
      expect(res.gateProb[i]).toBeCloseTo(1 / (1 + Math.exp(s[2 * i]! - s[2 * i + 1]!)), 14);
    }
    expect(res.selectedFraction).toBeCloseTo(res.mask.filter((m) => m).length / (B * L), 15);
  });

  it('kv = selected equals kv = all when every token is selected', () => {
    const r = randn(B * L * 8, 75);
    const outs = (['all', 'selected'] as const).map((kv) => {
      const cfg = salCfg({ kv, window: 3, rope: { theta: 50 } });
      return salLayer(r, salWeights(cfg, 8, 'all'), 'backbone.layers.0', cfg, B, L, null).out;
    });
    expectClose(outs[0]!, outs[1]!, 0);
  });

  it('window >= L equals an unbounded window; a short window differs', () => {
    const r = randn(B * L * 8, 76);
    const run = (window: number) => {
      const cfg = salCfg({ window });
      return salLayer(r, salWeights(cfg, 9, 'all'), 'backbone.layers.0', cfg, B, L, null).out;
    };
    expectClose(run(L), run(1e9), 0);
    expect(maxErr(run(2), run(L))).toBeGreaterThan(1e-6);
  });

  it('is causal: changing the last token changes no earlier output', () => {
    const cfg = salCfg({ window: 4 });
    const W = salWeights(cfg, 10, 'all');
    const d = cfg.d_model;
    const r = randn(L * d, 77);
    const r2 = r.slice();
    for (let c = 0; c < d; c++) r2[(L - 1) * d + c] = r2[(L - 1) * d + c]! + 1;
    const a = salLayer(r, W, 'backbone.layers.0', cfg, 1, L, null).out;
    const b = salLayer(r2, W, 'backbone.layers.0', cfg, 1, L, null).out;
    expectClose(rows(a, 0, L - 1, d), rows(b, 0, L - 1, d), 0);
    expect(maxErr(rows(a, L - 1, L, d), rows(b, L - 1, L, d))).toBeGreaterThan(1e-6);
  });

  it('prefill(L) equals prefill(L-3) + 3 single steps, for every option combination', () => {
    for (const opt of allOptions) {
      const cfg = salCfg({ ...opt, window: 3 });
      const W = salWeights(cfg, 11);
      const d = cfg.d_model;
      const LL = 10;
      const r = randn(B * LL * d, 78);
      const whole = salLayer(r, W, 'backbone.layers.0', cfg, B, LL, null);
      const sel = whole.mask.filter((m) => m).length;
      expect(sel).toBeGreaterThan(0);
      expect(sel).toBeLessThan(B * LL);
      let res = salLayer(timeSlice(r, B, LL, d, 0, LL - 3), W, 'backbone.layers.0', cfg, B, LL - 3, null);
      const pieces = [{ x: res.out, L: LL - 3 }];
      const masks: boolean[][] = [res.mask];
      for (let t = LL - 3; t < LL; t++) {
        const st: SalState = res.state;
        const nPast = st.seqs.map((s) => s.length);
        res = salLayer(timeSlice(r, B, LL, d, t, t + 1), W, 'backbone.layers.0', cfg, B, 1, st);
        expect(st.seqs.map((s) => s.length)).toEqual(nPast); // input state untouched
        pieces.push({ x: res.out, L: 1 });
        masks.push(res.mask);
      }
      expectClose(timeCat(pieces, B, d), whole.out, 1e-13);
      expect(res.state.seqs.map((s) => s.length)).toEqual([LL, LL]);
    }
  });

  it('explicit attention by hand: scores q.k / sqrt(head_dim), softmax per head over the window', () => {
    const cfg = salCfg({ window: 3, n_heads: 2, head_dim: 4 });
    const W = salWeights(cfg, 13, 'all');
    const p = 'backbone.layers.0.';
    const d = cfg.d_model, HD = 8, LL = 5;
    const r = randn(LL * d, 79, 2);
    const res = salLayer(r, W, 'backbone.layers.0', cfg, 1, LL, null);
    const x = rmsnorm(r, W.get(p + 'norm.weight')!, LL, d, cfg.norm_eps);
    const q = linear(x, W.get(p + 'mixer.q_proj.weight')!, LL, d, HD);
    const k = linear(x, W.get(p + 'mixer.k_proj.weight')!, LL, d, HD);
    const v = linear(x, W.get(p + 'mixer.v_proj.weight')!, LL, d, HD);
    const a = sigmoid(0.7);
    const rp = new Float64Array(LL * d);
    for (let i = 0; i < LL; i++) {
      const ctx = new Float64Array(HD);
      for (let h = 0; h < 2; h++) {
        const js = [i - 2, i - 1, i].filter((j) => j >= 0);
        const e = js.map((j) => {
          let dot = 0;
          for (let c = 0; c < 4; c++) dot += q[i * HD + h * 4 + c]! * k[j * HD + h * 4 + c]!;
          return Math.exp(dot / 2); // sqrt(head_dim) = 2
        });
        const z = e.reduce((s2, val) => s2 + val, 0);
        js.forEach((j, n) => {
          for (let c = 0; c < 4; c++) ctx[h * 4 + c] = ctx[h * 4 + c]! + (e[n]! / z) * v[j * HD + h * 4 + c]!;
        });
      }
      const o = linear(ctx, W.get(p + 'mixer.o_proj.weight')!, 1, HD, d);
      for (let c = 0; c < d; c++) rp[i * d + c] = (1 - a) * r[i * d + c]! + a * o[c]!;
    }
    const h2 = rmsnorm(rp, W.get(p + 'norm2.weight')!, LL, d, cfg.norm_eps);
    const mlp = swigluMlp(h2, W.get(p + 'mlp.fc1.weight')!, W.get(p + 'mlp.fc2.weight')!, LL, d, cfg.sal!.d_ff);
    expectClose(res.out, rp.map((val, i) => val + mlp[i]!), 1e-13);
  });

  it('RoPE attention is translation invariant; without q (or k) rotation it would not be', () => {
    // With window w, token i only sees (i - w, i]; shifting the whole sequence by a junk prefix
    // changes absolute positions but not relative ones, so outputs whose window lies inside the
    // original sequence must not change. RoPE itself must matter (differ from no RoPE).
    const w = 3, LL = 8, pad = 5;
    for (const kv of ['all', 'selected'] as const) {
      const cfg = salCfg({ window: w, kv, rope: { theta: 10 } });
      const W = salWeights(cfg, 14, 'all');
      const d = cfg.d_model;
      const r = randn(LL * d, 80);
      const junk = randn(pad * d, 81);
      const plain = salLayer(r, W, 'backbone.layers.0', cfg, 1, LL, null).out;
      const shifted = salLayer(cat(junk, r), W, 'backbone.layers.0', cfg, 1, pad + LL, null).out;
      expectClose(rows(shifted, pad + w - 1, pad + LL, d), rows(plain, w - 1, LL, d), 1e-13);
      const noRope = { ...cfg, sal: { ...cfg.sal!, rope: null } };
      const plainNoRope = salLayer(r, W, 'backbone.layers.0', noRope, 1, LL, null).out;
      expect(maxErr(rows(plainNoRope, 1, LL, d), rows(plain, 1, LL, d))).toBeGreaterThan(1e-6);
    }
  });

  it('a missing sal section or a bad state batch is a clear error', () => {
    const cfg = salCfg();
    const W = salWeights(cfg, 12);
    const noSal = { ...cfg, sal: undefined };
    expect(() => salLayer(new Float64Array(8), W, 'backbone.layers.0', noSal, 1, 1, null)).toThrow(/sal/);
    expect(() =>
      salLayer(new Float64Array(8), W, 'backbone.layers.0', cfg, 1, 1, { kind: 'sal', seqs: [[], []] }),
    ).toThrow(/batch/);
  });
});

// ------------------------------------------------------------------------------------------------
// Whole model
// ------------------------------------------------------------------------------------------------

interface ModelCase {
  name: string;
  cfg: RefConfig;
}

const modelCases: ModelCase[] = [
  { name: 'mamba2', cfg: tinyConfig({ model_type: 'mamba2', layer_types: ['mamba2', 'mamba2', 'mamba2'] }) },
  { name: 'mamba2 ngroups 2, d_conv 3', cfg: tinyConfig({ model_type: 'mamba2', ngroups: 2, d_conv: 3 }) },
  { name: 'taipan default', cfg: tinyConfig({ model_type: 'taipan', sal: { window: 3 } }) },
  {
    name: 'taipan kv selected, normalized, rope, two SALs',
    cfg: tinyConfig({
      model_type: 'taipan',
      layer_types: ['mamba2', 'sal', 'mamba2', 'sal'],
      sal: { window: 4, kv: 'selected', mix: 'normalized', rope: { theta: 1000 } },
    }),
  },
  { name: 'untied head', cfg: tinyConfig({ model_type: 'taipan', tie_embeddings: false, sal: { window: 2 } }) },
];

describe('referenceForward', () => {
  for (const { name, cfg } of modelCases) {
    describe(name, () => {
      const W = randomWeights(cfg, 100);
      const B = 3, L = 9;
      const ids: number[][] = [0, 1, 2].map((b) => randint(L, 200 + b, cfg.vocab_size));

      it('prefill(L) equals prefill(L-4) + 4 single-token calls', () => {
        const whole = referenceForward(cfg, W, ids, null);
        expect(whole.logits.length).toBe(B * L * cfg.vocab_padded);
        expect(whole.logits.every((v) => Number.isFinite(v))).toBe(true);
        let res = referenceForward(cfg, W, ids.map((s) => s.slice(0, L - 4)), null);
        const pieces = [{ x: res.logits, L: L - 4 }];
        for (let t = L - 4; t < L; t++) {
          res = referenceForward(cfg, W, ids.map((s) => [s[t]!]), res.state);
          pieces.push({ x: res.logits, L: 1 });
        }
        expectClose(timeCat(pieces, B, cfg.vocab_padded), whole.logits, 1e-12);
      });

      it('a batch of 3 equals each sequence alone', () => {
        const whole = referenceForward(cfg, W, ids, null);
        for (let b = 0; b < B; b++) {
          const alone = referenceForward(cfg, W, [ids[b]!], null);
          expectClose(rows(whole.logits, b * L, (b + 1) * L, cfg.vocab_padded), alone.logits, 1e-13);
        }
      });

      it('running again from the same state gives the same result (state is not mutated)', () => {
        const first = referenceForward(cfg, W, ids.map((s) => s.slice(0, 5)), null);
        const a = referenceForward(cfg, W, ids.map((s) => s.slice(5, 7)), first.state);
        const b = referenceForward(cfg, W, ids.map((s) => s.slice(5, 7)), first.state);
        expectClose(a.logits, b.logits, 0);
      });
    });
  }

  it('SAL selected fractions are reported, strictly between 0 and 1 with a zero gate bias', () => {
    const cfg = modelCases[3]!.cfg;
    const W = randomWeights(cfg, 100);
    const ids = [randint(40, 300, cfg.vocab_size)];
    const res = referenceForward(cfg, W, ids, null);
    expect([...res.selectedFractions.keys()]).toEqual([1, 3]);
    for (const [i, f] of res.selectedFractions) {
      expect(f).toBeGreaterThan(0);
      expect(f).toBeLessThan(1);
      expect(f).toBeCloseTo(res.masks.get(i)!.filter((m) => m).length / 40, 15);
    }
  });

  it('block structure: one Mamba-2 layer is r + Mamba2(rms(r, norm)); one SAL is SAL(r)', () => {
    for (const type of ['mamba2', 'sal'] as const) {
      const cfg = tinyConfig({ model_type: type === 'sal' ? 'taipan' : 'mamba2', layer_types: [type] });
      const W = randomWeights(cfg, 104);
      const d = cfg.d_model, V = cfg.vocab_padded;
      const ids = [randint(5, 600, cfg.vocab_size)];
      const E = W.get('backbone.embedding.weight')!;
      const r0 = embedding(ids[0]!, E, V, d);
      let r1: Float64Array;
      if (type === 'mamba2') {
        const u = rmsnorm(r0, W.get('backbone.layers.0.norm.weight')!, 5, d, cfg.norm_eps);
        const mix = mamba2Mixer(u, W, 'backbone.layers.0', cfg, 1, 5, null).out;
        r1 = r0.map((v, i) => v + mix[i]!);
      } else {
        r1 = salLayer(r0, W, 'backbone.layers.0', cfg, 1, 5, null).out;
      }
      const expected = linear(rmsnorm(r1, W.get('backbone.norm_f.weight')!, 5, d, cfg.norm_eps), E, 5, d, V);
      expectClose(referenceForward(cfg, W, ids, null).logits, expected, 1e-14);
    }
  });

  it('no layers: logits = rms(E[id], norm_f) E^T (hand-checkable tiny case)', () => {
    const cfg = tinyConfig({ model_type: 'mamba2', layer_types: [], d_model: 2, headdim: 2, vocab_size: 3, pad_vocab_size_multiple: 4 });
    expect(cfg.vocab_padded).toBe(4);
    const W: RefWeights = new Map([
      ['backbone.embedding.weight', Float64Array.from([3, 4, 1, 0, 0, 2, -1, -1])],
      ['backbone.norm_f.weight', Float64Array.from([1, 1])],
    ]);
    const res = referenceForward({ ...cfg, norm_eps: 0 }, W, [[0]], null);
    // rms([3, 4]) = [3, 4] / sqrt(12.5); logits = that . each row of E
    const s = 1 / Math.sqrt(12.5);
    expectClose(res.logits, [25 * s, 3 * s, 8 * s, -7 * s], 1e-15);
    // the HF alias backbone.embeddings.weight is accepted
    const alias: RefWeights = new Map([
      ['backbone.embeddings.weight', W.get('backbone.embedding.weight')!],
      ['backbone.norm_f.weight', Float64Array.from([1, 1])],
    ]);
    expectClose(referenceForward({ ...cfg, norm_eps: 0 }, alias, [[0]], null).logits, res.logits, 0);
  });

  it('lm_head.weight is used when present; tie_embeddings false without it is an error', () => {
    const cfg = modelCases[0]!.cfg;
    const W = randomWeights(cfg, 101);
    const ids = [randint(4, 400, cfg.vocab_size)];
    const tied = referenceForward(cfg, W, ids, null);
    const W2 = new Map(W);
    W2.set('lm_head.weight', W.get('backbone.embedding.weight')!.map((v) => 2 * v));
    const doubled = referenceForward(cfg, W2, ids, null);
    expectClose(doubled.logits, tied.logits.map((v) => 2 * v), 1e-14);
    expect(() => referenceForward({ ...cfg, tie_embeddings: false }, W, ids, null)).toThrow(/lm_head/);
  });

  it('padded ids below vocab_padded are accepted; ids beyond are rejected; bad state batch rejected', () => {
    const cfg = modelCases[0]!.cfg;
    const W = randomWeights(cfg, 102);
    expect(cfg.vocab_padded).toBeGreaterThan(cfg.vocab_size);
    expect(() => referenceForward(cfg, W, [[cfg.vocab_padded - 1]], null)).not.toThrow();
    expect(() => referenceForward(cfg, W, [[cfg.vocab_padded]], null)).toThrow();
    expect(() => referenceForward(cfg, W, [[1, 2], [3]], null)).toThrow();
    const st: RefModelState = initialState(cfg, 2);
    expect(() => referenceForward(cfg, W, [[1]], st)).toThrow(/batch/);
  });

  it('an explicit zero initial state equals no state', () => {
    const cfg = modelCases[2]!.cfg;
    const W = randomWeights(cfg, 103);
    const ids = [randint(6, 500, cfg.vocab_size), randint(6, 501, cfg.vocab_size)];
    expectClose(referenceForward(cfg, W, ids, initialState(cfg, 2)).logits, referenceForward(cfg, W, ids, null).logits, 0);
  });
});
