// The case shape shared by the attention + kv_append op suites (the CPU paths in
// transformer.test.ts, CUDA vs CPU in cuda.test.ts); each suite adds its own layout options.

/**
 * One chunk for attention then kv_append: B sequences of L new tokens each, Hq query heads of
 * head_dim hd sharing Hkv key/value heads, over KV caches that already hold starts[b] rows.
 */
export interface AttentionChunk {
  B: number;
  L: number;
  Hq: number;
  Hkv: number;
  hd: number;
  starts: number[];
}

/** The chunk's rows (M = B * L) and the widths of q (HQ = Hq * hd) and of k and v (HKV = Hkv * hd). */
export function chunkWidths(c: AttentionChunk): { M: number; HQ: number; HKV: number } {
  return { M: c.B * c.L, HQ: c.Hq * c.hd, HKV: c.Hkv * c.hd };
}
