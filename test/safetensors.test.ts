import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bf16BitsToF32,
  bf16ToF32,
  bytesToF32,
  f16BitsToF32,
  f16ToF32,
  f32ToBf16,
  f32ToBf16Bits,
  f32ToF16,
  f32ToF16Bits,
  type DTypeName,
} from '../lib/dtype.js';
import { SafetensorsError, SafetensorsFile, openCheckpoint, writeSafetensors, type TensorToWrite } from '../lib/safetensors.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'taipan-st-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let counter = 0;
/** A fresh path (or directory) inside the temp dir. */
function fresh(name = 'x.safetensors'): string {
  const dir = path.join(tmp, `case${counter++}`);
  fs.mkdirSync(dir);
  return path.join(dir, name);
}

/** Write a file from an explicit header length, header text and data bytes. */
function writeRaw(file: string, header: string, data: Uint8Array = new Uint8Array(0), headerLen?: number | bigint): string {
  const h = Buffer.from(header, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerLen ?? h.byteLength));
  fs.writeFileSync(file, Buffer.concat([prefix, h, data]));
  return file;
}

function expectOpenError(file: string, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try {
    SafetensorsFile.open(file).close();
  } catch (e) {
    err = e;
  }
  expect(err, 'open should have failed').toBeInstanceOf(SafetensorsError);
  const msg = (err as Error).message;
  expect(msg).toContain(file);
  for (const p of parts) {
    if (typeof p === 'string') expect(msg).toContain(p);
    else expect(msg).toMatch(p);
  }
}

// ---------------------------------------------------------------------------------------------
describe('dtype conversions', () => {
  const f16 = (x: number) => f32ToF16Bits(x);
  const bf16 = (x: number) => f32ToBf16Bits(x);

  it('f32 -> f16 known bit patterns', () => {
    expect(f16(1.0)).toBe(0x3c00);
    expect(f16(-2.5)).toBe(0xc100);
    expect(f16(65504)).toBe(0x7bff); // largest finite half
    expect(f16(0)).toBe(0x0000);
    expect(f16(-0)).toBe(0x8000);
    expect(f16(2 ** -14)).toBe(0x0400); // smallest normal
    expect(f16(6e-8)).toBe(0x0001); // nearest is the smallest subnormal 2^-24 ~ 5.96e-8
    expect(f16(2 ** -24)).toBe(0x0001);
    expect(f16(1023 * 2 ** -24)).toBe(0x03ff); // largest subnormal
    expect(f16(Infinity)).toBe(0x7c00);
    expect(f16(-Infinity)).toBe(0xfc00);
    expect(f16(1e6)).toBe(0x7c00); // overflow
    expect(f16(NaN) & 0x7fff).toBe(0x7e00);
  });

  it('f32 -> f16 rounds to nearest, ties to even', () => {
    expect(f16(1 + 2 ** -11)).toBe(0x3c00); // tie between 0x3c00 and 0x3c01 -> even
    expect(f16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie between 0x3c01 and 0x3c02 -> even
    expect(f16(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above the tie
    expect(f16(2049)).toBe(0x6800); // spacing 2 here: tie -> 2048
    expect(f16(2051)).toBe(0x6802); // tie -> 2052
    expect(f16(65519)).toBe(0x7bff);
    expect(f16(65520)).toBe(0x7c00); // tie between 65504 and 65536 -> even, which is Inf
    expect(f16(2 ** -25)).toBe(0x0000); // half the smallest subnormal: tie -> 0
    expect(f16(1.5 * 2 ** -25)).toBe(0x0001);
    expect(f16(3 * 2 ** -25)).toBe(0x0002); // subnormal tie between 1 and 2 -> 2
    expect(f16(5 * 2 ** -25)).toBe(0x0002); // subnormal tie between 2 and 3 -> 2
  });

  it('f16 -> f32 known values', () => {
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0xc100)).toBe(-2.5);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16BitsToF32(0x8000)).toBe(-0);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(f16BitsToF32(0xfc00)).toBe(-Infinity);
    expect(f16BitsToF32(0x7e00)).toBeNaN();
    expect(f16BitsToF32(0x7c01)).toBeNaN();
  });

  it('every non-NaN half survives f16 -> f32 -> f16 exactly', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToF16(f16ToF32(all));
    for (let h = 0; h < 65536; h++) {
      const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNaN) expect((back[h]! & 0x7c00) === 0x7c00 && (back[h]! & 0x3ff) !== 0).toBe(true);
      else if (back[h] !== h) expect.fail(`half 0x${h.toString(16)} came back as 0x${back[h]!.toString(16)}`);
    }
  });

  it('f32 -> bf16 known bit patterns and ties', () => {
    expect(bf16(1.0)).toBe(0x3f80);
    expect(bf16(-2.5)).toBe(0xc020);
    expect(bf16(65504)).toBe(0x4780); // rounds up to 65536
    expect(bf16(Infinity)).toBe(0x7f80);
    expect(bf16(-Infinity)).toBe(0xff80);
    expect(bf16(NaN) & 0x7fc0).toBe(0x7fc0);
    expect(bf16(1 + 2 ** -8)).toBe(0x3f80); // tie -> even
    expect(bf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie -> even
    expect(bf16(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(bf16(3.4028234663852886e38)).toBe(0x7f80); // max f32 rounds to Inf
    expect(bf16(6e-8)).toBe(0x3381); // normal in bf16: 6e-8 = 0x3380d959 -> rounds up
  });

  it('bf16 NaN with a low payload stays NaN (plain truncation would give Inf)', () => {
    const src = new Float32Array(new Uint32Array([0x7f800001, 0xff800001]).buffer);
    const out = f32ToBf16(src);
    expect(bf16BitsToF32(out[0]!)).toBeNaN();
    expect(bf16BitsToF32(out[1]!)).toBeNaN();
  });

  it('bf16 -> f32 and whole-array round trip', () => {
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(bf16BitsToF32(0xc020)).toBe(-2.5);
    expect(bf16BitsToF32(0xff80)).toBe(-Infinity);
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToBf16(bf16ToF32(all));
    for (let h = 0; h < 65536; h++) {
      const isNaN = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
      if (!isNaN && back[h] !== h) expect.fail(`bf16 0x${h.toString(16)} came back as 0x${back[h]!.toString(16)}`);
    }
  });

  it('bytesToF32 decodes each dtype, including unaligned input', () => {
    const vals = new Float32Array([1, -2.5, 0.5, 3]);
    const f16b = new Uint8Array(f32ToF16(vals).buffer);
    const bf16b = new Uint8Array(f32ToBf16(vals).buffer);
    const i32b = new Uint8Array(new Int32Array([1, -2, 0, 3]).buffer);
    expect([...bytesToF32('f32', new Uint8Array(vals.buffer))]).toEqual([1, -2.5, 0.5, 3]);
    expect([...bytesToF32('f16', f16b)]).toEqual([1, -2.5, 0.5, 3]);
    expect([...bytesToF32('bf16', bf16b)]).toEqual([1, -2.5, 0.5, 3]);
    expect([...bytesToF32('i32', i32b)]).toEqual([1, -2, 0, 3]);
    const odd = new Uint8Array(17);
    odd.set(new Uint8Array(vals.buffer), 1);
    expect([...bytesToF32('f32', odd.subarray(1))]).toEqual([1, -2.5, 0.5, 3]);
  });
});

// ---------------------------------------------------------------------------------------------
describe('safetensors round trip', () => {
  function sample(dtype: DTypeName, shape: number[]): TensorToWrite {
    const n = shape.reduce((a, b) => a * b, 1);
    const f = Float32Array.from({ length: n }, (_, i) => (i % 7) - 3 + 0.5 * (i % 2));
    const data =
      dtype === 'f32' ? f : dtype === 'f16' ? f32ToF16(f) : dtype === 'bf16' ? f32ToBf16(f) : Int32Array.from(f, (v) => Math.trunc(v) * 1000);
    return { name: `t.${dtype}.${shape.join('x') || 'scalar'}`, dtype, shape, data };
  }

  const dtypes: DTypeName[] = ['f32', 'f16', 'bf16', 'i32'];
  const shapes = [[2, 3], [], [0], [4, 0, 2], [5], [1, 1, 3]];
  const tensors = dtypes.flatMap((d) => shapes.map((s) => sample(d, s)));
  const bytesOf = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

  it('writes and reads back every dtype, empty and scalar shapes, with metadata', async () => {
    const file = fresh();
    writeSafetensors(file, tensors, { format: 'pt', note: 'héllo' });
    expect(fs.readdirSync(path.dirname(file))).toEqual(['x.safetensors']); // no temp file left

    const st = SafetensorsFile.open(file);
    expect(st.metadata).toEqual({ format: 'pt', note: 'héllo' });
    expect(st.names()).toEqual(tensors.map((t) => t.name)); // file order = given order
    for (const t of tensors) {
      const info = st.info(t.name);
      expect(info).toEqual({ dtype: t.dtype, shape: t.shape, byteLength: t.data.byteLength });
      const r = st.read(t.name);
      expect(r.dtype).toBe(t.dtype);
      expect(r.shape).toEqual(t.shape);
      expect(r.bytes.byteOffset).toBe(0);
      expect(Buffer.from(r.bytes).equals(Buffer.from(bytesOf(t.data)))).toBe(true);
      const ra = await st.readAsync(t.name);
      expect(Buffer.from(ra.bytes).equals(Buffer.from(r.bytes))).toBe(true);
    }
    const scalar = st.readF32('t.f32.scalar');
    expect(scalar.shape).toEqual([]);
    expect([...scalar.data]).toEqual([-3]);
    expect([...st.readF32('t.bf16.5').data]).toEqual([-3, -1.5, -1, 0.5, 1]);
    st.close();
    st.close(); // idempotent
    expect(() => st.read('t.f32.5')).toThrow(/closed/);
  });

  it('lays the file out as the format requires', () => {
    const file = fresh();
    writeSafetensors(file, tensors.slice(0, 8));
    const buf = fs.readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    expect(n % 8).toBe(0); // header padded so the data area is 8-byte aligned
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
    expect(header['__metadata__']).toBeUndefined();
    // Tensors back to back from offset 0, exactly filling the data area (the reference reader requires it).
    let end = 0;
    for (const t of tensors.slice(0, 8)) {
      expect(header[t.name]!.data_offsets).toEqual([end, end + t.data.byteLength]);
      end += t.data.byteLength;
    }
    expect(buf.byteLength).toBe(8 + n + end);
  });

  it('opens asynchronously and reads into caller memory', async () => {
    const file = fresh();
    writeSafetensors(file, [sample('f32', [3, 2])]);
    const st = await SafetensorsFile.openAsync(file);
    const dst = new Uint8Array(24);
    expect(st.readInto('t.f32.3x2', dst)).toEqual({ dtype: 'f32', shape: [3, 2], byteLength: 24 });
    expect([...new Float32Array(dst.buffer)]).toEqual([...(sample('f32', [3, 2]).data as Float32Array)]);
    expect(() => st.readInto('t.f32.3x2', new Uint8Array(8))).toThrow(/24 bytes/);
    st.close();
    await expect(SafetensorsFile.openAsync(writeRaw(fresh(), 'nope'))).rejects.toThrow(/not valid JSON/);
  });

  it('rejects bad input to the writer', () => {
    const file = fresh();
    const ok = sample('f32', [2]);
    expect(() => writeSafetensors(file, [{ ...ok, shape: [3] }])).toThrow(/8 bytes but shape \[3\] of f32 needs 12/);
    expect(() => writeSafetensors(file, [ok, ok])).toThrow(/duplicate/);
    expect(() => writeSafetensors(file, [{ ...ok, name: '__metadata__' }])).toThrow(/invalid tensor name/);
    expect(() => writeSafetensors(file, [{ ...ok, shape: [-2] }])).toThrow(/non-negative integers/);
    expect(fs.existsSync(file)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
describe('safetensors validation', () => {
  const f32x2 = (begin: number, end: number) => ({ dtype: 'F32', shape: [2], data_offsets: [begin, end] });

  it('file shorter than 8 bytes', () => {
    const file = fresh();
    fs.writeFileSync(file, Buffer.from([1, 2, 3]));
    expectOpenError(file, '3 bytes', 'shorter than the 8-byte header length');
  });

  it('header length larger than the file', () => {
    expectOpenError(writeRaw(fresh(), '{}', undefined, 1000), 'header length 1000 is larger than the file (10 bytes)');
  });

  it('absurd header length', () => {
    expectOpenError(writeRaw(fresh(), '{}', undefined, 2n ** 40n), 'is absurd');
    expectOpenError(writeRaw(fresh(), '{}', undefined, 2n ** 64n - 1n), 'is absurd');
  });

  it('header that is not JSON or not an object', () => {
    expectOpenError(writeRaw(fresh(), '{"a": '), 'header is not valid JSON');
    expectOpenError(writeRaw(fresh(), '[1, 2]'), 'header must be a JSON object, got an array');
    expectOpenError(writeRaw(fresh(), 'null'), 'header must be a JSON object, got null');
    expectOpenError(writeRaw(fresh(), '42'), 'header must be a JSON object, got number');
    expectOpenError(writeRaw(fresh(), '{"t": 5}'), 'tensor "t"', 'entry must be an object');
  });

  it('bad __metadata__', () => {
    expectOpenError(writeRaw(fresh(), '{"__metadata__": {"a": 1}}'), '"__metadata__.a" must be a string');
    expectOpenError(writeRaw(fresh(), '{"__metadata__": [1]}'), '"__metadata__" must be an object');
  });

  it('unknown dtype', () => {
    const h = JSON.stringify({ t: { dtype: 'F99', shape: [1], data_offsets: [0, 4] } });
    expectOpenError(writeRaw(fresh(), h, new Uint8Array(4)), 'tensor "t"', 'unknown dtype "F99"');
  });

  it('dtype names that only exist on Object.prototype are unknown too', () => {
    const h = JSON.stringify({ t: { dtype: 'toString', shape: [1], data_offsets: [0, 4] } });
    expectOpenError(writeRaw(fresh(), h, new Uint8Array(4)), 'unknown dtype "toString"');
  });

  it('a tensor named __proto__ round trips', () => {
    const file = fresh();
    writeSafetensors(file, [{ name: '__proto__', dtype: 'f32', shape: [1], data: new Float32Array([2]) }]);
    const st = SafetensorsFile.open(file);
    expect(st.names()).toEqual(['__proto__']);
    expect([...st.readF32('__proto__').data]).toEqual([2]);
    st.close();
  });

  it('shape entries that are not non-negative integers', () => {
    for (const shape of [[-1], [1.5], ['2'], 'abc', [null]]) {
      const h = JSON.stringify({ t: { dtype: 'F32', shape, data_offsets: [0, 0] } });
      expectOpenError(writeRaw(fresh(), h), 'tensor "t"', 'shape must be an array of non-negative integers');
    }
  });

  it('data_offsets that are not [begin, end] integers', () => {
    for (const offs of [[0], [0, '8'], [-1, 7], [0, 8, 16], 'x', [0.5, 8.5]]) {
      const h = JSON.stringify({ t: { dtype: 'F32', shape: [2], data_offsets: offs } });
      expectOpenError(writeRaw(fresh(), h, new Uint8Array(16)), 'tensor "t"', 'data_offsets must be [begin, end]');
    }
    const h = JSON.stringify({ t: f32x2(8, 0) });
    expectOpenError(writeRaw(fresh(), h, new Uint8Array(16)), 'end before begin');
  });

  it('byte count that does not match shape and dtype', () => {
    const h = JSON.stringify({ t: { dtype: 'BF16', shape: [2, 3], data_offsets: [0, 8] } });
    expectOpenError(writeRaw(fresh(), h, new Uint8Array(16)), 'tensor "t"', 'hold 8 bytes but shape [2,3] of BF16 needs 12');
  });

  it('offsets outside the data area / truncated file', () => {
    const h = JSON.stringify({ a: f32x2(0, 8), b: f32x2(8, 16) });
    expectOpenError(writeRaw(fresh(), h, new Uint8Array(12)), 'tensor "b"', 'outside the data area (12 bytes)', 'truncated');
    const far = JSON.stringify({ a: f32x2(1000, 1008) });
    expectOpenError(writeRaw(fresh(), far, new Uint8Array(8)), 'tensor "a"', 'outside the data area');
  });

  it('overlapping tensors', () => {
    const h = JSON.stringify({ a: f32x2(0, 8), b: f32x2(4, 12) });
    expectOpenError(writeRaw(fresh(), h, new Uint8Array(16)), 'tensors "a" and "b" overlap');
  });

  it('zero-size tensors may share an offset', () => {
    const h = JSON.stringify({ a: { dtype: 'F32', shape: [0], data_offsets: [0, 0] }, b: f32x2(0, 8), c: { dtype: 'F16', shape: [3, 0], data_offsets: [4, 4] } });
    const st = SafetensorsFile.open(writeRaw(fresh(), h, new Uint8Array(8)));
    expect(st.read('c').bytes.byteLength).toBe(0);
    st.close();
  });

  it('missing tensor by name', () => {
    const file = fresh();
    writeSafetensors(file, [{ name: 'a', dtype: 'f32', shape: [1], data: new Float32Array(1) }]);
    const st = SafetensorsFile.open(file);
    expect(st.has('a')).toBe(true);
    expect(st.has('nope')).toBe(false);
    expect(() => st.read('nope')).toThrow(`tensor "nope" not found in ${file}`);
    expect(() => st.info('nope')).toThrow(`tensor "nope" not found in ${file}`);
    st.close();
  });

  it('reads tensors beyond 4 GiB into a sparse file with positioned reads', () => {
    // A 5 GB U8 tensor we never read, then a small one past it; the file is sparse, so cheap.
    const big = 5_000_000_000;
    const h = JSON.stringify({ big: { dtype: 'U8', shape: [big], data_offsets: [0, big] }, tail: f32x2(big, big + 8) });
    const file = writeRaw(fresh(), h);
    const dataStart = 8 + Buffer.byteLength(h);
    fs.truncateSync(file, dataStart + big + 8);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, new Uint8Array(new Float32Array([1.25, -7]).buffer), 0, 8, dataStart + big);
    fs.closeSync(fd);
    const st = SafetensorsFile.open(file);
    expect(st.size).toBe(dataStart + big + 8);
    expect([...st.readF32('tail').data]).toEqual([1.25, -7]);
    expect(st.fileDtype('big')).toBe('U8');
    st.close();
  });

  it('dtypes we cannot decode open fine and fail only when requested', () => {
    const h = JSON.stringify({
      d: { dtype: 'F64', shape: [1], data_offsets: [0, 8] },
      l: { dtype: 'I64', shape: [1], data_offsets: [8, 16] },
      b: { dtype: 'I8', shape: [2], data_offsets: [16, 18] },
      u: { dtype: 'U8', shape: [2], data_offsets: [18, 20] },
      f: { dtype: 'F32', shape: [1], data_offsets: [20, 24] },
    });
    const data = new Uint8Array(24);
    new DataView(data.buffer).setFloat32(20, 7.5, true);
    const file = writeRaw(fresh(), h, data);
    const st = SafetensorsFile.open(file);
    expect(st.names()).toEqual(['d', 'l', 'b', 'u', 'f']);
    expect(st.fileDtype('l')).toBe('I64');
    for (const [name, dt] of [['d', 'F64'], ['l', 'I64'], ['b', 'I8'], ['u', 'U8']] as const) {
      expect(() => st.read(name)).toThrow(`${file}: tensor "${name}" has dtype ${dt}, which is not supported`);
      expect(() => st.info(name)).toThrow(/not supported/);
    }
    expect([...st.readF32('f').data]).toEqual([7.5]);
    st.close();
  });
});

// ---------------------------------------------------------------------------------------------
describe('checkpoint directories', () => {
  const t = (name: string, vals: number[]): TensorToWrite => ({ name, dtype: 'f32', shape: [vals.length], data: new Float32Array(vals) });

  function shardedDir(): string {
    const dir = path.dirname(fresh());
    writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [t('a', [1, 2]), t('b', [3])], { format: 'pt' });
    writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [{ name: 'c', dtype: 'bf16', shape: [2], data: f32ToBf16(new Float32Array([4, 5])) }]);
    fs.writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({
        metadata: { total_size: 16 },
        weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' },
      }),
    );
    return dir;
  }

  it('reads a sharded directory through the index', async () => {
    const ck = openCheckpoint(shardedDir());
    expect(ck.names().sort()).toEqual(['a', 'b', 'c']);
    expect(ck.info('c')).toEqual({ dtype: 'bf16', shape: [2], byteLength: 4 });
    expect([...ck.readF32('a').data]).toEqual([1, 2]);
    expect([...ck.readF32('c').data]).toEqual([4, 5]);
    expect((await ck.readAsync('b')).shape).toEqual([1]);
    expect(ck.metadata).toEqual({ format: 'pt', total_size: '16' });
    expect(() => ck.read('zz')).toThrow(/tensor "zz" not found in/);
    ck.close();
  });

  it('reads a single model.safetensors, or a path to a file', () => {
    const file = fresh('model.safetensors');
    writeSafetensors(file, [t('w', [9])]);
    for (const src of [path.dirname(file), file]) {
      const ck = openCheckpoint(src);
      expect(ck.names()).toEqual(['w']);
      expect([...ck.readF32('w').data]).toEqual([9]);
      ck.close();
    }
  });

  it('merges unindexed shards and rejects a name in two of them', () => {
    const dir = path.dirname(fresh());
    writeSafetensors(path.join(dir, 'part1.safetensors'), [t('a', [1])]);
    writeSafetensors(path.join(dir, 'part2.safetensors'), [t('b', [2])]);
    const ck = openCheckpoint(dir);
    expect(ck.names().sort()).toEqual(['a', 'b']);
    ck.close();
    writeSafetensors(path.join(dir, 'part3.safetensors'), [t('a', [3])]);
    expect(() => openCheckpoint(dir)).toThrow(/tensor "a" appears in both/);
  });

  it('index errors: missing shard, tensor absent from its shard, bad weight_map', () => {
    const dir = shardedDir();
    const idx = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(idx, JSON.stringify({ weight_map: { a: 'model-00001-of-00002.safetensors', c: 'gone.safetensors' } }));
    expect(() => openCheckpoint(dir)).toThrow(/shard "gone.safetensors" is listed but missing/);
    fs.writeFileSync(idx, JSON.stringify({ weight_map: { c: 'model-00001-of-00002.safetensors' } }));
    expect(() => openCheckpoint(dir)).toThrow(/tensor "c" is mapped to "model-00001-of-00002.safetensors" but that shard does not contain it/);
    fs.writeFileSync(idx, JSON.stringify({ weights: {} }));
    expect(() => openCheckpoint(dir)).toThrow(/"weight_map" must be an object/);
    fs.writeFileSync(idx, JSON.stringify({ weight_map: { a: '../escape.safetensors' } }));
    expect(() => openCheckpoint(dir)).toThrow(/must be a file name inside the directory/);
    fs.writeFileSync(idx, '{oops');
    expect(() => openCheckpoint(dir)).toThrow(/cannot read the shard index/);
  });

  it('explains what to do with a PyTorch checkpoint or an empty directory', () => {
    const dir = path.dirname(fresh());
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'PK');
    fs.writeFileSync(path.join(dir, 'config.json'), '{}');
    expect(() => openCheckpoint(dir)).toThrow(/no safetensors checkpoint found.*pytorch_model\.bin.*not supported.*convert/s);
    const empty = path.dirname(fresh());
    expect(() => openCheckpoint(empty)).toThrow(/no safetensors checkpoint found.*pytorch_model\.bin checkpoints are not supported/s);
    expect(() => openCheckpoint(path.join(empty, 'nope'))).toThrow(/does not exist/);
  });
});
