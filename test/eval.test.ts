// Perplexity evaluation and the eval/logits commands, against the float64 reference.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { main } from '../lib/cli.js';
import { arrayTokens, evaluatePerplexity, TokenFile } from '../lib/eval.js';
import { randomTokenIds } from '../lib/models/random.js';
import { TaipanModel } from '../lib/models/taipan.js';
import { runCli } from './helpers/cli.js';
import { relError, smallTaipanConfig, tempDir, writeModel } from './helpers/models.js';
import { referenceForward } from './reference/model.js';
import type { RefConfig } from './reference/types.js';

const cfg = smallTaipanConfig({ window: 8, rope: { theta: 10000 } });
const tmp = tempDir();
let weights: Map<string, Float64Array>;
let model: TaipanModel;
const stream = randomTokenIds(70, cfg.vocab_size, 99);

beforeAll(async () => {
  weights = await writeModel(cfg, tmp.dir, 70);
  model = await TaipanModel.load(tmp.dir, { backend: 'cpu', prefillChunk: 5 });
});
afterAll(() => {
  model.dispose();
  tmp.cleanup();
});

/** Reference NLL of every next token, in float64, over the padded vocabulary minus padding. */
function referenceNll(ids: number[]): number[] {
  const { logits } = referenceForward(cfg as unknown as RefConfig, weights, [ids], null);
  const V = cfg.vocab_padded;
  const out: number[] = [];
  for (let t = 0; t + 1 < ids.length; t++) {
    const row = logits.subarray(t * V, t * V + cfg.vocab_size);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    out.push(lse - row[ids[t + 1]!]!);
  }
  return out;
}

describe('evaluatePerplexity', () => {
  it('equals the reference negative log-likelihood, piece and window boundaries anywhere', async () => {
    const want = referenceNll(stream);
    const wantTotal = want.reduce((a, b) => a + b, 0);
    const r = await evaluatePerplexity(model, arrayTokens(stream), { window: 16, piece: 13 });
    expect(r.tokens).toBe(69);
    expect(Math.abs(r.nll - wantTotal) / wantTotal).toBeLessThan(1e-5);
    expect(r.perplexity).toBeCloseTo(Math.exp(wantTotal / 69), 3);
    expect(r.windows.map((w) => w.tokens)).toEqual([16, 16, 16, 16, 5]);
    r.windows.forEach((w, i) => {
      const part = want.slice(w.start - 1, w.start - 1 + w.tokens).reduce((a, b) => a + b, 0);
      expect(Math.abs(w.nll - part)).toBeLessThan(1e-4 * Math.max(1, part));
      expect(w.start).toBe(1 + 16 * i);
    });
    expect(r.selection).toHaveLength(2);
    expect(r.selection.every((x) => x.tokens === 69)).toBe(true);
  });

  it('scores tokens one call at a time the same way (state carried)', async () => {
    const a = await evaluatePerplexity(model, arrayTokens(stream), { piece: 1 });
    const b = await evaluatePerplexity(model, arrayTokens(stream), { piece: 1000 });
    expect(Math.abs(a.nll - b.nll) / b.nll).toBeLessThan(1e-5);
  });

  it('rejects bad targets and too-short streams', async () => {
    const st = model.createState();
    await expect(model.score([1, 2], [3, 100], st)).rejects.toThrow(/target id 100/);
    st.dispose();
    await expect(evaluatePerplexity(model, arrayTokens([5]))).rejects.toThrow(/at least 2 tokens/);
  });
});

describe('eval and logits commands', () => {
  it('taipan logits writes [L, vocab_padded] float32 equal to the reference and prints "L V"', async () => {
    const out = join(tmp.dir, 'logits.bin');
    const r = await runCli(['logits', '--model', tmp.dir, '--ids', '1,2,3,4,5,6,7,8,9,10,11', '--out', out, '--backend', 'cpu']);
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe(`11 ${cfg.vocab_padded}`);
    const buf = readFileSync(out);
    const got = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    expect(got.length).toBe(11 * cfg.vocab_padded);
    const want = referenceForward(cfg as unknown as RefConfig, weights, [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]], null).logits;
    expect(relError(got, want)).toBeLessThan(1e-4);
  });

  it('taipan eval reads an int32 token file and reports windows, totals and selection', async () => {
    const file = join(tmp.dir, 'tokens.bin');
    writeFileSync(file, new Uint8Array(Int32Array.from(stream).buffer));
    const r = await runCli(['eval', '--model', tmp.dir, '--tokens', file, '--window', '32', '--json', '--backend', 'cpu']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    const want = referenceNll(stream).reduce((a, b) => a + b, 0);
    expect(Math.abs(j.nll - want) / want).toBeLessThan(1e-5);
    expect(j.windows).toHaveLength(3);
    expect(j.selection).toHaveLength(2);
    expect(j.peakRssMiB).toBeGreaterThan(0);
    const text = await runCli(['eval', '--model', tmp.dir, '--tokens', file, '--window', '32', '--backend', 'cpu']);
    expect(text.out).toMatch(/total: 69 tokens, nll\/token \d+\.\d+, perplexity/);
    expect(text.out).toMatch(/SAL layer 2: selected \d+ of 69 tokens/);
  });

  it('taipan eval --text tokenizes with the model tokenizer (Llama-3 for Taipan) and scores every token but the first', async () => {
    const big = smallTaipanConfig({}, { vocab_size: 128256, d_model: 32 });
    const dir = tempDir();
    try {
      await writeModel(big, dir.dir, 71, 'f32', 256);
      const text = 'Taipan reads long texts: the quick brown fox jumps over the lazy dog. Émigré café, 東京, 🐍!';
      const file = join(dir.dir, 'text.txt');
      writeFileSync(file, text);
      const { Tokenizer } = await import('../lib/tokenizer.js');
      const n = Tokenizer.llama3().encode(text, { addBos: true }).length;
      const r = await runCli(['eval', '--model', dir.dir, '--tokens', file, '--text', '--json', '--backend', 'cpu']);
      expect(r.code).toBe(0);
      const j = JSON.parse(r.out);
      expect(j.tokens).toBe(n - 1);
      expect(Number.isFinite(j.perplexity)).toBe(true);
      // A random model over 128256 ids is about uniform: perplexity near the vocabulary size.
      expect(j.perplexity).toBeGreaterThan(1e4);
    } finally {
      dir.cleanup();
    }
  });

  it('names the problem in a bad token file', async () => {
    const odd = join(tmp.dir, 'odd.bin');
    writeFileSync(odd, new Uint8Array(7));
    expect(() => new TokenFile(odd)).toThrow(/not a whole number of int32/);
    const bad = join(tmp.dir, 'bad.bin');
    writeFileSync(bad, new Uint8Array(Int32Array.from([1, 2, 500, 3]).buffer));
    await expect(main(['eval', '--model', tmp.dir, '--tokens', bad, '--backend', 'cpu'])).rejects.toThrow(/token id 500 at position 2/);
  });
});
