// Small seeded pseudo-random numbers for tests: mulberry32 for uniforms, Box-Muller for normals.
// Deterministic across platforms (only 32-bit integer ops and Math.log/sqrt/cos).

/** Returns a generator of uniform numbers in [0, 1) (mulberry32). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n uniform numbers in [lo, hi). */
export function randu(n: number, seed: number, lo = 0, hi = 1): Float64Array {
  const next = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * next();
  return out;
}

/** n standard normal numbers (mean 0, std 1), times `scale`. Box-Muller on mulberry32 uniforms. */
export function randn(n: number, seed: number, scale = 1): Float64Array {
  const next = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    // u1 in (0, 1] so that log(u1) is finite.
    const u1 = 1 - next();
    const u2 = next();
    const radius = Math.sqrt(-2 * Math.log(u1));
    out[i] = scale * radius * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = scale * radius * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** n integers uniform in [0, hi). */
export function randint(n: number, seed: number, hi: number): number[] {
  const next = mulberry32(seed);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(Math.floor(next() * hi));
  return out;
}
