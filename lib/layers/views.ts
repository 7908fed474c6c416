// Cached views of scratch tensors. A forward pass takes the same column and row views of the
// same scratch buffers every time; creating them anew would allocate thousands of native
// wrapper objects per second of decoding or long-context evaluation, which the garbage
// collector frees late (they carry finalizers), so memory would creep with the length of a
// run. Views are kept per base tensor and die with it.
import type { NativeTensor } from '../native.js';

const cache = new WeakMap<NativeTensor, Map<string, NativeTensor>>();

function cached(base: NativeTensor, key: string, make: () => NativeTensor): NativeTensor {
  let views = cache.get(base);
  if (!views) cache.set(base, (views = new Map()));
  let v = views.get(key);
  if (!v || v.disposed) views.set(key, (v = make()));
  return v;
}

/** Columns [c0, c1) of a 2-D tensor. */
export function colsView(t: NativeTensor, c0: number, c1: number): NativeTensor {
  return cached(t, `c${c0}:${c1}`, () => t.cols(c0, c1));
}

/** Rows [r0, r1) of a 2-D tensor. */
export function rowsView(t: NativeTensor, r0: number, r1: number): NativeTensor {
  return cached(t, `r${r0}:${r1}`, () => t.rows(r0, r1));
}

/** The same memory with another shape (contiguous tensors only). */
export function reshapeView(t: NativeTensor, shape: number[]): NativeTensor {
  return cached(t, `s${shape.join(',')}`, () => t.reshape(shape));
}
