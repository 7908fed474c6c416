// The `taipan` command line.
//
//   taipan doctor [--json]                 what was built, what devices answer, CPU features
//   taipan bench [--preset P] [--threads N] [--prompts 512,2048] [--decode 64] [--repeats 3] [--json FILE]
//   taipan random --preset P --out DIR [--dtype f32|bf16|f16] [--seed S]
//   taipan generate --model DIR --ids 1,2,3 [--max-tokens N] [--backend cpu] [--threads N]
//   taipan eval --model DIR --tokens FILE [--text] [--window N] [--json]
//   taipan logits --model DIR --ids 1,2,3 --out FILE [--backend cpu|cuda]
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';

import { getBackendInfo, type BackendName } from './backend.js';
import { formatCpuBenchmark, runCpuBenchmark } from './bench/cpu.js';
import { formatSalBenchmark, runSalBenchmark } from './bench/sal.js';
import { getPreset, PRESETS } from './config.js';
import { evalCommand } from './commands/eval.js';
import { logitsCommand } from './commands/logits.js';
import { createRandomModel } from './models/random.js';
import { TaipanModel } from './models/taipan.js';

const USAGE = `usage: taipan <command> [options]

commands:
  doctor [--json]            show the backends this addon was built with and what answers
  bench [options]            CPU prefill/decode benchmark on a random model (no download)
      --preset NAME          model shape (default mamba2-130m)
      --threads N            CPU threads (default 2)
      --prompts 512,2048     prompt lengths
      --decode N             tokens decoded per measurement (default 64)
      --repeats N            runs per figure, median reported (default 3)
      --dtypes f32,bf16      weight dtypes to measure
      --json FILE            also write the results as JSON
      --sal                  instead: one SAL at C = 0.15 vs dense sliding-window attention
  random --preset NAME --out DIR [--dtype f32|bf16|f16] [--seed N]
                             write a random checkpoint directory
  generate --model DIR --ids 1,2,3 [--max-tokens N] [--backend auto|cpu|cuda] [--threads N]
                             greedy generation from token ids, printed as ids
  eval --model DIR --tokens FILE [--text] [--window 1024] [--max-tokens N] [--json]
                             perplexity of a token stream (int32 little-endian ids, or text
                             with --text), run as one sequence in constant memory
  logits --model DIR --ids 1,2,3 --out FILE [--backend auto|cpu|cuda]
                             write every position's logits as raw float32 [L, vocab_padded]

presets: ${Object.keys(PRESETS).join(', ')}`;

function ints(s: string, what: string): number[] {
  const out = s.split(',').map((x) => Number(x.trim()));
  if (out.some((x) => !Number.isInteger(x))) throw new Error(`${what} must be comma-separated integers, got "${s}"`);
  return out;
}

async function doctor(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean', default: false } } });
  const info = getBackendInfo();
  if (values.json) {
    console.log(JSON.stringify(info, null, 2));
    return 0;
  }
  const c = info.cpu;
  console.log(`CPU backend: ${c.path} kernels (avx2 ${c.avx2}, fma ${c.fma}, f16c ${c.f16c}), ${c.threads} threads`);
  if (!info.cuda.compiled) console.log('CUDA backend: not compiled (nvcc was not found at build time)');
  else {
    console.log(`CUDA backend: compiled (runtime ${info.cuda.runtimeVersion}, driver ${info.cuda.driverVersion || 'none'})`);
    if (info.cuda.devices.length === 0) console.log(`  no device: ${info.cuda.reason}`);
    for (const d of info.cuda.devices) {
      console.log(`  device ${d.index}: ${d.name}, compute ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB, ${d.multiprocessors} SMs`);
    }
  }
  console.log(`backend "auto" uses: ${info.auto.backend} (${info.auto.why})`);
  console.log(`ops: ${info.ops.join(', ')}`);
  return 0;
}

async function bench(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      preset: { type: 'string', default: 'mamba2-130m' },
      threads: { type: 'string', default: '2' },
      prompts: { type: 'string', default: '512,2048' },
      decode: { type: 'string', default: '64' },
      repeats: { type: 'string', default: '3' },
      dtypes: { type: 'string', default: 'f32,bf16' },
      json: { type: 'string' },
      sal: { type: 'boolean', default: false },
    },
  });
  const write = (result: unknown) => {
    if (!values.json) return;
    mkdirSync(dirname(values.json), { recursive: true });
    writeFileSync(values.json, JSON.stringify(result, null, 2) + '\n');
  };
  if (values.sal) {
    const result = await runSalBenchmark({
      threads: Number(values.threads),
      repeats: Number(values.repeats),
      log: (l) => process.stderr.write(l + '\n'),
    });
    console.log(formatSalBenchmark(result));
    write(result);
    return 0;
  }
  const result = await runCpuBenchmark({
    preset: values.preset!,
    threads: Number(values.threads),
    prompts: ints(values.prompts!, '--prompts'),
    decodeTokens: Number(values.decode),
    repeats: Number(values.repeats),
    dtypes: values.dtypes!.split(',') as ('f32' | 'bf16' | 'f16')[],
    log: (l) => process.stderr.write(l + '\n'),
  });
  console.log(formatCpuBenchmark(result));
  write(result);
  return 0;
}

async function random(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      preset: { type: 'string' },
      out: { type: 'string' },
      dtype: { type: 'string', default: 'f32' },
      seed: { type: 'string', default: '0' },
    },
  });
  if (!values.preset || !values.out) throw new Error('random needs --preset and --out');
  const dtype = values.dtype as 'f32' | 'bf16' | 'f16';
  if (!['f32', 'bf16', 'f16'].includes(dtype)) throw new Error(`--dtype must be f32, bf16 or f16, got "${dtype}"`);
  await createRandomModel(getPreset(values.preset), values.out, { seed: Number(values.seed), dtype });
  console.log(values.out);
  return 0;
}

async function generate(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: 'string' },
      ids: { type: 'string' },
      'max-tokens': { type: 'string', default: '32' },
      backend: { type: 'string' },
      threads: { type: 'string' },
    },
  });
  if (!values.model || !values.ids) throw new Error('generate needs --model DIR and --ids 1,2,3');
  const prompt = ints(values.ids, '--ids');
  const maxTokens = Number(values['max-tokens']);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new Error(`--max-tokens must be a positive integer, got "${values['max-tokens']}"`);
  process.stderr.write(`loading ${values.model} ...\n`);
  const model = await TaipanModel.load(values.model, {
    backend: values.backend as BackendName | undefined,
    threads: values.threads === undefined ? undefined : Number(values.threads),
  });
  try {
    const out = await model.generateGreedy(prompt, { maxTokens });
    console.log(out.join(','));
  } finally {
    model.dispose();
  }
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'doctor':
      return doctor(rest);
    case 'bench':
      return bench(rest);
    case 'random':
      return random(rest);
    case 'generate':
      return generate(rest);
    case 'eval':
      return evalCommand(rest);
    case 'logits':
      return logitsCommand(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      console.log(USAGE);
      return cmd === undefined ? 1 : 0;
    default:
      console.error(`taipan: unknown command "${cmd}"\n\n${USAGE}`);
      return 1;
  }
}
