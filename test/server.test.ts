// The completions server end to end over loopback: JSON and server-sent-event responses that
// match model.complete(), /health, bad requests answered 4xx with a clear message, a full queue
// answered 429, and a client that hangs up freeing its sequence.
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, type LanguageModel } from '../lib/generate.js';
import { createCompletionServer, parseCompletionRequest } from '../lib/server.js';
import { Tokenizer } from '../lib/tokenizer.js';
import { BYTE_VOCAB, writeByteTokenizer } from './helpers/byte_tokenizer.js';
import { smallTaipanConfig, tempDir, writeModel } from './helpers/models.js';

const tmp = tempDir('taipan-server-');
const dir = join(tmp.dir, 'model');
let model: LanguageModel;
let server: Server;
let base: string;

async function listen(m: LanguageModel): Promise<{ server: Server; base: string }> {
  const s = createCompletionServer(m, { name: 'small' });
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  return { server: s, base: `http://127.0.0.1:${(s.address() as AddressInfo).port}` };
}

async function close(s: Server): Promise<void> {
  s.closeAllConnections();
  await new Promise((r) => s.close(r));
}

beforeAll(async () => {
  mkdirSync(dir);
  await writeModel(smallTaipanConfig({}, { vocab_size: BYTE_VOCAB }), dir, 5);
  writeByteTokenizer(dir);
  model = await loadModel(dir, { backend: 'cpu' });
  ({ server, base } = await listen(model));
});

afterAll(async () => {
  if (server) await close(server);
  await model?.[Symbol.asyncDispose]();
  tmp.cleanup();
});

function post(body: unknown, path = '/v1/completions', init: RequestInit = {}): Promise<Response> {
  return fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
}

// Response bodies are checked field by field below; their shape is what is under test.
type Body = any;
const json = async (res: Response): Promise<Body> => res.json();

/** The `data:` payloads of an event stream, [DONE] included. */
function events(text: string): string[] {
  return text
    .split('\n\n')
    .filter((e) => e.trim() !== '')
    .map((e) => {
      expect(e.startsWith('data: ')).toBe(true);
      return e.slice('data: '.length);
    });
}

describe('POST /v1/completions', () => {
  it('answers with the completion as JSON', async () => {
    const want = await model.complete('Hello', { maxTokens: 8, temperature: 0 });
    const res = await post({ model: 'small', prompt: 'Hello', max_tokens: 8, temperature: 0 });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    const body = await json(res);
    expect(body).toMatchObject({ object: 'text_completion', model: 'small' });
    expect(body.id).toMatch(/^cmpl-/);
    // EOS and stop strings both finish as 'stop', as in OpenAI's API.
    const finish = want.stopReason === 'length' ? 'length' : 'stop';
    expect(body.choices[0]).toEqual({ index: 0, text: want.text, finish_reason: finish, logprobs: null });
    const promptTokens = Tokenizer.fromDir(dir).encode('Hello').length;
    const n = want.tokens.length;
    expect(body.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: n, total_tokens: promptTokens + n });
  });

  it('takes token ids, stop strings, seeds and logprobs', async () => {
    const ids = [104, 105, 32, 116, 104, 101, 114, 101];
    const want = await model.complete(ids, { maxTokens: 12, seed: 9, temperature: 0.8, topP: 0.9, logprobs: true });
    const body = await json(await post({ prompt: ids, max_tokens: 12, seed: 9, temperature: 0.8, top_p: 0.9, logprobs: true }));
    expect(body.choices[0].text).toBe(want.text);
    expect(body.choices[0].logprobs.token_logprobs).toEqual(want.logprobs);
    expect(body.choices[0].logprobs.tokens.join('')).toBe(want.text);
    expect(body.usage.prompt_tokens).toBe(ids.length);
    // A stop string from the middle of the greedy text.
    const full = await model.complete(ids, { maxTokens: 30, temperature: 0, ignoreEos: true });
    const stop = full.text.slice(10, 12);
    const cut = full.text.indexOf(stop);
    const stopped = await model.complete(ids, { maxTokens: 30, temperature: 0, stop });
    const r = await json(await post({ prompt: ids, max_tokens: 30, temperature: 0, stop: [stop] }));
    expect(r.choices[0].text).toBe(stopped.text);
    expect(r.choices[0].finish_reason).toBe('stop');
    if (stopped.stopReason === 'stop') expect(r.choices[0].text).toBe(full.text.slice(0, cut));
  });

  it('streams server-sent events that add up to the same text', async () => {
    const whole = await json(await post({ prompt: 'Stream me', max_tokens: 16, temperature: 0.7, seed: 4, top_k: 50, min_p: 0.01, repetition_penalty: 1.1 }));
    const res = await post({ prompt: 'Stream me', max_tokens: 16, temperature: 0.7, seed: 4, top_k: 50, min_p: 0.01, repetition_penalty: 1.1, stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const data = events(await res.text());
    expect(data.at(-1)).toBe('[DONE]');
    const chunks: Body[] = data.slice(0, -1).map((d) => JSON.parse(d));
    expect(chunks.map((c) => c.choices[0].text).join('')).toBe(whole.choices[0].text);
    for (const c of chunks.slice(0, -1)) expect(c.choices[0].finish_reason).toBeNull();
    const last = chunks.at(-1);
    expect(last.choices[0].finish_reason).toBe(whole.choices[0].finish_reason);
    expect(last.usage).toEqual(whole.usage);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
  });
});

describe('GET /health and bad requests', () => {
  it('reports health', async () => {
    const res = await fetch(base + '/health');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', model: 'small', pending: 0, maxSequences: 16 });
  });

  const bad: [string, unknown, number, RegExp][] = [
    ['an unknown field', { prompt: 'a', n: 2 }, 400, /unknown field 'n'/],
    ['no prompt', { max_tokens: 3 }, 400, /'prompt' is required/],
    ['an empty prompt', { prompt: '' }, 400, /'prompt' is empty/],
    ['an empty id list', { prompt: [] }, 400, /'prompt' is empty/],
    ['several prompts', { prompt: ['a', 'b'] }, 400, /one prompt per request/],
    ['a negative max_tokens', { prompt: 'a', max_tokens: -1 }, 400, /'max_tokens' must be a positive integer, got -1/],
    ['a zero max_tokens', { prompt: 'a', max_tokens: 0 }, 400, /'max_tokens' must be a positive integer/],
    ['a string temperature', { prompt: 'a', temperature: 'hot' }, 400, /'temperature' must be a number/],
    ['top_p out of range', { prompt: 'a', top_p: 1.5 }, 400, /'top_p' must be in \(0, 1\]/],
    ['ids out of range', { prompt: [1, 999] }, 400, /prompt token 1: 999 is not a token id in \[0, 258\)/],
    ['a bad stop', { prompt: 'a', stop: 3 }, 400, /'stop' must be a string or an array of strings/],
    ['top logprobs', { prompt: 'a', logprobs: 3 }, 400, /only the sampled token's log-probability/],
    ['a non-object body', [1, 2], 400, /must be a JSON object/],
    ['another model', { model: 'gpt-4', prompt: 'a' }, 404, /model 'gpt-4' is not served here/],
  ];
  for (const [what, body, status, message] of bad) {
    it(`answers ${status} to ${what}`, async () => {
      const res = await post(body);
      expect(res.status).toBe(status);
      const err = (await json(res)).error;
      expect(err.message).toMatch(message);
    });
  }

  it('answers 400 to bad JSON, 404 to unknown paths, 405 to wrong methods', async () => {
    let res = await post('{"prompt": "a",');
    expect(res.status).toBe(400);
    expect((await json(res)).error.message).toMatch(/not valid JSON/);
    res = await post('');
    expect(res.status).toBe(400);
    res = await post({ prompt: 'a' }, '/v1/chat/completions');
    expect(res.status).toBe(404);
    expect((await json(res)).error.message).toMatch(/no route POST \/v1\/chat\/completions/);
    res = await fetch(base + '/v1/completions');
    expect(res.status).toBe(405);
    expect(model.pending).toBe(0);
  });
});

describe('limits', () => {
  it('answers 429 when the queue is full, and a client that hangs up frees its sequence', async () => {
    const m = await loadModel(dir, { backend: 'cpu', maxSequences: 1, maxQueue: 0 });
    const { server: s, base: b } = await listen(m);
    try {
      const ac = new AbortController();
      const long = await fetch(b + '/v1/completions', {
        method: 'POST',
        body: JSON.stringify({ prompt: 'go on', max_tokens: 1_000_000, stream: true, temperature: 0 }),
        signal: ac.signal,
      });
      expect(long.status).toBe(200);
      const reader = long.body!.getReader();
      await reader.read(); // it is generating
      expect((await json(await fetch(b + '/health'))).pending).toBe(1);
      const refused = await fetch(b + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: 'me too' }) });
      expect(refused.status).toBe(429);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect((await json(refused)).error.message).toMatch(/queue full/);
      ac.abort();
      await reader.cancel().catch(() => {});
      for (let i = 0; i < 200 && m.pending > 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(m.pending).toBe(0);
      const ok = await fetch(b + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: 'me too', max_tokens: 3 }) });
      expect(ok.status).toBe(200);
    } finally {
      await close(s);
      await m[Symbol.asyncDispose]();
    }
  });

  it('parses requests without a server', () => {
    const r = parseCompletionRequest({ prompt: ['only one'], max_tokens: 5, top_k: 3, stop: 'x', logprobs: 0 }, 'm');
    expect(r).toEqual({ prompt: 'only one', options: { maxTokens: 5, topK: 3, stop: 'x', logprobs: true }, stream: false, logprobs: true });
    expect(parseCompletionRequest({ prompt: 'a', seed: null, stream: false }, 'm').options).toEqual({ maxTokens: 16 });
  });
});
