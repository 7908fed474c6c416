// Small helpers shared by the CLI commands.
import type { BackendName } from '../backend.js';
import type { LoadOptions } from '../models/causal_lm.js';

export function ints(s: string, what: string): number[] {
  const out = s.split(',').map((x) => Number(x.trim()));
  if (s.trim() === '' || out.some((x) => !Number.isInteger(x))) throw new Error(`${what} must be comma-separated integers, got "${s}"`);
  return out;
}

export function positiveInt(s: string | undefined, what: string): number | undefined {
  if (s === undefined) return undefined;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${what} must be a positive integer, got "${s}"`);
  return n;
}

/** --backend and --threads as model load options. */
export function loadOptions(values: { backend?: string; threads?: string }): LoadOptions {
  const backend = values.backend as BackendName | undefined;
  if (backend !== undefined && !['auto', 'cpu', 'cuda'].includes(backend)) {
    throw new Error(`--backend must be auto, cpu or cuda, got "${backend}"`);
  }
  return { backend, threads: positiveInt(values.threads, '--threads') };
}
