// A layer of the original Jamba (MODEL.md section 7): r = r + Mamba1(rms(r, norm)), then the
// layer's FFN (dense SwiGLU or mixture of experts). The Mamba-1 mixer, as Jamba has it:
//   [x | z] = u @ in_proj^T;  x = silu(conv1d(x));  [dt | B | C] = x @ x_proj^T
//   dt, B, C each through its own RMSNorm;  dt = dt @ dt_proj^T (its bias goes into the scan)
//   y = selective_scan(x, softplus(dt + bias), A = -exp(A_log), B, C, D) * silu(z)
//   out = y @ out_proj^T
// This file wires shapes and ops together; the scan is the mamba1_scan kernel.
import type { MambaConfig, ModelConfig } from '../config.js';
import { addon, type NativeTensor } from '../native.js';
import type { WeightLoader } from '../weights.js';
import { loadFeedForward, type FeedForward } from './ffn.js';
import type { ForwardContext, Layer, LayerState } from './layer.js';
import { colsView, rowsView } from './views.js';

/** Per-sequence decode state of one Mamba-1 layer. */
export class Mamba1State implements LayerState {
  constructor(
    /** [d_inner, d_conv - 1]: the last raw inputs of the convolution, oldest first. */
    readonly conv: NativeTensor,
    /** [d_inner, d_state] fp32. */
    readonly ssm: NativeTensor,
  ) {}
  tensors(): NativeTensor[] {
    return [this.conv, this.ssm];
  }
}

interface Mamba1Weights {
  norm: NativeTensor;
  inProj: NativeTensor;
  convWeight: NativeTensor;
  convBias: NativeTensor;
  xProj: NativeTensor;
  dtProj: NativeTensor;
  dtBias: NativeTensor;
  aLog: NativeTensor;
  d: NativeTensor;
  dtNorm: NativeTensor;
  bNorm: NativeTensor;
  cNorm: NativeTensor;
  outProj: NativeTensor;
}

export class Mamba1Block implements Layer<Mamba1State> {
  readonly kind = 'mamba1';
  private readonly m: MambaConfig;
  private readonly di: number;
  /** x_proj's rows for dt, B and C: three products, so that each lands contiguous for its norm. */
  private readonly xProjParts: [NativeTensor, NativeTensor, NativeTensor];

  private constructor(
    private readonly cfg: ModelConfig,
    private readonly w: Mamba1Weights,
    private readonly ffn: FeedForward,
  ) {
    this.m = cfg.mamba!;
    this.di = this.m.expand * cfg.d_model;
    const { dt_rank: R, d_state: N } = this.m;
    this.xProjParts = [rowsView(w.xProj, 0, R), rowsView(w.xProj, R, R + N), rowsView(w.xProj, R + N, R + 2 * N)];
  }

  static load(cfg: ModelConfig, loader: WeightLoader, index: number): Mamba1Block {
    if (!cfg.mamba) throw new Error(`layer ${index} is a Mamba-1 layer but the config has no "mamba" section`);
    const p = `backbone.layers.${index}`;
    const d = cfg.d_model;
    const { d_state: N, d_conv: K, expand, dt_rank: R } = cfg.mamba;
    const di = expand * d;
    return loader.allOrNothing(() => {
      const w: Mamba1Weights = {
        norm: loader.vector(`${p}.norm.weight`, [d]),
        inProj: loader.matrix(`${p}.mixer.in_proj.weight`, [2 * di, d]),
        convWeight: loader.vector(`${p}.mixer.conv1d.weight`, [di, K]),
        convBias: loader.vector(`${p}.mixer.conv1d.bias`, [di]),
        xProj: loader.matrix(`${p}.mixer.x_proj.weight`, [R + 2 * N, di]),
        dtProj: loader.matrix(`${p}.mixer.dt_proj.weight`, [di, R]),
        dtBias: loader.vector(`${p}.mixer.dt_proj.bias`, [di]),
        aLog: loader.vector(`${p}.mixer.A_log`, [di, N]),
        d: loader.vector(`${p}.mixer.D`, [di]),
        dtNorm: loader.vector(`${p}.mixer.dt_layernorm.weight`, [R]),
        bNorm: loader.vector(`${p}.mixer.b_layernorm.weight`, [N]),
        cNorm: loader.vector(`${p}.mixer.c_layernorm.weight`, [N]),
        outProj: loader.matrix(`${p}.mixer.out_proj.weight`, [d, di]),
      };
      return new Mamba1Block(cfg, w, loadFeedForward(cfg, loader, index));
    });
  }

  createState(): Mamba1State {
    const device = this.w.norm.device;
    return new Mamba1State(
      addon().empty([this.di, this.m.d_conv - 1], 'f32', device),
      addon().empty([this.di, this.m.d_state], 'f32', device),
    );
  }

  forward(ctx: ForwardContext, residual: NativeTensor, pending: NativeTensor | null, states: Mamba1State[]): NativeTensor | null {
    const { ops, ws, batch } = ctx;
    const { d_model: d, norm_eps: eps } = this.cfg;
    const { dt_rank: R, d_state: N } = this.m;
    const di = this.di;
    const w = this.w;

    // r += pending; u = rms(r); [x | z] = in_proj(u).
    const u = ws.get('normed', d, ws.act);
    ops.rmsnorm(residual, pending, w.norm, u, eps);
    const xz = ws.get('m1.xz', 2 * di, ws.act);
    ops.linear(u, w.inProj, xz);
    const z = colsView(xz, di, 2 * di);

    // Causal conv + SiLU over x, carrying the conv state.
    const x = ws.get('m1.x', di, ws.act);
    const convStates = states.map((s) => s.conv);
    if (ctx.decode) ops.conv1dUpdate(colsView(xz, 0, di), w.convWeight, w.convBias, x, convStates);
    else ops.conv1dSilu(colsView(xz, 0, di), w.convWeight, w.convBias, x, batch, convStates);

    // The input-dependent SSM parameters, each normed; dt through its low-rank projection.
    // The raw products are fp32 on every device: rmsnorm reads its input as a residual stream.
    const [xpDt, xpB, xpC] = this.xProjParts;
    const dtLow = ws.get('m1.dt_low', R);
    const bRaw = ws.get('m1.b_raw', N);
    const cRaw = ws.get('m1.c_raw', N);
    ops.linear(x, xpDt, dtLow);
    ops.linear(x, xpB, bRaw);
    ops.linear(x, xpC, cRaw);
    const dtLowN = ws.get('m1.dt_low_n', R, ws.act);
    const B = ws.get('m1.b', N, ws.act);
    const C = ws.get('m1.c', N, ws.act);
    ops.rmsnorm(dtLow, null, w.dtNorm, dtLowN, eps);
    ops.rmsnorm(bRaw, null, w.bNorm, B, eps);
    ops.rmsnorm(cRaw, null, w.cNorm, C, eps);
    const dt = ws.get('m1.dt', di, ws.act);
    ops.linear(dtLowN, w.dtProj, dt);

    // The selective scan, gated by silu(z); one token per sequence is the decode step.
    const y = ws.get('m1.y', di, ws.act);
    ops.mamba1Scan(
      { x, dt, dt_bias: w.dtBias, A_log: w.aLog, B, C, D: w.d, z },
      y,
      batch,
      states.map((s) => s.ssm),
    );
    const out = ws.get('mixer_out', d, ws.act);
    ops.linear(y, w.outProj, out);
    return this.ffn.forward(ctx, residual, out);
  }

  dispose(): void {
    for (const t of Object.values(this.w)) t.dispose();
    this.ffn.dispose();
  }
}
