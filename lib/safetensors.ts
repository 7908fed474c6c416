// Reader and writer for the safetensors format, written from the format description:
//   [8 bytes: little-endian u64 header length N][N bytes: JSON header][data area]
// The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets relative
// to the start of the data area) plus an optional "__metadata__" map of strings.
//
// Checkpoints can be several GB, more than one Buffer can hold, so the reader only parses the
// header on open and fetches each tensor with a positioned read when asked.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { type DTypeName, HOST_LITTLE_ENDIAN, bytesToF32, isDTypeName, shapeSize } from './dtype.js';

/** Largest header we accept; the reference implementation uses the same bound. */
export const MAX_HEADER_BYTES = 100_000_000;

// Every dtype name the format defines, with its element size, so that offsets of tensors we
// cannot decode are still validated. Only the first four can be read.
const FILE_DTYPE_BYTES: Readonly<Record<string, number>> = {
  F32: 4, F16: 2, BF16: 2, I32: 4,
  F64: 8, I64: 8, U64: 8, U32: 4, I16: 2, U16: 2, I8: 1, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
};
const FILE_TO_DTYPE: Readonly<Record<string, DTypeName>> = { F32: 'f32', F16: 'f16', BF16: 'bf16', I32: 'i32' };
const DTYPE_TO_FILE: Readonly<Record<DTypeName, string>> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32' };

// fs.read/write move at most 2 GiB - 1 per call; larger tensors go in pieces.
const IO_CHUNK = 1 << 30;

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

export interface TensorInfo {
  dtype: DTypeName;
  shape: number[];
  byteLength: number;
}

export interface Tensor {
  dtype: DTypeName;
  shape: number[];
  /** A fresh buffer starting at offset 0, so typed-array views over it are aligned. */
  bytes: Uint8Array;
}

/** What every checkpoint source (one file or a set of shards) offers. */
export interface TensorSource {
  readonly metadata: Record<string, string>;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): Tensor;
  readAsync(name: string): Promise<Tensor>;
  /** Read into caller-owned memory of exactly info(name).byteLength bytes (e.g. shared with native code). */
  readInto(name: string, dst: Uint8Array): TensorInfo;
  /** Where a tensor's bytes are, so native code can read them straight into its own memory. */
  locate(name: string): { file: string; offset: number };
  /** The tensor decoded to float32 whatever its stored dtype. */
  readF32(name: string): { shape: number[]; data: Float32Array };
  close(): void;
}

interface Entry {
  fileDtype: string; // as spelled in the file, e.g. "BF16" or "I64"
  shape: number[];
  begin: number; // absolute file offsets
  end: number;
}

const readP = promisify(fs.read);
const openP = promisify(fs.open);
const fstatP = promisify(fs.fstat);
const closeP = promisify(fs.close);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function readFully(fd: number, dst: Uint8Array, position: number): number {
  let done = 0;
  while (done < dst.byteLength) {
    const n = fs.readSync(fd, dst, done, Math.min(IO_CHUNK, dst.byteLength - done), position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

async function readFullyAsync(fd: number, dst: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < dst.byteLength) {
    const { bytesRead } = await readP(fd, dst, done, Math.min(IO_CHUNK, dst.byteLength - done), position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Check the 8-byte prefix against the file size and return the header length. */
function headerLength(file: string, prefix: Uint8Array, got: number, fileSize: number): number {
  if (fileSize < 8 || got < 8) {
    throw new SafetensorsError(`${file}: not a safetensors file: ${fileSize} bytes is shorter than the 8-byte header length`);
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(`${file}: header length ${n} is absurd (limit ${MAX_HEADER_BYTES} bytes): not a safetensors file or corrupt`);
  }
  if (8n + n > BigInt(fileSize)) {
    throw new SafetensorsError(`${file}: header length ${n} is larger than the file (${fileSize} bytes): truncated or not a safetensors file`);
  }
  return Number(n);
}

/** Parse and validate the JSON header; `dataStart` is the file offset of the data area. */
function parseHeader(
  file: string,
  headerBytes: Uint8Array,
  dataStart: number,
  fileSize: number,
): { entries: Map<string, Entry>; metadata: Record<string, string> } {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new SafetensorsError(`${file}: header is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) {
    throw new SafetensorsError(`${file}: header must be a JSON object, got ${Array.isArray(json) ? 'an array' : typeof json === 'object' ? 'null' : typeof json}`);
  }

  const metadata: Record<string, string> = {};
  const entries = new Map<string, Entry>();
  const dataSize = fileSize - dataStart;
  for (const [name, raw] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(raw)) throw new SafetensorsError(`${file}: "__metadata__" must be an object of strings`);
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== 'string') throw new SafetensorsError(`${file}: "__metadata__.${k}" must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    if (!isPlainObject(raw)) throw new SafetensorsError(`${where}: entry must be an object with dtype, shape and data_offsets`);
    const { dtype, shape, data_offsets: offs } = raw;
    if (typeof dtype !== 'string' || !Object.hasOwn(FILE_DTYPE_BYTES, dtype)) {
      throw new SafetensorsError(`${where}: unknown dtype ${JSON.stringify(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new SafetensorsError(`${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isCount)) {
      throw new SafetensorsError(`${where}: data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] end before begin`);
    const want = shapeSize(shape as number[]) * FILE_DTYPE_BYTES[dtype]!;
    if (end - begin !== want) {
      throw new SafetensorsError(
        `${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape ${JSON.stringify(shape)} of ${dtype} needs ${want}`,
      );
    }
    if (end > dataSize) {
      throw new SafetensorsError(
        `${where}: data_offsets [${begin}, ${end}] lie outside the data area (${dataSize} bytes): the file is truncated or corrupt`,
      );
    }
    entries.set(name, { fileDtype: dtype, shape: shape as number[], begin: dataStart + begin, end: dataStart + end });
  }

  // Overlapping tensors would alias each other's bytes: a corrupt or hostile file.
  const sorted = [...entries].filter(([, e]) => e.end > e.begin).sort((a, b) => a[1].begin - b[1].begin);
  for (let i = 1; i < sorted.length; i++) {
    const [prevName, prev] = sorted[i - 1]!;
    const [curName, cur] = sorted[i]!;
    if (cur.begin < prev.end) throw new SafetensorsError(`${file}: tensors "${prevName}" and "${curName}" overlap`);
  }
  return { entries, metadata };
}

export class SafetensorsFile implements TensorSource {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Total file size in bytes. */
  readonly size: number;
  private fd: number | null;
  private readonly entries: Map<string, Entry>;

  private constructor(file: string, fd: number, size: number, parsed: ReturnType<typeof parseHeader>) {
    this.path = file;
    this.fd = fd;
    this.size = size;
    this.entries = parsed.entries;
    this.metadata = parsed.metadata;
  }

  static open(file: string): SafetensorsFile {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const prefix = new Uint8Array(8);
      const n = headerLength(file, prefix, readFully(fd, prefix, 0), size);
      const header = new Uint8Array(n);
      readFully(fd, header, 8);
      return new SafetensorsFile(file, fd, size, parseHeader(file, header, 8 + n, size));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  static async openAsync(file: string): Promise<SafetensorsFile> {
    const fd = await openP(file, 'r');
    try {
      const { size } = await fstatP(fd);
      const prefix = new Uint8Array(8);
      const n = headerLength(file, prefix, await readFullyAsync(fd, prefix, 0), size);
      const header = new Uint8Array(n);
      await readFullyAsync(fd, header, 8);
      return new SafetensorsFile(file, fd, size, parseHeader(file, header, 8 + n, size));
    } catch (e) {
      await closeP(fd);
      throw e;
    }
  }

  /** Tensor names in the order of their data in the file. */
  names(): string[] {
    return [...this.entries].sort((a, b) => a[1].begin - b[1].begin).map(([n]) => n);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The dtype exactly as the file spells it ("F32", "I64", ...), including unreadable ones. */
  fileDtype(name: string): string {
    return this.entry(name).fileDtype;
  }

  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { dtype: this.dtypeOf(name, e), shape: [...e.shape], byteLength: e.end - e.begin };
  }

  read(name: string): Tensor {
    const { e, dtype, fd } = this.prepare(name);
    const bytes = new Uint8Array(e.end - e.begin);
    this.checkRead(name, readFully(fd, bytes, e.begin), bytes.byteLength);
    return { dtype, shape: [...e.shape], bytes };
  }

  async readAsync(name: string): Promise<Tensor> {
    const { e, dtype, fd } = this.prepare(name);
    const bytes = new Uint8Array(e.end - e.begin);
    this.checkRead(name, await readFullyAsync(fd, bytes, e.begin), bytes.byteLength);
    return { dtype, shape: [...e.shape], bytes };
  }

  readInto(name: string, dst: Uint8Array): TensorInfo {
    const { e, dtype, fd } = this.prepare(name);
    if (dst.byteLength !== e.end - e.begin) {
      throw new SafetensorsError(`${this.path}: tensor "${name}" has ${e.end - e.begin} bytes, destination ${dst.byteLength}`);
    }
    this.checkRead(name, readFully(fd, dst, e.begin), dst.byteLength);
    return { dtype, shape: [...e.shape], byteLength: dst.byteLength };
  }

  locate(name: string): { file: string; offset: number } {
    const e = this.entry(name);
    this.dtypeOf(name, e); // unsupported dtypes fail here, as they do on read
    return { file: this.path, offset: e.begin };
  }

  readF32(name: string): { shape: number[]; data: Float32Array } {
    const t = this.read(name);
    return { shape: t.shape, data: bytesToF32(t.dtype, t.bytes) };
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(`tensor "${name}" not found in ${this.path}`);
    return e;
  }

  private dtypeOf(name: string, e: Entry): DTypeName {
    const d = Object.hasOwn(FILE_TO_DTYPE, e.fileDtype) ? FILE_TO_DTYPE[e.fileDtype] : undefined;
    if (!d) {
      throw new SafetensorsError(
        `${this.path}: tensor "${name}" has dtype ${e.fileDtype}, which is not supported (supported: F32, F16, BF16, I32)`,
      );
    }
    return d;
  }

  private prepare(name: string): { e: Entry; dtype: DTypeName; fd: number } {
    if (this.fd === null) throw new SafetensorsError(`${this.path}: file is closed`);
    const e = this.entry(name);
    return { e, dtype: this.dtypeOf(name, e), fd: this.fd };
  }

  private checkRead(name: string, got: number, want: number): void {
    // The size was checked on open, so a short read means the file shrank underneath us.
    if (got !== want) throw new SafetensorsError(`${this.path}: tensor "${name}": short read (${got} of ${want} bytes); file truncated?`);
  }
}

// ---- writer ----

export interface TensorToWrite {
  name: string;
  dtype: DTypeName;
  shape: readonly number[];
  data: ArrayBufferView;
}

/**
 * Write a safetensors file. Tensors are laid out back to back in the given order (the format's
 * reference reader rejects gaps between tensors), after a header padded with spaces to a multiple
 * of 8 bytes so that the data area, and every tensor whose predecessors have sizes that are
 * multiples of 8, is 8-byte aligned. Each tensor is written straight from its own memory; the
 * file appears under its final name only once complete.
 */
export function writeSafetensors(file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  if (!HOST_LITTLE_ENDIAN) throw new SafetensorsError('writeSafetensors: big-endian hosts are not supported');
  // No prototype, so a tensor called "__proto__" is an ordinary key.
  const header = Object.create(null) as Record<string, unknown>;
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError(`${file}: metadata "${k}" must be a string`);
    }
    header['__metadata__'] = metadata;
  }
  let offset = 0;
  for (const t of tensors) {
    const where = `${file}: tensor "${t.name}"`;
    if (t.name === '' || t.name === '__metadata__') throw new SafetensorsError(`${file}: invalid tensor name ${JSON.stringify(t.name)}`);
    if (Object.hasOwn(header, t.name)) throw new SafetensorsError(`${where}: duplicate name`);
    if (!isDTypeName(t.dtype)) throw new SafetensorsError(`${where}: unsupported dtype ${JSON.stringify(t.dtype)}`);
    if (!t.shape.every(isCount)) throw new SafetensorsError(`${where}: shape ${JSON.stringify(t.shape)} must be non-negative integers`);
    const bytes = shapeSize(t.shape) * (FILE_DTYPE_BYTES[DTYPE_TO_FILE[t.dtype]] ?? 0);
    if (t.data.byteLength !== bytes) {
      throw new SafetensorsError(`${where}: data has ${t.data.byteLength} bytes but shape ${JSON.stringify(t.shape)} of ${t.dtype} needs ${bytes}`);
    }
    header[t.name] = { dtype: DTYPE_TO_FILE[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }

  let json = JSON.stringify(header);
  const jsonBytes = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (jsonBytes % 8)) % 8);
  const headerBuf = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBuf.byteLength));

  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = fs.openSync(tmp, 'w');
  try {
    writeFully(fd, prefix);
    writeFully(fd, headerBuf);
    for (const t of tensors) writeFully(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    fs.closeSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.renameSync(tmp, file);
}

function writeFully(fd: number, src: Uint8Array): void {
  let done = 0;
  while (done < src.byteLength) {
    done += fs.writeSync(fd, src, done, Math.min(IO_CHUNK, src.byteLength - done));
  }
}

// ---- checkpoint directories ----

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

/** Several safetensors files presented as one: each name lives in exactly one shard. */
export class ShardedCheckpoint implements TensorSource {
  readonly metadata: Record<string, string>;
  readonly files: readonly SafetensorsFile[];
  private readonly where: Map<string, SafetensorsFile>;
  private readonly label: string;

  constructor(label: string, files: SafetensorsFile[], where: Map<string, SafetensorsFile>, metadata: Record<string, string>) {
    this.label = label;
    this.files = files;
    this.where = where;
    this.metadata = metadata;
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  info(name: string): TensorInfo {
    return this.shard(name).info(name);
  }

  read(name: string): Tensor {
    return this.shard(name).read(name);
  }

  readAsync(name: string): Promise<Tensor> {
    return this.shard(name).readAsync(name);
  }

  locate(name: string): { file: string; offset: number } {
    return this.shard(name).locate(name);
  }

  readInto(name: string, dst: Uint8Array): TensorInfo {
    return this.shard(name).readInto(name, dst);
  }

  readF32(name: string): { shape: number[]; data: Float32Array } {
    return this.shard(name).readF32(name);
  }

  close(): void {
    for (const f of this.files) f.close();
  }

  private shard(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new SafetensorsError(`tensor "${name}" not found in ${this.label}`);
    return f;
  }
}

/** Open several files; close the ones already open if a later one fails. */
function openAll(paths: string[]): SafetensorsFile[] {
  const out: SafetensorsFile[] = [];
  try {
    for (const p of paths) out.push(SafetensorsFile.open(p));
  } catch (e) {
    for (const f of out) f.close();
    throw e;
  }
  return out;
}

function fromIndex(dir: string): ShardedCheckpoint {
  const indexPath = path.join(dir, INDEX_FILE);
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new SafetensorsError(`${indexPath}: cannot read the shard index: ${(e as Error).message}`);
  }
  const weightMap = isPlainObject(index) ? index['weight_map'] : undefined;
  if (!isPlainObject(weightMap)) throw new SafetensorsError(`${indexPath}: "weight_map" must be an object mapping tensor names to files`);
  const shardNames: string[] = [];
  for (const [name, f] of Object.entries(weightMap)) {
    if (typeof f !== 'string' || f === '' || path.isAbsolute(f) || f.split(/[\\/]/).includes('..')) {
      throw new SafetensorsError(`${indexPath}: weight_map entry "${name}" must be a file name inside the directory, got ${JSON.stringify(f)}`);
    }
    if (!shardNames.includes(f)) shardNames.push(f);
  }
  for (const f of shardNames) {
    if (!fs.existsSync(path.join(dir, f))) throw new SafetensorsError(`${indexPath}: shard "${f}" is listed but missing from ${dir}`);
  }
  const files = openAll(shardNames.map((f) => path.join(dir, f)));
  const byName = new Map(shardNames.map((f, i) => [f, files[i]!] as const));
  const where = new Map<string, SafetensorsFile>();
  for (const [name, f] of Object.entries(weightMap)) {
    const shard = byName.get(f as string)!;
    if (!shard.has(name)) {
      for (const s of files) s.close();
      throw new SafetensorsError(`${indexPath}: tensor "${name}" is mapped to "${f as string}" but that shard does not contain it`);
    }
    where.set(name, shard);
  }
  // Shard-level metadata (e.g. {"format": "pt"}) merged, then the index's own string metadata.
  const metadata: Record<string, string> = {};
  for (const f of files) Object.assign(metadata, f.metadata);
  const indexMeta = isPlainObject(index) ? index['metadata'] : undefined;
  if (isPlainObject(indexMeta)) {
    for (const [k, v] of Object.entries(indexMeta)) if (typeof v === 'string' || typeof v === 'number') metadata[k] = String(v);
  }
  return new ShardedCheckpoint(dir, files, where, metadata);
}

/** Merge unindexed *.safetensors files of a directory; a name in two files is ambiguous. */
function fromFiles(dir: string, names: string[]): ShardedCheckpoint {
  const files = openAll(names.map((f) => path.join(dir, f)));
  const where = new Map<string, SafetensorsFile>();
  const metadata: Record<string, string> = {};
  for (const f of files) {
    Object.assign(metadata, f.metadata);
    for (const n of f.names()) {
      const prev = where.get(n);
      if (prev) {
        for (const s of files) s.close();
        throw new SafetensorsError(`${dir}: tensor "${n}" appears in both ${prev.path} and ${f.path}; add a ${INDEX_FILE} to say which to use`);
      }
      where.set(n, f);
    }
  }
  return new ShardedCheckpoint(dir, files, where, metadata);
}

/**
 * Open a model's weights: a directory holding model.safetensors, or shards listed by
 * model.safetensors.index.json, or other *.safetensors files; a path to a single .safetensors
 * file also works. Only headers are read here.
 */
export function openCheckpoint(dirOrFile: string): TensorSource {
  let st: fs.Stats;
  try {
    st = fs.statSync(dirOrFile);
  } catch {
    throw new SafetensorsError(`checkpoint ${dirOrFile} does not exist`);
  }
  if (st.isFile()) return SafetensorsFile.open(dirOrFile);

  const dir = dirOrFile;
  if (fs.existsSync(path.join(dir, INDEX_FILE))) return fromIndex(dir);
  if (fs.existsSync(path.join(dir, SINGLE_FILE))) return SafetensorsFile.open(path.join(dir, SINGLE_FILE));
  const listing = fs.readdirSync(dir).sort();
  const shards = listing.filter((f) => f.endsWith('.safetensors'));
  if (shards.length === 1) return SafetensorsFile.open(path.join(dir, shards[0]!));
  if (shards.length > 1) return fromFiles(dir, shards);

  const pickle = listing.filter((f) => /\.(bin|pt|pth|ckpt)$/.test(f));
  const hint = pickle.length
    ? ` It holds ${pickle.join(', ')}: PyTorch pickle checkpoints (pytorch_model.bin) are not supported; ` +
      `convert them to safetensors first (for example with the safetensors Python package: ` +
      `save_file(torch.load(path), "model.safetensors"), making shared tensors contiguous copies).`
    : ' (pytorch_model.bin checkpoints are not supported and must be converted to safetensors.)';
  throw new SafetensorsError(`${dir}: no safetensors checkpoint found (looked for ${SINGLE_FILE}, ${INDEX_FILE} and *.safetensors).${hint}`);
}
