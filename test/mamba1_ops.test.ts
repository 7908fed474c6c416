// The mamba1_scan op (Mamba-1 selective scan, Jamba's mixer) on the CPU against the float64
// recurrence of test/reference/mamba1.ts, on the AVX2 path and the portable path: prefill and
// decode shapes, channel and state sizes that are not multiples of the vector width, carried
// and absent states in both forms, strided inputs, split sequences, and argument errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addon, type NativeTensor } from '../lib/native.js';
import { Ops } from '../lib/ops.js';
import { mamba1ScanRef } from './reference/mamba1.js';
import { randn, randu } from './reference/rng.js';

const native = addon();
const cpuPaths = native.backendInfo().cpu.avx2 ? (['avx2', 'portable'] as const) : (['portable'] as const);
// fp32 kernel against the float64 recurrence, element by element:
//   max_i |got_i - want_i| / (|want_i| + rms(want)),
// a relative error with the RMS as its floor (so that values near zero do not count as
// large errors). Not relError's max / rms alone: products of Gaussian inputs give outputs 50
// times their RMS, where even a correctly rounded fp32 result is 1e-6 of the RMS away, and
// the kernels' few ulps (vectorised softplus and exp) reach 1.5e-5 of it.
const TOL = 1e-5;
function relError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`length mismatch ${got.length} vs ${want.length}`);
  let ss = 0;
  for (let i = 0; i < want.length; i++) ss += want[i]! * want[i]!;
  const rms = Math.sqrt(ss / Math.max(1, want.length)) || 1;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i]! - want[i]!) / (Math.abs(want[i]!) + rms);
    if (Number.isNaN(e)) return Infinity;
    worst = Math.max(worst, e);
  }
  return worst;
}

let seed = 5000;
/** Random values rounded to f32, so the reference sees exactly what the kernel sees. */
function rand(n: number, scale = 1, shift = 0): Float64Array {
  return Float64Array.from(Float32Array.from(randn(n, seed++, scale).map((v) => v + shift)));
}
function t(data: Float64Array, shape: number[]): NativeTensor {
  return native.tensor(Float32Array.from(data), shape);
}
function read(x: NativeTensor): Float64Array {
  return Float64Array.from(x.toArray());
}

interface Shape {
  B: number;
  L: number;
  di: number;
  N: number;
}
interface Inputs {
  x: Float64Array; // [B*L, di]
  dt: Float64Array; // [B*L, di]
  z: Float64Array; // [B*L, di]
  B: Float64Array; // [B*L, N]
  C: Float64Array; // [B*L, N]
  dtBias: Float64Array; // [di]
  aLog: Float64Array; // [di, N]
  D: Float64Array; // [di]
  state: Float64Array; // [B, di, N]
}

function inputs(s: Shape): Inputs {
  const rows = s.B * s.L;
  // A_log = log(1..N) as Mamba-1 initialises it, jittered; dt before its bias around -2, so
  // that delta = softplus(dt + bias) is ~0.1 as in trained models.
  const jitter = randu(s.di * s.N, seed++, -0.3, 0.3);
  const aLog = Float64Array.from(Float32Array.from(jitter.map((j, i) => Math.log((i % s.N) + 1) + j)));
  return {
    x: rand(rows * s.di),
    dt: rand(rows * s.di, 1, -2),
    z: rand(rows * s.di),
    B: rand(rows * s.N),
    C: rand(rows * s.N),
    dtBias: rand(s.di, 0.5),
    aLog,
    D: rand(s.di),
    state: rand(s.B * s.di * s.N),
  };
}

/** Rows [from, to) of every sequence of a [B*L, width] matrix. */
function takeRows(arr: Float64Array, s: Shape, width: number, from: number, to: number): Float64Array {
  const part = new Float64Array(s.B * (to - from) * width);
  for (let b = 0; b < s.B; b++) part.set(arr.subarray((b * s.L + from) * width, (b * s.L + to) * width), b * (to - from) * width);
  return part;
}
/** Tokens [from, to) of every sequence: the inputs of a shorter call. */
function sliceTokens(i: Inputs, s: Shape, from: number, to: number): Inputs {
  return {
    ...i,
    x: takeRows(i.x, s, s.di, from, to),
    dt: takeRows(i.dt, s, s.di, from, to),
    z: takeRows(i.z, s, s.di, from, to),
    B: takeRows(i.B, s, s.N, from, to),
    C: takeRows(i.C, s, s.N, from, to),
  };
}

/** The reference, sequence by sequence: y [B*L, di] and the final states [B, di, N]. */
function reference(i: Inputs, s: Shape, withState: boolean): { y: Float64Array; state: Float64Array } {
  const y = new Float64Array(s.B * s.L * s.di);
  const state = new Float64Array(s.B * s.di * s.N);
  const per = s.di * s.N;
  for (let b = 0; b < s.B; b++) {
    const rows = (arr: Float64Array, w: number) => arr.subarray(b * s.L * w, (b + 1) * s.L * w);
    const r = mamba1ScanRef(
      { x: rows(i.x, s.di), dt: rows(i.dt, s.di), dtBias: i.dtBias, aLog: i.aLog, B: rows(i.B, s.N), C: rows(i.C, s.N), D: i.D, z: rows(i.z, s.di) },
      s.L,
      s.di,
      s.N,
      withState ? i.state.subarray(b * per, (b + 1) * per) : undefined,
    );
    y.set(r.y, b * s.L * s.di);
    state.set(r.state, b * per);
  }
  return { y, state };
}

/**
 * The op's tensors. Strided: x | z | dt are column views of one wide matrix and B | C of
 * another, as the model's projections lay them out, with NaN in the columns between them
 * (which must never be read).
 */
function tensors(i: Inputs, s: Shape, strided: boolean) {
  const rows = s.B * s.L;
  const small = { dt_bias: t(i.dtBias, [s.di]), A_log: t(i.aLog, [s.di, s.N]), D: t(i.D, [s.di]) };
  if (!strided) {
    return { x: t(i.x, [rows, s.di]), dt: t(i.dt, [rows, s.di]), z: t(i.z, [rows, s.di]), B: t(i.B, [rows, s.N]), C: t(i.C, [rows, s.N]), ...small };
  }
  const pack = (parts: { data: Float64Array; at: number }[], w: number, ld: number) => {
    const wide = new Float64Array(rows * ld).fill(NaN);
    for (const p of parts) for (let r = 0; r < rows; r++) wide.set(p.data.subarray(r * w, (r + 1) * w), r * ld + p.at);
    return t(wide, [rows, ld]);
  };
  const di = s.di;
  const xzd = pack([{ data: i.x, at: 1 }, { data: i.z, at: di + 2 }, { data: i.dt, at: 2 * di + 3 }], di, 3 * di + 5);
  const bc = pack([{ data: i.B, at: 0 }, { data: i.C, at: s.N + 3 }], s.N, 2 * s.N + 4);
  return {
    x: xzd.cols(1, di + 1),
    z: xzd.cols(di + 2, 2 * di + 2),
    dt: xzd.cols(2 * di + 3, 3 * di + 3),
    B: bc.cols(0, s.N),
    C: bc.cols(s.N + 3, 2 * s.N + 3),
    ...small,
  };
}

type StateMode = 'none' | 'tensor' | 'list';
function makeState(i: Inputs, s: Shape, mode: StateMode): NativeTensor | NativeTensor[] | undefined {
  const per = s.di * s.N;
  if (mode === 'tensor') return t(i.state, [s.B, s.di, s.N]);
  if (mode === 'list') return Array.from({ length: s.B }, (_, b) => t(i.state.subarray(b * per, (b + 1) * per), [s.di, s.N]));
  return undefined;
}
function readState(st: NativeTensor | NativeTensor[]): Float64Array {
  return Array.isArray(st) ? Float64Array.from(st.flatMap((x) => [...read(x)])) : read(st);
}

for (const path of cpuPaths) {
  describe(`mamba1_scan, CPU ${path} path`, () => {
    const ops = new Ops('cpu');
    beforeAll(() => native.setPortable(path === 'portable'));
    afterAll(() => native.setPortable(false));

    /** Runs the op on fresh tensors; returns y and (when a state was passed) the final state. */
    function run(i: Inputs, s: Shape, mode: StateMode, strided = true) {
      const state = makeState(i, s, mode);
      const y = native.empty([s.B * s.L, s.di]);
      ops.mamba1Scan(tensors(i, s, strided), y, s.B, state);
      ops.syncBlocking();
      return { y: read(y), state: state ? readState(state) : null };
    }

    const shapes: Shape[] = [
      { B: 1, L: 1, di: 12, N: 16 },
      { B: 3, L: 1, di: 64, N: 16 },
      { B: 3, L: 1, di: 12, N: 5 },
      { B: 2, L: 1, di: 203, N: 21 }, // several channel blocks, partial vectors of channels and of n
      { B: 1, L: 3, di: 64, N: 5 },
      { B: 3, L: 3, di: 12, N: 16 },
      { B: 3, L: 17, di: 12, N: 16 },
      { B: 1, L: 17, di: 5, N: 1 }, // fewer channels than a vector, one state value
      { B: 2, L: 256, di: 64, N: 16 },
      { B: 1, L: 300, di: 12, N: 5 },
      { B: 3, L: 300, di: 64, N: 16 },
      { B: 1, L: 40, di: 130, N: 24 }, // several channel blocks, the last one 2 channels
    ];
    for (const s of shapes) {
      for (const mode of ['none', 'tensor', 'list'] as const) {
        it(`B=${s.B} L=${s.L} di=${s.di} N=${s.N}, state ${mode}`, () => {
          const i = inputs(s);
          const got = run(i, s, mode);
          const want = reference(i, s, mode !== 'none');
          expect(relError(got.y, want.y)).toBeLessThan(TOL);
          if (mode !== 'none') expect(relError(got.state!, want.state)).toBeLessThan(TOL);
        });
      }
    }

    it('contiguous inputs give what strided views give', () => {
      const s = { B: 2, L: 9, di: 20, N: 16 };
      const i = inputs(s);
      const a = run(i, s, 'tensor', false);
      const b = run(i, s, 'tensor', true);
      expect(a.y).toEqual(b.y);
      expect(a.state).toEqual(b.state);
      expect(relError(a.y, reference(i, s, true).y)).toBeLessThan(TOL);
    });

    it('softplus identity above 20 and tiny deltas', () => {
      const s = { B: 1, L: 6, di: 16, N: 16 };
      const i = inputs(s);
      i.dt[3] = 25; // delta = 25 + bias: exp(delta*A) underflows to 0
      i.dt[20] = 19.5; // just below the threshold
      i.dt[40] = -30; // delta ~ 1e-13
      const got = run(i, s, 'tensor');
      const want = reference(i, s, true);
      expect(relError(got.y, want.y)).toBeLessThan(TOL);
      expect(relError(got.state!, want.state)).toBeLessThan(TOL);
    });

    it('a scan over L then a continued scan == one scan over the concatenation', () => {
      const s = { B: 2, L: 300, di: 24, N: 16 };
      const k = 137;
      const i = inputs(s);
      const whole = run(i, s, 'tensor');
      const state = t(i.state, [s.B, s.di, s.N]);
      const pieces: Float64Array[] = [];
      for (const [from, to] of [[0, k], [k, s.L]] as const) {
        const part = { ...s, L: to - from };
        const y = native.empty([s.B * part.L, s.di]);
        ops.mamba1Scan(tensors(sliceTokens(i, s, from, to), part, true), y, s.B, state);
        ops.syncBlocking();
        pieces.push(read(y));
      }
      expect(relError(read(state), whole.state!)).toBeLessThan(1e-6);
      for (const [p, [from, to]] of [[0, [0, k]], [1, [k, s.L]]] as const)
        expect(relError(pieces[p]!, takeRows(whole.y, s, s.di, from, to))).toBeLessThan(1e-6);
    });

    it('L decode steps (one token per call) == one scan, per-sequence states', () => {
      const s = { B: 3, L: 20, di: 40, N: 16 };
      const i = inputs(s);
      const whole = run(i, s, 'list');
      const per = s.di * s.N;
      const states = [0, 1, 2].map((b) => t(i.state.subarray(b * per, (b + 1) * per), [s.di, s.N]));
      for (let step = 0; step < s.L; step++) {
        const one = { ...s, L: 1 };
        const y = native.empty([s.B, s.di]);
        ops.mamba1Scan(tensors(sliceTokens(i, s, step, step + 1), one, true), y, s.B, states);
        ops.syncBlocking();
        expect(relError(read(y), takeRows(whole.y, s, s.di, step, step + 1))).toBeLessThan(TOL);
      }
      expect(relError(readState(states), whole.state!)).toBeLessThan(TOL);
      expect(relError(readState(states), reference(i, s, true).state)).toBeLessThan(TOL);
    });

    it('no state == a zero state', () => {
      const s = { B: 2, L: 5, di: 16, N: 16 };
      const i = inputs(s);
      i.state.fill(0);
      const a = run(i, s, 'none');
      const b = run(i, s, 'tensor');
      expect(a.y).toEqual(b.y);
    });
  });
}

describe('mamba1_scan argument errors', () => {
  const ops = new Ops('cpu');
  const s = { B: 3, L: 2, di: 12, N: 5 };
  const rows = s.B * s.L;
  const good = () => tensors(inputs(s), s, true);
  const y = () => native.empty([rows, s.di]);
  const call = (a: ReturnType<typeof good>, out: NativeTensor, batch: number, state?: NativeTensor | NativeTensor[]) => () =>
    ops.mamba1Scan(a, out, batch, state);

  it('accepts the good arguments', () => {
    expect(call(good(), y(), s.B, native.empty([s.B, s.di, s.N]))).not.toThrow();
    ops.syncBlocking();
  });
  it('wrong dtypes', () => {
    expect(call({ ...good(), x: native.empty([rows, s.di], 'bf16') }, y(), s.B)).toThrow(/mamba1_scan: tensor 'x' has dtype bf16, expected f32/);
    expect(call({ ...good(), A_log: native.empty([s.di, s.N], 'f16') }, y(), s.B)).toThrow(/mamba1_scan: tensor 'A_log' has dtype f16/);
    expect(call(good(), native.empty([rows, s.di], 'bf16'), s.B)).toThrow(/tensor 'out' has dtype bf16/);
    expect(call(good(), y(), s.B, native.empty([s.B, s.di, s.N], 'bf16'))).toThrow(/tensor 'state' has dtype bf16/);
  });
  it('wrong shapes', () => {
    expect(call({ ...good(), dt: native.empty([rows, s.di + 1]) }, y(), s.B)).toThrow(/mamba1_scan: tensor 'dt' has shape/);
    expect(call({ ...good(), z: native.empty([rows - 1, s.di]) }, y(), s.B)).toThrow(/tensor 'z' has shape/);
    expect(call({ ...good(), C: native.empty([rows, s.N + 1]) }, y(), s.B)).toThrow(/tensor 'C' has shape/);
    expect(call({ ...good(), A_log: native.empty([s.di, s.N + 1]) }, y(), s.B)).toThrow(/tensor 'A_log' has shape/);
    expect(call({ ...good(), dt_bias: native.empty([s.di - 1]) }, y(), s.B)).toThrow(/tensor 'dt_bias' has shape/);
    expect(call({ ...good(), D: native.empty([1, s.di]) }, y(), s.B)).toThrow(/tensor 'D' has shape/);
    expect(call(good(), native.empty([rows, s.di + 1]), s.B)).toThrow(/tensor 'out' has shape/);
    expect(call(good(), native.empty([rows, s.di + 3]).cols(0, s.di), s.B)).toThrow(/tensor 'out' must be contiguous/);
    expect(call({ ...good(), z: undefined as unknown as NativeTensor }, y(), s.B)).toThrow(/missing tensor argument 'z'/);
  });
  it('batch must divide the rows', () => {
    expect(call(good(), y(), 4)).toThrow(/mamba1_scan: 'batch' \(4\) must divide the 6 rows/);
    expect(call(good(), y(), 0)).toThrow(/'batch' \(0\)/);
    expect(call(good(), y(), 1.5)).toThrow(/parameter 'batch' must be an integer/);
  });
  it('wrong state shapes', () => {
    expect(call(good(), y(), s.B, native.empty([s.B, s.di, s.N + 1]))).toThrow(/mamba1_scan: tensor 'state' has shape/);
    expect(call(good(), y(), s.B, native.empty([s.B - 1, s.di, s.N]))).toThrow(/tensor 'state' has shape/);
    const list = () => [0, 1, 2].map(() => native.empty([s.di, s.N]));
    expect(call(good(), y(), s.B, list().slice(0, 2))).toThrow(/list 'state' has 2 tensors for a batch of 3/);
    const bad = list();
    bad[1] = native.empty([s.N, s.di]);
    expect(call(good(), y(), s.B, bad)).toThrow(/tensor 'state\[1\]' has shape/);
  });
  it('overlapping tensors', () => {
    const g = good();
    const x = native.empty([rows, s.di]);
    expect(call({ ...g, x }, x, s.B)).toThrow(/mamba1_scan: tensors 'out' and 'x' overlap in memory/);
    const buf = native.empty([2 * rows, s.di]);
    expect(call({ ...g, dt: buf.rows(0, rows) }, buf.rows(rows / 2, rows / 2 + rows), s.B)).toThrow(/tensors 'out' and 'dt' overlap in memory/);
    const st = native.empty([s.B * s.di * s.N]);
    const shared = st.reshape([s.B, s.di, s.N]);
    const item = (b: number) => st.rows(b * s.di * s.N, (b + 1) * s.di * s.N).reshape([s.di, s.N]);
    expect(call(g, y(), s.B, [item(0), item(0), item(2)])).toThrow(/tensors 'state\[0\]' and 'state\[1\]' overlap in memory/);
    expect(call(g, st.rows(0, rows * s.di).reshape([rows, s.di]), s.B, shared)).toThrow(/tensors 'out' and 'state' overlap in memory/);
    expect(call(g, y(), s.B, [item(0), item(1), item(2)])).not.toThrow();
    ops.syncBlocking();
    expect(call({ ...g, D: shared.reshape([s.B * s.di * s.N]).rows(0, s.di) }, y(), s.B, shared)).toThrow(/tensors 'state' and 'D' overlap/);
  });
  it('errors are TypeErrors', () => {
    expect(call(good(), y(), 4)).toThrow(TypeError);
  });
});
