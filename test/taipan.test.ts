// The whole Taipan model (Mamba-2 blocks + Selective Attention Layers) on the CPU against the
// float64 reference (test/reference/model.ts), for every SAL option, and its invariants:
// chunked prefill == one-shot prefill == token-by-token decode, a batch == its sequences alone.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ConfigError, parseConfig, type ModelConfig } from '../lib/config.js';
import { randomTokenIds } from '../lib/models/random.js';
import { TaipanModel } from '../lib/models/taipan.js';
import { relError, smallTaipanConfig, tempDir, writeModel } from './helpers/models.js';
import { initialState, referenceForward } from './reference/model.js';
import type { RefConfig } from './reference/types.js';

function ids(n: number, seed: number, vocab = 100): number[] {
  return Array.from({ length: n }, (_, i) => (seed * 37 + i * 13 + ((i * i) % 11)) % vocab);
}
const ref = (c: ModelConfig) => c as unknown as RefConfig;

const dirs: { cleanup(): void }[] = [];
afterAll(() => dirs.forEach((d) => d.cleanup()));

async function build(cfg: ModelConfig, seed: number, opts: { prefillChunk?: number } = {}) {
  const dir = tempDir();
  dirs.push(dir);
  const weights = await writeModel(cfg, dir.dir, seed);
  const model = await TaipanModel.load(dir.dir, { backend: 'cpu', ...opts });
  return { dir: dir.dir, weights, model };
}

const variants = [
  { kv: 'all', mix: 'residual', rope: null },
  { kv: 'selected', mix: 'residual', rope: null },
  { kv: 'all', mix: 'normalized', rope: null },
  { kv: 'selected', mix: 'normalized', rope: { theta: 10000 } },
  { kv: 'all', mix: 'residual', rope: { theta: 500 } },
] as const;

describe('TaipanModel vs the reference', () => {
  for (const [n, v] of variants.entries()) {
    it(`logits at every position: kv ${v.kv}, mix ${v.mix}, rope ${v.rope ? v.rope.theta : 'none'}`, async () => {
      const cfg = smallTaipanConfig({ ...v });
      // prefill chunk 7 and SSD chunk 8: the prompt (45 tokens) crosses both and the window (16).
      const { weights, model } = await build(cfg, 20 + n, { prefillChunk: 7 });
      try {
        const seq = ids(45, n);
        const got = await model.prefill(seq, { logits: 'all' });
        const want = referenceForward(ref(cfg), weights, [seq], null);
        expect(relError(got.logits, want.logits)).toBeLessThan(1e-4);
        // The reported selection is the reference's, SAL by SAL.
        expect(got.selection.map((s) => s.layer)).toEqual([2, 6]);
        for (const s of got.selection) {
          expect(s.tokens).toBe(45);
          expect(s.fraction).toBeCloseTo(want.selectedFractions.get(s.layer)!, 12);
        }
        // Something was selected and something was not, so both paths ran.
        for (const f of want.selectedFractions.values()) {
          expect(f).toBeGreaterThan(0);
          expect(f).toBeLessThan(1);
        }
      } finally {
        model.dispose();
      }
    });
  }

  it('a batch of 3 with carried states, then decode steps, matches the reference', async () => {
    const cfg = smallTaipanConfig({ kv: 'selected', rope: { theta: 10000 } });
    const { weights, model } = await build(cfg, 31, { prefillChunk: 5 });
    try {
      const seqs = [ids(12, 1), ids(12, 2), ids(12, 3)];
      const first = await model.prefill(seqs, { logits: 'all' });
      const refFirst = referenceForward(ref(cfg), weights, seqs, initialState(ref(cfg), 3));
      expect(relError(first.logits, refFirst.logits)).toBeLessThan(1e-4);
      let refState = refFirst.state;
      // 20 decode steps: every sequence crosses the window (16) boundary.
      for (let s = 0; s < 20; s++) {
        const toks = [s % 100, (s * 7) % 100, (s * 13 + 5) % 100];
        const got = await model.step(toks, first.states);
        const want = referenceForward(ref(cfg), weights, toks.map((t) => [t]), refState);
        refState = want.state;
        expect(relError(got, want.logits)).toBeLessThan(1e-4);
      }
      first.states.forEach((s) => s.dispose());
    } finally {
      model.dispose();
    }
  });
});

describe('TaipanModel invariants', () => {
  let model: TaipanModel;
  let oneShot: TaipanModel;
  const cfg = smallTaipanConfig({ window: 16 });
  const seq = ids(50, 9);
  beforeAll(async () => {
    const built = await build(cfg, 41, { prefillChunk: 6 });
    model = built.model;
    oneShot = await TaipanModel.load(built.dir, { backend: 'cpu', prefillChunk: 1000 });
  });
  afterAll(() => {
    model.dispose();
    oneShot.dispose();
  });

  it('chunked prefill == one-shot prefill == token-by-token decode, across window boundaries', async () => {
    const chunked = await model.prefill(seq, { logits: 'all' });
    const whole = await oneShot.prefill(seq, { logits: 'all' });
    expect(relError(chunked.logits, whole.logits)).toBeLessThan(1e-5);

    const V = cfg.vocab_padded;
    const state = model.createState();
    const first = await model.prefill(seq.slice(0, 1), { states: [state] });
    expect(relError(first.logits, whole.logits.subarray(0, V))).toBeLessThan(1e-5);
    for (let t = 1; t < seq.length; t++) {
      const row = await model.step([seq[t]!], [state]);
      expect(relError(row, whole.logits.subarray(t * V, (t + 1) * V))).toBeLessThan(1e-5);
    }
    expect(state.position).toBe(seq.length);
    state.dispose();
  });

  it('prefill of a prefix, then the rest as a second prefill, equals one prefill', async () => {
    const whole = await oneShot.prefill(seq, { logits: 'last' });
    for (const cut of [1, 15, 16, 17, 33]) {
      const a = await model.prefill(seq.slice(0, cut));
      const b = await model.prefill(seq.slice(cut), { states: a.states });
      expect(relError(b.logits, whole.logits)).toBeLessThan(1e-5);
      a.states.forEach((s) => s.dispose());
    }
  });

  it('a batch equals each sequence run alone', async () => {
    const seqs = [ids(23, 1), ids(23, 2), ids(23, 3)];
    const batch = await model.prefill(seqs, { logits: 'all' });
    const V = cfg.vocab_padded;
    for (let b = 0; b < 3; b++) {
      const alone = await model.prefill(seqs[b]!, { logits: 'all' });
      expect(relError(batch.logits.subarray(b * 23 * V, (b + 1) * 23 * V), alone.logits)).toBeLessThan(1e-5);
      alone.states.forEach((s) => s.dispose());
    }
    batch.states.forEach((s) => s.dispose());
  });

  it('reports the selection of every forward, and the totals', async () => {
    model.resetSelection();
    const r = await model.prefill(seq);
    expect(model.totalSelection.map((s) => s.tokens)).toEqual([50, 50]);
    expect(model.totalSelection.map((s) => s.selected)).toEqual(r.selection.map((s) => s.selected));
    await model.step([3], r.states);
    expect(model.lastSelection.map((s) => s.tokens)).toEqual([1, 1]);
    expect(model.totalSelection.map((s) => s.tokens)).toEqual([51, 51]);
    r.states.forEach((s) => s.dispose());
  });
});

describe('selection edge cases', () => {
  it('none selected and all selected both match the reference', async () => {
    const cfg = smallTaipanConfig({ window: 4 });
    const { weights, model } = await build(cfg, 51, { prefillChunk: 9 });
    try {
      for (const bias of [-1000, 1000]) {
        for (const sal of model.sals) {
          sal.setGateBias([0, bias]);
          weights.set(`backbone.layers.${sal.index}.mixer.gate.bias`, Float64Array.from([0, bias]));
        }
        const seq = ids(21, 4);
        const got = await model.prefill(seq, { logits: 'all' });
        const want = referenceForward(ref(cfg), weights, [seq], null);
        expect(relError(got.logits, want.logits)).toBeLessThan(1e-4);
        for (const s of got.selection) expect(s.fraction).toBe(bias > 0 ? 1 : 0);
      }
    } finally {
      model.dispose();
    }
  });

  it('selections at the first and the last position, window larger than the prompt', async () => {
    const cfg = smallTaipanConfig({ window: 64 });
    const { weights, model } = await build(cfg, 52);
    try {
      // Find prompts whose first SAL selects position 0 and position L-1.
      let checked = 0;
      for (let s = 0; s < 40 && checked < 2; s++) {
        const seq = ids(9, s);
        const want = referenceForward(ref(cfg), weights, [seq], null);
        const m = want.masks.get(2)!;
        if (!(m[0] && m[8])) continue;
        const got = await model.prefill(seq, { logits: 'all' });
        expect(relError(got.logits, want.logits)).toBeLessThan(1e-4);
        checked++;
      }
      expect(checked).toBeGreaterThan(0);
    } finally {
      model.dispose();
    }
  });

  it('random initialisation calibrates the gate to the capacity C within 0.03', async () => {
    const cfg = smallTaipanConfig({ capacity: 0.15 });
    const { model } = await build(cfg, 53);
    try {
      // Fresh random tokens, not the calibration ones.
      const seq = randomTokenIds(3000, cfg.vocab_size, 12345);
      const r = await model.prefill(seq);
      for (const sel of r.selection) expect(Math.abs(sel.fraction - 0.15)).toBeLessThan(0.03);
      r.states.forEach((x) => x.dispose());
    } finally {
      model.dispose();
    }
  });
});

describe('bad configs and checkpoints', () => {
  const base = {
    model_type: 'taipan', d_model: 64, n_layer: 4, sal_every: 3, vocab_size: 100,
    ssm: { d_state: 16, headdim: 16 },
  };
  it('rejects window 0, missing head_dim when heads do not divide d, capacity out of range', () => {
    expect(() => parseConfig({ ...base, sal: { n_heads: 4, window: 0, d_ff: 32 } })).toThrow(/window/);
    expect(() => parseConfig({ ...base, sal: { n_heads: 5, d_ff: 32 } })).toThrow(/head_dim/);
    expect(() => parseConfig({ ...base, sal: { n_heads: 4, d_ff: 32, capacity: 1.5 } })).toThrow(/capacity/);
    expect(() => parseConfig({ ...base })).toThrow(ConfigError);
  });

  it('names a missing SAL tensor', async () => {
    const cfg = smallTaipanConfig();
    const dir = tempDir();
    dirs.push(dir);
    await writeModel(cfg, dir.dir, 60);
    const { SafetensorsFile, writeSafetensors } = await import('../lib/safetensors.js');
    const file = join(dir.dir, 'model.safetensors');
    const src = SafetensorsFile.open(file);
    const kept = src
      .names()
      .filter((n) => n !== 'backbone.layers.6.mixer.q_proj.weight')
      .map((name) => {
        const t = src.read(name);
        return { name, dtype: t.dtype, shape: t.shape, data: t.bytes };
      });
    src.close();
    writeSafetensors(file, kept);
    await expect(TaipanModel.load(dir.dir, { backend: 'cpu' })).rejects.toThrow(/backbone\.layers\.6\.mixer\.q_proj\.weight/);
  });
});
