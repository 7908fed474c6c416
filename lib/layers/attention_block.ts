// A Transformer++ block (MODEL.md section 7): r = r + attn(rms(r, norm)); r = r + ffn(rms(r,
// norm2)). RoPE on q and k (none when rope_theta is null, as in the original Jamba), full causal
// attention over a KV cache that holds every past position, grouped-query attention when
// n_kv_heads < n_heads. The FFN is a dense SwiGLU, or in the original Jamba whatever the layer's
// index calls for (lib/layers/ffn.ts). This file wires shapes and ops together; the math is in
// the kernels.
//
// The KV cache of a sequence grows with its context, as a Transformer's must: it starts small
// and doubles when a chunk would not fit (a bigger tensor, the filled rows copied over on the
// stream), so its memory stays within twice what the context needs. Because the tensors change,
// a model with attention layers runs without captured graphs (see CausalLM.fromCheckpoint):
// a graph would keep replaying into the old, smaller cache.
import { ffnKind, type AttnConfig, type ModelConfig } from '../config.js';
import { addon, type NativeTensor } from '../native.js';
import type { Ops } from '../ops.js';
import type { WeightLoader } from '../weights.js';
import { loadFeedForward, type FeedForward } from './ffn.js';
import type { ForwardContext, Layer, LayerState } from './layer.js';

/** Rows a fresh cache has room for; it doubles from there. */
const INITIAL_CAPACITY = 256;

/** Per-sequence decode state of one attention layer: every past position's key and value. */
export class KvCacheState implements LayerState {
  constructor(
    /** [capacity, n_kv_heads*head_dim]: row p holds position p's key (after RoPE). */
    public kCache: NativeTensor,
    /** [capacity, n_kv_heads*head_dim]: row p holds position p's value. */
    public vCache: NativeTensor,
    /**
     * i32 [1], read and written on the host only: how many rows are in use. A tensor rather than
     * a field so that CausalLM.resetState, which zeroes every state tensor, also empties the
     * cache. It may run ahead of the sequence's position (a forward that failed after it was
     * counted), which only costs room, never correctness: the ops place rows by position.
     */
    readonly filled: NativeTensor,
  ) {}

  get capacity(): number {
    return this.kCache.shape[0]!;
  }

  /** Rows in use. */
  get length(): number {
    return this.filled.toArray()[0]!;
  }

  tensors(): NativeTensor[] {
    return [this.kCache, this.vCache, this.filled];
  }

  /**
   * Make room for `n` more rows, doubling the caches until they fit when they are full (a long
   * prompt that lands exactly on its size would otherwise grow again at the next token), and
   * count the rows as used. The copy into the new caches is queued on `ops`' stream, before the
   * chunk's ops.
   */
  reserve(ops: Ops, n: number): void {
    const used = this.length;
    const need = used + n;
    if (need > this.capacity) {
      let rows = 2 * this.capacity;
      while (rows < need) rows *= 2;
      this.kCache = grown(ops, this.kCache, rows, used);
      this.vCache = grown(ops, this.vCache, rows, used);
    }
    this.filled.write(Int32Array.of(need));
  }
}

/** A [rows, cols] copy of `old` holding its first `used` rows; `old` is released. */
function grown(ops: Ops, old: NativeTensor, rows: number, used: number): NativeTensor {
  // Not zeroed: rows past `used` are never read, and untouched pages cost no memory.
  const t = addon().empty([rows, old.shape[1]!], 'f32', old.device, false);
  if (used > 0) ops.copy(old.rows(0, used), t.rows(0, used));
  old.dispose(); // the queued copy keeps its own reference until it has run
  return t;
}

interface AttentionWeights {
  norm: NativeTensor;
  qProj: NativeTensor;
  kProj: NativeTensor;
  vProj: NativeTensor;
  oProj: NativeTensor;
}

export class AttentionBlock implements Layer<KvCacheState> {
  readonly kind = 'attention';
  private readonly attn: AttnConfig;

  private constructor(
    private readonly cfg: ModelConfig,
    private readonly w: AttentionWeights,
    private readonly ffn: FeedForward,
  ) {
    this.attn = cfg.attn!;
  }

  static load(cfg: ModelConfig, loader: WeightLoader, index: number): AttentionBlock {
    if (!cfg.attn) throw new Error(`layer ${index} is an attention layer but the config has no "attn" section`);
    const p = `backbone.layers.${index}`;
    const d = cfg.d_model;
    const { n_heads, n_kv_heads, head_dim } = cfg.attn;
    const hq = n_heads * head_dim;
    const hkv = n_kv_heads * head_dim;
    // Only the original Jamba puts experts after attention; elsewhere the FFN is dense.
    const ffn = cfg.model_type === 'jamba' && cfg.jamba_variant === 'original' ? ffnKind(cfg, index) : 'mlp';
    return loader.allOrNothing(
      () =>
        new AttentionBlock(
          cfg,
          {
            norm: loader.vector(`${p}.norm.weight`, [d]),
            qProj: loader.matrix(`${p}.mixer.q_proj.weight`, [hq, d]),
            kProj: loader.matrix(`${p}.mixer.k_proj.weight`, [hkv, d]),
            vProj: loader.matrix(`${p}.mixer.v_proj.weight`, [hkv, d]),
            oProj: loader.matrix(`${p}.mixer.o_proj.weight`, [d, hq]),
          },
          loadFeedForward(cfg, loader, index, ffn),
        ),
    );
  }

  createState(): KvCacheState {
    const hkv = this.attn.n_kv_heads * this.attn.head_dim;
    const device = this.w.norm.device;
    return new KvCacheState(
      addon().empty([INITIAL_CAPACITY, hkv], 'f32', device, false),
      addon().empty([INITIAL_CAPACITY, hkv], 'f32', device, false),
      addon().tensor(Int32Array.of(0), [1], 'i32', device),
    );
  }

  forward(ctx: ForwardContext, residual: NativeTensor, pending: NativeTensor | null, states: KvCacheState[]): NativeTensor | null {
    const { ops, ws, batch, length, start } = ctx;
    const { d_model: d, norm_eps: eps } = this.cfg;
    const { n_heads, n_kv_heads, head_dim: headDim, rope_theta: theta } = this.attn;
    const w = this.w;

    // r += pending; x = rms(r, norm); q, k, v with RoPE at each token's absolute position.
    const x = ws.get('normed', d, ws.act);
    ops.rmsnorm(residual, pending, w.norm, x, eps);
    const q = ws.get('attn.q', n_heads * headDim, ws.act);
    const k = ws.get('attn.k', n_kv_heads * headDim, ws.act);
    const v = ws.get('attn.v', n_kv_heads * headDim, ws.act);
    ops.linear(x, w.qProj, q);
    ops.linear(x, w.kProj, k);
    ops.linear(x, w.vProj, v);
    if (theta !== null) {
      ops.rope(q, start, { headDim, length, theta });
      ops.rope(k, start, { headDim, length, theta });
    }

    // Room for the chunk in every cache, then attention over cache + chunk, then the append.
    for (const s of states) s.reserve(ops, length);
    const kCache = states.map((s) => s.kCache);
    const vCache = states.map((s) => s.vCache);
    const attn = ws.get('attn.ctx', n_heads * headDim, ws.act);
    ops.attention({ q, k, v, start, kCache, vCache, out: attn }, { batch, headDim });
    ops.kvAppend({ k, v, start, kCache, vCache }, batch);
    const o = ws.get('attn.o', d, ws.act);
    ops.linear(attn, w.oProj, o);

    // r += o; then the FFN.
    return this.ffn.forward(ctx, residual, o);
  }

  dispose(): void {
    for (const t of Object.values(this.w)) t.dispose();
    this.ffn.dispose();
  }
}
