// Long-context evaluation in constant memory: a small random Taipan scores token streams of
// 10K, 100K and 1M tokens as one sequence each, every length in a fresh process, and the peak
// resident memory (RSS) of each process is recorded. A flat line means memory does not grow
// with the context: the SSM states, conv states and SAL ring caches are fixed in size and the
// stream is read from disk piece by piece.
//
//   npm run bench:long [-- --lengths 10000,100000,1000000] [--json FILE]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { parseConfig } from '../lib/config.js';
import { evaluatePerplexity, TokenFile } from '../lib/eval.js';
import { createRandomModel, randomTokenIds } from '../lib/models/random.js';
import { TaipanModel } from '../lib/models/taipan.js';

const config = {
  model_type: 'taipan',
  d_model: 128,
  n_layer: 8,
  sal_every: 3,
  vocab_size: 1024,
  ssm: { d_state: 32, headdim: 32, chunk_size: 256 },
  sal: { n_heads: 4, head_dim: 32, window: 512, d_ff: 256, capacity: 0.15 },
};

/** Child mode: score one token file and print JSON with the peak RSS of this process. */
async function child(modelDir: string, tokens: string): Promise<void> {
  const model = await TaipanModel.load(modelDir, { backend: 'cpu', threads: 2 });
  const source = new TokenFile(tokens);
  try {
    const r = await evaluatePerplexity(model, source, { window: 100_000 });
    const out = {
      tokens: r.tokens + 1,
      perplexity: r.perplexity,
      tokensPerSecond: r.tokensPerSecond,
      seconds: r.seconds,
      selection: r.selection.map((s) => s.fraction),
      peakRssMiB: process.resourceUsage().maxRSS / 1024,
      // Where memory sits at the end: V8 heap, native memory reported to V8, typed arrays.
      memoryMiB: Object.fromEntries(Object.entries(process.memoryUsage()).map(([k, v]) => [k, +(v / 2 ** 20).toFixed(1)])),
    };
    console.log(JSON.stringify(out));
  } finally {
    source.close();
    model.dispose();
  }
}

async function parent(lengths: number[], jsonOut: string | undefined): Promise<void> {
  const work = join(tmpdir(), 'taipan-bench', 'long-context');
  const modelDir = join(work, 'model');
  if (!existsSync(join(modelDir, 'model.safetensors'))) await createRandomModel(parseConfig(config), modelDir, { seed: 0 });
  const self = fileURLToPath(import.meta.url);
  const rows = [];
  for (const n of lengths) {
    const file = join(work, `tokens-${n}.bin`);
    if (!existsSync(file)) {
      const ids = Int32Array.from(randomTokenIds(n, config.vocab_size, n));
      writeFileSync(file, new Uint8Array(ids.buffer));
    }
    const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', modelDir, file], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`child for ${n} tokens failed:\n${r.stderr}`);
    const row = JSON.parse(r.stdout.trim().split('\n').pop()!);
    rows.push(row);
    console.error(`${n} tokens: peak RSS ${row.peakRssMiB.toFixed(1)} MiB, ${row.tokensPerSecond.toFixed(0)} tok/s, ${row.seconds.toFixed(1)} s`);
  }
  console.log('| tokens | peak RSS (MiB) | tokens/s | seconds | SAL selected |');
  console.log('|---:|---:|---:|---:|---|');
  for (const r of rows) {
    const sel = r.selection.map((f: number) => `${(100 * f).toFixed(1)}%`).join(', ');
    console.log(`| ${r.tokens.toLocaleString('en-US')} | ${r.peakRssMiB.toFixed(1)} | ${r.tokensPerSecond.toFixed(0)} | ${r.seconds.toFixed(1)} | ${sel} |`);
  }
  if (jsonOut) {
    mkdirSync(dirname(jsonOut), { recursive: true });
    const result = { date: new Date().toISOString(), cpu: cpus()[0]?.model, threads: 2, config, rows };
    writeFileSync(jsonOut, JSON.stringify(result, null, 2) + '\n');
  }
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    child: { type: 'boolean', default: false },
    lengths: { type: 'string', default: '10000,100000,1000000' },
    json: { type: 'string' },
  },
});
if (values.child) await child(positionals[0]!, positionals[1]!);
else await parent(values.lengths!.split(',').map(Number), values.json);
