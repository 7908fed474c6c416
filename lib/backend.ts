// Backend choice and backend information.
//
// One addon holds both backends. `auto` picks CUDA when a device answers and the CUDA backend
// can run the model's ops, else the CPU. TAIPAN_BACKEND overrides the default; an explicit
// option overrides both.
import { addon, type DeviceName, type NativeAddon, type NativeBackendInfo } from './native.js';

export type BackendName = 'auto' | DeviceName;

/**
 * Whether `auto` picks CUDA when a device answers. The CUDA op dispatch is wired (the Mamba-2
 * ops run on CUDA with bf16 activations; see cuda/README.md), but it has only run on the CPU
 * emulator (cuda/emu/build_emu_addon.sh), never on a GPU. Keep this false until a GPU session
 * has passed test/cuda.test.ts; until then CUDA is used only when asked for by name
 * (`backend: 'cuda'` or TAIPAN_BACKEND=cuda).
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
  if (!CUDA_RUNS_MODELS) {
    return { backend: 'cpu', why: "a CUDA device answers, but the CUDA backend has not been validated on a GPU yet (request backend 'cuda' to use it)" };
  }
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
  // Asked for by name: used even while CUDA_RUNS_MODELS is false (that only governs `auto`).
  return 'cuda';
}

/** The CUDA caching allocator's counters (see csrc/tensor.h); all zero when nothing was allocated. */
export interface CudaMemoryInfo {
  /** False when TAIPAN_CUDA_CACHE=0: every freed block goes straight back to cudaFree. */
  caching: boolean;
  /** Bytes held by live tensors and op workspaces (rounded up to size classes). */
  inUseBytes: number;
  /** Bytes of idle blocks kept for reuse. */
  cachedBytes: number;
  peakBytes: number;
  /** cudaMalloc / cudaFree calls so far: a warm decode loop adds none. */
  deviceMallocs: number;
  deviceFrees: number;
  /** Allocations served from the cache, and not. */
  hits: number;
  misses: number;
}

interface CudaCacheAddon {
  cudaMemory(): CudaMemoryInfo;
  cudaReleaseCache(): number;
}

function cacheAddon(): NativeAddon & CudaCacheAddon {
  return addon() as NativeAddon & CudaCacheAddon;
}

/** Counters of the CUDA caching allocator. */
export function cudaMemory(): CudaMemoryInfo {
  return cacheAddon().cudaMemory();
}

/** Give every idle cached CUDA block back to the driver (cudaFree); returns the bytes released. */
export function cudaReleaseCache(): number {
  return cacheAddon().cudaReleaseCache();
}

/** Set the CPU thread count (0 = one per core); returns the count in effect. */
export function setThreads(n: number): number {
  return addon().setThreads(n);
}

export function getThreads(): number {
  return addon().getThreads();
}
