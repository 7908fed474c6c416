// A Mamba-2 block: r = r + Mamba2(rms(r)) (spec section 5). This file only wires shapes and
// ops together; the math is in the kernels.
import type { ModelConfig } from '../config.js';
import { addon, type NativeTensor } from '../native.js';
import type { WeightLoader } from '../weights.js';
import type { ForwardContext, Layer, LayerState } from './layer.js';
import { colsView } from './views.js';

/** Per-sequence decode state of one Mamba-2 layer. */
export class Mamba2State implements LayerState {
  constructor(
    /** [conv_dim, d_conv - 1]: the last raw inputs of the convolution, oldest first. */
    readonly conv: NativeTensor,
    /** [H, P, N] fp32. */
    readonly ssm: NativeTensor,
  ) {}
  tensors(): NativeTensor[] {
    return [this.conv, this.ssm];
  }
}

interface Mamba2Weights {
  norm: NativeTensor;
  inProj: NativeTensor;
  convWeight: NativeTensor;
  convBias: NativeTensor;
  dtBias: NativeTensor;
  aLog: NativeTensor;
  d: NativeTensor;
  gatedNorm: NativeTensor;
  outProj: NativeTensor;
}

export class Mamba2Block implements Layer<Mamba2State> {
  readonly kind = 'mamba2';

  private constructor(
    private readonly cfg: ModelConfig,
    private readonly w: Mamba2Weights,
  ) {}

  static load(cfg: ModelConfig, loader: WeightLoader, index: number): Mamba2Block {
    const p = `backbone.layers.${index}`;
    const { d_model: d, d_inner: di, nheads: H, conv_dim: cd, d_in_proj: dip } = cfg;
    const K = cfg.ssm.d_conv;
    // All or nothing: a missing or misshapen tensor frees the ones already loaded.
    return loader.allOrNothing(
      () =>
        new Mamba2Block(cfg, {
          norm: loader.vector(`${p}.norm.weight`, [d]),
          inProj: loader.matrix(`${p}.mixer.in_proj.weight`, [dip, d]),
          convWeight: loader.vector(`${p}.mixer.conv1d.weight`, [cd, K]),
          convBias: loader.vector(`${p}.mixer.conv1d.bias`, [cd]),
          dtBias: loader.vector(`${p}.mixer.dt_bias`, [H]),
          aLog: loader.vector(`${p}.mixer.A_log`, [H]),
          d: loader.vector(`${p}.mixer.D`, [H]),
          gatedNorm: loader.vector(`${p}.mixer.norm.weight`, [di]),
          outProj: loader.matrix(`${p}.mixer.out_proj.weight`, [d, di]),
        }),
    );
  }

  createState(): Mamba2State {
    const { conv_dim, nheads, ssm } = this.cfg;
    const device = this.w.norm.device;
    return new Mamba2State(
      addon().empty([conv_dim, ssm.d_conv - 1], 'f32', device),
      addon().empty([nheads, ssm.headdim, ssm.d_state], 'f32', device),
    );
  }

  forward(ctx: ForwardContext, residual: NativeTensor, pending: NativeTensor | null, states: Mamba2State[]): NativeTensor {
    const { ops, ws, batch } = ctx;
    const { d_model: d, d_inner: di, conv_dim: cd, d_in_proj: dip, norm_eps: eps } = this.cfg;
    const { ngroups: G, d_state: N, chunk_size: chunk } = this.cfg.ssm;
    const w = this.w;

    // Activations between ops are in ws.act (f32 on the CPU, bf16 on CUDA); the residual
    // stream and the states are f32 on both.
    // Pre-norm, folding in the previous layer's output: r += pending; u = rms(r).
    const u = ws.get('normed', d, ws.act);
    ops.rmsnorm(residual, pending, w.norm, u, eps);

    // in_proj; its output columns are z | xBC | dt.
    const zxbcdt = ws.get('zxbcdt', dip, ws.act);
    ops.linear(u, w.inProj, zxbcdt);
    const z = colsView(zxbcdt, 0, di);
    const xbcRaw = colsView(zxbcdt, di, di + cd);
    const dt = colsView(zxbcdt, di + cd, dip);

    // Causal conv + SiLU over x|B|C, carrying the conv state.
    const xbc = ws.get('xbc', cd, ws.act);
    const convStates = states.map((s) => s.conv);
    if (ctx.decode) ops.conv1dUpdate(xbcRaw, w.convWeight, w.convBias, xbc, convStates);
    else ops.conv1dSilu(xbcRaw, w.convWeight, w.convBias, xbc, batch, convStates);

    // The selective state space model.
    const ssd = {
      x: colsView(xbc, 0, di),
      B: colsView(xbc, di, di + G * N),
      C: colsView(xbc, di + G * N, cd),
      dt,
      dt_bias: w.dtBias,
      A_log: w.aLog,
      D: w.d,
    };
    const y = ws.get('y', di, ws.act);
    const ssmStates = states.map((s) => s.ssm);
    if (ctx.decode) ops.ssdStep(ssd, y, G, ssmStates);
    else ops.ssdScan(ssd, y, { batch, groups: G, chunk }, ssmStates);

    // Gate, grouped norm, out_proj.
    const yn = ws.get('y_normed', di, ws.act);
    ops.gatedRmsnorm(y, z, w.gatedNorm, yn, G, eps);
    const out = ws.get('mixer_out', d, ws.act);
    ops.linear(yn, w.outProj, out);
    return out;
  }

  dispose(): void {
    for (const t of Object.values(this.w)) t.dispose();
  }
}
