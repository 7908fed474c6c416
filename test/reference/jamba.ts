// The Jamba baselines of MODEL.md §7 in float64, written from the spec, for B sequences of L new
// tokens continuing a carried state (or from position 0):
//   original:      per layer  r = r + mixer(rms(r, norm));  r = r + ffn(rms(r, norm2))
//                  mixer = Mamba-1 (dt, B, C normed) or attention without positions;
//                  ffn = dense SwiGLU, or a top-k mixture of SwiGLU experts on the MoE layers
//   taipan-paper:  Mamba-2 blocks (r = r + Mamba2(rms(r))) and Transformer++ attention blocks
//                  with RoPE and a dense SwiGLU.
// Mamba-2 reuses mamba2.ts, attention reuses transformer.ts's attendAll, the scan and the MoE
// reuse mamba1.ts and moe.ts: each piece is checked on its own by its op tests.

import { mamba1ScanRef } from './mamba1.js';
import { mamba2Mixer, zeroMamba2State } from './mamba2.js';
import { moeFfnRef } from './moe.js';
import { add, conv1dSilu, getWeight, linear, rmsnorm, rope, sliceCols, swigluMlp } from './ops.js';
import { attendAll } from './transformer.js';
import type { Mamba2State, RefConfig, RefWeights } from './types.js';

/** The parts of a resolved jamba config the reference reads (a local copy, see types.ts). */
export interface RefJambaConfig {
  d_model: number;
  n_layer: number;
  vocab_padded: number;
  norm_eps: number;
  tie_embeddings: boolean;
  jamba_variant: 'original' | 'taipan-paper';
  layer_types: string[];
  attn: { n_heads: number; n_kv_heads: number; head_dim: number; d_ff: number; rope_theta: number | null };
  mamba?: { d_state: number; d_conv: number; expand: number; dt_rank: number };
  moe?: { n_experts: number; top_k: number; every: number; offset: number };
  // Mamba-2 sizes (taipan-paper), as mamba2.ts reads them
  ssm: RefConfig['ssm'];
  d_inner: number;
  nheads: number;
  conv_dim: number;
  d_in_proj: number;
}

interface Mamba1LayerState {
  kind: 'mamba1';
  conv: Float64Array; // [B, d_inner, d_conv-1]
  ssm: Float64Array[]; // per sequence [d_inner * d_state]
}
interface AttentionLayerState {
  kind: 'attention';
  seqs: { k: Float64Array[]; v: Float64Array[] }[]; // [b] every past position's key and value
}
type JambaLayerState = Mamba1LayerState | AttentionLayerState | Mamba2State;

export interface JambaState {
  batch: number;
  layers: JambaLayerState[];
}

function rows(x: Float64Array, r0: number, r1: number, n: number): Float64Array {
  return x.slice(r0 * n, r1 * n);
}

function emptyState(cfg: RefJambaConfig, B: number): JambaState {
  const layers = cfg.layer_types.map((t): JambaLayerState => {
    if (t === 'mamba2') return zeroMamba2State(cfg as unknown as RefConfig, B);
    if (t === 'attention') return { kind: 'attention', seqs: Array.from({ length: B }, () => ({ k: [], v: [] })) };
    const m = cfg.mamba!;
    const di = m.expand * cfg.d_model;
    return {
      kind: 'mamba1',
      conv: new Float64Array(B * di * (m.d_conv - 1)),
      ssm: Array.from({ length: B }, () => new Float64Array(di * m.d_state)),
    };
  });
  return { batch: B, layers };
}

/** Mamba-1 mixer of the original Jamba on normed input u [B*L, d]. */
function mamba1Mixer(cfg: RefJambaConfig, w: RefWeights, pre: string, u: Float64Array, B: number, L: number, st: Mamba1LayerState) {
  const d = cfg.d_model;
  const { d_state: N, d_conv: K, expand, dt_rank: R } = cfg.mamba!;
  const di = expand * d;
  const M = B * L;
  const eps = cfg.norm_eps;
  const g = (name: string, n: number) => getWeight(w, pre + 'mixer.' + name, n);

  // [x | z] = u @ in_proj^T; x = silu(conv(x)) with the carried conv state.
  const xz = linear(u, g('in_proj.weight', 2 * di * d), M, d, 2 * di);
  const xRaw = sliceCols(xz, M, 2 * di, 0, di);
  const z = sliceCols(xz, M, 2 * di, di, di);
  const conv = conv1dSilu(xRaw, g('conv1d.weight', di * K), g('conv1d.bias', di), B, L, di, K, st.conv);
  const x = conv.out;

  // [dt | B | C] = x @ x_proj^T, each RMS-normed; dt = dt @ dt_proj^T (bias in the scan).
  const xdbl = linear(x, g('x_proj.weight', (R + 2 * N) * di), M, di, R + 2 * N);
  const dtLow = rmsnorm(sliceCols(xdbl, M, R + 2 * N, 0, R), g('dt_layernorm.weight', R), M, R, eps);
  const Bm = rmsnorm(sliceCols(xdbl, M, R + 2 * N, R, N), g('b_layernorm.weight', N), M, N, eps);
  const Cm = rmsnorm(sliceCols(xdbl, M, R + 2 * N, R + N, N), g('c_layernorm.weight', N), M, N, eps);
  const dt = linear(dtLow, g('dt_proj.weight', di * R), M, R, di);

  const dtBias = g('dt_proj.bias', di);
  const aLog = g('A_log', di * N);
  const D = g('D', di);
  const y = new Float64Array(M * di);
  const ssm: Float64Array[] = [];
  for (let b = 0; b < B; b++) {
    const r = (t: Float64Array, n: number) => rows(t, b * L, (b + 1) * L, n);
    const res = mamba1ScanRef(
      { x: r(x, di), dt: r(dt, di), dtBias, aLog, B: r(Bm, N), C: r(Cm, N), D, z: r(z, di) },
      L,
      di,
      N,
      st.ssm[b],
    );
    y.set(res.y, b * L * di);
    ssm.push(res.state);
  }
  const out = linear(y, g('out_proj.weight', d * di), M, di, d);
  return { out, state: { kind: 'mamba1' as const, conv: conv.stateOut, ssm } };
}

/** Causal attention over each sequence's past and the chunk; RoPE unless rope_theta is null. */
function attentionMixer(cfg: RefJambaConfig, w: RefWeights, pre: string, x: Float64Array, B: number, L: number, st: AttentionLayerState) {
  const d = cfg.d_model;
  const { n_heads: nH, n_kv_heads: nKv, head_dim: hd, rope_theta: theta } = cfg.attn;
  const HQ = nH * hd;
  const HKV = nKv * hd;
  const M = B * L;
  const g = (name: string, n: number) => getWeight(w, pre + 'mixer.' + name, n);
  const positions = Array.from({ length: M }, (_, m) => st.seqs[Math.floor(m / L)]!.k.length + (m % L));
  let q = linear(x, g('q_proj.weight', HQ * d), M, d, HQ);
  let k = linear(x, g('k_proj.weight', HKV * d), M, d, HKV);
  const v = linear(x, g('v_proj.weight', HKV * d), M, d, HKV);
  if (theta !== null) {
    q = rope(q, M, nH, hd, positions, theta);
    k = rope(k, M, nKv, hd, positions, theta);
  }
  const ctx = new Float64Array(M * HQ);
  const seqs = st.seqs.map((s) => ({ k: s.k.slice(), v: s.v.slice() }));
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      const m = b * L + t;
      seqs[b]!.k.push(rows(k, m, m + 1, HKV));
      seqs[b]!.v.push(rows(v, m, m + 1, HKV));
      ctx.set(attendAll(rows(q, m, m + 1, HQ), seqs[b]!.k, seqs[b]!.v, nH, nKv, hd), m * HQ);
    }
  }
  return { out: linear(ctx, g('o_proj.weight', d * HQ), M, HQ, d), state: { kind: 'attention' as const, seqs } };
}

/** ffn(rms(r, norm2)) of layer i: dense SwiGLU, or the mixture of experts on MoE layers. */
function feedForward(cfg: RefJambaConfig, w: RefWeights, pre: string, i: number, r: Float64Array, M: number): Float64Array {
  const d = cfg.d_model;
  const dff = cfg.attn.d_ff;
  const h = rmsnorm(r, getWeight(w, pre + 'norm2.weight', d), M, d, cfg.norm_eps);
  const moe = cfg.jamba_variant === 'original' && cfg.moe && i % cfg.moe.every === cfg.moe.offset ? cfg.moe : undefined;
  if (!moe) return swigluMlp(h, getWeight(w, pre + 'mlp.fc1.weight', 2 * dff * d), getWeight(w, pre + 'mlp.fc2.weight', d * dff), M, d, dff);
  const E = moe.n_experts;
  const fc1 = Array.from({ length: E }, (_, e) => getWeight(w, `${pre}moe.experts.${e}.fc1.weight`, 2 * dff * d));
  const fc2 = Array.from({ length: E }, (_, e) => getWeight(w, `${pre}moe.experts.${e}.fc2.weight`, d * dff));
  return moeFfnRef(h, M, d, getWeight(w, pre + 'moe.router.weight', E * d), fc1, fc2, dff, moe.top_k);
}

/**
 * Forward pass over B sequences of L new tokens (ids[b][t]), continuing `state` (not modified)
 * or from position 0. Returns logits [B*L, vocab_padded] (row b*L + t) and the new state.
 */
export function jambaForward(
  cfg: RefJambaConfig,
  weights: RefWeights,
  ids: number[][],
  state: JambaState | null,
): { logits: Float64Array; state: JambaState } {
  const B = ids.length;
  const L = ids[0]!.length;
  const d = cfg.d_model;
  const M = B * L;
  const eps = cfg.norm_eps;
  const prev = state ?? emptyState(cfg, B);
  if (prev.batch !== B) throw new Error(`state is for batch ${B}, ids have batch ${prev.batch}`);

  const E = getWeight(weights, 'backbone.embedding.weight', cfg.vocab_padded * d);
  let r: Float64Array = new Float64Array(M * d);
  ids.forEach((seq, b) => seq.forEach((id, t) => r.set(E.subarray(id * d, (id + 1) * d), (b * L + t) * d)));

  const layers: JambaLayerState[] = [];
  cfg.layer_types.forEach((kind, i) => {
    const pre = `backbone.layers.${i}.`;
    const x = rmsnorm(r, getWeight(weights, pre + 'norm.weight', d), M, d, eps);
    const st = prev.layers[i]!;
    if (kind === 'mamba2') {
      // A Mamba-2 block of the paper's variant: no FFN.
      const res = mamba2Mixer(x, weights, `backbone.layers.${i}`, cfg as unknown as RefConfig, B, L, st as Mamba2State);
      r = add(r, res.out);
      layers.push(res.state);
      return;
    }
    const res = kind === 'attention' ? attentionMixer(cfg, weights, pre, x, B, L, st as AttentionLayerState) : mamba1Mixer(cfg, weights, pre, x, B, L, st as Mamba1LayerState);
    r = add(r, res.out);
    r = add(r, feedForward(cfg, weights, pre, i, r, M));
    layers.push(res.state);
  });

  const rf = rmsnorm(r, getWeight(weights, 'backbone.norm_f.weight', d), M, d, eps);
  const head = weights.get('lm_head.weight') ?? E;
  return { logits: linear(rf, head, M, d, cfg.vocab_padded), state: { batch: B, layers } };
}
