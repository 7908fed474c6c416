// The feed-forward half of a block: r = r + ffn(rms(r, norm2)), where ffn is a dense SwiGLU
// MLP (Transformer++, SAL-less attention layers, Jamba's even layers) or Jamba's mixture of
// experts (MODEL.md section 7): a router picks the top-k of E SwiGLU experts per token and the
// token's output is the sum of their outputs weighted by the router's softmax probabilities,
// not renormalised.
//
// The MoE runs expert by expert with no trip back to JavaScript: moe_route leaves, per expert,
// the rows routed to it, compacted, with their count; each expert gathers its rows, runs its MLP
// on `count` rows only (the count is read when the ops run) and adds its weighted output straight
// into the residual stream. An expert no token chose costs a few empty op calls, so a decode step
// reads only the top-k experts' weights.
import { ffnKind, type ModelConfig } from '../config.js';
import { addon, type NativeTensor } from '../native.js';
import type { WeightLoader } from '../weights.js';
import type { ForwardContext } from './layer.js';
import { reshapeView, rowsView } from './views.js';

export interface FeedForward {
  /**
   * r += delta; then r's FFN contribution: returned as the output still to be added to r, or
   * added to r here (null).
   */
  forward(ctx: ForwardContext, residual: NativeTensor, delta: NativeTensor): NativeTensor | null;
  dispose(): void;
}

/** The FFN of layer `index` (prefix `backbone.layers.{index}`), dense unless the config routes it. */
export function loadFeedForward(cfg: ModelConfig, loader: WeightLoader, index: number, kind = ffnKind(cfg, index)): FeedForward {
  return kind === 'moe' ? MixtureOfExperts.load(cfg, loader, index) : DenseSwiGlu.load(cfg, loader, index);
}

function ffnWidth(cfg: ModelConfig, index: number): number {
  if (!cfg.attn) throw new Error(`layer ${index} has an FFN but the config has no "attn" section (attn.d_ff is its width)`);
  return cfg.attn.d_ff;
}

/** [up | gate] = rms(r, norm2) @ fc1^T; out = (up * silu(gate)) @ fc2^T. */
export class DenseSwiGlu implements FeedForward {
  private constructor(
    private readonly cfg: ModelConfig,
    private readonly dff: number,
    private readonly w: { norm2: NativeTensor; fc1: NativeTensor; fc2: NativeTensor },
  ) {}

  static load(cfg: ModelConfig, loader: WeightLoader, index: number): DenseSwiGlu {
    const p = `backbone.layers.${index}`;
    const d = cfg.d_model;
    const dff = ffnWidth(cfg, index);
    return loader.allOrNothing(
      () =>
        new DenseSwiGlu(cfg, dff, {
          norm2: loader.vector(`${p}.norm2.weight`, [d]),
          fc1: loader.matrix(`${p}.mlp.fc1.weight`, [2 * dff, d]),
          fc2: loader.matrix(`${p}.mlp.fc2.weight`, [d, dff]),
        }),
    );
  }

  forward(ctx: ForwardContext, residual: NativeTensor, delta: NativeTensor): NativeTensor {
    const { ops, ws } = ctx;
    const d = this.cfg.d_model;
    const h = ws.get('normed', d, ws.act); // the mixer's input buffer: its last reader is queued before
    ops.rmsnorm(residual, delta, this.w.norm2, h, this.cfg.norm_eps);
    const upGate = ws.get('ffn.fc1', 2 * this.dff, ws.act);
    ops.linear(h, this.w.fc1, upGate);
    const act = ws.get('ffn.act', this.dff, ws.act);
    ops.swiglu(upGate, act);
    const out = ws.get('ffn.out', d, ws.act);
    ops.linear(act, this.w.fc2, out);
    return out;
  }

  dispose(): void {
    for (const t of Object.values(this.w)) t.dispose();
  }
}

/** Jamba's MoE: router [E, d], and per expert e a SwiGLU MLP fc1 [2*dff, d], fc2 [d, dff]. */
export class MixtureOfExperts implements FeedForward {
  /** i32 [E]: rows routed to each expert in the current call (written by moe_route). */
  private readonly count: NativeTensor;

  private constructor(
    private readonly cfg: ModelConfig,
    private readonly dff: number,
    private readonly norm2: NativeTensor,
    private readonly router: NativeTensor,
    private readonly experts: { fc1: NativeTensor; fc2: NativeTensor }[],
  ) {
    this.count = addon().empty([experts.length], 'i32', norm2.device);
  }

  static load(cfg: ModelConfig, loader: WeightLoader, index: number): MixtureOfExperts {
    if (!cfg.moe) throw new Error(`layer ${index} has a mixture of experts but the config has no "moe" section`);
    const p = `backbone.layers.${index}`;
    const d = cfg.d_model;
    const dff = ffnWidth(cfg, index);
    const E = cfg.moe.n_experts;
    return loader.allOrNothing(() => {
      const norm2 = loader.vector(`${p}.norm2.weight`, [d]);
      const router = loader.matrix(`${p}.moe.router.weight`, [E, d]);
      const experts = Array.from({ length: E }, (_, e) => ({
        fc1: loader.matrix(`${p}.moe.experts.${e}.fc1.weight`, [2 * dff, d]),
        fc2: loader.matrix(`${p}.moe.experts.${e}.fc2.weight`, [d, dff]),
      }));
      return new MixtureOfExperts(cfg, dff, norm2, router, experts);
    });
  }

  forward(ctx: ForwardContext, residual: NativeTensor, delta: NativeTensor): null {
    const { ops, ws } = ctx;
    const d = this.cfg.d_model;
    const { n_experts: E, top_k: topK } = this.cfg.moe!;
    const M = ws.rows;

    const h = ws.get('normed', d, ws.act);
    ops.rmsnorm(residual, delta, this.norm2, h, this.cfg.norm_eps);
    const logits = ws.get('moe.logits', E);
    ops.linear(h, this.router, logits);
    // [M, E] scratch reshaped to the router's [E, M] lists (same number of elements).
    const index = reshapeView(ws.get('moe.index', E, 'i32'), [E, M]);
    const weight = reshapeView(ws.get('moe.weight', E), [E, M]);
    ops.moeRoute(logits, { index, weight, count: this.count }, topK);

    const xe = ws.get('moe.x', d);
    const upGate = ws.get('moe.fc1', 2 * this.dff);
    const act = ws.get('moe.act', this.dff);
    const ye = ws.get('moe.y', d);
    this.experts.forEach((w, e) => {
      const rows = reshapeView(rowsView(index, e, e + 1), [M]);
      const probs = reshapeView(rowsView(weight, e, e + 1), [M]);
      const n = rowsView(this.count, e, e + 1);
      ops.gatherRows(h, rows, n, xe);
      ops.linear(xe, w.fc1, upGate, n);
      ops.swiglu(upGate, act, n);
      ops.linear(act, w.fc2, ye, n);
      ops.moeScatter(residual, ye, rows, probs, n);
    });
    return null;
  }

  dispose(): void {
    this.norm2.dispose();
    this.router.dispose();
    for (const w of this.experts) {
      w.fc1.dispose();
      w.fc2.dispose();
    }
    this.count.dispose();
  }
}
