// Generation options: what a caller may ask for, and their validation. Validation runs on the
// caller's thread, before anything reaches the engine, so a bad request fails at once with an
// error naming the option; the engine only ever sees resolved, checked options.
import { validateSamplingOptions, type ResolvedSampling, type SamplingOptions } from '../sampler.js';

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 256). */
  maxTokens?: number;
  /** Strings that end the generation; the text stops just before the first one found. */
  stop?: string | string[];
  /** Token ids that end the generation (the id is the last of `tokens`; its text is not output). */
  stopIds?: number[];
  /** Keep going past the tokenizer's EOS ids. Default false. */
  ignoreEos?: boolean;
  /** Aborting it ends the generation with stopReason 'abort'. */
  signal?: AbortSignal;
}

/** Everything the engine needs for one request; plain data, so it crosses to the worker. */
export interface ResolvedGenerateOptions {
  maxTokens: number;
  sampling: ResolvedSampling;
  stop: string[];
  stopIds: number[];
  ignoreEos: boolean;
}

export const DEFAULT_MAX_TOKENS = 256;

/** A request this model cannot serve as asked (e.g. text for a model without a tokenizer). */
export class InvalidRequestError extends Error {
  override name = 'InvalidRequestError';
}

const SAMPLING_KEYS = ['temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'seed', 'logprobs'] as const;
const KNOWN_KEYS: ReadonlySet<string> = new Set([...SAMPLING_KEYS, 'maxTokens', 'stop', 'stopIds', 'ignoreEos', 'signal']);

/** What validation needs to know about the model. */
export interface ModelLimits {
  /** Token ids are in [0, vocabSize). */
  vocabSize: number;
  /** Stop strings need text, so a tokenizer. */
  hasTokenizer: boolean;
}

/** A lone surrogate cannot be produced by the decoder, so such a stop string could never match. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Fills in the defaults and checks every option; throws a TypeError or RangeError naming it. */
export function validateGenerateOptions(o: GenerateOptions | undefined, limits: ModelLimits): ResolvedGenerateOptions {
  if (o === undefined) o = {};
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new TypeError('generate options must be an object');
  for (const key of Object.keys(o)) {
    if (!KNOWN_KEYS.has(key)) throw new TypeError(`unknown generate option '${key}' (known: ${[...KNOWN_KEYS].join(', ')})`);
  }
  const maxTokens = o.maxTokens ?? DEFAULT_MAX_TOKENS;
  if (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens) || maxTokens < 1) {
    throw new RangeError(`option 'maxTokens' must be a positive integer, got ${JSON.stringify(maxTokens)}`);
  }
  const sampling = validateSamplingOptions(Object.fromEntries(SAMPLING_KEYS.filter((k) => k in o).map((k) => [k, o[k]])));

  const stop = o.stop === undefined ? [] : typeof o.stop === 'string' ? [o.stop] : o.stop;
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s === '' || LONE_SURROGATE.test(s))) {
    throw new TypeError(`option 'stop' must be a non-empty string or an array of them, got ${JSON.stringify(o.stop)}`);
  }
  if (stop.length > 0 && !limits.hasTokenizer) {
    throw new InvalidRequestError("option 'stop' needs text, but this model has no tokenizer (use 'stopIds')");
  }

  const stopIds = o.stopIds ?? [];
  if (!Array.isArray(stopIds)) throw new TypeError(`option 'stopIds' must be an array of token ids, got ${JSON.stringify(stopIds)}`);
  for (const id of stopIds) checkId(id, limits.vocabSize, "option 'stopIds'");

  if (o.ignoreEos !== undefined && typeof o.ignoreEos !== 'boolean') {
    throw new TypeError(`option 'ignoreEos' must be a boolean, got ${JSON.stringify(o.ignoreEos)}`);
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new TypeError("option 'signal' must be an AbortSignal");
  return { maxTokens, sampling, stop: [...stop], stopIds: [...stopIds], ignoreEos: o.ignoreEos ?? false };
}

/** A prompt given as token ids: non-empty, every id in the model's vocabulary. */
export function validatePromptIds(ids: readonly unknown[], vocabSize: number): number[] {
  if (ids.length === 0) throw new RangeError('the prompt is empty');
  ids.forEach((id, i) => checkId(id, vocabSize, `prompt token ${i}`));
  return ids as number[];
}

function checkId(id: unknown, vocabSize: number, what: string): void {
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new RangeError(`${what}: ${JSON.stringify(id)} is not a token id in [0, ${vocabSize})`);
  }
}
