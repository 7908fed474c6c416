// Choosing the next token: sampling options, their validation, and a Sampler that runs the
// native `sample` op (csrc/ops/sampling.cpp) over a batch of logits rows.
//
// The math is MODEL.md §9: drop padded ids; repetition penalty over the seen ids; temperature
// (0, or topK 1, means greedy argmax); top-k; top-p; min-p; draw. The draw is a pure function
// of (seed, step) (see sampling_uniform in csrc/cpu/kernels.h), so the same seed replays a
// generation token for token on the same backend.
import { randomBytes } from 'node:crypto';

import { addon, type NativeTensor } from './native.js';
import type { Ops } from './ops.js';

export interface SamplingOptions {
  /** Softmax temperature; 0 means greedy (argmax). Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens; 0 = off. Default 0. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p; 1 = off. Default 1. */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one; 0 = off. Default 0. */
  minP?: number;
  /** Divide positive (multiply negative) logits of already seen tokens by this; 1 = off. Default 1. */
  repetitionPenalty?: number;
  /** A 32-bit unsigned seed; a random one (node:crypto) when absent. */
  seed?: number;
  /** Also return the log-probability of each chosen token. Default false. */
  logprobs?: boolean;
}

/** Options with every field filled in and checked. */
export type ResolvedSampling = Required<SamplingOptions>;

export const SAMPLING_DEFAULTS: Readonly<Omit<ResolvedSampling, 'seed'>> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  logprobs: false,
});

/** A fresh random 32-bit seed. */
export function randomSeed(): number {
  return randomBytes(4).readUInt32LE(0);
}

/** Fills in the defaults and checks every field; throws a RangeError naming the bad one. */
export function validateSamplingOptions(o: SamplingOptions = {}): ResolvedSampling {
  const r = { ...SAMPLING_DEFAULTS, seed: randomSeed() };
  const num = (key: keyof SamplingOptions, ok: (v: number) => boolean, rule: string): number => {
    const v = o[key];
    if (v === undefined) return r[key] as number;
    if (typeof v !== 'number' || !ok(v)) {
      throw new RangeError(`sampling option '${key}' must be ${rule}, got ${typeof v === 'number' ? v : JSON.stringify(v)}`);
    }
    return v;
  };
  r.temperature = num('temperature', (v) => Number.isFinite(v) && v >= 0, 'a finite number >= 0 (0 = greedy)');
  r.topK = num('topK', (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0 (0 = off)');
  r.topP = num('topP', (v) => v > 0 && v <= 1, 'in (0, 1] (1 = off)');
  r.minP = num('minP', (v) => v >= 0 && v <= 1, 'in [0, 1] (0 = off)');
  r.repetitionPenalty = num('repetitionPenalty', (v) => Number.isFinite(v) && v > 0, 'a finite number > 0 (1 = off)');
  r.seed = num('seed', (v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff, 'an integer in [0, 4294967295]');
  if (o.logprobs !== undefined && typeof o.logprobs !== 'boolean') {
    throw new RangeError(`sampling option 'logprobs' must be a boolean, got ${JSON.stringify(o.logprobs)}`);
  }
  r.logprobs = o.logprobs ?? false;
  // The op reads its settings as f32: a top_p that rounds to 0 there would be refused natively
  // with a less helpful message, so catch it here.
  if (Math.fround(r.topP) <= 0) throw new RangeError(`sampling option 'topP' is too small to represent, got ${r.topP}`);
  return r;
}

/** One sequence's part of a batched draw. */
export interface SampleRequest {
  options: ResolvedSampling;
  /** Index of the token being generated in this sequence (0 for the first new token). */
  step: number;
  /** Ids the repetition penalty applies to (the prompt and the tokens generated so far). */
  seen?: Iterable<number>;
}

export interface SampleResult {
  tokens: Int32Array;
  /** Log-probability of each chosen token, when any request asked for it; else null. */
  logprobs: Float32Array | null;
}

/**
 * Draws one token per row of a logits tensor. Every call builds its own small tensors
 * (settings, seeds, steps, seen ids, outputs) and frees them when it returns, so concurrent
 * calls never share memory.
 */
export class Sampler {
  private disposed = false;

  constructor(
    readonly ops: Ops,
    /** The real vocabulary size; logits columns at or beyond it are padding. */
    readonly vocab: number,
  ) {
    if (!Number.isInteger(vocab) || vocab < 1) throw new RangeError(`Sampler: vocab must be an integer >= 1, got ${vocab}`);
  }

  /** logits: f32 [B, Vp] on the stream's device, one row per request. */
  async sample(logits: NativeTensor, seqs: readonly SampleRequest[]): Promise<SampleResult> {
    const [B, Vp] = logits.shape as [number, number];
    if (logits.shape.length !== 2) throw new TypeError(`Sampler.sample: logits must be [B, Vp], got [${logits.shape.join(', ')}]`);
    if (seqs.length !== B) throw new RangeError(`Sampler.sample: ${seqs.length} requests for ${B} rows of logits`);
    if (Vp < this.vocab) throw new RangeError(`Sampler.sample: logits have ${Vp} columns, fewer than the vocabulary (${this.vocab})`);
    if (this.disposed) throw new Error('Sampler.sample: the sampler was disposed');
    if (B === 0) return { tokens: new Int32Array(0), logprobs: null };

    const native = addon();
    const device = this.ops.device;
    const params = new Float32Array(B * 5);
    const seeds = new Int32Array(B);
    const steps = new Int32Array(B);
    const seenRows: number[][] = [];
    seqs.forEach((s, b) => {
      const o = s.options;
      params.set([o.temperature, o.topK, o.topP, o.minP, o.repetitionPenalty], b * 5);
      seeds[b] = o.seed | 0; // the op reads the bits back as uint32
      if (!Number.isInteger(s.step) || s.step < 0 || s.step > 0x7fffffff) {
        throw new RangeError(`Sampler.sample: sequence ${b}: step must be an integer in [0, 2^31), got ${s.step}`);
      }
      steps[b] = s.step;
      seenRows.push(o.repetitionPenalty !== 1 && s.seen ? distinctIds(s.seen, Vp, b) : []);
    });
    // Rows shorter than the longest are padded with -1; no seen ids at all means no tensor.
    const S = seenRows.reduce((m, r) => Math.max(m, r.length), 0);
    let seen: Int32Array | null = null;
    if (S > 0) {
      seen = new Int32Array(B * S).fill(-1);
      seenRows.forEach((r, b) => seen!.set(r, b * S));
    }

    const wantLogprobs = seqs.some((s) => s.options.logprobs);
    const params_ = native.tensor(params, [B, 5], 'f32', device);
    const seeds_ = native.tensor(seeds, [B], 'i32', device);
    const steps_ = native.tensor(steps, [B], 'i32', device);
    const seen_ = seen ? native.tensor(seen, [B, S], 'i32', device) : null;
    const tokens = native.empty([B], 'i32', device);
    const logprobs = wantLogprobs ? native.empty([B], 'f32', device) : null;
    try {
      this.ops.sample({ logits, params: params_, seeds: seeds_, steps: steps_, seen: seen_ }, { tokens, logprobs }, this.vocab);
      await this.ops.sync();
      return {
        tokens: tokens.toArray() as Int32Array,
        logprobs: logprobs ? (logprobs.toArray() as Float32Array) : null,
      };
    } finally {
      for (const t of [params_, seeds_, steps_, seen_, tokens, logprobs]) t?.dispose();
    }
  }

  /** Marks the sampler unusable; it holds no native memory between calls. */
  dispose(): void {
    this.disposed = true;
  }
}

/** The distinct ids of `seen`, each checked to be an id of the (padded) vocabulary. */
function distinctIds(seen: Iterable<number>, Vp: number, b: number): number[] {
  const ids = new Set<number>();
  for (const id of seen) {
    if (!Number.isInteger(id) || id < 0 || id >= Vp) {
      throw new RangeError(`Sampler.sample: sequence ${b}: seen id ${id} is not a token id in [0, ${Vp})`);
    }
    ids.add(id);
  }
  return [...ids];
}

/**
 * Samples rows of host logits: a convenience for tests and tools. logits holds B rows of
 * `vocabPadded` values; ids >= vocab are padding.
 */
export async function sampleArray(
  ops: Ops,
  logits: Float32Array,
  vocabPadded: number,
  vocab: number,
  seqs: readonly SampleRequest[],
): Promise<SampleResult> {
  if (logits.length !== seqs.length * vocabPadded) {
    throw new RangeError(`sampleArray: ${logits.length} logits are not ${seqs.length} rows of ${vocabPadded}`);
  }
  const t = addon().tensor(logits, [seqs.length, vocabPadded], 'f32', ops.device);
  const sampler = new Sampler(ops, vocab);
  try {
    return await sampler.sample(t, seqs);
  } finally {
    sampler.dispose();
    t.dispose();
  }
}
