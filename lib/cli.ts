// The `taipan` command line.
//
//   taipan doctor [--json]                 what was built, what devices answer, CPU features
//   taipan bench [--preset P] [--threads N] [--prompts 512,2048] [--decode 64] [--repeats 3] [--json FILE]
//   taipan random --preset P --out DIR [--dtype f32|bf16|f16] [--seed S]
//   taipan generate --model DIR|PRESET (--prompt TEXT | --ids 1,2,3) [--max-tokens N] [sampling options]
//   taipan serve --model DIR|PRESET [--port 8000] [--host 127.0.0.1]
//   taipan bench throughput [--preset P] [--concurrency 1,4,16,64] [--max-tokens N] [--json FILE]
//   taipan bench latency [--models taipan,mamba2,transformer,jamba] [--size 190m] [--lengths 128,256,512] [--memory] [--svg FILE]
//   taipan eval --model DIR --tokens FILE [--text] [--window N] [--json]
//   taipan logits --model DIR --ids 1,2,3 --out FILE [--backend cpu|cuda]
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';

import { getBackendInfo } from './backend.js';
import { formatCpuBenchmark, runCpuBenchmark } from './bench/cpu.js';
import { formatSalBenchmark, runSalBenchmark } from './bench/sal.js';
import { latencyCommand } from './bench/latency.js';
import { throughputCommand } from './bench/throughput.js';
import { getPreset, PRESETS } from './config.js';
import { evalCommand } from './commands/eval.js';
import { generateCommand } from './commands/generate.js';
import { logitsCommand } from './commands/logits.js';
import { serveCommand } from './commands/serve.js';
import { createRandomModel } from './models/random.js';

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
      --profile              also: where one prefill's and one decode run's time goes, op by op
      --sal                  instead: one SAL at C = 0.15 vs dense sliding-window attention
  random --preset NAME --out DIR [--dtype f32|bf16|f16] [--seed N]
                             write a random checkpoint directory
  bench throughput [--preset NAME] [--concurrency 1,4,16,64] [--max-tokens 32] [--json FILE]
                             total tokens/s and latency of concurrent requests (batching)
  bench latency [--models taipan,mamba2,transformer,jamba] [--size 190m|450m|1.3b] [--lengths 128,256,512]
                [--prompt 100] [--repeats 1] [--threads 2] [--backend cpu|cuda] [--json FILE] [--svg FILE] [--log-x]
                             the paper's Figure 1b: greedy generation latency vs length, batch 1,
                             each model in a fresh process (random weights, cached)
  bench latency --memory [--lengths 1024,4096,16384] [--chunk 512] [--svg FILE]
                             instead: peak memory vs context length (prefill in chunks)
  generate --model DIR|PRESET --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]
           [--top-p P] [--min-p P] [--repetition-penalty R] [--seed S] [--stop STR]...
                             stream generated text to stdout (presets: random weights)
  generate --model DIR|PRESET --ids 1,2,3 [--max-tokens N]
                             from token ids, printed as ids (greedy unless --temperature)
  serve --model DIR|PRESET [--port 8000] [--host 127.0.0.1] [--max-sequences 16] [--max-queue 256]
                             HTTP: POST /v1/completions (OpenAI-style, SSE with "stream"), GET /health
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
    if (info.cuda.prefillGemm) console.log(`  prefill GEMM: ${info.cuda.prefillGemm}`);
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
      profile: { type: 'boolean', default: false },
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
    profile: values.profile,
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

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  // `taipan <command> --help` prints the usage rather than failing on an unknown option.
  if (cmd !== undefined && (rest.includes('--help') || rest.includes('-h'))) {
    console.log(USAGE);
    return 0;
  }
  switch (cmd) {
    case 'doctor':
      return doctor(rest);
    case 'bench':
      if (rest[0] === 'latency') return latencyCommand(rest.slice(1));
      return rest[0] === 'throughput' ? throughputCommand(rest.slice(1)) : bench(rest);
    case 'random':
      return random(rest);
    case 'generate':
      return generateCommand(rest);
    case 'serve':
      return serveCommand(rest);
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
