// Tiny configs and seeded random weights for tests (of the reference, and of the backends
// against it). Sizes are derived exactly as MODEL.md §2 says.

import { randn, randu } from './rng.js';
import type { RefConfig, RefSalConfig, RefWeights } from './types.js';

export interface TinyConfigOptions {
  model_type?: 'taipan' | 'mamba2';
  d_model?: number;
  vocab_size?: number;
  pad_vocab_size_multiple?: number;
  norm_eps?: number;
  tie_embeddings?: boolean;
  layer_types?: ('mamba2' | 'sal')[];
  d_state?: number;
  d_conv?: number;
  expand?: number;
  headdim?: number;
  ngroups?: number;
  chunk_size?: number;
  sal?: Partial<RefSalConfig>;
}

/** A small resolved config; every derived size follows MODEL.md §2. */
export function tinyConfig(o: TinyConfigOptions = {}): RefConfig {
  const model_type = o.model_type ?? 'taipan';
  const d_model = o.d_model ?? 16;
  const vocab_size = o.vocab_size ?? 37;
  const mult = o.pad_vocab_size_multiple ?? 8;
  const layer_types =
    o.layer_types ?? (model_type === 'taipan' ? ['mamba2', 'mamba2', 'sal', 'mamba2'] : ['mamba2', 'mamba2']);
  const ssm = {
    d_state: o.d_state ?? 4,
    d_conv: o.d_conv ?? 4,
    expand: o.expand ?? 2,
    headdim: o.headdim ?? 8,
    ngroups: o.ngroups ?? 1,
    chunk_size: o.chunk_size ?? 4,
  };
  const d_inner = ssm.expand * d_model;
  const nheads = d_inner / ssm.headdim;
  if (!Number.isInteger(nheads)) throw new Error('tinyConfig: d_inner % headdim != 0');
  if (nheads % ssm.ngroups !== 0) throw new Error('tinyConfig: nheads % ngroups != 0');
  const GN = ssm.ngroups * ssm.d_state;
  const cfg: RefConfig = {
    model_type,
    d_model,
    n_layer: layer_types.length,
    vocab_size,
    vocab_padded: Math.ceil(vocab_size / mult) * mult,
    norm_eps: o.norm_eps ?? 1e-5,
    tie_embeddings: o.tie_embeddings ?? true,
    layer_types,
    ssm,
    d_inner,
    nheads,
    conv_dim: d_inner + 2 * GN,
    d_in_proj: 2 * d_inner + 2 * GN + nheads,
  };
  if (layer_types.includes('sal')) {
    cfg.sal = {
      n_heads: 2,
      head_dim: 4,
      window: 5,
      d_ff: 24,
      kv: 'all',
      mix: 'residual',
      rope: null,
      capacity: 0.15,
      ...o.sal,
    };
  }
  return cfg;
}

/**
 * Seeded random weights for every tensor of MODEL.md §3, with magnitudes that keep activations
 * O(1) and the SSM decays meaningful: dt in [0.05, 0.5], A = -exp(A_log) in [-4, -0.5].
 * The SAL gate bias is 0, so roughly half the tokens are selected (both branches are exercised).
 */
export function randomWeights(cfg: RefConfig, seed: number): RefWeights {
  const w: RefWeights = new Map();
  let s = seed * 1000;
  const next = () => ++s;
  const d = cfg.d_model;
  const normal = (n: number, std: number) => randn(n, next(), std);
  const nearOne = (n: number) => normal(n, 0.1).map((v) => 1 + v);

  w.set('backbone.embedding.weight', normal(cfg.vocab_padded * d, 1));
  for (let i = 0; i < cfg.n_layer; i++) {
    const p = `backbone.layers.${i}.`;
    w.set(p + 'norm.weight', nearOne(d));
    if (cfg.layer_types[i] === 'mamba2') {
      const H = cfg.nheads;
      const K = cfg.ssm.d_conv;
      w.set(p + 'mixer.in_proj.weight', normal(cfg.d_in_proj * d, 1 / Math.sqrt(d)));
      w.set(p + 'mixer.conv1d.weight', normal(cfg.conv_dim * K, 1 / Math.sqrt(K)));
      w.set(p + 'mixer.conv1d.bias', normal(cfg.conv_dim, 0.1));
      // dt_bias = softplus^{-1}(dt) = log(expm1(dt)) for dt uniform in [0.05, 0.5]
      w.set(p + 'mixer.dt_bias', randu(H, next(), 0.05, 0.5).map((dt) => Math.log(Math.expm1(dt))));
      w.set(p + 'mixer.A_log', randu(H, next(), Math.log(0.5), Math.log(4)));
      w.set(p + 'mixer.D', randu(H, next(), 0.5, 1.5));
      w.set(p + 'mixer.norm.weight', nearOne(cfg.d_inner));
      w.set(p + 'mixer.out_proj.weight', normal(d * cfg.d_inner, 1 / Math.sqrt(cfg.d_inner)));
    } else {
      const sal = cfg.sal;
      if (sal === undefined) throw new Error('randomWeights: SAL layer without cfg.sal');
      const HD = sal.n_heads * sal.head_dim;
      w.set(p + 'mixer.gate.weight', normal(2 * d, 1 / Math.sqrt(d)));
      w.set(p + 'mixer.gate.bias', new Float64Array(2));
      w.set(p + 'mixer.q_proj.weight', normal(HD * d, 1 / Math.sqrt(d)));
      w.set(p + 'mixer.k_proj.weight', normal(HD * d, 1 / Math.sqrt(d)));
      w.set(p + 'mixer.v_proj.weight', normal(HD * d, 1 / Math.sqrt(d)));
      w.set(p + 'mixer.o_proj.weight', normal(d * HD, 1 / Math.sqrt(HD)));
      w.set(p + 'norm2.weight', nearOne(d));
      w.set(p + 'mlp.fc1.weight', normal(2 * sal.d_ff * d, 1 / Math.sqrt(d)));
      w.set(p + 'mlp.fc2.weight', normal(d * sal.d_ff, 1 / Math.sqrt(sal.d_ff)));
    }
  }
  w.set('backbone.norm_f.weight', nearOne(d));
  if (!cfg.tie_embeddings) w.set('lm_head.weight', normal(cfg.vocab_padded * d, 1));
  return w;
}
