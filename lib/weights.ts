// Loading checkpoint tensors into native tensors, with the shape checks that turn a wrong
// or incomplete checkpoint into an error naming the tensor.
import type { DTypeName } from './dtype.js';
import { addon, type DeviceName, type NativeTensor } from './native.js';
import { openCheckpoint, type TensorSource } from './safetensors.js';

/** How large matrices are stored after loading: as in the file, or converted. */
export type WeightDType = 'auto' | 'f32' | 'f16' | 'bf16';

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

/**
 * The CUDA backend's matrix kernels take bf16 weights (MODEL.md section 10), so on CUDA 'auto'
 * means bf16 and a request for f32 or f16 matrices is refused. The CPU takes any of the three.
 */
function checkMatrixDtype(device: DeviceName, dtype: WeightDType): void {
  if (device === 'cuda' && (dtype === 'f32' || dtype === 'f16')) {
    throw new Error(`weightDtype '${dtype}' is not supported on the CUDA backend: its matrix kernels take bf16 weights; use 'bf16' or 'auto'`);
  }
}

export class WeightLoader {
  constructor(
    readonly source: TensorSource,
    readonly device: DeviceName,
    readonly matrixDtype: WeightDType = 'auto',
    readonly label = 'checkpoint',
  ) {
    checkMatrixDtype(device, matrixDtype);
  }

  static open(dir: string, device: DeviceName, matrixDtype: WeightDType = 'auto'): WeightLoader {
    checkMatrixDtype(device, matrixDtype); // before the checkpoint is opened
    return new WeightLoader(openCheckpoint(dir), device, matrixDtype, dir);
  }

  has(name: string): boolean {
    return this.source.has(name);
  }

  /** A large matrix (projection, embedding): kept in its file dtype unless converted (always bf16 on CUDA). */
  matrix(name: string, shape: number[]): NativeTensor {
    const auto = (file: DTypeName): DTypeName => (this.device === 'cuda' ? 'bf16' : file);
    return this.load(name, shape, (file) => (this.matrixDtype === 'auto' ? auto(file) : this.matrixDtype));
  }

  /** A small vector or filter (norm weight, conv, A_log, ...): always fp32. */
  vector(name: string, shape: number[]): NativeTensor {
    return this.load(name, shape, () => 'f32');
  }

  /** The first of several accepted names that the checkpoint has. */
  pick(...names: string[]): string {
    const found = names.find((n) => this.source.has(n));
    if (!found) throw new CheckpointError(`${this.label}: missing tensor ${names.join(' (or ')}${names.length > 1 ? ')' : ''}`);
    return found;
  }

  close(): void {
    this.source.close();
  }

  /**
   * Load a group of tensors (one layer's weights) as a unit: if any load in `fn` throws, the
   * tensors it already loaded are disposed before the error propagates.
   */
  allOrNothing<T>(fn: () => T): T {
    const outer = this.loaded;
    const mine: NativeTensor[] = [];
    this.loaded = mine;
    try {
      return fn();
    } catch (e) {
      for (const t of mine) t.dispose();
      throw e;
    } finally {
      this.loaded = outer;
      outer?.push(...mine);
    }
  }

  /** Tensors loaded inside the innermost allOrNothing(), if any. */
  private loaded: NativeTensor[] | null = null;

  private load(name: string, shape: number[], target: (file: DTypeName) => DTypeName): NativeTensor {
    if (!this.source.has(name)) throw new CheckpointError(`${this.label}: missing tensor ${name}`);
    const info = this.source.info(name);
    const want = shape.reduce((a, b) => a * b, 1);
    const got = info.shape.reduce((a, b) => a * b, 1);
    // Leading or trailing 1-sized dims may differ (conv1d.weight is [C, 1, K] on disk).
    if (got !== want || !sameIgnoringOnes(info.shape, shape)) {
      throw new CheckpointError(`${this.label}: tensor ${name} has shape [${info.shape.join(', ')}], but the config needs [${shape.join(', ')}]`);
    }
    if (info.dtype === 'i32') throw new CheckpointError(`${this.label}: tensor ${name} is i32, expected a float dtype`);
    const loc = this.source.locate(name);
    const t = addon().fromFile(loc.file, loc.offset, info.dtype, shape, target(info.dtype), this.device);
    this.loaded?.push(t);
    return t;
  }
}

function sameIgnoringOnes(a: number[], b: number[]): boolean {
  const x = a.filter((d) => d !== 1);
  const y = b.filter((d) => d !== 1);
  return x.length === y.length && x.every((d, i) => d === y[i]);
}
