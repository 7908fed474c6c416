// The whole forward pass of MODEL.md §4 for model_type "mamba2" and "taipan", in float64.

import { mamba2Mixer, zeroMamba2State } from './mamba2.js';
import { add, embedding, linear, rmsnorm } from './ops.js';
import { emptySalState, salLayer } from './sal.js';
import type { LayerState, RefConfig, RefModelState, RefWeights } from './types.js';

export interface ReferenceForwardResult {
  logits: Float64Array; // [B*L, vocab_padded]
  state: RefModelState; // state after the last token of every sequence
  /** Realized selected fraction of each SAL in this call, by layer index (absent for Mamba-2). */
  selectedFractions: Map<number, number>;
  /** Selection mask of each SAL in this call, by layer index: [B*L]. */
  masks: Map<number, boolean[]>;
}

/** The embedding matrix; the HF transformers spelling is accepted as an alias (MODEL.md §3). */
export function embeddingWeight(cfg: RefConfig, weights: RefWeights): Float64Array {
  const E = weights.get('backbone.embedding.weight') ?? weights.get('backbone.embeddings.weight');
  if (E === undefined) throw new Error('missing weight backbone.embedding.weight');
  if (E.length !== cfg.vocab_padded * cfg.d_model) {
    throw new Error(`backbone.embedding.weight: expected ${cfg.vocab_padded * cfg.d_model} elements, got ${E.length}`);
  }
  return E;
}

/** Fresh (zero / empty) state for B sequences. */
export function initialState(cfg: RefConfig, B: number): RefModelState {
  const layers: LayerState[] = cfg.layer_types.map((t) =>
    t === 'mamba2' ? zeroMamba2State(cfg, B) : emptySalState(B),
  );
  return { batch: B, layers };
}

/**
 * Forward pass (MODEL.md §4):
 *   r = E[ids]
 *   for each layer:  mamba2: r = r + Mamba2(rms(r, norm));   sal: r = SAL(r)
 *   logits = rms(r, norm_f) @ E^T   (or lm_head^T when lm_head.weight is present)
 *
 * ids: B sequences of equal length L. state: carried from an earlier call, or null for a fresh
 * start; it is not modified. Returns logits [B*L, vocab_padded] (row b*L + t) and the new state.
 */
export function referenceForward(
  cfg: RefConfig,
  weights: RefWeights,
  ids: number[][],
  state: RefModelState | null,
): ReferenceForwardResult {
  const B = ids.length;
  if (B === 0) throw new Error('referenceForward: empty batch');
  const L = ids[0]!.length;
  for (const seq of ids) {
    if (seq.length !== L) throw new Error('referenceForward: sequences must have equal length');
  }
  if (cfg.layer_types.length !== cfg.n_layer) {
    throw new Error(`layer_types has ${cfg.layer_types.length} entries, n_layer is ${cfg.n_layer}`);
  }
  if (state !== null && state.batch !== B) {
    throw new Error(`state is for batch ${state.batch}, ids have batch ${B}`);
  }
  const d = cfg.d_model;
  const V = cfg.vocab_padded;
  const M = B * L;
  const eps = cfg.norm_eps;
  const prev = state ?? initialState(cfg, B);

  // r = E[ids]   (row b*L + t)
  const E = embeddingWeight(cfg, weights);
  const flatIds: number[] = [];
  for (const seq of ids) for (const id of seq) flatIds.push(id);
  let r = embedding(flatIds, E, V, d);

  const newLayers: LayerState[] = [];
  const selectedFractions = new Map<number, number>();
  const masks = new Map<number, boolean[]>();
  for (let i = 0; i < cfg.n_layer; i++) {
    const prefix = `backbone.layers.${i}`;
    const type = cfg.layer_types[i];
    const layerState = prev.layers[i];
    if (type === 'mamba2') {
      if (layerState === undefined || layerState.kind !== 'mamba2') throw new Error(`layer ${i}: bad state`);
      // r = r + Mamba2(rms(r, norm))
      const normW = weights.get(`${prefix}.norm.weight`);
      if (normW === undefined) throw new Error(`missing weight ${prefix}.norm.weight`);
      const u = rmsnorm(r, normW, M, d, eps);
      const mixed = mamba2Mixer(u, weights, prefix, cfg, B, L, layerState);
      r = add(r, mixed.out);
      newLayers.push(mixed.state);
    } else if (type === 'sal') {
      if (layerState === undefined || layerState.kind !== 'sal') throw new Error(`layer ${i}: bad state`);
      // r = SAL(r)  (contains its own norms and residuals)
      const res = salLayer(r, weights, prefix, cfg, B, L, layerState);
      r = res.out;
      newLayers.push(res.state);
      selectedFractions.set(i, res.selectedFraction);
      masks.set(i, res.mask);
    } else {
      throw new Error(`layer ${i}: unknown layer type ${String(type)}`);
    }
  }

  // logits = rms(r, norm_f) @ E^T  (tied) or @ lm_head^T
  const normF = weights.get('backbone.norm_f.weight');
  if (normF === undefined) throw new Error('missing weight backbone.norm_f.weight');
  const rf = rmsnorm(r, normF, M, d, eps);
  const lmHead = weights.get('lm_head.weight');
  if (lmHead === undefined && !cfg.tie_embeddings) {
    throw new Error('tie_embeddings is false but lm_head.weight is missing');
  }
  const head = lmHead ?? E;
  if (head.length !== V * d) throw new Error(`lm_head.weight: expected ${V * d} elements, got ${head.length}`);
  const logits = linear(rf, head, M, d, V);

  return { logits, state: { batch: B, layers: newLayers }, selectedFractions, masks };
}
