// The whole Mamba-2 model on the CPU backend against the float64 reference, and the
// invariants of its state handling.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Mamba2Model } from '../lib/models/mamba2.js';
import { argmax } from '../lib/models/causal_lm.js';
import { referenceForward } from './reference/model.js';
import type { RefConfig } from './reference/types.js';
import { relError, smallMamba2Config, tempDir, writeModel } from './helpers/models.js';

const cfg = smallMamba2Config();
const refCfg = cfg as unknown as RefConfig;
const tmp = tempDir();
let weights: Map<string, Float64Array>;
let model: Mamba2Model;

function ids(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => (seed * 31 + i * 17 + ((i * i) % 7)) % cfg.vocab_size);
}

beforeAll(async () => {
  weights = await writeModel(cfg, tmp.dir, 7);
  model = await Mamba2Model.load(tmp.dir, { backend: 'cpu', prefillChunk: 7 });
});
afterAll(() => {
  model.dispose();
  tmp.cleanup();
});

describe('Mamba2Model on the CPU', () => {
  it('gives the reference logits at every position (prompt longer than the SSD chunk and the prefill chunk)', async () => {
    const seq = ids(29, 1);
    const { logits, vocab } = await model.prefill(seq, { logits: 'all' });
    expect(vocab).toBe(cfg.vocab_padded);
    const want = referenceForward(refCfg, weights, [seq], null).logits;
    expect(relError(logits, want)).toBeLessThan(1e-4);
  });

  it('gives the reference logits for a one-token prompt and for the last position only', async () => {
    const one = await model.prefill([5]);
    expect(relError(one.logits, referenceForward(refCfg, weights, [[5]], null).logits)).toBeLessThan(1e-4);
    const seq = ids(12, 2);
    const last = await model.prefill(seq);
    const all = referenceForward(refCfg, weights, [seq], null).logits;
    expect(relError(last.logits, all.subarray(11 * cfg.vocab_padded))).toBeLessThan(1e-4);
  });

  it('a batch gives what each sequence gives alone', async () => {
    const seqs = [ids(10, 3), ids(10, 4), ids(10, 5)];
    const batch = await model.prefill(seqs, { logits: 'all' });
    const V = cfg.vocab_padded;
    for (let b = 0; b < 3; b++) {
      const alone = await model.prefill(seqs[b]!, { logits: 'all' });
      expect(relError(batch.logits.subarray(b * 10 * V, (b + 1) * 10 * V), alone.logits)).toBeLessThan(1e-5);
    }
    for (const s of batch.states) s.dispose();
  });

  it('prefill(L) == prefill(L - k) then k decode steps, for a batch', async () => {
    const L = 20;
    const k = 6;
    const seqs = [ids(L, 6), ids(L, 7)];
    const V = cfg.vocab_padded;
    const whole = await model.prefill(seqs, { logits: 'all' });
    const head = await model.prefill(seqs.map((s) => s.slice(0, L - k)));
    for (let i = L - k; i < L; i++) {
      const step = await model.step(seqs.map((s) => s[i]!), head.states);
      for (let b = 0; b < 2; b++) {
        const want = whole.logits.subarray((b * L + i) * V, (b * L + i + 1) * V);
        expect(relError(step.subarray(b * V, (b + 1) * V), want)).toBeLessThan(1e-4);
      }
    }
    expect(head.states[0]!.position).toBe(L);
    for (const s of [...whole.states, ...head.states]) s.dispose();
  });

  it('greedy generation follows the reference token by token', async () => {
    const prompt = ids(9, 8);
    const got = await model.generateGreedy(prompt, { maxTokens: 8 });
    const seq = [...prompt];
    const want: number[] = [];
    for (let i = 0; i < 8; i++) {
      const logits = referenceForward(refCfg, weights, [seq], null).logits;
      const next = argmax(Float32Array.from(logits.subarray((seq.length - 1) * cfg.vocab_padded)), cfg.vocab_size);
      want.push(next);
      seq.push(next);
    }
    expect(got).toEqual(want);
  });

  it('decode steps replayed from a captured graph equal uncaptured steps, also when the states change', async () => {
    const plain = await Mamba2Model.load(tmp.dir, { backend: 'cpu', graphs: false });
    try {
      const [a1, a2] = [model.createState(), model.createState()];
      const [b1, b2] = [plain.createState(), plain.createState()];
      await model.prefill([ids(5, 1), ids(5, 2)], { states: [a1, a2] });
      await plain.prefill([ids(5, 1), ids(5, 2)], { states: [b1, b2] });
      // Same states again and again (replay), then others (a new capture), then a batch.
      const plan: [number[], number[]][] = [[[3], [0]], [[4], [0]], [[5], [1]], [[6], [0]], [[7, 8], [0, 1]], [[9, 10], [0, 1]]];
      for (const [toks, which] of plan) {
        const got = await model.step(toks, which.map((w) => [a1, a2][w]!));
        const want = await plain.step(toks, which.map((w) => [b1, b2][w]!));
        expect(relError(got, want)).toBeLessThan(1e-6);
      }
      for (const s of [a1, a2, b1, b2]) s.dispose();
    } finally {
      plain.dispose();
    }
  });

  it('rejects bad ids, bad states and use after dispose with clear errors', async () => {
    await expect(model.prefill([1, cfg.vocab_size])).rejects.toThrow(/token id 100 \(sequence 0, position 1\) is out of range \[0, 100\)/);
    await expect(model.prefill([1, -2])).rejects.toThrow(/out of range/);
    await expect(model.prefill([1, 2.5])).rejects.toThrow(/out of range/);
    await expect(model.prefill([])).rejects.toThrow(/at least one token/);
    await expect(model.prefill([[1, 2], [3]])).rejects.toThrow(/same length/);
    const s = model.createState();
    await expect(model.step([1, 2], [s])).rejects.toThrow(/expected 2 states/);
    await expect(model.step([1, 2], [s, s])).rejects.toThrow(/same state appears twice/);
    s.dispose();
    await expect(model.step([1], [s])).rejects.toThrow(/was disposed/);
  });
});

describe('checkpoints', () => {
  it('loads bf16 and f16 checkpoints and matches the reference on the stored weights', async () => {
    for (const dtype of ['bf16', 'f16'] as const) {
      const dir = tempDir();
      try {
        const w = await writeModel(cfg, dir.dir, 11, dtype);
        const m = await Mamba2Model.load(dir.dir, { backend: 'cpu' });
        const seq = ids(15, 9);
        const { logits } = await m.prefill(seq, { logits: 'all' });
        expect(relError(logits, referenceForward(refCfg, w, [seq], null).logits)).toBeLessThan(1e-4);
        m.dispose();
      } finally {
        dir.cleanup();
      }
    }
  });

  it('converts f32 weights to bf16 at load when asked (weightDtype)', async () => {
    const m = await Mamba2Model.load(tmp.dir, { backend: 'cpu', weightDtype: 'bf16' });
    const seq = ids(10, 10);
    const { logits } = await m.prefill(seq, { logits: 'all' });
    const exact = referenceForward(refCfg, weights, [seq], null).logits;
    const err = relError(logits, exact);
    expect(err).toBeGreaterThan(1e-6); // it really is rounded
    expect(err).toBeLessThan(5e-2);
    m.dispose();
  });

  it('loads an untied LM head and the transformers embedding alias', async () => {
    const untied = smallMamba2Config({ tie_embeddings: false });
    const dir = tempDir();
    try {
      const w = await writeModel(untied, dir.dir, 12);
      const m = await Mamba2Model.load(dir.dir, { backend: 'cpu' });
      const seq = ids(6, 11);
      const { logits } = await m.prefill(seq, { logits: 'all' });
      expect(relError(logits, referenceForward(untied as unknown as RefConfig, w, [seq], null).logits)).toBeLessThan(1e-4);
      m.dispose();
    } finally {
      dir.cleanup();
    }
  });

  it('names the problem in a bad checkpoint', async () => {
    const { writeSafetensors, SafetensorsFile } = await import('../lib/safetensors.js');
    const dir = tempDir();
    try {
      await writeModel(cfg, dir.dir, 13);
      const file = join(dir.dir, 'model.safetensors');
      const src = SafetensorsFile.open(file);
      const all = src.names().map((n) => ({ name: n, ...src.read(n) }));
      src.close();
      const rewrite = (edit: (t: (typeof all)[number][]) => (typeof all)[number][]) =>
        writeSafetensors(file, edit(all).map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: t.bytes })));

      rewrite((ts) => ts.filter((t) => t.name !== 'backbone.layers.2.mixer.A_log'));
      await expect(Mamba2Model.load(dir.dir, { backend: 'cpu' })).rejects.toThrow(/missing tensor backbone\.layers\.2\.mixer\.A_log/);

      rewrite((ts) => ts.map((t) => (t.name === 'backbone.layers.1.mixer.out_proj.weight' ? { ...t, shape: [cfg.d_inner, cfg.d_model] } : t)));
      await expect(Mamba2Model.load(dir.dir, { backend: 'cpu' })).rejects.toThrow(/out_proj\.weight has shape \[128, 64\], but the config needs \[64, 128\]/);

      rewrite((ts) => ts);
      const { truncateSync, statSync } = await import('node:fs');
      truncateSync(file, statSync(file).size - 100);
      await expect(Mamba2Model.load(dir.dir, { backend: 'cpu' })).rejects.toThrow(/truncated/);

      writeFileSync(join(dir.dir, 'config.json'), JSON.stringify({ model_type: 'mamba2', d_model: 64, n_layer: 2 }));
      await expect(Mamba2Model.load(dir.dir, { backend: 'cpu' })).rejects.toThrow(/vocab_size/);
    } finally {
      dir.cleanup();
    }
  });
});
