// The Transformer++ baseline of MODEL.md §7 in float64, one token at a time:
//   per layer  r = r + attn(rms(r, norm));  r = r + swiglu(rms(r, norm2))
//   attn: q, k, v projections, RoPE (theta, rotate-half, absolute positions) on q and k, full
//   causal softmax attention over every past position and the token itself, query head h reading
//   key/value head floor(h / (n_heads / n_kv_heads)) (GQA), then o_proj.
// The same function serves prefill (no state) and decode (a carried state, any L).

import { add, getWeight, linear, rmsnorm, rope, softmax, swigluMlp } from './ops.js';
import type { RefWeights } from './types.js';

/** The parts of a resolved transformer config the reference reads (a local copy, see types.ts). */
export interface RefTransformerConfig {
  d_model: number;
  n_layer: number;
  vocab_padded: number;
  norm_eps: number;
  tie_embeddings: boolean;
  attn: { n_heads: number; n_kv_heads: number; head_dim: number; d_ff: number; rope_theta: number };
}

/** Every past position's key (after RoPE) and value, per layer and sequence: [layer][b][position]. */
export interface TransformerState {
  batch: number;
  layers: { k: Float64Array[]; v: Float64Array[] }[][];
}

export function emptyTransformerState(cfg: RefTransformerConfig, B: number): TransformerState {
  return {
    batch: B,
    layers: Array.from({ length: cfg.n_layer }, () => Array.from({ length: B }, () => ({ k: [], v: [] }))),
  };
}

/**
 * Causal attention of one query (all heads, after RoPE) over `keys`/`values` (every position the
 * query may see, itself included): per query head h, with g = floor(h / (nHeads / nKvHeads)),
 *   ctx_h = sum_j softmax_j(q_h . k_{j,g} / sqrt(headDim)) v_{j,g}.
 * q: [nHeads*headDim]; keys, values: [nKvHeads*headDim] each. Returns [nHeads*headDim].
 */
export function attendAll(
  q: ArrayLike<number>,
  keys: ArrayLike<number>[],
  values: ArrayLike<number>[],
  nHeads: number,
  nKvHeads: number,
  headDim: number,
): Float64Array {
  const ctx = new Float64Array(nHeads * headDim);
  const group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(headDim);
  for (let h = 0; h < nHeads; h++) {
    const g = Math.floor(h / group);
    const scores = keys.map((k) => {
      let dot = 0;
      for (let c = 0; c < headDim; c++) dot += q[h * headDim + c]! * k[g * headDim + c]!;
      return dot * scale;
    });
    const p = softmax(scores);
    for (let j = 0; j < keys.length; j++) {
      for (let c = 0; c < headDim; c++) ctx[h * headDim + c] = ctx[h * headDim + c]! + p[j]! * values[j]![g * headDim + c]!;
    }
  }
  return ctx;
}

function row(x: Float64Array, i: number, n: number): Float64Array {
  return x.slice(i * n, (i + 1) * n);
}

/**
 * Forward pass over B sequences of L new tokens (ids[b][t]), continuing `state` (not modified)
 * or from position 0. Returns logits [B*L, vocab_padded] (row b*L + t) and the new state.
 */
export function transformerForward(
  cfg: RefTransformerConfig,
  weights: RefWeights,
  ids: number[][],
  state: TransformerState | null,
): { logits: Float64Array; state: TransformerState } {
  const B = ids.length;
  const L = ids[0]!.length;
  const d = cfg.d_model;
  const { n_heads: nH, n_kv_heads: nKv, head_dim: hd, d_ff: dff, rope_theta: theta } = cfg.attn;
  const HQ = nH * hd;
  const HKV = nKv * hd;
  const M = B * L;
  const eps = cfg.norm_eps;
  const prev = state ?? emptyTransformerState(cfg, B);
  if (prev.batch !== B) throw new Error(`state is for batch ${prev.batch}, ids have batch ${B}`);

  // r = E[ids]
  const E = getWeight(weights, 'backbone.embedding.weight', cfg.vocab_padded * d);
  let r: Float64Array = new Float64Array(M * d);
  ids.forEach((seq, b) => seq.forEach((id, t) => r.set(E.subarray(id * d, (id + 1) * d), (b * L + t) * d)));

  const layers: TransformerState['layers'] = [];
  for (let i = 0; i < cfg.n_layer; i++) {
    const pre = `backbone.layers.${i}.`;
    const norm = getWeight(weights, pre + 'norm.weight', d);
    const qW = getWeight(weights, pre + 'mixer.q_proj.weight', HQ * d);
    const kW = getWeight(weights, pre + 'mixer.k_proj.weight', HKV * d);
    const vW = getWeight(weights, pre + 'mixer.v_proj.weight', HKV * d);
    const oW = getWeight(weights, pre + 'mixer.o_proj.weight', d * HQ);
    const norm2 = getWeight(weights, pre + 'norm2.weight', d);
    const fc1 = getWeight(weights, pre + 'mlp.fc1.weight', 2 * dff * d);
    const fc2 = getWeight(weights, pre + 'mlp.fc2.weight', d * dff);

    // x = rms(r, norm); q, k, v; RoPE at each token's absolute position (past length + t).
    const x = rmsnorm(r, norm, M, d, eps);
    const positions = Array.from({ length: M }, (_, m) => prev.layers[i]![Math.floor(m / L)]!.k.length + (m % L));
    const q = rope(linear(x, qW, M, d, HQ), M, nH, hd, positions, theta);
    const k = rope(linear(x, kW, M, d, HKV), M, nKv, hd, positions, theta);
    const v = linear(x, vW, M, d, HKV);

    // Token by token: it joins its sequence's past, then attends to all of it.
    const ctx = new Float64Array(M * HQ);
    const seqs = prev.layers[i]!.map((s) => ({ k: s.k.slice(), v: s.v.slice() }));
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < L; t++) {
        const m = b * L + t;
        seqs[b]!.k.push(row(k, m, HKV));
        seqs[b]!.v.push(row(v, m, HKV));
        ctx.set(attendAll(row(q, m, HQ), seqs[b]!.k, seqs[b]!.v, nH, nKv, hd), m * HQ);
      }
    }
    layers.push(seqs);

    // r = r + o_proj(ctx); r = r + fc2(up * silu(gate)), [up | gate] = rms(r, norm2) @ fc1^T
    r = add(r, linear(ctx, oW, M, HQ, d));
    r = add(r, swigluMlp(rmsnorm(r, norm2, M, d, eps), fc1, fc2, M, d, dff));
  }

  // logits = rms(r, norm_f) @ E^T (tied) or @ lm_head^T
  const rf = rmsnorm(r, getWeight(weights, 'backbone.norm_f.weight', d), M, d, eps);
  const head = weights.get('lm_head.weight') ?? E;
  return { logits: linear(rf, head, M, d, cfg.vocab_padded), state: { batch: B, layers } };
}
