// Shared test fixtures: small seeded configs written as real checkpoint directories, and
// their weights as float64 for the reference.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

import { parseConfig, type ModelConfig } from '../../lib/config.js';
import type { DTypeName } from '../../lib/dtype.js';
import type { LoadOptions } from '../../lib/models/causal_lm.js';
import { createRandomModel } from '../../lib/models/random.js';
import { openCheckpoint, SafetensorsFile, writeSafetensors } from '../../lib/safetensors.js';

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
export async function writeModel(cfg: ModelConfig, dir: string, seed = 1, dtype: 'f32' | 'f16' | 'bf16' = 'f32', calibrationTokens?: number) {
  await createRandomModel(cfg, dir, { seed, dtype, calibrationTokens });
  return readWeights(dir);
}

/** `n` token ids below `vocab`: a fixed, non-repeating pattern that differs for every seed. */
export function tokenIds(n: number, seed: number, vocab = 100): number[] {
  return Array.from({ length: n }, (_, i) => (seed * 37 + i * 13 + ((i * i) % 11)) % vocab);
}

/**
 * Random CPU models for one test file, from a model class (TaipanModel, JambaModel, ...):
 * build() writes a random checkpoint of `cfg` into a fresh temporary directory and loads it,
 * buildChunkedAndOneShot() loads it twice, scratchDir() is another temporary directory. Call
 * it at the top of a file: every directory is removed after the file's tests (afterAll).
 */
export function cpuModels<M>(Model: { load(dir: string, opts: LoadOptions): Promise<M> }) {
  const dirs: { cleanup(): void }[] = [];
  afterAll(() => dirs.forEach((d) => d.cleanup()));
  function scratchDir(): { dir: string; cleanup: () => void } {
    const d = tempDir();
    dirs.push(d);
    return d;
  }
  async function build(cfg: ModelConfig, seed: number, opts: { prefillChunk?: number } = {}) {
    const { dir } = scratchDir();
    const weights = await writeModel(cfg, dir, seed);
    const model = await Model.load(dir, { backend: 'cpu', ...opts });
    return { dir, weights, model };
  }
  /** For the invariants: one checkpoint loaded as `model` (prefill in pieces) and as `oneShot` (in one). */
  async function buildChunkedAndOneShot(cfg: ModelConfig, seed: number, prefillChunk: number): Promise<{ model: M; oneShot: M }> {
    const { dir, model } = await build(cfg, seed, { prefillChunk });
    const oneShot = await Model.load(dir, { backend: 'cpu', prefillChunk: 1000 });
    return { model, oneShot };
  }
  return { build, buildChunkedAndOneShot, scratchDir };
}

/** Every tensor of a checkpoint directory as float64, exactly as stored. */
export function readWeights(dir: string): Map<string, Float64Array> {
  const src = openCheckpoint(dir);
  try {
    const weights = new Map<string, Float64Array>();
    for (const name of src.names()) weights.set(name, Float64Array.from(src.readF32(name).data));
    return weights;
  } finally {
    src.close();
  }
}

/** A tensor of a checkpoint file: its raw bytes as stored. */
export interface StoredTensor {
  name: string;
  dtype: DTypeName;
  shape: number[];
  data: Uint8Array;
}

/**
 * Rewrite the model.safetensors of checkpoint `dir` tensor by tensor (to make a bad checkpoint):
 * `edit` returns the tensor to write, as it was or changed, or null to leave it out.
 */
export function rewriteCheckpoint(dir: string, edit: (t: StoredTensor) => StoredTensor | null): void {
  const file = join(dir, 'model.safetensors');
  const src = SafetensorsFile.open(file);
  const kept: StoredTensor[] = [];
  for (const name of src.names()) {
    const t = src.read(name);
    const edited = edit({ name, dtype: t.dtype, shape: t.shape, data: t.bytes });
    if (edited) kept.push(edited);
  }
  src.close();
  writeSafetensors(file, kept);
}

/** Rewrite checkpoint `dir` without the tensor `name`. */
export function dropTensor(dir: string, name: string): void {
  rewriteCheckpoint(dir, (t) => (t.name === name ? null : t));
}

/** A small Taipan: d 64, 7 layers with SALs at 2 and 6, window 16, vocab 100. */
export function smallTaipanConfig(sal: Record<string, unknown> = {}, over: Record<string, unknown> = {}): ModelConfig {
  return parseConfig({
    model_type: 'taipan',
    d_model: 64,
    n_layer: 7,
    layer_types: ['mamba2', 'mamba2', 'sal', 'mamba2', 'mamba2', 'mamba2', 'sal'],
    vocab_size: 100,
    pad_vocab_size_multiple: 16,
    tie_embeddings: true,
    ssm: { d_state: 16, d_conv: 4, expand: 2, headdim: 16, ngroups: 1, chunk_size: 8 },
    sal: { n_heads: 4, head_dim: 16, window: 16, d_ff: 96, capacity: 0.3, ...sal },
    ...over,
  });
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

/** A small Transformer++: d 64, 3 layers, 4 query heads x 16 sharing 2 key/value heads, vocab 100. */
export function smallTransformerConfig(attn: Record<string, unknown> = {}, over: Record<string, unknown> = {}): ModelConfig {
  return parseConfig({
    model_type: 'transformer',
    d_model: 64,
    n_layer: 3,
    vocab_size: 100,
    pad_vocab_size_multiple: 16,
    tie_embeddings: true,
    attn: { n_heads: 4, n_kv_heads: 2, head_dim: 16, d_ff: 96, ...attn },
    ...over,
  });
}

/** A small original Jamba: d 32, 8 layers (attention at 4), MoE of 4 experts top-2 on odd layers. */
export function smallJambaConfig(over: Record<string, unknown> = {}): ModelConfig {
  return parseConfig({
    model_type: 'jamba',
    d_model: 32,
    n_layer: 8,
    vocab_size: 100,
    pad_vocab_size_multiple: 16,
    tie_embeddings: false,
    mamba: { d_state: 8, d_conv: 4, expand: 2 },
    attn: { n_heads: 4, n_kv_heads: 2, head_dim: 8, d_ff: 48 },
    moe: { n_experts: 4, top_k: 2 },
    ...over,
  });
}

/** A small paper-variant Jamba: 7 Mamba-2 layers then RoPE attention, twice. */
export function smallPaperJambaConfig(over: Record<string, unknown> = {}): ModelConfig {
  return parseConfig({
    model_type: 'jamba',
    jamba_variant: 'taipan-paper',
    d_model: 32,
    n_layer: 16,
    vocab_size: 100,
    pad_vocab_size_multiple: 16,
    tie_embeddings: true,
    ssm: { d_state: 8, d_conv: 4, expand: 2, headdim: 16, ngroups: 1, chunk_size: 8 },
    attn: { n_heads: 4, head_dim: 8, d_ff: 48 },
    ...over,
  });
}
