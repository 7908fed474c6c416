// The invariants every causal LM here must keep, shared by the model suites: prefill in pieces
// equals prefill at once equals token-by-token decode, a batch equals its sequences run alone,
// and greedy generation picks the argmax of the one-shot logits.
import { expect } from 'vitest';

import type { CausalLM } from '../../lib/models/causal_lm.js';
import { relError } from './models.js';

/**
 * `model` (small prefill pieces) and `oneShot` (the same checkpoint, one piece) give the same
 * logits at every position of `seq`, and so does `model` decoding it a token at a time.
 * Returns the decoding state's final position.
 */
export async function expectChunkedEqualsDecode(model: CausalLM, oneShot: CausalLM, seq: number[]): Promise<number> {
  const chunked = await model.prefill(seq, { logits: 'all' });
  const whole = await oneShot.prefill(seq, { logits: 'all' });
  expect(relError(chunked.logits, whole.logits)).toBeLessThan(1e-5);
  chunked.states.forEach((s) => s.dispose());
  whole.states.forEach((s) => s.dispose());

  const V = model.config.vocab_padded;
  const state = model.createState();
  const first = await model.prefill(seq.slice(0, 1), { states: [state] });
  expect(relError(first.logits, whole.logits.subarray(0, V))).toBeLessThan(1e-5);
  for (let i = 1; i < seq.length; i++) {
    const row = await model.step([seq[i]!], [state]);
    expect(relError(row, whole.logits.subarray(i * V, (i + 1) * V))).toBeLessThan(1e-5);
  }
  const position = state.position;
  state.dispose();
  return position;
}

/** Equal-length `seqs` prefilled as one batch give each sequence's logits alone. */
export async function expectBatchEqualsAlone(model: CausalLM, seqs: number[][]): Promise<void> {
  const L = seqs[0]!.length;
  const V = model.config.vocab_padded;
  const batch = await model.prefill(seqs, { logits: 'all' });
  for (let b = 0; b < seqs.length; b++) {
    const alone = await model.prefill(seqs[b]!, { logits: 'all' });
    expect(relError(batch.logits.subarray(b * L * V, (b + 1) * L * V), alone.logits)).toBeLessThan(1e-5);
    alone.states.forEach((s) => s.dispose());
  }
  batch.states.forEach((s) => s.dispose());
}

/** generateGreedy's tokens after `prompt` are the argmax (over real ids) of `oneShot`'s logits. */
export async function expectGreedyEqualsArgmax(model: CausalLM, oneShot: CausalLM, prompt: number[], maxTokens: number): Promise<void> {
  const out = await model.generateGreedy(prompt, { maxTokens });
  const n = prompt.length;
  const whole = await oneShot.prefill([...prompt, ...out].slice(0, n + maxTokens - 1), { logits: 'all' });
  const V = model.config.vocab_padded;
  for (let i = 0; i < maxTokens; i++) {
    const row = whole.logits.subarray((n - 1 + i) * V, (n + i) * V);
    let best = 0;
    for (let j = 1; j < model.config.vocab_size; j++) if (row[j]! > row[best]!) best = j;
    expect(out[i]).toBe(best);
  }
  whole.states.forEach((s) => s.dispose());
}
