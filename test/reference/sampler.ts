// Plain reference for token sampling (MODEL.md §9), written to make the same choice as the
// native `sample` op (csrc/cpu/sampling.cpp) token for token, not merely the same distribution.
//
// So it follows the native conventions literally: the row and the settings are fp32 values
// (the penalty result is rounded to fp32 with Math.fround); weights w_i = exp((l_i - l_max)/T)
// and all sums are float64, summed in ascending id order; candidates are ordered by (logit
// descending, id ascending); the draw walks the final candidates in ascending id order and
// takes the first whose running sum exceeds u * total. Slow and literal: every step sorts the
// whole vocabulary.

export interface RefSampling {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
}

// ---------------------------------------------------------------------------------------------
// The generator: u(seed, step) = output number `step` of SplitMix64 started at mix64(seed)
// ---------------------------------------------------------------------------------------------

const MASK64 = (1n << 64n) - 1n;
const GAMMA = 0x9e3779b97f4a7c15n;

/** SplitMix64's finaliser, mod 2^64. */
export function mix64(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

/** The uniform number in [0, 1) that decides the draw for (seed, step); both read as uint32. */
export function uniform(seed: number, step: number): number {
  const key = mix64(BigInt(seed >>> 0));
  const z = mix64((key + (BigInt(step >>> 0) + 1n) * GAMMA) & MASK64);
  return Number(z >> 11n) / 2 ** 53;
}

// ---------------------------------------------------------------------------------------------
// The distribution a row is drawn from
// ---------------------------------------------------------------------------------------------

export interface RefDistribution {
  /** Greedy rows (temperature <= 0 or topK == 1) always take `argmax`. */
  greedy: boolean;
  argmax: number;
  /** The penalised fp32 logits of ids [0, vocab). */
  logits: Float64Array;
  /** The surviving candidates, ascending. Greedy: just the argmax. */
  kept: number[];
  /** Probability of every id [0, vocab) after truncation and renormalisation. */
  probs: Float64Array;
  /** Per-candidate weights exp((l - l_max) / T) and their sum (sampling rows only). */
  weights: Float64Array;
  total: number;
  /** log of the max-subtracted softmax normaliser at temperature 1 (for greedy logprobs). */
  logZ1: number;
}

/** row: at least `vocab` values (extra columns are padding); seen: ids to penalise. */
export function distribution(row: ArrayLike<number>, vocab: number, o: RefSampling, seen: Iterable<number> = []): RefDistribution {
  const f = Math.fround;
  const l = new Float64Array(vocab);
  for (let i = 0; i < vocab; i++) l[i] = f(row[i]!);

  // 1. Padded ids are simply not in `l`. 2. Repetition penalty, once per distinct id.
  const p = f(o.repetitionPenalty);
  if (p !== 1) {
    for (const id of new Set(seen)) {
      if (id < 0 || id >= vocab) continue;
      l[id] = f(l[id]! < 0 ? l[id]! * p : l[id]! / p);
    }
  }
  if (l.some(Number.isNaN)) throw new Error('reference sampler: NaN logit');
  let argmax = 0;
  for (let i = 1; i < vocab; i++) if (l[i]! > l[argmax]!) argmax = i; // ties keep the smaller id
  const m = l[argmax]!;
  let z1 = 0;
  for (let i = 0; i < vocab; i++) z1 += Math.exp(l[i]! - m);
  const logZ1 = Math.log(z1);

  const T = f(o.temperature);
  const weights = new Float64Array(vocab);
  const probs = new Float64Array(vocab);
  if (T <= 0 || o.topK === 1) {
    probs[argmax] = 1;
    return { greedy: true, argmax, logits: l, kept: [argmax], probs, weights, total: 0, logZ1 };
  }

  // 3. Temperature: weights relative to the max.
  for (let i = 0; i < vocab; i++) weights[i] = Math.exp((l[i]! - m) / T);
  const order = [...Array(vocab).keys()].sort((a, b) => l[b]! - l[a]! || a - b);
  const ascending = (ids: number[]) => [...ids].sort((a, b) => a - b);
  const sum = (ids: number[]) => ascending(ids).reduce((s, i) => s + weights[i]!, 0);

  // 4. top-k.
  let cand = o.topK > 0 && o.topK < vocab ? order.slice(0, o.topK) : order;
  // 5. top-p: the shortest prefix (in order) whose mass, relative to the candidates, reaches p.
  const topP = f(o.topP);
  if (topP < 1) {
    const need = topP * sum(cand);
    let cum = 0;
    let n = 0;
    while (n < cand.length) {
      cum += weights[cand[n++]!]!;
      if (cum >= need) break;
    }
    cand = cand.slice(0, n);
  }
  // 6. min-p: prob_i / max_prob = w_i, since the max's weight is exp(0) = 1.
  const minP = f(o.minP);
  if (minP > 0) cand = cand.filter((i) => weights[i]! >= minP);

  const kept = ascending(cand);
  const total = sum(kept);
  for (const i of kept) probs[i] = weights[i]! / total;
  return { greedy: false, argmax, logits: l, kept, probs, weights, total, logZ1 };
}

/** The token the native op picks for (seed, step), and its log-probability. */
export function sample(
  row: ArrayLike<number>,
  vocab: number,
  o: RefSampling,
  seed: number,
  step: number,
  seen: Iterable<number> = [],
): { token: number; logprob: number; dist: RefDistribution } {
  const d = distribution(row, vocab, o, seen);
  if (d.greedy) return { token: d.argmax, logprob: -d.logZ1, dist: d };
  // 7. Draw: walk the candidates in id order; the first whose running sum exceeds u * total.
  const target = uniform(seed, step) * d.total;
  let cum = 0;
  let token = -1;
  let last = -1;
  for (const i of d.kept) {
    if (d.weights[i]! <= 0) continue;
    last = i;
    cum += d.weights[i]!;
    if (target < cum) {
      token = i;
      break;
    }
  }
  if (token < 0) token = last;
  const T = Math.fround(o.temperature);
  const logprob = (d.logits[token]! - d.logits[d.argmax]!) / T - Math.log(d.total);
  return { token, logprob, dist: d };
}
