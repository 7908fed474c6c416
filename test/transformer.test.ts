// The Transformer++ baseline (MODEL.md section 7): the attention and kv_append ops against a
// direct float64 computation on the AVX2 and portable paths, and the whole model against the
// float64 reference test/reference/transformer.ts, with its invariants: chunked prefill ==
// one-shot prefill == token-by-token decode across KV cache growth, a batch == its sequences alone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { formatLatencyBenchmark, latencySvg, presetFor, type LatencyResult } from '../lib/bench/latency.js';
import { ProgressBar } from '../lib/bench/progress.js';
import { ConfigError, PRESETS, parseConfig, type ModelConfig } from '../lib/config.js';
import { KvCacheState } from '../lib/layers/attention_block.js';
import { addon, type NativeTensor } from '../lib/native.js';
import { Ops, type StateArg } from '../lib/ops.js';
import { CausalLM } from '../lib/models/causal_lm.js';
import { TransformerModel } from '../lib/models/transformer.js';
import { chunkWidths, type AttentionChunk } from './helpers/attention.js';
import { expectBatchEqualsAlone, expectChunkedEqualsDecode, expectGreedyEqualsArgmax } from './helpers/invariants.js';
import { cpuModels, dropTensor, relError, smallMamba2Config, smallTransformerConfig, tokenIds, writeModel } from './helpers/models.js';
import { randn } from './reference/rng.js';
import { attendAll, transformerForward, type RefTransformerConfig } from './reference/transformer.js';

const native = addon();
const cpuPaths = native.backendInfo().cpu.avx2 ? (['avx2', 'portable'] as const) : (['portable'] as const);

let seed = 7000;
/** Random values rounded to f32, so the reference sees exactly what the kernel sees. */
function rand(n: number, scale = 1): Float64Array {
  return Float64Array.from(Float32Array.from(randn(n, seed++, scale)));
}
function t(data: ArrayLike<number>, shape: number[]): NativeTensor {
  return native.tensor(Float32Array.from(data), shape);
}
function i32(data: ArrayLike<number>): NativeTensor {
  return native.tensor(Int32Array.from(data), [data.length], 'i32');
}
/** An f32 tensor of NaN: rows that must be neither read nor written. */
function nans(shape: number[]): NativeTensor {
  return t(new Float64Array(shape.reduce((a, b) => a * b, 1)).fill(NaN), shape);
}
function read(x: NativeTensor): Float64Array {
  return Float64Array.from(x.toArray());
}
/** Rows of `cols` values placed at column `at` of a wider NaN matrix: a strided view. */
function strided(data: Float64Array, rows: number, cols: number, ld: number, at: number): NativeTensor {
  const wide = new Float64Array(rows * ld).fill(NaN);
  for (let r = 0; r < rows; r++) wide.set(data.subarray(r * cols, (r + 1) * cols), r * ld + at);
  return t(wide, [rows, ld]).cols(at, at + cols);
}
const rowOf = (x: Float64Array, i: number, n: number) => x.subarray(i * n, (i + 1) * n);

interface Case extends AttentionChunk {
  /** Extra cache rows past start + L (NaN: never to be read). */
  spare?: number;
  form?: 'batched' | 'list';
  stridedInputs?: boolean;
}

/**
 * One attention + kv_append over caches that already hold starts[b] random rows; checks the
 * output against attendAll and the caches against past + chunk (the spare rows untouched).
 */
function checkAttention(ops: Ops, c: Case): void {
  const { B, L, Hq, Hkv, hd, starts } = c;
  const { M, HQ, HKV } = chunkWidths(c);
  const q = rand(M * HQ);
  const k = rand(M * HKV);
  const v = rand(M * HKV);
  const past = starts.map((s) => ({ k: rand(s * HKV), v: rand(s * HKV) }));
  // Per-sequence capacities differ in the list form; the batched form takes the largest.
  const caps = starts.map((s, b) => s + L + (c.spare ?? 3) + (c.form === 'list' ? b : 0));
  const cap = Math.max(...caps);
  const cacheData = (b: number, which: 'k' | 'v', rows: number) => {
    const data = new Float64Array(rows * HKV).fill(NaN);
    data.set(past[b]![which]);
    return data;
  };
  let kCache: StateArg;
  let vCache: StateArg;
  if (c.form === 'list') {
    kCache = starts.map((_, b) => t(cacheData(b, 'k', caps[b]!), [caps[b]!, HKV]));
    vCache = starts.map((_, b) => t(cacheData(b, 'v', caps[b]!), [caps[b]!, HKV]));
  } else {
    const all = (which: 'k' | 'v') => {
      const data = new Float64Array(B * cap * HKV);
      starts.forEach((_, b) => data.set(cacheData(b, which, cap), b * cap * HKV));
      return t(data, [B, cap, HKV]);
    };
    kCache = all('k');
    vCache = all('v');
  }
  const s = c.stridedInputs;
  const qT = s ? strided(q, M, HQ, HQ + 7, 3) : t(q, [M, HQ]);
  const kT = s ? strided(k, M, HKV, HKV + 5, 1) : t(k, [M, HKV]);
  const vT = s ? strided(v, M, HKV, 2 * HKV + 1, HKV) : t(v, [M, HKV]);
  const out = s ? strided(new Float64Array(M * HQ).fill(NaN), M, HQ, HQ + 4, 2) : nans([M, HQ]);
  const start = i32(starts);
  ops.attention({ q: qT, k: kT, v: vT, start, kCache, vCache, out }, { batch: B, headDim: hd });
  ops.kvAppend({ k: kT, v: vT, start, kCache, vCache }, B);
  ops.syncBlocking();

  const want = new Float64Array(M * HQ);
  for (let b = 0; b < B; b++) {
    const keys: Float64Array[] = [];
    const values: Float64Array[] = [];
    for (let j = 0; j < starts[b]!; j++) keys.push(rowOf(past[b]!.k, j, HKV)), values.push(rowOf(past[b]!.v, j, HKV));
    for (let tt = 0; tt < L; tt++) {
      const m = b * L + tt;
      keys.push(rowOf(k, m, HKV));
      values.push(rowOf(v, m, HKV));
      want.set(attendAll(rowOf(q, m, HQ), keys, values, Hq, Hkv, hd), m * HQ);
    }
  }
  expect(relError(read(out), want)).toBeLessThan(1e-5);

  // The caches: past rows kept, the chunk's rows at start .. start+L-1, the rest untouched.
  const cacheOf = (x: StateArg, b: number) => (Array.isArray(x) ? read(x[b]!) : read(x).subarray(b * cap * HKV, (b + 1) * cap * HKV));
  for (let b = 0; b < B; b++) {
    for (const [which, cache, chunk] of [['k', kCache, k], ['v', vCache, v]] as const) {
      const got = cacheOf(cache, b);
      const s0 = starts[b]!;
      expect(got.subarray(0, s0 * HKV)).toEqual(past[b]![which]);
      expect(got.subarray(s0 * HKV, (s0 + L) * HKV)).toEqual(chunk.subarray(b * L * HKV, (b + 1) * L * HKV));
      expect(got.subarray((s0 + L) * HKV).every(Number.isNaN)).toBe(true);
    }
  }
}

for (const path of cpuPaths) {
  describe(`attention ops, ${path} path`, () => {
    const ops = new Ops('cpu');
    beforeAll(() => native.setPortable(path === 'portable'));
    afterAll(() => {
      native.setPortable(false);
      ops.dispose();
    });

    const cases: [string, Case][] = [
      ['B=1, L=1 at position 0', { B: 1, L: 1, Hq: 4, Hkv: 4, hd: 16, starts: [0] }],
      ['B=1, L=1 decode over 200 cached rows', { B: 1, L: 1, Hq: 4, Hkv: 4, hd: 64, starts: [200] }],
      ['B=1, L=37 prefill (partial query tiles)', { B: 1, L: 37, Hq: 2, Hkv: 2, hd: 32, starts: [0] }],
      ['B=1, L=70 after 90 cached rows (key blocks cross the cache/chunk seam)', { B: 1, L: 70, Hq: 2, Hkv: 1, hd: 40, starts: [90] }],
      ['B=3, L=1, different starts', { B: 3, L: 1, Hq: 4, Hkv: 2, hd: 16, starts: [0, 7, 130] }],
      ['B=3, L=20, different starts, GQA 4:2', { B: 3, L: 20, Hq: 4, Hkv: 2, hd: 16, starts: [0, 5, 70] }],
      ['B=2, L=9, GQA 4:1, head_dim 6 (scalar tails)', { B: 2, L: 9, Hq: 4, Hkv: 1, hd: 6, starts: [3, 0] }],
      ['B=2, L=17, GQA 4:1, head_dim 64, list caches of different capacities', { B: 2, L: 17, Hq: 4, Hkv: 1, hd: 64, starts: [11, 66], form: 'list' }],
      ['B=3, L=5, strided q/k/v/out, list caches', { B: 3, L: 5, Hq: 4, Hkv: 2, hd: 24, starts: [1, 0, 40], form: 'list', stridedInputs: true }],
      ['B=1, L=3, strided, exactly full cache', { B: 1, L: 3, Hq: 2, Hkv: 2, hd: 8, starts: [6], spare: 0, stridedInputs: true }],
    ];
    for (const [name, c] of cases) it(name, () => checkAttention(ops, c));

    it('a sequence of chunks over a cache that grows by copying, equals attention over the whole history', () => {
      const [Hq, Hkv, hd] = [4, 2, 16];
      const HQ = Hq * hd;
      const HKV = Hkv * hd;
      let cap = 8;
      let kc = native.empty([cap, HKV], 'f32', 'cpu', false);
      let vc = native.empty([cap, HKV], 'f32', 'cpu', false);
      const keys: Float64Array[] = [];
      const values: Float64Array[] = [];
      let pos = 0;
      for (const L of [5, 1, 1, 30, 1, 70, 2]) {
        if (pos + L > cap) {
          // What KvCacheState.reserve does: a bigger cache, the filled rows copied on the stream.
          cap = Math.max(pos + L, 2 * cap);
          const [nk, nv] = [native.empty([cap, HKV], 'f32', 'cpu', false), native.empty([cap, HKV], 'f32', 'cpu', false)];
          if (pos > 0) {
            ops.copy(kc.rows(0, pos), nk.rows(0, pos));
            ops.copy(vc.rows(0, pos), nv.rows(0, pos));
          }
          kc.dispose();
          vc.dispose();
          [kc, vc] = [nk, nv];
        }
        const q = rand(L * HQ);
        const k = rand(L * HKV);
        const v = rand(L * HKV);
        const out = nans([L, HQ]);
        const [kT, vT, start] = [t(k, [L, HKV]), t(v, [L, HKV]), i32([pos])];
        ops.attention({ q: t(q, [L, HQ]), k: kT, v: vT, start, kCache: [kc], vCache: [vc], out }, { batch: 1, headDim: hd });
        ops.kvAppend({ k: kT, v: vT, start, kCache: [kc], vCache: [vc] }, 1);
        ops.syncBlocking();
        const want = new Float64Array(L * HQ);
        for (let i = 0; i < L; i++) {
          keys.push(rowOf(k, i, HKV));
          values.push(rowOf(v, i, HKV));
          want.set(attendAll(rowOf(q, i, HQ), keys, values, Hq, Hkv, hd), i * HQ);
        }
        expect(relError(read(out), want)).toBeLessThan(1e-5);
        pos += L;
      }
      expect(cap).toBe(148); // grew at 30 (to 37), 1 (to 74) and 70 (to 148) new tokens
    });

    it('a chunk that does not fit its cache is an error when the op runs', () => {
      const [L, HD] = [4, 8];
      const x = () => t(rand(L * HD), [L, HD]);
      const cache = () => [nans([5, HD])];
      ops.attention({ q: x(), k: x(), v: x(), start: i32([2]), kCache: cache(), vCache: cache(), out: nans([L, HD]) }, { batch: 1, headDim: 4 });
      expect(() => ops.syncBlocking()).toThrow(/attention failed: sequence 0 needs 6 cache rows \(start 2 \+ 4 new tokens\) but its KV cache holds 5/);
      ops.kvAppend({ k: x(), v: x(), start: i32([3]), kCache: cache(), vCache: cache() }, 1);
      expect(() => ops.syncBlocking()).toThrow(/kv_append failed: sequence 0 needs 7 cache rows/);
      ops.kvAppend({ k: x(), v: x(), start: i32([-1]), kCache: cache(), vCache: cache() }, 1);
      expect(() => ops.syncBlocking()).toThrow(/kv_append failed: sequence 0 has start -1 < 0/);
    });

    it('rejects bad arguments when called, naming the op and the argument', () => {
      const [M, HQ, HKV] = [4, 16, 8];
      const base = () => ({ q: nans([M, HQ]), k: nans([M, HKV]), v: nans([M, HKV]), start: i32([0, 0]), kCache: nans([2, 8, HKV]), vCache: nans([2, 8, HKV]), out: nans([M, HQ]) });
      const p = { batch: 2, headDim: 4 };
      expect(() => ops.attention(base(), { ...p, headDim: 3 })).toThrow(/attention: 'head_dim' \(3\) must divide the 16 columns of q/);
      expect(() => ops.attention({ ...base(), k: nans([M, 12]), v: nans([M, 12]), kCache: nans([2, 8, 12]), vCache: nans([2, 8, 12]) }, p)).toThrow(/attention: q has 4 heads, not a multiple of the 3 key\/value heads/);
      expect(() => ops.attention(base(), { ...p, batch: 3 })).toThrow(/attention: 'batch' \(3\) must divide the 4 rows/);
      expect(() => ops.attention({ ...base(), v: nans([M, HKV + 1]) }, p)).toThrow(/attention: tensor 'v' has shape/);
      expect(() => ops.attention({ ...base(), out: nans([M, HKV]) }, p)).toThrow(/attention: tensor 'out' has shape/);
      expect(() => ops.attention({ ...base(), start: native.tensor(Float32Array.of(0, 0), [2]) }, p)).toThrow(/attention: tensor 'start' has dtype f32/);
      expect(() => ops.attention({ ...base(), vCache: nans([2, 9, HKV]) }, p)).toThrow(/attention: sequence 0: k_cache holds 8 rows but v_cache 9/);
      expect(() => ops.attention({ ...base(), kCache: [nans([8, HKV])], vCache: [nans([8, HKV])] }, p)).toThrow(/attention: list 'k_cache' has 1 tensors for a batch of 2/);
      expect(() => ops.attention({ ...base(), kCache: [nans([8, HKV]), nans([8, HKV + 1])] }, p)).toThrow(/attention: tensor 'k_cache\[1\]' has shape/);
      const shared = nans([2, 8, HKV]);
      expect(() => ops.attention({ ...base(), kCache: shared, vCache: shared }, p)).toThrow(/attention: k_cache and v_cache overlap/);
      const b = base();
      expect(() => ops.attention({ ...b, out: b.kCache.rows(0, 1).reshape([M, HQ]) }, p)).toThrow(/attention: tensor 'out' overlaps a KV cache/);
      const kv = base();
      expect(() => ops.kvAppend({ ...kv, k: kv.kCache.rows(0, 1).reshape([M, 2 * HKV]).cols(0, HKV) }, 2)).toThrow(/kv_append: tensor 'k' overlaps a KV cache/);
      expect(() => ops.kvAppend({ ...base(), kCache: undefined as unknown as StateArg }, 2)).toThrow(/kv_append: missing tensor argument 'k_cache'/);
    });
  });
}

// ---- the whole model ----------------------------------------------------------------------

const ref = (c: ModelConfig) => c as unknown as RefTransformerConfig;

const { build, buildChunkedAndOneShot, scratchDir } = cpuModels(TransformerModel);

describe('TransformerModel vs the reference', () => {
  for (const [n, attn] of [{ n_kv_heads: 2 }, { n_kv_heads: 1 }, { n_kv_heads: 4, rope_theta: 500 }].entries()) {
    it(`logits at every position, 4 query heads, ${attn.n_kv_heads} key/value heads`, async () => {
      const cfg = smallTransformerConfig(attn);
      const { weights, model } = await build(cfg, 10 + n, { prefillChunk: 7 });
      try {
        expect(model).toBeInstanceOf(TransformerModel);
        const seq = tokenIds(45, n);
        const got = await model.prefill(seq, { logits: 'all' });
        const want = transformerForward(ref(cfg), weights, [seq], null);
        expect(relError(got.logits, want.logits)).toBeLessThan(1e-4);
        expect(got.selection).toEqual([]);
        got.states.forEach((s) => s.dispose());
      } finally {
        model.dispose();
      }
    });
  }

  it('300 tokens (the KV caches grow past 256 mid-prompt), then a batch of 3 decoding with different positions', async () => {
    const cfg = smallTransformerConfig();
    const { weights, model } = await build(cfg, 20, { prefillChunk: 100 });
    try {
      const seq = tokenIds(300, 3);
      const got = await model.prefill(seq, { logits: 'all' });
      const want = transformerForward(ref(cfg), weights, [seq], null);
      expect(relError(got.logits, want.logits)).toBeLessThan(1e-4);
      const caches = got.states[0]!.layers as KvCacheState[];
      expect(caches.map((c) => [c.length, c.capacity])).toEqual([[300, 512], [300, 512], [300, 512]]);
      got.states.forEach((s) => s.dispose());

      // Three sequences at 250, 3 and 40 tokens decode together; the first crosses 256.
      const prompts = [tokenIds(250, 4), tokenIds(3, 5), tokenIds(40, 6)];
      const states = [];
      const refStates = [];
      for (const p of prompts) {
        const r = await model.prefill(p);
        states.push(r.states[0]!);
        refStates.push(transformerForward(ref(cfg), weights, [p], null).state);
      }
      for (let s = 0; s < 10; s++) {
        const toks = [s % 100, (s * 7) % 100, (s * 13 + 5) % 100];
        const row = await model.step(toks, states);
        for (let b = 0; b < 3; b++) {
          const w = transformerForward(ref(cfg), weights, [[toks[b]!]], refStates[b]!);
          refStates[b] = w.state;
          expect(relError(row.subarray(b * cfg.vocab_padded, (b + 1) * cfg.vocab_padded), w.logits)).toBeLessThan(1e-4);
        }
      }
      expect(states.map((s) => s.position)).toEqual([260, 13, 50]);
      expect((states[0]!.layers[0] as KvCacheState).capacity).toBe(512);
      expect((states[1]!.layers[0] as KvCacheState).capacity).toBe(256);
      states.forEach((s) => s.dispose());
    } finally {
      model.dispose();
    }
  });
});

describe('TransformerModel invariants', () => {
  let model: TransformerModel;
  let oneShot: TransformerModel;
  const cfg = smallTransformerConfig();
  const seq = tokenIds(270, 9);
  beforeAll(async () => {
    ({ model, oneShot } = await buildChunkedAndOneShot(cfg, 41, 37));
  });
  afterAll(() => [model, oneShot].forEach((m) => m.dispose()));

  it('chunked prefill == one-shot prefill == token-by-token decode, across cache growth', async () => {
    expect(await expectChunkedEqualsDecode(model, oneShot, seq)).toBe(seq.length);
  });

  it('prefill of a prefix, then the rest as a second prefill, equals one prefill', async () => {
    const whole = await oneShot.prefill(seq, { logits: 'last' });
    for (const cut of [1, 36, 37, 255, 256, 257]) {
      const a = await model.prefill(seq.slice(0, cut));
      const b = await model.prefill(seq.slice(cut), { states: a.states });
      expect(relError(b.logits, whole.logits)).toBeLessThan(1e-5);
      a.states.forEach((s) => s.dispose());
    }
    whole.states.forEach((s) => s.dispose());
  });

  it('a batch equals each sequence run alone', async () => {
    await expectBatchEqualsAlone(model, [tokenIds(23, 1), tokenIds(23, 2), tokenIds(23, 3)]);
  });

  it('resetState empties the KV caches (kept at their grown size)', async () => {
    const fresh = await model.prefill(seq.slice(0, 20));
    const used = await model.prefill(seq);
    const state = used.states[0]!;
    await model.resetState(state);
    expect((state.layers[0] as KvCacheState).length).toBe(0);
    expect((state.layers[0] as KvCacheState).capacity).toBe(512);
    const again = await model.prefill(seq.slice(0, 20), { states: [state] });
    expect(relError(again.logits, fresh.logits)).toBeLessThan(1e-6);
    fresh.states.forEach((s) => s.dispose());
    state.dispose();
  });

  it('greedy generation equals argmax of the one-shot logits', async () => {
    await expectGreedyEqualsArgmax(model, oneShot, seq.slice(0, 10), 5);
  });
});

describe('transformer configs and checkpoints', () => {
  const base = { model_type: 'transformer', d_model: 64, n_layer: 2, vocab_size: 100 };

  it('parses the attn section with its defaults', () => {
    const c = parseConfig({ ...base, attn: { n_heads: 4, d_ff: 96 } });
    expect(c.attn).toEqual({ n_heads: 4, n_kv_heads: 4, head_dim: 16, d_ff: 96, rope_theta: 10000 });
    expect(c.layer_types).toEqual(['attention', 'attention']);
    // d_model 100 would not fit the (unused) Mamba-2 defaults: a transformer never checks them.
    expect(parseConfig({ ...base, d_model: 100, attn: { n_heads: 5, d_ff: 8, head_dim: 20 } }).d_model).toBe(100);
  });

  it('bad configs give clear errors', () => {
    expect(() => parseConfig(base)).toThrow(/"attn" is required for model_type "transformer"/);
    expect(() => parseConfig({ ...base, attn: { n_heads: 4, n_kv_heads: 3, d_ff: 8 } })).toThrow(/"attn.n_kv_heads" is 3, which does not divide n_heads = 4/);
    expect(() => parseConfig({ ...base, attn: { n_heads: 4, head_dim: 15, d_ff: 8 } })).toThrow(/"attn.head_dim" is 15, but rotary embeddings/);
    expect(() => parseConfig({ ...base, attn: { n_heads: 5, d_ff: 8 } })).toThrow(/"attn.head_dim" is required/);
    expect(() => parseConfig({ ...base, attn: { n_heads: 4 } })).toThrow(/"attn.d_ff" is required/);
    expect(() => parseConfig({ ...base, attn: { n_heads: 4, d_ff: 8, rope_theta: -1 } })).toThrow(/"attn.rope_theta" must be a positive number/);
    expect(() => parseConfig({ ...base, attn: { n_heads: 4, d_ff: 8 }, layer_types: ['attention'] })).toThrow(/"layer_types" has 1 entries but n_layer is 2/);
    expect(() => parseConfig({ ...base, model_type: 'mamba2', layer_types: ['mamba2', 'attention'] })).toThrow(ConfigError);
    expect(() => parseConfig({ ...base, model_type: 'mamba2', layer_types: ['mamba2', 'attention'] })).toThrow(/attention layers belong to model_type "transformer" or "jamba", not "mamba2"/);
  });

  it('TransformerModel refuses a config with other layers; a missing tensor is named', async () => {
    const m = scratchDir();
    await writeModel(smallMamba2Config(), m.dir, 1);
    await expect(TransformerModel.load(m.dir, { backend: 'cpu' })).rejects.toThrow(/TransformerModel runs attention layers only, but layer 0 is "mamba2"/);

    const cfg = smallTransformerConfig();
    const dir = scratchDir();
    await writeModel(cfg, dir.dir, 2);
    // The generic loader runs a transformer checkpoint too.
    const generic = await CausalLM.load(dir.dir, { backend: 'cpu' });
    expect((await generic.prefill(tokenIds(5, 1))).logits.length).toBe(cfg.vocab_padded);
    generic.dispose();
    dropTensor(dir.dir, 'backbone.layers.1.mixer.k_proj.weight');
    await expect(TransformerModel.load(dir.dir, { backend: 'cpu' })).rejects.toThrow(/backbone\.layers\.1\.mixer\.k_proj\.weight/);
  });
});

describe('bench latency: presets, table and chart', () => {
  const result = (mode: 'latency' | 'memory'): LatencyResult => ({
    date: '2025-01-01T00:00:00Z', mode, size: '190m', prompt: 100, repeats: 1, threads: 2, cpu: 'test cpu',
    results: (['taipan', 'mamba2', 'transformer'] as const).map((model, i) => ({
      model,
      preset: presetFor(model, '190m'),
      parameters: 190e6,
      loadedRssMiB: 800,
      selection: model === 'taipan' ? 0.15 : undefined,
      rows: [128, 256, 512].map((length) => ({ length, totalMs: length * (10 + i), prefillMs: 50, msPerToken: 10 + i, peakRssMiB: 800 + i * length, stateMiB: i * length })),
    })),
  });

  it('draws a progress bar in place on a terminal, and nothing elsewhere', () => {
    const fake = (isTTY: boolean) => {
      const out: string[] = [];
      return { out, stream: { isTTY, write: (s: string) => out.push(s) > 0 } as unknown as NodeJS.WriteStream };
    };
    const tty = fake(true);
    const bar = new ProgressBar('jamba', tty.stream);
    bar.update(1, 4);
    bar.update(2, 4); // within 100 ms of the last draw: skipped
    bar.update(4, 4); // the end is always drawn
    bar.clear();
    expect(tty.out).toEqual([
      `\r  jamba [${'#'.repeat(8)}${'.'.repeat(22)}] 1/4 tokens\x1b[K`,
      `\r  jamba [${'#'.repeat(30)}] 4/4 tokens\x1b[K`,
      '\r\x1b[K',
    ]);
    const pipe = fake(false);
    const quiet = new ProgressBar('jamba', pipe.stream);
    quiet.update(4, 4);
    quiet.clear();
    expect(pipe.out).toEqual([]);
  });

  it('runs every model at the Taipan sizes of MODEL.md section 8', () => {
    for (const size of ['190m', '450m', '1.3b'] as const) {
      for (const model of ['taipan', 'mamba2', 'transformer', 'jamba'] as const) expect(PRESETS[presetFor(model, size)], `${model} ${size}`).toBeDefined();
    }
    expect(presetFor('mamba2', '1.3b')).toBe('mamba2-1.3b-taipan');
    expect(PRESETS[presetFor('mamba2', '450m')]!.d_model).toBe(1024);
  });

  it('formats a row per model and length', () => {
    const text = formatLatencyBenchmark(result('latency'));
    expect(text).toMatch(/\| taipan-190m \| 190.0M \| 512 \| 5.12 \| 50 \| 10.0 \| 800 \| 15.0% \|/);
    expect(text).toMatch(/\| transformer-190m \| 190.0M \| 128 \| 1.54 \|/);
    expect(formatLatencyBenchmark(result('memory'))).toMatch(/\| mamba2-190m \| 190.0M \| 256 \| 1056 \| 256.0 \|/);
  });

  it('a CUDA run gets a peak device memory column and chart axis', () => {
    const r = result('latency');
    r.backend = 'cuda';
    for (const m of r.results) m.rows.forEach((x, i) => (x.peakDeviceMiB = 400 + i));
    const text = formatLatencyBenchmark(r);
    expect(text).toMatch(/batch 1, CUDA/);
    expect(text).toMatch(/\| peak RSS \(MiB\) \| peak device \(MiB\) \| SAL selected \|/);
    expect(text).toMatch(/\| taipan-190m \| 190.0M \| 512 \| 5.12 \| 50 \| 10.0 \| 800 \| 402 \| 15.0% \|/);
    const mem = result('memory');
    mem.backend = 'cuda';
    for (const m of mem.results) m.rows.forEach((x) => (x.peakDeviceMiB = 700));
    expect(latencySvg(mem)).toContain('peak device memory (MiB)');
    expect(formatLatencyBenchmark(result('latency'))).not.toContain('peak device');
  });

  it('draws one line per model with axes, ticks, labels and a legend, linear or log x', () => {
    const svg = latencySvg(result('latency'));
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.match(/<polyline /g)).toHaveLength(3);
    expect(svg.match(/<circle /g)).toHaveLength(3 * 3 + 3); // points and legend markers
    for (const name of ['taipan-190m', 'mamba2-190m', 'transformer-190m', 'generated tokens', 'latency (s)']) expect(svg).toContain(`>${name}<`);
    expect(svg).toContain('>600<'); // x ticks 0..600 every 100
    const log = latencySvg(result('memory'), { logX: true });
    expect(log).toContain('context tokens (log scale)');
    expect(log).toContain('peak RSS (MiB)');
    // On a log axis the measured lengths are the ticks, evenly spaced for 128, 256, 512.
    const xs = [...log.matchAll(/<text x="([\d.]+)" y="\d+" text-anchor="middle">(128|256|512)</g)].map((m) => Number(m[1]));
    expect(xs).toHaveLength(3);
    expect(xs[1]! - xs[0]!).toBeCloseTo(xs[2]! - xs[1]!, 6);
  });
});
