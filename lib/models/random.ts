// Random checkpoints: a valid model directory (config.json + model.safetensors) with seeded
// random weights, for tests, benchmarks and the embedded default (no download needed).
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { configToJson, ffnKind, type ModelConfig } from '../config.js';
import { bytesToF32, f32ToBf16, f32ToDType, f32ToF16 } from '../dtype.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../safetensors.js';
import { CausalLM } from './causal_lm.js';

export interface RandomModelOptions {
  seed?: number;
  /** Storage dtype of every tensor in the file (default f32). */
  dtype?: 'f32' | 'f16' | 'bf16';
  /** Random tokens used to calibrate each SAL's gate bias (default 2048). */
  calibrationTokens?: number;
}

/** A small, fast, seeded generator (mulberry32): the same seed gives the same weights. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(n: number, lo: number, hi: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * this.next();
    return out;
  }
  /** Standard normal values (Box-Muller). */
  normal(n: number, std = 1, mean = 0): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const u = 1 - this.next();
      const r = Math.sqrt(-2 * Math.log(u)) * std;
      const a = 2 * Math.PI * this.next();
      out[i] = mean + r * Math.cos(a);
      if (i + 1 < n) out[i + 1] = mean + r * Math.sin(a);
    }
    return out;
  }
}

/**
 * n token ids in [0, vocab) from a seeded linear congruential generator: the reproducible
 * "random prompt" of the benchmarks and tests (cheap, and the same on every platform).
 */
export function randomTokenIds(n: number, vocab: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) % vocab);
}

/** The tensors of a random model with this config, in checkpoint order (spec section 3). */
export function randomWeights(cfg: ModelConfig, seed = 0): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  let stream = 0;
  // Each tensor has its own generator, so adding a tensor never changes the others.
  const rng = () => new Rng((seed * 0x9e3779b1) ^ (++stream * 0x85ebca6b));
  const put = (name: string, shape: number[], data: Float32Array) => out.set(name, { shape, data });
  const n = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
  // nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  const linear = (shape: number[], scale = 1) => {
    const b = scale / Math.sqrt(shape[1]!);
    return rng().uniform(n(shape), -b, b);
  };
  const near = (len: number, center: number, spread: number) => rng().uniform(len, center - spread, center + spread);

  const { d_model: d, vocab_padded: V, d_inner: di, nheads: H, conv_dim: cd, d_in_proj: dip } = cfg;
  // A SAL (spec section 6). Its gate bias starts at zero; createRandomModel calibrates it.
  const putSal = (p: string) => {
    const { n_heads, head_dim, d_ff } = cfg.sal!;
    const hd = n_heads * head_dim;
    put(`${p}.norm.weight`, [d], near(d, 1, 0.1));
    put(`${p}.mixer.gate.weight`, [2, d], linear([2, d]));
    put(`${p}.mixer.gate.bias`, [2], new Float32Array(2));
    put(`${p}.mixer.q_proj.weight`, [hd, d], linear([hd, d]));
    put(`${p}.mixer.k_proj.weight`, [hd, d], linear([hd, d]));
    put(`${p}.mixer.v_proj.weight`, [hd, d], linear([hd, d]));
    put(`${p}.mixer.o_proj.weight`, [d, hd], linear([d, hd], 1 / Math.sqrt(cfg.n_layer)));
    put(`${p}.norm2.weight`, [d], near(d, 1, 0.1));
    put(`${p}.mlp.fc1.weight`, [2 * d_ff, d], linear([2 * d_ff, d]));
    put(`${p}.mlp.fc2.weight`, [d, d_ff], linear([d, d_ff], 1 / Math.sqrt(cfg.n_layer)));
  };
  // The FFN after a mixer (spec section 7): a dense SwiGLU, or in the original Jamba a mixture of
  // experts on the layers its "moe" section names.
  const putFfn = (p: string, i: number) => {
    const { d_ff } = cfg.attn!;
    put(`${p}.norm2.weight`, [d], near(d, 1, 0.1));
    const experts = cfg.model_type === 'jamba' && ffnKind(cfg, i) === 'moe' ? cfg.moe!.n_experts : 0;
    if (experts === 0) {
      put(`${p}.mlp.fc1.weight`, [2 * d_ff, d], linear([2 * d_ff, d]));
      put(`${p}.mlp.fc2.weight`, [d, d_ff], linear([d, d_ff], 1 / Math.sqrt(cfg.n_layer)));
      return;
    }
    put(`${p}.moe.router.weight`, [experts, d], linear([experts, d]));
    for (let e = 0; e < experts; e++) {
      put(`${p}.moe.experts.${e}.fc1.weight`, [2 * d_ff, d], linear([2 * d_ff, d]));
      put(`${p}.moe.experts.${e}.fc2.weight`, [d, d_ff], linear([d, d_ff], 1 / Math.sqrt(cfg.n_layer)));
    }
  };
  // A Transformer++ block (spec section 7), initialised as a SAL is.
  const putAttention = (p: string, i: number) => {
    const { n_heads, n_kv_heads, head_dim } = cfg.attn!;
    const hq = n_heads * head_dim;
    const hkv = n_kv_heads * head_dim;
    put(`${p}.norm.weight`, [d], near(d, 1, 0.1));
    put(`${p}.mixer.q_proj.weight`, [hq, d], linear([hq, d]));
    put(`${p}.mixer.k_proj.weight`, [hkv, d], linear([hkv, d]));
    put(`${p}.mixer.v_proj.weight`, [hkv, d], linear([hkv, d]));
    put(`${p}.mixer.o_proj.weight`, [d, hq], linear([d, hq], 1 / Math.sqrt(cfg.n_layer)));
    putFfn(p, i);
  };
  // A Mamba-1 layer of the original Jamba (spec section 7), initialised as mamba_ssm does.
  const putMamba1 = (p: string, i: number) => {
    const { d_state: N, d_conv: K1, expand, dt_rank: R } = cfg.mamba!;
    const di1 = expand * d;
    put(`${p}.norm.weight`, [d], near(d, 1, 0.1));
    put(`${p}.mixer.in_proj.weight`, [2 * di1, d], linear([2 * di1, d]));
    put(`${p}.mixer.conv1d.weight`, [di1, 1, K1], rng().uniform(di1 * K1, -1 / Math.sqrt(K1), 1 / Math.sqrt(K1)));
    put(`${p}.mixer.conv1d.bias`, [di1], rng().uniform(di1, -0.1, 0.1));
    put(`${p}.mixer.x_proj.weight`, [R + 2 * N, di1], linear([R + 2 * N, di1]));
    put(`${p}.mixer.dt_proj.weight`, [di1, R], rng().uniform(di1 * R, -1 / Math.sqrt(R), 1 / Math.sqrt(R)));
    // bias = softplus^-1(dt) for dt log-uniform in [1e-3, 1e-1]; A = -(1..N) per channel (S4D-real).
    const dt = rng().uniform(di1, Math.log(1e-3), Math.log(1e-1)).map(Math.exp);
    put(`${p}.mixer.dt_proj.bias`, [di1], dt.map((v) => v + Math.log(-Math.expm1(-v))));
    put(`${p}.mixer.A_log`, [di1, N], Float32Array.from({ length: di1 * N }, (_, j) => Math.log(1 + (j % N))));
    put(`${p}.mixer.D`, [di1], near(di1, 1, 0.1));
    put(`${p}.mixer.dt_layernorm.weight`, [R], near(R, 1, 0.1));
    put(`${p}.mixer.b_layernorm.weight`, [N], near(N, 1, 0.1));
    put(`${p}.mixer.c_layernorm.weight`, [N], near(N, 1, 0.1));
    put(`${p}.mixer.out_proj.weight`, [d, di1], linear([d, di1], 1 / Math.sqrt(cfg.n_layer)));
    putFfn(p, i);
  };
  const K = cfg.ssm.d_conv;
  put('backbone.embedding.weight', [V, d], rng().normal(V * d, 0.02));
  cfg.layer_types.forEach((kind, i) => {
    const p = `backbone.layers.${i}`;
    if (kind === 'sal') return putSal(p);
    if (kind === 'attention') return putAttention(p, i);
    if (kind === 'mamba1') return putMamba1(p, i);
    put(`${p}.norm.weight`, [d], near(d, 1, 0.1));
    put(`${p}.mixer.in_proj.weight`, [dip, d], linear([dip, d]));
    put(`${p}.mixer.conv1d.weight`, [cd, 1, K], rng().uniform(cd * K, -1 / Math.sqrt(K), 1 / Math.sqrt(K)));
    put(`${p}.mixer.conv1d.bias`, [cd], rng().uniform(cd, -0.1, 0.1));
    // dt_bias = softplus^-1(dt) for dt log-uniform in [1e-3, 1e-1], as Mamba-2 initialises it.
    const dt = rng().uniform(H, Math.log(1e-3), Math.log(1e-1)).map(Math.exp);
    put(`${p}.mixer.dt_bias`, [H], dt.map((v) => v + Math.log(-Math.expm1(-v))));
    put(`${p}.mixer.A_log`, [H], rng().uniform(H, 1, 16).map(Math.log));
    put(`${p}.mixer.D`, [H], near(H, 1, 0.1));
    put(`${p}.mixer.norm.weight`, [di], near(di, 1, 0.1));
    // Scaled down with depth so the residual stream stays O(1) through many layers.
    put(`${p}.mixer.out_proj.weight`, [d, di], linear([d, di], 1 / Math.sqrt(cfg.n_layer)));
  });
  put('backbone.norm_f.weight', [d], near(d, 1, 0.1));
  if (!cfg.tie_embeddings) put('lm_head.weight', [V, d], rng().normal(V * d, 0.02));
  return out;
}

/**
 * Write a random model directory; returns its path. When the model has SALs, each gate bias
 * is then calibrated so that the SAL selects the configured capacity C of random tokens.
 */
export async function createRandomModel(cfg: ModelConfig, dir: string, opts: RandomModelOptions = {}): Promise<string> {
  const dtype = opts.dtype ?? 'f32';
  const weights = randomWeights(cfg, opts.seed ?? 0);
  const tensors: TensorToWrite[] = [...weights].map(([name, { shape, data }]) => ({
    name,
    dtype,
    shape,
    data: dtype === 'f32' ? data : dtype === 'bf16' ? f32ToBf16(data) : f32ToF16(data),
  }));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configToJson(cfg), null, 2) + '\n');
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt', generator: 'taipan createRandomModel' });
  if (cfg.layer_types.includes('sal')) await calibrateGates(cfg, dir, opts);
  return dir;
}

/**
 * Set each SAL's gate bias so that it selects the fraction C = sal.capacity of random tokens
 * (spec section 6). SALs are calibrated in order, each on the inputs it sees once the earlier
 * ones are calibrated: run the model on random tokens, collect the SAL's gate logit differences
 * s1 - s0, and shift b1 so that exactly a fraction C of them is positive. The new bias is
 * written into the checkpoint in place.
 */
async function calibrateGates(cfg: ModelConfig, dir: string, opts: RandomModelOptions): Promise<void> {
  const C = cfg.sal!.capacity;
  const n = opts.calibrationTokens ?? 2048;
  const rng = new Rng(((opts.seed ?? 0) ^ 0x5a1ca11b) >>> 0);
  const tokens = Array.from({ length: n }, () => Math.floor(rng.next() * cfg.vocab_size));
  const file = join(dir, 'model.safetensors');
  const model = await CausalLM.load(dir, { backend: 'cpu' });
  try {
    for (const sal of model.sals) {
      sal.captureGate = [];
      const { states } = await model.prefill(tokens);
      for (const s of states) s.dispose();
      const diffs = Float64Array.from(sal.captureGate).sort();
      sal.captureGate = null;
      // A threshold with a fraction C of the differences above it, halfway between neighbours.
      const k = Math.min(n, Math.max(0, Math.round((1 - C) * n)));
      const below = k > 0 ? diffs[k - 1]! : diffs[0]! - 1;
      const above = k < n ? diffs[k]! : diffs[n - 1]! + 1;
      const threshold = (below + above) / 2;
      const [b0, b1] = sal.gateBias();
      const name = `backbone.layers.${sal.index}.mixer.gate.bias`;
      const stored = writeBias(file, name, [b0, b1 - threshold]);
      sal.setGateBias(stored);
    }
  } finally {
    model.dispose();
  }
}

/** Overwrite a small tensor's bytes in a safetensors file; returns the values as stored. */
function writeBias(file: string, name: string, values: [number, number]): [number, number] {
  const st = SafetensorsFile.open(file);
  let offset: number;
  let dtype;
  try {
    offset = st.locate(name).offset;
    dtype = st.info(name).dtype;
  } finally {
    st.close();
  }
  const encoded = f32ToDType(dtype, Float32Array.from(values));
  const bytes = new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.byteLength);
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.byteLength, offset);
  } finally {
    closeSync(fd);
  }
  const back = bytesToF32(dtype, bytes);
  return [back[0]!, back[1]!];
}
