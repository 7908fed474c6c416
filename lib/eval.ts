// Perplexity evaluation over a token stream of any length: the text runs as one sequence,
// piece by piece, carrying the model's state, so memory stays flat however long the stream.
// Each token t >= 1 is scored by -log p(token t | tokens before it); the losses are summed per
// report window and in total.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

import type { SalSelection } from './layers/sal.js';
import type { CausalLM } from './models/causal_lm.js';

/** Where the tokens come from: read(start, count) returns ids [start, start + count). */
export interface TokenSource {
  readonly length: number;
  read(start: number, count: number): Int32Array;
  close?(): void;
}

/** Tokens held in memory. */
export function arrayTokens(ids: ArrayLike<number>): TokenSource {
  const all = Int32Array.from(ids as ArrayLike<number>);
  return { length: all.length, read: (start, count) => all.subarray(start, start + count) };
}

/** A file of little-endian int32 token ids, read in pieces (never whole). */
export class TokenFile implements TokenSource {
  readonly length: number;
  private fd: number | null;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'r');
    const size = fstatSync(this.fd).size;
    if (size % 4 !== 0) {
      this.close();
      throw new Error(`${path}: ${size} bytes is not a whole number of int32 token ids`);
    }
    this.length = size / 4;
  }

  read(start: number, count: number): Int32Array {
    if (this.fd === null) throw new Error(`${this.path}: the token file was closed`);
    const n = Math.max(0, Math.min(count, this.length - start));
    const out = new Int32Array(n);
    const bytes = new Uint8Array(out.buffer);
    let done = 0;
    while (done < bytes.byteLength) {
      const r = readSync(this.fd, bytes, done, bytes.byteLength - done, start * 4 + done);
      if (r === 0) throw new Error(`${this.path}: file ended early`);
      done += r;
    }
    // Token files are little-endian; so are the hosts Node runs on in practice.
    return out;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

export interface EvalWindow {
  index: number;
  /** Position of the window's first scored token in the stream. */
  start: number;
  tokens: number;
  /** Sum of the negative log-likelihoods (nats). */
  nll: number;
  meanNll: number;
  perplexity: number;
}

export interface EvalResult {
  /** Tokens scored: every token but the first. */
  tokens: number;
  nll: number;
  meanNll: number;
  perplexity: number;
  seconds: number;
  tokensPerSecond: number;
  windows: EvalWindow[];
  /** Realized selection of each SAL over the whole stream. */
  selection: SalSelection[];
}

export interface EvalOptions {
  /** Tokens per report window (default 1024). */
  window?: number;
  /** Score at most this many tokens of the stream (default: all). */
  maxTokens?: number;
  /** Tokens fed to the model per call (default 4096); the model splits them into its prefill chunks. */
  piece?: number;
  /** Called as each report window completes. */
  onWindow?: (w: EvalWindow) => void;
}

export async function evaluatePerplexity(model: CausalLM, source: TokenSource, opts: EvalOptions = {}): Promise<EvalResult> {
  const W = opts.window ?? 1024;
  const piece = opts.piece ?? 4096;
  if (!Number.isInteger(W) || W < 1) throw new RangeError(`window must be a positive integer, got ${opts.window}`);
  if (!Number.isInteger(piece) || piece < 1) throw new RangeError(`piece must be a positive integer, got ${opts.piece}`);
  const n = Math.min(source.length, opts.maxTokens ?? Infinity);
  if (n < 2) throw new RangeError(`need at least 2 tokens to evaluate, got ${n}`);

  const state = model.createState();
  const windows: EvalWindow[] = [];
  let cur = { sum: 0, count: 0, start: 1 };
  let total = 0;
  const close = () => {
    const meanNll = cur.sum / cur.count;
    const w = { index: windows.length, start: cur.start, tokens: cur.count, nll: cur.sum, meanNll, perplexity: Math.exp(meanNll) };
    windows.push(w);
    opts.onWindow?.(w);
    cur = { sum: 0, count: 0, start: cur.start + cur.count };
  };

  model.resetSelection();
  const t0 = performance.now();
  try {
    // Piece [p0, p1) predicts tokens p0+1 .. p1; the last token is input only.
    for (let p0 = 0; p0 < n - 1; p0 += piece) {
      const p1 = Math.min(n - 1, p0 + piece);
      const ids = source.read(p0, p1 - p0 + 1);
      const nll = await model.score(ids.subarray(0, p1 - p0), ids.subarray(1), state);
      for (const v of nll) {
        cur.sum += v;
        cur.count++;
        total += v;
        if (cur.count === W) close();
      }
    }
    if (cur.count > 0) close();
  } finally {
    state.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  const tokens = n - 1;
  const meanNll = total / tokens;
  return {
    tokens,
    nll: total,
    meanNll,
    perplexity: Math.exp(meanNll),
    seconds,
    tokensPerSecond: n / seconds,
    windows,
    selection: model.totalSelection,
  };
}
