// Tensors and streams from JavaScript: creation, views, dtype conversion, lifetime, in-use
// protection, clear errors, and that queued work runs off the event loop.
import { spawnSync } from 'node:child_process';

import { describe, expect, it } from 'vitest';

import { addon } from '../lib/native.js';
import { Ops } from '../lib/ops.js';
import { getBackendInfo, resolveBackend } from '../lib/backend.js';

const native = addon();

describe('tensors', () => {
  it('round-trips every dtype', () => {
    const v = Float32Array.from([1, -2.5, 0.099853515625, 65504, 3e-5]);
    expect(native.tensor(v, [5]).toArray()).toEqual(v);
    const bf = native.tensor(v, [5], 'bf16').toArray();
    expect(bf[0]).toBe(1);
    expect(bf[1]).toBe(-2.5);
    expect(Math.abs(bf[2]! - v[2]!) / v[2]!).toBeLessThan(4e-3);
    const f16 = native.tensor(v, [5], 'f16').toArray();
    expect(f16[3]).toBe(65504);
    expect(native.tensor(Int32Array.from([1, -7, 2 ** 31 - 1]), [3], 'i32').toArray()).toEqual(Int32Array.from([1, -7, 2 ** 31 - 1]));
    // Raw bits: bf16 0x3f80 is 1.0
    expect(native.tensor(Uint16Array.from([0x3f80]), [1], 'bf16').toArray()[0]).toBe(1);
  });

  it('makes row and column views that share memory', () => {
    const t = native.tensor(Float32Array.from({ length: 12 }, (_, i) => i), [3, 4]);
    expect(t.rows(1, 3).toArray()).toEqual(Float32Array.from([4, 5, 6, 7, 8, 9, 10, 11]));
    const c = t.cols(1, 3);
    expect(c.shape).toEqual([3, 2]);
    expect(c.rowStride).toBe(4);
    expect(c.contiguous).toBe(false);
    expect(c.toArray()).toEqual(Float32Array.from([1, 2, 5, 6, 9, 10]));
    c.write(Float32Array.from([-1, -2, -5, -6, -9, -10]));
    expect(t.toArray()).toEqual(Float32Array.from([0, -1, -2, 3, 4, -5, -6, 7, 8, -9, -10, 11]));
    expect(t.reshape([2, 6]).shape).toEqual([2, 6]);
    expect(() => t.reshape([5])).toThrow(/does not have the 12 elements/);
    expect(() => t.cols(3, 9)).toThrow(RangeError);
  });

  it('gives clear errors for bad arguments', () => {
    expect(() => native.tensor(new Float32Array(5), [2, 3])).toThrow(/has 5 elements but shape \[2, 3\] needs 6/);
    expect(() => native.tensor(new Float32Array(2), [2], 'i32')).toThrow(/Int32Array/);
    expect(() => native.empty([2, -1])).toThrow(/non-negative integers/);
    expect(() => native.empty([2], 'f64' as never)).toThrow(/dtype must be one of/);
    expect(() => native.empty([1e9, 1e9])).toThrow(/too large/);
    expect(() => native.empty([2], 'f32', 'tpu' as never)).toThrow(/device must be 'cpu' or 'cuda'/);
  });

  it('reports out of memory as an error, not a crash', () => {
    // 2^38 floats = 1 TiB: more than this machine has.
    expect(() => native.empty([2 ** 19, 2 ** 19], 'f32', 'cpu', false)).toThrow(/out of memory/);
  });

  it('reports a kernel running out of scratch memory as the op\'s error, on any pool thread', () => {
    // A child process, with every scratch request above 128 KiB failing as if memory had run
    // out (TAIPAN_TEST_SCRATCH_LIMIT): both pool threads fail inside the same GEMM.
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/helpers/scratch_oom_child.ts'], {
      env: { ...process.env, TAIPAN_TEST_SCRATCH_LIMIT: String(128 * 1024) },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.signal, r.stderr).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(out.gemm).toBe('linear failed: out of memory: linear (packed weight panels) needs 256 KiB of scratch');
    expect(out.ssd_scan).toMatch(/^ssd_scan failed: out of memory: ssd_scan needs [\d.]+ KiB of scratch$/);
    expect(out.after).toBe('1,2,3,3,4,7');
  });

  it('refuses use after dispose', () => {
    const t = native.empty([4]);
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.toArray()).toThrow(/disposed/);
    expect(() => t.shape).toThrow(/disposed/);
    const ops = new Ops('cpu');
    expect(() => ops.silu(t, native.empty([4]))).toThrow(/disposed/);
    ops.dispose();
    expect(() => ops.silu(native.empty([4]), native.empty([4]))).toThrow(/Stream was disposed/);
  });

  it('keeps memory alive for queued work after dispose, and refuses host access while queued', async () => {
    const ops = new Ops('cpu');
    const x = native.tensor(Float32Array.from([1, 2, 3]), [3]);
    const y = native.empty([3]);
    ops.silu(x, y);
    expect(() => y.toArray()).toThrow(/await stream\.sync\(\) first/);
    expect(() => x.write(new Float32Array(3))).toThrow(/await stream\.sync\(\) first/);
    x.dispose(); // the queued op holds its own reference
    await ops.sync();
    expect(y.toArray()[2]).toBeCloseTo(3 / (1 + Math.exp(-3)), 6);
  });
});

describe('streams', () => {
  it('validates op arguments when enqueued, naming op and argument', () => {
    const ops = new Ops('cpu');
    expect(() => ops.stream.run('nope', {})).toThrow(/unknown op 'nope'/);
    expect(() => ops.linear(native.empty([2, 3]), native.empty([4, 5]), native.empty([2, 4]))).toThrow(
      /linear: tensor 'x' has shape \[2, 3\], expected \[\*, 5\]/,
    );
    expect(() => ops.linear(native.empty([2, 5]), native.empty([4, 5], 'i32'), native.empty([2, 4]))).toThrow(
      /linear: tensor 'weight' has dtype i32, expected f32 or f16 or bf16/,
    );
    expect(() => ops.stream.run('linear', { x: native.empty([2, 5]), weight: native.empty([4, 5]) })).toThrow(/missing tensor argument 'out'/);
    expect(() => ops.gatedRmsnorm(native.empty([2, 6]), native.empty([2, 6]), native.empty([6]), native.empty([2, 6]), 4, 1e-5)).toThrow(
      /'groups' \(4\) must divide the width 6/,
    );
    const buf = native.empty([4, 8]);
    expect(() => ops.linear(buf.cols(0, 4), native.empty([4, 4]), buf.cols(2, 6))).toThrow(/overlap/);
    expect(ops.stream.queued).toBe(0);
  });

  it('runs queued work off the event loop', async () => {
    const ops = new Ops('cpu');
    const [M, K, N] = [512, 1024, 2048];
    const x = native.tensor(new Float32Array(M * K).fill(0.01), [M, K]);
    const w = native.tensor(new Float32Array(N * K).fill(0.02), [N, K]);
    const y = native.empty([M, N]);
    for (let i = 0; i < 4; i++) ops.linear(x, w, y);
    let ticks = 0;
    let done = false;
    const tick = () => {
      ticks++;
      if (!done) setImmediate(tick);
    };
    setImmediate(tick);
    await ops.sync();
    done = true;
    // 4 GEMMs of 2 GFLOP each take tens of milliseconds at least: the loop kept turning.
    expect(ticks).toBeGreaterThan(5);
    expect(y.toArray()[0]).toBeCloseTo(K * 0.01 * 0.02, 3);
  });

  it('reports an op failure through the promise', async () => {
    const ops = new Ops('cpu');
    ops.embedding(native.tensor(Int32Array.from([9]), [1], 'i32'), native.empty([4, 2]), native.empty([1, 2]));
    await expect(ops.sync()).rejects.toThrow(/embedding failed: token id 9 at position 0 is out of range \[0, 4\)/);
  });
});

describe('backends', () => {
  it('describes the build and picks a backend', () => {
    const info = getBackendInfo();
    expect(info.ops).toContain('ssd_scan');
    expect(info.cpu.threads).toBeGreaterThan(0);
    expect(typeof info.cuda.compiled).toBe('boolean');
    if (info.cuda.devices.length === 0) expect(info.cuda.reason.length).toBeGreaterThan(0);
    expect(resolveBackend('cpu')).toBe('cpu');
    expect(['cpu', 'cuda']).toContain(resolveBackend('auto'));
    expect(() => resolveBackend('gpu' as never)).toThrow(/'auto', 'cpu' or 'cuda'/);
    if (info.cuda.devices.length === 0) expect(() => resolveBackend('cuda')).toThrow(/cuda/);
  });

  it('measures the CPU read bandwidth off the event loop, and rejects bad sizes', async () => {
    const pending = addon().cpuReadBandwidth(16);
    expect(pending).toBeInstanceOf(Promise);
    const bytesPerSecond = await pending;
    expect(Number.isFinite(bytesPerSecond)).toBe(true);
    expect(bytesPerSecond).toBeGreaterThan(1e8); // any machine reads 16 MiB faster than 100 MB/s
    for (const bad of [0, -1, 1.5, 1e9, Number.NaN])
      expect(() => addon().cpuReadBandwidth(bad)).toThrow(/mib must be an integer from 1 to 16384/);
  });

  it('measures the CPU FMA peak off the event loop', async () => {
    const pending = addon().cpuFmaPeak();
    expect(pending).toBeInstanceOf(Promise);
    const flops = await pending;
    expect(Number.isFinite(flops)).toBe(true);
    expect(flops).toBeGreaterThan(1e8); // any machine multiplies and adds faster than 100 MFLOP/s
  });

  it('honours TAIPAN_BACKEND', () => {
    const old = process.env.TAIPAN_BACKEND;
    try {
      process.env.TAIPAN_BACKEND = 'cpu';
      expect(resolveBackend()).toBe('cpu');
      process.env.TAIPAN_BACKEND = 'quantum';
      expect(() => resolveBackend()).toThrow(/TAIPAN_BACKEND must be auto, cpu or cuda/);
    } finally {
      if (old === undefined) delete process.env.TAIPAN_BACKEND;
      else process.env.TAIPAN_BACKEND = old;
    }
  });
});

describe('captured graphs', () => {
  it('replays op calls, reading inputs rewritten in place, and rejects misuse', async () => {
    const { addon } = await import('../lib/native.js');
    const native = addon();
    const s = new native.Stream('cpu');
    const a = native.tensor(new Float32Array([1, 2, 3]), [3]);
    const b = native.tensor(new Float32Array([10, 20, 30]), [3]);
    const out = native.empty([3]);
    s.beginCapture();
    expect(() => s.beginCapture()).toThrow(/already capturing/);
    s.run('add', { a, b, out });
    const g = s.endCapture();
    expect(g.ops).toBe(1);
    expect(s.queued).toBe(0); // captured, not queued
    s.launch(g);
    await s.sync();
    expect(Array.from(out.toArray())).toEqual([11, 22, 33]);
    a.write(new Float32Array([5, 5, 5]));
    s.launch(g);
    s.launch(g);
    await s.sync();
    expect(Array.from(out.toArray())).toEqual([15, 25, 35]);
    expect(() => s.endCapture()).toThrow(/not capturing/);
    expect(() => s.launch({} as never)).toThrow(/expected a Graph/);
    g.dispose();
    expect(g.disposed).toBe(true);
    expect(() => s.launch(g)).toThrow(/disposed/);
    s.dispose();
  });
});
