// Continuous batching over one CausalLM: every decode step advances all running sequences in
// one batched model.step call; new requests are prefilled in bounded pieces between decode
// steps and then join the running batch; a sequence that finishes or is cancelled leaves at the
// next step boundary without holding up the others.
//
// Runs inside the engine worker (lib/engine/worker.ts), where blocking is harmless; it knows
// nothing about threads or messages: requests come in through submit/cancel and everything that
// happens goes out through `emit`.
import type { CausalLM, SequenceState } from '../models/causal_lm.js';
import { addon } from '../native.js';
import { Ops } from '../ops.js';
import { Sampler, type SampleRequest } from '../sampler.js';
import type { Tokenizer } from '../tokenizer.js';
import type { ResolvedGenerateOptions } from './options.js';
import { errorInfo, type EngineEvent, type StopReason } from './protocol.js';
import { TextStream } from './text.js';

export interface EngineLimits {
  /** Sequences decoded together at most (each holds one SequenceState). */
  maxSequences: number;
  /** Requests waiting for a free sequence at most; one more is refused as "queue full". */
  maxQueue: number;
  /** Prompt tokens run per step at most, over all sequences being prefilled. */
  prefillChunk: number;
}

/** One request from submission to its last token. */
interface Sequence {
  id: number;
  prompt: number[];
  options: ResolvedGenerateOptions;
  /** Prompt tokens already run through the model. */
  fed: number;
  state: SequenceState | null;
  generated: number[];
  text: TextStream;
  stopIds: Set<number>;
  cancelled: boolean;
  done: boolean;
}

export class BatchEngine {
  private readonly waiting: Sequence[] = [];
  private prefilling: Sequence[] = [];
  private running: Sequence[] = [];
  /** States of finished sequences, kept for the next ones (reset before reuse). */
  private readonly free: SequenceState[] = [];
  private readonly byId = new Map<number, Sequence>();
  private readonly ops: Ops;
  private readonly sampler: Sampler;
  private readonly eos: Set<number>;
  private loop: Promise<void> | null = null;
  private closed = false;

  constructor(
    private readonly model: CausalLM,
    private readonly tokenizer: Tokenizer | null,
    private readonly limits: EngineLimits,
    private readonly emit: (e: EngineEvent) => void,
  ) {
    // Sampling runs on a CPU stream whatever the model's device: the model hands its logits
    // back as host arrays, and the sample op has no CUDA kernel yet.
    this.ops = new Ops('cpu');
    this.sampler = new Sampler(this.ops, model.config.vocab_size);
    this.eos = new Set(tokenizer?.eosIds ?? []);
  }

  /** Sequences holding a state (being prefilled or decoded). */
  get active(): number {
    return this.prefilling.length + this.running.length;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Queue a request; problems with it are reported as an 'error' event, never thrown. */
  submit(id: number, prompt: string | number[], options: ResolvedGenerateOptions): void {
    const fail = (message: string, kind: 'invalid_request' | 'queue_full' | 'internal', name = 'Error') =>
      this.emit({ type: 'error', id, error: { name, message, kind } });
    if (this.closed) return fail('the model was disposed', 'internal');
    if (this.byId.has(id)) return fail(`request id ${id} is already in use`, 'internal');
    if (this.waiting.length + this.active >= this.limits.maxSequences + this.limits.maxQueue) {
      return fail(`queue full: ${this.limits.maxSequences} sequences running and ${this.limits.maxQueue} waiting`, 'queue_full', 'QueueFullError');
    }
    let ids: number[];
    try {
      ids = typeof prompt === 'string' ? this.encode(prompt) : prompt;
    } catch (e) {
      return this.emit({ type: 'error', id, error: errorInfo(e, 'invalid_request') });
    }
    const seq: Sequence = {
      id,
      prompt: ids,
      options,
      fed: 0,
      state: null,
      generated: [],
      text: new TextStream(this.tokenizer?.createStreamDecoder() ?? null, options.stop, this.tokenizer?.vocabSize ?? 0),
      stopIds: new Set(options.stopIds),
      cancelled: false,
      done: false,
    };
    this.byId.set(id, seq);
    this.waiting.push(seq);
    this.kick();
  }

  /** End a request with 'abort': at once if it is waiting, else at the next step boundary. */
  cancel(id: number): void {
    const seq = this.byId.get(id);
    if (!seq) return;
    seq.cancelled = true;
    const w = this.waiting.indexOf(seq);
    if (w >= 0) {
      this.waiting.splice(w, 1);
      this.finish(seq, 'abort');
    }
  }

  /** Abort every request, wait for the current step, and free the states. The model stays the caller's. */
  async close(): Promise<void> {
    this.closed = true;
    for (const id of [...this.byId.keys()]) this.cancel(id);
    await this.loop;
    for (const s of this.free.splice(0)) s.dispose();
    this.sampler.dispose();
    this.ops.dispose();
  }

  // ---- the loop --------------------------------------------------------------------------

  private kick(): void {
    if (!this.loop) this.loop = this.run();
  }

  private async run(): Promise<void> {
    for (;;) {
      try {
        this.reap();
        await this.admit();
        if (this.active === 0) break;
        // Decode first, so a burst of new prompts delays running sequences by one piece at most.
        if (this.running.length > 0) await this.decodeStep();
        this.reap();
        if (this.prefilling.length > 0) await this.prefillStep();
      } catch (e) {
        this.failActive(e);
      }
    }
    this.loop = null; // synchronously with the last check: a later submit starts a new loop
  }

  /** Give waiting requests a state while there is room. */
  private async admit(): Promise<void> {
    while (this.waiting.length > 0 && this.active < this.limits.maxSequences) {
      const seq = this.waiting.shift()!;
      const reused = this.free.pop();
      // Counted as active while its state is reset, so admission cannot overshoot.
      this.prefilling.push(seq);
      if (reused) await this.model.resetState(reused);
      seq.state = reused ?? this.model.createState();
    }
  }

  /** One token for every running sequence, in one batched forward. */
  private async decodeStep(): Promise<void> {
    const batch = this.running;
    const tokens = batch.map((s) => s.generated[s.generated.length - 1]!);
    const logits = await this.model.step(tokens, batch.map((s) => s.state!));
    await this.sample(batch, logits, batch.map((_, i) => i));
    this.running = this.running.filter((s) => !s.done);
  }

  /**
   * Run the next piece of waiting prompts: the first sequence's next piece, batched with other
   * sequences whose next piece has the same length, within the prefillChunk token budget.
   * Sequences whose prompt is complete sample their first token and join the running batch.
   */
  private async prefillStep(): Promise<void> {
    const budget = this.limits.prefillChunk;
    const pieceOf = (s: Sequence) => Math.min(budget, s.prompt.length - s.fed);
    const L = pieceOf(this.prefilling[0]!);
    const group: Sequence[] = [];
    for (const s of this.prefilling) {
      if (s.state === null || pieceOf(s) !== L) continue;
      if ((group.length + 1) * L > budget) break;
      group.push(s);
    }
    const { logits } = await this.model.prefill(
      group.map((s) => s.prompt.slice(s.fed, s.fed + L)),
      { states: group.map((s) => s.state!) },
    );
    for (const s of group) s.fed += L;
    const rows = group.flatMap((s, i) => (s.fed === s.prompt.length ? [i] : []));
    if (rows.length === 0) return;
    const ready = rows.map((i) => group[i]!);
    this.prefilling = this.prefilling.filter((s) => !ready.includes(s));
    await this.sample(ready, logits, rows);
    for (const s of ready) if (!s.done) this.running.push(s);
  }

  /** Draw the next token of `seqs` from `rows` of host logits, then report and check it. */
  private async sample(seqs: Sequence[], logits: Float32Array, rows: number[]): Promise<void> {
    const V = this.model.config.vocab_padded;
    let data = logits;
    if (rows.length * V !== logits.length) {
      data = new Float32Array(rows.length * V);
      rows.forEach((r, i) => data.set(logits.subarray(r * V, (r + 1) * V), i * V));
    }
    const requests: SampleRequest[] = seqs.map((s) => ({
      options: s.options.sampling,
      step: s.generated.length,
      seen: s.options.sampling.repetitionPenalty !== 1 ? [...s.prompt, ...s.generated] : undefined,
    }));
    const t = addon().tensor(data, [rows.length, V], 'f32', this.ops.device);
    let drawn;
    try {
      drawn = await this.sampler.sample(t, requests);
    } finally {
      t.dispose();
    }
    seqs.forEach((s, i) => this.accept(s, drawn.tokens[i]!, drawn.logprobs?.[i]));
  }

  /** A new token for `seq`: emit it with its text, and end the sequence if it should end. */
  private accept(seq: Sequence, token: number, logprob: number | undefined): void {
    if (seq.cancelled) return this.finish(seq, 'abort');
    seq.generated.push(token);
    let reason: StopReason | null = seq.stopIds.has(token) ? 'stop' : !seq.options.ignoreEos && this.eos.has(token) ? 'eos' : null;
    let text: string;
    if (reason) {
      // A stop id's own text is not output; what the decoder still holds is.
      text = seq.text.finish().text;
    } else {
      const r = seq.text.push(token);
      text = r.text;
      if (r.stopped) reason = 'stop';
      else if (seq.generated.length >= seq.options.maxTokens) {
        const f = seq.text.finish();
        text += f.text;
        reason = f.stopped ? 'stop' : 'length';
      }
    }
    const event: EngineEvent = { type: 'token', id: seq.id, token, text };
    if (seq.options.sampling.logprobs && logprob !== undefined) event.logprob = logprob;
    this.emit(event);
    if (reason) this.finish(seq, reason);
  }

  /** Leave the engine: free the state for the next sequence and report the end. */
  private finish(seq: Sequence, reason: StopReason): void {
    if (seq.done) return;
    seq.done = true;
    this.byId.delete(seq.id);
    if (seq.state) this.free.push(seq.state);
    seq.state = null;
    this.emit({ type: 'done', id: seq.id, reason, promptTokens: seq.prompt.length });
  }

  /** Cancelled sequences leave between steps. */
  private reap(): void {
    const gone = (s: Sequence) => {
      if (!s.cancelled) return false;
      this.finish(s, 'abort');
      return true;
    };
    if (this.running.some((s) => s.cancelled)) this.running = this.running.filter((s) => !gone(s));
    if (this.prefilling.some((s) => s.cancelled && s.state)) this.prefilling = this.prefilling.filter((s) => !(s.state && gone(s)));
  }

  /** A forward or a draw failed: every sequence in flight gets the error; waiting ones still run. */
  private failActive(e: unknown): void {
    const error = errorInfo(e);
    for (const s of [...this.prefilling, ...this.running]) {
      if (s.done) continue;
      s.done = true;
      this.byId.delete(s.id);
      if (s.state) this.free.push(s.state);
      s.state = null;
      this.emit({ type: 'error', id: s.id, error });
    }
    this.prefilling = [];
    this.running = [];
  }

  private encode(text: string): number[] {
    if (!this.tokenizer) throw new Error('this model has no tokenizer: pass the prompt as token ids (or load it with a tokenizer)');
    const ids = this.tokenizer.encode(text);
    if (ids.length === 0) throw new RangeError('the prompt is empty');
    const V = this.model.config.vocab_size;
    const bad = ids.find((id) => id >= V);
    if (bad !== undefined) throw new RangeError(`the tokenizer gives id ${bad}, outside this model's vocabulary [0, ${V})`);
    return ids;
  }
}
