// Every CPU op against the float64 reference (test/reference/ops.ts) on random inputs and
// edge shapes, on both the AVX2 path and the portable path.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../lib/dtype.js';
import { addon, type NativeTensor } from '../lib/native.js';
import { Ops } from '../lib/ops.js';
import { relError } from './helpers/models.js';
import * as ref from './reference/ops.js';
import { randn, randu } from './reference/rng.js';

const native = addon();
const cpuPaths = native.backendInfo().cpu.avx2 ? (['avx2', 'portable'] as const) : (['portable'] as const);

let seed = 1000;
/** Random values rounded to f32, so the reference sees exactly what the kernel sees. */
function rand(n: number, scale = 1): Float64Array {
  return Float64Array.from(Float32Array.from(randn(n, seed++, scale)));
}
function t(data: Float64Array, shape: number[]): NativeTensor {
  return native.tensor(Float32Array.from(data), shape);
}
function out(shape: number[]): NativeTensor {
  return native.empty(shape);
}
function read(x: NativeTensor): Float64Array {
  return Float64Array.from(x.toArray());
}
/** Place rows of `cols` values into a wider matrix of `ld` columns at column `at`: a strided view. */
function strided(data: Float64Array, rows: number, cols: number, ld: number, at: number): NativeTensor {
  const wide = new Float64Array(rows * ld).fill(NaN); // untouched padding must never be read
  for (let r = 0; r < rows; r++) wide.set(data.subarray(r * cols, (r + 1) * cols), r * ld + at);
  return t(wide, [rows, ld]).cols(at, at + cols);
}

for (const path of cpuPaths) {
  describe(`CPU ops, ${path} path`, () => {
    const ops = new Ops('cpu');
    beforeAll(() => native.setPortable(path === 'portable'));
    afterAll(() => native.setPortable(false));

    describe('linear', () => {
      const shapes = [
        [1, 1, 1], [1, 768, 50], [2, 33, 17], [3, 17, 33], [7, 64, 129], [8, 40, 24], [9, 31, 65], [64, 96, 40], [130, 200, 70],
        // decode shapes large enough that each thread reads its rows as several streams, with leftovers
        [1, 64, 1003], [2, 40, 611], [5, 48, 997], [48, 24, 301],
      ];
      for (const wdt of ['f32', 'f16', 'bf16'] as const) {
        for (const [M, K, N] of shapes) {
          it(`${wdt} M=${M} K=${K} N=${N}`, () => {
            const x = rand(M! * K!);
            const w32 = Float32Array.from(rand(N! * K!));
            const wq = wdt === 'f32' ? w32 : wdt === 'f16' ? f16ToF32(f32ToF16(w32)) : bf16ToF32(f32ToBf16(w32));
            const W = native.tensor(w32, [N!, K!], wdt);
            const y = out([M!, N!]);
            ops.linear(t(x, [M!, K!]), W, y);
            ops.syncBlocking();
            expect(relError(read(y), ref.linear(x, Float64Array.from(wq), M!, K!, N!))).toBeLessThan(1e-5);
          });
        }
      }
      it('reads strided x and writes a strided output', () => {
        const [M, K, N] = [5, 24, 10];
        const x = rand(M * K);
        const w = rand(N * K);
        const yWide = native.tensor(new Float32Array(M * 16).fill(7), [M, 16]);
        ops.linear(strided(x, M, K, 40, 3), t(w, [N, K]), yWide.cols(2, 12));
        ops.syncBlocking();
        const got = read(yWide);
        const want = ref.linear(x, w, M, K, N);
        for (let m = 0; m < M; m++) {
          expect(relError(got.subarray(m * 16 + 2, m * 16 + 12), want.subarray(m * N, (m + 1) * N))).toBeLessThan(1e-5);
          expect(got[m * 16]).toBe(7); // columns outside the view untouched
          expect(got[m * 16 + 15]).toBe(7);
        }
      });
      it('propagates NaN from x', () => {
        const x = rand(3 * 8);
        x[9] = NaN;
        const y = out([3, 4]);
        ops.linear(t(x, [3, 8]), t(rand(4 * 8), [4, 8]), y);
        ops.syncBlocking();
        const got = read(y);
        expect(got.slice(4, 8).every(Number.isNaN)).toBe(true);
        expect(got.slice(0, 4).some(Number.isNaN)).toBe(false);
      });
    });

    describe('embedding', () => {
      for (const dt of ['f32', 'bf16', 'f16'] as const) {
        it(`gathers rows of a ${dt} table`, () => {
          const [V, d] = [50, 12];
          const E32 = Float32Array.from(rand(V * d));
          const Eq = dt === 'f32' ? E32 : dt === 'f16' ? f16ToF32(f32ToF16(E32)) : bf16ToF32(f32ToBf16(E32));
          const ids = [0, 49, 7, 7, 1];
          const o = out([ids.length, d]);
          ops.embedding(native.tensor(Int32Array.from(ids), [ids.length], 'i32'), native.tensor(E32, [V, d], dt), o);
          ops.syncBlocking();
          expect(read(o)).toEqual(ref.embedding(ids, Float64Array.from(Eq), V, d));
        });
      }
      it('rejects an id out of range when it runs', () => {
        const o = out([2, 4]);
        ops.embedding(native.tensor(Int32Array.from([3, 10]), [2], 'i32'), t(rand(16 * 4), [16, 4]), o, 10);
        expect(() => ops.syncBlocking()).toThrow(/token id 10 at position 1 is out of range \[0, 10\)/);
        ops.embedding(native.tensor(Int32Array.from([-1]), [1], 'i32'), t(rand(16 * 4), [16, 4]), out([1, 4]));
        expect(() => ops.syncBlocking()).toThrow(/token id -1/);
      });
    });

    describe('rmsnorm', () => {
      for (const [M, d] of [[1, 7], [5, 64], [3, 100], [2, 768]]) {
        it(`M=${M} d=${d}, with and without the residual add`, () => {
          const r = rand(M! * d!, 3);
          const delta = rand(M! * d!);
          const w = rand(d!);
          const rT = t(r, [M!, d!]);
          const o = out([M!, d!]);
          ops.rmsnorm(rT, t(delta, [M!, d!]), t(w, [d!]), o, 1e-5);
          ops.syncBlocking();
          const sum = ref.add(r, delta);
          expect(relError(read(rT), sum)).toBeLessThan(1e-6);
          expect(relError(read(o), ref.rmsnorm(sum, w, M!, d!, 1e-5))).toBeLessThan(1e-5);
          const o2 = out([M!, d!]);
          ops.rmsnorm(t(r, [M!, d!]), null, t(w, [d!]), o2, 1e-5);
          ops.syncBlocking();
          expect(relError(read(o2), ref.rmsnorm(r, w, M!, d!, 1e-5))).toBeLessThan(1e-5);
        });
      }
    });

    describe('gated_rmsnorm', () => {
      for (const [M, d, G] of [[1, 8, 1], [4, 64, 2], [3, 96, 4], [2, 36, 3]]) {
        it(`M=${M} d=${d} groups=${G}, z strided`, () => {
          const y = rand(M! * d!);
          const z = rand(M! * d!, 2);
          const w = rand(d!);
          const o = out([M!, d!]);
          ops.gatedRmsnorm(t(y, [M!, d!]), strided(z, M!, d!, d! + 9, 5), t(w, [d!]), o, G!, 1e-5);
          ops.syncBlocking();
          expect(relError(read(o), ref.gatedRmsnorm(y, z, w, M!, d!, G!, 1e-5))).toBeLessThan(1e-5);
        });
      }
    });

    describe('conv1d', () => {
      const cases = [
        [1, 1, 5, 4], [1, 2, 20, 4], [1, 3, 20, 4], [3, 5, 72, 4], [2, 37, 20, 2], [1, 64, 136, 4], [2, 9, 17, 5],
        // Several token blocks (64) and channel blocks (256) of the AVX2 prefill kernel, with a
        // channel tail that is not a multiple of 8.
        [2, 150, 300, 4], [1, 65, 264, 3],
      ];
      for (const [B, L, C, K] of cases) {
        for (const withState of [false, true]) {
          it(`B=${B} L=${L} C=${C} K=${K} ${withState ? 'carried state' : 'zero state'}`, () => {
            const x = rand(B! * L! * C!);
            const w = rand(C! * K!);
            const bias = rand(C!);
            const st = withState ? rand(B! * C! * (K! - 1)) : null;
            const stT = st ? t(st, [B!, C!, K! - 1]) : native.empty([B!, C!, K! - 1]);
            const o = out([B! * L!, C!]);
            ops.conv1dSilu(strided(x, B! * L!, C!, C! + 6, 2), t(w, [C!, K!]), t(bias, [C!]), o, B!, stT);
            ops.syncBlocking();
            const want = ref.conv1dSilu(x, w, bias, B!, L!, C!, K!, st);
            expect(relError(read(o), want.out)).toBeLessThan(1e-5);
            expect(relError(read(stT), want.stateOut)).toBe(0);
          });
        }
      }
      // The decode kernel has unrolled versions for K = 2, 3, 4 and a general one (K = 5); C = 300
      // spans three 128-channel blocks with a tail, and x is a strided view as in the model.
      for (const [B, C, K] of [[1, 300, 4], [2, 300, 3], [3, 130, 2], [2, 9, 5]]) {
        it(`conv1d_update B=${B} C=${C} K=${K} == the reference with L = 1`, () => {
          const x = rand(B! * C!);
          const w = rand(C! * K!);
          const bias = rand(C!);
          const st = rand(B! * C! * (K! - 1));
          const stT = t(st, [B!, C!, K! - 1]);
          const o = out([B!, C!]);
          ops.conv1dUpdate(strided(x, B!, C!, C! + 6, 2), t(w, [C!, K!]), t(bias, [C!]), o, stT);
          ops.syncBlocking();
          const want = ref.conv1dSilu(x, w, bias, B!, 1, C!, K!, st);
          expect(relError(read(o), want.out)).toBeLessThan(1e-5);
          expect(relError(read(stT), want.stateOut)).toBe(0);
        });
      }
      it('per-sequence state list == batched state tensor', () => {
        const [B, L, C, K] = [3, 6, 24, 4];
        const x = rand(B * L * C);
        const w = rand(C * K);
        const bias = rand(C);
        const st = rand(B * C * (K - 1));
        const batched = t(st, [B, C, K - 1]);
        const list = [0, 1, 2].map((b) => t(st.subarray(b * C * (K - 1), (b + 1) * C * (K - 1)), [C, K - 1]));
        const o1 = out([B * L, C]);
        const o2 = out([B * L, C]);
        ops.conv1dSilu(t(x, [B * L, C]), t(w, [C, K]), t(bias, [C]), o1, B, batched);
        ops.conv1dSilu(t(x, [B * L, C]), t(w, [C, K]), t(bias, [C]), o2, B, list);
        ops.syncBlocking();
        expect(read(o2)).toEqual(read(o1));
        expect(Float64Array.from(list.flatMap((s) => [...read(s)]))).toEqual(read(batched));
      });
      it('prefill in pieces == one prefill == token-by-token updates', () => {
        const [B, L, C, K] = [2, 11, 16, 4];
        const x = rand(B * L * C);
        const w = t(rand(C * K), [C, K]);
        const bias = t(rand(C), [C]);
        const whole = out([B * L, C]);
        ops.conv1dSilu(t(x, [B * L, C]), w, bias, whole, B, native.empty([B, C, K - 1]));
        const stPieces = native.empty([B, C, K - 1]);
        const stSteps = native.empty([B, C, K - 1]);
        const pieces: Float64Array[] = [];
        const steps: Float64Array[] = [];
        const seqRows = (from: number, to: number) => {
          const part = new Float64Array(B * (to - from) * C);
          for (let b = 0; b < B; b++) part.set(x.subarray((b * L + from) * C, (b * L + to) * C), b * (to - from) * C);
          return part;
        };
        for (const [a, b] of [[0, 2], [2, 3], [3, 11]]) {
          const o = out([B * (b! - a!), C]);
          ops.conv1dSilu(t(seqRows(a!, b!), [B * (b! - a!), C]), w, bias, o, B, stPieces);
          ops.syncBlocking();
          pieces.push(read(o));
        }
        for (let i = 0; i < L; i++) {
          const o = out([B, C]);
          ops.conv1dUpdate(t(seqRows(i, i + 1), [B, C]), w, bias, o, stSteps);
          ops.syncBlocking();
          steps.push(read(o));
        }
        const wholeArr = read(whole);
        // Reassemble [B, L, C] from the pieces and from the steps.
        const fromPieces = new Float64Array(B * L * C);
        let off = 0;
        for (const [i, [a, b]] of [[0, 2], [2, 3], [3, 11]].entries()) {
          const n = b! - a!;
          for (let s = 0; s < B; s++) fromPieces.set(pieces[i]!.subarray(s * n * C, (s + 1) * n * C), (s * L + a!) * C);
          off += n;
        }
        const fromSteps = new Float64Array(B * L * C);
        steps.forEach((o, i) => {
          for (let s = 0; s < B; s++) fromSteps.set(o.subarray(s * C, (s + 1) * C), (s * L + i) * C);
        });
        expect(relError(fromPieces, wholeArr)).toBeLessThan(1e-6);
        expect(relError(fromSteps, wholeArr)).toBeLessThan(1e-6);
        expect(read(stPieces)).toEqual(read(stSteps));
      });
    });

    describe('ssd', () => {
      interface Case { B: number; L: number; H: number; P: number; G: number; N: number; chunk: number }
      function inputs(c: Case, withState: boolean) {
        const rows = c.B * c.L;
        return {
          x: rand(rows * c.H * c.P),
          dt: Float64Array.from(Float32Array.from(rand(rows * c.H).map((v) => v - 2))), // dt ~ softplus(N(-2, 1)), as trained models have
          dtBias: rand(c.H, 0.5),
          A_log: Float64Array.from(Float32Array.from(randu(c.H, seed++, 0, 2.5))),
          Bm: rand(rows * c.G * c.N),
          Cm: rand(rows * c.G * c.N),
          D: rand(c.H),
          state: withState ? rand(c.B * c.H * c.P * c.N) : null,
        };
      }
      /** x | B | C packed in one matrix and dt in another, as the model lays them out. */
      function enqueue(c: Case, i: ReturnType<typeof inputs>, step: boolean, state: NativeTensor | NativeTensor[]) {
        const rows = c.B * c.L;
        const [xw, gw] = [c.H * c.P, c.G * c.N];
        const width = xw + 2 * gw;
        const packed = new Float64Array(rows * width);
        for (let r = 0; r < rows; r++) {
          packed.set(i.x.subarray(r * xw, (r + 1) * xw), r * width);
          packed.set(i.Bm.subarray(r * gw, (r + 1) * gw), r * width + xw);
          packed.set(i.Cm.subarray(r * gw, (r + 1) * gw), r * width + xw + gw);
        }
        const xbc = t(packed, [rows, width]);
        const y = out([rows, xw]);
        const args = {
          x: xbc.cols(0, xw),
          B: xbc.cols(xw, xw + gw),
          C: xbc.cols(xw + gw, width),
          dt: strided(i.dt, rows, c.H, c.H + 3, 1),
          dt_bias: t(i.dtBias, [c.H]),
          A_log: t(i.A_log, [c.H]),
          D: t(i.D, [c.H]),
        };
        if (step) ops.ssdStep(args, y, c.G, state);
        else ops.ssdScan(args, y, { batch: c.B, groups: c.G, chunk: c.chunk }, state);
        return y;
      }
      // The chunked scan sums hundreds of decayed fp32 terms per output in a different order
      // than the recurrence; the worst element over the RMS stays within a few 1e-4.
      const tol = 3e-4;
      function reference(c: Case, i: ReturnType<typeof inputs>) {
        return ref.ssdRecurrence(i.x, i.dt, i.dtBias, i.A_log, i.Bm, i.Cm, i.D, c, i.state);
      }

      const cases: Case[] = [
        { B: 1, L: 1, H: 2, P: 4, G: 1, N: 8, chunk: 256 },
        { B: 1, L: 3, H: 4, P: 8, G: 2, N: 16, chunk: 256 },
        { B: 3, L: 255, H: 4, P: 8, G: 2, N: 16, chunk: 256 },
        { B: 1, L: 256, H: 4, P: 16, G: 1, N: 16, chunk: 256 },
        { B: 2, L: 257, H: 4, P: 8, G: 2, N: 16, chunk: 256 },
        { B: 1, L: 1000, H: 2, P: 16, G: 1, N: 32, chunk: 256 },
        { B: 3, L: 50, H: 6, P: 8, G: 3, N: 8, chunk: 7 },
      ];
      for (const c of cases) {
        for (const withState of [false, true]) {
          it(`scan B=${c.B} L=${c.L} H=${c.H} P=${c.P} G=${c.G} N=${c.N} chunk=${c.chunk} ${withState ? 'carried state' : 'zero state'}`, () => {
            const i = inputs(c, withState);
            const st = i.state ? t(i.state, [c.B, c.H, c.P, c.N]) : native.empty([c.B, c.H, c.P, c.N]);
            const y = enqueue(c, i, false, st);
            ops.syncBlocking();
            const want = reference(c, i);
            expect(relError(read(y), want.y)).toBeLessThan(tol);
            expect(relError(read(st), want.stateOut)).toBeLessThan(tol);
          });
        }
      }
      it('step == the recurrence for one token, batch 3 with per-sequence states', () => {
        const c = { B: 3, L: 1, H: 4, P: 8, G: 2, N: 16, chunk: 256 };
        const i = inputs(c, true);
        const per = c.H * c.P * c.N;
        const states = [0, 1, 2].map((b) => t(i.state!.subarray(b * per, (b + 1) * per), [c.H, c.P, c.N]));
        const y = enqueue(c, i, true, states);
        ops.syncBlocking();
        const want = reference(c, i);
        expect(relError(read(y), want.y)).toBeLessThan(1e-5);
        expect(relError(Float64Array.from(states.flatMap((s) => [...read(s)])), want.stateOut)).toBeLessThan(1e-5);
      });
      it('scan(L) == scan(L - k) then k steps', () => {
        const c = { B: 2, L: 300, H: 4, P: 8, G: 2, N: 16, chunk: 64 };
        const k = 5;
        const i = inputs(c, true);
        const whole = t(i.state!, [c.B, c.H, c.P, c.N]);
        const yWholeT = enqueue(c, i, false, whole);
        ops.syncBlocking();
        const yWholeArr = read(yWholeT);
        // Split each sequence's rows into the first L-k and the last k tokens.
        const take = (arr: Float64Array, width: number, from: number, to: number) => {
          const part = new Float64Array(c.B * (to - from) * width);
          for (let b = 0; b < c.B; b++) part.set(arr.subarray((b * c.L + from) * width, (b * c.L + to) * width), b * (to - from) * width);
          return part;
        };
        const sub = (from: number, to: number) => ({
          ...i,
          x: take(i.x, c.H * c.P, from, to),
          dt: take(i.dt, c.H, from, to),
          Bm: take(i.Bm, c.G * c.N, from, to),
          Cm: take(i.Cm, c.G * c.N, from, to),
        });
        const st = t(i.state!, [c.B, c.H, c.P, c.N]);
        const headT = enqueue({ ...c, L: c.L - k }, sub(0, c.L - k), false, st);
        ops.syncBlocking();
        const head = read(headT);
        for (let s = 0; s < k; s++) {
          const yT = enqueue({ ...c, L: 1 }, sub(c.L - k + s, c.L - k + s + 1), true, st);
          ops.syncBlocking();
          const y = read(yT);
          for (let b = 0; b < c.B; b++) {
            const got = y.subarray(b * c.H * c.P, (b + 1) * c.H * c.P);
            const want = yWholeArr.subarray((b * c.L + c.L - k + s) * c.H * c.P, (b * c.L + c.L - k + s + 1) * c.H * c.P);
            expect(relError(got, want)).toBeLessThan(tol);
          }
        }
        expect(relError(head, take(yWholeArr, c.H * c.P, 0, c.L - k))).toBeLessThan(tol);
        expect(relError(read(st), read(whole))).toBeLessThan(tol);
      });
    });

    describe('elementwise', () => {
      it('silu, softplus, add, copy', () => {
        const n = 1000;
        const x = rand(n, 8);
        x[3] = 30; // softplus identity branch
        x[4] = -90; // exp underflow
        const s = out([n]);
        const sp = out([n]);
        const a = out([n]);
        ops.silu(t(x, [n]), s);
        ops.softplus(t(x, [n]), sp);
        ops.add(t(x, [n]), t(x, [n]), a);
        const c = out([10, 100]);
        ops.copy(t(x, [10, 100]), c);
        ops.syncBlocking();
        expect(relError(read(s), x.map(ref.silu))).toBeLessThan(1e-6);
        expect(relError(read(sp), x.map(ref.softplus))).toBeLessThan(1e-6);
        expect(read(a)).toEqual(x.map((v) => 2 * v));
        expect(read(c)).toEqual(x);
      });
    });
  });
}
