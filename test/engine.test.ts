// Generation through loadModel(): the engine in its worker against CausalLM.generateGreedy,
// sampling options, stop strings / stop ids / EOS, UTF-8 streaming, aborts, continuous
// batching of many requests, limits and errors, and a responsive caller's event loop.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { getThreads, setThreads } from '../lib/backend.js';
import { main } from '../lib/cli.js';
import { parseConfig } from '../lib/config.js';
import { InvalidRequestError } from '../lib/engine/options.js';
import { StopMatcher, TextStream } from '../lib/engine/text.js';
import { resolveModelDir } from '../lib/engine/model_source.js';
import { loadModel, QueueFullError, type LanguageModel } from '../lib/generate.js';
import { TaipanModel } from '../lib/models/taipan.js';
import { Tokenizer } from '../lib/tokenizer.js';
import { BYTE_VOCAB, byteChars, writeByteTokenizer } from './helpers/byte_tokenizer.js';
import { smallTaipanConfig, tempDir, writeModel } from './helpers/models.js';

const tmp = tempDir('taipan-engine-');
const dir = join(tmp.dir, 'small');
let model: LanguageModel;
let direct: TaipanModel;
let tok: Tokenizer;

beforeAll(async () => {
  mkdirSync(dir);
  await writeModel(smallTaipanConfig({}, { vocab_size: BYTE_VOCAB }), dir, 7);
  writeByteTokenizer(dir);
  tok = Tokenizer.fromDir(dir);
  direct = await TaipanModel.load(dir, { backend: 'cpu' });
  model = await loadModel(dir, { backend: 'cpu' });
});

afterAll(async () => {
  await model?.[Symbol.asyncDispose]();
  direct?.dispose();
  tmp.cleanup();
});

/** A prompt of n ids that are plain ASCII letters (so the text is readable in failures). */
function prompt(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => 97 + ((seed * 7 + i * 5) % 26));
}

async function collect(gen: AsyncIterable<{ token: number; text: string }>) {
  const pieces: { token: number; text: string }[] = [];
  for await (const t of gen) pieces.push(t);
  return pieces;
}

describe('the text pipeline', () => {
  it('finds stop strings spread over pieces and holds back possible starts', () => {
    const m = new StopMatcher(['bc', 'xyz']);
    expect(m.push('a')).toEqual({ text: 'a', stopped: false });
    expect(m.push('b')).toEqual({ text: '', stopped: false }); // could start "bc"
    expect(m.push('d')).toEqual({ text: 'bd', stopped: false }); // it did not
    expect(m.push('x')).toEqual({ text: '', stopped: false });
    expect(m.push('y')).toEqual({ text: '', stopped: false });
    expect(m.push('zq')).toEqual({ text: '', stopped: true });
    const n = new StopMatcher(['END']);
    expect(n.push('the EN')).toEqual({ text: 'the ', stopped: false });
    expect(n.push('D and more')).toEqual({ text: '', stopped: true });
    const first = new StopMatcher(['cd', 'b']);
    expect(first.push('abcd')).toEqual({ text: 'a', stopped: true }); // the earliest wins
    const held = new StopMatcher(['ab']);
    expect(held.push('xa')).toEqual({ text: 'x', stopped: false });
    expect(held.flush()).toBe('a');
  });

  it('never splits a UTF-8 character, and stop strings can end inside one', () => {
    const smile = [...Buffer.from('😀', 'utf8')];
    const s = new TextStream(tok.createStreamDecoder(), [], tok.vocabSize);
    expect([97, ...smile, 98].map((id) => s.push(id).text)).toEqual(['a', '', '', '', '😀', 'b']);
    const stopped = new TextStream(tok.createStreamDecoder(), ['😀'], tok.vocabSize);
    expect([97, ...smile].map((id) => stopped.push(id))).toEqual([
      { text: 'a', stopped: false },
      { text: '', stopped: false },
      { text: '', stopped: false },
      { text: '', stopped: false },
      { text: '', stopped: true },
    ]);
    // An unfinished character at the end comes out as U+FFFD, as decode() gives it.
    const cut = new TextStream(tok.createStreamDecoder(), [], tok.vocabSize);
    expect(cut.push(97).text + cut.push(smile[0]!).text + cut.finish().text).toBe(tok.decode([97, smile[0]!]));
  });
});

describe('CausalLM.resetState', () => {
  it('makes a used state equal to a fresh one (SAL caches emptied)', async () => {
    const p = prompt(20, 1); // longer than the SAL window (16)
    const fresh = await direct.prefill(p);
    const state = direct.createState();
    await direct.prefill(prompt(30, 2), { states: [state] });
    await direct.resetState(state);
    expect(state.position).toBe(0);
    const again = await direct.prefill(p, { states: [state] });
    expect(again.logits).toEqual(fresh.logits);
    state.dispose();
    fresh.states.forEach((s) => s.dispose());
  });
});

describe('generation', () => {
  it('greedy equals CausalLM.generateGreedy, from ids and from text', async () => {
    for (const [i, p] of [prompt(3, 1), prompt(11, 2), prompt(40, 3)].entries()) {
      const want = await direct.generateGreedy(p, { maxTokens: 24 });
      const got = await model.complete(p, { maxTokens: 24, temperature: 0, ignoreEos: true });
      expect(got.tokens, `prompt ${i}`).toEqual(want);
      expect(got.stopReason).toBe('length');
      expect(got.usage).toEqual({ promptTokens: p.length, completionTokens: 24 });
    }
    const text = 'Hello, world';
    const want = await direct.generateGreedy(tok.encode(text), { maxTokens: 16 });
    const got = await model.complete(text, { maxTokens: 16, temperature: 0, ignoreEos: true });
    expect(got.tokens).toEqual(want);
    expect(got.usage.promptTokens).toBe(tok.encode(text).length);
    // topK 1 is greedy too, whatever the temperature.
    expect((await model.complete(text, { maxTokens: 16, topK: 1, ignoreEos: true })).tokens).toEqual(want);
  });

  it('the same seed gives the same tokens; different seeds differ', async () => {
    const o = { maxTokens: 24, temperature: 1, topP: 0.95, minP: 0.01, ignoreEos: true };
    const a = await model.complete(prompt(5, 4), { ...o, seed: 11 });
    const b = await model.complete(prompt(5, 4), { ...o, seed: 11 });
    const c = await model.complete(prompt(5, 4), { ...o, seed: 12 });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.text).toBe(b.text);
    expect(c.tokens).not.toEqual(a.tokens);
  });

  it('reports each token log-probability when asked', async () => {
    const gen = model.generate(prompt(5, 5), { maxTokens: 8, temperature: 0.7, seed: 3, logprobs: true, ignoreEos: true });
    const pieces = await collect(gen);
    const r = await gen.result;
    expect(r.logprobs).toHaveLength(8);
    expect(pieces.map((p) => (p as { logprob?: number }).logprob)).toEqual(r.logprobs);
    for (const lp of r.logprobs!) expect(lp).toBeLessThanOrEqual(0);
    const plain = await model.complete(prompt(5, 5), { maxTokens: 3, seed: 3 });
    expect(plain.logprobs).toBeUndefined();
  });

  it('repetition penalty covers the prompt and the generated ids', async () => {
    const p = prompt(6, 6);
    const r = await model.complete(p, { maxTokens: 20, temperature: 0, repetitionPenalty: 1e6, ignoreEos: true });
    const seen = new Set(p);
    for (const t of r.tokens) {
      expect(seen.has(t)).toBe(false);
      seen.add(t);
    }
  });

  it('stops before a stop string, also one spread over several tokens', async () => {
    const p = prompt(8, 7);
    const full = await model.complete(p, { maxTokens: 40, temperature: 0, ignoreEos: true });
    // A 3-character piece from the middle: with byte tokens it spans at least 3 tokens.
    const at = [...Array(20).keys()].map((k) => k + 10).find((k) => full.text.indexOf(full.text.slice(k, k + 3)) === k)!;
    const stop = full.text.slice(at, at + 3);
    const gen = model.generate(p, { maxTokens: 40, temperature: 0, ignoreEos: true, stop: ['never-in-there', stop] });
    const pieces = await collect(gen);
    const r = await gen.result;
    expect(r.stopReason).toBe('stop');
    expect(r.text).toBe(full.text.slice(0, at));
    expect(pieces.map((x) => x.text).join('')).toBe(r.text);
    expect(r.tokens).toEqual(full.tokens.slice(0, r.tokens.length));
    const none = await model.complete(p, { maxTokens: 40, temperature: 0, ignoreEos: true, stop: 'never-in-there' });
    expect(none.text).toBe(full.text);
    expect(none.stopReason).toBe('length');
  });

  it('stops at a stop id, which ends the tokens but adds no text', async () => {
    const p = prompt(8, 8);
    const full = await model.complete(p, { maxTokens: 30, temperature: 0, ignoreEos: true });
    const id = full.tokens[6]!;
    const end = full.tokens.indexOf(id) + 1;
    const r = await model.complete(p, { maxTokens: 30, temperature: 0, ignoreEos: true, stopIds: [id] });
    expect(r.stopReason).toBe('stop');
    expect(r.tokens).toEqual(full.tokens.slice(0, end));
    expect(r.text).toBe(tok.decode(full.tokens.slice(0, end - 1)));
  });

  it("stops at the tokenizer's EOS unless ignoreEos", async () => {
    const p = prompt(8, 9);
    const full = await model.complete(p, { maxTokens: 30, temperature: 0, ignoreEos: true });
    // The same weights with a tokenizer whose EOS is a token this prompt produces.
    const eosDir = join(tmp.dir, 'eos');
    mkdirSync(eosDir);
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(dir, f), join(eosDir, f));
    const eos = full.tokens[4]!;
    writeByteTokenizer(eosDir, { eos: byteChars()[eos] });
    const m = await loadModel(eosDir, { backend: 'cpu' });
    try {
      expect(m.info.eosIds).toEqual([eos]);
      const r = await m.complete(p, { maxTokens: 30, temperature: 0 });
      const end = full.tokens.indexOf(eos) + 1;
      expect(r.stopReason).toBe('eos');
      expect(r.tokens).toEqual(full.tokens.slice(0, end));
      expect(r.text).toBe(tok.decode(full.tokens.slice(0, end - 1)));
      const ignored = await m.complete(p, { maxTokens: 30, temperature: 0, ignoreEos: true });
      expect(ignored.tokens).toEqual(full.tokens);
      expect(ignored.stopReason).toBe('length');
    } finally {
      await m[Symbol.asyncDispose]();
    }
  });

  it('streams text that joins to the decoded tokens, never half a character', async () => {
    for (const seed of [1, 2, 3]) {
      const gen = model.generate(prompt(4, seed), { maxTokens: 60, temperature: 1, seed, ignoreEos: true });
      const pieces = await collect(gen);
      const r = await gen.result;
      expect(pieces.map((x) => x.token)).toEqual(r.tokens);
      expect(pieces.map((x) => x.text).join('')).toBe(tok.decode(r.tokens));
      expect(r.text).toBe(tok.decode(r.tokens));
      // Random bytes: whole characters where they decode, U+FFFD for bytes that are no character.
      for (const { text } of pieces) expect(text).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/);
    }
  });
});

describe('aborting', () => {
  it('an AbortSignal ends the generation, and the sequence is free for the next request', async () => {
    const m = await loadModel(dir, { backend: 'cpu', maxSequences: 1, maxQueue: 1 });
    try {
      const ac = new AbortController();
      const gen = m.generate(prompt(4, 1), { maxTokens: 100_000, signal: ac.signal, ignoreEos: true });
      let n = 0;
      for await (const _ of gen) if (++n === 3) ac.abort();
      const r = await gen.result;
      expect(r.stopReason).toBe('abort');
      expect(r.tokens.length).toBeGreaterThanOrEqual(3);
      expect(r.tokens.length).toBeLessThan(100);
      // The only sequence is free again: a new request runs to its end.
      const next = await m.complete(prompt(4, 2), { maxTokens: 5 , ignoreEos: true });
      expect(next.stopReason).toBe('length');
      expect(m.pending).toBe(0);
      // Aborted before it starts: nothing is generated.
      const pre = await m.complete(prompt(4, 2), { maxTokens: 5, signal: AbortSignal.abort() });
      expect(pre).toMatchObject({ tokens: [], stopReason: 'abort' });
    } finally {
      await m[Symbol.asyncDispose]();
    }
  });

  it('leaving a for-await loop cancels the request; a queued request can be aborted too', async () => {
    const m = await loadModel(dir, { backend: 'cpu', maxSequences: 1, maxQueue: 2 });
    try {
      const long = m.generate(prompt(4, 3), { maxTokens: 100_000, ignoreEos: true });
      const ac = new AbortController();
      const queued = m.generate(prompt(4, 4), { maxTokens: 5, signal: ac.signal });
      ac.abort();
      expect(await queued.result).toMatchObject({ tokens: [], stopReason: 'abort' });
      let n = 0;
      for await (const _ of long) if (++n === 2) break;
      const r = await long.result;
      expect(r.stopReason).toBe('abort');
      expect(r.tokens.length).toBeLessThan(100);
      const after = await m.complete(prompt(4, 5), { maxTokens: 4, temperature: 0, ignoreEos: true });
      expect(after.tokens).toEqual(await direct.generateGreedy(prompt(4, 5), { maxTokens: 4 }));
    } finally {
      await m[Symbol.asyncDispose]();
    }
  });
});

describe('continuous batching', () => {
  it('32 concurrent requests each give exactly what they give alone (greedy)', async () => {
    const reqs = Array.from({ length: 32 }, (_, i) => ({ p: prompt(1 + ((i * 7) % 23), i), maxTokens: 4 + ((i * 5) % 17) }));
    const alone: number[][] = [];
    for (const r of reqs) alone.push(await direct.generateGreedy(r.p, { maxTokens: r.maxTokens }));
    // 16 run at once (the default), 16 wait; sequences leave at different steps and new ones join.
    const got = await Promise.all(reqs.map((r) => model.complete(r.p, { maxTokens: r.maxTokens, temperature: 0, ignoreEos: true })));
    got.forEach((g, i) => expect(g.tokens, `request ${i}`).toEqual(alone[i]));
    // Sampled requests are batch-independent too: a seed gives the same text alone and in a crowd.
    const sampled = (i: number) => ({ maxTokens: 12, seed: 100 + i, temperature: 0.9, ignoreEos: true });
    const crowd = await Promise.all(reqs.slice(0, 8).map((r, i) => model.complete(r.p, sampled(i))));
    for (let i = 0; i < 8; i++) expect((await model.complete(reqs[i]!.p, sampled(i))).tokens).toEqual(crowd[i]!.tokens);
  });

  it('refuses requests beyond maxSequences + maxQueue with QueueFullError', async () => {
    const m = await loadModel(dir, { backend: 'cpu', maxSequences: 1, maxQueue: 1 });
    try {
      const a = m.generate(prompt(3, 1), { maxTokens: 100_000, ignoreEos: true });
      const b = m.generate(prompt(3, 2), { maxTokens: 100_000, ignoreEos: true });
      expect(() => m.generate(prompt(3, 3), { maxTokens: 4 })).toThrow(QueueFullError);
      await expect(m.complete(prompt(3, 3), { maxTokens: 4 })).rejects.toThrow(/queue full/);
      a.dispose();
      b.dispose();
      expect((await a.result).stopReason).toBe('abort');
      expect((await b.result).stopReason).toBe('abort');
      expect((await m.complete(prompt(3, 3), { maxTokens: 2, ignoreEos: true })).tokens).toHaveLength(2);
    } finally {
      await m[Symbol.asyncDispose]();
    }
  });

  it("keeps the caller's event loop responsive during a long generation", async () => {
    // A bigger model, so each engine step is real work in the worker.
    const big = join(tmp.dir, 'big');
    mkdirSync(big);
    const cfg = parseConfig({
      model_type: 'taipan', d_model: 384, n_layer: 6, layer_types: ['mamba2', 'mamba2', 'sal', 'mamba2', 'mamba2', 'sal'],
      vocab_size: 8192, pad_vocab_size_multiple: 16, tie_embeddings: true,
      ssm: { d_state: 64, d_conv: 4, expand: 2, headdim: 64, ngroups: 1, chunk_size: 64 },
      sal: { n_heads: 6, head_dim: 64, window: 256, d_ff: 1024, capacity: 0.15 },
    });
    await writeModel(cfg, big, 3, 'f32', 256);
    // One CPU thread for the model, one left for this thread, as a service would configure it
    // (the native pool is per process, so it is restored afterwards).
    const threads = getThreads();
    const m = await loadModel(big, { backend: 'cpu', threads: 1 });
    try {
      const h = monitorEventLoopDelay({ resolution: 5 });
      const ac = new AbortController();
      const gens = Array.from({ length: 8 }, (_, i) => m.generate(prompt(64, i), { maxTokens: 100_000, signal: ac.signal }));
      let tokens = 0;
      const counted = gens.map(async (g) => {
        for await (const _ of g) tokens++;
      });
      h.enable();
      // Keep the loop busy with timers the way a service would, for two seconds.
      const t0 = performance.now();
      while (performance.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 1));
      h.disable();
      ac.abort();
      await Promise.all(counted);
      expect(tokens).toBeGreaterThan(8); // it really was generating meanwhile
      const p99 = h.percentile(99) / 1e6;
      expect(p99).toBeLessThan(50);
    } finally {
      await m[Symbol.asyncDispose]();
      setThreads(threads);
    }
  });
});

describe('errors', () => {
  it('rejects bad prompts and options with messages naming them', () => {
    expect(() => model.generate('')).toThrow(/the prompt is empty/);
    expect(() => model.generate([])).toThrow(/the prompt is empty/);
    expect(() => model.generate([1, BYTE_VOCAB])).toThrow(/prompt token 1: 258 is not a token id in \[0, 258\)/);
    expect(() => model.generate([-1])).toThrow(/prompt token 0: -1/);
    expect(() => model.generate([1.5])).toThrow(/prompt token 0: 1.5/);
    expect(() => model.generate(42 as unknown as string)).toThrow(/must be a string or an array of token ids/);
    expect(() => model.generate([1], { maxTokens: 0 })).toThrow(/'maxTokens' must be a positive integer, got 0/);
    expect(() => model.generate([1], { maxTokens: -3 })).toThrow(/'maxTokens' must be a positive integer, got -3/);
    expect(() => model.generate([1], { maxTokens: 2.5 })).toThrow(/'maxTokens'/);
    expect(() => model.generate([1], { temprature: 0.5 } as never)).toThrow(/unknown generate option 'temprature'/);
    expect(() => model.generate([1], { topP: 2 })).toThrow(/'topP' must be in \(0, 1\]/);
    expect(() => model.generate([1], { temperature: -1 })).toThrow(/'temperature'/);
    expect(() => model.generate([1], { stop: [''] })).toThrow(/'stop' must be a non-empty string/);
    expect(() => model.generate([1], { stopIds: [999] })).toThrow(/'stopIds': 999 is not a token id/);
    expect(() => model.generate([1], { signal: {} as AbortSignal })).toThrow(/'signal' must be an AbortSignal/);
    expect(model.pending).toBe(0);
  });

  it('a model without a tokenizer takes token ids only', async () => {
    const m = await loadModel(dir, { backend: 'cpu', tokenizer: false });
    try {
      expect(m.info.tokenizer).toBeNull();
      expect(() => m.generate('hello')).toThrow(InvalidRequestError);
      expect(() => m.generate([1, 2], { stop: 'x' })).toThrow(/'stop' needs text, but this model has no tokenizer/);
      const r = await m.complete([1, 2], { maxTokens: 3, temperature: 0 });
      expect(r.text).toBe('');
      expect(r.tokens).toEqual(await direct.generateGreedy([1, 2], { maxTokens: 3 }));
    } finally {
      await m[Symbol.asyncDispose]();
    }
  });

  it('a disposed model ends its requests and refuses new ones', async () => {
    const m = await loadModel(dir, { backend: 'cpu' });
    const gen = m.generate(prompt(3, 1), { maxTokens: 100_000, ignoreEos: true });
    await gen.next();
    await m[Symbol.asyncDispose]();
    expect((await gen.result).stopReason).toBe('abort');
    expect(m.disposed).toBe(true);
    expect(() => m.generate([1])).toThrow(/the model was disposed/);
    m.dispose(); // twice is fine
  });

  it('loadModel names bad options, directories and presets', async () => {
    await expect(loadModel(dir, { maxSequence: 4 } as never)).rejects.toThrow(/unknown option 'maxSequence'/);
    await expect(loadModel(dir, { maxSequences: 0 })).rejects.toThrow(/'maxSequences' must be an integer >= 1/);
    await expect(loadModel(join(tmp.dir, 'nope'))).rejects.toThrow(/is neither a model directory nor a preset \(presets: taipan-190m/);
    await expect(resolveModelDir('taipan-9000b', () => {})).rejects.toThrow(/neither a model directory nor a preset/);
  });
});

describe('taipan generate', () => {
  it('streams text for --prompt and prints ids for --ids', async () => {
    const out: string[] = [];
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((s) => (out.push(String(s)), true));
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const log = vi.spyOn(console, 'log').mockImplementation((...a) => void out.push(a.join(' ') + '\n'));
    try {
      expect(await main(['generate', '--model', dir, '--prompt', 'Hi', '--max-tokens', '6', '--temperature', '0', '--ignore-eos'])).toBe(0);
      const want = await model.complete('Hi', { maxTokens: 6, temperature: 0, ignoreEos: true });
      expect(out.join('')).toBe(want.text + '\n');
      out.length = 0;
      expect(await main(['generate', '--model', dir, '--ids', '1,2,3', '--max-tokens', '5', '--ignore-eos'])).toBe(0);
      expect(out.join('').trim()).toBe((await direct.generateGreedy([1, 2, 3], { maxTokens: 5 })).join(','));
    } finally {
      write.mockRestore();
      err.mockRestore();
      log.mockRestore();
    }
  });
});
