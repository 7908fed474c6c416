// Types shared by the reference files. RefConfig is a local structural copy of the resolved config
// shape that lib/config.ts produces (MODEL.md §2 plus the derived sizes); it is declared here on
// purpose so that the oracle does not depend on the code it checks.

export interface RefSsmConfig {
  d_state: number;
  d_conv: number;
  expand: number;
  headdim: number;
  ngroups: number;
  chunk_size: number; // unused by the reference (it runs the literal recurrence)
}

export interface RefSalConfig {
  n_heads: number;
  head_dim: number;
  window: number;
  d_ff: number;
  kv: 'all' | 'selected';
  mix: 'residual' | 'normalized';
  rope: { theta: number } | null;
  capacity: number; // training target only; nothing enforces it at inference (MODEL.md §6)
}

export interface RefConfig {
  model_type: 'taipan' | 'mamba2';
  d_model: number;
  n_layer: number;
  vocab_size: number;
  vocab_padded: number;
  norm_eps: number;
  tie_embeddings: boolean;
  layer_types: ('mamba2' | 'sal')[]; // resolved, length n_layer
  ssm: RefSsmConfig;
  sal?: RefSalConfig;
  d_inner: number;
  nheads: number;
  conv_dim: number;
  d_in_proj: number;
}

/** Checkpoint tensors by their MODEL.md §3 names, flattened row-major, in float64. */
export type RefWeights = Map<string, Float64Array>;

/** Decode state of one Mamba-2 layer for a batch of B sequences (MODEL.md §5). */
export interface Mamba2State {
  kind: 'mamba2';
  conv: Float64Array; // [B, conv_dim, d_conv-1]: last d_conv-1 raw pre-conv xBC inputs, oldest first
  ssm: Float64Array; // [B, H, P, N]
}

/** One past position of one sequence, as the SAL keeps it. */
export interface SalPastToken {
  k: Float64Array; // [n_heads*head_dim], after RoPE when rope is on
  v: Float64Array; // [n_heads*head_dim]
  selected: boolean; // m_j (used by kv: "selected")
}

/**
 * Decode state of one SAL for a batch of B sequences. For the reference this is simply every past
 * position's k/v (index = absolute position); the window is applied when attending.
 */
export interface SalState {
  kind: 'sal';
  seqs: SalPastToken[][]; // [B][position]
}

export type LayerState = Mamba2State | SalState;

/** Carried state of the whole model: one entry per layer, in layer order. */
export interface RefModelState {
  batch: number;
  layers: LayerState[];
}
