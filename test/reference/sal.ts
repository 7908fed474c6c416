// The Selective Attention Layer of MODEL.md §6, in float64, one token at a time, with every option:
//   kv: "all" | "selected", mix: "residual" | "normalized", rope: null | {theta}, window.
// The same function serves prefill (state null) and decode (carried state, any L, e.g. L = 1).

import { withDot } from './mamba2.js';
import { add, getWeight, linear, rmsnorm, rope, sigmoid, softmax, swigluMlp } from './ops.js';
import type { RefConfig, RefSalConfig, RefWeights, SalPastToken, SalState } from './types.js';

export interface SalResult {
  out: Float64Array; // [B*L, d]: the new residual stream r''
  mask: boolean[]; // [B*L]: m_i, was token i selected?
  gateProb: Float64Array; // [B*L]: a_i = sigmoid(s_i1 - s_i0)
  selectedFraction: number; // realized fraction of selected tokens among these B*L
  state: SalState; // state after the last token (the input state is not modified)
}

/** Empty state for B sequences: no past positions. */
export function emptySalState(B: number): SalState {
  const seqs: SalPastToken[][] = [];
  for (let b = 0; b < B; b++) seqs.push([]);
  return { kind: 'sal', seqs };
}

/** Row i of a [M, n] matrix as a new array. */
function row(x: Float64Array, i: number, n: number): Float64Array {
  return x.slice(i * n, (i + 1) * n);
}

/** The SAL options, or an error if the config has none. */
export function salOptions(cfg: RefConfig): RefSalConfig {
  if (cfg.sal === undefined) throw new Error('SAL layer but the config has no `sal` section');
  return cfg.sal;
}

/**
 * One SAL over B sequences of L new tokens each (MODEL.md §6).
 *
 * r: [B*L, d] residual stream (NOT normed; the SAL contains its own norms and residuals).
 * layerPrefix: e.g. "backbone.layers.6".
 * state: past positions of each sequence (from an earlier call), or null for a fresh start.
 * The positions of the new tokens are the number of past positions plus t (absolute, from 0).
 */
export function salLayer(
  r: Float64Array,
  weights: RefWeights,
  layerPrefix: string,
  cfg: RefConfig,
  B: number,
  L: number,
  state: SalState | null,
): SalResult {
  const opt = salOptions(cfg);
  const pre = withDot(layerPrefix);
  const d = cfg.d_model;
  const nH = opt.n_heads;
  const hd = opt.head_dim;
  const HD = nH * hd;
  const dff = opt.d_ff;
  const M = B * L;
  if (!(opt.window >= 1)) throw new Error(`SAL window must be >= 1, got ${opt.window}`);

  const normW = getWeight(weights, pre + 'norm.weight', d);
  const gateW = getWeight(weights, pre + 'mixer.gate.weight', 2 * d);
  const gateB = getWeight(weights, pre + 'mixer.gate.bias', 2);
  const qW = getWeight(weights, pre + 'mixer.q_proj.weight', HD * d);
  const kW = getWeight(weights, pre + 'mixer.k_proj.weight', HD * d);
  const vW = getWeight(weights, pre + 'mixer.v_proj.weight', HD * d);
  const oW = getWeight(weights, pre + 'mixer.o_proj.weight', d * HD);
  const norm2W = getWeight(weights, pre + 'norm2.weight', d);
  const fc1 = getWeight(weights, pre + 'mlp.fc1.weight', 2 * dff * d);
  const fc2 = getWeight(weights, pre + 'mlp.fc2.weight', d * dff);

  // Copy the past of each sequence so that the caller's state is left as it was.
  if (state !== null && state.seqs.length !== B) {
    throw new Error(`SAL state holds ${state.seqs.length} sequences, batch is ${B}`);
  }
  const seqs: SalPastToken[][] = [];
  for (let b = 0; b < B; b++) seqs.push(state === null ? [] : state.seqs[b]!.slice());

  // x = rms(r, norm)
  const x = rmsnorm(r, normW, M, d, cfg.norm_eps);

  // s = x @ gate.weight^T + gate.bias ;  m_i = s_i1 > s_i0 ;  a_i = sigmoid(s_i1 - s_i0)
  const s = linear(x, gateW, M, d, 2, gateB);
  const mask: boolean[] = [];
  const gateProb = new Float64Array(M);
  for (let i = 0; i < M; i++) {
    mask.push(s[2 * i + 1]! > s[2 * i]!);
    gateProb[i] = sigmoid(s[2 * i + 1]! - s[2 * i]!);
  }

  // Absolute positions of the new tokens.
  const positions: number[] = [];
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) positions.push(seqs[b]!.length + t);
  }

  // k_j = x_j @ k_proj^T ; v_j = x_j @ v_proj^T for every new token (RoPE on k when enabled).
  let kNew = linear(x, kW, M, d, HD);
  const vNew = linear(x, vW, M, d, HD);
  if (opt.rope !== null) kNew = rope(kNew, M, nH, hd, positions, opt.rope.theta);

  const rPrime = r.slice(); // r'_i = r_i for unselected tokens
  const scale = 1 / Math.sqrt(hd);

  for (let b = 0; b < B; b++) {
    const past = seqs[b]!;
    for (let t = 0; t < L; t++) {
      const i = b * L + t;
      const pos = positions[i]!;
      // This token joins the past first, so that W(i) includes i itself.
      past.push({ k: row(kNew, i, HD), v: row(vNew, i, HD), selected: mask[i]! });

      if (!mask[i]) continue; // unselected: no query, no attention, no o_proj

      // q_i = x_i @ q_proj^T (RoPE at position pos when enabled)
      let q = linear(row(x, i, d), qW, 1, d, HD);
      if (opt.rope !== null) q = rope(q, 1, nH, hd, [pos], opt.rope.theta);

      // W(i) = { j : i - window < j <= i }, restricted to selected j under kv = "selected".
      const keys: SalPastToken[] = [];
      for (let j = Math.max(0, pos - opt.window + 1); j <= pos; j++) {
        const e = past[j]!;
        if (opt.kv === 'selected' && !e.selected) continue;
        keys.push(e);
      }

      // Per head: softmax_j (q . k_j / sqrt(head_dim)), then sum of probability * v_j.
      const ctx = new Float64Array(HD);
      for (let h = 0; h < nH; h++) {
        const scores: number[] = [];
        for (const e of keys) {
          let dot = 0;
          for (let c = 0; c < hd; c++) dot += q[h * hd + c]! * e.k[h * hd + c]!;
          scores.push(dot * scale);
        }
        const p = softmax(scores);
        for (let jj = 0; jj < keys.length; jj++) {
          for (let c = 0; c < hd; c++) ctx[h * hd + c] = ctx[h * hd + c]! + p[jj]! * keys[jj]!.v[h * hd + c]!;
        }
      }

      // o_i = o_proj(concat_heads(...))
      const o = linear(ctx, oW, 1, HD, d);

      // Mix (selected tokens only).
      const a = gateProb[i]!;
      for (let c = 0; c < d; c++) {
        const ri = r[i * d + c]!;
        if (opt.mix === 'residual') {
          // r'_i = (1 - a_i) * r_i + a_i * o_i
          rPrime[i * d + c] = (1 - a) * ri + a * o[c]!;
        } else {
          // r'_i = r_i + (1 - a_i) * x_i + a_i * o_i
          rPrime[i * d + c] = ri + (1 - a) * x[i * d + c]! + a * o[c]!;
        }
      }
    }
  }

  // r'' = r' + fc2(up * silu(gate)),  [up | gate] = rms(r', norm2) @ fc1^T   (every token)
  const h = rmsnorm(rPrime, norm2W, M, d, cfg.norm_eps);
  const out = add(rPrime, swigluMlp(h, fc1, fc2, M, d, dff));

  let nSel = 0;
  for (const m of mask) if (m) nSel++;
  return { out, mask, gateProb, selectedFraction: M === 0 ? 0 : nSel / M, state: { kind: 'sal', seqs } };
}

/** Decode form: one new token per sequence (r: [B, d]) on top of a carried state. */
export function salDecodeStep(
  r: Float64Array,
  weights: RefWeights,
  layerPrefix: string,
  cfg: RefConfig,
  B: number,
  state: SalState,
): SalResult {
  return salLayer(r, weights, layerPrefix, cfg, B, 1, state);
}
