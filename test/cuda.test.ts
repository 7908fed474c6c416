// The CUDA backend against the CPU backend: every op on the same random inputs and edge shapes,
// device tensors, the caching allocator, dtype errors, and small seeded Mamba-2, Transformer++,
// Jamba and Taipan models (CUDA with bf16 activations vs CPU in fp32, MODEL.md section 10).
//
// Everything but the first suite needs a CUDA device and is skipped without one. With no GPU,
// the same tests run against the CPU emulator build of the addon:
//   TAIPAN_ADDON=$(cuda/emu/build_emu_addon.sh) npx vitest run test/cuda.test.ts
//
// Inputs that the CUDA kernels take in bf16 are rounded to bf16 first, so both backends see
// exactly the same values; what differs is the rounding of bf16 outputs (half an ulp: 2^-9
// relative) and the order of fp32 sums. relError is max |got - want| over the RMS of want.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cudaMemory, cudaReleaseCache, getBackendInfo, resolveBackend } from '../lib/backend.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, type DTypeName } from '../lib/dtype.js';
import { argmax, CausalLM, type LoadOptions } from '../lib/models/causal_lm.js';
import type { ModelConfig } from '../lib/config.js';
import { loadModel } from '../lib/generate.js';
import { Mamba2Model } from '../lib/models/mamba2.js';
import { addon, type DeviceName, type NativeTensor } from '../lib/native.js';
import { Ops } from '../lib/ops.js';
import { chunkWidths, type AttentionChunk } from './helpers/attention.js';
import { relError, smallJambaConfig, smallMamba2Config, smallPaperJambaConfig, smallTaipanConfig, smallTransformerConfig, tempDir, writeModel } from './helpers/models.js';
import { randn, randu } from './reference/rng.js';

const native = addon();
const info = getBackendInfo();
const hasCuda = info.cuda.devices.length > 0;

/**
 * How far a bf16 output is from the fp32 one, per element: |got - want| over (2^-8 |want| +
 * slack * RMS(want)). Rounding to bf16 moves a value by at most half an ulp, 2^-8 of it; `slack`
 * covers fp32 differences (summation order). At most 1 when the output is right.
 */
function bf16Error(got: ArrayLike<number>, want: ArrayLike<number>, slack = 1e-4): number {
  let ss = 0;
  for (let i = 0; i < want.length; i++) ss += want[i]! * want[i]!;
  const floor = slack * Math.sqrt(ss / Math.max(1, want.length)) + 1e-30;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i]! - want[i]!) / (2 ** -8 * Math.abs(want[i]!) + floor);
    worst = Math.max(worst, Number.isNaN(e) ? Infinity : e);
  }
  return worst;
}

let seed = 7000;
/** Normal values rounded to bf16 (exact in f32, bf16 and on both backends). */
function rand(n: number, scale = 1): Float32Array {
  return bf16ToF32(f32ToBf16(Float32Array.from(randn(n, seed++, scale))));
}
function uniform(n: number, lo: number, hi: number): Float32Array {
  return bf16ToF32(f32ToBf16(Float32Array.from(randu(n, seed++, lo, hi))));
}
function on(device: DeviceName, data: Float32Array, shape: number[], dtype: DTypeName = 'f32'): NativeTensor {
  return native.tensor(data, shape, dtype, device);
}
/** Rows of `cols` values placed at column `at` of a wider matrix of `ld` columns (NaN around). */
function strided(device: DeviceName, data: Float32Array, rows: number, cols: number, ld: number, at: number, dtype: DTypeName = 'f32'): NativeTensor {
  const wide = new Float32Array(rows * ld).fill(NaN);
  for (let r = 0; r < rows; r++) wide.set(data.subarray(r * cols, (r + 1) * cols), r * ld + at);
  return native.tensor(wide, [rows, ld], dtype, device).cols(at, at + cols);
}
function read(t: NativeTensor): Float64Array {
  return Float64Array.from(t.toArray());
}
function concat(ts: NativeTensor[]): Float64Array {
  return Float64Array.from(ts.flatMap((t) => [...t.toArray()]));
}

describe.skipIf(hasCuda)('CUDA requested where no device answers', () => {
  // The reason query() gives (no driver, no device, or a build without CUDA).
  const why = info.cuda.compiled ? info.cuda.reason : 'built without CUDA';
  const tmp = tempDir('taipan-nocuda-');
  afterAll(() => tmp.cleanup());

  it('backend "cuda" is refused with the reason; auto stays on the CPU', async () => {
    expect(why.length).toBeGreaterThan(0);
    expect(() => resolveBackend('cuda')).toThrow(why);
    const saved = process.env.TAIPAN_BACKEND;
    process.env.TAIPAN_BACKEND = 'cuda';
    try {
      expect(() => resolveBackend()).toThrow(why);
    } finally {
      if (saved === undefined) delete process.env.TAIPAN_BACKEND;
      else process.env.TAIPAN_BACKEND = saved;
    }
    expect(getBackendInfo().auto.backend).toBe('cpu');
    const cfg = smallMamba2Config({ n_layer: 1 });
    await writeModel(cfg, tmp.dir, 3);
    await expect(Mamba2Model.load(tmp.dir, { backend: 'cuda' })).rejects.toThrow(why);
  });

  it('device tensors and streams throw a JavaScript error naming the reason', () => {
    const nativeWhy = info.cuda.compiled ? info.cuda.reason : 'built without CUDA';
    expect(() => native.empty([2], 'f32', 'cuda')).toThrow(/device 'cuda' is not available/);
    expect(() => native.empty([2], 'f32', 'cuda')).toThrow(nativeWhy);
    expect(() => native.tensor(new Float32Array(4), [2, 2], 'bf16', 'cuda')).toThrow(nativeWhy);
    expect(() => new native.Stream('cuda')).toThrow(nativeWhy);
    const file = join(tmp.dir, 'raw.bin');
    writeFileSync(file, Buffer.from(new Float32Array([1, 2, 3, 4]).buffer));
    expect(() => native.fromFile(file, 0, 'f32', [4], 'bf16', 'cuda')).toThrow(nativeWhy);
    expect(() => new Ops('cuda')).toThrow(nativeWhy);
  });
});

describe.skipIf(!hasCuda)('CUDA device tensors', () => {
  const tmp = tempDir('taipan-cuda-');
  afterAll(() => tmp.cleanup());

  it('round trips every dtype through the device', () => {
    const data = rand(37, 3);
    for (const dt of ['f32', 'f16', 'bf16'] as const) {
      const want = dt === 'f32' ? data : dt === 'f16' ? f16ToF32(f32ToF16(data)) : data;
      const g = on('cuda', data, [37], dt);
      expect(g.device).toBe('cuda');
      expect(g.dtype).toBe(dt);
      expect(Array.from(g.toArray())).toEqual(Array.from(want));
    }
    const ints = Int32Array.from([0, -1, 2 ** 31 - 1, -(2 ** 31), 42]);
    expect(Array.from(native.tensor(ints, [5], 'i32', 'cuda').toArray())).toEqual(Array.from(ints));
    const bits = f32ToBf16(data);
    expect(Array.from(native.tensor(bits, [37], 'bf16', 'cuda').toArray())).toEqual(Array.from(data));
    expect(() => native.tensor(new Float32Array(3), [2, 2], 'f32', 'cuda')).toThrow(/3 elements/);
  });

  it('empty() is zeroed, write() fills whole tensors and column views, views read back', () => {
    const z = native.empty([5, 9], 'bf16', 'cuda');
    expect(Array.from(z.toArray())).toEqual(new Array(45).fill(0));
    const raw = native.empty([3, 4], 'f32', 'cuda', false);
    expect(raw.shape).toEqual([3, 4]);
    const base = rand(5 * 9);
    const m = on('cuda', base, [5, 9]);
    const part = rand(5 * 3);
    m.cols(2, 5).write(part);
    const want = Float32Array.from(base);
    for (let r = 0; r < 5; r++) want.set(part.subarray(r * 3, r * 3 + 3), r * 9 + 2);
    expect(Array.from(m.toArray())).toEqual(Array.from(want));
    expect(Array.from(m.cols(2, 5).toArray())).toEqual(Array.from(part));
    expect(Array.from(m.rows(1, 3).toArray())).toEqual(Array.from(want.subarray(9, 27)));
    expect(Array.from(m.reshape([45]).toArray())).toEqual(Array.from(want));
    m.write(base);
    expect(Array.from(m.toArray())).toEqual(Array.from(base));
  });

  it('fromFile() reads, converts on the host and copies to the device', () => {
    const data = rand(12, 2);
    const file = join(tmp.dir, 'w.bin');
    const head = Buffer.alloc(16, 7);
    writeFileSync(file, Buffer.concat([head, Buffer.from(data.buffer), Buffer.from(f32ToF16(data).buffer)]));
    const a = native.fromFile(file, 16, 'f32', [3, 4], 'bf16', 'cuda');
    expect(a.dtype).toBe('bf16');
    expect(Array.from(a.toArray())).toEqual(Array.from(data));
    const b = native.fromFile(file, 16 + 48, 'f16', [12], 'f32', 'cuda');
    expect(Array.from(b.toArray())).toEqual(Array.from(f16ToF32(f32ToF16(data))));
    expect(() => native.fromFile(file, 16, 'f32', [100], 'f32', 'cuda')).toThrow(/truncated/);
  });

  it('the caching allocator reuses freed blocks and releases them on request', () => {
    const a = native.empty([1000, 33], 'f32', 'cuda');
    const bytes = a.byteLength;
    a.dispose();
    const before = cudaMemory();
    expect(before.caching).toBe(true);
    expect(before.cachedBytes).toBeGreaterThanOrEqual(bytes);
    const b = native.empty([1000, 33], 'f32', 'cuda');
    const after = cudaMemory();
    expect(after.deviceMallocs).toBe(before.deviceMallocs);
    expect(after.hits).toBe(before.hits + 1);
    b.dispose();
    expect(cudaReleaseCache()).toBeGreaterThanOrEqual(bytes);
    expect(cudaMemory().cachedBytes).toBe(0);
  });

  it('refuses host access to tensors that queued ops use, and CPU tensors on a CUDA stream', () => {
    const ops = new Ops('cuda');
    try {
      const x = on('cuda', rand(16), [16], 'bf16');
      const y = native.empty([16], 'bf16', 'cuda');
      ops.silu(x, y);
      expect(() => y.toArray()).toThrow(/await stream.sync\(\) first/);
      ops.syncBlocking();
      expect(y.toArray().length).toBe(16);
      expect(() => ops.silu(on('cpu', rand(16), [16]), y)).toThrow(/is on cpu but the stream runs on cuda/);
    } finally {
      ops.dispose();
    }
  });
});

describe.skipIf(!hasCuda)('CUDA ops vs the CPU ops', () => {
  let gpu: Ops;
  let cpu: Ops;
  beforeAll(() => {
    gpu = new Ops('cuda');
    cpu = new Ops('cpu');
  });
  afterAll(() => {
    gpu.dispose();
    cpu.dispose();
  });
  const run = () => {
    cpu.syncBlocking();
    gpu.syncBlocking();
  };
  // Records `enqueue` into a graph while the device-side `count` (created holding 0) is 0,
  // then sets it to `value` and launches and runs the graph: an op that takes a count must
  // read it when it runs, not when it is recorded.
  const runWithCountSetAfterCapture = (count: NativeTensor, value: number, enqueue: () => void) => {
    gpu.stream.beginCapture();
    enqueue();
    const graph = gpu.stream.endCapture();
    count.write(Int32Array.from([value]));
    gpu.stream.launch(graph);
    run();
    graph.dispose();
  };

  describe('embedding', () => {
    for (const dt of ['f32', 'f16', 'bf16'] as const) {
      it(`gathers rows of a ${dt} table exactly`, () => {
        const [V, d, n] = [50, 24, 9];
        const table = rand(V * d);
        const ids = Int32Array.from([0, 49, 3, 3, 17, 0, 48, 25, 1]);
        const oc = native.empty([n, d]);
        const og = native.empty([n, d], 'f32', 'cuda');
        cpu.embedding(native.tensor(ids, [n], 'i32'), on('cpu', table, [V, d], dt), oc);
        gpu.embedding(native.tensor(ids, [n], 'i32', 'cuda'), on('cuda', table, [V, d], dt), og);
        run();
        expect(read(og)).toEqual(read(oc));
      });
    }
    it('rejects an id out of range when it runs', () => {
      const og = native.empty([2, 4], 'f32', 'cuda');
      gpu.embedding(native.tensor(Int32Array.from([1, 10]), [2], 'i32', 'cuda'), on('cuda', rand(40), [10, 4], 'bf16'), og, 10);
      expect(() => gpu.syncBlocking()).toThrow(/token id 10 at position 1 is out of range/);
      // The stream stays usable after a failed batch.
      gpu.embedding(native.tensor(Int32Array.from([1, 9]), [2], 'i32', 'cuda'), on('cuda', rand(40), [10, 4], 'bf16'), og, 10);
      gpu.syncBlocking();
    });
  });

  describe('rmsnorm', () => {
    for (const [M, d] of [[1, 1], [3, 7], [5, 64], [2, 768], [4, 1030]]) {
      it(`M=${M} d=${d}, with and without the residual add`, () => {
        const r = rand(M! * d!, 2);
        const delta = rand(M! * d!);
        const w = uniform(d!, 0.5, 1.5);
        for (const withDelta of [true, false]) {
          const rc = on('cpu', r, [M!, d!]);
          const rg = on('cuda', r, [M!, d!]);
          const oc = native.empty([M!, d!]);
          const og = native.empty([M!, d!], 'bf16', 'cuda');
          cpu.rmsnorm(rc, withDelta ? on('cpu', delta, [M!, d!]) : null, on('cpu', w, [d!]), oc, 1e-5);
          gpu.rmsnorm(rg, withDelta ? on('cuda', delta, [M!, d!], 'bf16') : null, on('cuda', w, [d!]), og, 1e-5);
          run();
          expect(relError(read(rg), read(rc))).toBeLessThan(1e-7);
          expect(bf16Error(read(og), read(oc))).toBeLessThan(1);
        }
        // fp32 output (no residual add).
        const oc = native.empty([M!, d!]);
        const og = native.empty([M!, d!], 'f32', 'cuda');
        cpu.rmsnorm(on('cpu', r, [M!, d!]), null, on('cpu', w, [d!]), oc, 1e-5);
        gpu.rmsnorm(on('cuda', r, [M!, d!]), null, on('cuda', w, [d!]), og, 1e-5);
        run();
        expect(relError(read(og), read(oc))).toBeLessThan(1e-5);
      });
    }
  });

  describe('gated_rmsnorm', () => {
    for (const [M, d, G] of [[1, 8, 1], [3, 64, 2], [2, 1000, 4], [5, 128, 8]]) {
      it(`M=${M} d=${d} groups=${G}, z strided, and in place`, () => {
        const x = rand(M! * d!);
        const z = rand(M! * d!);
        const w = uniform(d!, 0.5, 1.5);
        const oc = native.empty([M!, d!]);
        const og = native.empty([M!, d!], 'bf16', 'cuda');
        cpu.gatedRmsnorm(on('cpu', x, [M!, d!]), strided('cpu', z, M!, d!, d! + 5, 3), on('cpu', w, [d!]), oc, G!, 1e-5);
        gpu.gatedRmsnorm(on('cuda', x, [M!, d!], 'bf16'), strided('cuda', z, M!, d!, d! + 5, 3, 'bf16'), on('cuda', w, [d!]), og, G!, 1e-5);
        const xg = on('cuda', x, [M!, d!], 'bf16');
        gpu.gatedRmsnorm(xg, on('cuda', z, [M!, d!], 'bf16'), on('cuda', w, [d!]), xg, G!, 1e-5);
        run();
        expect(bf16Error(read(og), read(oc))).toBeLessThan(1);
        expect(read(xg)).toEqual(read(og));
      });
    }
  });

  describe('linear', () => {
    const shapes = [
      [1, 1, 1], [1, 768, 50], [2, 33, 17], [3, 17, 33], [7, 64, 129], [16, 64, 40], [17, 64, 40], [64, 96, 40], [130, 200, 70], [33, 256, 264],
      // Prefill tiles (128 x 128 on sm_80, 128 x 256 with K steps of 64 on Hopper): partial tiles
      // in M and N, and more K steps than the Hopper kernel's 4 stages, so stages are reused.
      [300, 328, 520],
    ];
    for (const [M, K, N] of shapes) {
      it(`M=${M} K=${K} N=${N}, f32 and bf16 out`, () => {
        const x = rand(M! * K!);
        const W = rand(N! * K!, 0.1);
        const oc = native.empty([M!, N!]);
        cpu.linear(on('cpu', x, [M!, K!]), on('cpu', W, [N!, K!], 'bf16'), oc);
        const Wg = on('cuda', W, [N!, K!], 'bf16');
        const of = native.empty([M!, N!], 'f32', 'cuda');
        const ob = native.empty([M!, N!], 'bf16', 'cuda');
        gpu.linear(on('cuda', x, [M!, K!], 'bf16'), Wg, of);
        gpu.linear(on('cuda', x, [M!, K!], 'bf16'), Wg, ob);
        run();
        expect(relError(read(of), read(oc))).toBeLessThan(1e-5);
        expect(bf16Error(read(ob), read(oc))).toBeLessThan(1);
      });
    }
    for (const [M, K, N, ld, at] of [[5, 64, 24, 80, 8], [20, 64, 24, 80, 8], [5, 30, 24, 37, 3], [20, 30, 24, 37, 3]]) {
      it(`strided x (row stride ${ld}, column ${at}) and strided out, M=${M}`, () => {
        const x = rand(M! * K!);
        const W = rand(N! * K!, 0.1);
        const oc = native.empty([M!, N!]);
        cpu.linear(on('cpu', x, [M!, K!]), on('cpu', W, [N!, K!], 'bf16'), oc);
        const wide = native.tensor(new Float32Array(M! * (N! + 4)).fill(7), [M!, N! + 4], 'f32', 'cuda');
        gpu.linear(strided('cuda', x, M!, K!, ld!, at!, 'bf16'), on('cuda', W, [N!, K!], 'bf16'), wide.cols(2, 2 + N!));
        run();
        expect(relError(read(wide.cols(2, 2 + N!)), read(oc))).toBeLessThan(1e-5);
        const all = wide.toArray();
        for (let r = 0; r < M!; r++) {
          expect([all[r * (N! + 4)], all[r * (N! + 4) + 1], all[r * (N! + 4) + N! + 2], all[r * (N! + 4) + N! + 3]]).toEqual([7, 7, 7, 7]);
        }
      });
    }
    it('reports which kernel runs prefill GEMMs: wgmma on compute capability 9.0, else the sm_80 one', () => {
      const cc = info.cuda.devices[0]!.computeCapability;
      const off = process.env.TAIPAN_CUDA_WGMMA === '0';
      expect(info.cuda.prefillGemm).toMatch(cc === '9.0' && !off ? /^wgmma/ : /^mma\.sync .*wgmma not used: /);
    });
    it('computes only the first `count` rows (count read when the op runs)', () => {
      const [M, K, N] = [9, 32, 16];
      const x = rand(M * K);
      const W = rand(N * K, 0.1);
      const oc = native.empty([M, N]);
      cpu.linear(on('cpu', x, [M, K]), on('cpu', W, [N, K], 'bf16'), oc);
      const og = native.tensor(new Float32Array(M * N).fill(-3), [M, N], 'f32', 'cuda');
      const count = native.tensor(Int32Array.from([0]), [1], 'i32', 'cuda');
      runWithCountSetAfterCapture(count, 5, () => gpu.linear(on('cuda', x, [M, K], 'bf16'), on('cuda', W, [N, K], 'bf16'), og, count));
      const got = og.toArray();
      const want = oc.toArray();
      expect(relError(got.subarray(0, 5 * N), want.subarray(0, 5 * N))).toBeLessThan(1e-5);
      expect(Array.from(got.subarray(5 * N))).toEqual(new Array((M - 5) * N).fill(-3));
    });
  });

  describe('conv1d', () => {
    const cases = [[1, 1, 5, 4], [1, 3, 20, 4], [3, 5, 72, 4], [2, 37, 20, 2], [1, 64, 136, 4], [2, 9, 17, 5], [1, 40, 8, 8]];
    for (const [B, L, C, K] of cases) {
      for (const withState of [false, true]) {
        it(`conv1d_silu B=${B} L=${L} C=${C} K=${K} ${withState ? 'carried state' : 'zero state'}`, () => {
          const x = rand(B! * L! * C!);
          const w = rand(C! * K!);
          const bias = rand(C!);
          const st = rand(B! * C! * (K! - 1));
          const sc = on('cpu', st, [B!, C!, K! - 1]);
          const sg = on('cuda', st, [B!, C!, K! - 1]);
          const oc = native.empty([B! * L!, C!]);
          const og = native.empty([B! * L!, C!], 'bf16', 'cuda');
          cpu.conv1dSilu(strided('cpu', x, B! * L!, C!, C! + 6, 2), on('cpu', w, [C!, K!]), on('cpu', bias, [C!]), oc, B!, withState ? sc : undefined);
          gpu.conv1dSilu(strided('cuda', x, B! * L!, C!, C! + 6, 2, 'bf16'), on('cuda', w, [C!, K!]), on('cuda', bias, [C!]), og, B!, withState ? sg : undefined);
          run();
          expect(bf16Error(read(og), read(oc))).toBeLessThan(1);
          if (withState) expect(read(sg)).toEqual(read(sc));
        });
      }
    }
    it('per-sequence state lists (prefill, then decode by pointer table) == batched states == CPU', () => {
      const [B, L, C, K] = [3, 6, 24, 4];
      const w = rand(C * K);
      const bias = rand(C);
      const st = rand(B * C * (K - 1));
      const per = C * (K - 1);
      const lists = { cpu: [] as NativeTensor[], cuda: [] as NativeTensor[] };
      const batched = { cpu: on('cpu', st, [B, C, K - 1]), cuda: on('cuda', st, [B, C, K - 1]) };
      for (let b = 0; b < B; b++) {
        lists.cpu.push(on('cpu', st.subarray(b * per, (b + 1) * per), [C, K - 1]));
        lists.cuda.push(on('cuda', st.subarray(b * per, (b + 1) * per), [C, K - 1]));
      }
      const outs: Record<string, Float64Array[]> = { cpu: [], list: [], batched: [] };
      for (const step of [0, 1, 2]) {
        const rows = step === 0 ? B * L : B;
        const x = rand(rows * C);
        const oc = native.empty([rows, C]);
        const ol = native.empty([rows, C], 'bf16', 'cuda');
        const ob = native.empty([rows, C], 'bf16', 'cuda');
        if (step === 0) {
          cpu.conv1dSilu(on('cpu', x, [rows, C]), on('cpu', w, [C, K]), on('cpu', bias, [C]), oc, B, lists.cpu);
          gpu.conv1dSilu(on('cuda', x, [rows, C], 'bf16'), on('cuda', w, [C, K]), on('cuda', bias, [C]), ol, B, lists.cuda);
          gpu.conv1dSilu(on('cuda', x, [rows, C], 'bf16'), on('cuda', w, [C, K]), on('cuda', bias, [C]), ob, B, batched.cuda);
        } else {
          cpu.conv1dUpdate(on('cpu', x, [rows, C]), on('cpu', w, [C, K]), on('cpu', bias, [C]), oc, lists.cpu);
          gpu.conv1dUpdate(strided('cuda', x, rows, C, C + 8, 8, 'bf16'), on('cuda', w, [C, K]), on('cuda', bias, [C]), ol, lists.cuda);
          gpu.conv1dUpdate(on('cuda', x, [rows, C], 'bf16'), on('cuda', w, [C, K]), on('cuda', bias, [C]), ob, batched.cuda);
        }
        run();
        outs.cpu!.push(read(oc));
        outs.list!.push(read(ol));
        outs.batched!.push(read(ob));
      }
      for (let s = 0; s < 3; s++) {
        expect(outs.list![s]).toEqual(outs.batched![s]);
        expect(bf16Error(outs.list![s]!, outs.cpu![s]!)).toBeLessThan(1);
      }
      expect(concat(lists.cuda)).toEqual(read(batched.cuda));
      expect(concat(lists.cuda)).toEqual(concat(lists.cpu));
    });
  });

  describe('ssd', () => {
    interface Case { B: number; L: number; H: number; P: number; G: number; N: number; chunk: number }
    function inputs(c: Case) {
      const rows = c.B * c.L;
      return {
        x: rand(rows * c.H * c.P),
        dt: rand(rows * c.H, 0.5),
        dtBias: uniform(c.H, -1, 0.5),
        A_log: Float32Array.from(uniform(c.H, 1, 16), Math.log),
        Bm: rand(rows * c.G * c.N),
        Cm: rand(rows * c.G * c.N),
        D: rand(c.H),
        state: rand(c.B * c.H * c.P * c.N, 0.3),
      };
    }
    type Inputs = ReturnType<typeof inputs>;
    /** x | B | C packed in one matrix and dt in a strided view, as the model lays them out. */
    function enqueue(device: DeviceName, c: Case, i: Inputs, step: boolean, state: NativeTensor | NativeTensor[] | undefined) {
      const ops = device === 'cuda' ? gpu : cpu;
      const act: DTypeName = device === 'cuda' ? 'bf16' : 'f32';
      const rows = c.B * c.L;
      const [xw, gw] = [c.H * c.P, c.G * c.N];
      const width = xw + 2 * gw;
      const packed = new Float32Array(rows * width);
      for (let r = 0; r < rows; r++) {
        packed.set(i.x.subarray(r * xw, (r + 1) * xw), r * width);
        packed.set(i.Bm.subarray(r * gw, (r + 1) * gw), r * width + xw);
        packed.set(i.Cm.subarray(r * gw, (r + 1) * gw), r * width + xw + gw);
      }
      const xbc = on(device, packed, [rows, width], act);
      const y = native.empty([rows, xw], act, device);
      const args = {
        x: xbc.cols(0, xw),
        B: xbc.cols(xw, xw + gw),
        C: xbc.cols(xw + gw, width),
        dt: strided(device, i.dt, rows, c.H, c.H + 3, 1, act),
        dt_bias: on(device, i.dtBias, [c.H]),
        A_log: on(device, i.A_log, [c.H]),
        D: on(device, i.D, [c.H]),
      };
      if (step) ops.ssdStep(args, y, c.G, state!);
      else ops.ssdScan(args, y, { batch: c.B, groups: c.G, chunk: c.chunk }, state);
      return y;
    }
    // The final states are fp32 on both backends (only the summation order differs); y is bf16.
    const STATE_TOL = 1e-3;

    const cases: Case[] = [
      { B: 1, L: 1, H: 2, P: 4, G: 1, N: 8, chunk: 256 },
      { B: 1, L: 3, H: 4, P: 8, G: 2, N: 16, chunk: 256 },
      { B: 3, L: 40, H: 4, P: 8, G: 2, N: 16, chunk: 16 },
      { B: 2, L: 257, H: 4, P: 8, G: 2, N: 16, chunk: 256 },
      { B: 1, L: 300, H: 2, P: 16, G: 1, N: 32, chunk: 64 },
      { B: 3, L: 50, H: 6, P: 8, G: 3, N: 8, chunk: 7 },
      { B: 1, L: 70, H: 2, P: 64, G: 1, N: 128, chunk: 32 },
    ];
    for (const c of cases) {
      for (const mode of ['zero state', 'carried state', 'state list'] as const) {
        it(`scan B=${c.B} L=${c.L} H=${c.H} P=${c.P} G=${c.G} N=${c.N} chunk=${c.chunk}, ${mode}`, () => {
          const i = inputs(c);
          const per = c.H * c.P * c.N;
          const shape = [c.B, c.H, c.P, c.N];
          const sc = on('cpu', i.state, shape);
          let sg: NativeTensor | NativeTensor[] | undefined;
          if (mode === 'carried state') sg = on('cuda', i.state, shape);
          if (mode === 'state list') sg = Array.from({ length: c.B }, (_, b) => on('cuda', i.state.subarray(b * per, (b + 1) * per), [c.H, c.P, c.N]));
          const yc = enqueue('cpu', c, i, false, mode === 'zero state' ? undefined : sc);
          const yg = enqueue('cuda', c, i, false, sg);
          run();
          expect(bf16Error(read(yg), read(yc), 1e-3)).toBeLessThan(1);
          if (sg) expect(relError(Array.isArray(sg) ? concat(sg) : read(sg), read(sc))).toBeLessThan(STATE_TOL);
        });
      }
    }
    for (const list of [false, true]) {
      it(`step, batch 3, ${list ? 'per-sequence states (pointer table)' : 'one batched state'}`, () => {
        const c = { B: 3, L: 1, H: 4, P: 8, G: 2, N: 16, chunk: 256 };
        const per = c.H * c.P * c.N;
        const i = inputs(c);
        const sc = on('cpu', i.state, [c.B, c.H, c.P, c.N]);
        const sg = list
          ? Array.from({ length: c.B }, (_, b) => on('cuda', i.state.subarray(b * per, (b + 1) * per), [c.H, c.P, c.N]))
          : on('cuda', i.state, [c.B, c.H, c.P, c.N]);
        for (let s = 0; s < 3; s++) {
          const j = s === 0 ? i : { ...inputs(c), state: i.state };
          const yc = enqueue('cpu', c, j, true, sc);
          const yg = enqueue('cuda', c, j, true, sg);
          run();
          expect(bf16Error(read(yg), read(yc), 1e-3)).toBeLessThan(1);
        }
        expect(relError(Array.isArray(sg) ? concat(sg) : read(sg), read(sc))).toBeLessThan(1e-5);
      });
    }
  });

  describe('mamba1_scan', () => {
    interface Case { B: number; L: number; di: number; N: number }
    function inputs(c: Case) {
      const rows = c.B * c.L;
      return {
        x: rand(rows * c.di),
        dt: rand(rows * c.di, 0.5),
        z: rand(rows * c.di),
        Bm: rand(rows * c.N),
        Cm: rand(rows * c.N),
        dtBias: uniform(c.di, -2, 0),
        aLog: uniform(c.di * c.N, 0, 2.8), // A in [-16, -1], as Mamba-1 initialises it
        D: rand(c.di),
        state: rand(c.B * c.di * c.N, 0.3),
      };
    }
    type Inputs = ReturnType<typeof inputs>;
    /** x | z | dt as column views of one matrix and B | C of another, as Jamba lays them out. */
    function enqueue(device: DeviceName, c: Case, i: Inputs, state: NativeTensor | NativeTensor[] | undefined) {
      const ops = device === 'cuda' ? gpu : cpu;
      const act: DTypeName = device === 'cuda' ? 'bf16' : 'f32';
      const rows = c.B * c.L;
      const pack = (parts: Float32Array[], w: number) => {
        const m = new Float32Array(rows * parts.length * w);
        for (let r = 0; r < rows; r++) parts.forEach((p, k) => m.set(p.subarray(r * w, (r + 1) * w), (r * parts.length + k) * w));
        return on(device, m, [rows, parts.length * w], act);
      };
      const xzd = pack([i.x, i.z, i.dt], c.di);
      const bc = pack([i.Bm, i.Cm], c.N);
      const y = native.empty([rows, c.di], act, device);
      const args = {
        x: xzd.cols(0, c.di),
        z: xzd.cols(c.di, 2 * c.di),
        dt: xzd.cols(2 * c.di, 3 * c.di),
        B: bc.cols(0, c.N),
        C: bc.cols(c.N, 2 * c.N),
        dt_bias: on(device, i.dtBias, [c.di]),
        A_log: on(device, i.aLog, [c.di, c.N]),
        D: on(device, i.D, [c.di]),
      };
      ops.mamba1Scan(args, y, c.B, state);
      return y;
    }
    function gpuState(c: Case, i: Inputs, list: boolean): NativeTensor | NativeTensor[] {
      const per = c.di * c.N;
      return list
        ? Array.from({ length: c.B }, (_, b) => on('cuda', i.state.subarray(b * per, (b + 1) * per), [c.di, c.N]))
        : on('cuda', i.state, [c.B, c.di, c.N]);
    }

    const cases: Case[] = [
      { B: 1, L: 1, di: 12, N: 16 },
      { B: 3, L: 17, di: 70, N: 16 }, // a partial block of channels
      { B: 2, L: 64, di: 64, N: 5 }, // N <= 8 variant, not a full one
      { B: 1, L: 40, di: 24, N: 40 }, // N > 16: the run-time loop variant
      { B: 2, L: 300, di: 128, N: 16 },
    ];
    for (const c of cases) {
      for (const mode of ['zero state', 'carried state', 'state list'] as const) {
        it(`B=${c.B} L=${c.L} di=${c.di} N=${c.N}, ${mode}`, () => {
          const i = inputs(c);
          const sc = on('cpu', i.state, [c.B, c.di, c.N]);
          const sg = mode === 'zero state' ? undefined : gpuState(c, i, mode === 'state list');
          const yc = enqueue('cpu', c, i, mode === 'zero state' ? undefined : sc);
          const yg = enqueue('cuda', c, i, sg);
          run();
          expect(bf16Error(read(yg), read(yc), 1e-3)).toBeLessThan(1);
          if (sg) expect(relError(Array.isArray(sg) ? concat(sg) : read(sg), read(sc))).toBeLessThan(1e-5);
        });
      }
    }
    for (const list of [false, true]) {
      it(`decode steps, batch 3, ${list ? 'per-sequence states (pointer table)' : 'one batched state'}`, () => {
        const c = { B: 3, L: 1, di: 48, N: 16 };
        const i = inputs(c);
        const sc = on('cpu', i.state, [c.B, c.di, c.N]);
        const sg = gpuState(c, i, list);
        for (let s = 0; s < 4; s++) {
          const j = s === 0 ? i : { ...inputs(c), state: i.state };
          const yc = enqueue('cpu', c, j, sc);
          const yg = enqueue('cuda', c, j, sg);
          run();
          expect(bf16Error(read(yg), read(yc), 1e-3)).toBeLessThan(1);
        }
        expect(relError(Array.isArray(sg) ? concat(sg) : read(sg), read(sc))).toBeLessThan(1e-5);
      });
    }
    it('refuses f32 activations, bf16 parameters and states, and N > 256', () => {
      const c = { B: 1, L: 2, di: 8, N: 4 };
      const i = inputs(c);
      const ok = () => {
        const t = (d: Float32Array, shape: number[], dt: DTypeName) => on('cuda', d, shape, dt);
        return {
          x: t(i.x, [2, 8], 'bf16'), dt: t(i.dt, [2, 8], 'bf16'), z: t(i.z, [2, 8], 'bf16'), B: t(i.Bm, [2, 4], 'bf16'), C: t(i.Cm, [2, 4], 'bf16'),
          dt_bias: t(i.dtBias, [8], 'f32'), A_log: t(i.aLog, [8, 4], 'f32'), D: t(i.D, [8], 'f32'),
        };
      };
      const out = () => native.empty([2, 8], 'bf16', 'cuda');
      expect(() => gpu.mamba1Scan({ ...ok(), x: native.empty([2, 8], 'f32', 'cuda') }, out(), 1)).toThrow(/mamba1_scan: on the CUDA backend tensor 'x' must be bf16/);
      expect(() => gpu.mamba1Scan(ok(), native.empty([2, 8], 'f32', 'cuda'), 1)).toThrow(/tensor 'out' must be bf16/);
      expect(() => gpu.mamba1Scan({ ...ok(), A_log: native.empty([8, 4], 'bf16', 'cuda') }, out(), 1)).toThrow(/tensor 'A_log' must be f32/);
      expect(() => gpu.mamba1Scan(ok(), out(), 1, native.empty([1, 8, 4], 'bf16', 'cuda'))).toThrow(/tensor 'state' must be f32/);
      const big = { ...ok(), B: native.empty([2, 300], 'bf16', 'cuda'), C: native.empty([2, 300], 'bf16', 'cuda'), A_log: native.empty([8, 300], 'f32', 'cuda') };
      expect(() => gpu.mamba1Scan(big, out(), 1)).toThrow(/state size N = 300 exceeds 256 on the CUDA backend/);
      gpu.mamba1Scan(ok(), out(), 1);
      run();
    });
  });

  describe('elementwise', () => {
    it('silu (bf16), in place too', () => {
      const n = 1000;
      const x = rand(n, 3);
      const oc = native.empty([n]);
      const og = native.empty([n], 'bf16', 'cuda');
      const xg = on('cuda', x, [n], 'bf16');
      cpu.silu(on('cpu', x, [n]), oc);
      gpu.silu(xg, og);
      run();
      gpu.silu(xg, xg);
      gpu.syncBlocking();
      expect(bf16Error(read(og), read(oc))).toBeLessThan(1);
      expect(read(xg)).toEqual(read(og));
    });
    for (const dt of ['f32', 'bf16', 'f16', 'i32'] as const) {
      it(`copy ${dt}, contiguous and between strided views`, () => {
        const [R, Cc] = [6, 10];
        const vals = dt === 'i32' ? Int32Array.from({ length: R * Cc }, (_, k) => k * 3 - 7) : rand(R * Cc);
        const src = native.tensor(vals, [R, Cc], dt, 'cuda');
        const dst = native.empty([R, Cc], dt, 'cuda');
        gpu.copy(src, dst);
        const wideSrc = native.empty([R, Cc + 4], dt, 'cuda');
        const wideDst = native.empty([R, Cc + 6], dt, 'cuda');
        gpu.copy(src, wideSrc.cols(4, 4 + Cc));
        gpu.syncBlocking();
        gpu.copy(wideSrc.cols(4, 4 + Cc), wideDst.cols(1, 1 + Cc));
        gpu.syncBlocking();
        expect(Array.from(dst.toArray())).toEqual(Array.from(src.toArray()));
        expect(Array.from(wideDst.cols(1, 1 + Cc).toArray())).toEqual(Array.from(src.toArray()));
        expect(Array.from(wideDst.cols(0, 1).toArray())).toEqual(new Array(R).fill(0));
      });
    }
  });

  describe('attention and kv_append (Transformer++)', () => {
    interface Case extends AttentionChunk {
      form: 'list' | 'batched';
      cacheDtype?: 'f32' | 'bf16';
      strided?: boolean;
    }
    /**
     * attention then kv_append of one chunk on both backends, over caches that hold starts[b]
     * random rows and NaN past them (rows neither op may read). Checks out (bf16 vs fp32) and
     * the caches afterwards (exact: the chunk's keys and values are bf16 values).
     */
    function check(c: Case) {
      const { B, L, hd, starts } = c;
      const { M, HQ, HKV } = chunkWidths(c);
      const q = rand(M * HQ);
      const k = rand(M * HKV);
      const v = rand(M * HKV);
      // Capacities differ per sequence in the list form; the batched form takes the largest.
      const caps = starts.map((s0, b) => s0 + L + 2 + (c.form === 'list' ? 3 * b : 0));
      const cap = Math.max(...caps);
      const cacheRows = (rows: number, s0: number) => {
        const data = new Float32Array(rows * HKV).fill(NaN);
        data.set(rand(s0 * HKV));
        return data;
      };
      const kPast = starts.map((s0, b) => cacheRows(c.form === 'list' ? caps[b]! : cap, s0));
      const vPast = starts.map((s0, b) => cacheRows(c.form === 'list' ? caps[b]! : cap, s0));
      const caches = (device: DeviceName, past: Float32Array[]) => {
        const dt: DTypeName = device === 'cuda' ? (c.cacheDtype ?? 'f32') : 'f32';
        if (c.form === 'list') return past.map((d, b) => on(device, d, [caps[b]!, HKV], dt));
        const all = new Float32Array(B * cap * HKV);
        past.forEach((d, b) => all.set(d, b * cap * HKV));
        return on(device, all, [B, cap, HKV], dt);
      };
      const outs: Record<string, NativeTensor> = {};
      const cacheOut: Record<string, [NativeTensor | NativeTensor[], NativeTensor | NativeTensor[]]> = {};
      for (const device of ['cpu', 'cuda'] as const) {
        const ops = device === 'cuda' ? gpu : cpu;
        const act: DTypeName = device === 'cuda' ? 'bf16' : 'f32';
        const s = c.strided;
        const qT = s ? strided(device, q, M, HQ, HQ + 7, 3, act) : on(device, q, [M, HQ], act);
        const kT = s ? strided(device, k, M, HKV, HKV + 5, 1, act) : on(device, k, [M, HKV], act);
        const vT = s ? strided(device, v, M, HKV, 2 * HKV + 1, HKV, act) : on(device, v, [M, HKV], act);
        const out = s ? strided(device, new Float32Array(M * HQ).fill(NaN), M, HQ, HQ + 4, 2, act) : on(device, new Float32Array(M * HQ).fill(NaN), [M, HQ], act);
        const start = native.tensor(Int32Array.from(starts), [B], 'i32', device);
        const kCache = caches(device, kPast);
        const vCache = caches(device, vPast);
        ops.attention({ q: qT, k: kT, v: vT, start, kCache, vCache, out }, { batch: B, headDim: hd });
        ops.kvAppend({ k: kT, v: vT, start, kCache, vCache }, B);
        outs[device] = out;
        cacheOut[device] = [kCache, vCache];
      }
      run();
      const got = read(outs.cuda!);
      expect(got.some(Number.isNaN)).toBe(false);
      expect(bf16Error(got, read(outs.cpu!), 1e-3)).toBeLessThan(1);
      const flat = (x: NativeTensor | NativeTensor[]) => (Array.isArray(x) ? concat(x) : read(x));
      for (const i of [0, 1]) expect(flat(cacheOut.cuda![i]!)).toEqual(flat(cacheOut.cpu![i]!));
    }

    const cases: Case[] = [
      // Decode (L = 1) over caches of 1, 37 and 300 rows (the last is split over the keys).
      { B: 1, L: 1, Hq: 4, Hkv: 2, hd: 16, starts: [1], form: 'list' },
      { B: 1, L: 1, Hq: 4, Hkv: 2, hd: 64, starts: [37], form: 'batched' },
      { B: 1, L: 1, Hq: 4, Hkv: 2, hd: 64, starts: [300], form: 'list' },
      { B: 3, L: 1, Hq: 4, Hkv: 2, hd: 64, starts: [1, 37, 300], form: 'list' },
      { B: 3, L: 1, Hq: 4, Hkv: 2, hd: 16, starts: [300, 1, 37], form: 'batched', strided: true },
      { B: 3, L: 1, Hq: 4, Hkv: 1, hd: 64, starts: [300, 5, 37], form: 'list' },
      { B: 1, L: 1, Hq: 2, Hkv: 2, hd: 64, starts: [0], form: 'list' },
      // Prefill of 17 tokens, with and without a prior cache.
      { B: 1, L: 17, Hq: 4, Hkv: 2, hd: 16, starts: [0], form: 'list' },
      { B: 1, L: 17, Hq: 4, Hkv: 2, hd: 64, starts: [300], form: 'batched' },
      { B: 3, L: 17, Hq: 4, Hkv: 1, hd: 64, starts: [0, 37, 300], form: 'list', strided: true },
      { B: 3, L: 17, Hq: 4, Hkv: 2, hd: 16, starts: [5, 0, 140], form: 'batched' },
      // head_dim not a multiple of 32, and above 128 (more than 48 KB of shared memory).
      { B: 2, L: 3, Hq: 2, Hkv: 1, hd: 40, starts: [3, 50], form: 'list' },
      { B: 1, L: 5, Hq: 2, Hkv: 1, hd: 160, starts: [40], form: 'batched' },
      // bf16 caches.
      { B: 2, L: 3, Hq: 4, Hkv: 2, hd: 64, starts: [10, 130], form: 'list', cacheDtype: 'bf16' },
      { B: 2, L: 1, Hq: 4, Hkv: 2, hd: 32, starts: [300, 2], form: 'batched', cacheDtype: 'bf16' },
    ];
    for (const c of cases) {
      const name = `B=${c.B} L=${c.L} heads ${c.Hq}/${c.Hkv} hd=${c.hd} starts [${c.starts}] ${c.form}${c.cacheDtype === 'bf16' ? ' bf16' : ''} caches${c.strided ? ', strided' : ''}`;
      it(name, () => check(c));
    }

    it('chunks as the attention block runs them: rope on q and k, attention, kv_append, caches grown by copy', () => {
      // Two sequences, prefill chunks of 17 then decode steps, caches doubling from 20 rows by a
      // device copy of the filled rows (as KvCacheState.reserve does). The CPU runs on what
      // CUDA's rope wrote (bf16 values), so both see the same inputs at every chunk and the
      // caches must agree exactly.
      const [B, Hq, Hkv, hd, theta] = [2, 4, 2, 16, 10000];
      const [HQ, HKV] = [Hq * hd, Hkv * hd];
      const caches = (d: DeviceName) => Array.from({ length: B }, () => native.empty([20, HKV], 'f32', d, false));
      const state = { cpu: { k: caches('cpu'), v: caches('cpu') }, cuda: { k: caches('cuda'), v: caches('cuda') } };
      let used = 0;
      for (const L of [17, 17, 1, 1, 1, 1]) {
        const M = B * L;
        const d0 = used;
        const start = { cpu: native.tensor(Int32Array.from([d0, d0]), [B], 'i32'), cuda: native.tensor(Int32Array.from([d0, d0]), [B], 'i32', 'cuda') };
        const [qg, kg, vg] = [on('cuda', rand(M * HQ), [M, HQ], 'bf16'), on('cuda', rand(M * HKV), [M, HKV], 'bf16'), on('cuda', rand(M * HKV), [M, HKV], 'bf16')];
        gpu.rope(qg, start.cuda, { headDim: hd, length: L, theta });
        gpu.rope(kg, start.cuda, { headDim: hd, length: L, theta });
        gpu.syncBlocking();
        const [qc, kc, vc] = [qg, kg, vg].map((t) => on('cpu', t.toArray() as Float32Array, t.shape));
        const outs = { cpu: native.empty([M, HQ]), cuda: native.empty([M, HQ], 'bf16', 'cuda') };
        for (const d of ['cpu', 'cuda'] as const) {
          const ops = d === 'cuda' ? gpu : cpu;
          const st = state[d];
          if (used + L > st.k[0]!.shape[0]!) {
            let rows = 2 * st.k[0]!.shape[0]!;
            while (rows < used + L) rows *= 2;
            const grow = (old: NativeTensor) => {
              const t = native.empty([rows, HKV], 'f32', d, false);
              ops.copy(old.rows(0, used), t.rows(0, used));
              return t;
            };
            st.k = st.k.map(grow);
            st.v = st.v.map(grow);
          }
          const [q, k, v] = d === 'cuda' ? [qg, kg, vg] : [qc!, kc!, vc!];
          ops.attention({ q, k, v, start: start[d], kCache: st.k, vCache: st.v, out: outs[d] }, { batch: B, headDim: hd });
          ops.kvAppend({ k, v, start: start[d], kCache: st.k, vCache: st.v }, B);
        }
        run();
        used += L;
        expect(bf16Error(read(outs.cuda), read(outs.cpu), 1e-3)).toBeLessThan(1);
        for (const w of ['k', 'v'] as const)
          for (let b = 0; b < B; b++) expect(read(state.cuda[w][b]!.rows(0, used))).toEqual(read(state.cpu[w][b]!.rows(0, used)));
      }
      expect(state.cuda.k[0]!.shape[0]).toBe(40);
    });

    it('a chunk that does not fit when the op runs: NaN output for that sequence, its cache untouched', () => {
      const [B, L, H, hd] = [2, 2, 2, 16];
      const HD = H * hd;
      const x = () => on('cuda', rand(B * L * HD), [B * L, HD], 'bf16');
      const caches = [0, 1].map(() => on('cuda', rand(5 * HD), [5, HD]));
      const vCaches = [0, 1].map(() => on('cuda', rand(5 * HD), [5, HD]));
      const before = [...caches, ...vCaches].map(read);
      const out = native.empty([B * L, HD], 'bf16', 'cuda');
      // Sequence 0 fits (rows 3, 4); sequence 1 would need rows 4, 5 of 5.
      const start = native.tensor(Int32Array.from([3, 4]), [B], 'i32', 'cuda');
      const [k, v] = [x(), x()];
      gpu.attention({ q: x(), k, v, start, kCache: caches, vCache: vCaches, out }, { batch: B, headDim: hd });
      gpu.kvAppend({ k, v, start, kCache: caches, vCache: vCaches }, B);
      run();
      const o = read(out);
      expect(o.subarray(0, L * HD).some(Number.isNaN)).toBe(false);
      expect(o.subarray(L * HD).every(Number.isNaN)).toBe(true);
      expect(read(caches[1]!)).toEqual(before[1]);
      expect(read(vCaches[1]!)).toEqual(before[3]);
      expect(read(caches[0]!).subarray(3 * HD)).toEqual(read(k).subarray(0, L * HD));
      // A negative start, with the keys split (long cache, one sequence).
      const big = [on('cuda', rand(400 * HD), [400, HD])];
      const bigV = [on('cuda', rand(400 * HD), [400, HD])];
      const o1 = native.empty([1, HD], 'bf16', 'cuda');
      const neg = native.tensor(Int32Array.from([-1]), [1], 'i32', 'cuda');
      gpu.attention({ q: x().rows(0, 1), k: x().rows(0, 1), v: x().rows(0, 1), start: neg, kCache: big, vCache: bigV, out: o1 }, { batch: 1, headDim: hd });
      run();
      expect(read(o1).every(Number.isNaN)).toBe(true);
    });

    it('refuses f32 activations, f16 caches, mixed cache dtypes, a chunk longer than a cache and head_dim > 256', () => {
      const [M, HD] = [2, 32];
      const b16 = (shape: number[]) => native.empty(shape, 'bf16', 'cuda');
      const f32 = (shape: number[]) => native.empty(shape, 'f32', 'cuda');
      const start = native.tensor(Int32Array.from([0, 0]), [2], 'i32', 'cuda');
      const ok = () => ({ q: b16([M, HD]), k: b16([M, HD]), v: b16([M, HD]), start, kCache: [f32([4, HD]), f32([4, HD])], vCache: [f32([4, HD]), f32([4, HD])], out: b16([M, HD]) });
      const p = { batch: 2, headDim: 16 };
      expect(() => gpu.attention({ ...ok(), q: f32([M, HD]) }, p)).toThrow(/attention: on the CUDA backend tensor 'q' must be bf16, got f32 \(activations between ops are bf16/);
      expect(() => gpu.attention({ ...ok(), v: f32([M, HD]) }, p)).toThrow(/tensor 'v' must be bf16/);
      expect(() => gpu.attention({ ...ok(), out: f32([M, HD]) }, p)).toThrow(/tensor 'out' must be bf16/);
      expect(() => gpu.attention({ ...ok(), kCache: [f32([4, HD]), native.empty([4, HD], 'f16', 'cuda')] }, p)).toThrow(/tensor 'k_cache\[1\]' must be f32 or bf16, got f16 \(KV caches/);
      expect(() => gpu.attention({ ...ok(), vCache: native.empty([2, 4, HD], 'f16', 'cuda') }, p)).toThrow(/tensor 'v_cache' must be f32 or bf16/);
      expect(() => gpu.attention({ ...ok(), vCache: [b16([4, HD]), b16([4, HD])] }, p)).toThrow(/KV caches must all have one dtype, got f32 and bf16/);
      expect(() => gpu.attention({ ...ok(), kCache: [f32([4, HD]), f32([0, HD])], vCache: [f32([4, HD]), f32([0, HD])] }, p)).toThrow(/sequence 1's KV cache holds 0 rows, fewer than the 1 new tokens/);
      expect(() => gpu.attention({ ...ok(), start: native.tensor(Float32Array.of(0, 0), [2], 'f32', 'cuda') }, p)).toThrow(/tensor 'start' has dtype f32/);
      expect(() => gpu.attention({ ...ok(), start: native.tensor(Int32Array.of(0, 0), [2], 'i32') }, p)).toThrow(/tensor 'start' is on cpu/);
      expect(() => gpu.attention({ ...ok(), q: b16([M, 1024]), out: b16([M, 1024]), k: b16([M, 512]), v: b16([M, 512]), kCache: [f32([4, 512]), f32([4, 512])], vCache: [f32([4, 512]), f32([4, 512])] }, { batch: 2, headDim: 512 })).toThrow(/'head_dim' \(512\) exceeds 256 on the CUDA backend/);
      expect(() => gpu.kvAppend({ k: f32([M, HD]), v: b16([M, HD]), start, kCache: ok().kCache, vCache: ok().vCache }, 2)).toThrow(/kv_append: on the CUDA backend tensor 'k' must be bf16/);
      expect(() => gpu.kvAppend({ k: b16([M, HD]), v: b16([M, HD]), start, kCache: f32([2, 0, HD]), vCache: f32([2, 0, HD]) }, 2)).toThrow(/kv_append: sequence 0's KV cache holds 0 rows/);
      gpu.attention(ok(), p);
      gpu.kvAppend({ k: b16([M, HD]), v: b16([M, HD]), start, kCache: ok().kCache, vCache: ok().vCache }, 2);
      run();
    });
  });

  describe('rope', () => {
    for (const [R, H, hd, B, L, theta, ld] of [
      [1, 4, 16, 1, 1, 10000, 64],
      [6, 2, 64, 2, 3, 10000, 140],
      [17, 3, 32, 1, 17, 500000, 96],
      [4, 1, 130, 4, 1, 10000, 130],
    ] as const) {
      it(`R=${R} heads=${H} head_dim=${hd} B=${B} L=${L} theta=${theta}${ld > H * hd ? ', strided rows' : ''}`, () => {
        const x = rand(R * H * hd, 2);
        // Positions up to 1e6: the angle must be computed in double as on the CPU.
        const starts = Int32Array.from({ length: B }, (_, b) => [0, 1_000_003, 37, 65_000][b % 4]!);
        const xc = strided('cpu', x, R, H * hd, ld, ld - H * hd);
        const xg = strided('cuda', x, R, H * hd, ld, ld - H * hd, 'bf16');
        cpu.rope(xc, native.tensor(starts, [B], 'i32'), { headDim: hd, length: L, theta });
        gpu.rope(xg, native.tensor(starts, [B], 'i32', 'cuda'), { headDim: hd, length: L, theta });
        run();
        expect(bf16Error(read(xg), read(xc))).toBeLessThan(1);
      });
    }
    it('with index and count (count read when the op runs; rows past it and bad indices untouched)', () => {
      const [R, H, hd, B, L] = [7, 2, 32, 2, 4];
      const x = rand(R * H * hd);
      const index = Int32Array.from([5, 0, -1, 7, 8, 3, 2]);
      const starts = Int32Array.from([11, 999_999]);
      const xc = on('cpu', x, [R, H * hd]);
      const xg = on('cuda', x, [R, H * hd], 'bf16');
      const cc = native.tensor(Int32Array.from([5]), [1], 'i32');
      const cg = native.tensor(Int32Array.from([0]), [1], 'i32', 'cuda');
      cpu.rope(xc, native.tensor(starts, [B], 'i32'), { headDim: hd, length: L, theta: 10000 }, native.tensor(index, [R], 'i32'), cc);
      runWithCountSetAfterCapture(cg, 5, () =>
        gpu.rope(xg, native.tensor(starts, [B], 'i32', 'cuda'), { headDim: hd, length: L, theta: 10000 }, native.tensor(index, [R], 'i32', 'cuda'), cg),
      );
      const got = read(xg);
      expect(bf16Error(got, read(xc))).toBeLessThan(1);
      const W = H * hd;
      for (const r of [2, 4, 5, 6]) expect(got.subarray(r * W, (r + 1) * W)).toEqual(Float64Array.from(x.subarray(r * W, (r + 1) * W)));
      expect(got.subarray(0, W)).not.toEqual(Float64Array.from(x.subarray(0, W)));
      expect(() => gpu.rope(on('cuda', x, [R, H * hd]), native.tensor(starts, [B], 'i32', 'cuda'), { headDim: hd, length: L, theta: 10000 })).toThrow(/rope: on the CUDA backend tensor 'x' must be bf16/);
    });
  });

  describe('swiglu', () => {
    for (const [M, F] of [[1, 8], [7, 300], [33, 64]]) {
      it(`M=${M} F=${F}, strided h`, () => {
        const h = rand(M! * 2 * F!, 2);
        const oc = native.empty([M!, F!]);
        const og = native.empty([M!, F!], 'bf16', 'cuda');
        cpu.swiglu(strided('cpu', h, M!, 2 * F!, 2 * F! + 6, 2), oc);
        gpu.swiglu(strided('cuda', h, M!, 2 * F!, 2 * F! + 6, 2, 'bf16'), og);
        run();
        expect(bf16Error(read(og), read(oc))).toBeLessThan(1);
      });
    }
    it('with count: the first count rows only, read when the op runs; the rest untouched', () => {
      const [M, F] = [9, 40];
      const h = rand(M * 2 * F, 2);
      const oc = native.tensor(new Float32Array(M * F).fill(7), [M, F]);
      cpu.swiglu(on('cpu', h, [M, 2 * F]), oc, native.tensor(Int32Array.from([5]), [1], 'i32'));
      const og = native.tensor(new Float32Array(M * F).fill(7), [M, F], 'bf16', 'cuda');
      const count = native.tensor(Int32Array.from([0]), [1], 'i32', 'cuda');
      runWithCountSetAfterCapture(count, 5, () => gpu.swiglu(on('cuda', h, [M, 2 * F], 'bf16'), og, count));
      const got = read(og);
      expect(bf16Error(got.subarray(0, 5 * F), read(oc).subarray(0, 5 * F))).toBeLessThan(1);
      expect(Array.from(got.subarray(5 * F))).toEqual(new Array((M - 5) * F).fill(7));
      // A count past M means every row; a negative one, none.
      const full = native.empty([M, F]);
      cpu.swiglu(on('cpu', h, [M, 2 * F]), full);
      for (const [n, rows] of [[100, M], [-3, 0]] as const) {
        const o = native.tensor(new Float32Array(M * F).fill(7), [M, F], 'bf16', 'cuda');
        gpu.swiglu(on('cuda', h, [M, 2 * F], 'bf16'), o, native.tensor(Int32Array.from([n]), [1], 'i32', 'cuda'));
        run();
        const all = read(o);
        expect(all.subarray(rows * F).every((x) => x === 7)).toBe(true);
        expect(bf16Error(all.subarray(0, rows * F), read(full).subarray(0, rows * F))).toBeLessThan(1);
      }
      expect(() => gpu.swiglu(on('cuda', h, [M, 2 * F]), og)).toThrow(/swiglu: on the CUDA backend tensor 'h' must be bf16/);
      expect(() => gpu.swiglu(on('cuda', h, [M, 2 * F], 'bf16'), native.empty([M, F], 'f32', 'cuda'))).toThrow(/tensor 'out' must be bf16/);
    });
  });

  describe('Selective Attention Layer ops', () => {
    /** The gate logit difference s1 - s0 the CPU's probability stands for. */
    const logit = (p: number) => Math.log(p / (1 - p));

    for (const [M, d, withDelta] of [
      [1, 8, false],
      [7, 300, true],
      [1100, 40, true], // more rows than the compaction kernel's 1024-row tile
    ] as const) {
      it(`sal_gate M=${M} d=${d}${withDelta ? ', with delta' : ''}: x, probabilities, selection, compacted rows`, () => {
        const r0 = rand(M * d, 2);
        const delta = rand(M * d);
        const norm = uniform(d, 0.5, 1.5);
        const gw = rand(2 * d, 0.5);
        const gb = Float32Array.from([0.2, -0.1]);
        const res: Record<string, { r: NativeTensor; x: NativeTensor; prob: NativeTensor; mask: NativeTensor; index: NativeTensor; count: NativeTensor; gathered: NativeTensor }> = {};
        for (const device of ['cpu', 'cuda'] as const) {
          const act: DTypeName = device === 'cuda' ? 'bf16' : 'f32';
          const t = {
            residual: on(device, r0, [M, d]),
            delta: withDelta ? on(device, delta, [M, d], act) : null,
            norm: on(device, norm, [d]),
            gateWeight: on(device, gw, [2, d]),
            gateBias: on(device, gb, [2]),
            x: native.empty([M, d], act, device),
            prob: native.empty([M], 'f32', device),
            mask: native.empty([M], 'i32', device),
            index: native.tensor(new Int32Array(M).fill(-7), [M], 'i32', device),
            count: native.empty([1], 'i32', device),
            gathered: native.empty([M, d], act, device),
          };
          (device === 'cuda' ? gpu : cpu).salGate(t, 1e-5);
          res[device] = { r: t.residual, x: t.x, prob: t.prob, mask: t.mask, index: t.index, count: t.count, gathered: t.gathered };
        }
        run();
        const [c, g] = [res.cpu!, res.cuda!];
        expect(relError(read(g.r), read(c.r))).toBeLessThan(1e-6);
        expect(bf16Error(read(g.x), read(c.x))).toBeLessThan(1);
        const pc = read(c.prob);
        const pg = read(g.prob);
        for (let m = 0; m < M; m++) expect(Math.abs(pg[m]! - pc[m]!)).toBeLessThan(1e-5);
        // The same rows are selected except where the gate's two logits nearly tie (fp32 sums in
        // another order); the CUDA index then lists exactly its own selected rows, in order.
        const mc = c.mask.toArray();
        const mg = g.mask.toArray();
        let ties = 0;
        for (let m = 0; m < M; m++) {
          if (Math.abs(logit(pc[m]!)) > 1e-4) expect(mg[m]).toBe(mc[m]);
          else ties++;
        }
        expect(ties).toBeLessThan(2);
        const want = [...mg.keys()].filter((m) => mg[m] === 1);
        const count = g.count.toArray()[0]!;
        expect(count).toBe(want.length);
        expect(Array.from(g.index.toArray().subarray(0, count))).toEqual(want);
        const xg = read(g.x);
        const gathered = read(g.gathered);
        want.forEach((m, k) => expect(gathered.subarray(k * d, (k + 1) * d)).toEqual(xg.subarray(m * d, (m + 1) * d)));
      });
    }

    interface SalCase {
      B: number;
      /** Tokens per sequence of each chunk, run one after the other. */
      lengths: number[];
      W: number;
      H: number;
      hd: number;
      kv: 'all' | 'selected';
      form: 'list' | 'batched';
      strided?: boolean;
      /** Leave each sequence's first token unselected (kv "selected": it has no key at all). */
      firstUnselected?: boolean;
    }
    /**
     * Chunks of B sequences, one after the other: sal_attention then sal_kv_write of each, on
     * both backends, with a random selection. Later chunks' queries read the ring buffers the
     * earlier ones wrote. Checks the attention output of the selected rows (bf16 vs fp32) and
     * the ring buffers and their positions after each chunk (exact: bf16 keys and values
     * widen exactly). Under kv "selected" an unselected first token is also queried: with no
     * usable key its output is zeros on both.
     */
    function checkSal(c: SalCase) {
      const { B, W, H, hd, kv } = c;
      const HD = H * hd;
      const ring = (device: DeviceName) => {
        const k = new Float32Array(W * HD).fill(NaN);
        const pos = new Int32Array(W).fill(-1);
        if (c.form === 'list')
          return {
            kCache: Array.from({ length: B }, () => on(device, k, [W, HD])),
            vCache: Array.from({ length: B }, () => on(device, k, [W, HD])),
            cachePos: Array.from({ length: B }, () => native.tensor(pos, [W], 'i32', device)),
          };
        const kk = new Float32Array(B * W * HD).fill(NaN);
        return { kCache: on(device, kk, [B, W, HD]), vCache: on(device, kk, [B, W, HD]), cachePos: native.tensor(new Int32Array(B * W).fill(-1), [B, W], 'i32', device) };
      };
      const rings = { cpu: ring('cpu'), cuda: ring('cuda') };
      const flat = (t: NativeTensor | NativeTensor[]) => (Array.isArray(t) ? concat(t) : read(t));
      let start = 0;
      for (const [chunk, L] of c.lengths.entries()) {
        const M = B * L;
        const q = rand(M * HD);
        const k = rand(M * HD);
        const v = rand(M * HD);
        const mask = Int32Array.from({ length: M }, (_, i) => (randu(1, seed++, 0, 1)[0]! < 0.5 ? 1 : 0));
        mask[M - 1] = 1;
        if (c.firstUnselected && chunk === 0) for (let b = 0; b < B; b++) mask[b * L] = 0;
        const selected = [...mask.keys()].filter((i) => mask[i] === 1);
        // An unselected first row queried too (kv "selected", first chunk: it has no key).
        if (kv === 'selected' && chunk === 0 && mask[0] === 0) selected.unshift(0);
        const index = Int32Array.from({ length: M }, (_, i) => selected[i] ?? -1);
        const outs: Record<string, NativeTensor> = {};
        for (const device of ['cpu', 'cuda'] as const) {
          const ops = device === 'cuda' ? gpu : cpu;
          const act: DTypeName = device === 'cuda' ? 'bf16' : 'f32';
          const s = c.strided;
          const kT = s ? strided(device, k, M, HD, HD + 5, 3, act) : on(device, k, [M, HD], act);
          const vT = s ? strided(device, v, M, HD, 2 * HD, HD, act) : on(device, v, [M, HD], act);
          const out = on(device, new Float32Array(M * HD).fill(NaN), [M, HD], act);
          const t = {
            q: s ? strided(device, q, M, HD, HD + 2, 1, act) : on(device, q, [M, HD], act),
            index: native.tensor(index, [M], 'i32', device),
            count: native.tensor(Int32Array.from([selected.length]), [1], 'i32', device),
            k: kT,
            v: vT,
            mask: native.tensor(mask, [M], 'i32', device),
            start: native.tensor(Int32Array.from({ length: B }, () => start), [B], 'i32', device),
            ...rings[device],
          };
          ops.salAttention({ ...t, out }, { batch: B, window: W, headDim: hd, kv });
          ops.salKvWrite(t, { batch: B, window: W, kv });
          outs[device] = out;
        }
        run();
        const n = selected.length;
        const oc = read(outs.cpu!).subarray(0, n * HD);
        const og = read(outs.cuda!).subarray(0, n * HD);
        expect(bf16Error(og, oc, 1e-3)).toBeLessThan(1);
        if (kv === 'selected' && chunk === 0 && mask[0] === 0) expect(Array.from(og.subarray(0, HD))).toEqual(new Array(HD).fill(0));
        // Rows past count are not written.
        expect(read(outs.cuda!).subarray(n * HD).every(Number.isNaN)).toBe(true);
        for (const key of ['kCache', 'vCache', 'cachePos'] as const) {
          const want = flat(rings.cpu[key]);
          const got = flat(rings.cuda[key]);
          // Slots never written hold NaN on both: compare them as equal.
          expect(Array.from(got, (x) => (Number.isNaN(x) ? 'nan' : x))).toEqual(Array.from(want, (x) => (Number.isNaN(x) ? 'nan' : x)));
        }
        start += L;
      }
    }
    // The emulator has 4 SMs, so a call with fewer than 16 (query, head) blocks and a window
    // past 64 keys splits the window over blocks (sal_attention_combine_kernel merges them).
    const salCases: SalCase[] = [
      { B: 1, lengths: [1, 1], W: 4, H: 1, hd: 8, kv: 'all', form: 'batched' },
      { B: 2, lengths: [5, 5], W: 8, H: 2, hd: 16, kv: 'all', form: 'list', strided: true },
      { B: 3, lengths: [9, 9], W: 4, H: 3, hd: 24, kv: 'selected', form: 'list' }, // L > W: the chunk's last W rows reach the buffers
      { B: 2, lengths: [6, 6], W: 16, H: 2, hd: 72, kv: 'selected', form: 'batched' }, // head_dim past 64: several columns per lane
      // Decode after a prefill: 4 (query, head) blocks, the window split 4 ways, keys from the ring.
      { B: 2, lengths: [150, 1, 1], W: 200, H: 2, hd: 32, kv: 'all', form: 'list' },
      // Split windows past the wrap-around of the ring, with unselected keys.
      { B: 1, lengths: [300, 1, 1], W: 200, H: 1, hd: 16, kv: 'selected', form: 'batched' },
      // A split call on a short history: most splits are empty, and a keyless query gets zeros.
      { B: 2, lengths: [2, 1], W: 256, H: 1, hd: 8, kv: 'selected', form: 'batched', firstUnselected: true },
    ];
    for (const c of salCases)
      it(`sal_attention + sal_kv_write B=${c.B} lengths=${c.lengths} W=${c.W} H=${c.H} hd=${c.hd} kv=${c.kv} ${c.form}${c.strided ? ', strided' : ''}`, () => checkSal(c));

    it('sal_attention reads count when it runs', () => {
      const [L, H, hd, W] = [6, 2, 16, 8];
      const HD = H * hd;
      const q = rand(L * HD);
      const k = rand(L * HD);
      const index = Int32Array.from([1, 4, 5, -1, -1, -1]);
      const outs: NativeTensor[] = [];
      for (const device of ['cpu', 'cuda'] as const) {
        const act: DTypeName = device === 'cuda' ? 'bf16' : 'f32';
        const count = native.tensor(Int32Array.from([device === 'cpu' ? 3 : 0]), [1], 'i32', device);
        const out = on(device, new Float32Array(L * HD).fill(NaN), [L, HD], act);
        const enqueue = () =>
          (device === 'cuda' ? gpu : cpu).salAttention(
            {
              q: on(device, q, [L, HD], act),
              index: native.tensor(index, [L], 'i32', device),
              count,
              k: on(device, k, [L, HD], act),
              v: on(device, k, [L, HD], act),
              mask: native.tensor(new Int32Array(L).fill(1), [L], 'i32', device),
              start: native.tensor(Int32Array.from([0]), [1], 'i32', device),
              kCache: on(device, new Float32Array(W * HD), [1, W, HD]),
              vCache: on(device, new Float32Array(W * HD), [1, W, HD]),
              cachePos: native.tensor(new Int32Array(W).fill(-1), [1, W], 'i32', device),
              out,
            },
            { batch: 1, window: W, headDim: hd, kv: 'all' },
          );
        if (device === 'cuda') runWithCountSetAfterCapture(count, 3, enqueue);
        else enqueue();
        outs.push(out);
      }
      run();
      const [oc, og] = outs.map(read);
      expect(bf16Error(og!.subarray(0, 3 * HD), oc!.subarray(0, 3 * HD), 1e-3)).toBeLessThan(1);
      expect(og!.subarray(3 * HD).every(Number.isNaN)).toBe(true);
    });

    for (const mix of ['residual', 'normalized'] as const) {
      it(`sal_mix (${mix}): the selected rows only, from the compacted o`, () => {
        const [M, d] = [9, 40];
        const r0 = rand(M * d, 2);
        const o = rand(M * d);
        const x = rand(M * d);
        const prob = uniform(M, 0.05, 0.95);
        const index = Int32Array.from([0, 3, 4, 8, -1, -1, -1, -1, -1]);
        const rs: NativeTensor[] = [];
        for (const device of ['cpu', 'cuda'] as const) {
          const act: DTypeName = device === 'cuda' ? 'bf16' : 'f32';
          const residual = on(device, r0, [M, d]);
          (device === 'cuda' ? gpu : cpu).salMix(
            {
              residual,
              o: strided(device, o, M, d, d + 3, 2, act),
              index: native.tensor(index, [M], 'i32', device),
              count: native.tensor(Int32Array.from([4]), [1], 'i32', device),
              prob: on(device, prob, [M]),
              x: on(device, x, [M, d], act),
            },
            mix,
          );
          rs.push(residual);
        }
        run();
        const [rc, rg] = rs.map(read);
        expect(relError(rg!, rc!)).toBeLessThan(1e-6);
        for (const i of [1, 2, 5, 6, 7]) expect(rg!.subarray(i * d, (i + 1) * d)).toEqual(Float64Array.from(r0.subarray(i * d, (i + 1) * d)));
      });
    }

    it('name the CUDA dtype rules', () => {
      const [M, d] = [4, 8];
      const f = (dt: DTypeName, shape = [M, d]) => native.empty(shape, dt, 'cuda');
      const gate = { residual: f('f32'), delta: null, norm: f('f32', [d]), gateWeight: f('f32', [2, d]), gateBias: f('f32', [2]), x: f('bf16'), prob: f('f32', [M]), mask: f('i32', [M]), index: f('i32', [M]), count: f('i32', [1]), gathered: f('bf16') };
      expect(() => gpu.salGate({ ...gate, x: f('f32') }, 1e-5)).toThrow(/sal_gate: on the CUDA backend tensor 'x' must be bf16/);
      expect(() => gpu.salGate({ ...gate, residual: f('bf16') }, 1e-5)).toThrow(/tensor 'residual' must be f32, got bf16 \(the residual stream is fp32\)/);
      const attn = { q: f('bf16'), index: f('i32', [M]), count: f('i32', [1]), k: f('bf16'), v: f('bf16'), mask: f('i32', [M]), start: f('i32', [1]), kCache: f('f32', [1, 4, d]), vCache: f('f32', [1, 4, d]), cachePos: f('i32', [1, 4]), out: f('bf16') };
      expect(() => gpu.salAttention({ ...attn, kCache: f('bf16', [1, 4, d]) }, { batch: 1, window: 4, headDim: 8, kv: 'all' })).toThrow(/tensor 'k_cache' must be f32, got bf16 \(the SAL ring buffers are fp32\)/);
      expect(() => gpu.salAttention({ ...attn, q: f('f32') }, { batch: 1, window: 4, headDim: 8, kv: 'all' })).toThrow(/tensor 'q' must be bf16/);
      expect(() => gpu.salAttention({ ...attn, k: f('bf16', [M, 2 * 264]), v: f('bf16', [M, 2 * 264]), q: f('bf16', [M, 2 * 264]), out: f('bf16', [M, 2 * 264]), kCache: f('f32', [1, 4, 528]), vCache: f('f32', [1, 4, 528]) }, { batch: 1, window: 4, headDim: 264, kv: 'all' })).toThrow(/'head_dim' \(264\) exceeds 256 on the CUDA backend/);
    });
  });

  describe('dtype and shape errors name the CUDA rule', () => {
    it('refuses what the kernels do not take', () => {
      const xb = native.empty([4, 8], 'bf16', 'cuda');
      const xf = native.empty([4, 8], 'f32', 'cuda');
      const wf = native.empty([8, 8], 'f32', 'cuda');
      const wb = native.empty([8, 8], 'bf16', 'cuda');
      const v8 = native.empty([8], 'f32', 'cuda');
      expect(() => gpu.linear(xb, wf, native.empty([4, 8], 'f32', 'cuda'))).toThrow(/tensor 'weight' must be bf16.*weightDtype/);
      expect(() => gpu.linear(xb, native.empty([8, 8], 'f16', 'cuda'), xf)).toThrow(/must be bf16/);
      expect(() => gpu.linear(xf, wb, native.empty([4, 8], 'f32', 'cuda'))).toThrow(/tensor 'x' must be bf16, got f32 \(activations between ops are bf16/);
      expect(() => gpu.rmsnorm(native.empty([4, 8], 'f32', 'cuda'), xf, v8, xb, 1e-5)).toThrow(/tensor 'delta' must be bf16/);
      expect(() => gpu.rmsnorm(native.empty([4, 8], 'f32', 'cuda'), xb, v8, native.empty([4, 8], 'f32', 'cuda'), 1e-5)).toThrow(/needs no 'delta'/);
      expect(() => gpu.rmsnorm(xb, null, v8, native.empty([4, 8], 'bf16', 'cuda'), 1e-5)).toThrow(/tensor 'residual' must be f32/);
      expect(() => gpu.gatedRmsnorm(xf, xb, v8, xb, 1, 1e-5)).toThrow(/tensor 'x' must be bf16/);
      expect(() => gpu.embedding(native.empty([4], 'i32', 'cuda'), wb, native.empty([4, 8], 'bf16', 'cuda'))).toThrow(/tensor 'out' must be f32/);
      const w9 = native.empty([8, 9], 'f32', 'cuda');
      expect(() => gpu.conv1dSilu(xb, w9, v8, native.empty([4, 8], 'bf16', 'cuda'), 1)).toThrow(/outside \[2, 8\]/);
      expect(() => gpu.conv1dSilu(xf, native.empty([8, 4], 'f32', 'cuda'), v8, xb, 1)).toThrow(/tensor 'x' must be bf16/);
      const ssd = {
        x: native.empty([4, 8], 'bf16', 'cuda'),
        B: native.empty([4, 4], 'bf16', 'cuda'),
        C: native.empty([4, 4], 'bf16', 'cuda'),
        dt: native.empty([4, 2], 'bf16', 'cuda'),
        dt_bias: native.empty([2], 'f32', 'cuda'),
        A_log: native.empty([2], 'f32', 'cuda'),
        D: native.empty([2], 'f32', 'cuda'),
      };
      expect(() => gpu.ssdScan(ssd, native.empty([4, 8], 'bf16', 'cuda'), { batch: 1, groups: 1, chunk: 2000 })).toThrow(/at most 1024/);
      expect(() => gpu.ssdScan({ ...ssd, D: native.empty([2], 'bf16', 'cuda') }, native.empty([4, 8], 'bf16', 'cuda'), { batch: 1, groups: 1, chunk: 4 })).toThrow(/tensor 'D' must be f32/);
      expect(() => gpu.ssdStep(ssd, native.empty([4, 8], 'bf16', 'cuda'), 1, native.empty([4, 2, 4, 4], 'bf16', 'cuda'))).toThrow(/tensor 'state' must be f32/);
      expect(() => gpu.add(xf, xf, native.empty([4, 8], 'f32', 'cuda'))).toThrow(/not implemented on the CUDA backend/);
      expect(() => gpu.swiglu(native.empty([4, 16], 'bf16', 'cuda'), native.empty([4, 7], 'bf16', 'cuda'))).toThrow(/tensor 'h' has shape/);
      expect(() => gpu.silu(xf, native.empty([4, 8], 'f32', 'cuda'))).toThrow(/must be bf16/);
    });
  });
});

/**
 * Per row of logits [rows, V] (padding columns past n dropped): RMS and max |gpu - cpu| over the
 * std of cpu's row, for the worst row; both must stay under their tolerances.
 */
function expectLogitsClose(lg: Float32Array, lc: Float32Array, V: number, n: number, rmsTol: number, maxTol: number): void {
  let rms = 0;
  let max = 0;
  for (let r = 0; r < lc.length / V; r++) {
    const c = lc.subarray(r * V, r * V + n);
    const g = lg.subarray(r * V, r * V + n);
    const mean = c.reduce((a, v) => a + v, 0) / n;
    const std = Math.sqrt(c.reduce((a, v) => a + (v - mean) ** 2, 0) / n);
    let ss = 0;
    let m = 0;
    for (let i = 0; i < n; i++) {
      ss += (g[i]! - c[i]!) ** 2;
      m = Math.max(m, Math.abs(g[i]! - c[i]!));
    }
    rms = Math.max(rms, Math.sqrt(ss / n) / std);
    max = Math.max(max, Number.isNaN(m) ? Infinity : m / std);
  }
  expect(rms).toBeLessThan(rmsTol);
  expect(max).toBeLessThan(maxTol);
}

/**
 * One seeded bf16 checkpoint of `cfg` in a temporary directory, loaded on the CPU and on CUDA
 * before the calling describe block's tests and disposed after them.
 */
function cpuAndCudaModels<M extends { dispose(): void }>(
  Model: { load(dir: string, opts: LoadOptions): Promise<M> },
  cfg: ModelConfig,
  seed: number,
  prefillChunk: number,
): { readonly dir: string; cpu: M; gpu: M } {
  const tmp = tempDir('taipan-cuda-models-');
  const models = { dir: tmp.dir, cpu: undefined as unknown as M, gpu: undefined as unknown as M };
  beforeAll(async () => {
    await writeModel(cfg, tmp.dir, seed, 'bf16');
    models.cpu = await Model.load(tmp.dir, { backend: 'cpu', prefillChunk });
    models.gpu = await Model.load(tmp.dir, { backend: 'cuda', prefillChunk });
  });
  afterAll(() => {
    models.cpu?.dispose();
    models.gpu?.dispose();
    tmp.cleanup();
  });
  return models;
}

describe.skipIf(!hasCuda)('Mamba2Model on CUDA (bf16 activations) vs the CPU (fp32)', () => {
  // Written with bf16 weights, so both backends run exactly the same weights and the comparison
  // measures what MODEL.md section 10 allows for: bf16 activations between ops on CUDA.
  //
  // Tolerance. Section 10 asks for agreement "within 2e-2 of the logits' standard deviation";
  // that holds for the RMS of the difference over the vocabulary, which is how it is checked
  // here. It cannot hold for the largest difference: on this model a float64 forward that only
  // rounds to bf16 where the CUDA path does (the op outputs) is already up to ~5e-2 std away from
  // the exact one (RMS ~1.8e-2 std), and each rounding point alone costs 1-3e-2 std. The CUDA
  // path on the CPU emulator matches that rounded reference to ~3e-7 std, so the gap is the bf16
  // storage itself. The largest difference is bounded at 8e-2 std.
  const RMS_TOL = 2e-2;
  const MAX_TOL = 8e-2;
  const cfg = smallMamba2Config();
  const models = cpuAndCudaModels(Mamba2Model, cfg, 11, 16);
  const ids = (n: number, s: number) => Array.from({ length: n }, (_, i) => (s * 31 + i * 17 + ((i * i) % 7)) % cfg.vocab_size);
  const expectClose = (lg: Float32Array, lc: Float32Array) => expectLogitsClose(lg, lc, cfg.vocab_padded, cfg.vocab_size, RMS_TOL, MAX_TOL);

  it('loads its weights as bf16 on the device and refuses f32 matrices', async () => {
    expect(models.gpu.device).toBe('cuda');
    await expect(Mamba2Model.load(models.dir, { backend: 'cuda', weightDtype: 'f32' })).rejects.toThrow(/weightDtype 'f32' is not supported on the CUDA backend/);
  });

  it('prefill logits at every position agree (prompt over several SSD and prefill chunks)', async () => {
    const seq = ids(40, 1);
    const c = await models.cpu.prefill(seq, { logits: 'all' });
    const g = await models.gpu.prefill(seq, { logits: 'all' });
    expectClose(g.logits, c.logits);
    for (const s of [...c.states, ...g.states]) s.dispose();
  });

  it('gives the same greedy tokens over 32 decode steps wherever the top two logits differ by more than 2e-2 std', async () => {
    const sc = models.cpu.createState();
    const sg = models.gpu.createState();
    let lc = (await models.cpu.prefill(ids(9, 2), { states: [sc] })).logits;
    let lg = (await models.gpu.prefill(ids(9, 2), { states: [sg] })).logits;
    let compared = 0;
    for (let step = 0; step < 32; step++) {
      expectClose(lg, lc);
      const row = lc.subarray(0, cfg.vocab_size);
      const mean = row.reduce((a, v) => a + v, 0) / row.length;
      const std = Math.sqrt(row.reduce((a, v) => a + (v - mean) ** 2, 0) / row.length);
      const next = argmax(lc, cfg.vocab_size);
      const sorted = Float32Array.from(row).sort();
      if (sorted[sorted.length - 1]! - sorted[sorted.length - 2]! > RMS_TOL * std) {
        expect(argmax(lg, cfg.vocab_size)).toBe(next);
        compared++;
      }
      // Both continue from the CPU's token, so one near-tie cannot make the runs diverge.
      lc = await models.cpu.step([next], [sc]);
      lg = await models.gpu.step([next], [sg]);
    }
    expect(compared).toBeGreaterThan(16);
    sc.dispose();
    sg.dispose();
  });

  it('decodes a batch of sequences with their own states, and a warm decode loop calls no cudaMalloc', async () => {
    const prompts = [ids(5, 3), ids(5, 4), ids(5, 5)];
    const c = await models.cpu.prefill(prompts);
    const g = await models.gpu.prefill(prompts);
    expectClose(g.logits, c.logits);
    let tokens = [1, 2, 3];
    let mallocs = 0;
    for (let step = 0; step < 10; step++) {
      if (step === 3) mallocs = cudaMemory().deviceMallocs;
      const lc = await models.cpu.step(tokens, c.states);
      const lg = await models.gpu.step(tokens, g.states);
      expectClose(lg, lc);
      const V = cfg.vocab_padded;
      tokens = [0, 1, 2].map((b) => argmax(lc.subarray(b * V, (b + 1) * V), cfg.vocab_size));
    }
    expect(cudaMemory().deviceMallocs).toBe(mallocs);
    for (const s of [...c.states, ...g.states]) s.dispose();
  });
});

// The baselines on CUDA: every op of Transformer++ and of both Jambas (the original without its
// mixture of experts, whose routing ops are CPU-only) has a CUDA path, so whole models run there.
// Same tolerances and method as the Mamba-2 model above. Short sequences: the emulator runs the
// attention kernels' threads one by one, about a second per token for these models.
const baselines: [string, () => ModelConfig][] = [
  ['Transformer++ (RoPE, GQA 4/2)', () => smallTransformerConfig()],
  // d 64 and 8 layers: at d 32 and 16 layers bf16 activations alone (a pure Mamba-2 of that
  // shape) already differ by ~4.6e-2 std, past the spec's 2e-2.
  [
    'Jamba, taipan-paper variant (Mamba-2 + RoPE attention)',
    () => smallPaperJambaConfig({ d_model: 64, n_layer: 8, attn_every: 4, ssm: { d_state: 16, headdim: 16, ngroups: 2, chunk_size: 8 } }),
  ],
  ['Jamba, original without MoE (Mamba-1 + attention without positions)', () => smallJambaConfig({ moe: false })],
];
for (const [name, makeConfig] of baselines) {
  describe.skipIf(!hasCuda)(`${name} on CUDA vs the CPU`, () => {
    const cfg = makeConfig();
    const models = cpuAndCudaModels(CausalLM, cfg, 13, 5);
    const ids = (n: number, s: number) => Array.from({ length: n }, (_, i) => (s * 29 + i * 11 + ((i * i) % 5)) % cfg.vocab_size);
    const expectClose = (lg: Float32Array, lc: Float32Array) => expectLogitsClose(lg, lc, cfg.vocab_padded, cfg.vocab_size, 2e-2, 8e-2);

    it('prefill logits at every position agree (a prompt in three pieces)', async () => {
      const seq = ids(12, 1);
      const c = await models.cpu.prefill(seq, { logits: 'all' });
      const g = await models.gpu.prefill(seq, { logits: 'all' });
      expectClose(g.logits, c.logits);
      for (const s of [...c.states, ...g.states]) s.dispose();
    }, 300_000); // minutes on the emulator, milliseconds on a GPU

    it('a batch of 3 decodes 4 steps with the same logits and greedy tokens', async () => {
      const prompts = [ids(3, 2), ids(3, 3), ids(3, 4)];
      const c = await models.cpu.prefill(prompts);
      const g = await models.gpu.prefill(prompts);
      expectClose(g.logits, c.logits);
      const V = cfg.vocab_padded;
      let tokens = [1, 2, 3];
      for (let step = 0; step < 4; step++) {
        const lc = await models.cpu.step(tokens, c.states);
        const lg = await models.gpu.step(tokens, g.states);
        expectClose(lg, lc);
        // Both continue from the CPU's tokens, so one near-tie cannot make the runs diverge.
        tokens = [0, 1, 2].map((b) => argmax(lc.subarray(b * V, (b + 1) * V), cfg.vocab_size));
      }
      for (const s of [...c.states, ...g.states]) s.dispose();
    }, 300_000);
  });
}

// Taipan on CUDA: the Mamba-2 layers plus the SALs (gate and compaction, sparse attention over
// the ring buffers, mix) all on the device. The gates decide on the residual stream, which
// carries bf16 rounding on CUDA, so a token whose two gate logits nearly tie could be selected
// on one backend and not the other, and the runs would then differ by design. So the test
// first looks, on the CPU, for prompts whose every gate decision (prefill and the greedy steps
// after it) is at least 0.1 from a tie (the bf16 path moves these logit differences by ~0.03 at
// most here), then checks that both backends select the same tokens and give close logits.
// d 128: at d 64 this model's bf16 rounding alone reaches ~3e-2 std in some rows.
describe.skipIf(!hasCuda)('Taipan on CUDA vs the CPU', () => {
  // Window 8 < the 12-token prompts: the ring buffers wrap during prefill (pieces of 5).
  const cfg = smallTaipanConfig({ window: 8 }, { d_model: 128 });
  const models = cpuAndCudaModels(CausalLM, cfg, 21, 5);
  const ids = (n: number, s: number) => Array.from({ length: n }, (_, i) => (s * 31 + i * 7 + ((i * i) % 3)) % cfg.vocab_size);
  const expectClose = (lg: Float32Array, lc: Float32Array) => expectLogitsClose(lg, lc, cfg.vocab_padded, cfg.vocab_size, 2e-2, 8e-2);
  const V = cfg.vocab_padded;
  const steps = 4;
  const greedy = (logits: Float32Array) => [0, 1].map((b) => argmax(logits.subarray(b * V, (b + 1) * V), cfg.vocab_size));
  const gateDiffs = (m: CausalLM) => m.sals.map((l) => l.captureGate!);

  async function promptsWithClearGates(margin: number): Promise<number[][]> {
    for (let s = 1; s < 300; s++) {
      const prompts = [ids(12, s), ids(12, s + 1000)];
      for (const l of models.cpu.sals) l.captureGate = [];
      const c = await models.cpu.prefill(prompts);
      let tokens = [5, 6];
      for (let step = 0; step < steps; step++) tokens = greedy(await models.cpu.step(tokens, c.states));
      for (const st of c.states) st.dispose();
      if (Math.min(...gateDiffs(models.cpu).flat().map(Math.abs)) > margin) return prompts;
    }
    throw new Error('no prompts found whose gate decisions are all clear of a tie');
  }

  it('a batch of 2: prefill logits at every position, then 4 decode steps, with the same selections', async () => {
    const prompts = await promptsWithClearGates(0.1);
    for (const m of [models.cpu, models.gpu]) for (const l of m.sals) l.captureGate = [];
    const c = await models.cpu.prefill(prompts, { logits: 'all' });
    const g = await models.gpu.prefill(prompts, { logits: 'all' });
    expect(g.selection).toEqual(c.selection);
    expect(c.selection.some((s) => s.selected > 0 && s.selected < s.tokens)).toBe(true);
    expectClose(g.logits, c.logits);
    let tokens = [5, 6];
    for (let step = 0; step < steps; step++) {
      const lc = await models.cpu.step(tokens, c.states);
      const lg = await models.gpu.step(tokens, g.states);
      expect(models.gpu.lastSelection).toEqual(models.cpu.lastSelection);
      expectClose(lg, lc);
      tokens = greedy(lc);
    }
    const [dc, dg] = [gateDiffs(models.cpu), gateDiffs(models.gpu)];
    dc.forEach((layer, k) => {
      expect(dg[k]!.length).toBe(layer.length);
      layer.forEach((x, i) => expect(Math.abs(dg[k]![i]! - x)).toBeLessThan(0.1));
    });
    for (const s of [...c.states, ...g.states]) s.dispose();
  }, 600_000);

  it('serves generation through loadModel: greedy as CausalLM on CUDA, seeded sampling replays', async () => {
    // The engine samples on a CPU stream from the host logits (no CUDA sample kernel yet).
    const lm = await loadModel(models.dir, { backend: 'cuda', tokenizer: false });
    try {
      const p = ids(6, 3);
      const want = await models.gpu.generateGreedy(p, { maxTokens: 4 });
      const got = await lm.complete(p, { maxTokens: 4, temperature: 0, ignoreEos: true });
      expect(got.tokens).toEqual(want);
      const opts = { maxTokens: 3, temperature: 0.8, seed: 11, ignoreEos: true };
      const a = await lm.complete(p, opts);
      expect(a.tokens.length).toBe(3);
      expect((await lm.complete(p, opts)).tokens).toEqual(a.tokens);
    } finally {
      await lm[Symbol.asyncDispose]();
    }
  }, 600_000);
});
