// The whole Taipan model (Mamba-2 blocks + Selective Attention Layers) on the CPU against the
// float64 reference (test/reference/model.ts), for every SAL option, and its invariants:
// chunked prefill == one-shot prefill == token-by-token decode, a batch == its sequences alone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ConfigError, parseConfig, type ModelConfig } from '../lib/config.js';
import { randomTokenIds } from '../lib/models/random.js';
import { TaipanModel } from '../lib/models/taipan.js';
import { expectBatchEqualsAlone, expectChunkedEqualsDecode } from './helpers/invariants.js';
import { cpuModels, dropTensor, relError, smallTaipanConfig, tokenIds, writeModel } from './helpers/models.js';
import { initialState, referenceForward } from './reference/model.js';
import type { RefConfig } from './reference/types.js';

const ref = (c: ModelConfig) => c as unknown as RefConfig;

const { build, buildChunkedAndOneShot, scratchDir } = cpuModels(TaipanModel);

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
        const seq = tokenIds(45, n);
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
      const seqs = [tokenIds(12, 1), tokenIds(12, 2), tokenIds(12, 3)];
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
  const seq = tokenIds(50, 9);
  beforeAll(async () => {
    ({ model, oneShot } = await buildChunkedAndOneShot(cfg, 41, 6));
  });
  afterAll(() => [model, oneShot].forEach((m) => m.dispose()));

  it('chunked prefill == one-shot prefill == token-by-token decode, across window boundaries', async () => {
    expect(await expectChunkedEqualsDecode(model, oneShot, seq)).toBe(seq.length);
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
    await expectBatchEqualsAlone(model, [tokenIds(23, 1), tokenIds(23, 2), tokenIds(23, 3)]);
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
        const seq = tokenIds(21, 4);
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
        const seq = tokenIds(9, s);
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
    const dir = scratchDir();
    await writeModel(cfg, dir.dir, 60);
    dropTensor(dir.dir, 'backbone.layers.6.mixer.q_proj.weight');
    await expect(TaipanModel.load(dir.dir, { backend: 'cpu' })).rejects.toThrow(/backbone\.layers\.6\.mixer\.q_proj\.weight/);
  });
});
