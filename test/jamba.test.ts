// The Jamba baselines (MODEL.md section 7): the original (Mamba-1 mixers with dt/B/C norms,
// attention without positions, dense and mixture-of-experts FFNs) and the Taipan paper's variant
// (Mamba-2 trunk with full RoPE attention), each against the float64 reference
// test/reference/jamba.ts, with the invariants: chunked prefill == one-shot == token-by-token
// decode, a batch == its sequences alone; and the jamba configs, presets and checkpoints.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ConfigError, PRESETS, configToJson, countParameters, getPreset, parseConfig, type ModelConfig } from '../lib/config.js';
import { CausalLM } from '../lib/models/causal_lm.js';
import { loadModel } from '../lib/generate.js';
import { JambaModel } from '../lib/models/jamba.js';
import { expectBatchEqualsAlone, expectChunkedEqualsDecode, expectGreedyEqualsArgmax } from './helpers/invariants.js';
import { cpuModels, relError, rewriteCheckpoint, smallJambaConfig, smallPaperJambaConfig, tokenIds, writeModel } from './helpers/models.js';
import { jambaForward, type RefJambaConfig } from './reference/jamba.js';

const ref = (c: ModelConfig) => c as unknown as RefJambaConfig;

const { build, buildChunkedAndOneShot, scratchDir } = cpuModels(JambaModel);

/**
 * A JambaModel of `cfg` (random weights from `seed`) prefilling `seq` in pieces of
 * `prefillChunk` tokens gives the reference's logits at every position.
 */
async function expectPrefillMatchesReference(cfg: ModelConfig, seed: number, prefillChunk: number, seq: number[]): Promise<void> {
  const { weights, model } = await build(cfg, seed, { prefillChunk });
  try {
    expect(model).toBeInstanceOf(JambaModel);
    const got = await model.prefill(seq, { logits: 'all' });
    const want = jambaForward(ref(cfg), weights, [seq], null);
    expect(relError(got.logits, want.logits)).toBeLessThan(1e-4);
    got.states.forEach((s) => s.dispose());
  } finally {
    model.dispose();
  }
}

describe('jamba configs', () => {
  it('the original: 1 attention in 8 at index 4, Mamba-1 elsewhere, MoE on odd layers, no RoPE', () => {
    const cfg = smallJambaConfig({ n_layer: 16 });
    expect(cfg.jamba_variant).toBe('original');
    expect(cfg.layer_types.map((t) => (t === 'attention' ? 'A' : 'M')).join('')).toBe('MMMMAMMMMMMMAMMM');
    expect(cfg.mamba).toEqual({ d_state: 8, d_conv: 4, expand: 2, dt_rank: 2 }); // ceil(32 / 16)
    expect(cfg.moe).toEqual({ n_experts: 4, top_k: 2, every: 2, offset: 1 });
    expect(cfg.attn!.rope_theta).toBeNull();
    expect(parseConfig(configToJson(cfg))).toEqual(cfg);
    const dense = smallJambaConfig({ moe: false, attn_offset: 0, attn: { n_heads: 4, head_dim: 8, d_ff: 48, rope_theta: 1000 } });
    expect(dense.moe).toBeUndefined();
    expect(dense.layer_types[0]).toBe('attention');
    expect(dense.attn!.rope_theta).toBe(1000);
    expect(parseConfig(configToJson(dense))).toEqual(dense);
  });

  it('the paper variant: the Taipan trunk with attention after every 7 Mamba-2 layers', () => {
    const cfg = smallPaperJambaConfig();
    expect(cfg.layer_types.map((t) => (t === 'attention' ? 'A' : 'M')).join('')).toBe('MMMMMMMAMMMMMMMA');
    expect(cfg.attn!.rope_theta).toBe(10000);
    expect(parseConfig(configToJson(cfg))).toEqual(cfg);
  });

  it('presets at the Taipan sizes (MODEL.md section 8) and the Jamba-v0.1 shape', () => {
    for (const [name, d, mamba2, attention] of [
      ['jamba-190m', 768, 21, 3],
      ['jamba-450m', 1024, 35, 5],
      ['jamba-1.3b', 2048, 28, 4],
    ] as const) {
      const p = getPreset(name);
      expect(p.d_model).toBe(d);
      expect(p.layer_types.filter((t) => t === 'mamba2')).toHaveLength(mamba2);
      expect(p.layer_types.filter((t) => t === 'attention')).toHaveLength(attention);
    }
    const v01 = PRESETS['jamba-v0.1']!;
    expect(v01.layer_types.filter((t) => t === 'attention')).toHaveLength(4);
    // Jamba-v0.1 has about 52B parameters in all.
    expect(countParameters(v01) / 1e9).toBeGreaterThan(50);
    expect(countParameters(v01) / 1e9).toBeLessThan(54);
  });

  it('bad jamba configs name the key', () => {
    const base = { model_type: 'jamba', d_model: 32, n_layer: 8, vocab_size: 100, attn: { n_heads: 4, d_ff: 48 } };
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ ...base, jamba_variant: 'mini' }, /"jamba_variant" must be one of "original", "taipan-paper"/],
      [{ ...base, attn_offset: 8 }, /"attn_offset" is 8, but it must be below attn_every = 8/],
      [{ ...base, moe: { n_experts: 2, top_k: 3 } }, /"moe.top_k" is 3, more than n_experts = 2/],
      [{ ...base, moe: { offset: 2 } }, /"moe.offset" is 2, but it must be below every = 2/],
      [{ ...base, ssm: { d_state: 16 } }, /"ssm" configures Mamba-2 mixers, but the original Jamba has Mamba-1 mixers/],
      [{ ...base, jamba_variant: 'taipan-paper', moe: {} }, /"moe" is not part of jamba_variant "taipan-paper"/],
      [{ ...base, mamba: { dt_rank: 0 } }, /"mamba.dt_rank" must be a positive integer/],
      [{ ...base, layer_types: ['mamba2', 'attention'], n_layer: 2 }, /entry 0 is "mamba2": the original Jamba has "mamba1" and "attention" layers only/],
      [{ ...base, attn: undefined }, /"attn" is required because the model has attention layers/],
      [{ model_type: 'mamba2', d_model: 32, n_layer: 2, vocab_size: 100, layer_types: ['mamba1', 'mamba2'] }, /entry 0 is "mamba1": Mamba-1 layers belong to the original Jamba/],
      [{ model_type: 'transformer', d_model: 32, n_layer: 1, vocab_size: 100, attn: { n_heads: 4, d_ff: 8, rope_theta: null } }, /only Jamba attention runs without positions/],
    ];
    for (const [json, msg] of bad) expect(() => parseConfig(json), msg.source).toThrow(msg);
    expect(() => parseConfig({ ...base, attn_offset: 8 })).toThrow(ConfigError);
  });
});

describe('JambaModel (original) vs the reference', () => {
  it('logits at every position; Mamba-1, attention without RoPE, dense and MoE layers', async () => {
    await expectPrefillMatchesReference(smallJambaConfig(), 3, 13, tokenIds(41, 1));
  });

  it('a batch of 3 decoding from different prompts matches the reference step by step', async () => {
    const cfg = smallJambaConfig({ moe: { n_experts: 5, top_k: 1 } });
    const { weights, model } = await build(cfg, 4);
    try {
      const prompts = [tokenIds(9, 4), tokenIds(1, 5), tokenIds(20, 6)];
      const states = [];
      const refStates = [];
      for (const p of prompts) {
        const r = await model.prefill(p);
        states.push(r.states[0]!);
        refStates.push(jambaForward(ref(cfg), weights, [p], null).state);
      }
      const V = cfg.vocab_padded;
      for (let s = 0; s < 6; s++) {
        const toks = [s % 100, (s * 7) % 100, (s * 13 + 5) % 100];
        const row = await model.step(toks, states);
        for (let b = 0; b < 3; b++) {
          const w = jambaForward(ref(cfg), weights, [[toks[b]!]], refStates[b]!);
          refStates[b] = w.state;
          expect(relError(row.subarray(b * V, (b + 1) * V), w.logits)).toBeLessThan(1e-4);
        }
      }
      states.forEach((s) => s.dispose());
    } finally {
      model.dispose();
    }
  });
});

describe('JambaModel (taipan-paper variant) vs the reference', () => {
  it('logits at every position, prompts longer than the SSD chunk', async () => {
    await expectPrefillMatchesReference(smallPaperJambaConfig(), 5, 19, tokenIds(45, 2));
  });
});

for (const variant of ['original', 'taipan-paper'] as const) {
  describe(`JambaModel invariants (${variant})`, () => {
    let model: JambaModel;
    let oneShot: JambaModel;
    const cfg = variant === 'original' ? smallJambaConfig() : smallPaperJambaConfig();
    const seq = tokenIds(70, 9);
    beforeAll(async () => {
      ({ model, oneShot } = await buildChunkedAndOneShot(cfg, 41, 17));
    });
    afterAll(() => [model, oneShot].forEach((m) => m.dispose()));

    it('chunked prefill == one-shot prefill == token-by-token decode', async () => {
      expect(await expectChunkedEqualsDecode(model, oneShot, seq)).toBe(seq.length);
    });

    it('a batch equals each sequence run alone', async () => {
      await expectBatchEqualsAlone(model, [tokenIds(23, 1), tokenIds(23, 2), tokenIds(23, 3)]);
    });

    it('greedy generation equals argmax of the one-shot logits', async () => {
      await expectGreedyEqualsArgmax(model, oneShot, seq.slice(0, 10), 5);
    });
  });
}

describe('jamba checkpoints', () => {
  it('CausalLM.load runs a jamba directory; JambaModel refuses other model types', async () => {
    const cfg = smallJambaConfig();
    const { dir, model } = await build(cfg, 8);
    model.dispose();
    const m = await CausalLM.load(dir, { backend: 'cpu' });
    expect(m.layers.map((l) => l.kind)).toEqual(['mamba1', 'mamba1', 'mamba1', 'mamba1', 'attention', 'mamba1', 'mamba1', 'mamba1']);
    m.dispose();
    const other = scratchDir();
    await writeModel(parseConfig({ model_type: 'mamba2', d_model: 32, n_layer: 1, vocab_size: 100, ssm: { headdim: 16, d_state: 8 } }), other.dir, 1);
    await expect(JambaModel.load(other.dir, { backend: 'cpu' })).rejects.toThrow(/JambaModel runs model_type "jamba", got "mamba2"/);
  });

  it('a missing expert or a misshapen Mamba-1 tensor is named', async () => {
    const cfg = smallJambaConfig();
    for (const [drop, reshape, msg] of [
      ['backbone.layers.3.moe.experts.2.fc2.weight', null, /missing tensor backbone\.layers\.3\.moe\.experts\.2\.fc2\.weight/],
      [null, 'backbone.layers.2.mixer.A_log', /tensor backbone\.layers\.2\.mixer\.A_log has shape \[1024\], but the config needs \[64, 8\]/],
    ] as const) {
      const { dir } = scratchDir();
      await writeModel(cfg, dir, 9);
      rewriteCheckpoint(dir, (x) => {
        if (x.name === drop) return null;
        if (x.name !== reshape) return x;
        // The tensor twice over, flattened: twice the elements, in the wrong shape.
        return { ...x, shape: [x.shape.reduce((a, b) => a * b, 1) * 2], data: new Uint8Array([...x.data, ...x.data]) };
      });
      await expect(JambaModel.load(dir, { backend: 'cpu' })).rejects.toThrow(msg);
    }
  });
});

describe('jamba in the generation engine', () => {
  it('concurrent greedy requests each give what generateGreedy gives alone (slots reused)', async () => {
    const cfg = smallJambaConfig();
    const { dir, model: direct } = await build(cfg, 12);
    const engine = await loadModel(dir, { backend: 'cpu', maxSequences: 3 });
    try {
      const prompts = [tokenIds(5, 1), tokenIds(12, 2), tokenIds(1, 3), tokenIds(30, 4), tokenIds(7, 5)];
      const want = [];
      for (const p of prompts) want.push(await direct.generateGreedy(p, { maxTokens: 12 }));
      // Five requests over three slots: two of them reuse a finished request's state.
      const got = await Promise.all(prompts.map((p) => engine.complete(p, { maxTokens: 12, temperature: 0, ignoreEos: true })));
      expect(got.map((g) => g.tokens)).toEqual(want);
    } finally {
      await engine[Symbol.asyncDispose]();
      direct.dispose();
    }
  });
});
