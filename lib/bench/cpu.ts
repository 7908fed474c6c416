// The CPU benchmark behind `taipan bench` and `npm run bench`: prefill and decode tokens/s of
// a Mamba-2 or Taipan model on seeded random weights (no download), with the realized SAL
// selection rate for Taipan.
//
// The model is written once to a cache directory and reused. Timings are wall clock around
// awaited calls (the work runs off the JavaScript thread on the CPU pool); each figure is the
// median of `repeats` runs after one warm-up run.
//
// Rows of Mamba-2 models also carry their roofline. A decode step must read every weight once
// and read and write the sequence's state, so it cannot beat (read bandwidth) / (those bytes).
// A prefill token must do the multiply-adds of the projections, the conv and the chunked scan
// (prefillFlopsPerToken), so prefill cannot beat (FMA peak) / (those FLOPs). Bandwidth and
// peak are measured in the same run, before and after the runs they bound (the better of the
// two counts): on a shared VM both move by tens of percent within minutes, so a figure from
// another hour would say little.
//
// With `profile`, one more prefill (the longest prompt) and one more decode run per dtype go
// through the addon's op profiler, and the result says where their time went, op by op.
// Those runs are not part of the timed figures (timing every op adds a little to each).
import { existsSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';

import { getBackendInfo, setThreads } from '../backend.js';
import { addon } from '../native.js';
import { countParameters, getPreset, type ModelConfig } from '../config.js';
import { dtypeBytes, type DTypeName } from '../dtype.js';
import { createRandomModel, randomTokenIds } from '../models/random.js';
import { TaipanModel } from '../models/taipan.js';

export interface CpuBenchOptions {
  preset?: string;
  threads?: number;
  prompts?: number[];
  decodeTokens?: number;
  repeats?: number;
  dtypes?: ('f32' | 'bf16' | 'f16')[];
  cacheDir?: string;
  /** Also profile one prefill and one decode run per dtype, op by op (see OpProfile). */
  profile?: boolean;
  log?: (line: string) => void;
}

/** Where the time of a run went: the addon's executed ops, most expensive first. */
export interface OpProfile {
  weights: string;
  /** "prefill N" or "decode N" (N tokens). */
  test: string;
  tokens: number;
  /** Wall time of the whole run, seconds (the ops' sum plus the time between them). */
  seconds: number;
  ops: { op: string; calls: number; seconds: number }[];
}

export interface CpuBenchRow {
  weights: string;
  test: string;
  tokensPerSecond: number;
  msPerToken: number;
  /** Taipan: the mean realized selected fraction of the SALs over the measured runs. */
  selection?: number;
  /** Decode: bytes a step must move (every weight once, the state read and written). */
  bytesPerToken?: number;
  /** Decode: the CPU threads' read bandwidth measured around this dtype's decode runs, bytes/s. */
  readBandwidth?: number;
  /** Prefill: FLOPs a token needs (prefillFlopsPerToken). */
  flopsPerToken?: number;
  /** Prefill: the CPU threads' FMA peak measured around this dtype's prefill runs, FLOP/s. */
  fmaPeak?: number;
}

/**
 * The bytes a decode step of a Mamba-2 model must move: every weight once (in `dtype`) and
 * the sequence's state read and written.
 */
export function decodeBytesPerToken(cfg: ModelConfig, dtype: DTypeName, model: Pick<TaipanModel, 'createState'>): number {
  const state = model.createState();
  const stateBytes = state.byteLength;
  state.dispose();
  return countParameters(cfg) * dtypeBytes(dtype) + 2 * stateBytes;
}

/** The longest chunk the CPU SSD scan runs (SsdDims::max_chunk in csrc/cpu/kernels.h). */
const CPU_SCAN_MAX_CHUNK = 64;

/**
 * The FLOPs (a multiply-add counts 2) per token of a prefill of `promptLength` tokens of a pure
 * Mamba-2 model on the CPU: per layer the in_proj and out_proj GEMMs, the depthwise conv, and
 * the chunked SSD scan as the CPU runs it (chunks of at most CPU_SCAN_MAX_CHUNK tokens:
 * the causal intra-chunk product, the chunk state, the inter-chunk output, and C B^T per
 * group), plus the LM head for the last position only. Norms and element-wise work are left
 * out (a few FLOPs per value). Undefined for models with other layers.
 */
export function prefillFlopsPerToken(cfg: ModelConfig, promptLength: number): number | undefined {
  if (!cfg.ssm || !cfg.layer_types.every((t) => t === 'mamba2')) return undefined;
  const d = cfg.d_model;
  const { d_state: N, headdim: P, ngroups: G, d_conv: K } = cfg.ssm;
  const Q = Math.min(CPU_SCAN_MAX_CHUNK, cfg.ssm.chunk_size, promptLength);
  const perLayer =
    d * cfg.d_in_proj + // in_proj
    cfg.conv_dim * K + // conv
    cfg.nheads * ((Q / 2) * P + 2 * N * P) + // scan: intra-chunk, chunk state, inter-chunk output
    G * (Q / 2) * N + // scan: C B^T, shared by a group's heads
    cfg.d_inner * d; // out_proj
  return 2 * (cfg.n_layer * perLayer + (d * cfg.vocab_padded) / promptLength);
}

/**
 * The speed a row's roofline allows: decode, reading `bytesPerToken` at `readBandwidth`;
 * prefill, computing `flopsPerToken` at `fmaPeak`.
 */
export function rooflineTokensPerSecond(row: CpuBenchRow): number | undefined {
  if (row.bytesPerToken && row.readBandwidth) return row.readBandwidth / row.bytesPerToken;
  if (row.flopsPerToken && row.fmaPeak) return row.fmaPeak / row.flopsPerToken;
  return undefined;
}

export interface CpuBenchResult {
  date: string;
  preset: string;
  parameters: number;
  threads: number;
  cpu: string;
  path: string;
  repeats: number;
  rows: CpuBenchRow[];
  profiles?: OpProfile[];
}

/**
 * Run `fn` with the op profiler on (restoring its previous setting), and return the time of
 * each op it executed. Counters are process-wide: nothing else should run ops meanwhile.
 */
export async function profileOps(weights: string, test: string, tokens: number, fn: () => Promise<unknown>): Promise<OpProfile> {
  const native = addon();
  const was = native.setProfiling(true);
  native.opProfile(true);
  try {
    const seconds = await time(fn);
    const ops = Object.entries(native.opProfile(true))
      .map(([op, v]) => ({ op, ...v }))
      .sort((a, b) => b.seconds - a.seconds);
    return { weights, test, tokens, seconds, ops };
  } finally {
    native.setProfiling(was);
  }
}

/** Mean selected fraction over the SALs since the last reset (undefined without SALs); resets. */
function meanSelection(model: TaipanModel): number | undefined {
  const sel = model.totalSelection;
  model.resetSelection();
  return sel.length ? sel.reduce((a, x) => a + x.fraction, 0) / sel.length : undefined;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export async function runCpuBenchmark(o: CpuBenchOptions = {}): Promise<CpuBenchResult> {
  const preset = o.preset ?? 'mamba2-130m';
  const threads = setThreads(o.threads ?? 2);
  const prompts = o.prompts ?? [512, 2048];
  const decodeTokens = o.decodeTokens ?? 64;
  const repeats = Math.max(1, o.repeats ?? 3);
  const dtypes = o.dtypes ?? ['f32', 'bf16'];
  const log = o.log ?? (() => {});
  const profiles: OpProfile[] = [];
  const cfg = getPreset(preset);
  const dir = join(o.cacheDir ?? join(tmpdir(), 'taipan-bench'), `${preset}-f32-seed0`);
  if (!existsSync(join(dir, 'model.safetensors'))) {
    log(`writing a random ${preset} checkpoint to ${dir} ...`);
    await createRandomModel(cfg, dir, { seed: 0, dtype: 'f32' });
  }
  const randomIds = (n: number, seed: number) => randomTokenIds(n, cfg.vocab_size, seed);
  const info = getBackendInfo();
  const parameters = countParameters(cfg);
  log(
    `${preset}: ${(parameters / 1e6).toFixed(1)}M parameters, d ${cfg.d_model}, ${cfg.n_layer} layers, vocab ${cfg.vocab_padded}; ` +
      `CPU ${cpus()[0]?.model ?? '?'} (${info.cpu.path}), ${threads} threads`,
  );
  const rows: CpuBenchRow[] = [];
  const prefillRoofline = prefillFlopsPerToken(cfg, 1) !== undefined; // pure Mamba-2 models only
  // selection: the realized SAL selection of the measured runs (default: what the model has
  // counted since the last reset).
  const record = (model: TaipanModel, weights: string, test: string, tokens: number, seconds: number, selection = meanSelection(model)) => {
    const row: CpuBenchRow = { weights, test, tokensPerSecond: tokens / seconds, msPerToken: (seconds * 1000) / tokens, selection };
    rows.push(row);
    log(`  ${weights} ${test}: ${(tokens / seconds).toFixed(1)} tok/s${selection === undefined ? '' : `, selected ${(100 * selection).toFixed(1)}%`}`);
    return row;
  };

  for (const dtype of dtypes) {
    // Weights are converted at load, so f32 and bf16 runs read the same random model.
    const model = await TaipanModel.load(dir, { backend: 'cpu', weightDtype: dtype });
    try {
      const peakBefore = prefillRoofline ? await addon().cpuFmaPeak() : undefined;
      const prefillRows: CpuBenchRow[] = [];
      for (const L of prompts) {
        const ids = randomIds(L, L);
        const runs: number[] = [];
        for (let r = 0; r <= repeats; r++) {
          const s = model.createState();
          const t = await time(() => model.prefill(ids, { states: [s] }));
          s.dispose();
          if (r > 0) runs.push(t); // the first run warms caches and the scratch buffers
        }
        const row = record(model, dtype, `prefill ${L}`, L, median(runs));
        row.flopsPerToken = prefillFlopsPerToken(cfg, L);
        prefillRows.push(row);
      }
      if (peakBefore !== undefined) {
        const fmaPeak = Math.max(peakBefore, await addon().cpuFmaPeak());
        for (const row of prefillRows) row.fmaPeak = fmaPeak;
        log(`  ${dtype} FMA peak ${(fmaPeak / 1e9).toFixed(1)} GFLOP/s`);
      }
      // Decode after a short and after a long context: a Mamba-2 state and a SAL's ring cache
      // do not grow, so the speed must not fall with the context length. The two contexts take
      // turns, round by round, so that a drift of the machine's speed does not land on one.
      // The roofline is for pure Mamba-2 models only: a Taipan step skips a SAL's projections
      // and attention for tokens its gate leaves out, so what it must read depends on the gate.
      const bandwidthBefore = cfg.sal ? undefined : await addon().cpuReadBandwidth(256);
      const contexts = [16, Math.max(...prompts)];
      const runs = contexts.map(() => [] as number[]);
      const selected = contexts.map(() => [] as number[]);
      for (let r = 0; r <= repeats; r++) {
        for (const [c, ctx] of contexts.entries()) {
          const s = model.createState();
          await model.prefill(randomIds(ctx, 7), { states: [s] });
          model.resetSelection();
          let next = 1;
          const t = await time(async () => {
            for (let i = 0; i < decodeTokens; i++) {
              const logits = await model.step([next], [s]);
              next = (next * 7 + (logits[next]! > 0 ? 1 : 2)) % cfg.vocab_size; // depends on the output
            }
          });
          s.dispose();
          const fraction = meanSelection(model);
          if (r > 0) {
            runs[c]!.push(t); // the first round warms caches and the scratch buffers
            if (fraction !== undefined) selected[c]!.push(fraction);
          }
        }
      }
      const decodeRows = contexts.map((ctx, c) => {
        const sel = selected[c]!;
        const selection = sel.length ? sel.reduce((a, x) => a + x, 0) / sel.length : undefined;
        return record(model, dtype, `decode after ${ctx}`, decodeTokens, median(runs[c]!), selection);
      });
      if (bandwidthBefore !== undefined) {
        const readBandwidth = Math.max(bandwidthBefore, await addon().cpuReadBandwidth(256));
        const bytesPerToken = decodeBytesPerToken(cfg, dtype, model);
        for (const row of decodeRows) Object.assign(row, { bytesPerToken, readBandwidth });
        log(`  ${dtype} read bandwidth ${(readBandwidth / 1e9).toFixed(1)} GB/s, ${(bytesPerToken / 1e6).toFixed(0)} MB per decode token: at most ${(readBandwidth / bytesPerToken).toFixed(1)} tok/s`);
      }
      if (o.profile) profiles.push(...(await profileModel(model, dtype, Math.max(...prompts), decodeTokens, randomIds)));
    } finally {
      model.dispose();
    }
  }
  return {
    date: new Date().toISOString(),
    preset,
    parameters,
    threads,
    cpu: cpus()[0]?.model ?? 'unknown',
    path: info.cpu.path,
    repeats,
    rows,
    ...(o.profile ? { profiles } : {}),
  };
}

/** One profiled prefill of `promptLength` random tokens, then `decodeTokens` profiled steps. */
async function profileModel(
  model: TaipanModel,
  weights: string,
  promptLength: number,
  decodeTokens: number,
  randomIds: (n: number, seed: number) => number[],
): Promise<OpProfile[]> {
  const s = model.createState();
  try {
    const ids = randomIds(promptLength, 11);
    const prefill = await profileOps(weights, `prefill ${promptLength}`, promptLength, () => model.prefill(ids, { states: [s] }));
    const decode = await profileOps(weights, `decode ${decodeTokens}`, decodeTokens, async () => {
      for (let i = 0; i < decodeTokens; i++) await model.step([(i * 31 + 1) % model.config.vocab_size], [s]);
    });
    return [prefill, decode];
  } finally {
    s.dispose();
  }
}

export function formatCpuBenchmark(r: CpuBenchResult): string {
  const lines = [
    `${r.preset} (${(r.parameters / 1e6).toFixed(1)}M), batch 1, ${r.threads} threads, ${r.cpu}, ${r.path} path, median of ${r.repeats}`,
    '',
    '| weights | test | tokens/s | ms/token | SAL selected | of roofline |',
    '|---|---|---:|---:|---:|---:|',
    ...r.rows.map((x) => {
      const roof = rooflineTokensPerSecond(x);
      const ofRoof = roof === undefined ? '-' : `${((100 * x.tokensPerSecond) / roof).toFixed(0)}% of ${roof.toFixed(1)}`;
      return `| ${x.weights} | ${x.test} | ${x.tokensPerSecond.toFixed(1)} | ${x.msPerToken.toFixed(2)} | ${x.selection === undefined ? '-' : (100 * x.selection).toFixed(1) + '%'} | ${ofRoof} |`;
    }),
  ];
  const once = (rows: CpuBenchRow[]) => rows.filter((x, i, a) => a.findIndex((y) => y.weights === x.weights) === i);
  const peak = r.rows.filter((x) => x.fmaPeak !== undefined && x.flopsPerToken !== undefined);
  if (peak.length) {
    lines.push(
      '',
      `Prefill roofline: a token needs the multiply-adds of the projections, the conv and the chunked scan (${peak
        .map((x) => `${x.test} ${(x.flopsPerToken! / 1e6).toFixed(0)} MFLOP`)
        .filter((x, i, a) => a.indexOf(x) === i)
        .join(', ')}), at the CPU threads' FMA peak measured in this run (${once(peak)
        .map((x) => `${x.weights} ${(x.fmaPeak! / 1e9).toFixed(1)} GFLOP/s`)
        .join(', ')}).`,
    );
  }
  const bw = r.rows.filter((x) => x.readBandwidth !== undefined);
  if (bw.length) {
    lines.push(
      '',
      `Decode roofline: a step moves every weight once and reads and writes the state (${once(bw)
        .map((x) => `${x.weights} ${(x.bytesPerToken! / 1e6).toFixed(0)} MB at ${(x.readBandwidth! / 1e9).toFixed(1)} GB/s`)
        .join(', ')}, the CPU threads' read bandwidth measured in this run).`,
    );
  }
  for (const p of r.profiles ?? []) lines.push('', formatOpProfile(p));
  return lines.join('\n');
}

/**
 * A profile as a table: each op's share of the run's wall time, its time per token and its
 * calls in the run, then what lay between the ops (JavaScript, the hop to the worker thread,
 * copying logits out).
 */
export function formatOpProfile(p: OpProfile): string {
  const msPerToken = (seconds: number) => ((seconds * 1000) / p.tokens).toFixed(3);
  const share = (seconds: number) => `${((100 * seconds) / p.seconds).toFixed(1)}%`;
  const between = Math.max(0, p.seconds - p.ops.reduce((a, x) => a + x.seconds, 0));
  return [
    `Profile, ${p.weights} ${p.test}: ${((p.seconds * 1000) / p.tokens).toFixed(2)} ms/token with every op timed`,
    '',
    '| op | share | ms/token | calls |',
    '|---|---:|---:|---:|',
    ...p.ops.map((x) => `| ${x.op} | ${share(x.seconds)} | ${msPerToken(x.seconds)} | ${x.calls} |`),
    `| (between ops) | ${share(between)} | ${msPerToken(between)} | - |`,
  ].join('\n');
}
