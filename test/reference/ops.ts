// Plain float64 reference ops for the model contract (/work/shared/spec/MODEL.md).
//
// Every array is a row-major Float64Array; dims are passed explicitly. No op mutates its inputs.
// These are deliberately slow and literal: each one is meant to be read top to bottom next to
// the spec line it implements (cited as "MODEL.md §N").

// ---------------------------------------------------------------------------------------------
// Scalar activations
// ---------------------------------------------------------------------------------------------

/** sigmoid(v) = 1 / (1 + exp(-v)). MODEL.md §6: a_i = sigmoid(s_i1 - s_i0). */
export function sigmoid(v: number): number {
  return 1 / (1 + Math.exp(-v));
}

/** silu(v) = v * sigmoid(v). MODEL.md §5 (conv output, gate), §6 (SwiGLU). */
export function silu(v: number): number {
  return v * sigmoid(v);
}

/** softplus(v) = log(1 + exp(v)), and exactly v for v > 20. MODEL.md §5 / NOTES trap 4. */
export function softplus(v: number): number {
  if (v > 20) return v;
  return Math.log1p(Math.exp(v));
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/** Throws unless `arr` has exactly `n` elements; `what` names the array in the message. */
export function checkLength(arr: ArrayLike<number>, n: number, what: string): void {
  if (arr.length !== n) {
    throw new Error(`${what}: expected ${n} elements, got ${arr.length}`);
  }
}

/** Looks up a tensor by its checkpoint name (MODEL.md §3) and checks its element count. */
export function getWeight(weights: Map<string, Float64Array>, name: string, n: number): Float64Array {
  const w = weights.get(name);
  if (w === undefined) throw new Error(`missing weight ${name}`);
  checkLength(w, n, name);
  return w;
}

/** Elementwise a + b. */
export function add(a: Float64Array, b: Float64Array): Float64Array {
  checkLength(b, a.length, 'add: b');
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! + b[i]!;
  return out;
}

/** Columns [start, start + width) of a [M, cols] matrix, as a new [M, width] matrix. */
export function sliceCols(x: Float64Array, M: number, cols: number, start: number, width: number): Float64Array {
  checkLength(x, M * cols, 'sliceCols: x');
  const out = new Float64Array(M * width);
  for (let m = 0; m < M; m++) {
    for (let j = 0; j < width; j++) out[m * width + j] = x[m * cols + start + j]!;
  }
  return out;
}

/** Numerically plain softmax of a list (max-subtracted so exp never overflows). */
export function softmax(v: number[]): number[] {
  let max = -Infinity;
  for (const a of v) max = Math.max(max, a);
  const e = v.map((a) => Math.exp(a - max));
  let sum = 0;
  for (const a of e) sum += a;
  return e.map((a) => a / sum);
}

// ---------------------------------------------------------------------------------------------
// Embedding, norms, linear
// ---------------------------------------------------------------------------------------------

/**
 * Embedding lookup. MODEL.md §4: r = E[ids].
 * ids: M token ids; E: [V, d]. Returns [M, d].
 */
export function embedding(ids: ArrayLike<number>, E: Float64Array, V: number, d: number): Float64Array {
  checkLength(E, V * d, 'embedding: E');
  const M = ids.length;
  const out = new Float64Array(M * d);
  for (let m = 0; m < M; m++) {
    const id = ids[m]!;
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new Error(`embedding: id ${id} at position ${m} is outside [0, ${V})`);
    }
    for (let j = 0; j < d; j++) out[m * d + j] = E[id * d + j]!;
  }
  return out;
}

/**
 * RMSNorm over each row. MODEL.md header: rms(u) = u * rsqrt(mean(u^2) + eps) * weight.
 * x: [M, d]; w: [d]. Returns [M, d].
 */
export function rmsnorm(x: Float64Array, w: Float64Array, M: number, d: number, eps: number): Float64Array {
  checkLength(x, M * d, 'rmsnorm: x');
  checkLength(w, d, 'rmsnorm: w');
  const out = new Float64Array(M * d);
  for (let m = 0; m < M; m++) {
    let sumSq = 0;
    for (let j = 0; j < d; j++) sumSq += x[m * d + j]! * x[m * d + j]!;
    const inv = 1 / Math.sqrt(sumSq / d + eps);
    for (let j = 0; j < d; j++) out[m * d + j] = x[m * d + j]! * inv * w[j]!;
  }
  return out;
}

/**
 * Linear layer, y = x W^T (+ bias). MODEL.md notation: `x @ W^T` with W stored [out, in].
 * x: [M, K]; W: [N, K]; bias: [N] or omitted. Returns [M, N].
 */
export function linear(
  x: Float64Array,
  W: Float64Array,
  M: number,
  K: number,
  N: number,
  bias?: Float64Array,
): Float64Array {
  checkLength(x, M * K, 'linear: x');
  checkLength(W, N * K, 'linear: W');
  if (bias !== undefined) checkLength(bias, N, 'linear: bias');
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = bias === undefined ? 0 : bias[n]!;
      for (let k = 0; k < K; k++) acc += x[m * K + k]! * W[n * K + k]!;
      y[m * N + n] = acc;
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// Mamba-2 pieces (MODEL.md §5)
// ---------------------------------------------------------------------------------------------

/**
 * Causal depthwise conv1d followed by SiLU. MODEL.md §5:
 *   xBC[t,c] = silu( bias[c] + sum_{k=0..K-1} w[c,k] * in[t-(K-1)+k, c] ),  zeros before t = 0.
 * With a carried state, "before t = 0" is the state instead of zeros.
 *
 * x: [B, L, C] (raw, pre-conv inputs); w: [C, K] (w[c, K-1] multiplies the current token);
 * bias: [C]; stateIn: [B, C, K-1] = the last K-1 raw inputs of each channel, oldest first, or null
 * for zeros. Returns out [B, L, C] and stateOut [B, C, K-1] (the last K-1 raw inputs, oldest first,
 * taken from stateIn followed by x, so it is right even when L < K-1).
 */
export function conv1dSilu(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array,
  B: number,
  L: number,
  C: number,
  K: number,
  stateIn: Float64Array | null,
): { out: Float64Array; stateOut: Float64Array } {
  checkLength(x, B * L * C, 'conv1dSilu: x');
  checkLength(w, C * K, 'conv1dSilu: w');
  checkLength(bias, C, 'conv1dSilu: bias');
  const S = K - 1; // state length per channel
  if (stateIn !== null) checkLength(stateIn, B * C * S, 'conv1dSilu: stateIn');

  const out = new Float64Array(B * L * C);
  const stateOut = new Float64Array(B * C * S);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      // The full input history of this channel: S earlier inputs (state or zeros), then x.
      const hist: number[] = [];
      for (let s = 0; s < S; s++) hist.push(stateIn === null ? 0 : stateIn[(b * C + c) * S + s]!);
      for (let t = 0; t < L; t++) hist.push(x[(b * L + t) * C + c]!);
      // Token t sits at hist[S + t]; in[t-(K-1)+k] sits at hist[t + k].
      for (let t = 0; t < L; t++) {
        let acc = bias[c]!;
        for (let k = 0; k < K; k++) acc += w[c * K + k]! * hist[t + k]!;
        out[(b * L + t) * C + c] = silu(acc);
      }
      // New state: the last S entries of the history, oldest first.
      for (let s = 0; s < S; s++) stateOut[(b * C + c) * S + s] = hist[L + s]!;
    }
  }
  return { out, stateOut };
}

export interface SsdDims {
  B: number; // batch
  L: number; // tokens per sequence
  H: number; // SSM heads
  P: number; // head dim (headdim)
  G: number; // groups of B/C
  N: number; // state size (d_state)
}

/**
 * The literal per-token SSD recurrence of MODEL.md §5 (not the chunked algorithm):
 *   A  = -exp(A_log[h]);  dt = softplus(dtRaw[t,h] + dtBias[h])
 *   S_t = exp(dt*A) * S_{t-1} + dt * x_t (outer) B_t        S: [P, N]
 *   y_t = S_t @ C_t + D[h] * x_t
 * Head h reads group g = floor(h / (H/G)) of B and C (contiguous heads share a group).
 *
 * x: [B*L, H*P] (head-major, h*P+p); dtRaw: [B*L, H]; dtBias, A_log, D: [H];
 * Bm, Cm: [B*L, G*N] (group-major, g*N+n); stateIn: [B, H, P, N] or null for zeros.
 * Returns y: [B*L, H*P] and stateOut: [B, H, P, N] (S after the last token).
 */
export function ssdRecurrence(
  x: Float64Array,
  dtRaw: Float64Array,
  dtBias: Float64Array,
  A_log: Float64Array,
  Bm: Float64Array,
  Cm: Float64Array,
  D: Float64Array,
  dims: SsdDims,
  stateIn: Float64Array | null,
): { y: Float64Array; stateOut: Float64Array } {
  const { B, L, H, P, G, N } = dims;
  if (H % G !== 0) throw new Error(`ssdRecurrence: H=${H} is not a multiple of G=${G}`);
  checkLength(x, B * L * H * P, 'ssdRecurrence: x');
  checkLength(dtRaw, B * L * H, 'ssdRecurrence: dtRaw');
  checkLength(dtBias, H, 'ssdRecurrence: dtBias');
  checkLength(A_log, H, 'ssdRecurrence: A_log');
  checkLength(D, H, 'ssdRecurrence: D');
  checkLength(Bm, B * L * G * N, 'ssdRecurrence: Bm');
  checkLength(Cm, B * L * G * N, 'ssdRecurrence: Cm');
  if (stateIn !== null) checkLength(stateIn, B * H * P * N, 'ssdRecurrence: stateIn');

  const headsPerGroup = H / G;
  const y = new Float64Array(B * L * H * P);
  const stateOut = new Float64Array(B * H * P * N);

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / headsPerGroup); // NOTES trap 1: not h % G
      const A = -Math.exp(A_log[h]!);
      // S_0: the carried state or zeros. S[p*N + n].
      const S = new Float64Array(P * N);
      if (stateIn !== null) {
        for (let i = 0; i < P * N; i++) S[i] = stateIn[(b * H + h) * P * N + i]!;
      }
      for (let t = 0; t < L; t++) {
        const row = b * L + t;
        const dt = softplus(dtRaw[row * H + h]! + dtBias[h]!);
        const decay = Math.exp(dt * A);
        for (let p = 0; p < P; p++) {
          const xv = x[row * H * P + h * P + p]!;
          // S_t[p, :] = exp(dt*A) * S_{t-1}[p, :] + dt * x_t[p] * B_t[:]
          for (let n = 0; n < N; n++) {
            const Bv = Bm[row * G * N + g * N + n]!;
            S[p * N + n] = decay * S[p * N + n]! + dt * xv * Bv;
          }
          // y_t[p] = sum_n S_t[p, n] * C_t[n] + D[h] * x_t[p]
          let acc = 0;
          for (let n = 0; n < N; n++) acc += S[p * N + n]! * Cm[row * G * N + g * N + n]!;
          y[row * H * P + h * P + p] = acc + D[h]! * xv;
        }
      }
      for (let i = 0; i < P * N; i++) stateOut[(b * H + h) * P * N + i] = S[i]!;
    }
  }
  return { y, stateOut };
}

/**
 * Gated grouped RMSNorm. MODEL.md §5: y = rms_grouped(y * silu(z), w), groups of d/G contiguous
 * channels (gate before norm, NOTES trap 5).
 * y, z: [M, d]; w: [d]. Returns [M, d].
 */
export function gatedRmsnorm(
  y: Float64Array,
  z: Float64Array,
  w: Float64Array,
  M: number,
  d: number,
  G: number,
  eps: number,
): Float64Array {
  checkLength(y, M * d, 'gatedRmsnorm: y');
  checkLength(z, M * d, 'gatedRmsnorm: z');
  checkLength(w, d, 'gatedRmsnorm: w');
  if (d % G !== 0) throw new Error(`gatedRmsnorm: d=${d} is not a multiple of G=${G}`);
  const gs = d / G;
  const out = new Float64Array(M * d);
  for (let m = 0; m < M; m++) {
    // Gate first: u = y * silu(z).
    const u = new Float64Array(d);
    for (let j = 0; j < d; j++) u[j] = y[m * d + j]! * silu(z[m * d + j]!);
    // Then RMS over each group of gs contiguous channels.
    for (let g = 0; g < G; g++) {
      let sumSq = 0;
      for (let j = g * gs; j < (g + 1) * gs; j++) sumSq += u[j]! * u[j]!;
      const inv = 1 / Math.sqrt(sumSq / gs + eps);
      for (let j = g * gs; j < (g + 1) * gs; j++) out[m * d + j] = u[j]! * inv * w[j]!;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// SAL pieces (MODEL.md §6)
// ---------------------------------------------------------------------------------------------

/**
 * SwiGLU activation. MODEL.md §6: [up | gate] = h, result = up * silu(gate).
 * h: [M, 2*dff] with up in the first dff columns and gate in the last dff. Returns [M, dff].
 */
export function swiglu(h: Float64Array, M: number, dff: number): Float64Array {
  checkLength(h, M * 2 * dff, 'swiglu: h');
  const out = new Float64Array(M * dff);
  for (let m = 0; m < M; m++) {
    for (let j = 0; j < dff; j++) {
      const up = h[m * 2 * dff + j]!;
      const gate = h[m * 2 * dff + dff + j]!;
      out[m * dff + j] = up * silu(gate);
    }
  }
  return out;
}

/**
 * The SAL MLP without its residual or norm. MODEL.md §6: fc2( up * silu(gate) ),
 * [up | gate] = x @ fc1^T.
 * x: [M, d] (already normed); fc1: [2*dff, d]; fc2: [d, dff]. Returns [M, d].
 */
export function swigluMlp(
  x: Float64Array,
  fc1: Float64Array,
  fc2: Float64Array,
  M: number,
  d: number,
  dff: number,
): Float64Array {
  const h = linear(x, fc1, M, d, 2 * dff);
  const act = swiglu(h, M, dff);
  return linear(act, fc2, M, dff, d);
}

/**
 * Rotary position embedding, rotate-half convention, absolute positions. MODEL.md §6 option `rope`.
 * For each head, with half = headDim/2 and i in [0, half):
 *   freq_i  = theta^(-2i / headDim),  angle = position * freq_i
 *   out[i]        = x[i] * cos(angle) - x[i+half] * sin(angle)
 *   out[i + half] = x[i+half] * cos(angle) + x[i] * sin(angle)
 * x: [M, nHeads*headDim]; positions: M absolute positions (one per row). Returns [M, nHeads*headDim].
 */
export function rope(
  x: Float64Array,
  M: number,
  nHeads: number,
  headDim: number,
  positions: ArrayLike<number>,
  theta: number,
): Float64Array {
  checkLength(x, M * nHeads * headDim, 'rope: x');
  checkLength(positions, M, 'rope: positions');
  if (headDim % 2 !== 0) throw new Error(`rope: headDim=${headDim} must be even`);
  const half = headDim / 2;
  const out = new Float64Array(x.length);
  for (let m = 0; m < M; m++) {
    const pos = positions[m]!;
    for (let h = 0; h < nHeads; h++) {
      const base = m * nHeads * headDim + h * headDim;
      for (let i = 0; i < half; i++) {
        const freq = Math.pow(theta, (-2 * i) / headDim);
        const angle = pos * freq;
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const a = x[base + i]!;
        const b = x[base + i + half]!;
        out[base + i] = a * c - b * s;
        out[base + i + half] = b * c + a * s;
      }
    }
  }
  return out;
}
