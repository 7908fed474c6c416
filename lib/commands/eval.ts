// taipan eval --model DIR --tokens FILE: perplexity over a token stream of any length, run as
// one sequence in constant memory. FILE holds little-endian int32 ids, or text with --text.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { arrayTokens, evaluatePerplexity, TokenFile, type TokenSource } from '../eval.js';
import { CausalLM } from '../models/causal_lm.js';
import { loadOptions, positiveInt } from './common.js';

export async function evalCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: 'string' },
      tokens: { type: 'string' },
      text: { type: 'boolean', default: false },
      window: { type: 'string', default: '1024' },
      'max-tokens': { type: 'string' },
      'prefill-chunk': { type: 'string' },
      json: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      backend: { type: 'string' },
      threads: { type: 'string' },
    },
  });
  if (!values.model || !values.tokens) throw new Error('eval needs --model DIR and --tokens FILE');
  const window = positiveInt(values.window, '--window')!;
  const maxTokens = positiveInt(values['max-tokens'], '--max-tokens');
  const prefillChunk = positiveInt(values['prefill-chunk'], '--prefill-chunk');
  const model = await CausalLM.load(values.model, { ...loadOptions(values), prefillChunk });
  let source: TokenSource | undefined;
  try {
    if (values.text) {
      const { Tokenizer } = await import('../tokenizer.js');
      const tok = Tokenizer.forModel(values.model, model.config.model_type, model.config.vocab_size);
      source = arrayTokens(tok.encode(readFileSync(values.tokens, 'utf8'), { addBos: true }));
    } else {
      source = new TokenFile(values.tokens);
    }
    const vocab = model.config.vocab_size;
    const showWindows = !values.json && !values.quiet;
    if (showWindows) console.log('window  start       tokens  nll/token  perplexity');
    const result = await evaluatePerplexity(model, checked(source, vocab), {
      window,
      maxTokens,
      onWindow: (w) => {
        if (showWindows) {
          console.log(`${String(w.index).padStart(6)}  ${String(w.start).padStart(10)}  ${String(w.tokens).padStart(6)}  ${w.meanNll.toFixed(4).padStart(9)}  ${w.perplexity.toFixed(3)}`);
        }
      },
    });
    const peakRssMiB = process.resourceUsage().maxRSS / 1024;
    if (values.json) {
      console.log(JSON.stringify({ model: values.model, ...result, peakRssMiB }, null, 2));
    } else {
      console.log(`total: ${result.tokens} tokens, nll/token ${result.meanNll.toFixed(4)}, perplexity ${result.perplexity.toFixed(3)}`);
      console.log(`speed: ${result.tokensPerSecond.toFixed(1)} tokens/s (${result.seconds.toFixed(1)} s); peak RSS ${peakRssMiB.toFixed(0)} MiB`);
      for (const s of result.selection) {
        console.log(`SAL layer ${s.layer}: selected ${s.selected} of ${s.tokens} tokens (${(100 * s.fraction).toFixed(2)}%)`);
      }
    }
  } finally {
    source?.close?.();
    model.dispose();
  }
  return 0;
}

/** Ids outside the vocabulary are an error naming the position, not a crash. */
function checked(source: TokenSource, vocab: number): TokenSource {
  return {
    length: source.length,
    read(start, count) {
      const ids = source.read(start, count);
      const bad = ids.findIndex((id) => id < 0 || id >= vocab);
      if (bad >= 0) throw new RangeError(`token id ${ids[bad]} at position ${start + bad} is out of range [0, ${vocab})`);
      return ids;
    },
  };
}
