// The mixture-of-experts CPU ops (moe_route, gather_rows, moe_scatter, swiglu with a count)
// against plain loops and the float64 reference test/reference/moe.ts. The strongest check
// composes a whole MoE FFN out of linear + these ops, exactly as the Jamba model runs it (counts
// produced on the stream, never read back in between), and compares it with moeFfnRef.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addon, type NativeTensor } from '../lib/native.js';
import { Ops } from '../lib/ops.js';
import { relError } from './helpers/models.js';
import { moeFfnRef, moeRouteRef } from './reference/moe.js';
import * as ref from './reference/ops.js';
import { randint } from './reference/rng.js';
import { cpuPaths, filled, i32, read, readInt, seeded, t } from './helpers/tensors.js';

const native = addon();
const seeds = seeded(9100);
const rand = seeds.rand;
/** Place rows of `cols` values into a wider matrix of `ld` columns at column `at`: a strided view. */
function strided(data: ArrayLike<number>, rows: number, cols: number, ld: number, at: number, fill = NaN): NativeTensor {
  const wide = new Float64Array(rows * ld).fill(fill);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) wide[r * ld + at + c] = data[r * cols + c]!;
  return t(wide, [rows, ld]).cols(at, at + cols);
}
/** The rows of a strided view, read back as a dense [rows, cols] array. */
function readDense(x: NativeTensor): Float64Array {
  const [rows, cols] = x.shape as [number, number];
  const all = read(x); // toArray of a view gives its own elements, densely
  expect(all.length).toBe(rows * cols);
  return all;
}

/** Per expert, the rows that chose it (increasing) and their probabilities, from the reference. */
function expectedLists(logits: ArrayLike<number>, M: number, E: number, topK: number) {
  const { experts, probs } = moeRouteRef(logits, M, E, topK);
  const rows: number[][] = Array.from({ length: E }, () => []);
  const ps: number[][] = Array.from({ length: E }, () => []);
  for (let m = 0; m < M; m++) {
    for (let j = 0; j < topK; j++) {
      rows[experts[m * topK + j]!]!.push(m);
      ps[experts[m * topK + j]!]!.push(probs[m * topK + j]!);
    }
  }
  return { rows, ps, experts, probs };
}

for (const path of cpuPaths) {
  describe(`MoE ops, ${path} path`, () => {
    const ops = new Ops('cpu');
    beforeAll(() => native.setPortable(path === 'portable'));
    afterAll(() => native.setPortable(false));

    describe('moe_route', () => {
      /** Route f32 logits [M, E] (strided when `ld` > E) and check every list against the reference. */
      function route(logits: Float64Array, M: number, E: number, topK: number, ld = E) {
        const out = { index: i32(new Array(E * M).fill(-7), [E, M]), weight: filled([E, M], 7), count: i32(new Array(E).fill(-7)) };
        const lT = ld === E ? t(logits, [M, E]) : strided(logits, M, E, ld, ld - E - 1);
        ops.moeRoute(lT, out, topK);
        ops.syncBlocking();
        const count = readInt(out.count);
        const index = readInt(out.index);
        const weight = read(out.weight);
        const want = expectedLists(logits, M, E, topK);
        for (let e = 0; e < E; e++) {
          expect(count[e]).toBe(want.rows[e]!.length);
          expect(index.slice(e * M, e * M + count[e]!)).toEqual(want.rows[e]);
          const w = weight.slice(e * M, e * M + count[e]!);
          for (let k = 0; k < w.length; k++) expect(Math.abs(w[k]! - want.ps[e]![k]!)).toBeLessThan(1e-6);
        }
        expect(count.reduce((a, b) => a + b, 0)).toBe(M * topK);
        return { count, index, weight, want };
      }
      for (const E of [16, 3]) {
        for (const M of [1, 7, 64]) {
          for (const topK of [...new Set([1, 2, E])]) {
            it(`M=${M} E=${E} top_k=${topK}: lists, order, probabilities`, () => {
              route(rand(M * E, 2), M, E, topK);
            });
          }
        }
      }
      it('strided logits', () => {
        route(rand(37 * 16, 3), 37, 16, 2, 21);
        route(rand(5 * 3, 1), 5, 3, 3, 8);
      });
      it('keeps the probabilities unrenormalised (the kept mass is below 1)', () => {
        const [M, E, K] = [40, 16, 2];
        const { want } = route(rand(M * E), M, E, K);
        for (let m = 0; m < M; m++) {
          let kept = 0;
          for (let j = 0; j < K; j++) kept += want.probs[m * K + j]!;
          expect(kept).toBeLessThan(0.999);
          expect(kept).toBeGreaterThan(0);
        }
        // ...and with every expert kept, each row's probabilities add up to 1.
        const all = route(rand(M * 4), M, 4, 4);
        const sums = new Array(M).fill(0);
        for (let e = 0; e < 4; e++) for (let k = 0; k < M; k++) sums[all.index[e * M + k]!] += all.weight[e * M + k]!;
        for (const s of sums) expect(Math.abs(s - 1)).toBeLessThan(1e-6);
      });
      it('exact ties go to the lower expert index', () => {
        const E = 6;
        const rows = [
          [0, 0, 0, 0, 0, 0], // all equal: experts 0, 1
          [1, 3, 3, 3, 0, 3], // four tied at the top: 1, 2
          [5, -1, 5, 2, 2, 9], // a clear first, then 0 and 2 tied: 5, 0
          [-2, -2, 4, 4, 4, 4], // 2, 3
        ];
        const logits = Float64Array.from(rows.flat());
        const { want } = route(logits, rows.length, E, 2);
        expect(Array.from(want.experts)).toEqual([0, 1, 1, 2, 5, 0, 2, 3]);
        expect(want.probs[0]).toBeCloseTo(1 / 6, 12);
        route(logits, rows.length, E, 1);
        route(logits, rows.length, E, E);
      });
      it('-Infinity logits are probability 0; NaN and +Infinity rows go to experts 0..top_k-1 with NaN weight', () => {
        const E = 4;
        const logits = Float64Array.from([
          1, -Infinity, 2, -Infinity, // fine: 2, 0
          0.5, NaN, 1, 2, // NaN: 0, 1
          -Infinity, -Infinity, -Infinity, -Infinity, // no softmax: 0, 1
          Infinity, 0, 1, 2, // +Infinity: 0, 1
          3, 1, 2, 0, // fine: 0, 2
        ]);
        const M = 5;
        const out = { index: i32(new Array(E * M).fill(-7), [E, M]), weight: filled([E, M], 7), count: i32([0, 0, 0, 0]) };
        ops.moeRoute(t(logits, [M, E]), out, 2);
        ops.syncBlocking();
        const count = readInt(out.count);
        const index = readInt(out.index);
        const weight = read(out.weight);
        expect(count).toEqual([5, 3, 2, 0]);
        expect(index.slice(0, 5)).toEqual([0, 1, 2, 3, 4]);
        expect(index.slice(M, M + 3)).toEqual([1, 2, 3]);
        expect(index.slice(2 * M, 2 * M + 2)).toEqual([0, 4]);
        const w0 = weight.slice(0, 5);
        expect(w0[0]).toBeCloseTo(Math.exp(-1) / (1 + Math.exp(-1)), 6);
        expect([w0[1], w0[2], w0[3]].every(Number.isNaN)).toBe(true);
        const z4 = Math.exp(3) + Math.exp(1) + Math.exp(2) + 1;
        expect(w0[4]).toBeCloseTo(Math.exp(3) / z4, 6);
        expect(weight.slice(M, M + 3).every(Number.isNaN)).toBe(true);
        expect(weight[2 * M]).toBeCloseTo(1 / (1 + Math.exp(-1)), 6);
        expect(weight[2 * M + 1]).toBeCloseTo(Math.exp(2) / z4, 6);
        // The reference follows the same rule.
        const want = moeRouteRef(logits, M, E, 2);
        expect(Array.from(want.experts)).toEqual([2, 0, 0, 1, 0, 1, 0, 1, 0, 2]);
      });
      it('M = 0 gives empty lists', () => {
        const out = { index: i32([], [3, 0]), weight: filled([3, 0]), count: i32([5, 5, 5]) };
        ops.moeRoute(filled([0, 3]), out, 2);
        ops.syncBlocking();
        expect(readInt(out.count)).toEqual([0, 0, 0]);
      });
    });

    describe('gather_rows', () => {
      const [M, d] = [11, 20];
      const perm = [7, 0, 10, 3, 3, 9, 1, 2, 5, 4, 8]; // a repeated row is fine for a gather
      for (const c of [0, 1, 5, M, M + 4, -2]) {
        it(`count=${c}, x and out strided`, () => {
          const x = rand(M * d);
          const out = strided(new Float64Array(M * d).fill(7), M, d, d + 5, 2, -1);
          ops.gatherRows(strided(x, M, d, d + 3, 3), i32(perm), i32([c]), out);
          ops.syncBlocking();
          const n = Math.max(0, Math.min(c, M));
          const got = readDense(out);
          for (let k = 0; k < n; k++) expect(got.slice(k * d, (k + 1) * d)).toEqual(x.slice(perm[k]! * d, (perm[k]! + 1) * d));
          expect(got.slice(n * d).every((v) => v === 7)).toBe(true); // past count: untouched
        });
      }
      it('an index outside [0, M) gives a row of zeros', () => {
        const x = rand(M * d);
        const out = filled([M, d], 7);
        const index = [2, -1, M, 2147483647, -2147483648, 0, 0, 0, 0, 0, 0];
        ops.gatherRows(t(x, [M, d]), i32(index), i32([5]), out);
        ops.syncBlocking();
        const got = read(out);
        expect(got.slice(0, d)).toEqual(x.slice(2 * d, 3 * d));
        expect(got.slice(d, 5 * d).every((v) => v === 0)).toBe(true);
        expect(got.slice(5 * d).every((v) => v === 7)).toBe(true);
      });
      it('reads count when the op runs, not when it is queued', () => {
        const x = rand(M * d);
        const count = i32([0]);
        const out = filled([M, d], 7);
        ops.copy(i32([3]), count); // an earlier queued op produces the count
        ops.gatherRows(t(x, [M, d]), i32(perm), count, out);
        ops.syncBlocking();
        const got = read(out);
        for (let k = 0; k < 3; k++) expect(got.slice(k * d, (k + 1) * d)).toEqual(x.slice(perm[k]! * d, (perm[k]! + 1) * d));
        expect(got.slice(3 * d).every((v) => v === 7)).toBe(true);
      });
      it('a wide row (parallel blocks)', () => {
        const [M2, d2] = [300, 97];
        const x = rand(M2 * d2);
        const index = randint(M2, seeds.next(), M2);
        const out = filled([M2, d2]);
        ops.gatherRows(t(x, [M2, d2]), i32(index), i32([M2]), out);
        ops.syncBlocking();
        const want = new Float64Array(M2 * d2);
        for (let k = 0; k < M2; k++) want.set(x.subarray(index[k]! * d2, (index[k]! + 1) * d2), k * d2);
        expect(read(out)).toEqual(want);
      });
    });

    describe('moe_scatter', () => {
      /** residual[index[k]] += weight[k] * y[k] for k < n, in float64. */
      function scatterRef(r: Float64Array, y: Float64Array, index: number[], w: Float64Array, n: number, M: number, d: number) {
        const out = Float64Array.from(r);
        for (let k = 0; k < n; k++) {
          const i = index[k]!;
          if (i < 0 || i >= M) continue;
          for (let c = 0; c < d; c++) out[i * d + c] = out[i * d + c]! + w[k]! * y[k * d + c]!;
        }
        return out;
      }
      for (const [M, d] of [[9, 24], [64, 300]]) {
        for (const c of [0, 1, 4, M!, M! + 3, -1]) {
          it(`M=${M} d=${d} count=${c}, y and residual strided`, () => {
            const r = rand(M! * d!);
            const y = rand(M! * d!);
            const w = rand(M!).map(Math.abs);
            // Distinct rows (a permutation), as the router produces them.
            const index = Array.from({ length: M! }, (_, i) => (i * 5 + 3) % M!); // gcd(5, M) = 1
            const rT = strided(r, M!, d!, d! + 4, 1);
            // Rows of y past count are NaN: reading one would poison the residual.
            const n = Math.max(0, Math.min(c, M!));
            const yIn = Float64Array.from(y).fill(NaN, n * d!);
            ops.moeScatter(rT, strided(yIn, M!, d!, d! + 2, 2), i32(index), t(w, [M!]), i32([c]));
            ops.syncBlocking();
            const want = scatterRef(r, y, index, w, n, M!, d!);
            expect(relError(readDense(rT), want)).toBeLessThan(1e-6);
            const touched = new Set(index.slice(0, n));
            const got = readDense(rT);
            for (let i = 0; i < M!; i++) if (!touched.has(i)) expect(got.slice(i * d!, (i + 1) * d!)).toEqual(r.slice(i * d!, (i + 1) * d!));
          });
        }
      }
      it('skips an index outside [0, M); a repeated index accumulates', () => {
        const [M, d] = [6, 40];
        const r = rand(M * d);
        const y = rand(M * d);
        const w = rand(M);
        const index = [1, -1, M, 1, 4, 2147483647];
        const rT = t(r, [M, d]);
        ops.moeScatter(rT, t(y, [M, d]), i32(index), t(w, [M]), i32([M]));
        ops.syncBlocking();
        expect(relError(read(rT), scatterRef(r, y, index, w, M, M, d))).toBeLessThan(1e-6);
      });
      it('reads count when the op runs', () => {
        const [M, d] = [5, 8];
        const r = rand(M * d);
        const y = rand(M * d);
        const w = rand(M);
        const index = [4, 3, 2, 1, 0];
        const count = i32([0]);
        const rT = t(r, [M, d]);
        ops.copy(i32([2]), count);
        ops.moeScatter(rT, t(y, [M, d]), i32(index), t(w, [M]), count);
        ops.syncBlocking();
        expect(relError(read(rT), scatterRef(r, y, index, w, 2, M, d))).toBeLessThan(1e-6);
      });
    });

    describe('swiglu with count', () => {
      for (const [M, F] of [[9, 16], [40, 100]]) {
        for (const c of [0, 3, M!, M! + 2, -4]) {
          it(`M=${M} F=${F} count=${c}: rows past count untouched`, () => {
            const h = rand(M! * 2 * F!, 3);
            const out = filled([M!, F!], 7);
            ops.swiglu(strided(h, M!, 2 * F!, 2 * F! + 3, 1), out, i32([c]));
            ops.syncBlocking();
            const n = Math.max(0, Math.min(c, M!));
            const got = read(out);
            if (n > 0) expect(relError(got.slice(0, n * F!), ref.swiglu(h.slice(0, n * 2 * F!), n, F!))).toBeLessThan(1e-6);
            expect(got.slice(n * F!).every((v) => v === 7)).toBe(true);
          });
        }
      }
      it('reads count when the op runs', () => {
        const [M, F] = [6, 8];
        const h = rand(M * 2 * F);
        const count = i32([0]);
        const out = filled([M, F], 7);
        ops.copy(i32([4]), count);
        ops.swiglu(t(h, [M, 2 * F]), out, count);
        ops.syncBlocking();
        const got = read(out);
        expect(relError(got.slice(0, 4 * F), ref.swiglu(h.slice(0, 4 * 2 * F), 4, F))).toBeLessThan(1e-6);
        expect(got.slice(4 * F).every((v) => v === 7)).toBe(true);
      });
    });

    describe('a whole MoE FFN out of linear + the MoE ops, against moeFfnRef', () => {
      const [E, K, d, dff] = [16, 2, 24, 40];
      const router = rand(E * d, 1 / Math.sqrt(d));
      const fc1 = Array.from({ length: E }, () => rand(2 * dff * d, 1 / Math.sqrt(d)));
      const fc2 = Array.from({ length: E }, () => rand(d * dff, 1 / Math.sqrt(dff)));
      const nRouter = t(router, [E, d]);
      const nFc1 = fc1.map((w) => t(w, [2 * dff, d]));
      const nFc2 = fc2.map((w) => t(w, [d, dff]));

      /** residual += MoE(x), queued as the Jamba model queues it: no read-back until the end. */
      function nativeMoe(x: NativeTensor, residual: NativeTensor, M: number) {
        const logits = filled([M, E]);
        ops.linear(x, nRouter, logits);
        const route = { index: i32(new Array(E * M).fill(-1), [E, M]), weight: filled([E, M]), count: i32(new Array(E).fill(-1)) };
        ops.moeRoute(logits, route, K);
        for (let e = 0; e < E; e++) {
          const index = route.index.rows(e, e + 1).reshape([M]);
          const weight = route.weight.rows(e, e + 1).reshape([M]);
          const count = route.count.rows(e, e + 1);
          // Every scratch row past count stays NaN: anything that read one would show.
          const xe = filled([M, d]);
          ops.gatherRows(x, index, count, xe);
          const h = filled([M, 2 * dff]);
          ops.linear(xe, nFc1[e]!, h, count);
          const act = filled([M, dff]);
          ops.swiglu(h, act, count);
          const ye = filled([M, d]);
          ops.linear(act, nFc2[e]!, ye, count);
          ops.moeScatter(residual, ye, index, weight, count);
        }
        return route;
      }

      for (const M of [1, 37]) {
        it(`M=${M} E=${E} top_k=${K} d=${d} dff=${dff}`, () => {
          const x = rand(M * d);
          const base = rand(M * d);
          const residual = t(base, [M, d]);
          const route = nativeMoe(strided(x, M, d, d + 6, 5), residual, M);
          ops.syncBlocking();
          expect(readInt(route.count).reduce((a, b) => a + b, 0)).toBe(M * K);
          const got = read(residual).map((v, i) => v - base[i]!);
          const want = moeFfnRef(x, M, d, router, fc1, fc2, dff, K);
          expect(relError(got, want)).toBeLessThan(1e-5);
        });
      }
    });

    describe('bad arguments throw a TypeError naming the argument', () => {
      const [M, E, d] = [4, 4, 8];
      const routeOut = () => ({ index: i32(new Array(E * M).fill(0), [E, M]), weight: filled([E, M]), count: i32([0, 0, 0, 0]) });
      it('moe_route', () => {
        const logits = filled([M, E]);
        expect(() => ops.moeRoute(logits, routeOut(), 0)).toThrow(/moe_route: 'top_k' must be in \[1, 4\]/);
        expect(() => ops.moeRoute(logits, routeOut(), 5)).toThrow(/moe_route: 'top_k' must be in \[1, 4\]/);
        expect(() => ops.moeRoute(logits, routeOut(), 1.5)).toThrow(/moe_route: parameter 'top_k' must be an integer/);
        expect(() => ops.moeRoute(i32(new Array(M * E).fill(0), [M, E]), routeOut(), 2)).toThrow(/moe_route: tensor 'logits' has dtype i32/);
        expect(() => ops.moeRoute(filled([M, 0]), { index: i32([], [0, M]), weight: filled([0, M]), count: i32([]) }, 1)).toThrow(/moe_route: tensor 'logits' has no experts/);
        expect(() => ops.moeRoute(logits, { ...routeOut(), index: i32(new Array(E * (M + 1)).fill(0), [E, M + 1]) }, 2)).toThrow(/moe_route: tensor 'index' has shape \[4, 5\], expected \[4, 4\]/);
        expect(() => ops.moeRoute(logits, { ...routeOut(), weight: i32(new Array(E * M).fill(0), [E, M]) }, 2)).toThrow(/moe_route: tensor 'weight' has dtype i32, expected f32/);
        expect(() => ops.moeRoute(logits, { ...routeOut(), count: i32([0, 0, 0]) }, 2)).toThrow(/moe_route: tensor 'count' has shape \[3\], expected \[4\]/);
        expect(() => ops.moeRoute(filled([M, 3]), routeOut(), 2)).toThrow(/moe_route: tensor 'index' has shape \[4, 4\], expected \[3, 4\]/);
        const wide = i32(new Array(E * (M + 2)).fill(0), [E, M + 2]).cols(0, M);
        expect(() => ops.moeRoute(logits, { ...routeOut(), index: wide }, 2)).toThrow(/moe_route: tensor 'index' must be contiguous/);
        expect(() => ops.moeRoute(logits, { ...routeOut(), weight: logits }, 2)).toThrow(/moe_route: tensors 'weight' and 'logits' overlap/);
        expect(() => ops.moeRoute(logits, routeOut(), 0)).toThrow(TypeError);
      });
      it('gather_rows', () => {
        const x = filled([M, d]);
        const index = i32([0, 1, 2, 3]);
        expect(() => ops.gatherRows(x, filled([M]), i32([1]), filled([M, d]))).toThrow(/gather_rows: tensor 'index' has dtype f32, expected i32/);
        expect(() => ops.gatherRows(x, i32([0, 1]), i32([1]), filled([M, d]))).toThrow(/gather_rows: tensor 'index' has shape \[2\], expected \[4\]/);
        expect(() => ops.gatherRows(x, index, i32([1, 1]), filled([M, d]))).toThrow(/gather_rows: tensor 'count' has shape \[2\], expected \[1\]/);
        expect(() => ops.gatherRows(x, index, i32([1]), filled([M, d + 1]))).toThrow(/gather_rows: tensor 'out' has shape \[4, 9\], expected \[4, 8\]/);
        expect(() => ops.gatherRows(x, index, i32([1]), x)).toThrow(/gather_rows: tensors 'out' and 'x' overlap/);
        expect(() => ops.gatherRows(x, index, i32([1]), x.rows(0, M))).toThrow(TypeError);
      });
      it('moe_scatter', () => {
        const r = filled([M, d]);
        const index = i32([0, 1, 2, 3]);
        const w = filled([M]);
        expect(() => ops.moeScatter(r, filled([M + 1, d]), index, w, i32([1]))).toThrow(/moe_scatter: tensor 'y' has shape \[5, 8\], expected \[4, 8\]/);
        expect(() => ops.moeScatter(r, filled([M, d]), index, i32([0, 0, 0, 0]), i32([1]))).toThrow(/moe_scatter: tensor 'weight' has dtype i32, expected f32/);
        expect(() => ops.moeScatter(r, filled([M, d]), filled([M]), w, i32([1]))).toThrow(/moe_scatter: tensor 'index' has dtype f32/);
        expect(() => ops.moeScatter(r, filled([M, d]), index, w, filled([1]))).toThrow(/moe_scatter: tensor 'count' has dtype f32/);
        expect(() => ops.moeScatter(r, r, index, w, i32([1]))).toThrow(/moe_scatter: tensors 'residual' and 'y' overlap/);
        expect(() => ops.moeScatter(filled([M, d], 0).reshape([M * d]), filled([M, d]), index, w, i32([1]))).toThrow(/moe_scatter: tensor 'residual' has shape \[32\]/);
      });
      it('swiglu', () => {
        expect(() => ops.swiglu(filled([M, 8]), filled([M, 4]), filled([1]))).toThrow(/swiglu: tensor 'count' has dtype f32, expected i32/);
        expect(() => ops.swiglu(filled([M, 8]), filled([M, 4]), i32([1, 2]))).toThrow(/swiglu: tensor 'count' has shape \[2\], expected \[1\]/);
      });
    });
  });
}

describe('MoE ops on the CUDA backend', () => {
  const hasCuda = native.backendInfo().cuda.devices.length > 0;
  it.skipIf(!hasCuda)('are not implemented yet (a clear error, not a crash)', () => {
    const gpu = new Ops('cuda');
    const e = (shape: number[], dtype: 'f32' | 'i32' = 'f32') => native.empty(shape, dtype, 'cuda');
    expect(() => gpu.moeRoute(e([4, 4]), { index: e([4, 4], 'i32'), weight: e([4, 4]), count: e([4], 'i32') }, 2)).toThrow(/moe_route: not implemented on the CUDA backend/);
    expect(() => gpu.gatherRows(e([4, 8]), e([4], 'i32'), e([1], 'i32'), e([4, 8]))).toThrow(/gather_rows: not implemented on the CUDA backend/);
    expect(() => gpu.moeScatter(e([4, 8]), e([4, 8]), e([4], 'i32'), e([4]), e([1], 'i32'))).toThrow(/moe_scatter: not implemented on the CUDA backend/);
    gpu.dispose();
  });
});
