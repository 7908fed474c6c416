// Typed wrappers over the native ops. Each call validates its arguments natively (a bad
// shape throws a TypeError naming the op and argument) and enqueues the work on the stream;
// nothing runs until `await ops.sync()`. The math lives in the kernels (csrc/, cuda/).
import { addon, type DeviceName, type NativeStream, type NativeTensor } from './native.js';

type T = NativeTensor;
/** A recurrent state: one tensor for the whole batch, or one per sequence. */
export type StateArg = T | T[];

export class Ops {
  readonly stream: NativeStream;

  constructor(readonly device: DeviceName) {
    this.stream = new (addon().Stream)(device);
  }

  sync(): Promise<void> {
    return this.stream.sync();
  }

  syncBlocking(): void {
    this.stream.syncBlocking();
  }

  dispose(): void {
    this.stream.dispose();
  }

  /** out[i] = table[ids[i]]; ids must lie in [0, vocab). */
  embedding(ids: T, table: T, out: T, vocab?: number): void {
    this.stream.run('embedding', { ids, table, out }, { vocab });
  }

  /** residual += delta (if given); out = rms(residual) * weight. */
  rmsnorm(residual: T, delta: T | null, weight: T, out: T, eps: number): void {
    this.stream.run('rmsnorm', { residual, delta, weight, out }, { eps });
  }

  /** out = rms over `groups` channel groups of (x * silu(z)), times weight. */
  gatedRmsnorm(x: T, z: T, weight: T, out: T, groups: number, eps: number): void {
    this.stream.run('gated_rmsnorm', { x, z, weight, out }, { groups, eps });
  }

  /** out = x @ weight^T. */
  linear(x: T, weight: T, out: T): void {
    this.stream.run('linear', { x, weight, out });
  }

  /** Causal depthwise conv + SiLU over `batch` sequences of equal length, carrying `state`. */
  conv1dSilu(x: T, weight: T, bias: T, out: T, batch: number, state?: StateArg): void {
    this.stream.run('conv1d_silu', { x, weight, bias, out, state }, { batch });
  }

  conv1dUpdate(x: T, weight: T, bias: T, out: T, state: StateArg): void {
    this.stream.run('conv1d_update', { x, weight, bias, out, state });
  }

  /** Chunked SSD scan over `batch` sequences of equal length, carrying `state`. */
  ssdScan(a: SsdTensors, out: T, p: { batch: number; groups: number; chunk: number }, state?: StateArg): void {
    this.stream.run('ssd_scan', { ...a, out, state }, p);
  }

  ssdStep(a: SsdTensors, out: T, groups: number, state: StateArg): void {
    this.stream.run('ssd_step', { ...a, out, state }, { groups });
  }

  silu(x: T, out: T): void {
    this.stream.run('silu', { x, out });
  }

  softplus(x: T, out: T): void {
    this.stream.run('softplus', { x, out });
  }

  add(a: T, b: T, out: T): void {
    this.stream.run('add', { a, b, out });
  }

  copy(src: T, dst: T): void {
    this.stream.run('copy', { src, dst });
  }
}

export interface SsdTensors {
  x: T;
  B: T;
  C: T;
  dt: T;
  dt_bias: T;
  A_log: T;
  D: T;
}
