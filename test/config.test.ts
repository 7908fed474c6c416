import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ConfigError,
  PRESETS,
  configToJson,
  countParameters,
  getPreset,
  loadConfig,
  parseConfig,
  type ModelConfig,
} from '../lib/config.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'taipan-cfg-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// mamba2-130m in the three accepted spellings.
const OURS_130M = {
  model_type: 'mamba2',
  d_model: 768,
  n_layer: 24,
  vocab_size: 50277,
  pad_vocab_size_multiple: 16,
  tie_embeddings: true,
  norm_eps: 1e-5,
  ssm: { d_state: 128, d_conv: 4, expand: 2, headdim: 64, ngroups: 1, chunk_size: 256 },
};
// The shape of state-spaces/mamba2-130m's config.json: Mamba2 defaults left implicit.
const MAMBA_SSM_130M = {
  d_model: 768,
  d_intermediate: 0,
  n_layer: 24,
  vocab_size: 50277,
  ssm_cfg: { layer: 'Mamba2' },
  attn_layer_idx: [],
  attn_cfg: {},
  rms_norm: true,
  residual_in_fp32: true,
  fused_add_norm: true,
  pad_vocab_size_multiple: 16,
  tie_embeddings: true,
};
const HF_130M = {
  architectures: ['Mamba2ForCausalLM'],
  model_type: 'mamba2',
  hidden_size: 768,
  num_hidden_layers: 24,
  state_size: 128,
  head_dim: 64,
  num_heads: 24,
  intermediate_size: 1536,
  n_groups: 1,
  conv_kernel: 4,
  expand: 2,
  chunk_size: 256,
  vocab_size: 50277,
  pad_vocab_size_multiple: 16,
  tie_word_embeddings: true,
  layer_norm_epsilon: 1e-5,
  norm_before_gate: true, // written by transformers, ignored by its Mamba2
  use_bias: false,
  use_conv_bias: true,
  hidden_act: 'silu',
  time_step_rank: 48,
  torch_dtype: 'float32',
};

const TAIPAN_190M = {
  model_type: 'taipan',
  d_model: 768,
  n_layer: 21,
  sal_every: 6,
  vocab_size: 128256,
  pad_vocab_size_multiple: 16,
  tie_embeddings: true,
  norm_eps: 1e-5,
  ssm: { d_state: 128, d_conv: 4, expand: 2, headdim: 64, ngroups: 1, chunk_size: 256 },
  sal: { n_heads: 12, head_dim: 64, window: 2048, d_ff: 2048, kv: 'all', mix: 'residual', rope: null, capacity: 0.15 },
};

/** A deep copy of `base` with `edit` applied (edit may delete keys). */
function variant<T>(base: T, edit: (o: Record<string, any>) => void): Record<string, unknown> {
  const o = structuredClone(base) as Record<string, any>;
  edit(o);
  return o;
}

function expectConfigError(json: unknown, ...parts: string[]): ConfigError {
  let err: unknown;
  try {
    parseConfig(json, 'test.json');
  } catch (e) {
    err = e;
  }
  expect(err, 'parseConfig should have failed').toBeInstanceOf(ConfigError);
  const msg = (err as Error).message;
  expect(msg).toContain('test.json');
  for (const p of parts) expect(msg).toContain(p);
  return err as ConfigError;
}

describe('parseConfig: the three spellings', () => {
  it('give the same normalized mamba2-130m', () => {
    const ours = parseConfig(OURS_130M);
    expect(parseConfig(MAMBA_SSM_130M)).toEqual(ours);
    expect(parseConfig(HF_130M)).toEqual(ours);
    expect(ours).toEqual(PRESETS['mamba2-130m']);
  });

  it('resolve the derived sizes of mamba2-130m', () => {
    const c = parseConfig(OURS_130M);
    expect(c).toMatchObject({ vocab_padded: 50288, d_inner: 1536, nheads: 24, conv_dim: 1792, d_in_proj: 3352, n_layer: 24 });
    expect(c.layer_types).toEqual(new Array(24).fill('mamba2'));
    expect(c.sal).toBeUndefined();
    expect(c.sal_every).toBeUndefined();
  });

  it('each spelling keeps its own library defaults', () => {
    const ms = parseConfig({ d_model: 64, n_layer: 2, vocab_size: 100 });
    expect(ms.model_type).toBe('mamba2');
    expect(ms.ssm).toEqual({ d_state: 128, d_conv: 4, expand: 2, headdim: 64, ngroups: 1, chunk_size: 256 });
    expect(ms.pad_vocab_size_multiple).toBe(16);
    expect(ms.tie_embeddings).toBe(true);
    expect(ms.norm_eps).toBe(1e-5);
    // mamba_ssm's MambaConfig pads the vocab to a multiple of 8.
    const mss = parseConfig({ d_model: 64, n_layer: 2, vocab_size: 100, ssm_cfg: { d_state: 16 } });
    expect(mss.pad_vocab_size_multiple).toBe(8);
    expect(mss.vocab_padded).toBe(104);
    expect(mss.ssm.d_state).toBe(16);
    expect(mss.ssm.headdim).toBe(64);
    // transformers: no padding, untied, 8 groups.
    const hf = parseConfig({ model_type: 'mamba2', hidden_size: 256, num_hidden_layers: 2, vocab_size: 100 });
    expect(hf).toMatchObject({ pad_vocab_size_multiple: 1, vocab_padded: 100, tie_embeddings: false });
    expect(hf.ssm.ngroups).toBe(8);
    expect(hf.conv_dim).toBe(512 + 2 * 8 * 128);
  });

  it('ignores unknown keys and mamba_ssm flags', () => {
    const c = parseConfig({ ...OURS_130M, something_new: [1, 2], rms_norm: true, residual_in_fp32: false, fused_add_norm: false });
    expect(c).toEqual(PRESETS['mamba2-130m']);
  });
});

describe('parseConfig: taipan', () => {
  it('derives the [mamba2 x sal_every, sal] pattern', () => {
    const c = parseConfig(TAIPAN_190M);
    expect(c.layer_types).toHaveLength(21);
    const sal = c.layer_types.flatMap((t, i) => (t === 'sal' ? [i] : []));
    expect(sal).toEqual([6, 13, 20]);
    expect(c.sal).toEqual(TAIPAN_190M.sal);
    expect(c.sal_every).toBe(6);
    expect(c).toEqual(PRESETS['taipan-190m']);
  });

  it('applies SAL defaults and accepts the alternative options', () => {
    const c = parseConfig(
      variant(TAIPAN_190M, (o) => {
        o.sal = { n_heads: 12, d_ff: 2048 };
      }),
    );
    expect(c.sal).toEqual({ n_heads: 12, head_dim: 64, window: 2048, d_ff: 2048, kv: 'all', mix: 'residual', rope: null, capacity: 0.15 });
    const alt = parseConfig(
      variant(TAIPAN_190M, (o) => {
        Object.assign(o.sal, { kv: 'selected', mix: 'normalized', rope: { theta: 500000 }, window: 16, capacity: 1 });
      }),
    );
    expect(alt.sal).toMatchObject({ kv: 'selected', mix: 'normalized', rope: { theta: 500000 }, window: 16, capacity: 1 });
    expect(parseConfig(variant(TAIPAN_190M, (o) => (o.sal.rope = {}))).sal!.rope).toEqual({ theta: 10000 });
  });

  it('takes an explicit layer_types over the pattern', () => {
    const lt = ['sal', 'mamba2', 'mamba2', 'sal', 'mamba2'];
    const c = parseConfig(
      variant(TAIPAN_190M, (o) => {
        o.n_layer = 5;
        delete o.sal_every;
        o.layer_types = lt;
      }),
    );
    expect(c.layer_types).toEqual(lt);
    expect(c.n_layer).toBe(5);
    expect(c.sal_every).toBeUndefined();
    // n_layer may be left to the array's length
    const d = parseConfig(
      variant(TAIPAN_190M, (o) => {
        delete o.n_layer;
        o.layer_types = lt;
      }),
    );
    expect(d.n_layer).toBe(5);
    // a mamba2 model may host SALs when it says so explicitly
    const m = parseConfig({ ...OURS_130M, n_layer: 2, layer_types: ['mamba2', 'sal'], sal: TAIPAN_190M.sal });
    expect(m.layer_types).toEqual(['mamba2', 'sal']);
  });

  it('infers the model type when it is missing', () => {
    const c = parseConfig(variant(TAIPAN_190M, (o) => delete o.model_type));
    expect(c.model_type).toBe('taipan');
  });
});

describe('configToJson', () => {
  it('round trips every preset and odd layer patterns', () => {
    for (const [name, p] of Object.entries(PRESETS)) {
      expect(parseConfig(configToJson(p), name)).toEqual(p);
    }
    const odd = parseConfig(variant(TAIPAN_190M, (o) => ((o.n_layer = 3), (o.layer_types = ['sal', 'sal', 'mamba2']))));
    const j = configToJson(odd);
    expect(j['layer_types']).toEqual(['sal', 'sal', 'mamba2']);
    expect(parseConfig(j)).toEqual(odd);
  });

  it('writes our canonical spelling (MODEL.md section 2)', () => {
    expect(configToJson(parseConfig(MAMBA_SSM_130M))).toEqual(OURS_130M);
    expect(configToJson(PRESETS['taipan-190m']!)).toEqual(TAIPAN_190M);
  });
});

describe('loadConfig', () => {
  it('reads DIR/config.json, including the Infinity Python writes', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'm-'));
    const text = JSON.stringify({ ...HF_130M, time_step_limit: [0, 'INF'] }).replace('"INF"', 'Infinity');
    expect(text).toContain('Infinity]');
    fs.writeFileSync(path.join(dir, 'config.json'), text);
    expect(loadConfig(dir)).toEqual(PRESETS['mamba2-130m']);
    expect(loadConfig(path.join(dir, 'config.json'))).toEqual(PRESETS['mamba2-130m']);
  });

  it('names the file on errors', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'm-'));
    expect(() => loadConfig(dir)).toThrow(ConfigError);
    expect(() => loadConfig(dir)).toThrow(`${path.join(dir, 'config.json')}: cannot read config`);
    fs.writeFileSync(path.join(dir, 'config.json'), '{"d_model": ');
    expect(() => loadConfig(dir)).toThrow(/config\.json: not valid JSON/);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...OURS_130M, d_model: 0 }));
    expect(() => loadConfig(dir)).toThrow(`${path.join(dir, 'config.json')}: "d_model" must be a positive integer, got 0`);
  });
});

describe('parseConfig: errors name the key and the value', () => {
  it('not an object', () => {
    expectConfigError(null, 'config must be a JSON object');
    expectConfigError([1], 'config must be a JSON object, got an array');
  });

  it('missing required keys', () => {
    for (const key of ['d_model', 'n_layer', 'vocab_size']) {
      const e = expectConfigError(variant(OURS_130M, (o) => delete o[key]), `"${key}" is required`);
      expect(e.key).toBe(key);
    }
    expectConfigError(variant(HF_130M, (o) => delete o.hidden_size), '"hidden_size" is required');
    expectConfigError(variant(HF_130M, (o) => delete o.num_hidden_layers), '"num_hidden_layers" is required');
    expectConfigError(variant(TAIPAN_190M, (o) => delete o.sal.n_heads), '"sal.n_heads" is required');
    expectConfigError(variant(TAIPAN_190M, (o) => delete o.sal.d_ff), '"sal.d_ff" is required');
    expectConfigError(variant(TAIPAN_190M, (o) => delete o.sal_every), '"sal_every" is required');
    expectConfigError(variant(TAIPAN_190M, (o) => delete o.sal), '"sal" is required for model_type "taipan"');
  });

  it('non-integer or non-positive sizes', () => {
    for (const bad of [0, -768, 767.5, '768', true]) {
      expectConfigError({ ...OURS_130M, d_model: bad }, '"d_model" must be a positive integer', `got ${JSON.stringify(bad)}`);
    }
    expectConfigError({ ...OURS_130M, vocab_size: 0 }, '"vocab_size" must be a positive integer, got 0');
    expectConfigError({ ...OURS_130M, n_layer: 0 }, '"n_layer" must be a positive integer, got 0');
    expectConfigError({ ...OURS_130M, pad_vocab_size_multiple: 0 }, '"pad_vocab_size_multiple" must be a positive integer');
    expectConfigError(variant(OURS_130M, (o) => (o.ssm.d_state = -1)), '"ssm.d_state" must be a positive integer, got -1');
    expectConfigError(variant(MAMBA_SSM_130M, (o) => (o.ssm_cfg.chunk_size = 0)), '"ssm_cfg.chunk_size" must be a positive integer, got 0');
    expectConfigError({ ...HF_130M, state_size: 1.5 }, '"state_size" must be a positive integer, got 1.5');
    expectConfigError(variant(TAIPAN_190M, (o) => (o.sal.d_ff = 0)), '"sal.d_ff" must be a positive integer, got 0');
    expectConfigError({ ...OURS_130M, norm_eps: -1 }, '"norm_eps" must be a positive number, got -1');
    expectConfigError({ ...OURS_130M, tie_embeddings: 'yes' }, '"tie_embeddings" must be true or false, got "yes"');
    expectConfigError({ ...OURS_130M, ssm: 3 }, '"ssm" must be an object, got 3');
  });

  it('d_inner % headdim != 0 and nheads % ngroups != 0', () => {
    expectConfigError(variant(OURS_130M, (o) => (o.ssm.headdim = 100)), '"ssm.headdim" is 100', 'd_inner', '1536');
    expectConfigError(variant(MAMBA_SSM_130M, (o) => (o.ssm_cfg.headdim = 100)), '"ssm_cfg.headdim" is 100');
    expectConfigError({ ...HF_130M, head_dim: 100, num_heads: undefined }, '"head_dim" is 100');
    expectConfigError(variant(OURS_130M, (o) => (o.ssm.ngroups = 5)), '"ssm.ngroups" is 5', '24');
    expectConfigError({ ...HF_130M, n_groups: 5 }, '"n_groups" is 5');
  });

  it('redundant transformers sizes must agree', () => {
    expectConfigError({ ...HF_130M, num_heads: 128 }, '"num_heads" is 128', '24');
    expectConfigError({ ...HF_130M, intermediate_size: 4096 }, '"intermediate_size" is 4096', '1536');
  });

  it('SAL window, kv, mix, rope, capacity', () => {
    for (const w of [0, -1]) expectConfigError(variant(TAIPAN_190M, (o) => (o.sal.window = w)), '"sal.window" must be a positive integer', `got ${w}`);
    expectConfigError(variant(TAIPAN_190M, (o) => (o.sal.kv = 'some')), '"sal.kv" must be one of "all", "selected", got "some"');
    expectConfigError(variant(TAIPAN_190M, (o) => (o.sal.mix = 'add')), '"sal.mix" must be one of "residual", "normalized", got "add"');
    expectConfigError(variant(TAIPAN_190M, (o) => (o.sal.rope = { theta: -1 })), '"sal.rope.theta" must be a positive number, got -1');
    expectConfigError(variant(TAIPAN_190M, (o) => (o.sal.rope = 'yes')), '"sal.rope" must be an object');
    for (const c of [0, -0.1, 1.5, '0.15']) {
      expectConfigError(variant(TAIPAN_190M, (o) => (o.sal.capacity = c)), '"sal.capacity" must be a number in (0, 1]', `got ${JSON.stringify(c)}`);
    }
    expectConfigError(variant(TAIPAN_190M, (o) => (o.sal = [1])), '"sal" must be an object');
  });

  it('taipan n_layer must fit the pattern', () => {
    expectConfigError({ ...TAIPAN_190M, n_layer: 20 }, '"n_layer" is 20, not a multiple of sal_every + 1 = 7');
    expectConfigError({ ...TAIPAN_190M, sal_every: 0 }, '"sal_every" must be a positive integer, got 0');
  });

  it('layer_types wrong length, unknown entry, or a sal layer without a sal section', () => {
    expectConfigError({ ...TAIPAN_190M, layer_types: ['mamba2', 'sal'] }, '"layer_types" has 2 entries but n_layer is 21');
    expectConfigError({ ...OURS_130M, n_layer: 2, layer_types: ['mamba2', 'mlp'] }, '"layer_types" entry 1 is "mlp"');
    expectConfigError({ ...OURS_130M, layer_types: 'mamba2' }, '"layer_types" must be an array');
    expectConfigError({ ...OURS_130M, n_layer: 2, layer_types: ['mamba2', 'sal'] }, '"sal" is required because layer_types contains "sal" layers');
    expectConfigError({ ...OURS_130M, n_layer: 2, layer_types: ['mamba2', 'attention'] }, '"layer_types" entry 1 is "attention"', 'belong to model_type "transformer" or "jamba", not "mamba2"');
    expectConfigError({ ...TAIPAN_190M, n_layer: 2, layer_types: ['sal', 'attention'] }, '"layer_types" entry 1 is "attention"', 'not "taipan"');
  });

  it('model types and mixers we do not run', () => {
    expectConfigError({ ...OURS_130M, model_type: 'transformer' }, '"attn" is required for model_type "transformer"');
    // A Mamba-2 "ssm" section only fits the paper's Jamba variant (test/jamba.test.ts has the rest).
    expectConfigError({ ...OURS_130M, model_type: 'jamba' }, '"ssm" configures Mamba-2 mixers, but the original Jamba has Mamba-1 mixers');
    expectConfigError({ ...OURS_130M, model_type: 'gpt2' }, '"model_type" must be one of', '"gpt2"');
    expectConfigError({ ...HF_130M, model_type: 'mamba' }, '"model_type" is "mamba": Mamba-1');
    expectConfigError({ ...HF_130M, model_type: 'llama' }, '"model_type" is "llama"', 'not supported yet');
    expectConfigError(variant(MAMBA_SSM_130M, (o) => (o.ssm_cfg.layer = 'Mamba1')), '"ssm_cfg.layer" = "Mamba1" is not supported');
    expectConfigError(variant(MAMBA_SSM_130M, (o) => (o.ssm_cfg.norm_before_gate = true)), '"ssm_cfg.norm_before_gate" = true');
    expectConfigError(variant(MAMBA_SSM_130M, (o) => (o.ssm_cfg.d_ssm = 512)), '"ssm_cfg.d_ssm" = 512');
    expect(parseConfig(variant(MAMBA_SSM_130M, (o) => (o.ssm_cfg.d_ssm = 1536))).d_inner).toBe(1536);
    expectConfigError({ ...MAMBA_SSM_130M, d_intermediate: 3072 }, '"d_intermediate" = 3072');
    expectConfigError({ ...MAMBA_SSM_130M, attn_layer_idx: [3] }, '"attn_layer_idx" = [3]');
    expectConfigError({ ...HF_130M, use_bias: true }, '"use_bias" = true');
    expectConfigError({ ...OURS_130M, ssm_cfg: {} }, '"ssm_cfg" and "ssm" are both present');
  });
});

describe('transformer configs', () => {
  const TRANSFORMER_190M = {
    model_type: 'transformer',
    d_model: 768,
    n_layer: 12,
    vocab_size: 128256,
    pad_vocab_size_multiple: 16,
    tie_embeddings: true,
    norm_eps: 1e-5,
    attn: { n_heads: 12, n_kv_heads: 12, head_dim: 64, d_ff: 2048, rope_theta: 10000 },
  };

  it('parses ours, with every layer an attention layer and no SSM section written back', () => {
    const c = parseConfig(TRANSFORMER_190M);
    expect(c.model_type).toBe('transformer');
    expect(c.layer_types).toEqual(new Array(12).fill('attention'));
    expect(c.attn).toEqual(TRANSFORMER_190M.attn);
    expect(c.vocab_padded).toBe(128256);
    expect(configToJson(c)).toEqual(TRANSFORMER_190M);
    expect(configToJson(PRESETS['transformer-190m']!)).toEqual(TRANSFORMER_190M);
  });

  it('defaults: n_kv_heads = n_heads, head_dim = d_model / n_heads, rope_theta 10000; model_type from "attn"', () => {
    const c = parseConfig({ d_model: 256, n_layer: 2, vocab_size: 1000, attn: { n_heads: 8, d_ff: 512 } });
    expect(c.model_type).toBe('transformer');
    expect(c.attn).toEqual({ n_heads: 8, n_kv_heads: 8, head_dim: 32, d_ff: 512, rope_theta: 10000 });
    expect(c.pad_vocab_size_multiple).toBe(16);
  });

  it('GQA and hybrids through layer_types', () => {
    const gqa = parseConfig(variant(TRANSFORMER_190M, (o) => (o.attn.n_kv_heads = 4)));
    expect(gqa.attn!.n_kv_heads).toBe(4);
    const hybrid = parseConfig({ ...TRANSFORMER_190M, n_layer: 3, layer_types: ['mamba2', 'attention', 'mamba2'] });
    expect(hybrid.layer_types).toEqual(['mamba2', 'attention', 'mamba2']);
    expect(configToJson(hybrid)['ssm']).toEqual(hybrid.ssm);
    expect(parseConfig(configToJson(hybrid))).toEqual(hybrid);
  });

  it('bad values name the key', () => {
    expectConfigError({ ...TRANSFORMER_190M, attn: undefined }, '"attn" is required for model_type "transformer"');
    expectConfigError(variant(TRANSFORMER_190M, (o) => (o.attn.n_kv_heads = 5)), '"attn.n_kv_heads" is 5, which does not divide n_heads = 12');
    expectConfigError(variant(TRANSFORMER_190M, (o) => (o.attn.head_dim = 63)), '"attn.head_dim" is 63', 'even head_dim');
    expectConfigError(variant(TRANSFORMER_190M, (o) => ((o.attn.n_heads = 7), delete o.attn.n_kv_heads, delete o.attn.head_dim)), '"attn.head_dim" is required');
    expectConfigError(variant(TRANSFORMER_190M, (o) => delete o.attn.d_ff), '"attn.d_ff" is required');
    expectConfigError(variant(TRANSFORMER_190M, (o) => (o.attn.rope_theta = 0)), '"attn.rope_theta" must be a positive number');
    expectConfigError(variant(TRANSFORMER_190M, (o) => (o.attn.n_heads = 0)), '"attn.n_heads" must be a positive integer');
    expectConfigError({ ...TRANSFORMER_190M, attn: 3 }, '"attn" must be an object');
    expectConfigError({ ...TRANSFORMER_190M, n_layer: 2, layer_types: ['attention', 'sal'] }, '"sal" is required because layer_types contains "sal" layers');
  });

  it('counts parameters: q/o [n_heads*head_dim, d], k/v [n_kv_heads*head_dim, d], two norms, the SwiGLU MLP', () => {
    const c = parseConfig({ ...TRANSFORMER_190M, n_layer: 1, vocab_size: 16, attn: { n_heads: 12, n_kv_heads: 4, d_ff: 100 } });
    expect(countParameters(c)).toBe(16 * 768 + 768 + (768 + 2 * 768 * 768 + 2 * 256 * 768 + 768 + 3 * 100 * 768));
  });
});

describe('presets', () => {
  // MODEL.md section 8.
  const table: Record<string, number> = {
    'taipan-190m': 187.5e6,
    'taipan-450m': 446e6,
    'taipan-1.3b': 1.29e9,
    'mamba2-130m': 129.0e6,
    'mamba2-1.3b': 1.34e9,
    // Not in the table: the Transformer++ baselines at the Taipan sizes (section 8).
    'transformer-190m': 183.5e6,
    'transformer-450m': 439.7e6,
    'transformer-1.3b': 1.275e9,
  };

  it('reproduce the parameter counts of the spec table within 0.5%', () => {
    for (const [name, want] of Object.entries(table)) {
      const got = countParameters(PRESETS[name]!);
      expect(Math.abs(got - want) / want, `${name}: ${got}`).toBeLessThan(0.005);
    }
    expect(countParameters(PRESETS['mamba2-130m']!)).toBe(128_989_632); // exact, tied head counted once
  });

  it('have the shapes of section 8', () => {
    const shape = (c: ModelConfig) => [c.d_model, c.layer_types.filter((t) => t === 'mamba2').length, c.layer_types.filter((t) => t === 'sal').length];
    expect(shape(PRESETS['taipan-190m']!)).toEqual([768, 18, 3]);
    expect(shape(PRESETS['taipan-450m']!)).toEqual([1024, 36, 6]);
    expect(shape(PRESETS['taipan-1.3b']!)).toEqual([2048, 30, 5]);
    expect(shape(PRESETS['mamba2-190m']!)).toEqual([768, 24, 0]);
    expect(shape(PRESETS['mamba2-450m']!)).toEqual([1024, 48, 0]);
    expect(shape(PRESETS['mamba2-1.3b-taipan']!)).toEqual([2048, 40, 0]);
    expect(PRESETS['mamba2-1.3b']!.vocab_padded).toBe(50288);
    expect(PRESETS['taipan-450m']!.sal).toMatchObject({ n_heads: 16, head_dim: 64, d_ff: 2816, window: 2048, capacity: 0.15 });
    expect(PRESETS['taipan-1.3b']!.sal).toMatchObject({ n_heads: 32, d_ff: 5504 });
    for (const n of ['taipan-190m', 'mamba2-190m', 'mamba2-1.3b-taipan', 'transformer-190m']) expect(PRESETS[n]!.vocab_size).toBe(128256);
    const attn = (n: string) => [PRESETS[n]!.d_model, PRESETS[n]!.n_layer, PRESETS[n]!.attn!.n_heads, PRESETS[n]!.attn!.d_ff];
    expect(attn('transformer-190m')).toEqual([768, 12, 12, 2048]);
    expect(attn('transformer-450m')).toEqual([1024, 24, 16, 2816]);
    expect(attn('transformer-1.3b')).toEqual([2048, 20, 32, 5504]);
  });

  it('untied heads count the embedding twice', () => {
    const p = getPreset('mamba2-130m');
    p.tie_embeddings = false;
    expect(countParameters(p) - countParameters(PRESETS['mamba2-130m']!)).toBe(50288 * 768);
  });

  it('are frozen; getPreset gives a modifiable copy', () => {
    expect(Object.isFrozen(PRESETS['taipan-190m']!.layer_types)).toBe(true);
    const c = getPreset('taipan-190m');
    c.layer_types[0] = 'sal';
    expect(PRESETS['taipan-190m']!.layer_types[0]).toBe('mamba2');
    expect(() => getPreset('nope')).toThrow(/unknown preset "nope"; known: taipan-190m/);
  });
});
