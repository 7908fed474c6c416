// CUDA graphs for captured stream graphs (see cuda/README.md, "CUDA graphs for decode"): a
// launched stream graph whose Works only launch kernels runs op by op once, is then recorded
// with stream capture and replayed as one CUDA graph launch. These tests check that a replayed
// decode step computes exactly what the op-by-op run computes, that the graph is really
// replayed (the addon's counters), that data checks done on the device (embedding ids) still
// fail the step with the op's message, that a row count read by the kernels follows its
// device value at every replay, and that a warm decode loop allocates nothing.
//
// Everything but the first suite needs a CUDA device and is skipped without one. With no GPU,
// run them against the CPU emulator build of the addon, whose stream capture records and
// replays closures and refuses host steps while capturing:
//   TAIPAN_ADDON=$(cuda/emu/build_emu_addon.sh) npx vitest run test/cuda_graph.test.ts
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cudaMemory, getBackendInfo } from '../lib/backend.js';
import { bf16ToF32, f32ToBf16, type DTypeName } from '../lib/dtype.js';
import { argmax } from '../lib/models/causal_lm.js';
import { Mamba2Model } from '../lib/models/mamba2.js';
import { addon, type DeviceName, type NativeGraph, type NativeStream, type NativeTensor } from '../lib/native.js';
import { Ops } from '../lib/ops.js';
import { smallMamba2Config, tempDir, writeModel } from './helpers/models.js';
import { randn } from './reference/rng.js';

const native = addon();
const info = getBackendInfo();
const hasCuda = info.cuda.devices.length > 0;
// The CPU emulator runs a kernel launch in tens to hundreds of milliseconds (more on a busy
// machine); on a GPU every test here takes well under a second.
const TIMEOUT = 1_800_000;

// The CUDA graph parts of the addon that lib/native.ts does not declare.
interface CudaGraphStats {
  captures: number;
  launches: number;
  fallbacks: number;
  lastFallback: string;
}
const graphStats = (): CudaGraphStats => (native as unknown as { cudaGraphStats(): CudaGraphStats }).cudaGraphStats();
const streamGraphs = (s: NativeStream) => s as NativeStream & { cudaGraphs: boolean };
const isCudaGraph = (g: NativeGraph) => (g as NativeGraph & { cudaGraph: boolean }).cudaGraph;
/** The graph is replayed as a CUDA graph now (else say why the last capture failed, if one did). */
function expectCudaGraph(g: NativeGraph): void {
  expect(isCudaGraph(g), `not a CUDA graph; last capture failure: "${graphStats().lastFallback}"`).toBe(true);
}
/** Counter changes since `before`. */
function since(before: CudaGraphStats): { captures: number; launches: number; fallbacks: number } {
  const now = graphStats();
  return { captures: now.captures - before.captures, launches: now.launches - before.launches, fallbacks: now.fallbacks - before.fallbacks };
}

let seed = 9100;
/** Normal values rounded to bf16 (exact in every dtype the ops take). */
function rand(n: number, scale = 1): Float32Array {
  return bf16ToF32(f32ToBf16(Float32Array.from(randn(n, seed++, scale))));
}
function on(device: DeviceName, data: Float32Array, shape: number[], dtype: DTypeName = 'f32'): NativeTensor {
  return native.tensor(data, shape, dtype, device);
}

describe('CUDA graph switches and counters', () => {
  it('CPU streams never use CUDA graphs; the counters are there', async () => {
    const s = streamGraphs(new native.Stream('cpu'));
    expect(s.cudaGraphs).toBe(false);
    s.cudaGraphs = true; // has no effect on the CPU
    expect(s.cudaGraphs).toBe(false);
    expect(() => {
      s.cudaGraphs = 1 as unknown as boolean;
    }).toThrow(/boolean/);
    s.dispose();
    const before = graphStats();
    expect(typeof before.captures).toBe('number');
    // A captured CPU graph launched a few times runs op by op.
    const ops = new Ops('cpu');
    const x = on('cpu', rand(8), [8]);
    const y = native.empty([8]);
    ops.stream.beginCapture();
    ops.silu(x, y);
    const g = ops.stream.endCapture();
    for (let i = 0; i < 3; i++) {
      ops.stream.launch(g);
      await ops.sync();
    }
    expect(isCudaGraph(g)).toBe(false);
    g.dispose();
    ops.dispose();
    expect(since(before)).toEqual({ captures: 0, launches: 0, fallbacks: 0 });
  });
});

describe.skipIf(!hasCuda)('CUDA graphs: switches', () => {
  it('CUDA streams use them unless TAIPAN_CUDA_GRAPHS=0 was set when the stream was created', () => {
    const saved = process.env.TAIPAN_CUDA_GRAPHS;
    try {
      delete process.env.TAIPAN_CUDA_GRAPHS;
      const a = streamGraphs(new native.Stream('cuda'));
      process.env.TAIPAN_CUDA_GRAPHS = '0';
      const b = streamGraphs(new native.Stream('cuda'));
      expect(a.cudaGraphs).toBe(true);
      expect(b.cudaGraphs).toBe(false);
      b.cudaGraphs = true;
      expect(b.cudaGraphs).toBe(true);
      a.dispose();
      b.dispose();
    } finally {
      if (saved === undefined) delete process.env.TAIPAN_CUDA_GRAPHS;
      else process.env.TAIPAN_CUDA_GRAPHS = saved;
    }
  });
});

describe.skipIf(!hasCuda)('CUDA graphs: ops replayed from a CUDA graph', () => {
  // A small "decode step": embedding into the fp32 residual, rmsnorm to bf16, LM head.
  const [V, d, n] = [40, 32, 3];
  let ops: Ops;
  let cpu: Ops;
  beforeAll(() => {
    ops = new Ops('cuda');
    cpu = new Ops('cpu');
  }, TIMEOUT);
  afterAll(() => {
    ops.dispose();
    cpu.dispose();
  });

  it('an id out of range fails the replayed step with the op message; the next replay works', async () => {
    const table = rand(V * d);
    const norm = rand(d, 0.5);
    const head = rand(V * d, 0.2);
    const ids = native.empty([n], 'i32', 'cuda');
    const residual = native.empty([n, d], 'f32', 'cuda');
    const normed = native.empty([n, d], 'bf16', 'cuda');
    const logits = native.empty([n, V], 'f32', 'cuda');
    const tableG = on('cuda', table, [V, d], 'bf16');
    const normG = on('cuda', norm, [d]);
    const headG = on('cuda', head, [V, d], 'bf16');
    ops.stream.beginCapture();
    ops.embedding(ids, tableG, residual, V);
    ops.rmsnorm(residual, null, normG, normed, 1e-5);
    ops.linear(normed, headG, logits);
    const g = ops.stream.endCapture();
    // The same step run op by op on a stream without CUDA graphs: the reference, bit for bit.
    const eager = new Ops('cuda');
    streamGraphs(eager.stream).cudaGraphs = false;
    const want = async (tokens: number[]) => {
      const out = native.empty([n, V], 'f32', 'cuda');
      const r = native.empty([n, d], 'f32', 'cuda');
      const h = native.empty([n, d], 'bf16', 'cuda');
      eager.embedding(native.tensor(Int32Array.from(tokens), [n], 'i32', 'cuda'), tableG, r, V);
      eager.rmsnorm(r, null, normG, h, 1e-5);
      eager.linear(h, headG, out);
      await eager.sync();
      return Array.from(out.toArray());
    };
    const step = async (tokens: number[]) => {
      ids.write(Int32Array.from(tokens));
      ops.stream.launch(g);
      await ops.sync();
      return Array.from(logits.toArray());
    };
    try {
      const before = graphStats();
      expect(await step([1, 2, 3])).toEqual(await want([1, 2, 3])); // op by op
      expect(isCudaGraph(g)).toBe(false);
      expect(await step([4, 5, 6])).toEqual(await want([4, 5, 6])); // captured, then launched
      expectCudaGraph(g);
      expect(await step([39, 0, 7])).toEqual(await want([39, 0, 7])); // replayed
      expect(since(before)).toEqual({ captures: 1, launches: 2, fallbacks: 0 });

      ids.write(Int32Array.from([2, 40, -1]));
      ops.stream.launch(g);
      await expect(ops.sync()).rejects.toThrow('embedding failed: token id 40 at position 1 is out of range [0, 40)');
      // The error was read and cleared: the next replays succeed and compute the right thing.
      expect(await step([8, 9, 10])).toEqual(await want([8, 9, 10]));
      ids.write(Int32Array.from([-5, 1, 2]));
      ops.stream.launch(g);
      expect(() => ops.syncBlocking()).toThrow(/token id -5 at position 0 is out of range \[0, 40\)/);
      expect(await step([11, 12, 13])).toEqual(await want([11, 12, 13]));
      expectCudaGraph(g);
      expect(since(before)).toEqual({ captures: 1, launches: 6, fallbacks: 0 });
    } finally {
      g.dispose();
      eager.dispose();
    }
  }, TIMEOUT);

  it('the row count of linear is read by the kernels at every replay', async () => {
    // M = 20 rows: counts up to 16 take the small-M kernel, larger ones the tensor-core kernel.
    const [M, K, N] = [20, 64, 24];
    const x = rand(M * K);
    const W = rand(N * K, 0.1);
    const oc = native.empty([M, N]);
    cpu.linear(on('cpu', x, [M, K]), on('cpu', W, [N, K], 'bf16'), oc);
    cpu.syncBlocking();
    const full = oc.toArray();
    const out = native.empty([M, N], 'f32', 'cuda');
    const count = native.tensor(Int32Array.from([0]), [1], 'i32', 'cuda');
    ops.stream.beginCapture();
    ops.linear(on('cuda', x, [M, K], 'bf16'), on('cuda', W, [N, K], 'bf16'), out, count);
    const g = ops.stream.endCapture();
    try {
      const before = graphStats();
      for (const c of [3, 17, 0, 16, 20, 25, -4, 1]) {
        out.write(new Float32Array(M * N).fill(-3));
        count.write(Int32Array.from([c]));
        ops.stream.launch(g);
        await ops.sync();
        const rows = Math.min(Math.max(c, 0), M);
        const got = out.toArray();
        for (let i = 0; i < rows * N; i++) expect(Math.abs(got[i]! - full[i]!)).toBeLessThan(1e-4);
        expect(Array.from(got.subarray(rows * N))).toEqual(new Array((M - rows) * N).fill(-3));
      }
      expectCudaGraph(g);
      expect(since(before)).toEqual({ captures: 1, launches: 7, fallbacks: 0 });
    } finally {
      g.dispose();
    }
  }, TIMEOUT);
});

describe.skipIf(!hasCuda)('CUDA graphs: Mamba-2 decode of a batch', () => {
  // Two layers: every op of the decode step, at half the emulator's time of the usual four.
  const cfg = smallMamba2Config({ n_layer: 2 });
  const tmp = tempDir('taipan-cuda-graph-');
  let withGraphs: Mamba2Model;
  let withoutGraphs: Mamba2Model;
  const ids = (len: number, s: number) => Array.from({ length: len }, (_, i) => (s * 31 + i * 17 + ((i * i) % 7)) % cfg.vocab_size);
  const prompts = [ids(5, 3), ids(5, 4), ids(5, 5)];
  const V = cfg.vocab_padded;
  const greedy = (logits: Float32Array) => [0, 1, 2].map((b) => argmax(logits.subarray(b * V, (b + 1) * V), cfg.vocab_size));

  beforeAll(async () => {
    await writeModel(cfg, tmp.dir, 11, 'bf16');
    const saved = process.env.TAIPAN_CUDA_GRAPHS;
    try {
      delete process.env.TAIPAN_CUDA_GRAPHS;
      withGraphs = await Mamba2Model.load(tmp.dir, { backend: 'cuda', prefillChunk: 16 });
      process.env.TAIPAN_CUDA_GRAPHS = '0'; // read when the model's stream is created
      withoutGraphs = await Mamba2Model.load(tmp.dir, { backend: 'cuda', prefillChunk: 16 });
    } finally {
      if (saved === undefined) delete process.env.TAIPAN_CUDA_GRAPHS;
      else process.env.TAIPAN_CUDA_GRAPHS = saved;
    }
  }, TIMEOUT);
  afterAll(() => {
    withGraphs?.dispose();
    withoutGraphs?.dispose();
    tmp.cleanup();
  });

  it('20 steps of 3 sequences: the same logits bit for bit with CUDA graphs on and off, the graph replayed, no cudaMalloc', async () => {
    const STEPS = 20;
    // Without CUDA graphs first: the counters must not move.
    let before = graphStats();
    const off = await withoutGraphs.prefill(prompts);
    const offLogits: Float32Array[] = [];
    const tokens: number[][] = [];
    let next = greedy(off.logits);
    for (let step = 0; step < STEPS; step++) {
      tokens.push(next);
      const lg = await withoutGraphs.step(next, off.states);
      offLogits.push(lg);
      next = greedy(lg);
    }
    expect(since(before)).toEqual({ captures: 0, launches: 0, fallbacks: 0 });

    before = graphStats();
    const onRun = await withGraphs.prefill(prompts);
    expect(Array.from(onRun.logits)).toEqual(Array.from(off.logits));
    let mallocs = 0;
    for (let step = 0; step < STEPS; step++) {
      // From the second step on (the first records the step's ops, plans and runs them once;
      // the second captures the CUDA graph, which may not allocate) nothing is allocated.
      if (step === 1) mallocs = cudaMemory().deviceMallocs;
      const lg = await withGraphs.step(tokens[step]!, onRun.states);
      expect(Array.from(lg), `step ${step}`).toEqual(Array.from(offLogits[step]!));
    }
    expect(cudaMemory().deviceMallocs).toBe(mallocs);
    // The decode graph: its first step op by op, captured at the second, one CUDA graph launch
    // for every step from then on. (The prefill graph is launched once: never captured.)
    const used = since(before);
    expect(used.fallbacks).toBe(0);
    expect(used.captures).toBeGreaterThanOrEqual(1);
    expect(used.launches).toBeGreaterThanOrEqual(STEPS - 1);
    for (const s of [...off.states, ...onRun.states]) s.dispose();
  }, TIMEOUT);

  it('a bad token id in the captured decode step fails it with the embedding error; the next step works', async () => {
    // CausalLM checks ids on the host before they reach the device, so the bad id is written
    // straight into the decode graph's ids tensor (internals of lib/models/causal_lm.ts).
    const g = await withGraphs.prefill(prompts);
    let next = greedy(g.logits);
    for (let step = 0; step < 2; step++) next = greedy(await withGraphs.step(next, g.states));
    const internals = withGraphs as unknown as {
      graphs: Map<string, { graph: NativeGraph; ids: NativeTensor }>;
      ops: Ops;
    };
    const decode = [...internals.graphs.entries()].find(([key]) => key.startsWith('decode'))?.[1];
    expect(decode !== undefined, 'CausalLM keeps its decode step graph').toBe(true);
    expectCudaGraph(decode!.graph);
    const before = graphStats();
    decode!.ids.write(Int32Array.from([next[0]!, cfg.vocab_size + 5, next[2]!]));
    internals.ops.stream.launch(decode!.graph);
    await expect(internals.ops.sync()).rejects.toThrow(`embedding failed: token id ${cfg.vocab_size + 5} at position 1 is out of range [0, ${cfg.vocab_size})`);
    expect(since(before).launches).toBe(1);
    // That step ran on the clamped id (the states moved on); the next step runs and is finite.
    const lg = await withGraphs.step(next, g.states);
    expect(lg.every((v) => Number.isFinite(v))).toBe(true);
    expect(since(before)).toEqual({ captures: 0, launches: 2, fallbacks: 0 });
    for (const s of g.states) s.dispose();
  }, TIMEOUT);
});
