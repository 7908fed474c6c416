// Small tensor helpers shared by the op test suites: seeded random data rounded to f32 (so a
// reference sees exactly what a kernel sees), f32/i32 tensors from arrays, NaN-filled tensors
// for rows that must be neither read nor written, and reading results back.
import { addon, type NativeTensor } from '../../lib/native.js';
import { randn } from '../reference/rng.js';

/** The CPU kernel paths this machine can run: AVX2 (when present) and the portable one. */
export const cpuPaths = addon().backendInfo().cpu.avx2 ? (['avx2', 'portable'] as const) : (['portable'] as const);

/**
 * A seed counter and normal random values rounded to f32 drawn from it: every draw, and every
 * next() handed to another generator, uses the next seed, so a suite's data never repeats.
 */
export function seeded(firstSeed: number): { next(): number; rand(n: number, scale?: number): Float64Array } {
  let seed = firstSeed;
  return {
    next: () => seed++,
    rand: (n, scale = 1) => Float64Array.from(Float32Array.from(randn(n, seed++, scale))),
  };
}

export function t(data: ArrayLike<number>, shape: number[]): NativeTensor {
  return addon().tensor(Float32Array.from(data), shape);
}

export function i32(data: ArrayLike<number>, shape = [data.length]): NativeTensor {
  return addon().tensor(Int32Array.from(data), shape, 'i32');
}

/** An f32 tensor filled with `v` (NaN by default: rows that must not be read or written). */
export function filled(shape: number[], v = NaN): NativeTensor {
  return t(new Float64Array(shape.reduce((a, b) => a * b, 1)).fill(v), shape);
}

export function read(x: NativeTensor): Float64Array {
  return Float64Array.from(x.toArray());
}

export function readInt(x: NativeTensor): number[] {
  return Array.from(x.toArray());
}
