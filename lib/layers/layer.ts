// What every layer of a causal language model offers to the model that composes them.
import type { DTypeName } from '../dtype.js';
import type { NativeTensor } from '../native.js';
import type { Ops } from '../ops.js';

/** Scratch buffers shared by all layers of one forward call, sized for `rows` = B * L tokens. */
export interface Workspace {
  rows: number;
  /**
   * The dtype of activations passed between ops on this device (MODEL.md section 10): 'f32' on
   * the CPU, 'bf16' on CUDA. Layers ask for their intermediate buffers in it; the residual
   * stream stays f32 everywhere.
   */
  act: DTypeName;
  /** Views of the model's scratch tensors with exactly `rows` rows; layers ask by name (f32 unless told). */
  get(name: string, cols: number, dtype?: DTypeName): NativeTensor;
}

/** One forward call over `batch` sequences of `length` tokens each (rows = batch * length). */
export interface ForwardContext {
  ops: Ops;
  ws: Workspace;
  batch: number;
  length: number;
  /** One token per sequence, continuing a carried state: layers may use their decode kernels. */
  decode: boolean;
  /** i32 [batch]: the absolute position of each sequence's first token in this call. */
  start: NativeTensor;
}

export interface LayerState {
  /** All tensors of the state, for copying and disposal. */
  tensors(): NativeTensor[];
}

export interface Layer<S extends LayerState = LayerState> {
  readonly kind: string;
  /**
   * Enqueue the layer. `residual` is the fp32 residual stream [rows, d]; `pending` is the
   * previous layer's output still to be added to it (null for the first layer), which this
   * layer folds into its pre-norm. Returns the output still to be added, or null when the
   * layer wrote the residual stream itself.
   */
  forward(ctx: ForwardContext, residual: NativeTensor, pending: NativeTensor | null, states: S[]): NativeTensor | null;
  /** A zeroed state for one sequence. */
  createState(): S;
  /** Called after a forward over `rows` tokens has run; layers may read back small results here. */
  afterRun?(rows: number): void;
  dispose(): void;
}
