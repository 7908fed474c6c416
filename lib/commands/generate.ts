// taipan generate --model DIR|PRESET (--prompt TEXT | --ids 1,2,3) [sampling options]
//
// With --prompt the text streams to stdout as it is generated; with --ids the generated ids are
// printed comma-separated (greedy unless --temperature says otherwise, as before the engine).
// Loading messages go to stderr, so stdout holds only the output.
import { parseArgs } from 'node:util';

import { loadModel } from '../generate.js';
import type { GenerateOptions } from '../engine/options.js';
import { ints, loadOptions, positiveInt } from './common.js';

/** The options `generate` and `serve` share for loading a model. */
export const MODEL_ARGS = {
  model: { type: 'string' },
  backend: { type: 'string' },
  threads: { type: 'string' },
  tokenizer: { type: 'string' },
  'prefill-chunk': { type: 'string' },
} as const;

/** A number option, or undefined; a bad value is an error naming the flag. */
export function num(s: string | undefined, flag: string): number | undefined {
  if (s === undefined) return undefined;
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n)) throw new Error(`${flag} must be a number, got "${s}"`);
  return n;
}

export async function generateCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...MODEL_ARGS,
      prompt: { type: 'string' },
      ids: { type: 'string' },
      'max-tokens': { type: 'string', default: '32' },
      temperature: { type: 'string' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      'min-p': { type: 'string' },
      'repetition-penalty': { type: 'string' },
      seed: { type: 'string' },
      stop: { type: 'string', multiple: true },
      'ignore-eos': { type: 'boolean', default: false },
    },
  });
  if (!values.model || (values.prompt === undefined) === (values.ids === undefined)) {
    throw new Error('generate needs --model DIR|PRESET and one of --prompt TEXT or --ids 1,2,3');
  }
  const ids = values.ids === undefined ? undefined : ints(values.ids, '--ids');
  const options: GenerateOptions = {
    maxTokens: positiveInt(values['max-tokens'], '--max-tokens'),
    // Token ids in, token ids out: greedy by default, as this command always was.
    temperature: num(values.temperature, '--temperature') ?? (ids ? 0 : undefined),
    topK: num(values['top-k'], '--top-k'),
    topP: num(values['top-p'], '--top-p'),
    minP: num(values['min-p'], '--min-p'),
    repetitionPenalty: num(values['repetition-penalty'], '--repetition-penalty'),
    seed: num(values.seed, '--seed'),
    stop: values.stop,
    ignoreEos: values['ignore-eos'] || undefined,
  };
  for (const k of Object.keys(options) as (keyof GenerateOptions)[]) if (options[k] === undefined) delete options[k];

  const { backend, threads } = loadOptions(values);
  process.stderr.write(`loading ${values.model} ...\n`);
  const model = await loadModel(values.model, {
    backend,
    threads,
    prefillChunk: positiveInt(values['prefill-chunk'], '--prefill-chunk'),
    tokenizer: values.tokenizer,
    onProgress: (m) => process.stderr.write(m + '\n'),
  });
  try {
    if (ids) {
      const { tokens } = await model.complete(ids, options);
      console.log(tokens.join(','));
      return 0;
    }
    const gen = model.generate(values.prompt!, options);
    for await (const t of gen) process.stdout.write(t.text);
    const { stopReason, usage } = await gen.result;
    process.stdout.write('\n');
    process.stderr.write(`[${usage.completionTokens} tokens, stopped: ${stopReason}]\n`);
    return 0;
  } finally {
    await model[Symbol.asyncDispose]();
  }
}
