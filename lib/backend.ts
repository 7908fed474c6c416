// Backend choice and backend information.
//
// One addon holds both backends. `auto` picks CUDA when a device answers and the CUDA backend
// can run the model's ops, else the CPU. TAIPAN_BACKEND overrides the default; an explicit
// option overrides both.
import { addon, type DeviceName, type NativeBackendInfo } from './native.js';

export type BackendName = 'auto' | DeviceName;

/**
 * Whether the CUDA backend runs whole models yet. The CUDA kernels are compiled into the addon,
 * but the op dispatch for them is not wired (see the README's status section), so `auto`
 * stays on the CPU until it is.
 */
export const CUDA_RUNS_MODELS = false;

export interface BackendInfo extends NativeBackendInfo {
  /** What `auto` resolves to on this machine, and why. */
  auto: { backend: DeviceName; why: string };
}

export function getBackendInfo(): BackendInfo {
  const info = addon().backendInfo();
  return { ...info, auto: autoChoice(info) };
}

function autoChoice(info: NativeBackendInfo): { backend: DeviceName; why: string } {
  if (!info.cuda.compiled) return { backend: 'cpu', why: 'the addon was built without CUDA' };
  if (info.cuda.devices.length === 0) return { backend: 'cpu', why: `no CUDA device: ${info.cuda.reason}` };
  if (!CUDA_RUNS_MODELS) return { backend: 'cpu', why: 'a CUDA device answers, but the CUDA backend does not run models yet' };
  return { backend: 'cuda', why: `CUDA device 0: ${info.cuda.devices[0]!.name}` };
}

function isBackendName(v: string): v is BackendName {
  return v === 'auto' || v === 'cpu' || v === 'cuda';
}

/** Resolve a requested backend (option, then TAIPAN_BACKEND, then auto) to a device. */
export function resolveBackend(requested?: BackendName): DeviceName {
  const env = process.env.TAIPAN_BACKEND;
  let choice: BackendName = 'auto';
  if (requested !== undefined) choice = requested;
  else if (env) {
    if (!isBackendName(env)) throw new Error(`TAIPAN_BACKEND must be auto, cpu or cuda, got "${env}"`);
    choice = env;
  }
  if (!isBackendName(choice)) throw new TypeError(`backend must be 'auto', 'cpu' or 'cuda', got "${String(choice)}"`);
  if (choice === 'cpu') return 'cpu';
  const info = addon().backendInfo();
  if (choice === 'auto') return autoChoice(info).backend;
  if (!info.cuda.compiled) throw new Error('backend "cuda" requested, but this addon was built without CUDA (nvcc was not found at build time)');
  if (info.cuda.devices.length === 0) throw new Error(`backend "cuda" requested, but no CUDA device is usable: ${info.cuda.reason}`);
  if (!CUDA_RUNS_MODELS) throw new Error('backend "cuda" requested, but the CUDA backend does not run models yet; use backend "cpu"');
  return 'cuda';
}

/** Set the CPU thread count (0 = one per core); returns the count in effect. */
export function setThreads(n: number): number {
  return addon().setThreads(n);
}

export function getThreads(): number {
  return addon().getThreads();
}
