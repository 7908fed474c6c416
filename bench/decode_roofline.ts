// Where a decode token's time goes against the memory roofline, measured in alternation: a
// read-bandwidth probe, then 16 decode steps with every op timed, again and again. Printing
// the probe next to the bandwidth the GEMVs reached in the steps right after it takes most of
// a shared VM's drift out of the comparison (`taipan bench` instead probes once before and
// once after all its decode runs).
//
//   npm run bench:roofline [-- --dtype bf16] [--preset mamba2-130m] [--rounds 4]
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { setThreads } from '../lib/backend.js';
import { decodeBytesPerToken } from '../lib/bench/cpu.js';
import { countParameters, getPreset } from '../lib/config.js';
import { dtypeBytes } from '../lib/dtype.js';
import { createRandomModel } from '../lib/models/random.js';
import { TaipanModel } from '../lib/models/taipan.js';
import { addon } from '../lib/native.js';

const { values } = parseArgs({
  options: {
    dtype: { type: 'string', default: 'f32' },
    preset: { type: 'string', default: 'mamba2-130m' },
    rounds: { type: 'string', default: '4' },
    steps: { type: 'string', default: '16' },
  },
});
const dtype = values.dtype as 'f32' | 'bf16' | 'f16';
const rounds = Number(values.rounds);
const steps = Number(values.steps);
const cfg = getPreset(values.preset!);
const dir = join(tmpdir(), 'taipan-bench', `${values.preset}-f32-seed0`); // shared with `taipan bench`
if (!existsSync(join(dir, 'model.safetensors'))) await createRandomModel(cfg, dir, { seed: 0, dtype: 'f32' });

setThreads(2);
const model = await TaipanModel.load(dir, { backend: 'cpu', weightDtype: dtype });
const state = model.createState();
await model.prefill([1, 2, 3, 4, 5, 6, 7, 8], { states: [state] });
for (let i = 0; i < 4; i++) await model.step([1], [state]); // warm the scratch buffers

const bytesPerToken = decodeBytesPerToken(cfg, dtype, model);
const weightBytes = countParameters(cfg) * dtypeBytes(dtype);
const stateBytes = bytesPerToken - weightBytes; // read and written
const gb = (bytesPerSecond: number) => (bytesPerSecond / 1e9).toFixed(1);
console.log(`${values.preset}, ${dtype} weights: ${(weightBytes / 1e6).toFixed(0)} MB of weights and ${(stateBytes / 1e6).toFixed(0)} MB of state traffic per token`);
addon().setProfiling(true);
for (let r = 0; r < rounds; r++) {
  const probe = await addon().cpuReadBandwidth(256);
  addon().opProfile(true);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await model.step([1], [state]);
  const ms = (performance.now() - t0) / steps;
  const ops = addon().opProfile(true);
  const linear = (ops.linear?.seconds ?? 0) / steps;
  const ssd = (ops.ssd_step?.seconds ?? 0) / steps;
  const opsMs = (1000 * Object.values(ops).reduce((a, o) => a + o.seconds, 0)) / steps;
  console.log(
    `probe ${gb(probe)} GB/s | token ${ms.toFixed(2)} ms = ${((100 * bytesPerToken) / (probe * ms * 1e-3)).toFixed(0)}% of roofline` +
      ` | GEMVs ${(1000 * linear).toFixed(2)} ms at ${gb(weightBytes / linear)} GB/s (${((100 * weightBytes) / linear / probe).toFixed(0)}% of probe)` +
      ` | SSM step ${(1000 * ssd).toFixed(2)} ms | other ops ${(opsMs - 1000 * (linear + ssd)).toFixed(2)} ms | outside ops ${(ms - opsMs).toFixed(2)} ms`,
  );
}
state.dispose();
model.dispose();
