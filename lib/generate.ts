// Text generation for services: loadModel() starts an engine in a worker thread and returns a
// LanguageModel, a small handle on the caller's thread. Requests go to the engine as messages,
// tokens come back as messages, and the caller's event loop never waits on the model: the
// weights, the tokenizer and every step of every sequence live in the worker.
//
//   const model = await loadModel('taipan-190m');
//   for await (const t of model.generate('Once upon a time', { maxTokens: 32, seed: 1 })) process.stdout.write(t.text);
//   const { text, stopReason } = await model.complete('Hello', { stop: ['\n'] });
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

import type { BackendName } from './backend.js';
import { Generation, type Completion } from './engine/generation.js';
import {
  InvalidRequestError,
  validateGenerateOptions,
  validatePromptIds,
  type GenerateOptions,
} from './engine/options.js';
import type { ErrorInfo, FromWorker, ModelInfo, ToWorker, TokenizerChoice, WorkerConfig } from './engine/protocol.js';
import type { WeightDType } from './weights.js';

export interface LoadModelOptions {
  /** 'auto' (default), 'cpu' or 'cuda'. */
  backend?: BackendName;
  /**
   * CPU threads of the native pool (0: one per core; absent: leave as is). The pool is shared
   * by the whole process; leaving a core free keeps the caller's event loop prompt.
   */
  threads?: number;
  /** Store projection matrices as in the checkpoint ('auto') or convert them at load. */
  weightDtype?: WeightDType;
  /** Prompt tokens run per engine step at most, over all new requests (default 512). */
  prefillChunk?: number;
  /** Sequences generated together at most (default 16); each holds one sequence state. */
  maxSequences?: number;
  /** Requests waiting for a free sequence at most (default 256); more are refused with QueueFullError. */
  maxQueue?: number;
  /**
   * A directory holding tokenizer.json, 'llama3', or false for token ids only. Default: the
   * model directory's tokenizer.json, else Llama-3 for a model with its vocabulary (the Taipan
   * presets), else none.
   */
  tokenizer?: string | false;
  /** Called with a line of text as loading goes (e.g. while a preset's checkpoint is written). */
  onProgress?: (message: string) => void;
}

/** The engine already holds maxSequences running and maxQueue waiting requests. */
export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

const LOAD_KEYS = new Set(['backend', 'threads', 'weightDtype', 'prefillChunk', 'maxSequences', 'maxQueue', 'tokenizer', 'onProgress']);

/**
 * Load a checkpoint directory or a preset name (a seeded random model of that shape: the
 * presets have no published weights) into an engine running in a worker thread.
 */
export async function loadModel(model: string, opts: LoadModelOptions = {}): Promise<LanguageModel> {
  const config = workerConfig(model, opts);
  const worker = spawnWorker(config);
  return new Promise<LanguageModel>((resolve, reject) => {
    const cleanup = () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    const onMessage = (m: FromWorker) => {
      if (m.type === 'progress') opts.onProgress?.(m.message);
      else if (m.type === 'ready') {
        cleanup();
        resolve(new LanguageModel(worker, m.info));
      } else if (m.type === 'loadError') {
        cleanup();
        reject(rebuildError(m.error, `loading ${model} failed: `));
      }
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    const onExit = (code: number) => {
      cleanup();
      reject(new Error(`the engine worker exited (code ${code}) while loading ${model}`));
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

export class LanguageModel implements AsyncDisposable {
  private readonly inflight = new Map<number, { gen: Generation; promptTokens: number }>();
  private nextId = 1;
  private disposedFlag = false;
  private dead: Error | null = null;
  private readonly exited: Promise<void>;

  /** @internal Use loadModel(). */
  constructor(
    private readonly worker: Worker,
    /** What was loaded: name, directory, vocabulary, tokenizer, limits. */
    readonly info: ModelInfo,
  ) {
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (e) => this.failAll(e));
    this.exited = new Promise((resolve) =>
      worker.once('exit', (code) => {
        this.failAll(new Error(this.disposedFlag ? 'the model was disposed' : `the engine worker exited unexpectedly (code ${code})`));
        resolve();
      }),
    );
    worker.unref(); // an idle model does not keep the process alive; requests ref it
  }

  get disposed(): boolean {
    return this.disposedFlag;
  }

  /** Requests not yet finished (running or waiting). */
  get pending(): number {
    return this.inflight.size;
  }

  /**
   * Start generating from a text prompt (needs a tokenizer) or token ids. Returns at once; the
   * returned Generation is an async iterator of tokens and has the whole `result`. Throws at
   * once for bad arguments, a disposed model, or a full queue.
   */
  generate(prompt: string | number[], opts: GenerateOptions = {}): Generation {
    this.checkAlive();
    const options = validateGenerateOptions(opts, { vocabSize: this.info.vocabSize, hasTokenizer: this.info.tokenizer !== null });
    let promptTokens = 0;
    if (typeof prompt === 'string') {
      if (prompt === '') throw new RangeError('the prompt is empty');
      if (this.info.tokenizer === null) {
        throw new InvalidRequestError(`${this.info.name} has no tokenizer: pass the prompt as token ids (or load it with a tokenizer)`);
      }
    } else if (Array.isArray(prompt)) {
      promptTokens = validatePromptIds(prompt, this.info.vocabSize).length;
    } else {
      throw new TypeError(`the prompt must be a string or an array of token ids, got ${typeof prompt}`);
    }
    if (this.inflight.size >= this.info.maxSequences + this.info.maxQueue) {
      throw new QueueFullError(`queue full: ${this.info.maxSequences} requests running and ${this.info.maxQueue} waiting; retry later`);
    }
    const id = this.nextId++;
    const gen = new Generation(this, id, options.sampling.logprobs, opts.signal);
    if (opts.signal?.aborted) {
      gen.abort();
      gen.finish('abort', promptTokens);
      return gen;
    }
    this.inflight.set(id, { gen, promptTokens });
    this.worker.ref();
    this.post({ type: 'generate', id, prompt: typeof prompt === 'string' ? prompt : [...prompt], options });
    return gen;
  }

  /** Generate to the end and return the whole text. */
  async complete(prompt: string | number[], opts: GenerateOptions = {}): Promise<Completion> {
    const gen = this.generate(prompt, opts);
    return gen.result;
  }

  /** @internal Called by a Generation that the caller abandoned. */
  cancel(id: number): void {
    if (this.inflight.has(id) && !this.dead) this.post({ type: 'cancel', id });
  }

  /** Stop the engine: requests in flight end with 'abort'; the worker exits. */
  dispose(): void {
    if (this.disposedFlag) return;
    this.disposedFlag = true;
    if (this.dead) return;
    this.worker.ref(); // until it has closed
    this.post({ type: 'close' });
    // A worker stuck in a long native call still goes away.
    setTimeout(() => void this.worker.terminate(), 30_000).unref();
  }

  /** dispose(), then wait until the worker has exited. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
    await this.exited;
  }

  // ---- internals ---------------------------------------------------------------------------

  private onMessage(m: FromWorker): void {
    if (m.type === 'closed') return;
    if (m.type !== 'events') return;
    for (const e of m.events) {
      const entry = this.inflight.get(e.id);
      if (!entry) continue;
      if (e.type === 'token') {
        entry.gen.pushToken({ token: e.token, text: e.text, ...(e.logprob !== undefined ? { logprob: e.logprob } : {}) });
        continue;
      }
      this.inflight.delete(e.id);
      if (e.type === 'done') entry.gen.finish(e.reason, e.promptTokens);
      else entry.gen.error(rebuildError(e.error));
    }
    if (this.inflight.size === 0 && !this.disposedFlag) this.worker.unref();
  }

  private failAll(e: Error): void {
    this.dead ??= e;
    for (const { gen, promptTokens } of this.inflight.values()) {
      // A model disposed under a request ends it like an abort; a crash is an error.
      if (this.disposedFlag) gen.finish('abort', promptTokens);
      else gen.error(e);
    }
    this.inflight.clear();
  }

  private post(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  private checkAlive(): void {
    if (this.disposedFlag) throw new Error('the model was disposed');
    if (this.dead) throw this.dead;
  }
}

/** Errors from the worker as the caller's own classes, so `instanceof` and the server's status codes work. */
function rebuildError(info: ErrorInfo, prefix = ''): Error {
  const message = prefix + info.message;
  if (info.kind === 'queue_full') return new QueueFullError(message);
  if (info.kind === 'invalid_request') {
    if (info.name === 'RangeError') return new RangeError(message);
    if (info.name === 'TypeError') return new TypeError(message);
    return new InvalidRequestError(message);
  }
  const e = new Error(message);
  if (info.name && info.name !== 'Error') e.name = info.name;
  return e;
}

function workerConfig(model: string, o: LoadModelOptions): WorkerConfig {
  if (typeof model !== 'string' || model === '') throw new TypeError('loadModel: give a model directory or a preset name');
  if (typeof o !== 'object' || o === null) throw new TypeError('loadModel: options must be an object');
  for (const k of Object.keys(o)) {
    if (!LOAD_KEYS.has(k)) throw new TypeError(`loadModel: unknown option '${k}' (known: ${[...LOAD_KEYS].join(', ')})`);
  }
  const int = (key: keyof LoadModelOptions, min: number, dflt: number | undefined): number | undefined => {
    const v = o[key];
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new RangeError(`loadModel: option '${key}' must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v;
  };
  if (o.backend !== undefined && !['auto', 'cpu', 'cuda'].includes(o.backend)) {
    throw new RangeError(`loadModel: option 'backend' must be 'auto', 'cpu' or 'cuda', got ${JSON.stringify(o.backend)}`);
  }
  if (o.weightDtype !== undefined && !['auto', 'f32', 'f16', 'bf16'].includes(o.weightDtype)) {
    throw new RangeError(`loadModel: option 'weightDtype' must be 'auto', 'f32', 'f16' or 'bf16', got ${JSON.stringify(o.weightDtype)}`);
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new TypeError("loadModel: option 'onProgress' must be a function");
  let tokenizer: TokenizerChoice = 'auto';
  if (o.tokenizer === false) tokenizer = 'none';
  else if (o.tokenizer === 'llama3') tokenizer = 'llama3';
  else if (typeof o.tokenizer === 'string' && o.tokenizer !== '') tokenizer = { dir: o.tokenizer };
  else if (o.tokenizer !== undefined) throw new TypeError("loadModel: option 'tokenizer' must be a directory, 'llama3' or false");
  return {
    model,
    backend: o.backend,
    threads: int('threads', 0, undefined),
    weightDtype: o.weightDtype,
    prefillChunk: int('prefillChunk', 1, 512)!,
    maxSequences: int('maxSequences', 1, 16)!,
    maxQueue: int('maxQueue', 0, 256)!,
    tokenizer,
  };
}

/**
 * The engine worker. From compiled JavaScript it is dist/engine/worker.js; when this file runs
 * as TypeScript source (tests, tsx), the worker first registers tsx's loader so that it can
 * import the .ts sources too.
 */
function spawnWorker(workerData: WorkerConfig): Worker {
  const fromSource = import.meta.url.endsWith('.ts');
  const entry = new URL(`./engine/worker.${fromSource ? 'ts' : 'js'}`, import.meta.url);
  if (!fromSource) return new Worker(entry, { workerData });
  // tsx/esm/api resolves to its CommonJS build under require(); the ES module sits beside it.
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const boot = `(async () => { const { register } = await import(${JSON.stringify(tsx)}); register(); await import(${JSON.stringify(entry.href)}); })()`;
  return new Worker(boot, { eval: true, workerData });
}

export { Generation, InvalidRequestError, type Completion, type GenerateOptions };
export type { GeneratedToken } from './engine/generation.js';
export type { ModelInfo, StopReason } from './engine/protocol.js';
