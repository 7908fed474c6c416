// Where a model comes from: a checkpoint directory, or a preset name. There are no published
// weights to download for the presets, so a preset means a seeded random checkpoint of that
// shape (seed 0), written once to a cache directory and reused by later loads and processes.
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { threadId } from 'node:worker_threads';

import { getPreset, loadConfig, PRESETS, type ModelConfig } from '../config.js';
import { createRandomModel } from '../models/random.js';
import { Tokenizer, TokenizerError } from '../tokenizer.js';
import type { TokenizerChoice } from './protocol.js';

/** The cache directory of a preset's random checkpoint. */
export function presetDir(name: string): string {
  return join(tmpdir(), 'taipan-presets', `${name}-seed0`);
}

/** Resolve a directory or preset name to a checkpoint directory, writing a preset's on first use. */
export async function resolveModelDir(model: string, log: (message: string) => void): Promise<{ dir: string; name: string }> {
  if (existsSync(model) && statSync(model).isDirectory()) return { dir: resolve(model), name: basename(resolve(model)) };
  if (!Object.hasOwn(PRESETS, model)) {
    throw new Error(`"${model}" is neither a model directory nor a preset (presets: ${Object.keys(PRESETS).join(', ')})`);
  }
  const dir = presetDir(model);
  // The directory appears by rename only once complete, so its presence means it is whole.
  if (existsSync(join(dir, 'model.safetensors'))) return { dir, name: model };
  log(`${model}: writing a seeded random checkpoint to ${dir} (presets have no real weights; this happens once) ...`);
  mkdirSync(dirname(dir), { recursive: true });
  const partial = `${dir}.partial-${process.pid}-${threadId}`;
  rmSync(partial, { recursive: true, force: true });
  await createRandomModel(getPreset(model), partial, { seed: 0 });
  try {
    renameSync(partial, dir);
  } catch (e) {
    // Another process wrote it at the same time: theirs is the same checkpoint.
    rmSync(partial, { recursive: true, force: true });
    if (!existsSync(join(dir, 'model.safetensors'))) throw e;
  }
  return { dir, name: model };
}

/** Llama-3's vocabulary: the only tokenizer bundled with the package. */
const LLAMA3_IDS = 128256;

/**
 * The tokenizer for a checkpoint: the directory's tokenizer.json when present; else Llama-3 for
 * a Taipan-family model with Llama-3's vocabulary (the presets); else none (token ids only).
 */
export function pickTokenizer(choice: TokenizerChoice, dir: string, config: ModelConfig = loadConfig(dir)): Tokenizer | null {
  if (choice === 'none') return null;
  if (choice === 'llama3') return Tokenizer.llama3();
  if (typeof choice === 'object') return Tokenizer.fromDir(choice.dir);
  if (existsSync(join(dir, 'tokenizer.json'))) return Tokenizer.fromDir(dir);
  // Llama-3's ids would not fit a smaller model; don't spend a second loading it for nothing.
  if (config.vocab_size < LLAMA3_IDS) return null;
  try {
    return Tokenizer.forModel(dir, config.model_type, config.vocab_size);
  } catch (e) {
    if (e instanceof TokenizerError) return null;
    throw e;
  }
}
