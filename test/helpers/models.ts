// Shared test fixtures: small seeded configs written as real checkpoint directories, and
// their weights as float64 for the reference.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { parseConfig, type ModelConfig } from '../../lib/config.js';
import { createRandomModel, randomWeights } from '../../lib/models/random.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../lib/dtype.js';

export function smallMamba2Config(over: Record<string, unknown> = {}, ssm: Record<string, unknown> = {}): ModelConfig {
  return parseConfig({
    model_type: 'mamba2',
    d_model: 64,
    n_layer: 4,
    vocab_size: 100,
    pad_vocab_size_multiple: 16,
    tie_embeddings: true,
    ssm: { d_state: 16, d_conv: 4, expand: 2, headdim: 16, ngroups: 2, chunk_size: 8, ...ssm },
    ...over,
  });
}

export function tempDir(prefix = 'taipan-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Write a random checkpoint; also return its weights exactly as stored, in float64. */
export function writeModel(cfg: ModelConfig, dir: string, seed = 1, dtype: 'f32' | 'f16' | 'bf16' = 'f32') {
  createRandomModel(cfg, dir, { seed, dtype });
  const weights = new Map<string, Float64Array>();
  for (const [name, { data }] of randomWeights(cfg, seed)) {
    const stored = dtype === 'f32' ? data : dtype === 'bf16' ? bf16ToF32(f32ToBf16(data)) : f16ToF32(f32ToF16(data));
    weights.set(name, Float64Array.from(stored));
  }
  return weights;
}

/** Max |a - b| divided by the RMS of b: the spec's relative measure for logits. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let max = 0;
  let ss = 0;
  for (let i = 0; i < b.length; i++) {
    max = Math.max(max, Math.abs(a[i]! - b[i]!));
    ss += b[i]! * b[i]!;
  }
  const rms = Math.sqrt(ss / Math.max(1, b.length));
  return Number.isNaN(max) ? Infinity : max / (rms || 1);
}
