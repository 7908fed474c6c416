// Typed wrappers over the native ops. Each call validates its arguments natively (a bad
// shape throws a TypeError naming the op and argument) and enqueues the work on the stream;
// nothing runs until `await ops.sync()`. The math lives in the kernels (csrc/, cuda/).
import { addon, type DeviceName, type NativeStream, type NativeTensor } from './native.js';

type T = NativeTensor;
/** A recurrent state: one tensor for the whole batch, or one per sequence. */
export type StateArg = T | T[];

export class Ops {
  readonly stream: NativeStream;

  constructor(readonly device: DeviceName) {
    this.stream = new (addon().Stream)(device);
  }

  sync(): Promise<void> {
    return this.stream.sync();
  }

  syncBlocking(): void {
    this.stream.syncBlocking();
  }

  dispose(): void {
    this.stream.dispose();
  }

  /** out[i] = table[ids[i]]; ids must lie in [0, vocab). */
  embedding(ids: T, table: T, out: T, vocab?: number): void {
    this.stream.run('embedding', { ids, table, out }, { vocab });
  }

  /** residual += delta (if given); out = rms(residual) * weight. */
  rmsnorm(residual: T, delta: T | null, weight: T, out: T, eps: number): void {
    this.stream.run('rmsnorm', { residual, delta, weight, out }, { eps });
  }

  /** out = rms over `groups` channel groups of (x * silu(z)), times weight. */
  gatedRmsnorm(x: T, z: T, weight: T, out: T, groups: number, eps: number): void {
    this.stream.run('gated_rmsnorm', { x, z, weight, out }, { groups, eps });
  }

  /** out = x @ weight^T; with `count` (i32 [1], read when the op runs) only the first count rows. */
  linear(x: T, weight: T, out: T, count?: T): void {
    this.stream.run('linear', { x, weight, out, count });
  }

  /** Causal depthwise conv + SiLU over `batch` sequences of equal length, carrying `state`. */
  conv1dSilu(x: T, weight: T, bias: T, out: T, batch: number, state?: StateArg): void {
    this.stream.run('conv1d_silu', { x, weight, bias, out, state }, { batch });
  }

  conv1dUpdate(x: T, weight: T, bias: T, out: T, state: StateArg): void {
    this.stream.run('conv1d_update', { x, weight, bias, out, state });
  }

  /**
   * Chunked SSD scan over `batch` sequences of equal length, carrying `state`. `chunk` is the
   * model's chunk_size; the CPU backend runs chunks of at most 64 tokens (cheaper there, and the
   * result is the same recurrence), the CUDA backend runs `chunk` as given.
   */
  ssdScan(a: SsdTensors, out: T, p: { batch: number; groups: number; chunk: number }, state?: StateArg): void {
    this.stream.run('ssd_scan', { ...a, out, state }, p);
  }

  ssdStep(a: SsdTensors, out: T, groups: number, state: StateArg): void {
    this.stream.run('ssd_step', { ...a, out, state }, { groups });
  }

  /**
   * Mamba-1 selective scan (Jamba's mixer) over `batch` sequences of equal length, gated:
   * out = (C.h + D*x) * silu(z), delta = softplus(dt + dt_bias), carrying `state` [d_inner, N].
   * One token per sequence is the decode step.
   */
  mamba1Scan(a: Mamba1Tensors, out: T, batch: number, state?: StateArg): void {
    this.stream.run('mamba1_scan', { ...a, out, state }, { batch });
  }

  /**
   * MoE router (MODEL.md §7): softmax over each row of logits [M, E] in fp32, keep the top_k
   * probabilities unrenormalised. Per expert e: count[e] rows, their indices (increasing) in
   * index[e, :count[e]] and their probabilities in weight[e, :count[e]].
   */
  moeRoute(logits: T, out: { index: T; weight: T; count: T }, topK: number): void {
    this.stream.run('moe_route', { logits, ...out }, { top_k: topK });
  }

  /** out[k] = x[index[k]] for k < count (count i32 [1], read when the op runs). */
  gatherRows(x: T, index: T, count: T, out: T): void {
    this.stream.run('gather_rows', { x, index, count, out });
  }

  /** residual[index[k]] += weight[k] * y[k] for k < count: an expert's output back into the stream. */
  moeScatter(residual: T, y: T, index: T, weight: T, count: T): void {
    this.stream.run('moe_scatter', { residual, y, index, weight, count });
  }

  /**
   * SAL gate (MODEL.md §6): residual += delta (if given); x = rms(residual) * norm; the gate's
   * prob and mask per row; index/count/gathered = the selected rows, compacted in order.
   */
  salGate(
    t: { residual: T; delta: T | null; norm: T; gateWeight: T; gateBias: T; x: T; prob: T; mask: T; index: T; count: T; gathered: T },
    eps: number,
  ): void {
    const { gateWeight, gateBias, ...rest } = t;
    this.stream.run('sal_gate', { ...rest, gate_weight: gateWeight, gate_bias: gateBias }, { eps });
  }

  /**
   * Rotary embedding in place. Row r of x is chunk row index[r] (r without index) of sequences of
   * `length` tokens; its position is start[row / length] + row % length. With `count`, the first
   * count rows only.
   */
  rope(x: T, start: T, p: { headDim: number; length: number; theta: number }, index?: T, count?: T): void {
    this.stream.run('rope', { x, start, index, count }, { head_dim: p.headDim, length: p.length, theta: p.theta });
  }

  /** Sliding-window attention of the `count` selected queries over this chunk and the ring buffers. */
  salAttention(
    t: { q: T; index: T; count: T; k: T; v: T; mask: T; start: T; kCache: StateArg; vCache: StateArg; cachePos: StateArg; out: T },
    p: { batch: number; window: number; headDim: number; kv: 'all' | 'selected' },
  ): void {
    const { kCache, vCache, cachePos, ...rest } = t;
    this.stream.run(
      'sal_attention',
      { ...rest, k_cache: kCache, v_cache: vCache, cache_pos: cachePos },
      { batch: p.batch, window: p.window, head_dim: p.headDim, kv: p.kv },
    );
  }

  /** After salAttention of a chunk: its last `window` positions into the ring buffers. */
  salKvWrite(
    t: { k: T; v: T; mask: T; start: T; kCache: StateArg; vCache: StateArg; cachePos: StateArg },
    p: { batch: number; window: number; kv: 'all' | 'selected' },
  ): void {
    const { kCache, vCache, cachePos, ...rest } = t;
    this.stream.run(
      'sal_kv_write',
      { ...rest, k_cache: kCache, v_cache: vCache, cache_pos: cachePos },
      { batch: p.batch, window: p.window, kv: p.kv },
    );
  }

  /** Residual update of the selected rows with the attention output o (row k for index[k]). */
  salMix(t: { residual: T; o: T; index: T; count: T; prob: T; x: T }, mix: 'residual' | 'normalized'): void {
    this.stream.run('sal_mix', t, { mix });
  }

  /** out = h[:, :F] * silu(h[:, F:]) (the MLP's [up | gate]); with `count`, the first count rows only. */
  swiglu(h: T, out: T, count?: T): void {
    this.stream.run('swiglu', { h, out, count });
  }

  silu(x: T, out: T): void {
    this.stream.run('silu', { x, out });
  }

  softplus(x: T, out: T): void {
    this.stream.run('softplus', { x, out });
  }

  add(a: T, b: T, out: T): void {
    this.stream.run('add', { a, b, out });
  }

  copy(src: T, dst: T): void {
    this.stream.run('copy', { src, dst });
  }

  /** out[i] = -log softmax(logits[i, :vocab])[targets[i]] (0 where targets[i] is -1). */
  crossEntropy(logits: T, targets: T, out: T, vocab: number): void {
    this.stream.run('cross_entropy', { logits, targets, out }, { vocab });
  }

  /**
   * One token per row of logits [B, Vp] (MODEL.md §9). params f32 [B, 5] holds (temperature,
   * top_k, top_p, min_p, repetition_penalty) per row; seeds and steps are i32 [B]; seen i32
   * [B, S] lists ids to penalise (-1 = padding). Writes tokens i32 [B] and, if given, logprobs
   * f32 [B]. params, seeds, steps and seen are read when this is called (lib/sampler.ts).
   */
  sample(
    a: { logits: T; params: T; seeds: T; steps: T; seen?: T | null },
    out: { tokens: T; logprobs?: T | null },
    vocab: number,
  ): void {
    this.stream.run('sample', { ...a, ...out }, { vocab });
  }

  /**
   * Causal attention of a chunk (`batch` sequences of equal length, q/k/v after RoPE) over each
   * sequence's KV cache (rows 0..start-1) and the chunk itself; query head h reads key/value
   * head h / (q heads / kv heads). Throws when it runs if a chunk does not fit its cache.
   */
  attention(t: { q: T; k: T; v: T; start: T; kCache: StateArg; vCache: StateArg; out: T }, p: { batch: number; headDim: number }): void {
    const { kCache, vCache, ...rest } = t;
    this.stream.run('attention', { ...rest, k_cache: kCache, v_cache: vCache }, { batch: p.batch, head_dim: p.headDim });
  }

  /** After attention of a chunk: its keys and values into the caches at rows start .. start+L-1. */
  kvAppend(t: { k: T; v: T; start: T; kCache: StateArg; vCache: StateArg }, batch: number): void {
    const { kCache, vCache, ...rest } = t;
    this.stream.run('kv_append', { ...rest, k_cache: kCache, v_cache: vCache }, { batch });
  }
}

export interface Mamba1Tensors {
  /** [B*L, d_inner], after the conv and SiLU. */
  x: T;
  /** [B*L, d_inner], dt_proj's output before its bias. */
  dt: T;
  dt_bias: T;
  /** [d_inner, N]; A = -exp(A_log). */
  A_log: T;
  /** [B*L, N], after their RMSNorms. */
  B: T;
  C: T;
  D: T;
  /** [B*L, d_inner], the gate. */
  z: T;
}

export interface SsdTensors {
  x: T;
  B: T;
  C: T;
  dt: T;
  dt_bias: T;
  A_log: T;
  D: T;
}
