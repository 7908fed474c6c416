// taipan logits --model DIR --ids 1,2,3 --out FILE: the logits of every position as raw
// little-endian float32, row-major [ids, vocab_padded]; prints "L V". Other implementations
// compare against this file, so it runs any checkpoint that follows the spec.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { CausalLM } from '../models/causal_lm.js';
import { ints, loadOptions } from './common.js';

export async function logitsCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: 'string' },
      ids: { type: 'string' },
      out: { type: 'string' },
      backend: { type: 'string' },
      threads: { type: 'string' },
    },
  });
  if (!values.model || !values.ids || !values.out) throw new Error('logits needs --model DIR, --ids 1,2,3 and --out FILE');
  const ids = ints(values.ids, '--ids');
  const model = await CausalLM.load(values.model, loadOptions(values));
  try {
    const { logits, vocab, states } = await model.prefill(ids, { logits: 'all' });
    states.forEach((s) => s.dispose());
    writeFileSync(values.out, new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
    console.log(`${ids.length} ${vocab}`);
  } finally {
    model.dispose();
  }
  return 0;
}
