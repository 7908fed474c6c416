// A causal language model: embedding, a stack of layers, final norm and LM head (spec
// section 4). It owns the weights, one stream, the scratch workspace, and the per-sequence
// states; it only composes ops, the math is in the kernels.
import { resolveBackend, setThreads, type BackendName } from '../backend.js';
import { loadConfig, type ModelConfig } from '../config.js';
import type { ForwardContext, Layer, LayerState, Workspace } from '../layers/layer.js';
import { Mamba2Block } from '../layers/mamba2_block.js';
import { addon, type DeviceName, type NativeTensor } from '../native.js';
import { Ops } from '../ops.js';
import { WeightLoader, type WeightDType } from '../weights.js';

export interface LoadOptions {
  /** 'auto' (default, or TAIPAN_BACKEND), 'cpu' or 'cuda'. */
  backend?: BackendName;
  /** CPU threads for the whole process (0 or absent: one per core). */
  threads?: number;
  /** Store projection matrices as in the checkpoint ('auto') or convert them at load. */
  weightDtype?: WeightDType;
  /** Longest piece of a prompt run at once; longer prompts run in pieces carrying the state. */
  prefillChunk?: number;
}

export interface PrefillOptions {
  /** States to continue (one per sequence); fresh zero states when absent. */
  states?: SequenceState[];
  /** Logits of the last position of each sequence (default) or of every position. */
  logits?: 'last' | 'all';
}

export interface PrefillResult {
  /** Row-major [B, vocab_padded] ('last') or [B * L, vocab_padded] ('all'). */
  logits: Float32Array;
  /** The states after the prompt, one per sequence (the ones passed in, advanced). */
  states: SequenceState[];
  /** Row width of `logits`. */
  vocab: number;
}

/** Everything one sequence carries between calls: a state per layer and its position. */
export class SequenceState {
  position = 0;
  private disposedFlag = false;

  constructor(readonly layers: LayerState[]) {}

  get disposed(): boolean {
    return this.disposedFlag;
  }

  dispose(): void {
    if (this.disposedFlag) return;
    this.disposedFlag = true;
    for (const l of this.layers) for (const t of l.tensors()) t.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Named scratch tensors that grow to the largest call seen and are reused after. */
class ScratchPool {
  private readonly buffers = new Map<string, NativeTensor>();

  constructor(private readonly device: DeviceName) {}

  workspace(rows: number): Workspace {
    return {
      rows,
      get: (name: string, cols: number) => {
        let t = this.buffers.get(name);
        if (!t || t.shape[0]! < rows || t.shape[1] !== cols) {
          t?.dispose(); // queued ops keep their own reference until they have run
          t = addon().empty([rows, cols], 'f32', this.device, false);
          this.buffers.set(name, t);
        }
        return t.shape[0] === rows ? t : t.rows(0, rows);
      },
    };
  }

  dispose(): void {
    for (const t of this.buffers.values()) t.dispose();
    this.buffers.clear();
  }
}

export class CausalLM {
  readonly device: DeviceName;
  private readonly ops: Ops;
  private readonly scratch: ScratchPool;
  private readonly prefillChunk: number;
  private busy: Promise<unknown> = Promise.resolve();
  private disposedFlag = false;

  protected constructor(
    readonly config: ModelConfig,
    private readonly embedding: NativeTensor,
    private readonly normF: NativeTensor,
    private readonly lmHead: NativeTensor,
    readonly layers: Layer[],
    device: DeviceName,
    opts: LoadOptions,
  ) {
    this.device = device;
    this.ops = new Ops(device);
    this.scratch = new ScratchPool(device);
    this.prefillChunk = opts.prefillChunk ?? 512;
    if (!Number.isInteger(this.prefillChunk) || this.prefillChunk < 1) {
      throw new RangeError(`prefillChunk must be a positive integer, got ${opts.prefillChunk}`);
    }
  }

  /** Load a model directory (config.json + safetensors). */
  static async load(dir: string, opts: LoadOptions = {}): Promise<CausalLM> {
    const config = loadConfig(dir);
    return CausalLM.fromCheckpoint(config, dir, opts);
  }

  static async fromCheckpoint(config: ModelConfig, dir: string, opts: LoadOptions = {}): Promise<CausalLM> {
    this.checkConfig(config);
    const device = resolveBackend(opts.backend);
    if (opts.threads !== undefined) setThreads(opts.threads);
    const loader = WeightLoader.open(dir, device, opts.weightDtype ?? 'auto');
    const owned: { dispose(): void }[] = [];
    try {
      const { d_model: d, vocab_padded: V } = config;
      const embName = loader.pick('backbone.embedding.weight', 'backbone.embeddings.weight');
      const embedding = loader.matrix(embName, [V, d]);
      owned.push(embedding);
      const layers: Layer[] = [];
      config.layer_types.forEach((kind, i) => {
        if (kind !== 'mamba2') {
          throw new Error(`layer ${i} is a "${kind}" layer, which this version cannot run yet (only mamba2 layers)`);
        }
        const layer = Mamba2Block.load(config, loader, i);
        owned.push(layer);
        layers.push(layer);
      });
      const normF = loader.vector('backbone.norm_f.weight', [d]);
      owned.push(normF);
      let lmHead = embedding;
      if (!config.tie_embeddings) {
        lmHead = loader.matrix('lm_head.weight', [V, d]);
        owned.push(lmHead);
      }
      // `this`: the subclass the caller named (Mamba2Model.load gives a Mamba2Model).
      return new this(config, embedding, normF, lmHead, layers, device, opts);
    } catch (e) {
      for (const o of owned) o.dispose();
      throw e;
    } finally {
      loader.close();
    }
  }

  /** Subclasses restrict which configs they accept. */
  protected static checkConfig(_config: ModelConfig): void {}

  /** A fresh (zero) state for one sequence. */
  createState(): SequenceState {
    this.checkAlive();
    return new SequenceState(this.layers.map((l) => l.createState()));
  }

  /**
   * Run prompts through the model: `ids` is one sequence or several of equal length. The
   * prompt runs in pieces of at most `prefillChunk` tokens, carrying the state, so memory
   * does not grow with its length.
   */
  prefill(ids: number[] | number[][], opts: PrefillOptions = {}): Promise<PrefillResult> {
    return this.exclusive(() => this.prefillNow(ids, opts));
  }

  /** One decode step: one new token per sequence, continuing `states`. Returns [B, vocab_padded] logits. */
  step(tokens: number[], states: SequenceState[]): Promise<Float32Array> {
    return this.exclusive(async () => {
      this.checkStates(states, tokens.length);
      this.checkIds([tokens], 'token');
      return this.forward(Int32Array.from(tokens), tokens.length, 1, states, true, 'last');
    });
  }

  /** Greedy decoding: the prompt, then up to maxTokens argmax tokens (stopping at a stop id). */
  async generateGreedy(prompt: number[], opts: { maxTokens: number; stopIds?: number[] }): Promise<number[]> {
    const state = this.createState();
    try {
      const out: number[] = [];
      let { logits } = await this.prefill(prompt, { states: [state] });
      for (let i = 0; i < opts.maxTokens; i++) {
        const next = argmax(logits, this.config.vocab_size);
        out.push(next);
        if (opts.stopIds?.includes(next) || i + 1 === opts.maxTokens) break;
        logits = await this.step([next], [state]);
      }
      return out;
    } finally {
      state.dispose();
    }
  }

  get disposed(): boolean {
    return this.disposedFlag;
  }

  dispose(): void {
    if (this.disposedFlag) return;
    this.disposedFlag = true;
    for (const l of this.layers) l.dispose();
    this.embedding.dispose();
    this.normF.dispose();
    if (this.lmHead !== this.embedding) this.lmHead.dispose();
    this.scratch.dispose();
    this.ops.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- internals -------------------------------------------------------------------------

  private async prefillNow(ids: number[] | number[][], opts: PrefillOptions): Promise<PrefillResult> {
    const seqs = Array.isArray(ids[0]) ? (ids as number[][]) : [ids as number[]];
    const B = seqs.length;
    const L = seqs[0]?.length ?? 0;
    if (B === 0 || L === 0) throw new RangeError('prefill: need at least one sequence of at least one token');
    if (seqs.some((s) => s.length !== L)) throw new RangeError('prefill: all sequences of a batch must have the same length');
    this.checkIds(seqs, 'prompt');
    const states = opts.states ?? seqs.map(() => this.createState());
    this.checkStates(states, B);
    const V = this.config.vocab_padded;
    const all = opts.logits === 'all';
    const logits = new Float32Array((all ? B * L : B) * V);
    for (let c0 = 0; c0 < L; c0 += this.prefillChunk) {
      const Lc = Math.min(this.prefillChunk, L - c0);
      const chunk = new Int32Array(B * Lc);
      seqs.forEach((s, b) => chunk.set(s.slice(c0, c0 + Lc), b * Lc));
      const isLast = c0 + Lc === L;
      if (!all && !isLast) {
        await this.forward(chunk, B, Lc, states, false, 'none');
        continue;
      }
      const part = await this.forward(chunk, B, Lc, states, false, all ? 'all' : 'last');
      if (!all) logits.set(part);
      else for (let b = 0; b < B; b++) logits.set(part.subarray(b * Lc * V, (b + 1) * Lc * V), (b * L + c0) * V);
    }
    return { logits, states, vocab: V };
  }

  /** Enqueue one forward over B x L tokens, run it, and return the requested logits. */
  private async forward(
    ids: Int32Array,
    B: number,
    L: number,
    states: SequenceState[],
    decode: boolean,
    want: 'last' | 'all' | 'none',
  ): Promise<Float32Array> {
    const { d_model: d, vocab_size, vocab_padded: V, norm_eps } = this.config;
    const rows = B * L;
    const ws = this.scratch.workspace(rows);
    const ops = this.ops;
    const idsT = addon().tensor(ids, [rows], 'i32', this.device);
    try {
      const residual = ws.get('residual', d);
      ops.embedding(idsT, this.embedding, residual, vocab_size);
      const ctx: ForwardContext = { ops, ws, batch: B, length: L, decode };
      let pending: NativeTensor | null = null;
      this.layers.forEach((layer, i) => {
        pending = layer.forward(ctx, residual, pending, states.map((s) => s.layers[i]!));
      });
      let logits: NativeTensor | null = null;
      if (want !== 'none') {
        const normed = ws.get('normed', d);
        ops.rmsnorm(residual, pending, this.normF, normed, norm_eps);
        // 'last': row L-1 of each sequence, as a strided view [B, d] with row stride L*d.
        const x = want === 'all' || L === 1 ? normed : normed.reshape([B, L * d]).cols((L - 1) * d, L * d);
        logits = this.scratch.workspace(want === 'all' ? rows : B).get('logits', V);
        ops.linear(x, this.lmHead, logits);
      }
      await ops.sync();
      for (const s of states) s.position += L;
      return logits ? (logits.toArray() as Float32Array) : new Float32Array(0);
    } finally {
      idsT.dispose();
    }
  }

  private checkIds(seqs: number[][], what: string): void {
    const V = this.config.vocab_size;
    seqs.forEach((s, b) =>
      s.forEach((id, t) => {
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new RangeError(`${what} token id ${id} (sequence ${b}, position ${t}) is out of range [0, ${V})`);
        }
      }),
    );
  }

  private checkStates(states: SequenceState[], B: number): void {
    this.checkAlive();
    if (states.length !== B) throw new RangeError(`expected ${B} states (one per sequence), got ${states.length}`);
    if (new Set(states).size !== states.length) throw new Error('the same state appears twice in one batch');
    for (const s of states) {
      if (!(s instanceof SequenceState)) throw new TypeError('states must come from model.createState()');
      if (s.disposed) throw new Error('a SequenceState passed in was disposed');
      if (s.layers.length !== this.layers.length) throw new Error('a SequenceState passed in belongs to a different model');
    }
  }

  private checkAlive(): void {
    if (this.disposedFlag) throw new Error('the model was disposed');
  }

  /** Calls on one model run one at a time: they share the stream and the workspace. */
  private exclusive<R>(fn: () => Promise<R>): Promise<R> {
    const run = this.busy.then(() => {
      this.checkAlive();
      return fn();
    });
    this.busy = run.catch(() => undefined);
    return run;
  }
}

/** Index of the largest of the first `n` values (padded vocabulary ids are never chosen). */
export function argmax(row: Float32Array, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (row[i]! > row[best]!) best = i;
  return best;
}
