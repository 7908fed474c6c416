// One request as the caller sees it: an async iterator of tokens with their text, and the
// whole result as a promise. It lives on the caller's thread and is fed by the engine's events;
// leaving a `for await` early, aborting the signal, or dispose() cancels the request in the
// engine, which frees its sequence at the next step.
import type { StopReason } from './protocol.js';

export interface GeneratedToken {
  token: number;
  /** The text this token completes: '' while a character or a possible stop string is unfinished. */
  text: string;
  /** Log-probability of the token under the sampling distribution (with `logprobs: true`). */
  logprob?: number;
}

export interface Completion {
  /** All generated text, up to (not including) a stop string. */
  text: string;
  /** Every generated id, including a final stop id or EOS id (whose own text is not in `text`). */
  tokens: number[];
  stopReason: StopReason;
  /** Per token, with `logprobs: true`. */
  logprobs?: number[];
  usage: { promptTokens: number; completionTokens: number };
}

/** What a Generation needs from its model. */
export interface GenerationOwner {
  cancel(id: number): void;
}

export class Generation implements AsyncIterableIterator<GeneratedToken>, AsyncDisposable {
  /** Settles when the engine is done with the request (also after an abort). */
  readonly result: Promise<Completion>;
  private readonly queue: GeneratedToken[] = [];
  private waiter: { resolve: (r: IteratorResult<GeneratedToken>) => void; reject: (e: Error) => void } | null = null;
  private readonly tokens: number[] = [];
  private readonly logprobs: number[] = [];
  private text = '';
  /** The iterator is over (finished, failed, or cancelled by the caller). */
  private ended = false;
  private aborted = false;
  private failure: Error | null = null;
  private settle!: (c: Completion) => void;
  private fail!: (e: Error) => void;
  private readonly onAbort = () => this.abort();

  constructor(
    private readonly owner: GenerationOwner,
    readonly id: number,
    private readonly wantLogprobs: boolean,
    private readonly signal?: AbortSignal,
  ) {
    this.result = new Promise<Completion>((resolve, reject) => {
      this.settle = resolve;
      this.fail = reject;
    });
    // A caller that only iterates must not see an unhandled rejection from `result`.
    this.result.catch(() => {});
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  // ---- fed by the model --------------------------------------------------------------------

  /** @internal */
  pushToken(t: GeneratedToken): void {
    if (this.ended) return;
    this.tokens.push(t.token);
    this.text += t.text;
    if (this.wantLogprobs && t.logprob !== undefined) this.logprobs.push(t.logprob);
    if (this.waiter) {
      this.waiter.resolve({ value: t, done: false });
      this.waiter = null;
    } else this.queue.push(t);
  }

  /** @internal The engine has let go of the request. */
  finish(reason: StopReason, promptTokens: number): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.end();
    this.settle({
      text: this.text,
      tokens: [...this.tokens],
      stopReason: this.aborted ? 'abort' : reason,
      ...(this.wantLogprobs ? { logprobs: [...this.logprobs] } : {}),
      usage: { promptTokens, completionTokens: this.tokens.length },
    });
  }

  /** @internal */
  error(e: Error): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    if (!this.ended) this.failure = e;
    this.end();
    this.fail(e);
  }

  // ---- the caller's side -------------------------------------------------------------------

  /** Stop generating; the result settles with stopReason 'abort' and the text so far. */
  abort(): void {
    if (this.ended) return;
    this.aborted = true;
    this.end();
    this.owner.cancel(this.id);
  }

  next(): Promise<IteratorResult<GeneratedToken>> {
    const t = this.queue.shift();
    if (t) return Promise.resolve({ value: t, done: false });
    if (this.failure) {
      const e = this.failure;
      this.failure = null; // reported once; later calls just say done
      return Promise.reject(e);
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter) return Promise.reject(new Error('Generation: next() called again before the previous call settled'));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /** Called when a `for await` loop is left early (break, return, throw): cancels the request. */
  return(): Promise<IteratorResult<GeneratedToken>> {
    this.abort();
    this.queue.length = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  dispose(): void {
    this.abort();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.abort();
    await this.result.catch(() => {});
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.waiter) return;
    const w = this.waiter;
    this.waiter = null;
    if (this.failure) {
      w.reject(this.failure);
      this.failure = null;
    } else w.resolve({ value: undefined, done: true });
  }
}
