// Messages between a LanguageModel (the caller's thread) and its engine (a worker thread).
// They stay small: prompts, token ids, text pieces and resolved options go across, never
// logits or tensors.
import type { BackendName } from '../backend.js';
import type { WeightDType } from '../weights.js';
import type { ResolvedGenerateOptions } from './options.js';

/** Why a generation ended. */
export type StopReason = 'stop' | 'length' | 'abort' | 'eos';

/** How the worker finds its tokenizer: auto (the model's own, or Llama-3), a directory, or none. */
export type TokenizerChoice = 'auto' | 'llama3' | 'none' | { dir: string };

/** Passed to the worker at start (workerData). */
export interface WorkerConfig {
  /** A model directory or a preset name. */
  model: string;
  backend?: BackendName;
  threads?: number;
  weightDtype?: WeightDType;
  prefillChunk: number;
  maxSequences: number;
  maxQueue: number;
  tokenizer: TokenizerChoice;
}

/** What the caller learns about the model once it is loaded. */
export interface ModelInfo {
  /** The preset name or the directory's base name. */
  name: string;
  /** The checkpoint directory actually loaded (a cache directory for a preset). */
  dir: string;
  modelType: string;
  /** Token ids are in [0, vocabSize). */
  vocabSize: number;
  parameters: number;
  device: 'cpu' | 'cuda';
  /** Where the tokenizer came from, or null when the model takes token ids only. */
  tokenizer: string | null;
  eosIds: number[];
  maxSequences: number;
  maxQueue: number;
  prefillChunk: number;
}

export interface ErrorInfo {
  name: string;
  message: string;
  /** 'invalid_request': the request was bad (e.g. its text prompt); 'internal': the engine failed. */
  kind: 'invalid_request' | 'queue_full' | 'internal';
}

export type ToWorker =
  | { type: 'generate'; id: number; prompt: string | number[]; options: ResolvedGenerateOptions }
  | { type: 'cancel'; id: number }
  | { type: 'close' };

/** One request's progress; a step's events for all sequences travel in one message. */
export type EngineEvent =
  | { type: 'token'; id: number; token: number; text: string; logprob?: number }
  | { type: 'done'; id: number; reason: StopReason; promptTokens: number }
  | { type: 'error'; id: number; error: ErrorInfo };

export type FromWorker =
  | { type: 'progress'; message: string }
  | { type: 'ready'; info: ModelInfo }
  | { type: 'loadError'; error: ErrorInfo }
  | { type: 'events'; events: EngineEvent[] }
  | { type: 'closed' };

export function errorInfo(e: unknown, kind: ErrorInfo['kind'] = 'internal'): ErrorInfo {
  const err = e instanceof Error ? e : new Error(String(e));
  return { name: err.name, message: err.message, kind };
}
