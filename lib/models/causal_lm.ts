// A causal language model: embedding, a stack of layers, final norm and LM head (spec
// section 4). It owns the weights, one stream, the scratch workspace, and the per-sequence
// states; it only composes ops, the math is in the kernels.
import { resolveBackend, setThreads, type BackendName } from '../backend.js';
import { loadConfig, type ModelConfig } from '../config.js';
import type { ForwardContext, Layer, LayerState, Workspace } from '../layers/layer.js';
import { AttentionBlock } from '../layers/attention_block.js';
import { Mamba1Block } from '../layers/mamba1_block.js';
import { Mamba2Block } from '../layers/mamba2_block.js';
import { SalState, SelectiveAttentionLayer, type SalSelection } from '../layers/sal.js';
import { colsView, reshapeView, rowsView } from '../layers/views.js';
import type { DTypeName } from '../dtype.js';
import { addon, type DeviceName, type NativeGraph, type NativeTensor } from '../native.js';
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
  /** Replay repeated forwards (decode steps, evaluation pieces) from captured graphs (default true). */
  graphs?: boolean;
}

type Want = 'last' | 'all' | 'none' | { targets: Int32Array };

/** The op calls of one forward, recorded with their own input and output tensors. */
interface CapturedForward {
  graph: NativeGraph;
  states: SequenceState[];
  ids: NativeTensor;
  start: NativeTensor;
  targets: NativeTensor | null;
  out: NativeTensor | null;
  owned: NativeTensor[];
}

function disposeCaptured(g: CapturedForward): void {
  g.graph.dispose();
  for (const t of g.owned) t.dispose();
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
  /** Per SAL: how many of this prompt's tokens it selected (empty for pure Mamba-2). */
  selection: SalSelection[];
}

/** Everything one sequence carries between calls: a state per layer and its position. */
export class SequenceState {
  position = 0;
  private disposedFlag = false;

  constructor(readonly layers: LayerState[]) {}

  get disposed(): boolean {
    return this.disposedFlag;
  }

  /** Bytes held by the state's tensors (SSM and conv states, KV caches, ring buffers). */
  get byteLength(): number {
    return this.layers.reduce((a, l) => a + l.tensors().reduce((b, t) => b + t.byteLength, 0), 0);
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
  /**
   * Activations between ops (MODEL.md section 10): fp32 on the CPU; bf16 on CUDA, whose kernels
   * take and produce bf16 activations. The residual stream and the logits stay fp32 on both.
   */
  readonly act: DTypeName;

  constructor(private readonly device: DeviceName) {
    this.act = device === 'cuda' ? 'bf16' : 'f32';
  }

  workspace(rows: number): Workspace {
    return {
      rows,
      act: this.act,
      get: (name: string, cols: number, dtype: DTypeName = 'f32') => {
        let t = this.buffers.get(name);
        if (!t || t.shape[0]! < rows || t.shape[1] !== cols || t.dtype !== dtype) {
          t?.dispose(); // queued ops keep their own reference until they have run
          t = addon().empty([rows, cols], dtype, this.device, false);
          this.buffers.set(name, t);
        }
        return t.shape[0] === rows ? t : rowsView(t, 0, rows);
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
  private readonly useGraphs: boolean;
  private readonly graphs = new Map<string, CapturedForward>();
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
    this.useGraphs = opts.graphs ?? true;
    if (!Number.isInteger(this.prefillChunk) || this.prefillChunk < 1) {
      throw new RangeError(`prefillChunk must be a positive integer, got ${opts.prefillChunk}`);
    }
  }

  /** Load a model directory (config.json + safetensors). */
  static async load(dir: string, opts: LoadOptions = {}): Promise<CausalLM> {
    const config = loadConfig(dir);
    return this.fromCheckpoint(config, dir, opts);
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
        let layer: Layer;
        if (kind === 'mamba2') layer = Mamba2Block.load(config, loader, i);
        else if (kind === 'sal') layer = SelectiveAttentionLayer.load(config, loader, i);
        else if (kind === 'mamba1') layer = Mamba1Block.load(config, loader, i);
        else if (kind === 'attention') {
          layer = AttentionBlock.load(config, loader, i);
          // Its KV caches grow into new tensors, which a captured graph would not follow.
          opts = { ...opts, graphs: false };
        } else throw new Error(`layer ${i} is a "${kind}" layer, which this version cannot run yet`);
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

  /** The model's Selective Attention Layers, in order (none for pure Mamba-2). */
  get sals(): SelectiveAttentionLayer[] {
    return this.layers.filter((l): l is SelectiveAttentionLayer => l instanceof SelectiveAttentionLayer);
  }

  /** Per SAL: the selection of the last forward call (prefill chunk or decode step). */
  get lastSelection(): SalSelection[] {
    return this.sals.map((l) => ({ ...l.last }));
  }

  /** Per SAL: the selection over every forward since load (or resetSelection()). */
  get totalSelection(): SalSelection[] {
    return this.sals.map((l) => ({ ...l.total }));
  }

  resetSelection(): void {
    for (const l of this.sals) l.resetSelection();
  }

  /** A fresh (zero) state for one sequence. */
  createState(): SequenceState {
    this.checkAlive();
    return new SequenceState(this.layers.map((l) => l.createState()));
  }

  /**
   * Make a used state fresh again (Mamba-2 states zero, SAL caches empty, position 0) without
   * allocating one: a server keeps a pool of states and hands them from one request to the
   * next. Waits for any queued forward, so a state can be reset while others are in use.
   */
  resetState(state: SequenceState): Promise<void> {
    return this.exclusive(async () => {
      this.checkStates([state], 1);
      const zeros = new Map<string, Float32Array | Int32Array>(); // one buffer per shape: layers repeat
      for (const layer of state.layers) {
        if (layer instanceof SalState) {
          // A slot marked -1 is empty and its keys and values are never read, so the (large)
          // caches need no clearing: marking every slot empty is the whole reset.
          layer.cachePos.write(new Int32Array(layer.cachePos.shape[0]!).fill(-1));
          continue;
        }
        for (const t of layer.tensors()) {
          const n = t.shape.reduce((a, b) => a * b, 1);
          const key = `${t.dtype === 'i32' ? 'i' : 'f'}${n}`;
          let z = zeros.get(key);
          if (!z) zeros.set(key, (z = t.dtype === 'i32' ? new Int32Array(n) : new Float32Array(n)));
          t.write(z);
        }
      }
      state.position = 0;
    });
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

  /**
   * Score a piece of one sequence: nll[t] = -log p(targets[t] | everything up to ids[t]),
   * continuing `state` (so a long text is scored piece by piece in constant memory). A target
   * of -1 scores nothing (0). The log-softmax runs on the backend beside the LM head; only
   * the L losses come back.
   */
  score(ids: ArrayLike<number>, targets: ArrayLike<number>, state: SequenceState): Promise<Float32Array> {
    return this.exclusive(async () => {
      const L = ids.length;
      if (L === 0) throw new RangeError('score: need at least one token');
      if (targets.length !== L) throw new RangeError(`score: ${L} ids but ${targets.length} targets`);
      this.checkIds([ids], 'score');
      const V = this.config.vocab_size;
      for (let t = 0; t < L; t++) {
        const y = targets[t]!;
        if (!Number.isInteger(y) || y < -1 || y >= V) throw new RangeError(`score: target id ${y} at position ${t} is out of range [0, ${V})`);
      }
      this.checkStates([state], 1);
      const idsA = ids instanceof Int32Array ? ids : Int32Array.from(ids);
      const targetsA = targets instanceof Int32Array ? targets : Int32Array.from(targets);
      const nll = new Float32Array(L);
      for (let c0 = 0; c0 < L; c0 += this.prefillChunk) {
        const c1 = Math.min(L, c0 + this.prefillChunk);
        const part = await this.forward(idsA.subarray(c0, c1), 1, c1 - c0, [state], false, { targets: targetsA.subarray(c0, c1) });
        nll.set(part, c0);
      }
      return nll;
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
    for (const key of [...this.graphs.keys()]) this.dropGraph(key);
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
    const selection = this.sals.map((l) => ({ layer: l.index, selected: 0, tokens: 0, fraction: 0 }));
    const tally = () =>
      this.sals.forEach((l, k) => {
        const s = selection[k]!;
        s.selected += l.last.selected;
        s.tokens += l.last.tokens;
        s.fraction = s.tokens ? s.selected / s.tokens : 0;
      });
    for (let c0 = 0; c0 < L; c0 += this.prefillChunk) {
      const Lc = Math.min(this.prefillChunk, L - c0);
      const chunk = new Int32Array(B * Lc);
      seqs.forEach((s, b) => chunk.set(s.slice(c0, c0 + Lc), b * Lc));
      const isLast = c0 + Lc === L;
      if (!all && !isLast) {
        await this.forward(chunk, B, Lc, states, false, 'none');
        tally();
        continue;
      }
      const part = await this.forward(chunk, B, Lc, states, false, all ? 'all' : 'last');
      tally();
      if (!all) logits.set(part);
      else for (let b = 0; b < B; b++) logits.set(part.subarray(b * Lc * V, (b + 1) * Lc * V), (b * L + c0) * V);
    }
    return { logits, states, vocab: V, selection };
  }

  /**
   * Run one forward over B x L tokens and return the requested logits (or losses).
   *
   * The op calls of a forward are captured once as a graph and replayed while the shape, the
   * request and the states stay the same (every decode step of a generation, every piece of a
   * long evaluation): the token ids, positions and targets are rewritten in place and the
   * graph launched, one native call instead of hundreds of validated op calls, and no
   * per-call garbage for the JavaScript heap.
   */
  private async forward(
    ids: Int32Array,
    B: number,
    L: number,
    states: SequenceState[],
    decode: boolean,
    want: Want,
  ): Promise<Float32Array> {
    const wantKey = typeof want === 'object' ? 'nll' : want;
    const key = `${decode ? 'decode' : 'prefill'} ${B}x${L} ${wantKey}`;
    let g = this.graphs.get(key);
    if (!g || g.states.some((s, i) => s !== states[i])) {
      if (g) this.dropGraph(key);
      g = this.capture(B, L, states, decode, want);
      if (this.useGraphs) {
        // A few shapes at a time (decode, prefill pieces, the last piece): drop the oldest.
        if (this.graphs.size >= 4) this.dropGraph(this.graphs.keys().next().value!);
        this.graphs.set(key, g);
      }
    }
    try {
      g.ids.write(ids);
      g.start.write(Int32Array.from(states, (s) => s.position));
      if (g.targets && typeof want === 'object') g.targets.write(want.targets);
      this.ops.stream.launch(g.graph);
      await this.ops.sync();
      this.afterRun(states, B, L);
      return g.out ? (g.out.toArray() as Float32Array) : new Float32Array(0);
    } finally {
      if (!this.useGraphs) disposeCaptured(g);
    }
  }

  /** Record the op calls of one forward into a graph with its own inputs and output. */
  private capture(B: number, L: number, states: SequenceState[], decode: boolean, want: Want): CapturedForward {
    const ids = addon().empty([B * L], 'i32', this.device, true);
    const start = addon().empty([B], 'i32', this.device, true);
    const targets = typeof want === 'object' ? addon().empty([B * L, 1], 'i32', this.device, true) : null;
    // The graph's own output, so a later call cannot take a scratch buffer from it.
    const V = this.config.vocab_padded;
    const shape = typeof want === 'object' ? [B * L, 1] : want === 'all' ? [B * L, V] : want === 'last' ? [B, V] : null;
    const out = shape ? addon().empty(shape, 'f32', this.device, false) : null;
    const owned: NativeTensor[] = [ids, start];
    if (targets) owned.push(targets);
    if (out) owned.push(out);
    this.ops.stream.beginCapture();
    let graph: NativeGraph;
    try {
      this.enqueueForward(ids, start, B, L, states, decode, targets, out);
    } finally {
      graph = this.ops.stream.endCapture();
    }
    return { graph, states: [...states], ids, start, targets, out, owned };
  }

  private dropGraph(key: string): void {
    const g = this.graphs.get(key);
    if (!g) return;
    this.graphs.delete(key);
    disposeCaptured(g);
  }

  private afterRun(states: SequenceState[], B: number, L: number): void {
    for (const s of states) s.position += L;
    for (const layer of this.layers) layer.afterRun?.(B * L);
  }

  /**
   * Enqueue the ops of one forward. `out` receives the logits ([B, V] for the last position of
   * each sequence, [B*L, V] for every position) or, with `targetsT`, the losses [B*L, 1].
   */
  private enqueueForward(
    idsT: NativeTensor,
    startT: NativeTensor,
    B: number,
    L: number,
    states: SequenceState[],
    decode: boolean,
    targetsT: NativeTensor | null,
    out: NativeTensor | null,
  ): void {
    const { d_model: d, vocab_size, vocab_padded: V, norm_eps } = this.config;
    const rows = B * L;
    const ws = this.scratch.workspace(rows);
    const ops = this.ops;
    const residual = ws.get('residual', d);
    ops.embedding(idsT, this.embedding, residual, vocab_size);
    const ctx: ForwardContext = { ops, ws, batch: B, length: L, decode, start: startT };
    let pending: NativeTensor | null = null;
    this.layers.forEach((layer, i) => {
      pending = layer.forward(ctx, residual, pending, states.map((s) => s.layers[i]!));
    });
    if (!out) return;
    const normed = ws.get('normed', d, ws.act);
    if (targetsT) return this.enqueueNll(normed, pending, residual, targetsT, out);
    ops.rmsnorm(residual, pending, this.normF, normed, norm_eps);
    // Only the last position of each sequence: row L-1 as a strided view [B, d], row stride L*d.
    const x = out.shape[0] === rows ? normed : colsView(reshapeView(normed, [B, L * d]), (L - 1) * d, L * d);
    ops.linear(x, this.lmHead, out);
  }

  /**
   * Final norm, then the LM head and the cross-entropy in blocks of rows, so the logits
   * scratch stays [block, vocab] however long the piece. Returns the [rows] losses tensor.
   */
  private enqueueNll(normed: NativeTensor, pending: NativeTensor | null, residual: NativeTensor, targetsT: NativeTensor, nll: NativeTensor): void {
    const { vocab_size, vocab_padded: V, norm_eps } = this.config;
    const rows = targetsT.shape[0]!;
    this.ops.rmsnorm(residual, pending, this.normF, normed, norm_eps);
    const block = 64;
    const logits = this.scratch.workspace(Math.min(block, rows)).get('logits', V);
    for (let r0 = 0; r0 < rows; r0 += block) {
      const r1 = Math.min(rows, r0 + block);
      const part = r1 - r0 === logits.shape[0] ? logits : rowsView(logits, 0, r1 - r0);
      this.ops.linear(rowsView(normed, r0, r1), this.lmHead, part);
      this.ops.crossEntropy(part, reshapeView(rowsView(targetsT, r0, r1), [r1 - r0]), reshapeView(rowsView(nll, r0, r1), [r1 - r0]), vocab_size);
    }
  }

  private checkIds(seqs: ArrayLike<number>[], what: string): void {
    const V = this.config.vocab_size;
    seqs.forEach((s, b) => {
      for (let t = 0; t < s.length; t++) {
        const id = s[t]!;
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new RangeError(`${what} token id ${id} (sequence ${b}, position ${t}) is out of range [0, ${V})`);
        }
      }
    });
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
