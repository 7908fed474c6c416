// The Mamba-1 selective scan (mamba_ssm's selective_scan_fn with delta_softplus, delta_bias
// and z gating; Jamba's mixer), as a plain float64 recurrence for one sequence.

import { checkLength, silu, softplus } from './ops.js';

export interface Mamba1ScanInputs {
  /** [L, di] */
  x: ArrayLike<number>;
  /** [L, di], dt_proj's output before its bias */
  dt: ArrayLike<number>;
  /** [di] */
  dtBias: ArrayLike<number>;
  /** [di, N]; A = -exp(A_log) */
  aLog: ArrayLike<number>;
  /** [L, N] */
  B: ArrayLike<number>;
  /** [L, N] */
  C: ArrayLike<number>;
  /** [di] */
  D: ArrayLike<number>;
  /** [L, di], the gate */
  z: ArrayLike<number>;
}

/**
 * One sequence of L tokens, all arrays contiguous row-major. For each token t, channel c and
 * state index n, in order of t:
 *   delta = softplus(dt[t,c] + dtBias[c])          (identity above 20)
 *   h[c,n] = exp(delta * -exp(aLog[c,n])) * h[c,n] + delta * B[t,n] * x[t,c]
 *   y[t,c] = (sum_n C[t,n] * h[c,n] + D[c] * x[t,c]) * silu(z[t,c])
 * h starts from `state` ([di*N], not modified) or zeros. Returns y [L*di] and the final h.
 */
export function mamba1ScanRef(
  a: Mamba1ScanInputs,
  L: number,
  di: number,
  N: number,
  state?: Float64Array,
): { y: Float64Array; state: Float64Array } {
  checkLength(a.x, L * di, 'mamba1ScanRef: x');
  checkLength(a.dt, L * di, 'mamba1ScanRef: dt');
  checkLength(a.z, L * di, 'mamba1ScanRef: z');
  checkLength(a.B, L * N, 'mamba1ScanRef: B');
  checkLength(a.C, L * N, 'mamba1ScanRef: C');
  checkLength(a.dtBias, di, 'mamba1ScanRef: dtBias');
  checkLength(a.D, di, 'mamba1ScanRef: D');
  checkLength(a.aLog, di * N, 'mamba1ScanRef: aLog');
  if (state !== undefined) checkLength(state, di * N, 'mamba1ScanRef: state');

  const h = state ? Float64Array.from(state) : new Float64Array(di * N);
  const y = new Float64Array(L * di);
  for (let t = 0; t < L; t++) {
    for (let c = 0; c < di; c++) {
      const delta = softplus(a.dt[t * di + c]! + a.dtBias[c]!);
      const xv = a.x[t * di + c]!;
      let sum = 0;
      for (let n = 0; n < N; n++) {
        const A = -Math.exp(a.aLog[c * N + n]!);
        const i = c * N + n;
        h[i] = Math.exp(delta * A) * h[i]! + delta * a.B[t * N + n]! * xv;
        sum += a.C[t * N + n]! * h[i]!;
      }
      y[t * di + c] = (sum + a.D[c]! * xv) * silu(a.z[t * di + c]!);
    }
  }
  return { y, state: h };
}
