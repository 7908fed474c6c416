// The Mamba-2 mixer of MODEL.md §5, in float64, built from the plain ops in ops.ts.

import {
  conv1dSilu,
  gatedRmsnorm,
  getWeight,
  linear,
  sliceCols,
  ssdRecurrence,
} from './ops.js';
import type { Mamba2State, RefConfig, RefWeights } from './types.js';

/** Normalises "backbone.layers.3" and "backbone.layers.3." to "backbone.layers.3.". */
export function withDot(prefix: string): string {
  return prefix.endsWith('.') ? prefix : prefix + '.';
}

/** Zero state for B sequences (what "no state" means). */
export function zeroMamba2State(cfg: RefConfig, B: number): Mamba2State {
  const P = cfg.ssm.headdim;
  const N = cfg.ssm.d_state;
  return {
    kind: 'mamba2',
    conv: new Float64Array(B * cfg.conv_dim * (cfg.ssm.d_conv - 1)),
    ssm: new Float64Array(B * cfg.nheads * P * N),
  };
}

/**
 * Mamba-2 mixer (MODEL.md §5), for B sequences of L tokens each.
 *
 * u: [B*L, d_model], the already-normed input (the block is r + Mamba2(rms(r, norm)), MODEL.md §4;
 *    the norm and residual are the caller's).
 * layerPrefix: e.g. "backbone.layers.3" (a trailing dot is fine).
 * state: the carried state or null for zeros; it is not modified.
 * Returns out: [B*L, d_model] and the state after the last token.
 */
export function mamba2Mixer(
  u: Float64Array,
  weights: RefWeights,
  layerPrefix: string,
  cfg: RefConfig,
  B: number,
  L: number,
  state: Mamba2State | null,
): { out: Float64Array; state: Mamba2State } {
  const pre = withDot(layerPrefix) + 'mixer.';
  const d = cfg.d_model;
  const dInner = cfg.d_inner;
  const H = cfg.nheads;
  const P = cfg.ssm.headdim;
  const G = cfg.ssm.ngroups;
  const N = cfg.ssm.d_state;
  const K = cfg.ssm.d_conv;
  const convDim = cfg.conv_dim;
  const dInProj = cfg.d_in_proj;
  const M = B * L;

  // Sanity: the derived sizes of MODEL.md §2.
  if (dInner !== H * P) throw new Error(`mamba2Mixer: d_inner ${dInner} != nheads*headdim ${H * P}`);
  if (convDim !== dInner + 2 * G * N) throw new Error('mamba2Mixer: conv_dim != d_inner + 2*G*N');
  if (dInProj !== 2 * dInner + 2 * G * N + H) throw new Error('mamba2Mixer: d_in_proj mismatch');

  const inProj = getWeight(weights, pre + 'in_proj.weight', dInProj * d);
  const convW = getWeight(weights, pre + 'conv1d.weight', convDim * K); // [conv_dim, 1, K] flat
  const convB = getWeight(weights, pre + 'conv1d.bias', convDim);
  const dtBias = getWeight(weights, pre + 'dt_bias', H);
  const A_log = getWeight(weights, pre + 'A_log', H);
  const Dskip = getWeight(weights, pre + 'D', H);
  const normW = getWeight(weights, pre + 'norm.weight', dInner);
  const outProj = getWeight(weights, pre + 'out_proj.weight', d * dInner);

  // zxbcdt = u @ in_proj^T ;  z, xBC, dt_raw = split(zxbcdt, [d_inner, conv_dim, H])
  const zxbcdt = linear(u, inProj, M, d, dInProj);
  const z = sliceCols(zxbcdt, M, dInProj, 0, dInner);
  const xBCin = sliceCols(zxbcdt, M, dInProj, dInner, convDim);
  const dtRaw = sliceCols(zxbcdt, M, dInProj, dInner + convDim, H);

  // xBC = silu(causal depthwise conv(xBC_in) + bias); only x|B|C go through it (NOTES trap 3).
  const conv = conv1dSilu(xBCin, convW, convB, B, L, convDim, K, state === null ? null : state.conv);

  // x, Bm, Cm = split(xBC, [d_inner, G*N, G*N])
  const x = sliceCols(conv.out, M, convDim, 0, dInner);
  const Bm = sliceCols(conv.out, M, convDim, dInner, G * N);
  const Cm = sliceCols(conv.out, M, convDim, dInner + G * N, G * N);

  // A = -exp(A_log); dt = softplus(dt_raw + dt_bias); S_t = ...; y_t = S_t C_t + D x_t
  const ssd = ssdRecurrence(
    x,
    dtRaw,
    dtBias,
    A_log,
    Bm,
    Cm,
    Dskip,
    { B, L, H, P, G, N },
    state === null ? null : state.ssm,
  );

  // y = rms_grouped(y * silu(z), mixer.norm) over G groups of d_inner/G channels
  const yNormed = gatedRmsnorm(ssd.y, z, normW, M, dInner, G, cfg.norm_eps);

  // out = y @ out_proj^T
  const out = linear(yNormed, outProj, M, dInner, d);
  return { out, state: { kind: 'mamba2', conv: conv.stateOut, ssm: ssd.stateOut } };
}
