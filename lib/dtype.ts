// Element types and whole-array conversions between float32 and the 16-bit float formats.
// The bit-level rules match csrc/dtype.h so that a tensor converted in TypeScript and one
// converted natively are bit-identical: round to nearest even, NaN stays NaN, f16 overflow
// becomes +-Inf and tiny values become f16 subnormals or signed zero.

export type DTypeName = 'f32' | 'f16' | 'bf16' | 'i32';

export const DTYPE_NAMES: readonly DTypeName[] = ['f32', 'f16', 'bf16', 'i32'];

export const DTYPE_BYTES: Readonly<Record<DTypeName, number>> = { f32: 4, f16: 2, bf16: 2, i32: 4 };

export function isDTypeName(v: unknown): v is DTypeName {
  return typeof v === 'string' && (DTYPE_NAMES as readonly string[]).includes(v);
}

export function dtypeBytes(dtype: DTypeName): number {
  return DTYPE_BYTES[dtype];
}

/** Number of elements of a shape; the empty shape is a scalar with one element. */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// The typed arrays below reinterpret memory in the host byte order; checkpoints and the native
// code are little-endian, so a big-endian host would silently read garbage.
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function checkOut<T extends { length: number }>(out: T, n: number, what: string): T {
  if (out.length !== n) throw new RangeError(`${what}: output has ${out.length} elements, input ${n}`);
  return out;
}

// ---- bf16: the top 16 bits of a float32 ----

export function bf16ToF32(src: Uint16Array, out?: Float32Array): Float32Array {
  const dst = out ? checkOut(out, src.length, 'bf16ToF32') : new Float32Array(src.length);
  const d32 = u32View(dst);
  for (let i = 0; i < src.length; i++) d32[i] = src[i]! << 16;
  return dst;
}

export function f32ToBf16(src: Float32Array, out?: Uint16Array): Uint16Array {
  const dst = out ? checkOut(out, src.length, 'f32ToBf16') : new Uint16Array(src.length);
  const s32 = u32View(src);
  for (let i = 0; i < src.length; i++) {
    const u = s32[i]!;
    // NaN: keep sign and payload top bits, force the quiet bit so truncation cannot make it Inf.
    if ((u & 0x7fffffff) > 0x7f800000) dst[i] = (u >>> 16) | 0x40;
    // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even (JS numbers cannot overflow here).
    else dst[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
  return dst;
}

// ---- f16: IEEE binary16 ----

// All 65536 half values decoded once; decoding is then a table lookup.
let f16Table: Float32Array | null = null;

function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let man = h & 0x3ff;
  if (exp === 0) {
    if (man === 0) return sign >>> 0;
    // Subnormal: shift the mantissa up until its leading one reaches the implicit-bit position.
    let e = -1;
    do {
      man <<= 1;
      e++;
    } while ((man & 0x400) === 0);
    return (sign | ((127 - 15 - e) << 23) | ((man & 0x3ff) << 13)) >>> 0;
  }
  if (exp === 31) return (sign | 0x7f800000 | (man << 13)) >>> 0; // Inf or NaN (payload kept)
  return (sign | ((exp + 112) << 23) | (man << 13)) >>> 0;
}

function getF16Table(): Float32Array {
  if (!f16Table) {
    const t = new Float32Array(65536);
    const t32 = u32View(t);
    for (let h = 0; h < 65536; h++) t32[h] = f16BitsToF32Bits(h);
    f16Table = t;
  }
  return f16Table;
}

export function f16ToF32(src: Uint16Array, out?: Float32Array): Float32Array {
  const dst = out ? checkOut(out, src.length, 'f16ToF32') : new Float32Array(src.length);
  const table = getF16Table();
  // Copy through the bit view so NaN payloads survive (a float load/store may canonicalise them).
  const d32 = u32View(dst);
  const t32 = u32View(table);
  for (let i = 0; i < src.length; i++) d32[i] = t32[src[i]!]!;
  return dst;
}

function f32BitsToF16Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7e00; // NaN -> canonical quiet NaN
  if (a >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds past 65504 -> Inf
  if (a < 0x38800000) {
    // Below the smallest normal half (2^-14): result is subnormal or zero.
    if (a < 0x33000000) return sign; // <= 2^-25 (half the smallest subnormal) -> zero by round-to-even
    const man = (a & 0x7fffff) | 0x800000;
    const shift = 126 - (a >>> 23); // 14..24
    let half = man >>> shift;
    const rem = man & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1) !== 0)) half++;
    return sign | half;
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even.
  const r = a + 0xfff + ((a >>> 13) & 1) - 0x38000000;
  return sign | (r >>> 13);
}

export function f32ToF16(src: Float32Array, out?: Uint16Array): Uint16Array {
  const dst = out ? checkOut(out, src.length, 'f32ToF16') : new Uint16Array(src.length);
  const s32 = u32View(src);
  for (let i = 0; i < src.length; i++) dst[i] = f32BitsToF16Bits(s32[i]!);
  return dst;
}

// ---- single values (tests, debugging) ----

const scratchF = new Float32Array(1);
const scratchU = u32View(scratchF);

export function f32ToF16Bits(x: number): number {
  scratchF[0] = x;
  return f32BitsToF16Bits(scratchU[0]!);
}

export function f16BitsToF32(h: number): number {
  scratchU[0] = f16BitsToF32Bits(h & 0xffff);
  return scratchF[0]!;
}

export function f32ToBf16Bits(x: number): number {
  scratchF[0] = x;
  return f32ToBf16(scratchF)[0]!;
}

export function bf16BitsToF32(h: number): number {
  scratchU[0] = (h & 0xffff) << 16;
  return scratchF[0]!;
}

// ---- raw tensor bytes <-> float32 ----

/** A typed-array view of `bytes` when it is suitably aligned, otherwise an aligned copy. */
function alignedView<T>(
  bytes: Uint8Array,
  elemBytes: number,
  make: (buf: ArrayBufferLike, off: number, len: number) => T,
): T {
  if (bytes.byteLength % elemBytes !== 0) {
    throw new RangeError(`byte length ${bytes.byteLength} is not a multiple of the element size ${elemBytes}`);
  }
  const n = bytes.byteLength / elemBytes;
  if (bytes.byteOffset % elemBytes === 0) return make(bytes.buffer, bytes.byteOffset, n);
  return make(bytes.slice().buffer, 0, n);
}

/**
 * Decode raw little-endian tensor bytes of the given dtype into float32 values. f32 input is
 * returned as a view sharing memory with `bytes` when aligned (copy it before mutating);
 * i32 is converted by value.
 */
export function bytesToF32(dtype: DTypeName, bytes: Uint8Array): Float32Array {
  switch (dtype) {
    case 'f32':
      return alignedView(bytes, 4, (b, o, n) => new Float32Array(b, o, n));
    case 'f16':
      return f16ToF32(alignedView(bytes, 2, (b, o, n) => new Uint16Array(b, o, n)));
    case 'bf16':
      return bf16ToF32(alignedView(bytes, 2, (b, o, n) => new Uint16Array(b, o, n)));
    case 'i32':
      return Float32Array.from(alignedView(bytes, 4, (b, o, n) => new Int32Array(b, o, n)));
  }
}

/** Encode float32 values as the given dtype (i32 truncates toward zero). */
export function f32ToDType(dtype: DTypeName, src: Float32Array): Float32Array | Uint16Array | Int32Array {
  switch (dtype) {
    case 'f32':
      return src;
    case 'f16':
      return f32ToF16(src);
    case 'bf16':
      return f32ToBf16(src);
    case 'i32':
      return Int32Array.from(src, (v) => Math.trunc(v));
  }
}
