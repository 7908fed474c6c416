// GPU benchmark of the CUDA backend (needs a CUDA device; run it in a session that has one):
//
//   npm run bench:cuda                       # everything, JSON to bench/results/cuda-<date>.json
//   npm run bench:cuda -- --quick            # fewer sizes, fewer repeats (a first smoke run)
//   npm run bench:cuda -- --only ssd,gemm    # parts: ssd, gemm, decode
//   npm run bench:cuda -- --json out.json
//
// 1. SSD scan (ssd_scan op) on the mamba2-1.3b shape (H 64, P 64, N 128, G 1, chunk 256), one
//    sequence of 1K..64K tokens with a carried state: ms per call and tokens/s.
// 2. GEMM (linear op, bf16 x and W, fp32 accumulation): TFLOP/s for square shapes up to 8192^3
//    (4096^3 included) and for the mamba2-1.3b projections at decode and prefill row counts.
// 3. Decode: ms per step for mamba2-130m and mamba2-1.3b (random bf16 weights, written once to
//    a cache folder) at batch 1 and 16, after a 16-token prompt. Any preset runs here
//    (--presets taipan-1.3b,mamba2-1.3b-taipan: the SALs' cost is the difference).
// Each op timing is the median over `repeats` runs of `inner` back-to-back calls on one stream,
// timed around the awaited stream sync (so it includes launch costs, as a model sees them).
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { cudaMemory, getBackendInfo } from '../lib/backend.js';
import { getPreset, loadConfig } from '../lib/config.js';
import { CausalLM } from '../lib/models/causal_lm.js';
import { createRandomModel } from '../lib/models/random.js';
import { addon, type NativeTensor } from '../lib/native.js';
import { Ops } from '../lib/ops.js';

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(`--${name}`);
const option = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = flag('quick');
const only = new Set((option('only') ?? 'ssd,gemm,decode').split(','));
/** A comma-separated list of integers given with --name, or the default. */
const numbers = (name: string, fallback: number[]): number[] => {
  const v = option(name);
  if (v === undefined) return fallback;
  const xs = v.split(',').map(Number);
  if (xs.some((x) => !Number.isInteger(x) || x < 0)) throw new Error(`--${name} takes comma-separated non-negative integers, got "${v}"`);
  return xs;
};
// Smaller sets for a smoke run (e.g. on the CPU emulator build): --lengths 512 --squares 128
// --rows 0 (no model-shaped GEMMs) --ssd-shape 4,16,16,1,64 (H,P,N,G,chunk) --batches 1
// --steps 2 --presets <dir>. A --presets entry with a '/' is a model directory (config.json +
// safetensors, e.g. a real checkpoint) instead of a preset with random weights.
const presets = (option('presets') ?? 'mamba2-130m,mamba2-1.3b').split(',');
const batches = numbers('batches', [1, 16]);
const ssdShape = numbers('ssd-shape', []);
const date = new Date().toISOString();
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const jsonPath = option('json') ?? join(root, 'bench', 'results', `cuda-${date.slice(0, 10)}.json`);

const info = getBackendInfo();
if (info.cuda.devices.length === 0) {
  const why = info.cuda.compiled ? info.cuda.reason : 'this addon was built without CUDA (nvcc was not found at build time)';
  console.error(`bench:cuda needs a CUDA device, and none is usable here: ${why}`);
  process.exit(1);
}
const device = info.cuda.devices[0]!;
console.log(
  `${device.name} (compute capability ${device.computeCapability}, ${(device.totalMemory / 2 ** 30).toFixed(1)} GiB, ` +
    `${device.multiprocessors} SMs), CUDA runtime ${info.cuda.runtimeVersion}, driver ${info.cuda.driverVersion}`,
);

const native = addon();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const repeats = quick ? 3 : 7;

/** Seconds per call: median over `repeats` of (inner calls, then an awaited sync). */
async function timeOps(ops: Ops, enqueue: () => void, inner: number): Promise<number> {
  enqueue(); // warm-up: first launches, shared-memory attributes, caches
  await ops.sync();
  const runs: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    for (let i = 0; i < inner; i++) enqueue();
    await ops.sync();
    runs.push((performance.now() - t0) / 1000 / inner);
  }
  return median(runs);
}

/** Random bf16 bits (a repeated random table: the values do not change the timing). */
function randomBf16(n: number, scale = 1, seed = 1): Uint16Array {
  const table = new Uint16Array(65521);
  let s = seed >>> 0;
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < table.length; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    f[0] = ((s / 2 ** 32) * 2 - 1) * scale;
    table[i] = u[0]! >>> 16;
  }
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i += table.length) out.set(table.subarray(0, Math.min(table.length, n - i)), i);
  return out;
}
const bf16Tensor = (shape: number[], scale = 1, seed = 1) =>
  native.tensor(randomBf16(shape.reduce((a, b) => a * b, 1), scale, seed), shape, 'bf16', 'cuda');
const f32Tensor = (data: Float32Array, shape: number[]) => native.tensor(data, shape, 'f32', 'cuda');

interface SsdRow { L: number; ms: number; tokensPerSecond: number }
interface GemmRow { what: string; M: number; N: number; K: number; out: 'bf16' | 'f32'; ms: number; tflops: number }
interface DecodeRow { preset: string; batch: number; steps: number; msPerStep: number; tokensPerSecond: number }
const result: {
  date: string;
  device: typeof device & { runtimeVersion: number; driverVersion: number };
  repeats: number;
  ssd: SsdRow[];
  gemm: GemmRow[];
  decode: DecodeRow[];
  notes: string[];
  prefillGemm: string;
} = {
  date,
  device: { ...device, runtimeVersion: info.cuda.runtimeVersion, driverVersion: info.cuda.driverVersion },
  repeats,
  ssd: [],
  gemm: [],
  decode: [],
  notes: [
    'op timings: median of repeats of back-to-back calls on one stream, wall clock around the awaited sync (launch costs included)',
    'decode: random bf16 weights, 16-token prompt, steps replayed from a captured graph (one CUDA graph launch per step unless TAIPAN_CUDA_GRAPHS=0)',
  ],
  prefillGemm: info.cuda.prefillGemm ?? 'unknown',
};

function save(): void {
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, JSON.stringify(result, null, 2) + '\n');
}

async function benchSsd(): Promise<void> {
  const cfg = getPreset('mamba2-1.3b');
  let { nheads: H, d_inner: di } = cfg;
  let { headdim: P, d_state: N, ngroups: G, chunk_size: chunk } = cfg.ssm;
  let shape = 'mamba2-1.3b shape';
  if (ssdShape.length) {
    if (ssdShape.length !== 5) throw new Error('--ssd-shape takes H,P,N,G,chunk');
    [H, P, N, G, chunk] = ssdShape as [number, number, number, number, number];
    di = H * P;
    shape = 'shape';
  }
  console.log(`\nSSD scan, ${shape}: H ${H}, P ${P}, N ${N}, G ${G}, chunk ${chunk}, one sequence, carried state`);
  const lengths = numbers('lengths', quick ? [1024, 8192, 65536] : [1024, 2048, 4096, 8192, 16384, 32768, 65536]);
  const ops = new Ops('cuda');
  try {
    for (const L of lengths) {
      const width = di + 2 * G * N;
      const xbc = bf16Tensor([L, width], 1, L);
      const dt = bf16Tensor([L, H], 0.5, L + 1);
      const args = {
        x: xbc.cols(0, di),
        B: xbc.cols(di, di + G * N),
        C: xbc.cols(di + G * N, width),
        dt,
        dt_bias: f32Tensor(Float32Array.from({ length: H }, (_, h) => -2 + h / H), [H]),
        A_log: f32Tensor(Float32Array.from({ length: H }, (_, h) => Math.log(1 + (15 * h) / H)), [H]),
        D: f32Tensor(new Float32Array(H).fill(1), [H]),
      };
      const y = native.empty([L, di], 'bf16', 'cuda', false);
      const state = native.empty([1, H, P, N], 'f32', 'cuda');
      const inner = L <= 8192 ? 10 : 3;
      const s = await timeOps(ops, () => ops.ssdScan(args, y, { batch: 1, groups: G, chunk }, state), inner);
      result.ssd.push({ L, ms: s * 1000, tokensPerSecond: L / s });
      console.log(`  L ${String(L).padStart(6)}: ${(s * 1000).toFixed(3).padStart(9)} ms  ${(L / s / 1e6).toFixed(2)} M tokens/s`);
      for (const t of [xbc, dt, y, state, args.dt_bias, args.A_log, args.D]) t.dispose();
    }
  } finally {
    ops.dispose();
  }
  save();
}

async function benchGemm(): Promise<void> {
  const cfg = getPreset('mamba2-1.3b');
  const { d_model: d, d_inner: di, d_in_proj: dip, vocab_padded: V } = cfg;
  const shapes: [string, number, number, number][] = [];
  for (const n of numbers('squares', quick ? [4096] : [1024, 2048, 4096, 8192])) shapes.push([`square ${n}`, n, n, n]);
  for (const M of numbers('rows', quick ? [1, 2048] : [1, 16, 512, 2048]).filter((m) => m > 0)) {
    shapes.push([`1.3b in_proj`, M, dip, d], [`1.3b out_proj`, M, d, di], [`1.3b lm_head`, M, V, d]);
  }
  // Which prefill kernel the device runs (TAIPAN_CUDA_WGMMA=0 forces the sm_80 one, to compare).
  console.log(`\nGEMM (linear: bf16 x and W, fp32 accumulation); prefill kernel: ${info.cuda.prefillGemm ?? 'unknown'}`);
  const ops = new Ops('cuda');
  try {
    for (const [what, M, N, K] of shapes) {
      const x = bf16Tensor([M, K], 1, M + K);
      const W = bf16Tensor([N, K], 0.02, N + K);
      for (const out of ['bf16', 'f32'] as const) {
        if (out === 'f32' && !what.includes('lm_head') && !what.startsWith('square')) continue;
        const y = native.empty([M, N], out, 'cuda', false);
        const flops = 2 * M * N * K;
        const inner = Math.max(3, Math.min(200, Math.round(2e12 / flops)));
        const s = await timeOps(ops, () => ops.linear(x, W, y), inner);
        const row: GemmRow = { what, M, N, K, out, ms: s * 1000, tflops: flops / s / 1e12 };
        result.gemm.push(row);
        console.log(`  ${what.padEnd(14)} M ${String(M).padStart(5)} N ${String(N).padStart(5)} K ${String(K).padStart(5)} -> ${out.padEnd(4)}: ${(s * 1000).toFixed(3).padStart(9)} ms  ${row.tflops.toFixed(1).padStart(6)} TFLOP/s`);
        y.dispose();
      }
      x.dispose();
      W.dispose();
    }
  } finally {
    ops.dispose();
  }
  save();
}

async function benchDecode(): Promise<void> {
  console.log('\nDecode (random bf16 weights, 16-token prompt)');
  const cache = option('cache') ?? join(tmpdir(), 'taipan-bench');
  for (const preset of presets) {
    const given = preset.includes('/');
    const cfg = given ? loadConfig(preset) : getPreset(preset);
    const dir = given ? preset : join(cache, `${preset}-bf16-seed0`);
    if (!given && !existsSync(join(dir, 'model.safetensors'))) {
      console.log(`  writing a random ${preset} checkpoint to ${dir} ...`);
      await createRandomModel(cfg, dir, { seed: 0, dtype: 'bf16' });
    }
    const model = await CausalLM.load(dir, { backend: 'cuda' });
    try {
      for (const batch of batches) {
        const prompts = Array.from({ length: batch }, (_, b) => Array.from({ length: 16 }, (_, i) => (b * 131 + i * 17) % cfg.vocab_size));
        const { states } = await model.prefill(prompts);
        let tokens = prompts.map((p) => p[p.length - 1]!);
        const step = async () => {
          const logits = await model.step(tokens, states);
          // The next tokens depend on the output, as in real decoding (cheap: one value per row).
          tokens = tokens.map((t, b) => (t * 7 + (logits[b * cfg.vocab_padded + t]! > 0 ? 1 : 2)) % cfg.vocab_size);
        };
        const steps = numbers('steps', [quick ? 16 : 64])[0]!;
        for (let i = 0; i < Math.min(4, steps); i++) await step(); // warm-up: graph capture, scratch, cache
        const mallocs = cudaMemory().deviceMallocs;
        const runs: number[] = [];
        for (let r = 0; r < (quick ? 1 : 3); r++) {
          const t0 = performance.now();
          for (let i = 0; i < steps; i++) await step();
          runs.push((performance.now() - t0) / steps);
        }
        const ms = median(runs);
        if (cudaMemory().deviceMallocs !== mallocs) result.notes.push(`${preset} batch ${batch}: cudaMalloc was called during the timed decode steps`);
        result.decode.push({ preset, batch, steps, msPerStep: ms, tokensPerSecond: (batch * 1000) / ms });
        console.log(`  ${preset.padEnd(12)} batch ${String(batch).padStart(2)}: ${ms.toFixed(3).padStart(8)} ms/step  ${((batch * 1000) / ms).toFixed(0).padStart(7)} tokens/s`);
        for (const s of states) s.dispose();
      }
    } finally {
      model.dispose();
    }
    save();
  }
}

if (only.has('ssd')) await benchSsd();
if (only.has('gemm')) await benchGemm();
if (only.has('decode')) await benchDecode();
save();
console.log(`\nwrote ${jsonPath}`);
