// Random checkpoints: a valid model directory (config.json + model.safetensors) with seeded
// random weights, for tests, benchmarks and the embedded default (no download needed).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { configToJson, type ModelConfig } from '../config.js';
import { f32ToBf16, f32ToF16 } from '../dtype.js';
import { writeSafetensors, type TensorToWrite } from '../safetensors.js';

export interface RandomModelOptions {
  seed?: number;
  /** Storage dtype of every tensor in the file (default f32). */
  dtype?: 'f32' | 'f16' | 'bf16';
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
  const K = cfg.ssm.d_conv;
  put('backbone.embedding.weight', [V, d], rng().normal(V * d, 0.02));
  cfg.layer_types.forEach((kind, i) => {
    const p = `backbone.layers.${i}`;
    if (kind !== 'mamba2') throw new Error(`createRandomModel: layer ${i} is "${kind}"; only mamba2 layers can be generated yet`);
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

/** Write a random model directory; returns its path. */
export function createRandomModel(cfg: ModelConfig, dir: string, opts: RandomModelOptions = {}): string {
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
  return dir;
}
