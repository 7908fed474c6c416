// config.json parsing: three spellings in, one normalized and fully resolved ModelConfig out.
//   ours       MODEL.md section 2: d_model, n_layer, ssm {...}, sal {...}, optional layer_types
//   mamba_ssm  state-spaces/mamba2-*: d_model, n_layer, ssm_cfg {...}, tie_embeddings
//   HF         transformers Mamba2Config: hidden_size, num_hidden_layers, state_size, head_dim, ...
// Each spelling keeps its own library's defaults for missing keys (they differ: e.g. the vocab pad
// multiple is 8 in mamba_ssm, 1 in transformers), so a config means what its author's library meant.
// Errors name the key as the file spells it.
//
// model_type "transformer" (MODEL.md section 7) is ours only: the shared top-level keys (d_model,
// n_layer, vocab_size, pad_vocab_size_multiple, tie_embeddings, norm_eps) and an "attn" section:
//   "attn": { "n_heads": 12,          query heads
//             "n_kv_heads": 4,        key/value heads (GQA); default n_heads
//             "head_dim": 64,         default d_model / n_heads; must be even (RoPE)
//             "d_ff": 2048,           SwiGLU width: mlp.fc1 is [2*d_ff, d]
//             "rope_theta": 10000 }   RoPE base; default 10000
// Its layers are all "attention" unless layer_types says otherwise.
//
// model_type "jamba" (MODEL.md section 7) is ours too, in two variants chosen by "jamba_variant":
//   "original" (default): Mamba-1 mixers ("mamba1" layers) with one attention layer in every
//     `attn_every` (8) at index `attn_offset` (4) of the block, no positional encoding, and after
//     every mixer an FFN: a dense SwiGLU, or a mixture of experts on the layers i with
//     i % moe.every == moe.offset. Sections:
//       "mamba": { "d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": ceil(d_model / 16) }
//       "attn":  as above; "rope_theta" defaults to null (no RoPE); d_ff is every FFN's width
//       "moe":   { "n_experts": 16, "top_k": 2, "every": 2, "offset": 1 }
//   "taipan-paper": the Taipan trunk with each SAL replaced by a full causal RoPE attention
//     layer (with its SwiGLU): Mamba-2 layers ("ssm" section) and an "attention" layer at index
//     `attn_offset` (default attn_every - 1 = 7) of every block of `attn_every` (8).

import * as fs from 'node:fs';
import * as path from 'node:path';

export interface SsmConfig {
  d_state: number;
  d_conv: number;
  expand: number;
  headdim: number;
  ngroups: number;
  chunk_size: number;
}

export interface SalConfig {
  n_heads: number;
  head_dim: number;
  window: number;
  d_ff: number;
  kv: 'all' | 'selected';
  mix: 'residual' | 'normalized';
  rope: { theta: number } | null;
  capacity: number;
}

/** The attention layers of model_type "transformer" (see the key list at the top). */
export interface AttnConfig {
  n_heads: number;
  n_kv_heads: number;
  head_dim: number;
  d_ff: number;
  /** RoPE base; null means no positional encoding (original Jamba). */
  rope_theta: number | null;
}

/** Jamba's Mamba-1 mixer (see the key list at the top). */
export interface MambaConfig {
  d_state: number;
  d_conv: number;
  expand: number;
  dt_rank: number;
}

/** Jamba's mixture-of-experts FFN, on layers i with i % every === offset. */
export interface MoeConfig {
  n_experts: number;
  top_k: number;
  every: number;
  offset: number;
}

export type JambaVariant = 'original' | 'taipan-paper';

export type LayerType = 'mamba2' | 'sal' | 'attention' | 'mamba1';

export interface ModelConfig {
  model_type: 'taipan' | 'mamba2' | 'transformer' | 'jamba';
  d_model: number;
  n_layer: number;
  vocab_size: number;
  pad_vocab_size_multiple: number;
  tie_embeddings: boolean;
  norm_eps: number;
  /** Always resolved, length n_layer. */
  layer_types: LayerType[];
  sal_every?: number;
  /** Read by Mamba-2 layers only; a transformer without them keeps the defaults here, unchecked. */
  ssm: SsmConfig;
  sal?: SalConfig;
  attn?: AttnConfig;
  /** Jamba only. */
  jamba_variant?: JambaVariant;
  attn_every?: number;
  attn_offset?: number;
  mamba?: MambaConfig;
  moe?: MoeConfig;
  // derived (MODEL.md section 2)
  vocab_padded: number;
  d_inner: number;
  nheads: number;
  conv_dim: number;
  d_in_proj: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  /** The offending key as spelled in the source, when there is one. */
  readonly key: string | undefined;
  constructor(message: string, key?: string) {
    super(message);
    this.key = key;
  }
}

export const MAMBA2_SSM_DEFAULTS: Readonly<SsmConfig> = {
  d_state: 128,
  d_conv: 4,
  expand: 2,
  headdim: 64,
  ngroups: 1,
  chunk_size: 256,
};

const SAL_DEFAULTS = { window: 2048, kv: 'all', mix: 'residual', capacity: 0.15, rope_theta: 10000 } as const;
const ATTN_ROPE_THETA = 10000;
const MODEL_TYPES = ['taipan', 'mamba2', 'transformer', 'jamba'] as const;
const LAYER_TYPES: readonly LayerType[] = ['mamba2', 'sal', 'attention', 'mamba1'];
const JAMBA_VARIANTS: readonly JambaVariant[] = ['original', 'taipan-paper'];
const MAMBA1_DEFAULTS = { d_state: 16, d_conv: 4, expand: 2 } as const;
const MOE_DEFAULTS: Readonly<MoeConfig> = { n_experts: 16, top_k: 2, every: 2, offset: 1 };

const show = (v: unknown): string => (v === undefined ? 'nothing' : JSON.stringify(v));

/** Typed access to one JSON object; every failure names `prefix + key` and the source. */
class Fields {
  constructor(
    readonly obj: Record<string, unknown>,
    readonly prefix: string,
    readonly source: string,
  ) {}

  fail(key: string, msg: string): never {
    const full = this.prefix + key;
    throw new ConfigError(`${this.source}: "${full}" ${msg}`, full);
  }

  /** JSON null counts as absent: transformers writes null for unset options. */
  get(key: string): unknown {
    const v = this.obj[key];
    return v === null ? undefined : v;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  posInt(key: string, def?: number): number {
    const v = this.get(key);
    if (v === undefined) {
      if (def === undefined) this.fail(key, 'is required');
      return def;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) this.fail(key, `must be a positive integer, got ${show(v)}`);
    return v;
  }

  posNum(key: string, def: number): number {
    const v = this.get(key);
    if (v === undefined) return def;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(key, `must be a positive number, got ${show(v)}`);
    return v;
  }

  bool(key: string, def: boolean): boolean {
    const v = this.get(key);
    if (v === undefined) return def;
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, got ${show(v)}`);
    return v;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], def: T): T {
    const v = this.get(key);
    if (v === undefined) return def;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(key, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${show(v)}`);
    }
    return v as T;
  }

  sub(key: string): Fields | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(key, `must be an object, got ${show(v)}`);
    return new Fields(v as Record<string, unknown>, `${this.prefix}${key}.`, this.source);
  }

  /** Reject an option whose present value means an architecture we do not implement. */
  require(key: string, ok: (v: unknown) => boolean, why: string): void {
    const v = this.get(key);
    if (v !== undefined && !ok(v)) this.fail(key, `= ${show(v)} is not supported: ${why}`);
  }
}

// Shared by every spelling once the keys have been mapped to ours.
interface Raw {
  model_type: 'taipan' | 'mamba2' | 'transformer' | 'jamba';
  d_model: number;
  n_layer: number | undefined;
  vocab_size: number;
  pad_vocab_size_multiple: number;
  tie_embeddings: boolean;
  norm_eps: number;
  ssm: SsmConfig;
  sal: SalConfig | undefined;
  attn: AttnConfig | undefined;
  sal_every: number | undefined;
  layer_types: LayerType[] | undefined;
  jamba: JambaRaw | undefined;
  // key spellings for error messages about derived quantities
  keys: { n_layer: string; headdim: string; ngroups: string; expand: string; d_model: string };
}

function parseSsm(f: Fields | undefined, defaults: SsmConfig, names: Record<keyof SsmConfig, string>): SsmConfig {
  const out = { ...defaults };
  if (f) for (const k of Object.keys(defaults) as (keyof SsmConfig)[]) out[k] = f.posInt(names[k], defaults[k]);
  return out;
}

/** Options of mamba_ssm's Mamba2 mixer that would change the math away from MODEL.md section 5. */
function rejectMambaSsmOptions(f: Fields, d_inner: number): void {
  f.require('layer', (v) => v === 'Mamba2', 'only Mamba-2 mixers are supported (Mamba-1 is not)');
  f.require('dt_rank', () => false, 'dt_rank belongs to Mamba-1 mixers, which are not supported');
  // d_ssm < d_inner would send only part of the channels through the SSM.
  f.require('d_ssm', (v) => v === d_inner, `must be unset or equal to d_inner = ${d_inner}`);
  f.require('rmsnorm', (v) => v === true, 'the gated RMSNorm is always applied');
  f.require('norm_before_gate', (v) => v === false, 'the gate is applied before the norm');
  f.require('D_has_hdim', (v) => v === false, 'D is one scalar per head');
  f.require('bias', (v) => v === false, 'in_proj/out_proj have no bias');
  f.require('conv_bias', (v) => v === true, 'conv1d always has a bias');
  f.require('activation', (v) => v === 'silu' || v === 'swish', 'the conv activation is SiLU');
}

const IDENTITY_SSM_NAMES: Record<keyof SsmConfig, string> = {
  d_state: 'd_state', d_conv: 'd_conv', expand: 'expand', headdim: 'headdim', ngroups: 'ngroups', chunk_size: 'chunk_size',
};

function parseSal(f: Fields, d_model: number): SalConfig {
  const n_heads = f.posInt('n_heads');
  // Llama convention when head_dim is omitted: the heads split d_model.
  const head_dim = f.has('head_dim') || d_model % n_heads !== 0 ? f.posInt('head_dim') : d_model / n_heads;
  const window = f.posInt('window', SAL_DEFAULTS.window);
  const d_ff = f.posInt('d_ff');
  const kv = f.oneOf('kv', ['all', 'selected'] as const, SAL_DEFAULTS.kv);
  const mix = f.oneOf('mix', ['residual', 'normalized'] as const, SAL_DEFAULTS.mix);
  let rope: { theta: number } | null = null;
  const r = f.get('rope');
  if (r !== undefined && r !== false) {
    const rf = f.sub('rope')!;
    rope = { theta: rf.posNum('theta', SAL_DEFAULTS.rope_theta) };
  }
  const c = f.get('capacity');
  let capacity: number = SAL_DEFAULTS.capacity;
  if (c !== undefined) {
    if (typeof c !== 'number' || !(c > 0 && c <= 1)) f.fail('capacity', `must be a number in (0, 1], got ${show(c)}`);
    capacity = c;
  }
  return { n_heads, head_dim, window, d_ff, kv, mix, rope, capacity };
}

interface JambaRaw {
  variant: JambaVariant;
  attn_every: number;
  attn_offset: number;
  mamba: MambaConfig | undefined;
  moe: MoeConfig | undefined;
}

function parseJamba(f: Fields, d_model: number): JambaRaw {
  const variant = f.oneOf('jamba_variant', JAMBA_VARIANTS, 'original');
  const attn_every = f.posInt('attn_every', 8);
  const attn_offset = f.has('attn_offset') ? nonNegInt(f, 'attn_offset') : variant === 'original' ? 4 : attn_every - 1;
  if (attn_offset >= attn_every) f.fail('attn_offset', `is ${attn_offset}, but it must be below attn_every = ${attn_every}`);
  if (variant === 'taipan-paper') {
    // The paper's variant is the Taipan trunk: Mamba-2 mixers and dense SwiGLUs only.
    if (f.has('moe')) f.fail('moe', 'is not part of jamba_variant "taipan-paper" (its attention layers have a dense SwiGLU)');
    if (f.has('mamba')) f.fail('mamba', 'configures Mamba-1 mixers, but jamba_variant "taipan-paper" has Mamba-2 mixers ("ssm")');
    return { variant, attn_every, attn_offset, mamba: undefined, moe: undefined };
  }
  if (f.has('ssm')) f.fail('ssm', 'configures Mamba-2 mixers, but the original Jamba has Mamba-1 mixers ("mamba")');
  const m = f.sub('mamba');
  const mamba: MambaConfig = {
    d_state: m ? m.posInt('d_state', MAMBA1_DEFAULTS.d_state) : MAMBA1_DEFAULTS.d_state,
    d_conv: m ? m.posInt('d_conv', MAMBA1_DEFAULTS.d_conv) : MAMBA1_DEFAULTS.d_conv,
    expand: m ? m.posInt('expand', MAMBA1_DEFAULTS.expand) : MAMBA1_DEFAULTS.expand,
    dt_rank: m ? m.posInt('dt_rank', Math.ceil(d_model / 16)) : Math.ceil(d_model / 16),
  };
  if (mamba.d_conv < 2) (m ?? f).fail(m ? 'd_conv' : 'mamba', `d_conv must be at least 2, got ${mamba.d_conv}`);
  let moe: MoeConfig | undefined = { ...MOE_DEFAULTS };
  const mf = f.get('moe');
  if (mf === false) moe = undefined; // "moe": false: dense FFNs everywhere
  else if (mf !== undefined) {
    const e = f.sub('moe')!;
    moe = {
      n_experts: e.posInt('n_experts', MOE_DEFAULTS.n_experts),
      top_k: e.posInt('top_k', MOE_DEFAULTS.top_k),
      every: e.posInt('every', MOE_DEFAULTS.every),
      offset: e.has('offset') ? nonNegInt(e, 'offset') : MOE_DEFAULTS.offset,
    };
    if (moe.top_k > moe.n_experts) e.fail('top_k', `is ${moe.top_k}, more than n_experts = ${moe.n_experts}`);
    if (moe.offset >= moe.every) e.fail('offset', `is ${moe.offset}, but it must be below every = ${moe.every}`);
  }
  return { variant, attn_every, attn_offset, mamba, moe };
}

function nonNegInt(f: Fields, key: string): number {
  const v = f.get(key);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) f.fail(key, `must be a non-negative integer, got ${show(v)}`);
  return v;
}

function parseAttn(f: Fields, d_model: number, ropeByDefault = true): AttnConfig {
  const n_heads = f.posInt('n_heads');
  const n_kv_heads = f.posInt('n_kv_heads', n_heads);
  if (n_heads % n_kv_heads !== 0) f.fail('n_kv_heads', `is ${n_kv_heads}, which does not divide n_heads = ${n_heads}`);
  // Llama convention when head_dim is omitted: the heads split d_model.
  const head_dim = f.has('head_dim') || d_model % n_heads !== 0 ? f.posInt('head_dim') : d_model / n_heads;
  if (head_dim % 2 !== 0 && (f.has('rope_theta') || ropeByDefault)) f.fail('head_dim', `is ${head_dim}, but rotary embeddings (rotate-half) need an even head_dim`);
  const d_ff = f.posInt('d_ff');
  // rope_theta: null (or false) turns positions off; JSON null reads as absent in Fields.get.
  const noRope = f.obj['rope_theta'] === null || f.obj['rope_theta'] === false;
  const rope_theta = noRope ? null : f.has('rope_theta') || ropeByDefault ? f.posNum('rope_theta', ATTN_ROPE_THETA) : null;
  return { n_heads, n_kv_heads, head_dim, d_ff, rope_theta };
}

function parseLayerTypes(f: Fields): LayerType[] | undefined {
  const v = f.get('layer_types');
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) f.fail('layer_types', `must be an array of ${LAYER_TYPES.join('/')}, got ${show(v)}`);
  return v.map((t: unknown, i: number) => {
    if (typeof t !== 'string' || !(LAYER_TYPES as readonly string[]).includes(t)) {
      f.fail('layer_types', `entry ${i} is ${show(t)}, expected one of ${LAYER_TYPES.map((x) => JSON.stringify(x)).join(', ')}`);
    }
    return t as LayerType;
  });
}

function notYet(f: Fields, key: string, what: string): never {
  f.fail(key, `is ${show(f.get(key))}: ${what} is not supported yet (only "taipan", "mamba2", "transformer" and "jamba" models load)`);
}

/** Ours and mamba_ssm's: the same top-level names, `ssm` vs `ssm_cfg`. */
function fromOursOrMambaSsm(f: Fields): Raw {
  const mambaSsm = f.has('ssm_cfg');
  if (mambaSsm && f.has('ssm')) f.fail('ssm_cfg', 'and "ssm" are both present; use one');
  const mt = f.get('model_type');
  let model_type: Raw['model_type'];
  if (mt === undefined) model_type = f.has('sal') || f.has('sal_every') ? 'taipan' : f.has('attn') ? 'transformer' : 'mamba2';
  else if (mt === 'taipan' || mt === 'mamba2' || mt === 'transformer' || mt === 'jamba') model_type = mt;
  else f.fail('model_type', `must be one of ${MODEL_TYPES.map((m) => JSON.stringify(m)).join(', ')}, got ${show(mt)}`);

  if (mambaSsm) {
    // mamba_ssm MixerModel options with no counterpart here.
    f.require('d_intermediate', (v) => v === 0, 'an MLP after every mixer is not part of the Mamba-2 model');
    f.require('attn_layer_idx', (v) => Array.isArray(v) && v.length === 0, 'mamba_ssm attention layers are not supported yet');
  }
  f.require('rms_norm', (v) => v === true, 'every norm is an RMSNorm');
  const d_model = f.posInt('d_model');
  const ssmKey = mambaSsm ? 'ssm_cfg' : 'ssm';
  const ssmFields = f.sub(ssmKey);
  const ssm = parseSsm(ssmFields, MAMBA2_SSM_DEFAULTS, IDENTITY_SSM_NAMES);
  if (ssmFields) rejectMambaSsmOptions(ssmFields, ssm.expand * d_model);
  const sal = f.sub('sal');
  const attn = f.sub('attn');
  const jamba = model_type === 'jamba' ? parseJamba(f, d_model) : undefined;
  return {
    model_type,
    d_model,
    n_layer: f.has('n_layer') || !f.has('layer_types') ? f.posInt('n_layer') : undefined,
    vocab_size: f.posInt('vocab_size'),
    // mamba_ssm's MambaConfig pads to 8 by default; our own examples and presets use 16.
    pad_vocab_size_multiple: f.posInt('pad_vocab_size_multiple', mambaSsm ? 8 : 16),
    tie_embeddings: f.bool('tie_embeddings', true),
    norm_eps: f.posNum('norm_eps', 1e-5),
    ssm,
    sal: sal ? parseSal(sal, d_model) : undefined,
    attn: attn ? parseAttn(attn, d_model, jamba?.variant !== 'original') : undefined,
    sal_every: model_type === 'taipan' && f.has('sal_every') ? f.posInt('sal_every') : undefined,
    layer_types: parseLayerTypes(f),
    jamba,
    keys: {
      n_layer: 'n_layer',
      d_model: 'd_model',
      headdim: `${ssmKey}.headdim`,
      ngroups: `${ssmKey}.ngroups`,
      expand: `${ssmKey}.expand`,
    },
  };
}

/** transformers' Mamba2Config names and defaults. */
function fromHf(f: Fields): Raw {
  const mt = f.get('model_type');
  if (mt === 'mamba') f.fail('model_type', 'is "mamba": Mamba-1 models are not supported, only Mamba-2');
  if (mt !== undefined && mt !== 'mamba2') notYet(f, 'model_type', `model_type ${show(mt)}`);
  f.require('use_bias', (v) => v === false, 'in_proj/out_proj have no bias');
  f.require('use_conv_bias', (v) => v === true, 'conv1d always has a bias');
  f.require('hidden_act', (v) => v === 'silu' || v === 'swish', 'the conv activation is SiLU');
  const d_model = f.posInt('hidden_size');
  const ssm = parseSsm(
    f,
    // transformers' default n_groups is 8, mamba_ssm's 1.
    { ...MAMBA2_SSM_DEFAULTS, ngroups: 8 },
    { d_state: 'state_size', d_conv: 'conv_kernel', expand: 'expand', headdim: 'head_dim', ngroups: 'n_groups', chunk_size: 'chunk_size' },
  );
  // transformers writes norm_before_gate: true but its Mamba2 gates before the norm regardless, so
  // that key is not checked. intermediate_size and num_heads are redundant; they must agree.
  const d_inner = ssm.expand * d_model;
  if (f.has('intermediate_size') && f.posInt('intermediate_size') !== d_inner) {
    f.fail('intermediate_size', `is ${show(f.get('intermediate_size'))}, but expand * hidden_size = ${d_inner}`);
  }
  if (f.has('num_heads')) {
    const nh = f.posInt('num_heads');
    if (nh * ssm.headdim !== d_inner) {
      f.fail('num_heads', `is ${nh}, but expand * hidden_size / head_dim = ${d_inner} / ${ssm.headdim} = ${d_inner / ssm.headdim}`);
    }
  }
  return {
    model_type: 'mamba2',
    d_model,
    n_layer: f.posInt('num_hidden_layers'),
    vocab_size: f.posInt('vocab_size'),
    pad_vocab_size_multiple: f.posInt('pad_vocab_size_multiple', 1),
    tie_embeddings: f.bool('tie_word_embeddings', false),
    norm_eps: f.posNum('layer_norm_epsilon', 1e-5),
    ssm,
    sal: undefined,
    attn: undefined,
    sal_every: undefined,
    layer_types: undefined,
    jamba: undefined,
    keys: { n_layer: 'num_hidden_layers', d_model: 'hidden_size', headdim: 'head_dim', ngroups: 'n_groups', expand: 'expand' },
  };
}

function resolve(raw: Raw, f: Fields): ModelConfig {
  const { d_model, ssm, keys } = raw;

  // Layer pattern: explicit wins; Taipan is [mamba2 x sal_every, sal] repeated; Mamba-2 is all
  // mamba2; a transformer is all attention.
  let layer_types: LayerType[];
  let n_layer: number;
  if (raw.layer_types) {
    layer_types = raw.layer_types;
    n_layer = raw.n_layer ?? layer_types.length;
    if (layer_types.length !== n_layer) f.fail('layer_types', `has ${layer_types.length} entries but ${keys.n_layer} is ${n_layer}`);
  } else if (raw.model_type === 'taipan') {
    if (raw.sal_every === undefined) f.fail('sal_every', 'is required for model_type "taipan" unless layer_types is given');
    n_layer = raw.n_layer!;
    const period = raw.sal_every + 1;
    if (n_layer % period !== 0) {
      f.fail(keys.n_layer, `is ${n_layer}, not a multiple of sal_every + 1 = ${period} (the pattern is ${raw.sal_every} mamba2 then 1 sal); give layer_types for other patterns`);
    }
    layer_types = Array.from({ length: n_layer }, (_, i) => ((i + 1) % period === 0 ? 'sal' : 'mamba2'));
  } else if (raw.jamba) {
    // One attention layer at attn_offset of every block of attn_every; the rest are mixers.
    n_layer = raw.n_layer!;
    const { attn_every, attn_offset, variant } = raw.jamba;
    const mixer: LayerType = variant === 'original' ? 'mamba1' : 'mamba2';
    layer_types = Array.from({ length: n_layer }, (_, i) => (i % attn_every === attn_offset ? 'attention' : mixer));
  } else {
    n_layer = raw.n_layer!;
    layer_types = new Array<LayerType>(n_layer).fill(raw.model_type === 'transformer' ? 'attention' : 'mamba2');
  }
  if (n_layer === 0) f.fail(keys.n_layer, 'must be a positive integer, got 0');
  const attn = layer_types.indexOf('attention');
  if (attn >= 0 && raw.model_type !== 'transformer' && raw.model_type !== 'jamba') {
    f.fail('layer_types', `entry ${attn} is "attention": attention layers belong to model_type "transformer" or "jamba", not "${raw.model_type}"`);
  }
  const m1 = layer_types.indexOf('mamba1');
  if (m1 >= 0 && raw.jamba?.variant !== 'original') {
    f.fail('layer_types', `entry ${m1} is "mamba1": Mamba-1 layers belong to the original Jamba (model_type "jamba")`);
  }
  if (raw.jamba?.variant === 'original') {
    const bad = layer_types.findIndex((t) => t !== 'mamba1' && t !== 'attention');
    if (bad >= 0) f.fail('layer_types', `entry ${bad} is "${layer_types[bad]}": the original Jamba has "mamba1" and "attention" layers only`);
  }
  if (raw.jamba?.variant === 'taipan-paper') {
    const bad = layer_types.findIndex((t) => t !== 'mamba2' && t !== 'attention');
    if (bad >= 0) f.fail('layer_types', `entry ${bad} is "${layer_types[bad]}": jamba_variant "taipan-paper" has "mamba2" and "attention" layers only`);
  }
  if (raw.model_type === 'taipan' && !raw.sal) f.fail('sal', 'is required for model_type "taipan"');
  if (layer_types.includes('sal') && !raw.sal) f.fail('sal', 'is required because layer_types contains "sal" layers');
  if (raw.model_type === 'transformer' && !raw.attn) f.fail('attn', 'is required for model_type "transformer"');
  if (layer_types.includes('attention') && !raw.attn) f.fail('attn', 'is required because the model has attention layers');
  if (raw.attn && raw.attn.rope_theta === null && raw.model_type !== 'jamba') {
    f.fail('attn.rope_theta', 'is null, but only Jamba attention runs without positions');
  }

  // The SSM sizes matter only where there are Mamba-2 layers; a pure transformer never reads them.
  const checkSsm = layer_types.includes('mamba2');
  const d_inner = ssm.expand * d_model;
  if (checkSsm && d_inner % ssm.headdim !== 0) {
    f.fail(keys.headdim, `is ${ssm.headdim}, which does not divide d_inner = ${keys.expand} * ${keys.d_model} = ${d_inner}`);
  }
  const nheads = d_inner / ssm.headdim;
  if (checkSsm && nheads % ssm.ngroups !== 0) {
    f.fail(keys.ngroups, `is ${ssm.ngroups}, which does not divide the number of SSM heads d_inner / headdim = ${nheads}`);
  }
  const gn = 2 * ssm.ngroups * ssm.d_state;
  const m = raw.pad_vocab_size_multiple;

  const cfg: ModelConfig = {
    model_type: raw.model_type,
    d_model,
    n_layer,
    vocab_size: raw.vocab_size,
    pad_vocab_size_multiple: m,
    tie_embeddings: raw.tie_embeddings,
    norm_eps: raw.norm_eps,
    layer_types,
    ssm,
    vocab_padded: Math.ceil(raw.vocab_size / m) * m,
    d_inner,
    nheads,
    conv_dim: d_inner + gn,
    d_in_proj: 2 * d_inner + gn + nheads,
  };
  if (raw.sal_every !== undefined) cfg.sal_every = raw.sal_every;
  if (raw.sal) cfg.sal = raw.sal;
  if (raw.attn) cfg.attn = raw.attn;
  if (raw.jamba) {
    cfg.jamba_variant = raw.jamba.variant;
    cfg.attn_every = raw.jamba.attn_every;
    cfg.attn_offset = raw.jamba.attn_offset;
    if (raw.jamba.mamba) cfg.mamba = raw.jamba.mamba;
    if (raw.jamba.moe) cfg.moe = raw.jamba.moe;
  }
  return cfg;
}

/** Normalize and validate a parsed config.json. `source` (a path) prefixes error messages. */
export function parseConfig(json: unknown, source = 'config'): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(`${source}: config must be a JSON object, got ${Array.isArray(json) ? 'an array' : show(json)}`);
  }
  const f = new Fields(json as Record<string, unknown>, '', source);
  const hf = f.has('hidden_size') || f.has('num_hidden_layers');
  return resolve(hf ? fromHf(f) : fromOursOrMambaSsm(f), f);
}

/** Read DIR/config.json (or the given .json file). */
export function loadConfig(dir: string): ModelConfig {
  const file = dir.endsWith('.json') ? dir : path.join(dir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read config: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = parsePythonJson(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  return parseConfig(json, file);
}

/**
 * JSON.parse that also takes the bare NaN / Infinity / -Infinity tokens Python's json module
 * writes (transformers configs contain e.g. "time_step_limit": [0.0, Infinity]).
 */
export function parsePythonJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (first) {
    let out = '';
    let i = 0;
    while (i < text.length) {
      const c = text[i]!;
      if (c === '"') {
        // Copy a string literal untouched, honouring backslash escapes.
        let j = i + 1;
        while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
        out += text.slice(i, j + 1);
        i = j + 1;
      } else if (text.startsWith('Infinity', i)) {
        out += '1e999'; // parses to Infinity
        i += 8;
      } else if (text.startsWith('NaN', i)) {
        out += 'null';
        i += 3;
      } else {
        out += c;
        i++;
      }
    }
    try {
      return JSON.parse(out);
    } catch {
      throw first;
    }
  }
}

function defaultLayerTypes(cfg: ModelConfig): LayerType[] | undefined {
  if (cfg.model_type === 'mamba2') return new Array<LayerType>(cfg.n_layer).fill('mamba2');
  if (cfg.model_type === 'transformer') return new Array<LayerType>(cfg.n_layer).fill('attention');
  if (cfg.model_type === 'jamba') {
    const mixer: LayerType = cfg.jamba_variant === 'original' ? 'mamba1' : 'mamba2';
    return Array.from({ length: cfg.n_layer }, (_, i) => (i % cfg.attn_every! === cfg.attn_offset! ? 'attention' : mixer));
  }
  if (cfg.model_type === 'taipan' && cfg.sal_every !== undefined && cfg.n_layer % (cfg.sal_every + 1) === 0) {
    const p = cfg.sal_every + 1;
    return Array.from({ length: cfg.n_layer }, (_, i) => ((i + 1) % p === 0 ? 'sal' : 'mamba2'));
  }
  return undefined;
}

/** Our canonical config.json (MODEL.md section 2); parseConfig of it gives `cfg` back. */
export function configToJson(cfg: ModelConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { model_type: cfg.model_type, d_model: cfg.d_model, n_layer: cfg.n_layer };
  if (cfg.model_type === 'taipan' && cfg.sal_every !== undefined) out['sal_every'] = cfg.sal_every;
  if (cfg.model_type === 'jamba') {
    Object.assign(out, { jamba_variant: cfg.jamba_variant, attn_every: cfg.attn_every, attn_offset: cfg.attn_offset });
  }
  Object.assign(out, {
    vocab_size: cfg.vocab_size,
    pad_vocab_size_multiple: cfg.pad_vocab_size_multiple,
    tie_embeddings: cfg.tie_embeddings,
    norm_eps: cfg.norm_eps,
  });
  if (cfg.layer_types.includes('mamba2') || (cfg.model_type !== 'transformer' && cfg.model_type !== 'jamba')) out['ssm'] = { ...cfg.ssm };
  if (cfg.mamba) out['mamba'] = { ...cfg.mamba };
  if (cfg.model_type === 'jamba' && cfg.jamba_variant === 'original') out['moe'] = cfg.moe ? { ...cfg.moe } : false;
  if (cfg.sal) out['sal'] = { ...cfg.sal, rope: cfg.sal.rope ? { ...cfg.sal.rope } : null };
  if (cfg.attn) out['attn'] = { ...cfg.attn };
  // layer_types only when the default pattern would not reproduce it.
  const def = defaultLayerTypes(cfg);
  if (!def || def.some((t, i) => t !== cfg.layer_types[i])) out['layer_types'] = [...cfg.layer_types];
  return out;
}

/**
 * The FFN after layer i's mixer in the original Jamba: a mixture of experts on the layers the
 * "moe" section names, a dense SwiGLU elsewhere. (Taipan, Transformer++ and the paper's Jamba
 * have dense SwiGLUs, inside their attention layers only.)
 */
export function ffnKind(cfg: ModelConfig, i: number): 'mlp' | 'moe' {
  return cfg.moe && i % cfg.moe.every === cfg.moe.offset ? 'moe' : 'mlp';
}

/** Parameter count; a tied embedding counts once. */
export function countParameters(cfg: ModelConfig): number {
  const d = cfg.d_model;
  const emb = cfg.vocab_padded * d;
  let total = emb + d /* norm_f */ + (cfg.tie_embeddings ? 0 : emb);
  const mamba =
    d + // norm
    cfg.d_in_proj * d +
    cfg.conv_dim * cfg.ssm.d_conv + cfg.conv_dim + // conv1d weight and bias
    3 * cfg.nheads + // dt_bias, A_log, D
    cfg.d_inner + // gated norm
    d * cfg.d_inner; // out_proj
  const dense = (dff: number) => d + 3 * dff * d; // norm2, fc1 + fc2
  const ffn = (i: number) => {
    const dff = cfg.attn!.d_ff;
    return ffnKind(cfg, i) === 'moe' ? d + cfg.moe!.n_experts * (d + 3 * dff * d) : dense(dff); // norm2, router rows + experts
  };
  cfg.layer_types.forEach((t, i) => {
    if (t === 'mamba2') total += mamba;
    else if (t === 'mamba1') {
      const { d_state: N, d_conv: K, expand, dt_rank: R } = cfg.mamba!;
      const di = expand * d;
      total +=
        d + // norm
        2 * di * d + // in_proj
        di * K + di + // conv1d weight and bias
        (R + 2 * N) * di + // x_proj
        di * R + di + // dt_proj weight and bias
        di * N + di + // A_log, D
        R + 2 * N + // dt, B, C norms
        d * di + // out_proj
        ffn(i);
    }
    else if (t === 'sal') {
      const s = cfg.sal!;
      const hd = s.n_heads * s.head_dim;
      total += d + (2 * d + 2) + 4 * d * hd + d + 3 * s.d_ff * d; // norm, gate, q/k/v/o, norm2, fc1 + fc2
    } else if (t === 'attention') {
      const a = cfg.attn!;
      const q = a.n_heads * a.head_dim;
      const kv = a.n_kv_heads * a.head_dim;
      total += d + 2 * q * d + 2 * kv * d + (cfg.model_type === 'jamba' && cfg.jamba_variant === 'original' ? ffn(i) : dense(a.d_ff)); // norm, q/o, k/v, FFN
    } else throw new ConfigError(`countParameters: layer type "${t}" is not supported yet`);
  });
  return total;
}

// ---- presets (MODEL.md section 8) ----

function taipanJson(d: number, n_layer: number, n_heads: number, d_ff: number): Record<string, unknown> {
  return {
    model_type: 'taipan', d_model: d, n_layer, sal_every: 6, vocab_size: 128256, pad_vocab_size_multiple: 16,
    tie_embeddings: true, norm_eps: 1e-5, ssm: { ...MAMBA2_SSM_DEFAULTS },
    sal: { n_heads, head_dim: 64, window: 2048, d_ff, kv: 'all', mix: 'residual', rope: null, capacity: 0.15 },
  };
}

function mamba2Json(d: number, n_layer: number, vocab_size: number): Record<string, unknown> {
  return {
    model_type: 'mamba2', d_model: d, n_layer, vocab_size, pad_vocab_size_multiple: 16,
    tie_embeddings: true, norm_eps: 1e-5, ssm: { ...MAMBA2_SSM_DEFAULTS },
  };
}

function transformerJson(d: number, n_layer: number, n_heads: number, d_ff: number): Record<string, unknown> {
  return {
    model_type: 'transformer', d_model: d, n_layer, vocab_size: 128256, pad_vocab_size_multiple: 16,
    tie_embeddings: true, norm_eps: 1e-5, attn: { n_heads, n_kv_heads: n_heads, head_dim: 64, d_ff, rope_theta: 10000 },
  };
}

/** The Taipan paper's Jamba: the Taipan trunk with full RoPE attention in place of each SAL. */
function jambaPaperJson(d: number, n_layer: number, n_heads: number, d_ff: number): Record<string, unknown> {
  return {
    model_type: 'jamba', jamba_variant: 'taipan-paper', d_model: d, n_layer, attn_every: 8, vocab_size: 128256,
    pad_vocab_size_multiple: 16, tie_embeddings: true, norm_eps: 1e-5, ssm: { ...MAMBA2_SSM_DEFAULTS },
    attn: { n_heads, n_kv_heads: n_heads, head_dim: 64, d_ff, rope_theta: 10000 },
  };
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

const PRESET_JSON: Record<string, Record<string, unknown>> = {
  'taipan-190m': taipanJson(768, 21, 12, 2048),
  'taipan-450m': taipanJson(1024, 42, 16, 2816),
  'taipan-1.3b': taipanJson(2048, 35, 32, 5504),
  // The official state-spaces checkpoints (GPT-NeoX tokenizer).
  'mamba2-130m': mamba2Json(768, 24, 50277),
  'mamba2-1.3b': mamba2Json(2048, 48, 50277),
  // Pure Mamba-2 baselines at the Taipan sizes, same vocabulary as Taipan.
  'mamba2-190m': mamba2Json(768, 24, 128256),
  'mamba2-450m': mamba2Json(1024, 48, 128256),
  'mamba2-1.3b-taipan': mamba2Json(2048, 40, 128256),
  // Transformer++ baselines at the Taipan sizes (MODEL.md section 8), same vocabulary.
  'transformer-190m': transformerJson(768, 12, 12, 2048),
  'transformer-450m': transformerJson(1024, 24, 16, 2816),
  'transformer-1.3b': transformerJson(2048, 20, 32, 5504),
  // The Taipan paper's Jamba baseline (MODEL.md section 8): 21 Mamba-2 + 3 attention, 35 + 5, 28 + 4.
  'jamba-190m': jambaPaperJson(768, 24, 12, 2048),
  'jamba-450m': jambaPaperJson(1024, 40, 16, 2816),
  'jamba-1.3b': jambaPaperJson(2048, 32, 32, 5504),
  // The original Jamba's shape (Jamba-v0.1, ~52B parameters, 12B active): a config to load real
  // checkpoints converted to our names; far too large for random weights on a small machine.
  'jamba-v0.1': {
    model_type: 'jamba', d_model: 4096, n_layer: 32, vocab_size: 65536, pad_vocab_size_multiple: 1,
    tie_embeddings: false, norm_eps: 1e-6, attn_every: 8, attn_offset: 4,
    mamba: { d_state: 16, d_conv: 4, expand: 2, dt_rank: 256 },
    attn: { n_heads: 32, n_kv_heads: 8, head_dim: 128, d_ff: 14336, rope_theta: null },
    moe: { n_experts: 16, top_k: 2, every: 2, offset: 1 },
  },
};

/** Frozen; use getPreset for a copy you may modify. */
export const PRESETS: Record<string, ModelConfig> = Object.fromEntries(
  Object.entries(PRESET_JSON).map(([name, j]) => [name, deepFreeze(parseConfig(j, `preset ${name}`))]),
);

export function getPreset(name: string): ModelConfig {
  const p = PRESETS[name];
  if (!p) throw new ConfigError(`unknown preset "${name}"; known: ${Object.keys(PRESETS).join(', ')}`);
  return parseConfig(configToJson(p), `preset ${name}`);
}
