// What a Selective Attention Layer costs against a dense sliding-window attention layer of the
// same window: one taipan-190m-shaped SAL (d 768, 12 x 64 heads, window 2048, d_ff 2048) run
// on a 2048-token prompt, once with the gate calibrated to C = 0.15 and once with every token
// selected (C = 1: each token queries its window, which is exactly dense sliding-window
// attention). The model around the layer is an embedding and a 256-token head run on the last
// position only, so the time is the layer's. A third run with the gate closed (nothing
// selected) gives the part every token pays whatever the gate says (pre-norm and gate, k and
// v projections, the SwiGLU MLP); the rest is the selective part (q, attention, o_proj, mix),
// which should scale with the selected fraction.
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { setThreads } from '../backend.js';
import { parseConfig } from '../config.js';
import { createRandomModel, randomTokenIds } from '../models/random.js';
import { TaipanModel } from '../models/taipan.js';

export interface SalBenchRow {
  /** Gate capacity the bias was calibrated to; 0 = gate closed (nothing selected). */
  capacity: number;
  /** Realized selected fraction on the prompt. */
  selected: number;
  /** Milliseconds for the SAL on the whole prompt. */
  layerMs: number;
  /** layerMs minus the gate-closed time: the cost of the selected tokens. */
  selectiveMs: number;
}

export interface SalBenchResult {
  date: string;
  prompt: number;
  threads: number;
  rows: SalBenchRow[];
}

function salConfig(capacity: number) {
  return parseConfig({
    model_type: 'taipan',
    d_model: 768,
    layer_types: ['sal'],
    vocab_size: 256,
    ssm: { d_state: 128, headdim: 64 },
    sal: { n_heads: 12, head_dim: 64, window: 2048, d_ff: 2048, capacity },
  });
}

export async function runSalBenchmark(o: { prompt?: number; threads?: number; repeats?: number; cacheDir?: string; log?: (l: string) => void } = {}): Promise<SalBenchResult> {
  const prompt = o.prompt ?? 2048;
  const repeats = Math.max(1, o.repeats ?? 3);
  const threads = setThreads(o.threads ?? 2);
  const log = o.log ?? (() => {});
  const ids = randomTokenIds(prompt, 256, 5);

  const timeModel = async (capacity: number) => {
    const c = capacity === 0 ? 0.15 : capacity;
    const dir = join(o.cacheDir ?? join(tmpdir(), 'taipan-bench'), `sal-layer-${c}-seed0`);
    if (!existsSync(join(dir, 'model.safetensors'))) await createRandomModel(salConfig(c), dir, { seed: 0 });
    const model = await TaipanModel.load(dir, { backend: 'cpu', prefillChunk: prompt });
    if (capacity === 0) model.sals[0]!.setGateBias([0, -1e4]);
    try {
      const runs: number[] = [];
      let selected = 0;
      for (let r = 0; r <= repeats; r++) {
        model.resetSelection();
        const t0 = process.hrtime.bigint();
        const res = await model.prefill(ids);
        const t = Number(process.hrtime.bigint() - t0) / 1e6;
        res.states.forEach((x) => x.dispose());
        selected = res.selection[0]?.fraction ?? 0;
        if (r > 0) runs.push(t);
      }
      runs.sort((a, b) => a - b);
      return { ms: runs[Math.floor(runs.length / 2)]!, selected };
    } finally {
      model.dispose();
    }
  };

  const rows: SalBenchRow[] = [];
  let closed = 0;
  for (const capacity of [0, 0.15, 1]) {
    const { ms, selected } = await timeModel(capacity);
    if (capacity === 0) closed = ms;
    rows.push({ capacity, selected, layerMs: ms, selectiveMs: ms - closed });
    log(`  SAL C=${capacity}: ${ms.toFixed(1)} ms (selected ${(100 * selected).toFixed(1)}%)`);
  }
  return { date: new Date().toISOString(), prompt, threads, rows };
}

export function formatSalBenchmark(r: SalBenchResult): string {
  const dense = r.rows.find((x) => x.capacity === 1)!;
  return [
    `one SAL (d 768, 12 x 64 heads, window 2048, d_ff 2048), prefill ${r.prompt} tokens, ${r.threads} threads`,
    '',
    '| gate | selected | layer ms | vs dense | selective part ms | vs dense |',
    '|---|---:|---:|---:|---:|---:|',
    ...r.rows.map((x) => {
      const name = x.capacity === 1 ? 'all tokens (dense sliding window)' : x.capacity === 0 ? 'closed (nothing selected)' : `C = ${x.capacity}`;
      const rel = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}x` : '-');
      return `| ${name} | ${(100 * x.selected).toFixed(1)}% | ${x.layerMs.toFixed(1)} | ${rel(x.layerMs, dense.layerMs)} | ${x.selectiveMs.toFixed(1)} | ${rel(x.selectiveMs, dense.selectiveMs)} |`;
    }),
  ].join('\n');
}
