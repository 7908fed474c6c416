// Loads the native addon and describes its interface to TypeScript.
//
// The addon is built by `npm install` into build/Release/taipan.node. This file lives in lib/
// (run from source) or dist/ (compiled), both one level below the package root.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { DTypeName } from './dtype.js';

export type DeviceName = 'cpu' | 'cuda';

/** A typed, shaped view of host or device memory owned by the native addon. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: DTypeName;
  readonly device: DeviceName;
  /** Elements between consecutive rows (the last dimension is a row). */
  readonly rowStride: number;
  readonly contiguous: boolean;
  readonly byteLength: number;
  readonly disposed: boolean;
  /** Float32Array for f32/f16/bf16 tensors, Int32Array for i32. */
  toArray(): Float32Array | Int32Array;
  write(data: Float32Array | Float64Array | Uint16Array | Int32Array | Uint8Array): this;
  /** A view of rows [start, end) of the first dimension. */
  rows(start: number, end?: number): NativeTensor;
  /** A view of columns [start, end) of the last dimension (keeps the row stride). */
  cols(start: number, end?: number): NativeTensor;
  reshape(shape: number[]): NativeTensor;
  dispose(): void;
}

export type OpTensors = Record<string, NativeTensor | NativeTensor[] | null | undefined>;
export type OpParams = Record<string, number | boolean | string | undefined>;

/** An ordered queue of ops; work runs off the JavaScript thread when awaited. */
export interface NativeStream {
  readonly device: DeviceName;
  readonly queued: number;
  readonly disposed: boolean;
  run(op: string, tensors: OpTensors, params?: OpParams): void;
  sync(): Promise<void>;
  syncBlocking(): void;
  /** Record the following run() calls into a graph instead of queueing them. */
  beginCapture(): void;
  endCapture(): NativeGraph;
  /** Queue every call of a captured graph (its ops read their tensors when they run). */
  launch(graph: NativeGraph): void;
  /** On CUDA: replay launched graphs as CUDA graphs (default true unless TAIPAN_CUDA_GRAPHS=0). */
  cudaGraphs: boolean;
  dispose(): void;
}

/** A captured sequence of op calls; holds its tensors alive until disposed. */
export interface NativeGraph {
  readonly ops: number;
  readonly disposed: boolean;
  /** Whether its launches replay a captured CUDA graph. */
  readonly cudaGraph: boolean;
  dispose(): void;
}

export interface NativeBackendInfo {
  cpu: { avx2: boolean; fma: boolean; f16c: boolean; path: 'avx2' | 'portable'; threads: number };
  cuda: {
    compiled: boolean;
    runtimeVersion: number;
    driverVersion: number;
    reason: string;
    /** With a usable device: the kernel that runs prefill GEMMs on it (and why not wgmma, if not). */
    prefillGemm?: string;
    devices: {
      index: number;
      name: string;
      computeCapability: string;
      totalMemory: number;
      freeMemory: number;
      multiprocessors: number;
    }[];
  };
  ops: string[];
}

export interface NativeAddon {
  Stream: new (device?: DeviceName) => NativeStream;
  tensor(
    data: Float32Array | Float64Array | Uint16Array | Int32Array | Uint8Array,
    shape: number[],
    dtype?: DTypeName,
    device?: DeviceName,
  ): NativeTensor;
  empty(shape: number[], dtype?: DTypeName, device?: DeviceName, zero?: boolean): NativeTensor;
  fromFile(
    path: string,
    byteOffset: number,
    fileDtype: DTypeName,
    shape: number[],
    dtype?: DTypeName,
    device?: DeviceName,
  ): NativeTensor;
  backendInfo(): NativeBackendInfo;
  setThreads(n: number): number;
  getThreads(): number;
  setPortable(on: boolean): boolean;
  /** Time every executed op (also TAIPAN_PROFILE=1); returns the previous setting. */
  setProfiling(on: boolean): boolean;
  /** Seconds and calls per op since the last reset. */
  opProfile(reset?: boolean): Record<string, { calls: number; seconds: number }>;
  /** Bytes/s at which the CPU threads read a `mib` MiB buffer (default 256), as decode reads weights. */
  cpuReadBandwidth(mib?: number): Promise<number>;
  /** fp32 FLOP/s of the CPU threads' fused multiply-adds (a multiply-add counts 2), as prefill computes. */
  cpuFmaPeak(): Promise<number>;
  /** Process-wide counters of the CUDA graph path: captures made, graph launches, fallbacks to op-by-op. */
  cudaGraphStats(): { captures: number; launches: number; fallbacks: number; lastFallback: string };
}

export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

let cached: NativeAddon | undefined;

/** The addon, loaded once. Throws a clear error when it has not been built. */
export function addon(): NativeAddon {
  if (cached) return cached;
  const candidates = [
    process.env.TAIPAN_ADDON,
    join(packageRoot, 'build', 'Release', 'taipan.node'),
    join(packageRoot, 'build', 'Debug', 'taipan.node'),
  ].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(
      `taipan: the native addon is not built (looked for ${candidates.join(', ')}). ` +
        'Run `npm install` in the package directory (or `npm run build:addon`) to build it.',
    );
  }
  const require = createRequire(import.meta.url);
  try {
    cached = require(found) as NativeAddon;
  } catch (e) {
    throw new Error(`taipan: the native addon at ${found} failed to load: ${(e as Error).message}`);
  }
  return cached;
}
