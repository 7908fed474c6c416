// Float64 reference for the mixture-of-experts FFN of the Jamba baseline (MODEL.md §7):
// router softmax over all experts, the top_k kept with their probabilities NOT renormalised,
// and the weighted sum of the kept experts' SwiGLU MLPs. Plain and slow on purpose, like ops.ts.
import { checkLength, linear, swigluMlp } from './ops.js';

/**
 * The router. MODEL.md §7: p = softmax(logits[m]) over all E experts; keep the top_k by p, ties
 * toward the lower expert index. logits: [M, E]. Returns, per row, the kept experts in
 * descending probability (`experts`, [M*topK]) and their probabilities (`probs`, [M*topK]).
 * A row with no defined softmax (a NaN or +Infinity logit, or all -Infinity) keeps experts
 * 0..topK-1 with probability NaN: the native moe_route's documented rule.
 */
export function moeRouteRef(
  logits: ArrayLike<number>,
  M: number,
  E: number,
  topK: number,
): { experts: Int32Array; probs: Float64Array } {
  checkLength(logits, M * E, 'moeRouteRef: logits');
  if (!(topK >= 1 && topK <= E)) throw new Error(`moeRouteRef: topK ${topK} outside [1, ${E}]`);
  const experts = new Int32Array(M * topK);
  const probs = new Float64Array(M * topK);
  for (let m = 0; m < M; m++) {
    const row = Array.from({ length: E }, (_, e) => logits[m * E + e]!);
    const max = Math.max(...row);
    if (row.some(Number.isNaN) || !Number.isFinite(max)) {
      for (let j = 0; j < topK; j++) (experts[m * topK + j] = j), (probs[m * topK + j] = NaN);
      continue;
    }
    const ex = row.map((v) => Math.exp(v - max));
    const sum = ex.reduce((a, b) => a + b, 0);
    const p = ex.map((v) => v / sum);
    // A stable sort by descending p keeps equal probabilities in increasing expert order.
    const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => p[b]! - p[a]!);
    for (let j = 0; j < topK; j++) {
      experts[m * topK + j] = order[j]!;
      probs[m * topK + j] = p[order[j]!]!;
    }
  }
  return { experts, probs };
}

/**
 * The MoE FFN without its residual or norm. MODEL.md §7: out[m] = sum over the kept experts e of
 * p_e * fc2_e(swiglu(fc1_e x[m])), with the router logits x @ router^T.
 * x: [M, d]; router: [E, d]; fc1[e]: [2*dff, d] (rows up | gate); fc2[e]: [d, dff]. Returns [M, d].
 */
export function moeFfnRef(
  x: Float64Array,
  M: number,
  d: number,
  router: Float64Array,
  fc1: Float64Array[],
  fc2: Float64Array[],
  dff: number,
  topK: number,
): Float64Array {
  const E = fc1.length;
  checkLength(x, M * d, 'moeFfnRef: x');
  checkLength(router, E * d, 'moeFfnRef: router');
  if (fc2.length !== E) throw new Error(`moeFfnRef: ${E} fc1 matrices but ${fc2.length} fc2`);
  const { experts, probs } = moeRouteRef(linear(x, router, M, d, E), M, E, topK);
  const out = new Float64Array(M * d);
  for (let m = 0; m < M; m++) {
    const xm = x.subarray(m * d, (m + 1) * d);
    for (let j = 0; j < topK; j++) {
      const e = experts[m * topK + j]!;
      const y = swigluMlp(xm, fc1[e]!, fc2[e]!, 1, d, dff);
      for (let c = 0; c < d; c++) out[m * d + c] = out[m * d + c]! + probs[m * topK + j]! * y[c]!;
    }
  }
  return out;
}
