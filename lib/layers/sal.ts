// The Selective Attention Layer (spec section 6): a gate picks the tokens that need attention,
// only those get a query, sliding-window attention and o_proj, and their residual is mixed
// with the attention output; then every token goes through a residual SwiGLU MLP. This file
// wires shapes and ops together; the math is in the kernels.
//
// Selected rows travel compacted: the gate op writes the selected chunk rows' indices and
// their count on the device, and every later op (q projection, attention, o_proj, mix) reads
// that count at run time, so nothing waits for the host and no work is spent on unselected rows.
import type { ModelConfig, SalConfig } from '../config.js';
import { addon, type NativeTensor } from '../native.js';
import type { WeightLoader } from '../weights.js';
import type { ForwardContext, Layer, LayerState } from './layer.js';
import { reshapeView } from './views.js';

/** Per-sequence decode state of one SAL: a ring buffer of the last `window` keys and values. */
export class SalState implements LayerState {
  constructor(
    /** [window, heads*head_dim]; position p lives in slot p % window. */
    readonly kCache: NativeTensor,
    readonly vCache: NativeTensor,
    /** i32 [window]: the position held by each slot, or -1 (empty, or an unselected token under kv "selected"). */
    readonly cachePos: NativeTensor,
  ) {}
  tensors(): NativeTensor[] {
    return [this.kCache, this.vCache, this.cachePos];
  }
}

/** How many tokens a SAL selected: in the last forward, and in total since the model loaded. */
export interface SalSelection {
  /** Index of the layer in the model. */
  layer: number;
  selected: number;
  tokens: number;
  /** selected / tokens (0 when no tokens). */
  fraction: number;
}

interface SalWeights {
  norm: NativeTensor;
  gateWeight: NativeTensor;
  gateBias: NativeTensor;
  qProj: NativeTensor;
  kProj: NativeTensor;
  vProj: NativeTensor;
  oProj: NativeTensor;
  norm2: NativeTensor;
  fc1: NativeTensor;
  fc2: NativeTensor;
}

export class SelectiveAttentionLayer implements Layer<SalState> {
  readonly kind = 'sal';
  /** Selection counts of the last forward. */
  last: SalSelection;
  /** Selection counts over every forward since load (or resetSelection()). */
  total: SalSelection;
  /** When set, the next forwards append each token's gate logit difference s1 - s0 here. */
  captureGate: number[] | null = null;

  private readonly sal: SalConfig;
  private readonly count: NativeTensor;
  private lastProb: NativeTensor | null = null;

  private constructor(
    private readonly cfg: ModelConfig,
    readonly index: number,
    private readonly w: SalWeights,
  ) {
    this.sal = cfg.sal!;
    const device = w.norm.device;
    this.count = addon().empty([1], 'i32', device, true);
    this.last = { layer: index, selected: 0, tokens: 0, fraction: 0 };
    this.total = { ...this.last };
  }

  static load(cfg: ModelConfig, loader: WeightLoader, index: number): SelectiveAttentionLayer {
    if (!cfg.sal) throw new Error(`layer ${index} is a SAL but the config has no "sal" section`);
    const p = `backbone.layers.${index}`;
    const d = cfg.d_model;
    const { n_heads, head_dim, d_ff } = cfg.sal;
    const hd = n_heads * head_dim;
    return loader.allOrNothing(
      () =>
        new SelectiveAttentionLayer(cfg, index, {
          norm: loader.vector(`${p}.norm.weight`, [d]),
          gateWeight: loader.vector(`${p}.mixer.gate.weight`, [2, d]),
          gateBias: loader.vector(`${p}.mixer.gate.bias`, [2]),
          qProj: loader.matrix(`${p}.mixer.q_proj.weight`, [hd, d]),
          kProj: loader.matrix(`${p}.mixer.k_proj.weight`, [hd, d]),
          vProj: loader.matrix(`${p}.mixer.v_proj.weight`, [hd, d]),
          oProj: loader.matrix(`${p}.mixer.o_proj.weight`, [d, hd]),
          norm2: loader.vector(`${p}.norm2.weight`, [d]),
          fc1: loader.matrix(`${p}.mlp.fc1.weight`, [2 * d_ff, d]),
          fc2: loader.matrix(`${p}.mlp.fc2.weight`, [d, d_ff]),
        }),
    );
  }

  /** The gate bias [b0, b1] as loaded (random models calibrate it through setGateBias). */
  gateBias(): [number, number] {
    const b = this.w.gateBias.toArray();
    return [b[0]!, b[1]!];
  }

  setGateBias(bias: [number, number]): void {
    this.w.gateBias.write(Float32Array.from(bias));
  }

  createState(): SalState {
    const { window, n_heads, head_dim } = this.sal;
    const device = this.w.norm.device;
    const empty = new Int32Array(window).fill(-1);
    return new SalState(
      addon().empty([window, n_heads * head_dim], 'f32', device, true),
      addon().empty([window, n_heads * head_dim], 'f32', device, true),
      addon().tensor(empty, [window], 'i32', device),
    );
  }

  forward(ctx: ForwardContext, residual: NativeTensor, pending: NativeTensor | null, states: SalState[]): NativeTensor {
    const { ops, ws, batch, length, start } = ctx;
    const { d_model: d, norm_eps: eps } = this.cfg;
    const { n_heads, head_dim: headDim, window, d_ff: dff, kv, mix, rope } = this.sal;
    const hd = n_heads * headDim;
    const w = this.w;

    // Activations between ops are in ws.act (f32 on the CPU, bf16 on CUDA); the residual
    // stream, the gate's probabilities and the ring buffers are f32 on both.
    // Gate + feature pruning: r += pending; x = rms(r); s = gate(x); the selected rows, compacted.
    const x = ws.get('sal.x', d, ws.act);
    const prob = reshapeView(ws.get(`sal${this.index}.prob`, 1), [ws.rows]);
    const mask = reshapeView(ws.get('sal.mask', 1, 'i32'), [ws.rows]);
    const index = reshapeView(ws.get('sal.index', 1, 'i32'), [ws.rows]);
    const gathered = ws.get('sal.gathered', d, ws.act);
    const count = this.count;
    ops.salGate({ residual, delta: pending, norm: w.norm, gateWeight: w.gateWeight, gateBias: w.gateBias, x, prob, mask, index, count, gathered }, eps);

    // Keys and values for every token (they feed later queries); queries for selected rows only.
    const k = ws.get('sal.k', hd, ws.act);
    const v = ws.get('sal.v', hd, ws.act);
    ops.linear(x, w.kProj, k);
    ops.linear(x, w.vProj, v);
    const q = ws.get('sal.q', hd, ws.act);
    ops.linear(gathered, w.qProj, q, count);
    if (rope) {
      ops.rope(k, start, { headDim, length, theta: rope.theta });
      ops.rope(q, start, { headDim, length, theta: rope.theta }, index, count);
    }

    // Sliding-window attention over the ring caches and this chunk, then append the chunk.
    const kCache = states.map((s) => s.kCache);
    const vCache = states.map((s) => s.vCache);
    const cachePos = states.map((s) => s.cachePos);
    const attn = ws.get('sal.attn', hd, ws.act);
    ops.salAttention({ q, index, count, k, v, mask, start, kCache, vCache, cachePos, out: attn }, { batch, window, headDim, kv });
    ops.salKvWrite({ k, v, mask, start, kCache, vCache, cachePos }, { batch, window, kv });

    // o_proj and the mix, selected rows only.
    const o = ws.get('sal.o', d, ws.act);
    ops.linear(attn, w.oProj, o, count);
    ops.salMix({ residual, o, index, count, prob, x }, mix);

    // r'' = r' + fc2(up * silu(gate)), [up | gate] = rms(r', norm2) @ fc1^T, every token.
    const h = ws.get('normed', d, ws.act);
    ops.rmsnorm(residual, null, w.norm2, h, eps);
    const upGate = ws.get('sal.fc1', 2 * dff, ws.act);
    ops.linear(h, w.fc1, upGate);
    const act = ws.get('sal.act', dff, ws.act);
    ops.swiglu(upGate, act);
    const out = ws.get('mixer_out', d, ws.act);
    ops.linear(act, w.fc2, out);

    this.lastProb = prob;
    return out;
  }

  afterRun(rows: number): void {
    const selected = this.count.toArray()[0]!;
    const tokens = rows;
    this.last = { layer: this.index, selected, tokens, fraction: tokens ? selected / tokens : 0 };
    this.total.selected += selected;
    this.total.tokens += tokens;
    this.total.fraction = this.total.tokens ? this.total.selected / this.total.tokens : 0;
    if (this.captureGate && this.lastProb) {
      // prob = sigmoid(s1 - s0); invert it (exact enough near the selection threshold).
      for (const p of this.lastProb.toArray()) this.captureGate.push(Math.log(p / (1 - p)));
    }
  }

  resetSelection(): void {
    this.total = { layer: this.index, selected: 0, tokens: 0, fraction: 0 };
  }

  dispose(): void {
    for (const t of Object.values(this.w)) t.dispose();
    this.count.dispose();
  }
}
