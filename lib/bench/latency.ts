// The latency benchmark of the Taipan paper's Figure 1b, behind `taipan bench latency`: Taipan,
// Mamba-2, the Transformer++ baseline and the paper's Jamba variant at one size (MODEL.md section 8), seeded random weights
// (written once to a cache directory), batch 1, on the CPU by default (`--backend cuda` for a GPU,
// where each row also records the peak device memory of the CUDA caching allocator).
//
// Latency mode: a random prompt, then greedy generation (model.step in a loop, argmax) up to
// each length. Generating N tokens means the prompt's prefill (which yields token 1) and N - 1
// decode steps; the latency of N is the time until token N is known. One run to the largest
// length gives every length's figure on the way (a run to N computes exactly the same prefix),
// after a short warm-up run that pages the weights in and sizes the scratch buffers.
// Memory mode: the prompt alone, prefilled in chunks up to the largest length, with the peak
// resident memory after each length: the Transformer's KV cache grows with the context, the
// Mamba-2 states and Taipan's SAL ring buffers do not.
//
// Each model runs in a fresh child process, so that one model's peak RSS (maxRSS, which only
// ever grows) is not another's. The parent writes the models, starts the children, collects
// their JSON and draws the chart (hand-written SVG). Repeats run in rounds, every model once
// per round, so that a machine busy with other work slows all models alike rather than
// whichever ran at the time; each length reports the median over the rounds.
//
//   taipan bench latency [--models taipan,mamba2,transformer,jamba] [--size 190m] [--lengths 128,256,512]
//                        [--prompt 100] [--repeats 1] [--threads 2] [--backend cpu|cuda] [--json FILE] [--svg FILE] [--log-x]
//   taipan bench latency --memory --lengths 1024,4096,16384 [--chunk 512] [--svg FILE]
// The defaults take a few minutes on a 2-core CPU (the 190M models, once written, are cached in
// $TMPDIR/taipan-bench). Figure 1b's shape (the Transformer's time per token grows with its
// context, Mamba-2's and Taipan's do not) needs thousands of tokens, tens of minutes per model
// on a CPU; a long --prompt with short --lengths (e.g. --prompt 4000 --lengths 2,17) shows the
// decode cost at that context in a minute or two.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { cudaMemory, setThreads, type BackendName } from '../backend.js';
import { countParameters, getPreset } from '../config.js';
import { argmax, type CausalLM } from '../models/causal_lm.js';
import { createRandomModel, randomTokenIds } from '../models/random.js';
import { JambaModel } from '../models/jamba.js';
import { TaipanModel } from '../models/taipan.js';
import { TransformerModel } from '../models/transformer.js';
import { ProgressBar } from './progress.js';

export const LATENCY_MODELS = ['taipan', 'mamba2', 'transformer', 'jamba'] as const;
export type LatencyModel = (typeof LATENCY_MODELS)[number];
export const LATENCY_SIZES = ['190m', '450m', '1.3b'] as const;
export type LatencySize = (typeof LATENCY_SIZES)[number];

export interface LatencyOptions {
  models?: LatencyModel[];
  size?: LatencySize;
  /** Generation lengths (latency) or context lengths (memory). */
  lengths?: number[];
  /** Prompt tokens before generation (latency mode). */
  prompt?: number;
  /** Measured runs per model (latency mode), in rounds; the median of each length is reported. */
  repeats?: number;
  threads?: number;
  /** Where the models run (default 'cpu'). */
  backend?: BackendName;
  /** Peak memory vs context length instead of latency vs generation length. */
  memory?: boolean;
  /** Prefill piece in memory mode (default 512). */
  chunk?: number;
  cacheDir?: string;
  log?: (line: string) => void;
}

export interface LatencyRow {
  /** Generated tokens (latency) or context tokens (memory). */
  length: number;
  /** Latency mode: prompt prefill to the last generated token. */
  totalMs?: number;
  prefillMs?: number;
  /** Decode milliseconds per token after the first: (totalMs - prefillMs) / (length - 1). */
  msPerToken?: number;
  /** Peak resident memory of the process so far. */
  peakRssMiB: number;
  /** On CUDA: the caching allocator's peak so far (weights, states, scratch). */
  peakDeviceMiB?: number;
  /** Bytes held by the sequence's state (KV caches, SSM states, ring buffers). */
  stateMiB: number;
}

export interface LatencyModelResult {
  model: LatencyModel;
  preset: string;
  parameters: number;
  /** Resident memory right after loading, before any token. */
  loadedRssMiB: number;
  /** Taipan: mean realized selected fraction of the SALs over the measured tokens. */
  selection?: number;
  rows: LatencyRow[];
}

export interface LatencyResult {
  date: string;
  mode: 'latency' | 'memory';
  size: LatencySize;
  prompt: number;
  repeats: number;
  threads: number;
  cpu: string;
  /** Where the models ran; absent in results recorded before the option existed (CPU). */
  backend?: 'cpu' | 'cuda';
  results: LatencyModelResult[];
}

export function presetFor(model: LatencyModel, size: LatencySize): string {
  // "mamba2-1.3b" is the official state-spaces shape; the one at Taipan's size has its own name.
  if (model === 'mamba2' && size === '1.3b') return 'mamba2-1.3b-taipan';
  return `${model}-${size}`;
}

const CHILD_FLAG = '--taipan-latency-child';

interface ChildTask {
  model: LatencyModel;
  dir: string;
  mode: 'latency' | 'memory';
  lengths: number[];
  prompt: number;
  threads: number;
  chunk: number;
  backend: BackendName;
}

type ChildResult = Omit<LatencyModelResult, 'model' | 'preset' | 'parameters'>;

const now = () => Number(process.hrtime.bigint()) / 1e6;
const mib = (bytes: number) => bytes / 2 ** 20;
const peakRssMiB = () => process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export async function runLatencyBenchmark(o: LatencyOptions = {}): Promise<LatencyResult> {
  const models = o.models ?? [...LATENCY_MODELS];
  const size = o.size ?? '190m';
  const mode = o.memory ? 'memory' : 'latency';
  const lengths = [...new Set(o.lengths ?? [128, 256, 512])].sort((a, b) => a - b);
  const prompt = o.prompt ?? 100;
  const repeats = Math.max(1, o.repeats ?? 1);
  const threads = o.threads ?? 2;
  const chunk = o.chunk ?? 512;
  const backend = o.backend ?? 'cpu';
  const log = o.log ?? (() => {});
  for (const m of models) if (!LATENCY_MODELS.includes(m)) throw new Error(`unknown model "${m}"; known: ${LATENCY_MODELS.join(', ')}`);
  if (!LATENCY_SIZES.includes(size)) throw new Error(`unknown size "${size}"; known: ${LATENCY_SIZES.join(', ')}`);
  const minLength = mode === 'latency' ? 2 : 1;
  if (lengths.length === 0 || lengths.some((n) => !Number.isInteger(n) || n < minLength)) {
    throw new Error(`lengths must be integers >= ${minLength}, got ${lengths.join(',')}`);
  }
  if (!Number.isInteger(prompt) || prompt < 1) throw new Error(`prompt must be a positive integer, got ${prompt}`);

  const cacheDir = o.cacheDir ?? join(tmpdir(), 'taipan-bench');
  const runs = models.map((model) => ({ model, preset: presetFor(model, size), dir: '', outs: [] as ChildResult[] }));
  for (const run of runs) {
    // The same directory as `taipan bench` uses, so either benchmark reuses the other's model.
    run.dir = join(cacheDir, `${run.preset}-f32-seed0`);
    if (!existsSync(join(run.dir, 'model.safetensors'))) {
      log(`writing a random ${run.preset} checkpoint to ${run.dir} ...`);
      await createRandomModel(getPreset(run.preset), run.dir, { seed: 0, dtype: 'f32' });
    }
  }
  // Memory does not vary from run to run: one round.
  const rounds = mode === 'memory' ? 1 : repeats;
  for (let round = 0; round < rounds; round++) {
    for (const run of runs) {
      log(`${run.preset}: ${mode}${rounds > 1 ? `, round ${round + 1}/${rounds}` : ''}, in a fresh process ...`);
      run.outs.push(runChild({ model: run.model, dir: run.dir, mode, lengths, prompt, threads, chunk, backend }, run.preset));
    }
  }
  const results = runs.map(({ model, preset, outs }) => ({ model, preset, parameters: countParameters(getPreset(preset)), ...merge(outs) }));
  const device = outs0Device(runs[0]?.outs[0]);
  return { date: new Date().toISOString(), mode, size, prompt, repeats: rounds, threads, cpu: cpus()[0]?.model ?? 'unknown', backend: device, results };
}

/** The device the children reported ('auto' resolves in the child). */
function outs0Device(out: ChildResult | undefined): 'cpu' | 'cuda' {
  return out?.rows[0]?.peakDeviceMiB !== undefined ? 'cuda' : 'cpu';
}

function runChild(task: ChildTask, preset: string): ChildResult {
  const self = fileURLToPath(import.meta.url);
  // The parent's loader flags (e.g. --import tsx when run from source) go to the child too.
  const r = spawnSync(process.execPath, [...loaderArgs(), self, CHILD_FLAG, JSON.stringify(task)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'], // the child's progress lines go straight to our stderr
    maxBuffer: 16 * 2 ** 20,
  });
  if (r.status !== 0) throw new Error(`the ${preset} run failed (exit ${r.status ?? r.signal})${r.error ? `: ${r.error.message}` : ''}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
}

/** Rounds of one model: median times, the highest memory, the mean selection. */
function merge(outs: ChildResult[]): ChildResult {
  const sel = outs.flatMap((o) => (o.selection === undefined ? [] : [o.selection]));
  const rows = outs[0]!.rows.map((first, i) => {
    const all = outs.map((o) => o.rows[i]!);
    const row: LatencyRow = { length: first.length, peakRssMiB: Math.max(...all.map((x) => x.peakRssMiB)), stateMiB: first.stateMiB };
    if (first.peakDeviceMiB !== undefined) row.peakDeviceMiB = Math.max(...all.map((x) => x.peakDeviceMiB!));
    if (first.totalMs !== undefined) {
      row.totalMs = median(all.map((x) => x.totalMs!));
      row.prefillMs = median(all.map((x) => x.prefillMs!));
      row.msPerToken = (row.totalMs - row.prefillMs) / (row.length - 1);
    }
    return row;
  });
  return {
    loadedRssMiB: Math.max(...outs.map((o) => o.loadedRssMiB)),
    selection: sel.length ? sel.reduce((a, b) => a + b, 0) / sel.length : undefined,
    rows,
  };
}

/** Node flags that load code (a TypeScript loader), without an -e/-p script. */
function loaderArgs(): string[] {
  const out: string[] = [];
  const a = process.execArgv;
  for (let i = 0; i < a.length; i++) {
    const f = a[i]!;
    if (['--import', '--require', '-r', '--loader', '--experimental-loader'].includes(f) && i + 1 < a.length) out.push(f, a[++i]!);
    else if (/^--(import|require|loader|experimental-loader)=/.test(f)) out.push(f);
  }
  return out;
}

// ---- the child: one model in its own process ---------------------------------------------------

async function loadModel(model: LatencyModel, dir: string, prefillChunk: number, backend: BackendName): Promise<CausalLM> {
  const opts = { backend, prefillChunk };
  if (model === 'transformer') return TransformerModel.load(dir, opts);
  if (model === 'jamba') return JambaModel.load(dir, opts);
  return TaipanModel.load(dir, opts);
}

function stateMiB(state: ReturnType<CausalLM['createState']>): number {
  return mib(state.byteLength);
}

async function child(task: ChildTask): Promise<ChildResult> {
  setThreads(task.threads);
  const log = (line: string) => process.stderr.write(`  ${task.model}: ${line}\n`);
  const model = await loadModel(task.model, task.dir, task.mode === 'memory' ? task.chunk : Math.max(task.prompt, 1), task.backend);
  try {
    const loadedRssMiB = mib(process.memoryUsage().rss);
    const vocab = model.config.vocab_size;
    const ids = randomTokenIds(task.mode === 'memory' ? Math.max(...task.lengths) : task.prompt, vocab, 17);
    const rows = task.mode === 'memory' ? await memoryRows(model, task, ids, log) : await latencyRows(model, task, ids, log);
    const sel = model.totalSelection;
    const selection = sel.length ? sel.reduce((a, s) => a + s.fraction, 0) / sel.length : undefined;
    return { loadedRssMiB, selection, rows };
  } finally {
    model.dispose();
  }
}

interface Reached {
  ms: number;
  peakRssMiB: number;
  peakDeviceMiB?: number;
  stateMiB: number;
}

/** Peak memory now: the process's resident set, and on CUDA the device allocator's peak. */
function peaks(model: CausalLM): { peakRssMiB: number; peakDeviceMiB?: number } {
  if (model.device !== 'cuda') return { peakRssMiB: peakRssMiB() };
  return { peakRssMiB: peakRssMiB(), peakDeviceMiB: mib(cudaMemory().peakBytes) };
}

/** One greedy generation; returns the prefill time and when (and with what memory) each length was reached. */
async function generate(model: CausalLM, prompt: number[], lengths: number[], onLength?: (n: number, ms: number) => void, bar?: ProgressBar) {
  const V = model.config.vocab_size;
  const state = model.createState();
  try {
    const t0 = now();
    let { logits } = await model.prefill(prompt, { states: [state] });
    let token = argmax(logits, V);
    const prefillMs = now() - t0;
    const at = new Map<number, Reached>();
    const last = Math.max(...lengths);
    for (let n = 1; ; n++) {
      // `token` is generated token n.
      bar?.update(n, last);
      if (lengths.includes(n)) {
        const ms = now() - t0;
        at.set(n, { ms, ...peaks(model), stateMiB: stateMiB(state) });
        bar?.clear();
        onLength?.(n, ms);
      }
      if (n === last) break;
      logits = await model.step([token], [state]);
      token = argmax(logits, V);
    }
    return { prefillMs, at };
  } finally {
    state.dispose();
  }
}

async function latencyRows(model: CausalLM, task: ChildTask, prompt: number[], log: (l: string) => void): Promise<LatencyRow[]> {
  await generate(model, prompt, [Math.min(4, Math.max(...task.lengths))]); // warm-up
  model.resetSelection();
  const bar = new ProgressBar(task.model);
  const run = await generate(model, prompt, task.lengths, (n, ms) => log(`${n} tokens: ${(ms / 1000).toFixed(2)} s`), bar);
  bar.clear();
  return task.lengths.map((length) => {
    const { ms: totalMs, ...mem } = run.at.get(length)!;
    return { length, totalMs, prefillMs: run.prefillMs, msPerToken: (totalMs - run.prefillMs) / (length - 1), ...mem };
  });
}

async function memoryRows(model: CausalLM, task: ChildTask, ids: number[], log: (l: string) => void): Promise<LatencyRow[]> {
  const state = model.createState();
  const rows: LatencyRow[] = [];
  try {
    let pos = 0;
    const bar = new ProgressBar(task.model);
    const end = Math.max(...task.lengths);
    for (const length of task.lengths) {
      while (pos < length) {
        const n = Math.min(task.chunk, length - pos);
        await model.prefill(ids.slice(pos, pos + n), { states: [state] });
        pos += n;
        bar.update(pos, end);
      }
      bar.clear();
      const row: LatencyRow = { length, ...peaks(model), stateMiB: stateMiB(state) };
      rows.push(row);
      log(`${length} tokens of context: peak RSS ${row.peakRssMiB.toFixed(0)} MiB, state ${row.stateMiB.toFixed(1)} MiB`);
    }
  } finally {
    state.dispose();
  }
  return rows;
}

if (process.argv[2] === CHILD_FLAG && process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  child(JSON.parse(process.argv[3]!) as ChildTask).then(
    (r) => console.log(JSON.stringify(r)),
    (e: unknown) => {
      console.error(e instanceof Error ? e.stack : String(e));
      process.exit(1);
    },
  );
}

// ---- report and chart --------------------------------------------------------------------------

export function formatLatencyBenchmark(r: LatencyResult): string {
  const where = r.backend === 'cuda' ? 'CUDA' : `${r.threads} threads, ${r.cpu}`;
  const head = `${r.mode === 'latency' ? `greedy generation after a ${r.prompt}-token prompt` : 'prefill memory vs context'}, size ${r.size}, batch 1, ${where}`;
  // A device column only when the rows have one (a CUDA run).
  const dev = r.results.some((m) => m.rows.some((x) => x.peakDeviceMiB !== undefined));
  const devHead = dev ? ' peak device (MiB) |' : '';
  const devRule = dev ? '---:|' : '';
  const devCell = (x: LatencyRow) => (dev ? ` ${x.peakDeviceMiB === undefined ? '-' : x.peakDeviceMiB.toFixed(0)} |` : '');
  if (r.mode === 'memory') {
    return [
      head,
      '',
      `| model | params | context | peak RSS (MiB) |${devHead} state (MiB) |`,
      `|---|---:|---:|---:|${devRule}---:|`,
      ...r.results.flatMap((m) =>
        m.rows.map((x) => `| ${m.preset} | ${(m.parameters / 1e6).toFixed(1)}M | ${x.length} | ${x.peakRssMiB.toFixed(0)} |${devCell(x)} ${x.stateMiB.toFixed(1)} |`),
      ),
    ].join('\n');
  }
  return [
    head + (r.repeats > 1 ? `, median of ${r.repeats}` : ''),
    '',
    `| model | params | generated | total (s) | prefill (ms) | decode ms/token | peak RSS (MiB) |${devHead} SAL selected |`,
    `|---|---:|---:|---:|---:|---:|---:|${devRule}---:|`,
    ...r.results.flatMap((m) =>
      m.rows.map(
        (x) =>
          `| ${m.preset} | ${(m.parameters / 1e6).toFixed(1)}M | ${x.length} | ${(x.totalMs! / 1000).toFixed(2)} | ${x.prefillMs!.toFixed(0)} | ` +
          `${x.msPerToken!.toFixed(1)} | ${x.peakRssMiB.toFixed(0)} |${devCell(x)} ${m.selection === undefined ? '-' : (100 * m.selection).toFixed(1) + '%'} |`,
      ),
    ),
  ].join('\n');
}

/** The result as an SVG line chart: one line per model. */
export function latencySvg(r: LatencyResult, opts: { logX?: boolean } = {}): string {
  const latency = r.mode === 'latency';
  const cuda = r.backend === 'cuda';
  return lineChart({
    title: latency
      ? `Latency vs generation length (${r.size}, ${r.prompt}-token prompt, batch 1, ${cuda ? 'CUDA' : `CPU ${r.threads} threads`})`
      : `Peak memory vs context length (${r.size}, prefill, batch 1, ${cuda ? 'CUDA' : 'CPU'})`,
    xLabel: latency ? 'generated tokens' : 'context tokens',
    yLabel: latency ? 'latency (s)' : cuda ? 'peak device memory (MiB)' : 'peak RSS (MiB)',
    series: r.results.map((m) => ({
      name: m.preset,
      points: m.rows.map((x) => [x.length, latency ? x.totalMs! / 1000 : cuda ? (x.peakDeviceMiB ?? x.peakRssMiB) : x.peakRssMiB] as [number, number]),
    })),
    logX: opts.logX ?? false,
  });
}

interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: { name: string; points: [number, number][] }[];
  logX: boolean;
}

const COLORS = ['#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e'];

/** Ticks 1, 2 or 5 times a power of ten apart, about `count` of them, from lo up to at least hi. */
function niceTicks(lo: number, hi: number, count = 5): number[] {
  const raw = (hi - lo) / count || 1;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw)!;
  const out: number[] = [];
  const last = Math.ceil(hi / step - 1e-9) * step;
  for (let i = Math.ceil(lo / step); i * step <= last + step * 1e-9; i++) out.push(+(i * step).toPrecision(12));
  return out;
}

function label(v: number): string {
  if (v >= 1e6 && v % 1e5 === 0) return `${v / 1e6}M`;
  if (v >= 1e4 && v % 1e3 === 0) return `${v / 1e3}K`;
  return Number.isInteger(v) ? String(v) : String(+v.toPrecision(3));
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function lineChart(c: Chart): string {
  const [W, H] = [760, 460];
  const m = { left: 70, right: 190, top: 44, bottom: 56 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const xs = c.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = c.series.flatMap((s) => s.points.map((p) => p[1]));
  const yTicks = niceTicks(0, Math.max(...ys, 1e-9));
  const yMax = yTicks[yTicks.length - 1]!;
  let xTicks: number[];
  let fx: (v: number) => number;
  if (c.logX) {
    const [a, b] = [Math.log(Math.min(...xs)), Math.log(Math.max(...xs))];
    fx = (v) => m.left + (b > a ? ((Math.log(v) - a) / (b - a)) * pw : pw / 2);
    xTicks = [...new Set(xs)].sort((p, q) => p - q); // the measured lengths themselves
  } else {
    xTicks = niceTicks(0, Math.max(...xs));
    const xMax = Math.max(xTicks[xTicks.length - 1]!, ...xs);
    fx = (v) => m.left + (v / xMax) * pw;
  }
  const fy = (v: number) => m.top + ph - (v / yMax) * ph;
  const n = (v: number) => v.toFixed(1);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="14" font-weight="bold">${esc(c.title)}</text>`,
  ];
  // Grid lines with tick labels, then the axes over them.
  for (const v of yTicks) {
    out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${n(fy(v))}" y2="${n(fy(v))}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.left - 8}" y="${n(fy(v) + 4)}" text-anchor="end">${label(v)}</text>`);
  }
  for (const v of xTicks) {
    out.push(`<line x1="${n(fx(v))}" x2="${n(fx(v))}" y1="${m.top}" y2="${m.top + ph}" stroke="#f0f0f0"/>`);
    out.push(`<line x1="${n(fx(v))}" x2="${n(fx(v))}" y1="${m.top + ph}" y2="${m.top + ph + 5}" stroke="black"/>`);
    out.push(`<text x="${n(fx(v))}" y="${m.top + ph + 19}" text-anchor="middle">${label(v)}</text>`);
  }
  out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${m.top + ph}" y2="${m.top + ph}" stroke="black"/>`);
  out.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + ph}" stroke="black"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 14}" text-anchor="middle">${esc(c.xLabel)}${c.logX ? ' (log scale)' : ''}</text>`);
  out.push(`<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`);
  c.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const pts = [...s.points].sort((p, q) => p[0] - q[0]);
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map(([x, y]) => `${n(fx(x))},${n(fy(y))}`).join(' ')}"/>`);
    for (const [x, y] of pts) out.push(`<circle cx="${n(fx(x))}" cy="${n(fy(y))}" r="3.5" fill="${color}"/>`);
    // Legend, right of the plot.
    const ly = m.top + 10 + i * 22;
    out.push(`<line x1="${m.left + pw + 16}" x2="${m.left + pw + 40}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<circle cx="${m.left + pw + 28}" cy="${ly}" r="3.5" fill="${color}"/>`);
    out.push(`<text x="${m.left + pw + 48}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ---- the command ---------------------------------------------------------------------------------

export async function latencyCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      models: { type: 'string', default: LATENCY_MODELS.join(',') },
      size: { type: 'string', default: '190m' },
      lengths: { type: 'string', default: '128,256,512' },
      prompt: { type: 'string', default: '100' },
      repeats: { type: 'string', default: '1' },
      threads: { type: 'string', default: '2' },
      backend: { type: 'string', default: 'cpu' },
      chunk: { type: 'string', default: '512' },
      memory: { type: 'boolean', default: false },
      'log-x': { type: 'boolean', default: false },
      json: { type: 'string' },
      svg: { type: 'string' },
    },
  });
  const int = (s: string, flag: string, min: number) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < min) throw new Error(`${flag} must be an integer >= ${min}, got "${s}"`);
    return n;
  };
  const models = values.models!.split(',').map((m) => m.trim());
  const bad = models.find((m) => !(LATENCY_MODELS as readonly string[]).includes(m));
  if (bad !== undefined) throw new Error(`--models: unknown model "${bad}"; known: ${LATENCY_MODELS.join(', ')}`);
  if (!['cpu', 'cuda', 'auto'].includes(values.backend!)) throw new Error(`--backend must be cpu, cuda or auto, got "${values.backend}"`);
  if (!(LATENCY_SIZES as readonly string[]).includes(values.size!)) throw new Error(`--size must be one of ${LATENCY_SIZES.join(', ')}, got "${values.size}"`);
  const result = await runLatencyBenchmark({
    models: models as LatencyModel[],
    size: values.size as LatencySize,
    lengths: values.lengths!.split(',').map((l) => int(l, '--lengths', values.memory ? 1 : 2)),
    prompt: int(values.prompt!, '--prompt', 1),
    repeats: int(values.repeats!, '--repeats', 1),
    threads: int(values.threads!, '--threads', 0),
    chunk: int(values.chunk!, '--chunk', 1),
    backend: values.backend as BackendName,
    memory: values.memory,
    log: (l) => process.stderr.write(l + '\n'),
  });
  console.log(formatLatencyBenchmark(result));
  const write = (file: string, text: string) => {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, text);
  };
  if (values.json) write(values.json, JSON.stringify(result, null, 2) + '\n');
  if (values.svg) write(values.svg, latencySvg(result, { logX: values['log-x'] }));
  return 0;
}
