// An OpenAI-style completions endpoint over node:http, in front of a LanguageModel:
//
//   POST /v1/completions   {prompt, max_tokens, temperature, top_p, top_k, min_p,
//                           repetition_penalty, seed, stop, stream, logprobs, model}
//   GET  /health
//
// The server only translates: request fields become generate() options, tokens become JSON or
// server-sent events. Bad requests get a 400 naming the field, a full queue 429, and a client
// that goes away cancels its generation.
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

import type { Completion, GeneratedToken } from './engine/generation.js';
import { InvalidRequestError, type GenerateOptions } from './engine/options.js';
import { QueueFullError, type LanguageModel } from './generate.js';

export interface CompletionServerOptions {
  /** The model name in responses; a request naming another model gets a 404. Default: model.info.name. */
  name?: string;
  /** Largest request body accepted (default 1 MiB). */
  maxBodyBytes?: number;
  /** max_tokens when a request does not say (default 16, as OpenAI's API). */
  defaultMaxTokens?: number;
}

/** An error answered with a status code and an OpenAI-style error body. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/** JSON field -> generate() option, for the ones that map one to one. */
const NUMBER_FIELDS = {
  max_tokens: 'maxTokens',
  temperature: 'temperature',
  top_p: 'topP',
  top_k: 'topK',
  min_p: 'minP',
  repetition_penalty: 'repetitionPenalty',
  seed: 'seed',
} as const satisfies Record<string, keyof GenerateOptions>;
const FIELDS = new Set(['model', 'prompt', 'stop', 'stream', 'logprobs', ...Object.keys(NUMBER_FIELDS)]);
const SNAKE = Object.fromEntries(Object.entries(NUMBER_FIELDS).map(([json, opt]) => [opt, json])) as Record<string, string>;

interface ParsedRequest {
  prompt: string | number[];
  options: GenerateOptions;
  stream: boolean;
  logprobs: boolean;
}

export function createCompletionServer(model: LanguageModel, opts: CompletionServerOptions = {}): Server {
  const name = opts.name ?? model.info.name;
  const maxBody = opts.maxBodyBytes ?? 1 << 20;
  const defaultMaxTokens = opts.defaultMaxTokens ?? 16;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path === '/health') {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, `${req.method} is not allowed on /health (use GET)`);
      const status = model.disposed ? 'closing' : 'ok';
      return sendJson(res, model.disposed ? 503 : 200, { status, model: name, pending: model.pending, maxSequences: model.info.maxSequences, maxQueue: model.info.maxQueue });
    }
    if (path !== '/v1/completions') throw new HttpError(404, `no route ${req.method} ${path} (try POST /v1/completions or GET /health)`, 'not_found_error');
    if (req.method !== 'POST') throw new HttpError(405, `${req.method} is not allowed on /v1/completions (use POST)`);
    const body = await readJson(req, maxBody);
    const parsed = parseCompletionRequest(body, name, defaultMaxTokens);
    // A client that hangs up cancels its generation.
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const gen = startGeneration(model, parsed, abort.signal);
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const envelope = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
      id,
      object: 'text_completion',
      created,
      model: name,
      choices: [{ index: 0, ...choice }],
      ...extra,
    });
    if (!parsed.stream) {
      const pieces: GeneratedToken[] = [];
      for await (const t of gen) pieces.push(t);
      const done = await gen.result;
      if (done.stopReason === 'abort') return; // the client is gone
      const lp = parsed.logprobs ? logprobsOf(pieces) : null;
      return sendJson(res, 200, envelope({ text: done.text, logprobs: lp, finish_reason: finishReason(done) }, { usage: usage(done) }));
    }
    // Wait for the first token before answering, so that a request the engine refuses (e.g. a
    // text prompt it cannot encode) still gets a proper status code rather than a broken stream.
    const first = await gen.next();
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const event = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
    let offset = 0;
    const send = (t: GeneratedToken) => {
      if (t.text === '' && !parsed.logprobs) return;
      const lp = parsed.logprobs ? { tokens: [t.text], token_logprobs: [t.logprob ?? null], top_logprobs: null, text_offset: [offset] } : null;
      offset += t.text.length;
      event(envelope({ text: t.text, logprobs: lp, finish_reason: null }));
    };
    try {
      if (!first.done) send(first.value);
      for await (const t of gen) send(t);
      const done = await gen.result;
      if (done.stopReason === 'abort') return void res.end();
      event(envelope({ text: '', logprobs: null, finish_reason: finishReason(done) }, { usage: usage(done) }));
    } catch (e) {
      const { body: err } = errorResponse(e);
      event(err);
    }
    res.end('data: [DONE]\n\n');
  };

  return createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (res.headersSent) return void res.end();
      const { status, body } = errorResponse(e);
      if (status === 429) res.setHeader('retry-after', '1');
      sendJson(res, status, body);
    });
  });
}

/** Check a request body field by field; every problem is a 400 naming the field. */
export function parseCompletionRequest(body: unknown, modelName: string, defaultMaxTokens = 16): ParsedRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'the request body must be a JSON object');
  const b = body as Record<string, unknown>;
  for (const key of Object.keys(b)) {
    if (!FIELDS.has(key)) throw new HttpError(400, `unknown field '${key}' (supported: ${[...FIELDS].join(', ')})`, 'invalid_request_error', key);
  }
  if (b.model !== undefined && b.model !== null && b.model !== modelName) {
    throw new HttpError(404, `model '${String(b.model)}' is not served here (this server runs '${modelName}')`, 'not_found_error', 'model');
  }
  let prompt = b.prompt;
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === 'string') prompt = prompt[0];
  if (prompt === undefined || prompt === null) throw new HttpError(400, "'prompt' is required", 'invalid_request_error', 'prompt');
  if (typeof prompt === 'string') {
    if (prompt === '') throw new HttpError(400, "'prompt' is empty", 'invalid_request_error', 'prompt');
  } else if (Array.isArray(prompt)) {
    if (prompt.length === 0) throw new HttpError(400, "'prompt' is empty", 'invalid_request_error', 'prompt');
    if (!prompt.every((x) => typeof x === 'number')) {
      throw new HttpError(400, "'prompt' must be a string or an array of token ids (one prompt per request)", 'invalid_request_error', 'prompt');
    }
  } else throw new HttpError(400, "'prompt' must be a string or an array of token ids", 'invalid_request_error', 'prompt');

  const options: GenerateOptions = { maxTokens: defaultMaxTokens };
  for (const [field, option] of Object.entries(NUMBER_FIELDS)) {
    const v = b[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number') throw new HttpError(400, `'${field}' must be a number, got ${JSON.stringify(v)}`, 'invalid_request_error', field);
    if (field === 'max_tokens' && !(Number.isInteger(v) && v >= 1)) {
      throw new HttpError(400, `'max_tokens' must be a positive integer, got ${v}`, 'invalid_request_error', field);
    }
    options[option] = v;
  }
  if (b.stop !== undefined && b.stop !== null) {
    const ok = typeof b.stop === 'string' || (Array.isArray(b.stop) && b.stop.every((s) => typeof s === 'string'));
    if (!ok) throw new HttpError(400, "'stop' must be a string or an array of strings", 'invalid_request_error', 'stop');
    options.stop = b.stop as string | string[];
  }
  if (b.stream !== undefined && b.stream !== null && typeof b.stream !== 'boolean') {
    throw new HttpError(400, "'stream' must be a boolean", 'invalid_request_error', 'stream');
  }
  // Only the sampled token's log-probability is computed, not a list of alternatives.
  const lp = b.logprobs;
  if (lp !== undefined && lp !== null && typeof lp !== 'boolean' && lp !== 0) {
    throw new HttpError(400, "'logprobs' must be true, false or 0: only the sampled token's log-probability is available", 'invalid_request_error', 'logprobs');
  }
  const logprobs = lp === true || lp === 0;
  if (logprobs) options.logprobs = true;
  return { prompt: prompt as string | number[], options, stream: b.stream === true, logprobs };
}

/** generate(), with its argument errors as 400s naming the JSON field. */
function startGeneration(model: LanguageModel, r: ParsedRequest, signal: AbortSignal) {
  try {
    return model.generate(r.prompt, { ...r.options, signal });
  } catch (e) {
    throw asHttpError(e);
  }
}

function asHttpError(e: unknown): unknown {
  if (e instanceof TypeError || e instanceof RangeError || e instanceof InvalidRequestError) {
    const message = e.message.replace(/'(\w+)'/g, (m, k: string) => (SNAKE[k] ? `'${SNAKE[k]}'` : m));
    return new HttpError(400, message);
  }
  return e;
}

function errorResponse(e: unknown): { status: number; body: unknown } {
  const err = asHttpError(e);
  if (err instanceof HttpError) return { status: err.status, body: { error: { message: err.message, type: err.type, param: err.param, code: null } } };
  if (err instanceof QueueFullError) return { status: 429, body: { error: { message: err.message, type: 'queue_full', param: null, code: 'queue_full' } } };
  const message = err instanceof Error ? err.message : String(err);
  if (/disposed/.test(message)) return { status: 503, body: { error: { message, type: 'unavailable', param: null, code: null } } };
  return { status: 500, body: { error: { message, type: 'server_error', param: null, code: null } } };
}

async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, `the request body is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new HttpError(400, 'the request body is empty (expected a JSON object)');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `the request body is not valid JSON: ${(e as Error).message}`);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function finishReason(c: Completion): 'stop' | 'length' {
  return c.stopReason === 'length' ? 'length' : 'stop';
}

function usage(c: Completion) {
  const { promptTokens, completionTokens } = c.usage;
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

/** OpenAI's legacy logprobs object, without alternatives (top_logprobs). */
function logprobsOf(pieces: GeneratedToken[]) {
  let offset = 0;
  const text_offset = pieces.map((p) => ((offset += p.text.length), offset - p.text.length));
  return { tokens: pieces.map((p) => p.text), token_logprobs: pieces.map((p) => p.logprob ?? null), top_logprobs: null, text_offset };
}
