// CPU benchmark script (same as `taipan bench`):
//
//   npm run bench
//   npm run bench -- --preset mamba2-130m --threads 2 --prompts 512,2048 --decode 64 --repeats 3
//   npm run bench -- --json bench/results/cpu.json
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';

import { formatCpuBenchmark, runCpuBenchmark } from '../lib/bench/cpu.js';

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'mamba2-130m' },
    threads: { type: 'string', default: '2' },
    prompts: { type: 'string', default: '512,2048' },
    decode: { type: 'string', default: '64' },
    repeats: { type: 'string', default: '3' },
    dtypes: { type: 'string', default: 'f32,bf16' },
    json: { type: 'string' },
  },
});

const result = await runCpuBenchmark({
  preset: values.preset!,
  threads: Number(values.threads),
  prompts: values.prompts!.split(',').map(Number),
  decodeTokens: Number(values.decode),
  repeats: Number(values.repeats),
  dtypes: values.dtypes!.split(',') as ('f32' | 'bf16' | 'f16')[],
  log: (l) => process.stderr.write(l + '\n'),
});
console.log(formatCpuBenchmark(result));
if (values.json) {
  mkdirSync(dirname(values.json), { recursive: true });
  writeFileSync(values.json, JSON.stringify(result, null, 2) + '\n');
}
