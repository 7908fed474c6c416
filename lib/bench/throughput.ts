// `taipan bench throughput`: what continuous batching buys. At each concurrency level, that
// many requests start together on one LanguageModel (short prompts, a fixed number of new
// tokens each, EOS ignored) and the benchmark reports the total generated tokens/s across all
// of them and each request's latency (mean, p50, p90) and time to first token.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';

import { countParameters, getPreset, PRESETS } from '../config.js';
import { loadModel } from '../generate.js';

export interface ThroughputOptions {
  /** A preset name or a model directory (default taipan-190m). */
  model?: string;
  concurrency?: number[];
  /** New tokens per request (default 32). */
  maxTokens?: number;
  /** Prompt length in tokens (default 16). */
  promptTokens?: number;
  threads?: number;
  /** The engine's batch limit (default: the largest concurrency, so every level runs as one batch). */
  maxSequences?: number;
  log?: (line: string) => void;
}

export interface Stats {
  mean: number;
  p50: number;
  p90: number;
}

export interface ThroughputRow {
  concurrency: number;
  requests: number;
  tokens: number;
  seconds: number;
  /** Generated tokens per second over all requests together. */
  tokensPerSecond: number;
  /** Seconds from submission to the last token, per request. */
  latency: Stats;
  /** Seconds from submission to the first token, per request. */
  firstToken: Stats;
}

export interface ThroughputResult {
  date: string;
  model: string;
  parameters: number | null;
  threads: number;
  maxSequences: number;
  cpu: string;
  maxTokens: number;
  promptTokens: number;
  rows: ThroughputRow[];
}

function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: at(0.5), p90: at(0.9) };
}

const now = () => performance.now() / 1000;

export async function runThroughputBenchmark(o: ThroughputOptions = {}): Promise<ThroughputResult> {
  const name = o.model ?? 'taipan-190m';
  const levels = o.concurrency ?? [1, 4, 16, 64];
  const maxTokens = o.maxTokens ?? 32;
  const promptTokens = o.promptTokens ?? 16;
  const threads = o.threads ?? 2;
  const log = o.log ?? (() => {});
  if (levels.length === 0 || levels.some((c) => !Number.isInteger(c) || c < 1)) throw new RangeError('concurrency levels must be positive integers');

  const maxSequences = o.maxSequences ?? Math.max(...levels);
  const model = await loadModel(name, { threads, maxSequences, tokenizer: false, onProgress: log });
  try {
    const V = model.info.vocabSize;
    let seed = 12345;
    const prompt = () => Array.from({ length: promptTokens }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % V);
    const run = async (c: number): Promise<ThroughputRow> => {
      const t0 = now();
      const per = await Promise.all(
        Array.from({ length: c }, async () => {
          let first = 0;
          const gen = model.generate(prompt(), { maxTokens, temperature: 1, seed: seed++, ignoreEos: true });
          for await (const _ of gen) if (first === 0) first = now() - t0;
          const r = await gen.result;
          return { latency: now() - t0, first, tokens: r.tokens.length };
        }),
      );
      const seconds = now() - t0;
      const tokens = per.reduce((a, r) => a + r.tokens, 0);
      return {
        concurrency: c,
        requests: c,
        tokens,
        seconds,
        tokensPerSecond: tokens / seconds,
        latency: stats(per.map((r) => r.latency)),
        firstToken: stats(per.map((r) => r.first)),
      };
    };
    log(`${model.info.name}: warming up ...`);
    await run(1); // first forwards: scratch buffers and captured graphs
    const rows: ThroughputRow[] = [];
    for (const c of levels) {
      const row = await run(c);
      log(`concurrency ${c}: ${row.tokensPerSecond.toFixed(1)} tokens/s, latency p50 ${row.latency.p50.toFixed(2)} s`);
      rows.push(row);
    }
    return {
      date: new Date().toISOString(),
      model: name,
      parameters: Object.hasOwn(PRESETS, name) ? countParameters(getPreset(name)) : null,
      threads,
      maxSequences,
      cpu: cpus()[0]?.model ?? 'unknown',
      maxTokens,
      promptTokens,
      rows,
    };
  } finally {
    await model[Symbol.asyncDispose]();
  }
}

export function formatThroughputBenchmark(r: ThroughputResult): string {
  const s = (x: number) => x.toFixed(2);
  const base = r.rows.find((x) => x.concurrency === 1)?.tokensPerSecond;
  const lines = [
    `${r.model}, ${r.threads} threads, batches of up to ${r.maxSequences}, prompts of ${r.promptTokens} tokens, ` +
      `${r.maxTokens} new tokens per request (${r.cpu})`,
    '',
    '| concurrency | tokens/s (total) | vs batch 1 | latency mean s | p50 s | p90 s | first token p50 s |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...r.rows.map(
      (x) =>
        `| ${x.concurrency} | ${x.tokensPerSecond.toFixed(1)} | ${base ? (x.tokensPerSecond / base).toFixed(2) + 'x' : '-'} | ` +
        `${s(x.latency.mean)} | ${s(x.latency.p50)} | ${s(x.latency.p90)} | ${s(x.firstToken.p50)} |`,
    ),
  ];
  return lines.join('\n');
}

/**
 * taipan bench throughput [--preset P | --model DIR] [--concurrency 1,4,16,64] [--max-tokens N]
 *   [--prompt-tokens N] [--threads N] [--max-sequences N] [--json FILE]
 */
export async function throughputCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      preset: { type: 'string' },
      model: { type: 'string' },
      concurrency: { type: 'string', default: '1,4,16,64' },
      'max-tokens': { type: 'string', default: '32' },
      'prompt-tokens': { type: 'string', default: '16' },
      threads: { type: 'string', default: '2' },
      'max-sequences': { type: 'string' },
      json: { type: 'string' },
    },
  });
  if (values.preset && values.model) throw new Error('bench throughput takes --preset or --model, not both');
  const int = (s: string, flag: string, min: number) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min) throw new Error(`${flag} must be an integer >= ${min}, got "${s}"`);
    return n;
  };
  const result = await runThroughputBenchmark({
    model: values.model ?? values.preset ?? 'taipan-190m',
    concurrency: values.concurrency!.split(',').map((c) => int(c.trim(), '--concurrency', 1)),
    maxTokens: int(values['max-tokens']!, '--max-tokens', 1),
    promptTokens: int(values['prompt-tokens']!, '--prompt-tokens', 1),
    threads: int(values.threads!, '--threads', 0),
    maxSequences: values['max-sequences'] === undefined ? undefined : int(values['max-sequences'], '--max-sequences', 1),
    log: (l) => process.stderr.write(l + '\n'),
  });
  console.log(formatThroughputBenchmark(result));
  if (values.json) {
    mkdirSync(dirname(values.json), { recursive: true });
    writeFileSync(values.json, JSON.stringify(result, null, 2) + '\n');
  }
  return 0;
}
